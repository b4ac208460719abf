"""Retrieval quality and cost of the descriptor: edited copies of real photos found among 1000.

    python bench/quality.py [--originals 200] [--descriptor NAME[,NAME...]] [--model PATH]
                            [--work DIR] [--json OUT]

Database: every photo of ../shared/photos/imagenet-sample (1000, one per ImageNet class;
many classes look alike, so they are hard distractors), indexed into a fresh index with
``Index.add``. Queries: the first N photos (sorted by name) each get the edits below,
written as files; each query goes through ``Index.search`` (the index's own decoding,
model and descriptor), top K=100. The right answer is the photo the edit was made from.

Printed per descriptor (one column each):
  recall@1 per edit and overall: the top hit is the original.
  mAP: one relevant photo per query, so AP = 1/rank of the original within the top 100
       (0 when it is not there); mAP is its mean over all queries.
  best F1: pairs (query, database photo) scored by cosine, positive when the photo is the
       query's original; the threshold with the best F1 over all thresholds, with its
       precision and recall. Pairs outside a query's top 100 count as below threshold
       (exact whenever the threshold is above every query's 100th score; flagged if not).
       Recall@1 saturates easily, so a line also lists the edits whose (edit, original)
       pairs fall below that threshold most often; the JSON has it for every edit, with
       each edit's lowest cosine to its original.
  cost: indexing images/s (wall time of Index.add for the 1000 photos, model already
       warm in this process, so loading from disk is counted but TF start-up and the
       LiteRT conversion are not), search queries/s (decode + embed + search, wall time),
       bytes per stored vector (catalogue blob) and per vector of the FAISS checkpoint.

``--descriptor`` (repeatable or comma-separated) is passed to ``Index.add`` as
``descriptor=NAME``; ``default`` passes nothing (the index default, also what runs
without the option). Edits are cached in ``--work DIR`` across runs (delete
``DIR/queries-v1`` after changing an edit); indexes there are rebuilt on every run.
"""

from __future__ import annotations

import argparse
import inspect
import io
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from lookalike.search.edits import caption, crop_centre, letterbox

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MODEL = SHARED / "models" / "mobilenet_v1_075_224_feature_vector"
PHOTOS = SHARED / "photos" / "imagenet-sample"
K = 100
DEFAULT = "default"  # descriptor name meaning: pass no descriptor= to Index.add
QUERIES = "queries-v1"  # bump when an edit changes, so cached files are not reused
ORIENTATION = 0x0112  # EXIF tag


# --- edits ------------------------------------------------------------------------------


def _encode(im: Image.Image, fmt: str = "JPEG", quality: int = 90, **extra) -> bytes:
    buf = io.BytesIO()
    im = im if im.mode in ("RGB", "L") else im.convert("RGB")
    im.save(buf, fmt, quality=quality, **extra)
    return buf.getvalue()


def _resized(im: Image.Image, factor: float) -> Image.Image:
    size = (max(1, round(im.width * factor)), max(1, round(im.height * factor)))
    return im.resize(size, Image.Resampling.LANCZOS)


def _thumbnail(im: Image.Image, side: int = 160) -> Image.Image:
    out = im.copy()
    out.thumbnail((side, side), Image.Resampling.LANCZOS)
    return out


def _brightness_contrast(im: Image.Image) -> Image.Image:
    return ImageEnhance.Contrast(ImageEnhance.Brightness(im).enhance(1.3)).enhance(0.7)


def _blur(im: Image.Image) -> Image.Image:
    radius = 2.0 * max(im.size) / 500  # radius 2 on a 500 px photo, the same look at any size
    return im.filter(ImageFilter.GaussianBlur(radius))


def _diff(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).mean())


def _exif_rotated(im: Image.Image) -> bytes:
    """Pixels turned 90° anticlockwise, tagged Orientation 6 ("turn 90° clockwise to view"):
    a viewer that honours EXIF shows the original."""
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    data = _encode(im.transpose(Image.Transpose.ROTATE_90), exif=exif.tobytes())
    shown = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    # Closer to the original than the wrong tag (8) would show it, or the edit would measure
    # rotation robustness instead of EXIF handling.
    if shown.size != im.size or _diff(shown, im) >= _diff(shown, im.rotate(180)):
        raise AssertionError("EXIF orientation edit does not display as the original")
    return data


@dataclass(frozen=True)
class Edit:
    ext: str
    make: Callable[[Image.Image], bytes]


EDITS: dict[str, Edit] = {
    "jpeg_q15": Edit("jpg", lambda im: _encode(im, quality=15)),
    "jpeg_q50": Edit("jpg", lambda im: _encode(im, quality=50)),
    "thumbnail": Edit("jpg", lambda im: _encode(_thumbnail(im))),
    "half_size": Edit("jpg", lambda im: _encode(_resized(im, 0.5))),
    "crop_80": Edit("jpg", lambda im: _encode(crop_centre(im, 0.8))),
    "crop_60": Edit("jpg", lambda im: _encode(crop_centre(im, 0.6))),
    "gray": Edit("jpg", lambda im: _encode(ImageOps.grayscale(im))),
    "bright_contrast": Edit("jpg", lambda im: _encode(_brightness_contrast(im))),
    "saturation": Edit("jpg", lambda im: _encode(ImageEnhance.Color(im).enhance(1.8))),
    "blur": Edit("jpg", lambda im: _encode(_blur(im))),
    "text": Edit("jpg", lambda im: _encode(caption(im))),
    "mirror": Edit("jpg", lambda im: _encode(ImageOps.mirror(im))),
    "rotate_5": Edit("jpg", lambda im: _encode(im.rotate(5, Image.Resampling.BICUBIC, expand=True))),
    "letterbox": Edit("jpg", lambda im: _encode(letterbox(im))),
    "exif_rotation": Edit("jpg", _exif_rotated),
    "webp": Edit("webp", lambda im: _encode(im, "WEBP", quality=80)),
}


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")  # no half-written file left in the cache
    tmp.write_bytes(data)
    os.replace(tmp, path)


def make_queries(originals: list[Path], folder: Path) -> list[tuple[str, Path, str]]:
    """(edit, query file, original's stem) for every edit of every original, generated
    where missing."""
    for name in EDITS:
        (folder / name).mkdir(parents=True, exist_ok=True)
    queries, made = [], 0
    for src in originals:
        targets = {name: folder / name / f"{src.stem}.{e.ext}" for name, e in EDITS.items()}
        missing = [name for name, path in targets.items() if not path.exists()]
        if missing:
            with Image.open(src) as raw:
                im = ImageOps.exif_transpose(raw).convert("RGB")
            for name in missing:
                _write(targets[name], EDITS[name].make(im))
                made += 1
        queries.extend((name, path, src.stem) for name, path in targets.items())
    print(
        f"queries: {len(queries)} in {folder} ({made} generated, {len(queries) - made} cached)",
        file=sys.stderr,
    )
    return queries


# --- one descriptor: index, search, score ----------------------------------------------


@dataclass
class Run:
    descriptor: str
    dim: int = 0
    index_seconds: float = 0.0
    indexed: int = 0
    index_errors: int = 0
    search_seconds: float = 0.0
    bytes_per_vector: float = 0.0
    faiss_bytes_per_vector: float = 0.0
    ranks: list[int] = field(default_factory=list)  # 1-based rank of the original, 0 = not in top K
    query_errors: int = 0
    pair_scores: list[np.ndarray] = field(default_factory=list)
    pair_positive: list[np.ndarray] = field(default_factory=list)
    kth_score: list[float] = field(default_factory=list)  # K-th score of queries with K hits
    original_score: list[float] = field(default_factory=list)  # cosine to the original, -1 = not in top K
    pair_probability: list[np.ndarray] = field(default_factory=list)  # calibrated P(same photo)
    calibration: dict = field(default_factory=dict)
    calibration_seconds: float = 0.0


def _stored_bytes(index_dir: Path) -> tuple[float, float, int]:
    """Mean bytes of a stored vector blob, FAISS checkpoint bytes per vector, dim."""
    from lookalike.api import Index

    with Index(index_dir).store(sync=False) as store:
        n, total = store.catalogue.vector_storage()
        dim = store.dim
    faiss_bytes = sum(p.stat().st_size for p in index_dir.glob("vectors-*.faiss"))
    n = n or 1
    return (total or 0) / n, faiss_bytes / n, dim


def run_descriptor(
    descriptor: str, model: str, index_dir: Path, queries: list[tuple[str, Path, str]], batch: int = 64
) -> Run:
    from lookalike.api import Index

    run = Run(descriptor)
    shutil.rmtree(index_dir, ignore_errors=True)
    kwargs = {} if descriptor == DEFAULT else {"descriptor": descriptor}
    print(f"[{descriptor}] indexing {PHOTOS} ...", file=sys.stderr)
    start = time.perf_counter()
    labels = SHARED / "models" / "imagenet_labels_1001.txt"  # for classification models
    kwargs["labels"] = str(labels) if labels.exists() else None
    report = Index(index_dir).add([PHOTOS], model=model, calibrate=False, **kwargs)
    run.index_seconds = time.perf_counter() - start
    start = time.perf_counter()
    cal = Index(index_dir).calibrate()  # timed apart: it is done once per index
    run.calibration_seconds = time.perf_counter() - start
    run.calibration = cal.to_dict()
    run.indexed, run.index_errors = report.indexed, report.errors
    run.bytes_per_vector, run.faiss_bytes_per_vector, run.dim = _stored_bytes(index_dir)

    print(f"[{descriptor}] searching {len(queries)} queries ...", file=sys.stderr)
    index = Index(index_dir)  # a fresh handle: queries go through what the manifest says
    index.model()  # loaded before the clock starts
    start = time.perf_counter()
    for at in range(0, len(queries), batch):
        chunk = queries[at : at + batch]
        for (_, _, stem), result in zip(chunk, index.search([q[1] for q in chunk], k=K), strict=True):
            if result.error:
                run.query_errors += 1
            positive = np.array([Path(h.path).stem == stem for h in result.hits], bool)
            rank = int(np.argmax(positive)) + 1 if positive.any() else 0
            run.ranks.append(rank)
            run.original_score.append(result.hits[rank - 1].score if rank else -1.0)
            run.pair_scores.append(np.array([h.score for h in result.hits], np.float64))
            run.pair_positive.append(positive)
            run.pair_probability.append(np.array([h.probability for h in result.hits], np.float64))
            if len(result.hits) >= K:
                run.kth_score.append(result.hits[K - 1].score)
    run.search_seconds = time.perf_counter() - start
    return run


def best_f1(run: Run) -> dict:
    """The threshold with the best pairwise F1 (predict 'same' at score >= threshold)."""
    scores = np.concatenate(run.pair_scores)
    positive = np.concatenate(run.pair_positive)
    if len(scores) == 0:
        return {"threshold": float("nan"), "precision": 0.0, "recall": 0.0, "f1": 0.0, "exact": True}
    order = np.argsort(-scores, kind="stable")
    scores, positive = scores[order], positive[order]
    tp = np.cumsum(positive)
    fp = np.cumsum(~positive)
    cut = np.r_[scores[1:] != scores[:-1], True]  # a threshold keeps all tied scores
    precision = tp / (tp + fp)
    recall = tp / len(run.ranks)  # every query has exactly one positive pair
    f1 = np.where(tp > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    f1 = np.where(cut, f1, -1.0)
    i = int(np.argmax(f1))
    threshold = float(scores[i])
    return {
        "threshold": threshold,
        "precision": float(precision[i]),
        "recall": float(recall[i]),
        "f1": float(f1[i]),
        # pairs below some query's top K could score above a threshold at or below its K-th score
        "exact": not run.kth_score or threshold > max(run.kth_score),
    }


def at_probability(run: Run, level: float = 0.5) -> dict:
    """Pairwise precision/recall/F1 when 'same photo' means calibrated P >= ``level``: a
    threshold that should mean the same for every model and descriptor."""
    prob = np.concatenate(run.pair_probability)
    positive = np.concatenate(run.pair_positive)
    said = prob >= level
    tp = int(np.sum(said & positive))
    precision = tp / max(int(np.sum(said)), 1)
    recall = tp / max(len(run.ranks), 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    bins = []  # reliability: mean predicted P vs observed share of true pairs, per band
    for lo, hi in ((0.0, 0.1), (0.1, 0.5), (0.5, 0.9), (0.9, 0.99), (0.99, 1.01)):
        inside = (prob >= lo) & (prob < hi)
        if inside.any():
            bins.append(
                [lo, hi, int(inside.sum()), float(prob[inside].mean()), float(positive[inside].mean())]
            )
    return {"level": level, "precision": precision, "recall": recall, "f1": f1, "reliability": bins}


def summarize(run: Run, queries: list[tuple[str, Path, str]]) -> dict:
    ranks = np.array(run.ranks)
    edits = np.array([q[0] for q in queries])
    original = np.array(run.original_score)
    pairs = best_f1(run)
    return {
        "recall_at_1": {name: float(np.mean(ranks[edits == name] == 1)) for name in EDITS},
        # the pairwise view per edit: share of (edit, original) pairs at or above the best-F1
        # threshold, and the lowest cosine between an edit and its original (-1: not in top K)
        "recall_at_threshold": {
            name: float(np.mean(original[edits == name] >= pairs["threshold"])) for name in EDITS
        },
        "min_cosine": {name: float(original[edits == name].min()) for name in EDITS},
        "recall_at_1_overall": float(np.mean(ranks == 1)),
        "map": float(np.mean(np.where(ranks > 0, 1.0 / np.maximum(ranks, 1), 0.0))),
        "not_in_top_k": int(np.sum(ranks == 0)),
        "best_f1": pairs,
        "calibration": run.calibration,
        "calibration_seconds": run.calibration_seconds,
        "at_p50": at_probability(run, 0.5),
        "query_errors": run.query_errors,
        "dim": run.dim,
        "indexed": run.indexed,
        "index_errors": run.index_errors,
        "index_seconds": run.index_seconds,
        "index_images_per_second": run.indexed / run.index_seconds if run.index_seconds else 0.0,
        "search_queries_per_second": len(ranks) / run.search_seconds if run.search_seconds else 0.0,
        "bytes_per_vector": run.bytes_per_vector,
        "faiss_bytes_per_vector": run.faiss_bytes_per_vector,
    }


# --- output -----------------------------------------------------------------------------


def _cosine_at(cal: dict, level: float) -> float:
    return (float(np.log(level / (1 - level))) - cal["b"]) / cal["a"]


def print_table(results: dict[str, dict], n_per_edit: int) -> None:
    names = list(results)
    widths = [max(9, len(n) + 2) for n in names]
    label_width = 26

    def row(label: str, cells: list[str]) -> None:
        print(f"{label:<{label_width}}" + "".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True)))

    def rule() -> None:
        print("-" * (label_width + sum(widths)))

    row(f"recall@1 ({n_per_edit} queries)", names)
    rule()
    for edit in EDITS:
        row(f"  {edit}", [f"{r['recall_at_1'][edit]:.3f}" for r in results.values()])
    rule()
    row("recall@1 overall", [f"{r['recall_at_1_overall']:.3f}" for r in results.values()])
    row(f"mAP (AP = 1/rank, top {K})", [f"{r['map']:.3f}" for r in results.values()])
    row(f"original not in top {K}", [str(r["not_in_top_k"]) for r in results.values()])
    row("best pairwise F1", [f"{r['best_f1']['f1']:.3f}" for r in results.values()])
    row("  at threshold", [f"{r['best_f1']['threshold']:.4f}" for r in results.values()])
    row("  precision", [f"{r['best_f1']['precision']:.3f}" for r in results.values()])
    row("  recall", [f"{r['best_f1']['recall']:.3f}" for r in results.values()])
    row("calibrated: cosine at P=0.5", [f"{_cosine_at(r['calibration'], 0.5):.4f}" for r in results.values()])
    row("  F1 at P >= 0.5", [f"{r['at_p50']['f1']:.3f}" for r in results.values()])
    row("  precision", [f"{r['at_p50']['precision']:.3f}" for r in results.values()])
    row("  recall", [f"{r['at_p50']['recall']:.3f}" for r in results.values()])
    row("  calibration seconds", [f"{r['calibration_seconds']:.1f}" for r in results.values()])
    rule()
    row("indexing images/s", [f"{r['index_images_per_second']:.1f}" for r in results.values()])
    row("search queries/s", [f"{r['search_queries_per_second']:.1f}" for r in results.values()])
    row("dim", [str(r["dim"]) for r in results.values()])
    row("bytes/vector (catalogue)", [f"{r['bytes_per_vector']:.0f}" for r in results.values()])
    row("bytes/vector (FAISS file)", [f"{r['faiss_bytes_per_vector']:.0f}" for r in results.values()])
    for name, r in results.items():
        weak = sorted((v, e) for e, v in r["recall_at_threshold"].items() if v < 1)[:6]
        if weak:
            listed = ", ".join(f"{e} {v:.3f}" for v, e in weak)
            print(
                f"[{name}] weakest edits' pair recall at threshold {r['best_f1']['threshold']:.4f}: {listed}"
            )
        bands = "; ".join(
            f"[{lo:g},{hi if hi <= 1 else 1:g}) n={n} predicted {mp:.3f} observed {obs:.3f}"
            for lo, hi, n, mp, obs in r["at_p50"]["reliability"]
        )
        print(f"[{name}] calibration reliability: {bands}")
        problems = []
        if not r["best_f1"]["exact"]:
            problems.append(f"best-F1 threshold is within some query's top-{K} tail: F1 is optimistic")
        if r["query_errors"] or r["index_errors"]:
            problems.append(f"{r['query_errors']} query errors, {r['index_errors']} indexing errors")
        for p in problems:
            print(f"note [{name}]: {p}")


def _descriptors(values: list[str] | None) -> list[str]:
    names = [n.strip() for v in values or [DEFAULT] for n in v.split(",") if n.strip()]
    return list(dict.fromkeys(names)) or [DEFAULT]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--originals", type=int, default=200, help="photos that get every edit (first N by name)")
    ap.add_argument(
        "--descriptor",
        action="append",
        metavar="NAME",
        help="descriptor(s) to compare (repeatable, comma-separated; 'default' = pass none)",
    )
    ap.add_argument("--model", default=str(MODEL), help="any --model value (default: the shared SavedModel)")
    ap.add_argument(
        "--work", type=Path, help="folder for edits (kept, reused) and indexes (default: temporary)"
    )
    ap.add_argument("--json", type=Path, metavar="OUT", help="also write the numbers here")
    args = ap.parse_args()
    missing = [p for p in (PHOTOS, MODEL if args.model == str(MODEL) else None) if p and not p.exists()]
    if missing:
        print(f"skipped: needs {', '.join(map(str, missing))} (../shared is not here)")
        return
    descriptors = _descriptors(args.descriptor)
    if descriptors != [DEFAULT]:
        from lookalike.api import Index

        params = inspect.signature(Index.add).parameters
        if "descriptor" not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            sys.exit("this lookalike's Index.add takes no descriptor= yet: run without --descriptor")
    photos = sorted(p for p in PHOTOS.iterdir() if p.is_file() and not p.name.startswith("."))
    originals = photos[: args.originals]

    with tempfile.TemporaryDirectory(prefix="lookalike-quality-") as tmp:
        work = args.work.resolve() if args.work else Path(tmp)
        queries = make_queries(originals, work / QUERIES)

        from lookalike.models import load_model

        print("loading the model once (TensorFlow start-up, LiteRT conversion) ...", file=sys.stderr)
        load_model(args.model)  # so that the first descriptor's timing does not pay for it
        results = {
            d: summarize(
                run_descriptor(d, args.model, work / "indexes" / d.replace(os.sep, "_"), queries), queries
            )
            for d in descriptors
        }

    print(f"model: {args.model}")
    print(
        f"database: {len(photos)} photos of {PHOTOS.name}; queries: {len(originals)} originals x "
        f"{len(EDITS)} edits = {len(queries)}; search top {K}"
    )
    print(f"mAP: one relevant photo per query, AP = 1/rank of the original in the top {K}, else 0")
    print(
        f"best F1: over all {len(queries)} x {len(photos)} query-photo pairs; unretrieved ones score below\n"
    )
    print_table(results, len(originals))
    if args.json:
        out = {
            "model": args.model,
            "database": len(photos),
            "originals": len(originals),
            "queries": len(queries),
            "k": K,
            "descriptors": results,
        }
        args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
