"""Synthetic recovery: fit random model faces from their projected landmarks and compare with the truth.

50 faces: identity within +-2 sigma, mild expression, yaw -60..60, pitch -20..20, roll -10..10.
Jaw landmarks are put on the true occluding contour (as dlib puts them on the visible outline).
Prints and writes the median pose errors and landmark errors (fraction of the outer-eye distance).

Targets (issue 2): median |yaw|, |pitch| and |roll| error <= 2 deg each, median landmark error <= 2% of
the outer-eye distance; the run exits 1 when one is missed (`--target NAME=VALUE` changes one).
"""
from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np
import torch

from _common import RESULTS, Targets, add_target_option
from face3d.camera import PerspectiveCamera, Pose, euler_to_matrix, transform
from face3d.fitting import FitConfig, fit_morphable_model, select_contour_vertices
from face3d.morphable_model import load_morphable_model


def random_face(model, rng, size=512):
    K = model.num_identity
    alpha = np.clip(rng.standard_normal(K), -2, 2).astype(np.float32)
    beta = np.zeros(model.num_expressions, np.float32)
    for j in rng.choice(model.num_expressions, size=4, replace=False):
        beta[j] = rng.uniform(0.0, 0.3)
    pose = Pose(rng.uniform(-60, 60), rng.uniform(-20, 20), rng.uniform(-10, 10))
    focal = rng.uniform(1500, 4000)
    dist = focal * 150.0 / (0.5 * size)  # a ~150 mm wide head fills about half of the frame
    R = euler_to_matrix(*(torch.tensor([math.radians(a)]) for a in pose.as_tuple()))
    t = torch.tensor([[rng.uniform(-15, 15), rng.uniform(-15, 15), -dist]], dtype=torch.float32)
    v = model.shape(torch.from_numpy(alpha)[None], torch.from_numpy(beta)[None])
    cam = PerspectiveCamera(torch.tensor([focal]), torch.tensor([[size / 2, size / 2]]))
    scr = cam.project(transform(v, R, t))[0].numpy()
    lm = model.landmark_vertices.copy()
    q = scr[np.maximum(lm, 0), :2].copy()
    # Jaw landmarks on the visible outline: the silhouette point nearest to the model's jaw vertex.
    corr = select_contour_vertices(model, lambda idx: scr[idx, :2], q)
    q[:17] = scr[corr[:17], :2]
    return {"alpha": alpha, "beta": beta, "pose": pose, "landmarks": q, "vertices": v[0].numpy(), "size": size}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--model", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=str(RESULTS / "fit_synthetic.json"))
    add_target_option(ap)
    args = ap.parse_args()
    targets = Targets.from_args(args)
    torch.set_num_threads(2)
    model = load_morphable_model(args.model)
    rng = np.random.default_rng(args.seed)
    rows = []
    for i in range(args.n):
        face = random_face(model, rng)
        t0 = time.perf_counter()
        fit = fit_morphable_model(None, face["landmarks"], model, FitConfig(dense=False),
                                  image_size=(face["size"], face["size"]))
        dt = time.perf_counter() - t0
        p, g = fit.pose, face["pose"]
        rows.append({"yaw_true": g.yaw, "pitch_true": g.pitch, "roll_true": g.roll,
                     "yaw_err": abs(p.yaw - g.yaw), "pitch_err": abs(p.pitch - g.pitch), "roll_err": abs(p.roll - g.roll),
                     "landmark_error": fit.landmark_error, "seconds": dt})
        print(f"{i:2d} yaw {g.yaw:6.1f} pitch {g.pitch:6.1f} roll {g.roll:6.1f} | err yaw {rows[-1]['yaw_err']:.2f} "
              f"pitch {rows[-1]['pitch_err']:.2f} roll {rows[-1]['roll_err']:.2f} lmk {fit.landmark_error:.4f}", flush=True)
    med = {k: float(np.median([r[k] for r in rows])) for k in ("yaw_err", "pitch_err", "roll_err", "landmark_error", "seconds")}
    p90 = {k: float(np.percentile([r[k] for r in rows], 90)) for k in ("yaw_err", "pitch_err", "roll_err", "landmark_error")}
    print("\nSynthetic recovery over", args.n, "faces (model:", model.name + ")")
    print(f"  median |yaw err| {med['yaw_err']:.2f} deg, |pitch err| {med['pitch_err']:.2f} deg, |roll err| {med['roll_err']:.2f} deg")
    print(f"  median landmark error {100 * med['landmark_error']:.2f}% of outer-eye distance")
    print(f"  90th percentile: yaw {p90['yaw_err']:.2f}, pitch {p90['pitch_err']:.2f}, roll {p90['roll_err']:.2f}, landmark {100 * p90['landmark_error']:.2f}%")
    for k in ("yaw", "pitch", "roll"):
        targets.check(f"median_{k}_error_deg", med[f"{k}_err"], "<=", 2.0, " deg")
    targets.check("median_landmark_error", med["landmark_error"], "<=", 0.02, note="(fraction of the outer-eye distance)")
    return targets.finish(args.json, {"model": model.name, "n": args.n, "median": med, "p90": p90, "rows": rows})


if __name__ == "__main__":
    sys.exit(main())
