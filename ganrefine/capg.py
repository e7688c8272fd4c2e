"""The GAN-only method (`--method gan`): trained CAPG-GAN weights loaded once, and faces rotated with them.

The network is `ganrefine.capg_net` (CAPG-GAN, Hu et al., CVPR 2018); its weights files are read by
`ganrefine.weights.load_capg`. At inference the target landmarks are the source's fitted model
landmarks projected at the asked pose in the aligned crop (:func:`target_landmarks`), the points
the training photos' own fits gave.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from face3d.alignment import aligned_original
from face3d.errors import FaceSynthError
from face3d.render import view_screen
from ganrefine.capg_net import CapgGenerator, landmark_heatmaps
from ganrefine.weights import load_capg

#: The shipped weights, and the environment variable that replaces them.
DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "assets" / "capg" / "capg.pt"
ENV_WEIGHTS = "FACESYNTH_CAPG"
_CACHE: dict = {}


def capg_weights_path(path: str | os.PathLike | None = None) -> Path:
    return Path(path or os.environ.get(ENV_WEIGHTS) or DEFAULT_WEIGHTS)


@dataclass
class LoadedCapg:
    """The generator with the file it came from, for the manifest."""

    generator: CapgGenerator
    path: str
    sha256: str

    def record(self) -> dict:
        return {"capg": os.path.basename(self.path), "capg_sha256": self.sha256}


def load_default_capg(path: str | os.PathLike | None = None) -> LoadedCapg:
    """The CAPG-GAN weights of `path` (default `$FACESYNTH_CAPG` or the shipped file), loaded once per process."""
    p = capg_weights_path(path)
    key = str(p.resolve())
    if key not in _CACHE:
        if not p.is_file():
            raise FaceSynthError(f"CAPG-GAN weights not found at {p} (train them with `facesynth train-capg`, "
                                 "or use --method 3d|hybrid)")
        sha = hashlib.sha256(p.read_bytes()).hexdigest()
        g, _ = load_capg(p)
        _CACHE[key] = LoadedCapg(g, str(p), sha)
    return _CACHE[key]


# ------------------------------------------------------------------------------------------------
# Inference


def target_landmarks(fit, model, poses, size: int) -> np.ndarray:
    """(B, 68, 2) the fitted model's landmarks at each asked pose in the aligned crop of `size` px."""
    with torch.no_grad():
        screen = view_screen(fit.vertices(model), model, list(poses), size)[:, :, :2].numpy()
    return screen[:, np.maximum(model.landmark_vertices, 0)].astype(np.float32)


@torch.no_grad()
def rotate_with_capg(generator: CapgGenerator, fit, image: np.ndarray, model, poses, size: int = 128) -> np.ndarray:
    """(B, size, size, 3) uint8: the photo's face at each pose, by the GAN alone (the fit only places
    the target landmarks and the crop). Generated at the network's size, resized to `size`."""
    n = generator.cfg.size
    src = torch.from_numpy(aligned_original(fit, image, model, n)).permute(2, 0, 1)[None].float() / 255
    lm = torch.from_numpy(target_landmarks(fit, model, poses, n))
    out = []
    for s in range(0, len(lm), 32):
        heat = landmark_heatmaps(lm[s:s + 32], n)
        out.append(generator(src.expand(len(heat), -1, -1, -1), heat))
    img = torch.cat(out)
    if size != n:
        img = F.interpolate(img, size=(size, size), mode="bicubic", align_corners=False)
    return (img.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)
