"""One augment run: `augment(AugmentOptions) -> AugmentResult` checks the flags and OUTPUT, lists
the sources, fits the reference photos of --expression-from, skips the sources a run before
finished, groups the others into batches (`batch_sources`) and has the backend run `process_batch`
on each: the batch's photos fitted at once (`face3d.pipeline.reconstruct_largest_faces`), then each
one textured and rendered, one SourceResult per source. The driver alone writes OUTPUT (per source:
images, then its rows in the log, then the parquet). `run_augment_command` is `facesynth augment`.
"""
from __future__ import annotations

import io
import json
import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from face3d.camera import Pose
from face3d.devices import DEFAULT_DEVICE
from face3d.alignment import aligned_original
from face3d.errors import FaceSynthError, internal_error_line
from face3d.expressions import ExpressionSpec, expression_version, reference_label
from face3d.image_io import atomic_write_bytes, lock_output_folder, prepare_output_folder, remove_stale_temp_files
from face3d.labels import LABEL_VERSION
from face3d.landmarks import DEFAULT_DETECTOR, detect_faces
from face3d.morphable_model import load_morphable_model, resolve_model_dir
from face3d.pipeline import Reconstruction, reconstruct_faces, reconstruct_largest_faces
from face3d.reference_face import reference_expression, reference_sample
from face3d.render import render_version
from face3d.view_maps import encode_map
from facesynth.api import FaceViews, RenderOptions, render_face
from facesynth.augment.backends import Backend, SourceResult, rss_kb, run_sources, worker_model
from facesynth.augment.manifest import TIMING_COLUMNS, ManifestLog, ParquetSnapshots, failed_row, ordered_row
from facesynth.augment.sources import SourceFailure, SourceItem, list_sources, load_source
from facesynth.manifest import changed_setting, view_file_name
from facesynth.methods import ViewMaker, check_method_edits, load_method
from facesynth.options import DEFAULT_BATCH_SIZE, MAX_REFERENCES, UsageError, check_batch_size, check_pose_count
from facesynth.photos import photo_list
from facesynth.rotate_job import fit_reference_photo

#: Settings stored in OUTPUT/augment.json; a resumed run must match them.
OUTPUT_SETTINGS = ["input", "yaw", "pitch", "roll", "size", "align", "labels", "maps", "label_version", "background",
                   "method", "render_version",
                   "refiner_sha256", "refiner_inference", "capg_sha256", "seed", "model", "dense",
                   "expression", "expression_from", "expression_from_photos", "expression_from_weights",
                   "expression_sample", "expression_version", "shape_jitter", "jitter_samples", "keep_original",
                   "multi_face", "detector"]
RUN_SETTINGS = "augment.json"
LOCK_FILE = ".augment.lock"
#: Views (expressions and references x shape samples x poses) one source may ask for at most: a
#: worker holds all of a source's images at once. Checked, with the run's total, before any work.
MAX_VIEWS_PER_SOURCE = 10_000
#: Views one run may ask for at most (sources after --limit x views per source).
MAX_VIEWS = 100_000_000
#: Views one batch of sources may ask for at most: a worker holds a batch's images until it returns
#: them, so a source with many views is batched with fewer others (one alone past this).
MAX_VIEWS_PER_BATCH = MAX_VIEWS_PER_SOURCE


@dataclass
class AugmentOptions:
    """One augment run: the `facesynth augment` flags."""

    input: str
    output: str
    yaw: list[float]
    pitch: list[float] = field(default_factory=lambda: [0.0])
    roll: list[float] = field(default_factory=lambda: [0.0])
    method: str = "3d"
    refiner: str | None = None            # weights files; None: the environment, else the shipped ones
    capg: str | None = None
    size: int = 128
    background: str = "photo"
    keep_original: bool = False
    multi_face: str = "largest"
    dense: bool = True
    model: str | None = None
    workers: int = 1
    batch_size: int = DEFAULT_BATCH_SIZE  # sources a worker fits at once (1: one at a time); see batch_sources
    backend: str = "local"
    ray_address: str | None = None
    limit: int | None = None
    seed: int = 0
    expressions: tuple[ExpressionSpec, ...] | None = None   # None: the photo's own expression
    expression_from: str | None = None    # folder of reference photos: their expressions add to `expressions`
    expression_sample: int | None = None  # references per photo (a seeded draw); None: all of them
    shape_jitter: float = 0.0
    jitter_samples: int = 1
    retry_failed: bool = False
    progress: bool = True
    detector: str = DEFAULT_DETECTOR      # face3d.landmarks.DETECTORS
    align: str = "crop"
    labels: bool = True
    maps: tuple[str, ...] = ()
    device: str = DEFAULT_DEVICE          # face3d.devices: auto, cpu, cuda[:N]

    def poses(self) -> list[Pose]:
        """The pose grid, pitch-major as the file names sort."""
        return [Pose(float(y), float(p), float(r)) for p in self.pitch for y in self.yaw for r in self.roll]

    def render_options(self) -> RenderOptions:
        return RenderOptions(method=self.method, size=self.size, background=self.background,
                             expressions=None if self.expressions is None else tuple(self.expressions),
                             shape_jitter=float(self.shape_jitter or 0.0), jitter_samples=int(self.jitter_samples or 1),
                             seed=self.seed, dense=self.dense, refiner=self.refiner, capg=self.capg,
                             align=self.align, labels=self.labels, maps=tuple(self.maps), detector=self.detector,
                             device=self.device)

    def views_per_source(self, references: int = 0) -> tuple[int, str]:
        """The views of one source with `references` reference photos, and their factors as text
        ('(2 expression(s) + 3 reference(s)) x 2 shape sample(s) x 5 pose(s)')."""
        taken = min(self.expression_sample, references) if self.expression_sample else references
        n_expr = len(self.expressions or ())
        terms = [f"{n_expr} expression(s)"] if n_expr else []
        if taken:
            terms.append(f"{taken} reference(s)" + (f" drawn of {references}" if taken < references else ""))
        shapes = int(self.jitter_samples or 1) if (self.shape_jitter or 0) > 0 else 1
        poses = len(self.yaw) * len(self.pitch) * len(self.roll)
        factors = ([terms[0] if len(terms) == 1 else f"({' + '.join(terms)})"] if terms else []) + (
            [f"{shapes} shape sample(s)"] if shapes > 1 else []) + [f"{poses} pose(s)"]
        return max(n_expr + taken, 1) * shapes * poses, " x ".join(factors)

    def rows_per_source(self, references: int = 0) -> int:
        """The ok rows of a finished source: views per variant and pose, and the original if kept."""
        return self.views_per_source(references)[0] + (1 if self.keep_original else 0)


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker needs for every source (pickled to pool workers and Ray tasks): the model
    folder, the poses, the render options with the weights files the driver loaded, and the flags
    that shape a source's rows."""

    model: str
    poses: tuple[Pose, ...]
    options: RenderOptions
    keep_original: bool = False
    multi_face: str = "largest"
    references: tuple[ExpressionSpec, ...] = ()   # the reference photos' expressions, fitted in the driver
    expression_sample: int | None = None          # references per source; None: all

    @property
    def method(self) -> str:
        return self.options.method

    def source_options(self, key: str) -> RenderOptions:
        """The render options of the source `key`: --expression's specs, then the references it
        takes (all, or its seeded draw of `expression_sample`: the same whatever the other sources)."""
        refs = self.references
        if not refs:
            return self.options
        if self.expression_sample:
            refs = tuple(refs[i] for i in reference_sample(len(refs), min(self.expression_sample, len(refs)),
                                                           self.options.seed, key))
        return replace(self.options, expressions=tuple(self.options.expressions or ()) + refs)


@dataclass
class AugmentResult:
    output: Path
    selected: int = 0                 # sources in scope (after --limit)
    skipped: int = 0                  # already done before this run
    processed: int = 0                # done in this run
    seconds: float = 0.0              # wall time of the processing loop
    ok_sources: int = 0               # over the whole manifest
    failed_sources: int = 0
    failed_selected: int = 0
    views: int = 0
    plan: str = ""                    # the views of one source: 'N views per source (factors)'
    reasons: dict = field(default_factory=dict)
    notes: dict = field(default_factory=dict)
    rows: int = 0
    batch_size: int = 0               # the sources of one batch in this run (the last may have fewer)
    workers: dict = field(default_factory=dict)   # pid -> {"first_rss_kb", "first_peak_kb", "last_rss_kb", "last_peak_kb", "items"}
    first_done: float | None = None   # perf_counter of the first and the last finished source
    last_done: float | None = None
    first_batch: int = 1              # the sources of the first finished batch (they finish together)

    @property
    def rate(self) -> float:
        """Sources per second over the whole processing loop (worker start-up included)."""
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    @property
    def steady_rate(self) -> float:
        """Sources per second between the first and the last finished source (start-up excluded):
        the sources after the first finished batch over that time; the plain rate when one batch
        held them all."""
        later = self.processed - self.first_batch
        if later < 1 or self.last_done is None or self.last_done <= self.first_done:
            return self.rate
        return later / (self.last_done - self.first_done)

    def count_processed(self, res: SourceResult) -> None:
        """One more source done in this run, and its worker's memory."""
        w = self.workers.setdefault(res.pid, {"first_rss_kb": res.rss_kb, "first_peak_kb": res.peak_kb, "items": 0})
        w.update(last_rss_kb=res.rss_kb, last_peak_kb=res.peak_kb, items=w["items"] + 1)
        self.processed += 1
        self.last_done = time.perf_counter()
        if self.first_done is None:
            self.first_done, self.first_batch = self.last_done, max(1, res.batch_size)

    def count_manifest(self, log: ManifestLog, rows: list[dict], selected: set) -> None:
        """The totals over the whole manifest: sources ok and failed, by reason and by note."""
        self.rows = len(rows)
        for source, srows in log.by_source.items():
            if srows[0].get("status") == "ok":
                self.ok_sources += 1
                self.views += len(srows)
                for k in note_kinds(srows[0].get("note") or ""):
                    self.notes[k] = self.notes.get(k, 0) + 1
            else:
                self.failed_sources += 1
                reason = srows[0].get("reason") or "failed"
                self.reasons[reason] = self.reasons.get(reason, 0) + 1
                if source in selected:
                    self.failed_selected += 1

    def summary_text(self) -> str:
        lines = [f"facesynth augment: {self.ok_sources + self.failed_sources} source(s) in {self.output}: "
                 f"{self.ok_sources} ok ({self.views} images), {self.failed_sources} failed"
                 + (": " + _counts_text(self.reasons) if self.reasons else "")]
        lines.append(f"  this run: {self.processed} processed in {self.seconds:.1f} s ({self.rate:.2f} images/s), "
                     f"{self.skipped} already done")
        if self.plan:
            lines.append(f"  views: {self.plan}")
        if self.notes:
            lines.append("  notes: " + _counts_text(self.notes))
        lines.append(f"  manifest: {self.output / 'manifest.parquet'} ({self.rows} rows)")
        return "\n".join(lines)


def _counts_text(counts: dict) -> str:
    """'a 3, b 1': the most frequent first."""
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def note_kinds(note: str) -> list[str]:
    """The kinds of the notes of a row's `note` ("grayscale", "downscaled", ...), as the summary counts them."""
    out = []
    for part in filter(None, (p.strip() for p in note.split(";"))):
        if "faces found" in part:
            out.append("several faces (largest used)")
        elif part.startswith("downscaled"):
            out.append("downscaled")
        elif part.endswith("converted to RGB"):
            out.append(part[: -len(" converted to RGB")])
        elif part != "used the largest":
            out.append(part)
    return out


# ---------------------------------------------------------------------------------------------
# The work of one source (runs in a worker: local process, Ray task or the driver itself)


class _Clock:
    """A source's timings (the manifest's `seconds_*`) and how many faces it showed, kept while
    it is processed so that a failure row has what was found before it. In a batch, the source's
    `seconds_total` is the sum of its own stages and its share of the batch's fit (`shared_fit`)."""

    def __init__(self):
        self.start = self.last = time.perf_counter()
        self.times: dict[str, float | None] = {c: None for c in TIMING_COLUMNS}
        self.faces: int | None = None
        self.batched = False

    def lap(self, column: str) -> None:
        now = time.perf_counter()
        self.times[column] = now - self.last
        self.last = now

    def shared_fit(self, seconds: float) -> None:
        """The source's share of its batch's fit; its next lap starts now."""
        self.times["seconds_fit"] = seconds
        self.batched = True
        self.last = time.perf_counter()

    def rounded(self) -> dict:
        if self.batched:
            self.times["seconds_total"] = sum(v for k, v in self.times.items() if k != "seconds_total" and v is not None)
        else:
            self.times["seconds_total"] = time.perf_counter() - self.start
        return {k: (round(v, 4) if v is not None else None) for k, v in self.times.items()}


def failure_rows(item: SourceItem, base: dict, exc: Exception, faces: int | None) -> list[dict]:
    """The one failed row of a source that raised `exc`: a SourceFailure's reason, "unreadable" for
    another FaceSynthError, "internal error" (one line, no traceback) for anything else."""
    if isinstance(exc, SourceFailure):
        return [failed_row(base, exc.reason, str(exc), faces)]
    if isinstance(exc, FaceSynthError):
        return [failed_row(base, "unreadable", str(exc), faces)]
    return [failed_row(base, "internal error", internal_error_line(item.source, exc), faces)]


def source_result(item: SourceItem, rows: list[dict], images: dict, clock: _Clock,
                  batch_size: int = 1) -> SourceResult:
    """The source's rows with its timings, its images, this worker's pid and memory, and the size
    of the batch it came in."""
    times = clock.rounded()
    for r in rows:
        r.update(times)
    rss, peak = rss_kb()
    return SourceResult(item.index, item.source, [ordered_row(r) for r in rows], images, os.getpid(), rss, peak,
                        batch_size)


def source_base(item: SourceItem, cfg: WorkerConfig) -> dict:
    return {"source": item.source, "identity": item.identity, "method": cfg.method}


def process_source(item: SourceItem, cfg: WorkerConfig) -> SourceResult:
    """Fit, texture and render one source (the one-photo path, `--batch-size 1`). Never raises for
    a bad input: the failure becomes a row."""
    clock = _Clock()
    base = source_base(item, cfg)
    try:
        rows, images = render_source(item, cfg, base, clock)
    except Exception as exc:  # the batch goes on; the reason is recorded, not a traceback
        rows, images = failure_rows(item, base, exc, clock.faces), {}
    return source_result(item, rows, images, clock)


@dataclass(eq=False)
class _Staged:
    """A source of a batch before the fit: its photo, notes and detections, or why it failed."""

    item: SourceItem
    base: dict
    clock: _Clock
    image: np.ndarray | None = None
    notes: list = field(default_factory=list)
    faces: list = field(default_factory=list)
    error: Exception | None = None


def process_batch(items: list[SourceItem], cfg: WorkerConfig) -> list[SourceResult]:
    """One SourceResult per source of `items`, in order: each photo loaded and its faces detected,
    the largest faces of all fitted at once (`reconstruct_largest_faces`: one batched fit),
    then each textured and rendered. A source that fails (unreadable, no face, --multi-face skip,
    its fit or render) is its own failed row; the others go on. Each source's `seconds_fit` is the
    batch's fit time divided among the sources in it. One source takes `process_source`."""
    if len(items) == 1:
        return [process_source(items[0], cfg)]
    model = worker_model(cfg.model)
    staged = [stage_source(item, cfg) for item in items]
    ready = [s for s in staged if s.error is None]
    t0 = time.perf_counter()
    recs = reconstruct_largest_faces([s.image for s in ready], model,
                                     cfg.options.fit_config(seed=cfg.options.seed),
                                     faces=[s.faces for s in ready], sources=[s.item.source for s in ready])
    share = (time.perf_counter() - t0) / max(len(ready), 1)
    rec_of = {id(s): rec for s, rec in zip(ready, recs)}
    out = []
    for s in staged:
        rows, images = [], {}
        if s.error is None:
            s.clock.shared_fit(share)
            rec = rec_of[id(s)]
            if isinstance(rec, Exception):
                s.error = rec
            else:
                try:
                    rows, images = render_fitted(s.item, cfg, s.base, s.clock, s.image, s.notes, rec)
                except Exception as exc:  # the batch goes on; the reason is recorded, not a traceback
                    s.error = exc
        if s.error is not None:
            rows, images = failure_rows(s.item, s.base, s.error, s.clock.faces), {}
        out.append(source_result(s.item, rows, images, s.clock, len(items)))
    return out


def stage_source(item: SourceItem, cfg: WorkerConfig) -> _Staged:
    """A source of a batch loaded and its faces detected (or the failure that stopped it)."""
    s = _Staged(item, source_base(item, cfg), _Clock())
    try:
        s.image, s.notes = load_source(item)
        s.clock.lap("seconds_load")
        s.faces = detect_largest(item, s.image, cfg, s.notes, s.clock)
    except Exception as exc:  # recorded as the source's failure row
        s.error = exc
    return s


def render_source(item: SourceItem, cfg: WorkerConfig, base: dict, clock: _Clock) -> tuple[list[dict], dict]:
    """The ok rows of one source and its images (PNG bytes by path relative to OUTPUT)."""
    model = worker_model(cfg.model)
    image, notes = load_source(item)
    clock.lap("seconds_load")
    rec = fit_largest_face(item, image, model, cfg, notes, clock)
    return render_fitted(item, cfg, base, clock, image, notes, rec)


def render_fitted(item: SourceItem, cfg: WorkerConfig, base: dict, clock: _Clock, image: np.ndarray,
                  notes: list[str], rec: Reconstruction) -> tuple[list[dict], dict]:
    """The ok rows and images of a source whose largest face is fitted and textured (`rec`)."""
    model = worker_model(cfg.model)
    ok = dict(base, status="ok", error="", reason="", note="; ".join(notes), faces=clock.faces,
              fit_landmark_error=round(float(rec.fit.landmark_error), 6))
    rows, images = [], {}
    if cfg.keep_original:
        rel = f"{item.stem}_original.png"
        images[rel] = png_bytes(aligned_original(rec.fit, image, model, cfg.options.size))
        sp = rec.fit.pose
        rows.append(dict(ok, output=rel, kind="original", yaw=round(sp.yaw, 3), pitch=round(sp.pitch, 3),
                         roll=round(sp.roll, 3)))
    maker = load_method(cfg.options.method, cfg.options.refiner, cfg.options.capg,  # weights cached per process
                        device=cfg.options.torch_device)
    key = f"{item.identity}/{item.stem}"
    options = cfg.source_options(key)
    for views in render_face(rec, image, model, list(cfg.poses), options, maker, key=key):
        fields = variant_fields(views, options)
        for i, (pose, img) in enumerate(zip(views.poses, views.images)):
            rel = view_file_name(f"{item.stem}{views.variant.tag}", pose)
            images[rel] = png_bytes(img)
            rows.append(dict(ok, output=rel, kind="view", yaw=float(pose.yaw), pitch=float(pose.pitch),
                             roll=float(pose.roll), align=options.align, **fields, **label_fields(views, i, rel)))
            for name, maps in views.maps.items():
                images[rows[-1][f"{name}_map"]] = encode_map(name, maps[i])
    clock.lap("seconds_render")
    return rows, images


def detect_largest(item: SourceItem, image: np.ndarray, cfg: WorkerConfig, notes: list[str], clock: _Clock) -> list:
    """The photo's faces, largest first; SourceFailure for none, or for several under --multi-face skip."""
    faces = detect_faces(image, detector=cfg.options.detector)
    clock.faces = len(faces)
    clock.lap("seconds_detect")
    if not faces:
        raise SourceFailure("no face", f"{item.source}: no face found")
    if len(faces) > 1:
        if cfg.multi_face == "skip":
            raise SourceFailure("several faces", f"{item.source}: {len(faces)} faces found (--multi-face skip)")
        notes.append(f"{len(faces)} faces found; used the largest")
    return faces


def fit_largest_face(item: SourceItem, image: np.ndarray, model, cfg: WorkerConfig, notes: list[str],
                     clock: _Clock) -> Reconstruction:
    """Detect the faces (SourceFailure for none, or for several under --multi-face skip) and fit the largest."""
    faces = detect_largest(item, image, cfg, notes, clock)
    fit_config = cfg.options.fit_config(seed=cfg.options.seed)
    rec = reconstruct_faces(image, model, fit_config=fit_config, source=item.source, faces=faces)[0]
    clock.lap("seconds_fit")
    return rec


def variant_fields(views: FaceViews, options: RenderOptions) -> dict:
    """A view row's expression and shape fields: None where the run asked for no expression / no shape sample."""
    record = views.record
    asked = bool(options.expressions)
    return {"expression": record["expression"] if asked else None,
            "expression_from": record.get("expression_from"),
            "expression_split": record["expression_split"] if asked else None,
            "shape_jitter": record["shape_jitter"] if views.variant.shape is not None else None,
            "shape_jitter_norm": record.get("shape_jitter_norm")}


def label_fields(views: FaceViews, i: int, rel: str) -> dict:
    """A view row's labels (`manifest.LABEL_COLUMNS`) and the file names of its maps (`rel`: the view's)."""
    fields = views.view_fields(i)
    if fields:
        fields["camera"] = {"crop_transform": None, **fields["camera"]}
    for name in views.maps:
        fields[f"{name}_map"] = rel[: -len(".png")] + f"_{name}.png"
    return fields


def png_bytes(image: np.ndarray) -> bytes:
    """PNG encoding exactly as `face3d.image_io.save_png` writes it (the driver writes atomically)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# The driver


def augment(opts: AugmentOptions) -> AugmentResult:
    """Run (or resume) an augmentation job; returns counts, timing and per-worker memory."""
    check_pose_count(opts.yaw, opts.pitch, opts.roll)   # the parser checked it too; this is for direct callers
    check_batch_size(opts.batch_size)
    inp, out = check_folders(opts)
    photos = reference_photos(opts)           # listed and capped before any work
    sources = list_sources(inp)
    check_view_count(opts, len(sources[: opts.limit] if opts.limit else sources), len(photos))
    model_dir = resolve_model_dir(opts.model)
    model = load_morphable_model(opts.model)  # fail early, in the driver, with a clear message
    options = opts.render_options()
    options.check(model)                      # gan with 3D edits, unknown blendshape names: before any work
    check_method_edits(options.method, {"--expression-from": bool(photos)})
    maker = load_method(options.method, options.refiner, options.capg,  # missing weights fail here too
                        device=options.torch_device)
    references = fit_references(photos, model, opts)   # before OUTPUT is touched: a bad reference writes nothing
    settings = output_settings(opts, inp, model, model_dir, maker, references)
    prepare_output_folder(out, "OUTPUT")      # created and writable, or one line naming it
    lock = lock_output_folder(out, LOCK_FILE, f"OUTPUT {out}: another augment run is writing there")
    try:
        check_settings(out, settings)
        remove_stale_temp_files(out)  # a killed run's temp files: the lock says no run writes them now
        cfg = WorkerConfig(os.path.abspath(model_dir), tuple(opts.poses()), worker_options(options, maker),
                           opts.keep_original, opts.multi_face, references, opts.expression_sample)
        return run_job(opts, out, sources, cfg)
    finally:
        lock.release()


def reference_photos(opts: AugmentOptions) -> list[str]:
    """The reference photos of --expression-from (the folder's image files, sorted), at most
    MAX_REFERENCES, each with its own file-name tag; [] without the flag."""
    if opts.expression_from is None:
        if opts.expression_sample:
            raise UsageError("--expression-sample needs --expression-from")
        return []
    folder = Path(opts.expression_from)
    if not folder.is_dir():
        what = "no such folder" if not folder.exists() else "not a folder (give a folder of reference photos)"
        raise FaceSynthError(f"--expression-from {folder}: {what}")
    try:
        photos = photo_list([str(folder)], MAX_REFERENCES, "reference photos; use a folder with fewer")
    except FaceSynthError as exc:
        raise FaceSynthError(f"--expression-from: {exc}") from None
    tags: dict[str, str] = {}
    for p in photos:
        tag = reference_label(p)
        if tag.lower() in tags:   # a.jpg and a.png, or names that differ only in case or odd characters
            raise FaceSynthError(f"--expression-from: {Path(tags[tag.lower()]).name} and {Path(p).name} in {folder} "
                                 f"give the same file-name tag from-{tag}; rename one")
        tags[tag.lower()] = p
    if opts.expression_sample and opts.expression_sample > len(photos):
        raise FaceSynthError(f"--expression-sample {opts.expression_sample}: {folder} has only {len(photos)} "
                             "reference photo(s)")
    return photos


def check_view_count(opts: AugmentOptions, sources: int, references: int) -> None:
    """Refuse, before any work, a run whose sources would each get more than MAX_VIEWS_PER_SOURCE
    views, or that would write more than MAX_VIEWS in all; the message names the factors."""
    per_source, factors = opts.views_per_source(references)
    if per_source > MAX_VIEWS_PER_SOURCE:
        raise FaceSynthError(f"{factors} = {per_source} views per photo; at most {MAX_VIEWS_PER_SOURCE} "
                             "(fewer poses or expressions, or --expression-sample N)")
    if sources * per_source > MAX_VIEWS:
        raise FaceSynthError(f"{sources} photo(s) x {factors} = {sources * per_source} views; at most {MAX_VIEWS} "
                             "per run (--limit K, fewer poses or expressions, or --expression-sample N)")


def fit_references(photos: list[str], model, opts: AugmentOptions) -> tuple[ExpressionSpec, ...]:
    """Each reference photo fitted once, here in the driver, as an expression spec for the workers.
    A bad one (unreadable, no face) is one line naming the flag and the file. Torch runs with one
    thread, as in the workers: the same coefficients on any machine, so a resumed run compares them."""
    if not photos:
        return ()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        bar = tqdm(photos, desc="references", unit="photo", disable=not opts.progress or len(photos) < 2)
        return tuple(reference_expression(fit_reference_photo(p, model, opts.dense, "--expression-from", detector=opts.detector), model)
                     for p in bar)
    finally:
        torch.set_num_threads(threads)


def worker_options(options: RenderOptions, maker: ViewMaker) -> RenderOptions:
    """`options` naming the weights files the driver loaded, so every worker uses those."""
    weights = None if maker.weights is None else maker.weights.path
    return replace(options, refiner=weights if maker.name == "hybrid" else None,
                   capg=weights if maker.name == "gan" else None)


def check_folders(opts: AugmentOptions) -> tuple[Path, Path]:
    """INPUT and OUTPUT as paths; refuses an OUTPUT that is a file or lies inside INPUT, and
    --ray-address without the Ray backend."""
    inp, out = Path(opts.input), Path(opts.output)
    if out.exists() and not out.is_dir():
        raise FaceSynthError(f"OUTPUT {out}: exists and is not a folder")
    if inp.is_dir():
        ri, ro = os.path.realpath(inp), os.path.realpath(out)
        if ro == ri or ro.startswith(ri + os.sep):
            raise FaceSynthError(f"OUTPUT {out} lies inside INPUT {inp}; choose a folder outside it")
    if opts.backend == "local" and opts.ray_address:
        raise FaceSynthError("--ray-address needs --backend ray")
    return inp, out


def output_settings(opts: AugmentOptions, inp: Path, model, model_dir, maker: ViewMaker,
                    references: tuple[ExpressionSpec, ...] = ()) -> dict:
    """What OUTPUT/augment.json records; a resumed run must repeat its OUTPUT_SETTINGS. The
    references are recorded by file name with the coefficients their fit gave."""
    specs = None if not opts.expressions else list(opts.expressions)
    weights = maker.settings()
    return {"input": os.path.abspath(inp), "yaw": [float(v) for v in opts.yaw],
            "pitch": [float(v) for v in opts.pitch], "roll": [float(v) for v in opts.roll],
            "size": opts.size, "align": opts.align, "labels": opts.labels, "maps": list(opts.maps),
            "label_version": LABEL_VERSION, "background": opts.background, "method": opts.method, "render_version": render_version(opts.method),
            "seed": opts.seed, "model": model.name,
            "model_dir": str(model_dir), "dense": opts.dense, "keep_original": opts.keep_original,
            "multi_face": opts.multi_face, "detector": opts.detector, "format": 1,
            "expression": [e.text for e in specs] if specs else None, **reference_settings(opts, references),
            "expression_version": expression_version(list(specs or ()) + list(references)),
            "shape_jitter": float(opts.shape_jitter or 0.0), "jitter_samples": int(opts.jitter_samples or 1),
            "refiner": maker.weights.path if opts.method == "hybrid" else None,
            "refiner_sha256": weights["refiner_sha256"], "refiner_inference": weights["refiner_inference"],
            "capg_sha256": weights["capg_sha256"]}


def reference_settings(opts: AugmentOptions, references: tuple[ExpressionSpec, ...]) -> dict:
    """augment.json's record of --expression-from: the folder, its photos and their coefficients."""
    if not references:
        return {"expression_from": None, "expression_from_photos": None, "expression_from_weights": None,
                "expression_sample": None}
    return {"expression_from": os.path.abspath(opts.expression_from),
            "expression_from_photos": [Path(r.reference).name for r in references],
            "expression_from_weights": {Path(r.reference).name: dict(r.raw) for r in references},
            "expression_sample": opts.expression_sample}


def check_settings(out: Path, settings: dict) -> None:
    """Refuse an OUTPUT made with other settings; write them into a new one."""
    path = out / RUN_SETTINGS
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = None
        if isinstance(old, dict):
            change = changed_setting(old, settings, OUTPUT_SETTINGS)
            if change:
                raise FaceSynthError(f"OUTPUT {out} was made with other settings ({change}); "
                                     "use a new OUTPUT folder or the same flags")
            return
    atomic_write_bytes(path, (json.dumps(settings, indent=2) + "\n").encode())


class _Collector:
    """The driver's side of each finished source: its images written, then its rows logged (a
    logged source is complete), the counts and the progress bar updated, the parquet refreshed."""

    def __init__(self, out: Path, log: ManifestLog, result: AugmentResult, bar, snapshots: ParquetSnapshots):
        self.out, self.log, self.result, self.bar, self.snapshots = out, log, result, bar, snapshots
        self.failed = 0

    def __call__(self, res: SourceResult) -> None:
        for rel, data in res.images.items():
            atomic_write_bytes(self.out / rel, data)
        self.log.append(res.rows)          # after the images: a logged source is complete
        if res.rows and res.rows[0]["status"] == "failed":
            self.failed += 1
        self.result.count_processed(res)
        self.bar.set_postfix(failed=self.failed, refresh=False)
        self.bar.update(1)
        self.snapshots.maybe_write()


def run_job(opts: AugmentOptions, out: Path, sources: list[SourceItem], cfg: WorkerConfig) -> AugmentResult:
    """Process the selected sources not yet done, with OUTPUT locked and its settings checked."""
    log = ManifestLog(out / "manifest.jsonl")
    selected = sources[: opts.limit] if opts.limit else sources
    expected = opts.rows_per_source(len(cfg.references))
    todo = []
    for s in selected:
        status = log.status(s.source, expected)
        if not (status == "ok" or (status == "failed" and not opts.retry_failed)):
            todo.append(s)
    per_source, factors = opts.views_per_source(len(cfg.references))
    images = opts.rows_per_source(len(cfg.references)) * (1 + len(opts.maps))   # a source's images, maps included
    batches = batch_sources(todo, opts.batch_size, opts.workers, images, selected)
    result = AugmentResult(output=out, selected=len(selected), skipped=len(selected) - len(todo),
                           plan=f"{per_source} per source ({factors})", batch_size=max(map(len, batches), default=0))
    snapshots = ParquetSnapshots(out / "manifest.parquet", log, {s.source: s.index for s in sources})
    bar = tqdm(total=len(todo), desc="augment", unit="img", disable=not opts.progress or not todo,
               dynamic_ncols=True, smoothing=0.1)
    t0 = time.perf_counter()
    try:
        run_sources(process_batch, batches, cfg, _Collector(out, log, result, bar, snapshots),
                    Backend(opts.backend, opts.workers, opts.ray_address))
    finally:
        result.seconds = time.perf_counter() - t0
        bar.close()
        rows = snapshots.final()
    result.count_manifest(log, rows, {s.source for s in selected})
    return result


def batch_sources(todo: list[SourceItem], batch_size: int, workers: int, views: int,
                  selected: list[SourceItem] | None = None) -> list[list[SourceItem]]:
    """The sources to do (`todo`) in batches: the run's `selected` sources (default: `todo`) cut
    into consecutive batches in input order, each keeping the sources still to do (empty ones
    dropped), so a resumed run forms the batches a fresh run forms, but for those partly done. A
    batch holds `batch_size` sources, fewer where
    - several workers would not each get at least 2 batches: ceil(selected / (2 workers)), so every
      worker has work and the last batches do not leave one worker alone at the end;
    - the batch's sources would ask for more than MAX_VIEWS_PER_BATCH images (`views` per source):
      a worker holds a batch's images until it returns them.
    The batches depend on the number of workers only in runs of fewer than 2 x workers x batch_size
    sources (a face's batched dense fit depends on its batch within float rounding)."""
    selected = todo if selected is None else selected
    size = min(batch_size, max(1, MAX_VIEWS_PER_BATCH // max(views, 1)))
    if workers > 1:
        size = min(size, math.ceil(len(selected) / (2 * workers)))
    size = max(1, size)
    wanted = {id(s) for s in todo}
    batches = ([s for s in selected[i:i + size] if id(s) in wanted] for i in range(0, len(selected), size))
    return [b for b in batches if b]


def run_augment_command(args) -> int:
    """`facesynth augment`: the parsed flags as AugmentOptions; exit code 1 when a selected source failed."""
    opts = AugmentOptions(input=args.input, output=args.output, yaw=args.yaw, pitch=args.pitch, roll=args.roll,
                          method=args.method, refiner=args.refiner, capg=args.capg, size=args.size,
                          background=args.background,
                          keep_original=args.keep_original, multi_face=args.multi_face, dense=args.dense,
                          model=args.model, workers=args.workers, batch_size=args.batch_size, backend=args.backend,
                          ray_address=args.ray_address, limit=args.limit, seed=args.seed,
                          expressions=None if args.expression is None else tuple(args.expression),
                          expression_from=args.expression_from, expression_sample=args.expression_sample,
                          shape_jitter=args.shape_jitter, jitter_samples=args.jitter_samples,
                          retry_failed=args.retry_failed, progress=args.progress, align=args.align,
                          labels=args.labels, maps=tuple(args.maps), detector=args.detector, device=args.device)
    result = augment(opts)
    print(result.summary_text())
    return 0 if result.failed_selected == 0 else 1
