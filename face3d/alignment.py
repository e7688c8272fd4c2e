"""The photo aligned to the view crop of its own fit: `aligned_original(fit, image, model, size)`."""
from __future__ import annotations

import cv2
import numpy as np
import torch

from face3d.face_fit import FaceFit
from face3d.morphable_model import MorphableModel
from face3d.render import view_screen


def photo_similarity(fit: FaceFit, model: MorphableModel, size: int, frame_vertices=None):
    """(A (2, 2), t (2,)): the similarity photo pixel -> crop pixel (pixel centres at +0.5) that carries
    the inner detected landmarks onto the fitted head's view at its own pose: least squares in closed
    form (Umeyama, rotation and scale), so it is deterministic."""
    with torch.no_grad():
        verts = fit.vertices(model)
        view = view_screen(verts, model, [fit.pose], size, frame_vertices)[0, :, :2].numpy().astype(np.float64)
    lm = model.landmark_vertices
    inner = np.array([k for k in range(17, 68) if lm[k] >= 0])
    src = np.asarray(fit.landmarks, np.float64)[inner]
    dst = view[lm[inner]]
    ms, md = src.mean(0), dst.mean(0)
    s0, d0 = src - ms, dst - md
    norm = (s0 ** 2).sum()
    c = (s0 * d0).sum() / norm
    s = (s0[:, 0] * d0[:, 1] - s0[:, 1] * d0[:, 0]).sum() / norm
    A = np.array([[c, -s], [s, c]])
    return A, md - A @ ms


def opencv_affine(A: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(2, 3) matrix for `cv2.warpAffine` of the map x -> A x + t in this project's pixel coordinates,
    whose pixel centres sit at +0.5 (OpenCV's sit at integers)."""
    t_cv = t + A @ np.array([0.5, 0.5]) - 0.5
    return np.hstack([A, t_cv[:, None]])


def aligned_original(fit: FaceFit, image: np.ndarray, model: MorphableModel, size: int) -> np.ndarray:
    """The photo warped into the view crop by `photo_similarity` (as `face3d.photo_view` does)."""
    A, t = photo_similarity(fit, model, size)
    scale = float(np.hypot(A[0, 0], A[1, 0]))
    img = image
    if scale < 0.8:  # prefilter before shrinking (warpAffine samples, it does not average)
        sigma = 0.5 * (1.0 / scale - 1.0) + 0.3
        img = cv2.GaussianBlur(image, (0, 0), sigma)
    return cv2.warpAffine(img, opencv_affine(A, t), (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT)
