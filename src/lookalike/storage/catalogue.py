"""The catalogue: every SQL statement lookalike runs against an index's database.

It is the source of truth. Each vector is stored as float32 bytes in the same
transaction as its file row, and a ``generation`` counter in ``meta`` is bumped by
every transaction that changes the set of vectors. Writes return a :class:`Change`
(the new generation, vector ids gone, ids added) for the store to apply to FAISS.
Ids are never reused (AUTOINCREMENT), so an id always means one version of one file.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import (
    BigInteger,
    Engine,
    String,
    and_,
    cast,
    delete,
    func,
    insert,
    inspect,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from lookalike.errors import StoreError
from lookalike.images import ImageFile
from lookalike.storage.schema import STATUS_ERROR, STATUS_OK, File, IgnoredPair, Label, Meta, Vector

CHUNK = 500  # rows per IN (...) query, well under SQLite's variable limit
ROOTS_PER_QUERY = 100  # folder conditions OR-ed in one query (SQLite nests at most 1000 deep)
LOAD_CHUNK = 5000  # vectors per read when streaming many of them


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
    colour: bytes | None = None  # see lookalike.colour

    @property
    def ok(self) -> bool:
        """Indexed with a vector (not a file recorded as unreadable)."""
        return self.status == STATUS_OK


@dataclass
class Known:
    """What the catalogue remembers of a path, to decide whether to re-read it."""

    id: int
    size: int
    mtime_ns: int
    status: str
    content_hash: str | None
    error: str | None = None  # why it could not be indexed (status error)


@dataclass
class Change:
    """What a write did to the set of vectors: FAISS must follow it."""

    generation: int | None = None  # None: the set of vectors did not change
    removed: list[int] = field(default_factory=list)
    added: list[int] = field(default_factory=list)
    vectors: np.ndarray | None = None  # of ``added``, when the writer has them at hand


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def chunks(seq: Sequence, n: int = CHUNK) -> Iterable[Sequence]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def _vector_bytes(v: np.ndarray) -> bytes:
    return np.ascontiguousarray(v, dtype="<f4").tobytes()


class Catalogue:
    """The SQL side of an index. ``before_write`` runs before each transaction that
    bumps the generation (a writer checks there that it still holds its lock)."""

    def __init__(self, engine: Engine, dim: int = 0, before_write: Callable[[], None] | None = None) -> None:
        self.engine = engine
        self.dim = dim
        self.before_write = before_write or (lambda: None)

    # --- meta ------------------------------------------------------------------------

    def has_meta_table(self) -> bool:
        return inspect(self.engine).has_table(Meta.__tablename__)

    def meta(self, key: str) -> str | None:
        with Session(self.engine) as s:
            row = s.get(Meta, key)
            return row.value if row else None

    def set_meta(self, key: str, value: str) -> None:
        with Session(self.engine) as s, s.begin():
            row = s.get(Meta, key)
            if row is None:
                s.add(Meta(key=key, value=value))
            elif row.value != value:
                row.value = value

    def delete_meta(self, key: str) -> None:
        with Session(self.engine) as s, s.begin():
            s.execute(delete(Meta).where(Meta.key == key))

    def initialise(self) -> None:
        """A writer's first-time state: the generation counter and the catalogue's id
        (a catalogue made before ids existed is marked: its checkpoints are untagged)."""
        with Session(self.engine) as s, s.begin():
            new = s.get(Meta, "generation") is None
            if new:
                s.add(Meta(key="generation", value="0"))
            if s.get(Meta, "catalogue") is None:
                s.add(Meta(key="catalogue", value=uuid.uuid4().hex))
                if not new:
                    s.add(Meta(key="untagged_checkpoints", value="1"))

    def identity(self) -> tuple[str | None, bool]:
        """(the catalogue's id, whether checkpoints without an id tag may be of it)."""
        with Session(self.engine) as s:
            row = s.get(Meta, "catalogue")
            untagged = row is None or s.get(Meta, "untagged_checkpoints") is not None
            return (row.value if row else None), untagged

    def generation(self) -> int:
        value = self.meta("generation")
        return int(value) if value else 0

    def _bump(self, s: Session) -> int:
        """Advance the generation inside the caller's transaction, in one atomic UPDATE."""
        self.before_write()
        bumped = (
            update(Meta)
            .where(Meta.key == "generation")
            .values(value=cast(cast(Meta.value, BigInteger) + 1, String))
            .returning(Meta.value)
            .execution_options(synchronize_session=False)
        )
        return int(s.execute(bumped).scalar_one())

    def revision(self) -> int:
        """How many times files were moved, renamed or touched in place (their rows kept):
        with :meth:`generation`, what a cache of rows (paths, stamps) depends on."""
        value = self.meta("revision")
        return int(value) if value else 0

    @staticmethod
    def _revise(s: Session) -> None:
        """Count a change of rows that leaves the set of vectors as it is (see :meth:`revision`)."""
        row = s.get(Meta, "revision")
        if row is None:
            s.add(Meta(key="revision", value="1"))
        else:
            row.value = str(int(row.value) + 1)

    # --- writes ----------------------------------------------------------------------

    def add(
        self,
        records: Sequence[ImageFile],
        vectors: np.ndarray,
        labels: Sequence[list[tuple[int, str, float]]] | None = None,
    ) -> Change:
        """Store decoded files with their vectors (and labels) in one transaction."""
        stamp = now()
        rows = [
            {
                "path": stored(r.path),
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
                "indexed_at": stamp,
                "colour": r.image.colour,
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
        return Change(generation, replaced, ids, np.asarray(vectors, np.float32))

    def record_errors(self, records: Sequence[ImageFile]) -> Change:
        """Remember files that could not be used, with their reason."""
        stamp = now()
        with Session(self.engine) as s, s.begin():
            replaced = self._delete_paths(s, [r.path for r in records])
            s.execute(
                insert(File),
                [
                    {
                        "path": stored(r.path),
                        "size": r.size,
                        "mtime_ns": r.mtime_ns,
                        "content_hash": r.content_hash,
                        "status": STATUS_ERROR,
                        "error": r.error,
                        "indexed_at": stamp,
                    }
                    for r in records
                ],
            )
            generation = self._bump(s) if replaced else None
        return Change(generation, replaced)

    def remove_paths(self, paths: Sequence[str]) -> tuple[int, Change]:
        """Drop files (rows, vectors, labels) by exact path: (how many were known, change)."""
        with Session(self.engine) as s, s.begin():
            before = s.scalar(select(func.count()).select_from(File))
            removed = self._delete_paths(s, list(paths))
            count = before - s.scalar(select(func.count()).select_from(File))
            generation = self._bump(s) if removed else None
        return count, Change(generation, removed)

    def adopt(
        self, moves: Sequence[tuple[ImageFile, int]], copies: Sequence[tuple[ImageFile, int]]
    ) -> tuple[list[ImageFile], Change]:
        """Reuse stored vectors for files whose content is already indexed.

        ``moves``: (file now at its path, id of the row to relocate there; same id, same
        vector; a touched file is a move to its own path). ``copies``: (file, id of a row
        with that content): a new row gets a copy of that row's vector and labels.
        Returns the files whose source row no longer exists (to be embedded afresh).
        """
        stamp = now()
        added: list[int] = []
        stale: list[ImageFile] = []
        with Session(self.engine) as s, s.begin():
            moved_ids = {fid for _, fid in moves}
            others = [stored(r.path) for r, fid in moves] + [stored(r.path) for r, _ in copies]
            taken = s.execute(select(File.id, File.vector_id).where(File.path.in_(others))).all()
            replaced = [vid for fid, vid in taken if fid not in moved_ids and vid is not None]
            s.execute(delete(File).where(File.id.in_([fid for fid, _ in taken if fid not in moved_ids])))
            for record, fid in moves:
                done = s.execute(
                    update(File)
                    .where(File.id == fid)
                    .values(path=stored(record.path), size=record.size, mtime_ns=record.mtime_ns,
                            indexed_at=stamp)
                )
                if done.rowcount == 0:
                    stale.append(record)
            for record, src_id in copies:
                new_id = self._copy_row(s, record, src_id, stamp)
                if new_id is None:
                    stale.append(record)
                else:
                    added.append(new_id)
            generation = self._bump(s) if added or replaced else None
            if len(stale) < len(moves) + len(copies):
                self._revise(s)
        return stale, Change(generation, replaced, added)

    @staticmethod
    def _copy_row(s: Session, record: ImageFile, src_id: int, stamp: datetime) -> int | None:
        """A new row for ``record`` with the vector and labels of row ``src_id`` (None: gone)."""
        src = s.get(File, src_id)
        if src is None or src.vector_id is None:
            return None
        row = {c: getattr(src, c) for c in ("width", "height", "format", "captured_at", "exif", "colour")}
        new_id = s.scalar(
            insert(File)
            .values(path=stored(record.path), size=record.size, mtime_ns=record.mtime_ns,
                    content_hash=record.content_hash, status=STATUS_OK, indexed_at=stamp, **row)
            .returning(File.id)
        )  # fmt: skip
        s.execute(update(File).where(File.id == new_id).values(vector_id=new_id))
        s.execute(insert(Vector).values(id=new_id, data=s.get(Vector, src_id).data))
        for lab in s.scalars(select(Label).where(Label.file_id == src_id)).all():
            s.add(Label(file_id=new_id, rank=lab.rank, class_index=lab.class_index,
                        name=lab.name, score=lab.score))  # fmt: skip
        return new_id

    def drop_ids(self, ids: Iterable[int]) -> Change:
        """Delete rows and vectors by id (a repair: they are indexed again next run)."""
        ids = sorted(int(i) for i in ids)
        with Session(self.engine) as s, s.begin():
            for chunk in chunks(ids):
                s.execute(delete(Vector).where(Vector.id.in_(chunk)))
                s.execute(delete(File).where(File.id.in_(chunk)))
            generation = self._bump(s)
        return Change(generation, ids)

    def _delete_paths(self, s: Session, paths: list[str]) -> list[int]:
        """Delete rows for ``paths``; returns the ids that had vectors."""
        had_vectors: list[int] = []
        for chunk in chunks([stored(p) for p in paths]):
            had_vectors += s.scalars(
                select(File.vector_id).where(File.path.in_(chunk), File.vector_id.is_not(None))
            )
            s.execute(delete(File).where(File.path.in_(chunk)))
        return had_vectors

    def ignore_pair(self, hash_a: str, hash_b: str) -> None:
        """Remember that two contents are not duplicates of each other."""
        a, b = sorted((hash_a, hash_b))
        with Session(self.engine) as s, s.begin():
            if s.get(IgnoredPair, (a, b)) is None:
                s.add(IgnoredPair(hash_a=a, hash_b=b))

    def unignore_pair(self, hash_a: str, hash_b: str) -> None:
        """Forget that two contents were marked as not duplicates (undoes :meth:`ignore_pair`)."""
        a, b = sorted((hash_a, hash_b))
        with Session(self.engine) as s, s.begin():
            s.execute(delete(IgnoredPair).where(IgnoredPair.hash_a == a, IgnoredPair.hash_b == b))

    # --- vectors ---------------------------------------------------------------------

    def vector_ids(self) -> list[int]:
        """Ids of every stored vector, ascending."""
        with Session(self.engine) as s:
            return sorted(s.scalars(select(Vector.id)))

    def vector_id_array(self) -> np.ndarray:
        """Ids of every stored vector, ascending, as int64: 8 bytes an id (10M: 76 MiB),
        streamed from the database instead of a list of Python ints (~40 bytes an id)."""
        with self.engine.connect() as c:
            rows = c.execution_options(stream_results=True, yield_per=100_000).execute(
                select(Vector.id).order_by(Vector.id)
            )
            return np.fromiter(rows.scalars(), np.int64)

    def load_vectors(self, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Stored vectors for ``ids`` (in id order of what exists)."""
        rows: list[tuple[int, bytes]] = []
        with Session(self.engine) as s:
            for chunk in chunks([int(i) for i in ids]):  # numpy ints do not bind in sqlite3
                rows.extend(s.execute(select(Vector.id, Vector.data).where(Vector.id.in_(chunk))))
        rows.sort()
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32)
        ids_arr = np.array([r[0] for r in rows], np.int64)
        width = 4 * self.dim
        if damaged := [i for i, data in rows if data is None or len(data) != width]:
            raise StoreError(
                f"{len(damaged)} stored vectors are damaged (ids {', '.join(map(str, damaged[:10]))}): "
                "`lookalike verify --repair` drops them, and the next `index` run embeds their files again"
            )
        vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), self.dim)
        return ids_arr, vecs.astype(np.float32)

    def iter_vectors(self, ids: Sequence[int] | np.ndarray) -> Iterable[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) of ``ids`` in chunks, so that no copy of all of them is held."""
        for chunk in chunks(ids if isinstance(ids, (list, np.ndarray)) else list(ids), LOAD_CHUNK):
            yield self.load_vectors(chunk)

    def vectors_by_hash(self) -> dict[str, list[tuple[int, str]]]:
        """content hash -> [(id, path)] of the files whose vectors are stored."""
        out: dict[str, list[tuple[int, str]]] = {}
        q = select(File.content_hash, File.id, File.path).where(File.vector_id.is_not(None))
        with Session(self.engine) as s:
            for h, fid, path in s.execute(q):
                out.setdefault(h, []).append((fid, unstored(path)))
        return out

    # --- reads -----------------------------------------------------------------------

    def known(self, under: Sequence[str] | None = None) -> dict[str, Known]:
        """Catalogue entries; with ``under``, only those at or below these paths (in SQL)."""
        q = select(File.path, File.id, File.size, File.mtime_ns, File.status, File.content_hash, File.error)
        if under is None:
            parts = [q]
        else:  # a few roots per query: SQLite limits how deep one condition may nest
            parts = [q.where(_below(chunk)) for chunk in chunks(list(under), ROOTS_PER_QUERY)]
        out: dict[str, Known] = {}
        with Session(self.engine) as s:
            for part in parts:
                out.update({unstored(path): Known(*rest) for path, *rest in s.execute(part)})
        return out

    def rows(self, ids: Iterable[int]) -> dict[int, FileRow]:
        ids = [int(i) for i in ids]
        out: dict[int, FileRow] = {}
        with Session(self.engine) as s:
            for chunk in chunks(ids):
                for f in s.scalars(select(File).where(File.id.in_(chunk))):
                    out[f.id] = FileRow(
                        f.id, unstored(f.path), f.size, f.mtime_ns, f.content_hash, f.width, f.height,
                        f.format, f.captured_at, f.exif, status=f.status, colour=f.colour,
                    )  # fmt: skip
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

    def ignored_pairs(self) -> set[tuple[str, str]]:
        with Session(self.engine) as s:
            return {(a, b) for a, b in s.execute(select(IgnoredPair.hash_a, IgnoredPair.hash_b))}

    def errors(self) -> list[tuple[str, str]]:
        """(path, reason) of every file that could not be indexed."""
        with Session(self.engine) as s:
            q = select(File.path, File.error).where(File.status == STATUS_ERROR).order_by(File.path)
            return [(unstored(p), e) for p, e in s.execute(q)]

    def counts(self) -> dict[str, int]:
        """Files indexed (``files``), failed (``errors``) and with labels (``labelled``)."""
        with Session(self.engine) as s:
            by_status = dict(s.execute(select(File.status, func.count()).group_by(File.status)).all())
            labelled = s.scalar(select(func.count(func.distinct(Label.file_id))))
        return {
            "files": by_status.get(STATUS_OK, 0),
            "errors": by_status.get(STATUS_ERROR, 0),
            "labelled": labelled or 0,
        }

    def last_indexed(self) -> datetime | None:
        """When a file was last added or updated (UTC), None for an empty catalogue."""
        with Session(self.engine) as s:
            return s.scalar(select(func.max(File.indexed_at)))

    def exported_rows(self) -> list[tuple]:
        """(id, path, content_hash, width, height, captured_at) of files with vectors, by id."""
        q = (
            select(File.id, File.path, File.content_hash, File.width, File.height, File.captured_at)
            .where(File.vector_id.is_not(None))
            .order_by(File.id)
        )
        with Session(self.engine) as s:
            return [(fid, unstored(path), *rest) for fid, path, *rest in s.execute(q)]

    def vector_storage(self) -> tuple[int, int]:
        """(stored vectors, total bytes of their blobs)."""
        with Session(self.engine) as s:
            n, total = s.execute(select(func.count(), func.sum(func.length(Vector.data)))).one()
        return n or 0, total or 0

    def consistency(self) -> tuple[set[int], dict[int, int], set[int], set[int]]:
        """(ids of usable rows, id -> vector_id of rows with one, ids of stored vectors, ids
        of stored vectors that are damaged: not ``dim`` float32 values)."""
        with Session(self.engine) as s:
            ok_rows = set(s.scalars(select(File.id).where(File.status == STATUS_OK)))
            with_vid = dict(
                s.execute(select(File.id, File.vector_id).where(File.vector_id.is_not(None))).all()
            )
            stored = set(s.scalars(select(Vector.id)))
            wrong_length = or_(Vector.data.is_(None), func.length(Vector.data) != 4 * self.dim)
            damaged = set(s.scalars(select(Vector.id).where(wrong_length)))
        return ok_rows, with_vid, stored, damaged


ESCAPE = "\uffff"  # a Unicode noncharacter: starts the escape of a byte that is not UTF-8


def stored(path: str) -> str:
    """A path as the catalogue stores it: valid Unicode text in every database.

    File names are bytes; Python gives the bytes that are not UTF-8 as lone surrogates
    (``surrogateescape``), which neither SQLite nor PostgreSQL can store. Each becomes
    ESCAPE + two hex digits, and a literal ESCAPE becomes ESCAPE + "u": one-to-one,
    and a prefix of a path stays a prefix of its stored form (folder queries work)."""
    if path.isascii():
        return path
    out = []
    for c in path:
        if "\udc80" <= c <= "\udcff":
            out.append(f"{ESCAPE}{ord(c) - 0xDC00:02x}")
        elif c == ESCAPE:
            out.append(ESCAPE + "u")
        else:
            out.append(c)
    return "".join(out)


def unstored(text: str) -> str:
    """The path :func:`stored` made ``text`` from (the inverse)."""
    if ESCAPE not in text:
        return text
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c == ESCAPE and text[i + 1 : i + 2] == "u":
            out.append(ESCAPE)
            i += 2
        elif c == ESCAPE:
            out.append(chr(0xDC00 + int(text[i + 1 : i + 3], 16)))
            i += 3
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _below(paths: Sequence[str]):
    """SQL: the file is one of ``paths`` or below one of them (exact, case-sensitive prefix;
    SQLite's LIKE is neither). The twin of :func:`is_under` for rows in memory."""
    conds = []
    for path in paths:
        root = stored(os.path.abspath(path).rstrip(os.sep) or os.sep)
        prefix = root if root.endswith(os.sep) else root + os.sep
        conds.append(or_(File.path == root, func.substr(File.path, 1, len(prefix)) == prefix))
    return or_(*conds)


def _taken(by_capture, by_mtime):
    """A date condition on the EXIF capture time, or on the mtime where there is none."""
    return or_(and_(File.captured_at.is_not(None), by_capture), and_(File.captured_at.is_(None), by_mtime))
