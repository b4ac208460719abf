"""Never lose a photo: a kill -9 campaign against the real commands.

``lookalike index`` is killed with SIGKILL at seeded random moments of every stage:
startup and model load (nothing written yet), the catalogue's creation and its first
manifest, mid-batch (by photos committed), checkpoint writes (the moment a
``.tmp-vectors-*`` file is created, or a checkpoint is renamed into place before the old
one is removed: seen through inotify, so the kill lands within microseconds), the final
stage (every photo committed: removals, the last checkpoint, the score calibration and
its manifest write) and random delays over the runs' measured duration. After every
kill the index opens and verifies (a checkpoint merely behind the catalogue is fine), no
committed photo is lost, no photo is recorded as an error, and every process the command
started (its decoder workers, spawned by multiprocessing) is gone within seconds. Each
series ends with a run that completes: then every photo is in the catalogue exactly
once, by path and by content, and the index folder holds no temporary or stale file.

``lookalike dupes --move-to`` and ``--trash`` are killed mid-run on a library of 60
photos with 2-3 copies each; ``lookalike undo`` then puts every file back byte for byte.

The model is the tiny generated one as .tflite (a run starts in about a second, without
TensorFlow) and photos are 64x48, so the whole campaign takes about a minute on 2 cores.
The machinery (processes, the watched folder, one run killed on a trigger) is in
tests/kill_shots.py.
"""

from __future__ import annotations

import itertools
import os
import random
import re
import shutil
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lookalike import Index, IndexOptions
from lookalike.cli import app
from lookalike.errors import IndexNotFound
from lookalike.search.calibration import AUTO_CALIBRATE
from lookalike.storage import Store
from tests.conftest import make_photo
from tests.kill_shots import (
    CATALOGUE,
    CHECKPOINT_NEW,
    CHECKPOINT_TMP,
    MANIFEST_TMP,
    PHOTO_OPEN,
    Campaign,
    Shot,
    Trigger,
    alive,
    catalogue_rows,
    committed_photos,
    files_under,
    sha256_of,
    shoot,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs inotify and /proc"),
]

SEED = 20261130
SIZE = (64, 48)
THRESHOLD = "0.98"
runner = CliRunner()


def test_the_process_check_finds_what_a_killed_command_leaves(tmp_path):
    """The campaign's check has teeth: a child that outlives its killed parent is found
    (and then ended), whether it is seen before the kill or only by its marker."""
    sleeper = "import time; time.sleep(60)"
    script = (
        f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {sleeper!r}]); time.sleep(60)"
    )
    shot = shoot(
        [sys.executable, "-c", script],
        dict(os.environ),
        tmp_path,
        Trigger("time", 1.0),
        tmp_path / "log",
        within=0.5,
    )
    assert shot.killed and shot.returncode == -signal.SIGKILL
    assert list(shot.left.values()) == [f"{sys.executable} -c {sleeper}"]
    time.sleep(0.2)
    assert not any(alive(pid) for pid in shot.left)


# --- `lookalike index` -----------------------------------------------------------------------


def _index_cmd(photos: Path, index: Path, model: Path) -> list[str]:
    return [sys.executable, "-m", "lookalike.cli", "index", str(photos), "--model", str(model),
            "--index", str(index), "--batch-size", "8", "--workers", "2", "-q"]  # fmt: skip


def _phase(index: Path, shot: Shot, names: set[str], before: int, now: int, total: int) -> str:
    """Where a kill landed, from what it left (``names``: new in the folder since the start)
    and how many photos were committed before the run and after the kill."""
    listing = set(os.listdir(index))
    new = names & listing
    if not listing:
        return "startup/model load: nothing written"
    if shot.lock == "not taken":
        return "startup/model load: index not opened yet"
    if shot.lock == "released":
        return "exiting (index closed)"
    if any(re.search(CHECKPOINT_TMP, n) for n in new):
        return "checkpoint write (temporary file left)"
    if any(re.search(MANIFEST_TMP, n) for n in new):
        return "manifest write (temporary file left)"
    if (
        any(re.search(CHECKPOINT_NEW, n) for n in new)
        and sum(bool(re.search(CHECKPOINT_NEW, n)) for n in listing) > 1
    ):
        return "checkpoint renamed into place, the older one not yet removed"
    if "manifest.json" not in listing:
        return "creating the index (no manifest yet)"
    if now == total > before:
        return "final stage (this run committed the last photo)"
    if now == total and shot.trigger.pattern == PHOTO_OPEN:
        return "final stage: the score calibration (reading photos)"
    if now == total:
        return "final stage (resumed with nothing left to index)"
    if now > before:
        return "mid-batch"
    return "open/walk (before this run's first commit)"


def _check_index(index: Path, files: dict, previously: set[str]) -> tuple[list[str], set[str]]:
    """After a kill: the index opens and verifies; committed photos stayed committed."""
    problems = []
    rows = catalogue_rows(index)
    if not (index / "manifest.json").exists():
        try:
            Store(index).close()
            problems.append("an index without a manifest opened")
        except IndexNotFound:
            pass  # never finished being created: the next run creates it
    else:
        try:
            with Store(index) as store:
                report = store.verify()
                ntotal = store.vectors.ntotal
        except Exception as exc:  # any failure to open is what this campaign looks for
            problems.append(f"index does not open: {exc!r}")
        else:
            if not report.ok:
                problems.append(f"verify: {report}")
            ok = sum(r[3] == "ok" for r in rows.values())
            if ntotal != ok:
                problems.append(f"{ntotal} vectors for {ok} photos")
    errors = {p: r for p, r in rows.items() if r[3] != "ok"}
    if errors:
        problems.append(f"error rows for good photos: {sorted(errors)[:5]}")
    twice = [h for h, n in Counter(r[2] for r in rows.values() if r[2]).items() if n > 1]
    if twice:
        problems.append(f"content recorded twice: {twice[:5]}")
    covered = committed_photos(rows, files)
    lost = previously - covered
    if lost:
        problems.append(f"committed photos lost: {sorted(lost)[:5]}")
    return problems, covered


def _check_complete(index: Path, files: dict, calibrates: bool) -> list[str]:
    """After a run that completed: every photo once, by path and content; a clean folder."""
    problems = []
    rows = catalogue_rows(index)
    if set(rows) != set(files):
        problems.append(
            f"catalogue != photos: missing {sorted(set(files) - set(rows))[:5]}, "
            f"extra {sorted(set(rows) - set(files))[:5]}"
        )
    for path, (size, mtime, digest, status) in rows.items():
        if path in files and (status != "ok" or (size, mtime) != files[path] or digest != sha256_of(path)):
            problems.append(f"{path}: row {status} {size} {mtime} {digest} does not match the file")
    by_content = Counter(sha256_of(p) for p in files)
    if Counter(r[2] for r in rows.values()) != by_content:
        problems.append("photos not in the catalogue exactly once by content")
    with Store(index) as store:
        report = store.verify()
        if not report.ok or report.behind:
            problems.append(f"after a completed run: {report}")
        if store.vectors.ntotal != len(files):
            problems.append(f"{store.vectors.ntotal} vectors for {len(files)} photos")
        if calibrates and not store.manifest.calibration:
            problems.append("the completed run did not calibrate (nor record why not)")
    listing = sorted(os.listdir(index))
    stale = [n for n in listing if n.startswith(".") or n.endswith(".tmp") or "-journal" in n]
    checkpoints = [n for n in listing if re.search(CHECKPOINT_NEW, n)]
    if stale or len(checkpoints) != 1:
        problems.append(f"temporary or stale files left after a successful run: {listing}")
    return problems


def _series(
    campaign: Campaign,
    photos: Path,
    index: Path,
    model: Path,
    triggers: Iterable[Trigger | Callable[[], Trigger]],
    logs: Path,
    calibrates: bool,
) -> None:
    """Kill the command on each trigger in turn (each run resuming the one before), then
    let one run complete. Every run that completes must leave the index complete."""
    cmd = _index_cmd(photos, index, model)
    committed = committed_photos(catalogue_rows(index), files_under(photos))
    for planned in itertools.chain(triggers, [Trigger("never")]):
        trigger = planned() if callable(planned) else planned  # which may add photos
        files = files_under(photos)
        before = len(committed_photos(catalogue_rows(index), files))
        names_before = set(os.listdir(index))

        def progress(files=files) -> tuple[int, int]:
            return len(committed_photos(catalogue_rows(index), files)), len(files)

        polled = progress if trigger.kind in ("rows", "done") else None
        folders = sorted({Path(p).parent for p in files})
        log = logs / f"{campaign.trials}.log"
        shot = shoot(cmd, dict(os.environ), index, trigger, log, polled, folders)
        problems, committed = _check_index(index, files, committed)
        if shot.killed:
            new = set(os.listdir(index)) - names_before
            shot.phase = _phase(index, shot, new, before, len(committed), len(files))
        else:
            campaign.last_run = shot.at
            shot.phase = "completed" if trigger.kind == "never" else "completed before the kill"
            problems += _check_complete(index, files, calibrates)
            campaign.files_lost += len(set(files) - set(catalogue_rows(index)))
        campaign.record(shot, problems)


def _library(root: Path, seeds: range, sub: int = 3) -> None:
    for n, seed in enumerate(seeds):
        folder = root / f"d{n % sub}"
        folder.mkdir(parents=True, exist_ok=True)
        make_photo(seed, SIZE).save(folder / f"p{seed:05d}.png")


def test_kill_index_campaign(tmp_path, tflite_model, capsys):
    rng = random.Random(SEED)
    campaign = Campaign("index")
    logs = tmp_path / "logs"
    logs.mkdir()
    photos, index = tmp_path / "photos", tmp_path / "ix"
    index.mkdir()  # watched from the start (lookalike itself creates it when missing)
    n_first = AUTO_CALIBRATE + 16  # the end of the first series calibrates
    _library(photos, range(n_first))

    # Series 1: a new index, from nothing to calibrated.
    first = [
        Trigger("time", rng.uniform(0.05, 0.5)),  # imports and model load
        Trigger("time", rng.uniform(0.05, 0.5)),
        Trigger("file", rng.uniform(0, 0.004), CATALOGUE),  # the catalogue being created
        Trigger("file", 0, MANIFEST_TMP),  # the first manifest being written
        Trigger("rows", rng.randint(8, 60)),  # photos committed by this run
        Trigger("file", 0, CHECKPOINT_TMP),  # on opening: the checkpoint catches up
        Trigger("rows", rng.randint(40, 90)),
        Trigger("file", 0, CHECKPOINT_NEW),  # renamed into place, the older one not yet removed
        Trigger("done", rng.uniform(0, 0.02)),  # the last photo committed: the final checkpoint
        Trigger("file", 0, PHOTO_OPEN, rng.randint(1, 80)),  # nothing left to index: calibrating
        Trigger("file", 0, MANIFEST_TMP),  # the calibration being recorded
    ]
    _series(campaign, photos, index, tflite_model, first, logs, calibrates=True)

    # Series 2: the library changes (new, rewritten, renamed and deleted photos).
    old = sorted(files_under(photos))
    picked = rng.sample(old, 18)
    for p in picked[:6]:
        make_photo(rng.randint(10**6, 2 * 10**6), SIZE).save(p)
        os.utime(p, ns=(time.time_ns(), time.time_ns() + 10**9))
    (photos / "renamed").mkdir()
    for p in picked[6:12]:
        os.rename(p, photos / "renamed" / Path(p).name)
    for p in picked[12:]:
        os.unlink(p)
    _library(photos / "new", range(5000, 5000 + 72))
    second = [
        Trigger("time", rng.uniform(0.05, 0.5)),
        Trigger("rows", rng.randint(4, 30)),
        Trigger("file", 0, CHECKPOINT_TMP),
        Trigger("rows", rng.randint(10, 40)),
        Trigger("done", rng.uniform(0, 0.02)),  # removals and the final checkpoint
        Trigger("file", 0, CHECKPOINT_NEW),
    ]
    _series(campaign, photos, index, tflite_model, second, logs, calibrates=True)

    # Series 3: photos keep arriving, 12 before each run. One run is timed, then each is
    # killed at a moment drawn over that duration, until the campaign has its kills.
    arrived = iter(range(9000, 10000, 12))

    def arrive(trigger: Trigger | None = None) -> Trigger:
        first = next(arrived)
        _library(photos / "more", range(first, first + 12))
        return trigger or Trigger("time", rng.uniform(0.05, campaign.last_run))

    def third():
        yield lambda: arrive(Trigger("never"))  # the measured run
        for _ in range(12):
            if campaign.kills >= 22:
                return
            yield arrive

    _series(campaign, photos, index, tflite_model, third(), logs, calibrates=True)

    with capsys.disabled():
        print("\n" + campaign.summary())
    assert not campaign.failures, "\n".join(campaign.failures)
    assert campaign.kills >= 20
    for stage in ("startup/model load", "creating the index", "mid-batch", "checkpoint", "final stage"):
        assert any(p.startswith(stage) for p in campaign.phases), (stage, campaign.phases)
    assert campaign.workers_killed > 0  # the process check saw workers to check
    assert (campaign.files_lost, campaign.processes_left) == (0, 0)


# --- `lookalike dupes --move-to/--trash`, then `lookalike undo` ----------------------------


def _hashes(root: Path) -> dict[str, str]:
    return {p: sha256_of(p) for p in files_under(root)}


def _dupes_library(root: Path) -> int:
    """60 photos, each with an exact copy and a smaller JPEG, half with a second exact copy;
    returns how many duplicates that makes."""
    for folder in ("originals", "backup", "small", "more"):
        (root / folder).mkdir(parents=True)
    for i in range(60):
        im = make_photo(7000 + i, SIZE)
        original = root / "originals" / f"img{i:02d}.png"
        im.save(original)
        shutil.copyfile(original, root / "backup" / f"img{i:02d}.png")
        im.resize((48, 36)).save(root / "small" / f"img{i:02d}.jpg", quality=95)
        if i % 2 == 0:
            shutil.copyfile(original, root / "more" / f"img{i:02d}-copy.png")
    return 60 * 2 + 30


def test_kill_dupes_campaign(tmp_path, tflite_model, monkeypatch, capsys):
    rng = random.Random(SEED + 1)
    campaign = Campaign("dupes")
    library, index, logs = tmp_path / "library", tmp_path / "ix", tmp_path / "logs"
    logs.mkdir()
    n_dupes = _dupes_library(library)
    opts = IndexOptions(workers=0)
    Index(index).add([library], model=str(tflite_model), options=opts, calibrate=False)
    groups = Index(index).duplicates(float(THRESHOLD))
    assert (len(groups), sum(len(g.duplicates) for g in groups)) == (60, n_dupes)
    before = _hashes(library)

    xdg, home = tmp_path / "xdg", tmp_path / "home"  # an isolated trash on this file system
    home.mkdir()
    for name, value in (("XDG_DATA_HOME", xdg), ("HOME", home)):
        monkeypatch.setenv(name, str(value))  # for `undo`, run here, and the commands run below
    trash = xdg / "Trash"

    def trial(action: str, trigger: Trigger) -> None:
        n = campaign.trials
        journal, aside = tmp_path / "journals" / f"{n}.jsonl", tmp_path / f"aside{n}"
        journal.parent.mkdir(exist_ok=True)
        how = ["--move-to", str(aside)] if action == "move" else ["--trash"]
        cmd = [sys.executable, "-m", "lookalike.cli", "dupes", "--threshold", THRESHOLD,
               "--index", str(index), "--journal", str(journal), *how]  # fmt: skip

        def progress() -> tuple[int, int]:
            try:
                return journal.read_bytes().count(b"\n"), n_dupes
            except OSError:
                return 0, n_dupes

        shot = shoot(cmd, dict(os.environ), index, trigger, logs / f"{n}.log", progress)
        lines, _ = progress()
        away = set(before) - set(files_under(library))
        if not shot.killed:
            shot.phase = "completed"
        elif lines == 0:
            shot.phase = "before the first action (startup, finding the groups)"
        elif lines < n_dupes:
            shot.phase = "mid-run"
        elif away & set(catalogue_rows(index)):
            shot.phase = "after the last action, before the index forgot the files"
        else:
            shot.phase = "after the last action, the index updated (closing)"
        shot.detail = f" ({lines} journal lines, {len(away)} files away"
        problems = []
        try:
            with Store(index) as store:
                report = store.verify()
            if not report.ok:
                problems.append(f"verify after the kill: {report}")
        except Exception as exc:
            problems.append(f"index does not open after the kill: {exc!r}")
        where = aside if action == "move" else trash / "files"  # the isolated trash, not another
        there = files_under(where) if where.exists() else {}
        if len(there) != len(away):
            problems.append(f"{len(away)} files away, {len(there)} in {where}")
        if journal.exists():
            res = runner.invoke(app, ["undo", str(journal)])
            if res.exit_code != 0:
                problems.append(f"undo failed: {res.output}")
            shot.detail += "; undo: " + res.stdout.strip().splitlines()[-1].split(";")[0]
        orphans = len(list((trash / "info").glob("*.trashinfo"))) if action == "trash" else 0
        if orphans:  # send2trash writes a file's .trashinfo before moving it (not a file)
            shot.detail += f"; {orphans} .trashinfo without a file in the trash"
        shot.detail += ")"
        after = _hashes(library)
        lost = [p for p in before if p not in after]
        changed = [p for p in before if p in after and after[p] != before[p]]
        extra = [p for p in after if p not in before]
        left_aside = list(files_under(aside)) if aside.exists() else []
        in_trash = list(files_under(trash / "files")) if (trash / "files").exists() else []
        campaign.files_lost += len(lost) + len(changed)
        for what, items in (
            ("lost", lost),
            ("changed", changed),
            ("extra files", extra),
            ("left in the move-to folder", left_aside),
            ("left in the trash", in_trash),
        ):
            if items:
                problems.append(f"{what}: {sorted(items)[:5]} ({len(items)})")
        # The index forgets what a finished action moved: bring it back up to date.
        Index(index).add([library], options=opts, calibrate=False)
        rows = catalogue_rows(index)
        if set(rows) != set(before) or any(r[3] != "ok" for r in rows.values()):
            problems.append("the index does not list every file again after undo")
        campaign.record(shot, problems)

    m = n_dupes
    trial("move", Trigger("time", rng.uniform(0.1, 0.6)))  # startup, finding the groups
    trial("move", Trigger("lines", rng.randint(1, 10)))
    trial("move", Trigger("lines", rng.randint(30, 90)))
    trial("move", Trigger("lines", rng.randint(100, m - 1)))
    trial("move", Trigger("done", rng.uniform(0, 0.02)))  # the index forgetting the moved files
    trial("trash", Trigger("lines", rng.randint(1, 30)))
    trial("trash", Trigger("lines", rng.randint(60, m - 1)))
    trial("trash", Trigger("done", rng.uniform(0, 0.02)))

    with capsys.disabled():
        print("\n" + campaign.summary())
    assert campaign.kills >= 6
    assert campaign.files_lost == 0 and campaign.processes_left == 0
    assert not campaign.failures, "\n".join(campaign.failures)
