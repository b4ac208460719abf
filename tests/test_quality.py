"""Retrieval quality with the real ImageNet MobileNet on real photos (skipped without ../shared)."""

from __future__ import annotations

import re

import pytest

from lookalike import Index
from lookalike.indexer import IndexOptions
from tests.conftest import SHARED_PHOTOS, SHARED_SAVED_MODEL, needs_shared

UKBENCH = SHARED_PHOTOS / "ukbench-variants"
EDITS = ("_resize", "_gray", "_hflip", "_rotation")


@needs_shared(SHARED_SAVED_MODEL, UKBENCH)
def test_every_edited_variant_finds_its_base_image_at_rank_1(tmp_path):
    idx = Index(tmp_path / "ix")
    report = idx.add(
        [UKBENCH / "base_images"], model=str(SHARED_SAVED_MODEL), options=IndexOptions(workers=0)
    )
    assert report.indexed == 10 and report.errors == 0
    variants = sorted(p for p in UKBENCH.rglob("*.jpg") if any(e in p.stem for e in EDITS))
    assert {e for p in variants for e in EDITS if e in p.stem} == set(EDITS)
    results = idx.search(variants, k=3)
    for variant, result in zip(variants, results, strict=True):
        base = re.sub("|".join(EDITS), "", variant.stem)
        top = result.hits[0]
        assert top.path == str(UKBENCH / "base_images" / f"{base}.jpg"), (variant, result.hits)
        assert top.score > 0.75
        assert top.score - result.hits[1].score > 0.1, (variant, result.hits)  # a clear winner


@needs_shared(SHARED_SAVED_MODEL, UKBENCH)
def test_same_photo_in_other_formats_scores_near_one(tmp_path):
    idx = Index(tmp_path / "ix")
    idx.add([UKBENCH / "base_images"], model=str(SHARED_SAVED_MODEL), options=IndexOptions(workers=0))
    fmts = sorted((UKBENCH / "formats_images").iterdir())
    for result in idx.search(fmts, k=1):
        assert result.hits[0].path.endswith("ukbench09380.jpg")
        assert result.hits[0].score == pytest.approx(1.0, abs=0.02)
