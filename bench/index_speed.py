"""Indexing throughput: a naive loop versus `lookalike index`, on the same photos.

    python bench/index_speed.py [--photos DIR] [--model M] [--limit N] [--workers N]

The naive loop is what a first script would do: open each file with Pillow at full
size, convert, resize, stack a batch, call the TensorFlow model. `lookalike index`
runs the real pipeline (reduced-size JPEG decode in worker processes, batching,
SQLite + FAISS writes) into a fresh index. Prints images/s for both and their ratio.
Defaults: ../shared/photos/imagenet-sample and the shared MobileNet V1 0.75 SavedModel.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def naive(paths: list[Path], model: str, batch: int = 32) -> float:
    from lookalike.models import load_model

    embedder = load_model(model)
    h, w = embedder.info.input_size
    fn = embedder.concrete_function()
    start = time.perf_counter()
    pixels = []
    for i, p in enumerate(paths):
        try:
            im = Image.open(p).convert("RGB").resize((w, h), Image.Resampling.BILINEAR)
        except OSError:
            continue
        pixels.append(np.asarray(im, np.float32) / 255.0)
        if len(pixels) == batch or i == len(paths) - 1:
            fn(np.stack(pixels))
            pixels = []
    return time.perf_counter() - start


def pipeline(folder: Path, model: str, workers: int | None) -> tuple[float, int]:
    from lookalike import Index, IndexOptions

    with tempfile.TemporaryDirectory() as tmp:
        idx = Index(tmp)
        report = idx.add([folder], model=model, options=IndexOptions(workers=workers))
        return report.seconds, report.indexed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=Path, default=SHARED / "photos" / "imagenet-sample")
    ap.add_argument("--model", default=str(SHARED / "models" / "mobilenet_v1_075_224_feature_vector"))
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args()
    if not args.photos.exists():
        sys.exit(f"no photos at {args.photos}")
    paths = sorted(p for p in args.photos.rglob("*") if p.is_file())
    megapixels = (
        sum(Image.open(p).width * Image.open(p).height for p in paths[:200]) / min(200, len(paths)) / 1e6
    )
    print(f"photos: {len(paths)} files in {args.photos} (mean {megapixels:.2f} MP over the first 200)")
    print(f"model:  {args.model}")
    t_naive = naive(paths, args.model)
    print(f"naive loop       {t_naive:7.1f} s  {len(paths) / t_naive:7.1f} images/s")
    t_index, n = pipeline(args.photos, args.model, args.workers)
    print(f"lookalike index  {t_index:7.1f} s  {n / t_index:7.1f} images/s  ({n} indexed)")
    print(f"ratio            {(n / t_index) / (len(paths) / t_naive):.2f}x")


if __name__ == "__main__":
    main()
