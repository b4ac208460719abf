"""The duplicate review (lookalike.review, /dupes endpoints, the static report): views with
another kept copy, actions journalled as the CLI's and undone, stale pages refused, the
guard in front of every write, 20,000 groups paged without recomputing."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from lookalike import Index, IndexOptions
from lookalike.errors import InvalidArgument, ReviewOutdated
from lookalike.images import DecodedImage, ImageFile
from lookalike.models.runtimes import ModelInfo
from lookalike.report import write_html
from lookalike.review import Decision, Review
from lookalike.server import ServerConfig
from lookalike.storage import Store
from tests.live import live_app


@pytest.fixture
def library(tmp_path, photo_dir, tf2_model):
    """photo0 with an exact copy and a PNG re-encode; photo2 with a recompressed copy."""
    shutil.copy2(photo_dir / "photo0.jpg", photo_dir / "sub" / "exact_copy.jpg")
    Image.open(photo_dir / "photo0.jpg").save(photo_dir / "photo0.png")
    Image.open(photo_dir / "photo2.jpg").save(photo_dir / "photo2_q60.jpg", quality=60)
    index = tmp_path / "ix"
    Index(index).add([photo_dir], model=str(tf2_model), options=IndexOptions(workers=0), calibrate=False)
    return photo_dir, index


def _group_of(review: Review, name: str):
    _, views = review.page("copies", 1, 20)
    return next(v for v in views if any(os.path.basename(m.row.path) == name for m in v.members))


def _decision(view, keep: int, action: str) -> Decision:
    return Decision(view.number, frozenset(m.row.id for m in view.members), keep, action)


def test_another_kept_copy_changes_what_is_shown_not_the_order(library):
    _, index = library
    review = Review(Index(index))
    view = _group_of(review, "photo0.png")
    assert view.members[0].kept and view.members[0].reason is None  # the rules' kept copy first
    other = view.members[-1].row
    chosen = review.view(view.number, other.id)
    assert [m.row.id for m in chosen.members] == [m.row.id for m in view.members]
    assert chosen.keep.row.id == other.id and not chosen.members[0].kept
    assert chosen.members[0].reason == "the rules would keep this one"
    for m in chosen.members:
        if not m.kept:
            assert m.relation in ("exact", "copy") and 0.9 <= m.score <= 1.0
    png = next(m for m in view.members if m.row.path.endswith(".png"))
    assert "format" in png.differs and "size" in png.differs


def test_trash_with_a_chosen_keep_is_journalled_and_undone(library, trash):
    photos, index = library
    idx = Index(index)
    review = Review(idx)
    view = _group_of(review, "photo2_q60.jpg")
    copy = next(m.row for m in view.members if m.row.path.endswith("q60.jpg"))
    outcome = review.act([_decision(view, copy.id, "trash")])
    assert outcome.done == 1 and not (photos / "photo2.jpg").exists() and (photos / "photo2_q60.jpg").exists()
    (journal,) = outcome.journals
    (entry,) = [json.loads(line) for line in Path(journal).read_text().splitlines()]
    assert (entry["action"], entry["path"], entry["keep"]) == ("trash", str(photos / "photo2.jpg"), copy.path)
    assert os.path.basename(journal).startswith("dupes-")  # what `lookalike undo --last` looks for
    assert review.view(view.number).status == "trashed"  # the page's numbering holds
    assert idx.file_at(photos / "photo2.jpg") is None
    assert review.computed == 1  # its own change did not make the groups be computed again
    undone = review.undo()
    assert undone.done == 1 and (photos / "photo2.jpg").exists()
    assert idx.file_at(photos / "photo2.jpg") is not None  # indexed again
    assert any(v.members[0].row.path == str(photos / "photo2.jpg") for v in review.page()[1])
    with pytest.raises(Exception, match="nothing to undo"):
        review.undo()


def test_not_duplicates_are_ignored_pairs_and_undone(library):
    _, index = library
    idx = Index(index)
    review = Review(idx)
    view = _group_of(review, "photo0.png")
    n = len(view.members)
    review.act([_decision(view, view.keep.row.id, "ignore")])
    assert len(idx.ignored_pairs()) == n * (n - 1) // 2 - 1  # the exact copies share one hash
    assert not any("photo0.png" in m.row.path for v in Review(idx).page()[1] for m in v.members)
    review.undo()
    assert idx.ignored_pairs() == set()


def test_a_group_changed_since_the_page_is_refused(library):
    _, index = library
    review = Review(Index(index))
    view = _group_of(review, "photo0.png")
    wrong = Decision(view.number, frozenset({view.keep.row.id, 999}), view.keep.row.id, "trash")
    with pytest.raises(ReviewOutdated):
        review.act([wrong])
    trash, ignore = _decision(view, view.keep.row.id, "trash"), _decision(view, view.keep.row.id, "ignore")
    with pytest.raises(InvalidArgument, match=f"group {view.number} is given more than once"):
        review.act([trash, ignore])  # was done as "2 groups", the second decision on what the first left
    review.act([_decision(view, view.keep.row.id, "ignore")])
    with pytest.raises(ReviewOutdated, match="already"):
        review.act([_decision(view, view.keep.row.id, "ignore")])
    assert all(os.path.exists(m.row.path) for m in view.members)


def test_a_rename_indexed_since_the_page_is_seen(library):
    """A rename re-indexed (same vectors, a new path) makes the groups be computed again:
    the page shows the new name and acting on it works."""
    photos, index = library
    idx = Index(index)
    review = Review(idx)
    _group_of(review, "photo2_q60.jpg")
    (photos / "photo2_q60.jpg").rename(photos / "renamed_q60.jpg")
    report = idx.add([photos], options=IndexOptions(workers=0), calibrate=False)
    assert (report.reused, report.indexed) == (1, 0)
    view = _group_of(review, "renamed_q60.jpg")
    assert review.computed == 2
    assert "1 group not duplicates" in review.act([_decision(view, view.keep.row.id, "ignore")]).message


def test_an_action_that_skipped_every_file_says_nothing_was_done(library, tmp_path):
    """It said "1 group trashed; 2 skipped" with nothing trashed."""
    photos, index = library
    review = Review(Index(index))
    view = _group_of(review, "photo2_q60.jpg")
    os.rename(view.keep.row.path, tmp_path / "away")  # the kept copy is gone: nothing may go
    outcome = review.act([_decision(view, view.keep.row.id, "trash")])
    assert outcome.done == 0 and outcome.message.startswith("nothing trashed in 1 group; 1 skipped: ")
    assert (photos / "photo2_q60.jpg").exists()


def test_moving_needs_an_absolute_folder(library, tmp_path):
    photos, index = library
    review = Review(Index(index))
    view = _group_of(review, "photo2_q60.jpg")
    for bad in (None, "relative/dir", str(photos / "photo4.jpg"), "/tmp/a\x00b", "/tmp/\ud800"):
        with pytest.raises(InvalidArgument, match=r"absolute destination|is a file|NUL|surrogate"):
            review.act([_decision(view, view.keep.row.id, "move")], bad)
    assert (photos / "photo2_q60.jpg").exists()


@pytest.mark.slow
def test_20000_groups_are_computed_once_and_paged_fast(tmp_path):
    """40,000 synthetic vectors in 20,000 pairs: the groups are computed once; pages anywhere
    in them then come without computing again."""
    dim, n = 32, 20_000
    rng = np.random.default_rng(0)
    base = rng.normal(size=(n, dim)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    near = base + rng.normal(size=(n, dim)).astype(np.float32) * 0.01
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    img = DecodedImage(np.zeros((1, 1, 3), np.uint8), 400, 300, "JPEG")
    files = [ImageFile(f"/nowhere/{i:05d}-{k}.jpg", 1000 + k, 1, f"{i:05d}{k}", image=img) for k in (0, 1)
             for i in range(n)]  # fmt: skip
    info = ModelInfo("synthetic", "synthetic", (1, 1), dim, (0.0, 1.0), False, "tf")
    with Store(tmp_path / "ix", model=info, writable=True) as store:
        store.add(files, np.concatenate([base, near]))
    review = Review(Index(tmp_path / "ix"))
    started = time.perf_counter()
    summary, views = review.page("copies", 1, 20)
    first = time.perf_counter() - started
    assert summary["total"] >= n * 0.99 and len(views) == 20  # (a few random pairs lie close)
    started = time.perf_counter()
    for page in (2, 500, 1000):
        summary, views = review.page("copies", page, 20)
        assert len(views) == 20 and views[0].number == (page - 1) * 20 + 1
    later = (time.perf_counter() - started) / 3
    print(f"20,000 groups: first page {first:.2f} s (computing them), later pages {later * 1000:.0f} ms")
    assert review.computed == 1 and later < 0.5


def test_review_writes_obey_the_guard(library):
    """Every review write refuses another site's page and wants the token; the page and
    its static files are open (they hold no data)."""
    photos, index = library
    cfg = ServerConfig(index=index, token="s3cret")
    auth = {"Authorization": "Bearer s3cret"}
    with live_app(cfg) as base:
        for path in ("/dupes", "/static/lookalike.css", "/static/review.js", "/static/search.js"):
            assert httpx.get(base + path).status_code == 200, path
        assert httpx.get(base + "/static/api.py").status_code == 404
        assert httpx.get(base + "/dupes/groups").status_code == 401
        data = httpx.get(base + "/dupes/groups", headers=auth).json()
        missing = httpx.get(base + "/dupes/groups/999", headers=auth)
        assert missing.status_code == 404 and "no group 999" in missing.text  # not "has changed": 409
        for number in (0, -1):  # were a 500: the count was never set below 1
            below = httpx.get(base + f"/dupes/groups/{number}", headers=auth)
            assert below.status_code == 404 and f"no group {number}: there are" in below.text
        group = next(g for g in data["groups"] if any(m["path"].endswith("q60.jpg") for m in g["members"]))
        ids = [m["id"] for m in group["members"]]
        decision = {"number": group["number"], "members": ids, "keep": ids[0], "action": "move"}
        body = {"decisions": [decision], "move_to": str(photos.parent / "aside")}
        evil = {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}
        for path, payload in (("/dupes/act", body), ("/dupes/undo", {})):
            assert httpx.post(base + path, json=payload).status_code == 401
            assert httpx.post(base + path, json=payload, headers={**auth, **evil}).status_code == 403
            plain = {**auth, "Content-Type": "text/plain"}
            assert httpx.post(base + path, content=json.dumps(payload), headers=plain).status_code == 415
        page_fetch = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"}
        assert httpx.get(base + "/dupes/groups", headers={**auth, **page_fetch}).status_code == 403
        assert (photos / "photo2_q60.jpg").exists()  # nothing was moved
        same = {"Origin": base, "Sec-Fetch-Site": "same-origin"}
        done = httpx.post(base + "/dupes/act", json=body, headers={**auth, **same})
        assert done.status_code == 200 and done.json()["done"] == 1, done.text
        assert not (photos / "photo2_q60.jpg").exists()
        assert 'class="group resolved"' in next(iter(done.json()["sections"].values()))
        again = httpx.post(base + "/dupes/act", json=body, headers={**auth, **same})
        assert again.status_code == 409
        undone = httpx.post(base + "/dupes/undo", json={}, headers={**auth, **same})
        assert undone.status_code == 200 and (photos / "photo2_q60.jpg").exists()


def test_static_report_has_the_review_layout_read_only(library, tmp_path):
    _, index = library
    groups = Index(index).duplicates(0.9)
    page = write_html(groups, tmp_path / "report", "duplicates")
    text = page.read_text()
    assert "<script" not in text and "<button" not in text  # read-only, no scripts
    assert ".members" in text and 'lang="en"' in text and 'name="viewport"' in text  # the shared stylesheet
    assert text.count('<section class="group"') == len(groups)
    assert 'alt=""' not in text and "Group 1, image 1 (kept copy)" in text
    assert "src=\"thumbs/" in text and all((tmp_path / "report" / "thumbs").iterdir())
    one = write_html(groups[:1], tmp_path / "one", "duplicates").read_text()
    n = len(groups[0].duplicates)
    assert f"1 group, {n} duplicate{'s' if n > 1 else ''}<" in one  # not "1 groups"
