"""`facesynth make-pairs LFW --out CACHE`: the refiner's Rotate-and-Render pairs, cached and resumable.

    CACHE/train/<identity>/<photo>.npz     pairs of the train identities
    CACHE/heldout/<identity>/<photo>.npz   one pair per held-out identity (evaluation only)
    CACHE/split.json                       the identity split, so training and evaluation agree
"""
from __future__ import annotations

import json
from pathlib import Path

from face3d.errors import FaceSynthError


def add_cache_arguments(p, holdout_help: str) -> None:
    """The flags that `make-pairs` and `make-pose-photos` share."""
    from facesynth.cli import int_option

    p.add_argument("lfw", metavar="LFW", help="LFW images folder (<identity>/<identity>_NNNN.jpg)")
    p.add_argument("--out", required=True, metavar="CACHE", help="cache folder (keep it outside the repository)")
    p.add_argument("--holdout", type=int_option("holdout", 1), default=300, help=holdout_help)
    p.add_argument("--size", type=int_option("size", 32, 1024), default=128, help="crop size (default 128)")
    p.add_argument("--workers", type=int_option("workers", 1), default=1, help="processes (default 1)")
    p.add_argument("--seed", type=int, default=0, help="split seed, and make-pairs' yaw-offset seed (default 0)")
    p.add_argument("--model", default=None, metavar="DIR", help="morphable model folder (default ICT FaceKit)")


def write_split(out: Path, info: dict) -> None:
    """`CACHE/split.json`, refusing a cache made with another held-out split or size."""
    from face3d.image_io import atomic_write_bytes

    out.mkdir(parents=True, exist_ok=True)
    split_file = out / "split.json"
    if split_file.exists():
        old = json.loads(split_file.read_text())
        if old.get("heldout_identities") != info["heldout_identities"] or old.get("size") != info["size"]:
            raise FaceSynthError(f"{out} holds data of another split or size; use a new --out")
        # pairs are renders: a cache from another renderer (version 1 wrote no version) is not mixed into
        if "render_version" in info and old.get("render_version", 1) != info["render_version"]:
            raise FaceSynthError(f"{out} holds pairs of render version {old.get('render_version', 1)}, this is "
                                 f"version {info['render_version']}; use a new --out")
    atomic_write_bytes(split_file, json.dumps(info, indent=1).encode())


def add_make_pairs_parser(sub) -> None:
    from facesynth.cli import int_option

    p = sub.add_parser("make-pairs", help="make the refiner's Rotate-and-Render training pairs from LFW")
    add_cache_arguments(p, "identities held out for evaluation, one pair each (default 300)")
    p.add_argument("--train-photos", type=int_option("train-photos", 1), default=3000,
                   help="train photos to use, one per identity before any second (default 3000)")
    p.set_defaults(func=run_make_pairs)


def run_make_pairs(args) -> int:
    from face3d.morphable_model import load_morphable_model
    from ganrefine.pairs import generate_pairs, split_lfw

    from face3d.render import RENDER_VERSION

    split = split_lfw(Path(args.lfw), holdout=args.holdout, train_photos=args.train_photos, seed=args.seed)
    out = Path(args.out)
    write_split(out, {"lfw": str(Path(args.lfw).resolve()), "seed": args.seed, "size": args.size,
                      "render_version": RENDER_VERSION,
                      "train_identities": split.train_identities, "heldout_identities": split.heldout_identities,
                      "train_photos": len(split.train), "heldout_photos": len(split.heldout)})
    model = load_morphable_model(args.model)
    for name, photos in (("heldout", split.heldout), ("train", split.train)):
        res = generate_pairs(photos, out / name, model, size=args.size, seed=args.seed, workers=args.workers)
        print(f"{name}: {res['made']} made, {res['already_done']} already done, {res['failed']} without a usable face")
    print(f"pairs in {out}")
    return 0
