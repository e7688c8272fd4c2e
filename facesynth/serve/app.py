"""The demo's app: `build_app` makes the temporary folder that holds every file the app writes,
Gradio's own upload cache included (`GRADIO_TEMP_DIR`), the `FaceSynthServer` over it and the page
(`facesynth.serve.page`); `launch_options` are the arguments of its `launch`."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from face3d.morphable_model import load_morphable_model
from facesynth.serve.server import FIT_CACHE_SIZE, MAX_UPLOAD_MB, FaceSynthServer

EXAMPLE_PHOTO = Path(__file__).resolve().parents[2] / "assets" / "astronaut.png"
CSS = """
#status p { margin: 0; }
#gallery .caption-label { max-width: 96%; font-size: 11px; }
"""


def build_app(model=None, size: int = 256, dense: bool = True, example: str | os.PathLike | None = EXAMPLE_PHOTO,
              cache_size: int = FIT_CACHE_SIZE, device: str = "cpu"):
    """The Gradio Blocks of the demo. It owns a temporary folder (`app.facesynth_tmp`) that holds
    every upload and output, Gradio's cache included; `app.facesynth_cleanup()` removes it (also run
    at interpreter exit). `app.facesynth_server` is the `FaceSynthServer` behind the callbacks."""
    tmp = tempfile.TemporaryDirectory(prefix="facesynth-serve-")
    root = Path(tmp.name)
    gradio_dir = root / "gradio"
    gradio_dir.mkdir()
    # Gradio reads this when it is imported and when components and the server app are created:
    # uploads and its own folders land in ours.
    os.environ["GRADIO_TEMP_DIR"] = str(gradio_dir)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    # deferred: Gradio (imported by the page) must first see GRADIO_TEMP_DIR, set just above
    from facesynth.serve import page
    if model is None:
        model = load_morphable_model()
    server = FaceSynthServer(model, root / "work", size=size, dense=dense, cache_size=cache_size, device=device)
    app = page.make_blocks(server, model, Path(example) if example is not None else None)
    app.facesynth_server = server
    app.facesynth_tmp = tmp
    app.facesynth_cleanup = tmp.cleanup
    return app


def launch_options(app, host: str = "127.0.0.1", port: int | None = None, block: bool = True) -> dict:
    """Keyword arguments of `app.launch` for a local, offline server."""
    return dict(server_name=host, server_port=port, prevent_thread_lock=not block, share=False,
                show_error=True, max_file_size=f"{MAX_UPLOAD_MB}mb", ssr_mode=False, mcp_server=False,
                theme=app.facesynth_theme, css=CSS, quiet=False)
