"""The Python API: ``Index(directory).add(...)``, ``.search(...)``, ``.info()``."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from lookalike import actions, descriptors
from lookalike.actions import ActionReport
from lookalike.descriptors import get_descriptor
from lookalike.errors import IncompatibleIndex, NotIndexed, StoreError
from lookalike.images import DEFAULT_MAX_MEGAPIXELS, ImageError, decode
from lookalike.indexer import IndexOptions, IndexReport, index_paths
from lookalike.indexer.pipeline import Progress
from lookalike.models import DEFAULT_MODEL, Embedder, load_labels, load_model
from lookalike.models.sources import ModelError
from lookalike.search import Filters, Hit, calibration, search_vectors
from lookalike.search.duplicates import Group, KeepRules, find_duplicates, find_in_other
from lookalike.storage import FileRow, Manifest, Store, VerifyReport, default_index_dir
from lookalike.storage.manifest import MANIFEST

QuerySource = str | os.PathLike | bytes
log = logging.getLogger(__name__)


@dataclass
class QueryResult:
    query: str
    hits: list[Hit] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict:
        out: dict = {
            "query": self.query,
            "results": [
                {
                    "path": h.path,
                    "score": round(h.score, 6),
                    **({"probability": round(h.probability, 4)} if h.probability is not None else {}),
                    **({"labels": [n for n, _ in h.labels]} if h.labels else {}),
                }
                for h in self.hits
            ],
        }
        if self.error:
            out["error"] = self.error
        return out


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

    def store(self, **kwargs) -> Store:
        """The underlying :class:`Store` (close it, or use it in a ``with`` block)."""
        return Store(self.directory, db=self.db, **kwargs)

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
        with self.store(sync=False) as store:
            return store.manifest

    def model(self) -> Embedder:
        """The model this index was built with, loaded as its manifest describes."""
        if self._embedder is None:
            manifest = self.manifest()
            info = manifest.model
            embedder = load_model(
                info.source, input_size=info.input_size[0], input_range=info.input_range, runtime=self.runtime
            )
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
    ) -> IndexReport:
        """Index (or bring up to date) the images below ``paths``.

        A new index uses ``model`` (a ``--model`` value or a loaded Embedder; default: the
        catalogue default); an existing one keeps its own model and refuses a different one.
        ``labels`` is a file or URL of class names for classification models (default: the
        ImageNet list, downloaded once). ``index_settings`` (type, max_memory, nprobe) are
        recorded first; the FAISS index is rebuilt on closing if they or the size call for it.
        ``descriptor`` (see :mod:`lookalike.descriptors`) is fixed when the index is created.
        Once it holds enough photos, the index calibrates its scores (see :meth:`calibrate`).
        """
        if descriptor is not None:
            get_descriptor(descriptor)  # a typo fails before any model is loaded
        if isinstance(model, Embedder):
            embedder = model
        elif self.exists and model is None:
            embedder = self.model()
        else:
            embedder = load_model(
                model or DEFAULT_MODEL, input_size=input_size, input_range=input_range, runtime=self.runtime
            )
        opts = options or IndexOptions()
        with self.store(model=embedder.info, writable=True, labels=labels, descriptor=descriptor) as store:
            self._embedder = embedder
            self._descriptor = get_descriptor(store.descriptor)
            if index_settings:
                store.set_index_settings(**index_settings)
            if embedder.info.has_labels and opts.label_names is None:
                opts.label_names = load_labels(labels or store.manifest.labels)
            report = index_paths(store, embedder, paths, opts, progress)
            if calibrate:
                report.calibration = calibration.auto_calibrate(store, self.embed, report.indexed)
            return report

    def embed(self, queries: Sequence[QuerySource], max_megapixels: float = DEFAULT_MAX_MEGAPIXELS):
        """Vectors for query images: (vectors of the decodable ones, per-query error or None)."""
        embedder = self.model()
        size, name = embedder.info.input_size, self._descriptor.name
        pixels, errors = [], []
        for q in queries:
            try:
                data = q if isinstance(q, bytes) else Path(q).read_bytes()
                pixels.append(decode(data, size, max_megapixels, name).pixels)
                errors.append(None)
            except OSError as exc:
                errors.append(f"cannot read: {exc.strerror or exc}")
            except ImageError as exc:
                errors.append(str(exc))
        return descriptors.embed(embedder, self._descriptor, pixels).vectors, errors

    def search(
        self,
        queries: Sequence[QuerySource],
        k: int = 10,
        label: str | None = None,
        names: Sequence[str] | None = None,
        filters: Filters | None = None,
    ) -> list[QueryResult]:
        """Nearest indexed images for each query (a path or image bytes), best first."""
        vectors, errors = self.embed(queries)
        with self.store() as store:
            hits = iter(search_vectors(store, vectors, k, label, filters))
        if names is None:
            names = ["<bytes>" if isinstance(q, bytes) else os.fspath(q) for q in queries]
        return [
            QueryResult(str(name), [] if err else next(hits), err)
            for name, err in zip(names, errors, strict=True)
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

    def calibrate(self, sample: int = calibration.DEFAULT_SAMPLE, seed: int = 0) -> calibration.Calibration:
        """Fit and record the mapping of cosine to P(same photo) on this index's own photos."""
        self.model()
        with self.store(writable=True) as store:
            return calibration.calibrate_store(store, self.embed, sample, seed)

    def remove(self, paths: Sequence[str | os.PathLike]) -> int:
        """Drop files, or everything below folders, from the index; returns how many."""
        targets = [os.path.abspath(os.fspath(p)) for p in paths]
        with self.store(writable=True) as store:
            known = store.catalogue.known(under=targets)
            return store.remove_paths(sorted(known))

    def verify(self, repair: bool = False) -> tuple[VerifyReport, VerifyReport | None]:
        """Check catalogue rows, stored vectors and the FAISS file agree (before any repair).

        With ``repair``, fix what was found and check again: (found, after repair).
        """
        with self.store(writable=repair, sync=False) as store:
            found = store.verify()
            if not repair or found.ok:
                return found, None
            store.repair()
            return found, store.verify()

    def duplicates(self, threshold: float, rules: KeepRules | None = None) -> list[Group]:
        """Duplicate groups (exact, and near at ``threshold``), minus ignored pairs."""
        with self.store() as store:
            ignored = store.catalogue.ignored_pairs()

            def is_ignored(a: FileRow, b: FileRow) -> bool:
                return tuple(sorted((a.content_hash or "", b.content_hash or ""))) in ignored

            return find_duplicates(store, threshold, rules, is_ignored)

    def found_in(self, other: str | os.PathLike, threshold: float) -> list[Group]:
        """Images of this index already present in index ``other`` (exact or near)."""
        with self.store() as store, Store(other) as theirs:
            return find_in_other(store, theirs, threshold)

    def act_on_duplicates(
        self, groups: Sequence[Group], action: str, journal: Path | None = None, move_to: Path | None = None
    ) -> ActionReport:
        """Move aside, trash or hardlink the duplicates of ``groups``, journalled for undo.

        Files moved or trashed leave the index; hardlinked ones stay (same bytes).
        """
        journal = journal or self.directory / "journals" / f"dupes-{datetime.now():%Y%m%d-%H%M%S}.jsonl"
        with self.store(writable=True) as store:
            report = actions.ActionReport(journal)
            try:
                actions.apply(groups, action, store.catalogue.known(), journal, move_to, report)
            finally:  # whatever was moved or trashed leaves the index, even if apply failed
                gone = [p for p in report.done if not os.path.exists(p)]
                if action != "hardlink" and gone:
                    store.remove_paths(gone)
        return report

    def ignore(self, a: str | os.PathLike, b: str | os.PathLike) -> None:
        """Remember that two indexed files are not duplicates; later runs respect it."""
        paths = [os.path.abspath(os.fspath(p)) for p in (a, b)]
        with self.store(writable=True) as store:
            known = store.catalogue.known(under=paths)
            missing = [p for p in paths if p not in known or not known[p].content_hash]
            if missing:
                raise NotIndexed(f"not in the index: {', '.join(missing)}")
            store.ignore_pair(known[paths[0]].content_hash, known[paths[1]].content_hash)

    def export(self, out: Path, fmt: str = "npy") -> list[Path]:
        """Write every vector with its path (see :func:`lookalike.export.export`)."""
        from lookalike.export import export

        with self.store(sync=False) as store:
            return export(store, Path(out), fmt)

    def info(self) -> dict:
        with self.store() as store:
            return store.stats()

    def errors(self) -> list[tuple[str, str]]:
        with self.store(sync=False) as store:
            return store.catalogue.errors()


__all__ = ["Index", "ModelError", "QueryResult", "StoreError"]
