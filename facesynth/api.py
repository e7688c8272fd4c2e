"""The whole job as one Python call: a photo in, its faces' views at other head poses out.

    import facesynth
    views = facesynth.rotate("me.jpg", yaws=[-45, 0, 45])            # hybrid views of the largest face
    views[0].images                                                   # (3, 128, 128, 3) uint8
    views = facesynth.rotate(photo_array, poses=[(30, 10, 0)], options=facesynth.RenderOptions(method="3d", size=256))
    views = facesynth.rotate("a.jpg", expression_from="b.jpg", pose_from="b.jpg")   # b's smile and pose on a

`RenderOptions` holds everything that decides the pixels; `rotate`, `augment`, `compare` and
`serve` all render through `render_face`, so a view made by any of them is the same picture.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from face3d.camera import Pose
from face3d.devices import DEFAULT_DEVICE, resolve_device
from face3d.errors import FaceSynthError
from face3d.expressions import ExpressionSpec, Variant, parse_expression_list
from face3d.fitting import FitConfig
from face3d.image_io import load_image
from face3d.landmarks import DEFAULT_DETECTOR, DETECTORS
from face3d.morphable_model import MorphableModel, load_morphable_model
from face3d.photo_view import photo_view_layers, see_through_texture
from face3d.labels import ViewLabels, arcface_crop, view_labels
from face3d.pipeline import Reconstruction, reconstruct_faces
from face3d.render import view_fit
from face3d.view_maps import MAP_NAMES, view_maps, warp_map
from face3d.reference_face import ReferenceFace, fit_reference, reference_expression, reference_poses
from face3d.variants import (SFSState, check_expressions, prepare_sfs, render_variant, sfs_record, variant_geometry,
                             variant_record, variants)
from facesynth.methods import EDITS_3D, ViewMaker, check_method_edits, load_method
from facesynth.options import (ALIGNMENTS, BACKGROUNDS, DEFAULT_BACKGROUND, DEFAULT_METHOD, METHODS, RELIGHT_MODES,
                               check_pose_count)

#: the grey of the plain background, 0..1
PLAIN_GREY = 0.5
#: views aligned to ArcFace's 112x112 crop are rendered at least this large (the crop then takes them ~1:1)
ARCFACE_RENDER_SIZE = 192


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
    detector: str = DEFAULT_DETECTOR          # "auto": HOG, then the CNN where HOG finds no face; "hog"; "cnn"
    refiner: str | None = None                # weights files; None: the environment, else the shipped ones
    capg: str | None = None
    align: str = "crop"                       # "crop": the face-centred crop; "arcface": the 112x112 five-point crop
    labels: bool = True                       # landmarks, visibility, five points, box, camera with every view
    maps: tuple[str, ...] = ()                # per-view maps (face3d.view_maps.MAP_NAMES)
    device: str = DEFAULT_DEVICE              # where the torch stages run: auto, cpu, cuda[:N] (face3d.devices)

    @property
    def render_size(self) -> int:
        """The size views are rendered at: `size`, and at least ARCFACE_RENDER_SIZE when they are
        aligned to ArcFace's 112x112 crop afterwards (which then samples them at about 1:1)."""
        return max(self.size, ARCFACE_RENDER_SIZE) if self.align == "arcface" else self.size

    @property
    def torch_device(self) -> torch.device:
        """`device` resolved on this machine (`auto`: a CUDA GPU when torch sees one, else the CPU)."""
        return resolve_device(self.device)

    def fit_config(self, **fields) -> FitConfig:
        """The fit these views are made from: `dense`, on `device`, and `fields`."""
        return FitConfig(dense=self.dense, device=str(self.torch_device), **fields)

    def check(self, model: MorphableModel | None = None) -> None:
        """One-line errors for values no run could use, before any work."""
        resolve_device(self.device)           # a name it cannot read, or cuda where torch sees no GPU
        if self.method not in METHODS:
            raise FaceSynthError(f"unknown method {self.method!r} ({', '.join(METHODS)})")
        if not 32 <= self.size <= 1024:
            raise FaceSynthError(f"size must be between 32 and 1024, got {self.size}")
        if self.background not in BACKGROUNDS:
            raise FaceSynthError(f"background must be plain or photo, got {self.background!r}")
        if self.detector not in DETECTORS:
            raise FaceSynthError(f"detector must be one of {', '.join(DETECTORS)}, got {self.detector!r}")
        if set(self.maps) - set(MAP_NAMES):
            raise FaceSynthError(f"maps must be among {', '.join(MAP_NAMES)}, got {', '.join(self.maps)}")
        if self.align not in ALIGNMENTS:
            raise FaceSynthError(f"align must be one of {', '.join(ALIGNMENTS)}, got {self.align!r}")
        if self.relight not in RELIGHT_MODES:
            raise FaceSynthError(f"relight must be one of {', '.join(RELIGHT_MODES)}, got {self.relight!r}")
        for flag, weights, user in (("--refiner", self.refiner, "hybrid"), ("--capg", self.capg, "gan")):
            if weights is not None and self.method != user:   # weights that this run would silently ignore
                raise FaceSynthError(f"{flag} {weights}: only --method {user} uses these weights "
                                     f"(the method is {self.method})")
        # the background is not an edit: the gan method paints the whole picture and ignores it
        specs = self.expressions or ()
        check_method_edits(self.method, {"--expression": any(not e.reference for e in specs),
                                         "--expression-from": any(e.reference for e in specs),
                                         "--shape-jitter": bool(self.shape_jitter), "--sfs": self.sfs})
        if model is not None:
            check_expressions(self.expressions, model)


@dataclass
class FaceViews:
    """The views of one face of a photo in one variant (expression, shape sample): `images[i]` is
    the head at `poses[i]`, `labels[i]` where its landmarks are in that image, `cameras[i]` the
    camera that rendered it; `record` holds the variant's and the weights' manifest fields."""

    face: int
    reconstruction: Reconstruction
    variant: Variant
    poses: list[Pose]
    images: np.ndarray
    record: dict = field(default_factory=dict)
    labels: list[ViewLabels] = field(default_factory=list)
    cameras: list[dict] = field(default_factory=list)
    maps: dict[str, np.ndarray] = field(default_factory=dict)     # name -> (B, S, S[, 3]), face3d.view_maps
    coefficients: dict = field(default_factory=dict)              # `coefficient_record`, with the labels

    lights: list = field(default_factory=list)                    # per view: its SH light (9 x 3) when relit

    def view_fields(self, i: int) -> dict:
        """The manifest fields of view `i` beside `record`: its labels, the coefficients and its
        camera, and the SH light it was relit with (camera frame, `face3d.shading` order)."""
        out = {**self.labels[i].record(), **self.coefficients, "camera": self.cameras[i]} if self.labels else {}
        if self.lights:
            out["light_sh"] = self.lights[i]
        return out


def render_face(rec: Reconstruction, image: np.ndarray, model: MorphableModel, poses: list[Pose],
                options: RenderOptions, maker: ViewMaker, face: int = 0, key: str = "",
                sfs: SFSState | None = None) -> list[FaceViews]:
    """Every variant of one reconstructed face at `poses`, with its labels. `key` seeds what is drawn
    per face (shape samples, random lights); `sfs` is a `prepare_sfs` result computed before (None:
    computed here)."""
    if sfs is None:
        sfs = prepare_sfs(rec, image, model, options.sfs, options.relight, len(poses), options.seed, key)
    expressions = None if options.expressions is None else list(options.expressions)
    # over the turned photo the head shows only what the photo showed (face3d.photo_view)
    shown = replace(rec, texture=see_through_texture(rec.texture, model)) if over_photo(options) else rec
    size = options.render_size
    # the lights the views are relit with, one per pose, the same for every variant
    lights = [] if sfs is None or sfs.sh is None else [np.round(np.asarray(l, np.float64), 5).tolist() for l in sfs.sh]
    out = []
    # one render per (expression, shape sample); the plain fit when neither is asked for
    for variant in variants(rec.fit, model, expressions, options.shape_jitter, options.jitter_samples,
                            options.seed, key):
        background, behind = view_background(variant, rec, image, model, poses, options)
        views = render_variant(variant, shown, model, poses, size, background, sfs, device=options.torch_device,
                               behind=behind)
        images = maker.images(rec, image, model, views, poses, size, background)
        fit, verts, frame, _ = variant_geometry(variant, rec, model)
        labels, cameras, maps = [], [], {}
        if options.labels or options.align == "arcface":
            labels = view_labels(verts, model, poses, size, frame)
            cameras = [camera_record(fit, model, p, size, frame) for p in poses]
        if options.maps:
            maps = view_maps(verts, model, poses, size, frame, options.maps)
        if options.align == "arcface":
            images, labels, cameras, maps = align_arcface(images, labels, cameras, maps)
        record = {**variant_record(variant, model, options.shape_jitter, options.seed), **sfs_record(sfs),
                  **maker.record()}
        keep = options.labels
        out.append(FaceViews(face, rec, variant, list(poses), images, record, labels if keep else [],
                             cameras if keep else [], maps, coefficient_record(variant, fit, model) if keep else {},
                             lights))
    return out


def camera_record(fit, model: MorphableModel, pose: Pose, size: int, frame_vertices) -> dict:
    """The camera of one view as plain data: a model point X (mm) lands at R X + t in the camera
    frame (x right, y up, z toward the viewer) and at pixel (cx + f x / d, cy - f y / d), d = -z."""
    vf = view_fit(fit, model, pose, size, vertices=frame_vertices)
    return {"focal": round(float(vf.focal), 4), "center": [float(c) for c in vf.center],
            "rotation": np.round(vf.rotation, 6).tolist(), "translation": np.round(vf.translation, 4).tolist()}


def coefficient_record(variant: Variant, fit, model: MorphableModel) -> dict:
    """The model coefficients a variant renders with (`identity_coefficients`, all the model's
    identity modes; `expression_coefficients`, in the order of `model.expression_names`)."""
    identity = fit.identity if variant.shape is None else variant.shape.identity
    full = np.zeros(model.num_identity, np.float64)
    a = np.asarray(identity, np.float64).reshape(-1)[: model.num_identity]
    full[: a.size] = a
    return {"identity_coefficients": np.round(full, 5).tolist(),
            "expression_coefficients": np.round(np.asarray(variant.coefficients, np.float64), 5).tolist()}


def align_arcface(images: np.ndarray, labels: list[ViewLabels], cameras: list[dict], maps: dict):
    """Each view (and its maps) as ArcFace's 112x112 crop on its five label points, with its labels
    mapped into the crop and the map recorded with its camera (`crop_transform`: 2x3, view pixels ->
    crop pixels)."""
    crops, moved, cams = [], [], []
    warped = {name: [] for name in maps}
    for i, (img, lab, cam) in enumerate(zip(images, labels, cameras)):
        crop, A = arcface_crop(img, lab.arcface_points)
        crops.append(crop)
        moved.append(lab.transformed(A, crop.shape[0]))
        cams.append({**cam, "crop_transform": np.round(A, 6).tolist()})
        for name, m in maps.items():
            warped[name].append(warp_map(name, m[i], A, crop.shape[0]))
    return np.stack(crops), moved, cams, {name: np.stack(v) for name, v in warped.items()}


def over_photo(options: RenderOptions) -> bool:
    """Whether views are composited over the turned photo: the photo background asked for, and a
    method that renders a head (the gan method renders none and needs no background)."""
    return options.background == "photo" and options.method in EDITS_3D


def view_background(variant, rec: Reconstruction, image: np.ndarray, model: MorphableModel, poses: list[Pose],
                    options: RenderOptions):
    """(background, behind): what one variant's views are composited over, the plain grey or
    (`photo`) the whole photo turned with the head (`face3d.photo_view`), framed like the variant's
    render so the head sits exactly on its own turned photo; and, over the photo, how much of it
    shows the person beyond the head per pixel (`photo_view_layers`; None over the grey)."""
    if not over_photo(options):
        return PLAIN_GREY, None
    _, _, frame, _ = variant_geometry(variant, rec, model)
    return photo_view_layers(rec.fit, image, model, poses, options.render_size, frame_vertices=frame,
                             foreground=rec.texture.foreground)


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


def load_reference(reference, model: MorphableModel, dense: bool = True, faces=None,
                   detector: str = DEFAULT_DETECTOR) -> ReferenceFace:
    """A reference photo fitted for its expression and head pose: a path, an (H, W, 3) uint8 RGB
    array, or a `ReferenceFace` fitted before (returned as is). `faces`: its detections when made
    elsewhere, else found with `detector`. Raises FaceSynthError (one line) for an unreadable photo
    or no face."""
    if isinstance(reference, ReferenceFace):
        return reference
    source = "reference"
    if not isinstance(reference, np.ndarray):
        source = str(reference)
        reference = load_image(reference)
    return fit_reference(reference, model, source, FitConfig(dense=dense), faces=faces, detector=detector)


def with_reference_expression(options: RenderOptions, reference: ReferenceFace, model: MorphableModel) -> RenderOptions:
    """`options` whose expressions end with the reference's (alone when none were asked for)."""
    return replace(options, expressions=tuple(options.expressions or ()) + (reference_expression(reference, model),))


def rotate(image, poses=None, *, yaws=None, options: RenderOptions | None = None,
           model: MorphableModel | str | os.PathLike | None = None, expression_from=None, pose_from=None,
           **fields) -> list[FaceViews]:
    """The views of the largest face of `image` (every face with `all_faces=True`) at `poses`.

    `image`: a path or an (H, W, 3) uint8 RGB array; `poses`: `Pose`s or (yaw, pitch, roll) tuples
    in degrees, or `yaws=[...]`; `options`: a RenderOptions, or its fields as keywords
    (`method="3d"`, `size=256`, ...); `model`: a loaded model or its folder (default ICT FaceKit).
    `expression_from` / `pose_from`: a reference photo (path, array or `load_reference` result)
    whose expression the views take (after any `expressions`), or whose head pose (alone, or its
    pitch and roll with `yaws`; not with `poses`).
    Raises FaceSynthError (one line) for an unreadable photo, no face, or bad options."""
    options = options or RenderOptions(**fields)
    if pose_from is not None and poses is not None:
        raise FaceSynthError("give poses or pose_from, not both (pose_from with yaws takes its pitch and roll)")
    if pose_from is None:
        poses = as_poses(poses, yaws)
    options.check()
    if not isinstance(model, MorphableModel):
        model = load_morphable_model(model)
    if pose_from is not None:
        pose_from = load_reference(pose_from, model, options.dense, detector=options.detector)
        taken = ("pitch", "roll") if yaws is not None else ("yaw", "pitch", "roll")
        poses = reference_poses(as_poses(yaws=yaws or [0.0]), pose_from.pose, taken)
    if expression_from is not None:
        same = isinstance(expression_from, (str, os.PathLike)) and isinstance(pose_from, ReferenceFace) \
            and str(expression_from) == pose_from.source          # one photo for both: fitted once
        ref = pose_from if same else load_reference(expression_from, model, options.dense, detector=options.detector)
        options = with_reference_expression(options, ref, model)
        options.check()
    check_expressions(options.expressions, model)
    maker = load_method(options.method, options.refiner, options.capg, device=options.torch_device)
    source = "image"
    if not isinstance(image, np.ndarray):
        source = str(image)
        image = load_image(image)
    recs = reconstruct_faces(image, model, all_faces=options.all_faces, fit_config=options.fit_config(),
                             source=source, detector=options.detector)
    out = []
    for i, rec in enumerate(recs):
        out += render_face(rec, image, model, poses, options, maker, face=i, key=f"face{i}")
    return out


def parse_expressions(text: str | None) -> tuple[ExpressionSpec, ...] | None:
    """'smile,blink' -> the specs; None or 'fitted' alone -> None (the photo's own expression)."""
    if text is None or text.strip() in ("", "fitted"):
        return None
    return tuple(parse_expression_list(text))
