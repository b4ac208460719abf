"""Checking that the catalogue, its stored vectors and the FAISS checkpoint agree, and
repairing what does not (rows dropped are indexed again by the next run)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from lookalike.storage.vectors import VectorIndex

if TYPE_CHECKING:
    from lookalike.storage.store import Store


@dataclass
class VerifyReport:
    generation: int
    checkpoint_generation: int
    rows_without_vector: list[int]
    vectors_without_row: list[int]
    missing_from_faiss: list[int]
    extra_in_faiss: list[int]
    mismatched_vectors: list[int]
    damaged_vectors: list[int]  # stored vectors of the wrong length: not to be read
    checkpoint_unreadable: str | None = None  # the FAISS file's damage (rebuilt on every open meanwhile)
    checkpoint_absent: bool = False  # no FAISS file (rebuilt on every open meanwhile)

    @property
    def behind(self) -> bool:
        """The FAISS checkpoint is of an older generation (a crash between a commit and the
        next checkpoint): what it lacks or has extra is what changed since, and every open
        brings it up to date from the catalogue. Not a problem."""
        return self.checkpoint_generation < self.generation

    @property
    def unusable(self) -> set[int]:
        """Ids of the rows a repair drops (their files are indexed again by the next run)."""
        return {*self.rows_without_vector, *self.vectors_without_row, *self.mismatched_vectors,
                *self.damaged_vectors}  # fmt: skip

    @property
    def ok(self) -> bool:
        """Catalogue and vectors agree (a checkpoint that is only behind is fine)."""
        broken = (
            self.rows_without_vector,
            self.vectors_without_row,
            self.mismatched_vectors,
            self.damaged_vectors,
            self.checkpoint_unreadable,
        )
        if any(broken):
            return False
        return self.behind or not (self.missing_from_faiss or self.extra_in_faiss)


def verify(store: Store, sample: int = 1000) -> VerifyReport:
    """Compare catalogue rows, stored vectors and the FAISS checkpoint on disk (up to
    ``sample`` vectors compared value by value)."""
    checkpoint = store.load_checkpoint()
    ok_rows, with_vid, stored, damaged = store.catalogue.consistency()
    in_faiss = set(checkpoint.ids().tolist())
    mismatched = sorted(i for i, v in with_vid.items() if v != i or i not in stored)
    probe = sorted((stored - damaged) & in_faiss)
    if len(probe) > sample:
        probe = sorted(np.random.default_rng(0).choice(probe, sample, replace=False).tolist())
    ids, vecs = store.catalogue.load_vectors(probe)
    expected = checkpoint.stored_form(vecs)  # quantised indexes keep an approximation
    bad = [
        int(i)
        for i, v in zip(ids, expected, strict=True)
        if not np.allclose(checkpoint.reconstruct(i), v, atol=1e-5)
    ]
    return VerifyReport(
        generation=store.catalogue.generation(),
        checkpoint_generation=checkpoint.generation,
        rows_without_vector=sorted(ok_rows - stored),
        vectors_without_row=sorted(stored - ok_rows),
        missing_from_faiss=sorted(stored - in_faiss),
        extra_in_faiss=sorted(in_faiss - stored),
        mismatched_vectors=sorted(set(bad) | set(mismatched)),
        damaged_vectors=sorted(damaged),
        checkpoint_unreadable=checkpoint.unreadable,
        checkpoint_absent=checkpoint.absent,
    )


def repair(store: Store) -> VerifyReport:
    """Fix what :func:`verify` finds: bad rows are dropped, FAISS brought in step (rebuilt
    from the catalogue when its vectors disagree) and its checkpoint written. Returns what
    was found."""
    store.require_writable()
    report = verify(store)
    if drop := report.unusable:
        store.apply(store.catalogue.drop_ids(drop))
    if report.mismatched_vectors:  # rebuild from the catalogue rather than trust FAISS
        store.vectors = VectorIndex(store.dim)
    store.sync_vectors(force=True)
    return report
