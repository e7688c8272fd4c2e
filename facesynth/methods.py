"""The three ways facesynth makes a view, in one registry that every command uses.

- `3d`: the 3D stage's render alone (the fitted, photo-textured head at the asked pose), the default;
- `hybrid`: that render passed through the trained refiner (`ganrefine.hybrid`);
- `gan`: the GAN-only baseline (CAPG-GAN, `ganrefine.capg`): the photo and the landmarks of the
  asked pose go through a U-Net; the fit only places those landmarks and the crop.

    maker = load_method("hybrid")              # weights loaded once per process
    images = maker.images(rec, image, model, views, poses, size, background)
    record = maker.record()                    # the weights' file and hash, for a manifest row
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from face3d.errors import FaceSynthError
from ganrefine.capg import load_default_capg, rotate_with_capg
from facesynth.options import DEFAULT_METHOD, METHODS
from ganrefine.hybrid import load_hybrid_refiner, refine_views

__all__ = ["DEFAULT_METHOD", "EDITS_3D", "METHODS", "ViewMaker", "check_method_edits", "load_method"]

#: the methods that render the edited 3D model, so expressions, shape jitter, SFS and the photo background apply
EDITS_3D = ("3d", "hybrid")
#: the keys of `settings()`, the same for every method (None where a method has no such weights)
SETTING_KEYS = ("refiner_sha256", "refiner_inference", "capg_sha256")


@dataclass
class ViewMaker:
    """One method, its weights loaded (`weights` is None for `3d`)."""

    name: str
    weights: object = None

    def images(self, rec, image: np.ndarray, model, views, poses, size: int, background=0.5) -> np.ndarray:
        """The (B, size, size, 3) uint8 views of one reconstruction: `views` are the 3D stage's renders
        at `poses` over `background` (`face3d.render.RenderedViews`); `image` is the photo."""
        if self.name == "hybrid":
            return refine_views(self.weights, views, background)
        if self.name == "gan":
            return rotate_with_capg(self.weights.generator, rec.fit, image, model, poses, size)
        return views.images

    def record(self) -> dict:
        """What a manifest row says about the weights that made a view ({} for `3d`)."""
        return {} if self.weights is None else self.weights.record()

    def settings(self) -> dict:
        """What a resumed run or a cache must match: the weights' hash and how they are run."""
        w = self.weights
        return {"refiner_sha256": w.sha256 if self.name == "hybrid" else None,
                "refiner_inference": w.inference if self.name == "hybrid" else None,
                "capg_sha256": w.sha256 if self.name == "gan" else None}


def load_method(name: str, refiner: str | None = None, capg: str | None = None, device="cpu") -> ViewMaker:
    """The method `name` with its weights: `refiner` / `capg` name weights files (default: the
    environment variables FACESYNTH_REFINER / FACESYNTH_CAPG, else the shipped files). The refiner
    runs on `device` (a torch device); the GAN-only baseline on the CPU."""
    if name not in METHODS:
        raise FaceSynthError(f"unknown method {name!r} ({', '.join(METHODS)})")
    if name == "hybrid":
        return ViewMaker(name, load_hybrid_refiner(refiner, device))
    if name == "gan":
        return ViewMaker(name, load_default_capg(capg))
    return ViewMaker(name)


def check_method_edits(name: str, edits: dict[str, bool]) -> None:
    """Refuse, with one line, 3D edits (`{flag: asked}`) under a method that renders no 3D model."""
    asked = [flag for flag, on in edits.items() if on]
    if name not in EDITS_3D and asked:
        raise FaceSynthError(f"{', '.join(asked)}: not available with --method {name} (it edits no 3D model); "
                             "use --method 3d or hybrid")
