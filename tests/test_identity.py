"""The PyTorch port of dlib's face-recognition ResNet against dlib itself (issue 7).

dlib's descriptors are computed once per module (fixture) on every photo in
shared/data/faces; the port must reproduce them on the same chips, through its own
differentiable alignment from the full photos, and in every same/different decision.
"""
from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from face3d.errors import FaceSynthError
from face3d.image_io import load_image, save_png
from face3d.landmarks import detect_faces, model_file
from ganrefine.identity import (
    MODEL_NAME,
    SAME_PERSON_THRESHOLD,
    IdentityEncoder,
    align_faces,
    image_tensor,
    read_dlib_network,
)
from facesynth.cli import main as facesynth_main

dlib = pytest.importorskip("dlib")

FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"
if not FACES.is_dir():
    FACES = Path("/work/shared/data/faces")
PHOTOS = sorted(FACES.glob("*/*.jpg"))

pytestmark = pytest.mark.skipif(not PHOTOS, reason="shared/data/faces not available")


@pytest.fixture(scope="module")
def encoder() -> IdentityEncoder:
    return IdentityEncoder.load()


@pytest.fixture(scope="module")
def faces():
    """Per photo: the image, its largest face's landmarks, dlib's chip and dlib's descriptor."""
    rec = dlib.face_recognition_model_v1(str(model_file(MODEL_NAME)))
    out = []
    for path in PHOTOS:
        img = load_image(path)
        found = detect_faces(img)
        assert found, f"no face detected in {path}"
        face = found[0]
        shape = dlib.full_object_detection(
            dlib.rectangle(*face.box), [dlib.point(int(x), int(y)) for x, y in face.landmarks])
        chip = dlib.get_face_chip(img, shape, size=150, padding=0.25)
        desc = np.array(rec.compute_face_descriptor(chip), dtype=np.float64)
        out.append(dict(path=path, image=img, landmarks=face.landmarks, chip=chip, desc=desc))
    return out


def _chips_tensor(faces) -> torch.Tensor:
    return torch.from_numpy(np.stack([f["chip"] for f in faces])).permute(0, 3, 1, 2).float()


@pytest.fixture(scope="module")
def port_from_photos(encoder, faces) -> np.ndarray:
    images = [image_tensor(f["image"]) for f in faces]
    with torch.no_grad():
        return encoder.embed(images, [f["landmarks"] for f in faces]).double().numpy()


# ------------------------------------------------------------------------------------------
# The .dat reader
# ------------------------------------------------------------------------------------------


def test_reader_consumes_the_whole_file_and_finds_dlibs_architecture():
    net = read_dlib_network(model_file(MODEL_NAME))
    kinds = [layer.kind for layer in net.layers]
    counts = {k: kinds.count(k) for k in set(kinds)}
    assert counts == {"con": 29, "affine": 29, "relu": 29, "add_prev": 14, "avg_pool": 5,
                      "max_pool": 1, "fc": 1, "tag_or_skip": 22}
    n_params = 0
    for layer in net.layers:
        for key in ("weight", "bias", "gamma", "beta"):
            if key in layer.params:
                n_params += layer.params[key].size
    assert n_params == 5_614_592
    assert net.input_size == (150, 150)
    np.testing.assert_allclose(net.input_means, (122.782, 117.001, 104.298), atol=1e-3)
    assert net.loss["name"] == "loss_metric_2"
    assert net.loss["threshold"] == pytest.approx(0.6, abs=1e-6)


def test_truncated_weights_file_is_a_one_line_error(tmp_path):
    data = model_file(MODEL_NAME).read_bytes()
    for n, cut in enumerate((len(data) // 2, len(data) - 7, 100)):
        bad = tmp_path / f"truncated{n}.dat"
        bad.write_bytes(data[:cut])
        with pytest.raises(FaceSynthError) as err:
            IdentityEncoder.load(bad)
        msg = str(err.value)
        assert str(bad) in msg and "\n" not in msg


def test_garbage_and_missing_weights_files_are_one_line_errors(tmp_path):
    junk = tmp_path / "junk.dat"
    junk.write_bytes(b"\x01\x01\x01" + bytes(range(256)) * 20)
    with pytest.raises(FaceSynthError, match="junk.dat"):
        IdentityEncoder.load(junk)
    with pytest.raises(FaceSynthError, match="missing.dat"):
        IdentityEncoder.load(tmp_path / "missing.dat")
    # trailing bytes after a complete network are refused too
    extra = tmp_path / "extra.dat"
    shutil.copyfile(model_file(MODEL_NAME), extra)
    with open(extra, "ab") as f:
        f.write(b"\x00\x00")
    with pytest.raises(FaceSynthError, match="trailing"):
        IdentityEncoder.load(extra)


def test_encoder_is_loaded_once_and_frozen(encoder):
    assert IdentityEncoder.load() is encoder
    assert not any(p.requires_grad for p in encoder.parameters())
    assert SAME_PERSON_THRESHOLD == 0.6


# ------------------------------------------------------------------------------------------
# Parity with dlib
# ------------------------------------------------------------------------------------------


def test_descriptors_match_dlib_on_the_same_chips(encoder, faces):
    with torch.no_grad():
        ours = encoder.embed_chips(_chips_tensor(faces)).double().numpy()
    theirs = np.stack([f["desc"] for f in faces])
    assert ours.shape == (len(PHOTOS), 128)
    max_abs = np.abs(ours - theirs).max()
    cos = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    assert max_abs <= 1e-5, max_abs
    assert cos.min() >= 0.99999, cos.min()
    # batching does not change a descriptor
    with torch.no_grad():
        single = encoder.embed_chips(_chips_tensor(faces[:1])).double().numpy()
    assert np.abs(single - ours[:1]).max() <= 1e-5


def test_torch_alignment_reproduces_dlibs_chips(faces):
    for f in faces[:6]:
        ours = align_faces([image_tensor(f["image"])], [f["landmarks"]])[0]
        diff = np.abs(ours.permute(1, 2, 0).numpy() - f["chip"].astype(np.float64))
        # same pixels up to float rounding at integer boundaries
        assert diff.max() <= 1.0 and diff.mean() < 0.05, (f["path"].name, diff.max(), diff.mean())


def test_five_point_alignment_reproduces_dlibs_chips(faces):
    predictor5 = dlib.shape_predictor(str(model_file("shape_predictor_5_face_landmarks.dat")))
    for f in faces[:3]:
        l, t, r, b = (int(v) for v in f["landmarks"].min(0).tolist() + f["landmarks"].max(0).tolist())
        shape = predictor5(f["image"], dlib.rectangle(l, t, r, b))
        pts = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
        chip = dlib.get_face_chip(f["image"], shape, size=150, padding=0.25)
        ours = align_faces([image_tensor(f["image"])], [pts])[0]
        diff = np.abs(ours.permute(1, 2, 0).numpy() - chip.astype(np.float64))
        assert diff.max() <= 1.0 and diff.mean() < 0.05, (f["path"].name, diff.max(), diff.mean())


def test_descriptors_through_torch_alignment_match_dlib(faces, port_from_photos):
    theirs = np.stack([f["desc"] for f in faces])
    dist = np.linalg.norm(port_from_photos - theirs, axis=1)
    assert dist.max() <= 0.02, dict(zip([f["path"].name for f in faces], dist.round(4)))


def test_batched_tensor_input_matches_list_input(encoder, faces, port_from_photos):
    # two different photos padded into one (B,3,H,W) tensor: padding does not reach the chips
    a, b = faces[0]["image"], faces[1]["image"]
    h, w = max(a.shape[0], b.shape[0]), max(a.shape[1], b.shape[1])
    batch = torch.zeros(2, 3, h, w)
    batch[0, :, :a.shape[0], :a.shape[1]] = image_tensor(a)
    batch[1, :, :b.shape[0], :b.shape[1]] = image_tensor(b)
    lms = torch.from_numpy(np.stack([faces[0]["landmarks"], faces[1]["landmarks"]]))
    with torch.no_grad():
        out = encoder.embed(batch, lms).double().numpy()
    assert np.abs(out - port_from_photos[:2]).max() < 1e-3


def test_verification_decisions_agree_with_dlib_on_every_pair(faces, port_from_photos):
    theirs = np.stack([f["desc"] for f in faces])
    pairs = list(itertools.combinations(range(len(faces)), 2))
    disagreements = []
    n_same = 0
    for i, j in pairs:
        d_dlib = np.linalg.norm(theirs[i] - theirs[j])
        d_port = float(IdentityEncoder.distance(torch.from_numpy(port_from_photos[i]),
                                                torch.from_numpy(port_from_photos[j])))
        n_same += d_dlib < SAME_PERSON_THRESHOLD
        if (d_dlib < SAME_PERSON_THRESHOLD) != (d_port < SAME_PERSON_THRESHOLD):
            disagreements.append((faces[i]["path"].name, faces[j]["path"].name, d_dlib, d_port))
    assert not disagreements
    assert 0 < n_same < len(pairs)  # both decisions actually occur


# ------------------------------------------------------------------------------------------
# Gradients
# ------------------------------------------------------------------------------------------


def test_gradients_move_the_embedding_by_changing_a_few_pixels(encoder, faces):
    src = next(f for f in faces if f["path"].name == "face_recognition_obama_small.jpg")
    tgt = next(f for f in faces if f["path"].name == "face_recognition_biden2.jpg")
    image = image_tensor(src["image"])
    lms = torch.from_numpy(src["landmarks"])[None]
    target = torch.from_numpy(tgt["desc"]).float()
    # a 12x12 patch between the eyes (of a 320x240 photo)
    cx, cy = (int(v) for v in src["landmarks"][27])
    mask = torch.zeros_like(image)
    mask[:, cy - 6:cy + 6, cx - 6:cx + 6] = 1.0
    delta = torch.zeros_like(image, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=4.0)
    dists = []
    for _ in range(8):
        img = (image + delta * mask).clamp(0, 255)
        d = IdentityEncoder.distance(encoder.embed(img[None], lms)[0], target)
        dists.append(float(d.detach()))
        opt.zero_grad()
        d.backward()
        assert delta.grad is not None and torch.isfinite(delta.grad).all()
        assert delta.grad.abs().sum() > 0
        assert (delta.grad * (1 - mask)).abs().sum() == 0  # only the chosen pixels change
        opt.step()
    assert dists[-1] < dists[0] - 0.01, dists


def test_gradients_reach_the_landmarks(encoder, faces):
    f = faces[0]
    image = image_tensor(f["image"])
    lms = torch.from_numpy(f["landmarks"])[None].clone().requires_grad_(True)
    encoder.embed(image[None], lms).norm().backward()
    assert lms.grad is not None and torch.isfinite(lms.grad).all() and lms.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------
# facesynth verify
# ------------------------------------------------------------------------------------------


def _verify(argv) -> int:
    return facesynth_main(argv)


def test_verify_same_and_different_people(capsys):
    obama = [str(FACES / "obama" / "face_recognition_obama.jpg"), str(FACES / "obama" / "face_recognition_obama2.jpg")]
    assert _verify(["verify", *obama]) == 0
    out = capsys.readouterr().out.strip().split()
    assert out[1] == "same" and float(out[0]) < 0.6

    biden = str(FACES / "biden" / "face_recognition_biden2.jpg")
    assert _verify(["verify", obama[0], biden, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"distance", "same"}
    assert result["same"] is False and result["distance"] >= 0.6


def test_verify_json_same_person(capsys):
    a = str(FACES / "deepface_mark" / "deepface_img13.jpg")
    b = str(FACES / "deepface_mark" / "deepface_img14.jpg")
    assert _verify(["verify", a, b, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["same"] is True and 0 <= result["distance"] < 0.6


def test_verify_without_a_face_is_exit_1(tmp_path, capsys):
    gray = tmp_path / "gray.png"
    save_png(gray, np.full((200, 200, 3), 128, np.uint8))
    face = str(FACES / "obama" / "face_recognition_obama.jpg")
    assert _verify(["verify", face, str(gray)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip()
    assert "\n" not in err and "no face" in err and "gray.png" in err

    assert _verify(["verify", str(tmp_path / "nope.jpg"), face, "--json"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "nope.jpg" in err


def test_features_end_where_the_descriptor_starts_and_perceptual_loss(encoder, faces):
    """`features`' last map is what the descriptor pools; from one pass, the identity loss equals
    `identity_loss` and the perceptual loss is 0 for the photo itself, grows with a blur, and sends
    gradients to the image only."""
    import torch.nn.functional as F

    from ganrefine.training import identity_and_perceptual_losses, identity_loss

    chips = _chips_tensor(faces[:2])
    feats = encoder.net.features(chips)
    assert [f.shape[1] for f in feats] == [32, 32, 64, 128, 256, 256]
    assert torch.allclose(encoder.net.fc(feats[-1].mean(dim=(2, 3))), encoder.embed_chips(chips), atol=1e-4)

    src = faces[0]
    img = image_tensor(src["image"])[None] / 255.0                     # (1, 3, H, W) in 0..1
    lm = torch.from_numpy(src["landmarks"]).float()[None]
    same_id, same = identity_and_perceptual_losses(encoder, img, img, lm)
    assert same < 1e-6 and same_id < 1e-4
    blurred = F.avg_pool2d(img, 5, 1, 2, count_include_pad=False).requires_grad_(True)
    ident, loss = identity_and_perceptual_losses(encoder, blurred, img, lm)
    assert torch.allclose(ident, identity_loss(encoder, blurred, img, lm), atol=1e-4)
    more = F.avg_pool2d(img, 11, 1, 5, count_include_pad=False)
    assert 0.02 < loss < identity_and_perceptual_losses(encoder, more, img, lm)[1]
    (loss + ident).backward()
    assert blurred.grad.abs().sum() > 0
