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
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import itertools
import os
import random
import re
import select
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lookalike import Index, IndexOptions
from lookalike.cli import app
from lookalike.errors import IndexNotFound
from lookalike.search.calibration import AUTO_CALIBRATE
from lookalike.storage import Store
from tests.conftest import make_photo

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs inotify and /proc"),
]

SEED = 20261130
MARKER = "LOOKALIKE_KILL_CAMPAIGN"  # in the environment of every process a command starts
GONE_WITHIN_S = 5.0
SIZE = (64, 48)
THRESHOLD = "0.98"
runner = CliRunner()

# Files whose appearance in the index folder a kill can be aimed at.
CATALOGUE = r"^catalog\.sqlite$"
MANIFEST_TMP = r"^\.tmp-manifest\.json\."
CHECKPOINT_TMP = r"^\.tmp-vectors-"
CHECKPOINT_NEW = r"^vectors-\d+-[0-9a-f]+\.faiss$"  # renamed into place
PHOTO_OPEN = r"\.png$"  # a photo opened (by a run with nothing to index: the calibration)


# --- processes, through /proc --------------------------------------------------------------


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) of a process, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), fields[0].decode(), int(fields[19])


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _alive(pid: int, started: int | None = None) -> bool:
    st = _stat(pid)
    return st is not None and st[1] not in ("Z", "X") and (started is None or st[2] == started)


def _pids() -> list[int]:
    return [int(n) for n in os.listdir("/proc") if n.isdigit()]


def _marked(marker: str) -> dict[int, str]:
    """Live processes with ``MARKER=marker`` in their environment: pid -> command line."""
    needle = f"{MARKER}={marker}".encode()
    found = {}
    for pid in _pids():
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if needle not in f.read().split(b"\0"):
                    continue
        except OSError:
            continue
        if _alive(pid):
            found[pid] = _cmdline(pid)
    return found


def _children(parent: int) -> dict[int, tuple[int, str]]:
    """Live children of ``parent``: pid -> (start time, command line)."""
    out = {}
    for pid in _pids():
        st = _stat(pid)
        if st is not None and st[0] == parent and st[1] not in ("Z", "X"):
            out[pid] = (st[2], _cmdline(pid))
    return out


def _survivors(marker: str, children: dict[int, tuple[int, str]], within: float) -> dict[int, str]:
    """What the killed command left running after ``within`` seconds: the children seen
    before the kill (reparented since), and anything else carrying its marker."""
    deadline = time.monotonic() + within
    while True:
        left = {p: cmd for p, (started, cmd) in children.items() if _alive(p, started)}
        left.update(_marked(marker))
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def _end(pids) -> None:
    """Kill what a failed check left behind (processes this test started), by pid."""
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


# --- the index folder, watched and read ----------------------------------------------------


class _Watch:
    """inotify on folders: (event, name) for files created in, renamed into, opened or
    closed after writing in the first one, and files opened in the others, as it happens."""

    IN_CLOSE_WRITE, IN_OPEN, IN_MOVED_TO, IN_CREATE = 0x08, 0x20, 0x80, 0x100

    def __init__(self, folder: Path, opened_in: list[Path] = ()) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        mine = self.IN_CREATE | self.IN_MOVED_TO | self.IN_OPEN | self.IN_CLOSE_WRITE
        for where, mask in [(folder, mine), *((d, self.IN_OPEN) for d in opened_in)]:
            if libc.inotify_add_watch(self.fd, os.fsencode(where), mask) < 0:
                os.close(self.fd)
                raise OSError(ctypes.get_errno(), f"inotify_add_watch {where}")
        self.poll = select.poll()
        self.poll.register(self.fd, select.POLLIN)

    def events(self, timeout_ms: int) -> list[tuple[int, str]]:
        if not self.poll.poll(timeout_ms):
            return []
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return []
        events, at = [], 0
        while at < len(data):
            _, mask, _, n = struct.unpack_from("iIII", data, at)
            events.append((mask, data[at + 16 : at + 16 + n].rstrip(b"\0").decode(errors="replace")))
            at += 16 + n
        return events

    def close(self) -> None:
        os.close(self.fd)


Row = tuple[int, int, str | None, str]  # size, mtime_ns, content hash, status


def _rows(index: Path) -> dict[str, Row]:
    """The catalogue's files (read-only; empty while it does not exist yet)."""
    db = index / "catalog.sqlite"
    if not db.exists():
        return {}
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as c:
            rows = c.execute("SELECT path, size, mtime_ns, content_hash, status FROM files").fetchall()
    except sqlite3.Error:
        return {}
    return {p: (s, m, h, st) for p, s, m, h, st in rows}


def _files(root: Path) -> dict[str, tuple[int, int]]:
    """Every file below root: path -> (size, mtime_ns)."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = os.path.join(os.path.abspath(dirpath), n)
            st = os.stat(p)
            out[p] = (st.st_size, st.st_mtime_ns)
    return out


def _covered(rows: dict[str, Row], files: dict[str, tuple[int, int]]) -> set[str]:
    """Photos whose current state is committed to the catalogue."""
    return {p for p, sm in files.items() if p in rows and rows[p][:2] == sm and rows[p][3] == "ok"}


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# --- one run, killed on a trigger ----------------------------------------------------------


@dataclass
class Trigger:
    """When to kill: ``time`` (``value`` s after start), ``rows`` (once this run has
    committed ``value`` photos), ``done`` (``value`` s after this run committed the last
    photo), ``file`` (``value`` s after the ``nth`` name matching ``pattern`` is created in
    or renamed into the watched folder; for :data:`PHOTO_OPEN`, a photo opened), ``lines``
    (once the journal has ``value`` lines), ``never``."""

    kind: str
    value: float = 0.0
    pattern: str = ""
    nth: int = 1

    def __str__(self) -> str:
        if self.kind == "file":
            return f"file {self.pattern} #{self.nth} +{self.value * 1000:.0f}ms"
        unit = {"time": "s", "done": "s after all committed", "rows": " rows", "lines": " journal lines"}
        return f"{self.kind} {self.value:g}{unit.get(self.kind, '')}"


@dataclass
class Shot:
    trigger: Trigger
    killed: bool = False
    at: float = 0.0  # seconds from start to the kill (or to the exit)
    returncode: int | None = None
    workers_seen: int = 0  # decoder workers alive at the moment of the kill
    lock: str = "not taken"  # the index's write lock at the kill: not taken, held, released
    left: dict[int, str] = field(default_factory=dict)
    output: str = ""
    phase: str = ""
    detail: str = ""


def _lock_state(state: str, mask: int, name: str) -> str:
    """The index's write lock after an inotify event (its file opened, or closed: released;
    read nothing after the kill, whose closing of the file would say released too)."""
    if name != "write.lock":
        return state
    if mask & _Watch.IN_OPEN:
        return "held"
    return "released" if mask & _Watch.IN_CLOSE_WRITE else state


def _shoot(
    cmd: list[str],
    env: dict[str, str],
    watched: Path,
    trigger: Trigger,
    log: Path,
    progress=None,
    photo_dirs: list[Path] = (),
    within: float = GONE_WITHIN_S,
) -> Shot:
    """Run ``cmd``; SIGKILL it when ``trigger`` fires; wait for what it started to go.

    ``progress()`` is polled for ``rows``/``done`` (photos committed, photos in all) and
    ``lines`` (journal lines) triggers.
    """
    marker = uuid.uuid4().hex
    shot = Shot(trigger)
    watch = _Watch(watched, list(photo_dirs) if trigger.pattern == PHOTO_OPEN else [])
    children: dict[int, tuple[int, str]] = {}
    with open(log, "wb") as out:
        start = time.monotonic()
        proc = subprocess.Popen(cmd, env={**env, MARKER: marker}, stdout=out, stderr=subprocess.STDOUT)
    fire_at = start + trigger.value if trigger.kind == "time" else None
    seen, next_poll = 0, 0.0
    at_start = progress()[0] if progress is not None else 0
    try:
        while proc.poll() is None:
            now = time.monotonic()
            if fire_at is not None and now >= fire_at:
                for mask, name in watch.events(0):  # what happened until now
                    shot.lock = _lock_state(shot.lock, mask, name)
                children = _children(proc.pid)  # a few ms: not for the inotify-aimed kills
                proc.send_signal(signal.SIGKILL)
                shot.killed, shot.at = True, time.monotonic() - start
                break
            if fire_at is None and progress is not None and now >= next_poll:
                next_poll = now + 0.003
                done, total = progress()
                if (trigger.kind in ("rows", "lines") and done - at_start >= trigger.value) or (
                    trigger.kind == "done" and done == total > at_start
                ):
                    fire_at = now + (trigger.value if trigger.kind == "done" else 0.0)
                    continue
            wait = 3 if fire_at is None else max(0, min(3, int((fire_at - now) * 1000)))
            for mask, name in watch.events(wait):
                shot.lock = _lock_state(shot.lock, mask, name)
                if shot.killed:  # events read with the one that fired: before the kill too
                    continue
                wanted = (
                    watch.IN_OPEN if trigger.pattern == PHOTO_OPEN else watch.IN_CREATE | watch.IN_MOVED_TO
                )
                if trigger.kind != "file" or fire_at is not None or not mask & wanted:
                    continue
                if not re.search(trigger.pattern, name):
                    continue
                seen += 1
                if seen == trigger.nth:
                    if trigger.value == 0:
                        proc.send_signal(signal.SIGKILL)
                        shot.killed, shot.at = True, time.monotonic() - start
                    fire_at = time.monotonic() + trigger.value
            if shot.killed:
                break
        if not shot.killed:
            shot.at = time.monotonic() - start
        proc.wait(timeout=120)
    finally:
        watch.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    shot.returncode = proc.returncode
    shot.workers_seen = sum("spawn_main" in cmd for _, cmd in children.values())
    shot.left = _survivors(marker, children, within)
    _end(shot.left)
    shot.output = log.read_text(errors="replace")[-3000:]
    return shot


# --- campaign figures ----------------------------------------------------------------------


@dataclass
class Campaign:
    name: str
    started: float = field(default_factory=time.monotonic)
    trials: int = 0
    kills: int = 0
    phases: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    files_lost: int = 0
    processes_left: int = 0
    workers_killed: int = 0  # decoder workers seen alive at a kill (all had to go)
    last_run: float = 3.0  # how long the last run that completed took (s)
    log: list[str] = field(default_factory=list)

    def record(self, shot: Shot, problems: list[str]) -> None:
        self.trials += 1
        self.kills += shot.killed
        self.phases[shot.phase] += 1
        self.processes_left += len(shot.left)
        self.workers_killed += shot.workers_seen
        if shot.left:
            problems.append(f"processes left after the kill: {shot.left}")
        if shot.killed and shot.returncode != -signal.SIGKILL:
            problems.append(f"exit status {shot.returncode}, not killed:\n{shot.output}")
        if not shot.killed and shot.returncode != 0:
            problems.append(f"finished before the kill, with status {shot.returncode}:\n{shot.output}")
        what = f"killed at {shot.at:.2f}s" if shot.killed else f"completed in {shot.at:.2f}s"
        line = f"{self.name} #{self.trials} [{shot.trigger}] {what}: {shot.phase}{shot.detail}"
        if shot.workers_seen:
            line += f" ({shot.workers_seen} workers alive at the kill)"
        self.log.append(line)
        self.failures.extend(f"{line}: {p}" for p in problems)

    def summary(self) -> str:
        phases = ", ".join(f"{k}: {v}" for k, v in sorted(self.phases.items()))
        return (
            f"kill campaign {self.name}: {self.trials} trials, {self.kills} SIGKILLs, "
            f"{len(self.failures)} failures, {self.files_lost} files lost, "
            f"{self.processes_left} processes left (of {self.workers_killed} decoder workers alive "
            f"at kills), {time.monotonic() - self.started:.1f}s wall\n  phases: {phases}\n  "
            + "\n  ".join(self.log)
            + "".join(f"\nFAILURE {f}" for f in self.failures)
        )


def test_the_process_check_finds_what_a_killed_command_leaves(tmp_path):
    """The campaign's check has teeth: a child that outlives its killed parent is found
    (and then ended), whether it is seen before the kill or only by its marker."""
    sleeper = "import time; time.sleep(60)"
    script = (
        f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {sleeper!r}]); time.sleep(60)"
    )
    shot = _shoot(
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
    assert not any(_alive(pid) for pid in shot.left)


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
    rows = _rows(index)
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
    covered = _covered(rows, files)
    lost = previously - covered
    if lost:
        problems.append(f"committed photos lost: {sorted(lost)[:5]}")
    return problems, covered


def _check_complete(index: Path, files: dict, calibrates: bool) -> list[str]:
    """After a run that completed: every photo once, by path and content; a clean folder."""
    problems = []
    rows = _rows(index)
    if set(rows) != set(files):
        problems.append(
            f"catalogue != photos: missing {sorted(set(files) - set(rows))[:5]}, "
            f"extra {sorted(set(rows) - set(files))[:5]}"
        )
    for path, (size, mtime, digest, status) in rows.items():
        if path in files and (status != "ok" or (size, mtime) != files[path] or digest != _sha256(path)):
            problems.append(f"{path}: row {status} {size} {mtime} {digest} does not match the file")
    by_content = Counter(_sha256(p) for p in files)
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
    committed = _covered(_rows(index), _files(photos))
    for planned in itertools.chain(triggers, [Trigger("never")]):
        trigger = planned() if callable(planned) else planned  # which may add photos
        files = _files(photos)
        before = len(_covered(_rows(index), files))
        names_before = set(os.listdir(index))

        def progress(files=files) -> tuple[int, int]:
            return len(_covered(_rows(index), files)), len(files)

        polled = progress if trigger.kind in ("rows", "done") else None
        folders = sorted({Path(p).parent for p in files})
        log = logs / f"{campaign.trials}.log"
        shot = _shoot(cmd, dict(os.environ), index, trigger, log, polled, folders)
        problems, committed = _check_index(index, files, committed)
        if shot.killed:
            new = set(os.listdir(index)) - names_before
            shot.phase = _phase(index, shot, new, before, len(committed), len(files))
        else:
            campaign.last_run = shot.at
            shot.phase = "completed" if trigger.kind == "never" else "completed before the kill"
            problems += _check_complete(index, files, calibrates)
            campaign.files_lost += len(set(files) - set(_rows(index)))
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
    old = sorted(_files(photos))
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
    return {p: _sha256(p) for p in _files(root)}


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

        shot = _shoot(cmd, dict(os.environ), index, trigger, logs / f"{n}.log", progress)
        lines, _ = progress()
        away = set(before) - set(_files(library))
        if not shot.killed:
            shot.phase = "completed"
        elif lines == 0:
            shot.phase = "before the first action (startup, finding the groups)"
        elif lines < n_dupes:
            shot.phase = "mid-run"
        elif away & set(_rows(index)):
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
        there = _files(where) if where.exists() else {}
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
        left_aside = list(_files(aside)) if aside.exists() else []
        in_trash = list(_files(trash / "files")) if (trash / "files").exists() else []
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
        rows = _rows(index)
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
