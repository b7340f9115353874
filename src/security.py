"""Password hashing, the JWT signing key, access tokens, security headers and CORS.

Tokens are HS256 JWTs made and checked with PyJWT directly: one ``jwt.decode`` per request (algorithm pinned,
``exp``/``iat``/``sub`` required), then the user and the token's session (``sess``) looked up, so that a
deleted user's or an ended session's token fails at once. Each token names its signing key in its header
(``kid``); tokens are signed with SECRET_KEY and verified with it or with SECRET_KEY_PREVIOUS, so that a key
rotation signs nobody out. A refresh token names its session and generation under an HMAC
(``refresh_token``); the store keeps only each session's current generation.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import functools
import hashlib
import hmac
import ipaddress
import logging
import math
import os
import re
import secrets
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from argon2.low_level import ARGON2_VERSION
from flask import Flask, current_app, request
from flask_cors import CORS
from werkzeug.middleware.proxy_fix import ProxyFix

from .config import SECRET_KEY_MIN_BYTES, ConfigError, Settings
from .errors import Overloaded, Unauthorized
from .storage import Session, User, UserStore

log = logging.getLogger(__name__)

SECRET_KEY_SUFFIX = ".secret_key"  # noqa: S105 - a file name suffix, not a secret
# Ids are positive integers; anything else in ``sub`` names no user.
_USER_ID = re.compile(r"[1-9][0-9]{0,18}")
# Session ids are what new_session_id makes: 22 URL-safe base64 characters.
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{22}")

SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    ("Strict-Transport-Security", "max-age=63072000; includeSubDomains"),
)
# A route that needs a looser Content-Security-Policy (the /docs page) leaves it here, for its response only.
CONTENT_SECURITY_POLICY_ENVIRON = "flask_api.content_security_policy"


# ------------------------------------------------------------------------------------------------ passwords


def _b64(data: bytes) -> str:
    """Base64 without padding, as argon2 encodes salts and digests."""
    return base64.b64encode(data).decode("ascii").rstrip("=")


class HashingSlots:
    """At most ``count`` holders at once; at most ``queue_length`` others wait, in arrival order, each until
    its own deadline; beyond, a request is refused at once.

    A freed slot goes to the longest waiter, never to a request that arrives meanwhile, so that a burst of
    sign-ups is served in order and a client that retries is not overtaken for ever by newer ones. The
    queue is bounded so that waiters never hold every thread of the worker's pool, which also serves
    refreshes, logouts and PostgreSQL reads.
    """

    def __init__(self, count: int, queue_length: int) -> None:
        self._free = count
        self._queue_length = queue_length
        self._waiters: collections.deque[threading.Event] = collections.deque()
        self._lock = threading.Lock()

    def acquire(self, timeout: float) -> bool:
        """Take a slot, waiting at most ``timeout`` seconds behind the earlier waiters; whether it got one."""
        with self._lock:
            if self._free and not self._waiters:
                self._free -= 1
                return True
            if len(self._waiters) >= self._queue_length:
                return False
            granted = threading.Event()
            self._waiters.append(granted)
        if granted.wait(timeout):
            return True
        with self._lock:
            if granted.is_set():  # handed over between the timeout and the lock: it is ours
                return True
            self._waiters.remove(granted)
            return False

    def release(self) -> None:
        """Give the slot to the longest waiter, or free it."""
        with self._lock:
            if self._waiters:
                self._waiters.popleft().set()
            else:
                self._free += 1

    def waiting(self) -> int:
        """How many requests wait for a slot now."""
        with self._lock:
            return len(self._waiters)


class Passwords:
    """argon2id hashing with the configured cost, and verification that costs the same for unknown users.

    At most ``argon2_concurrency`` hashes run at once in a worker process (each costs ARGON2_MEMORY_KIB of
    memory and a core for 50-100 ms). A request finding every slot taken waits its turn, first come first
    served, behind at most ARGON2_QUEUE_LENGTH others and for at most ARGON2_WAIT_SECONDS, else is refused
    (Overloaded, 503 with Retry-After), so that a
    login flood neither exhausts memory nor waits without bound; probes run on the worker's event loop and
    never wait here.
    """

    RETRY_AFTER_SECONDS = 1

    def __init__(self, settings: Settings) -> None:
        self.slots = HashingSlots(settings.argon2_concurrency, settings.argon2_queue_length)
        self.wait_seconds = settings.argon2_wait_seconds
        self.hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
        )
        # Verified against when the user does not exist, so that "unknown user" and "wrong password" take the
        # same time and give the same answer. Verifying recomputes the hash with the parameters written in the
        # string, so random salt and digest bytes cost exactly what a real hash costs to verify, and nobody
        # knows a password that matches them; making a real hash would cost every worker one argon2 run (and
        # 64 MiB) at each boot, and workers are recycled every few thousand requests.
        hasher = self.hasher
        self.dummy_hash = (
            f"$argon2id$v={ARGON2_VERSION}$m={hasher.memory_cost},t={hasher.time_cost},"
            f"p={hasher.parallelism}${_b64(secrets.token_bytes(hasher.salt_len))}"
            f"${_b64(secrets.token_bytes(hasher.hash_len))}"
        )

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of this process's hashing slots; Overloaded (503) when none comes within the wait."""
        if not self.slots.acquire(self.wait_seconds):
            raise Overloaded(
                "Too many passwords are being checked right now; retry shortly.", self.RETRY_AFTER_SECONDS
            )
        try:
            yield
        finally:
            self.slots.release()

    def hash(self, password: str) -> str:
        """The argon2id hash of ``password`` (salted, self-describing)."""
        return self.hasher.hash(password)

    def needs_rehash(self, password_hash: str) -> bool:
        """Whether ``password_hash`` was made with other parameters than the configured ones."""
        try:
            return self.hasher.check_needs_rehash(password_hash)
        except (InvalidHashError, ValueError):
            return False

    def verify(self, user: User | None, password: str) -> bool:
        """Whether ``password`` is the user's; always spends one argon2 verification."""
        stored_hash = user.password_hash if user is not None else self.dummy_hash
        try:
            return self.hasher.verify(stored_hash, password) and user is not None
        except (VerificationError, InvalidHashError):
            return False


# ------------------------------------------------------------------------------------------------ JWT key


def secret_key_path(data_file_path: str) -> str:
    """Where the generated key is kept: beside the data file, ``<data file>.secret_key``."""
    return os.path.abspath(data_file_path) + SECRET_KEY_SUFFIX


def _read_secret_key(path: str) -> str:
    with open(path, encoding="utf-8") as file:
        key = file.read().strip()
    if len(key.encode()) < SECRET_KEY_MIN_BYTES:
        raise ConfigError(
            f"SECRET_KEY file {path} is shorter than {SECRET_KEY_MIN_BYTES} bytes: "
            "delete it, or set SECRET_KEY yourself"
        )
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        log.warning("SECRET_KEY file %s is readable by others (mode %o): chmod 600 it", path, mode)
    return key


def load_or_create_secret_key(data_file_path: str) -> str:
    """The key persisted beside the data file, generated on first start.

    Several workers start at once: each writes a complete candidate to a temp file (mode 0600) and tries to
    ``os.link`` it to the final name. Linking fails when the name exists, so exactly one candidate wins and
    every worker then reads that one; no worker can see a half-written key.
    """
    path = secret_key_path(data_file_path)
    try:
        return _read_secret_key(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ConfigError(f"SECRET_KEY is unset and {path} cannot be read: {exc.strerror}") from exc
    folder = os.path.dirname(path)
    temp_path = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, temp_path = tempfile.mkstemp(dir=folder, prefix=os.path.basename(path) + ".new-")  # mode 0600
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(secrets.token_urlsafe(48) + "\n")
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temp_path, path)
            created = True
        except FileExistsError:
            created = False
        folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(folder_fd)  # the new name survives a power cut
        finally:
            os.close(folder_fd)
        key = _read_secret_key(path)
    except OSError as exc:
        raise ConfigError(
            f"SECRET_KEY is unset and a generated key cannot be stored in {path}: {exc.strerror}"
        ) from exc
    finally:
        if temp_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(temp_path)
    if created:
        log.warning(
            "SECRET_KEY is not set: generated a signing key in %s (mode 0600); keep it with the data file, "
            "or set SECRET_KEY",
            path,
        )
    return key


def signing_key(settings: Settings) -> str:
    """SECRET_KEY when set, else the key persisted beside the JSON data file."""
    if settings.secret_key:
        return settings.secret_key
    if settings.database_url:  # Settings.from_env refuses this; a Settings built by hand may not
        raise ConfigError("SECRET_KEY must be set when DATABASE_URL is set")
    return load_or_create_secret_key(settings.data_file_path)


# ------------------------------------------------------------------------------------------------ tokens


def key_id(key: str) -> str:
    """The ``kid`` of the tokens ``key`` signs: 16 characters of an HMAC under the key, which name it without
    telling anything about it that the tokens' own signatures do not."""
    digest = hmac.new(key.encode(), b"flask-api signing key id", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:12]).decode("ascii")


class AccessTokens:
    """HS256 access tokens whose ``sub`` is the user's id as a string, and the check of a bearer header."""

    ALGORITHM = "HS256"
    # Tolerated clock difference between the replica that issued a token and the one checking it.
    LEEWAY_SECONDS = 5
    TYPE = "access"
    # Tokens whose signature and claims this process has verified. A client sends the same token on every
    # request until it expires, and PyJWT's checks (the alphabet scan, three JSON parses, the HMAC) are most
    # of a token check. Only verified tokens get in, so a flood of forged ones cannot grow it; the oldest
    # leaves when it is full. The time window and the session are checked on every request all the same.
    VERIFIED_TOKENS = 4096

    def __init__(
        self, key: str, lifetime_seconds: int, store: UserStore, previous_key: str | None = None
    ) -> None:
        self.key = key
        self.kid = key_id(key)
        # The keys tokens are verified with, by kid: the current one, and the one before a rotation.
        self.keys = {self.kid: key}
        if previous_key is not None:
            self.keys[key_id(previous_key)] = previous_key
        self.lifetime_seconds = lifetime_seconds
        self.store = store
        # token -> (user id, session id, store id, valid from, valid until), bounds with the leeway applied
        self._verified: dict[str, tuple[int, str, object, float, float]] = {}
        self._verified_lock = threading.Lock()

    def issue(self, user: User, session_id: str) -> str:
        """A signed token for ``user`` in the session ``session_id``, valid for the configured lifetime, bound
        to the store it came from.

        No ``jti``: the session id names what a token belongs to, and every character costs on each request
        (PyJWT checks the alphabet of a token one character at a time).
        """
        now = int(time.time())
        claims = {
            "sub": str(user.id),
            "sid": self.store.store_id(),
            "sess": session_id,
            "iat": now,
            "nbf": now,
            "exp": now + self.lifetime_seconds,
            "type": self.TYPE,
        }
        return jwt.encode(claims, self.key, algorithm=self.ALGORITHM, headers={"kid": self.kid})

    def check(self, authorization: str | None) -> tuple[User, str]:
        """(user, session id) of a valid ``Authorization: Bearer <token>`` header; Unauthorized otherwise.

        The session must be live: the store answers from this process's state, kept exact (the JSON store's
        change detection; PostgreSQL's cache, which every revocation waits on), so a logout elsewhere is seen
        here without a round trip per request.
        """
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token or " " in token:
            raise Unauthorized("A bearer token is required: Authorization: Bearer <token>.")
        user_id, session_id, store_id = self._verify(token)
        user, live, current_store_id = self.store.find_session_user(user_id, session_id)
        # The store's id as of the lookup: a store created afresh hands the same ids out again, and must not
        # take an older store's token for one of its own users.
        if user is None or store_id != current_store_id:
            raise Unauthorized("The user of this token no longer exists.")
        if not live:
            raise Unauthorized("The session of this token has ended.")
        return user, session_id

    def _verify(self, token: str) -> tuple[int, str, object]:
        """(user id, session id, store id) of a token whose signature and claims are valid now."""
        now = time.time()
        known = self._verified.get(token)
        if known is not None:
            if now >= known[4]:
                raise Unauthorized("The bearer token has expired.")
            if now >= known[3]:
                return known[0], known[1], known[2]
            raise Unauthorized("The bearer token is invalid.")  # not valid yet: PyJWT says the same
        claims = self._decode(token)
        subject = claims["sub"]  # PyJWT has checked that it is a string
        session_id = claims.get("sess")
        if (
            claims.get("type") != self.TYPE
            or not _USER_ID.fullmatch(subject)
            or type(session_id) is not str
            or not _SESSION_ID.fullmatch(session_id)
        ):
            raise Unauthorized("The bearer token is invalid.")
        # PyJWT has checked that exp and iat are numbers, and nbf when present.
        valid_from = max(claims["iat"], claims.get("nbf", claims["iat"])) - self.LEEWAY_SECONDS
        verified = (
            int(subject),
            session_id,
            claims.get("sid"),
            valid_from,
            claims["exp"] + self.LEEWAY_SECONDS,
        )
        with self._verified_lock:
            if len(self._verified) >= self.VERIFIED_TOKENS:
                del self._verified[next(iter(self._verified))]
            self._verified[token] = verified
        return verified[0], verified[1], verified[2]

    def _decode(self, token: str) -> dict[str, Any]:
        """The claims of ``token`` once its signature, by the key its ``kid`` names, and its times are valid.

        Tried with the current key first, then the previous one: one parse for the tokens of the current key
        (reading the header first would cost a second one), and the ``kid`` checked against the key whose
        signature held, so that a token with no kid or another key's kid is refused whatever signed it.
        """
        for kid, key in self.keys.items():
            try:
                decoded = jwt.decode_complete(
                    token,
                    key,
                    algorithms=[self.ALGORITHM],
                    options={"require": ["exp", "iat", "sub"]},
                    leeway=self.LEEWAY_SECONDS,
                )
            except jwt.InvalidSignatureError:
                continue  # not this key: try the previous one
            except jwt.ExpiredSignatureError:
                raise Unauthorized("The bearer token has expired.") from None
            except jwt.InvalidTokenError:
                raise Unauthorized("The bearer token is invalid.") from None
            if decoded["header"].get("kid") != kid:
                break
            return decoded["payload"]
        # Signed by no key of this service (a removed one after a rotation, or a forgery), or a kid that is
        # not its signer's.
        raise Unauthorized("The bearer token is invalid.")

    def user_from(self, authorization: str | None) -> User:
        """The user named by a valid ``Authorization: Bearer <token>`` header; Unauthorized otherwise."""
        return self.check(authorization)[0]


def new_session_id() -> str:
    """A random session id (128 bits), carried by every access token of the session."""
    return secrets.token_urlsafe(16)


# A refresh token: ``<session id>.<generation>.<MAC>``, the MAC an HMAC-SHA256 of the session id and the
# generation under the signing key, so the store keeps no token (only each session's current generation) and
# still tells a spent token from a forged one.
REFRESH_TOKEN = re.compile(r"([A-Za-z0-9_-]{22})\.([1-9][0-9]{0,17})\.([A-Za-z0-9_-]{43})")


def _refresh_mac(key: str, session_id: str, generation: int) -> str:
    message = f"refresh-token\0{session_id}\0{generation}".encode()
    return base64.urlsafe_b64encode(hmac.digest(key.encode(), message, "sha256")).decode("ascii").rstrip("=")


def refresh_token(key: str, session_id: str, generation: int) -> str:
    """The refresh token of generation ``generation`` of the session."""
    return f"{session_id}.{generation}.{_refresh_mac(key, session_id, generation)}"


def read_refresh_token(key: str, token: str) -> tuple[str, int] | None:
    """(session id, generation) of a refresh token made with ``key``; None for anything else (a token of
    the earlier random format included)."""
    match = REFRESH_TOKEN.fullmatch(token)
    if match is None:
        return None
    session_id, generation = match.group(1), int(match.group(2))
    if not hmac.compare_digest(match.group(3), _refresh_mac(key, session_id, generation)):
        return None
    return session_id, generation


def token_response(user: User, session: Session, now: float) -> tuple[dict[str, Any], int, dict[str, str]]:
    """The answer of /authenticate and /token/refresh: an access token of the session, its current refresh
    token."""
    settings: Settings = current_app.config["SETTINGS"]
    access_tokens = current_app.extensions["access_tokens"]
    body = {
        "access_token": access_tokens.issue(user, session.id),
        "token_type": "Bearer",
        "expires_in": settings.jwt_expires_seconds,
        "refresh_token": refresh_token(access_tokens.key, session.id, session.generation),
        "refresh_expires_in": max(0, math.floor(session.expires_at - now)),
    }
    return body, 200, {"Cache-Control": "no-store", "Pragma": "no-cache"}


def start_session(user: User) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Start a session for ``user`` (just verified) and answer with its tokens; 401 when the user's password
    changed or the user was deleted since it was read."""
    settings: Settings = current_app.config["SETTINGS"]
    now = time.time()
    session = Session(
        new_session_id(),
        user.id,
        now,
        now + min(settings.session_absolute_seconds, settings.session_idle_seconds),
    )
    # An ended-by-expiry session is kept while access tokens issued before its expiry may still be used.
    prune_before = now - settings.jwt_expires_seconds
    if not current_app.extensions["user_store"].create_session(user, session, prune_before):
        raise Unauthorized("Invalid username or password.")
    return token_response(user, session, now)


def token_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """Route decorator: 401 unless the request carries a valid bearer token; the view gets its user."""

    @functools.wraps(view)
    def checked(*args: Any, **kwargs: Any) -> Any:
        user = current_app.extensions["access_tokens"].user_from(request.headers.get("Authorization"))
        return view(user, *args, **kwargs)

    return checked


# ------------------------------------------------------------------------------------------------ wiring


class SecurityHeaders:
    """WSGI middleware: the security headers, and ``Cache-Control: no-store`` unless the route chose one.

    Appended to the plain header list at ``start_response``: cheaper on every request than an
    ``after_request`` hook going through werkzeug's Headers, and it covers every response, errors included.
    """

    def __init__(self, wsgi_app: Any) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        def start_response_with_headers(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            # Tokens and per-user answers must never sit in a shared cache.
            if not any(name.lower() == "cache-control" for name, _ in headers):
                headers.append(("Cache-Control", "no-store"))
            policy = environ.get(CONTENT_SECURITY_POLICY_ENVIRON)
            if policy is None:
                headers.extend(SECURITY_HEADERS)
            else:
                headers.extend(
                    (name, policy if name == "Content-Security-Policy" else value)
                    for name, value in SECURITY_HEADERS
                )
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, start_response_with_headers)


class TrustedProxies:
    """WSGI middleware: X-Forwarded-For and -Proto are believed only from a peer in ``TRUSTED_PROXIES``.

    Anyone else reaching the port directly (another pod, a client bypassing the proxy) keeps its own
    address, so it cannot pick a fresh one per request to escape the login and registration limits.
    """

    def __init__(
        self, wsgi_app: Any, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...], count: int
    ) -> None:
        self.wsgi_app = wsgi_app
        self.forwarded = ProxyFix(wsgi_app, x_for=count, x_proto=count)
        self.networks = networks

    @functools.lru_cache(maxsize=1024)  # noqa: B019 - one instance per application, addresses repeat
    def trusted(self, address: str) -> bool:
        """Whether ``address`` belongs to a configured proxy."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if self.trusted(environ.get("REMOTE_ADDR") or ""):
            return self.forwarded(environ, start_response)
        return self.wsgi_app(environ, start_response)


def init_app(app: Flask, settings: Settings, store: UserStore) -> None:
    """Password hashing, JWT, security headers, and CORS for the configured origins only."""
    app.extensions["passwords"] = Passwords(settings)
    app.extensions["access_tokens"] = AccessTokens(
        signing_key(settings), settings.jwt_expires_seconds, store, settings.secret_key_previous
    )
    app.wsgi_app = SecurityHeaders(app.wsgi_app)  # type: ignore[method-assign]
    if settings.cors_origins:
        CORS(
            app,
            origins=list(settings.cors_origins),
            methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["Retry-After", "WWW-Authenticate", "X-Request-ID"],
            supports_credentials=False,
            max_age=600,
        )
