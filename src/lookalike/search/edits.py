"""The pictures a calibration learns from, made of one of the index's photos: its edited
copies (what a copy of a photo typically went through: "same photo" examples) and
near-identical shots of its scene ("different photo" examples as close as a library's
bursts and retakes). The edits are public: the benchmarks (bench/quality.py,
bench/dupes_quality.py, bench/lookalikes.py) make the same ones.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from lookalike.images import to_rgb


def jpeg(im: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def crop_centre(im: Image.Image, keep: float) -> Image.Image:
    """The centred part keeping ``keep`` of the width and of the height."""
    w, h = im.size
    dw, dh = int(w * (1 - keep) / 2), int(h * (1 - keep) / 2)
    return im.crop((dw, dh, w - dw, h - dh))


def caption(im: Image.Image) -> Image.Image:
    """A white caption with a black outline across the lower part, as on shared photos."""
    out = im.convert("RGB")
    size = max(12, im.height // 8)
    font = ImageFont.load_default(size=size)
    ImageDraw.Draw(out).text((im.width // 20, im.height - 2 * size), "© lookalike 2026", fill="white",
                             font=font, stroke_width=2, stroke_fill="black")  # fmt: skip
    return out


def letterbox(im: Image.Image) -> Image.Image:
    """Padded with black to a square."""
    side = max(im.size)
    canvas = Image.new("RGB", (side, side), "black")
    canvas.paste(im.convert("RGB"), ((side - im.width) // 2, (side - im.height) // 2))
    return canvas


EDITS: dict[str, Callable[[Image.Image], bytes]] = {
    "jpeg_q30": lambda im: jpeg(im, 30),
    "half_size": lambda im: jpeg(im.resize((max(1, im.width // 2), max(1, im.height // 2)))),
    "crop_80": lambda im: jpeg(crop_centre(im, 0.8)),
    "gray": lambda im: jpeg(ImageOps.grayscale(im)),
    "text": lambda im: jpeg(caption(im)),
    "mirror": lambda im: jpeg(ImageOps.mirror(im)),
    "rotate_5": lambda im: jpeg(im.convert("RGB").rotate(5, resample=Image.Resampling.BICUBIC, expand=True)),
    "letterbox": lambda im: jpeg(letterbox(im)),
}


def moved(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Another shot of the same scene where a few things moved: 3-5 patches (each 14-24%
    of a side) replaced by the picture 10-30% of a side away (people walking, a branch in
    the wind); the rest of the picture is the same."""
    out = im.convert("RGB")
    w, h = out.size
    for _ in range(int(rng.integers(3, 6))):
        pw, ph = (max(1, int(side * rng.uniform(0.14, 0.24))) for side in (w, h))
        x, y = int(rng.integers(0, w - pw + 1)), int(rng.integers(0, h - ph + 1))
        dx, dy = (int(side * rng.uniform(0.1, 0.3)) * int(rng.choice((-1, 1))) for side in (w, h))
        sx, sy = min(max(0, x + dx), w - pw), min(max(0, y + dy), h - ph)
        out.paste(im.convert("RGB").crop((sx, sy, sx + pw, sy + ph)), (x, y))
    return out


def panned(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Another shot of the same scene from a camera turned a little: the corners move by
    1.5-3.5% of a side each way (a homography, as between two views of a flat scene), and
    the frame keeps its size."""
    out = im.convert("RGB")
    w, h = out.size
    corners = np.array([(0, 0), (0, h), (w, h), (w, 0)], np.float64)
    moved_to = corners + rng.uniform(0.015, 0.035, (4, 2)) * rng.choice((-1, 1), (4, 2)) * (w, h)
    coeffs = _homography(corners, moved_to)
    return out.transform((w, h), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR)


def _homography(out_pts: np.ndarray, in_pts: np.ndarray) -> tuple[float, ...]:
    """The 8 coefficients PIL's PERSPECTIVE transform maps output points to input points by."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(out_pts, in_pts, strict=True):
        rows += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
        rhs += [u, v]
    return tuple(np.linalg.solve(np.array(rows), np.array(rhs)).tolist())


# Near-identical shots made of a photo: "different photo" examples as close as the hardest a
# library holds (its bursts and retakes), which its nearest other photos rarely are. Used
# where scores weigh the pixels (the detail residual tells them from copies): on the cosine
# alone they score as copies do, and a curve fitted with them would call no pair a copy.
SHOTS: dict[str, Callable[[Image.Image, np.random.Generator], Image.Image]] = {
    "moved": moved,
    "panned": panned,
}


EDIT_SIDE = 640  # edits are made on a reduced decode: ~3x the model input, enough for a 60% crop
SHOT_SIDE = 320  # ... and shots on one reduced further: no crop to keep, the model input is 224


def edited_copies(data: bytes) -> tuple[list[bytes], list[bytes]]:
    """The :data:`EDITS` of one image file's bytes (EXIF orientation applied first), and
    its :data:`SHOTS` (re-saved as JPEG q90), made on a copy reduced to :data:`EDIT_SIDE`
    (JPEGs decoded reduced by libjpeg; the shots: to :data:`SHOT_SIDE`): a 14 MP wallpaper
    costs what a photo does. The shots are random, seeded by the bytes: the same file gives
    the same examples."""
    with Image.open(io.BytesIO(data)) as im:
        im.draft("RGB", (EDIT_SIDE, EDIT_SIDE))
        im.thumbnail((EDIT_SIDE, EDIT_SIDE), Image.Resampling.BILINEAR, reducing_gap=2.0)
        base = to_rgb(ImageOps.exif_transpose(im))  # transparency flattened as the indexer does
    rng = np.random.default_rng(int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little"))
    small = base.copy()
    small.thumbnail((SHOT_SIDE, SHOT_SIDE), Image.Resampling.BILINEAR)  # a homography at 640 px: ~9 ms
    return [edit(base) for edit in EDITS.values()], [jpeg(shot(small, rng)) for shot in SHOTS.values()]
