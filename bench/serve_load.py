"""Load test of `lookalike serve` on loopback: concurrent searches while images are added.

    python bench/serve_load.py [--clients 50] [--seconds 30] [--photos N]

Indexes ../shared/photos/imagenet-sample with the shared MobileNet SavedModel (cached in
the temp folder), starts `lookalike serve` on 127.0.0.1 in a child process, then runs
`--clients` concurrent search loops for `--seconds` while one writer adds new images
with POST /index. Prints search latency p50/p99, throughput, and errors (must be 0).
Every loop is bounded in time and count, and the server is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MODEL = SHARED / "models" / "mobilenet_v1_075_224_feature_vector"
PHOTOS = SHARED / "photos" / "imagenet-sample"
MAX_REQUESTS = 200_000  # hard bound on requests per run


def build_index(n: int) -> Path:
    folder = Path(tempfile.gettempdir()) / f"lookalike-serve-load-{n}"
    if (folder / "manifest.json").exists():
        return folder
    src = folder.parent / f"lookalike-serve-load-photos-{n}"
    src.mkdir(exist_ok=True)
    for p in sorted(PHOTOS.iterdir())[:n]:
        shutil.copy(p, src / p.name)
    cmd = [
        sys.executable,
        "-m",
        "lookalike.cli",
        "index",
        str(src),
        "--model",
        str(MODEL),
        "--index",
        str(folder),
        "-q",
    ]
    subprocess.run(cmd, check=True)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def queries(n: int) -> list[bytes]:
    """Edited copies (resized, recompressed) of indexed photos: realistic lookups."""
    out = []
    for p in sorted(PHOTOS.iterdir())[:n]:
        im = ImageOps.exif_transpose(Image.open(p)).convert("RGB")
        im.thumbnail((320, 320))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=70)
        out.append(buf.getvalue())
    return out


async def run(url: str, clients: int, seconds: float, data: list[bytes], new: list[bytes]) -> None:
    latencies: list[float] = []
    errors: list[str] = []
    added, add_errors = 0, []
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients + 2)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def searcher(seed: int) -> None:
            rng = np.random.default_rng(seed)
            while time.monotonic() < deadline and len(latencies) + len(errors) < MAX_REQUESTS:
                body = data[int(rng.integers(len(data)))]
                start = time.perf_counter()
                try:
                    r = await client.post("/search", files={"image": ("q.jpg", body)}, data={"k": "10"})
                    ok = r.status_code == 200 and r.json()["results"]
                except httpx.HTTPError as exc:
                    ok, r = False, exc
                if ok:
                    latencies.append(time.perf_counter() - start)
                else:
                    errors.append(str(getattr(r, "status_code", r)))

        async def writer() -> None:
            nonlocal added
            for body in new:
                if time.monotonic() >= deadline:
                    break
                r = await client.post("/index", files={"image": ("new.jpg", body)})
                if r.status_code == 201:
                    added += 1
                else:
                    add_errors.append(f"{r.status_code}: {r.text[:100]}")
                await asyncio.sleep(0.1)

        await asyncio.gather(writer(), *(searcher(i) for i in range(clients)))
    lat = np.array(latencies) * 1000
    print(f"{clients} clients for {seconds:.0f} s, with a writer adding images via POST /index")
    print(f"searches: {len(lat)} ok ({len(lat) / seconds:.1f}/s), errors: {len(errors)} {errors[:5]}")
    if len(lat):
        print(
            f"latency ms: p50 {np.percentile(lat, 50):.0f}, p99 {np.percentile(lat, 99):.0f},"
            f" max {lat.max():.0f}"
        )
    print(f"images added while searching: {added}, add errors: {len(add_errors)} {add_errors[:3]}")


def warm_latency(url: str, data: list[bytes], n: int = 50) -> None:
    """Sequential warm searches: the latency one user sees on an idle server."""
    with httpx.Client(base_url=url, timeout=60) as client:
        times = []
        for body in data[:n]:
            start = time.perf_counter()
            client.post("/search", files={"image": ("q.jpg", body)}, data={"k": "10"}).raise_for_status()
            times.append((time.perf_counter() - start) * 1000)
    print(f"warm single-client search latency ms: p50 {np.percentile(times, 50):.1f}, "
          f"p99 {np.percentile(times, 99):.1f} ({n} searches)")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--photos", type=int, default=1000)
    args = ap.parse_args()
    if not (MODEL.exists() and PHOTOS.exists()):
        sys.exit("needs ../shared/models and ../shared/photos")
    index = build_index(args.photos)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(Path(tempfile.gettempdir()) / "lookalike-serve-load.log", "w")  # noqa: SIM115
    server = subprocess.Popen(
        [sys.executable, "-m", "lookalike.cli", "serve", "--index", str(index), "--port", str(port)],
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        data = queries(200)
        rng = np.random.default_rng(1)
        new = []
        for body in data[:300]:  # new images: noisy re-encodes, distinct content hashes
            arr = np.asarray(Image.open(io.BytesIO(body)), np.float32) + rng.normal(0, 3, (1,))
            buf = io.BytesIO()
            Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=85)
            new.append(buf.getvalue())
        print(f"index: {index} ({args.photos} photos)")
        warm_latency(url, data)
        asyncio.run(run(url, args.clients, args.seconds, data, new))
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


if __name__ == "__main__":
    main()
