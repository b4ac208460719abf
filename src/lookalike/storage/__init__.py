"""Storage: the SQLAlchemy catalogue and the FAISS vector index, kept consistent."""

from lookalike.storage.store import (
    FileRow,
    Known,
    Store,
    StoreError,
    VerifyReport,
    default_index_dir,
    is_under,
)
from lookalike.storage.vectors import VectorIndex

__all__ = [
    "FileRow",
    "Known",
    "Store",
    "StoreError",
    "VectorIndex",
    "VerifyReport",
    "default_index_dir",
    "is_under",
]
