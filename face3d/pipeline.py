"""The 3D stage in a few calls: photo -> reconstructions (fit + texture) -> views.

    from face3d import load_morphable_model, load_image, reconstruct_faces, render_views, Pose
    model = load_morphable_model()
    rec = reconstruct_faces(load_image("me.jpg"), model)[0]
    views = render_views(rec.fit, rec.texture, [Pose(yaw=y) for y in (-45, 0, 45)], model, size=128)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from face3d.errors import NoFaceError
from face3d.fitting import FaceFit, FitConfig, fit_morphable_model
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
