"""Errors meant for a person: one type per kind, reported by the CLI in one place."""

from __future__ import annotations

import errno
import hashlib
import json
import resource
import shutil
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from sqlalchemy import Engine, event
from typer.testing import CliRunner

from lookalike.api import Index
from lookalike.cli import app
from lookalike.errors import (
    CalibrationError,
    IndexLocked,
    InvalidArgument,
    LookalikeError,
    StoreError,
    http_status,
)
from lookalike.fetch import FetchError
from lookalike.images import ImageError
from lookalike.models import ModelError
from lookalike.storage import VectorIndex
from tests.conftest import make_photo

runner = CliRunner()


def test_library_errors_are_typed():
    for kind, status in ((ModelError, 503), (FetchError, 422), (ImageError, 415)):
        assert issubclass(kind, LookalikeError) and http_status(kind("x")) == status
    # ValueError stays a base where callers catch it (a bad option value, a refused fit)
    assert issubclass(InvalidArgument, ValueError) and issubclass(CalibrationError, ValueError)


def _info_raises(monkeypatch, exc: BaseException) -> None:
    def info(self):
        raise exc

    monkeypatch.setattr(Index, "info", info)


def test_a_lookalike_error_is_one_line_and_exit_1(monkeypatch, tmp_path):
    _info_raises(monkeypatch, IndexLocked("index /data/[photos] is being written by another process"))
    res = runner.invoke(app, ["info", "--index", str(tmp_path)])
    assert res.exit_code == 1
    message = "error: index /data/[photos] is being written by another process"  # not read as markup
    assert res.stderr.strip() == message
    assert res.stdout == "" and "Traceback" not in res.output


def test_an_os_error_is_one_line_and_exit_1(monkeypatch, tmp_path):
    _info_raises(monkeypatch, PermissionError(errno.EACCES, "Permission denied", "/data/catalog.sqlite"))
    res = runner.invoke(app, ["info", "--index", str(tmp_path)])
    assert res.exit_code == 1 and res.stderr.strip() == "error: /data/catalog.sqlite: Permission denied"


def test_an_unexpected_exception_is_not_swallowed(monkeypatch, tmp_path):
    _info_raises(monkeypatch, RuntimeError("a bug"))
    res = runner.invoke(app, ["info", "--index", str(tmp_path)])
    assert isinstance(res.exception, RuntimeError) and str(res.exception) == "a bug"
    assert "error:" not in res.output


def test_a_closed_pipe_is_left_to_click(monkeypatch, tmp_path):
    _info_raises(monkeypatch, BrokenPipeError(errno.EPIPE, "Broken pipe"))
    res = runner.invoke(app, ["info", "--index", str(tmp_path)])
    assert res.exit_code == 1 and "error:" not in res.output


@pytest.mark.parametrize(
    "args",
    [
        ["dupes", "--preset", "nope"],
        ["dupes", "--threshold", "0.9", "--min-probability", "0.9"],
        ["dupes", "--json", "--csv"],
        ["reindex", "--index-type", "bogus"],
        ["search", "q.jpg", "--since", "2025-01-01", "--until", "2024-01-01"],
        ["index", "photos", "--descriptor", "bogus"],
        ["index", "photos", "--input-size", "5"],
    ],
)
def test_options_that_do_not_go_together_or_are_unknown_are_usage_errors(monkeypatch, tmp_path, args):
    manifest = SimpleNamespace(model=SimpleNamespace(source="m"), calibration=None)  # what dupes reads
    monkeypatch.setattr(Index, "manifest", lambda self: manifest)
    res = runner.invoke(app, [*args, "--index", str(tmp_path)])
    assert res.exit_code == 2, res.output


@contextmanager
def _catalogue_cannot_grow() -> Iterator[None]:
    """Every SQLite database opened meanwhile may not grow: SQLite's own SQLITE_FULL, as
    on a full disk."""

    def no_growth(dbapi_conn, _record) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA max_page_count = 1")  # clamped to the pages the file has now
        cur.close()

    event.listen(Engine, "connect", no_growth)
    try:
        yield
    finally:
        event.remove(Engine, "connect", no_growth)


def test_a_full_disk_under_the_catalogue_is_one_line_and_the_run_resumes(tmp_path, photo_dir, tf2_model):
    first = photo_dir / "sub"
    index = ["index", "--index", str(tmp_path / "ix"), "--workers", "0"]
    assert runner.invoke(app, [*index, str(first), "--model", str(tf2_model)]).exit_code == 0
    more = tmp_path / "more"
    more.mkdir()
    for i in range(40):
        make_photo(100 + i).save(more / f"m{i}.jpg")
    with _catalogue_cannot_grow():
        res = runner.invoke(app, [*index, str(more)])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.output
    assert "cannot write the catalogue" in res.stderr and "the disk is full" in res.stderr
    res = runner.invoke(app, [*index, str(more)])
    assert res.exit_code == 0 and "indexed 40" in res.output.replace("\n", " "), res.output
    assert runner.invoke(app, ["verify", "--index", str(tmp_path / "ix")]).exit_code == 0


def test_a_full_disk_under_the_vector_checkpoint_is_a_store_error(tmp_path):
    """FAISS's write error (here the file-size limit, EFBIG, as ENOSPC would be) names the
    checkpoint and the system's reason; no temporary is left."""
    vectors = VectorIndex(64)
    vectors.add(np.arange(5000, dtype=np.int64), np.random.default_rng(0).random((5000, 64), np.float32))
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails, not kills
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, limit[1]))
    try:
        with pytest.raises(StoreError, match=r"cannot write the vector checkpoint .*: File too large"):
            vectors.save(tmp_path, 1)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        signal.signal(signal.SIGXFSZ, previous)
    assert list(tmp_path.iterdir()) == []


def _damaged(folder: Path, name: str, data: bytes) -> Path:
    """A copy of the index ``folder`` whose file ``name`` now holds ``data``."""
    copy = folder.with_name(f"{folder.name}-{name}-{hashlib.sha256(data).hexdigest()[:12]}")
    shutil.copytree(folder, copy)
    (copy / name).write_bytes(data)
    return copy


def test_a_damaged_index_folder_is_one_line_naming_the_file(tmp_path, photo_dir, tf2_model):
    folder = tmp_path / "ix"
    made = ["index", str(photo_dir / "sub"), "--index", str(folder), "--model", str(tf2_model)]
    assert runner.invoke(app, [*made, "--workers", "0"]).exit_code == 0
    catalogue = (folder / "catalog.sqlite").read_bytes()
    pages = catalogue[:4096] + bytes(255 - b for b in catalogue[4096:])  # the schema whole, tables not
    sqlite = "catalog.sqlite is damaged"
    damaged = [
        (_damaged(folder, "catalog.sqlite", catalogue[: len(catalogue) // 2]), f"{sqlite} (database disk"),
        (_damaged(folder, "catalog.sqlite", pages), f"{sqlite} (database disk image is malformed)"),
        (_damaged(folder, "catalog.sqlite", b"not a database" * 100), f"{sqlite} (file is not a database"),
    ]
    search = ["search", str(photo_dir / "photo0.jpg")]
    for copy, message in damaged:
        for command in (["info"], ["dupes"], search, ["index", str(photo_dir)]):
            res = runner.invoke(app, [*command, "--index", str(copy)])
            assert res.exit_code == 1 and isinstance(res.exception, SystemExit), (command, copy, res.output)
            assert message in res.stderr and "restore it from a backup" in res.stderr, res.stderr
    assert runner.invoke(app, ["verify", "--index", str(folder)]).exit_code == 0  # the original is fine


def test_a_damaged_manifest_is_read_from_the_catalogue_and_written_anew(
    tmp_path, photo_dir, tf2_model, caplog
):
    """The catalogue keeps a copy of manifest.json (the one used): a damaged file is said,
    the copy used and the file written anew by the next `index`; without a catalogue
    beside it (a shared one it named), it is an error line."""
    folder = tmp_path / "ix"
    made = ["index", str(photo_dir / "sub"), "--index", str(folder), "--model", str(tf2_model)]
    assert runner.invoke(app, [*made, "--workers", "0"]).exit_code == 0
    good = (folder / "manifest.json").read_text()
    for data, reason in ((b'{"garb', "(Unterminated string"), (b"[]", "(not the manifest of an index)")):
        copy = _damaged(folder, "manifest.json", data)
        caplog.clear()
        res = runner.invoke(app, ["info", "--json", "--index", str(copy)])
        assert res.exit_code == 0 and json.loads(res.stdout)["files"] == 4, res.output
        assert f"manifest.json is damaged {reason}" in caplog.text
        assert "using the copy in its catalogue" in caplog.text
        assert runner.invoke(app, ["index", str(photo_dir / "sub"), "--index", str(copy)]).exit_code == 0
        assert (copy / "manifest.json").read_text() == good.replace(str(folder), str(copy))
        lone = tmp_path / f"lone-{len(data)}"
        lone.mkdir()
        (lone / "manifest.json").write_bytes(data)
        res = runner.invoke(app, ["info", "--index", str(lone)])
        assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.output
        assert f"manifest.json is damaged {reason}" in res.stderr and "restore it from a backup" in res.stderr


@pytest.mark.parametrize(
    ("db", "message"),
    [
        ("bogus://u:secret@host/db", "unknown kind of database 'bogus' in bogus://u:***@host/db"),
        ("postgresql+nodriver://host/db", "unknown kind of database 'postgresql+nodriver'"),
        ("mysql://u@localhost/db", "no database driver for mysql (MySQLdb)"),
    ],
)
def test_a_catalogue_url_lookalike_cannot_use_is_one_line(tmp_path, db, message):
    res = runner.invoke(app, ["info", "--index", str(tmp_path / "ix"), "--db", db])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.output
    assert message in res.stderr and "secret" not in res.output
    assert not (tmp_path / "ix").exists()


def test_a_database_driver_that_cannot_load_is_one_line(tmp_path, monkeypatch):
    """psycopg installed without libpq raises ImportError (not ModuleNotFoundError)."""
    import sys

    class NoLibpq:
        def find_spec(self, name, path=None, target=None):
            if name == "psycopg" or name.startswith("psycopg."):
                raise ImportError("no pq wrapper available: libpq library not found")
            return None

    monkeypatch.setattr(sys, "meta_path", [NoLibpq(), *sys.meta_path])
    for name in [m for m in sys.modules if m == "psycopg" or m.startswith("psycopg.")]:
        monkeypatch.delitem(sys.modules, name)
    res = runner.invoke(app, ["info", "--index", str(tmp_path / "ix"), "--db", "postgresql://u@127.0.0.1/db"])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.output
    assert "no database driver for postgresql+psycopg (no pq wrapper available" in res.stderr


def test_a_damaged_manifest_without_a_copy_to_read_is_refused_and_nothing_is_made(
    tmp_path, photo_dir, tf2_model
):
    """The catalogue's copy is used only where there is one, in the folder's own catalogue:
    no new manifest is made over an old catalogue, no other --db is taken for this index,
    and an empty catalog.sqlite is left as it is."""
    import sqlite3

    folder = tmp_path / "ix"
    made = ["index", str(photo_dir / "sub"), "--index", str(folder), "--model", str(tf2_model)]
    assert runner.invoke(app, [*made, "--workers", "0"]).exit_code == 0
    old = _damaged(folder, "manifest.json", b'{"garb')
    with sqlite3.connect(old / "catalog.sqlite") as con:  # a catalogue made before it kept a copy
        con.execute("DELETE FROM meta WHERE key = 'manifest'")
    other = _damaged(folder, "manifest.json", b"[]")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "catalog.sqlite").touch()
    (empty / "manifest.json").write_bytes(b"{")
    elsewhere = tmp_path / "elsewhere.sqlite"
    for copy, extra in ((old, []), (other, ["--db", f"sqlite:///{elsewhere}"]), (empty, [])):
        for command in (["info"], ["index", str(photo_dir / "sub"), "--model", str(tf2_model)]):
            res = runner.invoke(app, [*command, "--index", str(copy), *extra])
            assert res.exit_code == 1 and "manifest.json is damaged" in res.stderr, (copy, res.output)
            assert "using the copy" not in res.stderr
    with sqlite3.connect(old / "catalog.sqlite") as con:
        assert not con.execute("SELECT 1 FROM meta WHERE key = 'manifest'").fetchall()  # none made
    assert (old / "manifest.json").read_bytes() == b'{"garb' and not elsewhere.exists()
    assert (empty / "catalog.sqlite").stat().st_size == 0


def test_a_database_error_at_open_is_one_line_not_called_damage(monkeypatch, tmp_path, photo_dir, tf2_model):
    """PostgreSQL 15 refuses CREATE in schema public to roles that do not own the database:
    a ProgrammingError at open, an error line (31f38ff made it a traceback), not 'damaged'."""
    from sqlalchemy.exc import ProgrammingError

    from lookalike.storage import store as store_module

    folder = tmp_path / "ix"
    made = ["index", str(photo_dir / "sub"), "--index", str(folder), "--model", str(tf2_model)]
    assert runner.invoke(app, [*made, "--workers", "0"]).exit_code == 0

    def refused(engine, name):
        raise ProgrammingError("CREATE TABLE meta", {}, Exception("permission denied for schema public"))

    monkeypatch.setattr(store_module, "migrate", refused)
    res = runner.invoke(app, ["info", "--index", str(folder)])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.output
    assert "cannot use catalogue" in res.stderr and "permission denied for schema public" in res.stderr
    assert "damaged" not in res.stderr
