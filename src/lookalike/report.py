"""Duplicate groups as HTML: the markup of a group, shared by the review page of
``lookalike serve`` and the static report of ``lookalike dupes --html``.

Both show each group the same way (:func:`group_html`): the kept copy first and
outlined, every member with its metadata, what differs from the kept copy marked, and
what each duplicate is to it (relation, score, P(same photo), why the other is kept);
the stylesheet is ``lookalike/web/lookalike.css`` for both. The review page adds the
buttons; the static report is read-only and self-contained: the page and its
thumbnails go in one folder that opens from disk anywhere (no server, no scripts, the
stylesheet inlined; only links to the original files point outside it).
"""

from __future__ import annotations

import hashlib
import html
import os
import re
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path

from lookalike.fsutil import printable
from lookalike.images import ImageError, thumbnail_jpeg
from lookalike.render import count
from lookalike.review import FACT_LABELS, GroupView, MemberView, Scoring, group_view
from lookalike.search.duplicates import Group
from lookalike.storage.catalogue import FileRow

THUMB = 360
Link = Callable[[FileRow], str | None]


def stylesheet() -> str:
    """The pages' shared stylesheet."""
    return resources.files("lookalike.web").joinpath("lookalike.css").read_text(encoding="utf-8")


def _e(text: object) -> str:
    return html.escape(printable(str(text)) if isinstance(text, str) else str(text), quote=True)


def _breakable(path: str) -> str:
    """A name or path, escaped, that may break after / _ - and before a dot (not inside words)."""
    return re.sub(r"(?<=[/_-])(?=.)|(?<=.)(?=\.)", "<wbr>", _e(path))


def _similarity(m: MemberView) -> str:
    if m.score is None:
        return "unknown"
    text = f"score {m.score:.3f}"  # the index's score: a cosine, in its learned space less the pixel gap
    if m.probability is not None:
        text += f" · P(same photo) {m.probability:.1%}"
    if m.via:
        text += f" · in the group through {m.via}"
    return text


def _alt(view: GroupView, n: int, m: MemberView) -> str:
    what = "kept copy" if m.kept else f"{m.relation or 'duplicate'}"
    return (
        f"Group {view.number}, image {n} ({what}): {os.path.basename(m.row.path)}, "
        f"{m.facts.resolution} {m.facts.format}"
    )


def _member(view: GroupView, n: int, m: MemberView, thumb: Link, full: Link, interactive: bool) -> str:
    name, folder = os.path.basename(m.row.path), os.path.dirname(m.row.path)
    src = thumb(m.row)
    attr = "data-src" if interactive else "src"
    if src:
        img = f'<img {attr}="{_e(src)}" alt="{_e(_alt(view, n, m))}" loading="lazy" width="320" height="240">'
    else:
        img = f'<p class="hint">{_e(name)} could not be read</p>'
    href = full(m.row)
    target = ' target="_blank" rel="noopener"' if interactive else ""
    picture = f'<a class="thumb" href="{_e(href)}"{target}>{img}</a>' if href else img
    badge = (
        '<span class="badge keep">keep</span>'
        if m.kept
        else f'<span class="badge rel-{_e(m.relation or "copy")}">{_e(m.relation or "duplicate")}</span>'
    )
    rows = []
    for key, label in FACT_LABELS.items():
        differs = key in m.differs
        cls = ' class="differs"' if differs else ""
        note = '<span class="sr-only"> (differs from the kept copy)</span>' if differs else ""
        rows.append(f"<dt>{label}</dt><dd{cls}>{_e(getattr(m.facts, key))}{note}</dd>")
    if not m.kept:
        rows.append(f"<dt>Similarity</dt><dd>{_e(_similarity(m))}</dd>")
        rows.append(f"<dt>Kept because</dt><dd>{_e(m.reason or '')}</dd>")
    actions = ""
    if interactive:
        pressed = "true" if m.kept else "false"
        key = f" <kbd>{n}</kbd>" if n <= 9 else ""
        actions = (
            '<div class="member-actions">'
            f'<button type="button" class="pick" data-id="{m.row.id}" aria-pressed="{pressed}">'
            f"Keep this{key}</button>"
            f'<button type="button" class="compare" data-id="{m.row.id}" data-full="{_e(href or "")}" '
            f'data-name="{_e(name)}">Compare</button></div>'
        )
    return (
        f'<li class="member{" kept" if m.kept else ""}" data-id="{m.row.id}"><div class="member-grid">'
        f'{picture}<div class="member-info"><p class="member-title"><span class="num">{n}</span>{badge}</p>'
        f'<div class="member-where"><p class="name">{_breakable(name)}</p>'
        f'<p class="folder">{_breakable(folder)}</p></div>'
        f'<dl class="facts">{"".join(rows)}</dl>{actions}</div></div></li>'
    )


def group_html(view: GroupView, thumb: Link, full: Link, interactive: bool = False) -> str:
    """One group as an HTML ``<section>``; ``thumb`` and ``full`` give each file's image URLs.

    ``interactive`` adds the review page's buttons (and leaves image URLs in ``data-src``
    for the page to complete with its token).
    """
    n = view.number
    ids = ",".join(str(m.row.id) for m in view.members)
    keep = view.keep
    kept = _breakable(os.path.basename(keep.row.path))
    resolved = " resolved" if view.status else ""
    status = f'<p class="group-status">Done: {_e(view.note)}</p>' if view.status else ""
    members = "".join(
        _member(view, i, m, thumb, full, interactive) for i, m in enumerate(view.members, 1)
    )
    actions = ""
    if interactive and not view.status:
        actions = (
            f'<div class="group-actions" role="group" aria-label="Actions for group {n}">'
            '<button type="button" class="danger" data-act="trash">Trash duplicates <kbd>t</kbd></button>'
            '<button type="button" data-act="move">Move duplicates <kbd>m</kbd></button>'
            '<button type="button" data-act="ignore">Not duplicates <kbd>i</kbd></button>'
            f'<label class="field">Batch <select class="plan" aria-label="Batch decision for group {n}">'
            '<option value="">not reviewed</option><option value="trash">trash duplicates</option>'
            '<option value="move">move duplicates</option><option value="ignore">not duplicates</option>'
            '</select></label><span class="planned" aria-live="polite"></span></div>'
        )
    return (
        f'<section class="group{resolved}" id="group-{n}" data-number="{n}" data-members="{ids}" '
        f'data-keep="{keep.row.id}" data-rules-keep="{view.rules_keep}" tabindex="-1" '
        f'aria-labelledby="group-{n}-title">'
        f'<div class="group-head"><h2 id="group-{n}-title">Group {n}</h2>'
        f"<p>{len(view.members)} images · keeping <span class=\"name\">{kept}</span></p>"
        f"{status}</div><ol class=\"members\">{members}</ol>{actions}</section>"
    )


def _thumb(row: FileRow, folder: Path) -> str | None:
    """Relative path of a JPEG thumbnail of ``row`` (made once), or None if unreadable."""
    name = hashlib.sha1(os.fsencode(f"{row.path}:{row.mtime_ns}")).hexdigest()[:20] + ".jpg"
    target = folder / "thumbs" / name
    if not target.exists():
        try:
            data = thumbnail_jpeg(row.path, THUMB)
        except (ImageError, OSError):
            return None
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return f"thumbs/{name}"


def _file_uri(row: FileRow) -> str | None:
    try:
        return Path(row.path).as_uri()
    except ValueError:
        return None


def page(title: str, body: str, head: str = "", summary: str = "") -> str:
    """A complete page around ``body`` with the shared stylesheet inlined."""
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{stylesheet()}</style>{head}</head><body>"
        f'<header class="top"><h1>{_e(title)}</h1><p class="summary">{summary}</p></header>'
        f"<main>{body}</main></body></html>"
    )


def write_html(
    groups: Sequence[Group], folder: Path, title: str, scoring: Scoring | None = None
) -> Path:
    """Write ``folder/index.html`` (and ``folder/thumbs/``); returns the page's path.
    ``scoring`` adds P(same photo) on a calibrated index."""
    folder.mkdir(parents=True, exist_ok=True)
    scoring = scoring or Scoring((1.0, 1.0))
    total = sum(len(g.duplicates) for g in groups)
    sections = [
        group_html(group_view(n, g, scoring), lambda r: _thumb(r, folder), _file_uri)
        for n, g in enumerate(groups, 1)
    ]
    intro = (
        '<p class="hint">The kept copy of each group is outlined and listed first; what differs '
        "from it is marked ≠. Read-only: act on duplicates with <code>lookalike dupes --trash</code> "
        "or <code>--move-to</code>, or review them in <code>lookalike serve</code> at /dupes.</p>"
    )
    summary = f"{count(len(groups), 'group')}, {count(total, 'duplicate')}"
    out = folder / "index.html"
    out.write_text(page(title, intro + "".join(sections), summary=summary), encoding="utf-8")
    return out
