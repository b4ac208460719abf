"""`lookalike serve`: reverse image search over HTTP (FastAPI), with a web page at `/`.

The model and the index are loaded once. Searches run on a snapshot of the index; when
the catalogue's generation moves (this server or a `lookalike index` run added or removed
images), a fresh snapshot is loaded and swapped in, so readers never see a half-applied
change. Writes are serialised: one at a time in this process, and through the index's
file lock with other processes.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import secrets
import threading
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from lookalike.api import Index
from lookalike.fetch import FetchError, fetch
from lookalike.images import DEFAULT_MAX_MEGAPIXELS, is_image_name, thumbnail_jpeg
from lookalike.indexer import IndexOptions
from lookalike.models import load_labels
from lookalike.search import search_vectors
from lookalike.storage import Store, StoreError
from lookalike.storage.schema import STATUS_OK

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


class _Service:
    """The warm state behind the endpoints."""

    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        self.index = Index(cfg.index, runtime=cfg.runtime, db=cfg.db)
        self.model = self.index.model()  # loaded once; refuses an index without a manifest
        self.label_names = load_labels(self.index.manifest().labels) if self.model.info.has_labels else None
        self.write_lock = threading.Lock()
        self.snapshot_lock = threading.Lock()
        self.snapshot = self.index.store()
        self.checked = time.monotonic()
        self.thumbs: dict[tuple[int, int], bytes] = {}

    def current(self) -> Store:
        """A consistent snapshot of the index, refreshed when the catalogue moved on."""
        now = time.monotonic()
        if now - self.checked >= self.cfg.refresh_interval_s:
            with self.snapshot_lock:
                self.checked = now
                if self.snapshot.generation() != self.snapshot.vectors.generation:
                    fresh = self.index.store()  # loads the newest checkpoint + catalogue changes
                    old, self.snapshot = self.snapshot, fresh
                    old.engine.dispose()
        return self.snapshot

    def embed(self, data: bytes) -> np.ndarray:
        vectors, (error,) = self.index.embed([data], self.cfg.max_megapixels)  # as the index was built
        if error:
            status = 413 if error.startswith("too large") else 415
            raise HTTPException(status, f"not a usable image: {error}")
        return vectors

    def write(self, fn):
        """Run ``fn(store)`` with the index open for writing, one writer at a time."""
        deadline = time.monotonic() + self.cfg.write_timeout_s
        with self.write_lock:
            while True:
                try:
                    with self.index.store(writable=True) as store:
                        return fn(store)
                except StoreError as exc:
                    if "another lookalike process" not in str(exc) or time.monotonic() > deadline:
                        raise HTTPException(503, f"index busy: {exc}") from None
                    time.sleep(0.2)


def _hit_json(h) -> dict:
    return {
        "id": h.id,
        "path": h.path,
        "score": round(h.score, 6),
        "width": h.width,
        "height": h.height,
        "labels": [n for n, _ in h.labels],
        "image": f"/images/{h.id}",
        "thumbnail": f"/images/{h.id}/thumbnail",
    }


def create_app(cfg: ServerConfig) -> FastAPI:
    """The ASGI app for ``cfg.index`` (model and index loaded now)."""
    svc = _Service(cfg)
    app = FastAPI(
        title="lookalike",
        summary="Reverse image search: which indexed images look like this one?",
        version="0.1.0",
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
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        fields["filename"] = getattr(upload, "filename", None) or "upload"
        return data, fields

    def number(fields: dict, name: str, default, kind, lo, hi):
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

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return resources.files("lookalike.web").joinpath("index.html").read_text(encoding="utf-8")

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/stats", dependencies=auth)
    def stats() -> dict:
        return svc.current().stats()

    @app.post("/search", dependencies=auth)
    async def search(request: Request) -> dict:
        """Nearest indexed images: multipart `image` upload, or JSON `{"url": ...}`.

        Optional `k` (1-100, default 10) and `threshold` (minimum cosine score).
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
        k = number(fields, "k", 10, int, 1, MAX_K)  # parameters first: no fetch for a bad request
        threshold = number(fields, "threshold", None, float, -1.0, 1.0)
        if url is not None:
            try:  # blocking work goes to the thread pool: the event loop keeps serving
                data = await run_in_threadpool(fetch, url, cfg.max_upload_bytes)
            except FetchError as exc:
                raise HTTPException(422, f"cannot fetch: {exc}") from None

        def run() -> list:
            return search_vectors(svc.current(), svc.embed(data), k)[0]

        hits = await run_in_threadpool(run)
        if threshold is not None:
            hits = [h for h in hits if h.score >= threshold]
        return {"results": [_hit_json(h) for h in hits]}

    def row_or_404(image_id: int):
        """An indexed image whose file is still the one indexed (same size and mtime):
        error rows, and files swapped since (say for a symlink elsewhere), are not served."""
        row = svc.current().catalogue.rows([image_id]).get(image_id)
        try:
            st = os.stat(row.path) if row is not None and row.status == STATUS_OK else None
        except OSError:
            st = None
        if st is None or (st.st_size, st.st_mtime_ns) != (row.size, row.mtime_ns):
            raise HTTPException(404, "no such image in the index")
        return row

    @app.get("/images/{image_id}", dependencies=auth)
    def image(image_id: int) -> FileResponse:
        return FileResponse(row_or_404(image_id).path)  # only paths the index holds

    @app.get("/images/{image_id}/thumbnail", dependencies=auth)
    def thumbnail(image_id: int) -> Response:
        row = row_or_404(image_id)
        key = (image_id, row.mtime_ns)
        if key not in svc.thumbs:
            try:
                data = thumbnail_jpeg(row.path, THUMB)
            except OSError:
                raise HTTPException(404, "image can no longer be read") from None
            if len(svc.thumbs) > 4096:
                svc.thumbs.clear()
            svc.thumbs[key] = data
        else:
            data = svc.thumbs.get(key) or thumbnail_jpeg(row.path, THUMB)  # another thread may clear
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.post("/index", dependencies=auth, status_code=201)
    async def add(request: Request) -> dict:
        """Add an uploaded image to the index (stored under the index's `uploads/`)."""
        data, fields = await read_upload(request)
        await run_in_threadpool(svc.embed, data)  # a usable image? checked before anything is written
        suffix = Path(fields["filename"]).suffix.lower()
        suffix = suffix if is_image_name(f"x{suffix}") else ".img"
        folder = cfg.index / "uploads"
        folder.mkdir(exist_ok=True)
        target = folder / (hashlib.sha256(data).hexdigest()[:32] + suffix)
        if not target.exists():
            tmp = target.with_suffix(".part")
            tmp.write_bytes(data)
            os.replace(tmp, target)

        def store_it(store: Store) -> int:
            from lookalike.indexer.pipeline import index_paths

            index_paths(store, svc.model, [target], IndexOptions(workers=0, label_names=svc.label_names))
            return store.catalogue.known(under=[str(target)])[str(target)].id

        try:
            new_id = await run_in_threadpool(svc.write, store_it)
        except ValueError as exc:  # e.g. a model with labels needs its label list
            raise HTTPException(409, str(exc)) from None
        svc.checked = 0.0  # let the next search see it at once
        return {"id": new_id, "path": str(target)}

    @app.delete("/images/{image_id}", dependencies=auth)
    def remove(image_id: int) -> dict:
        row = svc.current().catalogue.rows([image_id]).get(image_id)
        if row is None:
            raise HTTPException(404, "no such image in the index")
        svc.write(lambda store: store.remove_paths([row.path]))
        if Path(row.path).parent == cfg.index / "uploads":
            Path(row.path).unlink(missing_ok=True)  # our own copy of an upload
        svc.checked = 0.0
        return {"deleted": image_id}

    @app.exception_handler(StoreError)
    async def store_error(_request: Request, exc: StoreError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    return app
