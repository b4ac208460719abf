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

import numpy as np
from PIL import ExifTags, Image, ImageOps, JpegImagePlugin

from lookalike.search.keep import JPEG_FORMATS

WINDOW = 512  # px each way: the central part compared (16-aligned in the JPEG's grid)
EDITED = 6.0  # mean level gap of a block the copy changed (a caption's) ...
EDITED_REACH = 2  # ... left out with the blocks this near it (chroma upsampling spreads)
MIN_BLOCKS = 64  # blocks that differ and were not edited: fewer tell nothing
# Share of those blocks given back exactly. Measured on bench/lookalikes.py's library (174
# originals; mirrored, captioned and gray JPEG q90 copies and q50 re-saves of each): copies
# from their originals 1.000 (mirrored, gray) and 0.889-1.000 (captioned, median 1.000);
# originals from their copies 0.000-0.897 (JPEG copies: the coarser original is what its
# finer copy re-encodes to, here and there), and 0.996 for one JPEG original from its
# lossy WebP copy.
REPRODUCED = 0.99  # ... and fewer the other way round (a JPEG source)
# A lossy WebP source cannot be re-encoded the other way (its settings are unknown): every
# block must come back (the one WebP copy above gives back 99.6% of its original's blocks).
FROM_WEBP = 1.0
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


def open_decoded(path: str) -> Image.Image | None:
    """A file's pixels as stored (RGB or L, decoded), for :func:`resaved_from`; None for
    what the test does not apply to: an EXIF-rotated, transparent, CMYK or huge picture, or
    one that cannot be read."""
    try:
        im = Image.open(path)
        if im.width * im.height > MAX_MEGAPIXELS * 1e6 or im.mode not in ("RGB", "L", "RGBA"):
            return None
        if im.getexif().get(ExifTags.Base.Orientation, 1) != 1:
            return None
        im.load()
        if im.mode == "RGBA":
            if im.getchannel("A").getextrema()[0] < 255:
                return None
            im = im.convert("RGB")
        return im
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError):
        return None


def _window(size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """The central part of a picture of ``size`` compared, aligned to a JPEG's 16 px blocks
    (its chroma's, subsampled); None for a picture too small."""
    w, h = size
    x0, y0 = max(0, (w - WINDOW) // 2) // 16 * 16, max(0, (h - WINDOW) // 2) // 16 * 16
    box = (x0, y0, x0 + (min(w, x0 + WINDOW) - x0) // 16 * 16, y0 + (min(h, y0 + WINDOW) - y0) // 16 * 16)
    return box if box[2] - box[0] >= 48 and box[3] - box[1] >= 48 else None


def _part(source: Image.Image, box: tuple[int, int, int, int], turn: str, mode: str) -> Image.Image:
    """What lies in ``box`` of ``source`` turned by ``turn``, in ``mode``."""
    turned, origin = _TURNS[turn]
    return turned(source.crop(origin(*source.size, *box))).convert(mode)


def _turn_between(source: Image.Image, jpeg: Image.Image, box: tuple[int, int, int, int]) -> str:
    """Which of :data:`_TURNS` of ``source`` looks most like ``jpeg`` in ``box``."""
    mode = "L" if jpeg.mode == "L" else "RGB"
    target = np.asarray(jpeg.crop(box).convert(mode).reduce(4), np.float32)

    def gap(turn: str) -> float:
        return float(np.abs(np.asarray(_part(source, box, turn, mode).reduce(4), np.float32) - target).mean())

    return min(_TURNS, key=gap)


def _blocks(x: np.ndarray) -> np.ndarray:
    """(rows, cols, 64 x channels) of the 8x8 blocks of an image, its outer ring left out."""
    x = x.reshape(x.shape[0], x.shape[1], -1)[8:-8, 8:-8]
    rows, cols = x.shape[0] // 8, x.shape[1] // 8
    return x[: rows * 8, : cols * 8].reshape(rows, 8, cols, 8, -1).swapaxes(1, 2).reshape(rows, cols, -1)


def given_back(jpeg: Image.Image, source: Image.Image, turn: str = "none") -> tuple[float, int]:
    """(share, count) of the blocks of ``jpeg``'s central part that differ from the turned
    ``source`` (not where an edit changed them) and that re-encoding it with ``jpeg``'s
    tables gives back exactly; (0, 0) when it cannot be re-encoded so."""
    tables = getattr(jpeg, "quantization", None)
    mode = "L" if jpeg.mode == "L" else "RGB"
    sampling = 0 if mode == "L" else JpegImagePlugin.get_sampling(jpeg)
    box = _window(jpeg.size)
    if not tables or sampling < 0 or box is None or source.size != jpeg.size:
        return 0.0, 0
    part = _part(source, box, turn, mode)
    buf = io.BytesIO()
    part.save(buf, "JPEG", qtables=tables, subsampling=sampling)
    with Image.open(buf) as again:
        redone = np.asarray(again.convert(mode), np.int16)
    mine, theirs = np.asarray(jpeg.crop(box).convert(mode), np.int16), np.asarray(part, np.int16)
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
    count = int(differ.sum())
    if not count:
        return 0.0, 0
    back = _blocks(np.abs(mine - redone)).max(axis=2) == 0
    return float((back & differ).sum()) / count, count


def resaved_from(jpeg: Image.Image, source: Image.Image) -> bool:
    """Whether ``jpeg`` (a decoded JPEG) was saved from ``source``'s decoded pixels (a JPEG's
    or a lossy WebP's of the same size), perhaps mirrored, flipped, turned or captioned."""
    if (jpeg.format or "").upper() not in JPEG_FORMATS or jpeg.size != source.size:
        return False
    box = _window(jpeg.size)
    if box is None:
        return False
    turn = _turn_between(source, jpeg, box)
    share, count = given_back(jpeg, source, turn)
    if count < MIN_BLOCKS or share < REPRODUCED:
        return False
    if (source.format or "").upper() in JPEG_FORMATS:  # not both ways (a smooth picture, one quality)
        return given_back(source, jpeg, turn)[0] < REPRODUCED
    return share >= FROM_WEBP
