"""Nearest neighbours of query vectors, resolved to catalogue rows."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from lookalike.storage.store import Store


@dataclass
class Hit:
    """One neighbour: the indexed file and its cosine similarity to the query."""

    id: int
    path: str
    score: float
    width: int | None = None
    height: int | None = None
    labels: list[tuple[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def search_vectors(
    store: Store, vectors: np.ndarray, k: int = 10, label: str | None = None
) -> list[list[Hit]]:
    """Top ``k`` hits per query vector, best first; ``label`` keeps files with that label."""
    if len(vectors) == 0:
        return []
    allowed = None
    if label:
        allowed = store.ids_with_label(label)
        if len(allowed) == 0:
            return [[] for _ in vectors]
    if store.vectors.ntotal == 0:
        return [[] for _ in vectors]
    scores, ids = store.vectors.search(vectors, k, allowed)
    rows = store.rows({int(i) for i in ids.ravel() if i >= 0})
    out = []
    for q_scores, q_ids in zip(scores, ids, strict=True):
        hits = []
        for s, i in zip(q_scores, q_ids, strict=True):
            row = rows.get(int(i))
            if i < 0 or row is None:  # -1 pads short results; a row may vanish meanwhile
                continue
            score = float(min(1.0, max(-1.0, s)))
            hits.append(Hit(row.id, row.path, score, row.width, row.height, row.labels))
        out.append(hits)
    return out
