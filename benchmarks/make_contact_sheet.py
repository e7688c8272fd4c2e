"""Contact sheets of the default settings (issue 24), -> assets/figures/contact_sheet.png and
assets/figures/whole_photo_before_after.png.

    cd benchmarks && ../.venv/bin/python make_contact_sheet.py [--photos N] [--size 128]
                     [--out-dir assets/figures] [--only sheet|before-after]

contact_sheet.png: one row per test photo of ../shared/data/faces (17), the source photo's face
crop in the first column, then its views at yaw -45, -30, -15, 0, 15, 30, 45 (pitch 0), 128-px
cells, made with the default RenderOptions (default method and background) from the default fit.
whole_photo_before_after.png: for 3 people (the first photo of each of the first three identity
folders), a row over the plain backdrop ("before") and a row over the photo background ("after"),
same fit, default method. Cells are labelled with the yaw (views are synthetic)."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from _common import ROOT, face_photos
from facesynth.api import RenderOptions
from make_figures import Views, label, photo_crop, save

YAWS = [-45, -30, -15, 0, 15, 30, 45]


def source_cell(photo, rec, size: int, text: str) -> np.ndarray:
    return label(photo_crop(photo, rec.face.landmarks, size), text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=None, help="first N test photos (default all)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--out-dir", type=Path, default=ROOT / "assets" / "figures")
    ap.add_argument("--only", choices=["sheet", "before-after"], default=None)
    args = ap.parse_args()
    views = Views()
    default = RenderOptions()
    photos = face_photos()[: args.photos]
    fits = {}
    if args.only != "before-after":
        rows = []
        for path in photos:
            photo, rec = fits.setdefault(path, views.fit(path))
            imgs = views.render(photo, rec, YAWS, args.size, default.background)
            rows.append(np.concatenate([source_cell(photo, rec, args.size, path.parent.name)]
                                       + [label(v, f"{y}") for v, y in zip(imgs, YAWS)], axis=1))
        save(np.concatenate(rows, axis=0), args.out_dir / "contact_sheet.png")
        print(f"  method {default.method}, background {default.background}, {len(photos)} photos")
    if args.only != "sheet":
        people = {}
        for path in photos:
            people.setdefault(path.parent.name, path)
        rows = []
        for path in list(people.values())[:3]:
            photo, rec = fits[path] if path in fits else views.fit(path)
            for k, bg in enumerate(("plain", "photo")):
                imgs = views.render(photo, rec, YAWS, args.size, bg)
                first = source_cell(photo, rec, args.size, path.parent.name) if k == 0 else np.full(
                    (args.size, args.size, 3), 255, np.uint8)
                rows.append(np.concatenate([first] + [label(v, f"{y} {bg}") for v, y in zip(imgs, YAWS)], axis=1))
        save(np.concatenate(rows, axis=0), args.out_dir / "whole_photo_before_after.png")
        print(f"  method {default.method}, backgrounds plain (before) and photo (after), {len(rows) // 2} people")


if __name__ == "__main__":
    main()
