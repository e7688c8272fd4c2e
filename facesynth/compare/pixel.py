"""The pixel-level realism test of `facesynth compare` (``pixel_realism``): a classifier two-sample
test (Lopez-Paz & Oquab, ICLR 2017) whose classifier is a small CNN trained from scratch on the
pixels of aligned, landmark-hull-masked face crops, real LFW photos against generated views,
within matched yaw bins.

- Crops (`pixel_crop`): the dlib-aligned chip (`ganrefine.identity.align_faces`, dlib's
  ``get_face_chip`` at :data:`CROP_SIZE` px, padding 0.25, as the identity-feature test's 150-px
  chip) of the image and of its 68-landmark hull (`metrics.hull_mask`, the hull `face_region`
  keeps); outside the hull is set to grey 128. A crop turned left (yaw < 0) is mirrored, so every
  crop of a bin turns the same way.
- Pose: a generated view's yaw is the yaw asked for; a real photo's is estimated from its dlib
  landmarks (`face3d.pose_estimation.photo_pose`, PnP against the model's mean shape).
- Matching (`matched_bins`): |yaw| bins :data:`YAW_EDGES` (15 degrees wide, centred on 0, 15,
  30, ...); in each bin equal numbers of real and generated crops are drawn (seeded); a bin with
  fewer than :data:`MIN_PER_CLASS` crops in a class is not testable (NaN and its counts), never
  pooled. The overall figure is the test on the matched samples of the testable bins pooled.
- Test (`cnn_c2st`): k-fold (:data:`FOLDS`) held-out accuracy of `PixelCNN`, folds stratified by
  class and grouped (a person's crops stay in one fold, so a view's mirror twin at the opposite yaw
  is never in the test fold of its training twin). 0.5: indistinguishable; 1: told apart always.
- Controls (`pixel_controls`): real vs real (two disjoint halves of the real crops, ~0.5) and real
  vs real blurred (a Gaussian of sigma :data:`BLUR_SIGMA` crop pixels on the unmasked crop, then
  the mask), which a working test tells apart.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import nn

from facesynth.compare.metrics import chance_p_value, hull_mask
from ganrefine.identity import CHIP_PADDING, align_faces

#: Side of the crops the classifier sees (px).
CROP_SIZE = 64
#: What a cached crop was made with: a cache entry with other settings is made again.
CROP_SETTINGS = {"size": CROP_SIZE, "padding": CHIP_PADDING, "version": 1}
#: |yaw| bin edges in degrees: [0, 7.5), [7.5, 22.5), ... centred on the yaws 0, 15, 30, ... .
YAW_EDGES = (0.0, 7.5, 22.5, 37.5, 52.5, 67.5, 90.01)
#: A bin is testable when both classes have at least this many crops.
MIN_PER_CLASS = 20
#: Folds of the cross-validated accuracy.
FOLDS = 5
#: The blurred control's Gaussian sigma, in crop pixels.
BLUR_SIGMA = 1.0
#: Training of each fold's CNN: EPOCHS epochs, and at least MIN_STEPS steps (small samples train longer).
EPOCHS, MIN_STEPS, BATCH, LR, WEIGHT_DECAY = 10, 150, 32, 2e-3, 1e-4


def pixel_crop_parts(image: np.ndarray, landmarks: np.ndarray, size: int = CROP_SIZE):
    """The unmasked aligned crop (size, size, 3) uint8 and its hull mask (size, size) bool."""
    mask = np.repeat(hull_mask(image.shape, landmarks)[..., None] * np.uint8(255), 3, axis=2)
    lm = torch.from_numpy(np.asarray(landmarks, np.float64))
    chips = align_faces([image, mask], torch.stack([lm, lm]), size=size, padding=CHIP_PADDING)
    chip = chips[0].clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return np.ascontiguousarray(chip), chips[1, 0].numpy() >= 128


def apply_mask(chip: np.ndarray, mask: np.ndarray, blur_sigma: float = 0.0) -> np.ndarray:
    """`chip` (optionally Gaussian-blurred first) with everything outside `mask` set to grey 128."""
    if blur_sigma > 0:
        chip = cv2.GaussianBlur(chip, (0, 0), blur_sigma, borderType=cv2.BORDER_REFLECT)
    out = np.full_like(chip, 128)
    out[mask] = chip[mask]
    return out


def pixel_crop(image: np.ndarray, landmarks: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """The crop the pixel test sees: aligned, outside the 68-landmark hull grey, (size, size, 3) uint8."""
    return apply_mask(*pixel_crop_parts(image, landmarks, size))


def yaw_bin(yaw: float) -> int | None:
    """Index of the |yaw| bin of `YAW_EDGES` holding `yaw`, or None outside them."""
    a = abs(float(yaw))
    for k in range(len(YAW_EDGES) - 1):
        if YAW_EDGES[k] <= a < YAW_EDGES[k + 1]:
            return k
    return None


def bin_name(k: int) -> str:
    return f"{YAW_EDGES[k]:g}-{min(YAW_EDGES[k + 1], 90):g}"


def facing_right(crops: np.ndarray, yaws) -> np.ndarray:
    """The crops with those of yaw < 0 mirrored left-right (a copy)."""
    out = np.array(crops, copy=True)
    neg = np.asarray(yaws, np.float64) < 0
    out[neg] = out[neg][:, :, ::-1]
    return out


class PixelCNN(nn.Module):
    """The classifier, on the crop scaled to [-1, 1]: a 4 x 4 stride-4 convolution to 16 channels (each
    cell sees a 4 x 4 pixel patch at full resolution: fine detail, blur and noise), then 3 x 3
    stride-2 convolutions to 32 and 64 channels (batch norm and ReLU after each), global average
    pooling and one logit. About 0.8 M multiply-adds per 64-px crop."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64)):
        super().__init__()
        layers, c = [], 3
        for i, w in enumerate(widths):
            conv = nn.Conv2d(c, w, 4, stride=4, bias=False) if i == 0 else nn.Conv2d(c, w, 3, 2, 1, bias=False)
            layers += [conv, nn.BatchNorm2d(w), nn.ReLU()]
            c = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3))).squeeze(1)


def as_input(crops: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def train_and_predict(x_tr: torch.Tensor, y_tr: torch.Tensor, x_te: torch.Tensor, seed: int) -> np.ndarray:
    """A fresh `PixelCNN` (seeded) trained on (x_tr, y_tr) with Adam for `EPOCHS` epochs (more when
    that is under `MIN_STEPS` steps); its labels (0/1) for `x_te`. Random translations by up to 2 px
    are the only augmentation."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = PixelCNN()
    opt = torch.optim.Adam(net.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    per_epoch = sum(1 for s in range(0, len(x_tr), BATCH) if len(x_tr) - s >= 2)
    epochs = max(EPOCHS, math.ceil(MIN_STEPS / max(per_epoch, 1)))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=max(epochs * per_epoch, 1))
    net.train()
    with torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(len(x_tr), generator=gen)
            for s in range(0, len(x_tr), BATCH):
                idx = order[s:s + BATCH]
                if len(idx) < 2:  # batch norm needs two samples
                    continue
                dx, dy = torch.randint(-2, 3, (2,), generator=gen).tolist()
                xb = torch.roll(x_tr[idx], shifts=(dy, dx), dims=(2, 3))
                loss = nn.functional.binary_cross_entropy_with_logits(net(xb), y_tr[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
    net.eval()
    with torch.no_grad():
        return (net(x_te) > 0).numpy().astype(np.int64)


def grouped_folds(labels: np.ndarray, groups: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """A fold index per sample: whole groups (e.g. a person, in either class) are dealt, shuffled and
    biggest first, each to the fold where it leaves the fuller class least full (relative to a fold's
    share of that class), so the folds are near balanced by class and no group is split across folds
    (a person seen in training never lends its face to the test fold)."""
    fold = np.zeros(len(labels), np.int64)
    names, inverse = np.unique(groups, return_inverse=True)
    counts = np.zeros((len(names), 2), np.int64)
    np.add.at(counts, (inverse, labels), 1)
    share = np.maximum(counts.sum(0), 1) / k
    order = rng.permutation(len(names))
    order = order[np.argsort(-counts[order].sum(1), kind="stable")]
    load = np.zeros((k, 2), np.int64)
    for g in order:
        f = int(np.argmin(((load + counts[g]) / share).max(1)))
        fold[inverse == g] = f
        load[f] += counts[g]
    return fold


def no_pixel_c2st(n_real: int = 0, n_fake: int = 0) -> dict:
    """What `cnn_c2st` returns when the test cannot run."""
    return {"accuracy": float("nan"), "n_per_class": int(min(n_real, n_fake)), "n_real": int(n_real),
            "n_fake": int(n_fake), "folds": [], "fold_sizes": [], "p_value": float("nan")}


def cnn_c2st(real: np.ndarray, fake: np.ndarray, seed: int = 0, real_groups=None, fake_groups=None,
             folds: int = FOLDS, min_per_class: int = MIN_PER_CLASS) -> dict:
    """Classifier two-sample test on pixels: `real` (label 0) and `fake` (label 1) crops, (N, H, W, 3)
    uint8, equal in number (the caller balances them; else the bigger class is subsampled, seeded).
    The samples are dealt into `folds` folds (`grouped_folds`; groups: e.g. the person, default each
    sample alone); for each fold a `PixelCNN` trained from scratch on the other folds labels it.

    Returns {"accuracy": correct held-out labels / 2n (every sample is held out once), "folds":
    each fold's accuracy, "fold_sizes", "n_per_class", "n_real", "n_fake", "p_value": one-sided
    binomial tail of the correct count under chance (folds' classifiers differ, so approximate)};
    NaN accuracy when a class has fewer than `min_per_class` samples.
    """
    real, fake = np.asarray(real), np.asarray(fake)
    n = min(len(real), len(fake))
    if n < max(min_per_class, folds, 2):
        return no_pixel_c2st(len(real), len(fake))
    rng = np.random.default_rng(seed)
    rg = np.char.add("r", np.arange(len(real)).astype(str)) if real_groups is None else np.asarray(real_groups).astype(str)
    fg = np.char.add("f", np.arange(len(fake)).astype(str)) if fake_groups is None else np.asarray(fake_groups).astype(str)
    ri, fi = rng.permutation(len(real))[:n], rng.permutation(len(fake))[:n]
    x = as_input(np.concatenate([real[ri], fake[fi]]))
    y = np.concatenate([np.zeros(n, np.int64), np.ones(n, np.int64)])
    fold = grouped_folds(y, np.concatenate([rg[ri], fg[fi]]), folds, rng)
    correct, accs, sizes = 0, [], []
    yt = torch.from_numpy(y).float()
    for f in range(folds):
        te = np.flatnonzero(fold == f)
        tr = np.flatnonzero(fold != f)
        if not len(te):
            continue
        pred = train_and_predict(x[tr], yt[tr], x[te], seed * 1000 + f)
        right = int((pred == y[te]).sum())
        correct += right
        accs.append(right / len(te))
        sizes.append(int(len(te)))
    total = 2 * n
    return {"accuracy": correct / total, "n_per_class": int(n), "n_real": int(len(real)), "n_fake": int(len(fake)),
            "folds": accs, "fold_sizes": sizes, "p_value": chance_p_value(correct, total)}


@dataclass
class RealCrops:
    """The real photos' side of the pixel test: unmasked aligned crops (N, S, S, 3) uint8, their hull
    masks (N, S, S), estimated yaws (N,) (NaN where PnP failed) and people (N,) (the fold groups)."""

    chips: np.ndarray
    masks: np.ndarray
    yaws: np.ndarray
    names: np.ndarray

    @classmethod
    def of(cls, images, landmarks, yaws, names) -> "RealCrops":
        parts = [pixel_crop_parts(im, lm) for im, lm in zip(images, landmarks)]
        empty = np.zeros((0, CROP_SIZE, CROP_SIZE), bool)
        return cls(np.stack([c for c, _ in parts]) if parts else np.zeros((0, CROP_SIZE, CROP_SIZE, 3), np.uint8),
                   np.stack([m for _, m in parts]) if parts else empty,
                   np.asarray(yaws, np.float64), np.asarray(names, dtype=str))

    def crops(self, blur_sigma: float = 0.0) -> np.ndarray:
        """The masked crops (optionally blurred before masking), turned to face right."""
        out = [apply_mask(c, m, blur_sigma) for c, m in zip(self.chips, self.masks)]
        return facing_right(np.stack(out) if out else self.chips.copy(), np.nan_to_num(self.yaws))


def bin_matches(real: RealCrops, real_crops: np.ndarray, fakes: list[dict], k: int, rng: np.random.Generator):
    """Bin k's counts and, when testable, equal seeded draws of real and generated crops with their
    groups: the person (an LFW photo's folder, a view's identity), so that a person with real photos
    and views keeps them all in one fold."""
    r_idx = np.flatnonzero([yaw_bin(y) == k for y in real.yaws])
    f_idx = [i for i, v in enumerate(fakes) if yaw_bin(float(v["yaw"])) == k]
    n = min(len(r_idx), len(f_idx))
    counts = {"bin": bin_name(k), "real": int(len(r_idx)), "generated": len(f_idx), "testable": n >= MIN_PER_CLASS}
    if not counts["testable"]:
        return counts, None
    ri = rng.choice(r_idx, n, replace=False)
    fi = rng.choice(len(f_idx), n, replace=False)
    chosen = [fakes[f_idx[i]] for i in fi]
    fake = facing_right(np.stack([v["crop"] for v in chosen]), [float(v["yaw"]) for v in chosen])
    return counts, (real_crops[ri], real.names[ri], fake, np.array([str(v["identity"]) for v in chosen]))


def method_pixel_realism(real: RealCrops, real_crops: np.ndarray, fakes: list[dict], seed: int) -> dict:
    """One method's pixel test: per |yaw| bin (seed + 1 + k) and over the testable bins' draws pooled (seed).
    `fakes`: its views with a face (records with "yaw", "identity" and "crop")."""
    bins, pooled = {}, []
    for k in range(len(YAW_EDGES) - 1):
        counts, drawn = bin_matches(real, real_crops, fakes, k, np.random.default_rng(seed + 1 + k))
        if drawn is None:
            bins[bin_name(k)] = {**counts, **no_pixel_c2st(counts["real"], counts["generated"])}
            continue
        r, rn, f, fn = drawn
        bins[bin_name(k)] = {**counts, **cnn_c2st(r, f, seed + 1 + k, rn, fn)}
        pooled.append(drawn)
    if pooled:
        r, rn, f, fn = (np.concatenate([d[j] for d in pooled]) for j in range(4))
        overall = cnn_c2st(r, f, seed, rn, fn)
    else:
        overall = no_pixel_c2st()
    return {"all": {"bins": [b for b, v in bins.items() if v["testable"]], **overall}, "bins": bins}


def pixel_controls(real: RealCrops, real_crops: np.ndarray, seed: int) -> dict:
    """The two controls on the real crops alone: people split at random (seeded) into two halves A
    and B; A vs B (the same distribution: ~0.5) and A vs B blurred by `BLUR_SIGMA` px (> 0.5 when the
    test works)."""
    rng = np.random.default_rng(seed + 100)
    people = np.unique(real.names)
    half = set(rng.permutation(people)[: len(people) // 2].tolist())
    a = np.flatnonzero([n in half for n in real.names])
    b = np.flatnonzero([n not in half for n in real.names])
    blurred = real.crops(BLUR_SIGMA)
    return {"halves": "the real photos' people split at random into two disjoint halves A and B",
            "blur_sigma": BLUR_SIGMA,
            "real_vs_real": cnn_c2st(real_crops[a], real_crops[b], seed + 101, real.names[a], real.names[b]),
            "real_vs_blurred": cnn_c2st(real_crops[a], blurred[b], seed + 102, real.names[a], real.names[b])}


def pixel_realism(views: list[dict], methods, real: RealCrops, seed: int = 0) -> dict:
    """The pixel test of every method in `methods` against the real crops, and the controls:
    {"methods": {method: {"all": ..., "bins": {bin: ...}}}, "controls": ...}."""
    real_crops = real.crops()
    out = {"methods": {}, "controls": pixel_controls(real, real_crops, seed)}
    for m in methods:
        fakes = [v for v in views if v["method"] == m and v.get("crop") is not None]
        out["methods"][m] = method_pixel_realism(real, real_crops, fakes, seed)
    return out


#: How the pixel test is made, as metrics.json's info.pixel_realism says it.
PIXEL_METHOD = {
    "crops": f"dlib-aligned {CROP_SIZE}x{CROP_SIZE} RGB chips (get_face_chip, padding {CHIP_PADDING}) of dlib-detected "
             "faces, outside the convex hull of the 68 landmarks grey; yaw < 0 mirrored",
    "pose": "generated: the yaw asked for; real: dlib landmarks + PnP against the morphable model's mean shape",
    "bins": "|yaw| bins " + ", ".join(bin_name(k) for k in range(len(YAW_EDGES) - 1)) + " degrees; per bin "
            f"n = min(real, generated) of each drawn (seeded); fewer than {MIN_PER_CLASS}: not testable (null); "
            "'all' pools the testable bins' draws",
    "classifier": f"CNN from scratch (PixelCNN: 4x4/4 conv 16, 3x3/2 conv 32, 64, batch norm, ReLU, global pool, "
                  f"linear), Adam lr {LR} one-cycle, weight decay {WEIGHT_DECAY}, {EPOCHS} epochs of batch {BATCH}, "
                  "random shifts up to 2 px, seeded",
    "split": f"{FOLDS}-fold cross-validation, folds balanced by class and grouped by person; accuracy = correct "
             "held-out labels / all samples (each held out once)"}
