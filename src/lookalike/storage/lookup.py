"""Nearest vectors with exact scores, whatever the vector index type.

Approximate indexes propose ``max(RERANK_MIN, RERANK_FACTOR * k)`` candidates that are
re-scored from the catalogue's raw vectors; a filter leaving few ids is scored exactly
from the raw vectors without FAISS; under IVF, a selective filter visits more lists.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from lookalike.storage.store import Store

RERANK_FACTOR = 10  # an approximate index proposes k x this many candidates, re-scored exactly
RERANK_MIN = 100
EXACT_SUBSET = 10_000  # filters leaving fewer ids are scored exactly from the raw vectors


def search(
    store: Store, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (score, id) per query among ``allowed`` ids (None: all), padded with -1 ids.

    The score is the cosine, in the collection's learned space when it has one
    (:attr:`Store.metric`): FAISS holds the raw vectors and proposes candidates, which
    are then scored exactly from the catalogue's raw vectors, whitened."""
    queries = np.ascontiguousarray(queries, np.float32)
    index = store.vectors
    spec = index.spec
    metric = store.metric
    space = (lambda v: v) if metric is None else metric.apply  # where scores are cosines
    nprobe = None
    if spec.kind != "flat" and allowed is not None:
        if len(allowed) <= EXACT_SUBSET:
            ids, raw = store.catalogue.load_vectors(allowed)
            return top_k(space(queries) @ space(raw).T, ids, k)
        boost = max(1.0, index.ntotal / max(len(allowed), 1))  # more lists: as many allowed seen
        nprobe = min(spec.nlist, int((index.nprobe or index.default_nprobe()) * boost))
    if index.exact and metric is None:
        return index.search(queries, k, allowed, nprobe)
    _, cand = index.search(queries, max(RERANK_MIN, RERANK_FACTOR * k), allowed, nprobe)
    ids, raw = store.catalogue.load_vectors(np.unique(cand[cand >= 0]))
    where = {int(i): n for n, i in enumerate(ids)}
    raw, queries = space(raw), space(queries)
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


def top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
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
