"""Duplicate groups: tiers, no chaining, keep rules, protection, bursts, ignores, reports."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime

import numpy as np
import pytest
from typer.testing import CliRunner

from lookalike import Index
from lookalike.cli import app
from lookalike.images import DecodedImage, ImageFile
from lookalike.models.runtimes import ModelInfo
from lookalike.search import duplicates as dup
from lookalike.search import presets
from lookalike.search.duplicates import KeepRules, find_duplicates
from lookalike.storage import Store

DIM = 16
runner = CliRunner()


def _unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def _near(base, cos, seed):
    """A unit vector with cosine ``cos`` to unit ``base``."""
    rng = np.random.default_rng(seed)
    r = rng.normal(size=base.shape).astype(np.float32)
    r -= r.dot(base) * base
    r = _unit(r)
    return _unit(cos * base + np.sqrt(1 - cos**2) * r)


def _file(path, w=100, h=100, size=1000, h_=None, when=None, camera=("Canon", "X")):
    exif = {"Make": camera[0], "Model": camera[1]} if camera else {}
    img = DecodedImage(np.zeros((2, 2, 3), np.uint8), w, h, "JPEG", exif, when)
    return ImageFile(path, size, 1, h_ or f"hash-{path}", image=img)


def _store(tmp_path, files, vectors):
    info = ModelInfo("m", "id", (2, 2), DIM, (0.0, 1.0), False, "tf")
    with Store(tmp_path / "ix", model=info, writable=True) as s:
        s.add(files, np.stack(vectors))
    return tmp_path / "ix"


def _groups(index, threshold=0.9, rules=None):
    return Index(index).duplicates(threshold, rules)


def _paths(groups):
    return [(g.keep.path, sorted(d.row.path for d in g.duplicates)) for g in groups]


def test_exact_and_near_tiers(tmp_path):
    base = _unit(np.eye(DIM)[0])
    files = [_file("/a.jpg", h_="same"), _file("/b.jpg", h_="same", size=900), _file("/c.jpg", size=800),
             _file("/far.jpg")]  # fmt: skip
    vecs = [base, base, _near(base, 0.95, 1), _unit(np.eye(DIM)[1])]
    groups = _groups(_store(tmp_path, files, vecs))
    assert _paths(groups) == [("/a.jpg", ["/b.jpg", "/c.jpg"])]
    kinds = {d.row.path: (d.kind, round(d.score, 2)) for d in groups[0].duplicates}
    assert kinds == {"/b.jpg": ("exact", 1.0), "/c.jpg": ("near", 0.95)}
    assert _groups(_store(tmp_path / "2", files, vecs), threshold=1.01)[0].duplicates[0].kind == "exact"


def test_no_chaining(tmp_path):
    a = _unit(np.eye(DIM)[0])
    b = _near(a, 0.93, 1)
    c = _near(b, 0.93, 2)  # a~b, b~c, but a and c are further apart
    assert a.dot(c) < 0.9
    files = [_file("/b.jpg", size=3000), _file("/a.jpg", size=2000), _file("/c.jpg", size=1000)]
    groups = _groups(_store(tmp_path, files, [b, a, c]))
    assert _paths(groups) == [("/b.jpg", ["/a.jpg", "/c.jpg"])]  # star around the keeper b
    files = [_file("/a.jpg", size=3000), _file("/b.jpg", size=2000), _file("/c.jpg", size=1000)]
    groups = _groups(_store(tmp_path / "2", files, [a, b, c]))
    # grouped around b, which stands for both (an original between a re-save and a crop); the
    # rules keep a: c passes against b, not against a, and is no longer dropped (issue 14)
    assert _paths(groups) == [("/a.jpg", ["/b.jpg", "/c.jpg"])]
    scores = {d.row.path: d.score for d in groups[0].duplicates}
    assert scores["/b.jpg"] == pytest.approx(float(a.dot(b)), abs=1e-5)  # scored against the keeper
    assert scores["/c.jpg"] == pytest.approx(float(a.dot(c)), abs=1e-5)
    # relations to the kept copy, as its score says; c is in the group as a copy of b, the centre
    assert [(x.relation, x.via) for x in groups[0].duplicates] == [("copy", None), ("similar", "/b.jpg")]
    d = _near(c, 0.93, 3)  # a chain a~b~c~d: one hop from a centre at most, never a with d
    assert a.dot(d) < 0.9 and b.dot(d) < 0.9
    files.append(_file("/d.jpg", size=500))
    groups = _groups(_store(tmp_path / "3", files, [a, b, c, d]))
    assert not any({"/a.jpg", "/d.jpg"} <= {g.keep.path, *(x.row.path for x in g.duplicates)} for g in groups)


def test_keep_rules_and_reasons(tmp_path):
    v = _unit(np.eye(DIM)[0])
    files = [
        _file("/small.jpg", 100, 100, size=9000),
        _file("/big.jpg", 400, 300, size=1000),
        _file("/big_larger_file.jpg", 400, 300, size=2000),
    ]
    (g,) = _groups(_store(tmp_path, files, [v, _near(v, 0.99, 1), _near(v, 0.99, 2)]))
    assert g.keep.path == "/big_larger_file.jpg"
    assert dict(zip([d.row.path for d in g.duplicates], g.reasons, strict=True)) == {
        "/big.jpg": "larger file (2,000 vs 1,000 bytes)",
        "/small.jpg": "larger resolution (400x300 vs 100x100)",
    }
    old, new = datetime(2020, 1, 1), datetime(2021, 1, 1)
    files = [_file("/new.jpg", when=new, camera=None), _file("/old.jpg", when=old, camera=None)]
    (g,) = _groups(_store(tmp_path / "2", files, [v, _near(v, 0.99, 3)]))
    assert g.keep.path == "/old.jpg" and g.reasons == ["older capture time"]


def test_protected_and_preferred_folders(tmp_path):
    v = _unit(np.eye(DIM)[0])
    files = [_file("/archive/a.jpg", 50, 50), _file("/inbox/b.jpg", 500, 500), _file("/inbox/c.jpg", 40, 40)]
    index = _store(tmp_path, files, [v, _near(v, 0.99, 1), _near(v, 0.99, 2)])
    (g,) = _groups(index, rules=KeepRules(protect=["/archive"]))
    assert g.keep.path == "/archive/a.jpg" and g.reasons[0] == "the kept copy is in a protected folder"
    assert "/archive/a.jpg" not in [d.row.path for d in g.duplicates]
    (g,) = _groups(index, rules=KeepRules(protect=["/inbox"]))  # protected files are never removed
    assert all(not d.row.path.startswith("/inbox") for d in g.duplicates)
    (g,) = _groups(index, rules=KeepRules(prefer_folders=["/inbox/c.jpg"]))
    assert g.keep.path == "/inbox/c.jpg" and g.reasons[0] == "the kept copy is in a preferred folder"


def test_burst_guard(tmp_path):
    v = _unit(np.eye(DIM)[0])
    t = datetime(2024, 5, 1, 12, 0, 0)
    files = [_file("/1.jpg", when=t), _file("/2.jpg", when=t.replace(second=3)),
             _file("/3.jpg", when=t.replace(second=5), camera=("Nikon", "Z"))]  # fmt: skip
    index = _store(tmp_path, files, [v, _near(v, 0.97, 1), _near(v, 0.97, 2)])
    assert _paths(_groups(index)) == [("/1.jpg", ["/3.jpg"])]  # same camera, 3 s apart: a burst
    index2 = _store(tmp_path / "2", files, [v, _near(v, 0.999, 1), _near(v, 0.97, 2)])
    assert _paths(_groups(index2)) == [("/1.jpg", ["/2.jpg", "/3.jpg"])]  # pixels say it is a copy


def test_ignored_pairs_persist(tmp_path):
    v = _unit(np.eye(DIM)[0])
    index = _store(tmp_path, [_file("/a.jpg"), _file("/b.jpg")], [v, _near(v, 0.97, 1)])
    res = runner.invoke(app, ["dupes", "--ignore", "/a.jpg", "/b.jpg", "--index", str(index)])
    assert res.exit_code == 0 and "not duplicates" in res.stdout
    assert _groups(index) == []
    res = runner.invoke(app, ["dupes", "--ignore", "/a.jpg", "/nope.jpg", "--index", str(index)])
    assert res.exit_code == 1 and "not in the index" in res.output
    res = runner.invoke(app, ["dupes", "--unignore", "/b.jpg", "/a.jpg", "--index", str(index)])
    assert res.exit_code == 0 and "forgotten" in res.stdout and len(_groups(index)) == 1
    res = runner.invoke(app, ["dupes", "--unignore", "/b.jpg", "/a.jpg", "--index", str(index)])
    assert res.exit_code == 3 and "were not marked" in res.output  # nothing to forget
    res = runner.invoke(app, ["dupes", "--ignore", "/a.jpg", "/b.jpg", "--unignore", "/a.jpg", "/b.jpg"])
    assert res.exit_code == 2 and "choose one of --ignore, --unignore" in res.output


def test_large_collections_use_an_ivf_index(tmp_path, monkeypatch):
    monkeypatch.setattr(dup, "FLAT_LIMIT", 100)
    rng = np.random.default_rng(0)
    base = [_unit(x) for x in rng.normal(size=(400, DIM))]
    vecs = base + [_near(b, 0.98, i) for i, b in enumerate(base[:20])]
    files = [_file(f"/{i:04d}.jpg", size=2000 if i < 400 else 1000) for i in range(len(vecs))]
    groups = _groups(_store(tmp_path, files, vecs), threshold=0.95)
    assert sorted(_paths(groups)) == [(f"/{i:04d}.jpg", [f"/{400 + i:04d}.jpg"]) for i in range(20)]


def test_reports(tmp_path):
    v = _unit(np.eye(DIM)[0])
    index = _store(tmp_path, [_file("/a.jpg", size=2), _file("/b.jpg", size=1)], [v, _near(v, 0.97, 1)])
    res = runner.invoke(app, ["dupes", "--json", "--threshold", "0.9", "--index", str(index)])
    doc = json.loads(res.stdout)
    assert doc == {"groups": [{"keep": "/a.jpg", "duplicates": [
        {"path": "/b.jpg", "score": pytest.approx(0.97, abs=1e-4), "kind": "near", "relation": "copy",
         "via": None, "reason": "larger file (2 vs 1 bytes)"}]}]}  # fmt: skip
    res = runner.invoke(app, ["dupes", "--csv", "--threshold", "0.9", "--index", str(index)])
    rows = list(csv.reader(io.StringIO(res.stdout)))
    assert rows[0] == ["group", "role", "path", "score", "kind", "relation", "reason", "via"]
    assert [r[1:3] for r in rows[1:]] == [["keep", "/a.jpg"], ["duplicate", "/b.jpg"]]
    res = runner.invoke(app, ["dupes", "--index", str(index)])
    assert "1 group, 1 duplicate; preset copies" in res.stdout and "nothing was changed" in res.stdout
    res = runner.invoke(app, ["dupes", "--preset", "nope", "--index", str(index)])
    assert res.exit_code == 2


def test_find_duplicates_on_empty_index(tmp_path):
    info = ModelInfo("m", "id", (2, 2), DIM, (0.0, 1.0), False, "tf")
    with Store(tmp_path, model=info, writable=True) as s:
        assert find_duplicates(s, 0.9) == []


def test_html_report(tmp_path, photo_dir, tf2_model):
    import shutil

    shutil.copy(photo_dir / "photo0.jpg", photo_dir / "copy <0>.jpg")
    index = tmp_path / "ix"
    Index(index).add([photo_dir], model=str(tf2_model))
    out = tmp_path / "report"
    res = runner.invoke(app, ["dupes", "--html", str(out), "--index", str(index)])
    assert res.exit_code == 0 and "report written" in res.output
    page = (out / "index.html").read_text()
    assert page.count('<li class="member') == 2 and "copy &lt;0&gt;.jpg" in page and "exact" in page
    thumbs = list((out / "thumbs").iterdir())
    assert len(thumbs) == 2 and all(f'src="thumbs/{t.name}"' in page for t in thumbs)
    assert "http" not in page  # nothing outside the folder


def test_against_another_index(tmp_path, photo_dir, tf2_model, tf1_feature_module):
    from PIL import Image

    archive, inbox = tmp_path / "archive", tmp_path / "inbox"
    inbox.mkdir()
    import shutil

    shutil.copy(photo_dir / "photo0.jpg", inbox / "same.jpg")
    Image.open(photo_dir / "photo2.jpg").resize((100, 75)).save(inbox / "smaller.jpg")
    make = __import__("tests.conftest", fromlist=["make_photo"]).make_photo
    make(123).save(inbox / "new.jpg")
    Index(archive).add([photo_dir], model=str(tf2_model))
    Index(tmp_path / "inbox_ix").add([inbox], model=str(tf2_model))
    res = runner.invoke(app, ["dupes", "--against", str(archive), "--threshold", "0.98", "--json",
                              "--index", str(tmp_path / "inbox_ix")])  # fmt: skip
    groups = json.loads(res.stdout)["groups"]
    assert {(g["keep"], d["path"], d["kind"]) for g in groups for d in g["duplicates"]} == {
        (str(photo_dir / "photo0.jpg"), str(inbox / "same.jpg"), "exact"),
        (str(photo_dir / "photo2.jpg"), str(inbox / "smaller.jpg"), "near"),
    }
    (tmp_path / "nothing").mkdir()
    Index(tmp_path / "empty").add([tmp_path / "nothing"], model=str(tf2_model))  # an index with no vectors
    empty = ["dupes", "--against", str(tmp_path / "empty"), "--index", str(tmp_path / "inbox_ix")]
    res = runner.invoke(app, empty)
    assert res.exit_code == 3 and "no duplicates" in res.output, res.output  # 3: nothing to act on
    Index(tmp_path / "other_model").add([photo_dir], model=str(tf1_feature_module))
    res = runner.invoke(app, ["dupes", "--against", str(tmp_path / "other_model"), "--index", str(archive)])
    assert res.exit_code == 1 and "cannot be compared" in res.output
    Index(tmp_path / "mirrored").add([photo_dir], model=str(tf2_model), descriptor="mirror")
    res = runner.invoke(app, ["dupes", "--against", str(tmp_path / "mirrored"), "--index", str(archive)])
    assert res.exit_code == 1 and "descriptor 'mirror', this index with 'squash'" in res.output


def test_presets_note_for_unmeasured_models(tmp_path):
    v = _unit(np.eye(DIM)[0])
    index = _store(tmp_path, [_file("/a.jpg"), _file("/b.jpg")], [v, _near(v, 0.97, 1)])
    res = runner.invoke(app, ["dupes", "--index", str(index)])
    assert "presets were measured for MobileNet V1" in res.output  # the test model is not V1
    res = runner.invoke(app, ["dupes", "--threshold", "0.9", "--index", str(index)])
    assert "presets were measured" not in res.output
    assert presets.presets_for("mobilenet_v1_050_160")[1] == "measured"
    assert presets.presets_for("mobilenet_v3_small_100_224")[1] == "unmeasured"


def test_resolve_threshold():
    from lookalike.errors import CalibrationError, InvalidArgument
    from lookalike.search.calibration import Calibration

    v3 = "mobilenet_v3_small_100_224"
    assert presets.resolve_threshold("copies", model_source="mobilenet_v1_050_160") == (
        0.90, "preset copies (0.9)", None)  # fmt: skip
    cutoff, label, note = presets.resolve_threshold("edited", model_source=v3)
    assert (cutoff, label) == (0.85, "preset edited (0.85)") and "measured for MobileNet V1" in note
    exact = presets.resolve_threshold("exact", model_source="mobilenet_v1_050_160")[1]
    assert exact == "preset exact (identical bytes only)"  # not "(1.01)": no cosine reaches it
    assert presets.resolve_threshold("similar", threshold=0.8, model_source=v3) == (
        0.8,
        "threshold 0.8",
        None,
    )
    cal = Calibration(a=30.0, b=-24.0, positives=10, negatives=10, photos=5)  # P = 0.5 at cosine 0.8
    cutoff, label, note = presets.resolve_threshold("copies", model_source=v3, calibration=cal)
    assert cal.probability(cutoff) == pytest.approx(0.999, abs=1e-3) and note is None
    assert label == f"preset copies ({cutoff:g})"
    cutoff, label, note = presets.resolve_threshold(min_probability=0.5, model_source=v3, calibration=cal)
    assert cutoff == pytest.approx(0.8) and label == "P(same photo) >= 0.5 (cosine 0.8)" and note is None
    with pytest.raises(CalibrationError, match="no score calibration yet"):
        presets.resolve_threshold(min_probability=0.5, model_source=v3)
    flat = Calibration(a=10.0, b=-8.0, positives=10, negatives=10, photos=5)  # P = 0.99 at cosine 1.26
    with pytest.raises(CalibrationError, match=r"never reaches 0.99 \(it would take cosine 1.260"):
        presets.resolve_threshold(min_probability=0.99, model_source=v3, calibration=flat)
    from lookalike import render

    assert "0.99 never (cosine 1.26 > 1)" in render.calibration_summary(flat)
    with pytest.raises(InvalidArgument, match="preset must be one of exact, copies, edited, similar"):
        presets.resolve_threshold("nope")
    with pytest.raises(InvalidArgument, match="not both"):
        presets.resolve_threshold(threshold=0.9, min_probability=0.9, calibration=cal)
    with pytest.raises(InvalidArgument, match="strictly between 0 and 1"):
        presets.resolve_threshold(min_probability=1.0, calibration=cal)


def test_keeping_another_copy_in_the_review_leaves_a_member_close_only_to_the_old_one(tmp_path):
    """A member that passes the threshold against the rules' kept copy only is in the
    group through it once a person keeps another: it is not removed while that one goes."""
    from lookalike.actions import _alone
    from lookalike.review import regroup

    a = _unit(np.eye(DIM)[0])
    b = _near(a, 0.95, 1)
    e = _unit(2 * 0.95 * a - b)  # as close to a, on b's other side: copies of a, not of each other
    assert b.dot(e) < 0.9
    files = [_file(f"/{n}.jpg", size=s) for n, s in (("a", 4000), ("b", 3000), ("e", 2000))]
    [group] = _groups(_store(tmp_path, files, [a, b, e]))
    assert all(x.via is None for x in group.duplicates)
    ids = [group.keep.id, *(x.row.id for x in group.duplicates)]
    vectors = {f.path: v for f, v in zip(files, (a, b, e), strict=True)}
    rows = [group.keep.path, *(x.row.path for x in group.duplicates)]
    sims = np.array([[vectors[p].dot(vectors[q]) for q in rows] for p in rows])
    kept_b = regroup(group, ids[rows.index("/b.jpg")], sims, 0.9)
    vias = {x.row.path: x.via for x in kept_b.duplicates}
    assert vias == {"/a.jpg": None, "/e.jpg": "/a.jpg"}
    going = {x.row.path for x in kept_b.duplicates}
    assert [x.row.path for x in kept_b.duplicates if _alone(x, going)] == ["/e.jpg"]


def test_via_names_a_centre_that_goes_and_carries_through_the_review(tmp_path):
    """``via`` names a centre that is itself a duplicate (it goes); a person who keeps
    another copy in the review keeps it, one who keeps the centre drops it."""
    from lookalike.review import regroup

    a = _unit(np.eye(DIM)[0])
    b = _near(a, 0.93, 1)
    c, d = _near(b, 0.93, 2), _near(b, 0.93, 3)  # copies of b, the centre, not of a (kept)
    assert max(a.dot(c), a.dot(d)) < 0.9
    files = [_file(f"/{n}.jpg", size=s) for n, s in (("a", 4000), ("b", 3000), ("c", 2000), ("d", 1000))]
    index = _store(tmp_path, files, [a, b, c, d])
    [group] = _groups(index)
    vias = {x.row.path: x.via for x in group.duplicates}
    assert vias == {"/b.jpg": None, "/c.jpg": "/b.jpg", "/d.jpg": "/b.jpg"}
    ids = {x.row.path: x.row.id for x in group.duplicates}
    sims = np.eye(4)  # the scores do not matter here: no cutoff
    kept_c = regroup(group, ids["/c.jpg"], sims, 0.0)
    vias = {x.row.path: x.via for x in kept_c.duplicates}
    assert vias == {"/a.jpg": None, "/b.jpg": None, "/d.jpg": "/b.jpg"}
    assert all(x.via is None for x in regroup(group, ids["/b.jpg"], sims, 0.0).duplicates)  # the centre kept
    with Store(index, writable=True) as s:  # b is no duplicate of a: it stays, vouching for c and d
        s.catalogue.ignore_pair(files[0].content_hash, files[1].content_hash)
    for g in _groups(index):
        going = {x.row.path for x in g.duplicates}
        assert all(x.via in going for x in g.duplicates if x.via)
