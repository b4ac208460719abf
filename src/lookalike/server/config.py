"""The service's settings, and which Host names it answers to."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lookalike.images import DEFAULT_MAX_MEGAPIXELS

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARDS = frozenset({"", "0.0.0.0", "::"})


@dataclass
class ServerConfig:
    """What ``lookalike serve`` was told; the defaults are the safe ones."""

    index: Path
    db: str | None = None  # catalogue URL when not the folder's SQLite file
    token: str | None = None
    max_upload_bytes: int = 25 * 1024 * 1024
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS  # any image over it: 413
    max_decode_megapixels: float = 40.0  # pixels decoded at full size (a baseline JPEG's are reduced)
    runtime: str = "auto"
    write_timeout_s: float = 30.0
    refresh_interval_s: float = 0.5
    host: str = "127.0.0.1"  # the address listened on: a Host name it answers to
    port: int | None = None  # None (an app not run by `serve`): loopback names on any port
    allowed_hosts: Sequence[str] = ()  # more Host names (name or name:port), e.g. a proxy's
    allow_private_urls: bool = False  # URL searches may fetch loopback/private addresses
    fetch_timeout_s: float = 20.0  # per URL fetch, everything included
    max_json_bytes: int = 64 * 1024
    max_fetches: int = 8  # URL fetches at once (they hold no thread)
    max_decodes: int = 2  # decodes (searches, uploads, thumbnails) at once
    busy_wait_s: float = 5.0  # how long a request waits for a free slot before 503
    body_timeout_s: float = 60.0  # a request body must arrive within this (else 408)
    head_timeout_s: float = 10.0  # ... and its head (request line, headers), else the connection closes
    max_connections: int = 256  # open connections; one more is closed at once (file descriptors)
    checkpoint_every: int = 64  # uploads between FAISS checkpoints (and one on shutdown)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def split_host(value: str) -> tuple[str, int | None] | None:
    """``name[:port]`` or ``[v6]:port`` as (lower-case name, port), None if malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        name, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return None
        port_text = rest[1:] if rest else None
    elif value.count(":") > 1:  # a bare IPv6 address (as --host takes it)
        name, port_text = value, None
    else:
        name, _, port_text = value.partition(":")
        port_text = port_text if ":" in value else None
    if not name or any(c in name for c in "/\\@ \t?#"):
        return None
    if port_text is None:
        return name, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return None
    return name, int(port_text)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class HostPolicy:
    """The Host header values the service answers to (anything else: 421, which is what
    a DNS-rebinding page gets). Loopback names and the listening address count on the
    listening port; after a wildcard listen address, IP literals too (a rebinding page
    always has a name); ``allowed_hosts`` entries on their port, or any without one."""

    def __init__(self, cfg: ServerConfig) -> None:
        self.port = cfg.port
        bound = split_host(cfg.host)
        self.wildcard = cfg.host.strip("[]") in WILDCARDS
        self.own = set(LOOPBACK_NAMES)
        if bound is not None and not self.wildcard:
            self.own.add(bound[0])
        self.extra: list[tuple[str, int | None]] = []
        for entry in cfg.allowed_hosts:
            parsed = split_host(entry)
            if parsed is None:
                raise ValueError(f"not a host name or host:port: {entry!r}")
            self.extra.append(parsed)

    def _our_port(self, port: int | None) -> bool:
        if self.port is None:
            return True
        return port == self.port or (port is None and self.port == 80)

    def allows(self, header: str) -> bool:
        parsed = split_host(header)
        if parsed is None:
            return False
        name, port = parsed
        if name in self.own or (self.wildcard and _is_ip(name)):
            return self._our_port(port)
        return any(name == n and (p is None or p == port) for n, p in self.extra)

    def names(self) -> list[str]:
        """For messages: the names accepted."""
        return sorted(self.own) + [n if p is None else f"{n}:{p}" for n, p in self.extra]
