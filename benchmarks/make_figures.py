"""Figures from real runs (README): the bundled astronaut photo re-posed by the 3D stage, ->
assets/figures/astronaut_3d.png.

    cd benchmarks && ../.venv/bin/python make_figures.py [--background plain|photo|both]

`--background both` (default): the yaw row over the plain backdrop ("before") and over the photo's
own surroundings ("after", issue 24's whole-photo views), then the yaw x pitch row over the photo
background; `plain` or `photo`: one yaw row and the yaw x pitch row over that background. The
helpers here (`label`, `photo_crop`, `Views`) serve the other figure scripts too."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from _common import ROOT
from face3d import FitConfig, Pose, load_image, load_morphable_model, reconstruct_faces
from facesynth.api import RenderOptions, render_face
from facesynth.methods import load_method

BACKGROUNDS = {"plain": ["plain"], "photo": ["photo"], "both": ["plain", "photo"]}


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


def figure_arguments(doc: str, out: Path):
    """The parsed flags of a figure script: --background (plain, photo or both as before/after rows;
    `args.backgrounds` lists them) and --out (default `out`)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--background", choices=list(BACKGROUNDS), default="both",
                    help="plain backdrop, the photo's own surroundings, or both as before/after rows (default both)")
    ap.add_argument("--out", type=Path, default=out, help=f"the PNG to write (default {out.relative_to(ROOT)})")
    args = ap.parse_args()
    args.backgrounds = BACKGROUNDS[args.background]
    return args


class Views:
    """Photos fitted once (default fit, largest face) and rendered by any method over any background
    with `facesynth.api.render_face`, as `rotate` makes them."""

    def __init__(self):
        torch.set_num_threads(2)
        self.model = load_morphable_model()
        self._makers = {}

    def fit(self, path):
        """(photo, reconstruction of its largest face)."""
        photo = load_image(path)
        return photo, reconstruct_faces(photo, self.model, fit_config=FitConfig(dense=RenderOptions().dense),
                                        source=str(path))[0]

    def render(self, photo, rec, poses, size: int, background: str, method: str | None = None) -> np.ndarray:
        """(B, size, size, 3) uint8 views of `rec` at `poses` (Pose or yaw) with `method` (default: the default)."""
        options = RenderOptions(size=size, background=background, **({"method": method} if method else {}))
        if options.method not in self._makers:
            self._makers[options.method] = load_method(options.method)
        poses = [p if isinstance(p, Pose) else Pose(float(p)) for p in poses]
        return np.asarray(render_face(rec, photo, self.model, poses, options, self._makers[options.method])[0].images)


def main():
    args = figure_arguments(__doc__, ROOT / "assets" / "figures" / "astronaut_3d.png")
    backgrounds = args.backgrounds
    views = Views()
    photo, rec = views.fit(ROOT / "assets" / "astronaut.png")
    size = 160
    src = photo_crop(photo, rec.face.landmarks, size)
    blank = np.full_like(src, 255)
    yaws = [-60, -45, -30, -15, 0, 15, 30, 45, 60]
    rows = []
    for k, bg in enumerate(backgrounds):
        row = views.render(photo, rec, yaws, size, bg, method="3d")
        first = label(src, "photo") if k == 0 else blank
        rows.append(np.concatenate([first] + [label(v, f"yaw {y} {bg}" if len(backgrounds) > 1 else f"yaw {y}")
                                              for v, y in zip(row, yaws)], axis=1))
    pp = [(-30, 20), (0, 20), (30, 20), (-30, -20), (0, -20), (30, -20), (-30, 0), (0, 0), (30, 0)]
    row2 = views.render(photo, rec, [Pose(y, p) for y, p in pp], size, backgrounds[-1], method="3d")
    rows.append(np.concatenate([blank] + [label(v, f"y{y} p{p}") for v, (y, p) in zip(row2, pp)], axis=1))
    save(np.concatenate(rows, axis=0), args.out)


def save(img: np.ndarray, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(out, optimize=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
