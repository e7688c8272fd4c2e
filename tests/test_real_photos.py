"""Real photos end to end (shared/data/faces): the landmark fit is accurate, and the re-posed views
keep the person's identity by dlib's own face-recognition net (distance < 0.6 = same person).

The full sweep over every photo and yaw -45..45 is `benchmarks/bench_real_photos.py`.
"""
from __future__ import annotations

import functools

import numpy as np
import pytest

from face3d.camera import Pose
from face3d.fitting import FitConfig, fit_morphable_model
from face3d.image_io import load_image
from face3d.landmarks import detect_faces, model_file

pytestmark = pytest.mark.slow

FIT_PHOTOS = ["obama/face_recognition_obama.jpg", "biden/face_recognition_biden2.jpg",
              "deepface_jack/deepface_img16.jpg", "deepface_mark/deepface_img14.jpg"]
SAME_PERSON = 0.6


@functools.lru_cache(maxsize=None)
def _face_rec():
    import dlib

    return dlib.face_recognition_model_v1(str(model_file("dlib_face_recognition_resnet_model_v1.dat")))


def _descriptor(img: np.ndarray, upsample: int, box=None) -> np.ndarray | None:
    """dlib's 128-D descriptor of the largest face (or of the face in `box`); None if none found."""
    import dlib

    from face3d.landmarks import _detector, _predictor

    if box is None:
        rects = _detector()(img, upsample)
        if len(rects) == 0:
            return None
        rect = max(rects, key=lambda r: r.width() * r.height())
    else:
        rect = dlib.rectangle(*box)
    shape = _predictor()(img, rect)
    return np.asarray(_face_rec().compute_face_descriptor(img, shape))


# docs/benchmarks.md reports (bench_real_photos.py, the 17 photos, landmark-only ICT fit) a median 68-point
# error of 1.86% of the outer-eye distance; issue 2's target is <= 3%. Per photo the benchmark measured
# 1.59-2.25%, and on these four 1.59-2.09% (median 1.94%, a subset a little harder than the 17).
CLAIMED_MEDIAN = 0.0186
MEDIAN_MARGIN = 0.0015   # the four photos' median may sit 0.15 points above the 17 photos' claim
PER_PHOTO_MAX = 0.0225   # the worst photo of the 17 in the benchmark (obama_partial_face)


@pytest.fixture(scope="module")
def landmark_errors(data_dir, ict_model) -> dict:
    errors = {}
    for photo in FIT_PHOTOS:
        img = load_image(data_dir / "faces" / photo)
        face = detect_faces(img)[0]
        errors[photo] = fit_morphable_model(img, face.landmarks, ict_model, FitConfig(dense=False)).landmark_error
    return errors


@pytest.mark.parametrize("photo", FIT_PHOTOS)
def test_landmark_fit_per_photo(landmark_errors, photo):
    assert landmark_errors[photo] <= PER_PHOTO_MAX, landmark_errors


def test_landmark_fit_median_as_claimed(landmark_errors):
    assert np.median(list(landmark_errors.values())) <= CLAIMED_MEDIAN + MEDIAN_MARGIN, landmark_errors


@pytest.fixture(scope="module")
def biden2_reconstruction(data_dir, ict_model):
    from face3d.pipeline import reconstruct_faces

    img = load_image(data_dir / "faces" / "biden" / "face_recognition_biden2.jpg")
    return img, reconstruct_faces(img, ict_model, fit_config=FitConfig(dense=False))[0]


@pytest.mark.parametrize("who", ["obama", "biden2"])
def test_identity_kept_in_views(who, obama_image, obama_reconstruction, biden2_reconstruction, ict_model):
    from face3d.render import render_views

    img, rec = (obama_image, obama_reconstruction) if who == "obama" else biden2_reconstruction
    source = _descriptor(img, 0, box=rec.face.box)
    poses = [Pose(-30, 0, 0), Pose(0, 0, 0), Pose(30, 0, 0)]
    views = render_views(rec.fit, rec.texture, poses, ict_model, size=128)
    for view, pose in zip(views.images, poses):
        d = _descriptor(np.ascontiguousarray(view), 1)
        assert d is not None, f"{who}: dlib finds no face in the yaw {pose.yaw} view"
        dist = float(np.linalg.norm(d - source))
        assert dist < SAME_PERSON, f"{who} yaw {pose.yaw}: dlib distance {dist:.3f}"
