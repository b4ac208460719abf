"""Decoding: every format, orientation, colour modes, reduced-size JPEG decode, bad files."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageDraw, JpegImagePlugin

from lookalike.images import ImageError, decode, read_image_file, thumbnail_jpeg
from tests.conftest import make_photo

SIZE = (64, 48)  # (height, width)


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF"])
def test_every_format_decodes_to_model_size(fmt):
    src = make_photo(1)
    d = decode(_save(src, fmt), SIZE)
    assert d.pixels.shape == (*SIZE, 3) and d.pixels.dtype == np.uint8
    assert (d.width, d.height, d.format) == (320, 240, fmt)
    ref = np.asarray(src.resize(SIZE[::-1], Image.Resampling.BILINEAR), np.float32)
    assert np.abs(d.pixels.astype(np.float32) - ref).mean() < 12  # GIF palette / JPEG loss


def test_heif_when_available():
    pytest.importorskip("pillow_heif")
    try:
        data = _save(make_photo(2), "HEIF")
    except (KeyError, OSError):
        pytest.skip("no HEIF encoder in this pillow-heif build")
    assert decode(data, SIZE).format == "HEIF"


def test_gif_first_frame():
    frames = [Image.new("RGB", (40, 40), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    px = decode(buf.getvalue(), SIZE).pixels
    assert px[..., 0].mean() > 200 and px[..., 2].mean() < 50


def test_exif_orientation_is_applied():
    src = Image.new("RGB", (200, 100), (0, 0, 0))
    src.paste((255, 255, 255), (0, 0, 100, 100))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    d = decode(_save(src, "JPEG", exif=exif), (64, 64))
    assert (d.width, d.height) == (100, 200) and d.exif["Orientation"] == 6
    top, bottom = d.pixels[:24].mean(), d.pixels[40:].mean()
    assert top > 200 and bottom < 50  # the white left half is now on top


def test_colour_modes_become_rgb():
    gray = Image.fromarray(np.full((30, 30), 128, np.uint8), "L")
    assert decode(_save(gray, "PNG"), SIZE).pixels.std() < 1
    pal = make_photo(3).convert("P")
    assert decode(_save(pal, "PNG"), SIZE).pixels.shape == (*SIZE, 3)
    cmyk = Image.new("CMYK", (30, 30), (0, 255, 255, 0))  # pure red in CMYK
    px = decode(_save(cmyk, "JPEG"), SIZE).pixels
    assert px[..., 0].mean() > 200 and px[..., 1].mean() < 60
    deep = Image.fromarray(np.full((30, 30), 65535, np.uint16))
    assert decode(_save(deep, "PNG"), SIZE).pixels.min() == 255


def test_transparent_pixels_are_composited_on_white():
    rgba = Image.new("RGBA", (30, 30), (255, 0, 0, 0))  # fully transparent red
    assert decode(_save(rgba, "PNG"), SIZE).pixels.min() == 255
    pal = Image.new("P", (30, 30), 0)
    pal.putpalette([0, 0, 0] * 256)
    pal.info["transparency"] = 0
    assert decode(_save(pal, "PNG"), SIZE).pixels.min() == 255


def test_large_jpeg_is_decoded_at_reduced_size(monkeypatch):
    big = _save(make_photo(4, (2400, 1800)), "JPEG", quality=80)
    sizes = []
    real_load = JpegImagePlugin.JpegImageFile.load

    def spy(self):
        sizes.append(self.size)
        return real_load(self)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", spy)
    d = decode(big, (224, 224))
    assert (d.width, d.height) == (2400, 1800)  # the original's size is reported
    assert sizes and max(sizes[0]) <= 2400 // 4  # libjpeg decoded at 1/4 scale or less
    assert min(sizes[0]) >= 224


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty file"),
        (b"hello, not an image", "not a recognised image format"),
        (_save(make_photo(5), "JPEG")[:3000], "cannot decode"),
        (_save(make_photo(5), "PNG")[:2000], "cannot decode"),
    ],
)
def test_bad_data_gives_a_reason(data, reason):
    with pytest.raises(ImageError, match=reason):
        decode(data, SIZE)


def test_megapixel_cap():
    data = _save(Image.new("RGB", (3000, 2000)), "PNG")
    with pytest.raises(ImageError, match="6 MP exceeds the 5 MP limit"):
        decode(data, SIZE, max_megapixels=5)
    assert decode(data, SIZE, max_megapixels=7).width == 3000
    small = _save(Image.new("RGB", (500, 375)), "PNG")
    with pytest.raises(ImageError, match=r"500x375 = 0\.188 MP exceeds the 0\.01 MP limit"):  # not "0 MP"
        decode(small, SIZE, max_megapixels=0.01)


def test_a_picture_past_pillows_own_limit_is_refused_as_ours_are():
    """Past twice Pillow's limit, Pillow refuses at open and its own text was shown ("exceeds
    limit of 178956970 pixels, could be decompression bomb DOS attack")."""
    png = _save(Image.new("L", (1, 1)), "PNG")
    ihdr = b"IHDR" + struct.pack(">II", 20000, 20000) + png[24:29]  # 400 MP, as a header says
    huge = png[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + png[33:]
    with pytest.raises(ImageError, match=r"^too large: 400 MP exceeds the 150 MP limit \(decompression-bomb"):
        decode(huge, SIZE, max_megapixels=150)


def test_read_image_file_records_identity_and_errors(tmp_path):
    p = tmp_path / "a.jpg"
    make_photo(6).save(p)
    r = read_image_file(str(p), SIZE)
    assert r.error is None and r.size == p.stat().st_size and len(r.content_hash) == 64
    assert r.mtime_ns == p.stat().st_mtime_ns
    bad = tmp_path / "b.jpg"
    bad.write_bytes(b"junk")
    r = read_image_file(str(bad), SIZE)
    assert r.image is None and r.error == "not a recognised image format" and r.size == 4
    r = read_image_file(str(tmp_path / "missing.jpg"), SIZE)
    assert r.error.startswith("cannot read")
    r = read_image_file(str(tmp_path), SIZE)  # a folder is unreadable as a file
    assert r.error.startswith("cannot read")


def _shape(kind: str, colour: tuple, background: tuple) -> Image.Image:
    """A shape drawn in ``colour`` on ``background`` (RGBA: alpha 0 for transparency)."""
    from PIL import ImageDraw

    im = Image.new("RGBA", (120, 90), background)
    draw = ImageDraw.Draw(im)
    if kind == "circle":
        draw.ellipse((20, 10, 90, 80), fill=colour)
    else:
        draw.polygon([(10, 80), (60, 5), (110, 80)], fill=colour)
    return im


def test_pictures_in_the_alpha_channel_stay_distinct_and_match_their_on_screen_copy():
    clear = (255, 255, 255, 0)
    circle = decode(_save(_shape("circle", (255, 255, 255, 255), clear), "PNG"), SIZE).pixels
    triangle = decode(_save(_shape("triangle", (255, 255, 255, 255), clear), "PNG"), SIZE).pixels
    assert circle.std() > 50 and np.abs(circle.astype(int) - triangle).mean() > 20  # not two blanks
    on_screen = _shape("circle", (255, 255, 255, 255), (0, 0, 0, 255)).convert("RGB")  # a dark desktop
    shown = decode(_save(on_screen, "JPEG", quality=95), SIZE).pixels
    assert np.abs(circle.astype(int) - shown).mean() < 8
    # dark shapes and cut-out photos still go on white, as a flattened export shows them
    dark = decode(_save(_shape("circle", (20, 20, 20, 255), clear), "PNG"), SIZE).pixels
    assert dark.max() == 255 and dark.min() < 40
    photo = make_photo(3, (120, 90)).convert("RGBA")
    alpha = Image.new("L", photo.size, 0)
    alpha.paste(255, (20, 10, 100, 80))
    photo.putalpha(alpha)
    flattened = Image.new("RGB", photo.size, (255, 255, 255))
    flattened.paste(photo, mask=alpha)
    cut_out = decode(_save(photo, "PNG"), SIZE).pixels
    assert np.abs(cut_out.astype(int) - decode(_save(flattened, "PNG"), SIZE).pixels).mean() < 2


def test_light_coloured_icons_stay_on_white_like_their_flattened_copies():
    icon = _shape("circle", (250, 220, 60, 255), (255, 255, 255, 0))  # a yellow folder icon, say
    flat = Image.new("RGB", icon.size, (255, 255, 255))
    flat.paste(icon, mask=icon.getchannel("A"))
    seen = decode(_save(icon, "PNG"), SIZE).pixels.astype(int)
    assert np.abs(seen - decode(_save(flat, "JPEG", quality=95), SIZE).pixels).mean() < 8


def test_a_large_png_is_reduced_once_and_seen_as_the_full_picture_is():
    """A PNG many times the model's input is box-reduced once after decoding (as JPEGs are
    while decoding): its views, luma grid and colour signature match the full picture's,
    transparent ones included (reduced premultiplied: hidden colours do not bleed)."""
    from lookalike import colour
    from lookalike.images import _reduced
    from lookalike.search import metric

    photo = make_photo(5, (1600, 1200))
    rgba = photo.convert("RGBA")
    alpha = Image.new("L", rgba.size, 0)
    alpha.paste(255, (200, 150, 1400, 1050))
    rgba.putalpha(alpha)
    for im in (photo, rgba):
        small = _reduced(im, max(SIZE)).size
        assert small == (178, 134) and min(small) >= 2 * max(SIZE)  # by 9: the shorter side stays >= 2 x 64
        seen = decode(_save(im, "PNG"), SIZE)
        full = im.convert("RGBA")
        flat = Image.new("RGB", full.size, (255, 255, 255))
        flat.paste(full, mask=full.getchannel("A"))
        expected = np.asarray(flat.resize(SIZE[::-1], Image.Resampling.BILINEAR), np.float32)
        assert np.abs(seen.pixels - expected).mean() < 1.5
        unreduced = decode(_save(flat.resize((120, 90), Image.Resampling.LANCZOS), "PNG"), SIZE)
        assert metric.pixel_gaps([seen.colour], [unreduced.colour])[0] < 2.0
        assert colour.detail_grid(seen.colour) is not None
    palette = photo.convert("P")  # a mode reduce would average indices of: left whole
    assert _reduced(palette, max(SIZE)) is palette


def test_exif_text_ends_at_its_first_nul():
    """EXIF text is NUL-terminated: a Nokia N9 writes Make "Nokia\\x002", Model "N9\\x00".
    What follows the NUL is no part of the name: not stored, not shown (nor in the keep
    rules' reasons, even for rows stored before)."""
    from lookalike.search.keep import camera_metadata
    from lookalike.storage.catalogue import FileRow

    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Nokia\x002", "N9\x00"
    d = decode(_save(Image.new("RGB", (64, 48), "gray"), "JPEG", exif=exif), (64, 64))
    assert (d.exif["Make"], d.exif["Model"]) == ("Nokia", "N9")
    raw = {"Make": "Nokia\x002", "Model": "N9"}
    stored_before = FileRow(1, "/a.jpg", 1, 0, None, 64, 48, "JPEG", None, raw)
    assert camera_metadata(stored_before) == ["Nokia N9"]


def test_a_transparent_pictures_thumbnail_shows_it_as_the_index_sees_it(tmp_path):
    """Pages showed a transparent logo's thumbnail on black (its hidden pixels), where the
    index sees it on white; the thumbnail is now the indexer's screen view."""
    logo = Image.new("RGBA", (300, 200), (0, 0, 0, 0))
    ImageDraw.Draw(logo).ellipse((50, 50, 250, 150), fill=(200, 30, 30, 255))
    logo.save(tmp_path / "logo.png")
    thumb = np.asarray(Image.open(io.BytesIO(thumbnail_jpeg(tmp_path / "logo.png", 128))))
    assert thumb.shape == (85, 128, 3)
    assert thumb[0, 0].min() > 245 and thumb[42, 64, 0] > 150 > thumb[42, 64, 1]  # white around, red inside

