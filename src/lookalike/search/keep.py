"""Which copy of a duplicate group is kept, and why: the keep policy, as pure rules.

The rules look at a file's catalogue row and at :class:`FileFacts`, what the file itself
says beyond the catalogue (GPS, JPEG quality, whether it is a re-encode of another member);
:mod:`lookalike.search.provenance` reads those from the files of group members. In order,
the first rule that tells two copies apart decides:

1. the user's folders and formats (``--protect``, ``--prefer-folder``, ``--prefer-format``);
   copies lookalike stored itself (the server's uploads) come last;
2. resolution (more pixels of the picture: a caption bar or border added around it does
   not count, see :mod:`lookalike.search.padding`);
3. camera metadata (EXIF make/model, capture time, GPS: more of them);
   then, of a picture and the same picture in a larger frame (bands added), the frame;
4. an original over a re-encode: a PNG/WebP/... whose pixels are a JPEG's decode was made
   from that JPEG and is not better for being larger, and a JPEG re-saved (perhaps mirrored
   or captioned) from a lossy member's pixels is not better for its higher quality setting
   (of two JPEGs that re-encode to each other, the newer file is taken for the re-save);
5. JPEG quality (estimated from the quantisation tables); a lossless file (a lossless WebP
   too) counts above any JPEG, and so does a phone's HEIC/AVIF original; other formats
   (lossy WebP, GIF) below;
6. file size, for lossy files (what an encoder kept); two lossless files of one resolution
   are equally faithful, whatever their compression level, so age decides;
7. a file over a symbolic link to one elsewhere: links are never removed, so keeping the
   file leaves the library its own copy;
8. age: older capture time, then older file;
9. the path, so that the choice never depends on the order files were found in.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from lookalike.fsutil import is_inside, is_under
from lookalike.images import exif_text, format_named
from lookalike.storage.catalogue import FileRow

JPEG_FORMATS = frozenset({"JPEG", "MPO"})  # MPO: a camera JPEG with a multi-picture index
LOSSLESS_FORMATS = frozenset({"PNG", "BMP", "TIFF", "PPM", "TGA", "QOI"})
CAMERA_FORMATS = frozenset({"HEIF", "HEIC", "AVIF"})  # phone originals; their quality is not measured
LOSSLESS_QUALITY = 101.0  # above any JPEG
CAMERA_QUALITY = 100.0
UNKNOWN_QUALITY = 0.0  # WebP, GIF, ...: below any JPEG of the same resolution and metadata
# The IJG (libjpeg) luminance table at quality 50; every encoder's "quality" scales it.
_IJG_LUMA_SUM = 3688


def jpeg_quality(tables: Mapping[int, Sequence[int]]) -> int | None:
    """The IJG quality (1-100) a JPEG was most likely saved at, from its quantisation
    tables (Pillow's ``im.quantization``): its luminance table against libjpeg's, scaled."""
    luma = tables.get(0)
    if not luma or len(luma) != 64:
        return None
    if max(luma) <= 1:
        return 100
    scale = sum(luma) * 100.0 / _IJG_LUMA_SUM
    quality = (200.0 - scale) / 2.0 if scale <= 100.0 else 5000.0 / scale
    return int(min(100, max(1, round(quality))))


@dataclass(frozen=True)
class FileFacts:
    """What a file says beyond its catalogue row, for the keep rules."""

    gps: bool = False
    jpeg_quality: int | None = None
    reencode_of: str | None = None  # the format of the member whose decode this file's pixels are
    by_date: bool = False  # ... told by the file dates: the two JPEGs re-encode to each other
    lossless: bool = False  # a format that may be either says it is lossless (a VP8L WebP)
    link: bool = False  # the path is a symbolic link (to a file no other member's path names)
    picture: tuple[int, int] | None = None  # (w, h) without bands added at its edges (padding.py)


NO_FACTS = FileFacts()


def _fmt(row: FileRow) -> str:
    return (row.format or "").upper()


def camera_name(exif: Mapping) -> str:
    """The camera an EXIF block names ("Canon EOS 50D": the make left out where the model
    starts with it); "" when it names none."""
    make, model = exif_text(exif.get("Make")), exif_text(exif.get("Model"))
    if model.lower().startswith(make.lower()):
        make = ""
    return " ".join(x for x in (make, model) if x)


def camera_metadata(row: FileRow, facts: FileFacts = NO_FACTS) -> list[str]:
    """The camera metadata a file has: its make/model, ``capture time``, ``GPS``."""
    found = []
    if camera := camera_name(row.exif or {}):
        found.append(camera)
    if row.captured_at is not None:
        found.append("capture time")
    if facts.gps:
        found.append("GPS")
    return found


def quality(row: FileRow, facts: FileFacts = NO_FACTS) -> float:
    """How faithful a file's encoding is, for comparing copies of one resolution."""
    fmt = _fmt(row)
    if fmt in JPEG_FORMATS:
        return float(facts.jpeg_quality) if facts.jpeg_quality is not None else UNKNOWN_QUALITY
    if fmt in LOSSLESS_FORMATS or facts.lossless:
        return LOSSLESS_QUALITY
    if fmt in CAMERA_FORMATS:
        return CAMERA_QUALITY
    return UNKNOWN_QUALITY


def _quality_words(row: FileRow, facts: FileFacts) -> str:
    fmt = _fmt(row) or "unknown format"
    if fmt in JPEG_FORMATS:
        return f"JPEG quality {facts.jpeg_quality}" if facts.jpeg_quality is not None else "a JPEG"
    if fmt in LOSSLESS_FORMATS or facts.lossless:
        return f"lossless {fmt}"
    if fmt in CAMERA_FORMATS:
        return f"{fmt}, a phone's original format"
    return f"{fmt}, quality not measured"


def _area(row: FileRow, facts: FileFacts) -> int:
    """The pixels of the picture: a caption bar or a border added around it left out."""
    w, h = facts.picture or (row.width or 0, row.height or 0)
    return w * h


def _resolution(row: FileRow, facts: FileFacts) -> str:
    if facts.picture is None:
        return f"{row.width}x{row.height}"
    return f"{facts.picture[0]}x{facts.picture[1]} in a {row.width}x{row.height} frame"


def _inside(path: str, folder: str) -> bool:
    """``path`` is in ``folder``: by spelling first (cheap), else by folder identity."""
    return is_under(path, os.path.abspath(folder)) or is_inside(path, folder)


@dataclass
class KeepRules:
    """How the kept image of a group is chosen, and what is never proposed for removal."""

    protect: Sequence[str] = ()  # folders whose files are never duplicates to remove
    prefer_folders: Sequence[str] = ()
    prefer_formats: Sequence[str] = ()  # e.g. ("PNG",) to keep lossless copies
    burst_seconds: float = 10.0  # same camera, capture times this close: a burst, not a copy
    burst_threshold: float = 0.995  # ... unless the pixels are this close
    kept_last: Sequence[str] = ()  # folders of copies lookalike made itself (the server's uploads)
    facts: Mapping[int, FileFacts] = field(default_factory=dict)  # by file id (see provenance)

    def __post_init__(self) -> None:
        self.prefer_formats = tuple(format_named(f) for f in self.prefer_formats)  # jpg: JPEG

    def facts_of(self, row: FileRow) -> FileFacts:
        return self.facts.get(row.id, NO_FACTS)

    def protected(self, row: FileRow) -> bool:
        """In a protected folder: by folder identity, not spelling (see fsutil.is_inside)."""
        return any(_inside(row.path, d) for d in self.protect)

    def rank(self, row: FileRow) -> tuple:
        """Sort key, best (to keep) first."""
        facts = self.facts_of(row)
        fidelity = quality(row, facts)
        return (
            not self.protected(row),
            any(_inside(row.path, d) for d in self.kept_last),
            not any(_inside(row.path, d) for d in self.prefer_folders),
            _fmt(row) not in self.prefer_formats,
            -_area(row, facts),
            -len(camera_metadata(row, facts)),
            -(row.width or 0) * (row.height or 0),  # of a picture and a frame around it: the frame
            facts.reencode_of is not None,
            -fidelity,
            -row.size if fidelity < LOSSLESS_QUALITY else 0,  # between lossless files, size is no fidelity
            facts.link,
            row.captured_at or datetime.max,
            row.mtime_ns,
            row.path,
        )

    def reason(self, keep: FileRow, other: FileRow) -> str:
        """Why ``keep`` is kept rather than ``other``: the first rule that tells them apart."""
        a, b = self.rank(keep), self.rank(other)
        for n, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return self._words(n, keep, other)
        return "identical by every rule"

    def _words(self, rule: int, keep: FileRow, other: FileRow) -> str:
        """The reason for rule number ``rule`` of :meth:`rank`, naming which copy it is about."""
        fk, fo = self.facts_of(keep), self.facts_of(other)
        if rule == 0:
            return "the kept copy is in a protected folder"
        if rule == 1:
            return "this is a copy lookalike stored (an upload)"
        if rule == 2:
            return "the kept copy is in a preferred folder"
        if rule == 3:
            return f"the kept copy is in a preferred format ({_fmt(keep)})"
        if rule == 4:
            return f"larger resolution ({_resolution(keep, fk)} vs {_resolution(other, fo)})"
        if rule == 5:
            lacks = [m for m in camera_metadata(keep, fk) if m not in camera_metadata(other, fo)]
            return f"camera metadata this copy lacks ({', '.join(lacks) or 'more of it'})"
        if rule == 6:
            frames = f"{keep.width}x{keep.height} vs {other.width}x{other.height}"
            return f"larger frame ({frames}) of the same picture"
        if rule == 7:
            if fo.by_date:
                return f"original {_fmt(keep)}: a newer re-save of the same pixels"
            if _fmt(other) in JPEG_FORMATS:
                return f"original {_fmt(keep)}: this JPEG was re-saved from a {fo.reencode_of}'s pixels"
            return (
                f"original {_fmt(keep)}: this {_fmt(other)} is a re-encode of a {fo.reencode_of} "
                "(same pixels)"
            )
        if rule == 8:
            return f"higher quality ({_quality_words(keep, fk)} vs {_quality_words(other, fo)})"
        if rule == 9:
            return f"larger file ({keep.size:,} vs {other.size:,} bytes)"
        if rule == 10:
            return "a file, not a symbolic link to one elsewhere"
        if rule == 11:
            return "older capture time"
        if rule == 12:
            return "older file (modified earlier)"
        return "path order (otherwise equal)"

    def is_burst(self, a: FileRow, b: FileRow) -> bool:
        """Different shots of a burst: same camera, capture times a few seconds apart."""
        if a.captured_at is None or b.captured_at is None or a.captured_at == b.captured_at:
            return False
        cam = ("Make", "Model")
        if [(a.exif or {}).get(k) for k in cam] != [(b.exif or {}).get(k) for k in cam]:
            return False
        return abs((a.captured_at - b.captured_at).total_seconds()) <= self.burst_seconds
