"""Fitting: synthetic recovery with known truth, FaceFit persistence, pose convention."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from face3d.camera import Pose, matrix_to_euler, pose_matrix
from face3d.fitting import FaceFit, FitConfig, fit_morphable_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_fit_synthetic import random_face  # noqa: E402  (the benchmark's generator, reused)


def test_euler_round_trip_and_convention():
    for pose in [Pose(30, 0, 0), Pose(-50, 15, 5), Pose(10, -20, -8)]:
        back = matrix_to_euler(pose_matrix(pose))
        assert back.yaw == pytest.approx(pose.yaw, abs=1e-6)
        assert back.pitch == pytest.approx(pose.pitch, abs=1e-6)
        assert back.roll == pytest.approx(pose.roll, abs=1e-6)
    nose = np.array([0.0, 0.0, 1.0])
    assert (pose_matrix(Pose(30, 0, 0)) @ nose)[0] > 0.4      # yaw > 0: nose toward image right (+x)
    assert (pose_matrix(Pose(0, 20, 0)) @ nose)[1] > 0.3      # pitch > 0: nose up (+y)
    up = np.array([0.0, 1.0, 0.0])
    assert (pose_matrix(Pose(0, 0, 20)) @ up)[0] < -0.3       # roll > 0: counter-clockwise in the image


def test_synthetic_recovery(ict_model):
    # docs/benchmarks.md reports (bench_fit_synthetic.py, 50 faces) median pose errors <= 2 deg for yaw, pitch
    # and roll (measured 1.07, 1.64, 0.39) and a median landmark error <= 2% (1.00%). These six faces
    # are held to the claimed targets themselves, no looser; they measure 1.04, 1.09, 0.46 deg and
    # 0.9%, so the margin below the claim is about 0.9 deg and 1 point.
    rng = np.random.default_rng(123)
    errs, lmk = [], []
    for _ in range(6):
        face = random_face(ict_model, rng)
        fit = fit_morphable_model(None, face["landmarks"], ict_model, FitConfig(dense=False), image_size=(512, 512))
        p, g = fit.pose, face["pose"]
        errs.append([abs(p.yaw - g.yaw), abs(p.pitch - g.pitch), abs(p.roll - g.roll)])
        lmk.append(fit.landmark_error)
    assert np.all(np.median(errs, axis=0) <= 2.0), np.median(errs, axis=0)
    assert np.median(lmk) <= 0.02


# Real photos: docs/benchmarks.md reports a median 68-point error of 1.86% over the 17 photos (issue 2's target
# <= 3%); bench_real_photos.py measured this photo at 2.00% with the default (dense) fit and 2.01% with
# landmarks only. Held to 2.25%, the worst of the 17 photos in the benchmark.
REAL_PHOTO_MAX = 0.0225


def test_fit_on_real_photo_and_save_load(tmp_path, obama_reconstruction, ict_model):
    fit = obama_reconstruction.fit
    assert fit.landmark_error <= REAL_PHOTO_MAX
    assert abs(fit.pose.yaw) < 15  # an official, near-frontal portrait
    fit.save(tmp_path / "fit")
    back = FaceFit.load(tmp_path / "fit")
    assert np.allclose(back.identity, fit.identity) and np.allclose(back.rotation, fit.rotation)
    assert back.focal == pytest.approx(fit.focal) and back.residuals["landmark_error"] == fit.landmark_error
    assert torch.allclose(back.project(ict_model), fit.project(ict_model))


def test_fit_rejects_bad_landmarks(ict_model):
    from face3d.errors import FaceSynthError

    with pytest.raises(FaceSynthError):
        fit_morphable_model(None, np.full((68, 2), np.nan), ict_model, image_size=(100, 100))
    with pytest.raises(FaceSynthError):
        fit_morphable_model(None, np.zeros((68, 2)), ict_model, image_size=(100, 100))


def test_sfm_fit_on_real_photo(obama_image, obama_reconstruction, sfm_model):
    fit = fit_morphable_model(obama_image, obama_reconstruction.face.landmarks, sfm_model, FitConfig(dense=False))
    assert fit.residuals["landmark_points"] < 68  # the SFM maps 50 points + the dynamic jaw contour
    # docs/benchmarks.md: SFM median 2.34% over the 17 photos; bench_real_photos.py measured this photo at 2.47%.
    # Held to 2.75% (a margin of 0.28 points), not the 3% of issue 2's target for the ICT fit.
    assert fit.landmark_error <= 0.0275


@pytest.mark.slow
def test_dense_term_reduces_photometric_error(obama_image, obama_reconstruction, ict_model):
    fit = fit_morphable_model(obama_image, obama_reconstruction.face.landmarks, ict_model,
                              FitConfig(dense=True, dense_steps=20))
    r = fit.residuals
    assert r["dense_photometric_end"] < 0.8 * r["dense_photometric_start"]
    assert fit.landmark_error <= REAL_PHOTO_MAX  # the landmark term keeps the alignment
    assert fit.albedo is not None and np.isfinite(fit.albedo).all()


def test_dense_adam_matches_torch():
    from face3d.dense import Adam

    torch.manual_seed(0)
    target = torch.randn(5, 3)
    a = torch.randn(5, 3, requires_grad=True)
    b = a.detach().clone().requires_grad_(True)
    s1 = torch.randn(3, requires_grad=True)
    s2 = s1.detach().clone().requires_grad_(True)
    ours = Adam([{"params": [a], "lr": 0.05}, {"params": [s1], "lr": 0.3}])
    ref = torch.optim.Adam([{"params": [b], "lr": 0.05}, {"params": [s2], "lr": 0.3}])
    for _ in range(20):
        for x, s, opt in ((a, s1, ours), (b, s2, ref)):
            opt.zero_grad()
            (((x - target) ** 2).sum() + (s ** 4).sum()).backward()
            opt.step()
    assert torch.allclose(a, b, atol=1e-6) and torch.allclose(s1, s2, atol=1e-6)


def test_dense_fit_is_repeatable_with_threads(obama_image, obama_reconstruction, ict_model):
    """Two dense fits of one photo agree bit for bit with 2 threads (gradients summed in a fixed
    order, face3d.dense.ordered_gradient_sums), and the caller's deterministic setting is restored."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        fits = [fit_morphable_model(obama_image, obama_reconstruction.face.landmarks, ict_model,
                                    FitConfig(dense=True, dense_steps=15)) for _ in range(2)]
    finally:
        torch.set_num_threads(threads)
    for name in ("identity", "expression", "rotation", "translation", "sh", "albedo"):
        assert np.array_equal(getattr(fits[0], name), getattr(fits[1], name)), name
    assert not torch.are_deterministic_algorithms_enabled()


def test_batched_albedo_prior_is_the_written_out_pair_sums(ict_model):
    """The batched dense loss's albedo priors, one sparse quadratic form (`dense_mesh(model).albedo_prior`,
    `_QuadraticForm`), equal W_SYM * E_sym + W_SMOOTH * E_smooth written out over the mirror pairs
    and the edges, in value and gradient, per face."""
    import torch

    from face3d.dense import W_SMOOTH, W_SYM, _QuadraticForm, dense_mesh

    mesh = dense_mesh(ict_model)
    B = 3
    albedo = torch.rand(B, mesh.keep.numel(), 3, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    flat = albedo.transpose(0, 1).reshape(-1, B * 3)

    def pair_sum(i, j):
        return ((albedo[:, i] - albedo[:, j]) ** 2).sum(-1).mean(-1)

    written = W_SYM * pair_sum(mesh.skin, mesh.skin_mirror) + W_SMOOTH * pair_sum(mesh.edges[:, 0], mesh.edges[:, 1])
    form = _QuadraticForm.apply(flat, mesh.albedo_prior).view(B, 3).sum(-1)
    assert torch.allclose(form, written, rtol=1e-5)
    scale = torch.tensor([1.0, -2.0, 0.5])
    g_written, = torch.autograd.grad((written * scale).sum(), albedo)
    g_form, = torch.autograd.grad((form * scale).sum(), albedo)
    assert torch.allclose(g_form, g_written, atol=1e-6 * float(g_written.abs().max()))
