"""Precision and recall of duplicate thresholds on real photos with generated edits.

    python bench/dupes_quality.py [--originals 200] [--thresholds 0.75,0.8,...]

Originals: the first N photos of ../shared/photos/imagenet-sample (one per ImageNet
class; many classes look alike, so they are hard distractors). Each original gets the
edits below, saved as JPEG and decoded through lookalike's own decoder; all 1000 photos
of the sample are in the collection. A pair counts as a true duplicate when both images
come from the same original. For each threshold the script prints the recall of every
edit (original-edit pairs at or above it), overall pair recall and precision, and how
many distinct photos would be wrongly grouped. This is what the `dupes` presets are
chosen from.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from lookalike.search.edits import caption, crop_centre, jpeg, letterbox

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MODEL = SHARED / "models" / "mobilenet_v1_075_224_feature_vector"
PHOTOS = SHARED / "photos" / "imagenet-sample"


EDITS = {
    "jpeg_q30": lambda im: jpeg(im, 30),
    "half_size": lambda im: jpeg(im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS)),
    "crop_80": lambda im: jpeg(crop_centre(im, 0.8)),
    "gray": lambda im: jpeg(ImageOps.grayscale(im)),
    "text": lambda im: jpeg(caption(im)),
    "mirror": lambda im: jpeg(ImageOps.mirror(im)),
    "rotate_5": lambda im: jpeg(im.rotate(5, resample=Image.Resampling.BICUBIC, expand=True)),
    "letterbox": lambda im: jpeg(letterbox(im)),
}


def embed_all(blobs: list[bytes], model_path: str) -> np.ndarray:
    from lookalike.images import decode
    from lookalike.models import load_model

    model = load_model(model_path)
    out = []
    for start in range(0, len(blobs), 64):
        px = np.stack([decode(b, model.info.input_size).pixels for b in blobs[start : start + 64]])
        out.append(model.embed(px).vectors)
    return np.concatenate(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--originals", type=int, default=200)
    ap.add_argument("--model", default=str(MODEL), help="any --model value (default: the shared SavedModel)")
    ap.add_argument("--thresholds", default="0.70,0.75,0.80,0.85,0.88,0.90,0.92,0.95,0.97")
    args = ap.parse_args()
    if not PHOTOS.exists():
        sys.exit("needs ../shared/models and ../shared/photos")
    photos = sorted(PHOTOS.iterdir())
    blobs, source, edit = [], [], []
    for i, p in enumerate(photos):
        data = p.read_bytes()
        blobs.append(data)
        source.append(i)
        edit.append("original")
        if i < args.originals:
            im = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
            for name, fn in EDITS.items():
                blobs.append(fn(im))
                source.append(i)
                edit.append(name)
    source_arr, edit_arr = np.array(source), np.array(edit)
    print(f"{len(photos)} photos, {args.originals} with {len(EDITS)} edits each: {len(blobs)} images")
    print(f"model: {args.model}")
    vecs = embed_all(blobs, args.model)
    sims = vecs @ vecs.T
    iu = np.triu_indices(len(blobs), 1)
    pair_sims = sims[iu]
    same = source_arr[iu[0]] == source_arr[iu[1]]
    originals = np.flatnonzero(edit_arr == "original")
    orig_of = {s: o for o, s in zip(originals, source_arr[originals], strict=True)}
    per_edit = {
        name: np.array([sims[orig_of[source_arr[j]], j] for j in np.flatnonzero(edit_arr == name)])
        for name in EDITS
    }
    thresholds = [float(t) for t in args.thresholds.split(",")]
    header = f"{'threshold':>9} " + " ".join(f"{n:>9}" for n in EDITS)
    print(header + f" {'recall':>7} {'precision':>9} {'false pairs':>11}")
    for t in thresholds:
        above = pair_sims >= t
        tp = int(np.sum(above & same))
        fp = int(np.sum(above & ~same))
        recall = tp / int(np.sum(same))
        precision = tp / max(1, tp + fp)
        edits = " ".join(f"{np.mean(per_edit[n] >= t):9.3f}" for n in EDITS)
        print(f"{t:9.2f} {edits} {recall:7.3f} {precision:9.4f} {fp:11d}")
    print("\nhighest cosine between two different photos:", f"{pair_sims[~same].max():.4f}")
    print(
        "lowest original-to-edit cosine per edit:", {n: round(float(v.min()), 3) for n, v in per_edit.items()}
    )


if __name__ == "__main__":
    main()
