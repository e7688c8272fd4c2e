"""Choosing the `smile` preset's mouth stretch on LFW photos (a development set), not the test photos.

issue 8's smile check (benchmarks/bench_expressions.py, on ../shared/data/faces): against `neutral`
the mouth widens by >= 8 % (width / outer-eye distance, dlib's 68 landmarks) and both corners rise
relative to the inner-lip centre. Faces whose fit put part of a smile into the identity shape kept it
in `neutral` before `expression_split`, so the preset must widen the mouth beyond the photo. This bench
renders frontal views (256 px) of a seeded choice of LFW faces with candidate smile presets that
differ in mouthStretch (and two in mouthSmile) and reports, per candidate: the share of faces that
pass the check, the widening's median / 10th percentile / minimum, the smallest corner lift, and the
median dlib distance of the smiling view to the source photo (identity cost of a stronger smile).
The rule: the highest pass share; among ties, the lower identity distance. It printed 'stretch 0.4'
(78/80, against 77/80 for the stretch 0.2 shipped before), which `face3d.expressions` now ships;
rerun with the views on the re-split fit (`expression_split`), it printed 'stretch 0.4' again
(80/80, against 77/80 for 0.2).

Target, the claim the shipped preset rests on: the rule chooses the candidate that
`face3d.expressions.ICT_PRESETS["smile"]` ships; the run exits 1 when it chooses another.

    cd benchmarks && ../.venv/bin/python bench_smile_presets.py [--faces 80] -> results/smile_presets.json
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from _common import RESULTS, Targets, add_target_option, lfw_dir, lfw_sample, reconstructed_photos
from bench_expressions import SIZE, descriptor, mouth_eye_metrics

_BASE = {"mouthSmile_L": 0.9, "mouthSmile_R": 0.9, "cheekSquint_L": 0.35, "cheekSquint_R": 0.35,
         "mouthUpperUp_L": 0.15, "mouthUpperUp_R": 0.15, "eyeSquint_L": 0.15, "eyeSquint_R": 0.15}


def candidates() -> dict[str, dict[str, float]]:
    out = {}
    for s in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5):
        out[f"stretch {s:g}"] = {**_BASE, "mouthStretch_L": s, "mouthStretch_R": s}
    for s in (0.0, 0.4):
        out[f"stretch {s:g}, smile 1.0"] = {**_BASE, "mouthSmile_L": 1.0, "mouthSmile_R": 1.0,
                                            "mouthStretch_L": s, "mouthStretch_R": s}
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--faces", type=int, default=80, help="LFW faces to use (first that fit and are detected)")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=str(RESULTS / "smile_presets.json"))
    add_target_option(ap)
    args = ap.parse_args()
    targets = Targets.from_args(args)
    torch.set_num_threads(args.threads)

    from face3d import Pose, load_morphable_model
    from face3d.expressions import ICT_PRESETS, ExpressionSpec, Variant, expression_split
    from face3d.landmarks import detect_faces
    from face3d.variants import render_variant

    model = load_morphable_model()
    index = {n: i for i, n in enumerate(model.expression_names)}

    def render(weights: dict, rec):
        beta = np.zeros(model.num_expressions, np.float32)
        for n, w in weights.items():
            beta[index[n]] = w
        variant = Variant(ExpressionSpec("bench"), beta, None, fit=expression_split(rec.fit, model))
        return render_variant(variant, rec, model, [Pose(0)], SIZE).images[0]

    t_start = time.perf_counter()
    lfw = lfw_dir()
    faces = []      # (name, rec, neutral metrics, source descriptor)
    for ph, img, rec in reconstructed_photos(model, lfw_sample(args.seed, 3 * args.faces)):
        src = detect_faces(img)
        f = detect_faces(render({}, rec))
        if f and src:
            faces.append((ph.name, rec, mouth_eye_metrics(f[0].landmarks), descriptor(img, src[0])))
        if len(faces) >= args.faces:
            break
    print(f"{len(faces)} LFW faces ({time.perf_counter() - t_start:.0f} s)", flush=True)

    shipped = ICT_PRESETS["smile"]
    rows = []
    for label, weights in candidates().items():
        widen, lift, dist, ok = [], [], [], []
        for _, rec, n, src in faces:
            view = render(weights, rec)
            f = detect_faces(view)
            if not f:
                widen.append(0.0), lift.append(0.0), ok.append(False)
                continue
            s = mouth_eye_metrics(f[0].landmarks)
            w, lr, ll = s["width"] / n["width"] - 1, s["lift_r"] - n["lift_r"], s["lift_l"] - n["lift_l"]
            widen.append(w), lift.append(min(lr, ll)), ok.append(w >= 0.08 and lr > 0 and ll > 0)
            dist.append(float(np.linalg.norm(descriptor(view, f[0]) - src)))
        row = {"candidate": label, "weights": weights, "shipped": weights == shipped,
               "pass_share": float(np.mean(ok)), "passed": f"{int(np.sum(ok))}/{len(ok)}",
               "widening_median": float(np.median(widen)), "widening_q10": float(np.quantile(widen, 0.1)),
               "widening_min": float(np.min(widen)), "corner_lift_min": float(np.min(lift)),
               "identity_distance_median": float(np.median(dist)), "identity_under_0.6": float(np.mean(np.array(dist) < 0.6))}
        rows.append(row)
        print(f"{label:24s}{' (shipped)' if row['shipped'] else '           '} pass {row['passed']:>6s}  widening "
              f"median {row['widening_median']:.3f} q10 {row['widening_q10']:.3f} min {row['widening_min']:.3f}  "
              f"lift min {row['corner_lift_min']:+.3f}  identity median {row['identity_distance_median']:.3f}", flush=True)
    best = max(rows, key=lambda r: (r["pass_share"], -r["identity_distance_median"]))
    print(f"chosen by the rule (pass share, then identity): {best['candidate']}")
    targets.check("chosen_is_shipped", best["shipped"], "==", True, note=f"(chosen: {best['candidate']})")
    return targets.finish(args.json, {"faces": len(faces), "chosen": best["candidate"], "seed": args.seed, "size": SIZE, "lfw": str(lfw),
                                      "candidates": rows, "seconds": round(time.perf_counter() - t_start, 1)})


if __name__ == "__main__":
    sys.exit(main())
