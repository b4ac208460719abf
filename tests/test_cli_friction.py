"""The command line never leaves you guessing (issue 15): no-ops say so and exit 3, piped
output is not wrapped, progress shows on a terminal only, Ctrl-C says how to resume,
file/folder mix-ups and busy ports fail cleanly before any work, offline hints, tidy help."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from lookalike.cli import app
from lookalike.cli_io import EXIT_INTERRUPTED, EXIT_NOTHING

runner = CliRunner()
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # colours and cursor moves
CLI = [sys.executable, "-m", "lookalike.cli"]


def run(*args, code: int = 0, env: dict | None = None):
    result = runner.invoke(app, [str(a) for a in args], env=env)
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def in_terminal(args: list[str], cwd: Path, columns: int = 60) -> str:
    """Run the command line on a pseudo-terminal ``columns`` wide; all it wrote, without
    terminal escapes."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen([*CLI, *args], stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=120)
    os.close(master)
    return ANSI.sub("", b"".join(chunks).decode("utf-8", "replace"))


def piped(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


@pytest.fixture
def doubled(tmp_path, photo_dir, tf2_model):
    """photo_dir plus an exact copy of photo0.jpg deep in a long-named folder, indexed."""
    deep = photo_dir / ("a-folder-with-a-rather-long-name-" * 3) / "archive"
    deep.mkdir(parents=True)
    shutil.copy(photo_dir / "photo0.jpg", deep / "photo0-copy.jpg")
    index = tmp_path / "ix"
    run("index", photo_dir, "--model", tf2_model, "--index", index, "--workers", "0", "-q")
    return index, deep / "photo0-copy.jpg"


# --- no-ops: a warning and exit status 3 ----------------------------------------------------


def test_indexing_a_folder_without_images_warns_and_exits_3(tmp_path, tf2_model):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("no images here")
    res = run("index", tmp_path / "docs", "--model", tf2_model, "--index", tmp_path / "ix", code=EXIT_NOTHING)
    assert "warning: no image files found below" in res.stderr


def test_remove_matching_nothing_and_search_filters_matching_nothing_exit_3(index, photo_dir):
    res = run("remove", photo_dir / "nothing-here", "--index", index, code=EXIT_NOTHING)
    assert "removed 0 files" in res.stderr
    query = photo_dir / "photo0.jpg"
    res = run("search", query, "--label", "tabby", "--index", index, code=1)  # a feature-vector model's
    assert "error: label filter: this index has no labels" in res.stderr
    res = run("search", query, "--since", "2026-01-01", "--until", "2025-01-01", "--index", index, code=2)
    assert "--since 2026-01-01 is after --until 2025-01-01" in res.stderr  # a usage error
    res = run("search", query, "--under", photo_dir / "nowhere", "--index", index, code=EXIT_NOTHING)
    assert "no indexed image matches --under" in res.stderr
    run("search", query, "--under", photo_dir / "sub", "--index", index)  # something found: 0


def test_dupes_with_nothing_to_act_on_exits_3_and_writes_no_journal(index):
    res = run("dupes", "--preset", "exact", "--index", index, code=EXIT_NOTHING)
    assert "0 groups" in res.stdout and "warning: no duplicates found" in res.stderr
    res = run("dupes", "--preset", "exact", "--trash", "--index", index, code=EXIT_NOTHING)
    assert "nothing to trash" in res.stderr
    assert not (index / "journals").exists() or not list((index / "journals").iterdir())


def test_a_second_undo_restores_nothing_and_exits_3(doubled, tmp_path):
    index, copy = doubled
    run("dupes", "--preset", "exact", "--move-to", tmp_path / "aside", "--index", index)
    assert not copy.exists() or not (Path(str(copy).replace("-copy", "")).exists())
    run("undo", "--last", "--index", index)
    res = run("undo", "--last", "--index", index, code=EXIT_NOTHING)
    assert "every journal in" in res.stderr and "was undone" in res.stderr
    (journal,) = (index / "journals").glob("dupes-*.jsonl")
    res = run("undo", journal, code=EXIT_NOTHING)
    assert "already back in place" in res.stderr


# --- file/folder mix-ups, busy ports: clean errors before any work -------------------------


def test_html_report_path_mixups_fail_cleanly(index, tmp_path):
    existing = tmp_path / "report.txt"
    existing.write_text("mine")
    res = run("dupes", "--html", existing, "--index", index, code=1)
    assert "a file is there; --html takes a folder" in res.stderr and "Traceback" not in res.output
    assert existing.read_text() == "mine"
    res = run("dupes", "--html", tmp_path / "report.html", "--index", index, code=1)
    assert "--html takes a folder" in res.stderr and not (tmp_path / "report.html").exists()


def test_a_report_inside_an_indexed_folder_is_refused(index, photo_dir):
    """Its thumbnails would be indexed as photos by the next `index` and found as copies."""
    res = run("dupes", "--html", photo_dir / "report", "--index", index, code=1)
    assert f"it is inside {photo_dir}, which `lookalike index` walks" in res.stderr
    assert not (photo_dir / "report").exists() and "Traceback" not in res.output


def test_move_to_a_file_fails_before_anything_moves_or_a_journal_is_written(doubled, tmp_path):
    index, copy = doubled
    target = tmp_path / "not-a-folder"
    target.write_text("x")
    res = run("dupes", "--preset", "exact", "--move-to", target, "--index", index, code=1)
    assert "a file is there; --move-to takes a folder" in res.stderr
    res = run("dupes", "--preset", "exact", "--trash", "--journal", tmp_path, "--index", index, code=1)
    assert "a folder is there; --journal takes a file name" in res.stderr
    assert copy.exists() and not (index / "journals").exists()


def test_serve_on_a_busy_port_fails_before_announcing_the_url(index):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        res = run("serve", "--index", index, "--port", port, code=1)
    finally:
        busy.close()
    assert f"cannot listen on 127.0.0.1:{port}" in res.stderr and "in use" in res.stderr
    assert "serving" not in res.output


def test_the_default_model_offline_says_what_to_do(tmp_path):
    (tmp_path / "photos").mkdir()
    Image.new("RGB", (32, 32), "red").save(tmp_path / "photos" / "a.jpg")
    proxy = "http://127.0.0.1:9"  # nothing listens: as offline as it gets, at once
    env = {"https_proxy": proxy, "HTTPS_PROXY": proxy, "http_proxy": proxy, "HTTP_PROXY": proxy}
    res = run("index", tmp_path / "photos", "--index", tmp_path / "ix", "-q", env=env, code=1)
    assert "could not download" in res.stderr
    assert "--model PATH" in res.stderr and "TFHUB_CACHE_DIR" in res.stderr
    assert not (tmp_path / "ix").exists()


# --- help -----------------------------------------------------------------------------------


@pytest.mark.parametrize("columns", ["400", "80"])  # typer's panels; click's plain text (narrow)
def test_help_names_the_default_model_presets_with_thresholds_and_every_descriptor(columns):
    from lookalike.descriptors import DESCRIPTORS
    from lookalike.models.known import DEFAULT_MODEL
    from lookalike.search.presets import PRESETS

    width = {"COLUMNS": columns}
    index_help = run("index", "--help", env=width).stdout
    dupes_help = run("dupes", "--help", env=width).stdout
    search_help = run("search", "--help", env=width).stdout
    if columns == "80":  # every option's help beside it, several words a line
        assert "╭" not in index_help and max(len(line) for line in index_help.splitlines()) <= 80
        index_help = " ".join(index_help.split())  # the checks below read across line ends
        dupes_help, search_help = " ".join(dupes_help.split()), " ".join(search_help.split())
    for text in (index_help, dupes_help, search_help):
        assert "<bool>" not in text and "<list[" not in text and "<str>" not in text and "%Y" not in text
    assert "--since" in search_help and "<YYYY-MM-DD[THH:MM:SS]>" in search_help
    assert f"Default: {DEFAULT_MODEL}" in index_help and "about 10 MB" in index_help
    assert all(f"{name}: " in index_help for name in DESCRIPTORS)
    assert "pip install lookalike[ray]" in index_help  # not swallowed as console markup
    assert "exact: identical bytes only" in dupes_help
    for p in PRESETS.values():
        if p.threshold <= 1:
            assert f"{p.name} (cosine >= {p.threshold:g})" in dupes_help


# --- what is printed: no wrapping when piped, relative paths, the right reason --------------


def test_piped_output_is_never_wrapped_a_terminal_wraps_at_its_width(doubled, tmp_path):
    index, copy = doubled
    args = ["dupes", "--preset", "exact", "--index", str(index)]
    res = piped(args, tmp_path)
    assert res.returncode == 0, res.stderr
    assert any(str(copy) in line for line in res.stdout.splitlines())  # one line, grep finds it
    shown = in_terminal(args, tmp_path, columns=60)
    assert str(copy) not in shown and "1 group, 1 duplicate;" in shown  # folded at 60 columns for a person


def test_relative_paths(doubled, tmp_path, monkeypatch):
    index, copy = doubled
    monkeypatch.chdir(copy.parent.parent)
    res = run("dupes", "--preset", "exact", "--csv", "--relative", "--index", index)
    assert "archive/photo0-copy.jpg" in res.stdout and str(copy) not in res.stdout
    res = run("search", copy, "-k", "2", "--json", "--relative", "--index", index)
    assert '"path": "archive/photo0-copy.jpg"' in res.stdout


def test_a_protected_kept_copy_is_said_to_be_on_the_kept_copy(doubled):
    index, copy = doubled
    res = run("dupes", "--preset", "exact", "--protect", copy.parent, "--index", index)
    lines = res.stdout.splitlines()
    assert lines[0] == f"keep {copy}"
    assert "photo0.jpg" in lines[1] and lines[1].endswith("(the kept copy is in a protected folder)")


# --- progress on stderr, on a terminal only -------------------------------------------------


def test_undo_and_calibrate_show_progress_on_a_terminal_only(doubled, tmp_path, photo_dir):
    index, _ = doubled
    run("dupes", "--preset", "exact", "--move-to", tmp_path / "aside", "--index", index)
    res = piped(["undo", "--last", "--index", str(index)], tmp_path)
    assert res.returncode == 0 and "restoring" not in res.stderr and "restored 1 file" in res.stdout
    run("index", photo_dir, "--index", index, "--workers", "0", "-q")
    run("dupes", "--preset", "exact", "--move-to", tmp_path / "aside2", "--index", index)
    assert "restoring" in in_terminal(["undo", "--last", "--index", str(index)], tmp_path)
    shown = in_terminal(["calibrate", "--index", str(index), "--sample", "5"], tmp_path, columns=120)
    assert "calibrating" in shown and "calibrated on" in shown  # piped: no bar, as undo above


# --- Ctrl-C -----------------------------------------------------------------------------------


def test_ctrl_c_while_indexing_says_how_many_are_committed_and_how_to_resume(tmp_path, tf2_model):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(800):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(photos / f"{i:04}.png")
    index = tmp_path / "ix"
    args = ["index", str(photos), "--model", str(tf2_model), "--index", str(index), "--workers", "0"]
    proc = subprocess.Popen(  # Ctrl-C as on a terminal, also when the tests run as a background job (whose
        [*CLI, *args, "--batch-size", "8"],  # shell ignores SIGINT for them and so for their children)
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    start = time.monotonic()
    seen, tries = None, []
    while time.monotonic() < start + 120 and proc.poll() is None:
        try:
            with sqlite3.connect(f"file:{index / 'catalog.sqlite'}?mode=ro", uri=True, timeout=1) as db:
                if db.execute("SELECT count(*) FROM files").fetchone()[0] > 0:
                    seen = time.monotonic() - start
                    break
        except sqlite3.Error as exc:
            tries.append(f"{time.monotonic() - start:.2f}: {exc}")
        time.sleep(0.05)
    running = proc.poll() is None
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    why = f"files seen at {seen} s; running when signalled: {running}; reads: {tries[-3:]}; {out.decode()}"
    assert proc.returncode == EXIT_INTERRUPTED, f"{why}\n{err.decode()}"
    message = err.decode()
    assert "run the same command again to resume" in message
    committed = int(message.split("interrupted: ")[1].split()[0])
    with sqlite3.connect(index / "catalog.sqlite") as db:
        assert committed == db.execute("SELECT count(*) FROM files WHERE status = 'ok'").fetchone()[0] > 0
    res = run("index", photos, "--index", index, "--workers", "0", "-q")
    assert f"{committed} unchanged" in res.stdout


def test_undo_says_which_of_journal_and_last_is_wrong(index, tmp_path):
    res = run("undo", "--index", index, code=2)
    assert "give a JOURNAL, or --last for the newest one" in res.output
    res = run("undo", tmp_path / "j.jsonl", "--last", "--index", index, code=2)
    assert "give a JOURNAL or --last, not both" in res.output


def test_a_clean_up_that_fails_after_ctrl_c_is_still_an_interruption(index, monkeypatch):
    """A Ctrl-C inside a database session's exit made SQLAlchemy raise an AssertionError
    from its clean-up (1 in ~100 interrupts of `dupes`): a traceback and exit 1."""
    from lookalike import Index

    def cut_short(*args, **kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise AssertionError("session closed mid-statement") from None

    monkeypatch.setattr(Index, "duplicates", cut_short)
    res = run("dupes", "--index", index, code=EXIT_INTERRUPTED)
    assert "interrupted" in res.output and "AssertionError" not in res.output
    def says_what_it_kept(*args, **kwargs):  # as `index` does: its own line, then exit 130
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            print("interrupted: 0 images committed")
            raise typer.Exit(EXIT_INTERRUPTED) from None

    monkeypatch.setattr(Index, "duplicates", says_what_it_kept)
    res = run("dupes", "--index", index, code=EXIT_INTERRUPTED)
    assert res.output.count("interrupted") == 1, res.output  # not a second "interrupted"
    monkeypatch.setattr(Index, "duplicates", lambda *a, **k: 1 / 0)  # a bug, not Ctrl-C: its traceback
    assert isinstance(runner.invoke(app, ["dupes", "--index", str(index)]).exception, ZeroDivisionError)


def _decoders(pid: int) -> int:
    """How many decoder worker processes ``pid`` has (its spawned children, by /proc)."""
    count = 0
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and f"PPid:\t{pid}\n" in (entry / "status").read_text():
                count += b"spawn_main" in (entry / "cmdline").read_bytes()
        except OSError:
            continue
    return count


def test_ctrl_c_to_the_whole_process_group_ends_decoder_workers_quietly(tmp_path, tf2_model):
    """A terminal's Ctrl-C reaches the decoder processes too. One hit inside the pool's
    queue lock left the others (and so the parent's shutdown) waiting for ever; others
    printed KeyboardInterrupt tracebacks. Now only the parent hears it: Ctrl-C while the
    workers run ends the run within seconds, with no traceback."""
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(1)
    for i in range(400):
        Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(photos / f"{i:04}.png")
    after = 0.2  # seconds after both workers are up (on the old code: tracebacks, or a hang)
    index = tmp_path / "ix"
    args = ["index", str(photos), "--model", str(tf2_model), "--index", str(index), "--workers", "2"]
    proc = subprocess.Popen(
        [*CLI, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, as a terminal's foreground job
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while _decoders(proc.pid) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(after)
    os.killpg(proc.pid, signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"Ctrl-C {after} s after the workers started: still running a minute later")
    message = err.decode()
    assert proc.returncode in (0, EXIT_INTERRUPTED), message
    assert "Traceback" not in message and "KeyboardInterrupt" not in message, message


def test_ctrl_c_right_after_a_batch_is_written_is_held_until_it_is_counted(
    tmp_path, photo_dir, tf2_model, monkeypatch
):
    """CI found it: Ctrl-C between a batch's commit and the progress call said "0 images
    committed" with 8 in the catalogue. The commit and its count are now one step."""
    from lookalike import Index, IndexOptions
    from lookalike.storage import Store

    written = Store.add

    def add_then_ctrl_c(self, *args, **kwargs):
        written(self, *args, **kwargs)
        signal.raise_signal(signal.SIGINT)  # as a person pressing Ctrl-C just then

    monkeypatch.setattr(Store, "add", add_then_ctrl_c)
    told: list[tuple[int, int]] = []
    # Ctrl-C raises KeyboardInterrupt even where the tests were started in the background
    # (a shell starts those with SIGINT ignored, and Python then installs no handler)
    ignored_or_not = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            Index(tmp_path / "ix").add(
                [photo_dir],
                model=str(tf2_model),
                options=IndexOptions(workers=0, batch_size=3),
                progress=lambda done, total: told.append((done, total)),
            )
    finally:
        signal.signal(signal.SIGINT, ignored_or_not)
    with sqlite3.connect(tmp_path / "ix" / "catalog.sqlite") as db:
        committed = db.execute("SELECT count(*) FROM files WHERE status = 'ok'").fetchone()[0]
    assert told[-1] == (committed, 8) and committed == 3


def test_the_calibration_at_the_end_of_index_has_its_own_bar_on_a_terminal(tmp_path, tf2_model):
    from lookalike.search.calibration import AUTO_CALIBRATE
    from tests.conftest import make_photo

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(AUTO_CALIBRATE):
        make_photo(i, (64, 48)).save(photos / f"p{i:03}.jpg")
    index = tmp_path / "ix"
    args = ["index", str(photos), "--model", str(tf2_model), "--index", str(index), "--workers", "0"]
    shown = in_terminal(args, tmp_path, columns=120)
    assert f"indexed {AUTO_CALIBRATE} images" in shown.replace("\r\n", " ")
    assert "calibrating scores" in shown


def test_a_file_name_with_an_emoji_code_is_printed_as_it_is(tmp_path, photo_dir, tf2_model):
    """rich turned ":x:" and ":smile:" in file names into emoji, piped output included."""
    shutil.copy(photo_dir / "photo0.jpg", photo_dir / "a:x:b.jpg")
    (photo_dir / "bad:smile:.jpg").write_bytes(b"")
    index = tmp_path / "ix"
    run("index", photo_dir, "--model", tf2_model, "--index", index, "--workers", "0", "-q")
    res = piped(["dupes", "--index", str(index)], tmp_path)
    assert str(photo_dir / "a:x:b.jpg") in res.stdout
    assert "\u274c" not in res.stdout, res.stdout
    res = piped(["info", "--errors", "--index", str(index)], tmp_path)
    assert "bad:smile:.jpg" in res.stdout and "\U0001f604" not in res.stdout, res.stdout


def test_indexing_the_index_folder_itself_is_refused_before_anything_is_written(
    tmp_path, photo_dir, tf2_model
):
    photos = tmp_path / "lib"
    shutil.copytree(photo_dir / "sub", photos)
    before = sorted(p.name for p in photos.iterdir())
    for spelled in (photos, photos / ".." / "lib"):
        res = run("index", photos, "--index", spelled, "--model", tf2_model, code=1)
        assert "is the index folder, which is never indexed" in " ".join(res.stderr.split())
    assert sorted(p.name for p in photos.iterdir()) == before  # no catalogue among the photos
    run("index", photos, "--index", photos / "index", "--model", tf2_model)  # a folder of its own: fine
