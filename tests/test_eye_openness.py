"""A reference's eye opening put on another face: the lid solve (`match_eye_aspect`), the reference's
pose-corrected eye aspect ratio (`reference_eye_aspect`), and a closed-eye reference closing the
eyes of a face whose photo has them open (dlib's landmarks on the views)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from face3d.camera import Pose, pose_matrix
from face3d.expressions import (eye_aspect_ratios, eye_aspect_target, lid_openness_shapes, make_variant,
                                match_eye_aspect, model_eye_aspect, reference_eye_aspect)
from face3d.fitting import FitConfig
from face3d.image_io import load_image
from face3d.landmarks import detect_faces
from face3d.reference_face import fit_reference, reference_expression

#: labelled closed in benchmarks/data/lfw_closed_eye_labels.csv (dlib's EAR on the photo 0.051)
CLOSED_EYES = "Elijah_Wood/Elijah_Wood_0002.jpg"


def synthetic_face(model, seed: int):
    """A seeded identity (sigma units) and expression: mouth, brow and gaze weights, some lid weights."""
    rng = np.random.default_rng(seed)
    alpha = (0.8 * rng.standard_normal(60)).astype(np.float32)
    beta = np.zeros(model.num_expressions, np.float32)
    names = model.expression_names
    for n in ("jawOpen", "mouthSmile_L", "mouthSmile_R", "browInnerUp_L", "eyeSquint_R", "eyeLookDown_L",
              "eyeBlink_L", "eyeWide_R"):
        beta[names.index(n)] = rng.uniform(0.1, 0.6)
    return alpha, beta


def test_eye_aspect_ratio_of_a_drawn_eye():
    p = np.zeros((68, 2))
    # an eye 30 wide, lids 6 and 12 apart at the two pairs: (6 + 12) / (2 * 30) = 0.3
    p[36:42] = [(0, 0), (10, -3), (20, -6), (30, 0), (20, 6), (10, 3)]
    p[42:48] = p[36:42] * 2 + 100           # scale does not change it
    assert eye_aspect_ratios(p) == pytest.approx([0.3, 0.3])


def test_lid_shapes_are_the_right_eyes(ict_model, sfm_model):
    names = ict_model.expression_names
    shapes = lid_openness_shapes(ict_model)
    # the subject's right eye (iBUG 36-41, image left) is the ARKit "_R" shape's
    assert [(names[b], names[w]) for b, w in shapes] == [("eyeBlink_R", "eyeWide_R"), ("eyeBlink_L", "eyeWide_L")]
    assert lid_openness_shapes(sfm_model) == []


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_lid_solve_reaches_the_target(ict_model, seed):
    alpha, beta = synthetic_face(ict_model, seed)
    fitted = beta * 0.5                     # the re-split's own lids, which `closing_expression` measures from
    shapes = lid_openness_shapes(ict_model)
    lids = [i for pair in shapes for i in pair]
    reach = [model_eye_aspect(ict_model, alpha, _lids(beta, shapes, t), fitted) for t in (-1.0, 1.0)]
    assert (reach[0] > 0.33).all() and (reach[1] < 0.1).all()      # wide open ... closed
    for target in [(0.30, 0.22), (0.12, 0.35), (0.05, 0.08), (0.25, 0.25)]:
        out = match_eye_aspect(ict_model, beta, target, alpha, fitted)
        assert model_eye_aspect(ict_model, alpha, out, fitted) == pytest.approx(target, abs=1e-3)
        assert out.min() >= 0.0 and out.max() <= 1.0
        others = np.setdiff1d(np.arange(beta.size), lids)
        np.testing.assert_array_equal(out[others], beta[others])      # mouth, brows, squint, gaze kept
        for b, w in shapes:
            assert out[b] == 0.0 or out[w] == 0.0                        # never blink and widen at once
    # beyond what the lids reach: the end of their range
    out = match_eye_aspect(ict_model, beta, (0.0, 0.9), alpha, fitted)
    (rb, rw), (lb, lw) = shapes
    assert (out[rb], out[rw], out[lb], out[lw]) == (1.0, 0.0, 0.0, 1.0)


def _lids(beta, shapes, t):
    b = beta.copy()
    for blink, wide in shapes:
        b[blink], b[wide] = max(t, 0.0), max(-t, 0.0)
    return b


def test_scaled_target_keeps_the_faces_eye_shape(ict_model):
    alpha, _ = synthetic_face(ict_model, 0)
    own = model_eye_aspect(ict_model, alpha, np.zeros(ict_model.num_expressions, np.float32))
    np.testing.assert_allclose(eye_aspect_target((0.2, 0.3), ict_model, alpha, "absolute"), [0.2, 0.3])
    from face3d.expressions import EYE_ASPECT_POPULATION as usual
    np.testing.assert_allclose(eye_aspect_target((usual, usual / 2), ict_model, alpha, "scaled"),
                               [own[0], own[1] / 2], rtol=1e-6)


@pytest.mark.parametrize("pose", [Pose(0, 0, 0), Pose(30, 0, 0), Pose(-20, -25, 10), Pose(15, 20, -5)])
def test_reference_eye_aspect_takes_the_pose_out(ict_model, obama_reconstruction, pose):
    """A synthetic reference: a face with half-closed lids seen through the Obama fit's camera at
    `pose`, its 'photo' landmarks the projected landmark vertices. The pose-corrected ratio is the
    face's frontal one; the raw projected ratio is not, once the head turns."""
    alpha, beta = synthetic_face(ict_model, 3)
    fit = dataclasses.replace(obama_reconstruction.fit, identity=alpha, expression=beta,
                              rotation=pose_matrix(pose).astype(np.float32))
    with torch.no_grad():
        seen = fit.project(ict_model)[0, :, :2].numpy()[ict_model.landmark_vertices]
    fit = dataclasses.replace(fit, landmarks=seen.astype(np.float32))
    frontal = model_eye_aspect(ict_model, alpha, beta, beta)
    got = np.asarray(reference_eye_aspect(fit, ict_model))
    # the quotient is the foreshortening of the face's eyes with no expression; lids moved by an
    # expression sit elsewhere in depth, so it is not exact: it takes out half to two thirds of the
    # pose's change (worst measured: 0.326 for 0.340 at yaw 15, pitch 20, raw 0.313)
    assert got == pytest.approx(frontal, abs=0.015), (got, frontal, eye_aspect_ratios(seen))
    if abs(pose.yaw) >= 15 or abs(pose.pitch) >= 15:
        assert np.abs(eye_aspect_ratios(seen) - frontal).max() > 1.5 * np.abs(got - frontal).max()


@pytest.mark.slow
def test_a_closed_eye_reference_closes_the_eyes(lfw_images, obama_image, obama_reconstruction, ict_model):
    """Obama's eyes are open; Elijah Wood's, in this photo, are shut. Obama with his expression
    reads as closed to dlib (EAR as low as real closed eyes read), while his fitted view keeps them open."""
    import facesynth
    from facesynth.api import render_face, with_reference_expression
    from facesynth.methods import load_method

    closed = fit_reference(load_image(lfw_images / CLOSED_EYES), ict_model, CLOSED_EYES, FitConfig(dense=False))
    assert max(closed.eye_aspect) < 0.15, closed.eye_aspect
    spec = reference_expression(closed, ict_model)
    assert spec.eye_aspect == closed.eye_aspect
    variant = make_variant(spec, obama_reconstruction.fit, ict_model)
    names = ict_model.expression_names
    assert min(variant.coefficients[names.index(n)] for n in ("eyeBlink_L", "eyeBlink_R")) > 0.5
    # the mouth is the reference's, as before: only the lids are solved
    lids = [i for pair in lid_openness_shapes(ict_model) for i in pair]
    keep = np.setdiff1d(np.arange(ict_model.num_expressions), lids)
    np.testing.assert_allclose(variant.coefficients[keep], np.clip(closed.expression, 0, 1)[keep])

    rec = obama_reconstruction
    options = facesynth.RenderOptions(method="3d", size=256, dense=False)
    at, maker = [rec.fit.pose], load_method("3d")
    own = render_face(rec, obama_image, ict_model, at, options, maker)[0].images[0]
    moved = render_face(rec, obama_image, ict_model, at, with_reference_expression(options, closed, ict_model),
                        maker)[0]

    def ear(image):
        return float(eye_aspect_ratios(detect_faces(np.ascontiguousarray(image), upsample=1)[0].landmarks).mean())

    e_photo, e_own, e_moved = ear(obama_image), ear(own), ear(moved.images[0])
    assert e_photo > 0.2 and abs(e_own - e_photo) < 0.05, (e_photo, e_own)
    # as closed as real closed eyes read (median 0.125 over 46 LFW photos labelled closed,
    # results/blink_reference.json), and a large step from the open eyes (measured 0.198 -> 0.106)
    assert e_moved < 0.125 and e_moved < 0.6 * e_own, (e_own, e_moved)
    assert moved.record["expression_weights"]["eyeBlink_L"] > 0.5
