"""bench/lookalikes.py's data: the family tables' files fetched from Debian packages
(``apt-get download``, ``dpkg-deb``), their pictures checked and edited into queries, and
the dupes library of originals beside their copies; all cached under ``--work``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
from lookalike_families import Family, Member
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps
from quality import _resized, _thumbnail  # bench/quality.py's edits (run as a script: bench/ is on the path)

from lookalike.search.edits import crop_centre, letterbox

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MODEL = SHARED / "models" / "mobilenet_v1_075_224_feature_vector"
PHOTOS = SHARED / "photos" / "imagenet-sample"
K = 100
QUERIES = "queries-v3"  # bump when an edit changes, so cached files are not reused
ORIENTATION = 0x0112  # EXIF tag
QUICK_DISTRACTORS = 250


# --- fetching: apt-get download, dpkg-deb ----------------------------------------------


def _deb(debs: Path, package: str) -> Path | None:
    found = sorted(debs.glob(f"{package}_*.deb"))
    return found[-1] if found else None


def fetch(families: tuple[Family, ...], work: Path) -> dict[str, str]:
    """Download the packages (cached in work/debs) and unpack the files the families name
    into work/pkgs/PACKAGE/. Returns {package: version}."""
    wanted: dict[str, set[str]] = defaultdict(set)
    for fam in families:
        for m in fam.members:
            wanted[m.package].add(m.file)
            for pkg, path in m.copies:
                wanted[pkg].add(path)
    debs = work / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    missing = sorted(p for p in wanted if _deb(debs, p) is None)
    if missing:
        if shutil.which("apt-get") is None:
            sys.exit("needs Debian's apt-get to download " + ", ".join(missing))
        print(f"apt-get download {' '.join(missing)} ...", file=sys.stderr)
        run = subprocess.run(["apt-get", "download", *missing], cwd=debs, capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"apt-get download failed (run `apt-get update` once first?):\n{run.stderr.strip()}")
    versions = {}
    for package, paths in sorted(wanted.items()):
        deb = _deb(debs, package)
        assert deb is not None
        versions[package] = subprocess.run(
            ["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dest = work / "pkgs" / package
        marker = dest / f".from-{deb.name}"
        if marker.exists() and all((dest / p).is_file() for p in paths):
            continue
        print(f"unpacking {len(paths)} files of {deb.name} ...", file=sys.stderr)
        _extract(deb, paths, dest)
        marker.touch()
    return versions


def _extract(deb: Path, paths: set[str], dest: Path) -> None:
    """The regular files ``paths`` of a .deb (its data tarball streamed by dpkg-deb)."""
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    found = set()
    assert proc.stdout is not None
    with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
        for info in tar:
            name = info.name.removeprefix("./")
            if name not in paths:
                continue
            if not info.isfile():
                raise SystemExit(f"{deb.name}: {name} is not a regular file (a link?): fix FAMILIES")
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(info)
            assert src is not None
            _write(target, src.read())
            found.add(name)
    if proc.wait() != 0:
        raise SystemExit(f"dpkg-deb --fsys-tarfile {deb} failed")
    if found != paths:
        raise SystemExit(f"{deb.name} has no {', '.join(sorted(paths - found))}: fix FAMILIES")


# --- pictures and edits ---------------------------------------------------------------

WHITE, BLACK = (255, 255, 255), (0, 0, 0)


@dataclass(frozen=True)
class Picture:
    rgb: Image.Image  # as a JPEG export shows it: transparency flattened on the matte
    rgba: Image.Image | None  # the transparent picture; None for an opaque one
    matte: str = "white"


def load_picture(path: Path) -> Picture:
    """The picture, EXIF orientation applied. A transparent one is flattened on white, or
    on black when it is blank on white (white drawn on transparency)."""
    with Image.open(path) as raw:
        im = ImageOps.exif_transpose(raw)
        im.load()
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode not in ("RGBA", "LA", "PA", "RGBa", "La"):
        return Picture(im.convert("RGB"), None)
    rgba = im.convert("RGBA")
    if rgba.getchannel("A").getextrema()[0] == 255:  # an alpha channel, no transparency
        return Picture(rgba.convert("RGB"), None)
    on_white = _flat(rgba, WHITE)
    if not is_blank(on_white):
        return Picture(on_white, rgba, "white")
    return Picture(_flat(rgba, BLACK), rgba, "black")


def _flat(rgba: Image.Image, matte: tuple[int, int, int]) -> Image.Image:
    canvas = Image.new("RGB", rgba.size, matte)
    canvas.paste(rgba, mask=rgba.getchannel("A"))
    return canvas


def is_blank(im: Image.Image) -> bool:
    return float(_small(im.convert("L"), (128, 128)).std()) < 1.0


def _small(im: Image.Image, size: tuple[int, int] = (64, 64)) -> np.ndarray:
    return np.asarray(im.resize(size, Image.Resampling.BOX), np.float32)


def _colours(change: Callable[[Image.Image], Image.Image]) -> Callable[[Image.Image], Image.Image]:
    """``change`` applied to the colours only: a transparent picture keeps its alpha."""

    def apply(im: Image.Image) -> Image.Image:
        if im.mode != "RGBA":
            return change(im)
        out = change(im.convert("RGB"))
        out.putalpha(im.getchannel("A"))
        return out

    return apply


def _premultiplied(change: Callable[[Image.Image], Image.Image]) -> Callable[[Image.Image], Image.Image]:
    """``change`` (a filter or a turn) on premultiplied alpha, so no fringe of the colour
    hidden under transparent pixels bleeds in."""
    return lambda im: change(im.convert("RGBa")).convert("RGBA") if im.mode == "RGBA" else change(im)


def _brightness_contrast(im: Image.Image) -> Image.Image:
    return ImageEnhance.Contrast(ImageEnhance.Brightness(im).enhance(1.3)).enhance(0.7)


def _blur(im: Image.Image) -> Image.Image:
    return im.filter(ImageFilter.GaussianBlur(2.0 * max(im.size) / 500))  # radius 2 at 500 px


def _gray(im: Image.Image) -> Image.Image:
    return im.convert("LA") if im.mode == "RGBA" else ImageOps.grayscale(im)


def _letterbox(im: Image.Image) -> Image.Image:
    """Padded to a square: black bars, transparent ones for a transparent picture."""
    if im.mode != "RGBA":
        return letterbox(im)
    side = max(im.size)
    canvas = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    canvas.paste(im, ((side - im.width) // 2, (side - im.height) // 2))
    return canvas


CAPTIONS = ("© lookalike 2026 · shared with friends", "look at this one!", "photo: a friend of a friend")


def caption_bars(im: Image.Image) -> Image.Image:
    """Three full-width white bars with black text (near the top, the middle, the bottom),
    each 4% of the height: 12% of the picture covered, as on shared memes and screenshots."""
    out = im.copy() if im.mode in ("RGB", "RGBA") else im.convert("RGB")
    w, h = out.size
    bar = max(5, round(h * 0.04))
    font = ImageFont.load_default(size=max(4, round(bar * 0.75)))
    draw = ImageDraw.Draw(out)
    for top, text in zip((round(h * 0.05), round(h * 0.48), round(h * 0.91)), CAPTIONS, strict=True):
        draw.rectangle((0, top, w, top + bar - 1), fill="white")
        draw.text((w // 30, top + bar // 2), text, fill="black", font=font, anchor="lm")
    return out


def _exif_rotated(im: Image.Image) -> bytes:
    """Pixels turned 90° anticlockwise, tagged Orientation 6 ("turn 90° clockwise to view"):
    a viewer that honours EXIF shows the original."""
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    data = _save(im.transpose(Image.Transpose.ROTATE_90), "JPEG", 90, exif=exif.tobytes())
    shown = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    if shown.size != im.size:
        raise AssertionError("EXIF orientation edit does not display as the original")
    a, b, wrong = _small(shown), _small(im), _small(im.rotate(180))
    if np.abs(a - b).mean() >= np.abs(a - wrong).mean() and np.abs(b - wrong).mean() > 1:
        raise AssertionError("EXIF orientation edit does not display as the original")
    return data


def _save(im: Image.Image, fmt: str, quality: int = 90, **extra) -> bytes:
    buf = io.BytesIO()
    if fmt == "PNG":
        im.save(buf, "PNG", compress_level=3)
    else:
        if fmt == "JPEG" and im.mode not in ("RGB", "L"):
            im = im.convert("RGB")
        if fmt == "WEBP" and im.mode == "LA":
            im = im.convert("RGBA")
        im.save(buf, fmt, quality=quality, **extra)
    return buf.getvalue()


@dataclass(frozen=True)
class Edit:
    """One kind of copy. An opaque picture's copy is a JPEG (or WebP). A transparent
    picture's copy stays transparent (a PNG, or a WebP) unless it is a JPEG by definition
    (``transparent=False``: flattened on the picture's matte, as JPEG exporters do)."""

    change: Callable[[Image.Image], Image.Image]
    fmt: str = "JPEG"
    quality: int = 90
    transparent: bool = True

    def ext(self, transparent: bool) -> str:
        if self.fmt == "WEBP":
            return "webp"
        return "png" if transparent and self.transparent else "jpg"

    def make(self, p: Picture) -> bytes:
        if p.rgba is not None and self.transparent:
            return _save(self.change(p.rgba), "WEBP" if self.fmt == "WEBP" else "PNG", self.quality)
        return _save(self.change(p.rgb), self.fmt, self.quality)


class ExifEdit(Edit):
    def make(self, p: Picture) -> bytes:
        return _exif_rotated(p.rgb)


def _same(im: Image.Image) -> Image.Image:
    return im


# The 16 edits of the held-out evaluation this benchmark proxies.
EDITS: dict[str, Edit] = {
    "jpeg_q15": Edit(_same, quality=15, transparent=False),
    "jpeg_q50": Edit(_same, quality=50, transparent=False),
    "thumbnail": Edit(_thumbnail),
    "half_size": Edit(lambda im: _resized(im, 0.5)),
    "crop_80": Edit(lambda im: crop_centre(im, 0.8)),
    "crop_60": Edit(lambda im: crop_centre(im, 0.6)),
    "gray": Edit(_gray),
    "bright_contrast": Edit(_colours(_brightness_contrast)),
    "saturation": Edit(_colours(lambda im: ImageEnhance.Color(im).enhance(1.8))),
    "blur": Edit(_premultiplied(_blur)),
    "text": Edit(caption_bars),
    "mirror": Edit(ImageOps.mirror),
    "rotate_8": Edit(_premultiplied(lambda im: im.rotate(8, Image.Resampling.BICUBIC, expand=True))),
    "letterbox": Edit(_letterbox),
    "exif_rotation": ExifEdit(_same, transparent=False),
    "webp": Edit(_same, "WEBP", 80),
}
OTHER_SIZE = "other_size"  # query kind of the natural copies (not an edit)
WRONG = ("sibling", "shot", "artwork", "distractor")  # what a hit that is not the original can be
LOOKALIKES = ("sibling", "shot")  # the hard negatives
# The copies in the dupes library: the kinds the default preset promises to find (re-encoded,
# resized, mirrored, captioned: see lookalike.search.duplicates) and two of the "edited" ones.
DUPES_EDITS = ("jpeg_q50", "webp", "half_size", "thumbnail", "mirror", "text", "crop_80", "gray")


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")  # no half-written file left in the cache
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _make_edits(src: str, targets: dict[str, str]) -> int:
    pic = load_picture(Path(src))
    for name, path in targets.items():
        _write(Path(path), EDITS[name].make(pic))
    return len(targets)


# --- the dataset on disk ----------------------------------------------------------------


@dataclass
class Dataset:
    families: tuple[Family, ...]
    members: list[Member]
    original: dict[str, Path]  # member id -> indexed file (work/originals)
    copies: dict[str, list[Path]]  # member id -> natural copies (package files)
    alpha: set[str]  # member ids whose original has transparency
    black_matte: set[str] = field(default_factory=set)  # ... and is blank on white
    queries: list[tuple[str, Path, str]] = field(default_factory=list)  # (edit, file, member id)
    member_of: dict[str, str] = field(default_factory=dict)  # indexed path -> member id
    family_of: dict[str, str] = field(default_factory=dict)  # member id -> family
    shot_families: set[str] = field(default_factory=set)  # families of near-identical shots
    distractors: list[Path] = field(default_factory=list)


def build_dataset(families: tuple[Family, ...], work: Path) -> Dataset:
    """Check the family rules and lay out the originals (hardlinks) under work/originals."""
    pkgs = work / "pkgs"
    folder = work / "originals"  # laid out anew: exactly this run's originals
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    members = [m for f in families for m in f.members]
    ids = [m.id for m in members]
    if len(set(ids)) != len(ids):
        raise SystemExit(f"duplicate member ids: {[i for i, n in Counter(ids).items() if n > 1]}")
    data = Dataset(families, members, {}, {}, set())
    small: dict[str, np.ndarray] = {}
    for m in members:
        src = pkgs / m.package / m.file
        if m.converted:
            src = _converted(m, src, work / "converted")
        pic = load_picture(src)
        if is_blank(pic.rgb):
            raise SystemExit(f"{m.id}: {m.path} is blank (on white and on black): leave it out")
        small[m.id] = _small(pic.rgb)
        for pkg, path in m.copies:
            other = _small(load_picture(pkgs / pkg / path).rgb)
            diff = float(np.abs(other - small[m.id]).mean())
            if diff > 2.0:
                raise SystemExit(f"{m.id}: {pkg}/{path} is not the same picture (diff {diff:.1f}/255)")
        data.copies[m.id] = [pkgs / pkg / path for pkg, path in m.copies]
        if pic.rgba is not None:
            data.alpha.add(m.id)
        if pic.matte == "black":
            data.black_matte.add(m.id)
        dst = folder / f"{m.id}{m.ext}"
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
        data.original[m.id] = dst.resolve()
        data.member_of[str(dst.resolve())] = m.id
        data.family_of[m.id] = m.family
    data.shot_families = {f.name for f in families if f.relation == "shot"}
    for fam in families:
        for a, b in combinations(fam.members, 2):
            diff = float(np.abs(small[a.id] - small[b.id]).mean())
            if diff < 0.3:
                raise SystemExit(f"siblings {a.id} and {b.id} are the same picture (diff {diff:.2f}/255)")
            if fam.relation == "shot" and (diff := _unexplained(small[a.id], small[b.id])) < SHOT_DIFF:
                raise SystemExit(
                    f"shots {a.id} and {b.id} differ by {diff:.1f}/255 beyond exposure, less "
                    f"than {SHOT_DIFF}: a re-save, not another shot"
                )
    return data


def _converted(m: Member, src: Path, folder: Path) -> Path:
    """A PNG in ``folder`` of frame ``m.frame`` of the video ``src`` (read with PyAV), or
    of the Netpbm image ``src``; made once per member id and source (both in its name)."""
    dst = folder / f"{m.id}-{hashlib.sha256(m.path.encode()).hexdigest()[:8]}.png"  # per source
    if dst.exists():
        return dst
    folder.mkdir(parents=True, exist_ok=True)
    if m.frame is None:
        with Image.open(src) as im:
            picture = im.convert("RGB" if im.mode not in ("L", "I;16") else "L")
    else:
        try:
            import av
        except ImportError:
            sys.exit("the video frames of the 'shot' families need PyAV: pip install -e '.[bench]'")
        with av.open(str(src)) as video:
            frames = (f for i, f in enumerate(video.decode(video=0)) if i == m.frame)
            found = next(frames, None)
            if found is None:
                raise SystemExit(f"{m.id}: {m.file} has no frame {m.frame}: fix FAMILIES")
            picture = found.to_image()
    buf = io.BytesIO()
    picture.save(buf, "PNG")
    _write(dst, buf.getvalue())
    return dst


SHOT_DIFF = 4.0  # /255: two shots differ beyond exposure by more than a JPEG q15 re-save (1-4)


def _unexplained(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference left after fitting ``b`` from ``a`` by a gain and an offset
    per channel (exposure, white balance): what tells another shot from a brighter copy."""
    left = []
    for c in range(a.shape[-1]):
        x, y = a[..., c].ravel(), b[..., c].ravel()
        design = np.c_[x, np.ones_like(x)]
        coef = np.linalg.lstsq(design, y, rcond=None)[0]
        left.append(np.abs(design @ coef - y).mean())
    return float(np.mean(left))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_queries(data: Dataset, work: Path) -> None:
    """The 16 edits of every original (generated where missing, in parallel), plus the
    natural copies as ``other_size`` queries."""
    folder = work / QUERIES
    for name in EDITS:
        (folder / name).mkdir(parents=True, exist_ok=True)
    made_from = folder / "made-from.json"  # member id -> digest of the original its edits show
    known = json.loads(made_from.read_text()) if made_from.exists() else {}
    digests = {m.id: _digest(data.original[m.id]) for m in data.members}
    jobs, total = {}, 0
    for m in data.members:
        clear = m.id in data.alpha
        targets = {name: folder / name / f"{m.id}.{e.ext(clear)}" for name, e in EDITS.items()}
        stale = known.get(m.id) != digests[m.id]  # FAMILIES named another file for this id
        missing = {name: str(p) for name, p in targets.items() if stale or not p.exists()}
        if missing:
            jobs[str(data.original[m.id])] = missing
        data.queries.extend((name, p, m.id) for name, p in targets.items())
        data.queries.extend((OTHER_SIZE, p, m.id) for p in data.copies[m.id])
        total += len(targets)
    made = 0
    if jobs:
        print(f"making edits of {len(jobs)} originals ...", file=sys.stderr)
        with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            made = sum(pool.map(_make_edits, jobs, jobs.values()))
    _write(made_from, json.dumps({**known, **digests}, indent=0).encode())
    print(f"queries: {total} edits in {folder} ({made} generated, {total - made} cached)", file=sys.stderr)


def distractor_links(photos: list[Path], work: Path) -> Path:
    """A folder of symbolic links to ``photos``: indexed as a folder, since Index.add with a
    thousand file paths fails on SQLite (one OR per path: "Expression tree is too large")."""
    folder = work / f"distractors-{len(photos)}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for p in photos:
        (folder / p.name).symlink_to(p)
    return folder


def build_library(data: Dataset, work: Path) -> dict[str, tuple[str, str]]:
    """work/library: every original, its DUPES_EDITS copies and natural copies (hardlinks).
    Returns {library path: (member id, kind of file)}."""
    folder = work / "library"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    edit_file = {(m, name): p for name, p, m in data.queries if name in DUPES_EDITS}
    owner = {}
    for m in data.members:
        files = [("original", data.original[m.id])]
        files += [(name, edit_file[m.id, name]) for name in DUPES_EDITS]
        files += [(OTHER_SIZE, p) for p in data.copies[m.id]]
        for n, (kind, src) in enumerate(files):
            dst = folder / f"{m.id}--{n:02d}-{kind}{src.suffix.lower()}"
            try:
                os.link(src, dst)
            except OSError:
                shutil.copyfile(src, dst)
            owner[str(dst.resolve())] = m.id, kind
    return owner
