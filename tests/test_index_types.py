"""Index types: automatic choice, rebuild when outgrown, exact re-scoring, filters, verify."""

from __future__ import annotations

import os

import faiss
import numpy as np
import pytest

from lookalike import units
from lookalike.images import DecodedImage, ImageFile
from lookalike.models.runtimes import ModelInfo
from lookalike.storage import StoreError
from lookalike.storage import lookup as lookup_mod
from lookalike.storage import vectors as vectors_mod
from lookalike.storage.manifest import IndexSettings
from lookalike.storage.vectors import (
    FLAT_MAX_FLOATS,
    IndexSpec,
    VectorIndex,
    choose_spec,
    nlist_for,
    outgrown,
    two_level_centroids,
)

DIM = 32
N = 3000


def _info() -> ModelInfo:
    return ModelInfo("test-model", "model-a", (32, 32), DIM, (0.0, 1.0), False, "tf")


def _files(n: int, start: int = 0, folder: str = "p") -> list[ImageFile]:
    img = DecodedImage(np.zeros((32, 32, 3), np.uint8), 32, 32, "JPEG")
    return [
        ImageFile(f"/{folder}/{i:05d}.jpg", 10, 1, f"h{folder}{i}", image=img)
        for i in range(start, start + n)
    ]


def _clustered(n: int, seed: int = 0) -> np.ndarray:
    """Unit vectors around 50 centres: structure an inverted file can exploit."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(50, DIM))
    v = centres[rng.integers(0, 50, n)] + 0.35 * rng.normal(size=(n, DIM))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def filled(tmp_path, backend):
    vecs = _clustered(N)
    with backend(tmp_path, model=_info(), writable=True) as s:
        s.add(_files(N // 2), vecs[: N // 2])
        s.add(_files(N // 2, N // 2, folder="q"), vecs[N // 2 :])
    return tmp_path, vecs, backend


def test_choice_follows_size_and_memory_budget():
    dim = 1024
    assert choose_spec(50_000, dim).kind == "flat"
    big = choose_spec(1_000_000, dim)
    assert big.kind == "ivf-sq8" and big.nlist == 4096
    assert FLAT_MAX_FLOATS // dim < 1_000_000
    # a budget too small for the flat vectors moves even a small collection to IVF
    assert choose_spec(50_000, dim, max_memory=100 * 2**20).kind == "ivf-sq8"
    # too small for SQ8: product quantisation with the largest code that fits
    pq = choose_spec(1_000_000, dim, max_memory=256 * 2**20)
    assert pq.kind == "ivf-pq" and pq.memory(1_000_000, dim) <= 256 * 2**20 and dim % pq.pq_m == 0
    assert pq.pq_m > choose_spec(1_000_000, dim, max_memory=128 * 2**20).pq_m
    assert choose_spec(1_000_000, dim, kind="flat").kind == "flat"  # forced
    with pytest.raises(ValueError, match="unknown index type"):
        choose_spec(10, dim, kind="hnsw")
    tiny = choose_spec(1_000_000, dim, max_memory=2**20)  # cannot fit: the smallest code
    assert tiny.kind == "ivf-pq" and tiny.pq_m == 4
    assert nlist_for(1_000_000) == 4096 and nlist_for(3000) == 32  # enough vectors per list


def test_many_lists_are_found_through_an_hnsw_graph():
    """From HNSW_NLIST lists (a million vectors) the coarse quantizer is an HNSW graph, as
    FAISS advises for 1M-100M vectors; smaller indexes keep scanning their centroids."""
    dim = 768
    assert choose_spec(500_000, dim) == IndexSpec("ivf-sq8", 2048)
    assert choose_spec(1_000_000, dim) == IndexSpec("ivf-sq8", 4096, hnsw=32)
    big = choose_spec(10_000_000, dim)
    assert big.factory == "IVF16384_HNSW32,SQ8"
    # the graph is in the memory estimate (measured: 272 bytes a node beside its centroid)
    assert big.quantizer_bytes(dim) == 16384 * (768 * 4 + 272)
    assert big.memory(10_000_000, dim) == 10_000_000 * (768 + vectors_mod.IVF_ID_BYTES) + 16384 * 3344
    pq = choose_spec(10_000_000, dim, max_memory=2 * 2**30)
    assert pq.factory == "IVF16384_HNSW32,PQ96" and pq.memory(10_000_000, dim) <= 2 * 2**30
    assert choose_spec(1_000_000, dim, kind="ivf-flat").hnsw == 32
    # an index saved with a flat quantizer is not rebuilt only to get the graph
    assert outgrown(IndexSpec("ivf-sq8", 4096), 1_000_000, dim, None, "auto") is None
    assert outgrown(IndexSpec("ivf-sq8", 16384), 10_000_000, dim, None, "auto") is None
    assert outgrown(IndexSpec("ivf-sq8", 1024), 10_000_000, dim, None, "auto") == big


def test_two_level_centroids_are_as_many_as_lists_and_unit_length():
    vecs = _clustered(N)
    for nlist in (32, 100, N):
        centroids = two_level_centroids(vecs, nlist)
        assert centroids.shape == (nlist, DIM)
        np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("kind", ["ivf-flat", "ivf-sq8", "ivf-pq"])
def test_forced_type_is_trained_searched_rescored_and_verified(filled, kind):
    directory, vecs, backend = filled
    with backend(directory, writable=True) as s:
        s.set_index_settings(type=kind)
        spec = s.rebuild_index()
        assert spec.kind == kind and s.vectors.kind == kind
    with backend(directory) as s:  # the checkpoint on disk is of the new type
        assert s.vectors.kind == kind and s.vectors.ntotal == N
        assert s.stats()["index_type"] == str(spec)
        assert s.verify().ok
        ids = np.array(sorted(s.catalogue.known().values(), key=lambda k: k.id), dtype=object)
        id_of = np.array([k.id for k in ids])
        queries = vecs[:50]
        scores, found = s.search(queries, 10)
        exact = queries @ vecs.T
        truth = np.argsort(-exact, axis=1)[:, :10]
        recall = np.mean([len(set(found[q]) & set(id_of[truth[q]])) / 10 for q in range(50)])
        assert recall >= 0.9
        # scores are exact cosines from the raw vectors, not quantised approximations
        for q in range(50):
            for sc, i in zip(scores[q], found[q], strict=True):
                assert sc == pytest.approx(float(exact[q, np.searchsorted(id_of, i)]), abs=1e-5)
        assert found[0][0] == id_of[0] and scores[0][0] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("kind", ["ivf-sq8", "ivf-pq"])
def test_hnsw_quantizer_is_built_saved_loaded_and_searched(filled, monkeypatch, kind):
    monkeypatch.setattr(vectors_mod, "HNSW_NLIST", 16)  # 3,000 vectors: 32 lists
    directory, vecs, backend = filled
    with backend(directory, writable=True) as s:
        s.set_index_settings(type=kind)
        spec = s.rebuild_index()
        assert spec.hnsw == 32 and s.vectors.spec == spec and "_HNSW32," in str(spec)
    monkeypatch.setattr(vectors_mod, "HNSW_NLIST", 4096)  # a reader, a release later: kept as saved
    with backend(directory) as s:
        assert s.vectors.spec == spec and s.vectors.ntotal == N
        assert s.verify().ok
        ids = np.array([k.id for k in sorted(s.catalogue.known().values(), key=lambda k: k.id)])
        queries = vecs[:50]
        truth = np.argsort(-(queries @ vecs.T), axis=1)[:, :10]
        _, found = s.search(queries, 10)
        recall = np.mean([len(set(found[q]) & set(ids[truth[q]])) / 10 for q in range(50)])
        assert recall >= 0.9
        assert s.vectors.remove(ids[:5]) == 5 and s.vectors.ntotal == N - 5


def test_filters_inside_approximate_index(filled):
    directory, vecs, backend = filled
    with backend(directory, writable=True) as s:
        s.set_index_settings(type="ivf-sq8")
        s.rebuild_index()
        allowed = s.catalogue.ids_matching(under=["/q"])
        assert len(allowed) == N // 2
        # a query equal to a /p vector: its best allowed match is found among /q only
        scores, found = s.search(vecs[:5], 5, allowed)
        assert set(found.ravel()) <= set(allowed.tolist())
        exact_best = (vecs[:5] @ vecs[N // 2 :].T).max(axis=1)
        np.testing.assert_allclose(scores[:, 0], exact_best, atol=1e-5)
        # a small subset is scored exactly, even from lists the probe would not visit
        few = allowed[:7]
        scores, found = s.search(vecs[:3], 10, few)
        assert set(found[found >= 0].ravel()) <= set(few.tolist()) and (found[0] >= 0).sum() == 7


def test_collection_outgrowing_flat_is_rebuilt_on_checkpoint(tmp_path, backend, monkeypatch):
    monkeypatch.setattr(vectors_mod, "FLAT_MAX_FLOATS", 1000 * DIM)
    vecs = _clustered(N)
    with backend(tmp_path, model=_info(), writable=True) as s:
        s.add(_files(800), vecs[:800])
    with backend(tmp_path) as s:
        assert s.vectors.kind == "flat"
    with backend(tmp_path, writable=True) as s:
        s.add(_files(N - 800, 800), vecs[800:])
    with backend(tmp_path) as s:
        assert s.vectors.kind == "ivf-sq8" and s.vectors.ntotal == N and s.verify().ok
    # shrinking a little keeps the approximate index (hysteresis); far below goes back to flat
    paths = [f.path for f in _files(N)]
    with backend(tmp_path, writable=True) as s:
        s.remove_paths(paths[: N - 900])
    with backend(tmp_path) as s:
        assert s.vectors.kind == "ivf-sq8" and s.vectors.ntotal == 900
    with backend(tmp_path, writable=True) as s:
        s.remove_paths(paths[: N - 400])
    with backend(tmp_path) as s:
        assert s.vectors.kind == "flat" and s.vectors.ntotal == 400 and s.verify().ok


def test_memory_budget_and_settings_persist(filled):
    directory, _, backend = filled
    with backend(directory, writable=True) as s:
        s.set_index_settings(max_memory=N * 110)  # below flat (32*4+56) and SQ8 (32+96) per vector
        assert s.maintain_index()
        assert s.vectors.kind == "ivf-pq"
        assert s.vectors.spec.memory(N, DIM) <= N * 110
    with backend(directory) as s:
        assert s.index_settings.max_memory == N * 110 and s.vectors.kind == "ivf-pq"
    with backend(directory, writable=True) as s:
        with pytest.raises(ValueError, match="unknown index type"):
            s.set_index_settings(type="annoy")
        with pytest.raises(StoreError, match="raise --max-memory") as refused:
            s.set_index_settings(max_memory=N)
        least = units.memory(choose_spec(N, DIM, N).memory(N, DIM), at_least=True)
        assert f"need at least {least} even as" in str(refused.value)
        assert "need at least 0" not in str(refused.value)
        assert s.index_settings.max_memory == N * 110  # a refused change changes nothing


def test_new_machine_without_checkpoint_builds_the_chosen_type(filled):
    directory, _, backend = filled
    with backend(directory, writable=True) as s:
        s.set_index_settings(type="ivf-flat")
        s.rebuild_index()
    for checkpoint in directory.glob("vectors-*.faiss"):
        checkpoint.unlink()
    with backend(directory) as s:
        assert s.vectors.kind == "ivf-flat" and s.vectors.ntotal == N


def test_a_reindex_killed_after_recording_its_settings_is_finished_by_the_next_writer(filled):
    """Settings recorded, then the rebuild killed: the old type stayed on disk, and neither
    an `index` run with nothing new nor `verify` saw it (results exact, but the memory
    budget chosen did not apply). The next writer's checkpoint builds what they ask."""
    directory, _, backend = filled
    child = os.fork()
    if child == 0:  # `reindex`, killed once it recorded its settings
        try:
            backend(directory, writable=True).set_index_settings(type="ivf-flat")
        finally:
            os._exit(0)  # no close, no checkpoint: as SIGKILL leaves it
    assert os.waitpid(child, 0)[1] == 0
    with backend(directory) as s:
        assert s.vectors.kind == "flat"
    with backend(directory, writable=True):  # a writer with nothing to change (`index` again)
        pass
    with backend(directory) as s:
        assert s.vectors.kind == "ivf-flat" and s.vectors.ntotal == N


def test_too_few_vectors_for_a_forced_type_is_a_clear_error(tmp_path, backend):
    with backend(tmp_path, model=_info(), writable=True) as s:
        s.add(_files(20), _clustered(20))
        s.set_index_settings(type="ivf-pq")
        with pytest.raises(StoreError, match="cannot build index type ivf-pq over 20 vectors"):
            s.rebuild_index()
        assert s.vectors.ntotal == 20  # the old index is untouched


def test_spec_sizes():
    assert IndexSpec().factory == "Flat"
    assert IndexSpec("ivf-pq", 256, 16).factory == "IVF256,PQ16"
    assert IndexSpec("ivf-pq", 4096, 16, 32).factory == "IVF4096_HNSW32,PQ16"
    assert IndexSpec("ivf-sq8", 256).quantizer_bytes(64) == 256 * 64 * 4
    assert IndexSpec("ivf-sq8", 256).bytes_per_vector(64) == 64 + vectors_mod.IVF_ID_BYTES


def test_nprobe_setting_survives_reopening(filled, monkeypatch):
    directory, vecs, backend = filled
    with backend(directory, writable=True) as s:
        s.set_index_settings(type="ivf-flat", nprobe=3)
        s.rebuild_index()
    monkeypatch.setattr(lookup_mod, "EXACT_SUBSET", 0)  # filters go through FAISS, not exact scoring
    calls = []
    real = vectors_mod.faiss.SearchParametersIVF
    monkeypatch.setattr(
        vectors_mod.faiss, "SearchParametersIVF", lambda **kw: calls.append(kw["nprobe"]) or real(**kw)
    )
    with backend(directory) as s:
        assert s.vectors.nprobe == 3
        s.search(vecs[:1], 5)
        s.search(vecs[:1], 5, allowed=np.arange(1, N // 2 + 1))  # half allowed: twice the lists
        assert calls == [3, 6] and s.vectors.nprobe == 3  # the boost does not stick


def test_a_reader_whose_cache_was_outgrown_builds_the_right_type(filled):
    directory, vecs, backend = filled
    with backend(directory, sync=False) as s:  # its checkpoint is flat; the catalogue wants IVF now
        s.manifest.vector_index = IndexSettings(type="ivf-sq8")
        s.vectors.generation = -1  # behind the catalogue
        s.sync_vectors()
        assert s.vectors.kind == "ivf-sq8" and s.vectors.ntotal == N
        _, found = s.search(vecs[:1], 1)
        assert found[0][0] == 1


@pytest.mark.parametrize("kind", ["ivf-sq8", "ivf-pq"])
def test_fill_sizes_lists_first_and_stores_what_adding_would(kind):
    """VectorIndex.fill (lists sized by a first pass, then add_core with those lists) gives
    the same index, byte for byte, as adding chunk by chunk; a vector gone in the second
    pass is left out, one appearing only then is still assigned and added."""
    vecs = _clustered(N)
    ids = np.arange(N, dtype=np.int64) * 7 + 3
    spec = IndexSpec(kind, 32, 8 if kind == "ivf-pq" else 0)

    def load(want, skip=()):
        for start in range(0, len(want), 500):
            chunk = np.asarray(want[start : start + 500])
            keep = ~np.isin(chunk, skip)
            yield chunk[keep], vecs[(chunk[keep] - 3) // 7]

    def built():
        return VectorIndex.build(DIM, spec, vecs[:2000])

    plain, two_pass = built(), built()
    for chunk_ids, chunk in load(ids):
        plain.add(chunk_ids, chunk)
    two_pass.fill(ids, load)
    assert faiss.serialize_index(two_pass.index).tobytes() == faiss.serialize_index(plain.index).tobytes()

    passes = iter([(ids[5],), (ids[9],)])  # first pass misses ids[5], the second ids[9]
    partial = built()
    partial.fill(ids, lambda want: load(want, next(passes)))
    assert partial.ntotal == N - 1 and set(partial.ids().tolist()) == set(ids.tolist()) - {int(ids[9])}
    np.testing.assert_array_equal(partial.reconstruct(ids[5]), plain.reconstruct(ids[5]))  # same list
