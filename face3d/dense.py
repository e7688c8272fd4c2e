"""The dense photometric term of the fit: per-vertex albedo under SH shading, with a symmetry prior.

Neither model has an albedo basis, so the colour of each skin vertex is a free unknown a_v. Alone
that would explain any image; two priors make the shading carry geometric information:

    E_dense = 1/|M| sum_{p in M} rho( I(p) - a(p) * (Y(n(p)) . L) )        photometric, robust (Charbonnier)
            + w_sym  1/V sum_v || a_v - a_mirror(v) ||^2                      faces are (nearly) symmetric in albedo
            + w_smooth 1/|edges| sum_(u,v) || a_u - a_v ||^2                 albedo varies slowly
            + E_lmk + priors                                                  as in the landmark stage

where M are the pixels of the visible skin in a face crop of `dense_size` px, a(p) and n(p) are
interpolated with the rasterizer's differentiable barycentrics, Y is the 9-term SH basis and L the
SH lighting (9 x 3). Asymmetric shading can then only come from the light and the geometry, which
is what moves the shape and pose beyond the 68 landmarks.
"""
from __future__ import annotations

import math
import time
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, fields, replace

import cv2
import numpy as np
import torch

from face3d.camera import PerspectiveCamera, euler_to_matrix, transform
from face3d.contours import JAW, contour_candidate_vertices, select_contour_vertices, select_contour_vertices_batch
from face3d.face_fit import FaceFit
from face3d.image_io import sample_bilinear
from face3d.landmarks import outer_eye_distance
from face3d.morphable_model import MorphableModel
from face3d.rasterizer import interpolate_vertex_attributes, interpolate_vertex_attributes_covered, rasterize_meshes
from face3d.shading import sh_basis, vertex_normals

#: the weights w_sym and w_smooth of the module doc
W_SYM, W_SMOOTH = 1.0, 5.0


def _skin_topology(model: MorphableModel):
    """Skin triangles, their vertices and their unique edges (cached on the model)."""
    key = "_skin_topology"
    if key not in model._torch_cache:
        tri = model.triangles
        skin_f = np.nonzero(model.skin[tri].all(axis=1))[0]
        t = tri[skin_f]
        e = np.sort(np.concatenate([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]]), axis=1)
        n = int(tri.max()) + 1
        e = np.unique(e[:, 0] * n + e[:, 1])  # pack each pair into one integer for a fast unique
        edges = np.stack([e // n, e % n], axis=1)
        model._torch_cache[key] = (skin_f, np.unique(t), torch.from_numpy(edges))
    return model._torch_cache[key]


class Adam:
    """Adam (Kingma & Ba 2015), the same update as `torch.optim.Adam` with default betas and eps.

    Written out because constructing `torch.optim.Adam` imports torch's compiler stack on first use,
    which costs ~2.4 s per process: more than the whole dense stage. `tests/test_fitting.py`
    checks it against torch's implementation.
    """

    def __init__(self, groups: list[dict], betas=(0.9, 0.999), eps: float = 1e-8):
        self.groups = [(g["params"], float(g["lr"])) for g in groups]
        self.b1, self.b2 = betas
        self.eps = eps
        self.t = 0
        self.state = {id(p): (torch.zeros_like(p), torch.zeros_like(p)) for ps, _ in self.groups for p in ps}

    def zero_grad(self) -> None:
        for ps, _ in self.groups:
            for p in ps:
                p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        c1 = 1 - self.b1 ** self.t
        c2 = 1 - self.b2 ** self.t
        for ps, lr in self.groups:
            for p in ps:
                if p.grad is None:
                    continue
                m, v = self.state[id(p)]
                m.mul_(self.b1).add_(p.grad, alpha=1 - self.b1)
                v.mul_(self.b2).addcmul_(p.grad, p.grad, value=1 - self.b2)
                p.addcdiv_(m, (v / c2).sqrt_().add_(self.eps), value=-lr / c1)


def face_crop(landmarks: np.ndarray, image_hw, size: int, margin: float = 1.7):
    """Square crop (x0, y0, scale) around the landmarks; pixel in crop = (p - (x0, y0)) * scale."""
    lo, hi = landmarks.min(0), landmarks.max(0)
    c = 0.5 * (lo + hi)
    side = margin * float(max(hi - lo))
    return c[0] - side / 2, c[1] - side / 2, size / side


@contextmanager
def ordered_gradient_sums():
    """Run autograd with torch's deterministic algorithms, restoring the caller's setting after.

    On the CPU with more than one thread, the backward pass of advanced indexing (`verts[faces]`,
    gathers of per-vertex attributes) adds gradients with atomic float adds, so their order, and
    the last bits, change from run to run; over the fit's steps two runs of one photo ended in
    visibly different coefficients. The deterministic mode sorts the indices first and costs
    nothing measurable here (0.73-0.78 s against 0.74-0.75 s per face, 2 threads).
    """
    before = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    set_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        set_deterministic_algorithms(before, warn_only=warn_only)


def set_deterministic_algorithms(mode: bool, warn_only: bool = False) -> None:
    """`torch.use_deterministic_algorithms` without its first-call import of `torch._inductor`
    (which also sets the compiler's flag; nothing here is compiled): that import alone took as long
    as importing torch, a second or more of every fresh `rotate`. Falls back to the public call."""
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None:
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)
    else:
        setter(mode, warn_only=warn_only)


def refine_dense(fit: FaceFit, image: np.ndarray, model: MorphableModel, cfg) -> FaceFit:
    """Refine `fit` (a FaceFit from the landmark stage) with the dense term; returns a new FaceFit.

    Runs `refine_dense_batch` on a batch of one face. The same photo gives the same fit, bit for
    bit, from run to run on the CPU at a given thread count (`ordered_gradient_sums`; on a CUDA GPU
    to float rounding); between thread counts torch's reductions sum in another order, and the fits
    differ in the last bits (2e-6 in the coefficients of a test photo between one thread and two).
    """
    return refine_dense_batch([fit], [image], model, cfg)[0]


def refine_dense_reference(fit: FaceFit, image: np.ndarray, model: MorphableModel, cfg) -> FaceFit:
    """The plain version of the dense stage: one face, the whole mesh, the loss of the module doc
    written out as it reads. `refine_dense` / `refine_dense_batch` are checked against it."""
    with ordered_gradient_sums():
        return _refine_dense(fit, image, model, cfg)


def _refine_dense(fit: FaceFit, image: np.ndarray, model: MorphableModel, cfg) -> FaceFit:
    t0 = time.perf_counter()
    problem, crop = _dense_problem(fit, image, model, cfg)
    var = _start_variables(fit)
    var.albedo = _start_albedo(problem, var, crop)
    opt = _dense_optimizer(var)
    history = []
    corr = None
    for step in range(cfg.dense_steps):
        opt.zero_grad()
        cam_pts, scr = _geometry(problem, var)
        if corr is None or step % 10 == 0:
            corr = _contour_correspondences(problem, var, cam_pts)
        e_photo, loss = _dense_loss(problem, var, cam_pts, scr, corr, cfg)
        loss.backward()
        opt.step()
        _clamp_to_bounds(problem, var)
        history.append(float(e_photo.detach()))
    return _dense_fit(fit, var, problem.num_expressions, history, t0)


@dataclass
class _DenseProblem:
    """The constants of the dense loss: the face crop, the skin mesh, the landmark term's data."""

    model: MorphableModel
    target: torch.Tensor             # (S, S, 3) the face crop, 0..1
    size: int                        # S
    scale: float                     # crop pixels per photo pixel
    crop_centre: torch.Tensor        # (1, 2) principal point in the crop
    photo_centre: torch.Tensor       # (1, 2) principal point in the photo
    faces: torch.Tensor              # (F', 3) the skin triangles
    skin_vertices: np.ndarray        # vertices of the skin triangles
    edges: torch.Tensor              # (n, 2) unique edges of the skin triangles
    mirror: torch.Tensor             # (V,) mirror vertex
    landmarks: np.ndarray            # (68, 2) photo landmarks
    landmark_targets: torch.Tensor   # the same, float32
    landmark_weights: torch.Tensor   # (68,) jaw points down-weighted, missing ones 0
    eye_distance: float              # d_eye (px)
    num_expressions: int             # E (0: expression not fitted)
    log_focal_prior: float           # log f of the landmark stage, the focal prior's centre
    identity_prior: float            # w_id (raised on a profile, as in the landmark stage)


def _dense_problem(fit: FaceFit, image: np.ndarray, model: MorphableModel, cfg) -> tuple[_DenseProblem, np.ndarray]:
    """The dense loss's constants, and the uint8 face crop (S, S, 3) they were made from."""
    S = cfg.dense_size
    x0, y0, sc = face_crop(fit.landmarks, image.shape[:2], S)
    M = np.array([[sc, 0, -x0 * sc], [0, sc, -y0 * sc]], dtype=np.float64)
    crop = cv2.warpAffine(image, M, (S, S), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
    skin_f, used_v, edges = _skin_topology(model)
    lm = model.landmark_vertices
    cpu = torch.device("cpu")     # the constants are made on the CPU (the batch moves them)
    w_l = torch.ones(68, device=cpu)
    w_l[JAW] = cfg.jaw_weight
    w_l[torch.from_numpy(lm < 0)] = 0
    # a profile's hidden half is down-weighted as in the landmark stage, at its fitted yaw (face3d.fitting)
    profile = cfg.profile_weights(w_l.numpy(), fit.pose.yaw)
    if not np.array_equal(profile, w_l.numpy()):
        w_l = torch.from_numpy(np.asarray(profile, dtype=np.float32))
    return _DenseProblem(
        model=model, target=torch.from_numpy(crop).float() / 255.0, size=S, scale=sc,
        crop_centre=torch.tensor([[(fit.center[0] - x0) * sc, (fit.center[1] - y0) * sc]], dtype=torch.float32, device=cpu),
        photo_centre=torch.tensor([fit.center], dtype=torch.float32, device=cpu),
        # only the skin is rasterized and shaded: the term is defined on it, and eyes, mouth socket
        # and the back of the head would cost ~45% more per step for pixels the term ignores
        faces=torch.from_numpy(model.triangles[skin_f]), skin_vertices=used_v, edges=edges,
        mirror=torch.from_numpy(model.mirror_vertex), landmarks=fit.landmarks,
        landmark_targets=torch.tensor(fit.landmarks, dtype=torch.float32, device=cpu), landmark_weights=w_l,
        eye_distance=outer_eye_distance(fit.landmarks),
        num_expressions=fit.expression.shape[0] if cfg.fit_expression else 0, log_focal_prior=math.log(fit.focal),
        identity_prior=cfg.identity_prior_at(fit.pose.yaw),
    ), crop


@dataclass
class _DenseVariables:
    """What the dense stage optimises (leaf tensors): pose, focal length, shape, SH lighting, albedo."""

    angles: torch.Tensor             # (3,) yaw, pitch, roll (rad)
    trans: torch.Tensor              # (3,)
    log_f: torch.Tensor              # log focal length (photo pixels)
    alpha: torch.Tensor              # (1, K)
    beta: torch.Tensor               # (1, E)
    sh: torch.Tensor                 # (9, 3)
    albedo: torch.Tensor | None = None   # (V, 3)


def _start_variables(fit: FaceFit) -> _DenseVariables:
    """The landmark fit's pose and shape, and an ambient light (albedo: `_start_albedo`)."""
    pose = fit.pose
    cpu = torch.device("cpu")
    sh = torch.zeros(9, 3, device=cpu)
    sh[0] = 1.0 / 0.886227
    sh.requires_grad_(True)
    return _DenseVariables(
        angles=torch.tensor([math.radians(pose.yaw), math.radians(pose.pitch), math.radians(pose.roll)], device=cpu,
                            requires_grad=True),
        trans=torch.tensor(fit.translation, dtype=torch.float32, device=cpu, requires_grad=True),
        log_f=torch.tensor(math.log(fit.focal), dtype=torch.float32, device=cpu, requires_grad=True),
        alpha=torch.tensor(fit.identity[None], dtype=torch.float32, device=cpu, requires_grad=True),
        beta=torch.tensor(fit.expression[None], dtype=torch.float32, device=cpu, requires_grad=True), sh=sh)


def _dense_optimizer(var: _DenseVariables) -> Adam:
    """Adam over the dense stage's unknowns, a learning rate each (the same for one face or a batch)."""
    return Adam([
        {"params": [var.angles], "lr": 2e-3}, {"params": [var.trans], "lr": 0.5}, {"params": [var.log_f], "lr": 2e-3},
        {"params": [var.alpha], "lr": 0.02}, {"params": [var.beta], "lr": 0.01},
        {"params": [var.sh], "lr": 0.03}, {"params": [var.albedo], "lr": 0.02},
    ])


def _geometry(problem: _DenseProblem, var: _DenseVariables):
    """The mesh in the camera frame (1, V, 3) and in crop pixels (1, V, 3)."""
    v = problem.model.shape(var.alpha, var.beta if problem.num_expressions else None)
    R = euler_to_matrix(var.angles[0:1], var.angles[1:2], var.angles[2:3])
    cam_pts = transform(v, R, var.trans[None])
    scr = PerspectiveCamera((torch.exp(var.log_f) * problem.scale)[None], problem.crop_centre).project(cam_pts)
    return cam_pts, scr


def _start_albedo(problem: _DenseProblem, var: _DenseVariables, crop: np.ndarray) -> torch.Tensor:
    """The photo's colour at each vertex, averaged with its mirror vertex's (a leaf tensor)."""
    with torch.no_grad():
        _, scr = _geometry(problem, var)
        xy = scr[0, :, :2].numpy()
        sample = sample_bilinear(crop, xy) / 255.0
        a0 = torch.from_numpy(sample.astype(np.float32))
        a0 = 0.5 * (a0 + a0[problem.mirror])
    return a0.clone().requires_grad_(True)


def _contour_correspondences(problem: _DenseProblem, var: _DenseVariables, cam_pts: torch.Tensor) -> torch.Tensor:
    """The model vertex of each landmark at the current pose (jaw points on the occluding contour)."""
    full = PerspectiveCamera(torch.exp(var.log_f.detach())[None], problem.photo_centre).project(cam_pts.detach())[0, :, :2].numpy()
    return torch.from_numpy(select_contour_vertices(problem.model, lambda i: full[i], problem.landmarks).clip(min=0))


def _photometric_energy(problem: _DenseProblem, var: _DenseVariables, cam_pts: torch.Tensor, scr: torch.Tensor):
    """Mean Charbonnier distance between the shaded skin and the crop over the covered pixels."""
    faces = problem.faces
    frag = rasterize_meshes(scr, faces, problem.size, cull_backfaces=True)
    mask = frag.pix_to_face >= 0
    normals = vertex_normals(cam_pts, faces)
    attrs = torch.cat([var.albedo[None], normals], dim=-1)
    pix = interpolate_vertex_attributes(frag, faces, attrs)[0]                      # (S, S, 6)
    n = torch.nn.functional.normalize(pix[..., 3:], dim=-1)
    shade = sh_basis(n) @ var.sh                                                    # (S, S, 3)
    pred = pix[..., :3] * shade
    m = mask[0]
    diff = (pred - problem.target)[m]
    return torch.sqrt(diff ** 2 + 1e-4).mean()


def _dense_loss(problem: _DenseProblem, var: _DenseVariables, cam_pts: torch.Tensor, scr: torch.Tensor,
                corr: torch.Tensor, cfg):
    """(E_photo, E_dense) of the module doc; E_photo is reported, E_dense minimised."""
    albedo, mirror, used_v, edges = var.albedo, problem.mirror, problem.skin_vertices, problem.edges
    e_photo = _photometric_energy(problem, var, cam_pts, scr)
    e_sym = ((albedo[used_v] - albedo[mirror[used_v]]) ** 2).sum(-1).mean()
    e_smooth = ((albedo[edges[:, 0]] - albedo[edges[:, 1]]) ** 2).sum(-1).mean()
    # landmark term in the full image frame, as in the landmark stage
    full_scr = PerspectiveCamera(torch.exp(var.log_f)[None], problem.photo_centre).project(cam_pts[:, corr])[0, :, :2]
    w_l = problem.landmark_weights
    e_lmk = (w_l * ((full_scr - problem.landmark_targets) ** 2).sum(-1)).sum() / w_l.sum() / problem.eye_distance ** 2
    prior = problem.identity_prior * (var.alpha ** 2).sum() + cfg.focal_prior * (var.log_f - problem.log_focal_prior) ** 2
    if problem.num_expressions:
        prior = prior + cfg.expression_prior * (var.beta ** 2).sum()
    return e_photo, cfg.dense_weight * (e_photo + W_SYM * e_sym + W_SMOOTH * e_smooth) * 1e-2 + e_lmk + prior


@torch.no_grad()
def _clamp_to_bounds(problem: "_DenseProblem | _BatchProblem", var: _DenseVariables) -> None:
    """The unknowns back in their ranges, elementwise (one face or a batch alike)."""
    if problem.num_expressions:
        lo, hi = problem.model.expression_range
        var.beta.clamp_(lo, hi)
    var.alpha.clamp_(-3.5, 3.5)
    var.albedo.clamp_(0.0, 1.5)


def _dense_fit(fit: FaceFit, var: _DenseVariables, E: int, history: list[float], t0: float) -> FaceFit:
    """The refined FaceFit, with the photometric term's first and last values and the stage's time."""
    R = euler_to_matrix(var.angles[0:1], var.angles[1:2], var.angles[2:3])[0].detach().numpy().astype(np.float64)
    out = FaceFit(model_name=fit.model_name, image_size=fit.image_size, identity=var.alpha.detach()[0].numpy().copy(),
                  expression=var.beta.detach()[0].numpy().copy() if E else fit.expression, rotation=R,
                  translation=var.trans.detach().numpy().astype(np.float64), focal=float(torch.exp(var.log_f.detach())),
                  center=fit.center, landmarks=fit.landmarks, sh=var.sh.detach().numpy().copy(),
                  albedo=var.albedo.detach().numpy().copy(), residuals=dict(fit.residuals))
    out.residuals["dense_photometric_start"] = history[0] if history else float("nan")
    out.residuals["dense_photometric_end"] = history[-1] if history else float("nan")
    out.residuals["dense_seconds"] = time.perf_counter() - t0
    return out


# ------------------------------------------------------------------------------------------
# The same stage for a batch of faces, on the vertices the loss touches


def refine_dense_batch(fits: list[FaceFit], images: list[np.ndarray], model: MorphableModel, cfg) -> list[FaceFit]:
    """`refine_dense` for several faces at once; `images[i]` is the photo of `fits[i]` (several
    faces of one photo pass the same image). Returns one refined FaceFit per face, in order.

    The faces share no unknown and Adam's update is elementwise, so minimising the sum of their
    losses takes each face through the steps it would take alone: batching changes no maths, only
    how many torch calls a step costs. Four things make each step cheaper than the one-face
    reference (`refine_dense_reference`), all the same maths (only the order of float sums differs):
    - the mesh is cut to the vertices the loss reads (skin, their mirror vertices, the landmark
      and jaw-contour candidates: 9.9k of ICT's 16.4k), so the shape, normals, albedo and their
      gradients skip the eyes, mouth socket and back of the head;
    - the B faces are one rasterizer call and one autograd graph;
    - the two albedo priors are one quadratic form a^T L a with a sparse Laplacian L of the mirror
      pairs and the edges (`DenseMesh.albedo_prior`), whose gradient 2 L a is made in the forward
      pass (`_QuadraticForm`), instead of four gathers and their scatters;
    - the photometric term is shaded on the covered pixels alone (about half of the crop).
    The last two took the stage from 0.32-0.34 s to 0.25-0.27 s per face in batches of 8 (one thread).
    Each result equals the reference's within float rounding (`tests/test_fitting.py` states the
    tolerance); the same faces give the same fits bit for bit on the CPU at a given thread count
    (`refine_dense`). `cfg.device` says where the stage runs (constants made on the CPU, then moved).
    """
    if len(fits) != len(images):
        raise ValueError("one image per fit is required")
    if not fits:
        return []
    # a CUDA GPU adds gradients with atomics in any mode: its fits repeat to float rounding, not bit for bit
    cpu = torch.device(getattr(cfg, "device", "cpu")).type == "cpu"
    with ordered_gradient_sums() if cpu else nullcontext():
        return _refine_dense_batch(fits, images, model, cfg)


def _refine_dense_batch(fits: list[FaceFit], images: list[np.ndarray], model: MorphableModel, cfg) -> list[FaceFit]:
    t0 = time.perf_counter()
    device = torch.device(getattr(cfg, "device", "cpu"))
    mesh = dense_mesh(model, device)
    problem, full_albedo = _batch_problem(fits, images, model, cfg)   # made on the CPU, then moved
    problem, full_albedo = _moved(problem, device), full_albedo.to(device)
    var = _batch_start_variables(fits, device)
    var.albedo = full_albedo[:, mesh.keep].clone().requires_grad_(True)
    opt = _dense_optimizer(var)
    history = []
    corr = None
    for step in range(cfg.dense_steps):
        opt.zero_grad()
        cam_pts, scr = _batch_geometry(problem, mesh, var)
        if corr is None or step % 10 == 0:
            corr = _batch_contour_correspondences(problem, mesh, var, cam_pts)
        e_photo, loss = _batch_loss(problem, mesh, var, cam_pts, scr, corr, cfg)
        loss.sum().backward()
        opt.step()
        _clamp_to_bounds(problem, var)
        history.append(e_photo.detach().clone())
    with torch.no_grad():
        full_albedo = full_albedo.clamp(0.0, 1.5)
        full_albedo[:, mesh.keep] = var.albedo.detach()
    seconds = (time.perf_counter() - t0) / len(fits)
    return [_batch_face_fit(fit, var, b, full_albedo[b], history, seconds, problem.num_expressions)
            for b, fit in enumerate(fits)]


@dataclass
class DenseMesh:
    """The part of a model's mesh that the dense loss reads, with its own vertex numbering."""

    keep: torch.Tensor               # (Vc,) model vertex of each compact vertex, ascending
    lookup: np.ndarray               # (V,) compact index of each model vertex, -1 where not kept
    faces: torch.Tensor              # (F', 3) the skin triangles, compact indices
    # the pairs `albedo_prior` sums over (the loss reads them only through it):
    skin: torch.Tensor               # compact indices of the skin triangles' vertices
    skin_mirror: torch.Tensor        # compact index of each of those vertices' mirror vertex
    edges: torch.Tensor              # (n, 2) unique skin edges, compact indices
    contour: torch.Tensor            # compact indices of `contour_candidate_vertices(model)`, in its order
    mean: torch.Tensor               # (Vc, 3) the model's mean shape on the kept vertices
    identity_basis: torch.Tensor     # (K, Vc, 3)
    expression_basis: torch.Tensor   # (E, Vc, 3)
    #: (Vc, Vc) sparse CSR: a^T L a = W_SYM * E_sym(a) + W_SMOOTH * E_smooth(a) per channel (`_pair_laplacian`)
    albedo_prior: torch.Tensor


def dense_mesh(model: MorphableModel, device: torch.device | str = "cpu") -> DenseMesh:
    """The dense loss's compact mesh (cached on the model, per device): skin vertices, their mirror
    vertices, the landmark vertices and the jaw-contour candidates (the only vertices it projects)."""
    device = torch.device(device)
    if device.type != "cpu":
        key = f"_dense_mesh_{device}"
        if key not in model._torch_cache:
            model._torch_cache[key] = _moved(dense_mesh(model), device)
        return model._torch_cache[key]
    key = "_dense_mesh"
    if key not in model._torch_cache:
        skin_f, used_v, edges = _skin_topology(model)
        mirror = model.mirror_vertex
        lm = model.landmark_vertices
        candidates = contour_candidate_vertices(model)
        keep = np.unique(np.concatenate([used_v, mirror[used_v], lm[lm >= 0], candidates]))
        lookup = np.full(model.num_vertices, -1, dtype=np.int64)
        lookup[keep] = np.arange(keep.size)
        t = model.tensors(torch.device("cpu"))
        k = torch.from_numpy(keep)
        skin, skin_mirror = torch.from_numpy(lookup[used_v]), torch.from_numpy(lookup[mirror[used_v]])
        compact_edges = torch.from_numpy(lookup[edges.numpy()])
        prior = (_pair_laplacian(skin, skin_mirror, keep.size, W_SYM / skin.numel())
                 + _pair_laplacian(compact_edges[:, 0], compact_edges[:, 1], keep.size, W_SMOOTH / compact_edges.shape[0]))
        with warnings.catch_warnings():  # torch's one-time note that CSR tensors are in beta
            warnings.simplefilter("ignore", UserWarning)
            prior = prior.coalesce().to_sparse_csr()
        model._torch_cache[key] = DenseMesh(
            keep=k, lookup=lookup, faces=torch.from_numpy(lookup[model.triangles[skin_f]]),
            skin=skin, skin_mirror=skin_mirror, edges=compact_edges, contour=torch.from_numpy(lookup[candidates]),
            mean=t["mean"][k].contiguous(), identity_basis=t["identity_basis"][:, k].contiguous(),
            expression_basis=t["expression_basis"][:, k].contiguous(), albedo_prior=prior)
    return model._torch_cache[key]


def _moved(obj, device: torch.device):
    """A copy of dataclass `obj` (`DenseMesh`, `_BatchProblem`) with every tensor field on `device`
    (the other fields, the model and NumPy arrays, as they are)."""
    return replace(obj, **{f.name: getattr(obj, f.name).to(device) for f in fields(obj)
                           if isinstance(getattr(obj, f.name), torch.Tensor)})


def _pair_laplacian(i: torch.Tensor, j: torch.Tensor, n: int, weight: float) -> torch.Tensor:
    """`weight` times the graph Laplacian of the vertex pairs (i[k], j[k]), (n, n) sparse COO:
    x^T L x = weight * sum_k (x[i[k]] - x[j[k]])^2. A pair listed twice counts twice and a
    vertex paired with itself adds nothing, as in the sums the dense loss writes out."""
    ones = torch.full((i.numel(),), float(weight), dtype=torch.float32)
    rows = torch.cat([i, j, i, j])
    cols = torch.cat([i, j, j, i])
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), torch.cat([ones, ones, -ones, -ones]), (n, n),
                                   check_invariants=True)


class _QuadraticForm(torch.autograd.Function):
    """q[c] = x[:, c]^T L x[:, c] for a symmetric sparse L (n, n) and x (n, C), with the gradient
    2 L x worked out in the forward pass: one sparse product in all, where autograd through
    `L @ x` would add a transposed sparse product, and through the gathers of the written-out sums
    two index_adds per pair list."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
        Lx = L @ x
        ctx.save_for_backward(Lx)
        return (x * Lx).sum(0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (Lx,) = ctx.saved_tensors
        return 2.0 * Lx * grad, None


@dataclass
class _BatchProblem:
    """`_DenseProblem`'s per-face constants stacked over B faces (the mesh is `DenseMesh`)."""

    model: MorphableModel
    target: torch.Tensor             # (B, S, S, 3)
    size: int
    scale: torch.Tensor              # (B,)
    crop_centre: torch.Tensor        # (B, 2)
    photo_centre: torch.Tensor       # (B, 2)
    landmarks: np.ndarray            # (B, 68, 2)
    landmark_targets: torch.Tensor   # (B, 68, 2)
    landmark_weights: torch.Tensor   # (B, 68)
    eye_distance: torch.Tensor       # (B,)
    num_expressions: int
    log_focal_prior: torch.Tensor    # (B,)
    identity_prior: torch.Tensor     # (B,)


def _batch_problem(fits: list[FaceFit], images: list[np.ndarray], model: MorphableModel, cfg):
    """The stacked constants, and each face's start albedo on the whole mesh (B, V, 3), made by the
    one-face code so that both paths start from the same numbers."""
    problems, albedo = [], []
    for fit, image in zip(fits, images):
        p, crop = _dense_problem(fit, image, model, cfg)
        problems.append(p)
        albedo.append(_start_albedo(p, _start_variables(fit), crop).detach())

    def stack(name):
        return torch.stack([getattr(p, name) for p in problems])

    def floats(name):
        return torch.tensor([float(getattr(p, name)) for p in problems], dtype=torch.float32, device="cpu")

    batch = _BatchProblem(
        model=model, target=stack("target"), size=problems[0].size, scale=floats("scale"),
        crop_centre=torch.cat([p.crop_centre for p in problems]), photo_centre=torch.cat([p.photo_centre for p in problems]),
        landmarks=np.stack([p.landmarks for p in problems]), landmark_targets=stack("landmark_targets"),
        landmark_weights=stack("landmark_weights"), eye_distance=floats("eye_distance"),
        num_expressions=problems[0].num_expressions, log_focal_prior=floats("log_focal_prior"),
        identity_prior=floats("identity_prior"))
    return batch, torch.stack(albedo)


def _batch_start_variables(fits: list[FaceFit], device: torch.device | str = "cpu") -> _DenseVariables:
    """`_start_variables` of every face, stacked on `device`: angles (B, 3), trans (B, 3), log_f (B,),
    alpha (B, K), beta (B, E), sh (B, 9, 3)."""
    one = [_start_variables(f) for f in fits]

    def leaf(name, cat=False):
        ts = [getattr(v, name).detach() for v in one]
        return (torch.cat(ts) if cat else torch.stack(ts)).to(device).clone().requires_grad_(True)

    return _DenseVariables(angles=leaf("angles"), trans=leaf("trans"), log_f=leaf("log_f"), alpha=leaf("alpha", True),
                           beta=leaf("beta", True), sh=leaf("sh"))


# `_basis_product` multiplies the faces' coefficients in blocks of this many rows.
_BASIS_ROWS = 8


def _basis_product(coeffs: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """sum_k coeffs[b, k] basis[k] for each face b: (B, K) x (K', Vc, 3) -> (B, Vc, 3), K <= K'.

    Computed as (8, K) x (K, 3 Vc) products (the batch padded with zero rows to a multiple of 8),
    not as one (B, K) x (K, 3 Vc) product: a matrix product's float rounding depends on how many
    rows it has (and a lone row goes to another kernel), and the dense stage's Adam steps amplify
    that rounding, so a face fitted in a batch ended up away from the same face fitted alone (up to
    a few 1e-3 in the coefficients, a few percent of a view's pixels). With the shape fixed, a face's
    sums and its coefficient gradient come out the same whatever the batch and its place in it
    (tests/test_batched_fit.py), and a batched fit ends within about 1e-6 of the fit alone; a lone
    face pays for 8 rows, about 0.2 ms more per call."""
    B, K = coeffs.shape
    flat = basis[:K].reshape(K, -1)
    n = -(-B // _BASIS_ROWS) * _BASIS_ROWS
    padded = torch.cat([coeffs, coeffs.new_zeros(n - B, K)]) if n > B else coeffs
    out = torch.bmm(padded.view(-1, _BASIS_ROWS, K), flat.expand(n // _BASIS_ROWS, -1, -1))
    return out.view(n, -1, 3)[:B]


def _batch_geometry(problem: _BatchProblem, mesh: DenseMesh, var: _DenseVariables):
    """The compact meshes in the camera frame (B, Vc, 3) and in crop pixels (B, Vc, 3)."""
    v = mesh.mean + _basis_product(var.alpha, mesh.identity_basis)
    if problem.num_expressions:
        v = v + _basis_product(var.beta, mesh.expression_basis)
    R = euler_to_matrix(var.angles[:, 0], var.angles[:, 1], var.angles[:, 2])
    cam_pts = transform(v, R, var.trans)
    scr = PerspectiveCamera(torch.exp(var.log_f) * problem.scale, problem.crop_centre).project(cam_pts)
    return cam_pts, scr


def _batch_contour_correspondences(problem: _BatchProblem, mesh: DenseMesh, var: _DenseVariables,
                                   cam_pts: torch.Tensor) -> torch.Tensor:
    """Each face's landmark vertices (B, 68), compact indices, jaw points on its occluding contour."""
    pts = PerspectiveCamera(torch.exp(var.log_f.detach()), problem.photo_centre).project(cam_pts.detach()[:, mesh.contour])
    full = select_contour_vertices_batch(problem.model, pts[..., :2].cpu().numpy(), problem.landmarks)
    # a landmark the model lacks (-1) has weight 0; any vertex serves
    return torch.from_numpy(np.where(full >= 0, mesh.lookup[full.clip(min=0)], 0)).to(cam_pts.device)


def _batch_photometric_energy(problem: _BatchProblem, mesh: DenseMesh, var: _DenseVariables, cam_pts: torch.Tensor,
                              scr: torch.Tensor) -> torch.Tensor:
    """Each face's mean Charbonnier distance over its covered pixels (B,), computed on those
    pixels alone (the empty ones, weighted 0 in the sum, are never shaded)."""
    frag = rasterize_meshes(scr, mesh.faces, problem.size, cull_backfaces=True)
    normals = vertex_normals(cam_pts, mesh.faces)
    covered, pix = interpolate_vertex_attributes_covered(frag, mesh.faces, torch.cat([var.albedo, normals], dim=-1))
    B = cam_pts.shape[0]
    face_of = torch.div(covered, problem.size * problem.size, rounding_mode="floor")   # (P,) ascending
    counts = torch.bincount(face_of, minlength=B)
    basis = sh_basis(torch.nn.functional.normalize(pix[:, 3:], dim=-1))                # (P, 9)
    # each face's pixels are one contiguous run of `covered`: one (P_b, 9) x (9, 3) product per face
    shade = torch.cat([run @ var.sh[b] for b, run in enumerate(torch.split(basis, counts.tolist()))])
    target = problem.target.reshape(-1, 3).index_select(0, covered)
    charb = torch.sqrt((pix[:, :3] * shade - target) ** 2 + 1e-4).sum(-1)
    total = charb.new_zeros(B).index_add(0, face_of, charb)
    return total / (3 * counts).clamp(min=1)


def _batch_loss(problem: _BatchProblem, mesh: DenseMesh, var: _DenseVariables, cam_pts: torch.Tensor,
                scr: torch.Tensor, corr: torch.Tensor, cfg):
    """(E_photo, E_dense), each (B,): `_dense_loss` of every face."""
    albedo = var.albedo
    e_photo = _batch_photometric_energy(problem, mesh, var, cam_pts, scr)
    # W_SYM * E_sym + W_SMOOTH * E_smooth of every face at once, as one quadratic form on the
    # vertex-major albedo (Vc, B*3) (the reference writes both sums out)
    B = albedo.shape[0]
    e_albedo = _QuadraticForm.apply(albedo.transpose(0, 1).reshape(-1, B * 3), mesh.albedo_prior).view(B, 3).sum(-1)
    lm_pts = torch.gather(cam_pts, 1, corr[..., None].expand(-1, -1, 3))
    full_scr = PerspectiveCamera(torch.exp(var.log_f), problem.photo_centre).project(lm_pts)[..., :2]
    w_l = problem.landmark_weights
    e_lmk = (w_l * ((full_scr - problem.landmark_targets) ** 2).sum(-1)).sum(-1) / w_l.sum(-1) / problem.eye_distance ** 2
    prior = problem.identity_prior * (var.alpha ** 2).sum(-1) + cfg.focal_prior * (var.log_f - problem.log_focal_prior) ** 2
    if problem.num_expressions:
        prior = prior + cfg.expression_prior * (var.beta ** 2).sum(-1)
    return e_photo, cfg.dense_weight * (e_photo + e_albedo) * 1e-2 + e_lmk + prior


def _batch_face_fit(fit: FaceFit, var: _DenseVariables, b: int, albedo: torch.Tensor, history: list[torch.Tensor],
                    seconds: float, E: int) -> FaceFit:
    """Face b's refined FaceFit (as `_dense_fit`); `seconds` is its share of the batch's time."""
    angles = var.angles[b].detach().cpu()
    R = euler_to_matrix(angles[0:1], angles[1:2], angles[2:3])[0].numpy().astype(np.float64)
    out = FaceFit(model_name=fit.model_name, image_size=fit.image_size, identity=var.alpha.detach()[b].cpu().numpy().copy(),
                  expression=var.beta.detach()[b].cpu().numpy().copy() if E else fit.expression, rotation=R,
                  translation=var.trans.detach()[b].cpu().numpy().astype(np.float64),
                  focal=float(torch.exp(var.log_f.detach()[b])), center=fit.center, landmarks=fit.landmarks,
                  sh=var.sh.detach()[b].cpu().numpy().copy(), albedo=albedo.cpu().numpy().copy(),
                  residuals=dict(fit.residuals))
    out.residuals["dense_photometric_start"] = float(history[0][b]) if history else float("nan")
    out.residuals["dense_photometric_end"] = float(history[-1][b]) if history else float("nan")
    out.residuals["dense_seconds"] = seconds
    return out
