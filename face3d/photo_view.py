"""Whole-photo views: the photo as a 2.5D mesh that turns with the head (face profiling, after
Zhu et al., CVPR 2016), in the crop frame of `face3d.render.render_views`.

`photo_view_backgrounds(fit, image, model, poses, size)` gives one (size, size, 3) picture per pose:

1. the photo is warped by a similarity (inner landmarks onto the fitted head's view at its own
   pose, as `face3d.alignment.aligned_original`) into a canvas `CANVAS_MARGIN` wider than the crop
   on every side, so content that swings into the crop exists (beyond the photo's edges mirrored,
   except where that would mirror the head: there the photo's edge is carried on; black padding
   around the photo is first filled by the photo mirrored about the padding's edge: `warp_canvas`);
2. a regular grid mesh covers the canvas; each grid vertex gets a point in the view camera's frame:
   on the head the fitted mesh's surface (its z-buffer at the source pose), elsewhere a depth that
   continues the head's silhouette depth smoothly (a membrane: Laplace's equation, the head and the
   canvas border held fixed). The same membrane carries a small texture offset that makes every
   head vertex sample the photo where the fit projects that surface point, so the photo's face
   lies exactly under the rendered head;
3. the head turns about the neck (`neck_pivot`: the top of the spine, behind and below the
   mid-face), not about the mid-face point that the crop keeps at its centre: the body stays
   where it is, and the crop follows the face. Every vertex turns about the neck pivot by the
   relative rotation (target pose after source pose) scaled by a weight that is 1 on the head and
   the hair around it and falls smoothly to 0 below the chin and towards the canvas border, then
   the whole picture shifts so that the mid-face lands where `render_views` draws it: the head
   turns exactly as rendered, its neck stays on the shoulders, and the shoulders and background
   shift as one (the camera following the face) and bend in the band between;
4. the grid mesh is rasterized at each target pose (z-buffered, textured with the canvas); pixels no
   triangle covers, or covered by a triangle stretched open (disocclusion), are inpainted; the
   photo's person mask beyond the head turns alike (`photo_view_layers`).
5. over it, the head's texture shows only what the photo showed (`see_through_texture`), the face
   and the back of the head excepted: the back, which no photo shows, takes the hair's colour and is
   drawn only where the turned photo shows no person (`back_of_head_texture`, `render_views`).

`render_views(..., background=photo_view_backgrounds(...))` then draws the textured head on top.
"""
from __future__ import annotations

import math
from dataclasses import replace

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from face3d.alignment import opencv_affine, photo_similarity
from face3d.camera import Pose, euler_to_matrix
from face3d.morphable_model import MorphableModel
from face3d.rasterizer import interpolate_vertex_attributes, rasterize_meshes
from face3d.render import head_pivot, view_camera, view_screen
from face3d.segmentation import projected_box
from face3d.texture import (EAR_Y_RANGE, HAIR_CHROMA_DISTANCE, INPAINT_CONFIDENCE, Texture, atlas_size, atlas_texels,
                            ear_vertices, interpolate, push_pull_fill, ycrcb)

#: Extra canvas on each side of the crop, as a fraction of the crop side.
CANVAS_MARGIN = 0.25
#: Grid vertices per crop side at most (the grid step is at least 2 px).
GRID_CELLS = 64
#: Distance around the fitted head (fraction of the crop side) that turns fully with it: hair, ears.
HAIR_RADIUS = 0.1
#: Width of the band (fraction of the crop side) over which the turn eases off to the still background.
FALLOFF = 0.2
#: Width of the band (fraction of the crop side) below the chin over which the turn eases off to the
#: body: the shoulders and the collar stay with the body even where they lie near the head.
BODY_FALLOFF = 0.12
#: The neck pivot, behind and below the mid-face point, in eye-to-mouth distances along the head's
#: own back and down axes: about the top of the spine (C1-C2), under the ear canals, where a head
#: turns and nods. On the ICT mean face: 89 mm behind, 11 mm below the mid-face.
NECK_PIVOT_BACK = 1.25
NECK_PIVOT_DOWN = 0.15
#: A triangle whose area grows by more than this factor is a disocclusion: its pixels are inpainted.
STRETCH_LIMIT = 4.0
#: Width (fraction of the crop) of the seam beside the face, brows to chin, whose photo pixels are
#: refilled in a turned view on the side the face turns towards (`profile_side_seams`): the photo's
#: cheek edge that the fitted mesh misses would otherwise turn with the head and stick out past its
#: profile.
SEAM_WIDTH = 0.05
#: The seam is refilled in views turned by more than this (degrees) from the photo's pose ...
SEAM_MIN_TURN = 10.0
#: ... in which the nose tip moves sideways by more than this fraction of the crop (`profile_side_seams`).
SEAM_MIN_SHIFT = 0.01


#: A pixel whose channels are all at most this dark may be padding (`padding_mask`): padding is
#: black, and JPEG keeps a flat black area black.
PADDING_LEVEL = 2
#: Padding is only taken as such where it covers at least this share of the photo ...
PADDING_MIN_SHARE = 0.002
#: ... and this share of its edge pixels.
PADDING_MIN_BORDER = 0.02
#: The longest side (px) the padding is looked for at.
PADDING_WORK_SIDE = 320
#: Dark pixels joined to the edge are padding when at most `PADDING_MAX_INSIDE` of them lie inside the
#: convex hull of the rest, shrunk by `PADDING_HULL_MARGIN` of the longest side.
PADDING_HULL_MARGIN = 0.03
PADDING_MAX_INSIDE = 0.1
#: Black this close to the photo's edge (px) is padding whatever its shape.
PADDING_SLIVER_PX = 6
#: Blur (fraction of the photo's longer side) of the mirrored fill of padding (`fill_padding`).
PADDING_FILL_BLUR = 0.02
#: Pixels at most this bright within this many px of padding are its JPEG rim.
PADDING_RING_LEVEL = 48
PADDING_RING_PX = 8


def padding_mask(image: np.ndarray) -> np.ndarray | None:
    """(H, W) bool: black padding around the picture, or None where there is none. Aligned face
    sets (LFW's deep-funneled photos, most crops made by a rotation) fill what lies outside the
    original photo with black wedges at the edges. Taken as padding: the near-black pixels connected
    to the photo's edge, when they lie outside the convex hull of the rest (the rotated original is
    convex); a dark backdrop around a person is not (the person's outline is not convex), and stays.
    Black within `PADDING_SLIVER_PX` of the edge is taken in any case. Found on the photo shrunk to
    `PADDING_WORK_SIDE` at most."""
    h, w = image.shape[:2]
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    if (border.max(axis=-1) <= PADDING_LEVEL).mean() < PADDING_MIN_BORDER:
        return None
    scale = min(1.0, PADDING_WORK_SIDE / max(h, w))
    work = image if scale == 1.0 else cv2.resize(image, (int(round(w * scale)), int(round(h * scale))),
                                                 interpolation=cv2.INTER_AREA)
    level = work.max(axis=-1)
    raw = (level <= PADDING_LEVEL).astype(np.uint8)
    # black within `PADDING_SLIVER_PX` of the edge: a wedge's thin end or a thin bar, too narrow for
    # the opening below (a few dark pixels of the photo's own taken with them are filled unseen)
    sliver_px = max(1, int(round(PADDING_SLIVER_PX * scale)))
    frame = np.ones_like(raw)
    frame[sliver_px:-sliver_px, sliver_px:-sliver_px] = 0
    pad = (raw & frame).astype(bool)
    # padding is flat black; an opening drops the scattered black pixels of dark clothes or hair
    dark = cv2.morphologyEx(raw, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    count, labels = cv2.connectedComponents(dark, connectivity=4)
    on_edge = np.zeros(count, bool)
    on_edge[np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])] = True
    on_edge[0] = False                                     # label 0: the pixels that are not dark
    wedges = on_edge[labels]
    if PADDING_MIN_SHARE <= wedges.mean() and not wedges.all():
        outline, _ = cv2.findContours((~wedges).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        hull = cv2.convexHull(np.concatenate(outline))
        inside = np.zeros(wedges.shape, np.uint8)
        cv2.fillConvexPoly(inside, hull, 1)
        # JPEG's 8-px blocks make the padding's edge ragged: the hull is shrunk by a margin first
        margin = 2 * int(round(PADDING_HULL_MARGIN * max(wedges.shape))) + 1
        inside = cv2.erode(inside, np.ones((margin, margin), np.uint8)).astype(bool)
        if (wedges & inside).sum() <= PADDING_MAX_INSIDE * wedges.sum():
            pad |= wedges
    if not pad.any():
        return None
    # JPEG rings along the padding's edge, up to a block wide: darker than the photo there, and
    # mirrored beyond the photo's edge they would draw the wedge's outline. Dim pixels that close
    # to the padding are padding too, and a margin beyond them
    ring = 2 * max(1, int(round(PADDING_RING_PX * scale))) + 1
    near = cv2.dilate(pad.astype(np.uint8), np.ones((ring, ring), np.uint8)).astype(bool)
    pad = (pad | (near & (level <= PADDING_RING_LEVEL))).astype(np.uint8)
    if scale < 1.0:
        pad = cv2.resize(pad, (w, h), interpolation=cv2.INTER_NEAREST)
    grow = 2 * int(math.ceil(2.0 / scale)) + 1
    return cv2.dilate(pad, np.ones((grow, grow), np.uint8)).astype(bool)


def fill_padding(image: np.ndarray, padding: np.ndarray) -> np.ndarray:
    """`image` with its `padding` (H, W bool) filled by the photo mirrored about the padding's edge,
    blurred: each padded pixel p takes the colour at 2q - p, q the nearest pixel that is not
    padding (q's own colour where that lands in padding or outside), then a Gaussian of
    `PADDING_FILL_BLUR` times the photo's longer side, so the backdrop or the body continues in its
    colours without a mirror image of its details. The blur is wide: the fill is made on a copy
    shrunk to a blur of 2 px and brought back up (only the padded pixels change)."""
    h, w = image.shape[:2]
    sigma = PADDING_FILL_BLUR * max(h, w)
    shrink = max(1.0, sigma / 2.0)
    size = (max(1, int(round(w / shrink))), max(1, int(round(h / shrink))))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    pad = cv2.resize(padding.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
    pad |= cv2.resize(padding.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0  # no black blended in
    if pad.all():
        return image.copy()
    sh, sw = pad.shape
    _, labels = cv2.distanceTransformWithLabels(pad.astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    valid = ~pad
    lut = np.zeros((int(labels.max()) + 1, 2), np.int64)
    vy, vx = np.nonzero(valid)
    lut[labels[vy, vx]] = np.stack([vy, vx], 1)
    py, px = np.nonzero(pad)
    q = lut[labels[py, px]]
    ry, rx = 2 * q[:, 0] - py, 2 * q[:, 1] - px
    ok = (ry >= 0) & (ry < sh) & (rx >= 0) & (rx < sw)
    ok[ok] = valid[ry[ok], rx[ok]]
    mirrored = small[np.clip(ry, 0, sh - 1), np.clip(rx, 0, sw - 1)]
    small[py, px] = np.where(ok[:, None], mirrored, small[q[:, 0], q[:, 1]])
    soft = cv2.resize(cv2.GaussianBlur(small, (0, 0), sigma / shrink), (w, h), interpolation=cv2.INTER_LINEAR)
    out = image.copy()
    out[padding] = soft[padding]
    return out


def warp_canvas(image: np.ndarray, A: np.ndarray, t: np.ndarray, canvas: int,
                head_box: np.ndarray | None = None, padding: np.ndarray | None = None) -> np.ndarray:
    """The photo warped by (A, t) into a canvas (float32 0..1, canvas x canvas x 3).

    Beyond the photo's edges the canvas mirrors the photo (a plausible continuation of a backdrop
    or a body), except where the mirror would show the head again: canvas pixels outside the photo
    whose mirrored source lies in `head_box` (x0, y0, x1, y1, photo pixels; a face cut by the
    photo's edge, a chin at the bottom edge) take the photo's edge carried on and blurred instead
    (`HEAD_MIRROR_BLUR`). The photo's own `padding` (H, W bool, `padding_mask`) is first filled by
    the photo mirrored about its edge (`fill_padding`)."""
    scale = float(np.sqrt(abs(np.linalg.det(A))))
    img = image if padding is None else fill_padding(image, padding)
    if scale < 0.8:  # prefilter before shrinking (warpAffine samples, it does not average)
        img = cv2.GaussianBlur(img, (0, 0), 0.5 * (1.0 / scale - 1.0) + 0.3)
    M = opencv_affine(A, t)
    out = cv2.warpAffine(img, M, (canvas, canvas), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    out = out.astype(np.float32) / 255.0
    h, w = image.shape[:2]
    unknown = np.zeros((canvas, canvas), bool)
    if head_box is not None:
        x0, y0, x1, y1 = np.round(np.asarray(head_box, np.float64)).astype(int)
        mark = np.zeros((h, w), np.uint8)
        mark[max(0, y0): max(0, y1), max(0, x0): max(0, x1)] = 1
        if mark.any():
            reflected_head = cv2.warpAffine(mark, M, (canvas, canvas), flags=cv2.INTER_NEAREST,
                                            borderMode=cv2.BORDER_REFLECT).astype(bool)
            inside = cv2.warpAffine(np.ones((h, w), np.uint8), M, (canvas, canvas), flags=cv2.INTER_NEAREST,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)
            unknown |= reflected_head & ~inside
    if not unknown.any() or unknown.all():
        return out
    # the photo's edge drawn out (its last row or column carried on) and blurred: a body or a
    # backdrop cut by the edge continues in its colours. Carried on with little blur, each pixel of
    # the edge row would draw a streak across the canvas (a beard cut by the bottom edge, a backdrop
    # at the side): the blur grows from `HEAD_MIRROR_BLUR` at the photo's edge to
    # `HEAD_EDGE_FAR_BLUR` at `HEAD_EDGE_FADE` beyond it, so the streaks melt into the edge's colours
    edge = cv2.warpAffine(img, M, (canvas, canvas), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    near = cv2.GaussianBlur(edge, (0, 0), HEAD_MIRROR_BLUR * canvas).astype(np.float32) / 255.0
    far = cv2.GaussianBlur(edge, (0, 0), HEAD_EDGE_FAR_BLUR * canvas).astype(np.float32) / 255.0
    beyond = cv2.distanceTransform((~inside).astype(np.uint8), cv2.DIST_L2, 5)
    w = np.clip(beyond / (HEAD_EDGE_FADE * canvas), 0.0, 1.0)[..., None]
    edge = near + (far - near) * w
    # and it meets the mirrored canvas beside it softly, not at a straight seam: the carried-on part
    # grows a little into the mirror, never the other way (the mirror would show the head)
    soft = np.clip(2.0 * cv2.GaussianBlur(unknown.astype(np.float32), (0, 0), HEAD_MIRROR_BLUR * canvas), 0.0, 1.0)
    soft = np.where(unknown, 1.0, soft * ~inside)[..., None]
    return (out + (edge - out) * soft).astype(np.float32)


def warp_mask(mask: np.ndarray, A: np.ndarray, t: np.ndarray, canvas: int) -> np.ndarray:
    """(canvas, canvas) float32 in 0..1: a (h, w) mask of the photo warped by (A, t) as `warp_canvas`
    warps the photo, its edge carried on beyond the photo's edges."""
    return cv2.warpAffine(np.asarray(mask, np.float32), opencv_affine(A, t), (canvas, canvas),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


#: Growth of the projected head's box (fraction of its size, each side) that `warp_canvas` never mirrors.
HEAD_BOX_MARGIN = 0.15
#: Blur (fraction of the canvas side) of the photo's edge carried on where the mirror would show the head:
#: this much at the photo's edge, growing to `HEAD_EDGE_FAR_BLUR` at `HEAD_EDGE_FADE` beyond it (`warp_canvas`).
HEAD_MIRROR_BLUR = 0.03
HEAD_EDGE_FAR_BLUR = 0.12
HEAD_EDGE_FADE = 0.1


def photo_head_box(fit, model: MorphableModel, verts: torch.Tensor) -> np.ndarray:
    """(x0, y0, x1, y1): the fitted head's projection in the photo above the chin (a mirrored
    body is plausible, a mirrored face is not), grown by `HEAD_BOX_MARGIN`."""
    above_chin = (verts[0, :, 1] >= verts[0, int(model.landmark_vertices[8]), 1]).numpy()
    return projected_box(fit, model, HEAD_BOX_MARGIN, verts, above_chin)


def grid_triangles(n: int) -> torch.Tensor:
    """(2 n^2, 3) triangles of an (n+1) x (n+1) vertex grid, row-major."""
    j, i = np.meshgrid(np.arange(n), np.arange(n))
    a = (i * (n + 1) + j).ravel()
    b, c, d = a + 1, a + n + 1, a + n + 2
    tris = np.concatenate([np.stack([a, c, b], 1), np.stack([b, c, d], 1)])
    return torch.from_numpy(tris.astype(np.int64))


def membrane(values: np.ndarray, fixed: np.ndarray) -> np.ndarray:
    """Harmonic fill of an (n, n, C) grid: `fixed` cells keep their values, the others solve
    Laplace's equation (each the mean of its in-grid neighbours), for all C channels at once.

    The system, one equation per cell in row-major order (x = v on a fixed cell; deg x - the sum
    of the free neighbours = the sum of the fixed ones on a free cell, deg its 2-4 neighbours), is
    symmetric positive definite and block tridiagonal: a grid row's cells form an (n, n) diagonal
    block (deg on the diagonal, -1 between free cells side by side) and couple to the next row's
    through a diagonal block (-1 where both cells of a column are free). Block elimination (the
    block Thomas algorithm) solves it with n dense (n, n) inversions: about 30 ms for the 97 x 97
    grid of `photo_view_backgrounds` against 19 ms for a sparse LU, without importing SciPy, whose
    sparse modules took 0.24-0.28 s of every fresh `rotate` (`_membrane_sparse` is that solve, kept
    as the reference: tests/test_photo_view.py)."""
    n = fixed.shape[0]
    free = ~fixed
    vals = values.reshape(n, n, -1).astype(np.float64)
    known = np.where(free[..., None], 0.0, vals)
    deg = np.full((n, n), 4.0)
    deg[[0, -1], :] -= 1
    deg[:, [0, -1]] -= 1
    # the right-hand side: a free cell's fixed neighbours, a fixed cell's own value
    rhs = np.zeros_like(vals)
    rhs[1:] += known[:-1]
    rhs[:-1] += known[1:]
    rhs[:, 1:] += known[:, :-1]
    rhs[:, :-1] += known[:, 1:]
    rhs = np.where(free[..., None], rhs, vals)
    side = (free[:, :-1] & free[:, 1:]).astype(np.float64)          # (n, n-1): free pairs in a row
    down = (free[:-1] & free[1:]).astype(np.float64)                 # (n-1, n): free pairs in a column
    inverses, y = [], []
    i = np.arange(n - 1)
    for k in range(n):
        block = np.diag(np.where(free[k], deg[k], 1.0))
        block[i, i + 1] = block[i + 1, i] = -side[k]
        yk = rhs[k].copy()
        if k:
            e = down[k - 1]                                          # the coupling is -diag(e)
            block -= e[:, None] * inverses[-1] * e[None, :]
            yk += e[:, None] * (inverses[-1] @ y[-1])
        inverses.append(np.linalg.inv(block))
        y.append(yk)
    out = np.empty_like(vals)
    out[n - 1] = inverses[n - 1] @ y[n - 1]
    for k in range(n - 2, -1, -1):
        out[k] = inverses[k] @ (y[k] + down[k][:, None] * out[k + 1])
    out = np.where(free[..., None], out, vals)
    return out.reshape(values.shape)


def _membrane_sparse(values: np.ndarray, fixed: np.ndarray) -> np.ndarray:
    """`membrane` as one sparse solve (SciPy's), the reference."""
    # deferred: scipy.sparse takes 0.24-0.28 s to import, and only the tests call this
    import scipy.sparse as sp
    import scipy.sparse.linalg as spla

    n = fixed.shape[0]
    idx = np.arange(n * n).reshape(n, n)
    free = ~fixed.ravel()
    rows, cols = [], []
    for di, dj in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        src = idx[max(0, -di): n - max(0, di), max(0, -dj): n - max(0, dj)]
        dst = idx[max(0, di): n - max(0, -di) or None, max(0, dj): n - max(0, -dj) or None]
        rows.append(src.ravel())
        cols.append(dst.ravel())
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    deg = np.bincount(rows, minlength=n * n).astype(np.float64)
    L = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n * n, n * n))
    L = sp.diags(deg) - L
    vals = values.reshape(n * n, -1).astype(np.float64)
    fidx, cidx = np.flatnonzero(free), np.flatnonzero(~free)
    rhs = -(L[fidx][:, cidx] @ vals[cidx])
    out = vals.copy()
    if len(fidx):
        sol = spla.spsolve(L[fidx][:, fidx].tocsc(), rhs)
        out[fidx] = sol.reshape(len(fidx), -1)
    return out.reshape(values.shape)


def turn_weight(head: np.ndarray, step: float, size: int) -> np.ndarray:
    """(n, n) weight of the head's rotation per grid vertex: 1 on the head and within `HAIR_RADIUS`
    of it, easing (smoothstep) to 0 over `FALLOFF` beyond, and 0 at the canvas border in any case:
    the far background stays still and the band between bends smoothly."""
    n = head.shape[0]
    d_head = cv2.distanceTransform((~head).astype(np.uint8), cv2.DIST_L2, 5) * step
    i = np.arange(n)
    edge = np.minimum(i, n - 1 - i) * step
    d_border = np.minimum(edge[:, None], edge[None, :]).astype(np.float32)
    out = np.maximum(d_head - HAIR_RADIUS * size, 0.0)
    s = np.clip(1.0 - out / (FALLOFF * size), 0.0, 1.0) * np.clip(d_border / (FALLOFF * size), 0.0, 1.0)
    w = s * s * (3 - 2 * s)
    return cv2.GaussianBlur(w.astype(np.float32), (0, 0), max(1.0, 0.02 * size / step))


def neck_pivot(vertices: torch.Tensor, model: MorphableModel) -> np.ndarray:
    """(3,) offset (mm, model frame) of the neck pivot from the mid-face pivot of `head_pivot`."""
    _, eye_mouth = head_pivot(vertices, model)
    return np.array([0.0, -NECK_PIVOT_DOWN * eye_mouth, -NECK_PIVOT_BACK * eye_mouth])


def body_weight(rows: np.ndarray, chin_row: float, size: int) -> np.ndarray:
    """Per grid row (`rows`: their canvas y in px): 1 down to the chin's row, easing (smoothstep) to
    0 over `BODY_FALLOFF` of the crop side below it."""
    s = np.clip(1.0 - (rows - chin_row) / (BODY_FALLOFF * size), 0.0, 1.0)
    return s * s * (3 - 2 * s)


def scaled_rotations(R: np.ndarray, w: np.ndarray) -> torch.Tensor:
    """(B, N, 3, 3): each (3, 3) rotation of R (B, 3, 3) with its angle scaled by w (N,) (Rodrigues)."""
    out = []
    for Rb in R:
        rvec, _ = cv2.Rodrigues(Rb.astype(np.float64))
        theta = float(np.linalg.norm(rvec))
        axis = rvec[:, 0] / theta if theta > 1e-9 else np.array([0.0, 1.0, 0.0])
        K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
        a = theta * w
        Rw = np.eye(3) + np.sin(a)[:, None, None] * K + (1 - np.cos(a))[:, None, None] * (K @ K)
        out.append(Rw)
    return torch.from_numpy(np.stack(out).astype(np.float32))


def source_surface(fit, model, verts, frame_vertices, size, pad, n, step):
    """Rasterize the head at its source pose on the grid: (n, n) head mask, the part of it that
    turns (above the chin), view depth, and the
    canvas position where the fit projects each covered surface point (photo -> canvas by A, t)."""
    A, t = photo_similarity(fit, model, size, frame_vertices)
    screen = view_screen(verts, model, [fit.pose], size, frame_vertices)
    grid_xy = (screen[..., :2] + pad) / step + 0.5        # grid vertex k sits at pixel centre k
    frag = rasterize_meshes(torch.cat([grid_xy, screen[..., 2:]], -1), model.tensors()["triangles"], n,
                            cull_backfaces=True)
    photo = fit.project(model, verts)[..., :2]
    canvas_xy = photo @ torch.from_numpy(A.T.astype(np.float32)) + torch.from_numpy((t + pad).astype(np.float32))
    tris = model.tensors()["triangles"]
    at = interpolate_vertex_attributes(frag, tris, canvas_xy)[0].numpy()
    p2f = frag.pix_to_face[0]
    # the skull turns; the neck and shoulders the mesh also covers stay with the body (faces below the chin)
    chin_y = verts[0, int(model.landmark_vertices[8]), 1]
    skull = (verts[0, tris, 1] > chin_y).all(-1)
    turns = (p2f >= 0) & skull[p2f.clamp(min=0)]
    return (p2f >= 0).numpy(), turns.numpy(), frag.zbuf[0].numpy(), at, (A, t)


def photo_view_backgrounds(fit, image: np.ndarray, model: MorphableModel, poses: list[Pose], size: int,
                           vertices: torch.Tensor | None = None,
                           frame_vertices: torch.Tensor | None = None) -> np.ndarray:
    """(B, size, size, 3) uint8: the photo around the head, turned to each pose (module docstring).
    `vertices` / `frame_vertices` as in `render_views` (the rendered mesh, the crop's framing)."""
    return photo_view_layers(fit, image, model, poses, size, vertices, frame_vertices)[0]


def photo_view_layers(fit, image: np.ndarray, model: MorphableModel, poses: list[Pose], size: int,
                      vertices: torch.Tensor | None = None, frame_vertices: torch.Tensor | None = None,
                      foreground: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """(`photo_view_backgrounds`, person): with the photo's person mask `foreground` ((h, w) bool,
    `Texture.foreground`), person (B, size, size) float32 in 0..1 is that mask, less the fitted head
    at the photo's pose, turned with the photo: how much each pixel of the turned photo shows the
    person beyond the head (hair, body); where the turned photo opened up, `person_in_holes` decides.
    None without `foreground`. The rendered head draws the back of the head only where it is 0."""
    with torch.no_grad():
        verts = fit.vertices(model) if vertices is None else vertices
        pad = int(round(CANVAS_MARGIN * size))
        canvas = size + 2 * pad
        step = max(2.0, canvas / (GRID_CELLS * (1 + 2 * CANVAS_MARGIN)))
        n = int(math.ceil(canvas / step)) + 1
        step = canvas / (n - 1)
        head, skull, zbuf, at, (A, t) = source_surface(fit, model, verts, frame_vertices, size, pad, n, step)
        image_canvas = warp_canvas(image, A, t + pad, canvas, photo_head_box(fit, model, verts), padding_mask(image))
        if foreground is not None:   # the person beyond the fitted head rides along as a fourth channel
            on_head = cv2.resize(head.astype(np.float32), (canvas, canvas), interpolation=cv2.INTER_NEAREST)
            beyond = warp_mask(foreground, A, t + pad, canvas) * (1.0 - on_head)
            image_canvas = np.concatenate([image_canvas, beyond[..., None], on_head[..., None]], -1)
        pos = np.stack(np.meshgrid(np.arange(n), np.arange(n)), -1).astype(np.float64) * step
        fixed = head.copy()
        fixed[[0, -1], :] = fixed[:, [0, -1]] = True
        border_depth = float(np.median(zbuf[head ^ cv2.erode(head.astype(np.uint8), np.ones((3, 3))).astype(bool)])) \
            if head.any() else view_camera(size, 1.0)[1]
        vals = np.zeros((n, n, 3))
        vals[..., 0] = np.where(head, zbuf, border_depth)
        vals[..., 1:] = np.where(head[..., None], at - pos, 0.0)
        filled = membrane(vals, fixed)
        frame = verts if frame_vertices is None else frame_vertices
        screen = view_screen(verts, model, [fit.pose], size, frame_vertices)
        chin_row = float(screen[0, int(model.landmark_vertices[8]), 1]) + pad
        w = turn_weight(skull, step, size) * body_weight(np.arange(n) * step, chin_row, size)[:, None]
        seam = profile_side_seams(face_seam(head, fit, model, verts, frame_vertices, size, pad, step),
                                  fit, model, verts, frame_vertices, poses, size, pad, step)
        return render_grid(filled[..., 0], pos, pos + filled[..., 1:], w, image_canvas, fit, model, verts,
                           frame_vertices, poses, size, pad, neck_pivot(frame, model), seam)


def face_seam(head: np.ndarray, fit, model, verts, frame_vertices, size: int, pad: int, step: float) -> np.ndarray:
    """(n, n) bool: grid vertices within `SEAM_WIDTH` outside the head, between the brows and the chin."""
    ring = cv2.dilate(head.astype(np.uint8), np.ones((3, 3), np.uint8),
                      iterations=max(1, int(round(SEAM_WIDTH * size / step)))).astype(bool) & ~head
    lm = view_screen(verts, model, [fit.pose], size, frame_vertices)[0, np.maximum(model.landmark_vertices, 0), 1]
    top, bottom = (float(lm[17:27].min()) + pad) / step, (float(lm[8]) + pad) / step
    rows = np.arange(head.shape[0])[:, None]
    return ring & (rows >= top) & (rows <= bottom)


def profile_side_seams(seam: np.ndarray, fit, model, verts, frame_vertices, poses, size: int, pad: int,
                       step: float) -> np.ndarray:
    """(B, n, n) bool: per pose, the part of the face seam (`face_seam`, (n, n)) on the side the
    face turns towards, where the turned cheek becomes the profile and the photo's cheek edge beyond
    the fitted mesh would stick out past it. On the other side the seam turns in behind the head,
    where the rendered head shows the turned photo through its see-through sides: refilled there,
    it drew a smeared second jaw beside the face. The side is where the nose tip moves, in the crop,
    between the photo's pose and the view's; where it hardly moves sideways (a nod: no profile
    turns out) neither side is refilled."""
    nose = int(model.landmark_vertices[30])
    if nose < 0:                                          # a model without the point: both sides
        return np.broadcast_to(seam, (len(poses),) + seam.shape)
    x = view_screen(verts, model, [fit.pose] + list(poses), size, frame_vertices)[:, nose, 0].numpy()
    shift = x[1:] - x[0]
    towards = np.where(np.abs(shift) < SEAM_MIN_SHIFT * size, 0.0, np.sign(shift))   # 0: neither side
    cols = np.arange(seam.shape[1]) * step - pad          # crop x of each grid column
    side = np.sign(cols[None, :] - x[0]) == towards[:, None]                        # (B, n)
    return seam[None] & side[:, None, :]


def render_grid(depth, pos, uv, w, image_canvas, fit, model, verts, frame_vertices, poses, size, pad, pivot,
                seam=None):
    """Turn the grid mesh to every pose, rasterize it into the crop, texture it, inpaint the holes:
    (images (B, size, size, 3) uint8, person (B, size, size) float32 or None). `pivot` (3,), model
    frame, mm from the mid-face: the point the weighted turn is about (module docstring, step 3).
    `image_canvas` (canvas, canvas, 3 or 5): the photo in the canvas, and optionally the person
    beyond the head and the head itself (at the photo's pose) as two more channels, turned alike."""
    n = depth.shape[0]
    canvas = image_canvas.shape[0]
    _, eye_mouth = head_pivot(verts if frame_vertices is None else frame_vertices, model)
    focal, dist = view_camera(size, eye_mouth)
    c = canvas / 2.0
    z = depth.ravel()
    X = np.stack([(pos[..., 0].ravel() - c) * z / focal, -(pos[..., 1].ravel() - c) * z / focal, -z + dist], -1)
    src = fit.pose
    R = _pose_matrices([src] + list(poses))
    R_rel = R[1:] @ R[0].T
    P = R[0] @ np.asarray(pivot, np.float64)
    Xt = turn_about_pivot(torch.from_numpy(X.astype(np.float32)), w.ravel(), R_rel, P)
    Xt[..., 2] -= dist
    d = -Xt[..., 2]
    screen = torch.stack([c + focal * Xt[..., 0] / d - pad, c - focal * Xt[..., 1] / d - pad, d], -1)
    tris = grid_triangles(n - 1)
    frag = rasterize_meshes(screen, tris, size, cull_backfaces=False)
    uvn = torch.from_numpy((uv.reshape(-1, 2) / canvas * 2 - 1).astype(np.float32))
    grid = interpolate_vertex_attributes(frag, tris, uvn.expand(len(poses), -1, -1))
    tex = torch.from_numpy(image_canvas).permute(2, 0, 1)[None].expand(len(poses), -1, -1, -1)
    sampled = F.grid_sample(tex, grid, mode="bilinear", padding_mode="border", align_corners=False)
    rgb = (sampled[:, :3].permute(0, 2, 3, 1).clamp(0, 1) * 255 + 0.5).byte().numpy()
    holes = hole_masks(frag.pix_to_face, screen, tris, step=canvas / (n - 1))
    if seam is not None:
        turned = torch.from_numpy(np.degrees(np.arccos(np.clip((np.trace(R_rel, axis1=1, axis2=2) - 1) / 2, -1, 1)))
                                  > SEAM_MIN_TURN)
        on_seam = torch.from_numpy(np.ascontiguousarray(seam).reshape(len(poses), -1))[:, tris].any(-1)   # (B, F)
        f = frag.pix_to_face.clamp(min=0)
        hit = torch.gather(on_seam, 1, f.reshape(len(f), -1)).reshape(f.shape)
        holes |= ((frag.pix_to_face >= 0) & hit & turned[:, None, None]).numpy()
    images = np.stack([fill_holes(img, h) for img, h in zip(rgb, holes)])
    if image_canvas.shape[-1] == 3:
        return images, None
    person = sampled[:, 3].clamp(0, 1).numpy()
    on_head = sampled[:, 4].numpy() > 0.5
    return images, np.stack([person_in_holes(p, h, o) for p, h, o in zip(person, holes, on_head)])


#: A hole of the turned photo is taken as the person (hair) when at least this share of the pixels
#: around it off the head show the person (`person_in_holes`).
HOLE_IN_HAIR = 0.5


def person_in_holes(person: np.ndarray, holes: np.ndarray, on_head: np.ndarray) -> np.ndarray:
    """(S, S) float32: `person` (the turned photo's person beyond the fitted head, 0..1) with each
    hole (where the turned photo opened up) taken as the person, 1, when most of the pixels around
    it off the head (`on_head` False) show the person (a hole in long hair), else 0 (a hole between
    the head and the backdrop, where the back of the head shows)."""
    out = np.where(holes, 0.0, person).astype(np.float32)
    if not holes.any():
        return out
    n, labels = cv2.connectedComponents(holes.astype(np.uint8), connectivity=8)
    ring = cv2.dilate(holes.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) & ~holes & ~on_head
    near = cv2.dilate(labels.astype(np.float32), np.ones((5, 5), np.uint8))   # the label each ring pixel touches
    idx = near[ring].astype(np.int64)
    total = np.bincount(idx, minlength=n)
    hair = np.bincount(idx, weights=person[ring], minlength=n)
    is_hair = (total > 0) & (hair > HOLE_IN_HAIR * np.maximum(total, 1))
    is_hair[0] = False
    out[is_hair[labels] & holes] = 1.0
    return out


def turn_about_pivot(X: torch.Tensor, w: np.ndarray, R_rel: np.ndarray, P: np.ndarray) -> torch.Tensor:
    """(B, N, 3): points X (N, 3), relative to the mid-face at the source pose, turned by their
    share w (N,) of each relative rotation R_rel (B, 3, 3) about the pivot P (3,), then shifted by
    P - R_rel P so that the mid-face comes back to the origin. Where w = 1 this is R_rel X (the head
    exactly as `render_views` turns it), where w = 0 the rigid shift X - (P - R_rel P) (the body,
    seen by a camera that follows the face)."""
    Rw = scaled_rotations(R_rel, np.asarray(w, np.float64))                      # (B, N, 3, 3)
    shift = torch.from_numpy((P[None] - R_rel @ P).astype(np.float32))          # (B, 3)
    Pt = torch.from_numpy(np.asarray(P, np.float32))
    return torch.einsum("bnij,nj->bni", Rw, X - Pt) + Pt - shift[:, None]


def _pose_matrices(poses: list[Pose]) -> np.ndarray:
    ang = torch.tensor([[math.radians(p.yaw), math.radians(p.pitch), math.radians(p.roll)] for p in poses],
                       dtype=torch.float64)
    return euler_to_matrix(ang[:, 0], ang[:, 1], ang[:, 2]).numpy()


def hole_masks(pix_to_face: torch.Tensor, screen: torch.Tensor, tris: torch.Tensor, step: float) -> np.ndarray:
    """(B, S, S) bool: pixels no triangle covers or covered by one stretched past `STRETCH_LIMIT`."""
    p = screen[..., :2]
    a, b, c = p[:, tris[:, 0]], p[:, tris[:, 1]], p[:, tris[:, 2]]
    area = 0.5 * ((b - a)[..., 0] * (c - a)[..., 1] - (b - a)[..., 1] * (c - a)[..., 0]).abs()
    stretched = area > STRETCH_LIMIT * 0.5 * step * step                      # (B, F)
    f = pix_to_face.clamp(min=0)                   # face ids index the shared (F, 3) triangles
    bad = torch.gather(stretched, 1, f.reshape(len(f), -1)).reshape(f.shape)
    return ((pix_to_face < 0) | bad).numpy()


def fill_holes(img: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Inpaint the hole pixels of one view from their surroundings (Telea)."""
    if not hole.any():
        return img
    mask = cv2.dilate(hole.astype(np.uint8), np.ones((3, 3), np.uint8))
    return cv2.inpaint(img, mask, 3, cv2.INPAINT_TELEA)


#: Over a photo background, head texels no photo pixel coloured (confidence at the inpainting floor:
#: the back of the head, the neck under a collar, the backdrop kept out of the texture) fade out over
#: this much confidence, so the turned photo shows there instead of a guessed colour.
SEE_THROUGH_RAMP = 0.15
#: Smoothing (texels, at the default atlas height of 512) of that fade, so no hard edge shows.
SEE_THROUGH_SIGMA = 4.0


#: The lower edge of the jaw seen from the side: (forward, up) points of the model's mean face, in
#: eye-to-mouth distances from the mid-face point, front to back (under the chin, along the mandible
#: to its angle, under the ear, the nape). Below it lies the neck.
JAW_LINE = ((0.3, -1.05), (0.14, -1.12), (-0.48, -0.87), (-1.04, -0.56), (-1.6, -0.56), (-2.6, -0.84))
#: Over the photo the head's neck fades out below the jaw line, from this far below it (mm) ...
NECK_FADE_START_MM = 0.0
#: ... over this width (mm): the photo's own neck, which stays on the body, shows there instead.
NECK_FADE_MM = 15.0


def _mean_face_from_mid_face(model: MorphableModel) -> tuple[np.ndarray, float]:
    """The mean face's vertices (V, 3), mm from its mid-face point (`head_pivot`), and its
    eye-to-mouth distance (mm)."""
    mean = torch.as_tensor(np.asarray(model.mean, np.float32))[None]
    centre, eye_mouth = head_pivot(mean, model)
    return mean[0].numpy() - centre.numpy(), eye_mouth


def neck_vertex_alpha(model: MorphableModel) -> np.ndarray:
    """(V,) float32: 1 on the head, 0 on the neck and shoulders below the jaw line (`JAW_LINE`, on
    the mean face), a linear fade between. A rigidly turned neck would leave the shoulders, and the
    collar texels on it would float beside the chin; the photo's neck bends onto the body instead."""
    v, eye_mouth = _mean_face_from_mid_face(model)
    rel = v / eye_mouth
    line = np.array(JAW_LINE[::-1])                       # back to front: np.interp wants z increasing
    below_mm = (np.interp(rel[:, 2], line[:, 0], line[:, 1]) - rel[:, 1]) * eye_mouth
    return np.clip(1.0 - (below_mm - NECK_FADE_START_MM) / NECK_FADE_MM, 0.0, 1.0).astype(np.float32)


#: The face stays opaque over the photo wherever the photo did not colour it: down from the brows'
#: highest landmark, forward of this many eye-to-mouth distances behind the mid-face (the face's
#: outline: the jaw landmarks 0 and 16 lie 57 mm, 0.8 of them, behind it on the ICT mean face), each
#: edge eased over `FACE_OPAQUE_FADE_MM`. Further back, to the ears (1.1), the views at 45-60 degrees
#: lost more faces to dlib's detector (LFW, yaw +-60: 60% / 22.5% of views under 0.6 against
#: 50% / 17.5%) and looked no better.
FACE_OPAQUE_BACK = 0.8
FACE_OPAQUE_FADE_MM = 10.0


def face_vertex_opacity(model: MorphableModel) -> np.ndarray:
    """(V,) float32: 1 on the face up to its outline, below the brows; 0 on the skull, the sides of
    the head, the ears and behind them. Behind the face the turned photo is the photo's face seen
    from the wrong side (stretched, or inpainted where it opened up): a face texel the photo did not
    colour shows the head's own filled texture instead (the mirror, or smooth skin), while over the
    skull the turned photo's hair shows through (`see_through_texture`)."""
    v, eye_mouth = _mean_face_from_mid_face(model)
    brows = model.landmark_vertices[17:27]
    top = float(v[brows[brows >= 0], 1].max()) if (brows >= 0).any() else np.inf
    below_brows = np.clip((top - v[:, 1]) / FACE_OPAQUE_FADE_MM, 0.0, 1.0)
    before_ears = np.clip((v[:, 2] + FACE_OPAQUE_BACK * eye_mouth) / FACE_OPAQUE_FADE_MM, 0.0, 1.0)
    return (below_brows * before_ears).astype(np.float32)


#: Hair sources for the back of the head (`back_of_head_texture`): scalp texels the photo showed at
#: least this far above the brows' highest landmark (mm), or behind the face's outline
#: (`FACE_OPAQUE_BACK`): the crown and the sides of the head, not the forehead.
HAIR_ABOVE_BROWS_MM = 35.0
#: Too little hair seen (fewer hair sources than this share of the atlas: a bald head, hair of the
#: skin's colour) and the back of the head is left see-through, as without its fill.
MIN_HAIR_SOURCES = 0.004
#: A scalp texel darker than this share of the cheeks' luma is hair (`looks_like_hair`).
HAIR_DARKER = 0.7
#: The hair's fill is brightened by at most this factor to the luma of all the scalp the photo showed
#: (`hair_luma_gain`).
HAIR_LUMA_GAIN_MAX = 1.5
#: The hair's colour is filled (pull-push) at this fraction of the atlas's resolution: it is smooth.
HAIR_FILL_SCALE = 4
#: The hair's fine detail over the back of the head (`hair_detail`): a patch this many texels wide (at
#: atlas height 512; the first size the hair covers) that the photo's hair covers to this share, less
#: its blur at this sigma (texels). The hair covers a 48-texel patch on 27 of 37 photos checked; the
#: rest (thin, receding or short hair) would get a flat cap, and 32 or 24 texels cover all of them.
HAIR_PATCH_SIZES = (48, 32, 24)
HAIR_PATCH_COVER = 0.95
HAIR_DETAIL_SIGMA = 3.0
#: Side (texels at atlas height 512) of the hair's detail tile, a random-phase texture with the patch's
#: grain (`hair_detail`), and the seed of its noise.
HAIR_TILE = 128
HAIR_NOISE_SEED = 0
#: Texels of the scalp the photo did not colour and whose surface turned this far from its camera (the
#: cosine of `Texture.facing` under it) are the back of the head (`back_of_head_texture`). At 0.25 a
#: view near the photo's own pose changes at most in a line of pixels along the skull's outline; at
#: 0.5 a dark rim of the guessed hair showed round some heads there, where the fitted skull is wider
#: than the photo's hair.
BACK_FACING_COSINE = 0.25
#: Behind the scalp the photo saw at a cosine under `BACK_FACING_COSINE` the back of the head is
#: opaque, easing to nothing over this much more cosine (`back_of_head_texture`).
GRAZING_RAMP = 0.25
#: The back of the head ends at the nape, at the ears' lowest height (`face3d.texture.EAR_Y_RANGE`),
#: eased over this height (mm) above it.
NAPE_FADE_MM = 15.0
#: Smoothing (texels at the atlas height of 512) of the back of the head's opacity at its edges.
BACK_OF_HEAD_SIGMA = 3.0


def back_of_head_vertex_weight(model: MorphableModel) -> np.ndarray:
    """(V,) float32: 1 on the skull away from the face, the ears and the neck (the scalp, the back
    of the head); 0 elsewhere: `(1 - face_vertex_opacity) * neck_vertex_alpha`, the ears and the mouth
    socket excluded (the eyeballs lie where the face is opaque)."""
    w = (1.0 - face_vertex_opacity(model)) * neck_vertex_alpha(model)
    if model.name == "ict_facekit":   # the hairline at the nape: about the ear lobes' height
        w = w * np.clip((model.mean[:, 1] - EAR_Y_RANGE[0]) / NAPE_FADE_MM, 0.0, 1.0)
    inner = model.mouth_interior if model.mouth_interior is not None else np.zeros(model.num_vertices, bool)
    return np.where(~inner & ~ear_vertices(model), w, 0.0).astype(np.float32)


def hair_source_vertices(model: MorphableModel) -> np.ndarray:
    """(V,) bool: scalp vertices whose photo colour is taken as the hair's (the crown and the sides
    of the head, not the forehead): `back_of_head_vertex_weight` at 1, and higher than
    `HAIR_ABOVE_BROWS_MM` above the brows or behind the face's outline."""
    v, eye_mouth = _mean_face_from_mid_face(model)
    brows = model.landmark_vertices[17:27]
    top = float(v[brows[brows >= 0], 1].max()) if (brows >= 0).any() else -np.inf
    away = (v[:, 1] > top + HAIR_ABOVE_BROWS_MM) | (v[:, 2] < -FACE_OPAQUE_BACK * eye_mouth)
    return (back_of_head_vertex_weight(model) > 0.99) & away


def vertex_texel_maps(model: MorphableModel, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(`neck_vertex_alpha`, `face_vertex_opacity`, `back_of_head_vertex_weight`) interpolated into
    the UV atlas of `height`, cached with the model. The gutters between the islands take their
    islands' values (`push_pull_fill`, the three maps in one pass): a view samples the atlas
    bilinearly, and at an island's edge a gutter of another value would draw the island's outline (a
    thin dark line round the faded neck)."""
    key = ("photo_view_texel_maps", height)
    if key not in model._torch_cache:
        values = np.stack([neck_vertex_alpha(model), face_vertex_opacity(model), back_of_head_vertex_weight(model)])
        out, known = _vertex_values_in_atlas(model, height, values)
        filled = push_pull_fill(out, known)
        model._torch_cache[key] = tuple(np.ascontiguousarray(filled[..., c], np.float32) for c in range(3))
    return model._torch_cache[key]


def _vertex_values_in_atlas(model: MorphableModel, height: int, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-vertex `values` (C, V) interpolated at the texels of the UV atlas of `height`: (H, W, C)
    float32, 0 between the islands, and (H, W) bool, the texels on an island."""
    texels = atlas_texels(model, height)
    H, W = atlas_size(height)
    out = np.zeros((H * W, len(values)), np.float32)
    out[texels.flat] = interpolate(texels, values.astype(texels.bary.dtype)).T
    return out.reshape(H, W, -1), on_islands(model, height)


def on_islands(model: MorphableModel, height: int) -> np.ndarray:
    """(H, W) bool: the texels of the UV atlas of `height` that lie on an island (not in a gutter)."""
    return (atlas_texels(model, height).row >= 0).reshape(atlas_size(height))


def neck_texel_alpha(model: MorphableModel, height: int) -> np.ndarray:
    """`neck_vertex_alpha` in the UV atlas of `height` (`vertex_texel_maps`)."""
    return vertex_texel_maps(model, height)[0]


def face_texel_opacity(model: MorphableModel, height: int) -> np.ndarray:
    """`face_vertex_opacity` in the UV atlas of `height` (`vertex_texel_maps`)."""
    return vertex_texel_maps(model, height)[1]


def hair_source_texels(model: MorphableModel, height: int) -> np.ndarray:
    """`hair_source_vertices` in the UV atlas of `height`: (H, W) bool, cached with the model."""
    key = ("photo_view_hair_sources", height)
    if key not in model._torch_cache:
        out, known = _vertex_values_in_atlas(model, height, hair_source_vertices(model)[None])
        model._torch_cache[key] = known & (out[..., 0] > 0.99)
    return model._torch_cache[key]


def hair_detail(image: np.ndarray, sources: np.ndarray) -> np.ndarray | None:
    """(T, T, 3) float32, a tile of the hair's fine detail (T = `HAIR_TILE` at height 512) that
    repeats without a seam: texel (y, x) of the atlas takes the tile's (y mod T, x mod T). None where
    the hair covers no patch (`hair_patch`). A smooth fill alone reads as a cap.

    The tile is not the photo's patch itself but a random-phase texture with the patch's
    autocorrelation (`spot_noise_tile`): copies of the patch, mirrored so that they meet, would tile
    the back of the head with a kaleidoscope of its strands and edges (ropes where the patch holds a
    strand or the hairline); spot noise has no feature that repeats visibly. Its noise is seeded
    (`HAIR_NOISE_SEED`): a view is the same on every run."""
    patch = hair_patch(image, sources)
    if patch is None:
        return None
    return spot_noise_tile(patch, max(patch.shape[0], int(round(HAIR_TILE * sources.shape[0] / 512))), HAIR_NOISE_SEED)


def hair_patch(image: np.ndarray, sources: np.ndarray) -> np.ndarray | None:
    """(P, P, 3) float32, zero-mean per channel: the atlas patch that the hair sources cover best,
    less its blur at `HAIR_DETAIL_SIGMA`; P the largest of `HAIR_PATCH_SIZES` (at height 512) with a
    patch the sources cover to `HAIR_PATCH_COVER` (thin, receding or short hair has no large one);
    None where no size has one."""
    H, W = sources.shape
    for size in HAIR_PATCH_SIZES:
        P = max(8, int(round(size * H / 512)))
        if H < P or W < P:
            continue
        cover = cv2.boxFilter(sources.astype(np.float32), -1, (P, P), borderType=cv2.BORDER_CONSTANT)
        half = P // 2
        inner = cover[half:H - (P - half) + 1, half:W - (P - half) + 1]
        if inner.size and inner.max() >= HAIR_PATCH_COVER:
            y, x = np.unravel_index(int(np.argmax(inner)), inner.shape)     # top-left corner of the best patch
            patch = image[y:y + P, x:x + P].astype(np.float32)
            patch = patch - cv2.GaussianBlur(patch, (0, 0), HAIR_DETAIL_SIGMA * H / 512.0,
                                             borderType=cv2.BORDER_REFLECT)
            return patch - patch.mean(axis=(0, 1))
    return None


def spot_noise_tile(patch: np.ndarray, side: int, seed: int) -> np.ndarray:
    """(side, side, C) float32: `patch` (P, P, C), zero-mean per channel, P <= side, convolved
    circularly with one white Gaussian noise image (side, side) and divided by P (asymptotic
    discrete spot noise, `hair_detail`): a stationary texture, periodic with period `side`, whose
    autocorrelation and per-channel covariance are the patch's."""
    P, C = patch.shape[0], patch.shape[2]
    noise = np.random.default_rng(seed).standard_normal((side, side))
    kernel = np.zeros((side, side, C))
    kernel[:P, :P] = patch / P
    out = np.fft.irfft2(np.fft.rfft2(noise)[..., None] * np.fft.rfft2(kernel, axes=(0, 1)), s=(side, side), axes=(0, 1))
    return out.astype(np.float32)


def hair_luma_gain(scalp: np.ndarray, sources: np.ndarray) -> float:
    """The factor (1..`HAIR_LUMA_GAIN_MAX`) that brings the median luma of the hair sources' colours
    `sources` (N, 3, 0..1) up to that of all the scalp the photo showed (`scalp`, the crown and the
    sides). Light, grey or blond hair is close to the skin's colour, so `looks_like_hair` keeps its
    darker strands and a fill of them alone paints a darker cap than the photo's hair; where the
    sources are all the scalp shows (dark hair) the factor is about 1, and it never darkens."""
    if not len(scalp) or not len(sources):
        return 1.0
    y_scalp = float(np.median(ycrcb(scalp * 255.0 + 0.5)[:, 0]))
    y_sources = float(np.median(ycrcb(sources * 255.0 + 0.5)[:, 0]))
    return float(np.clip(y_scalp / max(y_sources, 1.0), 1.0, HAIR_LUMA_GAIN_MAX))


def looks_like_hair(rgb: np.ndarray, skin: np.ndarray) -> np.ndarray:
    """(N,) bool: colours (N, 3) in 0..1 that are not the skin's (`skin`: Y, Cr, Cb, 0..255): a chroma
    over `HAIR_CHROMA_DISTANCE` from it (the test of the ears under hair), or darker than
    `HAIR_DARKER` of its luma (brown hair has about the skin's chroma)."""
    ycc = ycrcb(np.asarray(rgb) * 255.0 + 0.5)
    chroma = np.linalg.norm(ycc[:, 1:] - skin[1:], axis=1)
    return (chroma > HAIR_CHROMA_DISTANCE) | (ycc[:, 0] < HAIR_DARKER * skin[0])


def back_of_head_texture(texture: Texture, model: MorphableModel) -> tuple[np.ndarray, np.ndarray | None]:
    """(image, opacity or None): `texture.image` with the back of the head (scalp texels, by
    `back_of_head_vertex_weight`, that the photo did not colour and whose `texture.facing` is under
    `BACK_FACING_COSINE`) coloured from the hair the photo showed on the crown and the sides of the
    head (`hair_source_texels` that `looks_like_hair` against `texture.skin`; a smooth pull-push fill
    at 1/`HAIR_FILL_SCALE` of the atlas brightened to the scalp's luma by `hair_luma_gain`, plus the
    tile of `hair_detail`),
    and the opacity (H, W) of that region over the turned photo, which also covers the scalp the photo
    saw edge-on (cosine under `BACK_FACING_COSINE`, easing off over `GRAZING_RAMP`) in that scalp's own
    colour, so no backdrop shows between the two; (`texture.image`, None) where the
    photo shows too little hair (`MIN_HAIR_SOURCES`: bald, or hair of the skin's colour by
    `texture.skin`). The photo cannot show the back of the head; left see-through, a turned head
    shows the backdrop where its back should be and ends just behind the ear."""
    H, W = texture.confidence.shape
    weight = vertex_texel_maps(model, H)[2]
    unseen = texture.confidence <= INPAINT_CONFIDENCE
    # on the atlas's islands only: a gutter (facing -1, confidence 0) is no back of the head, and as one
    # its blurred opacity would recolour the island's edge beside it (a line of hair across the forehead)
    region = unseen & (texture.facing < BACK_FACING_COSINE) & (texture.facing > -1.0) & (weight > 0.01)
    seen_scalp = hair_source_texels(model, H) & ~unseen
    sources = seen_scalp.copy()
    if texture.skin is not None and sources.any():   # hair, not the skin of a high forehead or a bald crown
        sources[sources] = looks_like_hair(texture.image[sources], texture.skin)
    if not region.any() or sources.sum() < MIN_HAIR_SOURCES * H * W:
        return texture.image, None
    gain = hair_luma_gain(texture.image[seen_scalp], texture.image[sources])
    small = (W // HAIR_FILL_SCALE, H // HAIR_FILL_SCALE)
    k = cv2.resize(sources.astype(np.float32), small, interpolation=cv2.INTER_AREA)
    img = cv2.resize(cv2.copyTo(texture.image, sources.view(np.uint8)), small, interpolation=cv2.INTER_AREA)
    known = k > 0.25
    img = np.where(known[..., None], img / np.maximum(k, 1e-6)[..., None], 0.0).astype(np.float32)
    fill = cv2.resize(push_pull_fill(img, known), (W, H), interpolation=cv2.INTER_LINEAR)
    if gain != 1.0:
        fill = np.clip(fill * gain, 0.0, 1.0)
    sigma = BACK_OF_HEAD_SIGMA * H / 512.0
    # the blur stays off the ears and the face next to the scalp in the atlas (a see-through ear under
    # hair would turn opaque in the region's colour)
    near_scalp = np.clip(weight / 0.25, 0.0, 1.0)
    opacity = cv2.GaussianBlur((region * weight).astype(np.float32), (0, 0), sigma) * near_scalp
    # Behind the scalp the photo saw edge-on the back is whole too, in that scalp's own colour: there
    # the see-through alpha fades (grazing texels have a low confidence) while the region's blurred
    # opacity has not yet risen, so a turned head would show the backdrop through a thin arc between
    # the photo's hair and the back of the head. Near the photo's own pose these texels lie on the
    # person the photo shows, where `render_views` draws no back.
    grazing = np.clip((BACK_FACING_COSINE + GRAZING_RAMP - texture.facing) / GRAZING_RAMP, 0.0, 1.0)
    grazing[unseen] = 0.0
    cover = cv2.GaussianBlur((np.maximum(region, grazing) * weight).astype(np.float32), (0, 0), sigma) * near_scalp
    np.maximum(cover, opacity, out=cover)
    cover[cover < 1e-3] = 0.0                           # the blur's far tails: nothing a view would show
    # the colour follows the opacity where the photo saw nothing; where it saw the scalp, only the
    # region's own blur mixes the hair in, the back behind it shows that scalp's colour (only the
    # texels it reaches are computed)
    blend = np.where(unseen, cover, opacity).reshape(-1)
    at = np.flatnonzero(blend > 1e-3)
    colour = fill.reshape(-1, 3)[at]
    tile = hair_detail(texture.image, sources)
    if tile is not None:
        ty, tx = tile.shape[:2]
        colour += tile.reshape(-1, 3)[(at // W % ty) * tx + at % W % tx]
        np.clip(colour, 0.0, 1.0, out=colour)
    image = texture.image.copy()
    flat = image.reshape(-1, 3)
    base = flat[at]
    flat[at] = base + (colour - base) * blend[at, None]
    return image, cover


def nearest_island_texel(model: MorphableModel, height: int) -> np.ndarray:
    """(H * W,) int64: per texel of the atlas of `height`, the flat index of the nearest texel on an
    island (itself on an island, the nearest across the gutter otherwise), cached with the model."""
    key = ("photo_view_nearest_island", height)
    if key not in model._torch_cache:
        gutter = (~on_islands(model, height)).astype(np.uint8)
        # OpenCV's 5x5 distance mask (scipy.ndimage's exact transform costs a fresh process 0.12 s to
        # import): exact next to the islands, where bilinear look-ups read; within ~3% further away
        _, label = cv2.distanceTransformWithLabels(gutter, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
        # DIST_LABEL_PIXEL numbers the zero (island) texels 1, 2, ... in row-major order
        model._torch_cache[key] = np.flatnonzero(gutter.reshape(-1) == 0)[label.reshape(-1) - 1]
    return model._torch_cache[key]


def atlas_blur(values: np.ndarray, sigma: float, model: MorphableModel | None) -> np.ndarray:
    """(H, W) float32 `values` blurred (Gaussian, `sigma` texels) over the atlas's islands only: the
    gutters between them (and the pixels outside) weigh nothing, so a value does not fall towards 0
    along an island's edge; a gutter texel takes the blur of the islands around it (0 far from any).
    With no `model` (no atlas known), a plain blur. An island's edge lies on a seam of the head (the
    forehead's, where the face meets the scalp): a dip there would let the backdrop show through as a
    thin line across the head in every view."""
    if model is None:
        return cv2.GaussianBlur(values, (0, 0), sigma)
    covered = on_islands(model, values.shape[0])
    key = ("photo_view_island_weight", values.shape[0], sigma)
    if key not in model._torch_cache:    # the islands' own blur: the same for every texture of the model
        model._torch_cache[key] = np.maximum(cv2.GaussianBlur(covered.astype(np.float32), (0, 0), sigma), 1e-6)
    inside = cv2.GaussianBlur(np.where(covered, values, 0.0).astype(np.float32), (0, 0), sigma)
    return (inside / model._torch_cache[key]).astype(np.float32)


def see_through_texture(texture: Texture, model: MorphableModel | None = None) -> Texture:
    """`texture` with alpha 0 where no photo pixel coloured it and 1 where the photo (or its mirror)
    did, times any alpha it has: over the turned photo, the head shows only what the photo showed.
    With `model`, the face stays opaque anyway (`face_vertex_opacity`), the neck below the jaw is 0
    (`neck_vertex_alpha`), and where the texture knows which way its texels faced the photo's camera
    the back of the head gets the photo's hair colour and its own opacity (`Texture.back`,
    `back_of_head_texture`), which `render_views` draws behind the person of the turned photo."""
    fade = np.clip((texture.confidence - INPAINT_CONFIDENCE) / SEE_THROUGH_RAMP, 0.0, 1.0).astype(np.float32)
    fade = atlas_blur(fade, SEE_THROUGH_SIGMA * texture.confidence.shape[0] / 512.0, model)
    image, back = texture.image, None
    if model is not None:
        fade = np.maximum(fade, face_texel_opacity(model, texture.confidence.shape[0]))
        if texture.facing is not None:
            image, back = back_of_head_texture(texture, model)
    alpha = fade if texture.alpha is None else fade * texture.alpha
    if model is not None:
        alpha = alpha * neck_texel_alpha(model, texture.confidence.shape[0])
        # views sample the atlas bilinearly, so texels along an island's edge read the gutter beside
        # it: there the alpha and the back's opacity take their nearest island texel's value, as the
        # colour's gutters carry the colour (else a dotted line of the backdrop along the forehead's seam)
        near = nearest_island_texel(model, texture.confidence.shape[0])
        alpha = alpha.reshape(-1)[near].reshape(alpha.shape)
        if back is not None:
            back = back.reshape(-1)[near].reshape(back.shape)
    return replace(texture, image=image, alpha=alpha.astype(np.float32), back=back)
