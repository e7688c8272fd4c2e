"""`facesynth learn-albedo`: learn the albedo model (`face3d.albedo_model`) from LFW's train identities.

    CACHE/obs/<identity>/<photo>.npz   what each photo shows of the skin (`AlbedoObservation`)
    CACHE/failed.txt                   photos without a usable face, one per line with the reason
    CACHE/split.json                   the identity split (the refiner's: `ganrefine.pairs.split_lfw`)

Photos come from the train identities only (the held-out people and the test photos' people are
never read). Observations are written one file per photo as they are made, so a stopped run that
is started again continues where it stopped; the learning step reads them all. Recipe and
measurements: docs/training.md and assets/albedo/MODEL_CARD.md.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from face3d.albedo_model import AlbedoLearnConfig, AlbedoObservation, learn_albedo_model, save_albedo_model
from face3d.errors import FaceSynthError
from face3d.image_io import load_image
from face3d.landmarks import detect_faces
from face3d.morphable_model import load_morphable_model
from face3d.pipeline import fit_faces
from face3d.sfs import observe_albedo
from facesynth.failures import failure_reason, read_failures, write_failures
from ganrefine.pairs import split_lfw_into

BATCH = 8                       # photos per batched fit
SIZE = 128                      # the face crop (px) a photo is observed on


def observation_path(cache: Path, photo: Path) -> Path:
    return cache / "obs" / photo.parent.name / (photo.stem + ".npz")


def collect_observations(photos: list[Path], cache: Path, model, batch: int = BATCH) -> dict:
    """Fit every photo not yet in `cache` and write its observation; returns counts."""
    failed_path = cache / "failed.txt"
    failed = read_failures(failed_path)
    todo = [p for p in photos if not observation_path(cache, p).exists() and str(p) not in failed]
    done = len(photos) - len(todo)
    bar = tqdm(total=len(photos), initial=done, desc="observe", unit="photo")
    made = 0
    for start in range(0, len(todo), batch):
        chunk = todo[start:start + batch]
        images, names = [], []
        for p in chunk:
            try:
                images.append(load_image(p))
                names.append(p)
            except FaceSynthError as exc:
                failed[str(p)] = failure_reason(p, exc)
        found = [detect_faces(img) for img in images]
        keep = [i for i, f in enumerate(found) if f]
        for i, f in enumerate(found):
            if not f:
                failed[str(names[i])] = "no face found"
        fits = fit_faces([images[i] for i in keep], [found[i][0].landmarks for i in keep], model)
        for i, fit in zip(keep, fits):
            p, img = names[i], images[i]
            if isinstance(fit, Exception):
                failed[str(p)] = failure_reason(p, fit)
                continue
            try:
                obs = observe_albedo(fit, img, model, SIZE)
            except Exception as exc:  # one photo's failure is that photo's alone
                failed[str(p)] = failure_reason(p, exc)
                continue
            out = observation_path(cache, p)
            out.parent.mkdir(parents=True, exist_ok=True)
            obs.save(out)
            made += 1
        write_failures(failed_path, failed)
        bar.update(len(chunk))
    bar.close()
    return {"made": made, "already_done": done, "failed": len(failed)}


def run_learn_albedo(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    if out.suffix != ".npz":
        raise FaceSynthError(f"--out {out}: the albedo model file must end in .npz")
    cache = Path(args.cache)
    model = load_morphable_model(args.model)
    split = split_lfw_into(cache, Path(args.lfw), args.photos, args.seed, SIZE)
    t0 = time.time()
    counts = collect_observations(split.train, cache, model)
    print(f"observations: {counts['made']} made, {counts['already_done']} already done, {counts['failed']} failed")
    files = [observation_path(cache, p) for p in split.train if observation_path(cache, p).exists()]
    obs = [AlbedoObservation.load(f) for f in tqdm(files, desc="load", unit="photo")]
    cfg = AlbedoLearnConfig(components=args.components, rounds=args.rounds)
    t1 = time.time()
    am = learn_albedo_model(obs, model, cfg, progress=lambda step, steps, msg: print(msg, file=sys.stderr, flush=True),
                            info={"lfw_train_identities": len(split.train_identities), "seed": args.seed,
                                  "observed_photos": len(files)})
    am.info["learn_seconds"] = round(time.time() - t1, 1)
    am.info["collect_seconds_this_run"] = round(t1 - t0, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_albedo_model(am, out)
    print(f"albedo model: {am.info['photos']} photos, {am.num_components} components, "
          f"{np.round(am.stddev[:3], 4).tolist()} leading stddevs -> {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0
