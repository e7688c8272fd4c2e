"""facesynth's 3D stage: morphable models, landmarks, camera, rasterizer and shading, fitting,
texture extraction, re-posing and mesh export. It never imports `ganrefine`."""
from face3d.camera import Pose
from face3d.errors import FaceSynthError, NoFaceError
from face3d.fitting import FaceFit, FitConfig, fit_morphable_model
from face3d.image_io import load_image, save_png
from face3d.landmarks import detect_faces
from face3d.morphable_model import MorphableModel, load_morphable_model
from face3d.pipeline import Reconstruction, reconstruct_faces
from face3d.render import RenderedViews, render_views
from face3d.texture import Texture, TextureConfig, extract_texture

__all__ = [
    "Pose", "FaceSynthError", "NoFaceError", "FaceFit", "FitConfig", "fit_morphable_model", "load_image",
    "save_png", "detect_faces", "MorphableModel", "load_morphable_model", "Reconstruction", "reconstruct_faces",
    "RenderedViews", "render_views", "Texture", "TextureConfig", "extract_texture",
]
