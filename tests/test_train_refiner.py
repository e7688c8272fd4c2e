"""Refiner training (issue 4): data flips, metrics, the loop's checkpoints and exact resume, the CLI."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ganrefine.metrics import masked_l1, masked_ssim
from ganrefine.refiner import FLIP68, RefinerConfig
from ganrefine.train_refiner import PairSet, TrainConfig, load_refiner, train_refiner

TINY = RefinerConfig(base=8, res_blocks=1, local=4)


def test_flip_permutation_is_a_mirror_involution():
    assert sorted(FLIP68) == list(range(68))
    assert [FLIP68[i] for i in FLIP68] == list(range(68))
    # left/right structures swap, the midline stays
    assert FLIP68[0] == 16 and FLIP68[36] == 45 and FLIP68[48] == 54 and FLIP68[30] == 30 and FLIP68[8] == 8


def test_ssim_and_l1_reference_values():
    torch.manual_seed(0)
    a = torch.rand(2, 3, 32, 32)
    mask = torch.ones(2, 1, 32, 32)
    assert torch.allclose(masked_ssim(a, a, mask), torch.ones(2), atol=1e-5)
    assert (masked_ssim(a, torch.rand(2, 3, 32, 32), mask) < 0.2).all()
    b = a + 0.1
    half = torch.zeros(2, 1, 32, 32)
    half[..., :16] = 1
    assert torch.allclose(masked_l1(a, b, half), torch.full((2,), 0.1), atol=1e-6)
    # a change outside the mask does not count
    c = a.clone()
    c[..., 16:] += 0.5
    assert masked_l1(a, c, half).abs().max() < 1e-7


@pytest.fixture(scope="module")
def tiny_pairs(tmp_path_factory, data_dir, ict_model) -> Path:
    """A real pair cache in make-pairs' layout: 3 train photos, 2 held-out ones."""
    from ganrefine.pairs import generate_pairs

    root = tmp_path_factory.mktemp("pairs")
    lfw = data_dir / "lfw" / "images"
    train = [lfw / "Al_Gore" / "Al_Gore_0001.jpg", lfw / "AJ_Cook" / "AJ_Cook_0001.jpg",
             lfw / "Aaron_Eckhart" / "Aaron_Eckhart_0001.jpg"]
    held = [lfw / "Abel_Pacheco" / "Abel_Pacheco_0001.jpg", lfw / "Ai_Sugiyama" / "Ai_Sugiyama_0001.jpg"]
    assert generate_pairs(train, root / "train", ict_model, progress=False)["made"] == 3
    assert generate_pairs(held, root / "heldout", ict_model, progress=False)["made"] == 2
    return root


def test_pairset_flip_mirrors_images_and_landmarks(tiny_pairs):
    from ganrefine.train_refiner import pair_files

    data = PairSet.load(pair_files(tiny_pairs / "train"))
    idx = torch.tensor([0, 1])
    plain = data.batch(idx)
    flipped = data.batch(idx, torch.tensor([True, False]))
    assert torch.equal(flipped["render"][0], torch.flip(plain["render"][0], dims=[-1]))
    assert torch.equal(flipped["render"][1], plain["render"][1])
    # the subject's left eye becomes the right one, mirrored about the image centre
    size = plain["render"].shape[-1]
    assert torch.allclose(flipped["landmarks"][0, 36], torch.stack([size - plain["landmarks"][0, 45, 0],
                                                                      plain["landmarks"][0, 45, 1]]))


def _tiny_config(steps: int) -> TrainConfig:
    return TrainConfig(steps=steps, batch=2, eval_every=2, checkpoint_every=1, log_every=1, val_pairs=1, refiner=TINY)


@pytest.mark.slow
def test_training_writes_its_files_and_resumes_exactly(tiny_pairs, tmp_path):
    full = train_refiner(tiny_pairs, tmp_path / "a" / "ck.pt", _tiny_config(3), progress=False)
    assert full["best_step"] is not None
    for name in ("ck.pt", "ck_best.pt", "ck_log.csv", "ck_val.csv", "ck_summary.json"):
        assert (tmp_path / "a" / name).is_file(), name
    rows = list(csv.DictReader(open(tmp_path / "a" / "ck_log.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert all(np.isfinite(float(r[k])) for r in rows for k in ("pixel", "identity", "adv", "d"))
    val = list(csv.DictReader(open(tmp_path / "a" / "ck_val.csv")))
    assert [int(r["step"]) for r in val] == [0, 2, 3]
    assert abs(float(val[0]["l1_refined_mean"]) - float(val[0]["l1_render_mean"])) < 1e-6  # step 0 is the render
    assert len(list((tmp_path / "a" / "ck_samples").glob("step_*.png"))) == 3
    ck = torch.load(tmp_path / "a" / "ck.pt", weights_only=True)
    assert ck["step"] == 3 and ck["config"]["refiner"]["base"] == 8  # the checkpoint carries its config

    # stop after 2 steps, resume to 3: the same weights as the uninterrupted run
    train_refiner(tiny_pairs, tmp_path / "b" / "ck.pt", _tiny_config(2), progress=False)
    with pytest.raises(Exception, match="--resume"):
        train_refiner(tiny_pairs, tmp_path / "b" / "ck.pt", _tiny_config(3), progress=False)
    train_refiner(tiny_pairs, tmp_path / "b" / "ck.pt", _tiny_config(3), resume=True, progress=False)
    a = torch.load(tmp_path / "a" / "ck.pt", weights_only=True)["generator"]
    b = torch.load(tmp_path / "b" / "ck.pt", weights_only=True)["generator"]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    gen, info = load_refiner(tmp_path / "a" / "ck_best.pt")
    assert gen.cfg == TINY and info["step"] == full["best_step"]

    # --init: a fresh run from those weights; its step-0 validation scores them, not the render
    cfg = _tiny_config(1)
    cfg.init = str(tmp_path / "a" / "ck_best.pt")
    train_refiner(tiny_pairs, tmp_path / "c" / "ck.pt", cfg, progress=False)
    val_c = list(csv.DictReader(open(tmp_path / "c" / "ck_val.csv")))
    best_row = [r for r in val if int(r["step"]) == full["best_step"]][0]
    assert int(val_c[0]["step"]) == 0
    assert abs(float(val_c[0]["l1_refined_mean"]) - float(best_row["l1_refined_mean"])) < 1e-5
    assert torch.load(tmp_path / "c" / "ck.pt", weights_only=True)["config"]["init"] == cfg.init

    # a decaying schedule: the logged learning rate falls over the last steps, and the optimiser used it
    cfg = _tiny_config(3)
    cfg.lr_decay_steps = 2
    train_refiner(tiny_pairs, tmp_path / "d" / "ck.pt", cfg, progress=False)
    lrs = [float(r["lr_g"]) for r in csv.DictReader(open(tmp_path / "d" / "ck_log.csv"))]
    assert lrs == pytest.approx([2e-4, 2e-4, 1e-4])
    ck_d = torch.load(tmp_path / "d" / "ck.pt", weights_only=True)
    assert ck_d["opt_g"]["param_groups"][0]["lr"] == pytest.approx(1e-4)
    assert ck_d["opt_d"]["param_groups"][0]["lr"] == pytest.approx(1e-4)
    assert ck_d["config"]["lr_decay_steps"] == 2

    # pix2pixHD's losses: two discriminator scales, feature matching, the perceptual loss, the hybrid's
    # composite and feathered patches; logged, carried by the checkpoint, resumed exactly
    def realism(steps: int) -> TrainConfig:
        cfg = _tiny_config(steps)
        cfg.disc_scales, cfg.feature_matching_weight, cfg.perceptual_weight, cfg.keep_seen = 2, 10.0, 1.0, True
        cfg.refiner = RefinerConfig(base=8, res_blocks=1, local=4, feather=0.25)
        return cfg

    train_refiner(tiny_pairs, tmp_path / "e" / "ck.pt", realism(2), progress=False)
    rows = list(csv.DictReader(open(tmp_path / "e" / "ck_log.csv")))
    assert all(float(r["fm"]) > 0 and float(r["perceptual"]) > 0 and np.isfinite(float(r["adv"])) for r in rows)
    ck_e = torch.load(tmp_path / "e" / "ck.pt", weights_only=True)
    assert ck_e["config"]["disc_scales"] == 2 and ck_e["config"]["refiner"]["feather"] == 0.25
    assert any(k.startswith("scales.1.") for k in ck_e["discriminator"])
    train_refiner(tiny_pairs, tmp_path / "f" / "ck.pt", realism(1), progress=False)
    train_refiner(tiny_pairs, tmp_path / "f" / "ck.pt", realism(2), resume=True, progress=False)
    f = torch.load(tmp_path / "f" / "ck.pt", weights_only=True)
    assert all(torch.allclose(ck_e["generator"][k], f["generator"][k], atol=1e-6) for k in ck_e["generator"])
    assert all(torch.allclose(ck_e["discriminator"][k], f["discriminator"][k], atol=1e-6) for k in ck_e["discriminator"])
    # step 0 of the composite: the render on the head (a zero residual), the photo where the head's soft
    # edge lets it through
    val_e = list(csv.DictReader(open(tmp_path / "e" / "ck_val.csv")))
    assert 0.9 * float(val_e[0]["l1_render_mean"]) < float(val_e[0]["l1_refined_mean"]) <= float(val_e[0]["l1_render_mean"])
    # --init takes weights trained without the feather (the same tensors): the feather has none of its own
    cfg = realism(1)
    cfg.init = str(tmp_path / "a" / "ck_best.pt")
    train_refiner(tiny_pairs, tmp_path / "g" / "ck.pt", cfg, progress=False)
    cfg = _tiny_config(1)
    cfg.refiner, cfg.init = RefinerConfig(base=8, res_blocks=1, local=8), str(tmp_path / "a" / "ck_best.pt")
    with pytest.raises(Exception, match="another architecture"):
        train_refiner(tiny_pairs, tmp_path / "h" / "ck.pt", cfg, progress=False)


def test_refined_output_composes_like_the_hybrid_over_the_photo():
    """With `keep_seen`: the render where the photo saw the head, the generator's output where it did
    not, the photo off the head; without, the generator's output everywhere."""
    from ganrefine.refiner import RefinerGenerator
    from ganrefine.train_refiner import refined_output

    torch.manual_seed(0)
    g = RefinerGenerator(TINY).eval()
    torch.nn.init.normal_(g.fuse[-1].weight, std=0.05)          # a non-zero residual
    S = 128
    conf, mask = torch.zeros(1, 1, S, S), torch.zeros(1, 1, S, S)
    mask[..., 20:108, 20:108] = 1.0
    conf[..., 20:108, 20:64] = 0.9                               # seen: the head's left half
    b = {"render": torch.rand(1, 3, S, S), "target": torch.rand(1, 3, S, S), "confidence": conf, "mask": mask,
         "landmarks": torch.rand(1, 68, 2) * 60 + 34}
    with torch.no_grad():
        raw = g(torch.cat([b["render"], conf, mask], 1), b["landmarks"])
        out = refined_output(g, b, keep_seen=True)
        assert torch.equal(refined_output(g, b, keep_seen=False), raw)
    assert torch.allclose(out[..., :10, :], b["target"][..., :10, :])              # off the head: the photo
    assert torch.allclose(out[..., 40:90, 30:55], b["render"][..., 40:90, 30:55], atol=1e-5)   # seen: the render
    assert torch.allclose(out[..., 40:90, 75:100], raw[..., 40:90, 75:100], atol=1e-5)      # unseen: the generator
    assert not torch.allclose(raw[..., 40:90, 75:100], b["render"][..., 40:90, 75:100], atol=1e-3)


def test_learning_rate_scale_is_constant_then_linear_to_the_last_step():
    from ganrefine.training import learning_rate_scale

    assert [learning_rate_scale(s, 10, 0) for s in (1, 10)] == [1.0, 1.0]
    scales = [learning_rate_scale(s, 10, 4) for s in range(1, 11)]
    assert scales[:6] == [1.0] * 6
    assert scales[6:] == pytest.approx([1.0, 0.75, 0.5, 0.25])
    assert learning_rate_scale(1, 10, 20) == pytest.approx(0.5)  # a decay longer than the run starts below 1


def test_train_refiner_cli_errors(tmp_path, capsys):
    from facesynth.cli import main

    assert main(["train-refiner", "--data", str(tmp_path), "--steps", "0", "--out", str(tmp_path / "c.pt")]) == 2
    assert main(["train-refiner", "--data", str(tmp_path), "--steps", "5", "--out", str(tmp_path / "c.pt")]) == 1
    err = capsys.readouterr().err
    assert "make-pairs" in err and "Traceback" not in err
    assert main(["train-refiner", "--data", str(tmp_path), "--steps", "5", "--out", str(tmp_path / "c.pt"),
                 "--init", str(tmp_path / "none.pt")]) == 1
    assert main(["train-refiner", "--data", str(tmp_path), "--steps", "5", "--out", str(tmp_path / "c.pt"),
                 "--init", str(tmp_path / "none.pt"), "--resume"]) == 1
    for bad in ("nan", "-1", "inf", "x"):
        assert main(["train-refiner", "--data", str(tmp_path), "--steps", "5", "--out", str(tmp_path / "c.pt"),
                     "--identity-weight", bad]) == 2
    assert main(["train-refiner", "--data", str(tmp_path), "--steps", "5", "--out", str(tmp_path / "c.pt"),
                 "--identity-weight", "0.3", "--resume"]) == 1
    err = capsys.readouterr().err
    assert "--init" in err and "no such file" in err and "--resume" in err and "Traceback" not in err
    assert "--identity-weight must be a finite number" in err and "--identity-weight expects a number" in err
    assert "a resumed run keeps" in err
    assert main(["train-refiner", "--data", str(tmp_path), "--steps", "5", "--out", str(tmp_path / "c.pt"),
                 "--lr-decay-steps", "-1"]) == 2
    assert main(["train-refiner", "--data", str(tmp_path), "--steps", "5", "--out", str(tmp_path / "c.pt"),
                 "--lr-decay-steps", "3", "--resume"]) == 1
    err = capsys.readouterr().err
    assert "--lr-decay-steps must be at least 0" in err and "sets a fresh run's schedule" in err
    for flag, value in (("--disc-scales", "0"), ("--disc-scales", "5"), ("--feather", "0.6"), ("--feather", "-0.1"),
                        ("--feature-matching-weight", "-1"), ("--perceptual-weight", "nan")):
        assert main(["train-refiner", "--data", str(tmp_path), "--steps", "5", "--out", str(tmp_path / "c.pt"),
                     flag, value]) == 2
    assert main(["train-refiner", "--data", str(tmp_path), "--steps", "5", "--out", str(tmp_path / "c.pt"),
                 "--keep-seen", "--resume"]) == 1
    err = capsys.readouterr().err
    assert "--disc-scales must be between 1 and 4" in err and "--feather must be at most 0.5" in err
    assert "--keep-seen sets a fresh run's loss" in err and "Traceback" not in err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    from face3d.errors import FaceSynthError

    with pytest.raises(FaceSynthError, match="not a refiner weights file"):
        load_refiner(bad)


def test_split_json_written_by_make_pairs_guards_the_cache(tmp_path, data_dir, capsys):
    """make-pairs refuses to mix pairs of another split into an existing cache."""
    from facesynth.cli import main

    out = tmp_path / "cache"
    out.mkdir()
    (out / "split.json").write_text(json.dumps({"heldout_identities": ["Someone_Else"], "size": 128}))
    assert main(["make-pairs", str(data_dir / "lfw" / "images"), "--out", str(out), "--train-photos", "1"]) == 1
    assert "another split" in capsys.readouterr().err
    # the same split made by an older renderer (no render_version: version 1) is not mixed into either
    from ganrefine.pairs import split_lfw

    split = split_lfw(data_dir / "lfw" / "images", holdout=300, train_photos=1, seed=0)
    (out / "split.json").write_text(json.dumps({"heldout_identities": split.heldout_identities, "size": 128}))
    assert main(["make-pairs", str(data_dir / "lfw" / "images"), "--out", str(out), "--train-photos", "1"]) == 1
    err = capsys.readouterr().err
    assert "render version 1" in err and "Traceback" not in err


def test_average_state_dicts_is_the_elementwise_mean():
    from ganrefine.refiner import RefinerGenerator
    from ganrefine.soup import average_state_dicts

    torch.manual_seed(1)
    a, b = RefinerGenerator(TINY).state_dict(), RefinerGenerator(TINY).state_dict()
    m = average_state_dicts([a, b])
    assert set(m) == set(a)
    for k in a:
        assert torch.allclose(m[k], (a[k] + b[k]) / 2, atol=1e-7), k
    assert all(torch.equal(x, y) for x, y in zip(average_state_dicts([a]).values(), a.values()))


def _perturbed_weights(path: Path, seed: int, scale: float) -> Path:
    """A tiny refiner whose last layer (zero at initialisation) is random: a generator that changes the render."""
    from ganrefine.refiner import RefinerGenerator
    from ganrefine.weights import save_weights

    torch.manual_seed(seed)
    g = RefinerGenerator(TINY)
    with torch.no_grad():
        g.fuse[-1].weight.normal_(0, scale)
    save_weights(path, g, {})
    return path


def test_greedy_soup_keeps_what_helps_and_writes_the_mean(tiny_pairs, tmp_path, capsys):
    from facesynth.cli import main
    from ganrefine.soup import average_state_dicts
    from ganrefine.train_refiner import PairSet, evaluate_refiner, frozen_identity_encoder, pair_files, split_heldout, summarise

    w = [_perturbed_weights(tmp_path / f"w{i}.pt", i, s) for i, s in enumerate((0.02, 0.03, 2.0))]
    out = tmp_path / "soup" / "soup.pt"
    assert main(["soup-refiners", "--data", str(tiny_pairs), "--out", str(out), "--val-pairs", "1", *map(str, w)]) == 0
    soup, info = load_refiner(out)
    rows = info["soup_rows"]
    assert [r["own_score"] for r in rows] == sorted(r["own_score"] for r in rows)  # best candidate first
    assert rows[0]["kept"] and rows[0]["soup_score"] == rows[0]["own_score"]
    # greedy: the soup scores no worse than its best ingredient, and the wild candidate is left out
    assert info["val"]["score"] <= rows[0]["own_score"] + 1e-9
    assert not [r for r in rows if r["weights"] == str(w[2])][0]["kept"]
    kept = [load_refiner(i["weights"])[0].state_dict() for i in info["soup"]]
    mean = average_state_dicts(kept)
    assert all(torch.allclose(soup.state_dict()[k], mean[k], atol=1e-7) for k in mean)
    # the recorded score is the written generator's own
    val_files, _ = split_heldout(pair_files(tiny_pairs / "heldout"), 1)
    s = summarise(evaluate_refiner(soup, PairSet.load(val_files), frozen_identity_encoder()))
    assert s["score"] == pytest.approx(info["val"]["score"], abs=1e-6)

    assert main(["soup-refiners", "--data", str(tiny_pairs), "--out", str(out), str(tmp_path / "none.pt")]) == 1
    err = capsys.readouterr().err
    assert "none.pt: no such file" in err and "Traceback" not in err


def test_append_csv_keeps_an_existing_logs_columns(tmp_path):
    from ganrefine.training import append_csv

    path = tmp_path / "log.csv"
    append_csv(path, {"step": 1, "pixel": 0.5})
    append_csv(path, {"step": 2, "pixel": 0.4, "lr_g": 2e-4})  # a newer version logs one more field
    rows = list(csv.reader(open(path)))
    assert rows == [["step", "pixel"], ["1", "0.5"], ["2", "0.4"]]
