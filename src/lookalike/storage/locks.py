"""One writer at a time: the index folder's lock file and the catalogue's writer lock.

The folder lock (``write.lock``, an ``flock``) covers the folder's files and its own
SQLite catalogue. A catalogue kept elsewhere gets its own lock too: a lock file beside
a SQLite file, or a PostgreSQL session advisory lock held on a dedicated connection
(released by the server if this process dies). Other databases get none (see README).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

from lookalike.errors import IndexLocked, LockLost

LOCKFILE = "write.lock"
ADVISORY_LOCK = 0x6C6F6F6B  # "look": the PostgreSQL advisory lock of a catalogue's writer


class FileLock:
    """An exclusive ``flock`` on a file (created if need be), or :class:`IndexLocked`."""

    def __init__(self, path: Path, what: str, busy: str | None = None) -> None:
        """``busy``: what to say when another process holds it (else: ``what`` is being
        written by another lookalike process)."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise IndexLocked(busy or f"{what} is being written by another lookalike process") from None
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def lock_folder(directory: Path) -> FileLock:
    """The index folder's writer lock (the folder is created if need be)."""
    directory.mkdir(parents=True, exist_ok=True)
    return FileLock(directory / LOCKFILE, str(directory))


class CatalogueLock:
    """The writer lock of a catalogue kept outside the index folder (see module doc)."""

    def __init__(self, engine: Engine, location: str | None) -> None:
        """``location``: the catalogue's redacted URL when it is not the folder's own."""
        self.where = location or str(engine.url)
        self._file: FileLock | None = None
        self._conn: Connection | None = None
        if engine.dialect.name == "sqlite":
            if location:
                self._file = FileLock(Path(f"{engine.url.database}.lock"), f"catalogue {location}")
            return
        if engine.dialect.name != "postgresql":
            return
        conn = engine.connect()
        got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_LOCK}).scalar()
        conn.commit()
        if not got:
            conn.close()
            raise IndexLocked(f"catalogue {self.where} is being written by another lookalike process")
        self._conn = conn

    def check(self) -> None:
        """Fail (:class:`LockLost`) rather than write on when a PostgreSQL writer's lock
        session was lost (a server restart, an idle timeout)."""
        if self._conn is None:
            return
        try:
            held = self._conn.execute(
                text(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
                    " AND pid = pg_backend_pid() AND classid = 0 AND objid = CAST(:k AS oid)"
                    " AND objsubid = 1)"
                ),
                {"k": ADVISORY_LOCK},
            ).scalar()
            self._conn.commit()
        except SQLAlchemyError:  # the connection was lost (now or at an earlier check)
            held = False
        if not held:
            raise LockLost(
                f"lost the write lock of catalogue {self.where} (its connection "
                "was closed): nothing more was written; run the command again"
            )

    def drop_connection(self) -> None:
        """Forget the lock's connection as if it had died (for tests of a lost lock)."""
        if self._conn is not None:
            self._conn.invalidate()
            self._conn = None

    def release(self) -> None:
        """Unlock, each step even if an earlier one fails (a dropped connection releases
        the advisory lock anyway)."""
        try:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                try:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_LOCK})
                    conn.commit()
                except SQLAlchemyError:
                    pass  # the session is gone, and its lock with it
                finally:
                    conn.close()
        finally:
            if self._file is not None:
                self._file.release()
