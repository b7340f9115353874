"""Sessions of a JsonFileStore, in ``<data file>.sessions`` under their own lock.

The file holds every live session: id, user id, start, refresh expiry, and the generation of its current
refresh token. A spent token is recognised from its generation (older than the current one), so nothing is
kept per refresh: the file grows with the live sessions, never with their refreshes. It follows the user
file's rules: every change holds the exclusive ``flock`` on ``<data file>.sessions.lock``, reads the file
afresh, and replaces it atomically and durably (a logout lost on a power cut would bring a session back).
Each process keeps the parsed file and re-reads it only when ``os.stat`` of the file differs, so the check
made on every authenticated request costs one ``stat`` and a dictionary lookup, and sees a logout made by any
other process as soon as its write returns. A file larger than ``LOOP_PARSE_LIMIT`` is parsed on a worker's
thread pool, never on its event loop.

A file of format 1 (which kept the hash of every refresh token) is read as sessions with no valid refresh
token (generation 0): their access tokens work until they expire, then their users sign in again.

Lock order: the user file's lock, then this one (a password change ends the sessions while holding both);
a login takes only this one and checks the user file's current password hash while holding it, so a login
that raced a password change either sees the new hash (and starts nothing) or is ended by the change.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..lifecycle import must_not_wait
from .base import RefreshRefused, Session, User

if TYPE_CHECKING:
    from .json_file import JsonFileStore, Signature

FORMAT_VERSION = 2
# A sessions file larger than this (about 2,500 live sessions) is parsed on a worker's thread pool only.
LOOP_PARSE_LIMIT = 256 * 1024


@dataclass(frozen=True, slots=True)
class _Sessions:
    signature: Signature | None
    by_id: dict[str, Session]


_EMPTY = _Sessions(None, {})


def _encode(sessions: dict[str, Session]) -> bytes:
    doc = {
        "version": FORMAT_VERSION,
        "sessions": [[s.id, s.user_id, s.created_at, s.expires_at, s.generation] for s in sessions.values()],
    }
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


def _parse(raw: bytes, signature: Signature) -> _Sessions:
    """The sessions of ``raw``; ValueError, TypeError or KeyError when it is not a sessions file."""
    doc = json.loads(raw)
    version = doc["version"]
    if version not in (1, FORMAT_VERSION):
        raise ValueError(f"unsupported format version {version!r}")
    by_id: dict[str, Session] = {}
    for entry in doc["sessions"]:
        if version == FORMAT_VERSION:
            sid, user_id, created_at, expires_at, generation = entry
        else:  # format 1 kept refresh token hashes, which no token of today's format matches: generation 0
            sid, user_id, created_at, expires_at = entry
            generation = 0
        if type(sid) is not str or type(user_id) is not int or type(generation) is not int:
            raise TypeError("a session lacks its id, user id or generation")
        by_id[sid] = Session(sid, user_id, float(created_at), float(expires_at), generation)
    return _Sessions(signature, by_id)


class JsonSessions:
    """The sessions of ``store`` (see the module docstring); JsonFileStore delegates its session calls."""

    def __init__(self, store: JsonFileStore) -> None:
        self.store = store
        self.path = store.path + ".sessions"
        self.lock_path = self.path + ".lock"
        self._state = _EMPTY
        from .json_file import _signature  # noqa: PLC0415 - json_file imports this module

        self._signature = _signature

    # ------------------------------------------------------------------ reading

    def _current(self) -> _Sessions:
        """The sessions as the file holds them now: one stat, a parse only when the file changed."""
        state = self._state
        try:
            signature = self._signature(os.stat(self.path))
        except FileNotFoundError:
            if state.signature is not None:
                state = self._state = _EMPTY
            return state
        except OSError as exc:
            raise self.store._unavailable(f"cannot read {self.path}: {exc.strerror}") from exc
        if signature == state.signature:
            return state
        if signature[2] > LOOP_PARSE_LIMIT:
            must_not_wait()  # a long parse: on the worker's thread pool, never on its event loop
        try:
            with open(self.path, "rb") as file:
                signature = self._signature(os.fstat(file.fileno()))
                raw = file.read()
        except FileNotFoundError:
            state = self._state = _EMPTY
            return state
        except OSError as exc:
            raise self.store._unavailable(f"cannot read {self.path}: {exc.strerror}") from exc
        try:
            state = _parse(raw, signature)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            # Never overwrite it: an operator repairs or removes it (removing it ends every session).
            raise self.store._unavailable(f"sessions file {self.path} is unreadable: {exc}") from exc
        self._state = state
        return state

    def session_user(self, session_id: str) -> int | None:
        """The user id of the live session ``session_id``, or None."""
        session = self._current().by_id.get(session_id)
        return session.user_id if session is not None else None

    # ------------------------------------------------------------------ writing

    def _change(self, change: Callable[[dict[str, Session]], bool]) -> None:
        """Under the lock, apply ``change`` to a copy of the current sessions; write them when it returns
        True."""
        with self.store._locked(self.lock_path):
            self.store._sweep_temp_files(self.path)
            sessions = dict(self._current().by_id)
            if change(sessions):
                signature = self.store._replace(self.path, _encode(sessions), durable=True)
                self._state = _Sessions(signature, sessions)

    @staticmethod
    def _drop(sessions: dict[str, Session], ended: set[str]) -> bool:
        """Remove the sessions ``ended``; whether anything was removed."""
        for sid in ended:
            del sessions[sid]
        return bool(ended)

    def create(self, user: User, session: Session, prune_before: float) -> bool:
        """Store a new session unless the user is gone or its password changed; prune expired ones."""
        created = False

        def add(sessions: dict[str, Session]) -> bool:
            nonlocal created
            current = self.store.find_by_id(user.id)  # the user file as it is now (one stat)
            if current is None or current.password_hash != user.password_hash:
                return False
            if user.id in self.store.disabled.ids():  # read under this lock: see json_disabled.py
                return False
            self._drop(sessions, {s.id for s in sessions.values() if s.expires_at < prune_before})
            sessions[session.id] = session
            created = True
            return True

        self._change(add)
        return created

    def rotate(self, session_id: str, generation: int, now: float, absolute: float, idle: float) -> Session:
        """Spend the token of ``generation`` (see UserStore.rotate_refresh_token)."""
        outcome: Session | RefreshRefused = RefreshRefused("unknown")

        def rotate(sessions: dict[str, Session]) -> bool:
            nonlocal outcome
            session = sessions.get(session_id)
            if session is None or generation > session.generation:
                return False
            if generation < session.generation:
                outcome = RefreshRefused("reused")
                return self._drop(sessions, {session.id})
            if session.expires_at <= now:
                outcome = RefreshRefused("expired")
                return False
            renewed = Session(
                session.id,
                session.user_id,
                session.created_at,
                min(session.created_at + absolute, now + idle),
                session.generation + 1,
            )
            sessions[session.id] = renewed
            outcome = renewed
            return True

        self._change(rotate)
        if isinstance(outcome, RefreshRefused):
            raise outcome
        return outcome

    def end(self, session_id: str) -> bool:
        """End one session; whether it was live."""
        ended = False

        def end(sessions: dict[str, Session]) -> bool:
            nonlocal ended
            ended = self._drop(sessions, {session_id} & sessions.keys())
            return ended

        self._change(end)
        return ended

    def end_all_of(self, user_id: int) -> int:
        """End every session of the user; how many there were."""
        ended: set[str] = set()

        def end(sessions: dict[str, Session]) -> bool:
            ended.update(s.id for s in sessions.values() if s.user_id == user_id)
            return self._drop(sessions, ended)

        self._change(end)
        return len(ended)
