"""What the command line prints: tables and reports from results, paths printed as they are."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console

from lookalike import render, units
from lookalike.search.duplicates import Duplicate, Group
from lookalike.search.neighbours import Hit
from lookalike.storage.catalogue import FileRow


def _text(renderable) -> str:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(renderable)
    return console.file.getvalue()


def _row(path: str) -> FileRow:
    row = FileRow.__new__(FileRow)
    row.path = path
    return row


def test_search_table_prints_paths_as_they_are():
    from lookalike.api import QueryResult

    hits = [Hit(1, "/p/photo [red].jpg", 1.0, probability=0.9991), Hit(2, "/p/b.jpg", 0.8123)]
    text = _text(render.search_table(QueryResult("/q/[bold]q.jpg", hits)))
    assert "/q/[bold]q.jpg" in text and "/p/photo [red].jpg" in text
    assert "p(same)" in text and "0.999" in text and "0.8123" in text
    assert "(no results)" in _text(render.search_table(QueryResult("q", [])))
    long = "/q/" + "a_long_folder_name/" * 8 + "query.jpg"  # wider than the table: not wrapped to it
    assert long in _text(render.search_table(QueryResult(long, []))).splitlines()
    assert "alone" not in text  # no score was lowered by a closer hit
    hits.append(Hit(3, "/p/sibling.jpg", 0.1234, probability=0.2, similarity=0.7654))
    text = _text(render.search_table(QueryResult("q", hits)))
    assert "alone" in text and "0.1234" in text and "0.7654" in text
    names = [("tench, Tinca tinca", 0.8), ("goldfish, Carassius auratus", 0.1), ("snoek", 0.1), ("eel", 0)]
    text = _text(render.search_table(QueryResult("q", [Hit(4, "/p/fish.jpg", 0.9, labels=names)])))
    assert "tench, Tinca tinca; goldfish, Carassius auratus; snoek" in text  # a name's own commas


def test_scores_under_minus_one_are_shown_as_minus_one():
    """A learned space less the pixel gap can score far pictures under -1: the table and
    the JSON show -1, as the README says and as --threshold can reach."""
    from lookalike.api import QueryResult

    hit = Hit(1, "/p/far.jpg", -2.0517, similarity=-1.5)
    assert hit.to_dict()["score"] == -1.0 and hit.to_dict()["similarity"] == -1.0
    text = _text(render.search_table(QueryResult("q", [hit])))
    assert "-1.0000" in text and "-2.05" not in text and "-1.5" not in text


def test_dupes_outputs():
    via_b = Duplicate(_row("/c.jpg"), 0.86, "near", "similar", "/b.jpg")  # in the group through b
    dups = [Duplicate(_row("/b.jpg"), 0.97, "near"), via_b]
    group = Group(_row("/a [x].jpg"), dups, ["larger file", "larger file"])
    doc = json.loads(render.dupes_json([group]))
    assert doc["groups"][0]["keep"] == "/a [x].jpg" and doc["groups"][0]["duplicates"][0]["path"] == "/b.jpg"
    buf = io.StringIO()
    render.write_dupes_csv([group], buf)
    assert buf.getvalue().splitlines()[1:] == [
        "1,keep,/a [x].jpg,,,,,",
        "1,duplicate,/b.jpg,0.970000,near,copy,larger file,",
        "1,duplicate,/c.jpg,0.860000,near,similar,larger file,/b.jpg",
    ]
    text = "".join(_text(line) for line in render.dupes_lines([group], "preset copies (0.9)"))
    assert "keep /a [x].jpg" in text and "copy       0.9700  /b.jpg  (larger file)" in text
    assert "similar    0.8600  /c.jpg  (larger file; in the group through /b.jpg)" in text
    doc = json.loads(render.dupes_json([group], lambda p: "rel" + p))
    assert doc["groups"][0]["duplicates"][1]["via"] == "rel/b.jpg"  # as the paths are shown
    assert "1 group, 2 duplicates; preset copies (0.9); nothing was changed" in text


def test_info_table_and_verify_lines():
    text = _text(render.info_table({"files": 3, "size_bytes": 2_500_000}))
    assert "files" in text and "size on disk" in text and "2.5 MB" in text
    learning = {"learned_on": 1204, "calibrated_on": None, "calibration_refused": "too few copies"}
    text = _text(render.info_table(learning))
    assert "whitening, from 1,204 photos" in text and "lookalike calibrate" in text
    assert "calibration refused  too few copies" in text
    assert "refused" not in _text(render.info_table({**learning, "calibration_refused": None}))
    model = "/models/mobilenet_v1_025_128_classification_quant.tflite"
    narrow = Console(file=io.StringIO(), width=40, color_system=None)
    narrow.print(render.info_table({"model": model, "model_identity": "cb273c23" * 8}))
    folded = "".join(line.strip() for line in narrow.file.getvalue().splitlines())
    assert model in folded and "cb273c23" * 8 in folded  # not cut at "…" on a narrow terminal
    from lookalike.storage import VerifyReport

    report = VerifyReport(4, 3, list(range(12)), [], [], [], [], [])
    lines = render.verify_lines(report)
    assert lines[0] == "catalogue generation 4, FAISS checkpoint generation 3"
    assert lines[1:] == ["  rows without vector: 12 (ids 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 ...)"]


def test_counts_are_singular_for_one():
    assert [render.count(n, "file") for n in (0, 1, 1204)] == ["0 files", "1 file", "1204 files"]
    from lookalike.indexer import IndexReport

    one = render.index_summary(IndexReport(indexed=1, seconds=1.0), Path("/ix"))
    assert one.startswith("indexed 1 image in 1.0 s")
    failed = render.index_summary(IndexReport(errors=1, seconds=1.0), Path("/ix"))
    assert "0 reused, 1 error, 0 removed" in failed  # not "1 errors"


def test_models_show_whole_names_and_drop_handles_that_do_not_fit():
    from lookalike.models import DEFAULT_MODEL, KNOWN_MODELS

    def shown(width: int) -> str:
        console = Console(file=io.StringIO(), width=width, color_system=None)
        console.print(render.models_output(KNOWN_MODELS.values(), DEFAULT_MODEL, console))
        return console.file.getvalue()

    narrow, wide = shown(80), shown(200)
    assert all(name in narrow and name in wide for name in KNOWN_MODELS)
    assert "tfhub.dev" not in narrow and "lookalike models --json" in narrow
    assert all(e.handle in wide for e in KNOWN_MODELS.values()) and "--json" not in wide


def test_units_never_round_a_nonzero_amount_to_zero():
    assert [units.megapixels(*wh) for wh in ((500, 375), (3000, 2000), (14000, 12800), (100, 100))] == [
        "0.188 MP",
        "6 MP",
        "179 MP",
        "0.01 MP",
    ]
    assert [units.megapixels(1, 1), units.megapixels(20, 20)] == ["1 pixel", "400 pixels"]  # not "1e-06 MP"
    sizes = [512, 1600, 3 * 2**20 // 2, 150 * 2**30, 2**43, 100.4 * 2**20]
    assert [units.memory(n) for n in sizes] == [
        "512 bytes",
        "1.56 KiB",
        "1.5 MiB",
        "150 GiB",
        "8 TiB",
        "100 MiB",
    ]
    # "need at least": rounded up, so that the amount shown is enough for --max-memory
    assert [units.memory(n, at_least=True) for n in (1600, 1.2345 * 2**30, 100.4 * 2**20, 2**43)] == [
        "1.57 KiB",
        "1.24 GiB",
        "101 MiB",
        "8 TiB",
    ]
