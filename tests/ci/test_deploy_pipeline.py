"""The pipeline deploys what it scanned, the way a user deploys it (.github/workflows/ci.yml).

Each test reads the workflow as GitHub does (YAML) and checks one decision that no linter sees: the config
scan judges the project's own code, the registry receives the scanned image itself, the k3d cluster runs the
Kubernetes version the manifests are validated against and is smoke-tested through its Ingress.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .test_workflows import all_steps, parse, run_script, uses_of

ROOT = Path(__file__).resolve().parents[2]
CI = ROOT / ".github" / "workflows" / "ci.yml"


@pytest.fixture(scope="module")
def workflow() -> dict:
    return parse(CI.read_text())


def job_text(workflow: dict, job_id: str) -> str:
    return "\n".join(
        run_script(step) for _, _, _, step in all_steps({"jobs": {job_id: workflow["jobs"][job_id]}})
    )


def test_the_config_scan_leaves_out_the_modules_trivy_downloads(workflow):
    scans = [
        step
        for _, _, _, step in all_steps(workflow)
        if uses_of(step, "aquasecurity/trivy-action")
        and (step.get("with") or {}).get("scan-type") == "config"
    ]
    assert len(scans) == 1
    (scan,) = scans
    assert str((scan.get("env") or {}).get("TRIVY_TF_EXCLUDE_DOWNLOADED_MODULES")).lower() == "true"


def test_push_publishes_the_scanned_image_without_building_again(workflow):
    push = workflow["jobs"]["push"]
    steps = push["steps"]
    assert not [s for s in steps if uses_of(s, "docker/build-push-action")], "push must not build"
    downloads = [s for s in steps if uses_of(s, "actions/download-artifact")]
    assert [d["with"]["name"] for d in downloads] == ["flask-api-image"]
    image_job = workflow["jobs"]["image"]
    uploads = [s for s in image_job["steps"] if uses_of(s, "actions/upload-artifact")]
    assert [u["with"]["name"] for u in uploads] == ["flask-api-image"]
    script = job_text(workflow, "push")
    assert 'docker tag "$SCANNED_IMAGE"' in script
    assert "docker push" in script
    assert "digest=" in script
    assert push["outputs"]["digest"] == "${{ steps.push.outputs.digest }}"


def test_push_signs_and_summarises_the_digest_it_pushed(workflow):
    script = job_text(workflow, "push")
    assert 'cosign sign --yes "$PUSHED"' in script
    assert "pin-image-eks.sh $PUSHED" in script
    # Every step whose script uses $PUSHED gets it from the digest the push step printed.
    users = [step for step in workflow["jobs"]["push"]["steps"] if "$PUSHED" in run_script(step)]
    pushed = [(step.get("env") or {}).get("PUSHED", "") for step in users]
    assert len(users) >= 2, "cosign and pin-image-eks.sh use $PUSHED"
    assert [value.endswith("@${{ steps.push.outputs.digest }}") for value in pushed] == [True] * len(users)


def test_k3d_runs_the_kubernetes_minor_the_manifests_are_validated_against(workflow):
    job = workflow["jobs"]["deploy-k3d"]
    k3s = job["env"]["K3S_IMAGE"]
    assert re.fullmatch(r"rancher/k3s:v\d+\.\d+\.\d+-k3s\d+", k3s), k3s
    validated = re.search(
        r'KUBERNETES_VERSION="\$\{KUBERNETES_VERSION:-(\d+\.\d+)\.\d+\}"',
        (ROOT / ".ci" / "check-kube.sh").read_text(),
    )
    assert validated is not None
    assert k3s.removeprefix("rancher/k3s:v").startswith(validated.group(1) + ".")
    assert '--image "$K3S_IMAGE"' in job_text(workflow, "deploy-k3d")


def test_the_smoke_test_goes_through_the_ingress_and_checks_metrics_are_not_public(workflow):
    script = job_text(workflow, "deploy-k3d")
    assert "port-forward" not in script
    port = workflow["jobs"]["deploy-k3d"]["env"]["INGRESS_PORT"]
    assert port == "8080"
    assert '--port "${INGRESS_PORT}:80@loadbalancer"' in script
    assert '.github/scripts/smoke-test.sh "http://127.0.0.1:${INGRESS_PORT}" --metrics-not-public' in script
