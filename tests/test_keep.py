"""Keep rules that keep originals: real files indexed, grouped and ranked."""

from __future__ import annotations

import io
import shutil

import pytest
from PIL import Image
from typer.testing import CliRunner

from lookalike import Index, IndexOptions
from lookalike.cli import app
from lookalike.errors import InvalidArgument
from lookalike.search.keep import KeepRules, jpeg_quality
from lookalike.search.provenance import header_facts, lossy_webp, same_pixels
from tests.conftest import SHARED_PHOTOS, SHARED_SAVED_MODEL, make_photo, needs_shared

PARROT = SHARED_PHOTOS / "coral" / "parrot.jpg"  # a Canon EOS 50D JPEG with EXIF and GPS


def _groups(tmp_path, folder, model):
    ix = Index(tmp_path / "ix")
    ix.add([folder], model=str(model), options=IndexOptions(workers=0))
    return ix.duplicates(0.9)


def _reasons(group) -> dict[str, str]:
    return {d.row.path.rsplit("/", 1)[1]: why for d, why in zip(group.duplicates, group.reasons, strict=True)}


@pytest.mark.parametrize("q", [30, 50, 75, 90, 95, 100])
def test_jpeg_quality_is_read_back_from_the_quantisation_tables(q):
    buf = io.BytesIO()
    make_photo(q).save(buf, "JPEG", quality=q)
    assert jpeg_quality(Image.open(buf).quantization) == q


@needs_shared(PARROT)
def test_the_camera_jpeg_is_kept_over_its_larger_png_reencode(tmp_path, tf2_model):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(PARROT, folder / "parrot.jpg")
    Image.open(PARROT).save(folder / "parrot.png")  # what an editor's "export as PNG" does
    assert (folder / "parrot.png").stat().st_size > (folder / "parrot.jpg").stat().st_size
    assert header_facts(str(folder / "parrot.jpg")).gps and not header_facts(str(folder / "parrot.png")).gps
    (g,) = _groups(tmp_path, folder, tf2_model)
    assert g.keep.path.endswith("parrot.jpg")
    assert _reasons(g) == {"parrot.png": "camera metadata this copy lacks (Canon EOS 50D, capture time, GPS)"}


def test_without_metadata_a_jpeg_beats_a_png_made_from_it_and_a_png_beats_a_jpeg_made_from_it(
    tmp_path, tf2_model
):
    folder = tmp_path / "photos"
    folder.mkdir()
    make_photo(1, (640, 480)).save(folder / "a.jpg", quality=85)
    Image.open(folder / "a.jpg").save(folder / "a_export.png")  # the JPEG's decode, saved losslessly
    make_photo(2, (640, 480)).save(folder / "b.png")  # a lossless original ...
    Image.open(folder / "b.png").save(folder / "b_small.jpg", quality=100, subsampling=0)  # ... made lossy
    Image.open(folder / "b.png").save(folder / "b_padded.jpg", quality=95, icc_profile=b"x" * 900_000)
    assert same_pixels(str(folder / "a.jpg"), str(folder / "a_export.png"))
    assert not same_pixels(str(folder / "b.png"), str(folder / "b_small.jpg"))
    groups = {g.keep.path.rsplit("/", 1)[1]: _reasons(g) for g in _groups(tmp_path, folder, tf2_model)}
    assert groups == {
        "a.jpg": {"a_export.png": "original JPEG: this PNG is a re-encode of a JPEG (same pixels)"},
        "b.png": {
            "b_small.jpg": "higher quality (lossless PNG vs JPEG quality 100)",
            "b_padded.jpg": "higher quality (lossless PNG vs JPEG quality 95)",
        },
    }
    assert (folder / "b_padded.jpg").stat().st_size > (folder / "b.png").stat().st_size


def test_a_preferred_format_may_be_given_as_an_extension_and_an_unknown_one_is_refused(tmp_path, tf2_model):
    """`--prefer-format jpg` was compared with Pillow's names (JPEG) and silently ignored,
    as was `--prefer-format XYZ`."""
    folder = tmp_path / "photos"
    folder.mkdir()
    make_photo(2, (640, 480)).save(folder / "b.png")
    Image.open(folder / "b.png").save(folder / "b_small.jpg", quality=90)
    ix = Index(tmp_path / "ix")
    ix.add([folder], model=str(tf2_model), options=IndexOptions(workers=0))
    for given in ("jpg", ".JPG", "jpeg", "JPEG"):
        (g,) = ix.duplicates(0.9, KeepRules(prefer_formats=[given]))
        assert g.keep.path.endswith("b_small.jpg"), given
        assert _reasons(g) == {"b.png": "the kept copy is in a preferred format (JPEG)"}
    with pytest.raises(InvalidArgument, match="unknown image format 'XYZ'"):
        KeepRules(prefer_formats=["XYZ"])
    res = CliRunner().invoke(app, ["dupes", "--prefer-format", "XYZ", "--index", str(tmp_path / "ix")])
    assert res.exit_code == 2 and "unknown image format" in res.output


def test_a_flat_rendering_is_not_taken_for_a_re_encode_of_its_jpeg_copy(tmp_path):
    """A grayscale rendering (flat shaded boxes) saved as JPEG q90 decodes to mostly the same
    values: 9 in 10 equal, mean gap ~0.1, as a lossless save of a JPEG's decode would.
    Only its edges miss, by several levels: it is the JPEG that was made from the PNG."""
    from PIL import ImageDraw

    scene = Image.new("L", (640, 480), 70)
    draw = ImageDraw.Draw(scene)
    for n in range(6):
        draw.rectangle((40 + 90 * n, 60 + 30 * n, 120 + 90 * n, 200 + 30 * n), fill=120 + 20 * n)
        draw.polygon([(90 * n, 470), (60 + 90 * n, 300), (80 + 90 * n, 470)], fill=230 - 25 * n)
    scene.convert("RGB").save(tmp_path / "render.png")
    scene.save(tmp_path / "render_gray.jpg", quality=90)
    assert not same_pixels(str(tmp_path / "render.png"), str(tmp_path / "render_gray.jpg"))
    Image.open(tmp_path / "render_gray.jpg").save(tmp_path / "export.png")  # the JPEG's decode, saved
    assert same_pixels(str(tmp_path / "export.png"), str(tmp_path / "render_gray.jpg"))


def test_jpeg_quality_before_size(tmp_path, tf2_model):
    folder = tmp_path / "photos"
    folder.mkdir()
    photo = make_photo(3, (640, 480))
    photo.save(folder / "fine.jpg", quality=95)
    photo.save(folder / "coarse_but_larger.jpg", quality=60, icc_profile=b"x" * 500_000)
    assert (folder / "coarse_but_larger.jpg").stat().st_size > (folder / "fine.jpg").stat().st_size
    (g,) = _groups(tmp_path, folder, tf2_model)
    assert g.keep.path.endswith("fine.jpg")
    assert _reasons(g) == {"coarse_but_larger.jpg": "higher quality (JPEG quality 95 vs JPEG quality 60)"}


FORMATS = SHARED_PHOTOS / "ukbench-variants" / "formats_images"  # one photo as JPEG, PNG and WebP


@needs_shared(FORMATS)
def test_a_jpeg_is_kept_over_a_webp_of_it_of_the_same_resolution(tmp_path, tf2_model):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(FORMATS / "ukbench09380.jpeg", folder / "photo.jpeg")
    shutil.copy(FORMATS / "ukbench09380.webp", folder / "photo.webp")
    (g,) = _groups(tmp_path, folder, tf2_model)
    assert g.keep.path.endswith("photo.jpeg")
    assert _reasons(g) == {"photo.webp": "higher quality (JPEG quality 97 vs WEBP, quality not measured)"}


def test_a_lossy_webp_is_known_from_its_chunks_and_never_decoded_to_compare(tmp_path):
    im = make_photo(4, (64, 48))
    im.save(tmp_path / "lossy.webp", "WEBP", quality=80)
    im.save(tmp_path / "lossless.webp", "WEBP", lossless=True)
    im.convert("RGBA").save(tmp_path / "alpha.webp", "WEBP", quality=80)  # VP8X, ALPH, then VP8
    im.save(tmp_path / "a.png")
    assert lossy_webp(str(tmp_path / "lossy.webp")) and lossy_webp(str(tmp_path / "alpha.webp"))
    assert not lossy_webp(str(tmp_path / "lossless.webp")) and not lossy_webp(str(tmp_path / "a.png"))
    assert not lossy_webp(str(tmp_path / "missing.webp"))


def test_a_pngs_gps_is_read_from_its_header_without_decoding_its_pixels(tmp_path, monkeypatch):
    from PIL import PngImagePlugin

    exif = Image.Exif()
    exif.get_ifd(0x8825)[2] = (52.0, 31.0, 0.0)  # GPSLatitude
    with_gps, plain = tmp_path / "gps.png", tmp_path / "plain.png"
    make_photo(1).save(with_gps, exif=exif.tobytes())  # Pillow writes eXIf before the pixels
    make_photo(1).save(plain)

    def no_decoding(self):
        raise AssertionError("the pixels were decoded")

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", no_decoding)
    assert header_facts(str(with_gps)).gps and not header_facts(str(plain)).gps


def test_between_lossless_copies_the_older_file_is_kept_not_the_larger(tmp_path, tf2_model):
    """A PNG and a copy of it saved later, less compressed (an editor's export): size says
    nothing of fidelity between lossless files, so the older file (the original) is kept."""
    import os

    folder = tmp_path / "photos"
    folder.mkdir()
    photo = make_photo(5, (640, 480))
    photo.save(folder / "original.png", compress_level=9)
    photo.save(folder / "export.png", compress_level=1)
    assert (folder / "export.png").stat().st_size > (folder / "original.png").stat().st_size
    os.utime(folder / "original.png", ns=(1_600_000_000 * 10**9,) * 2)
    (g,) = _groups(tmp_path, folder, tf2_model)
    assert g.keep.path.endswith("original.png")
    assert _reasons(g) == {"export.png": "older file (modified earlier)"}


def test_a_lossless_webp_is_kept_over_a_jpeg_made_from_it(tmp_path, tf2_model):
    """A lossless WebP (its VP8L chunk says so) counts as lossless, not as a WebP of unknown
    quality below any JPEG; a lossy one still does."""
    folder = tmp_path / "photos"
    folder.mkdir()
    photo = make_photo(6, (640, 480))
    photo.save(folder / "original.webp", "WEBP", lossless=True)
    photo.save(folder / "export.jpg", quality=95)
    assert header_facts(str(folder / "original.webp")).lossless
    photo.save(tmp_path / "lossy.webp", "WEBP", quality=90)
    assert not header_facts(str(tmp_path / "lossy.webp")).lossless
    assert not header_facts(str(folder / "export.jpg")).lossless
    (g,) = _groups(tmp_path, folder, tf2_model)
    assert g.keep.path.endswith("original.webp")
    assert _reasons(g) == {"export.jpg": "higher quality (lossless WEBP vs JPEG quality 95)"}


def _resaved(tmp_path):
    """A quality-75 JPEG original and what people make of it at quality 90: a plain
    re-save, a mirrored, a captioned and a gray copy; a quality-50 copy; a lossy WebP copy
    and a JPEG saved from that WebP; and another photo of the same size."""
    from PIL import ImageOps

    from lookalike.search.edits import caption

    make_photo(5, (640, 480)).save(tmp_path / "original.jpg", quality=75)
    source = Image.open(tmp_path / "original.jpg")
    source.save(tmp_path / "resaved.jpg", quality=90)
    ImageOps.mirror(source).save(tmp_path / "mirrored.jpg", quality=90)
    caption(source).save(tmp_path / "captioned.jpg", quality=90)
    ImageOps.grayscale(source).save(tmp_path / "gray.jpg", quality=90)
    source.save(tmp_path / "coarse.jpg", quality=50)
    source.save(tmp_path / "copy.webp", "WEBP", quality=80)
    Image.open(tmp_path / "copy.webp").save(tmp_path / "from_webp.jpg", quality=95)
    make_photo(6, (640, 480)).save(tmp_path / "other.jpg", quality=75)


def test_a_jpeg_resaved_from_another_files_pixels_is_told_from_its_source(tmp_path):
    from lookalike.search.resave import FROM, Decoded, open_decoded, verdict

    _resaved(tmp_path)

    def im(name: str) -> Decoded:
        decoded = open_decoded(str(tmp_path / name))
        assert decoded is not None, name
        return decoded

    for copy in ("resaved.jpg", "mirrored.jpg", "captioned.jpg", "gray.jpg", "coarse.jpg"):
        assert verdict(im(copy), im("original.jpg")) == FROM, copy
        assert verdict(im("original.jpg"), im(copy)) != FROM, copy  # never the other way round
    assert verdict(im("from_webp.jpg"), im("copy.webp")) == FROM
    assert verdict(im("original.jpg"), im("copy.webp")) != FROM
    assert verdict(im("resaved.jpg"), im("other.jpg")) != FROM
    assert verdict(im("mirrored.jpg"), im("captioned.jpg")) != FROM  # siblings, not each other's source


def test_a_coarse_jpeg_is_not_taken_for_a_resave_of_its_fine_webp_copy(tmp_path):
    """Re-encoding a fine WebP copy of a quality-20 JPEG with the JPEG's tables gives back
    every block of the JPEG; the WebP's coefficients, on the JPEG's lattice, tell which was
    first."""
    from lookalike.search.resave import FROM, given_back, off_lattice, open_decoded, verdict

    make_photo(1, (640, 480)).save(tmp_path / "original.jpg", quality=20)
    Image.open(tmp_path / "original.jpg").save(tmp_path / "copy.webp", "WEBP", quality=95)
    original, copy = open_decoded(str(tmp_path / "original.jpg")), open_decoded(str(tmp_path / "copy.webp"))
    assert given_back(original, copy)[0] == 1.0  # the trap
    assert off_lattice(original, copy, "none") < 0.1
    assert verdict(original, copy) != FROM


def test_the_original_jpeg_is_kept_over_its_higher_quality_resaves(tmp_path, tf2_model):
    """Quality 90 over quality 75 would keep the re-save and propose the original for
    removal; the re-saves give themselves away, and the original is kept."""
    folder = tmp_path / "photos"
    folder.mkdir()
    _resaved(folder)
    for name in ("mirrored.jpg", "gray.jpg", "coarse.jpg", "other.jpg", "copy.webp", "from_webp.jpg"):
        (folder / name).unlink()  # (the tiny test model does not group mirrored copies)
    (g,) = _groups(tmp_path, folder, tf2_model)
    assert g.keep.path.endswith("original.jpg")
    resaved = "original JPEG: this JPEG was re-saved from a JPEG's pixels"
    assert _reasons(g) == {"resaved.jpg": resaved, "captioned.jpg": resaved}


def test_a_jpeg_saved_from_a_webp_does_not_outrank_it(tmp_path, tf2_model):
    folder = tmp_path / "photos"
    folder.mkdir()
    _resaved(folder)
    for name in list(folder.iterdir()):
        if name.name not in ("copy.webp", "from_webp.jpg"):
            name.unlink()
    (g,) = _groups(tmp_path, folder, tf2_model)
    assert g.keep.path.endswith("copy.webp")
    assert _reasons(g) == {"from_webp.jpg": "original WEBP: this JPEG was re-saved from a WEBP's pixels"}


def test_the_camera_is_named_once_whatever_the_case_of_its_make():
    from lookalike.search.keep import camera_name

    assert camera_name({"Make": "Canon", "Model": "Canon EOS 50D"}) == "Canon EOS 50D"
    assert camera_name({"Make": "samsung", "Model": "SAMSUNG SM-G960F"}) == "SAMSUNG SM-G960F"
    assert camera_name({"Make": "Apple", "Model": "iPhone 12"}) == "Apple iPhone 12"
    assert camera_name({"Model": "DSC-RX100"}) == "DSC-RX100" and camera_name({}) == ""


def _smooth(size: tuple[int, int]) -> Image.Image:
    """A wallpaper-like picture: gradients and a soft shape, so that a fine JPEG re-save of
    a coarse save re-encodes back to it, block for block."""
    import numpy as np

    h, w = size[1], size[0]
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    blob = 90 * np.exp(-(((x - w * 0.6) / (w * 0.2)) ** 2 + ((y - h * 0.4) / (h * 0.25)) ** 2))
    rgb = np.stack([40 + 120 * x / w + blob, 60 + 80 * y / h, 150 - 60 * x / w + blob / 2], axis=2)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def test_of_two_jpegs_that_reencode_to_each_other_the_newer_is_the_resave(tmp_path, tf2_model):
    """A quality-90 copy of a smooth quality-75 wallpaper (or of a coarse gray JPEG) and the
    original give each other back, and a quality-75 re-save has its blocks nearly
    everywhere: the pixels cannot say which came first, and quality 90 (or a larger file)
    would keep a copy. The file dates say it: the original is kept."""
    import os

    from lookalike.search.resave import EACH_OTHER, open_decoded, verdict

    folder = tmp_path / "photos"
    folder.mkdir()
    _smooth((1280, 800)).save(folder / "wallpaper.jpg", quality=75)
    Image.open(folder / "wallpaper.jpg").save(folder / "wallpaper-copy.jpg", quality=90)
    padded = b"x" * 4000  # the larger file, so that size would keep it
    Image.open(folder / "wallpaper.jpg").save(folder / "wallpaper-resaved.jpg", quality=75, comment=padded)
    names = ("wallpaper.jpg", "wallpaper-copy.jpg", "wallpaper-resaved.jpg")
    original, copy, resaved = (open_decoded(str(folder / n)) for n in names)
    assert verdict(copy, original) == verdict(original, copy) == EACH_OTHER
    assert verdict(resaved, original) == verdict(original, resaved) == EACH_OTHER
    os.utime(folder / "wallpaper.jpg", ns=(10**18, 10**18))  # the original is the older file
    (g,) = _groups(tmp_path, folder, tf2_model)
    assert g.keep.path.endswith("wallpaper.jpg")
    each_other = "original JPEG: a newer re-save of the same pixels"
    assert _reasons(g) == {"wallpaper-copy.jpg": each_other, "wallpaper-resaved.jpg": each_other}


def _framed(im: Image.Image, left: int, top: int, right: int, bottom: int, tone: int) -> Image.Image:
    """``im`` on a larger canvas of one ``tone``: bands added at its edges."""
    canvas = Image.new("RGB", (im.width + left + right, im.height + top + bottom), (tone,) * 3)
    canvas.paste(im, (left, top))
    return canvas


@needs_shared(PARROT, SHARED_SAVED_MODEL)
def test_a_copy_with_a_caption_bar_or_border_added_is_not_kept_for_its_larger_canvas(tmp_path):
    """The bands add pixels, not picture: the camera original is kept over a captioned copy
    saved at a higher quality, and a crop is still no original (was: the captioned copy,
    'larger resolution')."""
    from PIL import ImageDraw

    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(PARROT, folder / "parrot.jpg")
    photo = Image.open(PARROT).convert("RGB")
    captioned = _framed(photo, 0, 0, 0, 70, 255)
    ImageDraw.Draw(captioned).text((12, photo.height + 25), "Our parrot, summer", fill=(0, 0, 0))
    captioned.save(folder / "parrot_caption.jpg", quality=97)
    _framed(photo, 0, 60, 0, 0, 0).save(folder / "parrot_bar_above.jpg", quality=97)
    _framed(photo, 40, 0, 40, 0, 0).save(folder / "parrot_pillarbox.jpg", quality=97)
    w, h = photo.size
    photo.crop((0, h // 8, w, h - h // 8)).save(folder / "parrot_crop.jpg", quality=97)
    (g,) = _groups(tmp_path, folder, SHARED_SAVED_MODEL)  # the real model: these are copies to it
    assert g.keep.path.endswith("/parrot.jpg")
    lacks = "camera metadata this copy lacks (Canon EOS 50D, capture time, GPS)"
    assert _reasons(g) == {
        "parrot_caption.jpg": lacks,
        "parrot_bar_above.jpg": lacks,
        "parrot_pillarbox.jpg": lacks,
        "parrot_crop.jpg": f"larger resolution ({w}x{h} vs {w}x{h - 2 * (h // 8)})",
    }


IMAGENET = SHARED_PHOTOS / "imagenet-sample"


@needs_shared(IMAGENET)
@pytest.mark.parametrize(
    "name",
    [
        "n02129165_lion",  # a black border around the photo
        "n02114855_coyote",  # a caption bar below the photo
        "n07714990_broccoli",  # a plain white background above the plate
    ],
)
def test_a_crop_that_cuts_flat_bands_off_a_photo_never_outranks_it(tmp_path, name):
    """A crop that takes exactly the flat bands above and below a photo off (a border, a
    caption, a plain background) holds the same picture in a smaller frame: the original is
    kept, even against a lossless crop (was: the crop, 'higher quality', once the bands
    were found)."""
    from lookalike.captions import row_flatness
    from lookalike.search import padding
    from lookalike.search.keep import FileFacts, KeepRules
    from lookalike.storage.catalogue import FileRow

    original = IMAGENET / f"{name}.JPEG"
    im = Image.open(original).convert("RGB")
    w, h = im.size
    luma = padding._luma(str(original))
    tone, share = row_flatness(luma)
    top, bottom = padding._band(tone, share), padding._band(tone[::-1], share[::-1])
    assert top or bottom
    crop = tmp_path / f"{name}_crop.png"
    im.crop((0, round(top / len(luma) * h), w, h - round(bottom / len(luma) * h))).save(crop)
    files = [FileRow(n, str(p), p.stat().st_size, 0, None, *Image.open(p).size, "PNG" if n else "JPEG", None)
             for n, p in enumerate((original, crop))]  # fmt: skip
    pictures = padding.picture_sizes(files)
    assert 0 in pictures  # the bands are found: the two are one picture, in two frames
    rules = KeepRules(facts={i: FileFacts(picture=size) for i, size in pictures.items()})
    assert min(files, key=rules.rank).path == str(original), rules.reason(files[1], files[0])
    assert rules.reason(*files).startswith("larger frame")


def test_a_huge_non_jpeg_is_not_decoded_for_its_bands(tmp_path, recwarn):
    """Bands are looked for on a reduced decode; a PNG decodes whole, so one over 40 MP is
    left alone (was: decoded, a 91 MP one took 355 MB and warned of a decompression bomb)."""
    from lookalike.search import padding

    Image.new("L", (7000, 6000), 200).save(tmp_path / "huge.png")  # 42 MP
    Image.new("L", (7000, 6000), 200).save(tmp_path / "huge.jpg")  # a JPEG decodes at 1/8 scale
    assert padding._luma(str(tmp_path / "huge.png")) is None
    assert padding._luma(str(tmp_path / "huge.jpg")).shape == (219, 256)
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


@needs_shared(IMAGENET)
def test_an_original_between_two_crops_is_kept(tmp_path):
    """With two crops, one matching the original's shape once its flat side band is taken
    off, the original was measured by that crop's smaller picture and the other crop,
    larger than that, was kept (e9b7250). A picture outranked by another member's is no
    frame's: the original keeps its own size."""
    from lookalike.search import padding
    from lookalike.search.keep import FileFacts, KeepRules
    from lookalike.storage.catalogue import FileRow

    original = IMAGENET / "n01773157_black_and_gold_garden_spider.JPEG"
    im = Image.open(original).convert("RGB")
    w, h = im.size
    im.crop((0, 0, w - int(w * 0.12), h)).save(tmp_path / "crop_right.png")
    im.crop((0, 0, w, h - int(h * 0.05))).save(tmp_path / "crop_bottom.jpg", quality=92)
    paths = (original, tmp_path / "crop_right.png", tmp_path / "crop_bottom.jpg")
    files = [FileRow(n, str(p), p.stat().st_size, 0, None, *Image.open(p).size, Image.open(p).format, None)
             for n, p in enumerate(paths)]  # fmt: skip
    pictures = padding.picture_sizes(files)
    rules = KeepRules(facts={i: FileFacts(picture=size) for i, size in pictures.items()})
    assert min(files, key=rules.rank).path == str(original), (pictures, rules.reason(files[2], files[0]))
