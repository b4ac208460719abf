"""Versioned schema upgrades of a catalogue: a version number in ``meta``, ordered steps.

Each step takes a catalogue from version ``n - 1`` to ``n`` and is idempotent; the new
version is recorded in the step's transaction, so an interrupted upgrade (SQLite commits
DDL at once) is simply run again. Catalogues of releases before versioning
(0.1.x) have no version: they are version 0, and step 1 brings them to the baseline.
A catalogue newer than this release is refused rather than misread.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, Engine, LargeBinary, inspect, select, text

from lookalike.errors import IncompatibleIndex
from lookalike.storage.schema import Base, Meta

VERSION_KEY = "schema_version"

ERRORS_VIEW = """
CREATE VIEW errors AS
SELECT id, path, size, mtime_ns, error AS reason, indexed_at AS seen_at
FROM files WHERE status = 'error'
"""


def _baseline(conn: Connection) -> None:
    """Version 1: the tables and the ``errors`` view of release 0.1 (what is missing of
    them: releases before 0.1 lacked ``ignored_pairs``; every change then was a new table)."""
    have = inspect(conn)
    missing = [t for t in Base.metadata.sorted_tables if not have.has_table(t.name)]
    Base.metadata.create_all(conn, tables=missing)
    if "errors" not in have.get_view_names():
        conn.execute(text(ERRORS_VIEW))


def _colour_signatures(conn: Connection) -> None:
    """Version 2: ``files.colour``, each image's colour signature (see lookalike.colour).
    Rows indexed before have none (their relations fall back on the vectors alone)."""
    if "colour" not in {c["name"] for c in inspect(conn).get_columns("files")}:
        kind = LargeBinary().compile(dialect=conn.dialect)
        conn.execute(text(f"ALTER TABLE files ADD COLUMN colour {kind}"))


STEPS: list[Callable[[Connection], None]] = [_baseline, _colour_signatures]  # STEPS[n - 1] makes version n
SCHEMA_VERSION = len(STEPS)


def version(conn: Connection) -> int:
    """The catalogue's schema version (0: made before versions were recorded, or empty)."""
    if not inspect(conn).has_table(Meta.__tablename__):
        return 0
    value = conn.execute(select(Meta.value).where(Meta.key == VERSION_KEY)).scalar()
    return int(value) if value is not None else 0


def migrate(engine: Engine, where: str) -> int:
    """Bring the catalogue to :data:`SCHEMA_VERSION`; returns the version it had.
    No DDL (and no write lock taken) when it is current."""
    with engine.connect() as conn:
        have = version(conn)
    if have > SCHEMA_VERSION:
        raise IncompatibleIndex(
            f"catalogue {where} has schema version {have}, newer than this lookalike knows "
            f"({SCHEMA_VERSION}): upgrade lookalike"
        )
    for n in range(have + 1, SCHEMA_VERSION + 1):
        with engine.begin() as conn:
            if version(conn) >= n:  # another process upgraded it meanwhile
                continue
            STEPS[n - 1](conn)
            conn.execute(Meta.__table__.delete().where(Meta.key == VERSION_KEY))
            conn.execute(Meta.__table__.insert().values(key=VERSION_KEY, value=str(n)))
    return have
