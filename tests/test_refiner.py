"""The refiner's generator, discriminator and losses (issue 4 groundwork; untrained)."""
from __future__ import annotations

import torch

from ganrefine.refiner import (PATCHES, PatchDiscriminator, RefinerConfig, RefinerGenerator, crop_patch,
                               multiscale_l1, paste_patch, patch_centres, symmetry_loss, total_variation)


def _landmarks(batch: int) -> torch.Tensor:
    """Plausible 128-px landmarks: a mean-face layout with small random offsets."""
    torch.manual_seed(0)
    base = torch.zeros(68, 2)
    base[36:42] = torch.tensor([44.0, 56.0])
    base[42:48] = torch.tensor([84.0, 56.0])
    base[27:36] = torch.tensor([64.0, 70.0])
    base[48:68] = torch.tensor([64.0, 92.0])
    base[:27] = torch.tensor([64.0, 64.0])
    return base[None] + torch.randn(batch, 68, 2)


def test_crop_and_paste_are_inverse():
    img = torch.rand(2, 3, 128, 128)
    centres = torch.tensor([[40.0, 50.0], [90.0, 70.0]])
    patch = crop_patch(img, centres, (32, 40))
    assert patch.shape == (2, 3, 32, 40)
    # integer + 0.5 centres of even-sized patches sit on pixel boundaries: the crop is exact
    assert torch.allclose(patch[0], img[0, :, 50 - 16:50 + 16, 40 - 20:40 + 20], atol=1e-6)
    canvas = paste_patch(patch, centres, 128)
    assert torch.allclose(canvas[1, :, 70 - 16:70 + 16, 90 - 20:90 + 20], patch[1], atol=1e-6)
    assert canvas[0, :, :10].abs().max() == 0  # zeros away from the patch


def test_generator_shapes_range_and_gradients():
    g = RefinerGenerator(RefinerConfig(base=8, res_blocks=1, local=4))
    x = torch.rand(2, 5, 128, 128, requires_grad=True)
    lm = _landmarks(2)
    # at initialisation the residual is exactly zero: the output is the render
    assert torch.equal(g(x, lm), x[:, :3].clamp(0, 1))
    torch.nn.init.normal_(g.fuse[-1].weight, std=0.01)  # a trained-like last layer, so gradients reach every layer
    y = g(x, lm)
    assert y.shape == (2, 3, 128, 128)
    assert torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1
    y.mean().backward()
    for name, p in g.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert any(p.grad.abs().sum() > 0 for p in g.local[3].parameters())  # the mouth pathway is used
    assert patch_centres(lm).shape == (2, len(PATCHES), 2)


def test_discriminator_and_losses():
    d = PatchDiscriminator(base=8)
    img, render = torch.rand(2, 3, 128, 128), torch.rand(2, 3, 128, 128)
    assert d(img, render).shape == (2, 1, 16, 16)
    mask = torch.ones(2, 1, 128, 128)
    assert multiscale_l1(img, img, mask) == 0
    assert multiscale_l1(img, render, mask) > 0.1
    sym = torch.cat([img[..., :64], torch.flip(img[..., :64], dims=[-1])], dim=-1)
    assert symmetry_loss(sym, mask) < 1e-6 < symmetry_loss(img, mask)
    assert total_variation(torch.ones(1, 3, 8, 8)) == 0


def test_flip_averaged_is_the_mean_of_both_passes_and_mirror_equivariant():
    from ganrefine.refiner import FLIP68, FlipAveraged, mirror_landmarks

    torch.manual_seed(1)
    g = RefinerGenerator(RefinerConfig(base=8, res_blocks=1, local=4)).eval()
    torch.nn.init.normal_(g.fuse[-1].weight, std=0.05)
    x, lm = torch.rand(3, 5, 128, 128), _landmarks(3)
    tta = FlipAveraged(g).eval()
    with torch.no_grad():
        y = tta(x, lm)
        plain, mirrored = g(x, lm), g(x.flip(-1), mirror_landmarks(lm, 128)).flip(-1)
        assert torch.allclose(y, 0.5 * (plain + mirrored), atol=1e-5)
        assert (plain - mirrored).abs().mean() > 1e-3   # the two passes differ: the mean is not a no-op
        # mirror the input and the output is mirrored: the eyes swap pathways with their landmarks
        assert torch.allclose(tta(x.flip(-1), mirror_landmarks(lm, 128)), y.flip(-1), atol=1e-5)
    # landmark mirroring: an involution that swaps the outer eye corners and reflects x about S/2
    assert torch.allclose(mirror_landmarks(mirror_landmarks(lm, 128), 128), lm, atol=1e-5)
    assert torch.allclose(mirror_landmarks(lm, 128)[:, 36, 0], 128 - lm[:, FLIP68[36], 0])

    # what a manifest records as the inference follows the generator that runs, not a separate label
    from ganrefine.hybrid import Refiner

    assert Refiner(tta, "w.pt", "0" * 64, 128, keep_seen=None).inference == "flip-averaged"
    assert Refiner(g, "w.pt", "0" * 64, 128, keep_seen=None).inference == "one-pass"
    # and so does where the render is kept, the default being the seen render
    assert Refiner(tta, "w.pt", "0" * 64, 128).inference == "flip-averaged, seen render kept (confidence 0.2-0.45)"
    assert Refiner(g, "w.pt", "0" * 64, 128, keep_seen=(0.1, 0.5)).inference == \
        "one-pass, seen render kept (confidence 0.1-0.5)"
