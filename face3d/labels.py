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
from face3d.render import EYE_MOUTH_FRACTION, head_pivot, view_screen

#: ArcFace / InsightFace's five-point template for 112x112 crops: the eye centres (image left
#: first), the nose tip, the mouth corners (image left first); pixel coordinates.
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)
ARCFACE_SIZE = 112
#: How labels are made; runs record it, so a resumed run does not mix label conventions.
LABEL_VERSION = 2
#: A landmark is seen when no surface at its position lies more than this far (mm) in front of it;
#: the jaw's outline points, where the surface grazes the view ray, get the wider margin.
VISIBLE_DEPTH_MM = 3.0
OUTLINE_DEPTH_MM = 12.0
OUTLINE_NUDGE_MM = 4.0
#: A hidden jaw point takes the outermost seen vertex of its strip within this distance (mm, mean
#: shape) of the outermost vertex (`_visible_outline_points`): 4-11 mm at +-45 degrees of yaw.
OUTLINE_SEARCH_MM = 20.0


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


def contour_landmark_vertices(screen: np.ndarray, rotation: np.ndarray, model: MorphableModel):
    """(68,) model vertices of the landmarks in one view, fixed ones inside, each jaw point the
    vertex of its strip (`jaw_strips`) furthest out along the outline's normal as the view turns it;
    and (68, 2) those outward directions in the view (0 for the points that are not on the outline).
    `screen` (V, 2+) is the view's projection of every vertex, `rotation` (3, 3) the head's rotation."""
    idx = np.maximum(model.landmark_vertices, 0).copy()
    outward = np.zeros((68, 2))
    for k, (strip, n) in enumerate(zip(jaw_strips(model), _jaw_normals(model))):
        d = rotation @ np.array([n[0], n[1], 0.0])
        out = np.array([d[0], -d[1]])                 # screen y points down
        if strip.size > 1 and np.linalg.norm(out) > 1e-6:
            idx[k] = strip[int(np.argmax(screen[strip, :2] @ out))]
            outward[k] = out / np.linalg.norm(out)
    return idx, outward


#: Cell size (px) of the grid that pairs points with the triangles whose boxes may hold them.
GRID_CELL_PX = 4.0


def _candidate_pairs(points: np.ndarray, lo: np.ndarray, hi: np.ndarray, size: int):
    """(point, triangle) index pairs where the triangle's screen box (lo, hi: (F, 2)) holds the
    point (N, 2): triangles binned into a grid of GRID_CELL_PX cells, each point looked up in its cell."""
    g = int(np.ceil(size / GRID_CELL_PX)) + 1
    c0 = np.clip(np.floor(lo / GRID_CELL_PX), 0, g - 1).astype(np.int64)
    c1 = np.clip(np.floor(hi / GRID_CELL_PX), 0, g - 1).astype(np.int64)
    keep = (hi >= 0).all(axis=1) & (lo <= size).all(axis=1)
    nx, ny = (c1[:, 0] - c0[:, 0] + 1) * keep, (c1[:, 1] - c0[:, 1] + 1) * keep
    count = nx * ny
    tri = np.repeat(np.arange(len(lo)), count)
    k = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    cell = (c0[tri, 1] + k // nx[tri]) * g + c0[tri, 0] + k % nx[tri]
    order = np.argsort(cell, kind="stable")
    cell, tri = cell[order], tri[order]
    pc = np.clip(np.floor(points / GRID_CELL_PX), 0, g - 1).astype(np.int64)
    pcell = pc[:, 1] * g + pc[:, 0]
    start, stop = np.searchsorted(cell, pcell, "left"), np.searchsorted(cell, pcell, "right")
    n = stop - start
    pi = np.repeat(np.arange(len(points)), n)
    fi = tri[np.repeat(start, n) + np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)]
    inbox = (lo[fi] <= points[pi]).all(axis=1) & (hi[fi] >= points[pi]).all(axis=1)
    return pi[inbox], fi[inbox]


def _triangles_near_points(points: np.ndarray, lo: np.ndarray, hi: np.ndarray, size: int) -> np.ndarray:
    """Ascending indices of the triangles whose screen box (lo, hi: (F, 2)) spans a pixel that holds
    one of `points` (N, 2): a superset of those whose box holds a point, the only ones that can
    hide one. A summed-area table of the points' pixels answers it with 4 look-ups per triangle, so
    `_candidate_pairs` bins a few thousand triangles, not the whole mesh (a view tests ~140 points).
    Positions outside the image are clipped to its border pixels on both sides, which keeps the
    superset; points that are not finite hide behind nothing (no box holds them)."""
    g = size + 1
    pc = np.clip(np.floor(np.nan_to_num(points)), 0, g - 1).astype(np.int64)
    sat = np.zeros((g + 1, g + 1), np.int64)
    np.add.at(sat, (pc[:, 1] + 1, pc[:, 0] + 1), 1)
    sat = sat.cumsum(0).cumsum(1)
    c0 = np.clip(np.floor(lo), 0, g - 1).astype(np.int64)
    c1 = np.clip(np.floor(hi), 0, g - 1).astype(np.int64) + 1
    held = sat[c1[:, 1], c1[:, 0]] - sat[c0[:, 1], c1[:, 0]] - sat[c1[:, 1], c0[:, 0]] + sat[c0[:, 1], c0[:, 0]]
    return np.flatnonzero(held > 0)


def _screen_boxes(screen: np.ndarray, triangles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(F, 2) lower and upper corners of each triangle's screen box, from per-corner columns (fast
    gathers, and min / max of three columns rather than reductions over a length-3 axis)."""
    lo, hi = [], []
    for c in (0, 1):
        a, b, d = (screen[triangles[:, k], c] for k in range(3))
        lo.append(np.minimum(np.minimum(a, b), d))
        hi.append(np.maximum(np.maximum(a, b), d))
    return np.stack(lo, 1), np.stack(hi, 1)


def landmark_visibility(points: np.ndarray, screen: np.ndarray, triangles: np.ndarray, size: int,
                        margin=VISIBLE_DEPTH_MM) -> np.ndarray:
    """(N,) whether each point (N, 3: pixel x, y, view depth mm) is seen in a `size` x `size` view:
    inside the image, and no triangle of the mesh (`screen` (V, 3) projected vertices, `triangles`
    (F, 3)) covers its exact position more than `margin` mm (scalar or (N,)) in front of it. An exact
    ray test, so the answer does not depend on the raster's resolution."""
    pts = torch.as_tensor(np.asarray(points, np.float64))
    screen = np.asarray(screen, np.float64)
    triangles = np.asarray(triangles, np.int64)
    lo, hi = _screen_boxes(screen, triangles)
    inside = ((pts[:, :2] >= 0) & (pts[:, :2] <= size)).all(dim=1)
    margin = torch.as_tensor(np.broadcast_to(np.asarray(margin, np.float64), (len(pts),)).copy())
    near = _triangles_near_points(pts[:, :2].numpy(), lo, hi, size)
    pi, fi = _candidate_pairs(pts[:, :2].numpy(), lo[near], hi[near], size)
    pi, fi = torch.as_tensor(pi), torch.as_tensor(near[fi])
    p, t = pts[pi], torch.as_tensor(screen[triangles[fi.numpy()]])                                # (n, 3, 3)
    a, b, c = t[:, 0, :2], t[:, 1, :2], t[:, 2, :2]
    det = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
    ok = det.abs() > 1e-12
    safe = torch.where(ok, det, torch.ones_like(det))
    w1 = ((p[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (p[:, 1] - a[:, 1])) / safe
    w2 = ((b[:, 0] - a[:, 0]) * (p[:, 1] - a[:, 1]) - (p[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])) / safe
    w0 = 1 - w1 - w2
    cover = ok & (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
    # perspective-correct depth at the point: 1/z interpolates linearly in screen space
    z = 1.0 / (w0 / t[:, 0, 2] + w1 / t[:, 1, 2] + w2 / t[:, 2, 2])
    hides = cover & (z < p[:, 2] - margin[pi])
    seen = torch.ones(len(pts), dtype=torch.bool)
    seen[pi[hides]] = False
    return (inside & seen).numpy()


def view_labels(vertices: torch.Tensor, model: MorphableModel, poses: list[Pose], size: int,
                frame_vertices: torch.Tensor | None = None) -> list[ViewLabels]:
    """The labels of the views `render_views` makes of `vertices` (1, V, 3) at `poses` and `size`,
    framed by `frame_vertices` as it frames them."""
    with torch.no_grad():
        screen = view_screen(vertices, model, poses, size, frame_vertices)
    screen = screen.numpy().astype(np.float64)
    jaw = np.isin(np.arange(68), JAW)
    margin = np.where(jaw, OUTLINE_DEPTH_MM, VISIBLE_DEPTH_MM)
    eye_mouth = head_pivot(vertices if frame_vertices is None else frame_vertices, model)[1]
    px_per_mm = EYE_MOUTH_FRACTION * size / eye_mouth          # at the head's distance (render.view_camera)
    out = []
    for b in range(len(poses)):
        idx, outward = contour_landmark_vertices(screen[b], pose_matrix(poses[b]), model)
        visible = _seen_or_just_outside(screen[b, idx], outward, screen[b], model, size, margin, px_per_mm)
        _visible_outline_points(idx, visible, outward, screen[b], model, size, px_per_mm)
        pts = screen[b, idx]
        out.append(ViewLabels(pts[:, :2], visible, arcface_points(pts[:, :2]), face_box(pts[:, :2], size)))
    return out


def _seen_or_just_outside(pts: np.ndarray, outward: np.ndarray, screen: np.ndarray, model: MorphableModel,
                          size: int, margin, px_per_mm: float) -> np.ndarray:
    """Whether each point (n, 3) of the view `screen` is seen (`landmark_visibility` with `margin`,
    mm, one or per point), or the spot OUTLINE_NUDGE_MM further out along its outline normal
    `outward` (n, 2; zero off the outline, where the spot is the point itself) is: an outline point
    may sit a hair inside the silhouette that a neighbouring bulge makes."""
    nudged = pts.copy()
    nudged[:, :2] += OUTLINE_NUDGE_MM * px_per_mm * outward
    margin = np.broadcast_to(np.asarray(margin, np.float64), (len(pts),))
    both = landmark_visibility(np.concatenate([pts, nudged]), screen, model.triangles, size,
                               np.concatenate([margin, margin]))
    return both[:len(pts)] | both[len(pts):]


def _visible_outline_points(idx: np.ndarray, visible: np.ndarray, outward: np.ndarray, screen: np.ndarray,
                            model: MorphableModel, size: int, px_per_mm: float) -> None:
    """Where a jaw point's outermost strip vertex is hidden (on a turned head the far side's lower
    jaw strip reaches under the chin, whose outermost vertex the jaw itself hides), the outermost
    strip vertex that is seen (by `view_labels`' test, nudge included) and lies within
    OUTLINE_SEARCH_MM of the hidden one (mean shape) instead: `idx` and `visible` are updated in
    place. A point with no such vertex stays as it is, hidden: beyond about 70 degrees of yaw the far
    jaw is hidden behind the face, and what its strip shows lies near the chin's midline."""
    all_strips = jaw_strips(model)
    redo = [k for k in JAW if not visible[k] and np.abs(outward[k]).sum() > 0 and all_strips[k].size > 1]
    if not redo:
        return
    # only the strip vertices within reach are tested (the visibility test is the cost)
    strips = [all_strips[k][np.linalg.norm(model.mean[all_strips[k]] - model.mean[idx[k]], axis=1) <= OUTLINE_SEARCH_MM]
              for k in redo]
    directions = np.concatenate([np.repeat(outward[k][None], len(s), axis=0) for k, s in zip(redo, strips)])
    seen = _seen_or_just_outside(screen[np.concatenate(strips)], directions, screen, model, size, OUTLINE_DEPTH_MM,
                                 px_per_mm)
    start = 0
    for k, strip in zip(redo, strips):
        ok = seen[start:start + len(strip)]
        if ok.any():
            reach = screen[strip, :2] @ outward[k]
            idx[k] = strip[ok][int(np.argmax(reach[ok]))]
            visible[k] = True
        start += len(strip)


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


def cv_affine(affine: np.ndarray) -> np.ndarray:
    """The 2x3 map `affine` (pixel centres at +0.5, as here) for OpenCV, whose centres sit at integers."""
    shift = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    unshift = np.array([[1.0, 0.0, -0.5], [0.0, 1.0, -0.5], [0.0, 0.0, 1.0]])
    return (unshift @ np.vstack([affine, [0.0, 0.0, 1.0]]) @ shift)[:2]


def arcface_crop(image: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 112x112 ArcFace crop of `image` aligned on its five points, and the 2x3 map of pixel
    coordinates (centre convention of the module docstring) from `image` into the crop."""
    A = arcface_transform(points)
    M = cv_affine(A)
    scale = float(np.hypot(A[0, 0], A[0, 1]))
    if scale < 0.8:       # shrinking: low-pass first, or the bilinear warp aliases (sigma ~ 0.5 output px)
        image = cv2.GaussianBlur(image, (0, 0), 0.5 / scale)
    crop = cv2.warpAffine(image, M, (ARCFACE_SIZE, ARCFACE_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return crop, A
