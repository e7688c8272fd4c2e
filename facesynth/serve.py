"""`facesynth serve [--host 127.0.0.1] [--port 7860]`: a local web demo (Gradio).

Upload a photo (or pick the bundled example), choose the method, the pose(s), the expression and
Shape from Shading; the page shows the views, the fitted textured mesh (GLB), each view's identity
distance to the photo (dlib descriptor, as `facesynth verify`) and a zip of everything with a
`manifest.jsonl` in the format of `facesynth rotate`.

The fit of a photo is computed once and kept in a small LRU cache keyed by the file's content hash
and the fit settings, so moving a pose slider only re-renders. Every file the app writes, Gradio's
own upload cache included (`GRADIO_TEMP_DIR`), lies in one temporary folder that the app owns and
removes on exit.

API (gradio_client): `/render` (photo, method, yaw, pitch, yaw_list, pitch_list, expression, sfs)
-> (gallery, mesh, status); then `/score` () -> (table, zip, status) for the same session. The
lists take the forms of `facesynth rotate --yaw` (a:b:step ranges too); more than MAX_VIEWS views
are refused before any angle or pose is made. A bad upload or list is not an exception: the gallery
comes back empty and `status` carries the one-line reason.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
import zipfile
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from face3d.errors import FaceSynthError

#: Uploads larger than this are refused before they are read (Gradio enforces it too).
MAX_UPLOAD_MB = 50
#: Fits kept in memory (each holds the photo, the fit and its texture).
FIT_CACHE_SIZE = 4
#: Views rendered in one request at most (and angles in one yaw or pitch list).
MAX_VIEWS = 37
#: Result folders kept on disk (older ones are removed; the temporary folder goes on exit).
KEEP_RESULTS = 32
#: Preset rows of poses: (button label, yaw list, pitch list); an empty list means the slider's value.
POSE_PRESETS = (
    ("yaw -60..60 in 9 steps", "-60:60:15", "0"),
    ("yaw -90..90 in 7 steps", "-90:90:30", "0"),
    ("pitch -30..30 in 5 steps", "0", "-30:30:15"),
    ("yaw x pitch grid (3x3)", "-45,0,45", "-20,0,20"),
)
DEFAULT_YAW_LIST = "-60,-30,0,30,60"
EXAMPLE_PHOTO = Path(__file__).resolve().parents[1] / "assets" / "astronaut.png"
NO_FACE = "no face found"


# ----------------------------------------------------------------------------------------------
# Command line




def _check_port_free(host: str, port: int) -> None:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FaceSynthError(f"--host {host}: cannot resolve it ({exc.strerror or exc})") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as uvicorn does
        try:
            s.bind(addr)
        except OSError as exc:
            why = "already in use" if exc.errno in (98, 48) else (exc.strerror or str(exc))
            raise FaceSynthError(f"cannot listen on {host}:{port}: {why} (choose another --port)") from None


def run_serve(args) -> int:
    import torch

    from face3d.morphable_model import load_morphable_model

    if args.threads:
        torch.set_num_threads(args.threads)
    _check_port_free(args.host, args.port)
    model = load_morphable_model(args.model)
    app = build_app(model=model, size=args.size, dense=args.dense)

    def _terminate(signum, frame):   # SIGTERM cleans up like Ctrl-C
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        try:
            app.launch(**launch_options(app, args.host, args.port))
        except OSError as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise FaceSynthError(f"cannot listen on {args.host}:{args.port}: {first.split('. ')[0]}") from None
        except KeyboardInterrupt:
            pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        try:
            app.close()
        except Exception:
            pass
        app.facesynth_cleanup()
    print("facesynth serve: stopped", flush=True)
    return 0


def launch_options(app, host: str = "127.0.0.1", port: int | None = None, block: bool = True) -> dict:
    """Keyword arguments of `app.launch` for a local, offline server."""
    return dict(server_name=host, server_port=port, prevent_thread_lock=not block, share=False,
                show_error=True, max_file_size=f"{MAX_UPLOAD_MB}mb", ssr_mode=False, mcp_server=False,
                theme=app.facesynth_theme, css=_CSS, quiet=False)


_CSS = """
#status p { margin: 0; }
#gallery .caption-label { max-width: 96%; font-size: 11px; }
"""


# ----------------------------------------------------------------------------------------------
# The work behind the page (no Gradio here)


@dataclass
class FitEntry:
    """One photo's fit, reused while only pose / method / expression / SFS change."""

    key: str
    name: str                    # the upload's file name, as the user knows it
    image: object                # uint8 RGB
    rec: object                  # face3d.pipeline.Reconstruction (largest face)
    seconds: float
    folder: Path
    glb: Path | None = None
    sfs: object = None           # face3d.variants.SFSState once computed
    descriptor: object = None    # (128,) dlib descriptor of the photo's face
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Job:
    """One rendered request: what /score needs to add identity distances and build the zip."""

    entry: FitEntry
    folder: Path
    images: list
    records: list
    status: str


class FaceSynthServer:
    """Fits (cached), renders and scores; the Gradio callbacks are thin wrappers around it."""

    def __init__(self, model, workdir: Path, size: int = 256, dense: bool = True, cache_size: int = FIT_CACHE_SIZE):
        self.model = model
        self.size = size
        self.dense = dense
        self.workdir = Path(workdir)
        self.cache_size = cache_size
        self._fits: OrderedDict[str, FitEntry] = OrderedDict()
        self._lock = threading.Lock()
        self._results: deque[Path] = deque()
        self._counter = 0
        self.fits_computed = 0

    # -- the fit, once per photo ----------------------------------------------------------------
    def fit(self, path: str) -> tuple[FitEntry, bool]:
        """The (cached) fit of the photo at `path`; True when it came from the cache."""
        from face3d.fitting import FitConfig
        from face3d.image_io import load_image
        from face3d.pipeline import reconstruct_faces

        p = Path(path)
        name = _display_name(p)
        if not p.is_file():
            raise FaceSynthError(f"{name}: the upload is missing, upload it again")
        nbytes = p.stat().st_size
        if nbytes > MAX_UPLOAD_MB * 2**20:
            raise FaceSynthError(f"{name}: file too large ({nbytes / 2**20:.0f} MB; the limit is {MAX_UPLOAD_MB} MB)")
        if nbytes == 0:
            raise FaceSynthError(f"{name}: empty file")
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        key = f"{digest}:dense={int(self.dense)}:model={self.model.name}"
        with self._lock:
            entry = self._fits.get(key)
            if entry is not None:
                self._fits.move_to_end(key)
                if entry.name != name:
                    entry.name = name
                return entry, True
        t0 = time.perf_counter()
        try:
            image = load_image(p)
        except FaceSynthError as exc:
            raise FaceSynthError(str(exc).replace(str(p), name)) from None
        rec = reconstruct_faces(image, self.model, fit_config=FitConfig(dense=self.dense), source=name)[0]
        folder = self.workdir / "fits" / digest[:16]
        folder.mkdir(parents=True, exist_ok=True)
        entry = FitEntry(key, name, image, rec, time.perf_counter() - t0, folder)
        with self._lock:
            self.fits_computed += 1
            self._fits[key] = entry
            while len(self._fits) > self.cache_size:
                _, old = self._fits.popitem(last=False)
                shutil.rmtree(old.folder, ignore_errors=True)
        return entry, False

    def mesh(self, entry: FitEntry) -> Path:
        """The fitted textured mesh as GLB (written once per fit)."""
        from face3d.mesh_export import export_mesh

        with entry.lock:
            if entry.glb is None or not entry.glb.is_file():
                path = entry.folder / f"{_stem(entry.name)}_mesh.glb"
                verts = entry.rec.fit.vertices(self.model)[0].numpy()
                export_mesh(path, verts, self.model, entry.rec.texture)
                entry.glb = path
            return entry.glb

    def _sfs_state(self, entry: FitEntry, args):
        from face3d.variants import prepare_sfs

        with entry.lock:
            if entry.sfs is None:
                entry.sfs = prepare_sfs(entry.rec, entry.image, self.model, args.sfs, args.relight,
                                        len(args.yaw) * len(args.pitch) * len(args.roll), args.seed, _stem(entry.name))
            return entry.sfs

    # -- one request -----------------------------------------------------------------------------
    def render(self, photo: str, method: str, yaw: float, pitch: float, yaw_list: str = "", pitch_list: str = "",
               expression: str = "fitted", sfs: bool = False) -> Job:
        from face3d.camera import Pose
        from face3d.expressions import parse_expression
        from face3d.image_io import save_png
        from face3d.variants import render_variant, sfs_record, variant_record, variants
        from facesynth.manifest import view_file_name, view_record

        if method not in ("3d", "hybrid"):
            raise FaceSynthError(f"unknown method {method!r} (3d or hybrid)")
        from facesynth.options import check_pose_count

        yaws = _angle_list(yaw_list, "yaw") or [float(yaw)]
        pitches = _angle_list(pitch_list, "pitch") or [float(pitch)]
        # each list has at most MAX_VIEWS angles; their product is checked before the poses are made
        check_pose_count(yaws, pitches, limit=MAX_VIEWS, names=("yaw", "pitch"), per="views per request")
        poses = [Pose(y, p, 0.0) for p in pitches for y in yaws]
        for v in yaws + pitches:
            if not -90.0 <= v <= 90.0:
                raise FaceSynthError(f"angles must lie in [-90, 90] degrees, got {v:g}")
        expression = (expression or "fitted").strip()
        refiner = None
        if method == "hybrid":
            from ganrefine.hybrid import load_hybrid_refiner, refine_views

            refiner = load_hybrid_refiner()
        entry, cached = self.fit(photo)
        stem = _stem(entry.name)
        args = SimpleNamespace(
            expression=None if expression == "fitted" else [parse_expression(expression)],
            shape_jitter=0.0, jitter_samples=1, seed=0, sfs=bool(sfs), relight="keep",
            yaw=yaws, pitch=pitches, roll=[0.0])
        t0 = time.perf_counter()
        state = self._sfs_state(entry, args) if sfs else None
        rec, model, bg = entry.rec, self.model, 0.5
        variant = variants(rec.fit, model, args.expression, 0.0, 1, 0, stem)[0]
        views = render_variant(variant, rec, model, poses, self.size, bg, state)
        images = views.images if refiner is None else refine_views(refiner, views, bg)
        seconds = time.perf_counter() - t0
        folder = self._new_result_folder()
        mesh = self.mesh(entry)
        records = []
        extra = {**variant_record(variant, model), **sfs_record(state), **({} if refiner is None else refiner.record())}
        for pose, img in zip(poses, images):
            rel = view_file_name(f"{stem}{variant.tag}", pose)
            save_png(folder / rel, img)
            records.append({**view_record(entry.name, rel, 0, pose, method, model, rec.fit, self.size, extra),
                            "mesh": mesh.name})
        fit_note = "fit reused" if cached else f"fit {entry.seconds:.1f} s"
        sfs_note = ""
        if state is not None and not state.applied:
            sfs_note = f" · SFS not applied ({state.result.warning or 'no change'})"
        status = (f"**{entry.name}**: {fit_note} · {len(poses)} view(s) rendered in {seconds:.2f} s "
                  f"({method}, {self.size} px){sfs_note}")
        return Job(entry, folder, list(images), records, status)

    def photo_descriptor(self, entry: FitEntry):
        import torch

        from ganrefine.identity import IdentityEncoder, image_tensor

        with entry.lock:
            if entry.descriptor is None:
                enc = IdentityEncoder.load()
                with torch.no_grad():
                    entry.descriptor = enc.embed([image_tensor(entry.image)],
                                                 torch.from_numpy(entry.rec.face.landmarks)[None])[0]
            return entry.descriptor

    def score(self, job: Job) -> tuple[list, Path, float]:
        """Identity distance of each view to the photo (None: no face found), the manifest and the zip."""
        import torch

        from face3d.errors import NoFaceError
        from face3d.landmarks import detect_largest_face
        from ganrefine.identity import SAME_PERSON_THRESHOLD, IdentityEncoder, image_tensor
        from facesynth.manifest import Manifest

        t0 = time.perf_counter()
        ref = self.photo_descriptor(job.entry)
        found, distances = [], [None] * len(job.images)
        for i, img in enumerate(job.images):
            try:
                found.append((i, detect_largest_face(img, source=job.records[i]["output"])))
            except NoFaceError:
                pass
        if found:
            enc = IdentityEncoder.load()
            with torch.no_grad():
                desc = enc.embed([image_tensor(job.images[i]) for i, _ in found],
                                 torch.from_numpy(__import__("numpy").stack([f.landmarks for _, f in found])))
                d = enc.distance(desc, ref[None])
            for (i, _), v in zip(found, d.tolist()):
                distances[i] = v
        for r, d in zip(job.records, distances):
            r["identity_distance"] = None if d is None else round(float(d), 4)
            r["same_person"] = None if d is None else bool(d < SAME_PERSON_THRESHOLD)
            if d is None:
                r["identity_error"] = NO_FACE
        manifest = job.folder / "manifest.jsonl"
        if manifest.exists():
            manifest.unlink()
        Manifest(manifest).append(job.records)
        zpath = job.folder / f"{_stem(job.entry.name)}_views.zip"
        mesh = self.mesh(job.entry)
        with zipfile.ZipFile(zpath, "w", compression=zipfile.ZIP_DEFLATED) as z:
            for r in job.records:
                z.write(job.folder / r["output"], r["output"])
            z.write(mesh, mesh.name)
            z.write(manifest, "manifest.jsonl")
        return distances, zpath, time.perf_counter() - t0

    def _new_result_folder(self) -> Path:
        with self._lock:
            self._counter += 1
            folder = self.workdir / "results" / f"{self._counter:06d}"
            folder.mkdir(parents=True)
            self._results.append(folder)
            while len(self._results) > KEEP_RESULTS:
                shutil.rmtree(self._results.popleft(), ignore_errors=True)
        return folder


def _display_name(p: Path) -> str:
    return p.name or "upload"


def _stem(name: str) -> str:
    s = Path(name).stem
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in s) or "photo"


def _angle_list(text: str | None, name: str) -> list[float]:
    """The angles of a list field ([] when empty); more than MAX_VIEWS are refused before any is made,
    with the count they would give (`parse_angles` counts a:b:step ranges without expanding them)."""
    from facesynth.options import AngleCountError, parse_angles, shown_text

    if text is None or not str(text).strip():
        return []
    try:
        return parse_angles(str(text), name, limit=MAX_VIEWS)
    except AngleCountError as exc:
        raise FaceSynthError(f"{name} angles {shown_text(str(text))} would give {exc.count_text} angles; "
                             f"at most {MAX_VIEWS} views per request") from None
    except argparse.ArgumentTypeError as exc:
        raise FaceSynthError(str(exc).replace(f"--{name}", name)) from None


def one_line(exc: BaseException) -> str:
    """The user-facing line of an error (FaceSynthError as is; anything else as an internal error)."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    if isinstance(exc, FaceSynthError):
        return text or type(exc).__name__
    return f"internal error: {type(exc).__name__}: {text}".rstrip(": ")


# ----------------------------------------------------------------------------------------------
# The page


def build_app(model=None, size: int = 256, dense: bool = True, example: str | os.PathLike | None = EXAMPLE_PHOTO,
              cache_size: int = FIT_CACHE_SIZE):
    """The Gradio Blocks of the demo. It owns a temporary folder (`app.facesynth_tmp`) that holds
    every upload and output, Gradio's cache included; `app.facesynth_cleanup()` removes it (also run
    at interpreter exit). `app.facesynth_server` is the `FaceSynthServer` behind the callbacks."""
    tmp = tempfile.TemporaryDirectory(prefix="facesynth-serve-")
    root = Path(tmp.name)
    gradio_dir = root / "gradio"
    gradio_dir.mkdir()
    # Gradio reads this when components and the server app are created: uploads land in our folder.
    os.environ["GRADIO_TEMP_DIR"] = str(gradio_dir)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    from face3d.expressions import presets_for
    from ganrefine.hybrid import default_weights_path

    if model is None:
        from face3d.morphable_model import load_morphable_model

        model = load_morphable_model()
    server = FaceSynthServer(model, root / "work", size=size, dense=dense, cache_size=cache_size)
    hybrid_ok = default_weights_path().is_file()
    methods = ["hybrid", "3d"] if hybrid_ok else ["3d"]
    method_info = ("hybrid: the 3D views refined by the trained refiner; 3d: the renders alone" if hybrid_ok else
                   f"3d: the renders alone (hybrid needs the refiner weights, not found at {default_weights_path()})")
    expressions = ["fitted"] + [n for n in presets_for(model)]
    example_path = Path(example) if example is not None else None

    empty_table = []

    def _fail(exc: BaseException):
        msg = one_line(exc)
        if not isinstance(exc, FaceSynthError):
            import traceback

            traceback.print_exc()
        gr.Warning(msg)
        return f"**Error:** {msg}"

    def render(photo, method, yaw, pitch, yaw_list, pitch_list, expression, sfs):
        """Fit the photo (cached) and render the views; the gallery, the mesh and a status line."""
        if not photo:
            return [], None, "Upload a photo or pick the example.", None
        try:
            job = server.render(photo, method, yaw, pitch, yaw_list, pitch_list, expression, sfs)
        except Exception as exc:      # a bad upload or a failure: one line on the page, the server goes on
            return [], None, _fail(exc), None
        gallery = [(str(job.folder / r["output"]), f"yaw {r['yaw']:g}°, pitch {r['pitch']:g}°") for r in job.records]
        return gallery, str(server.mesh(job.entry)), job.status, job

    def score(job):
        """Identity distance of each view to the photo, and the zip of everything (manifest.jsonl)."""
        if job is None:
            return empty_table, None, gr.skip()
        try:
            distances, zpath, seconds = server.score(job)
        except Exception as exc:
            return empty_table, None, _fail(exc)
        rows = [[r["yaw"], r["pitch"], NO_FACE if d is None else f"{d:.3f}",
                 "" if d is None else ("yes" if r["same_person"] else "no")]
                for r, d in zip(job.records, distances)]
        return rows, str(zpath), job.status + f" · identity distances in {seconds:.2f} s"

    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])
    with gr.Blocks(title="facesynth", analytics_enabled=False, delete_cache=(600, 3600)) as app:
        gr.Markdown("## facesynth: one face photo in, the same person at other head poses out")
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                photo = gr.File(label="Photo", type="filepath", elem_id="photo", height=120)
                if example_path is not None and example_path.is_file():
                    gr.Examples(examples=[[str(example_path)]], inputs=[photo], label="Example photo")
                method = gr.Radio(methods, value=methods[0], label="Method", info=method_info, elem_id="method")
                expression = gr.Dropdown(expressions, value="fitted", label="Expression",
                                         info="fitted: the photo's own; or a preset", elem_id="expression")
                sfs = gr.Checkbox(False, label="Shape from Shading (refine the shape from the photo's shading)",
                                  elem_id="sfs")
                yaw = gr.Slider(-90, 90, value=0, step=5, label="Yaw (degrees)", elem_id="yaw")
                pitch = gr.Slider(-45, 45, value=0, step=5, label="Pitch (degrees)", elem_id="pitch")
                with gr.Row():
                    yaw_list = gr.Textbox(DEFAULT_YAW_LIST, label="Yaw angles", elem_id="yaw_list",
                                          info="comma list or a:b:step; empty: the slider")
                    pitch_list = gr.Textbox("", label="Pitch angles", elem_id="pitch_list",
                                            info="empty: the slider")
                with gr.Row():
                    presets = [(gr.Button(label, size="sm"), y, p) for label, y, p in POSE_PRESETS]
                go = gr.Button("Render", variant="primary", elem_id="render")
            with gr.Column(scale=2):
                status = gr.Markdown("Upload a photo or pick the example.", label="status", elem_id="status")
                gallery = gr.Gallery(label="Views", columns=5, height=420, object_fit="contain",
                                     elem_id="gallery", format="png")
                with gr.Row():
                    mesh = gr.Model3D(label="Fitted mesh (GLB)", elem_id="mesh", height=300,
                                      clear_color=(0.92, 0.92, 0.92, 1.0))
                    with gr.Column():
                        table = gr.Dataframe(headers=["yaw", "pitch", "identity distance", "same person"],
                                             datatype=["number", "number", "str", "str"],
                                             interactive=False, label="Identity distance to the photo (dlib, < 0.6: same)",
                                             elem_id="identity")
                        download = gr.File(label="Download all (zip with manifest.jsonl)", elem_id="download")
        job = gr.State(None)

        render_io = dict(fn=render, inputs=[photo, method, yaw, pitch, yaw_list, pitch_list, expression, sfs],
                         outputs=[gallery, mesh, status, job], concurrency_id="facesynth", concurrency_limit=1,
                         trigger_mode="always_last", show_progress="minimal")
        score_io = dict(fn=score, inputs=[job], outputs=[table, download, status], concurrency_id="facesynth",
                        concurrency_limit=1, show_progress="hidden")
        gr.on([go.click, photo.change, method.change, expression.change, sfs.change], api_name="render",
              **render_io).then(api_name="score", **score_io)
        for s in (yaw, pitch):   # a slider move renders the one pose the sliders show
            s.release(lambda: ("", ""), None, [yaw_list, pitch_list], queue=False, api_visibility="private").then(
                api_visibility="private", **render_io).then(api_visibility="private", **score_io)
        for button, y, p in presets:
            button.click(lambda y=y, p=p: (y, p), None, [yaw_list, pitch_list], queue=False,
                         api_visibility="private").then(api_visibility="private", **render_io).then(
                api_visibility="private", **score_io)

    app.queue(default_concurrency_limit=1)
    app.facesynth_server = server
    app.facesynth_tmp = tmp
    app.facesynth_theme = theme

    def cleanup():
        tmp.cleanup()

    app.facesynth_cleanup = cleanup
    return app
