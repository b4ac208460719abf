"""Storage: the SQL catalogue and the FAISS vector index of an index folder, kept in step.

- :mod:`.catalogue`: every SQL statement (rows, vectors, labels, ignore pairs, meta).
- :mod:`.schema` / :mod:`.migrations`: the tables, and versioned upgrades of them.
- :mod:`.manifest`: what an index is (model, descriptor, settings), typed.
- :mod:`.location` / :mod:`.locks`: where the catalogue lives; one writer at a time.
- :mod:`.vectors`: the FAISS index, its checkpoints and the index-type policy.
- :mod:`.lookup`: nearest vectors with exact scores; :mod:`.verify`: checks and repair.
- :mod:`.store`: an opened folder, FAISS following the catalogue's generation.
"""

from lookalike.errors import StoreError
from lookalike.storage.catalogue import FileRow, Known
from lookalike.storage.location import default_index_dir
from lookalike.storage.manifest import Manifest
from lookalike.storage.store import Store
from lookalike.storage.vectors import VectorIndex
from lookalike.storage.verify import VerifyReport

__all__ = [
    "FileRow",
    "Known",
    "Manifest",
    "Store",
    "StoreError",
    "VectorIndex",
    "VerifyReport",
    "default_index_dir",
]
