"""The GAN-only baseline: CAPG-GAN (Hu et al., CVPR 2018, "Pose-Guided Photorealistic Face Rotation").

No 3D at inference: a U-Net with residual blocks maps (the source photo in the aligned 128-px crop,
heatmaps of the landmarks at the target pose) to the face at the target pose.

    generator      (source RGB, K landmark heatmaps) -> RGB; encoder-decoder with skip
                   connections, residual blocks at 1/8 resolution
    agent A        patch discriminator on (image, source): is this the same person as the source?
    agent B        patch discriminator on (image, target heatmaps): is the face at these landmarks?

The landmark heatmaps are the compact encoding the issue allows: one channel per facial part
(:data:`PARTS`, 9 channels), each the maximum of isotropic Gaussians (sigma :data:`HEATMAP_SIGMA`
px at 128) at that part's iBUG points. Each part is its own channel so that the generator can tell
an eye from a mouth corner, while the first convolution stays 5x cheaper than on 68 channels.

At inference the target landmarks are the source's fitted model landmarks projected at the asked
pose in the aligned crop (:func:`target_landmarks`), the points the training photos' own fits gave.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from face3d.errors import FaceSynthError
from ganrefine.refiner import ResBlock, _conv

WEIGHTS_FORMAT = "facesynth-capg/1"
#: iBUG 68 index ranges of the heatmap channels.
PARTS = (range(0, 17), range(17, 22), range(22, 27), range(27, 31), range(31, 36), range(36, 42),
         range(42, 48), range(48, 60), range(60, 68))
HEATMAP_SIGMA = 2.0


@dataclass
class CapgConfig:
    """Sized for a CPU like the refiner: at these defaults 1.4 M parameters; one training step's
    generator forward + backward (batch 8) costs half that of base 24 (3.2 M) on this machine."""

    size: int = 128
    base: int = 16               # channels at full resolution (x2 per level, 3 levels, capped at 8x)
    res_blocks: int = 4


def landmark_heatmaps(landmarks: torch.Tensor, size: int, sigma: float = HEATMAP_SIGMA) -> torch.Tensor:
    """(B, 68, 2) pixel landmarks (centres at +0.5) -> (B, len(PARTS), size, size) heatmaps in 0..1."""
    B = landmarks.shape[0]
    c = torch.arange(size, dtype=landmarks.dtype, device=landmarks.device) + 0.5
    gx = torch.exp(-((c[None, None, :] - landmarks[..., 0:1]) ** 2) / (2 * sigma ** 2))   # (B, 68, S)
    gy = torch.exp(-((c[None, None, :] - landmarks[..., 1:2]) ** 2) / (2 * sigma ** 2))
    maps = gy[..., :, None] * gx[..., None, :]                                            # (B, 68, S, S)
    return torch.stack([maps[:, list(p)].amax(dim=1) for p in PARTS], dim=1).reshape(B, len(PARTS), size, size)


class CapgGenerator(nn.Module):
    def __init__(self, cfg: CapgConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or CapgConfig()
        b = cfg.base
        cin = 3 + len(PARTS)
        self.e0 = nn.Sequential(_conv(cin, b), _conv(b, b))          # 128
        self.e1 = _conv(b, 2 * b, stride=2)                           # 64
        self.e2 = _conv(2 * b, 4 * b, stride=2)                       # 32
        self.e3 = _conv(4 * b, 8 * b, stride=2)                       # 16
        self.res = nn.Sequential(*[ResBlock(8 * b) for _ in range(cfg.res_blocks)])
        self.d2 = _conv(8 * b + 4 * b, 4 * b)                         # 32
        self.d1 = _conv(4 * b + 2 * b, 2 * b)                         # 64
        self.d0 = nn.Sequential(_conv(2 * b + b, b), nn.Conv2d(b, 3, 3, 1, 1))   # 128

    def forward(self, source: torch.Tensor, heatmaps: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) source in 0..1 and (B, K, S, S) target heatmaps -> (B, 3, S, S) in 0..1."""
        up = lambda x: F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)  # noqa: E731
        x0 = self.e0(torch.cat([source, heatmaps], 1))
        x1 = self.e1(x0)
        x2 = self.e2(x1)
        x = self.res(self.e3(x2))
        x = self.d2(torch.cat([up(x), x2], 1))
        x = self.d1(torch.cat([up(x), x1], 1))
        return torch.sigmoid(self.d0(torch.cat([up(x), x0], 1)))


def face_weight(landmarks: np.ndarray, size: int, outside: float) -> np.ndarray:
    """(S, S) float32 pixel-loss weight: 1 on the landmarks' convex hull grown by 15 %, `outside` elsewhere."""
    import cv2

    pts = np.asarray(landmarks, np.float64)
    c = pts.mean(0)
    hull = cv2.convexHull(((pts - c) * 1.15 + c - 0.5).astype(np.float32)).round().astype(np.int32)
    m = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(m, hull, 1)
    return np.where(m > 0, 1.0, outside).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# Weights


def save_capg_weights(path: Path, generator: CapgGenerator, info: dict) -> None:
    from ganrefine.train_refiner import _save_atomic

    _save_atomic(Path(path), {"format": WEIGHTS_FORMAT, "capg_config": asdict(generator.cfg),
                              "state_dict": generator.state_dict(), **info})


def load_capg(path: str | os.PathLike) -> tuple[CapgGenerator, dict]:
    """A trained generator (eval mode) and its info from a weights file or a `train-capg` checkpoint."""
    from ganrefine.train_capg import CHECKPOINT_FORMAT
    from ganrefine.train_refiner import load_torch_file

    ck = load_torch_file(path, (WEIGHTS_FORMAT, CHECKPOINT_FORMAT), "CAPG-GAN")
    try:
        if ck["format"] == CHECKPOINT_FORMAT:
            cfg, state = CapgConfig(**ck["config"]["capg"]), ck["generator"]
        else:
            cfg, state = CapgConfig(**ck["capg_config"]), ck["state_dict"]
        g = CapgGenerator(cfg)
        g.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # plain data, but no generator's config and tensors
        raise FaceSynthError(f"{path}: not a CAPG-GAN weights file (its config or tensors do not fit: "
                             f"{type(exc).__name__})") from None
    g.eval()
    info = {k: v for k, v in ck.items() if k not in ("state_dict", "generator", "disc_a", "disc_b", "opt_g", "opt_d")}
    return g, info


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
    import hashlib

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
    from face3d.render import view_screen

    with torch.no_grad():
        screen = view_screen(fit.vertices(model), model, list(poses), size)[:, :, :2].numpy()
    return screen[:, np.maximum(model.landmark_vertices, 0)].astype(np.float32)


@torch.no_grad()
def rotate_with_capg(generator: CapgGenerator, fit, image: np.ndarray, model, poses, size: int = 128) -> np.ndarray:
    """(B, size, size, 3) uint8: the photo's face at each pose, by the GAN alone (the fit only places
    the target landmarks and the crop). Generated at the network's size, resized to `size`."""
    from facesynth.augment import aligned_original

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
