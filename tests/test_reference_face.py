"""Expression and pose from a reference photo: the fitted reference, its expression on another
face (measured with dlib's landmarks on the views), its pose, the API and the `rotate` flags."""
from __future__ import annotations

import json

import numpy as np
import pytest

import facesynth
from face3d.camera import Pose
from face3d.errors import FaceSynthError
from face3d.expressions import reference_label
from face3d.fitting import FitConfig
from face3d.image_io import load_image
from face3d.landmarks import detect_faces
from face3d.reference_face import fit_reference, reference_expression, reference_poses
from face3d.pipeline import reconstruct_faces
from facesynth.api import render_face, with_reference_expression
from facesynth.cli import main
from facesynth.methods import load_method

FAST = ["--size", "64", "--no-dense", "--method", "3d", "--threads", "1"]


def mouth_gap(image: np.ndarray) -> float:
    """Inner-lip gap / mouth width of the largest face (dlib's landmarks): ~0 closed, 0.35 open."""
    lm = detect_faces(image)[0].landmarks
    gap = np.mean([np.linalg.norm(lm[a] - lm[b]) for a, b in ((61, 67), (62, 66), (63, 65))])
    return float(gap / np.linalg.norm(lm[54] - lm[48]))


@pytest.fixture(scope="module")
def pout_path(data_dir):
    """Mark pursing his lips (mouthPucker ~0.8 on the re-split fit)."""
    return data_dir / "faces" / "deepface_mark" / "deepface_img13.jpg"


@pytest.fixture(scope="module")
def pout_reference(pout_path, ict_model):
    return fit_reference(load_image(pout_path), ict_model, str(pout_path), FitConfig(dense=False))


def test_reference_poses_take_the_angles_left_out():
    ref = Pose(12.5, -8.0, 3.0)
    assert reference_poses([Pose(-30, 0, 0), Pose(30, 0, 0)], ref, ("pitch", "roll")) == [
        Pose(-30, -8.0, 3.0), Pose(30, -8.0, 3.0)]
    # the default yaw list collapses onto the reference's yaw: one pose, not five copies
    assert reference_poses([Pose(y, 0, 0) for y in (-60, -30, 0, 30, 60)], ref) == [ref]
    assert reference_poses([Pose(0, 5, 0)], ref, ()) == [Pose(0, 5, 0)]
    with pytest.raises(FaceSynthError, match="unknown pose angle"):
        reference_poses([Pose()], ref, ("tilt",))


def test_reference_label_is_a_safe_file_name_part():
    assert reference_label("/a/b/my photo (1).jpg") == "my_photo__1_"
    assert reference_label("x/Émile.png") == "_mile"
    assert reference_label("") == "reference"


def test_fit_reference_reads_the_pout_on_the_re_split_fit(pout_reference, ict_model):
    names = ict_model.expression_names
    beta = dict(zip(names, pout_reference.expression))
    assert beta["mouthPucker"] > 0.5 and beta["mouthSmile_L"] < 0.4
    lo, hi = ict_model.expression_range
    assert pout_reference.expression.min() >= lo and pout_reference.expression.max() <= hi
    assert all(-90 <= v <= 90 for v in pout_reference.pose.as_tuple())
    spec = reference_expression(pout_reference, ict_model)
    assert spec.label == "from-deepface_img13" and not spec.from_fit and spec.reference.endswith("deepface_img13.jpg")


def test_no_face_in_the_reference_is_one_line(ict_model):
    with pytest.raises(FaceSynthError) as err:
        fit_reference(np.full((200, 200, 3), 127, np.uint8), ict_model, "grey.png")
    assert "grey.png: no face found in the reference photo" == str(err.value)


@pytest.mark.slow
def test_a_closed_mouth_closes_the_views_mouth(data_dir, pout_path, pout_reference, ict_model):
    """Obama speaks with his mouth open; Mark's lips are closed. Obama with Mark's expression, seen
    at Obama's own pose, closes his mouth most of the way to Mark's, while his fitted view keeps it open."""
    obama = load_image(data_dir / "faces" / "obama" / "face_recognition_obama2.jpg")
    rec = reconstruct_faces(obama, ict_model, fit_config=FitConfig(dense=False))[0]
    options = facesynth.RenderOptions(method="3d", size=256, dense=False)
    at = [rec.fit.pose]
    own = render_face(rec, obama, ict_model, at, options, load_method("3d"))[0]
    moved = render_face(rec, obama, ict_model, at, with_reference_expression(options, pout_reference, ict_model),
                        load_method("3d"))[0]
    g_photo, g_ref = mouth_gap(obama), mouth_gap(load_image(pout_path)[::2, ::2])   # ratios: any scale
    g_own, g_moved = mouth_gap(own.images[0]), mouth_gap(moved.images[0])
    assert g_photo > 0.25 and g_ref < 0.05                 # the gap the transfer has to close
    assert abs(g_own - g_photo) < 0.1, (g_photo, g_own)    # the fitted view keeps the open mouth
    # measured 0.351 -> 0.083 against the reference's 0.013
    assert abs(g_moved - g_ref) < 0.33 * abs(g_photo - g_ref), (g_photo, g_ref, g_own, g_moved)
    assert moved.record["expression"] == "from-deepface_img13"
    assert moved.record["expression_from"] == str(pout_path)
    assert moved.record["expression_weights"]["mouthPucker"] > 0.5


@pytest.mark.slow
def test_api_pose_from_gives_the_reference_pose(obama_path, pout_path, pout_reference, ict_model):
    views = facesynth.rotate(obama_path, method="3d", size=64, dense=False, model=ict_model, pose_from=pout_reference)
    assert views[0].poses == [pout_reference.pose]
    views = facesynth.rotate(obama_path, yaws=[-20, 20], method="3d", size=64, dense=False, model=ict_model,
                             pose_from=pout_reference)
    p = pout_reference.pose
    assert views[0].poses == [Pose(-20, p.pitch, p.roll), Pose(20, p.pitch, p.roll)]
    with pytest.raises(FaceSynthError, match="not both"):
        facesynth.rotate(obama_path, poses=[(0, 0, 0)], pose_from=pout_reference)
    with pytest.raises(FaceSynthError, match="--expression-from: not available with --method gan"):
        facesynth.rotate(obama_path, yaws=[0], method="gan", model=ict_model, expression_from=pout_reference)


@pytest.mark.slow
def test_rotate_flags_write_and_resume_a_reference_run(tmp_path, capsys, obama_path, pout_path, ict_model):
    out = tmp_path / "o"
    argv = ["rotate", str(obama_path), "--yaw", "0,30", *FAST, "--out", str(out),
            "--expression-from", str(pout_path), "--pose-from", str(pout_path)]
    assert main(argv) == 0
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    ref = fit_reference(load_image(pout_path), ict_model, str(pout_path), FitConfig(dense=False))
    assert [r["yaw"] for r in rows] == [0.0, 30.0]
    assert all(r["pitch"] == pytest.approx(ref.pose.pitch) and r["roll"] == pytest.approx(ref.pose.roll) for r in rows)
    assert all(r["expression_from"] == str(pout_path) and r["pose_from"] == str(pout_path) for r in rows)
    assert all("_expr-from-deepface_img13_" in r["output"] and (out / r["output"]).is_file() for r in rows)
    settings = json.loads((out / "rotate.json").read_text())
    assert settings["expression_from"][str(pout_path)]["mouthPucker"] == pytest.approx(
        float(ref.expression[ict_model.expression_names.index("mouthPucker")]))
    assert main(argv + ["--resume"]) == 0
    assert "1 of 1 photo(s) done (1 of them in the run that was resumed)" in capsys.readouterr().out
    # another reference is another run: refused, not mixed into this folder
    other = str(obama_path.parent / "face_recognition_obama2.jpg")
    assert main(argv[:-4] + ["--expression-from", other, "--pose-from", str(pout_path), "--resume"]) == 1
    assert "other settings (expression" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("flag", ["--expression-from", "--pose-from"])
def test_a_bad_reference_writes_nothing(tmp_path, capsys, obama_path, flag):
    grey = tmp_path / "grey.png"
    from PIL import Image

    Image.fromarray(np.full((200, 200, 3), 127, np.uint8)).save(grey)
    cut = tmp_path / "cut.jpg"
    whole = obama_path.read_bytes()
    cut.write_bytes(whole[: len(whole) // 3])
    for bad, says in ((grey, "no face found in the reference photo"), (tmp_path / "nope.jpg", "no such file"),
                      (cut, "unreadable or truncated image")):
        out = tmp_path / f"out_{bad.stem}"
        assert main(["rotate", str(obama_path), "--yaw", "0", *FAST, "--out", str(out), flag, str(bad)]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"facesynth: error: {flag}: ") and says in err[0], err
        assert not out.exists()


@pytest.mark.slow
def test_pose_from_with_every_angle_given_is_refused(tmp_path, capsys, obama_path, pout_path):
    out = tmp_path / "o"
    assert main(["rotate", str(obama_path), "--yaw", "0", "--pitch", "0", "--roll", "0", *FAST, "--out", str(out),
                 "--pose-from", str(pout_path)]) == 1
    assert "nothing is left to take from the reference" in capsys.readouterr().err
    assert not out.exists()
