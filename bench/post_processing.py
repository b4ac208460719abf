"""Vector post-processing measured on bench/quality.py's benchmark, from an index it built.

    python bench/quality.py --work /tmp/lq            # builds the index and the edits first
    python bench/post_processing.py --work /tmp/lq    # then this

Compares, on the same stored vectors and query vectors (embedded through the index):
plain cosine; PCA whitening learned from the indexed collection (several dimensions and
shrinkages); query-time mirror augmentation (max of the query and its mirror image);
database-side augmentation (each vector replaced by a weighted sum of its nearest
neighbours, as in alpha-query expansion). Printed per variant: recall@1, best pairwise
F1 (threshold, precision, recall) over every query x database pair, and the edits whose
(edit, original) pairs fall below that threshold most often. The same numbers decide
whether a technique is worth building into lookalike (see README, "Descriptors").
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def evaluate(name: str, db: np.ndarray, queries: np.ndarray, truth: np.ndarray, edits: np.ndarray) -> None:
    evaluate_scores(name, queries @ db.T, truth, edits)


def evaluate_scores(name: str, scores: np.ndarray, truth: np.ndarray, edits: np.ndarray) -> None:
    rows = np.arange(len(scores))
    recall1 = float(np.mean(scores.argmax(1) == truth))
    pos = scores[rows, truth]
    neg = scores.copy()
    neg[rows, truth] = -np.inf
    neg_sorted = -np.sort(-neg.ravel())
    best = (0.0, 0.0, 0.0, 0.0)
    for t in np.unique(pos):
        tp = int(np.sum(pos >= t))
        fp = int(np.searchsorted(-neg_sorted, -t, side="right"))
        p, r = tp / max(tp + fp, 1), tp / len(pos)
        f1 = 2 * p * r / max(p + r, 1e-12)
        if f1 > best[0]:
            best = (f1, float(t), p, r)
    f1, t, p, r = best
    weak = sorted((float(np.mean(pos[edits == e] >= t)), e) for e in np.unique(edits))[:4]
    listed = " ".join(f"{e} {v:.3f}" for v, e in weak)
    print(f"{name:<28}{recall1:>9.4f}{f1:>8.4f}{t:>9.4f}{p:>7.3f}{r:>7.3f}   {listed}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True, help="bench/quality.py's --work folder")
    ap.add_argument("--descriptor", default="default", help="which of its indexes to use")
    args = ap.parse_args()
    from lookalike.api import Index

    index_dir = args.work / "indexes" / args.descriptor
    queries_dir = next(args.work.glob("queries-v*"), None)
    if not (index_dir / "manifest.json").exists() or queries_dir is None:
        sys.exit(f"run bench/quality.py --work {args.work} first")
    index = Index(index_dir)
    with index.store() as store:
        known = {Path(p).stem: k.id for p, k in store.catalogue.known().items() if k.status == "ok"}
        ids, db = store.catalogue.load_vectors(sorted(known.values()))
    position = {int(i): n for n, i in enumerate(ids)}
    files, truth, edits = [], [], []
    for folder in sorted(p for p in queries_dir.iterdir() if p.is_dir()):
        for f in sorted(folder.iterdir()):
            if f.stem in known:
                files.append(f)
                truth.append(position[known[f.stem]])
                edits.append(folder.name)
    truth_arr, edits_arr = np.array(truth), np.array(edits)
    queries = np.concatenate([index.embed(files[i : i + 64])[0] for i in range(0, len(files), 64)])

    def mirrored(path: Path) -> bytes:
        with Image.open(path) as im:
            buf = io.BytesIO()
            ImageOps.mirror(ImageOps.exif_transpose(im).convert("RGB")).save(buf, "PNG")
            return buf.getvalue()

    flipped = np.concatenate(
        [index.embed([mirrored(f) for f in files[i : i + 64]])[0] for i in range(0, len(files), 64)]
    )
    print(f"{len(db)} database vectors, {len(queries)} queries ({index_dir})")
    print(
        f"{'variant':<28}{'recall@1':>9}{'F1':>8}{'thresh':>9}{'P':>7}{'R':>7}   weakest edits at threshold"
    )
    evaluate("plain cosine", db, queries, truth_arr, edits_arr)
    mean = db.mean(0)
    _, sing, vt = np.linalg.svd(db - mean, full_matrices=False)
    var = sing**2 / len(db)
    for dims, shrink in ((128, 0.0), (256, 0.0), (512, 0.0), (512, 0.05), (len(var), 0.1)):
        proj = vt[:dims].T / np.sqrt(var[:dims] + shrink * var[0])
        white_db, white_q = _unit((db - mean) @ proj), _unit((queries - mean) @ proj)
        evaluate(f"PCA-whitened d{dims} s{shrink:g}", white_db, white_q, truth_arr, edits_arr)
    both = np.maximum(queries @ db.T, flipped @ db.T)
    evaluate_scores("query + mirror (max)", both, truth_arr, edits_arr)
    sims = db @ db.T
    for k, alpha in ((2, 3.0), (3, 3.0)):
        near = np.argsort(-sims, axis=1)[:, :k]
        weights = np.take_along_axis(sims, near, 1) ** alpha
        evaluate(f"DB augmentation k{k} a{alpha:g}", _unit((db[near] * weights[..., None]).sum(1)), queries,
                 truth_arr, edits_arr)  # fmt: skip


if __name__ == "__main__":
    main()
