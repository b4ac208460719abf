"""Indexing on a Ray cluster: ``lookalike index --ray ADDRESS``.

The driver (this process) walks the folders and decides what to do exactly as a local
run does (:func:`lookalike.indexer.pipeline.index_paths`: unchanged files skipped,
stored content reused by hash). Only the files to read go to the cluster, as a Ray Data
dataset of paths:

    paths -> map_batches(decode_batch): read, hash, decode (cut into the descriptor's views)
          -> map_batches(EmbedActor, actor pool): one model per actor, vectors
          -> iter_batches in the driver -> the one writer (crash-safe batches, as today)

Ray Data fuses the two maps into the actor pool's tasks (one process reads, decodes and
embeds a block), so pixels never cross the network: only paths go out and vectors
(3 KB an image) come back. The model is put into the object store once and each actor
loads it when it starts (the LiteRT file the driver validated, else the TensorFlow
SavedModel); the hashes already stored go the same way, so workers skip decoding them.
Workers never touch the catalogue. Actors lost with a worker or a node are restarted and
their tasks retried by Ray (Ray Data's actor pools default to unlimited restarts).
A driver connected through Ray Client (``ray://``), where Ray Data does not run, has an
actor on the cluster (:class:`_Pump`) run the dataset and takes its batches from it.

Photos must be at the same path on every node: :func:`check_visible` asks each node
before the run. Ray is imported lazily: lookalike works without it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import pickle
import socket
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from lookalike import descriptors
from lookalike.errors import ClusterError, PathsNotVisible
from lookalike.fsutil import atomic_write_bytes
from lookalike.images import ImageFile, read_image_file
from lookalike.indexer.pipeline import Embedded, IndexOptions
from lookalike.models.runtimes import Embedder, ModelInfo, TensorFlowEmbedder, TFLiteEmbedder
from lookalike.models.sources import ModelSource

INSTALL_HINT = "pip install 'lookalike[ray]'"
BLOCKS_PER_ACTOR = 8  # at least: small runs still balance across actors
MAX_BLOCK_ROWS = 4096  # files per Ray task at most: retries stay small, few objects for 100M files
VISIBILITY_SAMPLE = 16  # files each node is asked to read before the run
log = logging.getLogger(__name__)


LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray's node address is 127.0.0.1


def prepare(address: str):
    """Check ``address`` and that Ray is installed, before anything else is done; returns
    the ``ray`` module. A ``local`` runtime is for this machine only: it listens on
    loopback (unless the environment says otherwise)."""
    if check_address(address) == "local" and "ray" not in sys.modules:
        os.environ.setdefault(LOOPBACK_ONLY, "0")
    return import_ray()


def import_ray():
    """The ``ray`` module with Ray Data, or a :class:`ClusterError` naming the extra."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ClusterError(f"--ray needs Ray Data, which is not installed: {INSTALL_HINT} ({exc})") from None
    return ray


def check_address(address: str) -> str:
    """``local``, ``auto``, ``ray://HOST:PORT`` (Ray Client) or ``HOST:PORT`` (a head's GCS)."""
    value = address.strip()
    host, _, port = value.removeprefix("ray://").rpartition(":")
    if value in ("local", "auto") or (host and port.isdigit()):
        return value
    raise ClusterError(f"--ray {address!r}: expected local, auto, ray://HOST:PORT or HOST:PORT")


@contextmanager
def connected(address: str, num_cpus: int | None = None):
    """Ray, connected to ``address``; a runtime this started is shut down on leaving.

    A process already connected (``ray.init`` done by the caller) keeps its connection.
    """
    ray = import_ray()
    address = check_address(address)
    if ray.is_initialized():
        yield ray
        return
    kwargs: dict = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address == "local":
        kwargs.update(include_dashboard=False, num_cpus=num_cpus)
    _init(ray, address, kwargs)
    try:
        yield ray
    finally:
        ray.shutdown()


CLIENT_ATTEMPTS = 3  # a Ray Client server that fails to start one client's server process


def _init(ray, address: str, kwargs: dict) -> None:
    """``ray.init``; a Ray Client connection refused by the head while it starts the
    client's server process (``ConnectionAbortedError``, seen under load) is tried again."""
    for attempt in range(1, CLIENT_ATTEMPTS + 1):
        try:
            ray.init(address=address, **kwargs)
            return
        except ConnectionAbortedError as exc:
            ray.shutdown()
            if attempt == CLIENT_ATTEMPTS:
                raise ClusterError(f"cannot connect to Ray at {address} ({attempt} attempts): {exc}") from exc
            time.sleep(attempt)
        except Exception as exc:  # ConnectionError, ValueError, grpc errors...
            ray.shutdown()  # nothing half set up (Ray Client mode) left in a long-lived process
            raise ClusterError(f"cannot connect to Ray at {address}: {exc}") from exc


def _quiet_data(ray) -> None:
    """No Ray Data progress bars or execution notes: lookalike has its own bar."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.execution_options.preserve_order = False  # the writer takes files in any order
    for name in ("ray.data", "ray.data._internal"):
        logging.getLogger(name).setLevel(logging.ERROR)


# --- the model, shipped once -----------------------------------------------------------


@dataclass(frozen=True)
class ModelPackage:
    """A loaded model as bytes: the ``.tflite`` file (the LiteRT fast path, already checked
    against TensorFlow by the driver) or a tar of the SavedModel / hub module folder."""

    kind: str  # "tflite" | "tf"
    data: bytes
    info: ModelInfo
    load_args: dict

    @classmethod
    def of(cls, embedder: Embedder) -> ModelPackage:
        if isinstance(embedder, TFLiteEmbedder):
            args = {**embedder.load_args, "identity": embedder.info.identity}
            return cls("tflite", Path(embedder._path).read_bytes(), embedder.info, args)
        if isinstance(embedder, TensorFlowEmbedder):
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as tar:
                tar.add(embedder.path, arcname="model")
            return cls("tf", buf.getvalue(), embedder.info, {"input_size": embedder.info.input_size[0]})
        raise ClusterError(f"cannot ship a {type(embedder).__name__} to Ray workers")

    def load(self, threads: int) -> Embedder:
        """The same model in this (worker) process, from a per-machine cache of its files."""
        key = hashlib.sha256(self.data).hexdigest()[:24]
        folder = Path(tempfile.gettempdir()) / "lookalike-ray-models"
        folder.mkdir(exist_ok=True)
        if self.kind == "tflite":
            path = folder / f"{key}.tflite"
            if not path.exists():
                atomic_write_bytes(path, self.data)
            src = ModelSource(self.info.source, path)
            embedder: Embedder = TFLiteEmbedder(src, **self.load_args, num_threads=threads)
        else:
            path = folder / key
            if not path.exists():
                staging = Path(tempfile.mkdtemp(dir=folder))
                with tarfile.open(fileobj=io.BytesIO(self.data)) as tar:
                    tar.extractall(staging, filter="data")
                with contextlib.suppress(OSError):  # another actor on this machine was first
                    os.rename(staging, path)
            embedder = TensorFlowEmbedder(ModelSource(self.info.source, path / "model"), **self.load_args)
        if embedder.info != self.info:
            raise ClusterError(f"the model loaded on a worker differs: {embedder.info} vs {self.info}")
        return embedder


# --- on the workers ---------------------------------------------------------------------


class KnownHashes:
    """The content hashes already stored, as one sorted array (shared zero-copy by the
    workers of a node through the object store) with set membership."""

    def __init__(self, hashes: frozenset[str]) -> None:
        self.digests = np.sort(np.array([bytes.fromhex(h) for h in hashes], dtype="S32"))

    def __contains__(self, content_hash: object) -> bool:
        if not isinstance(content_hash, str) or not len(self.digests):
            return False
        key = np.array(bytes.fromhex(content_hash), dtype="S32")
        i = int(np.searchsorted(self.digests, key))
        return i < len(self.digests) and self.digests[i] == key


_resolved: dict[str, object] = {}  # per worker process: object store values by ref


def _resolve(box: list):
    """The value behind a boxed ObjectRef (boxed so Ray passes the ref, not the value),
    fetched once per worker process."""
    import ray

    (ref,) = box
    key = ref.hex()
    if key not in _resolved:
        _resolved[key] = ray.get(ref)
    return _resolved[key]


def _strip(record: ImageFile) -> bytes:
    """A record for the driver: everything but its pixels."""
    if record.image is not None:
        record = replace(record, image=replace(record.image, pixels=np.zeros(0, np.uint8)))
    return pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL)


def decode_batch(
    batch: dict, size: tuple[int, int], max_megapixels: float, descriptor: str, known: list | None
) -> dict:
    """Read, hash and decode a batch of paths (bytes) on a worker: the records (pickled,
    without pixels) and the pixels of the decodable ones ([n, views, h, w, 3], zeros for
    the others). Never raises for a bad file: its record carries the reason."""
    hashes = _resolve(known) if known else frozenset()
    views = descriptors.get_descriptor(descriptor).views
    paths = [os.fsdecode(p) for p in batch["path"]]
    records = [read_image_file(p, size, max_megapixels, hashes, descriptor) for p in paths]
    pixels = np.zeros((len(records), views, *size, 3), np.uint8)
    for i, r in enumerate(records):
        if r.ok:
            pixels[i] = r.image.pixels.reshape(views, *size, 3)
    return {"record": np.array([_strip(r) for r in records], dtype=object), "pixels": pixels}


class EmbedActor:
    """One model per actor, loaded once when the actor starts; embeds decoded batches."""

    def __init__(self, package: list, descriptor: str) -> None:
        import ray

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
        self.embedder = _resolve(package).load(threads=max(1, round(cpus)))
        self.descriptor = descriptors.get_descriptor(descriptor)
        self.classes = 0  # class scores per image (classifiers: labels are chosen by the driver)
        if self.embedder.info.has_labels:
            probe = self.embedder.embed(np.zeros((1, *self.embedder.info.input_size, 3), np.uint8))
            self.classes = probe.scores.shape[1]

    def __call__(self, batch: dict) -> dict:
        records = [pickle.loads(r) for r in batch["record"]]
        ok = [i for i, r in enumerate(records) if r.ok]
        vectors = np.zeros((len(records), self.embedder.info.dim), np.float32)
        out = {"record": batch["record"], "vector": vectors}
        if self.classes:
            out["scores"] = np.zeros((len(records), self.classes), np.float32)
        if ok:
            views = [batch["pixels"][i] for i in ok]
            if self.descriptor.views == 1:
                views = [v[0] for v in views]
            emb = descriptors.embed(self.embedder, self.descriptor, views)
            vectors[ok] = emb.vectors
            if self.classes:
                out["scores"][ok] = emb.scores
        return out


def _unreadable(paths: Sequence[bytes]) -> tuple[str, list[str]]:
    """(this node's name, the paths it cannot read)."""
    missing = [os.fsdecode(p) for p in paths if not os.access(p, os.R_OK)]
    return socket.gethostname(), missing


# --- in the driver ----------------------------------------------------------------------


def check_visible(ray, paths: Sequence[str]) -> None:
    """Ask every node with CPUs whether it can read ``paths``; :class:`PathsNotVisible`
    names the first node that cannot (the photos must be on storage every node sees at
    the same path)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if not paths:
        return
    probe = ray.remote(num_cpus=0, max_retries=3)(_unreadable)
    encoded = [os.fsencode(p) for p in paths]
    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
    pending = {
        probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
            encoded
        ): n
        for n in nodes
    }
    for ref, node in pending.items():
        try:
            host, missing = ray.get(ref)
        except (ray.exceptions.TaskUnschedulableError, ray.exceptions.NodeDiedError):
            continue  # listed alive, gone since (its death not yet noticed): it will run nothing
        if missing:
            more = f" (and {len(missing) - 1} more of {len(paths)} checked)" if len(missing) > 1 else ""
            raise PathsNotVisible(
                f"Ray node {node.get('NodeManagerAddress', '?')} ({host}) cannot read {missing[0]}{more}: "
                "the photos must be on storage every node sees at the same path"
            )


def _sample(paths: Sequence[str], n: int = VISIBILITY_SAMPLE) -> list[str]:
    if len(paths) <= n:
        return list(paths)
    step = (len(paths) - 1) / (n - 1)
    return [paths[round(i * step)] for i in range(n)]


class RaySource:
    """A :class:`~lookalike.indexer.pipeline.RecordSource` that reads, decodes and embeds
    on a Ray cluster (connected by :func:`connected`) and yields embedded records."""

    def __init__(self, ray, embedder: Embedder, workers: int | None = None) -> None:
        self.ray = ray
        self.embedder = embedder
        self.workers = workers  # embedding actors; None: one per CPU of the cluster
        self._package = None

    def cluster_cpus(self) -> int:
        return max(1, int(self.ray.cluster_resources().get("CPU", 1)))

    def __call__(
        self,
        paths: Sequence[str],
        size: tuple[int, int],
        opts: IndexOptions,
        known_hashes: frozenset[str],
        descriptor: str,
    ) -> Iterator[ImageFile | Embedded]:
        if not paths:
            return
        ray = self.ray
        check_visible(ray, _sample(paths))
        _quiet_data(ray)
        if self._package is None:  # once per run: every actor loads it from the object store
            self._package = ray.put(ModelPackage.of(self.embedder))
        known = [ray.put(KnownHashes(known_hashes))] if known_hashes else None
        actors = self.workers or self.cluster_cpus()
        rows = block_rows(len(paths), actors, opts.batch_size)
        plan = _Plan(
            tables=list(_path_tables(paths, rows)),
            decode={
                "size": tuple(size),
                "max_megapixels": opts.max_megapixels,
                "descriptor": descriptor,
                "known": known,
            },
            batch_size=opts.batch_size,
            actors=min(actors, -(-len(paths) // rows)),
            package=[self._package],
        )
        try:
            if _through_client(ray):  # Ray Data does not run over Ray Client: a pump on the cluster does
                pump = ray.remote(num_cpus=0)(_Pump).remote(plan)
                while batches := ray.get(pump.take.remote()):
                    for batch in batches:
                        yield from _records(batch)
            else:
                for batch in _batches(ray, plan):
                    yield from _records(batch)
        except ray.exceptions.RayError as exc:
            raise ClusterError(f"the Ray run failed: {_first_line(exc)}") from exc


@dataclass
class _Plan:
    """The dataset of a run, as arguments (it is built where it is iterated)."""

    tables: list  # pyarrow tables of paths, one per block
    decode: dict  # decode_batch's arguments
    batch_size: int
    actors: int
    package: list  # the boxed ModelPackage ref


def _batches(ray, plan: _Plan) -> Iterator[dict]:
    """paths -> decode_batch -> EmbedActor pool, streamed as numpy batches."""
    _quiet_data(ray)
    ds = ray.data.from_arrow(plan.tables)
    ds = ds.map_batches(
        decode_batch, batch_size=plan.batch_size, batch_format="numpy", fn_kwargs=plan.decode
    ).map_batches(
        EmbedActor,
        batch_size=plan.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=plan.actors),
        fn_constructor_args=(plan.package, plan.decode["descriptor"]),
    )
    return ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2)


class _Pump:
    """Runs a plan's dataset on the cluster for a driver connected through Ray Client,
    which takes its batches a few at a time."""

    def __init__(self, plan: _Plan) -> None:
        import ray

        self.batches = iter(_batches(ray, plan))  # one pass: the iterable would start over each time

    def take(self, n: int = 4) -> list[dict]:
        out = []
        for batch in self.batches:
            out.append(batch)
            if len(out) == n:
                break
        return out


def _through_client(ray) -> bool:
    try:
        return bool(ray.util.client.ray.is_connected())
    except AttributeError:
        return False


@contextmanager
def ray_source(
    address: str, embedder: Embedder, roots: Sequence[str | os.PathLike], workers: int | None = None
):
    """Connect to Ray at ``address``, check every node sees ``roots``, and yield the
    :class:`RaySource` for :func:`~lookalike.indexer.pipeline.index_paths`."""
    with connected(address) as ray:
        check_visible(ray, [os.path.abspath(os.fspath(r)) for r in roots])
        yield RaySource(ray, embedder, workers)


def block_rows(files: int, actors: int, batch_size: int) -> int:
    """Files per Ray task: whole model batches, enough tasks for every actor to take
    several (balance), at most :data:`MAX_BLOCK_ROWS` (few objects for the driver)."""
    per = -(-files // (actors * BLOCKS_PER_ACTOR))
    batches = max(1, min(MAX_BLOCK_ROWS // batch_size, -(-per // batch_size)))
    return batches * batch_size


def _path_tables(paths: Sequence[str], rows: int):
    """The paths as Arrow tables of ``rows`` (one per block): bytes, for names that are not UTF-8."""
    import pyarrow as pa

    for start in range(0, len(paths), rows):
        encoded = [os.fsencode(p) for p in paths[start : start + rows]]
        yield pa.table({"path": pa.array(encoded, pa.binary())})


def _records(batch: dict) -> Iterator[ImageFile | Embedded]:
    scores = batch.get("scores")
    for i, blob in enumerate(batch["record"]):
        record: ImageFile = pickle.loads(blob)
        if record.ok:
            yield Embedded(record, batch["vector"][i], None if scores is None else scores[i])
        else:
            yield record


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
