"""`facesynth serve`'s reference photo (issue 29): the work behind the page, called directly
(`FaceSynthServer.render`), on real photos and the real model (128 px views, landmark-only fits).

The main photo is a closed-mouth face (deepface_jack), the reference a broad smile of another person
(biden2): with its expression the mouth changes and the eyes hardly do."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from face3d.errors import FaceSynthError

SIZE = 128


@pytest.fixture(scope="module")
def server(tmp_path_factory, ict_model):
    from facesynth.serve.server import FaceSynthServer

    return FaceSynthServer(ict_model, tmp_path_factory.mktemp("serve-ref") / "work", size=SIZE, dense=False)


@pytest.fixture(scope="module")
def main_photo(data_dir):
    return str(data_dir / "faces" / "deepface_jack" / "deepface_img62.jpg")


@pytest.fixture(scope="module")
def smile_photo(data_dir):
    return str(data_dir / "faces" / "biden" / "face_recognition_biden2.jpg")


def _box(landmarks, idx, pad=3):
    (x0, y0), (x1, y1) = landmarks[idx].min(0) - pad, landmarks[idx].max(0) + pad
    return slice(int(y0), int(y1)), slice(int(x0), int(x1))


@pytest.mark.slow
def test_reference_expression_changes_the_mouth_and_is_fitted_once(server, main_photo, smile_photo):
    from face3d.landmarks import detect_largest_face

    plain = server.render(main_photo, "3d", 0.0, 0.0, "0")
    fits, refs = server.fits_computed, server.references_computed
    job = server.render(main_photo, "3d", 0.0, 0.0, "0", expression="blink", reference=smile_photo)
    assert server.fits_computed == fits and server.references_computed == refs + 1
    assert "fit reused" in job.status and "reference **face_recognition_biden2.jpg** (fit " in job.status, job.status
    assert "expression from it" in job.status and "head pose" not in job.status
    r = job.records[0]
    assert r["expression_from"] == "face_recognition_biden2.jpg" and r["expression"] == "from-face_recognition_biden2"
    assert "from-face_recognition_biden2" in r["output"] and "pose_from" not in r
    assert (r["yaw"], r["pitch"], r["roll"]) == (0.0, 0.0, 0.0)

    # the reference's smile replaces the expression choice (blink): the mouth changes, the eyes hardly
    a, b = plain.images[0].astype(float), job.images[0].astype(float)
    lm = detect_largest_face(plain.images[0]).landmarks
    diff = np.abs(a - b).mean(-1)
    mouth, eyes = diff[_box(lm, list(range(48, 68)))].mean(), diff[_box(lm, list(range(36, 48)))].mean()
    print(f"mean abs difference with / without the reference: mouth {mouth:.1f}, eyes {eyes:.1f} (0..255)")
    assert mouth > 15 and mouth > 3 * eyes, (mouth, eyes)
    smiled = detect_largest_face(job.images[0]).landmarks
    assert smiled[54, 0] - smiled[48, 0] > lm[54, 0] - lm[48, 0]        # a wider mouth

    # a second request with the same reference (another upload of the same bytes): no refit
    job2 = server.render(main_photo, "3d", 0.0, 0.0, "0", reference=smile_photo)
    assert server.references_computed == refs + 1 and server.fits_computed == fits
    assert "(fit reused): expression from it" in job2.status, job2.status
    np.testing.assert_array_equal(job2.images[0], job.images[0])


@pytest.mark.slow
def test_reference_head_pose_adds_its_view_and_sets_pitch_and_roll(server, main_photo, smile_photo):
    job = server.render(main_photo, "3d", 0.0, 25.0, "-30,0", "10,20", reference=smile_photo,
                        reference_expression=False, reference_pose=True)
    ref = job.reference_pose
    assert ref is not None and abs(ref.pitch) > 3          # biden2 looks down a little
    poses = [(r["yaw"], r["pitch"], r["roll"]) for r in job.records]
    # the reference's whole pose first, then each yaw asked for at its pitch and roll (the pitch list is ignored)
    assert poses == [ref.as_tuple(), (-30.0, ref.pitch, ref.roll), (0.0, ref.pitch, ref.roll)]
    assert all(r["pose_from"] == "face_recognition_biden2.jpg" and "expression_from" not in r for r in job.records)
    assert "head pose from it (yaw " in job.status and "expression" not in job.status.split("reference")[1]
    assert len(job.images) == 3 and job.images[0].shape == (SIZE, SIZE, 3)


def test_reference_boxes_and_pose_count_are_checked_before_any_fit(server, main_photo, smile_photo):
    from facesynth.serve.server import MAX_VIEWS

    refs, fits = server.references_computed, server.fits_computed
    with pytest.raises(FaceSynthError, match=f"37 poses and the reference's own: at most {MAX_VIEWS} views"):
        server.render(main_photo, "3d", 0.0, 0.0, "-90:90:5", reference=smile_photo, reference_pose=True)
    assert (server.references_computed, server.fits_computed) == (refs, fits)
    # the same yaw list without the reference's pose is fine (checked only up to the fit here)
    from facesynth.serve.server import request_poses

    assert len(request_poses(0.0, 0.0, "-90:90:5")) == MAX_VIEWS


@pytest.mark.slow
def test_reference_not_ticked_is_not_fitted(server, main_photo, tmp_path):
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(grey)
    refs = server.references_computed
    job = server.render(main_photo, "3d", 0.0, 0.0, "0", reference=str(grey), reference_expression=False)
    assert server.references_computed == refs and "reference photo not used" in job.status
    assert "expression_from" not in job.records[0]
    job = server.render(main_photo, "3d", 0.0, 0.0, "0", reference_pose=True)
    assert "no reference photo uploaded" in job.status and job.reference_pose is None


@pytest.mark.slow
def test_bad_references_are_one_line(server, main_photo, obama_path, tmp_path):
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(grey)
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo")
    cut = tmp_path / "cut.jpg"
    data = obama_path.read_bytes()
    cut.write_bytes(data[: len(data) // 3])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    for path, expected in ((grey, "reference photo grey.png: no face found"),
                           (text, "reference photo notes.jpg: not a readable image"),
                           (cut, "reference photo cut.jpg: unreadable or truncated image"),
                           (empty, "reference photo empty.png: empty file"),
                           (tmp_path / "gone.jpg", "reference photo gone.jpg: the upload is missing")):
        with pytest.raises(FaceSynthError) as info:
            server.render(main_photo, "3d", 0.0, 0.0, "0", reference=str(path))
        msg = str(info.value)
        assert msg.startswith(expected) and "\n" not in msg and str(tmp_path) not in msg, msg


@pytest.mark.slow
def test_reference_with_two_faces_lends_the_largest(server, main_photo, data_dir, tmp_path):
    big = Image.open(data_dir / "faces" / "deepface_jack" / "deepface_img62.jpg").convert("RGB")
    small = big.resize((big.width // 2, big.height // 2))
    pair = Image.new("RGB", (big.width + small.width, big.height), (200, 200, 200))
    pair.paste(big, (0, 0))
    pair.paste(small, (big.width, 0))
    pair.save(tmp_path / "two.jpg")
    job = server.render(main_photo, "3d", 0.0, 0.0, "0", reference=str(tmp_path / "two.jpg"))
    assert "2 faces in it, the largest used" in job.status, job.status
    assert len(job.images) == 1
