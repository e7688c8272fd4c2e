"""`FaceFit`: the result of fitting a morphable model to one photo (see `face3d.fitting`), and its files."""
from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from face3d.camera import PerspectiveCamera, matrix_to_euler, transform
from face3d.errors import FaceSynthError
from face3d.image_io import atomic_write_bytes
from face3d.morphable_model import MorphableModel


@dataclass
class FaceFit:
    """The result of fitting: model coefficients, camera, lighting and the residuals of the fit."""

    model_name: str
    image_size: tuple[int, int]                 # (H, W) of the image the fit refers to
    identity: np.ndarray                        # (K,) leading identity coefficients
    expression: np.ndarray                      # (E,)
    rotation: np.ndarray                        # (3, 3)
    translation: np.ndarray                     # (3,) mm
    focal: float                                # px
    center: tuple[float, float]                 # principal point, px
    landmarks: np.ndarray                       # (68, 2) detected landmarks the fit used
    sh: np.ndarray = field(default_factory=lambda: np.zeros((9, 3), np.float32))  # SH lighting (9, 3)
    albedo: np.ndarray | None = None            # per-vertex albedo (V, 3) from the dense stage, 0..1
    residuals: dict = field(default_factory=dict)

    @property
    def pose(self):
        return matrix_to_euler(self.rotation)

    @property
    def landmark_error(self) -> float:
        """Mean 68-point reprojection error / outer-eye-corner distance."""
        return float(self.residuals.get("landmark_error", float("nan")))

    def vertices(self, model: MorphableModel, expression: np.ndarray | None = None) -> torch.Tensor:
        """Fitted vertices in model space (1, V, 3)."""
        ex = self.expression if expression is None else expression
        return model.shape(torch.from_numpy(self.identity[None].astype(np.float32)),
                           torch.from_numpy(np.asarray(ex, np.float32)[None]))

    def camera(self) -> PerspectiveCamera:
        return PerspectiveCamera(torch.tensor([self.focal], dtype=torch.float32),
                                 torch.tensor([self.center], dtype=torch.float32))

    def project(self, model: MorphableModel, vertices: torch.Tensor | None = None) -> torch.Tensor:
        """Screen coordinates (1, V, 3) of the fitted mesh in the source photo."""
        v = self.vertices(model) if vertices is None else vertices
        R = torch.from_numpy(self.rotation.astype(np.float32))[None]
        t = torch.from_numpy(self.translation.astype(np.float32))[None]
        return self.camera().project(transform(v, R, t))

    # --- persistence: arrays in .npz, everything else in a readable .json beside it
    def save(self, path: str | Path) -> None:
        path = Path(path).with_suffix("")
        arrays = {"identity": self.identity, "expression": self.expression, "rotation": self.rotation,
                  "translation": self.translation, "landmarks": self.landmarks, "sh": self.sh}
        if self.albedo is not None:
            arrays["albedo"] = self.albedo
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(path.with_suffix(".npz"), buf.getvalue())
        meta = {"model_name": self.model_name, "image_size": list(self.image_size), "focal": self.focal,
                "center": list(self.center), "pose": asdict(self.pose), "residuals": self.residuals}
        atomic_write_bytes(path.with_suffix(".json"), json.dumps(meta, indent=2).encode())

    @classmethod
    def load(cls, path: str | Path) -> "FaceFit":
        path = Path(path).with_suffix("")
        try:
            meta = json.loads(path.with_suffix(".json").read_text())
            with np.load(path.with_suffix(".npz")) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, KeyError) as exc:
            raise FaceSynthError(f"cannot read fit {path}: {exc}") from None
        return cls(model_name=meta["model_name"], image_size=tuple(meta["image_size"]),
                   identity=arrays["identity"], expression=arrays["expression"], rotation=arrays["rotation"],
                   translation=arrays["translation"], focal=float(meta["focal"]), center=tuple(meta["center"]),
                   landmarks=arrays["landmarks"], sh=arrays["sh"], albedo=arrays.get("albedo"),
                   residuals=meta.get("residuals", {}))
