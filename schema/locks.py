"""Cross-process locks that make the store's writers queue instead of racing.

- A local store (SQLite catalog) has one OS file lock, `<data dir>/store.lock` (flock): every
  lake write and every store open holds it, so commits happen one at a time per data dir and
  no writer starves in optimistic retries. Waiters queue in the kernel; a process that dies
  holding the lock releases it with its file descriptor.
- A PostgreSQL store takes transaction-level advisory locks on a connection of the job engine:
  one for the whole lake around every lake transaction (writers on every host queue, so two writes
  of one shard never both "delete nothing and insert" and none starves in retries), and one around
  migrating and creating the store on open. They are released when that transaction ends or its
  connection drops.
"""

from __future__ import annotations

import contextlib
import fcntl
import zlib
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine, text

_INT4 = 2**31


def _namespace(name: str) -> int:
    """A fixed int4 for pg_advisory_xact_lock(int4, int4)'s first key, derived from a name."""
    return zlib.crc32(name.encode()) % _INT4


LAKE_NAMESPACE = _namespace("saegap.lake")
OPEN_NAMESPACE = _namespace("saegap.open")


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created if missing) until the block ends; blocks until free.

    Each call opens its own file description, so two holders in one process (two Stores, two
    threads) exclude each other too; a nested call in one thread would wait on itself.
    """
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def advisory_lock(engine: Engine, namespace: int, key: int) -> Iterator[None]:
    """Hold the PostgreSQL advisory lock (namespace, key) for the block, in a transaction of its own."""
    with engine.begin() as connection:
        connection.execute(
            text("SELECT pg_advisory_xact_lock(:namespace, :key)"), {"namespace": namespace, "key": key % _INT4}
        )
        yield
