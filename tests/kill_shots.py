"""The kill -9 campaign's machinery (tests/test_kill_campaign.py): processes found through
/proc, the index folder watched through inotify, one command run and killed on a trigger,
and the campaign's figures."""

import contextlib
import ctypes
import hashlib
import os
import re
import select
import signal
import sqlite3
import struct
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

MARKER = "LOOKALIKE_KILL_CAMPAIGN"  # in the environment of every process a command starts
GONE_WITHIN_S = 5.0

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


def alive(pid: int, started: int | None = None) -> bool:
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
        if alive(pid):
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
        left = {p: cmd for p, (started, cmd) in children.items() if alive(p, started)}
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


def catalogue_rows(index: Path) -> dict[str, Row]:
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


def files_under(root: Path) -> dict[str, tuple[int, int]]:
    """Every file below root: path -> (size, mtime_ns)."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = os.path.join(os.path.abspath(dirpath), n)
            st = os.stat(p)
            out[p] = (st.st_size, st.st_mtime_ns)
    return out


def committed_photos(rows: dict[str, Row], files: dict[str, tuple[int, int]]) -> set[str]:
    """Photos whose current state is committed to the catalogue."""
    return {p for p, sm in files.items() if p in rows and rows[p][:2] == sm and rows[p][3] == "ok"}


def sha256_of(path: str) -> str:
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


def shoot(
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
