"""Figure (README, docs/benchmarks.md): source photo, then the 3D-only row and the hybrid row across yaw, for three people
(the bundled astronaut and two public-domain official portraits from ../shared/data/faces), ->
assets/figures/hybrid.png. The views are labelled as synthetic."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from _common import ROOT
from face3d import FitConfig, Pose, load_image, load_morphable_model, reconstruct_faces, render_views
from face3d.morphable_model import default_data_dir
from ganrefine.hybrid import load_hybrid_refiner, refine_views
from make_figures import label, photo_crop

YAWS = [-60, -30, 0, 30, 60]
SIZE = 128


def main():
    torch.set_num_threads(2)
    model = load_morphable_model()
    refiner = load_hybrid_refiner()
    faces = default_data_dir() / "faces"
    photos = [ROOT / "assets" / "astronaut.png", faces / "obama" / "face_recognition_obama.jpg",
              faces / "biden" / "face_recognition_biden.jpg"]
    rows = []
    for path in photos:
        photo = load_image(path)
        rec = reconstruct_faces(photo, model, fit_config=FitConfig())[0]
        views = render_views(rec.fit, rec.texture, [Pose(float(y)) for y in YAWS], model, size=SIZE)
        hybrid = refine_views(refiner, views)
        src = photo_crop(photo, rec.face.landmarks, SIZE)
        blank = np.full_like(src, 255)
        rows.append(np.concatenate([label(src, "photo")] + [label(v, f"3d {y}") for v, y in zip(views.images, YAWS)], 1))
        rows.append(np.concatenate([blank] + [label(v, f"hybrid {y}") for v, y in zip(hybrid, YAWS)], 1))
    out = ROOT / "assets" / "figures" / "hybrid.png"
    Image.fromarray(np.concatenate(rows, 0)).save(out, optimize=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
