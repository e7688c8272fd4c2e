"""Head pose from landmarks + PnP (`face3d.pose_estimation`): exact on synthetic projections, and
the independent check of the re-posed views of a real photo (sign convention included)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from face3d.camera import PerspectiveCamera, Pose, euler_to_matrix, transform
from face3d.pose_estimation import angle_error, estimate_pose, view_pose_reference

POSES = [Pose(0, 0, 0), Pose(30, 0, 0), Pose(-30, 0, 0), Pose(55, 0, 0), Pose(-60, 10, 0),
         Pose(0, 20, 0), Pose(0, -20, 0), Pose(0, 0, 15), Pose(0, 0, -25),
         Pose(25, -12, 8), Pose(-40, 15, -10), Pose(10, 5, 30)]


def _landmark_points(model) -> np.ndarray:
    """(68, 3) model-space landmark positions of the mean shape (NaN where the model has none)."""
    lm = model.landmark_vertices
    pts = model.mean[np.maximum(lm, 0)].astype(np.float64)
    pts[lm < 0] = np.nan
    return pts


def _project(points: np.ndarray, pose: Pose, focal: float, center, distance: float = 600.0) -> np.ndarray:
    a = torch.tensor([[math.radians(pose.yaw), math.radians(pose.pitch), math.radians(pose.roll)]],
                     dtype=torch.float64)
    R = euler_to_matrix(a[:, 0], a[:, 1], a[:, 2])
    t = torch.tensor([[3.0, -5.0, -distance]], dtype=torch.float64)
    cam = PerspectiveCamera(torch.tensor([focal], dtype=torch.float64), torch.tensor([center], dtype=torch.float64))
    X = torch.from_numpy(np.nan_to_num(points))[None]
    return cam.project(transform(X, R, t))[0, :, :2].numpy()


@pytest.mark.parametrize("pose", POSES, ids=lambda p: f"y{p.yaw:g}p{p.pitch:g}r{p.roll:g}")
def test_recovers_known_pose_exactly(ict_model, pose):
    pts = _landmark_points(ict_model)
    focal, center = 900.0, (320.0, 240.0)
    q = _project(pts, pose, focal, center)
    est = estimate_pose(q, pts, focal, center)
    for got, want in zip(est.as_tuple(), pose.as_tuple()):
        assert abs(angle_error(got, want)) < 0.1, (est, pose)


def test_sign_convention_nose_toward_right_edge(ict_model):
    """yaw > 0 moves the nose tip toward the image's right edge relative to the eyes' midpoint."""
    pts = _landmark_points(ict_model)
    q = _project(pts, Pose(30, 0, 0), 900.0, (320.0, 240.0))
    assert q[30, 0] > 0.5 * (q[36, 0] + q[45, 0])
    assert estimate_pose(q, pts, 900.0, (320.0, 240.0)).yaw > 25


def test_needs_enough_inner_points(ict_model):
    pts = _landmark_points(ict_model)
    pts[20:] = np.nan
    with pytest.raises(ValueError):
        estimate_pose(np.zeros((68, 2)), pts, 900.0, (0.0, 0.0))


def test_angle_error_wraps():
    assert angle_error(179.0, -179.0) == pytest.approx(-2.0)
    assert angle_error(-10.0, 5.0) == pytest.approx(-15.0)


@pytest.mark.slow
def test_rendered_views_of_obama_have_the_asked_pose(obama_reconstruction, ict_model):
    """Reconstruct a real photo, render yaw -30/0/+30 and measure each view's pose with dlib's
    landmarks + PnP against the fitted mesh: an independent check of renderer and convention."""
    from face3d.landmarks import _detector, _predictor
    from face3d.render import render_views

    size = 128
    rec = obama_reconstruction
    reference = view_pose_reference(rec.fit, ict_model, size)
    poses = [Pose(-30, 0, 0), Pose(0, 0, 0), Pose(30, 0, 0)]
    views = render_views(rec.fit, rec.texture, poses, ict_model, size=size)
    est = {}
    for img, pose in zip(views.images, poses):
        rects = _detector()(img, 1)
        assert len(rects) > 0, f"dlib finds no face in the yaw {pose.yaw} view"
        shape = _predictor()(img, rects[0])
        q = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
        e = reference.estimate(q)
        est[pose.yaw] = e
        assert abs(angle_error(e.yaw, pose.yaw)) < 7, (pose, e)
        assert abs(angle_error(e.pitch, pose.pitch)) < 7, (pose, e)
        assert abs(angle_error(e.roll, pose.roll)) < 7, (pose, e)
    assert est[30].yaw > 15 and est[-30].yaw < -15
