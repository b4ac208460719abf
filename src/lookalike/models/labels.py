"""Top-k class labels from a classifier's scores."""

from __future__ import annotations

import numpy as np

from lookalike.errors import InvalidArgument


def probabilities(scores: np.ndarray) -> np.ndarray:
    """Scores as probabilities: softmax of logits; rows that already sum to 1 are kept."""
    scores = np.asarray(scores, np.float64)
    sums = scores.sum(axis=1, keepdims=True)
    if np.all(scores >= 0) and np.allclose(sums, 1.0, atol=0.02):
        return scores / sums
    z = np.exp(scores - scores.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def top_k(scores: np.ndarray, names: list[str], k: int = 5) -> list[list[tuple[int, str, float]]]:
    """Per row, the ``k`` best (class index, name, probability), best first."""
    if scores.shape[1] != len(names):
        raise InvalidArgument(f"model gives {scores.shape[1]} classes but the label list has {len(names)}")
    probs = probabilities(scores)
    best = np.argsort(-probs, axis=1)[:, :k]
    return [[(int(c), names[c], float(p[c])) for c in row] for p, row in zip(probs, best, strict=True)]
