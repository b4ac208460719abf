"""Nearest neighbours of query vectors, resolved to catalogue rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime

import numpy as np

from lookalike.search.calibration import Calibration
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
    probability: float | None = None  # P(same photo), when the index is calibrated

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Filters:
    """Restrictions applied inside FAISS (an id selector), not by dropping results after."""

    label: str | None = None
    under: Sequence[str] = ()
    since: datetime | None = None  # capture time (EXIF), else file mtime
    until: datetime | None = None

    def allowed(self, store: Store) -> np.ndarray | None:
        """The ids that pass, or None when nothing is filtered."""
        ids = None
        if self.under or self.since or self.until:
            ids = store.catalogue.ids_matching(self.under, self.since, self.until)
        if self.label:
            labelled = store.catalogue.ids_with_label(self.label)
            ids = labelled if ids is None else np.intersect1d(ids, labelled)
        return ids


def search_vectors(
    store: Store, vectors: np.ndarray, k: int = 10, label: str | None = None, filters: Filters | None = None
) -> list[list[Hit]]:
    """Top ``k`` hits per query vector, best first, among files passing the filters."""
    if len(vectors) == 0:
        return []
    filters = filters or Filters()
    if label:
        filters.label = label
    allowed = filters.allowed(store)
    if allowed is not None and len(allowed) == 0:
        return [[] for _ in vectors]
    if store.vectors.ntotal == 0:
        return [[] for _ in vectors]
    scores, ids = store.search(vectors, k, allowed)
    cal = Calibration.from_dict(store.manifest.calibration)
    rows = store.catalogue.rows({int(i) for i in ids.ravel() if i >= 0})
    out = []
    for q_scores, q_ids in zip(scores, ids, strict=True):
        hits = []
        for s, i in zip(q_scores, q_ids, strict=True):
            row = rows.get(int(i))
            if i < 0 or row is None:  # -1 pads short results; a row may vanish meanwhile
                continue
            score = float(min(1.0, max(-1.0, s)))
            p = None if cal is None else cal.probability(score)
            hits.append(Hit(row.id, row.path, score, row.width, row.height, row.labels, p))
        out.append(hits)
    return out
