"""Top-k class labels from a classifier's scores."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from lookalike.errors import IncompatibleIndex, InvalidArgument
from lookalike.models.sources import ModelError, load_labels

if TYPE_CHECKING:
    from lookalike.models.runtimes import Embedder


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


def model_labels(embedder: Embedder, value: str | None) -> list[str]:
    """The class names ``value`` gives (a file, a URL; None: the ImageNet list), refused
    unless they name each class ``embedder`` scores: before anything is indexed with them."""
    names = load_labels(value)
    height, width = embedder.info.input_size
    scores = embedder.embed(np.zeros((1, height, width, 3), np.uint8)).scores
    classes = 0 if scores is None else scores.shape[1]
    if classes != len(names):
        raise ModelError(
            f"labels {value or 'of ImageNet'} name {len(names)} classes, but the model gives {classes}"
        )
    return names


def index_labels(embedder: Embedder, given: str | None, recorded: str | None, existing: bool) -> list[str]:
    """The class names to index with: ``given`` (a ``--labels`` value), else the list the
    index recorded (``recorded``; None: ImageNet's). On an ``existing`` index, a list that
    names the classes otherwise is refused: its files would be labelled from two lists. One
    the index can no longer read (moved, deleted) is replaced by ``given``."""
    names = model_labels(embedder, given or recorded)
    if not (existing and given and given != recorded):
        return names
    try:
        before = load_labels(recorded)
    except ModelError:
        return names
    if before != names:
        i = next((i for i, (a, b) in enumerate(zip(before, names, strict=False)) if a != b), None)
        what = f"class {i} {names[i]!r}, not {before[i]!r}" if i is not None else f"{len(names)} classes"
        raise IncompatibleIndex(
            f"this index was labelled with {recorded or 'the ImageNet list'}; {given} names {what}: "
            "its files would be labelled from two lists. Use another --index, or no --labels"
        )
    return names
