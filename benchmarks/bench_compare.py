"""The seed's thesis on held-out identities (issue 6): 3D vs GAN-only vs hybrid with `facesynth compare`.

Input: the held-out LFW identities with several photos that chose no checkpoint of the GAN (the
multi-photo held-out identities after its first 50 validation ones; `ganrefine.pose_pairs`),
`--photos-per-identity` photos each, laid out as `compare` expects (symlinks in a temporary folder).
`facesynth compare` runs in this process with its defaults (landmarks + dense fit, 128 px) on
yaw -60..60 and writes its report to `--out` (default ~/.cache/facesynth/compare_heldout); this
script prints the per-method table and the thesis checks, writes benchmarks/results/compare.json
and the figure assets/figures/compare_plots.png (docs/benchmarks.md) (the report's own plot).

Thesis (issue 6): hybrid identity_to_source <= 3d + 0.02 and < gan; |hybrid realism - 0.5| < |3d realism - 0.5|.
These three are the targets, checked on the run's metrics (and `compare` must exit 0); the run exits 1
when one is missed (`--target NAME=VALUE` changes one). docs/benchmarks.md reports the last two as not shown
by the current weights, so a full run exits 1. The identity comparison at the asked pose is printed
as a diagnosis, not checked.
"""
from __future__ import annotations

import argparse
import base64
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import RESULTS, ROOT, Targets, add_target_option, heldout_lfw_people, identity_layout

YAWS = "-60,-45,-30,-15,0,15,30,45,60"
POSE_OK = 10.0


def report_grid_screenshot(report: Path, png: Path, person: int = 1) -> dict:
    """Open the report in headless Chromium (the check that it loads, images and plot included) and
    save one person's image grid as the docs/benchmarks.md figure; skipped without a chromium executable."""
    import shutil

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        return {"skipped": "no chromium executable"}
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-dev-shm-usage"])
        page = browser.new_page(viewport={"width": 1500, "height": 900})
        page.goto(report.resolve().as_uri())
        page.wait_for_load_state("load")
        loaded = page.evaluate("Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0).length")
        total = page.evaluate("document.images.length")
        name = page.locator("h2").all_inner_texts()[1 + person]
        page.locator(f"xpath=//h2[text()='{name}']/following-sibling::table[1]").screenshot(path=str(png))
        browser.close()
    return {"images_loaded": loaded, "images": total, "figure": str(png), "person": name}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos-per-identity", type=int, default=2)
    ap.add_argument("--val-identities", type=int, default=50, help="the GAN's validation identities, skipped")
    ap.add_argument("--real-photos", type=int, default=400)
    ap.add_argument("--out", default=str(Path.home() / ".cache" / "facesynth" / "compare_heldout"))
    ap.add_argument("--skip-run", action="store_true", help="summarise the metrics.json already in --out")
    add_target_option(ap)
    args = ap.parse_args()
    targets = Targets.from_args(args)

    from facesynth import compare
    from facesynth.cli import main as cli

    people = heldout_lfw_people(skip=args.val_identities)
    ids = list(people)
    t0 = time.time()
    code = None
    if not args.skip_run:
        with tempfile.TemporaryDirectory() as tmp:
            identity_layout(Path(tmp), people, args.photos_per_identity)
            code = cli(["compare", tmp, "--yaw", YAWS, "--methods", "3d,gan,hybrid", "--real-photos",
                        str(args.real_photos), "--out", args.out])
    wall = time.time() - t0
    if args.skip_run and (RESULTS / "compare.json").exists():  # keep the figures of the run being summarised
        old = json.loads((RESULTS / "compare.json").read_text())
        code, wall = old.get("exit_code"), old.get("wall_seconds", wall)
    data = json.loads((Path(args.out) / "metrics.json").read_text())
    m = data["methods"]
    names = compare.METRIC_NAMES
    f = lambda v, d=3: "  null" if v is None else f"{v:.{d}f}"  # noqa: E731  (null: most views without a face)
    print(f"\n{len(ids)} held-out identities x {args.photos_per_identity} photos, yaw {YAWS}; compare exit {code}; "
          f"{wall / 60:.1f} min")
    print(f"{'method':<8} " + " ".join(f"{n:>20}" for n in names))
    for k, v in m.items():
        print(f"{k:<8} " + " ".join(f"{f(v['all'][n]):>20}" for n in names))
    print("\nper yaw (identity_to_source / realism / pose_error):")
    for y in YAWS.split(","):
        print(f"  yaw {y:>4}: " + "   ".join(
            f"{k} {f(v['per_yaw'][y]['identity_to_source'])}/{f(v['per_yaw'][y]['realism'])}/"
            f"{f(v['per_yaw'][y]['pose_error'], 1)}" for k, v in m.items()))
    h, d3, g = m["hybrid"]["all"], m["3d"]["all"], m["gan"]["all"]
    checks = {
        "hybrid_identity_within_3d_plus_0.02": h["identity_to_source"] <= d3["identity_to_source"] + 0.02,
        "hybrid_identity_better_than_gan": h["identity_to_source"] < g["identity_to_source"],
        "hybrid_realism_closer_to_half_than_3d": abs(h["realism"] - 0.5) < abs(d3["realism"] - 0.5),
    }
    # identity_to_source rewards a view that does not turn the head (it stays closer to the source
    # photo): the same median over the views whose estimated pose is within POSE_OK degrees of the
    # asked one, from compare's per-view table
    rows = list(csv.DictReader((Path(args.out) / "views.csv").open()))
    posed = {}
    for k in m:
        d = [float(r["identity_to_source"]) for r in rows if r["method"] == k and r["pose_error"]
             and float(r["pose_error"]) <= POSE_OK and r["identity_to_source"]]
        n = sum(r["method"] == k for r in rows)
        posed[k] = {"identity_to_source": float(np.median(d)) if d else None, "views": len(d), "of": n}
        print(f"{k}: {len(d)}/{n} views within {POSE_OK:g} deg of the asked pose, median identity distance "
              f"{f(posed[k]['identity_to_source'])}")
    checks["hybrid_identity_better_than_gan_at_the_asked_pose"] = (
        posed["gan"]["identity_to_source"] is None
        or posed["hybrid"]["identity_to_source"] < posed["gan"]["identity_to_source"])
    for k, ok in checks.items():
        print(f"{k}: {'yes' if ok else 'NO'}")
    if code is not None or not args.skip_run:  # --skip-run without an earlier compare.json: exit code unknown
        targets.check("compare_exit_code", code, "==", 0)
    targets.check("hybrid_identity_to_source", h["identity_to_source"], "<=", d3["identity_to_source"] + 0.02,
                  note="(target: 3d's + 0.02, this run)")
    targets.check("hybrid_identity_to_source_vs_gan", h["identity_to_source"], "<", g["identity_to_source"],
                  note="(target: gan's, this run)")
    targets.check("hybrid_realism_distance_from_half", abs(h["realism"] - 0.5), "<", abs(d3["realism"] - 0.5),
                  note="(target: 3d's |realism - 0.5|, this run)")
    plot = compare.plots_uri(m, list(m), YAWS.split(","))
    if plot:
        fig = ROOT / "assets" / "figures" / "compare_plots.png"
        fig.write_bytes(base64.b64decode(plot.split(",", 1)[1]))
        print(f"wrote {fig}")
    grid = report_grid_screenshot(Path(args.out) / "report.html", ROOT / "assets" / "figures" / "compare_grid.png")
    print(f"report opened in headless Chromium: {grid}")
    return targets.finish(RESULTS / "compare.json", {"identities": len(ids), "photos_per_identity": args.photos_per_identity,
                                                     "yaws": YAWS, "exit_code": code, "wall_seconds": round(wall, 1),
                                                     "metrics": m, "info": data["info"], "thesis": checks,
                                                     "identity_within_pose_ok": {"pose_ok_degrees": POSE_OK, **posed},
                                                     "report": str(Path(args.out) / "report.html"),
                                                     "browser_check": grid})


if __name__ == "__main__":
    sys.exit(main())
