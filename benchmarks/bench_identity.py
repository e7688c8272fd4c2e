"""Benchmark of the PyTorch port of dlib's face-recognition ResNet against dlib itself.

Builds a batch of 32 aligned 150x150 chips (dlib's ``get_face_chip(img, shape, 150, 0.25)``
of every photo in shared/data/faces, repeated to fill the batch) and times, side by side in
the same run (interleaved, so both see the same machine load):

* ``torch``: ``IdentityEncoder.embed_chips`` on the whole batch (``torch.inference_mode``), at
  torch's default thread count and with one thread;
* ``dlib``: ``face_recognition_model_v1.compute_face_descriptor`` on the same chips (batch call).

Median of several runs after a warm-up, printed as descriptors/s and written to JSON together
with the parity figures on shared/data/faces: max |difference| and min cosine of the
descriptors on dlib's chips, the max distance to dlib's descriptor through the torch alignment
from the full photo, and the agreement of same/different decisions at 0.6 on every pair.

    .venv/bin/python benchmarks/bench_identity.py [--json PATH] [--runs N] [--batch 32]

OpenMP threads that spin while waiting starve everything else on a small shared machine (and
are starved by it: on 2 busy cores torch's 2-thread timing degrades several-fold). Unless
OMP_WAIT_POLICY is already set, this script sets it to PASSIVE before importing torch; the
policy in effect is printed and recorded in the JSON.

Targets (issue 7), checked in the run; it exits 1 when one is missed (`--target NAME=VALUE` changes
one): on the same chips max |difference| <= 1e-5 and min cosine >= 0.99999; through the torch
alignment, max distance to dlib's descriptor <= 0.02; same/different decisions at 0.6 agree with
dlib's on every pair; the port's best throughput >= 15x dlib's.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import Targets, add_target_option  # noqa: E402
from face3d.image_io import load_image  # noqa: E402
from face3d.landmarks import detect_faces, model_file  # noqa: E402
from ganrefine.identity import MODEL_NAME, SAME_PERSON_THRESHOLD, IdentityEncoder, image_tensor  # noqa: E402

DEFAULT_FACES = ROOT.parent / "shared" / "data" / "faces"


def collect(faces_dir: Path, rec, dlib):
    items = []
    for path in sorted(faces_dir.glob("*/*.jpg")):
        img = load_image(path)
        found = detect_faces(img)
        if not found:
            print(f"  (no face in {path.name}; skipped)")
            continue
        face = found[0]
        shape = dlib.full_object_detection(
            dlib.rectangle(*face.box), [dlib.point(int(x), int(y)) for x, y in face.landmarks])
        chip = dlib.get_face_chip(img, shape, size=150, padding=0.25)
        desc = np.array(rec.compute_face_descriptor(chip), dtype=np.float64)
        items.append(dict(name=f"{path.parent.name}/{path.name}", image=img, landmarks=face.landmarks,
                          chip=chip, desc=desc))
    return items


def parity(encoder: IdentityEncoder, items) -> dict:
    chips = torch.from_numpy(np.stack([it["chip"] for it in items])).permute(0, 3, 1, 2).float()
    theirs = np.stack([it["desc"] for it in items])
    with torch.inference_mode():
        ours = encoder.embed_chips(chips).double().numpy()
        aligned = encoder.embed([image_tensor(it["image"]) for it in items],
                                [it["landmarks"] for it in items]).double().numpy()
    cos = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    align_dist = np.linalg.norm(aligned - theirs, axis=1)
    pairs = list(itertools.combinations(range(len(items)), 2))
    agree, same_dlib, closest = 0, 0, np.inf
    for i, j in pairs:
        d_dlib = np.linalg.norm(theirs[i] - theirs[j])
        d_port = np.linalg.norm(aligned[i] - aligned[j])
        same_dlib += d_dlib < SAME_PERSON_THRESHOLD
        agree += (d_dlib < SAME_PERSON_THRESHOLD) == (d_port < SAME_PERSON_THRESHOLD)
        closest = min(closest, abs(d_dlib - SAME_PERSON_THRESHOLD))
    return {
        "photos": len(items),
        "chips_max_abs_diff": float(np.abs(ours - theirs).max()),
        "chips_min_cosine": float(cos.min()),
        "alignment_max_distance_to_dlib": float(align_dist.max()),
        "alignment_mean_distance_to_dlib": float(align_dist.mean()),
        "pairs": len(pairs),
        "pairs_same_by_dlib": int(same_dlib),
        "verification_agreement": f"{agree}/{len(pairs)}",
        "verification_agreement_fraction": agree / len(pairs),
        "closest_dlib_distance_to_threshold": float(closest),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "identity.json"),
                    help="where to write the results (default: benchmarks/results/identity.json)")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per method (median reported)")
    ap.add_argument("--batch", type=int, default=32, help="chips per batch")
    ap.add_argument("--faces", default=str(DEFAULT_FACES), help="folder of <identity>/*.jpg photos")
    add_target_option(ap)
    args = ap.parse_args(argv)
    targets = Targets.from_args(args)

    import dlib

    default_threads = torch.get_num_threads()
    load_before = os.getloadavg()
    rec = dlib.face_recognition_model_v1(str(model_file(MODEL_NAME)))
    t0 = time.perf_counter()
    encoder = IdentityEncoder.load()
    load_s = time.perf_counter() - t0

    print(f"collecting chips from {args.faces} ...")
    items = collect(Path(args.faces), rec, dlib)
    if not items:
        print("no faces found", file=sys.stderr)
        return 1
    chips_np = [items[i % len(items)]["chip"] for i in range(args.batch)]
    chips = torch.from_numpy(np.stack(chips_np)).permute(0, 3, 1, 2).float()

    def run_torch(threads: int) -> float:
        torch.set_num_threads(threads)
        with torch.inference_mode():
            t = time.perf_counter()
            encoder.embed_chips(chips)
            return time.perf_counter() - t

    def run_dlib() -> float:
        t = time.perf_counter()
        rec.compute_face_descriptor(chips_np)
        return time.perf_counter() - t

    configs = {f"torch_{default_threads}_threads": default_threads}
    if default_threads != 1:
        configs["torch_1_thread"] = 1
    for threads in configs.values():  # warm-up (oneDNN primitive creation)
        run_torch(threads)
    run_dlib()
    times: dict[str, list[float]] = {name: [] for name in [*configs, "dlib"]}
    for _ in range(args.runs):  # interleaved: every method sees the same machine load
        for name, threads in configs.items():
            times[name].append(run_torch(threads))
        times["dlib"].append(run_dlib())
    torch.set_num_threads(default_threads)

    speed = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        speed[name] = {"median_s_per_batch": med, "ms_per_chip": med / args.batch * 1e3,
                       "descriptors_per_s": args.batch / med, "runs_s": ts}
    dlib_rate = speed["dlib"]["descriptors_per_s"]
    for name in configs:
        speed[name]["speedup_vs_dlib"] = speed[name]["descriptors_per_s"] / dlib_rate
    best = max(configs, key=lambda n: speed[n]["descriptors_per_s"])

    print(f"\nthroughput, batch of {args.batch} chips, median of {args.runs} runs "
          f"(load average before: {load_before[0]:.2f}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')})")
    print(f"  {'method':<18} {'ms/chip':>9} {'desc/s':>9} {'vs dlib':>8}")
    for name in [*configs, "dlib"]:
        s = speed[name]
        ratio = f"{s['speedup_vs_dlib']:.1f}x" if "speedup_vs_dlib" in s else ""
        print(f"  {name:<18} {s['ms_per_chip']:>9.2f} {s['descriptors_per_s']:>9.1f} {ratio:>8}")

    par = parity(encoder, items)
    print(f"\nparity on {par['photos']} photos of {args.faces}:")
    print(f"  same chips:       max |diff| {par['chips_max_abs_diff']:.2e}, min cosine {par['chips_min_cosine']:.8f}")
    print(f"  torch alignment:  max distance to dlib's descriptor {par['alignment_max_distance_to_dlib']:.5f} "
          f"(mean {par['alignment_mean_distance_to_dlib']:.5f})")
    print(f"  verification @0.6: {par['verification_agreement']} pairs agree "
          f"({par['pairs_same_by_dlib']} same-person pairs by dlib; closest dlib distance to 0.6: "
          f"{par['closest_dlib_distance_to_threshold']:.3f})")

    targets.check("chips_max_abs_diff", par["chips_max_abs_diff"], "<=", 1e-5)
    targets.check("chips_min_cosine", par["chips_min_cosine"], ">=", 0.99999)
    targets.check("alignment_max_distance_to_dlib", par["alignment_max_distance_to_dlib"], "<=", 0.02)
    targets.check("verification_agreement_fraction", par["verification_agreement_fraction"], ">=", 1.0,
                  note=f"({par['verification_agreement']} pairs)")
    targets.check("speedup_vs_dlib", speed[best]["speedup_vs_dlib"], ">=", 15.0, "x", note=f"({best})")
    result = {
        "benchmark": "identity",
        "batch": args.batch,
        "runs": args.runs,
        "speed": speed,
        "best_torch": best,
        "speedup_vs_dlib": speed[best]["speedup_vs_dlib"],
        "parity": par,
        "weights_load_s": load_s,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "torch_default_threads": default_threads,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "dlib": getattr(dlib, "__version__", "?"),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
    }
    def write(path, payload):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"\nwrote {path}")

    return targets.finish(args.json, result, write=write)


if __name__ == "__main__":
    sys.exit(main())
