"""The long-lived Index: one read snapshot for many calls, refreshed when the catalogue moves."""

from __future__ import annotations

import os
import threading

import pytest

from lookalike import Index, IndexOptions
from lookalike.errors import CalibrationError, InvalidArgument
from lookalike.models import ModelError
from lookalike.search import Filters
from lookalike.storage import Store
from tests import model_factory
from tests.conftest import make_photo


def test_an_open_index_keeps_a_snapshot_until_the_catalogue_moves(index, tmp_path, monkeypatch):
    more = tmp_path / "more"
    more.mkdir()
    make_photo(300).save(more / "new.jpg")
    closed: list[Store] = []
    close = Store.close
    monkeypatch.setattr(Store, "close", lambda self: (closed.append(self), close(self))[1])
    with Index(index).open(refresh_interval_s=3600) as idx:
        assert idx.is_open and idx.info()["files"] == 8
        first = idx.search([more / "new.jpg"], k=1)[0].hits[0]
        assert first.path != str(more / "new.jpg") and not idx.refresh()  # nothing moved
        Index(index).add([more], options=IndexOptions(workers=0))  # another writer
        assert idx.search([more / "new.jpg"], k=1)[0].hits[0].path == first.path  # not due yet
        before = len(closed)
        assert idx.refresh()  # the catalogue's generation moved: a fresh snapshot
        assert len(closed) == before + 1 and not closed[-1].writable  # the old one let go
        assert idx.search([more / "new.jpg"], k=1)[0].hits[0].path == str(more / "new.jpg")
        assert idx.info()["files"] == 9
    assert not idx.is_open
    assert idx.search([more / "new.jpg"], k=1)[0].hits[0].path == str(more / "new.jpg")  # one-shot again


def test_writes_through_an_open_index_are_seen_by_its_next_read(index, photo_dir):
    with Index(index) as idx:  # refresh_interval_s=0: checked on every read
        assert idx.remove([photo_dir / "sub"]) == 4
        hits = idx.search([photo_dir / "sub" / "photo1.jpg"], k=8)[0].hits
        assert len(hits) == 4 and all("/sub/" not in h.path for h in hits)
        assert idx.file(hits[0].id).path == hits[0].path
        assert idx.file_at(photo_dir / "sub" / "photo1.jpg") is None
        assert idx.file_at(photo_dir / "photo0.jpg").ok


def test_concurrent_searches_while_the_snapshot_is_replaced(index, tmp_path):
    more = tmp_path / "more"
    more.mkdir()
    for i in range(12):
        make_photo(400 + i, (160, 120)).save(more / f"m{i}.jpg")
    query = (more / "m11.jpg").read_bytes()
    failures: list[BaseException] = []
    with Index(index) as idx:
        idx.model()

        def searcher() -> None:
            try:
                for _ in range(15):
                    (result,) = idx.search([query], k=3)
                    assert result.error is None and len(result.hits) == 3
            except BaseException as exc:  # reported by the main thread
                failures.append(exc)

        threads = [threading.Thread(target=searcher) for _ in range(4)]
        for t in threads:
            t.start()
        Index(index).add([more], options=IndexOptions(workers=0, batch_size=3))
        for t in threads:
            t.join()
        assert failures == []
        assert idx.search([query], k=1)[0].hits[0].path == str(more / "m11.jpg")


def test_search_arguments_are_checked(index, photo_dir, tmp_path):
    idx = Index(index)
    query = [photo_dir / "photo0.jpg"]
    with pytest.raises(InvalidArgument, match="threshold"):
        idx.search(query, threshold=1.5)
    with pytest.raises(InvalidArgument, match="min_probability"):
        idx.search(query, min_probability=-0.1)
    with pytest.raises(CalibrationError, match="no score calibration"):
        idx.search(query, min_probability=0.5)
    (result,) = idx.search(query, k=8, filters=Filters(under=[str(photo_dir / "sub")]), threshold=-1.0)
    assert len(result.hits) == 4 and all(h.probability is None for h in result.hits)
    os.symlink(photo_dir / "sub", tmp_path / "sub-link")  # the folder named by a link of the user's
    (linked,) = idx.search(query, k=8, filters=Filters(under=[str(tmp_path / "sub-link")]), threshold=-1.0)
    assert [h.path for h in linked.hits] == [h.path for h in result.hits]
    (as_path,) = idx.search(query, k=8, filters=Filters(under=[photo_dir / "sub"]), threshold=-1.0)
    assert [h.path for h in as_path.hits] == [h.path for h in result.hits]  # a Path, as before
    bad = idx.search([b"not an image"])[0]
    assert bad.hits == [] and bad.error and bad.problem.http_status == 415
    assert bad.to_dict() == {"query": "<bytes>", "results": [], "error": bad.error}


def test_queries_decoded_together_keep_their_order_and_their_own_errors(index, photo_dir, tmp_path):
    """Several queries are decoded in parallel: each result is still its own query's."""
    photos = sorted(photo_dir.glob("photo*.jpg"))[:3]
    queries = [photos[0], b"not an image", photos[1], tmp_path / "gone.jpg", photos[2].read_bytes()]
    results = Index(index).search(queries, k=1)
    assert [r.query for r in results] == [
        str(photos[0]),
        "<bytes>",
        str(photos[1]),
        str(tmp_path / "gone.jpg"),
        "<bytes>",
    ]
    assert [r.hits[0].path for r in results if r.error is None] == [str(p) for p in photos]
    assert "not a recognised image" in results[1].error and "cannot read" in results[3].error


def test_a_model_moved_elsewhere_is_found_there_once_indexed_with_it(tmp_path, photo_dir):
    """The index remembers where its model is; after the folder moved, loading fails with
    how to tell it, and one `index` run with --model at the new place does."""
    model = model_factory.make_tf2_saved_model(tmp_path / "model")
    index = Index(tmp_path / "ix")
    index.add([photo_dir], model=str(model), options=IndexOptions(workers=0), calibrate=False)
    moved = model.rename(tmp_path / "moved-model")
    with pytest.raises(ModelError, match="if it moved, run `lookalike index`"):
        Index(tmp_path / "ix").search([photo_dir / "photo0.jpg"], k=1)
    report = Index(tmp_path / "ix").add([photo_dir], model=str(moved), options=IndexOptions(workers=0))
    assert report.indexed == 0 and report.unchanged == 8
    assert Index(tmp_path / "ix").manifest().model.source == str(moved)
    (result,) = Index(tmp_path / "ix").search([photo_dir / "photo0.jpg"], k=1)
    assert result.hits[0].path == str(photo_dir / "photo0.jpg")
