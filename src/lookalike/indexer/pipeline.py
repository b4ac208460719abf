"""walk -> decode (worker processes) -> embed (batches) -> store, incrementally."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from lookalike.images import DEFAULT_MAX_MEGAPIXELS, ImageFile
from lookalike.indexer.decode import decode_files
from lookalike.indexer.walk import Entry, walk
from lookalike.models.labels import top_k
from lookalike.models.runtimes import Embedder
from lookalike.storage.store import Known, Store

Progress = Callable[[int, int], None]  # (files done, files to do)


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
    removed: int = 0
    seconds: float = 0.0
    error_samples: list[tuple[str, str]] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.indexed / self.seconds if self.seconds > 0 else 0.0


def _unchanged(known: Known | None, entry: Entry) -> bool:
    return known is not None and known.size == entry.size and known.mtime_ns == entry.mtime_ns


def index_paths(
    store: Store,
    embedder: Embedder,
    roots: Sequence[str | os.PathLike],
    options: IndexOptions | None = None,
    progress: Progress | None = None,
) -> IndexReport:
    """Bring ``store`` up to date with the images below ``roots``.

    New and changed files (size or mtime differ) are decoded and embedded; files that
    failed before are retried only when they changed; files that vanished from below
    a folder root are removed from the index.
    """
    opts = options or IndexOptions()
    if embedder.info.has_labels and opts.label_names is None:
        raise ValueError("this model gives labels: pass label_names (see models.load_labels)")
    started = time.monotonic()
    report = IndexReport()
    roots = [os.path.abspath(os.fspath(r)) for r in roots]
    missing = [r for r in roots if not os.path.exists(r)]
    if missing:
        raise FileNotFoundError(f"no such file or folder: {', '.join(missing)}")
    entries = list(walk(roots, opts.include, opts.exclude, opts.follow_symlinks, opts.hidden))
    report.scanned = len(entries)
    known = store.known(under=[r for r in roots if os.path.isdir(r)])
    seen = {e.path for e in entries}
    gone = [p for p in known if p not in seen and not os.path.exists(p)]
    if gone:
        report.removed = store.remove_paths(gone)
    todo = [e.path for e in entries if not _unchanged(known.get(e.path), e)]
    report.unchanged = len(entries) - len(todo)
    if progress:
        progress(0, len(todo))

    batch: list[ImageFile] = []
    failed: list[ImageFile] = []
    done = 0
    last_checkpoint = time.monotonic()

    def flush() -> None:
        nonlocal batch, failed, last_checkpoint
        if batch:
            pixels = np.stack([r.image.pixels for r in batch])
            emb = embedder.embed(pixels)
            labels = None
            if emb.scores is not None and opts.label_names is not None:
                labels = top_k(emb.scores, opts.label_names)
            store.add(batch, emb.vectors, labels)
            report.indexed += len(batch)
        if failed:
            store.record_errors(failed)
            report.errors += len(failed)
            report.error_samples.extend(
                (r.path, r.error or "") for r in failed[: 20 - len(report.error_samples)]
            )
        batch, failed = [], []
        if time.monotonic() - last_checkpoint > opts.checkpoint_seconds:
            store.checkpoint()
            last_checkpoint = time.monotonic()

    for record in decode_files(todo, embedder.info.input_size, opts.max_megapixels, opts.workers):
        (batch if record.image is not None else failed).append(record)
        done += 1
        if len(batch) >= opts.batch_size or len(failed) >= opts.batch_size:
            flush()
            if progress:
                progress(done, len(todo))
    flush()
    store.checkpoint()
    if progress:
        progress(done, len(todo))
    report.seconds = time.monotonic() - started
    return report
