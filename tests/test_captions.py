"""Caption bars are filled before the model sees a picture; pictures without them are not touched."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from lookalike import captions
from lookalike.images import decode
from tests.conftest import SHARED_MODELS, SHARED_PHOTOS, needs_shared

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


def test_a_query_is_also_cut_with_its_bars_filled_an_indexed_file_as_it_is():
    scene = _scene()
    original = decode(_jpeg(scene), SIZE, second_looks=True)
    assert original.uncaptioned is None  # nothing to fill: one view, as before
    indexed, query = (decode(_jpeg(_captioned(scene)), SIZE, second_looks=c) for c in (False, True))
    assert indexed.uncaptioned is None and np.array_equal(indexed.pixels, query.pixels)
    assert indexed.colour == query.colour  # the colour signature is the picture's as it is
    gap, without = (
        np.abs(x.astype(float) - original.pixels).mean() for x in (query.uncaptioned, query.pixels)
    )
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


def test_a_grid_too_narrow_to_read_has_no_bars():
    """A written bar on a grid of 7 columns (a sliver of a picture): too few to tell a line
    of text from the picture; on 8 columns the same bar is found."""
    grid = np.full((40, 8), 100.0, np.float32)
    grid[18:22] = 255.0
    grid[19:21, 3] = 0.0  # a glyph
    assert captions.bars(grid) == [(18, 22)]
    assert captions.bars(grid[:, :7]) == []


def test_a_bar_too_near_an_edge_to_fill_from_both_sides_leaves_the_picture_as_it_is():
    scene = _scene()
    copy = scene.copy()
    draw = ImageDraw.Draw(copy)
    draw.rectangle((0, 6, copy.width, 37), fill="white")
    draw.text((40, 22), "photo: a friend", fill="black", font=ImageFont.load_default(size=24), anchor="lm")
    assert captions.bars(_luma(copy))  # found, but no rows above it to fill it from
    assert captions.filled(copy) is copy
    assert decode(_jpeg(copy), SIZE, second_looks=True).uncaptioned is None  # no second model run


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


def test_merged_candidates_keep_each_file_at_its_better_score():
    from lookalike.search.neighbours import merged

    scores, ids = merged(
        np.array([0.9, 0.5, 0.4, -np.inf]),
        np.array([1, 2, 3, -1]),
        np.array([0.8, 0.7, 0.6, 0.1]),
        np.array([4, 2, 1, 5]),
    )
    assert ids.tolist() == [1, 4, 2, 3] and np.allclose(scores, [0.9, 0.8, 0.7, 0.4])
    scores, ids = merged(
        np.array([0.3, -np.inf]), np.array([7, -1]), np.array([-np.inf, -np.inf]), np.array([-1, -1])
    )
    assert ids.tolist() == [7, -1] and scores[0] == np.float64(0.3)


MODEL = SHARED_MODELS / "mobilenet_v1_075_224_feature_vector"


@needs_shared(MODEL, SHARED_PHOTOS / "imagenet-sample")
def test_a_captioned_copy_finds_its_quiet_original_and_an_indexed_captioned_file_itself(tmp_path):
    """A dark wallpaper's captioned copy among captioned photos: searched with its bars
    filled too, it finds its original first, at a higher score than as it is (0.58 with
    this model). The captioned file itself, once indexed, is still found as the same picture."""
    from lookalike import Index, IndexOptions
    from lookalike.search.neighbours import search_vectors

    folder = tmp_path / "photos"
    folder.mkdir()
    for n, photo in enumerate(sorted((SHARED_PHOTOS / "imagenet-sample").iterdir())[:40]):
        im = Image.open(photo).convert("RGB")
        (_captioned(im) if n % 2 else im).save(folder / f"{n}.jpg", quality=90)  # half of them captioned
    wallpaper = _scene(11)
    wallpaper.save(folder / "wallpaper.jpg", quality=90)
    index = Index(tmp_path / "ix")
    index.add([folder], model=str(MODEL), options=IndexOptions(workers=0))
    queries = tmp_path / "queries"
    queries.mkdir()
    query = queries / "captioned.jpg"
    _captioned(wallpaper).save(query, quality=90)
    (result,) = index.search([query], k=10)
    assert result.hits[0].path == str(folder / "wallpaper.jpg")
    traits: list = []
    vectors, _ = index.query_vectors([query], traits=traits)  # the search as it was: bars and all
    assert traits[0].uncaptioned is None
    with index.store() as store:
        (plain,) = search_vectors(store, vectors, 10, traits=traits)
    (original,) = [h.score for h in plain if h.path == str(folder / "wallpaper.jpg")]
    assert original < result.hits[0].score - 0.05
    index.add([queries], options=IndexOptions(workers=0))
    (again,) = index.search([query], k=1)
    assert again.hits[0].path == str(query) and again.hits[0].score > 0.99


def test_a_caption_laid_on_a_transparent_picture_does_not_choose_its_background():
    """A gray icon on transparency is shown on white; three opaque white caption bars laid
    on it make what is visible pale, which alone would put it on black (unlike its source).
    The bars are left out of that choice; a white logo with the same bars stays on black."""
    from lookalike.images import BLACK, WHITE, _background_for, flatten

    def icon(tone: int) -> Image.Image:
        im = Image.new("RGBA", (600, 600), (0, 0, 0, 0))
        ImageDraw.Draw(im).ellipse((200, 150, 400, 350), fill=(tone, tone, tone, 255))
        return im

    gray, white = icon(180), icon(250)
    assert flatten(gray)[1] == WHITE and flatten(white)[1] == BLACK
    captioned = _captioned(gray)
    assert _background_for(captioned) == BLACK  # what the visible pixels alone say
    shown, background = flatten(captioned)
    assert background == WHITE
    on_white = Image.new("RGB", gray.size, WHITE)
    on_white.paste(gray, mask=gray.getchannel("A"))
    assert _gap(shown, _captioned(on_white)) < 0.01  # the bars as drawn, on white
    assert flatten(_captioned(white))[1] == BLACK
