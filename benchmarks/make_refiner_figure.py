"""Figure (README, docs/benchmarks.md): source photo, then the 3D-only row and the hybrid row across yaw, for three people
(the bundled astronaut and two public-domain official portraits from ../shared/data/faces), ->
assets/figures/hybrid.png. The views are labelled as synthetic.

    cd benchmarks && ../.venv/bin/python make_refiner_figure.py [--background plain|photo|both]

`--background both` (default): per person, the 3d and hybrid rows over the plain backdrop
("before") and then over the photo's own surroundings ("after", issue 24); otherwise the two rows
over the one background."""
from __future__ import annotations

import numpy as np

from _common import ROOT
from face3d.morphable_model import default_data_dir
from make_figures import Views, figure_arguments, label, photo_crop, save

YAWS = [-60, -30, 0, 30, 60]
SIZE = 128


def main():
    args = figure_arguments(__doc__, ROOT / "assets" / "figures" / "hybrid.png")
    backgrounds = args.backgrounds
    views = Views()
    faces = default_data_dir() / "faces"
    photos = [ROOT / "assets" / "astronaut.png", faces / "obama" / "face_recognition_obama.jpg",
              faces / "biden" / "face_recognition_biden.jpg"]
    rows = []
    for path in photos:
        photo, rec = views.fit(path)
        src = photo_crop(photo, rec.face.landmarks, SIZE)
        blank = np.full_like(src, 255)
        for k, bg in enumerate(backgrounds):
            tag = f" {bg}" if len(backgrounds) > 1 else ""
            for j, method in enumerate(("3d", "hybrid")):
                imgs = views.render(photo, rec, YAWS, SIZE, bg, method=method)
                first = label(src, "photo") if k == 0 and j == 0 else blank
                rows.append(np.concatenate([first] + [label(v, f"{method} {y}{tag}") for v, y in zip(imgs, YAWS)], 1))
    save(np.concatenate(rows, 0), args.out)


if __name__ == "__main__":
    main()
