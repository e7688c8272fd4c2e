"""Shape from Shading on top of a 3DMM fit (after Kemelmacher-Shlizerman & Basri, TPAMI 2011).

The fitted morphable model is the reference shape; its smooth PCA surface misses the relief that
the photo's shading shows (nose profile, cheekbones, brow ridge, folds). This stage recovers a
per-vertex displacement d_v (mm) along the fitted mesh's normals over the visible face skin.

Image model (Lambertian, 9-term SH lighting as in `face3d.shading`), per visible vertex v and
colour channel c:

    I_vc = rho_vc * s_c(n_v),      s_c(n) = sh_basis(n) . L_c

1. Lighting and albedo from the fit (KSB's reference albedo): with the fit's normals, L is the
   weighted least-squares fit of I ~ rho * s(n) for a constant albedo first, then for a smooth,
   mirror-symmetric albedo (screened-Poisson low-pass over the mesh, ~2-3 cm scale) of I / s.
   Fine dark detail (brows, stubble, make-up) stays in the image residual and is down-weighted
   by robust (Cauchy) weights instead of being read as geometry; the magnitude prior bounds it.
2. Geometry: Gauss-Newton on

       E(d) = sum_v w_v a_v sum_c (rho_vc s_c(n_v(d)) - I_vc)^2          data (linearised)
            + w_lap ||Lap d||^2 + sum_v m_v d_v^2                         smoothness + magnitude

   with the normal perturbation n_v(d) ~ n_v - (grad d)_v (grad: the mesh's tangential gradient
   operator), a_v the vertex area and m_v growing towards the border of the visible region. The
   vertices outside the region (and on its border) are fixed at d = 0 (Dirichlet), so the refined
   surface meets the 3DMM surface without cracks. Each step is one sparse linear solve (SuperLU).
3. Safety: a face whose visible skin is mostly saturated or very dark, a failed light estimate, a
   non-finite or implausibly large displacement -> zero displacement and a `warning` (the caller
   records it) - never an exception or a broken mesh.

The displacement lives in model space (along the fitted mesh's model-space normals), so re-posing
uses `result.vertices(fit, model)` via `render_views(..., vertices=...)`, and the texture is
de-lit with `delight_image` (divide the photo by the estimated shading) for `--relight`.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from face3d.albedo_model import AlbedoModel, AlbedoObservation, estimate_light_albedo
from face3d.camera import PerspectiveCamera, transform
from face3d.dense import face_crop
from face3d.errors import FaceSynthError
from face3d.image_io import sample_bilinear
from face3d.lazy_names import LazyModule
from face3d.morphable_model import MorphableModel
from face3d.rasterizer import interpolate_vertex_attributes, rasterize_meshes
from face3d.shading import SH_LAMBERT, SH_NORMALIZATION, sh_basis, vertex_normals

# SciPy's sparse modules load with the first SFS call: importing them takes 0.24-0.28 s, and SFS
# is off by default
sp = LazyModule("scipy.sparse")
spla = LazyModule("scipy.sparse.linalg")

_K = [a * b for a, b in zip(SH_LAMBERT, SH_NORMALIZATION)]   # per-term constants of sh_basis


@dataclass
class SFSConfig:
    """Settings of `refine_shape_from_shading` (tuned on benchmarks/bench_sfs.py, synthetic set)."""

    size: int = 128                  # working resolution (px) of the face crop
    margin: float = 1.7              # crop side / landmark extent (as the dense stage)
    iterations: int = 3              # Gauss-Newton relinearisations
    smoothness: float = 0.2          # w_lap: ||Lap d||^2 (uniform Laplacian, per unit vertex area)
    magnitude: float = 2e-4          # m: ||d||^2 prior toward the 3DMM surface (per mm^2)
    border_magnitude: float = 2e-2   # extra m at the border of the region, tapering inwards
    taper_rings: int = 4             # rings over which the border prior fades
    albedo_smoothing: float = 60.0   # screened-Poisson weight of the albedo low-pass (graph Laplacian; ~sqrt(mu) rings)
    robust_scale: float = 0.03       # Cauchy scale of the photometric residual (0..1 intensity)
    min_cosine: float = 0.25         # vertices more oblique than this to the camera carry no data
    depth_tolerance_mm: float = 4.0  # visibility test against the source z-buffer
    dark: float = 0.04               # a vertex under this intensity (max channel) carries no data
    bright: float = 0.985            # ... nor over this (saturated)
    min_valid_fraction: float = 0.5  # of the visible face skin; below -> fall back with a warning
    max_displacement_mm: float = 12.0  # any |d| over this -> fall back with a warning
    max_gradient_gain: float = 2.5   # vertices whose gradient stencil is this many times the median get no data
    clip_mm: float = 6.0             # displacements are clipped to +-clip_mm (smoothly, tanh)


@dataclass
class SFSResult:
    """Per-vertex displacement (V,) mm along `normals` (V, 3, model space), lighting, albedo, diagnostics."""

    displacement: np.ndarray
    normals: np.ndarray
    sh: np.ndarray                   # (9, 3) estimated SH lighting, source camera frame
    albedo: np.ndarray               # (V, 3) smooth albedo estimate (0 where unknown)
    region: np.ndarray               # (V,) bool: vertices whose displacement was solved
    warning: str | None = None
    stats: dict = field(default_factory=dict)

    @property
    def applied(self) -> bool:
        return self.warning is None and bool(np.any(self.displacement != 0))

    def vertices(self, fit, model: MorphableModel) -> torch.Tensor:
        """Refined model-space vertices (1, V, 3): fit vertices + displacement * normals."""
        v = fit.vertices(model)
        off = torch.from_numpy((self.displacement[:, None] * self.normals).astype(np.float32))
        return v + off[None]


# ------------------------------------------------------------------------------------------
# Mesh operators


def _topology(model: MorphableModel):
    """Vertex adjacency (V x V, 0/1, CSR) and its uniform Laplacian I - D^-1 A (cached)."""
    key = "_sfs_topology"
    if key not in model._torch_cache:
        tri = model.triangles
        V = model.num_vertices
        i = np.concatenate([tri[:, 0], tri[:, 1], tri[:, 2], tri[:, 1], tri[:, 2], tri[:, 0]])
        j = np.concatenate([tri[:, 1], tri[:, 2], tri[:, 0], tri[:, 0], tri[:, 1], tri[:, 2]])
        A = sp.csr_matrix((np.ones(i.size), (i, j)), shape=(V, V))
        A.data[:] = 1.0
        deg = np.asarray(A.sum(1)).ravel()
        lap = sp.identity(V, format="csr") - sp.diags(1.0 / np.maximum(deg, 1)) @ A
        model._torch_cache[key] = (A.tocsr(), lap.tocsr())
    return model._torch_cache[key]


def _gradient_operator(points: np.ndarray, tri: np.ndarray, rows: np.ndarray, cols: np.ndarray):
    """Tangential gradient at the vertices `rows` of a function given at the vertices `cols`.

    Per face, grad phi_i = N x (p_k - p_j) / (2 A) for a piecewise-linear hat function; a vertex
    gets the area-weighted mean over its faces. Returns (Gx, Gy, Gz), each (len(rows), len(cols)).
    """
    V = points.shape[0]
    p0, p1, p2 = points[tri[:, 0]], points[tri[:, 1]], points[tri[:, 2]]
    cr = np.cross(p1 - p0, p2 - p0)
    dbl = np.linalg.norm(cr, axis=1)                              # 2 A
    ok = dbl > 1e-12
    N = cr / np.maximum(dbl, 1e-12)[:, None]
    grads = [np.cross(N, p2 - p1), np.cross(N, p0 - p2), np.cross(N, p1 - p0)]   # times 1/(2A)
    col_of = np.full(V, -1, np.int64)
    col_of[cols] = np.arange(cols.size)
    row_of = np.full(V, -1, np.int64)
    row_of[rows] = np.arange(rows.size)
    # vertex weights: sum of incident face areas (rows only)
    area = 0.5 * dbl * ok
    vw = np.zeros(V)
    for k in range(3):
        np.add.at(vw, tri[:, k], area)
    out = []
    for c in range(3):
        ri, ci, val = [], [], []
        for a in range(3):            # the vertex whose gradient row receives the face term
            ra = row_of[tri[:, a]]
            keep_a = (ra >= 0) & ok
            for b in range(3):        # the hat function of vertex b
                cb = col_of[tri[:, b]]
                keep = keep_a & (cb >= 0)
                # area-weighted: A_f * grad/(2A_f) = grad / 2
                ri.append(ra[keep])
                ci.append(cb[keep])
                val.append(0.5 * grads[b][keep, c] / np.maximum(vw[tri[keep, a]], 1e-12))
        out.append(sp.csr_matrix((np.concatenate(val), (np.concatenate(ri), np.concatenate(ci))),
                                 shape=(rows.size, cols.size)))
    return out


def _vertex_areas(points: np.ndarray, tri: np.ndarray) -> np.ndarray:
    a = 0.5 * np.linalg.norm(np.cross(points[tri[:, 1]] - points[tri[:, 0]], points[tri[:, 2]] - points[tri[:, 0]]), axis=1)
    out = np.zeros(points.shape[0])
    for k in range(3):
        np.add.at(out, tri[:, k], a / 3.0)
    return out


def _ring_distance(adj: sp.csr_matrix, inside: np.ndarray, rings: int) -> np.ndarray:
    """Rings (0..rings) from each vertex of `inside` to the nearest vertex outside it (graph BFS)."""
    dist = np.where(inside, rings, 0).astype(np.int64)
    front = ~inside
    reached = front.copy()
    for r in range(1, rings):
        nxt = (adj @ front.astype(np.float64)) > 0
        nxt &= ~reached
        dist[nxt & inside] = r
        reached |= nxt
        front = nxt
    return dist


# ------------------------------------------------------------------------------------------
# Shading and lighting


def _sh_np(n: np.ndarray) -> np.ndarray:
    return sh_basis(torch.from_numpy(n)).numpy()


def _sh_grad(n: np.ndarray) -> np.ndarray:
    """d sh_basis / d n: (N, 3 [x, y, z], 9)."""
    x, y, z = n[:, 0], n[:, 1], n[:, 2]
    k = _K
    zero = np.zeros_like(x)
    one = np.ones_like(x)
    dx = np.stack([zero, zero, zero, k[3] * one, k[4] * y, zero, zero, k[7] * z, 2 * k[8] * x], 1)
    dy = np.stack([zero, k[1] * one, zero, zero, k[4] * x, k[5] * z, zero, zero, -2 * k[8] * y], 1)
    dz = np.stack([zero, zero, k[2] * one, zero, zero, k[5] * y, 6 * k[6] * z, k[7] * x, zero], 1)
    return np.stack([dx, dy, dz], 1)


def _fit_light(Y: np.ndarray, I: np.ndarray, rho: np.ndarray, w: np.ndarray, ridge: float = 1e-3) -> np.ndarray:
    """Weighted LS of I_vc ~ rho_vc * Y_v . L_c per channel -> L (9, 3); bands 1-2 lightly ridged."""
    L = np.zeros((9, 3))
    reg = np.array([0.0] + [ridge] * 3 + [10 * ridge] * 5)
    for c in range(3):
        A = Y * rho[:, c:c + 1]
        Aw = A * w[:, None]
        H = A.T @ Aw + np.diag(reg) * max(float(w.sum()), 1e-9)
        L[:, c] = np.linalg.solve(H, Aw.T @ I[:, c])
    return L


def _smooth_on_mesh(values: np.ndarray, weight: np.ndarray, adj: sp.csr_matrix, idx: np.ndarray,
                    mu: float, mirror: np.ndarray | None = None) -> np.ndarray:
    """Screened-Poisson low-pass of `values` (V, C) over the vertices `idx`: (W + mu K) x = W v, K = D - A.

    With `mirror`, the data of each vertex is also given to its mirror vertex (a symmetric prior
    where only one side is seen; where both are, the result is the average of the two sides).
    """
    w = weight.copy()
    v = values * weight[:, None]
    if mirror is not None:
        w = w + 0.5 * weight[mirror]
        v = v + 0.5 * values[mirror] * weight[mirror][:, None]
    sub = adj[idx][:, idx]                        # graph Laplacian D - A of the sub-mesh (1-ring)
    sub = sp.diags(np.asarray(sub.sum(1)).ravel()) - sub
    A = (sp.diags(w[idx] + 1e-6) + mu * sub).tocsc()
    out = np.zeros_like(values)
    out[idx] = spla.splu(A).solve(v[idx])
    return out


# ------------------------------------------------------------------------------------------


def _fallback(V: int, normals: np.ndarray, sh, warning: str, stats: dict) -> SFSResult:
    stats = dict(stats)
    stats["fallback"] = True
    return SFSResult(np.zeros(V, np.float32), normals.astype(np.float32), np.asarray(sh, np.float32),
                     np.zeros((V, 3), np.float32), np.zeros(V, bool), warning, stats)


def _crop_camera(fit, x0: float, y0: float, sc: float) -> PerspectiveCamera:
    """The fit's camera in the pixels of the crop (x0, y0, sc) of `face_crop`."""
    return PerspectiveCamera(torch.tensor([fit.focal * sc], dtype=torch.float32),
                             torch.tensor([[(fit.center[0] - x0) * sc, (fit.center[1] - y0) * sc]], dtype=torch.float32))


def _crop_affine(x0: float, y0: float, sc: float) -> np.ndarray:
    """Photo pixel -> crop pixel for OpenCV: crop = (p - (x0, y0)) * sc with pixel centres at +0.5."""
    return np.array([[sc, 0, (0.5 - x0) * sc - 0.5], [0, sc, (0.5 - y0) * sc - 0.5]], dtype=np.float64)


def _camera_normals(cp: np.ndarray, faces: torch.Tensor) -> np.ndarray:
    """Vertex normals (V, 3) float64 of camera-frame points `cp` (V, 3)."""
    with torch.no_grad():
        return vertex_normals(torch.from_numpy(cp[None].astype(np.float32)), faces)[0].numpy().astype(np.float64)


@dataclass
class _SourceView:
    """The fitted mesh (float64, model space) and the photo's camera in the working crop."""

    vertices: np.ndarray             # (V, 3)
    normals: np.ndarray              # (V, 3)
    rotation: np.ndarray             # (3, 3) model -> camera frame
    translation: np.ndarray          # (3,)
    camera: PerspectiveCamera        # in crop pixels
    crop: np.ndarray                 # (S, S, 3) uint8
    faces: torch.Tensor              # (F, 3)

    def project(self, vm: np.ndarray):
        """Camera-frame points and crop-pixel positions (x, y, depth) of model-space points `vm` (V, 3)."""
        cp = vm @ self.rotation.T + self.translation
        scr = self.camera.project(torch.from_numpy(cp[None].astype(np.float32)))[0].numpy().astype(np.float64)
        return cp, scr


def _source_view(fit, image: np.ndarray, model: MorphableModel, cfg: SFSConfig) -> _SourceView:
    faces = torch.from_numpy(model.triangles)
    with torch.no_grad():
        v0_t = fit.vertices(model)
        n0 = vertex_normals(v0_t, faces)[0].numpy().astype(np.float64)
    x0, y0, sc = face_crop(fit.landmarks, image.shape[:2], cfg.size, cfg.margin)
    crop = cv2.warpAffine(image, _crop_affine(x0, y0, sc), (cfg.size, cfg.size), flags=cv2.INTER_AREA,
                          borderMode=cv2.BORDER_REPLICATE)
    return _SourceView(v0_t[0].numpy().astype(np.float64), n0, np.asarray(fit.rotation, np.float64),
                       np.asarray(fit.translation, np.float64), _crop_camera(fit, x0, y0, sc), crop, faces)


@dataclass
class _Observations:
    """What the photo shows of each vertex of the fitted mesh."""

    visible: np.ndarray              # (V,) face skin in front, facing the camera
    usable: np.ndarray               # (V,) visible and neither too dark nor saturated: the data
    intensity: np.ndarray            # (V, 3) photo colour, 0..1
    peak: np.ndarray                 # (V,) brightest channel
    cosine: np.ndarray               # (V,) cos(normal, view ray)
    camera_normals: np.ndarray       # (V, 3) the fit's normals in the camera frame
    skin: np.ndarray                 # (V,) face skin, mouth interior excluded


def _observe(view: _SourceView, model: MorphableModel, cfg: SFSConfig) -> _Observations:
    S = cfg.size
    cp0, scr0 = view.project(view.vertices)
    frag = rasterize_meshes(torch.from_numpy(scr0[None].astype(np.float32)), view.faces, S, cull_backfaces=True)
    zb = frag.zbuf[0].numpy()
    px = np.clip(np.floor(scr0[:, 0]).astype(np.int64), 0, S - 1)
    py = np.clip(np.floor(scr0[:, 1]).astype(np.int64), 0, S - 1)
    inside = (scr0[:, 0] >= 0) & (scr0[:, 0] < S) & (scr0[:, 1] >= 0) & (scr0[:, 1] < S)
    zref = zb[py, px]
    ncam0 = view.normals @ view.rotation.T
    ray = -cp0 / np.maximum(np.linalg.norm(cp0, axis=1, keepdims=True), 1e-9)
    cos0 = np.sum(ncam0 * ray, axis=1)
    skin = model.skin.copy()
    if model.mouth_interior is not None:
        skin &= ~model.mouth_interior
    visible = skin & inside & (zref > 0) & (scr0[:, 2] <= zref + cfg.depth_tolerance_mm) & (cos0 > cfg.min_cosine)
    I_all = sample_bilinear(view.crop, scr0[:, :2].astype(np.float32)).astype(np.float64) / 255.0
    peak = I_all.max(axis=1)
    usable = visible & (peak > cfg.dark) & (peak < cfg.bright)
    return _Observations(visible, usable, I_all, peak, cos0, ncam0, skin)


def _data_warning(obs: _Observations, cfg: SFSConfig, stats: dict) -> str | None:
    """Why the photo cannot carry SFS (too little visible skin, mostly saturated or dark), or None."""
    n_vis, n_use = int(obs.visible.sum()), int(obs.usable.sum())
    stats.update(visible_vertices=n_vis, data_vertices=n_use)
    if n_vis < 200:
        return f"SFS skipped: only {n_vis} face-skin vertices visible"
    frac = n_use / n_vis
    stats["valid_fraction"] = frac
    if frac < cfg.min_valid_fraction:
        sat = float(np.mean(obs.peak[obs.visible] >= cfg.bright))
        dark = float(np.mean(obs.peak[obs.visible] <= cfg.dark))
        return f"SFS skipped: face region {100 * sat:.0f}% saturated, {100 * dark:.0f}% too dark; kept the 3DMM geometry"
    return None


def _data_weights(obs: _Observations, area: np.ndarray) -> np.ndarray:
    """Step 1's weight of each vertex's data: cos(normal, view ray) * vertex area (`area`) on the
    usable vertices (mean 1 over them), 0 elsewhere."""
    w = np.where(obs.usable, np.clip(obs.cosine, 0, 1) * area, 0.0)
    if obs.usable.any():
        w /= max(w[obs.usable].mean(), 1e-12)
    return w


def _light_failed(L: np.ndarray, shading: np.ndarray) -> bool:
    """Whether a light estimate is unusable: non-finite, or no light on most of the data
    (`shading`: (n, 3) its shading at the usable vertices)."""
    return not np.all(np.isfinite(L)) or np.mean(shading.min(axis=1) > 1e-3) < 0.8


def _light_and_albedo(obs: _Observations, Y0: np.ndarray, w_data: np.ndarray, adj: sp.csr_matrix,
                      mirror: np.ndarray, cfg: SFSConfig):
    """Step 1 of the module doc: (L (9, 3), albedo (V, 3), robust weights (V,)) from the 3DMM
    normals' SH basis Y0, alternating light, smooth symmetric albedo and Cauchy weights; None
    when the light estimate fails (non-finite, or no light on most of the data)."""
    uidx = np.nonzero(obs.usable)[0]
    I = obs.intensity
    V = I.shape[0]
    rho = np.ones((V, 3)) * (np.average(I[uidx], axis=0, weights=w_data[uidx]) / 0.886227 / 1.0)[None]
    skin_idx = np.nonzero(obs.skin)[0]
    robust = np.ones(V)
    L = None
    for it in range(3):
        wl = w_data * robust
        L = _fit_light(Y0[uidx], I[uidx], rho[uidx], wl[uidx])
        s = Y0 @ L
        if _light_failed(L, s[uidx]):
            return None
        raw = I / np.maximum(s, 1e-3)
        rho = _smooth_on_mesh(raw, wl, adj, skin_idx, cfg.albedo_smoothing, mirror)
        r = np.linalg.norm(rho * s - I, axis=1)
        robust = 1.0 / (1.0 + (r / cfg.robust_scale) ** 2)
    return L, rho, robust


def _skin_observation(obs: _Observations, w_data: np.ndarray, skin: np.ndarray) -> AlbedoObservation:
    """What the photo shows of the vertices `skin` (indices), unusable ones at weight 0."""
    return AlbedoObservation(obs.intensity[skin].astype(np.float32),
                             np.where(obs.usable[skin], w_data[skin], 0.0).astype(np.float32),
                             obs.camera_normals[skin].astype(np.float32))


def observe_albedo(fit, image: np.ndarray, model: MorphableModel, size: int = 128) -> AlbedoObservation:
    """The skin colours a photo shows, for `face3d.albedo_model` (step 1's visibility test on a
    `size`-px face crop), with the data weight cos(normal, view ray) * vertex area (mean 1 over
    the used vertices)."""
    cfg = SFSConfig(size=size)
    view = _source_view(fit, image, model, cfg)
    obs = _observe(view, model, cfg)
    w = _data_weights(obs, _vertex_areas(view.vertices, model.triangles))
    return _skin_observation(obs, w, np.nonzero(model.skin)[0])


def _light_and_model_albedo(obs: _Observations, w_data: np.ndarray, albedo_model: AlbedoModel):
    """Step 1 under a learnt albedo model: (L (9, 3), albedo (V, 3), robust weights (V,)) from
    `face3d.albedo_model.estimate_light_albedo` on the skin vertices; None when it fails."""
    sk = albedo_model.vertices
    ob = _skin_observation(obs, w_data, sk)
    try:
        est = estimate_light_albedo(ob, albedo_model)
    except FaceSynthError:       # too few visible skin vertices
        return None
    V = obs.intensity.shape[0]
    s = _sh_np(obs.camera_normals[sk].astype(np.float32)) @ est.sh
    if _light_failed(est.sh, s[obs.usable[sk]]):
        return None
    robust = np.ones(V)
    robust[sk] = np.where(ob.weight > 0, est.robust, 1.0)
    return est.sh, albedo_model.full(est.albedo.astype(np.float64), V), robust


def _displacement_prior(adj: sp.csr_matrix, lap: sp.csr_matrix, visible: np.ndarray, area: np.ndarray,
                        cfg: SFSConfig):
    """The free vertices (the visible region minus its border ring) and the prior's matrix over them:
    w_lap Lap^T A Lap + diag(m A), m growing towards the border (A: normalised vertex areas)."""
    # the solved region: the usable vertices and the visible holes between them, minus the border ring
    region = visible.copy()
    rings = _ring_distance(adj, region, cfg.taper_rings + 1)
    free = rings >= 1
    fidx = np.nonzero(free)[0]
    taper = np.clip((rings[fidx] - 1) / max(cfg.taper_rings, 1), 0.0, 1.0)
    m_diag = cfg.magnitude + cfg.border_magnitude * (1.0 - taper) ** 2
    a_f = area[fidx] / max(area[fidx].mean(), 1e-12)
    lap_ff = lap[fidx][:, fidx]
    reg = (cfg.smoothness * (lap_ff.T @ sp.diags(a_f) @ lap_ff) + sp.diags(m_diag * a_f)).tocsc()
    return free, fidx, reg


def _gradient_gains(Gx, Gy, Gz) -> np.ndarray:
    """Per row, the norm of the gradient stencil: how strongly d moves that vertex's normal."""
    return np.sqrt(np.asarray(Gx.multiply(Gx).sum(1)).ravel() + np.asarray(Gy.multiply(Gy).sum(1)).ravel()
                   + np.asarray(Gz.multiply(Gz).sum(1)).ravel())


def _shading_jacobian(rho: np.ndarray, dS: np.ndarray, Gx, Gy, Gz) -> sp.csr_matrix:
    """d(rho s(n(d)))/dd, channel-major rows (3 n, free): dS (n, 3 xyz, 3 ch) the shading's normal
    derivative, n ~ n0 - grad d."""
    Jt = []
    for c in range(3):
        coef = -rho[:, c:c + 1] * dS[:, :, c]                            # (n, 3 xyz)
        Jt.append(sp.diags(coef[:, 0]) @ Gx + sp.diags(coef[:, 1]) @ Gy + sp.diags(coef[:, 2]) @ Gz)
    return sp.vstack(Jt).tocsr()


def _gauss_newton(view: _SourceView, obs: _Observations, L: np.ndarray, rho: np.ndarray, robust: np.ndarray,
                  w_data: np.ndarray, fidx: np.ndarray, reg, cfg: SFSConfig, stats: dict) -> np.ndarray:
    """Step 2 of the module doc: the displacement d (V,) (0 outside `fidx`), before clipping.
    `robust` is updated in place from the linearised residuals."""
    tri = view.faces.numpy()
    I = obs.intensity
    d = np.zeros(I.shape[0])
    cost_hist = []
    didx = np.nonzero(obs.usable[fidx])[0]        # rows of the data term, among the free vertices
    dv = fidx[didx]
    sane = None          # the vertices the data term keeps: set in the first iteration
    for it in range(cfg.iterations):
        vm = view.vertices + d[:, None] * view.normals
        cp, _ = view.project(vm)
        nc = _camera_normals(cp, view.faces)
        s_basis = _sh_np(nc[dv].astype(np.float32)).astype(np.float64)
        s = s_basis @ L                                                       # (n, 3)
        res = rho[dv] * s - I[dv]                                             # (n, 3)
        wv = w_data[dv] * robust[dv] * (sane if it else 1.0)
        data_cost = float((wv[:, None] * res ** 2).sum())
        df = d[fidx]
        cost = data_cost + float(df @ (reg @ df))
        cost_hist.append(cost)
        Gx, Gy, Gz = _gradient_operator(cp, tri, dv, fidx)
        if it == 0:
            # folded / degenerate spots (lip contact, eyelid creases): tiny triangles make the
            # normal hypersensitive to d and the linearisation useless there - no data term
            gn = _gradient_gains(Gx, Gy, Gz)
            sane = gn < cfg.max_gradient_gain * np.median(gn)
            stats["data_vertices_sane"] = int(sane.sum())
        wv = wv * sane
        J = _shading_jacobian(rho[dv], _sh_grad(nc[dv]) @ L, Gx, Gy, Gz)
        r = res.T.reshape(-1)
        W = np.tile(wv, 3)
        H = (J.T @ sp.diags(W) @ J + reg).tocsc()
        g = J.T @ (W * r) + reg @ df
        try:
            step = spla.spsolve(H, -g)
        except Exception as exc:  # singular systems: keep what we have
            stats["solver_error"] = str(exc)
            break
        if not np.all(np.isfinite(step)):
            break
        d[fidx] = df + step
        # robust re-weighting from the linearised residual
        rlin = (r + J @ step).reshape(3, -1).T
        rr = np.linalg.norm(rlin, axis=1)
        robust[dv] = 1.0 / (1.0 + (rr / cfg.robust_scale) ** 2)
    stats["cost_history"] = cost_hist
    return d


def _photometric_rms(view: _SourceView, obs: _Observations, Y0: np.ndarray, L: np.ndarray, rho: np.ndarray,
                     d: np.ndarray) -> tuple[float, float]:
    """RMS of the model (smooth albedo, estimated light) against the photo at the data vertices,
    on the 3DMM surface and on the refined one."""
    uidx = np.nonzero(obs.usable)[0]
    I = obs.intensity
    cp, _ = view.project(view.vertices + d[:, None] * view.normals)
    nc = _camera_normals(cp, view.faces)
    after = rho[uidx] * (_sh_np(nc[uidx].astype(np.float32)) @ L) - I[uidx]
    before = rho[uidx] * (Y0[uidx] @ L) - I[uidx]
    return float(np.sqrt((before ** 2).mean())), float(np.sqrt((after ** 2).mean()))


def refine_shape_from_shading(fit, image: np.ndarray, model: MorphableModel,
                              config: SFSConfig | None = None, *, albedo: np.ndarray | None = None,
                              sh: np.ndarray | None = None, albedo_model: AlbedoModel | None = None) -> SFSResult:
    """Displacement along the normals that explains the photo's shading (see the module doc).

    `image` is the uint8 RGB photo the fit refers to. Never raises on bad photos: a result with
    zero displacement and a `warning` comes back instead. `albedo_model`
    (`face3d.albedo_model.AlbedoModel`): step 1 estimates the light and the albedo under it
    (`estimate_light_albedo`) instead of the smooth symmetric albedo. `albedo` (V, 3) and `sh`
    (9, 3), when given, replace the estimates in step 2 (diagnostics and tests).
    """
    cfg = config or SFSConfig()
    t0 = time.perf_counter()
    V = model.num_vertices
    adj, lap = _topology(model)
    view = _source_view(fit, image, model, cfg)
    n0 = view.normals
    stats: dict = {}
    obs = _observe(view, model, cfg)
    sh_fallback = np.asarray(fit.sh, np.float64) if np.any(fit.sh) else np.zeros((9, 3))
    warning = _data_warning(obs, cfg, stats)
    if warning is not None:
        return _fallback(V, n0, sh_fallback, warning, stats)

    # --- 1. lighting and a smooth, symmetric albedo from the 3DMM normals
    area = _vertex_areas(view.vertices, model.triangles)
    w_data = _data_weights(obs, area)
    Y0 = _sh_np(obs.camera_normals.astype(np.float32)).astype(np.float64)
    if albedo_model is not None:
        estimate = _light_and_model_albedo(obs, w_data, albedo_model)
        stats["albedo_model"] = True
    else:
        estimate = _light_and_albedo(obs, Y0, w_data, adj, model.mirror_vertex, cfg)
    if estimate is None:
        return _fallback(V, n0, sh_fallback, "SFS skipped: lighting estimate failed; kept the 3DMM geometry", stats)
    L, rho, robust = estimate
    if sh is not None:
        L = np.asarray(sh, np.float64)
    if albedo is not None:
        rho = np.asarray(albedo, np.float64)
    stats["light_seconds"] = time.perf_counter() - t0

    # --- 2. region, border taper and Gauss-Newton on the displacement
    free, fidx, reg = _displacement_prior(adj, lap, obs.visible, area, cfg)
    d = _gauss_newton(view, obs, L, rho, robust, w_data, fidx, reg, cfg, stats)
    d = cfg.clip_mm * np.tanh(d / cfg.clip_mm)
    stats["photometric_rms_before"], stats["photometric_rms_after"] = _photometric_rms(view, obs, Y0, L, rho, d)
    stats["max_abs_mm"] = float(np.abs(d).max())
    stats["rms_mm"] = float(np.sqrt((d[fidx] ** 2).mean())) if fidx.size else 0.0
    stats["seconds"] = time.perf_counter() - t0
    if not np.all(np.isfinite(d)) or np.abs(d).max() > cfg.max_displacement_mm:
        return _fallback(V, n0, L, "SFS discarded: non-finite or implausibly large displacement; kept the 3DMM geometry", stats)
    return SFSResult(d.astype(np.float32), n0.astype(np.float32), L.astype(np.float32), rho.astype(np.float32),
                     free, None, stats)


# ------------------------------------------------------------------------------------------
# De-lighting and re-lighting


def source_shading(fit, image_hw, model: MorphableModel, result: SFSResult, vertices: torch.Tensor | None = None,
                   size: int = 256) -> np.ndarray:
    """Estimated shading (H, W, 3) of the (refined) face in the photo, normalised to median 1 on the face; 1 elsewhere."""
    H, W = image_hw
    verts = result.vertices(fit, model) if vertices is None else vertices
    x0, y0, sc = face_crop(fit.landmarks, image_hw, size, 2.2)
    faces = torch.from_numpy(model.triangles)
    with torch.no_grad():
        R = torch.from_numpy(fit.rotation.astype(np.float32))[None]
        tr = torch.from_numpy(fit.translation.astype(np.float32))[None]
        cp = transform(verts, R, tr)
        frag = rasterize_meshes(_crop_camera(fit, x0, y0, sc).project(cp), faces, size, cull_backfaces=True)
        n = torch.nn.functional.normalize(interpolate_vertex_attributes(frag, faces, vertex_normals(cp, faces))[0], dim=-1)
        shade = (sh_basis(n) @ torch.from_numpy(np.asarray(result.sh, np.float32))).numpy()
    covered = frag.pix_to_face[0].numpy() >= 0
    skin_f = model.skin[model.triangles].all(1)
    face = covered & skin_f[np.maximum(frag.pix_to_face[0].numpy(), 0)]
    if face.sum() < 50:
        return np.ones((H, W, 3), np.float32)
    norm = np.median(shade[face], axis=0)
    shade = np.where(covered[..., None], shade / np.maximum(norm, 1e-6), 1.0)
    shade = np.clip(shade, 0.25, 4.0).astype(np.float32)
    # back to the photo's pixels
    return cv2.warpAffine(shade, _crop_affine(x0, y0, sc), (W, H), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(1.0, 1.0, 1.0))


def delight_image(fit, image: np.ndarray, model: MorphableModel, result: SFSResult,
                  vertices: torch.Tensor | None = None) -> np.ndarray:
    """The photo divided by the estimated shading (uint8): an albedo-like image to texture from."""
    shade = source_shading(fit, image.shape[:2], model, result, vertices)
    return np.clip(image.astype(np.float32) / shade + 0.5, 0, 255).astype(np.uint8)


def relight_sh(mode: str, count: int, seed: int = 0, lights: np.ndarray | None = None) -> np.ndarray | None:
    """SH lights (count, 9, 3) in each view's camera frame for `--relight`; None for 'keep'.

    The de-lit texture has median shading 1 on the face, so these lights are scaled to match:
    'frontal' = ambient 0.7 + 0.4 n_z (a soft light from the viewer); 'random' = one of `lights`
    (the camera-frame lights fitted to LFW's train photos, `face3d.albedo_model.AlbedoModel.lights`),
    mirrored left-right at random and scaled to median shading 1 on a frontal face, or without
    `lights`, ambient 0.5-0.8 plus a directional term 0.3-0.6 from a random direction in the front
    hemisphere, slightly tinted.
    """
    if mode == "keep":
        return None
    out = np.zeros((count, 9, 3), np.float32)
    rng = np.random.default_rng(seed)
    if mode == "random" and lights is not None and len(lights):
        for i in range(count):
            out[i] = normalised_light(np.asarray(lights[rng.integers(len(lights))], np.float64), bool(rng.integers(2)))
        return out
    for i in range(count):
        if mode == "frontal":
            amb, strength, d, tint = 0.7, 0.4, np.array([0.0, 0.0, 1.0]), np.ones(3)
        elif mode == "random":
            d = rng.normal(size=3)
            d[2] = abs(d[2]) + 0.6
            d /= np.linalg.norm(d)
            amb, strength = rng.uniform(0.5, 0.8), rng.uniform(0.3, 0.6)
            tint = rng.uniform(0.95, 1.05, size=3)
        else:
            raise ValueError(f"relight mode must be keep, frontal or random, got {mode!r}")
        out[i, 0] = amb / _K[0]
        out[i, 1] = strength * d[1] / _K[1]
        out[i, 2] = strength * d[2] / _K[2]
        out[i, 3] = strength * d[0] / _K[3]
        out[i] *= tint[None].astype(np.float32)
    return out


#: the largest tint per channel a relighting light keeps (`normalised_light`)
MAX_TINT = 0.08
#: the largest first-order strength |L1| / L0 of a relighting light's irradiance (`normalised_light`)
MAX_CONTRAST = 0.8
#: SH terms odd in x (x, xy, xz): a left-right mirror of a light flips their sign
_X_ODD = (3, 4, 7)


@functools.lru_cache(maxsize=1)
def frontal_hemisphere_basis() -> np.ndarray:
    """(N, 9) float64, read-only: the SH basis of the normals of a frontal hemisphere (n_z >= 0.3, a
    41 x 41 grid over x and y): what `normalised_light` scales a light's median shading over."""
    g = np.linspace(-1, 1, 41)
    x, y = np.meshgrid(g, g)
    z2 = 1 - x * x - y * y
    keep = z2 >= 0.09
    n = np.stack([x[keep], y[keep], np.sqrt(z2[keep])], 1)
    basis = _sh_np(n.astype(np.float32)).astype(np.float64)
    basis.flags.writeable = False
    return basis


def normalised_light(sh: np.ndarray, mirror: bool = False) -> np.ndarray:
    """An SH light (9, 3), mirrored left-right if asked, scaled so that its median shading over the
    normals of a frontal hemisphere (n_z >= 0.3) is 1, its direction kept, its contrast (first-order
    irradiance over ambient) at most `MAX_CONTRAST`, its colour one tint of at most +-`MAX_TINT`
    per channel."""
    L = np.array(sh, np.float64)
    if mirror:
        L[list(_X_ODD)] *= -1.0
    basis = frontal_hemisphere_basis()
    shade = basis @ L
    level = float(np.median(shade.mean(axis=1)))
    # the colour of a fitted light is the photo's white balance (and the fit's noise) as much as
    # its light's: one grey light, tinted by at most +-MAX_TINT per channel
    tint = np.clip(np.median(shade, axis=0) / max(level, 1e-6), 1 - MAX_TINT, 1 + MAX_TINT)
    grey = L.mean(axis=1, keepdims=True) / max(level, 1e-6)
    # a fitted light's first-order part can outweigh its ambient part (a hard light, or the fit's
    # noise); beyond MAX_CONTRAST the relit face turns into a mask of light and shadow
    strength = float(np.linalg.norm(grey[1:4, 0]) * _K[1] / max(grey[0, 0] * _K[0], 1e-6))
    if strength > MAX_CONTRAST:
        grey[1:] *= MAX_CONTRAST / strength
        level2 = float(np.median(basis @ grey[:, 0]))
        grey /= max(level2, 1e-6)
    return (grey * tint[None]).astype(np.float32)
