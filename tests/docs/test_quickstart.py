"""The README's quick start runs as written: ``make run``, then each command, against a real gunicorn."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import free_port
from harness.command import ServingCommand
from tools.docs import REPO, Example, quickstart_examples, run_examples

# Variables a developer's shell may hold and that would change what the quick start shows.
CLEARED = dict.fromkeys(
    ("METRICS_PORT", "METRICS_ENABLED", "GUNICORN_BIND", "DATABASE_URL", "SECRET_KEY", "AUTH_MAX_FAILURES")
)


@pytest.fixture(scope="module")
def make_run(tmp_path_factory: pytest.TempPathFactory):
    """``make run`` as the README says, on a free port, its data file in a temp folder."""
    port = free_port()
    data = tmp_path_factory.mktemp("quickstart") / "data.json"
    env = {**CLEARED, "DATA_FILE_PATH": str(data), "WEB_CONCURRENCY": "2"}
    with ServingCommand(["make", "--no-print-directory", "run", f"PORT={port}"], cwd=REPO, env=env) as run:
        run.wait_for(f"http://127.0.0.1:{port}/healthz")
        yield f"http://127.0.0.1:{port}"


def test_the_quick_start_begins_with_make_run_and_make_test():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    quick_start = readme.split("## Quick start\n", 1)[1]
    first_block = quick_start.split("```sh\n", 1)[1].split("```", 1)[0]
    assert [line.split()[:2] for line in first_block.splitlines()] == [["make", "run"], ["make", "test"]]
    assert readme.index("## Quick start") < 1000  # on the first screen


def test_the_readme_quick_start_runs_as_written(make_run):
    examples = quickstart_examples((REPO / "README.md").read_text(encoding="utf-8"))
    assert len(examples) >= 6
    assert run_examples(examples, make_run) == []


def test_a_quick_start_command_that_no_longer_works_fails_the_check(make_run):
    readme = (
        "# x\n\n## Quick start\n\n```console\n"
        "$ curl -s http://127.0.0.1:8888/healthz\n"
        '{"status":"ok"}\n'
        "$ curl -s http://127.0.0.1:8888/id\n"
        '{"id":1}\n'
        "```\n\n## Next\n"
    )
    examples = quickstart_examples(readme)
    assert examples == [
        Example(6, "curl -s http://127.0.0.1:8888/healthz", '{"status":"ok"}'),
        Example(8, "curl -s http://127.0.0.1:8888/id", '{"id":1}'),
    ]
    problems = run_examples(examples, make_run)
    assert len(problems) == 1
    assert problems[0].startswith("README.md:8: curl -s http://127.0.0.1:8888/id\n  shown: '{\"id\":1}'\n")
    assert '"status": 401' in problems[0]


def test_a_command_that_fails_is_reported_with_its_exit_status(make_run):
    examples = [Example(3, "curl -sf http://127.0.0.1:8888/no-such-route", "")]
    problems = run_examples(examples, make_run)
    assert len(problems) == 1
    assert problems[0].startswith(
        "README.md:3: curl -sf http://127.0.0.1:8888/no-such-route\n  exit status 22"
    )


def test_a_continued_command_is_one_example(tmp_path: Path):
    readme = "## Quick start\n\n```console\n$ printf '%s\\n' \\\n    one\none\n```\n"
    assert quickstart_examples(readme) == [Example(4, "printf '%s\\n' \\\n    one", "one")]
