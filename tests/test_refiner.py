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


def test_patch_window_fades_to_the_patch_edges():
    from ganrefine.refiner import patch_window

    assert torch.equal(patch_window((32, 40), 0.0), torch.ones(32, 40))
    w = patch_window((32, 40), 0.25)
    assert w.shape == (32, 40)
    assert torch.equal(w, torch.flip(w, dims=[0])) and torch.equal(w, torch.flip(w, dims=[1]))
    assert w[8:24, 10:30].min() == 1.0                       # the inner half is whole
    assert w[0].max() < 0.07 and w[:, 0].max() < 0.07         # the edges nearly 0
    assert (w[:16, 20].diff() >= 0).all()                     # rising towards the middle


def test_feathered_generator_pastes_faded_patches():
    """With `feather`, a local pathway's output reaches the fusion layers faded at its patch's edge:
    the canvas a pathway pastes is near 0 along the patch's border, whole at its centre."""
    from ganrefine.refiner import patch_window

    torch.manual_seed(0)
    g = RefinerGenerator(RefinerConfig(base=8, res_blocks=1, local=4, feather=0.25))
    x = torch.rand(1, 5, 128, 128)
    centre = torch.tensor([[64.0, 64.0]])
    hw = PATCHES[3][2]                                         # the mouth's 32 x 48
    local = g.local[3](crop_patch(x, centre, hw))
    canvas = paste_patch(local * patch_window(hw, 0.25), centre, 128)
    assert canvas[0, :, 64 - 16, 64 - 24:64 + 24].abs().max() < 0.1 * local.abs().max()
    assert torch.allclose(canvas[0, :, 62:66, 62:66], local[0, :, 14:18, 22:26], atol=1e-5)
    assert torch.equal(g(x, _landmarks(1)), x[:, :3].clamp(0, 1))   # still the render at initialisation


def test_multiscale_discriminator_and_feature_matching():
    from ganrefine.refiner import MultiScaleDiscriminator, feature_matching_loss

    torch.manual_seed(0)
    d = MultiScaleDiscriminator(scales=3, base=8)
    img, render = torch.rand(2, 3, 128, 128), torch.rand(2, 3, 128, 128)
    scores = d(img, render)
    assert [tuple(s.shape) for s in scores] == [(2, 1, 16, 16), (2, 1, 8, 8), (2, 1, 4, 4)]
    feats = d(img, render, features=True)
    assert len(feats) == 3 and all(len(f) == 4 for f in feats)          # 3 LeakyReLUs and the scores
    assert all(torch.equal(f[-1], s) for f, s in zip(feats, scores))
    assert feature_matching_loss(feats, feats) == 0
    fake = img.clone().requires_grad_(True)
    loss = feature_matching_loss(feats, d(fake + 0.1, render, features=True))
    assert loss > 0
    loss.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0


def test_seen_render_weights_match_the_hybrids_reference():
    """The torch composite weights that training uses equal `ganrefine.hybrid.seen_weights` (OpenCV's
    blur), the ones `--method hybrid` composes with."""
    import numpy as np

    from ganrefine.hybrid import SEEN_CONFIDENCE, SEEN_FEATHER, seen_weights
    from ganrefine.refiner import seen_render_weights

    rng = np.random.default_rng(0)
    conf = rng.uniform(0, 1, (2, 128, 128)).astype(np.float32)
    conf[:, :, :40] = 0.1
    mask = (rng.uniform(0, 1, (2, 128, 128)) > 0.2).astype(np.float32)
    ref = seen_weights(conf, mask, SEEN_CONFIDENCE, SEEN_FEATHER)[..., 0]
    got = seen_render_weights(torch.from_numpy(conf)[:, None], torch.from_numpy(mask)[:, None], SEEN_CONFIDENCE,
                              SEEN_FEATHER)[:, 0].numpy()
    assert np.abs(got - ref).max() < 1e-5
