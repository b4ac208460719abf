"""Quieting native libraries: TensorFlow's and LiteRT's C++ start-up chatter.

A leaf module (imports nothing of lookalike), so that model sources and runtimes can
both use it without importing each other.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null: for native code (TF, the TFLite converter)
    that prints progress and notes no log level controls. Python exceptions still carry
    their messages."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow():
    """Import TensorFlow without its C++ start-up chatter (CUDA probes, oneDNN notes)."""
    if "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        with native_stderr_silenced():
            import tensorflow as tf
            import tensorflow_hub  # noqa: F401  (imports TF's Keras pieces: same chatter)

            tf.config.list_physical_devices()  # the CUDA probe logs an error on CPU-only machines
    import tensorflow as tf

    return tf
