"""Tests of face3d.rasterizer against a slow, per-triangle reference rasterizer."""
from __future__ import annotations

import math

import pytest
import torch

from face3d import rasterizer as R
from face3d.rasterizer import (
    Fragments,
    interpolate_face_attributes,
    interpolate_vertex_attributes,
    interpolate_vertex_attributes_covered,
    rasterize_meshes,
)


@pytest.fixture(autouse=True, params=["compiled", "torch"])
def cpu_visibility(request, monkeypatch):
    """Every test runs on both CPU visibility passes: the compiled one (face3d.raster_cpu, which
    "auto" takes once a process has rasterized enough) and the vectorised PyTorch one (the
    reference, and the path on CUDA)."""
    monkeypatch.setattr(R, "CPU_VISIBILITY", request.param)
    return request.param


# --------------------------------------------------------------------------------------
# Reference: loop over triangles in Python, test every pixel centre of the image, keep the
# nearest depth (strict <, so the smallest face index wins ties). It uses the same float32
# edge-function arithmetic as the fast rasterizer (w = 2 d x (p - edge midpoint), with the
# direction d = (b - a) * sign(area); tie rule on the direction), so that the two agree
# exactly.
# --------------------------------------------------------------------------------------
def _reference_cover(tri, px, py, perspective_correct=True):
    """Coverage mask and depth of one float32 triangle (3, 3) at pixel centres (N,)."""
    x = [tri[k, 0] for k in range(3)]
    y = [tri[k, 1] for k in range(3)]
    z = [tri[k, 2] for k in range(3)]
    area = (x[1] - x[0]) * (y[2] - y[0]) - (y[1] - y[0]) * (x[2] - x[0])
    sgn = torch.sign(area)
    inside = torch.ones_like(px, dtype=torch.bool)
    w = []
    for k in range(3):
        a, b = (k + 1) % 3, (k + 2) % 3
        dx = (x[b] - x[a]) * sgn  # edge direction, oriented so that w > 0 inside
        dy = (y[b] - y[a]) * sgn
        # 2 * cross(d, p - midpoint): symmetric in a, b up to the sign of d.
        wk = dx * (2 * py - (y[a] + y[b])) - dy * (2 * px - (x[a] + x[b]))
        tie = bool(dy > 0) or (bool(dy == 0) and bool(dx < 0))
        inside &= (wk > 0) | ((wk == 0) & tie)
        w.append(wk)
    wsum = w[0] + w[1] + w[2]
    if perspective_correct:
        depth = wsum / (w[0] * (1.0 / z[0]) + w[1] * (1.0 / z[1]) + w[2] * (1.0 / z[2]))
    else:
        depth = (w[0] * z[0] + w[1] * z[1] + w[2] * z[2]) / wsum
    inside &= torch.isfinite(depth)
    return inside, depth, area


def reference_rasterize(verts, faces, image_size, cull_backfaces=False, perspective_correct=True,
                        return_counts=False):
    """Slow reference. Returns (pix_to_face, zbuf, bary) like Fragments (bary/zbuf in float64)."""
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    batch = verts.shape[0]
    v32 = verts.detach().to(torch.float32)
    jj, ii = torch.meshgrid(torch.arange(w), torch.arange(h), indexing="xy")
    px = jj.reshape(-1).to(torch.float32) + 0.5
    py = ii.reshape(-1).to(torch.float32) + 0.5
    p2f = torch.full((batch, h * w), -1, dtype=torch.int64)
    counts = torch.zeros((batch, h * w), dtype=torch.int64)
    for b in range(batch):
        best = torch.full((h * w,), math.inf)
        for f in range(faces.shape[0]):
            tri = v32[b, faces[f]]
            if not bool((tri[:, 2] > 0).all()):
                continue
            inside, depth, area = _reference_cover(tri, px, py, perspective_correct)
            if area == 0 or (cull_backfaces and area >= 0):
                continue
            counts[b] += inside
            closer = inside & (depth < best)
            best[closer] = depth[closer]
            p2f[b, closer] = f
    # Barycentrics and depth of the winners, in float64 from the raw definition.
    v64 = verts.detach().to(torch.float64)
    bary = torch.zeros((batch, h * w, 3), dtype=torch.float64)
    zbuf = torch.full((batch, h * w), -1.0, dtype=torch.float64)
    for b in range(batch):
        m = p2f[b] >= 0
        tri = v64[b, faces[p2f[b, m]]]  # (P, 3, 3)
        p = torch.stack([px[m], py[m]], -1).to(torch.float64)
        lam = []
        for k in range(3):
            a, c = tri[:, (k + 1) % 3, :2], tri[:, (k + 2) % 3, :2]
            lam.append((c[:, 0] - a[:, 0]) * (p[:, 1] - a[:, 1]) - (c[:, 1] - a[:, 1]) * (p[:, 0] - a[:, 0]))
        lam = torch.stack(lam, -1)
        lam = lam / lam.sum(-1, keepdim=True)
        z = tri[:, :, 2]
        if perspective_correct:
            q = lam / z
            bary[b, m] = q / q.sum(-1, keepdim=True)
            zbuf[b, m] = 1.0 / q.sum(-1)
        else:
            bary[b, m] = lam
            zbuf[b, m] = (lam * z).sum(-1)
    out = (p2f.view(batch, h, w), zbuf.view(batch, h, w), bary.view(batch, h, w, 3))
    return out + (counts.view(batch, h, w),) if return_counts else out


def assert_matches_reference(verts, faces, image_size, **kw):
    frags = rasterize_meshes(verts, faces, image_size, **kw)
    p2f, zbuf, bary = reference_rasterize(verts, faces, image_size, **kw)
    assert isinstance(frags, Fragments)
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    assert frags.pix_to_face.shape == (verts.shape[0], h, w)
    assert frags.pix_to_face.dtype == torch.int64
    assert torch.equal(frags.pix_to_face, p2f), f"{(frags.pix_to_face != p2f).sum()} pixels differ"
    torch.testing.assert_close(frags.zbuf.double(), zbuf, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(frags.bary_coords.double(), bary, rtol=1e-3, atol=1e-3)
    return frags


# ------------------------------------------------------------------------- test meshes
def icosphere(level=2):
    """Unit icosphere, faces counter-clockwise seen from outside (outward normals)."""
    t = (1 + 5**0.5) / 2
    verts = [(-1, t, 0), (1, t, 0), (-1, -t, 0), (1, -t, 0), (0, -1, t), (0, 1, t),
             (0, -1, -t), (0, 1, -t), (t, 0, -1), (t, 0, 1), (-t, 0, -1), (-t, 0, 1)]
    faces = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4),
             (11, 10, 2), (10, 7, 6), (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8),
             (3, 8, 9), (4, 9, 5), (2, 4, 11), (6, 2, 10), (8, 6, 7), (9, 8, 1)]
    verts = [torch.tensor(v, dtype=torch.float64) for v in verts]
    verts = [v / v.norm() for v in verts]
    for _ in range(level):
        cache, new_faces = {}, []

        def mid(i, j):
            key = (min(i, j), max(i, j))
            if key not in cache:
                m = verts[i] + verts[j]
                verts.append(m / m.norm())
                cache[key] = len(verts) - 1
            return cache[key]

        for a, b, c in faces:
            ab, bc, ca = mid(a, b), mid(b, c), mid(c, a)
            new_faces += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
        faces = new_faces
    return torch.stack(verts), torch.tensor(faces, dtype=torch.int64)


def rotation(yaw, pitch, roll=0.0):
    cy, sy, cp, sp, cr, sr = (math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch),
                              math.cos(roll), math.sin(roll))
    ry = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]], dtype=torch.float64)
    rx = torch.tensor([[1, 0, 0], [0, cp, -sp], [0, sp, cp]], dtype=torch.float64)
    rz = torch.tensor([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]], dtype=torch.float64)
    return rz @ rx @ ry


def project(points, rot, image_hw, dist=4.0, focal=None, offset=(0.0, 0.0)):
    """Camera at +z looking down -z (y up in the world); returns pixel x, y (down), depth."""
    h, w = image_hw
    focal = focal if focal is not None else 1.6 * min(h, w)
    p = points @ rot.T
    depth = dist - p[:, 2]
    x = focal * p[:, 0] / depth + w / 2 + offset[0]
    y = -focal * p[:, 1] / depth + h / 2 + offset[1]
    return torch.stack([x, y, depth], -1)


def sphere_views(image_hw, n_views=3, level=2, seed=0):
    verts, faces = icosphere(level)
    g = torch.Generator().manual_seed(seed)
    views = []
    for _ in range(n_views):
        yaw, pitch, roll = (torch.rand(3, generator=g) * 2 - 1).tolist()
        off = ((torch.rand(2, generator=g) - 0.5) * 0.3 * min(image_hw)).tolist()
        views.append(project(verts, rotation(2 * yaw, pitch, roll), image_hw, offset=off))
    return torch.stack(views).float(), faces


def triangle_soup(batch, n_faces, image_hw, seed):
    """Random overlapping triangles, some behind the camera, degenerate or off-screen."""
    h, w = image_hw
    g = torch.Generator().manual_seed(seed)
    n_verts = 3 * n_faces
    xy = torch.rand(batch, n_verts, 2, generator=g) * torch.tensor([w + 20.0, h + 20.0]) - 10.0
    z = torch.rand(batch, n_verts, 1, generator=g) * 4.0 + 0.5
    verts = torch.cat([xy, z], -1)
    faces = torch.randperm(n_verts, generator=g).view(n_faces, 3)
    # Shrink half of the triangles around their centroid so that sizes vary.
    for b in range(batch):
        for f in range(0, n_faces, 2):
            c = verts[b, faces[f], :2].mean(0)
            verts[b, faces[f], :2] = c + (verts[b, faces[f], :2] - c) * 0.25
    f0, f1, f2, f3, f4, f5 = faces[:6]
    verts[:, f0[0], 2] = -1.0  # one vertex behind the camera
    verts[:, f1[1], 2] = 0.0  # one at z == 0
    verts[:, f2[2]] = verts[:, f2[1]]  # duplicated vertex: zero area
    verts[:, f3[2], :2] = 2 * verts[:, f3[1], :2] - verts[:, f3[0], :2]  # collinear (may round)
    verts[:, f4] += torch.tensor([3.0 * w, 0.0, 0.0])  # off-screen right
    verts[:, f5] -= torch.tensor([0.0, 3.0 * h, 0.0])  # off-screen top
    # Some integer / half-integer vertices so that pixel centres fall exactly on edges.
    verts[:, faces[6:12].reshape(-1), :2] = torch.round(verts[:, faces[6:12].reshape(-1), :2] * 2) / 2
    return verts, faces


# ------------------------------------------------------------------ agreement with reference
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("perspective_correct", [True, False])
def test_triangle_soup_matches_reference(seed, perspective_correct):
    verts, faces = triangle_soup(batch=2, n_faces=40, image_hw=(29, 41), seed=seed)
    frags = assert_matches_reference(verts, faces, (29, 41), perspective_correct=perspective_correct)
    assert (frags.pix_to_face >= 0).any()
    assert (frags.pix_to_face[0] != frags.pix_to_face[1]).any()  # different vertices per batch


@pytest.mark.parametrize("seed", [3, 4])
def test_triangle_soup_culled_matches_reference(seed):
    verts, faces = triangle_soup(batch=2, n_faces=40, image_hw=(33, 27), seed=seed)
    assert_matches_reference(verts, faces, (33, 27), cull_backfaces=True)


@pytest.mark.parametrize("cull", [False, True])
def test_closed_mesh_matches_reference(cull):
    verts, faces = sphere_views((40, 56), n_views=3)
    frags = assert_matches_reference(verts, faces, (40, 56), cull_backfaces=cull)
    # A closed convex mesh: every visible face is front-facing, culled or not.
    tri = verts[torch.arange(3).view(3, 1, 1, 1), faces[frags.pix_to_face.clamp(min=0)]]
    cross = ((tri[..., 1, 0] - tri[..., 0, 0]) * (tri[..., 2, 1] - tri[..., 0, 1])
             - (tri[..., 1, 1] - tri[..., 0, 1]) * (tri[..., 2, 0] - tri[..., 0, 0]))
    assert (cross[frags.pix_to_face >= 0] < 0).all()


def test_square_int_image_size_and_chunking(monkeypatch):
    verts, faces = sphere_views((32, 32), n_views=2, level=1, seed=5)
    frags = assert_matches_reference(verts, faces, 32)
    # Tiny chunks exercise the chunked path; results must be identical.
    monkeypatch.setattr(R, "_MAX_SLOTS_PER_CHUNK", 7)
    small = rasterize_meshes(verts, faces, 32)
    assert torch.equal(small.pix_to_face, frags.pix_to_face)
    assert torch.equal(small.zbuf, frags.zbuf)


def test_large_triangles_in_big_buckets():
    # A few triangles much larger than the image (boxes clamp to the image).
    verts, faces = triangle_soup(batch=1, n_faces=6, image_hw=(24, 24), seed=7)
    verts = verts.clone()
    verts[..., :2] = (verts[..., :2] - 12) * 6 + 12
    verts[..., 2] = verts[..., 2].abs() + 0.5
    assert_matches_reference(verts, faces, (24, 24))


# --------------------------------------------------------------------------- conventions
def test_front_facing_convention_and_pixel_centres():
    # (v1 - v0) x (v2 - v0) < 0 in y-down pixels: counter-clockwise in a y-up image.
    front = torch.tensor([[[2.0, 2.0, 1.0], [2.0, 6.0, 1.0], [6.0, 2.0, 1.0]]])
    faces = torch.tensor([[0, 1, 2]])
    back = front[:, [0, 2, 1]]
    assert (rasterize_meshes(front, faces, 8, cull_backfaces=True).pix_to_face >= 0).any()
    assert (rasterize_meshes(back, faces, 8, cull_backfaces=True).pix_to_face < 0).all()
    covered = rasterize_meshes(back, faces, 8).pix_to_face[0] >= 0
    # Pixel (row i, col j) has its centre at (j + 0.5, i + 0.5): centres strictly inside
    # x > 2, y > 2, x + y < 8 -> (2.5, 2.5), (2.5, 3.5), (3.5, 2.5), plus the ones lying
    # exactly on the boundary that the tie rule gives to this triangle.
    assert covered[2, 2] and covered[3, 2] and covered[2, 3]
    assert not covered[1, 1] and not covered[4, 4] and not covered[2, 6]
    assert covered[:, :2].sum() == 0 and covered[:2].sum() == 0


def test_flush_denormal_mode_gives_same_result():
    verts, faces = triangle_soup(batch=2, n_faces=30, image_hw=(21, 23), seed=8)
    expected = rasterize_meshes(verts, faces, (21, 23))
    if not torch.set_flush_denormal(True):
        pytest.skip("flush-denormal mode not supported on this CPU")
    try:
        assert R._denormals_are_zero(torch.device("cpu"))
        got = rasterize_meshes(verts, faces, (21, 23))
    finally:
        torch.set_flush_denormal(False)
    assert torch.equal(got.pix_to_face, expected.pix_to_face)


def test_behind_camera_and_empty():
    verts = torch.tensor([[[1.0, 1.0, -1.0], [1.0, 7.0, 2.0], [7.0, 1.0, 2.0]]])
    frags = rasterize_meshes(verts, torch.tensor([[0, 1, 2]]), (6, 9))
    assert (frags.pix_to_face == -1).all() and (frags.zbuf == -1).all() and (frags.bary_coords == 0).all()
    assert frags.pix_to_face.shape == (1, 6, 9) and frags.bary_coords.shape == (1, 6, 9, 3)


def test_depth_ties_go_to_smallest_face_index():
    tri = torch.tensor([[1.0, 1.0, 2.0], [1.0, 9.0, 2.0], [9.0, 1.0, 2.0]])
    verts = torch.cat([tri, tri]).unsqueeze(0)
    faces = torch.tensor([[3, 4, 5], [0, 1, 2], [0, 2, 1]])
    p2f = rasterize_meshes(verts, faces, 10).pix_to_face
    assert set(p2f.unique().tolist()) == {-1, 0}


# ---------------------------------------------------------------------------- no cracks
def test_no_cracks_on_closed_mesh():
    from scipy.spatial import Delaunay

    hw = (64, 80)
    verts, faces = sphere_views(hw, n_views=4, level=3, seed=11)
    frags = rasterize_meshes(verts, faces, hw)
    jj, ii = torch.meshgrid(torch.arange(hw[1]), torch.arange(hw[0]), indexing="xy")
    centres = torch.stack([jj + 0.5, ii + 0.5], -1).reshape(-1, 2).numpy()
    for b in range(verts.shape[0]):
        # The silhouette of a convex mesh is the convex hull of its projected vertices.
        hull = Delaunay(verts[b, :, :2].double().numpy())
        inside = torch.from_numpy(hull.find_simplex(centres) >= 0).view(hw)
        covered = frags.pix_to_face[b] >= 0
        assert inside.sum() > 500
        assert covered[inside].all(), f"{(~covered[inside]).sum()} holes inside the silhouette"


def test_shared_edges_exactly_on_pixel_centres_cover_once():
    # A flat grid mesh whose vertices (and so edges) lie on pixel centres: the tie rule must
    # give each centre to exactly one triangle (no cracks, no double coverage).
    n = 6
    ys, xs = torch.meshgrid(torch.arange(n + 1.0), torch.arange(n + 1.0), indexing="ij")
    xy = torch.stack([xs * 2 + 1.5, ys * 3 + 0.5], -1).reshape(-1, 2)  # on centres
    verts = torch.cat([xy, torch.full((xy.shape[0], 1), 2.0)], -1).unsqueeze(0)
    faces = []
    for i in range(n):
        for j in range(n):
            a, b, c, d = i * (n + 1) + j, i * (n + 1) + j + 1, (i + 1) * (n + 1) + j, (i + 1) * (n + 1) + j + 1
            faces += [(a, c, b), (b, c, d)] if (i + j) % 2 else [(a, c, d), (a, d, b)]
    faces = torch.tensor(faces)
    size = (3 * n + 2, 2 * n + 3)
    frags = rasterize_meshes(verts, faces, size)
    p2f, _, _, counts = reference_rasterize(verts, faces, size, return_counts=True)
    assert torch.equal(frags.pix_to_face, p2f)
    # Interior centres (not on the outer boundary) are covered exactly once.
    interior = counts[0, 1:3 * n, 2:2 * n + 1]
    assert (interior == 1).all(), counts[0]
    # Same with the opposite winding (all triangles back-facing).
    frags_r = rasterize_meshes(verts, faces[:, [0, 2, 1]], size)
    assert torch.equal(frags_r.pix_to_face >= 0, frags.pix_to_face >= 0)


# ------------------------------------------------------------------ interpolation & depth
def test_interpolation_face_vs_vertex_attributes():
    verts, faces = sphere_views((30, 30), n_views=2, level=2, seed=3)
    frags = rasterize_meshes(verts, faces, 30)
    attrs = torch.randn(2, verts.shape[1], 4)
    a = interpolate_vertex_attributes(frags, faces, attrs)
    fa = attrs[torch.arange(2).view(2, 1, 1), faces.unsqueeze(0)]  # (B, F, 3, C)
    torch.testing.assert_close(a, interpolate_face_attributes(frags, fa))
    a0 = interpolate_vertex_attributes(frags, faces, attrs[0])  # shared (V, C)
    torch.testing.assert_close(a0, interpolate_face_attributes(frags, fa[0]))
    assert a.shape == (2, 30, 30, 4)
    assert (a[frags.pix_to_face < 0] == 0).all()
    # Interpolating the vertex positions reproduces the pixel centres.
    xy = interpolate_vertex_attributes(frags, faces, verts[..., :2].double())
    m = frags.pix_to_face >= 0
    jj, ii = torch.meshgrid(torch.arange(30), torch.arange(30), indexing="xy")
    centres = torch.stack([jj + 0.5, ii + 0.5], -1).double().expand(2, 30, 30, 2)
    # In screen space only without perspective correction.
    frags_l = rasterize_meshes(verts, faces, 30, perspective_correct=False)
    xy_l = interpolate_vertex_attributes(frags_l, faces, verts[..., :2].double())
    torch.testing.assert_close(xy_l[m], centres[m], atol=2e-3, rtol=0)
    assert (xy[m] - centres[m]).abs().max() > 1e-3  # perspective-correct differs


def test_perspective_correct_depth_on_tilted_plane():
    # World plane z = a*x + b*y + c (camera at origin looking down -z), pinhole projection.
    h, w, focal = 48, 64, 50.0
    a, b, c = 0.4, -0.3, -5.0
    corners = torch.tensor([[-3.0, -2.0], [3.0, -2.0], [3.0, 2.0], [-3.0, 2.0]], dtype=torch.float64)
    pts = torch.cat([corners, (a * corners[:, :1] + b * corners[:, 1:] + c)], -1)
    depth = -pts[:, 2]
    screen = torch.stack([focal * pts[:, 0] / depth + w / 2, -focal * pts[:, 1] / depth + h / 2, depth], -1)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    for dtype in (torch.float32, torch.float64):
        frags = rasterize_meshes(screen.unsqueeze(0).to(dtype), faces, (h, w))
        m = frags.pix_to_face[0] >= 0
        assert m.sum() > 0.5 * h * w
        jj, ii = torch.meshgrid(torch.arange(w), torch.arange(h), indexing="xy")
        rx = (jj + 0.5 - w / 2) / focal  # ray direction (rx, ry, -1)
        ry = -(ii + 0.5 - h / 2) / focal
        t = c / (-1 - a * rx - b * ry)  # ray point t * (rx, ry, -1) on the plane; depth = t
        torch.testing.assert_close(frags.zbuf[0][m].double(), t[m].double(), rtol=1e-5, atol=0)
        # Perspective-correct interpolation of a world attribute (x) matches the ray hit.
        wx = interpolate_vertex_attributes(frags, faces, pts[:, :1].to(dtype))[0, ..., 0]
        torch.testing.assert_close(wx[m].double(), (t * rx)[m].double(), rtol=0, atol=1e-4)
    lin = rasterize_meshes(screen.unsqueeze(0).float(), faces, (h, w), perspective_correct=False)
    assert (lin.zbuf[0][m].double() - t[m]).abs().max() > 1e-2  # affine depth is not exact


# --------------------------------------------------------------------------------- gradients
def _small_scene(dtype=torch.float64):
    verts = torch.tensor([[[1.3, 0.7, 2.0], [7.6, 1.95, 3.0], [2.2, 7.1, 2.5], [7.2, 7.4, 1.5]],
                          [[0.6, 1.2, 1.5], [6.9, 0.8, 2.0], [1.7, 6.6, 3.0], [6.4, 6.2, 2.5]]], dtype=dtype)
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    attrs = torch.tensor([[1.0, -2.0], [0.5, 3.0], [2.0, 0.0], [-1.0, 1.0]], dtype=dtype)
    return verts, faces, attrs.expand(2, 4, 2).contiguous()


@pytest.mark.parametrize("perspective_correct", [True, False])
def test_gradcheck_interpolation(perspective_correct):
    verts, faces, attrs = _small_scene()
    verts.requires_grad_(True)
    attrs.requires_grad_(True)

    def fn(v, a):
        frags = rasterize_meshes(v, faces, 8, perspective_correct=perspective_correct)
        return interpolate_vertex_attributes(frags, faces, a), frags.zbuf

    assert torch.autograd.gradcheck(fn, (verts, attrs), eps=1e-6, atol=1e-6)
    out, _ = fn(verts, attrs)
    assert (out.abs().sum(-1) > 0).sum() > 20


def test_gradients_zero_and_finite_at_empty_pixels():
    verts, faces, attrs = _small_scene(torch.float32)
    verts = verts * 0.5  # leaves a large empty region
    verts.requires_grad_(True)
    attrs.requires_grad_(True)
    frags = rasterize_meshes(verts, faces, 12)
    out = interpolate_vertex_attributes(frags, faces, attrs)
    empty = frags.pix_to_face < 0
    assert empty.sum() > 50
    # A loss on the empty pixels only: zero gradients.
    loss = (out[empty] ** 2).sum() + frags.zbuf[empty].sum() + frags.bary_coords[empty].sum()
    gv, ga = torch.autograd.grad(loss, (verts, attrs), retain_graph=True)
    assert (gv == 0).all() and (ga == 0).all()
    # A loss over all pixels: finite, nonzero gradients.
    loss = out.sum() + frags.zbuf.sum() + frags.bary_coords.pow(2).sum()
    gv, ga = torch.autograd.grad(loss, (verts, attrs))
    assert torch.isfinite(gv).all() and torch.isfinite(ga).all()
    assert gv.abs().sum() > 0 and ga.abs().sum() > 0


def test_bary_gradient_moves_with_vertex():
    # Moving a vertex right increases its barycentric weight at pixels to its right side.
    verts = torch.tensor([[[2.0, 2.0, 1.0], [2.0, 14.0, 1.0], [14.0, 8.0, 1.0]]], requires_grad=True)
    frags = rasterize_meshes(verts, torch.tensor([[0, 1, 2]]), 16)
    frags.bary_coords[..., 2].sum().backward()
    assert verts.grad[0, 2, 0] < 0  # moving v2 further right spreads (lowers) its weights


def test_box_size_lookup_tables_match_their_definition():
    # each code is the index of the first bucket size that holds a box of n rows / columns
    for sizes, lut in ((R._ROW_SIZES, R._ROW_LUT), (R._COL_SIZES, R._COL_LUT)):
        assert lut.dtype == torch.uint8 and lut.numel() == R._MAX_IMAGE_SIDE + 1
        for n in list(range(1, 70)) + [100, 255, 256, 257, 511, 512, 513, 4096, R._MAX_IMAGE_SIDE]:
            assert int(lut[n]) == next(i for i, s in enumerate(sizes) if s >= n)


def test_exact_bucket_sizes_are_consecutive():
    # buckets of up to _EXACT_SIZES rows / columns hold boxes of exactly that size (no padding slots)
    for sizes in (R._ROW_SIZES, R._COL_SIZES):
        assert sizes[:R._EXACT_SIZES] == list(range(1, R._EXACT_SIZES + 1))


@pytest.mark.parametrize("merge_slots", [0, 10**9])
def test_bucket_merging_matches_reference(monkeypatch, merge_slots):
    # no merged buckets, and every bucket merged into one padded block: both as the reference
    monkeypatch.setattr(R, "_MERGE_SLOTS", merge_slots)
    verts, faces = triangle_soup(batch=2, n_faces=40, image_hw=(29, 41), seed=12)
    assert_matches_reference(verts, faces, (29, 41))
    verts, faces = sphere_views((40, 56), n_views=2)
    assert_matches_reference(verts, faces, (40, 56), cull_backfaces=True)


def test_covered_interpolation_is_the_full_image_at_the_covered_pixels():
    """`interpolate_vertex_attributes_covered` gives the covered pixels in increasing flat order and
    the same values, and the same gradients, as the full image at those pixels."""
    verts, faces, attrs = _small_scene(torch.float32)
    verts = (verts * 0.8).requires_grad_(True)
    attrs = attrs.clone().requires_grad_(True)
    frags = rasterize_meshes(verts, faces, 8)
    full = interpolate_vertex_attributes(frags, faces, attrs)
    covered, vals = interpolate_vertex_attributes_covered(frags, faces, attrs)
    assert torch.equal(covered, (frags.pix_to_face.reshape(-1) >= 0).nonzero().squeeze(1))
    assert 0 < covered.numel() < frags.pix_to_face.numel()
    assert torch.equal(vals, full.reshape(-1, 2)[covered])
    weights = torch.arange(covered.numel() * 2, dtype=torch.float32).view(-1, 2)
    g_full = torch.autograd.grad((full.reshape(-1, 2)[covered] * weights).sum(), (verts, attrs), retain_graph=True)
    g_cov = torch.autograd.grad((vals * weights).sum(), (verts, attrs))
    for a, b in zip(g_full, g_cov):
        assert torch.allclose(a, b, atol=1e-5)

