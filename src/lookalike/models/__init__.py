"""Models: the ones known by name, finding and downloading modules, and the runtimes that run them."""

from __future__ import annotations

import logging

from lookalike.errors import InvalidArgument
from lookalike.models.known import DEFAULT_MODEL, KNOWN_MODELS, KnownModel, lookup
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
    "DEFAULT_MODEL",
    "KNOWN_MODELS",
    "RUNTIMES",
    "SIGNED_RANGE",
    "UNIT_RANGE",
    "Embedder",
    "Embedding",
    "KnownModel",
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


RUNTIMES = ("auto", "tf", "tflite")
log = logging.getLogger("lookalike")


INPUT_SIZES = (32, 1024)  # MobileNet's stride and the colour grid need 32; past 1024, memory runs out


def load_model(
    value: str = DEFAULT_MODEL,
    *,
    input_size: int | None = None,
    input_range: tuple[float, float] | None = None,
    runtime: str = "auto",
    batch_size: int = 32,
) -> Embedder:
    """Resolve ``value`` (catalogue name, URL, folder, archive or .tflite) and load it.

    ``input_size`` applies to models whose graph accepts any size; ``input_range``
    to float ``.tflite`` files (TF Hub modules always take [0, 1]): either one a model
    cannot take is refused, not ignored. ``runtime``: ``tf`` runs TensorFlow; ``tflite``
    the model converted to LiteRT (an error if the conversion does not give TensorFlow's
    vectors); ``auto`` LiteRT when faithful, else TF.
    """
    if runtime not in RUNTIMES:
        raise InvalidArgument(f"runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
    low, high = INPUT_SIZES
    if input_size is not None and not low <= input_size <= high:
        raise InvalidArgument(f"input size must be {low} to {high} pixels, not {input_size}")
    embedder = _load(resolve_model(value), input_size, input_range, runtime, batch_size)
    info = embedder.info
    if input_size is not None and info.input_size != (input_size, input_size):
        height, width = info.input_size
        raise InvalidArgument(f"{value} takes {height}x{width} images only, not {input_size}")
    if input_range is not None and tuple(info.input_range) != tuple(input_range):
        lo, hi = info.input_range
        raise InvalidArgument(
            f"{value} takes pixels in [{lo:g}, {hi:g}] only: an input range is for float .tflite files"
        )
    return embedder


def _load(
    src: ModelSource,
    input_size: int | None,
    input_range: tuple[float, float] | None,
    runtime: str,
    batch_size: int,
) -> Embedder:
    """``src`` loaded in the runtime asked for (see :func:`load_model`)."""
    if src.is_tflite:
        return TFLiteEmbedder(src, input_range=input_range or SIGNED_RANGE, input_size=input_size)
    wanted = input_size or (src.entry.input_size if src.entry else None)  # as TensorFlowEmbedder
    if runtime != "tf":
        from lookalike.models.convert import checked_twin

        twin = checked_twin(src, wanted, batch_size)
        if twin is not None:  # converted and checked before: no TensorFlow to import
            return twin
    tf_model = TensorFlowEmbedder(src, input_size=input_size)
    if runtime == "tf":
        return tf_model
    from lookalike.models.convert import fast_embedder

    try:
        return fast_embedder(tf_model, batch_size=batch_size, requested_size=wanted)
    except ModelError as exc:
        if runtime == "tflite":
            raise
        log.warning("using TensorFlow: %s", exc)
        return tf_model
