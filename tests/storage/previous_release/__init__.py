"""The PostgreSQL store of the release before versioned migrations, to build the databases it made."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from types import ModuleType

FOLDER = Path(__file__).parent
SOURCE_FILE = FOLDER / "postgres.py.txt"
# Loaded inside src.storage, so that its relative imports (.base, ..lifecycle) find today's modules.
MODULE_NAME = "src.storage.previous_release_postgres"


def load() -> ModuleType:
    """The previous release's ``src/storage/postgres.py`` as a module, checked against SHA256SUMS first."""
    if MODULE_NAME in sys.modules:
        return sys.modules[MODULE_NAME]
    source = SOURCE_FILE.read_bytes()
    expected = dict(
        reversed(line.split()) for line in (FOLDER / "SHA256SUMS").read_text().splitlines() if line.strip()
    )
    if hashlib.sha256(source).hexdigest() != expected[SOURCE_FILE.name]:
        raise AssertionError(f"{SOURCE_FILE} differs from SHA256SUMS: take it from git again (SOURCE)")
    module = ModuleType(MODULE_NAME)
    module.__package__ = "src.storage"
    module.__file__ = str(SOURCE_FILE)
    sys.modules[MODULE_NAME] = module
    exec(compile(source, str(SOURCE_FILE), "exec"), module.__dict__)  # noqa: S102 - a file of this repository
    return module
