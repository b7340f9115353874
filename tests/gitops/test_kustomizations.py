"""Every kustomization of the repository builds with kustomize, as Argo CD and the documented commands run it.

The kustomizations are found by walking the repository, so a new overlay, component or environment is built
here without being listed. Strict schema validation of what they render is .ci/check-kube.sh's
(kubernetes-validate); the custom resources of Argo CD are checked in test_argocd_install.py.
"""

from __future__ import annotations

import os
import re
import shlex

import pytest

from tests.gitops.crds import OBJECT_META_FIELDS
from tests.gitops.rendered import ARGOCD_BUILD_OPTIONS, build, kustomizations, render_path
from tests.kube.manifests import REPO, load_documents
from tools.docs import doc_pages

FOUND = {path.parent.relative_to(REPO).as_posix(): load_documents(path)[0] for path in kustomizations()}
BUILDS = sorted(folder for folder, k in FOUND.items() if k.get("kind", "Kustomization") == "Kustomization")
COMPONENTS = sorted(folder for folder, k in FOUND.items() if k.get("kind") == "Component")
# Components that no committed kustomization includes, and the kustomization each is written for: they are
# built through a wrapper that adds them to it.
OPTIONAL_COMPONENTS = {"kube_config/components/cloudnativepg-backup": "kube_config/overlays/selfhosted"}
# `kubectl apply ... -k PATH` and `kubectl kustomize [--load-restrictor R] PATH`, in docs and comments.
KUBECTL = re.compile(r"kubectl (?:kustomize|apply)\b[^|;&]*")


def documented_builds() -> dict[tuple[str, tuple[str, ...]], list[str]]:
    """(folder, kustomize options) -> where, for each build a page or a kustomization's comment shows."""
    sources = [(page.path, line) for page in doc_pages() for _, line in page.code()]
    sources += [
        (path, line.lstrip("# "))
        for path in kustomizations()
        for line in path.read_text(encoding="utf-8").splitlines()
    ]
    builds: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for path, line in sources:
        for command in KUBECTL.findall(line):
            words = shlex.split(command)
            options: tuple[str, ...] = ()
            if "--load-restrictor" in words[:-1]:
                at = words.index("--load-restrictor")
                options, words = tuple(words[at : at + 2]), words[:at] + words[at + 2 :]
            if words[1] == "kustomize" and len(words) > 2:
                folder = words[2]
            elif "-k" in words[:-1]:
                folder = words[words.index("-k") + 1]
            else:
                continue  # a command named in prose, without its folder
            where = builds.setdefault((folder.rstrip("/"), options), [])
            where.append(path.relative_to(REPO).as_posix())
    return dict(sorted(builds.items()))


DOCUMENTED = documented_builds()


def included_components(folder: str) -> set[str]:
    return {os.path.normpath(os.path.join(folder, c)) for c in FOUND[folder].get("components", [])}


def test_the_walk_finds_the_overlays_environments_components_and_argo_cd_install():
    assert {
        "kube_config/overlays/k3d",
        "kube_config/overlays/eks",
        "kube_config/overlays/selfhosted",
        "kube_config/argocd/install",
        "kube_config/argocd/envs/prod",
        "kube_config/monitoring",
        "kube_config/logging",
    } <= set(BUILDS)
    assert {"kube_config/components/sync-waves", "kube_config/components/cloudnativepg-backup"} <= set(
        COMPONENTS
    )


@pytest.mark.parametrize("folder", BUILDS)
def test_every_kustomization_builds_as_argo_cd_builds_it(folder):
    objects = build(folder)
    assert objects
    for obj in objects:
        assert set(obj["metadata"]) <= OBJECT_META_FIELDS, (obj["kind"], obj["metadata"].get("name"))


@pytest.mark.parametrize("component", COMPONENTS)
def test_every_component_builds_in_a_kustomization_that_includes_it(component, tmp_path):
    hosts = [folder for folder in BUILDS if component in included_components(folder)]
    if hosts:
        # test_every_kustomization_builds_as_argo_cd_builds_it builds them.
        return
    assert component in OPTIONAL_COMPONENTS, f"{component}: no kustomization includes it"
    host = OPTIONAL_COMPONENTS[component]
    # Kustomize takes relative paths only: reach the host and the component from tmp_path.
    (tmp_path / "kustomization.yaml").write_text(
        f"resources: [{os.path.relpath(REPO / host, tmp_path)}]\n"
        f"components: [{os.path.relpath(REPO / component, tmp_path)}]\n"
    )
    assert render_path(tmp_path, ARGOCD_BUILD_OPTIONS) != build(host)


@pytest.mark.parametrize(
    ("folder", "options"),
    list(DOCUMENTED),
    ids=[" ".join([*options, folder, "in", *where]) for (folder, options), where in DOCUMENTED.items()],
)
def test_every_documented_kustomize_build_works_as_written(folder, options):
    assert folder in BUILDS, f"{folder} is not a kustomization"
    assert build(folder, options)


def test_the_install_commands_of_argo_cd_and_the_monitoring_folder_are_among_the_documented_builds():
    assert set(DOCUMENTED) >= {
        ("kube_config/argocd/install", ()),
        ("kube_config/monitoring", ()),
        ("kube_config/overlays/eks", ("--load-restrictor", "LoadRestrictionsNone")),
    }
