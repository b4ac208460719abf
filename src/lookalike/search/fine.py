"""A finer look at pairs whose stored grids match: do their files differ in one place?

The pixel gap (:mod:`lookalike.search.metric`) compares 64-px luma grids. Two screenshots of
one app with other words in a dialog, a form filled in otherwise, a diagram with one label
changed: at that scale their text is a grey smudge, the grids match, and the features
(made for objects, not words) agree too. `dupes` called them copies, and `--trash` would
have trashed all but one of a folder of screenshots; search called them copies at P 0.93.
`dupes`, `dupes --against` and search ask this module about the pairs they would call copies.

So each near pair of pictures of one shape, either of them flat, is read at
:data:`geometric.SIDE` px (the larger reduced to the smaller's size), each one's brightness
and contrast fitted to the other's (as a mirror image too; or its tones, by a rising
curve: a contrast boost that clips), caption bars laid over one left out; then the mean
luma difference of every window of about a glyph's size. A copy made
by re-encoding, resizing, mirroring, graying or captioning differs a little everywhere and
at most ~38 levels in its worst window (bench/lookalikes.py's library: 915 copies that share
their frame with their original); a picture with other words in it differs by more where
the words are (45-155 in GIMP's manual's screenshots), while matching elsewhere. Pairs that
do not match as they are both ways (a crop, a turn, a mark laid over one: mean difference
over :data:`ALIGNED`) get no verdict: their grids are compared as before.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import cv2
import numpy as np

from lookalike import colour, detail
from lookalike.search import geometric

SAME_SHAPE = 0.02  # aspect ratios this close (relative): one frame
ALIGNED = 2.0  # mean luma difference (0-255) of pictures that match as they are, edit undone
WINDOW = 64  # a window is the longer side / WINDOW px (6 px at 384: a glyph of a dialog's text)
DIFFERS = 40.0  # worst window's mean difference past which the pictures differ in one place, ...
LOCAL_SHARE, NOISE = 0.8, 8.0  # ... if it is also this share of the window's own spread + NOISE
TONE_BINS = 32  # bands of levels a tone curve is fitted over (8 levels each)
BORDER = 0.02  # share of the shorter side at the edges left out (resampling at the frame)
FLAT_CELLS = 0.2  # share of a grid's cells within a level of their neighbours: a flat picture
Size = tuple[int | None, int | None]  # (width, height), None if unknown
PICTURES = 512  # files' luma kept at once (uint8 at 384 px: ~110 KB each)


@lru_cache(maxsize=4096)  # a group's members are asked about again and again (~3 KB each)
def flat(signature: bytes | None) -> bool:
    """Whether a picture is at least :data:`FLAT_CELLS` flat cells in its stored 64-px luma
    grid (see :mod:`lookalike.colour`): a screen, a document, a drawing, where a word can
    change while the rest stays. Photos seldom are (1 in 6 of ImageNet's), and pairs of
    them are not read: another shot differs in more than a word."""
    grid = colour.detail_grid(signature)
    cells = detail.unpack(grid) if grid else None
    if cells is None or min(cells.shape) < 2:
        return False
    across, down = np.abs(np.diff(cells, axis=1))[:-1], np.abs(np.diff(cells, axis=0))[:, :-1]
    return float(((across <= 1) & (down <= 1)).mean()) >= FLAT_CELLS


def same_shape(a: Size, b: Size) -> bool:
    """Whether two (width, height) frames have one aspect ratio (unknown sizes: no)."""
    (wa, ha), (wb, hb) = a, b
    if not (wa and ha and wb and hb):
        return False
    return abs(wa / ha - wb / hb) <= SAME_SHAPE * (wa / ha)


def worth_a_look(a: tuple[Size, bytes | None], b: tuple[Size, bytes | None]) -> bool:
    """Whether two pictures, each a ((width, height), colour signature), are worth reading
    from their files: of one frame, either of them flat."""
    return same_shape(a[0], b[0]) and (flat(a[1]) or flat(b[1]))


def worst_window(a: np.ndarray, b: np.ndarray) -> float | None:
    """The mean luma difference (0-255) of the worst window of two pictures' luma ([h, w]
    float32) of one frame, among windows where it also passes :data:`LOCAL_SHARE` of their
    own variation there (resampling a copy moves edges a little: a difference in proportion
    to them; other words differ as much as the words themselves vary); 0 if there is none.
    Each picture's brightness and contrast is fitted to the other's, and the lower of the
    two is taken; None unless both ways match as they are (:data:`ALIGNED`): another frame,
    a crop, a turn, or a mark laid over one (a watermark over a dialog matches one way only).
    The same whichever picture comes first."""
    a, b = _one_size(a, b)
    one, other = _one_way(a, b), _one_way(b, a)
    return None if one is None or other is None else min(one, other)


def _one_size(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The larger brought to the smaller's size (or to a's, if as large)."""
    if a.shape != b.shape:
        if a.size > b.size:
            a = cv2.resize(a, b.shape[::-1], interpolation=cv2.INTER_AREA)
        else:
            b = cv2.resize(b, a.shape[::-1], interpolation=cv2.INTER_AREA)
    return a, b


def _one_way(a: np.ndarray, b: np.ndarray) -> float | None:
    """:func:`worst_window` with ``b``'s tones fitted to ``a``'s, as it is or mirrored (the
    lower of the ways that match: a symmetric icon matches its mirror image as it is, but
    for its details). Two fits, the lower taken: brightness and contrast (a gain, which may
    invert), and a rising tone curve (:func:`_tone_curve`: a contrast boost that clips the
    highlights, a gamma)."""
    worst = None
    for other in (b, np.ascontiguousarray(b[:, ::-1])):
        if worst is not None and worst < DIFFERS:
            break  # as they are, they match everywhere: no need to look at the mirror image
        spread = float(other.var())
        gain = float(((other - other.mean()) * (a - a.mean())).mean()) / spread if spread > 0 else 1.0
        bars = geometric.bar_rows(a, other)  # caption bars laid over one
        for curved in (False, True):
            if worst is not None and worst < DIFFERS:
                break  # (the tone curve is fitted only where the gain leaves a difference)
            fitted = _tone_curve(other, a) if curved else a.mean() + gain * (other - other.mean())
            way = _worst_fitted(a, fitted, bars)
            if way is not None:
                worst = way if worst is None else min(worst, way)
    return worst


def _worst_fitted(a: np.ndarray, fitted: np.ndarray, bars: np.ndarray) -> float | None:
    """The worst window of ``a`` against a picture fitted to its tones, the rows ``bars``
    left out; None unless they match as they are (:data:`ALIGNED`)."""
    gap = np.abs(a - fitted)
    gap[bars] = 0.0
    if float(gap.mean()) > ALIGNED:
        return None
    side = max(3, round(max(gap.shape) / WINDOW))
    inner = np.s_[(edge := max(1, round(BORDER * min(gap.shape)))) : -edge, edge:-edge]
    windows = cv2.blur(gap, (side, side))
    varies = np.maximum(_local_spread(a, side), _local_spread(fitted, side)) + NOISE
    beyond = np.where(windows >= LOCAL_SHARE * varies, windows, 0.0)[inner]
    return float(beyond.max()) if beyond.size else 0.0


def _tone_curve(x: np.ndarray, to: np.ndarray) -> np.ndarray:
    """``x``'s levels mapped to ``to``'s by a rising curve: the mean of ``to`` over each of
    :data:`TONE_BINS` bands of ``x``'s levels, made rising where it falls (pooled with its
    neighbours: isotonic regression), and read between the bands' means. A global curve
    cannot draw other words where they are: it lifts the level of a glyph everywhere."""
    bands = np.minimum((x * (TONE_BINS / 256.0)).astype(np.int32), TONE_BINS - 1).ravel()
    count = np.bincount(bands, minlength=TONE_BINS)
    used = count > 0
    levels = np.bincount(bands, weights=x.ravel(), minlength=TONE_BINS)[used] / count[used]
    means = np.bincount(bands, weights=to.ravel(), minlength=TONE_BINS)[used] / count[used]
    pools: list[list[float]] = []  # [mean, weight, bands]
    for mean, weight in zip(means, count[used], strict=True):
        pools.append([float(mean), float(weight), 1])
        while len(pools) > 1 and pools[-2][0] > pools[-1][0]:
            m2, w2, n2 = pools.pop()
            m1, w1, n1 = pools[-1]
            pools[-1] = [(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, n1 + n2]
    curve = np.repeat([p[0] for p in pools], [p[2] for p in pools])
    return np.interp(x, levels, curve).astype(np.float32)


def _local_spread(x: np.ndarray, side: int) -> np.ndarray:
    """The luma standard deviation of each ``side`` x ``side`` window of ``x``."""
    mean = cv2.blur(x, (side, side))
    return np.sqrt(np.maximum(cv2.blur(x * x, (side, side)) - mean * mean, 0.0))


class Pictures:
    """Files' luma as the fine look compares it (:func:`luma`), each kept while among the
    last :data:`PICTURES` read (~110 KB each). Kept by path, size and modification time, so
    one kept for long (an :class:`~lookalike.Index` serving searches) reads a changed file
    again. Callable with a path; None if the file is gone or unreadable."""

    def __init__(self, size: int = PICTURES) -> None:
        self._kept = lru_cache(maxsize=size)(_luma_of)

    def __call__(self, path: str) -> np.ndarray | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return self._kept(path, st.st_size, st.st_mtime_ns)


def _luma_of(path: str, size: int, mtime_ns: int) -> np.ndarray | None:
    return luma(path)  # (size and mtime: the cache's key only)


class Looker:
    """Looks at pairs of files as `dupes` asks (:meth:`differ`), or at files against a
    query's picture (:meth:`differ_from`): each pair once, each file read once while
    ``pictures`` keeps it (its own :class:`Pictures` unless given one), two pairs at once."""

    def __init__(self, pictures: Pictures | None = None) -> None:
        self._verdicts: dict[tuple[str, str], bool] = {}
        self._read = pictures or Pictures()

    def differ(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        """Whether each pair of files (of one frame: see :func:`same_shape`) differs in one
        place (:data:`DIFFERS`) although the pictures match as they are: no copies of each
        other. A file that cannot be read says nothing (False)."""
        keys = [(a, b) if a <= b else (b, a) for a, b in pairs]
        todo = [pair for pair in dict.fromkeys(keys) if pair not in self._verdicts]
        if todo:
            with ThreadPoolExecutor(geometric.THREADS) as pool:
                self._verdicts.update(zip(todo, pool.map(self._differs, todo), strict=True))
        return [self._verdicts[key] for key in keys]

    def differ_from(self, query: np.ndarray | None, paths: Sequence[str]) -> list[bool]:
        """As :meth:`differ`, for each file against a query's picture (:func:`luma`; None,
        unreadable: says nothing)."""
        if query is None:
            return [False] * len(paths)
        with ThreadPoolExecutor(geometric.THREADS) as pool:
            return list(pool.map(lambda path: _differs(query, self._read(path)), paths))

    def _differs(self, pair: tuple[str, str]) -> bool:
        return _differs(self._read(pair[0]), self._read(pair[1]))  # (two threads may read one file)


def _differs(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    """:func:`worst_window` >= :data:`DIFFERS`; the second way is not measured when the
    first already settles it (a copy matches one way: most pairs asked)."""
    if a is None or b is None:
        return False
    a, b = _one_size(a.astype(np.float32), b.astype(np.float32))
    return all((way := _one_way(x, y)) is not None and way >= DIFFERS for x, y in ((a, b), (b, a)))


def luma(source: str | bytes) -> np.ndarray | None:
    """A file's (a path) or an image's (its bytes) luma at :data:`geometric.SIDE` px, as the
    fine look compares it (None: unreadable or too small)."""
    picture = geometric.read(io.BytesIO(source) if isinstance(source, bytes) else source)
    return None if picture is None else picture.gray
