"""The data `bench_gpu.py --pack` needs on a GPU machine that has no dlib models and no shared data.

    cd benchmarks && ../.venv/bin/python make_gpu_pack.py [--out ../gpu_pack] [--photos 40]

A lent GPU machine (the `device` tool) receives the working tree and at most 64 MiB in all; it has
PyTorch with CUDA but neither dlib's 68-point model (100 MB) nor `../shared/data`. The pack holds
what the GPU run reads instead, about 27 MB beside the repository's own 34 MB:
    model/        the ICT FaceKit folder (the default morphable model; its cache is rebuilt there)
    photos/       the test photo of `face_recognition_obama.jpg` and `--photos` held-out LFW photos
    faces.json    each photo's largest dlib face (box, 68 landmarks), detected here
`/gpu_pack/` is in .gitignore: name it in the run's `carry`.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from _common import ROOT, face_photos, heldout_lfw_sample
from face3d.image_io import load_image
from face3d.landmarks import detect_faces
from face3d.morphable_model import resolve_model_dir


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "gpu_pack"))
    ap.add_argument("--photos", type=int, default=40, help="held-out LFW photos besides the test photo (default 40)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    (out / "photos").mkdir(parents=True)
    (out / "model").mkdir()
    for f in resolve_model_dir(None).iterdir():       # the files alone: the shared folder is read-only
        if f.is_file():
            shutil.copyfile(f, out / "model" / f.name)
    sources = [p for p in face_photos() if p.name == "face_recognition_obama.jpg"] + heldout_lfw_sample(args.photos, 0)
    faces = []
    for p in sources:
        found = detect_faces(load_image(p))
        if not found:
            continue
        name = f"{p.parent.name}__{p.name}"
        shutil.copyfile(p, out / "photos" / name)
        f = found[0]
        faces.append({"file": f"photos/{name}", "box": [int(v) for v in f.box], "detector": f.detector,
                      "landmarks": [[float(x), float(y)] for x, y in f.landmarks]})
    (out / "faces.json").write_text(json.dumps(faces, indent=0))
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out}: {len(faces)} photos with their faces, the model; {size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
