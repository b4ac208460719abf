"""bench/lookalikes.py's tuned family table: artwork and photos of Debian packages, one
design per family, its members the distinct pictures of that design (look-alike siblings:
hard negatives). The rules a table must keep are in bench/lookalikes.py's docstring; the
held-out and fresh tables (bench/heldout.py, bench/fresh.py) are built with the same helpers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
