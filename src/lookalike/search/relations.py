"""What a pair of images is to each other: the policy, as pure functions.

- ``exact``: the same bytes.
- ``copy``: the same picture, edited (resized, re-encoded, cropped, rotated, captioned,
  mirrored, grayscale...): vectors close, colours the same (or one side has none, and
  the luma of the other).
- ``recoloured``: the same design in other colours, or its light/dark version, or a gray
  version that is not the other made gray: vectors as close as a copy's, colours not (see
  :mod:`lookalike.colour`). Not a duplicate for
  the ``copies`` preset; a look-alike, for a person to judge.
- ``similar``: a look-alike below the copy threshold.
"""

from __future__ import annotations

from lookalike import colour, detail

EXACT = "exact"
COPY = "copy"
RECOLOURED = "recoloured"
SIMILAR = "similar"
RELATIONS = (EXACT, COPY, RECOLOURED, SIMILAR)

RECOLOURED_CHROMA = 0.4  # hue-distribution distance: copies of 120 photos p95 0.37, recolourings p5 0.43
# ... and for faint colours (colour.FAINT_CHROMA), the degrees their mean colour must turn
# too. Edited copies of 173 ImageNet photos of mean chroma 6-16 (JPEG q15, crops, contrast)
# pass the distance 0.75% of the time (a faint tint crosses a hue sector's edge), 0.2% once
# their tint must turn 60 degrees too. bench/lookalikes.py: its faint copies' tints turn at
# most 14 degrees (dupes library) and 26 (the 16 edits); its faint recolourings 26-133 (those
# under 60, MATE's dark scheme against its others, are left to the luma rule as before).
FAINT_TURN = 60.0
INVERTED_LAYOUT = -0.8  # light/dark layout correlation: inversions -1.0, letterboxed copies down to -0.6
DARK_LIGHT = 0.3  # mean-luminance gap of a dark and a light version (0.35 on GNOME's); copies <= 0.26
SAME_LAYOUT = 0.6  # ... with their layout kept (letterboxed copies: darker, but their layout moves)
# A gray copy keeps its original's luma (bench/lookalikes.py, 138 gray copies of colour
# originals: gain 0.91-1.02, offset -1..13 on 0-255); a black logo against a red one, 1.28 / -72.
GRAY_GAIN = 0.15
GRAY_OFFSET = 25.0


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
    if rel.gray_side is not None:
        return not _its_gray(*((a, b) if rel.gray_side else (b, a)))
    if rel.gray:
        return False
    return rel.chroma >= RECOLOURED_CHROMA and (not rel.faint or rel.turn >= FAINT_TURN)


def _its_gray(picture: bytes, gray: bytes) -> bool:
    """Whether ``gray`` can be ``picture`` made gray: its luma the same, where their
    pictures line up (else no evidence against it)."""
    fit = detail.tone(colour.detail_grid(picture), colour.detail_grid(gray))
    return fit is None or (abs(fit[0] - 1.0) <= GRAY_GAIN and abs(fit[1]) <= GRAY_OFFSET)


def colourless(a: bytes, b: bytes) -> bool:
    """Whether colours cannot tell signatures ``a`` and ``b`` apart: one is grayscale, or
    too faint for hues to count (only their luma can)."""
    rel = colour.compare(a, b)
    return rel.gray_side is not None or rel.faint


LUMA_RANGE = (32.0, 224.0)  # the luma levels over which :func:`luma_error` measures


def luma_error(picture: bytes | None, other: bytes | None) -> float | None:
    """How far ``other``'s luma is from ``picture``'s, where their pictures line up: the
    largest deviation of the tone map between them (:func:`detail.tone`) from the identity
    over :data:`LUMA_RANGE` (0-255 levels; ~0 for a gray copy of ``picture``); None when
    they do not line up or a grid is missing."""
    fit = detail.tone(colour.detail_grid(picture), colour.detail_grid(other))
    if fit is None:
        return None
    gain, offset = fit
    return max(abs((gain - 1.0) * x + offset) for x in LUMA_RANGE)


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
