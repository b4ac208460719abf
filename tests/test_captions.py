"""Caption bars are filled before the model sees a picture; pictures without them are not touched."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from lookalike import captions
from lookalike.images import decode

SIZE = (224, 224)


def _scene(seed: int = 5, size: tuple[int, int] = (1200, 800)) -> Image.Image:
    """A dark, quiet picture (a wallpaper): a caption bar is the strongest thing on it."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(10, 90, (6, 9, 3), dtype=np.uint8)
    im = Image.fromarray(blocks, "RGB").resize(size, Image.Resampling.BICUBIC)
    arr = np.asarray(im, np.float32) + rng.normal(0, 2, (size[1], size[0], 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _captioned(im: Image.Image, tops=(0.05, 0.48, 0.91), fill="white", ink="black", text=True) -> Image.Image:
    """Full-width bars 4% of the height, a line of text in each."""
    out = im.copy()
    w, h = out.size
    bar = round(h * 0.04)
    font = ImageFont.load_default(size=round(bar * 0.75))
    draw = ImageDraw.Draw(out)
    for top in (round(h * t) for t in tops):
        draw.rectangle((0, top, w, top + bar - 1), fill=fill)
        if text:
            draw.text((w // 30, top + bar // 2), "photo: a friend", fill=ink, font=font, anchor="lm")
    return out


def _luma(im: Image.Image) -> np.ndarray:
    small = im.convert("L").resize((captions.COLS, captions.ROWS), Image.Resampling.BOX)
    return np.asarray(small, np.float32)


def _gap(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean())


@pytest.mark.parametrize("fill,ink", [("white", "black"), ("black", "white")])
def test_caption_bars_are_found_and_filled_from_the_rows_beside_them(fill, ink):
    scene = _scene()
    copy = _captioned(scene, fill=fill, ink=ink)
    found = captions.bars(_luma(copy))
    assert len(found) == 3
    for (a, b), top in zip(found, (0.05, 0.48, 0.91), strict=True):
        assert abs(a / captions.ROWS - top) < 0.01 and 0.02 < (b - a) / captions.ROWS < 0.06
    restored = captions.filled(copy)
    assert _gap(restored, scene) < 0.2 * _gap(copy, scene)
    assert captions.bars(_luma(restored)) == []


def test_the_model_input_of_a_captioned_copy_is_its_original_s_nearly():
    scene = _scene()
    original, copy = (decode(_jpeg(im), SIZE).pixels for im in (scene, _captioned(scene)))
    unfilled = np.asarray(_captioned(scene).resize((SIZE[1], SIZE[0]), Image.Resampling.BILINEAR))
    gap, without = (np.abs(x.astype(float) - original).mean() for x in (copy, unfilled))
    assert gap < 0.25 * without


def _jpeg(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=92)
    return buf.getvalue()


def _stripes() -> Image.Image:
    """A striped design: a dozen flat bands, with a line of text in one."""
    im = Image.new("RGB", (1200, 800), (40, 40, 40))
    draw = ImageDraw.Draw(im)
    for n in range(12):
        draw.rectangle((0, 30 + n * 64, 1200, 30 + n * 64 + 30), fill=(200, 200, 200))
    draw.text((40, 45), "stripes", fill="black", font=ImageFont.load_default(size=22), anchor="lm")
    return im


def _letterboxed() -> Image.Image:
    """The scene between black bars at the top and bottom, with a line of text in one."""
    im = Image.new("RGB", (1200, 1000), "black")
    im.paste(_scene(), (0, 100))
    font = ImageFont.load_default(size=40)
    ImageDraw.Draw(im).text((40, 50), "a film", fill="white", font=font, anchor="lm")
    return im


def _crossed() -> Image.Image:
    """A product photo: an object on white in front of a white band that it crosses."""
    im = Image.new("RGB", (1200, 800), (120, 140, 160))
    draw = ImageDraw.Draw(im)
    draw.rectangle((0, 360, 1200, 400), fill="white")
    draw.rectangle((500, 100, 620, 700), fill=(30, 30, 30))
    draw.text((40, 380), "x", fill="black", font=ImageFont.load_default(size=30), anchor="lm")
    return im


@pytest.mark.parametrize(
    "picture",
    [
        _scene,
        lambda: _captioned(_scene(), text=False),  # plain bands: a design's, not a caption
        _stripes,
        _letterboxed,
        _crossed,
    ],
    ids=["plain", "bands without text", "stripes", "letterbox", "object across a band"],
)
def test_pictures_without_caption_bars_are_passed_through_untouched(picture):
    im = picture()
    assert captions.bars(_luma(im)) == []
    assert captions.filled(im) is im


def test_tiny_pictures_have_no_bars():
    assert captions.bars(np.zeros((5, 40), np.float32)) == []
    im = Image.new("RGB", (6, 6), "white")
    assert captions.filled(im) is im


def test_a_smaller_more_compressed_copy_is_filled_alike():
    """The bars are measured again on each picture's own rows and filled from the mean of a
    few rows beyond their blurred edges: a copy at half the size and JPEG quality 30 gets
    about the same fill, not one that takes the bar's edge for the picture."""
    copy = _captioned(_scene())
    buf = io.BytesIO()
    copy.resize((copy.width // 2, copy.height // 2), Image.Resampling.BILINEAR).save(buf, "JPEG", quality=30)
    small = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    assert len(captions.bars(_luma(small))) == 3
    side = (300, 200)
    as_is = _gap(copy.resize(side, Image.Resampling.BOX), small.resize(side, Image.Resampling.BOX))
    fills = _gap(
        captions.filled(copy).resize(side, Image.Resampling.BOX),
        captions.filled(small).resize(side, Image.Resampling.BOX),
    )
    assert fills < 1.5 * as_is
