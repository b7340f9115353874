"""The bars the benchmark checks: a ratio under its bar is reported "no", at or over it "yes"."""

from __future__ import annotations

import pytest

from bench import report


def route(ratios: dict[str, float]) -> dict:
    """One route's figures: the service's, and its ratio to each named reference."""
    figures = {"rps": 1000.0, "p50_ms": 1.0, "p99_ms": 5.0}
    return {
        "service": figures,
        "references": {name: {**figures, "ratio_rps": value} for name, value in ratios.items()},
    }


def results(hello: dict[str, float], healthz: dict[str, float]) -> dict:
    """A recorded run of one configuration (JSON store, 10 users) with these ratios."""
    memory = [{"pid": 1, "rss_mib": 40.0, "pss_mib": 30.0}]
    return {
        "started": "2026-12-06T00:00:00+00:00",
        "machine": {"cpus": 2, "note": ""},
        "wrk": {"threads": 2, "connections": 16, "duration_s": 1},
        "worker_class": "src.worker.Worker (gunicorn.conf.py)",
        "repeats": 1,
        "references": {"flask": "Flask", "fastapi": "FastAPI", "granian": "Granian"},
        "configurations": [
            {
                "store": "json",
                "users": 10,
                "routes": {"/healthz": route(healthz), "/hello": route(hello)},
                "memory": {"idle": memory, "after_load": memory, "master": memory},
            }
        ],
        "scaling": [],
        "reference_memory": {},
    }


def verdicts(recorded: dict) -> dict[str, str]:
    """The target table of the rendered report: target -> "yes" or "no"."""
    recorded["targets"] = report.check_targets(recorded)
    rows = {}
    for line in report.markdown(recorded).splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 3 and cells[2] in ("yes", "no"):
            rows[cells[0]] = cells[2]
    return rows


@pytest.mark.parametrize(
    ("hello", "healthz", "expected"),
    [
        (
            {"flask": 3.0, "fastapi": 1.15, "granian": 0.90},
            {"flask": 3.0, "fastapi": 1.40, "granian": 0.30},
            {"/hello": "yes", "/healthz": "yes", "granian": "yes"},
        ),
        (
            {"flask": 3.0, "fastapi": 1.14, "granian": 0.89},
            {"flask": 3.0, "fastapi": 1.39, "granian": 0.30},
            {"/hello": "no", "/healthz": "no", "granian": "no"},
        ),
    ],
)
def test_the_report_says_whether_each_ratio_meets_its_bar(hello, healthz, expected) -> None:
    rows = verdicts(results(hello, healthz))

    assert rows == {
        "/hello >= 1.15x fastapi reference (json, 10 users)": expected["/hello"],
        "/healthz >= 1.4x fastapi reference (json, 10 users)": expected["/healthz"],
        "/hello >= 0.9x granian reference (json, 10 users)": expected["granian"],
        "JSON store, 10 users: RSS per worker after the load <= 80 MiB": "yes",
    }
