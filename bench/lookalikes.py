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
the files named in :data:`FAMILIES` are unpacked. Nothing is committed to the repository.
The work folder grows to about 2 GB (the .debs, 2,800 full-size edits, two indexes).
Video frames are read with PyAV (``pip install -e '.[bench]'``).

Families (the table :data:`FAMILIES`; every rule is checked when the files are read):
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

Dupes: a library of originals + 8 kinds of copies (:data:`DUPES_EDITS`: jpeg_q50, webp,
half_size, thumbnail, mirror, text, crop_80, gray: what the default preset promises,
"re-encoded, resized, mirrored or captioned", and two "edited" kinds) + natural copies
+ the distractors, indexed anew; ``lookalike dupes --json`` (a subprocess, as a user runs
it) with the default preset, and the other presets for context. Predicted pairs are all
pairs inside a group; a pair is right when both files come from the same original (colour
variants and other siblings are NOT duplicates). Printed: pair precision and recall, the
false pairs by kind, and the share of each copy kind grouped with its original.

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
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
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


# --- the data: families of pictures in Debian packages ---------------------------------


@dataclass(frozen=True)
class Member:
    family: str
    label: str  # "" for a singleton
    package: str
    path: str  # inside the package: the file indexed ("FILE#N": frame N of a video)
    copies: tuple[tuple[str, str], ...] = ()  # (package, path): the same picture elsewhere

    @property
    def id(self) -> str:
        return f"{self.family}.{self.label}" if self.label else self.family

    @property
    def file(self) -> str:
        """The file in the package (a video for a frame)."""
        return self.path.split("#")[0]

    @property
    def frame(self) -> int | None:
        return int(self.path.split("#")[1]) if "#" in self.path else None

    @property
    def ext(self) -> str:
        return ".png" if self.converted else Path(self.path).suffix.lower()

    @property
    def converted(self) -> bool:
        """Indexed as a PNG made from the package file: a video frame, or a Netpbm image
        (a format image tools export to PNG before anyone collects it)."""
        return self.frame is not None or Path(self.path).suffix.lower() in NETPBM


@dataclass(frozen=True)
class Family:
    name: str
    relation: str  # what sets its members apart ("" for a singleton)
    members: tuple[Member, ...]


GNOME = "gnome-backgrounds", "usr/share/backgrounds/gnome/"
MATE = "mate-backgrounds", "usr/share/backgrounds/mate/"
PLASMA = "plasma-workspace-wallpapers", "usr/share/wallpapers/"
XFCE = "xfdesktop4-data", "usr/share/backgrounds/xfce/"
SWAY = "sway-backgrounds", "usr/share/backgrounds/sway/"
UKUI = "ukui-wallpapers", "usr/share/backgrounds/"
LOMIRI16 = "lomiri-wallpapers-16.04", "usr/share/backgrounds/"
LOMIRI20 = "lomiri-wallpapers-20.04", "usr/share/backgrounds/"
DEBIAN = "desktop-base", "usr/share/"
EDU_EMERALD = "debian-edu-artwork-emerald", "usr/share/"
EDU_HOMEWORLD = "debian-edu-artwork-homeworld", "usr/share/"
EDU_BUSTER = "debian-edu-artwork-buster", "usr/share/"
EDU_SOFTWAVES = "debian-edu-artwork-softwaves", "usr/share/"
OXYGEN = "oxygen-icon-theme", "usr/share/icons/oxygen/base/256x256/"
OPENCV = "opencv-doc", "usr/share/doc/opencv-doc/examples/data/"
VISP = "visp-images-data", "usr/share/visp-images-data/ViSP-images/"
NETPBM = (".pgm", ".ppm")


def _m(source: tuple[str, str], path: str, label: str = "", *copies: tuple[tuple[str, str], str]) -> tuple:
    return label, source[0], source[1] + path, tuple((s[0], s[1] + p) for s, p in copies)


def _family(name: str, relation: str, *members: tuple) -> Family:
    return Family(name, relation, tuple(Member(name, *m) for m in members))


def _single(name: str, source: tuple[str, str], path: str, *copies: tuple[tuple[str, str], str]) -> Family:
    return _family(name, "", _m(source, path, "", *copies))


def _light_dark(name: str, source: tuple[str, str], light: str, dark: str) -> Family:
    return _family(name, "light/dark", _m(source, light, "light"), _m(source, dark, "dark"))


def _shots(name: str, source: tuple[str, str], *paths: str) -> Family:
    """Near-identical shots of one scene: frames of a video or an image sequence, a stereo
    pair, the same scene from another viewpoint or in other light."""
    return _family(name, "shot", *(_m(source, p, f"s{i}") for i, p in enumerate(paths, 1)))


_PL = "{}/contents/images/{}"
EMBLEMS = "icons/desktop-base/256x256/emblems"
FAMILIES: tuple[Family, ...] = (
    # -- families with look-alike siblings (hard negatives) --
    *(_light_dark(f"gnome-{n}", GNOME, f"{n}-l.webp", f"{n}-d.webp")
      for n in ("adwaita", "grid", "licorice", "pixels", "symbolic", "truchet", "wood")),
    _light_dark("plasma-flow", PLASMA, "Flow/contents/images/5120x2880.jpg",
                "Flow/contents/images_dark/5120x2880.jpg"),
    _light_dark("plasma-kay", PLASMA, "Kay/contents/images/5120x2880.png",
                "Kay/contents/images_dark/5120x2880.png"),
    _light_dark("plasma-patak", PLASMA, "Patak/contents/images/5120x2880.png",
                "Patak/contents/images_dark/3840x2160.png"),
    _family("ubuntu-mate", "colour", *(_m(MATE, f"desktop/Ubuntu-Mate-{c}-no-logo.png", c.lower())
                                       for c in ("Cold", "Dark", "Radioactive", "Warm"))),
    _family("xfce", "colour", *(_m(XFCE, f"xfce-{n}", n.split(".")[0])
                                for n in ("blue.jpg", "teal.jpg", "stripes.png", "verticals.png"))),
    _family("debian-logo-disc", "colour",
            _m(DEBIAN, "plymouth/themes/homeworld/logo.png", "homeworld"),
            _m(DEBIAN, "plymouth/themes/softwaves/logo.png", "softwaves"),
            _m(DEBIAN, "plymouth/themes/futureprototype/logo.png", "futureprototype"),
            _m(EDU_HOMEWORLD, "plymouth/themes/debian-edu-homeworld/logo.png", "edu-homeworld")),
    _family("debian-emblem", "colour", *(_m(DEBIAN, f"{EMBLEMS}/emblem-debian{n}.png", n.strip("-") or "red")
                                          for n in ("", "-symbolic", "-white"))),
    _light_dark("mate-stripes", MATE, "desktop/MATE-Stripes-Light.png", "desktop/MATE-Stripes-Dark.png"),
    _family("oxygen-folder", "colour", *(_m(OXYGEN, f"places/folder-{c}.png", c)
                                         for c in ("blue", "red", "green", "yellow", "sound"))),
    _family("softwaves-boot", "logo",
            _m(DEBIAN, "desktop-base/softwaves-theme/grub/grub-16x9.png", "debian"),
            _m(EDU_SOFTWAVES, "desktop-base/debian-edu-softwaves-theme/grub/grub-16x9.png", "edu")),
    _family("lines-login", "logo",
            _m(DEBIAN, "desktop-base/lines-theme/login/sddm-preview.jpg", "logo"),
            _m(DEBIAN, "desktop-base/lines-theme/login/sddm-preview-nologo.jpg", "nologo")),
    _family("joy", "overlay",
            _m(DEBIAN, "plymouth/themes/joy/background.png", "splash"),
            _m(DEBIAN, "desktop-base/joy-theme/login/sddm-preview.jpg", "login"),
            _m(DEBIAN, "desktop-base/joy-theme/grub/grub-16x9.png", "boot")),
    _family("homeworld", "design",
            _m(DEBIAN, "desktop-base/homeworld-theme/grub/grub-16x9.png", "boot"),
            _m(EDU_HOMEWORLD, "plymouth/themes/debian-edu-homeworld/background.png", "edu-splash")),
    _family("futureprototype", "design",
            _m(DEBIAN, "desktop-base/futureprototype-theme/grub/grub-16x9.png", "boot"),
            _m(DEBIAN, "plymouth/themes/futureprototype/plymouth_background_future.png", "splash",
               (EDU_BUSTER, "plymouth/themes/debian-edu-buster/background.png"))),
    _family("moonlight", "design",
            _m(DEBIAN, "desktop-base/moonlight-theme/grub/grub-16x9.png", "boot"),
            _m(DEBIAN, "plymouth/themes/moonlight/background.png", "splash")),
    _family("spacefun-earth", "frame",
            _m(DEBIAN, "plymouth/themes/spacefun/earth0.png", "plain"),
            _m(DEBIAN, "plymouth/themes/spacefun/earth4.png", "glow")),
    _family("oxygen-disc", "label", *(_m(OXYGEN, f"devices/media-optical-{n}.png", n)
                                      for n in ("dvd", "audio", "blu-ray"))),
    _family("oxygen-wireless", "state", *(_m(OXYGEN, f"devices/network-wireless-connected-{n}.png", n)
                                          for n in ("25", "75"))),
    # -- near-identical shots (hard negatives of photo libraries: bursts, sequences) --
    _shots("street", OPENCV, "vtest.avi#0", "vtest.avi#30", "vtest.avi#300", "vtest.avi#600"),
    _shots("megamind-table", OPENCV, "Megamind.avi#10", "Megamind.avi#30"),
    _shots("megamind-face", OPENCV, "Megamind.avi#200", "Megamind.avi#225"),
    _shots("tree", OPENCV, "tree.avi#0", "tree.avi#45", "tree.avi#60"),
    _shots("aloe", OPENCV, "aloeL.jpg", "aloeR.jpg"),
    _shots("suzanne", OPENCV, "Blender_Suzanne1.jpg", "Blender_Suzanne2.jpg"),
    _shots("aero", OPENCV, "aero1.jpg", "aero3.jpg"),
    _shots("graffiti", OPENCV, "graf1.png", "graf3.png"),
    _shots("leuven", OPENCV, "leuvenA.jpg", "leuvenB.jpg"),
    _shots("ela", OPENCV, "ela_original.jpg", "ela_modified.jpg"),
    _shots("stereo", OPENCV, "left.jpg", "right.jpg"),
    _shots("basketball", OPENCV, "basketball1.png", "basketball2.png"),
    _shots("castel", VISP, *(f"mbt-depth/castel/castel/image_{i:04d}.pgm" for i in (0, 10, 20))),
    _shots("cube-desk", VISP, *(f"mbt/cube/image{i:04d}.pgm" for i in (0, 30, 100, 130))),
    _shots("target", VISP, "mire-2/image.0001.pgm", "mire-2/image.0020.pgm"),
    _shots("castle-simu", VISP, *(f"mbt-depth/Castle-simu/Images/Image_{i:04d}.pgm" for i in (1, 5, 12))),
    # -- singletons: unrelated artwork and photos --
    _single("mate-elephants", MATE, "abstract/Elephants_3840x2160.jpg",
            (MATE, "abstract/Elephants.jpg"), (MATE, "abstract/Elephants_5640x3172.jpg")),
    *(_single(f"mate-{n.split('-')[0].lower()}", MATE, f"abstract/{n}.png")
      for n in ("Arc-Colors-Transparent-Wallpaper", "Silk", "Spring", "Waves")),
    _single("mate-stripes-grey", MATE, "desktop/Stripes.png"),
    _single("mate-green-traditional", MATE, "desktop/GreenTraditional.jpg"),
    _single("mate-float", MATE, "desktop/Float-into-MATE.png"),
    *(_single(f"mate-{n.lower()}", MATE, f"nature/{n}.jpg")
      for n in ("Aqua", "Dune", "FreshFlower", "LadyBird", "RainDrops", "Storm", "TwoWings", "YellowFlower")),
    *(_single(f"plasma-{n.lower()}", PLASMA, _PL.format(n, f))
      for n, f in (("Altai", "5120x2880.png"), ("Autumn", "2560x1600.jpg"), ("BytheWater", "2560x1600.jpg"),
                   ("Canopee", "3840x2160.png"), ("Cascade", "3840x2160.png"), ("Cluster", "3840x2160.png"),
                   ("ColorfulCups", "2560x1600.jpg"), ("DarkestHour", "2560x1600.jpg"),
                   ("Elarun", "2560x1600.png"), ("FlyingKonqui", "2560x1600.png"),
                   ("Honeywave", "5120x2880.jpg"), ("IceCold", "5120x2880.png"), ("Kokkini", "3840x2160.png"),
                   ("MilkyWay", "5120x2880.png"), ("Opal", "3840x2160.png"), ("PastelHills", "3200x2000.jpg"),
                   ("SafeLanding", "5120x2880.jpg"), ("Volna", "5120x2880.jpg"))),
    _single("sway-blue", SWAY, "Sway_Wallpaper_Blue_1920x1080.png",
            (SWAY, "Sway_Wallpaper_Blue_1366x768.png")),
    *(_single(f"ukui-{Path(n).stem}", UKUI, n)
      for n in ("2004default.jpg", "calla.png", "city.png", "desert.png", "firstgeneration.jpg",
                "fluent-color.png", "focal-ubuntukylin.png", "goldfish.png", "rhythm.jpg", "rollpaper.png",
                "string.jpg", "the-mouse.jpg")),
    *(_single(f"lomiri-{n.split('_by_')[0].lower()}", LOMIRI16, n)
      for n in ("Bridge_by_Sander_Klootwijk.jpg", "Dragonfly_by_Bolly.jpg", "Wine_by_Jakkub_Mede.jpg",
                "aitzgorri_by_Aitzol_Berasategi.jpg", "analogpattern_by_Peter_Nerlich.jpg",
                "friends_by_Aitzol_Berasategi.jpg", "greentock_by_Peter_Nerlich.jpg",
                "picosdeeuropa_by_Aitzol_Berasategi.jpg", "seeding_by_Clements_Engelhardt.jpg",
                "sunset_by_Aitzol_Berasategi.jpg")),
    *(_single(f"lomiri-{n.split('_by_')[0].lower()}", LOMIRI20, n)
      for n in ("Kleiber_by_Lukas_Baubkus.jpg", "Infinite-Sea_by_Aury88.jpg",
                "Painting-Colors_by__herobrine7gamer.jpg")),
    _single("emerald-boot", DEBIAN, "desktop-base/emerald-theme/grub/grub-16x9.png",
            (EDU_EMERALD, "desktop-base/debian-edu-emerald-theme/grub/grub-16x9.png")),
    _single("emerald-logo", DEBIAN, "plymouth/themes/emerald/logo+emerald.png"),
    _single("spacefun-swirl", DEBIAN, "plymouth/themes/spacefun/swirlaxy.png"),
    _single("klimt", VISP, "Klimt/Klimt.png", (VISP, "Klimt/Klimt.jpeg")),
    _single("solvay", VISP, "Solvay/Solvay_conference_1927_Version2_2126x1463.png",
            *((VISP, f"Solvay/Solvay_conference_1927_Version2_{n}")
              for n in ("1024x705.jpg", "640x440.png"))),
    _single("fruits", OPENCV, "fruits.jpg"),
    _single("baboon", OPENCV, "baboon.jpg"),
    _single("starry-night", OPENCV, "starry_night.jpg"),
    *(_single(f"oxygen-{Path(n).stem}", OXYGEN, n)
      for n in ("devices/computer.png", "devices/camera-photo.png", "devices/printer.png",
                "status/user-trash-full.png", "apps/digikam.png")),
)  # fmt: skip


def quick_families(families: tuple[Family, ...]) -> tuple[Family, ...]:
    """--quick: every other family with siblings, every fourth singleton."""
    multi = [f.name for f in families if len(f.members) > 1]
    singles = [f.name for f in families if len(f.members) == 1]
    keep = set(multi[::2]) | set(singles[::4])
    return tuple(f for f in families if f.name in keep)


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
                raise SystemExit(f"shots {a.id} and {b.id} differ by {diff:.1f}/255 beyond exposure, less "
                                 f"than {SHOT_DIFF}: a re-save, not another shot")
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


# --- search: index, query, score --------------------------------------------------------


def index_folder(index_dir: Path, paths: list[Path], model: str, calibrate_sample: int | None) -> dict:
    """A fresh index of ``paths``; calibrated (automatically, else explicitly)."""
    from lookalike.api import Index
    from lookalike.indexer import IndexOptions
    from lookalike.search.calibration import Calibration

    shutil.rmtree(index_dir, ignore_errors=True)
    start = time.perf_counter()
    report = Index(index_dir).add([str(p) for p in paths], model=model, options=IndexOptions())
    total = time.perf_counter() - start
    out = {"indexed": report.indexed, "errors": report.errors, "seconds": total}
    out["indexing_seconds"] = report.seconds  # the rest of Index.add is its automatic calibration
    out["error_samples"] = [list(e) for e in report.error_samples[:5]]
    cal = Calibration.from_dict(Index(index_dir).manifest().calibration)
    how = "automatic (Index.add)"
    if calibrate_sample is not None or cal is None:
        start = time.perf_counter()
        sample = calibrate_sample or 200
        cal = Index(index_dir).calibrate(sample=sample)
        how = f"explicit (Index.calibrate, sample {sample}, as `lookalike calibrate`)"
        out["calibration_seconds"] = time.perf_counter() - start
    out["calibration"] = {**cal.to_dict(), "how": how}
    for level in (0.5, 0.9, 0.99, 0.999):
        out["calibration"][f"cosine_at_p{level:g}"] = cal.cosine_for(level)
    return out


@dataclass
class QueryRow:
    edit: str
    member: str
    rank: int  # 1-based rank of the original, 0 = not in top K
    score: float  # cosine to the original (-1 = not in top K)
    top_kind: str  # what the top hit is: original | sibling | artwork | distractor | none
    scores: np.ndarray  # of the top K hits
    kinds: np.ndarray  # of the top K hits
    probability: np.ndarray  # of the top K hits (nan when uncalibrated)
    full: bool  # K hits returned
    top: str  # the top hit: a member id, or the distractor's file name
    gave_way: np.ndarray  # of the top K hits: scored under their own similarity (search.neighbours)


def _kind(data: Dataset, member: str, path: str, owner: dict | None = None) -> str:
    """What a hit is to the query's original; in an index of copies (``owner``: the
    library's {path: (member, kind)}) any copy of the original counts as the original."""
    hit = owner[path][0] if owner and path in owner else data.member_of.get(path)
    if hit is None:
        return "distractor"
    if hit == member:
        return "original"
    return _relative(data, hit, member)


def _relative(data: Dataset, a: str, b: str) -> str:
    """What member ``a`` is to another member ``b``: a look-alike ``sibling`` (one design),
    a ``shot`` (near-identical shots of one scene) or unrelated ``artwork``."""
    family = data.family_of[a]
    if family != data.family_of[b]:
        return "artwork"
    return "shot" if family in data.shot_families else "sibling"


def run_search(
    data: Dataset, index_dir: Path, k: int, batch: int = 64, owner: dict | None = None
) -> tuple[list[QueryRow], float]:
    from lookalike.api import Index

    rows = []
    with Index(index_dir) as index:
        index.model()
        start = time.perf_counter()
        for at in range(0, len(data.queries), batch):
            chunk = data.queries[at : at + batch]
            for (edit, _, member), result in zip(
                chunk, index.search([q[1] for q in chunk], k=k), strict=True
            ):
                if result.error:
                    raise SystemExit(f"query {result.query} failed: {result.error}")
                kinds = np.array([_kind(data, member, h.path, owner) for h in result.hits])
                scores = np.array([h.score for h in result.hits], np.float64)
                prob = np.array([np.nan if h.probability is None else h.probability for h in result.hits])
                at_rank = np.flatnonzero(kinds == "original")
                rank = int(at_rank[0]) + 1 if len(at_rank) else 0
                top = result.hits[0].path if result.hits else ""
                top_id = data.member_of.get(top, Path(top).name)
                gave_way = np.array([h.score < h.alone - 1e-9 for h in result.hits], bool)
                rows.append(QueryRow(edit, member, rank, float(scores[rank - 1]) if rank else -1.0,
                                     str(kinds[0]) if len(kinds) else "none", scores, kinds, prob,
                                     len(result.hits) >= k, top_id, gave_way))  # fmt: skip
        seconds = time.perf_counter() - start
    return rows, seconds


def sibling_cosines(data: Dataset, index_dir: Path) -> dict:
    """Cosine between the originals of look-alike siblings, and from each original to its
    nearest other indexed picture (searched through the index, like any query)."""
    from lookalike.api import Index

    multi = [m for m in data.members if sum(x.family == m.family for x in data.members) > 1]
    pairs: dict[tuple[str, str], float] = {}
    nearest_other = {}
    with Index(index_dir) as index:
        results = index.search([data.original[m.id] for m in multi], k=K)
    for m, result in zip(multi, results, strict=True):
        for h in result.hits:
            kind = _kind(data, m.id, h.path)
            if kind in LOOKALIKES:
                key = tuple(sorted((m.id, data.member_of[h.path])))
                pairs[key] = max(pairs.get(key, -1.0), h.alone)
            elif kind != "original" and m.id not in nearest_other:
                nearest_other[m.id] = (h.alone, kind)
    by_family: dict[str, list[float]] = defaultdict(list)
    for (a, _), s in pairs.items():
        by_family[data.family_of[a]].append(s)
    values = np.array(list(pairs.values()))
    return {
        "pairs": {f"{a} ~ {b}": s for (a, b), s in sorted(pairs.items(), key=lambda kv: -kv[1])},
        "n_pairs_found": len(pairs),
        "n_pairs": sum(len(f.members) * (len(f.members) - 1) // 2 for f in data.families),
        "median": float(np.median(values)) if len(values) else float("nan"),
        "max": float(values.max()) if len(values) else float("nan"),
        "above_0.90": int(np.sum(values >= 0.90)),
        "by_family": {f: [min(v), max(v)] for f, v in sorted(by_family.items())},
    }


def best_f1(rows: list[QueryRow]) -> dict:
    """The threshold with the best pairwise F1 over every (query, indexed picture) pair; a
    pair is positive when the picture is the query's original. Pairs outside a query's
    top K count as below any threshold."""
    scores = np.concatenate([r.scores for r in rows])
    kinds = np.concatenate([r.kinds for r in rows])
    positive = kinds == "original"
    order = np.argsort(-scores, kind="stable")
    s, pos = scores[order], positive[order]
    tp, fp = np.cumsum(pos), np.cumsum(~pos)
    cut = np.r_[s[1:] != s[:-1], True]
    precision = tp / (tp + fp)
    recall = tp / len(rows)
    f1 = np.where(tp > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    i = int(np.argmax(np.where(cut, f1, -1.0)))
    threshold = float(s[i])
    false = Counter(kinds[(scores >= threshold) & ~positive].tolist())
    n_false = sum(false.values())
    kth = [r.scores[-1] for r in rows if r.full]
    return {
        "threshold": threshold,
        "f1": float(f1[i]),
        "precision": float(precision[i]),
        "recall": float(recall[i]),
        "false_pairs": n_false,
        **_false_kinds(false),
        "exact": bool(not kth or threshold > max(kth)),
    }


def pair_f1(rows: list[QueryRow], by: str = "scores") -> dict:
    """The best single-threshold F1 over every (query, hit) pair of the top K, where several
    hits of a query can be true (any copy of its original): recall counts the true pairs
    found there. ``by``: the hits' ``scores`` or their ``probability``."""
    scores = np.concatenate([getattr(r, by) for r in rows])
    true = np.concatenate([r.kinds for r in rows]) == "original"
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(true[order])
    precision, recall = tp / np.arange(1, len(order) + 1), tp / max(int(true.sum()), 1)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    i = int(np.argmax(f1))
    return {"f1": float(f1[i]), "precision": float(precision[i]), "recall": float(recall[i]),
            "threshold": float(scores[order][i])}  # fmt: skip


def _false_kinds(false: Counter) -> dict:
    """False pairs by kind (:data:`WRONG`), and the share of them that are look-alikes."""
    n = sum(false.values())
    return {
        "false_by_kind": {k: false.get(k, 0) for k in WRONG},
        "lookalike_share_of_false": sum(false.get(k, 0) for k in LOOKALIKES) / n if n else 0.0,
    }


def false_pairs_at(rows: list[QueryRow], threshold: float) -> dict:
    scores = np.concatenate([r.scores for r in rows])
    kinds = np.concatenate([r.kinds for r in rows])
    said = scores >= threshold
    tp = int(np.sum(said & (kinds == "original")))
    false = Counter(kinds[said & (kinds != "original")].tolist())
    n = sum(false.values())
    return {
        "threshold": threshold,
        "precision": tp / max(tp + n, 1),
        "recall": tp / max(len(rows), 1),
        "false_pairs": n,
        **_false_kinds(false),
    }


BUCKETS = ((0.5, 0.9), (0.9, 0.99), (0.99, 1.0))


def reliability(rows: list[QueryRow], family_of: dict[str, str] | None = None) -> dict:
    """The reliability table of ``rows``' probabilities; with ``family_of``, also how far
    off each half of the families is (:func:`_by_halves`)."""
    prob = np.concatenate([r.probability for r in rows])
    kinds = np.concatenate([r.kinds for r in rows])
    gave_way = np.concatenate([r.gave_way for r in rows])
    if np.all(np.isnan(prob)):
        return {"calibrated": False}
    true = kinds == "original"
    out: dict = {"calibrated": True, "buckets": []}
    for lo, hi in BUCKETS:
        inside = (prob >= lo) & ((prob < hi) if hi < 1 else (prob <= hi))
        n = int(inside.sum())
        out["buckets"].append({
            "range": [lo, hi], "pairs": n, "true": int(np.sum(inside & true)),
            "share_true": float(true[inside].mean()) if n else float("nan"),
            "mean_probability": float(prob[inside].mean()) if n else float("nan"),
            "false_lookalikes": int(np.sum(inside & np.isin(kinds, LOOKALIKES))),
            "gave_way": int(np.sum(inside & gave_way)),  # scored under their own similarity ...
            "gave_way_true": int(np.sum(inside & gave_way & true)),  # ... and true
        })  # fmt: skip
    out["true_pairs_below_0.5"] = int(np.sum(true & (prob < 0.5)))
    out["best_f1_over_probability"] = pair_f1(rows, "probability")
    out["originals_not_in_top_k"] = int(sum(r.rank == 0 for r in rows))
    if family_of:
        out["halves"] = _by_halves(rows, family_of)
    return out


def _by_halves(rows: list[QueryRow], family_of: dict[str, str]) -> list[dict]:
    """The reliability of each half of the picture families (split by a hash of the family
    name, so every run splits alike): its worst bucket's distance from its mean P, and the
    share true at P >= 0.9. What holds on the whole set because its halves err in opposite
    directions shows here."""
    out = []
    for half in (0, 1):
        part = [r for r in rows if zlib.crc32(family_of[r.member].encode()) % 2 == half]
        if not part:
            continue
        rel = reliability(part)
        prob = np.concatenate([r.probability for r in part])
        true = np.concatenate([r.kinds for r in part]) == "original"
        off = [abs(b["share_true"] - b["mean_probability"]) for b in rel["buckets"] if b["pairs"]]
        out.append({
            "queries": len(part),
            "worst_bucket_off_by": max(off) if off else float("nan"),
            "share_true_at_p0.9": float(true[prob >= 0.9].mean()) if np.any(prob >= 0.9) else float("nan"),
        })  # fmt: skip
    return out


def _recall(rows: list[QueryRow]) -> dict:
    return {
        "queries": len(rows),
        "recall_at_1": float(np.mean([r.rank == 1 for r in rows])) if rows else None,
    }


def summarize_search(rows: list[QueryRow], data: Dataset) -> dict:
    edited = [r for r in rows if r.edit in EDITS]
    jpeg = {name for name, e in EDITS.items() if not e.transparent}
    with_siblings = {m.id for f in data.families if len(f.members) > 1 for m in f.members}
    ranks = np.array([r.rank for r in edited])
    per_edit = {}
    pairs = best_f1(edited)
    for name in [*EDITS, OTHER_SIZE]:
        sel = [r for r in rows if r.edit == name]
        if not sel:
            continue
        wrong = Counter(r.top_kind for r in sel if r.rank != 1)
        per_edit[name] = {
            "queries": len(sel),
            "recall_at_1": float(np.mean([r.rank == 1 for r in sel])),
            "top1_wrong": {k: wrong.get(k, 0) for k in WRONG},
            "recall_at_threshold": float(np.mean([r.score >= pairs["threshold"] for r in sel])),
            "min_cosine": float(min(r.score for r in sel)),
        }
    wrong = Counter(r.top_kind for r in edited if r.rank != 1)
    failures = [
        {"edit": r.edit, "original": r.member, "rank": r.rank, "original_cosine": r.score,
         "top": r.top, "top_kind": r.top_kind, "top_cosine": float(r.scores[0]) if len(r.scores) else None}
        for r in rows if r.rank != 1
    ]  # fmt: skip
    return {
        "per_edit": per_edit,
        "recall_at_1": float(np.mean(ranks == 1)),
        "top1_wrong": {k: wrong.get(k, 0) for k in WRONG},
        "map": float(np.mean(np.where(ranks > 0, 1.0 / np.maximum(ranks, 1), 0.0))),
        "not_in_top_k": int(np.sum(ranks == 0)),
        "best_f1": pairs,
        "at_copies_preset": false_pairs_at(edited, 0.90),
        "reliability": reliability(edited, data.family_of),
        "top1_failures": failures,
        "subsets": {
            "originals with siblings": _recall([r for r in edited if r.member in with_siblings]),
            "singletons": _recall([r for r in edited if r.member not in with_siblings]),
            "opaque": _recall([r for r in edited if r.member not in data.alpha]),
            "transparent": _recall([r for r in edited if r.member in data.alpha]),
            "transparent, JPEG copies (flattened)": _recall(
                [r for r in edited if r.member in data.alpha and r.edit in jpeg]
            ),
            "transparent, copies kept transparent": _recall(
                [r for r in edited if r.member in data.alpha and r.edit not in jpeg]
            ),
        },
    }


# --- dupes through the CLI ----------------------------------------------------------------


NOTHING_FOUND = 3  # lookalike's exit status for "ran, found no duplicates"


LARGER_VERSION = "other_size"  # a package's larger rendering of the picture: rightly kept


def _kept(groups: list[dict], library: dict[str, tuple[str, str]], original_of: dict[str, str]) -> dict:
    """What each group keeps, where it holds the original of the picture most of its
    members are copies of: that original (or the picture's larger version), or which copy."""
    kept: Counter = Counter()
    for g in groups:
        files = [os.path.realpath(p) for p in [g["keep"], *(d["path"] for d in g["duplicates"])]]
        pictures = Counter(library[f][0] for f in files if f in library)
        if not pictures:
            continue
        picture = pictures.most_common(1)[0][0]
        if original_of.get(picture) not in files:
            continue
        _, kind = library.get(files[0], (None, "a distractor"))
        kept["original" if kind in ("original", LARGER_VERSION) else kind] += 1
    return {"kept": dict(kept.most_common())}


def run_dupes(
    index_dir: Path, library: dict[str, tuple[str, str]], data: Dataset, preset: str | None, *extra: str
) -> dict:
    cmd = [sys.executable, "-m", "lookalike.cli", "dupes", "--index", str(index_dir), "--json", *extra]
    if preset:
        cmd += ["--preset", preset]
    start = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if run.returncode not in (0, NOTHING_FOUND):
        raise SystemExit(f"{' '.join(cmd)} failed:\n{run.stderr}")
    groups = json.loads(run.stdout)["groups"] if run.stdout.strip() else []

    owner = {path: m for path, (m, _) in library.items()}

    def label(path: str) -> str:
        return owner.get(os.path.realpath(path)) or owner.get(path) or f"distractor:{path}"

    predicted = set()
    for g in groups:
        files = [g["keep"], *(d["path"] for d in g["duplicates"])]
        predicted.update(tuple(sorted(p)) for p in combinations(files, 2))
    by_member: dict[str, list[str]] = defaultdict(list)
    for path, m in owner.items():
        by_member[m].append(path)
    truth = sum(len(v) * (len(v) - 1) // 2 for v in by_member.values())
    tp = 0
    false: Counter = Counter()
    for a, b in predicted:
        la, lb = label(a), label(b)
        if la == lb:
            tp += 1
        elif la.startswith("distractor:") or lb.startswith("distractor:"):
            false["distractor"] += 1
        else:
            false[_relative(data, la, lb)] += 1
    # per copy kind: share of (original, copy) pairs put in one group
    group_of = {}
    for n, g in enumerate(groups):
        for p in [g["keep"], *(d["path"] for d in g["duplicates"])]:
            group_of[os.path.realpath(p)] = n
    per_kind: dict[str, list[bool]] = defaultdict(list)
    original_of = {m: path for path, (m, kind) in library.items() if kind == "original"}
    for path, (m, kind) in library.items():
        if kind == "original":
            continue
        original = original_of[m]
        g = group_of.get(path)
        per_kind[kind].append(g is not None and g == group_of.get(original))
    return {
        **_kept(groups, library, original_of),
        "preset": " ".join([preset or "default", *extra]),
        "note": run.stderr.strip(),
        "groups": len(groups),
        "predicted_pairs": len(predicted),
        "true_pairs": truth,
        "precision": tp / len(predicted) if predicted else 1.0,
        "recall": tp / truth if truth else 0.0,
        **_false_kinds(false),
        "grouped_with_original": {k: float(np.mean(v)) for k, v in per_kind.items()},
        "seconds": seconds,
    }


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
    print(
        f"{'recall@1 overall':<30}{s['recall_at_1']:>9.3f}{_wrong(w):>22}"
    )
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
    print(f"  true pairs below P 0.5: {rel['true_pairs_below_0.5']}; best F1 over probabilities "
          f"{f1['f1']:.3f} at P {f1['threshold']:.3f} (precision {f1['precision']:.3f}, "
          f"recall {f1['recall']:.3f})")
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
