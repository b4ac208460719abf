"""Shared fixtures: isolated caches, tiny generated models, synthetic photos, loopback HTTP."""

from __future__ import annotations

import ctypes
import functools
import http.server
import io
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests import model_factory

SHARED = Path(__file__).resolve().parents[2] / "shared"
SHARED_MODELS = SHARED / "models"
SHARED_PHOTOS = SHARED / "photos"
SHARED_SAVED_MODEL = SHARED_MODELS / "mobilenet_v1_075_224_feature_vector"


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """Every test gets its own caches and no ambient index."""
    monkeypatch.setenv("LOOKALIKE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "tfhub"))
    monkeypatch.delenv("LOOKALIKE_INDEX", raising=False)


# The standard library's helper processes live as long as the pytest process that uses them.
_PROCESS_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")
PR_SET_CHILD_SUBREAPER = 36  # prctl(2)


def live_descendants(root: int) -> dict[int, str]:
    """Processes below ``root`` still running (zombies excluded): pid -> command line (/proc)."""
    children: dict[int, list[int]] = {}
    states: dict[int, bytes] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue
            children.setdefault(int(fields[1]), []).append(int(name))
            states[int(name)] = fields[0]
    found, todo = {}, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        if states[pid] not in (b"Z", b"X"):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    found[pid] = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
    return found


@pytest.fixture(scope="session", autouse=True)
def no_processes_left_behind():
    """The session fails if a process a test started is still running at its end (after
    a grace of 10 s): servers, browsers, decoder workers, commands run by the tests.
    Orphans count too: this process adopts them (a Linux child subreaper), so the workers
    of a command a test killed come back here rather than to init."""
    if not sys.platform.startswith("linux"):
        yield
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    yield
    deadline = time.monotonic() + 10
    while True:
        left = {
            pid: cmd
            for pid, cmd in live_descendants(os.getpid()).items()
            if not any(helper in cmd for helper in _PROCESS_HELPERS)
        }
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if left:
        listing = "; ".join(f"{pid}: {cmd[:200]}" for pid, cmd in sorted(left.items()))
        pytest.fail(f"processes left behind by the tests: {listing}", pytrace=False)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tf2_model(models_dir) -> Path:
    return model_factory.make_tf2_saved_model(models_dir / "tiny_tf2")


@pytest.fixture(scope="session")
def tf1_module(models_dir) -> Path:
    return model_factory.make_tf1_hub_module(models_dir / "tiny_tf1_classification")


@pytest.fixture(scope="session")
def tf1_feature_module(models_dir) -> Path:
    return model_factory.make_tf1_hub_module(models_dir / "tiny_tf1_features", classification=False)


@pytest.fixture(scope="session")
def tflite_model(models_dir, tf2_model) -> Path:
    return model_factory.make_tflite(tf2_model, models_dir / "tiny.tflite")


@pytest.fixture(scope="session")
def labels_file(models_dir) -> Path:
    return model_factory.write_labels(models_dir / "labels.txt")


def make_photo(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A synthetic 'photo': a random 4x4 colour layout, smoothed, with a gradient and grain."""
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    im = Image.fromarray(grid, "RGB").resize(size, Image.Resampling.BICUBIC)
    arr = np.asarray(im, np.float32)
    arr += np.linspace(-20, 20, size[0])[None, :, None] + rng.normal(0, 4, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def jpeg_bytes(seed: int) -> bytes:
    """A synthetic photo (:func:`make_photo`) as JPEG bytes, e.g. an upload."""
    buf = io.BytesIO()
    make_photo(seed).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture
def index(tmp_path, photo_dir, tf2_model) -> Path:
    """An index folder holding ``photo_dir``, made with the tiny TF2 model."""
    from lookalike import Index, IndexOptions

    folder = tmp_path / "ix"
    Index(folder).add([photo_dir], model=str(tf2_model), options=IndexOptions(workers=0))
    return folder


@pytest.fixture
def photo_dir(tmp_path) -> Path:
    """Eight distinct JPEG photos in a small tree."""
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    for i in range(8):
        folder = root / "sub" if i % 2 else root
        make_photo(i).save(folder / f"photo{i}.jpg", quality=92)
    return root


class _Server:
    def __init__(self, directory: Path) -> None:
        self.requests: list[str] = []
        owner = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args) -> None:
                owner.requests.append(self.path)

        handler = functools.partial(Handler, directory=str(directory))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def http_dir(tmp_path):
    """A loopback HTTP server over a fresh folder: yields (folder, server)."""
    folder = tmp_path / "served"
    folder.mkdir()
    server = _Server(folder)
    yield folder, server
    server.close()


def needs_shared(*paths: Path):
    missing = [str(p) for p in paths if not p.exists()]
    return pytest.mark.skipif(bool(missing), reason=f"shared assets absent: {', '.join(missing)}")


@pytest.fixture(scope="session")
def pg_admin() -> str:
    """The PostgreSQL server of the tests (``.ci/postgres`` starts one and sets these)."""
    url = os.environ.get("LOOKALIKE_TEST_PG")
    if not url:
        if os.environ.get("LOOKALIKE_REQUIRE_PG"):
            pytest.fail("LOOKALIKE_REQUIRE_PG is set but LOOKALIKE_TEST_PG is not")
        pytest.skip("no PostgreSQL server: set LOOKALIKE_TEST_PG (`source .ci/postgres` starts one)")
    return url


@pytest.fixture
def pg_url(pg_admin):
    """A fresh, empty database on the test server, dropped afterwards."""
    from sqlalchemy import create_engine, text

    from lookalike.storage.schema import database_url

    name = f"lookalike_{uuid.uuid4().hex[:12]}"
    admin = create_engine(database_url(pg_admin), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield database_url(pg_admin).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request):
    """Open stores on each catalogue backend: ``backend(directory, **kwargs)``."""
    from functools import partial

    from lookalike.storage import Store

    db = request.getfixturevalue("pg_url") if request.param == "postgresql" else None
    return partial(Store, db=db)


@pytest.fixture
def trash(tmp_path, monkeypatch) -> Path:
    """This test's own freedesktop trash folder (send2trash reads its folders at import)."""
    from send2trash import plat_other

    xdg = tmp_path / "xdg"
    monkeypatch.setenv("XDG_DATA_HOME", str(xdg))
    monkeypatch.setattr(plat_other, "XDG_DATA_HOME", os.fsencode(xdg))
    monkeypatch.setattr(plat_other, "HOMETRASH_B", os.fsencode(xdg / "Trash"))
    monkeypatch.setattr(plat_other, "HOMETRASH", str(xdg / "Trash"))
    return xdg / "Trash"


@pytest.fixture
def read_only_mount(tmp_path):
    """A read-only bind mount of ``tmp_path / "src"`` (a snapshot, a backup disc); skipped
    where mounting is not allowed (not root, no CAP_SYS_ADMIN)."""
    source, view = tmp_path / "src", tmp_path / "ro"
    source.mkdir()
    view.mkdir()
    mounted: list[bool] = []

    def mount() -> Path:
        if shutil.which("mount") is None:
            pytest.skip("no mount command")
        bind = subprocess.run(["mount", "--bind", source, view], capture_output=True)
        if bind.returncode != 0:
            pytest.skip(f"cannot bind-mount here: {bind.stderr.decode().strip()}")
        mounted.append(True)
        subprocess.run(["mount", "-o", "remount,bind,ro", view], check=True)
        return view

    yield source, mount
    if mounted:  # lazily: a connection the test left open keeps it busy until it closes
        subprocess.run(["umount", "--lazy", view], check=True)


def as_owner(command: list[str]) -> list[str]:
    """``command`` run with the file permissions an owner has: as root, without the
    capabilities that override them (``setpriv``); else as it is."""
    if os.geteuid() != 0:
        return command
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permissions cannot be made to bite")
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}", *command]
