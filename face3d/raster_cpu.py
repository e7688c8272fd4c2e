"""The rasterizer's visibility pass compiled for the CPU (Numba): which face is nearest at each pixel.

`face3d.rasterizer` decides visibility with vectorised PyTorch (`_visible_faces_torch`, the
reference, and the path on CUDA). On the CPU most of that time goes to gathers and to dense blocks
of candidate pixels; a compiled loop over the faces of each view, with a z-buffer, does the same
work in about a quarter of the time (a batch of views is split between torch's thread count of
threads; the kernel releases the GIL). It computes the same float32 numbers in the same order as
the reference (the separable edge functions, the tie rule on shared edges, the depth; the nearest
depth, then the smallest face, at each pixel), so it returns the same pixels and faces, bit for
bit: tests/test_rasterizer.py runs every test on both passes, tests/test_raster_cpu.py compares
them on the head and on non-finite vertices.

Numba compiles on the first call and caches the machine code (``cache=True``: beside this file, or
in Numba's user cache where that is not writable); a later process loads it in a few hundred ms.
"""
from __future__ import annotations

import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import torch


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _zbuffer(verts, faces, height, width, cull_backfaces, perspective_correct, zbuf, face_of):
    """Fill ``zbuf`` (B*H*W float32, +inf) and ``face_of`` (B*H*W int64, -1) with the nearest depth and
    its face at each pixel centre. verts: (B, V, 3) float32; faces: (F, 3) int64.

    The reference reduces keys ``(depth bits << 32) | face`` with a minimum: the nearest depth, then
    the smallest face. Faces are visited in increasing index per view, so a strict ``<`` on the depth
    gives that order without the keys."""
    one, two, half = np.float32(1.0), np.float32(2.0), np.float32(0.5)
    zero = np.float32(0.0)
    n_pix = height * width
    for b in range(verts.shape[0]):
        for f in range(faces.shape[0]):
            i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
            x0, y0 = verts[b, i0, 0], verts[b, i0, 1]
            x1, y1 = verts[b, i1, 0], verts[b, i1, 1]
            x2, y2 = verts[b, i2, 0], verts[b, i2, 1]
            # every comparison below is False for NaN, which drops the face as the reference does
            area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
            if cull_backfaces:
                if not (area < zero):
                    continue
            elif not (area > zero or area < zero):
                continue
            c0 = max(np.ceil(min(min(x0, x1), x2) - half), zero)
            cmax = min(np.floor(max(max(x0, x1), x2) - half), np.float32(width - 1))
            r0 = max(np.ceil(min(min(y0, y1), y2) - half), zero)
            rmax = min(np.floor(max(max(y0, y1), y2) - half), np.float32(height - 1))
            if not (cmax >= c0 and rmax >= r0):
                continue
            z0, z1, z2 = verts[b, i0, 2], verts[b, i1, 2], verts[b, i2, 2]
            if not (z0 > zero and z1 > zero and z2 > zero):
                continue
            # Edge k runs from vertex a = k+1 to b = k+2: w_k = dx (2 py - sy) - dy (2 px - sx), with
            # (dx, dy) = (b - a) * sign(area) (= a - b for the front faces kept by the cull).
            if cull_backfaces:
                dx0, dy0 = x1 - x2, y1 - y2
                dx1, dy1 = x2 - x0, y2 - y0
                dx2, dy2 = x0 - x1, y0 - y1
            else:
                sgn = one if area > zero else -one
                dx0, dy0 = (x2 - x1) * sgn, (y2 - y1) * sgn
                dx1, dy1 = (x0 - x2) * sgn, (y0 - y2) * sgn
                dx2, dy2 = (x1 - x0) * sgn, (y1 - y0) * sgn
            sx0, sy0 = x1 + x2, y1 + y2
            sx1, sy1 = x2 + x0, y2 + y0
            sx2, sy2 = x0 + x1, y0 + y1
            # tie edges (dy > 0, or dy == 0 and dx < 0) own the centres that lie on them
            tie0 = dy0 > zero or (dy0 == zero and dx0 < zero)
            tie1 = dy1 > zero or (dy1 == zero and dx1 < zero)
            tie2 = dy2 > zero or (dy2 == zero and dx2 < zero)
            if perspective_correct:
                q0, q1, q2 = one / z0, one / z1, one / z2
            else:
                q0, q1, q2 = z0, z1, z2
            px2, py2 = c0 * two + one, r0 * two + one  # twice the first pixel centre
            nr, nc = int(rmax - r0) + 1, int(cmax - c0) + 1
            base = b * n_pix + int(r0) * width + int(c0)
            for r in range(nr):
                ys = py2 + two * np.float32(r)
                yt0, yt1, yt2 = dx0 * (ys - sy0), dx1 * (ys - sy1), dx2 * (ys - sy2)
                row = base + r * width
                for c in range(nc):
                    xs = px2 + two * np.float32(c)
                    w0 = yt0 - dy0 * (xs - sx0)
                    if not (w0 > zero or (w0 == zero and tie0)):
                        continue
                    w1 = yt1 - dy1 * (xs - sx1)
                    if not (w1 > zero or (w1 == zero and tie1)):
                        continue
                    w2 = yt2 - dy2 * (xs - sx2)
                    if not (w2 > zero or (w2 == zero and tie2)):
                        continue
                    num = w0 * q0 + w1 * q1 + w2 * q2
                    wsum = w0 + w1 + w2
                    depth = abs(wsum / num) if perspective_correct else abs(num / wsum)
                    # the nearest depth wins; at equal depths the first face (the smallest index)
                    # keeps the pixel; inf and NaN stay empty (the reference's key order)
                    if depth < zbuf[row + c]:
                        zbuf[row + c] = depth
                        face_of[row + c] = f


def _nearest_faces(verts: np.ndarray, faces: np.ndarray, height: int, width: int, cull_backfaces: bool,
                   perspective_correct: bool) -> np.ndarray:
    """The visible face at each pixel, (B, H*W) int64, -1 where empty (`_zbuffer` over the views)."""
    batch = verts.shape[0]
    zbuf = np.full((batch, height * width), np.inf, dtype=np.float32)
    face_of = np.full((batch, height * width), -1, dtype=np.int64)
    args = (height, width, bool(cull_backfaces), bool(perspective_correct))
    threads = min(batch, torch.get_num_threads())
    if threads < 2:
        _zbuffer(verts, faces, *args, zbuf.reshape(-1), face_of.reshape(-1))
        return face_of
    # The kernel releases the GIL (nogil): this thread and threads - 1 others take slices of a few
    # views each from a queue, each writing its own views' rows of the buffers. Small slices balance
    # the load when a core is busy.
    cuts = np.unique(np.linspace(0, batch, 4 * threads + 1).astype(int))
    todo = queue.SimpleQueue()
    for a, b in zip(cuts[:-1], cuts[1:]):
        todo.put((verts[a:b], faces, *args, zbuf[a:b].reshape(-1), face_of[a:b].reshape(-1)))

    def work():
        while True:
            try:
                part = todo.get_nowait()
            except queue.Empty:
                return
            _zbuffer(*part)

    jobs = [_pool(threads - 1).submit(work) for _ in range(threads - 1)]
    work()
    for job in jobs:
        job.result()
    return face_of


def visible_faces_compiled(verts32: torch.Tensor, faces: torch.Tensor, height: int, width: int,
                           cull_backfaces: bool, perspective_correct: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Covered pixels (flat indices into B*H*W, increasing) and their visible face index, for float32
    CPU vertices (B, V, 3) and faces (F, 3) int64: `face3d.rasterizer._visible_faces_torch`'s output."""
    face_of = _nearest_faces(np.ascontiguousarray(verts32.numpy()), np.ascontiguousarray(faces.numpy()),
                             height, width, cull_backfaces, perspective_correct)
    covered, face = _covered_pixels(face_of.reshape(-1))
    return torch.from_numpy(covered), torch.from_numpy(face)


def fragments_compiled(verts32: torch.Tensor, faces: torch.Tensor, height: int, width: int,
                       cull_backfaces: bool, perspective_correct: bool):
    """pix_to_face (B, H, W), zbuf (B, H, W) and bary_coords (B, H, W, 3) for float32 CPU vertices that
    need no gradient: `face3d.rasterizer.rasterize_meshes`'s fragments, the barycentrics and depth
    computed in the same float32 steps as its recomputation (so the same bits), without autograd."""
    verts = np.ascontiguousarray(verts32.numpy())
    faces_np = np.ascontiguousarray(faces.numpy())
    face_of = _nearest_faces(verts, faces_np, height, width, cull_backfaces, perspective_correct)
    batch = verts.shape[0]
    zbuf = np.empty((batch, height, width), dtype=np.float32)
    bary = np.empty((batch, height, width, 3), dtype=np.float32)
    _barycentrics(verts, faces_np, face_of.reshape(-1), width, bool(perspective_correct), zbuf.reshape(-1),
                  bary.reshape(-1, 3))
    return (torch.from_numpy(face_of).view(batch, height, width), torch.from_numpy(zbuf), torch.from_numpy(bary))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _barycentrics(verts, faces, face_of, width, perspective_correct, zbuf, bary):
    """Depth and barycentrics of each covered pixel centre in its face (-1 and 0 where empty), in the
    float32 steps of `rasterize_meshes`'s recomputation: raw edge functions
    w_k = (v_{k+2} - v_{k+1}) x (p - v_{k+1}), then the (perspective-correct) ratios."""
    half = np.float32(0.5)
    n_pix = zbuf.shape[0] // verts.shape[0]
    for i in range(face_of.shape[0]):
        f = face_of[i]
        if f < 0:
            zbuf[i] = np.float32(-1.0)
            bary[i, 0] = bary[i, 1] = bary[i, 2] = np.float32(0.0)
            continue
        b = i // n_pix
        p = i - b * n_pix
        r = p // width
        px = np.float32(p - r * width) + half
        py = np.float32(r) + half
        i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
        x0, y0, z0 = verts[b, i0, 0], verts[b, i0, 1], verts[b, i0, 2]
        x1, y1, z1 = verts[b, i1, 0], verts[b, i1, 1], verts[b, i1, 2]
        x2, y2, z2 = verts[b, i2, 0], verts[b, i2, 1], verts[b, i2, 2]
        w0 = (x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)
        w1 = (x0 - x2) * (py - y2) - (y0 - y2) * (px - x2)
        w2 = (x1 - x0) * (py - y0) - (y1 - y0) * (px - x0)
        wsum = w0 + w1 + w2
        if perspective_correct:
            q0, q1, q2 = w0 / z0, w1 / z1, w2 / z2
            qsum = q0 + q1 + q2
            bary[i, 0], bary[i, 1], bary[i, 2] = q0 / qsum, q1 / qsum, q2 / qsum
            zbuf[i] = wsum / qsum
        else:
            bary[i, 0], bary[i, 1], bary[i, 2] = w0 / wsum, w1 / wsum, w2 / wsum
            zbuf[i] = (w0 * z0 + w1 * z1 + w2 * z2) / wsum


@numba.njit(cache=True, nogil=True)
def _covered_pixels(face_of):
    """The covered pixels (flat indices, increasing) and their faces: one pass, no boolean image."""
    n = 0
    for i in range(face_of.shape[0]):
        n += face_of[i] >= 0
    covered = np.empty(n, dtype=np.int64)
    face = np.empty(n, dtype=np.int64)
    k = 0
    for i in range(face_of.shape[0]):
        if face_of[i] >= 0:
            covered[k] = i
            face[k] = face_of[i]
            k += 1
    return covered, face


_POOL: dict[int, ThreadPoolExecutor] = {}
_POOL_LOCK = threading.Lock()
# a forked child (a worker pool) has none of its parent's threads: it makes its own pool
os.register_at_fork(after_in_child=_POOL.clear)


def _pool(threads: int) -> ThreadPoolExecutor:
    """One thread pool per thread count, made on first use (torch's thread count sets it)."""
    with _POOL_LOCK:
        if threads not in _POOL:
            _POOL[threads] = ThreadPoolExecutor(threads, thread_name_prefix="raster")
        return _POOL[threads]
