"""`--device auto|cpu|cuda`: names, errors, and the torch stages that follow their inputs' device.

No GPU runs this suite in CI. Two kinds of test stand in for one:
- device placement on the CPU: each stage runs with torch's default device set to "meta" while its
  inputs are CPU tensors or arrays. A tensor made without the device of the inputs (a factory call
  that forgets `device=`) then lands on "meta", and the first operation that mixes it with a CPU
  tensor (or reads its data) fails; the results must be bit for bit those of a plain CPU run;
- CUDA against CPU, the same stages on both, where torch sees a CUDA GPU (skipped otherwise).
"""
from __future__ import annotations

import contextlib
import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch

from face3d.camera import Pose
from face3d.dense import refine_dense_batch
from face3d.devices import resolve_device, valid_device_name
from face3d.errors import FaceSynthError
from face3d.fitting import FitConfig, fit_morphable_model
from face3d.rasterizer import interpolate_vertex_attributes, rasterize_meshes
from face3d.render import ColouredMesh, render_views
from face3d.sfs import relight_sh

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="torch sees no CUDA GPU here")


@contextlib.contextmanager
def factories_on_meta():
    """Tensors made without an explicit device go to "meta" inside the block."""
    torch.set_default_device("meta")
    try:
        yield
    finally:
        torch.set_default_device("cpu")


def test_device_names():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if CUDA else "cpu")
    assert resolve_device(None) == resolve_device("auto")
    assert [valid_device_name(n) for n in ("auto", "CPU", "cuda", "cuda:1", "gpu", "cuda:", "cuda:x")] == \
        [True, True, True, True, False, False, False]
    for bad in ("gpu", "cuda:x", "mps"):
        with pytest.raises(FaceSynthError, match="device must be auto, cpu, cuda or cuda:N"):
            resolve_device(bad)


@pytest.mark.skipif(CUDA, reason="the refusal is for machines without a CUDA GPU")
def test_cuda_without_a_gpu_is_one_line():
    with pytest.raises(FaceSynthError) as exc:
        resolve_device("cuda")
    assert "sees no CUDA GPU" in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.skipif(CUDA, reason="the refusal is for machines without a CUDA GPU")
def test_cli_refuses_cuda_without_a_gpu_and_writes_nothing(obama_path, tmp_path):
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "facesynth.cli", "rotate", str(obama_path), "--yaw", "0",
                        "--out", str(out), "--device", "cuda"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"facesynth: error: device cuda: torch {torch.__version__} sees no CUDA GPU here (use --device cpu or auto)"]
    assert not out.exists()
    r = subprocess.run([sys.executable, "-m", "facesynth.cli", "rotate", str(obama_path), "--out", str(out),
                        "--device", "gpu"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--device must be auto, cpu, cuda or cuda:N, got 'gpu'" in r.stderr
    assert "Traceback" not in r.stderr and not out.exists()


def _random_meshes(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    verts = torch.rand(3, 60, 3, generator=g) * torch.tensor([48.0, 48.0, 1.0]) + torch.tensor([0.0, 0.0, 1.0])
    faces = torch.randint(0, 60, (120, 3), generator=g)
    return verts, faces


@pytest.mark.parametrize("cull", [False, True])
@pytest.mark.parametrize("perspective", [False, True])
def test_rasterizer_makes_its_tensors_on_the_inputs_device(cull, perspective):
    verts, faces = _random_meshes()
    ref = rasterize_meshes(verts, faces, 48, cull_backfaces=cull, perspective_correct=perspective)
    with factories_on_meta():
        out = rasterize_meshes(verts, faces, 48, cull_backfaces=cull, perspective_correct=perspective)
        attrs = interpolate_vertex_attributes(out, faces, verts)
    assert out.pix_to_face.device.type == "cpu" and attrs.device.type == "cpu"
    assert torch.equal(out.pix_to_face, ref.pix_to_face) and (ref.pix_to_face >= 0).any()
    assert torch.equal(out.bary_coords, ref.bary_coords) and torch.equal(out.zbuf, ref.zbuf)


def _render_inputs(rec, ict_model):
    poses = [Pose(-30.0, 0.0, 0.0), Pose(20.0, 10.0, 0.0)]
    background = np.full((2, 64, 64, 3), 90, np.uint8)
    extra = ColouredMesh(np.array([[0.0, -30.0, 60.0], [10.0, -30.0, 60.0], [0.0, -20.0, 60.0]]),
                         np.array([[0, 1, 2]]), np.full((3, 3), 0.5))
    return poses, dict(size=64, background=background, sh=relight_sh("random", 2, 0), extra=extra)


def test_render_views_makes_its_tensors_on_the_device(obama_reconstruction, ict_model):
    rec = obama_reconstruction
    poses, kw = _render_inputs(rec, ict_model)
    ref = render_views(rec.fit, rec.texture, poses, ict_model, **kw)
    with factories_on_meta():
        out = render_views(rec.fit, rec.texture, poses, ict_model, device="cpu", **kw)
    for name in ("images", "masks", "confidence", "landmarks", "depth", "extra_masks"):
        assert np.array_equal(getattr(out, name), getattr(ref, name)), name


def _two_fits(data_dir, ict_model):
    from face3d.image_io import load_image
    from face3d.landmarks import detect_faces

    images = [load_image(data_dir / "faces" / n) for n in ("obama/face_recognition_obama.jpg",
                                                           "biden/face_recognition_biden.jpg")]
    fits = [fit_morphable_model(im, detect_faces(im)[0].landmarks, ict_model, FitConfig(dense=False)) for im in images]
    return images, fits


def test_dense_fit_makes_its_tensors_on_the_device(data_dir, ict_model):
    images, fits = _two_fits(data_dir, ict_model)
    cfg = FitConfig(dense_steps=6)
    ref = refine_dense_batch(fits, images, ict_model, cfg)
    with factories_on_meta():
        out = refine_dense_batch(fits, images, ict_model, dataclasses.replace(cfg, device="cpu"))
    for a, b in zip(ref, out):
        assert np.array_equal(a.identity, b.identity) and np.array_equal(a.expression, b.expression)
        assert np.array_equal(a.albedo, b.albedo) and np.array_equal(a.rotation, b.rotation)


def test_refiner_and_identity_network_follow_their_weights(obama_reconstruction, ict_model, obama_image):
    from face3d.landmarks import detect_faces
    from ganrefine.hybrid import load_hybrid_refiner, refine_views
    from ganrefine.identity import IdentityEncoder, image_tensor

    rec = obama_reconstruction
    views = render_views(rec.fit, rec.texture, [Pose(30.0, 0.0, 0.0)], ict_model, size=128)
    refiner = load_hybrid_refiner(device="cpu")
    ref = refine_views(refiner, views)
    enc = IdentityEncoder.load(device="cpu")
    lm = torch.from_numpy(detect_faces(obama_image)[0].landmarks)[None]
    desc = enc.embed([image_tensor(obama_image)], lm)
    with factories_on_meta():
        assert np.array_equal(refine_views(refiner, views), ref)
        assert torch.equal(enc.embed([image_tensor(obama_image)], lm), desc)


# ------------------------------------------------------------------------------------------------
# On a CUDA GPU: the same stages against the CPU


@needs_cuda
def test_rasterizer_on_cuda_matches_the_cpu():
    verts, faces = _random_meshes(1)
    ref = rasterize_meshes(verts, faces, 48, cull_backfaces=True)
    out = rasterize_meshes(verts.cuda(), faces.cuda(), 48, cull_backfaces=True)
    assert out.pix_to_face.device.type == "cuda"
    agree = (out.pix_to_face.cpu() == ref.pix_to_face).float().mean()
    assert agree > 0.999        # float rounding may flip a pixel centre lying on an edge
    same = (out.pix_to_face.cpu() == ref.pix_to_face) & (ref.pix_to_face >= 0)
    assert torch.allclose(out.bary_coords.cpu()[same], ref.bary_coords[same], atol=1e-4)


@needs_cuda
def test_render_views_on_cuda_matches_the_cpu(obama_reconstruction, ict_model):
    rec = obama_reconstruction
    poses, kw = _render_inputs(rec, ict_model)
    ref = render_views(rec.fit, rec.texture, poses, ict_model, **kw)
    out = render_views(rec.fit, rec.texture, poses, ict_model, device="cuda", **kw)
    diff = np.abs(out.images.astype(np.float64) - ref.images)
    assert diff.mean() < 0.5 and (diff > 2).mean() < 0.01


@needs_cuda
def test_dense_fit_on_cuda_matches_the_cpu(data_dir, ict_model):
    images, fits = _two_fits(data_dir, ict_model)
    cfg = FitConfig()
    ref = refine_dense_batch(fits, images, ict_model, cfg)
    out = refine_dense_batch(fits, images, ict_model, dataclasses.replace(cfg, device="cuda"))
    # the tolerance of the batched dense fit against the one-face one (Adam amplifies rounding)
    for a, b in zip(ref, out):
        assert np.abs(a.identity - b.identity).max() < 1e-2 and np.abs(a.albedo - b.albedo).max() < 3e-2
        assert np.abs(a.rotation - b.rotation).max() < 1e-4


@needs_cuda
def test_refiner_and_identity_network_on_cuda_match_the_cpu(obama_reconstruction, ict_model, obama_image):
    from face3d.landmarks import detect_faces
    from ganrefine.hybrid import load_hybrid_refiner, refine_views
    from ganrefine.identity import IdentityEncoder, image_tensor

    rec = obama_reconstruction
    views = render_views(rec.fit, rec.texture, [Pose(30.0, 0.0, 0.0)], ict_model, size=128)
    ref = refine_views(load_hybrid_refiner(device="cpu"), views)
    out = refine_views(load_hybrid_refiner(device="cuda"), views)
    assert np.abs(out.astype(np.float64) - ref).mean() < 0.5
    lm = torch.from_numpy(detect_faces(obama_image)[0].landmarks)[None]
    a = IdentityEncoder.load(device="cpu").embed([image_tensor(obama_image)], lm)
    b = IdentityEncoder.load(device="cuda").embed([image_tensor(obama_image)], lm).cpu()
    assert float((a - b).norm()) < 1e-3
