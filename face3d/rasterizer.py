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
  evaluated in a form symmetric in the edge's endpoints (relative to its midpoint,
  see ``_edge_setup``), so the two triangles sharing an edge compute exactly opposite
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
1. Per face (no grad, float32, all B*F faces at once): signed area and the box of
   pixel *centres* covered by the triangle's bounding box. Faces behind the camera,
   degenerate, culled or whose box holds no pixel centre are dropped; the others are
   sorted by box shape (rows, cols rounded up to a size table; uint8 radix sort).
2. Each shape bucket is evaluated as one dense (rows, cols, faces) block, in chunks
   of bounded size. The edge functions are separable (a per-row term minus a
   per-column term), the inside test, depth and key are pure float arithmetic (no
   boolean masks, which are much slower on CPU), and the int64 keys
   ``(depth bits << 32) | face`` are reduced per pixel with
   ``scatter_reduce('amin')``: nearest depth, then smallest face index.
3. For the covered pixels only, barycentrics and depth are recomputed from
   ``verts_screen`` *with autograd*, so gradients reach vertex positions (and the
   attributes through :func:`interpolate_vertex_attributes`). Empty pixels hold
   constants (no NaN gradients).

On the CPU, steps 1 and 2 also exist compiled (``face3d.raster_cpu``, Numba: a loop over each
view's faces with a z-buffer, the same float32 arithmetic, the same result bit for bit, about
four times faster), used once a process has rasterized enough to pay for loading it (see
``CPU_VISIBILITY``); the PyTorch version below is the reference and serves CUDA. Step 3 is the
same for both.

No Python loop runs over triangles or pixels; the Python loops are over the (few)
shape buckets and the 3 edges. Thread count and allocator settings are left to the
caller. Every tensor is made on the device of ``verts_screen`` (CPU or CUDA); the
output is there too.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch

from face3d.errors import FaceSynthError

__all__ = [
    "Fragments",
    "rasterize_meshes",
    "interpolate_vertex_attributes",
    "interpolate_vertex_attributes_covered",
    "interpolate_face_attributes",
]

# Upper bound on the candidate (face, pixel) slots evaluated at once: bounds the
# temporary memory (~50 bytes per slot) at large image sizes / big triangles.
_MAX_SLOTS_PER_CHUNK = 1 << 20
_EMPTY_KEY = torch.iinfo(torch.int64).max
_INF_BITS = 0x7F800000  # float32 +inf; keys with high word >= this are empty
_MAX_IMAGE_SIDE = 1 << 14
# Dense-bucket codes of box sizes: a box of n rows goes to the first size >= n (then the
# bucket is trimmed to the largest box it actually holds). 15 row x 16 column codes fit a
# uint8 sort key (255 = culled), and uint8 keys sort fast (radix sort).
_ROW_SIZES = [1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32, 64, 256, 1 << 14]
_COL_SIZES = [1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32, 64, 128, 512, 1 << 14]
# Both tables list every size up to this one: a bucket of such a size holds only boxes of that size.
_EXACT_SIZES = 6
# Padding slots worth one block less in the scan (see `_bucket_blocks`).
_MERGE_SLOTS = 4096


def _size_lut(sizes):
    """code[n] = index of the first size >= n, for n = 0.._MAX_IMAGE_SIDE (code[0] = 0)."""
    codes = torch.searchsorted(torch.tensor(sizes), torch.arange(_MAX_IMAGE_SIDE + 1), side="left")
    codes[0] = 0
    return codes.to(torch.uint8)


_ROW_LUT, _COL_LUT = _size_lut(_ROW_SIZES), _size_lut(_COL_SIZES)
_LUTS = {"cpu": (_ROW_LUT, _COL_LUT)}


def _size_luts(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The row and column size-code tables on `device` (copied once per device)."""
    key = str(device)
    if key not in _LUTS:
        _LUTS[key] = (_ROW_LUT.to(device), _COL_LUT.to(device))
    return _LUTS[key]
# Smallest positive float32 (subnormal): `w + _TINY > 0` is exactly `w >= 0`.
_TINY = torch.finfo(torch.float32).smallest_normal * torch.finfo(torch.float32).eps
_HUGE = 3e38


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


def _edge_setup(x0, y0, x1, y1, x2, y2, front_facing=False):
    """Inside-positive, shared-edge-consistent edge functions of triangles (1D tensors).

    For edge k (from vertex a = k+1 to b = k+2, opposite vertex k) returns per face
    ``dx, dy, sx, sy, thr`` such that the edge function at a point p is

        w_k = dx * (2 p_y - sy) - dy * (2 p_x - sx)     (= 2 (d x (p - midpoint)))

    with ``d = (b - a) * sign(area)`` (so w > 0 inside, whatever the winding) and
    ``sx = ax + bx``, ``sy = ay + by``. The formula is symmetric in a and b except for
    the sign of d, so the two triangles sharing an edge compute exactly opposite w
    (IEEE +, -, * are sign-symmetric and + is commutative): no gaps, no overlaps.
    ``thr`` is ``-tiny`` (the smallest subnormal) for "tie" edges and 0 otherwise; the
    test ``w - thr > 0`` means ``w > 0``, or ``w >= 0`` on tie edges. Tie edges are
    those whose direction d has ``dy > 0``, or ``dy == 0`` and ``dx < 0``: of the two
    triangles on either side of an edge exactly one owns the centres lying on it.
    Also returns the signed doubled area ``(v1 - v0) x (v2 - v0)``, or None when the caller
    states that every face is ``front_facing`` (area < 0, as after back-face culling): then
    ``d = a - b``, the same bits as ``(b - a) * -1``, without the area and the products.
    """
    xs, ys = (x0, x1, x2), (y0, y1, y2)
    area = None if front_facing else (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
    sgn = None if front_facing else torch.sign(area)
    out = []
    for k in range(3):
        ax, ay = xs[(k + 1) % 3], ys[(k + 1) % 3]
        bx, by = xs[(k + 2) % 3], ys[(k + 2) % 3]
        if front_facing:
            dx, dy = ax - bx, ay - by
        else:
            dx, dy = (bx - ax) * sgn, (by - ay) * sgn
        # tie <=> 2 sign(dy) - sign(dx) > 0; all in float arithmetic (no masks: faster).
        thr = (2.0 * torch.sign(dy) - torch.sign(dx)).clamp_(0.0, 1.0).mul_(-_TINY)
        out.append((dx, dy, ax + bx, ay + by, thr))
    return out, area


def _denormals_are_zero(device: torch.device) -> bool:
    """True if float32 denormals are flushed to zero on `device` (on the CPU after
    ``torch.set_flush_denormal(True)``)."""
    t = torch.tensor([0.0, _TINY], dtype=torch.float32, device=device)
    return not bool((t[0] + t[1]) > 0)


def _gather_corners(verts: torch.Tensor, vert_idx: torch.Tensor):
    """Corner coordinates ``(x, y, z)``, each (3, N): ``x[k, i] = verts.view(-1, 3)[vert_idx[k, i], 0]``.

    verts: (B, V, 3); vert_idx: (3, N) flat vertex indices (b * V + v). One gather per
    coordinate from a (3, B*V) copy keeps every output contiguous (and temporaries small).
    """
    vt = verts.permute(2, 0, 1).reshape(3, -1)
    flat = vert_idx.reshape(-1)
    return [vt[c].index_select(0, flat).view(3, -1) for c in range(3)]


def _box(x0, x1, x2, y0, y1, y2, height, width):
    """First pixel column/row whose centre is in the triangle's box, and (count - 1)."""
    c0 = torch.ceil(torch.minimum(torch.minimum(x0, x1), x2) - 0.5).clamp_(min=0)
    ncols = torch.floor(torch.maximum(torch.maximum(x0, x1), x2) - 0.5).clamp_(max=width - 1).sub_(c0)
    r0 = torch.ceil(torch.minimum(torch.minimum(y0, y1), y2) - 0.5).clamp_(min=0)
    nrows = torch.floor(torch.maximum(torch.maximum(y0, y1), y2) - 0.5).clamp_(max=height - 1).sub_(r0)
    return c0, r0, ncols, nrows


def _face_corner_coords(verts32: torch.Tensor, faces: torch.Tensor) -> list[torch.Tensor]:
    """Corner coordinates of every face in every view: per corner k a (F, 3, B) tensor
    (coordinates x, y, z, then views).

    The batch is the innermost axis: the vertices are laid out (V, 3, B), so each face
    corner is one contiguous row copy of 3 B values (a fast gather), and the index is the
    shared face list itself (no (B*F) flat index to build). The (F, B) views are strided
    across rows but contiguous along B, which elementwise ops handle at full speed.
    """
    n_verts, batch = verts32.shape[1], verts32.shape[0]
    vt = verts32.permute(1, 2, 0).reshape(n_verts, 3 * batch)  # (V, 3 B), one copy
    return [vt.index_select(0, faces[:, k]).view(-1, 3, batch) for k in range(3)]


def _facing_faces(corners: torch.Tensor, cull_backfaces: bool) -> torch.Tensor:
    """Flat indices (into F*B, face-major) of the faces whose 2D area passes the cull: < 0
    (front-facing) when culling back faces, else != 0. NaN fails.

    Done first, on the area alone (5 ops over all B*F faces), so that every later per-face
    step runs on the faces that remain (about half of a closed head when culling).
    """
    (x0, y0), (x1, y1), (x2, y2) = ((c[:, 0], c[:, 1]) for c in corners)
    area = (x1 - x0).mul_(y2 - y0).sub_((y1 - y0).mul_(x2 - x0))
    keep = area < 0 if cull_backfaces else area != 0
    return keep.view(-1).nonzero().squeeze(1)


def _corner_offsets(sel: torch.Tensor, batch: int):
    """Face index and corner-block offset of flat (face * B + view) indices.

    In a corner's (F, 3, B) block, x of (face, view) sits at ``face * 3 B + view``; its y and z
    sit B and 2 B further, i.e. at the same offset in the flat block shifted by B or 2 B (the
    ``coords`` views of :func:`_visible_faces_torch`), so one offset array serves all 9 gathers.
    """
    fid = torch.div(sel, batch, rounding_mode="floor")
    return fid, fid.mul(2 * batch).add_(sel)


# The visibility pass on the CPU: "compiled" (face3d.raster_cpu, Numba), "torch" (the reference
# below, also the path on CUDA) or "auto", the default: the PyTorch pass until the process has
# rasterized COMPILE_AFTER_FACES face-views, then the compiled one. Loading Numba and its cached
# machine code takes about 0.3-0.4 s, more than the compiled pass saves a one-photo `rotate` (a
# dense fit and 9 views, about 1.1M face-views); a batch job passes the mark within its first
# photos. Both passes give the same result, bit for bit, so the switch changes no output.
# FACESYNTH_CPU_VISIBILITY sets the mode (another value is refused with a FaceSynthError at the
# first CPU rasterization); tests set CPU_VISIBILITY to compare the two.
CPU_VISIBILITY_MODES = ("auto", "compiled", "torch")
CPU_VISIBILITY = os.environ.get("FACESYNTH_CPU_VISIBILITY", "auto")
COMPILE_AFTER_FACES = 3_000_000
_faces_rasterized = 0


def _use_compiled(n_face_views: int) -> bool:
    global _faces_rasterized
    if CPU_VISIBILITY not in CPU_VISIBILITY_MODES:
        raise FaceSynthError(f"FACESYNTH_CPU_VISIBILITY={CPU_VISIBILITY!r}: expected one of "
                             f"{', '.join(CPU_VISIBILITY_MODES)}")
    if CPU_VISIBILITY != "auto":
        return CPU_VISIBILITY == "compiled"
    _faces_rasterized += n_face_views
    return _faces_rasterized > COMPILE_AFTER_FACES or "face3d.raster_cpu" in sys.modules


def _compiled_pass():
    """face3d.raster_cpu, or None where Numba does not import (the reference then serves)."""
    try:   # deferred: importing Numba and loading its cached code takes 0.3-0.4 s (see above)
        from face3d import raster_cpu
    except ImportError:
        return None
    return raster_cpu


@torch.no_grad()
def _visible_faces_torch(verts_screen, faces, height, width, cull_backfaces, perspective_correct):
    """Covered pixels (flat indices into B*H*W, increasing) and their visible face index.

    Written with float arithmetic rather than boolean masks / torch.where where
    possible: on CPU the latter are an order of magnitude slower per element.
    """
    batch = verts_screen.shape[0]
    n_pix = height * width
    # ---- Per-face stage: corners of all B*F faces, the area cull, then the rest on the kept. ----
    verts32 = verts_screen.detach().to(torch.float32)
    corners = _face_corner_coords(verts32, faces)
    coords = [c.view(-1)[i * batch:] for c in corners for i in range(3)]  # x0, y0, z0, x1, ...
    if cull_backfaces:  # about half the faces go: the rest of the stage runs on the others
        sel = _facing_faces(corners, cull_backfaces)
        fid, at = _corner_offsets(sel, batch)
        x0, y0, x1, y1, x2, y2 = (coords[i].index_select(0, at) for i in (0, 1, 3, 4, 6, 7))
    else:  # nearly all faces have a nonzero area: the (F, B) views as they are, no compaction
        sel = None
        (x0, y0), (x1, y1), (x2, y2) = ((c[:, 0], c[:, 1]) for c in corners)
    c0, r0, ncols, nrows = (t.reshape(-1) for t in _box(x0, x1, x2, y0, y1, y2, height, width))
    # Kept: a pixel centre in the box, all z > 0, nonzero area (front-facing ones passed above).
    # NaNs fail. The depth test is skipped when every vertex is in front of the camera.
    crit = torch.minimum(ncols, nrows).add_(0.5)
    if not bool((verts32[..., 2] > 0).all()):
        z0, z1, z2 = ((coords[i].index_select(0, at) for i in (2, 5, 8)) if sel is not None
                      else (c[:, 2] for c in corners))
        crit = torch.minimum(crit, torch.minimum(torch.minimum(z0, z1), z2).reshape(-1))
    if sel is None:
        crit = torch.minimum(crit, ((x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)).abs_().view(-1))
    keep = (crit > 0).nonzero().squeeze(1)
    if keep.numel() == 0:
        return (torch.zeros(0, dtype=torch.int64, device=verts32.device),
                torch.zeros(0, dtype=torch.int64, device=verts32.device))
    # Sort the kept faces by box shape code so that each bucket is evaluated as one dense
    # (rows, cols, faces) block.
    c0, r0, ncols, nrows = (t.index_select(0, keep) for t in (c0, r0, ncols, nrows))
    row_lut, col_lut = _size_luts(verts32.device)
    code_r = row_lut.index_select(0, nrows.to(torch.int32).add_(1))
    code_c = col_lut.index_select(0, ncols.to(torch.int32).add_(1))
    sort_key, order = torch.sort(code_r.mul_(16).add_(code_c), stable=True)
    bucket_ids, bucket_counts = torch.unique_consecutive(sort_key, return_counts=True)
    keep = keep.index_select(0, order)
    if sel is None:
        sel = keep
        fid, at = _corner_offsets(sel, batch)
    else:
        sel, fid, at = sel.index_select(0, keep), fid.index_select(0, keep), at.index_select(0, keep)
    x0, y0, z0, x1, y1, z1, x2, y2, z2 = (coords[i].index_select(0, at) for i in range(9))
    c0, r0, ncols, nrows = (t.index_select(0, order) for t in (c0, r0, ncols, nrows))
    edges, _ = _edge_setup(x0, y0, x1, y1, x2, y2, front_facing=cull_backfaces)
    zz = [z0.reciprocal(), z1.reciprocal(), z2.reciprocal()] if perspective_correct else [z0, z1, z2]
    # Face index and first-pixel offset of each kept face (flat index = face * B + view).
    base = (sel - fid * batch).mul_(n_pix)
    if n_pix < (1 << 24):  # float32 is exact here
        base += (r0 * width + c0).to(torch.int64)
    else:
        base += r0.to(torch.int64) * width + c0.to(torch.int64)
    px2, py2 = c0.mul_(2).add_(1), r0.mul_(2).add_(1)  # twice the first pixel centre
    # with denormals flushed to zero, `w - thr > 0` would not mean `w >= 0` on tie edges
    scan = _visible_faces_fallback if _denormals_are_zero(verts32.device) else _visible_faces_bucketed
    return scan(edges, zz, fid, base, px2, py2, ncols, nrows, bucket_ids, bucket_counts, batch * n_pix, width,
                perspective_correct)


def _bucket_blocks(bucket_ids: list[int], bucket_counts: list[int], nrows, ncols) -> list[tuple]:
    """The dense blocks the scan evaluates: ``(start, count, rows, cols, pad_rows, pad_cols)``.

    One block per bucket, trimmed to the largest box present (for the coarse codes), except
    that consecutive buckets are merged into one block of their largest shape while that
    costs at most ``_MERGE_SLOTS`` extra (padding) slots: each block costs some 60 tensor
    calls, so a bucket of a few dozen faces is cheaper as padding in its neighbour's block.
    ``pad_*`` says that a block holds boxes smaller than its shape (their extra slots must
    be made empty); buckets of sizes up to ``_EXACT_SIZES`` hold boxes of exactly that size.
    """
    blocks, start = [], 0
    for b, cnt in zip(bucket_ids, bucket_counts):
        n_r, n_c = _ROW_SIZES[b // 16], _COL_SIZES[b % 16]
        if n_r > 16:
            n_r = int(nrows[start:start + cnt].max()) + 1
        if n_c > 16:
            n_c = int(ncols[start:start + cnt].max()) + 1
        new = (start, cnt, n_r, n_c, n_r > _EXACT_SIZES, n_c > _EXACT_SIZES)
        start += cnt
        if blocks:
            s0, c0, r0, k0, pr0, pc0 = blocks[-1]
            rows, cols = max(r0, n_r), max(k0, n_c)
            if (c0 + cnt) * rows * cols - c0 * r0 * k0 - cnt * n_r * n_c <= _MERGE_SLOTS:
                blocks[-1] = (s0, c0 + cnt, rows, cols, pr0 or new[4] or r0 != n_r, pc0 or new[5] or k0 != n_c)
                continue
        blocks.append(new)
    return blocks


def _visible_faces_bucketed(edges, zz, fid, base, px2, py2, ncols, nrows, bucket_ids, bucket_counts,
                            n_pix_total, width, perspective_correct):
    """The nearest face at each pixel of the kept faces' boxes (sorted by bucket, see
    :func:`_visible_faces_torch`): (covered pixels, their face index).

    Tie edges are decided by ``w - thr > 0``, which is ``w >= 0`` only with denormals
    (:func:`_visible_faces_fallback` serves where they are flushed to zero).
    """
    blocks = _bucket_blocks(bucket_ids.tolist(), bucket_counts.tolist(), nrows, ncols)
    max_rows, max_cols = max(b[2] for b in blocks), max(b[3] for b in blocks)
    # Pixel buffer padded so that slots past the end of a box never index out of range
    # (those slots are never inside, they only carry an empty key).
    device = fid.device
    keys = torch.full((n_pix_total + max_rows * width + max_cols,), _EMPTY_KEY, dtype=torch.int64, device=device)

    # ---- Each bucket is a dense (rows, cols, faces) block, faces innermost. ----
    for start, cnt, n_r, n_c, pad_r, pad_c in blocks:
        step = max(1, _MAX_SLOTS_PER_CHUNK // (n_r * n_c))
        rr = torch.arange(n_r, dtype=torch.float32, device=device).view(n_r, 1)
        cc = torch.arange(n_c, dtype=torch.float32, device=device).view(n_c, 1)
        offs = (torch.arange(n_r, device=device).view(n_r, 1, 1) * width
                + torch.arange(n_c, device=device).view(1, n_c, 1))
        for lo in range(start, start + cnt, step):
            s = slice(lo, min(lo + step, start + cnt))
            ys = py2[s] + 2 * rr  # (R, n): twice the pixel-centre y of each box row
            xs = px2[s] + 2 * cc  # (C, n)
            u = None
            w = []
            for k, (dx, dy, sx, sy, thr) in enumerate(edges):
                # Separable edge function: w = dx*(2py - sy) - dy*(2px - sx) = Y[row] - X[col].
                y_term = dx[s] * (ys - sy[s])
                x_term = dy[s] * (xs - sx[s])
                # slots past the actual box get w0 = -inf: never inside (blocks of boxes of one
                # exact size have no such slots)
                if k == 0 and pad_r:
                    y_term += (nrows[s] - rr).clamp_(max=0) * _HUGE
                if k == 0 and pad_c:
                    x_term -= (ncols[s] - cc).clamp_(max=0) * _HUGE
                w.append(y_term.unsqueeze(1) - x_term.unsqueeze(0))  # (R, C, n)
                margin = w[k] - thr[s]  # > 0 iff the centre is on the inner side of edge k
                u = margin if u is None else torch.minimum(u, margin, out=u)
            num = w[0] * zz[0][s] + w[1] * zz[1][s] + w[2] * zz[2][s]
            wsum = w[0] + w[1] + w[2]
            depth = wsum.div_(num) if perspective_correct else num.div_(wsum)
            # Outside (u <= 0 or NaN): divide by 0 / NaN -> inf or NaN, i.e. an empty key.
            depth.div_(u.sign_().clamp_(min=0)).abs_()
            # Positive float32 bit patterns order like integers: (depth, face) in one int64.
            key = depth.view(torch.int32).to(torch.int64).bitwise_left_shift_(32).bitwise_or_(fid[s])
            keys.scatter_reduce_(0, (base[s] + offs).view(-1), key.view(-1), reduce="amin")

    keys = keys[:n_pix_total]
    covered = (keys < (_INF_BITS << 32)).nonzero().squeeze(1)
    return covered, keys.index_select(0, covered).bitwise_and_(0xFFFFFFFF)


def _visible_faces_fallback(edges, zz, fid, base, px2, py2, ncols, nrows, bucket_ids, bucket_counts,
                            n_pix_total, width, perspective_correct):
    """Same as :func:`_visible_faces_bucketed`, with boolean tie tests.

    Used when denormals are flushed to zero (then ``w + tiny > 0`` is not ``w >= 0``).
    Simple (one pixel per row of a (face, pixel) list) rather than fast.
    """
    device = fid.device
    counts = ((nrows + 1) * (ncols + 1)).to(torch.int64)
    pf = torch.repeat_interleave(torch.arange(fid.numel(), device=device), counts)
    local = torch.arange(pf.numel(), device=device) - (counts.cumsum(0) - counts)[pf]
    nc = (ncols + 1).to(torch.int64)[pf]
    row, col = local // nc, local % nc
    ys, xs = py2[pf] + 2 * row, px2[pf] + 2 * col
    inside = torch.ones(pf.numel(), dtype=torch.bool, device=device)
    w = []
    for dx, dy, sx, sy, _ in edges:
        dx, dy = dx[pf], dy[pf]
        wk = dx * (ys - sy[pf]) - dy * (xs - sx[pf])
        tie = (dy > 0) | ((dy == 0) & (dx < 0))
        inside &= (wk > 0) | ((wk == 0) & tie)
        w.append(wk)
    num = w[0] * zz[0][pf] + w[1] * zz[1][pf] + w[2] * zz[2][pf]
    wsum = w[0] + w[1] + w[2]
    depth = wsum / num if perspective_correct else num / wsum
    inside &= torch.isfinite(depth)
    key = (depth.view(torch.int32).to(torch.int64) << 32) | fid[pf]
    keys = torch.full((n_pix_total,), _EMPTY_KEY, dtype=torch.int64, device=device)
    keys.scatter_reduce_(0, (base[pf] + row * width + col)[inside], key[inside], reduce="amin")
    covered = (keys != _EMPTY_KEY).nonzero().squeeze(1)
    return covered, keys[covered] & 0xFFFFFFFF


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
    height, width = _image_hw(image_size)
    device = verts_screen.device
    faces = faces.to(device=device, dtype=torch.int64)
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= verts_screen.shape[1]):
        raise IndexError("faces index out of range of verts_screen")
    batch, n_verts, _ = verts_screen.shape
    n_pix = height * width
    if not verts_screen.is_floating_point():
        verts_screen = verts_screen.to(torch.float32)
    verts_screen = verts_screen.contiguous()
    dtype = verts_screen.dtype

    compiled = (_compiled_pass() if device.type == "cpu" and _use_compiled(batch * faces.shape[0]) else None)
    if compiled is not None and dtype == torch.float32 and not (verts_screen.requires_grad and torch.is_grad_enabled()):
        # nothing to differentiate: the compiled pass also gives the depth and barycentrics (same bits)
        pix_to_face, zbuf, bary = compiled.fragments_compiled(verts_screen.detach(), faces, height, width,
                                                              cull_backfaces, perspective_correct)
        return Fragments(pix_to_face=pix_to_face, zbuf=zbuf, bary_coords=bary)
    if compiled is not None:
        covered, f = compiled.visible_faces_compiled(verts_screen.detach().to(torch.float32), faces, height,
                                                     width, cull_backfaces, perspective_correct)
    else:
        covered, f = _visible_faces_torch(verts_screen, faces, height, width, cull_backfaces, perspective_correct)
    pix_to_face = torch.full((batch * n_pix,), -1, dtype=torch.int64, device=device).index_put_((covered,), f)

    # ---- Differentiable recomputation, for the covered pixels only. ----
    b = torch.div(covered, n_pix, rounding_mode="floor")
    p = covered - b * n_pix
    r = torch.div(p, width, rounding_mode="floor")
    px = (p - r * width).to(dtype).add_(0.5)
    py = r.to(dtype).add_(0.5)
    b *= n_verts
    faces_t = faces.t().contiguous()
    vert_idx = torch.stack([faces_t[k].index_select(0, f).add_(b) for k in range(3)])  # (3, P)
    (x0, x1, x2), (y0, y1, y2), (z0, z1, z2) = (t.unbind(0) for t in _gather_corners(verts_screen, vert_idx))
    # Raw edge functions w_k = (v_{k+2} - v_{k+1}) x (p - v_{k+1}); their common sign
    # (the winding) cancels in the ratios below.
    w0 = (x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)
    w1 = (x0 - x2) * (py - y2) - (y0 - y2) * (px - x2)
    w2 = (x1 - x0) * (py - y0) - (y1 - y0) * (px - x0)
    wsum = w0 + w1 + w2
    if perspective_correct:
        q = (w0 / z0, w1 / z1, w2 / z2)
        qsum = q[0] + q[1] + q[2]
        bary = [qk / qsum for qk in q]
        depth = wsum / qsum
    else:
        bary = [w0 / wsum, w1 / wsum, w2 / wsum]
        depth = (w0 * z0 + w1 * z1 + w2 * z2) / wsum

    # In-place scatter into fresh buffers (differentiable w.r.t. the scattered values).
    zbuf = torch.full((batch * n_pix,), -1.0, dtype=dtype, device=device).index_put_((covered,), depth)
    bary_full = torch.zeros((batch * n_pix, 3), dtype=dtype, device=device).index_put_((covered,), torch.stack(bary, 1))
    return Fragments(
        pix_to_face=pix_to_face.view(batch, height, width),
        zbuf=zbuf.view(batch, height, width),
        bary_coords=bary_full.view(batch, height, width, 3),
    )


def _interpolate(fragments: Fragments, corner_values_fn) -> torch.Tensor:
    """Shared body: corner_values_fn(batch_of_pixel, face_of_pixel) -> (P, 3, C) values."""
    batch, height, width = fragments.pix_to_face.shape
    covered, out_vals = _interpolate_covered(fragments, corner_values_fn)
    channels = out_vals.shape[-1]
    out = torch.zeros((batch * height * width, channels), dtype=out_vals.dtype, device=out_vals.device)
    return out.index_put_((covered,), out_vals).view(batch, height, width, channels)


def _interpolate_covered(fragments: Fragments, corner_values_fn) -> tuple[torch.Tensor, torch.Tensor]:
    """The covered pixels (P,) (flat indices into B*H*W, increasing) and their values (P, C)."""
    _, height, width = fragments.pix_to_face.shape
    p2f = fragments.pix_to_face.reshape(-1)
    covered = (p2f >= 0).nonzero().squeeze(1)
    bary = fragments.bary_coords.reshape(-1, 3).index_select(0, covered)  # (P, 3)
    vals = corner_values_fn(lambda: torch.div(covered, height * width, rounding_mode="floor"),
                            p2f.index_select(0, covered))
    return covered, (bary.unsqueeze(-1).to(vals.dtype) * vals).sum(1)


def interpolate_vertex_attributes(fragments: Fragments, faces: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
    """Interpolate per-vertex attributes (B, V, C) or (V, C) to (B, H, W, C); zeros where empty.

    Differentiable w.r.t. ``attributes`` and, through ``fragments.bary_coords``, the vertices.
    """
    return _interpolate(fragments, _vertex_corner_values(faces, attributes))


def interpolate_vertex_attributes_covered(fragments: Fragments, faces: torch.Tensor,
                                          attributes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`interpolate_vertex_attributes` on the covered pixels alone: (covered, values), the flat
    indices (P,) into B*H*W of the pixels a face covers, increasing (so grouped by mesh), and their
    values (P, C), the same numbers as the full image's at those pixels. For a loss over the
    covered pixels, which need not then run over the empty ones."""
    return _interpolate_covered(fragments, _vertex_corner_values(faces, attributes))


def _vertex_corner_values(faces: torch.Tensor, attributes: torch.Tensor):
    """`_interpolate`'s corner_values_fn for per-vertex attributes (B, V, C) or (V, C)."""
    faces = faces.to(device=attributes.device, dtype=torch.int64)
    n_verts, channels = attributes.shape[-2:]

    def corner_values(batch_idx, f):
        vidx = faces.index_select(0, f)  # (P, 3)
        if attributes.dim() == 2:
            return attributes.index_select(0, vidx.view(-1)).view(-1, 3, channels)
        vidx = vidx + (batch_idx() * n_verts).unsqueeze(1)
        return attributes.reshape(-1, channels).index_select(0, vidx.view(-1)).view(-1, 3, channels)

    return corner_values


def interpolate_face_attributes(fragments: Fragments, face_attributes: torch.Tensor) -> torch.Tensor:
    """Interpolate per-corner face attributes (F, 3, C) or (B, F, 3, C) (e.g. UVs with seams)
    to (B, H, W, C); zeros where empty. Differentiable w.r.t. the attributes and the vertices."""
    n_faces, _, channels = face_attributes.shape[-3:]

    def corner_values(batch_idx, f):
        if face_attributes.dim() == 3:
            return face_attributes.index_select(0, f)
        return face_attributes.reshape(-1, 3, channels).index_select(0, batch_idx() * n_faces + f)

    return _interpolate(fragments, corner_values)
