"""Peak memory and time of building the vector index after a large run, and how it grows.

    python bench/index_memory.py [--n 250000,1000000] [--dim 768] [--specs auto,ivf-pq:2G]

What the writer does at the end of a large run (Store.rebuild_index, through
Store.checkpoint's maintain_index): train an inverted file on a sample of the
catalogue's vectors, then fill it from the catalogue chunk by chunk. For each N a real
catalogue of N synthetic unit vectors is built once (cached in the temp folder, like
bench/ann_recall.py, whose vectors it uses), then each spec is built in a fresh child
process that opens the store with no index loaded (a writer lets go of its old index
before a rebuild) and reports its peak resident memory (VmHWM) and the baseline it had
before the build, and the growth by the end of training ("trained"). At the end, the
policy's own sizes at --project N (10M by default): the training sample (64 vectors a
list, at least 100,000), the index (bytes per vector of the spec) and the id list,
from which the peak there is extrapolated. GB here are GiB.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
CHILD = """
import json, sys, time
from lookalike.storage import Store
from lookalike.storage.vectors import choose_spec, parse_memory
def hwm():  # peak resident bytes of this process (VmHWM: unlike ru_maxrss, not inherited across exec)
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024
from lookalike.storage import vectors
trained = {}
build = vectors.VectorIndex.build.__func__
def build_and_note(cls, *args, **kwargs):  # the peak so far once trained: the training phase's
    index = build(cls, *args, **kwargs)
    trained["peak"] = hwm()
    return index
vectors.VectorIndex.build = classmethod(build_and_note)
folder, kind, budget = sys.argv[1], sys.argv[2], sys.argv[3]
with Store(folder, writable=True, sync=False) as store:
    n = len(store.catalogue.vector_id_array())
    spec = choose_spec(n, store.dim, parse_memory(budget) if budget != "-" else None, kind)
    base = hwm()
    started = time.perf_counter()
    store.rebuild_index(spec)
    seconds = time.perf_counter() - started
    peak = hwm()
    print(json.dumps({"n": n, "spec": str(spec), "seconds": seconds, "base": base, "peak": peak,
                      "trained": trained.get("peak", base), "index": spec.memory(n, store.dim)}))
"""


def catalogue(n: int, dim: int) -> Path:
    sys.path.insert(0, str(BENCH))
    from ann_recall import build, vector_chunks

    folder = Path(tempfile.gettempdir()) / f"lookalike-ann-{n}-{dim}"
    if not (folder / "ready").exists():
        build(folder, vector_chunks(n, dim, seed=0))
    return folder


def measure(folder: Path, kind: str, budget: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(folder), kind, budget], capture_output=True,
                         text=True, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def model(n: int, dim: int, kind: str, budget: str) -> dict:
    """The policy's sizes at ``n``: training sample, index, ids (int64) and their lists (int32)."""
    from lookalike.storage.vectors import choose_spec, parse_memory, training_size

    spec = choose_spec(n, dim, parse_memory(budget) if budget != "-" else None, kind)
    train = min(n, training_size(spec)) * dim * 4
    return {"spec": str(spec), "train": train, "index": spec.memory(n, dim), "ids": n * 12}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", default="250000,1000000")
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--specs", default="auto,ivf-pq:2G", help="type[:--max-memory], comma-separated")
    ap.add_argument("--project", type=int, default=10_000_000)
    args = ap.parse_args()
    specs = [[*s.split(":"), "-"][:2] for s in args.specs.split(",")]
    gb = 2**30
    print(f"{'N':>10} {'index':<16}{'build s':>9}{'peak GB':>9}{'growth GB':>10}{'trained GB':>11}"
          f"{'sample GB':>10}{'index GB':>9}")  # fmt: skip
    for n in (int(x) for x in args.n.split(",")):
        started = time.perf_counter()
        folder = catalogue(n, args.dim)
        print(f"  (catalogue of {n:,} ready in {time.perf_counter() - started:.0f} s)", file=sys.stderr)
        for kind, budget in specs:
            r = measure(folder, kind, budget)
            m = model(n, args.dim, kind, budget)
            training = r["trained"] - r["base"]  # growth by the end of training
            print(f"{n:>10,} {r['spec']:<16}{r['seconds']:>9.0f}{r['peak'] / gb:>9.2f}"
                  f"{(r['peak'] - r['base']) / gb:>10.2f}{training / gb:>11.2f}"
                  f"{m['train'] / gb:>10.2f}{m['index'] / gb:>9.2f}", flush=True)  # fmt: skip
    print(f"\nthe policy's sizes at {args.project:,} x {args.dim} (the peak: the larger of the training"
          " phase, 'trained GB / sample GB' above x the sample, and the filled index + ids):")  # fmt: skip
    for kind, budget in specs:
        m = model(args.project, args.dim, kind, budget)
        print(f"  {m['spec']:<16} training sample {m['train'] / gb:.2f} GB, index {m['index'] / gb:.2f} GB, "
              f"ids {m['ids'] / gb:.2f} GB")  # fmt: skip


if __name__ == "__main__":
    main()
