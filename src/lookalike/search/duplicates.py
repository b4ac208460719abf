"""Duplicate groups over an index: exact (same bytes) and near (cosine above a threshold;
on an index that weighs pixels, the score of search.metric: lowered by a pixel gap, lifted a
little when the pixels match once a copy's edit is undone; a pair whose features pass but
whose stored grids do not is checked from its files, search.geometric).

Candidate pairs come from FAISS k-nearest-neighbour search (exact for small collections,
an IVF index trained on the collection's own vectors for large ones), never from an
N x N matrix. Groups do not chain: each group is a kept image plus the members whose
own similarity *to the kept image* passes the threshold, so A~B and B~C never put A
and C together unless A~C (through the keeper) holds too.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property

import faiss
import numpy as np

from lookalike.fsutil import identity
from lookalike.search import fine, geometric, metric, schemes
from lookalike.search.facts import component_facts
from lookalike.search.keep import KeepRules
from lookalike.search.presets import cutoffs_of, held_score
from lookalike.search.relations import COPY, RECOLOURED, recoloured, relation
from lookalike.storage.catalogue import FileRow
from lookalike.storage.store import Store

EXACT = "exact"
NEAR = "near"
FLAT_LIMIT = 50_000  # above this many vectors, candidates come from an IVF index
QUERY_CHUNK = 4096


@dataclass
class Duplicate:
    row: FileRow
    score: float
    kind: str  # EXACT or NEAR
    relation: str = COPY  # to the kept image: exact, copy, recoloured or similar (see relations)
    via: str | None = None  # the group's centre (a member), when this passes the threshold against it only


@dataclass
class Group:
    keep: FileRow
    duplicates: list[Duplicate] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)  # why keep beats each duplicate

    def to_dict(self) -> dict:
        return {
            "keep": self.keep.path,
            "duplicates": [
                {
                    "path": d.row.path,
                    "score": round(d.score, 6),
                    "kind": d.kind,
                    "relation": d.relation,
                    "via": d.via,
                    "reason": r,
                }
                for d, r in zip(self.duplicates, self.reasons, strict=True)
            ],
        }


def candidate_pairs(
    ids: np.ndarray, vectors: np.ndarray, threshold: float, k: int = 16
) -> set[tuple[int, int]]:
    """Pairs (id_a < id_b) with exact cosine >= ``threshold``, among k nearest neighbours.

    Small collections search exactly. Large ones find neighbours with an IVF index over
    a 64-d PCA projection trained on the collection itself (cheap to train and scan,
    ~N x 256 bytes), then every candidate pair is scored exactly in full dimension.
    """
    n = len(ids)
    if n < 2:
        return set()
    k = min(k, n)
    if n <= FLAT_LIMIT:
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(np.ascontiguousarray(vectors, np.float32))
        search, project = index.search, None
    else:
        index, project = _coarse_index(vectors)
        search = index.search
    pairs: set[tuple[int, int]] = set()
    for start in range(0, n, QUERY_CHUNK):
        block = np.ascontiguousarray(vectors[start : start + QUERY_CHUNK], np.float32)
        _, nbrs = search(block if project is None else project(block), k)
        rows, cols = np.nonzero(nbrs >= 0)
        i, j = rows + start, nbrs[rows, cols]
        keep = i != j
        i, j = i[keep], j[keep]
        exact = np.einsum("ij,ij->i", vectors[i], vectors[j])  # full-dimension cosine
        for a, b in zip(ids[i[exact >= threshold]], ids[j[exact >= threshold]], strict=True):
            pairs.add((int(a), int(b)) if a < b else (int(b), int(a)))
    return pairs


def _coarse_index(vectors: np.ndarray):
    """An IVF index on a PCA projection of ``vectors``, and the projection function."""
    n, dim = vectors.shape
    rng = np.random.default_rng(0)
    nlist = int(np.clip(np.sqrt(n), 64, 4096))
    sample = np.ascontiguousarray(
        vectors[np.sort(rng.choice(n, min(n, 40 * nlist), replace=False))], np.float32
    )
    pca = faiss.PCAMatrix(dim, min(64, dim))
    pca.train(sample)
    low = pca.d_out
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(low), low, nlist, faiss.METRIC_INNER_PRODUCT)
    index.train(pca.apply(sample))
    index.nprobe = 16
    for start in range(0, n, 65536):
        index.add(pca.apply(np.ascontiguousarray(vectors[start : start + 65536], np.float32)))
    return index, pca.apply


def _components(edges: Iterable[tuple[int, int]]) -> list[list[int]]:
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    comps: dict[int, list[int]] = {}
    for x in parent:
        comps.setdefault(find(x), []).append(x)
    return [sorted(c) for c in comps.values() if len(c) > 1]


def one_path_per_file(
    rows: Sequence[FileRow], protected: Callable[[FileRow], bool] = lambda row: False
) -> list[FileRow]:
    """``rows`` with every file once: paths that lead to the same file (a symbolic link and
    its target, a folder indexed under two spellings, hard links) are one file, never
    duplicates of each other. The path kept is a ``protected`` one if any (a link in a
    protected folder protects its target), else the one without links in it."""
    by_file: dict[tuple[int, int], FileRow] = {}
    out: list[FileRow] = []
    for row in rows:
        ident = identity(row.path)
        if ident is None:  # gone: the actions will skip it; it is no copy of anything here
            out.append(row)
            continue
        best = by_file.get(ident)
        if best is None or (protected(row), _plainer(row.path, best.path)) > (protected(best), False):
            by_file[ident] = row
    return out + list(by_file.values())


def _plainer(a: str, b: str) -> bool:
    """``a`` is a better name than ``b`` for one file: no symbolic link on its way, then shorter."""
    return ((os.path.realpath(a) != a), len(a), a) < ((os.path.realpath(b) != b), len(b), b)


def find_duplicates(
    store: Store,
    threshold: float,
    rules: KeepRules | None = None,
    ignored: Callable[[FileRow, FileRow], bool] | None = None,
    include_recoloured: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> list[Group]:
    """Duplicate groups in ``store``: exact copies always, near ones at ``threshold``.
    Each duplicate says its relation to the kept image; recoloured variants (one design
    in other colours) are left out unless ``include_recoloured``. ``progress(done,
    total)`` is told of the pairs checked from their files (:func:`_verified`)."""
    rules = rules or KeepRules()
    cutoffs, cal = cutoffs_of(store.manifest)
    judge = _Judge(cutoffs, include_recoloured)
    pixels = cal is not None and cal.pixels
    view = store.vectors.flat_view()  # no copy of a million vectors when FAISS holds them flat
    if view is None:
        view = store.catalogue.load_vectors(sorted(store.vectors.ids().tolist()))
    ids, vectors = view
    if store.metric is not None:  # scores in the collection's learned space, as search gives them
        vectors = store.metric.apply(vectors)
    in_snapshot = set(ids.tolist())  # the catalogue may have moved on meanwhile: keep to these vectors
    same = store.catalogue.same_content_pairs()
    edges = {(a, b) for a, b in same if a in in_snapshot and b in in_snapshot}
    rows = None
    verified: dict[tuple[int, int], float] = {}
    if threshold <= 1.0:
        near = candidate_pairs(ids, vectors, threshold - (metric.matched_lift() if pixels else 0.0))
        if pixels:  # the rows read once: their colours now, the groups' members after
            rows = store.catalogue.rows({i for pair in near | edges for i in pair})
            near, unsure = _weigh_pixels(near, rows, ids, vectors, threshold)
            verified = _verified(unsure, rows, threshold, progress)
            near |= set(verified)
        edges |= near
    comps = _components(edges)
    if rows is None:
        rows = store.catalogue.rows({i for c in comps for i in c})
    else:
        rows = {i: rows[i] for c in comps for i in c if i in rows}
    order = np.argsort(ids)
    members_ids = np.array(sorted(rows), np.int64)
    position = dict(
        zip(members_ids.tolist(), order[np.searchsorted(ids[order], members_ids)].tolist(), strict=True)
    )
    components = [one_path_per_file([rows[i] for i in comp if i in rows], rules.protected) for comp in comps]
    found = component_facts(components, lambda m: vectors[position[m.id]])
    rules = replace(rules, facts={**rules.facts, **found})
    scores = _Scores(vectors, position, pixels, verified, fine.Looker(), held_score(store.manifest))
    groups: list[Group] = []
    for comp in components:
        members = sorted(comp, key=rules.rank)
        groups.extend(_star_groups(members, scores, threshold, rules, ignored, judge))
    groups.sort(key=lambda g: (-len(g.duplicates), g.keep.path))
    return groups


def _weigh_pixels(
    pairs: set[tuple[int, int]],
    rows: dict[int, FileRow],
    ids: np.ndarray,
    vectors: np.ndarray,
    threshold: float,
) -> tuple[set[tuple[int, int]], dict[tuple[int, int], float]]:
    """The ``pairs`` still at ``threshold`` once their score weighs their pixel gap
    (``rows``: the catalogue rows of their files), and the cosines of those left out that
    their features alone pass and their colours do not set apart (see :func:`_verified`)."""
    if not pairs:
        return pairs, {}
    listed = [(a, b) for a, b in sorted(pairs) if a in rows and b in rows]
    at = {int(i): n for n, i in enumerate(ids)}
    a = np.array([at[x] for x, _ in listed])
    b = np.array([at[y] for _, y in listed])
    cosine = np.einsum("ij,ij->i", vectors[a], vectors[b])
    first, second = [rows[x].colour for x, _ in listed], [rows[y].colour for _, y in listed]
    colour_gaps = metric.pixel_gaps(first, second, fine=False)
    near = np.flatnonzero(metric.highest(cosine, colour_gaps) >= threshold)
    pairs_near = [first[i] for i in near], [second[i] for i in near]
    gaps = metric.with_detail(colour_gaps[near], *pairs_near, local=True)
    weighed = dict(zip(near.tolist(), metric.with_pixels(cosine[near], gaps).tolist(), strict=True))
    kept = {listed[i] for i, s in weighed.items() if s >= threshold}
    unsure = {
        listed[i]: float(cosine[i])
        for i in np.flatnonzero((cosine >= threshold) & (colour_gaps <= geometric.MAX_COLOUR_GAP))
        if weighed.get(i, -1) < threshold and not recoloured(first[i], second[i])
    }
    return kept, unsure


def _verified(
    unsure: dict[tuple[int, int], float],
    rows: dict[int, FileRow],
    threshold: float,
    progress: Callable[[int, int], None] | None = None,
) -> dict[tuple[int, int], float]:
    """Pixel gaps measured again from the files (:mod:`lookalike.search.geometric`) of the
    ``unsure`` pairs (their cosines): those the stored grids kept out but their features
    pass, whose score on the aligned pictures reaches ``threshold``."""
    if not unsure:
        return {}
    component = {i: n for n, members in enumerate(_components(unsure)) for i in members}
    pairs = sorted(
        unsure, key=lambda p: (component[p[0]], rows[p[0]].path, rows[p[1]].path)
    )  # files read once
    gaps = geometric.verified_gaps([(rows[a].path, rows[b].path) for a, b in pairs], progress)
    out = {}
    for a, b in pairs:
        gap = gaps.get((rows[a].path, rows[b].path))
        if gap is not None and float(metric.with_pixels(unsure[a, b], gap)) >= threshold:
            out[a, b] = gap
    return out


@dataclass(frozen=True)
class _Scores:
    """Scores of member pairs: the cosine (in the learned space, if any), weighing the pixel
    gap when the index's calibration does, as search does, and a difference in one place
    too (another shot of the scene is no duplicate, see search.metric); pixels that match
    lift a score (by up to metric.matched_lift(), so above search's and even above 1).
    ``verified``: the gaps of pairs (ids, smaller first) measured on their aligned files
    (see :func:`_verified`), which count where they score higher. Pairs of one frame whose
    files ``looker`` finds to differ in one place (other words in a screenshot: see
    :mod:`lookalike.search.fine`) score at most ``cap`` (under the ``edited`` preset)."""

    vectors: np.ndarray
    position: dict[int, int]
    pixels: bool
    verified: dict[tuple[int, int], float] = field(default_factory=dict)
    looker: fine.Looker | None = None
    cap: float = np.inf

    def to(
        self,
        members: Sequence[FileRow],
        one: FileRow,
        credit: bool = True,
        verified: bool = True,
        looked: bool = True,
    ) -> np.ndarray:
        """Scores of ``members`` against ``one`` (not lifted where pixels match, if not
        ``credit``; from the stored grids only, if not ``verified``)."""
        if not members:
            return np.zeros(0, np.float32)
        cosine = self.vectors[[self.position[m.id] for m in members]] @ self.vectors[self.position[one.id]]
        if not self.pixels:
            return self.capped(cosine, members, one) if looked else cosine
        colours = [one.colour] * len(members), [m.colour for m in members]
        out = metric.with_pixels(cosine, metric.pixel_gaps(*colours, local=True, credit=credit))
        for n, m in enumerate(members if credit and verified else ()):
            gap = self.verified.get((min(m.id, one.id), max(m.id, one.id)))
            if gap is not None:
                out[n] = max(out[n], metric.with_pixels(cosine[n], gap))
        return self.capped(out, members, one) if looked else out

    def unlooked(self, members: Sequence[FileRow], one: FileRow) -> np.ndarray:
        """Scores as :meth:`to` gives them without reading files (to tell colour schemes apart)."""
        return self.to(members, one, looked=False)

    def capped(self, scores: np.ndarray, members: Sequence[FileRow], one: FileRow) -> np.ndarray:
        """``scores`` of ``members`` against ``one``, those over ``cap`` whose files differ
        from ``one``'s in one place held at ``cap`` (files are read only for these)."""
        if self.looker is None:
            return scores
        asked = [
            n
            for n, m in enumerate(members)
            if scores[n] > self.cap
            and m.id != one.id
            and (m.content_hash is None or m.content_hash != one.content_hash)
            and fine.worth_a_look(((m.width, m.height), m.colour), ((one.width, one.height), one.colour))
        ]
        if asked:
            differs = self.looker.differ([(one.path, members[n].path) for n in asked])
            scores[[n for n, d in zip(asked, differs, strict=True) if d]] = self.cap
        return scores

    def among(self, members: Sequence[FileRow]) -> np.ndarray:
        """Scores between every two ``members``."""
        own = self.vectors[[self.position[m.id] for m in members]]
        cosine = own @ own.T
        if not self.pixels:
            return cosine
        out = metric.with_pixels(cosine, metric.gap_matrix([m.colour for m in members], local=True))
        where = {m.id: n for n, m in enumerate(members)}
        for m in members:
            for other, gap in self._verified_with.get(m.id, ()):
                if other in where:
                    i, j = where[m.id], where[other]
                    out[i, j] = out[j, i] = max(out[i, j], metric.with_pixels(cosine[i, j], gap))
        return out

    def by_files_only(self, one: FileRow, other: FileRow, threshold: float) -> bool:
        """Whether the pair passes ``threshold`` only by its verified gap: the stored grids
        alone keep it out (either way round: their gap is not symmetric)."""
        if (min(one.id, other.id), max(one.id, other.id)) not in self.verified:
            return False
        return (
            max(self.to([one], other, verified=False)[0], self.to([other], one, verified=False)[0])
            < threshold
        )

    @cached_property
    def _verified_with(self) -> dict[int, list[tuple[int, float]]]:
        """The verified pairs by their first id: (the other id, its gap)."""
        out: dict[int, list[tuple[int, float]]] = {}
        for (a, b), gap in self.verified.items():
            out.setdefault(a, []).append((b, gap))
        return out


@dataclass(frozen=True)
class _Judge:
    """Which near pairs count: their relation (see relations) at the index's cutoffs."""

    cutoffs: tuple[float, float]
    include_recoloured: bool

    def relation(self, keep: FileRow, other: FileRow, score: float) -> str | None:
        """The pair's relation, or None when it does not count as a duplicate."""
        kind = relation(score, self.cutoffs, False, keep.colour, other.colour)
        return None if kind == RECOLOURED and not self.include_recoloured else kind


CENTRE_LIMIT = 2000  # members of one component up to which its centre is found exactly


def _star_groups(members, scores: _Scores, threshold, rules, ignored, judge: _Judge) -> list[Group]:
    """Groups of one connected component, without chaining: each is a centre (the member
    close to the most others, which best represents them) plus the members close to it;
    what to keep is chosen among them afterwards by ``rules``. A copy that passes against
    the original but not against an edited copy kept by the rules is no longer dropped."""
    out = []
    left = list(members)
    small = len(left) <= CENTRE_LIMIT
    if small:  # similarities and same-bytes links of the whole component, computed once
        sims_all = scores.among(left)
        hashes = np.array([m.content_hash or "" for m in left])
        same_all = (hashes[:, None] == hashes[None, :]) & (hashes != "")[:, None]
        where = {m.id: n for n, m in enumerate(left)}
    while len(left) > 1:
        if small:
            rows = [where[m.id] for m in left]
            sims = sims_all[np.ix_(rows, rows)]
            links = (sims >= threshold) | same_all[np.ix_(rows, rows)]
            centre = int(np.argmax(links.sum(axis=1) + sims.mean(axis=1) * 1e-3))
            sims_to = sims[centre].copy()
            if scores.pixels:  # the matrix measured the detail between its first members only
                unmeasured = np.maximum(np.asarray(rows), rows[centre]) >= metric.DETAIL_AMONG
                near = np.flatnonzero(unmeasured & (sims_to >= threshold - metric.matched_lift()))
                sims_to[near] = scores.unlooked([left[i] for i in near], left[centre])
        else:  # a huge component: the best-ranked member stands for it
            sims_to = scores.unlooked(left, left[0])
            centre = 0
        looked = scores.capped(sims_to.copy(), left, left[centre])
        star = [left[centre]]
        for j, m in enumerate(left):
            exact = m.content_hash is not None and m.content_hash == left[centre].content_hash
            if j != centre and (exact or looked[j] >= threshold):
                star.append(m)
        apart = [m for j, m in enumerate(left) if j != centre and sims_to[j] >= threshold > looked[j]]
        if apart:  # set apart from the centre by their files (a captioned centre, a mirror copy):
            back = scores.to(apart, min(star, key=rules.rank))  # copies of the one kept, still?
            star += [m for m, s in zip(apart, back, strict=True) if s >= threshold]
        if not judge.include_recoloured:
            star = schemes.one_scheme(star, members, scores.unlooked)
        group = _group(sorted(star, key=rules.rank), left[centre], scores, rules, ignored, judge, threshold)
        taken = {group.keep.id, *(d.row.id for d in group.duplicates)} if group.duplicates else set()
        if group.duplicates:
            out.append(group)
        if not taken:  # nothing grouped around this centre: it stands alone
            taken = {left[centre].id}
        left = [m for m in left if m.id not in taken]
    return out


def _group(star, centre, scores: _Scores, rules, ignored, judge: _Judge, threshold: float) -> Group:
    """The kept image (first by the rules) of a star and its duplicates, scored against
    it, with their reasons and relations to it (what the score and probability shown say);
    a member that passes ``threshold`` against the centre only says so (``via``)."""
    keep, rest = star[0], star[1:]
    sims = scores.to(rest, keep)
    # what grouped them (recoloured at it: not grouped); the kept image is often the centre itself
    links = sims if centre.id == keep.id else np.maximum(sims, scores.to(rest, centre))
    by_files = centre.id != keep.id and scores.by_files_only(keep, centre, threshold)
    group = Group(keep)
    for m, s, link in zip(rest, sims, links, strict=True):
        exact = m.content_hash is not None and m.content_hash == keep.content_hash
        if rules.protected(m) or (ignored and ignored(keep, m)):
            continue
        burst = not exact and rules.is_burst(keep, m)
        if burst and scores.to([m], keep, credit=False)[0] < rules.burst_threshold:
            continue  # another shot of a burst (a blink, a smile) matches at the grid's scale: no lift
        if not exact and judge.relation(keep, m, float(link)) is None:
            continue
        if not exact and s < threshold and (by_files or scores.by_files_only(m, centre, threshold)):
            continue  # linked through the files only (kept-centre or centre-it): must pass the kept one
        kind = EXACT if exact else relation(float(s), judge.cutoffs, False, keep.colour, m.colour)
        score = 1.0 if exact else float(min(s, 1.0))
        via = centre.path if not exact and s < threshold and m.id != centre.id else None
        group.duplicates.append(Duplicate(m, score, EXACT if exact else NEAR, kind, via))
        group.reasons.append(rules.reason(keep, m))
    if centre.id not in {d.row.id for d in group.duplicates}:  # kept, or left out (protected...)
        for d in group.duplicates:
            d.via = None  # ... it is no member that goes: the kept copy or a stayer vouches
    return group
