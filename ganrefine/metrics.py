"""Image metrics over a region: masked L1 and SSIM (Wang et al. 2004), batched torch, images in 0..1."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_l1(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) images, (B, 1, H, W) 0/1 mask -> (B,) mean absolute difference inside the mask."""
    m = mask.expand_as(a)
    return ((a - b).abs() * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp(min=1.0)


def _gaussian_window(size: int = 11, sigma: float = 1.5, dtype=torch.float32, device="cpu") -> torch.Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-x * x / (2 * sigma * sigma))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim_map(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-pixel SSIM (B, H, W) of two (B, C, H, W) images in 0..1, averaged over channels.

    The standard constants C1 = (0.01 L)^2, C2 = (0.03 L)^2 with L = 1 and an 11x11 Gaussian
    window of sigma 1.5; borders are reflect-padded so the map has the image's size."""
    c = a.shape[1]
    w = _gaussian_window(window, sigma, a.dtype, a.device).expand(c, 1, window, window)
    pad = window // 2

    def blur(x):
        return F.conv2d(F.pad(x, (pad, pad, pad, pad), mode="reflect"), w, groups=c)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a ** 2
    var_b = blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return s.mean(1)


def masked_ssim(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) mean SSIM inside a (B, 1, H, W) 0/1 mask."""
    s = ssim_map(a, b)
    m = mask[:, 0]
    return (s * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp(min=1.0)
