"""Hostile and odd input: a generated corpus of >= 200 files, indexed by the real command.

Every good photo is indexed, every bad file recorded with its reason, nothing is retried
while unchanged, and the command's memory stays bounded. Run as root, the command drops
CAP_DAC_OVERRIDE (util-linux ``setpriv``), so that mode-000 files and folders are
unreadable to it as they are to a user.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lookalike.storage import Store
from tests.corpus import make_corpus, make_unreadable

MAX_RSS_MB = 3000  # TensorFlow alone is ~1 GB; a decoded bomb would be many more


def _as_a_user(cmd: list[str]) -> list[str]:
    """``cmd`` without the root privilege of reading anything, when run as root."""
    if os.geteuid() != 0:
        return cmd
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: unreadable files cannot be made")
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search", *cmd]


def _index(photos: Path, index: Path, model: Path) -> dict:
    cmd = [sys.executable, "-m", "lookalike.cli", "index", str(photos), "--model", str(model),
           "--index", str(index), "--max-megapixels", "50", "--workers", "2", "-q"]  # fmt: skip
    proc = subprocess.run(_as_a_user(cmd), capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    line = proc.stdout.decode(errors="replace")
    return {k: int(v) for v, k in _counts(line)}


def _counts(line: str) -> list[tuple[str, str]]:
    """("13", "errors") pairs from `indexed 12 images ...; 3 unchanged, 0 reused, 4 errors, ...`."""
    words = line.replace(";", ",").replace(",", " ").split()
    pairs = [(words[i], words[i + 1]) for i in range(len(words) - 1) if words[i].isdigit()]
    plural = {"image": "images", "error": "errors"}  # "1 image", "1 error"
    return [
        (v, plural.get(k, k))
        for v, k in pairs
        if k in ("images", "unchanged", "reused", "errors", "removed", *plural)
    ]


def test_corpus_of_bad_files_next_to_good_photos(tmp_path, tf2_model):
    photos = tmp_path / "corpus"
    good, bad = make_corpus(photos)
    more_good, more_bad = make_unreadable(photos)
    good, bad = good + more_good, bad + more_bad
    assert len(good) + len(bad) >= 200
    index = tmp_path / "index"
    try:
        first = _index(photos, index, tf2_model)
        assert first["images"] == len(good) and first["errors"] == len(bad), first
        with Store(index) as s:
            known = s.catalogue.known()
            errors = dict(s.catalogue.errors())
        assert {p for p, k in known.items() if k.status == "ok"} == set(good)
        assert set(errors) == set(bad)
        assert all(reason for reason in errors.values())
        reasons = json.dumps(errors)
        for expected in ("truncated", "empty file", "not a recognised image format", "too large",
                         "symbolic link", "cannot list folder", "Permission denied"):  # fmt: skip
            assert expected in reasons, expected
        # unchanged: nothing is read again, nothing recorded again
        second = _index(photos, index, tf2_model)
        assert second["images"] == 0 and second["errors"] == 0 and second["removed"] == 0, second
        assert second["unchanged"] == len(good) + len(bad)
    finally:
        os.chmod(photos / "locked", 0o755)
        os.chmod(photos / "no-read.jpg", 0o644)
    # the folder is readable now: its photo is indexed and the folder's error row goes
    third = _index(photos, index, tf2_model)
    assert third["images"] == 2 and third["removed"] == 1, third  # hidden-away.jpg and no-read.jpg
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    assert peak_mb < MAX_RSS_MB, f"peak resident memory {peak_mb:.0f} MB"
