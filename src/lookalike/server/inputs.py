"""What a request may carry, read strictly: bodies by content type, search parameters by
type, images by what decoding them would cost; and the slots that bound work in flight."""

from __future__ import annotations

import io
import json
import math
import os
import re
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

import anyio
from fastapi import HTTPException, Request
from PIL import Image

from lookalike import units
from lookalike.images import ImageTooLarge, bomb_refused, too_large
from lookalike.search import Filters
from lookalike.server.config import ServerConfig

MAX_K = 100
MAX_FORM_FIELDS = 32
_INTEGER = re.compile(r"[+-]?[0-9]{1,12}")
_DECIMAL = re.compile(r"[+-]?([0-9]{1,20}(\.[0-9]{0,20})?|\.[0-9]{1,20})([eE][+-]?[0-9]{1,3})?")


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_upload(request: Request, cfg: ServerConfig) -> tuple[bytes, dict]:
    """Image bytes and the other fields of a multipart upload. The body was capped as it
    arrived (see :mod:`.guard`): nothing beyond the cap was read, let alone spooled."""
    if media_type(request) != "multipart/form-data":
        raise HTTPException(415, "send multipart/form-data with an 'image' file")
    form = await request.form(max_files=1, max_fields=MAX_FORM_FIELDS, max_part_size=64 * 1024)
    upload = form.get("image")
    if upload is None or isinstance(upload, str):
        raise HTTPException(422, "multipart field 'image' (a file) is required")
    data = await upload.read(cfg.max_upload_bytes + 1)
    if len(data) > cfg.max_upload_bytes:
        raise HTTPException(413, f"upload over the {cfg.max_upload_bytes} byte limit")
    fields: dict = {k: v for k, v in form.items() if isinstance(v, str)}
    fields["under"] = [v for v in form.getlist("under") if isinstance(v, str)]  # may repeat
    fields["filename"] = upload.filename or "upload"
    return data, fields


async def read_json(request: Request) -> dict:
    """A JSON object body (capped by :mod:`.guard`; too deep a nesting is a 422)."""
    body = await request.body()
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        raise HTTPException(422, "the body is not valid JSON") from None
    if not isinstance(value, dict):
        raise HTTPException(422, "the JSON body must be an object")
    return value


def _number(fields: dict, name: str, default, kind: type, lo: float, hi: float):
    """``fields[name]`` as an int (JSON integer or decimal digits) or a finite float (JSON
    number or decimal text): never a boolean, and no float taken as an int."""
    raw = fields.get(name)
    if raw is None or raw == "":
        return default
    what = "an integer" if kind is int else "a number"
    value = None
    if isinstance(raw, bool):
        pass
    elif kind is int:
        if isinstance(raw, int):
            value = raw
        elif isinstance(raw, str) and _INTEGER.fullmatch(raw.strip()):
            value = int(raw)
    elif isinstance(raw, int | float) or (isinstance(raw, str) and _DECIMAL.fullmatch(raw.strip())):
        value = float(raw)
    if value is None or not math.isfinite(value):
        raise HTTPException(422, f"{name} must be {what}")
    if not lo <= value <= hi:
        raise HTTPException(422, f"{name} must be between {lo} and {hi}")
    return value


def _date(fields: dict, name: str) -> datetime | None:
    """YYYY-MM-DD or an ISO datetime (local time unless it has an offset), as the CLI's."""
    raw = fields.get(name)
    if raw is None or raw == "":
        return None
    try:
        return datetime.fromisoformat(raw)
    except (TypeError, ValueError):
        raise HTTPException(422, f"{name} must be a date (YYYY-MM-DD) or an ISO datetime") from None


def _folders(raw) -> list[str]:
    """One or more absolute folders (a string, or a list of strings)."""
    if raw is None:
        return []
    values = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else None
    if values is None or len(values) > MAX_FORM_FIELDS or not all(isinstance(v, str) for v in values):
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


_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_SOS, _STANDALONE = 0xDA, frozenset({0x01, *range(0xD0, 0xD8)})


def one_pass_jpeg(data: bytes) -> bool:
    """Whether a JPEG's first scan holds every component of its frame (interleaved), as a
    single-scan baseline file does. A first scan of fewer components (a sequential JPEG
    written one channel at a time) makes libjpeg buffer the whole image's coefficients, as
    for a progressive one. Read from the markers up to that scan; False if they cannot be."""
    at, components = 2, None
    if data[:2] != b"\xff\xd8":
        return False
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return False
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in _STANDALONE:
            at += 2
            continue
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        if marker in _SOF and at + 10 <= len(data):
            components = data[at + 9]
        elif marker == _SOS:
            return at + 4 < len(data) and components is not None and data[at + 4] == components
        at += 2 + length
    return False


def check_pixels(data: bytes, cfg: ServerConfig, side: int) -> None:
    """Refuse, from its header alone, an image whose decoding would cost more pixels than
    the budget: over ``max_megapixels`` at all, or over ``max_decode_megapixels`` as
    decoded. A baseline JPEG of one interleaved scan decodes reduced inside libjpeg (to at
    least ``side``, as :func:`lookalike.images.decode` asks); every other format,
    progressive and multi-scan JPEGs included (their coefficients are buffered whole),
    decodes at full size. Bytes that are no image pass: decoding says why."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
                if width * height <= cfg.max_megapixels * 1e6:
                    if im.format == "JPEG" and not im.info.get("progressive") and one_pass_jpeg(data):
                        im.draft("RGB", (side, side))
                    decoded = im.size[0] * im.size[1]
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(bomb_refused(exc, cfg.max_megapixels)) from None
    except Exception:  # not an image, or a broken one: decode() reports it
        return
    if width * height > cfg.max_megapixels * 1e6:
        raise ImageTooLarge(too_large(width, height, cfg.max_megapixels))
    if decoded > cfg.max_decode_megapixels * 1e6:
        raise ImageTooLarge(
            f"too large to decode: {width}x{height} = {units.megapixels(width, height)} exceeds the "
            f"{cfg.max_decode_megapixels:g} MP limit for this format (baseline JPEGs may be larger)"
        )


class Gate:
    """At most ``size`` requests in a kind of work at once; the others wait up to
    ``wait_s`` seconds for a slot, then get 503 (with Retry-After)."""

    def __init__(self, size: int, wait_s: float, busy: str) -> None:
        self.size, self.wait_s, self.busy = max(1, size), wait_s, busy
        self._slots: anyio.Semaphore | None = None  # made in the serving event loop

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._slots is None:
            self._slots = anyio.Semaphore(self.size)
        slots = self._slots
        acquired = False
        with anyio.move_on_after(self.wait_s):
            await slots.acquire()
            acquired = True
        if not acquired:
            raise HTTPException(503, f"busy: {self.busy}; try again shortly", {"Retry-After": "2"})
        try:
            yield
        finally:
            slots.release()
