"""Where an index folder's catalogue lives: its own SQLite file, or a database URL the
folder remembers (without password: PGPASSWORD or ~/.pgpass supply it)."""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import platformdirs
from sqlalchemy.engine import URL

from lookalike.errors import CatalogueUnavailable, IncompatibleIndex, IndexNotFound, InvalidCatalogueURL
from lookalike.storage.manifest import Manifest
from lookalike.storage.schema import database_url

DATABASE = "catalog.sqlite"
SECRET_PARAMS = {"password", "sslpassword"}  # libpq's, kept out of files and messages


def default_index_dir() -> Path:
    """``$LOOKALIKE_INDEX``, else a folder in the per-user data directory."""
    env = os.environ.get("LOOKALIKE_INDEX")
    return Path(env) if env else Path(platformdirs.user_data_dir("lookalike")) / "index"


@dataclass(frozen=True)
class Location:
    """The catalogue of one index folder."""

    url: URL
    remembered: str | None  # what the folder records (redacted), None for its own file

    @property
    def shared(self) -> bool:
        """A database server rather than a SQLite file."""
        return self.url.get_backend_name() != "sqlite"

    @property
    def name(self) -> str:
        """The catalogue as messages name it (redacted)."""
        return self.remembered or redacted(self.url)


def locate(
    directory: Path, db: str | None, local: Manifest | None, creating: bool, own_kept: bool = False
) -> Location:
    """The catalogue of ``directory``: ``db`` if given, else what the folder's manifest
    ``local`` remembers, else its own SQLite file. Refuses a folder that keeps its
    catalogue elsewhere than ``db`` and, unless ``creating``, a catalogue that does not
    exist (no empty file is made). ``own_kept``: the folder's manifest is damaged, its own
    SQLite file holds the index."""
    own = database_url(f"sqlite:///{directory / DATABASE}")
    has_manifest = local is not None or own_kept
    before = local.database if local else None
    before = before and redacted(before)  # older versions kept ?password=
    url = absolute(database_url(db or before or own))
    where = None if url == own else redacted(url)
    if db and has_manifest and before != where:
        raise IncompatibleIndex(
            f"index folder {directory} keeps its catalogue in {before or DATABASE}, "
            f"not {where or DATABASE}: use another --index folder"
        )
    missing = (url == own and not has_manifest) or (
        url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file()
    )
    if missing and not creating:
        raise IndexNotFound(f"no index at {directory} (create one with `lookalike index`)")
    return Location(url, where)


def read_only_media(path: Path) -> bool:
    """Whether ``path`` is on a file system mounted read-only: a snapshot, a backup disc,
    a share exported read-only."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # gone, or no statvfs (Windows)
        return False


def unwritable_folder(path: Path) -> bool:
    """Whether this process cannot make files beside ``path``: read-only media, or a
    folder it may not write (an index shared read-only by its owner)."""
    return read_only_media(path) or not os.access(path.parent, os.W_OK)


def frozen(url: URL) -> URL:
    """A SQLite catalogue in a folder this process cannot write (see
    :func:`unwritable_folder`), opened as unchanging (``immutable``): SQLite cannot make
    there the shared-memory file that reading a WAL database needs. Refused when its
    write-ahead log holds changes (a copy taken while it was written, or its owner writing
    now): reading without them would lose them."""
    path = Path(url.database or "")
    log = path.with_name(path.name + "-wal")
    if log.exists() and log.stat().st_size > 0:
        raise CatalogueUnavailable(
            f"{path} is in a folder this process cannot write (read-only media or permissions), "
            f"with unsaved changes beside it ({log.name}); copy the index folder somewhere "
            "writable to use it, or use it when its writer has finished"
        )
    query = {"mode": "ro", "immutable": "1", "uri": "true"}
    return url.set(database=f"file:{urllib.parse.quote(str(path))}", query=query)


def absolute(url: URL) -> URL:
    """A SQLite URL with an absolute file path, so a folder remembers the same file from
    anywhere; in-memory SQLite cannot hold an index."""
    if url.get_backend_name() != "sqlite":
        return url
    if not url.database or url.database == ":memory:" or url.database.startswith("file:"):
        raise InvalidCatalogueURL(
            f"{url}: a SQLite catalogue needs a file path, e.g. sqlite:////data/catalog.sqlite"
        )
    return url.set(database=str(Path(url.database).expanduser().resolve()))


def redacted(url: str | URL) -> str:
    """A database URL without its password, safe to store and print."""
    url = database_url(url)
    query = {k: v for k, v in url.query.items() if k.lower() not in SECRET_PARAMS}
    return url._replace(password=None, query=query).render_as_string(hide_password=False)  # .set() keeps None
