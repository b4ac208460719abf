"""Real servers on loopback for the service's tests: the app under uvicorn in a thread, and
small hostile HTTP servers (trickling, redirecting, recording) made by the tests.

Every loop here is bounded in time or count; every server stops when its block ends.
"""

from __future__ import annotations

import re
import socket
import ssl
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace

from lookalike.server import ServerConfig, create_app, uvicorn_config


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextmanager
def live_app(cfg: ServerConfig) -> Iterator[str]:
    """``cfg``'s app served by uvicorn on 127.0.0.1 (lifespan included); yields its URL."""
    import uvicorn

    port = free_port()
    cfg = replace(cfg, port=port)
    config = uvicorn_config(create_app(cfg), cfg, host="127.0.0.1", port=port)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def png_bomb(width: int, height: int) -> bytes:
    """A valid RGB PNG of ``width`` x ``height`` black pixels: a few hundred KB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    pack = zlib.compressobj(9)
    row = b"\0" * (1 + 3 * width)
    idat = b"".join(pack.compress(row) for _ in range(height)) + pack.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def peak_rss_mb() -> float:
    """This process's peak resident memory since :func:`reset_peak_rss`, in MB."""
    with open("/proc/self/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1)) / 1024


def reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


@dataclass
class Seen:
    """One request a :class:`Hostile` server received."""

    head: str
    sni: str | None = None

    @property
    def host(self) -> str | None:
        match = re.search(r"^host:\s*(.*?)\r?$", self.head, re.I | re.M)
        return match.group(1) if match else None


@dataclass
class Hostile:
    """A raw HTTP server on ``host`` whose ``answer(conn, seen, stop)`` writes whatever it
    likes after reading a request head. Records every request; optional TLS."""

    answer: Callable[[socket.socket, Seen, threading.Event], None]
    host: str = "127.0.0.1"
    tls: ssl.SSLContext | None = None
    port: int = 0  # 0: any free port
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.stop = threading.Event()
        self.sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((self.host, self.port))
        self.sock.listen(128)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.url = f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        seen = Seen("")
        try:
            conn.settimeout(10)
            if self.tls is not None:

                def note_sni(_sock, name, _ctx) -> None:
                    seen.sni = name

                self.tls.sni_callback = note_sni
                try:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError):
                    self.seen.append(seen)  # the handshake failed (the client refused us)
                    return
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                head += chunk
            seen.head = head.decode("latin-1")
            self.seen.append(seen)
            self.answer(conn, seen, self.stop)
        except OSError:
            pass
        finally:
            conn.close()

    def wait_seen(self, count: int = 1, timeout_s: float = 5.0) -> list[Seen]:
        """The requests seen, once there are ``count`` (a server thread may record one after
        its client has already given up on it, e.g. a refused TLS handshake), or at the timeout."""
        end = time.monotonic() + timeout_s
        while len(self.seen) < count and time.monotonic() < end:
            time.sleep(0.01)
        return self.seen

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        self.thread.join(timeout=5)

    def __enter__(self) -> Hostile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def trickle(every_s: float, limit_s: float = 30.0, head_too: bool = False):
    """An answer that trickles one byte every ``every_s`` seconds, for at most ``limit_s``
    (the head too with ``head_too``, else the head at once and then the body)."""

    def answer(conn: socket.socket, _seen: Seen, stop: threading.Event) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 1000000\r\n\r\n"
        if not head_too:
            conn.sendall(head)
            head = b""
        stream = head + b"\xff" * 1_000_000
        end = time.monotonic() + limit_s
        for byte in stream:
            if stop.is_set() or time.monotonic() > end:
                return
            conn.sendall(bytes([byte]))
            stop.wait(every_s)

    return answer


def redirect(location: Callable[[Seen], str], status: int = 302):
    """An answer redirecting to ``location(request)``."""

    def answer(conn: socket.socket, seen: Seen, _stop: threading.Event) -> None:
        target = location(seen)
        head = f"HTTP/1.1 {status} Found\r\nLocation: {target}\r\nContent-Length: 0\r\n"
        conn.sendall(head.encode() + b"Connection: close\r\n\r\n")

    return answer


def serve_bytes(body: bytes, content_type: str = "image/jpeg"):
    """An answer with ``body``."""

    def answer(conn: socket.socket, _seen: Seen, _stop: threading.Event) -> None:
        head = f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        conn.sendall(head.encode() + b"Connection: close\r\n\r\n" + body)

    return answer


def send_until_answered(
    url: str, head: str, chunks: Iterator[bytes], limit_s: float = 60.0
) -> tuple[int | None, int, bytes]:
    """POST a body chunk by chunk (raw socket, chunked encoding), watching for the answer
    between chunks: (status or None, body bytes sent before it came, the answer)."""
    host, port = url.removeprefix("http://").split(":")
    sent, answer = 0, b""
    deadline = time.monotonic() + limit_s
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head.encode())
        s.setblocking(False)
        for chunk in chunks:
            if time.monotonic() > deadline:
                break
            try:
                answer += s.recv(65536)
            except BlockingIOError:
                pass
            except OSError:
                break
            if answer:
                break
            data = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
            try:
                s.setblocking(True)
                s.settimeout(5)
                s.sendall(data)
                s.setblocking(False)
            except OSError:  # the server closed: its answer should be waiting
                break
            sent += len(chunk)
        else:
            s.setblocking(True)
            s.settimeout(5)
            with suppress(OSError):
                s.sendall(b"0\r\n\r\n")
        s.setblocking(True)
        s.settimeout(10)
        try:
            while b"\r\n\r\n" not in answer:
                more = s.recv(65536)
                if not more:
                    break
                answer += more
        except OSError:
            pass
    match = re.match(rb"HTTP/1\.[01] (\d{3})", answer)
    return (int(match.group(1)) if match else None), sent, answer
