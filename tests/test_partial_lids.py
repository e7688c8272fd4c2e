"""A partly closed eye (a squint set from a reference photo, issue 29): the lash line sits at the
margin of the lid where it is, weaker than a closed eye's, and the lid's shadow, not eye white,
shows on the eyeball right under it (`face3d.expressions.expression_texture`)."""
from __future__ import annotations

import numpy as np
import pytest

from face3d import Pose
from face3d.expressions import (EYE_SHADOW, LASH_RGB_SCALE, closing_expression, edited_vertices,
                                expression_coefficients, expression_texture, eye_closure, eyeball_vertices)
from face3d.render import render_views
from face3d.texture import Texture, uv_raster

#: iBUG upper-lid and lower-lid landmarks of the subject's right and left eyes (0-based)
UPPER, LOWER = ((37, 38), (43, 44)), ((40, 41), (46, 47))


def texel_parts(model, height: int):
    """(H, W) bool masks of the atlas: skin texels and eyeball texels."""
    raster = uv_raster(model, height)
    tri = model.triangles[np.maximum(raster.face, 0)]
    seen = raster.face >= 0
    return seen & model.skin[tri].all(axis=2), seen & eyeball_vertices(model)[tri].all(axis=2), raster


def flat_texture(model, height: int, skin_rgb=0.6, eye_rgb=1.0) -> Texture:
    """A uniform texture: skin grey, eyeballs white (what a darkening shows against)."""
    skin, eye, raster = texel_parts(model, height)
    img = np.full(raster.face.shape + (3,), skin_rgb, np.float32)
    img[eye] = eye_rgb
    return Texture(img, np.ones(raster.face.shape, np.float32), None)


def lid_darkness(model, beta, height: int = 512):
    """(H, W) darkening 0..1 of the skin texels of a uniform texture, and the texture."""
    flat = flat_texture(model, height)
    out = expression_texture(flat, model, beta, None)
    skin, _, _ = texel_parts(model, height)
    return np.where(skin, 1.0 - out.image.mean(axis=2) / flat.image.mean(axis=2), 0.0), out


def texel_heights(model, beta, height: int = 512):
    """(H, W) model-space y (mm) of each atlas texel on the generic face with `beta` (lids as drawn)."""
    raster = uv_raster(model, height)
    verts = edited_vertices_generic(model, beta)
    seen = raster.face >= 0
    y = np.full(raster.face.shape, np.nan)
    tri = model.triangles[raster.face[seen]]
    y[seen] = np.einsum("nk,nk->n", raster.bary[seen], verts[tri, 1])
    return y


def edited_vertices_generic(model, beta):
    """(V, 3) the generic face with `beta`, its blink scaled as `expression_texture` draws it."""
    b = closing_expression(model, beta, None)
    return model.mean + np.einsum("e,evc->vc", b, model.expression_basis[: b.size])


def test_partial_closure_ramps_the_closed_treatment(ict_model):
    half = expression_coefficients("eyeBlink_L=0.5,eyeBlink_R=0.5", ict_model)
    full = expression_coefficients("blink", ict_model)
    assert [k for _, k in eye_closure(ict_model, half)] == [0.0, 0.0]
    assert [k for _, k in eye_closure(ict_model, full)] == [1.0, 1.0]
    assert sorted(s for s, _ in eye_closure(ict_model, full)) == [-1.0, 1.0]   # one per eye


@pytest.mark.parametrize("weight", [0.3, 0.5])
def test_partial_lash_line_at_the_partial_margin_and_weaker(ict_model, weight):
    """At partial closure the lash darkness lies on the lid's margin where the lid is (the upper-lid
    landmarks' height), not where the closed lids meet (the lower lid's), and is weaker than a blink's."""
    beta = expression_coefficients(f"eyeBlink_L={weight},eyeBlink_R={weight}", ict_model)
    dark, _ = lid_darkness(ict_model, beta)
    full, _ = lid_darkness(ict_model, expression_coefficients("blink", ict_model))
    assert 0.3 < dark.max() < full.max() and dark.sum() < 0.5 * full.sum()
    y = texel_heights(ict_model, beta)
    V = edited_vertices_generic(ict_model, beta)
    lm = ict_model.landmark_vertices
    x = np.full(dark.shape, np.nan)
    raster = uv_raster(ict_model, dark.shape[0])
    seen = raster.face >= 0
    x[seen] = np.einsum("nk,nk->n", raster.bary[seen], V[ict_model.triangles[raster.face[seen]], 0])
    for up, down in zip(UPPER, LOWER):
        side = np.sign(V[lm[up[0]], 0])
        strong = (dark > 0.5 * dark.max()) & (np.sign(x) == side)
        assert strong.sum() > 20
        lash_y = float(np.average(y[strong], weights=dark[strong]))
        lid_y = float(V[lm[list(up)], 1].mean())             # the partial upper lid's margin
        closed_y = float(V[lm[list(down)], 1].mean())        # where a closed lid would meet the lower one
        assert lid_y - closed_y > 2.0                        # mm: the eye is still open
        assert abs(lash_y - lid_y) < 1.0 < abs(lash_y - closed_y)
        assert float(y[strong].min()) > closed_y + 1.0        # no lash band down on the lower lid


def test_partial_closure_keeps_most_of_the_eyeball(ict_model):
    """Eyeball texels are only shaded (by the lid's shadow, at most EYE_SHADOW of the lash darkening),
    never turned to the closed eye's lash colour, and most keep their colour."""
    beta = expression_coefficients("eyeBlink_L=0.5,eyeBlink_R=0.5", ict_model)
    _, out = lid_darkness(ict_model, beta)
    _, eye, _ = texel_parts(ict_model, 512)
    v = out.image[eye].mean(axis=1)                                  # eyeballs were white (1.0)
    assert v.min() >= 1.0 - (1.0 - LASH_RGB_SCALE) * EYE_SHADOW - 1e-4
    assert (v < 1.0 - 1e-4).any() and np.mean(v > 1.0 - 1e-4) > 0.5


def _render(fit, texture, model, beta, size):
    verts = edited_vertices(fit, model, beta)
    frame = edited_vertices(fit, model, None)
    return render_views(fit, texture, [Pose(0)], model, size=size, vertices=verts, frame_vertices=frame).images[0]


@pytest.mark.parametrize("weight", [0.35, 0.6])
def test_no_eye_white_at_the_partial_lid_edge(ict_model, obama_reconstruction, weight):
    """A frontal render of a face at partial closure (a flat texture: grey skin, white eyeballs):
    the eyeball pixels right under the upper lid, away from the eye's corners (where the lid barely
    moves and the photo's own eye corner stays), are shaded by the lid, so no eye white shows along
    or above the lid's margin; the eyeball further down keeps its white."""
    fit = obama_reconstruction.fit
    beta = expression_coefficients(f"fitted+eyeBlink_L={weight},eyeBlink_R={weight}", ict_model, fit.expression)
    size = 384
    skin, eye, raster = texel_parts(ict_model, 512)
    code = np.zeros(raster.face.shape + (3,), np.float32)
    code[skin] = (0, 1, 0)
    code[eye] = (1, 0, 1)
    part = _render(fit, Texture(code, np.ones(raster.face.shape, np.float32), None), ict_model, beta, size)
    is_eye = (part[..., 0] > 200) & (part[..., 1] < 60)
    is_skin = (part[..., 1] > 200) & (part[..., 0] < 60)
    flat = flat_texture(ict_model, 512)
    shown = _render(fit, expression_texture(flat, ict_model, beta, fit.expression, identity=fit.identity),
                    ict_model, beta, size).mean(axis=2) / 255.0
    under_lid = is_eye[1:] & is_skin[:-1]                           # eyeball pixel, skin right above it
    # the upper lid's edge (not the lower lid's): the top half of each eye's pixels
    rows = np.nonzero(is_eye.any(axis=1))[0]
    top = np.zeros_like(under_lid)
    top[: (rows.min() + rows.max()) // 2 - 1] = True
    inner = np.zeros_like(under_lid)                                # away from the corners, where the lid moves
    mid = size // 2
    for cols in (slice(0, mid), slice(mid, size)):
        xs = np.nonzero(is_eye[:, cols].any(axis=0))[0] + cols.start
        w = xs.max() - xs.min()
        inner[:, xs.min() + int(0.15 * w): xs.max() - int(0.15 * w)] = True
    edge = under_lid & top & inner
    assert edge.sum() > 20
    assert float(np.quantile(shown[1:][edge], 0.95)) < 0.85         # shaded, not the white (1.0)
    assert float(np.median(shown[is_eye])) > 0.85                    # the open part keeps its white
