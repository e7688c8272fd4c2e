"""How the landmark fit splits a face between identity and expression, on synthetic faces with known truth.

`neutral` and the expression presets replace the fitted expression and keep the fitted identity, so
whatever part of a smile the fit put into the identity stays in `neutral`. This bench fits random
ICT faces (identity within +-2 sigma, three random blendshapes at 0..0.2, yaw -25..25, pitch
-10..10, landmark noise 1.5% of the outer-eye distance) from their projected landmarks, with
the fit's default expression prior (FitConfig.expression_prior) and weaker ones, on every blendshape
or on the mouth and jaw blendshapes only (FitConfig.mouth_expression_prior), on two sets: no smile,
and a smile (mouthSmile_L/R both 0.3..1.0). Per candidate it reports the error of the *neutral* face
that the fitted identity gives against the true identity's neutral face (mean vertex distance over
the front of the face, mm), the bias of its mouth width, and the error of the fitted smile
coefficient. The candidate with the lowest mean neutral error over the two sets is the one
`face3d.expressions.expression_split` re-splits with (the fit itself keeps its default): it
printed 'mouth 1e-05' (2.73 mm against 3.10 mm for the default). The row `expression_split` is
that shipped re-split of each default fit, computed by the function itself (the camera held at
the default refit's): 2.99 mm (3.40 smiling, 2.59 not).

Targets, the claims the shipped re-split rests on (`face3d.expressions.SPLIT_MOUTH_PRIOR`): its
candidate's mean neutral error is below the default prior's in the same run, and it is the candidate
with the lowest error; the re-split's own neutral error is below the default fit's, and its
landmark error (smiling set, under the fit's camera) within 2% of the default fit's. The run exits 1
when one is not so.

    cd benchmarks && ../.venv/bin/python bench_expression_split.py [--n 40] -> results/expression_split.json
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
from face3d.expressions import expression_split
from face3d.fitting import FitConfig, fit_morphable_model, landmark_residuals, select_contour_vertices
from face3d.morphable_model import load_morphable_model

#: (label, FitConfig overrides): the fit's default, weaker priors on every blendshape, and weaker
#: priors on the mouth and jaw blendshapes only (`FitConfig.mouth_expression_prior`)
CANDIDATES = [("default 5e-4", {})] + [(f"all {p:g}", {"expression_prior": p}) for p in (2e-4, 1e-4, 5e-5, 1e-5)] + [
    (f"mouth {p:g}", {"mouth_expression_prior": p}) for p in (1e-4, 5e-5, 1e-5)]
#: the shipped re-split (`face3d.expressions.expression_split`) of the default fit
RESPLIT = "expression_split"
LANDMARK_NOISE = 0.015      # of the outer-eye distance


def smiling_face(model, rng, smile: float, size: int = 512) -> dict:
    ix = {n: i for i, n in enumerate(model.expression_names)}
    alpha = np.clip(rng.standard_normal(model.num_identity), -2, 2).astype(np.float32)
    beta = np.zeros(model.num_expressions, np.float32)
    for j in rng.choice(model.num_expressions, size=3, replace=False):
        beta[j] = rng.uniform(0.0, 0.2)
    for n in ("mouthSmile_L", "mouthSmile_R"):
        beta[ix[n]] = smile
    pose = Pose(rng.uniform(-25, 25), rng.uniform(-10, 10), rng.uniform(-5, 5))
    focal = rng.uniform(1500, 4000)
    dist = focal * 150.0 / (0.5 * size)
    R = euler_to_matrix(*(torch.tensor([math.radians(a)]) for a in pose.as_tuple()))
    t = torch.tensor([[rng.uniform(-15, 15), rng.uniform(-15, 15), -dist]], dtype=torch.float32)
    v = model.shape(torch.from_numpy(alpha)[None], torch.from_numpy(beta)[None])
    cam = PerspectiveCamera(torch.tensor([focal]), torch.tensor([[size / 2, size / 2]]))
    scr = cam.project(transform(v, R, t))[0].numpy()
    lm = model.landmark_vertices
    q = scr[np.maximum(lm, 0), :2].copy()
    corr = select_contour_vertices(model, lambda idx: scr[idx, :2], q)
    q[:17] = scr[corr[:17], :2]
    q = q + rng.standard_normal(q.shape) * LANDMARK_NOISE * np.linalg.norm(q[36] - q[45])
    return {"alpha": alpha, "beta": beta, "landmarks": q, "size": size, "smile": smile}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=40, help="faces per set")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (1 on a machine shared with other jobs)")
    ap.add_argument("--json", default=str(RESULTS / "expression_split.json"))
    add_target_option(ap)
    args = ap.parse_args()
    targets = Targets.from_args(args)
    torch.set_num_threads(args.threads)
    model = load_morphable_model()
    ix = {n: i for i, n in enumerate(model.expression_names)}
    lm = model.landmark_vertices
    front = model.skin & (model.mean[:, 2] > np.percentile(model.mean[model.skin, 2], 40))
    zero = torch.zeros(1, model.num_expressions)

    def neutral(alpha):
        a = np.zeros(model.num_identity, np.float32)
        a[: alpha.size] = alpha
        return model.shape(torch.from_numpy(a)[None], zero)[0].numpy()

    rng = np.random.default_rng(args.seed)
    t_start = time.perf_counter()
    rows = []
    for name in ("no smile", "smile"):
        for _ in range(args.n):
            face = smiling_face(model, rng, 0.0 if name == "no smile" else float(rng.uniform(0.3, 1.0)))
            truth = neutral(face["alpha"])
            true_width = np.linalg.norm(truth[lm[48]] - truth[lm[54]])
            for label, overrides in CANDIDATES:
                fit = fit_morphable_model(None, face["landmarks"], model, FitConfig(dense=False, **overrides),
                                          image_size=(face["size"], face["size"]))
                n = neutral(fit.identity)
                rows.append({"set": name, "candidate": label, "smile": face["smile"],
                             "neutral_error_mm": float(np.linalg.norm(n[front] - truth[front], axis=1).mean()),
                             "mouth_width_bias": float(np.linalg.norm(n[lm[48]] - n[lm[54]]) / true_width - 1),
                             "smile_error": float(0.5 * (fit.expression[ix["mouthSmile_L"]] + fit.expression[ix["mouthSmile_R"]])
                                                  - face["smile"]),
                             "landmark_error": fit.landmark_error})
                if not overrides:       # the shipped re-split of this default fit, through its own function
                    split = expression_split(fit, model)
                    n = neutral(split.identity)
                    rows.append({"set": name, "candidate": RESPLIT, "smile": face["smile"],
                                 "neutral_error_mm": float(np.linalg.norm(n[front] - truth[front], axis=1).mean()),
                                 "mouth_width_bias": float(np.linalg.norm(n[lm[48]] - n[lm[54]]) / true_width - 1),
                                 "smile_error": float(0.5 * (split.expression[ix["mouthSmile_L"]]
                                                             + split.expression[ix["mouthSmile_R"]]) - face["smile"]),
                                 "landmark_error": float(landmark_residuals(split, model)["landmark_error"])})
    table = []
    for label, overrides in CANDIDATES + [(RESPLIT, None)]:
        entry = {"candidate": label, "overrides": overrides}
        for name in ("no smile", "smile"):
            r = [x for x in rows if x["candidate"] == label and x["set"] == name]
            entry[name] = {k: float(np.mean([x[k] for x in r])) for k in
                           ("neutral_error_mm", "mouth_width_bias", "smile_error", "landmark_error")}
        entry["neutral_error_mm_both"] = 0.5 * (entry["no smile"]["neutral_error_mm"] + entry["smile"]["neutral_error_mm"])
        table.append(entry)
        print(f"{label:13s} " + "  ".join(
            f"{name}: neutral {entry[name]['neutral_error_mm']:.2f} mm, mouth width {100 * entry[name]['mouth_width_bias']:+.1f}%, "
            f"smile {entry[name]['smile_error']:+.2f}" for name in ("no smile", "smile"))
            + f"  | both {entry['neutral_error_mm_both']:.2f} mm", flush=True)
    best = min((e for e in table if e["overrides"] is not None), key=lambda e: e["neutral_error_mm_both"])
    print(f"lowest mean neutral error: {best['candidate']}")
    from face3d.expressions import SPLIT_MOUTH_PRIOR

    shipped = next((e for e in table if e["overrides"] == {"mouth_expression_prior": SPLIT_MOUTH_PRIOR}), None)
    default = next(e for e in table if not e["overrides"])
    targets.check("shipped_split_neutral_error_mm", shipped["neutral_error_mm_both"] if shipped else None, "<",
                  default["neutral_error_mm_both"], " mm", note=f"(mouth {SPLIT_MOUTH_PRIOR:g} vs the default prior, this run)")
    targets.check("shipped_split_is_lowest", shipped is best, "==", True, note=f"(lowest: {best['candidate']})")
    resplit = next(e for e in table if e["candidate"] == RESPLIT)
    targets.check("resplit_neutral_error_mm", resplit["neutral_error_mm_both"], "<", default["neutral_error_mm_both"],
                  " mm", note="(expression_split of the default fit vs the default fit, this run)")
    targets.check("resplit_landmark_error", resplit["smile"]["landmark_error"], "<=",
                  default["smile"]["landmark_error"] * 1.02, note="(smiling set; the re-split under the fit's "
                  "own camera reprojects onto the landmarks as well as the fit, 2% slack)")
    return targets.finish(args.json, {"n_per_set": args.n, "seed": args.seed, "landmark_noise": LANDMARK_NOISE,
                                      "candidates": table, "chosen": best["candidate"], "rows": rows,
                                      "seconds": round(time.perf_counter() - t_start, 1)})


if __name__ == "__main__":
    sys.exit(main())
