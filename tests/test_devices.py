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


def _tiny_training(seed: int = 0):
    """A small refiner, its discriminator and a batch of 4 synthetic pairs (64 px) with landmarks
    on a face-like layout (dlib's mean face), enough for every loss of a training step."""
    from ganrefine.identity import _MEAN_FACE_X, _MEAN_FACE_Y  # dlib's mean face: points 17-67
    from ganrefine.refiner import PatchDiscriminator, RefinerConfig, RefinerGenerator
    from ganrefine.train_refiner import PairSet

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    n, size = 4, 64
    template = np.stack([np.r_[np.linspace(0.1, 0.9, 17), _MEAN_FACE_X], np.r_[0.55 + 0.4 * np.sin(np.linspace(0, np.pi, 17)),
                                                                               _MEAN_FACE_Y]], 1)
    lm = torch.from_numpy(8 + 48 * template).float()[None].repeat(n, 1, 1) + torch.rand(n, 68, 2, generator=g)
    data = PairSet(render=torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8),
                   target=torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8),
                   confidence=torch.rand(n, 1, size, size, generator=g).half(),
                   mask=(torch.rand(n, 1, size, size, generator=g) > 0.3).half(), landmarks=lm,
                   names=[f"p/{i}" for i in range(n)])
    cfg = RefinerConfig(size=size, base=8)
    return RefinerGenerator(cfg), PatchDiscriminator(in_channels=6), data


def test_refiner_training_losses_and_validation_follow_the_device():
    from ganrefine.train_refiner import (TrainConfig, discriminator_loss, evaluate_refiner, generator_losses,
                                         refiner_inputs, sample_grid)
    from ganrefine.training import frozen_identity_encoder, on_device

    gen, disc, data = _tiny_training()
    encoder = frozen_identity_encoder("cpu")
    cfg = TrainConfig(refiner=gen.cfg)
    idx, flip = torch.arange(4), torch.tensor([True, False, True, False])     # drawn on the CPU, as the loop does

    def step():
        b = on_device(data.batch(idx, flip), torch.device("cpu"))
        out = gen(refiner_inputs(b), b["landmarks"])
        losses = generator_losses(out, b, disc, encoder, cfg)
        grads = torch.autograd.grad(losses["total"], list(gen.parameters())[:3])
        return discriminator_loss(disc, b, out), losses, grads

    ref = step()
    ref_eval, ref_grid = evaluate_refiner(gen, data, encoder), sample_grid(gen, data, 2)
    with factories_on_meta():
        got = step()
        got_eval, got_grid = evaluate_refiner(gen, data, encoder), sample_grid(gen, data, 2)
    assert torch.equal(got[0], ref[0])
    assert all(torch.equal(torch.as_tensor(got[1][k]), torch.as_tensor(ref[1][k])) for k in ref[1])
    assert all(torch.equal(a, b) for a, b in zip(got[2], ref[2]))
    assert all(np.array_equal(got_eval[k], ref_eval[k]) for k in ref_eval) and np.array_equal(got_grid, ref_grid)


def test_checkpoints_are_written_from_the_cpu(tmp_path):
    from ganrefine.weights import read_plain_torch_file, save_torch_atomic

    t = torch.arange(3.0, requires_grad=True) * 2
    save_torch_atomic(tmp_path / "ck.pt", {"a": t, "nested": {"b": [t, (t,)]}, "n": 1})
    ck = read_plain_torch_file(tmp_path / "ck.pt", "not a checkpoint")
    assert torch.equal(ck["a"], t.detach()) and not ck["a"].requires_grad
    assert torch.equal(ck["nested"]["b"][1][0], t.detach()) and ck["n"] == 1


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
def test_refiner_training_runs_on_cuda(tmp_path):
    from ganrefine.train_refiner import TrainConfig, discriminator_loss, generator_losses, refiner_inputs
    from ganrefine.training import frozen_identity_encoder, on_device

    gen, disc, data = _tiny_training()
    gen, disc = gen.cuda(), disc.cuda()
    encoder = frozen_identity_encoder("cuda")
    b = on_device(data.batch(torch.arange(4)), torch.device("cuda"))
    out = gen(refiner_inputs(b), b["landmarks"])
    losses = generator_losses(out, b, disc, encoder, TrainConfig(refiner=gen.cfg))
    losses["total"].backward()
    discriminator_loss(disc, b, out).backward()
    assert torch.isfinite(losses["total"]) and all(p.grad is not None for p in gen.parameters() if p.requires_grad)


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
