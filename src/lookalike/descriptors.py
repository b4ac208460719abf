"""Descriptors: how an image becomes one vector (which views the model sees, how they combine).

``squash`` (the default) resizes the whole image to the model's input, ignoring its
aspect ratio. The others, measured against it by ``bench/quality.py`` (see README):

- ``crop``: aspect-preserving; the centred square of the image.
- ``pad``: aspect-preserving; the whole image padded with black to a square.
- ``mirror``: the image and its mirror image, vectors summed: mirror-invariant by
  construction (2 model runs per image).
- ``regions``: the whole image plus three overlapping regions along its longer side
  (60% of it each), vectors L2-normalised and summed, in the spirit of R-MAC
  (4 model runs per image).

Views are cut in the decoder processes (this module imports only numpy and Pillow);
:func:`embed` runs the model on all views and aggregates them per image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from lookalike.errors import InvalidArgument

DEFAULT_DESCRIPTOR = "squash"
_RESAMPLE = Image.Resampling.BILINEAR


@dataclass(frozen=True)
class Descriptor:
    name: str
    crop: bool = False  # centre square instead of squashing the whole image
    pad: bool = False  # whole image padded to a square instead of squashed
    mirror: bool = False  # add the mirrored view
    regions: int = 0  # extra overlapping regions along the longer side
    help: str = ""

    @property
    def resize(self) -> str:
        """How the whole image is fitted to the model input: squash, crop or pad."""
        return "crop" if self.crop else "pad" if self.pad else "squash"

    @property
    def views(self) -> int:
        """Model runs per image."""
        return 1 + int(self.mirror) + self.regions

    @property
    def decode_scale(self) -> float:
        """How much larger than the model input the decoder must keep the image."""
        return 1 / REGION_FRACTION if self.regions else 1.0

    def cut(self, rgb: Image.Image, size: tuple[int, int]) -> np.ndarray:
        """The views of an RGB image: uint8 [h, w, 3] for one view, else [views, h, w, 3]."""
        h, w = size
        whole = rgb
        if self.crop:
            side = min(rgb.size)
            left, top = (rgb.width - side) // 2, (rgb.height - side) // 2
            whole = rgb.crop((left, top, left + side, top + side))
        elif self.pad:  # shrunk first: a square canvas of a 100:1 panorama would be huge
            scale = min(1.0, max(w, h) / max(rgb.size))
            inner = rgb
            if scale < 1.0:
                small = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
                inner = rgb.resize(small, _RESAMPLE, reducing_gap=2.0)
            side = max(inner.size)
            whole = Image.new("RGB", (side, side))
            whole.paste(inner, ((side - inner.width) // 2, (side - inner.height) // 2))
        views = [_resized(whole, w, h)]
        if self.mirror:
            views.append(np.ascontiguousarray(views[0][:, ::-1]))
        for box in _region_boxes(rgb.width, rgb.height, self.regions):
            views.append(_resized(rgb.crop(box), w, h))
        return views[0] if len(views) == 1 else np.stack(views)


REGION_FRACTION = 0.6
DESCRIPTORS: dict[str, Descriptor] = {
    d.name: d
    for d in (
        Descriptor("squash", help="whole image resized to the model input (default)"),
        Descriptor("crop", crop=True, help="centre square, aspect ratio kept"),
        Descriptor("pad", pad=True, help="whole image padded to a square, aspect ratio kept"),
        Descriptor("mirror", mirror=True, help="image + mirror image, summed (2x model runs)"),
        Descriptor("regions", regions=3, help="whole + 3 overlapping regions, summed (4x model runs)"),
    )
}


def get_descriptor(name: str | None) -> Descriptor:
    """The descriptor called ``name`` (None: the default); a clear error for unknown ones."""
    name = name or DEFAULT_DESCRIPTOR
    if name not in DESCRIPTORS:
        raise InvalidArgument(f"unknown descriptor {name!r}; choose from {', '.join(DESCRIPTORS)}")
    return DESCRIPTORS[name]


def _resized(im: Image.Image, w: int, h: int) -> np.ndarray:
    if im.size != (w, h):
        im = im.resize((w, h), _RESAMPLE, reducing_gap=2.0)
    return np.asarray(im, dtype=np.uint8)


def _region_boxes(width: int, height: int, count: int) -> list[tuple[int, int, int, int]]:
    """``count`` boxes of REGION_FRACTION of the longer side, evenly spread along it."""
    if count <= 0:
        return []
    longer = max(width, height)
    span = max(1, int(longer * REGION_FRACTION))
    starts = [round(i * (longer - span) / max(count - 1, 1)) for i in range(count)]
    if width >= height:
        return [(s, 0, s + span, height) for s in starts]
    return [(0, s, width, s + span) for s in starts]


def embed(embedder, descriptor: Descriptor, pixels: list[np.ndarray]):
    """Run ``embedder`` on every view of every image; one unit vector per image.

    Views' vectors are L2-normalised, summed and normalised again; class scores (for
    labels) are those of the first view, the whole image.
    """
    from lookalike.models.runtimes import Embedding, l2_normalize

    if descriptor.views == 1:
        return embedder.embed(np.stack(pixels) if pixels else _empty(embedder))
    flat = np.concatenate(pixels) if pixels else _empty(embedder)
    out = embedder.embed(flat)
    per = l2_normalize(out.vectors).reshape(len(pixels), descriptor.views, -1)
    scores = None if out.scores is None else out.scores[:: descriptor.views]
    return Embedding(l2_normalize(per.sum(axis=1)), scores)


def _empty(embedder) -> np.ndarray:
    return np.zeros((0, *embedder.info.input_size, 3), np.uint8)
