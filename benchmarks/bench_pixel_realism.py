"""The pixel-level realism test (issue 25): `facesynth compare`'s `pixel_realism`, a small CNN's
classifier two-sample test on masked face crops, real LFW photos vs `3d` and `hybrid` views, per
|yaw| bin and overall, with its two controls.

    cd benchmarks && ../.venv/bin/python bench_pixel_realism.py [--photos-per-identity 2] [--real-photos 400]
                     [--yaws -60,...,60] [--methods 3d,hybrid] [--background photo|plain] [--quick]
                     [--out DIR] [--target NAME=VALUE]

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

`--quick`: 10 people x 1 photo, yaw -15,0,15, 60 real photos (a check that it runs; most bins are
not testable and the figures are noise): about 1.5 minutes.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from _common import RESULTS, Targets, add_target_option, heldout_lfw_people, identity_layout
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
    ap.add_argument("--photos-per-identity", type=int, default=2)
    ap.add_argument("--identities", type=int, default=None, help="first N held-out people (default all 51)")
    ap.add_argument("--val-identities", type=int, default=50, help="the GAN's validation identities, skipped")
    ap.add_argument("--real-photos", type=int, default=400)
    ap.add_argument("--yaws", default=YAWS, help=f"comma-separated yaws (default {YAWS})")
    ap.add_argument("--methods", default="3d,hybrid", help="comma-separated; must include 3d and hybrid for the targets")
    ap.add_argument("--background", choices=["photo", "plain"], default="photo")
    ap.add_argument("--quick", action="store_true", help="10 people x 1 photo, yaw -15,0,15, 60 real photos")
    ap.add_argument("--out", default=str(Path.home() / ".cache" / "facesynth" / "pixel_realism"))
    ap.add_argument("--json", default=str(RESULTS / "pixel_realism.json"))
    add_target_option(ap)
    args = ap.parse_args(argv)
    if args.quick:
        args.identities, args.photos_per_identity, args.yaws, args.real_photos = 10, 1, "-15,0,15", 60
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
    people = heldout_lfw_people(skip=args.val_identities)
    people = dict(list(people.items())[: args.identities])

    pixel_walls: list[float] = []
    job.pixel_realism = timed_pixel_test(pixel_walls)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        identity_layout(Path(tmp), people, args.photos_per_identity)
        options = CompareOptions(input=Path(tmp), out=Path(args.out), yaws=yaws, methods=tuple(methods),
                                 real_photos=args.real_photos, background=args.background)
        code = run_comparison(options)
    wall = time.perf_counter() - t0
    run = json.loads((Path(args.out) / "metrics.json").read_text())
    pixel = run["info"]["pixel_realism"]
    n_photos = sum(min(len(p), args.photos_per_identity) for p in people.values())
    print(f"\n{len(people)} held-out people, {n_photos} photos, yaw {args.yaws}, background {args.background}, "
          f"{run['info']['realism']['real_photos']['used']} real photos with a face; pixel C2ST accuracy "
          f"(0.5 = indistinguishable from real):")
    print_table(pixel, methods)
    pixel_wall = pixel_walls[0] if pixel_walls else None
    print(f"  pixel test wall time {pixel_wall:.1f} s (compare run {wall:.0f} s)" if pixel_wall is not None
          else "  pixel test did not run")

    targets.check("compare_exit_code", code, "==", 0)
    rr = pixel["controls"]["real_vs_real"]["accuracy"]
    targets.check("control_real_vs_real_low", rr, ">=", 0.5 - RR_TOLERANCE, note="(the test must not see a difference)")
    targets.check("control_real_vs_real_high", rr, "<=", 0.5 + RR_TOLERANCE, note="(where there is none)")
    targets.check("control_blurred", pixel["controls"]["real_vs_blurred"]["accuracy"], ">=", BLUR_MIN,
                  note="(a 1-px blur must be seen)")
    targets.check("hybrid_pixel_realism", pixel["real_vs"]["hybrid"]["all"]["accuracy"], "<=", HYBRID_MAX)
    for b, h in pixel["real_vs"]["hybrid"]["bins"].items():
        d = pixel["real_vs"]["3d"]["bins"][b]
        if h["testable"] and d["testable"]:
            targets.check(f"hybrid_below_3d_{b}", h["accuracy"], "<", d["accuracy"], note=f"(3d, |yaw| {b})")
    return targets.finish(args.json, {
        "benchmark": "pixel_realism", "quick": args.quick, "methods": methods, "identities": len(people),
        "photos_per_identity": args.photos_per_identity, "photos": n_photos, "yaws": list(yaws),
        "background": args.background, "real_photos": args.real_photos,
        "real_photos_used": run["info"]["realism"]["real_photos"]["used"],
        "pixel_realism": {m: pixel["real_vs"][m]["all"]["accuracy"] for m in methods},
        "pixel_realism_per_bin": {m: {b: v["accuracy"] for b, v in pixel["real_vs"][m]["bins"].items()}
                                  for m in methods},
        "controls": {k: pixel["controls"][k]["accuracy"] for k in ("real_vs_real", "real_vs_blurred")},
        "identity_feature_realism": {m: run["methods"][m]["all"]["realism"] for m in methods},
        "details": pixel, "exit_code": code, "pixel_test_seconds": pixel_wall, "compare_seconds": wall,
        "out": args.out})


if __name__ == "__main__":
    sys.exit(main())
