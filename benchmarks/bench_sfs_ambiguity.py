"""Whether shading can reach issue 3's synthetic targets when the albedo is not known.

bench_sfs_diagnosis part 5 refitted the whole model span (100 identity modes, 53 expressions,
pose) to the pixels given the true light and albedo and found little (-5.6% depth off the
contours). Two things held it back: the lid and lip margins, where a per-vertex image model cannot
match per-pixel shading and which hold most of the data cost, and 150 steps. Here the same refit
(`bench_sfs_diagnosis.photometric_refit`) leaves out the vertices within 6 mm of the lid and lip
landmarks and runs 600 steps at twice the step size, from the 3DMM fitted to the true landmarks
(issue 3's case, as bench_sfs), on bench_sfs's synthetic faces (same seed). It is given, in turn:

  oracle          the true SH light and the true per-vertex albedo
  oracle_light    the true light, and the smooth albedo `refine_shape_from_shading` estimates
  oracle_albedo   the light `refine_shape_from_shading` estimates, and the true albedo
  fitted_light    the light fitted by least squares to the landmark fit's normals given the true
                  albedo (what an albedo model would allow), and the true albedo
  estimated       the light and the albedo `refine_shape_from_shading` estimates (what the photo
                  alone gives)
  part5           part 5's own settings (margins in, 150 steps), the true light and albedo

Per case: depth RMSE off the occluding contours and photometric RMSE (rendered with the true albedo
and light, so also a measure of the geometry) of the landmark fit and of the refit, as bench_sfs
measures them; issue 3 asks for -30% on both. Neither morphable model here has an albedo model
(../shared/data/README.md), so without the true albedo the light and albedo must come from the
photo, as in `estimated`.

No target of its own: a diagnosis of why issue 3's targets (checked by bench_sfs.py) are missed,
with oracle inputs no user has; it exits 0 unless it fails to run.

    cd benchmarks && ../.venv/bin/python bench_sfs_ambiguity.py [--n 6]   -> results/sfs_ambiguity.json
"""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from _common import RESULTS, write_json
from bench_sfs import face_mask, geometry_errors
from bench_sfs_diagnosis import (_Refitted, light_errors, photometric_refit, synthetic_bench_start, synthetic_faces,
                                 visible_data_vertices)
from face3d.camera import transform
from face3d.fitting import FitConfig, fit_morphable_model
from face3d.sfs import _fit_light, _sh_np, refine_shape_from_shading
from face3d.shading import vertex_normals

CASES = ("oracle", "oracle_light", "oracle_albedo", "fitted_light", "estimated", "part5")


def fitted_light(fit, image: np.ndarray, model, rho: np.ndarray, data: np.ndarray) -> np.ndarray:
    """(9, 3) SH light by least squares of I ~ rho * sh(n) . L at the fit's visible vertices."""
    t = model.tensors()
    with torch.no_grad():
        cam = transform(fit.vertices(model), torch.tensor(fit.rotation, dtype=torch.float32)[None],
                        torch.tensor(fit.translation, dtype=torch.float32)[None])
        n = vertex_normals(cam, t["triangles"])[0].numpy()[data]
        scr = fit.project(model)[0]
        H, W = image.shape[:2]
        img = torch.from_numpy(image.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
        idx = torch.from_numpy(np.nonzero(data)[0])
        grid = torch.stack([scr[idx, 0] / W * 2 - 1, scr[idx, 1] / H * 2 - 1], -1)[None, None]
        obs = F.grid_sample(img, grid, align_corners=False)[0, :, 0].T.numpy()
    return _fit_light(_sh_np(n), obs.astype(np.float64), rho[data].astype(np.float64), np.ones(int(data.sum())))


def main():
    t_start = time.time()
    args, model, albedo_tex, rho, seam, near_margins = synthetic_bench_start()
    rows = []
    for k, (s, q) in enumerate(synthetic_faces(model, albedo_tex, args.n, args.seed)):
        fit = fit_morphable_model(s["image"], q, model, FitConfig())
        mask = face_mask(model, s, q)
        seen = visible_data_vertices(fit, model, seam)
        data = seen & ~near_margins
        est = refine_shape_from_shading(fit, s["image"], model)
        est_albedo = est.albedo
        known = est_albedo.max(axis=1) > 0
        L_fit = fitted_light(fit, s["image"], model, rho, data)
        settings = {
            "oracle": (rho, s["sh"], data, {}),
            "oracle_light": (est_albedo, s["sh"], data & known, {}),
            "oracle_albedo": (rho, est.sh, data, {}),
            "fitted_light": (rho, L_fit, data, {}),
            "estimated": (est_albedo, est.sh, data & known, {}),
            "part5": (rho, s["sh"], seen, {"steps": 150, "lr": 0.005}),
        }
        row = {"light_error_estimated": light_errors(est.sh, s["sh"]), "light_error_fitted": light_errors(L_fit, s["sh"])}
        for case in CASES:
            albedo, light, verts, kw = settings[case]
            kw = {"steps": 600, "lr": 0.01, **kw}
            refit = photometric_refit(fit, s["image"], model, albedo, light, verts, **kw)
            g = geometry_errors(model, s, fit, _Refitted(refit), mask, albedo_tex)
            row[case] = {"depthc_fit": g["depthc_rmse_fit"], "depthc_refit": g["depthc_rmse_sfs"],
                         "depth_fit": g["depth_rmse_fit"], "depth_refit": g["depth_rmse_sfs"],
                         "photo_fit": g["photo_rmse_fit"], "photo_refit": g["photo_rmse_sfs"]}
        rows.append(row)
        print(f"face {k}: light direction error, estimated {row['light_error_estimated']['light_direction_error_deg']:.0f} deg, "
              f"fitted given the true albedo {row['light_error_fitted']['light_direction_error_deg']:.0f} deg", flush=True)
        for case in CASES:
            r = row[case]
            print(f"   {case:14s} depth off the contours {r['depthc_fit']:.3f} -> {r['depthc_refit']:.3f} mm, "
                  f"photometric {r['photo_fit']:.4f} -> {r['photo_refit']:.4f}", flush=True)

    summary = {"faces": len(rows), "seconds": round(time.time() - t_start, 1),
               "light_direction_error_deg_estimated": float(np.median([r["light_error_estimated"]["light_direction_error_deg"] for r in rows])),
               "light_direction_error_deg_fitted": float(np.median([r["light_error_fitted"]["light_direction_error_deg"] for r in rows]))}
    print(f"\n{len(rows)} faces; change of the mean over faces, landmark fit -> refit (issue 3's target: -30% on both)")
    print(f"{'case':14s} {'depth off contours':>20s} {'plain depth':>12s} {'photometric':>12s} {'faces better (depth)':>21s}")
    for case in CASES:
        a = {key: np.array([r[case][key] for r in rows]) for key in rows[0][case]}
        ch = {m: float(a[f"{m}_refit"].mean() / a[f"{m}_fit"].mean() - 1) for m in ("depthc", "depth", "photo")}
        better = float((a["depthc_refit"] < a["depthc_fit"]).mean())
        summary[case] = {**{f"{m}_change": v for m, v in ch.items()}, "depthc_better_share": better,
                         "depthc_fit_mean": float(a["depthc_fit"].mean()), "depthc_refit_mean": float(a["depthc_refit"].mean())}
        print(f"{case:14s} {100 * ch['depthc']:+19.1f}% {100 * ch['depth']:+11.1f}% {100 * ch['photo']:+11.1f}% "
              f"{100 * better:20.0f}%")
    print(f"median light direction error: estimated from the photo {summary['light_direction_error_deg_estimated']:.0f} deg, "
          f"fitted given the true albedo {summary['light_direction_error_deg_fitted']:.0f} deg")
    write_json(RESULTS / "sfs_ambiguity.json", {"summary": summary, "rows": rows})


if __name__ == "__main__":
    main()
