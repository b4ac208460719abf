"""`lookalike serve`: reverse image search over HTTP (FastAPI), with a web page at `/`.

The model and the index are loaded once: one long-lived :class:`~lookalike.api.Index`,
whose read snapshot follows the catalogue's generation (see :meth:`Index.refresh`), so
searches never see a half-applied change. Searches go through :meth:`Index.search`, as
the CLI's do, and are serialised by the same function. Writes are serialised: one at a
time in this process, and through the index's file lock with other processes.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import TypeVar

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from lookalike.api import Index
from lookalike.errors import IndexLocked, LookalikeError
from lookalike.fetch import FetchError, fetch
from lookalike.images import DEFAULT_MAX_MEGAPIXELS, ImageError, is_image_name, thumbnail_jpeg
from lookalike.indexer import IndexOptions
from lookalike.models import load_labels
from lookalike.search import Filters, QueryResult
from lookalike.storage import FileRow

MAX_K = 100
THUMB = 256


@dataclass
class ServerConfig:
    index: Path
    db: str | None = None  # catalogue URL when not the folder's SQLite file
    token: str | None = None
    max_upload_bytes: int = 25 * 1024 * 1024
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS
    runtime: str = "auto"
    write_timeout_s: float = 30.0
    refresh_interval_s: float = 0.5


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


T = TypeVar("T")


class _Service:
    """The warm state behind the endpoints."""

    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        self.index = Index(cfg.index, runtime=cfg.runtime, db=cfg.db).open(cfg.refresh_interval_s)
        try:
            self.model = self.index.model()  # loaded once; refuses an index without a manifest
            labels = self.index.manifest().labels
            self.label_names = load_labels(labels) if self.model.info.has_labels else None
        except BaseException:
            self.index.close()
            raise
        self.write_lock = threading.Lock()
        self.thumbs: dict[tuple[int, int], bytes] = {}

    def check_image(self, data: bytes) -> None:
        """Refuse bytes that are not a usable image (as the index decodes them)."""
        _, (problem,) = self.index.query_vectors([data], self.cfg.max_megapixels)
        if problem is not None:
            raise HTTPException(problem.http_status, f"not a usable image: {problem}")

    def search(
        self,
        data: bytes,
        name: str,
        k: int,
        filters: Filters,
        threshold: float | None,
        min_probability: float | None,
    ) -> dict:
        """One query through :meth:`Index.search`, as JSON with image URLs on each hit."""
        limit = self.cfg.max_megapixels
        (result,) = self.index.search([data], k, filters, threshold, min_probability, [name], limit)
        if result.problem is not None:
            raise HTTPException(result.problem.http_status, f"not a usable image: {result.error}")
        return result_json(result)

    def write(self, fn: Callable[[], T]) -> T:
        """Run the write ``fn`` (which opens the index for writing), one writer at a time,
        waiting up to ``write_timeout_s`` for another process's writer; then refresh."""
        deadline = time.monotonic() + self.cfg.write_timeout_s
        with self.write_lock:
            while True:
                try:
                    done = fn()
                    break
                except IndexLocked as exc:
                    if time.monotonic() > deadline:
                        raise HTTPException(503, f"index busy: {exc}") from None
                    time.sleep(0.2)
        self.index.refresh()  # the next search sees the change at once
        return done


def result_json(result: QueryResult) -> dict:
    """:meth:`QueryResult.to_dict` (as ``search --json`` prints it), plus image URLs."""
    out = result.to_dict()
    for hit in out["results"]:
        hit.update(image=f"/images/{hit['id']}", thumbnail=f"/images/{hit['id']}/thumbnail")
    return out


def _number(fields: dict, name: str, default, kind, lo, hi):
    raw = fields.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except (TypeError, ValueError, OverflowError):
        raise HTTPException(422, f"{name} must be a number") from None
    if not lo <= value <= hi:
        raise HTTPException(422, f"{name} must be between {lo} and {hi}")
    return value


def _date(fields: dict, name: str) -> datetime | None:
    """YYYY-MM-DD or an ISO datetime (local time unless it has an offset), as the CLI's."""
    raw = fields.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = datetime.fromisoformat(raw)
    except (TypeError, ValueError):
        raise HTTPException(422, f"{name} must be a date (YYYY-MM-DD) or an ISO datetime") from None
    return value


def _folders(raw) -> list[str]:
    """One or more absolute folders (a string, or a list of strings)."""
    values = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else None
    if raw is None or values is None or not all(isinstance(v, str) for v in values):
        if raw is None:
            return []
        raise HTTPException(422, "under must be a folder path or a list of them")
    values = [v for v in values if v]
    if not all(os.path.isabs(v) for v in values):
        raise HTTPException(422, "under must be absolute folder paths")
    return [os.path.normpath(v) for v in values]


def search_params(fields: dict) -> tuple[int, Filters, float | None, float | None]:
    """``k``, filters (``label``, ``under``, ``since``, ``until``), ``threshold`` and
    ``min_probability`` of a search request, validated (422 otherwise)."""
    k = _number(fields, "k", 10, int, 1, MAX_K)
    threshold = _number(fields, "threshold", None, float, -1.0, 1.0)
    min_probability = _number(fields, "min_probability", None, float, 0.0, 1.0)
    label = fields.get("label")
    if label is not None and not isinstance(label, str):
        raise HTTPException(422, "label must be a string")
    filters = Filters(
        label=label or None, under=_folders(fields.get("under")), since=_date(fields, "since"),
        until=_date(fields, "until"),
    )  # fmt: skip
    return k, filters, threshold, min_probability


def create_app(cfg: ServerConfig) -> FastAPI:
    """The ASGI app for ``cfg.index`` (model and index loaded now)."""
    svc = _Service(cfg)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        svc.index.close()

    app = FastAPI(
        title="lookalike",
        summary="Reverse image search: which indexed images look like this one?",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.service = svc

    def authorised(request: Request) -> None:
        if not cfg.token:
            return
        header = request.headers.get("authorization", "")
        given = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        given = given or request.query_params.get("token", "")
        if not secrets.compare_digest(given.encode(), cfg.token.encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    auth = [Depends(authorised)]

    async def read_upload(request: Request) -> tuple[bytes, dict]:
        """Image bytes and the other form fields of a multipart upload (size-capped)."""
        declared = int(request.headers.get("content-length") or 0)
        if declared > cfg.max_upload_bytes + 64 * 1024:
            raise HTTPException(413, f"upload over the {cfg.max_upload_bytes} byte limit")
        form = await request.form()
        upload = form.get("image")
        if upload is None or not hasattr(upload, "read"):
            raise HTTPException(422, "multipart field 'image' (a file) is required")
        data = await upload.read(cfg.max_upload_bytes + 1)
        if len(data) > cfg.max_upload_bytes:
            raise HTTPException(413, f"upload over the {cfg.max_upload_bytes} byte limit")
        fields: dict = {k: v for k, v in form.items() if isinstance(v, str)}
        fields["under"] = [v for v in form.getlist("under") if isinstance(v, str)]  # may repeat
        fields["filename"] = getattr(upload, "filename", None) or "upload"
        return data, fields

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return resources.files("lookalike.web").joinpath("index.html").read_text(encoding="utf-8")

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/stats", dependencies=auth)
    def stats() -> dict:
        return svc.index.info()

    @app.post("/search", dependencies=auth)
    async def search(request: Request) -> dict:
        """Nearest indexed images: multipart `image` upload, or JSON `{"url": ...}`.

        Optional, as for `lookalike search`: `k` (1-100, default 10), `label`, `under` (one
        or more absolute folders), `since` and `until` (YYYY-MM-DD or ISO datetime, capture
        time else mtime), `threshold` (minimum cosine) and `min_probability` (minimum
        P(same photo), calibrated indexes). The answer is `search --json`'s object for the
        query, each hit with its `image` and `thumbnail` URLs.
        """
        url = None
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            data, fields = await read_upload(request)
        else:
            try:
                fields = await request.json()
            except ValueError:
                raise HTTPException(422, "send a multipart 'image' upload or JSON {\"url\": ...}") from None
            if not isinstance(fields, dict) or not isinstance(fields.get("url"), str):
                raise HTTPException(422, "JSON body must have a 'url' string")
            url = fields["url"]
        params = search_params(fields)  # parameters first: no fetch for a bad request
        if url is not None:
            try:  # blocking work goes to the thread pool: the event loop keeps serving
                data = await run_in_threadpool(fetch, url, cfg.max_upload_bytes)
            except FetchError as exc:
                raise HTTPException(422, f"cannot fetch: {exc}") from None
        return await run_in_threadpool(svc.search, data, url or fields["filename"], *params)

    def row_or_404(image_id: int) -> FileRow:
        """An indexed image whose file is still the one indexed (same size and mtime):
        error rows, and files swapped since (say for a symlink elsewhere), are not served."""
        row = svc.index.file(image_id)
        try:
            st = os.stat(row.path) if row is not None and row.ok else None
        except OSError:
            st = None
        if row is None or st is None or (st.st_size, st.st_mtime_ns) != (row.size, row.mtime_ns):
            raise HTTPException(404, "no such image in the index")
        return row

    @app.get("/images/{image_id}", dependencies=auth)
    def image(image_id: int) -> FileResponse:
        return FileResponse(row_or_404(image_id).path)  # only paths the index holds

    @app.get("/images/{image_id}/thumbnail", dependencies=auth)
    def thumbnail(image_id: int) -> Response:
        row = row_or_404(image_id)
        key = (image_id, row.mtime_ns)
        data = svc.thumbs.get(key)  # (another thread may clear the cache meanwhile)
        if data is None:
            try:
                data = thumbnail_jpeg(row.path, THUMB)
            except (OSError, ImageError):
                raise HTTPException(404, "image can no longer be read") from None
            if len(svc.thumbs) > 4096:
                svc.thumbs.clear()
            svc.thumbs[key] = data
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.post("/index", dependencies=auth, status_code=201)
    async def add(request: Request) -> dict:
        """Add an uploaded image to the index (stored under the index's `uploads/`)."""
        data, fields = await read_upload(request)
        await run_in_threadpool(svc.check_image, data)  # usable? checked before anything is written
        suffix = Path(fields["filename"]).suffix.lower()
        suffix = suffix if is_image_name(f"x{suffix}") else ".img"
        folder = cfg.index / "uploads"
        folder.mkdir(exist_ok=True)
        target = folder / (hashlib.sha256(data).hexdigest()[:32] + suffix)
        if not target.exists():
            tmp = target.with_suffix(".part")
            tmp.write_bytes(data)
            os.replace(tmp, target)
        options = IndexOptions(workers=0, label_names=svc.label_names)

        def store_it() -> int:
            svc.index.add([target], options=options, calibrate=False)  # no long fit inside a request
            return svc.index.file_at(target).id

        try:
            new_id = await run_in_threadpool(svc.write, store_it)
        except ValueError as exc:  # e.g. a model with labels needs its label list
            raise HTTPException(409, str(exc)) from None
        return {"id": new_id, "path": str(target)}

    @app.delete("/images/{image_id}", dependencies=auth)
    def remove(image_id: int) -> dict:
        row = svc.index.file(image_id)
        if row is None:
            raise HTTPException(404, "no such image in the index")
        svc.write(lambda: svc.index.remove([row.path]))
        if Path(row.path).parent == cfg.index / "uploads":
            Path(row.path).unlink(missing_ok=True)  # our own copy of an upload
        return {"deleted": image_id}

    @app.exception_handler(LookalikeError)
    async def lookalike_error(_request: Request, exc: LookalikeError) -> JSONResponse:
        """Every typed error answers with its own status (see :mod:`lookalike.errors`)."""
        return JSONResponse({"detail": str(exc)}, status_code=exc.http_status)

    return app
