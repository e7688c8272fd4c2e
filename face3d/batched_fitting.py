"""The landmark stage of `face3d.fitting` over a batch of faces: one Levenberg-Marquardt run whose
every tensor has the batch first, with per-face damping and per-face convergence.

Each face b minimises its own

    E_b(theta_b) = ||r_b(theta_b)||^2,   r_b = [landmark residuals (68 x 2); sqrt(priors) * theta_b]

(`face3d.fitting` derives it). The faces share no parameter, so the joint problem is B independent
least squares; batching them changes no maths, only how many torch calls a step takes: the
residuals, the hand-written Jacobians (B, m, n), the normal equations J^T J (B, n, n) and their
damped solves are one call each for the whole batch, where the one-face path pays each call's
fixed cost (~10-50 us) per face. On a CPU the per-face loop is dominated by that fixed cost, not by
arithmetic (n ~ 120 parameters, m ~ 250 residuals).

What stays per face, so that each face's result is the one-face path's (up to float rounding of
batched reductions, see `tests/test_batched_fit.py`):
- the damping lam_b: a face whose candidate step raised its cost retries with 4 lam_b while the
  others keep theirs (at most 10 tries a step, as one face does);
- convergence: a face leaves the active set at the step where the one-face loop would break (no
  improvement, or a relative decrease under 1e-9, not right after a contour re-pick); the next
  steps run on the remaining faces only;
- the jaw contour correspondences: every `contour_every` steps, each face's 17 jaw landmarks are
  re-matched to its occluding contour (`face3d.contours.select_contour_vertices_batch`: the
  one-face rule for all faces in one sort per jaw landmark, on positions projected at once).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from face3d.camera import PerspectiveCamera, euler_to_matrix, transform
from face3d.contours import contour_candidate_vertices, select_contour_vertices_batch
from face3d.morphable_model import MorphableModel

__all__ = ["LandmarkBatch", "batch_landmark_residual", "batch_levenberg_marquardt", "gather_landmark_bases",
           "stack_landmark_problems"]


@dataclass
class LandmarkBatch:
    """B landmark problems of one model and one config, stacked: theta (B, n) = [yaw, pitch, roll
    (rad), t (3), log f, alpha (K), beta (E)] per row (float64)."""

    model: MorphableModel
    num_identity: int                # K
    num_expressions: int             # E
    focal_prior: float               # w_f
    valid: np.ndarray                # (68,) landmarks the model has a vertex for
    prior_diag: torch.Tensor         # (K + E,)
    mean: torch.Tensor               # (V, 3) float64, shared by every face
    identity_basis: torch.Tensor     # (K, V, 3) float64
    expression_basis: torch.Tensor | None   # (E, V, 3) float64
    lower: torch.Tensor              # (n,) bounds of theta
    upper: torch.Tensor
    landmarks: np.ndarray            # (B, 68, 2) float64, the detected points
    targets: torch.Tensor            # (B, 68, 2) float64 (float32 values)
    point_scale: torch.Tensor        # (B, 68) sqrt(w_k / sum w) / d_eye
    center: torch.Tensor             # (B, 2) float64 principal points
    log_f0: torch.Tensor             # (B,) log of the focal prior's centre
    contour_vertices: np.ndarray     # (C,) the jaw-contour candidates, as select_contour_vertices lists them
    contour_mean: torch.Tensor       # (C, 3) float32: the model restricted to them, for the re-picks
    contour_identity: torch.Tensor   # (K, C, 3) float32
    contour_expression: torch.Tensor | None   # (E, C, 3) float32


def stack_landmark_problems(problems: list, landmarks: list[np.ndarray]) -> LandmarkBatch:
    """One LandmarkBatch from per-face problems of `face3d.fitting` (same model and config: the
    first face's model tensors are used for all) and their (68, 2) landmarks."""
    p0 = problems[0]
    model = p0.model
    K, E = p0.num_identity, p0.num_expressions
    allc = contour_candidate_vertices(model)
    t = model.tensors()
    sel = torch.from_numpy(allc)
    return LandmarkBatch(
        model=model, num_identity=K, num_expressions=E, focal_prior=p0.focal_prior, valid=p0.valid,
        prior_diag=p0.prior_diag, mean=p0.mean, identity_basis=p0.identity_basis, expression_basis=p0.expression_basis,
        lower=p0.lower, upper=p0.upper, landmarks=np.stack([np.asarray(q, np.float64) for q in landmarks]),
        targets=torch.stack([p.targets for p in problems]), point_scale=torch.stack([p.point_scale for p in problems]),
        center=torch.tensor([p.center for p in problems], dtype=torch.float64),
        log_f0=torch.tensor([math.log(p.f0) for p in problems], dtype=torch.float64),
        contour_vertices=allc, contour_mean=t["mean"][sel], contour_identity=t["identity_basis"][:K, sel],
        contour_expression=t["expression_basis"][:, sel] if E else None)


def gather_landmark_bases(b: LandmarkBatch, corr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The model at the landmark vertices `corr` (B, 68): mean (B, 68, 3) and the identity and
    expression bases side by side, W (B, 68, 3, K + E), so that S = mean + W c with c = [alpha; beta].
    Gathered once per contour re-pick and reused by every step and candidate until the next."""
    W = b.identity_basis[:, corr].permute(1, 2, 3, 0)                # (B, N, 3, K)
    if b.num_expressions:
        W = torch.cat([W, b.expression_basis[:, corr].permute(1, 2, 3, 0)], dim=3)
    return b.mean[corr], W.contiguous()


def batch_landmark_residual(b: LandmarkBatch, rows: torch.Tensor, theta: torch.Tensor,
                            bases: tuple[torch.Tensor, torch.Tensor], want_j: bool = True):
    """r (B, m) and, with `want_j`, the normal equations J^T J (B, n, n) and J^T r (B, n) of the faces
    `rows` at `theta` (B, n), on their landmark bases (`gather_landmark_bases`): `face3d.fitting`'s
    one-face residual, batch first.

    Landmark k of face b lands at u = cx - f X/Z, v = cy + f Y/Z (X = R S_k + t in the camera
    frame); its Jacobian is dP/dX (B, 68, 2, 3) times dX/dtheta: R's columns by central
    differences of the three angles, I for t, (p - c) for log f (p scales with f), and R W for the
    coefficients (the model is linear in them). The prior rows of J are a constant diagonal D, so
    J^T J = J_l^T J_l + D^2 and J^T r = J_l^T r_l + D r_p are formed from the landmark rows J_l alone."""
    K, E = b.num_identity, b.num_expressions
    mean_c, W = bases
    B, N = mean_c.shape[:2]
    sw, c = b.point_scale[rows], b.center[rows]
    a, tr, lf, coef = theta[:, :3], theta[:, 3:6], theta[:, 6], theta[:, 7:]
    v = mean_c + (W @ coef[:, None, :, None])[..., 0]
    R = euler_to_matrix(a[:, 0], a[:, 1], a[:, 2])
    X = v @ R.transpose(1, 2) + tr[:, None]
    f = torch.exp(lf)[:, None]
    Z = X[..., 2]
    p = torch.stack([c[:, None, 0] - f * X[..., 0] / Z, c[:, None, 1] + f * X[..., 1] / Z], dim=2)
    r_l = ((p - b.targets[rows]) * sw[..., None]).reshape(B, -1)
    r_p = torch.cat([b.prior_diag * coef, math.sqrt(b.focal_prior) * (lf - b.log_f0[rows])[:, None]], dim=1)
    r = torch.cat([r_l, r_p], dim=1)
    if not want_j:
        return r, None, None
    dP = torch.zeros(B, N, 2, 3, dtype=torch.float64)               # d(u, w) / d X_cam
    dP[..., 0, 0] = -f / Z
    dP[..., 0, 2] = f * X[..., 0] / Z ** 2
    dP[..., 1, 1] = f / Z
    dP[..., 1, 2] = -f * X[..., 1] / Z ** 2
    dP = dP * sw[..., None, None]
    J = torch.empty(B, 2 * N, theta.shape[1], dtype=torch.float64)
    h = 1e-6
    for i in range(3):
        e = torch.zeros(3, dtype=torch.float64)
        e[i] = h
        ap, am = a + e, a - e
        dR = (euler_to_matrix(ap[:, 0], ap[:, 1], ap[:, 2]) - euler_to_matrix(am[:, 0], am[:, 1], am[:, 2])) / (2 * h)
        J[:, :, i] = (dP @ (v @ dR.transpose(1, 2))[..., None])[..., 0].reshape(B, 2 * N)
    J[:, :, 3:6] = dP.reshape(B, 2 * N, 3)
    J[:, :, 6] = ((p - c[:, None]) * sw[..., None]).reshape(B, 2 * N)
    J[:, :, 7:] = ((dP @ R[:, None]) @ W).reshape(B, 2 * N, K + E)   # d(u, w) / d(model point) times W
    Jt = J.transpose(1, 2)
    JtJ, Jtr = Jt @ J, (Jt @ r_l[..., None])[..., 0]
    idx = torch.arange(7, 7 + K + E)
    JtJ[:, idx, idx] += b.prior_diag ** 2
    JtJ[:, 6, 6] += b.focal_prior
    Jtr[:, 7:] += b.prior_diag * r_p[:, :-1]
    Jtr[:, 6] += math.sqrt(b.focal_prior) * r_p[:, -1]
    return r, JtJ, Jtr


def batch_correspondences(b: LandmarkBatch, rows: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """The landmark vertices (B, 68) of the faces `rows` at `theta`: jaw points re-matched to each
    face's occluding contour. The contour candidates are projected for all faces in one go (float32,
    as the one-face path projects them) and matched by `select_contour_vertices_batch`."""
    K, E = b.num_identity, b.num_expressions
    th = theta.float()
    v = b.contour_mean + torch.einsum("bk,kvc->bvc", th[:, 7:7 + K], b.contour_identity)
    if E:
        v = v + torch.einsum("be,evc->bvc", th[:, 7 + K:], b.contour_expression)
    R = euler_to_matrix(th[:, 0], th[:, 1], th[:, 2])
    cam = PerspectiveCamera(torch.exp(th[:, 6]), b.center[rows].float())
    with torch.no_grad():
        screen = cam.project(transform(v, R, th[:, 3:6]))[..., :2].numpy()
    corr = select_contour_vertices_batch(b.model, screen, b.landmarks[rows.numpy()])
    corr[:, ~b.valid & (np.arange(68) > 16)] = 0
    return torch.from_numpy(corr)


def batch_damped_step(b: LandmarkBatch, rows: torch.Tensor, theta: torch.Tensor,
                      bases: tuple[torch.Tensor, torch.Tensor], lam: torch.Tensor):
    """One Levenberg-Marquardt step for each face in `rows`: solve (J^T J + lam_b diag(J^T J)) d = -J^T r
    and take theta + d (clamped to the bounds) if it lowers that face's cost; a face whose candidate
    does not retries with 4 lam_b, up to 10 times, while the faces that improved wait.

    Returns (theta, lam, cost before, cost of the last candidate, improved), each (B, ...); a face
    that never improved keeps its theta, as in the one-face `_damped_step`."""
    r, JtJ, Jtr = batch_landmark_residual(b, rows, theta, bases)
    cost = (r * r).sum(1)
    diag = torch.diagonal(JtJ, dim1=1, dim2=2) + 1e-12
    theta, lam = theta.clone(), lam.clone()
    c_cost = cost.clone()
    improved = torch.zeros(len(rows), dtype=torch.bool)
    todo = torch.arange(len(rows))
    for _ in range(10):
        A = JtJ[todo] + torch.diag_embed(lam[todo, None] * diag[todo])
        step = _spd_solve(A, -Jtr[todo])
        cand = torch.minimum(torch.maximum(theta[todo] + step, b.lower), b.upper)
        rc, _, _ = batch_landmark_residual(b, rows[todo], cand, (bases[0][todo], bases[1][todo]), want_j=False)
        cc = (rc * rc).sum(1)
        c_cost[todo] = cc
        ok = cc < cost[todo]
        done = todo[ok]
        theta[done] = cand[ok]
        lam[done] = torch.clamp(lam[done] / 3, min=1e-9)
        improved[done] = True
        lam[todo[~ok]] *= 4
        todo = todo[~ok]
        if todo.numel() == 0:
            break
    return theta, lam, cost, c_cost, improved


def _spd_solve(A: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """A^-1 rhs for damped normal matrices (B, n, n): symmetric positive definite, so a Cholesky
    solve (about half an LU's work); a face whose factorisation fails falls back to LU."""
    L, info = torch.linalg.cholesky_ex(A)
    x = torch.cholesky_solve(rhs[..., None], L)[..., 0]
    bad = info != 0
    if bool(bad.any()):
        x[bad] = torch.linalg.solve(A[bad], rhs[bad])
    return x


def batch_levenberg_marquardt(b: LandmarkBatch, theta: torch.Tensor, steps: int, contour_every: int):
    """Minimise every face's ||r_b||^2 from theta (B, n), re-picking the jaw contour every
    `contour_every` steps; returns theta (B, n) and each face's number of steps (B,).

    A face stops where the one-face loop stops (a step that no longer improves, not right after a
    re-pick); the faces still running go on without it."""
    B = theta.shape[0]
    theta = theta.clone()
    lam = torch.full((B,), 1e-3, dtype=torch.float64)
    corr = torch.zeros(B, 68, dtype=torch.int64)
    iterations = torch.full((B,), steps, dtype=torch.int64)
    active = torch.arange(B)
    bases = None
    for it in range(steps):
        if it % contour_every == 0:
            corr[active] = batch_correspondences(b, active, theta[active])
            bases = gather_landmark_bases(b, corr[active])
        th, lm, cost, c_cost, improved = batch_damped_step(b, active, theta[active], bases, lam[active])
        theta[active], lam[active] = th, lm
        converged = ~improved | ((cost - c_cost) < 1e-9 * torch.clamp(cost, min=1e-12))
        if it >= contour_every and (it + 1) % contour_every != 0 and bool(converged.any()):
            iterations[active[converged]] = it + 1
            keep = ~converged
            active, bases = active[keep], (bases[0][keep], bases[1][keep])
            if active.numel() == 0:
                break
    return theta, iterations
