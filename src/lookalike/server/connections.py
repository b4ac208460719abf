"""The service's connections under uvicorn: a request's head must arrive in time.

uvicorn has no deadline for the start of a request: its keep-alive timer runs only after a
response and stops at the first byte of the next request, so a client that opens a
connection and sends a header line now and then (slowloris) holds it for ever, and enough
of them use up the process's file descriptors. :class:`HeadDeadline` closes a connection
whose request head (request line and headers) is not complete ``head_timeout_s`` after the
connection opened or the previous response ended. A request's body has its own deadline
in the app (:attr:`ServerConfig.body_timeout_s <lookalike.server.config.ServerConfig>`,
answered with 408); a slow answer is never cut. Past ``max_connections`` open at once, a
new connection is closed as soon as it opens: connections made faster than the deadline
ends them cannot use up the descriptors the index itself needs.
"""

from __future__ import annotations

import asyncio
import logging

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from lookalike.server.config import ServerConfig

log = logging.getLogger(__name__)


class HeadDeadline(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request head comes too slowly."""

    head_timeout_s: float = 10.0
    max_connections: int = 256
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            log.info("%s: closed, %d connections open already", self.client, self.max_connections)
            transport.close()
            return
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()  # the next request on this connection has as long as the first

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.head_timeout_s, self._head_late)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_late(self) -> None:
        self._deadline = None
        # IDLE: h11 has not seen a whole request head since the deadline was armed
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            log.info("%s: closed, no request head within %g s", self.client, self.head_timeout_s)
            self.transport.close()


def uvicorn_config(app: object, cfg: ServerConfig, **where: object) -> uvicorn.Config:
    """How ``lookalike serve`` runs ``app`` (built from ``cfg``) under uvicorn; ``where``:
    uvicorn's host and port, when it binds the socket itself."""
    limits = {"head_timeout_s": cfg.head_timeout_s, "max_connections": cfg.max_connections}
    protocol = type("HeadDeadline", (HeadDeadline,), limits)
    return uvicorn.Config(app, http=protocol, log_level="warning", **where)
