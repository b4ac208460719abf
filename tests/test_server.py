"""The HTTP service: endpoints, limits, token, no path traversal, concurrent writes."""

from __future__ import annotations

import io
import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from lookalike import Index, IndexOptions
from lookalike.cli import app as cli_app
from lookalike.fetch import GENERIC
from lookalike.server import ServerConfig, create_app
from tests.conftest import make_photo


@pytest.fixture
def served(tmp_path, photo_dir, tf2_model):
    index = tmp_path / "ix"
    Index(index).add([photo_dir], model=str(tf2_model), options=IndexOptions(workers=0))
    return photo_dir, index


def _client(index, **kw) -> TestClient:
    """The app through Starlette's TestClient, as a client of http://127.0.0.1:8000 (the
    Host header must name the server: TestClient's default "testserver" is refused)."""
    app = create_app(ServerConfig(index=index, refresh_interval_s=0.0, **kw))
    return TestClient(app, base_url="http://127.0.0.1:8000")


def _jpeg(seed: int, size=(320, 240)) -> bytes:
    buf = io.BytesIO()
    make_photo(seed, size).save(buf, "JPEG")
    return buf.getvalue()


def test_an_index_on_read_only_media_is_served_for_search_only(photo_dir, tf2_model, read_only_mount):
    source, mount = read_only_mount
    Index(source).add([photo_dir], model=str(tf2_model), options=IndexOptions(workers=0))
    c = _client(mount())
    r = c.post("/search", files={"image": ("q.jpg", (photo_dir / "photo2.jpg").read_bytes())})
    assert r.status_code == 200 and r.json()["results"][0]["score"] > 0.99
    r = c.post("/index", files={"image": ("new.jpg", _jpeg(77))})
    assert r.status_code == 409 and "read-only" in r.json()["detail"], r.text
    r = c.delete("/images/1")
    assert r.status_code == 409 and "can be searched, not changed" in r.json()["detail"], r.text


def test_search_by_upload_finds_the_copy_first(served):
    photos, index = served
    c = _client(index)
    assert c.get("/healthz").json() == {"status": "ok"}
    copy = Image.open(
        photos / "photo3.jpg" if (photos / "photo3.jpg").exists() else photos / "sub" / "photo3.jpg"
    )
    buf = io.BytesIO()
    copy.resize((200, 150)).save(buf, "PNG")
    r = c.post("/search", files={"image": ("q.png", buf.getvalue(), "image/png")}, data={"k": "3"})
    assert r.status_code == 200
    results = r.json()["results"]
    assert len(results) == 3 and results[0]["path"] == str(photos / "sub" / "photo3.jpg")
    assert results[0]["score"] > 0.98 and results[0]["thumbnail"] == f"/images/{results[0]['id']}/thumbnail"
    r = c.post("/search", files={"image": ("q.png", buf.getvalue())}, data={"threshold": "0.99"})
    assert all(h["score"] >= 0.99 for h in r.json()["results"])
    assert c.get("/stats").json()["files"] == 8


def test_search_by_url(served, http_dir):
    photos, index = served
    folder, server = http_dir
    shutil.copy(photos / "photo0.jpg", folder / "p.jpg")
    c = _client(index, allow_private_urls=True)  # the test's server is on loopback
    r = c.post("/search", json={"url": f"{server.url}/p.jpg", "k": 1})
    assert r.status_code == 200 and r.json()["results"][0]["path"] == str(photos / "photo0.jpg")
    r = c.post("/search", json={"url": f"{server.url}/missing.jpg"})
    assert r.status_code == 422 and r.json()["detail"] == GENERIC  # no detail for strangers
    assert c.post("/search", json={"url": "file:///etc/passwd"}).status_code == 422
    assert c.post("/search", json={"nope": 1}).status_code == 422


def test_limits_and_bad_input(served):
    _, index = served
    c = _client(index, max_upload_bytes=200_000, max_megapixels=1.0)
    assert c.post("/search", files={"image": ("x.txt", b"hello")}).status_code == 415
    r = c.post("/search", files={"image": ("x.jpg", b"\0" * 300_000)})
    assert r.status_code == 413
    big = io.BytesIO()
    Image.new("RGB", (1500, 1000)).save(big, "PNG")  # 1.5 MP, small file
    r = c.post("/search", files={"image": ("big.png", big.getvalue())})
    assert r.status_code == 413 and "MP" in r.json()["detail"]
    for k in ("0", "101", "many"):
        assert c.post("/search", files={"image": ("a.jpg", _jpeg(1))}, data={"k": k}).status_code == 422
    r = c.post("/search", data={"k": "3"}, files={"note": ("n.txt", b"x")})
    assert r.status_code == 422  # multipart without an image field
    assert c.post("/search", data={"k": "3"}).status_code == 415  # form-urlencoded: not accepted


def test_images_only_from_the_index(served):
    photos, index = served
    c = _client(index)
    (hit,) = c.post("/search", files={"image": ("a.jpg", (photos / "photo0.jpg").read_bytes())},
                    data={"k": "1"}).json()["results"]  # fmt: skip
    r = c.get(f"/images/{hit['id']}")
    assert r.status_code == 200 and r.content == (photos / "photo0.jpg").read_bytes()
    r = c.get(f"/images/{hit['id']}/thumbnail")
    assert r.headers["content-type"] == "image/jpeg" and max(Image.open(io.BytesIO(r.content)).size) <= 256
    assert c.get("/images/99999").status_code == 404
    for probe in ("/images/..%2F..%2Fetc%2Fpasswd", "/images/%2Fetc%2Fpasswd", "/images/1;/etc/passwd"):
        assert c.get(probe).status_code in (404, 422)


def test_add_and_delete(served):
    _, index = served
    c = _client(index)
    new = _jpeg(500)
    r = c.post("/index", files={"image": ("new photo.jpg", new)})
    assert r.status_code == 201
    new_id, stored = r.json()["id"], r.json()["path"]
    assert stored.startswith(str(index / "uploads")) and stored.endswith(".jpg")
    hits = c.post("/search", files={"image": ("q.jpg", new)}, data={"k": "1"}).json()["results"]
    assert hits[0]["id"] == new_id and hits[0]["score"] > 0.999
    assert c.post("/index", files={"image": ("t.txt", b"text")}).status_code == 415
    assert c.delete(f"/images/{new_id}").json() == {"deleted": new_id}
    hits = c.post("/search", files={"image": ("q.jpg", new)}, data={"k": "1"}).json()["results"]
    assert hits[0]["id"] != new_id and not Path(stored).exists()  # our upload copy is gone too
    assert c.delete(f"/images/{new_id}").status_code == 404


def test_token(served):
    _, index = served
    c = _client(index, token="s3cret")
    assert c.get("/healthz").status_code == 200  # liveness stays open
    assert c.get("/stats").status_code == 401
    assert c.get("/stats", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/stats", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert c.get("/images/1/thumbnail?token=s3cret").status_code == 200
    assert c.post("/search", files={"image": ("a.jpg", _jpeg(1))}).status_code == 401


def test_openapi_and_page(served):
    _, index = served
    c = _client(index)
    paths = c.get("/openapi.json").json()["paths"]
    assert {
        "/search",
        "/index",
        "/stats",
        "/healthz",
        "/images/{image_id}",
        "/images/{image_id}/thumbnail",
    } <= set(paths)
    page = c.get("/")
    assert page.status_code == 200 and 'id="drop"' in page.text and "/search" in page.text


def test_serve_refuses_open_host_without_token(served):
    _, index = served
    res = CliRunner().invoke(cli_app, ["serve", "--host", "0.0.0.0", "--index", str(index)])
    assert res.exit_code == 1 and "needs --token" in res.output


def test_searches_keep_answering_while_another_writer_indexes(served, tmp_path):
    _, index = served
    c = _client(index, write_timeout_s=60)
    more = tmp_path / "more"
    more.mkdir()
    for i in range(60):
        make_photo(1000 + i, (160, 120)).save(more / f"m{i:03d}.jpg")
    failures, seen = [], set()

    def writer():  # a separate writer, like a `lookalike index` run beside the server
        Index(index).add([more], options=IndexOptions(workers=0, batch_size=4))

    t = threading.Thread(target=writer)
    t.start()
    query = _jpeg(1000 + 59, (160, 120))
    while t.is_alive():
        r = c.post("/search", files={"image": ("q.jpg", query)}, data={"k": "1"})
        if r.status_code != 200:
            failures.append(r.status_code)
        else:
            seen.add(r.json()["results"][0]["path"])
        time.sleep(0.01)
    t.join()
    r = c.post("/index", files={"image": ("late.jpg", _jpeg(2000))})  # writes still work after
    assert r.status_code == 201
    hits = c.post("/search", files={"image": ("q.jpg", query)}, data={"k": "1"}).json()["results"]
    assert failures == [] and hits[0]["path"] == str(more / "m059.jpg")
    assert c.get("/stats").json()["files"] == 8 + 60 + 1


def test_only_intact_indexed_files_are_served(tmp_path, photo_dir, tf2_model):
    (photo_dir / "broken.jpg").write_bytes(b"not an image")
    index = tmp_path / "ix"
    Index(index).add([photo_dir], model=str(tf2_model), options=IndexOptions(workers=0))
    from lookalike.storage import Store

    with Store(index) as s:
        known = s.catalogue.known()
    c = _client(index)
    assert c.get(f"/images/{known[str(photo_dir / 'broken.jpg')].id}").status_code == 404  # error row
    swapped = photo_dir / "photo2.jpg"
    assert c.get(f"/images/{known[str(swapped)].id}").status_code == 200
    swapped.unlink()
    os.symlink("/etc/hostname", swapped)  # replaced by a link to something else
    assert c.get(f"/images/{known[str(swapped)].id}").status_code == 404
    bait, secret = photo_dir / "photo4.jpg", tmp_path / "secret.txt"
    r = c.get(f"/images/{known[str(bait)].id}")
    assert r.status_code == 200 and r.content == bait.read_bytes()
    assert r.headers["content-type"] == "image/jpeg" and r.headers["content-length"] == str(len(r.content))
    secret.write_bytes(b"s" * bait.stat().st_size)  # ... even one given the photo's size and mtime
    os.utime(secret, ns=(bait.stat().st_atime_ns, bait.stat().st_mtime_ns))
    bait.unlink()
    os.symlink(secret, bait)
    for url in (f"/images/{known[str(bait)].id}", f"/images/{known[str(bait)].id}/thumbnail"):
        assert c.get(url).status_code == 404
    r = c.post("/search", content=b'{"url": "http://127.0.0.1:9/x", "k": 1e999}',
               headers={"content-type": "application/json"})  # fmt: skip
    assert r.status_code == 422 and "k must be" in r.json()["detail"]


def test_http_and_cli_search_give_the_same_results(served):
    """One search path: POST /search and `search --json` answer with the same objects,
    probabilities included, for the same query and filters."""
    photos, index = served
    Index(index).calibrate(sample=8)  # calibrated: hits carry P(same photo)
    c = _client(index)
    query = photos / "sub" / "photo3.jpg"
    cases = [
        ({"under": [str(photos / "sub")], "since": "2000-01-01", "min_probability": "0"},
         ["--under", photos / "sub", "--since", "2000-01-01", "--min-probability", "0"]),
        ({"under": [str(photos / "sub"), str(photos / "photo0.jpg")], "threshold": "-0.5"},
         ["--under", photos / "sub", "--under", photos / "photo0.jpg", "--threshold", "-0.5"]),
        ({"until": "2999-01-01T00:00:00", "min_probability": "0.5"},
         ["--until", "2999-01-01T00:00:00", "--min-probability", "0.5"]),
    ]  # fmt: skip
    for form, flags in cases:
        r = c.post("/search", files={"image": ("q.jpg", query.read_bytes())}, data={"k": "6", **form})
        assert r.status_code == 200, r.text
        web = r.json()
        res = CliRunner().invoke(cli_app, ["search", str(query), "--json", "-k", "6", "--index", str(index),
                                           *map(str, flags)])  # fmt: skip
        assert res.exit_code == 0, res.output
        cli = json.loads(res.stdout)
        assert web["query"] == "q.jpg" and cli["query"] == str(query)
        for hit in web["results"]:
            assert hit.pop("image") == f"/images/{hit['id']}"
            assert hit.pop("thumbnail") == f"/images/{hit['id']}/thumbnail"
        assert web["results"] == cli["results"] and cli["results"]
        assert all(0.0 <= h["probability"] <= 1.0 for h in cli["results"])
        assert cli["results"][0]["path"] == str(query)
    restricted = [h["path"] for h in web["results"]]
    assert all(h["probability"] >= 0.5 for h in web["results"]) and len(restricted) < 6
    sub_only = c.post("/search", json={"url": "http://127.0.0.1:9/x", "under": "relative/dir"})
    assert sub_only.status_code == 422 and "absolute" in sub_only.json()["detail"]  # checked before any fetch


def test_search_filters_over_http(served):
    photos, index = served
    c = _client(index)
    query = (photos / "photo0.jpg").read_bytes()

    def paths(**form) -> list[str]:
        r = c.post("/search", files={"image": ("q.jpg", query)}, data={"k": "8", **form})
        assert r.status_code == 200, r.text
        return [h["path"] for h in r.json()["results"]]

    assert len(paths()) == 8
    below = paths(under=str(photos / "sub"))
    assert len(below) == 4 and all(p.startswith(str(photos / "sub") + os.sep) for p in below)
    assert paths(under=str(photos / "sub") + "/") == below  # a trailing slash is the same folder
    assert len(paths(under=[str(photos / "sub"), str(photos / "photo0.jpg")])) == 5
    assert paths(since="2999-01-01") == [] and len(paths(until="2999-01-01")) == 8
    assert len(paths(since="2000-01-01T00:00:00+00:00")) == 8  # ISO datetime with an offset
    r = c.post("/search", files={"image": ("q.jpg", query)}, data={"label": "tench"})
    assert r.status_code == 422 and "this index has no labels" in r.text  # a feature-vector model's
    inverted = {"since": "2026-01-01", "until": "2025-01-01"}
    r = c.post("/search", files={"image": ("q.jpg", query)}, data=inverted)
    assert r.status_code == 422 and "is after until" in r.text
    r = c.post("/search", files={"image": ("q.jpg", query)}, data={"threshold": "0.99"})
    assert r.json()["results"] and all(h["score"] >= 0.99 for h in r.json()["results"])
    for bad in ({"since": "yesterday"}, {"until": "2024-13-01"}, {"min_probability": "1.5"},
                {"threshold": "nan"}, {"under": "sub"}):  # fmt: skip
        r = c.post("/search", files={"image": ("q.jpg", query)}, data=bad)
        assert r.status_code == 422, (bad, r.text)
    r = c.post("/search", files={"image": ("q.jpg", query)}, data={"min_probability": "0.9"})
    assert r.status_code == 409 and "no score calibration" in r.json()["detail"]  # typed CalibrationError
    r = c.post("/search", json={"url": "http://127.0.0.1:9/x", "under": ["/a", 3]})
    assert r.status_code == 422
    for odd in ("/tmp/a\\u0000b", "/tmp/\\ud800"):  # were a 500: ValueError, UnicodeEncodeError
        body = '{"url": "http://127.0.0.1:9/x", "under": "' + odd + '"}'  # (JSON escapes, as sent)
        r = c.post("/search", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422 and "under '/tmp/" in r.json()["detail"], r.text


def test_writes_wait_for_another_writer_then_give_up(served):
    """The server retries while another process holds the index's write lock (IndexLocked)."""
    from lookalike.storage import Store

    _, index = served
    c = _client(index, write_timeout_s=0.5)
    with Store(index, writable=True):  # another writer holds the lock
        r = c.post("/index", files={"image": ("a.jpg", _jpeg(700))})
    assert r.status_code == 503 and r.json()["detail"].startswith("index busy")
    c = _client(index, write_timeout_s=30)
    holder = Store(index, writable=True)
    threading.Timer(0.6, holder.close).start()  # released while the request waits
    started = time.monotonic()
    r = c.post("/index", files={"image": ("a.jpg", _jpeg(700))})
    assert r.status_code == 201 and time.monotonic() - started >= 0.5
    hits = c.post("/search", files={"image": ("q.jpg", _jpeg(700))}, data={"k": "1"}).json()["results"]
    assert hits[0]["id"] == r.json()["id"]


def test_search_by_an_indexed_image_and_the_index_summary(served):
    """`{"id": N}` searches by an indexed image (the page's 'search by this result'); ids
    that are not integers or not indexed are refused; /stats says when the index changed."""
    _, index = served
    with _client(index) as c:
        first = c.post("/search", json={"id": 1, "k": 3})
        assert first.status_code == 200, first.text
        body = first.json()
        assert body["query"] == body["results"][0]["path"] and body["results"][0]["relation"] == "exact"
        assert c.post("/search", json={"id": "1"}).status_code == 422
        assert c.post("/search", json={"id": True}).status_code == 422
        assert c.post("/search", json={"id": 10**6}).status_code == 404
        assert c.post("/search", json={}).status_code == 422
        stats = c.get("/stats").json()
        assert stats["last_indexed"].endswith("+00:00") and stats["files"] == 8
