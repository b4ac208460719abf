"""Descriptors: the views each one cuts, their aggregation, and the manifest check."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageOps
from typer.testing import CliRunner

from lookalike.api import Index
from lookalike.cli import app
from lookalike.descriptors import DESCRIPTORS, get_descriptor
from lookalike.images import decode
from lookalike.models import load_model
from lookalike.storage import StoreError
from tests.conftest import make_photo

runner = CliRunner()
SIZE = (32, 32)


def _png(im: Image.Image, path):
    im.save(path)
    return path


def test_views_of_each_descriptor():
    wide = make_photo(1, (300, 150))
    assert decode(_bytes(wide), SIZE).pixels.shape == (32, 32, 3)  # squash: one view
    crop = get_descriptor("crop").cut(wide, SIZE)
    centre = np.asarray(
        wide.crop((75, 0, 225, 150)).resize((32, 32), Image.Resampling.BILINEAR, reducing_gap=2.0)
    )
    np.testing.assert_array_equal(crop, centre)  # the centred square, not a squashed frame
    padded = get_descriptor("pad").cut(wide, SIZE)
    assert padded.shape == (32, 32, 3) and padded[:7].max() == 0 and padded[-7:].max() == 0  # black bands
    assert padded[10:22].mean() > 20  # the photo in between, not stretched
    mirror = get_descriptor("mirror").cut(wide, SIZE)
    assert mirror.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(mirror[1], mirror[0][:, ::-1])
    regions = get_descriptor("regions").cut(wide, SIZE)
    assert regions.shape == (4, 32, 32, 3)
    # regions of 60% of the longer side from left to right: the first shows the left edge
    left = np.asarray(
        wide.crop((0, 0, 180, 150)).resize((32, 32), Image.Resampling.BILINEAR, reducing_gap=2.0)
    )
    np.testing.assert_array_equal(regions[1], left)
    tall = get_descriptor("regions").cut(make_photo(2, (150, 300)), SIZE)
    assert tall.shape == (4, 32, 32, 3) and not np.array_equal(tall[1], tall[3])
    with pytest.raises(ValueError, match="unknown descriptor 'rmac'; choose from squash, crop, pad"):
        get_descriptor("rmac")


def _bytes(im: Image.Image) -> bytes:
    import io

    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("name", list(DESCRIPTORS))
def test_each_descriptor_indexes_searches_and_is_recorded(tmp_path, photo_dir, tf2_model, name):
    idx = Index(tmp_path / "index")
    report = idx.add([photo_dir], model=str(tf2_model), descriptor=name)
    assert report.indexed == 8
    assert idx.manifest().descriptor == name and idx.info()["descriptor"] == name
    query = photo_dir / "photo0.jpg"
    (hit, *_) = Index(tmp_path / "index").search([query], k=2)[0].hits  # a fresh Index: from the manifest
    assert hit.path == str(query) and hit.score == pytest.approx(1.0, abs=1e-4)
    mirrored = _png(ImageOps.mirror(Image.open(query)), tmp_path / "mirrored.png")
    (hit, *_) = idx.search([mirrored], k=1)[0].hits
    if name == "mirror":  # invariant by construction (the tiny test model is not otherwise)
        assert hit.path == str(query) and hit.score == pytest.approx(1.0, abs=2e-3)


def test_aggregate_is_the_normalised_sum_of_view_vectors(tf2_model):
    model = load_model(str(tf2_model))
    im = make_photo(3, (200, 120))
    views = get_descriptor("regions").cut(im, model.info.input_size)
    from lookalike import descriptors

    got = descriptors.embed(model, get_descriptor("regions"), [views, views]).vectors
    each = model.embed(views).vectors
    want = each.sum(axis=0) / np.linalg.norm(each.sum(axis=0))
    np.testing.assert_allclose(got[0], want, atol=1e-5)
    np.testing.assert_allclose(got[1], want, atol=1e-5)


def test_decoder_workers_cut_the_same_views(tmp_path, photo_dir, tf2_model):
    a, b = Index(tmp_path / "a"), Index(tmp_path / "b")
    from lookalike.indexer import IndexOptions

    a.add([photo_dir], model=str(tf2_model), descriptor="regions", options=IndexOptions(workers=0))
    b.add([photo_dir], model=str(tf2_model), descriptor="regions", options=IndexOptions(workers=2))
    with a.store() as sa, b.store() as sb:
        ka, kb = sa.catalogue.known(), sb.catalogue.known()
        va = sa.catalogue.load_vectors(sorted(k.id for k in ka.values()))[1]
        vb = sb.catalogue.load_vectors(sorted(k.id for k in kb.values()))[1]
    np.testing.assert_allclose(va, vb, atol=1e-6)


def test_another_descriptor_on_an_existing_index_is_refused(tmp_path, photo_dir, tf2_model):
    index = tmp_path / "index"
    Index(index).add([photo_dir], model=str(tf2_model), descriptor="mirror")
    with pytest.raises(StoreError, match="built with descriptor 'mirror', not 'crop'"):
        Index(index).add([photo_dir], descriptor="crop")
    assert Index(index).add([photo_dir], descriptor="mirror").unchanged == 8  # same one: fine
    res = runner.invoke(app, ["index", str(photo_dir), "--index", str(index), "--descriptor", "squash", "-q"])
    assert res.exit_code == 1 and "built with descriptor 'mirror'" in res.stderr
    res = runner.invoke(app, ["index", str(photo_dir), "--index", str(tmp_path / "new"), "--descriptor", "x"])
    assert res.exit_code == 2 and "unknown descriptor 'x'" in res.stderr  # a usage error
    assert not (tmp_path / "new" / "manifest.json").exists()
    stats = json.loads(runner.invoke(app, ["info", "--json", "--index", str(index)]).stdout)
    assert stats["descriptor"] == "mirror"


def test_pad_shrinks_before_padding_a_panorama(monkeypatch):
    from lookalike import descriptors

    panorama = Image.new("RGB", (20_000, 40), "white")  # padded whole: a 20,000² canvas (1.2 GB)
    canvases = []
    real_new = Image.new

    def new(mode, size, *args):
        canvases.append(size)
        return real_new(mode, size, *args)

    monkeypatch.setattr(descriptors.Image, "new", new)
    view = get_descriptor("pad").cut(panorama, SIZE)
    assert canvases == [(32, 32)] and view.shape == (32, 32, 3)
    assert (view.min(axis=(1, 2)) > 200).sum() == 1 and view[0].max() < 10  # a 1-row band on black
