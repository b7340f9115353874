"""One PostgreSQL major everywhere: compose, the k3d StatefulSet, the CloudNativePG cluster, RDS, the tests.

Each is read from the artifact itself (image tags, the OpenTofu default, the running test server), so a bump
of one without the others fails here. Why 18: docs/storage.md#one-postgresql-major.
"""

from __future__ import annotations

import re

import psycopg
import yaml

from harness.postgres import PostgresServer
from tests.infrastructure.test_invariants import INFRA, _parse
from tests.kube.manifests import KUBE_CONFIG, load_documents, one, overlay_image, pod_spec
from tools.docs import REPO

MAJOR = "18"


def image_major(image: str) -> str:
    """The major of a PostgreSQL image reference ("docker.io/library/postgres:18.1@sha256:..." -> "18")."""
    tag = image.split("@", maxsplit=1)[0].rpartition(":")[2]
    return re.match(r"\d+", tag).group(0)


def test_compose_runs_the_major_of_the_tests():
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    assert image_major(compose["services"]["postgres"]["image"]) == MAJOR


def test_the_k3d_statefulset_runs_the_major_of_the_tests():
    statefulset = one(load_documents(KUBE_CONFIG / "30-postgres.yaml"), "StatefulSet", "flask-api-postgres")
    (container,) = pod_spec(statefulset)["containers"]
    assert image_major(overlay_image("k3d", container["image"])) == MAJOR


def test_the_cloudnativepg_cluster_runs_the_major_of_the_tests():
    (cluster,) = load_documents(KUBE_CONFIG / "overlays" / "selfhosted" / "cluster.yaml")
    assert image_major(cluster["spec"]["imageName"]) == MAJOR


def test_rds_defaults_to_the_major_of_the_tests():
    variables = _parse((INFRA / "variables.tf").read_text())["variable"]
    (engine,) = [entry["db_engine_version"] for entry in variables if "db_engine_version" in entry]
    assert str(engine["default"]).split(".")[0] == MAJOR


def test_the_test_server_is_that_major(postgres_server: PostgresServer):
    with psycopg.connect(postgres_server.url) as connection:
        version = connection.execute("SHOW server_version").fetchone()[0]
    assert version.split(".")[0] == MAJOR
