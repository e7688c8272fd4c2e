"""Tests of face3d.shading: normals and SH irradiance."""
from __future__ import annotations

import math

import pytest
import torch

from face3d.shading import (
    DEEP3D_TO_SH,
    default_sh_coefficients,
    face_normals,
    sh_basis,
    sh_real_basis,
    shade_sh,
    vertex_normals,
)


def uv_sphere(n_slices=24, n_stacks=12, radius=1.0):
    """Closed UV sphere, faces counter-clockwise seen from outside (y up)."""
    theta = torch.linspace(0, math.pi, n_stacks + 1, dtype=torch.float64)[1:-1]
    phi = torch.arange(n_slices, dtype=torch.float64) * (2 * math.pi / n_slices)
    st, ph = torch.meshgrid(theta, phi, indexing="ij")
    ring = torch.stack([torch.sin(st) * torch.sin(ph), torch.cos(st), torch.sin(st) * torch.cos(ph)], -1)
    verts = torch.cat([ring.reshape(-1, 3), torch.tensor([[0, 1.0, 0], [0, -1.0, 0]], dtype=torch.float64)])
    top, bottom = verts.shape[0] - 2, verts.shape[0] - 1

    def vid(i, j):
        return i * n_slices + j % n_slices

    faces = []
    for j in range(n_slices):
        faces.append((top, vid(0, j), vid(0, j + 1)))
        faces.append((bottom, vid(n_stacks - 2, j + 1), vid(n_stacks - 2, j)))
    for i in range(n_stacks - 2):
        for j in range(n_slices):
            a, b, c, d = vid(i, j), vid(i, j + 1), vid(i + 1, j), vid(i + 1, j + 1)
            faces += [(a, c, b), (b, c, d)]
    return verts * radius, torch.tensor(faces)


def random_unit(n, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n, 3, generator=g, dtype=dtype)
    return v / v.norm(dim=-1, keepdim=True)


# ----------------------------------------------------------------------------- normals
def test_sphere_vertex_normals_point_outward_and_are_unit():
    verts, faces = uv_sphere()
    # Ellipsoid-ish, off-centre, batched: normals are still outward (positive radial part).
    scales = torch.tensor([[1.0, 1.0, 1.0], [1.3, 0.8, 1.1]], dtype=torch.float64)
    centre = torch.tensor([0.5, -2.0, 3.0], dtype=torch.float64)
    batch = verts.unsqueeze(0) * scales.unsqueeze(1) + centre
    n = vertex_normals(batch, faces)
    assert n.shape == batch.shape
    torch.testing.assert_close(n.norm(dim=-1), torch.ones(2, verts.shape[0], dtype=torch.float64))
    assert ((n * (batch - centre)).sum(-1) > 0).all()
    # On the unit sphere they are close to the radial direction.
    assert ((n[0] * verts).sum(-1) > 0.99).all()
    # Unbatched input gives the same as batch element 0.
    torch.testing.assert_close(vertex_normals(verts + centre, faces), n[0])
    fn = face_normals(batch, faces)
    assert fn.shape == (2, faces.shape[0], 3)
    centroids = batch[:, faces].mean(2)
    assert ((fn * (centroids - centre)).sum(-1) > 0).all()
    torch.testing.assert_close(fn.norm(dim=-1), torch.ones(2, faces.shape[0], dtype=torch.float64))


def test_vertex_normals_are_area_weighted():
    # Vertex 0 shared by a large triangle in the z=0 plane and a small one in the x=0 plane.
    verts = torch.tensor([[0.0, 0, 0], [4, 0, 0], [0, 4, 0], [0, 0, -1], [0, 1, 0]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [0, 3, 4]])
    n = vertex_normals(verts, faces)
    big, small = torch.tensor([0.0, 0, 16]), torch.tensor([1.0, 0, 0])  # 2*area * unit normal
    expected = (big + small) / (big + small).norm()
    torch.testing.assert_close(n[0], expected.double())


def test_normals_eps_safe_and_differentiable():
    verts = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [5, 5, 5], [2, 0, 0]],
                         dtype=torch.float64, requires_grad=True)
    faces = torch.tensor([[0, 1, 2], [0, 1, 4]])  # second face degenerate; vertex 3 isolated
    n = vertex_normals(verts, faces)
    assert torch.isfinite(n).all() and (n[3] == 0).all()
    n.sum().backward()
    assert torch.isfinite(verts.grad).all()
    v = torch.randn(1, 6, 3, dtype=torch.float64, requires_grad=True)
    f = torch.tensor([[0, 1, 2], [2, 1, 3], [3, 4, 5], [0, 2, 5]])
    assert torch.autograd.gradcheck(lambda x: vertex_normals(x, f), (v,))


# ---------------------------------------------------------------------------- SH basis
def _sphere_quadrature(n_theta=200, n_phi=400):
    """Midpoint-rule directions and solid-angle weights over the unit sphere."""
    theta = (torch.arange(n_theta, dtype=torch.float64) + 0.5) * math.pi / n_theta
    phi = (torch.arange(n_phi, dtype=torch.float64) + 0.5) * 2 * math.pi / n_phi
    t, p = torch.meshgrid(theta, phi, indexing="ij")
    d = torch.stack([torch.sin(t) * torch.cos(p), torch.sin(t) * torch.sin(p), torch.cos(t)], -1).reshape(-1, 3)
    w = (torch.sin(t) * (math.pi / n_theta) * (2 * math.pi / n_phi)).reshape(-1)
    return d, w


def test_real_sh_basis_is_orthonormal():
    d, w = _sphere_quadrature()
    y = sh_real_basis(d)
    gram = (y * w.unsqueeze(1)).T @ y
    torch.testing.assert_close(gram, torch.eye(9, dtype=torch.float64), atol=1e-4, rtol=0)


def test_sh_basis_constants_by_projecting_the_clamped_cosine():
    # Numerically project E(n) = max(0, n . l) onto the real SH; with radiance coefficients
    # Y(l) (a unit directional light), sh_basis must reproduce exactly that projection:
    # int E(n) Y_k(n) dn == sh_basis(l)[k]  (A_l Y_k(l), the Funk-Hecke theorem).
    d, w = _sphere_quadrature()
    for seed in range(3):
        light = random_unit(1, seed=seed)[0]
        irradiance = (d @ light).clamp(min=0)
        projection = (sh_real_basis(d) * (irradiance * w).unsqueeze(1)).sum(0)
        torch.testing.assert_close(projection, sh_basis(light), atol=2e-4, rtol=0)


def test_directional_light_irradiance_within_band2_truncation_error():
    light = torch.tensor([0.3, 0.5, 0.8], dtype=torch.float64)
    light = light / light.norm()
    coeffs = sh_real_basis(light).view(1, 9, 1).expand(1, 9, 3)  # white light, (B, 9, 3)
    normals = random_unit(20000, seed=1).view(1, 100, 200, 3)
    e = shade_sh(normals, coeffs)
    assert e.shape == (1, 100, 200, 3)
    exact = (normals @ light).clamp(min=0)
    err = (e[..., 0] - exact).abs()
    # Order-2 approximation of max(0, t): 1/4 + t/2 + 5/32 (3t^2 - 1); its largest error is
    # 3/32 = 0.09375 (at t = 0), its mean error over the sphere about 0.031.
    assert err.max() <= 3 / 32 + 1e-9
    assert err.max() > 0.09  # the truncation is really there
    assert 0.02 < err.mean() < 0.04
    t = normals @ light
    torch.testing.assert_close(e[..., 1], 0.25 + t / 2 + 5 / 32 * (3 * t * t - 1))


def test_deep3d_conversion_factors():
    # Deep3DFaceRecon's basis (a0 = pi, a1 = 2pi/sqrt(3), a2 = 2pi/sqrt(8)).
    n = random_unit(50, seed=4)
    x, y, z = n.unbind(-1)
    a0, a1, a2 = math.pi, 2 * math.pi / math.sqrt(3.0), 2 * math.pi / math.sqrt(8.0)
    c0, c1, c2 = 1 / math.sqrt(4 * math.pi), math.sqrt(3.0) / math.sqrt(4 * math.pi), 3 * math.sqrt(5.0) / math.sqrt(12 * math.pi)
    deep3d = torch.stack([
        a0 * c0 * torch.ones_like(x), -a1 * c1 * y, a1 * c1 * z, -a1 * c1 * x,
        a2 * c2 * x * y, -a2 * c2 * y * z, 0.5 * a2 * c2 / math.sqrt(3.0) * (3 * z * z - 1),
        -a2 * c2 * x * z, 0.5 * a2 * c2 * (x * x - y * y)], -1)
    torch.testing.assert_close(deep3d, sh_basis(n) * torch.tensor(DEEP3D_TO_SH, dtype=torch.float64))


# ------------------------------------------------------------------------- shading API
def test_default_coefficients_give_constant_irradiance():
    coeffs = default_sh_coefficients(batch=3, ambient=0.7)
    assert coeffs.shape == (3, 9, 3)
    assert (coeffs[:, 1:] == 0).all()
    normals = random_unit(3 * 64, seed=2, dtype=torch.float32).view(3, 8, 8, 3)
    e = shade_sh(normals, coeffs)
    torch.testing.assert_close(e, torch.full((3, 8, 8, 3), 0.7))
    torch.testing.assert_close(shade_sh(normals, default_sh_coefficients(3)), torch.ones(3, 8, 8, 3))


def test_shade_sh_per_batch_and_channel():
    g = torch.Generator().manual_seed(5)
    normals = random_unit(2 * 5 * 7, seed=6).view(2, 5, 7, 3)
    coeffs = torch.randn(2, 9, 3, generator=g, dtype=torch.float64)
    e = shade_sh(normals, coeffs)
    expected = torch.einsum("bhwk,bkc->bhwc", sh_basis(normals), coeffs)
    torch.testing.assert_close(e, expected)
    # Vertex-shaped input (B, V, 3) works too, and the result is linear in the light.
    ev = shade_sh(normals.view(2, 35, 3), 2 * coeffs)
    torch.testing.assert_close(ev, 2 * expected.view(2, 35, 3))
    with pytest.raises(ValueError):
        shade_sh(normals, coeffs[:1])
