"""Indexing throughput: a naive loop versus `lookalike index`, on the same photos.

    python bench/index_speed.py [--sets 12mp,imagenet] [--count 120] [--input-sizes 128,224]

The naive loop is what a first script does: open each file with Pillow at full size,
convert, resize, stack a batch, call the TensorFlow model. `lookalike index` runs the
real pipeline (reduced-size JPEG decode in worker processes, batching, LiteRT when it
matches TensorFlow, SQLite + FAISS writes) into a fresh index, timed from the model
already loaded. Photo sets: `12mp` = 4000x3000 JPEGs generated from the shared photos
(cached in the temp folder), `imagenet` = ../shared/photos/imagenet-sample. Models: the
shared MobileNet V1 0.75 SavedModel at each input size (it is fully convolutional, so
128 and 224 stand for the catalogue's _128 and _224 modules). Prints images/s and ratios.
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
MODEL = SHARED / "models" / "mobilenet_v1_075_224_feature_vector"


def make_12mp(count: int) -> Path:
    """``count`` 4000x3000 camera-like JPEGs made from the shared photos (cached)."""
    folder = Path(tempfile.gettempdir()) / f"lookalike-bench-12mp-{count}"
    if folder.exists() and len(list(folder.glob("*.jpg"))) == count:
        return folder
    folder.mkdir(exist_ok=True)
    sources = sorted((SHARED / "photos" / "imagenet-sample").iterdir())
    sources = [p for p in sources if Image.open(p).width >= 400][:count]
    rng = np.random.default_rng(0)
    for i, src in enumerate(sources):
        im = Image.open(src).convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC)
        grain = rng.normal(0, 6, (3000, 4000, 1)).astype(np.float32)  # sensor noise: realistic size
        arr = np.clip(np.asarray(im, np.float32) + grain, 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"img{i:04d}.jpg", quality=90)
    return folder


def naive(paths: list[Path], input_size: int, batch: int = 32) -> float:
    """Seconds for: full decode, convert, resize, TensorFlow call per batch."""
    from lookalike.models import load_model

    fn = load_model(str(MODEL), input_size=input_size, runtime="tf").concrete_function()
    start = time.perf_counter()
    pixels = []
    for i, p in enumerate(paths):
        im = Image.open(p).convert("RGB").resize((input_size, input_size), Image.Resampling.BILINEAR)
        pixels.append(np.asarray(im, np.float32) / 255.0)
        if len(pixels) == batch or i == len(paths) - 1:
            fn(np.stack(pixels))
            pixels = []
    return time.perf_counter() - start


def pipeline(folder: Path, input_size: int, runtime: str, workers: int | None) -> tuple[float, int]:
    """Seconds and count for `lookalike index` into a fresh index, model preloaded."""
    from lookalike import Index, IndexOptions
    from lookalike.models import load_model

    with tempfile.TemporaryDirectory() as tmp:
        embedder = load_model(str(MODEL), input_size=input_size, runtime=runtime)
        start = time.perf_counter()
        report = Index(tmp).add([folder], model=embedder, options=IndexOptions(workers=workers))
        return time.perf_counter() - start, report.indexed


def decode_limit(paths: list[Path], input_size: int, workers: int | None) -> float:
    """images/s of the decoder pool alone: the ceiling for the whole pipeline."""
    from lookalike.indexer.decode import decode_files

    start = time.perf_counter()
    n = sum(1 for _ in decode_files([str(p) for p in paths], (input_size, input_size), workers=workers))
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="12mp,imagenet")
    ap.add_argument("--count", type=int, default=120, help="12 MP images to generate")
    ap.add_argument("--input-sizes", default="128,224")
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args()
    if not MODEL.exists():
        sys.exit(f"no model at {MODEL}")
    folders = {
        "12mp": lambda: make_12mp(args.count),
        "imagenet": lambda: SHARED / "photos" / "imagenet-sample",
    }
    print(f"model: {MODEL.name}; cores: {__import__('os').cpu_count()}")
    print(
        f"{'photos':10} {'input':>5} {'naive':>7} {'decode-only':>12} {'lookalike(tf)':>14}"
        f" {'lookalike(auto)':>16} {'vs naive':>9}   (images/s)"
    )
    for name in args.sets.split(","):
        folder = folders[name]()
        paths = sorted(folder.glob("*.*"))
        for size in (int(s) for s in args.input_sizes.split(",")):
            r_naive = len(paths) / naive(paths, size)
            r_decode = decode_limit(paths, size, args.workers)
            t_tf, n_tf = pipeline(folder, size, "tf", args.workers)
            t_auto, n = pipeline(folder, size, "auto", args.workers)
            r_tf, r_auto = n_tf / t_tf, n / t_auto
            print(
                f"{name:10} {size:5d} {r_naive:7.1f} {r_decode:12.1f} {r_tf:14.1f}"
                f" {r_auto:16.1f} {r_auto / r_naive:8.1f}x"
            )


if __name__ == "__main__":
    main()
