"""facesynth's 3D stage: morphable models, landmarks, camera, rasterizer and shading, fitting,
texture extraction, re-posing and mesh export. It never imports `ganrefine`.

The names below load on first use (PEP 562), so that `import face3d.landmarks` or
`face3d.errors` does not import torch: a fresh `facesynth rotate` starts its face detection in
a helper process before torch is imported (`face3d.detection_helper`)."""
import os

# OpenMP threads that wait for work sleep instead of spinning. With torch's default (spinning) and
# any other busy process on a small CPU, every parallel op waits for a preempted spinner: on this
# project's 2-core machine a fit took 8-14 s instead of 1-2 s and 9 views 2.8-4 s instead of
# 0.1 s. libgomp reads it when it loads (with torch), so it is set before any torch import here;
# a value the user set wins, and a program that imported torch first keeps its own behaviour.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from face3d.lazy_names import lazy_names  # noqa: E402

_SOURCES = {
    "Pose": "face3d.camera", "FaceSynthError": "face3d.errors", "NoFaceError": "face3d.errors",
    "FaceFit": "face3d.fitting", "FitConfig": "face3d.fitting", "fit_morphable_model": "face3d.fitting",
    "load_image": "face3d.image_io", "save_png": "face3d.image_io", "detect_faces": "face3d.landmarks",
    "MorphableModel": "face3d.morphable_model", "load_morphable_model": "face3d.morphable_model",
    "Reconstruction": "face3d.pipeline", "reconstruct_faces": "face3d.pipeline",
    "RenderedViews": "face3d.render", "render_views": "face3d.render",
    "Texture": "face3d.texture", "TextureConfig": "face3d.texture", "extract_texture": "face3d.texture",
}

__all__ = list(_SOURCES)
__getattr__, __dir__ = lazy_names(globals(), _SOURCES)
