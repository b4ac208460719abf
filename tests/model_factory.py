"""Build tiny but real models for tests: a TF2 SavedModel, a TF1 hub module, a .tflite.

The "network" pools the image to a 4x4 colour grid (centred on grey) and projects it
with fixed random weights, so unlike random noise it gives similar vectors for
similar pictures, which is what retrieval tests need.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import numpy as np

from lookalike.models.native import import_tensorflow

TF1_SIZE = 64
TF1_DIM = 16
TF2_DIM = 32
CLASSES = 1001


def _weights(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.RandomState(seed).randn(*shape).astype(np.float32)


def _pool(tf, images, method: str = "bilinear"):
    """[n, h, w, 3] -> [n, 48]: a 4x4 grid of mean colours around grey.

    The default uses ops TFLite has; ``area`` resizing has no TFLite kernel.
    """
    if method == "area":
        return tf.reshape(tf.image.resize(images - 0.5, (4, 4), method="area"), [-1, 48])
    small = tf.image.resize(images - 0.5, (16, 16), method="bilinear")
    return tf.reshape(tf.nn.avg_pool2d(small, 4, 4, "VALID"), [-1, 48])


def make_tf2_saved_model(path: Path, dim: int = TF2_DIM, pool: str = "bilinear") -> Path:
    """A TF2 SavedModel taking float images [n, h, w, 3] of any size, giving [n, dim]."""
    tf = import_tensorflow()

    class Tiny(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(_weights(0, (48, dim)))

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
        def __call__(self, images):
            return tf.matmul(_pool(tf, images, pool), self.w)

    tf.saved_model.save(Tiny(), str(path))
    return path


def make_tf1_hub_module(path: Path, classification: bool = True) -> Path:
    """A TF1 hub.Module-format folder with the seeds' signatures and tfhub_module.pb."""
    tf = import_tensorflow()
    g = tf.Graph()
    with g.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, TF1_SIZE, TF1_SIZE, 3], name="images")
        w = tf.compat.v1.get_variable("w", initializer=_weights(1, (48, TF1_DIM)))
        feats = tf.matmul(_pool(tf, images), w, name="features")
        info = tf.compat.v1.saved_model.utils.build_tensor_info

        def sig(output):
            return tf.compat.v1.saved_model.signature_def_utils.build_signature_def(
                inputs={"images": info(images)}, outputs={"default": info(output)}
            )

        sigs = {"image_feature_vector": sig(feats), "default": sig(feats)}
        if classification:
            w2 = tf.compat.v1.get_variable("w2", initializer=_weights(2, (TF1_DIM, CLASSES)))
            logits = tf.matmul(feats, w2, name="logits")
            sigs["image_classification"] = sig(logits)
            sigs["default"] = sig(logits)
        with tf.compat.v1.Session(graph=g) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            builder = tf.compat.v1.saved_model.Builder(str(path))
            builder.add_meta_graph_and_variables(sess, [], signature_def_map=sigs, strip_default_attrs=True)
            builder.add_meta_graph(["train"], signature_def_map=sigs, strip_default_attrs=True)
            builder.save()
    # ModuleDef{format: FORMAT_V3}: the marker hub.load uses to recognise the TF1 format.
    (path / "tfhub_module.pb").write_bytes(b"\x08\x03")
    return path


def make_tflite(saved_model: Path, path: Path) -> Path:
    """A float .tflite of a TF2 SavedModel (input shape stays dynamic: [-1, -1, -1, 3])."""
    tf = import_tensorflow()
    path.write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(saved_model)).convert())
    return path


def make_tarball(folder: Path, path: Path) -> Path:
    """A .tar.gz of a model folder, files at the archive root as TF Hub serves them."""
    with tarfile.open(path, "w:gz") as tar:
        for name in sorted(os.listdir(folder)):
            tar.add(folder / name, arcname=name)
    return path


def write_labels(path: Path, n: int = CLASSES) -> Path:
    path.write_text("\n".join(["background"] + [f"class {i:04d}" for i in range(1, n)]) + "\n")
    return path
