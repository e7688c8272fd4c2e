"""README figure: the bundled astronaut photo across the expression presets (frontal), and the
`smile` preset across yaw -> assets/figures/expressions.png."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

from _common import ROOT
from face3d import FitConfig, Pose, load_image, load_morphable_model, reconstruct_faces
from face3d.expressions import PRESET_NAMES, Variant, expression_coefficients, parse_expression
from ganrefine.expression_options import render_variant

SIZE = 160
YAWS = [-60, -45, -30, -15, 0, 15, 30, 45]


def label(img: np.ndarray, text: str) -> np.ndarray:
    im = Image.fromarray(img)
    ImageDraw.Draw(im).text((4, 2), text, fill=(255, 255, 255))
    return np.asarray(im)


def main():
    torch.set_num_threads(2)
    model = load_morphable_model()
    photo = load_image(ROOT / "assets" / "astronaut.png")
    rec = reconstruct_faces(photo, model, fit_config=FitConfig())[0]
    lm = rec.face.landmarks
    c = lm.mean(0)
    side = 2.2 * (lm.max(0) - lm.min(0)).max()
    x0, y0 = int(c[0] - side / 2), int(c[1] - side / 2)
    crop = photo[max(0, y0): y0 + int(side), max(0, x0): x0 + int(side)]
    src = np.asarray(Image.fromarray(crop).resize((SIZE, SIZE), Image.LANCZOS))

    def variant(name):
        spec = parse_expression(name)
        return Variant(spec, expression_coefficients(spec, model, rec.fit.expression), None)

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
