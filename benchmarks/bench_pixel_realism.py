"""The pixel-level realism test (issue 25): `facesynth compare`'s `pixel_realism`, a small CNN's
classifier two-sample test on masked face crops, real LFW photos vs `3d` and `hybrid` views, per
|yaw| bin and overall, with its two controls.

    cd benchmarks && ../.venv/bin/python bench_pixel_realism.py [--photos-per-identity 2] [--real-photos 400]
                     [--yaws -60,...,60] [--methods 3d,hybrid] [--background photo|plain] [--quick]
                     [--seeds 0,1,2] [--out DIR] [--target NAME=VALUE]

Input: the held-out LFW people of bench_compare.py (`_common.heldout_lfw_people(50)`: 51 people),
`--photos-per-identity` photos each (default 2: bench_compare.py's 102 photos). `compare` runs once
in this process (`facesynth.compare.run_comparison`, its defaults otherwise: landmarks + dense fit,
128 px, the whole-photo background) with `--methods`, yaw -60..60, against `--real-photos` seeded
LFW photos, and writes its report to `--out` (default ~/.cache/facesynth/pixel_realism; a rerun
reuses the views cached there). The script prints, per |yaw| bin and over the testable bins pooled,
each method's pixel C2ST accuracy (0.5 = indistinguishable from real photos) with its counts, the
two controls (real vs real, real vs real blurred by sigma 1 px) and the pixel test's wall time,
and writes benchmarks/results/pixel_realism.json.

Targets (issue 25), checked in the run; it exits 1 when one is missed (`--target NAME=VALUE`
changes one): compare exits 0; the controls work (real vs real within 0.5 +- 0.07, blurred >=
0.6: if these fail, the test is broken, not the generator); hybrid pixel C2ST <= 0.70 overall; in
every testable bin hybrid < 3d.

`--seeds 0,1,2` (default): compare runs once per seed (the views are made once and cached; each seed
draws its own real photos and classifier splits); the table is printed per seed, then the mean and
range over the seeds, and the targets are checked on the means (one seed's figures move by 3-5 points).

`--quick`: one seed, 10 people x 1 photo, yaw -15,0,15, 60 real photos (a check that it runs; most bins are
not testable and the figures are noise): about 1.5 minutes.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import (RESULTS, Targets, add_heldout_compare_arguments, add_target_option, heldout_compare_people,
                     identity_layout)
from facesynth.compare import CompareOptions, job, run_comparison

YAWS = "-60,-45,-30,-15,0,15,30,45,60"
RR_TOLERANCE = 0.07
BLUR_MIN = 0.6
HYBRID_MAX = 0.70


def timed_pixel_test(walls: list):
    """`job.pixel_realism` wrapped to record its wall time (the compare run calls it once)."""
    inner = job.pixel_realism

    def run(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            walls.append(time.perf_counter() - t0)
    return run


def print_table(pixel: dict, methods: list[str]) -> None:
    f = lambda v: "  null" if v is None else f"{v:.3f}"  # noqa: E731
    bins = list(pixel["real_vs"][methods[0]]["bins"])
    print(f"  {'|yaw| bin':<11}{'real':>6}" + "".join(f"{m + ' n':>12}{m + ' C2ST':>13}" for m in methods))
    for b in bins:
        rows = [pixel["real_vs"][m]["bins"][b] for m in methods]
        print(f"  {b:<11}{rows[0]['real']:>6}"
              + "".join(f"{r['generated']:>12}{f(r['accuracy']):>13}" for r in rows))
    alls = [pixel["real_vs"][m]["all"] for m in methods]
    print(f"  {'overall':<11}{'':>6}" + "".join(f"{a['n_per_class']:>12}{f(a['accuracy']):>13}" for a in alls)
          + f"   (testable bins pooled: {', '.join(alls[0]['bins']) or 'none'}; n = per class)")
    c = pixel["controls"]
    for name in ("real_vs_real", "real_vs_blurred"):
        t = c[name]
        print(f"  control {name:<16} {f(t['accuracy'])}  (n = {t['n_per_class']} per class, folds "
              + ", ".join(f"{a:.2f}" for a in t["folds"]) + ")")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_heldout_compare_arguments(ap, YAWS)
    ap.add_argument("--methods", default="3d,hybrid", help="comma-separated; must include 3d and hybrid for the targets")
    ap.add_argument("--background", choices=["photo", "plain"], default="photo")
    ap.add_argument("--quick", action="store_true", help="10 people x 1 photo, yaw -15,0,15, 60 real photos")
    ap.add_argument("--out", default=str(Path.home() / ".cache" / "facesynth" / "pixel_realism"))
    ap.add_argument("--json", default=str(RESULTS / "pixel_realism.json"))
    ap.add_argument("--seeds", default="0,1,2",
                    help="compare seeds (the real photos drawn and the classifier's splits), comma-separated; the "
                         "targets are checked on the mean (default 0,1,2: one seed's figures move by 3-5 points)")
    add_target_option(ap)
    args = ap.parse_args(argv)
    if args.quick:
        args.identities, args.photos_per_identity, args.yaws, args.real_photos = 10, 1, "-15,0,15", 60
        args.seeds = "0"
        args.out = str(Path(args.out).with_name(Path(args.out).name + "_quick"))
        if args.json == str(RESULTS / "pixel_realism.json"):
            args.json = str(RESULTS / "pixel_realism_quick.json")
    for flag, value, low in (("--photos-per-identity", args.photos_per_identity, 1), ("--real-photos", args.real_photos, 1),
                             ("--identities", args.identities, 1), ("--val-identities", args.val_identities, 0)):
        if value is not None and value < low:
            ap.error(f"{flag} must be at least {low}, got {value}")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not {"3d", "hybrid"} <= set(methods):
        ap.error("--methods must include 3d and hybrid")
    try:
        yaws = tuple(float(y) for y in args.yaws.split(",") if y.strip())
    except ValueError:
        ap.error(f"--yaws expects comma-separated degrees, got {args.yaws!r}")
    targets = Targets.from_args(args)
    people = heldout_compare_people(args)

    seeds = parse_seeds(ap, args.seeds)
    pixel_walls: list[float] = []
    job.pixel_realism = timed_pixel_test(pixel_walls)
    runs, t0 = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        identity_layout(Path(tmp), people, args.photos_per_identity)
        for seed in seeds:      # the views are made once (compare's cache); the real photos and splits per seed
            options = CompareOptions(input=Path(tmp), out=Path(args.out), yaws=yaws, methods=tuple(methods),
                                     real_photos=args.real_photos, background=args.background, seed=seed)
            code = run_comparison(options)
            run = json.loads((Path(args.out) / "metrics.json").read_text())
            runs.append({"seed": seed, "exit_code": code, "pixel": run["info"]["pixel_realism"],
                         "real_photos_used": run["info"]["realism"]["real_photos"]["used"],
                         "identity_feature_realism": {m: run["methods"][m]["all"]["realism"] for m in methods},
                         "pixel_test_seconds": pixel_walls[-1] if pixel_walls else None})
    wall = time.perf_counter() - t0
    n_photos = sum(min(len(p), args.photos_per_identity) for p in people.values())
    for r in runs:
        print(f"\nseed {r['seed']}: {len(people)} held-out people, {n_photos} photos, yaw {args.yaws}, background "
              f"{args.background}, {r['real_photos_used']} real photos with a face; pixel C2ST accuracy "
              f"(0.5 = indistinguishable from real):")
        print_table(r["pixel"], methods)
    summary = seed_summary(runs, methods)
    print(f"\nmean over seeds {', '.join(map(str, seeds))} (min-max):")
    for name, (mean, lo, hi) in summary["pixel_realism"].items():
        print(f"  {name:<28} {mean:.3f}  ({lo:.3f}-{hi:.3f})")
    walls = [r["pixel_test_seconds"] for r in runs if r["pixel_test_seconds"] is not None]
    print(f"  pixel test wall time {np.median(walls):.1f} s per seed (median; all runs {wall:.0f} s)" if walls
          else "  pixel test did not run")

    m = {k: v[0] for k, v in summary["pixel_realism"].items()}
    targets.check("compare_exit_code", max(r["exit_code"] for r in runs), "==", 0)
    targets.check("control_real_vs_real_low", m["control real_vs_real"], ">=", 0.5 - RR_TOLERANCE,
                  note="(the test must not see a difference)")
    targets.check("control_real_vs_real_high", m["control real_vs_real"], "<=", 0.5 + RR_TOLERANCE, note="(where there is none)")
    targets.check("control_blurred", m["control real_vs_blurred"], ">=", BLUR_MIN, note="(a 1-px blur must be seen)")
    targets.check("hybrid_pixel_realism", m["hybrid overall"], "<=", HYBRID_MAX, note="(mean over seeds)")
    for b in summary["testable_bins"]:
        targets.check(f"hybrid_below_3d_{b}", m[f"hybrid {b}"], "<", m[f"3d {b}"], note=f"(3d, |yaw| {b}, mean over seeds)")
    return targets.finish(args.json, {
        "benchmark": "pixel_realism", "quick": args.quick, "methods": methods, "identities": len(people),
        "photos_per_identity": args.photos_per_identity, "photos": n_photos, "yaws": list(yaws),
        "background": args.background, "real_photos": args.real_photos, "seeds": seeds,
        "mean_over_seeds": {k: {"mean": v[0], "min": v[1], "max": v[2]} for k, v in summary["pixel_realism"].items()},
        "testable_bins": summary["testable_bins"],
        "runs": [{**{k: v for k, v in r.items() if k != "pixel"},
                  "pixel_realism": {m_: r["pixel"]["real_vs"][m_]["all"]["accuracy"] for m_ in methods},
                  "pixel_realism_per_bin": {m_: {b: v["accuracy"] for b, v in r["pixel"]["real_vs"][m_]["bins"].items()}
                                            for m_ in methods},
                  "controls": {k: r["pixel"]["controls"][k]["accuracy"] for k in ("real_vs_real", "real_vs_blurred")},
                  "details": r["pixel"]} for r in runs],
        "compare_seconds": wall, "out": args.out})


def parse_seeds(ap: argparse.ArgumentParser, text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        ap.error(f"--seeds expects comma-separated integers, got {text!r}")
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        ap.error(f"--seeds expects distinct non-negative integers, got {text!r}")
    return seeds


def seed_summary(runs: list[dict], methods: list[str]) -> dict:
    """(mean, min, max) over the seeds of each method's overall and per-bin pixel C2ST and of the two
    controls; a bin counts where it was testable for every method in every seed."""
    bins = [b for b in runs[0]["pixel"]["real_vs"][methods[0]]["bins"]
            if all(r["pixel"]["real_vs"][m]["bins"][b]["testable"] for r in runs for m in methods)]
    values: dict[str, list[float]] = {}
    for r in runs:
        for m in methods:
            values.setdefault(f"{m} overall", []).append(r["pixel"]["real_vs"][m]["all"]["accuracy"])
            for b in bins:
                values.setdefault(f"{m} {b}", []).append(r["pixel"]["real_vs"][m]["bins"][b]["accuracy"])
        for c in ("real_vs_real", "real_vs_blurred"):
            values.setdefault(f"control {c}", []).append(r["pixel"]["controls"][c]["accuracy"])
    def stats(v: list) -> tuple[float, float, float]:     # an untestable overall (None) counts as NaN
        a = np.array([np.nan if x is None else x for x in v], float)
        return (float(np.mean(a)), float(np.min(a)), float(np.max(a))) if np.isfinite(a).all() else (np.nan,) * 3

    return {"testable_bins": bins, "pixel_realism": {k: stats(v) for k, v in values.items()}}


if __name__ == "__main__":
    sys.exit(main())
