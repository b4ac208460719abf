"""One colour scheme per duplicate group: which members of a star go with its centre.

A design in two colour schemes (or its light and dark versions) gives two sets of copies
whose vectors are as close as copies are. Colours tell the sets apart
(:func:`relations.recoloured`), except for a member that has none to compare: a gray copy,
or an opaque export of a pale design. Such a member matches every scheme about as well,
and would be grouped with whichever star reaches it first. Its luma still says which
scheme it was made from: the one whose luma it repeats (:func:`relations.luma_error`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from lookalike import colour
from lookalike.search.relations import colourless, luma_error, recoloured
from lookalike.storage.catalogue import FileRow

Scorer = Callable[[Sequence[FileRow], FileRow], np.ndarray]  # scores of members against one

FITS_TRIED = 4  # members of each side, the closest by score, a colourless member is fitted to
# Luma levels (0-255) by which another scheme must fit a colourless member better than its
# star's scheme to take it. bench/lookalikes.py, 140 gray copies of colour originals: the
# best-fitting copy of their own scheme fits within 0.1 (their worst, a captioned copy,
# within 28.6); another scheme of the same design 7-25 on hue-shifted wallpapers (2 of 3
# of those gray copies used to join the other scheme's group), 0.4-0.9 on another shot of
# a scene (not a recolouring: left to the shot checks).
LUMA_CLOSER = 3.0
RIVALS_SCANNED = 64  # members outside a star, the closest to its centre, scanned for other schemes


def one_scheme(
    star: list[FileRow], component: Sequence[FileRow] = (), score: Scorer | None = None
) -> list[FileRow]:
    """``star`` (its centre first) without the members that are a recolouring of its
    anchor: the centre, or when the centre is gray the colourful member whose luma it
    repeats (the most colourful one, if none is known to). A group that leaves
    recolourings out holds one colour scheme; those left out go to the groups formed after
    this one, and the centre always stays in its own. With the rest of the ``component``
    and a ``score`` to pick the closest members by, a member that colours cannot place
    also leaves when another scheme near the star fits its luma clearly better than
    this one (when only the other lines up with it, as captioned copies of two schemes
    line up by their bars, that is no evidence)."""
    known = [m for m in star if m.colour]
    if len(known) < 2:
        return star
    anchor = star[0]
    if not anchor.colour or colour.colourfulness(anchor.colour) < colour.GRAY_CHROMA:
        anchor = _anchor_of_gray(star[0], known, score)
    kept = [m for m in star if m is anchor or not recoloured(anchor.colour, m.colour)]
    if score is None or not component:
        return kept
    loose = [m for m in kept[1:] if m is not anchor and m.colour and colourless(anchor.colour, m.colour)]
    if not loose:
        return kept
    rivals = _rivals(star[0], anchor, kept, component, score)
    if not rivals:
        return kept
    gone = set()
    for m in loose:
        own = _best_fit(m, [k for k in kept if k.id != m.id], score)
        other = _best_fit(m, rivals, score)
        if own is not None and other is not None and other[0] + LUMA_CLOSER < own[0]:
            gone.add(m.id)
    return [m for m in kept if m.id not in gone]


def _rivals(
    centre: FileRow, anchor: FileRow, kept: list[FileRow], component: Sequence[FileRow], score: Scorer
) -> list[FileRow]:
    """The members of other schemes among the :data:`RIVALS_SCANNED` members of
    ``component`` outside ``kept`` that are closest to the star's ``centre``."""
    ids = {m.id for m in kept}
    others = [m for m in component if m.id not in ids and m.colour]
    if len(others) > RIVALS_SCANNED:
        closest = np.argsort(-np.asarray(score(others, centre)), kind="stable")[:RIVALS_SCANNED]
        others = [others[i] for i in closest]
    return [m for m in others if recoloured(anchor.colour, m.colour)]


def _anchor_of_gray(centre: FileRow, known: list[FileRow], score: Scorer | None) -> FileRow:
    """The colourful member a gray centre's luma repeats; else the most colourful one."""
    vivid = [m for m in known if colour.colourfulness(m.colour) >= colour.GRAY_CHROMA]
    fit = _best_fit(centre, vivid, score) if score is not None and centre.colour and vivid else None
    return fit[1] if fit is not None else max(known, key=lambda m: colour.colourfulness(m.colour))


def _best_fit(one: FileRow, members: list[FileRow], score: Scorer) -> tuple[float, FileRow] | None:
    """The smallest luma error of ``one`` against the :data:`FITS_TRIED` of ``members``
    closest to it by score, and that member; None when none lines up with it."""
    members = [m for m in members if m.colour]
    if not members:
        return None
    closest = np.argsort(-np.asarray(score(members, one)), kind="stable")[:FITS_TRIED]
    fits = [(luma_error(members[i].colour, one.colour), members[i]) for i in closest]
    fits = [(e, m) for e, m in fits if e is not None]
    return min(fits, key=lambda f: f[0]) if fits else None
