"""lookalike: image similarity search over photo collections (MobileNet + FAISS + SQLite).

The names below load on first use, so that light modules (``lookalike.images``, used
by decoder worker processes) do not pull in FAISS, SQLAlchemy or TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "Index": "lookalike.api",
    "QueryResult": "lookalike.api",
    "IndexOptions": "lookalike.indexer",
    "IndexReport": "lookalike.indexer",
    "DEFAULT_MODEL": "lookalike.models",
    "ModelError": "lookalike.models",
    "load_model": "lookalike.models",
    "StoreError": "lookalike.storage",
}
__all__ = [
    "DEFAULT_MODEL",
    "Index",
    "IndexOptions",
    "IndexReport",
    "ModelError",
    "QueryResult",
    "StoreError",
    "__version__",
    "load_model",
]

if TYPE_CHECKING:
    from lookalike.api import Index, QueryResult
    from lookalike.indexer import IndexOptions, IndexReport
    from lookalike.models import DEFAULT_MODEL, ModelError, load_model
    from lookalike.storage import StoreError


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lookalike' has no attribute {name!r}")
