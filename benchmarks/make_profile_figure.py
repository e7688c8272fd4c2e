"""Figures of issue 26 -> assets/figures/profile_views.png and assets/figures/profiles_in.png.

    cd benchmarks && ../.venv/bin/python make_profile_figure.py [--size 112] [--out-dir assets/figures]
                     [--only views|in]

profile_views.png (views out to +-90): for 3 test people (the first photo of the first three identity
folders of ../shared/data/faces), the source photo's face crop, then the default fit's views at yaw
-90..90 in 15 degree steps, whole-photo background (the default), one row with method 3d and one
with hybrid. Cells are labelled with the yaw and method.

profiles_in.png (profiles in): rows of a profile input, its frontalised views (`rotate --yaw 0`,
method 3d and hybrid, 256 px shown at `--size` * 1.4) and another photo of the same person, each
labelled with its dlib distance d to that photo (the frontal views also with the yaw the fit read
off the input). The inputs: 3d views at +-75 and +-90 of test photos (256 px, whole-photo
background, as `bench_profiles.py` makes them) and the two LFW photos most turned by the PnP yaw of
`bench_profiles.py`'s LFW scan (when its cache exists).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from _common import ROOT, face_photos, lfw_dir
from bench_profiles import CACHE, Identity
from face3d.camera import Pose
from face3d.errors import FaceSynthError
from face3d.image_io import load_image
from face3d.pipeline import reconstruct_faces
from make_figures import Views, photo_crop, save

YAWS = list(range(-90, 91, 15))
#: (test photo stem, yaw) of the profile inputs in profiles_in.png
PROFILE_INPUTS = [("face_recognition_obama2", -75), ("deepface_img15", 75), ("deepface_img62", 90),
                  ("deepface_img59", -90)]


def label2(img: np.ndarray, top: str, bottom: str = "") -> np.ndarray:
    """White text with a dark outline (readable on a white backdrop) at the top of the cell and,
    when given, a second line at its bottom."""
    im = Image.fromarray(img)
    draw = ImageDraw.Draw(im)
    for xy, text in (((4, 2), top), ((4, im.height - 13), bottom)):
        if text:
            draw.text(xy, text, fill=(255, 255, 255), stroke_width=2, stroke_fill=(0, 0, 0))
    return np.asarray(im)


def resized(img: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(img).resize((size, size), Image.LANCZOS))


def views_figure(views: Views, size: int, out: Path) -> None:
    people: dict[str, Path] = {}
    for path in face_photos():
        people.setdefault(path.parent.name, path)
    rows = []
    for path in list(people.values())[:3]:
        photo, rec = views.fit(path)
        for method in ("3d", "hybrid"):
            imgs = views.render(photo, rec, YAWS, size, "photo", method=method)
            first = label2(photo_crop(photo, rec.face.landmarks, size), path.parent.name) if method == "3d" else \
                np.full((size, size, 3), 255, np.uint8)
            rows.append(np.concatenate([first] + [label2(v, f"{y} {method}") for v, y in zip(imgs, YAWS)], axis=1))
    save(np.concatenate(rows, axis=0), out)


def profile_row(views: Views, ident: Identity, image: np.ndarray, name: str, others: list[Path], size: int):
    """[input, frontal 3d, frontal hybrid, another photo] of one profile input, labelled with distances."""
    ref_path = others[0]
    ref_img = load_image(ref_path)
    ref = ident.of_image(ref_img)
    try:
        rec = reconstruct_faces(image, views.model, source=name)[0]
    except FaceSynthError:
        rec = None
    cells = [label2(resized(image, size), name, f"input: d={ident.distance(ident.of_image(image), ref):.2f}")]
    for method in ("3d", "hybrid"):
        if rec is None:
            cells.append(label2(np.full((size, size, 3), 128, np.uint8), "no face found"))
            continue
        front = views.render(image, rec, [Pose(0.0)], 256, "photo", method=method)[0]
        d = ident.distance(ident.of_image(front), ref)
        cells.append(label2(resized(front, size), f"frontal, {method}", f"d={d:.2f}, fit yaw {rec.fit.pose.yaw:.0f}"))
    face = ident_crop(ref_img, size)
    cells.append(label2(face, "another photo", ref_path.stem[-20:]))
    return np.concatenate(cells, axis=1)


def ident_crop(image: np.ndarray, size: int) -> np.ndarray:
    from face3d.landmarks import detect_faces

    faces = detect_faces(image, detector="auto")
    return photo_crop(image, faces[0].landmarks, size) if faces else resized(image, size)


def profiles_in_figure(views: Views, size: int, out: Path) -> None:
    ident = Identity()
    by_stem = {p.stem: p for p in face_photos()}
    rows = []
    for stem, yaw in PROFILE_INPUTS:
        path = by_stem[stem]
        photo, rec = views.fit(path)
        image = views.render(photo, rec, [Pose(float(yaw))], 256, "photo", method="3d")[0]
        others = [p for p in sorted(path.parent.glob("*.jpg")) if p != path]
        rows.append(profile_row(views, ident, image, f"{stem.split('_')[-1]}, yaw {yaw}", others, size))
    scan = CACHE / "lfw_yaw_scan.json"
    if scan.is_file():
        import json

        best = sorted(json.loads(scan.read_text()), key=lambda r: -abs(r["pnp_yaw"]))[:2]
        for r in best:
            path = lfw_dir() / r["photo"]
            others = [p for p in sorted(path.parent.glob("*.jpg")) if p != path]
            rows.append(profile_row(views, ident, load_image(path), f"LFW {path.parent.name[:18]}", others, size))
    save(np.concatenate(rows, axis=0), out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=104, help="cell size of profile_views.png (default 104)")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "assets" / "figures")
    ap.add_argument("--only", choices=["views", "in"], default=None)
    args = ap.parse_args()
    views = Views()
    if args.only != "in":
        views_figure(views, args.size, args.out_dir / "profile_views.png")
    if args.only != "views":
        profiles_in_figure(views, int(args.size * 1.4), args.out_dir / "profiles_in.png")


if __name__ == "__main__":
    main()
