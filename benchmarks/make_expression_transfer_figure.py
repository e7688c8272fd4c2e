"""Figure (docs/benchmarks.md): another photo's expression on a face (issue 29) ->
assets/figures/expression_transfer.png.

A grid: 4 identities (rows: 2 people of the test photos, 2 held-out LFW people) x 4 reference
photos (columns) whose expressions differ as much as the photos of bench_expression_transfer.py
allow: the broadest smile, the widest-open mouth, the most neutral face and the strongest frown,
picked by the coefficients of their re-split fits (`photo_records` of
results/expression_transfer.json: run that benchmark first), each from a person not in the rows.
Header row: the reference photos (face crops); first column: the source photo, then its own
expression (`fitted`) rendered like the transfers. Each identity takes two sub-rows, yaw 0 and 30
(pitch and roll 0), method `3d`, whole-photo background (the default), as

    facesynth.rotate(A, yaws=[0, 30], expression_from=B, options=RenderOptions(method="3d"))

makes them (`render_face` on one fit per photo).

    cd benchmarks && ../.venv/bin/python make_expression_transfer_figure.py [--identities A,B,C,D]
                     [--references SMILE,OPEN,NEUTRAL,FROWN] [--size 160] [--out PATH]

(photos as `<folder>/<file>` names of the JSON's photo_records). 8 fits and 40 views: 5-12 minutes.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from _common import RESULTS, ROOT
from face3d.camera import Pose
from face3d.fitting import FitConfig
from face3d.image_io import load_image
from face3d.morphable_model import load_morphable_model
from face3d.pipeline import reconstruct_faces
from face3d.reference_face import reference_from_fit
from facesynth.api import RenderOptions, render_face, with_reference_expression
from facesynth.methods import load_method
from make_figures import photo_crop

OUT = ROOT / "assets" / "figures" / "expression_transfer.png"
YAWS = (0.0, 30.0)
#: default rows: two test-photo people and two held-out LFW people, near-frontal photos
IDENTITIES = ("obama/face_recognition_obama.jpg", "deepface_jack/deepface_img62.jpg",
              "Rupert_Grint/Rupert_Grint_0001.jpg", "Liane_Janda/Liane_Janda_0001.jpg")


def mean(e: dict, *names) -> float:
    return float(np.mean([e.get(n, 0.0) for n in names]))


#: how strongly a re-split fit shows each column's expression (its coefficients by name)
SCORES = {
    "smile": lambda e: mean(e, "mouthSmile_L", "mouthSmile_R"),
    "open mouth": lambda e: e.get("jawOpen", 0.0),
    "neutral": lambda e: -sum(v for n, v in e.items() if n.startswith(("mouth", "jaw", "brow", "cheek"))),
    # a frown, not a pout: the fit's mouthPucker also fires on plain closed mouths (deepface_img14,
    # a closed-mouth smile, has 0.82), its mouthFrown on mouths whose corners turn down
    "frown": lambda e: mean(e, "mouthFrown_L", "mouthFrown_R"),
}


def pick_references(records: list[dict], rows: list[str]) -> list[tuple[str, dict]]:
    """(column name, record): per column, the photo that shows it most, of a person in no row and
    in no other column."""
    people = {r["person"] for r in records if r["photo"] in rows}
    out = []
    for col, score in SCORES.items():
        free = [r for r in records if r["person"] not in people]
        best = max(free, key=lambda r: score(r["expression"]))
        people.add(best["person"])
        out.append((col, best))
    return out


def label(img: np.ndarray, lines: list[str]) -> np.ndarray:
    im = Image.fromarray(np.ascontiguousarray(img))
    d = ImageDraw.Draw(im)
    for i, text in enumerate(lines):
        d.rectangle((2, 2 + 12 * i, 6 + 6 * len(text), 13 + 12 * i), fill=(0, 0, 0))
        d.text((4, 2 + 12 * i), text, fill=(255, 255, 255))
    return np.asarray(im)


def blank(size: int, lines: list[str]) -> np.ndarray:
    return label(np.full((size, size, 3), 40, np.uint8), lines)


def short(name: str) -> str:
    return Path(name).stem.replace("face_recognition_", "")[:22]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, default=RESULTS / "expression_transfer.json")
    ap.add_argument("--identities", default=",".join(IDENTITIES), help="4 photos (folder/file) for the rows")
    ap.add_argument("--references", default=None, help="4 reference photos (default: picked by coefficients)")
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(2)
    records = json.loads(args.json.read_text())["photo_records"]
    by_name = {r["photo"]: r for r in records}
    rows = args.identities.split(",")
    if args.references:
        refs = [(short(n), by_name[n]) for n in args.references.split(",")]
    else:
        refs = pick_references(records, rows)
    for col, r in refs:
        print(f"column {col}: {r['photo']}  " + ", ".join(f"{k}={v:.2f}" for k, v in sorted(
            r["expression"].items(), key=lambda kv: -kv[1])[:6]))

    model, maker = load_morphable_model(), load_method("3d")
    config = FitConfig(dense=RenderOptions().dense)
    fitted = {}
    for name in rows + [r["photo"] for _, r in refs]:
        image = load_image(by_name[name]["path"])
        fitted[name] = (image, reconstruct_faces(image, model, fit_config=config, source=name)[0])
    s = args.size
    header = [blank(s, ["source photo"]), blank(s, ["own expression", "(fitted)"])]
    for col, r in refs:
        image, rec = fitted[r["photo"]]
        header.append(label(photo_crop(image, rec.face.landmarks, s), [f"B: {col}", short(r["photo"])]))
    grid = [np.concatenate(header, axis=1)]
    poses = [Pose(y, 0.0, 0.0) for y in YAWS]
    for name in rows:
        image, rec = fitted[name]
        opts = RenderOptions(method="3d", size=s)
        own = render_face(rec, image, model, poses, opts, maker)[0].images
        for _, r in refs:
            ref_rec = fitted[r["photo"]][1]
            opts = with_reference_expression(opts, reference_from_fit(ref_rec.fit, model, r["photo"]), model)
        views = [np.asarray(f.images) for f in render_face(rec, image, model, poses, opts, maker)]
        for k, yaw in enumerate(YAWS):
            first = label(photo_crop(image, rec.face.landmarks, s), ["A: " + short(name)]) if k == 0 else \
                blank(s, [short(name)])
            cells = [first, label(own[k], [f"yaw {yaw:g}"])] + [label(v[k], [f"yaw {yaw:g}"]) for v in views]
            grid.append(np.concatenate(cells, axis=1))
        print(f"row {name} done", flush=True)
    fig = np.concatenate(grid, axis=0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(fig).save(args.out, optimize=True)
    print(f"wrote {args.out} ({fig.shape[1]}x{fig.shape[0]}, {args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
