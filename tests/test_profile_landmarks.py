"""The 68-point predictor for turned faces (issue 26, profiles in): on a view turned to 75 degrees
that dlib's own predictor gets wrong, the shipped predictor places the points near their labels,
detection takes its points, and the fit's yaw follows; `turn_index` orders views by their turn;
and the training command's pieces (mirrored labels, the box model, a tiny training run) work.

The profile is the toolkit's own `3d` view of a test photo (deepface_img15, never trained on:
the predictor learnt from LFW train identities)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from face3d.camera import Pose
from face3d.fitting import FitConfig, fit_morphable_model
from face3d.image_io import load_image
from face3d.labels import view_labels
from face3d.landmarks import (PROFILE_TURN, cnn_boxes, detect_faces, landmarks_for_box, profile_landmarks_for_box,
                              profile_predictor_path, turn_index)
from face3d.pipeline import reconstruct_faces
from ganrefine.refiner import mirror_landmarks
from facesynth.profile_landmarks import (BoxModel, PredictorTrainConfig, render_training_views,
                                        train_profile_predictor, view_poses, views_path)

YAW = 75.0
HOG_YAW = -60.0         # HOG still finds this view


@pytest.fixture(scope="module")
def turned_view(data_dir, ict_model):
    """3d views at yaw 75 and -60 (256 px, whole photo) of a test photo, each with its labels."""
    from facesynth.api import RenderOptions, render_face
    from facesynth.methods import load_method

    image = load_image(data_dir / "faces" / "deepface_mark" / "deepface_img15.jpg")
    rec = reconstruct_faces(image, ict_model, fit_config=FitConfig(dense=False), detector="hog")[0]
    views = render_face(rec, image, ict_model, [Pose(YAW, 0.0, 0.0), Pose(HOG_YAW, 0.0, 0.0)],
                        RenderOptions(method="3d", size=256), load_method("3d"))[0]
    return [(np.ascontiguousarray(im), lab.landmarks) for im, lab in zip(views.images, views.labels)]


def _median_error(points: np.ndarray, labels: np.ndarray) -> float:
    return float(np.median(np.linalg.norm(points - labels, axis=1)))


def test_shipped_predictor_places_the_turned_face(turned_view, ict_model):
    image, labels = turned_view[0]
    assert profile_predictor_path().stat().st_size < 20e6
    boxes = cnn_boxes(image)
    assert len(boxes) == 1
    turned = profile_landmarks_for_box(image, boxes[0])
    frontal = detect_faces(image, detector="cnn", profile_landmarks=False)[0].landmarks
    side = boxes[0][2] - boxes[0][0]
    # labels put the pixel centre at +0.5, dlib's points at +0
    err_turned, err_frontal = _median_error(turned + 0.5, labels), _median_error(frontal + 0.5, labels)
    assert err_turned < 0.08 * side and err_turned < 0.5 * err_frontal, (err_turned, err_frontal, side)
    assert turn_index(turned) >= PROFILE_TURN
    found = detect_faces(image, detector="auto")
    assert len(found) == 1 and found[0].detector == "cnn"
    np.testing.assert_array_equal(found[0].landmarks, turned)
    # the fit of the turned face follows its points: the yaw within 15 degrees (dlib's own points: far off)
    fit = fit_morphable_model(image, found[0].landmarks, ict_model, FitConfig(dense=False))
    fit_frontal = fit_morphable_model(image, frontal, ict_model, FitConfig(dense=False))
    assert abs(fit.pose.yaw - YAW) < 15.0 < abs(fit_frontal.pose.yaw - YAW), (fit.pose.yaw, fit_frontal.pose.yaw)


@pytest.fixture(scope="module")
def mean_vertices(ict_model):
    return ict_model.tensors()["mean"][None]


def test_a_turned_face_that_hog_finds_keeps_dlibs_points(turned_view):
    # where HOG finds the face, dlib's own points are kept even on a 60-degree view (module docstring)
    image, _ = turned_view[1]
    found = detect_faces(image, detector="hog")
    dlib68 = detect_faces(image, detector="hog", profile_landmarks=False)
    assert len(found) == 1 and found[0].box == dlib68[0].box
    np.testing.assert_array_equal(found[0].landmarks, dlib68[0].landmarks)


def test_turn_index_grows_with_the_yaw(ict_model, mean_vertices):
    yaws = [-85.0, -60.0, -30.0, 0.0, 30.0, 60.0, 85.0]
    labels = view_labels(mean_vertices, ict_model, [Pose(y, 0.0, 0.0) for y in yaws], 256)
    t = [turn_index(lab.landmarks) for lab in labels]
    assert abs(t[3]) < 0.15
    assert all(np.sign(ti) == np.sign(y) for ti, y in zip(t, yaws) if y)
    assert t[4] < t[5] < t[6] and -t[2] < -t[1] < -t[0]          # turned further: a larger index
    assert abs(t[4]) < PROFILE_TURN < abs(t[5])                     # the switch lies between 30 and 60 degrees


def test_mirrored_labels_are_the_labels_of_the_mirror_image(ict_model, mean_vertices):
    right, left = view_labels(mean_vertices, ict_model, [Pose(50.0, 0.0, 0.0), Pose(-50.0, 0.0, 0.0)], 256)
    mirrored = mirror_landmarks(right.landmarks, 256)
    # the mean face is near symmetric: the mirror of the +50 view is the -50 view within a pixel
    assert _median_error(mirrored, left.landmarks) < 1.0
    np.testing.assert_allclose(mirror_landmarks(mirrored, 256), right.landmarks)
    assert turn_index(mirrored) == pytest.approx(-turn_index(right.landmarks))


def test_view_poses_are_seeded_and_turned_both_ways():
    a, b = view_poses(Path("x/Some_One_0001.jpg"), 0), view_poses(Path("x/Some_One_0001.jpg"), 0)
    assert a == b and a != view_poses(Path("x/Some_One_0002.jpg"), 0)
    turned, near = a[:4], a[4]
    assert sum(p.yaw > 0 for p in turned) == sum(p.yaw < 0 for p in turned) == 2
    assert all(30 <= abs(p.yaw) <= 90 for p in turned) and abs(near.yaw) <= 30
    assert all(-20 <= p.pitch <= 15 and -10 <= p.roll <= 10 for p in a)


def test_a_tiny_training_run(tmp_path, data_dir, ict_model):
    """Views of two test photos rendered and labelled, a small cascade trained on them: the file
    loads, and on its own training views it places the points better than its starting mean shape."""
    import dlib

    photos = [data_dir / "faces" / "obama" / "face_recognition_obama.jpg",
              data_dir / "faces" / "deepface_mark" / "deepface_img15.jpg"]
    counts = render_training_views(photos, tmp_path, ict_model, seed=0)
    assert counts == {"made": 2, "already_done": 0, "failed": 0}
    assert render_training_views(photos, tmp_path, ict_model, seed=0)["already_done"] == 2     # resumed: nothing redone
    with np.load(views_path(tmp_path, photos[0])) as z:
        assert z["images"].shape[0] == z["landmarks"].shape[0] == 5 and z["landmarks"].shape[1:] == (68, 2)
    boxes = BoxModel(dx0=0.0, dx1=0.05, dy=0.05, scale=0.9, centre_sd=0.02, log_side_sd=0.03, views=8, found=8)
    out = tmp_path / "p.dat"
    cfg = PredictorTrainConfig(cascade_depth=3, trees=20, oversampling=4, threads=1, test_fraction=0.5)
    report = train_profile_predictor([views_path(tmp_path, p) for p in photos], boxes, out, cfg)
    assert report["train_views"] == report["test_views"] == 10         # 5 views and their mirrors each
    predictor = dlib.shape_predictor(str(out))
    with np.load(views_path(tmp_path, report_train_photo(report, photos, tmp_path))) as z:
        image, labels, yaw = z["images"][0], z["landmarks"][0].astype(np.float64), float(z["poses"][0, 0])
    l, t, r, b = boxes.box(labels, yaw)
    got = np.array([[p.x + 0.5, p.y + 0.5] for p in predictor(image, dlib.rectangle(l, t, r, b)).parts()])
    json.dumps(report)                                                  # the report is plain JSON
    assert _median_error(got, labels) < 0.05 * (r - l)


def report_train_photo(report: dict, photos: list[Path], cache: Path) -> Path:
    """The photo of `photos` the run trained on (the other one is in its report's test photos)."""
    return next(p for p in photos if str(views_path(cache, p)) not in report["test_files"])


def test_landmarks_for_box_is_unchanged_for_frontal_faces(obama_image):
    # HOG's faces keep dlib's own predictor
    faces = detect_faces(obama_image, detector="auto")
    assert faces[0].detector == "hog"
    np.testing.assert_array_equal(faces[0].landmarks, landmarks_for_box(obama_image, faces[0].box))


def test_learn_profile_landmarks_refuses_bad_flags(tmp_path, capsys):
    from facesynth.cli import main

    base = ["learn-profile-landmarks", str(tmp_path / "lfw"), "--cache", str(tmp_path / "c"), "--out", str(tmp_path / "p.dat")]
    for flags in (["--shard", "2/2"], ["--shard", "x"], ["--trees", "5"], ["--photos", "3"]):
        assert main(base + flags) == 2
        assert "facesynth: error:" in capsys.readouterr().err
    assert main(base) == 1                                              # no such LFW folder: one line
    assert "not a folder of LFW identities" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
