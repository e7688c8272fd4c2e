"""The compiled CPU visibility pass (face3d.raster_cpu) against the PyTorch one, bit for bit.

tests/test_rasterizer.py runs every rasterizer test on both passes (against a Python loop over the
triangles); these compare the two directly where the loop would be too slow (the head) and where
the inputs are not finite.
"""
from __future__ import annotations

import sys
import threading

import pytest
import torch

import face3d
from face3d import rasterizer as R
from face3d.rasterizer import rasterize_meshes
from test_rasterizer import triangle_soup
@pytest.mark.parametrize("cull", [False, True])
def test_compiled_visibility_is_the_torch_pass_bit_for_bit_on_the_head(ict_model, cull, monkeypatch):
    """The fitted head's mean shape at 12 poses, 128 px (about 33k triangles, most under a pixel):
    the compiled pass gives the same pixels, faces and depths as the PyTorch one."""
    from face3d.camera import Pose
    from face3d.render import view_screen

    mean = torch.as_tensor(ict_model.mean, dtype=torch.float32).reshape(1, -1, 3)
    poses = [Pose(float(y), float(p), float(r)) for y, p, r in
             zip(range(-75, 76, 15), [-20, 10, 0, 25, -5, 15, 0, -15, 20, 5, -10], [0, 5, -5] * 4)]
    poses.append(Pose(180.0, 0.0, 0.0))    # the back of the head
    screen = view_screen(mean, ict_model, poses, 128)
    faces = torch.as_tensor(ict_model.triangles, dtype=torch.int64)
    monkeypatch.setattr(R, "CPU_VISIBILITY", "compiled")
    fast = rasterize_meshes(screen, faces, 128, cull_backfaces=cull)
    monkeypatch.setattr(R, "CPU_VISIBILITY", "torch")
    ref = rasterize_meshes(screen, faces, 128, cull_backfaces=cull)
    assert (ref.pix_to_face >= 0).sum() > 12 * 3000
    assert torch.equal(fast.pix_to_face, ref.pix_to_face)
    assert torch.equal(fast.zbuf, ref.zbuf) and torch.equal(fast.bary_coords, ref.bary_coords)


def test_compiled_visibility_with_nan_and_infinite_vertices(monkeypatch):
    """A NaN corner drops its face in both passes; an infinite one is a face that reaches past the
    image, and the two passes agree on what it covers (bit for bit, as everywhere)."""
    verts, faces = triangle_soup(batch=2, n_faces=40, image_hw=(29, 41), seed=13)
    verts = verts.clone()
    verts[0, faces[20, 0], 0] = float("nan")
    verts[0, faces[21, 1], 1] = float("inf")
    verts[1, faces[22, 2], 2] = float("nan")
    verts[1, faces[23, 0], 0] = -float("inf")
    monkeypatch.setattr(R, "CPU_VISIBILITY", "compiled")
    got = rasterize_meshes(verts, faces, (29, 41))
    monkeypatch.setattr(R, "CPU_VISIBILITY", "torch")
    ref = rasterize_meshes(verts, faces, (29, 41))
    assert (got.pix_to_face >= 0).sum() > 100
    assert torch.equal(got.pix_to_face, ref.pix_to_face)
    assert not (got.pix_to_face[0] == 20).any() and not (got.pix_to_face[1] == 22).any()
    assert (got.pix_to_face[1] == 20).any() or (got.pix_to_face[0] == 22).any()   # finite in the other view


def test_views_split_between_threads_give_the_one_thread_result(ict_model, monkeypatch):
    """The compiled pass splits a batch of views between torch's thread count of threads; the result
    is the same with one thread, and with several calls at once from different threads."""
    from face3d.camera import Pose
    from face3d.render import view_screen

    monkeypatch.setattr(R, "CPU_VISIBILITY", "compiled")
    mean = torch.as_tensor(ict_model.mean, dtype=torch.float32).reshape(1, -1, 3)
    screen = view_screen(mean, ict_model, [Pose(float(y), 0.0, 0.0) for y in range(-50, 51, 20)], 96)
    faces = torch.as_tensor(ict_model.triangles, dtype=torch.int64)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = rasterize_meshes(screen, faces, 96, cull_backfaces=True).pix_to_face
        torch.set_num_threads(3)
        three = rasterize_meshes(screen, faces, 96, cull_backfaces=True).pix_to_face
        results = [None] * 4

        def run(i):
            results[i] = rasterize_meshes(screen, faces, 96, cull_backfaces=True).pix_to_face

        workers = [threading.Thread(target=run, args=(i,)) for i in range(4)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, three)
    assert all(torch.equal(one, r) for r in results)


def test_auto_takes_the_compiled_pass_once_the_process_has_done_enough_work(monkeypatch):
    """"auto" (the default) rasterizes with PyTorch until COMPILE_AFTER_FACES face-views, then with
    the compiled pass; the images are the same either side of the switch."""
    verts, faces = triangle_soup(batch=2, n_faces=40, image_hw=(29, 41), seed=14)   # 80 face-views a call
    monkeypatch.setattr(R, "CPU_VISIBILITY", "auto")
    monkeypatch.setattr(R, "COMPILE_AFTER_FACES", 200)
    monkeypatch.setattr(R, "_faces_rasterized", 0)
    monkeypatch.delitem(sys.modules, "face3d.raster_cpu", raising=False)   # as in a fresh process
    monkeypatch.delattr(face3d, "raster_cpu", raising=False)
    torch_calls = []
    reference = R._visible_faces_torch
    monkeypatch.setattr(R, "_visible_faces_torch", lambda *a: torch_calls.append(1) or reference(*a))
    results = [rasterize_meshes(verts, faces, (29, 41)).pix_to_face for _ in range(4)]
    assert len(torch_calls) == 2          # 80, 160 face-views: PyTorch; 240, 320: compiled
    assert "face3d.raster_cpu" in sys.modules
    assert all(torch.equal(results[0], r) for r in results[1:])


def test_unknown_visibility_mode_is_an_error(monkeypatch):
    """FACESYNTH_CPU_VISIBILITY set to anything but auto, compiled or torch is refused, not read as torch."""
    from face3d.errors import FaceSynthError

    verts, faces = triangle_soup(1, 20, (16, 16), seed=0)
    monkeypatch.setattr(R, "CPU_VISIBILITY", "fast")
    with pytest.raises(FaceSynthError, match="FACESYNTH_CPU_VISIBILITY='fast': expected one of auto, compiled, torch"):
        rasterize_meshes(verts, faces, (16, 16))
