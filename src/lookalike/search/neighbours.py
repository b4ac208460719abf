"""Nearest neighbours of query vectors, resolved to catalogue rows."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from lookalike.errors import CalibrationError, InvalidArgument, LookalikeError
from lookalike.fsutil import path_problem
from lookalike.search import fine, metric
from lookalike.search.calibration import Calibration, among_rivals, under_the_likeliest
from lookalike.search.presets import cutoffs_of, held_score
from lookalike.search.relations import COPY, RECOLOURED, SIMILAR, recoloured, relation
from lookalike.storage.catalogue import FileRow
from lookalike.storage.store import Store


@dataclass
class Hit:
    """One neighbour: the indexed file and how alike it is to the query.

    ``similarity`` is the pair's own score (a cosine in the index's learned space, less the
    pixel gap: under -1 for pictures far apart); ``score`` is the same, less what a closer
    hit that is another picture takes from it (see :func:`_give_way`) and, under the
    likeliest hit, no higher than being one picture with it allows (see
    :func:`_under_the_likeliest`): what hits are ranked and thresholded by, and what
    ``probability`` (P(same photo) by the index's calibration) and ``relation`` read."""

    id: int
    path: str
    score: float
    width: int | None = None
    height: int | None = None
    labels: list[tuple[str, float]] = field(default_factory=list)
    probability: float | None = None  # P(same photo), when the index is calibrated
    relation: str | None = None  # exact, copy, recoloured or similar (lookalike.search.relations)
    similarity: float | None = None  # the pair's own score (None: the same as ``score``)

    @property
    def alone(self) -> float:
        """The pair's own score, before a closer hit that is another picture lowered it."""
        return self.score if self.similarity is None else self.similarity

    def to_dict(self) -> dict:
        """The JSON form of a hit, the same for every front end (CLI ``--json``, HTTP)."""
        out: dict = {"id": self.id, "path": self.path, "score": round(shown_score(self.score), 6)}
        out["similarity"] = round(shown_score(self.alone), 6)
        if self.probability is not None:
            out["probability"] = round(self.probability, 4)
        if self.relation is not None:
            out["relation"] = self.relation
        out.update(width=self.width, height=self.height, labels=[name for name, _ in self.labels])
        return out


def shown_score(score: float) -> float:
    """A score as shown to a person or a program: one under -1 (pictures far apart, less
    their pixel gap, see :class:`Hit`) is shown as -1, the cosine's own floor, which
    ``--threshold`` accepts."""
    return max(-1.0, score)


@dataclass(frozen=True)
class QueryTraits:
    """What a query image's relation to its hits needs besides its vector."""

    content_hash: str
    colour: bytes | None
    uncaptioned: np.ndarray | None = field(default=None, compare=False)  # its vector, caption bars filled
    # its vector and colour signature on the other backdrop: an opaque query's flat backdrop in the
    # other tone (lookalike.backdrop), a transparent one on the other background
    backdrop: tuple[np.ndarray, bytes] | None = field(default=None, compare=False)
    # ... and of what lies inside its flat margins (lookalike.backdrop.inside_margins)
    inside: tuple[np.ndarray, bytes] | None = field(default=None, compare=False)
    size: tuple[int, int] | None = None  # (width, height) of its picture
    # where its picture can be read again (a path, or its bytes): for the fine look (search.fine)
    source: str | bytes | None = field(default=None, compare=False, repr=False)


@dataclass
class QueryResult:
    """The hits for one query image, or why it could not be searched."""

    query: str
    hits: list[Hit] = field(default_factory=list)
    error: str | None = None
    problem: LookalikeError | None = field(default=None, repr=False, compare=False)  # typed error

    def to_dict(self) -> dict:
        """The JSON form of a result (one line of ``search --json``, the body of ``POST /search``)."""
        out: dict = {"query": self.query, "results": [h.to_dict() for h in self.hits]}
        if self.error:
            out["error"] = self.error
        return out


EARLIEST, LATEST = datetime(1700, 1, 1), datetime(2250, 1, 1)  # file times are int64 nanoseconds


def _clamp(when: datetime | None) -> datetime | None:
    """A date the catalogue can compare (nothing is taken outside these years)."""
    if when is None:
        return None
    naive = when.astimezone().replace(tzinfo=None) if when.tzinfo else when
    return min(max(naive, EARLIEST), LATEST)


@dataclass
class Filters:
    """Restrictions applied inside FAISS (an id selector), not by dropping results after."""

    label: str | None = None
    under: Sequence[str] = ()
    since: datetime | None = None  # capture time (EXIF), else file mtime
    until: datetime | None = None

    def __post_init__(self) -> None:
        for folder in self.under:
            if why := path_problem(os.fspath(folder)):  # (a Path is welcome)
                raise InvalidArgument(f"under {folder!r}: {why}")

    def allowed(self, store: Store) -> np.ndarray | None:
        """The ids that pass, or None when nothing is filtered."""
        ids = None
        if self.under or self.since or self.until:
            # a folder given by a link also matches the files recorded under the folder's own path
            under = list(dict.fromkeys(p for u in self.under for p in (u, os.path.realpath(u))))
            ids = store.catalogue.ids_matching(under, _clamp(self.since), _clamp(self.until))
        if self.label:
            labelled = store.catalogue.ids_with_label(self.label)
            ids = labelled if ids is None else np.intersect1d(ids, labelled)
        return ids


def search_vectors(
    store: Store,
    vectors: np.ndarray,
    k: int = 10,
    filters: Filters | None = None,
    threshold: float | None = None,
    min_probability: float | None = None,
    traits: Sequence[QueryTraits] | None = None,
    pictures: fine.Pictures | None = None,
) -> list[list[Hit]]:
    """Top ``k`` hits per query vector, best first, among files passing the filters.

    ``threshold`` (cosine) and ``min_probability`` (P(same photo), calibrated indexes
    only) then drop the weaker of those hits. With the queries' ``traits``, each hit
    says its relation to the query (see :mod:`lookalike.search.relations`); a
    recoloured variant gets the probability of another picture. Files read for a finer
    look (:mod:`lookalike.search.fine`) are kept in ``pictures`` when given (for this call
    only otherwise).
    """
    if threshold is not None and not -1.0 <= threshold <= 1.0:
        raise InvalidArgument("threshold must be between -1 and 1")
    if min_probability is not None and not 0.0 <= min_probability <= 1.0:
        raise InvalidArgument("min_probability must be between 0 and 1")
    cal = Calibration.from_dict(store.manifest.calibration)
    if min_probability is not None and cal is None:
        raise CalibrationError("this index has no score calibration yet: run `lookalike calibrate` first")
    filters = filters or Filters()
    if filters.label and not store.manifest.model.has_labels:
        raise InvalidArgument(
            "label filter: this index has no labels (its model gives feature vectors, not classes: "
            "an index made with a classification model has them)"
        )
    if filters.since and filters.until and filters.since > filters.until:
        raise InvalidArgument(f"since ({filters.since:%Y-%m-%d}) is after until ({filters.until:%Y-%m-%d})")
    if len(vectors) == 0:
        return []
    allowed = filters.allowed(store)
    if allowed is not None and len(allowed) == 0:
        return [[] for _ in vectors]
    if store.vectors.ntotal == 0:
        return [[] for _ in vectors]
    scores, ids = store.search(vectors, max(k, RIVALS), allowed)
    if traits is not None:
        scores, ids = _also_uncaptioned(store, scores, ids, traits, allowed)
    other = _other_looks(store, traits, ids.shape[1], allowed) if traits is not None else {}
    found_ids = {int(i) for i in ids.ravel() if i >= 0}
    looked = (set(o[1].tolist()) for found in other.values() for o in found)
    rows = store.catalogue.rows(found_ids.union(*looked) - {-1})
    cutoffs, _ = cutoffs_of(store.manifest)
    pixels = cal is not None and cal.pixels and traits is not None
    held, looker = held_score(store.manifest), fine.Looker(pictures)
    out = []
    for q, (q_scores, q_ids) in enumerate(zip(scores, ids, strict=True)):
        seen = traits[q].colour if traits is not None else None
        found = _candidates(rows, q_scores, q_ids, seen, pixels)
        for look_scores, look_ids, look_colour in other.get(q, ()):  # each file as it scores best:
            found = _better(found, _candidates(rows, look_scores, look_ids, look_colour, pixels))  # any look
        hits = []
        for row, s, seen_as in found:
            score = min(1.0, s)  # (under -1 it stays: the calibration reads it)
            p = None if cal is None else float(cal.probability(score))
            kind = None
            if traits is not None:
                same = traits[q].content_hash == row.content_hash
                kind = relation(score, cutoffs, same, seen_as, row.colour)
            hits.append(Hit(row.id, row.path, score, row.width, row.height, row.labels, p, kind, score))
        if traits is not None and _look_closer(hits, traits[q], rows, held, looker):
            hits.sort(key=lambda h: -h.score)
        if cal is not None:
            among = _give_way(store, cal, hits, rows)
            hits.sort(key=lambda h: -h.score)  # stable: equal scores stay as weigh_pixels put them
            read_scores(hits, cal, cutoffs[0])
            if among is not None and _under_the_likeliest(cal, *among, rows):
                hits.sort(key=lambda h: -h.score)
                read_scores(hits, cal, cutoffs[0])
        out.append([h for h in hits[:k] if _passes(h, threshold, min_probability)])
    return out


def _look_closer(
    hits: list[Hit], query: QueryTraits, rows: dict[int, FileRow], held: float, looker: fine.Looker
) -> bool:
    """Copies among ``hits`` whose files differ from the query's picture in one place (other
    words in a screenshot: see :mod:`lookalike.search.fine`) are held at the score ``held``
    and called ``similar``, as `dupes` holds such pairs (files are read only for hits over
    ``held`` of the query's frame, either of them flat). Whether any was held."""
    seen = (query.size or (None, None), query.colour)
    asked = [
        h
        for h in hits
        if h.relation == COPY
        and h.score > held
        and fine.worth_a_look(seen, ((h.width, h.height), rows[h.id].colour))
    ]
    if not asked or query.source is None:
        return False
    differs = looker.differ_from(fine.luma(query.source), [h.path for h in asked])
    for h in (h for h, d in zip(asked, differs, strict=True) if d):
        h.score = h.similarity = held
        h.relation = SIMILAR
    return any(differs)


def _candidates(
    rows: dict, scores: np.ndarray, ids: np.ndarray, colour: bytes | None, pixels: bool
) -> list[tuple[FileRow, float, bytes | None]]:
    """(row, score, the query's colour signature it was weighed with) of FAISS hits, best
    first, scored as the index's calibration reads them (weighing the pixels, if it does).
    -1 pads short results; a row may vanish meanwhile."""
    found = [(rows[int(i)], float(s)) for s, i in zip(scores, ids, strict=True) if int(i) in rows]
    found = weigh_pixels(found, colour) if pixels and found else sorted(found, key=_best_first)
    return [(row, s, colour) for row, s in found]


def _better(a: list[tuple], b: list[tuple]) -> list[tuple]:
    """Two candidate lists (:func:`_candidates`) as one as long as the first: each file at
    its higher score, best first."""
    best: dict[int, tuple] = {}
    for hit in a + b:
        if hit[0].id not in best or hit[1] > best[hit[0].id][1]:
            best[hit[0].id] = hit
    return sorted(best.values(), key=lambda h: _best_first(h[:2]))[: len(a) or len(b)]


def _other_looks(
    store: Store, traits: Sequence[QueryTraits], k: int, allowed: np.ndarray | None
) -> dict[int, list[tuple[np.ndarray, np.ndarray, bytes]]]:
    """FAISS (scores, ids) of the queries' looks that carry their own colour signature, with
    it, by query: on the other backdrop (``traits[q].backdrop``) and inside flat margins
    (``traits[q].inside``; see :mod:`lookalike.backdrop`)."""
    looks = [(q, look) for name in ("backdrop", "inside") for q, mine in enumerate(traits)
             if (look := getattr(mine, name)) is not None]  # fmt: skip
    out: dict[int, list[tuple[np.ndarray, np.ndarray, bytes]]] = {}
    if looks:
        scores, ids = store.search(np.stack([look[0] for _, look in looks]), k, allowed)
        for n, (q, look) in enumerate(looks):
            out.setdefault(q, []).append((scores[n], ids[n], look[1]))
    return out


def _also_uncaptioned(
    store: Store,
    scores: np.ndarray,
    ids: np.ndarray,
    traits: Sequence[QueryTraits],
    allowed: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The candidates of queries that carry caption bars, searched for with their bars
    filled too (``traits[q].uncaptioned``): each file at the better of its two scores, the
    best as many as were asked for. The caption is the strongest thing on such a query and
    draws it to other captioned pictures; its source has none (:mod:`lookalike.captions`)."""
    which = [q for q, t in enumerate(traits) if t.uncaptioned is not None]
    if not which:
        return scores, ids
    more_scores, more_ids = store.search(
        np.stack([traits[q].uncaptioned for q in which]), ids.shape[1], allowed
    )
    scores, ids = scores.copy(), ids.copy()
    for row, q in enumerate(which):
        scores[q], ids[q] = merged(scores[q], ids[q], more_scores[row], more_ids[row])
    return scores, ids


def merged(
    scores: np.ndarray, ids: np.ndarray, more_scores: np.ndarray, more_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Two ranked candidate lists (ids -1: none) as one of the same length: each id at its
    higher score, best first."""
    best: dict[int, float] = {}
    for s, i in zip(np.concatenate([scores, more_scores]), np.concatenate([ids, more_ids]), strict=True):
        if i >= 0 and s > best.get(int(i), -np.inf):
            best[int(i)] = float(s)
    ranked = sorted(best.items(), key=lambda item: -item[1])[: len(ids)]
    out_scores = np.full(len(ids), -np.inf, scores.dtype)
    out_ids = np.full(len(ids), -1, ids.dtype)
    if ranked:
        out_ids[: len(ranked)], out_scores[: len(ranked)] = zip(*ranked, strict=True)
    return out_scores, out_ids


def read_scores(hits: list[Hit], cal: Calibration, copy_cutoff: float) -> None:
    """Each hit's relation and probability as the score it is ranked by reads them: a copy
    whose score gave way (:func:`_give_way`) under ``copy_cutoff`` is ``similar`` (another
    shot or colour scheme of the closer hit's picture), and P(same photo) is the calibration
    at the score. A recoloured variant stays one, whatever its score (what the pair is,
    measured on colours), with probability 0: another picture."""
    for h in hits:
        if h.relation == COPY and h.score < copy_cutoff:
            h.relation = SIMILAR
        h.probability = 0.0 if h.relation == RECOLOURED else float(cal.probability(h.score))


def weigh_pixels(found: list[tuple[FileRow, float]], colour: bytes | None) -> list[tuple[FileRow, float]]:
    """Hits (row, score) of a query whose colour signature is ``colour``, re-scored and
    re-ordered as a learned space that weighs the pixels does (see search.metric)."""
    gaps = metric.pixel_gaps([colour] * len(found), [row.colour for row, _ in found])
    weighed = metric.with_pixels([s for _, s in found], gaps)
    return sorted(((row, float(s)) for (row, _), s in zip(found, weighed, strict=True)), key=_best_first)


def _best_first(hit: tuple[FileRow, float]) -> tuple[float, str]:
    """Higher scores first; equal ones (copies with the same bytes) by path, so the order
    does not depend on the order files were indexed in."""
    return -hit[1], hit[0].path


def _passes(hit: Hit, threshold: float | None, min_probability: float | None) -> bool:
    if threshold is not None and hit.score < threshold:
        return False
    return min_probability is None or hit.probability is None or hit.probability >= min_probability


RIVALS = 10  # hits whose scores give way to closer other pictures (the top ones, whatever k is)
NOT_RIVAL = 0.01  # hits less likely than this to be the query's are nobody's rival
# A likelier hit this unlikely to be one picture with a hit lowers its score. Measured on
# bench/lookalikes.py (best F1 of search scores / of every (query, copy) pair in its library
# holding 8-9 copies of each original): not lowered 0.898 / 0.895; below 0.1 0.922 / 0.887;
# 0.3 0.935 / 0.884; 0.5 0.948 / 0.877; 0.9 0.971 / 0.771 (rivals weighed by 1 - P(one picture));
# below 0.5 or recoloured 0.969 / 0.879, and counted whole (as here) 0.971 / 0.875.
# With made shots weighing a third in the calibration (calibration.SHOT_WEIGHT), which
# puts each probability at a lower score: below 0.5 0.954 / 0.880, share true at P >= 0.9
# 0.968 (siblings and shots no longer gave way); 0.6 0.962 / 0.874, 0.978; 0.7 0.973 / 0.859,
# 0.986, every reliability bucket of both within 0.07 of its mean P.
OTHER_PICTURE = 0.7


def _give_way(
    store: Store, cal: Calibration, hits: list[Hit], rows: dict
) -> tuple[list[Hit], np.ndarray] | None:
    """Lower the score of each of the top :data:`RIVALS` hits to where the calibration puts
    its probability among the likelier hits that are other pictures (:func:`_outdone`), each
    counted whole (:func:`calibration.among_rivals`): the top hit keeps its score, and so do
    the copies of it under it, while another shot or colour scheme under a closer hit loses
    (a weaker hit is no evidence against it, for ranking). Hits further down keep their own.
    A recoloured variant is nobody's rival (another picture, whatever its score) but has
    rivals of its own; hits with the same bytes are one picture. Returns those hits and
    their scores among them as `dupes` tells them (exact where they can reach
    :data:`OTHER_PICTURE`'s level, else under it), for :func:`_under_the_likeliest`."""
    live = [h for h in hits[:RIVALS] if h.probability is not None and h.probability >= NOT_RIVAL]
    if len(live) < 2:
        return None
    digests = np.array([rows[h.id].content_hash or f"no hash {h.id}" for h in live])
    recoloured = np.array([h.relation == RECOLOURED for h in live])
    own = np.array([h.probability for h in live])
    floor = cal.cosine_for(OTHER_PICTURE)  # what decides: pairs that cannot reach it need no detail
    scores = scores_among(store, [h.id for h in live], rows, local=True, floor=floor)
    outdone = _outdone(cal, live, rows, own, scores) & ~recoloured[None, :]
    outdone &= digests[:, None] != digests[None, :]
    for h, q in zip(live, among_rivals(own, 1.0 - outdone), strict=True):
        _lower_to(h, cal, float(q))
    return live, scores


def _lower_to(hit: Hit, cal: Calibration, probability: float) -> None:
    """Lower ``hit``'s score to where the calibration puts ``probability`` (if it is higher)."""
    hit.score = min(hit.score, cal.cosine_for(min(max(probability, 1e-12), 1 - 1e-12)))


def _outdone(
    cal: Calibration, live: list[Hit], rows: dict, own: np.ndarray, scores: np.ndarray
) -> np.ndarray:
    """``out[i, j]``: hit j is likelier than hit i and another picture, as `dupes` tells
    them (their ``scores``): less than :data:`OTHER_PICTURE` likely one picture (a difference in
    one place weighed: another shot of a scene is another picture, a captioned copy is not),
    or the same design in other colours (:func:`relations.recoloured`). A hit whose vector
    is gone (removed meanwhile: its scores are NaN) is told apart by its colours only."""
    likelier = own[None, :] > own[:, None]
    one = np.asarray(cal.probability(scores))
    out = likelier & (one < OTHER_PICTURE)
    colours = [rows[h.id].colour for h in live]
    for i, j in zip(*np.nonzero(likelier & ~out), strict=True):
        out[i, j] = recoloured(colours[i], colours[j])
    return out


def _under_the_likeliest(cal: Calibration, live: list[Hit], scores: np.ndarray, rows: dict) -> bool:
    """Lower the score of each of the ``live`` hits (:func:`_give_way`'s) to where the
    calibration puts the most it can be beside the likeliest of them
    (:func:`calibration.under_the_likeliest`), given how likely the two are one picture by
    their ``scores``. Copies of that hit (the same bytes, or scoring as copies do) keep
    theirs; a look-alike it calls one picture with it, yet not quite, falls (SUSE's Desktop
    boot screen under an edit of the Server one, a word apart: one picture at 0.994, P 0.992
    -> 0.989). A pair not measured (under :data:`OTHER_PICTURE`'s level) bounds from its
    higher estimate: those gave way already. True when a score moved. Measured on
    bench/lookalikes.py's three tables: README, "The latest stop"."""
    own = np.array([h.probability or 0.0 for h in live])
    top = int(np.argmax(own))
    digest = rows[live[top].id].content_hash if live[top].id in rows else None
    same = np.asarray(cal.probability(np.nan_to_num(scores[top], nan=1.0)))
    most = under_the_likeliest(own[top], same)
    moved = False
    for j, h in enumerate(live):
        if j == top or own[j] <= most[j] or (digest and rows[h.id].content_hash == digest):
            continue
        _lower_to(h, cal, float(most[j]))
        moved = True
    return moved


def scores_among(
    store: Store,
    ids: Sequence[int],
    rows: dict | None = None,
    local: bool = False,
    floor: float | None = None,
) -> np.ndarray:
    """Scores between every two of ``ids`` as search gives them (as `dupes` does if
    ``local``): cosines in the learned space, if any, weighing the pixel gap when the
    calibration does (see search.metric); NaN for an id without a stored vector.
    ``rows``: their catalogue rows, if at hand. Pairs that cannot reach a ``floor`` come
    out under it without their detail measured (:func:`metric.gap_matrix`)."""
    found, raw = store.catalogue.load_vectors(sorted(set(ids)))
    where = {int(i): n for n, i in enumerate(found.tolist())}
    own = np.full((len(ids), raw.shape[1] if len(raw) else 1), np.nan, np.float32)
    for n, i in enumerate(ids):
        if int(i) in where:
            own[n] = raw[where[int(i)]]
    if store.metric is not None and len(found):
        own = store.metric.apply(own)
    out = own @ own.T
    cal = Calibration.from_dict(store.manifest.calibration)
    if cal is not None and cal.pixels:
        rows = rows if rows is not None else store.catalogue.rows({int(i) for i in ids})
        colours = [rows[i].colour if i in rows else None for i in ids]
        out = metric.with_pixels(out, metric.gap_matrix(colours, local=local, scores=out, floor=floor))
    return np.clip(out, -1.0, 1.0)
