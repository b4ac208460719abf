"""bench/lookalikes.py's measurements: search (recall@1 per edit, best F1, reliability of
the probabilities, by halves of the families) and `dupes` through the CLI (pair precision
and recall by kind of false pair, copies grouped with their original).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np
from lookalike_data import EDITS, LOOKALIKES, OTHER_SIZE, WRONG, Dataset, K

# --- search: index, query, score --------------------------------------------------------


def index_folder(index_dir: Path, paths: list[Path], model: str, calibrate_sample: int | None) -> dict:
    """A fresh index of ``paths``; calibrated (automatically, else explicitly)."""
    from lookalike.api import Index
    from lookalike.indexer import IndexOptions
    from lookalike.search.calibration import Calibration

    shutil.rmtree(index_dir, ignore_errors=True)
    start = time.perf_counter()
    report = Index(index_dir).add([str(p) for p in paths], model=model, options=IndexOptions())
    total = time.perf_counter() - start
    out = {"indexed": report.indexed, "errors": report.errors, "seconds": total}
    out["indexing_seconds"] = report.seconds  # the rest of Index.add is its automatic calibration
    out["error_samples"] = [list(e) for e in report.error_samples[:5]]
    cal = Calibration.from_dict(Index(index_dir).manifest().calibration)
    how = "automatic (Index.add)"
    if calibrate_sample is not None or cal is None:
        start = time.perf_counter()
        sample = calibrate_sample or 200
        cal = Index(index_dir).calibrate(sample=sample)
        how = f"explicit (Index.calibrate, sample {sample}, as `lookalike calibrate`)"
        out["calibration_seconds"] = time.perf_counter() - start
    out["calibration"] = {**cal.to_dict(), "how": how}
    for level in (0.5, 0.9, 0.99, 0.999):
        out["calibration"][f"cosine_at_p{level:g}"] = cal.cosine_for(level)
    return out


@dataclass
class QueryRow:
    edit: str
    member: str
    rank: int  # 1-based rank of the original, 0 = not in top K
    score: float  # cosine to the original (-1 = not in top K)
    top_kind: str  # what the top hit is: original | sibling | artwork | distractor | none
    scores: np.ndarray  # of the top K hits
    kinds: np.ndarray  # of the top K hits
    probability: np.ndarray  # of the top K hits (nan when uncalibrated)
    full: bool  # K hits returned
    top: str  # the top hit: a member id, or the distractor's file name
    gave_way: np.ndarray  # of the top K hits: scored under their own similarity (search.neighbours)


def _kind(data: Dataset, member: str, path: str, owner: dict | None = None) -> str:
    """What a hit is to the query's original; in an index of copies (``owner``: the
    library's {path: (member, kind)}) any copy of the original counts as the original."""
    hit = owner[path][0] if owner and path in owner else data.member_of.get(path)
    if hit is None:
        return "distractor"
    if hit == member:
        return "original"
    return _relative(data, hit, member)


def _relative(data: Dataset, a: str, b: str) -> str:
    """What member ``a`` is to another member ``b``: a look-alike ``sibling`` (one design),
    a ``shot`` (near-identical shots of one scene) or unrelated ``artwork``."""
    family = data.family_of[a]
    if family != data.family_of[b]:
        return "artwork"
    return "shot" if family in data.shot_families else "sibling"


def run_search(
    data: Dataset, index_dir: Path, k: int, batch: int = 64, owner: dict | None = None
) -> tuple[list[QueryRow], float]:
    from lookalike.api import Index

    rows = []
    with Index(index_dir) as index:
        index.model()
        start = time.perf_counter()
        for at in range(0, len(data.queries), batch):
            chunk = data.queries[at : at + batch]
            for (edit, _, member), result in zip(
                chunk, index.search([q[1] for q in chunk], k=k), strict=True
            ):
                if result.error:
                    raise SystemExit(f"query {result.query} failed: {result.error}")
                kinds = np.array([_kind(data, member, h.path, owner) for h in result.hits])
                scores = np.array([h.score for h in result.hits], np.float64)
                prob = np.array([np.nan if h.probability is None else h.probability for h in result.hits])
                at_rank = np.flatnonzero(kinds == "original")
                rank = int(at_rank[0]) + 1 if len(at_rank) else 0
                top = result.hits[0].path if result.hits else ""
                top_id = data.member_of.get(top, Path(top).name)
                gave_way = np.array([h.score < h.alone - 1e-9 for h in result.hits], bool)
                rows.append(QueryRow(edit, member, rank, float(scores[rank - 1]) if rank else -1.0,
                                     str(kinds[0]) if len(kinds) else "none", scores, kinds, prob,
                                     len(result.hits) >= k, top_id, gave_way))  # fmt: skip
        seconds = time.perf_counter() - start
    return rows, seconds


def sibling_cosines(data: Dataset, index_dir: Path) -> dict:
    """Cosine between the originals of look-alike siblings, and from each original to its
    nearest other indexed picture (searched through the index, like any query)."""
    from lookalike.api import Index

    multi = [m for m in data.members if sum(x.family == m.family for x in data.members) > 1]
    pairs: dict[tuple[str, str], float] = {}
    nearest_other = {}
    with Index(index_dir) as index:
        results = index.search([data.original[m.id] for m in multi], k=K)
    for m, result in zip(multi, results, strict=True):
        for h in result.hits:
            kind = _kind(data, m.id, h.path)
            if kind in LOOKALIKES:
                key = tuple(sorted((m.id, data.member_of[h.path])))
                pairs[key] = max(pairs.get(key, -1.0), h.alone)
            elif kind != "original" and m.id not in nearest_other:
                nearest_other[m.id] = (h.alone, kind)
    by_family: dict[str, list[float]] = defaultdict(list)
    for (a, _), s in pairs.items():
        by_family[data.family_of[a]].append(s)
    values = np.array(list(pairs.values()))
    return {
        "pairs": {f"{a} ~ {b}": s for (a, b), s in sorted(pairs.items(), key=lambda kv: -kv[1])},
        "n_pairs_found": len(pairs),
        "n_pairs": sum(len(f.members) * (len(f.members) - 1) // 2 for f in data.families),
        "median": float(np.median(values)) if len(values) else float("nan"),
        "max": float(values.max()) if len(values) else float("nan"),
        "above_0.90": int(np.sum(values >= 0.90)),
        "by_family": {f: [min(v), max(v)] for f, v in sorted(by_family.items())},
    }


def best_f1(rows: list[QueryRow]) -> dict:
    """The threshold with the best pairwise F1 over every (query, indexed picture) pair; a
    pair is positive when the picture is the query's original. Pairs outside a query's
    top K count as below any threshold."""
    scores = np.concatenate([r.scores for r in rows])
    kinds = np.concatenate([r.kinds for r in rows])
    positive = kinds == "original"
    order = np.argsort(-scores, kind="stable")
    s, pos = scores[order], positive[order]
    tp, fp = np.cumsum(pos), np.cumsum(~pos)
    cut = np.r_[s[1:] != s[:-1], True]
    precision = tp / (tp + fp)
    recall = tp / len(rows)
    f1 = np.where(tp > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    i = int(np.argmax(np.where(cut, f1, -1.0)))
    threshold = float(s[i])
    false = Counter(kinds[(scores >= threshold) & ~positive].tolist())
    n_false = sum(false.values())
    kth = [r.scores[-1] for r in rows if r.full]
    return {
        "threshold": threshold,
        "f1": float(f1[i]),
        "precision": float(precision[i]),
        "recall": float(recall[i]),
        "false_pairs": n_false,
        **_false_kinds(false),
        "exact": bool(not kth or threshold > max(kth)),
    }


def pair_f1(rows: list[QueryRow], by: str = "scores") -> dict:
    """The best single-threshold F1 over every (query, hit) pair of the top K, where several
    hits of a query can be true (any copy of its original): recall counts the true pairs
    found there. ``by``: the hits' ``scores`` or their ``probability``."""
    scores = np.concatenate([getattr(r, by) for r in rows])
    true = np.concatenate([r.kinds for r in rows]) == "original"
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(true[order])
    precision, recall = tp / np.arange(1, len(order) + 1), tp / max(int(true.sum()), 1)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    i = int(np.argmax(f1))
    return {"f1": float(f1[i]), "precision": float(precision[i]), "recall": float(recall[i]),
            "threshold": float(scores[order][i])}  # fmt: skip


def _false_kinds(false: Counter) -> dict:
    """False pairs by kind (:data:`WRONG`), and the share of them that are look-alikes."""
    n = sum(false.values())
    return {
        "false_by_kind": {k: false.get(k, 0) for k in WRONG},
        "lookalike_share_of_false": sum(false.get(k, 0) for k in LOOKALIKES) / n if n else 0.0,
    }


def false_pairs_at(rows: list[QueryRow], threshold: float) -> dict:
    scores = np.concatenate([r.scores for r in rows])
    kinds = np.concatenate([r.kinds for r in rows])
    said = scores >= threshold
    tp = int(np.sum(said & (kinds == "original")))
    false = Counter(kinds[said & (kinds != "original")].tolist())
    n = sum(false.values())
    return {
        "threshold": threshold,
        "precision": tp / max(tp + n, 1),
        "recall": tp / max(len(rows), 1),
        "false_pairs": n,
        **_false_kinds(false),
    }


BUCKETS = ((0.5, 0.9), (0.9, 0.99), (0.99, 1.0))


def reliability(rows: list[QueryRow], family_of: dict[str, str] | None = None) -> dict:
    """The reliability table of ``rows``' probabilities; with ``family_of``, also how far
    off each half of the families is (:func:`_by_halves`)."""
    prob = np.concatenate([r.probability for r in rows])
    kinds = np.concatenate([r.kinds for r in rows])
    gave_way = np.concatenate([r.gave_way for r in rows])
    if np.all(np.isnan(prob)):
        return {"calibrated": False}
    true = kinds == "original"
    out: dict = {"calibrated": True, "buckets": []}
    for lo, hi in BUCKETS:
        inside = (prob >= lo) & ((prob < hi) if hi < 1 else (prob <= hi))
        n = int(inside.sum())
        out["buckets"].append({
            "range": [lo, hi], "pairs": n, "true": int(np.sum(inside & true)),
            "share_true": float(true[inside].mean()) if n else float("nan"),
            "mean_probability": float(prob[inside].mean()) if n else float("nan"),
            "false_lookalikes": int(np.sum(inside & np.isin(kinds, LOOKALIKES))),
            "gave_way": int(np.sum(inside & gave_way)),  # scored under their own similarity ...
            "gave_way_true": int(np.sum(inside & gave_way & true)),  # ... and true
        })  # fmt: skip
    out["true_pairs_below_0.5"] = int(np.sum(true & (prob < 0.5)))
    out["best_f1_over_probability"] = pair_f1(rows, "probability")
    out["originals_not_in_top_k"] = int(sum(r.rank == 0 for r in rows))
    if family_of:
        out["halves"] = _by_halves(rows, family_of)
    return out


def _by_halves(rows: list[QueryRow], family_of: dict[str, str]) -> list[dict]:
    """The reliability of each half of the picture families (split by a hash of the family
    name, so every run splits alike): its worst bucket's distance from its mean P, and the
    share true at P >= 0.9. What holds on the whole set because its halves err in opposite
    directions shows here."""
    out = []
    for half in (0, 1):
        part = [r for r in rows if zlib.crc32(family_of[r.member].encode()) % 2 == half]
        if not part:
            continue
        rel = reliability(part)
        prob = np.concatenate([r.probability for r in part])
        true = np.concatenate([r.kinds for r in part]) == "original"
        off = [abs(b["share_true"] - b["mean_probability"]) for b in rel["buckets"] if b["pairs"]]
        out.append({
            "queries": len(part),
            "worst_bucket_off_by": max(off) if off else float("nan"),
            "share_true_at_p0.9": float(true[prob >= 0.9].mean()) if np.any(prob >= 0.9) else float("nan"),
        })  # fmt: skip
    return out


def _recall(rows: list[QueryRow]) -> dict:
    return {
        "queries": len(rows),
        "recall_at_1": float(np.mean([r.rank == 1 for r in rows])) if rows else None,
    }


def summarize_search(rows: list[QueryRow], data: Dataset) -> dict:
    edited = [r for r in rows if r.edit in EDITS]
    jpeg = {name for name, e in EDITS.items() if not e.transparent}
    with_siblings = {m.id for f in data.families if len(f.members) > 1 for m in f.members}
    ranks = np.array([r.rank for r in edited])
    per_edit = {}
    pairs = best_f1(edited)
    for name in [*EDITS, OTHER_SIZE]:
        sel = [r for r in rows if r.edit == name]
        if not sel:
            continue
        wrong = Counter(r.top_kind for r in sel if r.rank != 1)
        per_edit[name] = {
            "queries": len(sel),
            "recall_at_1": float(np.mean([r.rank == 1 for r in sel])),
            "top1_wrong": {k: wrong.get(k, 0) for k in WRONG},
            "recall_at_threshold": float(np.mean([r.score >= pairs["threshold"] for r in sel])),
            "min_cosine": float(min(r.score for r in sel)),
        }
    wrong = Counter(r.top_kind for r in edited if r.rank != 1)
    failures = [
        {"edit": r.edit, "original": r.member, "rank": r.rank, "original_cosine": r.score,
         "top": r.top, "top_kind": r.top_kind, "top_cosine": float(r.scores[0]) if len(r.scores) else None}
        for r in rows if r.rank != 1
    ]  # fmt: skip
    return {
        "per_edit": per_edit,
        "recall_at_1": float(np.mean(ranks == 1)),
        "top1_wrong": {k: wrong.get(k, 0) for k in WRONG},
        "map": float(np.mean(np.where(ranks > 0, 1.0 / np.maximum(ranks, 1), 0.0))),
        "not_in_top_k": int(np.sum(ranks == 0)),
        "best_f1": pairs,
        "at_copies_preset": false_pairs_at(edited, 0.90),
        "reliability": reliability(edited, data.family_of),
        "top1_failures": failures,
        "subsets": {
            "originals with siblings": _recall([r for r in edited if r.member in with_siblings]),
            "singletons": _recall([r for r in edited if r.member not in with_siblings]),
            "opaque": _recall([r for r in edited if r.member not in data.alpha]),
            "transparent": _recall([r for r in edited if r.member in data.alpha]),
            "transparent, JPEG copies (flattened)": _recall(
                [r for r in edited if r.member in data.alpha and r.edit in jpeg]
            ),
            "transparent, copies kept transparent": _recall(
                [r for r in edited if r.member in data.alpha and r.edit not in jpeg]
            ),
        },
    }


# --- dupes through the CLI ----------------------------------------------------------------


NOTHING_FOUND = 3  # lookalike's exit status for "ran, found no duplicates"


LARGER_VERSION = "other_size"  # a package's larger rendering of the picture: rightly kept


def _kept(groups: list[dict], library: dict[str, tuple[str, str]], original_of: dict[str, str]) -> dict:
    """What each group keeps, where it holds the original of the picture most of its
    members are copies of: that original (or the picture's larger version), or which copy."""
    kept: Counter = Counter()
    for g in groups:
        files = [os.path.realpath(p) for p in [g["keep"], *(d["path"] for d in g["duplicates"])]]
        pictures = Counter(library[f][0] for f in files if f in library)
        if not pictures:
            continue
        picture = pictures.most_common(1)[0][0]
        if original_of.get(picture) not in files:
            continue
        _, kind = library.get(files[0], (None, "a distractor"))
        kept["original" if kind in ("original", LARGER_VERSION) else kind] += 1
    return {"kept": dict(kept.most_common())}


def run_dupes(
    index_dir: Path, library: dict[str, tuple[str, str]], data: Dataset, preset: str | None, *extra: str
) -> dict:
    cmd = [sys.executable, "-m", "lookalike.cli", "dupes", "--index", str(index_dir), "--json", *extra]
    if preset:
        cmd += ["--preset", preset]
    start = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if run.returncode not in (0, NOTHING_FOUND):
        raise SystemExit(f"{' '.join(cmd)} failed:\n{run.stderr}")
    groups = json.loads(run.stdout)["groups"] if run.stdout.strip() else []

    owner = {path: m for path, (m, _) in library.items()}

    def label(path: str) -> str:
        return owner.get(os.path.realpath(path)) or owner.get(path) or f"distractor:{path}"

    predicted = set()
    for g in groups:
        files = [g["keep"], *(d["path"] for d in g["duplicates"])]
        predicted.update(tuple(sorted(p)) for p in combinations(files, 2))
    by_member: dict[str, list[str]] = defaultdict(list)
    for path, m in owner.items():
        by_member[m].append(path)
    truth = sum(len(v) * (len(v) - 1) // 2 for v in by_member.values())
    tp = 0
    false: Counter = Counter()
    for a, b in predicted:
        la, lb = label(a), label(b)
        if la == lb:
            tp += 1
        elif la.startswith("distractor:") or lb.startswith("distractor:"):
            false["distractor"] += 1
        else:
            false[_relative(data, la, lb)] += 1
    # per copy kind: share of (original, copy) pairs put in one group
    group_of = {}
    for n, g in enumerate(groups):
        for p in [g["keep"], *(d["path"] for d in g["duplicates"])]:
            group_of[os.path.realpath(p)] = n
    per_kind: dict[str, list[bool]] = defaultdict(list)
    original_of = {m: path for path, (m, kind) in library.items() if kind == "original"}
    for path, (m, kind) in library.items():
        if kind == "original":
            continue
        original = original_of[m]
        g = group_of.get(path)
        per_kind[kind].append(g is not None and g == group_of.get(original))
    return {
        **_kept(groups, library, original_of),
        "preset": " ".join([preset or "default", *extra]),
        "note": run.stderr.strip(),
        "groups": len(groups),
        "predicted_pairs": len(predicted),
        "true_pairs": truth,
        "precision": tp / len(predicted) if predicted else 1.0,
        "recall": tp / truth if truth else 0.0,
        **_false_kinds(false),
        "grouped_with_original": {k: float(np.mean(v)) for k, v in per_kind.items()},
        "seconds": seconds,
    }
