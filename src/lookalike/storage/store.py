"""One index folder: manifest + SQLite catalogue + FAISS vectors, kept in step.

The catalogue is the source of truth: each vector is stored there as float32 bytes
in the same transaction as its file row, and a ``generation`` counter is bumped by
every transaction that changes the set of vectors. The FAISS file is a checkpoint
of that set at some generation; on open, a checkpoint of another generation is
brought up to date from the catalogue (ids missing are added, ids gone are removed).
Ids are never reused, so comparing id sets is enough. A crash at any point thus
loses at most the uncommitted batch.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import platformdirs
from sqlalchemy import (
    BigInteger,
    Connection,
    String,
    and_,
    cast,
    delete,
    func,
    insert,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from lookalike.descriptors import DEFAULT_DESCRIPTOR, get_descriptor
from lookalike.images import ImageFile
from lookalike.models.runtimes import ModelInfo
from lookalike.storage.schema import (
    STATUS_ERROR,
    STATUS_OK,
    File,
    IgnoredPair,
    Label,
    Meta,
    Vector,
    create_schema,
    database_url,
    make_engine,
)
from lookalike.storage.vectors import TRAIN_PER_LIST, IndexSpec, VectorIndex, choose_spec, fits, fsync_dir

MANIFEST = "manifest.json"
DATABASE = "catalog.sqlite"
LOCKFILE = "write.lock"
MANIFEST_VERSION = 1
ADVISORY_LOCK = 0x6C6F6F6B  # "look": the PostgreSQL advisory lock of a catalogue's writer
_CHUNK = 500  # rows per IN (...) query, well under SQLite's variable limit
RERANK_FACTOR = 10  # an approximate index proposes k x this many candidates, re-scored exactly
RERANK_MIN = 100
EXACT_SUBSET = 10_000  # filters leaving fewer ids are scored exactly from the raw vectors
TRAIN_SAMPLE = 100_000  # vectors an IVF index is trained on (more when it has many lists)


class StoreError(Exception):
    """The index folder is missing, locked, or does not fit the request."""


def default_index_dir() -> Path:
    """``$LOOKALIKE_INDEX``, else a folder in the per-user data directory."""
    env = os.environ.get("LOOKALIKE_INDEX")
    return Path(env) if env else Path(platformdirs.user_data_dir("lookalike")) / "index"


@dataclass
class FileRow:
    """A catalogue entry as search results and reports need it."""

    id: int
    path: str
    size: int
    mtime_ns: int
    content_hash: str | None
    width: int | None
    height: int | None
    format: str | None
    captured_at: datetime | None
    exif: dict | None = None
    labels: list[tuple[str, float]] = field(default_factory=list)
    status: str = STATUS_OK


@dataclass
class Known:
    """What the catalogue remembers of a path, to decide whether to re-read it."""

    id: int
    size: int
    mtime_ns: int
    status: str
    content_hash: str | None


@dataclass
class VerifyReport:
    generation: int
    checkpoint_generation: int
    rows_without_vector: list[int]
    vectors_without_row: list[int]
    missing_from_faiss: list[int]
    extra_in_faiss: list[int]
    mismatched_vectors: list[int]

    @property
    def ok(self) -> bool:
        return not (
            self.rows_without_vector
            or self.vectors_without_row
            or self.missing_from_faiss
            or self.extra_in_faiss
            or self.mismatched_vectors
        )


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _chunks(seq: Sequence, n: int = _CHUNK) -> Iterable[Sequence]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def default_file_mode() -> int:
    """What ``open()`` would give a new file: 0o666 less the umask (mkstemp gives 0o600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_text(path: Path, content: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, default_file_mode())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _vector_bytes(v: np.ndarray) -> bytes:
    return np.ascontiguousarray(v, dtype="<f4").tobytes()


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
        folder then remembers (without password: use PGPASSWORD or ~/.pgpass)."""
        self.directory = Path(directory or default_index_dir()).expanduser().resolve()
        self.writable = writable
        self._lock_fd: int | None = None
        self._db_lock: Connection | None = None
        self._db_lock_fd: int | None = None  # a SQLite catalogue outside the folder
        local_path = self.directory / MANIFEST
        local = json.loads(local_path.read_text(encoding="utf-8")) if local_path.exists() else None
        own = database_url(f"sqlite:///{self.directory / DATABASE}")
        try:
            remembered = (local or {}).get("database")
            remembered = remembered and _redacted(remembered)  # older versions kept ?password=
            url = _absolute(database_url(db or remembered or own))
        except ValueError as exc:
            raise StoreError(str(exc)) from None
        self.shared = url.get_backend_name() != "sqlite"
        where = None if url == own else _redacted(url)  # a catalogue elsewhere: remembered
        self.location = where
        if db and local is not None and remembered != where:
            raise StoreError(
                f"index folder {self.directory} keeps its catalogue in {remembered or DATABASE}, "
                f"not {where or DATABASE}: use another --index folder"
            )
        creating = writable and model is not None
        if not creating and (
            (url == own and local is None)
            or (not self.shared and not Path(url.database or "").is_file())  # no empty file made
        ):
            raise StoreError(f"no index at {self.directory} (create one with `lookalike index`)")
        if writable:
            self._lock()
        try:
            self.engine = make_engine(url)
            if writable:
                self._lock_catalogue()
            self._open(local, model, labels, sync, descriptor)
        except OperationalError as exc:
            self._unlock()
            hint = " (a password goes in PGPASSWORD or ~/.pgpass)" if self.shared else ""
            reason = " ".join(str(exc.orig).split())  # libpq's message spans lines
            raise StoreError(f"cannot use catalogue {where or url}: {reason}{hint}") from exc
        except BaseException:
            self._unlock()  # a failed open must not leave the index locked
            raise

    def _open(
        self,
        local: dict | None,
        model: ModelInfo | None,
        labels: str | None,
        sync: bool,
        descriptor: str | None,
    ) -> None:
        """Schema, manifest, first-time state; the part of opening that can fail after locking."""
        if not self.writable and not inspect(self.engine).has_table(Meta.__tablename__):
            raise StoreError(f"no index in {_redacted(self.engine.url)} (create one with `lookalike index`)")
        # Additive and idempotent: indexes made by older versions gain new tables on open.
        create_schema(self.engine)
        with Session(self.engine) as s:
            row = s.get(Meta, "manifest")
            manifest = json.loads(row.value) if row else local  # the catalogue's copy wins
        if manifest is None:
            if not (self.writable and model is not None):
                raise StoreError(
                    f"no index in {_redacted(self.engine.url)} (create one with `lookalike index`)"
                )
            manifest = {
                "version": MANIFEST_VERSION,
                "created_at": _now().isoformat(timespec="seconds"),
                "model": model.to_dict(),
                "preprocessing": model.preprocessing(),
                "dim": model.dim,
                "metric": "cosine",
                "labels": labels if model.has_labels else None,
                "descriptor": get_descriptor(descriptor).name,
            }
        else:
            if model is not None:
                check_model(manifest, model, self.directory)
            have = manifest.get("descriptor", DEFAULT_DESCRIPTOR)
            if descriptor is not None and get_descriptor(descriptor).name != have:
                raise StoreError(
                    f"index {self.directory} was built with descriptor {have!r}, not {descriptor!r}: "
                    "vectors made differently cannot be compared. Use another --index."
                )
        if self.location:
            manifest["database"] = self.location
        else:
            manifest.pop("database", None)
        self.manifest = manifest
        if self.writable:
            with Session(self.engine) as s, s.begin():
                new = s.get(Meta, "generation") is None
                if new:
                    s.add(Meta(key="generation", value="0"))
                if s.get(Meta, "catalogue") is None:
                    s.add(Meta(key="catalogue", value=uuid.uuid4().hex))
                    if not new:  # its checkpoints were made before catalogues had ids
                        s.add(Meta(key="untagged_checkpoints", value="1"))
            self._save_manifest(local)  # written last: a manifest means "index ready"
            for stale in self.directory.glob(".vectors-*.tmp"):
                stale.unlink(missing_ok=True)
        with Session(self.engine) as s:  # which catalogue this folder's checkpoints must be of
            row = s.get(Meta, "catalogue")
            self.catalogue_id = row.value if row else None
            self._untagged = row is None or s.get(Meta, "untagged_checkpoints") is not None
        self.dim = int(self.manifest["dim"])
        self._vectors: VectorIndex | None = None  # loaded on first use: it can be gigabytes
        self._dirty = False
        if sync:
            self.sync_vectors()

    def _save_manifest(self, local: dict | None = None) -> None:
        """Write the manifest to the catalogue and to the folder, where they differ."""
        text_ = json.dumps(self.manifest, indent=2)
        self._check_catalogue_lock()
        with Session(self.engine) as s, s.begin():
            row = s.get(Meta, "manifest")
            if row is None:
                s.add(Meta(key="manifest", value=text_))
            elif row.value != text_:
                row.value = text_
        if local != self.manifest:
            atomic_write_text(self.directory / MANIFEST, text_)

    # --- lifecycle --------------------------------------------------------------------

    def _lock(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _flock(self.directory / LOCKFILE, str(self.directory))

    def _lock_catalogue(self) -> None:
        """One writer per catalogue too: a PostgreSQL session advisory lock, held on a
        dedicated connection (released by the server if this process dies), or a lock file
        beside a SQLite catalogue outside the folder (the folder's lock covers its own)."""
        if self.engine.dialect.name == "sqlite":
            if self.location:
                self._db_lock_fd = _flock(
                    Path(f"{self.engine.url.database}.lock"), f"catalogue {self.location}"
                )
            return
        if self.engine.dialect.name != "postgresql":
            return  # no lock for other databases (see README)
        conn = self.engine.connect()
        got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_LOCK}).scalar()
        conn.commit()
        if not got:
            conn.close()
            raise StoreError(
                f"catalogue {_redacted(self.engine.url)} is being written by another lookalike process"
            )
        self._db_lock = conn

    def _unlock(self) -> None:
        """Release the catalogue lock, the folder lock and the connections, each even if
        an earlier step fails (a dropped connection releases the advisory lock anyway)."""
        try:
            if self._db_lock is not None:
                lock, self._db_lock = self._db_lock, None
                try:
                    lock.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_LOCK})
                    lock.commit()
                except SQLAlchemyError:
                    pass  # the session is gone, and its lock with it
                finally:
                    lock.close()  # and the engine is disposed below, ending the session
        finally:
            try:
                for attr in ("_db_lock_fd", "_lock_fd"):
                    fd = getattr(self, attr)
                    setattr(self, attr, None)
                    _release(fd)
            finally:
                if hasattr(self, "engine"):
                    self.engine.dispose()

    def close(self) -> None:
        try:
            if self.writable and self._lock_fd is not None:
                self.checkpoint()
        finally:
            self._unlock()  # even when the checkpoint fails (e.g. a full disk)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def vectors(self) -> VectorIndex:
        if self._vectors is None:
            self._vectors = self._load_checkpoint()
            self._vectors.nprobe = self.index_settings["nprobe"]  # a setting, not in the file
        return self._vectors

    def _load_checkpoint(self) -> VectorIndex:
        """This folder's newest checkpoint of this catalogue (a catalogue without an id, from
        an older version, takes untagged ones only: "" matches no tag)."""
        return VectorIndex.load(self.directory, self.dim, self.catalogue_id or "", self._untagged)

    @vectors.setter
    def vectors(self, value: VectorIndex) -> None:
        self._vectors = value

    @property
    def descriptor(self) -> str:
        """How images become vectors here (see :mod:`lookalike.descriptors`)."""
        return self.manifest.get("descriptor", DEFAULT_DESCRIPTOR)

    @property
    def model_info(self) -> dict:
        return self.manifest["model"]

    # --- vectors in step with the catalogue -------------------------------------------

    def generation(self) -> int:
        with Session(self.engine) as s:
            value = s.get(Meta, "generation")
            return int(value.value) if value else 0

    def sync_vectors(self) -> int:
        """Bring the in-memory FAISS index to the catalogue's state; returns changes made."""
        generation = self.generation()
        if self.vectors.generation == generation and not self._dirty:
            return 0
        in_faiss = set(self.vectors.ids().tolist())
        with Session(self.engine) as s:
            in_db = set(s.scalars(select(Vector.id)))
        if in_db and not in_faiss:  # no checkpoint yet (e.g. a new machine): build the right kind
            self.vectors = self._empty_index(self.desired_spec(len(in_db)), sorted(in_db))
        elif in_db and (want := self._outgrown(self.vectors.spec, len(in_db))):
            try:  # e.g. a reader's cache of a collection that grew past flat since: not in RAM
                self.vectors = self._empty_index(want, sorted(in_db))
                in_faiss = set()
            except StoreError:
                pass  # too few vectors for a forced type yet: keep the current one
        extra = in_faiss - in_db
        missing = sorted(in_db - in_faiss)
        self.vectors.remove(extra)
        for ids in _chunks(missing, 5000):
            ids_arr, vecs = self.load_vectors(ids)
            self.vectors.add(ids_arr, vecs)
        self.vectors.generation = generation
        changed = len(extra) + len(missing)
        if self.writable:
            self._dirty = True
            self.checkpoint()
        elif changed and self.shared:
            self._cache_checkpoint()
        return changed

    def _cache_checkpoint(self) -> None:
        """A reader of a shared catalogue saves what it built as this machine's checkpoint
        (when no local writer is busy), so the next open does not rebuild it all again.
        Safe: a checkpoint is only a cache that is reconciled by id on every open."""
        try:
            self._lock()
        except (StoreError, OSError):
            return
        try:
            self.vectors.save(self.directory, self.vectors.generation, self.catalogue_id)
            text_ = json.dumps(self.manifest, indent=2)
            local = self.directory / MANIFEST
            if not local.exists() or local.read_text(encoding="utf-8") != text_:
                atomic_write_text(local, text_)
        except (OSError, RuntimeError):  # FAISS reports a full disk as RuntimeError
            pass
        finally:
            _release(self._lock_fd)
            self._lock_fd = None

    def load_vectors(self, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Stored vectors for ``ids`` (in id order of what exists)."""
        rows: list[tuple[int, bytes]] = []
        with Session(self.engine) as s:
            for chunk in _chunks([int(i) for i in ids]):  # numpy ints do not bind in sqlite3
                rows.extend(s.execute(select(Vector.id, Vector.data).where(Vector.id.in_(chunk))))
        rows.sort()
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32)
        ids_arr = np.array([r[0] for r in rows], np.int64)
        vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), self.dim)
        return ids_arr, vecs.astype(np.float32)

    def checkpoint(self) -> None:
        """Write the FAISS index if it changed since the last checkpoint (rebuilt first
        if the collection has outgrown its index type, see :meth:`maintain_index`)."""
        if not self.writable:
            raise StoreError("index opened read-only")
        if self._dirty and self._vectors is not None:
            self.maintain_index()
            self.vectors.save(self.directory, self.vectors.generation, self.catalogue_id)
            self._dirty = False

    def _bump(self, s: Session) -> int:
        """Advance the generation inside the caller's transaction, in one atomic UPDATE
        (after checking that this writer still holds a shared catalogue's lock)."""
        self._check_catalogue_lock()
        bumped = (
            update(Meta)
            .where(Meta.key == "generation")
            .values(value=cast(cast(Meta.value, BigInteger) + 1, String))
            .returning(Meta.value)
            .execution_options(synchronize_session=False)
        )
        return int(s.execute(bumped).scalar_one())

    def _check_catalogue_lock(self) -> None:
        """A PostgreSQL writer's lock lives as long as its session: fail rather than write
        on if that connection was lost (a server restart, an idle timeout)."""
        if self._db_lock is None:
            return
        try:
            held = self._db_lock.execute(
                text(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
                    " AND pid = pg_backend_pid() AND classid = 0 AND objid = CAST(:k AS oid)"
                    " AND objsubid = 1)"
                ),
                {"k": ADVISORY_LOCK},
            ).scalar()
            self._db_lock.commit()
        except SQLAlchemyError:  # the connection was lost (now or at an earlier check)
            held = False
        if not held:
            raise StoreError(
                f"lost the write lock of catalogue {_redacted(self.engine.url)} (its connection "
                "was closed): nothing more was written; run the command again"
            )

    # --- index type, search with exact re-scoring ------------------------------------

    @property
    def index_settings(self) -> dict:
        """``type`` (auto or one of INDEX_TYPES), ``max_memory`` (bytes), ``nprobe``."""
        return {"type": "auto", "max_memory": None, "nprobe": None, **self.manifest.get("vector_index", {})}

    def desired_spec(self, n: int | None = None) -> IndexSpec:
        settings = self.index_settings
        n = self.vectors.ntotal if n is None else n
        return choose_spec(n, self.dim, settings["max_memory"], settings["type"])

    def maintain_index(self) -> bool:
        """Rebuild the FAISS index when the collection outgrew (or shrank below) its type:
        flat past the exact-scan limit or the memory budget, IVF lists 4x too few for the
        collection, or IVF back to flat under half the limit. Returns whether it rebuilt."""
        want = self._outgrown(self.vectors.spec, self.vectors.ntotal)
        if want is None:
            return False
        try:
            self.rebuild_index(want)
        except StoreError:  # e.g. too few vectors yet for a forced type: keep the current one
            return False
        return True

    def _outgrown(self, have: IndexSpec, n: int) -> IndexSpec | None:
        """The spec to rebuild an index of ``have`` holding ``n`` vectors to, or None."""
        want = self.desired_spec(n)
        if have == want or ((have.kind, have.pq_m) == (want.kind, want.pq_m) and want.nlist < 4 * have.nlist):
            return None
        if have.kind != "flat" and want.kind == "flat" and self.desired_spec(2 * n).kind != "flat":
            return None  # hysteresis: back to exact only well below the limit
        return want

    def rebuild_index(self, spec: IndexSpec | None = None) -> IndexSpec:
        """Build the FAISS index afresh from the catalogue's vectors (trained on a sample)."""
        with Session(self.engine) as s:
            ids = sorted(s.scalars(select(Vector.id)))
        spec = spec or self.desired_spec(len(ids))
        index = self._empty_index(spec, ids)
        for chunk in _chunks(ids, 5000):
            index.add(*self.load_vectors(chunk))
        index.generation = self.generation()
        self.vectors = index
        self._dirty = True
        if self.writable:
            self.vectors.save(self.directory, index.generation, self.catalogue_id)
            self._dirty = False
        return spec

    def _empty_index(self, spec: IndexSpec, ids: Sequence[int]) -> VectorIndex:
        training = None
        if spec.kind != "flat":  # enough per list for k-means, at least TRAIN_SAMPLE
            rng = np.random.default_rng(0)
            size = max(TRAIN_SAMPLE, TRAIN_PER_LIST * spec.nlist)
            sample = ids if len(ids) <= size else rng.choice(ids, size, replace=False)
            training = np.empty((len(sample), self.dim), np.float32)  # filled in chunks: 1x peak
            filled = 0
            for chunk in _chunks(sorted(int(i) for i in sample), 5000):
                vecs = self.load_vectors(chunk)[1]
                training[filled : filled + len(vecs)] = vecs
                filled += len(vecs)
            training = training[:filled]
        try:
            index = VectorIndex.build(self.dim, spec, training)
        except (ValueError, RuntimeError) as exc:
            raise StoreError(f"cannot build index type {spec.kind} over {len(ids)} vectors: {exc}") from exc
        index.nprobe = self.index_settings["nprobe"]
        return index

    def set_index_settings(self, **changes) -> dict:
        """Change ``type``/``max_memory``/``nprobe`` (None: default) and record them."""
        self._require_writable()
        unknown = set(changes) - {"type", "max_memory", "nprobe"}
        if unknown:
            raise TypeError(f"unknown index settings: {', '.join(sorted(unknown))}")
        settings = {**self.index_settings, **changes}
        n = self.vectors.ntotal
        spec = choose_spec(n, self.dim, settings["max_memory"], settings["type"])  # validates the type
        if not fits(spec, n, self.dim, settings["max_memory"]):
            raise StoreError(
                f"{n} vectors of {self.dim} dimensions need at least "
                f"{spec.memory(n, self.dim) / 2**20:.1f} MiB even as {spec}; raise --max-memory"
            )
        self.manifest["vector_index"] = settings
        self._save_manifest()
        self.vectors.nprobe = settings["nprobe"]
        return settings

    def set_calibration(self, calibration: dict | None) -> None:
        """Record the index's score calibration (see :mod:`lookalike.search.calibration`)."""
        self._require_writable()
        self.manifest["calibration"] = calibration
        self._save_manifest()

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (cosine, id) per query, exact scores whatever the index type.

        Approximate indexes propose ``max(RERANK_MIN, RERANK_FACTOR * k)`` candidates that
        are re-scored from the raw vectors; a filter leaving few ids is scored exactly.
        """
        queries = np.ascontiguousarray(queries, np.float32)
        index = self.vectors
        spec = index.spec
        nprobe = None
        if spec.kind != "flat" and allowed is not None:
            if len(allowed) <= EXACT_SUBSET:
                ids, raw = self.load_vectors(allowed)
                return _top_k(queries @ raw.T, ids, k)
            boost = max(1.0, index.ntotal / max(len(allowed), 1))  # more lists: as many allowed seen
            nprobe = min(spec.nlist, int((index.nprobe or index.default_nprobe()) * boost))
        if index.exact:
            return index.search(queries, k, allowed, nprobe)
        _, cand = index.search(queries, max(RERANK_MIN, RERANK_FACTOR * k), allowed, nprobe)
        ids, raw = self.load_vectors(np.unique(cand[cand >= 0]))
        where = {int(i): n for n, i in enumerate(ids)}
        scores = np.full(cand.shape, -np.inf, np.float32)
        for q, row in enumerate(cand):
            keep = [(j, where[int(i)]) for j, i in enumerate(row) if int(i) in where]
            if keep:
                cols, rows = zip(*keep, strict=True)
                scores[q, list(cols)] = raw[list(rows)] @ queries[q]
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        top_ids = np.take_along_axis(cand, order, 1)
        top = np.take_along_axis(scores, order, 1)
        top_ids[~np.isfinite(top)] = -1
        return top, top_ids

    # --- writes ----------------------------------------------------------------------

    def _require_writable(self) -> None:
        if not self.writable:
            raise StoreError("index opened read-only")

    def add(
        self,
        records: Sequence[ImageFile],
        vectors: np.ndarray,
        labels: Sequence[list[tuple[int, str, float]]] | None = None,
    ) -> list[int]:
        """Store decoded files with their vectors (and labels) in one transaction."""
        self._require_writable()
        if not records:
            return []
        now = _now()
        rows = [
            {
                "path": r.path,
                "size": r.size,
                "mtime_ns": r.mtime_ns,
                "content_hash": r.content_hash,
                "width": r.image.width,
                "height": r.image.height,
                "format": r.image.format,
                "status": STATUS_OK,
                "error": None,
                "captured_at": r.image.captured_at,
                "exif": r.image.exif or None,
                "indexed_at": now,
            }
            for r in records
        ]
        with Session(self.engine) as s, s.begin():
            replaced = self._delete_paths(s, [r.path for r in records])
            ids = list(s.scalars(insert(File).returning(File.id, sort_by_parameter_order=True), rows))
            s.execute(update(File), [{"id": i, "vector_id": i} for i in ids])
            s.execute(
                insert(Vector),
                [{"id": i, "data": _vector_bytes(v)} for i, v in zip(ids, vectors, strict=True)],
            )
            if labels:
                s.execute(
                    insert(Label),
                    [
                        {"file_id": i, "rank": rank, "class_index": c, "name": name, "score": score}
                        for i, top in zip(ids, labels, strict=True)
                        for rank, (c, name, score) in enumerate(top)
                    ],
                )
            generation = self._bump(s)
        self.vectors.remove(replaced)
        self.vectors.add(np.array(ids, np.int64), vectors)
        self._mark(generation)
        return ids

    def record_errors(self, records: Sequence[ImageFile]) -> None:
        """Remember files that could not be used, with their reason."""
        self._require_writable()
        if not records:
            return
        now = _now()
        with Session(self.engine) as s, s.begin():
            replaced = self._delete_paths(s, [r.path for r in records])
            s.execute(
                insert(File),
                [
                    {
                        "path": r.path,
                        "size": r.size,
                        "mtime_ns": r.mtime_ns,
                        "content_hash": r.content_hash,
                        "status": STATUS_ERROR,
                        "error": r.error,
                        "indexed_at": now,
                    }
                    for r in records
                ],
            )
            generation = self._bump(s) if replaced else None
        if replaced:
            self.vectors.remove(replaced)
            self._mark(generation)

    def remove_paths(self, paths: Sequence[str]) -> int:
        """Drop files (rows, vectors, labels) by exact path; returns how many were known."""
        self._require_writable()
        with Session(self.engine) as s, s.begin():
            before = s.scalar(select(func.count()).select_from(File))
            removed = self._delete_paths(s, list(paths))
            count = before - s.scalar(select(func.count()).select_from(File))
            generation = self._bump(s) if removed else None
        if removed:
            self.vectors.remove(removed)
            self._mark(generation)
        return count

    def adopt(
        self, moves: Sequence[tuple[ImageFile, int]], copies: Sequence[tuple[ImageFile, int]]
    ) -> list[ImageFile]:
        """Reuse stored vectors for files whose content is already indexed.

        ``moves``: (file now at its path, id of the row to relocate there; same id, same
        vector; a touched file is a move to its own path). ``copies``: (file, id of a row
        with that content): a new row gets a copy of that row's vector and labels.
        Returns the files whose source row no longer exists (to be embedded afresh).
        """
        self._require_writable()
        if not moves and not copies:
            return []
        now = _now()
        added: list[int] = []
        stale: list[ImageFile] = []
        with Session(self.engine) as s, s.begin():
            moved_ids = {fid for _, fid in moves}
            others = [r.path for r, fid in moves] + [r.path for r, _ in copies]
            taken = s.execute(select(File.id, File.vector_id).where(File.path.in_(others))).all()
            replaced = [vid for fid, vid in taken if fid not in moved_ids and vid is not None]
            s.execute(delete(File).where(File.id.in_([fid for fid, _ in taken if fid not in moved_ids])))
            for record, fid in moves:
                done = s.execute(
                    update(File)
                    .where(File.id == fid)
                    .values(path=record.path, size=record.size, mtime_ns=record.mtime_ns, indexed_at=now)
                )
                if done.rowcount == 0:
                    stale.append(record)
            for record, src_id in copies:
                src = s.get(File, src_id)
                if src is None or src.vector_id is None:
                    stale.append(record)
                    continue
                row = {c: getattr(src, c) for c in ("width", "height", "format", "captured_at", "exif")}
                new_id = s.scalar(
                    insert(File)
                    .values(path=record.path, size=record.size, mtime_ns=record.mtime_ns,
                            content_hash=record.content_hash, status=STATUS_OK, indexed_at=now, **row)
                    .returning(File.id)
                )  # fmt: skip
                s.execute(update(File).where(File.id == new_id).values(vector_id=new_id))
                s.execute(insert(Vector).values(id=new_id, data=s.get(Vector, src_id).data))
                labels = s.scalars(select(Label).where(Label.file_id == src_id)).all()
                for lab in labels:
                    s.add(Label(file_id=new_id, rank=lab.rank, class_index=lab.class_index,
                                name=lab.name, score=lab.score))  # fmt: skip
                added.append(new_id)
            generation = self._bump(s) if added or replaced else None
        if generation is not None:
            self.vectors.remove(replaced)
            ids, vecs = self.load_vectors(added)
            self.vectors.add(ids, vecs)
            self._mark(generation)
        return stale

    def vectors_by_hash(self) -> dict[str, list[tuple[int, str]]]:
        """content hash -> [(id, path)] of the files whose vectors are stored."""
        out: dict[str, list[tuple[int, str]]] = {}
        q = select(File.content_hash, File.id, File.path).where(File.vector_id.is_not(None))
        with Session(self.engine) as s:
            for h, fid, path in s.execute(q):
                out.setdefault(h, []).append((fid, path))
        return out

    def _delete_paths(self, s: Session, paths: list[str]) -> list[int]:
        """Delete rows for ``paths``; returns the ids that had vectors."""
        had_vectors: list[int] = []
        for chunk in _chunks(paths):
            had_vectors += s.scalars(
                select(File.vector_id).where(File.path.in_(chunk), File.vector_id.is_not(None))
            )
            s.execute(delete(File).where(File.path.in_(chunk)))
        return had_vectors

    def _mark(self, generation: int) -> None:
        self.vectors.generation = generation
        self._dirty = True

    # --- reads -----------------------------------------------------------------------

    def known(self, under: Sequence[str] | None = None) -> dict[str, Known]:
        """Catalogue entries; with ``under``, only those at or below these paths (in SQL)."""
        q = select(File.path, File.id, File.size, File.mtime_ns, File.status, File.content_hash)
        if under is not None:
            if not under:
                return {}
            q = q.where(_below(under))
        with Session(self.engine) as s:
            return {path: Known(*rest) for path, *rest in s.execute(q)}

    def rows(self, ids: Iterable[int]) -> dict[int, FileRow]:
        ids = [int(i) for i in ids]
        out: dict[int, FileRow] = {}
        with Session(self.engine) as s:
            for chunk in _chunks(ids):
                for f in s.scalars(select(File).where(File.id.in_(chunk))):
                    out[f.id] = FileRow(
                        f.id,
                        f.path,
                        f.size,
                        f.mtime_ns,
                        f.content_hash,
                        f.width,
                        f.height,
                        f.format,
                        f.captured_at,
                        f.exif,
                        status=f.status,
                    )
                labels = select(Label.file_id, Label.name, Label.score).where(Label.file_id.in_(chunk))
                for fid, name, score in s.execute(labels.order_by(Label.file_id, Label.rank)):
                    out[fid].labels.append((name, score))
        return out

    def ids_matching(
        self, under: Sequence[str] = (), since: datetime | None = None, until: datetime | None = None
    ) -> np.ndarray:
        """Ids of indexed files below any of ``under``, taken (EXIF capture time, else
        mtime) at or after ``since`` and before ``until``."""
        q = select(File.id).where(File.vector_id.is_not(None))
        if under:
            q = q.where(_below(under))
        if since is not None:
            ns = int(since.timestamp() * 1e9)
            q = q.where(_taken(File.captured_at >= since, File.mtime_ns >= ns))
        if until is not None:
            ns = int(until.timestamp() * 1e9)
            q = q.where(_taken(File.captured_at < until, File.mtime_ns < ns))
        with Session(self.engine) as s:
            return np.array(sorted(s.scalars(q)), dtype=np.int64)

    def ids_with_label(self, text: str) -> np.ndarray:
        """Ids whose stored top labels contain ``text`` (case-insensitive)."""
        q = select(Label.file_id).where(func.lower(Label.name).contains(text.lower())).distinct()
        with Session(self.engine) as s:
            return np.array(sorted(s.scalars(q)), dtype=np.int64)

    def same_content_pairs(self) -> list[tuple[int, int]]:
        """(first id, other id) for files with identical bytes (and stored vectors)."""
        q = (
            select(File.content_hash, File.id)
            .where(File.vector_id.is_not(None), File.content_hash.in_(
                select(File.content_hash).where(File.vector_id.is_not(None))
                .group_by(File.content_hash).having(func.count() > 1)
            ))
            .order_by(File.content_hash, File.id)
        )  # fmt: skip
        pairs, first = [], {}
        with Session(self.engine) as s:
            for h, fid in s.execute(q):
                if h in first:
                    pairs.append((first[h], fid))
                else:
                    first[h] = fid
        return pairs

    def ignore_pair(self, hash_a: str, hash_b: str) -> None:
        """Remember that two contents are not duplicates of each other."""
        self._require_writable()
        a, b = sorted((hash_a, hash_b))
        with Session(self.engine) as s, s.begin():
            if s.get(IgnoredPair, (a, b)) is None:
                s.add(IgnoredPair(hash_a=a, hash_b=b))

    def ignored_pairs(self) -> set[tuple[str, str]]:
        with Session(self.engine) as s:
            return {(a, b) for a, b in s.execute(select(IgnoredPair.hash_a, IgnoredPair.hash_b))}

    def errors(self) -> list[tuple[str, str]]:
        with Session(self.engine) as s:
            q = select(File.path, File.error).where(File.status == STATUS_ERROR).order_by(File.path)
            return [(p, e) for p, e in s.execute(q)]

    def stats(self) -> dict:
        with Session(self.engine) as s:
            counts = dict(s.execute(select(File.status, func.count()).group_by(File.status)).all())
            labelled = s.scalar(select(func.count(func.distinct(Label.file_id))))
        files = self.directory.iterdir() if self.directory.is_dir() else ()  # a reader's may not exist
        size = sum(p.stat().st_size for p in files if p.is_file())
        model = self.model_info
        return {
            "index": str(self.directory),
            "files": counts.get(STATUS_OK, 0),
            "errors": counts.get(STATUS_ERROR, 0),
            "vectors": self.vectors.ntotal,
            "labelled": labelled,
            "model": model["source"],
            "model_identity": model["identity"],
            "dim": self.dim,
            "input_size": model["input_size"],
            "descriptor": self.descriptor,
            "index_type": str(self.vectors.spec),
            "index_kind": self.vectors.kind,
            "index_setting": self.index_settings["type"],
            "index_memory_bytes": self.vectors.spec.memory(self.vectors.ntotal, self.dim),
            "metric": self.manifest.get("metric", "cosine"),
            "generation": self.generation(),
            "size_bytes": size,
        }

    # --- verify / repair ---------------------------------------------------------------

    def verify(self, sample: int = 1000) -> VerifyReport:
        """Compare catalogue rows, stored vectors and the FAISS checkpoint on disk."""
        checkpoint = self._load_checkpoint()
        with Session(self.engine) as s:
            ok_rows = set(s.scalars(select(File.id).where(File.status == STATUS_OK)))
            with_vid = dict(
                s.execute(select(File.id, File.vector_id).where(File.vector_id.is_not(None))).all()
            )
            stored = set(s.scalars(select(Vector.id)))
        in_faiss = set(checkpoint.ids().tolist())
        mismatched = sorted(i for i, v in with_vid.items() if v != i or i not in stored)
        probe = sorted(stored & in_faiss)
        if len(probe) > sample:
            probe = sorted(np.random.default_rng(0).choice(probe, sample, replace=False).tolist())
        ids, vecs = self.load_vectors(probe)
        expected = checkpoint.stored_form(vecs)  # quantised indexes keep an approximation
        bad = [
            int(i)
            for i, v in zip(ids, expected, strict=True)
            if not np.allclose(checkpoint.reconstruct(i), v, atol=1e-5)
        ]
        return VerifyReport(
            generation=self.generation(),
            checkpoint_generation=checkpoint.generation,
            rows_without_vector=sorted(ok_rows - stored),
            vectors_without_row=sorted(stored - ok_rows),
            missing_from_faiss=sorted(stored - in_faiss),
            extra_in_faiss=sorted(in_faiss - stored),
            mismatched_vectors=sorted(set(bad) | set(mismatched)),
        )

    def repair(self) -> VerifyReport:
        """Fix what ``verify`` finds: bad rows are dropped (re-indexed next run), FAISS rebuilt."""
        self._require_writable()
        report = self.verify()
        drop = (
            set(report.rows_without_vector) | set(report.vectors_without_row) | set(report.mismatched_vectors)
        )
        with Session(self.engine) as s, s.begin():
            for chunk in _chunks(sorted(drop)):
                s.execute(delete(Vector).where(Vector.id.in_(chunk)))
                s.execute(delete(File).where(File.id.in_(chunk)))
            self._bump(s)
        if report.mismatched_vectors:  # rebuild from the catalogue rather than trust FAISS
            self.vectors = VectorIndex(self.dim)
        self._dirty = True
        self.sync_vectors()
        return report


def _top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` columns per row of ``scores`` as (scores, ids), padded with -1 ids."""
    k = max(1, k)
    n = scores.shape[1]
    out_s = np.full((len(scores), k), -np.inf, np.float32)
    out_i = np.full((len(scores), k), -1, np.int64)
    if n:
        take = min(k, n)
        part = np.argpartition(-scores, take - 1, axis=1)[:, :take]
        best = np.take_along_axis(scores, part, 1)
        order = np.argsort(-best, axis=1, kind="stable")
        out_s[:, :take] = np.take_along_axis(best, order, 1)
        out_i[:, :take] = ids[np.take_along_axis(part, order, 1)]
    return out_s, out_i


def _below(paths: Sequence[str]):
    """SQL: the file is one of ``paths`` or below one of them (exact, case-sensitive prefix;
    SQLite's LIKE is neither). The twin of :func:`is_under` for rows in memory."""
    conds = []
    for path in paths:
        root = os.path.abspath(path).rstrip(os.sep) or os.sep
        prefix = root if root.endswith(os.sep) else root + os.sep
        conds.append(or_(File.path == root, func.substr(File.path, 1, len(prefix)) == prefix))
    return or_(*conds)


def _taken(by_capture, by_mtime):
    """A date condition on the EXIF capture time, or on the mtime where there is none."""
    return or_(and_(File.captured_at.is_not(None), by_capture), and_(File.captured_at.is_(None), by_mtime))


def _flock(path: Path, what: str) -> int:
    """An exclusive lock on the file ``path`` (created if need be), held by the returned
    descriptor; a clear error naming ``what`` when another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreError(f"{what} is being written by another lookalike process") from None
    return fd


def _release(fd: int | None) -> None:
    """Drop a lock taken by :func:`_flock` (None: nothing held)."""
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _absolute(url):
    """A SQLite URL with an absolute file path, so a folder remembers the same file from
    anywhere; in-memory SQLite cannot hold an index."""
    if url.get_backend_name() != "sqlite":
        return url
    if not url.database or url.database == ":memory:" or url.database.startswith("file:"):
        raise ValueError(f"{url}: a SQLite catalogue needs a file path, e.g. sqlite:////data/catalog.sqlite")
    return url.set(database=str(Path(url.database).expanduser().resolve()))


SECRET_PARAMS = {"password", "sslpassword"}  # libpq's, kept out of files and messages


def _redacted(url) -> str:
    """A database URL without its password, safe to store and print."""
    url = database_url(url)
    query = {k: v for k, v in url.query.items() if k.lower() not in SECRET_PARAMS}
    return url._replace(password=None, query=query).render_as_string(hide_password=False)  # .set() keeps None


def check_model(manifest: dict, model: ModelInfo, directory: Path) -> None:
    """Refuse to mix vectors from different models or preprocessing in one index."""
    have = manifest["model"]
    if have["identity"] != model.identity or manifest["preprocessing"] != model.preprocessing():
        raise StoreError(
            f"index {directory} was built with model {have['source']} "
            f"({have['dim']} dims, identity {have['identity'][:12]}); "
            f"{model.source} ({model.dim} dims, identity {model.identity[:12]}) would give "
            "vectors that cannot be compared. Use another --index, or the index's own model."
        )


def is_under(path: str, root: str) -> bool:
    root = root.rstrip(os.sep)
    return path == root or path.startswith(root + os.sep)
