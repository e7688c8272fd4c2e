"""Face detection and 68-point iBUG landmarks with dlib.

The model files come from the registry package `face_recognition_models`. That package imports
`pkg_resources` (gone from recent setuptools), so its files are located with `importlib` and the
package itself is never imported.
"""
from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from face3d.errors import FaceSynthError, NoFaceError


def model_file(name: str) -> Path:
    """Path of a file inside `face_recognition_models/models/` without importing the package."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FaceSynthError("the package face_recognition_models is not installed (pip install face_recognition_models)")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / name
    if not path.is_file():
        raise FaceSynthError(f"dlib model file missing: {path}")
    return path


@functools.lru_cache(maxsize=None)
def _detector():
    # deferred: dlib costs ~20 ms to import (measured); the main process of `facesynth rotate`
    # imports this module (outer_eye_distance) but leaves detection to its helper process
    import dlib

    return dlib.get_frontal_face_detector()


@functools.lru_cache(maxsize=None)
def _predictor():
    import dlib  # deferred: as in _detector

    return dlib.shape_predictor(str(model_file("shape_predictor_68_face_landmarks.dat")))


def load_landmark_models() -> None:
    """Load dlib's detector and 68-point predictor now (about 1 s, once per process), so a batch's
    first photo does not pay for it."""
    _detector()
    _predictor()


@dataclass(frozen=True)
class DetectedFace:
    """One detected face: its box (left, top, right, bottom) and 68 iBUG landmarks (68, 2) in pixels (x, y)."""

    box: tuple[int, int, int, int]
    landmarks: np.ndarray

    @property
    def area(self) -> int:
        l, t, r, b = self.box
        return max(0, r - l) * max(0, b - t)


def detect_faces(image: np.ndarray, upsample: int | None = None) -> list[DetectedFace]:
    """All faces in a uint8 RGB image, largest first, each with 68 landmarks.

    Small images are upsampled once by the detector (dlib's HOG detector misses faces under
    ~80 px otherwise).
    """

    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise FaceSynthError("detect_faces expects a uint8 RGB image (H, W, 3)")
    if upsample is None:
        upsample = 1 if max(image.shape[:2]) < 800 else 0
    rects = _detector()(image, upsample)
    if len(rects) == 0 and upsample == 0:
        rects = _detector()(image, 1)
    faces = []
    for r in rects:
        shape = _predictor()(image, r)
        pts = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
        faces.append(DetectedFace((r.left(), r.top(), r.right(), r.bottom()), pts))
    faces.sort(key=lambda f: -f.area)
    return faces


def landmarks_for_box(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """68 landmarks inside a given face box (no detection)."""
    import dlib  # deferred: as in _detector

    l, t, r, b = (int(v) for v in box)
    shape = _predictor()(image, dlib.rectangle(l, t, r, b))
    return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)


def detect_largest_face(image: np.ndarray, source: str = "image") -> DetectedFace:
    faces = detect_faces(image)
    if not faces:
        raise NoFaceError(f"{source}: no face found")
    return faces[0]


def outer_eye_distance(landmarks: np.ndarray) -> float:
    """Distance between the outer eye corners, iBUG points 37 and 46 (1-based)."""
    return float(np.linalg.norm(landmarks[36] - landmarks[45]))
