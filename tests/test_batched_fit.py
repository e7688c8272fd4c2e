"""The batched landmark fit (`fit_morphable_models`, issue 27) against the one-face path.

Tolerance, per face, batched vs `fit_morphable_model` on that face alone (the same landmarks and
settings): identity and expression coefficients within 1e-5, rotation entries within 1e-6,
translation within 1e-4 mm, focal length within 1e-6 relative, the same number of LM steps, and
`landmark_error` within 1e-6 (absolute, as a fraction of the eye distance). Measured on the 17 test
photos and the synthetic faces below: the float32 parameters agree bit for bit on nearly every face
(the largest difference seen: 1.5e-8 on one identity coefficient) and the landmark errors within
1e-8 (the batched residual report projects only the vertices it reads). The float64 reductions
differ in order between the two paths (batched matrix products, a Cholesky instead of an LU solve),
so bit equality is not promised.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from face3d.contours import contour_candidate_vertices, select_contour_vertices, select_contour_vertices_batch
from face3d.errors import FaceSynthError
from face3d.fitting import (FitConfig, fit_morphable_model, fit_morphable_models, landmark_residuals,
                            landmark_residuals_batch)
from face3d.image_io import load_image
from face3d.landmarks import detect_faces

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_fit_synthetic import random_face  # noqa: E402  (the benchmark's generator, reused)

COEFF_TOL = 1e-5          # identity / expression coefficients
ROTATION_TOL = 1e-6       # entries of R
TRANSLATION_TOL = 1e-4    # mm
FOCAL_REL_TOL = 1e-6
LANDMARK_ERROR_TOL = 1e-6


@pytest.fixture(scope="module")
def photo_landmarks(face_photos):
    """(landmarks, (H, W), image) of the largest face of each test photo with a face."""
    out = []
    for p in face_photos:
        img = load_image(p)
        faces = detect_faces(img)
        if faces:
            out.append((faces[0].landmarks, img.shape[:2], img))
    assert len(out) >= 15
    return out


def assert_same_fit(one, batched, what: str) -> None:
    assert batched.image_size == one.image_size and batched.center == one.center, what
    np.testing.assert_allclose(batched.identity, one.identity, rtol=0, atol=COEFF_TOL, err_msg=what)
    np.testing.assert_allclose(batched.expression, one.expression, rtol=0, atol=COEFF_TOL, err_msg=what)
    np.testing.assert_allclose(batched.rotation, one.rotation, rtol=0, atol=ROTATION_TOL, err_msg=what)
    np.testing.assert_allclose(batched.translation, one.translation, rtol=0, atol=TRANSLATION_TOL, err_msg=what)
    assert abs(batched.focal - one.focal) <= FOCAL_REL_TOL * one.focal, what
    assert batched.residuals["landmark_iterations"] == one.residuals["landmark_iterations"], what
    assert abs(batched.landmark_error - one.landmark_error) <= LANDMARK_ERROR_TOL, what


def test_batched_landmark_fit_equals_one_face_on_real_photos(photo_landmarks, ict_model):
    cfg = FitConfig(dense=False)
    lms, sizes = [q for q, _, _ in photo_landmarks], [hw for _, hw, _ in photo_landmarks]
    batched = fit_morphable_models(None, lms, ict_model, cfg, sizes)
    assert len(batched) == len(lms)
    for i, (q, hw) in enumerate(zip(lms, sizes)):
        one = fit_morphable_model(None, q, ict_model, cfg, image_size=hw)
        assert_same_fit(one, batched[i], f"photo {i}")
        assert batched[i].residuals["batch_size"] == len(lms)
    # the fit is as good as the one-face path says it is (docs: median 1.86% on the 17 photos)
    assert np.median([f.landmark_error for f in batched]) <= 0.0195


def test_batched_landmark_fit_equals_one_face_on_synthetic_faces(ict_model):
    """Synthetic faces over yaw -60..60: faces that converge at different steps leave the batch
    at their own step (per-face convergence), and a batch of one is the one-face fit too."""
    rng = np.random.default_rng(7)
    faces = [random_face(ict_model, rng) for _ in range(8)]
    cfg = FitConfig(dense=False)
    lms = [f["landmarks"] for f in faces]
    batched = fit_morphable_models(None, lms, ict_model, cfg, [(512, 512)] * len(lms))
    for i, q in enumerate(lms):
        one = fit_morphable_model(None, q, ict_model, cfg, image_size=(512, 512))
        assert_same_fit(one, batched[i], f"synthetic face {i}")
        assert batched[i].residuals["profile_refit"] == one.residuals["profile_refit"]
    assert any(f.residuals["profile_refit"] for f in batched)     # a face beyond 30 degrees took the profile refit
    single = fit_morphable_models(None, lms[:1], ict_model, cfg, [(512, 512)])[0]
    assert_same_fit(batched[0], single, "batch of one")


def test_batched_fit_with_sfm_and_without_expression(photo_landmarks, sfm_model, ict_model):
    """Another model (no fixed jaw vertices: the contour lines) and the expression switched off."""
    lms, sizes = [q for q, _, _ in photo_landmarks[:4]], [hw for _, hw, _ in photo_landmarks[:4]]
    for model, cfg in ((sfm_model, FitConfig(dense=False)), (ict_model, FitConfig(dense=False, fit_expression=False))):
        batched = fit_morphable_models(None, lms, model, cfg, sizes)
        for i, (q, hw) in enumerate(zip(lms, sizes)):
            assert_same_fit(fit_morphable_model(None, q, model, cfg, image_size=hw), batched[i], f"{model.name} {i}")


# The dense stage (Adam over 25 steps) amplifies float rounding: Adam divides each gradient by its
# running RMS, so the sign of a near-zero gradient decides a full-size step. These tolerances hold
# the compact dense stage against the whole-mesh reference (other sums, in another order) and a
# batched fit against one face. The latter are now far closer: `face3d.dense._basis_product` keeps
# the shape basis sums of a face independent of its batch; batch of 17 test photos against each alone
# (one thread): identity 2.1e-6, expression 2.1e-7, rotation 1.5e-8, translation 3.8e-6 mm, SH 3e-7,
# albedo 5.2e-6. With a plain (B, K) x (K, 3V) product (batch of 18): identity 2.4e-3, expression
# 8e-5, rotation 8e-6, translation 1.5e-3 mm, focal 6e-6 relative, SH 2.1e-4, albedo 8.3e-3 (of 0..1).
DENSE_COEFF_TOL = 1e-2
DENSE_ROTATION_TOL = 1e-4
DENSE_TRANSLATION_TOL = 1e-2        # mm
DENSE_FOCAL_REL_TOL = 1e-4
DENSE_SH_TOL = 2e-3
DENSE_ALBEDO_TOL = 3e-2


def assert_close_dense_fit(one, other, what: str) -> None:
    np.testing.assert_allclose(other.identity, one.identity, rtol=0, atol=DENSE_COEFF_TOL, err_msg=what)
    np.testing.assert_allclose(other.expression, one.expression, rtol=0, atol=DENSE_COEFF_TOL, err_msg=what)
    np.testing.assert_allclose(other.rotation, one.rotation, rtol=0, atol=DENSE_ROTATION_TOL, err_msg=what)
    np.testing.assert_allclose(other.translation, one.translation, rtol=0, atol=DENSE_TRANSLATION_TOL, err_msg=what)
    assert abs(other.focal - one.focal) <= DENSE_FOCAL_REL_TOL * one.focal, what
    np.testing.assert_allclose(other.sh, one.sh, rtol=0, atol=DENSE_SH_TOL, err_msg=what)
    np.testing.assert_allclose(other.albedo, one.albedo, rtol=0, atol=DENSE_ALBEDO_TOL, err_msg=what)
    assert abs(other.residuals["dense_photometric_end"] - one.residuals["dense_photometric_end"]) < 1e-3, what


def test_batched_fit_with_dense_stage(photo_landmarks, ict_model):
    """With photos: the batched landmark stage, then the dense stage as one batch, against each
    face fitted alone."""
    picked = photo_landmarks[:3]
    cfg = FitConfig()
    batched = fit_morphable_models([im for _, _, im in picked], [q for q, _, _ in picked], ict_model, cfg)
    for i, (q, _, im) in enumerate(picked):
        one = fit_morphable_model(im, q, ict_model, cfg)
        assert batched[i].residuals["landmark_iterations"] == one.residuals["landmark_iterations"]
        assert_close_dense_fit(one, batched[i], f"dense photo {i}")


def test_fast_dense_stage_matches_reference(photo_landmarks, ict_model):
    """`refine_dense` (the compact mesh, a batch of one) against the plain whole-mesh reference."""
    from face3d.dense import refine_dense, refine_dense_reference
    q, _, im = photo_landmarks[1]
    start = fit_morphable_model(im, q, ict_model, FitConfig(dense=False))
    fast = refine_dense(start, im, ict_model, FitConfig())
    ref = refine_dense_reference(start, im, ict_model, FitConfig())
    assert_close_dense_fit(ref, fast, "compact vs reference")
    # the vertices the compact mesh leaves out keep their start albedo, as in the reference
    from face3d.dense import dense_mesh
    out = np.setdiff1d(np.arange(ict_model.num_vertices), dense_mesh(ict_model).keep.numpy())
    np.testing.assert_array_equal(fast.albedo[out], ref.albedo[out])


def test_landmark_residuals_batch_matches_one_fit(photo_landmarks, ict_model):
    fits = [fit_morphable_model(None, q, ict_model, FitConfig(dense=False), image_size=hw)
            for q, hw, _ in photo_landmarks[:3]]
    for fit, res in zip(fits, landmark_residuals_batch(fits, ict_model)):
        ref = landmark_residuals(fit, ict_model)
        assert res["landmark_points"] == ref["landmark_points"]
        for k in ("landmark_error", "landmark_error_inner", "landmark_error_jaw"):
            assert abs(res[k] - ref[k]) <= LANDMARK_ERROR_TOL


def test_batched_fit_arguments(photo_landmarks, ict_model):
    q, hw, _ = photo_landmarks[0]
    assert fit_morphable_models(None, [], ict_model) == []
    with pytest.raises(ValueError):
        fit_morphable_models(None, [q], ict_model, FitConfig(dense=False))       # no image, no size
    with pytest.raises(FaceSynthError):
        fit_morphable_models(None, [q, np.zeros((5, 2))], ict_model, FitConfig(dense=False), [hw, hw])


def test_contour_selection_batch_equals_per_face(photo_landmarks, ict_model, sfm_model):
    """The batched jaw-contour rule picks the vertices the one-face rule picks, on fitted faces and
    on the same faces jittered (other silhouettes)."""
    rng = np.random.default_rng(3)
    for model in (ict_model, sfm_model):
        allc = contour_candidate_vertices(model)
        screens, qs = [], []
        for q, hw, _ in photo_landmarks[:6]:
            fit = fit_morphable_model(None, q, model, FitConfig(dense=False, landmark_steps=5), image_size=hw)
            scr = fit.project(model)[0, :, :2].numpy()
            for jitter in (0.0, 2.0):
                screens.append(scr[allc] + rng.normal(0, jitter, (allc.size, 2)).astype(np.float32))
                qs.append(q)
        got = select_contour_vertices_batch(model, np.stack(screens), np.stack(qs))
        lookup = {v: i for i, v in enumerate(allc)}
        for i, (s, q) in enumerate(zip(screens, qs)):
            want = select_contour_vertices(model, lambda idx, s=s: s[[lookup[v] for v in idx]], q)
            np.testing.assert_array_equal(got[i], want)


def test_the_dense_basis_product_of_a_face_is_the_same_in_any_batch(ict_model):
    """The shape basis product of the batched dense stage gives each face the same bits, and the
    same coefficient gradient, whatever the batch around it and its place in it (a (B, K) x (K, 3V)
    matrix product does not: its rounding depends on B, which Adam's steps amplified into fits
    several 1e-5 apart)."""
    from face3d.dense import _basis_product, dense_mesh

    mesh = dense_mesh(ict_model)
    g = torch.Generator().manual_seed(0)
    coeffs = torch.randn(11, 60, generator=g)
    weights = torch.randn(11, mesh.identity_basis.shape[1], 3, generator=g)

    def product_and_gradient(rows):
        c = coeffs[rows].clone().requires_grad_(True)
        v = _basis_product(c, mesh.identity_basis)
        (v * weights[rows]).sum().backward()
        return v.detach(), c.grad

    full_v, full_g = product_and_gradient(slice(0, 11))
    for rows, at in ((slice(7, 8), 0), (slice(5, 8), 2), (slice(7, 10), 0), (slice(3, 11), 4), (slice(0, 1), 0)):
        v, grad = product_and_gradient(rows)
        face = rows.start + at
        assert torch.equal(v[at], full_v[face]) and torch.equal(grad[at], full_g[face]), (rows, at)
