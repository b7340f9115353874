"""Sessions of a JsonFileStore, in ``<data file>.sessions`` under their own lock.

The file holds every live session (id, user id, start, refresh expiry) and the SHA-256 hashes of their refresh
tokens, each marked current or spent. It follows the user file's rules: every change holds the exclusive
``flock`` on ``<data file>.sessions.lock``, reads the file afresh, and replaces it atomically and durably
(a logout lost on a power cut would bring a session back). Each process keeps the parsed file and re-reads it
only when ``os.stat`` of the file differs, so the check made on every authenticated request costs one
``stat`` and a dictionary lookup, and sees a logout made by any other process as soon as its write returns.

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

FORMAT_VERSION = 1
# A sessions file larger than this (about 2,000 live sessions) is parsed on a worker's thread pool only.
LOOP_PARSE_LIMIT = 256 * 1024


@dataclass(frozen=True, slots=True)
class _Sessions:
    signature: Signature | None
    by_id: dict[str, Session]
    # refresh token hash -> (session id, spent)
    tokens: dict[str, tuple[str, bool]]


_EMPTY = _Sessions(None, {}, {})


def _encode(sessions: dict[str, Session], tokens: dict[str, tuple[str, bool]]) -> bytes:
    doc = {
        "version": FORMAT_VERSION,
        "sessions": [[s.id, s.user_id, s.created_at, s.expires_at] for s in sessions.values()],
        "refresh_tokens": {digest: [sid, int(spent)] for digest, (sid, spent) in tokens.items()},
    }
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


def _parse(raw: bytes, signature: Signature) -> _Sessions:
    """The sessions of ``raw``; ValueError, TypeError or KeyError when it is not a sessions file."""
    doc = json.loads(raw)
    if doc["version"] != FORMAT_VERSION:
        raise ValueError(f"unsupported format version {doc['version']!r}")
    by_id: dict[str, Session] = {}
    for sid, user_id, created_at, expires_at in doc["sessions"]:
        if type(sid) is not str or type(user_id) is not int:
            raise TypeError("a session lacks its id or user id")
        by_id[sid] = Session(sid, user_id, float(created_at), float(expires_at))
    tokens = {str(digest): (str(sid), bool(spent)) for digest, (sid, spent) in doc["refresh_tokens"].items()}
    return _Sessions(signature, by_id, tokens)


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

    def _change(self, change: Callable[[dict[str, Session], dict[str, tuple[str, bool]]], bool]) -> None:
        """Under the lock, apply ``change`` to copies of the current sessions and tokens; write them when it
        returns True."""
        with self.store._locked(self.lock_path):
            self.store._sweep_temp_files(self.path)
            state = self._current()
            sessions, tokens = dict(state.by_id), dict(state.tokens)
            if change(sessions, tokens):
                signature = self.store._replace(self.path, _encode(sessions, tokens), durable=True)
                self._state = _Sessions(signature, sessions, tokens)

    @staticmethod
    def _drop(sessions: dict[str, Session], tokens: dict[str, tuple[str, bool]], ended: set[str]) -> bool:
        """Remove the sessions ``ended`` and their token hashes; whether anything was removed."""
        if not ended:
            return False
        for sid in ended:
            sessions.pop(sid, None)
        for digest in [digest for digest, (sid, _) in tokens.items() if sid in ended]:
            del tokens[digest]
        return True

    def create(self, user: User, session: Session, refresh_hash: str, prune_before: float) -> bool:
        """Store a new session unless the user is gone or its password changed; prune expired ones."""
        created = False

        def add(sessions: dict[str, Session], tokens: dict[str, tuple[str, bool]]) -> bool:
            nonlocal created
            current = self.store.find_by_id(user.id)  # the user file as it is now (one stat)
            if current is None or current.password_hash != user.password_hash:
                return False
            self._drop(sessions, tokens, {s.id for s in sessions.values() if s.expires_at < prune_before})
            sessions[session.id] = session
            tokens[refresh_hash] = (session.id, False)
            created = True
            return True

        self._change(add)
        return created

    def rotate(self, presented_hash: str, new_hash: str, now: float, absolute: float, idle: float) -> Session:
        """Spend ``presented_hash`` and make ``new_hash`` current (see UserStore.rotate_refresh_token)."""
        outcome: Session | RefreshRefused = RefreshRefused("unknown")

        def rotate(sessions: dict[str, Session], tokens: dict[str, tuple[str, bool]]) -> bool:
            nonlocal outcome
            entry = tokens.get(presented_hash)
            session = sessions.get(entry[0]) if entry is not None else None
            if entry is None or session is None:
                return False
            if entry[1]:
                outcome = RefreshRefused("reused")
                return self._drop(sessions, tokens, {session.id})
            if session.expires_at <= now:
                outcome = RefreshRefused("expired")
                return False
            renewed = Session(
                session.id,
                session.user_id,
                session.created_at,
                min(session.created_at + absolute, now + idle),
            )
            sessions[session.id] = renewed
            tokens[presented_hash] = (session.id, True)
            tokens[new_hash] = (session.id, False)
            outcome = renewed
            return True

        self._change(rotate)
        if isinstance(outcome, RefreshRefused):
            raise outcome
        return outcome

    def end(self, session_id: str) -> bool:
        """End one session; whether it was live."""
        ended = False

        def end(sessions: dict[str, Session], tokens: dict[str, tuple[str, bool]]) -> bool:
            nonlocal ended
            ended = self._drop(sessions, tokens, {session_id} & sessions.keys())
            return ended

        self._change(end)
        return ended

    def end_all_of(self, user_id: int) -> None:
        """End every session of the user."""
        self._change(
            lambda sessions, tokens: self._drop(
                sessions, tokens, {s.id for s in sessions.values() if s.user_id == user_id}
            )
        )
