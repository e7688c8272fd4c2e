"""The photo aligned to the view crop of its own fit: `aligned_original(fit, image, model, size)`."""
from __future__ import annotations

import cv2
import numpy as np
import torch

from face3d.face_fit import FaceFit
from face3d.morphable_model import MorphableModel
from face3d.render import view_screen


def aligned_original(fit: FaceFit, image: np.ndarray, model: MorphableModel, size: int) -> np.ndarray:
    """The photo warped into the view crop: similarity of the inner source landmarks onto the fit's
    own-pose view landmarks (as `face3d.photo_view`), least squares in closed form (deterministic)."""
    with torch.no_grad():
        view = view_screen(fit.vertices(model), model, [fit.pose], size)[0, :, :2].numpy().astype(np.float64)
    lm = model.landmark_vertices
    inner = np.array([k for k in range(17, 68) if lm[k] >= 0])
    src = np.asarray(fit.landmarks, np.float64)[inner]
    dst = view[lm[inner]]
    ms, md = src.mean(0), dst.mean(0)
    s0, d0 = src - ms, dst - md
    # Umeyama: the rotation+scale minimising |s A^T + t - d|
    a = (s0 * d0).sum()
    b = (s0[:, 0] * d0[:, 1] - s0[:, 1] * d0[:, 0]).sum()
    norm = (s0 ** 2).sum()
    c, s = a / norm, b / norm
    A = np.array([[c, -s], [s, c]])
    t = md - A @ ms
    # our pixel centres sit at +0.5, OpenCV's at integers
    t = t + A @ np.array([0.5, 0.5]) - 0.5
    scale = float(np.hypot(c, s))
    img = image
    if scale < 0.8:  # prefilter before shrinking (warpAffine samples, it does not average)
        sigma = 0.5 * (1.0 / scale - 1.0) + 0.3
        img = cv2.GaussianBlur(image, (0, 0), sigma)
    M = np.hstack([A, t[:, None]])
    return cv2.warpAffine(img, M, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
