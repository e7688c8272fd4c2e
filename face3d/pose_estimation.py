"""Head pose from 2D landmarks and a 3D face: `estimate_pose(landmarks_2d, points_3d, focal, center)`.

This is the independent check of the re-posing: detect dlib's 68 landmarks on a rendered view,
take the 3D positions of the same iBUG points on the fitted mesh (model space, e.g.
`fit.vertices(model)[0, model.landmark_vertices]`) and solve the perspective-n-point problem with
the view's camera (`face3d.render.view_camera` gives its focal length; the principal point is
the crop centre). The rotation is returned as a `Pose` in the convention of `face3d.camera`
(yaw > 0: nose toward the image's right edge, pitch > 0: nose up, R = Rz(roll) Ry(yaw) Rx(-pitch)).

Only the inner landmarks (iBUG 18..68, indices 17..67: brows, nose, eyes, mouth) are used. The
jaw points 1..17 follow the occluding outline of a turned head rather than fixed points of the
face, so they have no fixed 3D counterpart and would bias the pose.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from face3d.camera import Pose, matrix_to_euler, solve_pnp
from face3d.fitting import FitConfig, initial_focal
from face3d.render import head_pivot, view_camera

#: iBUG indices (0-based) used for PnP: everything but the jaw outline.
INNER = np.arange(17, 68)


def estimate_pose(landmarks_2d: np.ndarray, points_3d: np.ndarray, focal: float,
                  center: tuple[float, float]) -> Pose:
    """Pose (degrees) of a face whose 68 iBUG landmarks (68, 2) (pixels, x right, y down) are the
    images of `points_3d` (68, 3) (model space, our axes: +x subject's left, +y up, +z forward)
    under a pinhole camera of focal length `focal` (px) and principal point `center` (px).

    Rows of `points_3d` that are not finite (unmapped model landmarks) are skipped; at least
    six inner points must remain.
    """
    q = np.asarray(landmarks_2d, dtype=np.float64)
    P = np.asarray(points_3d, dtype=np.float64)
    if q.shape != (68, 2) or P.shape != (68, 3):
        raise ValueError(f"expected (68, 2) landmarks and (68, 3) points, got {q.shape} and {P.shape}")
    use = INNER[np.all(np.isfinite(P[INNER]), axis=1) & np.all(np.isfinite(q[INNER]), axis=1)]
    if use.size < 6:
        raise ValueError("estimate_pose needs at least 6 finite inner landmarks")
    R, _ = solve_pnp(P[use], q[use], float(focal), (float(center[0]), float(center[1])))
    return matrix_to_euler(R)


def angle_error(estimated: float, target: float) -> float:
    """Signed difference of two angles in degrees, wrapped to [-180, 180)."""
    return (estimated - target + 180.0) % 360.0 - 180.0


@dataclass
class ViewPoseReference:
    """What PnP needs to read the head pose off a rendered view of one fit: the fitted mesh's 68
    landmark points (model space, NaN where the model has no vertex) and the view camera."""

    points_3d: np.ndarray    # (68, 3)
    focal: float             # px, of `face3d.render.view_camera` at this size
    size: int                # view size in px; the principal point is the crop centre

    def estimate(self, landmarks_2d: np.ndarray) -> Pose:
        """The pose of a (size x size) view whose dlib landmarks are `landmarks_2d` (68, 2)."""
        return estimate_pose(landmarks_2d, self.points_3d, self.focal, (self.size / 2.0, self.size / 2.0))


def view_pose_reference(fit, model, size: int) -> ViewPoseReference:
    """The `ViewPoseReference` of `fit`'s views rendered by `face3d.render.render_views` at `size` px."""
    verts = fit.vertices(model)
    lmv = model.landmark_vertices
    pts = verts[0, np.maximum(lmv, 0)].detach().numpy().astype(np.float64)
    pts[lmv < 0] = np.nan
    _, eye_mouth = head_pivot(verts, model)
    focal, _ = view_camera(size, eye_mouth)
    return ViewPoseReference(pts, float(focal), size)


def photo_pose(landmarks_2d: np.ndarray, model, image_size: tuple[int, int]) -> Pose:
    """The head pose of a photo from its 68 dlib landmarks alone, without a fit: PnP of the inner
    landmarks against the model's mean shape (`model.mean` at `model.landmark_vertices`), with the
    fitter's starting camera for a photo of `image_size` (H, W): focal `initial_focal` at
    `FitConfig.fov_degrees`, principal point at the image centre. Cheap (a millisecond), for
    sorting many photos by pose; the mean shape instead of the person's own biases it by a few
    degrees. ValueError with fewer than six usable inner landmarks."""
    lmv = np.asarray(model.landmark_vertices)
    pts = np.asarray(model.mean, np.float64)[np.maximum(lmv, 0)]
    pts[lmv < 0] = np.nan
    H, W = image_size
    return estimate_pose(landmarks_2d, pts, initial_focal((H, W), FitConfig.fov_degrees), (W / 2.0, H / 2.0))
