"""Rules the GitHub Actions workflows must keep, so that every gate of the pipeline can actually fail.

Each rule is a detector returning the problems it finds in a workflow; the tests run each detector on the
real workflows (no problem allowed) and on a small bad example (the problem must be found), so a detector
that stopped detecting would fail here too. Only pyyaml and the standard library are used.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW_DIR = ROOT / ".github" / "workflows"
WORKFLOW_PATHS = sorted([*WORKFLOW_DIR.glob("*.yml"), *WORKFLOW_DIR.glob("*.yaml")])
# The image pipeline; the scan and push rules are its own (provision.yml builds no image).
PIPELINE = WORKFLOW_DIR / "ci.yml"

Workflow = dict[str, Any]

SHA_PIN = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_./-]+@[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"#\s*v?\d+(\.\d+)*\b")
USES_LINE = re.compile(r"^\s*(?:-\s+)?uses:\s*['\"]?([^\s'\"#]+)['\"]?\s*(#.*)?$")
MAIN_REF = "github.ref == 'refs/heads/main'"
PUSH_EVENT = "github.event_name == 'push'"
# A download piped or substituted into a shell or an interpreter, with or without sudo in between.
SHELL = r"(?:sudo\s+(?:-\S+\s+)*)?(?:env\s+(?:\S+=\S*\s+)*)?(?:/usr)?(?:/bin/)?(?:ba|da|z|k|fi)?sh\b"
INTERPRETER = rf"(?:{SHELL}|(?:sudo\s+)?python3?\b|(?:sudo\s+)?perl\b)"
PIPE_TO_SHELL = [
    re.compile(rf"\b(?:curl|wget)\b[^\n]*\|\s*{INTERPRETER}"),
    re.compile(rf"{SHELL}\s+(?:-\S+\s+)*<\(\s*(?:curl|wget)\b"),
    re.compile(rf"{SHELL}\s+(?:-\S+\s+)*-c\s+[\"']?\$\(\s*(?:curl|wget)\b"),
    re.compile(r"(?:\bsource|^\s*\.|;\s*\.)\s+<\(\s*(?:curl|wget)\b", re.MULTILINE),
]
SWALLOWED_FAILURE = re.compile(r"\|\|\s*(?:true|:|exit\s+0)\b|;\s*(?:true|exit\s+0)\s*$", re.MULTILINE)
PUSH_COMMAND = re.compile(r"\b(?:docker|podman)\s+(?:image\s+)?push\b|\bskopeo\s+copy\b|\bcrane\s+push\b")


# ------------------------------------------------------------------------------------- reading workflows
def parse(text: str) -> Workflow:
    """A workflow as a dict; YAML 1.1 reads the `on:` key as True, which is put back as "on"."""
    document = yaml.safe_load(text)
    assert isinstance(document, dict), "a workflow is a mapping"
    if True in document:
        document["on"] = document.pop(True)
    return document


def jobs(workflow: Workflow) -> dict[str, dict[str, Any]]:
    return workflow.get("jobs") or {}


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return job.get("steps") or []


def all_steps(workflow: Workflow):
    """(job id, job, step index, step) for every step of every job."""
    for job_id, job in jobs(workflow).items():
        for index, step in enumerate(steps(job)):
            yield job_id, job, index, step


def uses_of(step: dict[str, Any], action: str) -> bool:
    return str(step.get("uses", "")).split("@", 1)[0] == action


def run_script(step: dict[str, Any]) -> str:
    """The step's shell script with backslash line continuations joined."""
    return str(step.get("run", "")).replace("\\\n", " ")


def is_true(value: Any) -> bool:
    return value is True or str(value).strip().lower() == "true"


def is_disabled(condition: Any) -> bool:
    """True when an `if:` can never hold (false, ${{ false }}, 0)."""
    if condition is None:
        return False
    text = str(condition).strip()
    text = re.sub(r"^\$\{\{\s*(.*?)\s*\}\}$", r"\1", text).strip().lower()
    return text in {"false", "0", "''", '""', "null"}


def step_label(job_id: str, index: int, step: dict[str, Any]) -> str:
    return f"{job_id}[{index}] {step.get('name') or step.get('uses') or 'run'}"


def env_value(workflow: Workflow, job: dict[str, Any], step: dict[str, Any], name: str) -> str | None:
    """The value of an env variable as the step sees it (step, then job, then workflow)."""
    for scope in (step, job, workflow):
        env = scope.get("env") or {}
        if name in env:
            return str(env[name])
    return None


def needs_of(job: dict[str, Any]) -> list[str]:
    needs = job.get("needs") or []
    return [needs] if isinstance(needs, str) else list(needs)


def upstream_jobs(workflow: Workflow, job_id: str) -> set[str]:
    """Every job that must succeed before job_id starts (needs, transitively)."""
    seen: set[str] = set()
    pending = needs_of(jobs(workflow)[job_id])
    while pending:
        name = pending.pop()
        if name not in seen and name in jobs(workflow):
            seen.add(name)
            pending.extend(needs_of(jobs(workflow)[name]))
    return seen


# ------------------------------------------------------------------------------------------- detectors
def unpinned_uses(text: str) -> list[str]:
    """`uses:` references not pinned to a 40-hex commit SHA with the release in a comment beside it."""
    problems = []
    seen = set()
    for number, line in enumerate(text.splitlines(), start=1):
        match = USES_LINE.match(line)
        if not match:
            continue
        reference, comment = match.group(1), match.group(2) or ""
        seen.add(reference)
        if reference.startswith("./"):
            continue
        if reference.startswith("docker://"):
            if not re.search(r"@sha256:[0-9a-f]{64}$", reference):
                problems.append(f"line {number}: {reference} is not pinned by digest")
            continue
        if not SHA_PIN.match(reference):
            problems.append(f"line {number}: {reference} is not pinned to a full commit SHA")
        elif not VERSION_COMMENT.search(comment):
            problems.append(f"line {number}: {reference} has no version comment")
    # Flow-style steps ({uses: ...}) escape the line scan above: every parsed reference must have been seen.
    for job_id, _job, index, step in all_steps(parse(text)):
        if "uses" in step and str(step["uses"]) not in seen:
            label = step_label(job_id, index, step)
            problems.append(f"{label}: uses written in a form the check cannot read")
    return problems


def trivy_gate_problems(workflow: Workflow) -> list[str]:
    """Trivy steps that cannot fail the job; also demands both an image scan and a config scan."""
    problems = []
    scan_types = set()
    for job_id, job, index, step in all_steps(workflow):
        if not uses_of(step, "aquasecurity/trivy-action"):
            continue
        label = step_label(job_id, index, step)
        options = step.get("with") or {}
        if str(options.get("format", "")).startswith(("cyclonedx", "spdx")):
            continue  # an SBOM written for an attestation: no scan, no verdict

        scan_types.add(str(options.get("scan-type", "image")))
        if str(options.get("exit-code", "")).strip() != "1":
            problems.append(f"{label}: exit-code is not 1")
        if is_true(step.get("continue-on-error")) or is_true(job.get("continue-on-error")):
            problems.append(f"{label}: continue-on-error lets a finding pass")
        if is_disabled(step.get("if")) or is_disabled(job.get("if")):
            problems.append(f"{label}: the step never runs")
    for wanted in ("image", "config"):
        if wanted not in scan_types:
            problems.append(f"no Trivy {wanted} scan")
    return problems


def kubescape_threshold(workflow: Workflow, job: dict[str, Any], step: dict[str, Any]) -> str | None:
    """The compliance threshold a Kubescape step passes, resolved through env; None when it has none."""
    if uses_of(step, "kubescape/github-action"):
        options = step.get("with") or {}
        threshold = options.get("complianceThreshold", options.get("failedThreshold"))
        return None if threshold is None else str(threshold)
    match = re.search(r"--compliance-threshold[=\s]+[\"']?(\$\{?(\w+)\}?|[\d.]+)", run_script(step))
    if match is None:
        return None
    if match.group(2):
        return env_value(workflow, job, step, match.group(2))
    return match.group(1)


def kubescape_problems(workflow: Workflow) -> list[str]:
    """Kubescape scans without a compliance threshold above 0, or whose failure is ignored."""
    problems = []
    found = False
    for job_id, job, index, step in all_steps(workflow):
        script = run_script(step)
        if not (uses_of(step, "kubescape/github-action") or re.search(r"\bkubescape\s+scan\b", script)):
            continue
        found = True
        label = step_label(job_id, index, step)
        threshold = kubescape_threshold(workflow, job, step)
        try:
            value = float(str(threshold))
        except ValueError:
            problems.append(f"{label}: no compliance threshold")
        else:
            if not 0 < value <= 100:
                problems.append(f"{label}: compliance threshold {value} gates nothing")
        if SWALLOWED_FAILURE.search(script):
            problems.append(f"{label}: the script ignores Kubescape's exit code")
        if is_true(step.get("continue-on-error")) or is_true(job.get("continue-on-error")):
            problems.append(f"{label}: continue-on-error")
        if is_disabled(step.get("if")) or is_disabled(job.get("if")):
            problems.append(f"{label}: the step never runs")
    if not found:
        problems.append("no Kubescape scan")
    return problems


def piped_downloads(workflow: Workflow) -> list[str]:
    """Steps that pipe or substitute a download into a shell (curl | bash, wget | sudo sh, bash <(curl))."""
    problems = []
    for job_id, _job, index, step in all_steps(workflow):
        script = run_script(step)
        if any(pattern.search(script) for pattern in PIPE_TO_SHELL):
            problems.append(f"{step_label(job_id, index, step)}: pipes a download into a shell")
    return problems


def top_level_permission_problems(workflow: Workflow) -> list[str]:
    """The workflow-wide token must be read-only, spelled out per scope."""
    permissions = workflow.get("permissions")
    if not isinstance(permissions, dict) or not permissions:
        return [f"top-level permissions are {permissions!r}, not a read-only mapping"]
    return [
        f"top-level {scope}: {level}" for scope, level in permissions.items() if level not in ("read", "none")
    ]


def checkout_problems(workflow: Workflow) -> list[str]:
    """actions/checkout steps that leave the token in .git/config."""
    problems = []
    for job_id, _job, index, step in all_steps(workflow):
        if uses_of(step, "actions/checkout"):
            options = step.get("with") or {}
            if str(options.get("persist-credentials", "true")).strip().lower() != "false":
                problems.append(f"{step_label(job_id, index, step)}: persist-credentials is not false")
    return problems


def is_push_step(step: dict[str, Any]) -> bool:
    if uses_of(step, "docker/build-push-action"):
        return is_true((step.get("with") or {}).get("push"))
    return bool(PUSH_COMMAND.search(run_script(step)))


def is_image_scan(step: dict[str, Any]) -> bool:
    options = step.get("with") or {}
    return (
        uses_of(step, "aquasecurity/trivy-action")
        and str(options.get("scan-type", "image")) == "image"
        and str(options.get("exit-code", "")).strip() == "1"
        and not is_true(step.get("continue-on-error"))
        and not is_disabled(step.get("if"))
    )


def push_problems(workflow: Workflow) -> list[str]:
    """Image pushes that may run off main, on other events, or without a passed Trivy image scan first."""
    problems = []
    found = False
    for job_id, job, index, step in all_steps(workflow):
        if not is_push_step(step):
            continue
        found = True
        label = step_label(job_id, index, step)
        conditions = [str(c) for c in (job.get("if"), step.get("if")) if c is not None]
        joined = " && ".join(conditions)
        if not any(MAIN_REF in c for c in conditions) or not any(PUSH_EVENT in c for c in conditions):
            problems.append(f"{label}: not restricted to a push to main ({joined or 'no condition'})")
        if "||" in joined or re.search(r"\b(always|failure|cancelled)\(\)", joined):
            problems.append(f"{label}: its condition can hold although an earlier gate failed ({joined})")
        scanned_before = any(is_image_scan(s) for s in steps(job)[:index])
        scanned_upstream = any(
            is_image_scan(s) and not is_true(jobs(workflow)[name].get("continue-on-error"))
            for name in upstream_jobs(workflow, job_id)
            for s in steps(jobs(workflow)[name])
        )
        if not (scanned_before or scanned_upstream):
            problems.append(f"{label}: no Trivy image scan runs before it")
    if not found:
        problems.append("no step pushes the image")
    return problems


def write_permission_problems(workflow: Workflow) -> list[str]:
    """Write scopes granted to a job that does not use them."""
    problems = []
    for job_id, job in jobs(workflow).items():
        granted = job.get("permissions") or {}
        if isinstance(granted, str):
            problems.append(f"{job_id}: permissions {granted!r}")
            continue
        needs_scope = {
            "packages": any(is_push_step(s) or "cosign sign" in run_script(s) for s in steps(job)),
            "id-token": any(
                "cosign sign" in run_script(s) or uses_of(s, "aws-actions/configure-aws-credentials")
                for s in steps(job)
            ),
            "security-events": any(uses_of(s, "github/codeql-action/upload-sarif") for s in steps(job)),
            "contents": False,
        }
        for scope, level in granted.items():
            if level == "write" and not needs_scope.get(scope, False):
                problems.append(f"{job_id}: {scope}: write is not used by the job")
    return problems


# ------------------------------------------------------------------------------------ the real workflows
@pytest.fixture(params=WORKFLOW_PATHS, ids=lambda path: path.name)
def workflow_file(request) -> Path:
    return request.param


def test_the_pipeline_workflow_exists():
    assert (WORKFLOW_DIR / "ci.yml") in WORKFLOW_PATHS


def test_every_action_is_pinned_to_a_commit_sha_with_its_version(workflow_file):
    assert unpinned_uses(workflow_file.read_text()) == []


def test_trivy_steps_fail_the_job_on_findings():
    assert trivy_gate_problems(parse(PIPELINE.read_text())) == []


def test_kubescape_has_a_compliance_threshold_and_can_fail():
    assert kubescape_problems(parse(PIPELINE.read_text())) == []


def test_no_step_pipes_a_download_into_a_shell(workflow_file):
    assert piped_downloads(parse(workflow_file.read_text())) == []


def test_top_level_permissions_are_read_only(workflow_file):
    assert top_level_permission_problems(parse(workflow_file.read_text())) == []


def test_write_permissions_only_where_a_step_uses_them(workflow_file):
    assert write_permission_problems(parse(workflow_file.read_text())) == []


def test_every_checkout_drops_its_credentials(workflow_file):
    assert checkout_problems(parse(workflow_file.read_text())) == []


def test_the_image_is_pushed_only_from_main_after_the_scans():
    assert push_problems(parse(PIPELINE.read_text())) == []


def test_runs_share_a_concurrency_group(workflow_file):
    concurrency = parse(workflow_file.read_text()).get("concurrency") or {}
    assert concurrency.get("group"), "no concurrency group"


def test_the_k3d_cluster_is_always_deleted():
    workflow = parse((WORKFLOW_DIR / "ci.yml").read_text())
    deletions = [
        step
        for _job_id, _job, _index, step in all_steps(workflow)
        if re.search(r"\bk3d\s+cluster\s+delete\b", run_script(step))
    ]
    assert deletions, "no step deletes the k3d cluster"
    assert all(str(step.get("if", "")).strip() in ("always()", "${{ always() }}") for step in deletions)


def test_dependabot_watches_pip_actions_docker_and_terraform():
    config = yaml.safe_load((ROOT / ".github" / "dependabot.yml").read_text())
    ecosystems = {update["package-ecosystem"] for update in config["updates"]}
    assert {"pip", "github-actions", "docker", "terraform"} <= ecosystems


# ---------------------------------------------------------------- each detector catches a bad example
GOOD_CHECKOUT = "actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1  # v7.0.1"


def workflow_text(body: str, top: str = "permissions:\n  contents: read\n") -> str:
    return f"name: example\non: push\n{top}jobs:\n{body}"


@pytest.mark.parametrize(
    "line",
    [
        "      - uses: actions/checkout@v4",
        "      - uses: actions/checkout@main",
        "      - uses: actions/checkout@3d3c42e",
        "      - uses: actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1",
        "      - uses: aquasecurity/trivy-action@0.28.0  # v0.28.0",
        "      - uses: docker://alpine:3.20",
    ],
)
def test_unpinned_uses_are_caught(line):
    text = workflow_text(f"  job:\n    runs-on: ubuntu-latest\n    steps:\n{line}\n")
    assert unpinned_uses(text)


def test_flow_style_uses_cannot_hide_from_the_pin_check():
    text = workflow_text("  job:\n    runs-on: ubuntu-latest\n    steps: [{uses: actions/checkout@v4}]\n")
    assert unpinned_uses(text)


def test_a_pinned_uses_with_its_version_passes():
    text = workflow_text(f"  job:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: {GOOD_CHECKOUT}\n")
    assert unpinned_uses(text) == []


TRIVY = "aquasecurity/trivy-action@ed142fd0673e97e23eac54620cfb913e5ce36c25"


def trivy_workflow(image_with: dict, step_extra: dict | None = None) -> Workflow:
    image_step = {"uses": TRIVY, "with": image_with, **(step_extra or {})}
    config_step = {"uses": TRIVY, "with": {"scan-type": "config", "exit-code": 1}}
    return {"jobs": {"image": {"steps": [image_step, config_step]}}}


@pytest.mark.parametrize(
    ("image_with", "step_extra"),
    [
        ({"image-ref": "x"}, None),
        ({"image-ref": "x", "exit-code": "0"}, None),
        ({"image-ref": "x", "exit-code": "1"}, {"continue-on-error": True}),
        ({"image-ref": "x", "exit-code": "1"}, {"if": "false"}),
        ({"image-ref": "x", "exit-code": "1"}, {"if": "${{ false }}"}),
    ],
)
def test_trivy_steps_that_cannot_fail_are_caught(image_with, step_extra):
    assert trivy_gate_problems(trivy_workflow(image_with, step_extra))


def test_trivy_exit_code_one_as_string_or_number_passes():
    assert trivy_gate_problems(trivy_workflow({"image-ref": "x", "exit-code": "1"})) == []
    assert trivy_gate_problems(trivy_workflow({"image-ref": "x", "exit-code": 1})) == []


def test_a_missing_trivy_config_scan_is_caught():
    workflow = {"jobs": {"image": {"steps": [{"uses": TRIVY, "with": {"exit-code": "1"}}]}}}
    assert trivy_gate_problems(workflow) == ["no Trivy config scan"]


@pytest.mark.parametrize(
    ("step", "env"),
    [
        ({"run": "kubescape scan framework nsa,mitre"}, {}),
        ({"run": "kubescape scan framework nsa --compliance-threshold 0"}, {}),
        ({"run": "kubescape scan framework nsa --compliance-threshold 80 || true"}, {}),
        ({"run": "kubescape scan framework nsa --compliance-threshold 80", "continue-on-error": True}, {}),
        ({"run": 'kubescape scan framework nsa --compliance-threshold "$T"'}, {}),
        ({"run": 'kubescape scan framework nsa --compliance-threshold "$T"'}, {"T": "0"}),
        ({"uses": "kubescape/github-action@" + "a" * 40, "with": {"frameworks": "nsa"}}, {}),
    ],
)
def test_kubescape_without_a_working_threshold_is_caught(step, env):
    workflow = {"env": env, "jobs": {"deploy": {"steps": [step]}}}
    assert kubescape_problems(workflow)


def test_kubescape_threshold_from_the_environment_passes():
    step = {"run": 'kubescape scan framework nsa,mitre \\\n  --compliance-threshold "$T"', "env": {"T": "80"}}
    assert kubescape_problems({"jobs": {"deploy": {"steps": [step]}}}) == []


def test_a_workflow_without_kubescape_is_caught():
    assert kubescape_problems({"jobs": {"deploy": {"steps": [{"run": "echo"}]}}}) == ["no Kubescape scan"]


@pytest.mark.parametrize(
    "script",
    [
        "curl -fsSL https://example.com/install.sh | bash",
        "curl -sL https://example.com/install.sh | sh -s -- -b /usr/local/bin",
        "wget -qO- https://example.com/install.sh | sudo bash",
        "wget -O - https://example.com/x | sudo -E sh",
        "curl -s https://example.com/x \\\n  | bash",
        "curl -s https://example.com/x | /bin/bash",
        "curl -s https://example.com/x | python3 -",
        "bash <(curl -s https://example.com/x)",
        'sh -c "$(curl -fsSL https://example.com/x)"',
        "source <(curl -s https://example.com/x)",
    ],
)
def test_downloads_piped_into_a_shell_are_caught(script):
    assert piped_downloads({"jobs": {"job": {"steps": [{"run": script}]}}})


def test_a_checked_download_is_not_flagged():
    script = "curl -fsSLo k3d https://example.com/k3d\necho 'abc  k3d' | sha256sum --check\ncurl -s x | jq ."
    assert piped_downloads({"jobs": {"job": {"steps": [{"run": script}]}}}) == []


@pytest.mark.parametrize(
    "permissions",
    [None, "write-all", "read-all", {}, {"contents": "write"}, {"contents": "read", "packages": "write"}],
)
def test_top_level_permissions_that_are_not_read_only_are_caught(permissions):
    workflow: Workflow = {"jobs": {}}
    if permissions is not None:
        workflow["permissions"] = permissions
    assert top_level_permission_problems(workflow)


def test_an_unused_write_permission_is_caught():
    workflow = {"jobs": {"lint": {"permissions": {"packages": "write"}, "steps": [{"run": "make lint"}]}}}
    assert write_permission_problems(workflow)


@pytest.mark.parametrize("options", [{}, {"persist-credentials": True}, {"persist-credentials": "true"}])
def test_checkouts_keeping_credentials_are_caught(options):
    step = {"uses": GOOD_CHECKOUT.split(maxsplit=1)[0], "with": options}
    assert checkout_problems({"jobs": {"job": {"steps": [step]}}})


BUILD_PUSH = "docker/build-push-action@53b7df96c91f9c12dcc8a07bcb9ccacbed38856a"
SCAN = {"uses": TRIVY, "with": {"image-ref": "x", "exit-code": "1"}}
MAIN_PUSH = f"{PUSH_EVENT} && {MAIN_REF}"
MAIN_OR_PULL_REQUEST = f"{MAIN_REF} || github.event_name == 'pull_request'"


@pytest.mark.parametrize(
    "workflow",
    [
        # pushed on every event
        {"jobs": {"image": {"steps": [SCAN, {"uses": BUILD_PUSH, "with": {"push": True}}]}}},
        # pushed from main, but before the scan
        {"jobs": {"image": {"steps": [{"uses": BUILD_PUSH, "with": {"push": True}, "if": MAIN_PUSH}, SCAN]}}},
        # pushed from main by docker push, with no scan at all
        {"jobs": {"image": {"steps": [{"run": "docker push x", "if": MAIN_PUSH}]}}},
        # a separate push job that does not wait for the scan job
        {
            "jobs": {
                "scan": {"steps": [SCAN]},
                "push": {"if": MAIN_PUSH, "steps": [{"uses": BUILD_PUSH, "with": {"push": "true"}}]},
            }
        },
        # waits for the scan job but runs even when it failed
        {
            "jobs": {
                "scan": {"steps": [SCAN]},
                "push": {
                    "needs": "scan",
                    "if": f"always() && {MAIN_PUSH}",
                    "steps": [{"uses": BUILD_PUSH, "with": {"push": True}}],
                },
            }
        },
        # waits for a scan whose findings are ignored
        {
            "jobs": {
                "scan": {"steps": [{**SCAN, "continue-on-error": True}]},
                "push": {"needs": ["scan"], "if": MAIN_PUSH, "steps": [{"run": "docker push x"}]},
            }
        },
        # pull requests push too
        {"jobs": {"image": {"steps": [SCAN, {"run": "docker push x", "if": MAIN_OR_PULL_REQUEST}]}}},
    ],
)
def test_pushes_off_main_or_before_the_scan_are_caught(workflow):
    assert push_problems(workflow)


def test_a_push_after_the_scan_job_from_main_passes():
    workflow = {
        "jobs": {
            "scan": {"steps": [SCAN]},
            "deploy": {"needs": "scan", "steps": [{"run": "true"}]},
            "push": {
                "needs": ["deploy"],
                "if": MAIN_PUSH,
                "steps": [{"uses": BUILD_PUSH, "with": {"push": True}}],
            },
        }
    }
    assert push_problems(workflow) == []
