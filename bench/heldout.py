"""A second family table for bench/lookalikes.py, kept out of every tuning decision.

    python bench/lookalikes.py --families heldout --work DIR [--json OUT]

Every rule of this project (schemes, relations, backdrops, calibration) was chosen on
:data:`lookalike_families.FAMILIES`; a benchmark that decides also flatters. These families come
from packages that table never reads (lxqt-themes, lxde-common, breeze,
plasma-workspace-data) and from files of opencv-doc and visp-images-data it leaves alone,
so the numbers printed with ``--families heldout`` are a check on pictures the rules have
not seen, of the same kinds as issue 14's held-out set: wallpapers in two to four colour
schemes or light/dark versions, the same design with and without a logo, desktop
screenshots in light and dark themes, near-identical shots, photos, transparent artwork.
Look at the numbers; do not tune on them (then they would be a second tuning set).
"""

from __future__ import annotations

from lookalike_families import OPENCV, VISP, Family, _family, _light_dark, _m, _shots, _single

LXQT = "lxqt-themes", "usr/share/lxqt/wallpapers/"
LXDE = "lxde-common", "usr/share/lxde/wallpapers/"
NEXT = "breeze", "usr/share/wallpapers/Next/contents/"
PLASMA_DATA = "plasma-workspace-data", "usr/share/plasma/"
_LOOK = "look-and-feel/org.kde.{}.desktop/contents/previews/fullscreenpreview.jpg"

HELDOUT: tuple[Family, ...] = (
    # -- families with look-alike siblings --
    _family("lxqt-origami", "colour", *(_m(LXQT, f"{n}.png", label) for n, label in
            (("origami-light", "light"), ("origami-dark", "dark"), ("lxqt-origami-green", "green"),
             ("origami-bright-logo", "logo")))),
    _light_dark("lxqt-plasma-logo", LXQT, "plasma-logo-bright.png", "plasma-logo-dark.png"),
    _family("lxqt-triangles", "colour", _m(LXQT, "triangles.png", "plain"),
            _m(LXQT, "triangles-logo.png", "logo")),
    _family("lxqt-waves", "colour", _m(LXQT, "waves-logo.png", "blue"),
            _m(LXQT, "waves-purple-logo.jpg", "purple"), _m(LXQT, "simple_blue_widescreen.png", "nologo")),
    _family("lxde", "colour", *(_m(LXDE, f"lxde_{c}.jpg", c) for c in ("blue", "green", "red"))),
    _family("breeze-next", "light/dark",
            _m(NEXT, "images/5120x2880.png", "light", (NEXT, "images/1920x1080.png"),
               (NEXT, "images/3840x2160.png")),
            _m(NEXT, "images_dark/5120x2880.png", "dark", (NEXT, "images_dark/2560x1440.png"))),
    _family("breeze-desktop", "light/dark",
            *(_m(PLASMA_DATA, _LOOK.format(n), n.removeprefix("breeze") or "light")
              for n in ("breeze", "breezedark", "breezetwilight"))),
    _family("apriltag", "label", *(_m(VISP, f"AprilTag/benchmark/1920x1080/{n}_1920x1080.png", n)
                                   for n in ("tag16_05", "tag21_07"))),
    # -- near-identical shots --
    _shots("chessboard", OPENCV, "left01.jpg", "left03.jpg", "left05.jpg"),
    _shots("chess-stereo", OPENCV, "left09.jpg", "right09.jpg"),
    # -- singletons --
    *(_single(f"lxqt-{n.split('.')[0].lower()}", LXQT, n)
      for n in ("Butterfly-Kenneth-Wimer.jpg", "Valendas.png", "after-the-rain.jpg", "appleflower.png",
                "beam.png", "butterfly.png", "cloud.png", "drop.png", "flowers.png", "fog.jpg",
                "kde-plasma.png", "plasma_arch.png", "this-is-not-windows.jpg")),
    _single("plasma-worldmap", PLASMA_DATA, "nightcolor/worldmap.png"),
    *(_single(f"avatar-{n.lower()}", PLASMA_DATA, f"avatars/photos/{n}.png")
      for n in ("Astronaut", "Cat", "Owl", "Parrot", "Shuttle", "Sushi")),
    *(_single(f"opencv-{n.split('.')[0].lower()}", OPENCV, n)
      for n in ("HappyFish.jpg", "building.jpg", "home.jpg", "messi5.jpg", "chicky_512.png",
                "smarties.png", "squirrel_cls.jpg", "board.jpg")),
)  # fmt: skip
