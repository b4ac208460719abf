"""Whether a JPEG was re-saved from another lossy file's pixels: the test behind the keep
rule "an original over a re-encode" (:mod:`lookalike.search.keep`) for lossy pairs.

A JPEG made by decoding a file, perhaps mirroring or captioning it, and saving it again
(at any quality) is given back block for block by doing the same again: re-encoding the
source's decoded pixels with the JPEG's own quantisation tables and chroma subsampling
reproduces its 8x8 blocks exactly wherever the picture was not edited. The other way
round it does not, or only here and there: re-encoding a coarser copy of a JPEG gives back
some of its blocks, never nearly all. So a quality-90 re-save of a quality-75 original
reads as the re-save, not as the better file. Only the central part of the picture is
compared (aligned to the JPEG's blocks), and blocks an edit changed (a caption: a large
gap), with the blocks around them, are left out.
The test is exact, so it speaks for copies made by the libjpeg family of encoders (what
Pillow, browsers, phones and most editors use); a copy made otherwise is not recognised
and the other rules decide as before.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, ImageOps, JpegImagePlugin

from lookalike.search.keep import JPEG_FORMATS

WINDOW = 512  # px each way: the central part compared (16-aligned in the JPEG's grid)
EDITED = 6.0  # mean level gap of a block the copy changed (a caption's) ...
EDITED_REACH = 2  # ... left out with the blocks this near it (chroma upsampling spreads)
MIN_BLOCKS = 64  # blocks that differ and were not edited: fewer tell nothing ...
SAME_BLOCKS = 0.02  # ... unless that is this small a share of the blocks compared: a re-save
# with the quality setting of its source settles on the same blocks nearly everywhere (a
# quality-50 re-save of a gray quality-50 photo: 6 of 3,596 blocks differ; of a colour one,
# 199 of 3,844), so those two files hold the same pixels and cannot say which came first
# Share of those blocks given back exactly. Measured on bench/lookalikes.py's library (174
# originals; mirrored, captioned and gray JPEG q90 copies and q50 re-saves of each): copies
# from their originals 1.000 (mirrored, gray) and 0.889-1.000 (captioned, median 1.000);
# originals from their copies 0.000-0.897 (JPEG copies: the coarser original is what its
# finer copy re-encodes to, here and there), and 0.996 for one JPEG original from its
# lossy WebP copy.
REPRODUCED = 0.99  # ... and fewer the other way round (a JPEG source)
# A lossy WebP source cannot be re-encoded the other way (its settings are unknown): every
# block must come back (the one WebP copy above gives back 99.6% of its original's blocks),
# and the WebP's own pixels must not sit on the JPEG's quantisation lattice. A WebP saved
# finely from a coarse JPEG gives back all of that JPEG's blocks too (73 of 192 synthetic
# JPEG q10-40 originals with WebP q80-100 copies), but its luma DCT coefficients, in the
# JPEG's grid over the JPEG's table, lie next to whole numbers (mean distance <= 0.096
# there; <= 0.11 on photos), where a WebP a JPEG was made from has them anywhere (the
# library's 56 JPEG copies of WebP originals: 0.185-0.25; uniform: 0.25).
FROM_WEBP = 1.0
OFF_LATTICE = 0.14
MAX_MEGAPIXELS = 40.0

# Turns of a picture a copy may have gone through (each its own inverse), and where a box
# (x0, y0, x1, y1) of the turned picture of size (w, h) comes from in the picture.
_TURNS: dict[str, tuple[Callable[[Image.Image], Image.Image], Callable[..., tuple[int, int, int, int]]]] = {
    "none": (lambda im: im, lambda w, h, x0, y0, x1, y1: (x0, y0, x1, y1)),
    "mirror": (ImageOps.mirror, lambda w, h, x0, y0, x1, y1: (w - x1, y0, w - x0, y1)),
    "flip": (ImageOps.flip, lambda w, h, x0, y0, x1, y1: (x0, h - y1, x1, h - y0)),
    "half turn": (
        lambda im: im.transpose(Image.Transpose.ROTATE_180),
        lambda w, h, x0, y0, x1, y1: (w - x1, h - y1, w - x0, h - y0),
    ),
}


@dataclass(frozen=True)
class Decoded:
    """What the test needs of a file, kept instead of its pixels: the central part as each
    of :data:`_TURNS` would bring it there, and how the file was encoded."""

    size: tuple[int, int]
    jpeg: bool
    mode: str  # "L" or "RGB"
    tables: dict | None  # a JPEG's quantisation tables (natural order), its subsampling
    sampling: int
    parts: dict[str, Image.Image]  # turn -> the part of the picture it brings to the window


def open_decoded(path: str) -> Decoded | None:
    """What :func:`verdict` needs of a file; None for what the test does not apply to:
    a picture too small, EXIF-rotated, transparent, CMYK or huge, or one that cannot be
    read."""
    try:
        with Image.open(path) as im:
            box = _window(im.size)
            if box is None or im.width * im.height > MAX_MEGAPIXELS * 1e6:
                return None
            if im.mode not in ("RGB", "L", "RGBA"):
                return None
            if im.getexif().get(ExifTags.Base.Orientation, 1) != 1:
                return None
            jpeg = (im.format or "").upper() in JPEG_FORMATS
            tables = dict(im.quantization) if jpeg else None
            sampling = JpegImagePlugin.get_sampling(im) if jpeg and im.mode != "L" else 0
            im.load()
            if im.mode == "RGBA" and im.getchannel("A").getextrema()[0] < 255:
                return None
            mode = "L" if im.mode == "L" else "RGB"
            parts = {}
            for turn, (turned, origin) in _TURNS.items():
                parts[turn] = turned(im.crop(origin(*im.size, *box))).convert(mode)
            return Decoded(im.size, jpeg, mode, tables, sampling, parts)
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError):
        return None


def _window(size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """The central part of a picture of ``size`` compared, aligned to a JPEG's 16 px blocks
    (its chroma's, subsampled); None for a picture too small."""
    w, h = size
    x0, y0 = max(0, (w - WINDOW) // 2) // 16 * 16, max(0, (h - WINDOW) // 2) // 16 * 16
    box = (x0, y0, x0 + (min(w, x0 + WINDOW) - x0) // 16 * 16, y0 + (min(h, y0 + WINDOW) - y0) // 16 * 16)
    return box if box[2] - box[0] >= 48 and box[3] - box[1] >= 48 else None


def _turn_between(source: Decoded, jpeg: Decoded) -> str:
    """Which of :data:`_TURNS` of ``source`` looks most like ``jpeg`` in the window."""
    target = np.asarray(jpeg.parts["none"].reduce(4), np.float32)

    def gap(turn: str) -> float:
        part = np.asarray(source.parts[turn].convert(jpeg.mode).reduce(4), np.float32)
        return float(np.abs(part - target).mean())

    return min(_TURNS, key=gap)


def _blocks(x: np.ndarray) -> np.ndarray:
    """(rows, cols, 64 x channels) of the 8x8 blocks of an image, its outer ring left out."""
    x = x.reshape(x.shape[0], x.shape[1], -1)[8:-8, 8:-8]
    rows, cols = x.shape[0] // 8, x.shape[1] // 8
    return x[: rows * 8, : cols * 8].reshape(rows, 8, cols, 8, -1).swapaxes(1, 2).reshape(rows, cols, -1)


def given_back(jpeg: Decoded, source: Decoded, turn: str = "none") -> tuple[float, int, int]:
    """(share, count, compared): of the ``compared`` blocks of ``jpeg``'s central part that
    an edit did not change, the ``count`` that differ from the turned ``source`` and the
    share of those that re-encoding it with ``jpeg``'s tables gives back exactly; zeros
    when it cannot be re-encoded so."""
    if not jpeg.tables or jpeg.sampling < 0 or source.size != jpeg.size:
        return 0.0, 0, 0
    part = source.parts[turn].convert(jpeg.mode)
    buf = io.BytesIO()
    part.save(buf, "JPEG", qtables=jpeg.tables, subsampling=jpeg.sampling)
    with Image.open(buf) as again:
        redone = np.asarray(again.convert(jpeg.mode), np.int16)
    mine, theirs = np.asarray(jpeg.parts["none"], np.int16), np.asarray(part, np.int16)
    gap = _blocks(np.abs(mine - theirs))
    edited = gap.mean(axis=2) > EDITED
    for _ in range(EDITED_REACH):
        near = edited.copy()
        near[1:] |= edited[:-1]
        near[:-1] |= edited[1:]
        near[:, 1:] |= edited[:, :-1]
        near[:, :-1] |= edited[:, 1:]
        edited = near
    differ = (gap.max(axis=2) > 0) & ~edited
    count, compared = int(differ.sum()), int((~edited).sum())
    if not count:
        return 0.0, 0, compared
    back = _blocks(np.abs(mine - redone)).max(axis=2) == 0
    return float((back & differ).sum()) / count, count, compared


_DCT = np.array([[np.sqrt((1 if u == 0 else 2) / 8) * np.cos((2 * x + 1) * u * np.pi / 16) for x in range(8)]
                 for u in range(8)])  # fmt: skip  (JPEG's 8x8 DCT, orthonormal)


def off_lattice(jpeg: Decoded, source: Decoded, turn: str) -> float:
    """Mean distance to the nearest whole number of the turned ``source``'s luma DCT
    coefficients in ``jpeg``'s block grid, over ``jpeg``'s luma table, where they round to
    non-zero: ~0.25 for a picture the JPEG was saved from, near 0 for one saved from the
    JPEG's own pixels."""
    rgb = np.asarray(source.parts[turn].convert("RGB"), np.float64)
    luma = rgb @ np.array([0.299, 0.587, 0.114]) - 128.0
    rows, cols = luma.shape[0] // 8, luma.shape[1] // 8
    blocks = luma[: rows * 8, : cols * 8].reshape(rows, 8, cols, 8).swapaxes(1, 2)
    coefficients = _DCT @ blocks @ _DCT.T
    steps = np.asarray(jpeg.tables[0], np.float64).reshape(8, 8)
    ratio = coefficients / steps
    counted = np.abs(ratio) >= 0.5
    return float(np.abs(ratio - np.round(ratio))[counted].mean()) if counted.any() else 0.0


FROM = "from"  # the JPEG was re-saved from the other file's pixels
EACH_OTHER = "each other"  # two JPEGs that re-encode to each other: pixels cannot say which came first


def verdict(jpeg: Decoded, source: Decoded) -> str | None:
    """:data:`FROM` when ``jpeg`` (a JPEG's :class:`Decoded`) was saved from ``source``'s
    decoded pixels (a JPEG's or a lossy WebP's of the same size), perhaps mirrored,
    flipped, turned or captioned; :data:`EACH_OTHER` when ``source`` is a JPEG given back
    by re-encoding ``jpeg`` just as well (a smooth picture, or a fine re-save of a coarse
    one: each holds what the other does) or one whose blocks are ``jpeg``'s nearly
    everywhere (:data:`SAME_BLOCKS`); else None."""
    if not jpeg.jpeg or jpeg.size != source.size:
        return None
    turn = _turn_between(source, jpeg)
    share, count, compared = given_back(jpeg, source, turn)
    if count < MIN_BLOCKS:
        same = source.jpeg and compared >= MIN_BLOCKS and count <= SAME_BLOCKS * compared
        return EACH_OTHER if same else None
    if share < REPRODUCED:
        return None
    if source.jpeg:
        return EACH_OTHER if given_back(source, jpeg, turn)[0] >= REPRODUCED else FROM
    return FROM if share >= FROM_WEBP and off_lattice(jpeg, source, turn) >= OFF_LATTICE else None
