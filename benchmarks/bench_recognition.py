"""Recognition via synthesis on held-out LFW identities (issue 6): no synthesis vs 3D, GAN and hybrid.

Identities: the held-out identities of the refiner's and the GAN's split (`ganrefine.pairs.split_identities`,
seed 0, 300 held out) that have at least two LFW photos, up to 6 photos each
(`ganrefine.pose_pairs.split_pose_photos`). No generator was trained on them; some of them served
to choose checkpoints (the refiner's validation pairs: the first 100 held-out identities by name;
the GAN's: the first 50 of these multi-photo ones), which is selection, not training.
Gallery: each person's first photo (sorted by file name); probes: the others.

Every photo is fitted once as `facesynth compare` does (landmarks + dense stage) and its descriptor
computed on the photo itself (dlib HOG detection, 68 landmarks, the torch port of dlib's ResNet).
Views are generated at 128 px like `compare`; a view's descriptor comes from dlib detection on the
view. A gallery view where dlib finds no face is left out of the set; a frontalised probe where
dlib finds no face keeps the probe photo's own descriptor (counted as `frontal_fallbacks`).
See `ganrefine.recognition` for the conditions and measures.

No target: issue 6 asks for this table, not for a figure in it; the script exits 0 unless it fails
to run.

    python bench_recognition.py [--methods 3d,gan,hybrid] [--gallery-yaws -45,-30,-15,15,30,45]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from _common import RESULTS, heldout_lfw_people, write_json
from face3d.camera import Pose
from face3d.errors import FaceSynthError
from face3d.fitting import FitConfig
from face3d.image_io import load_image
from face3d.morphable_model import default_data_dir, load_morphable_model
from face3d.pipeline import reconstruct_faces
from facesynth.api import RenderOptions, render_face
from facesynth.compare import FaceEncoder, detect_view_face
from facesynth.methods import load_method
from ganrefine.recognition import YAW_BINS, score_condition, set_distances


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="3d,gan,hybrid")
    ap.add_argument("--gallery-yaws", default="-45,-30,-15,15,30,45")
    ap.add_argument("--lfw", default=None)
    ap.add_argument("--max-identities", type=int, default=None, help="first N held-out identities (quick runs)")
    ap.add_argument("--no-dense", dest="dense", action="store_false", default=True)
    ap.add_argument("--out", default=str(RESULTS / "recognition.json"))
    args = ap.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    yaws = [float(y) for y in args.gallery_yaws.split(",")]
    lfw = Path(args.lfw) if args.lfw else default_data_dir() / "lfw" / "images"

    by_id = heldout_lfw_people(lfw=lfw)
    ids = list(by_id)[: args.max_identities]

    model = load_morphable_model()
    makers = {m: load_method(m) for m in methods}
    enc = FaceEncoder()
    gal_poses = [Pose(y, 0.0, 0.0) for y in yaws]
    front = [Pose(0.0, 0.0, 0.0)]

    def view_descs(imgs):
        found = [(im, f.landmarks) for im in imgs if (f := detect_view_face(im)) is not None]
        if not found:
            return np.zeros((0, 128))
        return enc.encode([a for a, _ in found], [b for _, b in found])[0]

    gallery: dict[str, dict] = {}      # identity -> {"photo": desc, m: (n, 128)}
    probes: list[dict] = []            # {"identity", "yaw", "photo": desc, m: desc, "fallback_m": bool}
    failures, seconds = [], {m: 0.0 for m in methods}
    t_all = time.time()
    from tqdm import tqdm

    for ident in tqdm(ids, desc="recognition", unit="person"):
        for k, path in enumerate(sorted(by_id[ident])):
            src = str(path)
            try:
                image = load_image(path)
                rec = reconstruct_faces(image, model, fit_config=FitConfig(dense=args.dense), source=src)[0]
                own = enc.encode([image], [rec.face.landmarks])[0][0]
            except FaceSynthError as exc:
                failures.append(str(exc))
                continue
            is_gallery = ident not in gallery
            row = {"identity": ident, "yaw": float(rec.fit.pose.yaw), "photo": own}
            for m in methods:
                t0 = time.perf_counter()
                imgs = render_face(rec, image, model, gal_poses if is_gallery else front,
                                   RenderOptions(method=m, size=128, dense=args.dense), makers[m])[0].images
                seconds[m] += time.perf_counter() - t0
                d = view_descs(list(imgs))
                if is_gallery:
                    row[m] = d
                else:
                    row[f"fallback_{m}"] = len(d) == 0
                    row[m] = own if len(d) == 0 else d[0]
            if is_gallery:
                gallery[ident] = row
            else:
                probes.append(row)

    g_ids = np.array(list(gallery))
    p_ids = np.array([p["identity"] for p in probes])
    p_yaw = np.array([p["yaw"] for p in probes])
    p_photo = np.stack([p["photo"] for p in probes])
    base_sets = [gallery[g]["photo"][None] for g in g_ids]
    results = {"none": score_condition(set_distances(p_photo, base_sets), p_ids, g_ids, p_yaw)}
    extra = {}
    for m in methods:
        aug_sets = [np.concatenate([gallery[g]["photo"][None], gallery[g][m]]) for g in g_ids]
        results[f"gallery+{m}"] = score_condition(set_distances(p_photo, aug_sets), p_ids, g_ids, p_yaw)
        p_front = np.stack([p[m] for p in probes])
        results[f"frontal+{m}"] = score_condition(set_distances(p_front, base_sets), p_ids, g_ids, p_yaw)
        extra[m] = {"gallery_views_with_face": int(sum(len(gallery[g][m]) for g in g_ids)),
                    "gallery_views": len(g_ids) * len(yaws),
                    "frontal_fallbacks": int(sum(p[f"fallback_{m}"] for p in probes)),
                    "generator_seconds": round(seconds[m], 1)}

    bins = [f"{lo:g}-{hi:g}" for lo, hi in YAW_BINS]
    print(f"\n{len(g_ids)} gallery identities, {len(probes)} probes; probe |yaw| bins: "
          + ", ".join(f"{b}: {results['none']['per_yaw_bin'][b]['probes']}" for b in bins))
    head = f"{'condition':<16} {'rank-1':>7} {'verif':>7} {'AUC':>7} | " + " ".join(f"{'r1 ' + b:>10}" for b in bins)
    print(head)
    print("-" * len(head))
    for name, r in results.items():
        a = r["all"]
        print(f"{name:<16} {a['rank1']:7.3f} {a['verification']:7.3f} {a['auc']:7.3f} | "
              + " ".join(f"{r['per_yaw_bin'][b]['rank1']:10.3f}" for b in bins))
    for m, e in extra.items():
        print(f"{m}: {e['gallery_views_with_face']}/{e['gallery_views']} gallery views with a face, "
              f"{e['frontal_fallbacks']} frontal fallbacks, {e['generator_seconds']} s generating")
    write_json(args.out, {
        "protocol": __doc__.split("\n\n")[1:4], "identities": len(g_ids), "probes": len(probes),
        "gallery_yaws": yaws, "dense": args.dense, "methods": methods, "results": results, "per_method": extra,
        "failures": failures, "wall_seconds": round(time.time() - t_all, 1), "torch_threads": torch.get_num_threads()})


if __name__ == "__main__":
    main()
