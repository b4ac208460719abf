"""The LiteRT fast path: convert a TensorFlow model to float TFLite once, use it if it agrees.

The converted file is cached beside TF Hub's cache, keyed by the model's identity and
input size. Before use, its vectors are compared with TensorFlow's on sample inputs;
any cosine below ``MIN_COSINE`` rejects it. A twin that passed is recorded (its model
info, in a small JSON file beside it), so later loads of the same model at the same
requested size take it without importing TensorFlow (:func:`checked_twin`): about 4 s
of every command on an idle machine, 9 s under load.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

import numpy as np

from lookalike.fsutil import atomic_write_bytes
from lookalike.models.native import import_tensorflow, native_stderr_silenced
from lookalike.models.runtimes import (
    UNIT_RANGE,
    Embedder,
    ModelInfo,
    TensorFlowEmbedder,
    TFLiteEmbedder,
)
from lookalike.models.sources import ModelError, ModelSource, cache_dir, fingerprint

MIN_COSINE = 0.9999
CONVERTER_VERSION = 1  # bump when the conversion recipe changes


def tflite_path(tf_model: TensorFlowEmbedder) -> Path:
    h, w = tf_model.info.input_size
    key = hashlib.sha256(f"{tf_model.info.identity}:{h}x{w}:v{CONVERTER_VERSION}".encode()).hexdigest()
    return cache_dir() / "tflite" / f"{key[:32]}.tflite"


def convert(tf_model: TensorFlowEmbedder) -> Path:
    """The cached float .tflite for ``tf_model`` (converted now if missing)."""
    path = tflite_path(tf_model)
    if path.exists():
        return path
    tf = import_tensorflow()
    h, w = tf_model.info.input_size
    fn = tf_model.concrete_function()

    @tf.function(input_signature=[tf.TensorSpec([None, h, w, 3], tf.float32)])
    def serve(images):
        return fn(images)

    try:
        with native_stderr_silenced():  # MLIR passes print pages of notes
            converter = tf.lite.TFLiteConverter.from_concrete_functions(
                [serve.get_concrete_function()], tf_model.trackable
            )
            data = converter.convert()
    except Exception as exc:  # the converter raises many kinds for unsupported graphs
        reason = next((line for line in str(exc).splitlines() if "error" in line), str(exc)[:200])
        raise ModelError(f"cannot convert {tf_model.info.source} to TFLite: {reason.strip()}") from exc
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
    except OSError as exc:  # a full disk, a cache folder that cannot be written
        raise ModelError(f"cannot cache the TFLite conversion in {path.parent}: {exc}") from exc
    return path


def sample_images(size: tuple[int, int], n: int = 8, seed: int = 0) -> np.ndarray:
    """Check inputs: half noise, half smooth colour fields (closer to photos)."""
    rng = np.random.default_rng(seed)
    h, w = size
    noise = rng.integers(0, 256, (n // 2, h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    smooth = []
    for _ in range(n - n // 2):
        a, b, c = rng.uniform(-1, 1, (3, 3))
        field = 127.5 + 127.5 * np.sin(3 * (a * xx[..., None] + b * yy[..., None]) + c)
        smooth.append(field.astype(np.uint8))
    return np.concatenate([noise, np.stack(smooth)])


def agreement(a: Embedder, b: Embedder, images: np.ndarray) -> float:
    """Smallest cosine between the two runtimes' vectors for ``images``."""
    return float(np.min(np.sum(a.embed(images).vectors * b.embed(images).vectors, axis=1)))


def fast_embedder(
    tf_model: TensorFlowEmbedder, batch_size: int = 32, requested_size: int | None = None
) -> TFLiteEmbedder:
    """The checked LiteRT twin of ``tf_model``; raises ModelError if it is not faithful.
    A faithful one is recorded for :func:`checked_twin` (``requested_size``: the input size
    the model was asked for, None for its own)."""
    path = convert(tf_model)
    info = tf_model.info
    lite = TFLiteEmbedder(
        ModelSource(info.source, path),
        input_range=UNIT_RANGE,
        identity=info.identity,
        batch_size=batch_size,
        input_size=info.input_size[0],
        features_first=True,
    )
    if lite.info != info:
        raise ModelError(f"converted model differs: {lite.info} vs {info}")
    cos = agreement(tf_model, lite, sample_images(info.input_size))
    if cos < MIN_COSINE:
        path.unlink(missing_ok=True)
        raise ModelError(f"TFLite vectors differ from TensorFlow's (min cosine {cos:.6f} < {MIN_COSINE})")
    record = {"tflite": path.name, "info": _comparable(lite.info)}
    with contextlib.suppress(OSError):  # unrecorded, later runs check the twin again with TensorFlow
        atomic_write_bytes(_record_path(tf_model.path, requested_size), json.dumps(record).encode())
    return lite


def _record_path(model: Path, input_size: int | None) -> Path:
    """Where the check of the twin of the model at ``model`` (a TensorFlow model's folder),
    asked for at ``input_size``, is recorded."""
    key = f"{fingerprint(model)}:{input_size}:v{CONVERTER_VERSION}:{MIN_COSINE}"
    return cache_dir() / "tflite" / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.checked.json"


def _comparable(info: ModelInfo) -> dict:
    d = info.to_dict()
    del d["source"], d["runtime"]  # how the model was named, which runtime runs it
    return d


def checked_twin(src: ModelSource, input_size: int | None, batch_size: int = 32) -> TFLiteEmbedder | None:
    """The twin :func:`fast_embedder` recorded for ``src`` asked for at ``input_size``,
    loaded without TensorFlow; None when there is none (or it no longer loads as recorded)."""
    record_path = _record_path(src.path, input_size)
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        expected = record["info"]
        lite = TFLiteEmbedder(
            ModelSource(src.source, record_path.parent / record["tflite"]),
            input_range=UNIT_RANGE,
            identity=expected["identity"],
            batch_size=batch_size,
            input_size=expected["input_size"][0],
            features_first=True,
        )
    except (OSError, ValueError, KeyError, TypeError, ModelError):
        return None
    return lite if _comparable(lite.info) == expected else None
