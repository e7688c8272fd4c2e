"""Head pose and the perspective camera.

Conventions (model and camera axes alike): +x toward the subject's left (image right in a frontal
view), +y up, +z toward the viewer. The camera sits at the origin and looks along -z, so a point
X_cam = R X_model + t has view depth d = -Z_cam and lands at pixel

    u = cx + f * X_cam / d,      v = cy - f * Y_cam / d          (v grows downward)

Head pose (degrees), absolute and relative to the camera:
    yaw   > 0: the nose points toward the RIGHT edge of the image   (rotation about +y)
    pitch > 0: the nose points up                                    (rotation about -x)
    roll  > 0: the head turns counter-clockwise in the image         (rotation about +z)
and R = Rz(roll) @ Ry(yaw) @ Rx(-pitch).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch


@dataclass(frozen=True)
class Pose:
    """An absolute head pose in degrees (see the module docstring for the convention)."""

    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0

    def as_tuple(self) -> tuple[float, float, float]:
        return (self.yaw, self.pitch, self.roll)


def euler_to_matrix(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """(B,) radians each -> (B, 3, 3) rotation R = Rz(roll) Ry(yaw) Rx(-pitch)."""
    a = -pitch
    ca, sa = torch.cos(a), torch.sin(a)
    cb, sb = torch.cos(yaw), torch.sin(yaw)
    cg, sg = torch.cos(roll), torch.sin(roll)
    r00 = cg * cb
    r01 = cg * sb * sa - sg * ca
    r02 = cg * sb * ca + sg * sa
    r10 = sg * cb
    r11 = sg * sb * sa + cg * ca
    r12 = sg * sb * ca - cg * sa
    r20 = -sb
    r21 = cb * sa
    r22 = cb * ca
    return torch.stack([r00, r01, r02, r10, r11, r12, r20, r21, r22], dim=-1).reshape(*yaw.shape, 3, 3)


def matrix_to_euler(R: np.ndarray) -> Pose:
    """Inverse of `euler_to_matrix` for one (3, 3) rotation, in degrees."""
    R = np.asarray(R, dtype=np.float64)
    yaw = math.asin(max(-1.0, min(1.0, -R[2, 0])))
    a = math.atan2(R[2, 1], R[2, 2])
    roll = math.atan2(R[1, 0], R[0, 0])
    return Pose(math.degrees(yaw), math.degrees(-a), math.degrees(roll))


def pose_matrix(pose: Pose) -> np.ndarray:
    t = torch.tensor([math.radians(pose.yaw)], dtype=torch.float64)
    p = torch.tensor([math.radians(pose.pitch)], dtype=torch.float64)
    r = torch.tensor([math.radians(pose.roll)], dtype=torch.float64)
    return euler_to_matrix(t, p, r)[0].numpy()


@dataclass
class PerspectiveCamera:
    """A pinhole camera with focal length `focal` (B,) and principal point `center` (B, 2), in pixels."""

    focal: torch.Tensor
    center: torch.Tensor

    def project(self, points: torch.Tensor) -> torch.Tensor:
        """Camera-frame points (B, N, 3) -> screen (B, N, 3): pixel x, pixel y (down), view depth."""
        depth = -points[..., 2]
        safe = torch.where(depth.abs() < 1e-6, torch.full_like(depth, 1e-6), depth)
        f = self.focal.reshape(-1, 1)
        x = self.center[:, None, 0] + f * points[..., 0] / safe
        y = self.center[:, None, 1] - f * points[..., 1] / safe
        return torch.stack([x, y, depth], dim=-1)


def transform(points: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """Model points (B, N, 3) -> camera frame: R X + t."""
    return points @ rotation.transpose(-1, -2) + translation[:, None, :]


def transform_views(points: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """One model's points (1, N, 3) in the frames of B cameras: R_b X + t_b, (B, N, 3); `transform`
    of the points expanded to the B cameras. Each coordinate is summed as x R[i, 0] + y R[i, 1] +
    z R[i, 2] + t[i] in that order, as the matrix product with its inner size of 3 sums on the CPU
    here (tests/test_render_fast_paths.py compares them), but elementwise: the batched product of
    32 views of the 16k-vertex head took 8-9 ms, this 2 ms."""
    x, y, z = points[0].T.contiguous()
    out = points.new_empty(rotation.shape[0], points.shape[1], 3)
    for i in range(3):
        out[..., i] = (x * rotation[:, i, 0, None] + y * rotation[:, i, 1, None] + z * rotation[:, i, 2, None]
                       + translation[:, i, None])
    return out


# OpenCV's camera frame has y down and z forward: X_cv = D X_ours with D = diag(1, -1, -1).
_CV = np.diag([1.0, -1.0, -1.0])


def solve_pnp(points_3d: np.ndarray, points_2d: np.ndarray, focal: float, center: tuple[float, float]):
    """Rigid pose (R, t) in our convention from 3D-2D correspondences with OpenCV's PnP."""
    K = np.array([[focal, 0, center[0]], [0, focal, center[1]], [0, 0, 1]], dtype=np.float64)
    ok, rvec, tvec = cv2.solvePnP(points_3d.astype(np.float64), points_2d.astype(np.float64), K, None,
                                  flags=cv2.SOLVEPNP_EPNP)
    if ok:
        ok, rvec, tvec = cv2.solvePnP(points_3d.astype(np.float64), points_2d.astype(np.float64), K, None,
                                      rvec, tvec, useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        raise RuntimeError("PnP failed")
    R_cv, _ = cv2.Rodrigues(rvec)
    R = _CV @ R_cv
    t = _CV @ tvec.reshape(3)
    return R, t
