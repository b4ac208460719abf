"""End to end through the CLI and the Python API, with tiny generated models."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from typer.testing import CliRunner

from lookalike import Index
from lookalike.cli import app
from lookalike.indexer import walk
from tests.conftest import make_photo

runner = CliRunner()


def run(*args: str, ok: bool = True):
    result = runner.invoke(app, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def indexed(tmp_path, photo_dir, tf2_model):
    index = tmp_path / "index"
    run("index", photo_dir, "--model", tf2_model, "--index", index, "--workers", "2", "-q")
    return index


def test_index_then_search_finds_the_image_first(indexed, photo_dir):
    query = photo_dir / "photo2.jpg"
    res = run("search", query, "-k", "3", "--json", "--index", indexed)
    line = json.loads(res.stdout.strip())
    assert line["query"] == str(query)
    assert line["results"][0]["path"] == str(query)
    assert line["results"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert len(line["results"]) == 3
    scores = [r["score"] for r in line["results"]]
    assert scores == sorted(scores, reverse=True)


def test_resized_copy_is_found_from_outside_the_index(indexed, photo_dir, tmp_path):
    copy = tmp_path / "query.png"
    make_photo(5).resize((160, 120)).save(copy)
    res = run("search", copy, "--json", "--index", indexed)
    assert json.loads(res.stdout)["results"][0]["path"] == str(photo_dir / "sub" / "photo5.jpg")


def test_several_queries_one_json_line_each(indexed, photo_dir):
    res = run("search", photo_dir / "photo0.jpg", photo_dir / "photo4.jpg", "--json", "--index", indexed)
    lines = [json.loads(x) for x in res.stdout.strip().splitlines()]
    assert [x["query"] for x in lines] == [str(photo_dir / "photo0.jpg"), str(photo_dir / "photo4.jpg")]


def test_human_output_and_info(indexed, photo_dir):
    res = run("search", photo_dir / "photo0.jpg", "-k", "2", "--index", indexed)
    assert "1.0000" in res.stdout and "photo0.jpg" in res.stdout
    stats = json.loads(run("info", "--json", "--index", indexed).stdout)
    assert stats["files"] == 8 and stats["errors"] == 0 and stats["dim"] == 32
    assert stats["index_type"] == "Flat" and stats["index_kind"] == "flat" and stats["size_bytes"] > 0
    assert "files" in run("info", "--index", indexed).stdout


def test_piped_tables_end_their_lines_without_padding(indexed, photo_dir):
    for res in (run("info", "--index", indexed), run("search", photo_dir / "photo2.jpg", "--index", indexed)):
        lines = res.stdout.splitlines()
        assert len(lines) > 3 and not [line for line in lines if line.endswith(" ")], res.stdout


def test_incremental_runs(indexed, photo_dir, tf2_model):
    def again():
        res = run("index", photo_dir, "--index", indexed, "--workers", "0", "-q")
        return res.stdout

    assert "indexed 0 images" in again() and "8 unchanged" in again()
    make_photo(40).save(photo_dir / "photo2.jpg")  # changed in place
    os.utime(photo_dir / "photo2.jpg", ns=(1, 1))
    (photo_dir / "sub" / "photo3.jpg").unlink()
    make_photo(41).save(photo_dir / "new.jpg")
    out = again()
    assert "indexed 2 images" in out and "1 removed" in out
    assert Index(indexed).info()["files"] == 8


def test_an_empty_root_folder_is_reported_and_its_photos_kept(indexed, photo_dir, tmp_path):
    shutil.move(photo_dir, tmp_path / "elsewhere")
    photo_dir.mkdir()
    res = run("index", photo_dir, "--index", indexed, "--workers", "0", "-q", ok=False)
    assert res.exit_code == 3 and "0 removed" in res.stdout
    assert f"{photo_dir} is empty now, but 8 indexed photos were below it" in res.stderr
    assert f"lookalike remove {photo_dir}" in res.stderr
    assert Index(indexed).info()["files"] == 8


def test_bad_files_are_recorded_and_skipped(tmp_path, photo_dir, tf2_model):
    (photo_dir / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (photo_dir / "empty.png").write_bytes(b"")
    index = tmp_path / "ix"
    res = run("index", photo_dir, "--model", tf2_model, "--index", index, "--workers", "0", "-q")
    assert "indexed 8 images" in res.stdout and "2 errors" in res.stdout
    out = run("info", "--errors", "--index", index).stdout
    assert "broken.jpg" in out and "empty file" in out
    res = run("index", photo_dir, "--index", index, "--workers", "0", "-q")  # unchanged: not retried
    assert "indexed 0 images" in res.stdout and "0 errors" in res.stdout


def test_labels_from_classification_module(tmp_path, photo_dir, tf1_module, labels_file):
    index = tmp_path / "ix"
    run("index", photo_dir, "--model", tf1_module, "--labels", labels_file, "--index", index, "-q",
        "--workers", "0")  # fmt: skip
    first = Index(index).search([photo_dir / "photo0.jpg"], k=1)[0].hits[0]
    assert len(first.labels) == 5 and all(n.startswith("class ") for n, _ in first.labels)
    label = first.labels[0][0]
    res = run("search", photo_dir / "photo0.jpg", "--label", label, "--json", "--index", index)
    hits = json.loads(res.stdout)["results"]
    assert hits and all(label in h["labels"] for h in hits)
    query = photo_dir / "photo0.jpg"
    res = run("search", query, "--label", "no such label", "--json", "--index", index, ok=False)
    assert json.loads(res.stdout)["results"] == [] and res.exit_code == 3  # 3: nothing found


def test_a_bad_labels_file_is_refused_before_an_index_is_made(tmp_path, photo_dir, tf1_module, labels_file):
    """Labels that cannot be read, or that do not name one class each, fail before the index
    folder exists: nothing is left tied to that model, and the next try starts clean."""
    index = tmp_path / "ix"
    (tmp_path / "empty.txt").write_text("\n")
    short = tmp_path / "short.txt"  # no "background" line: one name short of the model's classes
    short.write_text("\n".join(labels_file.read_text().splitlines()[1:]))
    for bad, why in ((tmp_path / "missing.txt", "cannot read labels"), (tmp_path / "empty.txt", "is empty"),
                     (short, "name 1000 classes, but the model gives 1001")):  # fmt: skip
        res = run("index", photo_dir, "--model", tf1_module, "--labels", bad, "--index", index, ok=False)
        assert res.exit_code == 1 and why in res.stderr and "Traceback" not in res.output, res.output
        assert not index.exists()
    run("index", photo_dir, "--model", tf1_module, "--labels", labels_file, "--index", index, "-q",
        "--workers", "0")  # fmt: skip
    assert Index(index).info()["files"] == 8


def test_labels_for_a_model_without_classes_are_refused_before_an_index_is_made(
    tmp_path, photo_dir, tf2_model, labels_file
):
    index = tmp_path / "ix"
    for given in (labels_file, tmp_path / "missing.txt"):
        res = run("index", photo_dir, "--model", tf2_model, "--labels", given, "--index", index, ok=False)
        assert res.exit_code == 1 and "has none (it gives feature vectors)" in " ".join(res.stderr.split())
        assert not index.exists()


def test_a_relative_labels_path_serves_later_runs_from_anywhere(tmp_path, photo_dir, tf1_module, labels_file,
                                                                 monkeypatch):  # fmt: skip
    """The index records its labels file for later runs: as given, a relative path failed
    ("cannot read labels") in every later `index` or `serve` started from another folder."""
    monkeypatch.chdir(labels_file.parent)
    index = tmp_path / "ix"
    run("index", photo_dir, "--model", tf1_module, "--labels", labels_file.name, "--index", index, "-q",
        "--workers", "0")  # fmt: skip
    monkeypatch.chdir(tmp_path)
    make_photo(77).save(photo_dir / "new.jpg")
    res = run("index", photo_dir, "--index", index, "-q", "--workers", "0")
    assert "indexed 1 image " in res.stdout
    hit = Index(index).search([photo_dir / "new.jpg"], k=1)[0].hits[0]
    assert hit.path.endswith("new.jpg") and len(hit.labels) == 5


def test_other_labels_for_an_index_are_refused_and_a_moved_list_is_followed(tmp_path, photo_dir, tf1_module,
                                                                            labels_file):  # fmt: skip
    """--labels on an existing index labelled its new files from that list and the old ones
    from the first (and the index went on recording the first). A list naming the classes
    otherwise is now refused; the same names from another place are recorded there."""
    index = tmp_path / "ix"
    labels_file = shutil.copy(labels_file, tmp_path / "labels.txt")  # moved below: not the shared one
    run("index", photo_dir, "--model", tf1_module, "--labels", labels_file, "--index", index, "-q",
        "--workers", "0")  # fmt: skip
    names = labels_file.read_text().splitlines()
    other = tmp_path / "other.txt"
    other.write_text("\n".join([*names[:3], "a tabby cat", *names[4:]]))
    make_photo(78).save(photo_dir / "new.jpg")
    res = run("index", photo_dir, "--labels", other, "--index", index, ok=False)
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert f"{other} names class 3 'a tabby cat', not {names[3]!r}" in res.stderr
    assert Index(index).info()["files"] == 8
    moved = tmp_path / "moved.txt"
    labels_file.rename(moved)
    run("index", photo_dir, "--labels", moved, "--index", index, "-q", "--workers", "0")
    assert json.loads((index / "manifest.json").read_text())["labels"] == str(moved)
    assert Index(index).info()["files"] == 9


def test_other_model_is_refused(indexed, photo_dir, tf1_feature_module):
    res = run("index", photo_dir, "--model", tf1_feature_module, "--index", indexed, ok=False)
    assert res.exit_code == 1 and "cannot be compared" in res.output


def test_another_model_that_cannot_be_fetched_says_to_leave_model_out(indexed, photo_dir):
    """Offline, it said only that the download failed, not that the index has its own model."""
    url = "http://127.0.0.1:9/another-model.tar.gz"  # nothing listens there
    res = run("index", photo_dir, "--model", url, "--index", indexed, ok=False)
    said = " ".join(res.stderr.split())
    assert res.exit_code == 1 and url in said and "leave --model out" in said, said


def test_another_input_size_for_an_index_is_refused_not_ignored(indexed, photo_dir, tf2_model):
    for model in ((), ("--model", tf2_model)):  # the index's own model, named or not
        res = run("index", photo_dir, *model, "--input-size", "128", "--index", indexed, ok=False)
        said = " ".join(res.stderr.split())
        assert res.exit_code == 1 and "at 224x224 input; 128x128 input would give vectors" in said, said
        assert "Use another --index, or no --input-size." in said
    res = run("index", photo_dir, "--input-size", "224", "--index", indexed, "-q")  # its own: fine
    assert "8 unchanged" in res.stdout


def test_clear_errors(tmp_path, photo_dir, indexed):
    res = run("search", photo_dir / "photo0.jpg", "--index", tmp_path / "nothing", ok=False)
    assert res.exit_code == 1 and "no index at" in res.output
    res = run("index", tmp_path / "missing", "--index", indexed, ok=False)
    assert res.exit_code == 1 and "no such file or folder" in res.output
    res = run("search", tmp_path / "missing.jpg", "--json", "--index", indexed, ok=False)
    assert res.exit_code == 1 and json.loads(res.stdout)["error"].startswith("cannot read")
    assert res.stderr.startswith(f"error: {tmp_path / 'missing.jpg'}: cannot read")  # as every error
    res = run("search", tmp_path / "missing.jpg", "--index", indexed, ok=False)
    assert res.exit_code == 1 and res.stderr.startswith("error: ") and not res.stdout
    res = run("index", photo_dir, "--model", "nonsense", "--index", tmp_path / "ix2", ok=False)
    assert res.exit_code == 1 and "catalogue name" in res.output


def test_index_dir_from_environment(tmp_path, photo_dir, tf2_model, monkeypatch):
    monkeypatch.setenv("LOOKALIKE_INDEX", str(tmp_path / "envindex"))
    run("index", photo_dir, "--model", tf2_model, "--workers", "0", "-q")
    assert (tmp_path / "envindex" / "manifest.json").exists()


def test_models_command():
    out = run("models", "--json").stdout
    names = {m["name"] for m in json.loads(out)}
    assert "mobilenet_v1_025_128" in names and "mobilenet_v1_100_224_classification" in names


def test_walk_globs_hidden_and_symlink_loops(tmp_path):
    root = tmp_path / "lib"
    (root / "a" / "b").mkdir(parents=True)
    (root / ".hidden").mkdir()
    for rel in ("x.jpg", "a/y.PNG", "a/b/z.webp", ".hidden/h.jpg", "a/notes.txt", "a/b/skip.jpg"):
        (root / rel).write_bytes(b"1")
    os.symlink(root, root / "a" / "b" / "loop")  # a loop back to the top
    os.symlink(root / "a", root / "alias")  # the same folder twice
    found = sorted(os.path.relpath(e.path, root) for e in walk([root], exclude=["skip.jpg"]))
    assert found == ["a/b/z.webp", "a/y.PNG", "x.jpg"]
    assert len(list(walk([root], hidden=True))) == 5
    assert [os.path.basename(e.path) for e in walk([root], include=["*.webp"])] == ["z.webp"]
    assert len(list(walk([root / "x.jpg"]))) == 1


def test_a_folder_reached_by_a_link_and_its_own_path_is_walked_under_its_own(tmp_path):
    """A link named before the folder it leads to (`0link` -> `a/b`), or in a root walked
    first, took the folder's files: `search --under a/b` and `remove a/b` then found none."""
    root, other = tmp_path / "lib", tmp_path / "other"
    (root / "a" / "b").mkdir(parents=True)
    other.mkdir()
    (root / "a" / "b" / "z.jpg").write_bytes(b"1")
    os.symlink(root / "a" / "b", root / "0link")
    os.symlink(root / "a", other / "alias")
    assert [e.path for e in walk([root])] == [str(root / "a" / "b" / "z.jpg")]
    assert [e.path for e in walk([other, root])] == [str(root / "a" / "b" / "z.jpg")]
    (tmp_path / "far").mkdir()
    (tmp_path / "far" / "f.jpg").write_bytes(b"1")
    os.symlink(tmp_path / "far", root / "far")  # reached only by its link: kept under it
    assert str(root / "far" / "f.jpg") in [e.path for e in walk([root])]


def test_python_api(indexed, photo_dir):
    idx = Index(indexed)
    (result,) = idx.search([(photo_dir / "photo6.jpg").read_bytes()], k=2)
    assert result.hits[0].path == str(photo_dir / "photo6.jpg") and result.query == "<bytes>"
    shutil.copy(photo_dir / "photo6.jpg", photo_dir / "copy.jpg")
    report = idx.add([photo_dir])
    assert (report.indexed, report.reused, report.unchanged) == (0, 1, 8)  # a copy: vector reused
    hits = idx.search([photo_dir / "copy.jpg"], k=2)[0].hits
    assert {h.path for h in hits} == {str(photo_dir / "copy.jpg"), str(photo_dir / "photo6.jpg")}
    assert all(h.score == pytest.approx(1.0, abs=1e-5) for h in hits)


def test_search_by_url_and_stdin(indexed, photo_dir, http_dir):
    folder, server = http_dir
    shutil.copy(photo_dir / "photo0.jpg", folder / "q.jpg")
    res = run("search", f"{server.url}/q.jpg", "--json", "-k", "1", "--index", indexed)
    line = json.loads(res.stdout)
    assert line["query"] == f"{server.url}/q.jpg" and line["results"][0]["path"] == str(
        photo_dir / "photo0.jpg"
    )
    res = runner.invoke(app, ["search", "-", "--json", "-k", "1", "--index", str(indexed)],
                        input=(photo_dir / "photo4.jpg").read_bytes())  # fmt: skip
    assert res.exit_code == 0 and json.loads(res.stdout)["results"][0]["path"] == str(
        photo_dir / "photo4.jpg"
    )
    res = run("search", f"{server.url}/missing.jpg", "--json", "--index", indexed, ok=False)
    assert res.exit_code == 1 and "HTTP 404" in json.loads(res.stdout)["error"]


def test_search_filters_apply_inside_faiss(tmp_path, tf2_model):
    """--under / --since / --until keep k results from the allowed set (no over-fetch-and-drop)."""
    from datetime import datetime

    from PIL import Image

    root = tmp_path / "lib"
    for sub in ("2019", "2024", "odd_%name"):
        (root / sub).mkdir(parents=True)
    when = {"2019": datetime(2019, 6, 1, 12), "2024": datetime(2024, 6, 1, 12)}
    for i in range(12):
        sub = ("2019", "2024", "odd_%name")[i % 3]
        im = make_photo(i)
        path = root / sub / f"p{i:02d}.jpg"
        if sub in when:
            exif = Image.Exif()
            exif[0x8769] = {0x9003: when[sub].strftime("%Y:%m:%d %H:%M:%S")}  # DateTimeOriginal
            im.save(path, exif=exif)
        else:
            im.save(path)
            os.utime(path, (datetime(2010, 1, 1).timestamp(),) * 2)  # no EXIF: mtime counts
    index = tmp_path / "ix"
    run("index", root, "--model", tf2_model, "--index", index, "--workers", "0", "-q")
    query = root / "2024" / "p01.jpg"

    def paths(*args):
        res = run("search", query, "-k", "3", "--json", "--index", index, *args, ok=False)
        found = [r["path"] for r in json.loads(res.stdout)["results"]]
        assert res.exit_code == (0 if found else 3), res.output  # 3: nothing found
        return found

    found = paths("--under", root / "2019")
    assert len(found) == 3 and all("/2019/" in p for p in found)
    found = paths("--since", "2020-01-01")
    assert len(found) == 3 and all("/2024/" in p for p in found) and found[0] == str(query)
    found = paths("--until", "2015-01-01")
    assert len(found) == 3 and all("/odd_%name/" in p for p in found)
    found = paths("--under", root / "odd_%name")
    assert len(found) == 3 and all("/odd_%name/" in p for p in found)
    assert paths("--under", root / "odd_") == []  # LIKE wildcards in folder names are literal
    assert paths("--since", "2019-01-01", "--until", "2020-01-01", "--under", root / "2024") == []


def test_export_npy_and_parquet(indexed, tmp_path):
    import numpy as np
    import pyarrow.parquet as pq

    from lookalike.storage import Store

    res = run("export", tmp_path / "out" / "vecs", "--format", "npy", "--index", indexed, ok=False)
    assert res.exit_code == 1 and "no such folder" in res.output and not (tmp_path / "out").exists()
    (tmp_path / "out").mkdir()
    res = run("export", tmp_path / "out" / "vecs", "--format", "npy", "--index", indexed)
    assert "vecs.npy" in res.stdout
    vectors = np.load(tmp_path / "out" / "vecs.npy", mmap_mode="r")
    listing = json.loads((tmp_path / "out" / "vecs.paths.json").read_text())
    assert vectors.shape == (8, 32) and len(listing) == 8
    with Store(indexed) as store:
        for row, item in enumerate(listing):
            np.testing.assert_allclose(vectors[row], store.vectors.reconstruct(item["id"]), atol=1e-6)
    run("export", tmp_path / "t.parquet", "--format", "parquet", "--index", indexed)
    table = pq.read_table(tmp_path / "t.parquet")
    assert table.num_rows == 8 and table.column("path").to_pylist() == [x["path"] for x in listing]
    np.testing.assert_allclose(np.array(table.column("vector").to_pylist()), vectors, atol=1e-6)
    run("export", tmp_path / "out" / "vecs.2024-06", "--index", indexed)  # a dot in the name is kept
    assert {p.name for p in (tmp_path / "out").glob("vecs.2024-06*")} == {
        "vecs.2024-06.npy",
        "vecs.2024-06.paths.json",
    }
    res = run("export", tmp_path / "x", "--format", "csv", "--index", indexed, ok=False)
    assert res.exit_code == 1 and "format must be one of" in res.output


def test_under_is_an_exact_case_sensitive_prefix(tmp_path, tf2_model):
    root = tmp_path / "lib"
    for i, sub in enumerate(("Photos", "photos", "Photos2")):
        (root / sub).mkdir(parents=True)
        make_photo(i).save(root / sub / "p.jpg")
    index = tmp_path / "ix"
    run("index", root, "--model", tf2_model, "--index", index, "--workers", "0", "-q")
    res = run("search", root / "photos" / "p.jpg", "--under", root / "Photos", "--json", "--index", index)
    assert [r["path"] for r in json.loads(res.stdout)["results"]] == [str(root / "Photos" / "p.jpg")]


def test_reindex_changes_the_index_type_and_keeps_results(indexed, photo_dir):
    query = photo_dir / "photo0.jpg"
    before = json.loads(run("search", query, "-k", "3", "--json", "--index", indexed).stdout)
    res = run("reindex", "--index-type", "ivf-sq8", "--nprobe", "4", "--index", indexed)
    assert "rebuilt IVF1,SQ8 (ivf-sq8, setting ivf-sq8) over 8 vectors" in res.stdout
    stats = json.loads(run("info", "--json", "--index", indexed).stdout)
    assert stats["index_kind"] == "ivf-sq8" and stats["vectors"] == 8
    after = json.loads(run("search", query, "-k", "3", "--json", "--index", indexed).stdout)
    assert after == before  # re-scored exactly: same files, same scores
    assert run("verify", "--index", indexed).exit_code == 0
    bad = run("reindex", "--index-type", "ivf-pq", "--index", indexed, ok=False)
    assert bad.exit_code == 1 and "cannot build index type ivf-pq over 8 vectors" in bad.stderr
    stats = json.loads(run("info", "--json", "--index", indexed).stdout)
    assert stats["index_kind"] == "ivf-sq8" and stats["index_setting"] == "ivf-sq8"  # nothing changed
    bad = run("reindex", "--max-memory", "lots", "--index", indexed, ok=False)
    assert bad.exit_code == 2 and "expected e.g. 2G" in bad.stderr
    run("reindex", "--index-type", "auto", "--max-memory", "none", "--nprobe", "0", "--index", indexed)
    assert json.loads(run("info", "--json", "--index", indexed).stdout)["index_kind"] == "flat"


def test_a_mistyped_path_creates_no_index_and_loads_no_model(tmp_path):
    args = ["index", str(tmp_path / "Picturs"), "--model", str(tmp_path / "no-model")]
    res = runner.invoke(app, [*args, "--index", str(tmp_path / "ix")])
    assert res.exit_code == 1 and "no such file or folder" in res.output and "Picturs" in res.output
    assert not (tmp_path / "ix").exists()  # nothing tied to a model: the right photos are not refused later
