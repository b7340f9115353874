"""The mutation gate's list stays applicable: a change that rewrites a line a mutant names is caught by
`make test`, not first by `make mutants` (which refuses the whole list and runs nothing)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHECK = [sys.executable, str(REPO / ".ci" / "check_mutants.py"), "--check-list"]


def test_every_mutant_names_a_text_found_exactly_once_in_its_file():
    result = subprocess.run(CHECK, capture_output=True, text=True, timeout=60, check=False)
    assert (result.returncode, result.stdout.strip()) == (0, "ok"), result.stdout + result.stderr


def test_a_mutant_whose_text_is_gone_is_named(tmp_path: Path):
    listed = tmp_path / "mutants.toml"
    listed.write_text(
        '[[mutant]]\nname = "gone"\narea = "api"\nfile = "src/__init__.py"\n'
        'original = "text that is in no file"\nmutated = "x"\ntests = ["tests/test_cli.py"]\n',
        encoding="utf-8",
    )
    result = subprocess.run(
        [*CHECK, "--list", str(listed)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 1
    assert "gone: original text found 0 times in src/__init__.py" in result.stdout
