"""Training the CAPG-GAN baseline on real same-person LFW photo pairs (`facesynth make-pose-photos`).

    facesynth train-capg --data CACHE --steps N --out CKPT [--resume]

One plain loop like `train-refiner` (same checkpoint, log, sample and resume conventions): every
step draws `batch` train identities and two different photos of each (source, target), each
mirrored or not at random, from a generator seeded by (seed, step), so a resumed run is exact.

Losses of the generator (weighted by `CapgTrainConfig`, each logged):
    pixel     multi-scale L1 (32, 64, 128 px) against the real target photo; weight 1 on the
              target's face (its landmark hull) and `outside_weight` on hair and background
    adv_a     agent A, LSGAN on (output, source) vs (target, source): same person as the source?
    adv_b     agent B, LSGAN on (output, target heatmaps) vs (target, heatmaps): right pose?
    identity  dlib descriptor distance between output and target photo (torch port, frozen)
    tv        total variation

Validation: pairs of the first `val_identities` held-out identities (first photo -> second and
back); the remaining held-out identities are never looked at here (`benchmarks/` reports on them).
The baseline row "copy" takes the source photo itself as the prediction: a generator that only
copies its input scores 1.0 on the selection score (mean of L1 and identity distance relative to copy).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from face3d.errors import FaceSynthError
from ganrefine.capg_net import CapgConfig, CapgGenerator, face_weight, landmark_heatmaps
from ganrefine.metrics import masked_l1
from ganrefine.pose_pairs import PosePhoto
from ganrefine.refiner import PatchDiscriminator, lsgan_loss, mirror_landmarks, multiscale_l1, total_variation
from ganrefine.training import (GanTrainConfig, GanTask, discriminator_step, frozen_identity_encoder, identity_embeddings,
                                identity_loss, image_grid, on_device, start_gan_run, train_gan)
from ganrefine.weights import CAPG_CHECKPOINT_FORMAT, save_capg_weights


@dataclass
class CapgTrainConfig(GanTrainConfig):
    val_identities: int = 50
    capg: CapgConfig = field(default_factory=CapgConfig)


@dataclass
class PoseSet:
    """Aligned photos in memory with their identity index; channels-first uint8."""

    crop: torch.Tensor        # (N, 3, S, S) uint8
    landmarks: torch.Tensor   # (N, 68, 2)
    weight: torch.Tensor      # (N, 1, S, S) pixel-loss weight
    pose: torch.Tensor        # (N, 3)
    person: torch.Tensor      # (N,) identity index
    names: list[str]
    outside_weight: float

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def load(cls, folder: Path, identities: list[str] | None = None, outside_weight: float = 0.25,
             progress: bool = False) -> "PoseSet":
        folder = Path(folder)
        ids = identities if identities is not None else sorted(d.name for d in folder.iterdir() if d.is_dir())
        files, person = [], []
        for i, name in enumerate(ids):
            fs = sorted((folder / name).glob("*.npz"))
            if len(fs) >= 2:  # a person with one usable photo makes no pair
                files += fs
                person += [i] * len(fs)
        if not files:
            raise FaceSynthError(f"{folder}: no identity with two aligned photos (run `facesynth make-pose-photos`)")
        crops, lms, poses, weights = [], [], [], []
        for f in tqdm(files, desc="loading photos", unit="photo", disable=not progress):
            p = PosePhoto.load(f)
            crops.append(p.crop)
            lms.append(p.landmarks)
            poses.append(p.pose)
            weights.append(face_weight(p.landmarks, p.crop.shape[0], outside_weight))
        return cls(crop=torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous(),
                   landmarks=torch.from_numpy(np.stack(lms)).float(), weight=torch.from_numpy(np.stack(weights))[:, None],
                   pose=torch.from_numpy(np.stack(poses)).float(), person=torch.tensor(person),
                   names=[f"{f.parent.name}/{f.stem}" for f in files], outside_weight=outside_weight)

    def images(self, idx: torch.Tensor, flip: torch.Tensor | None = None) -> dict:
        """0..1 images, landmarks and weights of `idx`, mirrored where `flip` is True."""
        b = {"image": self.crop[idx].float() / 255, "landmarks": self.landmarks[idx].clone(),
             "weight": self.weight[idx].clone()}
        if flip is not None and bool(flip.any()):
            size = b["image"].shape[-1]
            for k in ("image", "weight"):
                b[k][flip] = torch.flip(b[k][flip], dims=[-1])
            b["landmarks"][flip] = mirror_landmarks(b["landmarks"][flip], size)
        return b

    def draw_pairs(self, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(source, target) indices: `n` random identities, two different photos of each."""
        people = torch.unique(self.person)
        chosen = people[torch.randint(len(people), (n,), generator=g)]
        src, tgt = [], []
        for p in chosen.tolist():
            members = torch.nonzero(self.person == p)[:, 0]
            perm = members[torch.randperm(len(members), generator=g)[:2]]
            src.append(perm[0])
            tgt.append(perm[1])
        return torch.stack(src), torch.stack(tgt)

    def fixed_pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every identity's first photo -> second and second -> first (evaluation)."""
        src, tgt = [], []
        for p in torch.unique(self.person).tolist():
            a, b = torch.nonzero(self.person == p)[:2, 0].tolist()
            src += [a, b]
            tgt += [b, a]
        return torch.tensor(src, device="cpu"), torch.tensor(tgt, device="cpu")


def heldout_identities(data_dir: Path) -> list[str]:
    info = json.loads((Path(data_dir) / "split.json").read_text())
    return list(info["heldout_identities"])


def split_val_test(data_dir: Path, val_identities: int) -> tuple[list[str], list[str]]:
    held = heldout_identities(data_dir)
    return held[:val_identities], held[val_identities:]


@torch.no_grad()
def evaluate_capg(generator: CapgGenerator, data: PoseSet, encoder, batch: int = 32) -> dict:
    """Per pair: L1 on the target's face and dlib distance to the target photo, for the generated view
    and for the copy baseline (the source photo itself); both aligned by the target's landmarks."""
    generator.eval()
    device = next(generator.parameters()).device
    src_idx, tgt_idx = data.fixed_pairs()
    rows = {k: [] for k in ("l1_copy", "l1_gan", "id_copy", "id_gan")}
    for s in range(0, len(src_idx), batch):
        src = on_device(data.images(src_idx[s:s + batch]), device)
        tgt = on_device(data.images(tgt_idx[s:s + batch]), device)
        out = generator(src["image"], landmark_heatmaps(tgt["landmarks"], src["image"].shape[-1]))
        face = (tgt["weight"] >= 1.0).float()
        rows["l1_copy"].append(masked_l1(src["image"], tgt["image"], face))
        rows["l1_gan"].append(masked_l1(out, tgt["image"], face))
        e_t = identity_embeddings(encoder, tgt["image"], tgt["landmarks"])
        rows["id_copy"].append((identity_embeddings(encoder, src["image"], src["landmarks"]) - e_t).norm(dim=-1))
        rows["id_gan"].append((identity_embeddings(encoder, out, tgt["landmarks"]) - e_t).norm(dim=-1))
    generator.train()
    return {k: torch.cat(v).cpu().numpy() for k, v in rows.items()}


def summarise_capg(per_pair: dict) -> dict:
    s = {f"{k}_mean": float(np.mean(v)) for k, v in per_pair.items()}
    s.update({f"{k}_median": float(np.median(v)) for k, v in per_pair.items()})
    s["score"] = 0.5 * (s["l1_gan_mean"] / s["l1_copy_mean"] + s["id_gan_mean"] / s["id_copy_mean"])
    return s


def sample_grid(generator: CapgGenerator, data: PoseSet, n: int = 8) -> np.ndarray:
    """(3 S, n S, 3) uint8: rows source, generated at the target's landmarks, real target."""
    src_idx, tgt_idx = data.fixed_pairs()
    with torch.no_grad():
        generator.eval()
        device = next(generator.parameters()).device
        src, tgt = on_device(data.images(src_idx[:n]), device), on_device(data.images(tgt_idx[:n]), device)
        out = generator(src["image"], landmark_heatmaps(tgt["landmarks"], src["image"].shape[-1]))
        generator.train()
    return image_grid([src["image"], out, tgt["image"]])


def train_capg(data_dir: Path, out: Path, cfg: CapgTrainConfig, resume: bool = False, progress: bool = True) -> dict:
    data_dir, out = Path(data_dir), Path(out)
    if not (data_dir / "split.json").is_file():
        raise FaceSynthError(f"{data_dir}: no split.json (run `facesynth make-pose-photos` first)")

    def build() -> tuple[CapgGenerator, dict]:
        gen = CapgGenerator(cfg.capg)
        nk = gen.e0[0][0].in_channels - 3
        return gen, {"disc_a": PatchDiscriminator(in_channels=6),         # (image, source)
                     "disc_b": PatchDiscriminator(in_channels=3 + nk)}    # (image, target heatmaps)

    run = start_gan_run(out, cfg, resume, fmt=CAPG_CHECKPOINT_FORMAT, what="CAPG-GAN", arch="capg",
                        arch_what="generator", build=build)
    cfg, gen = run.cfg, run.generator
    disc_a, disc_b = run.discriminators["disc_a"], run.discriminators["disc_b"]
    val_ids, _ = split_val_test(data_dir, cfg.val_identities)
    train = PoseSet.load(data_dir / "train", outside_weight=cfg.outside_weight, progress=progress)
    val = PoseSet.load(data_dir / "heldout", identities=val_ids, outside_weight=cfg.outside_weight)
    device = torch.device(cfg.device)
    encoder = frozen_identity_encoder(device)
    size = cfg.capg.size

    def train_step(step: int, g: torch.Generator) -> tuple[torch.Tensor, dict]:
        si, ti = train.draw_pairs(cfg.batch, g)                       # drawn on the CPU: the same pairs anywhere
        src = on_device(train.images(si, torch.rand(cfg.batch, generator=g) < 0.5), device)
        tgt = on_device(train.images(ti, torch.rand(cfg.batch, generator=g) < 0.5), device)
        heat = landmark_heatmaps(tgt["landmarks"], size)
        fake = gen(src["image"], heat)
        d_loss = 0.25 * (lsgan_loss(disc_a(tgt["image"], src["image"]), True)
                         + lsgan_loss(disc_a(fake.detach(), src["image"]), False)
                         + lsgan_loss(disc_b(tgt["image"], heat), True)
                         + lsgan_loss(disc_b(fake.detach(), heat), False))
        discriminator_step(d_loss, run.opt_d)

        l_pix = multiscale_l1(fake, tgt["image"], tgt["weight"])
        l_a = lsgan_loss(disc_a(fake, src["image"]), True)
        l_b = lsgan_loss(disc_b(fake, heat), True)
        l_id = identity_loss(encoder, fake, tgt["image"], tgt["landmarks"])
        l_tv = total_variation(fake)
        loss = (cfg.pixel_weight * l_pix + cfg.adv_weight * (l_a + l_b) + cfg.identity_weight * l_id
                + cfg.tv_weight * l_tv)
        return loss, {"pixel": l_pix, "adv_a": l_a, "adv_b": l_b, "identity": l_id, "tv": l_tv, "d": d_loss}

    task = GanTask(desc="train-capg", data=data_dir, train_examples=len(train), count_key="train_photos",
                   train_step=train_step, evaluate=lambda: summarise_capg(evaluate_capg(gen, val, encoder)),
                   sample_grid=lambda: sample_grid(gen, val), save_weights=save_capg_weights)
    return train_gan(run, task, progress)
