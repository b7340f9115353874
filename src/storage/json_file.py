"""Users kept in one JSON file, shared safely by several worker processes.

Safety rules, in the order a write follows them:

* Every read-modify-write holds an exclusive ``flock`` on ``<data file>.lock``. The lock file is opened
  afresh for each write, so a descriptor inherited across ``fork`` (gunicorn) is never shared between
  workers, and two threads of one process exclude each other as well.
* The new content goes to a temp file in the same folder, is flushed and fsynced, then ``os.replace``-d over
  the data file, and the folder is fsynced so the rename itself survives a power cut. Readers never take
  the lock: they open either the old or the new file, never a half-written one. A crash at any instant
  therefore leaves the previous or the next complete file, and a registration is acknowledged only after the
  folder fsync.
* Each process keeps an index by username and by id, reloaded only when ``os.stat`` of the data file differs
  (device, inode, size, mtime): one ``stat`` per lookup, no parse per request. A registration appends one
  user to the file's users array, so a writer splices the new entry into the previous bytes, and a reader
  that sees a file grown that way parses only the appended users, not the whole file. A password change
  splices the user's new entry in place of the old one, and a reader finds the changed entries by comparing
  the new bytes with the ones it holds (``_parse_replaced``). Any other change is parsed in full, never on a
  worker's event loop (``WouldWait``, src/lifecycle.py).

Sessions live in ``<data file>.sessions`` (json_sessions.py), disabled users in ``<data file>.disabled``
(json_disabled.py).

Login failures live in ``<data file>.failures`` under their own lock (``<data file>.failures.lock``), so a
burst of wrong passwords never rewrites the user file nor waits for it. They are not fsynced: losing the last
failures on a power cut is harmless, and an unreadable failures file counts as empty.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import secrets
import tempfile
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from itertools import pairwise, starmap

from ..lifecycle import must_not_wait
from .base import Counts, Session, StoreUnavailable, User, UsernameTaken, UserStore
from .json_disabled import JsonDisabledUsers
from .json_sessions import JsonSessions

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
# Bounds of the failures file: a spray of wrong passwords over many names must not grow it without limit.
MAX_FAILURE_KEYS = 10_000
MAX_FAILURES_PER_KEY = 100

_REASONS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}

Signature = tuple[int, int, int, int]
_Columns = tuple[list[int], list[str], list[str]]  # ids, usernames, password hashes, in file order


def _describe(exc: OSError) -> str:
    return _REASONS.get(exc.errno or 0) or exc.strerror or str(exc)


def _signature(st: os.stat_result) -> Signature:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _new_store_id() -> str:
    return secrets.token_hex(16)


# The layout this module writes: header, users separated by commas, trailer. A registration only changes the
# header's next_id and appends one user, which lets writers splice and readers parse only what was appended.
_HEADER = re.compile(rb'\{"version":1,"store_id":"([0-9a-f]{32})","next_id":([1-9][0-9]*),"users":\[')
_TRAILER = b"]}"
# Between two users of the layout this module writes. A '"' inside a JSON string is always escaped, so this
# can only be the end of one user object and the start of the next.
_BETWEEN_USERS = re.compile(rb'\},\{"id":')


def _users_span(raw: bytes) -> tuple[bytes, int, int, int] | None:
    """(store_id, next_id, start, end) of the users array when ``raw`` has the layout this module writes."""
    match = _HEADER.match(raw)
    if match is None or not raw.endswith(_TRAILER):
        return None
    return match.group(1), int(match.group(2)), match.end(), len(raw) - len(_TRAILER)


def _encode_user(user: User) -> bytes:
    entry = {"id": user.id, "username": user.username, "password_hash": user.password_hash}
    return json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _encode_users(users: Iterable[User], next_id: int, store_id: str) -> bytes:
    doc = {
        "version": FORMAT_VERSION,
        "store_id": store_id,
        "next_id": next_id,
        "users": [{"id": u.id, "username": u.username, "password_hash": u.password_hash} for u in users],
    }
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# Users decoded from the bytes, kept per version of the file: the ones that sign in often are decoded once.
_DECODED_USERS = 4096
_decode = json.JSONDecoder().decode


def _user_of(entry: dict) -> User:
    return User(entry["id"], entry["username"], entry["password_hash"])


# The store id in the header of the bytes of a state that has none yet (no file, or a file from before store
# ids): never written, every write puts a real one in its place.
_NO_STORE_ID = "0" * 32

# Appending more users than this (or an eighth of the index) rebuilds the index instead of inserting.
_MAX_INSERTS = 64


class _Users:
    """One version of the user file and a compact index over it; never changed once published.

    The index holds no Python object per user: ``raw`` is the file content in the layout this module writes,
    ``starts`` the offset of each user's JSON object in it (file order), and two sorted arrays lead to a row:
    ids, and hashes of the usernames. A lookup bisects, then decodes that one object from ``raw``; a username
    is compared in full, so two names with the same hash never answer for each other. About 30 bytes per user
    on top of the file's own bytes, instead of several hundred for dicts of ``User`` objects.
    """

    __slots__ = (
        "_decoded",
        "_end",
        "_id_rows",
        "_ids",
        "_name_hashes",
        "_name_rows",
        "_start",
        "next_id",
        "raw",
        "signature",
        "starts",
        "store_id",
    )

    def __init__(
        self,
        *,
        signature: Signature | None,
        raw: bytes,
        next_id: int,
        starts: array,
        ids: array,
        id_rows: array | None,
        name_hashes: array,
        name_rows: array,
        store_id: str | None,
    ) -> None:
        self.signature = signature
        self.raw = raw
        self.next_id = next_id
        self.store_id = store_id  # None: no file yet, or a file written before store ids existed
        span = _users_span(raw)
        if span is None:  # pragma: no cover - every raw here comes from _encode_users or a splice of it
            raise AssertionError("index over bytes not in the layout this module writes")
        self._start, self._end = span[2], span[3]
        self.starts = starts
        self._ids = ids
        self._id_rows = id_rows  # None: rows are in id order, row i holds _ids[i]
        self._name_hashes = name_hashes
        self._name_rows = name_rows
        self._decoded: dict[int, User] = {}

    @classmethod
    def build(
        cls, users: list[User], next_id: int, store_id: str | None, signature: Signature | None = None
    ) -> _Users:
        """The index of ``users`` (file order); see ``from_columns``."""
        columns = ([u.id for u in users], [u.username for u in users], [u.password_hash for u in users])
        return cls.from_columns(columns, next_id, store_id, signature)

    @classmethod
    def from_columns(
        cls,
        columns: _Columns,
        next_id: int,
        store_id: str | None,
        signature: Signature | None = None,
        raw: bytes | None = None,
    ) -> _Users:
        """The index of the users given as (ids, usernames, hashes) in file order, over ``raw``.

        ``raw``, the file they were read from, is kept when it is in the layout this module writes with one
        boundary between each two users (the caller has checked that every user object has exactly its three
        keys, so none nests another); otherwise, or without ``raw``, the users are encoded afresh.
        """
        ids, names, _ = columns
        starts = cls._starts(raw, columns) if raw is not None and ids else None
        if starts is None:
            raw = _encode_users(starmap(User, zip(*columns, strict=True)), next_id, store_id or _NO_STORE_ID)
            starts = cls._starts(raw, columns)
            if starts is None:  # pragma: no cover - guaranteed by the encoding
                raise AssertionError("user boundaries do not match the users")
        if all(a < b for a, b in pairwise(ids)):
            id_keys, id_rows = array("q", ids), None
        else:
            order = sorted(range(len(ids)), key=ids.__getitem__)
            id_keys, id_rows = array("q", [ids[i] for i in order]), array("I", order)
        hashes = list(map(hash, names))
        order = sorted(range(len(hashes)), key=hashes.__getitem__)
        name_hashes, name_rows = array("q", [hashes[i] for i in order]), array("I", order)
        return cls(
            signature=signature,
            raw=raw,  # type: ignore[arg-type] # encoded above when it was None
            next_id=next_id,
            starts=starts,
            ids=id_keys,
            id_rows=id_rows,
            name_hashes=name_hashes,
            name_rows=name_rows,
            store_id=store_id,
        )

    @staticmethod
    def _starts(raw: bytes, columns: _Columns) -> array | None:
        """Offsets of the users' objects in ``raw``, from its users array; None if they do not fit."""
        span = _users_span(raw)
        if span is None:
            return None
        _, _, start, end = span
        count = len(columns[0])
        starts = array("q", [0] if count else [])
        starts.extend(m.start() + 2 - start for m in _BETWEEN_USERS.finditer(raw, start, end))
        if len(starts) != count:
            return None
        if count:  # the first and last objects bound the array: they must be exactly the first and last users
            try:
                first = _decode(raw[start : start + starts[1] - 1 if len(starts) > 1 else end].decode())
                last = _decode(raw[start + starts[-1] : end].decode())
            except ValueError:
                return None
            ids, names, hashes = columns
            if _user_of(first) != User(ids[0], names[0], hashes[0]) or _user_of(last) != User(
                ids[-1], names[-1], hashes[-1]
            ):
                return None
        return starts

    def __len__(self) -> int:
        return len(self.starts)

    def _user_at(self, row: int) -> User:
        user = self._decoded.get(row)
        if user is None:
            begin = self._start + self.starts[row]
            end = self._start + self.starts[row + 1] - 1 if row + 1 < len(self.starts) else self._end
            user = _user_of(_decode(self.raw[begin:end].decode()))
            if len(self._decoded) >= _DECODED_USERS:
                self._decoded.clear()
            self._decoded[row] = user
        return user

    def find_by_username(self, username: str) -> User | None:
        hashes = self._name_hashes
        key = hash(username)
        position = bisect_left(hashes, key)
        while position < len(hashes) and hashes[position] == key:
            user = self._user_at(self._name_rows[position])
            if user.username == username:
                return user
            position += 1
        return None

    def find_by_id(self, user_id: int) -> User | None:
        ids = self._ids
        position = bisect_left(ids, user_id)
        if position == len(ids) or ids[position] != user_id:
            return None
        return self._user_at(position if self._id_rows is None else self._id_rows[position])

    def has_id(self, user_id: int) -> bool:
        position = bisect_left(self._ids, user_id)
        return position < len(self._ids) and self._ids[position] == user_id

    def users(self) -> list[User]:
        """Every user, in file order."""
        entries = json.loads(self.raw[self._start - 1 : self._end + 1])
        return [User(e["id"], e["username"], e["password_hash"]) for e in entries]

    def appended(self, added: list[User], next_id: int, store_id: str) -> _Users:
        """A new version with these users appended: ``raw`` spliced, the index extended, not rebuilt."""
        if len(added) > max(_MAX_INSERTS, len(self) // 8):
            return _Users.build(self.users() + added, next_id, store_id)  # one sort beats many inserts
        pieces = [_encode_user(user) for user in added]
        old_length = self._end - self._start
        raw = b"".join(
            (
                b'{"version":%d,"store_id":"%s","next_id":%d,"users":['
                % (FORMAT_VERSION, store_id.encode(), next_id),
                memoryview(self.raw)[self._start : self._end],
                b"," if old_length and pieces else b"",
                b",".join(pieces),
                _TRAILER,
            )
        )
        starts, ids = array("q", self.starts), array("q", self._ids)
        id_rows = None if self._id_rows is None else array("I", self._id_rows)
        name_hashes, name_rows = array("q", self._name_hashes), array("I", self._name_rows)
        offset = old_length + 1 if old_length else 0
        for user, piece in zip(added, pieces, strict=True):
            row = len(starts)
            starts.append(offset)
            offset += len(piece) + 1
            if id_rows is None and (not ids or user.id > ids[-1]):
                ids.append(user.id)
            else:
                if id_rows is None:
                    id_rows = array("I", range(len(ids)))
                position = bisect_left(ids, user.id)
                ids.insert(position, user.id)
                id_rows.insert(position, row)
            key = hash(user.username)
            position = bisect_right(name_hashes, key)
            name_hashes.insert(position, key)
            name_rows.insert(position, row)
        return _Users(
            signature=None,
            raw=raw,
            next_id=next_id,
            starts=starts,
            ids=ids,
            id_rows=id_rows,
            name_hashes=name_hashes,
            name_rows=name_rows,
            store_id=store_id,
        )

    def replaced(self, row: int, user: User) -> _Users:
        """A new version with ``user`` in place of row ``row`` (same id and name): ``raw`` spliced, the index
        shared (the offsets of the rows after it shifted when the new entry is longer or shorter)."""
        piece = _encode_user(user)
        begin, end = self.row_span(row)
        raw = b"".join((memoryview(self.raw)[:begin], piece, memoryview(self.raw)[end:]))
        return self._with_rows(raw, row, [user], [self.starts[row]])

    def _with_rows(self, raw: bytes, first: int, users: list[User], starts: Sequence[int]) -> _Users:
        """This index over ``raw``, where rows ``first`` onwards hold ``users`` at ``starts`` (offsets in the
        users array) and every later row moved by as many bytes as they grew."""
        last = first + len(users)
        shifted = self.starts[:first]
        shifted.extend(starts)
        if last < len(self.starts):
            delta = len(raw) - len(self.raw)  # the header and the rows before ``first`` are unchanged
            shifted.extend(map(delta.__add__, self.starts[last:]) if delta else self.starts[last:])
        state = _Users(
            signature=None,
            raw=raw,
            next_id=self.next_id,
            starts=shifted,
            ids=self._ids,
            id_rows=self._id_rows,
            name_hashes=self._name_hashes,
            name_rows=self._name_rows,
            store_id=self.store_id,
        )
        state._decoded.update(zip(range(first, last), users, strict=True))
        return state

    def row_of(self, user_id: int) -> int | None:
        """The row of the user with this id, or None."""
        ids = self._ids
        position = bisect_left(ids, user_id)
        if position == len(ids) or ids[position] != user_id:
            return None
        return position if self._id_rows is None else self._id_rows[position]

    def row_span(self, row: int) -> tuple[int, int]:
        """Where the object of row ``row`` lies in ``raw``: (begin, end)."""
        begin = self._start + self.starts[row]
        end = self._start + self.starts[row + 1] - 1 if row + 1 < len(self.starts) else self._end
        return begin, end


def _empty_users(signature: Signature | None = None) -> _Users:
    return _Users.build([], 1, None, signature)


def _check_entries(entries: object, next_id: int, previous: _Users | None = None) -> _Columns:
    """(ids, usernames, hashes) of decoded ``entries``, none already in ``previous``; ValueError or TypeError
    if invalid."""
    if not isinstance(entries, list):
        raise TypeError('not a user file (expected an object with a "users" list)')
    # Fast path, a few C-speed passes over 100,000 users; any doubt and the loop below names the culprit.
    try:
        columns = (
            [e["id"] for e in entries],
            [e["username"] for e in entries],
            [e["password_hash"] for e in entries],
        )
        ids, names = set(columns[0]), set(columns[1])
        valid = (
            len(ids) == len(names) == len(entries)
            and set(map(type, columns[0])) <= {int}
            and set(map(type, columns[1])) <= {str}
            and set(map(type, columns[2])) <= {str}
            and (not ids or (min(ids) >= 1 and max(ids) < next_id))
            # Probe the index with the new keys (few when appending); never iterate the index itself.
            and not (previous and any(previous.has_id(user_id) for user_id in ids))
            and not (previous and any(previous.find_by_username(name) for name in names))
        )
    except (KeyError, TypeError):
        valid = False
    if valid:
        return columns
    names, ids = set(), set()
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise TypeError(f"user #{position} is not an object")
        user_id, username, password_hash = entry.get("id"), entry.get("username"), entry.get("password_hash")
        if type(user_id) is not int or user_id < 1 or user_id >= next_id:
            raise ValueError(f"user #{position} has an invalid id {user_id!r}")
        if not isinstance(username, str) or not isinstance(password_hash, str):
            raise TypeError(f"user #{position} lacks a username or password hash")
        taken = previous is not None and (previous.has_id(user_id) or previous.find_by_username(username))
        if taken or username in names or user_id in ids:
            raise ValueError(f"user #{position} repeats username or id {user_id}")
        names.add(username)
        ids.add(user_id)
    raise AssertionError("unreachable: the fast path rejected valid users")  # pragma: no cover


def _parse_users(raw: bytes, signature: Signature) -> _Users:
    """Build the index from the file content; raise ValueError or TypeError naming what is wrong."""
    if not raw.strip():
        # This module never writes an empty file (even no user is a JSON object): an empty file is a truncated
        # one, and reading it as "no user yet" would hand out ids that old tokens still name.
        raise ValueError("the file is empty (truncated?)")
    try:
        doc = json.loads(raw)
    except UnicodeDecodeError as exc:
        raise ValueError("not UTF-8 text") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from exc
    if not isinstance(doc, dict):
        raise TypeError('not a user file (expected an object with a "users" list)')
    if doc.get("version") != FORMAT_VERSION:
        raise ValueError(f"unsupported format version {doc.get('version')!r}")
    next_id = doc.get("next_id")
    if type(next_id) is not int or next_id < 1:
        raise ValueError('"next_id" is not a positive integer')
    store_id = doc.get("store_id")
    if store_id is not None and not (isinstance(store_id, str) and re.fullmatch("[0-9a-f]{32}", store_id)):
        raise ValueError('"store_id" is not 32 hexadecimal digits')
    entries = doc.get("users")
    columns = _check_entries(entries, next_id)
    # Objects with exactly the three keys nest nothing, so the file's own bytes can be indexed as they are.
    exact = all(len(entry) == 3 for entry in entries)  # type: ignore[union-attr] # a list: checked above
    del doc, entries  # the decoded tree is garbage before the index is built: its memory is reused, not kept
    return _Users.from_columns(columns, next_id, store_id, signature, raw if exact else None)


def _parse_appended(previous: _Users, raw: bytes, signature: Signature) -> _Users | None:
    """When ``raw`` is ``previous.raw`` plus appended users, index only those; None when it is not."""
    old, new = _users_span(previous.raw), _users_span(raw)
    if old is None or new is None or not previous or previous.store_id is None or new[0] != old[0]:
        return None  # another layout, or another store
    _, next_id, start, end = new
    old_length = old[3] - old[2]
    if next_id < previous.next_id or end - start < old_length:
        return None
    if not raw.startswith(memoryview(previous.raw)[old[2] : old[3]], start):  # a memcmp, and no copy
        return None
    tail = raw[start + old_length : end]
    if old_length and tail:
        tail = tail[1:] if tail.startswith(b",") else b"not appended"  # fails to decode below
    try:
        columns = _check_entries(json.loads(b"[" + tail + b"]"), next_id, previous)
        users = list(starmap(User, zip(*columns, strict=True)))
    except (ValueError, TypeError):
        return None  # the full parse names what is wrong
    state = previous.appended(users, next_id, previous.store_id)
    if state.raw != raw:  # appended in another layout (by hand): the full parse indexes it
        return None
    state.signature = signature
    return state


# Bytes compared at once when looking for what changed between two versions of the file.
_COMPARED = 1 << 16


def _common_prefix(old: bytes, new: bytes) -> int:
    """How many leading bytes ``old`` and ``new`` share: memcmp by blocks, then halving inside one."""
    view, length = memoryview(old), min(len(old), len(new))
    low = 0
    while low < length:
        high = min(low + _COMPARED, length)
        if not new.startswith(view[low:high], low):
            break
        low = high
    else:
        return length
    while high - low > 1:  # old[:low] == new[:low], old[:high] != new[:high]
        middle = (low + high) // 2
        if new.startswith(view[low:middle], low):
            low = middle
        else:
            high = middle
    return low


def _common_suffix(old: bytes, new: bytes, limit: int) -> int:
    """How many trailing bytes (at most ``limit``) ``old`` and ``new`` share."""
    view, old_end, new_end = memoryview(old), len(old), len(new)
    low = 0
    while low < limit:
        high = min(low + _COMPARED, limit)
        if not new.endswith(view[old_end - high : old_end - low], 0, new_end - low):
            break
        low = high
    else:
        return limit
    while high - low > 1:  # the last low bytes match, the last high do not
        middle = (low + high) // 2
        if new.endswith(view[old_end - middle : old_end - low], 0, new_end - low):
            low = middle
        else:
            high = middle
    return low


# At most this many users changed since a worker last read the file are indexed one by one.
_MAX_REPLACED = 64


def _changed_rows(previous: _Users, raw: bytes) -> tuple[int, int] | None:
    """(first row, last row + 1) of the rows whose objects hold every byte in which ``raw`` differs from
    ``previous.raw``; None when the header or the trailer changed. A memcmp of the two versions, no parse."""
    old = previous.raw
    prefix = _common_prefix(old, raw)
    suffix = _common_suffix(old, raw, min(len(old), len(raw)) - prefix)
    changed_end = len(old) - suffix  # the first byte of the common tail, in the old version
    if prefix < previous._start or changed_end > previous._end:
        return None
    first = bisect_right(previous.starts, prefix - previous._start) - 1
    last = bisect_left(previous.starts, changed_end - previous._start)
    return first, last


def _replaced_users(
    previous: _Users, raw: bytes, first: int, last: int
) -> tuple[list[User], list[int]] | None:
    """The users of rows ``first`` to ``last - 1`` in ``raw`` and their offsets, when they are the same users
    as in ``previous`` (ids and names), in the layout this module writes; None otherwise."""
    begin = previous.row_span(first)[0]
    end = previous.row_span(last - 1)[1] + len(raw) - len(previous.raw)
    boundaries = [m.start() + 2 for m in _BETWEEN_USERS.finditer(raw, begin, end)]
    if len(boundaries) != last - first - 1:
        return None
    starts = [begin, *boundaries]
    users = []
    for row, (start, stop) in enumerate(zip(starts, [b - 1 for b in boundaries] + [end], strict=True), first):
        piece = raw[start:stop]
        try:
            user = _user_of(_decode(piece.decode()))
        except (ValueError, TypeError, KeyError):  # UnicodeDecodeError is a ValueError
            return None
        before = previous._user_at(row)
        if (
            type(user.password_hash) is not str
            or (user.id, user.username) != (before.id, before.username)
            or _encode_user(user) != piece
        ):
            return None
        users.append(user)
    return users, [start - previous._start for start in starts]


def _parse_replaced(previous: _Users, raw: bytes, signature: Signature) -> _Users | None:
    """When ``raw`` is ``previous.raw`` with a few users' entries replaced (password changes, rehashes),
    index only those entries; None when it is not (the full parse decides).

    What changed is found by comparing the two versions, so every worker sees another's password change for
    the cost of reading the file and one memcmp, whatever the number of users.
    """
    if not previous or previous.store_id is None:
        return None
    if raw == previous.raw:  # rewritten as it was
        previous.signature = signature
        return previous
    rows = _changed_rows(previous, raw)
    replaced = (
        None if rows is None or rows[1] - rows[0] > _MAX_REPLACED else _replaced_users(previous, raw, *rows)
    )
    if rows is None or replaced is None:
        return None
    state = previous._with_rows(raw, rows[0], *replaced)
    state.signature = signature
    return state


def _parse_failures(raw: bytes) -> dict[str, list[float]]:
    doc = json.loads(raw)
    failures = doc["failures"]
    if not isinstance(failures, dict):
        raise TypeError("failures is not an object")
    return {str(key): [float(t) for t in stamps] for key, stamps in failures.items()}


class JsonFileStore(UserStore):
    """Users in the JSON file ``path`` (created with its folder on first write); see the module docstring."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        configured = os.path.abspath(os.fspath(path))
        # Resolved once: writes replace the file by rename, which would replace a symlink by a regular file
        # and leave its target behind. From here on the store works on the target itself.
        self.path = os.path.realpath(configured)
        if self.path != configured:
            log.info("data file %s is a symbolic link to %s: using %s", configured, self.path, self.path)
        self.folder = os.path.dirname(self.path)
        self.lock_path = self.path + ".lock"
        self.failures_path = self.path + ".failures"
        self.failures_lock_path = self.failures_path + ".lock"
        self._users_state = _empty_users()
        self._bad_file: tuple[Signature, str] | None = None
        self._failures_state: tuple[Signature | None, dict[str, list[float]]] = (None, {})
        self._swept_temp_files: set[str] = set()
        self.sessions = JsonSessions(self)
        self.disabled = JsonDisabledUsers(self)
        # Build the index now rather than on the first request; built in the gunicorn master, it is shared
        # with every forked worker. A file that cannot be read is reported again on every call.
        with suppress(StoreUnavailable):
            self._users()

    def __repr__(self) -> str:
        return f"JsonFileStore({self.path!r})"

    # ------------------------------------------------------------------ reading

    def _users(self) -> _Users:
        """The current index: one stat, and a parse only when the file changed."""
        state = self._users_state
        try:
            signature = _signature(os.stat(self.path))
        except FileNotFoundError:
            if state.signature is not None:
                state = self._users_state = _empty_users()
            return state
        except OSError as exc:
            raise self._unavailable(f"cannot read data file {self.path}: {_describe(exc)}") from exc
        if signature == state.signature:
            return state
        if self._bad_file is not None and self._bad_file[0] == signature:
            raise StoreUnavailable(self._bad_file[1])
        return self._load_users()

    def _load_users(self) -> _Users:
        try:
            with open(self.path, "rb") as file:
                # fstat of the open file describes exactly the content read, even if a writer replaces it now.
                signature = _signature(os.fstat(file.fileno()))
                raw = file.read()
        except FileNotFoundError:
            state = self._users_state = _empty_users()
            return state
        except OSError as exc:
            raise self._unavailable(f"cannot read data file {self.path}: {_describe(exc)}") from exc
        # The common change is a registration by another worker: index only the users it appended.
        changed = _parse_appended(self._users_state, raw, signature) or _parse_replaced(
            self._users_state, raw, signature
        )
        if changed is not None:
            self._users_state = changed
            return changed
        # Anything else is parsed in full: never on a worker's event loop (the request goes to its pool).
        must_not_wait()
        try:
            state = _parse_users(raw, signature)
        except (ValueError, TypeError) as exc:
            # Never overwrite a file we cannot read: every write stops until an operator repairs it.
            reason = f"data file {self.path} is unreadable: {exc}"
            self._bad_file = (signature, reason)
            log.error("%s", reason)  # noqa: TRY400 - one line, the reason says it all
            raise StoreUnavailable(reason) from exc
        self._users_state = state
        return state

    def find_by_username(self, username: str) -> User | None:
        """The user with exactly this name, or None."""
        return self._users().find_by_username(username)

    def find_by_id(self, user_id: int) -> User | None:
        """The user with this id, or None."""
        return self._users().find_by_id(user_id)

    def find_session_user(self, user_id: int, session_id: str) -> tuple[User | None, bool, str | None]:
        """The check of every authenticated request from one look at each file (a stat each): the user and
        the store's id from the same version of the data file."""
        state = self._users()
        user = state.find_by_id(user_id)
        live = user is not None and self.session_user(session_id) == user_id
        if state.store_id is None and state.signature is not None:
            return user, live, self.store_id()  # a file from before store ids: gets one now, as store_id says
        return user, live, state.store_id

    # ------------------------------------------------------------------ writing

    def _unavailable(self, reason: str) -> StoreUnavailable:
        log.error("%s", reason)
        return StoreUnavailable(reason)

    @contextmanager
    def _locked(self, lock_path: str) -> Iterator[None]:
        """Hold the exclusive inter-process lock ``lock_path`` (created with the folder when missing)."""
        try:
            os.makedirs(self.folder, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise self._unavailable(f"cannot open lock file {lock_path}: {_describe(exc)}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def _sweep_temp_files(self, target: str) -> None:
        """Remove temp files of ``target`` left by a killed writer; call only while holding its lock."""
        # Temp files of ``target`` are only written under its lock, so any found while holding that lock were
        # left by a process killed mid-write. Swept once per process to keep writes cheap.
        if target in self._swept_temp_files:
            return
        self._swept_temp_files.add(target)
        prefix = os.path.basename(target) + ".tmp-"
        with suppress(OSError), os.scandir(self.folder) as entries:
            for entry in entries:
                if entry.name.startswith(prefix):
                    with suppress(OSError):
                        os.unlink(entry.path)

    def _replace(self, target: str, data: bytes, durable: bool) -> Signature:
        """Atomically replace ``target`` with ``data``; return the signature of the new file."""
        temp_path = None
        try:
            fd, temp_path = tempfile.mkstemp(dir=self.folder, prefix=os.path.basename(target) + ".tmp-")
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                if durable:
                    os.fsync(file.fileno())
                signature = _signature(os.fstat(file.fileno()))
            os.replace(temp_path, target)
            temp_path = None
            if durable:
                self._fsync_folder()
        except OSError as exc:
            raise self._unavailable(f"cannot write {target}: {_describe(exc)}") from exc
        finally:
            if temp_path is not None:
                with suppress(OSError):
                    os.unlink(temp_path)
        return signature

    def _fsync_folder(self) -> None:
        # Without this the rename may be lost on a power cut even though the file content was synced.
        fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        except OSError as exc:  # pragma: no cover - file systems that cannot sync a folder
            if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
                raise
        finally:
            os.close(fd)

    def _write_users(
        self, state: _Users, added: list[User], removed: int | None = None, replaced: User | None = None
    ) -> None:
        """Write ``state`` plus ``added`` minus ``removed``, with ``replaced`` instead of the user of its id,
        then update the index in place."""
        next_id = added[-1].id + 1 if added else state.next_id
        store_id = state.store_id or _new_store_id()
        row = None if replaced is None or added or removed is not None else state.row_of(replaced.id)
        if removed is None and replaced is None:
            new_state = state.appended(added, next_id, store_id)
        elif row is not None and replaced is not None and state.store_id is not None:
            new_state = state.replaced(row, replaced)
        else:
            users = [
                replaced if replaced is not None and u.id == replaced.id else u
                for u in state.users()
                if u.id != removed
            ]
            new_state = _Users.build(users + added, next_id, store_id)
        new_state.signature = self._replace(self.path, new_state.raw, durable=True)
        # Only now, with the file on disk, is the new index published.
        self._users_state = new_state

    def create_user(self, username: str, password_hash: str) -> User:
        """Store a new user under the next id; raise UsernameTaken when the name exists."""
        with self._locked(self.lock_path):
            self._sweep_temp_files(self.path)
            state = self._users()
            if state.find_by_username(username) is not None:
                raise UsernameTaken(username)
            user = User(state.next_id, username, password_hash)
            self._write_users(state, [user])
        return user

    def create_users_bulk(self, rows: Iterable[tuple[str, str]]) -> int:
        """Store many users in one replace of the file, all or none."""
        rows = list(rows)
        if not rows:
            return 0
        with self._locked(self.lock_path):
            self._sweep_temp_files(self.path)
            state = self._users()
            added: list[User] = []
            names: set[str] = set()
            for offset, (username, password_hash) in enumerate(rows):
                if username in names or state.find_by_username(username) is not None:
                    raise UsernameTaken(username)
                names.add(username)
                added.append(User(state.next_id + offset, username, password_hash))
            self._write_users(state, added)
        return len(added)

    def delete_user(self, user_id: int) -> bool:
        """Remove a user and its sessions; ``next_id`` stays, so the id is never handed out again."""
        with self._locked(self.lock_path):
            state = self._users()
            if not state.has_id(user_id):
                return False
            self._write_users(state, [], removed=user_id)
            self.sessions.end_all_of(user_id)
        return True

    def store_id(self) -> str | None:
        """The id written in the data file; a file from before store ids gets one on this first call."""
        state = self._users()
        if state.store_id is not None or state.signature is None:
            return state.store_id
        must_not_wait()  # a write, under the lock: never on a worker's event loop
        with self._locked(self.lock_path):
            state = self._users()
            if state.store_id is None and state.signature is not None:
                self._write_users(state, [])  # a full rewrite: the file has no store id to splice in
        return self._users_state.store_id

    def change_password(self, user_id: int, old_hash: str, new_hash: str, *, end_sessions: bool) -> bool:
        """Replace the hash if it is still ``old_hash``; then, still under the user file's lock, end every
        session of the user when ``end_sessions``."""
        with self._locked(self.lock_path):
            state = self._users()
            user = state.find_by_id(user_id)
            if user is None or user.password_hash != old_hash:
                return False
            self._write_users(state, [], replaced=User(user.id, user.username, new_hash))
            if end_sessions:
                self.sessions.end_all_of(user_id)
        return True

    # ------------------------------------------------------------------ operator commands

    def list_users(self) -> list[tuple[User, bool]]:
        """Every user with whether it is disabled, in id order."""
        disabled = self.disabled.ids()
        users = sorted(self._users().users(), key=lambda user: user.id)
        return [(user, user.id in disabled) for user in users]

    def set_disabled(self, user_id: int, disabled: bool) -> bool:
        """Under the user file's lock: write the disabled list, then end the user's sessions if disabled."""
        with self._locked(self.lock_path):
            if not self._users().has_id(user_id):
                return False
            self._sweep_temp_files(self.disabled.path)
            ids = self.disabled.ids()
            changed = ids | {user_id} if disabled else ids - {user_id}
            if changed != ids:
                self.disabled.write(changed)
            if disabled:
                self.sessions.end_all_of(user_id)
        return True

    def end_sessions_of(self, user_id: int) -> int:
        """End every session of the user; how many there were."""
        return self.sessions.end_all_of(user_id)

    # ------------------------------------------------------------------ sessions (json_sessions.py)

    def create_session(self, user: User, session: Session, prune_before: float) -> bool:
        """Start a session unless the user is gone or its password changed since ``user`` was read."""
        return self.sessions.create(user, session, prune_before)

    def rotate_refresh_token(
        self, session_id: str, generation: int, now: float, absolute: float, idle: float
    ) -> Session:
        """Spend the session's refresh token of ``generation``; RefreshRefused when it cannot be."""
        return self.sessions.rotate(session_id, generation, now, absolute, idle)

    def session_user(self, session_id: str) -> int | None:
        """The user id of a live session, from the sessions file as it is now (one stat per call)."""
        return self.sessions.session_user(session_id)

    def end_session(self, session_id: str) -> bool:
        """End one session; whether it was live."""
        return self.sessions.end(session_id)

    # ------------------------------------------------------------------ readiness

    def check_ready(self) -> None:
        """Raise StoreUnavailable unless the data file (or, before the first write, its folder) is usable."""
        self._users()  # an unreadable or corrupt file is not ready
        folder = self.folder
        while not os.path.isdir(folder):
            parent = os.path.dirname(folder)
            if parent == folder:  # pragma: no cover - the root always exists
                break
            folder = parent
        if not os.access(folder, os.W_OK | os.X_OK):
            raise StoreUnavailable(f"folder {folder} is not writable")
        if os.path.exists(self.path) and not os.access(self.path, os.R_OK | os.W_OK):
            raise StoreUnavailable(f"data file {self.path} is not readable and writable")
        try:
            space = os.statvfs(folder)
        except OSError as exc:  # pragma: no cover - statvfs of an existing folder
            raise StoreUnavailable(f"cannot inspect {folder}: {_describe(exc)}") from exc
        if space.f_bavail == 0:
            raise StoreUnavailable(f"no space left on the device holding {folder}")

    # ------------------------------------------------------------------ login failures

    def _failures(self) -> dict[str, list[float]]:
        """Current failures by key, parsed only when the file changed; unreadable counts as empty."""
        cached_signature, cached = self._failures_state
        try:
            with open(self.failures_path, "rb") as file:
                signature = _signature(os.fstat(file.fileno()))
                if signature == cached_signature:
                    return cached
                raw = file.read()
        except FileNotFoundError:
            self._failures_state = (None, {})
            return {}
        except OSError as exc:
            raise self._unavailable(f"cannot read {self.failures_path}: {_describe(exc)}") from exc
        try:
            failures = _parse_failures(raw)
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("login failures file %s is unreadable; counting it as empty", self.failures_path)
            failures = {}
        self._failures_state = (signature, failures)
        return failures

    def _write_failures(self, failures: dict[str, list[float]]) -> None:
        data = json.dumps({"version": FORMAT_VERSION, "failures": failures}, separators=(",", ":"))
        signature = self._replace(self.failures_path, data.encode("utf-8"), durable=False)
        self._failures_state = (signature, failures)

    def reserve_attempt(
        self, keys: Sequence[str], now: float, window: float, allow: Callable[[Counts], bool]
    ) -> tuple[bool, Counts]:
        """Count, decide and record under the failures lock: atomic for every thread and process."""
        cutoff = now - window
        with self._locked(self.failures_lock_path):
            self._sweep_temp_files(self.failures_path)
            current = self._failures()
            counts: Counts = []
            for key in keys:
                recent = [t for t in current.get(key, ()) if t > cutoff]
                counts.append((len(recent), min(recent) if recent else None))
            if not allow(counts):
                return False, counts
            failures: dict[str, list[float]] = {}
            for other, stamps in current.items():
                recent = [t for t in stamps if t > cutoff]
                if recent:
                    failures[other] = recent
            for key in keys:
                failures[key] = [*failures.get(key, []), now][-MAX_FAILURES_PER_KEY:]
            if len(failures) > MAX_FAILURE_KEYS:
                # Keep the keys failing most recently; the ones dropped had their last failure longest ago.
                newest = sorted(failures, key=lambda k: failures[k][-1], reverse=True)[:MAX_FAILURE_KEYS]
                failures = {k: failures[k] for k in newest}
            self._write_failures(failures)
        return True, counts

    def release_attempt(self, keys: Sequence[str], at: float) -> None:
        """Remove one entry stamped ``at`` from each key."""
        with self._locked(self.failures_lock_path):
            failures = dict(self._failures())
            changed = False
            for key in keys:
                stamps = failures.get(key)
                if stamps and at in stamps:
                    rest = list(stamps)
                    rest.remove(at)
                    failures[key] = rest
                    changed = True
            if changed:
                self._write_failures({key: stamps for key, stamps in failures.items() if stamps})

    def login_failures(self, key: str, now: float, window: float) -> tuple[int, float | None]:
        """Failures of ``key`` within the window and the oldest of their timestamps."""
        cutoff = now - window
        recent = [t for t in self._failures().get(key, ()) if t > cutoff]
        return len(recent), (min(recent) if recent else None)

    def clear_login_failures(self, key: str) -> None:
        """Forget ``key``; writes nothing when it has no failures (the common case of a good login)."""
        if key not in self._failures():
            return
        with self._locked(self.failures_lock_path):
            failures = dict(self._failures())
            if failures.pop(key, None) is not None:
                self._write_failures(failures)

    def forget_login_failures(self, keys: Sequence[str], suffix: str) -> None:
        """Forget the failures counted under ``keys`` and under every key ending with ``suffix``."""

        def forgotten(key: str) -> bool:
            return key in keys or key.endswith(suffix)

        if not any(forgotten(key) for key in self._failures()):
            return
        with self._locked(self.failures_lock_path):
            self._write_failures({k: v for k, v in self._failures().items() if not forgotten(k)})

    def close(self) -> None:
        """Drop the in-memory index (no file stays open between calls)."""
        self._users_state = _empty_users()
        self._failures_state = (None, {})
