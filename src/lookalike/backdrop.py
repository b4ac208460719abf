"""A flat backdrop around an opaque picture: a cut-out shown on black or on white.

A transparent picture (an icon, a logo, a cut-out photo) is indexed as a screen shows it:
on white, unless what it shows is white (:func:`lookalike.images.flatten`). Its copies
are opaque: a JPEG export or a screenshot shows it on whatever the exporter or the
desktop had behind it, and an icon indexed on white, met on black, looked like another
picture to the model. So a query whose edges are one flat black or white region (the
backdrop: connected to the edges, round most of them, a fair share of the picture) is
searched for a second time with that backdrop turned to the other tone
(:func:`lookalike.search.neighbours.search_vectors`), each hit keeping its better score:
the cut-out on white and on black, whichever its source was indexed on. A transparent
query is searched for on the other background too, where it shows there: an edit that
lightens a grey cut-out moves it from white to black (:func:`lookalike.images.flatten`).

Flat margins (letterbox bars; the empty canvas round a transparent picture padded to
another shape, shown on its background) change the picture's shape the model sees: a
tall cut-out padded to a square is a thin stroke there, where its source filled the
frame. So a query with such margins is also searched for as what lies inside them
(:func:`inside_margins`).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

TOLERANCE = 24  # levels (0-255) from pure black or white that still count as the backdrop (JPEG noise)
EDGES = 0.9  # share of the outermost rows and columns the backdrop must cover ...
MIN_SHARE, MAX_SHARE = 0.05, 0.95  # ... and of the picture: less is a frame's line, more is a blank


def backdrop(rgb: Image.Image) -> tuple[int, np.ndarray] | None:
    """The tone (0 or 255) and mask ([h, w] bool) of ``rgb``'s flat backdrop, or None."""
    if rgb.width < 8 or rgb.height < 8:
        return None
    best = None
    top, bottom, left, right = _edge_lines(rgb)
    rim = np.concatenate([top, bottom, left[1:-1], right[1:-1]])  # each edge pixel once
    for tone in (0, 255):
        around = float(_near(rim, tone).mean())  # each such edge pixel is in a region touching the edges
        if around < EDGES or (best is not None and around <= best[0]):  # most pictures stop here
            continue
        px = np.asarray(rgb)
        import cv2  # OpenCV: only queries on a backdrop get this far (decoder processes stay light)

        count, labels = cv2.connectedComponents(_near(px, tone).astype(np.uint8), connectivity=4)
        touching = np.zeros(count, bool)
        touching[_edges(labels)] = True
        touching[0] = False  # label 0: what is not near the tone
        mask = touching[labels]
        if MIN_SHARE <= mask.mean() <= MAX_SHARE:
            best = (around, tone, mask)
    return None if best is None else (best[1], best[2])


def _near(px: np.ndarray, tone: int) -> np.ndarray:
    """Which RGB pixels ([..., 3] uint8) are within :data:`TOLERANCE` of black or white."""
    return px.max(axis=-1) <= TOLERANCE if tone == 0 else px.min(axis=-1) >= 255 - TOLERANCE


def _edge_lines(rgb: Image.Image) -> list[np.ndarray]:
    """The top, bottom, left and right lines of pixels of ``rgb`` ([n, 3] each), read
    without converting the whole picture."""
    w, h = rgb.size
    boxes = ((0, 0, w, 1), (0, h - 1, w, h), (0, 0, 1, h), (w - 1, 0, w, h))
    return [np.asarray(rgb.crop(box)).reshape(-1, 3) for box in boxes]


def _edges(grid: np.ndarray) -> np.ndarray:
    """The outermost rows and columns of ``grid`` ([h, w, ...]), one after the other."""
    return np.concatenate([grid[0], grid[-1], grid[1:-1, 0], grid[1:-1, -1]])


def swapped(rgb: Image.Image) -> Image.Image | None:
    """``rgb`` with its flat backdrop (:func:`backdrop`) turned to the other tone (black to
    white, white to black), or None when it has none."""
    found = backdrop(rgb)
    if found is None:
        return None
    tone, mask = found
    px = np.array(rgb)
    px[mask] = 255 - tone
    return Image.fromarray(px, "RGB")


FLAT_LINE = 0.99  # share of a row or column within TOLERANCE of the tone: a line of a margin
MIN_CUT = 0.1  # the margins take at least this share of the width or the height ...
MIN_INSIDE = 16  # ... and leave a picture of at least this many pixels a side


def inside_margins(rgb: Image.Image) -> Image.Image | None:
    """``rgb`` cut to what lies inside its flat black or white margins, or None when they
    take less than :data:`MIN_CUT` of its width and of its height (or all of it)."""
    if rgb.width < 8 or rgb.height < 8:
        return None
    edges = _edge_lines(rgb)
    for tone in (0, 255):
        if not any(_near(line, tone).mean() >= FLAT_LINE for line in edges):
            continue  # no margin at any edge: most pictures stop here, before a pass over every pixel
        near = _near(np.asarray(rgb), tone)
        rows, cols = near.mean(axis=1) >= FLAT_LINE, near.mean(axis=0) >= FLAT_LINE
        top, bottom, left, right = _lead(rows), _lead(rows[::-1]), _lead(cols), _lead(cols[::-1])
        height, width = len(rows) - top - bottom, len(cols) - left - right
        if min(height, width) < MIN_INSIDE:
            continue  # blank, or hardly anything inside
        if (top + bottom) / len(rows) >= MIN_CUT or (left + right) / len(cols) >= MIN_CUT:
            return rgb.crop((left, top, left + width, top + height))
    return None


def _lead(flags: np.ndarray) -> int:
    """How many of ``flags`` are True before the first False."""
    return len(flags) if flags.all() else int(np.argmin(flags))
