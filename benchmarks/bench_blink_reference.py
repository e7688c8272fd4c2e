"""How closed dlib reads real eyes, beside how closed it reads the `blink` renders.

Issue 8's blink check asks dlib's eye aspect ratio (EAR) of the blink view to fall below half of the
neutral view's. As a reference for what dlib reports on real eyes, this bench runs the same
detector and 68-point model on a seeded choice of LFW photos (one per identity, single-face photos
only, not the test photos) and reports the EAR distribution: median, 5th and 1st percentiles and
the lowest ten (press photos caught mid-blink; they are not labelled, so they are only the photos
dlib itself reads as most closed).

Real blinks against the same check. The blink check compares two views of one face; real photos
give the same comparison where a person has a photo with the eyes shut and other photos.
`data/lfw_closed_eye_labels.csv` holds, for each LFW identity with at least three single-face
photos, the photo dlib reads as most closed if its EAR is under 0.18 (223 photos), labelled by
eye from crops of the eyes (`--sheets DIR` writes the numbered contact sheets they were labelled
from): `closed` (both eyes shut, 46), `open` (a squint, a downward look, a wink: 86), `unsure`
(too small, blurred or behind reflecting glasses to tell: 83) and `occluded` (sunglasses, hair,
a hand: 8). The labels were set before any ratio was computed. For each `closed` photo the bench
divides its EAR by the median EAR of the same person's other photos (up to 40) and counts how
often that falls below 0.5, as the check asks of a render; it also reports the share with the
`unsure` photos counted as closed, in case some of them are. The choice favours passing: a real
blink that dlib reads above 0.18 never became a candidate.

Beside them, the same run renders `neutral` and `blink` views (frontal, 256 px, as
bench_expressions.py) of the 17 test photos and of the LFW development faces (seed 11, the set
the lash constants were checked on) and reports their EARs and ratios.

No target: a reference for reading issue 8's blink check (checked by bench_expressions.py); it exits
0 unless it fails to run.

    cd benchmarks && ../.venv/bin/python bench_blink_reference.py [--lfw 600] [--dev 80] -> results/blink_reference.json
    cd benchmarks && ../.venv/bin/python bench_blink_reference.py --sheets DIR   # the labelling sheets (scans all of LFW)
"""
from __future__ import annotations

import argparse
import csv
import itertools
import time
from pathlib import Path

import numpy as np
import torch

from _common import RESULTS, lfw_dir, lfw_sample, reconstructed_photos, reconstructed_test_photos, write_json
from bench_expressions import SIZE, mouth_eye_metrics

LABELS = Path(__file__).resolve().parent / "data" / "lfw_closed_eye_labels.csv"
CANDIDATE_EAR = 0.18     # a person's most closed photo becomes a labelling candidate under this EAR
OTHER_PHOTOS = 40        # the person's usual EAR: median over up to this many other photos


def photo_ear(path) -> float | None:
    """dlib's mean EAR of both eyes on a photo with exactly one face; None otherwise."""
    from face3d import load_image
    from face3d.errors import FaceSynthError
    from face3d.landmarks import detect_faces

    try:
        faces = detect_faces(load_image(path))
    except FaceSynthError:
        return None
    return float(mouth_eye_metrics(faces[0].landmarks)["ear"]) if len(faces) == 1 else None


def real_blinks(labels=("closed",)) -> dict:
    """EAR of each photo with one of these labels, over the median EAR of the same person's other photos."""
    rows = []
    with open(LABELS, newline="") as f:
        closed = [r["photo"] for r in csv.DictReader(f) if r["label"] in labels]
    lfw = lfw_dir()
    for photo in closed:
        e = photo_ear(lfw / photo)
        others = [p for p in sorted((lfw / photo.split("/")[0]).iterdir()) if p.name != photo.split("/")[1]]
        usual = [x for x in (photo_ear(p) for p in others[:OTHER_PHOTOS]) if x is not None]
        if e is None or not usual:
            continue
        rows.append({"photo": photo, "ear": e, "usual_ear": float(np.median(usual)), "others": len(usual),
                     "ratio": e / float(np.median(usual))})
    r = np.array([x["ratio"] for x in rows])
    return {"photos": len(rows), "ratio_pass": int(np.sum(r < 0.5)), "ratio_median": float(np.median(r)),
            "ear_median": float(np.median([x["ear"] for x in rows])),
            "usual_ear_median": float(np.median([x["usual_ear"] for x in rows])), "rows": rows}


def write_sheets(folder: Path) -> None:
    """Contact sheets of the eyes of each labelling candidate (numbered in the CSV's order: by EAR)."""
    import cv2
    from tqdm import tqdm

    from face3d import load_image
    from face3d.landmarks import detect_faces

    folder.mkdir(parents=True, exist_ok=True)
    cands = []
    for person in tqdm(sorted(lfw_dir().iterdir()), desc="LFW identities"):
        seen = []
        for p in sorted(person.iterdir()):
            faces = detect_faces(load_image(p))
            if len(faces) == 1:
                seen.append((float(mouth_eye_metrics(faces[0].landmarks)["ear"]), p, faces[0].landmarks))
        if len(seen) >= 3 and min(seen, key=lambda t: t[0])[0] < CANDIDATE_EAR:
            cands.append(min(seen, key=lambda t: t[0]))
    cands.sort(key=lambda t: t[0])
    crops = []
    for n, (e, p, lm) in enumerate(cands):
        img = cv2.cvtColor(load_image(p), cv2.COLOR_RGB2BGR)
        cx, cy = lm[36:48].mean(0)
        w = (lm[45, 0] - lm[36, 0]) * 0.8 + 10
        c = img[max(int(cy - 0.3 * w), 0):int(cy + 0.3 * w), max(int(cx - w), 0):int(cx + w)]
        c = cv2.copyMakeBorder(cv2.resize(c, (240, 72), interpolation=cv2.INTER_CUBIC), 14, 2, 2, 2,
                               cv2.BORDER_CONSTANT, value=(255, 255, 255))
        cv2.putText(c, f"{n} {p.parent.name}", (3, 11), 0, 0.35, (0, 0, 255), 1)
        crops.append(c)
    for s in range(0, len(crops), 32):
        chunk = crops[s:s + 32]
        chunk += [np.full_like(crops[0], 255)] * (-len(chunk) % 4)
        sheet = np.concatenate([np.concatenate(chunk[k:k + 4], 1) for k in range(0, len(chunk), 4)], 0)
        cv2.imwrite(str(folder / f"candidates_{s // 32}.png"), sheet)
    print(f"{len(cands)} candidates (identities with >= 3 single-face photos whose most closed photo reads "
          f"EAR < {CANDIDATE_EAR}); sheets in {folder}")


def render_ratios(model, recs) -> list[dict]:
    """dlib EAR of the frontal `neutral` and `blink` renders of each (name, reconstruction)."""
    from face3d import Pose
    from face3d.expressions import make_variant
    from face3d.landmarks import detect_faces
    from face3d.variants import render_variant

    rows = []
    for name, rec in recs:
        e = {}
        for preset in ("neutral", "blink"):
            f = detect_faces(render_variant(make_variant(preset, rec.fit, model), rec, model, [Pose(0)], SIZE).images[0])
            e[preset] = float(mouth_eye_metrics(f[0].landmarks)["ear"]) if f else float("nan")
        rows.append({"photo": name, "ear_neutral": e["neutral"], "ear_blink": e["blink"],
                     "ratio": e["blink"] / e["neutral"]})
    return rows


def dev_reconstructions(model, count: int):
    """(name, reconstruction) of the first `count` LFW development faces (seed 11) that reconstruct."""
    recs = reconstructed_photos(model, lfw_sample(11, 200))
    return ((f"{ph.parent.name}/{ph.name}", rec) for ph, _, rec in itertools.islice(recs, count))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lfw", type=int, default=600, help="LFW identities to draw (one photo each)")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--dev", type=int, default=80, help="LFW development faces to render (0: none)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sheets", type=Path, help="write the labelling contact sheets to this folder and stop")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.sheets:
        write_sheets(args.sheets)
        return

    from face3d import load_morphable_model

    t_start = time.perf_counter()
    real = []
    for ph in lfw_sample(args.seed, args.lfw):
        e = photo_ear(ph)
        if e is not None:
            real.append((e, f"{ph.parent.name}/{ph.name}"))
    real.sort()
    ears = np.array([e for e, _ in real])
    ref = {"photos": len(real), "median": float(np.median(ears)), "p05": float(np.quantile(ears, 0.05)),
           "p01": float(np.quantile(ears, 0.01)), "lowest10": [{"photo": p, "ear": e} for e, p in real[:10]]}
    print(f"LFW photos, dlib EAR over {len(real)}: median {ref['median']:.3f}, 5th percentile {ref['p05']:.3f}, "
          f"1st {ref['p01']:.3f}; lowest ten {', '.join(f'{e:.3f}' for e, _ in real[:10])}", flush=True)

    blinks = real_blinks()
    print(f"real blinks: {blinks['photos']} LFW photos labelled closed read EAR median {blinks['ear_median']:.3f} "
          f"against {blinks['usual_ear_median']:.3f} on the same people's other photos; ratio < 0.5 on "
          f"{blinks['ratio_pass']}/{blinks['photos']} ({100 * blinks['ratio_pass'] / blinks['photos']:.0f}%), "
          f"median ratio {blinks['ratio_median']:.2f}", flush=True)
    # the labels' sensitivity: were every `unsure` photo shut too, how often would the check pass?
    wider = real_blinks(("closed", "unsure"))
    print(f"  with the {wider['photos'] - blinks['photos']} `unsure` photos counted as closed: ratio < 0.5 on "
          f"{wider['ratio_pass']}/{wider['photos']} ({100 * wider['ratio_pass'] / wider['photos']:.0f}%), "
          f"median ratio {wider['ratio_median']:.2f}", flush=True)

    model = load_morphable_model()
    renders = render_ratios(model, ((f"{ph.parent.name}/{ph.name}", rec) for ph, rec in reconstructed_test_photos(model)))
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
    dev = render_ratios(model, dev_reconstructions(model, args.dev)) if args.dev > 0 else []
    side = {"real_blinks": (blinks["ratio_pass"], blinks["photos"], blinks["ratio_median"]),
            "blink renders, test photos": (out["ratio_pass"], len(renders), float(np.nanmedian(b / n)))}
    if dev:
        r = np.array([x["ratio"] for x in dev])
        side["blink renders, LFW dev"] = (int(np.sum(r < 0.5)), len(dev), float(np.nanmedian(r)))
    print("ratio < 0.5, side by side:")
    for k, (p, t, m) in side.items():
        print(f"  {k:28s} {p:3d}/{t:<3d} ({100 * p / t:4.1f}%)  median ratio {m:.2f}")
    write_json(RESULTS / "blink_reference.json", {
        "seed": args.seed, "size": SIZE, "lfw": ref, "real_blinks": blinks,
        "real_blinks_with_unsure": {k: v for k, v in wider.items() if k != "rows"}, "renders": out, "rows": renders,
        "dev_rows": dev, "side_by_side": {k: {"pass": p, "of": t, "median_ratio": m} for k, (p, t, m) in side.items()},
        "seconds": round(time.perf_counter() - t_start, 1)})


if __name__ == "__main__":
    main()
