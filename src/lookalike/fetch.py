"""Fetch an image over HTTP(S) with a size cap and a timeout."""

from __future__ import annotations

import httpx

from lookalike.errors import LookalikeError

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
DEFAULT_TIMEOUT_S = 20.0


class FetchError(LookalikeError):
    """The URL could not be fetched within the limits; the message says why."""

    http_status = 422  # the URL a client gave is not usable


def fetch(url: str, max_bytes: int = DEFAULT_MAX_BYTES, timeout: float = DEFAULT_TIMEOUT_S) -> bytes:
    """The body at ``url``; refuses other schemes, error statuses and oversize bodies."""
    if not url.startswith(("http://", "https://")):
        raise FetchError(f"not an http(s) URL: {url}")
    try:
        with httpx.stream("GET", url, timeout=timeout, follow_redirects=True) as r:
            if r.status_code >= 400:
                raise FetchError(f"{url}: HTTP {r.status_code}")
            declared = int(r.headers.get("content-length") or 0)
            if declared > max_bytes:
                raise FetchError(f"{url}: {declared} bytes is over the {max_bytes} byte limit")
            chunks, total = [], 0
            for chunk in r.iter_bytes():
                total += len(chunk)
                if total > max_bytes:
                    raise FetchError(f"{url}: more than the {max_bytes} byte limit")
                chunks.append(chunk)
            return b"".join(chunks)
    except httpx.HTTPError as exc:
        raise FetchError(f"{url}: {exc}") from exc
