"""Labels of rendered views: where each landmark lands, which are seen, the five ArcFace points,
the face box, and the coefficients and camera that re-render the view; and the ArcFace crop.

A re-posing tool knows exactly where every model point lands in a view it renders (what made
300W-LP the standard large-pose training set). The 68 iBUG landmarks follow the convention of a
detector on a photo: the inner points (brows, eyes, nose, mouth) are fixed model vertices, and the
jaw points 0-16 lie on the face's visible outline (the occluding contour), as dlib puts them on a
turned head, chosen per view among the candidate vertices of `face3d.contours`.

    labels = view_labels(vertices, model, poses, size, frame_vertices)      # one ViewLabels per pose
    crop, to_crop = arcface_crop(image, labels[0].arcface_points)          # 112x112, the 2x3 map

Conventions: pixel coordinates (x right, y down) of the written image, the centre of the top-left
pixel at (0.5, 0.5); `face_box` is [x0, y0, x1, y1] of the 68 points, clipped to the image.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from face3d.camera import Pose, pose_matrix
from face3d.contours import JAW
from face3d.morphable_model import MorphableModel
from face3d.rasterizer import rasterize_meshes
from face3d.render import view_screen

#: ArcFace / InsightFace's five-point template for 112x112 crops: the eye centres (image left
#: first), the nose tip, the mouth corners (image left first); pixel coordinates.
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)
ARCFACE_SIZE = 112
#: How labels are made; runs record it, so a resumed run does not mix label conventions.
LABEL_VERSION = 1
#: A landmark is seen when the surface seen at its pixel lies no more than this far (mm) in front of
#: it; the jaw's outline points, where the surface grazes the view ray, get the wider margin.
VISIBLE_DEPTH_MM = 3.0
OUTLINE_DEPTH_MM = 12.0


@dataclass
class ViewLabels:
    """The labels of one view (see the module docstring for the conventions)."""

    landmarks: np.ndarray           # (68, 2) float
    visible: np.ndarray             # (68,) bool: not self-occluded and inside the image
    arcface_points: np.ndarray      # (5, 2)
    face_box: np.ndarray            # (4,) x0, y0, x1, y1

    def transformed(self, affine: np.ndarray, size: int) -> "ViewLabels":
        """The labels after the 2x3 pixel map `affine` into an image of `size` x `size`."""
        pts = _apply(affine, self.landmarks)
        inside = (pts >= 0).all(axis=1) & (pts <= size).all(axis=1)
        return ViewLabels(pts, self.visible & inside, _apply(affine, self.arcface_points), face_box(pts, size))

    def record(self) -> dict:
        """The manifest fields: `landmarks`, `landmarks_visible`, `arcface_points`, `face_box`."""
        return {"landmarks": np.round(self.landmarks, 3).tolist(), "landmarks_visible": self.visible.tolist(),
                "arcface_points": np.round(self.arcface_points, 3).tolist(),
                "face_box": np.round(self.face_box, 3).tolist()}


def _apply(affine: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return np.asarray(pts, np.float64) @ affine[:, :2].T + affine[:, 2]


def face_box(landmarks: np.ndarray, size: int) -> np.ndarray:
    """[x0, y0, x1, y1] of the points, clipped to a `size` x `size` image."""
    lo, hi = landmarks.min(axis=0), landmarks.max(axis=0)
    return np.clip(np.array([lo[0], lo[1], hi[0], hi[1]]), 0.0, float(size))


def arcface_points(landmarks: np.ndarray) -> np.ndarray:
    """(5, 2) eye centres (iBUG 36-41, then 42-47), nose tip (30), mouth corners (48, 54)."""
    lm = np.asarray(landmarks, np.float64)
    return np.stack([lm[36:42].mean(axis=0), lm[42:48].mean(axis=0), lm[30], lm[48], lm[54]])


#: The jaw landmarks' strips (see `jaw_strips`): half-width, reach inward and outward of the fixed
#: vertex, and how far behind it (mm, model frame).
STRIP_HALF_WIDTH_MM = 4.0
STRIP_INWARD_MM = 50.0
STRIP_OUTWARD_MM = 12.0
STRIP_BEHIND_MM = 10.0


def _jaw_normals(model: MorphableModel) -> np.ndarray:
    """(17, 2) outward normals of the jaw outline of the frontal mean shape (x, y model frame)."""
    p = model.mean[np.maximum(model.landmark_vertices, 0), :2].astype(np.float64)
    tang = np.gradient(p[JAW], axis=0)
    n = np.stack([tang[:, 1], -tang[:, 0]], axis=1)
    flip = np.sum(n * (p[JAW] - p[27:36].mean(axis=0)), axis=1) < 0
    n[flip] *= -1
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-9)


def jaw_strips(model: MorphableModel) -> list[np.ndarray]:
    """Per jaw landmark, the face-skin vertices along the line through its fixed vertex across the
    outline (in the frontal mean shape): wherever the head turns, the outline crosses that line at
    the strip vertex that lies furthest out in the view. The chin keeps its vertex."""
    key = "_label_jaw_strips"
    if key in model._torch_cache:
        return model._torch_cache[key]
    from face3d.texture import ear_vertices   # deferred: texture imports render, which labels' callers load anyway

    lm = model.landmark_vertices
    skin = np.nonzero(model.skin & ~ear_vertices(model))[0]
    mean = model.mean.astype(np.float64)
    strips = []
    for k, n in zip(JAW, _jaw_normals(model)):
        if lm[k] < 0 or k == 8:
            strips.append(np.array([max(lm[k], 0)]))
            continue
        rel = mean[skin, :2] - mean[lm[k], :2]
        along, across = rel @ n, rel @ np.array([-n[1], n[0]])
        sel = (np.abs(across) < STRIP_HALF_WIDTH_MM) & (along > -STRIP_INWARD_MM) & (along < STRIP_OUTWARD_MM) \
            & (mean[skin, 2] > mean[lm[k], 2] - STRIP_BEHIND_MM) & (np.sign(mean[skin, 0]) == np.sign(mean[lm[k], 0]))
        strips.append(np.union1d(skin[sel], [lm[k]]))
    model._torch_cache[key] = strips
    return strips


def contour_landmark_vertices(screen: np.ndarray, rotation: np.ndarray, model: MorphableModel) -> np.ndarray:
    """(68,) model vertices of the landmarks in one view: fixed ones inside, each jaw point the
    vertex of its strip (`jaw_strips`) furthest out along the outline's normal as the view turns it.
    `screen` (V, 2+) is the view's projection of every vertex, `rotation` (3, 3) the view's head rotation."""
    idx = np.maximum(model.landmark_vertices, 0).copy()
    for k, (strip, n) in enumerate(zip(jaw_strips(model), _jaw_normals(model))):
        d = rotation @ np.array([n[0], n[1], 0.0])
        out = np.array([d[0], -d[1]])                 # screen y points down
        if strip.size > 1 and np.linalg.norm(out) > 1e-6:
            idx[k] = strip[int(np.argmax(screen[strip, :2] @ out))]
    return idx


def landmark_visibility(points: np.ndarray, depth: np.ndarray, zbuf: np.ndarray, margin=VISIBLE_DEPTH_MM,
                        outline=None) -> np.ndarray:
    """(N,) whether each point (pixels, view depth mm) is seen: inside the image, and the surface
    seen at its pixel lies no more than `margin` mm in front of it. `outline` (N,) bool marks points
    on the silhouette, where the surface grazes the view ray and the point may fall just off the
    head's pixels: they are seen when any pixel of the 3x3 around them is empty or deep enough."""
    H, W = zbuf.shape
    ix, iy = np.floor(points[:, 0]).astype(int), np.floor(points[:, 1]).astype(int)
    inside = (points[:, 0] >= 0) & (points[:, 0] <= W) & (points[:, 1] >= 0) & (points[:, 1] <= H)
    margin = np.broadcast_to(np.asarray(margin, np.float64), depth.shape)

    def seen_at(dx: int, dy: int) -> np.ndarray:
        z = zbuf[np.clip(iy + dy, 0, H - 1), np.clip(ix + dx, 0, W - 1)]
        return (z <= 0) | (z >= depth - margin)

    seen = seen_at(0, 0)
    if outline is not None:
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                seen = seen | (outline & seen_at(dx, dy))
    return inside & seen


def view_labels(vertices: torch.Tensor, model: MorphableModel, poses: list[Pose], size: int,
                frame_vertices: torch.Tensor | None = None, depth: np.ndarray | None = None) -> list[ViewLabels]:
    """The labels of the views `render_views` makes of `vertices` (1, V, 3) at `poses` and `size`,
    framed by `frame_vertices` as it frames them. `depth` (B, size, size): the views' depth maps
    (`RenderedViews.depth`) for the visibility test; None rasterizes the head here."""
    with torch.no_grad():
        screen = view_screen(vertices, model, poses, size, frame_vertices)
        if depth is None:
            depth = rasterize_meshes(screen, model.tensors()["triangles"], size, cull_backfaces=True).zbuf.numpy()
    screen = screen.numpy().astype(np.float64)
    jaw = np.isin(np.arange(68), JAW)
    margin = np.where(jaw, OUTLINE_DEPTH_MM, VISIBLE_DEPTH_MM)
    out = []
    for b in range(len(poses)):
        idx = contour_landmark_vertices(screen[b], pose_matrix(poses[b]), model)
        pts = screen[b, idx, :2]
        visible = landmark_visibility(pts, screen[b, idx, 2], depth[b], margin, outline=jaw)
        out.append(ViewLabels(pts, visible, arcface_points(pts), face_box(pts, size)))
    return out


def arcface_transform(points: np.ndarray) -> np.ndarray:
    """The 2x3 similarity (rotation, uniform scale, shift) that maps the five points onto
    ARCFACE_TEMPLATE in the least-squares sense (Umeyama's closed form, as InsightFace aligns)."""
    src = np.asarray(points, np.float64)
    dst = ARCFACE_TEMPLATE
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    U, S, Vt = np.linalg.svd(cov)
    D = np.diag([1.0, np.sign(np.linalg.det(U) * np.linalg.det(Vt))])
    R = U @ D @ Vt
    scale = float(np.trace(np.diag(S) @ D) / max((s ** 2).sum() / len(src), 1e-12))
    t = mu_d - scale * R @ mu_s
    return np.hstack([scale * R, t[:, None]])


def arcface_crop(image: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 112x112 ArcFace crop of `image` aligned on its five points, and the 2x3 map of pixel
    coordinates (centre convention of the module docstring) from `image` into the crop."""
    A = arcface_transform(points)
    # cv2 maps pixel centres at integer coordinates; ours sit at +0.5: shift in, map, shift out
    shift = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    unshift = np.array([[1.0, 0.0, -0.5], [0.0, 1.0, -0.5], [0.0, 0.0, 1.0]])
    M = (unshift @ np.vstack([A, [0.0, 0.0, 1.0]]) @ shift)[:2]
    scale = float(np.hypot(A[0, 0], A[0, 1]))
    if scale < 0.8:       # shrinking: low-pass first, or the bilinear warp aliases (sigma ~ 0.5 output px)
        image = cv2.GaussianBlur(image, (0, 0), 0.5 / scale)
    crop = cv2.warpAffine(image, M, (ARCFACE_SIZE, ARCFACE_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return crop, A
