"""Caption bars: flat bands laid across a picture, found and filled for a query's second look
(and left out when a transparent picture's background is chosen, :func:`lookalike.images.flatten`).

A shared copy often carries a caption: a band of one flat tone across the whole width
with a line of text in it (a meme's bar, "photo: ...", a watermark strip). To the
model such bars are the strongest thing in the picture, so a captioned copy of a
quiet picture (a dark wallpaper, a flat design) lands nearer other captioned pictures
than its original. The pixel gap (:mod:`lookalike.detail`) already leaves caption rows
out when it compares two pictures; this gives the model the same chance: each bar is
replaced by what lies on either side of it (a vertical blend of the rows just above
and below), so the model sees about the picture without its caption. A search embeds a
query with bars both ways and keeps each hit's better score
(:func:`lookalike.search.neighbours.search_vectors`); indexed files are embedded as they
are (filled there too, a library's captioned copies moved its calibration: README).

A band counts as a caption bar only where a caption differs from a picture: it is flat
(half of each row within a few levels of one tone, the text aside, and a row above or
below the text flat across: water or a wall is flat-ish, not so), white or black, it
lies inside the picture with rows of it on both sides (a letterbox bar at an edge is
not filled: the descriptors and the grid's letterbox rule see to those), it stands out
from both sides, it is thin (at most :data:`MAX_THICKNESS` of the height), and there
are few of them (a striped design has many bands and none is filled). A query without
such bars is searched for once, as before. (:func:`lookalike.search.geometric._bars`
finds the bars one of two aligned pictures has and the other has not: another question,
asked of a pair.)
"""

from __future__ import annotations

import numpy as np
from PIL import Image

ROWS, COLS = 256, 192  # the luma grid bars are looked for on (at most; smaller pictures as they are)
SPREAD = 10.0  # levels (0-255) from a row's tone within which a pixel counts as the tone ...
SHARE = 0.5  # ... and the share of a row of a bar that must (a line of text crosses the rest) ...
MARGIN_SHARE, MARGINS = 0.9, 1  # ... and of this many of its rows (above or below the text)
DARK, LIGHT = 25.0, 230.0  # a bar's tone is at most DARK or at least LIGHT (black or white)
SAME_TONE = 8.0  # levels: a bar's next row keeps its tone within this
STANDS_OUT = 12.0  # levels: a bar's tone differs this much from the rows beyond each side
MIN_THICKNESS, MAX_THICKNESS = 0.015, 0.12  # a bar's share of the height
MAX_BARS, MAX_COVER = 4, 0.3  # more bars, or more of the height in bars: a striped picture
GLYPH, MIN_GLYPHS = 24.0, 0.01  # levels off the tone a glyph's pixel is; the share of a bar they cover
CROSSING, MAX_CROSSING = 0.9, 0.01  # columns marked in this share of a bar's rows: at most this share
EDGE, SOURCE = 0.005, 0.01  # of the height: a bar's blurred edge, filled with it; the rows it is filled from
BEYOND = 2  # rows past a bar's edge its sides are read at (the edge is blurred by resizing)


def bars(luma: np.ndarray) -> list[tuple[int, int]]:
    """The caption bars of a luma grid ([rows, cols], 0-255): (first row, end row) each,
    in order; none when the flat bands found do not look like a caption's (see module)."""
    return [(a, b) for a, b, _ in _bars(luma)]


def row_flatness(luma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's tone (median) and the share of its pixels within :data:`SPREAD` of it."""
    tone = np.median(luma, axis=1)
    return tone, (np.abs(luma - tone[:, None]) <= SPREAD).mean(axis=1)


def _bars(luma: np.ndarray) -> list[tuple[int, int, float]]:
    """:func:`bars`, each with its tone."""
    rows = len(luma)
    if rows < 8 or luma.shape[1] < 8:
        return []
    tone, share = row_flatness(luma)
    flat = share >= SHARE
    bands: list[tuple[int, int]] = []
    start = None
    for r in range(rows + 1):
        if start is not None and (r == rows or not flat[r] or abs(tone[r] - tone[r - 1]) > SAME_TONE):
            bands.append((start, r))
            start = None
        if start is None and r < rows and flat[r]:
            start = r
    standing = []  # flat bands inside the picture that stand out of it
    for a, b in bands:
        thickness = (b - a) / rows
        if (share[a:b] >= MARGIN_SHARE).sum() < MARGINS:
            continue  # flat-ish (water, a wall) but no row of it flat across, as a bar's margins are
        if not MIN_THICKNESS <= thickness <= MAX_THICKNESS or (b - a) < 2:
            continue
        above, below = a - BEYOND, b - 1 + BEYOND
        if above < 0 or below >= rows:
            continue  # at an edge: a letterbox bar or a border, not a caption over the picture
        level = float(np.median(tone[a:b]))
        if DARK < level < LIGHT:
            continue  # a caption bar is white or black; a band of another tone is the picture's
        if min(abs(level - tone[above]), abs(level - tone[below])) > STANDS_OUT:
            standing.append((a, b, level))
    if len(standing) > MAX_BARS or sum(b - a for a, b, _ in standing) > MAX_COVER * rows:
        return []  # a striped design, whatever is written on it
    return [(a, b, level) for a, b, level in standing if _written(luma[a:b], level)]


def _written(band: np.ndarray, level: float) -> bool:
    """Whether a flat band of tone ``level`` carries a line of text: marks that stand out of
    it (:data:`GLYPH` levels) in some share of it, and hardly a column marked from its top
    row to its bottom one (what crosses a band from edge to edge is part of the picture: an
    object in front of a plain background, the sides of an icon)."""
    marked = np.abs(band - level) > GLYPH
    crossing = marked.mean(axis=0) >= CROSSING
    return marked.mean() >= MIN_GLYPHS and crossing.mean() <= MAX_CROSSING


def spans(rgb: Image.Image) -> list[tuple[int, int]]:
    """The rows [top, end) of ``rgb`` that its caption bars (:func:`bars`) cover, each
    measured again on the picture's own rows (those of its tone) and widened by its blurred
    edge (:data:`EDGE`)."""
    w, h = rgb.size
    small = rgb.convert("L")
    if w > COLS or h > ROWS:
        small = small.resize((min(w, COLS), min(h, ROWS)), Image.Resampling.BOX)
    found = _bars(np.asarray(small, np.float32))
    if not found:
        return []
    picture = np.asarray(rgb)
    scale = h / small.height
    edge = max(2, round(EDGE * h))
    out = []
    for a, b, level in found:
        lo, hi = max(0, int((a - 2) * scale)), min(h, int(np.ceil((b + 2) * scale)))
        luma = picture[lo:hi].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        on = np.flatnonzero(np.abs(np.median(luma, axis=1) - level) <= SPREAD)
        if len(on):
            out.append((max(0, lo + int(on[0]) - edge), min(h, lo + int(on[-1]) + 1 + edge)))
    return out


def filled(rgb: Image.Image) -> Image.Image:
    """``rgb`` with its caption bars (:func:`spans`) replaced by a vertical blend of the
    rows beyond them; ``rgb`` itself when none is found or can be filled. Each is filled
    from the mean of a few rows (:data:`SOURCE`) on each side: what the model sees then
    hardly depends on the size or the compression of the copy."""
    h = rgb.height
    source = max(2, round(SOURCE * h))
    inside = [(top, end) for top, end in spans(rgb) if top >= source and end + source <= h]
    if not inside:  # none, or every bar too near an edge to be filled from both sides
        return rgb
    px = np.asarray(rgb).astype(np.float32)
    for top, end in inside:
        above, below = px[top - source : top].mean(axis=0), px[end : end + source].mean(axis=0)
        t = (np.arange(top, end, dtype=np.float32) - (top - 1)) / (end - (top - 1))
        px[top:end] = (1 - t)[:, None, None] * above + t[:, None, None] * below
    return Image.fromarray(np.clip(px + 0.5, 0, 255).astype(np.uint8), "RGB")
