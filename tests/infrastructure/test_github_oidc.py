"""The roles GitHub Actions assumes (infrastructure/bootstrap/github-actions.tf), read from the parsed HCL.

Each trust policy admits named kinds of job of one repository, for AWS STS only: pull requests and pushes to
main for the plan role, the protected environment for the apply role. Anything wider (a wildcard, another
repository, a branch that anybody can push to) fails here. The roles' permissions (github-policies.tf) are
the configuration's services and this project's own IAM roles, never AdministratorAccess or ReadOnlyAccess.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.infrastructure.test_invariants import BOOTSTRAP, _labelled, _load_folder, _resource, _resources

HOST = "token.actions.githubusercontent.com"


@pytest.fixture(scope="module")
def bootstrap() -> dict[str, list[Any]]:
    return _load_folder(BOOTSTRAP)


def policy_documents(config: dict[str, list[Any]]) -> dict[str, dict[str, Any]]:
    return {
        name: body for kind, name, body in _resources(config, "data") if kind == "aws_iam_policy_document"
    }


def locals_of(config: dict[str, list[Any]]) -> dict[str, Any]:
    return {name: value for block in config["locals"] for name, value in block.items()}


def test_each_role_trusts_one_kind_of_job_of_this_repository_for_sts_only(bootstrap):
    trust = policy_documents(bootstrap)["github_trust"]
    assert trust["for_each"] == "${local.github_subjects}"
    (statement,) = trust["statement"]
    assert statement["actions"] == ["sts:AssumeRoleWithWebIdentity"]
    assert statement.get("effect", "Allow") == "Allow"
    assert statement["principals"] == [
        {"type": "Federated", "identifiers": ["${local.github_oidc_provider_arn}"]}
    ]
    conditions = {
        c["variable"].replace("${local.github_oidc_host}", HOST): (c["test"], c["values"])
        for c in statement["condition"]
    }
    assert conditions == {
        f"{HOST}:aud": ("StringEquals", ["sts.amazonaws.com"]),
        f"{HOST}:sub": ("StringEquals", "${each.value}"),
    }
    assert locals_of(bootstrap)["github_subjects"] == {
        "plan": [
            "repo:${var.github_repository}:pull_request",
            "repo:${var.github_repository}:ref:refs/heads/main",
        ],
        "apply": ["repo:${var.github_repository}:environment:${var.github_environment}"],
    }


def test_the_roles_use_those_trust_policies(bootstrap):
    plan = _resource(bootstrap, "aws_iam_role", "github_plan")
    apply = _resource(bootstrap, "aws_iam_role", "github_apply")
    assert plan["assume_role_policy"] == '${data.aws_iam_policy_document.github_trust["plan"].json}'
    assert apply["assume_role_policy"] == '${data.aws_iam_policy_document.github_trust["apply"].json}'


def test_the_provider_is_github_for_sts(bootstrap):
    provider = _resource(bootstrap, "aws_iam_openid_connect_provider", "github")
    assert provider["url"] == "https://${local.github_oidc_host}"
    assert provider["client_id_list"] == ["sts.amazonaws.com"]
    assert locals_of(bootstrap)["github_oidc_host"] == HOST


def test_the_repository_has_no_default_and_must_be_owner_slash_name(bootstrap):
    variable = _labelled(bootstrap, "variable")["github_repository"]
    assert "default" not in variable
    (rule,) = variable["validation"]
    pattern = re.search(r'regex\("(.+)", var\.github_repository\)', rule["condition"]).group(1)
    assert re.search(pattern, "octo-org/flask-api")
    for wider in ("*", "octo-org/*", "octo-org", "octo-org/flask-api:*", "octo-org/flask-api/x"):
        assert not re.search(pattern, wider), wider


def test_the_environment_is_production_by_default_and_cannot_be_a_wildcard(bootstrap):
    variable = _labelled(bootstrap, "variable")["github_environment"]
    assert variable["default"] == "production"
    (pattern,) = [
        match.group(1)
        for rule in variable["validation"]
        if (match := re.search(r'regex\("(.+)", var\.github_environment\)', rule["condition"]))
    ]
    assert re.search(pattern, "production")
    assert not re.search(pattern, "*")
    assert not re.search(pattern, "prod*")


def test_the_plan_role_reads_and_only_the_apply_role_writes_the_state(bootstrap):
    state = policy_documents(bootstrap)["github_state"]
    assert state["for_each"] == '${toset(["plan", "apply"])}'
    writes = [
        s
        for s in state["statement"]
        if "s3:PutObject" in s["actions"]
        and s["resources"] != ["${aws_s3_bucket.state.arn}/${local.state_key}.tflock"]
    ]
    assert writes == []
    (dynamic,) = state["dynamic"]
    write = dynamic["statement"]
    assert write["for_each"] == '${each.key == "apply" ? [1] : []}'
    assert write["content"][0]["actions"] == ["s3:PutObject"]


def attached(bootstrap) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for kind, _, body in _resources(bootstrap):
        if kind == "aws_iam_role_policy_attachment":
            found.setdefault(body["role"], set()).add(body["policy_arn"])
    return found


def test_no_role_gets_an_aws_managed_policy_such_as_administrator_or_read_only_access(bootstrap):
    assert attached(bootstrap) == {
        "${aws_iam_role.github_plan.name}": {"${aws_iam_policy.github_read.arn}"},
        "${aws_iam_role.github_apply.name}": {
            "${aws_iam_policy.github_read.arn}",
            "${aws_iam_policy.github_write.arn}",
        },
    }
    assert "github_apply_policy_arns" not in _labelled(bootstrap, "variable")
    assert _resource(bootstrap, "aws_iam_policy", "github_read")["policy"] == (
        "${data.aws_iam_policy_document.github_read.json}"
    )
    assert _resource(bootstrap, "aws_iam_policy", "github_write")["policy"] == (
        "${data.aws_iam_policy_document.github_write.json}"
    )


READ_ACTION = re.compile(r"^[a-z0-9-]+:(Describe|Get|List)[A-Za-z*]*$")


def test_the_read_policy_only_reads_and_reads_one_secret_value(bootstrap):
    statements = policy_documents(bootstrap)["github_read"]["statement"]
    assert all(s.get("effect", "Allow") == "Allow" for s in statements)
    actions = [action for s in statements for action in s["actions"]]
    assert actions
    assert [a for a in actions if not READ_ACTION.match(a) and a != "kms:Decrypt"] == []
    for statement in statements:
        if "secretsmanager:GetSecretValue" in statement["actions"]:
            assert statement["resources"] != ["*"]
            assert ":secret:${var.name}-*-db-app-*" in statement["resources"][0]
        if "kms:Decrypt" in statement["actions"]:
            (condition,) = statement["condition"]
            assert condition["variable"] == "kms:ViaService"
    # Secret values and object contents are never read by a wildcard.
    assert not {a for a in actions if a in {"secretsmanager:Get*", "s3:Get*", "*:*", "*"}}


def test_the_write_policy_is_held_to_the_region_and_to_this_projects_iam_roles(bootstrap):
    statements = {s["sid"]: s for s in policy_documents(bootstrap)["github_write"]["statement"]}
    regional = statements["ChangeTheConfigurationsServicesInItsRegion"]
    assert regional["condition"] == [
        {"test": "StringEquals", "variable": "aws:RequestedRegion", "values": ["${var.region}"]}
    ]
    assert "iam" not in str(locals_of(bootstrap)["regional_services"])
    for sid, statement in statements.items():
        actions = statement["actions"]
        if statement.get("effect", "Allow") == "Allow" and any(a.startswith("iam:") for a in actions):
            assert statement.get("condition"), f"{sid}: IAM writes without a condition"
            assert "iam:*" not in actions, sid
            assert not {"iam:CreateAccessKey", "iam:CreateUser", "iam:CreateLoginProfile"} & set(actions), sid
    tagged = {c["variable"] for s in statements.values() for c in s.get("condition", [])}
    assert {"aws:RequestTag/Project", "aws:ResourceTag/Project", "iam:PassedToService"} <= tagged
    deny = statements["NeverChangeTheGitHubRoles"]
    assert (deny["effect"], deny["actions"], deny["resources"]) == (
        "Deny",
        ["iam:*"],
        "${local.github_iam_arns}",
    )
    # The roles, their policies and the OIDC provider: changing any of them would widen the apply role.
    assert locals_of(bootstrap)["github_iam_arns"] == [
        "arn:${local.partition}:iam::${local.account_id}:role/${var.name}-github-*",
        "arn:${local.partition}:iam::${local.account_id}:policy/${var.name}-github-*",
        "arn:${local.partition}:iam::${local.account_id}:oidc-provider/${local.github_oidc_host}",
    ]
    names = [_resource(bootstrap, "aws_iam_policy", name)["name"] for name in ("github_read", "github_write")]
    assert names == ["${var.name}-github-read", "${var.name}-github-write"]
    state_key = statements["NeverAdministerTheStateKey"]
    assert (state_key["effect"], state_key["resources"]) == ("Deny", ["${aws_kms_key.state.arn}"])
    assert {"kms:ScheduleKeyDeletion", "kms:PutKeyPolicy", "kms:DisableKey"} <= set(state_key["actions"])


def test_the_roles_are_granted_the_state_of_the_environment_they_provision(bootstrap):
    backend_config = str(_labelled(bootstrap, "output")["backend_config"]["value"])
    assert 'key        = "${var.name}/${environment}/terraform.tfstate"' in backend_config
    assert locals_of(bootstrap)["state_key"] == "${var.name}/${var.github_environment}/terraform.tfstate"
    conditions = [
        rule["condition"] for rule in _labelled(bootstrap, "variable")["github_environment"]["validation"]
    ]
    assert "${contains(var.environments, var.github_environment)}" in conditions
