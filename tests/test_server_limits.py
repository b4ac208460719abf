"""Bounded work per request: bodies cut at their caps as they arrive, JSON small and read
safely, strict parameters, a pixel budget (measured in memory), a bound on decodes in
flight, uploads that do not rewrite the FAISS checkpoint, ids out of range. Real HTTP
over loopback against the app under uvicorn in this process."""

from __future__ import annotations

import io
import itertools
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from PIL import Image

from lookalike import Index
from lookalike.server import ServerConfig
from tests.conftest import jpeg_bytes
from tests.live import live_app, peak_rss_mb, png_bomb, reset_peak_rss, send_until_answered

MB = 1024 * 1024


def json_head(host: str) -> str:
    return f"POST /search HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"


def _chunks(size: int, total: int, first: bytes = b""):
    yield first
    for _ in range(total // size):
        yield b"\0" * size


def test_bodies_are_cut_at_their_cap_as_they_arrive(index):
    """A chunked (no Content-Length) upload or JSON body far over its cap gets 413 once the
    cap is passed: the sender is stopped after about the cap, not after the whole body."""
    with live_app(ServerConfig(index=index, max_upload_bytes=1 * MB)) as base:
        host = base.removeprefix("http://")
        boundary = "b0undary"
        head = (
            f"POST /search HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n"
        )
        part = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\n'.encode()
        )
        started = time.monotonic()
        status, sent, _ = send_until_answered(base, head, _chunks(64 * 1024, 256 * MB, part))
        assert status == 413 and sent < 8 * MB and time.monotonic() - started < 20
        head = f"{json_head(host)}Transfer-Encoding: chunked\r\n\r\n"
        status, sent, _ = send_until_answered(base, head, _chunks(64 * 1024, 256 * MB, b'{"url": "'))
        assert status == 413 and sent < 8 * MB
        with socket.create_connection(("127.0.0.1", int(host.split(":")[1])), timeout=10) as raw:
            raw.sendall(f"{json_head(host)}Content-Length: {300 * MB}\r\n\r\n".encode())
            assert raw.recv(4096).startswith(b"HTTP/1.1 413 ")  # told up front: refused at once


def test_json_is_small_shallow_and_strictly_typed(index):
    with live_app(ServerConfig(index=index)) as base:
        url = "http://127.0.0.1:9/x.jpg"

        def post(body: bytes) -> httpx.Response:
            return httpx.post(f"{base}/search", content=body, headers={"Content-Type": "application/json"})

        assert post(b"[" * 30_000 + b"]" * 30_000).status_code == 422  # 60 KB, 30,000 deep
        assert post(b'{"url": ' + b"[" * 30_000 + b"]" * 30_000 + b"}").status_code == 422
        assert post(b"[" * 100_000 + b"]" * 100_000).status_code == 413  # over the 64 KB cap
        assert post(b'["not", "an", "object"]').status_code == 422
        assert post(b"\xff\xfe").status_code == 422
        for k in ("true", "1.5", "1e999", '"1.5"', "[3]", '{"a": 1}'):
            r = post(f'{{"url": "{url}", "k": {k}}}'.encode())
            assert r.status_code == 422 and "k must be" in r.json()["detail"], k
        for threshold in ("true", '"0.5x"', "NaN", "Infinity"):
            r = post(f'{{"url": "{url}", "threshold": {threshold}}}'.encode())
            assert r.status_code == 422 and "threshold must be" in r.json()["detail"], threshold
        for k in ("1.5", "true", "1e1", "0x10", " "):
            r = httpx.post(f"{base}/search", files={"image": ("q.jpg", jpeg_bytes(1))}, data={"k": k})
            assert r.status_code == 422, k
        r = httpx.post(
            f"{base}/search", files={"image": ("q.jpg", jpeg_bytes(1))}, data={"k": "+3", "threshold": "-1"}
        )
        assert r.status_code == 200 and len(r.json()["results"]) == 3


def test_ids_out_of_range_are_not_found(index):
    with live_app(ServerConfig(index=index)) as base:
        for image_id in ("99999999999999999999", "9223372036854775808", "-1", "0"):
            assert httpx.get(f"{base}/images/{image_id}").status_code == 404, image_id
            assert httpx.get(f"{base}/images/{image_id}/thumbnail").status_code == 404, image_id
            assert httpx.delete(f"{base}/images/{image_id}").status_code == 404, image_id


def test_pixel_budget_bounds_memory(index):
    """Six parallel 144 MP PNGs of a few hundred KB are refused from their headers (413,
    no decoding); a 60 MP baseline JPEG decodes reduced (accepted), a progressive one is
    refused; the budget is configurable."""
    bomb = png_bomb(12_000, 12_000)
    assert len(bomb) < 1 * MB
    big = Image.new("L", (8000, 7500), 128)
    baseline, progressive = io.BytesIO(), io.BytesIO()
    big.save(baseline, "JPEG")
    big.save(progressive, "JPEG", progressive=True)
    del big
    with live_app(ServerConfig(index=index)) as base:
        httpx.post(f"{base}/search", files={"image": ("q.jpg", jpeg_bytes(0))})  # warm
        reset_peak_rss()
        before = peak_rss_mb()
        started = time.monotonic()

        def post(path: str) -> int:
            return httpx.post(f"{base}{path}", files={"image": ("b.png", bomb)}, timeout=120).status_code

        with ThreadPoolExecutor(6) as pool:
            statuses = list(pool.map(post, ["/search"] * 5 + ["/index"]))
        took, grew = time.monotonic() - started, peak_rss_mb() - before
        assert statuses == [413] * 6 and took < 5 and grew < 150, (statuses, took, grew)
        assert httpx.get(f"{base}/stats").json()["files"] == 8 and not (index / "uploads").exists()

        reset_peak_rss()
        before = peak_rss_mb()
        r = httpx.post(f"{base}/search", files={"image": ("big.jpg", baseline.getvalue())}, timeout=120)
        assert r.status_code == 200 and peak_rss_mb() - before < 150, peak_rss_mb() - before
        r = httpx.post(f"{base}/search", files={"image": ("p.jpg", progressive.getvalue())}, timeout=120)
        assert r.status_code == 413 and "MP" in r.json()["detail"]
    mid = io.BytesIO()
    Image.new("RGB", (2000, 1500)).save(mid, "PNG")  # 3 MP
    with live_app(ServerConfig(index=index, max_decode_megapixels=2.0)) as base:
        assert httpx.post(f"{base}/search", files={"image": ("m.png", mid.getvalue())}).status_code == 413
        assert httpx.post(f"{base}/index", files={"image": ("m.png", mid.getvalue())}).status_code == 413


def test_decodes_in_flight_are_bounded(index):
    """With one decode slot and a slow decode, the requests that find no slot within the
    wait get 503 with Retry-After instead of piling up threads and memory."""
    cfg = ServerConfig(index=index, max_decodes=1, busy_wait_s=0.3)
    with live_app(cfg) as base:
        from lookalike.api import Index as IndexClass

        original = IndexClass.search

        def slow_search(self, *args, **kwargs):
            time.sleep(1.5)
            return original(self, *args, **kwargs)

        IndexClass.search = slow_search
        try:
            with ThreadPoolExecutor(3) as pool:
                answers = list(
                    pool.map(
                        lambda _: httpx.post(
                            f"{base}/search", files={"image": ("q.jpg", jpeg_bytes(1))}, timeout=30
                        ),
                        range(3),
                    )
                )
        finally:
            IndexClass.search = original
    assert sorted(r.status_code for r in answers) == [200, 503, 503]
    assert all(r.headers.get("retry-after") for r in answers if r.status_code == 503)


def test_uploads_do_not_rewrite_the_faiss_checkpoint(index):
    """POST /index writes the catalogue only: the checkpoint files stay as they were, yet
    the server's searches and a fresh reader (the CLI's) find the upload at once; the
    server writes one checkpoint when it shuts down."""

    def checkpoints() -> dict[str, int]:
        return {p.name: p.stat().st_mtime_ns for p in index.glob("vectors-*.faiss")}

    before = checkpoints()
    assert before
    new = jpeg_bytes(900)
    with live_app(ServerConfig(index=index)) as base:
        ids = []
        for seed in (900, 901, 902):
            r = httpx.post(f"{base}/index", files={"image": (f"n{seed}.jpg", jpeg_bytes(seed))})
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
        assert checkpoints() == before
        hit = httpx.post(f"{base}/search", files={"image": ("q.jpg", new)}, data={"k": "1"}).json()[
            "results"
        ][0]
        assert hit["id"] == ids[0] and hit["score"] > 0.999
        (fresh,) = Index(index).search([new], k=1)  # another process's view: from the catalogue
        assert fresh.hits[0].id == ids[0]
        assert httpx.delete(f"{base}/images/{ids[1]}").status_code == 200
        assert checkpoints() == before and httpx.get(f"{base}/stats").json()["files"] == 10
    after = checkpoints()
    assert after != before  # one checkpoint on shutdown
    (fresh,) = Index(index).search([new], k=1)
    assert fresh.hits[0].id == ids[0] and Index(index).info()["files"] == 10


def test_request_bodies_must_arrive_in_time(index):
    """A client trickling its body is cut at the body deadline (408)."""
    with live_app(ServerConfig(index=index, body_timeout_s=1.0)) as base:
        host = base.removeprefix("http://")
        head = f"{json_head(host)}Transfer-Encoding: chunked\r\n\r\n"

        def slowly():
            for _ in range(40):
                time.sleep(0.1)
                yield b" "

        started = time.monotonic()
        status, _, _ = send_until_answered(base, head, slowly())
        assert status == 408 and time.monotonic() - started < 3


def _closed_within(raw: socket.socket, seconds: float, trickle: bytes = b"") -> bool:
    """Whether the server closes ``raw`` (answering nothing) within ``seconds`` while the
    client sends ``trickle`` a byte every 0.2 s."""
    raw.settimeout(0.2)
    deadline = time.monotonic() + seconds
    for n in itertools.count():
        if time.monotonic() > deadline:
            return False
        try:
            if raw.recv(4096) == b"":
                return True
        except TimeoutError:
            pass
        try:
            if n < len(trickle):
                raw.sendall(trickle[n : n + 1])
        except OSError:  # reset: closed
            return True
    return False


def test_a_request_head_must_arrive_in_time(index):
    """A connection whose request head trickles in (slowloris) or never comes is closed at
    the head deadline, on a fresh connection and after a first answer; a head that came in
    time is not cut, though its body comes after the head deadline."""
    cfg = ServerConfig(index=index, head_timeout_s=1.0, body_timeout_s=10.0)
    with live_app(cfg) as base:
        host, port = base.removeprefix("http://").split(":")
        address = (host, int(port))
        trickle = f"GET /healthz HTTP/1.1\r\nHost: {host}:{port}\r\n".encode() + b"X-Slow: " + b"a" * 100
        started = time.monotonic()
        with socket.create_connection(address) as raw:
            assert _closed_within(raw, 5.0, trickle) and time.monotonic() - started < 3
        with socket.create_connection(address) as raw:  # says nothing at all
            assert _closed_within(raw, 5.0)
        with socket.create_connection(address) as raw:  # one answer, then a slow second head
            raw.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
            assert raw.recv(4096).startswith(b"HTTP/1.1 ")
            assert _closed_within(raw, 5.0, trickle)
        with socket.create_connection(address, timeout=10) as raw:
            raw.sendall(f"{json_head(host + ':' + port)}Content-Length: 2\r\n\r\n".encode())
            time.sleep(1.6)  # past the head deadline, within the body's
            raw.sendall(b"{}")
            assert raw.recv(4096).startswith(b"HTTP/1.1 422 ")  # answered: {} names no image


def test_connections_past_the_cap_are_closed_at_once(index):
    """Idle connections up to ``max_connections`` stay; one more is closed as it opens;
    once one of them goes, requests are answered again."""
    cfg = ServerConfig(index=index, head_timeout_s=30.0, max_connections=3)
    with live_app(cfg) as base:
        host, port = base.removeprefix("http://").split(":")
        address = (host, int(port))
        idle = [socket.create_connection(address) for _ in range(3)]
        try:
            time.sleep(0.3)
            started = time.monotonic()
            with socket.create_connection(address) as extra:
                assert _closed_within(extra, 5.0) and time.monotonic() - started < 2
            for raw in idle:  # still open: not closed by the one turned away
                raw.settimeout(0.2)
                with pytest.raises(TimeoutError):
                    raw.recv(1)
            idle.pop().close()
            time.sleep(0.3)
            assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200
        finally:
            for raw in idle:
                raw.close()


def test_concurrent_uploads_checkpoint_every_n(index):
    """Every ``checkpoint_every`` changes the server writes one checkpoint."""
    with live_app(ServerConfig(index=index, checkpoint_every=2)) as base:
        names = {p.name for p in index.glob("vectors-*.faiss")}
        errors: list[int] = []

        def upload(seed: int) -> None:
            r = httpx.post(f"{base}/index", files={"image": (f"u{seed}.jpg", jpeg_bytes(seed))}, timeout=60)
            if r.status_code != 201:
                errors.append(r.status_code)

        threads = [threading.Thread(target=upload, args=(950 + i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert errors == [] and {p.name for p in index.glob("vectors-*.faiss")} != names
        assert httpx.get(f"{base}/stats").json()["files"] == 12


def _jpeg_header(width: int, height: int, first_scan: int) -> bytes:
    """A sequential JPEG's markers, three components, its first scan holding ``first_scan``
    of them (3: interleaved, one pass; 1: one channel at a time), and no picture data."""
    components = b"".join(bytes([c, 0x11, 0]) for c in (1, 2, 3))
    sof = b"\xff\xc0" + (8 + 9).to_bytes(2, "big") + b"\x08" + height.to_bytes(2, "big")
    sof += width.to_bytes(2, "big") + b"\x03" + components
    scan = b"".join(bytes([c, 0]) for c in (1, 2, 3)[:first_scan])
    sos = b"\xff\xda" + (6 + 2 * first_scan).to_bytes(2, "big") + bytes([first_scan]) + scan + b"\x00\x3f\x00"
    return b"\xff\xd8" + sof + sos + b"\x00" * 16 + b"\xff\xd9"


def test_a_jpeg_written_one_channel_at_a_time_counts_at_full_size(tmp_path):
    """A sequential JPEG whose first scan holds one channel has libjpeg buffer the whole
    image (~6 bytes a pixel, as a progressive one): it is held to the full-size budget,
    while the same frame in one interleaved scan decodes reduced."""
    from lookalike.images import ImageTooLarge
    from lookalike.server.inputs import check_pixels

    cfg = ServerConfig(index=tmp_path)
    check_pixels(_jpeg_header(9000, 9000, 3), cfg, 224)  # 81 MP, reduced as it decodes: accepted
    with pytest.raises(ImageTooLarge, match="limit for this format"):
        check_pixels(_jpeg_header(9000, 9000, 1), cfg, 224)
