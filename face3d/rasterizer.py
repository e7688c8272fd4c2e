"""Hard z-buffer mesh rasterizer in pure, vectorised PyTorch (CPU friendly).

The output mimics pytorch3d's ``Fragments`` (with ``faces_per_pixel == 1``) so that
a pytorch3d backend can be swapped in later.

Conventions
-----------
* ``verts_screen`` is ``(B, V, 3)``: B meshes sharing one face list ``faces`` ``(F, 3)``.
  ``x``/``y`` are pixel coordinates, ``y`` pointing down; pixel (row ``i``, col ``j``)
  has its centre at ``(x=j+0.5, y=i+0.5)``. ``z`` is the positive view depth.
* Triangles with a vertex at ``z <= 0`` and zero-area triangles are ignored.
* A pixel is covered when its centre is inside the triangle. Edge functions are
  evaluated from a *canonical* endpoint of each edge (the one with the smaller x),
  so the two triangles sharing an edge compute exactly opposite
  values; a centre exactly on an edge goes to one side only (a top-left style tie
  rule on the edge direction). Closed meshes therefore render without cracks or
  double coverage.
* The visible triangle is the one with the smallest interpolated depth at the pixel
  centre; ties go to the smallest face index. The discrete choice is made in float32
  (for float64 inputs too) with an int64 key ``(depth bits << 32) | face`` reduced
  with ``scatter_reduce('amin')``.
* Front-facing = counter-clockwise in a y-up image, i.e. the 2D cross product
  ``(v1 - v0) x (v2 - v0)`` is *negative* in these y-down pixel coordinates.
* Barycentrics: screen-space ``l_i = w_i / sum(w)`` (``w_i`` the edge function
  opposite vertex ``i``); perspective-correct ``b_i = (l_i / z_i) / sum_k(l_k / z_k)``
  and ``zbuf = 1 / sum_k(l_k / z_k)``; with ``perspective_correct=False``
  ``b = l`` and ``zbuf = sum_k l_k z_k``.

Algorithm
---------
1. Per face (no grad, float32): edge coefficients, signed area, pixel bounding box
   of the pixel *centres* inside the triangle's box. Faces that are behind the
   camera, degenerate, culled or whose box holds no pixel centre are dropped.
2. The remaining (face, pixel) candidate pairs are enumerated without Python loops
   (``repeat_interleave`` + ``cumsum`` offsets), in chunks of bounded size, then
   edge-tested; the covered pairs are reduced per pixel with ``scatter_reduce``.
3. For the visible faces only, barycentrics and depth are recomputed from
   ``verts_screen`` *with autograd*, so gradients reach vertex positions (and the
   attributes through :func:`interpolate_vertex_attributes`). Empty pixels hold
   constants (no NaN gradients).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "Fragments",
    "rasterize_meshes",
    "interpolate_vertex_attributes",
    "interpolate_face_attributes",
]

# Upper bound on the candidate (face, pixel) slots evaluated at once: bounds the
# temporary memory (~70 bytes per slot) at large image sizes / big triangles.
_MAX_SLOTS_PER_CHUNK = 1 << 20
_EMPTY_KEY = torch.iinfo(torch.int64).max
_MAX_IMAGE_SIDE = 1 << 14  # box sizes (<= 2**14) are bucketed by log2 into a uint8 key
# Smallest positive float32 (subnormal): `w > -_TINY` is exactly `w >= 0`.
_TINY = torch.finfo(torch.float32).smallest_normal * torch.finfo(torch.float32).eps


@dataclass
class Fragments:
    """Rasterization output (one face per pixel).

    pix_to_face: (B, H, W) int64, index into ``faces`` of the visible triangle, -1 where empty.
    zbuf:        (B, H, W) float, view depth of the visible surface at the pixel centre, -1 where empty.
    bary_coords: (B, H, W, 3) float, barycentric coords of the pixel centre in that triangle
                 (perspective-correct by default); 0 where empty. Differentiable w.r.t. verts_screen.
    """

    pix_to_face: torch.Tensor
    zbuf: torch.Tensor
    bary_coords: torch.Tensor


def _image_hw(image_size) -> tuple[int, int]:
    if isinstance(image_size, int):
        h = w = image_size
    else:
        h, w = image_size
    h, w = int(h), int(w)
    if not (0 < h <= _MAX_IMAGE_SIDE and 0 < w <= _MAX_IMAGE_SIDE):
        raise ValueError(f"image_size must be in 1..{_MAX_IMAGE_SIDE}, got {image_size}")
    return h, w


def _edge_setup(x0, y0, x1, y1, x2, y2):
    """Canonical, inside-positive edge functions of triangles (any common shape).

    Returns, for the edges k = 0, 1, 2 (edge k joins vertices k+1 and k+2, opposite
    vertex k), lists ``ox, oy, dx, dy, tie`` such that the edge function at a point p

        w_k = dx_k * (p_y - oy_k) - dy_k * (p_x - ox_k)

    is positive inside the triangle whatever its winding. ``(ox, oy)`` is a canonical
    endpoint (the one with the smaller x), so two triangles sharing an edge compute
    bitwise opposite ``w`` (IEEE arithmetic is sign-symmetric). ``tie_k`` says
    whether ``w_k == 0`` counts as inside: true iff the oriented edge direction
    (dx, dy) has dy > 0, or dy == 0 and dx < 0 - exactly one of two triangles on
    opposite sides of a shared edge gets a pixel centre lying on it. Also returns the
    signed doubled area ``(v1 - v0) x (v2 - v0)`` (negative = front-facing).
    """
    xs, ys = (x0, x1, x2), (y0, y1, y2)
    area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
    # The raw edge function of (a -> b) has the sign of `area` at the opposite vertex;
    # multiplying the direction by sign(area) makes it inside-positive. Since
    # a - b == -(b - a) exactly, the direction does not depend on the canonical origin.
    sgn = torch.where(area < 0, -1.0, 1.0).to(area.dtype)
    ox, oy, dx, dy, tie = [], [], [], [], []
    for k in range(3):
        ax, ay = xs[(k + 1) % 3], ys[(k + 1) % 3]
        bx, by = xs[(k + 2) % 3], ys[(k + 2) % 3]
        # Origin: the endpoint with the smaller x. (For a vertical edge dx == 0 exactly,
        # so the choice of origin does not change w; no tie-break on y is needed.)
        swap = bx < ax
        ox.append(torch.where(swap, bx, ax))
        oy.append(torch.where(swap, by, ay))
        d_x, d_y = (bx - ax) * sgn, (by - ay) * sgn
        dx.append(d_x)
        dy.append(d_y)
        tie.append((d_y > 0) | ((d_y == 0) & (d_x < 0)))
    return ox, oy, dx, dy, tie, area


def _denormals_are_zero() -> bool:
    """True if denormal operands read as zero (``torch.set_flush_denormal(True)``)."""
    return not bool(torch.tensor(-_TINY, dtype=torch.float32) < 0)


def _gather_corners(verts: torch.Tensor, vert_idx: torch.Tensor):
    """Corner coordinates ``(x, y, z)``, each (3, N): ``x[k, i] = verts.view(-1, 3)[vert_idx[k, i], 0]``.

    verts: (B, V, 3); vert_idx: (3, N) flat vertex indices (b * V + v). One gather per
    coordinate from a (3, B*V) copy keeps every output contiguous (and temporaries small).
    """
    vt = verts.permute(2, 0, 1).reshape(3, -1)
    flat = vert_idx.reshape(-1)
    return [vt[c].index_select(0, flat).view(3, -1) for c in range(3)]


@torch.no_grad()
def _visible_faces(verts_screen, faces, height, width, cull_backfaces, perspective_correct):
    """Flat (B*H*W,) int64 index of the visible face per pixel, -1 if none."""
    batch, n_verts, _ = verts_screen.shape
    n_faces = faces.shape[0]
    n_pix = height * width
    # ---- Per-face stage (all B*F faces): gather corners, cull, pixel-centre boxes. ----
    vert_idx = faces.t().contiguous().unsqueeze(1) + (torch.arange(batch) * n_verts).view(1, batch, 1)  # (3, B, F)
    gx, gy, gz = _gather_corners(verts_screen.detach().to(torch.float32), vert_idx.view(3, -1))
    (x0, x1, x2), (y0, y1, y2), (z0, z1, z2) = gx.unbind(0), gy.unbind(0), gz.unbind(0)
    area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
    # Pixel columns j with centre j + 0.5 in [xmin, xmax] (kept in float: no overflow).
    c0 = torch.ceil(torch.minimum(torch.minimum(x0, x1), x2) - 0.5).clamp_(min=0)
    ncols = torch.floor(torch.maximum(torch.maximum(x0, x1), x2) - 0.5).clamp_(max=width - 1).sub_(c0)
    r0 = torch.ceil(torch.minimum(torch.minimum(y0, y1), y2) - 0.5).clamp_(min=0)
    nrows = torch.floor(torch.maximum(torch.maximum(y0, y1), y2) - 0.5).clamp_(max=height - 1).sub_(r0)
    # (ncols, nrows hold count - 1 here.)  NaN coordinates fail all these comparisons.
    keep = (ncols >= 0) & (nrows >= 0) & (z0 > 0) & (z1 > 0) & (z2 > 0)
    keep &= (area < 0) if cull_backfaces else (area != 0)
    # Bucket the kept faces by box shape rounded up to powers of two (frexp(n - 1)[1] is
    # ceil(log2(n)) for integers n >= 1); each bucket becomes one dense block below.
    # A stable sort of uint8 keys is a fast radix sort.
    bucket = torch.frexp(nrows.clamp(0, 1 << 15))[1] * 16 + torch.frexp(ncols.clamp(0, 1 << 15))[1]
    bucket = bucket.to(torch.uint8).masked_fill_(~keep, 255)
    bucket, order = torch.sort(bucket, stable=True)
    n_keep = int(keep.sum())
    if n_keep == 0:
        return torch.full((batch * n_pix,), -1, dtype=torch.int64)
    sel = order[:n_keep]
    bucket_ids, bucket_counts = torch.unique_consecutive(bucket[:n_keep], return_counts=True)

    # ---- Kept faces, sorted by bucket. ----
    x0, x1, x2, y0, y1, y2, z0, z1, z2, c0, r0, ncols, nrows = (
        t.index_select(0, sel) for t in (x0, x1, x2, y0, y1, y2, z0, z1, z2, c0, r0, ncols, nrows)
    )
    ox, oy, dx, dy, tie, _ = _edge_setup(x0, y0, x1, y1, x2, y2)
    if _denormals_are_zero():  # then `w > -_TINY` would not mean `w >= 0`
        thr = None
    else:  # tie-inclusive edges test w > -tiny (== w >= 0), the others w > 0
        thr = [torch.where(t, -_TINY, 0.0) for t in tie]
    zz = [1.0 / z0, 1.0 / z1, 1.0 / z2] if perspective_correct else [z0, z1, z2]
    fid = sel % n_faces
    base = (sel // n_faces) * n_pix + r0.to(torch.int64) * width + c0.to(torch.int64)
    px0, py0 = c0.add_(0.5), r0.add_(0.5)

    # Pixel buffer padded so that slots past the end of a box never index out of range
    # (those slots are never inside, they only carry the empty key).
    shapes = [(1 << (b // 16), 1 << (b % 16)) for b in bucket_ids.tolist()]
    max_rows, max_cols = max(r for r, _ in shapes), max(c for _, c in shapes)
    keys = torch.full((batch * n_pix + max_rows * width + max_cols,), _EMPTY_KEY, dtype=torch.int64)

    # ---- Each bucket is a dense (rows, cols, faces) block, faces innermost. ----
    start = 0
    for (n_r, n_c), cnt in zip(shapes, bucket_counts.tolist()):
        step = max(1, _MAX_SLOTS_PER_CHUNK // (n_r * n_c))
        rr = torch.arange(n_r, dtype=torch.float32).view(n_r, 1)
        cc = torch.arange(n_c, dtype=torch.float32).view(n_c, 1)
        offs = torch.arange(n_r).view(n_r, 1, 1) * width + torch.arange(n_c).view(1, n_c, 1)
        for lo in range(start, start + cnt, step):
            s = slice(lo, min(lo + step, start + cnt))
            py = py0[s] + rr  # (R, n): pixel-centre y of each box row
            px = px0[s] + cc  # (C, n)
            w = []
            for k in range(3):
                # Separable edge function: w = dx*(py - oy) - dy*(px - ox) = Y[row] - X[col].
                y_term = dx[k][s] * (py - oy[k][s])
                x_term = dy[k][s] * (px - ox[k][s])
                if k == 0:  # slots outside the actual box get w0 = -inf: never inside
                    y_term.masked_fill_(rr > nrows[s], float("-inf"))
                    x_term.masked_fill_(cc > ncols[s], float("inf"))
                w.append(y_term.unsqueeze(1) - x_term.unsqueeze(0))  # (R, C, n)
            if thr is not None:
                inside = (w[0] > thr[0][s]) & (w[1] > thr[1][s])
                inside &= w[2] > thr[2][s]
            else:
                inside = (w[0] > 0) | ((w[0] == 0) & tie[0][s])
                for k in (1, 2):
                    inside &= (w[k] > 0) | ((w[k] == 0) & tie[k][s])
            num = w[0] * zz[0][s] + w[1] * zz[1][s] + w[2] * zz[2][s]
            wsum = w[0] + w[1] + w[2]
            depth = wsum.div_(num) if perspective_correct else num.div_(wsum)
            inside &= depth > 0  # excludes NaN (all-zero w) and negative depths
            # Positive float32 bit patterns order like integers: (depth, face) in one int64.
            key = depth.view(torch.int32).to(torch.int64).bitwise_left_shift_(32).bitwise_or_(fid[s])
            key.masked_fill_(~inside, _EMPTY_KEY)
            keys.scatter_reduce_(0, (base[s] + offs).view(-1), key.view(-1), reduce="amin")
        start += cnt

    keys = keys[: batch * n_pix]
    pix_to_face = keys & 0xFFFFFFFF
    return pix_to_face.masked_fill_(keys == _EMPTY_KEY, -1)


def rasterize_meshes(
    verts_screen: torch.Tensor,
    faces: torch.Tensor,
    image_size,
    *,
    cull_backfaces: bool = False,
    perspective_correct: bool = True,
) -> Fragments:
    """Rasterize a batch of meshes sharing ``faces`` into ``Fragments``.

    Args:
        verts_screen: (B, V, 3) pixel x, pixel y (down), positive view depth z.
        faces: (F, 3) int64 vertex indices.
        image_size: int (square) or (H, W).
        cull_backfaces: drop triangles that are not counter-clockwise in a y-up image
            (i.e. whose y-down 2D cross product is >= 0).
        perspective_correct: perspective-correct barycentrics and depth.

    The visibility (``pix_to_face``) is decided without autograd, in float32; the
    barycentrics and depth of the chosen faces are then recomputed in the dtype of
    ``verts_screen`` with autograd.
    """
    if verts_screen.dim() != 3 or verts_screen.shape[-1] != 3:
        raise ValueError(f"verts_screen must be (B, V, 3), got {tuple(verts_screen.shape)}")
    if faces.dim() != 2 or faces.shape[-1] != 3:
        raise ValueError(f"faces must be (F, 3), got {tuple(faces.shape)}")
    if verts_screen.device.type != "cpu":
        raise NotImplementedError("face3d.rasterizer runs on CPU tensors only")
    height, width = _image_hw(image_size)
    faces = faces.to(dtype=torch.int64)
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= verts_screen.shape[1]):
        raise IndexError("faces index out of range of verts_screen")
    batch, n_verts, _ = verts_screen.shape
    n_pix = height * width
    if not verts_screen.is_floating_point():
        verts_screen = verts_screen.to(torch.float32)
    verts_screen = verts_screen.contiguous()
    dtype = verts_screen.dtype

    pix_to_face = _visible_faces(verts_screen, faces, height, width, cull_backfaces, perspective_correct)

    # ---- Differentiable recomputation, for the covered pixels only. ----
    covered = (pix_to_face >= 0).nonzero().squeeze(1)
    f = pix_to_face.index_select(0, covered)
    b = torch.div(covered, n_pix, rounding_mode="floor")
    p = covered - b * n_pix
    r = torch.div(p, width, rounding_mode="floor")
    px = (p - r * width).to(dtype).add_(0.5)
    py = r.to(dtype).add_(0.5)
    vert_idx = faces.t().contiguous().index_select(1, f).add_(b * n_verts)  # (3, P)
    (x0, x1, x2), (y0, y1, y2), (z0, z1, z2) = (t.unbind(0) for t in _gather_corners(verts_screen, vert_idx))
    # Raw edge functions w_k = (v_{k+2} - v_{k+1}) x (p - v_{k+1}); their common sign
    # (the winding) cancels in the ratios below.
    w0 = (x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)
    w1 = (x0 - x2) * (py - y2) - (y0 - y2) * (px - x2)
    w2 = (x1 - x0) * (py - y0) - (y1 - y0) * (px - x0)
    wsum = w0 + w1 + w2
    if perspective_correct:
        q0, q1, q2 = w0 / z0, w1 / z1, w2 / z2
        qsum = q0 + q1 + q2
        bary = torch.stack([q0, q1, q2], 1).div_(qsum.unsqueeze(1))
        depth = wsum / qsum
    else:
        bary = torch.stack([w0, w1, w2], 1).div_(wsum.unsqueeze(1))
        depth = (w0 * z0 + w1 * z1 + w2 * z2) / wsum

    # In-place scatter into fresh buffers (differentiable w.r.t. the scattered values).
    zbuf = torch.full((batch * n_pix,), -1.0, dtype=dtype).index_put_((covered,), depth)
    bary_full = torch.zeros((batch * n_pix, 3), dtype=dtype).index_put_((covered,), bary)
    return Fragments(
        pix_to_face=pix_to_face.view(batch, height, width),
        zbuf=zbuf.view(batch, height, width),
        bary_coords=bary_full.view(batch, height, width, 3),
    )


def _interpolate(fragments: Fragments, corner_values_fn) -> torch.Tensor:
    batch, height, width = fragments.pix_to_face.shape
    p2f = fragments.pix_to_face.reshape(-1)
    covered = (p2f >= 0).nonzero().squeeze(1)
    bary = fragments.bary_coords.reshape(-1, 3)[covered]  # (P, 3)
    b = torch.div(covered, height * width, rounding_mode="floor")
    vals = corner_values_fn(b, p2f[covered])  # (P, 3, C)
    out_vals = (bary.unsqueeze(-1).to(vals.dtype) * vals).sum(1)
    channels = out_vals.shape[-1]
    out = torch.zeros((batch * height * width, channels), dtype=out_vals.dtype, device=out_vals.device)
    return out.index_put((covered,), out_vals).view(batch, height, width, channels)


def interpolate_vertex_attributes(fragments: Fragments, faces: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
    """Interpolate per-vertex attributes (B, V, C) or (V, C) to (B, H, W, C); zeros where empty.

    Differentiable w.r.t. ``attributes`` and, through ``fragments.bary_coords``, the vertices.
    """
    faces = faces.to(torch.int64)
    if attributes.dim() == 2:
        return _interpolate(fragments, lambda b, f: attributes[faces[f]])
    return _interpolate(fragments, lambda b, f: attributes[b.unsqueeze(1), faces[f]])


def interpolate_face_attributes(fragments: Fragments, face_attributes: torch.Tensor) -> torch.Tensor:
    """Interpolate per-corner face attributes (F, 3, C) or (B, F, 3, C) (e.g. UVs with seams)
    to (B, H, W, C); zeros where empty."""
    if face_attributes.dim() == 3:
        return _interpolate(fragments, lambda b, f: face_attributes[f])
    return _interpolate(fragments, lambda b, f: face_attributes[b, f])
