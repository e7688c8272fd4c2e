"""Figure (README, docs/benchmarks.md): the bundled astronaut photo across the expression presets (frontal), and the
`smile` preset across yaw -> assets/figures/expressions.png."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from _common import ROOT
from face3d import FitConfig, Pose, load_image, load_morphable_model, reconstruct_faces
from face3d.expressions import PRESET_NAMES, make_variant
from face3d.variants import render_variant
from make_figures import label, photo_crop

SIZE = 160
YAWS = [-60, -45, -30, -15, 0, 15, 30, 45]


def main():
    torch.set_num_threads(2)
    model = load_morphable_model()
    photo = load_image(ROOT / "assets" / "astronaut.png")
    rec = reconstruct_faces(photo, model, fit_config=FitConfig())[0]
    src = photo_crop(photo, rec.face.landmarks, SIZE)

    def variant(name):
        return make_variant(name, rec.fit, model)

    top = [label(src, "photo")]
    for name in PRESET_NAMES:
        top.append(label(render_variant(variant(name), rec, model, [Pose(0)], SIZE).images[0], name))
    views = render_variant(variant("smile"), rec, model, [Pose(y) for y in YAWS], SIZE).images
    bottom = [label(render_variant(variant("fitted"), rec, model, [Pose(0)], SIZE).images[0], "fitted (photo's)")]
    bottom += [label(v, f"smile, yaw {y}") for v, y in zip(views, YAWS)]
    fig = np.concatenate([np.concatenate(top, axis=1), np.concatenate(bottom[: len(top)], axis=1)], axis=0)
    out = ROOT / "assets" / "figures" / "expressions.png"
    Image.fromarray(fig).save(out, optimize=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
