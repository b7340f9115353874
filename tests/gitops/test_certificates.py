"""cert-manager objects: every Certificate, Issuer and ClusterIssuer the repository renders is valid under the
CRDs of the cert-manager release Argo CD installs (tests/gitops/upstream/cert-manager, SOURCE, SHA256SUMS).

kubernetes-validate takes no CRD, so `make check-kube` leaves these kinds to this test.
"""

from __future__ import annotations

import functools

import pytest
import yaml

from tests.gitops.crds import crd_schemas, schema_errors
from tests.gitops.rendered import build, kustomizations, values
from tests.gitops.upstream import checksums, vendored
from tests.kube.manifests import REPO

GROUP = "cert-manager.io"


@functools.cache
def schemas() -> dict[tuple[str, str], dict]:
    names = [name for name in checksums("cert-manager") if name.startswith(f"{GROUP}_")]
    return crd_schemas(yaml.safe_load(vendored("cert-manager", name)) for name in names)


def rendered_folders() -> list[str]:
    folders = []
    for path in kustomizations():
        if "kind: Component" not in path.read_text(encoding="utf-8"):
            folders.append(str(path.parent.relative_to(REPO)))
    return folders


def cert_manager_objects() -> list[tuple[str, dict]]:
    return [
        (folder, obj)
        for folder in rendered_folders()
        for obj in build(folder)
        if obj["apiVersion"].split("/")[0] == GROUP
    ]


def test_the_vendored_crds_declare_the_kinds_the_repository_uses():
    assert {kind for _, kind in schemas()} == {"Certificate", "Issuer", "ClusterIssuer"}
    used = {(obj["apiVersion"], obj["kind"]) for _, obj in cert_manager_objects()}
    assert used, "no cert-manager object rendered"
    assert used <= set(schemas())


@pytest.mark.parametrize("folder", rendered_folders())
def test_every_cert_manager_object_is_valid_under_its_crd(folder):
    for obj in build(folder):
        if obj["apiVersion"].split("/")[0] == GROUP:
            errors = schema_errors(obj, schemas()[obj["apiVersion"], obj["kind"]])
            assert errors == [], f"{folder}: {obj['kind']} {obj['metadata']['name']}: {errors}"


def test_every_key_of_the_cert_manager_values_is_one_the_pinned_chart_reads():
    chart = yaml.safe_load(vendored("cert-manager", "values.yaml"))
    (committed,) = values("cert-manager")
    assert set(committed) <= set(chart), set(committed) - set(chart)
    assert set(committed["crds"]) <= set(chart["crds"])
    # The chart installs its CRDs and keeps them when the release goes, with every Certificate.
    assert committed["crds"] == {"enabled": True, "keep": True}
