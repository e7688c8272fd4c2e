"""Real same-person photo pairs for the GAN-only baseline (CAPG-GAN), from LFW.

CAPG-GAN learns pose from real photos only: (photo A of a person, the landmarks of photo B of the
same person) -> photo B. Every photo is brought into the aligned crop that the 3D views use
(`face3d.alignment.aligned_original`: a similarity of the photo's landmarks onto the fit's own-pose
view), so that the GAN's input, its target and its output are framed exactly like the 3D and hybrid
views it is compared with. Stored per photo (``CACHE/<split>/<identity>/<stem>.npz``):

    crop        (S, S, 3) uint8   the photo in the aligned crop
    landmarks   (68, 2) float32   the fitted model's iBUG landmarks at the photo's own pose, in the
                                  crop (what the generator is conditioned on for a target photo;
                                  at inference the same points come from the source's fit at the
                                  asked pose, so training and inference use one landmark recipe)
    pose        (3,) float32      the fitted (yaw, pitch, roll), degrees

Pairs are not stored: training draws any two photos of one train identity.

The identity split is `ganrefine.pairs.split_identities` with the refiner's seed and hold-out, so
the GAN, the refiner and every evaluation agree on which people were never trained on; only
identities with at least two photos are used, at most `per_identity` photos each (LFW's long tail of
George W Bush photos would otherwise dominate).
"""
from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from face3d.alignment import aligned_original
from face3d.errors import FaceSynthError
from face3d.fitting import FitConfig, fit_morphable_model
from face3d.image_io import atomic_write_bytes, load_image
from face3d.landmarks import detect_faces
from face3d.render import view_screen
from ganrefine.pairs import lfw_photos_by_identity, split_identities, write_cache_entry


@dataclass
class PosePhoto:
    crop: np.ndarray        # (S, S, 3) uint8
    landmarks: np.ndarray   # (68, 2) float32 crop pixels (centres at +0.5)
    pose: np.ndarray        # (3,) float32 yaw, pitch, roll in degrees

    def save(self, path: str | os.PathLike) -> None:
        buf = io.BytesIO()
        np.savez_compressed(buf, crop=self.crop, landmarks=self.landmarks.astype(np.float32),
                            pose=self.pose.astype(np.float32))
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PosePhoto":
        with np.load(path) as z:
            return cls(crop=z["crop"], landmarks=z["landmarks"], pose=z["pose"])


def own_pose_landmarks(fit, model, size: int) -> np.ndarray:
    """The fitted model's 68 landmarks at the fit's own pose in the aligned crop of `size` px."""
    with torch.no_grad():
        screen = view_screen(fit.vertices(model), model, [fit.pose], size)[0, :, :2].numpy()
    return screen[np.maximum(model.landmark_vertices, 0)].astype(np.float32)


def make_pose_photo_file(photo: Path, cache: Path, model, size: int = 128, seed: int = 0) -> str | None:
    """Fit one photo (landmark stage) and store its aligned crop, landmarks and pose; an error line or None."""
    try:
        image = load_image(photo)
        faces = detect_faces(image)
        if not faces:
            return f"{photo}: no face found"
        fit = fit_morphable_model(image, faces[0].landmarks, model, FitConfig(dense=False))
        rec = PosePhoto(crop=aligned_original(fit, image, model, size), landmarks=own_pose_landmarks(fit, model, size),
                        pose=np.array([fit.pose.yaw, fit.pose.pitch, fit.pose.roll], np.float32))
    except FaceSynthError as exc:
        return str(exc)
    write_cache_entry(cache, photo, rec)
    return None


@dataclass
class PoseSplit:
    train: list[Path]
    heldout: list[Path]
    train_identities: list[str]
    heldout_identities: list[str]


def split_pose_photos(root: Path, holdout: int = 300, per_identity: int = 3, heldout_per_identity: int = 6,
                      seed: int = 0) -> PoseSplit:
    """The photos of multi-photo identities, split by identity like the refiner's pairs."""
    by_name = lfw_photos_by_identity(root)
    train_ids, held_ids = split_identities(list(by_name), holdout=holdout, seed=seed)
    key = lambda p: hashlib.sha1(f"{seed}:{p.name}".encode()).hexdigest()  # noqa: E731

    def choose(names, cap):
        names = [n for n in names if len(by_name[n]) >= 2]
        return names, sorted(p for n in names for p in sorted(by_name[n], key=key)[:cap])

    train_ids, train = choose(train_ids, per_identity)
    held_ids, held = choose(held_ids, heldout_per_identity)
    return PoseSplit(train=train, heldout=held, train_identities=train_ids, heldout_identities=held_ids)
