"""The TP-GAN-style refinement generator and its conditional patch discriminator (issue 4, untrained).

Generator input: the 128 x 128 render (RGB, 0..1), its per-pixel texture confidence and its head
mask (5 channels) plus the projected model landmarks of the view; output: a 128 x 128 photograph.

    global pathway   encoder-decoder with skip connections and residual blocks at 1/8 resolution
    local pathways   four small encoder-decoders on landmark-centred patches (left eye, right eye,
                     nose, mouth; 40x40, 40x40, 32x40, 32x48 at 128 px as in TP-GAN), whose outputs
                     are pasted back into a full-size canvas and fused with the global features
                     before the last layers

Patches are cut and pasted with `grid_sample` on translation-only grids, so the whole generator is
batched (no Python loop over samples) and differentiable.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

#: (name, landmark indices whose mean is the patch centre, (height, width)) at 128 px, as TP-GAN.
PATCHES = (
    ("left_eye", tuple(range(42, 48)), (40, 40)),    # the subject's left eye: image right
    ("right_eye", tuple(range(36, 42)), (40, 40)),
    ("nose", tuple(range(27, 36)), (32, 40)),
    ("mouth", tuple(range(48, 68)), (32, 48)),
)


#: iBUG 68-point index permutation of a horizontally mirrored face.
FLIP68 = (list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] + [35, 34, 33, 32, 31]
          + [45, 44, 43, 42, 47, 46] + [39, 38, 37, 36, 41, 40] + [54, 53, 52, 51, 50, 49, 48]
          + [59, 58, 57, 56, 55] + [64, 63, 62, 61, 60] + [67, 66, 65])


def mirror_landmarks(landmarks, size: int):
    """(..., 68, 2) pixel landmarks of an image (a tensor or an array) -> those of its horizontal
    mirror image (S px wide): points renumbered by `FLIP68` (the left eye becomes the right one) and
    x -> S - x (pixel centres at +0.5). The input is left as it was (indexing by a list copies)."""
    lm = landmarks[..., FLIP68, :]
    lm[..., 0] = size - lm[..., 0]
    return lm


@dataclass
class RefinerConfig:
    """Widths and depths of the refiner, sized for a CPU: at these defaults 1.9 M parameters and about
    35 ms per 128-px view in a batch of 32 on 2 cores (base 32: 6.2 M and 83 ms; base 24: 59 ms)."""

    size: int = 128
    in_channels: int = 5          # render RGB + confidence + mask
    base: int = 16                # global pathway channels at full resolution (x2 per level, 3 levels)
    res_blocks: int = 4           # residual blocks at the bottleneck
    local: int = 16               # channels of each local pathway's output
    #: share of each local patch's height and width over which its output fades to 0 at the patch's
    #: edges before it is pasted (`patch_window`); 0 pastes it whole, so that its rectangle's edge is
    #: an edge in the features the fusion layers see (the shipped weights were trained that way)
    feather: float = 0.0


def conv_block(cin, cout, stride=1):
    """3x3 convolution, instance norm, leaky ReLU: the building block of the refiner and the CAPG-GAN generator."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.InstanceNorm2d(cout, affine=True), nn.LeakyReLU(0.2))


class ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), nn.InstanceNorm2d(c, affine=True), nn.LeakyReLU(0.2),
                                  nn.Conv2d(c, c, 3, 1, 1), nn.InstanceNorm2d(c, affine=True))

    def forward(self, x):
        return F.leaky_relu(x + self.body(x), 0.2)


class LocalPathway(nn.Module):
    """A small encoder-decoder on one facial patch."""

    def __init__(self, cin: int, cout: int, width: int = 32):
        super().__init__()
        self.down1 = conv_block(cin, width)
        self.down2 = conv_block(width, 2 * width, 2)
        self.mid = ResBlock(2 * width)
        self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                conv_block(2 * width, width))
        self.out = nn.Conv2d(2 * width, cout, 3, 1, 1)

    def forward(self, x):
        a = self.down1(x)
        b = self.up(self.mid(self.down2(a)))
        b = F.interpolate(b, size=a.shape[-2:], mode="bilinear", align_corners=False)
        return self.out(torch.cat([a, b], dim=1))


def patch_centres(landmarks: torch.Tensor) -> torch.Tensor:
    """(B, 68, 2) pixel landmarks -> (B, 4, 2) patch centres in pixels, in `PATCHES` order."""
    return torch.stack([landmarks[:, list(idx)].mean(dim=1) for _, idx, _ in PATCHES], dim=1)


def _translation_grid(centres: torch.Tensor, hw: tuple[int, int], size: int) -> torch.Tensor:
    """Sampling grid (B, h, w, 2) in normalised coords of a (size x size) image for patches at `centres`."""
    h, w = hw
    ys = torch.arange(h, dtype=centres.dtype, device=centres.device) - (h - 1) / 2
    xs = torch.arange(w, dtype=centres.dtype, device=centres.device) - (w - 1) / 2
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    # pixel (x, y) with centres at +0.5 -> normalised ((x + 0.5) * 2 / size - 1) for align_corners=False;
    # the landmark positions are already in that +0.5 convention
    px = centres[:, 0, None, None] + gx
    py = centres[:, 1, None, None] + gy
    return torch.stack([px * 2 / size - 1, py * 2 / size - 1], dim=-1)


def crop_patch(image: torch.Tensor, centres: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(B, C, S, S) -> (B, C, h, w) patches centred at `centres` (B, 2) pixels (zeros outside)."""
    grid = _translation_grid(centres, hw, image.shape[-1])
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def paste_patch(patch: torch.Tensor, centres: torch.Tensor, size: int) -> torch.Tensor:
    """Inverse of `crop_patch`: (B, C, h, w) patches placed on a zero (B, C, size, size) canvas."""
    h, w = patch.shape[-2:]
    ys = torch.arange(size, dtype=patch.dtype, device=patch.device) + 0.5
    gy, gx = torch.meshgrid(ys, ys, indexing="ij")
    # canvas pixel -> patch pixel index, then normalised into the patch
    u = gx[None] - centres[:, 0, None, None] + (w - 1) / 2 + 0.5
    v = gy[None] - centres[:, 1, None, None] + (h - 1) / 2 + 0.5
    grid = torch.stack([u * 2 / w - 1, v * 2 / h - 1], dim=-1)
    return F.grid_sample(patch, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def patch_window(hw: tuple[int, int], feather: float, device=None, dtype=None) -> torch.Tensor:
    """(h, w) weights of a local patch: 1 inside, falling linearly to 0 at the patch's edges over
    `feather` of its height and width (raised to 1 everywhere with feather 0). Local pathways see
    only their patch; pasted whole, their output ends at the patch's rectangle, and the refined
    views showed those rectangles round the eyes, the nose and the mouth."""
    h, w = hw

    def ramp(n: int) -> torch.Tensor:
        if feather <= 0:
            return torch.ones(n, device=device, dtype=dtype)
        i = torch.arange(n, device=device, dtype=dtype) + 0.5           # pixel centres
        edge = torch.minimum(i, n - i)                                     # distance to the nearer edge
        return (edge / max(feather * n, 1e-6)).clamp(max=1.0)

    return ramp(h)[:, None] * ramp(w)[None, :]


class RefinerGenerator(nn.Module):
    def __init__(self, cfg: RefinerConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or RefinerConfig()
        c = cfg.base
        self.enc0 = conv_block(cfg.in_channels, c)            # 128
        self.enc1 = conv_block(c, 2 * c, 2)                   # 64
        self.enc2 = conv_block(2 * c, 4 * c, 2)               # 32
        self.enc3 = conv_block(4 * c, 8 * c, 2)               # 16
        self.res = nn.Sequential(*[ResBlock(8 * c) for _ in range(cfg.res_blocks)])
        self.dec3 = conv_block(8 * c + 4 * c, 4 * c)          # 32
        self.dec2 = conv_block(4 * c + 2 * c, 2 * c)          # 64
        self.dec1 = conv_block(2 * c + c, c)                  # 128
        self.local = nn.ModuleList([LocalPathway(cfg.in_channels, cfg.local) for _ in PATCHES])
        self.fuse = nn.Sequential(conv_block(c + len(PATCHES) * cfg.local + cfg.in_channels, c),
                                  nn.Conv2d(c, 3, 3, 1, 1))
        # zero residual at initialisation: training starts from the render itself, not from noise
        nn.init.zeros_(self.fuse[-1].weight)
        nn.init.zeros_(self.fuse[-1].bias)

    def forward(self, inputs: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """inputs (B, 5, S, S) (render in 0..1, confidence, mask), landmarks (B, 68, 2) px -> (B, 3, S, S) in 0..1."""
        up = lambda x, ref: F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)  # noqa: E731
        e0 = self.enc0(inputs)
        e1 = self.enc1(e0)
        e2 = self.enc2(e1)
        e3 = self.res(self.enc3(e2))
        d3 = self.dec3(torch.cat([up(e3, e2), e2], 1))
        d2 = self.dec2(torch.cat([up(d3, e1), e1], 1))
        d1 = self.dec1(torch.cat([up(d2, e0), e0], 1))
        centres = patch_centres(landmarks)
        size = inputs.shape[-1]
        canvases = []
        for k, ((_, _, hw), path) in enumerate(zip(PATCHES, self.local)):
            scale = size / self.cfg.size
            phw = (max(8, round(hw[0] * scale)), max(8, round(hw[1] * scale)))
            patch = crop_patch(inputs, centres[:, k], phw)
            local = path(patch)
            if self.cfg.feather > 0:
                local = local * patch_window(phw, self.cfg.feather, local.device, local.dtype)
            canvases.append(paste_patch(local, centres[:, k], size))
        x = self.fuse(torch.cat([d1] + canvases + [inputs], 1))
        # a residual on the render: the generator corrects the render rather than repainting it
        return (inputs[:, :3] + x).clamp(0.0, 1.0)


class FlipAveraged(nn.Module):
    """Inference with test-time flip augmentation: the mean of the generator's output and the mirror
    image of its output on the mirrored input (landmarks mirrored with `mirror_landmarks`).

    The generator was trained on randomly mirrored pairs, so both passes are predictions of the same
    photograph whose errors are only partly shared; their mean is closer to it (shipped weights, 100
    validation pairs, against the render: L1 -30.6% -> -33.5%, identity distance -22.4% -> -23.9%;
    benchmarks/bench_flip_average.py) for twice the compute. Both passes run as one batch: the
    instance norms see each image alone, so this equals two separate calls. The result is exactly
    mirror-equivariant."""

    def __init__(self, generator: RefinerGenerator):
        super().__init__()
        self.generator = generator
        self.cfg = generator.cfg

    def forward(self, inputs: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        both = self.generator(torch.cat([inputs, inputs.flip(-1)]),
                              torch.cat([landmarks, mirror_landmarks(landmarks, inputs.shape[-1])]))
        plain, mirrored = both.chunk(2)
        return 0.5 * (plain + mirrored.flip(-1))


class PatchDiscriminator(nn.Module):
    """A conditional PatchGAN: (image, render) -> a grid of real/fake scores."""

    def __init__(self, in_channels: int = 6, base: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, base, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(base, 2 * base, 4, 2, 1), nn.InstanceNorm2d(2 * base, affine=True), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * base, 4 * base, 4, 2, 1), nn.InstanceNorm2d(4 * base, affine=True), nn.LeakyReLU(0.2),
            nn.Conv2d(4 * base, 1, 3, 1, 1))

    def forward(self, image: torch.Tensor, render: torch.Tensor, features: bool = False):
        """The score grid of (image, render); with `features`, the list of every LeakyReLU's
        activations (the feature-matching loss's features) followed by the score grid."""
        x = torch.cat([image, render], 1)
        if not features:
            return self.net(x)
        out = []
        for layer in self.net:
            x = layer(x)
            if isinstance(layer, nn.LeakyReLU):
                out.append(x)
        return out + [x]


class MultiScaleDiscriminator(nn.Module):
    """pix2pixHD's multi-scale discriminator: `scales` conditional patch discriminators of the same
    shape, the k-th on (image, render) average-pooled k times by 2, so the coarse ones judge the
    whole face's structure and the fine one its texture. The forward pass returns one entry per
    scale (a score grid, or with `features` the list of `PatchDiscriminator`'s features)."""

    def __init__(self, scales: int = 2, in_channels: int = 6, base: int = 32):
        super().__init__()
        self.scales = nn.ModuleList([PatchDiscriminator(in_channels, base) for _ in range(scales)])

    def forward(self, image: torch.Tensor, render: torch.Tensor, features: bool = False) -> list:
        out = []
        for k, disc in enumerate(self.scales):
            if k:
                image = F.avg_pool2d(image, 3, 2, 1, count_include_pad=False)
                render = F.avg_pool2d(render, 3, 2, 1, count_include_pad=False)
            out.append(disc(image, render, features))
        return out


# ------------------------------------------------------------------------------------------------
# Losses


def multiscale_l1(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                  sizes=(32, 64, 128)) -> torch.Tensor:
    """Mean masked L1 at several scales (TP-GAN's multi-scale pixel loss)."""
    total = 0.0
    for s in sizes:
        o = F.interpolate(output, size=(s, s), mode="area")
        t = F.interpolate(target, size=(s, s), mode="area")
        m = F.interpolate(mask, size=(s, s), mode="area")
        total = total + ((o - t).abs() * m).sum() / (3 * m.sum()).clamp(min=1.0)
    return total / len(sizes)


def symmetry_loss(output: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """TP-GAN's symmetry loss for frontal targets: L1 between the face and its mirror, masked."""
    m = mask * torch.flip(mask, dims=[-1])
    return ((output - torch.flip(output, dims=[-1])).abs() * m).sum() / (3 * m.sum()).clamp(min=1.0)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


def lsgan_loss(scores: torch.Tensor, real: bool) -> torch.Tensor:
    return ((scores - (1.0 if real else 0.0)) ** 2).mean()


def feature_matching_loss(real: list, fake: list) -> torch.Tensor:
    """pix2pixHD's feature-matching loss: the mean L1 between the discriminator's intermediate
    features of the photo (`real`, computed without gradients) and of the refined image (`fake`),
    averaged over layers and scales. `real` and `fake`: per scale, the feature list of
    `PatchDiscriminator(..., features=True)` (its last entry, the score grid, is left out)."""
    total, n = 0.0, 0
    for r_scale, f_scale in zip(real, fake):
        for r, f in zip(r_scale[:-1], f_scale[:-1]):
            total = total + (f - r.detach()).abs().mean()
            n += 1
    return total / max(n, 1)


def seen_render_weights(confidence: torch.Tensor, mask: torch.Tensor, band: tuple[float, float],
                        feather: float) -> torch.Tensor:
    """(B, 1, S, S) texture confidence and head mask -> (B, 1, S, S) weights of the render in the
    refined view: 0 off the head and under band[0], 1 over band[1], linear between, blurred by a
    Gaussian of `feather` x S. The torch form of `ganrefine.hybrid.seen_weights` (its reference,
    with OpenCV's blur), so that training composes the output as `--method hybrid` does."""
    lo, hi = band
    w = ((confidence - lo) / (hi - lo)).clamp(0.0, 1.0) * (mask > 0.5).to(confidence.dtype)
    sigma = feather * w.shape[-1]
    if sigma <= 0:
        return w
    r = max(1, int(round(4 * sigma)))          # OpenCV's kernel for float images reaches ~4 sigma
    x = torch.arange(-r, r + 1, device=w.device, dtype=w.dtype)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    # OpenCV's default border: reflect-101 (the edge pixel not repeated)
    w = F.conv2d(F.pad(w, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(w, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))
