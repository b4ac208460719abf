"""Turn a ``--model`` value into files on disk: catalogue names, URLs, archives, folders.

Downloads of TF Hub handles go through tensorflow_hub's own resolvers, so they land
in its cache (``TFHUB_CACHE_DIR``, else lookalike's cache folder). Everything else
lookalike fetches (label lists, ``.tflite`` URLs) and unpacks (local ``.tar.gz``)
is cached beside it, written atomically so an interrupted download leaves nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import shutil
import socket
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from lookalike.errors import LookalikeError
from lookalike.fsutil import atomic_replace_dir, atomic_write_stream
from lookalike.models.known import LABELS_URL, KnownModel, lookup

DOWNLOAD_TIMEOUT_S = 60
log = logging.getLogger("lookalike")


class ModelError(LookalikeError):
    """A model could not be found, fetched or understood."""

    http_status = 503  # a service cannot run without its model


@dataclass(frozen=True)
class ModelSource:
    """Where a model's files are and what the user called it."""

    source: str  # what the user asked for, normalised (catalogue name, URL, absolute path)
    path: Path  # local SavedModel / hub module folder, or .tflite file
    entry: KnownModel | None = None

    @property
    def is_tflite(self) -> bool:
        return self.path.suffix == ".tflite"


def cache_dir() -> Path:
    """lookalike's cache: ``$LOOKALIKE_CACHE_DIR``, else the per-user cache folder."""
    env = os.environ.get("LOOKALIKE_CACHE_DIR")
    return Path(env) if env else Path(platformdirs.user_cache_dir("lookalike"))


def tfhub_cache_dir() -> Path:
    """TF Hub's module cache: ``$TFHUB_CACHE_DIR`` when set, else inside lookalike's cache."""
    env = os.environ.get("TFHUB_CACHE_DIR")
    if env:
        return Path(env)
    path = cache_dir() / "tfhub_modules"
    os.environ["TFHUB_CACHE_DIR"] = str(path)  # tensorflow_hub reads it at resolve time
    return path


def is_url(value: str) -> bool:
    return value.startswith(("http://", "https://"))


def resolve_model(value: str) -> ModelSource:
    """Find (downloading if needed) the model named by ``value``."""
    entry = lookup(value)
    if entry is not None:
        return ModelSource(entry.name, _resolve_hub_handle(entry.handle), entry)
    if is_url(value):
        if value.split("?")[0].endswith(".tflite"):
            return ModelSource(value, download(value, cache_dir() / "downloads", suffix=".tflite"))
        return ModelSource(value, _resolve_hub_handle(value))
    path = Path(value).expanduser()
    if not path.exists():
        raise ModelError(
            f"model {value!r} is neither a catalogue name (see `lookalike models`), "
            "a URL, nor an existing file or folder"
        )
    path = path.resolve()
    if path.is_dir():
        return ModelSource(str(path), _check_saved_model_dir(path))
    if path.suffix == ".tflite":
        return ModelSource(str(path), path)
    if path.name.endswith((".tar.gz", ".tgz", ".tar")):
        return ModelSource(str(path), _extract_archive(path))
    raise ModelError(f"{path}: expected a SavedModel folder, a .tar.gz of one, or a .tflite file")


def _resolve_hub_handle(handle: str) -> Path:
    cache = tfhub_cache_dir()
    clear_abandoned_downloads(cache)
    lock = cache / (hashlib.sha1(handle.encode()).hexdigest() + ".lock")  # tensorflow_hub's name
    if lock.exists():
        log.warning("another process is downloading %s (lock %s); waiting for it", handle, lock)
    from lookalike.models.native import import_tensorflow

    import_tensorflow()
    import tensorflow_hub as hub

    try:
        return _check_saved_model_dir(Path(hub.resolve(handle)))
    except ModelError:
        raise
    except Exception as exc:  # tensorflow_hub raises many kinds (URLError, tarfile, OSError)
        raise ModelError(f"could not download {handle}: {exc}\n{offline_hint()}") from exc


def clear_abandoned_downloads(cache: Path) -> None:
    """Remove the download locks, and part-downloaded folders, of tensorflow_hub runs that died.

    tensorflow_hub writes ``<module>.lock`` (``host.pid.uid``) while it downloads into
    ``<module>.<uid>.tmp`` and removes both in a ``finally`` that a killed process (SIGTERM,
    SIGKILL, a closed terminal) never runs; the next run then waits 10 minutes for it. A lock
    whose owner is a process of this machine that no longer exists is cleared; a live owner's
    is left (that run waits for it, as it should), and so is one from another machine.
    """
    host = socket.gethostname()
    for lock in cache.glob("*.lock"):
        try:
            owner_host, pid, uid = lock.read_text(encoding="utf-8").rsplit(".", 2)
        except (OSError, UnicodeDecodeError, ValueError):
            continue  # gone meanwhile, or not tensorflow_hub's
        if owner_host != host or not pid.isdigit() or _process_exists(int(pid)):
            continue
        shutil.rmtree(f"{lock.with_suffix('')}.{uid}.tmp", ignore_errors=True)
        with contextlib.suppress(OSError):  # a read-only cache: tensorflow_hub's own timeout it is
            lock.unlink(missing_ok=True)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: another user's process
        return True
    return True


def offline_hint() -> str:
    """What to do when a TF Hub module cannot be downloaded (offline, behind a proxy)."""
    return (
        "hint: without internet, give a model already on disk with --model PATH (a SavedModel "
        "folder, a .tar.gz of one, or a .tflite file), or point TFHUB_CACHE_DIR at a TF Hub cache "
        f"that holds it (now: {tfhub_cache_dir()})"
    )


def _check_saved_model_dir(path: Path) -> Path:
    if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
        return path
    raise ModelError(f"{path}: no saved_model.pb here; not a SavedModel or TF Hub module")


def _extract_archive(archive: Path) -> Path:
    """Unpack a local module archive once into the cache, keyed by its content."""
    target = cache_dir() / "archives" / file_digest(archive)[:24]
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)

        def unpack(folder: Path) -> None:
            with tarfile.open(archive) as tar:
                tar.extractall(folder, filter="data")  # refuses absolute paths, .., devices

        try:
            atomic_replace_dir(unpack, target)
        except (tarfile.TarError, OSError) as exc:
            raise ModelError(f"{archive}: cannot unpack ({exc})") from exc
    # Archives made with `tar -C parent folder` hold one top folder instead of the files.
    children = list(target.iterdir())
    if not (target / "saved_model.pb").exists() and len(children) == 1 and children[0].is_dir():
        target = children[0]
    return _check_saved_model_dir(target)


def _copy_whole(response, out) -> None:
    """Copy ``response`` to ``out``; a body shorter than its Content-Length (the connection
    closed early) is an error, so a cut-off file is never cached as the whole one."""
    shutil.copyfileobj(response, out)
    announced = response.headers.get("Content-Length")
    if announced and announced.isdigit() and out.tell() != int(announced):
        raise http.client.IncompleteRead(b"", int(announced) - out.tell())


def download(url: str, folder: Path, suffix: str = "") -> Path:
    """Fetch ``url`` once into ``folder`` (named by the URL's hash); atomic."""
    target = folder / (hashlib.sha1(url.encode()).hexdigest() + suffix)
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as r:
            atomic_write_stream(target, lambda out: _copy_whole(r, out))
    except (OSError, http.client.HTTPException, ValueError) as exc:  # URLError, HTTPError, timeouts;
        raise ModelError(f"could not download {url}: {exc}") from exc  # a cut-off body, a bad port
    return target


def load_labels(value: str | None = None) -> list[str]:
    """ImageNet class names, index 0 = background: from a file, a URL, or the default URL."""
    value = value or LABELS_URL
    path = download(value, cache_dir() / "labels", ".txt") if is_url(value) else Path(value)
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except OSError as exc:
        raise ModelError(f"cannot read labels {value}: {exc}") from exc
    names = [n for n in names if n]
    if not names:
        raise ModelError(f"labels file {value} is empty")
    return names


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def fingerprint(path: Path) -> str:
    """A content identity for a model: hash of its graph and variable index, or the file."""
    if path.is_file():
        return file_digest(path)
    h = hashlib.sha256()
    for rel in ("saved_model.pb", "saved_model.pbtxt", "variables/variables.index"):
        if (path / rel).is_file():
            h.update(rel.encode())
            h.update(bytes.fromhex(file_digest(path / rel)))
    return h.hexdigest()
