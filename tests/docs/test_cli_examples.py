"""docs/cli.md's walk-through runs as written: each ``flask --app src ...`` command, in one bash, on a JSON
store of its own, prints what the page shows."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from src.security import load_or_create_secret_key
from tests.conftest import FAST_ARGON2
from tools.docs import REPO, Example, console_examples, run_examples

PAGE = REPO / "docs" / "cli.md"
# Variables a developer's shell may hold and that would change what the commands print.
CLEARED = ("DATABASE_URL", "SECRET_KEY", "SECRET_KEY_PREVIOUS", "JWT_EXPIRES_SECONDS", "FLASK_APP")


def environment(tmp_path: Path) -> dict[str, str]:
    """The JSON store of `make run` once it has started: its signing key generated beside the data file."""
    load_or_create_secret_key(str(tmp_path / "data.json"))
    env = {name: value for name, value in os.environ.items() if name not in CLEARED}
    # The flask of the interpreter running the tests first, as `. .venv/bin/activate` puts it.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(FAST_ARGON2, DATA_FILE_PATH=str(tmp_path / "data.json"))
    return env


def test_the_cli_walk_through_runs_as_written(tmp_path):
    examples = console_examples(PAGE.read_text(encoding="utf-8"), "## Walk-through")

    assert len(examples) >= 10
    assert run_examples(examples, "", source="docs/cli.md", cwd=REPO, env=environment(tmp_path)) == []


def test_a_cli_example_whose_output_changed_fails_the_check(tmp_path):
    shown = "    id  status    username\n     1  active    alice"
    examples = [Example(7, "flask --app src users list", shown)]

    problems = run_examples(examples, "", source="docs/cli.md", cwd=REPO, env=environment(tmp_path))

    assert problems == [
        "docs/cli.md:7: flask --app src users list\n"
        "  shown: '    id  status    username\\n     1  active    alice'\n"
        "  got:   '    id  status    username'"
    ]
