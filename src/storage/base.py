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


class StoreError(Exception):
    """Base of every storage error."""


class StoreUnavailable(StoreError):  # noqa: N818 - name fixed by the team contract
    """The store cannot be used right now (disk full, read-only folder, corrupt file, database down): 503."""


class UsernameTaken(StoreError):  # noqa: N818 - name fixed by the team contract
    """The username is already registered: 409."""


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
        """Remove a user; its id is never handed out again. Returns whether the user existed."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
