"""The commands that reproduce the shipped generators: `make-pairs` and `train-refiner` /
`soup-refiners` (the refiner), `make-pose-photos` and `train-capg` (the GAN-only baseline).
Each reads its flags into ganrefine's config dataclasses and calls ganrefine; recipes are in
docs/training.md.

    CACHE/train/<identity>/<photo>.npz     pairs of the train identities
    CACHE/heldout/<identity>/<photo>.npz   one pair per held-out identity (evaluation only)
    CACHE/split.json                       the identity split, so training and evaluation agree
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from face3d.devices import resolve_device
from face3d.errors import FaceSynthError
from face3d.morphable_model import load_morphable_model
from face3d.render import RENDER_VERSION
from ganrefine.pairs import generate_pairs, split_lfw, write_split
from ganrefine.pose_pairs import make_pose_photo_file, split_pose_photos
from ganrefine.refiner import RefinerConfig
from ganrefine.soup import greedy_soup
from ganrefine.train_capg import CapgTrainConfig, train_capg
from ganrefine.train_refiner import TrainConfig, train_refiner
from ganrefine.weights import save_weights


def make_caches(out: Path, split, model_dir, size: int, seed: int, workers: int, maker=None) -> None:
    """Fit and write every photo of `split` (held-out first) into `out`, printing what was made."""
    model = load_morphable_model(model_dir)
    extra = {} if maker is None else {"maker": maker}
    for name, photos in (("heldout", split.heldout), ("train", split.train)):
        res = generate_pairs(photos, out / name, model, size=size, seed=seed, workers=workers, **extra)
        print(f"{name}: {res['made']} made, {res['already_done']} already done, {res['failed']} without a usable face")


def run_make_pairs(args) -> int:
    split = split_lfw(Path(args.lfw), holdout=args.holdout, train_photos=args.train_photos, seed=args.seed)
    out = Path(args.out)
    write_split(out, {"lfw": str(Path(args.lfw).resolve()), "seed": args.seed, "size": args.size,
                      "render_version": RENDER_VERSION,
                      "train_identities": split.train_identities, "heldout_identities": split.heldout_identities,
                      "train_photos": len(split.train), "heldout_photos": len(split.heldout)})
    make_caches(out, split, args.model, args.size, args.seed, args.workers)
    print(f"pairs in {out}")
    return 0


def run_make_pose_photos(args) -> int:
    split = split_pose_photos(Path(args.lfw), holdout=args.holdout, per_identity=args.per_identity,
                              heldout_per_identity=args.heldout_per_identity, seed=args.seed)
    out = Path(args.out)
    write_split(out, {"lfw": str(Path(args.lfw).resolve()), "seed": args.seed, "size": args.size,
                      "holdout": args.holdout, "train_identities": split.train_identities,
                      "heldout_identities": split.heldout_identities, "train_photos": len(split.train),
                      "heldout_photos": len(split.heldout)})
    make_caches(out, split, args.model, args.size, args.seed, args.workers, maker=make_pose_photo_file)
    print(f"aligned photos in {out}")
    return 0


def run_training(args, cfg_cls, train, **extra) -> int:
    """`train-refiner` / `train-capg`: the config from the shared flags (and `extra` fields), the run, its one-line result."""
    cfg = cfg_cls(steps=args.steps, batch=args.batch, eval_every=args.eval_every, seed=args.seed, threads=args.threads,
                  device=str(resolve_device(args.device)), **extra)
    s = train(Path(args.data), Path(args.out), cfg, resume=args.resume)
    print(f"best validation step {s['best_step']} (score {s['best_score']:.4f}); weights {s['weights']}")
    return 0


def run_train_refiner(args) -> int:
    extra = {"init": args.init}
    # settings of a fresh run's config: a resumed run takes its checkpoint's
    for flag, key, what in (("--identity-weight", "identity_weight", "loss"), ("--lr-decay-steps", "lr_decay_steps", "schedule"),
                            ("--adv-weight", "adv_weight", "loss"), ("--disc-scales", "disc_scales", "discriminators"),
                            ("--feature-matching-weight", "feature_matching_weight", "loss"),
                            ("--perceptual-weight", "perceptual_weight", "loss"), ("--keep-seen", "keep_seen", "loss"),
                            ("--feather", "feather", "architecture")):
        value = getattr(args, key)
        if value is None:
            continue
        if args.resume:
            raise FaceSynthError(f"{flag} sets a fresh run's {what}; a resumed run keeps its checkpoint's")
        extra[key] = value
    if "feather" in extra:     # a setting of the generator's architecture config
        extra["refiner"] = RefinerConfig(feather=extra.pop("feather"))
    if args.init is not None:
        if args.resume:
            raise FaceSynthError("--init starts a fresh run; --resume continues one: pass one of them")
        if not Path(args.init).is_file():
            raise FaceSynthError(f"--init {args.init}: no such file")
    return run_training(args, TrainConfig, train_refiner, **extra)


def run_train_capg(args) -> int:
    return run_training(args, CapgTrainConfig, train_capg)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run_soup_refiners(args) -> int:
    for w in args.weights:
        if not Path(w).is_file():
            raise FaceSynthError(f"{w}: no such file")
    r = greedy_soup([Path(w) for w in args.weights], Path(args.data), args.val_pairs)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_weights(out, r["generator"], {"soup": [{"weights": str(p), "sha256": file_sha256(p)} for p in r["ingredients"]],
                                       "soup_rows": r["rows"], "val": r["val"], "data": str(args.data)})
    s = r["val"]
    print(json.dumps({"ingredients": [str(p) for p in r["ingredients"]], "val_score": round(s["score"], 4),
                      "val_l1_change": round(s["l1_refined_mean"] / s["l1_render_mean"] - 1, 4),
                      "val_identity_change": round(s["id_refined_mean"] / s["id_render_mean"] - 1, 4)}))
    print(f"wrote {out}")
    return 0
