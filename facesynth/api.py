"""The whole job as one Python call: a photo in, its faces' views at other head poses out.

    import facesynth
    views = facesynth.rotate("me.jpg", yaws=[-45, 0, 45])            # hybrid views of the largest face
    views[0].images                                                   # (3, 128, 128, 3) uint8
    views = facesynth.rotate(photo_array, poses=[(30, 10, 0)], options=facesynth.RenderOptions(method="3d", size=256))

`RenderOptions` holds everything that decides the pixels; `rotate`, `augment`, `compare` and
`serve` all render through `render_face`, so a view made by any of them is the same picture.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

import numpy as np

from face3d.camera import Pose
from face3d.errors import FaceSynthError
from face3d.expressions import ExpressionSpec, Variant, parse_expression_list
from face3d.fitting import FitConfig
from face3d.image_io import load_image
from face3d.morphable_model import MorphableModel, load_morphable_model
from face3d.photo_view import photo_view_backgrounds, see_through_texture
from face3d.pipeline import Reconstruction, reconstruct_faces
from face3d.variants import (SFSState, check_expressions, prepare_sfs, render_variant, sfs_record, variant_geometry,
                             variant_record, variants)
from facesynth.methods import EDITS_3D, ViewMaker, check_method_edits, load_method
from facesynth.options import BACKGROUNDS, DEFAULT_BACKGROUND, DEFAULT_METHOD, METHODS, RELIGHT_MODES, check_pose_count

#: the grey of the plain background, 0..1
PLAIN_GREY = 0.5


@dataclass(frozen=True)
class RenderOptions:
    """What decides the views of a photo (the same fields as the `rotate` flags)."""

    method: str = DEFAULT_METHOD
    size: int = 128
    background: str = DEFAULT_BACKGROUND      # "photo": the whole photo turns with the head; "plain": grey
    expressions: tuple[ExpressionSpec, ...] | None = None   # None: the photo's own expression
    shape_jitter: float = 0.0
    jitter_samples: int = 1
    seed: int = 0
    sfs: bool = False
    relight: str = "keep"
    dense: bool = True
    all_faces: bool = False
    refiner: str | None = None                # weights files; None: the environment, else the shipped ones
    capg: str | None = None

    def check(self, model: MorphableModel | None = None) -> None:
        """One-line errors for values no run could use, before any work."""
        if self.method not in METHODS:
            raise FaceSynthError(f"unknown method {self.method!r} ({', '.join(METHODS)})")
        if not 32 <= self.size <= 1024:
            raise FaceSynthError(f"size must be between 32 and 1024, got {self.size}")
        if self.background not in BACKGROUNDS:
            raise FaceSynthError(f"background must be plain or photo, got {self.background!r}")
        if self.relight not in RELIGHT_MODES:
            raise FaceSynthError(f"relight must be one of {', '.join(RELIGHT_MODES)}, got {self.relight!r}")
        # the background is not an edit: the gan method paints the whole picture and ignores it
        check_method_edits(self.method, {"--expression": bool(self.expressions), "--shape-jitter": bool(self.shape_jitter),
                                         "--sfs": self.sfs})
        if model is not None:
            check_expressions(self.expressions, model)


@dataclass
class FaceViews:
    """The views of one face of a photo in one variant (expression, shape sample): `images[i]` is
    the head at `poses[i]`; `record` holds the variant's and the weights' manifest fields."""

    face: int
    reconstruction: Reconstruction
    variant: Variant
    poses: list[Pose]
    images: np.ndarray
    record: dict = field(default_factory=dict)


def render_face(rec: Reconstruction, image: np.ndarray, model: MorphableModel, poses: list[Pose],
                options: RenderOptions, maker: ViewMaker, face: int = 0, key: str = "",
                sfs: SFSState | None = None) -> list[FaceViews]:
    """Every variant of one reconstructed face at `poses`. `key` seeds what is drawn per face (shape
    samples, random lights); `sfs` is a `prepare_sfs` result computed before (None: computed here)."""
    if sfs is None:
        sfs = prepare_sfs(rec, image, model, options.sfs, options.relight, len(poses), options.seed, key)
    expressions = None if options.expressions is None else list(options.expressions)
    # over the turned photo the head shows only what the photo showed (face3d.photo_view)
    shown = replace(rec, texture=see_through_texture(rec.texture)) if over_photo(options) else rec
    out = []
    # one render per (expression, shape sample); the plain fit when neither is asked for
    for variant in variants(rec.fit, model, expressions, options.shape_jitter, options.jitter_samples,
                            options.seed, key):
        background = view_background(variant, rec, image, model, poses, options)
        views = render_variant(variant, shown, model, poses, options.size, background, sfs)
        images = maker.images(rec, image, model, views, poses, options.size, background)
        record = {**variant_record(variant, model, options.shape_jitter, options.seed), **sfs_record(sfs),
                  **maker.record()}
        out.append(FaceViews(face, rec, variant, list(poses), images, record))
    return out


def over_photo(options: RenderOptions) -> bool:
    """Whether views are composited over the turned photo: the photo background asked for, and a
    method that renders a head (the gan method renders none and needs no background)."""
    return options.background == "photo" and options.method in EDITS_3D


def view_background(variant, rec: Reconstruction, image: np.ndarray, model: MorphableModel, poses: list[Pose],
                    options: RenderOptions):
    """What one variant's views are composited over: the plain grey, or (`photo`) the whole photo
    turned with the head (`face3d.photo_view`), framed like the variant's render so the head sits
    exactly on its own turned photo."""
    if not over_photo(options):
        return PLAIN_GREY
    _, _, frame, _ = variant_geometry(variant, rec, model)
    return photo_view_backgrounds(rec.fit, image, model, poses, options.size, frame_vertices=frame)


def as_poses(poses=None, yaws=None) -> list[Pose]:
    """Poses from `Pose`s or (yaw, pitch, roll) tuples, or from yaws alone (pitch and roll 0)."""
    if poses is None and yaws is None:
        raise FaceSynthError("give poses or yaws")
    out = [p if isinstance(p, Pose) else Pose(*p) for p in (poses or [])]
    out += [Pose(float(y), 0.0, 0.0) for y in (yaws or [])]
    for p in out:
        if not all(-90.0 <= v <= 90.0 for v in p.as_tuple()):
            raise FaceSynthError(f"angles must lie in [-90, 90] degrees, got {p.as_tuple()}")
    check_pose_count(out)
    return out


def rotate(image, poses=None, *, yaws=None, options: RenderOptions | None = None,
           model: MorphableModel | str | os.PathLike | None = None, **fields) -> list[FaceViews]:
    """The views of the largest face of `image` (every face with `all_faces=True`) at `poses`.

    `image`: a path or an (H, W, 3) uint8 RGB array; `poses`: `Pose`s or (yaw, pitch, roll) tuples
    in degrees, or `yaws=[...]`; `options`: a RenderOptions, or its fields as keywords
    (`method="3d"`, `size=256`, ...); `model`: a loaded model or its folder (default ICT FaceKit).
    Raises FaceSynthError (one line) for an unreadable photo, no face, or bad options."""
    options = options or RenderOptions(**fields)
    poses = as_poses(poses, yaws)
    options.check()
    if not isinstance(model, MorphableModel):
        model = load_morphable_model(model)
    check_expressions(options.expressions, model)
    maker = load_method(options.method, options.refiner, options.capg)
    source = "image"
    if not isinstance(image, np.ndarray):
        source = str(image)
        image = load_image(image)
    recs = reconstruct_faces(image, model, all_faces=options.all_faces, fit_config=FitConfig(dense=options.dense),
                             source=source)
    out = []
    for i, rec in enumerate(recs):
        out += render_face(rec, image, model, poses, options, maker, face=i, key=f"face{i}")
    return out


def parse_expressions(text: str | None) -> tuple[ExpressionSpec, ...] | None:
    """'smile,blink' -> the specs; None or 'fitted' alone -> None (the photo's own expression)."""
    if text is None or text.strip() in ("", "fitted"):
        return None
    return tuple(parse_expression_list(text))
