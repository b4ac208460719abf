"""Versioned schema upgrades: a catalogue written by release 0.1.0 opens, upgrades, works."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine

from lookalike.errors import IncompatibleIndex
from lookalike.images import DecodedImage, ImageFile
from lookalike.storage import Store
from lookalike.storage.migrations import SCHEMA_VERSION, VERSION_KEY, migrate, version

DATA = Path(__file__).parent / "data"


def _old_release_index(folder: Path) -> Path:
    """The index folder release 0.1.0 wrote (tests/data: its catalogue dumped as SQL, and
    its manifest), without a FAISS checkpoint: the store rebuilds it from the catalogue."""
    folder.mkdir()
    with sqlite3.connect(folder / "catalog.sqlite") as conn:
        conn.executescript((DATA / "catalog-0.1.0.sql").read_text())
    shutil.copy(DATA / "manifest-0.1.0.json", folder / "manifest.json")
    return folder


def _old_vectors() -> np.ndarray:
    v = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)  # as release 0.1.0 stored them
    return (v / np.linalg.norm(v, axis=1, keepdims=True))[:3]


def test_a_catalogue_of_the_previous_release_is_upgraded_and_keeps_everything(tmp_path):
    folder = _old_release_index(tmp_path / "index")
    engine = create_engine(f"sqlite:///{folder / 'catalog.sqlite'}")
    with engine.connect() as conn:
        assert version(conn) == 0  # 0.1.0 recorded no schema version
    with Store(folder) as s:  # a reader upgrades it too (additive steps)
        assert s.catalogue.meta(VERSION_KEY) == str(SCHEMA_VERSION)
        assert s.stats()["files"] == 3 and s.stats()["errors"] == 1 and s.stats()["labelled"] == 2
        scores, found = s.search(_old_vectors(), 1)
        assert found[:, 0].tolist() == [1, 2, 3] and np.allclose(scores[:, 0], 1.0, atol=1e-5)
        assert s.catalogue.ignored_pairs() == {("hasha", "hashb")}
        assert s.catalogue.ids_with_label("tabby").tolist() == [1]
        assert s.manifest.model.identity == "model-a" and s.descriptor == "squash"
        assert s.catalogue.rows([1])[1].colour is None  # step 2 added the column; 0.1.0 had none
    with Store(folder, writable=True) as s:  # and takes writes: ids continue after 0.1.0's
        img = DecodedImage(np.zeros((32, 32, 3), np.uint8), 32, 32, "JPEG")
        (new,) = s.add([ImageFile("/p/e.jpg", 10, 1, "hashe", image=img)], _old_vectors()[:1])
        assert new == 6  # 4 was removed and 5 failed under 0.1.0: never reused
    with Store(folder) as s:
        assert s.verify().ok and s.vectors.ntotal == 4
    with engine.connect() as conn:
        assert version(conn) == SCHEMA_VERSION
    engine.dispose()


def test_a_current_catalogue_is_not_touched_and_a_newer_one_is_refused(tmp_path):
    folder = _old_release_index(tmp_path / "index")
    engine = create_engine(f"sqlite:///{folder / 'catalog.sqlite'}")
    assert migrate(engine, "test") == 0
    assert migrate(engine, "test") == SCHEMA_VERSION  # nothing left to do
    with engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE meta SET value = '{SCHEMA_VERSION + 1}' WHERE key = '{VERSION_KEY}'")
    with pytest.raises(IncompatibleIndex, match="newer than this lookalike knows"):
        Store(folder)
    engine.dispose()
