"""`lookalike serve`: reverse image search over HTTP (FastAPI), with a web page at `/`.

The model and the index are loaded once: one long-lived :class:`~lookalike.api.Index`,
whose read snapshot follows the catalogue's generation (see :meth:`Index.refresh`), so
searches never see a half-applied change. Searches go through :meth:`Index.search`, as
the CLI's do, and are serialised by the same function. Writes are serialised: one at a
time in this process, and through the index's file lock with other processes.

It obeys no stranger: :mod:`.guard` checks every request's Host, site and token and caps
its body; :mod:`.inputs` reads bodies, parameters and images strictly and bounds the
work in flight; URL searches fetch through :mod:`lookalike.fetch` (public addresses only
unless told otherwise, a total deadline); :mod:`.connections` closes a connection whose
request head does not come in time.
"""

from lookalike.server.app import Service, create_app, result_json
from lookalike.server.config import HostPolicy, ServerConfig, is_loopback
from lookalike.server.connections import uvicorn_config
from lookalike.server.inputs import MAX_K, search_params

__all__ = [
    "MAX_K",
    "HostPolicy",
    "ServerConfig",
    "Service",
    "create_app",
    "is_loopback",
    "result_json",
    "search_params",
    "uvicorn_config",
]
