"""Rotate-and-Render training pairs for the refiner (issue 4 groundwork): content, split, cache/resume."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from face3d.fitting import FitConfig
from face3d.image_io import load_image
from face3d.pipeline import reconstruct_faces
from face3d.render import render_views
from ganrefine.pairs import TrainingPair, generate_pairs, make_rotate_and_render_pair, split_identities


@pytest.fixture(scope="module")
def lfw(data_dir) -> Path:
    return data_dir / "lfw" / "images"


def test_pair_carries_novel_view_artifacts_and_an_aligned_target(lfw, ict_model):
    photo = lfw / "Al_Gore" / "Al_Gore_0001.jpg"
    image = load_image(photo)
    rec = reconstruct_faces(image, ict_model, fit_config=FitConfig(dense=False))[0]
    pair = make_rotate_and_render_pair(rec, image, ict_model, yaw_offset=45.0, size=128)
    assert pair.render.shape == pair.target.shape == (128, 128, 3)
    assert pair.render.dtype == pair.target.dtype == np.uint8
    assert pair.confidence.shape == pair.mask.shape == (128, 128)
    assert 0 <= pair.confidence.min() and pair.confidence.max() <= 1
    direct = render_views(rec.fit, rec.texture, [rec.fit.pose], ict_model, size=128)
    head = (pair.mask > 0.99) & (direct.masks[0] > 0.99)
    assert head.mean() > 0.2

    def l1(a):
        return np.abs(a.astype(np.float64) - pair.target.astype(np.float64))[head].mean()

    # the target is the photo in the same crop: the direct render matches it closely; the
    # rotate-and-render input is further from it (the novel view did not see part of the face)
    assert l1(direct.images[0]) < 0.06 * 255
    assert l1(pair.render) > l1(direct.images[0])
    assert pair.confidence[head].mean() < direct.confidence[0][head].mean()


def test_identity_split_is_fixed_disjoint_and_order_free():
    names = [f"person_{i:04d}" for i in range(1000)]
    train, held = split_identities(names, holdout=300, seed=0)
    assert len(held) == 300 and len(train) == 700 and not set(train) & set(held)
    assert split_identities(list(reversed(names)), holdout=300, seed=0) == (train, held)
    assert split_identities(names, holdout=300, seed=1)[1] != held


def test_generate_pairs_caches_and_resumes(tmp_path, lfw, ict_model):
    photos = [lfw / "Al_Gore" / "Al_Gore_0001.jpg", lfw / "AJ_Cook" / "AJ_Cook_0001.jpg"]
    noface = tmp_path / "in" / "Nobody" / "Nobody_0001.png"
    noface.parent.mkdir(parents=True)
    Image.fromarray(np.full((250, 250, 3), 90, np.uint8)).save(noface)
    cache = tmp_path / "cache"
    first = generate_pairs(photos + [noface], cache, ict_model, size=64, progress=False)
    assert first["made"] == 2 and first["failed"] == 1 and "no face" in first["errors"][0]
    saved = cache / "Al_Gore" / "Al_Gore_0001.npz"
    pair = TrainingPair.load(saved)
    assert pair.render.shape == (64, 64, 3) and offset_in_range(pair.yaw_offset)
    again = generate_pairs(photos + [noface], cache, ict_model, size=64, progress=False)
    assert again["made"] == 0 and again["already_done"] == 3
    # the random offset is seeded per photo: a fresh cache makes the same pair
    shutil.rmtree(cache)
    generate_pairs(photos[:1], cache, ict_model, size=64, progress=False)
    assert TrainingPair.load(saved).yaw_offset == pair.yaw_offset
    assert np.array_equal(TrainingPair.load(saved).render, pair.render)


def offset_in_range(offset: float) -> bool:
    from ganrefine.pairs import MAX_YAW_OFFSET, MIN_YAW_OFFSET

    return MIN_YAW_OFFSET <= abs(offset) <= MAX_YAW_OFFSET
