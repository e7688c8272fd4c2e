"""Where `facesynth augment` spends its time: a per-stage profile on this CPU (issue 27).

    python bench_augment_profile.py [--images 20] [--methods 3d,hybrid] [--yaw -60,-30,0,30,60] [--size 128]
                                    [--batch-size 8]

The run is the real `augment` call (local backend, one worker, i.e. in this process, as
`bench_augment.py` runs it) on `--images` held-out LFW photos (`_common.heldout_lfw_sample`), 5
yaws, 128 px, the default fit (landmarks + dense). The stages are timed by wrapping the functions
that do them, in their modules, for the length of the run; nothing in the package changes:

    load         facesynth.augment.job.load_source (read + decode + checks)
    detection    dlib's HOG detector calls (face3d.landmarks._detector)
    landmarks    dlib's 68-point predictor calls (face3d.landmarks._predictor)
    landmark fit fit_morphable_model(s) minus the dense stage (PnP start, LM, residual report)
    dense fit    face3d.fitting.refine_dense / refine_dense_batch (one photo / a batch)
    texture      face3d.pipeline.extract_texture
    background   facesynth.api.view_background (the 2.5D photo mesh of --background photo)
    render       facesynth.api.render_variant (rasterize + shade the head at every pose)
    refine       ViewMaker.images (the refiner for hybrid; a no-op for 3d)
    labels       facesynth.api.view_labels + camera_record
    png encode   facesynth.augment.job.png_bytes (in the worker)
    writing      the driver's collector: files written atomically, manifest rows logged, parquet
    other        the rest of the wall time (variants, manifest rows, bookkeeping)

One warm-up run on 2 other photos first (model, dlib and weights loading are not counted). Torch and
OpenMP run with one thread, as augment's workers do. Other jobs may share the CPU: the load average
is recorded before and after. Writes benchmarks/results/augment_profile.json.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")   # before torch: one thread, as augment's workers

import argparse  # noqa: E402
import functools  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import RESULTS, heldout_lfw_sample, source_csv, write_json  # noqa: E402

import face3d.fitting as fitting_mod  # noqa: E402
import face3d.landmarks as landmarks_mod  # noqa: E402
import face3d.pipeline as pipeline_mod  # noqa: E402
import facesynth.api as api_mod  # noqa: E402
import facesynth.augment.job as job_mod  # noqa: E402
import facesynth.methods as methods_mod  # noqa: E402
from facesynth.augment import AugmentOptions, augment  # noqa: E402
from facesynth.options import DEFAULT_BATCH_SIZE  # noqa: E402

STAGES = ["load", "detection", "landmarks", "landmark fit", "dense fit", "texture", "background", "render",
          "refine", "labels", "png encode", "writing", "other"]


class StageClock:
    """Seconds and calls per wrapped function; `wrap(obj, name, key)` replaces obj.name for the run."""

    def __init__(self):
        self.seconds = defaultdict(float)
        self.calls = defaultdict(int)
        self.saved: list[tuple[object, str, object]] = []

    def timed(self, fn, key: str):
        @functools.wraps(fn)
        def run(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.seconds[key] += time.perf_counter() - t
                self.calls[key] += 1
        return run

    def wrap(self, obj, name: str, key: str) -> None:
        fn = getattr(obj, name)
        self.saved.append((obj, name, fn))
        setattr(obj, name, self.timed(fn, key))

    def wrap_factory(self, obj, name: str, key: str) -> None:
        """obj.name() returns a callable (dlib's detector / predictor): time the calls of what it returns."""
        factory = getattr(obj, name)
        self.saved.append((obj, name, factory))
        inner = self.timed(lambda *a, **k: factory()(*a, **k), key)
        setattr(obj, name, lambda: inner)

    def restore(self) -> None:
        for obj, name, fn in reversed(self.saved):
            setattr(obj, name, fn)
        self.saved.clear()

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()


def instrument(clock: StageClock) -> None:
    clock.wrap(job_mod, "load_source", "load")
    clock.wrap_factory(landmarks_mod, "_detector", "detection")
    clock.wrap_factory(landmarks_mod, "_predictor", "landmarks")
    clock.wrap(pipeline_mod, "fit_morphable_model", "fit (all)")       # one photo (--batch-size 1, or alone)
    clock.wrap(pipeline_mod, "fit_morphable_models", "fit (all)")      # a batch of photos
    clock.wrap(fitting_mod, "refine_dense", "dense fit")
    clock.wrap(fitting_mod, "refine_dense_batch", "dense fit")
    clock.wrap(pipeline_mod, "extract_texture", "texture")
    clock.wrap(api_mod, "view_background", "background")
    clock.wrap(api_mod, "render_variant", "render")
    clock.wrap(methods_mod.ViewMaker, "images", "refine")
    clock.wrap(api_mod, "view_labels", "labels")
    clock.wrap(api_mod, "camera_record", "labels")
    clock.wrap(job_mod, "png_bytes", "png encode")
    clock.wrap(job_mod._Collector, "__call__", "writing")


def stage_table(clock: StageClock, wall: float, images: int) -> list[dict]:
    s = dict(clock.seconds)
    s["landmark fit"] = s.pop("fit (all)", 0.0) - s.get("dense fit", 0.0)
    s["other"] = wall - sum(v for k, v in s.items() if k in STAGES and k != "other")
    return [{"stage": k, "seconds": round(s.get(k, 0.0), 4), "seconds_per_image": round(s.get(k, 0.0) / images, 4),
             "share": round(s.get(k, 0.0) / wall, 4)} for k in STAGES]


def profile_method(method: str, inp: Path, warm: Path, work: Path, yaws, size: int, batch_size: int) -> dict:
    clock = StageClock()
    augment(AugmentOptions(input=str(warm), output=str(work / f"warm_{method}"), yaw=yaws, size=size,
                           method=method, progress=False))
    instrument(clock)
    try:
        t0 = time.perf_counter()
        res = augment(AugmentOptions(input=str(inp), output=str(work / method), yaw=yaws, size=size,
                                     method=method, progress=False, batch_size=batch_size))
        wall = time.perf_counter() - t0
    finally:
        clock.restore()
    rows = stage_table(clock, wall, max(res.processed, 1))
    print(f"\nmethod {method}: {res.processed} images ({res.failed_sources} failed) in {wall:.1f} s, "
          f"{res.processed / wall:.3f} images/s")
    print(f"  {'stage':14s} {'seconds':>8s} {'s/image':>8s} {'share':>7s}")
    for r in rows:
        print(f"  {r['stage']:14s} {r['seconds']:8.2f} {r['seconds_per_image']:8.3f} {100 * r['share']:6.1f}%")
    return {"method": method, "images": res.processed, "failed": res.failed_sources, "wall_seconds": round(wall, 3),
            "images_per_s": round(res.processed / wall, 4), "stages": rows,
            "calls": dict(clock.calls)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--methods", default="3d,hybrid")
    ap.add_argument("--yaw", default="-60,-30,0,30,60")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                    help="augment's --batch-size (default augment's; 1: the one-photo path)")
    ap.add_argument("--out", default=str(RESULTS / "augment_profile.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    yaws = [float(v) for v in args.yaw.split(",")]
    photos = heldout_lfw_sample(args.images + 2)
    work = Path(tempfile.mkdtemp(prefix="bench_augment_profile_"))
    payload = {"config": {"images": args.images, "photos": "heldout_lfw_sample(images + 2, seed 0): the last 2 "
                          "warm up", "yaw": yaws, "size": args.size, "fit": "default (landmarks + dense)",
                          "backend": "local, 1 worker (in process)", "batch_size": args.batch_size, "torch_threads": 1,
                          "omp_num_threads": os.environ.get("OMP_NUM_THREADS")},
               "note": "2-core machine; other jobs may share it (see the load averages)",
               "loadavg_start": os.getloadavg(), "methods": []}
    try:
        inp = source_csv(photos[: args.images], work / "sources.csv")
        warm = source_csv(photos[args.images:], work / "warm.csv")
        for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
            payload["methods"].append(profile_method(method, inp, warm, work, yaws, args.size, args.batch_size))
            write_json(args.out, payload)
        payload["loadavg_end"] = os.getloadavg()
        write_json(args.out, payload)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
