"""Fitting a morphable model to one photo: `fit_morphable_model(image, landmarks, model, config)`.

The fit minimises, over identity alpha, expression beta, rotation R (yaw, pitch, roll), translation t
and focal length f (plus SH lighting and a per-vertex albedo in the dense stage):

    E = E_lmk + w_id ||alpha||^2 + w_ex ||beta||^2 + w_f (log f - log f0)^2  [+ E_dense]

    E_lmk = 1/68 sum_k w_k || pi(R S_k(alpha, beta) + t) - q_k ||^2 / d_eye^2

where q_k are dlib's 68 iBUG landmarks, d_eye the outer-eye-corner distance (iBUG 37-46) and pi the
perspective projection. Jaw landmarks 1-8 and 10-17 have no fixed vertex on a turned head: dlib
puts them on the visible outline, so each is matched every few steps to the model vertex, among
those near its mean-shape vertex, that lies furthest out along the 2D outline normal (the
occluding contour), as eos does with its contour correspondences.

The optional dense stage (see `face3d.dense`) adds a photometric term over the visible face.
The rigid start comes from PnP of the mean shape's landmarks.

The result type `FaceFit` (`face3d.face_fit`) and the jaw matching (`face3d.contours`) live in
modules of their own, which the dense stage uses too; both are importable from here as well.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from face3d.camera import PerspectiveCamera, euler_to_matrix, matrix_to_euler, solve_pnp, transform
from face3d.contours import JAW, select_contour_vertices
from face3d.dense import refine_dense
from face3d.errors import FaceSynthError
from face3d.face_fit import FaceFit
from face3d.landmarks import outer_eye_distance
from face3d.morphable_model import MorphableModel

__all__ = ["FaceFit", "FitConfig", "fit_morphable_model", "landmark_residuals", "mouth_blendshapes",
           "select_contour_vertices"]


#: Blendshapes that `FitConfig.mouth_expression_prior` applies to: the 20 mouth landmarks pin these
#: far better than the six lid points of each eye pin the eye and brow blendshapes.
MOUTH_BLENDSHAPE_PREFIXES = ("mouth", "jaw")


def mouth_blendshapes(model: MorphableModel, count: int) -> list[int]:
    """Indices, among the model's first `count` blendshapes, of the mouth and jaw ones."""
    return [i for i, n in enumerate(model.expression_names[:count]) if n.startswith(MOUTH_BLENDSHAPE_PREFIXES)]


@dataclass
class FitConfig:
    """Settings of `fit_morphable_model` (defaults tuned on the synthetic benchmark)."""

    num_identity: int = 60           # leading identity modes optimised
    fit_expression: bool = True
    landmark_steps: int = 40
    contour_every: int = 5           # re-pick the jaw-contour vertices every N steps
    identity_prior: float = 5e-6     # w_id, per coefficient (MAP with ~1.5% landmark noise)
    expression_prior: float = 5e-4   # w_ex, per coefficient (weaker lets 53 blendshapes overfit)
    mouth_expression_prior: float | None = None   # w_ex of the mouth and jaw blendshapes (None: w_ex)
    focal_prior: float = 1e-2        # w_f
    fov_degrees: float = 12.0        # initial field of view over the image diagonal's longer side
    jaw_weight: float = 0.5          # contour points are less reliable than inner points
    dense: bool = True               # add the photometric term after the landmark stage
    dense_steps: int = 25
    dense_size: int = 96             # working resolution (px) of the dense term's face crop
    dense_weight: float = 1.0
    seed: int = 0


# ------------------------------------------------------------------------------------------
# Fitting


def initial_focal(image_size: tuple[int, int], fov_degrees: float) -> float:
    return 0.5 * max(image_size) / math.tan(math.radians(fov_degrees) / 2)


def fit_morphable_model(image: np.ndarray | None, landmarks: np.ndarray, model: MorphableModel,
                        config: FitConfig | None = None, image_size: tuple[int, int] | None = None) -> FaceFit:
    """Fit `model` to 68 landmarks (and, with `config.dense`, to the pixels of `image`).

    `image` is uint8 RGB (H, W, 3) or None (landmarks only; then `image_size` is required).
    """
    cfg = config or FitConfig()
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    if image is not None:
        image_size = image.shape[:2]
    if image_size is None:
        raise ValueError("image_size is required without an image")
    H, W = image_size
    q = np.asarray(landmarks, dtype=np.float64)
    if q.shape != (68, 2) or not np.all(np.isfinite(q)):
        raise FaceSynthError("landmarks must be a finite (68, 2) array")
    d_eye = outer_eye_distance(q)
    if d_eye < 2:
        raise FaceSynthError("face too small: the outer eye corners are under 2 px apart")
    center = (W / 2.0, H / 2.0)
    f0 = initial_focal((H, W), cfg.fov_degrees)

    lm = model.landmark_vertices.copy()
    valid = lm >= 0
    # Rigid start: PnP of the mean shape on the inner (non-jaw) landmarks.
    inner = np.array([k for k in range(17, 68) if valid[k]])
    R0, t0v = solve_pnp(model.mean[lm[inner]], q[inner], f0, center)

    K = min(cfg.num_identity, model.num_identity)
    E = model.num_expressions if cfg.fit_expression else 0
    pose0 = matrix_to_euler(R0)
    lo, hi = model.expression_range

    qt = torch.tensor(q, dtype=torch.float32)
    weights = torch.ones(68)
    weights[JAW] = cfg.jaw_weight
    weights[~torch.from_numpy(valid)] = 0.0
    ctr = torch.tensor([center], dtype=torch.float32)

    def unpack32(th: torch.Tensor):
        """(angles, translation, log focal, alpha (1, K), beta (1, E)) of theta, in float32."""
        th = th.float()
        return th[:3], th[3:6], th[6], th[7:7 + K][None], th[7 + K:][None]

    def screen_np(vert_idx: np.ndarray, th: torch.Tensor) -> np.ndarray:
        """Pixel positions (n, 2) of some model vertices under the parameters theta."""
        a, tr, lf, al, be = unpack32(th)
        with torch.no_grad():
            v = model.shape(al, be if E else None, vertices=torch.from_numpy(vert_idx))
            R = euler_to_matrix(a[0:1], a[1:2], a[2:3])
            cam = PerspectiveCamera(torch.exp(lf)[None], ctr)
            return cam.project(transform(v, R, tr[None]))[0, :, :2].numpy()

    # Levenberg-Marquardt on the stacked residual vector r(theta) = [landmarks; sqrt(priors)], so
    # that ||r||^2 = E. The Jacobian is written out (the model is linear in alpha and beta, the
    # projection's derivative is closed-form, R's is by central differences of three angles), which
    # makes a step cost well under a millisecond; autograd Jacobians cost ~50 ms here.
    theta = torch.cat([torch.tensor([math.radians(pose0.yaw), math.radians(pose0.pitch), math.radians(pose0.roll)]),
                       torch.tensor(t0v, dtype=torch.float32), torch.tensor([math.log(f0)]),
                       torch.zeros(K + E)]).float().double()
    n_par = theta.numel()
    lo_t = torch.full((n_par,), -float("inf"), dtype=torch.float64)
    hi_t = torch.full((n_par,), float("inf"), dtype=torch.float64)
    lo_t[7:7 + K], hi_t[7:7 + K] = -3.5, 3.5
    lo_t[7 + K:], hi_t[7 + K:] = lo, hi
    t_mod = model.tensors()
    mean_d = t_mod["mean"].double()
    U_d = t_mod["identity_basis"][:K].double()
    E_d = t_mod["expression_basis"][:E].double() if E else None
    qd = qt.double()
    sw = torch.sqrt(weights.double() / float(weights.sum())) / d_eye
    cx, cy = center
    w_ex = np.full(E, cfg.expression_prior)
    if cfg.mouth_expression_prior is not None:
        w_ex[mouth_blendshapes(model, E)] = cfg.mouth_expression_prior
    prior_diag = torch.cat([torch.full((K,), math.sqrt(cfg.identity_prior)), torch.from_numpy(np.sqrt(w_ex))]).double()

    def rot(a):
        return euler_to_matrix(a[0:1], a[1:2], a[2:3])[0]

    def residual_and_jacobian(th, corr_t, want_j=True):
        a, tr, lf = th[:3], th[3:6], th[6]
        al, be = th[7:7 + K], th[7 + K:]
        Uc = U_d[:, corr_t]                                              # (K, N, 3)
        v = mean_d[corr_t] + torch.einsum("k,knc->nc", al, Uc)
        if E:
            Ec = E_d[:, corr_t]
            v = v + torch.einsum("e,enc->nc", be, Ec)
        R = rot(a)
        X = v @ R.T + tr                                                 # camera frame (N, 3)
        f = torch.exp(lf)
        Z = X[:, 2]
        u = cx - f * X[:, 0] / Z
        w = cy + f * X[:, 1] / Z
        p = torch.stack([u, w], dim=1)
        r_l = ((p - qd) * sw[:, None]).reshape(-1)
        r_p = torch.cat([prior_diag * torch.cat([al, be]), math.sqrt(cfg.focal_prior) * (lf - math.log(f0))[None]])
        r = torch.cat([r_l, r_p])
        if not want_j:
            return r, None
        N = X.shape[0]
        dP = torch.zeros(N, 2, 3, dtype=torch.float64)                  # d(u, w) / d X_cam
        dP[:, 0, 0] = -f / Z
        dP[:, 0, 2] = f * X[:, 0] / Z ** 2
        dP[:, 1, 1] = f / Z
        dP[:, 1, 2] = -f * X[:, 1] / Z ** 2
        dP = dP * sw[:, None, None]
        J = torch.zeros(r.numel(), n_par, dtype=torch.float64)
        h = 1e-6
        for i in range(3):
            e = torch.zeros(3, dtype=torch.float64)
            e[i] = h
            dR = (rot(a + e) - rot(a - e)) / (2 * h)
            J[: 2 * N, i] = torch.einsum("nij,nj->ni", dP, v @ dR.T).reshape(-1)
        J[: 2 * N, 3:6] = dP.reshape(2 * N, 3)
        J[: 2 * N, 6] = ((p - torch.tensor([cx, cy], dtype=torch.float64)) * sw[:, None]).reshape(-1)
        J[: 2 * N, 7:7 + K] = torch.einsum("nij,knj->nik", dP, Uc @ R.T).reshape(2 * N, K)
        if E:
            J[: 2 * N, 7 + K:] = torch.einsum("nij,enj->nie", dP, Ec @ R.T).reshape(2 * N, E)
        idx = torch.arange(K + E)
        J[2 * N + idx, 7 + idx] = prior_diag
        J[-1, 6] = math.sqrt(cfg.focal_prior)
        return r, J

    lam = 1e-3
    corr = lm.copy()
    corr[~valid] = 0
    for it in range(cfg.landmark_steps):
        if it % cfg.contour_every == 0:
            corr = select_contour_vertices(model, lambda idx: screen_np(idx, theta), q)
            corr[~valid & (np.arange(68) > 16)] = 0
            corr_t = torch.from_numpy(corr)
        r, J = residual_and_jacobian(theta, corr_t)
        JtJ, Jtr = J.T @ J, J.T @ r
        cost = float(r @ r)
        improved, c_cost = False, cost
        for _ in range(10):
            step = torch.linalg.solve(JtJ + lam * torch.diag(torch.diagonal(JtJ) + 1e-12), -Jtr)
            cand = torch.minimum(torch.maximum(theta + step, lo_t), hi_t)
            c_cost = float((residual_and_jacobian(cand, corr_t, want_j=False)[0] ** 2).sum())
            if c_cost < cost:
                theta, lam, improved = cand, max(lam / 3, 1e-9), True
                break
            lam *= 4
        converged = not improved or (cost - c_cost) < 1e-9 * max(cost, 1e-12)
        if converged and it >= cfg.contour_every and (it + 1) % cfg.contour_every != 0:
            break
    fit_iters = it + 1

    a, tr, lf, al, be = unpack32(theta)
    R = euler_to_matrix(a[0:1], a[1:2], a[2:3])[0].numpy().astype(np.float64)
    fit = FaceFit(model_name=model.name, image_size=(H, W), identity=al[0].numpy().copy(),
                  expression=(be[0].numpy().copy() if E else np.zeros(model.num_expressions, np.float32)),
                  rotation=R, translation=tr.numpy().astype(np.float64), focal=float(torch.exp(lf)),
                  center=center, landmarks=q)
    fit.residuals["landmark_stage_seconds"] = time.perf_counter() - t0
    fit.residuals["landmark_iterations"] = fit_iters
    if cfg.dense and image is not None:
        fit = refine_dense(fit, image, model, cfg)
    fit.residuals.update(landmark_residuals(fit, model))
    fit.residuals["fit_seconds"] = time.perf_counter() - t0
    return fit


def landmark_residuals(fit: FaceFit, model: MorphableModel) -> dict:
    """Reprojection residuals of the fit on its 68 landmarks (jaw matched to the contour)."""
    with torch.no_grad():
        scr = fit.project(model)[0, :, :2].numpy()
    corr = select_contour_vertices(model, lambda idx: scr[idx], fit.landmarks)
    valid = model.landmark_vertices >= 0
    valid[JAW] = True
    per_point = np.linalg.norm(scr[corr] - fit.landmarks, axis=1) / outer_eye_distance(fit.landmarks)
    return {"landmark_error": float(per_point[valid].mean()),
            "landmark_error_inner": float(per_point[17:][valid[17:]].mean()),
            "landmark_error_jaw": float(per_point[:17].mean()),
            "landmark_points": int(valid.sum())}
