"""Search: nearest neighbours of images."""

from lookalike.search.neighbours import Hit, search_vectors

__all__ = ["Hit", "search_vectors"]
