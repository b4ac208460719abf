"""Colour signatures: edits keep the colour relation, recolourings break it."""

from __future__ import annotations

import io

from PIL import Image, ImageOps

from lookalike import colour
from lookalike.images import decode
from tests.conftest import make_photo

SIZE = (224, 224)


def _sig(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=90)
    return decode(buf.getvalue(), SIZE).colour


def _hue(im: Image.Image, degrees: int) -> Image.Image:
    h, s, v = im.convert("HSV").split()
    h = h.point(lambda x: (x + degrees * 256 // 360) % 256)
    return Image.merge("HSV", (h, s, v)).convert("RGB")


def test_signature_is_a_small_thumbnail_of_the_whole_picture():
    sig = _sig(make_photo(1))
    assert isinstance(sig, bytes) and len(sig) > colour.SIGNATURE_BYTES  # then lookalike.detail's grid
    assert colour.detail_grid(sig) == sig[colour.SIGNATURE_BYTES :]


def test_copies_keep_colour_and_layout_recolourings_do_not():
    photo = make_photo(5, (400, 300))
    original = _sig(photo)
    for copy in (photo.resize((200, 150)), ImageOps.mirror(photo), photo.crop((20, 15, 380, 285))):
        rel = colour.compare(original, _sig(copy))
        assert rel.chroma < 0.3 and rel.layout > 0.5, rel
    gray = colour.compare(original, _sig(ImageOps.grayscale(photo)))
    assert gray.gray  # colour cannot tell: not a recolouring
    for variant in (_hue(photo, 120), Image.merge("RGB", photo.split()[::-1])):
        assert colour.compare(original, _sig(variant)).chroma > 0.4
    dark = colour.compare(original, _sig(ImageOps.invert(photo)))
    assert dark.layout < -0.5  # a light/dark version


def _gap(a: bytes, b: bytes) -> float:
    return float(colour.pixel_gaps(colour.lab([a]), colour.lab([b]))[0])


def test_pixel_gap_small_for_copies_large_for_the_design_in_other_colours():
    from PIL import ImageDraw

    photo = make_photo(5, (400, 300))
    original = _sig(photo)
    captioned = photo.copy()
    ImageDraw.Draw(captioned).rectangle((0, 265, 400, 300), fill="white")  # a caption bar
    copies = {
        "resized": photo.resize((200, 150)),
        "mirrored": ImageOps.mirror(photo),
        "grayscale": ImageOps.grayscale(photo),
        "captioned": captioned,
        "re-encoded": photo,
        "cropped to its centre": photo.crop((80, 60, 320, 240)),  # 60% of each side
    }
    for name, copy in copies.items():
        assert _gap(original, _sig(copy)) < 6.0, name
    for degrees in (60, 120, 180):
        assert _gap(original, _sig(_hue(photo, degrees))) > 10.0, degrees
    inverted = _gap(original, _sig(ImageOps.invert(photo)))
    assert inverted > 20.0
    # one against many gives the same as pair by pair
    many = colour.lab([_sig(c) for c in copies.values()])
    one = colour.pixel_gaps(colour.lab([original]), many)
    assert list(one) == [_gap(original, _sig(c)) for c in copies.values()]


def test_a_gray_copy_is_compared_in_the_lightness_image_tools_give_it():
    photo = make_photo(5, (400, 300))
    gray = ImageOps.grayscale(photo)  # Rec. 601 luma, as most tools make it
    assert _gap(_sig(photo), _sig(gray)) < 1.0
    for degrees in (60, 120, 180):  # the gray copy of the design in other colours is another picture
        assert _gap(_sig(photo), _sig(ImageOps.grayscale(_hue(photo, degrees)))) > 10.0
