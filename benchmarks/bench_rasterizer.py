"""Benchmark of face3d.rasterizer on a head-sized mesh.

Builds a ~22k-triangle closed mesh (a UV ellipsoid with a nose-like bump), projects
32 views (yaw/pitch sweep) with a perspective camera so that the head covers about
half of the frame, and times, at 128 and 256 px:

* ``raster``: rasterize_meshes alone;
* ``raster+uv+texture``: rasterize_meshes + interpolate_face_attributes (per-corner UVs)
  + ``grid_sample`` of a 512x512 RGB texture (the whole 3D-stage render).

Median of several runs after warm-up, printed as views/s and written to JSON.
The slow per-triangle reference of tests/test_rasterizer.py is timed on one view
to show the speed-up.

No target: a measurement of the rasterizer alone (issue 2's rendering target, >= 200 views/s at
128 px, is for the whole `render_views` path and is checked by bench_render.py); it exits 0 unless
it fails to run.

    .venv/bin/python benchmarks/bench_rasterizer.py [--json PATH] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from face3d.rasterizer import interpolate_face_attributes, rasterize_meshes  # noqa: E402


def head_mesh(n_slices: int = 150, n_stacks: int = 74):
    """Closed UV ellipsoid (~21.9k triangles at the defaults) with a nose bump.

    Returns verts (V, 3) in a y-up, right-handed model frame (face looking at +z),
    faces (F, 3) counter-clockwise seen from outside, and per-corner UVs (F, 3, 2).
    """
    theta = torch.linspace(0, math.pi, n_stacks + 1, dtype=torch.float64)[1:-1]  # polar, from +y
    phi = torch.arange(n_slices, dtype=torch.float64) * (2 * math.pi / n_slices)
    st, ph = torch.meshgrid(theta, phi, indexing="ij")
    dirs = torch.stack([torch.sin(st) * torch.sin(ph), torch.cos(st), torch.sin(st) * torch.cos(ph)], -1)
    # Nose: a smooth bump around the +z direction.
    bump = 0.25 * torch.exp(-((dirs[..., 0] / 0.15) ** 2 + ((dirs[..., 1] + 0.05) / 0.3) ** 2)) * (dirs[..., 2] > 0)
    radii = torch.tensor([0.8, 1.0, 0.9], dtype=torch.float64)
    ring = (dirs * radii * (1 + bump.unsqueeze(-1))).reshape(-1, 3)
    verts = torch.cat([ring, torch.tensor([[0, 1.0, 0], [0, -1.0, 0]], dtype=torch.float64)])
    top, bottom = ring.shape[0], ring.shape[0] + 1

    def vid(i, j):
        return i * n_slices + (j % n_slices)

    faces = []
    for j in range(n_slices):
        faces.append((top, vid(0, j), vid(0, j + 1)))
        faces.append((bottom, vid(n_stacks - 2, j + 1), vid(n_stacks - 2, j)))
    for i in range(n_stacks - 2):
        for j in range(n_slices):
            a, b, c, d = vid(i, j), vid(i, j + 1), vid(i + 1, j), vid(i + 1, j + 1)
            faces += [(a, c, b), (b, c, d)]
    faces = torch.tensor(faces, dtype=torch.int64)
    # Make every face counter-clockwise seen from outside (normal . centroid > 0).
    tri = verts[faces]
    n = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    flip = (n * tri.mean(1)).sum(-1) < 0
    faces[flip] = faces[flip][:, [0, 2, 1]]
    # Per-corner spherical UVs (seams are handled naturally by per-corner values).
    d = verts / verts.norm(dim=-1, keepdim=True)
    u = (torch.atan2(d[:, 0], d[:, 2]) / (2 * math.pi)) % 1.0
    v = torch.acos(d[:, 1].clamp(-1, 1)) / math.pi
    uv = torch.stack([u, v], -1)[faces]
    return verts.float(), faces, uv.float()


def project_views(verts: torch.Tensor, n_views: int, image_size: int, fill: float = 0.5):
    """Rotate the mesh through a yaw/pitch sweep and project with a pinhole camera.

    The camera looks down -z from distance ``dist``; the focal length is chosen so that
    the frontal silhouette covers roughly ``fill`` of the image area.
    Returns (n_views, V, 3) screen vertices: pixel x, pixel y (down), depth.
    """
    yaws = torch.linspace(-1.0, 1.0, n_views)
    pitches = 0.3 * torch.sin(torch.arange(n_views) * 0.7)
    dist = 6.0
    # Frontal silhouette ~ ellipse with semi-axes 0.8 x 1.0 at depth ~dist: area pi*0.8*1.0*(f/dist)^2.
    focal = dist * math.sqrt(fill * image_size**2 / (math.pi * 0.8 * 1.0))
    out = []
    for yaw, pitch in zip(yaws.tolist(), pitches.tolist()):
        cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
        ry = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        rx = torch.tensor([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
        v = verts @ (rx @ ry).T
        depth = dist - v[:, 2]
        x = focal * v[:, 0] / depth + image_size / 2
        y = -focal * v[:, 1] / depth + image_size / 2
        out.append(torch.stack([x, y, depth], -1))
    return torch.stack(out)


def _median_time(fn, warmup: int = 2, runs: int = 7) -> float:
    """Median wall time of ``runs`` calls after ``warmup`` calls (the best is kept in _BEST)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    _BEST[fn.__name__] = min(times)
    return statistics.median(times)


_BEST: dict = {}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default=os.path.join(ROOT, "benchmarks", "results", "rasterizer.json"))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--no-reference", action="store_true", help="skip timing the slow reference")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    verts, faces, uv = head_mesh()
    texture = torch.rand(1, 3, 512, 512)
    print(f"torch {torch.__version__}, torch.get_num_threads() = {torch.get_num_threads()}, "
          f"os.cpu_count() = {os.cpu_count()}")
    print(f"mesh: {verts.shape[0]} verts, {faces.shape[0]} faces; batch {args.batch}")
    results = {
        "torch": torch.__version__,
        "num_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "loadavg_at_start": os.getloadavg(),
        "n_faces": int(faces.shape[0]),
        "batch": args.batch,
        "sizes": {},
    }
    for size in args.sizes:
        vs = project_views(verts, args.batch, size)

        def raster():
            return rasterize_meshes(vs, faces, size)

        def render():
            frags = rasterize_meshes(vs, faces, size)
            uvs = interpolate_face_attributes(frags, uv)  # (B, H, W, 2) in [0, 1]
            # One texture for all views: fold the batch into the grid height (no copy).
            grid = (uvs * 2 - 1).reshape(1, args.batch * size, size, 2)
            img = F.grid_sample(texture, grid, mode="bilinear", align_corners=False)
            return img.view(3, args.batch, size, size).transpose(0, 1)

        with torch.no_grad():
            frags = raster()
        coverage = (frags.pix_to_face >= 0).float().mean().item()
        t_raster = _median_time(raster, runs=args.runs)
        t_render = _median_time(render, runs=args.runs)
        with torch.enable_grad():
            vs_g = vs.clone().requires_grad_(True)

            def render_backward():
                frags = rasterize_meshes(vs_g, faces, size)
                uvs = interpolate_face_attributes(frags, uv)
                grid = (uvs * 2 - 1).reshape(1, args.batch * size, size, 2)
                img = F.grid_sample(texture, grid, mode="bilinear", align_corners=False)
                img.sum().backward()

            t_back = _median_time(render_backward, warmup=1, runs=max(3, args.runs // 2))
        row = {
            "coverage": coverage,
            "raster_views_per_s": args.batch / t_raster,
            "render_views_per_s": args.batch / t_render,
            "render_fwd_bwd_views_per_s": args.batch / t_back,
            "raster_ms_per_batch": 1000 * t_raster,
            "render_ms_per_batch": 1000 * t_render,
            "raster_views_per_s_best_run": args.batch / _BEST["raster"],
            "render_views_per_s_best_run": args.batch / _BEST["render"],
        }
        results["sizes"][str(size)] = row
        print(f"{size:4d}px  coverage {coverage:.2f}  raster {row['raster_views_per_s']:7.0f} views/s  "
              f"raster+uv+texture {row['render_views_per_s']:7.0f} views/s  "
              f"(fwd+bwd through vertices {row['render_fwd_bwd_views_per_s']:5.0f} views/s; best runs: raster "
              f"{row['raster_views_per_s_best_run']:.0f}, raster+uv+texture {row['render_views_per_s_best_run']:.0f})")

    if not args.no_reference:
        sys.path.insert(0, os.path.join(ROOT, "tests"))
        from test_rasterizer import reference_rasterize  # noqa: E402

        size = args.sizes[0]
        vs = project_views(verts, 1, size)
        t0 = time.perf_counter()
        reference_rasterize(vs, faces, size)
        t_ref = time.perf_counter() - t0
        fast = results["sizes"][str(size)]["raster_views_per_s"]
        results["reference_views_per_s"] = {str(size): 1.0 / t_ref}
        print(f"reference (per-triangle loop) at {size}px: {1.0 / t_ref:.3f} views/s "
              f"-> fast rasterizer is {fast * t_ref:.0f}x faster")

    results["loadavg_at_end"] = os.getloadavg()
    print(f"load average (1, 5, 15 min) at start {results['loadavg_at_start']}, at end {results['loadavg_at_end']} "
          f"(other processes on the machine slow down the timings)")
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as fh:
        json.dump(results, fh, indent=2)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
