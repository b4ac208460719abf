"""Incremental indexing: touched, moved, copied, swapped, changed and deleted files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lookalike import Index, IndexOptions
from lookalike.storage import Store
from tests.conftest import as_owner, make_photo

OPTS = IndexOptions(workers=0)


@pytest.fixture
def idx(tmp_path, photo_dir, tf2_model):
    index = Index(tmp_path / "ix")
    report = index.add([photo_dir], model=str(tf2_model), options=OPTS)
    assert report.indexed == 8
    return index


def _rows(index) -> dict[str, int]:
    with Store(index.directory) as s:
        return {p: k.id for p, k in s.catalogue.known().items()}


def _vector(index, path) -> np.ndarray:
    with Store(index.directory) as s:
        return s.vectors.reconstruct(s.catalogue.known()[str(path)].id)


def test_touched_file_keeps_its_row_without_re_embedding(idx, photo_dir):
    before = _rows(idx)
    os.utime(photo_dir / "photo0.jpg", ns=(10**18, 10**18))
    report = idx.add([photo_dir], options=OPTS)
    assert (report.indexed, report.reused, report.unchanged) == (0, 1, 7)
    assert _rows(idx) == before
    with Store(idx.directory) as s:
        assert s.catalogue.known()[str(photo_dir / "photo0.jpg")].mtime_ns == 10**18


def test_moved_and_renamed_files_keep_id_and_vector(idx, photo_dir):
    before = _rows(idx)
    old_vec = _vector(idx, photo_dir / "photo0.jpg")
    (photo_dir / "moved").mkdir()
    shutil.move(photo_dir / "photo0.jpg", photo_dir / "moved" / "renamed.jpg")
    report = idx.add([photo_dir], options=OPTS)
    assert (report.indexed, report.reused, report.removed) == (0, 1, 0)
    after = _rows(idx)
    assert after[str(photo_dir / "moved" / "renamed.jpg")] == before[str(photo_dir / "photo0.jpg")]
    assert str(photo_dir / "photo0.jpg") not in after and len(after) == 8
    np.testing.assert_array_equal(_vector(idx, photo_dir / "moved" / "renamed.jpg"), old_vec)
    with Store(idx.directory) as s:
        assert s.verify().ok


def test_rows_made_through_a_link_to_a_folder_go_once_the_walk_finds_its_own_path(idx, photo_dir):
    """Before the walk followed links last, a link named before its folder took the
    folder's files: an index made then holds them under the link's path. Now found under
    the folder's own path, those rows are dropped, not kept beside the new ones."""
    os.symlink(photo_dir / "sub", photo_dir / "0link")
    idx.add([photo_dir / "0link"], options=OPTS)  # rows under the link's path, as then
    linked = sorted(p for p in _rows(idx) if "/0link/" in p)
    assert len(linked) == 4
    report = idx.add([photo_dir], options=OPTS)
    assert report.removed == 4 and not any("/0link/" in p for p in _rows(idx)) and len(_rows(idx)) == 8


def test_copy_gets_a_new_row_with_the_same_vector(idx, photo_dir):
    shutil.copy(photo_dir / "photo2.jpg", photo_dir / "dup.jpg")
    report = idx.add([photo_dir], options=OPTS)
    assert (report.indexed, report.reused) == (0, 1)
    np.testing.assert_array_equal(_vector(idx, photo_dir / "dup.jpg"), _vector(idx, photo_dir / "photo2.jpg"))
    assert len(_rows(idx)) == 9


def test_swapped_contents_get_the_right_vectors(idx, photo_dir):
    a, b = photo_dir / "photo0.jpg", photo_dir / "photo2.jpg"
    va, vb = _vector(idx, a), _vector(idx, b)
    tmp = photo_dir / "swap.tmp"
    os.rename(a, tmp)
    os.rename(b, a)
    os.rename(tmp, b)
    os.utime(a, ns=(5 * 10**17, 5 * 10**17))  # renames keep mtimes: make both look changed
    os.utime(b, ns=(6 * 10**17, 6 * 10**17))
    idx.add([photo_dir], options=OPTS)
    np.testing.assert_allclose(_vector(idx, a), vb, atol=1e-6)
    np.testing.assert_allclose(_vector(idx, b), va, atol=1e-6)
    with Store(idx.directory) as s:
        assert s.verify().ok and s.vectors.ntotal == 8


def test_changed_and_deleted_files(idx, photo_dir):
    before = _rows(idx)
    make_photo(99).save(photo_dir / "photo4.jpg")
    os.utime(photo_dir / "photo4.jpg", ns=(1, 1))
    (photo_dir / "photo6.jpg").unlink()
    make_photo(98).save(photo_dir / "brand_new.jpg")
    report = idx.add([photo_dir], options=OPTS)
    assert (report.indexed, report.reused, report.removed) == (2, 0, 1)
    after = _rows(idx)
    assert after[str(photo_dir / "photo4.jpg")] != before[str(photo_dir / "photo4.jpg")]
    assert str(photo_dir / "photo6.jpg") not in after and len(after) == 8
    hit = idx.search([photo_dir / "photo4.jpg"], k=1)[0].hits[0]
    assert hit.path == str(photo_dir / "photo4.jpg") and hit.score == pytest.approx(1.0, abs=1e-5)


def test_indexing_a_subfolder_does_not_remove_the_rest(idx, photo_dir):
    report = idx.add([photo_dir / "sub"], options=OPTS)
    assert report.removed == 0 and len(_rows(idx)) == 8


def test_a_root_folder_found_empty_keeps_its_photos(idx, photo_dir, tmp_path):
    """An unmounted drive leaves its mount point an empty folder: its photos are kept."""
    before = _rows(idx)
    shutil.move(photo_dir, tmp_path / "unplugged")
    photo_dir.mkdir()
    report = idx.add([photo_dir], options=OPTS)
    assert report.offline == [(str(photo_dir), 8)] and report.removed == 0 and _rows(idx) == before
    (photo_dir / "notes.txt").write_text("not an image")  # a folder holding anything is believed
    report = idx.add([photo_dir], options=OPTS)
    assert report.offline == [] and report.removed == 8 and _rows(idx) == {}


def test_copy_of_a_file_that_changed_in_the_same_run(idx, photo_dir):
    """a_dup.jpg copies photo0's old bytes while photo0 itself changes: no double work."""
    old_vec = _vector(idx, photo_dir / "photo0.jpg")
    shutil.copy2(photo_dir / "photo0.jpg", photo_dir / "a_dup.jpg")
    make_photo(321).save(photo_dir / "photo0.jpg")
    os.utime(photo_dir / "photo0.jpg", ns=(3, 3))
    report = idx.add([photo_dir], options=OPTS)
    assert (report.indexed, report.reused, report.errors) == (1, 1, 0)
    np.testing.assert_array_equal(_vector(idx, photo_dir / "a_dup.jpg"), old_vec)
    with Store(idx.directory) as s:
        assert s.verify().ok and s.vectors.ntotal == 9


def test_a_file_given_directly_is_skipped_when_unchanged(idx, photo_dir):
    report = idx.add([photo_dir / "photo0.jpg"], options=OPTS)
    assert (report.indexed, report.reused, report.unchanged, report.removed) == (0, 0, 1, 0)
    assert len(_rows(idx)) == 8


def test_a_file_replaced_by_a_folder_leaves_the_index(idx, photo_dir):
    path = photo_dir / "photo0.jpg"
    path.unlink()
    path.mkdir()
    report = idx.add([photo_dir], options=OPTS)
    assert report.removed == 1 and str(path) not in _rows(idx)
    with Store(idx.directory) as s:
        assert s.verify().ok


def test_files_of_a_folder_that_lost_its_execute_bit_stay_indexed(idx, photo_dir):
    """`chmod 644` on a folder: its names can be listed, their details not. What is below
    it is unknown, not gone: the rows stay, the folder is reported, and once readable
    again nothing is embedded anew."""
    before = _rows(idx)
    sub = photo_dir / "sub"
    cli = str(Path(sys.executable).with_name("lookalike"))
    index = [cli, "index", str(photo_dir), "--index", str(idx.directory)]
    sub.chmod(0o644)
    try:
        res = subprocess.run(as_owner(index), capture_output=True, text=True, timeout=300)
    finally:
        sub.chmod(0o755)
    assert res.returncode == 0, res.stderr
    said = res.stdout + res.stderr
    assert "0 removed" in said and "cannot read the files in folder" in said, said
    assert _rows(idx).items() >= before.items()
    with Store(idx.directory) as s:
        assert [path for path, _ in s.catalogue.errors()] == [str(sub)]
    report = idx.add([photo_dir], options=OPTS)
    assert (report.indexed, report.reused, report.removed) == (0, 0, 1)  # the folder's error row
    assert _rows(idx) == before


def test_the_index_s_own_folder_inside_the_photos_is_never_indexed(tmp_path, photo_dir, tf2_model):
    """An index kept among the photos it indexes: its catalogue, vectors, journals and a
    report's thumbnails are not photos of the collection, whatever --include says."""
    index = Index(photo_dir / "lookalike-index")
    report = index.add([photo_dir], model=str(tf2_model), options=IndexOptions(workers=0, include=["*"]))
    assert report.indexed == 8 and report.errors == 0
    (index.directory / "journals").mkdir()
    make_photo(99).save(index.directory / "journals" / "thumb.jpg")  # an image in there too
    linked = photo_dir / "sub" / "to-index"
    linked.symlink_to(index.directory)  # reached through a link: the same folder
    for include in (["*"], []):
        report = index.add([photo_dir], options=IndexOptions(workers=0, include=include))
        assert report.indexed == 0 and report.errors == 0 and report.unchanged == 8
    assert all("lookalike-index" not in p for p in _rows(index))
