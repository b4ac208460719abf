"""Scores that mean the same across models and descriptors: cosine -> P(same photo).

Each index fits its own mapping on its own collection (:func:`fit`): a sample of its
photos gets the edits of :mod:`lookalike.search.edits` (what a copy of a photo
typically went through); the cosine between an edit and its original is a "same photo"
example, the cosine between a photo and its nearest *other* indexed photos a "different
photo" example - leaving out the collection's own copies of it (the same bytes, or the
same picture at thumbnail level), which a real library has and which would teach that
copies differ - and, where scores weigh the pixels, near-identical shots made of it (the
bursts and retakes a library holds, which its nearest other photos rarely are).
A logistic curve p = 1 / (1 + exp(-(a cosine + b))) is fitted with both kinds weighted
equally, so p is the probability of "same photo" at even prior odds.
Duplicate presets are then probability levels (``dupes --min-probability``) that mean
the same whatever the model or descriptor.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from lookalike import colour
from lookalike.errors import CalibrationError
from lookalike.search import metric
from lookalike.search.edits import EDITS, SHOTS, edited_copies

if TYPE_CHECKING:
    from lookalike.storage.catalogue import FileRow
    from lookalike.storage.store import Store

MIN_SAMPLE = 5
DEFAULT_SAMPLE = 200  # photos edited for `lookalike calibrate`
AUTO_SAMPLE = 50  # ... and for the calibration an index makes of itself (400 edits: ~10 s)
AUTO_CALIBRATE = 200  # an index with this many photos calibrates itself once
NEIGHBOURS = 10  # "different photo" examples per sampled photo: its nearest others
log = logging.getLogger(__name__)
# Image bytes -> (unit vectors of the decodable ones, per-image error or None[, their colour
# signatures]), as Index.embed (Index.embed_with_colours).
EmbedBytes = Callable[[list[bytes]], tuple]
# Image bytes -> (vectors of the decodable ones, their colour signatures or None).
EmbedDecodable = Callable[[list[bytes]], tuple[np.ndarray, list[bytes | None] | None]]


@dataclass
class Calibration:
    """p(same photo | cosine) = 1 / (1 + exp(-(a cosine + b)))."""

    a: float
    b: float
    positives: int
    negatives: int
    photos: int
    space: str = "cosine"  # fitted on the raw "cosine", "whitened" or metric.PIXELS (search.metric)
    shot_weight: float | None = None  # what a made shot weighed (SHOT_WEIGHT; None: not used, or 1)

    @property
    def pixels(self) -> bool:
        """Whether the scores it maps weigh the pixel gap (:data:`metric.PIXEL_WEIGHT`)."""
        return self.space in (metric.PIXELS, metric.PIXELS_BEFORE_DETAIL)

    def probability(self, cosine: np.ndarray | float) -> np.ndarray | float:
        z = self.a * np.asarray(cosine, np.float64) + self.b
        p = 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))
        return float(p) if np.ndim(p) == 0 else p

    @property
    def usable(self) -> bool:
        """Whether P(same) rises with cosine, as any fit :func:`fit` accepts does."""
        return self.a > 0

    def cosine_for(self, probability: float) -> float:
        """The cosine at which ``probability`` is reached (a duplicate threshold)."""
        if not 0.0 < probability < 1.0:
            raise CalibrationError("a probability level must be strictly between 0 and 1")
        if not self.usable:
            raise CalibrationError("this calibration does not rise with cosine; recalibrate")
        return (math.log(probability / (1 - probability)) - self.b) / self.a

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> Calibration | None:
        """The stored calibration; None when there is none, or only a failed attempt, or
        (from older versions) a curve that falls with cosine."""
        if not d or "a" not in d:
            return None
        cal = cls(
            **{k: d[k] for k in ("a", "b", "positives", "negatives", "photos")},
            space=d.get("space", "cosine"),
            shot_weight=d.get("shot_weight"),
        )
        return cal if cal.usable else None


def among_rivals(p: np.ndarray, same: np.ndarray) -> np.ndarray:
    """P(same photo) of each of one query's hits, given the others (the neighbourhood).

    ``p`` is each hit's own calibrated probability (at even odds), ``same[i, j]`` the
    probability that hits i and j are themselves one picture. Two hits that are not one
    picture cannot both be the query's: they are rivals, and a hit's odds are shared with
    its rivals' (o_i / (1 + o_i + sum_j o_j (1 - same_ij)), o = p / (1 - p)). Alone, or
    among its own copies, a hit keeps its probability; beside an equally close look-alike
    (the same design in another colour, the next frame) both fall towards 1/2. Search
    lowers a hit's score to the level this gives it among the likelier hits that are other
    pictures (:func:`lookalike.search.neighbours._give_way`).
    """
    p = np.clip(np.asarray(p, np.float64), 0.0, 1.0 - 1e-12)
    odds = p / (1.0 - p)
    rivals = odds[None, :] * (1.0 - np.asarray(same, np.float64))
    np.fill_diagonal(rivals, 0.0)
    return odds / (1.0 + odds + rivals.sum(axis=1))


def under_the_likeliest(p_top: float, same: np.ndarray) -> np.ndarray:
    """The most another hit can be the query's, beside the likeliest hit (P ``p_top``):
    it is the query's together with that hit, which needs the two to be one picture
    (``same``: how likely they are), or without it, which leaves 1 - p_top. So
    P <= p_top * same + (1 - p_top): a sibling design one picture with its original at
    0.95 cannot be 0.99 likely once the original is 0.999 likely."""
    p_top = min(max(float(p_top), 0.0), 1.0)
    return p_top * np.asarray(same, np.float64) + (1.0 - p_top)


def _edited_or_none(data: bytes) -> tuple[list[bytes], list[bytes]] | None:
    try:
        return edited_copies(data)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def fit_logistic(
    positives: np.ndarray, negatives: np.ndarray, l2: float = 1e-7, negative_weights: np.ndarray | None = None
) -> tuple[float, float]:
    """(a, b) of a class-balanced logistic regression on one feature, by Newton's method.

    The targets are Platt's, (N+ + 1) / (N+ + 2) and 1 / (N- + 2), not 1 and 0 (Platt,
    Probabilistic Outputs for Support Vector Machines, 1999): a few hundred examples that
    happen to separate cleanly do not make the curve a step. Measured on
    bench/lookalikes.py (search index, 50 photos sampled): share true at P >= 0.99 0.961 ->
    0.975, at [0.9, 0.99) 0.779 -> 0.915 (mean P 0.959), at [0.5, 0.9) 0.600 -> 0.797 (0.745).
    ``negative_weights`` weigh the negatives against each other (all 1 by default); the
    two classes weigh the same whatever they are."""
    x = np.concatenate([positives, negatives]).astype(np.float64)
    y = np.concatenate(
        [
            np.full(len(positives), (len(positives) + 1) / (len(positives) + 2)),
            np.full(len(negatives), 1 / (len(negatives) + 2)),
        ]
    )
    among = np.ones(len(negatives)) if negative_weights is None else np.asarray(negative_weights, np.float64)
    w = np.concatenate([np.full(len(positives), 0.5 / len(positives)), 0.5 * among / among.sum()])
    X = np.stack([x, np.ones_like(x)], axis=1)
    theta = np.zeros(2)
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-np.clip(X @ theta, -50, 50)))
        grad = X.T @ (w * (p - y)) + l2 * np.array([theta[0], 0.0])
        hess = (X * (w * p * (1 - p))[:, None]).T @ X + l2 * np.diag([1.0, 0.0]) + 1e-12 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.abs(step).max() < 1e-9:
            break
    return float(theta[0]), float(theta[1])


@dataclass
class Examples:
    """Raw vectors of sampled photos (``stored``, as indexed), of their edited copies
    (``copies``, each of ``stored[owner]``) and of the shots made of them (``shots``):
    embedded once, scored in any space."""

    ids: list[int]
    stored: np.ndarray
    copies: np.ndarray
    owner: np.ndarray
    copy_colours: list[bytes | None] | None = None  # colour signatures of the copies ...
    stored_colours: list[bytes | None] | None = None  # ... and of the photos, as indexed
    shots: np.ndarray | None = None  # vectors of near-identical shots made of the photos ...
    shot_owner: np.ndarray | None = None  # ... each of stored[shot_owner] ...
    shot_colours: list[bytes | None] | None = None  # ... and their colour signatures


Space = Callable[[np.ndarray], np.ndarray]  # vectors -> the unit vectors scores are cosines of


def pictures_per_photo() -> int:
    """How many pictures calibration makes of each sampled photo (its edits and shots)."""
    return len(EDITS) + len(SHOTS)


def gather(sample: list[tuple[int, bytes, np.ndarray]], embed: EmbedDecodable) -> Examples:
    """Embed the edits and shots of ``sample``: (id, file bytes, stored vector) of indexed
    photos. ``embed`` gives the decodable ones' vectors, and their colour signatures or None."""
    ids, stored = [], []
    copies, shots = _Made(), _Made()

    def add(fid: int, vector: np.ndarray, edits: list[bytes], vectors: np.ndarray, signatures) -> None:
        signatures = signatures if signatures is not None else [None] * len(vectors)
        copies.add(len(ids), vectors[: len(edits)], signatures[: len(edits)])
        shots.add(len(ids), vectors[len(edits) :], signatures[len(edits) :])
        ids.append(fid)
        stored.append(vector)

    waiting: list[tuple[int, np.ndarray, list[bytes], list[bytes]]] = []

    def flush() -> None:
        pictures = [p for _, _, edits, generated in waiting for p in edits + generated]
        vectors, signatures = embed(pictures)
        if len(vectors) == len(pictures):
            at = 0
            for fid, vector, edits, generated in waiting:
                n = len(edits) + len(generated)
                add(fid, vector, edits, vectors[at : at + n], signatures and signatures[at : at + n])
                at += n
        else:  # made here, so decodable: but not a guess. Each photo alone, the bad one left out
            for fid, vector, edits, generated in waiting:
                vectors, signatures = embed(edits + generated)
                if len(vectors) == len(edits) + len(generated):
                    add(fid, vector, edits, vectors, signatures)
        waiting.clear()

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # Pillow lets go of the GIL: edits are
        made = pool.map(_edited_or_none, [data for _, data, _ in sample])  # made in parallel, and
        for (fid, _, vector), made_of in zip(sample, made, strict=True):  # while others embed
            if made_of is None:
                continue  # a file that decodes no more (truncated since, ...): not an example
            waiting.append((fid, vector, *made_of))
            if sum(len(e) + len(g) for _, _, e, g in waiting) >= EMBED_AT_ONCE:
                flush()
        if waiting:
            flush()
    if len(ids) < MIN_SAMPLE:
        raise CalibrationError(
            f"calibration needs at least {MIN_SAMPLE} readable indexed photos, found {len(ids)}"
        )
    shot_vectors, shot_owner = shots.arrays()
    return Examples(
        ids, np.stack(stored), *copies.arrays(), copy_colours=copies.colours,
        shots=shot_vectors, shot_owner=shot_owner, shot_colours=shots.colours,
    )  # fmt: skip


# Pictures embedded per call, several photos' at once: 3 photos' 30 pictures run padded to a
# batch of 32 where one photo's 10 ran padded to 16 (calibration on the index_speed copies set:
# 7.6 -> 6.6 s).
EMBED_AT_ONCE = 30


@dataclass
class _Made:
    """Pictures made of sampled photos, as they are embedded: vectors, owners, signatures."""

    vectors: list[np.ndarray] = field(default_factory=list)
    owner: list[int] = field(default_factory=list)
    colours: list[bytes | None] = field(default_factory=list)

    def add(self, of: int, vectors: np.ndarray, colours: list[bytes | None]) -> None:
        self.vectors.append(vectors)
        self.owner.extend([of] * len(vectors))
        self.colours.extend(colours)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.concatenate(self.vectors), np.array(self.owner, np.int64)


def fit_examples(
    examples: Examples,
    neighbours: Callable[..., list[list[float]]],
    space: Space | None = None,
    pixels: bool = False,
) -> Calibration:
    """Fit on ``examples``, scored in ``space`` (None: the raw cosine), weighing the
    pixel gap if ``pixels`` (see :data:`lookalike.search.metric.PIXEL_WEIGHT`);
    ``neighbours`` gives, per (id, raw vector), the scores (the same way) of its nearest
    indexed photos of other content."""
    mapped = space or (lambda v: v)
    stored, copies, known = mapped(examples.stored), mapped(examples.copies), examples.stored_colours
    positives = _scores(copies, examples.owner, examples.copy_colours, stored, known, pixels)
    edits = [copies[examples.owner == n] for n in range(len(examples.ids))]  # in the space
    negatives = [s for row in neighbours(examples.ids, examples.stored, NEIGHBOURS, edits) for s in row]
    weights = [1.0] * len(negatives)
    told = _told_apart(examples) if pixels else []
    if told:  # (see edits.SHOTS)
        shots, owner = mapped(examples.shots[told]), examples.shot_owner[told]
        colours = [examples.shot_colours[i] for i in told]
        negatives += _scores(shots, owner, colours, stored, known, pixels).tolist()
        weights += [SHOT_WEIGHT] * len(told)
    if not negatives:
        raise CalibrationError("calibration needs other photos in the index to compare with")
    a, b = fit_logistic(positives, np.array(negatives), negative_weights=np.array(weights))
    if not a > 0:  # a falling curve would call the least similar pairs copies
        raise CalibrationError(
            f"calibration failed: copies score no higher than other photos here (edited copies: median "
            f"cosine {np.median(positives):.3f}; nearest other photos: {np.median(negatives):.3f}), so "
            "cosine cannot be read as a probability on this collection; scores stay uncalibrated"
        )
    kind = "cosine" if space is None else metric.PIXELS if pixels else "whitened"
    shot_weight = SHOT_WEIGHT if pixels else None  # the rule in force, shots told apart or not
    return Calibration(a, b, len(positives), len(negatives), len(examples.ids), kind, shot_weight)


# What a made shot weighs among a photo's "different photo" examples, against one of its
# nearest other photos (1). The shots are the prior that a library holds bursts and retakes;
# the ones it does hold are among those nearest photos already, measured. At 1 (two shots
# per photo beside its ten nearest), bench/lookalikes.py's hits at P in [0.5, 0.9) were
# true 0.90 (search index) and 0.89 (dupes library) of the time at mean P 0.77 and 0.75:
# under-confident by more than 0.1, on each of 4 calibration samples. At 1/3: 0.83-0.85 at
# 0.79, 0.81-0.83 at 0.77; [0.9, 0.99) 0.97-0.98 at 0.96; P >= 0.9 true 0.985-0.987 (and in
# the full run, with search's rival level moved to match: README, "This stop").
SHOT_WEIGHT = 1 / 3


def _told_apart(examples: Examples) -> list[int]:
    """The shots whose detail residual against their photo can be measured: both carry the
    luma grid (a photo indexed before it existed has none, and its shots would score as
    copies do)."""
    if examples.shots is None or not examples.shot_colours or not examples.stored_colours:
        return []
    owners = examples.stored_colours
    return [
        i
        for i, (sig, o) in enumerate(zip(examples.shot_colours, examples.shot_owner, strict=True))
        if colour.detail_grid(sig) and colour.detail_grid(owners[o])
    ]


def _scores(made: np.ndarray, owner: np.ndarray, colours: list | None, stored: np.ndarray,
            stored_colours: list | None, pixels: bool) -> np.ndarray:  # fmt: skip
    """Scores of pictures made of sampled photos against their photo (``stored[owner]``),
    weighing the pixel gap of their signatures if ``pixels``."""
    scores = np.einsum("ij,ij->i", made, stored[owner])
    if pixels and colours and stored_colours:
        scores = metric.with_pixels(scores, metric.pixel_gaps(colours, [stored_colours[o] for o in owner]))
    return scores


def fit(
    sample: list[tuple[int, bytes, np.ndarray]],
    embed: Callable[[list[bytes]], np.ndarray],
    neighbours: Callable[..., list[list[float]]],
) -> Calibration:
    """Fit on ``sample`` (see :func:`gather`) in the raw cosine."""
    return fit_examples(gather(sample, lambda datas: (embed(datas), None)), neighbours)


CANDIDATES = 50  # raw nearest neighbours re-scored in a learned space for "different photo" examples


EDIT_MIN_SIDE = 256  # photos edited for examples: a thumbnail's half size is no copy seen in the wild
SCAN = 4  # files read per photo wanted, at most, looking for ones that large


def _side(data: bytes) -> int:
    try:
        with Image.open(io.BytesIO(data)) as im:
            return min(im.size)
    except (OSError, ValueError, Image.DecompressionBombError):
        return 0


def _pick(store: Store, sample: int, seed: int) -> list[tuple[int, bytes, np.ndarray]]:
    """Up to ``sample`` photos at random (``seed``), still readable and unchanged since
    they were indexed (same SHA-256), so an edit compares with the vector stored for it;
    photos of at least :data:`EDIT_MIN_SIDE` pixels first (thumbnails fill in)."""
    known = store.catalogue.known().items()
    rows = [(k.id, path, k.content_hash) for path, k in known if k.status == "ok"]
    large: list[tuple[int, bytes]] = []
    small: list[tuple[int, bytes]] = []
    for n, i in enumerate(np.random.default_rng(seed).permutation(len(rows))):  # unreadable: skipped
        if len(large) == sample or n >= SCAN * sample:
            break
        fid, path, digest = rows[i]
        try:
            data = Path(path).read_bytes()
        except OSError:
            continue
        if digest is not None and hashlib.sha256(data).hexdigest() != digest:
            continue
        (large if _side(data) >= EDIT_MIN_SIDE else small).append((fid, data))
    picked = (large + small)[:sample]
    ids, vecs = store.catalogue.load_vectors([fid for fid, _ in picked])
    vector_of = dict(zip(ids.tolist(), vecs, strict=True))
    return [(fid, data, vector_of[fid]) for fid, data in picked if fid in vector_of]


SAME_VECTOR = 0.995  # as alike as a re-save of one file: a copy, whatever else it is
EXPLAINED = 0.5  # an edit of a photo closing this share of its gap to a neighbour: a copy of it


def _neighbours(store: Store, space: Space | None, pixels: bool = False):
    """Per (id, raw vector): scores in ``space`` of its nearest indexed photos that are not
    copies of it, among its raw nearest :data:`CANDIDATES`. A copy is the same bytes or
    picture (:func:`_own_copy`), a neighbour that one of the photo's generated ``edits``
    (already in ``space``) matches much better than the photo itself does (the collection's
    own gray, cropped or mirrored copy of it: the gray edit lands next to it), or one whose
    pixels differ from the photo's no more than a copy's do (:func:`_own_copies`: its
    captioned or cropped copy). With ``pixels``, the scores weigh the pixel gap of the two
    photos' colour signatures."""
    mapped = space or (lambda v: v)

    def neighbours(
        fids: list[int], vectors: np.ndarray, k: int, edits: list[np.ndarray] | None = None
    ) -> list[list[float]]:
        _, found = store.vectors.search(vectors, CANDIDATES)
        ids, raw = store.catalogue.load_vectors(np.unique(found[found >= 0]))
        at = {int(i): n for n, i in enumerate(ids)}
        candidates = mapped(raw)
        scores = mapped(vectors) @ candidates.T if len(ids) else np.zeros((len(fids), 0))
        rows = store.catalogue.rows(set(at) | set(fids))
        owner, kept, pairs = [], [], []  # the "different photo" pairs: query, score, colours
        for q, (row_i, fid) in enumerate(zip(found, fids, strict=True)):
            me = rows.get(fid)
            explained = (edits[q] @ candidates.T).max(axis=0) if edits is not None and len(edits[q]) else None
            for i in (int(i) for i in row_i if int(i) in at):
                sc = float(scores[q, at[i]])
                if sc >= SAME_VECTOR or (
                    explained is not None and explained[at[i]] - sc >= EXPLAINED * (1.0 - sc)
                ):
                    continue
                if (them := rows.get(i)) is not None and not _own_copy(me, them):
                    owner.append(q)
                    kept.append(sc)
                    pairs.append((me.colour if me is not None else None, them.colour))
        weighed = np.asarray(kept, np.float32)
        if pairs:  # every pair's colour gap at once, then the detail of the nearest
            mine, theirs = zip(*pairs, strict=True)
            rough = weighed
            if pixels:
                rough = metric.with_pixels(weighed, metric.pixel_gaps(mine, theirs, fine=False))
            near = _nearest(np.asarray(owner), rough, DETAILED * k)  # the detail only lowers a score
            mine, theirs = [mine[i] for i in near], [theirs[i] for i in near]
            gaps = metric.pixel_gaps(mine, theirs)
            other = ~_own_copies(mine, theirs, gaps)
            near, gaps = near[other], gaps[other]
            owner = [owner[i] for i in near]
            weighed = metric.with_pixels(weighed[near], gaps) if pixels else weighed[near]
        out: list[list[float]] = [[] for _ in fids]
        for q, sc in zip(owner, weighed.tolist(), strict=True):
            out[q].append(sc)
        return [sorted(others, reverse=True)[:k] for others in out]

    return neighbours


# A neighbour this close in pixels (colour gap + detail residual, metric.pixel_gaps) is a copy.
# Measured on the calibration of bench/lookalikes.py's dupes library (each original beside 8
# copies; 50 photos sampled): of 2,263 neighbours the thumbnail rule (_own_copy) let through,
# 82 were copies (20 captioned, 3 cropped: gaps 0-12, 90% <= 9.2); at <= 10, 72 of them are
# left out, with 1 of 136 look-alikes (two frames of one street scene, 2.4) and none of 2,045
# other photos (the nearest at 13.4).
OWN_COPY_GAP = 10.0


def _own_copies(mine: list[bytes | None], theirs: list[bytes | None], gaps: np.ndarray) -> np.ndarray:
    """Which pairs of colour signatures, ``gaps`` apart in pixels, are the same picture: the
    gap is no more than copies show (:data:`OWN_COPY_GAP`), and they are not a transparent
    design's light and dark versions. Where a signature is missing the gap is no evidence
    (0), and the pair is not called a copy by it."""
    pairs = zip(mine, theirs, strict=True)
    told = np.array([bool(a) and bool(b) and not colour.light_and_dark(a, b) for a, b in pairs], bool)
    return told & (np.asarray(gaps) <= OWN_COPY_GAP)


DETAILED = 2  # x the examples wanted: a photo's nearest others (by colour gap) whose detail is measured


def _nearest(owner: np.ndarray, score: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` highest ``score`` of each ``owner`` (ascending)."""
    order = np.lexsort((-score, owner))
    starts = np.searchsorted(owner[order], owner[order], side="left")
    return np.sort(order[np.arange(len(order)) - starts < n])


def calibrate_store(
    store: Store, embed: EmbedBytes, sample: int = DEFAULT_SAMPLE, seed: int = 0
) -> Calibration:
    """Learn the collection's similarity and fit P(same photo) in it; record both.

    The whitening (:mod:`lookalike.search.metric`) is learned from every stored vector once
    the index holds :data:`~lookalike.search.metric.MIN_VECTORS`; the calibration is
    fitted on up to ``sample`` photos (see :func:`_pick`): their edits are "same photo"
    examples, their nearest neighbours that are not copies of them "different photo" ones.
    When the whitened scores cannot be calibrated, the raw cosine is (and recorded so).
    ``embed`` embeds image bytes as the index does (its model and descriptor).
    """
    examples = gather(_pick(store, sample, seed), _decodable(embed))
    n = store.vectors.ntotal
    whitening = None
    if n >= metric.MIN_VECTORS:
        ids = store.catalogue.vector_ids()
        whitening = metric.learn((v for _, v in store.catalogue.iter_vectors(ids)), len(ids), seed)
        try:
            rows = store.catalogue.rows(set(examples.ids))
            examples.stored_colours = [rows[i].colour if i in rows else None for i in examples.ids]
            neighbours = _neighbours(store, whitening.apply, pixels=True)
            cal = fit_examples(examples, neighbours, whitening.apply, pixels=True)
        except CalibrationError as exc:
            log.warning("learned similarity not used: %s", exc)
            whitening = None
    if whitening is None:
        cal = fit_examples(examples, _neighbours(store, None))
    store.set_learned(whitening, cal.to_dict(), n)
    return cal


def _decodable(embed: EmbedBytes) -> EmbedDecodable:
    def embed_decodable(datas: list[bytes]) -> tuple[np.ndarray, list[bytes | None] | None]:
        vectors, errors, *colours = embed(datas)
        return vectors[: len(datas) - sum(e is not None for e in errors)], (colours[0] if colours else None)

    return embed_decodable


SAME_PICTURE_CHROMA, SAME_PICTURE_LAYOUT = 0.1, 0.9  # thumbnails this alike: a copy, whatever its cosine


def _own_copy(me: FileRow | None, them: FileRow) -> bool:
    """Whether an indexed neighbour is a copy of a sampled photo, not a "different photo"
    example: the same bytes, or the same picture at thumbnail level (colours and light/dark
    layout alike, or one of them grayscale with the same layout: a re-encode, resize, mirror
    or grayscale version already in the collection)."""
    if me is None:
        return True
    if me.content_hash is not None and me.content_hash == them.content_hash:
        return True
    if not me.colour or not them.colour or colour.light_and_dark(me.colour, them.colour):
        return False
    rel = colour.compare(me.colour, them.colour)
    return (rel.gray or rel.chroma <= SAME_PICTURE_CHROMA) and rel.layout >= SAME_PICTURE_LAYOUT


def auto_calibrate(store: Store, embed: EmbedBytes) -> Calibration | None:
    """The learning and calibration an index makes of itself at the end of an indexing run.

    Once it holds :data:`AUTO_CALIBRATE` photos and has no usable calibration, whatever
    the run indexed (one killed during the calibration resumes with nothing to index,
    and must calibrate still), and again whenever the collection grew or shrank enough
    for its learned similarity to be out of date (:func:`lookalike.search.metric.due`), or
    when it was learned by a version whose scores did not weigh the pixels, or whose made
    shots weighed otherwise (:data:`SHOT_WEIGHT`).
    A refusal is logged and recorded, and tried again only when the index has doubled
    (uncalibrated) or changed as much again as learning needs (calibrated: the old state
    stays in force meanwhile).
    """
    state = store.manifest.calibration or {}
    n = store.vectors.ntotal
    cal = Calibration.from_dict(state)
    calibrated = cal is not None
    learned = store.manifest.learned or {}
    learned_on = max(learned.get("vectors") or 0, learned.get("tried") or 0) or None
    # learned before scores weighed the pixels so, or shots as now (and not tried again since)
    shots_otherwise = calibrated and cal.space == metric.PIXELS and cal.shot_weight != SHOT_WEIGHT
    outdated = calibrated and (cal.space not in ("cosine", metric.PIXELS) or shots_otherwise)
    older = outdated and not learned.get("tried")
    if calibrated and not older and not metric.due(learned_on, n):
        return None
    if not calibrated and n < max(AUTO_CALIBRATE, 2 * state.get("failed_at", 0)):
        return None
    try:
        return calibrate_store(store, embed, AUTO_SAMPLE, 0)
    except (ValueError, OSError) as exc:  # CalibrationError, or the files changed meanwhile
        log.warning("score calibration skipped: %s", exc)
        if not calibrated:
            store.set_calibration({"failed_at": n, "reason": str(exc)})  # again at 2x
        else:
            store.note_learning_tried(n)  # not again on every run: when due from here
        return None
