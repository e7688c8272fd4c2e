"""Weights files never run code (issue 22): every reader of refiner / CAPG-GAN weights and training
checkpoints (`rotate --refiner/--capg`, `train-refiner --init/--resume`, `train-capg --resume`,
`soup-refiners`) reads tensors and plain data only, and refuses a pickle that asks for anything
else with one line, before any of it is executed."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from face3d.errors import FaceSynthError

ROOT = Path(__file__).resolve().parent.parent
ASTRONAUT = ROOT / "assets" / "astronaut.png"


class WritesMarker:
    """Unpickling this object calls open(marker, "w"): the marker file appears if the file's code runs."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def crafted_file(tmp_path: Path, payload: dict, how: str = "torch.save") -> tuple[Path, Path]:
    """(file, marker): `payload` with a `WritesMarker` beside its keys, written by torch.save or as a plain pickle."""
    marker = tmp_path / "MARKER"
    path = tmp_path / ("evil.pt" if how == "torch.save" else "evil.pkl")
    obj = {**payload, "extra": WritesMarker(marker)}
    if how == "torch.save":
        torch.save(obj, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=4)
    assert not marker.exists()  # writing the file runs nothing; unpickling it would
    return path, marker


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_the_crafted_files_do_run_code_when_unpickled(tmp_path, how):
    """The check of the tests below: what they refuse really is code that an unpickler runs."""
    path, marker = crafted_file(tmp_path, REFINER, how)
    try:
        torch.load(path, map_location="cpu", weights_only=False)
    except RuntimeError:  # a plain pickle: torch's legacy reader unpickles it as the magic number, then fails
        assert how == "pickle"
    assert marker.exists()


REFINER = {"format": "facesynth-refiner/1", "refiner_config": {}, "state_dict": {}}
CAPG = {"format": "facesynth-capg/1", "capg_config": {}, "state_dict": {}}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "facesynth.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300, cwd=ROOT)


def one_line_error(err: str, *parts: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("facesynth: error: "), err
    for part in parts:
        assert part in lines[0], err


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_rotate_refuses_a_refiner_file_that_would_run_code(tmp_path, how):
    path, marker = crafted_file(tmp_path, REFINER, how)
    r = run_cli("rotate", str(ASTRONAUT), "--yaw", "0", "--size", "128", "--no-dense", "--method", "hybrid",
                "--refiner", str(path), "--out", str(tmp_path / "out"))
    assert not marker.exists(), "the file's code ran"
    assert r.returncode == 1, r.stderr
    one_line_error(r.stderr, f"{path}: not a refiner weights file")
    if how == "torch.save":
        assert "facesynth never unpickles code" in r.stderr


def test_rotate_refuses_a_capg_file_that_would_run_code(tmp_path):
    path, marker = crafted_file(tmp_path, CAPG)
    r = run_cli("rotate", str(ASTRONAUT), "--yaw", "0", "--size", "128", "--no-dense", "--method", "gan",
                "--capg", str(path), "--out", str(tmp_path / "out"))
    assert not marker.exists(), "the file's code ran"
    assert r.returncode == 1, r.stderr
    one_line_error(r.stderr, f"{path}: not a CAPG-GAN weights file", "facesynth never unpickles code")


def fake_pair_dirs(root: Path) -> Path:
    """A pair cache's layout with empty pair files: the training commands read weights before pairs."""
    for part in ("train", "heldout"):
        (root / part / "someone").mkdir(parents=True)
        (root / part / "someone" / "pair.npz").touch()
    return root


def test_train_refiner_init_refuses_a_file_that_would_run_code(tmp_path, capsys):
    from facesynth.cli import main

    path, marker = crafted_file(tmp_path, REFINER)
    data = fake_pair_dirs(tmp_path / "pairs")
    rc = main(["train-refiner", "--data", str(data), "--steps", "1", "--out", str(tmp_path / "run" / "ck.pt"),
                 "--init", str(path)])
    assert not marker.exists(), "the file's code ran"
    assert rc == 1
    one_line_error(capsys.readouterr().err, "not a refiner weights file", "facesynth never unpickles code")


def test_train_refiner_resume_refuses_a_checkpoint_that_would_run_code(tmp_path, capsys):
    from facesynth.cli import main

    path, marker = crafted_file(tmp_path, {"format": "facesynth-refiner-train/1", "config": {}, "step": 1})
    data = fake_pair_dirs(tmp_path / "pairs")
    rc = main(["train-refiner", "--data", str(data), "--steps", "2", "--out", str(path), "--resume"])
    assert not marker.exists(), "the file's code ran"
    assert rc == 1
    one_line_error(capsys.readouterr().err, f"{path}: not a refiner training checkpoint", "never unpickles code")


def test_train_capg_resume_refuses_a_checkpoint_that_would_run_code(tmp_path, capsys):
    from facesynth.cli import main

    path, marker = crafted_file(tmp_path, {"format": "facesynth-capg-train/1", "config": {}, "step": 1})
    data = tmp_path / "photos"
    data.mkdir()
    (data / "split.json").write_text("{}")
    rc = main(["train-capg", "--data", str(data), "--steps", "2", "--out", str(path), "--resume"])
    assert not marker.exists(), "the file's code ran"
    assert rc == 1
    one_line_error(capsys.readouterr().err, f"{path}: not a CAPG-GAN training checkpoint", "never unpickles code")


def test_soup_refiners_refuses_a_file_that_would_run_code(tmp_path, capsys):
    from facesynth.cli import main
    from ganrefine.pairs import TrainingPair

    # one real (blank) validation pair, so that nothing but the weights can stop the run
    s = 128
    (tmp_path / "pairs" / "heldout" / "someone").mkdir(parents=True)
    TrainingPair(render=np.zeros((s, s, 3), np.uint8), confidence=np.zeros((s, s), np.float32),
                 mask=np.zeros((s, s), np.float32), target=np.zeros((s, s, 3), np.uint8),
                 landmarks=np.zeros((68, 2), np.float32), yaw_offset=0.0).save(
        tmp_path / "pairs" / "heldout" / "someone" / "pair.npz")
    path, marker = crafted_file(tmp_path, REFINER)
    rc = main(["soup-refiners", "--data", str(tmp_path / "pairs"), "--out", str(tmp_path / "soup.pt"),
                 str(ROOT / "assets" / "refiner" / "refiner.pt"), str(path)])
    assert not marker.exists(), "the file's code ran"
    assert rc == 1
    one_line_error(capsys.readouterr().err, f"{path}: not a refiner weights file", "never unpickles code")
    assert not (tmp_path / "soup.pt").exists()


def test_plain_data_without_a_generator_is_a_one_line_error(tmp_path):
    from ganrefine.weights import load_capg, load_refiner

    torch.save({"format": "facesynth-refiner/1", "refiner_config": {"no_such_field": 1}, "state_dict": {}},
               tmp_path / "r.pt")
    with pytest.raises(FaceSynthError, match="not a refiner weights file"):
        load_refiner(tmp_path / "r.pt")
    torch.save({"format": "facesynth-capg/1"}, tmp_path / "c.pt")
    with pytest.raises(FaceSynthError, match="not a CAPG-GAN weights file"):
        load_capg(tmp_path / "c.pt")


def _plain(obj, where: str = "") -> list[str]:
    """The places in `obj` that are neither tensors nor plain data."""
    if isinstance(obj, dict):
        return [w for k, v in obj.items() for w in ([f"{where}/key {k!r}"] if not isinstance(k, str) else [])
                + _plain(v, f"{where}/{k}")]
    if isinstance(obj, (list, tuple)):
        return [w for i, v in enumerate(obj) for w in _plain(v, f"{where}[{i}]")]
    return [] if isinstance(obj, (str, int, float, bool, type(None), torch.Tensor)) else [f"{where}: {type(obj)}"]


@pytest.mark.parametrize("rel,fmt", [("assets/refiner/refiner.pt", "facesynth-refiner/1"),
                                     ("assets/capg/capg.pt", "facesynth-capg/1")])
def test_shipped_weights_are_tensors_and_plain_data(rel, fmt):
    ck = torch.load(ROOT / rel, map_location="cpu", weights_only=True)
    assert ck["format"] == fmt
    assert _plain(ck) == []
