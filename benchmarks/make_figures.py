"""Figures from real runs (README): the bundled astronaut photo re-posed by the 3D stage."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

from _common import ROOT
from face3d import FitConfig, Pose, load_image, load_morphable_model, reconstruct_faces, render_views


def label(img: np.ndarray, text: str) -> np.ndarray:
    im = Image.fromarray(img)
    ImageDraw.Draw(im).text((4, 2), text, fill=(255, 255, 255))
    return np.asarray(im)


def photo_crop(photo: np.ndarray, landmarks: np.ndarray, size: int) -> np.ndarray:
    """A square crop of the photo around the face, for the first column of a figure."""
    c = landmarks.mean(0)
    side = 2.2 * (landmarks.max(0) - landmarks.min(0)).max()
    x0, y0 = int(c[0] - side / 2), int(c[1] - side / 2)
    crop = photo[max(0, y0): y0 + int(side), max(0, x0): x0 + int(side)]
    return np.asarray(Image.fromarray(crop).resize((size, size), Image.LANCZOS))


def main():
    torch.set_num_threads(2)
    model = load_morphable_model()
    photo = load_image(ROOT / "assets" / "astronaut.png")
    rec = reconstruct_faces(photo, model, fit_config=FitConfig())[0]
    size = 160
    src = photo_crop(photo, rec.face.landmarks, size)
    yaws = [-60, -45, -30, -15, 0, 15, 30, 45, 60]
    row1 = render_views(rec.fit, rec.texture, [Pose(y) for y in yaws], model, size=size).images
    row2 = render_views(rec.fit, rec.texture, [Pose(y, p) for y, p in zip([-30, 0, 30] * 3, [20] * 3 + [-20] * 3 + [0] * 3)],
                        model, size=size).images
    top = np.concatenate([label(src, "photo")] + [label(v, f"yaw {y}") for v, y in zip(row1, yaws)], axis=1)
    pp = [(-30, 20), (0, 20), (30, 20), (-30, -20), (0, -20), (30, -20), (-30, 0), (0, 0), (30, 0)]
    bottom = np.concatenate([np.full_like(src, 255)] + [label(v, f"y{y} p{p}") for v, (y, p) in zip(row2, pp)], axis=1)
    fig = np.concatenate([top, bottom], axis=0)
    out = ROOT / "assets" / "figures" / "astronaut_3d.png"
    Image.fromarray(fig).save(out, optimize=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
