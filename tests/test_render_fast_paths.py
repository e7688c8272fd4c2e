"""The renderer's fast paths against their plain versions: `transform_views` against `transform` of
the expanded points, and `_fill_ring` (rows of a channels-last view) against `_fill_ring_reference`."""
import numpy as np
import pytest
import torch

from face3d.camera import euler_to_matrix, transform, transform_views
from face3d.render import _fill_ring, _fill_ring_reference, box_mean3


def test_transform_views_sums_as_transform():
    gen = torch.Generator().manual_seed(0)
    points = torch.randn(1, 5000, 3, generator=gen) * 80
    angles = (torch.rand(17, 3, generator=gen) - 0.5) * 2.5
    R = euler_to_matrix(angles[:, 0], angles[:, 1], angles[:, 2])
    t = torch.randn(17, 3, generator=gen) * 500
    fast = transform_views(points, R, t)
    assert fast.shape == (17, 5000, 3) and fast.is_contiguous()
    assert torch.equal(fast, transform(points.expand(17, -1, -1), R, t))


def _ring_case(seed: int, batch: int = 6, size: int = 40, channels: int = 5):
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centres = torch.rand(batch, 2, generator=gen) * size
    radii = 4 + torch.rand(batch, generator=gen) * size / 2
    # discs, some touching the border, one view empty
    mask = (((yy[None] - centres[:, 0, None, None]) ** 2 + (xx[None] - centres[:, 1, None, None]) ** 2)
            < radii[:, None, None] ** 2).float()
    mask[-1] = 0
    values = torch.rand(batch, size, size, channels, generator=gen).permute(0, 3, 1, 2)   # channels last
    return values, mask, box_mean3(mask)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fill_ring_matches_reference(seed):
    values, mask, cover = _ring_case(seed)
    ring = ((mask == 0) & (cover > 0))
    assert ring.any()
    for part in (values[:, :3], values[:, 4:5], values):       # slices, as render_views passes them
        fast = _fill_ring(part.clone(), mask, cover)
        ref = _fill_ring_reference(part.clone(), mask, cover)
        assert torch.equal(fast, ref)
        changed = (fast != part).any(dim=1)
        assert changed.any() and not (changed & ~ring).any()    # the ring, and nothing else, is written


def test_fill_ring_other_layouts_and_no_ring():
    values, mask, cover = _ring_case(3)
    first = values.contiguous()                                  # channels first: the reference path
    assert torch.equal(_fill_ring(first.clone(), mask, cover), _fill_ring_reference(first.clone(), mask, cover))
    empty = torch.zeros_like(mask)
    before = values.clone()
    assert torch.equal(_fill_ring(values, empty, box_mean3(empty)), before)


def test_fill_ring_mean_of_head_neighbours():
    """One ring pixel by hand: the mean over the head pixels of its 3x3 neighbourhood."""
    values, mask, cover = _ring_case(4, batch=2, size=24, channels=3)
    b, y, x = (((mask == 0) & (cover > 0)).nonzero())[0].tolist()
    expect = np.zeros(3)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            yy, xx = y + dy, x + dx
            if 0 <= yy < 24 and 0 <= xx < 24 and mask[b, yy, xx] > 0:
                expect += values[b, :, yy, xx].double().numpy()
    expect /= 9 * float(cover[b, y, x])
    out = _fill_ring(values.clone(), mask, cover)
    assert np.allclose(out[b, :, y, x].double().numpy(), expect, atol=1e-6)
