"""Time and peak memory of `lookalike dupes` on a million synthetic vectors.

    python bench/dupes_scale.py [--n 1000000] [--dim 768] [--threshold 0.9]

Builds (once, cached in the temp folder) an index of N unit vectors drawn around 2,000
cluster centres (distinct images of similar scenes: cosine ~0.5 within a cluster), plus
planted duplicates: 1% near copies (cosine 0.93-0.99 to their original) and 0.2% exact
copies (same content hash). Then runs `lookalike dupes --json` in a child process under
/usr/bin/time and prints wall time, peak memory (max RSS), and how many planted pairs
were found and how many reported pairs were not planted.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def build(folder: Path, n: int, dim: int) -> dict:
    from lookalike.images import DecodedImage, ImageFile
    from lookalike.models.runtimes import ModelInfo
    from lookalike.storage import Store

    rng = np.random.default_rng(0)
    n_near, n_exact = n // 100, n // 500
    n_base = n - n_near - n_exact
    centres = rng.normal(size=(2000, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    near_src = rng.choice(n_base, n_near, replace=False)
    exact_src = rng.choice(np.setdiff1d(np.arange(n_base), near_src), n_exact, replace=False)
    info = ModelInfo("synthetic", "synthetic", (1, 1), dim, (0.0, 1.0), False, "tf")
    img = DecodedImage(np.zeros((1, 1, 3), np.uint8), 4000, 3000, "JPEG")
    base_cache: dict[int, np.ndarray] = {}
    started = time.perf_counter()
    with Store(folder, model=info, writable=True) as store:
        batch = 20_000
        for start in range(0, n, batch):
            idx = np.arange(start, min(n, start + batch))
            vecs = np.empty((len(idx), dim), np.float32)
            hashes = []
            for row, i in enumerate(idx):
                if i < n_base:
                    r = np.random.default_rng(i)
                    v = centres[r.integers(2000)] + r.normal(size=dim).astype(np.float32) * 0.035
                    hashes.append(f"{i:064x}")
                elif i < n_base + n_near:
                    src = int(near_src[i - n_base])
                    r = np.random.default_rng(src)
                    base = centres[r.integers(2000)] + r.normal(size=dim).astype(np.float32) * 0.035
                    base /= np.linalg.norm(base)
                    noise = np.random.default_rng(i).normal(size=dim).astype(np.float32)
                    v = base + noise * rng.uniform(0.005, 0.014)
                    hashes.append(f"{i:064x}")
                else:
                    src = int(exact_src[i - n_base - n_near])
                    r = np.random.default_rng(src)
                    v = centres[r.integers(2000)] + r.normal(size=dim).astype(np.float32) * 0.035
                    hashes.append(f"{src:064x}")
                vecs[row] = v / np.linalg.norm(v)
            files = [
                ImageFile(f"/synthetic/{i:07d}.jpg", 3_000_000, 1, h, image=img)
                for i, h in zip(idx, hashes, strict=True)
            ]
            store.add(files, vecs)
            print(f"\rbuilding: {min(n, start + batch):,}/{n:,}", end="", file=sys.stderr, flush=True)
    print(f"\nbuilt in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    planted = {
        "near": [(int(s), n_base + k) for k, s in enumerate(near_src)],
        "exact": [(int(s), n_base + n_near + k) for k, s in enumerate(exact_src)],
    }
    (folder / "planted.json").write_text(json.dumps(planted))
    del base_cache
    return planted


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--threshold", type=float, default=0.9)
    args = ap.parse_args()
    folder = Path(tempfile.gettempdir()) / f"lookalike-dupes-scale-{args.n}-{args.dim}"
    if (folder / "planted.json").exists():
        planted = json.loads((folder / "planted.json").read_text())
    else:
        planted = build(folder, args.n, args.dim)
    out = folder / "dupes.json"
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "lookalike.cli", "dupes", "--json",
           "--threshold", str(args.threshold), "--index", str(folder)]  # fmt: skip
    with open(out, "w") as f:
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        sys.exit(done.stderr[-3000:])
    wall = re.search(r"Elapsed \(wall clock\) time.*: (\S+)", done.stderr).group(1)
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    groups = json.loads(out.read_text())["groups"]
    number = re.compile(r"(\d+)\.jpg$")
    found = set()
    for g in groups:
        keep = int(number.search(g["keep"]).group(1))
        for d in g["duplicates"]:
            other = int(number.search(d["path"]).group(1))
            found.add((min(keep, other), max(keep, other)))
    want = {tuple(sorted(p)) for kind in planted.values() for p in kind}
    print(f"vectors: {args.n:,} x {args.dim}; threshold {args.threshold}")
    print(f"dupes wall time: {wall}; peak memory (max RSS): {rss_kb / 1e6:.2f} GB")
    print(f"groups: {len(groups):,}; planted pairs found: {len(found & want):,}/{len(want):,}; "
          f"reported pairs not planted: {len(found - want):,}")  # fmt: skip


if __name__ == "__main__":
    main()
