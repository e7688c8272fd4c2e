"""Labels of rendered views: landmarks where the render puts them, visibility by a z-buffer test,
the ArcFace crop's pixel conventions, and the labels in rotate's manifest."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from face3d.camera import Pose
from face3d.labels import (ARCFACE_SIZE, ARCFACE_TEMPLATE, VISIBLE_DEPTH_MM, arcface_crop, arcface_transform,
                           view_labels)
from face3d.landmarks import detect_faces
from face3d.rasterizer import rasterize_meshes
from face3d.render import view_screen
from facesynth.cli import main

INNER = np.arange(17, 68)


@pytest.fixture(scope="module")
def mean_vertices(ict_model):
    return ict_model.tensors()["mean"][None]


def test_inner_landmarks_are_the_projected_fixed_vertices(ict_model, mean_vertices):
    poses = [Pose(y, p, r) for y, p, r in ((0, 0, 0), (30, 10, 0), (-45, -5, 8))]
    labels = view_labels(mean_vertices, ict_model, poses, 128)
    screen = view_screen(mean_vertices, ict_model, poses, 128).numpy()
    fixed = ict_model.landmark_vertices[INNER]
    for b, lab in enumerate(labels):
        assert np.allclose(lab.landmarks[INNER], screen[b, fixed, :2], atol=1e-4)
        assert lab.landmarks.shape == (68, 2) and lab.visible.dtype == bool
        lo, hi = lab.landmarks.min(axis=0), lab.landmarks.max(axis=0)
        assert np.allclose(lab.face_box, [lo[0], lo[1], hi[0], hi[1]])
        assert np.allclose(lab.arcface_points[0], lab.landmarks[36:42].mean(axis=0))
        assert np.allclose(lab.arcface_points[2:], lab.landmarks[[30, 48, 54]])


def test_a_frontal_view_sees_its_landmarks_and_a_profile_hides_the_far_eye(ict_model, mean_vertices):
    front, right, left = view_labels(mean_vertices, ict_model, [Pose(0, 0, 0), Pose(90, 0, 0), Pose(-90, 0, 0)], 128)
    assert front.visible.sum() >= 65
    # yaw +90: the nose points to the image's right, the subject's left eye (42-47) and jaw (10-16) turn away
    assert not right.visible[42:48].any() and right.visible[36:42].sum() >= 2
    assert right.visible[:8].all() and not right.visible[11:16].any()
    assert not left.visible[36:42].any() and left.visible[42:48].sum() >= 2
    assert left.visible[9:17].all() and not left.visible[1:6].any()


def reference_visibility(vertices, model, pose: Pose, size: int, points_idx: np.ndarray, factor: int = 4):
    """The plain z-buffer test at `factor` times the resolution: the surface seen at each vertex's
    pixel lies no more than VISIBLE_DEPTH_MM in front of it."""
    big = size * factor
    screen = view_screen(vertices, model, [pose], big)
    zbuf = rasterize_meshes(screen, model.tensors()["triangles"], big, cull_backfaces=True).zbuf[0].numpy()
    p = screen[0, points_idx].numpy()
    ix = np.clip(np.floor(p[:, 0]).astype(int), 0, big - 1)
    iy = np.clip(np.floor(p[:, 1]).astype(int), 0, big - 1)
    z = zbuf[iy, ix]
    return (z <= 0) | (z >= p[:, 2] - VISIBLE_DEPTH_MM)


def test_inner_visibility_agrees_with_a_fine_z_buffer(ict_model, mean_vertices):
    poses = [Pose(y, p, 0) for y in (-75, -45, -20, 0, 30, 60, 90) for p in (-15, 10)]
    labels = view_labels(mean_vertices, ict_model, poses, 128)
    agree = []
    for pose, lab in zip(poses, labels):
        ref = reference_visibility(mean_vertices, ict_model, pose, 128, ict_model.landmark_vertices[INNER])
        agree.append(lab.visible[INNER] == ref)
    assert np.mean(agree) >= 0.95, np.mean(agree)


def test_far_jaw_points_lie_on_the_heads_outline(ict_model, mean_vertices):
    """Turned 40 degrees, the jaw points of the side turned away sit on the silhouette of the head,
    as a detector puts them, not on the fixed vertices hidden behind the cheek; those of the near
    side (an inner outline, against the neck and ear) are seen."""
    size = 256
    pose = Pose(40, 0, 0)
    lab = view_labels(mean_vertices, ict_model, [pose], size)[0]
    screen = view_screen(mean_vertices, ict_model, [pose], size)
    mask = (rasterize_meshes(screen, ict_model.tensors()["triangles"], size).pix_to_face[0] >= 0).numpy()
    edge = mask & ~cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    ys, xs = np.nonzero(edge)
    outline = np.stack([xs + 0.5, ys + 0.5], axis=1)
    far = list(range(9, 17))           # the subject's left turns away at yaw +40

    def to_outline(points):
        return np.array([np.min(np.linalg.norm(outline - p, axis=1)) for p in points])

    d = to_outline(lab.landmarks[far])
    assert np.median(d) < 1.5, d
    d_fixed = to_outline(screen[0, ict_model.landmark_vertices[far], :2].numpy())
    assert np.median(d_fixed) > 4 * max(np.median(d), 0.5), d_fixed
    assert lab.visible[far].all() and lab.visible[:8].all()


def test_far_lower_jaw_points_are_seen_on_the_outline_at_45_degrees(ict_model, mean_vertices):
    """At +-45 degrees of yaw, tilted 10 degrees, the far side's lower jaw points (iBUG 6 and 10) are
    the outermost *seen* vertex of their strip, on the silhouette, not the outermost one, which lay
    under the chin, hidden by the jaw."""
    size = 256
    poses = [Pose(45, -10, 0), Pose(-45, -10, 0), Pose(45, 10, 0)]
    labels = view_labels(mean_vertices, ict_model, poses, size)
    screen = view_screen(mean_vertices, ict_model, poses, size)
    frags = rasterize_meshes(screen, ict_model.tensors()["triangles"], size)
    for b, (pose, lab) in enumerate(zip(poses, labels)):
        mask = (frags.pix_to_face[b] >= 0).numpy()
        edge = mask & ~cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        ys, xs = np.nonzero(edge)
        outline = np.stack([xs + 0.5, ys + 0.5], axis=1)
        far = list(range(9, 17)) if pose.yaw > 0 else list(range(0, 8))
        lower = [10, 11] if pose.yaw > 0 else [5, 6]
        assert lab.visible[lower].all(), (pose, lab.visible[far])
        d = np.array([np.min(np.linalg.norm(outline - lab.landmarks[k], axis=1)) for k in lower])
        assert (d < 2.0).all(), (pose, d)


def test_arcface_transform_is_the_similarity_that_maps_onto_the_template():
    assert np.allclose(arcface_transform(ARCFACE_TEMPLATE), [[1, 0, 0], [0, 1, 0]], atol=1e-9)
    a = np.deg2rad(17.0)
    S = 2.3 * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    src = (ARCFACE_TEMPLATE - [5.0, -3.0]) @ np.linalg.inv(S).T
    A = arcface_transform(src)
    assert np.allclose(src @ A[:, :2].T + A[:, 2], ARCFACE_TEMPLATE, atol=1e-9)


def test_arcface_crop_puts_the_five_points_on_the_template():
    """Five blobs drawn at sub-pixel positions (pixel j's centre at j + 0.5) land on the template
    in the crop, under the same convention: the crop's pixel map is the labels' map."""
    size = 256
    a = np.deg2rad(-12.0)
    R = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    pts = (ARCFACE_TEMPLATE - 56.0) @ (1.7 * R).T + [131.3, 120.6]
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    img = np.zeros((size, size), np.float64)
    for x, y in pts:
        img += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 2.5 ** 2))
    rgb = np.repeat((img / img.max() * 255).astype(np.uint8)[..., None], 3, axis=2)
    crop, A = arcface_crop(rgb, pts)
    assert crop.shape == (ARCFACE_SIZE, ARCFACE_SIZE, 3)
    g = crop[..., 0].astype(np.float64)
    cy, cx = np.mgrid[0:ARCFACE_SIZE, 0:ARCFACE_SIZE] + 0.5
    for t in ARCFACE_TEMPLATE:
        w = g * ((cx - t[0]) ** 2 + (cy - t[1]) ** 2 < 5 ** 2)
        found = np.array([(w * cx).sum(), (w * cy).sum()]) / w.sum()
        assert np.linalg.norm(found - t) < 0.25, (found, t)


@pytest.mark.slow
def test_rotate_writes_labels_that_match_the_pictures(tmp_path, obama_path):
    out = tmp_path / "o"
    assert main(["rotate", str(obama_path), "--yaw", "0,30", "--size", "192", "--no-dense", "--method", "3d",
                 "--out", str(out), "--align", "arcface"]) == 0
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    from PIL import Image

    for row in rows:
        img = np.asarray(Image.open(out / row["output"]).convert("RGB"))
        assert img.shape == (112, 112, 3) and row["size"] == 112 and row["align"] == "arcface"
        lm = np.array(row["landmarks"])
        assert lm.shape == (68, 2) and len(row["landmarks_visible"]) == 68
        assert len(row["identity_coefficients"]) > 0 and len(row["expression_coefficients"]) == 53
        cam = row["camera"]
        assert np.array(cam["rotation"]).shape == (3, 3) and np.array(cam["crop_transform"]).shape == (2, 3)
        # frontal, the five points sit near the frontal template (a least-squares similarity of 5
        # points: not exactly on it, measured 2.3 px median on this broad smile; turned, the nose
        # leaves it, as in any five-point alignment)
        if row["yaw"] == 0:
            assert np.median(np.linalg.norm(np.array(row["arcface_points"]) - ARCFACE_TEMPLATE, axis=1)) < 3.0
        # dlib's landmarks on the written crop agree with the labels (+0.5: dlib counts pixel centres at j)
        found = detect_faces(img)
        assert found, row["output"]
        err = np.linalg.norm(found[0].landmarks + 0.5 - lm, axis=1) / np.linalg.norm(lm[45] - lm[36])
        assert np.median(err[INNER]) < 0.06, (row["yaw"], np.median(err[INNER]))


@pytest.mark.slow
def test_labels_are_the_same_for_3d_and_hybrid(obama_path):
    import facesynth

    a = facesynth.rotate(obama_path, yaws=[-20, 25], method="3d", size=96, dense=False)[0]
    b = facesynth.rotate(obama_path, yaws=[-20, 25], method="hybrid", size=96, dense=False)[0]
    for la, lb in zip(a.labels, b.labels):
        assert np.array_equal(la.landmarks, lb.landmarks) and np.array_equal(la.visible, lb.visible)
    assert a.cameras == b.cameras


@pytest.mark.slow
def test_the_readme_loader_reads_a_rotate_run(tmp_path, obama_path):
    """The README's `Dataset` example, run as written on a real run's output."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = readme.split("<!-- loader:start -->", 1)[1].split("<!-- loader:end -->", 1)[0]
    code = code.split("```python", 1)[1].split("```", 1)[0]
    out = tmp_path / "o"
    assert main(["rotate", str(obama_path), "--yaw", "-30,30", "--size", "64", "--no-dense", "--method", "3d",
                 "--out", str(out)]) == 0
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    data = scope["FaceSynthViews"](str(out))
    assert len(data) == 2
    image, landmarks, pose = data[1]
    assert image.shape == (3, 64, 64) and landmarks.shape == (68, 2) and pose.tolist() == [30.0, 0.0, 0.0]
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert np.allclose(landmarks.numpy(), rows[1]["landmarks"], atol=1e-4)


def test_view_maps_encode_what_the_renderer_sees(ict_model, mean_vertices):
    from face3d.errors import FaceSynthError
    from face3d.view_maps import DEPTH_UNIT_MM, decode_map, encode_map, parse_maps, view_maps

    assert parse_maps("depth, mask,depth") == ("depth", "mask") and parse_maps(None) == ()
    with pytest.raises(FaceSynthError, match="unknown map"):
        parse_maps("depth,albedo")
    size = 96
    maps = view_maps(mean_vertices, ict_model, [Pose(0, 0, 0), Pose(50, 0, 0)], size)
    mask, depth, normals = maps["mask"], maps["depth"], maps["normals"]
    assert set(np.unique(mask)) == {0.0, 1.0}
    assert ((depth > 0) == (mask > 0)).all()
    n = np.linalg.norm(normals[mask > 0], axis=-1)
    assert np.allclose(n, 1.0, atol=1e-4) and (np.abs(normals[mask == 0]) == 0).all()
    lab = view_labels(mean_vertices, ict_model, [Pose(0, 0, 0)], size)[0]
    x, y = np.floor(lab.landmarks[30]).astype(int)         # the nose tip faces the camera
    assert normals[0, y, x, 2] > 0.8
    screen = view_screen(mean_vertices, ict_model, [Pose(0, 0, 0)], size)[0].numpy()
    assert abs(depth[0, y, x] - screen[ict_model.landmark_vertices[30], 2]) < 3.0
    for name in ("depth", "normals", "mask"):
        back = decode_map(name, encode_map(name, maps[name][1]))
        tol = {"depth": DEPTH_UNIT_MM / 2 + 1e-3, "normals": 2.0 / 65535, "mask": 1 / 255}[name]
        assert back.shape == maps[name][1].shape and np.abs(back - maps[name][1]).max() <= tol, name


def _brute_force_visibility(points, screen, triangles, size, margin):
    """landmark_visibility's ray test over every (point, triangle) pair whose box holds the point:
    no grid, no pre-selection of triangles."""
    tri = screen[triangles]                                               # (F, 3, 3)
    lo, hi = tri[..., :2].min(1), tri[..., :2].max(1)
    seen = np.ones(len(points), bool)
    for i, p in enumerate(points):
        f = np.flatnonzero((lo <= p[:2]).all(1) & (hi >= p[:2]).all(1))
        a, b, c = tri[f, 0, :2], tri[f, 1, :2], tri[f, 2, :2]
        det = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
        ok = np.abs(det) > 1e-12
        safe = np.where(ok, det, 1.0)
        w1 = ((p[0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (p[1] - a[:, 1])) / safe
        w2 = ((b[:, 0] - a[:, 0]) * (p[1] - a[:, 1]) - (p[0] - a[:, 0]) * (b[:, 1] - a[:, 1])) / safe
        w0 = 1 - w1 - w2
        with np.errstate(divide="ignore", invalid="ignore"):
            z = 1.0 / (w0 / tri[f, 0, 2] + w1 / tri[f, 1, 2] + w2 / tri[f, 2, 2])
        seen[i] = not (ok & (w0 >= 0) & (w1 >= 0) & (w2 >= 0) & (z < p[2] - margin)).any()
    inside = ((points[:, :2] >= 0) & (points[:, :2] <= size)).all(1)
    return inside & seen


def test_landmark_visibility_matches_the_brute_force_ray_test(ict_model, mean_vertices):
    """The triangles `landmark_visibility` tests are pre-selected (summed-area table of the points'
    pixels) and paired on a grid: the same answers as testing every triangle."""
    from face3d.labels import landmark_visibility

    rng = np.random.default_rng(0)
    for pose, size in ((Pose(0, 0, 0), 128), (Pose(-60, 10, 0), 128), (Pose(45, -10, 5), 256)):
        screen = view_screen(mean_vertices, ict_model, [pose], size)[0].numpy().astype(np.float64)
        pts = screen[rng.choice(len(screen), 300, replace=False)].copy()
        pts[:, 2] -= rng.uniform(-20, 5, len(pts))              # some in front of the surface, some behind
        pts[:5, :2] = [[-3, 40], [size + 2, 50], [60, -1], [0, 0], [size, size]]   # outside / on the border
        got = landmark_visibility(pts, screen, ict_model.triangles, size)
        want = _brute_force_visibility(pts, screen, ict_model.triangles, size, VISIBLE_DEPTH_MM)
        assert 0.1 < got.mean() < 0.9
        assert np.array_equal(got, want)
