"""The GAN-only baseline (issue 6): heatmaps, generator, real-photo pairs, training/resume, weights, CLI."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ganrefine.capg import DEFAULT_WEIGHTS
from ganrefine.capg_net import PARTS, CapgConfig, CapgGenerator, face_weight, landmark_heatmaps
from ganrefine.train_capg import CapgTrainConfig, PoseSet, train_capg
from ganrefine.weights import load_capg

TINY = CapgConfig(base=4, res_blocks=1)


def test_heatmaps_peak_at_their_parts_landmarks():
    lm = torch.full((1, 68, 2), -100.0)       # every point far outside the image ...
    lm[0, 30] = torch.tensor([40.5, 70.5])    # ... but the nose tip (part 3: 27-30) and a mouth corner
    lm[0, 48] = torch.tensor([90.5, 20.5])
    h = landmark_heatmaps(lm, 128)
    assert h.shape == (1, len(PARTS), 128, 128) and float(h.min()) >= 0 and float(h.max()) <= 1
    nose = next(i for i, p in enumerate(PARTS) if 30 in p)
    mouth = next(i for i, p in enumerate(PARTS) if 48 in p)
    assert float(h[0, nose, 70, 40]) == pytest.approx(1.0) and float(h[0, nose, 20, 90]) < 1e-6
    assert float(h[0, mouth, 20, 90]) == pytest.approx(1.0)
    others = [i for i in range(len(PARTS)) if i not in (nose, mouth)]
    assert float(h[0, others].max()) < 1e-6


def test_generator_shapes_range_and_gradients():
    torch.manual_seed(0)
    g = CapgGenerator(TINY)
    src = torch.rand(2, 3, 128, 128, requires_grad=True)
    out = g(src, landmark_heatmaps(torch.rand(2, 68, 2) * 80 + 24, 128))
    assert out.shape == (2, 3, 128, 128) and float(out.detach().min()) >= 0 and float(out.detach().max()) <= 1
    out.mean().backward()
    assert src.grad is not None and float(src.grad.abs().sum()) > 0


def test_face_weight_covers_the_landmarks_only():
    lm = np.array([[x, y] for x in (40.0, 88.0) for y in (40.0, 88.0)] * 17, np.float32)
    w = face_weight(lm, 128, 0.25)
    assert w[64, 64] == 1.0 and w[5, 5] == 0.25 and w[120, 64] == 0.25
    assert set(np.unique(w)) == {0.25, 1.0}


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory, data_dir, ict_model) -> Path:
    """A real make-pose-photos cache: 2 train identities and 1 held-out one, 2 photos each."""
    from ganrefine.pairs import generate_pairs
    from ganrefine.pose_pairs import PosePhoto, make_pose_photo_file

    root = tmp_path_factory.mktemp("posephotos")
    lfw = data_dir / "lfw" / "images"
    train = [lfw / n / f"{n}_000{i}.jpg" for n in ("Al_Gore", "Ai_Sugiyama") for i in (1, 2)]
    held = [lfw / "Abdullah_Gul" / f"Abdullah_Gul_000{i}.jpg" for i in (1, 2)]
    assert generate_pairs(train, root / "train", ict_model, progress=False, maker=make_pose_photo_file)["made"] == 4
    assert generate_pairs(held, root / "heldout", ict_model, progress=False, maker=make_pose_photo_file)["made"] == 2
    (root / "split.json").write_text(json.dumps({"heldout_identities": ["Abdullah_Gul"], "size": 128}))
    p = PosePhoto.load(root / "train" / "Al_Gore" / "Al_Gore_0001.npz")
    assert p.crop.shape == (128, 128, 3) and p.crop.dtype == np.uint8 and p.landmarks.shape == (68, 2)
    # the landmarks sit on the face in the crop: the nose tip near the centre, eyes above the mouth
    assert 40 < p.landmarks[30, 0] < 88 and p.landmarks[36:48, 1].mean() < p.landmarks[48:68, 1].mean()
    return root


def test_pairs_are_two_different_photos_of_one_person(tiny_cache):
    data = PoseSet.load(tiny_cache / "train")
    assert len(data) == 4 and sorted(set(data.person.tolist())) == [0, 1]
    src, tgt = data.draw_pairs(16, torch.Generator().manual_seed(0))
    assert torch.equal(data.person[src], data.person[tgt]) and bool((src != tgt).all())
    s, t = data.fixed_pairs()
    assert s.tolist() == [0, 1, 2, 3] and t.tolist() == [1, 0, 3, 2]


def _tiny_config(steps: int) -> CapgTrainConfig:
    return CapgTrainConfig(steps=steps, batch=2, eval_every=2, checkpoint_every=1, log_every=1, val_identities=1,
                           capg=TINY)


@pytest.mark.slow
def test_training_writes_its_files_and_resumes_exactly(tiny_cache, tmp_path):
    full = train_capg(tiny_cache, tmp_path / "a" / "ck.pt", _tiny_config(3), progress=False)
    assert full["best_step"] is not None
    for name in ("ck.pt", "ck_best.pt", "ck_log.csv", "ck_val.csv", "ck_summary.json"):
        assert (tmp_path / "a" / name).is_file(), name
    rows = list(csv.DictReader(open(tmp_path / "a" / "ck_log.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert all(np.isfinite(float(r[k])) for r in rows for k in ("pixel", "identity", "adv_a", "adv_b", "d"))
    val = list(csv.DictReader(open(tmp_path / "a" / "ck_val.csv")))
    assert [int(r["step"]) for r in val] == [0, 2, 3]
    assert float(val[0]["id_copy_mean"]) > 0  # the copy baseline: two photos of one person still differ
    ck = torch.load(tmp_path / "a" / "ck.pt", weights_only=True)
    assert ck["step"] == 3 and ck["config"]["capg"]["base"] == 4

    train_capg(tiny_cache, tmp_path / "b" / "ck.pt", _tiny_config(2), progress=False)
    with pytest.raises(Exception, match="--resume"):
        train_capg(tiny_cache, tmp_path / "b" / "ck.pt", _tiny_config(3), progress=False)
    train_capg(tiny_cache, tmp_path / "b" / "ck.pt", _tiny_config(3), resume=True, progress=False)
    a = torch.load(tmp_path / "a" / "ck.pt", weights_only=True)["generator"]
    b = torch.load(tmp_path / "b" / "ck.pt", weights_only=True)["generator"]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    gen, info = load_capg(tmp_path / "a" / "ck_best.pt")
    assert gen.cfg == TINY and info["step"] == full["best_step"]


def test_bad_weights_and_missing_data_are_one_line_errors(tmp_path, capsys):
    from face3d.errors import FaceSynthError
    from facesynth.cli import main

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(FaceSynthError, match="not a CAPG-GAN weights file"):
        load_capg(bad)
    with pytest.raises(FaceSynthError, match="not found"):
        load_capg(tmp_path / "missing.pt")
    assert main(["train-capg", "--data", str(tmp_path), "--steps", "5", "--out", str(tmp_path / "c.pt")]) == 1
    err = capsys.readouterr().err
    assert "make-pose-photos" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------------
# The shipped weights


def test_shipped_weights_never_emit_nan_or_grey_on_heldout_photos(data_dir, ict_model):
    """Held-out LFW people (never trained on) at several yaws: finite, not flat, face-like contrast."""
    from face3d.camera import Pose
    from face3d.fitting import FitConfig
    from face3d.image_io import load_image
    from face3d.pipeline import reconstruct_faces
    from ganrefine.capg import load_default_capg, rotate_with_capg

    assert DEFAULT_WEIGHTS.is_file() and DEFAULT_WEIGHTS.stat().st_size < 20e6
    gen = load_default_capg(DEFAULT_WEIGHTS).generator
    info = json.loads((Path(__file__).resolve().parents[1] / "assets" / "capg" / "heldout_check.json").read_text())
    for rel in info["photos"]:
        image = load_image(data_dir / "lfw" / "images" / rel)
        fit = reconstruct_faces(image, ict_model, fit_config=FitConfig(dense=False))[0].fit
        views = rotate_with_capg(gen, fit, image, ict_model, [Pose(y, 0, 0) for y in (-45, 0, 30)], 128)
        assert views.shape == (3, 128, 128, 3)
        f = views.astype(np.float32)
        assert np.isfinite(f).all()
        assert f.std(axis=(1, 2, 3)).min() > 10  # not a flat or all-grey image
        centre = f[:, 40:88, 40:88]
        assert np.abs(centre - 128).mean() > 5


def test_rotate_method_gan_writes_views_and_records_the_weights(tmp_path, obama_path):
    import hashlib

    from facesynth.cli import main

    out = tmp_path / "o"
    assert main(["rotate", str(obama_path), "--yaw", "-30,0,30", "--method", "gan", "--no-dense", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["method"] == "gan" for r in rows)
    assert rows[0]["capg_sha256"] == hashlib.sha256(DEFAULT_WEIGHTS.read_bytes()).hexdigest()
    from face3d.image_io import load_image

    views = [load_image(out / r["output"]) for r in rows]
    assert all(v.shape == (128, 128, 3) for v in views)
    assert np.abs(views[0].astype(float) - views[2].astype(float)).mean() > 3  # the pose changes the output


def test_rotate_method_gan_refuses_3d_edits(tmp_path, obama_path, capsys):
    from facesynth.cli import main

    assert main(["rotate", str(obama_path), "--method", "gan", "--expression", "smile", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "not available with --method gan" in err and "Traceback" not in err
