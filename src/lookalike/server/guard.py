"""The checks in front of every request, before any endpoint runs (ASGI middleware).

In order: the Host header must name this service (DNS rebinding, 421); a request sent
by a page of another site is refused (Origin and Sec-Fetch-Site, 403); with a token, it
must come in the Authorization header (``?token=`` only on image URLs, which ``<img>``
tags cannot give a header; 401); the body is counted while it arrives and refused at its
cap (413, nothing read beyond it) or when it comes too slowly (408).
"""

from __future__ import annotations

import re
import secrets
import time
from urllib.parse import urlsplit

import anyio
from fastapi import HTTPException
from starlette.datastructures import Headers, QueryParams
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lookalike.server.config import HostPolicy, ServerConfig, split_host

PUBLIC_PATHS = frozenset({"/", "/dupes", "/healthz"})  # no data: open even with a token
PUBLIC_PREFIX = "/static/"  # the pages' stylesheet and scripts
TOKEN_IN_QUERY = re.compile(r"/images/[0-9]+(/thumbnail)?")  # image URLs, for <img src>
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MULTIPART_OVERHEAD = 64 * 1024  # form fields and part headers beside the image
CLOSE = {"Connection": "close"}  # the rest of a refused body is not read
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),  # a page that opened ours keeps no handle to it
]


def cross_site(method: str, headers: Headers, host: str, policy: HostPolicy) -> str | None:
    """Why a request from another site's page is refused, else None. Writes and fetches
    (every method but GET/HEAD/OPTIONS) need a same-origin page or no browser at all;
    reads sent by another site's page are refused unless they are navigations."""
    site = headers.get("sec-fetch-site")
    if method in SAFE_METHODS:
        if site in ("cross-site", "same-site") and headers.get("sec-fetch-mode") != "navigate":
            return f"{site} request refused"
        return None
    if site is not None and site not in ("same-origin", "none"):
        return f"{site} request refused"
    origin = headers.get("origin")
    if origin is None:
        return None  # not a browser (browsers send Origin with every POST and DELETE)
    netloc = urlsplit(origin).netloc.lower() if origin != "null" else ""
    if netloc and (netloc == host.lower() or _allowed_origin(netloc, policy)):
        return None
    return f"request from origin {origin[:100]} refused"


def _allowed_origin(netloc: str, policy: HostPolicy) -> bool:
    parsed = split_host(netloc)
    return parsed is not None and any(
        parsed[0] == n and (p is None or p == parsed[1]) for n, p in policy.extra
    )


def bearer(headers: Headers) -> str:
    scheme, _, value = headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


class Guard:
    """ASGI middleware applying the module's checks to every HTTP request."""

    def __init__(self, app: ASGIApp, cfg: ServerConfig) -> None:
        self.app = app
        self.cfg = cfg
        self.hosts = HostPolicy(cfg)
        self.token = cfg.token.encode() if cfg.token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        method, path = scope["method"], scope["path"]
        host = headers.get("host", "")
        cap = self._cap(headers)
        if not self.hosts.allows(host):
            refusal = (421, f"this server does not answer to Host {host[:100]!r}", {})
        elif problem := cross_site(method, headers, host, self.hosts):
            refusal = (403, problem, {})
        elif not self._authorised(method, path, headers, scope):
            refusal = (401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
        elif (declared := headers.get("content-length")) is not None and not declared.isdigit():
            refusal = (400, "bad Content-Length", CLOSE)
        elif declared is not None and int(declared) > cap:
            refusal = (413, f"request body over the {cap} byte limit", CLOSE)
        else:
            refusal = None

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        if refusal is not None:
            status, detail, extra = refusal
            await JSONResponse({"detail": detail}, status, extra)(scope, receive, send_secured)
            return
        await self.app(scope, self._capped(receive, cap), send_secured)

    def _cap(self, headers: Headers) -> int:
        if headers.get("content-type", "").lower().startswith("multipart/form-data"):
            return self.cfg.max_upload_bytes + MULTIPART_OVERHEAD
        return self.cfg.max_json_bytes

    def _authorised(self, method: str, path: str, headers: Headers, scope: Scope) -> bool:
        if self.token is None or path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIX):
            return True
        given = bearer(headers)
        if not given and method in ("GET", "HEAD") and TOKEN_IN_QUERY.fullmatch(path):
            given = QueryParams(scope.get("query_string", b"")).get("token", "")
        return secrets.compare_digest(given.encode(), self.token)

    def _capped(self, receive: Receive, cap: int) -> Receive:
        """``receive`` counting body bytes: 413 past ``cap``, 408 past the body deadline."""
        deadline = time.monotonic() + self.cfg.body_timeout_s
        seen, done = 0, False

        async def counted() -> Message:
            nonlocal seen, done
            if done:  # the body is in: later calls wait for a disconnect, without a deadline
                return await receive()
            with anyio.move_on_after(max(deadline - time.monotonic(), 0.0)):
                message = await receive()
                if message["type"] == "http.request":
                    seen += len(message.get("body", b""))
                    done = not message.get("more_body", False)
                    if seen > cap:
                        raise HTTPException(413, f"request body over the {cap} byte limit", CLOSE)
                else:
                    done = True
                return message
            raise HTTPException(408, "request body too slow", CLOSE)

        return counted
