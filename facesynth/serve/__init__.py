"""`facesynth serve [--host 127.0.0.1] [--port 7860]`: a local web demo (Gradio).

Upload a photo (or pick the bundled example), choose the method, the pose(s), the expression and
Shape from Shading; the page shows the views, the fitted textured mesh (GLB), each view's identity
distance to the photo (dlib descriptor, as `facesynth verify`) and a zip of everything with a
`manifest.jsonl` in the format of `facesynth rotate`. The views are rendered by
`facesynth.api.render_face`, as `rotate` renders them.

- `server`: `FaceSynthServer`, the work behind the page (fit cache, render, identity distances, zip);
- `app`: `build_app` (the app, its temporary folder and its server) and `launch_options`;
- `page`: the Gradio page (controls, results, events), imported by `build_app`;
- `launch`: the command (`ServeOptions`, `serve`, `run_serve`).

API (gradio_client): `/render` (photo, method, yaw, pitch, yaw_list, pitch_list, expression, sfs)
-> (gallery, mesh, status); then `/score` () -> (table, zip, status) for the same session. The
lists take the forms of `facesynth rotate --yaw` (a:b:step ranges too); more than MAX_VIEWS views
are refused before any angle or pose is made. A bad upload or list is not an exception: the gallery
comes back empty and `status` carries the one-line reason.
"""
from facesynth.serve.app import EXAMPLE_PHOTO, build_app, launch_options
from facesynth.serve.launch import ServeOptions, run_serve, serve
from facesynth.serve.server import MAX_UPLOAD_MB, MAX_VIEWS, FaceSynthServer, FitEntry, Job, one_line

__all__ = ["EXAMPLE_PHOTO", "MAX_UPLOAD_MB", "MAX_VIEWS", "FaceSynthServer", "FitEntry", "Job", "ServeOptions",
           "build_app", "launch_options", "one_line", "run_serve", "serve"]
