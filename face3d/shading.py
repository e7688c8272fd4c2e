"""Mesh normals and spherical-harmonics (SH) Lambertian shading, in PyTorch.

Conventions: right-handed model/camera frame with y up; a face ``(i, j, k)`` whose
vertices appear counter-clockwise seen from outside has the outward normal
``(v_j - v_i) x (v_k - v_i)``.

SH lighting (bands 0..2, 9 coefficients per colour channel) follows Ramamoorthi &
Hanrahan, "An Efficient Representation for Irradiance Environment Maps",
SIGGRAPH 2001: the irradiance at a surface with unit normal n lit by a distant
radiance L(w) = sum_lm L_lm Y_lm(w) is

    E(n) = sum_lm A_l L_lm Y_lm(n),    A_0 = pi,  A_1 = 2 pi / 3,  A_2 = pi / 4,

where A_l are the SH coefficients of the clamped-cosine (Lambertian) kernel. We fold
A_l into the basis: ``sh_basis(n)[k] = A_l(k) * Y_k(n)``, so that
``irradiance = sh_basis(n) @ coeffs`` with ``coeffs[k] = L_k`` the SH coefficients of the
incoming radiance. With this scaling a unit directional light from direction l,
``coeffs = Y(l)`` (see :func:`sh_real_basis`), gives ``E(n) ~= max(0, n . l)`` up to the
band-2 truncation error, and a uniform radiance ``L`` (``coeffs[0] = 2 sqrt(pi) L``) gives
``E = pi * L`` for every normal (see :func:`default_sh_coefficients`).

Ordering of the 9 terms (as in Deep3DFaceRecon / 3DDFA): [1; y, z, x; xy, yz, 3z^2-1, xz, x^2-y^2].
"""
from __future__ import annotations

import math

import torch

__all__ = [
    "face_normals",
    "vertex_normals",
    "sh_real_basis",
    "sh_basis",
    "shade_sh",
    "default_sh_coefficients",
    "SH_NORMALIZATION",
    "SH_LAMBERT",
    "DEEP3D_TO_SH",
]

_EPS = 1e-12

# Real SH normalisation constants Y_k(n) = SH_NORMALIZATION[k] * poly_k(n), with
# poly = [1, y, z, x, xy, yz, 3z^2 - 1, xz, x^2 - y^2] (no Condon-Shortley phase).
SH_NORMALIZATION = (
    0.5 * math.sqrt(1.0 / math.pi),  # Y00 = 0.282095
    math.sqrt(3.0 / (4.0 * math.pi)),  # Y1-1 = 0.488603 y
    math.sqrt(3.0 / (4.0 * math.pi)),  # Y10  = 0.488603 z
    math.sqrt(3.0 / (4.0 * math.pi)),  # Y11  = 0.488603 x
    0.5 * math.sqrt(15.0 / math.pi),  # Y2-2 = 1.092548 xy
    0.5 * math.sqrt(15.0 / math.pi),  # Y2-1 = 1.092548 yz
    0.25 * math.sqrt(5.0 / math.pi),  # Y20  = 0.315392 (3z^2 - 1)
    0.5 * math.sqrt(15.0 / math.pi),  # Y21  = 1.092548 xz
    0.25 * math.sqrt(15.0 / math.pi),  # Y22  = 0.546274 (x^2 - y^2)
)
# Clamped-cosine convolution constants A_l per term (Ramamoorthi & Hanrahan 2001, eq. 8).
SH_LAMBERT = (math.pi,) + (2.0 * math.pi / 3.0,) * 3 + (math.pi / 4.0,) * 5

# Deep3DFaceRecon (Deng et al. 2019, models/facerecon_model / bfm.py) builds its basis with
# a0 = pi, a1 = 2 pi / sqrt(3), a2 = 2 pi / sqrt(8) and signs (-y, +z, -x; +xy, -yz, +, -xz, +):
# its basis equals ours times these per-term factors, so its lighting `gamma` (9 x 3, after
# its +0.8 ambient offset on term 0) converts as ``coeffs = DEEP3D_TO_SH[:, None] * gamma``
# (mind its camera frame: it shades normals in its own rotated frame).
DEEP3D_TO_SH = (
    1.0,
    -math.sqrt(3.0), math.sqrt(3.0), -math.sqrt(3.0),
    2.0 * math.sqrt(2.0), -2.0 * math.sqrt(2.0), 2.0 * math.sqrt(2.0), -2.0 * math.sqrt(2.0), 2.0 * math.sqrt(2.0),
)


def _normalize(v: torch.Tensor, eps: float = _EPS) -> torch.Tensor:
    """v / |v| with a floor on |v|^2: zero vectors stay zero and gradients stay finite."""
    return v * torch.rsqrt((v * v).sum(-1, keepdim=True).clamp_min(eps * eps))


def _face_cross_vertex_major(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Doubled-area face normals (F, B, 3) of verts (B, V, 3), faces (F, 3) int64.

    Gathered vertex-major, from a (V, B*3) copy: each index copies one contiguous row, and the
    backward (an index_add) adds whole rows; along dim 1 of (B, V, 3) both are ~2x slower, and
    advanced indexing's backward sorts its indices under torch's deterministic mode (the dense
    fit runs in it)."""
    B, V = verts.shape[0], verts.shape[1]
    vm = verts.transpose(0, 1).reshape(V, B * 3)
    v0, v1, v2 = (vm.index_select(0, faces[:, k]).view(-1, B, 3) for k in range(3))
    return torch.linalg.cross(v1 - v0, v2 - v0, dim=-1)  # length = 2 * area


def _face_cross(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    faces = faces.to(device=verts.device, dtype=torch.int64)
    if verts.dim() == 2:
        return _face_cross_vertex_major(verts[None], faces)[:, 0]
    return _face_cross_vertex_major(verts, faces).transpose(0, 1)


def face_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Unit face normals: verts (B, V, 3) or (V, 3), faces (F, 3) -> (B, F, 3) or (F, 3).

    Outward for counter-clockwise (right-handed, y-up) faces; zero for degenerate faces.
    """
    return _normalize(_face_cross(verts, faces))


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals: (B, V, 3) or (V, 3) -> same shape. Differentiable.

    Each vertex gets the sum of the (unnormalised, i.e. area-weighted) normals of its faces,
    normalised with an epsilon floor (isolated vertices get a zero normal, no NaN).
    """
    faces = faces.to(device=verts.device, dtype=torch.int64)
    batched = verts.dim() == 3
    v = verts if batched else verts[None]
    B, V = v.shape[0], v.shape[1]
    cross = _face_cross_vertex_major(v, faces).reshape(-1, B * 3)     # (F, B*3)
    acc = cross.new_zeros(V, B * 3)
    for k in range(3):                 # vertex-major again: each face adds one contiguous row
        acc = acc.index_add(0, faces[:, k], cross)
    n = acc.view(V, B, 3).transpose(0, 1)
    return _normalize(n if batched else n[0])


def sh_real_basis(directions: torch.Tensor) -> torch.Tensor:
    """Plain real SH basis Y_k(d) of bands 0..2: (..., 3) unit directions -> (..., 9).

    Use it to encode lights: a unit-intensity directional light from direction ``l``
    (pointing towards the light) has radiance coefficients ``Y(l)``.
    """
    x, y, z = directions.unbind(-1)
    c = SH_NORMALIZATION
    return torch.stack(
        [
            torch.full_like(x, c[0]),
            c[1] * y,
            c[2] * z,
            c[3] * x,
            c[4] * x * y,
            c[5] * y * z,
            c[6] * (3.0 * z * z - 1.0),
            c[7] * x * z,
            c[8] * (x * x - y * y),
        ],
        -1,
    )


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """Irradiance SH basis: (..., 3) unit normals -> (..., 9), ``A_l(k) * Y_k(n)``.

    Exact per-term constants (A_l * normalisation), ordering [1; y, z, x; xy, yz, 3z^2-1, xz, x^2-y^2]:

        k=0: pi * 0.5*sqrt(1/pi)                 = sqrt(pi)/2      = 0.886227
        k=1,2,3 (y, z, x): 2pi/3 * sqrt(3/(4pi)) = sqrt(pi/3)      = 1.023327
        k=4,5,7 (xy, yz, xz): pi/4 * 0.5*sqrt(15/pi)               = 0.858086
        k=6 (3z^2 - 1): pi/4 * 0.25*sqrt(5/pi)                     = 0.247708
        k=8 (x^2 - y^2): pi/4 * 0.25*sqrt(15/pi)                   = 0.429043

    Source: Ramamoorthi & Hanrahan, SIGGRAPH 2001 (A_0 = pi, A_1 = 2pi/3, A_2 = pi/4), the form
    used (with other per-band scales and signs, see ``DEEP3D_TO_SH``) by Deep3DFaceRecon and
    3DDFA. ``irradiance = sh_basis(n) @ coeffs`` where ``coeffs`` are the SH coefficients of
    the incoming radiance.
    """
    lambert = torch.tensor(SH_LAMBERT, dtype=normals.dtype, device=normals.device)
    return sh_real_basis(normals) * lambert


def shade_sh(normals: torch.Tensor, sh_coeffs: torch.Tensor) -> torch.Tensor:
    """Irradiance (B, ..., 3) of unit normals (B, ..., 3) under SH lights (B, 9, 3)."""
    batch = normals.shape[0]
    if sh_coeffs.shape[0] != batch or sh_coeffs.shape[-2:] != (9, 3) or sh_coeffs.dim() != 3:
        raise ValueError(f"sh_coeffs must be ({batch}, 9, 3), got {tuple(sh_coeffs.shape)}")
    basis = sh_basis(normals).reshape(batch, -1, 9)
    return torch.bmm(basis, sh_coeffs.to(basis.dtype)).reshape(*normals.shape[:-1], 3)


def default_sh_coefficients(batch: int = 1, ambient: float = 1.0, *, dtype=torch.float32,
                            device=None) -> torch.Tensor:
    """(B, 9, 3) coefficients of a uniform light: irradiance == ``ambient`` for every normal.

    Only the band-0 term is set: ambient / (pi * Y00) = ambient * 2 / sqrt(pi).
    """
    coeffs = torch.zeros(batch, 9, 3, dtype=dtype, device=device)
    coeffs[:, 0, :] = ambient / (SH_LAMBERT[0] * SH_NORMALIZATION[0])
    return coeffs
