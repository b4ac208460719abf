"""Indexing throughput: a naive loop versus `lookalike index`, on the same photos.

    python bench/index_speed.py [--sets mix,copies,12mp,imagenet] [--repeat 2] [--work DIR]
    python bench/index_speed.py --warm [--sets 12mp,imagenet] [--input-sizes 128,224]

Default: END TO END and COLD, each run a fresh subprocess, as a user meets them:
  * naive: what a first script does (:data:`NAIVE`): load the TensorFlow SavedModel, then
    per file a full Pillow decode, convert to RGB, squash-resize to 224, batches of 32
    through the model, L2 normalisation;
  * lookalike: ``lookalike index FOLDERS --model MODEL`` into a fresh index folder: model
    load (LiteRT when it matches TensorFlow; its conversion is cached after the first run
    on a machine), walk, decode, embed, SQLite + FAISS writes, and the learning and
    calibration an index of >= 200 photos makes of itself at the end. Split into
    ``indexing`` (the command's own "indexed N images in S s"), ``calibration`` (the end
    of run learning: search.calibration.auto_calibrate, timed in the same process by
    :data:`TIMED_CLI`) and the rest (interpreter start, imports, model load, closing).
Each measurement notes the load average (2 cores shared with other work: compare runs made
under similar load); the best of ``--repeat`` runs is reported.

``--warm``: the older table, images/s with the model already loaded (tf and auto runtimes,
decode-only ceiling), at several input sizes.

Photo sets:
  * ``mix``: shaped like the held-out evaluation of issue 14: the large originals (1-15 MP
    PNG and JPEG designs and photos, some transparent) of bench/lookalikes.py's Debian
    artwork (fetched with apt-get into ``--work`` when missing, as that benchmark does),
    16 small edits of each (its 16 edits made on the picture reduced to 400-1600 px: a few
    hundred px to ~1.5 MP; cached under ``--work``), plus the 1,000 ImageNet photos;
  * ``copies``: the same without the ImageNet photos, as issue 14 measured the cost of
    calibration (1,326 files there: 78 large originals and their 16 edits each);
  * ``12mp``: ``--count`` 4000x3000 JPEGs generated from the shared photos (cached);
  * ``imagenet``: ../shared/photos/imagenet-sample.
Sets that cannot be made here (no ../shared, no apt-get) are skipped with a message.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MODEL = SHARED / "models" / "mobilenet_v1_075_224_feature_vector"
PHOTOS = SHARED / "photos" / "imagenet-sample"
MIX = "index-speed-mix-v1"  # bump when the mix changes, so cached files are not reused
MIX_MEGAPIXELS = (1.0, 15.0)
MIX_SIDES = (400, 640, 1024, 1600)  # longer side of the picture an edit is made from


class Skip(Exception):
    """A photo set that cannot be made on this machine."""


# --- photo sets ---------------------------------------------------------------------------


def make_12mp(count: int) -> list[Path]:
    """``count`` 4000x3000 camera-like JPEGs made from the shared photos (cached)."""
    if not PHOTOS.exists():
        raise Skip(f"needs {PHOTOS}")
    folder = Path(tempfile.gettempdir()) / f"lookalike-bench-12mp-{count}"
    if folder.exists() and len(list(folder.glob("*.jpg"))) == count:
        return [folder]
    folder.mkdir(exist_ok=True)
    sources = sorted(PHOTOS.iterdir())
    sources = [p for p in sources if Image.open(p).width >= 400][:count]
    rng = np.random.default_rng(0)
    for i, src in enumerate(sources):
        im = Image.open(src).convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC)
        grain = rng.normal(0, 6, (3000, 4000, 1)).astype(np.float32)  # sensor noise: realistic size
        arr = np.clip(np.asarray(im, np.float32) + grain, 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"img{i:04d}.jpg", quality=90)
    return [folder]


def imagenet() -> list[Path]:
    if not PHOTOS.exists():
        raise Skip(f"needs {PHOTOS}")
    return [PHOTOS]


def make_mix(work: Path) -> list[Path]:
    """[originals, edits, ImageNet photos]: see the module docstring."""
    if not PHOTOS.exists():
        raise Skip(f"needs {PHOTOS}")
    sys.path.insert(0, str(Path(__file__).parent))
    import lookalike_data  # bench/lookalikes.py's Debian artwork and its 16 edits
    from lookalike_families import FAMILIES

    try:
        lookalike_data.fetch(FAMILIES, work)
    except SystemExit as exc:  # no apt-get, no network, a package gone
        raise Skip(f"cannot fetch the Debian artwork: {exc}") from None
    folder = work / MIX
    originals, edits = folder / "originals", folder / "edits"
    jobs = {}
    for n, m in enumerate(m for f in FAMILIES for m in f.members):
        if m.converted:  # a video frame or Netpbm image (under 1 MP): indexed as a PNG made of it
            continue
        src = work / "pkgs" / m.package / m.path
        with Image.open(src) as im:
            megapixels = im.width * im.height / 1e6
        if m.ext not in (".png", ".jpg") or not MIX_MEGAPIXELS[0] <= megapixels <= MIX_MEGAPIXELS[1]:
            continue
        dst = originals / f"{m.id}{m.ext}"
        if not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src, dst)
            except OSError:
                shutil.copyfile(src, dst)
        targets = {}
        for i, name in enumerate(lookalike_data.EDITS):
            path = edits / name / m.id  # the suffix depends on the picture's transparency
            if not any(path.with_name(f"{m.id}.{s}").exists() for s in ("jpg", "png", "webp")):
                targets[name] = (str(path), MIX_SIDES[(n + i) % len(MIX_SIDES)])
        if targets:
            jobs[str(src)] = targets
    if jobs:
        for name in lookalike_data.EDITS:
            (edits / name).mkdir(parents=True, exist_ok=True)
        print(f"making the small edits of {len(jobs)} originals ...", file=sys.stderr)
        with ProcessPoolExecutor(os.cpu_count()) as pool:
            list(pool.map(_small_edits, jobs, jobs.values()))
    count = len(list(originals.iterdir()))
    print(f"mix: {count} originals x {len(lookalike_data.EDITS)} edits (and {PHOTOS.name})", file=sys.stderr)
    return [originals, edits, PHOTOS]


def _small_edits(src: str, targets: dict[str, tuple[str, int]]) -> None:
    """The edits of ``src`` named in ``targets`` (path without suffix, longer side of the
    reduced picture each is made from)."""
    import lookalike_data

    pic = lookalike_data.load_picture(Path(src))
    for name, (path, side) in targets.items():
        rgba = pic.rgba and _reduced(pic.rgba, side)
        small = lookalike_data.Picture(_reduced(pic.rgb, side), rgba, pic.matte)
        edit = lookalike_data.EDITS[name]
        lookalike_data._write(Path(f"{path}.{edit.ext(pic.rgba is not None)}"), edit.make(small))


def _reduced(im: Image.Image, side: int) -> Image.Image:
    out = im.copy()
    out.thumbnail((side, side), Image.Resampling.LANCZOS)
    return out


def image_files(folders: list[Path]) -> list[Path]:
    from lookalike.images import is_image_name

    return sorted(p for f in folders for p in f.rglob("*") if p.is_file() and is_image_name(p))


# --- cold, end to end ---------------------------------------------------------------------

NAIVE = """
import sys, numpy as np, tensorflow as tf
from PIL import Image
model = tf.saved_model.load(sys.argv[1])
paths = open(sys.argv[2]).read().splitlines()
vectors, batch = [], []
for i, path in enumerate(paths):
    im = Image.open(path).convert("RGB").resize((224, 224), Image.Resampling.BILINEAR)
    batch.append(np.asarray(im, np.float32) / 255.0)
    if len(batch) == 32 or i == len(paths) - 1:
        v = model(tf.constant(np.stack(batch))).numpy()
        vectors.append(v / np.linalg.norm(v, axis=1, keepdims=True))
        batch = []
print(len(np.concatenate(vectors)))
"""

# `lookalike index ...` as its console script runs it, with the end-of-run learning and
# calibration and the model load timed (printed as one JSON line on stderr at exit).
TIMED_CLI = """
import atexit, json, sys, time
from lookalike import api
from lookalike.search import calibration
seconds = {}
def timed(name, fn):
    def call(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
    return call
calibration.auto_calibrate = timed("calibration", calibration.auto_calibrate)
api.load_model = timed("model_load", api.load_model)
atexit.register(lambda: print("TIMED " + json.dumps(seconds), file=sys.stderr))
from lookalike.cli import main
sys.argv = ["lookalike", *sys.argv[1:]]
main()
"""


def load() -> float:
    return os.getloadavg()[0]


def run_naive(paths: list[Path]) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as listing:
        listing.write("\n".join(map(str, paths)))
        listing.flush()
        before = load()
        start = time.perf_counter()
        out = _run([sys.executable, "-c", NAIVE, str(MODEL), listing.name])
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "images": int(out.stdout.split()[-1]), "cpu": out.cpu, "load": before}


def run_lookalike(folders: list[Path], extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-c", TIMED_CLI, "index", *map(str, folders), "--model", str(MODEL)]
        cmd += ["--index", str(Path(tmp) / "index"), "--quiet", *extra]
        before = load()
        start = time.perf_counter()
        out = _run(cmd)
        seconds = time.perf_counter() - start
    found = re.search(r"indexed (\d+) images? in ([\d.]+) s", out.stdout)
    timed = re.search(r"^TIMED (.*)$", out.stderr, re.M)
    if not found or not timed:
        raise SystemExit(f"unexpected output of lookalike index:\n{out.stdout}\n{out.stderr}")
    parts = json.loads(timed.group(1))
    return {
        "seconds": seconds,
        "images": int(found.group(1)),
        "indexing": float(found.group(2)),
        "calibration": parts.get("calibration", 0.0),
        "model_load": parts.get("model_load", 0.0),
        "cpu": out.cpu,
        "load": before,
    }


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    """Run ``cmd``; its CPU seconds (user + system, of it and every process it waited for:
    decoder workers included) are set as ``cpu`` on the result."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tempfile.gettempdir())
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise SystemExit(f"{cmd[0]} {' '.join(cmd[3:])} failed:\n{out.stderr[-3000:]}")
    out.cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime  # type: ignore[attr-defined]
    return out


def best(runs: list[dict]) -> dict:
    return min(runs, key=lambda r: r["seconds"])


def cold(name: str, folders: list[Path], repeat: int, extra: list[str]) -> dict:
    paths = image_files(folders)
    naive, ours = [], []
    for _ in range(repeat):  # interleaved: both see the same spells of load
        naive.append(run_naive(paths))
        ours.append(run_lookalike(folders, extra))
        print(f"  {name}: naive {naive[-1]}\n  {name}: lookalike {ours[-1]}", file=sys.stderr)
    return {"files": len(paths), "naive": naive, "lookalike": ours}


def print_cold(results: dict[str, dict]) -> None:
    print(
        f"{'photos':9} {'files':>5} {'naive s':>8} {'img/s':>6} {'CPU s':>6} {'load':>5} |"
        f" {'lookalike s':>11} {'img/s':>6} {'CPU s':>6} {'load':>5} {'indexing':>8} {'calib.':>6}"
        f" {'other':>6} | {'ratio':>5} {'indexing only':>13} {'CPU ratio':>9}"
    )
    for name, r in results.items():
        n, o = best(r["naive"]), best(r["lookalike"])
        other = o["seconds"] - o["indexing"] - o["calibration"]
        print(
            f"{name:9} {r['files']:5d} {n['seconds']:8.1f} {n['images'] / n['seconds']:6.1f}"
            f" {n['cpu']:6.1f} {n['load']:5.1f} | {o['seconds']:11.1f} {o['images'] / o['seconds']:6.1f}"
            f" {o['cpu']:6.1f} {o['load']:5.1f} {o['indexing']:8.1f} {o['calibration']:6.1f} {other:6.1f} |"
            f" {n['seconds'] / o['seconds']:4.2f}x {n['seconds'] / o['indexing']:12.2f}x"
            f" {n['cpu'] / o['cpu']:8.2f}x"
        )
    print(
        "seconds: best of the runs, wall time of a fresh process each; CPU s: user + system of the"
        " process and its workers;\nload: 1-min load average at the start (2 cores); other ="
        " interpreter start, imports, model load, closing;\n'indexing only' = naive seconds /"
        " lookalike indexing seconds; CPU ratio = naive CPU s / lookalike CPU s (what the ratio"
        " tends to on cores busy with other work)."
    )


# --- warm: model preloaded ----------------------------------------------------------------


def naive_warm(paths: list[Path], input_size: int, batch: int = 32) -> float:
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


def pipeline_warm(
    folders: list[Path], input_size: int, runtime: str, workers: int | None
) -> tuple[float, int]:
    """Seconds and count for Index.add into a fresh index, model preloaded (no calibration)."""
    from lookalike import Index, IndexOptions
    from lookalike.models import load_model

    with tempfile.TemporaryDirectory() as tmp:
        embedder = load_model(str(MODEL), input_size=input_size, runtime=runtime)
        start = time.perf_counter()
        opts = IndexOptions(workers=workers)
        report = Index(tmp).add(folders, model=embedder, options=opts, calibrate=False)
        return time.perf_counter() - start, report.indexed


def decode_limit(paths: list[Path], input_size: int, workers: int | None) -> float:
    """images/s of the decoder pool alone: the ceiling for the whole pipeline."""
    from lookalike.indexer.decode import decode_files

    start = time.perf_counter()
    n = sum(1 for _ in decode_files([str(p) for p in paths], (input_size, input_size), workers=workers))
    return n / (time.perf_counter() - start)


def warm(sets: dict[str, list[Path]], sizes: list[int], workers: int | None) -> None:
    print(
        f"{'photos':10} {'input':>5} {'naive':>7} {'decode-only':>12} {'lookalike(tf)':>14}"
        f" {'lookalike(auto)':>16} {'vs naive':>9}   (images/s)"
    )
    for name, folders in sets.items():
        paths = image_files(folders)
        for size in sizes:
            r_naive = len(paths) / naive_warm(paths, size)
            r_decode = decode_limit(paths, size, workers)
            t_tf, n_tf = pipeline_warm(folders, size, "tf", workers)
            t_auto, n = pipeline_warm(folders, size, "auto", workers)
            r_tf, r_auto = n_tf / t_tf, n / t_auto
            print(
                f"{name:10} {size:5d} {r_naive:7.1f} {r_decode:12.1f} {r_tf:14.1f}"
                f" {r_auto:16.1f} {r_auto / r_naive:8.1f}x"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="mix,12mp,imagenet")
    ap.add_argument("--count", type=int, default=120, help="12 MP images to generate")
    ap.add_argument("--repeat", type=int, default=2, help="cold runs of each (the best is reported)")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lookalike-bench"
    ap.add_argument("--work", type=Path, default=cache, help=f"bench/lookalikes.py's work folder ({cache})")
    ap.add_argument("--json", type=Path, metavar="OUT", help="also write every run here")
    ap.add_argument("--warm", action="store_true", help="model preloaded, images/s per input size")
    ap.add_argument("--input-sizes", default="128,224", help="with --warm")
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args()
    if not MODEL.exists():
        print(f"skipped: no model at {MODEL} (../shared is not here)")
        return
    makers = {
        "mix": lambda: make_mix(args.work.expanduser().resolve()),
        "copies": lambda: make_mix(args.work.expanduser().resolve())[:2],  # originals, edits
        "12mp": lambda: make_12mp(args.count),
        "imagenet": imagenet,
    }
    sets = {}
    for name in args.sets.split(","):
        try:
            sets[name] = makers[name]()
        except Skip as exc:
            print(f"skipped {name}: {exc}")
    print(f"model: {MODEL.name}; cores: {os.cpu_count()}")
    if args.warm:
        warm(sets, [int(s) for s in args.input_sizes.split(",")], args.workers)
        return
    extra = [] if args.workers is None else ["--workers", str(args.workers)]
    results = {name: cold(name, folders, args.repeat, extra) for name, folders in sets.items()}
    print_cold(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
