"""Search: nearest neighbours of images."""

from lookalike.search.neighbours import Filters, Hit, QueryResult, search_vectors

__all__ = ["Filters", "Hit", "QueryResult", "search_vectors"]
