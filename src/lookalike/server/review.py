"""The duplicate review of ``lookalike serve``: the page at ``/dupes`` and its endpoints.

Everything goes through :class:`lookalike.review.Review` over the service's Index (groups
computed once per index state and paged; actions journalled as the CLI's and undoable);
groups are rendered by :mod:`lookalike.report`, as in the static report. Writes are JSON
POSTs, so the guard's checks hold for them as for every write: the token when one is
set, and no request from another site's page.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from lookalike.errors import InvalidArgument
from lookalike.report import group_html
from lookalike.review import MAX_PAGE, Decision, GroupView, Review
from lookalike.server.inputs import media_type, read_json
from lookalike.storage import FileRow

if TYPE_CHECKING:
    from lookalike.server.app import Service

STATIC = {"lookalike.css": "text/css", "review.js": "text/javascript", "search.js": "text/javascript"}
MAX_DECISIONS = 5000


def _thumb(row: FileRow) -> str:
    return f"/images/{row.id}/thumbnail"


def _full(row: FileRow) -> str:
    return f"/images/{row.id}"


def render(view: GroupView) -> str:
    return group_html(view, _thumb, _full, interactive=True)


def web_file(name: str) -> str:
    return resources.files("lookalike.web").joinpath(name).read_text(encoding="utf-8")


async def _json_body(request: Request) -> dict:
    if media_type(request) != "application/json":
        raise HTTPException(415, "send application/json")
    return await read_json(request)


def opened_elsewhere(request: Request) -> bool:
    """Whether a page was navigated to from another site's page (Fetch Metadata; the
    Referer for browsers without it): such a page is shown with its actions off, since
    the other page can aim the user's next key or click at it."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("cross-site", "same-site")
    referer = request.headers.get("referer")
    return referer is not None and urlsplit(referer).netloc.lower() != request.headers.get("host", "").lower()


def router(svc: Service) -> APIRouter:
    """The review's routes (and the pages' static files) over ``svc``'s Index."""
    api = APIRouter()
    review = Review(svc.index, svc.write)
    svc.review = review

    @api.get("/dupes", response_class=HTMLResponse, include_in_schema=False)
    def page(request: Request) -> str:
        html = web_file("dupes.html")
        if opened_elsewhere(request):
            html = html.replace("<body>", '<body data-opened="elsewhere">', 1)
        return html

    @api.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        if name not in STATIC:
            raise HTTPException(404, "no such file")
        return Response(web_file(name), media_type=STATIC[name], headers={"Cache-Control": "no-cache"})

    @api.get("/dupes/groups")
    async def groups(
        preset: str = "copies", page: int = Query(1, ge=1, le=10**9), size: int = Query(20, ge=1, le=MAX_PAGE)
    ) -> dict:
        """One page of duplicate groups (computed once per index state and preset): the
        summary, each group as JSON and as the page's HTML."""

        def read() -> dict:
            summary, views = review.page(preset, page, size)
            return {**summary, "groups": [v.to_dict() for v in views], "html": "".join(map(render, views))}

        return await run_in_threadpool(read)

    @api.get("/dupes/groups/{number}")
    async def group(number: int, preset: str = "copies", keep: int | None = None) -> dict:
        """Group ``number`` with image ``keep`` (an id) kept: what differs, what each is to it."""

        def read() -> dict:
            view = review.view(number, keep, preset)
            return {"group": view.to_dict(), "html": render(view)}

        return await run_in_threadpool(read)

    @api.post("/dupes/act")
    async def act(request: Request) -> dict:
        """Act on groups as one undoable step: `{"decisions": [{"number", "members": [ids],
        "keep": id, "action": "trash" | "move" | "ignore"}], "move_to": folder, "preset"}`.
        Files go as `lookalike dupes --trash/--move-to` takes them (same checks, same journal)."""
        body = await _json_body(request)
        raw = body.get("decisions")
        if not isinstance(raw, list) or not 0 < len(raw) <= MAX_DECISIONS:
            raise InvalidArgument(f"decisions must be a list of 1 to {MAX_DECISIONS} decisions")
        decisions = [Decision.parse(d) for d in raw]
        move_to, preset = body.get("move_to"), body.get("preset", "copies")
        if not isinstance(move_to, str | None) or not isinstance(preset, str):
            raise InvalidArgument("move_to and preset must be strings")

        def run() -> dict:
            outcome = review.act(decisions, move_to, preset)
            sections = {n: render(review.view(n, None, preset)) for n in outcome.numbers}
            return {**outcome.to_dict(), "sections": sections}

        async with svc.writes.slot():
            return await run_in_threadpool(run)

    @api.post("/dupes/undo")
    async def undo(request: Request) -> dict:
        """Undo the review's newest step: files put back (and indexed again), pairs forgotten."""
        await _json_body(request)
        async with svc.writes.slot():
            return (await run_in_threadpool(review.undo)).to_dict()

    return api
