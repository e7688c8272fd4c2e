"""Expressions and shape jitter measured on the output: dlib's 68 landmarks and dlib face distance.

For every photo in ../shared/data/faces: fit (default settings), render frontal views (yaw 0,
256 px) for each preset, detect the 68 landmarks on each view and compare with `neutral`:

  open-mouth  inner-lip gap / mouth width rises by >= 0.15
  smile       mouth width (/ eye distance) grows by >= 8 %, both corners rise relative to the lip centre
  blink       eye aspect ratio < 0.5 x neutral's

Views whose expression parts the lips beyond the fit's own render the ICT teeth, gums and tongue
(`face3d.expressions.mouth_mesh`); each preset row records whether it did (`mouth_parts`).

Identity: dlib face-descriptor distance between each edited view and the source photo < 0.6.
Shape jitter S = 0.5 (3 draws per photo, fitted expression): share of views under 0.6 and the mean
dlib landmark shift against the un-jittered view (px, and / outer-eye distance).

With --method hybrid (rotate's default) the same checks run on the refined views: the renders
passed through the shipped refiner, flip-averaged as `rotate` runs it.

Targets (issue 8), checked in the run; it exits 1 when one is missed (`--target NAME=VALUE` changes
one): open-mouth and smile pass on every fitted photo (a view without a face fails); blink's EAR
ratio below 0.5 in the median over the photos (the reading issue 8 was resolved under: real closed
eyes pass this check photo by photo only 65% of the time, bench_blink_reference.py; the per-photo
count is printed, not checked); every preset view of every photo under 0.6 from the source photo;
jitter views under 0.6 for >= 90% (a view without a face counts as not under).

    cd benchmarks && ../.venv/bin/python bench_expressions.py    -> results/expressions.json
    cd benchmarks && ../.venv/bin/python bench_expressions.py --method hybrid
        -> results/expressions_hybrid.json
"""
from __future__ import annotations

import argparse
import sys
import functools
import time

import numpy as np
import torch

from _common import RESULTS, Targets, add_target_option, face_photos
from face3d.expressions import eye_aspect_ratios

SIZE = 256
JITTER = 0.5
JITTER_SAMPLES = 3


@functools.lru_cache(maxsize=None)
def _recognizer():
    import dlib

    from face3d.landmarks import model_file

    return dlib.face_recognition_model_v1(str(model_file("dlib_face_recognition_resnet_model_v1.dat")))


def descriptor(image: np.ndarray, face) -> np.ndarray:
    import dlib

    from face3d.landmarks import _predictor

    l, t, r, b = face.box
    shape = _predictor()(image, dlib.rectangle(l, t, r, b))
    return np.asarray(_recognizer().compute_face_descriptor(image, shape))


def mouth_eye_metrics(lm: np.ndarray) -> dict:
    eye = float(np.linalg.norm(lm[36] - lm[45]))
    width = float(np.linalg.norm(lm[54] - lm[48]))
    gap = float(np.mean([np.linalg.norm(lm[a] - lm[b]) for a, b in ((61, 67), (62, 66), (63, 65))]))
    centre_y = 0.5 * (lm[62][1] + lm[66][1])            # inner-lip centre
    lift = ((centre_y - lm[48][1]) / eye, (centre_y - lm[54][1]) / eye)   # + corner above the centre
    return {"eye_px": eye, "width": width / eye, "gap_ratio": gap / width, "lift_r": float(lift[0]),
            "lift_l": float(lift[1]), "ear": float(eye_aspect_ratios(lm).mean())}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=0, help="first N photos only (quick check)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--method", choices=["3d", "hybrid"], default="3d")
    ap.add_argument("--json", default=None, help="default: results/expressions.json, expressions_hybrid.json with --method hybrid")
    add_target_option(ap)
    args = ap.parse_args()
    targets = Targets.from_args(args)
    torch.set_num_threads(args.threads)

    from face3d import Pose, load_image, load_morphable_model, reconstruct_faces
    from face3d.expressions import ICT_PRESETS, PRESET_NAMES, make_variant, mouth_opens, shape_samples
    from face3d.landmarks import detect_faces
    from face3d.variants import render_variant

    model = load_morphable_model()
    if args.method == "hybrid":
        from ganrefine.hybrid import load_hybrid_refiner, refine_views
        refiner = load_hybrid_refiner()

    def frontal(variant, rec):
        views = render_variant(variant, rec, model, [Pose(0)], SIZE)
        return views.images[0] if args.method == "3d" else refine_views(refiner, views)[0]

    photos = face_photos()[: args.limit or None]
    rows, t_start = [], time.perf_counter()
    for ph in photos:
        img = load_image(ph)
        src_faces = detect_faces(img)
        row = {"photo": f"{ph.parent.name}/{ph.name}"}
        if not src_faces:
            row["error"] = "no face in photo"
            rows.append(row)
            continue
        t0 = time.perf_counter()
        rec = reconstruct_faces(img, model)[0]
        row["fit_s"] = round(time.perf_counter() - t0, 2)
        src_desc = descriptor(img, src_faces[0])
        per = {}
        t0 = time.perf_counter()
        for name in PRESET_NAMES:
            v = make_variant(name, rec.fit, model)        # presets render on the re-split fit
            view = frontal(v, rec)
            f = detect_faces(view)
            if not f:
                per[name] = {"detected": False}
                continue
            m = mouth_eye_metrics(f[0].landmarks)
            m["distance"] = float(np.linalg.norm(descriptor(view, f[0]) - src_desc))
            m["detected"] = True
            vf = rec.fit if v.fit is None else v.fit
            m["mouth_parts"] = mouth_opens(model, v.coefficients, vf.expression, vf.identity)
            per[name] = m
        row["render_s_per_view"] = round((time.perf_counter() - t0) / len(PRESET_NAMES), 3)
        row["presets"] = per
        # shape jitter around the fit (fitted expression), compared with the plain fitted view
        plain = make_variant("fitted", rec.fit, model)
        base = detect_faces(frontal(plain, rec))
        jit = []
        for s in shape_samples(rec.fit.identity, model, JITTER, JITTER_SAMPLES, seed=0, key=row["photo"]):
            view = frontal(make_variant("fitted", rec.fit, model, s), rec)
            f = detect_faces(view)
            j = {"norm": s.norm, "detected": bool(f)}
            if f:
                j["distance"] = float(np.linalg.norm(descriptor(view, f[0]) - src_desc))
                if base:
                    shift = np.linalg.norm(f[0].landmarks - base[0].landmarks, axis=1).mean()
                    j["shift_px"] = float(shift)
                    j["shift_eye"] = float(shift / np.linalg.norm(base[0].landmarks[36] - base[0].landmarks[45]))
            jit.append(j)
        row["jitter"] = jit
        rows.append(row)
        n = per.get("neutral", {})
        print(f"{row['photo']:40s} fit {row['fit_s']:5.1f}s  " + "  ".join(
            f"{k}:{per[k].get('distance', float('nan')):.2f}" for k in PRESET_NAMES), flush=True)

    # ---- aggregate
    checks = {"open-mouth": [], "smile": [], "blink": []}
    figures = {"gap_ratio_rise": [], "smile_widening": [], "smile_lift_r": [], "smile_lift_l": [], "ear_ratio": []}
    ident = {k: [] for k in PRESET_NAMES}
    undetected = {k: 0 for k in PRESET_NAMES}
    for row in rows:
        per = row.get("presets", {})
        for k in PRESET_NAMES:
            if k in per and per[k].get("detected"):
                ident[k].append(per[k]["distance"])
            elif "presets" in row:
                undetected[k] += 1
        n = per.get("neutral", {})
        if not n.get("detected"):
            continue
        o, s, b = per.get("open-mouth", {}), per.get("smile", {}), per.get("blink", {})
        if o.get("detected"):
            rise = o["gap_ratio"] - n["gap_ratio"]
            figures["gap_ratio_rise"].append(rise)
            checks["open-mouth"].append(rise >= 0.15)
        if s.get("detected"):
            widen = s["width"] / n["width"] - 1
            lr, ll = s["lift_r"] - n["lift_r"], s["lift_l"] - n["lift_l"]
            figures["smile_widening"].append(widen)
            figures["smile_lift_r"].append(lr)
            figures["smile_lift_l"].append(ll)
            checks["smile"].append(widen >= 0.08 and lr > 0 and ll > 0)
        if b.get("detected"):
            ratio = b["ear"] / n["ear"]
            figures["ear_ratio"].append(ratio)
            checks["blink"].append(ratio < 0.5)
    jit = [j for row in rows for j in row.get("jitter", [])]
    jd = [j["distance"] for j in jit if "distance" in j]
    summary = {
        "photos": len(rows),
        "expression_checks_pass_share": {k: (float(np.mean(v)) if v else None) for k, v in checks.items()},
        "expression_checks_passed": {k: f"{int(np.sum(v))}/{len(v)}" for k, v in checks.items()},
        "median": {k: float(np.median(v)) for k, v in figures.items() if v},
        "min": {k: float(np.min(v)) for k, v in figures.items() if v},
        "max": {k: float(np.max(v)) for k, v in figures.items() if v},
        "identity_distance_median": {k: (float(np.median(v)) if v else None) for k, v in ident.items()},
        "identity_distance_max": {k: (float(np.max(v)) if v else None) for k, v in ident.items()},
        "identity_under_0.6": {k: f"{int(np.sum(np.array(v) < 0.6))}/{len(v) + undetected[k]}" for k, v in ident.items()},
        "views_without_face": undetected,
        "views_with_mouth_parts": {k: int(sum(bool(r.get("presets", {}).get(k, {}).get("mouth_parts")) for r in rows))
                                   for k in PRESET_NAMES},
        "jitter": {
            "scale": JITTER, "samples_per_photo": JITTER_SAMPLES,
            "share_distance_under_0.6": float(np.mean(np.array(jd) < 0.6)) if jd else None,
            "views": len(jit), "views_detected": len(jd),
            "distance_median": float(np.median(jd)) if jd else None,
            "mean_shift_px": float(np.mean([j["shift_px"] for j in jit if "shift_px" in j])),
            "mean_shift_eye_fraction": float(np.mean([j["shift_eye"] for j in jit if "shift_eye" in j])),
            "mean_norm": float(np.mean([j["norm"] for j in jit])),
        },
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    print(__import__("json").dumps(summary, indent=2))
    fitted = sum("presets" in row for row in rows)
    for k in ("open-mouth", "smile"):
        targets.check(f"{k}_pass_share", np.sum(checks[k]) / fitted if fitted else None, ">=", 1.0,
                      note=f"({int(np.sum(checks[k]))}/{fitted} fitted photos)")
    targets.check("blink_median_ear_ratio", summary["median"].get("ear_ratio"), "<", 0.5,
                  note=f"(per photo: {summary['expression_checks_passed']['blink']}, not a target)")
    not_under = sum(int(np.sum(np.array(v) >= 0.6)) + undetected[k] for k, v in ident.items())
    targets.check("preset_views_not_under_0.6", not_under, "<=", 0, note="(views at or over 0.6 or without a face)")
    targets.check("jitter_share_under_0.6", np.sum(np.array(jd) < 0.6) / len(jit) if jit else None, ">=", 0.9)
    name = "expressions.json" if args.method == "3d" else f"expressions_{args.method}.json"
    return targets.finish(args.json or RESULTS / name, {
        "method": args.method, "size": SIZE, "presets": {k: ICT_PRESETS[k] for k in PRESET_NAMES}, "summary": summary, "rows": rows})


if __name__ == "__main__":
    sys.exit(main())
