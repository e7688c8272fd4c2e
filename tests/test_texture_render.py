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
