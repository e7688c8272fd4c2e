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
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from face3d.camera import Pose
from face3d.errors import FaceSynthError

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
        import io

        from face3d.image_io import atomic_write_bytes

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
    from face3d.render import render_views, view_fit
    from face3d.texture import extract_texture
    from ganrefine.augment import aligned_original

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


def generate_pairs(photos: list[Path], cache: Path, model, size: int = 128, seed: int = 0,
                   progress: bool = True) -> dict:
    """Make (or reuse) the pair of every photo under `cache`; returns counts and the failures.

    One file per photo, `<cache>/<identity>/<stem>.npz`, written atomically: a killed run loses
    at most the photo in flight, and a re-run skips every photo already done. Photos without a
    usable face are listed in `<cache>/failed.txt` and skipped on re-runs too.
    """
    from tqdm import tqdm

    from face3d.fitting import FitConfig
    from face3d.image_io import load_image
    from face3d.pipeline import reconstruct_faces

    cache.mkdir(parents=True, exist_ok=True)
    failed_log = cache / "failed.txt"
    failed = set(failed_log.read_text().splitlines()) if failed_log.exists() else set()
    done = made = 0
    errors = []
    for photo in tqdm(photos, desc="pairs", unit="photo", disable=not progress):
        out = cache / photo.parent.name / f"{photo.stem}.npz"
        if out.exists() or str(photo) in failed:
            done += 1
            continue
        rng = np.random.default_rng(pair_seed(str(photo), seed))
        offset = float(rng.uniform(MIN_YAW_OFFSET, MAX_YAW_OFFSET) * rng.choice([-1.0, 1.0]))
        try:
            image = load_image(photo)
            rec = reconstruct_faces(image, model, fit_config=FitConfig(dense=False), source=str(photo))[0]
            pair = make_rotate_and_render_pair(rec, image, model, offset, size)
        except FaceSynthError as exc:
            errors.append(str(exc))
            with open(failed_log, "a") as f:
                f.write(f"{photo}\n")
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        pair.save(out)
        made += 1
    return {"photos": len(photos), "made": made, "already_done": done, "failed": len(errors), "errors": errors}
