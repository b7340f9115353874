"""docs/aws.md against the files it describes: the charts it installs are those Argo CD installs."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "aws.md"


def test_the_external_secrets_chart_installed_by_hand_is_the_one_argo_cd_installs():
    application = yaml.safe_load(
        (ROOT / "kube_config" / "argocd" / "apps" / "external-secrets.yaml").read_text()
    )
    (chart,) = [
        source for source in application["spec"]["sources"] if source.get("chart") == "external-secrets"
    ]
    installs = re.findall(
        r"helm upgrade --install external-secrets external-secrets/external-secrets \\\n.*--version (\S+)",
        PAGE.read_text(),
    )
    assert installs == [chart["targetRevision"]]
