"""Fixtures of the manifest tests: the k3d secret script run against a stand-in for the cluster's API."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import pytest

from .manifests import SCRIPTS

FAKE_KUBECTL = Path(__file__).with_name("fake_kubectl.py")


def run_k3d_script(
    state: Path,
    script: str = "create-secrets-k3d.sh",
    args: list[str] | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """One of kube_config/scripts/*.sh, its kubectl being the stand-in; the Secrets land under ``state``."""
    bin_dir = state / "bin"
    bin_dir.mkdir(exist_ok=True)
    kubectl = bin_dir / "kubectl"
    if not kubectl.exists():
        kubectl.symlink_to(FAKE_KUBECTL)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE_KUBECTL_STATE": str(state / "cluster"),
    }
    (state / "cluster").mkdir(exist_ok=True)
    return subprocess.run(
        ["bash", str(SCRIPTS / script), *(args or [])],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def secrets_in(state: Path, namespace: str = "flask-api") -> dict[str, dict[str, str]]:
    folder = state / "cluster" / namespace
    return {
        path.stem: {
            key: base64.b64decode(value).decode() for key, value in json.loads(path.read_text()).items()
        }
        for path in sorted(folder.glob("*.json"))
    }


@pytest.fixture(scope="module")
def k3d_secrets(tmp_path_factory) -> dict[str, dict[str, str]]:
    state = tmp_path_factory.mktemp("k3d-secrets")
    result = run_k3d_script(state)
    assert result.returncode == 0, result.stderr
    return secrets_in(state)
