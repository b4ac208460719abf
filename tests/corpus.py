"""A generated corpus of hostile and odd image files, mixed with good photos.

``make_corpus(root)`` writes it and returns (good paths, bad paths): every good file
must be indexed, every bad one recorded with a reason.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import make_photo

FORMATS = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "TIFF": ".tif", "WEBP": ".webp", "BMP": ".bmp"}
CUTS = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995)  # fraction of the file kept
EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".tif", ".tiff", ".webp", ".bmp", ".heic", ".avif")


def _encoded(im: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **({"quality": 90} if fmt in ("JPEG", "WEBP") else {}))
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(side: int) -> bytes:
    """A 1-bit ``side`` x ``side`` PNG of zeros: a few KB on disk, side² pixels decoded."""
    row = b"\0" * (1 + (side + 7) // 8)
    raw = zlib.compress(row * side, 9)
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    chunks = _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", raw) + _png_chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def gif_claiming(width: int, height: int) -> bytes:
    """A GIF header whose logical screen and image claim ``width`` x ``height``."""
    head = b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0)
    image = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return head + image + b";"


def jpeg_with_corrupt_exif(im: Image.Image) -> bytes:
    """A valid JPEG whose APP1 EXIF segment is garbage (the picture itself is fine)."""
    data = _encoded(im, "JPEG")
    garbage = b"Exif\0\0MM\0*\xff\xff\xff\xff" + os.urandom(64)
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(garbage) + 2) + garbage + data[2:]


def make_corpus(root: Path, seed: int = 0) -> tuple[list[str], list[str]]:
    """Write the corpus below ``root``; returns (good paths, bad paths)."""
    rng = np.random.default_rng(seed)
    good: list[str] = []
    bad: list[str] = []
    root.mkdir(parents=True, exist_ok=True)
    (root / "good").mkdir()
    (root / "bad").mkdir()

    def put(folder: str, name: str | bytes, data: bytes, ok: bool) -> None:
        base = os.path.join(os.fsencode(root / folder), os.fsencode(name))
        with open(base, "wb") as f:
            f.write(data)
        (good if ok else bad).append(os.fsdecode(base))

    # good: photos in every format, and the odd but valid kinds
    for n, (fmt, ext) in enumerate(FORMATS.items()):
        put("good", f"photo-{fmt.lower()}{ext}", _encoded(make_photo(n), fmt), True)
    for n in range(12):
        put("good", f"camera-{n:02d}.jpg", _encoded(make_photo(100 + n, (640, 480)), "JPEG"), True)
    deep = (np.asarray(make_photo(7).convert("L"), np.uint16) * 257).astype(np.uint16)
    put("good", "sixteen-bit.png", _encoded(Image.fromarray(deep), "PNG"), True)
    put("good", "cmyk.jpg", _encoded(make_photo(8).convert("CMYK"), "JPEG"), True)
    put("good", "corrupt-exif.jpg", jpeg_with_corrupt_exif(make_photo(9)), True)
    frames = [make_photo(20 + i).convert("P") for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    put("good", "animated.gif", buf.getvalue(), True)
    put("good", b"caf\xe9-latin1.jpg", _encoded(make_photo(10), "JPEG"), True)
    put("good", "new\nline.jpg", _encoded(make_photo(11), "JPEG"), True)
    put("good", "x" * 251 + ".jpg", _encoded(make_photo(12), "JPEG"), True)  # 255 bytes: the limit

    # bad: every format cut short at many points
    for n, (fmt, ext) in enumerate(FORMATS.items()):
        for size in ((320, 240), (96, 131)):  # BMP rows of 96 px need no padding bytes
            data = _encoded(make_photo(200 + n, size), fmt)
            cuts = [int(len(data) * c) for c in CUTS] + [len(data) - 1, len(data) - 2]
            for cut in cuts:
                put("bad", f"cut-{fmt.lower()}-{size[0]}-{cut}{ext}", data[:cut], False)
    for ext in EXTENSIONS:
        put("bad", f"empty{ext}", b"", False)
    for n in range(60):
        ext = EXTENSIONS[n % len(EXTENSIONS)]
        noise = rng.integers(0, 256, int(rng.integers(1, 5000)), np.uint8).tobytes()
        put("bad", f"random-{n:02d}{ext}", noise, False)
    put("bad", "text.jpg", b"<html>not a picture</html>\n" * 20, False)
    put("bad", "bomb.png", png_bomb(12_000), False)  # 144 MP: over the corpus test's 50 MP limit
    put("bad", "bomb.gif", gif_claiming(65535, 65535), False)
    # links that lead nowhere, and a link loop: recorded, not followed forever
    os.symlink("does-not-exist.jpg", root / "bad" / "dangling.jpg")
    bad.append(str(root / "bad" / "dangling.jpg"))
    os.symlink("loop-b.jpg", root / "bad" / "loop-a.jpg")
    os.symlink("loop-a.jpg", root / "bad" / "loop-b.jpg")
    bad += [str(root / "bad" / "loop-a.jpg"), str(root / "bad" / "loop-b.jpg")]
    os.symlink("..", root / "bad" / "up")  # a folder link back up the tree: no loop in the walk
    return good, bad


def make_unreadable(root: Path) -> tuple[list[str], list[str]]:
    """An unreadable file and an unreadable folder (mode 000; a process without
    CAP_DAC_OVERRIDE cannot open them). Returns (good paths, bad paths)."""
    (root / "locked").mkdir()
    make_photo(300).save(root / "locked" / "hidden-away.jpg")
    os.chmod(root / "locked", 0)
    make_photo(301).save(root / "no-read.jpg")
    os.chmod(root / "no-read.jpg", 0)
    return [], [str(root / "locked"), str(root / "no-read.jpg")]
