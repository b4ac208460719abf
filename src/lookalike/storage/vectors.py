"""The FAISS side of an index: exact or approximate vectors, checkpointed atomically.

Checkpoints are files named ``vectors-<generation>.faiss``: written to a temporary
name, fsynced, then renamed, so a crash leaves either the old or the new file and
never half of one. The generation says which catalogue state the file reflects.

Index types (:data:`INDEX_TYPES`): ``flat`` (exact, 4 bytes per dimension), and inverted
files trained on the collection's own vectors: ``ivf-flat`` (float storage), ``ivf-sq8``
(1 byte per dimension) and ``ivf-pq`` (product quantisation, a few bytes per vector).
Approximate scores are re-scored exactly from the catalogue's raw vectors (see
:mod:`lookalike.storage.lookup`). From :data:`HNSW_NLIST` lists on (a million vectors) the
lists' centroids are found through an HNSW graph (FAISS's ``IVF<n>_HNSW32``) and trained by
two-level k-means, as FAISS advises for 1M-100M vectors: filling the index then costs a
graph search a vector instead of a scan of all nlist centroids. The policy is pure
functions: :func:`choose_spec` picks a type from the collection size and a memory budget,
:func:`outgrown` says when to rebuild.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from lookalike.errors import IncompatibleIndex, IndexSettingsError, InvalidArgument, StoreError
from lookalike.fsutil import atomic_path, remove_temporaries

log = logging.getLogger(__name__)
_WARNED: set[Path] = set()  # unreadable checkpoints already told of

Loader = Callable[[np.ndarray], Iterable[tuple[np.ndarray, np.ndarray]]]  # ids -> (ids, vectors) chunks
_NAME = re.compile(r"^vectors-(\d+)(?:-([0-9a-f]+))?\.faiss$")  # generation, catalogue id


INDEX_TYPES = ("flat", "ivf-flat", "ivf-sq8", "ivf-pq")
FLAT_MAX_FLOATS = 100_000_000  # n x dim of an exact scan that still answers in ~30 ms
TRAIN_PER_LIST = 64  # training vectors per inverted list (FAISS warns below 39)
TRAIN_SAMPLE = 100_000  # vectors an IVF index is trained on (more when it has many lists)
# Resident bytes per vector beside its code, measured (RSS, bench/ann_recall.py) with FAISS 1.x:
# IndexIDMap2 maps (flat); IVF: the 8-byte id and the id -> position hash map (40, FAISS 1.15), 12
# more while a rebuild holds id and list arrays (lists sized exactly: VectorIndex.fill), the rest a
# margin for lists grown by later adds (doubling). 10M x 768 SQ8 rebuilt: 851 measured, 864 here.
FLAT_ID_BYTES = 80
IVF_ID_BYTES = 96
# From this many lists, an HNSW graph finds a vector's lists (FAISS's guidelines: IVF65536_HNSW32
# from 1M vectors): assigning 10M x 768 to 16,384 lists by brute force (n x nlist) and k-means
# over all of them on a 1M sample were estimated at ~5 h on 2 cores.
HNSW_NLIST = 4096
HNSW_M = 32  # graph neighbours per centroid (64 on the ground level)
# Candidates the graph keeps when it assigns a vector (at search: at least nprobe); 32 puts
# 99.8% of vectors in the list an exact scan would (64: 99.95% at 1.5x the time).
HNSW_EF = 32
HNSW_REFINE = 10  # k-means iterations over all lists after the two-level start (see hnsw_kmeans)


@dataclass(frozen=True)
class IndexSpec:
    """What to build: a type of :data:`INDEX_TYPES`, its list count, PQ code size and the
    coarse quantizer: an HNSW graph of ``hnsw`` neighbours a node (0: a flat scan)."""

    kind: str = "flat"
    nlist: int = 0
    pq_m: int = 0
    hnsw: int = 0

    @property
    def factory(self) -> str:
        codes = {"ivf-flat": "Flat", "ivf-sq8": "SQ8", "ivf-pq": f"PQ{self.pq_m}"}
        if self.kind == "flat":
            return "Flat"
        quantizer = f"_HNSW{self.hnsw}" if self.hnsw else ""
        return f"IVF{self.nlist}{quantizer},{codes[self.kind]}"

    def bytes_per_vector(self, dim: int) -> int:
        code = {"flat": 4 * dim, "ivf-flat": 4 * dim, "ivf-sq8": dim, "ivf-pq": self.pq_m}[self.kind]
        return code + (FLAT_ID_BYTES if self.kind == "flat" else IVF_ID_BYTES)

    def quantizer_bytes(self, dim: int) -> int:
        """The lists' centroids, and the HNSW graph over them (2M links of 4 bytes on the
        ground level, about 4 more a node above it, level and offset: 12)."""
        graph = 8 * self.hnsw + 16 if self.hnsw else 0
        return self.nlist * (dim * 4 + graph)

    def memory(self, n: int, dim: int) -> int:
        """Approximate resident size of ``n`` vectors in this index."""
        return n * self.bytes_per_vector(dim) + self.quantizer_bytes(dim)

    def __str__(self) -> str:
        return self.factory


def parse_memory(value: str | int | None) -> int | None:
    """Bytes from ``"2G"``, ``"512MB"``, ``"1.5GiB"`` or a plain number; none/0 for no limit."""
    if value is None or isinstance(value, int):
        return value or None
    text = value.strip().lower().removesuffix("b").removesuffix("i")
    if text in ("", "none", "0"):
        return None
    scale = {"k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}.get(text[-1], 1)
    try:
        amount = float(text[:-1] if scale > 1 else text)
    except ValueError:
        raise InvalidArgument(
            f"memory size {value!r}: expected e.g. 2G, 512MB or a number of bytes"
        ) from None
    if amount <= 0:
        raise InvalidArgument(f"memory size {value!r} must be positive")
    return int(amount * scale)


def nlist_for(n: int) -> int:
    """About 4 sqrt(n) lists, a power of two, with enough vectors to train them."""
    nlist = 1 << round(math.log2(max(1, 4 * math.isqrt(max(n, 1)))))
    while nlist > 1 and nlist * TRAIN_PER_LIST > n:
        nlist //= 2
    return nlist


def hnsw_for(nlist: int) -> int:
    """Neighbours per node of the HNSW graph that finds a vector's lists; 0: scan them all."""
    return HNSW_M if nlist >= HNSW_NLIST else 0


def pq_m_for(dim: int, budget_per_vector: float) -> int:
    """The largest PQ code (bytes) that divides ``dim``, fits the budget and is at most
    dim / 4; the smallest code when none fits (see :func:`fits`)."""
    sizes = [m for m in range(4, dim // 4 + 1) if dim % m == 0] or [dim]
    fitting = [m for m in sizes if m <= budget_per_vector]
    return fitting[-1] if fitting else sizes[0]


def fits(spec: IndexSpec, n: int, dim: int, max_memory: int | None) -> bool:
    return max_memory is None or spec.memory(n, dim) <= max_memory


def choose_spec(n: int, dim: int, max_memory: int | None = None, kind: str = "auto") -> IndexSpec:
    """The index for ``n`` vectors: exact while an exact scan is fast and fits the budget,
    then IVF-SQ8, then IVF-PQ with the largest code that fits ``max_memory`` (bytes).
    ``kind`` forces a type of :data:`INDEX_TYPES` (its sizes still follow ``n``)."""
    if kind not in ("auto", *INDEX_TYPES):
        raise InvalidArgument(f"unknown index type {kind!r}; choose from auto, {', '.join(INDEX_TYPES)}")
    nlist = nlist_for(n)
    hnsw = hnsw_for(nlist)
    if kind == "flat" or (
        kind == "auto" and n * dim <= FLAT_MAX_FLOATS and fits(IndexSpec(), n, dim, max_memory)
    ):
        return IndexSpec()
    if kind in ("ivf-flat", "ivf-sq8"):
        return IndexSpec(kind, nlist, hnsw=hnsw)
    sq8 = IndexSpec("ivf-sq8", nlist, hnsw=hnsw)
    if kind == "auto" and fits(sq8, n, dim, max_memory):
        return sq8
    coarse = sq8.quantizer_bytes(dim)
    budget = dim // 4 if max_memory is None else (max_memory - coarse) / max(n, 1) - IVF_ID_BYTES
    return IndexSpec("ivf-pq", nlist, pq_m_for(dim, budget), hnsw)


def two_level_centroids(training: np.ndarray, nlist: int, niter: int = 25) -> np.ndarray:
    """``nlist`` spherical k-means centroids of ``training`` in two levels, as FAISS's
    ``contrib.clustering.two_level_clustering`` does: sqrt(nlist) clusters, then each split
    in proportion to its size. About 2 sqrt(nlist) distances a vector an iteration instead
    of nlist (16,384 lists: 256 instead of 16,384)."""
    dim = training.shape[1]

    def kmeans(x: np.ndarray, k: int, most: int) -> np.ndarray:
        km = faiss.Kmeans(dim, k, niter=niter, spherical=True, min_points_per_centroid=1,
                          max_points_per_centroid=most, seed=1234)  # fmt: skip
        km.train(x)
        return km.centroids

    outer = max(1, math.isqrt(nlist))
    coarse = kmeans(training, outer, 2000)
    assign = faiss.knn(training, coarse, 1, faiss.METRIC_INNER_PRODUCT)[1].ravel()
    sizes = np.bincount(assign, minlength=outer)
    # lists per cluster in proportion to its size; never more than its vectors (nlist <= n)
    counts = np.diff(np.cumsum(sizes) * nlist // len(training), prepend=0)
    order = np.argsort(assign, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    parts = []
    for c in np.flatnonzero(counts):
        members = training[order[starts[c] : starts[c + 1]]]
        parts.append(members if counts[c] == len(members) else kmeans(members, int(counts[c]), 256))
    return np.ascontiguousarray(np.vstack(parts), np.float32)


def hnsw_kmeans(quantizer: faiss.IndexHNSW, training: np.ndarray, nlist: int) -> None:
    """Fill ``quantizer`` (an empty HNSW graph) with ``nlist`` centroids of ``training``:
    :func:`two_level_centroids`, then :data:`HNSW_REFINE` spherical k-means iterations over
    all lists at once, each vector assigned through the graph. Measured on 200,000 x 768
    (bench/ann_recall.py's vectors, 2,048 lists, 64 training vectors a list), recall@10 at
    nprobe 16 / 64: two-level alone 0.843 / 0.956, with 2 iterations 0.912 / 0.973, with 10
    0.939 / 0.984 in 47 s; FAISS's k-means over all lists (25 exact iterations) 0.968 / 0.990
    in 103 s, a cost that grows with n x nlist."""
    cp = faiss.ClusteringParameters()
    cp.niter, cp.spherical, cp.min_points_per_centroid = HNSW_REFINE, True, 1
    clustering = faiss.Clustering(training.shape[1], nlist, cp)
    faiss.copy_array_to_vector(two_level_centroids(training, nlist).ravel(), clustering.centroids)
    quantizer.hnsw.efSearch = 16  # a rough assignment is enough to move centroids
    clustering.train(training, quantizer)  # leaves the final centroids in the quantizer
    if quantizer.ntotal != nlist:
        raise RuntimeError(f"k-means left {quantizer.ntotal} centroids in the quantizer, not {nlist}")
    quantizer.hnsw.efSearch = HNSW_EF


def _ivf(index: faiss.Index) -> faiss.IndexIVF | None:
    ivf = faiss.try_extract_index_ivf(index)
    return None if ivf is None else faiss.downcast_index(ivf)


class VectorIndex:
    """Vectors by id: ``IndexIDMap2(IndexFlatIP)`` (exact inner product = cosine on unit
    vectors) or an IVF index holding the ids itself, with an id hash map for removal."""

    def __init__(self, dim: int, index: faiss.Index | None = None, generation: int = 0) -> None:
        self.dim = dim
        self.index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self.generation = generation
        self.nprobe: int | None = None  # lists visited per query; None: :meth:`default_nprobe`
        self.unreadable: str | None = None  # why the checkpoint loaded in its place could not be read
        self.absent = False  # loaded where there was no checkpoint

    @classmethod
    def build(cls, dim: int, spec: IndexSpec, training: np.ndarray | None = None) -> VectorIndex:
        """An empty index of ``spec``, trained on ``training`` (a sample of the collection)."""
        if spec.kind == "flat":
            return cls(dim)
        index = faiss.index_factory(dim, spec.factory, faiss.METRIC_INNER_PRODUCT)
        if training is None or len(training) < spec.nlist:
            raise ValueError(f"{spec} needs at least {spec.nlist} training vectors")
        ivf = _ivf(index)
        ivf.cp.min_points_per_centroid = 1  # a small collection still trains, without warnings
        if isinstance(ivf, faiss.IndexIVFPQ):
            ivf.pq.cp.min_points_per_centroid = 1
            ivf.do_polysemous_training = False  # only for Hamming filtering, which we do not use
        training = np.ascontiguousarray(training, np.float32)
        if spec.hnsw:
            hnsw_kmeans(faiss.downcast_index(ivf.quantizer), training, spec.nlist)
        index.train(training)  # with its centroids in place, only the codes are trained
        index.set_direct_map_type(faiss.DirectMap.Hashtable)
        return cls(dim, index)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def spec(self) -> IndexSpec:
        ivf = _ivf(self.index)
        if ivf is None:
            return IndexSpec()
        quantizer = faiss.downcast_index(ivf.quantizer)
        hnsw = quantizer.hnsw.nb_neighbors(1) if isinstance(quantizer, faiss.IndexHNSW) else 0
        if isinstance(ivf, faiss.IndexIVFPQ):
            return IndexSpec("ivf-pq", ivf.nlist, ivf.pq.M, hnsw)
        kind = "ivf-sq8" if isinstance(ivf, faiss.IndexIVFScalarQuantizer) else "ivf-flat"
        return IndexSpec(kind, ivf.nlist, hnsw=hnsw)

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def exact(self) -> bool:
        """Whether scores are exact (flat or ivf-flat storage); else they need re-scoring."""
        return self.spec.kind in ("flat", "ivf-flat")

    def default_nprobe(self) -> int:
        """1/32 of the lists, at least 64: recall@10 >= 0.95 from the first IVF size (100,000
        x 1024: 0.91 at 32 lists, 0.96 at 64) to a million (1.00 at 128), by bench/ann_recall.py."""
        nlist = self.spec.nlist
        return min(nlist, max(64, nlist // 32))

    def ids(self) -> np.ndarray:
        ivf = _ivf(self.index)
        if ivf is None:
            return faiss.vector_to_array(self.index.id_map).astype(np.int64)
        inv = ivf.invlists
        parts = [
            faiss.rev_swig_ptr(inv.get_ids(i), inv.list_size(i)).copy()
            for i in range(ivf.nlist)
            if inv.list_size(i)
        ]
        return np.sort(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, np.int64)

    def flat_view(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(ids, vectors) as a zero-copy view of a Flat index's storage, else None.

        Valid until the index changes; lets a million vectors be scanned without a copy.
        """
        if _ivf(self.index) is not None or self.ntotal == 0:
            return None
        inner = faiss.downcast_index(self.index.index)
        view = faiss.rev_swig_ptr(inner.get_xb(), self.ntotal * self.dim).reshape(self.ntotal, self.dim)
        return self.ids(), view

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self.index.add_with_ids(np.ascontiguousarray(vectors, np.float32), np.asarray(ids, np.int64))

    def fill(self, ids: np.ndarray, load: Loader) -> None:
        """Add the vectors ``load(ids)`` yields (``ids`` ascending) to this empty index.

        An IVF index reads them twice: the first pass finds each vector's list (the coarse
        quantizer's search, done once), so that every list is allocated at its exact size
        before the second adds the codes with those lists. Added one by one, a list grows by
        doubling and leaves freed copies behind: filling 1M x 768 into IVF4096_HNSW32,SQ8 grew
        the process by 1.19 GiB that way, by 0.83 GiB with exact sizes (codes and ids: 0.72),
        in the same time (258 / 261 s, one core), to a byte-identical index.
        """
        ivf = _ivf(self.index)
        invlists = None if ivf is None else faiss.downcast_InvertedLists(ivf.invlists)
        direct = isinstance(faiss.downcast_index(self.index), faiss.IndexIVF)  # no wrapper to apply
        if not (direct and isinstance(invlists, faiss.ArrayInvertedLists) and self.ntotal == 0):
            for chunk_ids, vecs in load(ids):
                self.add(chunk_ids, vecs)
            return
        lists = np.full(len(ids), -1, np.int32)  # each id's list; -1: not read in the first pass
        for chunk_ids, vecs in load(ids):
            found = np.searchsorted(ids, chunk_ids)
            lists[found] = ivf.quantizer.assign(np.ascontiguousarray(vecs, np.float32), 1).ravel()
        sizes = np.bincount(lists[lists >= 0], minlength=ivf.nlist)
        for i in np.flatnonzero(sizes):
            invlists.resize(int(i), int(sizes[i]))  # allocates the list once, at its final size;
            invlists.resize(int(i), 0)  # emptied, it keeps that capacity for the codes to come
        for chunk_ids, vecs in load(ids):
            x = np.ascontiguousarray(vecs, np.float32)
            xids = np.ascontiguousarray(chunk_ids, np.int64)
            assigned = lists[np.searchsorted(ids, xids)].astype(np.int64)
            if (new := assigned < 0).any():  # stored between the passes: assigned now
                assigned[new] = ivf.quantizer.assign(x[new], 1).ravel()
            ivf.add_core(len(x), faiss.swig_ptr(x), faiss.swig_ptr(xids), faiss.swig_ptr(assigned))

    def remove(self, ids) -> int:
        ids = np.asarray(list(ids), dtype=np.int64)
        if not len(ids):
            return 0
        if _ivf(self.index) is not None:  # the id hash map removes only by explicit array
            return int(self.index.remove_ids(faiss.IDSelectorArray(ids)))
        return int(self.index.remove_ids(faiss.IDSelectorBatch(ids)))

    def reconstruct(self, id_: int) -> np.ndarray:
        return self.index.reconstruct(int(id_))

    def stored_form(self, vectors: np.ndarray) -> np.ndarray:
        """What the index keeps of ``vectors`` (their quantised form): for verification."""
        vectors = np.ascontiguousarray(vectors, np.float32)
        if self.exact or not len(vectors):
            return vectors
        return self.index.sa_decode(self.index.sa_encode(vectors))

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None, nprobe: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) per query; ``allowed`` restricts to those ids inside FAISS;
        ``nprobe`` overrides the lists visited for this call (IVF).

        Scores of quantised indexes are approximate: :func:`lookalike.storage.lookup.search`
        re-scores them.
        """
        queries = np.ascontiguousarray(queries, np.float32)
        k = max(1, min(k, self.ntotal)) if self.ntotal else 1
        sel = None if allowed is None else faiss.IDSelectorBatch(np.asarray(allowed, np.int64))
        if (ivf := _ivf(self.index)) is not None:
            nprobe = nprobe or self.nprobe or self.default_nprobe()
            params = faiss.SearchParametersIVF(nprobe=nprobe, sel=sel)
            if isinstance(faiss.downcast_index(ivf.quantizer), faiss.IndexHNSW):
                # the graph's own efSearch is for adding; nprobe lists need a wider beam (2 x:
                # 99.99% of the lists an exact scan finds; 1 x: 99.96%, 1/4 x: 97%)
                graph = faiss.SearchParametersHNSW(efSearch=max(HNSW_EF, 2 * nprobe))
                params.quantizer_params = graph  # ``graph`` lives until the search returns
            return self.index.search(queries, k, params=params)
        if sel is None:
            return self.index.search(queries, k)
        return self.index.search(queries, k, params=faiss.SearchParameters(sel=sel))

    # --- persistence -------------------------------------------------------------------

    @staticmethod
    def checkpoints(
        directory: Path, catalogue: str | None = None, untagged: bool = True
    ) -> list[tuple[int, Path]]:
        """(generation, file) of the checkpoints in ``directory``, oldest first. With
        ``catalogue``, only that catalogue's (and untagged ones, made before catalogues had
        ids, if ``untagged``), so a folder never pairs one catalogue's ids with another's."""
        found = []
        if not directory.is_dir():
            return found
        for p in directory.iterdir():
            m = _NAME.match(p.name)
            if m and (catalogue is None or m.group(2) == catalogue or (untagged and m.group(2) is None)):
                found.append((int(m.group(1)), p))
        return sorted(found)

    @classmethod
    def load(
        cls, directory: Path, dim: int, catalogue: str | None = None, untagged: bool = True
    ) -> VectorIndex:
        """The newest checkpoint in ``directory`` (of ``catalogue``, see :meth:`checkpoints`),
        or an empty index (generation 0) when there is none or it cannot be read: the
        catalogue holds every vector, and the store rebuilds the index from it."""
        for attempt in range(5):
            found = cls.checkpoints(directory, catalogue, untagged)
            if not found:
                empty = cls(dim)
                empty.absent = True
                return empty
            generation, path = found[-1]
            try:
                index = faiss.read_index(str(path))
                break
            except RuntimeError as exc:  # a writer replaced it between listing and reading, or
                if path.exists():  # it is damaged (they are written whole, then renamed in)
                    empty = cls(dim)
                    empty.unreadable = f"{path.name}: {_faiss_reason(exc)}"
                    if path not in _WARNED:  # once, though a command may look at it more than once
                        _WARNED.add(path)
                        log.warning("vector checkpoint %s: rebuilt from the catalogue", empty.unreadable)
                    return empty
                if attempt == 4:
                    raise
        if index.d != dim:
            raise IncompatibleIndex(f"{path}: vectors have {index.d} dimensions, manifest says {dim}")
        return cls(dim, index, generation)

    def save(self, directory: Path, generation: int, catalogue: str | None = None) -> Path:
        """Write a checkpoint for ``generation`` (of ``catalogue``) atomically and drop
        all others."""
        name = f"vectors-{generation}-{catalogue}.faiss" if catalogue else f"vectors-{generation}.faiss"
        final = directory / name
        with atomic_path(final) as tmp:
            try:
                faiss.write_index(self.index, str(tmp))
            except RuntimeError as exc:  # FAISS's write error ends with the system's reason
                reason = re.search(r"\(([^()]+)\)\s*$", str(exc))
                why = reason.group(1) if reason else _faiss_reason(exc)
                raise StoreError(f"cannot write the vector checkpoint {final}: {why}") from exc
        self.generation = generation
        for _, path in self.checkpoints(directory):
            if path != final:
                path.unlink(missing_ok=True)
        return final

    @classmethod
    def remove_superseded(cls, directory: Path, catalogue: str | None = None, untagged: bool = True) -> None:
        """Delete the checkpoints (of ``catalogue``, see :meth:`checkpoints`) older than the
        newest, which is the only one :meth:`load` reads: what a writer killed between
        renaming a new checkpoint into place and removing the old ones leaves behind."""
        for _, path in cls.checkpoints(directory, catalogue, untagged)[:-1]:
            path.unlink(missing_ok=True)


def _faiss_reason(exc: RuntimeError) -> str:
    """A FAISS error's message without where in FAISS's source it was raised."""
    text = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
    return re.sub(r"^Error in .*? at \S+:\d+: (Error: )?", "", text)


def remove_stale_temporaries(directory: Path) -> None:
    """Checkpoint files a crashed writer left half-written (this and older releases' names)."""
    remove_temporaries(directory, "vectors-*")
    for stale in directory.glob(".vectors-*.tmp"):
        stale.unlink(missing_ok=True)


# --- policy: which index a collection needs, and when it has outgrown its own -----------


def outgrown(have: IndexSpec, n: int, dim: int, max_memory: int | None, kind: str) -> IndexSpec | None:
    """The spec to rebuild an index of ``have`` holding ``n`` vectors to, or None: flat past
    the exact-scan limit or the memory budget, IVF lists 4x too few for the collection, or
    IVF back to flat only well below the limit (hysteresis)."""
    want = choose_spec(n, dim, max_memory, kind)
    if have == want or ((have.kind, have.pq_m) == (want.kind, want.pq_m) and want.nlist < 4 * have.nlist):
        return None
    back_to_flat = have.kind != "flat" and want.kind == "flat"
    if back_to_flat and choose_spec(2 * n, dim, max_memory, kind).kind != "flat":
        return None
    return want


def training_size(spec: IndexSpec) -> int:
    """Vectors to train ``spec`` on: enough per list for k-means, at least TRAIN_SAMPLE."""
    return max(TRAIN_SAMPLE, TRAIN_PER_LIST * spec.nlist)


def build_from(
    dim: int,
    spec: IndexSpec,
    ids: Sequence[int] | np.ndarray,
    load: Loader,
    nprobe: int | None = None,
) -> VectorIndex:
    """An index of ``spec`` holding ``ids``, whose vectors ``load(ids)`` yields in chunks:
    trained on a random sample (read chunk by chunk: one copy at the peak), then filled
    (:meth:`VectorIndex.fill`: IVF lists at their exact sizes)."""
    ids = np.asarray(ids, np.int64)
    if len(ids) > 1 and (ids[1:] < ids[:-1]).any():
        ids = np.sort(ids)
    training = None
    if spec.kind != "flat":
        size = training_size(spec)
        sample = ids if len(ids) <= size else np.random.default_rng(0).choice(ids, size, replace=False)
        training = np.empty((len(sample), dim), np.float32)
        filled = 0
        for _, vecs in load(np.sort(sample)):
            training[filled : filled + len(vecs)] = vecs
            filled += len(vecs)
        del sample
        training = training[:filled]
    try:
        index = VectorIndex.build(dim, spec, training)
    except (ValueError, RuntimeError) as exc:
        raise IndexSettingsError(
            f"cannot build index type {spec.kind} over {len(ids)} vectors: {exc}"
        ) from exc
    del training
    index.nprobe = nprobe
    index.fill(ids, load)
    return index
