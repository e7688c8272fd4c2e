"""A statistical albedo model learnt from photos, and the light / albedo estimate it allows.

Neither morphable model here has an albedo model, and one photo's shading alone cannot tell the
light from the albedo and the low-frequency shape under a smooth symmetric albedo prior (the
estimated light was 52-56 degrees off; benchmarks/bench_sfs_ambiguity.py). After the in-the-wild
appearance models (Booth et al., CVPR 2017; Smith et al., "A Morphable Face Albedo Model", CVPR
2020) this module learns, from many photos under varied light, a per-vertex albedo model over the
face skin in which the light varies per photo and the albedo does not:

    rho(z) = mean + B diag(sigma) z,        z ~ N(0, I)                      (Vs x 3 values)

Image model per visible skin vertex v and channel c (Lambertian, 9-term SH light L, as
`face3d.shading`): I_vc = rho_vc * sh_basis(n_v) . L_c.

Learning (`learn_albedo_model`), in two phases over all photos:
  1. the mean and every photo's light together, by alternating least squares of I ~ mean * (Y L_i)
     (over-relaxed, the mean mirror-symmetric), each photo weighted by where it saw the skin
     (texture-confidence weight: cos(normal, view ray) * vertex area; unseen, grazing, dark and
     saturated vertices carry none). Band 2 of each light is ridged (`fit_light`): that is what
     tells a shading-like albedo from light, since a mean darkened like a shading would need the
     same band-2 light in every photo. Without that ridge the light turned by tens of degrees;
  2. the components: each photo's light and coefficients under the current model
     (`estimate_light_albedo`), the photo de-lit, t = I / (Y L), the model's reconstruction where
     it did not see (EM for missing data), and the PCA of the de-lit photos minus the mean after
     projecting out what a change of light does to the mean face (the mean times each SH basis
     function of the mean shape's normals, per channel: 27 directions), so that no component can
     imitate a change of light.
The mean's scale is fixed (median 0.6 on the skin) and its colour starts from the photos' average
(so the lights are white on average): a photo's exposure and tint go into its light. The fitted
lights of the training photos are kept (`lights`): `--relight random` draws from them.

Estimation (`estimate_light_albedo`), alternating: the light by weighted least squares given the
albedo; the coefficients by ridge-regularised least squares given the light (prior N(0, I) against
a per-value noise `noise`); then per mirror pair of vertices an albedo within the model's residual
variance (`_albedo_detail`); Cauchy weights on the residual so that glasses, hair and highlights
do not drag the light.

The file (`save_albedo_model` / `load_albedo_model`) is a plain .npz read with
``allow_pickle=False``: loading it never runs code.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from face3d.errors import FaceSynthError
from face3d.image_io import atomic_write_bytes
from face3d.morphable_model import MorphableModel
from face3d.shading import sh_basis, vertex_normals

ALBEDO_MODEL_VERSION = 1
MEAN_LEVEL = 0.6                 # median of the mean albedo over the skin (fixes the light/albedo scale)
#: `estimate_light_albedo`'s defaults: the leading components it fits and its alternations of light and
#: albedo. Chosen on held-out synthetic faces (bench_albedo.py's protocol, 18 held-out people after the
#: benchmark's own): median light direction error 21.1 deg with all 40 components and 6 alternations,
#: 19.3 with 10 components, 16.4 with 10 and 20 (all 40 with 20: 18.9; 8-12 components with 12-40
#: alternations and the model's own residual variance for the detail: 16-17). The trailing components
#: let the albedo take up part of a light's shading, and 6 alternations stop short of convergence.
ESTIMATE_COMPONENTS = 10
ESTIMATE_ITERATIONS = 20

__all__ = [
    "AlbedoObservation",
    "AlbedoModel",
    "AlbedoEstimate",
    "AlbedoLearnConfig",
    "estimate_light_albedo",
    "learn_albedo_model",
    "mean_albedo",
    "save_albedo_model",
    "load_albedo_model",
    "default_albedo_model_path",
    "shipped_albedo_model",
    "light_direction",
]


# ------------------------------------------------------------------------------------------
# What a photo shows of the skin


@dataclass
class AlbedoObservation:
    """A photo's colours at the model's skin vertices (`model.skin`, in vertex order).

    intensity (Vs, 3) 0..1; weight (Vs,) the data weight (0: unseen, grazing, dark or saturated);
    normals (Vs, 3) the fitted mesh's unit normals in the camera frame."""

    intensity: np.ndarray
    weight: np.ndarray
    normals: np.ndarray

    def save(self, path: Path) -> None:
        buf = io.BytesIO()
        np.savez(buf, intensity=self.intensity.astype(np.float16), weight=self.weight.astype(np.float16),
                 normals=self.normals.astype(np.float16))
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: Path) -> "AlbedoObservation":
        with np.load(path, allow_pickle=False) as z:
            return cls(z["intensity"].astype(np.float32), z["weight"].astype(np.float32),
                       z["normals"].astype(np.float32))


# ------------------------------------------------------------------------------------------
# The model


@dataclass
class AlbedoModel:
    """Per-vertex albedo over the skin: mean (Vs, 3), orthonormal components `basis` (Vs*3, K) with
    standard deviations `stddev` (K,), the per-value variance the components leave (`residual_variance`,
    (Vs, 3)), and the fitted camera-frame SH lights of the training photos (`lights`, (N, 9, 3))."""

    model_name: str
    vertices: np.ndarray             # (Vs,) indices of the skin vertices in the morphable model
    mean: np.ndarray                 # (Vs, 3)
    basis: np.ndarray                # (Vs * 3, K), orthonormal columns
    stddev: np.ndarray               # (K,)
    residual_variance: np.ndarray    # (Vs, 3)
    lights: np.ndarray               # (N, 9, 3)
    info: dict = field(default_factory=dict)
    mirror: np.ndarray | None = None  # (Vs,) each skin vertex's mirror, among the skin vertices

    @property
    def num_components(self) -> int:
        return int(self.stddev.shape[0])

    def albedo(self, coeffs: np.ndarray | None = None) -> np.ndarray:
        """(Vs, 3) albedo of coefficients `coeffs` (K,) in standard deviations (None: the mean)."""
        if coeffs is None or self.num_components == 0:
            return self.mean.copy()
        k = min(len(coeffs), self.num_components)
        return self.mean + (self.basis[:, :k] @ (self.stddev[:k] * coeffs[:k])).reshape(-1, 3)

    def full(self, values: np.ndarray, num_vertices: int) -> np.ndarray:
        """(V, 3) per-vertex array with `values` (Vs, 3) on the skin and 0 elsewhere."""
        out = np.zeros((num_vertices, 3), values.dtype)
        out[self.vertices] = values
        return out


def save_albedo_model(am: AlbedoModel, path: str | Path) -> None:
    """Write `am` as a plain .npz (float16 components, float32 the rest), atomically."""
    info = dict(am.info, version=ALBEDO_MODEL_VERSION, model_name=am.model_name)
    buf = io.BytesIO()
    np.savez_compressed(buf, vertices=am.vertices.astype(np.int32), mean=am.mean.astype(np.float32),
                        basis=am.basis.astype(np.float16), stddev=am.stddev.astype(np.float32),
                        residual_variance=am.residual_variance.astype(np.float32),
                        lights=am.lights.astype(np.float32),
                        mirror=(np.arange(am.vertices.size) if am.mirror is None else am.mirror).astype(np.int32),
                        info=np.frombuffer(json.dumps(info).encode(), np.uint8))
    atomic_write_bytes(Path(path), buf.getvalue())


def load_albedo_model(path: str | Path, model: MorphableModel | None = None) -> AlbedoModel:
    """Read an albedo model file (no pickle); with `model`, check that it was learnt for it."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
        info = json.loads(a["info"].tobytes().decode())
    except (OSError, ValueError, KeyError, UnicodeDecodeError) as exc:
        raise FaceSynthError(f"cannot read albedo model {path}: {exc}") from None
    if info.get("version") != ALBEDO_MODEL_VERSION:
        raise FaceSynthError(f"{path}: albedo model version {info.get('version')}, expected {ALBEDO_MODEL_VERSION}")
    am = AlbedoModel(info["model_name"], a["vertices"].astype(np.int64), a["mean"], a["basis"].astype(np.float32),
                     a["stddev"], a["residual_variance"], a["lights"], info,
                     a["mirror"].astype(np.int64) if "mirror" in a else None)
    if model is not None:
        if am.model_name != model.name or am.vertices.max(initial=-1) >= model.num_vertices \
                or not np.array_equal(am.vertices, np.nonzero(model.skin)[0]):
            raise FaceSynthError(f"{path}: albedo model of {am.model_name}, not of this morphable model ({model.name})")
    return am


def default_albedo_model_path() -> Path:
    """The shipped albedo model of the ICT FaceKit (assets/albedo/)."""
    return Path(__file__).resolve().parent.parent / "assets" / "albedo" / "albedo_ict.npz"


_SHIPPED: dict[str, AlbedoModel | None] = {}


def shipped_albedo_model(model: MorphableModel) -> AlbedoModel | None:
    """The shipped albedo model when it was learnt for `model` (the ICT FaceKit), else None; loaded once."""
    key = f"{model.name}:{model.num_vertices}:{int(model.skin.sum())}"
    if key not in _SHIPPED:
        path = default_albedo_model_path()
        am = None
        if path.exists():
            try:
                am = load_albedo_model(path, model)
            except FaceSynthError:
                am = None
        _SHIPPED[key] = am
    return _SHIPPED[key]


# ------------------------------------------------------------------------------------------
# Light and albedo of one photo


@dataclass
class AlbedoEstimate:
    sh: np.ndarray                   # (9, 3) SH light, camera frame
    coeffs: np.ndarray               # (K,) albedo coefficients, in standard deviations
    albedo: np.ndarray               # (Vs, 3) the model's albedo at those coefficients
    robust: np.ndarray               # (Vs,) final Cauchy weights
    rms: float                       # weighted RMS of the image residual


def _sh(normals: np.ndarray) -> np.ndarray:
    return sh_basis(torch.from_numpy(np.ascontiguousarray(normals, dtype=np.float32))).numpy().astype(np.float64)


def fit_light(Y: np.ndarray, I: np.ndarray, rho: np.ndarray, w: np.ndarray, ridge: float = 1e-3) -> np.ndarray:
    """Weighted least squares of I_vc ~ rho_vc * Y_v . L_c per channel -> L (9, 3); band 2 ridged
    by `ridge` times its own diagonal so that a narrow view cannot blow it up.

    The ridge is relative: the band-2 columns of a face's normals are small and strongly correlated
    with bands 0 and 1 (a face sees one hemisphere), so an absolute ridge shrinks band 2 and band 1
    takes over its part, turning the light by tens of degrees."""
    L = np.zeros((9, 3))
    for c in range(3):
        A = Y * rho[:, c:c + 1]
        Aw = A * w[:, None]
        H = A.T @ Aw
        d = np.diag(H).copy()
        d[:4] = 0.0
        L[:, c] = np.linalg.solve(H + np.diag(ridge * d), Aw.T @ I[:, c])
    return L


def estimate_light_albedo(obs: AlbedoObservation, am: AlbedoModel, iterations: int = ESTIMATE_ITERATIONS,
                          noise: float = 0.06, robust_scale: float = 0.08,
                          components: int | None = ESTIMATE_COMPONENTS,
                          band2_ridge: float = 1.0, detail: bool = True) -> AlbedoEstimate:
    """The SH light (camera frame) and albedo coefficients of one photo under `am` (module doc).

    `detail`: the albedo may leave the model's span per vertex, within the model's per-value
    residual variance and mirror-symmetrically (`_albedo_detail`).

    `noise`: the per-value standard deviation of the image residual the prior is weighed against
    (with the data weights' effective count); `components`: use only the leading ones (None: all),
    the variance of the rest going to the per-value residual variance that `detail` allows
    (a truncated probabilistic PCA); `iterations`: alternations of light and albedo."""
    w0 = obs.weight.astype(np.float64)
    used = w0 > 0
    if used.sum() < 50:
        raise FaceSynthError("too few visible skin vertices to estimate the light")
    Y = _sh(obs.normals[used])
    I = obs.intensity[used].astype(np.float64)
    w0u = w0[used]
    K = am.num_components if components is None else min(components, am.num_components)
    mean = am.mean[used].astype(np.float64)
    if K:
        B = am.basis.reshape(-1, 3, am.num_components)[used][:, :, :K].astype(np.float64) * am.stddev[:K]  # (n, 3, K)
    residual_variance = am.residual_variance
    if K < am.num_components:   # what the components left out vary by goes to the per-value variance
        rest = am.basis[:, K:] * am.stddev[K:]
        residual_variance = residual_variance + (rest ** 2).sum(1).reshape(-1, 3)
    z = np.zeros(K)
    rho = mean.copy()
    robust = np.ones(used.sum())
    # the data points are spatially correlated: count them as ~1 per 25 vertices against the prior
    n_eff = max(float(used.sum()) / 25.0, 1.0)
    for it in range(iterations):
        w = w0u * robust
        L = fit_light(Y, I, rho, w, band2_ridge)
        s = Y @ L                                                             # (n, 3)
        if K:
            A = (s[:, :, None] * B).reshape(-1, K)                            # (n * 3, K)
            r = (I - s * mean).reshape(-1)
            Aw = A * np.repeat(w / w.sum() * n_eff, 3)[:, None]
            H = Aw.T @ A / noise ** 2 + np.eye(K)
            z = np.linalg.solve(H, Aw.T @ r / noise ** 2)
            rho = mean + (B.reshape(-1, K) @ z).reshape(-1, 3)
        if detail and am.mirror is not None:
            rho = _albedo_detail(rho, s, I, w, used, am, noise, residual_variance)
        res = np.linalg.norm(rho * s - I, axis=1)
        robust = 1.0 / (1.0 + (res / robust_scale) ** 2)
    w = w0u * robust
    rms = float(np.sqrt((w[:, None] * (rho * s - I) ** 2).sum() / max(3 * w.sum(), 1e-12)))
    full_robust = np.zeros(obs.weight.shape[0])
    full_robust[used] = robust
    return AlbedoEstimate(L, z, am.albedo(np.pad(z, (0, am.num_components - K))), full_robust, rms)


def _albedo_detail(rho: np.ndarray, s: np.ndarray, I: np.ndarray, w: np.ndarray, used: np.ndarray,
                   am: "AlbedoModel", noise: float, residual_variance: np.ndarray) -> np.ndarray:
    """The MAP per-vertex albedo given the shading `s`: each mirror pair of vertices shares one
    albedo, drawn from N(model's albedo `rho`, `residual_variance` (Vs, 3)) and seen with noise `noise`.

    A face is nearly symmetric in albedo while a light from the side is not, so the pair's two
    shadings tell the side light apart from the person's own colours (the brow, a mole, hair on
    the forehead) that the model's components do not hold."""
    Vs = used.shape[0]
    m = am.mirror
    prec = (w / max(float(w.mean()), 1e-12))[:, None] / noise ** 2
    num = np.zeros((Vs, 3))
    den = np.zeros((Vs, 3))
    num[used] = prec * s * I
    den[used] = prec * s * s
    prior = np.zeros((Vs, 3))
    prior[used] = rho
    has = np.zeros(Vs, bool)
    has[used] = True
    # the prior mean of a pair: the model's albedo where known on either side
    pm = np.where(has[:, None] & has[m][:, None], 0.5 * (prior + prior[m]), np.where(has[:, None], prior, prior[m]))
    tau = 1.0 / np.maximum(0.5 * (residual_variance + residual_variance[m]), 1e-6)
    out = (num + num[m] + pm * tau) / (den + den[m] + tau)
    return out[used]


def light_direction(sh: np.ndarray) -> np.ndarray:
    """Unit direction (x, y, z) of the first-order (band-1) term of an SH light, channels summed."""
    l1 = np.asarray(sh, np.float64)[1:4].sum(axis=1)            # (y, z, x) ordering
    d = np.array([l1[2], l1[0], l1[1]])
    return d / max(np.linalg.norm(d), 1e-12)


# ------------------------------------------------------------------------------------------
# Learning


@dataclass
class AlbedoLearnConfig:
    components: int = 40             # principal components kept
    mean_iterations: int = 80        # alternations of phase 1 (lights and mean)
    relaxation: float = 1.8          # over-relaxation of phase 1's mean update (1: plain alternation)
    rounds: int = 2                  # phase 2: re-estimate light and coefficients, de-light, redo the PCA
    min_weight_share: float = 0.3    # a photo whose used vertices cover less of the skin is left out
    max_ratio: float = 3.0           # de-lit values are clipped to [0, max_ratio * mean level] (shadows, highlights)
    noise: float = 0.06              # `estimate_light_albedo`'s noise while learning
    band2_ridge: float = 1.0         # `fit_light`'s band-2 ridge, in both phases
    robust_scale: float = 0.08       # Cauchy scale of phase 1's image residual
    estimate_iterations: int = 6     # `estimate_light_albedo`'s alternations in phase 2 (all components)


def _light_subspace(mean: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Orthonormal (Vs*3, 27): what a change of light does to the mean face, per channel and SH term."""
    Y = _sh(normals)                                                          # (Vs, 9)
    cols = []
    for c in range(3):
        for k in range(9):
            v = np.zeros_like(mean)
            v[:, c] = mean[:, c] * Y[:, k]
            cols.append(v.reshape(-1))
    q, _ = np.linalg.qr(np.stack(cols, 1))
    return q


def _symmetrise(values: np.ndarray, weights: np.ndarray, mirror: np.ndarray) -> np.ndarray:
    """The weighted average of each value with its mirror vertex's (values (Vs, 3), weights (Vs,))."""
    w = weights + weights[mirror]
    return (values * weights[:, None] + values[mirror] * weights[mirror][:, None]) / np.maximum(w, 1e-12)[:, None]


def skin_mirror(model: MorphableModel) -> np.ndarray:
    """(Vs,) for each skin vertex, the index (among the skin vertices) of its mirror vertex."""
    idx = np.nonzero(model.skin)[0]
    pos = np.full(model.num_vertices, -1, np.int64)
    pos[idx] = np.arange(idx.size)
    m = pos[model.mirror_vertex[idx]]
    return np.where(m >= 0, m, np.arange(idx.size))


def mean_shape_normals(model: MorphableModel) -> np.ndarray:
    """(Vs, 3) unit normals of the mean shape at the skin vertices (model frame)."""
    with torch.no_grad():
        n = vertex_normals(torch.from_numpy(model.mean.astype(np.float32))[None],
                           torch.from_numpy(model.triangles))[0].numpy()
    return n[model.skin].astype(np.float64)


@dataclass
class _PhotoData:
    idx: np.ndarray                  # used skin vertices
    Y: np.ndarray                    # (n, 9) SH basis of their normals
    I: np.ndarray                    # (n, 3)
    w: np.ndarray                    # (n,)


def _mean_and_lights(data: list[_PhotoData], Vs: int, mirror: np.ndarray, colour: np.ndarray,
                     cfg: AlbedoLearnConfig, progress) -> np.ndarray:
    """Phase 1: the mean albedo (Vs, 3) by over-relaxed alternating least squares of
    I ~ mean * (Y L_i) over all photos, each photo's light L_i re-fitted every iteration, the mean
    kept mirror-symmetric.

    What separates a shading-like albedo from light is band 2 of the light, ridged in `fit_light`:
    a mean darkened like a shading would need the same band-2 terms in every photo. That pins the
    mean down only weakly, so the alternation moves slowly along such directions (over-relaxed by
    `cfg.relaxation`; on a toy population, tests/test_albedo_model.py, a model learnt with 80
    iterations reads a new face's light within ~7 degrees, where a flat albedo is ~12 degrees off)."""
    mean = np.tile(colour, (Vs, 1))
    robust = [np.ones(d.w.shape[0]) for d in data]
    for it in range(cfg.mean_iterations):
        num = np.zeros((Vs, 3))
        den = np.zeros((Vs, 3))
        rms = []
        for k, d in enumerate(data):
            rho = mean[d.idx]
            w = d.w * robust[k]
            L = fit_light(d.Y, d.I, rho, w, cfg.band2_ridge)
            sh = d.Y @ L
            r = rho * sh - d.I
            if it % 10 == 0:
                robust[k] = 1.0 / (1.0 + (np.linalg.norm(r, axis=1) / cfg.robust_scale) ** 2)
            rms.append(float(np.sqrt((w[:, None] * r ** 2).sum() / max(3 * w.sum(), 1e-12))))
            np.add.at(num, d.idx, w[:, None] * sh * d.I)
            np.add.at(den, d.idx, w[:, None] * sh * sh)
        seen = den.min(axis=1) > 1e-6
        target = np.where(seen[:, None], num / np.maximum(den, 1e-12), mean)
        target = _symmetrise(target, den.mean(axis=1), mirror)
        mean = target if it == 0 else mean + cfg.relaxation * (target - mean)
        mean[~seen & ~seen[mirror]] = np.median(mean[seen], axis=0)
        mean = np.clip(mean, 1e-3, None)
        mean *= MEAN_LEVEL / max(float(np.median(mean)), 1e-6)
        if progress is not None and (it % 10 == 0 or it == cfg.mean_iterations - 1):
            progress(it, cfg.mean_iterations, f"phase 1, iteration {it}: median image RMS {np.median(rms):.4f}")
    return mean


def photo_data(observations: list[AlbedoObservation]) -> list[_PhotoData]:
    """The used vertices of each observation with their SH basis, colours and weights."""
    out = []
    for o in observations:
        idx = np.nonzero(o.weight > 0)[0]
        out.append(_PhotoData(idx, _sh(o.normals[idx]), o.intensity[idx].astype(np.float64), o.weight[idx].astype(np.float64)))
    return out


def grey_world_colour(data: list[_PhotoData]) -> np.ndarray:
    """(3,) the photos' weighted average skin colour, scaled to median `MEAN_LEVEL`: the flat start of
    the mean, so that the lights are white on average (the colour of light and albedo cannot be told
    apart)."""
    colour = sum((d.I * d.w[:, None]).sum(0) for d in data) / max(sum(float(d.w.sum()) for d in data), 1e-9)
    return MEAN_LEVEL * colour / max(float(np.median(colour)), 1e-9)


def mean_albedo(observations: list[AlbedoObservation], model: MorphableModel,
                config: AlbedoLearnConfig | None = None) -> np.ndarray:
    """Phase 1 alone (`_mean_and_lights`) on `observations`: the (Vs, 3) albedo that, with one light
    per photo, explains them all (photometric stereo on the fitted shapes when they are photos of
    one person)."""
    data = photo_data(observations)
    return _mean_and_lights(data, int(model.skin.sum()), skin_mirror(model), grey_world_colour(data),
                            config or AlbedoLearnConfig(), None)


def learn_albedo_model(observations: list[AlbedoObservation], model: MorphableModel,
                       config: AlbedoLearnConfig | None = None, progress=None, info: dict | None = None) -> AlbedoModel:
    """The albedo model of the module doc, learnt from `observations` (one per photo).

    Phase 1 learns the mean and the lights together (alternating least squares; band 2 of the
    light ridged, which is what separates a shading-like albedo from light: a mean darkened like a
    shading would need band-2 light terms in every photo); phase 2 the components, from the photos
    de-lit by their lights, what the photo did not see filled from the model's reconstruction (EM
    for missing data). `progress(step, steps, message)` is called along the way when given."""
    cfg = config or AlbedoLearnConfig()
    vidx = np.nonzero(model.skin)[0]
    Vs = vidx.size
    mirror = skin_mirror(model)
    obs = [o for o in observations if (o.weight > 0).mean() >= cfg.min_weight_share]
    if len(obs) < 2 * cfg.components:
        raise FaceSynthError(f"{len(obs)} usable photos; an albedo model of {cfg.components} components needs "
                             f"at least {2 * cfg.components}")
    N = len(obs)
    data = photo_data(obs)
    normals = mean_shape_normals(model)
    mean = _mean_and_lights(data, Vs, mirror, grey_world_colour(data), cfg, progress)

    # phase 2: components of the de-lit photos about the mean, light-like directions projected out
    q = _light_subspace(mean, normals)
    am = AlbedoModel(model.name, vidx, mean, np.zeros((Vs * 3, 0)), np.zeros(0), np.zeros((Vs, 3)), np.zeros((0, 9, 3)))
    lights = np.zeros((N, 9, 3))
    X = np.zeros((N, Vs * 3), np.float32)
    W = np.zeros((N, Vs), np.float32)
    cap = cfg.max_ratio * MEAN_LEVEL
    for rnd in range(cfg.rounds + 1):
        rms = []
        for i, o in enumerate(obs):
            est = estimate_light_albedo(o, am, iterations=cfg.estimate_iterations, noise=cfg.noise,
                                        components=None, band2_ridge=cfg.band2_ridge)
            lights[i] = est.sh
            rms.append(est.rms)
            if rnd == cfg.rounds:
                continue
            s = _sh(o.normals) @ est.sh                                        # (Vs, 3)
            seen = (o.weight > 0) & (s.min(axis=1) > 0.05)
            t = np.where(seen[:, None], o.intensity / np.maximum(s, 1e-3), est.albedo)
            X[i] = np.clip(t, 0.0, cap).reshape(-1)
            W[i] = np.where(seen, o.weight * est.robust, 0.0)
        if progress is not None:
            progress(rnd, cfg.rounds, f"phase 2, round {rnd}: {N} photos, median image RMS {np.median(rms):.4f}")
        if rnd == cfg.rounds:
            break
        R = X - mean.reshape(1, -1)
        R -= (R @ q) @ q.T
        # photos count by how much of the skin they saw
        share = W.mean(1)
        pw = np.sqrt(share / max(float(share.max()), 1e-9)).astype(np.float32)
        Rw = torch.from_numpy(R * pw[:, None])
        evals, evecs = torch.linalg.eigh((Rw @ Rw.T).double())
        order = torch.argsort(evals, descending=True)[: cfg.components]
        ev = evals[order].clamp_min(1e-12)
        basis = ((Rw.T.double() @ evecs[:, order]) / ev.sqrt()).numpy()       # (Vs*3, K) orthonormal
        stddev = (ev / float((pw ** 2).sum())).sqrt().numpy()
        left = R - (R @ basis) @ basis.T
        wsum = W.sum(0)
        resid_var = (left.reshape(N, Vs, 3) ** 2 * W[:, :, None]).sum(0) / np.maximum(wsum, 1e-6)[:, None]
        am = AlbedoModel(model.name, vidx, mean, basis, stddev, resid_var, np.zeros((0, 9, 3)))
    am.lights = lights
    am.mirror = mirror
    am.info = dict(info or {}, photos=N, components=cfg.components, mean_iterations=cfg.mean_iterations,
                   rounds=cfg.rounds, band2_ridge=cfg.band2_ridge)
    return am
