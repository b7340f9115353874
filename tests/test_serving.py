"""What gunicorn.conf.py installs, in this process: its settings' one-line errors, its JSON log lines, and
``python -m src.serve`` in front of gunicorn's command line.

The same code runs in the master of every gunicorn the integration tests start; there, coverage cannot see it.
"""

from __future__ import annotations

import json
import logging
import sys

import pytest
from gunicorn.config import Config

from src import serve
from src.serving import GunicornEnv, JsonLogger


@pytest.mark.parametrize(
    ("environ", "read", "message"),
    [
        (
            {"PORT": "abc"},
            lambda env: env.integer("PORT", 1, minimum=1),
            "PORT must be an integer, got 'abc'",
        ),
        ({"PORT": "0"}, lambda env: env.integer("PORT", 1, minimum=1), "PORT must be >= 1, got 0"),
        (
            {"GUNICORN_PRELOAD": "maybe"},
            lambda env: env.flag("GUNICORN_PRELOAD", default=False),
            "GUNICORN_PRELOAD must be true or false, got 'maybe'",
        ),
    ],
)
def test_a_bad_gunicorn_setting_exits_with_one_line(environ, read, message):
    with pytest.raises(SystemExit) as exited:
        read(GunicornEnv(environ))

    assert str(exited.value) == f"Invalid configuration: {message}"


def test_gunicorn_settings_read_the_environment_or_fall_back_to_their_default():
    env = GunicornEnv({"PORT": "9000", "GUNICORN_PRELOAD": "true", "GUNICORN_BIND": ""})

    assert env.integer("PORT", 8888, minimum=1) == 9000
    assert env.integer("GUNICORN_TIMEOUT", 30, minimum=1) == 30
    assert env.flag("GUNICORN_PRELOAD", default=False) is True
    assert env.text("GUNICORN_BIND", "0.0.0.0:8888") == "0.0.0.0:8888"  # empty counts as unset


@pytest.fixture
def root_logger():
    """The root logger's handlers and level put back after the test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_gunicorn_error_log_and_early_records_are_one_json_line_each(capfd, root_logger):
    config = Config()
    config.set("errorlog", "-")
    config.set("loglevel", "info")
    logger = JsonLogger(config)
    logger.setup(config)  # gunicorn sets up again on reload: still one handler, one line per record

    logger.error("worker %s failed to boot", 7)
    logging.getLogger("src.config").warning("before the application's own handler")
    lines = json_lines(capfd.readouterr().out)

    assert [(line["level"], line["logger"], line["message"]) for line in lines] == [
        ("error", "gunicorn.error", "worker 7 failed to boot"),
        ("warning", "src.config", "before the application's own handler"),
    ]
    assert all(line["time"].endswith("Z") for line in lines)


def test_a_secret_in_a_gunicorn_log_record_is_masked(capfd, root_logger):
    config = Config()
    config.set("errorlog", "-")
    logger = JsonLogger(config)

    logger.warning("bad header Authorization: Bearer abc.def.ghi")

    (line,) = json_lines(capfd.readouterr().out)
    assert line["message"] == "bad header Authorization: [REDACTED]"


def test_serve_refuses_a_bad_web_concurrency_before_gunicorn_reads_it(monkeypatch):
    monkeypatch.setenv("WEB_CONCURRENCY", "0")

    with pytest.raises(SystemExit) as exited:
        serve.main()

    assert str(exited.value) == "Invalid configuration: WEB_CONCURRENCY must be >= 1, got 0"


def test_serve_hands_its_command_line_to_gunicorn(monkeypatch, capsys):
    monkeypatch.setenv("WEB_CONCURRENCY", "2")
    monkeypatch.setattr(sys, "argv", ["python -m src.serve", "--version"])

    with pytest.raises(SystemExit) as exited:
        serve.main()

    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("gunicorn (version 27.")
