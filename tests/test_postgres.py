"""PostgreSQL catalogues, against a real server (``.ci/postgres`` starts one): several
machines (index folders) sharing one catalogue, one writer at a time, the CLI end to end.

The store-level behaviour (add, remove, reconcile, verify, filters, index types) runs on
PostgreSQL too, through the ``backend`` fixture of test_store.py and test_index_types.py.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from lookalike.cli import app
from lookalike.images import DecodedImage, ImageFile
from lookalike.models.runtimes import ModelInfo
from lookalike.storage import Store, StoreError
from lookalike.storage.schema import database_url

DIM = 8
runner = CliRunner()


def _info() -> ModelInfo:
    return ModelInfo("test-model", "model-a", (32, 32), DIM, (0.0, 1.0), False, "tf")


def _files(names, mtime_ns: int = 1_763_800_000_123_456_789):
    img = DecodedImage(np.zeros((32, 32, 3), np.uint8), 32, 32, "JPEG")
    return [ImageFile(f"/p/{n}", 5_000_000_000, mtime_ns, f"h{n}", image=img) for n in names]


def _vecs(n, seed=0):
    v = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def run(*args, ok: bool = True):
    result = runner.invoke(app, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def test_two_machines_share_one_catalogue(tmp_path, pg_url):
    a, b = tmp_path / "machine-a", tmp_path / "machine-b"
    with Store(a, model=_info(), writable=True, db=pg_url) as s:
        ids = s.add(_files("xyz"), _vecs(3))
    assert not (a / "catalog.sqlite").exists()
    # machine b has only the URL: manifest and vectors come from the catalogue
    with Store(b, db=pg_url) as s:
        assert s.manifest.model.identity == "model-a" and s.vectors.ntotal == 3
        row = s.catalogue.rows([ids[0]])[ids[0]]
        assert (row.size, row.mtime_ns) == (5_000_000_000, 1_763_800_000_123_456_789)  # 64-bit
        _, found = s.search(_vecs(3)[1:2], 1)
        assert found[0][0] == ids[1]
    assert (b / "manifest.json").exists() and list(b.glob("vectors-*.faiss"))  # cached locally
    # a writes more; b's checkpoint is behind and is reconciled on open
    with Store(a, writable=True) as s:  # the folder remembers its catalogue
        s.remove_paths(["/p/x"])
        (new,) = s.add(_files("w"), _vecs(1, 5))
    with Store(b, db=pg_url) as s:
        assert sorted(s.vectors.ids().tolist()) == sorted([ids[1], ids[2], new]) and s.verify().ok


def test_one_writer_per_catalogue_across_folders(tmp_path, pg_url):
    with Store(tmp_path / "a", model=_info(), writable=True, db=pg_url):
        with pytest.raises(StoreError, match=r"catalogue .* is being written by another lookalike process"):
            Store(tmp_path / "b", writable=True, db=pg_url)
        Store(tmp_path / "b", db=pg_url).close()  # readers are fine meanwhile
    Store(tmp_path / "b", writable=True, db=pg_url).close()  # released on close


def test_lock_is_released_when_the_writer_dies(tmp_path, pg_url):
    store = Store(tmp_path / "a", model=_info(), writable=True, db=pg_url)
    store.catalogue_lock.drop_connection()  # the connection drops, as when the process is killed
    Store(tmp_path / "b", writable=True, db=pg_url).close()
    store.close()


def test_password_is_not_stored_and_folders_keep_their_catalogue(tmp_path, pg_url):
    url = database_url(pg_url).set(password="s3cret")  # trust auth accepts any password
    with Store(tmp_path / "a", model=_info(), writable=True, db=url.render_as_string(hide_password=False)):
        pass
    manifest = (tmp_path / "a" / "manifest.json").read_text()
    assert "s3cret" not in manifest and json.loads(manifest)["database"].startswith("postgresql+psycopg://")
    with Store(tmp_path / "sqlite", model=_info(), writable=True):
        pass
    with pytest.raises(StoreError, match=r"keeps its catalogue in catalog\.sqlite"):
        Store(tmp_path / "sqlite", db=pg_url)


def test_reading_an_empty_database_creates_nothing(tmp_path, pg_url):
    with pytest.raises(StoreError, match="no index in postgresql"):
        Store(tmp_path, db=pg_url)
    engine = create_engine(database_url(pg_url))
    with engine.connect() as conn:
        tables = conn.execute(text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")).scalar()
    engine.dispose()
    assert tables == 0


def test_cli_end_to_end_on_postgresql(tmp_path, photo_dir, tf2_model, pg_url):
    here, there, local = tmp_path / "here", tmp_path / "there", tmp_path / "local"
    run("index", photo_dir, "--model", tf2_model, "--index", here, "--db", pg_url, "--workers", "0", "-q")
    run("index", photo_dir, "--model", tf2_model, "--index", local, "--workers", "0", "-q")
    query = photo_dir / "sub" / "photo3.jpg"
    on_pg = json.loads(run("search", query, "-k", "4", "--json", "--index", there, "--db", pg_url).stdout)
    on_sqlite = json.loads(run("search", query, "-k", "4", "--json", "--index", local).stdout)
    assert on_pg == on_sqlite and on_pg["results"][0]["path"] == str(query)
    info = json.loads(run("info", "--json", "--index", there, "--db", pg_url).stdout)
    assert info["files"] == 8 and info["vectors"] == 8
    again = run("index", photo_dir, "--index", here, "--workers", "0", "-q").stdout  # remembered --db
    assert "indexed 0 images" in again and "8 unchanged" in again
    env_run = runner.invoke(
        app, ["verify", "--index", str(there)], env={**os.environ, "LOOKALIKE_DB": pg_url}
    )
    assert env_run.exit_code == 0 and "agree" in env_run.stdout
    on_pg = run("dupes", "--json", "--index", there, "--db", pg_url, ok=False)
    on_sqlite = run("dupes", "--json", "--index", local, ok=False)
    groups = json.loads(on_pg.stdout)["groups"]
    assert groups == json.loads(on_sqlite.stdout)["groups"]
    assert on_pg.exit_code == on_sqlite.exit_code == (0 if groups else 3)  # 3: no duplicates


def test_a_cached_checkpoint_of_another_catalogue_is_never_used(tmp_path, pg_url, pg_admin):
    a, b = tmp_path / "machine-a", tmp_path / "machine-b"
    with Store(a, model=_info(), writable=True, db=pg_url) as s:
        s.add(_files("xyz"), _vecs(3, seed=1))
    Store(b, db=pg_url).close()  # b caches a checkpoint of this catalogue
    engine = create_engine(database_url(pg_url))
    with engine.begin() as conn:  # the catalogue is dropped and made again, ids from 1 again
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    with Store(a, model=_info(), writable=True, db=pg_url) as s:
        s.add(_files("xyz"), _vecs(3, seed=2))  # same ids, same generation, other vectors
    with Store(b, db=pg_url) as s:
        _, found = s.search(_vecs(3, seed=2), 1)
        assert found[:, 0].tolist() == [1, 2, 3] and s.verify().ok


def test_a_writer_that_lost_its_lock_writes_nothing_more(tmp_path, pg_url, pg_admin):
    store = Store(tmp_path / "a", model=_info(), writable=True, db=pg_url)
    store.add(_files("x"), _vecs(1))
    engine = create_engine(database_url(pg_url))
    with engine.connect() as conn:  # e.g. a server restart or an idle-session timeout
        conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"))
    with pytest.raises(StoreError, match="lost the write lock"):
        store.add(_files("y"), _vecs(1, 3))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM files")).scalar() == 1
    engine.dispose()
    store.close()
    with Store(tmp_path / "b", writable=True, db=pg_url) as s:  # nothing left locked
        assert s.vectors.ntotal == 1


def test_unreachable_servers_and_secrets_in_the_url(tmp_path, pg_url):
    with pytest.raises(StoreError, match=r"cannot use catalogue postgresql.*refused.*PGPASSWORD"):
        Store(tmp_path / "x", db="postgres://someone@127.0.0.1:1/nothing")
    with pytest.raises(StoreError, match="not a database URL"):
        Store(tmp_path / "x", db="nonsense")
    url = f"{pg_url}?password=s3cret&application_name=lookalike"
    with Store(tmp_path / "a", model=_info(), writable=True, db=url):
        pass
    remembered = json.loads((tmp_path / "a" / "manifest.json").read_text())["database"]
    assert "s3cret" not in remembered and "application_name=lookalike" in remembered
