"""What a pair of images is to each other: the policy, as pure functions.

- ``exact``: the same bytes.
- ``copy``: the same picture, edited (resized, re-encoded, cropped, rotated, captioned,
  mirrored, grayscale...): vectors close, colours the same (or one side has none).
- ``recoloured``: the same design in other colours, or its light/dark version: vectors
  as close as a copy's, colours not (see :mod:`lookalike.colour`). Not a duplicate for
  the ``copies`` preset; a look-alike, for a person to judge.
- ``similar``: a look-alike below the copy threshold.
"""

from __future__ import annotations

from lookalike import colour

EXACT = "exact"
COPY = "copy"
RECOLOURED = "recoloured"
SIMILAR = "similar"
RELATIONS = (EXACT, COPY, RECOLOURED, SIMILAR)

RECOLOURED_CHROMA = 0.4  # hue-distribution distance: copies of 120 photos p95 0.37, recolourings p5 0.43
INVERTED_LAYOUT = -0.8  # light/dark layout correlation: inversions -1.0, letterboxed copies down to -0.6
DARK_LIGHT = 0.3  # mean-luminance gap of a dark and a light version (0.35 on GNOME's); copies <= 0.26
SAME_LAYOUT = 0.6  # ... with their layout kept (letterboxed copies: darker, but their layout moves)


def recoloured(a: bytes | None, b: bytes | None) -> bool:
    """Whether colour signatures ``a`` and ``b`` are one design in other colours (False
    when either is missing: rows indexed before signatures existed)."""
    if not a or not b:
        return False
    if colour.light_and_dark(a, b):
        return True
    rel = colour.compare(a, b)
    if rel.layout <= INVERTED_LAYOUT or (rel.brightness >= DARK_LIGHT and rel.layout >= SAME_LAYOUT):
        return True
    return not rel.faint and rel.chroma >= RECOLOURED_CHROMA


def relation(
    score: float,
    cutoffs: tuple[float, float],
    same_bytes: bool,
    colour_a: bytes | None,
    colour_b: bytes | None,
) -> str:
    """The relation of two images whose vectors score ``score`` (cosine); ``cutoffs`` are
    the cosines from which the index calls a pair a copy and a look-alike (its ``copies``
    and ``similar`` presets). Below the look-alike cosine, colours are not compared."""
    copy_cutoff, similar_cutoff = cutoffs
    if same_bytes:
        return EXACT
    if score >= similar_cutoff and recoloured(colour_a, colour_b):
        return RECOLOURED
    return COPY if score >= copy_cutoff else SIMILAR
