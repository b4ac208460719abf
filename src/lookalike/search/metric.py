"""A similarity learned on the collection itself: PCA whitening of its vectors.

Raw MobileNet vectors share a few dominant directions (what most photos have in common),
so two different pictures of one kind (the same design in two colours, two shots of a
beach) already score high. Whitening with the collection's own statistics (centre on
its mean, rotate onto its principal axes, scale each axis to unit variance, then
normalise) spreads what the collection has in common, so a score means "as alike as
copies are" in this collection, not "alike as photos go". It is the unsupervised half of
Radenović et al.'s learned whitening (Fine-tuning CNN Image Retrieval with No Human
Annotation, TPAMI 2018) and of Jégou and Chum's "negative evidences" whitening.

Measured with bench/lookalikes.py (look-alikes as hard negatives, 1,130 indexed
pictures): best pairwise F1 0.763 -> 0.838 and recall@1 0.952 -> 0.957 over the raw
cosine (the supervised variant from generated edits lifted recall@1 as much but F1 only
to 0.78; adding back part of the raw cosine kept recall and lost F1; see the README).

The raw vectors stay in the catalogue and in FAISS; the whitening is a small matrix
(dim x dim) kept with the index (:meth:`Whitening.to_text`) and applied when scores are
computed. :func:`due` is the policy for learning it again as the collection changes.
"""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from lookalike import colour, detail

MIN_VECTORS = 200  # fewer photos estimate a 1024-d covariance too poorly to help
SAMPLE = 50_000  # vectors the covariance is estimated from (ample for up to 1280 dims)
SHRINK = 0.05  # added to every variance, as a share of the mean one: tames the smallest axes
RELEARN_RATIO = 1.5  # learn again once the collection grew (or shrank) by this factor


@dataclass(frozen=True)
class Whitening:
    """x -> unit(P^T (x - mean)); ``vectors``: the collection's size when it was learned."""

    mean: np.ndarray  # (dim,)
    projection: np.ndarray  # (dim, rank)
    vectors: int

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Unit vectors of ``x`` (rows) in the whitened space, float32."""
        y = (np.asarray(x, np.float32) - self.mean) @ self.projection
        norms = np.linalg.norm(y, axis=1, keepdims=True)
        return np.ascontiguousarray(y / np.maximum(norms, 1e-12), np.float32)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def to_text(self) -> str:
        """Compact text (base64 of a compressed .npz) for the catalogue's key/value table."""
        buf = io.BytesIO()
        np.savez_compressed(buf, mean=self.mean, projection=self.projection, vectors=np.int64(self.vectors))
        return base64.b64encode(buf.getvalue()).decode("ascii")

    @classmethod
    def from_text(cls, text: str) -> Whitening:
        with np.load(io.BytesIO(base64.b64decode(text))) as d:
            return cls(d["mean"].astype(np.float32), d["projection"].astype(np.float32), int(d["vectors"]))

    @cached_property
    def version(self) -> str:
        """A short content hash: the key it is stored under, named by the manifest."""
        h = hashlib.sha256(self.mean.tobytes())
        h.update(self.projection.tobytes())
        return h.hexdigest()[:16]


def learn(chunks: Iterable[np.ndarray], total: int, seed: int = 0) -> Whitening:
    """The whitening of a collection of ``total`` vectors, given as row chunks (so a large
    collection is never held twice); estimated on up to :data:`SAMPLE` of them."""
    rng = np.random.default_rng(seed)
    keep = min(total, SAMPLE)
    chosen = np.zeros(total, bool)
    chosen[rng.choice(total, keep, replace=False)] = True
    picked, at = [], 0
    for chunk in chunks:
        picked.append(np.asarray(chunk, np.float64)[chosen[at : at + len(chunk)]])
        at += len(chunk)
    x = np.concatenate(picked)
    if len(x) < 2:
        raise ValueError("whitening needs at least two vectors")
    mean = x.mean(axis=0)
    cov = np.cov((x - mean).T)
    variances, axes = np.linalg.eigh(cov)
    variances, axes = variances[::-1], axes[:, ::-1]
    rank = int(np.sum(variances > 1e-6 * variances[0]))  # axes the sample spans
    variances, axes = variances[:rank], axes[:, :rank]
    projection = axes / np.sqrt(variances + SHRINK * variances.mean())
    return Whitening(mean.astype(np.float32), projection.astype(np.float32), total)


def due(learned_on: int | None, vectors: int) -> bool:
    """Whether to learn the whitening (again): never learned and :data:`MIN_VECTORS`
    reached, or the collection grew or shrank by :data:`RELEARN_RATIO` since."""
    if vectors < MIN_VECTORS:
        return False
    if not learned_on:
        return True
    return vectors >= RELEARN_RATIO * learned_on or vectors * RELEARN_RATIO <= learned_on


# The learned score also weighs the pixels: whitened cosine - PIXEL_WEIGHT x the pixel gap
# of the two images' colour signatures (median L*a*b* distance of their 16 x 16 cells, see
# lookalike.colour.pixel_gaps). Copies differ by 0-2.4 (95%: 14), the same design in other
# colours by 13-53 (median 26), while the features barely tell them apart. Chosen on
# bench/lookalikes.py's stored vectors (search: top 5 re-scored, recall@1 / best F1; dupes
# library: best pair F1): none 0.957 / 0.838, 0.801; 0.01: 0.983 / 0.894, 0.893;
# 0.02: 0.986 / 0.911, 0.907; 0.03: - , 0.911.
PIXEL_WEIGHT = 0.02
PIXELS_BEFORE_DETAIL = f"whitened+pixels{PIXEL_WEIGHT:g}"  # the space's name before the detail residual


# ... and so does the detail residual (lookalike.detail: the 90th percentile luma difference,
# 0-255, left once a copy's edit is undone), DETAIL_WEIGHT x its excess over DETAIL_FREE:
# another shot of one scene (a burst, a retake, a stereo pair) differs by ~18 (median), copies
# by ~1 (90%: 6.5). Chosen on bench/lookalikes.py's search pairs (best F1, top-10 re-scored):
# none 0.845; free 2 / weight 1: 0.889; 4 / 1: 0.889; 4 / 2: 0.894; 8 / 2: 0.89.
DETAIL_FREE = 4.0
DETAIL_WEIGHT = 2.0
DETAIL_CAP = np.inf  # full bench, weight / cap: 2 / inf F1 0.894, dupes P/R 0.765/0.945; 2 / 16 0.894,
# 0.768/0.925; 2 / 8 0.883, 0.759/0.886; 1 / 16 0.881, 0.785/0.884; 1 / 8 0.869, 0.799/0.869
# (none: 0.845, 0.812/0.848), each with the calibration of the time (no near-shot negatives)
# `dupes` asks more of a pair than search does: its residual weighs a difference in one place
# too (lookalike.detail.PATCH_FREE: another shot of the scene, where someone moved), so near-
# identical shots are not grouped as copies; search still ranks them as alike as they look, and
# the calibration is fitted on search's scores (weighing it there lost captioned copies: text
# recall@1 0.960 -> 0.822 on bench/lookalikes.py, and the fit failed). It also credits pixels
# that match (MATCHED_CREDIT below), which search does not.
# Calibration.space of scores weighing the pixel gap so (an index calibrated in the space
# before the residual existed weighs the pixels still, and learns again on its next run)
PIXELS = f"{PIXELS_BEFORE_DETAIL}+detail{DETAIL_WEIGHT:g}"


def pixel_gaps(
    a: Sequence[bytes | None],
    b: Sequence[bytes | None],
    fine: bool = True,
    local: bool = False,
    credit: bool = True,
) -> np.ndarray:
    """Pixel gaps of paired colour signatures, with their detail residual unless not
    ``fine`` (~200x cheaper: a lower bound of search's gaps; for `dupes`' see :func:`highest`);
    0 where either is missing: no evidence. ``local``: the residual weighs a difference in
    one place too, and pixels that match earn :data:`MATCHED_CREDIT` (unless not
    ``credit``), as `dupes` does."""
    known = [n for n, (x, y) in enumerate(zip(a, b, strict=True)) if x and y]
    out = np.zeros(len(a), np.float32)
    if known:
        out[known] = colour.pixel_gaps(*_lab_once([a[n] for n in known], [b[n] for n in known]))
    return with_detail(out, a, b, local, credit) if fine else out


def with_detail(
    colour_gaps: np.ndarray,
    a: Sequence[bytes | None],
    b: Sequence[bytes | None],
    local: bool = False,
    credit: bool = True,
) -> np.ndarray:
    """:func:`pixel_gaps` of pairs whose colour gaps (``pixel_gaps(a, b, fine=False)``)
    are at hand: those plus the detail residual, measured once more only where needed."""
    known = [n for n, (x, y) in enumerate(zip(a, b, strict=True)) if x and y]
    out = np.array(colour_gaps, np.float32)
    if known:
        out[known] = _with_detail(out[known], [a[n] for n in known], [b[n] for n in known], local, credit)
    return out


def _lab_once(a: Sequence[bytes], b: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """The L*a*b* cells of paired signatures, each distinct signature converted once (a
    photo is paired with many: its neighbours, a group's members)."""
    unique: dict[bytes, int] = {}
    at = np.array([unique.setdefault(bytes(s), len(unique)) for s in (*a, *b)])
    cells = colour.lab(list(unique))[at]
    return cells[: len(a)], cells[len(a) :]


def _with_detail(
    gaps: np.ndarray, a: Sequence[bytes], b: Sequence[bytes], local: bool = False, credit: bool = True
) -> np.ndarray:
    """Colour ``gaps`` of pairs plus their detail residual's weight; if ``local`` (and
    ``credit``), less :data:`MATCHED_CREDIT` for pairs whose pixels match once the edit is
    undone."""
    grids = [colour.detail_grid(x) for x in a], [colour.detail_grid(y) for y in b]
    left, spread = detail.compare(*grids, local, spread=local and credit)  # what the credit asks
    out = gaps + np.float32(DETAIL_WEIGHT) * np.clip(left - np.float32(DETAIL_FREE), 0, DETAIL_CAP)
    if local and credit:
        matched = (left < MATCHED_RESIDUAL) & (gaps < MATCHED_COLOUR) & (spread >= MATCHED_SPREAD)
        out -= np.float32(MATCHED_CREDIT) * matched
    return out


# `dupes` also credits a pair whose pixels match: residual (a difference in one place weighed)
# under MATCHED_RESIDUAL, colour gap under MATCHED_COLOUR, where the pictures vary. A caption
# across a picture moves its features (whitened cosine 0.03-0.10 against its original, under
# the copies cutoff) but not its pixels once the caption's rows are left out (residual 0.1-2);
# look-alikes rarely match so: another shot differs in one place, another colour scheme in
# colour, and two flat pictures (splash screens) match as anything flat does. Candidate pairs
# of bench/lookalikes.py's dupes library (24 nearest): all three hold for 3,362 of 6,095 true
# pairs and 30 of 29,793 others (one logo's red and black versions: relations leaves those
# out as recoloured). Its copies preset, pair precision /
# recall: none 0.993 / 0.876; credit 5 (a score 0.1 higher) 0.995 / 0.907 (captioned copies
# grouped with their original 0.65 -> 0.77); credit 3 0.995 / 0.904, 10 0.992 / 0.908;
# residual 1 or 3, colour 2, spread 4: as 5; spread 16 0.995 / 0.903; no spread guard 0.986 /
# 0.908 (two dark splash screens grouped). The edited and similar presets: unchanged.
MATCHED_RESIDUAL = 2.0
MATCHED_COLOUR = 1.0
MATCHED_SPREAD = 8.0  # ... where the pictures vary (luma standard deviation): flat ones match anything flat
MATCHED_CREDIT = 5.0


def gap_matrix(
    colours: Sequence[bytes | None],
    local: bool = False,
    scores: np.ndarray | None = None,
    floor: float | None = None,
) -> np.ndarray:
    """Pixel gaps between every two of ``colours`` (n x n; 0 where one is missing): each
    pair once, in blocks of :data:`PAIR_BLOCK`; the detail residual (weighing a difference
    in one place if ``local``) between the first :data:`DETAIL_AMONG` only (give them best
    first, as search gives its top hits; `dupes` measures it against a larger group's centre
    itself), the colour gap between all. Given the pairs' ``scores`` (n x n) and a ``floor``,
    a pair whose score cannot reach the floor once weighed so (:func:`highest`) keeps its
    colour gap alone: its score stays under the floor, only less far under it."""
    n = len(colours)
    out = np.zeros((n, n), np.float32)
    known = np.array([i for i, c in enumerate(colours) if c], np.int64)
    if len(known) > 1:
        cells = colour.lab([colours[i] for i in known])
        first, second = np.triu_indices(len(known), 1)
        for at in range(0, len(first), PAIR_BLOCK):
            a, b = first[at : at + PAIR_BLOCK], second[at : at + PAIR_BLOCK]
            gaps = colour.pixel_gaps(cells[a], cells[b])
            near = np.flatnonzero(known[b] < DETAIL_AMONG)  # known is ascending: a < b
            if scores is not None and floor is not None:
                pair_scores = scores[known[a[near]], known[b[near]]]
                reach = (highest if local else with_pixels)(pair_scores, gaps[near])
                near = near[~(reach < floor)]  # (a pair without scores is measured)
            left, right = [colours[known[i]] for i in a[near]], [colours[known[i]] for i in b[near]]
            gaps[near] = _with_detail(gaps[near], left, right, local)
            out[known[a], known[b]] = gaps
            out[known[b], known[a]] = gaps
    return out


DETAIL_AMONG = 16  # the detail residual costs ~0.7 ms a pair: a matrix measures it among these


PAIR_BLOCK = 4096  # pairs compared at once (~16 MB of cells)


def with_pixels(scores: np.ndarray | float, gaps: np.ndarray | float) -> np.ndarray:
    """Scores that weigh the pixel gap (see :data:`PIXEL_WEIGHT`)."""
    return np.asarray(scores, np.float32) - np.float32(PIXEL_WEIGHT) * np.asarray(gaps, np.float32)


def matched_lift() -> float:
    """The most a pair's score rises when its pixels match (`dupes`' scores, ``local``):
    the margin under a threshold from which a pair is worth examining."""
    return PIXEL_WEIGHT * MATCHED_CREDIT


def highest(scores: np.ndarray, colour_gaps: np.ndarray) -> np.ndarray:
    """The highest `dupes` score pairs can reach once their detail is measured, from their
    ``scores`` and colour gaps (:func:`pixel_gaps`, not ``fine``): the detail residual
    lowers a score, but pixels that match lift it."""
    lift = np.float32(matched_lift()) * (np.asarray(colour_gaps) < MATCHED_COLOUR)
    return with_pixels(scores, colour_gaps) + lift
