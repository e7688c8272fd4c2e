"""Profile photos in (issue 26): dlib's CNN detector finds a face turned to 75 degrees that the HOG
detector misses (in-process, in rotate's detection helper and through `rotate --detector`), the
profile down-weighting of the fit leaves a frontal fit bit for bit unchanged, and on a profile it
brings the fitted yaw closer to the truth.

The profile is the toolkit's own `3d` view of a test photo (deepface_img15, the landmark-only fit,
256 px, whole-photo background): LFW and the test photos hold no true profiles.
`benchmarks/bench_profiles.py` measures all of this over every test photo."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from face3d.camera import Pose
from face3d.contours import IBUG_SIDE, far_side_factor, hidden_side, profile_landmark_weights
from face3d.detection_helper import DetectionHelper
from face3d.fitting import FitConfig, fit_morphable_model
from face3d.image_io import load_image, save_png
from face3d.landmarks import DEFAULT_DETECTOR, DETECTORS, cnn_has_run, detect_faces
from face3d.pipeline import reconstruct_faces
from facesynth.cli import main

ROOT = Path(__file__).resolve().parents[1]
PROFILE_YAW = 75.0


@pytest.fixture(scope="module")
def profile_png(tmp_path_factory, data_dir, ict_model):
    """A 3d view at yaw 75 of a test photo, as a PNG: HOG misses it, the CNN finds it."""
    from facesynth.api import RenderOptions, render_face
    from facesynth.methods import load_method

    photo = data_dir / "faces" / "deepface_mark" / "deepface_img15.jpg"
    image = load_image(photo)
    rec = reconstruct_faces(image, ict_model, fit_config=FitConfig(dense=False), detector="hog")[0]
    view = render_face(rec, image, ict_model, [Pose(PROFILE_YAW, 0.0, 0.0)], RenderOptions(method="3d", size=256),
                       load_method("3d"))[0].images[0]
    path = tmp_path_factory.mktemp("profile") / "img15_yaw75.png"
    save_png(path, view)
    return path


def test_ibug_sides_mirror_each_other():
    # the two halves hold the same number of points, and the far half flips with the sign of the yaw
    assert (IBUG_SIDE == -1).sum() == (IBUG_SIDE == 1).sum() == 29
    assert IBUG_SIDE[[8, 27, 28, 29, 30, 33, 51, 57, 62, 66]].tolist() == [0] * 10
    assert IBUG_SIDE[36] == -1 and IBUG_SIDE[45] == 1          # the eye on the image's left in a frontal photo
    assert hidden_side(40.0) == 1 and hidden_side(-40.0) == -1
    assert far_side_factor(20.0, 30, 60, 0.1) == 1.0
    assert far_side_factor(-45.0, 30, 60, 0.1) == pytest.approx(0.55)
    assert far_side_factor(85.0, 30, 60, 0.1) == pytest.approx(0.1)
    base = np.ones(68)
    assert profile_landmark_weights(base, 10.0, 30, 60, 0.1) is base
    w = profile_landmark_weights(base, -70.0, 30, 60, 0.1)
    assert np.all(w[IBUG_SIDE == -1] == 0.1) and np.all(w[IBUG_SIDE >= 0] == 1.0)


def test_cnn_fallback_finds_the_profile_that_hog_misses(profile_png):
    image = load_image(profile_png)
    assert detect_faces(image, detector="hog") == []
    auto = detect_faces(image, detector="auto")
    cnn = detect_faces(image, detector="cnn")
    assert len(auto) == 1 and auto[0].detector == "cnn"
    assert auto[0].box == cnn[0].box
    np.testing.assert_array_equal(auto[0].landmarks, cnn[0].landmarks)
    l, t, r, b = auto[0].box
    assert 60 < r - l < 200 and 0 <= l and r <= 256                 # the head, not the whole view
    assert DEFAULT_DETECTOR == "auto" and set(DETECTORS) == {"auto", "hog", "cnn"}
    from facesynth import options    # the CLI's copy (it must not import face3d.landmarks)
    assert options.DEFAULT_DETECTOR == DEFAULT_DETECTOR and list(options.DETECTORS) == list(DETECTORS)
    with pytest.raises(Exception, match="unknown face detector"):
        detect_faces(image, detector="nope")


def test_detection_helper_falls_back_to_the_cnn(profile_png, obama_path):
    """A helper forked before any CNN ran (as `rotate` forks it) runs the CNN fallback itself; one
    forked after the CNN ran in this process (dlib's thread pool does not survive a fork) hands the
    profile back to the main process (None) and still detects the HOG faces."""
    script = ("import json, sys; from face3d.detection_helper import DetectionHelper\n"
              "with DetectionHelper() as h:\n"
              "    h.submit(sys.argv[1:], 'auto')\n"
              "    got = [h.faces(p) for p in sys.argv[1:]]\n"
              "print(json.dumps([[f.detector, list(f.box), f.landmarks.tolist()] for f in got[0]]))\n"
              "print(json.dumps('torch' in sys.modules))")
    run = subprocess.run([sys.executable, "-c", script, str(profile_png), str(obama_path)], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    got, torch_loaded = (json.loads(line) for line in run.stdout.splitlines()[-2:])
    want = detect_faces(load_image(profile_png), detector="auto")
    assert not torch_loaded and len(got) == 1 and got[0][0] == "cnn" and tuple(got[0][1]) == want[0].box
    np.testing.assert_array_equal(np.array(got[0][2]), want[0].landmarks)
    assert cnn_has_run()                                               # the CNN ran here just now
    with DetectionHelper() as helper:
        helper.submit([profile_png, obama_path], "auto")
        assert helper.faces(profile_png) is None                       # detected in-process instead
        frontal = helper.faces(obama_path)
    assert len(frontal) == 1 and frontal[0].detector == "hog"


def test_rotate_detector_flag(tmp_path, capsys, profile_png):
    def rotate(*flags):
        code = main(["rotate", str(profile_png), "--yaw", "0", "--method", "3d", "--no-dense", *flags])
        return code, capsys.readouterr().err

    code, err = rotate("--detector", "hog", "--out", str(tmp_path / "hog"))
    assert code == 1 and "no face found" in err
    code, err = rotate("--out", str(tmp_path / "auto"))                 # default: auto
    assert code == 0, err
    row = json.loads((tmp_path / "auto" / "manifest.jsonl").read_text().splitlines()[0])
    assert row["detector"] == "cnn" and row["yaw"] == 0
    assert json.loads((tmp_path / "auto" / "rotate.json").read_text())["detector"] == "auto"
    assert main(["rotate", str(profile_png), "--detector", "magic", "--out", str(tmp_path / "x")]) == 2


def test_profile_weighting_leaves_a_frontal_fit_unchanged(obama_image, ict_model):
    faces = detect_faces(obama_image)
    fits = [reconstruct_faces(obama_image, ict_model, fit_config=FitConfig(dense=True, profile_weighting=on),
                              faces=faces)[0].fit for on in (True, False)]
    for name in ("identity", "expression", "rotation", "translation", "sh", "albedo"):
        np.testing.assert_array_equal(getattr(fits[0], name), getattr(fits[1], name), err_msg=name)
    assert fits[0].focal == fits[1].focal
    assert "profile_far_side_weight" not in fits[0].residuals


def _projected_landmarks(model, alpha: np.ndarray, yaw: float, size: int = 512, focal: float = 2500.0) -> np.ndarray:
    """The 68 landmarks of the face `alpha` at `yaw` (jaw on its silhouette), as a perfect detector gives them."""
    import torch

    from face3d.camera import PerspectiveCamera, euler_to_matrix, transform
    from face3d.contours import select_contour_vertices

    v = model.shape(torch.from_numpy(alpha)[None], torch.zeros(1, model.num_expressions))
    R = euler_to_matrix(torch.tensor([float(np.radians(yaw))]), torch.zeros(1), torch.zeros(1))
    t = torch.tensor([[0.0, 0.0, -focal * 150.0 / (0.5 * size)]])
    scr = PerspectiveCamera(torch.tensor([focal]), torch.tensor([[size / 2, size / 2]])).project(
        transform(v, R, t))[0].numpy()
    q = scr[np.maximum(model.landmark_vertices, 0), :2].copy()
    q[:17] = scr[select_contour_vertices(model, lambda idx: scr[idx, :2], q)[:17], :2]
    return q


@pytest.mark.parametrize("yaw", [-70.0, 80.0])
def test_profile_weighting_brings_the_fitted_yaw_closer(ict_model, yaw):
    """A profile whose hidden half is placed as dlib places it, as on a face turned half as far (the
    68-point predictor regresses what it cannot see towards a less turned face): the fit with the
    hidden half down-weighted lands nearer the true yaw than the fit without."""
    alpha = np.random.default_rng(5).standard_normal(ict_model.num_identity).clip(-1.5, 1.5).astype(np.float32)
    q, guess = _projected_landmarks(ict_model, alpha, yaw), _projected_landmarks(ict_model, alpha, yaw / 2)
    hidden = IBUG_SIDE == hidden_side(yaw)
    q[hidden] = guess[hidden] - guess[30] + q[30]           # the guessed half, about the nose tip
    fitted = {on: fit_morphable_model(None, q, ict_model, FitConfig(dense=False, profile_weighting=on),
                                      image_size=(512, 512)).pose.yaw for on in (True, False)}
    assert abs(fitted[True] - yaw) < abs(fitted[False] - yaw) - 3.0, fitted
