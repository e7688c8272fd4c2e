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

Loading and running trained weights is `ganrefine.capg`; reading and writing them `ganrefine.weights`.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ganrefine.refiner import ResBlock, conv_block

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
        self.e0 = nn.Sequential(conv_block(cin, b), conv_block(b, b))          # 128
        self.e1 = conv_block(b, 2 * b, stride=2)                           # 64
        self.e2 = conv_block(2 * b, 4 * b, stride=2)                       # 32
        self.e3 = conv_block(4 * b, 8 * b, stride=2)                       # 16
        self.res = nn.Sequential(*[ResBlock(8 * b) for _ in range(cfg.res_blocks)])
        self.d2 = conv_block(8 * b + 4 * b, 4 * b)                         # 32
        self.d1 = conv_block(4 * b + 2 * b, 2 * b)                         # 64
        self.d0 = nn.Sequential(conv_block(2 * b + b, b), nn.Conv2d(b, 3, 3, 1, 1))   # 128

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
    pts = np.asarray(landmarks, np.float64)
    c = pts.mean(0)
    hull = cv2.convexHull(((pts - c) * 1.15 + c - 0.5).astype(np.float32)).round().astype(np.int32)
    m = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(m, hull, 1)
    return np.where(m > 0, 1.0, outside).astype(np.float32)
