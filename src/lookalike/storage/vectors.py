"""The FAISS side of an index: an id-mapped inner-product index, checkpointed atomically.

Checkpoints are files named ``vectors-<generation>.faiss``: written to a temporary
name, fsynced, then renamed, so a crash leaves either the old or the new file and
never half of one. The generation says which catalogue state the file reflects.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import faiss
import numpy as np

_NAME = re.compile(r"^vectors-(\d+)\.faiss$")


class VectorIndex:
    """FAISS ``IndexIDMap2`` over exact inner product (= cosine on unit vectors)."""

    def __init__(self, dim: int, index: faiss.Index | None = None, generation: int = 0) -> None:
        self.dim = dim
        self.index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self.generation = generation

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def kind(self) -> str:
        inner = faiss.downcast_index(self.index.index)
        return type(inner).__name__.removeprefix("Index")

    def ids(self) -> np.ndarray:
        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def flat_view(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(ids, vectors) as a zero-copy view of a Flat index's storage, else None.

        Valid until the index changes; lets a million vectors be scanned without a copy.
        """
        inner = faiss.downcast_index(self.index.index)
        if not isinstance(inner, faiss.IndexFlat) or self.ntotal == 0:
            return None
        view = faiss.rev_swig_ptr(inner.get_xb(), self.ntotal * self.dim).reshape(self.ntotal, self.dim)
        return self.ids(), view

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self.index.add_with_ids(np.ascontiguousarray(vectors, np.float32), np.asarray(ids, np.int64))

    def remove(self, ids) -> int:
        ids = np.asarray(list(ids), dtype=np.int64)
        return int(self.index.remove_ids(faiss.IDSelectorBatch(ids))) if len(ids) else 0

    def reconstruct(self, id_: int) -> np.ndarray:
        return self.index.reconstruct(int(id_))

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) per query; ``allowed`` restricts to those ids inside FAISS."""
        queries = np.ascontiguousarray(queries, np.float32)
        k = max(1, min(k, self.ntotal)) if self.ntotal else 1
        if allowed is None:
            return self.index.search(queries, k)
        params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(np.asarray(allowed, np.int64)))
        return self.index.search(queries, k, params=params)

    # --- persistence -------------------------------------------------------------------

    @staticmethod
    def checkpoints(directory: Path) -> list[tuple[int, Path]]:
        found = []
        for p in directory.iterdir():
            m = _NAME.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
        return sorted(found)

    @classmethod
    def load(cls, directory: Path, dim: int) -> VectorIndex:
        """The newest checkpoint in ``directory``, or an empty index (generation 0)."""
        for attempt in range(5):
            found = cls.checkpoints(directory)
            if not found:
                return cls(dim)
            generation, path = found[-1]
            try:
                index = faiss.read_index(str(path))
                break
            except RuntimeError:  # a writer replaced it between listing and reading
                if path.exists() or attempt == 4:
                    raise
        if index.d != dim:
            raise ValueError(f"{path}: vectors have {index.d} dimensions, manifest says {dim}")
        return cls(dim, index, generation)

    def save(self, directory: Path, generation: int) -> Path:
        """Write a checkpoint for ``generation`` atomically and drop older ones."""
        final = directory / f"vectors-{generation}.faiss"
        tmp = directory / f".vectors-{generation}.faiss.tmp"
        faiss.write_index(self.index, str(tmp))
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        fsync_dir(directory)
        self.generation = generation
        for gen, path in self.checkpoints(directory):
            if gen != generation:
                path.unlink(missing_ok=True)
        return final


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
