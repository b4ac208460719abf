"""Find image files below folders: globs, hidden entries, symlinks without loops."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from lookalike.images import is_image_name


@dataclass(frozen=True)
class Entry:
    path: str  # absolute
    size: int
    mtime_ns: int
    error: str | None = None  # a folder that cannot be listed, a link that leads nowhere


def _unusable(path: str, reason: str) -> Entry:
    """An entry for what cannot be read, stamped with its own (link or folder) times, so
    that it is recorded once and retried only when it changes."""
    try:
        st = os.lstat(path)
        return Entry(path, st.st_size, st.st_mtime_ns, reason)
    except OSError:
        return Entry(path, 0, 0, reason)


def _matches(rel: str, name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p) for p in patterns)


def _dead_link(path: str) -> Entry | None:
    """An error entry for an image link that leads nowhere (dangling, a loop), else None."""
    if not os.path.islink(path):
        return None
    try:
        os.stat(path)
    except FileNotFoundError:
        return _unusable(path, "broken symbolic link (its target does not exist)")
    except OSError as exc:
        return _unusable(path, f"cannot follow symbolic link: {exc.strerror or exc}")
    return None  # it leads to something that is not a file (a folder was handled before)


def _details_hidden(path: str) -> bool:
    """Whether the folder holding ``path`` lists it but refuses its details (a folder
    without its execute bit, after ``chmod -R 644``)."""
    try:
        os.lstat(path)
    except PermissionError:
        return True
    except OSError:
        return False
    return False


def _folder_key(folder: str | os.PathLike) -> tuple[int, int] | None:
    """The (device, inode) naming ``folder`` whatever the path taken to it, or None."""
    try:
        st = os.stat(folder)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def walk(
    roots: Sequence[str | os.PathLike],
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    follow_symlinks: bool = True,
    hidden: bool = False,
    skip: Sequence[str | os.PathLike] = (),
) -> Iterator[Entry]:
    """Yield image files below ``roots`` (files given directly are yielded as they are).

    ``include``/``exclude`` are globs matched against the path relative to its root and
    against the bare name; without ``include``, every known image extension is taken.
    Symlinked folders are followed once each, after every folder reached without a link
    (so a folder reached both ways keeps its own path): a link back up the tree is not a loop.
    Folders that cannot be listed (or whose files' details cannot be read) and image links
    that lead nowhere come as entries with an ``error``; what is below such a folder is
    unknown, not gone. Folders in ``skip`` (the index's own) are never entered, under any
    name.
    """
    seen_dirs = {key for folder in skip if (key := _folder_key(folder)) is not None}
    seen_files: set[str] = set()
    linked: list[tuple[str, str]] = []  # (root, a symlinked folder): walked after every real one

    def tree(root: str, top: str) -> Iterator[Entry]:
        stack = [top]
        while stack:
            folder = stack.pop()
            try:
                st = os.stat(folder)
                key = (st.st_dev, st.st_ino)
                if key in seen_dirs:
                    continue
                seen_dirs.add(key)
                with os.scandir(folder) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except FileNotFoundError:
                continue  # vanished meanwhile: nothing to index there
            except OSError as exc:
                yield _unusable(folder, f"cannot list folder: {exc.strerror or exc}")
                continue
            subdirs = []
            for e in entries:
                if not hidden and e.name.startswith("."):
                    continue
                rel = os.path.relpath(e.path, root)
                try:
                    if e.is_dir(follow_symlinks=follow_symlinks):
                        if _matches(rel, e.name, exclude):
                            continue
                        if e.is_symlink():
                            linked.append((root, e.path))
                        else:
                            subdirs.append(e.path)
                        continue
                    if _matches(rel, e.name, exclude):
                        continue
                    if not e.is_file(follow_symlinks=follow_symlinks):
                        raise NotADirectoryError  # not a file: perhaps a link to nowhere
                    if include:
                        if not _matches(rel, e.name, include):
                            continue
                    elif not is_image_name(e.name):
                        continue
                    st = e.stat(follow_symlinks=follow_symlinks)
                except OSError:  # removed meanwhile, a dangling link, a link loop, a FIFO...
                    if _details_hidden(e.path):  # a folder listed but not searchable (no x bit)
                        yield _unusable(folder, "cannot read the files in folder: permission denied")
                        subdirs.clear()  # unreachable too; what is below is unknown, not gone
                        break
                    dead = _dead_link(e.path) if follow_symlinks and is_image_name(e.name) else None
                    if dead and e.path not in seen_files:
                        seen_files.add(e.path)
                        yield dead
                    continue
                if e.path not in seen_files:
                    seen_files.add(e.path)
                    yield Entry(e.path, st.st_size, st.st_mtime_ns)
            stack.extend(reversed(subdirs))

    for root in roots:
        root = os.path.abspath(os.fspath(root))
        if os.path.isfile(root):
            st = os.stat(root)
            if root not in seen_files:
                seen_files.add(root)
                yield Entry(root, st.st_size, st.st_mtime_ns)
            continue
        yield from tree(root, root)
    while linked:  # a folder reached both ways is recorded under its own path, not the link's
        yield from tree(*linked.pop(0))
