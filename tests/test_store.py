"""Storage: catalogue and FAISS kept in step, crash recovery, manifest checks, locking."""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading

import numpy as np
import pytest

from lookalike.errors import CatalogueUnavailable, ReadOnlyIndex
from lookalike.images import DecodedImage, ImageFile
from lookalike.models.runtimes import ModelInfo
from lookalike.storage import Store, StoreError, VectorIndex
from tests.conftest import as_owner

DIM = 8


def _info(identity="model-a", dim=DIM) -> ModelInfo:
    return ModelInfo("test-model", identity, (32, 32), dim, (0.0, 1.0), False, "tf")


def _files(names, tag="x"):
    img = DecodedImage(np.zeros((32, 32, 3), np.uint8), 32, 32, "JPEG")
    return [ImageFile(f"/p/{n}", 10, 1, f"{tag}{n}", image=img) for n in names]


def _vecs(n, seed=0):
    v = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_add_search_remove(tmp_path, backend):
    with backend(tmp_path, model=_info(), writable=True) as s:
        v = _vecs(5)
        ids = s.add(_files("abcde"), v)
        scores, found = s.vectors.search(v[2:3], 2)
        assert found[0][0] == ids[2] and scores[0][0] == pytest.approx(1.0)
        assert s.remove_paths(["/p/c", "/p/nope"]) == 1
        assert s.vectors.ntotal == 4 and ids[2] not in s.vectors.ids()
    with backend(tmp_path) as s:  # reopened read-only from the checkpoint
        assert s.vectors.ntotal == 4 and s.stats()["files"] == 4
        assert s.verify().ok


def test_ids_are_never_reused(tmp_path, backend):
    with backend(tmp_path, model=_info(), writable=True) as s:
        (first,) = s.add(_files("a"), _vecs(1))
        s.remove_paths(["/p/a"])
        (second,) = s.add(_files("a"), _vecs(1, 1))
        assert second > first


def test_changed_file_replaces_row_and_vector(tmp_path, backend):
    with backend(tmp_path, model=_info(), writable=True) as s:
        (old,) = s.add(_files("a"), _vecs(1))
        (new,) = s.add(_files("a", tag="y"), _vecs(1, 1))
        assert s.vectors.ntotal == 1 and list(s.vectors.ids()) == [new] and new != old


def test_stale_checkpoint_is_brought_up_to_date(tmp_path, backend):
    """A crash after SQLite commits but before the FAISS checkpoint loses nothing."""
    with backend(tmp_path, model=_info(), writable=True) as s:
        s.add(_files("ab"), _vecs(2))
    stale_path = VectorIndex.checkpoints(tmp_path)[-1][1]
    stale = stale_path.read_bytes()
    with backend(tmp_path, writable=True) as s:
        s.add(_files("cd"), _vecs(2, 1))
        s.remove_paths(["/p/a"])
        s._dirty = False  # simulate the crash: no checkpoint written at close
    for _, p in VectorIndex.checkpoints(tmp_path):
        p.unlink()
    (tmp_path / stale_path.name).write_bytes(stale)
    with backend(tmp_path, sync=False) as s:
        report = s.verify()  # behind, not broken: every open brings it up to date
        assert report.behind and report.ok and report.missing_from_faiss and report.extra_in_faiss
    with backend(tmp_path) as s:
        assert s.vectors.ntotal == 3  # reconciled in memory for readers
        # (readers of a shared catalogue also save it as this machine's checkpoint)
        assert s.verify().behind != s.location.shared
    with backend(tmp_path, writable=True) as s:
        assert s.verify().ok and not s.verify().behind  # writer saved the reconciled checkpoint


def test_repair_rebuilds_a_corrupted_checkpoint(tmp_path, backend):
    with backend(tmp_path, model=_info(), writable=True) as s:
        ids = s.add(_files("abc"), _vecs(3))
    ((_, path),) = VectorIndex.checkpoints(tmp_path)
    ckpt = VectorIndex.load(tmp_path, DIM)
    ckpt.remove([ids[0]])
    ckpt.add(np.array([ids[0]]), _vecs(1, 9))  # wrong vector under a right id
    ckpt.save(tmp_path, ckpt.generation + 1, path.stem.split("-")[2])
    with backend(tmp_path, writable=True, sync=False) as s:
        report = s.verify()
        assert report.mismatched_vectors == [ids[0]]
        s.repair()
        assert s.verify().ok and s.vectors.ntotal == 2


def test_refuses_other_model(tmp_path, backend):
    with backend(tmp_path, model=_info(), writable=True):
        pass
    with pytest.raises(StoreError, match="cannot be compared"):
        backend(tmp_path, model=_info("model-b", dim=16), writable=True)


def test_missing_index_and_single_writer(tmp_path, backend):
    with pytest.raises(StoreError, match="no index"):
        backend(tmp_path / "none")
    with backend(tmp_path, model=_info(), writable=True):
        with pytest.raises(StoreError, match="another lookalike process"):
            backend(tmp_path, writable=True)
        backend(tmp_path).close()  # readers are fine meanwhile


def test_errors_view_and_labels(tmp_path, backend):
    with backend(tmp_path, model=_info(), writable=True) as s:
        bad = ImageFile("/p/bad.jpg", 4, 1, "h", error="not a recognised image format")
        s.record_errors([bad])
        ids = s.add(_files("ab"), _vecs(2), labels=[[(1, "tabby cat", 0.9)], [(2, "dog", 0.8)]])
        assert s.catalogue.errors() == [("/p/bad.jpg", "not a recognised image format")]
        assert list(s.catalogue.ids_with_label("CAT")) == [ids[0]]
        assert s.catalogue.rows([ids[0]])[ids[0]].labels == [("tabby cat", 0.9)]
        from sqlalchemy import text

        with s.engine.connect() as c:
            assert c.execute(text("SELECT path, reason FROM errors")).all() == [
                ("/p/bad.jpg", "not a recognised image format")
            ]


def test_a_sqlite_catalogue_elsewhere_is_remembered_and_checked(tmp_path):

    elsewhere = f"sqlite:///{tmp_path / 'shared.sqlite'}"
    with Store(tmp_path / "a", model=_info(), writable=True, db=elsewhere) as s:
        s.add(_files("pq"), _vecs(2))
    assert not (tmp_path / "a" / "catalog.sqlite").exists()
    with Store(tmp_path / "a") as s:  # the folder remembers where its catalogue is
        assert s.vectors.ntotal == 2
    with Store(tmp_path / "own", model=_info(), writable=True):
        pass
    with pytest.raises(StoreError, match=r"keeps its catalogue in catalog\.sqlite, not sqlite"):
        Store(tmp_path / "own", db=elsewhere)  # its checkpoint would pair the wrong ids
    missing = tmp_path / "missing.sqlite"
    with pytest.raises(StoreError, match="no index at"):
        Store(tmp_path / "b", db=f"sqlite:///{missing}")
    assert not missing.exists()


def test_a_sqlite_catalogue_elsewhere_is_locked_and_absolute(tmp_path, monkeypatch):

    monkeypatch.chdir(tmp_path)
    with Store(tmp_path / "a", model=_info(), writable=True, db="sqlite:///rel/../cat.sqlite") as s:
        s.add(_files("p"), _vecs(1))
        with pytest.raises(StoreError, match=r"cat\.sqlite is being written by another lookalike process"):
            Store(tmp_path / "b", model=_info(), writable=True, db=f"sqlite:///{tmp_path / 'cat.sqlite'}")
    monkeypatch.chdir(tmp_path / "a")  # the folder remembers the file, not the words typed
    with Store(tmp_path / "a") as s:
        assert s.manifest.database == f"sqlite:///{tmp_path / 'cat.sqlite'}" and s.vectors.ntotal == 1
    with pytest.raises(StoreError, match="needs a file path"):
        Store(tmp_path / "c", model=_info(), writable=True, db="sqlite://")


def test_checkpoints_of_older_versions_are_used_only_by_their_catalogue(tmp_path):
    from sqlalchemy import delete

    from lookalike.storage.schema import Meta

    def untag(folder):  # as an older version left it: no catalogue id, untagged checkpoint
        with Store(folder, writable=True, sync=False) as s, s.engine.begin() as conn:
            conn.execute(delete(Meta).where(Meta.key.in_(["catalogue", "untagged_checkpoints"])))
        ((_, path),) = VectorIndex.checkpoints(folder)
        path.rename(folder / f"vectors-{path.stem.split('-')[1]}.faiss")

    with Store(tmp_path, model=_info(), writable=True) as s:
        s.add(_files("ab"), _vecs(2))
    untag(tmp_path)
    with Store(tmp_path) as s:  # an old catalogue: its untagged checkpoint is its own
        assert s.catalogue_id is None and s.vectors.ntotal == 2 and s.verify().ok
    with Store(tmp_path, writable=True) as s:  # upgraded: an id, and untagged ones still accepted
        assert s.catalogue_id and s.vectors.ntotal == 2
        s.add(_files("c"), _vecs(1, 3))
    ((_, path),) = VectorIndex.checkpoints(tmp_path)
    assert path.stem.count("-") == 2  # the next checkpoint carries the id
    untag(tmp_path)
    for f in tmp_path.glob("catalog.sqlite*"):
        f.unlink()  # the catalogue is made anew: the old checkpoint is not its own
    with Store(tmp_path, model=_info(), writable=True) as s:
        assert s.vectors.ntotal == 0
        s.add(_files("c"), _vecs(1, 5))
    with Store(tmp_path) as s:
        assert s.vectors.ntotal == 1 and s.verify().ok


def test_known_under_many_roots(tmp_path, backend):
    """Indexing a long list of files names each as a root: one query per hundred roots
    (SQLite refuses a condition nested 1000 deep)."""
    with backend(tmp_path, model=_info(), writable=True) as s:
        s.add(_files("abc"), _vecs(3))
        roots = [f"/p/{n}" for n in "abc"] + [f"/elsewhere/{i}.jpg" for i in range(1500)]
        assert sorted(s.catalogue.known(under=roots)) == ["/p/a", "/p/b", "/p/c"]


def test_equal_scores_come_in_path_order_whatever_the_indexing_order(tmp_path, backend):
    """Copies with the same vector (the same bytes) tie: their order is by path, not by the
    order files reached the index (a parallel or Ray run adds them in any order)."""
    from lookalike.search.neighbours import search_vectors

    v = _vecs(3)
    same = np.stack([v[0], v[0], v[0]])
    for n, names in enumerate(("cab", "bca")):
        with backend(tmp_path / str(n), model=_info(), writable=True) as s:
            s.add(_files(names), same)
            s.add(_files("z"), v[1:2])
            hits = search_vectors(s, v[:1], k=4)[0]
        assert [h.path for h in hits[:3]] == ["/p/a", "/p/b", "/p/c"]


def test_folder_size_counts_around_files_renamed_away_meanwhile(tmp_path):
    """A writer's temporaries come and go while `info` adds up the index folder's size."""
    from lookalike.fsutil import folder_size

    (tmp_path / "kept.bin").write_bytes(b"x" * 1000)
    stop = threading.Event()

    def churn() -> None:
        for i in itertools.count():
            if stop.is_set():
                return
            temporary = tmp_path / f".tmp-{i % 50}"
            temporary.write_bytes(b"y")
            temporary.unlink()

    writer = threading.Thread(target=churn)
    writer.start()
    try:
        sizes = {folder_size(tmp_path) for _ in range(3000)}
    finally:
        stop.set()
        writer.join()
    assert sizes <= {1000, 1001} and folder_size(tmp_path / "missing") == 0


def test_an_index_on_read_only_media_is_searched_not_changed(read_only_mount):
    source, mount = read_only_mount
    with Store(source, model=_info(), writable=True) as s:
        v = _vecs(4)
        s.add(_files("abcd"), v)
    view = mount()
    with Store(view) as s:  # WAL catalogue: read as it stands, no -shm file made
        assert s.vectors.ntotal == 4 and s.stats()["files"] == 4
        _, found = s.search(v[1:2], 1)
        assert s.catalogue.rows([int(found[0][0])])[int(found[0][0])].path == "/p/b"
    with pytest.raises(ReadOnlyIndex, match="read-only media: it can be searched, not changed"):
        Store(view, writable=True)
    assert sorted(p.name for p in view.iterdir()) == sorted(p.name for p in source.iterdir())


def test_an_index_folder_the_user_may_not_write_is_searched(tmp_path):
    """An index shared read-only by its owner (`chmod a-w`): SQLite could not make the
    shared-memory file a WAL reader needs, and `info`, `search` and `dupes` all failed
    ("attempt to write a readonly database"). It is read as unchanging, as on read-only
    media; an index with unsaved changes beside it is still refused."""
    folder = tmp_path / "ix"
    with Store(folder, model=_info(), writable=True) as s:
        s.add(_files("abcd"), _vecs(4))
    read = (
        "from lookalike.storage import Store; s = Store(__import__('sys').argv[1]); print(s.stats()['files'])"
    )
    files = sorted(p.name for p in folder.iterdir())
    folder.chmod(0o555)
    try:
        out = subprocess.run(
            as_owner([sys.executable, "-c", read, str(folder)]), capture_output=True, text=True
        )
        assert out.returncode == 0 and out.stdout.strip() == "4", out.stderr
        assert sorted(p.name for p in folder.iterdir()) == files
        folder.chmod(0o755)
        (folder / "catalog.sqlite-wal").write_bytes(b"\0" * 32)  # a writer's changes not in the file yet
        folder.chmod(0o555)
        out = subprocess.run(
            as_owner([sys.executable, "-c", read, str(folder)]), capture_output=True, text=True
        )
        assert out.returncode != 0 and "unsaved changes beside it" in out.stderr, out.stderr
    finally:
        folder.chmod(0o755)


def test_an_index_copied_mid_write_to_read_only_media_is_refused(read_only_mount):
    source, mount = read_only_mount
    with Store(source, model=_info(), writable=True) as s:
        s.add(_files("ab"), _vecs(2))
    (source / "catalog.sqlite-wal").write_bytes(b"\0" * 32)  # changes not yet in the file
    with pytest.raises(CatalogueUnavailable, match="unsaved changes beside it"):
        Store(mount())


def test_the_error_that_ended_a_write_is_the_one_told_not_the_checkpoint_after_it(tmp_path, monkeypatch):
    """A disk that fills up: the catalogue's write fails first, then closing tries a
    checkpoint, which fails on the full disk too and replaced the first error ("cannot
    write the vector checkpoint" instead of "the disk is full", which says what was
    committed)."""
    from lookalike.storage import vectors as vectors_mod

    def full(*args, **kwargs):
        raise StoreError("cannot write the vector checkpoint: No space left on device")

    with (
        pytest.raises(StoreError, match="the disk is full"),
        Store(tmp_path / "ix", model=_info(), writable=True) as s,
    ):
        s.add(_files("ab"), _vecs(2))
        monkeypatch.setattr(vectors_mod.VectorIndex, "save", full)
        raise StoreError("the disk is full: 2 images committed")
    monkeypatch.undo()
    with Store(tmp_path / "ix") as s:
        assert s.stats()["files"] == 2
