"""Disabled users of a JsonFileStore, in ``<data file>.disabled``.

A list of user ids, written under the user file's lock (``<data file>.lock``) and replaced atomically and
durably like the user file: a disable lost on a power cut would let the user sign in again. Each process
keeps the parsed list and reads the file again only when ``os.stat`` of it differs, so the check a login
makes while holding the sessions lock costs one ``stat``.

Disabling writes this file, then ends the user's sessions (user file's lock, then the sessions lock: the
order of json_sessions.py). A login checks this file while holding the sessions lock, so it either sees the
user disabled and starts nothing, or starts its session before the disable ends them all.

A file that cannot be parsed makes the store unavailable rather than count as empty: that would enable
every disabled user.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .json_file import JsonFileStore, Signature

FORMAT_VERSION = 1


def _parse(raw: bytes) -> frozenset[int]:
    doc = json.loads(raw)
    if doc["version"] != FORMAT_VERSION:
        raise ValueError(f"unsupported format version {doc['version']!r}")
    ids = doc["disabled"]
    if not isinstance(ids, list) or not all(type(user_id) is int for user_id in ids):
        raise TypeError("disabled is not a list of user ids")
    return frozenset(ids)


class JsonDisabledUsers:
    """The disabled users of ``store`` (see the module docstring)."""

    def __init__(self, store: JsonFileStore) -> None:
        self.store = store
        self.path = store.path + ".disabled"
        self._state: tuple[Signature | None, frozenset[int]] = (None, frozenset())
        from .json_file import _signature  # noqa: PLC0415 - json_file imports this module

        self._signature = _signature

    def ids(self) -> frozenset[int]:
        """The ids of the disabled users as the file holds them now."""
        cached_signature, cached = self._state
        try:
            with open(self.path, "rb") as file:
                signature = self._signature(os.fstat(file.fileno()))
                if signature == cached_signature:
                    return cached
                raw = file.read()
        except FileNotFoundError:
            self._state = (None, frozenset())
            return frozenset()
        except OSError as exc:
            raise self.store._unavailable(f"cannot read {self.path}: {exc.strerror}") from exc
        try:
            ids = _parse(raw)
        except (ValueError, TypeError, KeyError) as exc:
            raise self.store._unavailable(f"disabled users file {self.path} is unreadable: {exc}") from exc
        self._state = (signature, ids)
        return ids

    def write(self, ids: frozenset[int]) -> None:
        """Replace the list; the caller holds the user file's lock."""
        data = json.dumps({"version": FORMAT_VERSION, "disabled": sorted(ids)}, separators=(",", ":"))
        signature = self.store._replace(self.path, data.encode("utf-8"), durable=True)
        self._state = (signature, ids)
