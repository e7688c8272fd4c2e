"""The work behind the web demo, no Gradio here: the fit of a photo (computed once, kept in a small
LRU cache keyed by the file's content hash and the fit settings), the views of one request
(rendered by `facesynth.api.render_face`, as `rotate` renders them), and their identity distances,
manifest and zip.

A second, optional photo is a reference (`face3d.reference_face`): fitted once too (its own small
LRU cache, same upload checks), it lends the views its expression (instead of the expression
field's) and/or its head pose: its pitch and roll replace the pitch field for every yaw asked for,
and one more view, first, shows its whole pose (yaw, pitch and roll).

    server = FaceSynthServer(model, workdir, size=256)
    job = server.render("me.jpg", "hybrid", yaw=0, pitch=0, yaw_list="-30,0,30", expression="smile")
    job = server.render("me.jpg", "3d", 0, 0, "-30,0,30", reference="them.jpg", reference_pose=True)
    distances, zip_path, seconds = server.score(job)
"""
from __future__ import annotations

import argparse
import hashlib
import shutil
import threading
import time
import zipfile
from collections import OrderedDict, deque
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from face3d.camera import Pose
from face3d.devices import DEFAULT_DEVICE, resolve_device
from face3d.errors import FaceSynthError, NoFaceError
from face3d.expressions import ExpressionSpec, parse_expression
from face3d.fitting import FitConfig
from face3d.image_io import load_image, save_png
from face3d.landmarks import detect_largest_face
from face3d.mesh_export import export_mesh
from face3d.pipeline import Reconstruction, reconstruct_faces
from face3d.reference_face import ReferenceFace, reference_poses
from face3d.variants import SFSState, prepare_sfs
from facesynth.api import FaceViews, RenderOptions, load_reference, render_face, with_reference_expression
from facesynth.manifest import Manifest, view_file_name, view_record
from facesynth.methods import load_method
from facesynth.options import AngleCountError, check_pose_count, parse_angles, shown_text
from ganrefine.identity import SAME_PERSON_THRESHOLD, IdentityEncoder, image_tensor

#: Uploads larger than this are refused before they are read (Gradio enforces it too).
MAX_UPLOAD_MB = 50
#: Fits kept in memory (each holds the photo, the fit and its texture).
FIT_CACHE_SIZE = 4
#: Reference photos' fits kept in memory (each is an expression vector and a pose: small).
REFERENCE_CACHE_SIZE = 8
#: Views rendered in one request at most (and angles in one yaw or pitch list).
MAX_VIEWS = 37
#: Result folders kept on disk (older ones are removed; the temporary folder goes on exit).
KEEP_RESULTS = 32
#: The methods the demo offers (`gan` edits no 3D model, so the expression and SFS controls would not apply).
SERVE_METHODS = ("3d", "hybrid")
#: What a view's identity distance says when no face is found in it.
NO_FACE = "no face found"


@dataclass
class FitEntry:
    """One photo's fit, reused while only pose / method / expression / SFS change."""

    key: str
    name: str                    # the upload's file name, as the user knows it
    image: np.ndarray            # uint8 RGB
    rec: Reconstruction          # the largest face
    seconds: float
    folder: Path
    glb: Path | None = None
    sfs: SFSState | None = None  # computed by the first request that asks for SFS
    descriptor: torch.Tensor | None = None   # (128,) dlib descriptor of the photo's face
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class ReferenceEntry:
    """One reference photo's fit (its expression and head pose), reused by every request that names it."""

    key: str
    name: str                    # the upload's file name, as the user knows it
    face: ReferenceFace
    seconds: float

    def named(self) -> ReferenceFace:
        """The fitted reference under the name it was last uploaded with (file names and records show it)."""
        return self.face if self.face.source == self.name else replace(self.face, source=self.name)


@dataclass
class Job:
    """One rendered request: what /score needs to add identity distances and build the zip."""

    entry: FitEntry
    folder: Path
    images: list
    records: list
    status: str
    reference_pose: Pose | None = None     # the reference's whole pose, when its pose was used (the first view)


class FaceSynthServer:
    """Fits (cached), renders and scores; the Gradio callbacks are thin wrappers around it."""

    def __init__(self, model, workdir: Path, size: int = 256, dense: bool = True, cache_size: int = FIT_CACHE_SIZE,
                 device: str = DEFAULT_DEVICE):
        self.model = model
        self.size = size
        self.dense = dense
        self.device = resolve_device(device)     # the fit's dense stage, the renders, the refiner, the identity network
        self.workdir = Path(workdir)
        self.cache_size = cache_size
        self._fits: OrderedDict[str, FitEntry] = OrderedDict()
        self._lock = threading.Lock()
        self._results: deque[Path] = deque()
        self._counter = 0
        self.fits_computed = 0
        self._references: OrderedDict[str, ReferenceEntry] = OrderedDict()
        self.reference_cache_size = REFERENCE_CACHE_SIZE
        self.references_computed = 0

    # -- the fit, once per photo ----------------------------------------------------------------
    def fit(self, path: str) -> tuple[FitEntry, bool]:
        """The (cached) fit of the photo at `path`; True when it came from the cache."""
        p = Path(path)
        name = p.name or "upload"
        digest = hashlib.sha256(read_upload(p, name)).hexdigest()
        key = f"{digest}:dense={int(self.dense)}:model={self.model.name}"
        with self._lock:
            entry = self._fits.get(key)
            if entry is not None:
                self._fits.move_to_end(key)
                entry.name = name
                return entry, True
        t0 = time.perf_counter()
        try:
            image = load_image(p)
        except FaceSynthError as exc:
            raise FaceSynthError(str(exc).replace(str(p), name)) from None
        rec = reconstruct_faces(image, self.model, fit_config=FitConfig(dense=self.dense, device=str(self.device)),
                                source=name)[0]
        folder = self.workdir / "fits" / digest[:16]
        folder.mkdir(parents=True, exist_ok=True)
        entry = FitEntry(key, name, image, rec, time.perf_counter() - t0, folder)
        self._keep_fit(entry)
        return entry, False

    def _keep_fit(self, entry: FitEntry) -> None:
        """Add a new fit to the cache; the least recently used ones beyond `cache_size` go, files too."""
        with self._lock:
            self.fits_computed += 1
            self._fits[entry.key] = entry
            while len(self._fits) > self.cache_size:
                _, old = self._fits.popitem(last=False)
                shutil.rmtree(old.folder, ignore_errors=True)

    def reference(self, path: str) -> tuple[ReferenceEntry, bool]:
        """The (cached) fit of the reference photo at `path` (its largest face); True when it came
        from the cache. Errors are one line that starts with 'reference photo <name>:'."""
        p = Path(path)
        name = p.name or "reference"
        label = f"reference photo {name}"
        digest = hashlib.sha256(read_upload(p, label)).hexdigest()
        key = f"{digest}:dense={int(self.dense)}:model={self.model.name}"
        with self._lock:
            entry = self._references.get(key)
            if entry is not None:
                self._references.move_to_end(key)
                entry.name = name
                return entry, True
        t0 = time.perf_counter()
        try:
            image = load_image(p)
        except FaceSynthError as exc:
            raise FaceSynthError(str(exc).replace(str(p), label)) from None
        try:
            face = load_reference(image, self.model, self.dense)
        except NoFaceError:
            raise FaceSynthError(f"{label}: no face found") from None
        entry = ReferenceEntry(key, name, face, time.perf_counter() - t0)
        with self._lock:
            self.references_computed += 1
            self._references[key] = entry
            while len(self._references) > self.reference_cache_size:
                self._references.popitem(last=False)
        return entry, False

    def mesh(self, entry: FitEntry) -> Path:
        """The fitted textured mesh as GLB (written once per fit)."""
        with entry.lock:
            if entry.glb is None or not entry.glb.is_file():
                path = entry.folder / f"{file_stem(entry.name)}_mesh.glb"
                verts = entry.rec.fit.vertices(self.model)[0].numpy()
                export_mesh(path, verts, self.model, entry.rec.texture)
                entry.glb = path
            return entry.glb

    def sfs_state(self, entry: FitEntry, options: RenderOptions, n_poses: int) -> SFSState | None:
        """The photo's Shape from Shading, computed by the first request that asks for it (the
        demo keeps the photo's lighting, so the number of poses does not change it)."""
        with entry.lock:
            if entry.sfs is None:
                entry.sfs = prepare_sfs(entry.rec, entry.image, self.model, options.sfs, options.relight, n_poses,
                                        options.seed, file_stem(entry.name))
            return entry.sfs

    # -- one request -----------------------------------------------------------------------------
    def render(self, photo: str, method: str, yaw: float, pitch: float, yaw_list: str = "", pitch_list: str = "",
               expression: str = "fitted", sfs: bool = False, reference: str | None = None,
               reference_expression: bool = True, reference_pose: bool = False) -> Job:
        """Fit `photo` (cached) and write its views at the poses asked for (the lists, or the
        sliders' `yaw` / `pitch` where a list is empty) into a new result folder. With a `reference`
        photo (fitted once, cached): `reference_expression` gives the views its expression instead of
        `expression`'s; `reference_pose` replaces the pitch by its pitch and roll and adds, first,
        one view at its whole pose."""
        if method not in SERVE_METHODS:
            raise FaceSynthError(f"unknown method {method!r} (3d or hybrid)")
        use = bool(reference) and (bool(reference_expression) or bool(reference_pose))
        use_pose = use and bool(reference_pose)
        # every list is checked (and refused) before any fit
        poses = request_poses(yaw, pitch, yaw_list, "" if use_pose else pitch_list, extra_views=int(use_pose))
        expressions = None if use and reference_expression else expression_specs(expression)
        options = RenderOptions(method=method, size=self.size, expressions=expressions, sfs=bool(sfs), dense=self.dense,
                                device=str(self.device))
        options.check(self.model)
        maker = load_method(method, device=self.device)
        entry, cached = self.fit(photo)
        ref, ref_cached = self.reference(reference) if use else (None, False)
        if ref is not None and reference_expression:
            options = with_reference_expression(options, ref.named(), self.model)
            options.check(self.model)
        if use_pose:
            poses = pose_from_reference(poses, ref.face.pose)
        stem = file_stem(entry.name)
        t0 = time.perf_counter()
        state = self.sfs_state(entry, options, len(poses)) if options.sfs else None
        # one variant: a single expression and no shape samples
        views = render_face(entry.rec, entry.image, self.model, poses, options, maker, key=stem, sfs=state)[0]
        seconds = time.perf_counter() - t0
        folder = self._new_result_folder()
        records = self._write_views(entry, views, options, folder)
        status = render_status(entry, cached, len(poses), seconds, options, state)
        if ref is not None:
            status += reference_status(ref, ref_cached, bool(reference_expression), use_pose)
            if use_pose:
                for r in records:
                    r["pose_from"] = ref.name
        elif reference:
            status += " · reference photo not used (neither its expression nor its head pose is ticked)"
        elif reference_pose:
            status += " · head pose from the reference: no reference photo uploaded"
        return Job(entry, folder, list(views.images), records, status, ref.face.pose if use_pose else None)

    def _write_views(self, entry: FitEntry, views: FaceViews, options: RenderOptions, folder: Path) -> list[dict]:
        """Save the views as PNGs into `folder`; their manifest records (`rotate`'s, plus the mesh)."""
        mesh = self.mesh(entry)
        stem = file_stem(entry.name)
        records = []
        for pose, img in zip(views.poses, views.images):
            rel = view_file_name(f"{stem}{views.variant.tag}", pose)
            save_png(folder / rel, img)
            records.append({**view_record(entry.name, rel, views.face, pose, options.method, self.model,
                                          views.reconstruction.fit, options.size, views.record),
                            "mesh": mesh.name})
        return records

    def _new_result_folder(self) -> Path:
        with self._lock:
            self._counter += 1
            folder = self.workdir / "results" / f"{self._counter:06d}"
            folder.mkdir(parents=True)
            self._results.append(folder)
            while len(self._results) > KEEP_RESULTS:
                shutil.rmtree(self._results.popleft(), ignore_errors=True)
        return folder

    # -- identity distances, manifest and zip -----------------------------------------------------
    def photo_descriptor(self, entry: FitEntry) -> torch.Tensor:
        """The dlib descriptor of the photo's face (computed once per fit)."""
        with entry.lock:
            if entry.descriptor is None:
                enc = IdentityEncoder.load(device=self.device)
                with torch.no_grad():
                    entry.descriptor = enc.embed([image_tensor(entry.image)],
                                                 torch.from_numpy(entry.rec.face.landmarks)[None])[0].cpu()
            return entry.descriptor

    def score(self, job: Job) -> tuple[list, Path, float]:
        """Identity distance of each view to the photo (None: no face found), the manifest and the zip."""
        t0 = time.perf_counter()
        distances = self.identity_distances(job)
        for r, d in zip(job.records, distances):
            r["identity_distance"] = None if d is None else round(float(d), 4)
            r["same_person"] = None if d is None else bool(d < SAME_PERSON_THRESHOLD)
            if d is None:
                r["identity_error"] = NO_FACE
        zpath = self._write_zip(job)
        return distances, zpath, time.perf_counter() - t0

    def identity_distances(self, job: Job) -> list[float | None]:
        """The dlib distance of each view's face to the photo's; None where no face is found."""
        ref = self.photo_descriptor(job.entry)
        found, distances = [], [None] * len(job.images)
        for i, img in enumerate(job.images):
            try:
                found.append((i, detect_largest_face(img, source=job.records[i]["output"])))
            except NoFaceError:
                pass
        if found:
            enc = IdentityEncoder.load(device=self.device)
            with torch.no_grad():
                desc = enc.embed([image_tensor(job.images[i]) for i, _ in found],
                                 torch.from_numpy(np.stack([f.landmarks for _, f in found]))).cpu()
                d = enc.distance(desc, ref[None])
            for (i, _), v in zip(found, d.tolist()):
                distances[i] = v
        return distances

    def _write_zip(self, job: Job) -> Path:
        """`manifest.jsonl` of the job's records, and the zip of the views, the mesh and the manifest."""
        manifest = job.folder / "manifest.jsonl"
        if manifest.exists():
            manifest.unlink()
        Manifest(manifest).append(job.records)
        zpath = job.folder / f"{file_stem(job.entry.name)}_views.zip"
        mesh = self.mesh(job.entry)
        with zipfile.ZipFile(zpath, "w", compression=zipfile.ZIP_DEFLATED) as z:
            for r in job.records:
                z.write(job.folder / r["output"], r["output"])
            z.write(mesh, mesh.name)
            z.write(manifest, "manifest.jsonl")
        return zpath


def read_upload(path: Path, name: str) -> bytes:
    """The bytes of an uploaded file; a missing, empty or too large one is refused with one line."""
    if not path.is_file():
        raise FaceSynthError(f"{name}: the upload is missing, upload it again")
    nbytes = path.stat().st_size
    if nbytes > MAX_UPLOAD_MB * 2**20:
        raise FaceSynthError(f"{name}: file too large ({nbytes / 2**20:.0f} MB; the limit is {MAX_UPLOAD_MB} MB)")
    if nbytes == 0:
        raise FaceSynthError(f"{name}: empty file")
    return path.read_bytes()


def file_stem(name: str) -> str:
    """The stem of an upload's name as output file names use it (letters, digits, '-_.'; else '_')."""
    s = Path(name).stem
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in s) or "photo"


def expression_specs(text: str | None) -> tuple[ExpressionSpec, ...] | None:
    """The expression field as RenderOptions.expressions: one spec, or None for 'fitted' (the photo's own)."""
    text = (text or "fitted").strip()
    return None if text == "fitted" else (parse_expression(text),)


def request_poses(yaw: float, pitch: float, yaw_list: str = "", pitch_list: str = "",
                  extra_views: int = 0) -> list[Pose]:
    """The poses of one request: the yaw x pitch grid of the lists, a slider's value where a list is
    empty. At most MAX_VIEWS (with `extra_views` more to come: the reference's pose), refused before
    any pose is made."""
    yaws = angle_list(yaw_list, "yaw") or [float(yaw)]
    pitches = angle_list(pitch_list, "pitch") or [float(pitch)]
    # each list has at most MAX_VIEWS angles; their product is checked before the poses are made
    check_pose_count(yaws, pitches, limit=MAX_VIEWS, names=("yaw", "pitch"), per="views per request")
    if len(yaws) * len(pitches) + extra_views > MAX_VIEWS:
        raise FaceSynthError(f"{len(yaws) * len(pitches)} poses and the reference's own: at most {MAX_VIEWS} "
                             "views per request")
    poses = [Pose(y, p, 0.0) for p in pitches for y in yaws]
    for v in yaws + pitches:
        if not -90.0 <= v <= 90.0:
            raise FaceSynthError(f"angles must lie in [-90, 90] degrees, got {v:g}")
    return poses


def angle_list(text: str | None, name: str) -> list[float]:
    """The angles of a list field ([] when empty); more than MAX_VIEWS are refused before any is made,
    with the count they would give (`parse_angles` counts a:b:step ranges without expanding them)."""
    if text is None or not str(text).strip():
        return []
    try:
        return parse_angles(str(text), name, limit=MAX_VIEWS)
    except AngleCountError as exc:
        raise FaceSynthError(f"{name} angles {shown_text(str(text))} would give {exc.count_text} angles; "
                             f"at most {MAX_VIEWS} views per request") from None
    except argparse.ArgumentTypeError as exc:
        raise FaceSynthError(str(exc).replace(f"--{name}", name)) from None


def render_status(entry: FitEntry, cached: bool, n_views: int, seconds: float, options: RenderOptions,
                  sfs: SFSState | None) -> str:
    """The status line of a render: the photo, the fit's time or reuse, the views and their time."""
    fit_note = "fit reused" if cached else f"fit {entry.seconds:.1f} s"
    if entry.rec.faces_found > 1:
        fit_note += f" · {entry.rec.faces_found} faces in the photo, the largest used"
    sfs_note = ""
    if sfs is not None and not sfs.applied:
        sfs_note = f" · SFS not applied ({sfs.result.warning or 'no change'})"
    return (f"**{entry.name}**: {fit_note} · {n_views} view(s) rendered in {seconds:.2f} s "
            f"({options.method}, {options.size} px){sfs_note}")


def pose_from_reference(poses: list[Pose], pose: Pose) -> list[Pose]:
    """The reference's whole pose first, then `poses` with its pitch and roll (duplicates dropped)."""
    out = [pose]
    for p in reference_poses(poses, pose, ("pitch", "roll")):
        if p not in out:
            out.append(p)
    return out


def angle_text(value: float) -> str:
    """An angle as the page shows it: degrees to 0.01 (2.6076 -> '2.61', 7.5 -> '7.5', -0.004 -> '0')."""
    return f"{round(float(value), 2) + 0.0:g}"


def reference_status(ref: ReferenceEntry, cached: bool, expression: bool, pose: bool) -> str:
    """What a render's status line adds about its reference photo: its fit, what it lent, its faces."""
    fit_note = "fit reused" if cached else f"fit {ref.seconds:.1f} s"
    lent = [n for n, on in (("expression", expression), ("head pose", pose)) if on]
    text = f" · reference **{ref.name}** ({fit_note}): {' and '.join(lent)} from it"
    if pose:
        p = ref.face.pose
        text += f" (yaw {angle_text(p.yaw)}°, pitch {angle_text(p.pitch)}°, roll {angle_text(p.roll)}°)"
    if ref.face.faces_found > 1:
        text += f"; {ref.face.faces_found} faces in it, the largest used"
    return text


def one_line(exc: BaseException) -> str:
    """The user-facing line of an error (FaceSynthError as is; anything else as an internal error)."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    if isinstance(exc, FaceSynthError):
        return text or type(exc).__name__
    return f"internal error: {type(exc).__name__}: {text}".rstrip(": ")
