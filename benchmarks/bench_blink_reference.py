"""How closed dlib reads real eyes, beside how closed it reads the `blink` renders.

Issue 8's blink check asks dlib's eye aspect ratio (EAR) of the blink view to fall below half of the
neutral view's. As a reference for what dlib reports on real eyes, this bench runs the same
detector and 68-point model on a seeded choice of LFW photos (one per identity, single-face photos
only, not the test photos) and reports the EAR distribution: median, 5th and 1st percentiles and
the lowest ten (press photos caught mid-blink; they are not labelled, so they are only the photos
dlib itself reads as most closed). Beside it, the same run renders the 17 test photos' `neutral`
and `blink` views (frontal, 256 px, as bench_expressions.py) and reports their EARs and ratios.

    cd benchmarks && ../.venv/bin/python bench_blink_reference.py [--lfw 600] -> results/blink_reference.json
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from _common import RESULTS, lfw_sample, reconstructed_test_photos, write_json
from bench_expressions import SIZE, mouth_eye_metrics


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lfw", type=int, default=600, help="LFW identities to draw (one photo each)")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from face3d import Pose, load_image, load_morphable_model
    from face3d.expressions import make_variant
    from face3d.landmarks import detect_faces
    from ganrefine.expression_options import render_variant

    t_start = time.perf_counter()
    real = []
    for ph in lfw_sample(args.seed, args.lfw):
        faces = detect_faces(load_image(ph))
        if len(faces) == 1:
            real.append((float(mouth_eye_metrics(faces[0].landmarks)["ear"]), f"{ph.parent.name}/{ph.name}"))
    real.sort()
    ears = np.array([e for e, _ in real])
    ref = {"photos": len(real), "median": float(np.median(ears)), "p05": float(np.quantile(ears, 0.05)),
           "p01": float(np.quantile(ears, 0.01)), "lowest10": [{"photo": p, "ear": e} for e, p in real[:10]]}
    print(f"LFW photos, dlib EAR over {len(real)}: median {ref['median']:.3f}, 5th percentile {ref['p05']:.3f}, "
          f"1st {ref['p01']:.3f}; lowest ten {', '.join(f'{e:.3f}' for e, _ in real[:10])}", flush=True)

    model = load_morphable_model()
    renders = []
    for ph, rec in reconstructed_test_photos(model):
        e = {}
        for name in ("neutral", "blink"):
            f = detect_faces(render_variant(make_variant(name, rec.fit, model), rec, model, [Pose(0)], SIZE).images[0])
            e[name] = float(mouth_eye_metrics(f[0].landmarks)["ear"]) if f else float("nan")
        renders.append({"photo": f"{ph.parent.name}/{ph.name}", "ear_neutral": e["neutral"], "ear_blink": e["blink"],
                        "ratio": e["blink"] / e["neutral"]})
    b = np.array([r["ear_blink"] for r in renders])
    n = np.array([r["ear_neutral"] for r in renders])
    out = {"blink_ear_median": float(np.nanmedian(b)), "blink_ear_min": float(np.nanmin(b)), "blink_ear_max": float(np.nanmax(b)),
           "neutral_ear_median": float(np.nanmedian(n)),
           "blink_ear_below_lfw_lowest10_max": int(np.sum(b <= ref["lowest10"][-1]["ear"])),
           "ratio_pass": int(np.sum(b / n < 0.5)), "photos": len(renders)}
    print(f"blink renders of the {len(renders)} test photos: EAR median {out['blink_ear_median']:.3f} "
          f"({out['blink_ear_min']:.3f}-{out['blink_ear_max']:.3f}), neutral median {out['neutral_ear_median']:.3f}; "
          f"{out['blink_ear_below_lfw_lowest10_max']} read at or below the tenth-lowest real photo "
          f"({ref['lowest10'][-1]['ear']:.3f}); ratio < 0.5 on {out['ratio_pass']}")
    for r in renders:
        if not r["ratio"] < 0.5:
            print(f"  miss {r['photo']}: blink {r['ear_blink']:.3f} / neutral {r['ear_neutral']:.3f} = {r['ratio']:.2f}")
    write_json(RESULTS / "blink_reference.json", {"seed": args.seed, "size": SIZE, "lfw": ref, "renders": out,
                                                  "rows": renders, "seconds": round(time.perf_counter() - t_start, 1)})


if __name__ == "__main__":
    main()
