"""Bands added around a picture: a caption bar laid below or above it on a taller canvas, a
letterbox or pillarbox border. Such a copy is larger than its source without holding more
of the picture, so the keep rules (:mod:`lookalike.search.keep`) weigh the picture's own
size, not the canvas's.

A member of a group is read only when it is larger than another member of another shape
(aspect ratio) with one side of the same length (bands added at the picture's own scale),
and its bands count only when all of this holds: they lie at the edges, they are flat
(half of each row within a few levels of one tone, and half of the rows flat across: a
caption's text aside), they end where the picture starts (a change of tone, as a sky's gradient into
a horizon does not), they make up the difference of shape, and what is left matches the
other member's picture. A crop of a photo with a plain sky above it is no copy with a
band added: its sky is not flat across, or its edge is soft, or the rest does not match.
Nor is a file with camera metadata the other lacks: that is the camera's original. And
where a frame and a picture do tie, the keep rules still prefer the larger frame before
quality and size (after camera metadata): a misjudged crop never outranks its original.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageOps

from lookalike.captions import MARGIN_SHARE as ACROSS  # a row flat across, as a caption bar's margin
from lookalike.captions import SAME_TONE, SHARE, STANDS_OUT, row_flatness  # flat as a caption bar
from lookalike.search.keep import camera_metadata
from lookalike.search.provenance import MAX_COMPARE_MEGAPIXELS as MAX_MEGAPIXELS  # non-JPEGs decode whole
from lookalike.storage.catalogue import FileRow

GRID = 256  # the long side of the luma grid bands are looked for on
FLAT_ROWS = 0.5  # the share of a band's rows flat across (a caption's text aside): a bar ~0.97; the
# plain sky or wall a crop cuts off a photo 0.04-0.19 (ImageNet photos: arch, steel drum, sewing machine)
SHAPE = 0.02  # aspect ratios this far apart (relative) are another shape
TOLERANCE = 0.02  # of the side: bands found vs the difference of shape
MATCH = 16.0  # mean level gap (on a 64x64 grid) between what is left and the other member's picture
COMPARE = 64


def picture_sizes(members: Sequence[FileRow]) -> dict[int, tuple[int, int]]:
    """The members whose canvas is another member's picture with flat bands added at its
    edges, by file id: (width, height) of the picture without them. Only what can decide
    the resolution rule is read: the largest member, and while it proves to be padded, the
    next largest (in a group of copies of one shape, nothing)."""
    sized = [m for m in members if m.width and m.height]
    out: dict[int, tuple[int, int]] = {}
    grids: dict[int, np.ndarray | None] = {}

    def grid(m: FileRow) -> np.ndarray | None:
        if m.id not in grids:
            grids[m.id] = _luma(m.path)
        return grids[m.id]

    for a in sorted(sized, key=lambda m: m.width * m.height, reverse=True):
        size = _picture(a, sized, grid)
        if size is None:
            break  # the largest picture is a's own: the rule is decided
        out[a.id] = size
    for a in [m for m in sized if m.id in out]:  # a member between a picture and its frame, not
        picture = out[a.id][0] * out[a.id][1]  # framed itself, outranks the picture: the frame
        if any(m.id not in out and picture < m.width * m.height < a.width * a.height for m in sized):
            del out[a.id]  # was matched to another, smaller crop: a keeps its own size
    return out


def _picture(
    a: FileRow, members: Sequence[FileRow], grid: Callable[[FileRow], np.ndarray | None]
) -> tuple[int, int] | None:
    """``a``'s picture size when it is another member's picture with bands added, else None."""
    shape = a.width / a.height
    others = [
        b
        for b in members
        if abs(b.width / b.height - shape) > SHAPE * shape
        and (b.width == a.width) != (b.height == a.height)  # bands added at the picture's own scale
        and b.width * b.height < a.width * a.height
        and not set(camera_metadata(a)) - set(camera_metadata(b))  # a camera's file is its original
    ]
    for b in sorted(others, key=lambda b: b.width * b.height, reverse=True):
        tall = b.width == a.width  # rows added (above or below), else columns
        if (la := grid(a)) is None:
            return None
        found = _inner(la if tall else la.T, (b.height / b.width) if tall else (b.width / b.height))
        if found is None or (lb := grid(b)) is None:
            continue
        lo, hi = found
        if _gap(la[lo:hi] if tall else la[:, lo:hi], lb) <= MATCH:  # the other's shape exactly:
            if tall:  # a copy of the same size ties with it
                return a.width, round(a.width * b.height / b.width)
            return round(a.height * b.width / b.height), a.height
    return None


def _luma(path: str) -> np.ndarray | None:
    """The file's luma on a grid of at most :data:`GRID` a side (a JPEG decoded reduced)."""
    unreadable = (OSError, ValueError, Image.DecompressionBombError, SyntaxError)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # a large one is refused below
        with contextlib.suppress(*unreadable), Image.open(path) as im:
            if im.width * im.height > MAX_MEGAPIXELS * 1e6 and im.format not in ("JPEG", "MPO"):
                return None  # a JPEG decodes reduced; another format whole: not for a tie-break
            im.draft("L", (GRID, GRID))
            small = ImageOps.exif_transpose(im).convert("L")  # as the catalogue's width and height
            small.thumbnail((GRID, GRID), Image.Resampling.BOX)
            return np.asarray(small, np.float32)
    return None


def _inner(luma: np.ndarray, rows_per_col: float) -> tuple[int, int] | None:
    """Rows [lo, hi) of ``luma`` left when its flat edge bands are taken off, if those bands
    make the rest ``rows_per_col`` rows per column (the other member's shape); else None."""
    rows, cols = luma.shape
    want = rows_per_col * cols
    if rows - want < max(2, TOLERANCE * rows):
        return None
    tone, share = row_flatness(luma)
    top = _band(tone, share)
    bottom = _band(tone[::-1], share[::-1])
    if abs(rows - top - bottom - want) > max(2, TOLERANCE * rows):
        return None
    return top, rows - bottom


def _band(tone: np.ndarray, share: np.ndarray) -> int:
    """How many rows from the start are a flat band of one tone (0 if none), ending at a
    change of tone: the picture's first row."""
    n = 0
    while n < len(tone) and share[n] >= SHARE and abs(tone[n] - tone[0]) <= SAME_TONE:
        n += 1
    if n == 0 or n >= len(tone) or (share[:n] >= ACROSS).mean() < FLAT_ROWS:
        return 0
    edge = tone[min(n + 1, len(tone) - 1)]  # a row past the blurred edge
    return n if abs(edge - np.median(tone[:n])) > STANDS_OUT else 0


def _gap(a: np.ndarray, b: np.ndarray) -> float:
    """Mean level gap of two luma grids, both resized to :data:`COMPARE` a side."""
    if min(a.shape) < 4 or min(b.shape) < 4:
        return float("inf")

    def small(x: np.ndarray) -> np.ndarray:
        im = Image.fromarray(x.astype(np.uint8)).resize((COMPARE, COMPARE), Image.Resampling.BOX)
        return np.asarray(im, np.float32)

    return float(np.abs(small(a) - small(b)).mean())
