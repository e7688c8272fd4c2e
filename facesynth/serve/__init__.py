"""`facesynth serve [--host 127.0.0.1] [--port 7860]`: a local web demo (Gradio).

Upload a photo (or pick the bundled example), choose the method, the pose(s), the expression and
Shape from Shading; the page shows the views, the fitted textured mesh (GLB), each view's identity
distance to the photo (dlib descriptor, as `facesynth verify`) and a zip of everything with a
`manifest.jsonl` in the format of `facesynth rotate`. The views are rendered by
`facesynth.api.render_face`, as `rotate` renders them.

A second, optional upload is a reference photo (`face3d.reference_face`, as `rotate
--expression-from / --pose-from`); two boxes say what it lends. "use its expression" (on by
default): the views take its expression instead of the Expression choice. "use its head pose": its
pitch and roll replace the pitch slider and list for every yaw asked for, and one more view, shown
first and captioned "reference pose", is at its whole pose (yaw, pitch and roll). A reference is
fitted once (its largest face; the status says when it had several) and kept in a small cache, as
the photo's fit is.

- `server`: `FaceSynthServer`, the work behind the page (fit caches, render, identity distances, zip);
- `app`: `build_app` (the app, its temporary folder and its server) and `launch_options`;
- `page`: the Gradio page (controls, results, events), imported by `build_app`;
- `launch`: the command (`ServeOptions`, `serve`, `run_serve`).

API (gradio_client): `/render` (photo, method, yaw, pitch, yaw_list, pitch_list, expression, sfs,
reference=None, reference_expression=True, reference_pose=False) -> (gallery, mesh, status); then
`/score` () -> (table, zip, status) for the same session. The lists take the forms of `facesynth
rotate --yaw` (a:b:step ranges too); more than MAX_VIEWS views (the reference's pose view counts)
are refused before any angle or pose is made. A bad upload (photo or reference) or list is not an
exception: the gallery comes back empty and `status` carries the one-line reason.
"""
from facesynth.serve.app import EXAMPLE_PHOTO, build_app, launch_options
from facesynth.serve.launch import ServeOptions, run_serve, serve
from facesynth.serve.server import MAX_UPLOAD_MB, MAX_VIEWS, FaceSynthServer, FitEntry, Job, one_line

__all__ = ["EXAMPLE_PHOTO", "MAX_UPLOAD_MB", "MAX_VIEWS", "FaceSynthServer", "FitEntry", "Job", "ServeOptions",
           "build_app", "launch_options", "one_line", "run_serve", "serve"]
