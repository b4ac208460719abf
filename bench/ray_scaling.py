"""Indexing on Ray against the local pipeline, on the same photos, and a 100M-image projection.

    python bench/ray_scaling.py [--photos ../shared/photos/imagenet-sample] [--workers 1,2]
                                [--cores-per-node 16] [--writes 20000]

One run, one machine: the photos are indexed into fresh indexes by the local pipeline
(decoder processes + LiteRT in this process, what `lookalike index` does) and by
`lookalike index --ray local` with 1 and 2 Ray worker processes (embedding actors of one
CPU each, reading, decoding and embedding), model loaded once beforehand. images/s is
end to end as `index` reports it (walk, Ray actors starting, every commit), with the
seconds until the first batch is committed (Ray: actors starting and loading the model);
each pipeline runs --repeat times and its best run is shown. Ray's own start (`ray.init`)
is timed apart.

Then the single writer's ceiling: rows/s that Store.add commits in batches of 32 with
768-d vectors, into SQLite and, when $LOOKALIKE_TEST_PG names a server (`source
.ci/postgres`), PostgreSQL. The projection for 100M images on N nodes takes the
images/s per core measured here (Ray, end to end) and the PostgreSQL (else SQLite) write rate:
throughput = min(N x cores x per-core rate, write rate).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MODEL = SHARED / "models" / "mobilenet_v1_075_224_feature_vector"
PHOTOS = SHARED / "photos" / "imagenet-sample"


def load() -> str:
    return os.getloadavg().__repr__()


def timed_run(photos: Path, embedder, workers: int | None, ray: str | None) -> tuple[int, float, float]:
    """(images, end-to-end images/s, seconds to the first committed batch) of one run into
    a fresh index."""
    from lookalike import Index, IndexOptions

    marks: list[tuple[float, int]] = []

    def progress(done: int, total: int) -> None:
        marks.append((time.perf_counter(), done))

    with tempfile.TemporaryDirectory() as tmp:
        opts = IndexOptions(workers=workers)
        idx = Index(tmp)
        report = idx.add([photos], model=embedder, options=opts, progress=progress, ray=ray, calibrate=False)
    first = next(t for t, d in marks if d > 0)
    return report.indexed, report.images_per_second, first - marks[0][0]


def write_rate(db: str | None, rows: int, folder: Path) -> float:
    """Rows/s Store.add commits (batches of 32, 768-d vectors, realistic row fields)."""
    from lookalike.images import DecodedImage, ImageFile
    from lookalike.models.runtimes import ModelInfo
    from lookalike.storage import Store

    info = ModelInfo("synthetic", "synthetic", (224, 224), 768, (0.0, 1.0), False, "tflite")
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(rows, 768)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    img = DecodedImage(np.zeros(0, np.uint8), 4000, 3000, "JPEG", {"Make": "Camera"}, None, bytes(768))
    stamp = time.time_ns()
    with Store(folder, model=info, writable=True, db=db) as store:
        started = time.perf_counter()
        for start in range(0, rows, 32):
            idx = range(start, min(rows, start + 32))
            files = [ImageFile(f"/photos/{i:09d}.jpg", 3_000_000, stamp, f"{i:064x}", image=img) for i in idx]
            store.add(files, vectors[start : start + len(files)])
        return rows / (time.perf_counter() - started)


def pg_database(admin: str):
    """A throwaway database on the server at ``admin`` (returns its URL and a drop callback)."""
    from sqlalchemy import create_engine, text

    from lookalike.storage.schema import database_url

    name = f"lookalike_bench_{uuid.uuid4().hex[:8]}"
    engine = create_engine(database_url(admin), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        engine.dispose()

    return database_url(admin).set(database=name).render_as_string(hide_password=False), drop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=Path, default=PHOTOS)
    ap.add_argument("--workers", default="1,2", help="Ray worker processes to try")
    ap.add_argument("--cores-per-node", type=int, default=16)
    ap.add_argument("--writes", type=int, default=20_000, help="rows for the write-rate measurement")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each pipeline; the best is shown")
    args = ap.parse_args()
    if not MODEL.exists() or not args.photos.exists():
        sys.exit(f"needs {MODEL} and {args.photos}")
    from lookalike.indexer import ray_pipeline
    from lookalike.models import load_model

    ray_pipeline.prepare("local")  # loopback only, as `--ray local`
    embedder = load_model(str(MODEL))
    counts = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        sqlite_rate = write_rate(None, args.writes, Path(tmp) / "sqlite")
    print(f"writer, SQLite: {sqlite_rate:,.0f} rows/s (batches of 32, 768-d)")
    writer, writer_name = sqlite_rate, "SQLite"
    admin = os.environ.get("LOOKALIKE_TEST_PG")
    if admin:
        url, drop = pg_database(admin)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                writer = write_rate(url, args.writes, Path(tmp) / "pg")
        finally:
            drop()
        writer_name = "PostgreSQL"
        print(f"writer, PostgreSQL (loopback): {writer:,.0f} rows/s")

    print(f"photos: {args.photos} ({len(list(args.photos.iterdir()))} files); model: {MODEL.name} "
          f"({embedder.info.runtime}); cores: {os.cpu_count()}; load before: {load()}")  # fmt: skip
    print(f"{'pipeline':<22}{'images':>7}{'images/s':>10}{'vs local':>10}{'first batch s':>15}")
    runs = {}  # name -> (images, best end-to-end images/s, its seconds to the first batch)

    def run(name: str, workers: int | None, ray: str | None) -> None:
        for _ in range(args.repeat):
            n, rate, first = timed_run(args.photos, embedder, workers, ray)
            if rate > runs.get(name, (n, 0.0, 0.0))[1]:
                runs[name] = (n, rate, first)

    def show(name: str) -> None:
        n, rate, first = runs[name]
        vs = f"{rate / runs['local'][1] - 1:>+10.0%}" if name != "local" else f"{'':>10}"
        print(f"{name:<22}{n:>7}{rate:>10.1f}{vs}{first:>15.1f}", flush=True)

    run("local", None, None)
    show("local")
    started = time.perf_counter()
    with ray_pipeline.connected("local", num_cpus=max(counts)):
        ray_start = time.perf_counter() - started
        for w in counts:
            run(f"ray, {w} worker{'s' if w > 1 else ''}", w, "local")
            show(f"ray, {w} worker{'s' if w > 1 else ''}")
    rate_by = {w: runs[f"ray, {w} worker{'s' if w > 1 else ''}"][1] for w in counts}
    print(f"ray.init (local runtime): {ray_start:.1f} s, once per run; load after: {load()}")
    print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")

    w = max(counts)
    per_core = rate_by[w] / w
    cores = args.cores_per_node
    print(f"\n100M images; {per_core:.1f} images/s per core (Ray, end to end); {cores} cores a node; "
          f"one {writer_name} writer at {writer:,.0f} rows/s")  # fmt: skip
    print(f"{'nodes':>6}{'cores':>7}{'embed images/s':>16}{'run images/s':>14}{'days':>8}  bound")
    for nodes in (1, 4, 16, 64, 256):
        embed = nodes * cores * per_core
        run = min(embed, writer)
        print(f"{nodes:>6}{nodes * cores:>7}{embed:>16,.0f}{run:>14,.0f}{1e8 / run / 86400:>8.1f}  "
              f"{'writer' if writer < embed else 'cluster'}")  # fmt: skip


if __name__ == "__main__":
    main()
