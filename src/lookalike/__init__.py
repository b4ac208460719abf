"""lookalike: image similarity search over photo collections (MobileNet + FAISS + SQLite)."""

from lookalike.api import Index, QueryResult
from lookalike.indexer import IndexOptions, IndexReport
from lookalike.models import DEFAULT_MODEL, ModelError, load_model
from lookalike.storage import StoreError

__version__ = "0.1.0"
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
