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
    assert isinstance(sig, bytes) and len(sig) == colour.SIGNATURE_BYTES


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
