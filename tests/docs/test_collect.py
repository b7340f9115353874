"""``make docs`` condenses what the tools wrote into docs/figures/."""

from __future__ import annotations

import json

from tools.docs import collect_gates, collect_tests, render_figure

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="0" failures="1" skipped="1" tests="4" time="185.25"
 timestamp="2026-11-30T14:00:00.000000" hostname="h">
<testcase classname="tests.routes.test_auth" name="test_register_twice_returns_409" time="0.10"/>
<testcase classname="tests.routes.test_auth" name="test_login" time="0.20">
<failure message="x">x</failure></testcase>
<testcase classname="tests.integration.test_drills_faults" name="test_postgres_outage" time="12.34"/>
<testcase classname="tests.integration.test_drills_faults" name="test_disk_full" time="0.01">
<skipped message="needs root">needs root</skipped></testcase>
</testsuite></testsuites>
"""


def test_make_test_results_become_one_sentence_and_a_drills_table(tmp_path):
    (tmp_path / "junit.xml").write_text(JUNIT)
    (tmp_path / "coverage.json").write_text(json.dumps({"totals": {"percent_covered": 98.2468}}))
    summary = collect_tests(tmp_path / "junit.xml", tmp_path / "coverage.json")
    assert (summary["passed"], summary["failed"], summary["skipped"]) == (2, 1, 1)
    (tmp_path / "tests.json").write_text(json.dumps({**summary, "python": "3.11"}))
    assert render_figure("tests", tmp_path) == (
        "`make test` on 2026-11-30 (Python 3.11): 2 passed, 1 skipped, 1 failed in 185 s; "
        "branch coverage of `src` 98.25 %.\n"
    )
    assert render_figure("drills", tmp_path).splitlines()[0] == "`make test` on 2026-11-30:"
    assert render_figure("drills", tmp_path).splitlines()[-2:] == [
        "| `test_postgres_outage` | passed | 12.3 |",
        "| `test_disk_full` | skipped | 0.0 |",
    ]


def test_ci_gate_lines_become_a_table_with_the_total(tmp_path):
    (tmp_path / "gates.tsv").write_text("make-test\tpassed\t210\nfuzz\tfailed\t35\n")
    (tmp_path / "gates.json").write_text(json.dumps(collect_gates(tmp_path / "gates.tsv", "2026-11-30")))
    assert render_figure("gates", tmp_path).splitlines()[-3:] == [
        "| make-test | passed | 210 |",
        "| fuzz | failed | 35 |",
        "| **whole run** | | 245 |",
    ]


def test_fresh_install_times_become_a_table_of_both_commands(tmp_path):
    figures = {
        "date": "2026-12-06",
        "python": "3.11.7",
        "pip": "23.2.1",
        "uv": "0.13.9",
        "machine": "x86_64",
        "make_run_seconds": 27.24,
        "make_test_install_seconds": 49.6,
    }
    (tmp_path / "install.json").write_text(json.dumps(figures))
    lines = render_figure("install", tmp_path).splitlines()
    assert "Python 3.11.7 with its stock pip 23.2.1" in lines[0]
    assert lines[-2:] == [
        "| `make run`: clone to the first 200 of `/healthz` | 27.2 |",
        "| `make test`: clone to both virtualenvs installed and ruff run (`make lint`) | 49.6 |",
    ]


def test_no_recorded_run_says_which_command_writes_the_figures(tmp_path):
    expected = "No recorded run yet: run `make ci`, then `make docs` (gates).\n"
    assert render_figure("gates", tmp_path) == expected


SYSTEM_JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="0" failures="0" skipped="0" tests="2" time="40.0"
 timestamp="2026-11-30T14:10:00.000000" hostname="h">
<testcase classname="tests.integration.test_drills_faults" name="test_disk_full" time="3.21"/>
<testcase classname="tests.storage.test_json_file" name="test_full_disk" time="0.50"/>
</testsuite></testsuites>
"""


def test_drills_of_make_test_system_join_the_drills_table(tmp_path):
    (tmp_path / "junit.xml").write_text(JUNIT)
    (tmp_path / "junit-system.xml").write_text(SYSTEM_JUNIT)
    (tmp_path / "coverage.json").write_text(json.dumps({"totals": {"percent_covered": 98.2468}}))
    summary = collect_tests(tmp_path / "junit.xml", tmp_path / "coverage.json", tmp_path / "junit-system.xml")
    (tmp_path / "tests.json").write_text(json.dumps(summary))
    assert (summary["passed"], summary["failed"], summary["skipped"]) == (2, 1, 1)  # make test's own counts
    assert (
        render_figure("drills", tmp_path).splitlines()[0]
        == "`make test` and `make test-system` on 2026-11-30:"
    )
    assert render_figure("drills", tmp_path).splitlines()[-3:] == [
        "| `test_postgres_outage` | passed | 12.3 |",
        "| `test_disk_full` | skipped | 0.0 |",
        "| `test_disk_full` | passed | 3.2 |",
    ]


def test_make_mutants_results_become_a_table_with_the_time(tmp_path):
    report = {
        "date": "2026-11-30",
        "mutants": 2,
        "killed": 2,
        "baseline_seconds": 61.2,
        "total_seconds": 95.4,
        "jobs": 3,
        "outcomes": [
            {"name": "hsts-removed", "area": "security", "verdict": "killed", "seconds": 3.04},
            {"name": "json-store-lock-removed", "area": "storage", "verdict": "killed", "seconds": 30.96},
        ],
    }
    (tmp_path / "mutants.json").write_text(json.dumps(report))
    assert render_figure("mutants", tmp_path).splitlines() == [
        "`make mutants` on 2026-11-30: 2 of 2 mutants killed in 95 s, 3 at a time (of which 61 s for the "
        "baseline run of their tests on the unmutated code).",
        "",
        "| mutant | area | result | seconds |",
        "| --- | --- | --- | ---: |",
        "| `hsts-removed` | security | killed | 3.0 |",
        "| `json-store-lock-removed` | storage | killed | 31.0 |",
    ]


def test_schema_cost_medians_become_a_table_with_the_ratio_and_the_load(tmp_path):
    report = {
        "date": "2026-12-07 00:08 UTC",
        "baseline": "5a6da25",
        "rounds": 5,
        "python": "3.11.7",
        "load_average": [4.06, 5.21, 5.86],
        "cpu_us_per_call": {"baseline": {"GET /hello": 171.5}, "models": {"GET /hello": 178.4}},
        "ratio_models_to_baseline": {"GET /hello": 1.04},
    }
    (tmp_path / "schema-cost.json").write_text(json.dumps(report))
    assert render_figure("schema-cost", tmp_path).splitlines() == [
        "Measured 2026-12-07 00:08 UTC with Python 3.11.7: 5 rounds, each tree in a fresh interpreter, "
        "alternating; load average 4.06, 5.21, 5.86. CPU µs per call, median of the rounds.",
        "",
        "| what | hand-written checks (5a6da25) | pydantic models | ratio |",
        "| --- | ---: | ---: | ---: |",
        "| GET /hello | 171.5 | 178.4 | 1.04x |",
    ]


def test_schema_library_medians_become_a_table_of_ratios_to_the_projects_way(tmp_path):
    report = {
        "date": "2026-12-07 00:10 UTC",
        "rounds": 5,
        "python": "3.11.7",
        "versions": {"flask": "3.1.3", "spectree": "3.0.0"},
        "load_average": [4.0, 4.5, 5.0],
        "cpu_us_per_request": {
            "flask + own decorator": {"GET /hello": 100.0},
            "spectree": {"GET /hello": 150.0},
        },
    }
    (tmp_path / "schema-libraries.json").write_text(json.dumps(report))
    assert render_figure("schema-libraries", tmp_path).splitlines()[2:] == [
        "| app | GET /hello |",
        "| --- | ---: |",
        "| flask + own decorator | 100.0 (1.00x) |",
        "| spectree | 150.0 (1.50x) |",
    ]
