"""The errors lookalike reports to people: one base class, one type per kind of trouble.

Every error here carries a one-line message meant for a person. Front ends map the
types, not the message texts: the CLI prints ``error: <message>`` and exits 1 (see
:mod:`lookalike.cli`), the server answers with :func:`http_status` of the type.
This module imports nothing, so decoder worker processes can use it.
"""

from __future__ import annotations


class LookalikeError(Exception):
    """Base of every error lookalike reports with a message for a person."""

    http_status = 500


class InvalidArgument(LookalikeError, ValueError):
    """A value given by the caller is not acceptable (an unknown descriptor, a bad URL...)."""

    http_status = 422


class StoreError(LookalikeError):
    """The index folder or its catalogue cannot serve this request."""

    http_status = 503


class IndexNotFound(StoreError):
    """There is no index where one was asked for."""

    http_status = 404


class IndexLocked(StoreError):
    """Another lookalike process is writing this index (or its catalogue)."""

    http_status = 503


class LockLost(StoreError):
    """This writer lost its catalogue lock (its connection was closed): nothing more written."""

    http_status = 503


class IncompatibleIndex(StoreError):
    """The index was built differently (model, descriptor, catalogue) from what is asked."""

    http_status = 409


class ReadOnlyIndex(StoreError):
    """A write was asked of an index opened for reading, or kept on read-only media."""

    http_status = 409

    @classmethod
    def on_media(cls, directory: object) -> ReadOnlyIndex:
        return cls(f"index folder {directory} is on read-only media: it can be searched, not changed")


class CatalogueUnavailable(StoreError):
    """The catalogue database cannot be reached or opened."""

    http_status = 503


class InvalidCatalogueURL(StoreError, InvalidArgument):
    """A catalogue URL that cannot name a catalogue (not a URL, in-memory SQLite...)."""

    http_status = 422


class IndexSettingsError(StoreError, ValueError):
    """The vector index settings cannot be applied to this collection."""

    http_status = 422


class NotIndexed(StoreError):
    """A file the request names is not in the index."""

    http_status = 404


class CalibrationError(LookalikeError, ValueError):
    """Score calibration cannot be fitted or used on this index."""

    http_status = 409


class GroupNotFound(LookalikeError):
    """A duplicate review was asked for a group number it does not have."""

    http_status = 404


class ReviewOutdated(LookalikeError):
    """A duplicate review acted on groups that have changed since they were shown."""

    http_status = 409


class ClusterError(LookalikeError):
    """A distributed run (``--ray``) cannot start or went wrong: Ray missing, unreachable..."""

    http_status = 503


class PathsNotVisible(ClusterError):
    """A node of the cluster cannot read the photos at the paths the driver found them."""

    http_status = 409


def http_status(exc: LookalikeError) -> int:
    """The HTTP status a service answers ``exc`` with."""
    return exc.http_status
