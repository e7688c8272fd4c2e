"""Shape from Shading (face3d.sfs): synthetic relief, mesh sanity, graceful failure, CLI flag."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.fixture(scope="module")
def sfs_result(obama_image, obama_reconstruction, ict_model):
    from face3d.sfs import refine_shape_from_shading

    return refine_shape_from_shading(obama_reconstruction.fit, obama_image, ict_model)


def test_refined_mesh_is_finite_and_local(sfs_result, obama_reconstruction, ict_model):
    res = sfs_result
    assert res.warning is None, res.warning
    d = res.displacement
    assert np.all(np.isfinite(d)) and np.all(np.isfinite(res.vertices(obama_reconstruction.fit, ict_model).numpy()))
    assert 0.05 < np.abs(d).max() <= 6.0                      # it did something, nothing huge
    assert np.all(d[~res.region] == 0)                         # zero outside the solved face region
    assert np.all(d[~ict_model.skin] == 0)
    # continuous at the border: the ring next to the fixed vertices barely moves
    from face3d.sfs import _topology

    adj, _ = _topology(ict_model)
    border = res.region & ((adj @ (~res.region).astype(float)) > 0)
    assert np.abs(d[border]).max() < 0.25 * np.abs(d).max() + 0.05
    # neighbouring vertices never jump apart (no cracks / spikes)
    i, j = adj.nonzero()
    assert np.abs(d[i] - d[j]).max() < 1.5


@pytest.mark.parametrize("value,word", [(255, "saturated"), (2, "dark")])
def test_saturated_or_dark_face_falls_back(obama_image, obama_reconstruction, ict_model, value, word):
    from face3d.sfs import refine_shape_from_shading

    fit = obama_reconstruction.fit
    bad = obama_image.copy()
    lo, hi = fit.landmarks.min(0).astype(int), fit.landmarks.max(0).astype(int)
    pad = (hi - lo) // 3
    bad[max(lo[1] - pad[1], 0):hi[1] + pad[1], max(lo[0] - pad[0], 0):hi[0] + pad[0]] = value
    res = refine_shape_from_shading(fit, bad, ict_model)
    assert res.warning and word in res.warning
    assert not res.applied and np.all(res.displacement == 0)
    assert torch.equal(res.vertices(fit, ict_model), fit.vertices(ict_model))


@pytest.mark.xfail(strict=True, reason="issue 3 target not reached: on synthetic relief SFS does not lower the depth "
                   "error of the oracle 3DMM, neither the plain RMSE nor the one off the occluding contours "
                   "(benchmarks/bench_sfs.py, results/sfs.json); bench_sfs_diagnosis.py: the SH light estimated "
                   "from the fit is 52 deg off in direction, and even given the true light and albedo the relief "
                   "explains 5% of the per-vertex data cost (97% of it sits at the lid and lip margins), so the "
                   "recovered displacement correlates 0.41 with the relief; on the landmark fit, SFS given the true "
                   "light and albedo lowers the depth error off the contours by only 3%, and refitting the whole "
                   "model span to the pixels (part 5) by 5.6%; bench_sfs_ambiguity.py: that refit with the margins left "
                   "out reaches -15.8% given the true light and albedo, and makes the error worse (+64%) with the "
                   "light and albedo estimated from the photo; bench_albedo.py: with the learnt albedo model the light "
                   "is still ~20 deg off (median) and SFS changes the depth off the contours by -0.3%, while SFS given "
                   "the true light and albedo reaches only -3.1%")
def test_synthetic_relief_depth_error_drops(ict_model, obama_reconstruction):
    from bench_sfs import evaluate_synthetic, synthetic_albedo

    albedo = synthetic_albedo(obama_reconstruction.texture.image)
    rng = np.random.default_rng(7)
    r = evaluate_synthetic(ict_model, albedo, rng, fit_cfg=None, oracle=True)
    assert np.isfinite(r["oracle_depth_rmse_sfs"]) and np.isfinite(r["oracle_depthc_rmse_sfs"])
    # a clear share of the relief's depth error recovered (looser than the 30%), both with and
    # without the pixels at occluding contours
    assert r["oracle_depth_rmse_sfs"] < 0.85 * r["oracle_depth_rmse_fit"]
    assert r["oracle_depthc_rmse_sfs"] < 0.85 * r["oracle_depthc_rmse_fit"]


@pytest.mark.slow
def test_cli_sfs_flag_in_manifest(tmp_path, obama_path):
    from facesynth.cli import main

    out = tmp_path / "o"
    assert main(["rotate", str(obama_path), "--yaw", "30", "--out", str(out), "--no-dense", "--sfs",
                 "--relight", "frontal"]) == 0
    (row,) = [json.loads(l) for l in (out / "manifest.jsonl").read_text().splitlines()]
    assert row["sfs"] is True and row["relight"] == "frontal" and "sfs_warning" not in row
    out2 = tmp_path / "p"
    assert main(["rotate", str(obama_path), "--yaw", "30", "--out", str(out2), "--no-dense"]) == 0
    (row2,) = [json.loads(l) for l in (out2 / "manifest.jsonl").read_text().splitlines()]
    assert row2["sfs"] is False
