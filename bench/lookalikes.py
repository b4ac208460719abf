"""Same photo or not, with hard negatives: edited copies of artwork among its look-alike siblings.

    python bench/lookalikes.py [--model PATH] [--work DIR] [--json OUT] [--quick] [-k 100]
                               [--calibrate-sample N] [--families tuned|heldout|fresh]

``--families``: the table below (tuned: every default was chosen on it), or one kept out
of tuning: bench/heldout.py (two fixes came from its numbers since) or bench/fresh.py
(none); each in its own ``--work``.

The default quality benchmark. bench/quality.py saturates (every ImageNet photo is unlike
every other); real collections hold the same design in several colour schemes, light and
dark versions of a wallpaper, a logo in four colours. Those look-alikes are different
pictures, and a tool that calls them copies cannot be trusted. This benchmark proxies a
held-out set of that kind (78 large originals x 16 edits, 1,000 ImageNet distractors).

Data: artwork and photos shipped in Debian packages, fetched at run time with
``apt-get download`` (about 440 MB once; run ``apt-get update`` first) and read with
``dpkg-deb --fsys-tarfile`` into ``--work`` (default ``~/.cache/lookalike-bench``): only
the files named in :data:`lookalike_families.FAMILIES` are unpacked. Nothing is
committed to the repository. The work folder grows to about 2 GB (the .debs, 2,800
full-size edits, two indexes). Video frames are read with PyAV
(``pip install -e '.[bench]'``).

Families (the table :data:`lookalike_families.FAMILIES`; every rule is checked when the
files are read):
  * A *family* is one design; its *members* are the distinct pictures of that design. Two
    members of a family are look-alike siblings: HARD NEGATIVES, different pictures for
    every purpose here (a pair of them is false, in search and in ``dupes``). Relations:
    ``light/dark`` (GNOME -l/-d, Plasma images/images_dark), ``colour`` (the same design
    recoloured: Ubuntu MATE Cold/Dark/Radioactive/Warm, the Debian logo disc of four
    themes, the Debian emblem in red, black and white, Oxygen folders, Xfce's mouse on
    four backgrounds; MATE's striped logo drawn in white vs in black on transparency is
    ``light/dark``), ``logo`` (the same
    background with another or no logo: Debian vs Debian Edu, login preview with and
    without logo), ``overlay`` (a login screen drawn over the theme background), ``design``
    (two renderings of one theme: boot splash vs boot menu), ``frame`` (animation frames:
    the earth with and without its glow), ``label`` / ``state`` (a disc's label, the
    bars of a wireless icon), ``shot`` (near-identical shots of one scene, as bursts and
    retakes fill photo libraries: frames 20 or more apart of OpenCV's sample videos,
    a street seen from a fixed camera as people walk, a film scene, a tree in the wind;
    OpenCV's stereo, viewpoint, lighting and retouched-photo pairs; frames of ViSP's
    camera sequences, grayscale. Indexed as PNG files made from the frame or the Netpbm
    image, under ``--work``/converted). Two shots must differ by more than a re-save:
    4/255 at 64 x 64 left after fitting exposure (gain and offset per channel); a JPEG q15
    copy differs by 1-4.
  * One file per member is indexed (the *original*). Other files of the same picture in
    the packages (another resolution, the same image shipped by a second package; checked
    to agree with the original within 2/255 per pixel at 64x64) are *natural copies*: extra
    queries (row ``other_size``, outside the 16-edit totals) and files of the dupes
    library. Portrait or other-aspect layouts of a wallpaper are left out: whether they
    are "the same picture" has no clear answer.
  * Singletons (families of one) are unrelated artwork and photos of the same packages:
    wallpapers, photos, icons and clip art.
  * Transparent pictures: icons, logos, clip art, and wallpapers whose picture lives only
    in the alpha channel (``emblem-debian-symbolic``: black on transparency;
    ``emblem-debian-white``, MATE's transparent wallpapers: white on transparency). Their
    copies stay transparent (PNG, WebP with alpha) except the three JPEG edits
    (jpeg_q15, jpeg_q50, exif_rotation), which are flattened as exporters do: on white,
    or on black for a picture that is blank on white (the only way it survives a JPEG).
    Rotation and letterbox fill with transparency; opaque pictures get black.
  * Siblings must differ (mean absolute difference > 0.3/255 at 64x64) and no original may
    be blank (grey-level std >= 1 at 128x128, on its matte): checked.

Distractors: the 1,000 photos of ../shared/photos/imagenet-sample (--quick: 250).

Search: originals + distractors indexed with ``Index.add`` into a fresh index (which
calibrates itself, being over 200 photos); the 16 edits of every original (written under
``--work``, cached) searched with ``Index.search``, top K. Printed: recall@1 per edit and
overall, what the wrong top hit was (sibling / other artwork / distractor); mAP (one
relevant photo per query, AP = 1/rank); the best single-threshold F1 over all (query,
indexed photo) pairs (pairs outside a query's top K count as negatives below threshold, as
bench/quality.py does) with its precision, recall and the share of its false pairs that
are look-alike siblings; the cosine between siblings' originals; a reliability table of
the calibrated probabilities (buckets [0.5,0.9), [0.9,0.99), [0.99,1]: pairs and share
true), and for each half of the families (split by a hash of the family name) how far its
worst bucket is from what it predicts: a constant tuned to the whole set can hide halves
that err in opposite directions.

Dupes: a library of originals + 8 kinds of copies (:data:`lookalike_data.DUPES_EDITS`:
jpeg_q50, webp, half_size, thumbnail, mirror, text, crop_80, gray: what the default preset
promises, "re-encoded, resized, mirrored or captioned", and two "edited" kinds), natural
copies and the distractors, indexed anew; ``lookalike dupes --json`` (a subprocess, as a
user runs it) with the default preset, and the other presets for context. Predicted pairs
are all pairs inside a group; a pair is right when both files come from the same original
(colour variants and other siblings are NOT duplicates). Printed: pair precision and
recall, the false pairs by kind, and the share of each copy kind grouped with its
original.

Search with copies: the same queries searched in the dupes library's index, where each
original sits beside its copies (as in a real library, unlike the search index): any copy
of the query's original is a true hit. Printed: recall@1, the best F1 over every (query,
copy) pair in the top hits, and the reliability table there, which the search index alone
cannot show (it has no copies of a photo to compete).

Run time on 2 CPU cores (measured while other jobs loaded the machine, load average 3-4):
about 5 minutes with the data and edits cached, plus about 5 minutes the first time
(download, unpack, making the 2,784 edits of up to 16 MP pictures, in parallel);
--quick (48 originals, 250 distractors) under 3 minutes. Deterministic: fixed file lists
and edits, no sampling except the index's own seeded calibration; the package versions
used are in the JSON (a Debian point release could change a file: the checks above catch
a missing or changed one).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from lookalike_data import (
    DUPES_EDITS,
    EDITS,
    MODEL,
    OTHER_SIZE,
    PHOTOS,
    QUICK_DISTRACTORS,
    WRONG,
    K,
    build_dataset,
    build_library,
    distractor_links,
    fetch,
    make_queries,
)
from lookalike_families import FAMILIES, quick_families
from lookalike_measures import (
    index_folder,
    pair_f1,
    reliability,
    run_dupes,
    run_search,
    sibling_cosines,
    summarize_search,
)

# --- output -----------------------------------------------------------------------------


def _wrong(counts: dict) -> str:
    return "/".join(str(counts[k]) for k in WRONG)


def print_report(out: dict) -> None:
    s, data = out["search"], out["data"]
    print(f"model: {out['model']}")
    print(
        f"data: {data['originals']} originals in {data['families']} families from {len(data['packages'])} "
        f"Debian packages; {data['with_siblings']} originals have look-alike siblings "
        f"({data['sibling_pairs']} sibling pairs, {data['transparent']} transparent); "
        f"distractors: {data['distractors']} ImageNet photos"
    )
    print(
        f"search: {data['queries']} queries ({data['originals']} x {len(EDITS)} edits) + "
        f"{data['other_size_queries']} natural copies; top {out['k']}; index calibration "
        f"{out['search_index']['calibration']['how']}\n"
    )
    n = data["originals"]
    print(f"{'edit (' + str(n) + ' queries each)':<30}{'recall@1':>9}{'  wrong top-1 sib/shot/art/dis':>26}"
          f"{'pair recall@thr':>17}{'min cos':>9}")  # fmt: skip
    print("-" * 91)
    for name, e in s["per_edit"].items():
        w = e["top1_wrong"]
        label = name if name in EDITS else f"{name} ({e['queries']}, not in totals)"
        print(f"  {label:<28}{e['recall_at_1']:>9.3f}{_wrong(w):>22}    "
              f"{e['recall_at_threshold']:>15.3f}{e['min_cosine']:>9.3f}")  # fmt: skip
    print("-" * 91)
    w = s["top1_wrong"]
    print(f"{'recall@1 overall':<30}{s['recall_at_1']:>9.3f}{_wrong(w):>22}")
    print(f"{'mAP (AP = 1/rank, top ' + str(out['k']) + ')':<30}{s['map']:>9.3f}")
    print(f"{'original not in top ' + str(out['k']):<30}{s['not_in_top_k']:>9}")
    print("recall@1 by subset: " + "; ".join(
        f"{name} {v['recall_at_1']:.3f} ({v['queries']})" for name, v in s["subsets"].items() if v["queries"]
    ))  # fmt: skip
    b = s["best_f1"]
    print(
        f"best single-threshold F1 {b['f1']:.3f} at cosine {b['threshold']:.4f}: "
        f"precision {b['precision']:.3f}, recall {b['recall']:.3f}; {b['false_pairs']} false pairs, "
        f"{b['lookalike_share_of_false']:.0%} of them look-alikes (siblings/shots/other artwork/distractors "
        f"{_wrong(b['false_by_kind'])})"
        + ("" if b["exact"] else f" [threshold within some query's top-{out['k']} tail: optimistic]")
    )
    c = s["at_copies_preset"]
    print(
        f"at cosine 0.90 (the copies preset): precision {c['precision']:.3f}, recall {c['recall']:.3f}; "
        f"{c['false_pairs']} false pairs, {c['lookalike_share_of_false']:.0%} look-alikes"
    )
    sib = out["siblings"]
    top = list(sib["pairs"].items())[:6]
    print(
        f"sibling originals: cosine median {sib['median']:.3f}, max {sib['max']:.3f}; {sib['above_0.90']} of "
        f"{sib['n_pairs']} pairs at >= 0.90; highest: " + ", ".join(f"{p} {v:.3f}" for p, v in top)
    )
    cal = out["search_index"]["calibration"]
    rel = s["reliability"]
    print(
        f"\ncalibrated probabilities (a {cal['a']:.2f}, b {cal['b']:.2f}; P=0.5 at cosine "
        f"{cal['cosine_at_p0.5']:.4f}, P=0.99 at {cal['cosine_at_p0.99']:.4f}), "
        f"over the top-{out['k']} pairs:"
    )
    _print_reliability(rel)
    copies = out.get("search_with_copies")
    if copies:
        print(
            "the same queries searched in the dupes library (each original beside 8-9 copies; any copy "
            f"is a true hit): recall@1 {copies['recall_at_1']:.3f}; best F1 over every (query, copy) pair "
            f"{copies['pair_f1']['f1']:.3f} (P {copies['pair_f1']['precision']:.3f}, R "
            f"{copies['pair_f1']['recall']:.3f} of the true pairs among the top-{out['k']}); probabilities:"
        )
        _print_reliability(copies["reliability"])
    print()
    for d in out["dupes"]:
        fk = d["false_by_kind"]
        print(
            f"dupes --preset {d['preset']}: {d['groups']} groups, {d['predicted_pairs']} pairs; "
            "pair precision "
            f"{d['precision']:.3f}, recall {d['recall']:.3f} (of {d['true_pairs']}); false pairs siblings/"
            f"shots/other artwork/distractors {_wrong(fk)}"
        )
        if d["preset"] == "default":
            kinds = ", ".join(f"{k} {v:.2f}" for k, v in d["grouped_with_original"].items())
            print(f"  copies grouped with their original: {kinds}")
            kept = dict(d["kept"])
            held = sum(kept.values())
            instead = ", ".join(f"{k} {v}" for k, v in kept.items() if k != "original") or "none"
            print(f"  kept the original (or its larger version) in {kept.pop('original', 0)} of {held} groups"
                  f" holding it; else kept: {instead}")  # fmt: skip
    lib = out["dupes_index"]
    print(f"  library: {out['data']['library_files']} files + {data['distractors']} distractors")
    t = out["seconds"]
    print("\nseconds: " + ", ".join(f"{k} {v:.0f}" for k, v in t.items()))
    for name, built in (("search index", out["search_index"]), ("dupes index", lib)):
        if built["errors"]:
            print(f"note: {name}: {built['errors']} files could not be indexed: {built['error_samples']}")


def _print_reliability(rel: dict) -> None:
    """A reliability table: per probability bucket, the share of hits that are true."""
    if not rel.get("calibrated"):
        print("  the index is not calibrated: no probabilities")
        return
    print(f"  {'P bucket':<14}{'pairs':>7}{'true':>7}{'share true':>12}{'mean P':>9}{'false lookalikes':>18}"
          f"{'gave way (true)':>17}")  # fmt: skip
    for bk in rel["buckets"]:
        lo, hi = bk["range"]
        rng = f"[{lo:g},{hi:g}" + ("]" if hi >= 1 else ")")
        way = f"{bk['gave_way']} ({bk['gave_way_true']})"
        print(f"  {rng:<14}{bk['pairs']:>7}{bk['true']:>7}{bk['share_true']:>12.3f}"
              f"{bk['mean_probability']:>9.4f}{bk['false_lookalikes']:>18}{way:>17}")  # fmt: skip
    f1 = rel["best_f1_over_probability"]
    print(
        f"  true pairs below P 0.5: {rel['true_pairs_below_0.5']}; best F1 over probabilities "
        f"{f1['f1']:.3f} at P {f1['threshold']:.3f} (precision {f1['precision']:.3f}, "
        f"recall {f1['recall']:.3f})"
    )
    if halves := rel.get("halves"):
        off = " / ".join(f"{h['worst_bucket_off_by']:.3f}" for h in halves)
        hi = " / ".join(f"{h['share_true_at_p0.9']:.3f}" for h in halves)
        print(f"  each half of the families ({' / '.join(str(h['queries']) for h in halves)} queries): "
              f"worst bucket off by {off}; share true at P >= 0.9 {hi}")  # fmt: skip


def _plain(o: object) -> object:
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(MODEL), help="any --model value (default: the shared SavedModel)")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lookalike-bench"
    ap.add_argument("--work", type=Path, default=cache, help=f"downloads, edits, indexes (default {cache})")
    ap.add_argument("--json", type=Path, metavar="OUT", help="also write every number here")
    ap.add_argument("--quick", action="store_true", help="a smoke run: half the families with siblings, a "
                    f"quarter of the singletons, {QUICK_DISTRACTORS} distractors")  # fmt: skip
    ap.add_argument("-k", type=int, default=K, help="hits per query")
    ap.add_argument("--families", choices=("tuned", "heldout", "fresh"), default="tuned",
                    help="tuned: FAMILIES, the table every default was chosen on; heldout: bench/heldout.py, "
                         "families no decision was made on until two fixes came from it; fresh: "
                         "bench/fresh.py, made after that (use another --work for each)")  # fmt: skip
    ap.add_argument("--calibrate-sample", type=int, metavar="N",
                    help="recalibrate each index on N photos (as `lookalike calibrate --sample N`) "
                         "instead of keeping the automatic calibration")  # fmt: skip
    args = ap.parse_args()
    missing = [p for p in (PHOTOS, MODEL if args.model == str(MODEL) else None) if p and not p.exists()]
    if missing:
        print(f"skipped: needs {', '.join(map(str, missing))} (../shared is not here)")
        return
    began = time.perf_counter()
    seconds: dict[str, float] = {}
    work = args.work.expanduser().resolve()
    if args.families == "heldout":
        from heldout import HELDOUT as table
    elif args.families == "fresh":
        from fresh import FRESH as table
    else:
        table = FAMILIES
    families = quick_families(table) if args.quick else table
    versions = fetch(families, work)
    data = build_dataset(families, work)
    distractors = sorted(p for p in PHOTOS.iterdir() if p.is_file() and not p.name.startswith("."))
    data.distractors = distractors[:: len(distractors) // QUICK_DISTRACTORS] if args.quick else distractors
    distractor_folder = distractor_links(data.distractors, work) if args.quick else PHOTOS
    make_queries(data, work)
    seconds["data and edits"] = time.perf_counter() - began

    from lookalike.models import load_model

    print("loading the model ...", file=sys.stderr)
    load_model(args.model)
    indexes = work / "indexes"
    start = time.perf_counter()
    print(
        f"indexing {len(data.members)} originals + {len(data.distractors)} distractors ...", file=sys.stderr
    )
    search_index = index_folder(indexes / "search", [work / "originals", distractor_folder], args.model,
                                args.calibrate_sample)  # fmt: skip
    seconds["search index"] = time.perf_counter() - start
    print(f"searching {len(data.queries)} queries ...", file=sys.stderr)
    rows, search_seconds = run_search(data, indexes / "search", args.k)
    seconds["search"] = search_seconds
    siblings = sibling_cosines(data, indexes / "search")

    start = time.perf_counter()
    owner = build_library(data, work)
    print(f"indexing the dupes library ({len(owner)} files + distractors) ...", file=sys.stderr)
    dupes_index = index_folder(indexes / "dupes", [work / "library", distractor_folder], args.model,
                               args.calibrate_sample)  # fmt: skip
    seconds["dupes index"] = time.perf_counter() - start
    start = time.perf_counter()
    dupes = [run_dupes(indexes / "dupes", owner, data, p) for p in (None, "edited", "similar")]
    seconds["dupes"] = time.perf_counter() - start
    print("searching the dupes library (an index holding copies) ...", file=sys.stderr)
    copy_rows, seconds["search with copies"] = run_search(data, indexes / "dupes", args.k, owner=owner)
    with_copies = [r for r in copy_rows if r.edit in EDITS]
    seconds["total"] = time.perf_counter() - began

    multi = [f for f in families if len(f.members) > 1]
    out = {
        "model": args.model,
        "k": args.k,
        "quick": args.quick,
        "families": args.families,
        "data": {
            "packages": versions,
            "families": len(families),
            "originals": len(data.members),
            "with_siblings": sum(len(f.members) for f in multi),
            "sibling_families": {f.name: [f.relation, [m.label for m in f.members]] for f in multi},
            "sibling_pairs": sum(len(f.members) * (len(f.members) - 1) // 2 for f in multi),
            "transparent": len(data.alpha),
            "transparent_blank_on_white": sorted(data.black_matte),
            "distractors": len(data.distractors),
            "queries": sum(q[0] in EDITS for q in data.queries),
            "other_size_queries": sum(q[0] == OTHER_SIZE for q in data.queries),
            "library_files": len(owner),
        },
        "search_index": search_index,
        "search": summarize_search(rows, data),
        "siblings": siblings,
        "dupes_index": dupes_index,
        "dupes": dupes,
        "search_with_copies": {
            "recall_at_1": float(np.mean([r.rank == 1 for r in with_copies])),
            "pair_f1": pair_f1(with_copies),
            "reliability": reliability(with_copies, data.family_of),
        },
        "dupes_edits": list(DUPES_EDITS),
        "seconds": seconds,
    }
    print_report(out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=_plain) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
