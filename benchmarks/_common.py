"""Shared helpers of the benchmark scripts (not part of the installed package)."""
from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def machine() -> dict:
    return {"python": sys.version.split()[0], "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "platform": platform.platform()}


def write_json(path: str | Path, payload: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine(), **payload}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=float))
    os.replace(tmp, path)
    print(f"wrote {path}")


def face_photos() -> list[Path]:
    from face3d.morphable_model import default_data_dir

    data = default_data_dir()
    return sorted((data / "faces").glob("*/*.jpg"))


def lfw_sample(seed: int, count: int) -> list[Path]:
    """The first photo of each of `count` LFW identities drawn with `random.Random(seed)`: a
    development set for choices that must not be tuned on the test photos of ../shared/data/faces."""
    import random

    lfw = lfw_dir()
    ids = sorted(p.name for p in lfw.iterdir())
    return [sorted((lfw / i).iterdir())[0] for i in random.Random(seed).sample(ids, min(len(ids), count))]


def lfw_dir() -> Path:
    from face3d.morphable_model import default_data_dir

    return default_data_dir() / "lfw" / "images"


def reconstructed_photos(model, photos):
    """(photo, image, reconstruction of its largest face) for each of `photos` that the default
    settings reconstruct, lazily; photos that fail (unreadable, no face) are left out."""
    from face3d import load_image, reconstruct_faces
    from face3d.errors import FaceSynthError

    for ph in photos:
        try:
            img = load_image(ph)
            rec = reconstruct_faces(img, model)[0]
        except FaceSynthError:
            continue
        yield ph, img, rec


def reconstructed_test_photos(model):
    """(photo, reconstruction of its largest face) for each photo of ../shared/data/faces that the
    default settings reconstruct; photos that fail (no face) are left out."""
    for ph, _, rec in reconstructed_photos(model, face_photos()):
        yield ph, rec
