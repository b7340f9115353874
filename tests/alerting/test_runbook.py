"""docs/runbook.md has an entry for every alert, and its routing table says what amtool verified.

Every notification links to ``docs/runbook.md#<alert name in lowercase>`` (alertmanager.yaml), so each
alert needs a heading of exactly its name: GitHub's anchor of that heading is the lowercased name.
"""

from __future__ import annotations

import re

import pytest

from .stack import ALERTMANAGER_CONFIG, REPO, alerts, rule_spec
from .test_routing import EXPECTED_RECEIVERS

RUNBOOK = REPO / "docs" / "runbook.md"
PARTS = ("**Fires when**", "**Look at**", "**Do:**")


def sections(text: str) -> dict[str, str]:
    """Level-2 sections of a Markdown page, by heading."""
    found = {}
    for block in re.split(r"^## ", text, flags=re.MULTILINE)[1:]:
        heading, _, body = block.partition("\n")
        found[heading.strip()] = body
    return found


def github_anchor(heading: str) -> str:
    """The fragment GitHub gives a heading: lowercase, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def routing_table(text: str) -> dict[str, tuple[str, str]]:
    """The rows of the runbook's routing table: alert -> (severity, receiver)."""
    rows = {}
    for line in sections(text)["Where alerts go"].splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].startswith("FlaskApi"):
            rows[cells[0]] = (cells[1], cells[2])
    return rows


@pytest.mark.parametrize("name", sorted(alerts(rule_spec())))
def test_every_alert_has_an_entry_saying_what_it_means_how_to_confirm_and_what_to_do(name):
    entry = sections(RUNBOOK.read_text())[name]
    for part in PARTS:
        assert part in entry, f"{name}: no {part}"
    assert github_anchor(name) == name.lower()


def test_no_entry_describes_an_alert_that_does_not_exist():
    documented = {heading for heading in sections(RUNBOOK.read_text()) if heading.startswith("FlaskApi")}
    assert documented == set(alerts(rule_spec()))


def test_notifications_link_to_the_entry_of_their_alert():
    assert (
        "Runbook: docs/runbook.md#{{ .CommonLabels.alertname | toLower }}" in ALERTMANAGER_CONFIG.read_text()
    )


def test_the_routing_table_is_the_verified_routing():
    severities = {name: rule["labels"]["severity"] for name, rule in alerts(rule_spec()).items()}
    expected = {name: (severities[name], receiver) for name, receiver in EXPECTED_RECEIVERS.items()}
    assert routing_table(RUNBOOK.read_text()) == expected


def test_a_missing_entry_is_caught():
    text = RUNBOOK.read_text().replace("## FlaskApiDown\n", "## Flask API down\n")
    assert "FlaskApiDown" not in sections(text)
