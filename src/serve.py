"""``python -m src.serve``: gunicorn's command line, with what gunicorn parses at import checked first.

gunicorn parses ``WEB_CONCURRENCY`` with a bare ``int()`` when its config module is imported, before
gunicorn.conf.py runs: a bad value there is a ten-line traceback. Checked here first, it is one line that
names the variable, like every other setting (docs/configuration.md). The image and ``make run`` start
gunicorn this way; the process is then gunicorn's master itself (PID 1 in the container), as with the
``gunicorn`` command.
"""

from __future__ import annotations

import os
import sys

from src.config import ConfigError, EnvReader


def main() -> None:
    """Refuse a bad WEB_CONCURRENCY with one line, then hand the command line to gunicorn."""
    try:
        EnvReader(os.environ).number("WEB_CONCURRENCY", int, 4, minimum=1)
    except ConfigError as exc:
        raise SystemExit(f"Invalid configuration: {exc}") from None
    from gunicorn.app.wsgiapp import run  # noqa: PLC0415 - only once the environment is known to parse

    sys.argv[0] = "gunicorn"
    run()


if __name__ == "__main__":
    main()
