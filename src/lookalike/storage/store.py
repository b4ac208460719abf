"""One index folder opened: the FAISS index follows the catalogue's generation.

The catalogue (:mod:`~lookalike.storage.catalogue`) is the source of truth; the FAISS
file is a checkpoint of its set of vectors at some generation. Every write goes to the
catalogue first, which returns a :class:`~lookalike.storage.catalogue.Change`, and then
through :meth:`Store.apply`, the one path by which FAISS changes. On open, a checkpoint
of another generation is brought up to date from the catalogue (ids missing are added,
ids gone removed; ids are never reused, so comparing id sets is enough). A crash at
any point thus loses at most the uncommitted batch.

The rest lives beside it: where the catalogue is (:mod:`.location`), the writer locks
(:mod:`.locks`), the manifest (:mod:`.manifest`), schema upgrades (:mod:`.migrations`),
the index-type policy (:mod:`.vectors`), searching (:mod:`.lookup`), verify/repair
(:mod:`.verify`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy.engine import URL
from sqlalchemy.exc import DatabaseError, OperationalError

from lookalike import units
from lookalike.errors import (
    CatalogueUnavailable,
    IndexLocked,
    IndexNotFound,
    IndexSettingsError,
    ReadOnlyIndex,
    StoreError,
)
from lookalike.fsutil import atomic_write_text, folder_size, is_under, remove_temporaries
from lookalike.images import ImageFile
from lookalike.models.runtimes import ModelInfo
from lookalike.storage import lookup, verify
from lookalike.storage.catalogue import Catalogue, Change
from lookalike.storage.location import (
    DATABASE,
    default_index_dir,
    frozen,
    locate,
    read_only_media,
    unwritable_folder,
)
from lookalike.storage.locks import CatalogueLock, FileLock, lock_folder
from lookalike.storage.manifest import MANIFEST, DamagedManifest, IndexSettings, Manifest, read_local
from lookalike.storage.migrations import migrate
from lookalike.storage.schema import make_engine
from lookalike.storage.vectors import (
    IndexSpec,
    VectorIndex,
    build_from,
    choose_spec,
    fits,
    outgrown,
    remove_stale_temporaries,
)

if TYPE_CHECKING:
    from lookalike.search.metric import Whitening

log = logging.getLogger(__name__)
_DAMAGED_SEEN: set[Path] = set()  # damaged manifest.json files already warned of


class Store:
    """An index folder opened for reading, or for writing (one writer at a time)."""

    def __init__(
        self,
        directory: str | os.PathLike | None = None,
        *,
        model: ModelInfo | None = None,
        writable: bool = False,
        sync: bool = True,
        labels: str | None = None,
        db: str | None = None,
        descriptor: str | None = None,
    ) -> None:
        """Open the index folder ``directory``; its catalogue is ``catalog.sqlite`` there, or
        the database ``db`` (any SQLAlchemy URL, e.g. ``postgresql://host/db``), which the
        folder then remembers (without password: use PGPASSWORD or ~/.pgpass). A writable
        store given a ``model`` creates the index if there is none."""
        self.directory = Path(directory or default_index_dir()).expanduser().resolve()
        self.writable = writable
        self._folder_lock: FileLock | None = None
        self.catalogue_lock: CatalogueLock | None = None
        try:
            local, self._damaged = read_local(self.directory), None
        except DamagedManifest as exc:  # its catalogue's copy is the one used: a writer rewrites it
            own = self.directory / DATABASE
            if db is not None or not own.is_file() or own.stat().st_size == 0:
                raise  # a catalogue it named elsewhere, or none: only the file could say
            local, self._damaged = None, exc
        creating = writable and model is not None
        self.location = locate(self.directory, db, local, creating, own_kept=self._damaged is not None)
        if writable:
            if read_only_media(self.directory):
                raise ReadOnlyIndex.on_media(self.directory)
            self._folder_lock = lock_folder(self.directory)
        try:
            self.engine = make_engine(self._url())
            if writable:
                self.catalogue_lock = CatalogueLock(self.engine, self.location.remembered)
            self.catalogue = Catalogue(self.engine, before_write=self._check_lock)
            self._open(local, model, labels, sync, descriptor)
        except DatabaseError as exc:  # unreachable, refused, no rights (a damaged file: schema.damaged)
            self._release()
            shared = self.location.shared and isinstance(exc, OperationalError)
            hint = " (a password goes in PGPASSWORD or ~/.pgpass)" if shared else ""
            reason = " ".join(str(exc.orig).split())  # libpq's message spans lines
            raise CatalogueUnavailable(f"cannot use catalogue {self.location.name}: {reason}{hint}") from exc
        except BaseException:
            self._release()  # a failed open must not leave the index locked
            raise

    def _url(self) -> URL:
        """The catalogue's URL as opened: a reader's SQLite file in a folder it cannot write
        (read-only media, permissions) frozen."""
        url = self.location.url
        if self.writable or self.location.shared or not unwritable_folder(Path(url.database or "")):
            return url
        return frozen(url)

    def _open(
        self,
        local: Manifest | None,
        model: ModelInfo | None,
        labels: str | None,
        sync: bool,
        descriptor: str | None,
    ) -> None:
        """Schema, manifest, first-time state; the part of opening that can fail after locking."""
        absent = IndexNotFound(f"no index in {self.location.name} (create one with `lookalike index`)")
        if not self.writable and not self.catalogue.has_meta_table():
            raise absent
        migrate(self.engine, self.location.name)
        stored = self.catalogue.meta("manifest")
        if (damaged := self._damaged) is not None:
            if not stored:
                raise damaged  # no copy to read (a catalogue older than copies): not made anew
            if damaged.path not in _DAMAGED_SEEN:  # said once, not at each of a command's opens
                _DAMAGED_SEEN.add(damaged.path)
                log.warning("%s is damaged (%s); using the copy in its catalogue (the next "
                            "`lookalike index` writes it anew)", damaged.path, damaged.reason)  # fmt: skip
        manifest = Manifest.from_json(stored) if stored else local  # the catalogue's copy wins
        if manifest is None:
            if not (self.writable and model is not None):
                raise absent
            manifest = Manifest.new(model, descriptor, labels)
        else:
            if model is not None:
                manifest.check_model(model, self.directory)
                if self.writable and model.source != manifest.model.source:  # moved, re-downloaded:
                    manifest.model = replace(manifest.model, source=model.source)  # found there now
            if self.writable and labels and manifest.model.has_labels and manifest.labels != labels:  # see
                manifest.labels = labels  # models.labels.index_labels: the same names, from a new place
            manifest.check_descriptor(descriptor, self.directory)
        manifest.database = self.location.remembered
        self.manifest = manifest
        self._manifest_text = stored  # as read: a reader sees when another process replaced it
        self.dim = manifest.dim
        self.catalogue.dim = manifest.dim
        if self.writable:
            self.catalogue.initialise()
            self._save_manifest(local)  # written last: a manifest means "index ready"
            remove_stale_temporaries(self.directory)
            remove_temporaries(self.directory, MANIFEST)
        self.catalogue_id, self._untagged = self.catalogue.identity()
        if self.writable:  # an interrupted checkpoint's predecessor (the next save may be far off)
            VectorIndex.remove_superseded(self.directory, self.catalogue_id or "", self._untagged)
        self._vectors: VectorIndex | None = None  # loaded on first use: it can be gigabytes
        self._metric: Whitening | None = None
        self._dirty = False
        if sync:
            self.sync_vectors()

    def _save_manifest(self, local: Manifest | None = None) -> None:
        """Write the manifest to the catalogue and to the folder, where they differ."""
        text = self.manifest.to_json()
        self._check_lock()
        self.catalogue.set_meta("manifest", text)
        self._manifest_text = text
        if local is None or local.to_json() != text:
            atomic_write_text(self.directory / MANIFEST, text)

    # --- lifecycle --------------------------------------------------------------------

    def _check_lock(self) -> None:
        if self.catalogue_lock is not None:
            self.catalogue_lock.check()

    def _release(self) -> None:
        """Release the catalogue lock, the folder lock and the connections, each even if
        an earlier step fails."""
        try:
            if self.catalogue_lock is not None:
                lock, self.catalogue_lock = self.catalogue_lock, None
                lock.release()
        finally:
            try:
                if self._folder_lock is not None:
                    lock, self._folder_lock = self._folder_lock, None
                    lock.release()
            finally:
                if hasattr(self, "engine"):
                    self.engine.dispose()

    def close(self) -> None:
        try:
            if self.writable and self._folder_lock is not None:
                self.checkpoint()
        finally:
            self._release()  # even when the checkpoint fails (e.g. a full disk)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, kind, error, trace) -> None:
        if error is None:
            self.close()
            return
        try:  # the error that ended the block is the one to tell (the disk filled up: the
            self.close()  # checkpoint fails on it too, and would hide what was committed)
        except Exception as also:
            log.warning("while closing %s after an error: %s", self.directory, also)

    def require_writable(self) -> None:
        if not self.writable:
            raise ReadOnlyIndex("index opened read-only")

    @property
    def descriptor(self) -> str:
        """How images become vectors here (see :mod:`lookalike.descriptors`)."""
        return self.manifest.descriptor

    # --- vectors in step with the catalogue -------------------------------------------

    @property
    def vectors(self) -> VectorIndex:
        if self._vectors is None:
            self._vectors = self.load_checkpoint()
            self._vectors.nprobe = self.index_settings.nprobe  # a setting, not in the file
        return self._vectors

    @vectors.setter
    def vectors(self, value: VectorIndex) -> None:
        self._vectors = value

    def load_checkpoint(self) -> VectorIndex:
        """This folder's newest checkpoint of this catalogue (a catalogue without an id, from
        an older version, takes untagged ones only: "" matches no tag)."""
        return VectorIndex.load(self.directory, self.dim, self.catalogue_id or "", self._untagged)

    def generation(self) -> int:
        """The catalogue's generation (the FAISS index's is ``vectors.generation``)."""
        return self.catalogue.generation()

    def warmed(self) -> Store:
        """This store with its learned similarity read now (a long-lived reader's snapshot:
        a later `calibrate` drops the matrix its manifest names; a missing one is said when
        it is used)."""
        with contextlib.suppress(StoreError):
            self.metric  # noqa: B018 - read for its side effect
        return self

    def manifest_moved(self) -> bool:
        """Whether the catalogue's manifest is no longer the one this store read: what was
        learned or calibrated, the index settings, replaced without a change of rows."""
        return self.catalogue.meta("manifest") != self._manifest_text

    def apply(self, change: Change) -> None:
        """Make FAISS follow a committed catalogue change (the one path by which it changes)."""
        if change.generation is None:
            return
        self.vectors.remove(change.removed)
        if change.added:
            if change.vectors is not None:
                self.vectors.add(np.asarray(change.added, np.int64), change.vectors)
            else:
                self.vectors.add(*self.catalogue.load_vectors(change.added))
        self.vectors.generation = change.generation
        self._dirty = True

    def sync_vectors(self, force: bool = False) -> int:
        """Bring the FAISS index to the catalogue's state; returns how many ids changed."""
        generation = self.generation()
        if self.vectors.generation == generation and not (self._dirty or force):
            return 0
        in_faiss = set(self.vectors.ids().tolist())
        in_db = self.catalogue.vector_ids()
        rebuilt = 0
        if in_db and not in_faiss:  # no checkpoint yet (e.g. a new machine): build the right kind
            self.vectors = self._build(self.desired_spec(len(in_db)), in_db)
            in_faiss, rebuilt = set(in_db), len(in_db)
        elif in_db and (want := self._outgrown(self.vectors.spec, len(in_db))):
            try:  # e.g. a reader's cache of a collection that grew past flat since: not in RAM
                self.vectors = self._build(want, in_db)
                in_faiss, rebuilt = set(in_db), len(in_db)
            except IndexSettingsError:
                pass  # too few vectors for a forced type yet: keep the current one
        extra = in_faiss.difference(in_db)
        missing = sorted(set(in_db) - in_faiss)
        self.vectors.remove(extra)
        for ids, vecs in self.catalogue.iter_vectors(missing):
            self.vectors.add(ids, vecs)
        self.vectors.generation = generation
        changed = rebuilt + len(extra) + len(missing)
        if self.writable:
            self._dirty = True
            self.checkpoint()
        elif changed:
            self._cache_checkpoint()
        return changed

    def _cache_checkpoint(self) -> None:
        """A reader of a shared catalogue saves what it built as this machine's checkpoint
        (when no local writer is busy), so the next open does not rebuild it all again.
        Safe: a checkpoint is only a cache that is reconciled by id on every open."""
        if not self.location.shared:
            return
        try:
            lock = lock_folder(self.directory)
        except (IndexLocked, OSError):
            return
        try:
            self.vectors.save(self.directory, self.vectors.generation, self.catalogue_id)
            text = self.manifest.to_json()
            local = self.directory / MANIFEST
            if not local.exists() or local.read_text(encoding="utf-8") != text:
                atomic_write_text(local, text)
        except (OSError, RuntimeError):  # FAISS reports a full disk as RuntimeError
            pass
        finally:
            lock.release()

    def checkpoint(self) -> None:
        """Write the FAISS index if it changed since the last checkpoint. First it is
        rebuilt (and written) if the collection has outgrown its index type, or the settings
        ask for another one (a `reindex` killed after recording them): see
        :meth:`maintain_index`."""
        self.require_writable()
        if self._vectors is None:
            return
        self.maintain_index()
        if self._dirty:
            self.vectors.save(self.directory, self.vectors.generation, self.catalogue_id)
            self._dirty = False

    # --- index type ----------------------------------------------------------------------

    @property
    def index_settings(self) -> IndexSettings:
        return self.manifest.settings

    def desired_spec(self, n: int | None = None) -> IndexSpec:
        settings = self.index_settings
        n = self.vectors.ntotal if n is None else n
        return choose_spec(n, self.dim, settings.max_memory, settings.type)

    def _outgrown(self, have: IndexSpec, n: int) -> IndexSpec | None:
        settings = self.index_settings
        return outgrown(have, n, self.dim, settings.max_memory, settings.type)

    def maintain_index(self) -> bool:
        """Rebuild the FAISS index when the collection outgrew (or shrank below) its type
        (see :func:`~lookalike.storage.vectors.outgrown`). Returns whether it rebuilt."""
        want = self._outgrown(self.vectors.spec, self.vectors.ntotal)
        if want is None:
            return False
        try:
            self.rebuild_index(want)
        except IndexSettingsError:  # e.g. too few vectors yet for a forced type: keep the current one
            return False
        return True

    def rebuild_index(self, spec: IndexSpec | None = None) -> IndexSpec:
        """Build the FAISS index afresh from the catalogue's vectors (trained on a sample).

        A writer lets go of its current index first: the catalogue holds every vector and
        the last checkpoint stays on disk until the new one replaces it, so the memory peak
        is one index plus the training sample, not two indexes. Should the build fail, the
        index it had is built again, as it was, from the catalogue."""
        ids = self.catalogue.vector_id_array()
        spec = spec or self.desired_spec(len(ids))
        before = None if self._vectors is None else self._vectors.spec
        if self.writable:
            self._vectors = None
        try:
            index = self._build(spec, ids)
        except BaseException:
            if self._vectors is None and before is not None:
                self.vectors = self._build(before, ids)
                self.vectors.generation, self._dirty = self.generation(), True
            raise
        index.generation = self.generation()
        self.vectors = index
        self._dirty = True
        if self.writable:
            self.vectors.save(self.directory, index.generation, self.catalogue_id)
            self._dirty = False
        return spec

    def _build(self, spec: IndexSpec, ids: Sequence[int] | np.ndarray) -> VectorIndex:
        """An index of ``spec`` holding the stored vectors ``ids`` (trained on a sample)."""
        return build_from(self.dim, spec, ids, self.catalogue.iter_vectors, self.index_settings.nprobe)

    def set_index_settings(self, **changes) -> IndexSettings:
        """Change ``type``/``max_memory``/``nprobe`` (None: default) and record them."""
        self.require_writable()
        unknown = set(changes) - {"type", "max_memory", "nprobe"}
        if unknown:
            raise TypeError(f"unknown index settings: {', '.join(sorted(unknown))}")
        settings = replace(self.index_settings, **changes)
        n = self.vectors.ntotal
        spec = choose_spec(n, self.dim, settings.max_memory, settings.type)  # validates the type
        if not fits(spec, n, self.dim, settings.max_memory):
            raise IndexSettingsError(
                f"{n} vectors of {self.dim} dimensions need at least "
                f"{units.memory(spec.memory(n, self.dim), at_least=True)} even as {spec}; raise --max-memory"
            )
        self.manifest.vector_index = settings
        self._save_manifest()
        self.vectors.nprobe = settings.nprobe
        return settings

    def set_calibration(self, calibration: dict | None) -> None:
        """Record the index's score calibration (see :mod:`lookalike.search.calibration`)."""
        self.require_writable()
        self.manifest.calibration = calibration
        self._save_manifest()

    @property
    def metric(self) -> Whitening | None:
        """The similarity learned on this collection (see :mod:`lookalike.search.metric`),
        applied to vectors before they are scored; None: plain cosine."""
        version = (self.manifest.learned or {}).get("whitening")
        if version is None:
            return None
        if self._metric is None or self._metric.version != version:
            text = self.catalogue.meta(f"whitening:{version}")
            if text is None:
                raise StoreError(f"{self.location.name}: learned whitening {version} is missing; "
                                   "run `lookalike calibrate` to learn it again")  # fmt: skip
            from lookalike.search.metric import Whitening  # search builds on storage

            self._metric = Whitening.from_text(text)
        return self._metric

    def set_learned(self, whitening: Whitening | None, calibration: dict | None, vectors: int) -> None:
        """Record a new learned similarity (None: plain cosine, e.g. refused) for a collection
        of ``vectors``, with the calibration fitted in it, in one manifest write (the matrix
        is stored first under its own key, the old one dropped after)."""
        self.require_writable()
        old = (self.manifest.learned or {}).get("whitening")
        if whitening is not None:
            self.catalogue.set_meta(f"whitening:{whitening.version}", whitening.to_text())
        version = None if whitening is None else whitening.version
        self.manifest.learned = {"whitening": version, "vectors": vectors}
        self.manifest.calibration = calibration
        self._save_manifest()
        self._metric = whitening
        if old is not None and (whitening is None or old != whitening.version):
            self.catalogue.delete_meta(f"whitening:{old}")

    def note_learning_tried(self, vectors: int) -> None:
        """Record that learning again failed at ``vectors`` (the old state stays in force;
        the next attempt waits until the collection changed as much again from there)."""
        self.require_writable()
        self.manifest.learned = {**(self.manifest.learned or {}), "tried": vectors}
        self._save_manifest()

    # --- reads that need both halves ----------------------------------------------------

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (cosine, id) per query, exact scores whatever the index type (see
        :func:`lookalike.storage.lookup.search`)."""
        return lookup.search(self, queries, k, allowed)

    def verify(self, sample: int = 1000) -> verify.VerifyReport:
        """Compare catalogue rows, stored vectors and the FAISS checkpoint on disk."""
        return verify.verify(self, sample)

    def repair(self) -> verify.VerifyReport:
        """Fix what :meth:`verify` finds (see :func:`lookalike.storage.verify.repair`)."""
        return verify.repair(self)

    def stats(self) -> dict:
        size = folder_size(self.directory)  # a reader's may not exist; a writer's temporaries come and go
        model = self.manifest.model
        return {
            "index": str(self.directory),
            **self.catalogue.counts(),
            "vectors": self.vectors.ntotal,
            "model": model.source,
            "model_identity": model.identity,
            "dim": self.dim,
            "input_size": list(model.input_size),
            "descriptor": self.descriptor,
            "index_type": str(self.vectors.spec),
            "index_kind": self.vectors.kind,
            "index_setting": self.index_settings.type,
            "index_memory_bytes": self.vectors.spec.memory(self.vectors.ntotal, self.dim),
            "metric": self.manifest.metric,
            **self._learning_stats(),
            "generation": self.generation(),
            "last_indexed": _iso(self.catalogue.last_indexed()),
            "size_bytes": size,
        }

    def _learning_stats(self) -> dict:
        """What the index learned of itself: the photos its whitening and its calibration
        were made from (None: none), and why its last calibration was refused, if it was."""
        learned, cal = self.manifest.learned or {}, self.manifest.calibration or {}
        return {
            "learned_on": learned.get("vectors") if learned.get("whitening") else None,
            "calibrated_on": cal.get("photos") if "a" in cal else None,
            "calibration_refused": cal.get("reason"),
        }

    # --- writes: catalogue first, then FAISS follows -------------------------------------

    def add(
        self,
        records: Sequence[ImageFile],
        vectors: np.ndarray,
        labels: Sequence[list[tuple[int, str, float]]] | None = None,
    ) -> list[int]:
        """Store decoded files with their vectors (and labels) in one transaction."""
        self.require_writable()
        if not records:
            return []
        change = self.catalogue.add(records, vectors, labels)
        self.apply(change)
        return change.added

    def record_errors(self, records: Sequence[ImageFile]) -> None:
        """Remember files that could not be used, with their reason."""
        self.require_writable()
        if records:
            self.apply(self.catalogue.record_errors(records))

    def remove_paths(self, paths: Sequence[str]) -> int:
        """Drop files (rows, vectors, labels) by exact path; returns how many were known."""
        self.require_writable()
        count, change = self.catalogue.remove_paths(paths)
        self.apply(change)
        return count

    def adopt(
        self, moves: Sequence[tuple[ImageFile, int]], copies: Sequence[tuple[ImageFile, int]]
    ) -> list[ImageFile]:
        """Reuse stored vectors for files whose content is already indexed (see
        :meth:`Catalogue.adopt`); returns the files to embed afresh."""
        self.require_writable()
        if not moves and not copies:
            return []
        stale, change = self.catalogue.adopt(moves, copies)
        self.apply(change)
        return stale

    def ignore_pair(self, hash_a: str, hash_b: str) -> None:
        """Remember that two contents are not duplicates of each other."""
        self.require_writable()
        self.catalogue.ignore_pair(hash_a, hash_b)

    def unignore_pair(self, hash_a: str, hash_b: str) -> None:
        """Forget a pair marked as not duplicates."""
        self.require_writable()
        self.catalogue.unignore_pair(hash_a, hash_b)

    def roots(self) -> list[str]:
        """The folders ``index`` was given (absolute): what a later run walks again."""
        value = self.catalogue.meta("roots")
        return json.loads(value) if value else []

    def record_roots(self, added: Sequence[str] = (), dropped: Sequence[str] = ()) -> None:
        """Add folders ``index`` walks; forget those at or below ``dropped`` (``remove``)."""
        self.require_writable()
        have = self.roots()
        now = sorted({r for r in [*have, *added] if not any(is_under(r, d) for d in dropped)})
        if now != have:
            self.catalogue.set_meta("roots", json.dumps(now))


def _iso(when) -> str | None:
    """A catalogue time (naive UTC) as ISO 8601 with its offset, or None."""
    return None if when is None else when.isoformat(timespec="seconds") + "+00:00"
