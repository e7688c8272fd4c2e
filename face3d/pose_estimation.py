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

import numpy as np

from face3d.camera import Pose, matrix_to_euler, solve_pnp

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
