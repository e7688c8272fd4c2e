"""Head/background segmentation of a photo, seeded by the fitted model: which pixels show the person.

The texture extraction uses it to keep the photo's backdrop out of the head texture: texels near
the silhouette (ears, neck, jaw line, hair line) whose photo pixel is background count as unseen.

OpenCV's GrabCut (Rother et al. 2004, colour GMMs + graph cut) runs on a downscaled copy of the
photo, with its trimap taken from the fitted head projected into the photo:

* definite foreground: the inner face (the hull of the jaw and brow landmarks) and the fitted skull
  above the brows (hair or scalp on any head), eroded, and a band below the chin (neck and clothes);
* probably foreground: the projected head mesh (face, scalp, neck), dilated;
* probably background: everything beyond;
* definite background: the image's top border and its left and right borders above the chin, except where the projected head
  itself reaches them (a tight crop's hair at the edge is not backdrop); not the bottom border,
  where a portrait shows the body, whose clothes would otherwise become "background" colours and
  cut the neck and shoulders of the mesh out of the texture.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from face3d.morphable_model import MorphableModel
from face3d.rasterizer import rasterize_meshes

#: GrabCut runs at most at this size (longer side, px): 0.07-0.17 s on one core (the most for a
#: square photo, 160 x 160 px), some 40% of `extract_texture`. Less changes the mask too much: over
#: the 17 test photos, astronaut.png and 8 LFW photos, 2 iterations leave IoU >= 0.99 with today's
#: mask on all but one photo (0.963) and save ~20%; 1 iteration drops to 0.71, 128 px to 0.34.
SEGMENT_SIZE = 160
GRABCUT_ITERATIONS = 3
#: Trimap margins as fractions of the face size (outer-eye to mouth distance scale, see `_face_scale`).
ERODE_FRACTION = 0.08
DILATE_FRACTION = 0.35
BORDER_PX = 2          # width of the definite-background frame, in downscaled pixels
#: The torso seed (definite foreground): its top this many face sizes below the chin, this many wide.
TORSO_GAP = 0.15
TORSO_WIDTH = 0.5


def _projected_head(fit, model: MorphableModel, scale: float, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(h, w) bool masks of the downscaled photo: pixels the fitted mesh covers, and those of them
    that show the skull above the brows (hair or scalp in any real head, whatever the hair style)."""
    faces = model.tensors()["triangles"]
    with torch.no_grad():
        verts = fit.vertices(model)
        screen = fit.project(model, verts).clone()
        screen[..., :2] = screen[..., :2] * scale
        frag = rasterize_meshes(screen, faces, hw, cull_backfaces=True)
    p2f = frag.pix_to_face[0].numpy()
    brows = model.landmark_vertices[17:27]
    brow_y = float(verts[0, brows[brows >= 0], 1].max()) if (brows >= 0).any() else np.inf
    upper = verts[0, :, 1].numpy()[model.triangles].min(axis=1) > brow_y
    head = p2f >= 0
    skull = np.zeros_like(head)
    skull[head] = upper[p2f[head]]
    return head, skull


def _face_scale(landmarks: np.ndarray) -> float:
    """A face size in photo pixels: the span of the jaw and brow landmarks."""
    pts = landmarks[:27]
    return float(max(np.ptp(pts[:, 0]), np.ptp(pts[:, 1]), 1.0))


def _trimap(fit, model: MorphableModel, scale: float, hw: tuple[int, int]) -> np.ndarray:
    """GrabCut's initial labels (h, w) uint8 from the fitted head (see the module docstring)."""
    h, w = hw
    head, skull = _projected_head(fit, model, scale, hw)
    head = head.astype(np.uint8)
    size = _face_scale(np.asarray(fit.landmarks)) * scale
    k_out = max(3, int(round(size * DILATE_FRACTION)) | 1)
    k_in = max(3, int(round(size * ERODE_FRACTION)) | 1)
    labels = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
    labels[cv2.dilate(head, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k_out, k_out))) > 0] = cv2.GC_PR_FGD
    border = np.zeros((h, w), bool)
    chin = int(np.clip(np.asarray(fit.landmarks)[8, 1] * scale, BORDER_PX, h))   # sides: above the chin only
    border[:BORDER_PX], border[:chin, :BORDER_PX], border[:chin, -BORDER_PX:] = True, True, True
    labels[border & (head == 0)] = cv2.GC_BGD
    inner = np.zeros((h, w), np.uint8)
    hull = cv2.convexHull((np.asarray(fit.landmarks)[:27] * scale).astype(np.int32))
    cv2.fillConvexPoly(inner, hull, 1)
    inner |= skull.astype(np.uint8)
    inner = cv2.erode(inner, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k_in, k_in)))
    labels[inner > 0] = cv2.GC_FGD
    labels[_torso(np.asarray(fit.landmarks) * scale, size, hw)] = cv2.GC_FGD
    return labels


def _torso(landmarks: np.ndarray, size: float, hw: tuple[int, int]) -> np.ndarray:
    """(h, w) bool: a band below the chin, `TORSO_WIDTH` face sizes wide, down to the bottom: what a
    portrait shows there is the person's neck and clothes, which seed GrabCut's foreground colours
    so that a dark suit is not taken for a dark backdrop."""
    h, w = hw
    x, y = landmarks[8]
    out = np.zeros((h, w), bool)
    top, half = int(round(y + TORSO_GAP * size)), TORSO_WIDTH * size / 2
    out[max(0, top):, max(0, int(round(x - half))):max(0, int(round(x + half)))] = True
    return out


def head_foreground_mask(fit, image: np.ndarray, model: MorphableModel) -> np.ndarray:
    """(H, W) bool: the photo's pixels that show the person (face, hair, ears, neck), not the backdrop.

    `fit` is the model fitted to `image` (uint8 RGB). Deterministic: GrabCut's GMMs are initialised
    by k-means with OpenCV's fixed default seed; the RNG is reset here so earlier OpenCV calls do not
    change the result."""
    H, W = image.shape[:2]
    scale = min(1.0, SEGMENT_SIZE / max(H, W))
    hw = (max(1, int(round(H * scale))), max(1, int(round(W * scale))))
    small = cv2.resize(image, (hw[1], hw[0]), interpolation=cv2.INTER_AREA)
    labels = _trimap(fit, model, scale, hw)
    if not (labels == cv2.GC_FGD).any() or not np.isin(labels, (cv2.GC_BGD, cv2.GC_PR_BGD)).any():
        return cv2.resize((labels != cv2.GC_BGD).astype(np.uint8), (W, H), interpolation=cv2.INTER_NEAREST) > 0
    cv2.setRNGSeed(0)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.grabCut(cv2.cvtColor(small, cv2.COLOR_RGB2BGR), labels, None, bgd, fgd, GRABCUT_ITERATIONS,
                cv2.GC_INIT_WITH_MASK)
    fg = np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.float32)
    return cv2.resize(fg, (W, H), interpolation=cv2.INTER_LINEAR) > 0.5
