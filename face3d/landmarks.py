"""Face detection and 68-point iBUG landmarks with dlib.

Two detectors: dlib's HOG frontal face detector (fast, about 0.05 s of CPU on a 256-px view, 0.17 s
on a 1-megapixel photo, but it gives out beyond about 60 degrees of yaw) and dlib's CNN face detector
(`mmod_human_face_detector`, max-margin object detection), which finds faces turned to a profile
but costs about 1.1-1.5 s of CPU per photo (one core) even at its reduced working size
(`CNN_WORK_SIDE`; measured with docs/benchmarks.md's "Profiles in"). `detect_faces(image, detector=...)`:
"hog" the HOG detector alone, "cnn" the CNN alone, "auto" the HOG detector first and the CNN only
where it finds no face (what the commands do by default). A CNN box is mapped onto the box the HOG
detector would give (`CNN_TO_HOG`) before the 68-point predictor, which was trained on HOG boxes.

dlib's 68-point predictor learnt from 300-W, whose faces rarely turn beyond 45 degrees: on a face
turned further it places a frontal face's points. The toolkit's own predictor for turned faces
(`profile_predictor_path`, trained by `facesynth learn-profile-landmarks` on labelled views of LFW
train people, most turned 30-90 degrees, on CNN boxes) places the points too where the CNN found
the face (HOG did not: a profile, mostly); its points are taken when they say the face is turned
beyond about 40 degrees (`PROFILE_TURN`, `turn_index`). Measurements (identity, pose of views)
keep dlib's own points (`profile_landmarks=False`): the turned-face predictor learnt from the
toolkit's renders.

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
from PIL import Image

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


def profile_predictor_path() -> Path:
    """The shipped predictor for turned faces (assets/landmarks/MODEL_CARD.md)."""
    return Path(__file__).resolve().parent.parent / "assets" / "landmarks" / "profile_68.dat"


@functools.lru_cache(maxsize=None)
def _profile_predictor():
    import dlib  # deferred: as in _detector

    path = profile_predictor_path()
    if not path.is_file():
        raise FaceSynthError(f"the landmark model for turned faces is missing: {path}")
    return dlib.shape_predictor(str(path))


@functools.lru_cache(maxsize=None)
def _cnn_detector():
    import dlib  # deferred: as in _detector

    return dlib.cnn_face_detection_model_v1(str(model_file("mmod_human_face_detector.dat")))


#: CNN detections run in this process so far. The first starts dlib's thread pool, whose threads a
#: fork does not copy: a process forked after it would wait forever on the copied pool (measured:
#: rotate's detection helper hangs), so such a child must leave the CNN to its parent.
_cnn_runs = [0]


def cnn_has_run() -> bool:
    """Whether this process (or, in a forked child, its parent before the fork) ran the CNN detector."""
    return _cnn_runs[0] > 0


def load_landmark_models() -> None:
    """Load dlib's detector and 68-point predictor now (about 1 s, once per process), so a batch's
    first photo does not pay for it."""
    load_face_detector()
    _predictor()


def load_face_detector() -> None:
    """Load dlib's HOG face detector now (about 0.35 s, once per process; the 68-point predictor
    loads when landmarks are first placed)."""
    _detector()


#: `detect_faces`' detectors: "auto" (HOG, then the CNN where HOG finds no face), "hog", "cnn"
DETECTORS = ("auto", "hog", "cnn")
#: what the commands use unless told otherwise (`--detector`)
DEFAULT_DETECTOR = "auto"
#: the CNN detector's working size: a photo is scaled so that its longer side is this many pixels
#: (down, or up for a small photo) before the CNN sees it; its cost grows with the pixel count
CNN_WORK_SIDE = 384
#: a CNN box -> the HOG box of the same face: the centre moved by (dx, dy) CNN box sides, the side
#: scaled by `scale`. Measured on 77 LFW photos (`benchmarks/_common.lfw_sample(1, 80)`, not the
#: test photos) that both detectors find: median dx 0, dy 0.06, geometric-mean scale 1.10 (HOG's
#: box sizes come in steps, 1.01 or 1.22 times the CNN's). The 68 points placed in the mapped box
#: lie 1.14% of the eye distance from those of the HOG box (median; mean 1.44%), against 1.24%
#: (mean 1.84%) in the CNN's own box.
CNN_TO_HOG = (0.0, 0.06, 1.1)
#: |turn_index| of the turned-face predictor's points from which they are taken in a CNN box: about
#: 40 degrees of yaw (on the labels of the training views: median 0.76 at 30-40 degrees, 1.06 at
#: 40-50; at 45-60 the predictor is off by 3.0% of the box on held-out views, dlib's by about 17%)
PROFILE_TURN = 1.0
# Faces HOG finds keep dlib's points: on real LFW photos turned 45-65 degrees the turned-face
# predictor reads a larger yaw than dlib's points do, and the frontalised views made from its points
# were further from the person (median dlib distance 0.636 against 0.526 on 13 such photos;
# docs/benchmarks.md, "Profiles in").


@dataclass(frozen=True)
class DetectedFace:
    """One detected face: its box (left, top, right, bottom), 68 iBUG landmarks (68, 2) in pixels (x, y)
    and the detector that found it ("hog" or "cnn")."""

    box: tuple[int, int, int, int]
    landmarks: np.ndarray
    detector: str = "hog"

    @property
    def area(self) -> int:
        l, t, r, b = self.box
        return max(0, r - l) * max(0, b - t)


def check_detector(detector: str) -> str:
    if detector not in DETECTORS:
        raise FaceSynthError(f"unknown face detector {detector!r} ({', '.join(DETECTORS)})")
    return detector


def detect_faces(image: np.ndarray, upsample: int | None = None, detector: str = "hog",
                 profile_landmarks: bool = True) -> list[DetectedFace]:
    """All faces in a uint8 RGB image, largest first, each with 68 landmarks.

    `detector`: "hog" (default here; the commands default to `DEFAULT_DETECTOR`), "cnn", or "auto":
    the HOG detector, then the CNN detector when HOG finds no face (module docstring). Small images
    are upsampled once by the HOG detector (it misses faces under ~80 px otherwise); the CNN works
    on the photo scaled to `CNN_WORK_SIDE` (`upsample` is the HOG detector's alone). Faces the CNN
    finds take the turned-face predictor's landmarks where those say the face is turned
    (`cnn_face`; `profile_landmarks=False`: dlib's 68-point predictor's always).
    """

    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise FaceSynthError("detect_faces expects a uint8 RGB image (H, W, 3)")
    check_detector(detector)
    boxes: list[tuple[int, int, int, int]] = []
    if detector in ("hog", "auto"):
        boxes = hog_boxes(image, upsample)
    if detector == "cnn" or (detector == "auto" and not boxes):
        faces = [cnn_face(image, b, profile_landmarks) for b in cnn_boxes(image)]
    else:
        faces = [DetectedFace(b, landmarks_for_box(image, b), "hog") for b in boxes]
    faces.sort(key=lambda f: -f.area)
    return faces


def cnn_face(image: np.ndarray, box: tuple[int, int, int, int], profile_landmarks: bool = True) -> DetectedFace:
    """The face in a CNN box: its box mapped to HOG's, the 68-point predictor's landmarks in that,
    or the turned-face predictor's in the CNN box itself where those say the face is turned beyond
    `PROFILE_TURN` (and `profile_landmarks`)."""
    hog_box = cnn_to_hog_box(box)
    if profile_landmarks:
        turned = profile_landmarks_for_box(image, box)
        if abs(turn_index(turned)) >= PROFILE_TURN:
            return DetectedFace(hog_box, turned, "cnn")
    return DetectedFace(hog_box, landmarks_for_box(image, hog_box), "cnn")


def turn_index(landmarks: np.ndarray) -> float:
    """How far the face of 68 landmarks is turned, from their horizontal asymmetry: (a - b) / (a + b)
    with a, b the nose tip's horizontal distances to the outer eye corners (points 36 and 45, 0-based):
    0 frontal, about +-1 at 45 degrees, growing without bound as the far eye falls behind the nose
    (a profile); sign as the yaw's (+: the nose towards the image's right). +-inf when the points
    are degenerate."""
    a = landmarks[30, 0] - landmarks[36, 0]
    b = landmarks[45, 0] - landmarks[30, 0]
    if a + b <= 1e-6:
        return float("inf") if a >= b else float("-inf")
    return float((a - b) / (a + b))


def hog_boxes(image: np.ndarray, upsample: int | None = None) -> list[tuple[int, int, int, int]]:
    """The HOG detector's face boxes (left, top, right, bottom); upsampled once below 800 px."""
    if upsample is None:
        upsample = 1 if max(image.shape[:2]) < 800 else 0
    rects = _detector()(image, upsample)
    if len(rects) == 0 and upsample == 0:
        rects = _detector()(image, 1)
    return [(r.left(), r.top(), r.right(), r.bottom()) for r in rects]


def cnn_boxes(image: np.ndarray, work_side: int = CNN_WORK_SIDE) -> list[tuple[int, int, int, int]]:
    """The CNN detector's face boxes (left, top, right, bottom) in `image`'s pixels, the photo seen
    at `work_side` px on its longer side (faces under about 40 px there are missed)."""
    scale = work_side / max(image.shape[:2])
    work = image
    if abs(scale - 1.0) > 1e-3:
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        work = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR))
    out = []
    _cnn_runs[0] += 1
    for d in _cnn_detector()(np.ascontiguousarray(work), 0):
        r = d.rect
        out.append(tuple(int(round(v / scale)) for v in (r.left(), r.top(), r.right(), r.bottom())))
    return out


def cnn_to_hog_box(box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """A CNN box moved and scaled like the HOG detector's box of the same face (`CNN_TO_HOG`): the
    68-point predictor was trained on HOG boxes and places the points worse on others."""
    l, t, r, b = box
    side = 0.5 * ((r - l) + (b - t))
    dx, dy, scale = CNN_TO_HOG
    cx, cy = 0.5 * (l + r) + dx * side, 0.5 * (t + b) + dy * side
    half = 0.5 * side * scale
    return (int(round(cx - half)), int(round(cy - half)), int(round(cx + half)), int(round(cy + half)))


def landmarks_for_box(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """68 landmarks inside a given face box (no detection)."""
    return _points_in_box(_predictor(), image, box)


def profile_landmarks_for_box(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """68 landmarks of a turned face inside a CNN detector box, by the turned-face predictor."""
    return _points_in_box(_profile_predictor(), image, box)


def _points_in_box(predictor, image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """(68, 2) float64: a dlib shape predictor's points in `box` (left, top, right, bottom)."""
    import dlib  # deferred: as in _detector

    l, t, r, b = (int(v) for v in box)
    shape = predictor(image, dlib.rectangle(l, t, r, b))
    return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)


def detect_largest_face(image: np.ndarray, source: str = "image", detector: str = "hog") -> DetectedFace:
    faces = detect_faces(image, detector=detector)
    if not faces:
        raise NoFaceError(f"{source}: no face found")
    return faces[0]


def outer_eye_distance(landmarks: np.ndarray) -> float:
    """Distance between the outer eye corners, iBUG points 37 and 46 (1-based)."""
    return float(np.linalg.norm(landmarks[36] - landmarks[45]))
