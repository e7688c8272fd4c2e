"""The torch stages on a CUDA GPU against the CPU of the same machine, in one run (issue 27).

    cd benchmarks && ../.venv/bin/python bench_gpu.py [--device cuda] [--images 24] [--json PATH]

Side by side on each device (the CPU with `--threads` torch threads, then `--device`):
  render   `render_views` of a fitted head, 32 poses at 128 and 256 px: views/s (bench_render's case)
  dense    the default fit's dense stage (`refine_dense_batch`), batches of 8 and 32 faces of
           held-out LFW photos: seconds per face (the landmark fit before it is the CPU's in both)
  refiner  the hybrid method's refiner on 32 renders at 128 px: views/s
  augment  `facesynth augment` of `--images` held-out LFW images (seed 1), 5 yaws, 128 px, default fit,
           one worker: images/s (detection, landmarks, texture and the background stay on the CPU)
and how far the device's results are from the CPU's (mean absolute image difference /255, the
largest coefficient difference of the dense fits). The JSON records the card's name.

No target: issue 27 asks for these figures where a GPU is lent, beside the CPU ones. The run exits
2 when the device is not there (`--device cuda` on a machine without one), else 0. `--device cpu`
runs the whole script with the CPU on both sides (a check that it runs; the ratios are then ~1).
The first call on a device warms it up and is not timed.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import RESULTS, face_photos, heldout_lfw_sample, machine, write_json
from face3d.camera import Pose
from face3d.dense import refine_dense_batch
from face3d.devices import device_name, resolve_device
from face3d.errors import FaceSynthError
from face3d.fitting import FitConfig, fit_morphable_model
from face3d.image_io import load_image
from face3d.landmarks import detect_faces
from face3d.morphable_model import load_morphable_model
from face3d.pipeline import reconstruct_faces
from face3d.render import render_views
from facesynth.augment import AugmentOptions, augment
from ganrefine.hybrid import load_hybrid_refiner, refine_views


def timed(fn, runs: int, device: torch.device) -> float:
    """Median seconds of `fn()` over `runs` calls after one warm-up (synchronised on a GPU)."""
    fn()
    times = []
    for _ in range(runs):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def render_section(model, devices, runs: int) -> dict:
    photo = [p for p in face_photos() if p.name == "face_recognition_obama.jpg"][0]
    rec = reconstruct_faces(load_image(photo), model, fit_config=FitConfig(dense=False))[0]
    rng = np.random.default_rng(0)
    poses = [Pose(float(y), float(p), 0.0) for y, p in zip(rng.uniform(-60, 60, 32), rng.uniform(-20, 20, 32))]
    out = {}
    for size in (128, 256):
        views = {str(d): render_views(rec.fit, rec.texture, poses, model, size=size, device=d).images for d in devices}
        row = {str(d): len(poses) / timed(lambda: render_views(rec.fit, rec.texture, poses, model, size=size, device=d),
                                           runs, d) for d in devices}
        ref, other = views[str(devices[0])], views[str(devices[-1])]
        out[f"views_per_second_{size}px"] = row
        out[f"image_difference_{size}px"] = float(np.abs(ref.astype(np.float64) - other).mean())
        print(f"  render {size} px: " + ", ".join(f"{k} {v:.1f} views/s" for k, v in row.items())
              + f"; mean |difference| {out[f'image_difference_{size}px']:.3f}/255")
    return out


def dense_section(model, devices, faces: int) -> dict:
    images, fits = [], []
    for p in heldout_lfw_sample(faces + 16, 0):
        image = load_image(p)
        found = detect_faces(image)
        if found:
            images.append(image)
            fits.append(fit_morphable_model(image, found[0].landmarks, model, FitConfig(dense=False)))
        if len(fits) == faces:
            break
    out = {"faces": len(fits)}
    for batch in (8, 32):
        row, results = {}, {}
        for d in devices:
            cfg = FitConfig(device=str(d))

            def run():
                return [f for s in range(0, len(fits), batch)
                        for f in refine_dense_batch(fits[s:s + batch], images[s:s + batch], model, cfg)]

            results[str(d)] = run()
            row[str(d)] = timed(run, 1, d) / len(fits)
        a, b = results[str(devices[0])], results[str(devices[-1])]
        out[f"seconds_per_face_batch_{batch}"] = row
        out[f"max_coefficient_difference_batch_{batch}"] = float(max(np.abs(x.identity - y.identity).max()
                                                                      for x, y in zip(a, b)))
        print(f"  dense fit, batch {batch}: " + ", ".join(f"{k} {1000 * v:.0f} ms/face" for k, v in row.items())
              + f"; largest identity-coefficient difference {out[f'max_coefficient_difference_batch_{batch}']:.2e}")
    return out


def refiner_section(model, devices, runs: int) -> dict:
    photo = [p for p in face_photos() if p.name == "face_recognition_obama.jpg"][0]
    rec = reconstruct_faces(load_image(photo), model, fit_config=FitConfig(dense=False))[0]
    poses = [Pose(float(y), 0.0, 0.0) for y in np.linspace(-60, 60, 32)]
    views = render_views(rec.fit, rec.texture, poses, model, size=128)
    refiners = {str(d): load_hybrid_refiner(device=d) for d in devices}
    images = {k: refine_views(r, views) for k, r in refiners.items()}
    row = {str(d): len(poses) / timed(lambda: refine_views(refiners[str(d)], views), runs, d) for d in devices}
    diff = float(np.abs(images[str(devices[0])].astype(np.float64) - images[str(devices[-1])]).mean())
    print("  refiner, 128 px: " + ", ".join(f"{k} {v:.1f} views/s" for k, v in row.items())
          + f"; mean |difference| {diff:.3f}/255")
    return {"views_per_second": row, "image_difference": diff}


def augment_section(devices, images: int) -> dict:
    row = {}
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
        inp = Path(tmp) / "photos.csv"
        inp.write_text("path,identity\n" + "".join(f"{p},{p.parent.name}\n" for p in heldout_lfw_sample(images, 1)))
        for i, d in enumerate(devices):
            kw = dict(input=str(inp), yaw=[-60.0, -30.0, 0.0, 30.0, 60.0], size=128, workers=1, progress=False,
                      device=str(d))
            augment(AugmentOptions(output=str(Path(tmp) / f"warm_{i}"), limit=2, **kw))
            t0 = time.perf_counter()
            res = augment(AugmentOptions(output=str(Path(tmp) / f"out_{i}"), **kw))
            row[str(d)] = res.processed / (time.perf_counter() - t0)
    print(f"  augment, {images} held-out LFW images, 5 yaws, 128 px, 1 worker: "
          + ", ".join(f"{k} {v:.2f} images/s" for k, v in row.items()))
    return {"images": images, "images_per_second": row}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="the device set beside the CPU (default cuda)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the CPU side (default 2)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--faces", type=int, default=32, help="faces of the dense-fit timing (default 32)")
    ap.add_argument("--images", type=int, default=24, help="LFW images of the augment timing (default 24; 0 skips it)")
    ap.add_argument("--json", default=str(RESULTS / "gpu.json"))
    args = ap.parse_args(argv)
    try:
        device = resolve_device(args.device)
    except FaceSynthError as exc:
        print(f"bench_gpu: {exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    devices = [torch.device("cpu"), device]
    model = load_morphable_model()
    print(f"bench_gpu: {device_name(torch.device('cpu'))} ({args.threads} threads) against {device_name(device)}")
    payload = {"benchmark": "gpu", "machine": machine(), "devices": [device_name(d) for d in devices],
               "cpu_threads": args.threads, "render": render_section(model, devices, args.runs),
               "dense": dense_section(model, devices, args.faces),
               "refiner": refiner_section(model, devices, args.runs)}
    if args.images:
        payload["augment"] = augment_section(devices, args.images)
    write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
