"""Acting on duplicates: move aside, trash, hardlink; undo; nothing else touched."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lookalike import Index, IndexOptions
from lookalike.cli import app
from lookalike.cli_io import EXIT_INTERRUPTED
from lookalike.storage import Store
from tests.conftest import make_photo

runner = CliRunner()
THRESHOLD = "0.98"


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file below root with (size, mtime_ns): what 'untouched' means."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            st = os.stat(os.path.join(dirpath, n))
            out[os.path.relpath(os.path.join(dirpath, n), root)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture
def library(tmp_path, photo_dir, tf2_model):
    """Photos plus an exact copy and a resized copy of photo0; indexed."""
    shutil.copy2(photo_dir / "photo0.jpg", photo_dir / "sub" / "exact_copy.jpg")
    Image.open(photo_dir / "photo0.jpg").resize((160, 120)).save(photo_dir / "smaller.jpg", quality=95)
    index = tmp_path / "ix"
    Index(index).add([photo_dir], model=str(tf2_model), options=IndexOptions(workers=0))
    return photo_dir, index


def _dupes(index, *args):
    res = runner.invoke(app, ["dupes", "--threshold", THRESHOLD, "--index", str(index), *args])
    assert res.exit_code == (3 if "warning: no duplicates" in res.stderr else 0), res.output  # 3: none
    return res


def _journal(output: str) -> str:
    return output.split("lookalike undo ")[1].split()[0]


def test_report_finds_both_copies(library):
    photos, index = library
    res = _dupes(index)
    assert f"keep {photos / 'photo0.jpg'}" in res.stdout.replace("\n", "")
    assert "exact" in res.stdout and "copy" in res.stdout and "2 duplicates" in res.stdout


def test_move_to_and_undo(library, tmp_path):
    photos, index = library
    before = _tree(photos)
    aside = tmp_path / "aside"
    res = _dupes(index, "--move-to", str(aside))
    assert "move: 2 files, 0 skipped" in res.stdout
    after = _tree(photos)
    assert set(before) - set(after) == {"sub/exact_copy.jpg", "smaller.jpg"}
    assert all(after[k] == before[k] for k in after)  # nothing else touched
    assert (aside / str(photos).lstrip("/") / "smaller.jpg").exists()
    assert _dupes(index).stdout.count("duplicates") == 1 and "0 groups" in _dupes(index).stdout
    res = runner.invoke(app, ["undo", _journal(res.stdout)])
    assert res.exit_code == 0 and "restored 2 files" in res.stdout
    assert _tree(photos) == before
    assert "indexed again" in res.stdout
    assert list(aside.iterdir()) == []  # the folders the move made to mirror the paths are gone
    assert "2 duplicates" in _dupes(index).stdout  # indexed again: found again without an index run


def test_an_undo_cut_short_before_indexing_is_finished_by_the_next(library, tmp_path):
    """An undo killed after putting files back but before indexing them left them out of the
    index for good: the next undo found them "already back in place" and indexed nothing."""
    from lookalike import actions

    photos, index = library
    journal = _journal(_dupes(index, "--move-to", str(tmp_path / "aside")).stdout)
    actions.undo(Path(journal))  # what an undo killed before its indexing step leaves
    assert Index(index).file_at(photos / "smaller.jpg") is None
    res = runner.invoke(app, ["undo", journal])
    assert res.exit_code == 3 and "already back in place" in res.output, res.output
    assert Index(index).file_at(photos / "smaller.jpg") is not None
    assert "2 duplicates" in _dupes(index).stdout


def test_moving_into_a_folder_of_indexed_photos_is_refused(library, tmp_path):
    """Copies moved among indexed photos would be indexed and found again by the next run:
    into a folder of them, also through a symbolic link (was: accepted), or into a new
    folder inside one (was: accepted)."""
    photos, index = library
    before = _tree(photos)
    (tmp_path / "link").symlink_to(photos / "sub")
    walked = f"it is inside {photos}, which `lookalike index` walks"  # refused before duplicates are sought
    for target, why in ((photos / "sub", walked), (tmp_path / "link", walked), (photos / "aside", walked)):
        res = runner.invoke(
            app, ["dupes", "--threshold", THRESHOLD, "--index", str(index), "--move-to", str(target)]
        )
        assert res.exit_code == 1 and why in res.output.replace("\n", ""), res.output
    with Store(index, writable=True) as store:  # as an index made before roots were recorded
        store.catalogue.delete_meta("roots")
    for target, why in (
        (photos / "sub", "it holds indexed photos"),
        (tmp_path / "link", "it holds indexed photos"),
        (photos / "aside", f"it is inside {photos}, which holds indexed photos"),
    ):
        res = runner.invoke(
            app, ["dupes", "--threshold", THRESHOLD, "--index", str(index), "--move-to", str(target)]
        )
        assert res.exit_code == 1 and why in res.output.replace("\n", ""), res.output
    assert _tree(photos) == before and not list((index / "journals").glob("*.jsonl"))
    assert not (photos / "aside").exists()


def test_ctrl_c_during_an_action_says_what_was_done_and_how_to_undo_it(library, tmp_path, monkeypatch):
    from lookalike import actions

    photos, index = library
    before = _tree(photos)
    done = actions._do
    calls = []

    def second_is_interrupted(entry: dict) -> None:
        calls.append(entry["path"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        done(entry)

    monkeypatch.setattr(actions, "_do", second_is_interrupted)
    res = runner.invoke(
        app, ["dupes", "--threshold", THRESHOLD, "--index", str(index), "--move-to", str(tmp_path / "aside")]
    )
    assert res.exit_code == EXIT_INTERRUPTED, res.output
    assert "move: 1 file, 0 skipped; undo with" in res.stderr
    monkeypatch.setattr(actions, "_do", done)
    res = runner.invoke(app, ["undo", _journal(res.stderr)])
    assert "restored 1 file" in res.stdout and _tree(photos) == before


def test_trash_and_undo(library, trash):
    photos, index = library
    before = _tree(photos)
    res = _dupes(index, "--trash")
    assert "trash: 2 files" in res.stdout
    assert sorted(p.name for p in (trash / "files").iterdir()) == ["exact_copy.jpg", "smaller.jpg"]
    res = runner.invoke(app, ["undo", _journal(res.stdout)])
    assert "restored 2 files" in res.stdout and _tree(photos) == before
    assert list((trash / "info").iterdir()) == []


def test_hardlink_only_exact_copies_and_undo(library):
    photos, index = library
    keep, copy = photos / "photo0.jpg", photos / "sub" / "exact_copy.jpg"
    res = _dupes(index, "--hardlink")
    assert "hardlink: 1 file, 1 skipped" in res.stdout
    assert "not an exact copy" in res.output
    assert os.stat(keep).st_ino == os.stat(copy).st_ino
    assert (photos / "smaller.jpg").exists()
    data = keep.read_bytes()
    res = runner.invoke(app, ["undo", _journal(res.stdout)])
    assert "restored 1 file" in res.stdout
    assert os.stat(keep).st_ino != os.stat(copy).st_ino and copy.read_bytes() == data
    assert os.stat(keep).st_nlink == 1


def test_changed_files_are_skipped(library, tmp_path):
    photos, index = library
    make_photo(77).save(photos / "smaller.jpg")  # changed after indexing
    res = _dupes(index, "--move-to", str(tmp_path / "aside"))
    assert "move: 1 file, 1 skipped" in res.stdout and "changed since indexing" in res.output
    assert (photos / "smaller.jpg").exists()


def test_undo_skips_what_did_not_happen(library, tmp_path):
    photos, index = library
    res = _dupes(index, "--move-to", str(tmp_path / "aside"))
    journal = _journal(res.stdout)
    make_photo(5).save(photos / "smaller.jpg")  # someone put a new file at the old path
    res = runner.invoke(app, ["undo", journal])
    assert "restored 1 file, 1 skipped" in res.stdout and "taken" in res.output
    assert res.exit_code == 1  # not all was put back: a script must not take it for done


def test_one_action_at_a_time(library, tmp_path):
    _, index = library
    res = runner.invoke(app, ["dupes", "--trash", "--hardlink", "--index", str(index)])
    assert res.exit_code == 2
    res = runner.invoke(app, ["undo", str(tmp_path / "none.jsonl")])
    assert res.exit_code == 1 and "no journal" in res.output


@pytest.mark.parametrize(
    "line",
    ['{"action": "move", "pa', '{"path": "/x/y.jpg"}\n'],  # a crash mid-write; an edit: no action
    ids=["torn", "missing-field"],
)
def test_undo_survives_a_torn_or_edited_journal_line(library, tmp_path, line):
    photos, index = library
    before = _tree(photos)
    res = _dupes(index, "--move-to", str(tmp_path / "aside"))
    journal = _journal(res.stdout)
    with open(journal, "a") as f:
        f.write(line)
    res = runner.invoke(app, ["undo", journal])
    assert res.exit_code == 0 and "restored 2 files, 1 skipped" in res.stdout
    assert "unreadable journal line" in res.output
    assert _tree(photos) == before


def test_a_run_that_changes_nothing_leaves_no_journal_for_undo_last(library):
    """A second --hardlink finds only skips: it writes no journal, says nothing changed,
    and `undo --last` still undoes the first run."""
    photos, index = library
    keep, copy = photos / "photo0.jpg", photos / "sub" / "exact_copy.jpg"
    journal = _journal(_dupes(index, "--hardlink").stdout)
    journals = set((index / "journals").iterdir())
    res = runner.invoke(app, ["dupes", "--threshold", THRESHOLD, "--index", str(index), "--hardlink"])
    assert "hardlink: 0 files, 1 skipped; nothing was changed" in res.stdout and "undo with" not in res.stdout
    assert set((index / "journals").iterdir()) == journals == {Path(journal)}
    res = runner.invoke(app, ["undo", "--last", "--index", str(index)])
    assert res.exit_code == 0 and "restored 1 file" in res.stdout, res.output
    assert os.stat(keep).st_ino != os.stat(copy).st_ino


def test_a_run_whose_every_action_failed_leaves_no_journal_for_undo_last(library, tmp_path):
    """A --move-to that could not move anything (its folders cannot be made) left a journal
    of failed attempts; `undo --last` took it ("already back in place") and the run before
    stayed undone."""
    photos, index = library
    keep, copy = photos / "photo0.jpg", photos / "sub" / "exact_copy.jpg"
    journal = _journal(_dupes(index, "--hardlink").stdout)
    blocked = tmp_path / "aside"
    blocked.mkdir()
    (blocked / str(photos).split(os.sep)[1]).write_text("")  # a file where a folder must go
    res = runner.invoke(
        app, ["dupes", "--threshold", THRESHOLD, "--index", str(index), "--move-to", str(blocked)]
    )
    assert res.exit_code == 1 and "failed: Not a directory" in res.stdout + res.stderr, res.output
    assert set((index / "journals").iterdir()) == {Path(journal)}
    res = runner.invoke(app, ["undo", "--last", "--index", str(index)])
    assert res.exit_code == 0 and "restored 1 file" in res.stdout, res.output
    assert os.stat(keep).st_ino != os.stat(copy).st_ino


def test_undo_last_passes_by_a_journal_already_undone(library, tmp_path):
    """Two actions, then `undo --last` twice: the second took the newest journal again
    ("already back in place", exit 3) and the first action stayed done. A journal put back
    in full is now passed by, and the next `undo --last` says none is left."""
    photos, index = library
    keep, copy = photos / "photo0.jpg", photos / "sub" / "exact_copy.jpg"
    _dupes(index, "--hardlink")
    assert os.stat(keep).st_ino == os.stat(copy).st_ino
    _dupes(index, "--move-to", str(tmp_path / "aside"))
    assert not (photos / "smaller.jpg").exists()
    res = runner.invoke(app, ["undo", "--last", "--index", str(index)])
    assert res.exit_code == 0 and (photos / "smaller.jpg").exists(), res.output
    assert os.stat(keep).st_ino == os.stat(copy).st_ino
    res = runner.invoke(app, ["undo", "--last", "--index", str(index)])
    assert res.exit_code == 0 and "restored 1 file" in res.stdout, res.output
    assert os.stat(keep).st_ino != os.stat(copy).st_ino
    res = runner.invoke(app, ["undo", "--last", "--index", str(index)])
    assert res.exit_code == 3 and "was undone" in res.stderr, res.output


def test_undo_last_takes_the_newest_journal_and_version_is_printed(library, tmp_path):
    photos, index = library
    before = _tree(photos)
    _dupes(index, "--move-to", str(tmp_path / "aside"))
    res = runner.invoke(app, ["undo", "--last", "--index", str(index)])
    assert res.exit_code == 0 and "restored 2 files" in res.stdout and _tree(photos) == before
    assert runner.invoke(app, ["undo", "--index", str(index)]).exit_code == 2  # a journal or --last
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.stdout.startswith("lookalike ")


def test_a_member_grouped_only_through_one_that_goes_too_is_left(library, tmp_path):
    """A duplicate in its group only as a copy of the group's centre (``via``), which is
    removed too, is skipped: nothing it copies would stay. Through a member that stays
    (not among the duplicates), it goes."""
    photos, index = library
    idx = Index(index)
    groups = idx.duplicates(0.98)
    exact = next(d for d in groups[0].duplicates if d.kind == "exact")
    smaller = next(d for d in groups[0].duplicates if d.kind != "exact")
    smaller.via = exact.row.path  # as the grouping says of a copy of the centre only
    report = idx.act_on_duplicates(groups, "move", move_to=tmp_path / "aside")
    assert report.done == [exact.row.path]
    assert report.skipped == [(smaller.row.path, f"close only to {exact.row.path}, which goes too, "
                                                 "not to the kept file: review it")]  # fmt: skip
    assert (photos / "smaller.jpg").exists()
    groups = idx.duplicates(0.98)
    [only] = groups[0].duplicates
    only.via = str(photos / "photo0.jpg")  # the kept file: it stays
    assert idx.act_on_duplicates(groups, "move", move_to=tmp_path / "aside2").done == [only.row.path]


def test_a_journal_named_onto_a_photo_is_refused_and_undo_of_one_is_a_clear_error(library, trash):
    photos, index = library
    before, data = _tree(photos), (photos / "photo0.jpg").read_bytes()
    catalogue = (index / "catalog.sqlite").read_bytes()
    for target in (photos / "photo0.jpg", index / "catalog.sqlite"):
        res = runner.invoke(app, ["dupes", "--threshold", THRESHOLD, "--index", str(index), "--trash",
                                  "--journal", str(target)])  # fmt: skip
        assert res.exit_code == 1 and "not a lookalike journal" in res.output, res.output
    assert _tree(photos) == before and (photos / "photo0.jpg").read_bytes() == data
    assert (index / "catalog.sqlite").read_bytes() == catalogue
    res = runner.invoke(app, ["undo", str(photos / "photo0.jpg")])
    assert res.exit_code == 1 and "error: " in res.output and "not a lookalike journal" in res.output
    assert (photos / "photo0.jpg").read_bytes() == data
    text = photos.parent / "notes.jsonl"  # text, but no line of it an action: not "all back"
    text.write_text('garbage\n{"action": "paint", "path": "/x"}\n', encoding="utf-8")
    res = runner.invoke(app, ["undo", str(text)])
    assert res.exit_code == 1 and "not a lookalike journal" in res.output, res.output
    assert not text.with_name("notes.jsonl.undone").exists()


def test_a_reused_journal_after_a_torn_line_starts_each_entry_on_its_own_line(library, tmp_path):
    photos, index = library
    before = _tree(photos)
    journal = tmp_path / "j.jsonl"
    old = {"action": "move", "path": "/gone.jpg", "dest": "/aside/gone.jpg", "size": 1, "mtime_ns": 1}
    journal.write_text(json.dumps(old) + '\n{"action": "mo')  # a crash mid-write
    res = _dupes(index, "--move-to", str(tmp_path / "aside"), "--journal", str(journal))
    assert "move: 2 files" in res.stdout
    res = runner.invoke(app, ["undo", str(journal)])
    assert "restored 2 files" in res.stdout and "unreadable journal line" in res.output
    assert _tree(photos) == before


def _linked_library(tmp_path: Path, model: Path) -> tuple[Path, Path]:
    """A library whose one real copy of a photo (sub/d.jpg) has an exact twin outside it,
    named in the library by a symbolic link (best/k.jpg); its index is tmp_path/ix."""
    lib, outside = tmp_path / "lib", tmp_path / "outside"
    for folder in (lib / "sub", lib / "best", outside):
        folder.mkdir(parents=True)
    make_photo(3).save(outside / "k.jpg", quality=92)
    os.utime(outside / "k.jpg", (978_307_200, 978_307_200))  # older than the library's copy
    shutil.copyfile(outside / "k.jpg", lib / "sub" / "d.jpg")
    (lib / "best" / "k.jpg").symlink_to("../../outside/k.jpg")
    make_photo(4).save(lib / "other.jpg")
    Index(tmp_path / "ix").add([lib], model=str(model), options=IndexOptions(workers=0))
    return lib, tmp_path / "ix"


@pytest.mark.parametrize("edit", ["append", "same size"])
def test_undo_of_a_hardlink_does_not_give_back_edited_bytes_as_the_old_file(library, edit):
    """The kept file edited in place after --hardlink: undo copied the edited bytes out under
    the copy's old mtime and said it restored the file. Now it says why and leaves the link."""
    photos, index = library
    keep, copy = photos / "photo0.jpg", photos / "sub" / "exact_copy.jpg"
    _dupes(index, "--hardlink")
    data = bytearray(keep.read_bytes())
    if edit == "append":
        data += b"EDITED"
    else:
        data[-100] ^= 0xFF
    keep.write_bytes(data)
    res = runner.invoke(app, ["undo", "--last", "--index", str(index)])
    assert res.exit_code == 1 and "restored 0 files" in res.stdout, res.output
    assert "its bytes changed since it was hardlinked" in res.stdout + res.stderr
    assert os.stat(keep).st_ino == os.stat(copy).st_ino and copy.read_bytes() == bytes(data)


def test_undo_of_a_hardlink_whose_kept_file_is_gone_gives_the_copy_its_own_mode_back(library):
    """The kept file deleted after --hardlink: the copy holds the bytes alone, but with the
    kept file's mode (was: left so, "not a hardlink to the kept file any more")."""
    photos, index = library
    keep, copy = photos / "photo0.jpg", photos / "sub" / "exact_copy.jpg"
    own = os.stat(copy)
    os.chmod(keep, 0o640)  # the kept file's mode differs from the copy's own
    _dupes(index, "--hardlink")
    assert os.stat(copy).st_mode & 0o777 == 0o640
    keep.unlink()
    res = runner.invoke(app, ["undo", "--last", "--index", str(index)])
    assert res.exit_code == 0 and "restored 1 file" in res.stdout, res.output
    st = os.stat(copy)
    assert (st.st_mode, st.st_mtime_ns, st.st_size) == (own.st_mode, own.st_mtime_ns, own.st_size)
    (journal,) = (index / "journals").glob("dupes-*.jsonl")
    res = runner.invoke(app, ["undo", str(journal)])
    assert res.exit_code == 3 and "already back in place" in res.output, res.output


def test_no_hardlink_is_made_to_a_kept_file_that_is_a_symbolic_link(tmp_path, tf2_model):
    lib, index = _linked_library(tmp_path, tf2_model)
    data = (lib / "sub" / "d.jpg").read_bytes()
    prefer = ["--prefer-folder", str(lib / "best")]  # the link is kept
    assert f"keep {lib / 'best' / 'k.jpg'}" in _dupes(index, *prefer).stdout.replace("\n", "")
    res = runner.invoke(
        app, ["dupes", "--threshold", THRESHOLD, "--index", str(index), *prefer, "--hardlink"]
    )
    assert (
        res.exit_code == 1 and "hardlink: 0 files, 1 skipped" in res.stdout and "symbolic link" in res.output
    )
    d = lib / "sub" / "d.jpg"
    assert not d.is_symlink() and os.stat(d).st_nlink == 1 and d.read_bytes() == data


def test_the_library_s_own_file_is_kept_over_a_link_to_an_older_twin_elsewhere(tmp_path, tf2_model, trash):
    lib, index = _linked_library(tmp_path, tf2_model)
    data = (lib / "sub" / "d.jpg").read_bytes()
    res = runner.invoke(app, ["dupes", "--threshold", THRESHOLD, "--index", str(index), "--json"])
    group = json.loads(res.stdout)["groups"][0]
    assert group["keep"] == str(lib / "sub" / "d.jpg"), group  # older, but only a link's target
    assert "not a symbolic link" in json.dumps(group)
    res = runner.invoke(app, ["dupes", "--threshold", THRESHOLD, "--index", str(index), "--trash"])
    assert "trash: 0 files, 1 skipped" in res.stdout and "symbolic link" in res.output, res.output
    assert (lib / "sub" / "d.jpg").read_bytes() == data and (lib / "best" / "k.jpg").is_symlink()


def test_undoing_a_hardlink_writes_no_file_already_there_and_a_second_undo_finds_it_back(library, tmp_path):
    photos, index = library
    copy = photos / "sub" / "exact_copy.jpg"
    data = copy.read_bytes()
    journal = _journal(_dupes(index, "--hardlink").stdout)
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    Path(f"{copy}.lookalike-restore").symlink_to(notes)  # a name an older undo wrote through
    res = runner.invoke(app, ["undo", journal])
    assert "restored 1 file" in res.stdout
    assert notes.read_text() == "my notes" and not copy.is_symlink() and copy.read_bytes() == data
    assert os.stat(copy).st_nlink == 1
    res = runner.invoke(app, ["undo", journal])
    assert res.exit_code == 3 and "already back in place" in res.output


def test_an_index_on_read_only_media_lists_duplicates_and_refuses_to_act(library, read_only_mount, tmp_path):
    """Photos on a writable disk, their index on read-only media: `dupes` reports, but an
    action is refused before any file moves or any journal is written (the index could not
    be told the files left)."""
    photos, index = library
    source, mount = read_only_mount
    shutil.copytree(index, source, dirs_exist_ok=True)
    view = mount()
    before = _tree(photos)
    res = runner.invoke(app, ["dupes", "--threshold", THRESHOLD, "--index", str(view)])
    assert res.exit_code == 0 and "2 duplicates" in res.stdout, res.output
    journal = tmp_path / "elsewhere" / "j.jsonl"
    for action in (["--trash"], ["--move-to", str(tmp_path / "aside"), "--journal", str(journal)]):
        res = runner.invoke(app, ["dupes", "--threshold", THRESHOLD, "--index", str(view), *action])
        assert res.exit_code == 1 and "read-only media" in res.stderr, res.output
        assert "Traceback" not in res.output
    assert _tree(photos) == before and not journal.exists() and not (tmp_path / "aside").exists()
    assert not (source / "journals").exists()


def test_one_dupes_action_or_undo_at_a_time_whatever_the_index(library, tmp_path, trash):
    """Two indexes of one folder, acting at once, each trashed the copy the other kept (0 of
    240 copies left), and two trashings at once lost files under one trash name. While
    another action or undo holds this user's lock, one is refused and nothing is touched."""
    from lookalike.models.sources import cache_dir
    from lookalike.storage.locks import FileLock

    photos, index = library
    Index(tmp_path / "ix2").add([photos], model=str(Index(index).manifest().model.source))  # one folder
    before = _tree(photos)
    journal = _journal(_dupes(index, "--trash").stdout)
    after = _tree(photos)
    other = FileLock(cache_dir() / "actions.lock", "actions")  # another process's run, going on
    try:
        res = runner.invoke(
            app, ["dupes", "--threshold", THRESHOLD, "--index", str(tmp_path / "ix2"), "--trash"]
        )
        busy = "another `lookalike dupes` action, `undo` or review page action is running"
        assert res.exit_code == 1 and busy in res.output
        res = runner.invoke(app, ["undo", journal])
        assert res.exit_code == 1 and busy in res.output
        assert _tree(photos) == after
    finally:
        other.release()
    assert runner.invoke(app, ["undo", journal]).exit_code == 0
    assert _tree(photos) == before


def test_a_journal_that_is_no_regular_file_is_refused_and_one_there_before_is_kept(library, tmp_path):
    """`--journal` on an empty file that was there, or a device: deleted when the run did
    nothing (as root, /dev/null itself); a pipe hung the run. Now only a journal the run
    made is removed, and what is not a regular file is refused before anything is done."""
    _, index = library
    notes = tmp_path / "notes.txt"
    notes.write_text("")
    _dupes(index, "--hardlink")  # the exact copy is linked: the next run has nothing to do
    res = runner.invoke(
        app, ["dupes", "--threshold", THRESHOLD, "--index", str(index), "--hardlink", "--journal", str(notes)]
    )
    assert "nothing was changed" in res.stdout and notes.exists(), res.output
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    res = runner.invoke(
        app, ["dupes", "--threshold", THRESHOLD, "--index", str(index), "--trash", "--journal", str(fifo)]
    )
    assert res.exit_code != 0 and "is not a regular file" in res.output, res.output


def test_a_file_trashed_through_a_linked_folder_on_another_volume_is_found_again(tmp_path, monkeypatch):
    """send2trash records a volume trash's path relative to the volume's top as it was
    spelled: through a link in the library to another volume, "../../home/me/lib/shm/d.jpg".
    Undo joined that to the top unnormalised and said "not found in the trash"."""
    from lookalike import actions

    top, library = tmp_path / "shm", tmp_path / "home" / "lib"
    trash = top / ".Trash-0"
    (trash / "info").mkdir(parents=True)
    (trash / "files").mkdir()
    (trash / "files" / "d.jpg").write_bytes(b"x" * 10)
    relative = os.path.relpath(library / "shm" / "d.jpg", top)  # ../home/lib/shm/d.jpg
    (trash / "info" / "d.jpg.trashinfo").write_text(
        f"[Trash Info]\nPath={relative}\nDeletionDate=2026-12-04T09:29:19\n"
    )
    monkeypatch.setattr(actions, "_trash_dirs", lambda paths: [(trash, top)])
    entry = {"path": str(library / "shm" / "d.jpg"), "real": str(top / "d.jpg"), "size": 10}
    assert actions._trashed(entry) == (trash / "files" / "d.jpg", trash / "info" / "d.jpg.trashinfo")


def test_an_action_cut_short_by_an_error_says_what_was_done_and_how_to_undo_it(
    library, tmp_path, monkeypatch
):
    """A journal on a disk that filled up after the first file: the output was only
    "error: [Errno 28] No space left on device", though files had been moved."""
    from lookalike import actions

    photos, index = library
    before = _tree(photos)
    write = actions._Journal.write
    calls = []

    def second_finds_the_disk_full(self, entry: dict) -> None:
        calls.append(entry["path"])
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        write(self, entry)

    monkeypatch.setattr(actions._Journal, "write", second_finds_the_disk_full)
    res = runner.invoke(
        app, ["dupes", "--threshold", THRESHOLD, "--index", str(index), "--move-to", str(tmp_path / "aside")]
    )
    assert res.exit_code == 1 and "No space left on device" in res.stderr, res.output
    assert "move: 1 file, 0 skipped; undo with" in res.stderr
    monkeypatch.setattr(actions._Journal, "write", write)
    res = runner.invoke(app, ["undo", _journal(res.stderr)])
    assert "restored 1 file" in res.stdout and _tree(photos) == before


def test_a_link_in_a_protected_folder_protects_the_file_it_leads_to(tmp_path, photo_dir, tf2_model, trash):
    """`--protect prot` with prot/link.jpg -> lib/x.jpg: the two paths are one file, and the
    one kept was the path without links, outside the protected folder; x.jpg was trashed as
    a copy of an older y.jpg, and the protected link was left dangling."""
    lib, prot = tmp_path / "lib", tmp_path / "prot"
    lib.mkdir()
    prot.mkdir()
    shutil.copy2(photo_dir / "photo0.jpg", lib / "y.jpg")
    shutil.copy2(photo_dir / "photo0.jpg", lib / "x.jpg")
    os.utime(lib / "y.jpg", (1_500_000_000, 1_500_000_000))  # older: kept by the rules
    (prot / "link.jpg").symlink_to(lib / "x.jpg")
    index = tmp_path / "ix"
    Index(index).add([lib, prot], model=str(tf2_model), options=IndexOptions(workers=0))
    res = runner.invoke(app, ["dupes", "--index", str(index), "--protect", str(prot), "--trash"])
    assert res.exit_code == 0 and "trash: 1 file" in res.stdout, res.output
    assert (lib / "x.jpg").exists() and (prot / "link.jpg").exists() and not (lib / "y.jpg").exists()


def test_a_kept_link_to_a_file_the_index_does_not_hold_vouches_for_no_copy(
    tmp_path, photo_dir, tf2_model, trash
):
    """`--prefer-folder lib/pref` whose link.jpg leads outside the library: the link was kept
    and the library's only real copy, y.jpg, trashed."""
    lib, outside = tmp_path / "lib", tmp_path / "outside"
    (lib / "pref").mkdir(parents=True)
    outside.mkdir()
    shutil.copy2(photo_dir / "photo0.jpg", outside / "x.jpg")
    shutil.copy2(photo_dir / "photo0.jpg", lib / "y.jpg")
    (lib / "pref" / "link.jpg").symlink_to(outside / "x.jpg")
    index = tmp_path / "ix"
    Index(index).add([lib], model=str(tf2_model), options=IndexOptions(workers=0))
    res = runner.invoke(
        app, ["dupes", "--index", str(index), "--prefer-folder", str(lib / "pref"), "--trash"]
    )
    assert res.exit_code == 1 and "which the index does not hold" in res.output, res.output
    assert (lib / "y.jpg").exists()


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MB file system of its own (tmpfs; skipped where it cannot be mounted)."""
    import subprocess

    folder = tmp_path / "small"
    folder.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(folder)], capture_output=True
    ).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def test_a_move_to_another_file_system_cut_short_leaves_no_part_copy_under_the_photos_name(
    tmp_path, photo_dir, tf2_model, small_disk
):
    """shutil.move copied a duplicate to another file system under its own name and
    removed the original only once copied: a full disk (or a kill) left a partial file at
    the destination, looking like the photo. The copy is now made under a .lookalike-part
    name, renamed once whole, and removed when cut short; the original stays."""
    noise = np.random.default_rng(3).integers(0, 256, (900, 900, 3), np.uint8)
    Image.fromarray(noise).save(photo_dir / "big.png")  # ~2.4 MB: does not fit in 1 MB
    shutil.copy2(photo_dir / "big.png", photo_dir / "big-copy.png")
    index = tmp_path / "ix"
    Index(index).add([photo_dir], model=str(tf2_model), options=IndexOptions(workers=0))
    before = _tree(photo_dir)
    res = runner.invoke(
        app, ["dupes", "--preset", "exact", "--index", str(index), "--move-to", str(small_disk)]
    )
    assert res.exit_code == 1 and "No space left on device" in res.output, res.output
    assert _tree(photo_dir) == before
    left = [os.path.join(d, n) for d, _, names in os.walk(small_disk) for n in names]
    assert left == [], left


def test_a_photo_whose_name_is_as_long_as_a_name_can_be_moves_to_another_file_system(
    tmp_path, photo_dir, tf2_model, small_disk
):
    """The copy is made under a short hidden name: the photo's name plus a suffix could be
    too long (a 250-byte name would fail with "File name too long")."""
    long_name = "x" * 246 + ".jpg"
    shutil.copy2(photo_dir / "photo0.jpg", photo_dir / long_name)
    index = tmp_path / "ix"
    Index(index).add([photo_dir], model=str(tf2_model), options=IndexOptions(workers=0))
    res = runner.invoke(
        app, ["dupes", "--preset", "exact", "--index", str(index), "--move-to", str(small_disk)]
    )
    assert res.exit_code == 0 and "move: 1 file" in res.output, res.output
    moved = [os.path.join(d, n) for d, _, names in os.walk(small_disk) for n in names]
    assert [os.path.basename(m) for m in moved] == [long_name]
    assert (photo_dir / "photo0.jpg").exists() and not (photo_dir / long_name).exists()


def test_a_photo_whose_name_is_as_long_as_a_name_can_be_is_hardlinked_and_given_back(
    tmp_path, photo_dir, tf2_model
):
    """The hardlink was made as NAME.lookalike-link and undone through .NAME.*.lookalike-restore:
    a 250-byte name could not be hardlinked ("File name too long"), and one of 228-240 bytes
    could not be given its own copy back. Both names are short and hidden now."""
    long_name = "y" * 246 + ".jpg"
    keep, copy = photo_dir / "photo0.jpg", photo_dir / long_name
    shutil.copy2(keep, copy)
    index = tmp_path / "ix"
    Index(index).add([photo_dir], model=str(tf2_model), options=IndexOptions(workers=0))
    res = runner.invoke(app, ["dupes", "--preset", "exact", "--index", str(index), "--hardlink"])
    assert res.exit_code == 0 and "hardlink: 1 file" in res.output, res.output
    assert os.stat(keep).st_ino == os.stat(copy).st_ino
    res = runner.invoke(app, ["undo", "--last", "--index", str(index)])
    assert res.exit_code == 0 and "restored 1 file" in res.stdout, res.output
    assert os.stat(keep).st_ino != os.stat(copy).st_ino and copy.read_bytes() == keep.read_bytes()
    assert not [p for p in photo_dir.iterdir() if p.name.startswith(".")]
