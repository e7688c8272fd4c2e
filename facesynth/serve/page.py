"""The demo's page (Gradio Blocks): the controls, the outputs, and the events that call
`FaceSynthServer` (`facesynth.serve.server`).

Gradio reads GRADIO_TEMP_DIR into module constants when it is imported (one of its folders is
made at app creation from them), so this module is imported by `facesynth.serve.app.build_app`
once it has set that variable to the app's own folder; import `build_app`, not this module.
"""
from __future__ import annotations

import traceback
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from face3d.errors import FaceSynthError
from face3d.expressions import presets_for
from facesynth.serve.server import NO_FACE, FaceSynthServer, Job, angle_text, one_line
from ganrefine.hybrid import default_weights_path

#: Preset rows of poses: (button label, yaw list, pitch list); an empty list means the slider's value.
POSE_PRESETS = (
    ("yaw -60..60 in 9 steps", "-60:60:15", "0"),
    ("yaw -90..90 in 7 steps", "-90:90:30", "0"),
    ("pitch -30..30 in 5 steps", "0", "-30:30:15"),
    ("yaw x pitch grid (3x3)", "-45,0,45", "-20,0,20"),
)
DEFAULT_YAW_LIST = "-60,-30,0,30,60"
READY = "Upload a photo or pick the example."
IDENTITY_HEADERS = ["yaw", "pitch", "identity distance", "same person"]


def make_blocks(server: FaceSynthServer, model, example: Path | None) -> gr.Blocks:
    """The page over `server`, queued one request at a time; `app.facesynth_theme` is its theme."""
    with gr.Blocks(title="facesynth", analytics_enabled=False, delete_cache=(600, 3600)) as app:
        gr.Markdown("## facesynth: one face photo in, the same person at other head poses out")
        with gr.Row():
            controls = control_column(model, example)
            results = result_column()
        wire_events(controls, results, gr.State(None), Callbacks(server))
    app.queue(default_concurrency_limit=1)
    app.facesynth_theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                                            font_mono=["ui-monospace", "monospace"])
    return app


@dataclass
class Controls:
    """The left column: what a request is made of."""

    photo: gr.File
    method: gr.Radio
    expression: gr.Dropdown
    sfs: gr.Checkbox
    yaw: gr.Slider
    pitch: gr.Slider
    yaw_list: gr.Textbox
    pitch_list: gr.Textbox
    presets: list            # (button, yaw list, pitch list) per POSE_PRESETS row
    go: gr.Button
    reference: gr.File       # the optional reference photo ...
    reference_expression: gr.Checkbox   # ... lends its expression
    reference_pose: gr.Checkbox         # ... lends its head pose

    def render_inputs(self) -> list:
        """The inputs of /render, in the order of `Callbacks.render`'s parameters (the reference's
        last, so that API calls made before they existed still work)."""
        return [self.photo, self.method, self.yaw, self.pitch, self.yaw_list, self.pitch_list, self.expression,
                self.sfs, self.reference, self.reference_expression, self.reference_pose]


@dataclass
class Results:
    """The right column: what a request shows."""

    status: gr.Markdown
    gallery: gr.Gallery
    mesh: gr.Model3D
    table: gr.Dataframe
    download: gr.File


class Callbacks:
    """The events' functions: the server's work, with errors as one line on the page."""

    def __init__(self, server: FaceSynthServer):
        self.server = server

    def render(self, photo, method, yaw, pitch, yaw_list, pitch_list, expression, sfs, reference=None,
               reference_expression=True, reference_pose=False):
        """Fit the photo (cached) and render the views; the gallery, the mesh and a status line.
        `reference`: an optional second photo whose expression and / or head pose the views take."""
        if not photo:
            return [], None, READY, None
        try:
            job = self.server.render(photo, method, yaw, pitch, yaw_list, pitch_list, expression, sfs,
                                     reference=reference or None, reference_expression=bool(reference_expression),
                                     reference_pose=bool(reference_pose))
        except Exception as exc:      # a bad upload or a failure: one line on the page, the server goes on
            return [], None, self.fail(exc), None
        gallery = [(str(job.folder / r["output"]), view_caption(r, job.reference_pose)) for r in job.records]
        return gallery, str(self.server.mesh(job.entry)), job.status, job

    def score(self, job: Job | None):
        """Identity distance of each view to the photo, and the zip of everything (manifest.jsonl)."""
        if job is None:
            return [], None, gr.skip()
        try:
            distances, zpath, seconds = self.server.score(job)
        except Exception as exc:
            return [], None, self.fail(exc)
        rows = [[r["yaw"], r["pitch"], NO_FACE if d is None else f"{d:.3f}",
                 "" if d is None else ("yes" if r["same_person"] else "no")]
                for r, d in zip(job.records, distances)]
        return rows, str(zpath), job.status + f" · identity distances in {seconds:.2f} s"

    @staticmethod
    def fail(exc: BaseException) -> str:
        """Show an error as a warning and a status line (and the traceback in the log when unexpected)."""
        msg = one_line(exc)
        if not isinstance(exc, FaceSynthError):
            traceback.print_exc()
        gr.Warning(msg)
        return f"**Error:** {msg}"


def view_caption(record: dict, reference_pose=None) -> str:
    """A view's caption: its angles (roll where not 0); 'reference pose' for the reference's own."""
    roll = f", roll {angle_text(record['roll'])}°" if record.get("roll") else ""
    text = f"yaw {angle_text(record['yaw'])}°, pitch {angle_text(record['pitch'])}°{roll}"
    if reference_pose is not None and (record["yaw"], record["pitch"], record["roll"]) == reference_pose.as_tuple():
        return f"reference pose: {text}"
    return text


def method_choices() -> tuple[list[str], str]:
    """The methods the page offers (hybrid only where its weights are found), the default first, and
    the radio's note."""
    if default_weights_path().is_file():
        return ["3d", "hybrid"], "3d: the renders alone; hybrid: the 3D views refined by the trained refiner"
    return ["3d"], f"3d: the renders alone (hybrid needs the refiner weights, not found at {default_weights_path()})"


def control_column(model, example: Path | None) -> Controls:
    """The photo, method, expression, SFS and pose controls."""
    methods, method_info = method_choices()
    with gr.Column(scale=1, min_width=320):
        photo = gr.File(label="Photo", type="filepath", elem_id="photo", height=120)
        if example is not None and example.is_file():
            gr.Examples(examples=[[str(example)]], inputs=[photo], label="Example photo")
        reference, reference_expression, reference_pose = reference_controls()
        method = gr.Radio(methods, value=methods[0], label="Method", info=method_info, elem_id="method")
        expression = gr.Dropdown(["fitted"] + list(presets_for(model)), value="fitted", label="Expression",
                                 info="fitted: the photo's own; or a preset (a reference photo's replaces it "
                                      "when 'use its expression' is ticked)", elem_id="expression")
        sfs = gr.Checkbox(False, label="Shape from Shading (refine the shape from the photo's shading)", elem_id="sfs")
        yaw = gr.Slider(-90, 90, value=0, step=5, label="Yaw (degrees)", elem_id="yaw")
        pitch = gr.Slider(-45, 45, value=0, step=5, label="Pitch (degrees)", elem_id="pitch",
                          info="with a reference's head pose: its pitch instead")
        with gr.Row():
            yaw_list = gr.Textbox(DEFAULT_YAW_LIST, label="Yaw angles", elem_id="yaw_list",
                                  info="comma list or a:b:step; empty: the slider")
            pitch_list = gr.Textbox("", label="Pitch angles", elem_id="pitch_list", info="empty: the slider")
        with gr.Row():
            presets = [(gr.Button(label, size="sm"), y, p) for label, y, p in POSE_PRESETS]
        go = gr.Button("Render", variant="primary", elem_id="render")
    return Controls(photo, method, expression, sfs, yaw, pitch, yaw_list, pitch_list, presets, go, reference,
                    reference_expression, reference_pose)


def reference_controls() -> tuple[gr.File, gr.Checkbox, gr.Checkbox]:
    """The optional second upload and what it lends: its expression, its head pose."""
    with gr.Group():
        reference = gr.File(label="Reference photo (expression / pose), optional", type="filepath",
                            elem_id="reference", height=120)
        with gr.Row():
            expression = gr.Checkbox(True, label="use its expression", elem_id="reference_expression",
                                     info="the views take its expression instead of the Expression choice")
            pose = gr.Checkbox(False, label="use its head pose", elem_id="reference_pose",
                               info="its pitch and roll replace the pitch controls for every yaw, and one more "
                                    "view (first) shows its whole pose")
    return reference, expression, pose


def result_column() -> Results:
    """The status line, the views, the mesh viewer, the identity table and the download."""
    with gr.Column(scale=2):
        status = gr.Markdown(READY, label="status", elem_id="status")
        gallery = gr.Gallery(label="Views", columns=5, height=420, object_fit="contain", elem_id="gallery",
                             format="png")
        with gr.Row():
            mesh = gr.Model3D(label="Fitted mesh (GLB)", elem_id="mesh", height=300,
                              clear_color=(0.92, 0.92, 0.92, 1.0))
            with gr.Column():
                table = gr.Dataframe(headers=IDENTITY_HEADERS, datatype=["number", "number", "str", "str"],
                                     interactive=False, label="Identity distance to the photo (dlib, < 0.6: same)",
                                     elem_id="identity")
                download = gr.File(label="Download all (zip with manifest.jsonl)", elem_id="download")
    return Results(status, gallery, mesh, table, download)


def wire_events(controls: Controls, results: Results, job: gr.State, callbacks: Callbacks) -> None:
    """A render, then its scoring, on the Render button and on a new photo, reference photo, method,
    expression, SFS or reference choice (the API's /render and /score); a slider move or a preset
    row sets the pose lists first."""
    render_io = dict(fn=callbacks.render, inputs=controls.render_inputs(),
                     outputs=[results.gallery, results.mesh, results.status, job], concurrency_id="facesynth",
                     concurrency_limit=1, trigger_mode="always_last", show_progress="minimal")
    score_io = dict(fn=callbacks.score, inputs=[job], outputs=[results.table, results.download, results.status],
                    concurrency_id="facesynth", concurrency_limit=1, show_progress="hidden")
    c = controls
    gr.on([c.go.click, c.photo.change, c.method.change, c.expression.change, c.sfs.change, c.reference.change,
           c.reference_expression.change, c.reference_pose.change], api_name="render",
          **render_io).then(api_name="score", **score_io)
    pose_events = [(s.release, lambda: ("", "")) for s in (c.yaw, c.pitch)]   # a slider move: the one pose it shows
    pose_events += [(button.click, lambda y=y, p=p: (y, p)) for button, y, p in c.presets]
    for event, lists in pose_events:
        event(lists, None, [c.yaw_list, c.pitch_list], queue=False, api_visibility="private").then(
            api_visibility="private", **render_io).then(api_visibility="private", **score_io)
