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

Profiles: beyond `FitConfig.profile_start_yaw` of yaw, dlib's points for the half of the face that
is turned away (its jaw, brow, eye, nostril and mouth half) are guesses, placed on what the photo
shows of the near half, and they are placed as on a face turned less than it is, which holds the
fitted yaw back. A fit that ends beyond `profile_start_yaw` is therefore fitted again, twice: with
the hidden half at its floor weight `far_side_weight` (the yaw read off the near half and the
midline), then with the weights of that yaw (`face3d.contours.profile_landmark_weights`: times 1
at `profile_start_yaw`, linearly down to `far_side_weight` at `profile_full_yaw`), while the
identity prior rises in step (log-linearly from `identity_prior` to `profile_identity_prior`:
with fewer points to pin it, the shape must not absorb the foreshortening). The dense stage uses
the weights and prior of the landmark stage's yaw. The near half's jaw keeps its contour
correspondences. A face whose first fit ends under `profile_start_yaw` is fitted exactly as without
this (the same numbers, bit for bit). What it gains is small (see docs/benchmarks.md, "Profiles in"):
beyond about 60 degrees dlib's 68-point predictor returns a template that is turned far less than
the face, and no weighting of its points recovers the yaw.

The result type `FaceFit` (`face3d.face_fit`) and the jaw matching (`face3d.contours`) live in
modules of their own, which the dense stage uses too; both are importable from here as well.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from face3d.batched_fitting import batch_levenberg_marquardt, stack_landmark_problems
from face3d.camera import PerspectiveCamera, euler_to_matrix, matrix_to_euler, solve_pnp, transform
from face3d.contours import (JAW, contour_candidate_vertices, far_side_factor, hidden_side, profile_landmark_weights,
                             select_contour_vertices)
from face3d.dense import refine_dense, refine_dense_batch
from face3d.errors import FaceSynthError
from face3d.face_fit import FaceFit
from face3d.landmarks import outer_eye_distance
from face3d.morphable_model import MorphableModel

__all__ = ["FaceFit", "FitConfig", "fit_morphable_model", "fit_morphable_models", "landmark_residuals",
           "landmark_residuals_batch", "mouth_blendshapes",
           "refit_shape_to_landmarks",
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
    profile_weighting: bool = True   # down-weight the hidden half's landmarks on turned faces (module doc)
    profile_start_yaw: float = 30.0  # |yaw| (degrees) where the down-weighting starts
    profile_full_yaw: float = 60.0   # |yaw| where it reaches far_side_weight
    far_side_weight: float = 0.0     # weight factor of the hidden half's landmarks at profile_full_yaw and beyond
    profile_identity_prior: float = 5e-4   # w_id at profile_full_yaw and beyond (module doc)
    seed: int = 0
    device: str = "cpu"              # where the dense stage runs (a torch device; face3d.devices)

    def profile_weights(self, base: np.ndarray, yaw_deg: float) -> np.ndarray:
        """`base` landmark weights with this config's profile down-weighting at `yaw_deg` (`base`
        itself when it is off or the yaw is under `profile_start_yaw`)."""
        if not self.profile_weighting:
            return base
        return profile_landmark_weights(base, yaw_deg, self.profile_start_yaw, self.profile_full_yaw,
                                        self.far_side_weight)

    def identity_prior_at(self, yaw_deg: float) -> float:
        """w_id at `yaw_deg`: `identity_prior`, rising log-linearly to `profile_identity_prior` as the
        hidden half's weight falls to `far_side_weight` (exactly `identity_prior` under the start)."""
        f = self.far_side_factor(yaw_deg)
        if f == 1.0:
            return self.identity_prior
        t = (1.0 - f) / max(1.0 - self.far_side_weight, 1e-9)
        return float(self.identity_prior * (self.profile_identity_prior / self.identity_prior) ** t)

    def far_side_factor(self, yaw_deg: float) -> float:
        """The hidden half's weight factor at `yaw_deg` (1: no down-weighting)."""
        if not self.profile_weighting:
            return 1.0
        return far_side_factor(yaw_deg, self.profile_start_yaw, self.profile_full_yaw, self.far_side_weight)


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
    q, d_eye = _checked_landmarks(landmarks)
    center = (W / 2.0, H / 2.0)
    f0 = initial_focal((H, W), cfg.fov_degrees)

    problem = _landmark_problem(model, q, d_eye, center, f0, cfg)
    theta = _rigid_start(problem, q)
    theta, iterations = _levenberg_marquardt(problem, theta, q, cfg)
    fit = _landmark_stage_fit(problem, theta, q, cfg, iterations, (H, W))
    fit.residuals["landmark_stage_seconds"] = time.perf_counter() - t0
    if cfg.dense and image is not None:
        fit = refine_dense(fit, image, model, cfg)
    fit.residuals.update(landmark_residuals(fit, model))
    fit.residuals["fit_seconds"] = time.perf_counter() - t0
    return fit


def _landmark_stage_fit(problem: _LandmarkProblem, theta: torch.Tensor, q: np.ndarray, cfg: FitConfig,
                        iterations: int, image_size: tuple[int, int]) -> FaceFit:
    """The landmark stage's fit from its Levenberg-Marquardt result `theta`: refitted with the
    profile weighting when it ended beyond `profile_start_yaw` (`_profile_refit`), with what that
    did in its residuals."""
    first_yaw = theta[0]
    theta, iterations = _profile_refit(problem, theta, q, cfg, iterations)
    fit = _face_fit(problem, theta, image_size, q)
    # whether the first fit ended beyond profile_start_yaw and was refitted (else: as without the weighting)
    fit.residuals["profile_refit"] = cfg.far_side_factor(math.degrees(float(first_yaw))) < 1.0
    factor = cfg.far_side_factor(fit.pose.yaw)
    if factor < 1.0:
        fit.residuals["profile_far_side_weight"] = factor
        fit.residuals["profile_hidden_side"] = "left" if hidden_side(fit.pose.yaw) > 0 else "right"
    fit.residuals["landmark_iterations"] = iterations
    return fit


def fit_morphable_models(images: list[np.ndarray | None] | None, landmarks: list[np.ndarray], model: MorphableModel,
                         config: FitConfig | None = None,
                         image_sizes: list[tuple[int, int]] | None = None) -> list[FaceFit]:
    """`fit_morphable_model` for several faces at once: the landmark stage runs as one batched
    Levenberg-Marquardt (`face3d.batched_fitting`: per-face damping and convergence, the same steps
    as one face), so its fixed cost per torch call is paid once per batch instead of once per face.

    `images[i]` is face i's uint8 RGB photo or None (landmarks only; `image_sizes[i]` (H, W) then
    required); `images` None means no photo for any face. Several faces of one photo pass the same
    image. Each result equals `fit_morphable_model` on that face alone within float rounding
    (`tests/test_batched_fit.py` states the tolerance). The dense stage, with `config.dense`, runs
    as one batch over the faces that have a photo (`face3d.dense.refine_dense_batch`). Bad
    landmarks of any face raise before any fitting, as one face would.
    `residuals['landmark_stage_seconds']` is the batch's landmark stage divided by the faces;
    `residuals['batch_size']` says how many faces shared it.
    """
    cfg = config or FitConfig()
    t0 = time.perf_counter()
    n = len(landmarks)
    images = [None] * n if images is None else list(images)
    sizes = [tuple(im.shape[:2]) if im is not None else (tuple(image_sizes[i]) if image_sizes else None)
             for i, im in enumerate(images)]
    if len(images) != n or any(s is None for s in sizes):
        raise ValueError("one image or image size per face is required")
    if n == 0:
        return []
    shared = _model_constants(model, cfg)
    problems, qs, thetas = [], [], []
    for q_raw, (H, W) in zip(landmarks, sizes):
        q, d_eye = _checked_landmarks(q_raw)
        problem = _face_problem(shared, q, d_eye, (W / 2.0, H / 2.0), initial_focal((H, W), cfg.fov_degrees))
        problems.append(problem)
        qs.append(q)
        thetas.append(_rigid_start(problem, q))
    batch = stack_landmark_problems(problems, qs)
    theta, iterations = batch_levenberg_marquardt(batch, torch.stack(thetas), cfg.landmark_steps, cfg.contour_every)
    stage = (time.perf_counter() - t0) / n
    fits = []
    for i, problem in enumerate(problems):
        # a face beyond profile_start_yaw takes its profile refit on its own, as in the one-face path
        fit = _landmark_stage_fit(problem, theta[i], qs[i], cfg, int(iterations[i]), sizes[i])
        fit.residuals.update(landmark_stage_seconds=stage, batch_size=n)
        fits.append(fit)
    dense = [i for i in range(n) if cfg.dense and images[i] is not None]
    for i, fit in zip(dense, refine_dense_batch([fits[i] for i in dense], [images[i] for i in dense], model, cfg)):
        fits[i] = fit
    for fit, res in zip(fits, landmark_residuals_batch(fits, model)):
        fit.residuals.update(res)
    seconds = (time.perf_counter() - t0) / n
    for fit in fits:
        fit.residuals["fit_seconds"] = seconds
    return fits


def refit_shape_to_landmarks(fit: FaceFit, model: MorphableModel, config: FitConfig | None = None) -> FaceFit:
    """The landmark stage again on `fit.landmarks`, from `fit`'s identity and expression, with
    `fit`'s camera (rotation, translation, focal length) held: only the shape moves.

    A refit with other priors (`expression_split`) that also frees the camera can trade the
    face's size against its distance and focal length; its shape is then not the one `fit`'s
    camera was made for. Holding the camera keeps the two comparable: their difference is a shape
    change that projects through `fit`'s camera onto the same landmarks. `config.dense` is ignored.
    """
    cfg = config or FitConfig()
    H, W = fit.image_size
    q, d_eye = _checked_landmarks(fit.landmarks)
    problem = _landmark_problem(model, q, d_eye, tuple(fit.center), initial_focal((H, W), cfg.fov_degrees), cfg)
    K, E = problem.num_identity, problem.num_expressions
    p = fit.pose
    alpha = np.zeros(K, np.float64)
    a = np.asarray(fit.identity, np.float64).reshape(-1)[:K]
    alpha[:a.size] = a
    beta = np.asarray(fit.expression, np.float64).reshape(-1)[:E]
    theta = torch.cat([torch.tensor([math.radians(p.yaw), math.radians(p.pitch), math.radians(p.roll)]),
                       torch.tensor(np.asarray(fit.translation, np.float64).reshape(3)),
                       torch.tensor([math.log(fit.focal)]), torch.from_numpy(alpha),
                       torch.from_numpy(np.asarray(beta, np.float64))]).double()
    theta = torch.minimum(torch.maximum(theta, problem.lower), problem.upper)
    problem.fixed = torch.zeros(theta.numel(), dtype=torch.bool)
    problem.fixed[:7] = True
    theta, _ = _levenberg_marquardt(problem, theta, q, cfg)
    out = _face_fit(problem, theta, (H, W), q)
    # the held camera, exactly (theta's float32 round trip would move it by float noise)
    out.rotation, out.translation, out.focal = fit.rotation, fit.translation, fit.focal
    return out


def _checked_landmarks(landmarks: np.ndarray) -> tuple[np.ndarray, float]:
    """The landmarks as float64 (68, 2) and their outer-eye distance; one-line errors for unusable ones."""
    q = np.asarray(landmarks, dtype=np.float64)
    if q.shape != (68, 2) or not np.all(np.isfinite(q)):
        raise FaceSynthError("landmarks must be a finite (68, 2) array")
    d_eye = outer_eye_distance(q)
    if d_eye < 2:
        raise FaceSynthError("face too small: the outer eye corners are under 2 px apart")
    return q, d_eye


@dataclass
class _LandmarkProblem:
    """The landmark stage's least squares over theta = [yaw, pitch, roll (rad), t (3), log f,
    alpha (K), beta (E)] (float64): the constants of the residual r(theta) and theta's bounds."""

    model: MorphableModel
    num_identity: int                # K
    num_expressions: int             # E (0: expression not fitted)
    center: tuple[float, float]      # principal point (px)
    f0: float                        # initial focal length (px), the focal prior's centre
    focal_prior: float               # w_f
    valid: np.ndarray                # (68,) the landmarks the model has a vertex for
    targets: torch.Tensor            # (68, 2) landmarks (float32 values, in float64)
    point_scale: torch.Tensor        # (68,) sqrt(w_k / sum w) / d_eye
    base_weights: np.ndarray         # (68,) w_k before any profile down-weighting
    eye_distance: float              # d_eye (px)
    prior_diag: torch.Tensor         # (K + E,) sqrt(w_id), sqrt(w_ex)
    mean: torch.Tensor               # (V, 3) float64
    identity_basis: torch.Tensor     # (K, V, 3) float64
    expression_basis: torch.Tensor | None   # (E, V, 3) float64
    lower: torch.Tensor              # (n,) bounds of theta
    upper: torch.Tensor
    fixed: torch.Tensor | None = None   # (n,) bool: parameters held at their start (None: all free)


def _landmark_problem(model: MorphableModel, q: np.ndarray, d_eye: float, center: tuple[float, float],
                      f0: float, cfg: FitConfig) -> _LandmarkProblem:
    return _face_problem(_model_constants(model, cfg), q, d_eye, center, f0)


def _model_constants(model: MorphableModel, cfg: FitConfig) -> dict:
    """The parts of `_LandmarkProblem` that depend on the model and the settings only (shared by
    every face of a batch: the float64 bases are converted once)."""
    K = min(cfg.num_identity, model.num_identity)
    E = model.num_expressions if cfg.fit_expression else 0
    valid = model.landmark_vertices >= 0
    weights = torch.ones(68)
    weights[JAW] = cfg.jaw_weight
    weights[~torch.from_numpy(valid)] = 0.0
    w_ex = np.full(E, cfg.expression_prior)
    if cfg.mouth_expression_prior is not None:
        w_ex[mouth_blendshapes(model, E)] = cfg.mouth_expression_prior
    prior_diag = torch.cat([torch.full((K,), math.sqrt(cfg.identity_prior)), torch.from_numpy(np.sqrt(w_ex))]).double()
    n_par = 7 + K + E
    lower = torch.full((n_par,), -float("inf"), dtype=torch.float64)
    upper = torch.full((n_par,), float("inf"), dtype=torch.float64)
    lower[7:7 + K], upper[7:7 + K] = -3.5, 3.5
    lower[7 + K:], upper[7 + K:] = model.expression_range
    t_mod = model.tensors()
    return dict(model=model, num_identity=K, num_expressions=E, focal_prior=cfg.focal_prior, valid=valid,
                weights=weights, prior_diag=prior_diag, mean=t_mod["mean"].double(),
                identity_basis=t_mod["identity_basis"][:K].double(),
                expression_basis=t_mod["expression_basis"][:E].double() if E else None, lower=lower, upper=upper)


def _face_problem(shared: dict, q: np.ndarray, d_eye: float, center: tuple[float, float], f0: float) -> _LandmarkProblem:
    """One face's problem: its landmarks, eye distance, principal point and focal prior on `shared`
    (`_model_constants`)."""
    const = {k: v for k, v in shared.items() if k != "weights"}
    weights = shared["weights"]
    return _LandmarkProblem(**const, center=center, f0=f0, targets=torch.tensor(q, dtype=torch.float32).double(),
                            point_scale=torch.sqrt(weights.double() / float(weights.sum())) / d_eye,
                            base_weights=weights.double().numpy(), eye_distance=d_eye)


def _rigid_start(problem: _LandmarkProblem, q: np.ndarray) -> torch.Tensor:
    """theta of the mean shape posed by PnP on the inner (non-jaw) landmarks, at the initial focal length."""
    lm = problem.model.landmark_vertices
    inner = np.array([k for k in range(17, 68) if problem.valid[k]])
    R0, t0 = solve_pnp(problem.model.mean[lm[inner]], q[inner], problem.f0, problem.center)
    pose0 = matrix_to_euler(R0)
    return torch.cat([torch.tensor([math.radians(pose0.yaw), math.radians(pose0.pitch), math.radians(pose0.roll)]),
                      torch.tensor(t0, dtype=torch.float32), torch.tensor([math.log(problem.f0)]),
                      torch.zeros(problem.num_identity + problem.num_expressions)]).float().double()


def _unpack32(problem: _LandmarkProblem, theta: torch.Tensor):
    """(angles, translation, log focal, alpha (1, K), beta (1, E)) of theta, in float32."""
    K = problem.num_identity
    th = theta.float()
    return th[:3], th[3:6], th[6], th[7:7 + K][None], th[7 + K:][None]


def _screen_positions(problem: _LandmarkProblem, vert_idx: np.ndarray, theta: torch.Tensor) -> np.ndarray:
    """Pixel positions (n, 2) of some model vertices under the parameters theta."""
    a, tr, lf, al, be = _unpack32(problem, theta)
    with torch.no_grad():
        v = problem.model.shape(al, be if problem.num_expressions else None, vertices=torch.from_numpy(vert_idx))
        R = euler_to_matrix(a[0:1], a[1:2], a[2:3])
        cam = PerspectiveCamera(torch.exp(lf)[None], torch.tensor([problem.center], dtype=torch.float32))
        return cam.project(transform(v, R, tr[None]))[0, :, :2].numpy()


def _rotation(angles: torch.Tensor) -> torch.Tensor:
    return euler_to_matrix(angles[0:1], angles[1:2], angles[2:3])[0]


# Levenberg-Marquardt on the stacked residual vector r(theta) = [landmarks; sqrt(priors)], so that
# ||r||^2 = E. The Jacobian is written out (the model is linear in alpha and beta, the projection's
# derivative is closed-form, R's is by central differences of three angles), which makes a step
# cost well under a millisecond; autograd Jacobians cost ~50 ms here.


def _landmark_residual(problem: _LandmarkProblem, theta: torch.Tensor, corr: torch.Tensor, want_j: bool = True):
    """r(theta) and, with `want_j`, its Jacobian (len(r), n), for the landmark vertices `corr` (68,)."""
    K, E = problem.num_identity, problem.num_expressions
    cx, cy = problem.center
    sw = problem.point_scale
    a, tr, lf = theta[:3], theta[3:6], theta[6]
    al, be = theta[7:7 + K], theta[7 + K:]
    Uc = problem.identity_basis[:, corr]                             # (K, N, 3)
    v = problem.mean[corr] + torch.einsum("k,knc->nc", al, Uc)
    if E:
        Ec = problem.expression_basis[:, corr]
        v = v + torch.einsum("e,enc->nc", be, Ec)
    R = _rotation(a)
    X = v @ R.T + tr                                                 # camera frame (N, 3)
    f = torch.exp(lf)
    Z = X[:, 2]
    u = cx - f * X[:, 0] / Z
    w = cy + f * X[:, 1] / Z
    p = torch.stack([u, w], dim=1)
    r_l = ((p - problem.targets) * sw[:, None]).reshape(-1)
    r_p = torch.cat([problem.prior_diag * torch.cat([al, be]),
                     math.sqrt(problem.focal_prior) * (lf - math.log(problem.f0))[None]])
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
    J = torch.zeros(r.numel(), theta.numel(), dtype=torch.float64)
    h = 1e-6
    for i in range(3):
        e = torch.zeros(3, dtype=torch.float64)
        e[i] = h
        dR = (_rotation(a + e) - _rotation(a - e)) / (2 * h)
        J[: 2 * N, i] = torch.einsum("nij,nj->ni", dP, v @ dR.T).reshape(-1)
    J[: 2 * N, 3:6] = dP.reshape(2 * N, 3)
    J[: 2 * N, 6] = ((p - torch.tensor([cx, cy], dtype=torch.float64)) * sw[:, None]).reshape(-1)
    J[: 2 * N, 7:7 + K] = torch.einsum("nij,knj->nik", dP, Uc @ R.T).reshape(2 * N, K)
    if E:
        J[: 2 * N, 7 + K:] = torch.einsum("nij,enj->nie", dP, Ec @ R.T).reshape(2 * N, E)
    idx = torch.arange(K + E)
    J[2 * N + idx, 7 + idx] = problem.prior_diag
    J[-1, 6] = math.sqrt(problem.focal_prior)
    return r, J


def _landmark_correspondences(problem: _LandmarkProblem, theta: torch.Tensor, q: np.ndarray) -> torch.Tensor:
    """The model vertex of each landmark under theta (jaw points on the occluding contour; 0 for the
    inner landmarks the model lacks, whose weight is 0)."""
    corr = select_contour_vertices(problem.model, lambda idx: _screen_positions(problem, idx, theta), q)
    corr[~problem.valid & (np.arange(68) > 16)] = 0
    return torch.from_numpy(corr)


def _damped_step(problem: _LandmarkProblem, theta: torch.Tensor, corr: torch.Tensor, lam: float):
    """One Levenberg-Marquardt step, raising the damping lam (up to 10 times) until the cost drops.

    Returns (theta, lam, cost before, cost of the last candidate, improved); theta is unchanged
    when no candidate improved."""
    r, J = _landmark_residual(problem, theta, corr)
    if problem.fixed is not None:
        J[:, problem.fixed] = 0.0       # zero gradient and curvature: the damped step leaves them
    JtJ, Jtr = J.T @ J, J.T @ r
    cost = float(r @ r)
    c_cost = cost
    for _ in range(10):
        step = torch.linalg.solve(JtJ + lam * torch.diag(torch.diagonal(JtJ) + 1e-12), -Jtr)
        cand = torch.minimum(torch.maximum(theta + step, problem.lower), problem.upper)
        c_cost = float((_landmark_residual(problem, cand, corr, want_j=False)[0] ** 2).sum())
        if c_cost < cost:
            return cand, max(lam / 3, 1e-9), cost, c_cost, True
        lam *= 4
    return theta, lam, cost, c_cost, False


def _levenberg_marquardt(problem: _LandmarkProblem, theta: torch.Tensor, q: np.ndarray,
                         cfg: FitConfig, steps: int | None = None) -> tuple[torch.Tensor, int]:
    """Minimise ||r(theta)||^2 from `theta`, re-picking the jaw contour every `cfg.contour_every` steps;
    returns theta and the number of steps taken (at most `steps`, default `cfg.landmark_steps`). It
    stops early once a step no longer improves, but not right after a re-pick (the new
    correspondences get their steps)."""
    lam = 1e-3
    for it in range(steps or cfg.landmark_steps):
        if it % cfg.contour_every == 0:
            corr = _landmark_correspondences(problem, theta, q)
        theta, lam, cost, c_cost, improved = _damped_step(problem, theta, corr, lam)
        converged = not improved or (cost - c_cost) < 1e-9 * max(cost, 1e-12)
        if converged and it >= cfg.contour_every and (it + 1) % cfg.contour_every != 0:
            break
    return theta, it + 1


def _profile_refit(problem: _LandmarkProblem, theta: torch.Tensor, q: np.ndarray, cfg: FitConfig,
                   iterations: int) -> tuple[torch.Tensor, int]:
    """A fit that ended beyond `profile_start_yaw` refitted twice (module doc): first with the hidden
    half at its floor weight, so that the yaw is read off the near half and the midline and not held
    back by the guessed half (up to twice the steps: it may have far to turn), then with the weights
    of the yaw that gives, held fixed. (Weights that follow the yaw step by step settle back at the
    first fit's yaw: the guessed half pulls the yaw down, which raises its weight.) Under the start
    yaw, `theta` as it is."""
    yaw = math.degrees(float(theta[0]))
    if cfg.far_side_factor(yaw) == 1.0:
        return theta, iterations
    floor = _profile_problem(problem, math.copysign(max(abs(yaw), cfg.profile_full_yaw), yaw), cfg)
    theta, n1 = _levenberg_marquardt(floor, theta, q, cfg, steps=2 * cfg.landmark_steps)
    theta, n2 = _levenberg_marquardt(_profile_problem(problem, math.degrees(float(theta[0])), cfg), theta, q, cfg)
    return theta, iterations + n1 + n2


def _profile_problem(problem: _LandmarkProblem, yaw: float, cfg: FitConfig) -> _LandmarkProblem:
    """`problem` with the landmark weights and identity prior of `yaw` (degrees; `FitConfig.profile_weights`,
    `FitConfig.identity_prior_at`); `problem` itself under `profile_start_yaw`."""
    w = cfg.profile_weights(problem.base_weights, yaw)
    if w is problem.base_weights:
        return problem
    w_t = torch.from_numpy(w)
    prior = problem.prior_diag.clone()
    prior[:problem.num_identity] = math.sqrt(cfg.identity_prior_at(yaw))
    return replace(problem, point_scale=torch.sqrt(w_t / float(w_t.sum())) / problem.eye_distance, prior_diag=prior)


def _face_fit(problem: _LandmarkProblem, theta: torch.Tensor, image_size: tuple[int, int], q: np.ndarray) -> FaceFit:
    model = problem.model
    a, tr, lf, al, be = _unpack32(problem, theta)
    R = _rotation(a).numpy().astype(np.float64)
    return FaceFit(model_name=model.name, image_size=image_size, identity=al[0].numpy().copy(),
                   expression=(be[0].numpy().copy() if problem.num_expressions
                               else np.zeros(model.num_expressions, np.float32)),
                   rotation=R, translation=tr.numpy().astype(np.float64), focal=float(torch.exp(lf)),
                   center=problem.center, landmarks=q)


def landmark_residuals(fit: FaceFit, model: MorphableModel) -> dict:
    """Reprojection residuals of the fit on its 68 landmarks (jaw matched to the contour)."""
    with torch.no_grad():
        scr = fit.project(model)[0, :, :2].numpy()
    return _residuals_on_screen(fit, model, lambda idx: scr[idx])


def landmark_residuals_batch(fits: list[FaceFit], model: MorphableModel) -> list[dict]:
    """`landmark_residuals` of several fits of `model` at once: only the vertices the residuals read
    (the landmark and jaw-contour candidate vertices) are projected, in one batched call, instead of
    each whole mesh; the figures agree with `landmark_residuals` up to float32 rounding."""
    if not fits:
        return []
    # the last vertex too: a landmark without a vertex (-1) reads it, as `scr[-1]` does (then masked)
    need = np.union1d(np.union1d(contour_candidate_vertices(model), model.landmark_vertices[model.landmark_vertices >= 0]),
                      [model.num_vertices - 1])
    lookup = np.full(model.num_vertices, -1, np.int64)
    lookup[need] = np.arange(need.size)
    ident = torch.from_numpy(np.stack([f.identity for f in fits]).astype(np.float32))
    expr = torch.from_numpy(np.stack([np.asarray(f.expression, np.float32) for f in fits]))
    R = torch.from_numpy(np.stack([f.rotation for f in fits]).astype(np.float32))
    t = torch.from_numpy(np.stack([f.translation for f in fits]).astype(np.float32))
    cam = PerspectiveCamera(torch.tensor([f.focal for f in fits], dtype=torch.float32),
                            torch.tensor([list(f.center) for f in fits], dtype=torch.float32))
    with torch.no_grad():
        v = model.shape(ident, expr, vertices=torch.from_numpy(need))
        scr = cam.project(transform(v, R, t))[..., :2].numpy()
    return [_residuals_on_screen(f, model, lambda idx, s=scr[i]: s[lookup[idx]]) for i, f in enumerate(fits)]


def _residuals_on_screen(fit: FaceFit, model: MorphableModel, screen_of) -> dict:
    """The residual figures from `screen_of(vertex indices) -> (n, 2)` pixel positions of the fit."""
    corr = select_contour_vertices(model, screen_of, fit.landmarks)
    valid = model.landmark_vertices >= 0
    valid[JAW] = True
    per_point = np.linalg.norm(screen_of(corr) - fit.landmarks, axis=1) / outer_eye_distance(fit.landmarks)
    return {"landmark_error": float(per_point[valid].mean()),
            "landmark_error_inner": float(per_point[17:][valid[17:]].mean()),
            "landmark_error_jaw": float(per_point[:17].mean()),
            "landmark_points": int(valid.sum())}
