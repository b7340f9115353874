"""The storage interface the routes use, its errors, and the user record."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Self


@dataclass(frozen=True, slots=True)
class User:
    """A registered user: a positive id assigned once, the exact username, the password hash."""

    id: int
    username: str
    password_hash: str


@dataclass(frozen=True, slots=True)
class Session:
    """One login: its random id (carried by its access tokens), its user, when it began, when its refresh
    token stops working (the sooner of the absolute and the idle limit), and the generation of its current
    refresh token (1 at login, one more at each refresh)."""

    id: str
    user_id: int
    created_at: float
    expires_at: float
    generation: int = 1


class StoreError(Exception):
    """Base of every storage error."""


class StoreUnavailable(StoreError):  # noqa: N818 - name fixed by the team contract
    """The store cannot be used right now (disk full, read-only folder, corrupt file, database down): 503."""


class UsernameTaken(StoreError):  # noqa: N818 - name fixed by the team contract
    """The username is already registered: 409."""


class RefreshRefused(StoreError):  # noqa: N818 - reads as what happened, like UsernameTaken
    """A refresh token was not accepted: ``reason`` is "unknown", "expired" or "reused" (401)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Failures of each key inside the window: (how many, timestamp of the oldest or None).
Counts = list[tuple[int, float | None]]


class UserStore(ABC):
    """Users and login failures, shared by every worker process of the service."""

    @abstractmethod
    def create_user(self, username: str, password_hash: str) -> User:
        """Store a new user under a fresh id; raise UsernameTaken when the name exists."""

    @abstractmethod
    def find_by_username(self, username: str) -> User | None:
        """The user with exactly this (case-sensitive) name, or None."""

    @abstractmethod
    def find_by_id(self, user_id: int) -> User | None:
        """The user with this id, or None."""

    @abstractmethod
    def create_users_bulk(self, rows: Iterable[tuple[str, str]]) -> int:
        """Store many (username, password_hash) rows at once, all or none; return how many were stored."""

    @abstractmethod
    def check_ready(self) -> None:
        """Return when the store is usable, else raise StoreUnavailable with the reason."""

    @abstractmethod
    def store_id(self) -> str | None:
        """The random id this store was created with (None before the first write of a JSON file).

        Tokens carry it, so that a store created afresh (a deleted or replaced data file, a new database)
        never accepts the tokens of an older one whose user ids it hands out again.
        """

    @abstractmethod
    def reserve_attempt(
        self, keys: Sequence[str], now: float, window: float, allow: Callable[[Counts], bool]
    ) -> tuple[bool, Counts]:
        """Count the failures of each key inside (now - window, now] and, in the same atomic step, record
        one at ``now`` for every key when ``allow(counts)`` says so. Returns (recorded, counts).

        Concurrent callers (threads, workers, pods) are serialised per key, so that N concurrent guesses
        against a limit L make at most L attempts: the attempt is counted before the password is checked.
        Entries older than ``window`` may be dropped.
        """

    @abstractmethod
    def release_attempt(self, keys: Sequence[str], at: float) -> None:
        """Take back one attempt recorded at ``at`` for each key (the login succeeded)."""

    def record_login_failure(self, key: str, now: float, window: float) -> None:
        """Remember a failed login of ``key`` at ``now``; entries older than ``window`` may be dropped."""
        self.reserve_attempt([key], now, window, lambda _counts: True)

    @abstractmethod
    def login_failures(self, key: str, now: float, window: float) -> tuple[int, float | None]:
        """Failures of ``key`` inside (now - window, now], and the timestamp of the oldest of them or None."""

    @abstractmethod
    def clear_login_failures(self, key: str) -> None:
        """Forget the failures of ``key`` (after a successful login)."""

    @abstractmethod
    def close(self) -> None:
        """Release files, connections and pools."""

    def delete_user(self, user_id: int) -> bool:
        """Remove a user and its sessions; its id is never handed out again. Returns whether it existed."""
        raise NotImplementedError

    # ------------------------------------------------------------------ operator commands (src/cli.py)

    def list_users(self) -> list[tuple[User, bool]]:
        """Every user with whether it is disabled, in id order."""
        raise NotImplementedError

    def set_disabled(self, user_id: int, disabled: bool) -> bool:
        """Disable or enable a user; whether it exists.

        Disabling ends every session of the user in the same step, and ``create_session`` refuses a
        disabled user under the same lock, so no login that races it can leave a session behind.
        """
        raise NotImplementedError

    def end_sessions_of(self, user_id: int) -> int:
        """End every session of the user; how many were live."""
        raise NotImplementedError

    # ------------------------------------------------------------------ sessions
    # A session is one login. Its refresh tokens are numbered: the store keeps only the generation of the
    # current one (the tokens themselves are authenticated by their MAC, src/security.py), so a token of an
    # earlier generation is recognised as spent without being stored, and presenting one ends the session.
    # Ending a session deletes it; every access token of it is refused from then on because ``session_user``
    # no longer finds it.

    @abstractmethod
    def create_session(self, user: User, session: Session, prune_before: float) -> bool:
        """Start ``session`` for ``user``; its current refresh token is of generation ``session.generation``.

        False (and nothing stored) when the user no longer exists, is disabled, or its password hash is no
        longer ``user.password_hash``. Sessions whose ``expires_at`` is before ``prune_before`` may be
        dropped.
        """

    @abstractmethod
    def rotate_refresh_token(
        self, session_id: str, generation: int, now: float, absolute: float, idle: float
    ) -> Session:
        """Spend the refresh token of generation ``generation`` of the session: the next one is current.

        Atomic: of concurrent calls with one token, exactly one succeeds. Returns the session with its new
        ``expires_at`` (the sooner of created_at + absolute and now + idle) and generation; raises
        RefreshRefused("unknown") (no such session, or a generation never issued), RefreshRefused("expired")
        or, after ending the session, RefreshRefused("reused") for an earlier generation (a spent token).
        """

    @abstractmethod
    def session_user(self, session_id: str) -> int | None:
        """The user id of the live session ``session_id``, or None; answered from this process's state
        (kept exact by change detection), checked on every authenticated request."""

    def find_session_user(self, user_id: int, session_id: str) -> tuple[User | None, bool, str | None]:
        """(the user with this id or None, whether ``session_id`` is a live session of that user, the store's
        id after that lookup): the check of every authenticated request."""
        user = self.find_by_id(user_id)
        live = user is not None and self.session_user(session_id) == user_id
        return user, live, self.store_id()

    @abstractmethod
    def end_session(self, session_id: str) -> bool:
        """End one session; returns whether it was live."""

    @abstractmethod
    def change_password(self, user_id: int, old_hash: str, new_hash: str, *, end_sessions: bool) -> bool:
        """Replace the user's password hash if it is still ``old_hash``, ending every session of the user
        in the same step when ``end_sessions``; returns whether the hash was replaced."""

    @abstractmethod
    def forget_login_failures(self, keys: Sequence[str], suffix: str) -> None:
        """Forget the failures counted under ``keys`` and under every key ending with ``suffix`` (a deleted
        user's records, whatever address they came from)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
