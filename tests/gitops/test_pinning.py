"""No automated sync of an EKS environment whose files still hold the template's placeholders.

The committed infrastructure.env files and release.env carry the AWS documentation account 123456789012 and
the all-zero image digest until an operator writes this account's values. The component
kube_config/argocd/components/until-pinned keeps Argo CD from applying what renders them; these tests fail
when an automated Application of staging or prod renders a placeholder, whichever file it came from.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.gitops.rendered import render_path
from tests.kube.manifests import KUBE_CONFIG

EKS = ("staging", "prod")
# The all-zero digest of release.env, and the account of every ARN of the committed infrastructure.env files.
PLACEHOLDERS = ("sha256:" + "0" * 64, ":123456789012:")
UNTIL_PINNED = "  - ../../components/until-pinned\n"


def automated_placeholders(kube_config: Path, env: str) -> dict[str, list[str]]:
    """Automated Application -> the placeholders that what it deploys still holds (none listed when clean)."""
    found = {}
    for app in render_path(kube_config / "argocd" / "envs" / env):
        if app["kind"] != "Application" or "automated" not in (app["spec"].get("syncPolicy") or {}):
            continue
        text = ""
        for source in app["spec"].get("sources") or [app["spec"]["source"]]:
            if "path" in source:
                text += yaml.safe_dump_all(render_path(kube_config.parent / source["path"]))
            text += yaml.safe_dump(source.get("helm", {}).get("parameters", []))
        found[app["metadata"]["name"]] = [p for p in PLACEHOLDERS if p in text]
    return found


def pin(kube_config: Path) -> None:
    """Write what an operator writes: another account's values and a pushed image's digest."""
    for env_file in kube_config.glob("overlays/*/infrastructure.env"):
        env_file.write_text(env_file.read_text(encoding="utf-8").replace("123456789012", "210987654321"))
    result = subprocess.run(
        [
            str(kube_config / "scripts" / "pin-image-eks.sh"),
            "ghcr.io/acme-corp/flask-api@sha256:" + "ab" * 32,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def drop_until_pinned(kube_config: Path, env: str) -> None:
    kustomization = kube_config / "argocd" / "envs" / env / "kustomization.yaml"
    text = kustomization.read_text(encoding="utf-8")
    assert UNTIL_PINNED in text
    kustomization.write_text(text.replace(UNTIL_PINNED, "").replace("components:\n", ""), encoding="utf-8")


@pytest.fixture
def kube_config_copy(tmp_path) -> Path:
    copy = tmp_path / "kube_config"
    shutil.copytree(KUBE_CONFIG, copy)
    return copy


@pytest.mark.parametrize("env", EKS)
def test_no_automated_application_deploys_a_placeholder(env):
    found = automated_placeholders(KUBE_CONFIG, env)
    assert found, "no automated Application was read"
    assert {name: p for name, p in found.items() if p} == {}


@pytest.mark.parametrize("env", EKS)
def test_the_api_and_the_storage_class_wait_for_a_manual_sync_until_pinned(env):
    apps = {o["metadata"]["name"]: o for o in render_path(KUBE_CONFIG / "argocd" / "envs" / env)}
    for name in (f"flask-api-{env}", "storage"):
        assert "automated" not in apps[name]["spec"].get("syncPolicy", {}), name


@pytest.mark.parametrize("env", EKS)
def test_automated_sync_turned_on_before_pinning_is_caught(kube_config_copy, env):
    drop_until_pinned(kube_config_copy, env)
    found = automated_placeholders(kube_config_copy, env)
    assert found["storage"] == [":123456789012:"]
    if env == "staging":
        assert found["flask-api-staging"] == list(PLACEHOLDERS)


def test_a_pinned_staging_syncs_prunes_and_heals_its_api_automatically(kube_config_copy):
    pin(kube_config_copy)
    drop_until_pinned(kube_config_copy, "staging")
    assert {name: p for name, p in automated_placeholders(kube_config_copy, "staging").items() if p} == {}
    (api,) = [
        o
        for o in render_path(kube_config_copy / "argocd" / "envs" / "staging")
        if o["metadata"]["name"] == "flask-api-staging"
    ]
    automated = api["spec"]["syncPolicy"]["automated"]
    assert (automated["prune"], automated["selfHeal"]) == (True, True)


def test_the_placeholders_are_what_the_committed_files_hold():
    # The list above names what the template carries: a new placeholder format would slip past it.
    release = (KUBE_CONFIG / "overlays" / "eks" / "release.env").read_text(encoding="utf-8")
    assert release.strip().endswith(PLACEHOLDERS[0])
    for env_file in KUBE_CONFIG.glob("overlays/*/infrastructure.env"):
        accounts = set(
            re.findall(r"arn:aws:[a-z0-9-]+:[a-z0-9-]*:(\d{12}):", env_file.read_text(encoding="utf-8"))
        )
        assert accounts == {"123456789012"}, env_file
