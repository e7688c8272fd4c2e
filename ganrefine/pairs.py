"""Self-supervised training pairs for the refiner, after Rotate-and-Render (Zhou et al., CVPR 2020).

There are no multi-view photos of one person here, so the pairs are made from single photos:

    photo --fit--> texture T0 --render at pose P0+delta--> view V1 --take the texture V1 shows--> T1
          --render T1 back at the photo's own pose P0--> input render R;  target = the photo itself

R carries exactly the artifacts of a novel view (stretched, mirrored and inpainted texture where
V1 did not see the face), while its target is a real photograph at the same pose. Everything is in
the aligned crop of `face3d.render.render_views`, so the refiner sees the same framing at training
and at inference.

`generate_pairs` caches one `.npz` per photo under a folder outside the repository and skips the
ones already there, so an interrupted run resumes where it stopped.
"""
from __future__ import annotations

import hashlib
import json
import io
import multiprocessing as mp
import os
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from face3d.alignment import aligned_original
from face3d.camera import Pose
from face3d.errors import FaceSynthError
from face3d.fitting import FitConfig
from face3d.image_io import atomic_write_bytes, load_image
from face3d.morphable_model import load_morphable_model
from face3d.pipeline import reconstruct_faces
from face3d.render import render_views, view_fit
from face3d.texture import extract_texture

#: Half-width of the random yaw offset (degrees) of the intermediate view, and its smallest size.
MAX_YAW_OFFSET = 60.0
MIN_YAW_OFFSET = 15.0
#: The intermediate view is rendered larger than the pair, so T1 is not limited by its resolution.
WORK_SIZE = 256


@dataclass
class TrainingPair:
    """One Rotate-and-Render example, all (S, S) aligned crops at the photo's own pose."""

    render: np.ndarray        # (S, S, 3) uint8: the photo's head rendered through a novel view and back
    confidence: np.ndarray    # (S, S) float32: texture confidence of `render` (1 seen ... 0 off the head)
    mask: np.ndarray          # (S, S) float32: head coverage of `render`
    target: np.ndarray        # (S, S, 3) uint8: the real photo, aligned to the same crop
    landmarks: np.ndarray     # (68, 2) float32: the model's landmarks projected into the crop
    yaw_offset: float         # the intermediate view's yaw relative to the photo's pose

    def save(self, path: str | os.PathLike) -> None:
        buf = io.BytesIO()
        np.savez_compressed(buf, render=self.render, confidence=self.confidence.astype(np.float16),
                            mask=self.mask.astype(np.float16), target=self.target,
                            landmarks=self.landmarks.astype(np.float32), yaw_offset=np.float32(self.yaw_offset))
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TrainingPair":
        with np.load(path) as z:
            return cls(render=z["render"], confidence=z["confidence"].astype(np.float32),
                       mask=z["mask"].astype(np.float32), target=z["target"], landmarks=z["landmarks"],
                       yaw_offset=float(z["yaw_offset"]))


def make_rotate_and_render_pair(rec, image: np.ndarray, model, yaw_offset: float, size: int = 128) -> TrainingPair:
    """The Rotate-and-Render pair of one reconstructed photo (`face3d.pipeline.Reconstruction`)."""
    fit = rec.fit
    p0 = fit.pose
    p1 = Pose(float(np.clip(p0.yaw + yaw_offset, -89.0, 89.0)), p0.pitch, p0.roll)
    # 1. the photo's head at a novel pose, rendered like any other view
    v1 = render_views(fit, rec.texture, [p1], model, size=WORK_SIZE).images[0]
    # 2. the texture that this novel view shows: the view is treated as a photo of the same head
    t1 = extract_texture(view_fit(fit, model, p1, WORK_SIZE), v1, model)
    # 3. back to the photo's own pose: the input carries the novel view's artifacts
    back = render_views(fit, t1, [p0], model, size=size)
    target = aligned_original(fit, image, model, size)
    return TrainingPair(render=back.images[0], confidence=back.confidence[0].astype(np.float32),
                        mask=back.masks[0].astype(np.float32), target=target,
                        landmarks=back.landmarks[0].astype(np.float32), yaw_offset=float(yaw_offset))


def split_identities(identities: list[str], holdout: int = 300, seed: int = 0) -> tuple[list[str], list[str]]:
    """(train, held-out) identities: a fixed, seeded choice that does not depend on list order."""
    if holdout >= len(identities):
        raise FaceSynthError(f"cannot hold out {holdout} of {len(identities)} identities")
    key = lambda name: hashlib.sha1(f"{seed}:{name}".encode()).hexdigest()  # noqa: E731
    ranked = sorted(set(identities), key=key)
    held = sorted(ranked[:holdout])
    train = sorted(ranked[holdout:])
    return train, held


def pair_seed(path: str, seed: int) -> int:
    return zlib.crc32(f"{seed}:{path}".encode())


#: Identities of `../shared/data/faces` (their LFW names where LFW has them): never trained on.
EXCLUDED_IDENTITIES = frozenset({"Barack_Obama", "Joe_Biden", "Mark_Zuckerberg", "Jack_Dorsey"})


@dataclass
class LfwSplit:
    """Photos for pair generation: train photos from train identities, held-out photos from the rest."""

    train: list[Path]
    heldout: list[Path]
    train_identities: list[str]
    heldout_identities: list[str]


def lfw_photos_by_identity(root: Path) -> dict[str, list[Path]]:
    """``root/<name>/*.jpg`` as {name: sorted photos}, without `EXCLUDED_IDENTITIES`."""
    root = Path(root)
    if not root.is_dir():
        raise FaceSynthError(f"{root}: not a folder of LFW identities")
    by_name = {d.name: sorted(d.glob("*.jpg")) for d in sorted(root.iterdir()) if d.is_dir()}
    by_name = {k: v for k, v in by_name.items() if v and k not in EXCLUDED_IDENTITIES}
    if not by_name:
        raise FaceSynthError(f"{root}: no <identity>/*.jpg photos found")
    return by_name


def split_lfw(root: Path, holdout: int = 300, train_photos: int | None = None, seed: int = 0) -> LfwSplit:
    """Split LFW (``root/<name>/<name>_NNNN.jpg``) by identity and choose the photos.

    Held out: one photo per held-out identity (the first), so every held-out person counts once.
    Train: every photo of the train identities, or a seeded choice of `train_photos` of them that
    takes one photo of each person before any second one (identity diversity over repeats).
    """
    by_name = lfw_photos_by_identity(root)
    train_ids, held_ids = split_identities(list(by_name), holdout=holdout, seed=seed)
    held = [by_name[n][0] for n in held_ids]
    # round-robin over identities in a seeded order: rank r holds every identity's r-th photo
    key = lambda p: hashlib.sha1(f"{seed}:{p.name}".encode()).hexdigest()  # noqa: E731
    ranked = sorted(((r, key(p), p) for n in train_ids for r, p in enumerate(by_name[n])))
    train = [p for _, _, p in ranked]
    if train_photos is not None:
        train = train[:train_photos]
    return LfwSplit(train=sorted(train), heldout=held, train_identities=train_ids, heldout_identities=held_ids)


def split_lfw_into(cache: Path, lfw: Path, train_photos: int | None, seed: int, size: int, flag: str = "--cache") -> LfwSplit:
    """`split_lfw` of `lfw` with its record written to `cache/split.json` (`write_split`: a cache made
    with another held-out split or size is refused, `flag` naming it in the message)."""
    split = split_lfw(Path(lfw), train_photos=train_photos, seed=seed)
    write_split(Path(cache), {"lfw": str(Path(lfw).resolve()), "seed": seed, "size": size, "photos": len(split.train),
                              "train_identities": len(split.train_identities),
                              "heldout_identities": split.heldout_identities}, flag=flag)
    return split


def pair_path(cache: Path, photo: Path) -> Path:
    return Path(cache) / photo.parent.name / f"{photo.stem}.npz"


def make_pair_file(photo: Path, cache: Path, model, size: int = 128, seed: int = 0) -> str | None:
    """Fit one photo, make its pair and write it to the cache; returns an error line or None."""
    rng = np.random.default_rng(pair_seed(str(photo), seed))
    offset = float(rng.uniform(MIN_YAW_OFFSET, MAX_YAW_OFFSET) * rng.choice([-1.0, 1.0]))
    try:
        image = load_image(photo)
        # HOG alone, as the shipped refiner's pairs were made (the CNN fallback came later)
        rec = reconstruct_faces(image, model, fit_config=FitConfig(dense=False), source=str(photo), detector="hog")[0]
        pair = make_rotate_and_render_pair(rec, image, model, offset, size)
    except FaceSynthError as exc:
        return str(exc)
    write_cache_entry(cache, photo, pair)
    return None


def write_cache_entry(cache: Path, photo: Path, entry) -> None:
    """Save `entry` (anything with `.save(path)`) as the cache file of `photo`."""
    out = pair_path(cache, photo)
    out.parent.mkdir(parents=True, exist_ok=True)
    entry.save(out)


_WORKER_MODEL = None


def _init_pair_worker(model_path) -> None:
    global _WORKER_MODEL
    torch.set_num_threads(1)
    _WORKER_MODEL = load_morphable_model(model_path)


def _pair_job(photo: Path, cache: Path, size: int, seed: int, maker) -> tuple[Path, str | None]:
    return photo, maker(photo, cache, _WORKER_MODEL, size, seed)


def generate_pairs(photos: list[Path], cache: Path, model, size: int = 128, seed: int = 0,
                   progress: bool = True, workers: int = 1, maker=make_pair_file) -> dict:
    """Make (or reuse) the pair of every photo under `cache`; returns counts and the failures.

    One file per photo, `<cache>/<identity>/<stem>.npz`, written atomically: a killed run loses
    at most the photos in flight, and a re-run skips every photo already done. Photos without a
    usable face are listed in `<cache>/failed.txt` and skipped on re-runs too. With `workers` > 1
    the photos are spread over that many processes (one torch thread each); `model` must then be
    a loaded `MorphableModel` whose `source` folder the workers load again. `maker` makes one
    photo's file (`make_pair_file`, or `ganrefine.pose_pairs.make_pose_photo_file` for the
    GAN baseline's real photos), a module-level function so that workers can receive it.
    """
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    failed_log = cache / "failed.txt"
    failed = set(failed_log.read_text().splitlines()) if failed_log.exists() else set()
    todo = [p for p in photos if not pair_path(cache, p).exists() and str(p) not in failed]
    done = len(photos) - len(todo)
    made = 0
    errors: list[str] = []
    bar = tqdm(total=len(todo), desc="pairs", unit="photo", disable=not progress)

    def consume(photo, err):
        nonlocal made
        if err is None:
            made += 1
        else:
            errors.append(err)
            with open(failed_log, "a") as f:  # the parent process alone writes this log
                f.write(f"{photo}\n")
        bar.update(1)

    try:
        if workers <= 1 or len(todo) <= 1:
            for photo in todo:
                consume(photo, maker(photo, cache, model, size, seed))
        else:
            ctx = mp.get_context("spawn")  # forking a process with live OpenMP threads can deadlock
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_pair_worker,
                                     initargs=(model.source,)) as pool:
                n = len(todo)
                for photo, err in pool.map(_pair_job, todo, [cache] * n, [size] * n, [seed] * n, [maker] * n,
                                           chunksize=4):
                    consume(photo, err)
    finally:
        bar.close()
    return {"photos": len(photos), "made": made, "already_done": done, "failed": len(errors), "errors": errors}


def write_split(out: Path, info: dict, flag: str = "--out") -> None:
    """`CACHE/split.json`, refusing a cache made with another held-out split or size (`flag`: the
    command's flag that names the cache, for the message)."""
    out.mkdir(parents=True, exist_ok=True)
    split_file = out / "split.json"
    if split_file.exists():
        old = json.loads(split_file.read_text())
        if old.get("heldout_identities") != info["heldout_identities"] or old.get("size") != info["size"]:
            raise FaceSynthError(f"{out} holds data of another split or size; use a new {flag}")
        # pairs are renders: a cache from another renderer (version 1 wrote no version) is not mixed into
        if "render_version" in info and old.get("render_version", 1) != info["render_version"]:
            raise FaceSynthError(f"{out} holds pairs of render version {old.get('render_version', 1)}, this is "
                                 f"version {info['render_version']}; use a new {flag}")
    atomic_write_bytes(split_file, json.dumps(info, indent=1).encode())
