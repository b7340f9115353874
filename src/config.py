"""Settings read from the environment once, at startup, and validated there.

Every problem stops startup with one line that names the variable (``ConfigError``); nothing is re-read per
request. The variables are documented in ``.env.template``.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from dotenv import load_dotenv

# argon2 parameters below OWASP's minimum (argon2id, m=19 MiB, t=2, p=1) are refused.
ARGON2_MIN_TIME_COST = 2
ARGON2_MIN_MEMORY_KIB = 19456
ARGON2_MIN_PARALLELISM = 1
SECRET_KEY_MIN_BYTES = 32
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
DEFAULT_SERVICE_NAME = "flask-api"
OTLP_PROTOCOL = "http/protobuf"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})

T = TypeVar("T", int, float)


def load_env_file(folder: Path | None = None) -> None:
    """Add ``.env`` from ``folder`` (the working directory) to the environment; the real environment wins.

    The application, gunicorn.conf.py and ``python -m src.migrate`` all call this, so a setting works the
    same from ``.env`` whichever of them reads it.
    """
    path = (folder or Path.cwd()) / ".env"
    if path.is_file():
        load_dotenv(path, override=False)


class ConfigError(ValueError):
    """A setting is missing or invalid; the message is one line that starts with the variable's name."""


@dataclass(frozen=True, slots=True)
class Settings:
    """The service's configuration (see .env.template for each variable)."""

    secret_key: str | None = None
    secret_key_previous: str | None = None
    data_file_path: str = "data.json"
    database_url: str | None = None
    database_password_file: str | None = None
    database_pool_min: int = 1
    database_pool_max: int = 4
    database_timeout_seconds: float = 5.0
    jwt_expires_seconds: int = 3600
    session_absolute_seconds: int = 2_592_000
    session_idle_seconds: int = 604_800
    max_content_length: int = 1_048_576
    cors_origins: tuple[str, ...] = ()
    auth_max_failures: int = 5
    auth_failure_window_seconds: float = 300.0
    auth_max_failures_per_username: int = 10
    auth_max_failures_per_address: int = 50
    register_max_per_address: int = 10
    refresh_max_per_address: int = 120
    argon2_concurrency: int = 1
    argon2_wait_seconds: float = 10.0
    argon2_queue_length: int = 4
    trusted_proxy_count: int = 0
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65536
    argon2_parallelism: int = 4
    metrics_enabled: bool = True
    metrics_port: int | None = None
    log_level: str = "info"
    api_docs_enabled: bool = True
    otel_traces_enabled: bool = False
    otel_exporter_otlp_endpoint: str | None = None
    otel_service_name: str = DEFAULT_SERVICE_NAME

    def __repr__(self) -> str:
        # The key and the database URL (which may hold a password) never reach a log line or a traceback.
        store = "postgresql" if self.database_url else f"json:{self.data_file_path}"
        return f"Settings(store={store!r}, secret_key={'set' if self.secret_key else 'unset'})"

    __str__ = __repr__

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read and validate every variable; raise ConfigError naming the first one that is wrong."""
        env = EnvReader(environ)
        database_url = env.text("DATABASE_URL")
        if database_url is not None and not database_url.startswith(("postgresql://", "postgres://")):
            raise ConfigError("DATABASE_URL must be a postgresql:// URL")
        password_file = env.text("DATABASE_PASSWORD_FILE")
        if password_file is not None:
            _check_password_file(password_file, database_url)
        secret_key = env.text("SECRET_KEY")
        if secret_key is not None and len(secret_key.encode()) < SECRET_KEY_MIN_BYTES:
            raise ConfigError(f"SECRET_KEY must be at least {SECRET_KEY_MIN_BYTES} bytes long")
        if secret_key is None and database_url is not None:
            raise ConfigError(
                f"SECRET_KEY must be set (at least {SECRET_KEY_MIN_BYTES} bytes) when DATABASE_URL is set: "
                "every instance sharing the database must sign tokens with the same key"
            )
        secret_key_previous = env.text("SECRET_KEY_PREVIOUS")
        if secret_key_previous is not None:
            _check_previous_key(secret_key_previous, secret_key)
        pool_min = env.number("DATABASE_POOL_MIN", int, 1, minimum=0)
        pool_max = env.number("DATABASE_POOL_MAX", int, 4, minimum=1)
        if pool_max < pool_min:
            raise ConfigError(f"DATABASE_POOL_MAX must be >= DATABASE_POOL_MIN ({pool_min}), got {pool_max}")
        trusted_proxy_count = env.number("TRUSTED_PROXY_COUNT", int, 0, minimum=0)
        trusted_proxies = _networks(env.text("TRUSTED_PROXIES"))
        if trusted_proxy_count and not trusted_proxies:
            raise ConfigError(
                "TRUSTED_PROXIES must list the proxies' addresses or networks when TRUSTED_PROXY_COUNT is "
                "set: X-Forwarded-For is believed only from them"
            )
        log_level = (env.text("LOG_LEVEL") or "info").lower()
        if log_level not in LOG_LEVELS:
            raise ConfigError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
        otel_traces_enabled = env.flag("OTEL_TRACES_ENABLED", default=False)
        return cls(
            secret_key=secret_key,
            secret_key_previous=secret_key_previous,
            data_file_path=env.text("DATA_FILE_PATH") or "data.json",
            database_url=database_url,
            database_password_file=password_file,
            database_pool_min=pool_min,
            database_pool_max=pool_max,
            database_timeout_seconds=env.number("DATABASE_TIMEOUT_SECONDS", float, 5.0, minimum=0.1),
            jwt_expires_seconds=env.number("JWT_EXPIRES_SECONDS", int, 3600, minimum=1),
            session_absolute_seconds=env.number("SESSION_ABSOLUTE_SECONDS", int, 2_592_000, minimum=60),
            session_idle_seconds=env.number("SESSION_IDLE_SECONDS", int, 604_800, minimum=60),
            max_content_length=env.number("MAX_CONTENT_LENGTH", int, 1_048_576, minimum=1024),
            cors_origins=_origins(env.text("CORS_ORIGINS")),
            auth_max_failures=env.number("AUTH_MAX_FAILURES", int, 5, minimum=0),
            auth_failure_window_seconds=env.number("AUTH_FAILURE_WINDOW_SECONDS", float, 300.0, minimum=1),
            auth_max_failures_per_username=env.number("AUTH_MAX_FAILURES_PER_USERNAME", int, 10, minimum=0),
            auth_max_failures_per_address=env.number("AUTH_MAX_FAILURES_PER_ADDRESS", int, 50, minimum=0),
            register_max_per_address=env.number("REGISTER_MAX_PER_ADDRESS", int, 10, minimum=0),
            refresh_max_per_address=env.number("REFRESH_MAX_PER_ADDRESS", int, 120, minimum=0),
            argon2_concurrency=env.number("ARGON2_CONCURRENCY", int, 1, minimum=1),
            argon2_wait_seconds=_argon2_wait_seconds(env),
            argon2_queue_length=env.number("ARGON2_QUEUE_LENGTH", int, 4, minimum=0),
            trusted_proxy_count=trusted_proxy_count,
            trusted_proxies=trusted_proxies,
            argon2_time_cost=env.number("ARGON2_TIME_COST", int, 3, minimum=ARGON2_MIN_TIME_COST),
            argon2_memory_kib=env.number("ARGON2_MEMORY_KIB", int, 65536, minimum=ARGON2_MIN_MEMORY_KIB),
            argon2_parallelism=env.number("ARGON2_PARALLELISM", int, 4, minimum=ARGON2_MIN_PARALLELISM),
            metrics_enabled=env.flag("METRICS_ENABLED", default=True),
            metrics_port=env.optional_port("METRICS_PORT"),
            log_level=log_level,
            api_docs_enabled=env.flag("API_DOCS_ENABLED", default=True),
            otel_traces_enabled=otel_traces_enabled,
            otel_exporter_otlp_endpoint=_otlp_endpoint(env) if otel_traces_enabled else None,
            otel_service_name=env.text("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME,
        )


class EnvReader:
    """Typed access to the environment; empty values count as unset, a bad value raises ConfigError."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def text(self, name: str) -> str | None:
        value = self.environ.get(name, "").strip()
        return value or None

    def number(self, name: str, kind: Callable[[str], T], default: T, *, minimum: T) -> T:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = kind(raw)
        except ValueError:
            raise ConfigError(f"{name} must be {_article(kind)}, got {raw!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number, got {raw!r}")
        if value < minimum:
            raise ConfigError(f"{name} must be >= {minimum}, got {raw}")
        return value

    def flag(self, name: str, *, default: bool) -> bool:
        raw = self.text(name)
        if raw is None:
            return default
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise ConfigError(f"{name} must be true or false, got {raw!r}")

    def optional_port(self, name: str) -> int | None:
        if self.text(name) is None:
            return None
        port = self.number(name, int, 0, minimum=1)
        if port > 65535:
            raise ConfigError(f"{name} must be a TCP port (1-65535), got {port}")
        return port


def _check_previous_key(previous: str, current: str | None) -> None:
    """SECRET_KEY_PREVIOUS (the key before a rotation, still verified): as long as SECRET_KEY, beside it."""
    if current is None:
        raise ConfigError(
            "SECRET_KEY_PREVIOUS needs SECRET_KEY: the previous key only verifies, the current one signs"
        )
    if len(previous.encode()) < SECRET_KEY_MIN_BYTES:
        raise ConfigError(f"SECRET_KEY_PREVIOUS must be at least {SECRET_KEY_MIN_BYTES} bytes long")
    if previous == current:
        raise ConfigError(
            "SECRET_KEY_PREVIOUS must differ from SECRET_KEY (it is the key before the rotation)"
        )


ARGON2_WAIT_MAX_SECONDS = 60.0


def _argon2_wait_seconds(env: EnvReader) -> float:
    """ARGON2_WAIT_SECONDS: how long a request waits for a hashing slot before 503; 0-60 s."""
    seconds = env.number("ARGON2_WAIT_SECONDS", float, 10.0, minimum=0.0)
    if seconds > ARGON2_WAIT_MAX_SECONDS:
        raise ConfigError(
            f"ARGON2_WAIT_SECONDS must be <= {ARGON2_WAIT_MAX_SECONDS:g} (a client waits that long for an "
            f"answer), got {seconds:g}"
        )
    return seconds


def _check_password_file(path: str, database_url: str | None) -> None:
    """DATABASE_PASSWORD_FILE needs DATABASE_URL and must be readable now (read again per connection)."""
    if database_url is None:
        raise ConfigError("DATABASE_PASSWORD_FILE needs DATABASE_URL (the server, database and user)")
    try:
        with open(path, encoding="utf-8") as stream:
            empty = not stream.read().strip()
    except OSError as exc:
        raise ConfigError(f"DATABASE_PASSWORD_FILE cannot be read: {path}: {exc.strerror}") from None
    if empty:
        raise ConfigError(f"DATABASE_PASSWORD_FILE is empty: {path}")


def _otlp_endpoint(env: EnvReader) -> str | None:
    """OTEL_EXPORTER_OTLP_ENDPOINT: the collector's base URL (spans go to <url>/v1/traces, http/protobuf).

    Read only with OTEL_TRACES_ENABLED: a cluster-wide value meant for other services changes nothing here.
    """
    endpoint = env.text("OTEL_EXPORTER_OTLP_ENDPOINT")
    if endpoint is None:
        return None
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(
            f"OTEL_EXPORTER_OTLP_ENDPOINT must be an http:// or https:// URL like http://collector:4318, "
            f"got {endpoint!r}"
        )
    if parts.username is not None or parts.password is not None:
        # The URL is printed by `flask config check` and may reach a log: credentials do not belong in it.
        raise ConfigError("OTEL_EXPORTER_OTLP_ENDPOINT must not hold credentials (user:password@)")
    protocol = env.text("OTEL_EXPORTER_OTLP_PROTOCOL")
    if protocol is not None and protocol != OTLP_PROTOCOL:
        raise ConfigError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL must be {OTLP_PROTOCOL} (the exporter shipped), got {protocol!r}"
        )
    return endpoint.rstrip("/")


def _article(kind: Callable[[str], object]) -> str:
    return "an integer" if kind is int else "a number"


def _origins(raw: str | None) -> tuple[str, ...]:
    """CORS_ORIGINS: comma-separated exact origins such as https://app.example.com (no wildcard)."""
    if raw is None:
        return ()
    origins = tuple(origin.strip().rstrip("/") for origin in raw.split(",") if origin.strip())
    for origin in origins:
        if not origin.startswith(("http://", "https://")) or "*" in origin:
            raise ConfigError(
                f"CORS_ORIGINS must list exact origins like https://app.example.com, got {origin!r}"
            )
    return origins


def _networks(raw: str | None) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """TRUSTED_PROXIES: comma-separated addresses or networks such as 10.42.0.0/16 or 127.0.0.1."""
    if raw is None:
        return ()
    networks = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(
                f"TRUSTED_PROXIES must list addresses or networks like 10.0.0.0/8, got {item!r}"
            ) from None
    return tuple(networks)
