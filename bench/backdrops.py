"""Transparent originals found from their opaque copies, on either backdrop.

    python bench/lookalikes.py --work DIR      # first: its data and search index
    python bench/backdrops.py --work DIR [--json OUT]

Each transparent original of bench/lookalikes.py (icons, logos, designs drawn on
transparency) is made opaque three ways, as its copies in the wild show it: on black (a
screenshot on a dark desktop), on white (an export's matte), and with its alpha dropped
(Pillow's ``convert("RGB")``: whatever colour the transparent pixels hold, black for most
icons, white for some). Each copy (JPEG q90) is searched for in the benchmark's search
index (the originals and 1,000 ImageNet photos). Reported for each way: the share of
copies whose original is the top hit, of those whose picture can be seen at all (not white
on white, black on black: grey-level std >= 1 at 128 px), and the top hits' P(same) and
relation when right.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
import lookalike_data  # bench/lookalikes.py's data layout and edits
from lookalike_families import FAMILIES  # ... and its families

WAYS = ("on black", "on white", "alpha dropped")
FOLDER = "backdrops-v1"  # bump when the copies change, so cached files are not reused


def opaque(rgba: Image.Image, raw: Image.Image, way: str) -> Image.Image:
    """``rgba`` (the picture) shown opaque ``way``; ``raw`` as the file holds it."""
    if way == "alpha dropped":
        return raw.convert("RGB")
    canvas = Image.new("RGB", rgba.size, (0, 0, 0) if way == "on black" else (255, 255, 255))
    canvas.paste(rgba, mask=rgba.getchannel("A"))
    return canvas


def make_copies(data: lookalike_data.Dataset, work: Path) -> list[tuple[str, str, Path, bool]]:
    """(way, member, copy, visible) for every transparent original, made where missing."""
    out = []
    for member in sorted(data.alpha):
        with Image.open(data.original[member]) as raw:
            raw.load()
            rgba = raw.convert("RGBA")
            for way in WAYS:
                path = work / FOLDER / way.replace(" ", "_") / f"{member}.jpg"
                shown = opaque(rgba, raw, way)
                if not path.exists():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    shown.save(path, quality=90)
                out.append((way, member, path, not lookalike_data.is_blank(shown)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True, help="bench/lookalikes.py's --work folder")
    ap.add_argument("--json", type=Path, metavar="OUT", help="also write every number here")
    args = ap.parse_args()
    work = args.work.expanduser().resolve()
    index_dir = work / "indexes" / "search"
    if not index_dir.exists():
        raise SystemExit(f"no {index_dir}: run python bench/lookalikes.py --work {work} first")
    data = lookalike_data.build_dataset(FAMILIES, work)
    copies = make_copies(data, work)
    from lookalike.api import Index

    with Index(index_dir) as index:
        results = index.search([str(c[2]) for c in copies], k=lookalike_data.K)
    report: dict = {}
    for way in WAYS:
        rows = []
        for (w, member, path, visible), result in zip(copies, results, strict=True):
            if w != way:
                continue
            if result.error:
                raise SystemExit(f"{path}: {result.error}")
            top = result.hits[0] if result.hits else None
            right = top is not None and Path(top.path).resolve() == data.original[member]
            rows.append((member, visible, right, top))
        seen = [r for r in rows if r[1]]
        right = [r for r in seen if r[2]]
        probabilities = [r[3].probability for r in right if r[3].probability is not None]
        report[way] = {
            "copies": len(rows),
            "visible": len(seen),
            "top_hit_right": len(right),
            "share": len(right) / max(len(seen), 1),
            "p_when_right_median": float(np.median(probabilities)) if probabilities else None,
            "copy_relation_when_right": sum(r[3].relation == "copy" for r in right),
            "wrong": sorted(r[0] for r in seen if not r[2]),
        }
        r = report[way]
        print(f"{way:14s} original first for {r['top_hit_right']} of {r['visible']} visible copies "
              f"({r['share']:.3f}; {r['copies'] - r['visible']} not visible), median P when right "
              f"{r['p_when_right_median'] or 0:.3f}, labelled copy {r['copy_relation_when_right']}; "
              f"wrong: {', '.join(r['wrong']) or 'none'}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
