"""Jaw contour correspondences: the model vertex that each detected jaw landmark matches.

dlib puts jaw landmarks 1-8 and 10-17 on the visible outline of the face, where no fixed model
vertex lies on a turned head; each is matched to the model vertex, among those near its
mean-shape vertex, that lies furthest out along the 2D outline normal (the occluding contour), as
eos does with its contour correspondences.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from face3d.landmarks import outer_eye_distance
from face3d.morphable_model import MorphableModel

JAW = np.arange(17)
CHIN = 8


@dataclass
class ContourIndex:
    """Per jaw landmark: candidate vertices near its mean-shape vertex (on the same side)."""

    candidates: list[np.ndarray]


def build_contour_index(model: MorphableModel, radius_mm: float = 22.0) -> ContourIndex:
    cache = model._torch_cache.get("_contour")
    if cache is not None:
        return cache
    lm = model.landmark_vertices
    mean = model.mean
    skin = np.nonzero(model.skin)[0]
    # the outline lives on the cheeks and jaw, in front of the ears
    cands = []
    fixed = lm[JAW]
    right, left = model.contour_candidates
    for k in JAW:
        if k == CHIN and lm[k] >= 0:
            cands.append(np.array([lm[k]]))
            continue
        if fixed[k] >= 0:
            anchors = np.array([fixed[k]])
        else:
            # no fixed vertex (the SFM): the whole contour line of that side; the silhouette
            # search below picks the point nearest to the detected landmark anyway
            anchors = right if k < CHIN else left
        if anchors.size == 0:
            cands.append(np.zeros(0, dtype=np.int64))
            continue
        # skin vertices within radius_mm of any anchor (a few thousand x at most a few dozen
        # distances: brute force, and no scipy import on the start-up path of every command)
        d2 = ((mean[skin][:, None, :] - mean[anchors][None, :, :]) ** 2).sum(-1).min(axis=1)
        sel = skin[d2 < radius_mm * radius_mm]
        side = np.sign(mean[anchors, 0].mean())
        if abs(mean[anchors, 0].mean()) > 5:
            sel = sel[np.sign(mean[sel, 0]) == side]
        cands.append(np.union1d(sel, anchors))
    idx = ContourIndex(cands)
    model._torch_cache["_contour"] = idx
    return idx


def _outline_normals(q: np.ndarray) -> np.ndarray:
    """Outward 2D normals of the detected jaw outline (17, 2)."""
    jaw = q[JAW]
    tang = np.gradient(jaw, axis=0)
    n = np.stack([tang[:, 1], -tang[:, 0]], axis=1)
    centre = q[27:36].mean(axis=0)  # nose: inside the face
    flip = np.sum(n * (jaw - centre), axis=1) < 0
    n[flip] *= -1
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-9)


def select_contour_vertices(model: MorphableModel, screen_of, q: np.ndarray, bin_frac: float = 0.015) -> np.ndarray:
    """For each jaw landmark, the occluding-contour vertex nearest to it.

    The candidates near the landmark are sliced across the outline's tangent; the outermost
    candidate of each slice (along the outline's outward normal) lies on the silhouette, and the
    slice point nearest to the detected landmark is its correspondence. Matching to the nearest
    silhouette point, not to a fixed vertex, stops the fit from sliding along the outline.
    """
    idx = build_contour_index(model)
    normals = _outline_normals(q)
    out = model.landmark_vertices.copy()
    allc = np.unique(np.concatenate([c for c in idx.candidates if c.size]))
    pts = screen_of(allc)  # (n, 2) numpy
    lookup = np.full(int(allc.max()) + 1, -1, dtype=np.int64)
    lookup[allc] = np.arange(allc.size)
    width = bin_frac * outer_eye_distance(q)
    for k in JAW:
        c = idx.candidates[k]
        if c.size <= 1:
            if c.size:
                out[k] = c[0]
            continue
        p = pts[lookup[c]]
        n = normals[k]
        tang = np.array([-n[1], n[0]])
        outer = p @ n
        slot = np.floor((p @ tang) / width).astype(np.int64)
        order = np.lexsort((-outer, slot))          # per slot, the outermost first
        first = np.ones(order.size, dtype=bool)
        first[1:] = slot[order][1:] != slot[order][:-1]
        sil = order[first]
        d = np.linalg.norm(p[sil] - q[k], axis=1)
        out[k] = c[sil[int(np.argmin(d))]]
    return out


def contour_candidate_vertices(model: MorphableModel) -> np.ndarray:
    """The vertices `select_contour_vertices` projects: every jaw landmark's candidates, sorted, once each."""
    idx = build_contour_index(model)
    return np.unique(np.concatenate([c for c in idx.candidates if c.size]))


def select_contour_vertices_batch(model: MorphableModel, screen: np.ndarray, q: np.ndarray,
                                  bin_frac: float = 0.015) -> np.ndarray:
    """`select_contour_vertices` for B faces at once: `screen` (B, C, 2) holds each face's pixel
    positions of `contour_candidate_vertices(model)`, `q` (B, 68, 2) its landmarks; returns (B, 68).

    The same rule, with the per-slot maximum and the nearest silhouette point found for all faces
    in one sort per jaw landmark: the candidates of every face are sorted by (face, slot, -outer),
    the first of each (face, slot) run is that slot's silhouette point, and the first silhouette
    point at each face's smallest distance is its match (the one-face sort's tie order)."""
    idx = build_contour_index(model)
    allc = contour_candidate_vertices(model)
    B = q.shape[0]
    lookup = np.full(int(allc.max()) + 1, -1, dtype=np.int64)
    lookup[allc] = np.arange(allc.size)
    jaw = q[:, JAW]
    tang = np.gradient(jaw, axis=1)
    normals = np.stack([tang[..., 1], -tang[..., 0]], axis=2)
    flip = np.sum(normals * (jaw - q[:, 27:36].mean(axis=1)[:, None]), axis=2) < 0
    normals[flip] *= -1
    normals = normals / np.maximum(np.linalg.norm(normals, axis=2, keepdims=True), 1e-9)
    width = bin_frac * np.linalg.norm(q[:, 36] - q[:, 45], axis=1)
    out = np.repeat(model.landmark_vertices[None], B, axis=0)
    for k in JAW:
        c = idx.candidates[k]
        if c.size <= 1:
            if c.size:
                out[:, k] = c[0]
            continue
        p = screen[:, lookup[c]]                                      # (B, n, 2)
        n = normals[:, k]
        t = np.stack([-n[:, 1], n[:, 0]], axis=1)
        outer = (p @ n[:, :, None])[..., 0]
        slot = np.floor((p @ t[:, :, None])[..., 0] / width[:, None]).astype(np.int64)
        face = np.repeat(np.arange(B), c.size)
        order = np.lexsort(((-outer).ravel(), slot.ravel(), face))
        fs = np.stack([face[order], slot.ravel()[order]], axis=1)
        first = np.ones(order.size, dtype=bool)
        first[1:] = np.any(fs[1:] != fs[:-1], axis=1)
        sil = order[first]                                            # flat indices, by face then slot
        d = np.linalg.norm(p.reshape(-1, 2)[sil] - q[face[sil], k], axis=1)
        starts = np.flatnonzero(np.r_[True, face[sil][1:] != face[sil][:-1]])
        best = np.minimum.reduceat(d, starts)
        at_best = np.flatnonzero(d == best[face[sil]])
        _, pick = np.unique(face[sil][at_best], return_index=True)
        out[:, k] = c[sil[at_best[pick]] % c.size]
    return out


# ------------------------------------------------------------------------------------------
# Profiles: which landmarks lie on which half of the face


def _ibug_sides() -> np.ndarray:
    """Per iBUG landmark (0-based), the half of the face it lies on: -1 the subject's right (model
    -x, the image's left in a frontal photo), +1 the subject's left, 0 the midline."""
    side = np.zeros(68, dtype=np.int64)
    side[[*range(0, 8), *range(17, 22), 31, 32, *range(36, 42), 48, 49, 50, 58, 59, 60, 61, 67]] = -1
    side[[*range(9, 17), *range(22, 27), 34, 35, *range(42, 48), 52, 53, 54, 55, 56, 63, 64, 65]] = 1
    return side


#: `_ibug_sides()`: -1 / +1 the subject's right / left half, 0 the midline (chin, nose ridge, lip middles)
IBUG_SIDE = _ibug_sides()


def far_side_factor(yaw_deg: float, start_deg: float, full_deg: float, floor: float) -> float:
    """The weight factor of the landmarks on the half of the face turned away at |yaw| = `yaw_deg`:
    1 up to `start_deg`, falling linearly to `floor` at `full_deg` and beyond."""
    a = abs(float(yaw_deg))
    if a <= start_deg:
        return 1.0
    if a >= full_deg:
        return float(floor)
    return 1.0 + (a - start_deg) / (full_deg - start_deg) * (floor - 1.0)


def hidden_side(yaw_deg: float) -> int:
    """The half of the face (`IBUG_SIDE`'s sign) that a head at `yaw_deg` turns away from the
    camera: yaw > 0 (nose toward the image's right) hides the subject's left half (+1)."""
    return 1 if yaw_deg > 0 else -1


def profile_landmark_weights(base: np.ndarray, yaw_deg: float, start_deg: float, full_deg: float,
                             floor: float) -> np.ndarray:
    """`base` (68,) landmark weights with the half turned away at `yaw_deg` scaled by
    `far_side_factor`: on a profile dlib's points for the hidden jaw, brow, eye, nostril and mouth
    half are guesses. Below `start_deg` the weights are `base` itself (the same array values)."""
    f = far_side_factor(yaw_deg, start_deg, full_deg, floor)
    if f == 1.0:
        return base
    w = np.array(base, dtype=np.float64, copy=True)
    w[IBUG_SIDE == hidden_side(yaw_deg)] *= f
    return w
