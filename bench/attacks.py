"""Hostile clients and servers against `lookalike serve` on loopback: what each attack gets.

    python bench/attacks.py [--src DIR] [--only NAME ...]

Builds a small index (the tests' tiny generated model, synthetic photos) in a temp folder,
starts `lookalike serve` from ``--src`` (default: this checkout's ``src``; give an older
checkout's to compare) on 127.0.0.1 in child processes, runs each attack and prints one
line per attack: statuses, seconds, the server's peak memory growth (VmHWM, reset before
each attack). Settings are the defaults, except a token for the token checks and, where
the server has it, ``--allow-private-urls`` for the attacks that need a hostile server on
loopback. Every loop is bounded in time and count; every server is stopped at the end.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import make_photo  # noqa: E402
from tests.live import Hostile, png_bomb, redirect, send_until_answered, serve_bytes, trickle  # noqa: E402

MB = 1024 * 1024
EVIL = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}


def jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    make_photo(seed).save(buf, "JPEG")
    return buf.getvalue()


def build_index(work: Path) -> Path:
    from tests import model_factory

    index, photos = work / "ix", work / "photos"
    if (index / "manifest.json").exists():
        return index
    photos.mkdir(parents=True, exist_ok=True)
    for i in range(20):
        make_photo(i).save(photos / f"p{i}.jpg")
    model = model_factory.make_tf2_saved_model(work / "model")
    cmd = [
        sys.executable,
        "-m",
        "lookalike.cli",
        "index",
        str(photos),
        "--model",
        str(model),
        "--index",
        str(index),
    ]
    subprocess.run([*cmd, "-q"], check=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    return index


class Served:
    """A `lookalike serve` child process and what we can measure of it."""

    def __init__(self, src: Path, index: Path, extra: list[str]) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.index = index
        env = {**os.environ, "PYTHONPATH": str(src)}
        cmd = [
            sys.executable,
            "-m",
            "lookalike.cli",
            "serve",
            "--index",
            str(index),
            "--port",
            str(self.port),
        ]
        self.log = open(Path(tempfile.gettempdir()) / "lookalike-attacks.log", "a")  # noqa: SIM115
        self.proc = subprocess.Popen([*cmd, *extra], env=env, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("the server did not start (see lookalike-attacks.log)")

    def reset_peak(self) -> None:
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")

    def memory_mb(self, field: str = "VmHWM") -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(rf"{field}:\s+(\d+)", status).group(1)) / 1024

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.log.close()


@contextmanager
def serving(src: Path, index: Path, extra: list[str]) -> Iterator[Served]:
    served = Served(src, index, extra)
    try:
        yield served
    finally:
        served.stop()


def post_json(base: str, body: object, **kw) -> httpx.Response:
    return httpx.post(f"{base}/search", json=body, timeout=kw.pop("timeout", 120), **kw)


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    started = time.monotonic()
    out = fn()
    return out, time.monotonic() - started


def detail(r: httpx.Response) -> str:
    try:
        return str(r.json().get("detail", "results" if "results" in r.json() else ""))[:60]
    except ValueError:
        return r.text[:60]


# --- attacks on a server with default settings ---------------------------------------


def rebinding(s: Served) -> str:
    evil = {"Host": f"rebind.evil.example:{s.port}"}
    hit = post_json_upload(s.base)["results"][0]["id"]
    codes = [
        httpx.get(f"{s.base}/stats", headers=evil).status_code,
        httpx.get(f"{s.base}/images/{hit}", headers=evil).status_code,
        httpx.delete(f"{s.base}/images/{hit}", headers=evil).status_code,
    ]
    still = httpx.get(f"{s.base}/images/{hit}").status_code
    return f"GET /stats, GET /images/{{id}}, DELETE: {codes}; image afterwards: {still}"


def post_json_upload(base: str) -> dict:
    return httpx.post(f"{base}/search", files={"image": ("q.jpg", jpeg(0))}, data={"k": "1"}).json()


def cross_site_form(s: Served, canary: Hostile) -> str:
    body = json.dumps({"url": f"{canary.url}/p.jpg", "k": 1, "x": "="})
    before = len(canary.seen)
    r = httpx.post(f"{s.base}/search", content=body, headers={**EVIL, "Content-Type": "text/plain"})
    return f"{r.status_code} {detail(r)!r}; canary fetched: {len(canary.seen) - before}"


def cross_site_upload(s: Served) -> str:
    before = httpx.get(f"{s.base}/stats").json()["files"]
    r = httpx.post(f"{s.base}/index", files={"image": ("x.jpg", jpeg(99))}, headers=EVIL)
    after = httpx.get(f"{s.base}/stats").json()["files"]
    return f"{r.status_code}; files {before} -> {after}"


def ssrf(s: Served, canary: Hostile) -> str:
    p = canary.port
    urls = [f"http://127.0.0.1:{p}/p.jpg", f"http://localhost:{p}/p.jpg", f"http://2130706433:{p}/p.jpg",
            f"http://evil.example@127.0.0.1:{p}/p.jpg", "http://169.254.169.254/latest/"]  # fmt: skip
    before = len(canary.seen)
    out = []
    for url in urls:
        r, took = timed(lambda url=url: post_json(s.base, {"url": url, "k": 1}, timeout=60))
        out.append(f"{r.status_code}/{took:.1f}s")
    return f"{' '.join(out)}; canary fetched: {len(canary.seen) - before}"


def chunked_upload(s: Served, total: int = 2048 * MB) -> str:
    host = f"127.0.0.1:{s.port}"
    head = (f"POST /search HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n"
            f"Content-Type: multipart/form-data; boundary=xx\r\n\r\n")  # fmt: skip
    part = b'--xx\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\n'

    def chunks() -> Iterator[bytes]:
        yield part
        block = b"\0" * MB
        for _ in range(total // MB):
            yield block

    s.reset_peak()
    before = s.memory_mb("VmRSS")
    (status, sent, _), took = timed(lambda: send_until_answered(s.base, head, chunks(), limit_s=180))
    grew = s.memory_mb() - before
    return f"{status} after {sent / MB:.0f} of {total / MB:.0f} MB sent, {took:.1f}s; peak +{grew:.0f} MB"


def chunked_json(s: Served, total: int = 300 * MB) -> str:
    host = f"127.0.0.1:{s.port}"
    head = (f"POST /search HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n"
            "Content-Type: application/json\r\n\r\n")  # fmt: skip

    def chunks() -> Iterator[bytes]:
        yield b'{"url": "http://x/", "pad": "'
        block = b"a" * MB
        for _ in range(total // MB):
            yield block
        yield b'"}'

    s.reset_peak()
    before = s.memory_mb("VmRSS")
    (status, sent, _), took = timed(lambda: send_until_answered(s.base, head, chunks(), limit_s=180))
    time.sleep(1)
    return (f"{status} after {sent / MB:.1f} MB sent, {took:.1f}s; peak +{s.memory_mb() - before:.0f} MB, "
            f"RSS after +{s.memory_mb('VmRSS') - before:.0f} MB")  # fmt: skip


def deep_json(s: Served) -> str:
    r = httpx.post(f"{s.base}/search", content=b"[" * 100_000 + b"]" * 100_000,
                   headers={"Content-Type": "application/json"}, timeout=60)  # fmt: skip
    r2 = httpx.post(f"{s.base}/search", content=b"[" * 30_000 + b"]" * 30_000,
                    headers={"Content-Type": "application/json"}, timeout=60)  # fmt: skip
    return f"100,000 deep: {r.status_code}; 30,000 deep (60 KB): {r2.status_code}"


def loose_numbers(s: Served) -> str:
    out = []
    for k in ("true", "1.5"):
        body = f'{{"url": "http://127.0.0.1:9/x.jpg", "k": {k}}}'
        r = httpx.post(f"{s.base}/search", content=body, headers={"Content-Type": "application/json"})
        out.append(f"k={k}: {r.status_code} {detail(r)!r}")
    return "; ".join(out)


def big_ids(s: Served) -> str:
    return " ".join(
        f"{m} {httpx.request(m, f'{s.base}/images/99999999999999999999').status_code}"
        for m in ("GET", "DELETE")
    )


def png_bombs(s: Served) -> str:
    bomb = png_bomb(12_000, 12_000)
    s.reset_peak()
    before = s.memory_mb("VmRSS")

    def post(_: int) -> int:
        return httpx.post(f"{s.base}/search", files={"image": ("b.png", bomb)}, timeout=300).status_code

    with ThreadPoolExecutor(6) as pool:
        statuses, took = timed(lambda: list(pool.map(post, range(6))))
    return f"6 x {len(bomb) // 1024} KB: {statuses}, {took:.1f}s; peak +{s.memory_mb() - before:.0f} MB"


def index_bomb_and_checkpoints(s: Served) -> str:
    bomb = png_bomb(12_000, 12_000)
    s.reset_peak()
    before = s.memory_mb("VmRSS")
    r = httpx.post(f"{s.base}/index", files={"image": ("b.png", bomb)}, timeout=300)
    grew = s.memory_mb() - before

    def files() -> dict[str, int]:
        return {p.name: p.stat().st_mtime_ns for p in s.index.glob("vectors-*.faiss")}

    codes, rewritten = [], 0
    for i in range(3):
        was = files()
        codes.append(httpx.post(f"{s.base}/index", files={"image": (f"u{i}.jpg", jpeg(500 + i))}).status_code)
        rewritten += files() != was
    return f"144 MP PNG: {r.status_code} (peak +{grew:.0f} MB); 3 uploads {codes}, {rewritten} rewrote FAISS"


# --- with a token -------------------------------------------------------------------


def token_places(s: Served) -> str:
    auth = {"Authorization": "Bearer s3cret"}
    hit = httpx.post(f"{s.base}/search", files={"image": ("q.jpg", jpeg(0))}, headers=auth).json()
    image_id = hit["results"][0]["id"]
    out = [f"{p} {httpx.get(s.base + p).status_code}" for p in ("/docs", "/openapi.json")]
    out.append(f"/stats?token= {httpx.get(f'{s.base}/stats?token=s3cret').status_code}")
    out.append(f"/images/{{id}}?token= {httpx.get(f'{s.base}/images/{image_id}?token=s3cret').status_code}")
    return ", ".join(out)


# --- fetching from hostile servers on loopback ----------------------------------------


def redirect_loop(s: Served) -> str:
    with Hostile(redirect(lambda seen: f"/again{len(seen.head)}")) as loop:
        r, took = timed(lambda: post_json(s.base, {"url": f"{loop.url}/a.jpg"}))
        return f"{r.status_code} {detail(r)!r} after {len(loop.seen)} requests, {took:.1f}s"


def port_oracle(s: Served) -> str:
    with socket.socket() as closed, Hostile(serve_bytes(b"<html>hi</html>", "text/html")) as html:
        closed.bind(("127.0.0.1", 0))
        a = post_json(s.base, {"url": f"http://127.0.0.1:{closed.getsockname()[1]}/"})
        b = post_json(s.base, {"url": html.url})
        return f"closed port: {a.status_code} {detail(a)!r}; open port: {b.status_code} {detail(b)!r}"


def trickling(s: Served) -> str:
    with Hostile(trickle(2.0, limit_s=90)) as slow:
        r, took = timed(lambda: post_json(s.base, {"url": f"{slow.url}/p.jpg"}, timeout=120))
        return f"1 byte / 2 s: {r.status_code} after {took:.1f}s"


def starvation(s: Served) -> str:
    with Hostile(trickle(2.0, limit_s=60)) as slow:
        answers: list[int] = []

        def one() -> None:
            answers.append(post_json(s.base, {"url": f"{slow.url}/p.jpg"}, timeout=120).status_code)

        threads = [threading.Thread(target=one) for _ in range(40)]
        for t in threads:
            t.start()
        time.sleep(2)
        r, took = timed(
            lambda: httpx.post(f"{s.base}/search", files={"image": ("q.jpg", jpeg(1))}, timeout=120)
        )
        for t in threads:
            t.join(timeout=120)
        counts = {c: answers.count(c) for c in sorted(set(answers))}
        return f"upload search during 40 trickling fetches: {r.status_code} in {took:.1f}s; fetches {counts}"


ATTACKS: dict[str, tuple[str, Callable]] = {
    "rebinding": ("default", rebinding),
    "cross-site-form": ("default+canary", cross_site_form),
    "cross-site-upload": ("default", cross_site_upload),
    "ssrf": ("default+canary", ssrf),
    "chunked-upload": ("default", chunked_upload),
    "chunked-json": ("default", chunked_json),
    "deep-json": ("default", deep_json),
    "loose-numbers": ("default", loose_numbers),
    "big-ids": ("default", big_ids),
    "png-bombs": ("default", png_bombs),
    "index-bomb-checkpoints": ("default", index_bomb_and_checkpoints),
    "token-places": ("token", token_places),
    "redirect-loop": ("private", redirect_loop),
    "port-oracle": ("private", port_oracle),
    "trickle": ("private", trickling),
    "starvation": ("private", starvation),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", type=Path, default=ROOT / "src", help="the lookalike sources to serve")
    parser.add_argument("--only", nargs="*", choices=sorted(ATTACKS), help="run these attacks only")
    args = parser.parse_args()
    work = Path(tempfile.gettempdir()) / "lookalike-attacks"
    photos_index = build_index(work)
    names = args.only or list(ATTACKS)
    help_text = subprocess.run(
        [sys.executable, "-m", "lookalike.cli", "serve", "--help"], capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(args.src), "COLUMNS": "200"}, timeout=120,
    ).stdout  # fmt: skip
    private = ["--allow-private-urls"] if "--allow-private-urls" in help_text else []
    settings = {"default": [], "token": ["--token", "s3cret"], "private": private}
    print(f"serving {args.src}; private-URL runs with {private or 'the defaults'}")
    for mode in ("default", "token", "private"):
        todo = [n for n in names if ATTACKS[n][0].split("+")[0] == mode]
        if not todo:
            continue
        for name in todo:  # a fresh server (and index copy) per attack: no attack sees another's state
            index = work / f"ix-{name}"
            subprocess.run(["rm", "-rf", str(index)], check=True)
            subprocess.run(["cp", "-a", str(photos_index), str(index)], check=True)
            with serving(args.src, index, settings[mode]) as served:
                fn = ATTACKS[name][1]
                try:
                    if ATTACKS[name][0].endswith("+canary"):
                        with Hostile(serve_bytes(jpeg(3))) as canary:
                            result = fn(served, canary)
                    else:
                        result = fn(served)
                except Exception as exc:  # a broken attack says so and the others still run
                    result = f"attack failed: {type(exc).__name__}: {exc}"
            print(f"{name:24} {result}", flush=True)


if __name__ == "__main__":
    main()
