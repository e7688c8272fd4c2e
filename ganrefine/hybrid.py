"""The hybrid method: the 3D stage's views, then the trained refiner on each (`--method hybrid`).

The refiner works at its training size (128 px) on renders over the plain grey background it was
trained with. Views of another size are refined at 128 px and the refiner's *correction* (output
minus input) is upsampled and added to the full-size render, so a 256-px view keeps the render's
detail and gains the refiner's changes. With `--background photo` the refined head is composited
over the photo's own background, as the 3D method does. Off the head the views keep their plain or
photo background: the refiner's guesses of the unknown surroundings are a coloured blur, which
around the head read as a blurred "window" in the backdrop.

Where the photo saw the head well the render is kept as it is (`seen_weights`): texels seen with a
texture confidence of at least `SEEN_CONFIDENCE[1]` (the texture's own threshold for keeping a
texel's colour instead of its mirror's) show the render, those under `SEEN_CONFIDENCE[0]` (mirrored
from the other side, inpainted, seen at a grazing angle) show the refiner's output, linearly in
between, feathered so that no edge shows. The refiner, trained mostly with L1, smooths the skin that
the render copies sharply from the photo; compare's realism test told its output from real photos
more easily than the render (benchmarks/bench_compare.py); keeping the seen render removes that.
"""
from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from face3d.errors import FaceSynthError
from ganrefine.refiner import FlipAveraged
from ganrefine.weights import load_refiner

#: The shipped weights (see assets/refiner/MODEL_CARD.md); FACESYNTH_REFINER overrides.
DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "assets" / "refiner" / "refiner.pt"
PLAIN_BACKGROUND = 0.5
#: Texture confidence below which a head pixel shows the refiner's output and above which the
#: render's (`seen_weights`); 0.45 is `face3d.texture.TextureConfig.mirror_below`.
SEEN_CONFIDENCE = (0.2, 0.45)
#: Gaussian feather of the seen-render weights, as a fraction of the view size (1.5 px at 128 px).
SEEN_FEATHER = 1.5 / 128


@dataclass
class Refiner:
    """Trained refiner weights loaded for inference: `generator` is the flip-averaged generator
    (`ganrefine.refiner.FlipAveraged`), the file and its hash are what the manifest records."""

    generator: torch.nn.Module
    path: str
    sha256: str
    size: int
    keep_seen: tuple[float, float] | None = SEEN_CONFIDENCE   # None: the refiner's output on the whole head

    @property
    def inference(self) -> str:
        """How the weights are run ("flip-averaged" or "one-pass", and where the render is kept):
        part of what a resumed run or a cache must match besides the hash, derived from the
        generator and `keep_seen` so it cannot disagree with them."""
        passes = "flip-averaged" if isinstance(self.generator, FlipAveraged) else "one-pass"
        if self.keep_seen is None:
            return passes
        return f"{passes}, seen render kept (confidence {self.keep_seen[0]:g}-{self.keep_seen[1]:g})"

    def record(self) -> dict:
        """What the manifest says about the weights that made a view."""
        return {"refiner": os.path.basename(self.path), "refiner_sha256": self.sha256,
                "refiner_inference": self.inference}


_CACHE: dict[str, Refiner] = {}
_LOCK = threading.Lock()


def default_weights_path() -> Path:
    return Path(os.environ.get("FACESYNTH_REFINER") or DEFAULT_WEIGHTS)


def load_hybrid_refiner(path: str | os.PathLike | None = None, device: torch.device | str = "cpu") -> Refiner:
    """The refiner of `path` (default: the shipped weights) on `device`, loaded once per process
    and device (the file is read on the CPU, `weights_only`, then moved)."""
    p = Path(path) if path is not None else default_weights_path()
    key = f"{p.resolve()}|{torch.device(device)}"
    with _LOCK:
        if key not in _CACHE:
            if not p.is_file():
                raise FaceSynthError(f"refiner weights not found at {p} (use --method 3d, or --refiner FILE)")
            digest = hashlib.sha256(p.read_bytes()).hexdigest()
            gen, _ = load_refiner(p)
            # inference averages the output with that of the mirrored view (see FlipAveraged)
            _CACHE[key] = Refiner(FlipAveraged(gen).eval().to(device), str(p), digest, gen.cfg.size)
        return _CACHE[key]


@torch.no_grad()
def refine_images(refiner: Refiner, images: np.ndarray, confidence: np.ndarray, masks: np.ndarray,
                  landmarks: np.ndarray, batch: int = 32) -> np.ndarray:
    """Refine (B, S, S, 3) uint8 renders on the plain background -> (B, S, S, 3) uint8 photographs."""
    size = images.shape[1]
    work = refiner.size
    dev = next(refiner.generator.parameters()).device      # inputs go where the weights are
    out = np.empty_like(images)
    for s in range(0, len(images), batch):
        sl = slice(s, s + batch)
        rgb = torch.from_numpy(images[sl]).to(dev).permute(0, 3, 1, 2).float() / 255
        conf = torch.from_numpy(np.asarray(confidence[sl], np.float32)).to(dev)[:, None]
        mask = torch.from_numpy(np.asarray(masks[sl], np.float32)).to(dev)[:, None]
        lm = torch.from_numpy(np.asarray(landmarks[sl], np.float32)).to(dev)
        x = torch.cat([rgb, conf, mask], 1)
        if size != work:
            x = F.interpolate(x, size=(work, work), mode="bilinear", align_corners=False, antialias=True)
            lm = lm * (work / size)
        y = refiner.generator(x, lm)
        if size != work:
            delta = F.interpolate(y - x[:, :3], size=(size, size), mode="bilinear", align_corners=False)
            y = (rgb + delta).clamp(0, 1)
        out[sl] = (y.permute(0, 2, 3, 1).cpu().numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)
    return out


#: Around the pixels of an extra mesh (the teeth of an opened mouth) the render fades into the
#: refined image over twice this fraction of the crop size.
EXTRA_KEEP_FRACTION = 1 / 64


def extra_keep(extra_masks: np.ndarray, fraction: float = EXTRA_KEEP_FRACTION) -> np.ndarray:
    """(B, S, S) extra-mesh masks -> (B, S, S, 1) weights of the render: 1 on the mesh, falling to 0
    over 2 x `fraction` x S around it (the dark mouth socket between teeth and lips)."""
    m = torch.from_numpy(np.asarray(extra_masks, np.float32))[:, None]
    r = max(1, round(fraction * m.shape[-1]))
    grown = F.max_pool2d(m, 2 * r + 1, stride=1, padding=r)
    soft = F.avg_pool2d(grown, 2 * r + 1, stride=1, padding=r, count_include_pad=False)
    return torch.maximum(m, soft).permute(0, 2, 3, 1).numpy()


def seen_weights(confidence: np.ndarray, masks: np.ndarray, band: tuple[float, float] = SEEN_CONFIDENCE,
                 feather: float = SEEN_FEATHER) -> np.ndarray:
    """(B, S, S) texture confidence and head masks -> (B, S, S, 1) weights of the render: 0 off the
    head and where the confidence is under band[0], 1 over band[1], linear in between, blurred by a
    Gaussian of `feather` x S so that the render and the refined image meet without an edge."""
    lo, hi = band
    w = np.clip((np.asarray(confidence, np.float32) - lo) / (hi - lo), 0, 1) * (np.asarray(masks) > 0.5)
    sigma = feather * w.shape[-1]
    if sigma > 0:
        w = np.stack([cv2.GaussianBlur(np.ascontiguousarray(x, np.float32), (0, 0), sigma) for x in w])
    return w[..., None].astype(np.float32)


def refine_views(refiner: Refiner, views, background: np.ndarray | float = PLAIN_BACKGROUND) -> np.ndarray:
    """The refined images of a `face3d.render.RenderedViews` that was rendered over `background`.

    The refiner also paints the background (it learnt the photos' surroundings, which it cannot know,
    as a blur); only the head is kept, and the background the views were rendered over shows
    elsewhere. Where the views show an extra mesh
    (the teeth, gums and tongue of a mouth that an expression opened), the render is kept: the
    refiner learnt from photos of mostly closed mouths and greys the dark cavity, so that dlib then
    reads the lips of bearded faces as closed (benchmarks/bench_expressions.py --method hybrid). Where
    the photo saw the head (`Refiner.keep_seen`, `seen_weights`) the render is kept."""
    imgs = views.images
    alpha = views.masks[..., None].astype(np.float32)
    if isinstance(background, np.ndarray) or background != PLAIN_BACKGROUND:
        # undo the composite: the refiner was trained on heads over the plain grey background
        bg = background.astype(np.float32) if isinstance(background, np.ndarray) else np.float32(background * 255)
        plain = imgs.astype(np.float32) + (1 - alpha) * (PLAIN_BACKGROUND * 255 - bg)
        refined = refine_images(refiner, (plain + 0.5).clip(0, 255).astype(np.uint8), views.confidence,
                                views.masks, views.landmarks)
    else:
        bg = imgs.astype(np.float32)  # outside the head the render is the plain background
        refined = refine_images(refiner, imgs, views.confidence, views.masks, views.landmarks)
    comp = alpha * refined.astype(np.float32) + (1 - alpha) * bg
    if refiner.keep_seen is not None:
        # what the photo saw stays as sharp as the render; the refiner works where it did not see
        keep = seen_weights(views.confidence, views.masks, refiner.keep_seen)
        comp = keep * imgs.astype(np.float32) + (1 - keep) * comp
    if views.extra_masks is not None and views.extra_masks.any():
        keep = extra_keep(views.extra_masks)
        comp = keep * imgs.astype(np.float32) + (1 - keep) * comp
    return (comp + 0.5).clip(0, 255).astype(np.uint8)
