"""The endpoints, and the warm state behind them (:class:`Service`)."""

from __future__ import annotations

import errno
import hashlib
import logging
import mimetypes
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import BinaryIO, TypeVar

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from lookalike import descriptors
from lookalike.api import Index
from lookalike.errors import IndexLocked, LookalikeError, ReadOnlyIndex, StoreError
from lookalike.fetch import GENERIC, FetchError, fetch_async
from lookalike.images import ImageError, ImageFile, decode, is_image_name, thumbnail_jpeg
from lookalike.models import load_labels
from lookalike.models.labels import top_k
from lookalike.search import QueryResult
from lookalike.server import review
from lookalike.server.config import HostPolicy, ServerConfig
from lookalike.server.guard import Guard
from lookalike.server.inputs import Gate, check_pixels, media_type, read_json, read_upload, search_params
from lookalike.storage import FileRow

THUMB = 256
MAX_ID = 2**63 - 1  # catalogue ids are 64-bit
T = TypeVar("T")
log = logging.getLogger(__name__)


class Service:
    """The warm state behind the endpoints: the long-lived Index, its model, the gates."""

    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        self.index = Index(cfg.index, runtime=cfg.runtime, db=cfg.db).open(cfg.refresh_interval_s)
        try:
            self.model = self.index.model()  # loaded once; refuses an index without a manifest
            manifest = self.index.manifest()
            self.label_names = load_labels(manifest.labels) if self.model.info.has_labels else None
        except BaseException:
            self.index.close()
            raise
        self.descriptor = descriptors.get_descriptor(manifest.descriptor)
        h, w = self.model.info.input_size
        self.decode_side = int(max(h, w) * self.descriptor.decode_scale)  # what the model needs
        self.fetches = Gate(cfg.max_fetches, cfg.busy_wait_s, "too many URL fetches in progress")
        self.decodes = Gate(cfg.max_decodes, cfg.busy_wait_s, "too many images being decoded")
        self.writes = Gate(1, cfg.write_timeout_s, "another change to the index is being written")
        self.write_lock = threading.Lock()
        self.unsaved = 0  # changes written to the catalogue since the last FAISS checkpoint
        self.thumbs: dict[tuple[int, int], bytes] = {}
        self.review = None  # the duplicate review (lookalike.server.review)

    def search(self, data: bytes, name: str, params: tuple, from_url: bool) -> dict:
        """One query through :meth:`Index.search`, as JSON with image URLs on each hit.
        Whatever is wrong with a fetched image answers as any other fetch failure."""
        k, filters, threshold, min_probability = params
        try:
            check_pixels(data, self.cfg, self.decode_side)
            limit = self.cfg.max_megapixels
            (result,) = self.index.search([data], k, filters, threshold, min_probability, [name], limit)
            if result.problem is not None:
                raise result.problem
        except ImageError as exc:
            if from_url:
                log.info("URL search: fetched bytes not usable: %s", exc)
                raise HTTPException(422, GENERIC) from None
            raise HTTPException(exc.http_status, f"not a usable image: {exc}") from None
        return result_json(result)

    def embed_upload(self, data: bytes) -> tuple:
        """(decoded image, its vector, its labels) of an upload, within the pixel budget."""
        try:
            check_pixels(data, self.cfg, self.decode_side)
            image = decode(data, self.model.info.input_size, self.cfg.max_megapixels, self.descriptor.name)
        except ImageError as exc:
            raise HTTPException(exc.http_status, f"not a usable image: {exc}") from None
        emb = descriptors.embed(self.model, self.descriptor, [image.pixels])
        labels = None
        if emb.scores is not None and self.label_names is not None:
            labels = top_k(emb.scores, self.label_names)
        return image, emb.vectors, labels

    def store_upload(self, data: bytes, filename: str, embedded: tuple) -> tuple[int, Path]:
        """Keep the upload under the index's ``uploads/`` and add it to the catalogue. The
        FAISS checkpoint is not rewritten for it: readers bring theirs up to date from the
        catalogue; a checkpoint is written every ``checkpoint_every`` changes and on shutdown."""
        image, vectors, labels = embedded
        suffix = Path(filename).suffix.lower()
        suffix = suffix if is_image_name(f"x{suffix}") else ".img"
        folder = self.index.directory / "uploads"
        digest = hashlib.sha256(data).hexdigest()
        target = folder / (digest[:32] + suffix)
        try:
            folder.mkdir(exist_ok=True)
            if not target.exists():
                tmp = target.with_suffix(".part")
                tmp.write_bytes(data)
                os.replace(tmp, target)
        except OSError as exc:  # read-only media, a full disk, no permission: said, not a traceback
            if exc.errno == errno.EROFS:
                raise ReadOnlyIndex.on_media(self.index.directory) from None
            raise StoreError(f"cannot keep the upload in {folder}: {exc.strerror or exc}") from None
        st = target.stat()
        known = self.index.file_at(target)
        if known is not None and known.ok and (known.size, known.mtime_ns) == (st.st_size, st.st_mtime_ns):
            return known.id, target  # the same upload again
        record = ImageFile(str(target), st.st_size, st.st_mtime_ns, digest, image=image)

        def add() -> int:
            with self.index.store(writable=True, sync=False) as store:
                return store.catalogue.add([record], np.asarray(vectors, np.float32), labels).added[0]

        return self.write(add), target

    def remove(self, row: FileRow) -> None:
        """Drop an indexed file from the catalogue (and our own copy of an upload)."""

        def drop() -> None:
            with self.index.store(writable=True, sync=False) as store:
                store.catalogue.remove_paths([row.path])

        self.write(drop)
        if Path(row.path).parent == self.index.directory / "uploads":
            Path(row.path).unlink(missing_ok=True)

    def write(self, fn: Callable[[], T]) -> T:
        """Run the write ``fn``, one writer at a time, waiting up to ``write_timeout_s``
        for another process's writer; then refresh (and checkpoint when it is due)."""
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
            self.unsaved += 1
            if self.unsaved >= self.cfg.checkpoint_every:
                self.checkpoint()
        self.index.refresh()  # the next search sees the change at once
        return done

    def checkpoint(self) -> None:
        """Write the FAISS checkpoint for the catalogue's changes (skipped while another
        process writes the index: that writer checkpoints them)."""
        try:
            with self.index.store(writable=True):  # a writable open brings FAISS up to date and saves it
                pass
            self.unsaved = 0
        except IndexLocked:
            pass

    def close(self) -> None:
        try:
            if self.unsaved:
                with self.write_lock:
                    self.checkpoint()
        finally:
            self.index.close()


def result_json(result: QueryResult) -> dict:
    """:meth:`QueryResult.to_dict` (as ``search --json`` prints it), plus image URLs."""
    out = result.to_dict()
    for hit in out["results"]:
        hit.update(image=f"/images/{hit['id']}", thumbnail=f"/images/{hit['id']}/thumbnail")
    return out


def create_app(cfg: ServerConfig) -> FastAPI:
    """The ASGI app for ``cfg.index`` (model and index loaded now)."""
    HostPolicy(cfg)  # a malformed allowed host fails now, not at the first request
    svc = Service(cfg)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(svc.close)

    app = FastAPI(
        title="lookalike",
        summary="Reverse image search: which indexed images look like this one?",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's /docs and /redoc pages load their scripts from a CDN into
        redoc_url=None,  # this origin, where they could read the pages' token: the schema only
    )
    app.state.service = svc
    app.add_middleware(Guard, cfg=cfg)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return resources.files("lookalike.web").joinpath("index.html").read_text(encoding="utf-8")

    app.include_router(review.router(svc))

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/stats")
    def stats() -> dict:
        return svc.index.info()

    @app.post("/search")
    async def search(request: Request) -> dict:
        """Nearest indexed images: multipart `image` upload, or JSON `{"url": ...}` or
        `{"id": <an indexed image's id>}` (`Content-Type: application/json`).

        Optional, as for `lookalike search`: `k` (1-100, default 10), `label`, `under` (one
        or more absolute folders), `since` and `until` (YYYY-MM-DD or ISO datetime, capture
        time else mtime), `threshold` (minimum cosine) and `min_probability` (minimum
        P(same photo), calibrated indexes). The answer is `search --json`'s object for the
        query, each hit with its `image` and `thumbnail` URLs.
        """
        url = None
        kind = media_type(request)
        if kind == "multipart/form-data":
            data, fields = await read_upload(request, cfg)
            name = fields["filename"]
        elif kind == "application/json":
            fields = await read_json(request)
            url, image_id = fields.get("url"), fields.get("id")
            if image_id is not None and url is None:  # search by an indexed image
                if type(image_id) is not int:
                    raise HTTPException(422, "id must be an integer")
                row = await run_in_threadpool(row_or_404, image_id)
                data, name = await run_in_threadpool(Path(row.path).read_bytes), row.path
            elif not isinstance(url, str):
                raise HTTPException(422, "the JSON body must have a 'url' string or an image 'id'")
        else:
            raise HTTPException(415, "send multipart/form-data (an 'image' file) or application/json")
        params = search_params(fields)  # parameters first: no fetch for a bad request
        if url is not None:
            limits = (cfg.max_upload_bytes, cfg.fetch_timeout_s, cfg.allow_private_urls)
            async with svc.fetches.slot():  # a fetch holds no thread, only this slot
                try:
                    data = await fetch_async(url, *limits)
                except FetchError as exc:
                    log.info("URL search refused or failed: %s", exc)
                    raise HTTPException(422, GENERIC) from None
        async with svc.decodes.slot():
            return await run_in_threadpool(svc.search, data, url or name, params, url is not None)

    def open_intact(row: FileRow) -> BinaryIO:
        """``row``'s file opened, if it still holds the bytes indexed (size, mtime and
        SHA-256, read from the open file: a path swapped afterwards for a link elsewhere,
        even one given the same size and mtime, changes nothing), else 404."""
        try:
            f = open(row.path, "rb")  # noqa: SIM115 (the caller closes it)
        except OSError:
            raise HTTPException(404, "no such image in the index") from None
        try:
            st = os.fstat(f.fileno())
            same = (st.st_size, st.st_mtime_ns) == (row.size, row.mtime_ns)
            if same and row.content_hash is not None:
                same = hashlib.file_digest(f, "sha256").hexdigest() == row.content_hash
                f.seek(0)
        except OSError:
            same = False
        if not same:
            f.close()
            raise HTTPException(404, "no such image in the index")
        return f

    def _thumbnail_of_intact(row: FileRow) -> bytes:
        with open_intact(row) as f:
            return thumbnail_jpeg(f, THUMB)

    def row_or_404(image_id: int) -> FileRow:
        """An indexed image whose file is still the one indexed (same size and mtime):
        error rows, and files swapped since (say for a symlink elsewhere), are not served."""
        row = svc.index.file(image_id) if 0 < image_id <= MAX_ID else None
        try:
            st = os.stat(row.path) if row is not None and row.ok else None
        except OSError:
            st = None
        if row is None or st is None or (st.st_size, st.st_mtime_ns) != (row.size, row.mtime_ns):
            raise HTTPException(404, "no such image in the index")
        return row

    @app.get("/images/{image_id}")
    async def image(image_id: int) -> StreamingResponse:
        row = await run_in_threadpool(row_or_404, image_id)
        f = await run_in_threadpool(open_intact, row)  # only files the index holds, as indexed
        return StreamingResponse(
            _chunks(f), media_type=mimetypes.guess_type(row.path)[0] or "application/octet-stream",
            headers={"Content-Length": str(row.size)}, background=BackgroundTask(f.close),
        )  # fmt: skip

    @app.get("/images/{image_id}/thumbnail")
    async def thumbnail(image_id: int) -> Response:
        row = await run_in_threadpool(row_or_404, image_id)
        key = (image_id, row.mtime_ns)
        data = svc.thumbs.get(key)  # (another thread may clear the cache meanwhile)
        if data is None:
            try:
                async with svc.decodes.slot():
                    data = await run_in_threadpool(_thumbnail_of_intact, row)
            except (OSError, ImageError):
                raise HTTPException(404, "image can no longer be read") from None
            if len(svc.thumbs) > 4096:
                svc.thumbs.clear()
            svc.thumbs[key] = data
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.post("/index", status_code=201)
    async def add(request: Request) -> dict:
        """Add an uploaded image to the index (stored under the index's `uploads/`)."""
        data, fields = await read_upload(request, cfg)
        async with svc.decodes.slot():  # usable? checked before anything is written
            embedded = await run_in_threadpool(svc.embed_upload, data)
        async with svc.writes.slot():
            new_id, target = await run_in_threadpool(svc.store_upload, data, fields["filename"], embedded)
        return {"id": new_id, "path": str(target)}

    @app.delete("/images/{image_id}")
    async def remove(image_id: int) -> dict:
        row = await run_in_threadpool(svc.index.file, image_id) if 0 < image_id <= MAX_ID else None
        if row is None:
            raise HTTPException(404, "no such image in the index")
        async with svc.writes.slot():
            await run_in_threadpool(svc.remove, row)
        return {"deleted": image_id}

    @app.exception_handler(LookalikeError)
    async def lookalike_error(_request: Request, exc: LookalikeError) -> JSONResponse:
        """Every typed error answers with its own status (see :mod:`lookalike.errors`)."""
        return JSONResponse({"detail": str(exc)}, status_code=exc.http_status)

    return app


def _chunks(f: BinaryIO, size: int = 1 << 16):
    """An open file's bytes, ``size`` at a time; closed at the end."""
    try:
        while chunk := f.read(size):
            yield chunk
    finally:
        f.close()
