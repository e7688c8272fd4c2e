"""Training the refiner on Rotate-and-Render pairs: one plain loop, checkpoints that carry their config.

    facesynth train-refiner --data CACHE --steps N --out CKPT [--resume | --init WEIGHTS] [--identity-weight W]

CACHE is what `facesynth make-pairs` wrote (`train/`, `heldout/`, `split.json`). The held-out pairs
are split in two fixed halves: `val` (checkpoint selection) and `test` (the reported figures, never
looked at during training). Files next to CKPT:

    CKPT                     the latest training state (generator, discriminator, optimisers, config)
    <stem>_best.pt           generator weights of the best validation step (what ships), with config
    <stem>_log.csv           losses per logged step
    <stem>_val.csv           validation metrics per evaluation
    <stem>_samples/          image grids: render | refined | real photo, for fixed validation pairs

Losses of the generator (each weighted by `TrainConfig` and logged):
    pixel     multi-scale L1 (32, 64, 128 px) against the photo; weight 1 on the rendered head and
              `outside_weight` elsewhere, so hair and background are learnt without drowning the face
    symmetry  TP-GAN's symmetry loss, on the near-frontal samples only
    adv       LSGAN against a patch discriminator conditioned on the render
    identity  dlib descriptor distance between output and photo (the torch port, frozen)
    tv        total variation
Every step draws its batch from a generator seeded by (seed, step), so a resumed run draws exactly
the batches the uninterrupted run would have drawn.
"""
from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from face3d.errors import FaceSynthError
from ganrefine.refiner import (PatchDiscriminator, RefinerConfig, RefinerGenerator, lsgan_loss, mirror_landmarks,
                               multiscale_l1, symmetry_loss, total_variation)

CHECKPOINT_FORMAT = "facesynth-refiner-train/1"
WEIGHTS_FORMAT = "facesynth-refiner/1"


@dataclass
class TrainConfig:
    steps: int = 2000
    batch: int = 8
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    pixel_weight: float = 1.0
    outside_weight: float = 0.25      # pixel-loss weight off the rendered head (hair, background)
    symmetry_weight: float = 0.05
    adv_weight: float = 0.01
    identity_weight: float = 0.1
    tv_weight: float = 1e-4
    frontal_asymmetry: float = 0.06   # |nose - eye-centre| / eye distance below this counts as frontal
    seed: int = 0
    log_every: int = 10
    eval_every: int = 200
    checkpoint_every: int = 100
    val_pairs: int = 100              # the first held-out identities: checkpoint selection only
    threads: int | None = None
    init: str | None = None           # generator weights to start from (fine-tuning); None: random
    lr_decay_steps: int = 0           # both learning rates fall linearly to 0 over the run's last N steps (0: constant)
    refiner: RefinerConfig = field(default_factory=RefinerConfig)


# ------------------------------------------------------------------------------------------------
# Data


@dataclass
class PairSet:
    """Pairs held in memory, channels-first: uint8 images, float16 maps."""

    render: torch.Tensor       # (N, 3, S, S) uint8
    target: torch.Tensor       # (N, 3, S, S) uint8
    confidence: torch.Tensor   # (N, 1, S, S) float16
    mask: torch.Tensor         # (N, 1, S, S) float16
    landmarks: torch.Tensor    # (N, 68, 2) float32 pixels
    names: list[str]

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def load(cls, files: list[Path], progress: bool = False) -> "PairSet":
        from tqdm import tqdm

        from ganrefine.pairs import TrainingPair

        if not files:
            raise FaceSynthError("no training pairs found")
        r, t, c, m, lm = [], [], [], [], []
        for f in tqdm(files, desc="loading pairs", unit="pair", disable=not progress):
            p = TrainingPair.load(f)
            r.append(p.render)
            t.append(p.target)
            c.append(p.confidence)
            m.append(p.mask)
            lm.append(p.landmarks)
        chw = lambda a: torch.from_numpy(np.stack(a)).permute(0, 3, 1, 2).contiguous()  # noqa: E731
        return cls(render=chw(r), target=chw(t), confidence=torch.from_numpy(np.stack(c))[:, None].half(),
                   mask=torch.from_numpy(np.stack(m))[:, None].half(), landmarks=torch.from_numpy(np.stack(lm)).float(),
                   names=[f"{f.parent.name}/{f.stem}" for f in files])

    def batch(self, idx: torch.Tensor, flip: torch.Tensor | None = None) -> dict:
        """Float tensors (0..1 images) for the samples `idx`, mirrored where `flip` is True."""
        b = {"render": self.render[idx].float() / 255, "target": self.target[idx].float() / 255,
             "confidence": self.confidence[idx].float(), "mask": self.mask[idx].float(),
             "landmarks": self.landmarks[idx].clone()}
        if flip is not None and bool(flip.any()):
            size = b["render"].shape[-1]
            for k in ("render", "target", "confidence", "mask"):
                b[k][flip] = torch.flip(b[k][flip], dims=[-1])
            b["landmarks"][flip] = mirror_landmarks(b["landmarks"][flip], size)
        return b


def pair_files(folder: Path) -> list[Path]:
    return sorted(Path(folder).glob("*/*.npz"))


def split_heldout(files: list[Path], val_pairs: int) -> tuple[list[Path], list[Path]]:
    """(val, test): the held-out pairs in a fixed order, the first `val_pairs` for selection."""
    return files[:val_pairs], files[val_pairs:]


def validation_files(data_dir: Path, val_pairs: int) -> list[Path]:
    """The pairs that select checkpoints (and soups): the first `val_pairs` of `data_dir/heldout/`."""
    val_files, _ = split_heldout(pair_files(Path(data_dir) / "heldout"), val_pairs)
    if not val_files:
        raise FaceSynthError(f"{data_dir}: no held-out pairs under heldout/ for validation")
    return val_files


def refiner_inputs(b: dict) -> torch.Tensor:
    return torch.cat([b["render"], b["confidence"], b["mask"]], dim=1)


def frontal_flags(landmarks: torch.Tensor, threshold: float) -> torch.Tensor:
    """Near-frontal samples: the nose tip sits midway between the outer eye corners."""
    left, right, nose = landmarks[:, 36], landmarks[:, 45], landmarks[:, 30]
    eye = (right - left).norm(dim=-1).clamp(min=1.0)
    return ((nose[:, 0] - 0.5 * (left[:, 0] + right[:, 0])).abs() / eye) < threshold


# ------------------------------------------------------------------------------------------------
# Identity


def identity_embeddings(encoder, images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
    """dlib descriptors of (B, 3, S, S) 0..1 images aligned by the given landmarks (differentiable)."""
    return encoder.embed(images * 255.0, landmarks, quantize=False)


def frozen_identity_encoder():
    """dlib's face-recognition ResNet (torch port) with gradients off: a loss, never trained."""
    from ganrefine.identity import IdentityEncoder

    encoder = IdentityEncoder.load()
    for p in encoder.parameters():
        p.requires_grad_(False)
    return encoder


def identity_loss(encoder, images: torch.Tensor, targets: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
    """Mean descriptor distance of `images` to their `targets`, both aligned by the same landmarks;
    the gradient flows through `images` only."""
    with torch.no_grad():
        e_t = identity_embeddings(encoder, targets, landmarks)
    return (identity_embeddings(encoder, images, landmarks) - e_t).norm(dim=-1).mean()


# ------------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def evaluate_refiner(generator: RefinerGenerator, data: PairSet, encoder, batch: int = 32) -> dict:
    """Per-pair L1, SSIM (over the head the render covers) and identity distance to the photo, for
    the raw render and the refined output. Identity uses the same model-landmark alignment for all
    three images, so the comparison is not confounded by landmark detection on renders."""
    from ganrefine.metrics import masked_l1, masked_ssim

    generator.eval()
    rows = {k: [] for k in ("l1_render", "l1_refined", "ssim_render", "ssim_refined", "id_render", "id_refined")}
    for s in range(0, len(data), batch):
        idx = torch.arange(s, min(s + batch, len(data)))
        b = data.batch(idx)
        out = generator(refiner_inputs(b), b["landmarks"])
        head = (b["mask"] > 0.5).float()
        rows["l1_render"].append(masked_l1(b["render"], b["target"], head))
        rows["l1_refined"].append(masked_l1(out, b["target"], head))
        rows["ssim_render"].append(masked_ssim(b["render"], b["target"], head))
        rows["ssim_refined"].append(masked_ssim(out, b["target"], head))
        e_t = identity_embeddings(encoder, b["target"], b["landmarks"])
        e_r = identity_embeddings(encoder, b["render"], b["landmarks"])
        e_o = identity_embeddings(encoder, out, b["landmarks"])
        rows["id_render"].append((e_r - e_t).norm(dim=-1))
        rows["id_refined"].append((e_o - e_t).norm(dim=-1))
    generator.train()
    return {k: torch.cat(v).numpy() for k, v in rows.items()}


def summarise(per_pair: dict) -> dict:
    s = {f"{k}_mean": float(np.mean(v)) for k, v in per_pair.items()}
    s.update({f"{k}_median": float(np.median(v)) for k, v in per_pair.items()})
    s["l1_reduction"] = 1 - s["l1_refined_mean"] / s["l1_render_mean"]
    s["id_reduction"] = 1 - s["id_refined_mean"] / s["id_render_mean"]
    s["ssim_gain"] = s["ssim_refined_mean"] - s["ssim_render_mean"]
    # selection score: relative L1 and relative identity distance, equally weighted (lower is better)
    s["score"] = 0.5 * (s["l1_refined_mean"] / s["l1_render_mean"] + s["id_refined_mean"] / s["id_render_mean"])
    return s


def sample_grid(generator: RefinerGenerator, data: PairSet, n: int = 8) -> np.ndarray:
    """(3 S, n S, 3) uint8: rows render, refined, photo for the first n pairs of `data`."""
    with torch.no_grad():
        generator.eval()
        b = data.batch(torch.arange(min(n, len(data))))
        out = generator(refiner_inputs(b), b["landmarks"])
        generator.train()
    rows = [torch.cat(list(x), dim=-1) for x in (b["render"], out, b["target"])]
    grid = torch.cat(rows, dim=-2).permute(1, 2, 0).numpy()
    return (grid * 255 + 0.5).clip(0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------
# Checkpoints


def _config_from_dict(d: dict) -> TrainConfig:
    d = dict(d)
    d["refiner"] = RefinerConfig(**d.get("refiner", {}))
    return TrainConfig(**d)


def _save_atomic(path: Path, obj: dict) -> None:
    """torch.save to a temporary file, then rename: a killed run never leaves half a checkpoint.
    `obj` holds tensors and plain data only (configs as `asdict` dicts): the loaders read with
    `weights_only=True` and refuse anything else."""
    import io

    from face3d.image_io import atomic_write_bytes

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def read_plain_torch_file(path: Path, not_what: str):
    """What `path` holds, read with `torch.load(weights_only=True)`: tensors and plain data (dicts,
    lists, tuples, str, int, float, bool, None) only, so a crafted file cannot run code while it is
    read. Anything else (pickled objects, a foreign or truncated file) is a one-line error
    "PATH: <not_what> (...)"."""
    import re
    import warnings

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


def append_csv(path: Path, row: dict) -> None:
    """One row; an existing log keeps its own columns (a run resumed from an older version that
    logged fewer fields must not get rows longer than its header)."""
    new = not path.exists()
    fields = list(row)
    if not new:
        with open(path, newline="") as f:
            fields = next(csv.reader(f), None) or fields
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
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


def run_files(out: Path) -> tuple[Path, Path, Path, Path]:
    """What a run writes beside its checkpoint `out`: best weights, loss log, validation log, samples folder."""
    stem = out.with_suffix("")
    return Path(f"{stem}_best.pt"), Path(f"{stem}_log.csv"), Path(f"{stem}_val.csv"), Path(f"{stem}_samples")


def generator_step(loss: torch.Tensor, opt: torch.optim.Optimizer, step: int) -> None:
    """Backward and update for the generator's total loss; a non-finite loss stops the run with a
    one-line error (the last checkpoint stays as it was)."""
    if not torch.isfinite(loss):
        raise FaceSynthError(f"training diverged at step {step} (loss {float(loss.detach())}); resume from the last "
                             "checkpoint with a lower learning rate")
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


def record_validation(step: int, summary: dict, val_path: Path, samples: Path, grid: np.ndarray) -> None:
    """One row of the validation log and the sample grid of this step."""
    from face3d.image_io import save_png

    append_csv(val_path, {"step": step, **{k: round(v, 6) for k, v in summary.items()}})
    save_png(samples / f"step_{step:06d}.png", grid)


def finish_run(bar, start: int, cfg, save_checkpoint, out: Path, best: dict, t0: float) -> dict:
    """Close the progress bar, checkpoint a run that had nothing left to do, write the summary."""
    bar.close()
    if start >= cfg.steps:
        save_checkpoint(start)
    return write_summary(out, cfg.steps, best, t0)


def write_summary(out: Path, steps: int, best: dict, t0: float) -> dict:
    """`<stem>_summary.json` at the end of a run (what the CLI prints), returned."""
    from face3d.image_io import atomic_write_bytes

    best_path, log_path, _, _ = run_files(out)
    summary = {"steps": steps, "best_step": best["step"], "best_score": best["score"], "weights": str(best_path),
               "checkpoint": str(out), "log": str(log_path), "seconds_this_run": round(time.time() - t0, 1)}
    atomic_write_bytes(out.with_name(f"{out.stem}_summary.json"), json.dumps(summary, indent=1).encode())
    return summary


def add_training_arguments(p, cfg_cls, data_help: str) -> None:
    """The flags that `train-refiner` and `train-capg` share."""
    from facesynth.cli import int_option

    p.add_argument("--data", required=True, metavar="DIR", help=data_help)
    p.add_argument("--steps", type=int_option("steps", 1), required=True, help="total training steps")
    p.add_argument("--out", required=True, metavar="CKPT", help="training checkpoint file (.pt); logs and samples go beside it")
    p.add_argument("--resume", action="store_true", help="continue the checkpoint at --out")
    p.add_argument("--batch", type=int_option("batch", 1), default=cfg_cls.batch, help=f"batch size (default {cfg_cls.batch})")
    p.add_argument("--eval-every", type=int_option("eval-every", 1), default=cfg_cls.eval_every,
                   help=f"validate and keep the best weights every N steps (default {cfg_cls.eval_every})")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights and the batch order (default 0)")
    p.add_argument("--threads", type=int_option("threads", 1), default=None, help="torch CPU threads (default: all cores)")


def run_training_command(args, cfg_cls, train, **extra) -> int:
    """`train-refiner` / `train-capg`: the config from the shared flags (and `extra` fields), the run, its one-line result."""
    cfg = cfg_cls(steps=args.steps, batch=args.batch, eval_every=args.eval_every, seed=args.seed, threads=args.threads,
                  **extra)
    s = train(Path(args.data), Path(args.out), cfg, resume=args.resume)
    print(f"best validation step {s['best_step']} (score {s['best_score']:.4f}); weights {s['weights']}")
    return 0


def save_weights(path: Path, generator: RefinerGenerator, info: dict) -> None:
    """The generator alone, with its architecture config: what `load_refiner` reads."""
    _save_atomic(path, {"format": WEIGHTS_FORMAT, "refiner_config": asdict(generator.cfg),
                        "state_dict": generator.state_dict(), **info})


def load_refiner(path: str | os.PathLike) -> tuple[RefinerGenerator, dict]:
    """A trained generator (eval mode) and its info from a `_best.pt` weights file or a training checkpoint."""
    ck = load_torch_file(path, (WEIGHTS_FORMAT, CHECKPOINT_FORMAT), "refiner")
    try:
        if ck["format"] == CHECKPOINT_FORMAT:
            cfg = RefinerConfig(**ck["config"]["refiner"])
            state = ck["generator"]
        else:
            cfg = RefinerConfig(**ck["refiner_config"])
            state = ck["state_dict"]
        g = RefinerGenerator(cfg)
        g.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # plain data, but no refiner's config and tensors
        raise FaceSynthError(f"{path}: not a refiner weights file (its config or tensors do not fit: "
                             f"{type(exc).__name__})") from None
    g.eval()
    info = {k: v for k, v in ck.items() if k not in ("state_dict", "generator", "discriminator", "opt_g", "opt_d")}
    return g, info


# ------------------------------------------------------------------------------------------------
# The loop


def train_refiner(data_dir: Path, out: Path, cfg: TrainConfig, resume: bool = False, progress: bool = True) -> dict:
    from tqdm import tqdm

    data_dir, out = Path(data_dir), Path(out)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    train_files = pair_files(data_dir / "train")
    if not train_files:
        raise FaceSynthError(f"{data_dir}: no pairs under train/ (run `facesynth make-pairs` first)")
    val_files = validation_files(data_dir, cfg.val_pairs)
    best_path, log_path, val_path, samples = run_files(out)

    torch.manual_seed(cfg.seed)
    gen = RefinerGenerator(cfg.refiner)
    disc = PatchDiscriminator(in_channels=6)
    opt_g = torch.optim.Adam(gen.parameters(), lr=cfg.lr_g, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr_d, betas=(0.5, 0.999))
    start, best = 0, {"score": math.inf, "step": None}
    ck = open_checkpoint(out, resume, CHECKPOINT_FORMAT, "refiner")
    if ck is not None:
        saved = _config_from_dict(ck["config"])
        if asdict(saved.refiner) != asdict(cfg.refiner):
            raise FaceSynthError(f"{out}: was trained with another refiner architecture")
        cfg = _config_from_dict({**ck["config"], "steps": cfg.steps, "threads": cfg.threads})
        gen.load_state_dict(ck["generator"])
        disc.load_state_dict(ck["discriminator"])
        opt_g.load_state_dict(ck["opt_g"])
        opt_d.load_state_dict(ck["opt_d"])
        start, best = int(ck["step"]), ck["best"]
    elif cfg.init:
        # a fresh run from trained weights (the discriminator and optimisers start anew): step 0's
        # validation row is then the starting weights' score, which the run must beat to replace them
        init, _ = load_refiner(cfg.init)
        if asdict(init.cfg) != asdict(cfg.refiner):
            raise FaceSynthError(f"{cfg.init}: a refiner of another architecture than this run's")
        gen.load_state_dict(init.state_dict())

    train = PairSet.load(train_files, progress=progress)
    val = PairSet.load(val_files, progress=False)
    encoder = frozen_identity_encoder()
    out.parent.mkdir(parents=True, exist_ok=True)
    samples.mkdir(parents=True, exist_ok=True)

    def save_checkpoint(step: int) -> None:
        _save_atomic(out, {"format": CHECKPOINT_FORMAT, "config": asdict(cfg), "step": step, "best": best,
                           "generator": gen.state_dict(), "discriminator": disc.state_dict(),
                           "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                           "data": str(data_dir), "train_pairs": len(train)})

    def validate(step: int) -> None:
        nonlocal best
        s = summarise(evaluate_refiner(gen, val, encoder))
        record_validation(step, s, val_path, samples, sample_grid(gen, val))
        if s["score"] < best["score"]:
            best = {"score": s["score"], "step": step}
            save_weights(best_path, gen, {"step": step, "val": s, "train_config": asdict(cfg),
                                          "train_pairs": len(train), "data": str(data_dir)})

    if start == 0:
        validate(0)  # the untrained generator returns the render itself: the baseline row (with --init: the start)
    t0 = time.time()
    bar = tqdm(total=cfg.steps, initial=start, desc="train-refiner", unit="step", disable=not progress)
    for step in range(start + 1, cfg.steps + 1):
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        idx = torch.randint(len(train), (cfg.batch,), generator=g)
        flip = torch.rand(cfg.batch, generator=g) < 0.5
        b = train.batch(idx, flip)
        scale = learning_rate_scale(step, cfg.steps, cfg.lr_decay_steps)
        set_learning_rate(opt_g, cfg.lr_g * scale)
        set_learning_rate(opt_d, cfg.lr_d * scale)
        x = refiner_inputs(b)
        out_img = gen(x, b["landmarks"])

        # discriminator
        opt_d.zero_grad(set_to_none=True)
        d_loss = 0.5 * (lsgan_loss(disc(b["target"], b["render"]), True)
                        + lsgan_loss(disc(out_img.detach(), b["render"]), False))
        d_loss.backward()
        opt_d.step()

        # generator
        opt_g.zero_grad(set_to_none=True)
        weight = b["mask"] + cfg.outside_weight * (1 - b["mask"])
        l_pix = multiscale_l1(out_img, b["target"], weight)
        frontal = frontal_flags(b["landmarks"], cfg.frontal_asymmetry)
        l_sym = symmetry_loss(out_img[frontal], b["mask"][frontal]) if bool(frontal.any()) else out_img.new_zeros(())
        l_adv = lsgan_loss(disc(out_img, b["render"]), True)
        l_id = identity_loss(encoder, out_img, b["target"], b["landmarks"])
        l_tv = total_variation(out_img)
        loss = (cfg.pixel_weight * l_pix + cfg.symmetry_weight * l_sym + cfg.adv_weight * l_adv
                + cfg.identity_weight * l_id + cfg.tv_weight * l_tv)
        generator_step(loss, opt_g, step)
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.steps:
            log_losses(log_path, bar, {"step": step, "seconds": round(time.time() - t0, 1), "g_total": loss,
                                       "pixel": l_pix, "symmetry": l_sym, "adv": l_adv, "identity": l_id, "tv": l_tv,
                                       "d": d_loss, "frontal": int(frontal.sum()),
                                       "lr_g": cfg.lr_g * scale})
        on_schedule(step, cfg, validate, save_checkpoint)
    return finish_run(bar, start, cfg, save_checkpoint, out, best, t0)


# ------------------------------------------------------------------------------------------------
# CLI


def add_train_refiner_parser(sub) -> None:
    from facesynth.cli import float_option, int_option

    p = sub.add_parser("train-refiner", help="train the refiner on `make-pairs` output")
    add_training_arguments(p, TrainConfig, "pair cache written by `facesynth make-pairs`")
    p.add_argument("--init", metavar="WEIGHTS", default=None,
                   help="start the generator from these refiner weights (e.g. assets/refiner/refiner.pt) instead of "
                        "random ones; a fresh run only (not with --resume)")
    p.add_argument("--identity-weight", type=float_option("identity-weight", 0), default=None, metavar="W",
                   help=f"weight of the identity loss (default {TrainConfig.identity_weight}); a fresh run only (a resumed "
                        "run keeps its checkpoint's)")
    p.add_argument("--lr-decay-steps", type=int_option("lr-decay-steps", 0), default=None, metavar="N",
                   help="let both learning rates fall linearly to zero over the last N steps (default "
                        f"{TrainConfig.lr_decay_steps}: constant); a fresh run only (a resumed run keeps its checkpoint's)")
    p.set_defaults(func=run_train_refiner)


def run_train_refiner(args) -> int:
    extra = {"init": args.init}
    # settings of a fresh run's config: a resumed run takes its checkpoint's
    for flag, key, what in (("--identity-weight", "identity_weight", "loss"), ("--lr-decay-steps", "lr_decay_steps", "schedule")):
        value = getattr(args, key)
        if value is None:
            continue
        if args.resume:
            raise FaceSynthError(f"{flag} sets a fresh run's {what}; a resumed run keeps its checkpoint's")
        extra[key] = value
    if args.init is not None:
        if args.resume:
            raise FaceSynthError("--init starts a fresh run; --resume continues one: pass one of them")
        if not Path(args.init).is_file():
            raise FaceSynthError(f"--init {args.init}: no such file")
    return run_training_command(args, TrainConfig, train_refiner, **extra)
