"""Settings from the environment: defaults, parsing, and one clear line naming each bad variable."""

from __future__ import annotations

import ipaddress
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

import src
from src.config import ConfigError, Settings
from tests.conftest import FAST_ARGON2, TEST_SECRET_KEY

REPO_ROOT = Path(__file__).resolve().parent.parent
KEY = "k" * 32
DATABASE_URL = "postgresql://api:hunter2-password@db.internal:5432/api"


def test_defaults_without_any_variable():
    settings = Settings.from_env({})

    assert settings == Settings()
    assert settings.secret_key is None
    assert settings.data_file_path == "data.json"
    assert settings.database_url is None
    assert (settings.database_pool_min, settings.database_pool_max) == (1, 4)
    assert settings.database_timeout_seconds == 5.0
    assert settings.jwt_expires_seconds == 3600
    assert (settings.session_absolute_seconds, settings.session_idle_seconds) == (2_592_000, 604_800)
    assert settings.max_content_length == 1_048_576
    assert settings.cors_origins == ()
    assert (settings.auth_max_failures, settings.auth_failure_window_seconds) == (5, 300.0)
    assert settings.trusted_proxy_count == 0
    assert settings.api_docs_enabled is True
    assert (settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_parallelism) == (
        3,
        65536,
        4,
    )
    assert settings.metrics_enabled is True
    assert settings.metrics_port is None
    assert settings.log_level == "info"


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        ("SECRET_KEY", KEY, "secret_key", KEY),
        ("DATA_FILE_PATH", "/data/data.json", "data_file_path", "/data/data.json"),
        ("DATABASE_POOL_MIN", "0", "database_pool_min", 0),
        ("DATABASE_POOL_MAX", "10", "database_pool_max", 10),
        ("DATABASE_TIMEOUT_SECONDS", "2.5", "database_timeout_seconds", 2.5),
        ("JWT_EXPIRES_SECONDS", "60", "jwt_expires_seconds", 60),
        ("SESSION_ABSOLUTE_SECONDS", "86400", "session_absolute_seconds", 86400),
        ("SESSION_IDLE_SECONDS", "3600", "session_idle_seconds", 3600),
        ("MAX_CONTENT_LENGTH", "4096", "max_content_length", 4096),
        (
            "CORS_ORIGINS",
            "https://a.example, http://b.example:8080/",
            "cors_origins",
            ("https://a.example", "http://b.example:8080"),
        ),
        ("AUTH_MAX_FAILURES", "0", "auth_max_failures", 0),
        ("AUTH_FAILURE_WINDOW_SECONDS", "60", "auth_failure_window_seconds", 60.0),
        ("AUTH_MAX_FAILURES_PER_USERNAME", "0", "auth_max_failures_per_username", 0),
        ("AUTH_MAX_FAILURES_PER_ADDRESS", "7", "auth_max_failures_per_address", 7),
        ("REGISTER_MAX_PER_ADDRESS", "3", "register_max_per_address", 3),
        ("REFRESH_MAX_PER_ADDRESS", "0", "refresh_max_per_address", 0),
        ("ARGON2_CONCURRENCY", "4", "argon2_concurrency", 4),
        ("ARGON2_WAIT_SECONDS", "0.5", "argon2_wait_seconds", 0.5),
        ("ARGON2_WAIT_SECONDS", "0", "argon2_wait_seconds", 0.0),
        ("ARGON2_QUEUE_LENGTH", "0", "argon2_queue_length", 0),
        (
            "TRUSTED_PROXIES",
            "10.42.0.0/16, 127.0.0.1",
            "trusted_proxies",
            (ipaddress.ip_network("10.42.0.0/16"), ipaddress.ip_network("127.0.0.1/32")),
        ),
        ("ARGON2_TIME_COST", "2", "argon2_time_cost", 2),
        ("ARGON2_MEMORY_KIB", "19456", "argon2_memory_kib", 19456),
        ("ARGON2_PARALLELISM", "1", "argon2_parallelism", 1),
        ("METRICS_ENABLED", "false", "metrics_enabled", False),
        ("METRICS_ENABLED", "ON", "metrics_enabled", True),
        ("METRICS_PORT", "9102", "metrics_port", 9102),
        ("LOG_LEVEL", "WARNING", "log_level", "warning"),
        ("API_DOCS_ENABLED", "false", "api_docs_enabled", False),
    ],
)
def test_each_variable_sets_its_field(variable, value, field, expected):
    assert getattr(Settings.from_env({variable: value}), field) == expected


def test_trusted_proxy_count_with_its_proxies():
    settings = Settings.from_env({"TRUSTED_PROXY_COUNT": "2", "TRUSTED_PROXIES": "10.42.0.0/16"})

    assert settings.trusted_proxy_count == 2


def test_empty_values_count_as_unset():
    assert Settings.from_env({"DATA_FILE_PATH": "", "METRICS_PORT": " ", "SECRET_KEY": ""}) == Settings()


def test_database_url_with_secret_key_selects_postgresql():
    settings = Settings.from_env({"DATABASE_URL": DATABASE_URL, "SECRET_KEY": KEY})

    assert settings.database_url == DATABASE_URL


def test_database_password_file_is_kept_by_path(tmp_path):
    password_file = tmp_path / "password"
    password_file.write_text("from a Secret volume\n")
    environ = {
        "DATABASE_URL": "postgresql://api@db.internal/api",
        "DATABASE_PASSWORD_FILE": str(password_file),
    }

    settings = Settings.from_env({**environ, "SECRET_KEY": KEY})

    assert settings.database_password_file == str(password_file)


@pytest.mark.parametrize(
    ("content", "url", "message"),
    [
        (None, "postgresql://api@db/api", "DATABASE_PASSWORD_FILE cannot be read: "),
        ("\n", "postgresql://api@db/api", "DATABASE_PASSWORD_FILE is empty: "),
        ("pw", None, "DATABASE_PASSWORD_FILE needs DATABASE_URL (the server, database and user)"),
    ],
)
def test_database_password_file_problems_stop_startup_naming_the_variable(tmp_path, content, url, message):
    password_file = tmp_path / "password"
    if content is not None:
        password_file.write_text(content)
    environ = {"SECRET_KEY": KEY, "DATABASE_PASSWORD_FILE": str(password_file)}
    if url:
        environ["DATABASE_URL"] = url

    with pytest.raises(ConfigError) as error:
        Settings.from_env(environ)

    assert str(error.value).startswith(message)


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"DATABASE_URL": DATABASE_URL}, "SECRET_KEY"),
        ({"DATABASE_URL": DATABASE_URL, "SECRET_KEY": "k" * 31}, "SECRET_KEY"),
        ({"SECRET_KEY": "short"}, "SECRET_KEY"),
        ({"DATABASE_URL": "mysql://db/api", "SECRET_KEY": KEY}, "DATABASE_URL"),
        ({"DATABASE_POOL_MIN": "-1"}, "DATABASE_POOL_MIN"),
        ({"DATABASE_POOL_MAX": "0"}, "DATABASE_POOL_MAX"),
        ({"DATABASE_POOL_MIN": "5", "DATABASE_POOL_MAX": "2"}, "DATABASE_POOL_MAX"),
        ({"DATABASE_TIMEOUT_SECONDS": "soon"}, "DATABASE_TIMEOUT_SECONDS"),
        ({"DATABASE_TIMEOUT_SECONDS": "nan"}, "DATABASE_TIMEOUT_SECONDS"),
        ({"DATABASE_TIMEOUT_SECONDS": "inf"}, "DATABASE_TIMEOUT_SECONDS"),
        ({"JWT_EXPIRES_SECONDS": "0"}, "JWT_EXPIRES_SECONDS"),
        ({"JWT_EXPIRES_SECONDS": "1.5"}, "JWT_EXPIRES_SECONDS"),
        ({"SESSION_ABSOLUTE_SECONDS": "59"}, "SESSION_ABSOLUTE_SECONDS"),
        ({"SESSION_IDLE_SECONDS": "week"}, "SESSION_IDLE_SECONDS"),
        ({"MAX_CONTENT_LENGTH": "1MB"}, "MAX_CONTENT_LENGTH"),
        ({"MAX_CONTENT_LENGTH": "100"}, "MAX_CONTENT_LENGTH"),
        ({"CORS_ORIGINS": "*"}, "CORS_ORIGINS"),
        ({"CORS_ORIGINS": "app.example.com"}, "CORS_ORIGINS"),
        ({"CORS_ORIGINS": "https://*.example.com"}, "CORS_ORIGINS"),
        ({"AUTH_MAX_FAILURES": "-1"}, "AUTH_MAX_FAILURES"),
        ({"AUTH_FAILURE_WINDOW_SECONDS": "0"}, "AUTH_FAILURE_WINDOW_SECONDS"),
        ({"TRUSTED_PROXY_COUNT": "one"}, "TRUSTED_PROXY_COUNT"),
        ({"TRUSTED_PROXY_COUNT": "1"}, "TRUSTED_PROXIES"),
        ({"TRUSTED_PROXY_COUNT": "1", "TRUSTED_PROXIES": "10.0.0.300/8"}, "TRUSTED_PROXIES"),
        ({"ARGON2_CONCURRENCY": "0"}, "ARGON2_CONCURRENCY"),
        ({"REFRESH_MAX_PER_ADDRESS": "-1"}, "REFRESH_MAX_PER_ADDRESS"),
        ({"ARGON2_WAIT_SECONDS": "-1"}, "ARGON2_WAIT_SECONDS"),
        ({"ARGON2_WAIT_SECONDS": "61"}, "ARGON2_WAIT_SECONDS"),
        ({"ARGON2_WAIT_SECONDS": "soon"}, "ARGON2_WAIT_SECONDS"),
        ({"ARGON2_WAIT_SECONDS": "nan"}, "ARGON2_WAIT_SECONDS"),
        ({"ARGON2_QUEUE_LENGTH": "-1"}, "ARGON2_QUEUE_LENGTH"),
        ({"ARGON2_TIME_COST": "1"}, "ARGON2_TIME_COST"),
        ({"ARGON2_MEMORY_KIB": "19455"}, "ARGON2_MEMORY_KIB"),
        ({"ARGON2_PARALLELISM": "0"}, "ARGON2_PARALLELISM"),
        ({"METRICS_ENABLED": "maybe"}, "METRICS_ENABLED"),
        ({"METRICS_PORT": "0"}, "METRICS_PORT"),
        ({"METRICS_PORT": "65536"}, "METRICS_PORT"),
        ({"METRICS_PORT": "http"}, "METRICS_PORT"),
        ({"LOG_LEVEL": "verbose"}, "LOG_LEVEL"),
        ({"API_DOCS_ENABLED": "maybe"}, "API_DOCS_ENABLED"),
    ],
)
def test_invalid_setting_raises_one_line_naming_the_variable(environ, variable):
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(environ)

    message = str(raised.value)
    assert message.startswith(variable + " ")
    assert "\n" not in message


def test_errors_never_show_the_database_password():
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"DATABASE_URL": DATABASE_URL})

    assert "hunter2" not in str(raised.value)


def test_repr_shows_neither_the_key_nor_the_database_url():
    settings = Settings.from_env({"DATABASE_URL": DATABASE_URL, "SECRET_KEY": KEY})

    assert KEY not in repr(settings)
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings)


def test_create_app_reads_settings_from_a_mapping(tmp_path):
    app = src.create_app(
        {
            "DATA_FILE_PATH": str(tmp_path / "data.json"),
            "SECRET_KEY": KEY,
            "ARGON2_TIME_COST": "2",
            "ARGON2_MEMORY_KIB": "19456",
            "ARGON2_PARALLELISM": "1",
            "MAX_CONTENT_LENGTH": "2048",
        }
    )

    assert app.config["SETTINGS"].data_file_path == str(tmp_path / "data.json")
    assert app.config["MAX_CONTENT_LENGTH"] == 2048


def test_create_app_accepts_settings(tmp_path):
    settings = Settings(
        data_file_path=str(tmp_path / "data.json"), argon2_time_cost=2, argon2_memory_kib=19456
    )

    assert src.create_app(settings).config["SETTINGS"] is settings


def test_create_app_reads_dotenv_in_the_working_directory_below_the_real_environment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # load_dotenv writes to os.environ: give it a copy that the test throws away.
    monkeypatch.setattr(os, "environ", {"JWT_EXPIRES_SECONDS": "120"})
    (tmp_path / ".env").write_text(
        "DATA_FILE_PATH=from-dotenv.json\nJWT_EXPIRES_SECONDS=60\n"
        "ARGON2_TIME_COST=2\nARGON2_MEMORY_KIB=19456\nARGON2_PARALLELISM=1\n"
    )

    settings = src.create_app().config["SETTINGS"]

    assert settings.data_file_path == "from-dotenv.json"
    assert settings.jwt_expires_seconds == 120


def run_python(environment: dict[str, str], code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -c code args`` in a fresh interpreter from the repository root, with this environment."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )


def test_importing_the_package_reads_no_environment_and_creates_no_file(tmp_path):
    environment = {**os.environ, "DATA_FILE_PATH": str(tmp_path / "data.json"), "DATABASE_URL": "mysql://x"}
    result = run_python(environment, "import src, src.config, src.storage")

    assert result.returncode == 0, result.stderr
    assert list(tmp_path.iterdir()) == []


SERVE_AND_LIST_DRIVERS = """
import sys, src
app = src.application
client = app.test_client()
assert client.post("/register", json={"username": "ann", "password": "correct horse"}).status_code == 201
token = client.post("/authenticate", json={"username": "ann", "password": "correct horse"}).get_json()
assert client.get("/hello", headers={"Authorization": "Bearer " + token["access_token"]}).status_code == 200
assert client.get("/metrics").status_code == 200
print("drivers:", ",".join(sorted(name for name in sys.modules if name.startswith("psycopg"))))
"""


def test_a_json_store_process_never_loads_the_postgresql_driver(tmp_path):
    # psycopg and its C library cost each worker about 12 MiB, which the JSON store never uses.
    environment = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    environment.update(FAST_ARGON2, DATA_FILE_PATH=str(tmp_path / "data.json"), SECRET_KEY=TEST_SECRET_KEY)
    result = run_python(environment, SERVE_AND_LIST_DRIVERS)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "drivers:"


def test_a_database_url_loads_the_postgresql_store(tmp_path):
    environment = {**os.environ, "DATABASE_URL": "postgresql://app@127.0.0.1:1/absent"}
    script = (
        "import sys; from types import SimpleNamespace; from src.storage import store_from_settings; "
        "store = store_from_settings(SimpleNamespace(database_url=sys.argv[1], data_file_path='unused', "
        "database_pool_min=1, database_pool_max=2, database_timeout_seconds=1, "
        "database_password_file=None)); "
        "print(type(store).__name__, 'psycopg' in sys.modules)"
    )
    result = run_python(environment, script, environment["DATABASE_URL"])

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "PostgresStore True"


def test_application_with_a_bad_setting_exits_with_one_line_naming_it(tmp_path):
    environment = {
        key: value for key, value in os.environ.items() if key not in {"SECRET_KEY", "DATABASE_URL"}
    }
    environment.update(
        DATABASE_URL="postgresql://127.0.0.1:1/absent", DATA_FILE_PATH=str(tmp_path / "d.json")
    )
    result = run_python(environment, "import src; src.application")

    assert result.returncode == 4
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1
    assert "SECRET_KEY" in lines[0]
    assert "Traceback" not in lines[0]


def test_application_is_built_once_on_first_access(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, value in {
        "DATA_FILE_PATH": str(tmp_path / "data.json"),
        "ARGON2_TIME_COST": "2",
        "ARGON2_MEMORY_KIB": "19456",
        "ARGON2_PARALLELISM": "1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delitem(vars(src), "application", raising=False)

    first = src.application

    assert src.application is first
    assert first.config["SETTINGS"].data_file_path == str(tmp_path / "data.json")


@pytest.mark.parametrize("logging_configured", [True, False])
def test_application_with_a_bad_setting_exits_with_code_4(monkeypatch, capsys, caplog, logging_configured):
    monkeypatch.setenv("DATABASE_URL", "postgresql://127.0.0.1:1/absent")
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.delitem(vars(src), "application", raising=False)
    if not logging_configured:
        monkeypatch.setattr(logging.getLogger(), "handlers", [])

    with pytest.raises(SystemExit) as raised:
        _ = src.application

    assert raised.value.code == 4
    if logging_configured:
        assert "Invalid configuration: SECRET_KEY" in caplog.text
    else:
        assert capsys.readouterr().err.startswith("Invalid configuration: SECRET_KEY")


def test_unknown_module_attribute_raises_attribute_error():
    with pytest.raises(AttributeError):
        _ = src.no_such_attribute
