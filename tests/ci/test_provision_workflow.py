"""The provisioning workflow (.github/workflows/provision.yml): plan on pull requests and main, apply from
main only, and only the plan file the plan job wrote.

Triggers, permissions, the protected environment, OIDC credentials, locking and concurrency are read from
the workflow; the jobs' `if:` conditions are evaluated for the events that matter (a fork, a fresh copy
without the roles, a configured repository); the detectors of test_workflows.py (pins, checkout credentials,
write scopes) run on it too.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.ci.test_workflows import WORKFLOW_DIR, jobs, parse, run_script, steps, uses_of
from tests.infrastructure.test_invariants import BOOTSTRAP, INFRA, _labelled, _load_folder

PROVISION = WORKFLOW_DIR / "provision.yml"
AWS_CREDENTIALS = "aws-actions/configure-aws-credentials"
REPOSITORY = "octo-org/flask-api"
PLAN_ROLE = "arn:aws:iam::123456789012:role/flask-api-github-plan"


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    return parse(PROVISION.read_text())


def credential_steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for step in steps(job) if uses_of(step, AWS_CREDENTIALS)]


def scripts(job: dict[str, Any]) -> str:
    return "\n".join(run_script(step) for step in steps(job))


def condition(job: dict[str, Any], context: dict[str, str]) -> bool:
    """The value of a job's `if:` for these context values (a missing `vars.X` is '', as on GitHub)."""
    expression = " ".join(str(job["if"]).split())
    assert "${{" not in expression
    python = re.sub(r"[a-z_]+(?:\.[A-Za-z0-9_-]+)+", lambda m: repr(context.get(m.group(0), "")), expression)
    python = python.replace("&&", " and ").replace("||", " or ")
    assert re.fullmatch(r"[\s'A-Za-z0-9_/:.=!()-]*", python), python
    return bool(eval(python, {"__builtins__": {}}))  # noqa: S307 (a checked expression of literals)


def push_to_main(**values: str) -> dict[str, str]:
    return {
        "github.event_name": "push",
        "github.ref": "refs/heads/main",
        "github.repository": REPOSITORY,
    } | values


def pull_request(head: str, **values: str) -> dict[str, str]:
    return {
        "github.event_name": "pull_request",
        "github.ref": "refs/pull/7/merge",
        "github.repository": REPOSITORY,
        "github.event.pull_request.head.repo.full_name": head,
    } | values


def test_it_runs_on_pull_requests_and_on_pushes_to_main_that_touch_the_infrastructure(workflow):
    triggers = workflow["on"]
    assert set(triggers) == {"pull_request", "push"}
    assert triggers["push"]["branches"] == ["main"]
    for event in ("pull_request", "push"):
        assert "infrastructure/**" in triggers[event]["paths"]
        assert ".github/workflows/provision.yml" in triggers[event]["paths"]


def test_the_check_job_formats_and_validates_without_aws_access(workflow):
    check = jobs(workflow)["check"]
    assert "tofu fmt -check -recursive" in scripts(check)
    assert "init -backend=false" in scripts(check)
    assert "validate" in scripts(check)
    assert credential_steps(check) == []
    assert "permissions" not in check  # the workflow's contents: read


def test_the_check_job_verifies_or_writes_the_provider_lock_files_for_both_runner_platforms(workflow):
    check = jobs(workflow)["check"]
    script = scripts(check)
    assert "providers lock -no-color -platform=linux_amd64 -platform=linux_arm64" in script
    assert "infrastructure infrastructure/bootstrap" in script
    assert 'git diff --exit-code -- "${lock_files[@]}"' in script
    (upload,) = [step for step in steps(check) if uses_of(step, "actions/upload-artifact")]
    assert "infrastructure/.terraform.lock.hcl" in upload["with"]["path"]
    assert "infrastructure/bootstrap/.terraform.lock.hcl" in upload["with"]["path"]


@pytest.mark.parametrize(
    ("event", "plans", "applies"),
    [
        (
            push_to_main(**{"vars.AWS_PLAN_ROLE_ARN": PLAN_ROLE, "needs.plan.outputs.changes": "true"}),
            True,
            True,
        ),
        (
            push_to_main(**{"vars.AWS_PLAN_ROLE_ARN": PLAN_ROLE, "needs.plan.outputs.changes": "false"}),
            True,
            False,
        ),
        # A fork or a fresh copy: no roles configured, nothing to plan or apply with.
        (push_to_main(**{"needs.plan.outputs.changes": "true"}), False, False),
        (pull_request(REPOSITORY, **{"vars.AWS_PLAN_ROLE_ARN": PLAN_ROLE}), True, False),
        (pull_request("someone/flask-api", **{"vars.AWS_PLAN_ROLE_ARN": PLAN_ROLE}), False, False),
        (pull_request(REPOSITORY), False, False),
        (
            push_to_main(**{"github.ref": "refs/heads/feature", "vars.AWS_PLAN_ROLE_ARN": PLAN_ROLE}),
            False,
            False,
        ),
    ],
    ids=[
        "main-with-changes",
        "main-without-changes",
        "fresh-fork-main",
        "pull-request",
        "pull-request-from-a-fork",
        "pull-request-without-roles",
        "other-branch",
    ],
)
def test_which_events_plan_and_apply(workflow, event, plans, applies):
    assert condition(jobs(workflow)["plan"], event) is plans
    assert condition(jobs(workflow)["apply"], event) is applies


def test_plan_writes_a_plan_file_publishes_its_text_and_on_main_the_file(workflow):
    plan = jobs(workflow)["plan"]
    assert plan["needs"] == "check"
    assert "environment" not in plan
    assert "plan -no-color -lock-timeout=10m -detailed-exitcode -out=tfplan" in scripts(plan)
    assert " apply " not in f" {scripts(plan)} "
    assert "$GITHUB_STEP_SUMMARY" in scripts(plan)
    assert plan["outputs"] == {
        "changes": "${{ steps.plan.outputs.changes }}",
        "plan-sha256": "${{ steps.plan.outputs.sha256 }}",
    }
    uploads = {step["with"]["name"]: step for step in steps(plan) if uses_of(step, "actions/upload-artifact")}
    assert uploads["tofu-plan"]["with"]["path"] == "plan.txt"
    binary = uploads["tofu-plan-binary"]
    assert binary["with"]["path"] == "infrastructure/tfplan"
    assert binary["if"] == "github.event_name == 'push'"


def test_apply_applies_the_downloaded_plan_file_and_never_plans_again(workflow):
    apply = jobs(workflow)["apply"]
    assert apply["environment"] == "production"
    assert apply["needs"] == "plan"
    assert apply["concurrency"] == {"group": "provision-apply-production", "cancel-in-progress": False}
    (download,) = [step for step in steps(apply) if uses_of(step, "actions/download-artifact")]
    assert download["with"] == {"name": "tofu-plan-binary", "path": "infrastructure"}
    names = [step.get("name", step.get("uses")) for step in steps(apply)]
    script = scripts(apply)
    assert 'echo "$PLAN_SHA256  infrastructure/tfplan" | sha256sum --check --strict' in script
    (checked,) = [step for step in steps(apply) if "sha256sum --check" in run_script(step)]
    assert checked["env"]["PLAN_SHA256"] == "${{ needs.plan.outputs.plan-sha256 }}"
    assert names.index(checked["name"]) > names.index(download["uses"])
    assert "apply -no-color -lock-timeout=10m tfplan" in script
    assert not re.search(r"tofu\b.*\bplan\b", script), "the apply job must not write a plan of its own"


def test_only_the_apply_job_can_apply(workflow):
    applying = [job_id for job_id, job in jobs(workflow).items() if " apply " in f" {scripts(job)} "]
    assert applying == ["apply"]


def test_a_started_run_is_never_cancelled(workflow):
    assert workflow["concurrency"]["cancel-in-progress"] is False
    assert workflow["concurrency"]["group"] == "provision-${{ github.ref }}"


@pytest.mark.parametrize(
    ("job_id", "role"),
    [("plan", "${{ vars.AWS_PLAN_ROLE_ARN }}"), ("apply", "${{ vars.AWS_APPLY_ROLE_ARN }}")],
)
def test_aws_credentials_come_from_oidc_with_a_role_per_job(workflow, job_id, role):
    job = jobs(workflow)[job_id]
    assert job["permissions"] == {"contents": "read", "id-token": "write"}
    (credentials,) = credential_steps(job)
    assert credentials["with"]["role-to-assume"] == role
    assert not {"aws-access-key-id", "aws-secret-access-key", "aws-session-token"} & set(credentials["with"])


def test_no_job_but_plan_and_apply_gets_an_oidc_token(workflow):
    assert workflow["permissions"] == {"contents": "read"}
    with_token = [
        job_id for job_id, job in jobs(workflow).items() if "id-token" in (job.get("permissions") or {})
    ]
    assert with_token == ["plan", "apply"]


def test_no_static_aws_key_is_read_anywhere():
    text = PROVISION.read_text()
    assert "AWS_ACCESS_KEY_ID" not in text
    assert "AWS_SECRET_ACCESS_KEY" not in text
    assert "secrets." not in text


def test_the_state_key_is_the_one_bootstrap_grants(workflow):
    locals_ = {k: v for block in _load_folder(BOOTSTRAP)["locals"] for k, v in block.items()}
    default_name = _labelled(_load_folder(BOOTSTRAP), "variable")["name"]["default"]
    environment = _labelled(_load_folder(BOOTSTRAP), "variable")["github_environment"]["default"]
    key = (
        locals_["state_key"]
        .replace("${var.name}", default_name)
        .replace("${var.github_environment}", environment)
    )
    assert key == workflow["env"]["TF_STATE_KEY"] == "flask-api/production/terraform.tfstate"


def test_every_setting_without_a_default_comes_from_a_repository_variable(workflow):
    required = {
        name for name, body in _labelled(_load_folder(INFRA), "variable").items() if "default" not in body
    }
    given = {name.removeprefix("TF_VAR_") for name in workflow["env"] if name.startswith("TF_VAR_")}
    assert required <= given
    assert all(str(workflow["env"][f"TF_VAR_{name}"]).startswith("${{ vars.") for name in required)
