"""Backups of the selfhosted PostgreSQL through the Barman Cloud plugin, checked against the upstream CRDs.

The Cluster and ScheduledBackup are validated against CloudNativePG 1.30.0's CRDs (tests/gitops/upstream/
cloudnative-pg), the ObjectStore against the CRD of the plugin's v0.14.0 manifest that Argo CD installs
(kube_config/platform/plugin-barman-cloud/upstream), each vendored with its SOURCE and SHA256SUMS.
"""

from __future__ import annotations

import base64
import hashlib
import os

import pytest
import yaml

from tests.gitops.crds import crd_schemas, schema_errors
from tests.gitops.rendered import applications, render, render_path
from tests.gitops.upstream import checksums, vendored
from tests.kube.manifests import KUBE_CONFIG, find, one

PLUGIN = KUBE_CONFIG / "platform" / "plugin-barman-cloud"
PLUGIN_NAME = "barman-cloud.cloudnative-pg.io"
CNPG_CRDS = ("postgresql.cnpg.io_clusters.yaml", "postgresql.cnpg.io_scheduledbackups.yaml")


def plugin_manifest() -> list[dict]:
    """The objects of the vendored plugin manifest; bytes that differ from SHA256SUMS fail the test."""
    data = (PLUGIN / "upstream" / "manifest.yaml").read_bytes()
    (line,) = (PLUGIN / "upstream" / "SHA256SUMS").read_text(encoding="utf-8").splitlines()
    digest, name = line.split()
    assert name == "manifest.yaml"
    assert hashlib.sha256(data).hexdigest() == digest, "the plugin manifest differs from its SHA256SUMS entry"
    return [doc for doc in yaml.safe_load_all(data) if doc]


def schemas() -> dict[tuple[str, str], dict]:
    crds = [yaml.safe_load(vendored("cloudnative-pg", name)) for name in CNPG_CRDS]
    return crd_schemas([*crds, *plugin_manifest()])


def with_backups(tmp_path) -> list[dict]:
    """The selfhosted overlay with the backup component, as its kustomization's comment says to add it."""
    # Kustomize takes relative paths only: reach the overlay and the component from tmp_path.
    overlay = os.path.relpath(KUBE_CONFIG / "overlays" / "selfhosted", tmp_path)
    component = os.path.relpath(KUBE_CONFIG / "components" / "cloudnativepg-backup", tmp_path)
    (tmp_path / "kustomization.yaml").write_text(f"resources: [{overlay}]\ncomponents: [{component}]\n")
    return render_path(tmp_path)


def test_the_vendored_cnpg_crds_are_the_ones_sha256sums_records():
    assert set(checksums("cloudnative-pg")) == set(CNPG_CRDS)
    assert {kind for _, kind in schemas()} >= {"Cluster", "ScheduledBackup", "ObjectStore"}


def test_the_cluster_archives_its_wal_through_the_plugin_not_the_in_tree_barman_object_store(tmp_path):
    objects = with_backups(tmp_path)
    (cluster,) = find(objects, "Cluster")
    assert "backup" not in cluster["spec"]
    (plugin,) = cluster["spec"]["plugins"]
    assert plugin["name"] == PLUGIN_NAME
    assert plugin["isWALArchiver"] is True
    store = one(objects, "ObjectStore", plugin["parameters"]["barmanObjectName"])
    assert store["metadata"]["namespace"] == cluster["metadata"]["namespace"]
    assert store["spec"]["retentionPolicy"] == "14d"
    configuration = store["spec"]["configuration"]
    assert configuration["destinationPath"].startswith("s3://")
    credentials = configuration["s3Credentials"]
    assert {credentials["accessKeyId"]["name"], credentials["secretAccessKey"]["name"]} == {
        "flask-api-pg-backup"
    }


def test_the_nightly_backup_goes_through_the_plugin(tmp_path):
    objects = with_backups(tmp_path)
    (cluster,) = find(objects, "Cluster")
    (scheduled,) = find(objects, "ScheduledBackup")
    assert scheduled["spec"]["method"] == "plugin"
    assert scheduled["spec"]["pluginConfiguration"]["name"] == PLUGIN_NAME
    assert scheduled["spec"]["cluster"]["name"] == cluster["metadata"]["name"]
    assert scheduled["spec"]["schedule"] == "0 0 3 * * *"
    assert scheduled["metadata"]["namespace"] == "flask-api"


def test_the_object_store_is_synced_before_the_cluster_and_the_backup_after_it(tmp_path):
    objects = with_backups(tmp_path)
    wave = {o["kind"]: int(o["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]) for o in objects}
    assert wave["ObjectStore"] < wave["Cluster"] < wave["ScheduledBackup"]


def test_no_manifest_uses_the_deprecated_barman_object_store():
    for path in KUBE_CONFIG.rglob("*.yaml"):
        for obj in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if isinstance(obj, dict) and obj.get("kind") in {"Cluster", "ScheduledBackup", "Backup"}:
                assert "barmanObjectStore" not in obj["spec"].get("backup", {}), path
                assert obj["spec"].get("method") != "barmanObjectStore", path


@pytest.mark.parametrize("backups", [False, True], ids=["selfhosted", "selfhosted-with-backups"])
def test_the_database_objects_are_valid_under_the_upstream_crds(backups, tmp_path):
    objects = with_backups(tmp_path) if backups else render("overlays/selfhosted")
    known = schemas()
    checked = [o for o in objects if (o["apiVersion"], o["kind"]) in known]
    kinds = {o["kind"] for o in checked}
    assert kinds == ({"Cluster", "ScheduledBackup", "ObjectStore"} if backups else {"Cluster"})
    for obj in checked:
        errors = schema_errors(obj, known[obj["apiVersion"], obj["kind"]])
        assert errors == [], f"{obj['kind']} {obj['metadata']['name']}: {errors}"


def test_argo_cd_installs_the_plugin_of_the_vendored_release_beside_the_operator():
    apps = applications("selfhosted")
    plugin, operator = apps["plugin-barman-cloud"], apps["cloudnative-pg"]
    assert plugin["spec"]["source"]["path"] == "kube_config/platform/plugin-barman-cloud"
    assert plugin["spec"]["destination"]["namespace"] == operator["spec"]["destination"]["namespace"]
    waves = {
        name: int(app["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"])
        for name, app in apps.items()
    }
    assert (
        waves["cert-manager"]
        < waves["cloudnative-pg"]
        < waves["plugin-barman-cloud"]
        < waves["flask-api-selfhosted"]
    )


def test_the_plugin_runs_the_release_images_of_its_tag():
    source = (PLUGIN / "upstream" / "SOURCE").read_text(encoding="utf-8")
    tag = source.split("tag: ", 1)[1].split()[0]
    objects = render("platform/plugin-barman-cloud")
    deployment = one(objects, "Deployment", "barman-cloud")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"ghcr.io/cloudnative-pg/plugin-barman-cloud:{tag}"
    secret_name = next(
        e["valueFrom"]["secretKeyRef"] for e in container["env"] if e["name"] == "SIDECAR_IMAGE"
    )
    secret = one(objects, "Secret", secret_name["name"])
    sidecar = base64.b64decode(secret["data"][secret_name["key"]]).decode()
    assert sidecar == f"ghcr.io/cloudnative-pg/plugin-barman-cloud-sidecar:{tag}"
    # The service the operator discovers the plugin by, and the ObjectStore CRD of the same manifest.
    service = one(objects, "Service", "barman-cloud")
    assert service["metadata"]["labels"]["cnpg.io/pluginName"] == PLUGIN_NAME
    assert one(objects, "CustomResourceDefinition", "objectstores.barmancloud.cnpg.io")
