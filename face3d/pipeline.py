"""The 3D stage in a few calls: photo -> reconstructions (fit + texture) -> views.

    from face3d import load_morphable_model, load_image, reconstruct_faces, render_views, Pose
    model = load_morphable_model()
    rec = reconstruct_faces(load_image("me.jpg"), model)[0]
    views = render_views(rec.fit, rec.texture, [Pose(yaw=y) for y in (-45, 0, 45)], model, size=128)

Several photos at once: `reconstruct_largest_faces(images, model)` fits the largest face of each
in one batched fit (`face3d.fitting.fit_morphable_models`: landmark and dense stages) and returns,
per photo, its Reconstruction or the error that photo alone raised.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from face3d.errors import NoFaceError
from face3d.fitting import FaceFit, FitConfig, fit_morphable_model, fit_morphable_models
from face3d.landmarks import DEFAULT_DETECTOR, DetectedFace, detect_faces
from face3d.morphable_model import MorphableModel
from face3d.texture import Texture, TextureConfig, extract_texture


@dataclass
class Reconstruction:
    """One face of a photo: where it was found, the fitted model and its photo texture."""

    face: DetectedFace
    fit: FaceFit
    texture: Texture
    #: how many faces were detected in the photo (this one included)
    faces_found: int = 1


def describe_largest_face(source: str, n_faces: int, face: DetectedFace) -> str:
    """`PHOTO: 3 faces found; took the largest (face 0, 212x212 px at x=10, y=20)`: what a command
    that uses only the largest face says about a photo with several."""
    left, top, right, bottom = face.box
    return (f"{source}: {n_faces} faces found; took the largest (face 0, {right - left}x{bottom - top} px "
            f"at x={left}, y={top})")


def reconstruct_faces(image: np.ndarray, model: MorphableModel, all_faces: bool = False,
                      fit_config: FitConfig | None = None, texture_config: TextureConfig | None = None,
                      source: str = "image", faces: list[DetectedFace] | None = None,
                      detector: str = DEFAULT_DETECTOR) -> list[Reconstruction]:
    """Detect faces (largest only unless `all_faces`), fit the model to each and extract its texture.
    Each Reconstruction's `faces_found` is the number of faces detected in the photo.

    `faces`: the photo's detections (`detect_faces`, largest first) when they were made elsewhere,
    e.g. by `face3d.detection_helper`; None detects them here with `detector` ("auto": dlib's HOG
    detector, then its CNN detector when HOG finds no face, e.g. on a profile; "hog"; "cnn")."""
    if faces is None:
        faces = detect_faces(image, detector=detector)
    if not faces:
        raise NoFaceError(f"{source}: no face found")
    found = len(faces)
    if not all_faces:
        faces = faces[:1]
    out = []
    for face in faces:
        fit = fit_morphable_model(image, face.landmarks, model, fit_config)
        out.append(Reconstruction(face, fit, extract_texture(fit, image, model, texture_config), found))
    return out


def reconstruct_largest_faces(images: list[np.ndarray], model: MorphableModel, fit_config: FitConfig | None = None,
                              texture_config: TextureConfig | None = None,
                              faces: list[list[DetectedFace] | None] | None = None, sources: list[str] | None = None,
                              detector: str = DEFAULT_DETECTOR) -> list[Reconstruction | Exception]:
    """`reconstruct_faces(image, model)[0]` for several photos, their fits batched: per photo (in
    order) the Reconstruction of its largest face, or the exception that photo raised (NoFaceError
    for a photo without a face; bad landmarks, a fit or a texture that failed), so one bad photo
    never fails the others.

    The photos with a face are fitted in one `fit_morphable_models` call (each fit equals the
    one-face fit within float rounding, which the dense stage amplifies: tests/test_batched_fit.py;
    a single photo takes `fit_morphable_model` itself); if that
    call raises, they are fitted one by one, so only the photo at fault fails. The texture is
    extracted per face. `faces[i]`: photo i's detections (largest first) when made elsewhere, None
    to detect them here with `detector`; `sources[i]` names photo i in error messages."""
    n = len(images)
    sources = list(sources) if sources is not None else [f"image {i}" for i in range(n)]
    faces = list(faces) if faces is not None else [None] * n
    if len(sources) != n or len(faces) != n:
        raise ValueError("one source name and one detection list (or None) per image are required")
    out: list[Reconstruction | Exception | None] = [None] * n
    found: list[list[DetectedFace]] = []
    for i in range(n):
        try:
            found.append(faces[i] if faces[i] is not None else detect_faces(images[i], detector=detector))
        except Exception as exc:  # a detector failure is that photo's alone
            found.append([])
            out[i] = exc
            continue
        if not found[i]:
            out[i] = NoFaceError(f"{sources[i]}: no face found")
    todo = [i for i in range(n) if out[i] is None]
    fits = fit_faces([images[i] for i in todo], [found[i][0].landmarks for i in todo], model, fit_config)
    for i, fit in zip(todo, fits):
        if isinstance(fit, Exception):
            out[i] = fit
            continue
        try:
            out[i] = Reconstruction(found[i][0], fit, extract_texture(fit, images[i], model, texture_config),
                                    len(found[i]))
        except Exception as exc:  # a texture that failed is that photo's alone
            out[i] = exc
    return out


def fit_faces(images: list[np.ndarray], landmarks: list[np.ndarray], model: MorphableModel,
              config: FitConfig | None = None) -> list[FaceFit | Exception]:
    """Each face fitted: all in one batched `fit_morphable_models` call (one face: `fit_morphable_model`);
    if the batch raises, face by face, so that each result is its fit or the exception its fit raised."""
    if len(images) == 1:
        try:
            return [fit_morphable_model(images[0], landmarks[0], model, config)]
        except Exception as exc:
            return [exc]
    if not images:
        return []
    try:
        return list(fit_morphable_models(images, landmarks, model, config))
    except Exception:  # one face's bad landmarks (or a fit that broke down): find it, fit the others
        out: list[FaceFit | Exception] = []
        for image, q in zip(images, landmarks):
            out += fit_faces([image], [q], model, config)
        return out
