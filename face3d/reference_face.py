"""A second photo as a reference: its expression and its head pose, put on another face.

The fit separates identity, expression and pose, so "B's expression on A" is exact in the model:
A's identity with B's expression coefficients, A's texture, the camera of A's photo (or B's head
pose). Both sides use the re-split fit of `face3d.expressions.expression_split`: the landmark
fit's strong expression prior puts most of a broad smile into the identity shape, so B's plain
coefficients would carry only a quarter of B's smile, and A's plain identity would keep A's own.

    ref = fit_reference(load_image("b.jpg"), model, source="b.jpg")
    spec = reference_expression(ref, model)          # an ExpressionSpec: render it like `smile`
    poses = reference_poses([Pose(0, 0, 0)], ref.pose, ("pitch", "roll"))   # B's pitch and roll
    picked = reference_sample(len(refs), 3, seed=0, key="Al_Gore/Al_Gore_0001")   # 3 of many, per photo
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, replace

import numpy as np

from face3d.camera import Pose
from face3d.errors import FaceSynthError, NoFaceError
from face3d.expressions import ExpressionSpec, expression_split, reference_eye_aspect
from face3d.fitting import FitConfig, fit_morphable_model
from face3d.landmarks import DEFAULT_DETECTOR, DetectedFace, detect_faces
from face3d.morphable_model import MorphableModel

#: the head-pose angles a reference can give
POSE_ANGLES = ("yaw", "pitch", "roll")
#: the third word of `reference_sample`'s seed: its draws are apart from the shape draws of
#: `face3d.expressions.shape_samples`, which take the same (seed, key) with 0, 1, ... there
_SAMPLE_STREAM = zlib.crc32(b"reference_sample")


@dataclass(frozen=True)
class ReferenceFace:
    """What a reference photo lends another face: the expression coefficients of its re-split fit
    (E,), its head pose, where it came from and how many faces its photo shows (the largest is used),
    and how far its eyes are open (`eye_aspect`: frontal eye aspect ratio per eye, subject's right
    and left, from the photo's landmarks: `face3d.expressions.reference_eye_aspect`; None without)."""

    source: str
    expression: np.ndarray
    pose: Pose
    faces_found: int = 1
    face_box: tuple[int, int, int, int] | None = None
    eye_aspect: tuple[float, float] | None = None


def fit_reference(image: np.ndarray, model: MorphableModel, source: str = "reference",
                  fit_config: FitConfig | None = None, faces: list[DetectedFace] | None = None,
                  detector: str = DEFAULT_DETECTOR) -> ReferenceFace:
    """The largest face of `image` fitted as a reference (`faces`: its detections when made
    elsewhere, else found with `detector`). Raises NoFaceError naming `source` when it shows no face."""
    if faces is None:
        faces = detect_faces(image, detector=detector)
    if not faces:
        raise NoFaceError(f"{source}: no face found in the reference photo")
    fit = fit_morphable_model(image, faces[0].landmarks, model, fit_config)
    return reference_from_fit(fit, model, source, len(faces), faces[0].box)


def reference_from_fit(fit, model: MorphableModel, source: str = "reference", faces_found: int = 1,
                       face_box=None) -> ReferenceFace:
    """The reference a fit made elsewhere gives (what `fit_reference` makes of its own fit, e.g. a
    `Reconstruction.fit` of the same photo, settings and face): its re-split expression, its pose."""
    split = expression_split(fit, model)
    lo, hi = model.expression_range
    beta = np.clip(np.asarray(split.expression, np.float32).reshape(-1), lo, hi)
    p = fit.pose
    pose = Pose(*(float(np.clip(v, -90.0, 90.0)) for v in (p.yaw, p.pitch, p.roll)))
    box = None if face_box is None else tuple(int(v) for v in face_box)
    return ReferenceFace(str(source), beta, pose, int(faces_found), box, reference_eye_aspect(fit, model))


def reference_expression(ref: ReferenceFace, model: MorphableModel) -> ExpressionSpec:
    """The reference's expression as a spec that renders like any other (`from-<stem>` in file
    names): every coefficient of its re-split fit, by name, on the re-split fit of the face it is put
    on, except the lids: the eyeBlink and eyeWide weights are solved per face so that its eyes open
    as far as the reference's (`face3d.expressions.match_eye_aspect`, when the reference has an
    `eye_aspect`). The re-split gives a photo's eye opening mostly to the identity, so B's own lid
    coefficients carried 0.13 of B's eye aspect ratio (benchmarks/bench_expression_transfer.py)."""
    beta = np.asarray(ref.expression, np.float32).reshape(-1)
    if beta.size != model.num_expressions:
        raise FaceSynthError(f"{ref.source}: the reference has {beta.size} expression coefficients, "
                             f"model {model.name} has {model.num_expressions}")
    raw = tuple((n, float(b)) for n, b in zip(model.expression_names, beta) if b != 0.0)
    eyes = None if ref.eye_aspect is None else tuple(float(v) for v in ref.eye_aspect)
    return ExpressionSpec(f"from:{ref.source}", raw=raw, reference=ref.source, eye_aspect=eyes)


def reference_poses(poses: list[Pose], pose: Pose, angles=POSE_ANGLES) -> list[Pose]:
    """`poses` with the `angles` named ('yaw', 'pitch', 'roll') replaced by the reference `pose`'s,
    duplicates dropped (in order): the angles a user did not give come from the reference."""
    unknown = set(angles) - set(POSE_ANGLES)
    if unknown:
        raise FaceSynthError(f"unknown pose angle(s) {', '.join(sorted(unknown))} ({', '.join(POSE_ANGLES)})")
    swap = {a: getattr(pose, a) for a in angles}
    out: list[Pose] = []
    for p in poses or [Pose()]:
        q = replace(p, **swap)
        if q not in out:
            out.append(q)
    return out


def reference_sample(count: int, n: int, seed: int = 0, key: str = "") -> list[int]:
    """`n` of the `count` references (indices, ascending, no repeats) for the photo `key`: the draw
    depends only on (seed, key, count), not on the order or number of the other photos of a run."""
    if not 0 <= n <= count:
        raise FaceSynthError(f"cannot sample {n} of {count} references")
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(key.encode()), _SAMPLE_STREAM])
    return sorted(int(i) for i in rng.choice(count, size=n, replace=False))
