"""`facesynth rotate`: photos (or folders of photos) in, one PNG per (face, pose) and a JSON line
per view out, in one output folder that one run writes at a time.

    job = RotateJob(images=["me.jpg"], poses=[Pose(30, 0, 0)], out=Path("out"), options=RenderOptions())
    exit_code = run_rotate(job)
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from tqdm import tqdm

from face3d.camera import Pose
from face3d.errors import FaceSynthError, internal_error_line
from face3d.expressions import expression_version
from face3d.labels import LABEL_VERSION
from face3d.image_io import (atomic_write_bytes, load_image, lock_output_folder, prepare_output_folder,
                             remove_stale_temp_files, save_png)
from face3d.landmarks import load_landmark_models
from face3d.mesh_export import export_mesh
from face3d.morphable_model import load_morphable_model
from face3d.pipeline import describe_largest_face, reconstruct_faces, reconstruct_largest_faces
from face3d.reference_face import POSE_ANGLES, ReferenceFace, reference_poses
from face3d.render import render_version
from face3d.view_maps import encode_map
from facesynth.api import RenderOptions, load_reference, render_face, with_reference_expression
from facesynth.manifest import Manifest, changed_setting, view_file_name, view_record
from facesynth.methods import load_method
from facesynth.options import DEFAULT_BATCH_SIZE, given_angles
from facesynth.photos import rotate_inputs

#: `DIR/rotate.json`: the settings that decide what a run writes; `--resume` must match them.
RUN_SETTINGS = "rotate.json"
#: photos whose largest faces are fitted at once (one batched fit; not with --all-faces)
ROTATE_BATCH_SIZE = DEFAULT_BATCH_SIZE


@dataclass
class RotateJob:
    """One `rotate` run: which photos, which poses, how, and where to."""

    images: list[str]
    poses: list[Pose]
    out: Path
    options: RenderOptions = field(default_factory=RenderOptions)
    model: str | None = None
    export_mesh: str | None = None        # "obj", "ply" or "glb"
    save_fit: bool = False
    threads: int | None = None
    resume: bool = False
    expression_from: str | None = None    # reference photo: the views take its expression too
    pose_from: str | None = None          # reference photo: the angles not in `given_angles` come from it
    given_angles: tuple[str, ...] = POSE_ANGLES


def run_settings(job: RotateJob, model, maker) -> dict:
    """What a resumed run into the same folder must repeat to produce the same views."""
    o = job.options
    specs = None if o.expressions is None else list(o.expressions)
    from_weights = {e.reference: dict(e.raw) for e in specs or [] if e.reference}
    return {"method": o.method, "render_version": render_version(o.method), "size": o.size, "align": o.align,
            "labels": o.labels, "maps": list(o.maps), "label_version": LABEL_VERSION, "expression_from": from_weights or None, "pose_from": job.pose_from,
            "poses": [list(p.as_tuple()) for p in job.poses], "model": model.name, **maker.settings(),
            "all_faces": o.all_faces, "background": o.background, "dense": o.dense,
            "export_mesh": job.export_mesh, "save_fit": job.save_fit,
            "expression": None if not specs else [e.text for e in specs], "expression_version": expression_version(specs),
            "shape_jitter": float(o.shape_jitter), "jitter_samples": o.jitter_samples, "seed": o.seed,
            "sfs": o.sfs, "relight": o.relight, "detector": o.detector}


def resume_rotate(out: Path, settings: dict, manifest: Manifest) -> set[str]:
    """The sources a stopped run finished (every view in the manifest and on disk); the manifest is
    cut back to their records, so the others start clean. Refuses a folder made with other flags."""
    path = out / RUN_SETTINGS
    if not path.is_file():
        if manifest.read():
            raise FaceSynthError(f"--resume: {out} has no {RUN_SETTINGS} (not made by this version of `facesynth "
                                 "rotate`); use another --out")
        return set()
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        raise FaceSynthError(f"--resume: {path} is unreadable; use another --out") from None
    change = changed_setting(old, settings, settings)
    if change:
        raise FaceSynthError(f"--resume: {out} was made with other settings ({change}); use the same flags or another --out")
    records = manifest.read()
    by_source: dict[str, list[dict]] = {}
    for r in records:
        by_source.setdefault(str(r.get("source")), []).append(r)

    def finished(rows: list[dict]) -> bool:
        files = [r.get(k) for r in rows for k in ("output", "mesh") if r.get(k)]
        return all("error" not in r for r in rows) and all((out / f).is_file() for f in files)

    done = {src for src, rows in by_source.items() if finished(rows)}
    manifest.rewrite([r for r in records if str(r.get("source")) in done])
    return done


#: `DIR/.rotate.lock`: the run writing into DIR holds it (fcntl.flock) from start to end.
LOCK_FILE = ".rotate.lock"


def open_run_folder(out: Path, resume: bool):
    """Create `out` and check that it can be written, lock it for this run, refuse a folder that
    already holds a run unless `resume`, then remove the temp files a killed run left in it (safe:
    the lock proves no other run writes there; its subfolders are left alone, rotate writes none).
    Returns the lock (`FolderLock`) to release at the end."""
    prepare_output_folder(out, "--out")
    lock = lock_output_folder(out, LOCK_FILE, f"--out {out}: another rotate run is writing there; "
                                              "wait for it to end or choose another --out")
    try:
        if (out / "augment.json").exists():
            raise FaceSynthError(f"--out {out} holds an augment run; choose another --out")
        if not resume and ((out / "manifest.jsonl").exists() or (out / RUN_SETTINGS).exists()):
            raise FaceSynthError(f"--out {out} already holds a rotate run; pass --resume to continue it with the "
                                 "same flags, or choose another --out")
        remove_stale_temp_files(out, recursive=False)  # rotate writes nothing below `out`
    except BaseException:
        lock.release()
        raise
    return lock


def run_rotate(job: RotateJob, helper=None, inputs: tuple[list[str], list[str]] | None = None) -> int:
    """Run `job`; returns the exit code (0 all photos done, 1 some failed). `helper`: the CLI's
    detection helper (face3d.detection_helper), forked before torch loaded and already sent the
    photos of `inputs`, the job's `rotate_inputs` as the CLI listed them (`facesynth.cli.run_command`);
    without `inputs` they are listed here."""
    references, photos = inputs or rotate_inputs(job.images, job.expression_from, job.pose_from)
    job.options.check()
    model = load_morphable_model(job.model)
    job = apply_references(job, model, helper)      # before the folder is touched: a bad reference writes nothing
    job.options.check(model)
    maker = load_method(job.options.method, job.options.refiner, job.options.capg,   # missing weights: nothing written
                        device=job.options.torch_device)
    lock = open_run_folder(job.out, job.resume)
    try:
        return _rotate(job, photos, helper, model, maker)
    finally:
        lock.release()


def apply_references(job: RotateJob, model, helper=None) -> RotateJob:
    """The job with its reference photos fitted and applied: the reference's expression added to
    the options, the angles the user did not give taken from the pose reference. One photo given
    for both is fitted once; one with several faces lends its largest, said once on stderr."""
    fitted: dict[str, ReferenceFace] = {}

    def reference(path: str, flag: str) -> ReferenceFace:
        if path not in fitted:
            faces = None if helper is None else helper.faces(path)
            fitted[path] = fit_reference_photo(path, model, job.options.dense, flag, faces, job.options.detector)
        return fitted[path]

    options, poses = job.options, job.poses
    if job.pose_from:
        taken = tuple(a for a in POSE_ANGLES if a not in job.given_angles)
        if not taken:
            raise FaceSynthError("--pose-from: --yaw, --pitch and --roll are all given; nothing is left to take "
                                 "from the reference")
        poses = reference_poses(poses, reference(job.pose_from, "--pose-from").pose, taken)
    if job.expression_from:
        options = with_reference_expression(options, reference(job.expression_from, "--expression-from"), model)
    return replace(job, options=options, poses=poses)


def fit_reference_photo(path: str, model, dense: bool, flag: str, faces=None, detector: str = "auto") -> ReferenceFace:
    """The reference photo `path` of `flag` fitted (`faces`: its detections when made elsewhere,
    else found with `detector`);
    any problem is one FaceSynthError line that starts with the flag and names the file. One with
    several faces lends its largest, as a note on stderr says."""
    try:
        ref = load_reference(path, model, dense, faces, detector)
    except FaceSynthError as exc:
        raise FaceSynthError(f"{flag}: {exc}") from None
    except Exception as exc:  # a fit that breaks down is still one line, not a traceback
        raise FaceSynthError(internal_error_line(f"{flag}: {path}", exc)) from None
    if ref.faces_found > 1:
        left, top, right, bottom = ref.face_box
        tqdm.write(f"facesynth: note: {path}: {ref.faces_found} faces found; {flag} takes the largest "
                   f"({right - left}x{bottom - top} px at x={left}, y={top})", file=sys.stderr)
    return ref


def _rotate(job: RotateJob, photos: list[str], helper, model, maker) -> int:
    """`run_rotate`'s work, with `job.out` created and locked and the method's weights loaded."""
    if job.threads:
        torch.set_num_threads(job.threads)
    out = job.out
    if helper is None:
        load_landmark_models()  # one-time model loading stays out of each photo's seconds_per_photo
    manifest = Manifest(out / "manifest.jsonl")
    settings = run_settings(job, model, maker)
    done = resume_rotate(out, settings, manifest) if job.resume else set()
    atomic_write_bytes(out / RUN_SETTINGS, (json.dumps(settings, indent=2) + "\n").encode())
    failed = skipped = 0
    todo = []
    for src, stem in zip(photos, photo_stems(photos)):
        if src in done:
            skipped += 1
        else:
            todo.append((src, stem))
    bar = tqdm(total=len(photos), initial=skipped, desc="rotate", unit="photo", disable=len(photos) < 2)
    for start in range(0, len(todo), ROTATE_BATCH_SIZE):
        chunk = todo[start:start + ROTATE_BATCH_SIZE]
        for (src, _), outcome in zip(chunk, rotate_batch(job, chunk, model, maker, helper)):
            if isinstance(outcome, Exception):  # a batch goes on; the reason is recorded, not a traceback
                failed += 1
                msg = photo_error(src, outcome)
                manifest.append([{"source": src, "error": msg}])
                tqdm.write(f"facesynth: {msg}", file=sys.stderr)
            else:
                manifest.append(outcome)
            bar.update(1)
    bar.close()
    before = f" ({skipped} of them in the run that was resumed)" if skipped else ""
    print(f"facesynth: {len(photos) - failed} of {len(photos)} photo(s) done{before}, {len(job.poses)} pose(s) each; "
          f"output in {out}/ (manifest: {out / 'manifest.jsonl'})")
    return 0 if failed == 0 else 1


def photo_stems(photos: list[str]) -> list[str]:
    """Each photo's output stem: its file stem, `-2`, `-3`, ... on the next photos with the same one."""
    used: dict[str, int] = {}
    out = []
    for src in photos:
        stem = Path(src).stem
        n = used.get(stem, 0)
        used[stem] = n + 1
        out.append(stem if n == 0 else f"{stem}-{n + 1}")
    return out


def photo_error(src: str, exc: Exception) -> str:
    """The one-line manifest error of a photo that failed."""
    if isinstance(exc, FaceSynthError):
        return str(exc)
    return internal_error_line(src, exc)


def rotate_batch(job: RotateJob, chunk: list[tuple[str, str]], model, maker, helper=None) -> list:
    """Every view of each (photo, stem) of `chunk` written into `job.out`: per photo its manifest
    records, or the exception it failed with (the others go on). The photos' largest faces are
    fitted at once (`reconstruct_largest_faces`, one batched fit); a photo's
    `seconds_per_photo` is its load and render time plus its share of that fit. With --all-faces, or
    one photo, each photo takes `rotate_photo`."""
    if job.options.all_faces or len(chunk) == 1:
        return [attempt(rotate_photo, job, src, stem, model, maker, helper) for src, stem in chunk]
    options = job.options
    outcomes: list = [None] * len(chunk)
    loaded, seconds = {}, [0.0] * len(chunk)
    for k, (src, _) in enumerate(chunk):
        t0 = time.perf_counter()
        try:
            loaded[k] = (load_image(src), None if helper is None else helper.faces(src))  # None: detect here
        except Exception as exc:  # that photo's failure alone
            outcomes[k] = exc
        seconds[k] = time.perf_counter() - t0
    ready = sorted(loaded)
    t0 = time.perf_counter()
    recs = reconstruct_largest_faces([loaded[k][0] for k in ready], model, options.fit_config(),
                                     faces=[loaded[k][1] for k in ready], sources=[chunk[k][0] for k in ready],
                                     detector=options.detector)
    share = (time.perf_counter() - t0) / max(len(ready), 1)
    for k, rec in zip(ready, recs):
        if isinstance(rec, Exception):
            outcomes[k] = rec
            continue
        t0 = time.perf_counter()
        src, stem = chunk[k]
        outcomes[k] = attempt(write_photo_views, job, src, stem, loaded[k][0], [rec], model, maker)
        if not isinstance(outcomes[k], Exception):
            for r in outcomes[k]:
                r["seconds_per_photo"] = round(seconds[k] + share + time.perf_counter() - t0, 3)
    return outcomes


def attempt(fn, *args):
    """`fn(*args)`, or the exception it raised (a photo's failure, recorded by the caller)."""
    try:
        return fn(*args)
    except Exception as exc:
        return exc


def rotate_photo(job: RotateJob, src: str, stem: str, model, maker, helper=None) -> list[dict]:
    """Every view of one photo written into `job.out`; returns their manifest records."""
    t0 = time.perf_counter()
    options = job.options
    image = load_image(src)
    faces = None if helper is None else helper.faces(src)  # None: detect here
    recs = reconstruct_faces(image, model, all_faces=options.all_faces, fit_config=options.fit_config(),
                             source=src, faces=faces, detector=options.detector)
    records = write_photo_views(job, src, stem, image, recs, model, maker)
    seconds = round(time.perf_counter() - t0, 3)
    for r in records:
        r["seconds_per_photo"] = seconds
    return records


def write_photo_views(job: RotateJob, src: str, stem: str, image, recs: list, model, maker) -> list[dict]:
    """Every view of the reconstructed faces `recs` of one photo written into `job.out` (and their
    meshes and fits when asked for); returns their manifest records, without the timing."""
    options = job.options
    n_faces = recs[0].faces_found
    if n_faces > 1 and not options.all_faces:
        tqdm.write(f"facesynth: note: {describe_largest_face(src, n_faces, recs[0].face)}; pass --all-faces for all",
                   file=sys.stderr)
    records = []
    for fi, rec in enumerate(recs):
        name = f"{stem}_face{fi}" if options.all_faces else stem
        first = len(records)
        for views in render_face(rec, image, model, job.poses, options, maker, face=fi, key=name):
            for i, (pose, img) in enumerate(zip(views.poses, views.images)):
                rel = view_file_name(f"{name}{views.variant.tag}", pose)
                save_png(job.out / rel, img)
                records.append(view_record(src, rel, fi, pose, options.method, model, rec.fit, img.shape[0],
                                           {"detector": rec.face.detector, **views.record, **views.view_fields(i)}, faces=n_faces))
                records[-1]["align"] = options.align
                for map_name, maps in views.maps.items():
                    map_rel = rel[: -len(".png")] + f"_{map_name}.png"
                    atomic_write_bytes(job.out / map_rel, encode_map(map_name, maps[i]))
                    records[-1][f"{map_name}_map"] = map_rel
                if job.pose_from:
                    records[-1]["pose_from"] = job.pose_from
        if job.export_mesh:
            mesh_rel = f"{name}_mesh.{job.export_mesh}"
            export_mesh(job.out / mesh_rel, rec.fit.vertices(model)[0].numpy(), model, rec.texture)
            for r in records[first:]:
                r["mesh"] = mesh_rel
        if job.save_fit:
            rec.fit.save(job.out / f"{name}_fit")
    return records


def run_rotate_command(args, helper=None, inputs=None) -> int:
    """`facesynth rotate`: the parsed flags as a RotateJob (`helper`, `inputs`: see `run_rotate`)."""
    options = RenderOptions(method=args.method, size=args.size, background=args.background,
                            expressions=None if args.expression is None else tuple(args.expression),
                            shape_jitter=args.shape_jitter, jitter_samples=args.jitter_samples, seed=args.seed,
                            sfs=args.sfs, relight=args.relight, dense=args.dense, all_faces=args.all_faces,
                            refiner=args.refiner, capg=args.capg, align=args.align,
                            labels=args.labels, maps=tuple(args.maps), detector=args.detector, device=args.device)
    poses = [Pose(y, p, r) for p in args.pitch for y in args.yaw for r in args.roll]
    job = RotateJob(images=args.images, poses=poses, out=Path(args.out), options=options, model=args.model,
                    export_mesh=args.export_mesh, save_fit=args.save_fit, threads=args.threads, resume=args.resume,
                    expression_from=args.expression_from, pose_from=args.pose_from, given_angles=given_angles(args))
    return run_rotate(job, helper, inputs)
