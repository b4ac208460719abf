"""Models: catalogue, resolving every kind of --model value, runtimes, labels."""

from __future__ import annotations

import http.server
import os
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from lookalike.errors import InvalidArgument
from lookalike.models import (
    DEFAULT_MODEL,
    KNOWN_MODELS,
    ModelError,
    TensorFlowEmbedder,
    TFLiteEmbedder,
    load_labels,
    load_model,
    resolve_model,
)
from lookalike.models.labels import probabilities, top_k
from lookalike.models.sources import clear_abandoned_downloads
from tests import model_factory
from tests.conftest import SHARED_MODELS, SHARED_PHOTOS, needs_shared


def _batch(embedder, n=3, seed=0):
    h, w = embedder.info.input_size
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_catalogue_lists_every_seed_module():
    v1 = [e for e in KNOWN_MODELS.values() if e.name.startswith("mobilenet_v1")]
    assert len(v1) == 32  # 4 multipliers x 4 sizes x (feature_vector, classification)
    e = KNOWN_MODELS["mobilenet_v1_050_160_classification"]
    assert (e.dim, e.input_size, e.has_labels, e.hub_format) == (512, 160, True, "tf1")
    assert e.handle == "https://tfhub.dev/google/imagenet/mobilenet_v1_050_160/classification/3"
    assert {KNOWN_MODELS[f"mobilenet_v1_{m}_224"].dim for m in ("025", "050", "075", "100")} == {
        256,
        512,
        768,
        1024,
    }
    assert KNOWN_MODELS["mobilenet_v3_small_100_224"].hub_format == "tf2"
    assert KNOWN_MODELS["mobilenet_v3_large_100_224"].dim == 1280
    assert DEFAULT_MODEL in KNOWN_MODELS


def test_tf2_saved_model_folder(tf2_model):
    e = load_model(str(tf2_model), runtime="tf")
    assert isinstance(e, TensorFlowEmbedder)
    assert e.info.dim == model_factory.TF2_DIM and e.info.input_size == (224, 224)
    assert e.info.input_range == (0.0, 1.0) and not e.info.has_labels
    out = e.embed(_batch(e))
    assert out.vectors.shape == (3, model_factory.TF2_DIM) and out.scores is None
    np.testing.assert_allclose(np.linalg.norm(out.vectors, axis=1), 1.0, rtol=1e-5)


def test_tf2_input_size_option(tf2_model):
    assert load_model(str(tf2_model), input_size=128).info.input_size == (128, 128)


def test_an_input_size_or_range_a_model_cannot_take_is_refused_not_ignored(tf2_model, tf1_module):
    for size in (7, 100_000):  # a 7-px picture has no colour grid; 100,000 px asked for 112 GiB
        with pytest.raises(InvalidArgument, match=f"input size must be 32 to 1024 pixels, not {size}"):
            load_model(str(tf2_model), input_size=size)
    fixed = model_factory.TF1_SIZE
    with pytest.raises(InvalidArgument, match=f"takes {fixed}x{fixed} images only, not 96"):
        load_model(str(tf1_module), input_size=96, runtime="tf")
    with pytest.raises(InvalidArgument, match=r"takes pixels in \[0, 1\] only"):
        load_model(str(tf2_model), input_range=(-1.0, 1.0), runtime="tf")
    same = load_model(str(tf1_module), input_size=fixed, input_range=(0.0, 1.0), runtime="tf")
    assert same.info.input_size == (fixed, fixed)  # what an index records of it: accepted


def test_tf1_classification_module_gives_vectors_and_logits_in_one_pass(tf1_module):
    e = load_model(str(tf1_module), runtime="tf")
    assert e.info.input_size == (model_factory.TF1_SIZE,) * 2
    assert e.info.dim == model_factory.TF1_DIM and e.info.has_labels
    x = _batch(e)
    out = e.embed(x)
    assert out.scores.shape == (3, model_factory.CLASSES)
    # Same numbers as calling the two signatures separately.
    import tensorflow as tf
    import tensorflow_hub as hub

    m = hub.load(str(tf1_module))
    images = tf.constant(x.astype(np.float32) / 255.0)
    feats = m.signatures["image_feature_vector"](images=images)["default"].numpy()
    logits = m.signatures["image_classification"](images=images)["default"].numpy()
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    np.testing.assert_allclose(out.vectors, feats, atol=1e-5)
    np.testing.assert_allclose(out.scores, logits, rtol=1e-4, atol=1e-4)


def test_tf1_feature_vector_module(tf1_feature_module):
    e = load_model(str(tf1_feature_module))
    assert e.info.dim == model_factory.TF1_DIM and not e.info.has_labels


def test_local_tarball_is_unpacked_once_into_the_cache(tf1_module, tmp_path):
    archive = model_factory.make_tarball(tf1_module, tmp_path / "module.tar.gz")
    src = resolve_model(str(archive))
    assert src.path.is_relative_to(tmp_path / "cache") and (src.path / "tfhub_module.pb").exists()
    assert resolve_model(str(archive)).path == src.path
    assert load_model(str(archive)).info.identity == load_model(str(tf1_module)).info.identity


def test_url_handle_downloads_through_tfhub_resolver_into_tfhub_cache(tf2_model, http_dir, tmp_path):
    folder, server = http_dir
    model_factory.make_tarball(tf2_model, folder / "tiny.tar.gz")
    url = f"{server.url}/tiny.tar.gz"
    e = load_model(url)
    assert e.info.source == url and e.info.dim == model_factory.TF2_DIM
    cached = [p for p in (tmp_path / "tfhub").iterdir() if p.is_dir()]
    assert len(cached) == 1 and (cached[0] / "saved_model.pb").exists()
    assert server.requests == ["/tiny.tar.gz?tf-hub-format=compressed"]
    load_model(url)  # second time: from the cache, no request
    assert len(server.requests) == 1


def test_tflite_url_downloaded_once(tflite_model, http_dir):
    folder, server = http_dir
    shutil.copy(tflite_model, folder / "m.tflite")
    a = load_model(f"{server.url}/m.tflite")
    b = load_model(f"{server.url}/m.tflite")
    assert a.info.identity == b.info.identity and len(server.requests) == 1


def test_download_failure_is_a_clear_error(http_dir):
    _, server = http_dir
    with pytest.raises(ModelError, match="could not download"):
        load_model(f"{server.url}/missing.tar.gz")


def test_tflite_float_model_matches_tensorflow(tf2_model, tflite_model):
    lite = load_model(str(tflite_model), input_range=(0.0, 1.0), input_size=32)
    assert isinstance(lite, TFLiteEmbedder) and lite.info.input_size == (32, 32)
    tf_model = load_model(str(tf2_model), input_size=32, runtime="tf")
    x = _batch(lite, n=5)
    cos = np.sum(lite.embed(x).vectors * tf_model.embed(x).vectors, axis=1)
    assert np.all(cos > 0.9999)


@pytest.mark.parametrize(
    "name, dim, labels",
    [
        ("mobilenet_v1_025_128_classification_quant.tflite", 256, True),
        ("mobilenet_v1_100_224_feature_vector_quant.tflite", 1024, False),
        ("mobilenet_v1_025_224_classification_float.tflite", 256, True),
    ],
)
@needs_shared(SHARED_MODELS)
def test_shared_tflite_models(name, dim, labels):
    e = load_model(str(SHARED_MODELS / name))
    out = e.embed(_batch(e, n=2))
    assert out.vectors.shape == (2, dim) and (out.scores is not None) == labels
    assert np.all(np.isfinite(out.vectors))


@needs_shared(SHARED_MODELS)
def test_quantized_classifier_labels_a_real_photo():
    from PIL import Image

    from tests.conftest import SHARED_PHOTOS

    photo = SHARED_PHOTOS / "coral" / "parrot.jpg"
    if not photo.exists():
        pytest.skip("no parrot photo")
    e = load_model(str(SHARED_MODELS / "mobilenet_v1_075_192_classification_quant.tflite"))
    im = Image.open(photo).convert("RGB").resize(e.info.input_size[::-1])
    scores = e.embed(np.asarray(im)[None]).scores
    names = load_labels(str(SHARED_MODELS / "imagenet_labels_1001.txt"))
    assert "macaw" in [n for _, n, _ in top_k(scores, names)[0]]


def test_bad_model_values_are_clear_errors(tmp_path):
    with pytest.raises(ModelError, match="catalogue name"):
        resolve_model("no_such_model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=r"no saved_model\.pb"):
        resolve_model(str(tmp_path / "empty"))
    (tmp_path / "x.bin").write_bytes(b"123")
    with pytest.raises(ModelError, match="expected"):
        resolve_model(str(tmp_path / "x.bin"))
    (tmp_path / "broken.tar.gz").write_bytes(b"not a tarball")
    with pytest.raises(ModelError, match="cannot unpack"):
        resolve_model(str(tmp_path / "broken.tar.gz"))


def test_labels_from_file_and_url(labels_file, http_dir):
    folder, server = http_dir
    assert load_labels(str(labels_file))[:2] == ["background", "class 0001"]
    shutil.copy(labels_file, folder / "labels.txt")
    url = f"{server.url}/labels.txt"
    assert len(load_labels(url)) == model_factory.CLASSES
    assert len(load_labels(url)) == model_factory.CLASSES and len(server.requests) == 1
    assert os.listdir(os.path.join(os.environ["LOOKALIKE_CACHE_DIR"], "labels"))


def test_a_bad_url_or_a_download_cut_short_is_a_clear_error_and_caches_nothing():
    """A port that is not a number, and a server closing before the length it announced,
    fail as downloads do (not with a traceback), and leave nothing in the cache."""
    listener = socket.create_server(("127.0.0.1", 0))

    def cut_short() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nbackground\n")
        conn.close()

    server = threading.Thread(target=cut_short, daemon=True)
    server.start()
    for url in (
        "http://127.0.0.1:80a/labels.txt",
        f"http://127.0.0.1:{listener.getsockname()[1]}/labels.txt",
    ):
        with pytest.raises(ModelError, match=f"could not download {url}"):
            load_labels(url)
    server.join(10)
    listener.close()
    cached = os.path.join(os.environ["LOOKALIKE_CACHE_DIR"], "labels")
    assert not os.path.isdir(cached) or os.listdir(cached) == []


def test_a_download_killed_midway_does_not_stall_the_next_run(tf2_model, tmp_path):
    """tensorflow_hub locks a module while it downloads and removes the lock in a ``finally``
    that SIGTERM skips; the next run waited 10 minutes for that dead process. Now a lock
    whose owner on this machine is gone is cleared, with its part-downloaded folder."""
    archive = model_factory.make_tarball(tf2_model, tmp_path / "tiny.tar.gz").read_bytes()
    release, requests = threading.Event(), []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the first request stalls halfway, later ones are served
            requests.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(archive)))
            self.end_headers()
            if len(requests) == 1:
                self.wfile.write(archive[: len(archive) // 2])
                self.wfile.flush()
                release.wait(120)
            else:
                self.wfile.write(archive)

        def log_message(self, *args) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/tiny.tar.gz"
    resolve = f"from lookalike.models import resolve_model; print(resolve_model({url!r}).path)"
    try:
        first = subprocess.Popen([sys.executable, "-c", resolve], stdout=subprocess.DEVNULL)
        cache = tmp_path / "tfhub"
        for _ in range(600):  # importing TensorFlow takes a while
            if list(cache.glob("*.lock")) and requests:
                break
            time.sleep(0.1)
        first.terminate()
        first.wait(30)
        assert list(cache.glob("*.lock")) and list(cache.glob("*.tmp"))  # what SIGTERM leaves
        second = subprocess.run([sys.executable, "-c", resolve], capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stderr
        assert (Path(second.stdout.strip()) / "saved_model.pb").is_file()
        assert not list(cache.glob("*.lock")) and not list(cache.glob("*.tmp"))
    finally:
        release.set()
        httpd.shutdown()
        httpd.server_close()


def test_download_locks_of_live_or_foreign_processes_are_kept(tmp_path):
    """Only a dead local owner's lock is cleared: a live run's download is not pulled from
    under it, and a process on another machine sharing the cache cannot be checked."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    owners = {
        "live": f"{host}.{os.getpid()}.aa",
        "foreign": f"elsewhere.example.{dead.pid}.bb",
        "dead": f"{host}.{dead.pid}.cc",
    }
    for name, owner in owners.items():
        (tmp_path / f"{name}.lock").write_text(owner)
        (tmp_path / f"{name}.{owner.rsplit('.', 1)[1]}.tmp").mkdir()
    clear_abandoned_downloads(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "foreign.bb.tmp",
        "foreign.lock",
        "live.aa.tmp",
        "live.lock",
    ]


def test_an_abandoned_download_lock_on_read_only_media_is_left_to_tensorflow_hub(tmp_path):
    """A cache on read-only media (a shared, mounted cache) cannot lose its locks: resolving
    goes on (tensorflow_hub waits out the lock itself) instead of failing with EROFS."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1) to mount a read-only folder")
    cache = tmp_path / "ro"
    cache.mkdir()
    (cache / "m.lock").write_text(f"{socket.gethostname()}.999999999.ab")  # no such process
    clear = "from pathlib import Path; from lookalike.models.sources import clear_abandoned_downloads as c"
    script = f"mount --bind {cache} {cache} && mount -o remount,bind,ro {cache} && {sys.executable} -c "
    script += shlex.quote(f"{clear}; c(Path({str(cache)!r})); print('resolved')")
    res = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=60)
    if "mount" in res.stderr and "resolved" not in res.stdout:
        pytest.skip(f"no read-only mount here: {res.stderr.strip()}")
    assert res.returncode == 0 and "resolved" in res.stdout, res.stderr
    assert (cache / "m.lock").exists()


def test_top_k_softmaxes_logits_and_keeps_probabilities():
    logits = np.array([[0.0, 5.0, 1.0]])
    assert [n for _, n, _ in top_k(logits, ["bg", "a", "b"], k=2)[0]] == ["a", "b"]
    p = np.array([[0.1, 0.7, 0.2]])
    np.testing.assert_allclose(probabilities(p), p)
    np.testing.assert_allclose(probabilities(logits).sum(), 1.0)
    with pytest.raises(ValueError, match="label list"):
        top_k(logits, ["only", "two"])


# --- the LiteRT fast path -------------------------------------------------------------


def _agree(a, b, x):
    ea, eb = a.embed(x), b.embed(x)
    return float(np.min(np.sum(ea.vectors * eb.vectors, axis=1))), ea, eb


def test_tflite_runtime_converts_once_and_matches_tensorflow(tf2_model, tmp_path):
    from lookalike.models.convert import tflite_path

    tf_model = load_model(str(tf2_model), runtime="tf")
    lite = load_model(str(tf2_model), runtime="tflite")
    assert isinstance(lite, TFLiteEmbedder) and lite.info == tf_model.info
    assert lite.info.runtime == "tflite" and lite.info.identity == tf_model.info.identity
    cached = tflite_path(tf_model)
    assert cached.is_relative_to(tmp_path / "cache") and cached.exists()
    stamp = cached.stat().st_mtime_ns
    assert isinstance(load_model(str(tf2_model)), TFLiteEmbedder)  # auto picks it
    assert cached.stat().st_mtime_ns == stamp  # reused, not converted again
    cos, _, _ = _agree(tf_model, lite, _batch(tf_model, n=40, seed=3))
    assert cos >= 0.9999


def test_checked_twin_loads_without_tensorflow(tf2_model):
    from lookalike.models.convert import tflite_path

    tf_model = load_model(str(tf2_model), runtime="tf")
    first = load_model(str(tf2_model), runtime="tflite")  # converted, checked and recorded
    code = (
        "import sys; from lookalike.models import load_model; e = load_model(sys.argv[1]);"
        "print(type(e).__name__, 'tensorflow' in sys.modules)"
    )
    run = subprocess.run([sys.executable, "-c", code, str(tf2_model)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["TFLiteEmbedder", "False"]
    again = load_model(str(tf2_model))
    x = _batch(tf_model, n=5)
    assert again.info == first.info == tf_model.info
    np.testing.assert_array_equal(again.embed(x).vectors, first.embed(x).vectors)
    tflite_path(tf_model).unlink()  # the twin gone: converted and checked again, not a failure
    assert isinstance(load_model(str(tf2_model), runtime="tflite"), TFLiteEmbedder)
    assert tflite_path(tf_model).exists()


def test_litert_calls_smaller_than_a_batch_run_unpadded_with_the_same_vectors(tf2_model):
    lite = load_model(str(tf2_model), runtime="tflite")
    x = _batch(lite, n=32, seed=5)
    full = lite.embed(x).vectors
    for n in (1, 3, 8, 17):
        np.testing.assert_allclose(lite.embed(x[:n]).vectors, full[:n], atol=1e-6)
    # 1, 3 and 8 images ran on interpreters of 1, 4 and 8 (17: the full batch of 32, padded)
    assert sorted(lite._twins) == [1, 4, 8]


def test_tflite_runtime_keeps_labels_of_tf1_classifiers(tf1_module):
    tf_model = load_model(str(tf1_module), runtime="tf")
    lite = load_model(str(tf1_module), runtime="tflite")
    cos, a, b = _agree(tf_model, lite, _batch(tf_model, n=9))
    assert cos >= 0.9999 and lite.info.has_labels
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-3)


def test_unconvertible_model_falls_back_to_tensorflow(models_dir, caplog):
    model = model_factory.make_tf2_saved_model(models_dir / "area_pool", pool="area")
    assert isinstance(load_model(str(model)), TensorFlowEmbedder)
    assert "using TensorFlow: cannot convert" in caplog.text and "ResizeArea" in caplog.text
    with pytest.raises(ModelError, match="cannot convert"):
        load_model(str(model), runtime="tflite")


def test_a_cache_that_cannot_be_written_falls_back_to_tensorflow(tf2_model, tmp_path, monkeypatch, caplog):
    """A full disk or an unwritable cache folder stopped every command at the LiteRT
    conversion ("Not a directory" and nothing indexed); TensorFlow runs the model all the same."""
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("LOOKALIKE_CACHE_DIR", str(tmp_path / "a-file" / "cache"))
    assert isinstance(load_model(str(tf2_model)), TensorFlowEmbedder)
    assert "using TensorFlow: cannot cache the TFLite conversion" in caplog.text
    with pytest.raises(ModelError, match=r"cannot cache the TFLite conversion in .*a-file"):
        load_model(str(tf2_model), runtime="tflite")


def test_unfaithful_conversion_is_rejected(tf2_model, monkeypatch):
    from lookalike.models import convert

    monkeypatch.setattr(convert, "MIN_COSINE", 1.5)  # no conversion can pass this
    with pytest.raises(ModelError, match="differ from TensorFlow"):
        load_model(str(tf2_model), runtime="tflite")
    assert isinstance(load_model(str(tf2_model)), TensorFlowEmbedder)


def test_unknown_runtime():
    with pytest.raises(ValueError, match="runtime must be"):
        load_model("x", runtime="gpu")


@needs_shared(SHARED_MODELS / "mobilenet_v1_075_224_feature_vector", SHARED_PHOTOS / "imagenet-sample")
def test_litert_gives_tensorflows_vectors_on_real_photos():
    from lookalike.images import read_image_file

    model = str(SHARED_MODELS / "mobilenet_v1_075_224_feature_vector")
    tf_model = load_model(model, runtime="tf")
    lite = load_model(model, runtime="tflite")
    photos = sorted((SHARED_PHOTOS / "imagenet-sample").iterdir())[::50]
    x = np.stack([read_image_file(str(p), (224, 224)).image.pixels for p in photos])
    cos, _, _ = _agree(tf_model, lite, x)
    assert cos >= 0.9999, cos


def test_embed_is_safe_from_many_threads(tf2_model):
    from concurrent.futures import ThreadPoolExecutor

    e = load_model(str(tf2_model))  # LiteRT: its interpreter alone is not thread-safe
    batches = [_batch(e, n=n, seed=n) for n in (1, 2, 40, 1, 3, 33) * 4]
    expected = [e.embed(b).vectors for b in batches]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda b: e.embed(b).vectors, batches))
    for a, b in zip(expected, got, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
