"""Duplicate actions never take away the last copy of a photo.

Each test builds a real tree (symbolic links, hard links, a second index), indexes it
with the real command path, runs `dupes` with an action and checks every photo's bytes
are still on disk, and that undo restores what was done.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lookalike import Index, IndexOptions, actions
from lookalike.cli import app
from lookalike.fsutil import canonical, is_inside
from lookalike.search.duplicates import find_duplicates
from lookalike.storage import Store
from tests.conftest import make_photo

runner = CliRunner()
OPTS = IndexOptions(workers=0)


def _contents(*roots: Path) -> dict[str, int]:
    """sha256 -> number of regular files (not links) holding those bytes below ``roots``."""
    seen: dict[str, int] = {}
    inodes: set[tuple[int, int]] = set()
    for root in roots:
        for dirpath, _, names in os.walk(root):
            for name in names:
                path = os.path.join(dirpath, name)
                st = os.lstat(path)
                if os.path.islink(path) or (st.st_dev, st.st_ino) in inodes:
                    continue
                inodes.add((st.st_dev, st.st_ino))
                digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
                seen[digest] = seen.get(digest, 0) + 1
    return seen


def _photos(folder: Path, n: int, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        make_photo(seed + i).save(folder / f"p{i}.jpg", quality=92)
        out.append(folder / f"p{i}.jpg")
    return out


def _dupes(index: Path, *args: str):
    res = runner.invoke(app, ["dupes", "--threshold", "0.98", "--index", str(index), *args])
    assert res.exit_code == (3 if "warning: no duplicates" in res.stderr else 0), res.output  # 3: none
    return res


def _journal(output: str) -> str:
    return output.split("lookalike undo ")[1].split()[0]


def test_hardlink_through_a_linked_folder_loses_nothing(tmp_path, tf2_model):
    root = tmp_path / "lib"
    _photos(root / "Z_real", 5)
    (root / "A_links").mkdir()
    for p in (root / "Z_real").iterdir():  # A_links/p.jpg -> ../Z_real/p.jpg sorts (and was kept) first
        os.symlink(Path("..") / "Z_real" / p.name, root / "A_links" / p.name)
    Index(tmp_path / "ix").add([root], model=str(tf2_model), options=OPTS)
    before = _contents(root)
    res = _dupes(tmp_path / "ix", "--hardlink")
    assert _contents(root) == before and all(p.is_file() for p in (root / "Z_real").iterdir())
    assert "nothing to hardlink" in res.stderr


@pytest.mark.parametrize("action", [["--trash"], ["--move-to", "ASIDE"]])
def test_a_link_and_its_target_are_one_file_not_two_copies(tmp_path, tf2_model, trash, action):
    root = tmp_path / "lib"
    _photos(root / "Camera", 5)
    (root / "Album").mkdir()
    for p in (root / "Camera").iterdir():
        os.symlink(Path("..") / "Camera" / p.name, root / "Album" / p.name)
    os.symlink(root / "Camera", root / "Camera-again")  # one folder, two spellings
    Index(tmp_path / "ix").add([root], model=str(tf2_model), options=OPTS)
    before = _contents(root)
    args = [a.replace("ASIDE", str(tmp_path / "aside")) for a in action]
    res = _dupes(tmp_path / "ix", "--json")
    assert '"duplicates": [' not in res.stdout  # no group at all
    _dupes(tmp_path / "ix", *args)
    assert _contents(root) == before and not (tmp_path / "aside").exists()
    assert all(os.path.exists(root / "Album" / p.name) for p in (root / "Camera").iterdir())


def test_against_an_index_of_the_same_folder_proposes_nothing(tmp_path, tf2_model, trash):
    photos = tmp_path / "photos"
    _photos(photos, 6)
    Index(tmp_path / "a").add([photos], model=str(tf2_model), options=OPTS)
    os.symlink(photos, tmp_path / "same-photos")
    Index(tmp_path / "b").add([tmp_path / "same-photos"], model=str(tf2_model), options=OPTS)
    before = _contents(photos)
    res = _dupes(tmp_path / "a", "--against", str(tmp_path / "b"), "--trash")
    assert "nothing to trash" in res.stderr and _contents(photos) == before


def test_a_group_whose_kept_file_is_gone_or_changed_is_left_alone(tmp_path, tf2_model, trash):
    photos = tmp_path / "photos"
    originals = _photos(photos / "a", 4)
    copies = []
    for p in originals:
        copies.append(photos / "b" / p.name)
        copies[-1].parent.mkdir(exist_ok=True)
        shutil.copy2(p, copies[-1])
    Index(tmp_path / "ix").add([photos], model=str(tf2_model), options=OPTS)
    originals[0].unlink()  # the kept one of group 0 is gone
    originals[1].write_bytes(originals[1].read_bytes()[:-10] + b"0123456789")  # changed, same size
    os.utime(originals[1], ns=(os.stat(copies[1]).st_atime_ns, os.stat(copies[1]).st_mtime_ns))
    res = _dupes(tmp_path / "ix", "--trash")
    assert copies[0].exists() and copies[1].exists()  # now the only (true) copies
    assert not copies[2].exists() and not copies[3].exists()  # their kept files are intact
    assert "kept file" in res.output


def test_protect_holds_with_against_and_for_any_spelling(tmp_path, tf2_model, trash):
    photos, copies = tmp_path / "Photos", tmp_path / "Backup"
    for p in _photos(photos, 4):
        copies.mkdir(exist_ok=True)
        shutil.copy2(p, copies / p.name)
    Index(tmp_path / "mine").add([photos], model=str(tf2_model), options=OPTS)
    Index(tmp_path / "theirs").add([copies], model=str(tf2_model), options=OPTS)
    os.symlink(photos, tmp_path / "photos-link")
    before = _contents(photos)
    spelled = str(tmp_path / "photos-link" / ".." / "photos-link")  # another spelling of Photos
    res = _dupes(tmp_path / "mine", "--against", str(tmp_path / "theirs"), "--protect", spelled, "--trash")
    assert "nothing to trash" in res.stderr and _contents(photos) == before
    assert is_inside(photos / "p0.jpg", spelled) and canonical(photos / "p0.jpg") == str(photos / "p0.jpg")


def test_uploads_are_kept_last(tmp_path, tf2_model):
    photos = tmp_path / "photos"
    (original,) = _photos(photos, 1)
    index = tmp_path / "ix"
    Index(index).add([photos], model=str(tf2_model), options=OPTS)
    (index / "uploads").mkdir()
    shutil.copy2(original, index / "uploads" / "0000aaaa.jpg")  # sorts first, same bytes
    Index(index).add([index / "uploads"], options=OPTS)
    (group,) = Index(index).duplicates(0.98)
    assert group.keep.path == str(original) and "upload" in group.reasons[0]


def test_files_already_hard_linked_are_left_as_they_are(tmp_path, tf2_model):
    photos = tmp_path / "photos"
    (p,) = _photos(photos, 1)
    os.link(p, photos / "also.jpg")
    Index(tmp_path / "ix").add([photos], model=str(tf2_model), options=OPTS)
    res = _dupes(tmp_path / "ix", "--hardlink")
    assert "nothing to hardlink" in res.stderr
    assert sorted(x.name for x in photos.iterdir()) == ["also.jpg", "p0.jpg"]  # no .lookalike-link left
    assert os.stat(p).st_nlink == 2


def test_trash_undo_through_a_linked_folder_restores_the_same_file(tmp_path, tf2_model, trash):
    from send2trash import send2trash

    real = tmp_path / "real"
    (original,) = _photos(real, 1)
    shutil.copy2(original, real / "z-copy.jpg")
    os.symlink(real, tmp_path / "via")
    Index(tmp_path / "ix").add([tmp_path / "via"], model=str(tf2_model), options=OPTS)
    data = (real / "z-copy.jpg").read_bytes()
    res = _dupes(tmp_path / "ix", "--trash")
    assert "trash: 1 file" in res.stdout and not (real / "z-copy.jpg").exists()
    (real / "z-copy.jpg").write_bytes(b"another file, trashed later from the same path")
    send2trash(str(real / "z-copy.jpg"))
    res = runner.invoke(app, ["undo", _journal(res.stdout)])
    assert "restored 1 file" in res.stdout and (real / "z-copy.jpg").read_bytes() == data


def test_dupes_on_a_snapshot_behind_the_catalogue_does_not_crash(tmp_path, tf2_model):
    photos = tmp_path / "photos"
    originals = _photos(photos, 3)
    index = tmp_path / "ix"
    Index(index).add([photos], model=str(tf2_model), options=OPTS)
    with Store(index) as reader:  # a dupes run's snapshot ...
        for p in originals:  # ... while an index run adds exact copies to the catalogue
            shutil.copy2(p, photos / f"copy-{p.name}")
        Index(index).add([photos], options=OPTS)
        assert find_duplicates(reader, 0.98) == []  # the copies are not in its vectors yet


def test_a_hardlink_left_half_done_by_a_kill_is_finished_or_cleaned(tmp_path, tf2_model):
    photos = tmp_path / "photos"
    (original,) = _photos(photos, 1)
    shutil.copy2(original, photos / "q-copy.jpg")
    Index(tmp_path / "ix").add([photos], model=str(tf2_model), options=OPTS)
    link = actions._link_name(str(photos / "q-copy.jpg"))
    os.link(original, link)  # a kill between link and rename
    os.link(original, photos / "q-copy.jpg.lookalike-link")  # ... as an older release named it
    res = _dupes(tmp_path / "ix", "--hardlink")
    assert "hardlink: 1 file" in res.stdout, res.output
    assert sorted(p.name for p in photos.iterdir()) == ["p0.jpg", "q-copy.jpg"]
    for left in (link, photos / "q-copy.jpg.lookalike-link"):  # ... and again during a later run
        os.link(original, left)
    res = runner.invoke(app, ["undo", _journal(res.stdout)])
    assert "restored 1 file" in res.stdout
    assert sorted(p.name for p in photos.iterdir()) == ["p0.jpg", "q-copy.jpg"]
    assert os.stat(original).st_nlink == 1 and (photos / "q-copy.jpg").read_bytes() == original.read_bytes()


def test_dupes_refuses_what_it_cannot_do_as_asked_and_touches_nothing(tmp_path, tf2_model, trash):
    photos = tmp_path / "photos"
    originals = _photos(photos / "a", 3)
    for p in originals:
        (photos / "b").mkdir(exist_ok=True)
        shutil.copy2(p, photos / "b" / p.name)
    ix = tmp_path / "ix"
    Index(ix).add([photos], model=str(tf2_model), options=OPTS)
    before = _contents(photos)

    def refused(*args: str, status: int, says: str) -> None:
        res = runner.invoke(app, ["dupes", "--threshold", "0.98", "--index", str(ix), *args])
        said = " ".join(res.stderr.replace("│", " ").split())  # rich's usage panel unfolded
        assert res.exit_code == status and says in said, (args, res.output)
        assert _contents(photos) == before and not (ix / "journals").exists(), args

    refused("--move-to", str(ix / "moved"), status=1, says="inside the index folder")
    refused("--move-to", str(ix), status=1, says="inside the index folder")
    refused("--trash", "--protect", str(tmp_path / "Photos-typo"), status=2, says="does not exist")
    refused("--trash", "--prefer-folder", str(photos / "c"), status=2, says="does not exist")
    refused(
        "--trash", "--json", status=2, says="--json reports the groups; run it first, then act with --trash"
    )
    refused("--hardlink", "--csv", status=2, says="--csv reports the groups")
    report = tmp_path / "report"
    refused("--move-to", str(tmp_path / "moved"), "--html", str(report), status=2, says="--html reports")
    assert not report.exists() and not (tmp_path / "moved").exists()
    a, b = str(originals[0]), str(photos / "b" / originals[0].name)
    refused("--ignore", a, a, status=1, says="are one file")
    refused("--ignore", a, str(photos / "a" / ".." / "a" / originals[0].name), status=1, says="are one file")
    refused("--ignore", a, b, status=1, says="have the same bytes")
    other = str(photos / "a" / originals[1].name)  # a pair it could mark: not with an action or a report
    refused("--ignore", a, other, "--trash", status=2, says="--ignore marks two files and stops")
    refused("--ignore", a, other, "--json", status=2, says="run --json on its own")
    assert not Index(ix).ignored_pairs()
    assert "3 duplicates" in _dupes(ix).output  # all three groups still found


def test_move_to_a_new_folder_inside_an_indexed_folder_is_refused(tmp_path, tf2_model):
    """``index lib`` walks all of lib: duplicates moved to lib/dupes would be indexed and found
    again, though no photo lies directly in lib (only in lib/2023, lib/2024)."""
    lib, ix = tmp_path / "lib", tmp_path / "ix"
    for p in _photos(lib / "2023", 3):
        (lib / "2024").mkdir(exist_ok=True)
        shutil.copy2(p, lib / "2024" / p.name)
    os.symlink(lib, tmp_path / "lib-link")

    def cli(*args: str):
        return runner.invoke(app, [*args, "--index", str(ix)])

    assert cli("index", str(lib), "--model", str(tf2_model)).exit_code == 0
    before = _contents(lib)
    for target in (lib / "dupes", tmp_path / "lib-link" / "dupes"):
        res = cli("dupes", "--threshold", "0.98", "--move-to", str(target))
        assert res.exit_code == 1 and "which `lookalike index` walks" in res.stderr, res.output
        assert _contents(lib) == before and not (lib / "dupes").exists()
    assert cli("remove", str(lib)).exit_code == 0  # lib is no longer walked ...
    assert cli("index", str(lib / "2023")).exit_code == 0  # ... only lib/2023, which has no duplicates
    assert "nothing to move" in _dupes(ix, "--move-to", str(lib / "dupes")).stderr
    assert cli("index", str(lib / "2024")).exit_code == 0
    _dupes(ix, "--move-to", str(tmp_path / "aside"))
    assert len(list((tmp_path / "aside").rglob("*.jpg"))) == 3
    assert _contents(lib, tmp_path / "aside") == before


def test_a_move_to_inside_the_index_or_a_walked_folder_is_refused_before_duplicates_are_sought(
    tmp_path, tf2_model, monkeypatch
):
    lib, ix = tmp_path / "lib", tmp_path / "ix"
    _photos(lib / "2023", 2)
    Index(ix).add([lib], model=str(tf2_model), options=OPTS)

    def sought(*_args, **_kwargs):
        raise AssertionError("duplicates were sought before the target was checked")

    monkeypatch.setattr(Index, "duplicates", sought)
    walked = "`lookalike index` walks"
    for target, says in ((ix / "moved", "inside the index folder"), (lib / "dupes", walked)):
        res = runner.invoke(app, ["dupes", "--index", str(ix), "--move-to", str(target)])
        assert res.exit_code == 1 and says in res.stderr, res.output
