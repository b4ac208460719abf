"""Crash safety (SIGKILL mid-run, then resume), verify/repair and remove from the CLI,
and every kind of bad input recorded without stopping a run."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import text
from typer.testing import CliRunner

from lookalike import Index, IndexOptions
from lookalike.cli import app
from lookalike.storage import Store, VectorIndex
from tests.conftest import make_photo

runner = CliRunner()
N_PHOTOS = 600


def _count(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as c:
            return c.execute("SELECT count(*) FROM vectors").fetchone()[0]
    except sqlite3.Error:
        return 0


def _index_cmd(photos: Path, index: Path, model: Path) -> list[str]:
    return [sys.executable, "-m", "lookalike.cli", "index", str(photos), "--model", str(model),
            "--index", str(index), "--batch-size", "8", "--workers", "1", "-q"]  # fmt: skip


def test_sigkill_at_any_point_then_resume(tmp_path, tf2_model):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(N_PHOTOS):
        make_photo(i, (96, 72)).save(photos / f"p{i:04d}.png")
    index = tmp_path / "ix"
    cmd = _index_cmd(photos, index, tf2_model)
    killed_at = []
    for threshold in (8, 200, 400):  # three kills at different stages
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if _count(index / "catalog.sqlite") >= threshold:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
        proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
        killed_at.append(_count(index / "catalog.sqlite"))
        with Store(index) as store:  # a reader right after the crash sees a consistent index
            assert store.vectors.ntotal == killed_at[-1]
    assert killed_at == sorted(killed_at) and killed_at[-1] < N_PHOTOS  # progress kept each time
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{killed_at[-1]} unchanged" in done.stdout  # resumed: committed work not redone
    res = runner.invoke(app, ["verify", "--index", str(index)])
    assert res.exit_code == 0 and "ok" in res.stdout, res.stdout
    with Store(index) as store:
        known = store.catalogue.known()
        assert len(known) == N_PHOTOS and store.vectors.ntotal == N_PHOTOS
        assert {Path(p).name for p in known} == {f"p{i:04d}.png" for i in range(N_PHOTOS)}
    hit = Index(index).search([photos / "p0123.png"], k=1)[0].hits[0]
    assert hit.path == str(photos / "p0123.png")


def _checkpoint_three_short(index: Path, photo_dir: Path, model: Path, current: bool) -> None:
    """Index ``photo_dir``, then replace the checkpoint by one lacking 3 vectors, stamped
    with the current generation (damaged) or generation 0 (only behind, as after a kill)."""
    Index(index).add([photo_dir], model=str(model))
    ((_, path),) = VectorIndex.checkpoints(index)
    ckpt = VectorIndex.load(index, 32)
    ckpt.remove(ckpt.ids()[:3])
    path.unlink()
    _, generation, catalogue = path.stem.split("-")
    ckpt.save(index, int(generation) if current else 0, catalogue)


def test_verify_reports_a_damaged_checkpoint_and_repair_fixes_it(tmp_path, photo_dir, tf2_model):
    index = tmp_path / "ix"
    _checkpoint_three_short(index, photo_dir, tf2_model, current=True)
    res = runner.invoke(app, ["verify", "--index", str(index)])
    assert res.exit_code == 1 and "missing from faiss: 3" in res.stdout
    res = runner.invoke(app, ["verify", "--repair", "--index", str(index)])
    assert res.exit_code == 0 and "repaired" in res.stdout and res.stdout.rstrip().endswith("agree")
    assert runner.invoke(app, ["verify", "--index", str(index)]).exit_code == 0


def test_verify_after_a_crash_says_behind_not_broken(tmp_path, photo_dir, tf2_model):
    """A checkpoint of an older generation (a kill between a commit and the checkpoint)
    is what every open brings up to date: verify says so and succeeds."""
    index = tmp_path / "ix"
    _checkpoint_three_short(index, photo_dir, tf2_model, current=False)
    res = runner.invoke(app, ["verify", "--index", str(index)])
    assert res.exit_code == 0 and "behind" in res.stdout and "brought up to date" in res.stdout


def test_remove_files_and_folders(tmp_path, photo_dir, tf2_model):
    index = tmp_path / "ix"
    Index(index).add([photo_dir], model=str(tf2_model))
    res = runner.invoke(
        app, ["remove", str(photo_dir / "photo0.jpg"), str(photo_dir / "sub"), "--index", str(index)]
    )
    assert res.exit_code == 0 and "removed 5 files" in res.stdout
    assert photo_dir.joinpath("photo0.jpg").exists()  # only the index forgets
    stats = json.loads(runner.invoke(app, ["info", "--json", "--index", str(index)]).stdout)
    assert stats["files"] == stats["vectors"] == 3


def _bad_inputs(folder: Path) -> dict[str, str]:
    """Files of every bad kind, with the reason each must be recorded with."""
    make_photo(1, (400, 300)).save(folder / "ok.jpg")
    good = (folder / "ok.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "text.png").write_text("this is not an image")
    Image.new("L", (5000, 4000)).save(folder / "huge.png")  # 20 MP against a 10 MP cap
    (folder / "undecodable.webp").write_bytes(b"RIFF\x10\x00\x00\x00WEBPVP8 " + os.urandom(64))
    (folder / "locked.jpg").write_bytes(good)
    os.chmod(folder / "locked.jpg", 0)
    return {
        "truncated.jpg": "cannot decode",
        "zero.jpg": "empty file",
        "text.png": "not a recognised image format",
        "huge.png": "too large",
        "undecodable.webp": "cannot decode",
        "locked.jpg": "Permission denied",
    }


def test_every_bad_input_is_recorded_and_retried_only_when_changed(tmp_path, tf2_model, monkeypatch):
    photos = tmp_path / "photos"
    photos.mkdir()
    expected = _bad_inputs(photos)
    if os.geteuid() == 0:  # root reads anything: make the OS refuse this one file as it would
        import builtins

        real_open = builtins.open

        def refusing_open(file, *args, **kwargs):
            if str(file).endswith("locked.jpg"):
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", refusing_open)
    idx = Index(tmp_path / "ix")
    opts = IndexOptions(workers=0, max_megapixels=10)
    report = idx.add([photos], model=str(tf2_model), options=opts)
    assert (report.indexed, report.errors) == (1, len(expected))
    errors = dict(idx.errors())
    assert {Path(p).name for p in errors} == set(expected)
    for name, reason in expected.items():
        assert reason in errors[str(photos / name)], (name, errors[str(photos / name)])
    report = idx.add([photos], options=opts)
    assert (report.indexed, report.errors, report.unchanged) == (0, 0, 7)  # not retried
    make_photo(7).save(photos / "zero.jpg")  # the empty file became a photo
    report = idx.add([photos], options=opts)
    assert (report.indexed, report.errors) == (1, 0)  # changed, so retried, and now fine
    assert str(photos / "zero.jpg") not in dict(idx.errors())
    res = runner.invoke(app, ["info", "--errors", "--index", str(tmp_path / "ix")])
    assert "locked.jpg" in res.stdout and "Permission denied" in res.stdout


@pytest.mark.parametrize("max_mp", ["0"])
def test_bad_cli_values(tmp_path, photo_dir, max_mp):
    res = runner.invoke(app, ["index", str(photo_dir), "--max-megapixels", max_mp, "--index", str(tmp_path)])
    assert res.exit_code == 2 and "max-megapixels" in res.output


def test_a_damaged_stored_vector_is_reported_and_repaired(tmp_path, photo_dir, tf2_model):
    """A vector blob cut short (a disk error, a hand edit): verify names it, reading it
    (FAISS rebuilt from the catalogue) is a clear error rather than a traceback, repair
    drops it and the next run embeds its file again."""
    index = tmp_path / "ix"
    Index(index).add([photo_dir], model=str(tf2_model), options=IndexOptions(workers=0), calibrate=False)
    with Store(index, writable=True) as s, s.catalogue.engine.begin() as c:
        c.execute(text("UPDATE vectors SET data = substr(data, 1, 100) WHERE id = 3"))
    res = runner.invoke(app, ["verify", "--index", str(index)])
    assert res.exit_code == 1 and "damaged vectors: 1 (ids 3)" in res.stdout, res.output
    for checkpoint in index.glob("vectors-*.faiss"):  # a new machine: FAISS rebuilt from the catalogue
        checkpoint.unlink()
    res = runner.invoke(app, ["search", str(photo_dir / "photo0.jpg"), "--index", str(index)])
    assert res.exit_code == 1 and "verify --repair" in res.stderr and isinstance(res.exception, SystemExit)
    res = runner.invoke(app, ["verify", "--repair", "--index", str(index)])
    assert res.exit_code == 0 and "repaired" in res.stdout, res.output
    report = Index(index).add([photo_dir], options=IndexOptions(workers=0), calibrate=False)
    assert report.indexed == 1 and runner.invoke(app, ["verify", "--index", str(index)]).exit_code == 0


@pytest.mark.parametrize("damage", ["overwritten", "truncated", "deleted"])
def test_a_damaged_faiss_checkpoint_is_rebuilt_from_the_catalogue(tmp_path, photo_dir, tf2_model, damage):
    """The checkpoint is a cache of the catalogue's vectors: one that cannot be read (or
    is not there) is rebuilt (searches answer), verify says so (a problem when damaged),
    and --repair writes it anew."""
    index = tmp_path / "ix"
    Index(index).add([photo_dir], model=str(tf2_model), options=IndexOptions(workers=0), calibrate=False)
    (checkpoint,) = index.glob("vectors-*.faiss")
    if damage == "overwritten":
        with open(checkpoint, "r+b") as f:
            f.write(b"\xff" * 1000)
    elif damage == "truncated":
        os.truncate(checkpoint, checkpoint.stat().st_size // 2)
    else:
        checkpoint.unlink()
    res = runner.invoke(app, ["search", str(photo_dir / "photo0.jpg"), "--index", str(index), "-k", "1"])
    assert res.exit_code == 0 and "photo0.jpg" in res.stdout, res.output
    res = runner.invoke(app, ["verify", "--index", str(index)])
    if damage == "deleted":
        assert res.exit_code == 0 and "there is no FAISS checkpoint" in res.stdout, res.output
    else:
        assert res.exit_code == 1 and "the FAISS checkpoint cannot be read" in res.stdout, res.output
    res = runner.invoke(app, ["verify", "--repair", "--index", str(index)])
    assert res.exit_code == 0 and list(index.glob("vectors-*.faiss")), res.output
    res = runner.invoke(app, ["verify", "--index", str(index)])
    assert res.exit_code == 0 and "cannot be read" not in res.stdout and "no FAISS" not in res.stdout
