"""Profiles in, views out to +-90 (issue 26): detection of turned faces with dlib's HOG detector
alone and with its CNN detector as the fallback, the fit of a profile photo and its frontalised
view, and what views at yaw -90..90 keep.

    cd benchmarks && ../.venv/bin/python bench_profiles.py [--n-lfw 20] [--n-heldout 10]
                     [--parts a,b] [--quick] [--json PATH] [--target NAME=VALUE]

(a) Profiles in. LFW holds no true profiles, so the inputs are
  - the toolkit's own `3d` views of the 17 test photos (../shared/data/faces) at yaw -90, -75, 75, 90
    and, as a control, -60 and 60: each photo fitted once (default fit), rendered at 256 px with the
    whole-photo background (the default), saved as PNG and read back as a photo;
  - the `--n-lfw` LFW photos with the largest fitted |yaw| among the people with at least two
    photos (`lfw_profile_candidates`: dlib landmarks + PnP on every such photo, cached under
    ~/.cache/facesynth/profiles; the `3 * n` most turned are fitted with the default fit and the
    `n` with the largest fitted |yaw| kept).
  Per input: HOG alone finds a face or not, HOG with the CNN fallback ("auto", the default) finds
  one or not, the default fit succeeds (fitted); the fitted yaw against the view's yaw (test views)
  with the profile weighting of the fit (default) and without it (`FitConfig(profile_weighting=False)`,
  same detections), and with dlib's 68-point predictor's points alone ("dlib68": the fit before the
  toolkit's predictor for turned faces, `face3d.landmarks.PROFILE_TURN`); the frontalised view
  (`rotate --yaw 0 --method 3d --size 256`, i.e. `render_face` at Pose(0, 0, 0)). Identity (dlib's
  descriptor, `ganrefine.identity.IdentityEncoder`, faces aligned by dlib's own 68 points): against
  each *other* photo of the same person (the test person's other photos; up to 5 other
  LFW photos), the median distance of the frontalised view and of the profile input itself (its
  own detection and dlib's 68 points; no face = inf). A bin's figures are medians over its inputs.
  Whether the frontalised view is frontal (`frontal_view_yaw`: dlib's HOG detector and 68 points on
  it, PnP against the fit; the share within FRONTAL_VIEW_DEG = 15 degrees of yaw 0, and the median
  |yaw|): a fit that read a profile as near frontal leaves the view turned, close to the input.
(b) Views out to +-90. The 17 test photos and `--n-heldout` held-out LFW photos
  (`_common.heldout_lfw_sample`, as `bench_whole_photo.py`) rendered with methods 3d and hybrid at
  128 px (default background), yaw -90..90 in 15 degree steps. Per method and yaw: dlib's detection
  rate with HOG alone and with the CNN fallback, and the identity distance to the source photo
  where a face is found (auto detection) and the share under 0.6 (no face = a miss).
The CNN detector's cost per photo (`face3d.landmarks.cnn_boxes`, the photo at 384 px) is timed on
the inputs of (a).

Targets (checked in the run; exit 1 when one is missed; `--target NAME=VALUE` changes one):
- cnn_fallback_detects_75: HOG + CNN finds the face in >= 90% of the +-75 test views;
- frontal_below_profile_<bin>: per yaw bin (|yaw| 75, 90, and the LFW set), the median distance
  of the frontalised view to another photo < the median distance of the profile input itself;
- weighting_yaw_error_<bin>: at |yaw| 75 and 90, the median |yaw error| of the fit with the profile
  weighting <= without it;
- turned_landmarks_yaw_error_<bin>: at |yaw| 75 and 90, the median |yaw error| of the default fit
  <= the fit of dlib's 68-point predictor's points;
- frontal_fits_unchanged: the 17 test photos' own fits are the same numbers with and without the
  profile weighting (the photos are near frontal, under its 30 degree start).

`--quick`: 3 test photos, 3 LFW photos, 2 held-out, yaw -90,-45,0,45,90 in (b) (a check that it
runs, not figures). The full run takes about 30-40 minutes on this project's 2-core machine, the
first one 10-20 minutes more for the LFW scan.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from _common import RESULTS, Targets, add_target_option, face_photos, heldout_lfw_sample, largest_face, lfw_dir
from face3d.camera import Pose
from face3d.fitting import FitConfig
from face3d.image_io import load_image, save_png
from face3d.landmarks import CNN_WORK_SIDE, cnn_boxes, cnn_face, detect_faces
from face3d.morphable_model import load_morphable_model
from face3d.pipeline import reconstruct_faces
from face3d.pose_estimation import photo_pose, view_pose_reference
from facesynth.api import RenderOptions, render_face
from facesynth.compare.metrics import detect_view_face
from facesynth.compare.report import json_ready
from facesynth.methods import load_method
from ganrefine.identity import IdentityEncoder, image_tensor

CACHE = Path.home() / ".cache" / "facesynth" / "profiles"
PROFILE_YAWS = [-90, -75, -60, 60, 75, 90]
VIEW_YAWS = list(range(-90, 91, 15))
INPUT_SIZE = 256
THRESHOLD = 0.6
INF = float("inf")
FRONTAL_VIEW_DEG = 15.0          # a frontalised view within this |yaw| of 0 (HOG + PnP) is frontal


def median(values) -> float:
    v = [float(x) for x in values]
    return statistics.median(v) if v else float("nan")


class Identity:
    """dlib's descriptor of the largest face of an image, cached per file: dlib's own pipeline (its
    detectors and 68-point predictor), never the toolkit's predictor for turned faces."""

    def __init__(self):
        self.encoder = IdentityEncoder.load()
        self.cache: dict[str, np.ndarray | None] = {}

    def of_face(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.encoder.embed([image_tensor(image)], [landmarks]).double().numpy()[0]

    def of_image(self, image: np.ndarray, detector: str = "auto") -> np.ndarray | None:
        faces = detect_faces(np.ascontiguousarray(image), detector=detector, profile_landmarks=False)
        return self.of_face(image, faces[0].landmarks) if faces else None

    def of_file(self, path: Path) -> np.ndarray | None:
        key = str(path)
        if key not in self.cache:
            self.cache[key] = self.of_image(load_image(path))
        return self.cache[key]

    @staticmethod
    def distance(a: np.ndarray | None, b: np.ndarray | None) -> float:
        return INF if a is None or b is None else float(np.linalg.norm(a - b))


# ------------------------------------------------------------------------------------------
# inputs of (a)


def test_profile_inputs(model, photos: list[Path], out: Path, backgrounds: list[str], reuse: bool = False) -> list[dict]:
    """The `3d` views of the test photos at PROFILE_YAWS (256 px) over each of `backgrounds` as PNG
    files (`reuse`: the files a run wrote before, where they exist); the bins of the plain ones are
    named plain_<|yaw|>."""
    maker = load_method("3d")
    poses = [Pose(float(y), 0.0, 0.0) for y in PROFILE_YAWS]
    inputs = []
    for ph in photos:
        rec = None
        others = [p for p in sorted(ph.parent.glob("*.jpg")) if p != ph]
        for bg in backgrounds:
            paths = [out / f"{ph.stem}_{bg}_yaw{int(pose.yaw):+d}.png" for pose in poses]
            if not (reuse and all(p.is_file() for p in paths)):
                if rec is None:
                    image = load_image(ph)
                    rec = reconstruct_faces(image, model, source=str(ph))[0]
                options = RenderOptions(method="3d", size=INPUT_SIZE, background=bg)
                for path, img in zip(paths, render_face(rec, image, model, poses, options, maker)[0].images):
                    save_png(path, img)
            prefix = "" if bg == "photo" else f"{bg}_"
            for pose, path in zip(poses, paths):
                inputs.append({"set": "faces", "background": bg, "bin": f"{prefix}{abs(int(pose.yaw))}",
                               "yaw": pose.yaw, "path": path, "source": ph, "others": others})
    return inputs


def lfw_yaw_scan(model, rescan: bool = False) -> list[dict]:
    """dlib (auto) + PnP yaw of every photo of the LFW people with at least two photos, cached."""
    path = CACHE / "lfw_yaw_scan.json"
    if path.is_file() and not rescan:
        return json.loads(path.read_text())
    people = [d for d in sorted(lfw_dir().iterdir()) if len(list(d.glob("*.jpg"))) >= 2]
    rows, t0 = [], time.perf_counter()
    for k, d in enumerate(people):
        for ph in sorted(d.glob("*.jpg")):
            image = load_image(ph)
            faces = detect_faces(image, detector="auto")
            if faces:
                rows.append({"photo": str(ph.relative_to(lfw_dir())), "detector": faces[0].detector,
                             "pnp_yaw": photo_pose(faces[0].landmarks, model, image.shape[:2]).yaw})
        if k % 100 == 0:
            print(f"  LFW scan: {k}/{len(people)} people, {time.perf_counter() - t0:.0f} s", flush=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows))
    return rows


def lfw_profile_inputs(model, n: int, rescan: bool = False) -> list[dict]:
    """The `n` LFW photos with the largest fitted |yaw| (default fit) among the 3n most turned by PnP."""
    scan = sorted(lfw_yaw_scan(model, rescan), key=lambda r: -abs(r["pnp_yaw"]))[: 3 * n]
    fitted = []
    for r in scan:
        ph = lfw_dir() / r["photo"]
        rec = largest_face(load_image(ph), model, ph)
        if rec is None:
            continue
        fitted.append((abs(rec.fit.pose.yaw), rec.fit.pose.yaw, r, ph))
    fitted.sort(key=lambda t: -t[0])
    out = []
    for _, yaw, r, ph in fitted[:n]:
        others = [p for p in sorted(ph.parent.glob("*.jpg")) if p != ph][:5]
        out.append({"set": "lfw", "bin": "lfw", "yaw": yaw, "pnp_yaw": r["pnp_yaw"], "path": ph, "source": ph,
                    "others": others})
    return out


# ------------------------------------------------------------------------------------------
# (a) one input


def frontal_view(rec, image, model, maker) -> np.ndarray:
    """`rotate --yaw 0 --method 3d --size 256` of a reconstruction."""
    options = RenderOptions(method="3d", size=INPUT_SIZE)
    return render_face(rec, image, model, [Pose(0.0, 0.0, 0.0)], options, maker)[0].images[0]


def frontal_view_yaw(view: np.ndarray, fit, model) -> float | None:
    """The yaw (degrees) at which the frontalised view shows the head: dlib's HOG detector and its own
    68 points on the view, PnP against the fitted mesh (`detect_view_face`, `view_pose_reference`: as
    `compare` measures views); None where HOG finds no face or PnP fails. A fit that read a profile as near frontal
    renders a view still turned: its identity distance is the input's, not a frontal face's."""
    face = detect_view_face(view)
    if face is None:
        return None
    try:
        return float(view_pose_reference(fit, model, INPUT_SIZE).estimate(face.landmarks).yaw)
    except ValueError:
        return None


def profile_row(item: dict, model, maker, ident: Identity, cnn_seconds: list[float]) -> dict:
    """Detection; fits with the default landmarks (the turned-face predictor's where the CNN found the
    face and they say it is turned), with dlib's 68-point predictor's alone ("dlib68"), and without the
    profile weighting; the identity distances of one input."""
    image = load_image(item["path"])
    hog = detect_faces(image, detector="hog")
    hog_dlib68 = detect_faces(image, detector="hog", profile_landmarks=False)
    t0 = time.perf_counter()
    boxes = cnn_boxes(image)                       # timed on every input: what the fallback costs
    cnn_seconds.append(time.perf_counter() - t0)
    by_area = lambda f: -f.area  # noqa: E731
    cnn = sorted((cnn_face(image, b) for b in boxes), key=by_area)
    cnn_dlib68 = sorted((cnn_face(image, b, profile_landmarks=False) for b in boxes), key=by_area)
    faces, faces_dlib68 = hog or cnn, hog_dlib68 or cnn_dlib68
    refs = [ident.of_file(p) for p in item["others"]]
    refs = [r for r in refs if r is not None]
    row = {k: (str(v) if isinstance(v, Path) else v) for k, v in item.items() if k != "others"}
    turned = bool(faces) and not np.array_equal(faces[0].landmarks, faces_dlib68[0].landmarks)
    row.update({"hog": bool(hog), "auto": bool(faces), "detector": faces[0].detector if faces else None,
                "turned_landmarks": turned, "references": len(refs), "fitted": False})
    # the profile input as dlib's own pipeline sees it (its detector and 68-point predictor)
    desc = ident.of_face(image, faces_dlib68[0].landmarks) if faces else None
    row["profile_distance"] = median(ident.distance(desc, r) for r in refs) if refs else float("nan")
    row["profile_refit"] = None
    for name, cfg, found in (("weighted", FitConfig(), faces), ("unweighted", FitConfig(profile_weighting=False), faces),
                             ("dlib68", FitConfig(), faces_dlib68)):
        row[f"{name}_fitted_yaw"], row[f"{name}_frontal_distance"], row[f"{name}_frontal_view_yaw"] = None, INF, None
        if not found:
            continue
        same_as = None
        if name == "unweighted" and row["profile_refit"] is False:
            # the first fit ended under profile_start_yaw: the weighted fit is this one, bit for bit
            # (FitConfig docs; frontal_fits_unchanged checks it), so it is not computed twice
            same_as = "weighted"
        if name == "dlib68" and not turned:
            same_as = "weighted"                   # the same landmarks: the same fit
        if same_as:
            for key in ("fitted_yaw", "frontal_detected", "frontal_distance", "frontal_view_yaw"):
                row[f"{name}_{key}"] = row.get(f"{same_as}_{key}")
            continue
        rec = largest_face(image, model, item["path"], fit_config=cfg, faces=found)
        if rec is None:
            continue
        if name == "weighted":
            row["profile_refit"] = bool(rec.fit.residuals.get("profile_refit"))
        row["fitted"] = True
        row[f"{name}_fitted_yaw"] = rec.fit.pose.yaw
        front = frontal_view(rec, image, model, maker)
        if name == "weighted":
            item["frontal"] = front
        fd = ident.of_image(front)
        row[f"{name}_frontal_detected"] = fd is not None
        row[f"{name}_frontal_view_yaw"] = frontal_view_yaw(front, rec.fit, model)
        row[f"{name}_frontal_distance"] = median(ident.distance(fd, r) for r in refs) if refs else float("nan")
    return row


def bin_summary(rows: list[dict]) -> dict:
    n = len(rows)
    out = {"inputs": n, "hog_detected": sum(r["hog"] for r in rows) / n, "auto_detected": sum(r["auto"] for r in rows) / n,
           "fitted": sum(r["fitted"] for r in rows) / n,
           "median_profile_distance": median(r["profile_distance"] for r in rows),
           "median_frontal_distance": median(r["weighted_frontal_distance"] for r in rows),
           "median_frontal_distance_unweighted": median(r["unweighted_frontal_distance"] for r in rows),
           "median_frontal_distance_dlib68": median(r["dlib68_frontal_distance"] for r in rows),
           "turned_landmarks": sum(r["turned_landmarks"] for r in rows) / n,
           "frontal_below_profile": sum(r["weighted_frontal_distance"] < r["profile_distance"] for r in rows) / n,
           "profile_under_0.6": sum(r["profile_distance"] < THRESHOLD for r in rows) / n,
           "frontal_under_0.6": sum(r["weighted_frontal_distance"] < THRESHOLD for r in rows) / n,
           "frontal_under_0.6_dlib68": sum(r["dlib68_frontal_distance"] < THRESHOLD for r in rows) / n}
    # frontalised with HOG alone: only the inputs HOG finds get a view
    out["frontal_under_0.6_hog_only"] = sum(r["hog"] and r["weighted_frontal_distance"] < THRESHOLD for r in rows) / n
    for name in ("weighted", "unweighted", "dlib68"):
        errs = [abs(r[f"{name}_fitted_yaw"] - r["yaw"]) for r in rows
                if r["set"] == "faces" and r[f"{name}_fitted_yaw"] is not None]
        out[f"median_abs_yaw_error_{name}"] = median(errs)
        # is the frontalised view frontal? HOG finds it and PnP puts it within FRONTAL_VIEW_DEG of 0
        view_yaws = [r[f"{name}_frontal_view_yaw"] for r in rows]
        out[f"frontal_view_frontal_{name}"] = sum(y is not None and abs(y) <= FRONTAL_VIEW_DEG for y in view_yaws) / n
        out[f"median_abs_frontal_view_yaw_{name}"] = median(abs(y) for y in view_yaws if y is not None)
    if rows and rows[0]["set"] == "lfw":
        out["fitted_yaw_range"] = [min(r["yaw"] for r in rows), max(r["yaw"] for r in rows)]
    return out


def run_part_a(args, model, ident: Identity, work: Path) -> tuple[dict, list[dict], dict]:
    maker = load_method("3d")
    photos = face_photos()[: args.test_photos]
    items = test_profile_inputs(model, photos, work, args.input_backgrounds.split(","), args.reuse_inputs)
    items += lfw_profile_inputs(model, args.n_lfw, args.rescan)
    rows, cnn_seconds = [], []
    for k, item in enumerate(items):
        rows.append(profile_row(item, model, maker, ident, cnn_seconds))
        r = rows[-1]
        print(f"  (a) [{k + 1}/{len(items)}] {Path(r['path']).name}: hog {r['hog']} auto {r['auto']} "
              f"profile {r['profile_distance']:.3f} frontal {r['weighted_frontal_distance']:.3f} "
              f"(unweighted {r['unweighted_frontal_distance']:.3f}) fitted yaw {r['weighted_fitted_yaw']} "
              f"(unweighted {r['unweighted_fitted_yaw']}, refit {r['profile_refit']})", flush=True)
    bins = {}
    for name in ("60", "75", "90", "lfw", "plain_60", "plain_75", "plain_90"):
        sel = [r for r in rows if r["bin"] == name]
        if sel:
            bins[name] = bin_summary(sel)
    for y in PROFILE_YAWS:
        sel = [r for r in rows if r["set"] == "faces" and r["background"] == "photo" and r["yaw"] == y]
        if sel:
            bins[f"{y:+d}"] = bin_summary(sel)
    cost = {"cnn_seconds_median": median(cnn_seconds), "cnn_seconds_max": max(cnn_seconds, default=float("nan")),
            "work_side": CNN_WORK_SIDE}
    return bins, rows, {"items": items, "cnn": cost}


# ------------------------------------------------------------------------------------------
# (b) views out to +-90


def view_scores(views, poses, ident: Identity, src: np.ndarray) -> list[dict]:
    out = []
    for img, pose in zip(views, poses):
        img = np.ascontiguousarray(img)
        hog = detect_faces(img, upsample=1, detector="hog", profile_landmarks=False)
        faces = hog or detect_faces(img, detector="cnn", profile_landmarks=False)
        d = ident.distance(ident.of_face(img, faces[0].landmarks), src) if faces else INF
        out.append({"yaw": pose.yaw, "hog": bool(hog), "auto": bool(faces), "distance": d,
                    "hog_distance": d if hog else INF})
    return out


def run_part_b(args, model, ident: Identity) -> tuple[dict, list[dict]]:
    yaws = [float(y) for y in args.view_yaws.split(",")]
    poses = [Pose(y, 0.0, 0.0) for y in yaws]
    makers = {m: load_method(m) for m in ("3d", "hybrid")}
    photos = [("faces", p) for p in face_photos()[: args.test_photos]]
    photos += [("lfw", p) for p in heldout_lfw_sample(args.n_heldout, 0)]
    rows = []
    for k, (set_name, ph) in enumerate(photos):
        image = load_image(ph)
        rec = largest_face(image, model, ph)
        if rec is None:
            continue
        src = ident.of_face(image, rec.face.landmarks)
        for method, maker in makers.items():
            views = render_face(rec, image, model, poses, RenderOptions(method=method, size=128), maker)[0].images
            for r in view_scores(views, poses, ident, src):
                rows.append({**r, "method": method, "set": set_name, "photo": f"{ph.parent.name}/{ph.name}"})
        print(f"  (b) [{k + 1}/{len(photos)}] {ph.name}", flush=True)
    table = {}
    for method in makers:
        table[method] = {}
        for y in yaws:
            sel = [r for r in rows if r["method"] == method and r["yaw"] == y]
            n = len(sel)
            table[method][f"{y:g}"] = {
                "views": n, "hog_detected": sum(r["hog"] for r in sel) / n, "auto_detected": sum(r["auto"] for r in sel) / n,
                "median_distance_detected": median(r["distance"] for r in sel if r["auto"]),
                "under_0.6": sum(r["distance"] < THRESHOLD for r in sel) / n,
                "under_0.6_hog_only": sum(r["hog_distance"] < THRESHOLD for r in sel) / n}
    return table, rows


# ------------------------------------------------------------------------------------------


def print_tables(bins: dict, table: dict) -> None:
    if bins:
        print("\n(a) profiles in")
        keys = [("inputs", "{:.0f}"), ("hog_detected", "{:.0%}"), ("auto_detected", "{:.0%}"), ("fitted", "{:.0%}"),
                ("turned_landmarks", "{:.0%}"), ("median_abs_yaw_error_dlib68", "{:.1f}"),
                ("median_abs_yaw_error_unweighted", "{:.1f}"), ("median_abs_yaw_error_weighted", "{:.1f}"),
                ("median_profile_distance", "{:.3f}"), ("median_frontal_distance_dlib68", "{:.3f}"),
                ("median_frontal_distance_unweighted", "{:.3f}"), ("median_frontal_distance", "{:.3f}"),
                ("frontal_below_profile", "{:.0%}"), ("profile_under_0.6", "{:.0%}"),
                ("frontal_under_0.6_dlib68", "{:.0%}"), ("frontal_under_0.6", "{:.0%}"),
                ("frontal_view_frontal_dlib68", "{:.0%}"), ("frontal_view_frontal_weighted", "{:.0%}"),
                ("median_abs_frontal_view_yaw_dlib68", "{:.1f}"), ("median_abs_frontal_view_yaw_weighted", "{:.1f}")]
        print(f"  {'bin':<36}" + "".join(f"{b:>8}" for b in bins))
        for key, fmt in keys:
            print(f"  {key:<36}" + "".join(f"{fmt.format(s.get(key, float('nan'))):>8}" for s in bins.values()))
    for method, per_yaw in table.items():
        print(f"\n(b) views, method {method}")
        print(f"  {'yaw':<28}" + "".join(f"{y:>7}" for y in per_yaw))
        for key, fmt in (("hog_detected", "{:.0%}"), ("auto_detected", "{:.0%}"), ("median_distance_detected", "{:.3f}"),
                         ("under_0.6", "{:.0%}"), ("under_0.6_hog_only", "{:.0%}")):
            print(f"  {key:<28}" + "".join(f"{fmt.format(s[key]):>7}" for s in per_yaw.values()))


def frontal_fits_unchanged(model, photos: list[Path]) -> bool:
    """The test photos' own fits, with and without the profile weighting: the same numbers?"""
    for ph in photos:
        image = load_image(ph)
        faces = detect_faces(image, detector="auto")
        a = reconstruct_faces(image, model, fit_config=FitConfig(), faces=faces)[0].fit
        b = reconstruct_faces(image, model, fit_config=FitConfig(profile_weighting=False), faces=faces)[0].fit
        same = all(np.array_equal(getattr(a, k), getattr(b, k)) for k in
                   ("identity", "expression", "rotation", "translation", "sh", "albedo")) and a.focal == b.focal
        if not same:
            print(f"  fit changed by the profile weighting: {ph.name}")
            return False
    return True


def check_targets(targets: Targets, bins: dict, unchanged: bool | None) -> None:
    if "75" in bins:
        targets.check("cnn_fallback_detects_75", bins["75"]["auto_detected"], ">=", 0.90,
                      note=f"(HOG alone: {bins['75']['hog_detected']:.0%})")
    for b in ("75", "90", "lfw"):
        if b in bins:
            s = bins[b]
            targets.check(f"frontal_below_profile_{b}", s["median_frontal_distance"], "<", s["median_profile_distance"],
                          note="(target: the profile input's own median distance)")
    for b in ("75", "90"):
        if b in bins:
            s = bins[b]
            targets.check(f"weighting_yaw_error_{b}", s["median_abs_yaw_error_weighted"], "<=",
                          s["median_abs_yaw_error_unweighted"], " deg", note="(target: the fit without the weighting)")
            targets.check(f"turned_landmarks_yaw_error_{b}", s["median_abs_yaw_error_weighted"], "<=",
                          s["median_abs_yaw_error_dlib68"], " deg", note="(target: the fit of dlib's 68-point predictor's points)")
    if unchanged is not None:
        targets.check("frontal_fits_unchanged", unchanged, "==", True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-lfw", type=int, default=20, help="LFW photos with the largest fitted |yaw| in (a) (default 20)")
    ap.add_argument("--n-heldout", type=int, default=10, help="held-out LFW photos in (b) (default 10)")
    ap.add_argument("--test-photos", type=int, default=None, help="first N test photos (default all 17)")
    ap.add_argument("--view-yaws", default=",".join(str(y) for y in VIEW_YAWS), help="yaws of (b)")
    ap.add_argument("--parts", default="a,b", help="a (profiles in), b (views out); default a,b")
    ap.add_argument("--input-backgrounds", default="photo,plain",
                    help="backgrounds of the test photos' profile views in (a): photo (the default views, what the "
                         "targets check) and plain (the head on grey: a cleaner stand-in for a real profile photo)")
    ap.add_argument("--rescan", action="store_true", help="redo the cached LFW yaw scan")
    ap.add_argument("--reuse-inputs", action="store_true",
                    help="take the test photos' profile views from the files an earlier run wrote (same code only)")
    ap.add_argument("--quick", action="store_true", help="3 test photos, 3 + 2 LFW photos, 5 yaws in (b)")
    ap.add_argument("--json", default=str(RESULTS / "profiles.json"))
    add_target_option(ap)
    args = ap.parse_args(argv)
    if args.quick:
        args.test_photos, args.n_lfw, args.n_heldout, args.view_yaws = 3, 3, 2, "-90,-45,0,45,90"
        if args.json == str(RESULTS / "profiles.json"):
            args.json = str(RESULTS / "profiles_quick.json")
    targets = Targets.from_args(args)
    parts = set(args.parts.split(","))
    model = load_morphable_model()
    ident = Identity()
    work = CACHE / ("inputs_quick" if args.quick else "inputs")
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    bins, rows_a, extra = run_part_a(args, model, ident, work) if "a" in parts else ({}, [], {"cnn": None})
    t_a = time.perf_counter() - t0
    table, rows_b = run_part_b(args, model, ident) if "b" in parts else ({}, [])
    t_b = time.perf_counter() - t0 - t_a
    unchanged = frontal_fits_unchanged(model, face_photos()[: args.test_photos]) if "a" in parts else None
    print_tables(bins, table)
    if extra.get("cnn"):
        print(f"\nCNN detector per photo (256-px inputs seen at 384 px): median {extra['cnn']['cnn_seconds_median']:.2f} s")
    print(f"time: (a) {t_a:.0f} s, (b) {t_b:.0f} s\n")
    check_targets(targets, bins, unchanged)
    payload = {"benchmark": "profiles", "quick": args.quick, "profile_yaws": PROFILE_YAWS, "input_size": INPUT_SIZE,
               "view_yaws": args.view_yaws, "profiles_in": json_ready(bins), "views_out": json_ready(table),
               "cnn_cost": extra.get("cnn"), "frontal_fits_unchanged": unchanged,
               "rows_a": json_ready(rows_a), "rows_b": json_ready(rows_b),
               "seconds": {"a": t_a, "b": t_b}}
    return targets.finish(args.json, payload)


if __name__ == "__main__":
    sys.exit(main())
