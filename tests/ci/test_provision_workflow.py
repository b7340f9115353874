"""The provisioning workflow (.github/workflows/provision.yml): plan on pull requests, apply from main only.

Triggers, permissions, the protected environment, OIDC credentials, locking and concurrency are read from
the workflow; the detectors of test_workflows.py (pins, checkout credentials, write scopes) run on it too.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.ci.test_workflows import WORKFLOW_DIR, jobs, parse, run_script, steps, uses_of
from tests.infrastructure.test_invariants import BOOTSTRAP, INFRA, _labelled, _load_folder

PROVISION = WORKFLOW_DIR / "provision.yml"
AWS_CREDENTIALS = "aws-actions/configure-aws-credentials"
MAIN_PUSH_ONLY = "github.event_name == 'push' && github.ref == 'refs/heads/main'"


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    return parse(PROVISION.read_text())


def credential_steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for step in steps(job) if uses_of(step, AWS_CREDENTIALS)]


def scripts(job: dict[str, Any]) -> str:
    return "\n".join(run_script(step) for step in steps(job))


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


def test_plan_runs_on_pull_requests_only_and_publishes_the_plan(workflow):
    plan = jobs(workflow)["plan"]
    same_repository = "github.event.pull_request.head.repo.full_name == github.repository"
    assert plan["if"] == f"github.event_name == 'pull_request' && {same_repository}"
    assert plan["needs"] == "check"
    assert "environment" not in plan
    assert "plan -no-color -lock-timeout=10m -out=tfplan" in scripts(plan)
    assert "apply" not in scripts(plan)
    assert "$GITHUB_STEP_SUMMARY" in scripts(plan)
    (upload,) = [step for step in steps(plan) if uses_of(step, "actions/upload-artifact")]
    assert upload["with"]["path"] == "plan.txt"


def test_apply_runs_only_from_main_in_the_protected_environment_one_at_a_time(workflow):
    apply = jobs(workflow)["apply"]
    assert apply["if"] == MAIN_PUSH_ONLY
    assert apply["environment"] == "production"
    assert apply["needs"] == "check"
    assert apply["concurrency"] == {"group": "provision-apply-production", "cancel-in-progress": False}
    assert "apply -no-color -lock-timeout=10m tfplan" in scripts(apply)


def test_only_the_apply_job_can_apply(workflow):
    applying = [job_id for job_id, job in jobs(workflow).items() if " apply " in f" {scripts(job)} "]
    assert applying == ["apply"]


def test_no_run_is_ever_cancelled(workflow):
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
