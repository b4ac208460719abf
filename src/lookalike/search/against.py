"""Images of one index already present in another (``dupes --against``).

Each image is looked up in the other index as a search there would find it: scored in
*its* learned space, weighing the pixels when its calibration does, and judged with *its*
cutoffs, so a threshold or preset means what it means for searches of the other index.
"""

from __future__ import annotations

from lookalike.errors import IncompatibleIndex
from lookalike.fsutil import identity
from lookalike.search import fine
from lookalike.search.duplicates import EXACT, NEAR, QUERY_CHUNK, Duplicate, Group
from lookalike.search.keep import KeepRules
from lookalike.search.neighbours import RIVALS, weigh_pixels
from lookalike.search.presets import cutoffs_of, held_score
from lookalike.search.relations import COPY, RECOLOURED, SIMILAR, relation
from lookalike.storage.catalogue import FileRow
from lookalike.storage.store import Store


def comparable(store: Store, other: Store) -> None:
    """Raise :class:`IncompatibleIndex` unless ``other``'s vectors compare with ``store``'s."""
    mine, theirs = store.manifest, other.manifest
    if not mine.same_model(theirs.model):
        raise IncompatibleIndex(
            f"{other.directory} was indexed with {theirs.model.source}, this index with "
            f"{mine.model.source}: their vectors cannot be compared"
        )
    if store.descriptor != other.descriptor:
        raise IncompatibleIndex(
            f"{other.directory} was indexed with descriptor {other.descriptor!r}, this index with "
            f"{store.descriptor!r}: their vectors cannot be compared"
        )


def find_in_other(
    store: Store, other: Store, threshold: float, rules: KeepRules | None = None
) -> list[Group]:
    """Images of ``store`` already in ``other``: one group per file of ``other``, scored
    as ``other`` scores (``threshold`` is a score of ``other``'s: see
    :func:`lookalike.search.presets.resolve_threshold` with its manifest). A file both
    indexes hold (the same file, reached by the same or another path) is no duplicate of
    itself; files in ``rules.protect`` are never proposed; recoloured variants are not
    copies."""
    rules = rules or KeepRules()
    comparable(store, other)
    cutoffs, cal = cutoffs_of(other.manifest)
    pixels = cal is not None and cal.pixels
    their_hashes = other.catalogue.vectors_by_hash()
    found: dict[int, list[tuple[FileRow, float, str, str]]] = {}
    looker, held = fine.Looker(), held_score(other.manifest)
    all_ids = sorted(int(i) for i in store.vectors.ids())
    for start in range(0, len(all_ids), QUERY_CHUNK):
        ids, vecs = store.catalogue.load_vectors(all_ids[start : start + QUERY_CHUNK])
        mine = store.catalogue.rows(set(ids.tolist()))
        scores, nbrs = other.search(vecs, RIVALS if pixels else 1) if other.vectors.ntotal else (None, None)
        theirs = {} if nbrs is None else other.catalogue.rows({int(i) for i in nbrs.ravel() if i >= 0})
        near: list[tuple[FileRow, FileRow, float, str]] = []  # (this file, its best hit, score, relation)
        for n, fid in enumerate(ids.tolist()):
            row = mine.get(fid)
            if row is None:
                continue  # removed meanwhile
            same = their_hashes.get(row.content_hash or "")
            if same:
                found.setdefault(same[0][0], []).append((row, 1.0, EXACT, EXACT))
                continue
            if nbrs is None:
                continue  # the other index holds no vectors: only the same bytes could be there
            pairs = zip(scores[n], nbrs[n], strict=True)
            hits = [(theirs[int(i)], float(s)) for s, i in pairs if int(i) in theirs]
            if pixels and hits:
                hits = weigh_pixels(hits, row.colour)
            if hits and hits[0][1] >= threshold:
                best, score = hits[0]
                near.append((row, best, score, relation(score, cutoffs, False, best.colour, row.colour)))
        for row, best, score, kind in _looked_closer(near, held, looker):
            if kind != RECOLOURED and score >= threshold:
                found.setdefault(best.id, []).append((row, min(score, 1.0), NEAR, kind))
    return _groups(other, found, rules)


def _looked_closer(
    near: list[tuple[FileRow, FileRow, float, str]], held: float, looker: fine.Looker
) -> list[tuple[FileRow, FileRow, float, str]]:
    """``near`` (a file, its best hit in the other index, their score and relation), with
    copies whose files differ in one place (other words in a screenshot: see
    :mod:`lookalike.search.fine`) held at the score ``held`` and called ``similar``, as
    `dupes` and search hold them."""
    asked = [
        n
        for n, (row, best, score, kind) in enumerate(near)
        if kind == COPY
        and score > held
        and fine.worth_a_look(((row.width, row.height), row.colour), ((best.width, best.height), best.colour))
    ]
    differs = looker.differ([(near[n][0].path, near[n][1].path) for n in asked])
    out = list(near)
    for n in (n for n, d in zip(asked, differs, strict=True) if d):
        out[n] = (near[n][0], near[n][1], held, SIMILAR)
    return out


def _groups(
    other: Store, found: dict[int, list[tuple[FileRow, float, str, str]]], rules: KeepRules
) -> list[Group]:
    """One group per file of ``other`` that files of this index copy, best score first."""
    their_rows = other.catalogue.rows(found)
    groups = []
    for oid, hits in found.items():
        if oid not in their_rows:
            continue  # removed meanwhile
        group = Group(their_rows[oid])
        kept = identity(group.keep.path)
        for row, score, kind, related in sorted(hits, key=lambda h: -h[1]):
            if rules.protected(row) or (kept is not None and identity(row.path) == kept):
                continue
            group.duplicates.append(Duplicate(row, score, kind, related))
            group.reasons.append(f"already in {other.directory}")
        if group.duplicates:
            groups.append(group)
    groups.sort(key=lambda g: g.keep.path)
    return groups
