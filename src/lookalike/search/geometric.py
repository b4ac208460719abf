"""Geometric verification of `dupes` pairs whose features agree but whose grids do not.

The pixel gap (:mod:`lookalike.search.metric`) compares two pictures' stored grids,
undoing the edits it knows by trying them: a central crop of 80% or 60%, a mirror, a
small turn, letterbox bars, a caption bar across most of a row. A crop elsewhere or of
another size, or a textured picture whose grid resampled to a crop's does not match cell
for cell, is left with a large gap; so is a caption over a light part of the picture (the
bar differs only where its glyphs are). The features of such copies still agree.

So a pair whose features pass the threshold but whose gap keeps it out is verified from
its files, as copy-detection systems do: both are read at :data:`SIDE` px, their ORB
features matched (a mirrored copy: against the mirrored picture too), and a similarity
transform (scale, turn, shift) fitted with RANSAC. When one picture's frame lies inside
the other's, the larger is cut and turned to it (the crop undone), rows that are a flat
band in one only (caption bars) are taken from the other, and the pair's gap is measured
again on what is left, in the same units (:func:`lookalike.search.metric.pixel_gaps`).
Another shot of the scene still differs where someone moved, another colour scheme in
colour: only an edit a copy's pixels can be brought back from is undone.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import BinaryIO

import cv2
import numpy as np
from PIL import Image

from lookalike import colour, detail
from lookalike.images import ImageError, screen_view
from lookalike.search import metric

SIDE = 384  # px of the longer side the pictures are compared at
FEATURES = 600  # ORB keypoints per picture
RATIO = 0.8  # Lowe's ratio test of the two nearest descriptors
REPROJECTION = 3.0  # px at SIDE: a match within this of where the transform puts it is an inlier
MIN_INLIERS = 12  # fewer matches agreeing on one transform: no alignment (flat pictures have few)
SURE_INLIERS = 40  # this many as it is: the mirror image is not tried
INSIDE = 0.03  # share of a side one frame may stick out of the other and still count as inside
MIN_SCALE, MAX_SCALE = 0.2, 5.0  # a copy is resized at most this much against its source
BAND_SPREAD = 6.0  # a row is a flat band where this share of it ...
BAND_SHARE = 0.6  # ... is within BAND_SPREAD levels of its median (a caption bar, glyphs aside)
BAND_DIFFERS = 10.0  # ... and of a tone this far from the median of the other picture's row (0-255), ...
BAND_COVERS, BAND_WIDE = 20.0, 0.6  # ... or the other differs from its fill by this in this share of the row
MAX_BANDS = 0.25  # more rows than this share in bars: not an overlay, the pictures differ
BAR_ROWS = 0.1  # ... or one bar thicker than this share of the rows
MIN_BAR_ROWS = 0.015  # ... and a bar is at least this thick (a horizon a row off is no bar)
MIN_SIDE = 16  # px: a picture, or what is left of two on their common ground, to compare
VIEW_SIDE = 224  # the colour signature's input, as the indexer makes it from its model input
MAX_COLOUR_GAP = 30.0  # pairs whose stored colour gap is larger differ in colour, not by an edit undone here
THREADS = 2  # pairs verified at once (OpenCV and Pillow let go of the GIL)
CACHE = 256  # pictures kept at most with their features (~0.5 MB each; a file is in several pairs)


@dataclass
class _Picture:
    rgb: np.ndarray  # [h, w, 3] uint8, longer side <= SIDE
    gray: np.ndarray
    _features: dict[bool, tuple[np.ndarray, np.ndarray | None]] = field(default_factory=dict)

    def features(self, mirrored: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """ORB keypoints ([n, 2]) and descriptors ([n, 32] or None) of the picture, or of its
        mirror image; found once (two threads may both find them: the same)."""
        if mirrored not in self._features:
            gray = np.ascontiguousarray(self.gray[:, ::-1]) if mirrored else self.gray
            keypoints, descriptors = cv2.ORB_create(FEATURES).detectAndCompute(gray, None)
            self._features[mirrored] = np.float32([k.pt for k in keypoints]).reshape(-1, 2), descriptors
        return self._features[mirrored]


class _Pictures:
    """Pictures read once and kept, by path (None where unreadable), for as long as pairs
    still to be verified need them (``uses``: pairs per path), and up to :data:`CACHE` at
    once: past that, the least recently used goes first."""

    def __init__(self, uses: Counter[str]) -> None:
        self._kept: OrderedDict[str, _Picture | None] = OrderedDict()
        self._left = uses
        self._lock = threading.Lock()

    def get(self, path: str) -> _Picture | None:
        with self._lock:
            if path in self._kept:
                self._kept.move_to_end(path)
                return self._kept[path]
        picture = read(path)
        with self._lock:
            if self._left[path] > 0:  # (not released meanwhile by a thread that read it too)
                if len(self._kept) >= CACHE:
                    self._kept.popitem(last=False)
                self._kept[path] = picture
        return picture

    def release(self, path: str) -> None:
        """One pair that needed ``path`` is done: dropped once no pair left needs it."""
        with self._lock:
            self._left[path] -= 1
            if self._left[path] <= 0:
                self._kept.pop(path, None)


def read(path: str | BinaryIO) -> _Picture | None:
    """A file's picture (or an open image's) at :data:`SIDE` px (None: unreadable or too
    small to compare)."""
    try:
        rgb = np.ascontiguousarray(np.asarray(screen_view(path, SIDE), np.uint8))
    except ImageError:  # screen_view says so for whatever cannot be read (an OSError too)
        return None
    if min(rgb.shape[:2]) < MIN_SIDE:
        return None
    return _Picture(rgb, cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))


def _transform(a: _Picture, b: _Picture) -> tuple[np.ndarray, bool] | None:
    """The similarity taking ``b``'s pixels (mirrored, if so) onto ``a``'s, with the most
    inliers; None when neither way has :data:`MIN_INLIERS`."""
    points_a, desc_a = a.features()
    best: tuple[int, np.ndarray, bool] | None = None
    if desc_a is None or len(desc_a) < 2:
        return None
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    for mirrored in (False, True):
        if mirrored and best is not None and best[0] >= SURE_INLIERS:
            break  # aligned as it is: no mirror image to look for
        points_b, desc_b = b.features(mirrored)
        if desc_b is None or len(desc_b) < 2:
            continue
        pairs = [p for p in matcher.knnMatch(desc_b, desc_a, k=2) if len(p) == 2]
        good = [m for m, n in pairs if m.distance < RATIO * n.distance]
        if len(good) < MIN_INLIERS:
            continue
        src = points_b[[m.queryIdx for m in good]]
        dst = points_a[[m.trainIdx for m in good]]
        matrix, inliers = cv2.estimateAffinePartial2D(
            src, dst, method=cv2.RANSAC, ransacReprojThreshold=REPROJECTION
        )
        if matrix is None:
            continue
        count = int(inliers.sum())
        scale = float(np.hypot(*matrix[:, 0]))
        if count >= MIN_INLIERS and MIN_SCALE <= scale <= MAX_SCALE and (best is None or count > best[0]):
            best = (count, matrix, mirrored)
    return None if best is None else (best[1], best[2])


def _sticks_out(matrix: np.ndarray, size: tuple[int, int], frame: tuple[int, int]) -> float:
    """How far the rectangle ``size`` (w, h), mapped by ``matrix``, sticks out of ``frame``
    at most, as a share of the frame's side (<= 0: inside)."""
    w, h = size
    corners = np.float32([[0, 0], [w, 0], [0, h], [w, h]]) @ matrix[:, :2].T + matrix[:, 2]
    fw, fh = frame
    return float(
        max(
            (-corners[:, 0]).max() / fw,
            (-corners[:, 1]).max() / fh,
            (corners[:, 0] - fw).max() / fw,
            (corners[:, 1] - fh).max() / fh,
        )
    )


def aligned(a: _Picture, b: _Picture) -> tuple[np.ndarray, np.ndarray] | None:
    """The two pictures on one frame, the copy's edit undone: the larger cut and turned to
    the smaller's frame (``b`` mirrored if it is a mirror copy), caption bars of one taken
    from the other. None when no transform puts one inside the other, or when both frame
    the same picture and no bar is found: the grids compared that as it is already, and a
    slight shift that makes another shot of the scene match is no edit of a copy."""
    found = _transform(a, b)
    if found is None:
        return None
    matrix, mirrored = found  # b (mirrored) -> a
    rgb_b = np.ascontiguousarray(b.rgb[:, ::-1]) if mirrored else b.rgb
    size_a, size_b = (a.rgb.shape[1], a.rgb.shape[0]), (rgb_b.shape[1], rgb_b.shape[0])
    inverse = cv2.invertAffineTransform(matrix)
    b_in_a, a_in_b = _sticks_out(matrix, size_b, size_a), _sticks_out(inverse, size_a, size_b)
    if b_in_a <= INSIDE:  # b is a's crop (or a's size): a brought to b's frame
        x, y = _warped(a.rgb, inverse, size_b), rgb_b
    elif a_in_b <= INSIDE:  # a is b's crop
        x, y = a.rgb, _warped(rgb_b, matrix, size_a)
    else:
        return None
    x, y = _on_common_ground(x, y)
    if min(x.shape[:2]) < MIN_SIDE:
        return None
    x, y, bars = _bars_undone(x, y)
    same_frame = max(b_in_a, a_in_b) <= INSIDE
    return None if same_frame and not bars else (x, y)


def _warped(rgb: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``rgb`` moved by ``matrix`` onto a frame of ``size``, with a fourth channel: 255
    where the picture reached (the tolerance of :data:`INSIDE` leaves a few border rows)."""
    reached = np.full(rgb.shape[:2], 255, np.uint8)
    return cv2.warpAffine(np.dstack([rgb, reached]), matrix, size, flags=cv2.INTER_AREA)


def _on_common_ground(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``x`` and ``y`` (one of them with the reach channel of :func:`_warped`) as RGB, cut
    to the rows and columns the warped picture fully reached: an empty border is no bar."""
    moved = x if x.shape[2] == 4 else y
    full = moved[..., 3] == 255
    rows = np.flatnonzero(full[:, full.mean(axis=0) >= 0.5].all(axis=1))  # the edge columns aside
    cols = np.flatnonzero(full[rows].all(axis=0)) if len(rows) else rows
    if not len(rows) or not len(cols):
        return x[:0, :0, :3], y[:0, :0, :3]
    box = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1, :3]
    return np.ascontiguousarray(x[box]), np.ascontiguousarray(y[box])


def _bars_undone(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """``x`` and ``y`` with the rows that are a caption bar in one (see :func:`_bars`)
    taken from the other, and whether there were any; as they are when such rows are too
    many."""
    lx, ly = (
        cv2.cvtColor(v, cv2.COLOR_RGB2GRAY)[:, ::2].astype(np.float32) for v in (x, y)
    )  # every 2nd column
    in_x, in_y = _bars(lx, ly), _bars(ly, lx)
    if not (in_x | in_y).any() or (in_x | in_y).sum() > MAX_BANDS * len(lx):
        return x, y, False
    x, y = x.copy(), y.copy()
    x[_widened(in_x)] = y[_widened(in_x)]
    y[_widened(in_y)] = x[_widened(in_y)]
    return x, y, True


def _bars(luma: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Rows of ``luma`` that are a bar laid over ``other``: flat (glyphs aside) and, where
    the other picture is, of another tone than its row, or covering what differs from the
    bar across most of the row. A row of background in one shot, where the other has an
    object in part of it, is neither."""
    fill = np.median(luma, axis=1, keepdims=True)
    flat = (np.abs(luma - fill) <= BAND_SPREAD).mean(axis=1) >= BAND_SHARE
    toned = np.abs(np.median(other, axis=1, keepdims=True) - fill)[:, 0] > BAND_DIFFERS
    covers = (np.abs(other - fill) > BAND_COVERS).mean(axis=1) >= BAND_WIDE
    bar = flat & (toned | covers)
    grown = _widened(_widened(bar))
    closed = ~_widened(_widened(~grown))  # gaps of up to 4 rows closed (glyph rows less flat)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], closed.astype(np.int8), [0]])))
    for start, end in zip(edges[::2], edges[1::2], strict=True):
        tone = float(np.median(fill[start:end]))
        beyond = [float(np.median(luma[r])) for r in (start - 3, end + 2) if 0 <= r < len(luma)]
        lighter = all(tone > side + BAND_DIFFERS for side in beyond)  # past its blurred edges
        darker = all(tone < side - BAND_DIFFERS for side in beyond)
        thickness = (end - start) / len(luma)
        if not (MIN_BAR_ROWS <= thickness <= BAR_ROWS and beyond and (lighter or darker)):
            closed[start:end] = False  # a bar stands out of both sides: not a gradient or horizon
    return closed


def bar_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The rows of two luma pictures of one frame ([h, w]) that are a caption bar laid over
    the other in either (see :func:`_bars`; every 2nd column read), with their edge rows."""
    lx, ly = x[:, ::2], y[:, ::2]
    return _widened(_bars(lx, ly) | _bars(ly, lx))


def _widened(rows: np.ndarray) -> np.ndarray:
    """``rows`` and the row on each side (a band's edge, blurred with the picture)."""
    out = rows.copy()
    out[1:] |= rows[:-1]
    out[:-1] |= rows[1:]
    return out


def _signature(rgb: np.ndarray) -> bytes:
    im = Image.fromarray(rgb)
    view = np.asarray(im.resize((VIEW_SIDE, VIEW_SIDE), Image.Resampling.BOX), np.uint8)
    return colour.signature(view, detail.grid(im))


def verified_gaps(
    pairs: Iterable[tuple[str, str]], progress: Callable[[int, int], None] | None = None
) -> dict[tuple[str, str], float]:
    """Pixel gaps (as :func:`metric.pixel_gaps` with ``local``, `dupes`' gaps) of the pairs
    of files whose pictures one transform aligns, measured on the aligned pictures; pairs
    that cannot be aligned (or read) are left out. ``progress(done, total)`` is told of
    the pairs checked."""
    pairs = list(pairs)
    pictures = _Pictures(Counter(path for pair in pairs for path in pair))

    def gap(pair: tuple[str, str]) -> float | None:
        try:
            a, b = pictures.get(pair[0]), pictures.get(pair[1])
            both = None if a is None or b is None else aligned(a, b)
        finally:
            pictures.release(pair[0])
            pictures.release(pair[1])
        if both is None:
            return None
        first, second = map(_signature, both)
        return float(metric.pixel_gaps([first], [second], local=True)[0])

    gaps: list[float | None] = []
    with ThreadPoolExecutor(THREADS) as pool:
        for done, found in enumerate(pool.map(gap, pairs), 1):
            gaps.append(found)
            if progress and (done % PROGRESS_EVERY == 0 or done == len(pairs)):
                progress(done, len(pairs))
    return {p: g for p, g in zip(pairs, gaps, strict=True) if g is not None}


PROGRESS_EVERY = 16  # pairs between progress reports (a pair takes ~10-30 ms)
