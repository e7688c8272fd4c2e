"""Real photos (shared/data/faces): landmark error and fitting time against eos-py, identity kept
and pose accuracy of the re-posed views.

    cd benchmarks && ../.venv/bin/python bench_real_photos.py [--json PATH] [--limit N] [--repeats 3]

a. Landmark error per photo, on the same dlib landmarks for every method:
   - ours, ICT FaceKit, landmarks only (FitConfig(dense=False)) and with the dense stage (dense=True);
   - ours, Surrey SFM 3448, landmarks only;
   - eos-py `fit_shape_and_pose` with the SFM, its expression blendshapes, `ibug_to_sfm.txt`
     mapper, contour files and edge topology (as in eos's python demo).
   "68 pt" is our `fit.landmark_error` (mean 68-point reprojection error / outer-eye distance,
   jaw points matched to the occluding contour). "50 pt" is the like-for-like figure: the mean
   error over the 50 iBUG points `ibug_to_sfm.txt` maps (chin + the inner points, no jaw contour,
   no inner-mouth corners 61/65) / outer-eye distance, computed the same way for every method
   (eos: its mesh projected with the returned RenderingParameters' modelview and orthographic
   projection into the OpenCV viewport (0, H, W, -H)).
b. Fitting time per face, warm (one warm-up call per method first), torch.set_num_threads(2),
   median over photos of the per-photo median of `--repeats` calls, all methods timed in the same
   run one after the other on the same photo and landmarks. Detection = dlib HOG detector +
   68-point predictor (`face3d.landmarks.detect_faces`).
c. Identity kept: each photo is reconstructed (ICT, default fit: landmarks + dense, photo texture) and rendered at
   yaw -45..45 in 15 degree steps at 128 px. dlib finds the face in each view (HOG, upsample 1; a
   miss is a failure with distance inf), and dlib's face descriptor (`compute_face_descriptor` on
   the 68-point shape) is compared with the source photo's descriptor (Euclidean distance; dlib's
   same-person threshold is 0.6).
d. Pose check: on each view, dlib's landmarks + `face3d.pose_estimation.estimate_pose` (PnP on the
   inner points 18..68 against the fitted mesh's landmark vertices, with the view camera's focal
   length and the crop centre) vs the pose asked for.

Targets (issue 2), checked in the run; it exits 1 when one is missed (`--target NAME=VALUE` changes
one): (a) median 68-point error <= 3% and median 50-point error below eos-py's in the same run;
(b) fit time per face incl. detection <= 1.5 s, landmarks only and with the dense stage; (d) median
|yaw| and |pitch| error of the views <= 7 deg. The identity figures of (c) have no target.
"""
from __future__ import annotations

import os

# OpenMP's wait policy is left at its default, as users run it: PASSIVE helps only when other jobs
# share the cores, and costs ~2x on the fit's many small ops on a quiet machine. Set
# OMP_WAIT_POLICY=PASSIVE in the environment to measure under contention; the JSON records it.

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from _common import RESULTS, Targets, add_target_option, face_photos  # noqa: E402
from face3d.camera import Pose  # noqa: E402
from face3d.fitting import FitConfig, fit_morphable_model  # noqa: E402
from face3d.image_io import load_image  # noqa: E402
from face3d.landmarks import _detector, _predictor, detect_faces, model_file, outer_eye_distance  # noqa: E402
from face3d.morphable_model import default_data_dir, load_morphable_model  # noqa: E402
from face3d.pose_estimation import angle_error, view_pose_reference  # noqa: E402
from face3d.render import render_views  # noqa: E402
from face3d.texture import extract_texture  # noqa: E402

YAWS = list(range(-45, 46, 15))
SIZE = 128
SAME_PERSON = 0.6
TARGETS = {"landmark_error": 0.03, "fit_seconds": 1.5, "pose_deg": 7.0}


def load_average() -> list[float]:
    try:
        return [float(x) for x in os.getloadavg()]
    except OSError:
        return []


# ------------------------------------------------------------------------------------------
# eos


class EosFitter:
    def __init__(self, sfm_dir: Path):
        import eos

        self.eos = eos
        d = str(sfm_dir) + "/"
        model = eos.morphablemodel.load_model(d + "sfm_shape_3448.bin")
        blendshapes = eos.morphablemodel.load_blendshapes(d + "expression_blendshapes_3448.bin")
        self.model = eos.morphablemodel.MorphableModel(
            model.get_shape_model(), blendshapes, color_model=eos.morphablemodel.PcaModel(),
            vertex_definitions=None, texture_coordinates=model.get_texture_coordinates())
        self.mapper = eos.core.LandmarkMapper(d + "ibug_to_sfm.txt")
        self.edge_topology = eos.morphablemodel.load_edge_topology(d + "sfm_3448_edge_topology.json")
        self.contour_landmarks = eos.fitting.ContourLandmarks.load(d + "ibug_to_sfm.txt")
        self.model_contour = eos.fitting.ModelContour.load(d + "sfm_model_contours.json")
        # the iBUG points (0-based) the mapper defines and their SFM vertices
        pairs = [(k, self.mapper.convert(str(k + 1))) for k in range(68)]
        pairs = [(k, int(v)) for k, v in pairs if v is not None]
        self.ibug = np.array([k for k, _ in pairs])
        self.vertices = np.array([v for _, v in pairs])

    def fit(self, landmarks: np.ndarray, width: int, height: int):
        lms = [self.eos.core.Landmark(str(i + 1), [float(x), float(y)]) for i, (x, y) in enumerate(landmarks)]
        return self.eos.fitting.fit_shape_and_pose(self.model, lms, self.mapper, width, height, self.edge_topology,
                                                   self.contour_landmarks, self.model_contour)

    @staticmethod
    def project(mesh, params, width: int, height: int) -> np.ndarray:
        """eos mesh vertices -> pixels, like glm::project with eos's OpenCV viewport (0, H, W, -H)."""
        V = np.asarray(mesh.vertices, dtype=np.float64)
        M = np.asarray(params.get_projection(), dtype=np.float64) @ np.asarray(params.get_modelview(), dtype=np.float64)
        clip = np.c_[V, np.ones(len(V))] @ M.T
        ndc = clip[:, :3] / clip[:, 3:4]
        x = (ndc[:, 0] * 0.5 + 0.5) * width
        y = height - (ndc[:, 1] * 0.5 + 0.5) * height
        return np.stack([x, y], axis=1)


def mapped_error(screen: np.ndarray, landmarks: np.ndarray, ibug: np.ndarray, verts: np.ndarray) -> float:
    """Mean distance of the mapped points / outer-eye distance."""
    return float(np.linalg.norm(screen[verts] - landmarks[ibug], axis=1).mean() / outer_eye_distance(landmarks))


def ours_mapped_error(fit, model, ibug: np.ndarray) -> float:
    lm = model.landmark_vertices[ibug]
    if np.any(lm < 0):
        raise RuntimeError(f"{model.name} lacks fixed vertices for iBUG points {ibug[lm < 0] + 1}")
    with torch.no_grad():
        scr = fit.project(model)[0, :, :2].numpy().astype(np.float64)
    return mapped_error(scr, fit.landmarks, ibug, lm)


def timed(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, statistics.median(times)


# ------------------------------------------------------------------------------------------
# dlib identity


class Dlib:
    def __init__(self):
        import dlib

        self.dlib = dlib
        self.rec = dlib.face_recognition_model_v1(str(model_file("dlib_face_recognition_resnet_model_v1.dat")))

    def largest(self, img: np.ndarray, upsample: int):
        rects = _detector()(img, upsample)
        if len(rects) == 0:
            return None
        return max(rects, key=lambda r: r.width() * r.height())

    def shape(self, img, rect):
        return _predictor()(img, rect)

    def descriptor(self, img, shape) -> np.ndarray:
        return np.asarray(self.rec.compute_face_descriptor(img, shape), dtype=np.float64)

    def largest_descriptor(self, img: np.ndarray, upsample: int = 1) -> np.ndarray | None:
        """The descriptor of the largest face in `img`, None when dlib finds none."""
        rect = self.largest(img, upsample)
        return None if rect is None else self.descriptor(img, self.shape(img, rect))

    @staticmethod
    def points(shape) -> np.ndarray:
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)


# ------------------------------------------------------------------------------------------


def med(xs):
    xs = [x for x in xs if x is not None and np.isfinite(x)]
    return float(statistics.median(xs)) if xs else float("nan")


def pct(x):
    return f"{100 * x:6.2f}%" if np.isfinite(x) else "   n/a "


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=str(RESULTS / "real_photos.json"))
    ap.add_argument("--limit", type=int, default=0, help="only the first N photos (0: all)")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per photo and method (median)")
    ap.add_argument("--threads", type=int, default=2)
    add_target_option(ap)
    args = ap.parse_args()
    targets = Targets.from_args(args)

    torch.set_num_threads(args.threads)
    load_start = load_average()
    data = default_data_dir()
    sfm_dir = data / "3dmm" / "surrey_sfm_3448"
    photos = face_photos()
    if args.limit:
        photos = photos[: args.limit]
    ict = load_morphable_model()
    sfm = load_morphable_model(sfm_dir)
    eosf = EosFitter(sfm_dir)
    dl = Dlib()
    ibug = eosf.ibug
    print(f"{len(photos)} photos; torch threads {torch.get_num_threads()}; OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY', 'default')}; load average {load_start}")
    print(f"like-for-like points: {len(ibug)} iBUG points mapped by ibug_to_sfm.txt")

    cfg_lmk = FitConfig(dense=False)
    cfg_dense = FitConfig(dense=True)

    # warm-up: one call of every method on the first photo
    img0 = load_image(photos[0])
    q0 = detect_faces(img0)[0].landmarks
    fit_morphable_model(img0, q0, ict, cfg_lmk)
    fit_morphable_model(img0, q0, ict, cfg_dense)
    fit_morphable_model(img0, q0, sfm, cfg_lmk)
    eosf.fit(q0, img0.shape[1], img0.shape[0])

    rows, views_rows = [], []
    for path in photos:
        name = f"{path.parent.name}/{path.name}"
        img = load_image(path)
        H, W = img.shape[:2]
        faces, t_det = timed(lambda: detect_faces(img), args.repeats)
        if not faces:
            print(f"  {name}: no face found, skipped")
            rows.append({"photo": name, "error": "no face"})
            continue
        face = faces[0]
        q = face.landmarks
        fit_l, t_l = timed(lambda: fit_morphable_model(img, q, ict, cfg_lmk), args.repeats)
        fit_d, t_d = timed(lambda: fit_morphable_model(img, q, ict, cfg_dense), 1)
        fit_s, t_s = timed(lambda: fit_morphable_model(img, q, sfm, cfg_lmk), args.repeats)
        (mesh, params, _, _), t_e = timed(lambda: eosf.fit(q, W, H), args.repeats)
        eos_scr = eosf.project(mesh, params, W, H)
        row = {
            "photo": name, "size": [H, W], "eye_distance_px": outer_eye_distance(q),
            "ict": {"err68": fit_l.landmark_error, "err50": ours_mapped_error(fit_l, ict, ibug),
                    "seconds": t_l, "pose": fit_l.pose.as_tuple()},
            "ict_dense": {"err68": fit_d.landmark_error, "err50": ours_mapped_error(fit_d, ict, ibug),
                          "seconds": t_d},
            "sfm": {"err68": fit_s.landmark_error, "err50": ours_mapped_error(fit_s, sfm, ibug), "seconds": t_s},
            "eos": {"err50": mapped_error(eos_scr, q, eosf.ibug, eosf.vertices), "seconds": t_e,
                    "yaw_pitch_roll": [float(a) for a in params.get_yaw_pitch_roll()]},
            "detect_seconds": t_det,
        }
        row["ict"]["seconds_with_detection"] = t_det + t_l
        row["eos"]["seconds_with_detection"] = t_det + t_e

        # c + d: identity and pose of the re-posed views (ICT, the default fit: landmarks + dense)
        rect = dl.dlib.rectangle(*face.box)
        src_desc = dl.descriptor(img, dl.shape(img, rect))
        texture = extract_texture(fit_d, img, ict)
        poses = [Pose(float(y), 0.0, 0.0) for y in YAWS]
        views = render_views(fit_d, texture, poses, ict, size=SIZE)
        reference = view_pose_reference(fit_d, ict, SIZE)
        for im, pose in zip(views.images, poses):
            im = np.ascontiguousarray(im)
            vr = {"photo": name, "yaw": pose.yaw, "pitch": pose.pitch}
            r = dl.largest(im, 1)
            if r is None:
                vr.update(detected=False, distance=float("inf"))
            else:
                sh = dl.shape(im, r)
                vr["detected"] = True
                vr["distance"] = float(np.linalg.norm(dl.descriptor(im, sh) - src_desc))
                est = reference.estimate(dl.points(sh))
                vr["estimated"] = est.as_tuple()
                vr["yaw_error"] = angle_error(est.yaw, pose.yaw)
                vr["pitch_error"] = angle_error(est.pitch, pose.pitch)
                vr["roll_error"] = angle_error(est.roll, pose.roll)
            views_rows.append(vr)
        rows.append(row)
        ok = [v for v in views_rows if v["photo"] == name]
        print(f"  {name:46s} ICT {pct(row['ict']['err68'])}  eos(50) {pct(row['eos']['err50'])}  "
              f"fit {t_l:5.2f}s eos {t_e * 1000:5.1f}ms  views kept "
              f"{sum(v['distance'] < SAME_PERSON for v in ok)}/{len(ok)}", flush=True)

    good = [r for r in rows if "error" not in r]

    # ---------------------------------------------------------------- a. landmark error
    print("\n(a) Landmark error / outer-eye distance (target: ours <= 3.00% (68 pt) and below eos (50 pt))")
    hdr = (f"{'photo':46s} {'ICT 68':>8s} {'ICT 50':>8s} {'ICT+dns 68':>10s} {'ICT+dns 50':>10s} "
           f"{'SFM 68':>8s} {'SFM 50':>8s} {'eos 50':>8s}")
    print(hdr)
    print("-" * len(hdr))
    for r in good:
        print(f"{r['photo']:46s} {pct(r['ict']['err68']):>8s} {pct(r['ict']['err50']):>8s} "
              f"{pct(r['ict_dense']['err68']):>10s} {pct(r['ict_dense']['err50']):>10s} "
              f"{pct(r['sfm']['err68']):>8s} {pct(r['sfm']['err50']):>8s} {pct(r['eos']['err50']):>8s}")
    medians = {
        "ict_err68": med([r["ict"]["err68"] for r in good]), "ict_err50": med([r["ict"]["err50"] for r in good]),
        "ict_dense_err68": med([r["ict_dense"]["err68"] for r in good]),
        "ict_dense_err50": med([r["ict_dense"]["err50"] for r in good]),
        "sfm_err68": med([r["sfm"]["err68"] for r in good]), "sfm_err50": med([r["sfm"]["err50"] for r in good]),
        "eos_err50": med([r["eos"]["err50"] for r in good]),
    }
    print("-" * len(hdr))
    print(f"{'MEDIAN':46s} {pct(medians['ict_err68']):>8s} {pct(medians['ict_err50']):>8s} "
          f"{pct(medians['ict_dense_err68']):>10s} {pct(medians['ict_dense_err50']):>10s} "
          f"{pct(medians['sfm_err68']):>8s} {pct(medians['sfm_err50']):>8s} {pct(medians['eos_err50']):>8s}")
    wins = sum(r["ict"]["err50"] < r["eos"]["err50"] for r in good)
    print(f"ICT (landmarks only) below eos on the 50 points on {wins}/{len(good)} photos")
    targets.check("median_landmark_error_68pt", medians["ict_err68"], "<=", TARGETS["landmark_error"])
    targets.check("median_landmark_error_50pt", medians["ict_err50"], "<", medians["eos_err50"],
                  note="(target: eos-py's median in this run)")

    # ---------------------------------------------------------------- b. timing
    timing = {
        "detect": med([r["detect_seconds"] for r in good]),
        "ict": med([r["ict"]["seconds"] for r in good]),
        "ict_with_detection": med([r["ict"]["seconds_with_detection"] for r in good]),
        "ict_dense": med([r["ict_dense"]["seconds"] for r in good]),
        "ict_dense_with_detection": med([r["ict_dense"]["seconds"] + r["detect_seconds"] for r in good]),
        "sfm": med([r["sfm"]["seconds"] for r in good]),
        "eos": med([r["eos"]["seconds"] for r in good]),
        "eos_with_detection": med([r["eos"]["seconds_with_detection"] for r in good]),
    }
    print(f"\n(b) Fitting time per face, median over {len(good)} photos, warm, {torch.get_num_threads()} torch threads "
          f"(target: ours <= {TARGETS['fit_seconds']} s)")
    print(f"{'method':34s} {'fit only':>10s} {'+ detection':>12s}")
    print(f"{'ours ICT, landmarks only':34s} {timing['ict']:9.3f}s {timing['ict_with_detection']:11.3f}s")
    print(f"{'ours ICT, + dense stage':34s} {timing['ict_dense']:9.3f}s {timing['ict_dense_with_detection']:11.3f}s")
    print(f"{'ours SFM, landmarks only':34s} {timing['sfm']:9.3f}s {'':>12s}")
    print(f"{'eos-py fit_shape_and_pose (SFM)':34s} {timing['eos']:9.3f}s {timing['eos_with_detection']:11.3f}s")
    print(f"(dlib detection + 68 landmarks alone: {timing['detect']:.3f}s)")
    targets.check("fit_seconds_with_detection", timing["ict_with_detection"], "<=", TARGETS["fit_seconds"], " s")
    targets.check("fit_seconds_dense_with_detection", timing["ict_dense_with_detection"], "<=", TARGETS["fit_seconds"], " s")

    # ---------------------------------------------------------------- c + d. views
    print(f"\n(c) Identity kept: dlib descriptor distance, rendered view vs source photo ({SIZE} px, ICT default fit (landmarks + dense); "
          f"same person < {SAME_PERSON}; no face found = failure, distance inf)")
    print(f"(d) Pose check: dlib landmarks + PnP on the view vs the pose asked for (target: median |error| <= "
          f"{TARGETS['pose_deg']:.0f} deg)")
    hdr = (f"{'yaw':>6s} {'views':>6s} {'<0.6':>8s} {'median d':>9s} {'no face':>8s} "
           f"{'|yaw err|':>10s} {'|pitch err|':>12s} {'|roll err|':>11s}")
    print(hdr)
    print("-" * len(hdr))
    per_yaw = {}

    def summarise(vs):
        d = [v["distance"] for v in vs]
        det = [v for v in vs if v["detected"]]
        return {"views": len(vs), "share_under_0.6": float(np.mean([x < SAME_PERSON for x in d])) if d else float("nan"),
                "median_distance": float(np.median(d)) if d else float("nan"),
                "detection_failures": len(vs) - len(det),
                "median_abs_yaw_error": med([abs(v["yaw_error"]) for v in det]),
                "median_abs_pitch_error": med([abs(v["pitch_error"]) for v in det]),
                "median_abs_roll_error": med([abs(v["roll_error"]) for v in det]),
                "median_yaw_error_signed": med([v["yaw_error"] for v in det])}

    def line(label, s):
        return (f"{label:>6s} {s['views']:6d} {100 * s['share_under_0.6']:7.1f}% {s['median_distance']:9.3f} "
                f"{s['detection_failures']:8d} {s['median_abs_yaw_error']:9.2f}° {s['median_abs_pitch_error']:11.2f}° "
                f"{s['median_abs_roll_error']:10.2f}°")

    for y in YAWS:
        s = summarise([v for v in views_rows if v["yaw"] == y])
        per_yaw[str(y)] = s
        print(line(f"{y:+d}", s))
    overall = summarise(views_rows)
    print("-" * len(hdr))
    print(line("all", overall))
    print(f"identity kept overall: {100 * overall['share_under_0.6']:.1f}% of views under {SAME_PERSON}, median "
          f"distance {overall['median_distance']:.3f}; pose median |yaw| {overall['median_abs_yaw_error']:.2f}°, "
          f"|pitch| {overall['median_abs_pitch_error']:.2f}°")
    targets.check("views_median_abs_yaw_error_deg", overall["median_abs_yaw_error"], "<=", TARGETS["pose_deg"], " deg")
    targets.check("views_median_abs_pitch_error_deg", overall["median_abs_pitch_error"], "<=", TARGETS["pose_deg"], " deg")
    per_photo = {}
    for r in good:
        vs = [v for v in views_rows if v["photo"] == r["photo"]]
        per_photo[r["photo"]] = {"share_under_0.6": float(np.mean([v["distance"] < SAME_PERSON for v in vs])),
                                 "median_distance": float(np.median([v["distance"] for v in vs]))}

    load_end = load_average()
    print(f"\nload average at start {load_start}, at end {load_end}")
    return targets.finish(args.json, {
        "photos": len(photos), "fitted": len(good), "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"), "repeats": args.repeats,
        "load_average_start": load_start, "load_average_end": load_end, "targets": TARGETS,
        "mapped_points": [int(k) + 1 for k in ibug],
        "landmark_error_median": medians, "ict_below_eos_photos": wins, "timing_median_seconds": timing,
        "identity_pose_per_yaw": per_yaw, "identity_pose_overall": overall, "identity_per_photo": per_photo,
        "rows": rows,
        "views": [{**v, "distance": (v["distance"] if np.isfinite(v["distance"]) else "inf")} for v in views_rows],
    })


if __name__ == "__main__":
    sys.exit(main())
