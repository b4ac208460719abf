"""The catalogue's tables (SQLAlchemy 2.0 ORM) and engine set-up; upgrades live in
:mod:`lookalike.storage.migrations`."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    create_engine,
    event,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from lookalike.errors import CatalogueUnavailable, InvalidCatalogueURL, StoreError

STATUS_OK = "ok"
STATUS_ERROR = "error"


class Base(DeclarativeBase):
    pass


class File(Base):
    """Every image file seen: indexed (status ok, with a vector) or failed (status error)."""

    __tablename__ = "files"
    # AUTOINCREMENT: ids are never reused, so a FAISS id always means one version of one file.
    __table_args__ = (Index("ix_files_status", "status"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(Text, unique=True)
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    content_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    width: Mapped[int | None]
    height: Mapped[int | None]
    format: Mapped[str | None] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(8))
    error: Mapped[str | None] = mapped_column(Text)
    vector_id: Mapped[int | None] = mapped_column(Integer)  # = id when the vector is stored
    captured_at: Mapped[datetime | None] = mapped_column(DateTime)
    exif: Mapped[dict | None] = mapped_column(JSON)
    indexed_at: Mapped[datetime] = mapped_column(DateTime)
    colour: Mapped[bytes | None] = mapped_column(LargeBinary)  # lookalike.colour signature (v2)


class Vector(Base):
    """The float32 vector of a file: the source of truth the FAISS index is built from."""

    __tablename__ = "vectors"

    id: Mapped[int] = mapped_column(ForeignKey("files.id", ondelete="CASCADE"), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Label(Base):
    """Top-5 ImageNet labels of a file, from classification modules."""

    __tablename__ = "labels"

    file_id: Mapped[int] = mapped_column(ForeignKey("files.id", ondelete="CASCADE"), primary_key=True)
    rank: Mapped[int] = mapped_column(Integer, primary_key=True)
    class_index: Mapped[int]
    name: Mapped[str] = mapped_column(Text, index=True)
    score: Mapped[float]


class IgnoredPair(Base):
    """Two contents the user said are not duplicates (by hash: survives moves and renames)."""

    __tablename__ = "ignored_pairs"

    hash_a: Mapped[str] = mapped_column(String(64), primary_key=True)  # hash_a < hash_b
    hash_b: Mapped[str] = mapped_column(String(64), primary_key=True)


class Meta(Base):
    """Small key/value state, e.g. the vector generation counter."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


def database_url(url: str | URL) -> URL:
    """A SQLAlchemy URL; plain ``postgresql://`` means the psycopg (3) driver."""
    try:
        url = make_url(url)
    except ArgumentError:
        raise InvalidCatalogueURL(f"not a database URL: {url!r} (e.g. postgresql://user@host/db)") from None
    if url.drivername in ("postgresql", "postgres"):  # postgres:// is libpq's alias
        url = url.set(drivername="postgresql+psycopg")
    try:
        url.get_dialect()
    except NoSuchModuleError:
        raise InvalidCatalogueURL(
            f"unknown kind of database {url.drivername!r} in {url.render_as_string(hide_password=True)} "
            "(e.g. postgresql://user@host/db)"
        ) from None
    return url


PG_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 60, "keepalives_interval": 10, "keepalives_count": 6}


def make_engine(url: str | URL) -> Engine:
    """An engine; SQLite tuned for one writer and concurrent readers (WAL)."""
    url = database_url(url)
    args = {}
    if url.get_driver_name() in ("psycopg", "psycopg2"):  # libpq: notice dead peers (a writer's lock)
        args = {k: v for k, v in PG_KEEPALIVES.items() if k not in url.query}
    try:
        engine = create_engine(url, pool_pre_ping=url.get_backend_name() != "sqlite", connect_args=args)
    except ImportError as exc:  # not installed, or installed without what it needs (psycopg: libpq)
        raise CatalogueUnavailable(
            f"no database driver for {url.drivername} ({exc.name or exc}); for PostgreSQL: "
            "pip install 'lookalike[postgres]'"
        ) from None
    where = url.render_as_string(hide_password=True)

    @event.listens_for(engine, "handle_error")
    def _out_of_room(context) -> None:
        if (reason := out_of_room(context.original_exception)) is not None:
            raise StoreError(f"cannot write the catalogue {where}: {reason}") from context.original_exception
        if damaged(context.original_exception):  # when opened, or at any page read later
            raise StoreError(
                f"the catalogue {where} is damaged ({context.original_exception}): restore it from a "
                "backup, or index again into a new --index folder"
            ) from context.original_exception

    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

    return engine


def damaged(exc: BaseException) -> bool:
    """Whether a database error says the SQLite file itself is damaged (truncated,
    overwritten, not a database): no retry or other setting helps."""
    return getattr(exc, "sqlite_errorname", None) in ("SQLITE_CORRUPT", "SQLITE_NOTADB")


def out_of_room(exc: BaseException) -> str | None:
    """The reason, when a database error is its disk (or server) out of room: SQLite's
    SQLITE_FULL, PostgreSQL's class 53 (insufficient resources: disk full, out of memory,
    too many connections); None for anything else."""
    if getattr(exc, "sqlite_errorname", None) == "SQLITE_FULL" or str(exc) == "database or disk is full":
        return "the disk is full"
    if str(getattr(exc, "sqlstate", "") or "").startswith("53"):
        return str(exc).strip().splitlines()[0]
    return None
