"""Argo CD's install: the vendored upstream manifest is the published one, and the kustomization builds it.

The Application and AppProject objects of this repository are validated against the CRDs of that manifest,
the ones a cluster running it checks them against.
"""

from __future__ import annotations

import copy
import hashlib
import re

import pytest

from tests.gitops.crds import crd_schemas, schema_errors
from tests.gitops.rendered import ARGOCD, ENVIRONMENTS, render
from tests.kube.manifests import load_documents

UPSTREAM = ARGOCD / "install" / "upstream"
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "Namespace"}


def recorded() -> dict[str, str]:
    """The field/value table of upstream/README.md."""
    text = (UPSTREAM / "README.md").read_text(encoding="utf-8")
    return dict(re.findall(r"^\| (\w+) \| (\S+) \|$", text, re.M))


def install() -> list[dict]:
    return render("argocd/install")


def argo_cd_objects() -> list[tuple[str, dict]]:
    """(where, object) for every Application and AppProject of the environments and the clusters' roots."""
    found = [
        (f"argocd/envs/{env}", obj)
        for env in ENVIRONMENTS
        for obj in render(f"argocd/envs/{env}")
        if obj["apiVersion"].startswith("argoproj.io/")
    ]
    for path in sorted((ARGOCD / "roots").glob("*.yaml")):
        found += [(f"argocd/roots/{path.name}", obj) for obj in load_documents(path)]
    return found


def test_the_vendored_install_is_the_file_whose_checksum_the_readme_records():
    digest = hashlib.sha256((UPSTREAM / "install.yaml").read_bytes()).hexdigest()
    assert digest == recorded()["sha256"]


def test_the_readme_names_the_v3_5_1_release_its_url_and_commit():
    fields = recorded()
    assert fields["tag"] == "v3.5.1"
    assert (
        fields["source"] == "https://raw.githubusercontent.com/argoproj/argo-cd/v3.5.1/manifests/install.yaml"
    )
    assert re.fullmatch(r"[0-9a-f]{40}", fields["commit"])


def test_the_install_is_built_from_the_vendored_file_only():
    kustomization = load_documents(ARGOCD / "install" / "kustomization.yaml")[0]
    assert kustomization["resources"] == ["upstream/install.yaml"]


def test_every_argo_cd_container_runs_the_release_the_readme_names():
    images = {
        container["image"]
        for obj in install()
        if obj["kind"] in {"Deployment", "StatefulSet"}
        for container in obj["spec"]["template"]["spec"].get("initContainers", [])
        + obj["spec"]["template"]["spec"]["containers"]
        if container["image"].startswith("quay.io/argoproj/argocd")
    }
    assert images == {"quay.io/argoproj/argocd:v3.5.1"}


def test_every_namespaced_object_of_the_install_lands_in_argocd():
    namespaces = {obj["metadata"].get("namespace") for obj in install() if obj["kind"] not in CLUSTER_SCOPED}
    assert namespaces == {"argocd"}


def test_argocd_cm_builds_overlays_with_files_above_them_and_judges_application_health():
    (settings,) = [o for o in install() if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "argocd-cm"]
    assert settings["metadata"]["namespace"] == "argocd"
    assert settings["data"]["kustomize.buildOptions"] == "--load-restrictor LoadRestrictionsNone"
    assert (
        "obj.status.health.status"
        in settings["data"]["resource.customizations.health.argoproj.io_Application"]
    )


def test_the_install_defines_the_application_and_appproject_kinds():
    assert {("argoproj.io/v1alpha1", "Application"), ("argoproj.io/v1alpha1", "AppProject")} <= set(
        crd_schemas(install())
    )


@pytest.mark.parametrize("where", [*(f"argocd/envs/{env}" for env in ENVIRONMENTS), "argocd/roots"])
def test_every_application_and_project_is_valid_under_argo_cds_crds(where):
    schemas = crd_schemas(install())
    checked = [(w, obj) for w, obj in argo_cd_objects() if w.startswith(where)]
    assert checked
    for _, obj in checked:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        assert schema_errors(obj, schemas[obj["apiVersion"], obj["kind"]]) == [], name


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda app: app["spec"]["syncPolicy"].update(automatedd={}), "spec.syncPolicy.automatedd"),
        (lambda app: app["spec"]["destination"].update(namespace=7), "spec.destination.namespace"),
        (
            lambda app: app["metadata"].update({"kustomize.buildOptions": "x"}),
            "metadata.kustomize.buildOptions",
        ),
    ],
    ids=["misspelled field", "wrong type", "metadata not of ObjectMeta"],
)
def test_the_crd_check_refuses_an_application_with(change, error):
    schemas = crd_schemas(install())
    app = copy.deepcopy(next(o for w, o in argo_cd_objects() if o["kind"] == "Application"))
    change(app)
    errors = schema_errors(app, schemas[app["apiVersion"], app["kind"]])
    assert [e for e in errors if e.startswith(f"{error}:")], errors
