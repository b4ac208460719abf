"""Recall, latency and memory of every index type on a million vectors.

    python bench/ann_recall.py [--n 1000000] [--dim 1024] [--queries 200] [--types ...]

Builds (once, cached in the temp folder) a real lookalike index (SQLite catalogue with
raw vectors + FAISS) of N synthetic unit vectors shaped like image embeddings (see
``make_vectors``: a deliberately hard case for inverted files, with no tight clusters).
Queries are held-out vectors of the same distribution.

For each index type the store is rebuilt with ``Store.rebuild_index`` (trained on the
collection's own vectors) and queried through ``Store.search`` -- exactly what
``lookalike search`` runs, including the exact re-scoring of approximate candidates from
the SQLite vectors -- one query at a time on one thread. Recall@10 is measured against
exact inner-product search; for IVF types it is given per nprobe, so the default can be
read off the table. Memory is the size of the FAISS index (held whole in RAM).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import faiss
import numpy as np


def rss_of_loading(folder: Path, index: faiss.Index) -> int:
    """Resident memory of ``index`` as a search process holds it: the growth of a fresh
    process's RSS when it reads the checkpoint (ids, id map and list slack included)."""
    path = folder / "probe-rss.faiss"
    faiss.write_index(index, str(path))
    code = (
        "import faiss, os\n"
        "def rss(): return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE')\n"
        f"b = rss(); i = faiss.read_index({str(path)!r}); i.set_direct_map_type(faiss.DirectMap.Hashtable) "
        "if faiss.try_extract_index_ivf(i) is not None else None\n"
        "print(rss() - b)\n"
    )
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        return int(out.stdout.strip())
    finally:
        path.unlink()


def make_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    """Unit vectors with a shared mean direction, 4,000 loose topics in a 96-d latent space
    with a decaying spectrum, and isotropic noise: no tight clusters, so an inverted file
    must probe many lists (random pairs ~0.3 cosine, nearest neighbours ~0.85)."""
    out = np.empty((n, dim), np.float32)
    start = 0
    for chunk in vector_chunks(n, dim, seed):
        out[start : start + len(chunk)] = chunk
        start += len(chunk)
    return out


def vector_chunks(n: int, dim: int, seed: int, size: int = 50_000) -> Iterator[np.ndarray]:
    """The vectors of :func:`make_vectors`, the same ones, ``size`` at a time: ten million
    of them (29 GiB) never need to be in memory at once."""
    rng = np.random.default_rng(1234)  # the distribution is shared by index and queries
    latent, topics = 96, 4000
    mean = rng.normal(size=dim).astype(np.float32)
    mean /= np.linalg.norm(mean)
    centres = rng.normal(size=(topics, latent)).astype(np.float32)
    spectrum = (np.arange(1, latent + 1) ** -0.5).astype(np.float32)
    proj = np.linalg.qr(rng.normal(size=(dim, latent)))[0].T.astype(np.float32)
    draw = np.random.default_rng(seed)
    for start in range(0, n, size):
        m = min(n, start + size) - start
        z = (centres[draw.integers(0, topics, m)] + 0.6 * draw.normal(size=(m, latent))) * spectrum
        noise = draw.normal(size=(m, dim)) * (0.4 / np.sqrt(dim))
        v = (1.6 * mean + z.astype(np.float32) @ proj + noise).astype(np.float32)
        yield v / np.linalg.norm(v, axis=1, keepdims=True)


def build(folder: Path, chunks: Iterable[np.ndarray]) -> None:
    """A catalogue of the vectors in ``chunks`` (of :func:`vector_chunks`), written through
    the catalogue (the same rows and SQL as a run's commits) with no FAISS index beside it:
    a benchmark then builds the index it measures, and ten million vectors are never held in
    memory (a flat index of them would be 29 GiB)."""
    from lookalike.images import DecodedImage, ImageFile
    from lookalike.models.runtimes import ModelInfo
    from lookalike.storage import Store

    img = DecodedImage(np.zeros((1, 1, 3), np.uint8), 1, 1, "JPEG")
    started, done, store = time.perf_counter(), 0, None
    try:
        for chunk in chunks:
            if store is None:
                info = ModelInfo("synthetic", "synthetic", (1, 1), chunk.shape[1], (0.0, 1.0), False, "tf")
                store = Store(folder, model=info, writable=True, sync=False)
            for start in range(0, len(chunk), 10_000):
                vecs = chunk[start : start + 10_000]
                files = [ImageFile(f"/synthetic/{done + i:08d}.jpg", 1, 1, f"{done + i:064x}", image=img)
                         for i in range(len(vecs))]  # fmt: skip
                store.catalogue.add(files, vecs)  # not Store.add: no index follows
                done += len(vecs)
            rate = done / (time.perf_counter() - started)
            print(f"\rbuilding: {done:,} ({rate:,.0f}/s)", end="", file=sys.stderr, flush=True)
    finally:
        if store is not None:
            store.close()
    print(f"\nbuilt in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    (folder / "ready").touch()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--types", default="flat,ivf-flat,ivf-sq8,ivf-pq")
    ap.add_argument("--nprobes", default="16,32,64,128")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--pq-memory", default="128M,256M", help="memory budgets the PQ index is sized for")
    args = ap.parse_args()

    from lookalike.storage import Store
    from lookalike.storage.vectors import IndexSpec, choose_spec, nlist_for, parse_memory

    folder = Path(tempfile.gettempdir()) / f"lookalike-ann-{args.n}-{args.dim}"
    if not (folder / "ready").exists():
        build(folder, vector_chunks(args.n, args.dim, seed=0))
    queries = make_vectors(args.queries, args.dim, seed=99)
    k = args.k

    with Store(folder, writable=True, sync=False) as store:
        n = store.rebuild_index(IndexSpec()) and store.vectors.ntotal
        ids_all = store.vectors.ids()
        faiss.omp_set_num_threads(2)
        _, truth = store.vectors.search(queries, k)  # exact ground truth
        nlist = nlist_for(n)
        print(f"{n:,} vectors x {args.dim}; {len(queries)} queries; k={k}; nlist={nlist}; "
              f"auto choice: {choose_spec(n, args.dim)}")  # fmt: skip
        print(f"{'index':<16}{'nprobe':>7}{'recall@10':>11}{'raw recall':>11}"
              f"{'p50 ms':>9}{'p95 ms':>9}{'file':>9}{'RAM':>9}")  # fmt: skip
        specs = []
        for kind in args.types.split(","):
            if kind == "ivf-pq":  # product codes are for memory budgets: one index per budget
                for budget in args.pq_memory.split(","):
                    specs.append(choose_spec(n, args.dim, parse_memory(budget), kind=kind))
            else:
                specs.append(IndexSpec() if kind == "flat" else choose_spec(n, args.dim, kind=kind))
        for spec in specs:
            kind = spec.kind
            if kind != "flat":
                started = time.perf_counter()
                store.rebuild_index(spec)
                build_s = time.perf_counter() - started
            else:
                build_s = 0.0
            tmp = folder / "probe.faiss"
            faiss.write_index(store.vectors.index, str(tmp))
            memory = tmp.stat().st_size
            tmp.unlink()
            resident = rss_of_loading(folder, store.vectors.index)
            faiss.omp_set_num_threads(1)
            for nprobe in [None] if kind == "flat" else [int(x) for x in args.nprobes.split(",")]:
                store.vectors.nprobe = nprobe
                _, raw = store.vectors.search(queries, k)
                times, found = [], []
                count = min(len(queries), 50) if kind == "flat" else len(queries)
                for q in queries[:count]:
                    t = time.perf_counter()
                    _, ids = store.search(q[None], k)
                    times.append((time.perf_counter() - t) * 1000)
                    found.append(ids[0])
                recall = np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth, strict=False)])
                raw_recall = np.mean([len(set(f) & set(t)) / k for f, t in zip(raw, truth, strict=True)])
                print(f"{spec!s:<16}{nprobe or '-':>7}{recall:>11.3f}{raw_recall:>11.3f}"
                      f"{np.percentile(times, 50):>9.1f}{np.percentile(times, 95):>9.1f}"
                      f"{memory / 2**20:>7.0f}MB{resident / 2**20:>7.0f}MB", flush=True)  # fmt: skip
            faiss.omp_set_num_threads(2)
            if build_s:
                print(f"  (rebuilt in {build_s:.0f} s from the catalogue)", flush=True)
        assert len(ids_all) == n


if __name__ == "__main__":
    main()
