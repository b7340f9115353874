"""docs/aws.md against the files it describes: the charts it installs are those Argo CD installs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "aws.md"


@pytest.mark.parametrize(
    ("release", "chart", "application"),
    [
        ("external-secrets", "external-secrets/external-secrets", "external-secrets.yaml"),
        (
            "aws-load-balancer-controller",
            "eks/aws-load-balancer-controller",
            "aws-load-balancer-controller.yaml",
        ),
    ],
)
def test_a_chart_installed_by_hand_is_the_version_argo_cd_installs(release, chart, application):
    app = yaml.safe_load((ROOT / "kube_config" / "argocd" / "apps" / application).read_text())
    name = chart.split("/")[1]
    (source,) = [source for source in app["spec"]["sources"] if source.get("chart") == name]
    installs = re.findall(
        rf"helm upgrade --install {re.escape(release)} {re.escape(chart)} \\\n.*--version (\S+)",
        PAGE.read_text(),
    )
    assert installs == [source["targetRevision"]]
