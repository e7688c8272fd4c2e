"""How much issue 8's per-photo dlib checks move with the render size alone.

bench_expressions.py measures frontal views at 256 px. dlib's landmarks on a rendered face move by
a pixel or two with the crop size, and the blink check compares two small eye aspect ratios, so a
photo's pass or miss there can hang on the size. This bench renders the same fits (default
settings, the 17 photos of ../shared/data/faces) at 224, 240, 256, 272 and 288 px and reports per
photo and size: blink's EAR ratio (target < 0.5), smile's widening (>= 8%, corners up) and
open-mouth's gap-ratio rise (>= 0.15); then how many photos pass at each size, at every size and at
some size. Nothing is chosen from it.

No target of its own (a diagnosis of bench_expressions.py's checks, which that script checks); it
exits 0 unless it fails to run.

    cd benchmarks && ../.venv/bin/python bench_expression_sizes.py -> results/expression_sizes.json
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from _common import RESULTS, face_photos, write_json
from bench_expressions import mouth_eye_metrics

SIZES = (224, 240, 256, 272, 288)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from face3d import Pose, load_image, load_morphable_model, reconstruct_faces
    from face3d.errors import FaceSynthError
    from face3d.expressions import make_variant
    from face3d.landmarks import detect_faces
    from face3d.variants import render_variant

    model = load_morphable_model()
    t_start = time.perf_counter()
    rows = []
    for ph in face_photos():
        try:
            rec = reconstruct_faces(load_image(ph), model)[0]
        except FaceSynthError as e:
            rows.append({"photo": f"{ph.parent.name}/{ph.name}", "error": str(e)})
            continue
        variants = {name: make_variant(name, rec.fit, model) for name in ("neutral", "blink", "smile", "open-mouth")}
        row = {"photo": f"{ph.parent.name}/{ph.name}", "sizes": {}}
        for size in SIZES:
            m = {}
            for name, v in variants.items():
                f = detect_faces(render_variant(v, rec, model, [Pose(0)], size).images[0])
                m[name] = mouth_eye_metrics(f[0].landmarks) if f else None
            n, b, s, o = m["neutral"], m["blink"], m["smile"], m["open-mouth"]
            r = {}
            if n and b:
                r["blink_ratio"] = b["ear"] / n["ear"]
                r["blink"] = r["blink_ratio"] < 0.5
            if n and s:
                r["smile_widening"] = s["width"] / n["width"] - 1
                r["smile"] = r["smile_widening"] >= 0.08 and s["lift_r"] > n["lift_r"] and s["lift_l"] > n["lift_l"]
            if n and o:
                r["open_rise"] = o["gap_ratio"] - n["gap_ratio"]
                r["open-mouth"] = r["open_rise"] >= 0.15
            row["sizes"][size] = r
        rows.append(row)
        print(f"{row['photo']:46s} blink ratio " + " ".join(
            f"{row['sizes'][s].get('blink_ratio', float('nan')):.2f}" for s in SIZES) + "  smile " + " ".join(
            f"{100 * row['sizes'][s].get('smile_widening', float('nan')):4.1f}%" for s in SIZES), flush=True)

    fitted = [r for r in rows if "sizes" in r]
    summary = {}
    for check in ("blink", "smile", "open-mouth"):
        ok = np.array([[bool(r["sizes"][s].get(check, False)) for s in SIZES] for r in fitted])
        summary[check] = {"pass_per_size": {str(s): int(ok[:, j].sum()) for j, s in enumerate(SIZES)},
                          "pass_at_every_size": int(ok.all(axis=1).sum()), "pass_at_some_size": int(ok.any(axis=1).sum()),
                          "never": [r["photo"] for r, k in zip(fitted, ok) if not k.any()],
                          "photos": len(fitted)}
        print(f"{check:10s} passes per size {summary[check]['pass_per_size']} of {len(fitted)}; at every size "
              f"{summary[check]['pass_at_every_size']}, at some size {summary[check]['pass_at_some_size']}; "
              f"never: {', '.join(summary[check]['never']) or '-'}")
    spread = [max(r["sizes"][s]["blink_ratio"] for s in SIZES) - min(r["sizes"][s]["blink_ratio"] for s in SIZES)
              for r in fitted if all("blink_ratio" in r["sizes"][s] for s in SIZES)]
    summary["blink_ratio_spread_median"] = float(np.median(spread))
    summary["blink_ratio_spread_max"] = float(np.max(spread))
    print(f"blink ratio across sizes: median spread {summary['blink_ratio_spread_median']:.2f}, "
          f"largest {summary['blink_ratio_spread_max']:.2f}")
    write_json(RESULTS / "expression_sizes.json", {"sizes": list(SIZES), "summary": summary, "rows": rows,
                                                   "seconds": round(time.perf_counter() - t_start, 1)})


if __name__ == "__main__":
    main()
