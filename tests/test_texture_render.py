"""Texture extraction and re-posing on a real photo: no holes, consistent framing, pose convention."""
from __future__ import annotations

import numpy as np

from face3d.camera import Pose
from face3d.render import render_views
from face3d.texture import INPAINT_CONFIDENCE, uv_raster


def test_texture_has_no_holes(obama_reconstruction, ict_model):
    tex = obama_reconstruction.texture
    assert np.isfinite(tex.image).all()
    assert tex.image.min() >= 0 and tex.image.max() <= 1.0 + 1e-6
    raster = uv_raster(ict_model, tex.image.shape[0])
    covered = raster.face >= 0
    # every texel a triangle uses has a colour and a confidence (seen, mirrored or inpainted)
    assert (tex.confidence[covered] >= INPAINT_CONFIDENCE - 1e-6).all()
    seen = tex.confidence > 0.5
    assert 0.05 < seen[covered].mean() < 0.8  # the photo sees the face, not the back of the head


def test_mirror_fill_uses_the_other_side(obama_reconstruction, ict_model):
    tex = obama_reconstruction.texture
    raster = uv_raster(ict_model, tex.image.shape[0])
    m = raster.mirror.reshape(-1)
    has = m >= 0
    assert has.mean() > 0.5 * (raster.face >= 0).mean()
    # mirroring is an involution up to a texel or two: the mirror of the mirror lies close by
    H, W = raster.face.shape
    src = np.nonzero(has)[0][::97]
    back = m[m[src]]
    ok = back >= 0
    d = np.hypot(back[ok] // W - src[ok] // W, back[ok] % W - src[ok] % W)
    assert np.median(d) <= 2.0


def test_views_have_no_holes_and_consistent_framing(obama_reconstruction, ict_model):
    rec = obama_reconstruction
    poses = [Pose(y, p, 0) for y in (-60, -30, 0, 30, 60) for p in (-15, 0, 15)]
    views = render_views(rec.fit, rec.texture, poses, ict_model, size=128, background=0.0)
    white = render_views(rec.fit, rec.texture, poses, ict_model, size=128, background=1.0)
    assert views.images.shape == (15, 128, 128, 3)
    inside = views.masks > 1 - 1e-6     # fully covered (the ears' texture alpha may leave a pixel at 0.999)
    # no background shows through inside the head: covered pixels do not depend on the background
    assert inside.reshape(15, -1).mean(1).min() > 0.2
    assert np.array_equal(views.images[inside], white.images[inside])
    assert (views.confidence[inside] > 0).all()
    # the head is placed the same way in every view: its area and centre barely move
    areas = inside.reshape(15, -1).mean(1)
    assert areas.max() / areas.min() < 1.6
    lm = views.landmarks
    eyes = 0.5 * (lm[:, 36] + lm[:, 45])
    mouth = 0.5 * (lm[:, 48] + lm[:, 54])
    centre = 0.5 * (eyes + mouth)
    assert np.abs(centre - 64).max() < 20
    # pose convention: yaw > 0 moves the nose tip (iBUG 31) toward the image's right edge
    nose = lm[:, 30, 0] - centre[:, 0]
    yaws = np.array([p.yaw for p in poses])
    assert (nose[yaws == 60] > 5).all() and (nose[yaws == -60] < -5).all()
    # pitch > 0: nose up (smaller row) relative to the eyes-mouth centre
    noses_y = lm[:, 30, 1] - centre[:, 1]
    pit = np.array([p.pitch for p in poses])
    assert noses_y[(pit == 15) & (yaws == 0)][0] < noses_y[(pit == -15) & (yaws == 0)][0]


def test_the_outline_blends_the_head_colour_into_the_background(obama_reconstruction, ict_model):
    """The anti-aliased ring round the head mixes the head's own colour with the backdrop; the atlas
    corner (what an empty pixel samples) must not show there, whatever its colour."""
    from face3d.texture import Texture

    rec = obama_reconstruction
    image = np.empty_like(rec.texture.image)
    image[:] = (0.8, 0.2, 0.2)
    image[-8:, :8] = 0.0                                  # the atlas corner at UV (0, 0): black
    flat = Texture(image, rec.texture.confidence, None)
    views = render_views(rec.fit, flat, [Pose(0, 0, 0), Pose(40, 10, 0)], ict_model, size=96, background=0.5)
    edge = (views.masks > 0) & (views.masks < 1)
    assert edge.sum() > 100
    px = views.images[edge].astype(float)
    # each edge pixel lies between the grey backdrop (127.5) and the head (204, 51, 51), to rounding
    assert px[:, 0].min() >= 126 and px[:, 1].max() <= 129 and px[:, 2].max() <= 129


def test_size_256_matches_128(obama_reconstruction, ict_model):
    rec = obama_reconstruction
    a = render_views(rec.fit, rec.texture, [Pose(20, 0, 0)], ict_model, size=128)
    b = render_views(rec.fit, rec.texture, [Pose(20, 0, 0)], ict_model, size=256)
    assert b.images.shape == (1, 256, 256, 3)
    import cv2

    small = cv2.resize(b.images[0], (128, 128), interpolation=cv2.INTER_AREA).astype(np.float32)
    assert np.abs(small - a.images[0].astype(np.float32)).mean() < 12


def test_mesh_export_formats(tmp_path, obama_reconstruction, ict_model):
    import trimesh

    from face3d.mesh_export import export_mesh

    verts = obama_reconstruction.fit.vertices(ict_model)[0].numpy()
    for fmt in ("obj", "ply", "glb"):
        written = export_mesh(tmp_path / f"head.{fmt}", verts, ict_model, obama_reconstruction.texture)
        assert all(p.is_file() for p in written)
        mesh = trimesh.load(tmp_path / f"head.{fmt}", force="mesh")
        assert len(mesh.faces) == ict_model.triangles.shape[0]
        assert np.allclose(mesh.bounds, [verts.min(0), verts.max(0)], atol=1e-3)
    assert (tmp_path / "head.mtl").is_file()


def _inner_mouth_pixels(views, k: int) -> np.ndarray:
    import cv2

    mask = np.zeros(views.images.shape[1:3], np.uint8)
    cv2.fillPoly(mask, [views.landmarks[k][60:68].astype(np.int32)], 1)
    return views.images[k][mask > 0]


def test_an_open_mouth_shows_the_photos_teeth_from_other_angles(obama_reconstruction, ict_model, data_dir):
    """The photo shows teeth; a view from another angle sees other walls of the mouth socket than
    the photo did. They take the photo's open mouth on the lip plane, not the dark default."""
    from face3d.fitting import FitConfig
    from face3d.image_io import load_image
    from face3d.pipeline import reconstruct_faces
    from face3d.texture import MOUTH_INTERIOR_RGB, MOUTH_PLANE_CONFIDENCE

    rec = obama_reconstruction
    assert np.isclose(rec.texture.confidence, MOUTH_PLANE_CONFIDENCE).sum() > 1000
    views = render_views(rec.fit, rec.texture, [Pose(-45), Pose(0), Pose(30)], ict_model, size=128)
    dark = np.array(MOUTH_INTERIOR_RGB) * 255
    for k in range(3):
        px = _inner_mouth_pixels(views, k).astype(np.float64)
        assert len(px) > 50 and px.mean() > 150                        # teeth, as in the photo
        assert (np.abs(px - dark).max(axis=1) < 20).mean() < 0.1       # hardly any default mouth colour
    # a closed mouth has no opening to take colours from: its socket keeps the default
    closed = reconstruct_faces(load_image(data_dir / "faces" / "biden" / "face_recognition_biden.jpg"), ict_model,
                               fit_config=FitConfig(dense=False))[0]
    assert np.isclose(closed.texture.confidence, MOUTH_PLANE_CONFIDENCE).sum() < 50


# --- the sped-up texture extraction against plain references (the forms it was first written in)

def _reference_texel_samples(fit, image, model, cfg):
    """Per covered texel (atlas order): photo colour (0..255) and confidence (0: unseen), as
    extract_texture computed them before it was sped up: einsum interpolation over (N, 3, C)
    gathers, norms along axis 1, five foreground look-ups per texel, every texel sampled."""
    import torch

    from face3d.camera import transform
    from face3d.image_io import sample_bilinear
    from face3d.segmentation import head_foreground_mask
    from face3d.shading import vertex_normals
    from face3d.texture import (HAIR_CHROMA_DISTANCE, SKIN_LUMA_RANGE, _source_zbuffer, ear_vertices, skin_ycrcb,
                                ycrcb)

    raster = uv_raster(model, cfg.height)
    valid = raster.face >= 0
    tri, b = model.triangles[raster.face[valid]], raster.bary[valid]
    with torch.no_grad():
        verts = fit.vertices(model)
        cam = transform(verts, torch.from_numpy(fit.rotation.astype(np.float32))[None],
                        torch.from_numpy(fit.translation.astype(np.float32))[None])
        screen = fit.camera().project(cam)
        normals = vertex_normals(cam, model.tensors()["triangles"])
        zbuf, _, lo, s = _source_zbuffer(screen, model.tensors()["triangles"], image.shape[:2], cfg.visibility_size)
    p = np.einsum("nk,nkc->nc", b, screen[0].numpy()[tri])
    pc = np.einsum("nk,nkc->nc", b, cam[0].numpy()[tri])
    n = np.einsum("nk,nkc->nc", b, normals[0].numpy()[tri])
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-9)
    cos = np.sum(n * (-pc / np.maximum(np.linalg.norm(pc, axis=1, keepdims=True), 1e-9)), axis=1)
    zb = zbuf.numpy()
    zref = zb[np.clip(((p[:, 1] - float(lo[1])) * s).astype(np.int64), 0, zb.shape[0] - 1),
              np.clip(((p[:, 0] - float(lo[0])) * s).astype(np.int64), 0, zb.shape[1] - 1)]
    H, W = image.shape[:2]
    inside = (p[:, 0] >= 0) & (p[:, 0] <= W - 1) & (p[:, 1] >= 0) & (p[:, 1] <= H - 1)
    seen = inside & (zref > 0) & (p[:, 2] <= zref + cfg.depth_tolerance_mm) & (cos > cfg.min_cosine)
    fg = head_foreground_mask(fit, image, model)
    person = np.ones(len(p), bool)
    for dx, dy in ((0, 0), (-2, 0), (2, 0), (0, -2), (0, 2)):
        person &= fg[np.clip(np.rint(p[:, 1]).astype(np.int64) + dy, 0, H - 1),
                     np.clip(np.rint(p[:, 0]).astype(np.int64) + dx, 0, W - 1)]
    # an ear texel off the mask counts when its photo colour is the skin's
    ear = ear_vertices(model)[tri].all(axis=1)
    skin = skin_ycrcb(image, fit.landmarks)
    colour = ycrcb(sample_bilinear(image, p[:, :2]))
    skin_like = (np.linalg.norm(colour[:, 1:] - skin[1:], axis=1) < 0.5 * HAIR_CHROMA_DISTANCE) \
        & (colour[:, 0] / skin[0] > SKIN_LUMA_RANGE[0]) & (colour[:, 0] / skin[0] < SKIN_LUMA_RANGE[1])
    seen &= person | (ear & skin_like)
    return sample_bilinear(image, p[:, :2]), np.where(seen, np.clip(cos, 0.0, 1.0), 0.0).astype(np.float32)


def test_extracted_texels_match_the_plain_reference_bit_for_bit(obama_reconstruction, obama_image, ict_model):
    """Without the symmetry fill every texel keeps its own confidence: seen texels have exactly the
    reference's colour and confidence, the others (but the mouth socket) the inpainting's."""
    from face3d.texture import TextureConfig, atlas_texels, extract_texture

    cfg = TextureConfig(mirror_below=0.0)
    fit = obama_reconstruction.fit
    tex = extract_texture(fit, obama_image, ict_model, cfg)
    colours, conf = _reference_texel_samples(fit, obama_image, ict_model, cfg)
    texels = atlas_texels(ict_model, cfg.height)
    seen = conf > 0
    assert 0.1 < seen.mean() < 0.8
    got = tex.confidence.reshape(-1)[texels.flat]
    assert np.array_equal(got[seen], conf[seen])
    assert (got[~seen & ~texels.mouth] == INPAINT_CONFIDENCE).all()
    assert np.array_equal(tex.image.reshape(-1, 3)[texels.flat[seen]], colours[seen].astype(np.float32) / 255.0)


def test_interpolate_sums_as_einsum_did(ict_model):
    from face3d.texture import atlas_texels, interpolate

    texels = atlas_texels(ict_model, 64)
    for dtype in (np.float32, np.float64):
        values = np.random.default_rng(0).normal(size=(5, ict_model.num_vertices)).astype(dtype) * 300
        want = np.einsum("nk,nkc->nc", texels.bary.T, values.T[texels.corners.T])
        got = interpolate(texels, values)
        assert got.dtype == want.dtype and np.array_equal(got, want.T)


def test_foreground_texels_match_five_look_ups():
    import cv2

    from face3d.texture import _foreground_texels

    rng = np.random.default_rng(1)
    fg = cv2.GaussianBlur(rng.random((60, 90)).astype(np.float32), (0, 0), 3) > 0.5
    x, y = rng.uniform(0, 89, 5000).astype(np.float32), rng.uniform(0, 59, 5000).astype(np.float32)
    x[:4], y[:4] = (0, 89, 0.4, 88.6), (0, 59, 58.7, 0.2)          # the borders: neighbours clipped
    want = np.ones(len(x), bool)
    for dx, dy in ((0, 0), (-2, 0), (2, 0), (0, -2), (0, 2)):
        want &= fg[np.clip(np.rint(y).astype(np.int64) + dy, 0, 59), np.clip(np.rint(x).astype(np.int64) + dx, 0, 89)]
    assert 0.2 < want.mean() < 0.8
    assert np.array_equal(_foreground_texels(fg, x, y), want)


def _reference_push_pull(image, known):
    import cv2

    w = known.astype(np.float32)
    levels, img = [], image * w[..., None]
    while True:
        levels.append((img, w))
        if min(img.shape[:2]) <= 2:
            break
        img = cv2.resize(img, (max(1, img.shape[1] // 2), max(1, img.shape[0] // 2)), interpolation=cv2.INTER_AREA)
        w = cv2.resize(w, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_AREA)
    img, w = levels[-1]
    est = img / np.maximum(w, 1e-8)[..., None]
    if not np.any(w > 0):
        est[:] = 0.5
    else:
        est[w <= 0] = img.reshape(-1, 3).sum(0) / w.sum()
    for img, w in reversed(levels[:-1]):
        up = cv2.resize(est, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
        a = np.clip(w, 0.0, 1.0)[..., None]
        est = img / np.maximum(w, 1e-8)[..., None] * a + up * (1 - a)
        est = np.where((w > 0)[..., None], est, up)
    return np.where(known[..., None], image, est)


def test_push_pull_fill_matches_the_reference():
    from face3d.texture import push_pull_fill

    rng = np.random.default_rng(2)
    for shape, frac in (((128, 320), 0.3), ((37, 91), 0.05), ((2, 5), 0.5), ((16, 16), 0.0)):
        image = rng.random((*shape, 3)).astype(np.float32)
        known = rng.random(shape) < frac
        assert np.array_equal(push_pull_fill(image, known), _reference_push_pull(image, known))


def test_push_pull_fill_of_a_sparse_corner_never_fills_black():
    """Known pixels in one corner only: the coarsest level's empty cells take the known mean, so the
    far side of the image is filled with the known colour, not with black."""
    from face3d.texture import push_pull_fill

    image = np.zeros((64, 160, 3), np.float32)
    known = np.zeros((64, 160), bool)
    known[:10, :12] = True
    image[known] = (0.8, 0.1, 0.05)
    assert np.allclose(push_pull_fill(image, known), (0.8, 0.1, 0.05), atol=1e-5)


def test_texel_shading_of_some_texels_is_theirs_from_all():
    """The mirror fill shades only the texels it touches: the same numbers as shading them all."""
    from face3d.texture import texel_shading

    rng = np.random.default_rng(3)
    n = rng.normal(size=(20000, 3)).astype(np.float32)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    sh = rng.normal(size=(9, 3)).astype(np.float32)
    some = np.sort(rng.choice(len(n), 7001, replace=False))
    assert np.array_equal(texel_shading(n[some], sh), texel_shading(n, sh)[some])


def test_segmentation_in_its_own_thread_gives_the_sequential_texture(obama_image, obama_reconstruction, ict_model):
    """With more than one thread allowed, extract_texture runs GrabCut in a second thread while it
    rasterizes and interpolates: the texture, confidence and alpha are those of the same steps run
    one after the other."""
    from face3d.segmentation import head_foreground_mask
    from face3d.texture import TextureConfig, _extract_texture, extract_texture

    import torch

    fit = obama_reconstruction.fit
    threads = torch.get_num_threads()
    torch.set_num_threads(2)       # the second thread is used only where torch may use more than one
    try:
        threaded = extract_texture(fit, obama_image, ict_model)
        sequential = _extract_texture(fit, obama_image, ict_model, TextureConfig(), None,
                                      lambda: head_foreground_mask(fit, obama_image, ict_model))
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(threaded.image, sequential.image)
    assert np.array_equal(threaded.confidence, sequential.confidence)
    assert (threaded.alpha is None) == (sequential.alpha is None)
    if threaded.alpha is not None:
        assert np.array_equal(threaded.alpha, sequential.alpha)
