"""A tiny colour signature of every image, to tell a recoloured variant from a copy.

Feature vectors of one design in two colour schemes (or its light and dark versions)
are nearly as close as those of a copy and its original. What tells them apart is
colour, which the model is built to ignore: so each image also keeps a 16 x 16 RGB
thumbnail of its whole picture (768 bytes), and :func:`compare` measures how two of
them differ in colour distribution (alignment-free, so crops, mirrors and small
rotations do not count) and in light/dark layout. The signature then carries a finer
luma grid (:mod:`lookalike.detail`: another shot of one scene is no copy). numpy only:
decoder processes use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

SIDE = 16
SIGNATURE_BYTES = SIDE * SIDE * 3
GRAY_CHROMA = 6.0  # mean chroma (0-255 scale) below which a picture counts as grayscale
FAINT_CHROMA = 15.0  # ... below which its hues are faint: they count only where they turn (see ``turn``)
_BINS = 12  # hue sectors of the chroma-weighted hue histogram


ON_WHITE, ON_BLACK = b"W", b"B"  # what a transparent picture was flattened on (images.flatten)


def signature(pixels: np.ndarray, fine: bytes = b"", flattened_on: bytes = b"") -> bytes:
    """The signature of model-input pixels ([h, w, 3] uint8, or [views, h, w, 3]: the
    first view is the whole picture): a 16 x 16 box-filtered RGB thumbnail (the first
    :data:`SIGNATURE_BYTES`), then ``fine``, the picture's :func:`lookalike.detail.grid`
    (signatures stored before it existed are the thumbnail alone), then for a transparent
    picture the background it was flattened on (:data:`ON_WHITE`, :data:`ON_BLACK`; none
    for an opaque one, or one stored before this byte existed)."""
    view = pixels if pixels.ndim == 3 else pixels[0]
    return _thumbnail(view) + fine + (flattened_on if fine else b"")


def detail_grid(sig: bytes | None) -> bytes | None:
    """The :mod:`lookalike.detail` grid of a signature (None for one stored without it)."""
    rest = sig[SIGNATURE_BYTES:] if sig else b""
    return bytes(rest[: 2 + rest[0] * rest[1]]) if len(rest) > 2 else None


def flattened_on(sig: bytes | None) -> bytes | None:
    """The background a transparent picture's signature says it was flattened on, else None."""
    rest = sig[SIGNATURE_BYTES:] if sig else b""
    return bytes(rest[-1:]) if len(rest) > 2 and len(rest) == 3 + rest[0] * rest[1] else None


def light_and_dark(a: bytes | None, b: bytes | None) -> bool:
    """Whether two transparent pictures were flattened on opposite backgrounds: one's
    visible part is pale (white shapes, a light overlay), the other's is not. As shown on
    a screen they may look alike (a light overlay on black, a dark one on white), yet they
    are one design's light and dark versions, not copies: a copy kept transparent keeps
    its colours, and a flattened copy (a screenshot, a JPEG) is opaque, so no evidence."""
    on_a, on_b = flattened_on(a), flattened_on(b)
    return on_a is not None and on_b is not None and on_a != on_b


def _thumbnail(view: np.ndarray) -> bytes:
    h, w = view.shape[:2]
    ys = np.linspace(0, h, SIDE + 1).astype(int)
    xs = np.linspace(0, w, SIDE + 1).astype(int)
    rows = np.add.reduceat(view.astype(np.float32), ys[:-1], axis=0) / np.diff(ys)[:, None, None]
    cells = np.add.reduceat(rows, xs[:-1], axis=1) / np.diff(xs)[None, :, None]
    return np.clip(np.rint(cells), 0, 255).astype(np.uint8).tobytes()


def _unpack(sig: bytes) -> np.ndarray:
    return np.frombuffer(sig[:SIGNATURE_BYTES], np.uint8).reshape(SIDE, SIDE, 3).astype(np.float32)


@dataclass(frozen=True)
class ColourRelation:
    """How two signatures differ: ``chroma`` (0 same colour distribution .. 1 disjoint),
    ``brightness`` (difference of mean luminance), ``layout`` (correlation of the light/dark
    layout, as-is or mirrored, whichever is stronger: -1 an
    inverted light/dark version .. 1 the same), ``gray`` (one of them is grayscale, so
    colour cannot tell), ``faint`` (one has so little colour that its hue histogram
    moves with a re-save: a faint tint's hue near a sector edge crosses it), ``turn``
    (degrees between their mean colours, 0..180: how far the overall tint turned, which a
    re-save barely moves), ``gray_side`` (0 or 1: which one is grayscale when the other is
    not, else None)."""

    chroma: float
    layout: float
    gray: bool
    faint: bool = False
    turn: float = 0.0
    brightness: float = 0.0  # difference of mean luminance, 0..1: a light vs a dark version
    gray_side: int | None = None


def _chroma_histogram(px: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """Hue distribution weighted by chroma (a saturation change leaves it as it is; a
    recolouring moves it), the mean chroma, and the mean colour (opponent axes)."""
    r, g, b = px[..., 0], px[..., 1], px[..., 2]
    a = r - g  # opponent colours: red-green and yellow-blue
    y = (r + g) / 2 - b
    chroma = np.hypot(a, y)
    angle = np.arctan2(y, a)
    hist, _ = np.histogram(angle.ravel(), bins=_BINS, range=(-np.pi, np.pi), weights=chroma.ravel())
    total = hist.sum()
    return (hist / total if total > 0 else hist), float(chroma.mean()), np.array([a.mean(), y.mean()])


def _layout(px: np.ndarray) -> np.ndarray:
    lum = px @ np.array([0.299, 0.587, 0.114], np.float32)
    lum -= lum.mean()
    norm = np.linalg.norm(lum)
    return lum / norm if norm > 1e-3 else lum


@lru_cache(maxsize=4096)  # one photo is compared with many (calibration, search hits, groups)
def _traits(sig: bytes) -> tuple[np.ndarray, float, np.ndarray, float, np.ndarray]:
    """A signature's hue histogram and mean chroma, light/dark layout, luminance and mean
    colour (read only)."""
    px = _unpack(sig)
    hist, level, tint = _chroma_histogram(px)
    return hist, level, _layout(px), _luminance(px), tint


def compare(a: bytes, b: bytes) -> ColourRelation:
    """How the pictures of signatures ``a`` and ``b`` differ in colour."""
    ha, level_a, la, lum_a, tint_a = _traits(bytes(a))
    hb, level_b, lb, lum_b, tint_b = _traits(bytes(b))
    layout = max(float((la * lb).sum()), float((la * lb[:, ::-1]).sum()), key=abs)  # mirrored?
    if not la.any() or not lb.any():  # a flat picture has no layout to compare
        layout = 1.0
    return ColourRelation(
        chroma=float(1.0 - np.minimum(ha, hb).sum()),
        layout=layout,
        gray=min(level_a, level_b) < GRAY_CHROMA,
        faint=min(level_a, level_b) < FAINT_CHROMA,
        turn=_angle(tint_a, tint_b),
        brightness=abs(lum_a - lum_b),
        gray_side=None if (level_a < GRAY_CHROMA) == (level_b < GRAY_CHROMA) else int(level_b < GRAY_CHROMA),
    )


def _angle(u: np.ndarray, v: np.ndarray) -> float:
    """Degrees between two colours on the opponent axes (0 when either is neutral)."""
    norms = float(np.linalg.norm(u) * np.linalg.norm(v))
    return float(np.degrees(np.arccos(np.clip(float(u @ v) / norms, -1.0, 1.0)))) if norms > 1e-6 else 0.0


def colourfulness(sig: bytes) -> float:
    """Signature ``sig``'s mean chroma (0-255 scale; under :data:`GRAY_CHROMA`: grayscale)."""
    return _traits(bytes(sig))[1]


def _luminance(px: np.ndarray) -> float:
    return float((px @ np.array([0.299, 0.587, 0.114], np.float32)).mean() / 255.0)


# CIE L*a*b* (D65) of sRGB: the space the pixel gap is measured in (a distance of ~2.3 is
# a just-noticeable difference; a recolouring moves most cells by 20-100).
_SRGB_TO_XYZ = np.array(
    [[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]], np.float32
)
_WHITE = np.array([0.9505, 1.0, 1.089], np.float32)


def lab(signatures: Sequence[bytes]) -> np.ndarray:
    """L*a*b* cells of signatures, and the L* of their grayscale version (as image tools
    make it: Rec. 601 luma): [n, SIDE * SIDE, 4] float32."""
    thumbnails = b"".join(bytes(s[:SIGNATURE_BYTES]) for s in signatures)
    rgb = np.frombuffer(thumbnails, np.uint8).reshape(-1, SIDE * SIDE, 3) / np.float32(255)
    luma = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    out = np.concatenate([_lab(rgb), _lab(np.repeat(luma[..., None], 3, -1))[..., :1]], -1)
    return out.astype(np.float32)


def _lab(rgb: np.ndarray) -> np.ndarray:
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = (linear @ _SRGB_TO_XYZ.T) / _WHITE
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


_MIRROR = np.arange(SIDE * SIDE).reshape(SIDE, SIDE)[:, ::-1].ravel()


def pixel_gaps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per pair of L*a*b* signatures (:func:`lab`, rows of ``a`` and ``b`` paired, or one
    ``a`` against every ``b``): the median distance of their cells, as-is or mirrored,
    or either one's centre (:data:`ZOOMS`) against the other, whichever is smallest;
    the lightness of their grayscale versions when either is grayscale (x :data:`GRAY_SCALE`).
    0-1 for copies (re-encoded, resized, blurred, captioned: the median ignores a caption
    bar; cropped), tens for the same design in other colours, whatever their features say."""
    a, b = np.broadcast_arrays(a, b)
    gray = (_chroma(a) < GRAY_LAB) | (_chroma(b) < GRAY_LAB)

    def gap(x: np.ndarray, y: np.ndarray, gray: np.ndarray) -> np.ndarray:
        out = None
        for other in (y, y[:, _MIRROR]):
            d = x - other
            colour = np.sqrt(d[..., 0] ** 2 + d[..., 1] ** 2 + d[..., 2] ** 2)
            med = np.median(np.where(gray[:, None], np.abs(d[..., 3]), colour), axis=-1)  # gray: luma L*
            out = med if out is None else np.minimum(out, med)
        return out

    out = gap(a, b, gray)
    far = np.flatnonzero(out > ZOOM_ABOVE)  # the others are copies as they are: no need to look closer
    if len(far):
        x, y, h = a[far], b[far], gray[far]
        for share in ZOOMS:
            closer = np.minimum(gap(_centre(x, share), y, h), gap(x, _centre(y, share), h))
            out[far] = np.minimum(out[far], closer)
    return np.where(gray, GRAY_SCALE * out, out)


ZOOMS = (0.8, 0.6)  # central crops (share of a side) compared too: a crop's signature is its source's centre
ZOOM_ABOVE = 2.0  # ... when the whole pictures differ by more than this


def _centre(cells: np.ndarray, share: float) -> np.ndarray:
    """The central ``share`` of each side of signatures' cells, resampled to the full grid
    (bilinear)."""
    grid = cells.reshape(len(cells), SIDE, SIDE, cells.shape[-1])
    at = (np.arange(SIDE) + 0.5) * share + (1 - share) * SIDE / 2 - 0.5  # cell centres sampled
    lo = np.clip(np.floor(at).astype(int), 0, SIDE - 1)
    hi = np.clip(lo + 1, 0, SIDE - 1)
    w = (at - lo).astype(np.float32)  # the same weights along rows and columns
    rows = grid[:, lo] * (1 - w)[None, :, None, None] + grid[:, hi] * w[None, :, None, None]
    out = rows[:, :, lo] * (1 - w)[None, None, :, None] + rows[:, :, hi] * w[None, None, :, None]
    return out.reshape(cells.shape)


GRAY_SCALE = 4.0  # gray lightness is one channel of three, and finer: gray copies differ by <= 0.22
GRAY_LAB = 4.0  # mean L*a*b* chroma below which a signature counts as grayscale


def _chroma(cells: np.ndarray) -> np.ndarray:
    return np.hypot(cells[..., 1], cells[..., 2]).mean(-1)
