"""The web page, end to end: headless Chromium (Debian's) driven by Playwright, on loopback."""

from __future__ import annotations

import base64
import io
import itertools
import os
import shutil
import socket
import threading
import time

import httpx
import pytest
from PIL import Image

from lookalike import Index, IndexOptions
from lookalike.server import ServerConfig, create_app
from tests.conftest import make_photo
from tests.live import Hostile, live_app, serve_bytes

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium (apt-get install chromium)")
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


@pytest.fixture
def live_server(tmp_path, photo_dir, tf2_model):
    import uvicorn

    index = tmp_path / "ix"
    Index(index).add([photo_dir], model=str(tf2_model), options=IndexOptions(workers=0))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(ServerConfig(index=index, port=port)), host="127.0.0.1",
                                           port=port, log_level="warning"))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", photo_dir
    server.should_exit = True
    thread.join(timeout=10)


def _status_is(page, text: str) -> None:
    script = f"document.getElementById('status').textContent.startsWith({text!r})"
    page.wait_for_function(script, timeout=60_000)


def _first_result(page) -> str:
    page.wait_for_selector(".hit .path", timeout=60_000)
    return page.locator(".hit .path").first.inner_text()


def test_pick_and_drop_an_image_see_its_duplicate_first(live_server, tmp_path):
    url, photos = live_server
    query = tmp_path / "query.png"
    Image.open(photos / "photo4.jpg").resize((240, 180)).save(query)  # an edited copy
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        page.goto(url)
        page.set_input_files("#file", str(query))
        assert _first_result(page) == str(photos / "photo4.jpg")
        assert page.locator(".hit").count() == 8
        score = float(page.locator(".hit .score").first.get_attribute("data-score"))
        assert score > 0.98 and page.locator(".hit .score").first.inner_text().startswith("score ")
        page.wait_for_function("document.querySelector('.hit img').naturalWidth > 0")  # thumbnail
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)

        buf = io.BytesIO()
        Image.open(photos / "sub" / "photo5.jpg").save(buf, "JPEG", quality=70)
        dropped = page.evaluate_handle(
            """(b64) => {
                const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                const dt = new DataTransfer();
                dt.items.add(new File([bytes], "dropped.jpg", { type: "image/jpeg" }));
                return dt;
            }""",
            base64.b64encode(buf.getvalue()).decode(),
        )
        page.dispatch_event("#drop", "drop", {"dataTransfer": dropped})
        page.wait_for_function(
            "document.querySelector('.hit .path')?.textContent.endsWith('photo5.jpg')", timeout=30_000
        )
        browser.close()


def test_on_a_phone_names_break_at_separators_and_a_result_has_a_search_from_this_link(live_server, tmp_path):
    """At phone width on a touch screen: no keyboard hints, no sideways scrolling, tap targets
    44px tall, a result's path breaks only after / _ - or before a dot, and "Search from this"
    searches by that result (a thumbnail click did, told only by a tooltip)."""
    url, photos = live_server  # below pytest's folders, named with _ and -
    phone = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_context(**phone).new_page()
        page.goto(url)
        assert page.get_by_text("Drop an image here").is_hidden() and page.locator("#choose").is_visible()
        page.set_input_files("#file", str(photos / "photo4.jpg"))
        assert _first_result(page) == str(photos / "photo4.jpg")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        text = "(p) => p.innerHTML.split('<wbr>').map((h) => h.replace(/<[^>]*>/g, ''))"
        pieces = page.locator(".hit .path").first.evaluate(text)  # what lies between break chances
        assert "".join(pieces) == str(photos / "photo4.jpg")
        assert all(a[-1:] in "/_-" or b[:1] == "." for a, b in itertools.pairwise(pieces)), pieces
        assert pieces[-2:] == ["photo4", ".jpg"]  # the name breaks before its extension, not inside it
        links = page.locator(".hit .links").nth(1)
        assert links.locator("a").bounding_box()["height"] >= 44
        second = page.locator(".hit .path").nth(1).inner_text()
        link = links.get_by_role("button", name="Search from this image")
        assert link.bounding_box()["height"] >= 44
        link.click()
        _status_is(page, "8 results for " + os.path.basename(second))
        assert _first_result(page) == second
        browser.close()


def test_non_image_shows_an_error(live_server, tmp_path):
    url, _ = live_server
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        page.goto(url)
        page.set_input_files("#file", str(bad))
        page.wait_for_selector("#status.error", timeout=30_000)
        assert "Could not search with “notes.jpg”: not a usable image" in page.locator("#status").inner_text()
        assert page.locator("#query img").count() == 0  # no broken image icon
        page.set_input_files("#file", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"x"}])
        page.wait_for_function("document.getElementById('status').textContent.includes('is not an image')")
        browser.close()


def test_folder_and_date_filters_restrict_the_results(live_server):
    url, photos = live_server
    sub = str(photos / "sub")

    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        page.goto(url)
        page.fill("#under", sub)  # a folder filter, set before choosing the image
        page.set_input_files("#file", str(photos / "photo0.jpg"))
        _status_is(page, "4 results")
        found = page.locator(".hit .path").all_inner_texts()
        assert len(found) == 4 and all(f.startswith(sub + "/") for f in found)
        page.fill("#under", "")
        page.fill("#since", "2999-01-01")  # changing a date searches again
        page.click("#filters button[type=submit]")
        _status_is(page, "0 results")
        assert page.locator(".hit").count() == 0
        page.fill("#since", "")
        page.fill("#until", "2999-01-01")
        page.click("#filters button[type=submit]")
        _status_is(page, "8 results")
        assert _first_result(page) == str(photos / "photo0.jpg")
        browser.close()


def test_another_sites_page_can_neither_search_nor_index(tmp_path, photo_dir, tf2_model):
    """A page of another site posts a text/plain form whose body is JSON (a URL search of
    a loopback canary) and a no-cors multipart POST /index: Chromium sends them, the
    server refuses both (403), nothing is fetched and nothing is indexed."""
    index = tmp_path / "ix"
    Index(index).add([photo_dir], model=str(tf2_model), options=IndexOptions(workers=0))
    buf = io.BytesIO()
    make_photo(31).save(buf, "JPEG")
    cfg = ServerConfig(index=index, allow_private_urls=True)  # only the site checks stand guard
    with Hostile(serve_bytes((photo_dir / "photo0.jpg").read_bytes())) as canary, live_app(cfg) as base:
        field = '{"url": "' + canary.url + '/p.jpg", "k": 1, "x": "'  # the body: {...,"x": "="}
        attack = f"""<!doctype html><title>cute cats</title>
<form id="f" method="POST" enctype="text/plain" action="{base}/search">
  <input type="hidden" name='{field}' value='"}}'></form>
<script>
  const bytes = Uint8Array.from(atob("{base64.b64encode(buf.getvalue()).decode()}"), (c) => c.charCodeAt(0));
  const body = new FormData();
  body.append("image", new Blob([bytes], {{ type: "image/jpeg" }}), "x.jpg");
  fetch("{base}/index", {{ method: "POST", mode: "no-cors", body }})
    .finally(() => document.getElementById("f").submit());
</script>"""
        with Hostile(serve_bytes(attack.encode(), "text/html")) as evil, playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page()
            with page.expect_navigation(url=f"{base}/search", timeout=30_000) as navigation:
                page.goto(f"http://localhost:{evil.port}/")  # another site (localhost vs 127.0.0.1)
            response = navigation.value
            assert response is not None and response.status == 403
            assert "refused" in page.content()
            browser.close()
        assert canary.seen == []  # the text/plain form did not make the server fetch
        assert httpx.get(f"{base}/stats").json()["files"] == 8  # the no-cors upload was not indexed


def test_keyboard_paste_url_and_search_by_a_result(tmp_path, photo_dir, tf2_model):
    """The picker is reached by keyboard, a pasted image and a URL are searched, a result
    is searched by with a click; the page says what the index is and asks for no token
    a loopback server does not need."""
    index = tmp_path / "ix"
    Index(index).add([photo_dir], model=str(tf2_model), options=IndexOptions(workers=0))
    buf = io.BytesIO()
    Image.open(photo_dir / "photo6.jpg").save(buf, "PNG")
    cfg = ServerConfig(index=index, allow_private_urls=True)  # the URL is served on loopback
    served = Hostile(serve_bytes(buf.getvalue(), "image/png"))
    with served as source, live_app(cfg) as base, playwright.sync_playwright() as p:
        image_url = source.url + "/photo6.png"
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        page.on("filechooser", lambda _: None)  # intercept file dialogs from the start, not from the
        page.goto(base)  # keypress on: that race left the dialog the Enter opened unseen, now and then
        page.wait_for_function("document.getElementById('summary').textContent.includes('8 images')")
        assert "model tiny_tf2" in page.locator("#summary").inner_text()
        assert page.locator("#token").is_hidden()
        page.keyboard.press("Tab")  # skip link
        page.keyboard.press("Tab")
        page.keyboard.press("Tab")
        page.keyboard.press("Tab")  # past the two page links: the picker
        assert page.evaluate("document.activeElement.id") == "choose"
        with page.expect_file_chooser() as chooser:
            page.keyboard.press("Enter")
        chooser.value.set_files(str(photo_dir / "sub" / "photo3.jpg"))
        assert _first_result(page) == str(photo_dir / "sub" / "photo3.jpg")

        page.evaluate(
            """(b64) => {
                const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                const dt = new DataTransfer();
                dt.items.add(new File([bytes], "image.png", { type: "image/png" }));
                document.dispatchEvent(new ClipboardEvent("paste", { clipboardData: dt }));
            }""",
            base64.b64encode(buf.getvalue()).decode(),
        )
        page.wait_for_function(
            f"document.querySelector('.hit .path')?.textContent === {str(photo_dir / 'photo6.jpg')!r}"
        )
        page.fill("#url", image_url)
        page.click("#by-url button")
        _status_is(page, "8 results for " + image_url)
        assert _first_result(page) == str(photo_dir / "photo6.jpg")
        meta = page.locator(".hit .meta").first.inner_text()
        assert meta.startswith("copy") or meta.startswith("exact")
        second = page.locator(".hit .path").nth(1).inner_text()
        page.locator(".hit .again").nth(1).click()  # search by the second result
        _status_is(page, "8 results for " + os.path.basename(second))
        assert _first_result(page) == second
        assert page.locator(".hit .meta").first.inner_text().startswith("exact")
        alts = page.locator(".hit img").evaluate_all("(imgs) => imgs.map((i) => i.alt)")
        assert all(a.startswith("Result ") and ".jpg" in a for a in alts)
        browser.close()
