"""The duplicate review page and the static report in headless Chromium (Debian's), driven
by Playwright: a review walked on real photos with the keyboard and the mouse, and axe-core
run on every page in light and dark mode, on a desktop and a phone."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from lookalike import Index, IndexOptions
from lookalike.report import write_html
from lookalike.server import ServerConfig
from tests.conftest import SHARED_MODELS, SHARED_PHOTOS, needs_shared
from tests.live import Hostile, live_app, serve_bytes
from tests.test_browser import ARGS, CHROMIUM

playwright = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium (apt-get install chromium)")
AXE = Path(
    os.environ.get("LOOKALIKE_AXE") or Path(__file__).parents[1] / ".ci/node/node_modules/axe-core/axe.min.js"
)
TFLITE = SHARED_MODELS / "mobilenet_v1_100_224_feature_vector_quant.tflite"
UKBENCH = SHARED_PHOTOS / "ukbench-variants" / "base_images"
PARROT = SHARED_PHOTOS / "coral" / "parrot.jpg"
DESKTOP, PHONE = {"width": 1280, "height": 900}, {"width": 390, "height": 844}


@pytest.fixture
def real_library(tmp_path) -> tuple[Path, Path]:
    """Real photos from a camera folder and their copies in an export folder: a PNG
    re-encode, a JPEG recompressed at quality 40, an exact copy and a WebP; two photos
    without copies. Indexed with the real (uint8 TFLite) MobileNet."""
    photos = tmp_path / "photos"
    camera, export = photos / "camera", photos / "export"
    camera.mkdir(parents=True)
    export.mkdir()
    for name in ("ukbench00120", "ukbench08996", "ukbench08976", "ukbench09012", "ukbench09040"):
        shutil.copy2(UKBENCH / f"{name}.jpg", camera / f"{name}.jpg")
    shutil.copy2(PARROT, camera / "parrot.jpg")
    Image.open(camera / "ukbench00120.jpg").save(export / "ukbench00120.png")
    Image.open(camera / "ukbench08996.jpg").save(export / "ukbench08996_q40.jpg", quality=40)
    shutil.copy2(camera / "ukbench08976.jpg", export / "ukbench08976 copy.jpg")
    Image.open(camera / "parrot.jpg").save(export / "parrot.webp")
    index = tmp_path / "ix"
    Index(index).add([photos], model=str(TFLITE), options=IndexOptions(workers=0), calibrate=False)
    return photos, index


def _section(page, name: str):
    return page.locator("#groups .group", has=page.locator(".member .name", has_text=name))


def _go_to(page, name: str) -> None:
    """Move the current group to the one holding ``name``, with the j/k keys."""
    target = page.evaluate(
        "(name) => [...document.querySelectorAll('#groups .group')].findIndex((s) =>"
        " [...s.querySelectorAll('.member .name')].some((n) => n.textContent === name))",
        name,
    )
    assert target >= 0, name
    for _ in range(10):
        now = page.evaluate(
            "[...document.querySelectorAll('#groups .group')].findIndex((s) => s.matches('.current'))"
        )
        if now == target:
            return
        page.keyboard.press("j" if now < target else "k")
    raise AssertionError(f"could not reach the group of {name}")


def _wait_status(page, text: str) -> None:
    try:
        page.wait_for_function(
            f"document.getElementById('status').textContent.includes({text!r})", timeout=60_000
        )
    except Exception:
        said = page.locator("#status").inner_text()
        raise AssertionError(f"status never said {text!r}: {said!r}") from None


@needs_shared(TFLITE, UKBENCH, PARROT)
def test_review_walk_on_real_photos(real_library, trash):
    """Pick another kept copy and trash its group, mark one 'not duplicates', apply a
    reviewed group in a batch, trash one more and undo that from the page; then check
    the files, the journals and the ignored pairs."""
    photos, index = real_library
    camera, export = photos / "camera", photos / "export"
    with live_app(ServerConfig(index=index)) as base, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport=DESKTOP)
        page.goto(base + "/")
        page.click("text=Duplicates")
        page.wait_for_selector("#groups .group", timeout=60_000)
        assert page.locator("#groups .group").count() == 4
        assert page.locator("#summary").inner_text().startswith("4 groups · 4 duplicates")
        for section in page.locator("#groups .group").all():  # the kept copy first: the camera's
            assert section.locator(".member").first.get_attribute("class") == "member kept"
            assert section.locator(".member .folder").first.inner_text() == str(camera)

        # side-by-side comparison, zoomed
        _go_to(page, "ukbench00120.png")
        page.keyboard.press("c")
        page.wait_for_selector("dialog#compare[open]")
        page.wait_for_function("document.getElementById('right').naturalWidth > 0")
        page.click("[data-zoom='in']")
        assert page.locator("#right").evaluate("(i) => i.style.width").endswith("px")
        page.keyboard.press("0")  # back to fit
        assert page.locator("#right").evaluate("(i) => i.style.width") == ""
        assert page.locator("#left-name a").get_attribute("href").startswith("/images/")
        page.keyboard.press("Escape")

        # 1. keep the PNG instead (key 2), then trash the group with the mouse
        group_a = _section(page, "ukbench00120.png")
        png_id = group_a.locator(".member", has=page.locator(".name", has_text="ukbench00120.png"))
        png_id = png_id.get_attribute("data-id")
        page.keyboard.press("2")
        page.wait_for_function(f"document.querySelector('.group.current').dataset.keep === {png_id!r}")
        page.wait_for_timeout(1100)  # actions wait a moment after the groups appear (no hurry here)
        assert "the rules would keep this one" in _section(page, "ukbench00120.png").inner_text()
        _section(page, "ukbench00120.png").locator("[data-act=trash]").click()
        _wait_status(page, "1 group trashed (1 file)")
        assert not (camera / "ukbench00120.jpg").exists() and (export / "ukbench00120.png").exists()

        # 2. the parrot and its WebP are not duplicates (key i)
        _go_to(page, "parrot.webp")
        page.keyboard.press("i")
        _wait_status(page, "1 group not duplicates")
        assert "not duplicates" in _section(page, "parrot.webp").locator(".group-status").inner_text()

        # 3. the exact copy: reviewed, then applied with the others reviewed (none)
        _section(page, "ukbench08976 copy.jpg").locator("select.plan").select_option("trash")
        assert page.locator("#apply").inner_text() == "Apply reviewed (1)"
        page.click("#apply")
        _wait_status(page, "1 group trashed (1 file)")
        pair = (camera / "ukbench08976.jpg", export / "ukbench08976 copy.jpg")
        assert len([p for p in pair if p.exists()]) == 1

        # 4. trash the recompressed copy (key t), then undo it from the page (key u)
        _go_to(page, "ukbench08996_q40.jpg")
        page.keyboard.press("t")
        _wait_status(page, "1 group trashed (1 file)")
        assert not (export / "ukbench08996_q40.jpg").exists()
        page.keyboard.press("u")
        _wait_status(page, "undone: group")
        _wait_status(page, "1 file put back")
        assert (export / "ukbench08996_q40.jpg").exists()
        page.wait_for_selector("#groups .group:not(.resolved) >> text=ukbench08996_q40.jpg")  # back
        browser.close()

    trashed = sorted(p.name for p in (trash / "files").iterdir())
    assert trashed[0] == "ukbench00120.jpg" and trashed[1].startswith("ukbench08976") and len(trashed) == 2
    journals = sorted((index / "journals").glob("dupes-*.jsonl"), key=lambda j: j.stat().st_mtime_ns)
    entries = [[json.loads(line) for line in j.read_text().splitlines()] for j in journals]
    assert [[(e["action"], Path(e["path"]).name) for e in es] for es in entries] == [
        [("trash", "ukbench00120.jpg")],
        [("trash", trashed[1])],
        [("trash", "ukbench08996_q40.jpg")],  # undone: the journal stays as the CLI's does
    ]
    assert entries[0][0]["keep"] == str(export / "ukbench00120.png")  # the kept copy picked on the page
    idx = Index(index)
    hashes = {idx.file_at(p).content_hash for p in (camera / "parrot.jpg", export / "parrot.webp")}
    assert idx.ignored_pairs() == {tuple(sorted(hashes))}
    assert idx.file_at(export / "ukbench08996_q40.jpg") is not None  # indexed again
    assert idx.file_at(camera / "ukbench00120.jpg") is None


@needs_shared(TFLITE, UKBENCH, PARROT)
def test_keys_act_on_a_group_on_screen_and_once_when_held(real_library, trash):
    """An undo reloads the groups and kept the page's scroll, but made the first group the
    current one: on a phone, the next `t` trashed a group scrolled out of sight. And a held
    `t` repeats: each repeat trashed the next group."""
    _, index = real_library
    seen = "(s) => { const r = s.getBoundingClientRect(); return r.bottom > 0 && r.top < innerHeight; }"
    with live_app(ServerConfig(index=index)) as base, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport=PHONE)
        page.goto(base + "/dupes")
        page.wait_for_selector("#groups .group", timeout=60_000)
        page.wait_for_timeout(1100)  # (keys act once the page has settled)
        last = page.locator("#groups .group").last.locator(".member .name").first.inner_text()
        _go_to(page, last)
        page.keyboard.press("t")
        _wait_status(page, "1 group trashed")
        page.keyboard.press("u")
        _wait_status(page, "put back")
        assert not page.locator("#groups .group").first.evaluate(seen)  # scrolled down still
        assert page.locator("#groups .group.current").evaluate(seen)
        page.keyboard.down("t")  # held down: the key repeats; the first press acts, the rest do not
        _wait_status(page, "1 group trashed")
        for _ in range(3):
            page.keyboard.down("t")  # (repeat: true)
        page.keyboard.up("t")
        page.wait_for_timeout(1000)
        assert len(list(trash.joinpath("files").iterdir())) == 1
        browser.close()


def _axe(page) -> list[dict]:
    """axe-core's serious and critical violations on the page."""
    page.add_script_tag(path=str(AXE))
    found = page.evaluate(
        """async () => (await axe.run(document, { resultTypes: ["violations"] })).violations
            .map((v) => ({ id: v.id, impact: v.impact, help: v.help,
                           nodes: v.nodes.slice(0, 3).map((n) => n.target.join(" ")) }))"""
    )
    return [v for v in found if v["impact"] in ("serious", "critical")]


@pytest.mark.skipif(not AXE.exists(), reason=f"no axe-core at {AXE} (npm install --prefix .ci/node axe-core)")
def test_pages_pass_axe_light_dark_and_on_a_phone(tmp_path, photo_dir, tf2_model):
    """No serious or critical axe-core violation on the search page (with results), the
    review page (and its comparison) and the static report, in light and dark mode, at desktop and phone
    width. Screenshots of each go to $LOOKALIKE_SCREENSHOTS when it is set."""
    shutil.copy2(photo_dir / "photo0.jpg", photo_dir / "sub" / "exact_copy.jpg")
    Image.open(photo_dir / "photo2.jpg").save(photo_dir / "photo2.png")
    index = tmp_path / "ix"
    idx = Index(index)
    idx.add([photo_dir], model=str(tf2_model), options=IndexOptions(workers=0), calibrate=False)
    report = write_html(idx.duplicates(0.9), tmp_path / "report", "lookalike duplicates")
    shots = Path(os.environ.get("LOOKALIKE_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    problems = {}
    with live_app(ServerConfig(index=index)) as base, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        for size, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
            for scheme in ("light", "dark"):
                context = browser.new_context(viewport=viewport, color_scheme=scheme)
                page = context.new_page()
                page.goto(base + "/")
                page.set_input_files("#file", str(photo_dir / "photo4.jpg"))
                _wait_status(page, "results")
                page.wait_for_function("document.querySelector('.hit img').naturalWidth > 0")
                pages = {"search": page}
                review = context.new_page()
                review.goto(base + "/dupes")
                review.wait_for_selector("#groups .group .member img[src]", timeout=30_000)
                pages["review"] = review
                dialog = context.new_page()  # the side-by-side comparison, open
                dialog.goto(base + "/dupes")
                dialog.wait_for_selector("#groups .group")
                dialog.keyboard.press("c")
                dialog.wait_for_function("document.getElementById('right').naturalWidth > 0")
                pages["compare"] = dialog
                static = context.new_page()
                static.goto(report.as_uri())
                pages["report"] = static
                for name, shown in pages.items():
                    shown.screenshot(path=str(shots / f"{name}-{size}-{scheme}.png"), full_page=True)
                    found = _axe(shown)
                    if found:
                        problems[f"{name} {size} {scheme}"] = found
                context.close()
        browser.close()
    assert not problems, json.dumps(problems, indent=1)


def test_review_page_asks_for_the_token_only_when_needed(tmp_path, photo_dir, tf2_model):
    shutil.copy2(photo_dir / "photo0.jpg", photo_dir / "sub" / "exact_copy.jpg")
    index = tmp_path / "ix"
    Index(index).add([photo_dir], model=str(tf2_model), options=IndexOptions(workers=0), calibrate=False)
    with live_app(ServerConfig(index=index, token="s3cret")) as base, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        page.goto(base + "/dupes")
        _wait_status(page, "needs an access token")
        page.fill("#token", "s3cret")
        page.keyboard.press("Tab")  # change: the groups load with it
        page.wait_for_function("document.querySelector('#groups .member img')?.naturalWidth > 0")
        assert page.locator("#groups .group").count() == 1
        page.goto(base + "/")  # the search page remembers it
        assert page.locator("#token").is_visible()
        page.wait_for_function("document.getElementById('summary').textContent.includes('9 images')")
        browser.close()


def test_review_page_ignores_keys_and_clicks_aimed_by_another_page(tmp_path, photo_dir, tf2_model, trash):
    """Another site's page opens /dupes and asks for a key press or a double click whose
    second half lands on "Trash duplicates": nothing is done on a page another site opened,
    nor in the moment after a page's groups appear; then the user's own key acts."""
    copy = photo_dir / "sub" / "exact_copy.jpg"
    shutil.copy2(photo_dir / "photo0.jpg", copy)
    index = tmp_path / "ix"
    Index(index).add([photo_dir], model=str(tf2_model), options=IndexOptions(workers=0), calibrate=False)
    with live_app(ServerConfig(index=index)) as base, playwright.sync_playwright() as p:
        lure = f'<button id="go" onclick="location.href=\'{base}/dupes\'">Press t four times</button>'
        with Hostile(serve_bytes(lure.encode(), "text/html")) as other:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page()
            page.goto(other.url + "/")  # another port of this host: another origin, same site
            page.click("#go")
            page.wait_for_selector("#groups .group", timeout=60_000)
            assert "Another site opened this page" in page.locator("#elsewhere").inner_text()
            page.wait_for_timeout(1200)
            page.keyboard.press("t")
            page.click("#groups .group button[data-act=trash]")
            _wait_status(page, "Nothing done: another site opened this page")
            assert copy.exists() and (photo_dir / "photo0.jpg").exists()

            page.goto(base + "/dupes")  # typed or a bookmark
            page.wait_for_selector("#groups .group", timeout=60_000)
            assert page.locator("#elsewhere").is_hidden()
            page.click("#groups .group button[data-act=trash]")  # at once: not done
            _wait_status(page, "Nothing done: the page came to the front a moment ago")
            assert copy.exists() and (photo_dir / "photo0.jpg").exists()
            page.wait_for_timeout(1200)
            page.keyboard.press("t")
            _wait_status(page, "trashed")
            page.keyboard.press("u")  # the user's own undo reloads the groups: no wait after it
            _wait_status(page, "file put back")
            assert copy.exists() and (photo_dir / "photo0.jpg").exists()
            page.wait_for_timeout(300)
            page.keyboard.press("t")
            _wait_status(page, "trashed")
            browser.close()
    assert (photo_dir / "photo0.jpg").exists() != copy.exists()  # one of the two went to the trash
