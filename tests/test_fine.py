"""Screenshots with other words in them are no copies (lookalike.search.fine): their 64-px
grids match and so do their features; `dupes` reads their files to tell them apart."""

from __future__ import annotations

import collections
import io
import json
import os

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps
from typer.testing import CliRunner

from lookalike import Index
from lookalike.cli import app
from lookalike.images import ImageFile, read_image_file
from lookalike.models.runtimes import ModelInfo
from lookalike.search import fine
from lookalike.search.relations import COPY, SIMILAR
from lookalike.storage import Store
from tests.conftest import SHARED_PHOTOS, needs_shared

LINES = ["Brightness: 70%", "Resolution: 1920 x 1080", "Night light: off", "Scale: 100%", "Orientation: wide"]


def _dialog(title: str = "Display", lines: list[str] = LINES) -> Image.Image:
    """A settings window: a dark title bar, a side menu, a title and five lines of text."""
    font, big = ImageFont.load_default(18), ImageFont.load_default(28)
    im = Image.new("RGB", (1280, 800), (245, 246, 248))
    d = ImageDraw.Draw(im)
    d.rectangle([0, 0, 1280, 48], fill=(40, 44, 52))
    d.text((16, 12), "Settings - Example App", font=font, fill="white")
    d.rectangle([0, 48, 240, 800], fill=(225, 228, 232))
    for i, entry in enumerate(["General", "Display", "Sound", "Network", "Privacy"]):
        d.text((20, 70 + 40 * i), entry, font=font, fill=(30, 30, 30))
    d.text((280, 70), title, font=big, fill=(20, 20, 20))
    for i, line in enumerate(lines):
        d.text((280, 130 + 34 * i), line, font=font, fill=(50, 50, 50))
    d.rounded_rectangle([1080, 720, 1250, 770], 8, fill=(30, 110, 230))
    d.text((1130, 733), "Apply", font=font, fill="white")
    return im


def _other_line() -> Image.Image:
    return _dialog(lines=[*LINES[:2], "Night light: on, from 21:00 to 07:00", *LINES[3:]])


def _other_page() -> Image.Image:
    return _dialog("Sound", ["Output: speakers", "Volume: 55%", "Input: mic", "Alerts: on", "Mono: off"])


def _jpeg(im: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _captioned(im: Image.Image) -> Image.Image:
    out = im.copy()
    d = ImageDraw.Draw(out)
    for top in (0.05, 0.48, 0.91):
        y = int(top * im.height)
        d.rectangle([0, y, im.width, y + int(0.04 * im.height)], fill="white")
        d.text((20, y + 4), "my caption", font=ImageFont.load_default(20), fill="black")
    return out


def _luma(im: Image.Image, side: int = 384) -> np.ndarray:
    small = im.convert("L")
    small.thumbnail((side, side), Image.Resampling.BOX)
    return np.asarray(small, np.float32)


def _worst(a: Image.Image, b: Image.Image) -> float | None:
    return fine.worst_window(_luma(a), _luma(b))


def test_other_words_differ_in_one_place_copies_do_not():
    shot = _dialog()
    for edit in (
        _jpeg(shot, 50),
        _jpeg(shot, 15),
        shot.resize((640, 400), Image.Resampling.LANCZOS),
        shot.resize((200, 125), Image.Resampling.LANCZOS),  # a thumbnail: too small to read, a copy
        ImageOps.mirror(shot),
        ImageOps.grayscale(shot).convert("RGB"),
        ImageOps.autocontrast(shot, cutoff=2),
        _captioned(shot),
    ):
        worst = _worst(shot, edit)
        assert worst is None or worst < fine.DIFFERS  # None: no verdict (their frames differ), a copy
    assert _worst(shot, _other_line()) >= fine.DIFFERS
    assert _worst(shot, _other_page()) >= fine.DIFFERS
    assert _worst(_jpeg(shot, 70), _jpeg(_other_page(), 70)) >= fine.DIFFERS
    crop = shot.crop((64, 40, 1216, 760)).resize((1280, 800))  # another frame: no verdict
    assert _worst(shot, crop) is None
    assert fine.same_shape((1280, 800), (640, 400)) and not fine.same_shape((1280, 800), (1280, 720))
    assert not fine.same_shape((1280, 800), (None, None))


@pytest.fixture
def screenshots(tmp_path):
    """An index of a settings window, its JPEG copy, the window with one line changed and
    another page of it, all scoring as copies by their vectors (a test model's)."""
    folder = tmp_path / "shots"
    folder.mkdir()
    pictures = {
        "display.png": _dialog(),
        "display-copy.jpg": _dialog(),
        "display-night.png": _other_line(),
        "sound.png": _other_page(),
    }
    files, vectors = [], []
    base = np.zeros(8, np.float32)
    base[0] = 1.0
    for n, (name, im) in enumerate(pictures.items()):
        im.save(folder / name, quality=80)
        read = read_image_file(str(folder / name), (32, 32))
        files.append(ImageFile(read.path, read.size, read.mtime_ns, read.content_hash, image=read.image))
        v = base.copy()
        v[1] = 0.01 * n  # cosines 0.9995 and up: copies by their vectors
        vectors.append(v / np.linalg.norm(v))
    info = ModelInfo("m", "id", (32, 32), 8, (0.0, 1.0), False, "tf")
    with Store(tmp_path / "ix", model=info, writable=True) as s:
        s.add(files, np.stack(vectors))
    return folder, tmp_path / "ix"


def test_dupes_does_not_call_other_screenshots_copies(screenshots):
    folder, index = screenshots
    groups = Index(index).duplicates(0.90)
    assert [(g.keep.path, [(d.row.path, d.relation) for d in g.duplicates]) for g in groups] == [
        (str(folder / "display.png"), [(str(folder / "display-copy.jpg"), COPY)])
    ]
    for preset in ("copies", "edited"):
        res = CliRunner().invoke(app, ["dupes", "--preset", preset, "--json", "--index", str(index)])
        (doc,) = json.loads(res.stdout)["groups"]
        assert [d["path"] for d in doc["duplicates"]] == [str(folder / "display-copy.jpg")], preset
    res = CliRunner().invoke(app, ["dupes", "--preset", "similar", "--json", "--index", str(index)])
    (doc,) = json.loads(res.stdout)["groups"]
    relations = {d["path"].rsplit("/", 1)[1]: d["relation"] for d in doc["duplicates"]}
    assert relations == {"display-copy.jpg": COPY, "display-night.png": SIMILAR, "sound.png": SIMILAR}


# photos whose copy made brighter (x1.3, clipping its highlights) and flatter (contrast x0.7,
# bench/lookalikes.py's bright_contrast edit) read as differing in one place (40-48 levels)
CLIPPED = ["n01582220_magpie", "n01622779_great_grey_owl", "n01847000_drake", "n01968897_chambered_nautilus"]
CLIPPED += [
    "n02074367_dugong",
    "n02077923_sea_lion",
    "n02087394_Rhodesian_ridgeback",
    "n02114367_timber_wolf",
]


@needs_shared(SHARED_PHOTOS / "imagenet-sample")
def test_a_copy_whose_highlights_were_clipped_is_no_other_picture():
    """A brightness and contrast fitted by a gain cannot clip: the copy's lost highlights
    read as a difference in one place, and search held three such copies of the benchmark's
    designs (and their originals) under `similar`. A rising tone curve is fitted too."""
    for name in CLIPPED:
        photo = Image.open(SHARED_PHOTOS / "imagenet-sample" / f"{name}.JPEG").convert("RGB")
        boosted = ImageEnhance.Contrast(ImageEnhance.Brightness(photo).enhance(1.3)).enhance(0.7)
        for a, b in ((photo, boosted), (boosted, photo)):
            worst = fine.worst_window(_luma(a), _luma(b))
            assert worst is None or worst < fine.DIFFERS, name
    for other in (_other_line(), _other_page()):  # other words still differ
        assert fine.worst_window(_luma(_dialog()), _luma(other)) >= fine.DIFFERS


def test_the_verdict_does_not_depend_on_which_picture_comes_first():
    """Each picture's brightness and contrast was fitted to the first's only: a faded copy
    with some noise matched one way and not the other, so whether a watermarked copy was
    split from its original depended on which file name sorted first."""
    a = _luma(_dialog())
    faded = (0.5 * a + 64 + np.random.default_rng(0).normal(0, 1.5, a.shape)).astype(np.float32)
    assert fine.worst_window(a, faded) == fine.worst_window(faded, a)
    other = _luma(_other_page())
    assert fine.worst_window(a, other) == fine.worst_window(other, a) >= fine.DIFFERS


def test_two_small_pictures_of_one_size_in_pixels_and_other_shapes_are_compared():
    """302 x 150 and 300 x 151: within 2% of one aspect, as many pixels, neither reduced (a
    picture under 384 px is read as it is): `dupes` crashed ("operands could not be
    broadcast together")."""
    shot = _dialog()
    a, b = _luma(shot.resize((302, 150))), _luma(shot.resize((300, 151)))
    assert a.size == b.size and a.shape != b.shape
    worst = fine.worst_window(a, b)
    assert worst is None or worst < fine.DIFFERS


def test_a_member_set_apart_from_a_captioned_centre_is_still_grouped_with_the_one_kept(tmp_path, monkeypatch):
    """A group's centre is the member most alike to the others, often an edited copy. On a
    fresh benchmark family the centre was a captioned copy, which the files set apart from
    the mirror copy: the mirror copy was left out of the group, though it is a copy of the
    original that the group keeps. Such a member now gets a second look against the one kept."""
    folder = tmp_path / "shots"
    folder.mkdir()
    shot = _dialog()
    pictures = {"original.png": shot, "captioned.jpg": _captioned(shot), "mirror.jpg": ImageOps.mirror(shot)}
    base = np.zeros(8, np.float32)
    base[0] = 1.0
    lean = {"original.png": 0.05, "captioned.jpg": 0.0, "mirror.jpg": -0.05}  # the captioned copy between
    files, vectors = [], []
    for name, im in pictures.items():
        im.save(folder / name, quality=90)
        read = read_image_file(str(folder / name), (32, 32))
        files.append(ImageFile(read.path, read.size, read.mtime_ns, read.content_hash, image=read.image))
        v = base.copy()
        v[1] = lean[name]
        vectors.append(v / np.linalg.norm(v))
    info = ModelInfo("m", "id", (32, 32), 8, (0.0, 1.0), False, "tf")
    with Store(tmp_path / "ix", model=info, writable=True) as s:
        s.add(files, np.stack(vectors))
    apart = {str(folder / "captioned.jpg"), str(folder / "mirror.jpg")}
    monkeypatch.setattr(fine.Looker, "differ", lambda self, pairs: [set(p) == apart for p in pairs])
    (group,) = Index(tmp_path / "ix").duplicates(0.90)
    assert group.keep.path == str(folder / "original.png")
    assert sorted(d.row.path for d in group.duplicates) == sorted(apart)


def test_search_does_not_call_another_screenshot_a_copy(tmp_path, tf2_model):
    """`dupes` held screenshots with other words at `similar`, but search labelled the
    other settings page a `copy` (P 0.93 on a calibrated index). Search now looks at its
    copies as `dupes` does, for a query given by path or as bytes (as the server gets it)."""
    from lookalike import IndexOptions
    from lookalike.search.presets import held_score

    folder, queries = tmp_path / "shots", tmp_path / "queries"
    folder.mkdir()
    queries.mkdir()
    _dialog().save(folder / "display.png")
    _other_page().save(folder / "sound.png")
    _dialog().convert("L").rotate(90, expand=True).convert("RGB").save(folder / "turned.png")  # not a copy
    index = Index(tmp_path / "ix")
    index.add([folder], model=str(tf2_model), options=IndexOptions(workers=0))
    _other_line().save(queries / "night.png")
    _dialog().save(queries / "display.jpg", quality=70)
    held = held_score(index.manifest())
    for query in (queries / "night.png", (queries / "night.png").read_bytes()):
        (result,) = index.search([query], k=5)
        relations = {h.path.rsplit("/", 1)[1]: (h.relation, h.score) for h in result.hits}
        assert relations["display.png"] == relations["sound.png"] == (SIMILAR, held)
        assert [h.score for h in result.hits] == sorted((h.score for h in result.hits), reverse=True)
    (result,) = index.search([queries / "display.jpg"], k=5)
    relations = {h.path.rsplit("/", 1)[1]: h.relation for h in result.hits}
    assert relations["display.png"] == COPY and relations["sound.png"] == SIMILAR


def test_an_index_keeps_the_files_a_search_read_for_the_next_search(tmp_path, tf2_model, monkeypatch):
    """The server searches once per upload. The hits' files read for a finer look are kept
    by the long-lived Index: read once for three searches, and again once changed."""
    from lookalike import IndexOptions

    folder = tmp_path / "shots"
    folder.mkdir()
    _dialog().save(folder / "display.png")
    _other_page().save(folder / "sound.png")
    index = Index(tmp_path / "ix")
    index.add([folder], model=str(tf2_model), options=IndexOptions(workers=0))
    buf = io.BytesIO()
    _other_line().save(buf, "PNG")
    reads: collections.Counter[str] = collections.Counter()
    real = fine.luma

    def counted(source):
        if isinstance(source, str):
            reads[os.path.basename(source)] += 1
        return real(source)

    monkeypatch.setattr(fine, "luma", counted)
    for _ in range(3):
        (result,) = index.search([buf.getvalue()], k=5)
        assert {h.relation for h in result.hits} == {SIMILAR}
    assert reads == {"display.png": 1, "sound.png": 1}
    st = os.stat(folder / "sound.png")
    os.utime(folder / "sound.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    index.search([buf.getvalue()], k=5)
    assert reads == {"display.png": 1, "sound.png": 2}


def test_dupes_against_another_index_does_not_call_another_screenshot_a_copy(tmp_path, tf2_model):
    """`dupes --against` found the dialog with another line in an inbox to be "already in"
    the archive; it now looks at such pairs as `dupes` does. The JPEG copy is still found."""
    from lookalike import IndexOptions

    archive, inbox = tmp_path / "archive", tmp_path / "inbox"
    archive.mkdir()
    inbox.mkdir()
    _dialog().save(archive / "display.png")
    _other_line().save(inbox / "night.png")
    _dialog().save(inbox / "display.jpg", quality=70)
    for folder in (archive, inbox):
        Index(tmp_path / f"{folder.name}_ix").add(
            [folder], model=str(tf2_model), options=IndexOptions(workers=0)
        )
    args = [
        "dupes",
        "--against",
        str(tmp_path / "archive_ix"),
        "--json",
        "--index",
        str(tmp_path / "inbox_ix"),
    ]
    for preset in ("copies", "edited"):
        res = CliRunner().invoke(app, [*args, "--preset", preset])
        (doc,) = json.loads(res.stdout)["groups"]
        assert doc["keep"] == str(archive / "display.png")
        assert [(d["path"], d["relation"]) for d in doc["duplicates"]] == [(str(inbox / "display.jpg"), COPY)]
    res = CliRunner().invoke(app, [*args, "--preset", "similar"])
    (doc,) = json.loads(res.stdout)["groups"]
    relations = {d["path"].rsplit("/", 1)[1]: d["relation"] for d in doc["duplicates"]}
    assert relations == {"display.jpg": COPY, "night.png": SIMILAR}
