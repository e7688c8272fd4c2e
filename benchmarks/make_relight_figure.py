"""Figure (README, docs/benchmarks.md): one test photo relit with the learnt albedo model ->
assets/figures/relit.png.

Row 1: the photo, and its `3d` views as photographed (`--relight keep`). Rows 2-6: the texture
de-lit by the light the albedo model estimates (`face3d.sfs.delight_image`), under five lights
drawn from the LFW lights of the albedo model (`face3d.sfs.relight_sh`, as `--relight random`
draws them), the same light across a row; the first column gives its direction (x right, y up,
z toward the viewer).

    cd benchmarks && ../.venv/bin/python make_relight_figure.py [--photo obama/face_recognition_obama.jpg]
"""
from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
import torch
from PIL import Image, ImageDraw

from _common import ROOT, face_photos
from face3d import FitConfig, Pose, load_image, load_morphable_model, reconstruct_faces
from face3d.albedo_model import light_direction, shipped_albedo_model
from face3d.render import render_views
from face3d.sfs import SFSConfig, delight_image, refine_shape_from_shading, relight_sh
from face3d.texture import extract_texture
from make_figures import label, photo_crop

SIZE = 160
YAWS = [-40, -20, 0, 20, 40]
LIGHTS = 5


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photo", default="obama/face_recognition_obama.jpg", help="a photo of ../shared/data/faces")
    ap.add_argument("--seed", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = load_morphable_model()
    am = shipped_albedo_model(model)
    path = [p for p in face_photos() if f"{p.parent.name}/{p.name}" == args.photo][0]
    photo = load_image(path)
    rec = reconstruct_faces(photo, model, fit_config=FitConfig())[0]
    poses = [Pose(y) for y in YAWS]
    kept = render_views(rec.fit, rec.texture, poses, model, size=SIZE).images
    rows = [[label(photo_crop(photo, rec.face.landmarks, SIZE), "photo")]
            + [label(v, f"as photographed, yaw {y}") for v, y in zip(kept, YAWS)]]
    result = refine_shape_from_shading(rec.fit, photo, model, SFSConfig(iterations=0), albedo_model=am)
    delit = delight_image(rec.fit, photo, model, result)
    texture = extract_texture(replace(rec.fit, sh=np.zeros_like(rec.fit.sh)), delit, model)   # as face3d.variants.prepare_sfs
    lights = relight_sh("random", LIGHTS, seed=args.seed, lights=am.lights)
    for k, light in enumerate(lights):
        views = render_views(rec.fit, texture, poses, model, size=SIZE, sh=np.repeat(light[None], len(poses), 0)).images
        d = light_direction(light)
        if k == 0:
            first = label(photo_crop(delit, rec.face.landmarks, SIZE), "de-lit photo")
        else:
            tile = Image.fromarray(np.full_like(views[0], 64))
            ImageDraw.Draw(tile).text((4, 2), f"light {k + 1} from\nx {d[0]:+.2f}\ny {d[1]:+.2f}\nz {d[2]:+.2f}",
                                      fill=(255, 255, 255))
            first = np.asarray(tile)
        rows.append([first] + [label(v, f"light {k + 1}, yaw {y}") for v, y in zip(views, YAWS)])
    fig = np.concatenate([np.concatenate(r, axis=1) for r in rows], axis=0)
    out = ROOT / "assets" / "figures" / "relit.png"
    Image.fromarray(fig).save(out, optimize=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
