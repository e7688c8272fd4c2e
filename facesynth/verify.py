"""``facesynth verify IMAGE_A IMAGE_B [--json]``: are these two photos the same person?

Detects the largest face in each photo (dlib's HOG detector, then its CNN detector where HOG finds
none, unless `--detector` says otherwise; 68 landmarks), computes dlib's
128-d face descriptor with the PyTorch port (:mod:`ganrefine.identity`) and compares the
Euclidean distance with dlib's threshold (0.6). Prints ``<distance> same|different`` (or one JSON
object with ``distance`` and ``same``) and exits 0; an unreadable file or a photo without a face
is a one-line error on stderr and exit code 1. A photo with several faces gets a one-line note on
stderr that says which face was compared (the largest).
"""
from __future__ import annotations

import json
import sys

import torch

from face3d.errors import FaceSynthError, NoFaceError
from face3d.image_io import load_image
from face3d.landmarks import detect_faces
from face3d.pipeline import describe_largest_face
from ganrefine.identity import SAME_PERSON_THRESHOLD, IdentityEncoder, image_tensor


def run_verify(args) -> int:
    """Run the verify command; returns the exit code (0 on success, 1 on a user error)."""
    try:
        images, landmarks = [], []
        for path in (args.image_a, args.image_b):
            img = load_image(path)
            # largest first; dlib's own 68 points, which its recognition network was trained to align by
            faces = detect_faces(img, detector=args.detector, profile_landmarks=False)
            if not faces:
                raise NoFaceError(f"{path}: no face found")
            if len(faces) > 1:
                print(f"facesynth verify: note: {describe_largest_face(str(path), len(faces), faces[0])}",
                      file=sys.stderr)
            face = faces[0]
            images.append(image_tensor(img))
            landmarks.append(torch.from_numpy(face.landmarks))
        encoder = IdentityEncoder.load()
        with torch.no_grad():
            desc = encoder.embed(images, landmarks)
            distance = float(encoder.distance(desc[0], desc[1]))
    except FaceSynthError as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"facesynth verify: {msg}", file=sys.stderr)
        return 1
    same = distance < SAME_PERSON_THRESHOLD
    if args.json:
        print(json.dumps({"distance": round(distance, 6), "same": same}))
    else:
        print(f"{distance:.4f} {'same' if same else 'different'}")
    return 0
