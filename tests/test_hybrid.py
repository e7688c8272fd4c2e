"""The shipped refiner on people it never saw (issue 4): finite, not grey, a correction of the render."""
from __future__ import annotations

import numpy as np
import pytest

from face3d.camera import Pose
from face3d.errors import NoFaceError
from face3d.fitting import FitConfig
from face3d.image_io import load_image
from face3d.pipeline import reconstruct_faces
from face3d.render import render_views
from ganrefine.hybrid import (SEEN_CONFIDENCE, Refiner, default_weights_path, load_hybrid_refiner, refine_images,
                              refine_views, seen_weights)
from ganrefine.pairs import split_lfw


@pytest.fixture(scope="module")
def refiner():
    assert default_weights_path().is_file(), "the trained refiner weights must ship in assets/refiner/"
    return load_hybrid_refiner()


@pytest.mark.slow
def test_refiner_on_heldout_photos_is_finite_and_not_grey(refiner, data_dir, ict_model):
    split = split_lfw(data_dir / "lfw" / "images", holdout=300)
    photos = split.heldout[150:156]  # held-out test identities: never trained on, never used for selection
    poses = [Pose(-60.0, 0.0, 0.0), Pose(0.0, 10.0, 0.0), Pose(45.0, 0.0, 0.0)]
    checked = 0
    for photo in photos:
        img = load_image(photo)
        try:
            rec = reconstruct_faces(img, ict_model, fit_config=FitConfig(dense=False))[0]
        except NoFaceError:  # a few LFW photos have no face dlib can find
            continue
        checked += 1
        views = render_views(rec.fit, rec.texture, poses, ict_model, size=128)
        out = refine_views(refiner, views)
        assert out.shape == views.images.shape and out.dtype == np.uint8
        for im, plain, mask in zip(out, views.images, views.masks):
            head = mask > 0.5
            face = im[head].astype(np.float64)
            assert np.isfinite(face).all()
            assert face.std() > 12, f"{photo.name}: refined head is nearly flat"
            assert np.abs(face - 127.5).mean() > 8 or face.std() > 25, f"{photo.name}: an all-grey output"
            # a correction of the render, not a different picture
            assert np.abs(face - plain[head].astype(np.float64)).mean() < 40
    assert checked >= 4


def test_background_off_the_head_is_kept(refiner, obama_reconstruction, ict_model):
    """Over the plain grey the refiner's blurred guess of the surroundings (a "window" around the
    head) is not kept: off the head the view is the grey itself, pixel for pixel."""
    rec = obama_reconstruction
    views = render_views(rec.fit, rec.texture, [Pose(30.0, 0.0, 0.0)], ict_model, size=128)
    out = refine_views(refiner, views)
    off = views.masks[0] == 0
    assert off.sum() > 1000 and np.array_equal(out[0][off], views.images[0][off])
    assert (views.images[0][off] == 128).all()                           # the plain grey background


def test_refine_images_other_sizes_keep_the_render_detail(refiner, obama_reconstruction, ict_model):
    """At 256 px the refiner runs at 128 px and its upsampled correction is added to the render."""
    rec = obama_reconstruction
    v128 = render_views(rec.fit, rec.texture, [Pose(20.0, 0.0, 0.0)], ict_model, size=128)
    v256 = render_views(rec.fit, rec.texture, [Pose(20.0, 0.0, 0.0)], ict_model, size=256)
    r128 = refine_views(refiner, v128)[0].astype(np.float64)
    r256 = refine_images(refiner, v256.images, v256.confidence, v256.masks, v256.landmarks)[0].astype(np.float64)
    assert r256.shape == (256, 256, 3)
    down = r256.reshape(128, 2, 128, 2, 3).mean(axis=(1, 3))
    head = v128.masks[0] > 0.5
    assert np.abs(down - r128)[head].mean() < 6  # the same correction at both sizes
    # high-frequency detail of the 256-px render survives (the correction is smooth, the render is not)
    hf = lambda x: np.abs(np.diff(x, axis=0)).mean()  # noqa: E731
    assert hf(r256) > 0.8 * hf(v256.images[0].astype(np.float64))


def test_teeth_of_an_opened_mouth_keep_the_render(refiner, obama_reconstruction, ict_model):
    """The refiner never learnt open mouths with default teeth: where the render shows the teeth,
    gums and tongue the hybrid view is the render itself, away from the mouth it is the refiner's."""
    from face3d.expressions import Variant, expression_coefficients, parse_expression
    from face3d.variants import render_variant
    from ganrefine.hybrid import extra_keep

    rec = obama_reconstruction
    spec = parse_expression("open-mouth")
    variant = Variant(spec, expression_coefficients(spec, ict_model, rec.fit.expression), None)
    views = render_variant(variant, rec, ict_model, [Pose(0.0), Pose(30.0)], 128)
    assert views.extra_masks is not None and (views.extra_masks.reshape(2, -1).sum(1) > 20).all()
    out = refine_views(refiner, views)
    teeth = views.extra_masks > 0.5
    assert (out[teeth] == views.images[teeth]).all()
    keep = extra_keep(views.extra_masks)[..., 0]
    unseen = seen_weights(views.confidence, views.masks)[..., 0] < 0.5
    head = (views.masks > 0.5) & (keep == 0) & unseen
    assert head.sum() > 100
    assert np.abs(out[head].astype(np.float64) - views.images[head]).mean() > 1.0   # refined there
    # views without an extra mesh record none, and refine as before
    plain = render_views(rec.fit, rec.texture, [Pose(0.0)], ict_model, size=128)
    assert plain.extra_masks is None


def test_over_a_photo_background_only_the_head_is_refined(refiner, obama_reconstruction, obama_image, ict_model):
    """Over the turned photo the refiner's blurred guess of hair and surroundings is not kept: off
    the head the view is the photo background itself, pixel for pixel."""
    from face3d.photo_view import photo_view_backgrounds

    rec = obama_reconstruction
    poses = [Pose(30, 0, 0)]
    bg = photo_view_backgrounds(rec.fit, obama_image, ict_model, poses, 128)
    views = render_views(rec.fit, rec.texture, poses, ict_model, size=128, background=bg)
    out = refine_views(refiner, views, bg)
    off = views.masks[0] == 0
    assert off.sum() > 1000 and np.array_equal(out[0][off], bg[0][off])
    assert not np.array_equal(out[0][~off], views.images[0][~off])      # the head itself is refined


def test_seen_weights_follow_the_confidence_inside_the_head():
    conf = np.zeros((1, 64, 64), np.float32)
    conf[:, :, 32:] = 0.9                       # right half seen frontally, left half inpainted
    conf[:, :, 30:32] = 0.325                   # halfway up the ramp
    mask = np.zeros((1, 64, 64), np.float32)
    mask[:, 8:56, 8:56] = 1
    w = seen_weights(conf, mask, feather=0)[0, ..., 0]
    assert w.dtype == np.float32 and w.shape == (64, 64)
    assert (w[:, :8] == 0).all() and (w[:8] == 0).all()              # off the head: the refined image
    assert (w[8:56, 32:56] == 1).all() and (w[8:56, 8:30] == 0).all()
    assert np.allclose(w[8:56, 30:32], (0.325 - SEEN_CONFIDENCE[0]) / (SEEN_CONFIDENCE[1] - SEEN_CONFIDENCE[0]))
    soft = seen_weights(conf, mask)[0, ..., 0]                       # feathered: no step at the edge
    assert 0 < soft[32, 56] < 1 and np.abs(np.diff(soft, axis=1)).max() < 0.6  # a hard edge steps by 1
    assert soft[32, 44] == pytest.approx(1, abs=1e-4) and soft[32, 16] == pytest.approx(0, abs=1e-4)


def test_the_seen_render_is_kept_and_the_unseen_side_refined(refiner, obama_reconstruction, ict_model):
    """Where the photo saw the head the hybrid view is the render; where it did not (the far side of
    a turned head, mirrored or inpainted) it is the refiner's output; without `keep_seen` the refiner's
    output covers the whole head, as before."""
    rec = obama_reconstruction
    views = render_views(rec.fit, rec.texture, [Pose(45.0, 0.0, 0.0)], ict_model, size=128)
    out = refine_views(refiner, views)[0].astype(np.float64)
    whole = refine_views(Refiner(refiner.generator, refiner.path, refiner.sha256, refiner.size, keep_seen=None),
                         views)[0].astype(np.float64)
    w = seen_weights(views.confidence, views.masks)[0, ..., 0]
    render = views.images[0].astype(np.float64)
    seen, unseen = w > 0.999, (w < 1e-3) & (views.masks[0] > 0.5)
    assert seen.sum() > 500 and unseen.sum() > 200
    assert np.abs(out[seen] - render[seen]).max() <= 1                   # the render, up to rounding
    assert np.abs(out[unseen] - whole[unseen]).max() <= 1                # the refiner's output
    assert np.abs(whole[seen] - render[seen]).mean() > 1.0               # which the kept render replaced
