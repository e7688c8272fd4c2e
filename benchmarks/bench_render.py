"""Rendering throughput of `render_views`: views per second for a batch of 32 poses at 128 and 256 px.
The full re-posing path is timed (transform, rasterize 32.7k triangles, interpolate UVs, sample the
texture atlas, composite), on a real fitted face. Median of several runs after a warm-up. Target
(issue 27, raised from issue 2's 200): >= 500 views/s at 128 px with 2 threads on the CPU; the run
exits 1 when it is missed. `--device cuda` also times the same renders on a CUDA GPU
(`render_views(..., device=)`), beside the CPU in the same run, and records the card's name; the
target stays the CPU's. On the CPU the renders are timed with the rasterizer's compiled visibility
pass (`face3d.raster_cpu`, which a batch job runs once it has loaded it) and then with its PyTorch
pass (the reference; `size_*_torch_visibility` in the JSON), in the same run; the two must render
the same images, bit for bit (exit 2 otherwise). Timings on a shared machine swing widely: note the
load average (printed) and compare runs made side by side; `--threads 1` gives the figure least
disturbed by other jobs.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

from _common import RESULTS, Targets, add_target_option, face_photos
from face3d import rasterizer as R
from face3d.camera import Pose
from face3d.devices import device_name, resolve_device
from face3d.errors import FaceSynthError
from face3d.fitting import FitConfig
from face3d.image_io import load_image
from face3d.morphable_model import load_morphable_model
from face3d.pipeline import reconstruct_faces
from face3d.render import render_views


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="also time the renders there (cuda, cuda:N); default cpu only")
    ap.add_argument("--json", default=str(RESULTS / "render.json"))
    add_target_option(ap)
    args = ap.parse_args()
    targets = Targets.from_args(args)
    torch.set_num_threads(args.threads)
    model = load_morphable_model()
    photo = [p for p in face_photos() if p.name == "face_recognition_obama.jpg"][0]
    rec = reconstruct_faces(load_image(photo), model, fit_config=FitConfig(dense=False))[0]
    rng = np.random.default_rng(0)
    poses = [Pose(float(y), float(p), 0.0) for y, p in zip(rng.uniform(-60, 60, 32), rng.uniform(-20, 20, 32))]
    try:
        devices = [torch.device("cpu")] + ([resolve_device(args.device)] if args.device != "cpu" else [])
    except FaceSynthError as exc:
        print(f"bench_render: {exc}", file=sys.stderr)
        return 2
    out = {"triangles": int(model.triangles.shape[0]), "batch": len(poses),
           "devices": [device_name(d) for d in devices]}
    out["load_average"] = list(os.getloadavg())
    print(f"render_views, batch of {len(poses)} poses, {model.triangles.shape[0]} triangles, torch threads "
          f"{torch.get_num_threads()}, load average {out['load_average'][0]:.2f}")
    # On the CPU: the compiled visibility pass (face3d.raster_cpu, what a batch job runs once it has
    # loaded it) and then, as the reference in the same run, the PyTorch pass; the images must agree.
    runs = [(d, v) for d in devices for v in (("compiled", "torch") if d.type == "cpu" else (None,))]
    images = {}
    for device, visibility in runs:
        tag = ("" if device.type == "cpu" else f"_{device.type}") + ("_torch_visibility" if visibility == "torch" else "")
        if visibility is not None:
            R.CPU_VISIBILITY = visibility
        for size in (128, 256):
            views = render_views(rec.fit, rec.texture, poses, model, size=size, device=device)  # warm-up
            images.setdefault(size, views.images)
            if device.type == "cpu" and not np.array_equal(images[size], views.images):
                print(f"bench_render: the {visibility} pass rendered other images at {size} px", file=sys.stderr)
                return 2
            times = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                render_views(rec.fit, rec.texture, poses, model, size=size, device=device)   # returns NumPy: synced
                times.append(time.perf_counter() - t0)
            med = float(np.median(times))
            out[f"size_{size}{tag}"] = {"seconds_per_batch": med, "views_per_second": len(poses) / med, "runs": times}
            label = device_name(device) + (f", {visibility} visibility" if visibility else "")
            print(f"  {label}, {size:4d} px: {len(poses) / med:7.1f} views/s  ({1000 * med / len(poses):.2f} ms/view)")
    targets.check("views_per_second_128px", out["size_128"]["views_per_second"], ">=", 500.0, " views/s")
    return targets.finish(args.json, out)


if __name__ == "__main__":
    sys.exit(main())
