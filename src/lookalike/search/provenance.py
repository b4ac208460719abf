"""What the files of a duplicate group say about where they came from, for the keep rules
(:mod:`lookalike.search.keep`): GPS, JPEG quality, and which files are re-encodes of
another member of the group. Read at decision time from group members only: the GPS and
the JPEG tables come from the headers (no decode); a re-encode is checked by decoding
members of one resolution: a lossless file against the JPEG closest to it (a JPEG's decode
saved losslessly), and a JPEG against the lossy members it would outrank (a JPEG re-saved,
perhaps mirrored or captioned, from another JPEG's or a lossy WebP's decode: see
:func:`lookalike.search.resave.verdict`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
from PIL import ExifTags, Image, ImageOps

from lookalike.search import resave
from lookalike.search.keep import JPEG_FORMATS, LOSSLESS_QUALITY, FileFacts, jpeg_quality, quality
from lookalike.storage.catalogue import FileRow

log = logging.getLogger(__name__)

SAME_PIXELS_EXACT = 0.85  # share of channel values equal: a JPEG's decode saved losslessly
SAME_PIXELS_MEAN = 0.25  # (a JPEG at quality 100 made *from* a lossless file: ~0.70 and ~0.33)
SAME_PIXELS_LEVELS, SAME_PIXELS_TAIL = 2, 0.001  # at most this share differ by more levels: decoders
# of one family round the IDCT differently by a level here and there, while a JPEG made *from* a
# flat rendering (a grayscale 3D scene at q90: 0.92 equal, mean 0.13) misses by 6 levels at 0.1%
CLOSE_COSINE = 0.95  # only members this alike are checked for being each other's re-encode
MAX_COMPARE_MEGAPIXELS = 40.0
CHUNK = 1024  # non-JPEG members scored against the JPEGs of their resolution at a time
RESAVE_TESTS = 12  # re-save checks among the JPEGs of one resolution, at most


def header_facts(path: str) -> FileFacts:
    """GPS, JPEG quality and whether a WebP is lossless from a file's header (nothing when
    it cannot be read), and whether the path is a symbolic link."""
    link = os.path.islink(path)
    try:
        with Image.open(path) as im:
            gps = False
            # a PNG's EXIF after its pixels is found only by decoding them all (Pillow loads the
            # picture for it): 11 of 38 s of `dupes` on bench/lookalikes.py's library; GPS in
            # PNGs is rare, and Pillow and exiftool write it before the pixels
            before_pixels = im.format != "PNG" or "exif" in im.info
            with contextlib.suppress(KeyError, ValueError, TypeError, SyntaxError, OSError):
                gps = before_pixels and bool(im.getexif().get_ifd(ExifTags.IFD.GPSInfo))
            tables = getattr(im, "quantization", None) if im.format in JPEG_FORMATS else None
            lossless = im.format == "WEBP" and _webp_picture(path) == b"VP8L"
            quality = jpeg_quality(tables) if tables else None
            return FileFacts(gps=gps, jpeg_quality=quality, lossless=lossless, link=link)
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError):
        return FileFacts(link=link)


def _pixels(path: str) -> np.ndarray | None:
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_COMPARE_MEGAPIXELS * 1e6:
                return None
            if im.getexif().get(ExifTags.Base.Orientation, 1) != 1:  # else no copy of a 14 MP image
                im = ImageOps.exif_transpose(im)
            if im.mode in ("RGBA", "LA", "PA") and im.getchannel("A").getextrema()[0] < 255:
                return None  # transparency: made from no JPEG
            return np.asarray(im if im.mode == "RGB" else im.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError):
        return None


def lossy_webp(path: str) -> bool:
    """Whether a WebP file holds a lossy (VP8) picture: such a file is no lossless save of
    anything, so it is never decoded to check."""
    return _webp_picture(path) == b"VP8 "


def _webp_picture(path: str) -> bytes | None:
    """The picture chunk of a WebP file (``VP8 ``: lossy, ``VP8L``: lossless), from its
    chunk headers; None for another file or one that cannot be read."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if head[:4] != b"RIFF" or head[8:12] != b"WEBP":
                return None
            while chunk := f.read(8):
                if len(chunk) < 8:
                    return None
                if chunk[:4] in (b"VP8 ", b"VP8L"):
                    return chunk[:4]
                f.seek(int.from_bytes(chunk[4:], "little") + (chunk[4] & 1), 1)  # chunks are padded to even
    except OSError:
        pass
    return None


def same_pixels(a: str, b: str, decoded: dict[str, np.ndarray | None] | None = None) -> bool:
    """Whether two files decode to the same pixels, as a JPEG and a lossless save of its
    decode do (decoders may differ by a level here and there). ``decoded`` keeps ``b``'s
    pixels (one file at a time) for the next call comparing with it."""
    pa = _pixels(a)
    if decoded is not None and b in decoded:
        pb = decoded[b]
    else:
        pb = _pixels(b)
        if decoded is not None:
            decoded.clear()
            decoded[b] = pb
    if pa is None or pb is None or pa.shape != pb.shape:
        return False
    diff = np.abs(pa.astype(np.int16) - pb.astype(np.int16))
    return (
        float((diff == 0).mean()) >= SAME_PIXELS_EXACT
        and float(diff.mean()) <= SAME_PIXELS_MEAN
        and np.count_nonzero(diff > SAME_PIXELS_LEVELS) <= SAME_PIXELS_TAIL * diff.size
    )


def group_facts(members: Sequence[FileRow], vector: Callable[[FileRow], np.ndarray]) -> dict[int, FileFacts]:
    """:class:`FileFacts` of the members of one group (or component), by file id; a
    non-JPEG is a re-encode when its pixels are the decode of the JPEG member of its
    resolution closest to it (``vector`` gives a member's unit vector), and a JPEG when
    it was re-saved from a lossy member of its resolution it would otherwise outrank
    (:func:`_resaves`)."""
    facts = {m.id: header_facts(m.path) for m in members}
    by_size: dict[tuple[int, int], tuple[list[FileRow], list[FileRow]]] = {}
    for m in members:
        if m.width and m.height:
            jpegs, others = by_size.setdefault((m.width, m.height), ([], []))
            (jpegs if (m.format or "").upper() in JPEG_FORMATS else others).append(m)
    for jpegs, others in by_size.values():
        if not jpegs or not others:
            continue
        jv = np.stack([vector(j) for j in jpegs])
        decoded: dict[str, np.ndarray | None] = {}  # the last JPEG decoded, for the next member
        for start in range(0, len(others), CHUNK):
            chunk = others[start : start + CHUNK]
            sims = np.stack([vector(m) for m in chunk]) @ jv.T
            best_of = np.argmax(sims, axis=1)
            for n in np.argsort(best_of, kind="stable"):  # members of one JPEG in a row
                m, best = chunk[n], int(best_of[n])
                if (m.format or "").upper() == "WEBP" and lossy_webp(m.path):
                    continue
                if sims[n, best] >= CLOSE_COSINE and same_pixels(m.path, jpegs[best].path, decoded):
                    facts[m.id] = replace(facts[m.id], reencode_of=(jpegs[best].format or "JPEG").upper())
    for jpegs, others in by_size.values():
        if any(quality(m, f := facts[m.id]) >= LOSSLESS_QUALITY and f.reencode_of is None for m in others):
            continue  # a lossless original outranks every lossy member: no need to tell them apart
        lossy = jpegs + [m for m in others if (m.format or "").upper() == "WEBP" and lossy_webp(m.path)]
        if jpegs and len(lossy) > 1:
            _resaves(jpegs, lossy, facts)
    return facts


def _resaves(jpegs: list[FileRow], lossy: list[FileRow], facts: dict[int, FileFacts]) -> None:
    """Mark in ``facts`` the ``jpegs`` that were re-saved (:func:`resave.verdict`) from
    a member of ``lossy`` (one resolution) they would outrank by quality or size: a
    quality-90 mirror or caption of a quality-75 original, a JPEG of a WebP; of two JPEGs
    that re-encode to each other (a smooth picture, or a fine re-save of a coarse one: the
    pixels do not say which came first), the newer file. Best first,
    each against the members below it: first those others were re-saved from, then by
    quality (those saved with its own settings last: likelier its siblings than its
    source). Only what the test needs of each member is kept (a few crops, not the pixels)."""

    def standing(m: FileRow) -> tuple[float, int]:
        return quality(m, facts[m.id]), m.size

    seen: dict[str, resave.Decoded | None] = {}

    def decoded(m: FileRow) -> resave.Decoded | None:
        if m.path not in seen:
            seen[m.path] = resave.open_decoded(m.path)
        return seen[m.path]

    sources: set[int] = set()  # members that others were found re-saved from
    tests = 0
    for b in sorted(jpegs, key=standing, reverse=True):
        mine = standing(b)
        below = [a for a in lossy if standing(a) < mine]
        below.sort(key=lambda a: (a.id not in sources, standing(a)[0] == mine[0], *(-x for x in standing(a))))
        if not below or (jb := decoded(b)) is None:
            return
        for a in below:
            if tests >= RESAVE_TESTS:
                return
            if (ja := decoded(a)) is None:
                continue
            tests += 1
            found = resave.verdict(jb, ja)
            if found == resave.FROM or (found == resave.EACH_OTHER and b.mtime_ns > a.mtime_ns):
                by_date = found == resave.EACH_OTHER  # a re-save is made after its source
                facts[b.id] = replace(facts[b.id], reencode_of=(a.format or "JPEG").upper(), by_date=by_date)
                sources.add(a.id)
                break
        else:
            return  # b stands on its own: the members below it are not kept before it
