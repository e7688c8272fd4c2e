"""Whole-photo views (issue 24): identity and pose of `3d` views over the plain backdrop and over
the photo's own surroundings, in the same run, and the speed of `rotate --method 3d`.

    cd benchmarks && ../.venv/bin/python bench_whole_photo.py [--n-lfw 40] [--yaws -60,-45,...,60]
                     [--backgrounds plain,photo] [--runs 3] [--quick] [--json PATH] [--target NAME=VALUE]

Photos: the 17 test photos of ../shared/data/faces and `--n-lfw` held-out LFW photos (one per
person, a seeded choice among the held-out people that no generator trained on or was selected
with: `_common.heldout_lfw_sample`; a photo where the fit finds no face is left out, printed and
listed under photos.skipped). Each photo is fitted once (default fit: landmarks + dense
stage, largest face) and that fit is rendered with `facesynth.api.render_face` (method `3d`,
128 px, pitch 0, yaw -60..60 in 15 degree steps) once per background (`RenderOptions.background`
"plain" and "photo"), so both backgrounds show the same fit.

Per background and yaw, over the views of every photo (and per photo set, "faces" and "lfw"):
- identity: dlib's descriptor (torch port, `ganrefine.identity.IdentityEncoder`) of the view's
  largest face (dlib HOG, upsample 1, 68 landmarks) vs the source photo's (its fitted face): the
  median distance (a view without a face counts as inf) and the share under 0.6 (a view without a
  face counts as a miss); the detection rate; beside them, never in a target, the share under 0.6
  when the views the HOG detector misses are found with dlib's CNN detector (`detect_faces(...,
  detector="cnn")`, the fallback `rotate` uses on photos): whether a miss is the HOG detector's,
  at the edge of its yaw range, or the view's; and, per yaw, the same figures over the views where
  HOG found a face over both backgrounds (`detected_over_both`: identity where detection is not in
  question);
- pose: |yaw error| and |pitch error| of the view, dlib's landmarks + PnP against the fitted mesh
  (`face3d.pose_estimation.view_pose_reference`, as `facesynth compare` does) vs the asked pose;
  median over the views where dlib found a face.
The same figures pooled over yaw -45..45 are what the targets check. A third set of views, in no
target, is a control (`photo_grey_backdrop`, `backdrop_greyed`): the views over the photo with the
backdrop beyond the person (the turned photo where its person layer is 0) grey as in the plain
render, the head, hair and body as over the photo: a miss that it does not share is the backdrop's
(dlib's HOG detector reads a turned head's outline against it), one that it shares the head's. Per
photo also whether its views over the photo draw the back of the head
(`face3d.photo_view.back_of_head_texture`: enough of the scalp the photo shows looks like hair),
counted per set.

Speed: `facesynth rotate PHOTO --yaw=-60..60 (9 poses) --method 3d` with the default background
(no --background flag), as a fresh process, median of `--runs` (wall time).

Targets (issue 24), checked in the run; it exits 1 when one is missed (`--target NAME=VALUE`
changes one), all at yaw -45..45 over both photo sets unless named otherwise:
- photo_share_under_0.6 >= plain's share in this run - 0.01;
- photo_median_abs_yaw_error <= plain's in this run + 1 degree;
- docs/benchmarks.md's figures of the plain render on the test photos, for the photo background:
  share under 0.6 on the test photos >= 118/119 and median |yaw| and |pitch| error <= 7 degrees
  (that page's target; its measured median |yaw| error is 1.2 degrees);
- rotate_3d_fresh_process_seconds <= 3 s (default background).

`--quick`: 3 test photos, 2 LFW photos, yaw -45,0,45, one timed run (a check that it runs, not
figures): about 35 s. The full run takes about 5 minutes on this project's 2-core machine.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

import numpy as np
import torch

from _common import (RESULTS, Targets, add_target_option, face_photos, fresh_rotate, heldout_lfw_sample,
                     largest_face)
from face3d.camera import Pose
from face3d.fitting import FitConfig
from face3d.image_io import load_image
from face3d.landmarks import detect_faces
from face3d.morphable_model import load_morphable_model
from face3d.pose_estimation import angle_error, view_pose_reference
from face3d.photo_view import back_of_head_texture
import facesynth.api as api
from facesynth.api import PLAIN_GREY, RenderOptions, render_face
from facesynth.compare.metrics import THRESHOLD, detect_view_face, finite_median
from facesynth.compare.report import json_ready
from facesynth.methods import load_method
from ganrefine.identity import IdentityEncoder, image_tensor

YAWS = "-60,-45,-30,-15,0,15,30,45,60"
SPEED_YAWS = [-60, -45, -30, -15, 0, 15, 30, 45, 60]
CHECKED = (-45.0, 45.0)          # the yaw range of the targets
DOCS_SHARE = 118 / 119           # docs/benchmarks.md: 3d views of the test photos at -45..45 under 0.6
DOCS_POSE_TARGET = 7.0           # docs/benchmarks.md: median |yaw| and |pitch| error target
GREY_BACKDROP = "photo_grey_backdrop"   # the control of `backdrop_greyed`


def photo_views(rec, image, model, maker, poses, size, background) -> np.ndarray:
    """(B, size, size, 3) uint8 `3d` views of one fit over `background` ("plain", "photo", or the
    control GREY_BACKDROP)."""
    if background == GREY_BACKDROP:
        with backdrop_greyed():
            return photo_views(rec, image, model, maker, poses, size, "photo")
    options = RenderOptions(method="3d", size=size, background=background)
    return np.asarray(render_face(rec, image, model, poses, options, maker)[0].images)


@contextlib.contextmanager
def backdrop_greyed():
    """Within it, views over the photo show the backdrop (the turned photo where it shows no person,
    `photo_view_layers`'s person layer) as the plain render's grey; the head, the hair and the body
    stay as over the photo. A control, not a product option: whether the photo views' misses are
    the backdrop's or the head's."""
    original = api.view_background

    def greyed(*args, **kwargs):
        background, person = original(*args, **kwargs)
        if person is None:
            return background, person
        keep = np.clip(person, 0.0, 1.0)[..., None]
        grey = round(PLAIN_GREY * 255)
        return (background * keep + grey * (1.0 - keep) + 0.5).astype(np.uint8), person

    api.view_background = greyed
    try:
        yield
    finally:
        api.view_background = original


def score(views, poses, reference, encoder, src_desc) -> list[dict]:
    """One record per view: detected, distance to the source descriptor (inf without a face) and
    the signed yaw and pitch errors (None without a face, inf where PnP fails)."""
    rows, found = [], []
    for img, pose in zip(views, poses):
        face = detect_view_face(img)
        r = {"yaw": pose.yaw, "detected": face is not None, "distance": float("inf"),
             "yaw_error": None, "pitch_error": None, "cnn_fallback": False}
        if face is None:
            # reported beside the targets, never in them: is a miss the HOG detector's or the view's?
            cnn = detect_faces(np.ascontiguousarray(img), detector="cnn", profile_landmarks=False)
            if cnn:
                r["cnn_fallback"] = True
                found.append((len(rows), img, cnn[0].landmarks))
        if face is not None:
            try:
                est = reference.estimate(face.landmarks)
                r["yaw_error"] = angle_error(est.yaw, pose.yaw)
                r["pitch_error"] = angle_error(est.pitch, pose.pitch)
            except ValueError:
                r["yaw_error"] = r["pitch_error"] = float("inf")
            found.append((len(rows), img, face.landmarks))
        rows.append(r)
    if found:
        with torch.inference_mode():
            descs = encoder.embed([image_tensor(im) for _, im, _ in found], [lm for _, _, lm in found]).double().numpy()
        for (i, _, _), d in zip(found, descs):
            key = "distance_cnn_fallback" if rows[i]["cnn_fallback"] else "distance"
            rows[i][key] = float(np.linalg.norm(d - src_desc))
    for r in rows:
        r.setdefault("distance_cnn_fallback", r["distance"])
    return rows


def summary(rows: list[dict]) -> dict:
    """The figures of a set of view records."""
    det = [r for r in rows if r["detected"]]
    n = len(rows)
    return {"views": n, "detected": len(det), "detection_rate": len(det) / n if n else float("nan"),
            "median_distance": finite_median(r["distance"] for r in rows),
            "share_under_0.6": sum(r["distance"] < THRESHOLD for r in rows) / n if n else float("nan"),
            "share_under_0.6_cnn_fallback": (sum(r["distance_cnn_fallback"] < THRESHOLD for r in rows) / n
                                             if n else float("nan")),
            "median_abs_yaw_error": finite_median(abs(r["yaw_error"]) for r in det),
            "median_abs_pitch_error": finite_median(abs(r["pitch_error"]) for r in det)}


def tables(records: dict, yaws: list[float]) -> dict:
    """{set: {background: {"per_yaw": {yaw: summary}, "-45..45": summary, "all": summary}}} with the
    sets "faces", "lfw" and "all"."""
    out = {}
    for set_name in ("faces", "lfw", "all"):
        out[set_name] = {}
        for bg, rows in records.items():
            rs = [r for r in rows if set_name == "all" or r["set"] == set_name]
            out[set_name][bg] = {
                "per_yaw": {f"{y:g}": summary([r for r in rs if r["yaw"] == y]) for y in yaws},
                "-45..45": summary([r for r in rs if CHECKED[0] <= r["yaw"] <= CHECKED[1]]),
                "all": summary(rs)}
    return out


def paired(records: dict, yaws: list[float]) -> dict:
    """Per yaw (and -45..45), over the views where the HOG detector found a face over both the plain
    and the photo background (the same photo and yaw): how many, and per background the share under
    0.6 and the median distance. Identity compared where detection is not in question."""
    if not {"plain", "photo"} <= set(records):
        return {}
    plain = {(r["photo"], r["yaw"]): r for r in records["plain"]}
    pairs = [(plain[(r["photo"], r["yaw"])], r) for r in records["photo"]
             if r["detected"] and plain[(r["photo"], r["yaw"])]["detected"]]

    def stats(sel):
        return {"views": len(sel),
                **{f"{bg}_share_under_0.6": (sum(p[i]["distance"] < THRESHOLD for p in sel) / len(sel) if sel else None)
                   for i, bg in enumerate(("plain", "photo"))},
                **{f"{bg}_median_distance": finite_median(p[i]["distance"] for p in sel)
                   for i, bg in enumerate(("plain", "photo"))}}
    out = {f"{y:g}": stats([p for p in pairs if p[1]["yaw"] == y]) for y in yaws}
    out["-45..45"] = stats([p for p in pairs if CHECKED[0] <= p[1]["yaw"] <= CHECKED[1]])
    return out


def print_paired(pair: dict) -> None:
    if not pair:
        return
    print("\nviews with a face (HOG) over both backgrounds, all photos:")
    print(f"  {'yaw':<22}" + "".join(f"{k:>9}" for k in pair))
    for key, fmt in (("views", "{:.0f}"), ("plain_share_under_0.6", "{:.1%}"), ("photo_share_under_0.6", "{:.1%}"),
                     ("plain_median_distance", "{:.3f}"), ("photo_median_distance", "{:.3f}")):
        print(f"  {key:<22}" + "".join(f"{('-' if v[key] is None else fmt.format(v[key])):>9}" for v in pair.values()))


def print_table(tab: dict, yaws: list[float]) -> None:
    cols = [f"{y:g}" for y in yaws] + ["-45..45", "all"]
    for set_name, by_bg in tab.items():
        for bg, t in by_bg.items():
            print(f"\n{set_name} photos, background {bg}:")
            print(f"  {'yaw':<22}" + "".join(f"{c:>9}" for c in cols))
            cells = [t["per_yaw"][c] if c in t["per_yaw"] else t[c] for c in cols]
            for key, fmt in (("views", "{:.0f}"), ("detection_rate", "{:.1%}"), ("share_under_0.6", "{:.1%}"),
                             ("share_under_0.6_cnn_fallback", "{:.1%}"),
                             ("median_distance", "{:.3f}"), ("median_abs_yaw_error", "{:.1f}"),
                             ("median_abs_pitch_error", "{:.1f}")):
                print(f"  {key:<22}" + "".join(f"{fmt.format(s[key]):>9}" for s in cells))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-lfw", type=int, default=40, help="held-out LFW photos, one per person (default 40)")
    ap.add_argument("--test-photos", type=int, default=None, help="first N test photos (default all 17)")
    ap.add_argument("--yaws", default=YAWS, help=f"comma-separated yaws in degrees (default {YAWS})")
    ap.add_argument("--backgrounds", default=f"plain,photo,{GREY_BACKDROP}",
                    help=f"backgrounds to compare (default plain,photo,{GREY_BACKDROP}: the photo views with "
                         "the backdrop beyond the person grey, a control)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0, help="seed of the LFW choice (default 0)")
    ap.add_argument("--runs", type=int, default=3,
                    help="timed fresh-process rotate runs (median; default 3; 0 skips the speed and its check)")
    ap.add_argument("--quick", action="store_true", help="3 test photos, 2 LFW photos, yaw -45,0,45, 1 timed run")
    ap.add_argument("--json", default=str(RESULTS / "whole_photo.json"))
    add_target_option(ap)
    args = ap.parse_args(argv)
    if args.quick:
        args.n_lfw, args.test_photos, args.yaws, args.runs = 2, 3, "-45,0,45", min(args.runs, 1)
        if args.json == str(RESULTS / "whole_photo.json"):
            args.json = str(RESULTS / "whole_photo_quick.json")
    targets = Targets.from_args(args)
    yaws = [float(y) for y in args.yaws.split(",") if y.strip()]
    backgrounds = [b for b in args.backgrounds.split(",") if b]
    poses = [Pose(y, 0.0, 0.0) for y in yaws]
    fit_config = FitConfig(dense=RenderOptions().dense)          # the default fit

    t_start = time.perf_counter()
    model = load_morphable_model()
    maker = load_method("3d")
    encoder = IdentityEncoder.load()
    photos = [("faces", p) for p in face_photos()[: args.test_photos]]
    photos += [("lfw", p) for p in heldout_lfw_sample(args.n_lfw, args.seed)]
    records = {bg: [] for bg in backgrounds}
    skipped, seconds, back_drawn = [], {"fit": 0.0, **{bg: 0.0 for bg in backgrounds}}, {}
    for k, (set_name, path) in enumerate(photos):
        image = load_image(path)
        t0 = time.perf_counter()
        rec = largest_face(image, model, path, skipped, fit_config=fit_config)
        if rec is None:
            continue
        seconds["fit"] += time.perf_counter() - t0
        # whether its views over the photo draw the back of the head (too little hair seen: not)
        back_drawn[f"{path.parent.name}/{path.name}"] = (set_name, back_of_head_texture(rec.texture, model)[1]
                                                          is not None)
        with torch.inference_mode():
            src = encoder.embed([image_tensor(image)], [rec.face.landmarks]).double().numpy()[0]
        reference = view_pose_reference(rec.fit, model, args.size)   # one fit: both backgrounds share it
        for bg in backgrounds:
            t0 = time.perf_counter()
            views = photo_views(rec, image, model, maker, poses, args.size, bg)
            seconds[bg] += time.perf_counter() - t0
            for r in score(views, poses, reference, encoder, src):
                records[bg].append({**r, "set": set_name, "photo": f"{path.parent.name}/{path.name}"})
        print(f"  [{k + 1}/{len(photos)}] {set_name} {path.parent.name}/{path.name}", flush=True)
    views_s = time.perf_counter() - t_start

    tab = tables(records, yaws)
    print_table(tab, yaws)
    pair = paired(records, yaws)
    print_paired(pair)
    t_speed = time.perf_counter()
    speed = fresh_rotate(face_photos()[0], SPEED_YAWS, "3d", args.runs) if args.runs > 0 else None
    speed_s = time.perf_counter() - t_speed
    if speed:
        print(f"\nfacesynth rotate --method 3d, 1 photo -> 9 poses, default background: {speed['cli_wall_seconds']:.2f} s "
              f"wall as a fresh process (median of {args.runs}), {speed['seconds_per_photo']:.2f} s in-process")
    back_counts = {name: [sum(d for s_, d in back_drawn.values() if s_ == name),
                          sum(s_ == name for s_, _ in back_drawn.values())] for name in ("faces", "lfw")}
    print("back of the head drawn over the photo (enough hair seen): "
          + ", ".join(f"{name} {n} of {m}" for name, (n, m) in back_counts.items()))
    print(f"views: {views_s:.0f} s for {len(photos) - len(skipped)} photos; speed: {speed_s:.0f} s")
    for sk in skipped:
        print(f"  left out: {sk['error']}")
    print()

    both = tab["all"]
    if "plain" in both and "photo" in both:
        plain, photo = both["plain"]["-45..45"], both["photo"]["-45..45"]
        targets.check("photo_share_under_0.6", photo["share_under_0.6"], ">=", plain["share_under_0.6"] - 0.01,
                      note="(target: plain's - 0.01, this run, yaw -45..45)")
        targets.check("photo_median_abs_yaw_error", photo["median_abs_yaw_error"], "<=",
                      plain["median_abs_yaw_error"] + 1.0, " deg", note="(target: plain's + 1, this run, yaw -45..45)")
    if "photo" in both:
        faces = tab["faces"]["photo"]["-45..45"]
        targets.check("photo_test_photos_share_under_0.6", faces["share_under_0.6"], ">=", DOCS_SHARE,
                      note="(docs/benchmarks.md: 118/119 for the plain render)")
        targets.check("photo_median_abs_yaw_error_docs", both["photo"]["-45..45"]["median_abs_yaw_error"], "<=",
                      DOCS_POSE_TARGET, " deg", note="(docs/benchmarks.md target; measured there: 1.2)")
        targets.check("photo_median_abs_pitch_error_docs", both["photo"]["-45..45"]["median_abs_pitch_error"], "<=",
                      DOCS_POSE_TARGET, " deg", note="(docs/benchmarks.md target)")
    if speed:
        targets.check("rotate_3d_fresh_process_seconds", speed["cli_wall_seconds"], "<=", 3.0, " s",
                      note=f"(default background, load average {os.getloadavg()[0]:.1f})")
    payload = {"benchmark": "whole_photo", "quick": args.quick, "method": "3d", "size": args.size, "yaws": yaws,
               "backgrounds": backgrounds, "default_background": RenderOptions().background,
               "photos": {"faces": sum(s == "faces" for s, _ in photos), "lfw": sum(s == "lfw" for s, _ in photos),
                          "lfw_seed": args.seed, "skipped": skipped},
               "back_of_head_drawn": {"counts": back_counts, "photos": {k: d for k, (_, d) in back_drawn.items()}},
               "results": json_ready(tab), "detected_over_both": json_ready(pair), "views": json_ready([{"background": bg, **r} for bg, rows in records.items()
                                                                for r in rows]), "speed": speed, "seconds": {**seconds, "views_total": views_s, "speed_total": speed_s}}
    return targets.finish(args.json, payload)


if __name__ == "__main__":
    sys.exit(main())
