"""The stores the service runs on during the bench: seeded in bulk with one precomputed argon2 hash."""

from __future__ import annotations

import time

from src.config import Settings
from src.security import Passwords

BENCH_USERNAME = "benchuser"


def password_hash(password: str) -> str:
    """One argon2 hash, made by the service's own hasher with its default (production) parameters."""
    return Passwords(Settings.from_env({})).hash(password)


def seed_rows(users: int, hashed: str):
    """``users`` rows, the bench user last; every row shares one precomputed hash."""
    for index in range(1, users):
        yield f"user{index:06d}", hashed
    yield BENCH_USERNAME, hashed


def seed(store, users: int, hashed: str) -> float:
    """Store ``users`` rows with the store's own bulk insert; returns the seconds it took."""
    started = time.monotonic()
    try:
        count = store.create_users_bulk(seed_rows(users, hashed))
    finally:
        store.close()
    if count != users:
        raise RuntimeError(f"create_users_bulk stored {count} rows, expected {users}")
    return round(time.monotonic() - started, 2)
