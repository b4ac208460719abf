"""Scores that mean the same across models and descriptors: cosine -> P(same photo).

Each index fits its own mapping on its own collection (:func:`fit`): a sample of its
photos gets the edits of :data:`EDITS` (what a copy of a photo typically went through);
the cosine between an edit and its original is a "same photo" example, the cosine
between a photo and its nearest *other* indexed photos a "different photo" example -
leaving out the collection's own copies of it (the same bytes, or the same picture at
thumbnail level), which a real library has and which would teach that copies differ.
A logistic curve p = 1 / (1 + exp(-(a cosine + b))) is fitted with both kinds weighted
equally, so p is the probability of "same photo" at even prior odds.
Duplicate presets are then probability levels (``dupes --min-probability``) that mean
the same whatever the model or descriptor.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from lookalike import colour
from lookalike.errors import CalibrationError

if TYPE_CHECKING:
    from lookalike.storage.catalogue import FileRow
    from lookalike.storage.store import Store

MIN_SAMPLE = 5
DEFAULT_SAMPLE = 200  # photos edited for `lookalike calibrate`
AUTO_SAMPLE = 100  # ... and for the calibration an index makes of itself (~20 s)
AUTO_CALIBRATE = 200  # an index with this many photos calibrates itself once
NEIGHBOURS = 10  # "different photo" examples per sampled photo: its nearest others
log = logging.getLogger(__name__)
# Image bytes -> (unit vectors of the decodable ones, per-image error or None), as Index.embed.
EmbedBytes = Callable[[list[bytes]], tuple[np.ndarray, list[str | None]]]


# The edits, public: the benchmarks (bench/quality.py, bench/dupes_quality.py) make the same ones.
def jpeg(im: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def crop_centre(im: Image.Image, keep: float) -> Image.Image:
    """The centred part keeping ``keep`` of the width and of the height."""
    w, h = im.size
    dw, dh = int(w * (1 - keep) / 2), int(h * (1 - keep) / 2)
    return im.crop((dw, dh, w - dw, h - dh))


def caption(im: Image.Image) -> Image.Image:
    """A white caption with a black outline across the lower part, as on shared photos."""
    out = im.convert("RGB")
    size = max(12, im.height // 8)
    font = ImageFont.load_default(size=size)
    ImageDraw.Draw(out).text((im.width // 20, im.height - 2 * size), "© lookalike 2026", fill="white",
                             font=font, stroke_width=2, stroke_fill="black")  # fmt: skip
    return out


def letterbox(im: Image.Image) -> Image.Image:
    """Padded with black to a square."""
    side = max(im.size)
    canvas = Image.new("RGB", (side, side), "black")
    canvas.paste(im.convert("RGB"), ((side - im.width) // 2, (side - im.height) // 2))
    return canvas


EDITS: dict[str, Callable[[Image.Image], bytes]] = {
    "jpeg_q30": lambda im: jpeg(im, 30),
    "half_size": lambda im: jpeg(im.resize((max(1, im.width // 2), max(1, im.height // 2)))),
    "crop_80": lambda im: jpeg(crop_centre(im, 0.8)),
    "gray": lambda im: jpeg(ImageOps.grayscale(im)),
    "text": lambda im: jpeg(caption(im)),
    "mirror": lambda im: jpeg(ImageOps.mirror(im)),
    "rotate_5": lambda im: jpeg(im.convert("RGB").rotate(5, resample=Image.Resampling.BICUBIC, expand=True)),
    "letterbox": lambda im: jpeg(letterbox(im)),
}


@dataclass
class Calibration:
    """p(same photo | cosine) = 1 / (1 + exp(-(a cosine + b)))."""

    a: float
    b: float
    positives: int
    negatives: int
    photos: int

    def probability(self, cosine: np.ndarray | float) -> np.ndarray | float:
        z = self.a * np.asarray(cosine, np.float64) + self.b
        p = 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))
        return float(p) if np.ndim(p) == 0 else p

    @property
    def usable(self) -> bool:
        """Whether P(same) rises with cosine, as any fit :func:`fit` accepts does."""
        return self.a > 0

    def cosine_for(self, probability: float) -> float:
        """The cosine at which ``probability`` is reached (a duplicate threshold)."""
        if not 0.0 < probability < 1.0:
            raise CalibrationError("a probability level must be strictly between 0 and 1")
        if not self.usable:
            raise CalibrationError("this calibration does not rise with cosine; recalibrate")
        return (math.log(probability / (1 - probability)) - self.b) / self.a

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> Calibration | None:
        """The stored calibration; None when there is none, or only a failed attempt, or
        (from older versions) a curve that falls with cosine."""
        if not d or "a" not in d:
            return None
        cal = cls(**{k: d[k] for k in ("a", "b", "positives", "negatives", "photos")})
        return cal if cal.usable else None


EDIT_SIDE = 640  # edits are made on a reduced decode: ~3x the model input, enough for a 60% crop


def edited_copies(data: bytes) -> list[bytes]:
    """The :data:`EDITS` of one image file's bytes (EXIF orientation applied first), made
    on a copy reduced to :data:`EDIT_SIDE` (JPEGs decoded reduced by libjpeg): a 14 MP
    wallpaper costs what a photo does."""
    with Image.open(io.BytesIO(data)) as im:
        im.draft("RGB", (EDIT_SIDE, EDIT_SIDE))
        im.thumbnail((EDIT_SIDE, EDIT_SIDE), Image.Resampling.BILINEAR, reducing_gap=2.0)
        base = ImageOps.exif_transpose(im).convert("RGB")
    return [edit(base) for edit in EDITS.values()]


def fit_logistic(positives: np.ndarray, negatives: np.ndarray, l2: float = 1e-7) -> tuple[float, float]:
    """(a, b) of a class-balanced logistic regression on one feature, by Newton's method."""
    x = np.concatenate([positives, negatives]).astype(np.float64)
    y = np.concatenate([np.ones(len(positives)), np.zeros(len(negatives))])
    w = np.concatenate(
        [np.full(len(positives), 0.5 / len(positives)), np.full(len(negatives), 0.5 / len(negatives))]
    )
    X = np.stack([x, np.ones_like(x)], axis=1)
    theta = np.zeros(2)
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-np.clip(X @ theta, -50, 50)))
        grad = X.T @ (w * (p - y)) + l2 * np.array([theta[0], 0.0])
        hess = (X * (w * p * (1 - p))[:, None]).T @ X + l2 * np.diag([1.0, 0.0]) + 1e-12 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.abs(step).max() < 1e-9:
            break
    return float(theta[0]), float(theta[1])


def fit(
    sample: list[tuple[int, bytes, np.ndarray]],
    embed: Callable[[list[bytes]], np.ndarray],
    neighbours: Callable[[list[int], np.ndarray, int], list[list[float]]],
) -> Calibration:
    """Fit on ``sample``: (id, file bytes, stored vector) of indexed photos.

    ``embed`` gives unit vectors of image bytes (as the index makes them); ``neighbours``
    gives, per (id, vector), the cosines of its nearest indexed photos of other content.
    """
    positives: list[float] = []
    usable = []
    for item in sample:
        try:
            copies = edited_copies(item[1])
        except (OSError, ValueError, Image.DecompressionBombError):
            continue  # a file that decodes no more (truncated since, ...): not an example
        positives.extend((embed(copies) @ item[2]).tolist())
        usable.append(item)
    if len(usable) < MIN_SAMPLE:
        raise CalibrationError(
            f"calibration needs at least {MIN_SAMPLE} readable indexed photos, found {len(usable)}"
        )
    stored = np.stack([v for _, _, v in usable])
    negatives = [s for row in neighbours([i for i, _, _ in usable], stored, NEIGHBOURS) for s in row]
    if not negatives:
        raise CalibrationError("calibration needs other photos in the index to compare with")
    a, b = fit_logistic(np.array(positives), np.array(negatives))
    if not a > 0:  # a falling curve would call the least similar pairs copies
        raise CalibrationError(
            f"calibration failed: copies score no higher than other photos here (edited copies: median "
            f"cosine {np.median(positives):.3f}; nearest other photos: {np.median(negatives):.3f}), so "
            "cosine cannot be read as a probability on this collection; scores stay uncalibrated"
        )
    return Calibration(a, b, len(positives), len(negatives), len(usable))


def calibrate_store(
    store: Store, embed: EmbedBytes, sample: int = DEFAULT_SAMPLE, seed: int = 0
) -> Calibration:
    """Fit the calibration of ``store`` on up to ``sample`` of its photos and record it.

    Photos are drawn at random (``seed``) among those still readable and unchanged since
    they were indexed (same SHA-256), so an edit compares with the vector stored for it;
    a photo's "different photo" examples are its nearest neighbours that are not copies
    of it (see :func:`_own_copy`).
    ``embed`` embeds image bytes as the index does (its model and descriptor).
    """
    known = store.catalogue.known().items()
    rows = [(k.id, path, k.content_hash) for path, k in known if k.status == "ok"]
    picked: list[tuple[int, bytes, str | None]] = []
    for i in np.random.default_rng(seed).permutation(len(rows)):  # unreadable files are skipped
        fid, path, digest = rows[i]
        try:
            data = Path(path).read_bytes()
        except OSError:
            continue
        if digest is not None and hashlib.sha256(data).hexdigest() != digest:
            continue  # changed since it was indexed: its edits are not copies of the stored vector
        picked.append((fid, data, digest))
        if len(picked) == sample:
            break
    ids, vecs = store.catalogue.load_vectors([fid for fid, _, _ in picked])
    vector_of = dict(zip(ids.tolist(), vecs, strict=True))
    picked = [p for p in picked if p[0] in vector_of]

    def embed_decodable(datas: list[bytes]) -> np.ndarray:
        vectors, errors = embed(datas)
        return vectors[: len(datas) - sum(e is not None for e in errors)]

    rows_of = store.catalogue.rows(vector_of)

    def neighbours(fids: list[int], vectors: np.ndarray, k: int) -> list[list[float]]:
        scores, found = store.search(vectors, 2 * k + 5)
        rows = store.catalogue.rows(set(found[found >= 0].tolist()))
        out = []
        for row_s, row_i, fid in zip(scores, found, fids, strict=True):
            me = rows_of.get(fid)
            other = [
                float(sc)
                for sc, i in zip(row_s, row_i, strict=True)
                if i >= 0 and (them := rows.get(int(i))) is not None and not _own_copy(me, them)
            ]
            out.append(other[:k])
        return out

    cal = fit([(fid, data, vector_of[fid]) for fid, data, _ in picked], embed_decodable, neighbours)
    store.set_calibration(cal.to_dict())
    return cal


SAME_PICTURE_CHROMA, SAME_PICTURE_LAYOUT = 0.1, 0.9  # thumbnails this alike: a copy, whatever its cosine


def _own_copy(me: FileRow | None, them: FileRow) -> bool:
    """Whether an indexed neighbour is a copy of a sampled photo, not a "different photo"
    example: the same bytes, or the same picture at thumbnail level (colours and light/dark
    layout alike: a re-encode, resize or mirror already in the collection)."""
    if me is None:
        return True
    if me.content_hash is not None and me.content_hash == them.content_hash:
        return True
    if not me.colour or not them.colour:
        return False
    rel = colour.compare(me.colour, them.colour)
    return rel.chroma <= SAME_PICTURE_CHROMA and rel.layout >= SAME_PICTURE_LAYOUT


def auto_calibrate(store: Store, embed: EmbedBytes) -> Calibration | None:
    """The calibration an index makes of itself at the end of an indexing run.

    Once it holds :data:`AUTO_CALIBRATE` photos and has no usable calibration, whatever
    the run indexed (one killed during the calibration resumes with nothing to index,
    and must calibrate still); a refusal is logged and recorded, and tried again
    only when the index has doubled.
    """
    state = store.manifest.calibration or {}
    n = store.vectors.ntotal
    if Calibration.from_dict(state) is not None:
        return None
    if n < max(AUTO_CALIBRATE, 2 * state.get("failed_at", 0)):
        return None
    try:
        return calibrate_store(store, embed, AUTO_SAMPLE, 0)
    except (ValueError, OSError) as exc:  # CalibrationError, or the files changed meanwhile
        log.warning("score calibration skipped: %s", exc)
        store.set_calibration({"failed_at": n, "reason": str(exc)})  # again at 2x
        return None
