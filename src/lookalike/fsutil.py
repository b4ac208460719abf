"""Crash-safe file replacement: write beside the target, fsync, rename, fsync the folder.

A crash at any moment leaves either the old file or the new one, never half of one,
and no temporary file that the next writer would not clean (see :func:`remove_temporaries`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

TEMP_PREFIX = ".tmp-"  # every temporary this module makes starts so, then the target's name


def default_file_mode() -> int:
    """What ``open()`` would give a new file: 0o666 less the umask (mkstemp gives 0o600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's or a folder's contents (a folder: its entries) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make renames and new entries in ``directory`` durable."""
    fsync_path(directory)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write; on success it is fsynced and renamed
    over ``path`` (with the umask's mode), else removed."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, default_file_mode())
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) atomically and durably."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_stream(path: str | os.PathLike, write: Callable[[object], None]) -> None:
    """Replace ``path`` with what ``write(binary_file)`` writes, atomically and durably."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)


def atomic_replace_dir(fill: Callable[[Path], None], target: Path) -> None:
    """Create folder ``target`` from what ``fill(tmp_folder)`` puts in a folder beside it,
    renamed into place in one step (a concurrent creator's folder wins)."""
    tmp = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{target.name}.", dir=target.parent))
    try:
        fill(tmp)
        fsync_dir(tmp)
        try:
            os.replace(tmp, target)
        except OSError:
            if not target.is_dir():  # not a lost race: a real failure
                raise
        fsync_dir(target.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def folder_size(folder: str | os.PathLike) -> int:
    """Bytes in the regular files directly in ``folder`` (0 if it does not exist); a file
    renamed away while they are counted (a writer's temporary) is not counted."""
    total = 0
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                try:
                    if entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    continue
    except FileNotFoundError:
        return 0
    return total


def printable(path: str) -> str:
    """A path as a person reads it, on one line: bytes that are not UTF-8 (surrogate-escaped
    by Python) shown as ``\\xNN`` instead of failing to print, and control characters (a
    newline, an escape that would colour a terminal) as Python writes them: ``\\n``, ``\\x1b``."""
    if path.isprintable():
        return path
    text = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def identity(path: str | os.PathLike) -> tuple[int, int] | None:
    """(device, inode) of the file ``path`` leads to (links followed), None if none:
    two paths with one identity are one file, not copies of each other."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def is_inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether ``path`` lies in ``folder`` (at any depth), by identity of the folders on
    its way up (as spelled, and after resolving links) rather than by spelling: right on
    case-insensitive file systems, through symbolic links, for other spellings."""
    target = identity(folder)
    if target is None:
        return False
    spelled, real = Path(os.path.abspath(path)), Path(os.path.realpath(path))
    return any(identity(p) == target for p in {*spelled.parents, *real.parents})


def canonical(path: str | os.PathLike) -> str:
    """``path`` absolute, each part spelled as its folder lists it (on a case-insensitive
    file system, ``~/pictures`` becomes ``~/Pictures``); parts that do not exist stay as
    given. Catalogue paths are spelled so: a folder filter must be too."""
    parts = Path(os.path.abspath(path)).parts
    out = Path(parts[0])
    for part in parts[1:]:
        candidate = out / part
        if not os.path.lexists(candidate):
            return str(out.joinpath(*parts[len(out.parts) :]))
        try:
            names = os.listdir(out)
        except OSError:
            names = []
        if part not in names:
            ident = identity(candidate)
            part = next((n for n in names if n.lower() == part.lower() and identity(out / n) == ident), part)
        out = out / part
    return str(out)


def remove_temporaries(folder: Path, name: str) -> None:
    """Delete temporaries of ``name`` that a crashed writer left in ``folder``."""
    for stale in folder.glob(f"{TEMP_PREFIX}{name}.*"):
        stale.unlink(missing_ok=True)


def is_under(path: str, root: str) -> bool:
    """``path`` is ``root`` or below it, as spelled (the twin of the catalogue's SQL
    condition ``_below``)."""
    root = root.rstrip(os.sep)
    return path == root or path.startswith(root + os.sep)


def within(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """``path`` is ``folder`` or below it, as spelled or with links resolved."""
    spelled = (os.path.abspath(path), os.path.realpath(path))
    return any(is_under(p, f) for p in spelled for f in (os.path.abspath(folder), os.path.realpath(folder)))


def remove_empty_folders(path: str, top: str) -> None:
    """Remove the folders holding ``path`` that are empty, up to ``top`` (kept), as long as
    each one is empty: what a move into ``top`` made to mirror the path, once moved back."""
    folder, top = os.path.dirname(path), top.rstrip(os.sep)
    if not top:  # the file system's root: not a folder moved into
        return
    while is_under(folder, top) and folder != top:
        try:
            os.rmdir(folder)
        except OSError:  # not empty (other moved files, the user's own), or gone
            return
        folder = os.path.dirname(folder)


def path_problem(path: str) -> str | None:
    """Why ``path`` can name no file here (a NUL byte; a character the file system's
    encoding cannot spell, such as a lone surrogate from JSON), else None."""
    if "\0" in path:
        return "it holds a NUL byte"
    try:
        os.fsencode(path)
    except UnicodeEncodeError:
        return "it holds a character no file name can (a lone surrogate)"
    return None
