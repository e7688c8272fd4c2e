"""What the GAN training loops (`train-refiner`, `train-capg`) share: one run's setup, resume, loop and files.

    run = start_gan_run(out, cfg, resume, fmt=CHECKPOINT_FORMAT, what="refiner", arch="refiner",
                        arch_what="refiner", build=lambda: (generator, {"discriminator": discriminator}))
    ... load the data, define the step's losses ...
    summary = train_gan(run, GanTask(...), progress)

`start_gan_run` seeds torch with `cfg.seed`, builds the generator and the discriminators, gives
each side an Adam optimiser and, with `resume`, continues the checkpoint at `out` (its config,
networks, optimisers, step and best score). `train_gan` validates the starting weights of a fresh
run, then runs the steps: each draws its batch from a generator seeded by (seed, step), so a
resumed run draws exactly the batches the uninterrupted run would have drawn. It logs the losses,
validates, checkpoints and writes a summary beside the checkpoint:

    CKPT                     the latest training state (networks, optimisers, config)
    <stem>_best.pt           generator weights of the best validation step (what ships), with config
    <stem>_log.csv           losses per logged step
    <stem>_val.csv           validation metrics per evaluation
    <stem>_samples/          image grids of fixed validation examples
    <stem>_summary.json      the end of the run (what the CLI prints)
"""
from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from face3d.errors import FaceSynthError
from face3d.image_io import atomic_write_bytes, save_png
from ganrefine.identity import IdentityEncoder
from ganrefine.weights import read_plain_torch_file, save_torch_atomic

#: Adam's betas of both sides (pix2pix's).
ADAM_BETAS = (0.5, 0.999)


# ------------------------------------------------------------------------------------------------
# Identity


@dataclass
class GanTrainConfig:
    """The settings both GAN training runs share; `TrainConfig` (refiner) and `CapgTrainConfig`
    (CAPG-GAN) add their own."""

    steps: int = 2000
    batch: int = 8
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    pixel_weight: float = 1.0
    outside_weight: float = 0.25      # pixel-loss weight off the face (hair, background)
    adv_weight: float = 0.01          # per discriminator
    identity_weight: float = 0.1
    tv_weight: float = 1e-4
    seed: int = 0
    log_every: int = 10
    eval_every: int = 200
    checkpoint_every: int = 100
    threads: int | None = None
    device: str = "cpu"               # where the networks train (a torch device; `--device`, face3d.devices)


def on_device(batch: dict, device: torch.device) -> dict:
    """A batch of tensors (`PairSet.batch`, `PoseSet.images`) on `device`: the data stay on the CPU,
    each step's batch moves."""
    return {k: v.to(device) for k, v in batch.items()}


def identity_embeddings(encoder, images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
    """dlib descriptors of (B, 3, S, S) 0..1 images aligned by the given landmarks (differentiable)."""
    return encoder.embed(images * 255.0, landmarks, quantize=False)


def frozen_identity_encoder(device: torch.device | str = "cpu"):
    """dlib's face-recognition ResNet (torch port) on `device` with gradients off: a loss, never trained."""
    encoder = IdentityEncoder.load(device=device)
    for p in encoder.parameters():
        p.requires_grad_(False)
    return encoder


def identity_loss(encoder, images: torch.Tensor, targets: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
    """Mean descriptor distance of `images` to their `targets`, both aligned by the same landmarks;
    the gradient flows through `images` only."""
    with torch.no_grad():
        e_t = identity_embeddings(encoder, targets, landmarks)
    return (identity_embeddings(encoder, images, landmarks) - e_t).norm(dim=-1).mean()


def identity_and_perceptual_losses(encoder, images: torch.Tensor, targets: torch.Tensor,
                                   landmarks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(`identity_loss`, perceptual loss) of `images` against their `targets` (both aligned by the
    same landmarks) from one pass of the identity network: the descriptor is its last feature map
    pooled (`DlibFaceResNet.features`). The perceptual loss: per feature map the mean L1 between
    the two images' features, divided by the targets' mean absolute feature so that every layer
    counts alike, averaged over the maps. Unlike the identity loss, which compares two 128-d
    descriptors, it asks for the photo's texture and local structure. Gradients flow through
    `images` only."""
    with torch.no_grad():
        f_t = encoder.features(targets * 255.0, landmarks, quantize=False)
        e_t = encoder.net.descriptor(f_t)
    f_i = encoder.features(images * 255.0, landmarks, quantize=False)
    identity = (encoder.net.descriptor(f_i) - e_t).norm(dim=-1).mean()
    perceptual = sum((a - b).abs().mean() / b.abs().mean().clamp(min=1e-6) for a, b in zip(f_i, f_t)) / len(f_t)
    return identity, perceptual


# ------------------------------------------------------------------------------------------------
# Configs, checkpoints and files


def config_from_dict(cls, d: dict):
    """A training config of class `cls` from its `asdict` form; a nested dataclass field (the
    generator's architecture) is rebuilt from its dict, or takes its default when absent."""
    d = dict(d)
    for f in fields(cls):
        if f.name in d and f.default_factory is not MISSING and is_dataclass(f.default_factory()):
            d[f.name] = type(f.default_factory())(**d[f.name])
    return cls(**d)


def open_checkpoint(out: Path, resume: bool, fmt: str, what: str) -> dict | None:
    """The checkpoint to continue (`--resume`), None for a fresh run; refuses to overwrite one.
    It is read like weights (`read_plain_torch_file`): tensors and plain data only."""
    if out.exists():
        if not resume:
            raise FaceSynthError(f"{out} exists: pass --resume to continue it, or choose another --out")
        ck = read_plain_torch_file(out, f"not a {what} training checkpoint")
        if not isinstance(ck, dict) or ck.get("format") != fmt:
            raise FaceSynthError(f"{out}: not a {what} training checkpoint")
        return ck
    if resume:
        raise FaceSynthError(f"{out}: nothing to resume")
    return None


def run_files(out: Path) -> tuple[Path, Path, Path, Path]:
    """What a run writes beside its checkpoint `out`: best weights, loss log, validation log, samples folder."""
    stem = out.with_suffix("")
    return Path(f"{stem}_best.pt"), Path(f"{stem}_log.csv"), Path(f"{stem}_val.csv"), Path(f"{stem}_samples")


def append_csv(path: Path, row: dict) -> None:
    """One row; an existing log keeps its own columns (a run resumed from an older version that
    logged fewer fields must not get rows longer than its header)."""
    new = not path.exists()
    fields_ = list(row)
    if not new:
        with open(path, newline="") as f:
            fields_ = next(csv.reader(f), None) or fields_
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields_, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow(row)


def log_losses(path: Path, bar, row: dict) -> None:
    """One row of the loss log (loss tensors and floats rounded) and the progress bar's pixel /
    identity / D figures."""
    row = {k: (round(float(v.detach()), 6) if isinstance(v, torch.Tensor) else round(v, 6) if isinstance(v, float) else v)
           for k, v in row.items()}
    append_csv(path, row)
    bar.set_postfix(pix=f"{row['pixel']:.4f}", id=f"{row['identity']:.3f}", d=f"{row['d']:.3f}")


def record_validation(step: int, summary: dict, val_path: Path, samples: Path, grid: np.ndarray) -> None:
    """One row of the validation log and the sample grid of this step."""
    append_csv(val_path, {"step": step, **{k: round(v, 6) for k, v in summary.items()}})
    save_png(samples / f"step_{step:06d}.png", grid)


def image_grid(rows: list[torch.Tensor]) -> np.ndarray:
    """(R S, n S, 3) uint8: each of the R (n, 3, S, S) batches of 0..1 images side by side, one below the other."""
    rows = [torch.cat(list(x.detach().cpu()), dim=-1) for x in rows]
    grid = torch.cat(rows, dim=-2).permute(1, 2, 0).numpy()
    return (grid * 255 + 0.5).clip(0, 255).astype(np.uint8)


def write_summary(out: Path, steps: int, best: dict, t0: float) -> dict:
    """`<stem>_summary.json` at the end of a run (what the CLI prints), returned."""
    best_path, log_path, _, _ = run_files(out)
    summary = {"steps": steps, "best_step": best["step"], "best_score": best["score"], "weights": str(best_path),
               "checkpoint": str(out), "log": str(log_path), "seconds_this_run": round(time.time() - t0, 1)}
    atomic_write_bytes(out.with_name(f"{out.stem}_summary.json"), json.dumps(summary, indent=1).encode())
    return summary


# ------------------------------------------------------------------------------------------------
# Steps and schedule


def discriminator_step(loss: torch.Tensor, opt: torch.optim.Optimizer) -> None:
    """Backward and update for the discriminators' loss (their gradients from the last generator step cleared first)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def generator_step(loss: torch.Tensor, opt: torch.optim.Optimizer, step: int) -> None:
    """Backward and update for the generator's total loss; a non-finite loss stops the run with a
    one-line error (the last checkpoint stays as it was)."""
    if not torch.isfinite(loss):
        raise FaceSynthError(f"training diverged at step {step} (loss {float(loss.detach())}); resume from the last "
                             "checkpoint with a lower learning rate")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def learning_rate_scale(step: int, steps: int, decay_steps: int) -> float:
    """The factor on the base learning rates at `step` (1-based) of a `steps`-step run: 1, then a
    linear fall over the last `decay_steps` steps (pix2pix's schedule), reaching 1/decay_steps at
    the last step. It depends only on the step, so a resumed run continues the same schedule."""
    if decay_steps <= 0:
        return 1.0
    return min(1.0, (steps - step + 1) / decay_steps)


def set_learning_rate(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def on_schedule(step: int, cfg, validate, save_checkpoint) -> None:
    """Validate every `cfg.eval_every` steps and checkpoint every `cfg.checkpoint_every` (and after
    each validation, so the best score in the checkpoint matches the best weights), and at the end."""
    last = step == cfg.steps
    if step % cfg.eval_every == 0 or last:
        validate(step)
    if step % cfg.checkpoint_every == 0 or step % cfg.eval_every == 0 or last:
        save_checkpoint(step)


# ------------------------------------------------------------------------------------------------
# A run


@dataclass
class GanRun:
    """One training run: its config (the checkpoint's when resumed), networks, optimisers and position."""

    out: Path
    fmt: str                                      # the checkpoint's "format"
    cfg: object
    generator: torch.nn.Module
    discriminators: dict[str, torch.nn.Module]    # checkpoint entry -> network
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    resumed: bool = False
    start: int = 0
    best: dict = field(default_factory=lambda: {"score": math.inf, "step": None})

    def resume(self, ck: dict, arch: str, arch_what: str) -> None:
        """Continue checkpoint `ck`: its config (with this run's `steps`, `threads` and `device`),
        networks, optimisers, step and best score; refused when its `arch` config differs from this run's."""
        saved = config_from_dict(type(self.cfg), ck["config"])
        if asdict(getattr(saved, arch)) != asdict(getattr(self.cfg, arch)):
            raise FaceSynthError(f"{self.out}: was trained with another {arch_what} architecture")
        self.cfg = config_from_dict(type(self.cfg), {**ck["config"], "steps": self.cfg.steps,
                                                     "threads": self.cfg.threads, "device": self.cfg.device})
        self.generator.load_state_dict(ck["generator"])
        for name, disc in self.discriminators.items():
            disc.load_state_dict(ck[name])
        self.opt_g.load_state_dict(ck["opt_g"])
        self.opt_d.load_state_dict(ck["opt_d"])
        self.resumed, self.start, self.best = True, int(ck["step"]), ck["best"]

    def checkpoint(self, step: int) -> dict:
        """The training state at `step`, as the checkpoint file holds it."""
        return {"format": self.fmt, "config": asdict(self.cfg), "step": step, "best": self.best,
                "generator": self.generator.state_dict(),
                **{name: d.state_dict() for name, d in self.discriminators.items()},
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict()}


def start_gan_run(out: Path, cfg, resume: bool, *, fmt: str, what: str, arch: str, arch_what: str,
                  build: Callable[[], tuple[torch.nn.Module, dict]]) -> GanRun:
    """Seed torch with `cfg.seed`, `build()` the generator and the discriminators ({checkpoint entry:
    network}), an Adam optimiser for each side, and with `resume` continue the checkpoint at `out`
    (format `fmt`, named `what` in its errors; `cfg.<arch>`, the `arch_what` architecture, must match its own).
    With `cfg.threads` torch runs on that many threads; the networks train on `cfg.device` (built
    on the CPU from the seed, then moved, so a seed gives the same start on any device)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    with torch.device("cpu"):
        gen, discs = build()
    device = torch.device(cfg.device)
    gen.to(device)
    for d in discs.values():
        d.to(device)
    opt_g = torch.optim.Adam(gen.parameters(), lr=cfg.lr_g, betas=ADAM_BETAS)
    opt_d = torch.optim.Adam([p for d in discs.values() for p in d.parameters()], lr=cfg.lr_d, betas=ADAM_BETAS)
    run = GanRun(out, fmt, cfg, gen, discs, opt_g, opt_d)
    ck = open_checkpoint(out, resume, fmt, what)
    if ck is not None:
        run.resume(ck, arch, arch_what)
    return run


@dataclass
class GanTask:
    """What a GAN's loop does besides the shared bookkeeping.

    `train_step(step, g)` draws its batch with the generator `g`, updates the discriminators
    (`discriminator_step`) and returns the generator's total loss (which `train_gan` steps) and the
    losses to log; `evaluate()` is the validation summary of the current generator (its "score":
    lower is better), `sample_grid()` the image grid of its validation samples; `save_weights(path,
    generator, info)` writes the best weights. `data` names the pair cache, `count_key` the entry that records
    how many training examples there were (`train_examples`)."""

    desc: str
    data: Path
    train_examples: int
    count_key: str
    train_step: Callable[[int, torch.Generator], tuple[torch.Tensor, dict]]
    evaluate: Callable[[], dict]
    sample_grid: Callable[[], np.ndarray]
    save_weights: Callable[[Path, torch.nn.Module, dict], None]


def train_gan(run: GanRun, task: GanTask, progress: bool = True) -> dict:
    """The steps from `run.start` to `run.cfg.steps`, with validation, logs and checkpoints (see the module)."""
    cfg, out = run.cfg, run.out
    best_path, log_path, val_path, samples = run_files(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    samples.mkdir(parents=True, exist_ok=True)

    def save_checkpoint(step: int) -> None:
        save_torch_atomic(out, {**run.checkpoint(step), "data": str(task.data),
                                task.count_key: task.train_examples})

    def validate(step: int) -> None:
        s = task.evaluate()
        record_validation(step, s, val_path, samples, task.sample_grid())
        if s["score"] < run.best["score"]:
            run.best = {"score": s["score"], "step": step}
            task.save_weights(best_path, run.generator, {"step": step, "val": s, "train_config": asdict(cfg),
                                                         task.count_key: task.train_examples, "data": str(task.data)})

    if run.start == 0:
        validate(0)  # the starting weights: the baseline row, which the run must beat to replace them
    t0 = time.time()
    bar = tqdm(total=cfg.steps, initial=run.start, desc=task.desc, unit="step", disable=not progress)
    for step in range(run.start + 1, cfg.steps + 1):
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        loss, losses = task.train_step(step, g)
        generator_step(loss, run.opt_g, step)
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.steps:
            log_losses(log_path, bar, {"step": step, "seconds": round(time.time() - t0, 1), "g_total": loss, **losses})
        on_schedule(step, cfg, validate, save_checkpoint)
    bar.close()
    if run.start >= cfg.steps:  # nothing left to do: the checkpoint still records this run's steps
        save_checkpoint(run.start)
    return write_summary(out, cfg.steps, run.best, t0)
