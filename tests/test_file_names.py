"""File names that are not UTF-8 (old drives, archives): stored losslessly, found again."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lookalike import Index, IndexOptions
from lookalike.images import DecodedImage, ImageFile
from lookalike.models.runtimes import ModelInfo
from lookalike.storage.catalogue import stored, unstored
from tests.conftest import make_photo

LATIN1 = os.fsdecode(b"caf\xe9.jpg")  # 'caf\udce9.jpg': the byte 0xe9 is not UTF-8 here


@given(st.binary(min_size=1, max_size=40))
def test_stored_form_is_one_to_one_and_keeps_prefixes(raw):
    path = os.fsdecode(raw) + "\uffff/x"  # the escape character itself must survive too
    text = stored(path)
    assert unstored(text) == path and text.encode("utf-8")  # valid UTF-8, round-trips
    assert stored(path + "/child").startswith(text)


def test_catalogue_keeps_non_utf8_paths(tmp_path, backend):
    info = ModelInfo("test-model", "model-a", (32, 32), 4, (0.0, 1.0), False, "tf")
    img = DecodedImage(np.zeros((32, 32, 3), np.uint8), 32, 32, "JPEG")
    folder = "/p/" + os.fsdecode(b"Fotos-\xe4")
    paths = [f"{folder}/{LATIN1}", f"{folder}/plain.jpg", "/p/other.jpg"]
    vecs = np.eye(4, dtype=np.float32)[:3]
    with backend(tmp_path, model=info, writable=True) as s:
        s.add([ImageFile(p, 1, 1, f"h{n}", image=img) for n, p in enumerate(paths)], vecs)
        bad = folder + "/" + os.fsdecode(b"bad\xff.jpg")
        s.record_errors([ImageFile(bad, 1, 1, error="broken")])
        assert sorted(s.catalogue.known(under=[folder])) == sorted([*paths[:2], bad])
        assert len(s.catalogue.ids_matching(under=[folder])) == 2
        assert {r.path for r in s.catalogue.rows(s.vectors.ids()).values()} == set(paths)
        assert s.remove_paths([paths[0]]) == 1 and paths[0] not in s.catalogue.known()


@pytest.mark.skipif(os.uname().sysname == "Darwin", reason="macOS file systems refuse non-UTF-8 names")
def test_indexing_next_to_a_non_utf8_name_indexes_everything(tmp_path, tf2_model):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(12):
        make_photo(i).save(photos / f"p{i:02d}.jpg")
    odd = os.path.join(os.fsencode(photos), b"caf\xe9.jpg")
    make_photo(99).save(odd, "JPEG")
    idx = Index(tmp_path / "index")
    report = idx.add([photos], model=str(tf2_model), options=IndexOptions(workers=0))
    assert (report.indexed, report.errors) == (13, 0)
    (hits,) = idx.search([odd.decode("utf-8", "surrogateescape")], k=1)
    assert hits.hits[0].path == os.fsdecode(odd) and os.path.exists(hits.hits[0].path)
    os.unlink(odd)
    assert idx.add([photos], options=IndexOptions(workers=0)).removed == 1  # gone files are noticed


def test_odd_names_print_on_one_line_of_the_table_with_their_control_characters_shown(tmp_path, tf2_model):
    """A newline in a name broke a table line (grep found half of it), an escape coloured the
    terminal or was dropped (`[31mred.jpg`), and non-UTF-8 bytes could not print."""
    from typer.testing import CliRunner

    from lookalike.cli import app

    photos = tmp_path / "photos"
    photos.mkdir()
    names = {"new\nline.jpg": "new\\nline.jpg", "red\x1b[31m.jpg": "red\\x1b[31m.jpg", LATIN1: "caf\\xe9.jpg"}
    for name in names:
        make_photo(5).save(os.path.join(os.fsencode(photos), os.fsencode(name)), "JPEG")
    index = tmp_path / "index"
    Index(index).add([photos], model=str(tf2_model), options=IndexOptions(workers=0))
    query = os.path.join(photos, LATIN1)
    runner = CliRunner()
    for args in (["search", query, "-k", "3"], ["dupes", "--preset", "exact"]):
        res = runner.invoke(app, [*args, "--index", str(index)])
        assert res.exit_code == 0, res.output
        for shown in names.values():
            lines = [x for x in res.stdout.splitlines()[args[0] == "search" :] if shown in x]  # (a title)
            assert len(lines) == 1, res.stdout
            assert str(photos) in lines[0] and "\x1b" not in lines[0]
