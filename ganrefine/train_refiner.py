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
    adv       LSGAN against a patch discriminator conditioned on the render (`disc_scales` of them,
              pix2pixHD's multi-scale discriminator, when more than 1)
    fm        pix2pixHD's feature matching: L1 between the discriminators' features of the photo and
              of the output (`feature_matching_weight`, 0 by default)
    perceptual  L1 between the identity network's features of the output and of the photo
              (`perceptual_weight`, 0 by default; `ganrefine.training.identity_and_perceptual_losses`)
    identity  dlib descriptor distance between output and photo (the torch port, frozen)
    tv        total variation
With `keep_seen` every loss, the discriminators and the validation see the output as a whole-photo
`--method hybrid` view shows it (`refined_output`): the render where the texture confidence says the
photo saw the head (`ganrefine.hybrid.SEEN_CONFIDENCE`), the generator's output on the rest of the
head, the photo off the head; the generator's capacity goes where the view shows what the photo
never saw.
Every step draws its batch from a generator seeded by (seed, step), so a resumed run draws exactly
the batches the uninterrupted run would have drawn.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from face3d.errors import FaceSynthError
from ganrefine.metrics import masked_l1, masked_ssim
from ganrefine.pairs import TrainingPair
from ganrefine.hybrid import SEEN_CONFIDENCE, SEEN_FEATHER
from ganrefine.refiner import (MultiScaleDiscriminator, PatchDiscriminator, RefinerConfig, RefinerGenerator,
                               feature_matching_loss, lsgan_loss, mirror_landmarks, multiscale_l1, seen_render_weights,
                               symmetry_loss, total_variation)
from ganrefine.training import (GanTrainConfig, GanTask, discriminator_step, frozen_identity_encoder, identity_embeddings,
                                identity_and_perceptual_losses, identity_loss, image_grid, learning_rate_scale,
                                on_device, set_learning_rate, start_gan_run, train_gan)
from ganrefine.weights import CHECKPOINT_FORMAT, load_refiner, save_weights


@dataclass
class TrainConfig(GanTrainConfig):
    symmetry_weight: float = 0.05
    frontal_asymmetry: float = 0.06   # |nose - eye-centre| / eye distance below this counts as frontal
    val_pairs: int = 100              # the first held-out identities: checkpoint selection only
    init: str | None = None           # generator weights to start from (fine-tuning); None: random
    lr_decay_steps: int = 0           # both learning rates fall linearly to 0 over the run's last N steps (0: constant)
    disc_scales: int = 1              # patch discriminators at 1, 1/2, 1/4 ... of the size (pix2pixHD)
    feature_matching_weight: float = 0.0
    perceptual_weight: float = 0.0
    keep_seen: bool = False           # losses on the output composed as --method hybrid composes it
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


def refined_output(generator: RefinerGenerator, b: dict, keep_seen: bool) -> torch.Tensor:
    """The generator's output on batch `b`; with `keep_seen`, composed as `--method hybrid` composes a
    view over the photo: the render where the photo saw the head (`seen_render_weights` at
    `SEEN_CONFIDENCE`, `SEEN_FEATHER`), the generator's output on the rest of the head, and off the
    head (by the render's head mask) the photo itself, as a whole-photo view shows the photo's own
    surroundings there. The discriminators then judge the head alone: with the generator's guess of
    the background they told it from the photo's by the background."""
    out = generator(refiner_inputs(b), b["landmarks"])
    if not keep_seen:
        return out
    keep = seen_render_weights(b["confidence"], b["mask"], SEEN_CONFIDENCE, SEEN_FEATHER)
    head = keep * b["render"] + (1 - keep) * out
    return b["mask"] * head + (1 - b["mask"]) * b["target"]


def build_discriminator(cfg: TrainConfig) -> torch.nn.Module:
    """The conditional patch discriminator of a run: one (`disc_scales` 1, the shipped weights'
    training) or pix2pixHD's multi-scale set."""
    if cfg.disc_scales <= 1:
        return PatchDiscriminator(in_channels=6)
    return MultiScaleDiscriminator(cfg.disc_scales, in_channels=6)


def _per_scale(disc: torch.nn.Module, *args, **kwargs) -> list:
    """`disc(*args, **kwargs)` as a list over scales (a single patch discriminator is one scale)."""
    out = disc(*args, **kwargs)
    return out if isinstance(disc, MultiScaleDiscriminator) else [out]


def frontal_flags(landmarks: torch.Tensor, threshold: float) -> torch.Tensor:
    """Near-frontal samples: the nose tip sits midway between the outer eye corners."""
    left, right, nose = landmarks[:, 36], landmarks[:, 45], landmarks[:, 30]
    eye = (right - left).norm(dim=-1).clamp(min=1.0)
    return ((nose[:, 0] - 0.5 * (left[:, 0] + right[:, 0])).abs() / eye) < threshold


# ------------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def evaluate_refiner(generator: RefinerGenerator, data: PairSet, encoder, batch: int = 32,
                     keep_seen: bool = False) -> dict:
    """Per-pair L1, SSIM (over the head the render covers) and identity distance to the photo, for
    the raw render and the refined output (with `keep_seen`, composed as `refined_output` composes
    it). Identity uses the same model-landmark alignment for all three images, so the comparison is
    not confounded by landmark detection on renders."""
    generator.eval()
    device = next(generator.parameters()).device
    rows = {k: [] for k in ("l1_render", "l1_refined", "ssim_render", "ssim_refined", "id_render", "id_refined")}
    for s in range(0, len(data), batch):
        idx = torch.arange(s, min(s + batch, len(data)), device="cpu")   # the data stay on the CPU
        b = on_device(data.batch(idx), device)
        out = refined_output(generator, b, keep_seen)
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
    return {k: torch.cat(v).cpu().numpy() for k, v in rows.items()}


def summarise(per_pair: dict) -> dict:
    s = {f"{k}_mean": float(np.mean(v)) for k, v in per_pair.items()}
    s.update({f"{k}_median": float(np.median(v)) for k, v in per_pair.items()})
    s["l1_reduction"] = 1 - s["l1_refined_mean"] / s["l1_render_mean"]
    s["id_reduction"] = 1 - s["id_refined_mean"] / s["id_render_mean"]
    s["ssim_gain"] = s["ssim_refined_mean"] - s["ssim_render_mean"]
    # selection score: relative L1 and relative identity distance, equally weighted (lower is better)
    s["score"] = 0.5 * (s["l1_refined_mean"] / s["l1_render_mean"] + s["id_refined_mean"] / s["id_render_mean"])
    return s


def sample_grid(generator: RefinerGenerator, data: PairSet, n: int = 8, keep_seen: bool = False) -> np.ndarray:
    """(3 S, n S, 3) uint8: rows render, refined, photo for the first n pairs of `data`."""
    with torch.no_grad():
        generator.eval()
        b = on_device(data.batch(torch.arange(min(n, len(data)), device="cpu")), next(generator.parameters()).device)
        out = refined_output(generator, b, keep_seen)
        generator.train()
    return image_grid([b["render"], out, b["target"]])


# ------------------------------------------------------------------------------------------------
# The losses of one step


def discriminator_loss(disc: torch.nn.Module, b: dict, out_img: torch.Tensor) -> torch.Tensor:
    """LSGAN loss of the patch discriminator(s): the photo is real, the refined render fake (both
    conditioned on the render); the mean over the scales."""
    real = _per_scale(disc, b["target"], b["render"])
    fake = _per_scale(disc, out_img.detach(), b["render"])
    return sum(0.5 * (lsgan_loss(r, True) + lsgan_loss(f, False)) for r, f in zip(real, fake)) / len(real)


def generator_losses(out_img: torch.Tensor, b: dict, disc: torch.nn.Module, encoder, cfg: TrainConfig) -> dict:
    """The generator's losses on batch `b` (module docstring), each unweighted, and `total`, their
    sum weighted by `cfg`."""
    weight = b["mask"] + cfg.outside_weight * (1 - b["mask"])
    frontal = frontal_flags(b["landmarks"], cfg.frontal_asymmetry)
    zero = out_img.new_zeros(())
    if cfg.feature_matching_weight > 0:
        with torch.no_grad():
            real = _per_scale(disc, b["target"], b["render"], features=True)
        fake = _per_scale(disc, out_img, b["render"], features=True)
        adv = sum(lsgan_loss(f[-1], True) for f in fake) / len(fake)
        fm = feature_matching_loss(real, fake)
    else:
        scores = _per_scale(disc, out_img, b["render"])
        adv = sum(lsgan_loss(f, True) for f in scores) / len(scores)
        fm = zero
    if cfg.perceptual_weight > 0:   # both from one pass of the identity network
        identity, perceptual = identity_and_perceptual_losses(encoder, out_img, b["target"], b["landmarks"])
    else:
        identity, perceptual = identity_loss(encoder, out_img, b["target"], b["landmarks"]), zero
    losses = {
        "pixel": multiscale_l1(out_img, b["target"], weight),
        "symmetry": symmetry_loss(out_img[frontal], b["mask"][frontal]) if bool(frontal.any()) else zero,
        "adv": adv,
        "fm": fm,
        "perceptual": perceptual,
        "identity": identity,
        "tv": total_variation(out_img),
    }
    losses["total"] = (cfg.pixel_weight * losses["pixel"] + cfg.symmetry_weight * losses["symmetry"]
                       + cfg.adv_weight * losses["adv"] + cfg.feature_matching_weight * losses["fm"]
                       + cfg.perceptual_weight * losses["perceptual"] + cfg.identity_weight * losses["identity"]
                       + cfg.tv_weight * losses["tv"])
    losses["frontal"] = int(frontal.sum())
    return losses


# ------------------------------------------------------------------------------------------------
# The loop


def train_refiner(data_dir: Path, out: Path, cfg: TrainConfig, resume: bool = False, progress: bool = True) -> dict:
    data_dir, out = Path(data_dir), Path(out)
    train_files = pair_files(data_dir / "train")
    if not train_files:
        raise FaceSynthError(f"{data_dir}: no pairs under train/ (run `facesynth make-pairs` first)")
    val_files = validation_files(data_dir, cfg.val_pairs)

    run = start_gan_run(out, cfg, resume, fmt=CHECKPOINT_FORMAT, what="refiner", arch="refiner",
                        arch_what="refiner", build=lambda: (RefinerGenerator(cfg.refiner), {"discriminator": build_discriminator(cfg)}))
    cfg, gen, disc = run.cfg, run.generator, run.discriminators["discriminator"]
    if not run.resumed and cfg.init:
        # a fresh run from trained weights (the discriminator and optimisers start anew): step 0's
        # validation row is then the starting weights' score, which the run must beat to replace them.
        # The weights must fit this run's generator; settings without weights of their own (the
        # local patches' feather) may differ
        init, _ = load_refiner(cfg.init)
        own = {k: tuple(v.shape) for k, v in gen.state_dict().items()}
        if {k: tuple(v.shape) for k, v in init.state_dict().items()} != own:
            raise FaceSynthError(f"{cfg.init}: a refiner of another architecture than this run's")
        gen.load_state_dict(init.state_dict())

    train = PairSet.load(train_files, progress=progress)
    val = PairSet.load(val_files, progress=False)
    device = torch.device(cfg.device)
    encoder = frozen_identity_encoder(device)

    def train_step(step: int, g: torch.Generator) -> tuple[torch.Tensor, dict]:
        idx = torch.randint(len(train), (cfg.batch,), generator=g)      # drawn on the CPU: the same batches anywhere
        flip = torch.rand(cfg.batch, generator=g) < 0.5
        b = on_device(train.batch(idx, flip), device)
        scale = learning_rate_scale(step, cfg.steps, cfg.lr_decay_steps)
        set_learning_rate(run.opt_g, cfg.lr_g * scale)
        set_learning_rate(run.opt_d, cfg.lr_d * scale)
        out_img = refined_output(gen, b, cfg.keep_seen)
        d_loss = discriminator_loss(disc, b, out_img)
        discriminator_step(d_loss, run.opt_d)
        losses = generator_losses(out_img, b, disc, encoder, cfg)
        logged = {k: losses[k] for k in ("pixel", "symmetry", "adv", "fm", "perceptual", "identity", "tv")}
        return losses["total"], {**logged, "d": d_loss, "frontal": losses["frontal"], "lr_g": cfg.lr_g * scale}

    task = GanTask(desc="train-refiner", data=data_dir, train_examples=len(train), count_key="train_pairs",
                   train_step=train_step, evaluate=lambda: summarise(evaluate_refiner(gen, val, encoder, keep_seen=cfg.keep_seen)),
                   sample_grid=lambda: sample_grid(gen, val, keep_seen=cfg.keep_seen), save_weights=save_weights)
    return train_gan(run, task, progress)
