"""Render the GitOps manifests the way Argo CD builds them (kubectl kustomize, load restrictor off)."""

import functools
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from harness import in_ci
from tests.kube.manifests import KUBE_CONFIG, load_documents

ARGOCD = KUBE_CONFIG / "argocd"
PLATFORM = KUBE_CONFIG / "platform"
LOGGING = KUBE_CONFIG / "logging"
ENVIRONMENTS = ("dev", "staging", "prod", "selfhosted")
REPO_URL = "https://github.com/flask-api/flask-api.git"


@functools.cache
def render(folder: str) -> list[dict]:
    """Every object `kubectl kustomize --load-restrictor LoadRestrictionsNone kube_config/<folder>` prints."""
    return render_path(KUBE_CONFIG / folder)


def render_path(path: Path) -> list[dict]:
    """Every object `kubectl kustomize --load-restrictor LoadRestrictionsNone <path>` prints."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        if in_ci():
            pytest.fail("kubectl is needed to render the overlays")
        pytest.skip("kubectl not installed")
    out = subprocess.run(
        [kubectl, "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(path)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def applications(env: str) -> dict[str, dict]:
    """The Argo CD Applications of one environment's root, by name."""
    return {o["metadata"]["name"]: o for o in render(f"argocd/envs/{env}") if o["kind"] == "Application"}


def values(chart: str, *variants: str) -> list[dict]:
    """The committed Helm values of a platform chart: values.yaml, then values-<variant>.yaml."""
    names = ["values.yaml", *(f"values-{v}.yaml" for v in variants)]
    return [load_documents(PLATFORM / chart / name)[0] for name in names]


def fluent_bit_pipeline() -> dict:
    """Fluent Bit's YAML configuration, kube_config/logging/fluent-bit.yaml."""
    return load_documents(LOGGING / "fluent-bit.yaml")[0]
