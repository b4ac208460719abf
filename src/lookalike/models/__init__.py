"""Models: the catalogue, finding and downloading modules, and the runtimes that run them."""

from __future__ import annotations

from lookalike.models.catalog import CATALOG, DEFAULT_MODEL, CatalogEntry, lookup
from lookalike.models.runtimes import (
    SIGNED_RANGE,
    UNIT_RANGE,
    Embedder,
    Embedding,
    ModelInfo,
    TensorFlowEmbedder,
    TFLiteEmbedder,
)
from lookalike.models.sources import ModelError, ModelSource, load_labels, resolve_model

__all__ = [
    "CATALOG",
    "DEFAULT_MODEL",
    "SIGNED_RANGE",
    "UNIT_RANGE",
    "CatalogEntry",
    "Embedder",
    "Embedding",
    "ModelError",
    "ModelInfo",
    "ModelSource",
    "TFLiteEmbedder",
    "TensorFlowEmbedder",
    "load_labels",
    "load_model",
    "lookup",
    "resolve_model",
]


def load_model(
    value: str = DEFAULT_MODEL,
    *,
    input_size: int | None = None,
    input_range: tuple[float, float] | None = None,
) -> Embedder:
    """Resolve ``value`` (catalogue name, URL, folder, archive or .tflite) and load it.

    ``input_size`` applies to models whose graph accepts any size; ``input_range``
    to float ``.tflite`` files (TF Hub modules always take [0, 1]).
    """
    src = resolve_model(value)
    if src.is_tflite:
        return TFLiteEmbedder(src, input_range=input_range or SIGNED_RANGE, input_size=input_size)
    return TensorFlowEmbedder(src, input_size=input_size)
