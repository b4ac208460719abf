"""Score calibration: cosine -> P(same photo), fitted on the index's own photos."""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps
from typer.testing import CliRunner

from lookalike import colour
from lookalike.api import Index
from lookalike.cli import app
from lookalike.images import decode
from lookalike.search import calibration, edits, neighbours
from lookalike.search.calibration import Calibration, fit_logistic
from lookalike.search.edits import EDITS, SHOTS, edited_copies
from lookalike.search.presets import PRESETS, presets_for
from lookalike.storage.store import Store
from tests.conftest import make_photo

runner = CliRunner()


def test_logistic_fit_recovers_a_known_curve():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, 20000)
    p = 1 / (1 + np.exp(-(20 * x - 14)))
    y = rng.uniform(size=x.size) < p
    # class-balanced fit: the intercept moves by log(n_neg / n_pos), the slope stays
    a, b = fit_logistic(x[y], x[~y], l2=0.0)
    assert a == pytest.approx(20, rel=0.1)
    assert b == pytest.approx(-14 + np.log((~y).sum() / y.sum()), abs=0.5)


def test_logistic_fit_weighs_negatives_against_each_other_only():
    rng = np.random.default_rng(1)
    positives, negatives = rng.normal(0.8, 0.1, 300), rng.normal(0.3, 0.15, 400)
    plain = fit_logistic(positives, negatives)
    assert fit_logistic(positives, negatives, negative_weights=np.full(400, 7.0)) == pytest.approx(plain)
    near = negatives > 0.5  # the negatives closest to the copies, weighed down: copies more likely there
    light = fit_logistic(positives, negatives, negative_weights=np.where(near, 0.1, 1.0))
    dropped = fit_logistic(positives, negatives[~near])
    p = [1 / (1 + np.exp(-(a * 0.6 + b))) for a, b in (plain, light, dropped)]
    assert p[0] < p[1] < p[2]


def test_probability_and_threshold_are_inverse():
    cal = Calibration(a=30.0, b=-24.0, positives=10, negatives=10, photos=5)
    assert cal.probability(0.8) == pytest.approx(0.5)
    for level in (0.5, 0.9, 0.999):
        assert cal.probability(cal.cosine_for(level)) == pytest.approx(level)
    assert Calibration.from_dict(cal.to_dict()) == cal and Calibration.from_dict(None) is None
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        cal.cosine_for(1.0)


def test_edited_copies_and_shots_are_decodable_images_made_the_same_each_time():
    buf = io.BytesIO()
    make_photo(0, (200, 120)).save(buf, "JPEG")
    copies, shots = edited_copies(buf.getvalue())
    assert len(copies) == len(EDITS) and len(shots) == len(SHOTS)
    assert all(Image.open(io.BytesIO(c)).size[0] > 0 for c in copies + shots)
    assert edited_copies(buf.getvalue()) == (copies, shots)  # seeded by the bytes


def test_near_identical_shots_are_different_photo_examples(monkeypatch):
    """A photo's generated shots (the scene with things moved, from a turned camera) are
    "different photo" examples beside its nearest other photos where scores weigh the
    pixels: a pair as close as a shot is less likely the same photo than by a curve fitted
    on the distant neighbours alone. On the cosine alone (shots score as copies), or against a
    photo indexed before the luma grid existed (no detail residual), they are not."""
    copy, shot = np.array([0.97, np.sqrt(1 - 0.97**2)]), np.array([0.9, np.sqrt(1 - 0.81)])

    def embed(datas):  # per photo, the edits come first, then the shots (gather embeds them together)
        shots = len(SHOTS) if edits.SHOTS else 0
        assert len(datas) % (len(EDITS) + shots) == 0
        photos = len(datas) // (len(EDITS) + shots)
        return np.array(([copy] * len(EDITS) + [shot] * shots) * photos, np.float32)

    def neighbours(ids, vectors, k, edits=None):  # other photos: unrelated
        return [[0.3] * k for _ in ids]

    buf = io.BytesIO()
    make_photo(0, (64, 48)).save(buf, "JPEG")
    sample = [(i, buf.getvalue(), np.array([1.0, 0.0], np.float32)) for i in range(6)]
    sig = decode(buf.getvalue(), (224, 224)).colour  # one signature for all: every pixel gap 0
    examples = calibration.gather(sample, lambda datas: (embed(datas), [sig] * len(datas)))
    examples.stored_colours = [sig] * 6
    cal = calibration.fit_examples(examples, neighbours, lambda v: v, pixels=True)
    assert cal.negatives == 6 * (calibration.NEIGHBOURS + len(SHOTS))
    examples.stored_colours = [sig[: colour.SIGNATURE_BYTES]] * 6  # indexed before the luma grid
    assert calibration.fit_examples(examples, neighbours, lambda v: v, pixels=True).negatives == 60
    assert calibration.fit_examples(examples, neighbours).negatives == 6 * calibration.NEIGHBOURS  # cosine
    monkeypatch.setattr(edits, "SHOTS", {})
    distant_only = calibration.fit(sample, embed, neighbours)
    assert distant_only.negatives == 6 * calibration.NEIGHBOURS
    assert cal.probability(0.9) < distant_only.probability(0.9) - 0.05
    assert cal.probability(0.97) > 0.8  # copies stay likely
    # a made shot weighs less than a measured neighbour (a prior, not a count)
    monkeypatch.setattr(calibration, "SHOT_WEIGHT", 1.0)
    examples.stored_colours = [sig] * 6
    counted_fully = calibration.fit_examples(examples, neighbours, lambda v: v, pixels=True)
    assert counted_fully.probability(0.9) < cal.probability(0.9) - 0.05


def test_presets_follow_the_calibration_for_unmeasured_models():
    assert presets_for("mobilenet_v1_050_160") == (PRESETS, "measured")
    assert presets_for("mobilenet_v3_small_100_224") == (PRESETS, "unmeasured")
    cal = Calibration(a=40.0, b=-30.0, positives=1, negatives=1, photos=1)
    presets, basis = presets_for("mobilenet_v3_small_100_224", cal)
    assert basis == "calibrated"
    assert presets["copies"].threshold > presets["edited"].threshold > presets["similar"].threshold
    assert cal.probability(presets["edited"].threshold) == pytest.approx(0.99, abs=1e-3)
    assert presets["exact"] == PRESETS["exact"]


def test_calibrate_an_index_then_scores_carry_probabilities(tmp_path, photo_dir, tf2_model):
    index = tmp_path / "index"
    idx = Index(index)
    report = idx.add([photo_dir], model=str(tf2_model))
    assert report.calibration is None  # 8 photos: below the automatic calibration size
    res = runner.invoke(app, ["dupes", "--min-probability", "0.9", "--index", str(index)])
    assert res.exit_code == 1 and "no score calibration yet" in res.stderr
    res = runner.invoke(app, ["calibrate", "--index", str(index), "--sample", "8"])
    assert res.exit_code == 0, res.output
    assert re.search(r"calibrated on 8 photos \(64 edited copies, 5\d other photos\)", res.stdout)
    cal = Calibration.from_dict(Index(index).manifest().calibration)
    assert cal.a > 0  # higher cosine, more likely the same photo
    query = photo_dir / "photo0.jpg"
    out = json.loads(
        runner.invoke(app, ["search", str(query), "--json", "-k", "3", "--index", str(index)]).stdout
    )
    first, *rest = out["results"]
    own = cal.probability(first["score"])  # shared with the look-alikes among the hits, if any
    assert own - 0.02 <= first["probability"] <= own + 1e-9
    assert all(r["probability"] <= first["probability"] for r in rest)
    res = runner.invoke(app, ["dupes", "--min-probability", "0.5", "--json", "--index", str(index)])
    assert res.exit_code == 0, res.output
    table = runner.invoke(app, ["search", str(query), "--index", str(index)]).stdout
    assert "p(same)" in table


def test_too_few_photos_is_a_clear_error(tmp_path, tf2_model):
    folder = tmp_path / "few"
    folder.mkdir()
    for i in range(3):
        make_photo(i).save(folder / f"{i}.jpg")
    Index(tmp_path / "index").add([folder], model=str(tf2_model))
    res = runner.invoke(app, ["calibrate", "--index", str(tmp_path / "index"), "--sample", "5"])
    assert res.exit_code == 1 and "at least 5 readable indexed photos, found 3" in res.stderr


def test_an_index_calibrates_itself_once_it_is_large_enough(tmp_path, photo_dir, tf2_model, monkeypatch):
    monkeypatch.setattr(calibration, "AUTO_CALIBRATE", 8)
    monkeypatch.setattr(calibration, "AUTO_SAMPLE", 6)
    report = Index(tmp_path / "index").add([photo_dir], model=str(tf2_model))
    assert report.calibration is not None and report.calibration.photos == 6
    assert Index(tmp_path / "index").manifest().calibration["photos"] == 6


def test_a_run_killed_before_calibrating_calibrates_on_resume(tmp_path, photo_dir, tf2_model, monkeypatch):
    monkeypatch.setattr(calibration, "AUTO_CALIBRATE", 8)
    monkeypatch.setattr(calibration, "AUTO_SAMPLE", 6)
    idx = Index(tmp_path / "index")
    idx.add([photo_dir], model=str(tf2_model), calibrate=False)  # as if killed before calibrating
    assert idx.manifest().calibration is None
    report = idx.add([photo_dir])  # nothing left to index, yet the calibration is made
    assert report.indexed == 0 and report.calibration is not None


def test_a_curve_that_falls_with_cosine_is_refused():
    def embed(datas):  # edited copies land far from their originals ...
        return np.tile(np.array([[0.0, 1.0]], np.float32), (len(datas), 1))

    def neighbours(ids, vectors, k, edits=None):  # ... while other photos sit right on them
        return [[0.95] * k for _ in ids]

    buf = io.BytesIO()
    make_photo(0, (64, 48)).save(buf, "JPEG")
    sample = [(i, buf.getvalue(), np.array([1.0, 0.0], np.float32)) for i in range(6)]
    with pytest.raises(ValueError, match="copies score no higher than other photos"):
        calibration.fit(sample, embed, neighbours)
    falling = Calibration(a=-6.0, b=2.0, positives=1, negatives=1, photos=1)  # e.g. an old manifest
    assert presets_for("mobilenet_v3_small_100_224", falling) == (PRESETS, "unmeasured")
    with pytest.raises(ValueError, match="recalibrate"):
        falling.cosine_for(0.99)


def test_photos_changed_or_unreadable_since_indexing_are_not_examples(tmp_path, photo_dir, tf2_model):
    index = tmp_path / "index"
    Index(index).add([photo_dir], model=str(tf2_model))
    make_photo(500).save(photo_dir / "photo0.jpg")  # new content at an indexed path
    (photo_dir / "photo2.jpg").write_bytes(b"\xff\xd8 truncated")
    (photo_dir / "photo4.jpg").unlink()
    cal = Index(index).calibrate(sample=8)
    assert cal.photos == 5 and cal.positives == 5 * len(EDITS)


def test_a_failed_automatic_calibration_waits_for_the_collection_to_double(
    tmp_path, photo_dir, tf2_model, monkeypatch
):
    monkeypatch.setattr(calibration, "AUTO_CALIBRATE", 4)
    attempts = []

    def refuse(*args):
        attempts.append(1)
        raise ValueError("calibration failed: copies score no higher than other photos here")

    monkeypatch.setattr(calibration, "gather", refuse)
    idx = Index(tmp_path / "index")
    idx.add([photo_dir / "sub"], model=str(tf2_model))  # 4 photos: tried, refused, recorded
    assert attempts == [1] and idx.manifest().calibration["failed_at"] == 4
    assert Calibration.from_dict(idx.manifest().calibration) is None
    idx.add([photo_dir / "photo0.jpg", photo_dir / "photo2.jpg"])  # 6 < 2 x 4: not again
    assert attempts == [1]
    idx.add([photo_dir])  # 8: again
    assert attempts == [1, 1]
    stored = {"a": -6.0, "b": 2.0, "positives": 1, "negatives": 1, "photos": 1}  # an old, falling fit
    assert Calibration.from_dict(stored) is None


def _signed(im: Image.Image) -> Image.Image:
    """``im`` with a caption unlike the calibration's own text edit: other words, at the top."""
    out = im.copy()
    font = ImageFont.load_default(size=im.height // 6)
    draw = ImageDraw.Draw(out)
    draw.text((8, 4), "holiday 07", fill="yellow", font=font, stroke_width=3, stroke_fill="black")
    return out


def test_the_collections_own_copies_are_never_different_photo_examples(tmp_path, tf2_model, monkeypatch):
    """A library of originals plus their re-encoded, resized, mirrored, captioned and cropped
    copies: the copies are the nearest neighbours, yet none is taken as a "different photo".
    The caption and the crop are not the calibration's own edits (no edit explains them); the
    crop's thumbnail differs too, only its pixels (colour gap, detail residual) tell it."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(8):
        im = make_photo(40 + i, (320, 240))
        im.save(photos / f"p{i}.jpg", quality=92)
        im.save(photos / f"p{i}-again.png")  # same picture, other bytes
        im.resize((160, 120)).save(photos / f"p{i}-small.jpg", quality=80)
        ImageOps.grayscale(im).save(photos / f"p{i}-gray.jpg", quality=90)  # colours differ: the
        ImageOps.mirror(im).save(photos / f"p{i}-mirror.jpg", quality=90)  # gray, mirror edits tell
        _signed(im).save(photos / f"p{i}-signed.jpg", quality=90)  # pixels tell these two
        edits.crop_centre(im, 0.6).save(photos / f"p{i}-cut.jpg", quality=90)
    index = Index(tmp_path / "index")
    index.add([photos], model=str(tf2_model), calibrate=False)
    seen: dict = {}
    real_fit = calibration.fit_examples

    def spy(examples, neighbours, space=None):
        edits = [examples.copies[examples.owner == n] for n in range(len(examples.ids))]
        seen["negatives"] = neighbours(examples.ids, examples.stored, 10, edits)
        seen["sample"] = list(zip(examples.ids, examples.stored, strict=True))
        return real_fit(examples, neighbours, space)

    monkeypatch.setattr(calibration, "fit_examples", spy)
    index.calibrate(sample=8)
    with index.store() as store:
        known = store.catalogue.known()
        for (fid, vector), negatives in zip(seen["sample"], seen["negatives"], strict=True):
            path = next(p for p, k in known.items() if k.id == fid)
            stem = path.rsplit("/", 1)[1].split("-")[0].split(".")[0]
            copies = [k.id for p, k in known.items() if p.rsplit("/", 1)[1].startswith(stem) and k.id != fid]
            copy_scores = store.catalogue.load_vectors(copies)[1] @ vector
            assert len(negatives) >= 5
            for score in copy_scores:  # no copy among them (the gray and mirrored ones score low)
                assert all(abs(n - score) > 1e-5 for n in negatives), path


def test_a_hits_probability_is_shared_with_its_rivals_not_with_its_own_copies():
    p = np.array([0.99, 0.99, 0.2])
    apart = np.eye(3)  # three different pictures
    shared = calibration.among_rivals(p, apart)
    assert shared[0] == pytest.approx(shared[1]) and 0.45 < shared[0] < 0.5  # two equal look-alikes
    assert shared[2] < 0.01  # the weak one, beside two strong rivals
    copies = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # hits 0 and 1: one picture
    kept = calibration.among_rivals(p, copies)
    assert kept[0] == pytest.approx(0.99 / 1.01 * 0.99 / (0.99 + 0.0025), rel=0.05) and kept[0] > 0.97
    alone = calibration.among_rivals(np.array([0.9]), np.eye(1))
    assert alone[0] == pytest.approx(0.9)


def test_a_hit_can_be_the_querys_no_more_than_being_one_picture_with_the_likeliest():
    most = calibration.under_the_likeliest(0.999, np.array([1.0, 0.95, 0.5, 0.0]))
    assert most == pytest.approx([1.0, 0.999 * 0.95 + 0.001, 0.999 * 0.5 + 0.001, 0.001])
    assert calibration.under_the_likeliest(0.0, np.array([0.0, 0.5])) == pytest.approx([1.0, 1.0])


def test_search_caps_each_hit_by_the_likeliest_and_how_alike_the_two_are(tmp_path, tf2_model):
    """Beside a 0.999 likely hit, another photo its own score puts at 0.99 falls to what
    being one picture with that hit allows; the same bytes as that hit, and a hit already
    less likely than the bound allows, keep their scores."""
    index, photos, cal = _calibrated(tmp_path, tf2_model, 70)
    (photos / "p0-copy.jpg").write_bytes((photos / "p0.jpg").read_bytes())
    index.add([photos], model=str(tf2_model))
    ids = {name: index.file_at(photos / name).id for name in ("p0.jpg", "p0-copy.jpg", "p1.jpg", "p2.jpg")}
    own = {"p0.jpg": 0.999, "p0-copy.jpg": 0.99, "p1.jpg": 0.99, "p2.jpg": 0.0005}
    at = {n: cal.cosine_for(p) for n, p in own.items()}
    hits = []
    for n, p in own.items():
        hits.append(neighbours.Hit(ids[n], str(photos / n), at[n], probability=p, similarity=at[n]))
    scores = index.similarities([h.id for h in hits], dupes=True)  # as search's rivals are scored
    assert neighbours._under_the_likeliest(cal, hits, scores, {i: index.file(i) for i in ids.values()})
    same = cal.probability(scores[0, 2])
    assert same < 0.5  # two different photos
    by_name = {h.path.rsplit("/", 1)[1]: h for h in hits}
    assert by_name["p1.jpg"].score == pytest.approx(cal.cosine_for(0.999 * same + 0.001), abs=1e-6)
    for name in ("p0.jpg", "p0-copy.jpg", "p2.jpg"):
        assert by_name[name].score == pytest.approx(cal.cosine_for(own[name]), abs=1e-9), name


def test_no_search_hit_is_likelier_than_being_one_picture_with_the_likeliest_allows(
    tmp_path, tf2_model, monkeypatch
):
    """Through search, on a steep curve (the other photos 0.9-0.99 likely by their own
    scores) where no hit gives way to a likelier other picture (as if every two were one
    picture): the bound alone keeps them under what being one picture with the likeliest
    hit allows, lowering score and probability together."""
    monkeypatch.setattr(neighbours, "OTHER_PICTURE", 1e-9)
    index, photos, _ = _calibrated(tmp_path, tf2_model, 90)
    query = tmp_path / "query.png"
    make_photo(90).filter(ImageFilter.GaussianBlur(2)).save(query)  # p0, blurred
    ids = [index.file_at(photos / f"p{i}.jpg").id for i in range(8)]
    near = np.sort(index.similarities(ids)[0, 1:])[-4:]  # p0's nearest others
    steep = Calibration(60.0, -60.0 * near.min() + np.log(9), 8, 8, 8)
    with Store(tmp_path / "index", writable=True) as store:
        store.set_calibration(steep.to_dict())
    hits = index.search([query], k=8)[0].hits
    top = hits[0]
    assert top.path.endswith("p0.jpg") and top.probability > 0.999
    found = sorted(hits, key=lambda h: -h.similarity)  # as search scores its top hits among them
    scores = index.similarities([h.id for h in found], dupes=True)
    lowered = 0
    for h, score in zip(found, scores[found.index(top)], strict=True):
        if h is top or steep.probability(h.similarity) < neighbours.NOT_RIVAL:
            continue  # (a hit that unlikely is nobody's rival, and keeps its score)
        same = steep.probability(score)
        assert h.probability <= top.probability * same + 1 - top.probability + 1e-9
        read = 0.0 if h.relation == "recoloured" else steep.probability(h.score)  # (another picture)
        assert h.probability == pytest.approx(read, abs=1e-9)
        lowered += h.score < h.similarity - 1e-6
    assert lowered  # the bound was what held them


def _calibrated(tmp_path: Path, model: Path, seed: int, again: bool = False) -> tuple:
    """An index of 8 photos p0..p7 (and p0 again as PNG if ``again``), calibrated on them."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(8):
        make_photo(seed + i).save(photos / f"p{i}.jpg", quality=92)
    if again:
        make_photo(seed).save(photos / "p0-again.png")
    index = Index(tmp_path / "index")
    index.add([photos], model=str(model))
    index.calibrate(sample=8)
    return index, photos, Calibration.from_dict(index.manifest().calibration)


def test_copies_of_the_query_keep_their_score_and_other_photos_give_way(tmp_path, tf2_model):
    """Two indexed copies of the query's photo are one picture: neither lowers the other,
    and both keep their own probability; the other photos under them lose score and
    probability together (every hit's probability is the calibration at its score)."""
    index, photos, cal = _calibrated(tmp_path, tf2_model, 60, again=True)
    hits = index.search([photos / "p0.jpg"], k=5)[0].hits
    own = {h.path.rsplit("/", 1)[1]: h for h in hits}
    assert {"p0.jpg", "p0-again.png"} <= set(own)
    for h in (own["p0.jpg"], own["p0-again.png"]):  # the same picture twice: no rivals of each other
        assert h.score == pytest.approx(h.similarity, abs=1e-6) and h.probability > 0.9
    others = [h for h in hits if not h.path.rsplit("/", 1)[1].startswith("p0")]
    assert any(h.score < h.similarity - 1e-6 for h in others)
    for h in hits:  # and the rest never gain from the neighbourhood
        assert h.probability == pytest.approx(cal.probability(h.score), abs=1e-9)
        assert h.probability <= cal.probability(h.similarity) + 1e-9


def test_probability_and_relation_read_the_score_a_hit_gave_way_to():
    """A copy whose score gave way under the copy cutoff is `similar`; an exact copy stays
    exact, and a recoloured variant stays recoloured (what the pair is, by its colours)
    with probability 0, whatever their scores. Every other probability is the calibration
    at the score."""
    cal = Calibration(5.0, -1.0, 10, 10, 5, "whitened")
    hits = [
        neighbours.Hit(1, "/a", 0.1, relation="exact", similarity=1.0),  # (same bytes never give way)
        neighbours.Hit(2, "/b", 0.95, relation="copy", similarity=0.95),
        neighbours.Hit(3, "/c", 0.6, relation="copy", similarity=0.92),  # gave way
        neighbours.Hit(4, "/d", 0.2, relation="recoloured", similarity=0.91),  # gave way
        neighbours.Hit(5, "/e", 0.3, relation="similar", similarity=0.3),
    ]
    neighbours.read_scores(hits, cal, 0.9)
    assert [h.relation for h in hits] == ["exact", "copy", "similar", "recoloured", "similar"]
    expected = [cal.probability(h.score) for h in hits]
    expected[3] = 0.0
    assert [h.probability for h in hits] == pytest.approx(expected)


def test_a_score_lowered_under_minus_one_reads_the_probability_it_gave_way_to():
    """Scores are not clamped at -1: a hit outdone far enough reads the tiny probability it
    gave way to, not the curve's value at -1 (0.25% here; 8-12% on the benchmark's curves,
    where nearly every unrelated photo sat there)."""
    cal = Calibration(5.0, -1.0, 10, 10, 5, "whitened")
    hit = neighbours.Hit(1, "/a", 0.2, relation="copy", similarity=0.2)
    neighbours._lower_to(hit, cal, 1e-6)
    neighbours.read_scores([hit], cal, 0.9)
    assert hit.score < -2 and hit.probability == pytest.approx(1e-6, rel=1e-6)
    assert hit.relation == "similar" and hit.similarity == 0.2


def test_rivals_are_the_top_hits_only(tmp_path, tf2_model, monkeypatch):
    """Hits below the top RIVALS keep their own score and probability (the rivals' matrix
    stays RIVALS x RIVALS whatever k is); the top ones still give way."""
    index, photos, cal = _calibrated(tmp_path, tf2_model, 80)
    monkeypatch.setattr(neighbours, "RIVALS", 3)
    hits = index.search([photos / "p0.jpg"], k=8)[0].hits
    assert len(hits) == 8
    hits.sort(key=lambda h: -h.similarity)  # as FAISS found them (the scores may reorder them)
    own = [float(cal.probability(h.similarity)) for h in hits]
    assert [h.probability for h in hits[3:]] == pytest.approx(own[3:], abs=1e-9)
    assert [h.score for h in hits[3:]] == [h.similarity for h in hits[3:]]
    assert any(h.probability < p - 1e-6 for h, p in zip(hits[:3], own[:3], strict=True))  # still lowered


def test_a_hit_beside_a_closer_other_picture_scores_lower_than_it_alone(tmp_path, tf2_model):
    """The score a hit is ranked and thresholded by is its own similarity less what likelier
    other pictures take: the score at which the calibration gives its probability among
    those. The query's own photo keeps its score; the other photos under it fall, in order
    (a copy under it keeps its score: test_metric)."""
    index, photos, cal = _calibrated(tmp_path, tf2_model, 60)
    hits = index.search([photos / "p0.jpg"], k=8)[0].hits
    assert hits[0].path.endswith("p0.jpg") and hits[0].score == pytest.approx(hits[0].similarity, abs=1e-6)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    lowered = [h for h in hits if h.score < h.similarity - 1e-6]
    assert lowered  # beside the photo itself, the other photos lose
    for h in hits:
        assert h.score <= h.similarity + 1e-9
        assert h.probability == pytest.approx(cal.probability(h.score), abs=1e-9)
    top, runner_up = sorted(hits, key=lambda h: -h.similarity)[:2]  # outdone by the photo alone
    o_top, o = (cal.probability(h.similarity) / (1 - cal.probability(h.similarity)) for h in (top, runner_up))
    assert runner_up.score == pytest.approx(cal.cosine_for(o / (1 + o + o_top)), abs=1e-6)
    doc = hits[1].to_dict()
    assert doc["similarity"] == pytest.approx(hits[1].similarity, abs=1e-6)
    assert doc["score"] <= doc["similarity"]


def test_cleanly_separated_examples_do_not_make_the_curve_a_step():
    rng = np.random.default_rng(0)
    positives = rng.uniform(0.5, 1.0, 400)  # every edit above every other photo
    negatives = rng.uniform(-0.5, 0.3, 500)
    cal = Calibration(*fit_logistic(positives, negatives), 400, 500, 50)
    assert 0.3 < cal.cosine_for(0.5) < 0.5  # between the two groups
    # the targets are (N+ + 1) / (N+ + 2) and 1 / (N- + 2), not 1 and 0 (Platt): a slope, not a step
    assert cal.a < 100 and cal.probability(0.5) < 0.99 and cal.probability(0.3) > 0.01


def test_edits_of_a_transparent_picture_are_flattened_as_the_indexer_flattens_it():
    rgba = make_photo(3, (300, 200)).convert("RGBA")  # the photo's colours stay under the transparency
    alpha = Image.new("L", rgba.size, 0)
    ImageDraw.Draw(alpha).ellipse((50, 30, 250, 170), fill=255)
    rgba.putalpha(alpha)
    buf = io.BytesIO()
    rgba.save(buf, "PNG")
    stored = decode(buf.getvalue(), (224, 224)).colour
    half = edited_copies(buf.getvalue())[0][list(EDITS).index("half_size")]
    gap = colour.pixel_gaps(colour.lab([stored]), colour.lab([decode(half, (224, 224)).colour]))[0]
    assert gap < 3.0  # the same picture, seen the same way (not its hidden colours)


def test_the_detail_is_measured_for_each_photos_nearest_others_only():
    owner = np.array([1, 0, 1, 1, 0, 2, 1])
    score = np.array([0.5, 0.1, 0.9, 0.7, 0.3, 0.2, -0.4])
    assert calibration._nearest(owner, score, 2).tolist() == [1, 2, 3, 4, 5]  # photo 1: 0.9 and 0.7
    assert calibration._nearest(owner, score, 9).tolist() == list(range(7))


def test_several_photos_pictures_are_embedded_at_once_each_kept_with_its_photo():
    """gather embeds the edits and shots of several photos per call (full model batches),
    and each photo keeps its own pictures' vectors and signatures; when a call comes back
    short, only the photo whose picture failed is left out."""
    datas = []
    for i in range(7):
        buf = io.BytesIO()
        make_photo(i, (96, 64)).save(buf, "JPEG")
        datas.append(buf.getvalue())
    made = [edited_copies(d) for d in datas]
    refused = set(made[3][0] + made[3][1])  # photo 3's pictures: "not decodable"
    calls = []

    def vector(picture: bytes) -> np.ndarray:
        return np.frombuffer(hashlib.blake2b(picture, digest_size=16).digest(), np.uint8).astype(np.float32)

    def embed(pictures):
        calls.append(len(pictures))
        kept = [p for p in pictures if p not in refused]
        return np.array([vector(p) for p in kept], np.float32).reshape(-1, 16), [p[-8:] for p in kept]

    sample = [(10 + i, d, np.zeros(16, np.float32)) for i, d in enumerate(datas)]
    examples = calibration.gather(sample, embed)
    assert examples.ids == [10, 11, 12, 14, 15, 16]
    assert max(calls) >= calibration.EMBED_AT_ONCE  # several photos a call ...
    assert len(calls) < len(datas)  # ... fewer calls than photos, even with the retry
    for n, fid in enumerate(examples.ids):
        copies, shots = made[fid - 10]
        np.testing.assert_array_equal(examples.copies[examples.owner == n], [vector(p) for p in copies])
        np.testing.assert_array_equal(examples.shots[examples.shot_owner == n], [vector(p) for p in shots])
        own = [c for c, o in zip(examples.copy_colours, examples.owner, strict=True) if o == n]
        assert own == [p[-8:] for p in copies]
