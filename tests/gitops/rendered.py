"""Render the GitOps manifests the way Argo CD builds them (kubectl kustomize, load restrictor off)."""

import functools
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from harness import in_ci
from tests.kube.manifests import KUBE_CONFIG, REPO, load_documents

ARGOCD = KUBE_CONFIG / "argocd"
PLATFORM = KUBE_CONFIG / "platform"
LOGGING = KUBE_CONFIG / "logging"
ENVIRONMENTS = ("dev", "staging", "prod", "selfhosted")
REPO_URL = "https://github.com/flask-api/flask-api.git"
# What Argo CD passes to kustomize (kustomize.buildOptions in kube_config/argocd/install/argocd-cm.yaml).
ARGOCD_BUILD_OPTIONS = ("--load-restrictor", "LoadRestrictionsNone")
# Folders that hold no manifests of the project: virtualenvs, build output, installed packages.
NOT_MANIFESTS = {"build", "htmlcov", "node_modules", "__pycache__"}
# The names kustomize reads a kustomization from.
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
# The vendored Argo CD manifest: 1.9 MB, read with libyaml where pyyaml has it (about 7 times faster).
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def render(folder: str) -> list[dict]:
    """Every object `kubectl kustomize --load-restrictor LoadRestrictionsNone kube_config/<folder>` prints."""
    return build(f"kube_config/{folder}")


@functools.cache
def build(folder: str, options: tuple[str, ...] = ARGOCD_BUILD_OPTIONS) -> list[dict]:
    """Every object `kubectl kustomize <options> <folder>` prints, folder relative to the repository."""
    return render_path(REPO / folder, options)


def render_path(path: Path, options: tuple[str, ...] = ARGOCD_BUILD_OPTIONS) -> list[dict]:
    """Every object `kubectl kustomize <options> <path>` prints; the test fails with kustomize's error."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        if in_ci():
            pytest.fail("kubectl is needed to render the overlays")
        pytest.skip("kubectl not installed")
    result = subprocess.run(
        [kubectl, "kustomize", *options, str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        pytest.fail(f"kubectl kustomize {' '.join(options)} {path} failed:\n{result.stderr}", pytrace=False)
    return [doc for doc in yaml.load_all(result.stdout, Loader=LOADER) if doc]


def kustomizations(root: Path = REPO) -> Iterator[Path]:
    """The kustomization file of every folder below root that has one (found by a walk: a new one counts)."""
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".") and d not in NOT_MANIFESTS)
        for name in KUSTOMIZATION_FILES:
            if name in files:
                yield Path(folder) / name


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


def merge_values(base: dict, override: dict) -> dict:
    """Helm's merge of two values maps: maps merged key by key, anything else replaced."""
    out = dict(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_values(out[key], value)
        else:
            out[key] = value
    return out


def unknown_keys(
    committed: dict, defaults: dict, pass_through: frozenset[str], prefix: str = ""
) -> list[str]:
    """Paths of committed Helm values that the chart's values.yaml does not have.

    The keys of the maps named in pass_through, which the chart hands on as they are, are not followed.
    """
    missing = []
    for key, value in committed.items():
        path = f"{prefix}{key}"
        if key not in defaults:
            missing.append(path)
        elif isinstance(value, dict) and key not in pass_through and isinstance(defaults[key], dict):
            missing += unknown_keys(value, defaults[key], pass_through, f"{path}.")
    return missing


def chart_source(env: str, app: str) -> dict:
    """The source of one of the environment's Applications that names a chart."""
    (source,) = [s for s in applications(env)[app]["spec"]["sources"] if "chart" in s]
    return source


def source_values(source: dict) -> dict:
    """The values a chart source of an Application gives: its valueFiles, then valuesObject over them."""
    helm = source.get("helm", {})
    return merge_values(helm_values(helm.get("valueFiles", [])), helm.get("valuesObject", {}))


def helm_values(value_files: list[str]) -> dict:
    """The values an Application's valueFiles ($values/<path in this repository>) give its chart, merged."""
    result: dict = {}
    for name in value_files:
        result = merge_values(result, load_documents(REPO / name.removeprefix("$values/"))[0] or {})
    return result
