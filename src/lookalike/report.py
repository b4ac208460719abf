"""A static HTML page for duplicate groups: thumbnails side by side, scores, reasons.

The page and its thumbnails go in one folder that opens from disk anywhere: no server,
no scripts, no files outside it referenced.
"""

from __future__ import annotations

import hashlib
import html
import os
from collections.abc import Sequence
from pathlib import Path

from lookalike.fsutil import printable
from lookalike.images import ImageError, thumbnail_jpeg
from lookalike.search.duplicates import Group
from lookalike.storage.catalogue import FileRow

THUMB = 240

_CSS = """
body{font:14px system-ui,sans-serif;margin:24px;background:#fafafa;color:#222}
h1{font-size:20px} .group{background:#fff;border:1px solid #ddd;border-radius:8px;margin:16px 0;padding:12px}
.row{display:flex;gap:12px;flex-wrap:wrap} figure{margin:0;width:250px}
figure img{width:240px;height:240px;object-fit:contain;background:#eee;border-radius:4px}
figcaption{font-size:12px;word-break:break-all} .keep{outline:3px solid #2a7;border-radius:6px}
.kind{font-weight:bold} .exact{color:#a40} .near{color:#06c} .missing{color:#999}
"""


def _thumb(row: FileRow, folder: Path) -> str | None:
    """Relative path of a JPEG thumbnail of ``row`` (made once), or None if unreadable."""
    name = hashlib.sha1(os.fsencode(f"{row.path}:{row.mtime_ns}")).hexdigest()[:20] + ".jpg"
    target = folder / "thumbs" / name
    if not target.exists():
        try:
            data = thumbnail_jpeg(row.path, THUMB)
        except ImageError:
            return None
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return f"thumbs/{name}"


def _figure(row: FileRow, folder: Path, caption: str, keep: bool = False) -> str:
    src = _thumb(row, folder)
    img = f'<img loading="lazy" src="{src}" alt="">' if src else '<div class="missing">unreadable</div>'
    size = f"{row.width}x{row.height}, {row.size / 1e6:.2f} MB"
    taken = f", taken {row.captured_at:%Y-%m-%d %H:%M:%S}" if row.captured_at else ""
    cls = ' class="keep"' if keep else ""
    return (
        f"<figure{cls}>{img}<figcaption>{caption}<br>{html.escape(printable(row.path))}<br>{size}{taken}"
        "</figcaption></figure>"
    )


def write_html(groups: Sequence[Group], folder: Path, title: str) -> Path:
    """Write ``folder/index.html`` (and ``folder/thumbs/``); returns the page's path."""
    folder.mkdir(parents=True, exist_ok=True)
    total = sum(len(g.duplicates) for g in groups)
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>",
        f"<p>{len(groups)} groups, {total} duplicates. The kept image is outlined in green.</p>",
    ]
    for n, g in enumerate(groups, 1):
        figs = [_figure(g.keep, folder, "<b>keep</b>", keep=True)]
        for d, why in zip(g.duplicates, g.reasons, strict=True):
            caption = (
                f'<span class="kind {d.kind}">{d.relation}</span> score {d.score:.4f}<br>'
                f"kept one wins: {html.escape(why)}"
            )
            figs.append(_figure(d.row, folder, caption))
        parts.append(f'<div class="group"><div>group {n}</div><div class="row">{"".join(figs)}</div></div>')
    parts.append("</body></html>")
    page = folder / "index.html"
    page.write_text("\n".join(parts), encoding="utf-8")
    return page
