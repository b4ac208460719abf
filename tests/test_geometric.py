"""Geometric verification of `dupes` pairs (search.geometric): a crop anywhere and a caption
over a light sky are undone from the files; another shot of the scene is not a copy."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from lookalike import Index
from lookalike.images import DecodedImage, ImageFile, decode
from lookalike.models.runtimes import ModelInfo
from lookalike.search import geometric, metric
from lookalike.search.calibration import Calibration
from lookalike.storage import Store

DIM = 16


def _scene(seed: int, size: tuple[int, int] = (900, 600)) -> Image.Image:
    """A picture with corners to match: a light sky over a ground, and shapes of many colours."""
    rng = np.random.default_rng(seed)
    w, h = size
    im = Image.new("RGB", size, (236, 239, 243))
    draw = ImageDraw.Draw(im)
    draw.rectangle((0, int(h * 0.35), w, h), fill=(70, 90, 60))
    for left in (0.1, 0.6):  # two towers up to the top, under a fifth of the width
        draw.rectangle((int(w * left), 0, int(w * (left + 0.09)), h), fill=(110, 60, 50))
    for _ in range(90):
        x, y = int(rng.integers(0, w)), int(rng.integers(int(h * 0.3), h))
        dx, dy = int(rng.integers(8, 70)), int(rng.integers(8, 70))
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.rectangle if rng.random() < 0.5 else draw.ellipse)((x, y, x + dx, y + dy), fill=fill)
    return im


def _captioned(im: Image.Image) -> Image.Image:
    """Three white bars with black text, 4% of the height each (the first across the sky,
    which it differs from by little), as on shared memes."""
    out = im.copy()
    draw = ImageDraw.Draw(out)
    w, h = out.size
    bar = round(h * 0.04)
    font = ImageFont.load_default(size=round(bar * 0.75))
    for top in (round(h * 0.05), round(h * 0.48), round(h * 0.91)):
        draw.rectangle((0, top, w, top + bar - 1), fill="white")
        draw.text(
            (w // 30, top + bar // 2),
            "shared with friends: look at this one!",
            fill="black",
            font=font,
            anchor="lm",
        )
    return out


def _save(im: Image.Image, path) -> str:
    im.save(path, quality=92)
    return str(path)


def _gap(first: str, second: str) -> float:
    """The pair's `dupes` gap from the grids the indexer stores."""
    a, b = (decode(p, (224, 224)).colour for p in (first, second))
    return float(metric.pixel_gaps([a], [b], local=True)[0])


def test_an_off_centre_crop_is_undone_from_the_files(tmp_path):
    original = _scene(1)
    w, h = original.size
    crop = original.crop((int(w * 0.27), int(h * 0.18), int(w * 0.97), int(h * 0.9)))  # 70%, off centre
    a, b = _save(original, tmp_path / "a.jpg"), _save(crop, tmp_path / "b.jpg")
    assert _gap(a, b) > 10  # the grids try central crops only
    gaps = geometric.verified_gaps([(a, b), (b, a)])
    assert gaps[a, b] < 2 and gaps[b, a] < 2


def test_a_caption_over_a_light_sky_is_undone_from_the_files(tmp_path):
    original = _scene(2)
    a, b = _save(original, tmp_path / "a.jpg"), _save(_captioned(original), tmp_path / "b.jpg")
    assert _gap(a, b) > 10  # the top bar differs from the sky only where its glyphs are
    assert geometric.verified_gaps([(a, b)])[a, b] < 2


def test_another_shot_of_the_scene_stays_apart(tmp_path):
    """Objects that moved, or the whole frame a little to one side: no edit of a copy."""
    original = _scene(3)
    moved = original.copy()
    patch = original.crop((100, 300, 300, 500))
    moved.paste(patch, (560, 320))  # something else is where this was
    w, h = original.size
    shifted = original.crop((6, 4, w, h)).resize((w, h))  # the camera moved by 1%
    a = _save(original, tmp_path / "a.jpg")
    b, c = _save(moved, tmp_path / "b.jpg"), _save(shifted, tmp_path / "c.jpg")
    tall = _scene(3, (900, 640))
    up, down = tall.crop((0, 0, w, h)), tall.crop((0, 10, w, h + 10))  # the camera moved down 10 px
    d, e = _save(up, tmp_path / "d.jpg"), _save(down, tmp_path / "e.jpg")
    gaps = geometric.verified_gaps([(a, b), (a, c), (d, e), (e, d)])
    assert gaps.get((a, b), 99) > 10
    assert (a, c) not in gaps  # the same frame and no bar: the grids' word stands
    assert (d, e) not in gaps and (e, d) not in gaps  # the rows the move left empty are no caption bar


def test_dupes_groups_the_crop_and_the_captioned_copy_with_their_original(tmp_path):
    """Through Index.duplicates on an index that weighs pixels: both copies were left out
    before (their stored gaps keep them under the threshold), the other picture still is."""
    original = _scene(4)
    w, h = original.size
    members = {
        "original.jpg": original,
        "crop.jpg": original.crop((int(w * 0.27), int(h * 0.18), int(w * 0.97), int(h * 0.9))),
        "caption.jpg": _captioned(original),
        "other.jpg": _scene(5),
    }
    base = np.eye(DIM, dtype=np.float32)[0]
    rng = np.random.default_rng(0)
    files, vectors = [], []
    for n, (name, im) in enumerate(members.items()):
        path = _save(im, tmp_path / name)
        decoded = decode(path, (224, 224))
        image = DecodedImage(
            np.zeros((2, 2, 3), np.uint8), im.width, im.height, "JPEG", colour=decoded.colour
        )
        files.append(ImageFile(path, 1000 - n, 1, f"hash-{n}", image=image))
        noise = rng.normal(size=DIM).astype(np.float32) * (0.03 if name != "other.jpg" else 3.0)
        vector = base + noise * (np.arange(DIM) > 0)
        vectors.append(vector / np.linalg.norm(vector))
    info = ModelInfo("m", "id", (2, 2), DIM, (0.0, 1.0), False, "tf")
    with Store(tmp_path / "ix", model=info, writable=True) as store:
        store.add(files, np.stack(vectors))
        store.set_calibration(Calibration(30.0, -24.0, 10, 10, 5, metric.PIXELS).to_dict())
    cosine = float(vectors[0] @ vectors[1])
    assert cosine > 0.9 and float(vectors[0] @ vectors[3]) < 0.5
    checked: list[tuple[int, int]] = []
    (group,) = Index(tmp_path / "ix").duplicates(0.85, progress=lambda *told: checked.append(told))
    assert checked and checked[-1][0] == checked[-1][1] >= 2  # the pairs checked from their files, told
    assert group.keep.path.endswith("original.jpg")
    assert sorted(d.row.path.rsplit("/", 1)[1] for d in group.duplicates) == ["caption.jpg", "crop.jpg"]


def test_a_picture_is_read_once_while_pairs_still_need_it(tmp_path, monkeypatch):
    """Kept until its last pair, not merely while it is among the latest read: ``a`` comes
    back after four other pictures, past a cache of three."""
    paths = [_save(_scene(10 + n, (300, 200)), tmp_path / f"{n}.jpg") for n in range(5)]
    a, b, c, d, e = paths
    reads: list[str] = []
    real = geometric.read

    def counted(path: str):
        reads.append(path)
        return real(path)

    monkeypatch.setattr(geometric, "read", counted)
    monkeypatch.setattr(geometric, "CACHE", 3)
    monkeypatch.setattr(geometric, "THREADS", 1)
    geometric.verified_gaps([(a, b), (c, d), (d, e), (a, e)])
    assert sorted(reads) == sorted(paths)  # each once; a first-in-first-out cache of 3 read a twice
