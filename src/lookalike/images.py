"""Decode image files into model-sized RGB pixels, with their metadata.

JPEGs are decoded at reduced size inside libjpeg (Pillow's ``draft``); EXIF
orientation is applied; palette, grayscale, 16-bit, CMYK and alpha images come
out as plain RGB. A query is also cut with its caption bars filled
(:mod:`lookalike.captions`), on a flat black or white backdrop with the backdrop in the
other tone, and inside flat margins (:mod:`lookalike.backdrop`): a search's second looks.
Nothing here imports TensorFlow: decoder processes stay light.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from lookalike import backdrop, captions, colour, detail, units
from lookalike.descriptors import Descriptor, get_descriptor
from lookalike.errors import InvalidArgument, LookalikeError

DEFAULT_MAX_MEGAPIXELS = 150.0
CANNOT_READ = "cannot read:"  # the start of the reason of a file that could not be opened
EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".dib", ".gif", ".tif", ".tiff"}
)
HEIF_EXTENSIONS = frozenset({".heic", ".heif", ".avif"})
_EXIF_KEEP = {
    "Make",
    "Model",
    "Software",
    "DateTime",
    "DateTimeOriginal",
    "DateTimeDigitized",
    "OffsetTimeOriginal",
    "SubsecTimeOriginal",
    "Orientation",
    "LensModel",
    "FNumber",
    "ExposureTime",
    "ISOSpeedRatings",
    "FocalLength",
    "ImageUniqueID",
    "BodySerialNumber",
}
WHITE, BLACK = (255, 255, 255), (0, 0, 0)
LIGHT_CONTENT = 0.8  # mean luminance of the visible pixels above which, if nearly colourless,
PALE_CONTENT = 0.15  # (mean chroma below this), they would vanish on white: they go on black


def _register_heif() -> frozenset[str]:
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return frozenset()
    register_heif_opener()
    return HEIF_EXTENSIONS


SUPPORTED_EXTENSIONS = EXTENSIONS | _register_heif()


class ImageError(LookalikeError):
    """A file that cannot be used as an image; the message says why."""

    http_status = 415


class ImageTooLarge(ImageError):
    """An image over the megapixel limit (the decompression-bomb guard)."""

    http_status = 413


def too_large(width: int, height: int, max_megapixels: float) -> str:
    """Why a picture of ``width`` x ``height`` is refused under ``max_megapixels``."""
    return (
        f"too large: {width}x{height} = {units.megapixels(width, height)} exceeds the "
        f"{max_megapixels:g} MP limit (decompression-bomb guard)"
    )


def bomb_refused(exc: Exception, max_megapixels: float) -> str:
    """Pillow's own refusal (a picture past twice its limit, before its size is known to us)
    said as :func:`too_large` says ours."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    if found is None:
        return f"too large: {exc}"
    pixels = int(found.group(1))
    limit = f"the {max_megapixels:g} MP limit (decompression-bomb guard)"
    return f"too large: {pixels / 1e6:.0f} MP exceeds {limit}"


@dataclass
class DecodedImage:
    """Model-sized pixels plus what we learned about the original."""

    pixels: np.ndarray  # uint8 [h, w, 3] at the requested size ([views, h, w, 3] for some descriptors)
    width: int  # of the original, after EXIF orientation
    height: int
    format: str
    exif: dict = field(default_factory=dict)
    captured_at: datetime | None = None
    colour: bytes | None = None  # see lookalike.colour: tells a recoloured variant from a copy
    uncaptioned: np.ndarray | None = None  # the views with caption bars filled, if asked and found
    # if asked and found: an opaque picture on a flat black or white backdrop, the backdrop in the
    # other tone (see lookalike.backdrop); a transparent one on the other background: its views and
    # their colour signature
    backdrop: tuple[np.ndarray, bytes] | None = None
    # what lies inside flat black or white margins, if asked and found (backdrop.inside_margins):
    # its views and their colour signature
    inside: tuple[np.ndarray, bytes] | None = None


@dataclass
class ImageFile:
    """One file read from disk: identity (size, mtime, hash) and either pixels or an error."""

    path: str
    size: int
    mtime_ns: int
    content_hash: str | None = None
    image: DecodedImage | None = None
    error: str | None = None
    known_content: bool = False  # hash matched a stored vector: not decoded

    @property
    def ok(self) -> bool:
        return self.image is not None


def decode(
    source: bytes | str | os.PathLike,
    size: tuple[int, int],
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    descriptor: str | None = None,
    second_looks: bool = False,
) -> DecodedImage:
    """Decode ``source`` (bytes or a path) to RGB uint8 pixels of ``size`` = (height, width),
    cut into the views of ``descriptor`` (see :mod:`lookalike.descriptors`); with
    ``second_looks``, also cut with its caption bars filled, when it has any (``uncaptioned``),
    an opaque one on a flat backdrop with the backdrop in the other tone, a transparent one
    on the other background (``backdrop``), and what lies inside flat margins, if it has any
    (``inside``): a query's second looks.

    Raises ImageError with a readable reason for anything that is not a usable image.
    """
    fp = io.BytesIO(source) if isinstance(source, bytes) else source
    # Our own megapixel check is the guard; Pillow's hard stop (2x its warning limit)
    # must not be stricter than the limit the user chose.
    limit = int(max_megapixels * 1e6 / 2) + 1
    if Image.MAX_IMAGE_PIXELS is not None and limit > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limit
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(fp)
            with im:
                if isinstance(source, bytes) and (cut := truncation(im, source)):
                    raise ImageError(f"cannot decode: {cut}")
                return _decode_open(im, size, max_megapixels, get_descriptor(descriptor), second_looks)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(bomb_refused(exc, max_megapixels)) from exc
    except UnidentifiedImageError as exc:
        empty = isinstance(source, bytes) and not source
        raise ImageError("empty file" if empty else "not a recognised image format") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # Pillow's decode failures
        raise ImageError(f"cannot decode: {exc}") from exc
    except Exception as exc:  # corrupt files reach other exception types in Pillow's plugins
        raise ImageError(f"cannot decode: {type(exc).__name__}: {exc}") from exc


_TIFF_EXTENTS = ((273, 279), (324, 325))  # (StripOffsets, StripByteCounts), (TileOffsets, ...)


def truncation(im: Image.Image, data: bytes) -> str | None:
    """Why ``data`` is cut short although Pillow would decode it, else None: a PNG
    without its IEND chunk, a GIF without its trailer, TIFF strips past the end."""
    if im.format == "PNG":
        end = data.rfind(b"IEND")
        if end < 0 or len(data) < end + 8:  # the chunk type, then its 4-byte CRC
            return "image file is truncated (no PNG end chunk)"
    elif im.format == "GIF":
        if not data.rstrip(b"\0").endswith(b";"):
            return "image file is truncated (no GIF trailer)"
    elif im.format == "TIFF":
        tags = im.tag_v2
        for offsets_tag, counts_tag in _TIFF_EXTENTS:
            offsets, counts = tags.get(offsets_tag), tags.get(counts_tag)
            if offsets is None or counts is None:
                continue
            offsets = offsets if isinstance(offsets, tuple) else (offsets,)
            counts = counts if isinstance(counts, tuple) else (counts,)
            if any(o + c > len(data) for o, c in zip(offsets, counts, strict=False)):
                return f"image file is truncated ({len(data)} bytes, TIFF data runs past the end)"
    return None


def _decode_open(
    im: Image.Image,
    size: tuple[int, int],
    max_megapixels: float,
    descriptor: Descriptor,
    second_looks: bool = False,
) -> DecodedImage:
    megapixels = im.width * im.height / 1e6
    if megapixels > max_megapixels:
        raise ImageTooLarge(too_large(im.width, im.height, max_megapixels))
    fmt = im.format or "unknown"
    exif = im.getexif()
    orientation = exif.get(ExifTags.Base.Orientation, 1)
    width, height = (im.height, im.width) if orientation in (5, 6, 7, 8) else im.size
    meta = _exif_dict(exif)
    h, w = size
    if fmt == "JPEG":
        # both sides stay >= what the views need, whatever the orientation
        side = int(max(h, w) * descriptor.decode_scale)
        im.draft("RGB", (side, side))
    im.load()
    im = _reduced(im, max(h, w) * descriptor.decode_scale)
    if orientation != 1:  # exif_transpose copies an upright image whole: 60 MB for a 15 MP one
        im = ImageOps.exif_transpose(im)
    rgb, background = flatten(im)
    pixels = descriptor.cut(rgb, size)
    signature = colour.signature(pixels, detail.grid(rgb), _marker(background))
    looks = _second_looks(im, rgb, background, descriptor, size) if second_looks else (None, None, None)
    return DecodedImage(pixels, width, height, fmt, meta, _captured_at(meta), signature, *looks)


def _second_looks(
    im: Image.Image,
    rgb: Image.Image,
    background: tuple[int, int, int] | None,
    descriptor: Descriptor,
    size: tuple[int, int],
) -> tuple[np.ndarray | None, tuple[np.ndarray, bytes] | None, tuple[np.ndarray, bytes] | None]:
    """A query's second looks (see :func:`decode`: ``uncaptioned``, ``backdrop``,
    ``inside``) of the picture ``im`` shown as ``rgb`` (on ``background``, if transparent).
    A transparent picture's other backdrop is the other background, where it shows there:
    an edit that lightens a cut-out past :data:`LIGHT_CONTENT` moves it from white to black."""

    def cut(picture: Image.Image, on: tuple[int, int, int] | None) -> tuple[np.ndarray, bytes]:
        views = descriptor.cut(picture, size)
        return views, colour.signature(views, detail.grid(picture), _marker(on))

    filled = captions.filled(rgb)
    uncaptioned = None if filled is rgb else descriptor.cut(filled, size)
    other = None
    if background is None:
        on_other = backdrop.swapped(rgb)
        other = None if on_other is None else cut(on_other, None)
    else:
        tone = WHITE if background == BLACK else BLACK
        on_other = _shown_on(im.convert("RGBA"), tone)
        other = None if _blank(on_other) else cut(on_other, tone)
    inner = backdrop.inside_margins(rgb)
    return uncaptioned, other, None if inner is None else cut(inner, background)


def _marker(background: tuple[int, int, int] | None) -> bytes:
    """The colour signature's note of the background a transparent picture is shown on."""
    return b"" if background is None else colour.ON_BLACK if background == BLACK else colour.ON_WHITE


BLANK_SPREAD = 4.0  # luma standard deviation (0-255) at 64 x 64 under which a picture shows nothing


def _blank(rgb: Image.Image) -> bool:
    """Whether ``rgb`` is one flat tone: white shapes shown on white, say."""
    small = rgb.convert("L")
    small.thumbnail((64, 64))
    return float(np.asarray(small, np.float32).std()) < BLANK_SPREAD


REDUCING_GAP = 2.0  # as the views' resize: box-reduced while both sides stay this x what they need
_REDUCIBLE = ("L", "LA", "RGB", "RGBA")  # modes Image.reduce averages as they mean (RGBA premultiplied)


def _reduced(im: Image.Image, side: float) -> Image.Image:
    """A large picture (a PNG, TIFF, WebP...: JPEGs are reduced as they decode) box-reduced
    by the integer factor that keeps its shorter side >= :data:`REDUCING_GAP` x ``side``,
    the model's input side: what resizing to the views does first anyway, done once, before
    flattening, the luma grid and the views each go over the whole picture."""
    factor = int(min(im.size) / (side * REDUCING_GAP))
    return im.reduce(factor) if factor >= 2 and im.mode in _REDUCIBLE else im


def to_rgb(im: Image.Image) -> Image.Image:
    """``im`` as RGB the way the indexer sees it: a transparent picture on the background
    a screen would show it on, 16-bit and float images scaled to 8 bits."""
    return flatten(im)[0]


def flatten(im: Image.Image) -> tuple[Image.Image, tuple[int, int, int] | None]:
    """:func:`to_rgb`, and the background a transparent picture was put on (None: opaque).
    Caption bars drawn opaque on a transparent picture (:func:`captions.spans`) are no part
    of what it shows and do not choose its background: white ones would put a dark icon
    on black, unlike its source."""
    mode = im.mode
    if mode == "RGB":
        return im, None
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(im, dtype=np.float32)
        peak = 65535.0 if arr.max(initial=0) > 255 else 255.0
        im = Image.fromarray(np.clip(arr * (255.0 / peak), 0, 255).astype(np.uint8), "L")
        mode = "L"
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    if mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        rgba = im.convert("RGBA")
        if rgba.getchannel("A").getextrema()[0] == 255:  # nothing shows through: opaque
            return rgba.convert("RGB"), None
        background = _background_for(rgba)
        shown = _shown_on(rgba, background)
        if (bars := captions.spans(shown)) and (other := _background_for(_without(rgba, bars))) != background:
            background, shown = other, _shown_on(rgba, other)
        return shown, background
    return im.convert("RGB"), None  # L, 1, CMYK, YCbCr, LAB, HSV


def _shown_on(rgba: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """An RGBA picture as shown on ``background``."""
    canvas = Image.new("RGB", rgba.size, background)
    canvas.paste(rgba, mask=rgba.getchannel("A"))
    return canvas


def _without(rgba: Image.Image, rows: list[tuple[int, int]]) -> Image.Image:
    """An RGBA picture with the ``rows`` [top, end) made transparent."""
    alpha = np.array(rgba.getchannel("A"))
    for top, end in rows:
        alpha[top:end] = 0
    out = rgba.copy()
    out.putalpha(Image.fromarray(alpha))
    return out


def _background_for(rgba: Image.Image) -> tuple[int, int, int]:
    """What a transparent image is shown on, as a screen would show it legibly: white, as
    a viewer or a flattened export does, unless what is visible is white or nearly (white
    shapes, logos for dark themes: invisible on white, and all such pictures alike there),
    then black. Cut-out photos and coloured icons, even light ones, thus still match their
    copies flattened on white."""
    small = rgba.copy()
    small.thumbnail((64, 64))
    px = np.asarray(small, np.float32) / 255.0
    alpha = px[..., 3]
    if alpha.sum() < 1.0 or alpha.min() == 1.0:
        return WHITE
    rgb = px[..., :3]
    luminance = float(((rgb @ np.array([0.299, 0.587, 0.114], np.float32)) * alpha).sum() / alpha.sum())
    chroma = float(((rgb.max(axis=-1) - rgb.min(axis=-1)) * alpha).sum() / alpha.sum())
    return BLACK if luminance > LIGHT_CONTENT and chroma < PALE_CONTENT else WHITE


def exif_text(value: object) -> str:
    """An EXIF text value as shown: up to its first NUL (EXIF text is NUL-terminated; what
    follows is padding or an encoder's garbage: a Nokia N9 writes Make "Nokia\\x002"),
    spaces trimmed."""
    return str(value or "").split("\x00", 1)[0].strip()


def _exif_dict(exif: Image.Exif) -> dict:
    if not exif:
        return {}
    tags: dict = dict(exif.items())
    with contextlib.suppress(KeyError, ValueError, TypeError, SyntaxError):
        tags.update(exif.get_ifd(ExifTags.IFD.Exif))
    out: dict = {}
    for tag, value in tags.items():
        name = ExifTags.TAGS.get(tag)
        if name not in _EXIF_KEEP:
            continue
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str):
            value = exif_text(value)
            if not value:
                continue
        elif isinstance(value, int | float):
            pass
        elif hasattr(value, "denominator"):  # EXIF rational
            value = float(value) if value.denominator else None
        else:
            continue
        if value is not None:
            out[name] = value
    return out


def _captured_at(meta: dict) -> datetime | None:
    for key in ("DateTimeOriginal", "DateTimeDigitized", "DateTime"):
        value = meta.get(key)
        if isinstance(value, str):
            try:
                return datetime.strptime(value[:19], "%Y:%m:%d %H:%M:%S")
            except ValueError:
                continue
    return None


def read_image_file(
    path: str,
    size: tuple[int, int],
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    known_hashes: frozenset[str] = frozenset(),
    descriptor: str | None = None,
) -> ImageFile:
    """Read, hash and decode one file. Never raises for a bad file: sets ``error`` instead.

    A file whose hash is in ``known_hashes`` is not decoded (``known_content`` is set):
    its vector can be reused.
    """
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            refused = _refuse_unread(f, st.st_size, max_megapixels)
            if refused:
                return ImageFile(path, st.st_size, st.st_mtime_ns, error=refused)
            f.seek(0)
            data = f.read()
    except OSError as exc:
        try:
            st = os.stat(path)
        except OSError:
            return ImageFile(path, 0, 0, error=f"{CANNOT_READ} {exc.strerror or exc}")
        return ImageFile(path, st.st_size, st.st_mtime_ns, error=f"{CANNOT_READ} {exc.strerror or exc}")
    record = ImageFile(path, len(data), st.st_mtime_ns, hashlib.sha256(data).hexdigest())
    if record.content_hash in known_hashes:
        record.known_content = True
        return record
    try:
        record.image = decode(data, size, max_megapixels, descriptor)
    except ImageError as exc:
        record.error = str(exc)
    return record


READ_FREELY = 64 * 2**20  # files up to this size are read whole without a look at the header
BYTES_PER_PIXEL_MAX = 8  # 16-bit RGBA, uncompressed: no image file needs more per pixel


def _refuse_unread(f, size: int, max_megapixels: float) -> str | None:
    """For a large file, why it is refused from its header alone (not an image, too many
    pixels, far more bytes than its pixels can need: say a sparse file), else None.
    Bounds what one decoder reads into memory to what the megapixel limit allows."""
    if size <= READ_FREELY:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            width, height = Image.open(f).size
    except Image.DecompressionBombError as exc:
        return bomb_refused(exc, max_megapixels)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        return "not a recognised image format"
    if width * height > max_megapixels * 1e6:
        return too_large(width, height, max_megapixels)
    if size > BYTES_PER_PIXEL_MAX * width * height + READ_FREELY:
        return f"implausible: {size:,} bytes for a {width}x{height} image (not read)"
    return None


def thumbnail_jpeg(
    path: str | os.PathLike | BinaryIO,
    side: int = 256,
    quality: int = 80,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
) -> bytes:
    """A JPEG thumbnail of the picture as the indexer sees it (:func:`screen_view`: EXIF
    orientation applied, transparency on its background), longest side ``side``. Raises
    :class:`ImageError` with the reason for anything that cannot be shown."""
    buf = io.BytesIO()
    screen_view(path, side, max_megapixels).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def screen_view(
    path: str | os.PathLike | BinaryIO, side: int, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS
) -> Image.Image:
    """A file's picture as the indexer sees it (EXIF orientation applied, transparency on
    the background a screen shows it on, see :func:`flatten`), its longer side at most
    ``side`` (JPEGs reduced as they decode). Raises :class:`ImageError` with the reason."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.width * im.height > max_megapixels * 1e6:
                    raise ImageTooLarge(f"too large: {im.width}x{im.height}")
                im.draft("RGB", (side, side))
                im = _reduced(im, side / REDUCING_GAP)
                rgb = flatten(ImageOps.exif_transpose(im))[0]
                rgb.thumbnail((side, side), Image.Resampling.BOX)
                return rgb
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(bomb_refused(exc, max_megapixels)) from exc
    except UnidentifiedImageError as exc:
        raise ImageError("not a recognised image format") from exc
    except OSError as exc:
        raise ImageError(f"cannot read: {exc.strerror or exc}") from exc
    except Exception as exc:  # Pillow's plugins raise many kinds on corrupt files
        raise ImageError(f"cannot decode: {exc}") from exc


def is_image_name(path: str | Path) -> bool:
    return os.path.splitext(str(path))[1].lower() in SUPPORTED_EXTENSIONS


def format_named(name: str) -> str:
    """Pillow's name of an image format as a person gives it: a format (png, JPEG) or a
    file extension (jpg, .tif, heic). Raises InvalidArgument for one Pillow does not know."""
    Image.init()
    extensions = Image.registered_extensions()
    key = name.strip().lstrip(".").lower()
    found = {f.lower(): f for f in extensions.values()}.get(key) or extensions.get(f".{key}")
    if found is None:
        raise InvalidArgument(
            f"unknown image format {name!r}: give a format or a file extension (JPEG, jpg, PNG, tif, heic...)"
        )
    return found
