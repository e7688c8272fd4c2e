"""`facesynth augment` throughput and worker memory.

1. Throughput on the first N LFW images (sorted; default 200), 5 yaws, 128 px, `--method 3d` with the
   default fit, in source images per second: local backend with 1 and 2 workers, Ray backend (a local
   Ray started by the run) with 1 and 2 workers, side by side. Two rates per cell: `wall` over the
   whole call (pool / Ray start-up included) and `steady` between the first and the last finished
   image. Every cell must produce the same PNG bytes (checked). The runs of part 1 use `--batch-size`
   (default: augment's, 8); every cell forms the same batches when --images >= 4 x batch-size (with
   fewer, augment gives 2 workers smaller batches, whose dense fits differ within float rounding).
2. Batched against one photo at a time (issue 27), side by side on the same images in the same run:
   the local backend with 1 and 2 workers at `--batch-size 1` (the one-photo path: each photo fitted
   alone), each run right after part 1's batched run of the same worker count, the images/s of both
   and their ratio, and how far the two outputs differ (the batched fit equals the one-photo fit
   within float rounding, which the dense stage's Adam steps amplify): the largest pixel difference
   (max abs over every image, pixel and channel, out of 255), the largest mean abs difference of an
   image, the largest share of an image's pixels off by more than 2/255, and whether the bytes are
   identical. Before any timed run, a one-image warm-up run loads the models into this process (the
   1-worker runs work in it), so no cell pays that alone.
3. Memory: a run over `--rss-images` LFW images (default 1000) with 2 local workers; each worker's RSS
   and peak RSS after its first and after its last image.

The inputs are a CSV list of the LFW files where they lie; outputs go to a temp folder.
Other jobs may share the CPU: the load average is recorded before and after. Each cell also
records how long a worker spent on a source (the manifest's mean `seconds_total`, one torch thread:
about its CPU time), and before and after part 1 the script measures how much more work this
machine does with two busy processes than with one (`_common.cpu_scaling`: a Python loop and
single-threaded matrix products), which drifts from minute to minute and bounds what 2 workers gain.

Targets (issue 5), checked in the run; it exits 1 when one is missed (`--target NAME=VALUE` changes
one): per backend, 2 workers >= 1.7x the images/s of 1 worker (wall, start-up included; for Ray
issue 27's >= 1.8x); the same PNG bytes in every cell; memory flat, which this script takes as each
worker's RSS after its last image within 10% of its RSS after its first. Issue 27: at 1 and at 2
workers, the batched run writes the same files as the one-photo run, each image within a mean abs
difference of 0.5/255 and at most 2% of its pixels off by more than 2/255 (the largest single
difference is recorded, not bounded: a silhouette moved by a fraction of a pixel changes whole edge
pixels). The batched / one-photo images/s ratio is reported, not a target: issue 27's speed target
(2x the images/s of the code it measured) is checked by bench_augment_speedup.py, which runs that
code beside this one.

    python bench_augment.py [--images 200] [--rss-images 1000] [--yaw -60,-30,0,30,60] [--size 128]
                            [--batch-size 8] [--no-side-by-side]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import RESULTS, Targets, add_target_option, cpu_scaling, first_lfw_csv, write_json  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from facesynth.augment import AugmentOptions, augment, read_manifest  # noqa: E402
from facesynth.options import DEFAULT_BATCH_SIZE  # noqa: E402

#: issue 27's tolerance, how far a batched run's image may differ from the one-photo run's: mean abs
#: (out of 255), and the share of its pixels off by more than PIXEL_TOL
BATCHED_MEAN_DIFF = 0.5
BATCHED_PIXELS_OFF = 0.02
PIXEL_TOL = 2
#: issue 27: the Ray backend's images/s with 2 workers against 1 (the local backend keeps issue 5's 1.7)
RAY_SCALING = 1.8


def worker_seconds_per_image(out: Path) -> float:
    """The mean of the manifest's `seconds_total` over the sources of a run in `out`: how long a
    worker spent on one source (one torch thread: about its CPU time), whatever ran beside it."""
    per_source = {r["source"]: r["seconds_total"] for r in read_manifest(out) if r["seconds_total"] is not None}
    return round(float(np.mean(list(per_source.values()))), 4) if per_source else float("nan")


def digest(out: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(out.rglob("*.png")):
        h.update(p.relative_to(out).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def output_difference(a: Path, b: Path) -> dict:
    """How the PNGs of two output folders differ: over the files both hold, the largest abs pixel
    difference (out of 255), the largest mean abs difference of one image, the largest share of one
    image's pixels (any channel) off by more than PIXEL_TOL, how many files differ at all; whether
    the folders hold the same PNG names, and whether every PNG's bytes are identical."""
    fa = sorted(p.relative_to(a).as_posix() for p in a.rglob("*.png"))
    fb = sorted(p.relative_to(b).as_posix() for p in b.rglob("*.png"))
    out = {"max_abs_pixel_difference": 0, "max_image_mean_abs_difference": 0.0, "max_image_share_off": 0.0,
           "files_differing": 0, "files_compared": len(set(fa) & set(fb)), "same_files": fa == fb}
    for rel in sorted(set(fa) & set(fb)):
        if (a / rel).read_bytes() == (b / rel).read_bytes():
            continue
        out["files_differing"] += 1
        dx, dy = (np.asarray(Image.open(d / rel), dtype=np.int32) for d in (a, b))
        if dx.shape != dy.shape:
            out.update(max_abs_pixel_difference=255, max_image_mean_abs_difference=255.0, max_image_share_off=1.0)
            continue
        diff = np.abs(dx - dy)
        share = float((diff.reshape(diff.shape[0], diff.shape[1], -1).max(-1) > PIXEL_TOL).mean())
        out["max_abs_pixel_difference"] = max(out["max_abs_pixel_difference"], int(diff.max()))
        out["max_image_mean_abs_difference"] = round(max(out["max_image_mean_abs_difference"], float(diff.mean())), 4)
        out["max_image_share_off"] = round(max(out["max_image_share_off"], share), 5)
    out["identical_bytes"] = out["same_files"] and out["files_differing"] == 0
    return out


def one_photo_cell(inp: Path, out: Path, batched_out: Path, batched: dict, yaws, size: int, device: str) -> dict:
    """The one-photo run (`--batch-size 1`, local) at `batched`'s worker count, against that batched
    run's output `batched_out`: both rates, their ratio and the output difference."""
    load = os.getloadavg()
    t0 = time.perf_counter()
    res = augment(AugmentOptions(input=str(inp), output=str(out), yaw=yaws, size=size, workers=batched["workers"],
                                 batch_size=1, progress=False, device=device))
    wall = time.perf_counter() - t0
    one = res.processed / wall if wall > 0 else float("nan")
    return {"workers": batched["workers"], "images": res.processed, "loadavg_before": load,
            "one_photo": {"seconds": round(wall, 2), "wall_images_per_s": round(one, 4),
                          "steady_images_per_s": round(res.steady_rate, 4), "failed": res.failed_sources},
            "batched": {"batch_size": batched["batch_size"], "seconds": batched["seconds"],
                        "wall_images_per_s": batched["wall_images_per_s"],
                        "steady_images_per_s": batched["steady_images_per_s"], "failed": batched["failed"]},
            "speedup_wall": round(batched["wall_images_per_s"] / one, 3) if one > 0 else float("nan"),
            "speedup_steady": round(batched["steady_images_per_s"] / res.steady_rate, 3) if res.steady_rate > 0
            else float("nan"),
            **output_difference(batched_out, out)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--rss-images", type=int, default=1000)
    ap.add_argument("--yaw", default="-60,-30,0,30,60")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--backends", default="local,ray", help="backends to time (default local,ray)")
    ap.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                    help=f"augment --batch-size of part 1's runs (default {DEFAULT_BATCH_SIZE})")
    ap.add_argument("--no-side-by-side", dest="side_by_side", action="store_false",
                    help="skip part 2 (the one-photo runs, --batch-size 1, against the batched ones)")
    ap.add_argument("--workdir", default=None, help="temp folder for outputs (default: system temp)")
    ap.add_argument("--out", default=str(RESULTS / "augment.json"))
    ap.add_argument("--device", default="cpu",
                    help="where augment's torch stages run (cpu, the default: the figures are the CPU's; cuda on a GPU)")
    add_target_option(ap)
    args = ap.parse_args()
    targets = Targets.from_args(args)
    yaws = [float(v) for v in args.yaw.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench_augment_", dir=args.workdir))
    payload = {"config": {"images": args.images, "rss_images": args.rss_images, "backends": args.backends, "yaw": yaws, "size": args.size,
                          "method": "3d", "fit": "default (dense)", "torch_threads_per_worker": 1,
                          "batch_size": args.batch_size},
               "loadavg_start": os.getloadavg(), "throughput": [], "batched_vs_one_photo": [], "rss": None}
    try:
        inp = first_lfw_csv(args.images, work)
        digests = {}
        # warm-up: the in-process (1 worker) cells run in this process, which loads the models once;
        # without it the first timed cell pays that and the cells after it do not
        augment(AugmentOptions(input=str(inp), output=str(work / "warmup"), yaw=yaws, size=args.size, limit=1,
                               progress=False, device=args.device))
        shutil.rmtree(work / "warmup", ignore_errors=True)
        payload["cpu_scaling_start"] = cpu_scaling()
        print("2 processes vs 1 on this machine now (cpu_scaling):", payload["cpu_scaling_start"])
        print(f"throughput on the first {args.images} LFW images, {len(yaws)} yaws, {args.size} px")
        print(f"{'backend':8s} {'workers':>7s} {'wall img/s':>11s} {'steady img/s':>13s} {'seconds':>8s} {'failed':>7s}")
        backends = [b.strip() for b in args.backends.split(",") if b.strip()]
        for backend in backends:
            for workers in (1, 2):
                out = work / f"{backend}_{workers}"
                load = os.getloadavg()
                t0 = time.perf_counter()
                res = augment(AugmentOptions(input=str(inp), output=str(out), yaw=yaws, size=args.size,
                                             workers=workers, backend=backend, batch_size=args.batch_size,
                                             progress=False, device=args.device))
                wall = time.perf_counter() - t0
                digests[(backend, workers)] = digest(out)
                row = {"backend": backend, "workers": workers, "batch_size": res.batch_size, "images": res.processed,
                       "seconds": round(wall, 2),
                       "wall_images_per_s": round(res.processed / wall, 4),
                       "steady_images_per_s": round(res.steady_rate, 4),
                       "failed": res.failed_sources, "ok": res.ok_sources, "loadavg_before": load,
                       "worker_seconds_per_image": worker_seconds_per_image(out),
                       "output_sha256": digests[(backend, workers)]}
                payload["throughput"].append(row)
                print(f"{backend:8s} {workers:7d} {row['wall_images_per_s']:11.3f} {row['steady_images_per_s']:13.3f} "
                      f"{wall:8.1f} {res.failed_sources:7d}", flush=True)
                if backend == "local" and args.side_by_side:   # part 2, right after the batched run
                    cell = one_photo_cell(inp, work / f"one_photo_{workers}", out, row, yaws, args.size, args.device)
                    payload["batched_vs_one_photo"].append(cell)
                    print(f"{'  one-photo (--batch-size 1)':28s} {cell['one_photo']['wall_images_per_s']:11.3f} "
                          f"{cell['one_photo']['steady_images_per_s']:13.3f} {cell['one_photo']['seconds']:8.1f}   "
                          f"batched / one-photo {cell['speedup_wall']:.2f}x (wall); {cell['files_differing']} of "
                          f"{cell['files_compared']} images differ, by up to {cell['max_abs_pixel_difference']}/255",
                          flush=True)
                    shutil.rmtree(work / f"one_photo_{workers}", ignore_errors=True)
                shutil.rmtree(out, ignore_errors=True)
                write_json(args.out, payload)
        payload["cpu_scaling_end"] = cpu_scaling()
        print("2 processes vs 1 after the runs (cpu_scaling):", payload["cpu_scaling_end"])
        tp = {(r["backend"], r["workers"]): r for r in payload["throughput"]}
        payload["speedup_2_vs_1"] = {b: {k: round(tp[(b, 2)][k] / tp[(b, 1)][k], 3)
                                         for k in ("wall_images_per_s", "steady_images_per_s",
                                                   "worker_seconds_per_image")}
                                     for b in backends}
        if {"local", "ray"} <= set(backends):
            payload["ray_vs_local"] = {w: {k: round(tp[("ray", w)][k] / tp[("local", w)][k], 3)
                                           for k in ("wall_images_per_s", "steady_images_per_s")} for w in (1, 2)}
            print("ray / local:", payload["ray_vs_local"])
        payload["identical_outputs_across_cells"] = len(set(digests.values())) == 1
        print("speed-up 2 vs 1 workers:", payload["speedup_2_vs_1"])
        print("identical outputs in all cells:", payload["identical_outputs_across_cells"])
        for b in backends:
            slower = payload["speedup_2_vs_1"][b]["worker_seconds_per_image"]
            targets.check(f"speedup_2_vs_1_workers_{b}", payload["speedup_2_vs_1"][b]["wall_images_per_s"], ">=",
                          RAY_SCALING if b == "ray" else 1.7, "x",
                          note=f"(a source took a worker {slower:.2f}x as long with 2 workers)")
        targets.check("identical_outputs_across_cells", payload["identical_outputs_across_cells"], "==", True)
        for cell in payload["batched_vs_one_photo"]:
            w = cell["workers"]
            print(f"  batched (--batch-size {cell['batched']['batch_size']}) / one photo, {w} worker(s): "
                  f"{cell['speedup_wall']:.2f}x images/s (wall; reported, issue 27's 2x is bench_augment_speedup.py's)")
            targets.check(f"batched_vs_one_photo_image_mean_difference_{w}_workers",
                          cell["max_image_mean_abs_difference"], "<=", BATCHED_MEAN_DIFF, "/255",
                          note=f"(the worst image; largest single pixel difference {cell['max_abs_pixel_difference']}/255)")
            targets.check(f"batched_vs_one_photo_image_pixels_off_{w}_workers", cell["max_image_share_off"], "<=",
                          BATCHED_PIXELS_OFF, note=f"(the worst image's share of pixels off by > {PIXEL_TOL}/255)")
            targets.check(f"batched_vs_one_photo_same_files_{w}_workers", cell["same_files"], "==", True)
        write_json(args.out, payload)

        if args.rss_images:
            inp = first_lfw_csv(args.rss_images, work)
            out = work / "rss"
            t0 = time.perf_counter()
            res = augment(AugmentOptions(input=str(inp), output=str(out), yaw=yaws, size=args.size, workers=2,
                                         progress=False, device=args.device))
            wall = time.perf_counter() - t0
            workers = [{"pid": pid, "images": w["items"],
                        "rss_start_mb": round(w["first_rss_kb"] / 1024, 1), "rss_end_mb": round(w["last_rss_kb"] / 1024, 1),
                        "peak_rss_start_mb": round(w["first_peak_kb"] / 1024, 1),
                        "peak_rss_end_mb": round(w["last_peak_kb"] / 1024, 1)}
                       for pid, w in sorted(res.workers.items())]
            payload["rss"] = {"images": res.processed, "workers": 2, "backend": "local", "seconds": round(wall, 1),
                              "images_per_s": round(res.processed / wall, 4), "failed": res.failed_sources, "per_worker": workers}
            print(f"memory over {res.processed} images (2 local workers, {wall:.0f} s):")
            for w in workers:
                print(f"  worker {w['pid']}: {w['images']} images, RSS {w['rss_start_mb']} -> {w['rss_end_mb']} MB, "
                      f"peak {w['peak_rss_start_mb']} -> {w['peak_rss_end_mb']} MB")
            growth = max((w["rss_end_mb"] / w["rss_start_mb"] - 1 for w in workers), default=float("nan"))
            targets.check("rss_growth_max_over_workers", growth, "<=", 0.10, note="(end / start RSS - 1, the worst worker)")
        payload["loadavg_end"] = os.getloadavg()
        return targets.finish(args.out, payload)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
