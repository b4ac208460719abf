"""Relations: exact, copy, recoloured, similar; the copies preset leaves recolourings out."""

from __future__ import annotations

import io
import json

import numpy as np
from PIL import Image, ImageDraw, ImageOps
from typer.testing import CliRunner

from lookalike import Index, colour
from lookalike.cli import app
from lookalike.images import DecodedImage, ImageFile, decode
from lookalike.models.runtimes import ModelInfo
from lookalike.search.relations import COPY, EXACT, RECOLOURED, SIMILAR, relation
from lookalike.storage import Store
from tests.conftest import make_photo

DIM = 16
CUTOFFS = (0.90, 0.75)


def _signature(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=90)
    return decode(buf.getvalue(), (64, 64)).colour


def _design(seed: int, theme: tuple[str, str] = ("#001a4d", "#8cc8ff")) -> Image.Image:
    """A wallpaper-like design in one colour scheme (dark and light end of ``theme``)."""
    return ImageOps.colorize(ImageOps.grayscale(make_photo(seed, (320, 240))), *theme)


def _recoloured(seed: int) -> Image.Image:
    """The same design in a red scheme."""
    return _design(seed, ("#4d0a00", "#ffb08c"))


def test_two_dark_designs_that_differ_in_tint_are_recolourings_and_their_copies_are_not():
    """Dark wallpapers of one design tinted slate blue and olive (mean chroma ~10-14, once
    "too faint for hues to count") are recolourings; JPEG q15 and cropped copies of each
    are copies of it."""
    slate, olive = _design(4, ("#121318", "#3c404c")), _design(4, ("#131410", "#45473c"))
    a, b = _signature(slate), _signature(olive)
    for sig in (a, b):
        assert colour.GRAY_CHROMA < colour.colourfulness(sig) < colour.FAINT_CHROMA
    assert relation(0.95, CUTOFFS, False, a, b) == RECOLOURED
    for im in (slate, olive):
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=15)
        for copy in (Image.open(buf), im.crop((32, 24, 288, 216))):
            assert relation(0.95, CUTOFFS, False, _signature(im), _signature(copy)) == COPY


def _unit(v) -> np.ndarray:
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def _near(base: np.ndarray, cos: float, seed: int) -> np.ndarray:
    r = np.random.default_rng(seed).normal(size=base.shape).astype(np.float32)
    r = _unit(r - r.dot(base) * base)
    return _unit(cos * base + np.sqrt(1 - cos**2) * r)


def test_relation_policy():
    photo = _design(3)
    original, copy = _signature(photo), _signature(photo.resize((160, 120)))
    assert relation(0.99, CUTOFFS, True, original, copy) == EXACT
    assert relation(0.95, CUTOFFS, False, original, copy) == COPY
    assert relation(0.95, CUTOFFS, False, original, _signature(ImageOps.grayscale(photo))) == COPY
    assert relation(0.95, CUTOFFS, False, original, _signature(_recoloured(3))) == RECOLOURED
    assert relation(0.95, CUTOFFS, False, original, _signature(ImageOps.invert(photo))) == RECOLOURED
    assert relation(0.80, CUTOFFS, False, original, copy) == SIMILAR
    assert relation(0.50, CUTOFFS, False, original, _signature(_recoloured(3))) == SIMILAR
    assert relation(0.95, CUTOFFS, False, None, copy) == COPY  # rows indexed before signatures


def test_copies_preset_leaves_a_recoloured_design_out(tmp_path):
    photo = _design(7)
    files, vectors = [], []
    base = _unit(np.eye(DIM)[0])
    members = [("design.jpg", photo, 1.0), ("design-small.jpg", photo.resize((160, 120)), 0.95),
               ("design-red.jpg", _recoloured(7), 0.96)]  # fmt: skip
    for n, (name, im, cos) in enumerate(members):
        img = DecodedImage(np.zeros((2, 2, 3), np.uint8), im.width, im.height, "JPEG", colour=_signature(im))
        files.append(ImageFile(f"/d/{name}", 1000 - n, 1, f"hash-{n}", image=img))
        vectors.append(base if cos == 1.0 else _near(base, cos, n))
    info = ModelInfo("m", "id", (2, 2), DIM, (0.0, 1.0), False, "tf")
    with Store(tmp_path / "ix", model=info, writable=True) as s:
        s.add(files, np.stack(vectors))
    (group,) = Index(tmp_path / "ix").duplicates(0.90)
    assert [(d.row.path, d.relation) for d in group.duplicates] == [("/d/design-small.jpg", COPY)]
    res = CliRunner().invoke(app, ["dupes", "--preset", "similar", "--json", "--index", str(tmp_path / "ix")])
    (doc,) = json.loads(res.stdout)["groups"]
    assert {d["path"]: d["relation"] for d in doc["duplicates"]} == {
        "/d/design-small.jpg": COPY,
        "/d/design-red.jpg": RECOLOURED,
    }


def test_a_dark_and_a_light_version_are_not_copies():
    light = _design(9, ("#7a7a7a", "#ffffff"))  # one wallpaper, light and dark themed
    dark = _design(9, ("#000000", "#6e6e6e"))
    assert relation(0.95, CUTOFFS, False, _signature(light), _signature(dark)) == RECOLOURED
    brighter = ImageOps.autocontrast(light)  # a brightness/contrast edit stays a copy
    assert relation(0.95, CUTOFFS, False, _signature(light), _signature(brighter)) == COPY


def _png_signature(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return decode(buf.getvalue(), (64, 64)).colour


def test_a_transparent_designs_light_and_dark_versions_are_not_copies_though_they_show_alike():
    """A dark overlay (black stripes, nearly opaque) goes on white, a light one (white, faint)
    on black: flattened, both look dark, but they are one design's two versions. Copies kept
    transparent stay copies; an opaque copy (a screenshot, a JPEG) is no evidence either way."""
    stripes = np.zeros((90, 120), np.uint8)
    stripes[:, ::12] = stripes[:, 1::12] = stripes[:, 2::12] = 1
    dark = np.zeros((90, 120, 4), np.uint8)
    dark[..., 3] = np.where(stripes, 240, 200)  # black, nearly opaque
    light = np.full((90, 120, 4), 255, np.uint8)
    light[..., 3] = np.where(stripes, 40, 10)  # white, faint
    dark_im, light_im = Image.fromarray(dark, "RGBA"), Image.fromarray(light, "RGBA")
    shown = shown_dark, shown_light = _png_signature(dark_im), _png_signature(light_im)
    thumbs = [np.frombuffer(s[: colour.SIGNATURE_BYTES], np.uint8).astype(int) for s in shown]
    assert np.abs(thumbs[0] - thumbs[1]).mean() < 30  # as the indexer flattens them, they look alike
    assert relation(0.95, CUTOFFS, False, shown_dark, shown_light) == RECOLOURED
    smaller = _png_signature(dark_im.resize((60, 45)))  # a copy kept transparent
    assert relation(0.95, CUTOFFS, False, shown_dark, smaller) == COPY
    flat = Image.new("RGB", dark_im.size, "white")
    flat.paste(dark_im, mask=dark_im.getchannel("A"))
    assert relation(0.95, CUTOFFS, False, shown_dark, _signature(flat)) == COPY
    opaque = dark.copy()
    opaque[..., 3] = 255  # an RGBA picture nothing shows through is opaque
    assert colour.flattened_on(_png_signature(Image.fromarray(opaque, "RGBA"))) is None
    assert colour.flattened_on(shown_dark) == colour.ON_WHITE
    assert colour.flattened_on(shown_light) == colour.ON_BLACK


def _logo(fill: str) -> Image.Image:
    """A ring and a square in ``fill`` on white."""
    im = Image.new("RGB", (320, 240), "white")
    draw = ImageDraw.Draw(im)
    draw.ellipse((60, 30, 260, 210), outline=fill, width=28)
    draw.rectangle((140, 100, 180, 140), fill=fill)
    return im


def test_a_black_logo_is_not_the_gray_copy_of_a_red_one():
    """One side without colour is no evidence by hue (a gray copy has none); its luma is: a
    gray copy keeps its original's, a black version of a red logo does not."""

    red = _logo("#a80030")
    assert relation(0.95, CUTOFFS, False, _signature(red), _signature(ImageOps.grayscale(red))) == COPY
    assert relation(0.95, CUTOFFS, False, _signature(red), _signature(_logo("black"))) == RECOLOURED
    assert relation(0.95, CUTOFFS, False, _signature(_logo("black")), _signature(red)) == RECOLOURED
    small_gray = ImageOps.grayscale(red).resize((160, 120))
    assert relation(0.95, CUTOFFS, False, _signature(small_gray), _signature(red)) == COPY
    for photo in (red, _design(3), _design(11)):  # tone is read where the two line up: as a crop
        cropped, gray = _signature(photo.crop((32, 24, 288, 216))), _signature(ImageOps.grayscale(photo))
        assert relation(0.95, CUTOFFS, False, cropped, gray) == COPY


def test_a_group_holds_one_colour_scheme_though_a_gray_copy_matches_both():
    """The red logo's gray copy matches the black logo after a contrast change (two gray
    pictures: no colour evidence): the group around it keeps the red logo's scheme."""
    from lookalike.search.schemes import one_scheme as _one_scheme
    from lookalike.storage.catalogue import FileRow

    red = _logo("#a80030")
    pictures = {
        "red-gray": ImageOps.grayscale(red),
        "red": red,
        "red-small": red.resize((160, 120)),
        "black": _logo("black"),
        "black-small": _logo("black").resize((160, 120)),
    }
    star = [
        FileRow(n, f"/{name}.jpg", 1, 0, None, 320, 240, "JPEG", None, colour=_signature(im))
        for n, (name, im) in enumerate(pictures.items())
    ]
    assert [row.path for row in _one_scheme(star)] == ["/red-gray.jpg", "/red.jpg", "/red-small.jpg"]
    assert _one_scheme([star[0], star[3], star[4]]) == [star[0], star[3], star[4]]  # gray all: no evidence


def test_a_group_keeps_its_centres_colour_scheme():
    """A red logo's star that reaches a more colourful green version: the group holds the
    red scheme it was formed around (the centre is never left out of its own group)."""
    from lookalike.search.schemes import one_scheme as _one_scheme
    from lookalike.storage.catalogue import FileRow

    red, green = _logo("#a80030"), _logo("#00e040")
    pictures = {
        "red": red,
        "red-small": red.resize((160, 120)),
        "green": green,
        "green-small": green.resize((160, 120)),
    }
    star = [
        FileRow(n, f"/{name}.jpg", 1, 0, None, 320, 240, "JPEG", None, colour=_signature(im))
        for n, (name, im) in enumerate(pictures.items())
    ]
    assert colour.colourfulness(star[2].colour) > colour.colourfulness(star[0].colour)
    assert [row.path for row in _one_scheme(star)] == ["/red.jpg", "/red-small.jpg"]


def _hue_shifted(im: Image.Image, shift: int) -> Image.Image:
    """``im`` with its hues turned by ``shift`` / 256 of a circle: another colour scheme
    whose luma differs a little (as warm and cold versions of a wallpaper do)."""
    h, s, v = im.convert("HSV").split()
    return Image.merge("HSV", (h.point(lambda x: (x + shift) % 256), s, v)).convert("RGB")


def test_a_gray_copy_goes_with_the_scheme_whose_luma_it_repeats():
    """Two schemes of one design whose gray versions differ by a few luma levels: either
    scheme passes the gray copy of the other as its own (a gray copy's luma is only checked
    within a tolerance), so the group of whichever is formed first took it. With the
    component at hand, the gray copy goes with the scheme it was made from."""
    from lookalike.search.relations import luma_error, recoloured
    from lookalike.search.schemes import one_scheme
    from lookalike.storage.catalogue import FileRow

    warm = _design(3, ("#4d2600", "#ffc08c"))
    cold = _hue_shifted(warm, 85)
    pictures = {
        "cold": cold,
        "cold-small": cold.resize((160, 120)),
        "warm-gray": ImageOps.grayscale(warm),
        "cold-gray": ImageOps.grayscale(cold.resize((200, 150))),
        "warm": warm,
        "warm-small": warm.resize((160, 120)),
    }
    rows = {
        name: FileRow(n, f"/{name}.jpg", 1, 0, None, 320, 240, "JPEG", None, colour=_signature(im))
        for n, (name, im) in enumerate(pictures.items())
    }
    sig = {name: row.colour for name, row in rows.items()}
    assert recoloured(sig["cold"], sig["warm"])
    assert not recoloured(sig["cold"], sig["warm-gray"])  # within the gray tolerance: colours cannot tell
    assert luma_error(sig["cold"], sig["warm-gray"]) > 5 > luma_error(sig["warm"], sig["warm-gray"]) + 3

    def flat(members, one):
        return np.zeros(len(members), np.float32)

    component = list(rows.values())
    star = [rows[n] for n in ("cold", "cold-small", "warm-gray", "cold-gray")]
    assert one_scheme(star) == star  # the star alone: nothing tells
    assert [m.path for m in one_scheme(star, component, flat)] == [
        "/cold.jpg",
        "/cold-small.jpg",
        "/cold-gray.jpg",
    ]
    # a gray centre is grouped with the scheme its luma repeats, not the most colourful one
    gray_centre = [rows[n] for n in ("warm-gray", "cold", "cold-small", "warm", "warm-small")]
    assert colour.colourfulness(sig["cold"]) > colour.colourfulness(sig["warm"])
    assert [m.path for m in one_scheme(gray_centre)] == ["/warm-gray.jpg", "/cold.jpg", "/cold-small.jpg"]
    assert [m.path for m in one_scheme(gray_centre, component, flat)] == [
        "/warm-gray.jpg",
        "/warm.jpg",
        "/warm-small.jpg",
    ]


def test_a_gray_copy_that_lines_up_with_no_member_of_its_scheme_stays():
    """A gray captioned copy lines up (by luma) with none of its scheme's members, but
    with the other scheme's captioned copy, by their shared bars: that is no evidence."""
    from lookalike.search.relations import luma_error
    from lookalike.search.schemes import one_scheme
    from lookalike.storage.catalogue import FileRow

    def captioned(im: Image.Image) -> Image.Image:
        im = im.copy()
        draw = ImageDraw.Draw(im)
        for top in (0.15, 0.5, 0.8):
            draw.rectangle([0, int(top * im.height), im.width, int((top + 0.1) * im.height)], fill="white")
        return im

    warm = _design(3, ("#4d2600", "#ffc08c"))
    cold = _hue_shifted(warm, 85)
    pictures = {
        "warm": warm,
        "warm-small": warm.resize((160, 120)),
        "warm-captioned-gray": ImageOps.grayscale(captioned(warm)),
        "cold": cold,
        "cold-captioned": captioned(cold),
    }
    rows = [
        FileRow(n, f"/{name}.jpg", 1, 0, None, 320, 240, "JPEG", None, colour=_signature(im))
        for n, (name, im) in enumerate(pictures.items())
    ]
    assert luma_error(rows[0].colour, rows[2].colour) is None
    assert luma_error(rows[4].colour, rows[2].colour) is not None

    def flat(members, one):
        return np.zeros(len(members), np.float32)

    assert one_scheme(rows[:3], rows, flat) == rows[:3]


def test_other_schemes_are_looked_for_near_the_star_only(monkeypatch):
    """In a large component, only the members closest to the star's centre are scanned for
    another scheme (a bound on the work per star): one further away places nothing."""
    from lookalike.search import schemes
    from lookalike.storage.catalogue import FileRow

    warm = _design(3, ("#4d2600", "#ffc08c"))
    cold = _hue_shifted(warm, 85)
    pictures = {"cold": cold, "cold-small": cold.resize((160, 120)), "warm-gray": ImageOps.grayscale(warm)}
    pictures |= {"warm": warm, "unrelated": _design(11, ("#003300", "#ccffcc"))}
    rows = {
        name: FileRow(n, f"/{name}.jpg", 1, 0, None, 320, 240, "JPEG", None, colour=_signature(im))
        for n, (name, im) in enumerate(pictures.items())
    }
    star = [rows["cold"], rows["cold-small"], rows["warm-gray"]]
    monkeypatch.setattr(schemes, "RIVALS_SCANNED", 1)

    def closer(first: str):
        return lambda members, one: np.array([1.0 if m.path == f"/{first}.jpg" else 0.0 for m in members])

    component = list(rows.values())
    assert schemes.one_scheme(star, component, closer("warm")) == star[:2]
    assert schemes.one_scheme(star, component, closer("unrelated")) == star
