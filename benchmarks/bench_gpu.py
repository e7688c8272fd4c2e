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

No speed target: issue 27 asks for these figures where a GPU is lent, beside the CPU ones. The
device's results must stay near the CPU's (exit 1 otherwise): images within 0.5/255 on average,
dense-fit identity coefficients within 1e-2 (the batched-vs-one-face tolerance of the dense stage,
whose Adam steps amplify rounding). Exit 2 when the device is not there (`--device cuda` on a
machine without one). `--device cpu` runs the whole script with the CPU on both sides (a check that
it runs). The first call on a device warms it up and is not timed.

`--pack DIR` (`make_gpu_pack.py`) reads the model, the photos and their dlib faces from DIR instead
of `../shared/data` and dlib, for a GPU machine that has neither; `augment` (which detects faces
itself) is then left out.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from _common import RESULTS, face_photos, heldout_lfw_sample, machine, source_csv, write_json
from face3d.camera import Pose
from face3d.dense import refine_dense_batch
from face3d.devices import device_name, resolve_device
from face3d.errors import FaceSynthError
from face3d.fitting import FitConfig, fit_morphable_model
from face3d.image_io import load_image
from face3d.landmarks import DetectedFace, detect_faces
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


IMAGE_TOLERANCE = 0.5          # mean |GPU - CPU| over a view's pixels, /255
COEFFICIENT_TOLERANCE = 1e-2   # largest |GPU - CPU| identity coefficient of a dense fit


@dataclass
class Photos:
    """The photos the sections use, with their largest dlib face: `first` is the test photo."""

    images: list[np.ndarray]
    faces: list[DetectedFace]

    @classmethod
    def here(cls, count: int) -> "Photos":
        """The test photo and held-out LFW photos, faces found by dlib here."""
        images, faces = [], []
        sources = [p for p in face_photos() if p.name == "face_recognition_obama.jpg"] + heldout_lfw_sample(count + 16, 0)
        for p in sources:
            image = load_image(p)
            found = detect_faces(image)
            if found:
                images.append(image)
                faces.append(found[0])
            if len(faces) == count + 1:
                break
        return cls(images, faces)

    @classmethod
    def from_pack(cls, pack: Path) -> "Photos":
        rows = json.loads((pack / "faces.json").read_text())
        return cls([load_image(pack / r["file"]) for r in rows],
                   [DetectedFace(tuple(r["box"]), np.asarray(r["landmarks"], np.float64), r["detector"]) for r in rows])


def render_section(model, photos: Photos, devices, runs: int) -> dict:
    rec = reconstruct_faces(photos.images[0], model, fit_config=FitConfig(dense=False), faces=photos.faces[:1])[0]
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


def dense_section(model, photos: Photos, devices, faces: int) -> dict:
    images = photos.images[1:faces + 1]
    fits = [fit_morphable_model(im, f.landmarks, model, FitConfig(dense=False))
            for im, f in zip(images, photos.faces[1:faces + 1])]
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


def refiner_section(model, photos: Photos, devices, runs: int) -> dict:
    rec = reconstruct_faces(photos.images[0], model, fit_config=FitConfig(dense=False), faces=photos.faces[:1])[0]
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
        inp = source_csv(heldout_lfw_sample(images, 1), Path(tmp) / "photos.csv")
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
    ap.add_argument("--pack", type=Path, default=None, help="model, photos and faces from this folder (make_gpu_pack.py)")
    ap.add_argument("--json", default=str(RESULTS / "gpu.json"))
    args = ap.parse_args(argv)
    try:
        device = resolve_device(args.device)
    except FaceSynthError as exc:
        print(f"bench_gpu: {exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    devices = [torch.device("cpu"), device]
    model = load_morphable_model(None if args.pack is None else args.pack / "model")
    photos = Photos.here(args.faces) if args.pack is None else Photos.from_pack(args.pack)
    print(f"bench_gpu: {device_name(torch.device('cpu'))} ({args.threads} threads) against {device_name(device)}")
    payload = {"benchmark": "gpu", "machine": machine(), "devices": [device_name(d) for d in devices],
               "cpu_threads": args.threads, "render": render_section(model, photos, devices, args.runs),
               "dense": dense_section(model, photos, devices, args.faces),
               "refiner": refiner_section(model, photos, devices, args.runs)}
    if args.images and args.pack is None:
        payload["augment"] = augment_section(devices, args.images)
    off = [f"render {k[len('image_difference_'):]} {v:.3f}/255" for k, v in payload["render"].items()
           if k.startswith("image_difference") and v > IMAGE_TOLERANCE]
    off += [f"dense {k[len('max_coefficient_difference_'):]} {v:.2e}" for k, v in payload["dense"].items()
            if k.startswith("max_coefficient") and v > COEFFICIENT_TOLERANCE]
    if payload["refiner"]["image_difference"] > IMAGE_TOLERANCE:
        off.append(f"refiner {payload['refiner']['image_difference']:.3f}/255")
    payload["beyond_tolerance"] = off
    write_json(args.json, payload)
    if off:
        print(f"bench_gpu: the device's results differ from the CPU's beyond tolerance: {'; '.join(off)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
