"""Search: nearest neighbours of images."""

from lookalike.search.neighbours import Filters, Hit, search_vectors

__all__ = ["Filters", "Hit", "search_vectors"]
