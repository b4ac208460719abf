"""Who the service answers: Host names (DNS rebinding), other sites' pages (Origin,
Sec-Fetch-Site), content types, and where the token may be given. Real HTTP over loopback
against the app under uvicorn."""

from __future__ import annotations

import json

import httpx
from typer.testing import CliRunner

from lookalike.cli import app as cli_app
from lookalike.server import ServerConfig
from tests.conftest import jpeg_bytes
from tests.live import Hostile, live_app, serve_bytes


def _an_id(base: str) -> int:
    r = httpx.post(f"{base}/search", files={"image": ("q.jpg", jpeg_bytes(0))}, data={"k": "1"})
    return r.json()["results"][0]["id"]


def test_host_must_name_this_server(index):
    """A DNS-rebinding page reaches the server with its own name in Host: 421 for all."""
    with live_app(ServerConfig(index=index)) as base:
        port = base.rsplit(":", 1)[1]
        image_id = _an_id(base)
        evil = {"Host": f"rebind.evil.example:{port}"}
        assert httpx.get(f"{base}/stats", headers=evil).status_code == 421
        assert httpx.get(f"{base}/images/{image_id}", headers=evil).status_code == 421
        assert httpx.get(f"{base}/images/{image_id}/thumbnail", headers=evil).status_code == 421
        r = httpx.post(f"{base}/search", files={"image": ("q.jpg", jpeg_bytes(0))}, headers=evil)
        assert r.status_code == 421
        assert httpx.delete(f"{base}/images/{image_id}", headers=evil).status_code == 421
        assert httpx.get(f"{base}/images/{image_id}").status_code == 200  # not deleted
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
            assert httpx.get(f"{base}/stats", headers={"Host": host}).status_code == 200, host
        for host in ("127.0.0.1:1", "localhost", "", "127.0.0.1:8000@evil.example", "evil.example"):
            assert httpx.get(f"{base}/stats", headers={"Host": host}).status_code == 421, host
    cfg = ServerConfig(index=index, allowed_hosts=["photos.example", "proxy.example:8443"])
    with live_app(cfg) as base:
        ok = ("photos.example", f"photos.example:{port}", "proxy.example:8443")
        for host in ok:
            assert httpx.get(f"{base}/stats", headers={"Host": host}).status_code == 200, host
        assert httpx.get(f"{base}/stats", headers={"Host": "proxy.example"}).status_code == 421
    with live_app(ServerConfig(index=index, host="0.0.0.0")) as base:  # a wildcard listen address
        port = base.rsplit(":", 1)[1]
        assert httpx.get(f"{base}/stats", headers={"Host": f"192.168.1.7:{port}"}).status_code == 200
        assert httpx.get(f"{base}/stats", headers={"Host": f"nas.evil.example:{port}"}).status_code == 421
    res = CliRunner().invoke(cli_app, ["serve", "--index", str(index), "--allowed-host", "a/b"])
    assert res.exit_code == 1 and "not a host name" in res.output


def test_other_sites_pages_cannot_write_or_fetch(index, photo_dir):
    """A cross-site text/plain form whose body is JSON, a no-cors multipart POST /index, a
    DELETE from another origin: refused before anything is fetched or written."""
    with Hostile(serve_bytes((photo_dir / "photo0.jpg").read_bytes())) as canary:
        cfg = ServerConfig(index=index, allow_private_urls=True)  # only the site checks stand guard
        with live_app(cfg) as base:
            image_id = _an_id(base)
            body = json.dumps({"url": f"{canary.url}/p.jpg", "k": 1})
            cross = {
                "Origin": "https://evil.example",
                "Sec-Fetch-Site": "cross-site",
                "Sec-Fetch-Mode": "no-cors",
            }
            search = f"{base}/search"
            r = httpx.post(search, content=body, headers={**cross, "Content-Type": "text/plain"})
            assert r.status_code == 403
            for kind in ("text/plain", "application/x-www-form-urlencoded", ""):  # and without any Origin
                r = httpx.post(search, content=body, headers={"Content-Type": kind})
                assert r.status_code == 415, kind
            r = httpx.post(search, content=body, headers={**cross, "Content-Type": "application/json"})
            assert r.status_code == 403
            assert canary.seen == []  # nothing was fetched
            upload = {"image": ("x.jpg", jpeg_bytes(77))}
            assert httpx.post(f"{base}/index", files=upload, headers=cross).status_code == 403
            same_site = {"Origin": f"http://localhost:{canary.port}", "Sec-Fetch-Site": "same-site"}
            assert httpx.post(f"{base}/index", files=upload, headers=same_site).status_code == 403
            assert httpx.post(f"{base}/index", files=upload, headers={"Origin": "null"}).status_code == 403
            assert httpx.delete(f"{base}/images/{image_id}", headers=cross).status_code == 403
            assert httpx.get(f"{base}/stats").json()["files"] == 8  # nothing written, nothing deleted
            embedded = {
                "Sec-Fetch-Site": "cross-site",
                "Sec-Fetch-Mode": "no-cors",
                "Sec-Fetch-Dest": "image",
            }
            assert httpx.get(f"{base}/images/{image_id}", headers=embedded).status_code == 403
            link = {
                "Sec-Fetch-Site": "cross-site",
                "Sec-Fetch-Mode": "navigate",
                "Sec-Fetch-Dest": "document",
            }
            assert httpx.get(f"{base}/images/{image_id}", headers=link).status_code == 200

            own = {"Origin": base, "Sec-Fetch-Site": "same-origin"}  # the server's own page
            r = httpx.post(f"{base}/search", json={"url": f"{canary.url}/p.jpg", "k": 1}, headers=own)
            assert r.status_code == 200 and len(canary.seen) == 1
            r = httpx.post(f"{base}/search", files={"image": ("q.jpg", jpeg_bytes(0))}, headers=own)
            assert r.status_code == 200
            r = httpx.post(f"{base}/index", files=upload)  # a script without Origin (curl, Python)
            assert r.status_code == 201
            assert httpx.delete(f"{base}/images/{r.json()['id']}", headers=own).status_code == 200


def test_token_only_in_the_header_except_on_image_urls(index):
    with live_app(ServerConfig(index=index, token="s3cret")) as base:
        auth = {"Authorization": "Bearer s3cret"}
        image_id = _an_id_with(base, auth)
        for path in ("/openapi.json", "/stats", "/no-such-page"):
            assert httpx.get(f"{base}{path}").status_code == 401, path
            assert httpx.get(f"{base}{path}?token=s3cret").status_code == 401, path
        assert httpx.get(f"{base}/openapi.json", headers=auth).status_code == 200
        for path in ("/docs", "/redoc"):  # no pages running a CDN's scripts in this origin
            assert httpx.get(f"{base}{path}", headers=auth).status_code == 404
        r = httpx.post(f"{base}/search?token=s3cret", files={"image": ("q.jpg", jpeg_bytes(0))})
        assert r.status_code == 401
        assert httpx.delete(f"{base}/images/{image_id}?token=s3cret").status_code == 401
        assert httpx.get(f"{base}/images/{image_id}?token=s3cret").status_code == 200  # <img src>
        assert httpx.get(f"{base}/images/{image_id}/thumbnail?token=s3cret").status_code == 200
        assert httpx.get(f"{base}/images/{image_id}?token=wrong").status_code == 401
        assert httpx.get(f"{base}/").status_code == 200 and httpx.get(f"{base}/healthz").status_code == 200


def _an_id_with(base: str, headers: dict) -> int:
    upload = {"image": ("q.jpg", jpeg_bytes(0))}
    r = httpx.post(f"{base}/search", files=upload, data={"k": "1"}, headers=headers)
    return r.json()["results"][0]["id"]


def test_review_page_opened_by_another_site_is_marked_and_no_page_keeps_a_handle(index):
    """Another site's page can open /dupes (a navigation is never refused) and aim the
    user's next key or click at it: the page is then marked, and its script keeps its
    actions off (tests/test_browser_review.py). No page that opens ours keeps a handle."""
    with live_app(ServerConfig(index=index)) as base:
        port = base.rsplit(":", 1)[1]
        navigate = {"Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}
        marked = '<body data-opened="elsewhere">'
        sites = (("cross-site", True), ("same-site", True), ("same-origin", False), ("none", False))
        for site, expect in sites:
            r = httpx.get(f"{base}/dupes", headers={**navigate, "Sec-Fetch-Site": site})
            assert r.status_code == 200 and (marked in r.text) is expect, site
            assert r.headers["cross-origin-opener-policy"] == "same-origin"
        # browsers without Fetch Metadata: the Referer tells
        assert marked in httpx.get(f"{base}/dupes", headers={"Referer": "http://evil.example/x"}).text
        own = {"Referer": f"http://127.0.0.1:{port}/"}
        assert marked not in httpx.get(f"{base}/dupes", headers=own).text
        assert marked not in httpx.get(f"{base}/dupes").text  # typed, a bookmark, a script
        assert httpx.get(f"{base}/stats").headers["cross-origin-opener-policy"] == "same-origin"
