"""A cut-out's opaque copy on a flat black or white backdrop is also searched for on the other one;
a picture inside flat margins, as what lies inside them."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from PIL import Image, ImageDraw

from lookalike import backdrop
from lookalike.images import decode
from tests.conftest import SHARED_PHOTOS, SHARED_SAVED_MODEL, make_photo, needs_shared

SIZE = (224, 224)


def _icon(seed: int = 0, size: int = 400) -> Image.Image:
    """A coloured icon on transparency: a shaded disc and a bar across it."""
    rng = np.random.default_rng(seed)
    im = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(im)
    base = rng.integers(60, 200, 3)
    for r in range(size // 3, 0, -4):  # a radial shade, darker to the rim
        tone = tuple(int(c) for c in np.clip(base + (size // 3 - r) * 0.6, 0, 255))
        draw.ellipse((size / 2 - r, size / 2 - r, size / 2 + r, size / 2 + r), fill=(*tone, 255))
    bar = tuple(int(c) for c in rng.integers(0, 120, 3))
    draw.rectangle((size * 0.2, size * 0.45, size * 0.8, size * 0.55), fill=(*bar, 255))
    return im


def _on(rgba: Image.Image, tone: int) -> Image.Image:
    canvas = Image.new("RGB", rgba.size, (tone, tone, tone))
    canvas.paste(rgba, mask=rgba.getchannel("A"))
    return canvas


def test_a_flat_backdrop_is_found_round_a_cut_out_and_turned_to_the_other_tone():
    icon = _icon()
    for tone in (0, 255):
        shown = _on(icon, tone)
        found = backdrop.backdrop(shown)
        assert found is not None and found[0] == tone
        outside = np.asarray(icon.getchannel("A")) == 0
        assert (found[1] == outside).mean() > 0.99  # the backdrop is what the icon does not cover
        other = np.asarray(backdrop.swapped(shown))
        assert (other[outside] == 255 - tone).all()
        assert np.array_equal(other[~outside], np.asarray(shown)[~outside])


def test_pictures_without_a_flat_backdrop_have_none():
    photo = make_photo(3, (320, 240))
    assert backdrop.backdrop(photo) is None and backdrop.swapped(photo) is None
    boxed = Image.new("RGB", (320, 320), "black")  # letterboxed: bars above and below only
    boxed.paste(photo, (0, 40))
    assert backdrop.backdrop(boxed) is None
    assert backdrop.backdrop(Image.new("RGB", (320, 240), "white")) is None  # blank: nothing on it
    framed = Image.new("RGB", (324, 244), "white")  # a thin frame: too little of the picture
    framed.paste(photo, (2, 2))
    assert backdrop.backdrop(framed) is None


def test_an_opaque_query_gets_its_backdrop_swapped_and_a_transparent_one_the_other_background():
    icon = _icon(1)
    shown = _on(icon, 0)
    buf = _jpeg(shown)
    decoded = decode(buf, SIZE, second_looks=True)
    assert decoded.backdrop is not None
    views, colour = decoded.backdrop
    assert views.shape == decoded.pixels.shape and colour != decoded.colour
    assert decode(buf, SIZE).backdrop is None  # an indexed file is embedded as it is
    on_white = decode(_png(icon), SIZE, second_looks=True)  # transparent: flatten chose white
    views, colour = on_white.backdrop
    assert colour.endswith(b"B") and views.mean() < on_white.pixels.mean()  # ... the look is on black
    white_shape = Image.new("RGBA", (300, 300), (0, 0, 0, 0))
    ImageDraw.Draw(white_shape).ellipse((50, 50, 250, 250), fill=(255, 255, 255, 255))
    assert decode(_png(white_shape), SIZE, second_looks=True).backdrop is None  # blank on white


def _jpeg(im: Image.Image) -> bytes:
    import io

    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _png(im: Image.Image) -> bytes:
    import io

    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


@needs_shared(SHARED_SAVED_MODEL, SHARED_PHOTOS / "imagenet-sample")
def test_an_icon_indexed_on_white_is_found_from_its_copy_on_black(tmp_path):
    """Transparent icons are indexed on white; a screenshot of one on a dark desktop (or a
    JPEG export that dropped the alpha over black) finds it first, at a far higher score
    than as it is."""
    icons = [_icon(seed) for seed in range(4)]
    _the_look_finds(tmp_path, "backdrop", icons, [(_on(icon, 0), "jpg") for icon in icons])


def _the_look_finds(
    tmp_path, look: str, sources: list[Image.Image], copies: list[tuple[Image.Image, str]]
) -> None:
    """Index ``sources`` (PNG) among 40 shared photos and search for ``copies`` (picture,
    suffix): each finds its source first, at a score higher by 0.1 than without the second
    ``look`` (a field of QueryTraits), which each query has."""
    from lookalike import Index, IndexOptions
    from lookalike.search.neighbours import search_vectors

    folder = tmp_path / "library"
    folder.mkdir()
    for n, photo in enumerate(sorted((SHARED_PHOTOS / "imagenet-sample").iterdir())[:40]):
        Image.open(photo).convert("RGB").save(folder / f"{n}.jpg", quality=90)
    paths = [folder / f"source{n}.png" for n in range(len(sources))]
    for source, path in zip(sources, paths, strict=True):
        source.save(path)
    queries = [tmp_path / f"copy{n}.{suffix}" for n, (_, suffix) in enumerate(copies)]
    for (copy, _), query in zip(copies, queries, strict=True):
        copy.save(query, **({"quality": 90} if query.suffix == ".jpg" else {}))
    index = Index(tmp_path / "ix")
    index.add([folder], model=str(SHARED_SAVED_MODEL), options=IndexOptions(workers=0))
    results = index.search(queries, k=5)
    traits: list = []
    vectors, _ = index.query_vectors(queries, traits=traits, second_looks=True)
    assert all(getattr(t, look) is not None for t in traits)
    with index.store() as store:
        plain = search_vectors(store, vectors, 5, traits=[replace(t, **{look: None}) for t in traits])
    for path, result, before in zip(paths, results, plain, strict=True):
        assert result.hits[0].path == str(path)
        (was,) = [h.score for h in before if h.path == str(path)] or [-1.0]
        assert result.hits[0].score > was + 0.1


def _padded(im: Image.Image, side: int | None = None) -> Image.Image:
    """``im`` centred on a square canvas: black bars, or transparent ones for an RGBA picture."""
    side = side or max(im.size)
    fill = (0, 0, 0, 0) if im.mode == "RGBA" else (0, 0, 0)
    canvas = Image.new(im.mode, (side, side), fill)
    canvas.paste(im, ((side - im.width) // 2, (side - im.height) // 2))
    return canvas


def test_what_lies_inside_flat_margins_is_cut_out():
    photo = make_photo(3, (180, 400))
    inner = backdrop.inside_margins(_padded(photo))
    assert inner is not None and abs(inner.width - 180) <= 2 and inner.height == 400
    white = Image.new("RGB", (600, 400), "white")
    white.paste(photo.resize((300, 200)), (150, 100))  # a picture on a white page
    inner = backdrop.inside_margins(white)
    assert inner is not None and abs(inner.width - 300) <= 2 and abs(inner.height - 200) <= 2
    assert backdrop.inside_margins(make_photo(4, (400, 300))) is None  # no margins
    thin = Image.new("RGB", (400, 320))
    thin.paste(make_photo(5, (400, 300)), (0, 10))  # bars of 3% of the height each
    assert backdrop.inside_margins(thin) is None
    assert backdrop.inside_margins(Image.new("RGB", (300, 200), "black")) is None  # blank
    decoded = decode(_png(_padded(photo)), SIZE, second_looks=True)
    assert decoded.inside is not None and decoded.inside[0].shape == decoded.pixels.shape
    assert decode(_png(_padded(photo)), SIZE).inside is None  # an indexed file is embedded as it is


@needs_shared(SHARED_SAVED_MODEL, SHARED_PHOTOS / "imagenet-sample")
def test_a_tall_picture_padded_to_a_square_is_found_from_what_lies_inside_its_margins(tmp_path):
    """A tall picture letterboxed to a square (black bars), or a tall cut-out padded with
    transparency, is a thin stroke to the model where its source filled the frame: each
    finds its source first, at a higher score than as it is."""
    tall = []
    for n, photo in enumerate(sorted((SHARED_PHOTOS / "imagenet-sample").iterdir())[40:43]):
        strip = Image.open(photo).convert("RGB").resize((500, 375)).crop((175, 0, 285, 375))
        if n == 2:  # a cut-out: transparent round its shape
            mask = Image.new("L", strip.size, 0)
            ImageDraw.Draw(mask).ellipse((0, 0, *strip.size), fill=255)
            strip = strip.convert("RGBA")
            strip.putalpha(mask)
        tall.append(strip)
    _the_look_finds(tmp_path, "inside", tall, [(_padded(strip), "png") for strip in tall])


@needs_shared(SHARED_SAVED_MODEL, SHARED_PHOTOS / "imagenet-sample")
def test_a_grey_cut_out_lightened_onto_black_still_finds_its_source_on_white(tmp_path):
    """A grey cut-out is indexed on white; a brightened copy of it is light enough to be
    shown on black (white content would vanish on white), so it is also searched for on
    white: it finds its source first, at a higher score than on black alone."""
    from lookalike.images import flatten

    cuts, lightened = [], []
    for photo in sorted((SHARED_PHOTOS / "imagenet-sample").iterdir())[40:43]:
        grey = np.asarray(Image.open(photo).convert("L").resize((300, 300)), np.float32)
        mask = Image.new("L", (300, 300), 0)
        ImageDraw.Draw(mask).ellipse((20, 20, 280, 280), fill=255)
        for out, tone in (
            (cuts, 120 + grey * 0.5),
            (lightened, 170 + (120 + grey * 0.5) * 0.33),
        ):  # mid grey; brightened
            cut = Image.fromarray(tone.astype(np.uint8)).convert("RGBA")
            cut.putalpha(mask)
            out.append(cut)
        assert flatten(cuts[-1])[1] == (255, 255, 255) and flatten(lightened[-1])[1] == (0, 0, 0)
    _the_look_finds(tmp_path, "backdrop", cuts, [(cut, "png") for cut in lightened])
