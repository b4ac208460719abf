"""The similarity learned on the collection (PCA whitening): math, storage, and relearning."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.api import Index
from lookalike.errors import CalibrationError
from lookalike.search import calibration, metric
from lookalike.search.calibration import Calibration
from lookalike.search.metric import Whitening, due, learn
from tests.conftest import make_photo


def _collection(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    """Unit vectors sharing one dominant direction, as CNN features of photos do."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)) * np.linspace(3.0, 0.1, dim) + 8.0 * np.eye(dim)[0]
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_whitened_collection_has_no_dominant_direction():
    x = _collection(2000)
    w = learn(np.array_split(x, 7), len(x))
    y = (x - w.mean) @ w.projection
    variances = y.var(axis=0)
    assert variances.max() <= 1.01 and np.allclose(variances[:16], 1.0, rtol=0.1)  # strong axes evened
    assert variances[-1] > 0.05  # the weakest axes are shrunk, not blown up
    assert np.allclose(np.linalg.norm(w.apply(x), axis=1), 1.0, atol=1e-5)
    raw_mean_cos = float((x @ x.T).mean())
    white = w.apply(x)
    assert raw_mean_cos > 0.3 and abs(float((white @ white.T).mean())) < 0.02  # unrelated pairs: ~0


def test_fewer_vectors_than_dimensions_learns_on_the_axes_they_span():
    x = _collection(10, dim=64)
    w = learn([x], len(x))
    assert w.projection.shape[1] <= 9  # no axis of zero variance is blown up
    q = _collection(3, dim=64, seed=9)
    out = w.apply(q)
    assert np.all(np.isfinite(out)) and np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_text_round_trip_keeps_the_matrix_and_version():
    w = learn([_collection(300)], 300)
    back = Whitening.from_text(w.to_text())
    assert back.version == w.version and back.vectors == 300
    assert np.array_equal(back.projection, w.projection) and np.array_equal(back.mean, w.mean)


@pytest.mark.parametrize(
    ("learned_on", "now", "expected"),
    [(None, 199, False), (None, 200, True), (1000, 1400, False), (1000, 1500, True), (1000, 666, True),
     (1000, 700, False), (1000, 100, False)],
)  # fmt: skip
def test_relearning_policy(learned_on, now, expected):
    assert due(learned_on, now) is expected


def test_learned_state_is_rebuilt_when_the_collection_changes(tmp_path, tf2_model, monkeypatch):
    monkeypatch.setattr(metric, "MIN_VECTORS", 8)
    monkeypatch.setattr(calibration, "AUTO_CALIBRATE", 8)
    monkeypatch.setattr(calibration, "AUTO_SAMPLE", 6)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(9):
        make_photo(i).save(photos / f"p{i}.jpg", quality=92)
    make_photo(3).resize((160, 120)).save(photos / "p9.jpg", quality=70)  # a copy of p3
    index = Index(tmp_path / "index")
    index.add([photos], model=str(tf2_model))
    first = index.manifest()
    assert first.learned["vectors"] == 10 and first.calibration["space"] == metric.PIXELS
    version = first.learned["whitening"]
    assert version is not None
    with index.store() as store:
        learned = store.metric
        ids, raw = store.catalogue.load_vectors(store.catalogue.vector_ids())
        rows = store.catalogue.rows(set(ids.tolist()))
        assert learned is not None and learned.version == version
    # scores are cosines in the whitened space, less PIXEL_WEIGHT x the pixel gap
    hits = index.search([photos / "p3.jpg"], k=3)[0].hits
    me = list(ids).index(hits[0].id)
    cosines = learned.apply(raw) @ learned.apply(raw[[me]])[0]
    gaps = metric.pixel_gaps([rows[hits[0].id].colour] * len(ids), [rows[int(i)].colour for i in ids])
    expected = cosines - metric.PIXEL_WEIGHT * gaps
    assert gaps.max() > 1.0  # the photos differ in colour: the weighing is seen
    assert hits[0].path.endswith("p3.jpg") and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[1].path.endswith("p9.jpg") and hits[1].score > -1.0  # its copy, unclipped
    for h in hits[1:]:  # each pair's own score, under -1 too (the calibration reads it)
        assert h.alone == pytest.approx(min(1.0, expected[list(ids).index(h.id)]), abs=1e-5)
    # the review page's scores between stored images (another kept copy) are the same scores
    assert index.similarities([hits[0].id, hits[1].id])[0, 1] == pytest.approx(hits[1].score, abs=1e-5)
    # ... unless asked as `dupes` scores them (its groups, seen with another copy kept)
    pair = [rows[hits[0].id].colour], [rows[hits[1].id].colour]
    gap = metric.pixel_gaps(*pair, local=True)[0]
    as_dupes = cosines[list(ids).index(hits[1].id)] - metric.PIXEL_WEIGHT * gap
    assert index.similarities([hits[0].id, hits[1].id], dupes=True)[0, 1] == pytest.approx(
        min(as_dupes, 1.0), abs=1e-5
    )

    for i in range(10, 14):  # x1.4: not enough to learn again
        make_photo(i).save(photos / f"p{i}.jpg", quality=92)
    index.add([photos])
    assert index.manifest().learned == first.learned

    for i in range(14, 16):  # x1.6 since learning: learned again, and recalibrated in it
        make_photo(i).save(photos / f"p{i}.jpg", quality=92)
    index.add([photos])
    after = index.manifest()
    assert after.learned["vectors"] == 16
    assert after.learned["whitening"] not in (None, version)
    with index.store() as store:  # the old matrix is dropped, the new one readable
        assert store.catalogue.meta(f"whitening:{version}") is None
        assert store.metric.version == after.learned["whitening"]
    assert after.calibration != first.calibration


def _learned_index(tmp_path, tf2_model, monkeypatch) -> tuple[Index, object]:
    """An index of 10 photos that learned its similarity (thresholds lowered to 8)."""
    monkeypatch.setattr(metric, "MIN_VECTORS", 8)
    monkeypatch.setattr(calibration, "AUTO_CALIBRATE", 8)
    monkeypatch.setattr(calibration, "AUTO_SAMPLE", 6)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(10):
        make_photo(i).save(photos / f"p{i}.jpg", quality=92)
    index = Index(tmp_path / "index")
    index.add([photos], model=str(tf2_model))
    return index, photos


def test_a_space_learned_before_scores_weighed_pixels_is_learned_again(tmp_path, tf2_model, monkeypatch):
    index, photos = _learned_index(tmp_path, tf2_model, monkeypatch)
    with index.store(writable=True) as store:  # as an earlier version left it
        state = store.manifest.calibration
        store.set_learned(store.metric, {**state, "space": "whitened"}, 10)
    assert not Calibration.from_dict(index.manifest().calibration).pixels
    index.add([photos])  # nothing to index; the older learned state is replaced
    assert index.manifest().calibration["space"] == metric.PIXELS
    index.add([photos])
    assert index.manifest().calibration["space"] == metric.PIXELS


def test_a_calibration_from_before_the_detail_residual_weighs_pixels_and_is_learned_again(
    tmp_path, tf2_model, monkeypatch
):
    index, photos = _learned_index(tmp_path, tf2_model, monkeypatch)
    with index.store(writable=True) as store:  # as the version before the detail residual left it
        state = store.manifest.calibration
        store.set_learned(store.metric, {**state, "space": metric.PIXELS_BEFORE_DETAIL}, 10)
    assert Calibration.from_dict(index.manifest().calibration).pixels  # searched with pixel gaps meanwhile
    index.add([photos])  # nothing to index; learned again in today's space
    assert index.manifest().calibration["space"] == metric.PIXELS != metric.PIXELS_BEFORE_DETAIL


def test_a_calibration_whose_made_shots_weighed_otherwise_is_fitted_again(tmp_path, tf2_model, monkeypatch):
    index, photos = _learned_index(tmp_path, tf2_model, monkeypatch)
    assert index.manifest().calibration["shot_weight"] == calibration.SHOT_WEIGHT
    with index.store(writable=True) as store:  # as the version whose shots weighed 1 left it
        state = {k: v for k, v in store.manifest.calibration.items() if k != "shot_weight"}
        store.set_learned(store.metric, {**state, "b": state["b"] - 1.0}, 10)
    fitted = []
    real = calibration.calibrate_store
    monkeypatch.setattr(calibration, "calibrate_store", lambda *a, **k: fitted.append(1) or real(*a, **k))
    index.add([photos])  # nothing to index; fitted again
    again = index.manifest().calibration
    assert again["shot_weight"] == calibration.SHOT_WEIGHT and again["b"] != state["b"] - 1.0
    index.add([photos])  # and not on every run
    assert len(fitted) == 1


def test_failing_to_learn_again_is_not_retried_on_every_run(tmp_path, tf2_model, monkeypatch):
    index, photos = _learned_index(tmp_path, tf2_model, monkeypatch)
    first = index.manifest()
    calls = []

    def refuse(store, embed, sample=0, seed=0):
        calls.append(store.vectors.ntotal)
        raise CalibrationError("the sampled files changed meanwhile")

    monkeypatch.setattr(calibration, "calibrate_store", refuse)
    for i in range(10, 16):  # x1.6: due, and refused
        make_photo(i).save(photos / f"p{i}.jpg", quality=92)
    index.add([photos])
    assert calls == [16]
    after = index.manifest()  # the old state stays in force
    assert after.calibration == first.calibration and after.learned["whitening"] == first.learned["whitening"]
    assert after.learned["tried"] == 16
    make_photo(16).save(photos / "p16.jpg", quality=92)
    index.add([photos])
    assert calls == [16]  # not tried again on the next run ...
    for i in range(17, 24):  # ... but once the collection changed as much again (24 >= 1.5 x 16)
        make_photo(i).save(photos / f"p{i}.jpg", quality=92)
    index.add([photos])
    assert calls == [16, 24]


def test_dupes_against_a_learned_index_scores_as_its_search_does(tmp_path, tf2_model, monkeypatch):
    """`dupes --against ARCHIVE`: scores in the archive's space (its whitening and pixel
    gap, as a search of it gives them), its calibration for --min-probability, and a
    recoloured variant is no copy; the inbox itself has learned nothing."""
    import json

    from PIL import Image
    from typer.testing import CliRunner

    from lookalike.cli import app

    archive, photos = _learned_index(tmp_path, tf2_model, monkeypatch)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    Image.open(photos / "p3.jpg").resize((120, 90)).save(inbox / "smaller.jpg", quality=80)
    rgb = np.asarray(Image.open(photos / "p5.jpg").convert("RGB"))
    Image.fromarray(rgb[..., ::-1]).save(inbox / "recoloured.jpg", quality=92)  # red and blue swapped
    Index(tmp_path / "inbox_ix").add([inbox], model=str(tf2_model))
    assert Index(tmp_path / "inbox_ix").manifest().calibration is None
    expected = Index(archive.directory).search([inbox / "smaller.jpg"], k=1)[0].hits[0]
    res = CliRunner().invoke(app, ["dupes", "--against", str(archive.directory), "--min-probability", "0.5",
                                   "--json", "--index", str(tmp_path / "inbox_ix")])  # fmt: skip
    assert res.exit_code == 0, res.output
    groups = json.loads(res.stdout)["groups"]
    assert [(g["keep"], [d["path"] for d in g["duplicates"]]) for g in groups] == [
        (str(photos / "p3.jpg"), [str(inbox / "smaller.jpg")])
    ]
    assert groups[0]["duplicates"][0]["score"] == pytest.approx(expected.score, abs=1e-4)
    report = tmp_path / "report"  # its probabilities are the archive's, as the scores are
    res = CliRunner().invoke(app, ["dupes", "--against", str(archive.directory), "--html", str(report),
                                   "--index", str(tmp_path / "inbox_ix")])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "P(same photo)" in (report / "index.html").read_text()
    reverse = ["dupes", "--against", str(tmp_path / "inbox_ix"), "--min-probability", "0.5"]
    res = CliRunner().invoke(app, [*reverse, "--index", str(archive.directory)])
    assert res.exit_code == 1 and f"calibrate --index {tmp_path / 'inbox_ix'}`" in res.output, res.output


def test_an_open_index_follows_what_another_process_learned_or_calibrated(tmp_path, tf2_model, monkeypatch):
    """A long-lived Index (the server's) swapped its snapshot only when rows changed: after
    `calibrate` learned a new matrix and dropped the old one, every search failed ("learned
    whitening ... is missing", HTTP 503), and scores stayed those of the old state."""
    index, photos = _learned_index(tmp_path, tf2_model, monkeypatch)
    server = Index(index.directory).open()
    query = str(photos / "p3.jpg")
    before = server.search([query], k=3)[0]
    make_photo(10).save(photos / "p10.jpg", quality=92)
    index.add([photos])  # rows change (not enough to learn again): the server takes a new snapshot
    assert server.info()["learned_on"] == 10
    with Index(index.directory).store(writable=True) as store:  # another process: `calibrate`
        _, raw = store.catalogue.load_vectors(sorted(store.vectors.ids().tolist()))
        new = metric.learn([raw[: len(raw) - 2]], len(raw) - 2)  # learned on other vectors
        store.set_learned(new, {**store.manifest.calibration, "b": store.manifest.calibration["b"] + 1}, 8)
    after = server.search([query], k=3)[0]  # no "whitening is missing"
    assert server.info()["learned_on"] == 8
    assert [h.score for h in after.hits] != [h.score for h in before.hits]
    with Index(index.directory).store(writable=True) as store:
        store.set_calibration({**store.manifest.calibration, "b": 0.0})
    assert server.manifest().calibration["b"] == 0.0
    server.close()
