"""The detail residual: copies explain each other once their edit is undone, other shots
of one scene do not."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from lookalike import colour, detail
from lookalike.images import decode
from lookalike.search import metric
from lookalike.search.edits import crop_centre, letterbox

SIZE = (224, 224)


def _scene(seed: int = 7, size: tuple[int, int] = (960, 720)) -> Image.Image:
    """A textured 'scene': blobs of colour, shading and grain."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (18, 24, 3), dtype=np.uint8)
    im = Image.fromarray(blocks, "RGB").resize(size, Image.Resampling.BICUBIC)
    arr = np.asarray(im, np.float32) + np.linspace(-25, 25, size[0])[None, :, None]
    arr += rng.normal(0, 3, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _sig(im: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=quality)
    return decode(buf.getvalue(), SIZE).colour


def _walker(im: Image.Image, x: int, y: int) -> Image.Image:
    """The scene with a figure (a dark upright shape, 4% of the picture) at x, y."""
    out = im.copy()
    w, h = im.size
    ImageDraw.Draw(out).rounded_rectangle((x, y, x + w // 12, y + h // 3), radius=20, fill=(30, 25, 40))
    return out


def _ball(x: int, y: int) -> Image.Image:
    """The scene with a ball (0.4% of the picture) at x, y."""
    out = _scene()
    w, h = out.size
    ImageDraw.Draw(out).ellipse((x, y, x + w // 20, y + h // 12), fill=(30, 25, 40))
    return out


def _captioned(im: Image.Image) -> Image.Image:
    out = im.copy()
    w, h = im.size
    draw = ImageDraw.Draw(out)
    for top in (round(h * 0.05), round(h * 0.48), round(h * 0.91)):
        draw.rectangle((0, top, w, top + round(h * 0.04)), fill="white")
        draw.text((w // 30, top + 4), "shared with friends", fill="black")
    return out


def _residual(a: bytes, b: bytes, local: bool = False) -> float:
    return float(detail.residuals([colour.detail_grid(a)], [colour.detail_grid(b)], local)[0])


@pytest.fixture(scope="module")
def scene() -> Image.Image:
    return _walker(_scene(), 200, 300)


def test_grid_keeps_the_aspect_and_comes_after_the_colour_thumbnail(scene):
    buf = io.BytesIO()
    scene.save(buf, "JPEG", quality=90)
    decoded = decode(buf.getvalue(), SIZE)
    sig, grid = decoded.colour, colour.detail_grid(decoded.colour)
    assert sig == colour.signature(decoded.pixels) + grid  # the thumbnail as before, then the grid
    assert (grid[0], grid[1]) == (48, 64) and len(grid) == 2 + 48 * 64  # rows, columns of 960 x 720
    assert colour.detail_grid(sig[: colour.SIGNATURE_BYTES]) is None  # stored before the grid existed


def test_copies_explain_each_other_other_shots_do_not(scene):
    original = _sig(scene)
    w, h = scene.size
    copies = {
        "jpeg q20": _sig(scene, quality=20),
        "half size": _sig(scene.resize((w // 2, h // 2))),
        "crop 80%": _sig(crop_centre(scene, 0.8)),
        "crop 60%": _sig(crop_centre(scene, 0.6)),
        "mirror": _sig(ImageOps.mirror(scene)),
        "gray": _sig(ImageOps.grayscale(scene)),
        "brighter": _sig(ImageEnhance.Contrast(ImageEnhance.Brightness(scene).enhance(1.2)).enhance(1.2)),
        "caption": _sig(_captioned(scene)),
        "letterbox": _sig(letterbox(scene)),
        "rotated 8": _sig(scene.rotate(8, Image.Resampling.BICUBIC, expand=True)),
    }
    base = _scene()
    shots = {  # (a change of under ~6% of the picture stays below the 90th percentile: a copy)
        "the figure walked on": _sig(_walker(base, 560, 320)),
        "the camera moved": _sig(_walker(_scene(size=(1000, 750)), 200, 300).crop((30, 20, 990, 740))),
    }
    explained = {name: _residual(original, sig) for name, sig in copies.items()}
    left = {name: _residual(original, sig) for name, sig in shots.items()}
    assert max(explained.values()) < 2 * metric.DETAIL_FREE, explained  # ~0-8: JPEG, resampling, clipping
    assert min(left.values()) > 3 * metric.DETAIL_FREE, left
    assert sum(v < metric.DETAIL_FREE for v in explained.values()) >= 6  # most copies: no penalty at all
    # the other way round too: the copy as the indexed picture, the original as the query
    assert _residual(copies["crop 80%"], original) < 2 * metric.DETAIL_FREE
    assert _residual(shots["the figure walked on"], original) > 3 * metric.DETAIL_FREE


def test_a_small_thing_that_moved_is_another_shot_though_most_of_the_picture_matches():
    """A ball (0.4% of the picture) in two places: 99% of the cells match, so the 90th
    percentile calls it a copy; its worst patch does not."""

    one, other = _sig(_ball(200, 300)), _sig(_ball(600, 350))
    assert _residual(one, other, local=True) > 4 * metric.DETAIL_FREE
    assert _residual(one, _sig(_ball(200, 300).resize((480, 360))), local=True) < metric.DETAIL_FREE  # a copy
    assert _residual(one, other) < metric.DETAIL_FREE  # what search weighs


def test_the_residual_is_weighed_as_pixel_gap_only_when_both_grids_are_known(scene):
    original, shot = _sig(scene), _sig(_walker(_scene(), 560, 320))
    colour_only = float(colour.pixel_gaps(colour.lab([original]), colour.lab([shot]))[0])
    gap = float(metric.pixel_gaps([original], [shot])[0])
    excess = metric.DETAIL_WEIGHT * (_residual(original, shot) - metric.DETAIL_FREE)
    assert gap == pytest.approx(colour_only + excess, abs=1e-3)
    old = shot[: colour.SIGNATURE_BYTES]  # a signature stored before the grid existed
    assert float(metric.pixel_gaps([original], [old])[0]) == pytest.approx(colour_only, abs=1e-3)
    matrix = metric.gap_matrix([original, shot, old])
    assert matrix[0, 1] == pytest.approx(gap, abs=1e-3)
    assert matrix[0, 2] == pytest.approx(colour_only, abs=1e-3)


def test_a_matrix_measures_the_residual_among_its_first_members_only(scene, monkeypatch):
    original, shot = _sig(scene), _sig(_walker(_scene(), 560, 320))
    colour_only = float(colour.pixel_gaps(colour.lab([original]), colour.lab([shot]))[0])
    monkeypatch.setattr(metric, "DETAIL_AMONG", 2)
    matrix = metric.gap_matrix([original, shot, shot])
    assert matrix[0, 1] > colour_only + 10  # both among the first two
    assert matrix[0, 2] == pytest.approx(colour_only, abs=1e-3) == pytest.approx(matrix[2, 0], abs=1e-3)


def test_unreadable_or_missing_grids_are_no_evidence():
    assert detail.residuals([None, b"\x05\x05abc"], [b"\x01\x01x", b"\x01\x01x"]).tolist() == [0.0, 0.0]


def test_caption_bars_are_left_out_with_their_blurred_edge_rows():
    """On a wide picture a 4% bar covers one or two rows of the grid and blurs into the next:
    those edge rows are left out with the bar (they were ~8-9 without, a penalised residual)."""
    wide = _walker(_scene(3, (1600, 900)), 100, 100)
    assert _residual(_sig(wide), _sig(_captioned(wide))) < 1.0
    assert _residual(_sig(wide), _sig(_walker(_scene(3, (1600, 900)), 900, 400))) > 2 * metric.DETAIL_FREE


def test_a_picture_smaller_than_the_grid_is_kept_as_it_is():
    grid = detail.grid(Image.new("RGB", (3, 2), "gray"))
    assert (grid[0], grid[1]) == (2, 3) and len(grid) == 2 + 6
    assert detail.residuals([grid], [detail.grid(Image.new("RGB", (300, 200), "gray"))]).tolist() == [0.0]


def test_a_group_larger_than_the_matrix_detail_weighs_each_members_detail_against_its_centre(
    scene, monkeypatch
):
    """Beyond its first DETAIL_AMONG members a group's score matrix has the colour gap only:
    a member joins the centre's star only if it passes with its detail measured too."""
    from lookalike.search import duplicates
    from lookalike.search.keep import KeepRules
    from lookalike.storage.catalogue import FileRow

    w, h = scene.size
    pictures = [scene, scene.resize((w // 2, h // 2)), ImageOps.mirror(scene), _walker(_scene(), 560, 320)]
    sigs = [_sig(p) for p in pictures[:3]] + [_sig(pictures[3], quality=80)]
    members = [
        FileRow(n, f"/photos/{n}.jpg", 10_000 - n, 0, None, w - n, h, "JPEG", None, colour=sig)
        for n, sig in enumerate(sigs)
    ]
    vectors = np.full((len(members), 4), 0.5, np.float32)  # the features cannot tell them apart
    scores = duplicates._Scores(vectors, {m.id: m.id for m in members}, pixels=True)
    monkeypatch.setattr(metric, "DETAIL_AMONG", 2)  # the shot (last) is beyond the matrix's detail
    judge = duplicates._Judge((0.8, 0.5), False)
    groups = duplicates._star_groups(members, scores, 0.8, KeepRules(), None, judge)
    grouped = {g.keep.id for g in groups} | {d.row.id for g in groups for d in g.duplicates}
    assert grouped == {0, 1, 2}


def test_dupes_weighs_a_difference_in_one_place_search_does_not():
    """Two shots of a scene where only a ball moved: search ranks them as alike as copies
    (its calibration is fitted so); dupes, which deletes, scores them apart."""
    from lookalike.search.duplicates import _Scores
    from lookalike.search.neighbours import weigh_pixels
    from lookalike.storage.catalogue import FileRow

    one, other, copy = _sig(_ball(200, 300)), _sig(_ball(600, 350)), _sig(_ball(200, 300), quality=60)
    rows = [
        FileRow(n, f"/{n}.jpg", 1, 0, None, 960, 720, "JPEG", None, colour=c)
        for n, c in enumerate((one, other, copy))
    ]
    scores = _Scores(np.ones((3, 4), np.float32) / 2, {0: 0, 1: 1, 2: 2}, pixels=True)  # one vector: cosine 1
    dupes = scores.to(rows[1:], rows[0])
    assert dupes[1] > 0.95 and dupes[0] < dupes[1] - 0.5  # the copy; the other shot
    assert scores.among(rows)[0, 1] == pytest.approx(dupes[0], abs=1e-4)
    search = dict((row.id, s) for row, s in weigh_pixels([(rows[1], 1.0), (rows[2], 1.0)], one))
    assert search[1] > 0.95 and search[2] > 0.95


def _flat(shade: int, seed: int) -> Image.Image:
    """A nearly flat dark picture (a boot splash, a blank slide): a faint gradient and grain."""
    rng = np.random.default_rng(seed)
    arr = np.full((720, 960, 3), shade, np.float32) + np.linspace(0, 6, 960)[None, :, None]
    return Image.fromarray(np.clip(arr + rng.normal(0, 1.5, arr.shape), 0, 255).astype(np.uint8), "RGB")


def test_compare_says_how_much_the_pictures_vary_where_they_were_compared(scene):
    left, spread = detail.compare(
        [colour.detail_grid(_sig(scene)), colour.detail_grid(_sig(_flat(40, 1)))],
        [colour.detail_grid(_sig(_captioned(scene))), colour.detail_grid(_sig(_flat(44, 2)))],
    )
    assert left.tolist() == pytest.approx(
        [_residual(_sig(scene), _sig(_captioned(scene))), _residual(_sig(_flat(40, 1)), _sig(_flat(44, 2)))]
    )
    assert spread[0] > 4 * metric.MATCHED_SPREAD  # a textured scene (its caption rows left out)
    assert spread[1] < metric.MATCHED_SPREAD  # two flat pictures: matching them says little
    assert detail.compare([None], [b"\x01\x01x"])[1].tolist() == [0.0]  # no evidence


def test_dupes_credits_pixels_that_match_once_the_edit_is_undone(scene):
    """A captioned copy (its features moved) gets MATCHED_CREDIT off its pixel gap in `dupes`;
    another shot of the scene and two flat pictures that match only as flat ones do not;
    search's gaps stay as they were."""
    original = _sig(scene)
    pairs = {
        "caption": _sig(_captioned(scene)),
        "other shot": _sig(_walker(_scene(), 560, 320)),
    }
    flat_a, flat_b = _sig(_flat(40, 1)), _sig(_flat(44, 2))
    first = [original, original, flat_a]
    second = [pairs["caption"], pairs["other shot"], flat_b]
    search = metric.pixel_gaps(first, second)
    dupes = metric.pixel_gaps(first, second, local=True)
    assert dupes[0] == pytest.approx(search[0] - metric.MATCHED_CREDIT, abs=1e-3)
    assert dupes[1] >= search[1] and dupes[1] > metric.DETAIL_FREE  # no credit, its patch weighed too
    assert dupes[2] == pytest.approx(search[2], abs=1e-3)
    matrix = metric.gap_matrix([original, pairs["caption"], pairs["other shot"]], local=True)
    assert matrix[0, 1] == pytest.approx(dupes[0], abs=1e-3)
    assert matrix[0, 2] == pytest.approx(dupes[1], abs=1e-3)
    # what dupes examines: a pair can pass from matched_lift() under a threshold, if its colours agree
    colour_gaps = metric.pixel_gaps(first, second, fine=False)
    highest = metric.highest(np.full(3, 0.8, np.float32), colour_gaps)
    assert highest[0] == pytest.approx(0.8 - metric.PIXEL_WEIGHT * colour_gaps[0] + metric.matched_lift())
    assert metric.with_pixels(0.8, dupes[0]) <= highest[0] + 1e-6


def test_a_copy_whose_caption_moved_its_features_is_grouped_by_its_pixels(scene):
    """Its cosine under the threshold (as captioned copies' whitened cosines are), its pixels
    matching once the caption's rows are left out: dupes keeps the pair; another shot at the
    same cosine, and a copy further under the threshold than pixels can lift, it does not."""
    from lookalike.search import duplicates
    from lookalike.storage.catalogue import FileRow

    sigs = [_sig(scene), _sig(_captioned(scene)), _sig(_walker(_scene(), 560, 320)), _sig(_captioned(scene))]
    rows = {
        n: FileRow(n, f"/{n}.jpg", 1, 0, None, 960, 720, "JPEG", None, colour=c) for n, c in enumerate(sigs)
    }
    threshold = 0.5
    cosines = [threshold - metric.matched_lift() / 2] * 2 + [threshold - 2 * metric.matched_lift()]
    angles = np.arccos(cosines)
    vectors = np.array([[1, 0, 0, 0]] + [[np.cos(t), np.sin(t), 0, 0] for t in angles], np.float32)
    pairs = {(0, 1), (0, 2), (0, 3)}
    kept, unsure = duplicates._weigh_pixels(pairs, rows, np.arange(4), vectors, threshold)
    assert kept == {(0, 1)}
    assert unsure == {}  # features under the threshold: none is left for the files to decide


def test_members_beyond_the_matrix_detail_are_weighed_against_their_centre_in_every_round(scene, monkeypatch):
    """The score matrix measures the detail among its first DETAIL_AMONG members only. A
    later group, formed once the first took its members, still weighs its members' detail
    against its centre (though fewer are left than the matrix measured): its other shot
    stays out, and a captioned copy whose features moved (cosine under the threshold, by
    less than matched pixels lift) comes in."""
    from lookalike.search import duplicates
    from lookalike.search.keep import KeepRules
    from lookalike.storage.catalogue import FileRow

    other = _scene(3)
    w, h = other.size
    pictures = [other, other.resize((w // 2, h // 2)), ImageOps.mirror(other)]  # the first group
    pictures += [scene, _walker(_scene(), 560, 320), _captioned(scene)]  # the second's centre, shot, copy
    members = [
        FileRow(n, f"/photos/{n}.jpg", 10_000 - n, 0, None, w, h, "JPEG", None, colour=_sig(p))
        for n, p in enumerate(pictures)
    ]
    threshold = 0.8
    below = threshold - metric.matched_lift() / 2
    vectors = np.array(
        [[1, 0, 0, 0]] * 3 + [[0, 0, 1, 0]] * 2 + [[0, 0, below, np.sqrt(1 - below**2)]], np.float32
    )
    scores = duplicates._Scores(vectors, {m.id: m.id for m in members}, pixels=True)
    monkeypatch.setattr(metric, "DETAIL_AMONG", 3)
    judge = duplicates._Judge((threshold, 0.5), False)
    groups = duplicates._star_groups(members, scores, threshold, KeepRules(), None, judge)
    grouped = sorted(sorted([g.keep.id, *(d.row.id for d in g.duplicates)]) for g in groups)
    assert grouped == [[0, 1, 2], [3, 5]]


def test_matched_pixels_do_not_lift_another_shot_of_a_burst(scene):
    """Two frames of a burst (same camera, 2 s apart) match at the grid's scale though
    someone blinked: the burst guard asks their score without the lift. The same two
    files from two cameras are a copy and its original, grouped by their pixels."""
    from datetime import datetime

    from lookalike.search import duplicates
    from lookalike.search.keep import KeepRules
    from lookalike.storage.catalogue import FileRow

    t = datetime(2024, 5, 1, 12, 0, 0)
    sigs = [_sig(scene), _sig(scene, quality=70)]
    cos = 0.95  # under the burst threshold (0.995), above the group's threshold once lifted

    def rows(cameras: list[str]) -> list[FileRow]:
        return [
            FileRow(
                n,
                f"/{n}.jpg",
                10 - n,
                0,
                None,
                960,
                720,
                "JPEG",
                t.replace(second=2 * n),
                {"Make": "Nikon", "Model": cam},
                colour=sig,
            )
            for n, (sig, cam) in enumerate(zip(sigs, cameras, strict=True))
        ]

    vectors = np.array([[1, 0], [cos, np.sqrt(1 - cos**2)]], np.float32)
    scores = duplicates._Scores(vectors, {0: 0, 1: 1}, pixels=True)
    threshold = cos + metric.matched_lift() / 2
    judge = duplicates._Judge((threshold, 0.5), False)
    burst = rows(["Z6", "Z6"])
    assert KeepRules().is_burst(*burst) and scores.to(burst[1:], burst[0])[0] >= threshold
    assert duplicates._star_groups(burst, scores, threshold, KeepRules(), None, judge) == []
    (group,) = duplicates._star_groups(rows(["Z6", "Z7"]), scores, threshold, KeepRules(), None, judge)
    assert [d.row.id for d in group.duplicates] == [1]


def _views_as_pillow_makes_them(cells: np.ndarray) -> np.ndarray:
    """The views of a grid made step by step with Pillow (resize, crop box, rotate) and a
    [1, 3, 3, 1] / 8 blur at stride 2: what detail._views computes with weight matrices."""

    def square(c: np.ndarray, box=None) -> np.ndarray:
        im = Image.fromarray(c.astype(np.float32))
        return np.asarray(im.resize((detail.FINE,) * 2, Image.Resampling.BILINEAR, box=box), np.float64)

    rows, cols = cells.shape
    whole = square(cells)
    views = [whole]
    for share in detail.ZOOMS:
        lo, hi = detail.FINE * (1 - share) / 2, detail.FINE * (1 + share) / 2
        views.append(square(whole, (lo, lo, hi, hi)))
    views.append(whole)  # no letterbox bars in these grids
    for angle in detail.ANGLES:
        c, s = np.cos(np.radians(abs(angle))), np.sin(np.radians(abs(angle)))
        width, height = np.linalg.solve([[c, s], [s, c]], [cols, rows])
        if width < 4 or height < 4:  # too flat to have been turned so: the picture as it is
            views.append(whole)
            continue
        back = np.asarray(Image.fromarray(cells.astype(np.float32)).rotate(-angle, Image.Resampling.BILINEAR))
        box = ((cols - width) / 2, (rows - height) / 2, (cols + width) / 2, (rows + height) / 2)
        views.append(square(back, box))
    p = np.pad(np.stack(views), ((0, 0), (1, 1), (1, 1)), mode="edge")
    down = p[:, 0:-2:2] + 3 * p[:, 1:-1:2] + 3 * p[:, 2::2] + p[:, 3::2]
    return (down[..., 0:-2:2] + 3 * down[..., 1:-1:2] + 3 * down[..., 2::2] + down[..., 3::2]) / 64


@pytest.mark.parametrize("shape", [(64, 64), (36, 64), (64, 43), (9, 64), (20, 30)])
def test_views_are_what_pillow_makes_of_the_grid(shape):
    rng = np.random.default_rng(sum(shape))
    cells = rng.integers(40, 200, shape, dtype=np.uint8)  # grey: no letterbox bar at any edge
    views = detail._views(bytes(shape) + cells.tobytes())
    assert views.shape == (2 + len(detail.ZOOMS) + len(detail.ANGLES), detail.FINE // 2, detail.FINE // 2)
    assert np.abs(views - _views_as_pillow_makes_them(cells.astype(np.float64))).max() < 1e-3


def test_every_grid_shape_has_its_views():
    """A long strip whose turned-back picture solves to a hair wider than its canvas (13 x 64
    cells at 8 degrees: a 1280 x 260 banner) crashed `dupes` and search with Pillow's "box
    offset can't be negative" (found on GIMP's manual's screenshots)."""
    rng = np.random.default_rng(0)
    for shape in [(rows, 64) for rows in range(1, 65)] + [(64, cols) for cols in range(1, 65)]:
        cells = rng.integers(40, 200, shape, dtype=np.uint8)
        views = detail._views(bytes(shape) + cells.tobytes())
        assert views.shape[0] == 2 + len(detail.ZOOMS) + len(detail.ANGLES)


def test_a_floor_spares_the_detail_of_pairs_that_cannot_reach_it_and_changes_no_decision(scene, monkeypatch):
    pictures = [scene, _captioned(scene), _walker(scene, 100, 300), _ball(500, 200), _scene(3), _scene(11)]
    colours = [_sig(p) for p in pictures]
    rng = np.random.default_rng(5)
    scores = rng.uniform(-0.2, 0.8, (len(colours),) * 2).astype(np.float32)
    scores = (scores + scores.T) / 2
    full = metric.with_pixels(scores, metric.gap_matrix(colours, local=True))
    compared, real = [], detail.compare

    def counted(a, *more, **kw):
        compared.append(len(a))
        return real(a, *more, **kw)

    monkeypatch.setattr(detail, "compare", counted)
    floor = 0.25
    spared = metric.with_pixels(scores, metric.gap_matrix(colours, local=True, scores=scores, floor=floor))
    assert 0 < sum(compared) < len(colours) * (len(colours) - 1) // 2  # some pairs were spared
    assert np.array_equal(spared >= floor, full >= floor)  # ... and no decision at the floor changed
    reached = full >= floor
    assert reached.any() and np.array_equal(spared[reached], full[reached])
