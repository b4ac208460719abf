"""Run a loaded model on batches of images: TensorFlow and LiteRT runtimes.

Every runtime takes uint8 RGB batches already resized to the model's input size
and returns L2-normalised float32 vectors (plus class scores for classifiers).
"""

from __future__ import annotations

import os
import threading
import warnings
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lookalike.models.native import import_tensorflow, native_stderr_silenced
from lookalike.models.sources import ModelError, ModelSource, fingerprint

DEFAULT_INPUT_SIZE = 224
UNIT_RANGE = (0.0, 1.0)  # the TF Hub image convention
SIGNED_RANGE = (-1.0, 1.0)  # what float .tflite exports of MobileNet expect


@dataclass(frozen=True)
class ModelInfo:
    """What an index must record to embed queries exactly like its images."""

    source: str
    identity: str
    input_size: tuple[int, int]  # (height, width)
    dim: int
    input_range: tuple[float, float]
    has_labels: bool
    runtime: str = field(compare=False)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["input_range"] = list(self.input_range)
        return d


@dataclass
class Embedding:
    vectors: np.ndarray  # float32 [n, dim], unit length
    scores: np.ndarray | None = None  # float32 [n, classes]: logits or probabilities


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class Embedder(ABC):
    """A model ready to embed uint8 image batches of shape [n, h, w, 3]."""

    info: ModelInfo

    def embed(self, images: np.ndarray) -> Embedding:
        """Vectors for a uint8 batch. Safe to call from several threads (one runs at a time:
        LiteRT interpreters are not thread-safe)."""
        if images.ndim != 4 or images.shape[1:] != (*self.info.input_size, 3):
            raise ValueError(f"expected [n, {self.info.input_size}, 3] images, got {images.shape}")
        if len(images) == 0:
            return Embedding(np.zeros((0, self.info.dim), np.float32))
        with self.__dict__.setdefault("_embed_lock", threading.Lock()):  # setdefault is atomic
            feats, scores = self._run(images)
        return Embedding(l2_normalize(feats), None if scores is None else np.asarray(scores))

    @abstractmethod
    def _run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw features and class scores (or None) for a uint8 batch."""


def scale_pixels(images: np.ndarray, input_range: tuple[float, float]) -> np.ndarray:
    """uint8 pixels to float32 spanning ``input_range``."""
    lo, hi = input_range
    return images.astype(np.float32) * np.float32((hi - lo) / 255.0) + np.float32(lo)


class TensorFlowEmbedder(Embedder):
    """A TF2 SavedModel or a TF1 hub module, loaded with ``hub.load``."""

    def __init__(self, src: ModelSource, input_size: int | None = None) -> None:
        self.path = src.path  # the SavedModel or hub module folder
        tf = import_tensorflow()
        import tensorflow_hub as hub

        self._tf = tf
        try:
            obj = hub.load(str(src.path))
        except Exception as exc:
            raise ModelError(f"{src.path}: TensorFlow could not load it ({exc})") from exc
        self.trackable = obj  # keeps the variables alive; the TFLite converter needs them
        self._labels_fn = False
        if (src.path / "tfhub_module.pb").exists():
            fn, shape, self._labels_fn = _tf1_function(obj, src.path)
        else:
            fn, shape = _tf2_function(obj)
        self._fn = fn
        size = _input_size(shape, input_size or (src.entry.input_size if src.entry else None))
        feats, scores = self._call(np.zeros((1, *size, 3), np.float32))
        self.info = ModelInfo(
            source=src.source,
            identity=fingerprint(src.path),
            input_size=size,
            dim=int(np.prod(feats.shape[1:])),
            input_range=UNIT_RANGE,
            has_labels=scores is not None,
            runtime="tf",
        )

    def _call(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        out = self._fn(self._tf.constant(x))
        if self._labels_fn:
            return out[0].numpy(), out[1].numpy()
        return out.numpy(), None

    def _run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        return self._call(scale_pixels(images, self.info.input_range))

    def concrete_function(self):
        """The graph as one concrete function (image batch -> features[, scores])."""
        return self._fn


def _input_size(shape, fallback: int | None) -> tuple[int, int]:
    dims = list(shape)[1:3] if shape is not None and len(shape) == 4 else [None, None]
    if dims[0] and dims[1]:
        return int(dims[0]), int(dims[1])
    size = fallback or DEFAULT_INPUT_SIZE
    return size, size


def _tf1_function(obj, path: Path):
    """One pruned function giving features (and logits) from a TF1 hub module's graph."""
    from tensorflow.core.protobuf import saved_model_pb2

    model = saved_model_pb2.SavedModel()
    model.ParseFromString((path / "saved_model.pb").read_bytes())
    graphs = [g for g in model.meta_graphs if not g.meta_info_def.tags] or list(model.meta_graphs)
    sigs = graphs[0].signature_def
    name = next((n for n in ("image_feature_vector", "default") if n in sigs), None)
    if name is None:
        raise ModelError(f"{path}: no image_feature_vector or default signature")
    sig = sigs[name]
    (input_info,) = sig.inputs.values()
    feature = (sig.outputs.get("default") or next(iter(sig.outputs.values()))).name
    fetches = [feature]
    cls = sigs.get("image_classification")
    if name == "image_feature_vector" and cls is not None:
        fetches.append((cls.outputs.get("default") or next(iter(cls.outputs.values()))).name)
    fn = obj.prune(feeds=[input_info.name], fetches=fetches if len(fetches) > 1 else feature)
    shape = [d.size if d.size > 0 else None for d in input_info.tensor_shape.dim]
    return fn, shape, len(fetches) > 1


def _tf2_function(obj):
    """A callable giving one feature tensor from a TF2 SavedModel."""
    import tensorflow as tf

    if callable(obj):
        call = obj.__call__
        specs = [cf.structured_input_signature[0] for cf in getattr(call, "concrete_functions", [])]
        shape = next((s[0].shape for s in specs if s and hasattr(s[0], "shape")), None)
        takes_training = any(
            "training" in cf.structured_input_signature[1] or len(cf.structured_input_signature[0]) > 1
            for cf in getattr(call, "concrete_functions", [])
        )

        def run(x):
            out = obj(x, training=False) if takes_training else obj(x)
            return _single_output(out)

        return run, shape
    sig = obj.signatures.get("serving_default") if hasattr(obj, "signatures") else None
    if sig is None:
        raise ModelError("SavedModel is not callable and has no serving_default signature")
    ((key, spec),) = sig.structured_input_signature[1].items()

    def run_sig(x):
        return _single_output(sig(**{key: tf.convert_to_tensor(x)}))

    return run_sig, spec.shape


def _single_output(out):
    if isinstance(out, dict):
        for key in ("default", "feature_vector", "output_0"):
            if key in out:
                return out[key]
        (out,) = out.values()
    return out


class TFLiteEmbedder(Embedder):
    """A ``.tflite`` model run by LiteRT (XNNPACK for float models).

    uint8 models take raw pixels and have their outputs dequantized with each tensor's
    scale and zero point. For 1001-way classifiers the pre-logits average-pool tensor is
    the feature vector and the output gives the labels. ``features_first`` is for
    lookalike's own conversions, whose outputs are the features (and the logits).
    """

    def __init__(
        self,
        src: ModelSource,
        input_range: tuple[float, float] = SIGNED_RANGE,
        identity: str | None = None,
        batch_size: int = 32,
        input_size: int | None = None,
        features_first: bool = False,
        num_threads: int | None = None,
    ) -> None:
        from ai_edge_litert.interpreter import Interpreter

        path = str(src.path)
        self._path = path
        self._twins: dict = {}  # batch size -> interpreter, for calls smaller than a batch
        self._threads = num_threads or os.cpu_count() or 1
        # What loads the same model elsewhere (a Ray worker): TFLiteEmbedder(src, **load_args).
        self.load_args = dict(
            input_range=tuple(input_range),
            identity=identity,
            batch_size=batch_size,
            input_size=input_size,
            features_first=features_first,
        )
        try:
            probe = Interpreter(model_path=path)
        except Exception as exc:
            raise ModelError(f"{path}: LiteRT could not load it ({exc})") from exc
        inp = probe.get_input_details()[0]
        self._features, self._scores = _feature_and_score_tensors(probe, features_first, path)
        self._preserve = self._features["index"] not in {o["index"] for o in probe.get_output_details()}
        self._input = inp
        self._quantized_input = inp["dtype"] == np.uint8
        self._range = (0.0, 255.0) if self._quantized_input else tuple(input_range)
        signature = inp.get("shape_signature", inp["shape"])
        h, w = int(signature[1]), int(signature[2])
        if h <= 0 or w <= 0:  # dynamic spatial size: the caller's choice, else 224
            h = w = input_size or DEFAULT_INPUT_SIZE
        # Float models batch well; XNNPACK cannot reshape quantized graphs, and
        # preserving all tensors (for the pre-logits features) is done per image.
        want = batch_size if not self._preserve and not self._quantized_input else 1
        self._batch = 0
        for batch in dict.fromkeys((want, 1)):
            self._it = self._make_interpreter(path)
            try:
                if tuple(self._it.get_input_details()[0]["shape"]) != (batch, h, w, 3):
                    self._it.resize_tensor_input(inp["index"], [batch, h, w, 3])
                with native_stderr_silenced():  # LiteRT announces its XNNPACK delegate here
                    self._it.allocate_tensors()
                self._batch = batch
                break
            except (RuntimeError, ValueError):
                continue
        if not self._batch:
            raise ModelError(f"{path}: cannot run at input size {h}x{w}")
        feats, scores = self._run(np.zeros((1, h, w, 3), np.uint8))
        self.info = ModelInfo(
            source=src.source,
            identity=identity or fingerprint(src.path),
            input_size=(h, w),
            dim=int(np.prod(feats.shape[1:])),
            input_range=self._range,
            has_labels=scores is not None,
            runtime="tflite",
        )

    def _make_interpreter(self, path: str):
        from ai_edge_litert.interpreter import Interpreter

        with warnings.catch_warnings(), native_stderr_silenced():  # "Created XNNPACK delegate"
            warnings.simplefilter("ignore")  # preserve_all_tensors warns that it is for debugging
            return Interpreter(
                model_path=path, num_threads=self._threads, experimental_preserve_all_tensors=self._preserve
            )

    def _run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        x = images.astype(np.uint8) if self._quantized_input else scale_pixels(images, self._range)
        # A call of a few images (a query; calibration's 8 edits of a photo) must not pay for
        # a padded full batch: it runs on a twin sized to the next power of two.
        batch = min(self._batch, 1 << max(len(x) - 1, 0).bit_length())
        it = self._it if batch == self._batch else self._sized(batch)
        feats, scores = [], []
        for start in range(0, len(x), batch):
            chunk = x[start : start + batch]
            n = len(chunk)
            if n < batch:  # pad the last batch instead of reallocating the graph
                chunk = np.concatenate([chunk, np.zeros((batch - n, *chunk.shape[1:]), x.dtype)])
            it.set_tensor(self._input["index"], chunk)
            it.invoke()
            feats.append(self._read(it, self._features, n))
            if self._scores is not None:
                scores.append(self._read(it, self._scores, n))
        return np.concatenate(feats), (np.concatenate(scores) if scores else None)

    def _sized(self, batch: int):
        """An interpreter of the same model at ``batch`` images (made on first use)."""
        if batch not in self._twins:
            it = self._make_interpreter(self._path)
            shape = list(self._it.get_input_details()[0]["shape"])
            it.resize_tensor_input(self._input["index"], [batch, *shape[1:]])
            with native_stderr_silenced():
                it.allocate_tensors()
            self._twins[batch] = it
        return self._twins[batch]

    @staticmethod
    def _read(it, details: dict, n: int) -> np.ndarray:
        return _dequantize(it.get_tensor(details["index"]), details)[:n].reshape(n, -1)


def _feature_and_score_tensors(probe, features_first: bool, path: str) -> tuple[dict, dict | None]:
    """Which tensor holds the vector and which (if any) the class scores."""
    outs = probe.get_output_details()
    if features_first:
        if len(outs) == 1:
            return outs[0], None
        by_width = sorted(outs, key=lambda o: int(o["shape"][-1]))
        return by_width[0], by_width[-1]  # the 1001-way logits are the wider output
    out = outs[0]
    if int(out["shape"][-1]) not in (1000, 1001):
        return out, None
    pools = [
        t
        for t in probe.get_tensor_details()
        if "AvgPool" in t["name"] and len(t["shape"]) == 4 and t["index"] != out["index"]
    ]
    if not pools:
        raise ModelError(f"{path}: a classifier without a pre-logits AvgPool tensor")
    return pools[-1], out


def _dequantize(values: np.ndarray, details: dict) -> np.ndarray:
    scale, zero = details["quantization"]
    if values.dtype in (np.uint8, np.int8, np.int16) and scale:
        return (values.astype(np.float32) - zero) * np.float32(scale)
    return values.astype(np.float32)
