"""Whole-photo views: the photo as a 2.5D mesh that turns with the head (face profiling, after
Zhu et al., CVPR 2016), in the crop frame of `face3d.render.render_views`.

`photo_view_backgrounds(fit, image, model, poses, size)` gives one (size, size, 3) picture per pose:

1. the photo is warped by a similarity (inner landmarks onto the fitted head's view at its own
   pose, as `face3d.alignment.aligned_original`) into a canvas `CANVAS_MARGIN` wider than the crop
   on every side, so content that swings into the crop exists;
2. a regular grid mesh covers the canvas; each grid vertex gets a point in the view camera's frame:
   on the head the fitted mesh's surface (its z-buffer at the source pose), elsewhere a depth that
   continues the head's silhouette depth smoothly (a membrane: Laplace's equation, the head and the
   canvas border held fixed). The same membrane carries a small texture offset that makes every
   head vertex sample the photo where the fit projects that surface point, so the photo's face
   lies exactly under the rendered head;
3. every vertex turns about the view pivot by the relative rotation (target pose after source pose)
   scaled by a weight that is 1 on the head and the hair around it and falls smoothly to 0 at the
   canvas border: the head with its hair turns, the shoulders and the background bend, the border
   stays put;
4. the grid mesh is rasterized at each target pose (z-buffered, textured with the canvas); pixels no
   triangle covers, or covered by a triangle stretched open (disocclusion), are inpainted.

`render_views(..., background=photo_view_backgrounds(...))` then draws the textured head on top.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
import torch.nn.functional as F

from face3d.alignment import photo_similarity
from face3d.camera import Pose, euler_to_matrix
from face3d.morphable_model import MorphableModel
from face3d.rasterizer import interpolate_vertex_attributes, rasterize_meshes
from face3d.render import head_pivot, view_camera, view_screen
from face3d.texture import INPAINT_CONFIDENCE, Texture

#: Extra canvas on each side of the crop, as a fraction of the crop side.
CANVAS_MARGIN = 0.25
#: Grid vertices per crop side at most (the grid step is at least 2 px).
GRID_CELLS = 64
#: Distance around the fitted head (fraction of the crop side) that turns fully with it: hair, ears.
HAIR_RADIUS = 0.1
#: Width of the band (fraction of the crop side) over which the turn eases off to the still background.
FALLOFF = 0.2
#: A triangle whose area grows by more than this factor is a disocclusion: its pixels are inpainted.
STRETCH_LIMIT = 4.0
#: Width (fraction of the crop) of the seam beside the face, brows to chin, whose photo pixels are
#: refilled in a turned view: the photo's cheek edge that the fitted mesh misses would otherwise
#: turn with the head and stick out past its profile.
SEAM_WIDTH = 0.05
#: The seam is refilled in views turned by more than this (degrees) from the photo's pose.
SEAM_MIN_TURN = 10.0


def warp_canvas(image: np.ndarray, A: np.ndarray, t: np.ndarray, canvas: int) -> np.ndarray:
    """The photo warped by (A, t) into a canvas (float32 0..1, canvas x canvas x 3)."""
    t_cv = t + A @ np.array([0.5, 0.5]) - 0.5      # OpenCV's pixel centres sit at integers
    scale = float(np.sqrt(abs(np.linalg.det(A))))
    img = image
    if scale < 0.8:  # prefilter before shrinking (warpAffine samples, it does not average)
        img = cv2.GaussianBlur(image, (0, 0), 0.5 * (1.0 / scale - 1.0) + 0.3)
    M = np.hstack([A, t_cv[:, None]])
    out = cv2.warpAffine(img, M, (canvas, canvas), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return out.astype(np.float32) / 255.0


def grid_triangles(n: int) -> torch.Tensor:
    """(2 n^2, 3) triangles of an (n+1) x (n+1) vertex grid, row-major."""
    j, i = np.meshgrid(np.arange(n), np.arange(n))
    a = (i * (n + 1) + j).ravel()
    b, c, d = a + 1, a + n + 1, a + n + 2
    tris = np.concatenate([np.stack([a, c, b], 1), np.stack([b, c, d], 1)])
    return torch.from_numpy(tris.astype(np.int64))


def membrane(values: np.ndarray, fixed: np.ndarray) -> np.ndarray:
    """Harmonic fill of an (n, n, C) grid: `fixed` cells keep their values, the others solve
    Laplace's equation (each the mean of its 4 neighbours), one sparse solve for all C channels."""
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
    with torch.no_grad():
        verts = fit.vertices(model) if vertices is None else vertices
        pad = int(round(CANVAS_MARGIN * size))
        canvas = size + 2 * pad
        step = max(2.0, canvas / (GRID_CELLS * (1 + 2 * CANVAS_MARGIN)))
        n = int(math.ceil(canvas / step)) + 1
        step = canvas / (n - 1)
        head, skull, zbuf, at, (A, t) = source_surface(fit, model, verts, frame_vertices, size, pad, n, step)
        image_canvas = warp_canvas(image, A, t + pad, canvas)
        pos = np.stack(np.meshgrid(np.arange(n), np.arange(n)), -1).astype(np.float64) * step
        fixed = head.copy()
        fixed[[0, -1], :] = fixed[:, [0, -1]] = True
        border_depth = float(np.median(zbuf[head ^ cv2.erode(head.astype(np.uint8), np.ones((3, 3))).astype(bool)])) \
            if head.any() else view_camera(size, 1.0)[1]
        vals = np.zeros((n, n, 3))
        vals[..., 0] = np.where(head, zbuf, border_depth)
        vals[..., 1:] = np.where(head[..., None], at - pos, 0.0)
        filled = membrane(vals, fixed)
        w = turn_weight(skull, step, size)
        seam = face_seam(head, fit, model, verts, frame_vertices, size, pad, step)
        return render_grid(filled[..., 0], pos, pos + filled[..., 1:], w, image_canvas, fit, model, verts,
                           frame_vertices, poses, size, pad, seam)


def face_seam(head: np.ndarray, fit, model, verts, frame_vertices, size: int, pad: int, step: float) -> np.ndarray:
    """(n, n) bool: grid vertices within `SEAM_WIDTH` outside the head, between the brows and the chin."""
    ring = cv2.dilate(head.astype(np.uint8), np.ones((3, 3), np.uint8),
                      iterations=max(1, int(round(SEAM_WIDTH * size / step)))).astype(bool) & ~head
    lm = view_screen(verts, model, [fit.pose], size, frame_vertices)[0, np.maximum(model.landmark_vertices, 0), 1]
    top, bottom = (float(lm[17:27].min()) + pad) / step, (float(lm[8]) + pad) / step
    rows = np.arange(head.shape[0])[:, None]
    return ring & (rows >= top) & (rows <= bottom)


def render_grid(depth, pos, uv, w, image_canvas, fit, model, verts, frame_vertices, poses, size, pad, seam=None):
    """Turn the grid mesh to every pose, rasterize it into the crop, texture it, inpaint the holes."""
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
    Rw = scaled_rotations(R_rel, w.ravel().astype(np.float64))             # (B, N, 3, 3)
    Xt = torch.einsum("bnij,nj->bni", Rw, torch.from_numpy(X.astype(np.float32)))
    Xt[..., 2] -= dist
    d = -Xt[..., 2]
    screen = torch.stack([c + focal * Xt[..., 0] / d - pad, c - focal * Xt[..., 1] / d - pad, d], -1)
    tris = grid_triangles(n - 1)
    frag = rasterize_meshes(screen, tris, size, cull_backfaces=False)
    uvn = torch.from_numpy((uv.reshape(-1, 2) / canvas * 2 - 1).astype(np.float32))
    grid = interpolate_vertex_attributes(frag, tris, uvn.expand(len(poses), -1, -1))
    tex = torch.from_numpy(image_canvas).permute(2, 0, 1)[None].expand(len(poses), -1, -1, -1)
    rgb = F.grid_sample(tex, grid, mode="bilinear", padding_mode="border", align_corners=False)
    rgb = (rgb.permute(0, 2, 3, 1).clamp(0, 1) * 255 + 0.5).byte().numpy()
    holes = hole_masks(frag.pix_to_face, screen, tris, step=canvas / (n - 1))
    if seam is not None:
        turned = torch.from_numpy(np.degrees(np.arccos(np.clip((np.trace(R_rel, axis1=1, axis2=2) - 1) / 2, -1, 1)))
                                  > SEAM_MIN_TURN)
        on_seam = torch.from_numpy(seam.ravel())[tris].any(-1)                    # (F,)
        f = frag.pix_to_face.clamp(min=0)
        holes |= ((frag.pix_to_face >= 0) & on_seam[f] & turned[:, None, None]).numpy()
    return np.stack([fill_holes(img, h) for img, h in zip(rgb, holes)])


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


def see_through_texture(texture: Texture) -> Texture:
    """`texture` with alpha 0 where no photo pixel coloured it and 1 where the photo (or its mirror)
    did, times any alpha it has: over the turned photo, the head shows only what the photo showed."""
    fade = np.clip((texture.confidence - INPAINT_CONFIDENCE) / SEE_THROUGH_RAMP, 0.0, 1.0).astype(np.float32)
    fade = cv2.GaussianBlur(fade, (0, 0), SEE_THROUGH_SIGMA * texture.confidence.shape[0] / 512.0)
    alpha = fade if texture.alpha is None else fade * texture.alpha
    return Texture(texture.image, texture.confidence, alpha.astype(np.float32))
