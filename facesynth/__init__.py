"""facesynth: one face photo in, views of the same person at other head poses out.

    import facesynth
    views = facesynth.rotate("me.jpg", yaws=[-45, 0, 45])    # list of FaceViews, .images (B, H, W, 3) uint8

The application over the two stages: `face3d` (the 3D stage) <- `ganrefine` (the networks) <-
`facesynth` (the Python API, the method registry, the commands and the CLI). `facesynth.rotate`
and `facesynth.RenderOptions` load on first use (PEP 562), so that `import facesynth.cli` does not
import torch (see `facesynth.cli`)."""
from face3d.lazy_names import lazy_names

_SOURCES = {"rotate": "facesynth.api", "RenderOptions": "facesynth.api", "FaceViews": "facesynth.api",
            "render_face": "facesynth.api", "load_reference": "facesynth.api", "load_method": "facesynth.methods"}

__all__ = list(_SOURCES)
__getattr__, __dir__ = lazy_names(globals(), _SOURCES)
