"""The indexing pipeline: walk -> decode -> embed -> store."""

from lookalike.indexer.decode import decode_files
from lookalike.indexer.pipeline import IndexOptions, IndexReport, index_paths
from lookalike.indexer.walk import Entry, walk

__all__ = ["Entry", "IndexOptions", "IndexReport", "decode_files", "index_paths", "walk"]
