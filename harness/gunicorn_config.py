"""gunicorn.conf.py as gunicorn itself reads it: through gunicorn's own loader, in a fresh interpreter.

The file reads the environment (and a ``.env`` in the working directory) when it is executed, so each read
runs in a child process with exactly the environment given and an empty working directory: nothing of the
calling process leaks in, and nothing the file sets leaks out.
"""

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG_FILE = REPO / "gunicorn.conf.py"

# Loads the file the way `gunicorn -c gunicorn.conf.py` does (Application.load_config_from_file sets every
# known name on gunicorn's Config, then Config.validate), and prints the settings asked for as JSON. A class
# (worker_class) is printed as "module.qualname" of the class gunicorn resolved.
_READ = """
import json, sys
from gunicorn.app.base import Application

class ConfigFile(Application):
    def load_config(self):
        self.load_config_from_file(sys.argv[1])

    def load(self):
        raise NotImplementedError

cfg = ConfigFile().cfg
values = {}
for name in sys.argv[2:]:
    value = getattr(cfg, name)
    if isinstance(value, type):
        value = f"{value.__module__}.{value.__qualname__}"
    values[name] = value
print(json.dumps(values))
"""


def gunicorn_settings(env: Mapping[str, str], *names: str) -> dict:
    """The values gunicorn's Config holds for ``names`` after loading gunicorn.conf.py under ``env``."""
    child_env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO), **env}
    with tempfile.TemporaryDirectory() as empty:
        result = subprocess.run(
            [sys.executable, "-c", _READ, str(CONFIG_FILE), *names],
            env=child_env,
            cwd=empty,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    if result.returncode != 0:
        raise AssertionError(f"gunicorn could not load {CONFIG_FILE}:\n{result.stderr}")
    return json.loads(result.stdout.splitlines()[-1])
