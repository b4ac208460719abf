"""The Python API: ``Index(directory).add(...)``, ``.search(...)``, ``.info()``.

An :class:`Index` can be used for one call at a time (each opens the index and closes it),
or opened once (:meth:`Index.open`, or ``with Index(...) as idx``) to keep a read
snapshot for many calls, as the server does; the snapshot follows the catalogue's
generation (see :meth:`Index.refresh`).
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np

from lookalike import actions
from lookalike.actions import ActionReport
from lookalike.descriptors import get_descriptor
from lookalike.errors import IncompatibleIndex, InvalidArgument, NotIndexed, StoreError
from lookalike.fsutil import within
from lookalike.images import DEFAULT_MAX_MEGAPIXELS, ImageError
from lookalike.indexer import IndexOptions, IndexReport, index_paths
from lookalike.indexer.pipeline import Progress
from lookalike.models import DEFAULT_MODEL, Embedder, load_model
from lookalike.models.labels import index_labels
from lookalike.models.sources import ModelError, is_url
from lookalike.queries import QuerySource, embed_queries
from lookalike.search import Filters, QueryResult, calibration, fine, search_vectors
from lookalike.search.against import find_in_other
from lookalike.search.duplicates import Group, KeepRules, find_duplicates
from lookalike.search.neighbours import QueryTraits, scores_among
from lookalike.storage import FileRow, Manifest, Store, VerifyReport, default_index_dir
from lookalike.storage.manifest import MANIFEST

log = logging.getLogger(__name__)


class Index:
    """An index folder: add images to it, search it, describe it."""

    def __init__(
        self, directory: str | os.PathLike | None = None, runtime: str = "auto", db: str | None = None
    ) -> None:
        """``directory`` holds the manifest and FAISS checkpoint, and the SQLite catalogue
        unless ``db`` (a SQLAlchemy URL, e.g. ``postgresql://host/name``) says where it is."""
        self.directory = Path(directory or default_index_dir()).expanduser().resolve()
        self.runtime = runtime  # auto | tf | tflite: see lookalike.models.load_model
        self.db = db
        self._embedder: Embedder | None = None
        self._descriptor = get_descriptor(None)  # replaced by the manifest's with the model
        self._snapshot: Store | None = None  # the read snapshot while open
        self._snapshot_lock = threading.Lock()
        self._checked = 0.0
        self._pictures = fine.Pictures()  # files a search read for a finer look, kept for the next
        self.refresh_interval_s = 0.0

    def store(self, **kwargs) -> Store:
        """The underlying :class:`Store` (close it, or use it in a ``with`` block)."""
        return Store(self.directory, db=self.db, **kwargs)

    # --- a long-lived Index: one read snapshot for many calls ---------------------------

    def open(self, refresh_interval_s: float | None = None) -> Index:
        """Keep a read snapshot of the index for the calls that follow, until :meth:`close`.

        Reads share it; it is swapped for a fresh one when the catalogue's generation has
        moved, checked at most every ``refresh_interval_s`` (default 0: on every read; see
        :meth:`refresh`). Writes still open the index for writing briefly, one writer at a
        time across processes.
        """
        with self._snapshot_lock:
            if refresh_interval_s is not None:
                self.refresh_interval_s = refresh_interval_s
            if self._snapshot is None:
                self._snapshot = self.store().warmed()
                self._checked = time.monotonic()
        return self

    def close(self) -> None:
        """Drop the read snapshot (a closed Index still serves one-shot calls)."""
        with self._snapshot_lock:
            snapshot, self._snapshot = self._snapshot, None
        if snapshot is not None:
            snapshot.close()

    def __enter__(self) -> Index:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def is_open(self) -> bool:
        return self._snapshot is not None

    def refresh(self) -> bool:
        """Swap in a fresh snapshot if the catalogue moved on (this or another process wrote).

        The new snapshot is fully loaded before it replaces the old one, so readers never
        see a half-applied change; readers still holding the old one finish on it. Returns
        whether it was replaced (False too when the Index is not open).
        """
        with self._snapshot_lock:
            return self._refresh_locked()

    def _refresh_locked(self) -> bool:
        current = self._snapshot
        if current is None:
            return False
        self._checked = time.monotonic()
        if current.generation() == current.vectors.generation and not current.manifest_moved():
            return False
        self._snapshot = self.store().warmed()  # the newest checkpoint + the catalogue's changes
        current.close()  # a reader's close only releases its connections
        return True

    def _current(self) -> Store | None:
        """The open snapshot, refreshed first when a check is due (unless another thread is
        refreshing it: then the current one serves)."""
        if self._snapshot is None or time.monotonic() - self._checked < self.refresh_interval_s:
            return self._snapshot
        if self._snapshot_lock.acquire(blocking=False):
            try:
                self._refresh_locked()
            finally:
                self._snapshot_lock.release()
        return self._snapshot

    @contextmanager
    def _reading(self, sync: bool = True) -> Iterator[Store]:
        """The open snapshot, else a store opened for this one call."""
        snapshot = self._current()
        if snapshot is not None:
            yield snapshot
            return
        with self.store(sync=sync) as store:
            yield store

    @property
    def exists(self) -> bool:
        if self.db is None:
            return (self.directory / MANIFEST).exists()
        try:
            self.store(sync=False).close()
        except StoreError:
            return False
        return True

    def manifest(self) -> Manifest:
        """The index's manifest (model, dimension, preprocessing)."""
        with self._reading(sync=False) as store:
            return store.manifest

    def model(self) -> Embedder:
        """The model this index was built with, loaded as its manifest describes."""
        if self._embedder is None:
            manifest = self.manifest()
            info = manifest.model
            size, scale = info.input_size[0], info.input_range
            try:
                embedder = load_model(info.source, input_size=size, input_range=scale, runtime=self.runtime)
            except ModelError as exc:
                raise ModelError(
                    f"{exc}. The index {self.directory} was built with it: if it moved, run "
                    "`lookalike index` on the indexed folders once with --model and its new place"
                ) from None
            if embedder.info.identity != info.identity:
                raise IncompatibleIndex(
                    f"model {info.source} has changed since index {self.directory} was built "
                    f"(identity {embedder.info.identity[:12]}, index has {info.identity[:12]})"
                )
            self._embedder = embedder
            self._descriptor = get_descriptor(manifest.descriptor)
        return self._embedder

    def add(
        self,
        paths: Sequence[str | os.PathLike],
        model: str | Embedder | None = None,
        labels: str | None = None,
        options: IndexOptions | None = None,
        progress: Progress | None = None,
        input_size: int | None = None,
        input_range: tuple[float, float] | None = None,
        index_settings: dict | None = None,
        descriptor: str | None = None,
        calibrate: bool = True,
        calibration_progress: Progress | None = None,
        ray: str | None = None,
    ) -> IndexReport:
        """Index (or bring up to date) the images below ``paths``.

        A new index uses ``model`` (a ``--model`` value or a loaded Embedder; default: the
        catalogue default); an existing one keeps its own model and refuses a different one.
        ``labels`` is a file or URL of class names for classification models (default: the
        ImageNet list, downloaded once). ``index_settings`` (type, max_memory, nprobe) are
        recorded first; the FAISS index is rebuilt on closing if they or the size call for it.
        ``descriptor`` (see :mod:`lookalike.descriptors`) is fixed when the index is created.
        Once it holds enough photos, the index calibrates its scores (see :meth:`calibrate`),
        telling ``calibration_progress`` (pictures embedded, pictures) as it goes.
        ``ray`` (``local``, ``auto``, ``ray://HOST:PORT``) reads, decodes and embeds on a Ray
        cluster (``options.workers``: its embedding actors), this process still writing
        (see :mod:`lookalike.indexer.ray_pipeline`; needs ``pip install 'lookalike[ray]'``).
        """
        if ray is not None:  # before any model is loaded: Ray missing or a bad address
            from lookalike.indexer import ray_pipeline

            ray_pipeline.prepare(ray)
        if descriptor is not None:
            get_descriptor(descriptor)  # a typo fails before any model is loaded
        missing = [os.fspath(p) for p in paths if not os.path.lexists(p)]
        if missing:  # before a model is loaded or an index is created, tied to that model
            raise FileNotFoundError(errno.ENOENT, "no such file or folder", ", ".join(missing))
        if home := [os.fspath(p) for p in paths if _same_folder(p, self.directory)]:
            raise InvalidArgument(  # the walk never enters the index folder: nothing would be found
                f"{home[0]} is the index folder, which is never indexed; give --index a folder of its "
                "own (or leave it out: a per-user data folder)"
            )
        if isinstance(model, Embedder):
            embedder = model
        elif self.exists and model is None and input_size is None and input_range is None:
            embedder = self.model()
        else:  # an index's own model at another size or range is refused by the store, not ignored
            embedder = self._load_to_add(model, input_size, input_range)
        opts = options or IndexOptions()
        if labels is not None and not embedder.info.has_labels:
            raise InvalidArgument(
                f"--labels names a classifier's classes; {embedder.info.source} has none (it gives "
                "feature vectors): leave --labels out"
            )
        if labels is not None and not is_url(labels):  # recorded: later runs start from anywhere
            labels = str(Path(labels).expanduser().resolve())
        if embedder.info.has_labels and opts.label_names is None:  # before an index tied to the model is made
            recorded = self.manifest().labels if self.exists else None
            opts.label_names = index_labels(embedder, labels, recorded, self.exists)
        with self.store(model=embedder.info, writable=True, labels=labels, descriptor=descriptor) as store:
            self._embedder = embedder
            self._descriptor = get_descriptor(store.descriptor)
            if index_settings:
                store.set_index_settings(**index_settings)
            if ray is None:
                report = index_paths(store, embedder, paths, opts, progress)
            else:
                with ray_pipeline.ray_source(ray, embedder, paths, opts.workers) as source:
                    report = index_paths(store, embedder, paths, opts, progress, source)
            if calibrate:
                total = min(calibration.AUTO_SAMPLE, store.vectors.ntotal) * calibration.pictures_per_photo()
                embed = _counted(self.embed_with_colours, calibration_progress, total)
                report.calibration = calibration.auto_calibrate(store, embed)
            return report

    def _load_to_add(self, model: str | None, size: int | None, scale: tuple | None) -> Embedder:
        """``model`` (default: the index's own, else the catalogue default) to index with. One
        that cannot be loaded (offline, say) and is not the index's own is said to be so."""
        own = self.manifest().model.source if self.exists else None
        model = model or own or DEFAULT_MODEL
        try:
            return load_model(model, input_size=size, input_range=scale, runtime=self.runtime)
        except ModelError as exc:
            if own is None or model == own:
                raise
            hint = f"index {self.directory} was made with {own}: leave --model out"
            raise ModelError(f"{exc}. The {hint}") from None

    def embed(self, queries: Sequence[QuerySource], max_megapixels: float = DEFAULT_MAX_MEGAPIXELS):
        """Vectors for query images: (vectors of the decodable ones, per-query error or None)."""
        vectors, problems = self.query_vectors(queries, max_megapixels)
        return vectors, [None if p is None else str(p) for p in problems]

    def embed_with_colours(self, queries: Sequence[QuerySource]):
        """As :meth:`embed`, plus the decodable ones' colour signatures (for calibration)."""
        traits: list[QueryTraits] = []
        vectors, problems = self.query_vectors(queries, traits=traits)
        return vectors, [None if p is None else str(p) for p in problems], [t.colour for t in traits]

    def query_vectors(
        self,
        queries: Sequence[QuerySource],
        max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
        traits: list[QueryTraits] | None = None,
        second_looks: bool = False,
    ) -> tuple[np.ndarray, list[ImageError | None]]:
        """As :meth:`embed`, with each query's problem as a typed :class:`ImageError`;
        ``traits``, if given, receives each decodable query's bytes hash and colour, and with
        ``second_looks`` its second looks: the vector of the query with its caption bars filled,
        if it has any, and with its flat backdrop in the other tone, if it has one."""
        embedder = self.model()  # (sets the index's descriptor, from its manifest)
        return embed_queries(embedder, self._descriptor, queries, max_megapixels, traits, second_looks)

    def search(
        self,
        queries: Sequence[QuerySource],
        k: int = 10,
        filters: Filters | None = None,
        threshold: float | None = None,
        min_probability: float | None = None,
        names: Sequence[str] | None = None,
        max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    ) -> list[QueryResult]:
        """Nearest indexed images for each query (a path or image bytes), best first.

        ``filters`` (label, folders, capture dates) restrict the candidates inside FAISS;
        ``threshold`` (cosine) and ``min_probability`` (P(same photo), calibrated indexes
        only) drop the weaker of the top ``k``. A query that cannot be decoded gets an
        ``error`` (and its typed ``problem``) instead of hits.
        """
        traits: list[QueryTraits] = []
        vectors, problems = self.query_vectors(queries, max_megapixels, traits, second_looks=True)
        with self._reading() as store:
            found = search_vectors(
                store, vectors, k, filters, threshold, min_probability, traits, self._pictures
            )
        hits = iter(found)
        if names is None:
            names = ["<bytes>" if isinstance(q, bytes) else os.fspath(q) for q in queries]
        return [
            QueryResult(str(name), [], str(problem), problem)
            if problem is not None
            else QueryResult(str(name), next(hits))
            for name, problem in zip(names, problems, strict=True)
        ]

    def reindex(self, **settings) -> dict:
        """Record index settings (``type``: auto | flat | ivf-flat | ivf-sq8 | ivf-pq,
        ``max_memory`` in bytes, ``nprobe``) and rebuild the FAISS index from the catalogue."""
        with self.store(writable=True, sync=False) as store:
            before = store.index_settings
            store.set_index_settings(**settings)
            try:
                store.rebuild_index()
            except BaseException:
                store.set_index_settings(**before.to_dict())  # a failed rebuild changes nothing
                raise
            return store.stats()

    def calibrate(
        self, sample: int = calibration.DEFAULT_SAMPLE, seed: int = 0, progress: Progress | None = None
    ) -> calibration.Calibration:
        """Fit and record the mapping of cosine to P(same photo) on this index's own photos."""
        self.model()
        with self.store(writable=True) as store:
            total = min(sample, store.vectors.ntotal) * calibration.pictures_per_photo()
            embed = _counted(self.embed_with_colours, progress, total)
            return calibration.calibrate_store(store, embed, sample, seed)

    def remove(self, paths: Sequence[str | os.PathLike]) -> int:
        """Drop files, or everything below folders, from the index; returns how many."""
        targets = [os.path.abspath(os.fspath(p)) for p in paths]
        with self.store(writable=True) as store:
            known = store.catalogue.known(under=targets)
            store.record_roots(dropped=targets)
            return store.remove_paths(sorted(known))

    def verify(self, repair: bool = False) -> tuple[VerifyReport, VerifyReport | None]:
        """Check catalogue rows, stored vectors and the FAISS file agree (before any repair).

        With ``repair``, fix what was found and check again: (found, after repair).
        """
        with self.store(writable=repair, sync=False) as store:
            found = store.verify()
            if not repair or (found.ok and not found.behind):
                return found, None  # (a checkpoint behind is fine, and repair writes it anew)
            store.repair()
            return found, store.verify()

    def duplicates(
        self,
        threshold: float,
        rules: KeepRules | None = None,
        include_recoloured: bool = False,
        progress: Progress | None = None,
    ) -> list[Group]:
        """Duplicate groups (exact, and near at ``threshold``), minus ignored pairs; one
        design in other colours only with ``include_recoloured``. Copies the server stored
        of uploads are kept only when nothing else can be. ``progress(done, total)`` is
        told of the pairs checked from their files."""
        rules = rules or KeepRules()
        rules = replace(rules, kept_last=[*rules.kept_last, str(self.uploads)])
        with self.store() as store:
            ignored = store.catalogue.ignored_pairs()

            def is_ignored(a: FileRow, b: FileRow) -> bool:
                return tuple(sorted((a.content_hash or "", b.content_hash or ""))) in ignored

            return find_duplicates(store, threshold, rules, is_ignored, include_recoloured, progress)

    @property
    def journals(self) -> Path:
        """Where the undo journals of ``dupes`` actions go by default."""
        return self.directory / "journals"

    def new_journal(self) -> Path:
        """A fresh journal path in :attr:`journals` (by time: `undo --last` takes the newest)."""
        return self.journals / f"dupes-{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}.jsonl"

    @property
    def uploads(self) -> Path:
        """Where the server keeps the images uploaded into this index."""
        return self.directory / "uploads"

    def found_in(
        self, other: str | os.PathLike, threshold: float, rules: KeepRules | None = None
    ) -> list[Group]:
        """Images of this index already present in index ``other`` (exact or near); files
        in ``rules.protect`` are never proposed."""
        with self.store() as store, Store(other) as theirs:
            return find_in_other(store, theirs, threshold, rules)

    def act_on_duplicates(
        self,
        groups: Sequence[Group],
        action: str,
        journal: Path | None = None,
        move_to: Path | None = None,
        protect: Sequence[str] = (),
        report: ActionReport | None = None,
    ) -> ActionReport:
        """Move aside, trash or hardlink the duplicates of ``groups``, journalled for undo.

        Files moved or trashed leave the index; hardlinked ones stay (same bytes). Nothing
        below ``protect`` is touched, and nothing whose kept file is not there as indexed
        (see :mod:`lookalike.actions`). ``report``, filled as files are done, tells a caller
        what happened even when this raises (Ctrl-C).
        """
        journal = journal or self.new_journal()
        with self.store(writable=True) as store:
            report = report if report is not None else actions.ActionReport(journal)
            try:
                known, home = store.catalogue.known(), store.directory
                actions.apply(groups, action, known, journal, move_to, report, protect, home, store.roots())
            finally:  # whatever was moved or trashed leaves the index, even if apply failed
                gone = [p for p in report.done if not os.path.exists(p)]
                if action != "hardlink" and gone:
                    store.remove_paths(gone)
        return report

    def check_move_target(self, move_to: Path) -> None:
        """Refuse early a ``--move-to`` inside the index folder or a folder ``index`` walks."""
        with self._reading(sync=False) as store:
            if (why := actions.move_refusal(move_to, store.directory, store.roots())) is not None:
                raise InvalidArgument(why)

    def check_report_folder(self, folder: Path) -> None:
        """Refuse a report folder (``dupes --html``) inside a folder ``index`` walks: its
        thumbnails would be indexed as photos on the next run, and found as copies."""
        with self._reading(sync=False) as store:
            if (root := next((r for r in store.roots() if within(folder, r)), None)) is not None:
                raise InvalidArgument(
                    f"cannot write the report into {os.path.abspath(folder)}: it is inside {root}, which "
                    "`lookalike index` walks, so its thumbnails would be indexed as photos; choose a "
                    "folder outside the indexed ones"
                )

    def ignore(self, a: str | os.PathLike, b: str | os.PathLike) -> None:
        """Remember that two indexed files are not duplicates; later runs respect it. Refused
        for one file named twice, and for two files of the same bytes (always duplicates)."""
        self.ignore_pairs([(a, b)], strict=True)

    def unignore(self, a: str | os.PathLike, b: str | os.PathLike) -> None:
        """Forget that two files were marked as not duplicates (undoes :meth:`ignore`)."""
        self.ignore_pairs([(a, b)], forget=True)

    def ignore_pairs(
        self,
        pairs: Sequence[tuple[str | os.PathLike, str | os.PathLike]],
        forget: bool = False,
        strict: bool = False,
    ) -> None:
        """:meth:`ignore` (or, with ``forget``, :meth:`unignore`) each pair of files, in one
        write; ``strict``: each pair two files of different bytes (a review's group passes
        all its pairs, exact copies among them)."""
        pairs = [tuple(os.path.abspath(os.fspath(p)) for p in pair) for pair in pairs]
        paths = sorted({p for pair in pairs for p in pair})
        with self.store(writable=True) as store:
            known = store.catalogue.known(under=paths)
            missing = [p for p in paths if p not in known or not known[p].content_hash]
            if missing:
                raise NotIndexed(f"not in the index: {', '.join(missing)}")
            for a, b in pairs if strict else ():
                if a == b or os.path.realpath(a) == os.path.realpath(b):
                    raise InvalidArgument(f"{a} and {b} are one file: give two different files")
                if known[a].content_hash == known[b].content_hash:
                    raise InvalidArgument(f"{a} and {b} have the same bytes: exact copies stay duplicates")
            for a, b in pairs:
                hashes = known[a].content_hash, known[b].content_hash
                (store.unignore_pair if forget else store.ignore_pair)(*hashes)

    def ignored_pairs(self) -> set[tuple[str, str]]:
        """The content-hash pairs (sorted within each pair) marked as not duplicates."""
        with self._reading(sync=False) as store:
            return store.catalogue.ignored_pairs()

    def version(self) -> tuple[int, int]:
        """What anything cached of the catalogue's rows depends on: (its generation, which
        moves whenever the set of indexed vectors changes, and its revision, which moves
        when files are moved, renamed or touched in place)."""
        with self._reading(sync=False) as store:
            return store.generation(), store.catalogue.revision()

    def similarities(self, ids: Sequence[int], dupes: bool = False) -> np.ndarray:
        """Scores between the stored images ``ids``, as a matrix in their order, as search
        scores them, or as `dupes` does (a difference in one place weighed, pixels that
        match lifting a score) if ``dupes`` (NaN for an id without a stored vector)."""
        with self._reading(sync=False) as store:
            return scores_among(store, ids, local=dupes)

    def undo(self, journal: Path, progress: Progress | None = None) -> ActionReport:
        """Put back what a duplicate action did (see :func:`lookalike.actions.undo`; ``progress``
        hears entries done), and index again the files it brought back (they left the index
        when they went), and those an undo killed before indexing them brought back."""
        report = actions.undo(Path(journal), progress)
        if not self.exists:  # a journal of no index here: the files are back, nothing to index
            return report
        again = [p for p, why in report.skipped if why == actions.ALREADY_BACK]  # an undo cut short
        back = [p for p in [*report.done, *again] if os.path.isfile(p) and self.file_at(p) is None]
        if back:
            self.add(back, options=IndexOptions(workers=0), calibrate=False)
        return report

    def export(self, out: Path, fmt: str = "npy") -> list[Path]:
        """Write every vector with its path (see :func:`lookalike.export.export`)."""
        from lookalike.export import export

        with self.store(sync=False) as store:
            return export(store, Path(out), fmt)

    def info(self) -> dict:
        with self._reading() as store:
            return store.stats()

    def errors(self) -> list[tuple[str, str]]:
        with self._reading(sync=False) as store:
            return store.catalogue.errors()

    def file(self, image_id: int) -> FileRow | None:
        """The catalogue row of an indexed file by id (None if there is none)."""
        with self._reading(sync=False) as store:
            return store.catalogue.rows([image_id]).get(image_id)

    def file_at(self, path: str | os.PathLike) -> FileRow | None:
        """The catalogue row of an indexed file by path (None if there is none)."""
        target = os.path.abspath(os.fspath(path))
        with self._reading(sync=False) as store:
            known = store.catalogue.known(under=[target]).get(target)
            return None if known is None else store.catalogue.rows([known.id]).get(known.id)


def _counted(embed, progress: Progress | None, total: int):
    """``embed``, telling ``progress`` (pictures embedded, ``total``) after each call."""
    if progress is None:
        return embed
    done = 0

    def counted(queries):
        nonlocal done
        out = embed(queries)
        done += len(queries)
        progress(min(done, total), total)
        return out

    return counted


__all__ = ["Index", "ModelError", "QueryResult", "StoreError"]


def _same_folder(path: str | os.PathLike, folder: Path) -> bool:
    """``path`` names the folder ``folder``, under any spelling or link."""
    try:
        return os.path.isdir(path) and os.path.samefile(path, folder)
    except OSError:  # the index folder not made yet
        return False
