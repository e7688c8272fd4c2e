"""`--background photo`: the photo's own surroundings, aligned to the output crop, with the head removed.

The crop is the similarity transform that carries the detected landmarks onto the view of the
fitted head at its own source pose, so the background keeps its place while the head turns. The
source head's silhouette (dilated) is inpainted away before the re-posed head is composited on top.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from face3d.camera import Pose
from face3d.morphable_model import MorphableModel
from face3d.render import view_screen


def photo_backgrounds(fit, image: np.ndarray, model: MorphableModel, poses: list[Pose], size: int) -> np.ndarray:
    """(B, size, size, 3) uint8 backgrounds, one per pose (identical: the camera does not move)."""
    with torch.no_grad():
        verts = fit.vertices(model)
        view = view_screen(verts, model, [fit.pose], size)[0, :, :2].numpy()
        src = fit.project(model, verts)[0, :, :2].numpy()
    lm = model.landmark_vertices
    inner = np.array([k for k in range(17, 68) if lm[k] >= 0])
    M, _ = cv2.estimateAffinePartial2D(fit.landmarks[inner].astype(np.float32), view[lm[inner]].astype(np.float32))
    if M is None:
        M = np.array([[1, 0, 0], [0, 1, 0]], dtype=np.float64)
    warped = cv2.warpAffine(image, M, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)
    head = (src @ M[:, :2].T + M[:, 2]).astype(np.float32)
    mask = np.zeros((size, size), np.uint8)
    hull = cv2.convexHull(head)
    cv2.fillConvexPoly(mask, hull.astype(np.int32), 255)
    k = max(3, size // 16) | 1
    mask = cv2.dilate(mask, np.ones((k, k), np.uint8))
    clean = cv2.inpaint(warped, mask, max(3, size // 32), cv2.INPAINT_TELEA)
    return np.repeat(clean[None], len(poses), axis=0)
