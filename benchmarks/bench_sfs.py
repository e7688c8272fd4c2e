"""Shape from Shading (face3d.sfs): synthetic ground truth, identity on real photos, runtime, failure case.

a. Synthetic: a random model face (identity within +-2 sigma, mild expression) plus fine relief the
   PCA basis cannot express - random band-limited bumps (sigma 5-10 mm, 0.5-2 mm) and forehead /
   crow's-feet wrinkles (sinusoids, 0.6-1 mm) displaced along the normals - a real skin albedo (the
   atlas of a real photo: brows, lips, skin-tone variation), random SH light, pose yaw +-30 /
   pitch +-10, rendered at 512 px. The 3DMM is fitted (default fit: landmarks + dense term) to the
   *true* landmarks (inner 51: the projected landmark vertices; jaw: the true occluding-contour
   points nearest dlib's jaw points), so the comparison isolates what SFS adds. Measured at the
   source view over the face (true face-skin pixels inside the hull of the 68 true landmarks,
   covered by both surfaces):
     - depth RMSE (mm) of the fit vs fit + SFS against the true depth, each after subtracting its
       median offset (a single view does not fix the distance); also `depthc`, the same without the
       pixels within 2 px of an occluding contour of the true surface (depth jump > 3 mm), where a
       sub-pixel contour shift gives centimetre errors that dominate the plain RMSE (e.g. 5.3 mm for
       an oracle 3DMM whose error off the contours is under 1 mm);
     - photometric RMSE (0..1): each geometry rendered with the TRUE albedo and TRUE light vs the
       photo (so the figure measures the geometry's shading, not our albedo estimate).
b. Real photos (shared/data/faces): dlib identity distance (dlib's own ResNet descriptor of the
   face dlib finds in the view) between re-posed views (yaw -45, -30, 30, 45; 128 px, relight keep)
   and the source photo, without and with SFS; medians.
c. SFS runtime per face (the real photos, 128 px working resolution), median.
d. Failure cases: a saturated (white) and a very dark face region fall back to the 3DMM geometry
   with a warning.

Targets (issue 3), checked in the run; it exits 1 when one is missed (`--target NAME=VALUE` changes
one): (a) on the 3DMM fit to the true landmarks, median depth RMSE and median photometric RMSE each
>= 30% lower after SFS (missed: issue 3 is blocked, see bench_sfs_ambiguity.py, so a full run exits
1); (b) median identity distance with SFS <= without + 0.01; (c) median SFS runtime <= 1 s per face;
(d) both failure cases warn and keep finite vertices. With --skip-real, (b) and (c) are not checked.

    cd benchmarks && ../.venv/bin/python bench_sfs.py [--n 12] [--skip-real]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from _common import RESULTS, Targets, add_target_option, face_photos  # noqa: E402
from bench_dense import random_face_camera, random_sh, render_albedo_sh, shade_albedo_sh  # noqa: E402  (the same synthetic faces)
from face3d.camera import Pose, transform  # noqa: E402
from face3d.fitting import FitConfig, fit_morphable_model, select_contour_vertices  # noqa: E402
from face3d.image_io import load_image  # noqa: E402
from face3d.landmarks import detect_faces, model_file  # noqa: E402
from face3d.morphable_model import load_morphable_model  # noqa: E402
from face3d.pipeline import reconstruct_faces  # noqa: E402
from face3d.render import render_views  # noqa: E402
from face3d.sfs import SFSConfig, refine_shape_from_shading  # noqa: E402
from face3d.shading import vertex_normals  # noqa: E402
from face3d.texture import extract_texture  # noqa: E402

SIZE = 512
YAWS = (-45.0, -30.0, 30.0, 45.0)


# ------------------------------------------------------------------------------------------
# synthetic faces with relief


def synthetic_albedo(atlas: np.ndarray) -> torch.Tensor:
    """The known albedo: a real photo's atlas low-passed (sigma 6 texels, ~3 mm) - skin tone, brows,
    lips and eyes stay as colour regions, the photo's own fine baked-in shading (its wrinkles) goes."""
    import cv2

    a = cv2.GaussianBlur(atlas.astype(np.float32), (0, 0), 6.0) * 0.9
    return torch.from_numpy(a).permute(2, 0, 1)[None].contiguous()


def face_region(model) -> np.ndarray:
    m = model.mean
    return model.skin & (m[:, 2] > 60) & (np.abs(m[:, 0]) < 70) & (m[:, 1] > -70) & (m[:, 1] < 110)


def random_relief(model, rng) -> np.ndarray:
    """Per-vertex relief (V,) mm: band-limited bumps and wrinkles, on the face only, tapered."""
    m = model.mean
    V = m.shape[0]
    face = face_region(model)
    cand = np.nonzero(face)[0]
    d = np.zeros(V)
    for c in rng.choice(cand, size=14, replace=False):
        sig = rng.uniform(5.0, 10.0)
        amp = rng.uniform(0.5, 2.0) * rng.choice([-1.0, 1.0])
        d += amp * np.exp(-((m - m[c]) ** 2).sum(1) / (2 * sig ** 2))
    # forehead wrinkles: horizontal ridges above the brows
    lam = rng.uniform(10.0, 16.0)
    fh = np.clip((m[:, 1] - 70) / 10, 0, 1) * np.clip((105 - m[:, 1]) / 10, 0, 1) * np.clip((55 - np.abs(m[:, 0])) / 15, 0, 1)
    d += rng.uniform(0.6, 1.0) * fh * np.sin(2 * np.pi * m[:, 1] / lam + rng.uniform(0, 2 * np.pi))
    # crow's feet / cheek folds: oblique ridges beside the eyes
    for side in (-1, 1):
        cx, cy = side * 62.0, 25.0
        r = np.sqrt((m[:, 0] - cx) ** 2 + (m[:, 1] - cy) ** 2)
        win = np.exp(-r ** 2 / (2 * 12.0 ** 2))
        ang = np.arctan2(m[:, 1] - cy, m[:, 0] - cx)
        d += rng.uniform(0.5, 0.9) * win * np.sin(5 * ang)
    return np.where(face, d, 0.0) * np.clip((m[:, 2] - 60) / 15, 0, 1)


def synth(model, albedo_tex, rng, relief=True):
    f = random_face_camera(model, rng, 30, 10, 5)
    faces = model.tensors()["triangles"]
    v = f["v"]
    rel = torch.zeros(model.num_vertices)
    if relief:
        n = vertex_normals(v, faces)
        rel = torch.from_numpy(random_relief(model, rng).astype(np.float32))
        v = v + rel[None, :, None] * n
    sh = random_sh(rng)
    img, frag, scr = render_albedo_sh(model, v, f["R"], f["t"], f["focal"], albedo_tex, sh)
    return {"image": img, "pose": f["pose"], "sh": sh, "screen": scr[0].numpy(), "zbuf": frag.zbuf[0].numpy(),
            "face": frag.pix_to_face[0].numpy(), "vertices": v, "relief": rel.numpy(), "alpha": f["alpha"],
            "beta": f["beta"], "rotation": f["R"][0].numpy().astype(np.float64),
            "translation": f["t"][0].numpy().astype(np.float64), "focal": f["focal"]}


def oracle_fit(model, s, q):
    """The 3DMM at the true coefficients and camera: the best the PCA basis can do (no relief)."""
    from face3d.fitting import FaceFit

    return FaceFit(model_name=model.name, image_size=(SIZE, SIZE), identity=s["alpha"], expression=s["beta"],
                   rotation=s["rotation"], translation=s["translation"], focal=float(s["focal"]),
                   center=(SIZE / 2.0, SIZE / 2.0), landmarks=q)


def true_landmarks(model, s):
    """Inner 51: projected landmark vertices; jaw: the true contour points nearest dlib's jaw points."""
    scr = s["screen"][:, :2]
    found = detect_faces(s["image"])
    lmv = model.landmark_vertices
    q = scr[np.maximum(lmv, 0)].astype(np.float64)
    if found:
        corr = select_contour_vertices(model, lambda idx: scr[idx], found[0].landmarks)
        q[:17] = scr[corr[:17]]
    return q


def source_render(fit, model, verts, albedo_tex, sh):
    """Depth (S, S), face index (S, S) and the rendering with the given albedo atlas and light."""
    R = torch.from_numpy(fit.rotation.astype(np.float32))[None]
    tr = torch.from_numpy(fit.translation.astype(np.float32))[None]
    cam_pts = transform(verts, R, tr)
    frag, rgb = shade_albedo_sh(model, cam_pts, fit.camera().project(cam_pts), albedo_tex, sh, SIZE)
    return frag.zbuf[0].numpy(), frag.pix_to_face[0].numpy(), rgb


def face_mask(model, s, q):
    import cv2

    skin_f = model.skin[model.triangles].all(1)
    m = (s["face"] >= 0) & skin_f[np.maximum(s["face"], 0)]
    hull = np.zeros((SIZE, SIZE), np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(np.round(q).astype(np.int32)), 1)
    return m & (hull > 0)


def depth_jumps(zbuf: np.ndarray, step_mm: float = 3.0, radius: int = 2) -> np.ndarray:
    """Pixels within `radius` px of a jump of the true depth over `step_mm` between neighbours (occluding
    contours: nose side, jaw, eyelids). There a sub-pixel shift of a contour gives a depth error of
    centimetres that says nothing about the surface shape, so the `depthc` figures leave them out."""
    import cv2

    z = zbuf.astype(np.float32)
    jump = np.zeros(z.shape, bool)
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        a = np.zeros(z.shape, bool)
        ys = slice(0, z.shape[0] - dy)
        xs = slice(max(-dx, 0), z.shape[1] - max(dx, 0))
        ys2 = slice(dy, z.shape[0])
        xs2 = slice(max(dx, 0), z.shape[1] - max(-dx, 0))
        big = np.abs(z[ys, xs] - z[ys2, xs2]) > step_mm
        a[ys, xs] |= big
        a[ys2, xs2] |= big
        jump |= a
    return cv2.dilate(jump.astype(np.uint8), np.ones((2 * radius + 1,) * 2, np.uint8)) > 0


def evaluate_synthetic(model, albedo_tex, rng, sfs_cfg=None, fit_cfg=None, oracle=True):
    """One synthetic face: depth / photometric error of fit vs fit + SFS. None if no face found."""
    s = synth(model, albedo_tex, rng)
    q = true_landmarks(model, s)
    fits = {"": fit_morphable_model(s["image"], q, model, fit_cfg or FitConfig())}
    if oracle:
        fits["oracle_"] = oracle_fit(model, s, q)
    mask = face_mask(model, s, q)
    out = {"pose": s["pose"].as_tuple()}
    for prefix, fit in fits.items():
        t0 = time.perf_counter()
        res = refine_shape_from_shading(fit, s["image"], model, sfs_cfg)
        out[prefix + "sfs_seconds"] = time.perf_counter() - t0
        out[prefix + "warning"] = res.warning
        out[prefix + "max_disp_mm"] = float(np.abs(res.displacement).max())
        out.update({prefix + k: v for k, v in geometry_errors(model, s, fit, res, mask, albedo_tex).items()})
    return out


def geometry_errors(model, s, fit, res, mask, albedo_tex) -> dict:
    """Depth RMSE (plain and off the occluding contours) and photometric RMSE of the fit and of the
    fit + SFS result `res` against synthetic face `s`, over `mask` pixels that both surfaces cover."""
    img = s["image"].astype(np.float64) / 255.0
    maps, out = {}, {}
    with torch.no_grad():
        for name, verts in (("fit", fit.vertices(model)), ("sfs", res.vertices(fit, model))):
            maps[name] = source_render(fit, model, verts, albedo_tex, s["sh"])
    common = mask.copy()
    for name in maps:
        common &= maps[name][1] >= 0
    smooth = common & ~depth_jumps(s["zbuf"])
    for name, (z, f, rgb) in maps.items():
        dz = z[common] - s["zbuf"][common]
        dz = dz - np.median(dz)
        out[f"depth_rmse_{name}"] = float(np.sqrt((dz ** 2).mean()))
        dc = z[smooth] - s["zbuf"][smooth]
        dc = dc - np.median(dc)
        out[f"depthc_rmse_{name}"] = float(np.sqrt((dc ** 2).mean()))
        out[f"photo_rmse_{name}"] = float(np.sqrt(((rgb[common] - img[common]) ** 2).mean()))
    out["pixels"] = int(common.sum())
    out["pixels_off_contours"] = int(smooth.sum())
    return out


# ------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--skip-real", action="store_true")
    ap.add_argument("--json", default=str(RESULTS / "sfs.json"))
    add_target_option(ap)
    args = ap.parse_args()
    targets = Targets.from_args(args)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))   # 1 on a shared machine
    model = load_morphable_model()
    payload = {"load_average_start": os.getloadavg()}

    # a. synthetic
    photo = [p for p in face_photos() if p.name == "face_recognition_biden2.jpg"][0]
    rec = reconstruct_faces(load_image(photo), model, fit_config=FitConfig(dense=False))[0]
    albedo_tex = synthetic_albedo(rec.texture.image)
    rng = np.random.default_rng(args.seed)
    rows = []
    while len(rows) < args.n:
        r = evaluate_synthetic(model, albedo_tex, rng)
        rows.append(r)
        print(f"{len(rows):2d} yaw {r['pose'][0]:6.1f} | fit: depth mm {r['depth_rmse_fit']:.3f} -> {r['depth_rmse_sfs']:.3f}, "
              f"photo {r['photo_rmse_fit']:.4f} -> {r['photo_rmse_sfs']:.4f} | oracle 3DMM: depth {r['oracle_depth_rmse_fit']:.3f} -> "
              f"{r['oracle_depth_rmse_sfs']:.3f}, photo {r['oracle_photo_rmse_fit']:.4f} -> {r['oracle_photo_rmse_sfs']:.4f} | "
              f"max |d| {r['max_disp_mm']:.2f} | {r['sfs_seconds']:.2f}s {r['warning'] or ''}", flush=True)
    payload["synthetic"] = {"n": len(rows), "rows": rows}
    for prefix, label in (("", "3DMM fit to the true landmarks"), ("oracle_", "oracle 3DMM (true coefficients + camera; error = relief only)")):
        syn = {k: float(np.median([r[prefix + k] for r in rows])) for k in
               ("depth_rmse_fit", "depth_rmse_sfs", "depthc_rmse_fit", "depthc_rmse_sfs", "photo_rmse_fit",
                "photo_rmse_sfs", "sfs_seconds")}
        syn["depth_reduction"] = 1 - syn["depth_rmse_sfs"] / syn["depth_rmse_fit"]
        syn["depthc_reduction"] = 1 - syn["depthc_rmse_sfs"] / syn["depthc_rmse_fit"]
        syn["photo_reduction"] = 1 - syn["photo_rmse_sfs"] / syn["photo_rmse_fit"]
        syn["depth_better_share"] = float(np.mean([r[prefix + "depth_rmse_sfs"] < r[prefix + "depth_rmse_fit"] for r in rows]))
        syn["photo_better_share"] = float(np.mean([r[prefix + "photo_rmse_sfs"] < r[prefix + "photo_rmse_fit"] for r in rows]))
        print(f"\n(a) synthetic, {label}, {len(rows)} faces (medians): depth RMSE {syn['depth_rmse_fit']:.3f} -> "
              f"{syn['depth_rmse_sfs']:.3f} mm ({100 * syn['depth_reduction']:.1f}% lower, better on "
              f"{100 * syn['depth_better_share']:.0f}%); photometric RMSE {syn['photo_rmse_fit']:.4f} -> {syn['photo_rmse_sfs']:.4f} "
              f"({100 * syn['photo_reduction']:.1f}% lower, better on {100 * syn['photo_better_share']:.0f}%); "
              f"depth RMSE off the occluding contours {syn['depthc_rmse_fit']:.3f} -> {syn['depthc_rmse_sfs']:.3f} mm "
              f"({100 * syn['depthc_reduction']:.1f}% lower)")
        payload["synthetic"]["median_" + (prefix or "fit_")] = syn
    syn_fit = payload["synthetic"]["median_fit_"]
    targets.check("synthetic_depth_reduction", syn_fit["depth_reduction"], ">=", 0.30, note="(3DMM fit -> fit + SFS)")
    targets.check("synthetic_photometric_reduction", syn_fit["photo_reduction"], ">=", 0.30, note="(3DMM fit -> fit + SFS)")

    # b + c. real photos
    if not args.skip_real:
        import dlib

        from face3d.landmarks import _detector, _predictor

        rec_net = dlib.face_recognition_model_v1(str(model_file("dlib_face_recognition_resnet_model_v1.dat")))

        def descriptor(img):
            rects = _detector()(img, 1)
            if len(rects) == 0:
                return None
            r = max(rects, key=lambda r: r.width() * r.height())
            return np.asarray(rec_net.compute_face_descriptor(img, _predictor()(img, r)), np.float64)

        dist = {"no_sfs": [], "sfs": []}
        per_photo, times, warnings = [], [], []
        poses = [Pose(y, 0.0, 0.0) for y in YAWS]
        for path in face_photos():
            img = load_image(path)
            recs = reconstruct_faces(img, model)
            if not recs:
                continue
            fit = recs[0].fit
            src = descriptor(img)
            t0 = time.perf_counter()
            res = refine_shape_from_shading(fit, img, model)
            times.append(time.perf_counter() - t0)
            if res.warning:
                warnings.append(f"{path.name}: {res.warning}")
            row = {"photo": f"{path.parent.name}/{path.name}", "sfs_seconds": times[-1], "warning": res.warning,
                   "rms_mm": res.stats.get("rms_mm"), "max_abs_mm": res.stats.get("max_abs_mm"), "views": {}}
            for name, verts in (("no_sfs", None), ("sfs", res.vertices(fit, model))):
                tex = extract_texture(fit, img, model, vertices=verts)
                views = render_views(fit, tex, poses, model, size=128, vertices=verts)
                ds = []
                for pose, im in zip(poses, views.images):
                    dsc = descriptor(np.ascontiguousarray(im))
                    dd = float("inf") if dsc is None else float(np.linalg.norm(dsc - src))
                    ds.append(dd)
                    dist[name].append(dd)
                row["views"][name] = ds
            per_photo.append(row)
            print(f"  {row['photo']:44s} no-sfs {np.median(row['views']['no_sfs']):.4f} sfs {np.median(row['views']['sfs']):.4f} "
                  f"| d rms {row['rms_mm'] or 0:.2f} max {row['max_abs_mm'] or 0:.2f} mm | {times[-1]:.2f}s {res.warning or ''}", flush=True)
        med = {k: float(np.median(v)) for k, v in dist.items()}
        paired = [b - a for a, b in zip(dist["no_sfs"], dist["sfs"]) if np.isfinite(a) and np.isfinite(b)]
        print(f"\n(b) identity distance to the source photo, {len(dist['sfs'])} views (yaw {YAWS}): median without SFS "
              f"{med['no_sfs']:.4f}, with SFS {med['sfs']:.4f} (diff {med['sfs'] - med['no_sfs']:+.4f}); "
              f"paired median diff {np.median(paired):+.4f}, SFS better on {100 * np.mean(np.array(paired) < 0):.0f}% of views")
        print(f"(c) SFS runtime per face: median {statistics.median(times):.3f}s (max {max(times):.3f}s) at 128 px; "
              f"load average {os.getloadavg()}")
        payload["real"] = {"median_distance": med, "paired_median_diff": float(np.median(paired)),
                           "sfs_better_share": float(np.mean(np.array(paired) < 0)), "yaws": YAWS,
                           "n_views": len(dist["sfs"]), "misses": {k: int(np.sum(~np.isfinite(v))) for k, v in dist.items()},
                           "per_photo": per_photo, "warnings": warnings}
        targets.check("identity_distance_sfs_minus_no_sfs", med["sfs"] - med["no_sfs"], "<=", 0.01,
                      note="(medians over the views)")
        targets.check("sfs_seconds_per_face", statistics.median(times), "<=", 1.0, " s")
        payload["runtime"] = {"median_seconds": statistics.median(times), "max_seconds": max(times), "size": SFSConfig().size,
                              "load_average_end": os.getloadavg()}

    # d. failure cases
    img = load_image(face_photos()[0])
    fit = reconstruct_faces(img, model)[0].fit
    fails = {}
    for name, val in (("saturated", 255), ("dark", 3)):
        bad = img.copy()
        lo, hi = fit.landmarks.min(0).astype(int), fit.landmarks.max(0).astype(int)
        pad = (hi - lo) // 3
        bad[max(lo[1] - pad[1], 0):hi[1] + pad[1], max(lo[0] - pad[0], 0):hi[0] + pad[0]] = val
        res = refine_shape_from_shading(fit, bad, model)
        fails[name] = {"warning": res.warning, "max_abs_mm": float(np.abs(res.displacement).max()),
                       "finite": bool(np.all(np.isfinite(res.vertices(fit, model).numpy())))}
        print(f"(d) {name}: warning={res.warning!r}, max |d| {fails[name]['max_abs_mm']:.2f} mm")
        targets.check(f"failure_case_{name}_warns", res.warning is not None, "==", True)
        targets.check(f"failure_case_{name}_finite", fails[name]["finite"], "==", True)
    payload["failure_cases"] = fails
    payload["load_average_end"] = os.getloadavg()
    return targets.finish(args.json, payload)


if __name__ == "__main__":
    sys.exit(main())
