"""Fetch an image over HTTP(S) for someone else, without doing what they say.

Every hop is vetted: the host is resolved once, every address it resolves to must be
public (loopback, private, link-local, multicast, reserved and unspecified addresses are
refused, IPv4 and IPv6, with IPv4 embedded in IPv6 checked as IPv4), and the connection
goes to the vetted address itself (no second DNS lookup; the Host header and TLS SNI keep
the name). Redirects are followed by hand, each target vetted the same way, at most
:data:`MAX_REDIRECTS`. The body is capped while it streams, and one deadline covers the
whole fetch (DNS, connects, redirects, every read). No proxy settings, certificates or
credentials are taken from the environment.

``allow_private`` (the CLI's own URLs, or ``serve --allow-private-urls``) skips the
address vetting; the rest still applies.
"""

from __future__ import annotations

import ipaddress
import socket

import anyio
import httpx

from lookalike.errors import LookalikeError

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
DEFAULT_TIMEOUT_S = 20.0  # for the whole fetch, redirects included
MAX_REDIRECTS = 5
REDIRECTS = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "lookalike (image similarity search)"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NOT_PUBLIC_V4 = [
    ipaddress.ip_network(n) for n in ("0.0.0.0/8", "100.64.0.0/10", "192.0.0.0/24", "198.18.0.0/15")
]
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class FetchError(LookalikeError):
    """The URL could not be fetched within the limits; the message says why (for the
    person who asked for it: a server answers strangers with :data:`GENERIC` instead)."""

    http_status = 422  # the URL a client gave is not usable


GENERIC = "could not fetch an image from that URL"


def is_public(ip: IPAddress) -> bool:
    """Whether ``ip`` is an ordinary public unicast address (IPv4 inside IPv6, whether
    v4-mapped, 6to4, Teredo or NAT64, is judged as that IPv4 address)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_public(ip.ipv4_mapped)
        embedded = [ip.sixtofour, *(ip.teredo or ())]
        if ip in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if any(v4 is not None and not is_public(v4) for v4 in embedded):
            return False
    elif any(ip in net for net in _NOT_PUBLIC_V4):
        return False
    return ip.is_global and not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def _parse(url: str, allow_private: bool) -> httpx.URL:
    """``url`` as an http(s) URL with a host, else :class:`FetchError`."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise FetchError("not a valid URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise FetchError("not an http(s) URL")
    if parsed.userinfo and not allow_private:
        raise FetchError("URLs with credentials are refused")
    return parsed


async def _resolve(url: httpx.URL) -> list[IPAddress]:
    """Every address ``url``'s host stands for (one DNS lookup; literals as they are)."""
    host = url.raw_host.decode("ascii")
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise FetchError(f"cannot resolve {host}: {exc}") from None
    found: list[IPAddress] = []
    for *_, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if ip not in found:
            found.append(ip)
    if not found:
        raise FetchError(f"cannot resolve {host}")
    return found


async def _target(url: httpx.URL, allow_private: bool) -> tuple[httpx.URL, dict[str, str], dict]:
    """The URL to connect to (the vetted address itself), with its Host header and TLS
    SNI extension; unchanged when private addresses are allowed."""
    if allow_private:
        return url, {}, {}
    addresses = await _resolve(url)
    refused = [ip for ip in addresses if not is_public(ip)]
    if refused:
        raise FetchError(f"{url.host} is {refused[0]}, not a public address: refused")
    pinned = url.copy_with(host=str(addresses[0]))
    extensions = {"sni_hostname": url.raw_host.decode("ascii")} if url.scheme == "https" else {}
    return pinned, {"Host": url.netloc.decode("ascii")}, extensions


async def _get(client: httpx.AsyncClient, url: str, max_bytes: int, allow_private: bool) -> bytes:
    current = _parse(url, allow_private)
    for _hop in range(MAX_REDIRECTS + 1):
        target, headers, extensions = await _target(current, allow_private)
        request = client.build_request("GET", target, headers=headers, extensions=extensions)
        response = await client.send(request, stream=True)
        try:
            if response.status_code in REDIRECTS:
                location = response.headers.get("location")
                if not location:
                    raise FetchError(f"HTTP {response.status_code} without a Location")
                current = _parse(str(current.join(location)), allow_private)
                continue
            if response.status_code != 200:
                raise FetchError(f"HTTP {response.status_code}")
            if response.headers.get("content-encoding", "identity").lower() != "identity":
                raise FetchError("the server compressed the body although asked not to")
            declared = response.headers.get("content-length", "0")
            if not declared.isdigit() or int(declared) > max_bytes:
                raise FetchError(f"over the {max_bytes} byte limit")
            chunks, total = [], 0
            async for chunk in response.aiter_raw():
                total += len(chunk)
                if total > max_bytes:
                    raise FetchError(f"more than the {max_bytes} byte limit")
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            await response.aclose()
    raise FetchError(f"more than {MAX_REDIRECTS} redirects")


async def fetch_async(
    url: str,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout: float = DEFAULT_TIMEOUT_S,
    allow_private: bool = False,
) -> bytes:
    """The body at ``url`` (see the module's description of what is refused), within
    ``timeout`` seconds in all. Raises :class:`FetchError` with the reason."""
    headers = {"User-Agent": USER_AGENT, "Accept": "image/*", "Accept-Encoding": "identity"}
    try:
        with anyio.fail_after(timeout):
            async with httpx.AsyncClient(
                trust_env=False, follow_redirects=False, headers=headers, timeout=timeout
            ) as client:
                return await _get(client, url, max_bytes, allow_private)
    except TimeoutError:
        raise FetchError(f"no complete answer within {timeout:g} s") from None
    except httpx.HTTPError as exc:
        raise FetchError(f"{type(exc).__name__}: {exc}") from None


def fetch(
    url: str,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout: float = DEFAULT_TIMEOUT_S,
    allow_private: bool = False,
) -> bytes:
    """:func:`fetch_async` for synchronous callers (not from inside an event loop)."""
    return anyio.run(fetch_async, url, max_bytes, timeout, allow_private)
