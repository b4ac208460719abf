"""walk -> decode (worker processes) -> embed (batches) -> store, incrementally."""

from __future__ import annotations

import os
import signal
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from lookalike import descriptors
from lookalike.errors import InvalidArgument
from lookalike.fsutil import is_under
from lookalike.images import CANNOT_READ, DEFAULT_MAX_MEGAPIXELS, ImageFile, read_image_file
from lookalike.indexer.decode import decode_files
from lookalike.indexer.walk import Entry, walk
from lookalike.models.labels import top_k
from lookalike.models.runtimes import Embedder
from lookalike.storage.catalogue import Known
from lookalike.storage.store import Store

Progress = Callable[[int, int], None]  # (files done, files to do)


@dataclass
class Embedded:
    """A file read, decoded and embedded elsewhere (a Ray worker): only written here."""

    record: ImageFile  # its image without pixels (they stayed where they were embedded)
    vector: np.ndarray  # float32 [dim], unit length
    scores: np.ndarray | None = None  # class scores, for labels


class RecordSource(Protocol):
    """Where the files to index are read, hashed and decoded (and perhaps embedded).

    Yields :class:`ImageFile` records for this process to embed, or :class:`Embedded`
    ones; files whose hash is in ``known_hashes`` come back undecoded (``known_content``).
    """

    def __call__(
        self,
        paths: Sequence[str],
        size: tuple[int, int],
        opts: IndexOptions,
        known_hashes: frozenset[str],
        descriptor: str,
    ) -> Iterable[ImageFile | Embedded]: ...


def local_records(
    paths: Sequence[str],
    size: tuple[int, int],
    opts: IndexOptions,
    known_hashes: frozenset[str],
    descriptor: str,
) -> Iterator[ImageFile]:
    """The default source: decoder processes on this machine (see :func:`decode_files`)."""
    return decode_files(paths, size, opts.max_megapixels, opts.workers, None, known_hashes, descriptor)


@dataclass
class IndexOptions:
    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    hidden: bool = False
    follow_symlinks: bool = True
    batch_size: int = 32
    workers: int | None = None  # decoder processes; None = one per core, 0 = inline
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS
    checkpoint_seconds: float = 60.0
    label_names: list[str] | None = None


@dataclass
class IndexReport:
    scanned: int = 0
    unchanged: int = 0
    indexed: int = 0
    errors: int = 0
    reused: int = 0  # touched, moved or copied files whose stored vector was reused
    removed: int = 0
    offline: list[tuple[str, int]] = field(default_factory=list)  # empty root folders: (root, rows kept)
    seconds: float = 0.0
    error_samples: list[tuple[str, str]] = field(default_factory=list)
    calibration: object | None = None  # the score calibration fitted at the end, if any

    @property
    def images_per_second(self) -> float:
        return self.indexed / self.seconds if self.seconds > 0 else 0.0


def _unchanged(known: Known | None, entry: Entry) -> bool:
    """Same size and mtime as indexed; a file that could not be opened must also still be
    unopenable (a permission fix changes no mtime)."""
    if known is None or known.size != entry.size or known.mtime_ns != entry.mtime_ns:
        return False
    if entry.error is None and known.error and known.error.startswith(CANNOT_READ):
        try:
            with open(entry.path, "rb"):
                return False
        except OSError:
            return True
    return True


class _Run:
    """One indexing run's state: batches waiting for the model and for the store."""

    def __init__(self, store: Store, embedder: Embedder, opts: IndexOptions, report: IndexReport) -> None:
        self.store, self.embedder, self.opts, self.report = store, embedder, opts, report
        self.descriptor = descriptors.get_descriptor(store.descriptor)
        self.batch: list[ImageFile] = []
        self.ready: list[Embedded] = []  # embedded by the source
        self.failed: list[ImageFile] = []
        self.moves: list[tuple[ImageFile, int]] = []
        self.copies: list[tuple[ImageFile, int]] = []
        self.last_checkpoint = time.monotonic()

    @property
    def full(self) -> bool:
        n = self.opts.batch_size
        embed, reuse = len(self.batch) + len(self.ready), len(self.moves) + len(self.copies)
        return embed >= n or len(self.failed) >= n or reuse >= n

    def flush(self) -> None:
        # Reuse stored vectors first: a copy's source row must still exist when it is read.
        if self.moves or self.copies:
            stale = self.store.adopt(self.moves, self.copies)
            self.report.reused += len(self.moves) + len(self.copies) - len(stale)
            self.moves, self.copies = [], []
            size, cap = self.embedder.info.input_size, self.opts.max_megapixels
            for record in stale:  # their source rows changed meanwhile: decode them after all
                fresh = read_image_file(record.path, size, cap, descriptor=self.store.descriptor)
                (self.batch if fresh.ok else self.failed).append(fresh)
        if self.batch:
            emb = descriptors.embed(self.embedder, self.descriptor, [r.image.pixels for r in self.batch])
            self._write(self.batch, emb.vectors, emb.scores)
        if self.ready:
            scores = [e.scores for e in self.ready]
            stacked = None if any(s is None for s in scores) else np.stack(scores)
            self._write([e.record for e in self.ready], np.stack([e.vector for e in self.ready]), stacked)
        if self.failed:
            self.store.record_errors(self.failed)
            self.report.errors += len(self.failed)
            room = 20 - len(self.report.error_samples)
            self.report.error_samples.extend((r.path, r.error or "") for r in self.failed[:room])
        self.batch, self.ready, self.failed = [], [], []
        if time.monotonic() - self.last_checkpoint > self.opts.checkpoint_seconds:
            self.store.checkpoint()
            self.last_checkpoint = time.monotonic()

    def _write(self, records: Sequence[ImageFile], vectors: np.ndarray, scores: np.ndarray | None) -> None:
        labels = None
        if scores is not None and self.opts.label_names is not None:
            labels = top_k(scores, self.opts.label_names)
        self.store.add(records, vectors, labels)
        self.report.indexed += len(records)

    def take(self, item: ImageFile | Embedded, by_hash: dict, gone: set[str], claimed: set[int]) -> None:
        """Queue one file read by the source: reuse, embed, write or record as failed."""
        if isinstance(item, Embedded):
            self.ready.append(item)
            return
        record = item
        if record.known_content:
            candidates = by_hash[record.content_hash]
            here = [fid for fid, path in candidates if path == record.path]
            moved = [fid for fid, path in candidates if path in gone and fid not in claimed]
            if here or moved:
                fid = (here or moved)[0]
                claimed.add(fid)
                self.moves.append((record, fid))
            else:
                self.copies.append((record, candidates[0][0]))
        elif record.ok:
            self.batch.append(record)
        else:
            self.failed.append(record)


def index_paths(
    store: Store,
    embedder: Embedder,
    roots: Sequence[str | os.PathLike],
    options: IndexOptions | None = None,
    progress: Progress | None = None,
    source: RecordSource = local_records,
) -> IndexReport:
    """Bring ``store`` up to date with the images below ``roots``.

    Unchanged files (same size and mtime) are skipped. The others are read and hashed;
    content already indexed reuses its stored vector (a touched file keeps its row, a
    moved or renamed file takes over its old row, a copy gets a copy of the vector), the
    rest is decoded and embedded. Files that failed before are retried only when they
    changed; files that vanished from below a folder root are removed at the end.
    Each batch is committed on its own, so an interrupted run resumes where it stopped.
    ``source`` reads, hashes and decodes the files (default: decoder processes here; see
    :mod:`lookalike.indexer.ray_pipeline` for a Ray cluster, which embeds them too).
    """
    opts = options or IndexOptions()
    if embedder.info.has_labels and opts.label_names is None:
        raise InvalidArgument("this model gives labels: pass label_names (see models.load_labels)")
    started = time.monotonic()
    report = IndexReport()
    roots = [os.path.abspath(os.fspath(r)) for r in roots]
    missing = [r for r in roots if not os.path.exists(r)]
    if missing:
        raise FileNotFoundError(f"no such file or folder: {', '.join(missing)}")
    store.record_roots([r for r in roots if os.path.isdir(r)])  # where `dupes --move-to` must not move to
    own = [str(store.directory)]  # its catalogue, vectors and journals are no photos
    entries = list(walk(roots, opts.include, opts.exclude, opts.follow_symlinks, opts.hidden, own))
    report.scanned = len(entries)
    known = store.catalogue.known(under=roots)  # folder roots, and files given directly
    seen = {e.path for e in entries}
    unlisted = [e.path for e in entries if e.error]  # what is below them is unknown, not gone
    unknown = [p for p in known if p not in seen and not any(is_under(p, u) for u in unlisted)]
    gone = {p for p in unknown if _gone(p, seen)}
    report.offline = _offline(roots, gone)
    gone -= {p for p in gone if any(is_under(p, root) for root, _ in report.offline)}
    changed = [e for e in entries if not _unchanged(known.get(e.path), e)]
    todo = [e.path for e in changed if not e.error]
    report.unchanged = len(entries) - len(changed)
    by_hash = store.catalogue.vectors_by_hash() if todo else {}
    claimed: set[int] = set()
    run = _Run(store, embedder, opts, report)
    if progress:
        progress(0, len(todo))
    records = source(todo, embedder.info.input_size, opts, frozenset(by_hash), store.descriptor)
    for e in changed:
        if e.error:
            run.failed.append(ImageFile(e.path, e.size, e.mtime_ns, error=e.error))
    for done, item in enumerate(records, 1):
        run.take(item, by_hash, gone, claimed)
        if run.full:
            with _ctrl_c_held():  # a batch is written and counted as one, so the count told is true
                run.flush()
                if progress:
                    progress(done, len(todo))
    with _ctrl_c_held():
        run.flush()
        if progress:
            progress(len(todo), len(todo))
    if gone:
        report.removed = store.remove_paths(sorted(gone))
    store.checkpoint()
    report.seconds = time.monotonic() - started
    return report


def _offline(roots: list[str], gone: set[str]) -> list[tuple[str, int]]:
    """The folder roots that are empty now although indexed photos were below them, with
    how many: an unmounted drive or share leaves its mount point an empty folder, and
    forgetting its photos would mean reading them all again once it is back. Their rows
    are kept (``lookalike remove`` forgets them); a folder that still holds anything,
    even no images, is taken at its word."""
    offline = []
    for root in roots:
        lost = sum(1 for p in gone if is_under(p, root))
        if lost and os.path.isdir(root) and _empty(root):
            offline.append((root, lost))
    return offline


def _empty(folder: str) -> bool:
    try:
        with os.scandir(folder) as it:
            return next(it, None) is None
    except OSError:
        return False


def _gone(path: str, seen: set[str]) -> bool:
    """Whether a catalogue row's path, not found by the walk, names no file now: nothing
    is there (or a folder on its way is now a file), or a folder is (a file replaced by a
    folder; a folder recorded as unreadable, listed now). A path whose details cannot be
    read (permission denied) is unknown, not gone; a file still there but not taken by
    the walk (``--exclude``, hidden) stays, unless the walk found it under its own path
    (``seen``): a row an older walk made through a symbolic link to its folder."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:  # permission denied, a link loop...: unknown
        return False
    if stat.S_ISDIR(st.st_mode):
        return True
    real = os.path.realpath(path)
    return real != path and real in seen


@contextmanager
def _ctrl_c_held() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) while the block runs and deliver it after (main thread only:
    only it receives signals; elsewhere the block just runs)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)
        if held:
            signal.raise_signal(signal.SIGINT)  # to the handler there was: KeyboardInterrupt, as a rule
