"""Reading and writing the networks' weights and training checkpoints: torch files of tensors and plain data.

Every file is read with `torch.load(weights_only=True)` (`read_plain_torch_file`), so a crafted
file cannot run code while it is read, and written by temporary file and rename
(`save_torch_atomic`), so a killed run never leaves half a file. A file names what it holds in its
"format" field:

    facesynth-refiner/1          refiner generator weights with their `RefinerConfig` (`save_weights`)
    facesynth-refiner-train/1    a `train-refiner` checkpoint (`ganrefine.train_refiner`)
    facesynth-capg/1             CAPG-GAN generator weights with their `CapgConfig` (`save_capg_weights`)
    facesynth-capg-train/1       a `train-capg` checkpoint (`ganrefine.train_capg`)

`load_refiner` and `load_capg` read a generator from its weights or from a training checkpoint.
"""
from __future__ import annotations

import io
import os
import re
import warnings
from dataclasses import asdict
from pathlib import Path

import torch

from face3d.errors import FaceSynthError
from face3d.image_io import atomic_write_bytes
from ganrefine.capg_net import CapgConfig, CapgGenerator
from ganrefine.refiner import RefinerConfig, RefinerGenerator

WEIGHTS_FORMAT = "facesynth-refiner/1"
CHECKPOINT_FORMAT = "facesynth-refiner-train/1"
CAPG_WEIGHTS_FORMAT = "facesynth-capg/1"
CAPG_CHECKPOINT_FORMAT = "facesynth-capg-train/1"


def save_torch_atomic(path: str | os.PathLike, obj: dict) -> None:
    """torch.save to a temporary file, then rename: a killed run never leaves half a checkpoint.
    `obj` holds tensors and plain data only (configs as `asdict` dicts): the loaders read with
    `weights_only=True` and refuse anything else. Tensors are written from the CPU, so a file made
    on a GPU reads anywhere alike."""
    buf = io.BytesIO()
    torch.save(_on_cpu(obj), buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def _on_cpu(obj):
    """`obj` with every tensor in it (nested dicts, lists, tuples) detached on the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _on_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_on_cpu(v) for v in obj)
    return obj


def read_plain_torch_file(path: Path, not_what: str):
    """What `path` holds, read with `torch.load(weights_only=True)`: tensors and plain data (dicts,
    lists, tuples, str, int, float, bool, None) only, so a crafted file cannot run code while it is
    read. Anything else (pickled objects, a foreign or truncated file) is a one-line error
    "PATH: <not_what> (...)"."""
    try:
        with warnings.catch_warnings():
            # torch's own notes on foreign pickles (e.g. "Detected pickle protocol 4"): the error below says it
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickled objects, truncated or foreign file
        # the weights-only unpickler names the first class or function that the file asks for
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found:
            raise FaceSynthError(f"{path}: {not_what} (it holds objects other than tensors and plain data: "
                                 f"{found.group(1)}; facesynth never unpickles code)") from None
        raise FaceSynthError(f"{path}: {not_what} ({type(exc).__name__})") from None


def load_torch_file(path: str | os.PathLike, formats: tuple[str, ...], what: str) -> dict:
    """A `torch.save`d dict of tensors and plain data whose "format" is one of `formats`; a one-line
    error for anything else (see `read_plain_torch_file`: nothing in the file is ever executed)."""
    path = Path(path)
    if not path.is_file():
        raise FaceSynthError(f"{path}: {what} weights not found")
    ck = read_plain_torch_file(path, f"not a {what} weights file")
    if not isinstance(ck, dict) or ck.get("format") not in formats:
        raise FaceSynthError(f"{path}: not a {what} weights file")
    return ck


def _save_generator(path: str | os.PathLike, fmt: str, arch: str, generator: torch.nn.Module, info: dict) -> None:
    """The generator alone, with its architecture config under "<arch>_config", and `info`."""
    save_torch_atomic(path, {"format": fmt, f"{arch}_config": asdict(generator.cfg),
                             "state_dict": generator.state_dict(), **info})


def _load_generator(path: str | os.PathLike, formats: tuple[str, str], what: str, arch: str, config_cls, network_cls,
                    discriminators: tuple[str, ...]) -> tuple[torch.nn.Module, dict]:
    """A generator (eval mode) and the file's other entries from weights (`formats[0]`, written by
    `_save_generator`) or a training checkpoint (`formats[1]`, its config's `arch` entry and its
    "generator"); the networks' and optimisers' tensors are left out of the info."""
    weights_format, checkpoint_format = formats
    ck = load_torch_file(path, formats, what)
    try:
        if ck["format"] == checkpoint_format:
            cfg, state = config_cls(**ck["config"][arch]), ck["generator"]
        else:
            cfg, state = config_cls(**ck[f"{arch}_config"]), ck["state_dict"]
        g = network_cls(cfg)
        g.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # plain data, but no generator's config and tensors
        raise FaceSynthError(f"{path}: not a {what} weights file (its config or tensors do not fit: "
                             f"{type(exc).__name__})") from None
    g.eval()
    left_out = ("state_dict", "generator", *discriminators, "opt_g", "opt_d")
    return g, {k: v for k, v in ck.items() if k not in left_out}


def save_weights(path: str | os.PathLike, generator: RefinerGenerator, info: dict) -> None:
    """The refiner generator alone, with its architecture config: what `load_refiner` reads."""
    _save_generator(path, WEIGHTS_FORMAT, "refiner", generator, info)


def load_refiner(path: str | os.PathLike) -> tuple[RefinerGenerator, dict]:
    """A trained generator (eval mode) and its info from a `_best.pt` weights file or a training checkpoint."""
    return _load_generator(path, (WEIGHTS_FORMAT, CHECKPOINT_FORMAT), "refiner", "refiner", RefinerConfig,
                           RefinerGenerator, ("discriminator",))


def save_capg_weights(path: str | os.PathLike, generator: CapgGenerator, info: dict) -> None:
    """The CAPG-GAN generator alone, with its architecture config: what `load_capg` reads."""
    _save_generator(path, CAPG_WEIGHTS_FORMAT, "capg", generator, info)


def load_capg(path: str | os.PathLike) -> tuple[CapgGenerator, dict]:
    """A trained generator (eval mode) and its info from a weights file or a `train-capg` checkpoint."""
    return _load_generator(path, (CAPG_WEIGHTS_FORMAT, CAPG_CHECKPOINT_FORMAT), "CAPG-GAN", "capg", CapgConfig,
                           CapgGenerator, ("disc_a", "disc_b"))
