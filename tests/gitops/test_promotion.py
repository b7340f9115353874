"""Promotion: staging follows main, prod runs a pinned commit, nothing reaches prod without a manual sync."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.gitops.rendered import ARGOCD, REPO_URL, applications
from tests.kube.manifests import REPO, load_documents

PROMOTION = ARGOCD / "envs" / "prod" / "promotion.yaml"


def repository_sources(env: str) -> list[tuple[str, dict]]:
    """(Application, source) for every source of this repository among env's Applications."""
    return [
        (name, source)
        for name, app in applications(env).items()
        for source in app["spec"].get("sources") or [app["spec"]["source"]]
        if source["repoURL"] == REPO_URL
    ]


def promoted_revision() -> str:
    (promotion,) = load_documents(PROMOTION)
    return promotion["data"]["revision"]


def test_the_prod_root_waits_for_a_manual_sync():
    (root,) = load_documents(ARGOCD / "roots" / "prod.yaml")
    assert "automated" not in (root["spec"].get("syncPolicy") or {})


def test_prod_pins_a_commit_not_a_branch():
    assert re.fullmatch(r"[0-9a-f]{40}", promoted_revision())


def test_every_prod_source_of_this_repository_runs_the_promoted_commit():
    found = repository_sources("prod")
    names = {name for name, _ in found}
    assert names >= {"flask-api-prod", "monitoring", "kube-prometheus-stack", "fluent-bit"}
    for name, source in found:
        assert source["targetRevision"] == promoted_revision(), name


def test_staging_follows_main():
    for name, source in repository_sources("staging"):
        assert source["targetRevision"] == "main", name


def test_the_promoted_commit_holds_every_path_and_values_file_prod_reads():
    revision = promoted_revision()
    shallow = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--is-shallow-repository"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    present = subprocess.run(
        ["git", "-C", str(REPO), "cat-file", "-e", f"{revision}^{{commit}}"], capture_output=True, check=False
    )
    if present.returncode != 0 and shallow == "true":
        pytest.skip("shallow clone: the promoted commit's files cannot be read (fetch the full history)")
    assert present.returncode == 0, f"{revision} is not a commit of this repository"
    wanted = []
    for _, source in repository_sources("prod"):
        if "path" in source:
            wanted.append(f"{source['path']}/kustomization.yaml")
    for app in applications("prod").values():
        for source in app["spec"].get("sources", []):
            wanted += [f.removeprefix("$values/") for f in source.get("helm", {}).get("valueFiles", [])]
    for path in wanted:
        result = subprocess.run(
            ["git", "-C", str(REPO), "cat-file", "-e", f"{revision}:{path}"], capture_output=True, check=False
        )
        assert result.returncode == 0, f"{path} does not exist at {revision}"
