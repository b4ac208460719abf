"""How much of two pictures still differs once a copy's edit is undone.

Near-identical shots of one scene (a burst, a retake, a stereo pair, frames of a video)
score as high as copies in the features and in the 16 x 16 colour signature: their
differences are small and local (people who moved, parallax at edges, another light).
Copies differ by what an edit does to the whole picture: a re-encode, resize or blur,
a change of brightness, contrast or colour, a crop, a mirror, a small rotation, black or
white bars, a caption across the picture. So each image keeps a luma grid of its picture
(:data:`SIDE` cells on the longer side, its aspect kept; appended to its colour
signature, see lookalike.colour), and :func:`residuals` compares two grids as a copy
would be compared with its original: letterbox bars trimmed; the best of as-is,
mirrored, one's centre (80% or 60% of a side) against the other, or one turned back by
a small angle; a gain and offset fitted for brightness and contrast; rows that differ
across most of their width (caption bars) left out. What is left is the residual: ~0-2
for copies, tens for another shot of the same scene. For `dupes`, which deletes, its worst
small patch counts too: another shot may differ in one place only (a ball that moved).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from PIL import Image

SIDE = 64  # cells on the longer side of the grid kept (luma, one byte each; 2 header bytes)
FINE = 64  # grids are compared resampled to FINE x FINE ...
POOL = 2  # ... then averaged POOL x POOL (_softened_pool): a crop's cells, resampled finer, match
ZOOMS = (0.8, 0.6)  # central crops (share of a side) tried: a crop's grid is its source's centre
ANGLES = (8.0, -8.0, 5.0, -5.0)  # small rotations (degrees, canvas expanded) tried
BAR_LEVELS = (16.0, 240.0)  # a letterbox bar is darker or lighter than these (0-255)
BAR_FLAT = 3.0  # ... and this flat (standard deviation along it)
WIDE = 20.0  # a pixel differing by more than this (0-255) ...
WIDE_ROW = 0.6  # ... in this share of a row makes it an overlay row (a caption bar) ...
WIDE_MAX = 0.25  # ... left out of the fit when at most this share of rows are such
BLOCK = 64  # pairs compared at once, every way each (~40 MB)
# The residual is this quantile of what is left. bench/lookalikes.py, full runs: 0.9 recall@1
# 0.992, text 0.960, best F1 0.897, dupes 0.883 / 0.907; 0.95: 0.988, text 0.943, F1 0.903,
# dupes 0.892 / 0.933 (a caption's glyphs count more: two targets lost for small gains).
QUANTILE = 0.9
# `dupes` adds how far the worst PATCH x PATCH window of what is left (of the (FINE / POOL)^2
# cells compared, inside their outer ring) exceeds PATCH_FREE: another shot differs in one
# place (someone moved, an object turned), an edit all over. Copies' worst window: median
# 1.5, crops 95% under 10, captions not left out as bars up to 30; shots of one scene 10-60.
# bench/lookalikes.py's dupes library, pair precision / recall of the copies preset, on stored
# vectors: none 0.915 / 0.889; 2 x 2, free 12: 0.988 / 0.880; free 16: 0.982 / 0.882; 4 x 4
# blocks, free 12: 0.957 / 0.892; 8 x 8: 0.916 / 0.889. Full run (2 x 2 inside the ring, free
# 12): 0.984 / 0.882; edited 0.750 / 0.949 -> 0.929 / 0.940; similar 0.626 -> 0.769 / 0.937.
PATCH = 2
PATCH_FREE = 12.0


def grid(image: Image.Image) -> bytes:
    """The luma grid of a picture: its longer side reduced to :data:`SIDE` cells (box
    filter; a smaller picture as it is), rows and columns in the first two bytes."""
    w, h = image.size
    scale = min(1.0, SIDE / max(w, h, 1))  # a picture smaller than the grid is kept as it is
    cols, rows = max(1, min(SIDE, round(w * scale))), max(1, min(SIDE, round(h * scale)))
    small = image.convert("L").resize((cols, rows), Image.Resampling.BOX, reducing_gap=3.0)
    return bytes((rows, cols)) + small.tobytes()


def unpack(data: bytes) -> np.ndarray | None:
    """A grid's cells ([rows, cols] float64, 0-255), or None for one that cannot be read."""
    rows, cols = data[0], data[1]
    if rows * cols != len(data) - 2 or not rows or not cols:
        return None
    return np.frombuffer(data, np.uint8, offset=2).reshape(rows, cols).astype(np.float64)


def _flat(lines: np.ndarray) -> np.ndarray:
    """Which of ``lines`` (rows) are flat and dark or light enough to be a letterbox bar."""
    mean = lines.mean(axis=1)
    return (lines.std(axis=1) < BAR_FLAT) & ~((BAR_LEVELS[0] <= mean) & (mean <= BAR_LEVELS[1]))


def _bars(lines: np.ndarray) -> int:
    """How many of ``lines`` (rows, or columns transposed) are a letterbox bar at each end:
    bars on both ends, about as thick (a letterbox is centred), or none."""
    n = len(lines)
    flat = _flat(lines)
    head = n if flat.all() else int(np.argmin(flat))
    tail = n if flat.all() else int(np.argmin(flat[::-1]))
    if head + tail >= n * 2 // 3 or abs(head - tail) > 1 + n // 50:
        return 0
    return min(head, tail)


def _content(cells: np.ndarray) -> np.ndarray:
    """The cells inside letterbox bars."""
    rows, cols = _bars(cells), _bars(np.ascontiguousarray(cells.T))
    return cells[rows : cells.shape[0] - rows, cols : cells.shape[1] - cols]


def _project(cells: np.ndarray, down: np.ndarray, across: np.ndarray) -> np.ndarray:
    """``cells`` resampled along each axis by a weight matrix ([out, rows], [out, cols])."""
    return down @ cells @ across.T


@lru_cache(maxsize=1024)  # per line length and box: the turned-back views' boxes vary with the shape
def _resampling(n: int, start: float, end: float) -> np.ndarray:
    """[FINE, n] float64: the weights Pillow's bilinear resize gives ``n`` cells, from
    ``start`` to ``end`` of them, making FINE (read off resizing an identity matrix: the
    same weights, its antialiasing when reducing included, without its per-call cost)."""
    eye = Image.fromarray(np.eye(n, dtype=np.float32))
    out = eye.resize((FINE, n), Image.Resampling.BILINEAR, box=(start, 0.0, end, float(n)))
    weights = np.asarray(out, np.float64).T
    weights.setflags(write=False)
    return weights


def _softening() -> np.ndarray:
    """[FINE / POOL, FINE]: a line blurred by [1, 2, 1] / 4 (ends repeated), then averaged
    in pairs (:data:`POOL`): what resampling moves by a fraction of a cell hardly shows,
    what differs still does. Both steps at once: [1, 3, 3, 1] / 8 at stride 2."""
    out = np.zeros((FINE // POOL, FINE))
    for i in range(FINE // POOL):
        for at, weight in zip((2 * i - 1, 2 * i, 2 * i + 1, 2 * i + 2), (1, 3, 3, 1), strict=True):
            out[i, min(max(at, 0), FINE - 1)] += weight / 8
    return out


_SOFTENING = _softening()


@lru_cache(maxsize=1024)  # at most 16 MB
def _compared(n: int, start: float = 0.0, end: float | None = None, share: float = 1.0) -> np.ndarray:
    """[FINE / POOL, n] read only: ``n`` cells (from ``start`` to ``end``) as compared: resampled
    to FINE, the centre ``share`` of that resampled to FINE again (a crop's view), softened."""
    weights = _resampling(n, start, float(n) if end is None else end)
    if share < 1.0:
        lo, hi = FINE * (1 - share) / 2, FINE * (1 + share) / 2
        weights = _resampling(FINE, lo, hi) @ weights
    out = _SOFTENING @ weights
    out.setflags(write=False)
    return out


def _turned_back(cells: np.ndarray, angle: float) -> np.ndarray | None:
    """The picture that, turned by ``angle`` with its canvas expanded, gave ``cells``, as
    compared (:func:`_compared`)."""
    rows, cols = cells.shape
    c, s = np.cos(np.radians(abs(angle))), np.sin(np.radians(abs(angle)))
    # the canvas of a turned w x h is (c w + s h) x (s w + c h): solved for w and h
    width, height = (c * cols - s * rows) / (c * c - s * s), (c * rows - s * cols) / (c * c - s * s)
    if width < 4 or height < 4:
        return None
    at, weights = _rotation(rows, cols, -angle)
    back = (cells.ravel()[at] * weights).sum(axis=0).reshape(rows, cols)
    # a long strip (13 x 64 cells at 8 degrees) solves to a hair wider than its canvas
    width, height = min(width, cols), min(height, rows)
    left, top = (cols - width) / 2, (rows - height) / 2
    return _project(back, _compared(rows, top, top + height), _compared(cols, left, left + width))


@lru_cache(maxsize=256)  # one per grid shape and angle: at most 32 MB
def _rotation(rows: int, cols: int, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's bilinear ``rotate(angle)`` of a rows x cols grid (about its centre, canvas
    kept, outside 0) as a gather: the 4 cells each output cell reads ([4, rows * cols]
    indices) and their weights, as Pillow samples them (pixel centres, edges clamped)."""
    rad = -np.radians(angle)  # as Image.rotate: its matrix maps output to input cells
    cos, sin = round(float(np.cos(rad)), 15), round(float(np.sin(rad)), 15)
    cx, cy = cols / 2, rows / 2
    y, x = np.mgrid[0:rows, 0:cols] + 0.5
    xin = cos * (x - cx) + sin * (y - cy) + cx
    yin = -sin * (x - cx) + cos * (y - cy) + cy
    inside = (xin >= 0) & (xin < cols) & (yin >= 0) & (yin < rows)
    x0, y0 = np.floor(xin - 0.5), np.floor(yin - 0.5)
    dx, dy = xin - 0.5 - x0, yin - 0.5 - y0
    xa, xb = np.clip(x0, 0, cols - 1), np.clip(x0 + 1, 0, cols - 1)
    ya = np.clip(y0, 0, rows - 1)
    yb = np.where((y0 + 1 >= 0) & (y0 + 1 < rows), y0 + 1, ya)
    at = np.stack([ya * cols + xa, ya * cols + xb, yb * cols + xa, yb * cols + xb]).astype(np.int32)
    weights = np.stack([(1 - dx) * (1 - dy), dx * (1 - dy), (1 - dx) * dy, dx * dy]) * inside
    at, weights = at.reshape(4, -1), weights.reshape(4, -1).astype(np.float32)
    at.setflags(write=False)
    weights.setflags(write=False)
    return at, weights


@lru_cache(maxsize=2048)  # one photo is compared with many (search hits, groups, calibration): 64 MB
def _views(data: bytes) -> np.ndarray | None:
    """A grid's views, compared at (FINE / POOL)^2 cells: [VIEWS, s, s] read only (None for a
    grid that cannot be read). In order: the picture, its centre (each of :data:`ZOOMS`),
    the picture inside letterbox bars, then turned back by each of :data:`ANGLES`."""
    cells = unpack(data)
    if cells is None:
        return None
    (rows, cols), inside = cells.shape, _content(cells)
    whole = _project(cells, _compared(rows), _compared(cols))
    views = [whole]
    views += [_project(cells, _compared(rows, share=z), _compared(cols, share=z)) for z in ZOOMS]
    views.append(whole if inside.shape == cells.shape else _project(inside, *map(_compared, inside.shape)))
    for angle in ANGLES:
        back = _turned_back(cells, angle)
        views.append(whole if back is None else back)
    out = np.stack(views).astype(np.float32)
    out.setflags(write=False)
    return out


WHOLE, INSIDE, TURNED = 0, 1 + len(ZOOMS), 2 + len(ZOOMS)  # positions in _views


def _fit(x: np.ndarray, y: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """|y - (g x + o)| ([n, s, s]), g and o least squares over the ``keep`` rows ([n, s])."""
    w = keep.astype(np.float32)
    total = w.sum(axis=1) * x.shape[-1]
    mx = np.einsum("nr,nrc->n", w, x) / total
    my = np.einsum("nr,nrc->n", w, y) / total
    dx = x - mx[:, None, None]
    dy = y - my[:, None, None]
    var = np.maximum(np.einsum("nr,nrc->n", w, dx * dx), 1e-3)
    dy -= (np.einsum("nr,nrc->n", w, dx * dy) / var)[:, None, None] * dx
    return np.abs(dy, out=dy)


def _explained(x: np.ndarray, y: np.ndarray, first: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How y is left unexplained by x: the residual ([n, s, s]) and the rows kept ([n, s]),
    overlay rows left out. ``first``: the residual of a fit over every row; a second fit
    leaves out the quarter of rows that one explains worst, the rows that differ across
    their width then are left out of the last."""
    n, side = len(x), x.shape[-1]
    worst = np.argsort(first.mean(axis=2), axis=1)[:, -side // 4 :]
    keep = np.ones((n, side), bool)
    np.put_along_axis(keep, worst, False, axis=1)
    wide = (_fit(x, y, keep) > WIDE).mean(axis=2) >= WIDE_ROW
    few = wide.sum(axis=1) <= WIDE_MAX * side  # more than a few bars: the picture differs
    edges = wide.copy()  # a bar's edge rows, blurred with the picture, are left out with it
    edges[:, 1:] |= wide[:, :-1]
    edges[:, :-1] |= wide[:, 1:]
    keep = ~edges
    keep[~few] = True
    return _fit(x, y, keep), keep


def _candidates(a: np.ndarray, b: np.ndarray):
    """(x, y) pairs of views ([n, VIEWS, s, s] each), one per way a copy can be related
    to its original."""
    for x in (a, a[..., ::-1]):
        yield x[:, WHOLE], b[:, WHOLE]
        for k in range(1, 1 + len(ZOOMS)):
            yield x[:, WHOLE], b[:, k]
            yield x[:, k], b[:, WHOLE]
        yield x[:, INSIDE], b[:, INSIDE]
    for k in range(TURNED, a.shape[1]):
        yield a[:, k], b[:, WHOLE]
        yield a[:, WHOLE], b[:, k]


def residuals(a: Sequence[bytes | None], b: Sequence[bytes | None], local: bool = False) -> np.ndarray:
    """Per pair of grids (``None``, or one that cannot be read: 0, no evidence), the 90th
    percentile luma difference (0-255) left once the edit that explains the pair best (the
    lowest mean residual) is undone; if ``local``, plus how far its worst patch exceeds
    :data:`PATCH_FREE` (another shot differs in one place)."""
    return compare(a, b, local, spread=False)[0]


def compare(
    a: Sequence[bytes | None], b: Sequence[bytes | None], local: bool = False, spread: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`residuals`, and (if ``spread``, else 0) how much the pictures' luma varies
    where they were compared (the lower standard deviation of the two, 0-255, over the rows
    kept; 0 where no evidence): a small residual between two flat pictures says little."""
    out = np.zeros(len(a), np.float32)
    spreads = np.zeros(len(a), np.float32)
    pairs = enumerate(zip(a, b, strict=True))
    views = [(n, _views(bytes(x)), _views(bytes(y))) for n, (x, y) in pairs if x and y]
    known = [(n, va, vb) for n, va, vb in views if va is not None and vb is not None]
    for at in range(0, len(known), BLOCK):
        part = known[at : at + BLOCK]
        n = len(part)
        va, vb = np.stack([p[1] for p in part]), np.stack([p[2] for p in part])
        ways = list(_candidates(va, vb))  # every way at once: [ways * n, s, s]
        x, y = np.concatenate([w[0] for w in ways]), np.concatenate([w[1] for w in ways])
        r, keep = _explained(x, y, _fit(x, y, np.ones(x.shape[:1] + x.shape[-1:], bool)))
        mean = (r * keep[..., None]).sum(axis=(1, 2)) / (keep.sum(axis=1) * r.shape[-1])
        chosen = mean.reshape(len(ways), n).argmin(axis=0) * n + np.arange(n)  # the way that explains
        residual, kept = r[chosen], keep[chosen]  # the pair best (the first, on a tie)
        varies = np.zeros(n, np.float32)
        if spread:
            varies = np.minimum(_spread(x[chosen], kept), _spread(y[chosen], kept))
        left = _quantile(residual, kept, QUANTILE)
        if local:
            left += np.maximum(_patch(residual, kept) - np.float32(PATCH_FREE), 0)
        where = [p[0] for p in part]
        out[where], spreads[where] = left, varies
    return out, spreads


def _spread(x: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The standard deviation of each grid ([n, s, s]) over its ``keep`` rows ([n, s])."""
    w = np.broadcast_to(keep[..., None], x.shape).astype(np.float32)
    total = np.maximum(w.sum(axis=(1, 2)), 1.0)
    mean = (x * w).sum(axis=(1, 2)) / total
    return np.sqrt(((x - mean[:, None, None]) ** 2 * w).sum(axis=(1, 2)) / total)


def _patch(r: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The largest mean residual of a :data:`PATCH` x :data:`PATCH` window of each residual
    ([n, s, s]) over its kept rows ([n, s]; rows left out count as 0), inside its outer
    ring of cells: where a rotation's corners, a crop's resampling and clipped edges show."""
    n, k = len(r), PATCH
    inner = np.where(keep[:, 1:-1, None], r[:, 1:-1, 1:-1], 0.0)
    sums = np.pad(inner, ((0, 0), (1, 0), (1, 0))).cumsum(1).cumsum(2)
    windows = sums[:, k:, k:] - sums[:, :-k, k:] - sums[:, k:, :-k] + sums[:, :-k, :-k]
    return windows.reshape(n, -1).max(axis=1) / np.float32(k * k)


def tone(a: bytes | None, b: bytes | None) -> tuple[float, float] | None:
    """The gain and offset that map grid ``a``'s luma onto ``b``'s, as their pictures line
    up best (the views :func:`residuals` tries: as-is, mirrored, either one's centre, inside
    letterbox bars, turned back), or None when none lines up (luma correlation under
    :data:`TONE_ALIGNED`) or a grid cannot be read."""
    va, vb = (_views(bytes(g)) if g else None for g in (a, b))
    if va is None or vb is None:
        return None
    best = (-1.0, 0.0, 0.0)
    for x, y in _candidates(va[None], vb[None]):
        x, y = x.ravel(), y.ravel()
        if x.std() < 1e-3 or y.std() < 1e-3:
            continue
        r = float(np.corrcoef(x, y)[0, 1])
        if r > best[0]:
            gain = r * float(y.std() / x.std())
            best = (r, gain, float(y.mean() - gain * x.mean()))
    return None if best[0] < TONE_ALIGNED else best[1:]


TONE_ALIGNED = 0.9  # luma correlation of two grids whose tone is compared


def _quantile(r: np.ndarray, keep: np.ndarray, q: float) -> np.ndarray:
    """The ``q`` quantile of each residual ([n, s, s]) over its kept rows ([n, s])."""
    n, side = len(r), r.shape[-1]
    ordered = np.sort(np.where(keep[..., None], r, -1.0).reshape(n, -1), axis=1)  # left out first
    left_out = (~keep).sum(axis=1) * side
    at = left_out + np.floor(q * (side * side - left_out - 1)).astype(int)
    return ordered[np.arange(n), at]
