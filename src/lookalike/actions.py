"""Act on duplicate groups (move aside, trash, hardlink) with a journal that undoes it.

Every action is written to the journal (and fsynced) *before* the file is touched, so
a crash leaves at worst a journal line whose action did not happen; undo notices and
skips it. Only files listed as duplicates are touched, and only if they are exactly as
they were when indexed (same size and mtime); hardlinks are made for exact copies only.

A duplicate is never touched unless its group's kept file is there *now*, exactly as
indexed (size, mtime and SHA-256), and is another file (a symbolic link, another
spelling of a folder or a hard link to the same file is no second copy); links
themselves are never acted on, nor files in protected folders.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import shutil
import stat
import tempfile
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from lookalike.errors import InvalidArgument
from lookalike.fsutil import identity, is_inside, is_under, remove_empty_folders, within
from lookalike.models.sources import cache_dir
from lookalike.search.duplicates import EXACT, Duplicate, Group
from lookalike.storage.catalogue import FileRow, Known
from lookalike.storage.locks import FileLock

ACTIONS = ("move", "trash", "hardlink")


@dataclass
class ActionReport:
    journal: Path
    done: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _unchanged(path: str, known: Known | None) -> str | None:
    """Why ``path`` must not be touched, or None if it is as indexed."""
    if known is None:
        return "not in the index"
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"cannot stat: {exc.strerror}"
    if (st.st_size, st.st_mtime_ns) != (known.size, known.mtime_ns):
        return "changed since indexing"
    return None


class _Held:
    """The files the index holds (``known``: its paths), by identity, read only when a kept
    file is a symbolic link (a folder the user prefers may hold links to files elsewhere)."""

    def __init__(self, known: dict[str, Known]) -> None:
        self._known = known
        self._files: set[tuple[int, int] | None] | None = None

    def outside(self, kept: str) -> str | None:
        """Why the kept file cannot vouch for its copies: it is a link to a file the index
        does not hold, so the library would keep no copy of its own; else None."""
        if not os.path.islink(kept):
            return None
        if self._files is None:
            self._files = {identity(p) for p in self._known if not os.path.islink(p)}
        if identity(kept) in self._files:
            return None
        return (f"the kept file {kept} is a symbolic link to {os.path.realpath(kept)}, which the index "
                "does not hold: the library would keep no copy of its own")  # fmt: skip


def _kept_problem(keep: FileRow) -> str | None:
    """Why the kept file of a group cannot vouch for its copies now, or None."""
    try:
        st = os.stat(keep.path)
    except OSError as exc:
        return f"the kept file {keep.path} cannot be read ({exc.strerror or exc})"
    if (st.st_size, st.st_mtime_ns) != (keep.size, keep.mtime_ns):
        return f"the kept file {keep.path} changed since indexing"
    try:
        digest = _sha256(keep.path)
    except OSError as exc:
        return f"the kept file {keep.path} cannot be read ({exc.strerror or exc})"
    if keep.content_hash and digest != keep.content_hash:
        return f"the kept file {keep.path} changed since indexing"
    return None


def _not_a_second_copy(path: str, keep: FileRow, protect: Sequence[str]) -> str | None:
    """Why ``path`` is no copy that may go beside ``keep``, or None."""
    if os.path.islink(path):
        return "a symbolic link: a name for another file, not a copy"
    ident = identity(path)
    if ident is not None and ident == identity(keep.path):
        return f"the same file as the kept {keep.path} (another path to it)"
    if any(is_inside(path, folder) for folder in protect):
        return "in a protected folder"
    return None


def _alone(dup: Duplicate, going: set[str]) -> str | None:
    """Why removing ``dup`` could lose a picture: it passes the group's threshold only
    against another member (the group's centre, see search.duplicates) that goes too, not
    against the kept file; or None."""
    if dup.via and dup.via in going:
        return f"close only to {dup.via}, which goes too, not to the kept file: review it"
    return None


JOURNAL_PEEK = 1 << 20  # bytes of an existing journal's first line read to recognise it


def journal_problem(journal: Path) -> str | None:
    """Why ``journal`` cannot take a run's journal lines, or None: it is a folder, or a file
    that is not a lookalike journal (a photo, a catalogue: appending would corrupt it, and
    undo could not read it back). A missing or empty file is fine."""
    if journal.is_dir():
        return f"{journal}: a folder is there; --journal takes a file name"
    if os.path.lexists(journal) and not journal.is_file():  # a device, a pipe, a broken link
        return f"{journal} is not a regular file; --journal takes a file name"
    try:
        with open(journal, "rb") as f:
            first = f.readline(JOURNAL_PEEK).strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{journal}: cannot be read ({exc.strerror or exc})"
    if not first:
        return None
    try:
        is_journal = _an_entry(first.decode("utf-8"))
    except UnicodeDecodeError:
        is_journal = False
    if not is_journal:
        return f"{journal} is a file that is not a lookalike journal: choose a new file name"
    return None


def _start_on_a_new_line(log) -> None:
    """After a line a crash tore (no newline at the end), the next entry starts on its own
    line, so undo reads it."""
    if log.tell() > 0:
        log.seek(log.tell() - 1)
        if log.read(1) != b"\n":
            log.write(b"\n")


class _Journal:
    """A run's journal, opened at its first entry: a run that changes nothing leaves no
    journal behind (that `undo --last` would take for the last run's). Each entry is
    on disk (fsync) before the file it names is touched."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._log = None

    def write(self, entry: dict) -> None:
        if self._log is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.path, "a+b")  # noqa: SIM115 (closed by __exit__)
            _start_on_a_new_line(self._log)
        self._log.write((json.dumps(entry) + "\n").encode("utf-8"))
        self._log.flush()
        os.fsync(self._log.fileno())

    def __enter__(self) -> _Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._log is not None:
            self._log.close()


def apply(
    groups: Sequence[Group],
    action: str,
    known: dict[str, Known],
    journal: Path,
    move_to: Path | None = None,
    report: ActionReport | None = None,
    protect: Sequence[str] = (),
    home: Path | None = None,
    roots: Sequence[str] = (),
) -> ActionReport:
    """Apply ``action`` to every duplicate in ``groups``; record each step in ``journal``.

    ``report`` (filled as files are done) lets a caller see what happened even if this
    raises. Files below ``protect`` are never touched, whatever the groups say. Nothing
    is moved into ``home``, the index folder (deleting an index must not delete photos), nor
    into the folders ``roots`` that ``index`` walks (the moved copies would be found again).
    """
    if action not in ACTIONS:
        raise InvalidArgument(f"action must be one of {', '.join(ACTIONS)}")
    if action == "move" and move_to is None:
        raise InvalidArgument("move needs a destination folder")
    if action == "move" and (why := move_refusal(move_to, home, roots, known)) is not None:
        raise InvalidArgument(why)
    if (why := journal_problem(journal)) is not None:
        raise InvalidArgument(why)
    report = report if report is not None else ActionReport(journal)
    fresh = not os.path.lexists(journal)
    held = _Held(known)
    with _one_at_a_time(), _Journal(journal) as log:
        for group in groups:
            kept_problem = _kept_problem(group.keep) or held.outside(group.keep.path)
            going = {d.row.path for d in group.duplicates}
            for dup in group.duplicates:
                path = dup.row.path
                try:
                    why = _not_a_second_copy(path, group.keep, protect) or kept_problem or _alone(dup, going)
                    if why is None:
                        why = _unchanged(path, known.get(path))
                    if why is None and action == "hardlink":
                        why = _hardlink_blocker(dup.kind, path, group.keep.path, known)
                    st = os.stat(path)
                except OSError as exc:  # vanished or unreadable meanwhile
                    why = f"cannot read: {exc.strerror or exc}"
                if why is not None:
                    report.skipped.append((path, why))
                    continue
                entry = {
                    "action": action, "path": path, "keep": group.keep.path, "kind": dup.kind,
                    "size": st.st_size, "mtime_ns": st.st_mtime_ns, "mode": st.st_mode & 0o7777,
                    "real": os.path.realpath(path), "at": datetime.now().isoformat(timespec="seconds"),
                }  # fmt: skip
                if action == "hardlink" and group.keep.content_hash:  # the bytes undo gives back
                    entry["sha256"] = group.keep.content_hash
                if action == "move":
                    entry["dest"] = str(Path(move_to).resolve() / path.lstrip(os.sep))
                    if os.path.lexists(entry["dest"]):
                        report.skipped.append((path, f"{entry['dest']} already exists"))
                        continue
                log.write(entry)
                try:
                    _do(entry)
                except OSError as exc:
                    report.skipped.append((path, f"failed: {exc.strerror or exc}"))
                    continue
                report.done.append(path)
    if fresh and not report.done:  # only attempts that failed: nothing for `undo --last` to take
        journal.unlink(missing_ok=True)  # (a file that was there before is not this run's to delete)
    return report


ACTIONS_LOCK = "actions.lock"


@contextmanager
def _one_at_a_time() -> Iterator[None]:
    """This user's lock on `dupes` actions and undos, whatever the index: two runs at once
    over one folder (two indexes of it) would each remove the copy the other keeps, and two
    trashings at once can put two files under one name in the trash (a free name there is
    not reserved), losing one."""
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    busy = ("another `lookalike dupes` action, `undo` or review page action is running: "
            "run this one when it has finished")  # fmt: skip
    lock = FileLock(folder / ACTIONS_LOCK, "actions", busy)
    try:
        yield
    finally:
        lock.release()


def move_refusal(
    move_to: Path, home: Path | None, roots: Sequence[str], known: Iterable[str] = ()
) -> str | None:
    """Why duplicates must not be moved into ``move_to``, as said to the user, or None: it
    is inside the index folder ``home``, or holds indexed photos (``known``) or lies among
    them or in a folder ``index`` walks (``roots``)."""
    if home is not None and within(move_to, home):
        return (
            f"cannot move duplicates into {os.path.abspath(move_to)}: it is inside the index folder "
            f"{home}, and deleting an index would delete them; choose a folder outside it"
        )
    if (why := _move_target_problem(move_to, known, roots)) is not None:
        return (
            f"cannot move duplicates into {os.path.abspath(move_to)}: {why}, so the copies moved "
            "there would be indexed and found again; choose a folder outside the indexed ones"
        )
    return None


def _move_target_problem(move_to: Path, known: Iterable[str], roots: Sequence[str] = ()) -> str | None:
    """Why duplicates must not be moved into ``move_to``, or None: it holds indexed photos,
    or lies in a folder that does or that ``index`` walks (``roots``); through any spelling
    or symbolic link of either."""
    folders = {os.path.dirname(p) for p in known}
    folders |= {os.path.realpath(f) for f in folders}
    for target in dict.fromkeys((os.path.abspath(move_to), os.path.realpath(move_to))):
        if any(is_under(f, target) for f in folders):
            return "it holds indexed photos"
        if (
            up := next((u for u in (target, *map(str, Path(target).parents)) if u in folders), None)
        ) is not None:
            return f"it is inside {up}, which holds indexed photos"
    if (root := next((r for r in roots if within(move_to, Path(r))), None)) is not None:
        return f"it is inside {root}, which `lookalike index` walks"
    return None


def _hardlink_blocker(kind: str, path: str, keep: str, known: dict[str, Known]) -> str | None:
    if kind != EXACT:
        return "not an exact copy: a hardlink would lose its pixels"
    if os.path.islink(keep):
        return f"the kept {keep} is a symbolic link: a hardlink to it would be one more link, not the photo"
    why = _unchanged(keep, known.get(keep))
    if why is not None:
        return f"kept file {keep}: {why}"
    if os.stat(path).st_dev != os.stat(keep).st_dev:
        return "on another file system than the kept file"
    if _sha256(path) != _sha256(keep):
        return "bytes differ from the kept file"
    return None


def _do(entry: dict) -> None:
    path = entry["path"]
    if entry["action"] == "move":
        os.makedirs(os.path.dirname(entry["dest"]), exist_ok=True)
        _move(path, entry["dest"])
    elif entry["action"] == "trash":
        from send2trash import send2trash

        send2trash(path)
    else:  # hardlink: link beside the duplicate, then atomically replace it
        tmp = _link_temporary(entry)
        os.link(entry["keep"], tmp, follow_symlinks=False)
        try:
            os.replace(tmp, path)
        finally:
            if os.path.lexists(tmp):  # the replace failed (or found them one file already)
                os.unlink(tmp)


PART = ".lookalike-part-"  # a copy to another file system, until it is whole (+ a random tail)


def _move(path: str, dest: str) -> None:
    """Move a file (or a link) to ``dest``: renamed on one file system; else copied beside
    ``dest`` under a hidden :data:`PART` name (short: the photo's may already be as long as
    a name can be), renamed to ``dest`` once whole, and only then removed from ``path``. A
    copy cut short (a full disk) is removed; one a kill cut short keeps the :data:`PART`
    name, never the photo's (the original is left in place either way)."""
    try:
        os.rename(path, dest)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    partial = os.path.join(os.path.dirname(dest), PART + secrets.token_hex(6))
    try:
        shutil.copy2(path, partial, follow_symlinks=False)
        os.replace(partial, dest)
    finally:
        if os.path.lexists(partial):
            os.unlink(partial)
    os.unlink(path)


def _link_name(path: str) -> str:
    """The name a hardlink to the kept file is made under before it replaces the duplicate
    at ``path``: hidden, beside it, the same for the same path (an undo finds one a kill
    left), and short (the duplicate's own name may be as long as a name can be)."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".lookalike-link-{hashlib.sha256(os.fsencode(name)).hexdigest()[:16]}")


def _stale_links(path: str) -> tuple[str, str]:
    """Where a kill between link and rename may have left a link: :func:`_link_name`, and
    the name older releases used."""
    return _link_name(path), f"{path}.lookalike-link"


def _link_temporary(entry: dict) -> str:
    """The name a hardlink is made under before it replaces the duplicate. One left by a
    run killed between the two steps (a link to the kept file) is removed first; any
    other file of that name is not ours, and stops the action."""
    tmp, older = _stale_links(entry["path"])
    if os.path.lexists(tmp):
        if identity(tmp) != identity(entry["keep"]) or os.path.islink(tmp):
            raise FileExistsError(errno.EEXIST, "a file not made by lookalike is in the way", tmp)
        os.unlink(tmp)
    if os.path.isfile(older) and not os.path.islink(older) and identity(older) == identity(entry["keep"]):
        os.unlink(older)  # (an older release's, left by a kill)
    return tmp


ALREADY_BACK = "already back in place"  # why undo skips what an earlier undo restored
UNREADABLE = "unreadable journal line"  # a line a crash tore: its action never began
UNDONE = ".undone"  # beside a journal an undo put back in full


def undo(journal: Path, progress: Callable[[int, int], None] | None = None) -> ActionReport:
    """Reverse a journal, newest action first. Actions that did not happen are skipped.
    ``progress`` hears (entries done, entries)."""
    with _one_at_a_time():
        return _undo(journal, progress)


def _undo(journal: Path, progress: Callable[[int, int], None] | None) -> ActionReport:
    report = ActionReport(journal)
    try:
        text = journal.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InvalidArgument(f"{journal} is not a lookalike journal (not text)") from None
    lines = [x for x in text.splitlines() if x.strip()]
    if lines and not any(_an_entry(line) for line in lines):  # (a torn line among entries: a crash)
        raise InvalidArgument(f"{journal} is not a lookalike journal (no line of it is an action)")
    for done, line in enumerate(reversed(lines)):
        if progress:
            progress(done, len(lines))
        try:
            entry = json.loads(line)
            path = entry["path"]
        except (ValueError, KeyError, TypeError):  # a torn or edited line: skip, keep going
            report.skipped.append((line[:80], UNREADABLE))
            continue
        try:
            why = _undo_one(entry)
        except OSError as exc:
            why = f"failed: {exc.strerror or exc}"
        except (KeyError, TypeError, ValueError, AttributeError):  # an edited line lacking a field
            report.skipped.append((line[:80], UNREADABLE))
            continue
        if why:
            report.skipped.append((path, why))
        else:
            report.done.append(path)
    if progress:
        progress(len(lines), len(lines))
    if all(why in (ALREADY_BACK, UNREADABLE) for _, why in report.skipped):
        _mark_undone(journal)
    return report


def _an_entry(line: str) -> bool:
    """Whether a journal line records an action (see :func:`journal_problem`)."""
    try:
        entry = json.loads(line)
    except ValueError:
        return False
    return isinstance(entry, dict) and entry.get("action") in ACTIONS and "path" in entry


def undone(journal: Path) -> bool:
    """Whether an undo put back everything ``journal`` did (``undo --last`` passes it by)."""
    return _undone_marker(journal).exists()


def _mark_undone(journal: Path) -> None:
    with suppress(OSError):  # (a folder we cannot write: `undo --last` finds it again, all back)
        _undone_marker(journal).write_text(f"{datetime.now().isoformat()}\n", encoding="utf-8")


def _undone_marker(journal: Path) -> Path:
    return journal.with_name(journal.name + UNDONE)


def _undo_one(entry: dict) -> str | None:
    path = entry["path"]
    action = entry["action"]
    if action == "hardlink":
        for stale_link in _stale_links(path):  # a kill between link and rename left it
            if os.path.isfile(stale_link) and identity(stale_link) == identity(entry["keep"]):
                os.unlink(stale_link)
        if not os.path.exists(path):
            return "missing"
        if os.stat(path).st_nlink < 2 or identity(path) != identity(entry["keep"]):
            st = os.lstat(path)
            as_journaled = (st.st_size, st.st_mtime_ns) == (entry["size"], entry["mtime_ns"])
            if stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and _hardlinked_bytes(path, entry):
                if as_journaled and st.st_mode & 0o7777 == entry["mode"]:
                    return ALREADY_BACK  # an earlier undo restored it
                os.chmod(path, entry["mode"])  # the kept file went: these bytes are the copy's alone,
                os.utime(path, ns=(entry["mtime_ns"], entry["mtime_ns"]))  # with its own mode and mtime
                return None
            if stat.S_ISREG(st.st_mode) and as_journaled:
                return ALREADY_BACK
            return "not a hardlink to the kept file any more"
        return _restore_own_copy(path, entry)
    if os.path.lexists(path):
        happened = os.path.lexists(entry["dest"]) if action == "move" else _trashed(entry) is not None
        if happened:
            return "the original path is taken"
        st = os.lstat(path)
        if (st.st_size, st.st_mtime_ns) == (entry["size"], entry["mtime_ns"]):
            return ALREADY_BACK
        return "never moved"
    if action == "move":
        if not os.path.exists(entry["dest"]):
            return f"{entry['dest']} is gone"
        if os.path.getsize(entry["dest"]) != entry["size"]:
            return f"{entry['dest']} is not the file moved there"
        os.makedirs(os.path.dirname(path), exist_ok=True)
        shutil.move(entry["dest"], path)
        if entry["dest"].endswith(mirrored := path.lstrip(os.sep)):  # the folders the move made
            remove_empty_folders(entry["dest"], entry["dest"][: -len(mirrored)])
        return None
    found = _trashed(entry)
    if found is None:
        return "not found in the trash"
    trashed, info = found
    os.makedirs(os.path.dirname(path), exist_ok=True)
    shutil.move(trashed, path)
    os.unlink(info)
    return None


def _hardlinked_bytes(path: str, entry: dict) -> bool:
    """Whether ``path`` holds the bytes a hardlink entry linked (its SHA-256; older journals:
    its size)."""
    if os.path.getsize(path) != entry["size"]:
        return False
    return "sha256" not in entry or _sha256(path) == entry["sha256"]


def _restore_own_copy(path: str, entry: dict) -> str | None:
    """Give a hardlinked ``path`` its own copy of the (identical) bytes again, with the mode
    and mtime the journal recorded: written under a new name of its own (nothing already
    there is opened or followed), then renamed over the link. Bytes that are no longer
    those hardlinked (the kept file was edited since) are not given out as the old file:
    returns why, leaving the link as it is."""
    folder = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".lookalike-restore-", dir=folder or ".")  # (a short name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, open(path, "rb") as src:
            while block := src.read(1 << 20):
                digest.update(block)
                out.write(block)
            size = out.tell()
        if size != entry["size"] or entry.get("sha256", digest.hexdigest()) != digest.hexdigest():
            return "its bytes changed since it was hardlinked (the kept file was edited): left linked"
        os.chmod(tmp, entry["mode"])
        os.utime(tmp, ns=(entry["mtime_ns"], entry["mtime_ns"]))
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    return None


def _trash_dirs(paths: Sequence[str]) -> list[tuple[Path, Path]]:
    """(trash folder, folder its relative paths start from) where ``paths`` may have gone:
    the home trash, and the trashes at the top of each one's volume."""
    home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "Trash"
    uid = os.getuid()
    dirs = [(home, Path("/"))]
    for path in paths:
        top = Path(path).parent
        while not os.path.ismount(top) and top != top.parent:
            top = top.parent
        dirs += [(top / ".Trash" / str(uid), top), (top / f".Trash-{uid}", top)]
    return [(d, base) for d, base in dict.fromkeys(dirs) if (d / "info").is_dir()]


def _trashed(entry: dict) -> tuple[Path, Path] | None:
    """(file in the trash, its .trashinfo) for the newest trashing of the journal entry's
    file: by its path or its real path (through a linked folder on another volume), and
    only a file of the size it had (not another file trashed from the same path)."""
    names = {entry["path"], entry.get("real") or entry["path"]}
    best: tuple[str, Path, Path] | None = None
    for trash, base in _trash_dirs(sorted(names)):
        for info in (trash / "info").glob("*.trashinfo"):
            fields = dict(
                line.split("=", 1) for line in info.read_text(errors="replace").splitlines() if "=" in line
            )
            original = os.fsdecode(urllib.parse.unquote_to_bytes(fields.get("Path", "")))
            if not os.path.isabs(original):  # volume trashes store paths relative to their top,
                original = os.path.normpath(base / original)  # "../../home/..." through a linked folder
            stored = trash / "files" / info.name.removesuffix(".trashinfo")
            if original not in names or not os.path.isfile(stored) or os.path.islink(stored):
                continue
            if os.path.getsize(stored) != entry["size"]:
                continue  # another file once trashed from that path
            when = fields.get("DeletionDate", "")
            if best is None or when > best[0]:
                best = (when, stored, info)
    return None if best is None else (best[1], best[2])
