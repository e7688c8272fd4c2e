"""The metric functions of `facesynth compare`, on plain arrays: the classifier two-sample test
(`c2st`), the cross-verification accuracy, the face-only region and the identity features of a
view (`FaceEncoder`), the pose error of a view and the median that keeps failures.

Every view goes through dlib's HOG detector (upsample 1) and 68-point predictor, largest face
(`detect_view_face`); the descriptor is dlib's 128-D face descriptor computed by its PyTorch port
(`ganrefine.identity.IdentityEncoder`) on the dlib-aligned 150 x 150 chip.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from face3d.camera import Pose
from face3d.landmarks import detect_faces
from face3d.pose_estimation import angle_error
from ganrefine.identity import IdentityEncoder, align_faces, image_tensor

#: dlib's same-person threshold on the descriptor distance.
THRESHOLD = 0.6
#: The six metrics, in the order of metrics.csv's columns.
METRIC_NAMES = ("identity_to_source", "cross_verification", "pose_error", "realism", "pixel_realism",
                "seconds_per_view")
#: The realism test needs at least this many samples in each class (half train, half test).
MIN_C2ST_PER_CLASS = 8
#: Residual block of dlib's ResNet whose globally average-pooled output is the realism feature:
#: index 9 is the last block of the 128-channel stage (ganrefine.identity._BLOCKS), 37 x 37 cells
#: on a 150-px chip -> a 128-D feature of mid-level texture and shape statistics.
FEATURE_BLOCK = 9
#: What the realism test looks at (`compare --realism-region`): "face", the face alone (outside the
#: 68-landmark hull set to grey, `face_region`), or "whole", the whole aligned chip unmasked (the
#: face with its hair, ears, neck and background around it, as far as the chip reaches).
REALISM_REGIONS = ("face", "whole")


def finite_median(values) -> float:
    """Median with ``inf`` entries kept (they count as failures); NaN when there are no values."""
    v = np.asarray(list(values), dtype=np.float64)
    return float(np.median(v)) if v.size else float("nan")


def cross_verification_accuracy(dist: np.ndarray, same: np.ndarray, valid: np.ndarray | None = None,
                                threshold: float = THRESHOLD) -> tuple[float, int]:
    """Verification accuracy of (view, real photo) pairs and the number of pairs.

    ``dist`` (V, Q): descriptor distance of view v to real photo q (``inf`` for a view without a
    detected face); ``same`` (V, Q) bool: same identity; ``valid`` (V, Q) bool: the pair counts
    (False for a view's own source photo). A pair is right when ``same and d < threshold`` or
    ``not same and d >= threshold``; an infinite distance is always wrong (no face = failure).
    Returns (NaN, 0) when there is no valid pair.
    """
    dist = np.asarray(dist, dtype=np.float64)
    same = np.asarray(same, dtype=bool)
    valid = np.ones_like(same) if valid is None else np.asarray(valid, dtype=bool)
    right = np.where(same, dist < threshold, dist >= threshold) & np.isfinite(dist)
    n = int(valid.sum())
    return (float(right[valid].mean()) if n else float("nan")), n


def _logistic_regression(x: np.ndarray, y: np.ndarray, l2: float):
    """Weights (D,) and bias of argmin mean BCE(sigmoid(x w + b), y) + l2/2 |w|^2 (L-BFGS, float64)."""
    X = torch.from_numpy(x.astype(np.float64))
    Y = torch.from_numpy(y.astype(np.float64))
    w = torch.zeros(X.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=200, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(X @ w + b, Y) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach().numpy(), float(b.detach())


def no_c2st(n_per_class: int = 0) -> dict:
    """What `c2st` returns when the test cannot run (too few samples in a class)."""
    return {"accuracy": float("nan"), "n_per_class": int(n_per_class), "n_train": 0, "n_test": 0,
            "p_value": float("nan")}


def c2st(real_feats: np.ndarray, fake_feats: np.ndarray, seed: int = 0, l2: float = 1e-2,
         min_per_class: int = 2) -> dict:
    """Classifier two-sample test (Lopez-Paz & Oquab, "Revisiting classifier two-sample tests", ICLR 2017).

    Samples x_i ~ P (real, label 0) and y_j ~ Q (generated, label 1). Both classes are subsampled
    to n = min(|real|, |fake|) (seeded), so chance is exactly 1/2. Each class is split at random
    into a training half (floor(n/2)) and a test half (the rest), giving D_tr and D_te with
    n_te = 2 (n - floor(n/2)). Features are standardised with D_tr's mean and standard deviation;
    a logistic regression f(z) = sigmoid(w.z + b) is fitted on D_tr by minimising
    mean_i BCE(f(z_i), l_i) + l2/2 |w|^2, and the statistic is its held-out accuracy

        t = 1/n_te * sum_{(z, l) in D_te} 1[ 1[f(z) > 1/2] == l ].

    Under H0 (P = Q) the classifier cannot beat chance and n_te * t ~ Binomial(n_te, 1/2), so
    t ~ N(1/2, 1/(4 n_te)) for large n_te; the one-sided p-value is P(Binomial(n_te, 1/2) >= n_te t).
    t near 0.5: the generated samples are indistinguishable from the real ones in this feature
    space; t near 1: they are told apart every time.

    Returns {"accuracy", "n_per_class", "n_train", "n_test", "p_value"}; accuracy is NaN when a
    class has fewer than ``min_per_class`` (at least 2) samples.
    """
    real = np.asarray(real_feats, dtype=np.float64).reshape(len(real_feats), -1)
    fake = np.asarray(fake_feats, dtype=np.float64).reshape(len(fake_feats), -1)
    n = min(len(real), len(fake))
    if n < max(2, min_per_class):
        return no_c2st(n)
    rng = np.random.default_rng(seed)
    r = real[rng.permutation(len(real))[:n]]
    f = fake[rng.permutation(len(fake))[:n]]
    k = n // 2
    x_tr = np.concatenate([r[:k], f[:k]])
    y_tr = np.concatenate([np.zeros(k), np.ones(k)])
    x_te = np.concatenate([r[k:], f[k:]])
    y_te = np.concatenate([np.zeros(n - k), np.ones(n - k)])
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-8
    x_tr, x_te = (x_tr - mu) / sd, (x_te - mu) / sd
    w, b = _logistic_regression(x_tr, y_tr, l2)
    pred = (x_te @ w + b) > 0
    correct = int((pred == (y_te > 0.5)).sum())
    n_te = len(y_te)
    return {"accuracy": correct / n_te, "n_per_class": int(n), "n_train": 2 * k, "n_test": n_te,
            "p_value": chance_p_value(correct, n_te)}


def chance_p_value(correct: int, total: int) -> float:
    """P(at least `correct` of `total` balanced two-class labels right by chance): the exact one-sided
    binomial tail at p = 1/2, a two-sample test's p-value."""
    return sum(math.comb(total, i) for i in range(correct, total + 1)) / 2 ** total


def c2st_accuracy(real_feats: np.ndarray, fake_feats: np.ndarray, seed: int = 0) -> float:
    """The held-out accuracy of :func:`c2st` (0.5: cannot tell real from generated)."""
    return c2st(real_feats, fake_feats, seed)["accuracy"]


def hull_mask(shape, landmarks: np.ndarray) -> np.ndarray:
    """(H, W) uint8, 1 inside the convex hull of the 68 landmarks (pixel centres at j + 0.5), 0 outside."""
    hull = cv2.convexHull(np.round(np.asarray(landmarks, np.float64) - 0.5).astype(np.int32))
    mask = np.zeros(tuple(shape[:2]), np.uint8)
    cv2.fillConvexPoly(mask, hull, 1)
    return mask


def face_region(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The image with everything outside the convex hull of its 68 landmarks (jaw line to brows)
    set to mid-grey: what the realism test looks at, so that it judges the face and not the
    background, hair or clothes (a 3D view's plain grey backdrop would give it away at once)."""
    mask = hull_mask(image.shape, landmarks)
    out = np.full_like(image, 128)
    out[mask > 0] = image[mask > 0]
    return out


def realism_input(image: np.ndarray, landmarks: np.ndarray, region: str = "face") -> np.ndarray:
    """The image the realism feature is read from: `face_region` for "face", the image itself for
    "whole" (see `REALISM_REGIONS`)."""
    if region == "face":
        return face_region(image, landmarks)
    if region == "whole":
        return image
    raise ValueError(f"realism region must be one of {', '.join(REALISM_REGIONS)}, got {region!r}")


def _chips(images: list[np.ndarray], landmarks: list[np.ndarray]) -> torch.Tensor:
    """The dlib-aligned 150 x 150 chips of `images` (`dlib.get_face_chip(img, shape, 150, 0.25)`)."""
    return align_faces([image_tensor(im) for im in images],
                       [torch.from_numpy(np.asarray(lm, np.float64)) for lm in landmarks])


class FaceEncoder:
    """dlib's face descriptor and the realism features of an image, from its ResNet (torch port).

    :meth:`encode` takes full images with their 68 dlib landmarks, aligns them like
    ``dlib.get_face_chip(img, shape, 150, 0.25)`` and returns the (B, 128) descriptors of the
    images and the (B, C) realism features: the global average of block :data:`FEATURE_BLOCK`'s
    output (read with a forward hook) on the same chip of :func:`realism_input` of `region`: the face
    alone ("face", the default) or the whole chip ("whole": then the descriptor's own pass gives it)."""

    def __init__(self, region: str = "face", device="cpu"):
        if region not in REALISM_REGIONS:
            raise ValueError(f"realism region must be one of {', '.join(REALISM_REGIONS)}, got {region!r}")
        self.region = region
        # shared per process and device: the hook is attached only while encoding
        self.encoder = IdentityEncoder.load(device=device)
        self._feat = None

    def _hook(self, module, inputs, output):
        self._feat = output.mean(dim=(2, 3))

    def encode(self, images: list[np.ndarray], landmarks: list[np.ndarray], batch: int = 16):
        descs, feats = [], []
        handle = self.encoder.net.blocks[FEATURE_BLOCK].register_forward_hook(self._hook)
        try:
            with torch.no_grad():
                for s in range(0, len(images), batch):
                    ims, lms = images[s:s + batch], landmarks[s:s + batch]
                    self._feat = None
                    descs.append(self.encoder.embed_chips(_chips(ims, lms)).cpu().numpy().astype(np.float64))
                    if self.region != "whole":  # "whole": the feature of the unmasked chip, read above
                        self._feat = None
                        self.encoder.embed_chips(_chips([realism_input(im, lm, self.region)
                                                         for im, lm in zip(ims, lms)], lms))
                    feats.append(self._feat.cpu().numpy().astype(np.float64))
        finally:
            handle.remove()
        if not descs:
            return np.zeros((0, 128)), np.zeros((0, 0))
        return np.concatenate(descs), np.concatenate(feats)


def detect_view_face(image: np.ndarray):
    """dlib's largest face in a view (HOG, upsample 1, then dlib's 68-point predictor: the measurement
    stays dlib's own, independent of the toolkit's predictor for turned faces), or None."""
    faces = detect_faces(np.ascontiguousarray(image), upsample=1, profile_landmarks=False)
    return faces[0] if faces else None


def view_pose_error(landmarks: np.ndarray, reference, pose: Pose) -> float:
    """max(|yaw error|, |pitch error|) in degrees of a view asked at ``pose``, estimated by PnP of
    dlib's landmarks on the view against ``reference`` (`face3d.pose_estimation.view_pose_reference`
    of the view's fit)."""
    try:
        est = reference.estimate(landmarks)
    except ValueError:
        return float("inf")
    return max(abs(angle_error(est.yaw, pose.yaw)), abs(angle_error(est.pitch, pose.pitch)))
