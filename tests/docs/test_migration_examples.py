"""docs/storage.md's "How to add a migration" runs as written: ``python -m src.migrate`` forward, back and
forward again on a fresh PostgreSQL database prints what the page shows."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tools.docs import REPO, console_examples, run_examples

PAGE = REPO / "docs" / "storage.md"


def test_the_migration_walk_through_runs_as_written(postgres_url, tmp_path):
    examples = console_examples(PAGE.read_text(encoding="utf-8"), "#### How to add a migration")
    env = {name: value for name, value in os.environ.items() if not name.startswith("DATABASE_")}
    # The python of the interpreter running the tests first, as `. .venv/bin/activate` puts it.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(DATABASE_URL=postgres_url, PYTHONPATH=str(REPO))

    assert len(examples) == 4
    assert run_examples(examples, "", source="docs/storage.md", cwd=REPO, env=env) == []
