"""Decode files in worker processes while the main process runs the model."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager

from lookalike.images import DEFAULT_MAX_MEGAPIXELS, ImageFile, read_image_file

CHUNK = 8  # files per task: amortises inter-process overhead
PR_SET_PDEATHSIG = 1  # prctl(2)


_known: frozenset[str] = frozenset()  # per worker process, set once by _init


def _init(known: frozenset[str], parent: int) -> None:
    global _known
    _known = known
    _die_with_parent(parent)


def _die_with_parent(parent: int) -> None:
    """End this worker when the indexing process dies, even by SIGKILL (which runs no
    clean-up): Linux's parent-death signal, else a watchdog thread."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
            if os.getppid() != parent:  # it died before the signal was armed
                os._exit(1)
            return
    except (OSError, AttributeError):  # not Linux
        pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watchdog").start()


def _decode_chunk(
    paths: Sequence[str], size: tuple[int, int], max_mp: float, descriptor: str | None
) -> list[ImageFile]:
    return [read_image_file(p, size, max_mp, _known, descriptor) for p in paths]


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def decode_files(
    paths: Iterable[str],
    size: tuple[int, int],
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    workers: int | None = None,
    window: int | None = None,
    known_hashes: frozenset[str] = frozenset(),
    descriptor: str | None = None,
) -> Iterator[ImageFile]:
    """Yield decoded files in input order; at most ``window`` chunks are in flight.

    Files whose content hash is in ``known_hashes`` come back undecoded (``known_content``).
    ``workers=0`` decodes in this process (no parallelism; for debugging and tiny runs).
    """
    workers = default_workers() if workers is None else workers
    if workers == 0:
        for p in paths:
            yield read_image_file(p, size, max_megapixels, known_hashes, descriptor)
        return
    window = window or workers * 3
    chunks = _chunked(paths, CHUNK)
    # spawn: the parent has TensorFlow's threads running; forking it is unsafe.
    ctx = multiprocessing.get_context("spawn")
    init = (known_hashes, os.getpid())
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init, initargs=init)
    try:
        pending: deque[Future] = deque()
        for chunk in chunks:
            with _ctrl_c_deferred():  # a submit may start a worker: it is born deaf to Ctrl-C
                pending.append(pool.submit(_decode_chunk, chunk, size, max_megapixels, descriptor))
            if len(pending) >= window:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()
    except BaseException:  # Ctrl-C, the consumer gone (GeneratorExit): queued chunks are dropped
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


@contextmanager
def _ctrl_c_deferred() -> Iterator[None]:
    """Hold SIGINT (blocked, not lost) in this thread meanwhile, so that a worker process
    started meanwhile inherits it blocked for life. Ctrl-C on a terminal goes to the whole
    process group: a worker it interrupted inside the pool's queue lock left the others
    waiting on that lock for ever, and the parent's shutdown with them; and a worker it
    caught while starting up printed a traceback. The parent alone handles Ctrl-C."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _chunked(items: Iterable[str], n: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
