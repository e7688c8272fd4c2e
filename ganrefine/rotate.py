"""`facesynth rotate`: photos in, one PNG per (face, pose) and a JSON line per view out."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


from face3d.camera import Pose
from face3d.errors import FaceSynthError


def _name(value: float) -> str:
    v = f"{value:g}".replace("-", "m").replace(".", "p")
    return v


def view_file_name(stem: str, pose) -> str:
    """`<stem>_yaw<y>_pitch<p>[_roll<r>].png`, minus signs as 'm' and points as 'p' (-7.5 -> m7p5)."""
    roll = f"_roll{_name(pose.roll)}" if pose.roll else ""
    return f"{stem}_yaw{_name(pose.yaw)}_pitch{_name(pose.pitch)}{roll}.png"


def view_record(source: str, output: str, face: int, pose, method: str, model, fit, size: int,
                extra: dict, refiner=None, faces: int | None = None) -> dict:
    """One manifest line of a view (`rotate`'s manifest.jsonl, and the web demo's zip): `extra`
    holds the expression / SFS fields; the weights' file and hash follow for `hybrid` (the
    refiner's) and `gan` (CAPG-GAN's). `faces`, when given, is how many faces the photo had (the
    name `augment`'s manifest uses); `face` is which of them the view shows (0: the largest)."""
    return {"source": source, "output": output, "face": face, **({} if faces is None else {"faces": faces}),
            "yaw": pose.yaw, "pitch": pose.pitch,
            "roll": pose.roll, "method": method, "model": model.name,
            "fit_landmark_error": round(fit.landmark_error, 6),
            "source_pose": {k: round(v, 3) for k, v in zip(("yaw", "pitch", "roll"), fit.pose.as_tuple())},
            "size": size, **extra, **({} if refiner is None else refiner.record())}


class Manifest:
    """`DIR/manifest.jsonl`: each record goes out as one whole line in one write, then fsync."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def _encode(records: list[dict]) -> bytes:
        return "".join(json.dumps(r, sort_keys=False) + "\n" for r in records).encode()

    def read(self) -> list[dict]:
        """The records on disk; a line cut off by a killed run (not valid JSON) is dropped."""
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out

    def rewrite(self, records: list[dict]) -> None:
        """Replace the whole manifest with `records` (atomically: temp file, then rename)."""
        from face3d.image_io import atomic_write_bytes

        atomic_write_bytes(self.path, self._encode(records))

    def append(self, records: list[dict]) -> None:
        if not records:
            return
        data = self._encode(records)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)


#: `DIR/rotate.json`: the flags that decide what a run writes; `--resume` must match them.
RUN_SETTINGS = "rotate.json"


def run_settings(args, poses, model, weights) -> dict:
    """What a resumed run into the same folder must repeat to produce the same views."""
    from face3d.expressions import expression_version
    from face3d.render import render_version

    spec = getattr(args, "expression", None)
    return {"method": args.method, "render_version": render_version(args.method), "size": args.size,
            "poses": [list(p.as_tuple()) for p in poses],
            "model": model.name, "weights_sha256": None if weights is None else weights.sha256,
            "weights_inference": getattr(weights, "inference", None),
            "all_faces": bool(args.all_faces), "background": args.background, "dense": bool(args.dense),
            "export_mesh": args.export_mesh, "save_fit": bool(args.save_fit),
            "expression": None if not spec else [e.text for e in spec], "expression_version": expression_version(spec),
            "shape_jitter": float(getattr(args, "shape_jitter", 0.0) or 0.0),
            "jitter_samples": getattr(args, "jitter_samples", None), "seed": getattr(args, "seed", None),
            "sfs": bool(getattr(args, "sfs", False)), "relight": getattr(args, "relight", None)}


def changed_setting(old: dict, new: dict, keys) -> str | None:
    """`key: old, now new` for the first of `keys` whose stored value differs from the new one, else
    None: what a run into a folder made with other flags is refused with (rotate --resume, augment)."""
    for k in keys:
        if old.get(k) != new.get(k):
            return f"{k}: {old.get(k)!r}, now {new.get(k)!r}"
    return None


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
    from face3d.image_io import lock_output_folder, prepare_output_folder, remove_stale_temp_files

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


def run_rotate(args) -> int:
    # the CLI's detection helper (face3d.detection_helper) starts on the first photos before torch loads
    helper = getattr(args, "detection_helper", None)
    if helper is not None:
        helper.submit(args.images)
    out = Path(args.out)
    lock = open_run_folder(out, bool(args.resume))
    try:
        return _rotate(args, out, helper)
    finally:
        lock.release()


def _rotate(args, out: Path, helper) -> int:
    """`run_rotate`'s work, with `out` created and locked."""
    import torch
    from tqdm import tqdm

    from face3d.fitting import FitConfig
    from face3d.image_io import load_image, save_png
    from face3d.morphable_model import load_morphable_model
    from face3d.pipeline import describe_largest_face, reconstruct_faces
    from ganrefine.expression_options import (check_expression_arguments, expression_variants, render_variant,
                                              variant_record)
    from ganrefine.sfs_options import prepare_sfs, render_sfs_variant, sfs_record

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.method == "gan":
        edits = [flag for flag, on in (("--expression", args.expression), ("--shape-jitter", args.shape_jitter),
                                       ("--sfs", args.sfs), ("--background photo", args.background == "photo")) if on]
        if edits:
            raise FaceSynthError(f"{', '.join(edits)}: not available with --method gan (it edits no 3D model); "
                                 "use --method 3d or hybrid")
    model = load_morphable_model(args.model)
    check_expression_arguments(args, model)
    refiner = None
    if args.method == "hybrid":
        from ganrefine.hybrid import load_hybrid_refiner, refine_views

        refiner = load_hybrid_refiner(args.refiner)
    elif args.method == "gan":
        from ganrefine.capg import load_default_capg, rotate_with_capg

        refiner = load_default_capg(args.capg)
    if helper is None:
        from face3d.landmarks import load_landmark_models

        load_landmark_models()  # one-time model loading stays out of each photo's seconds_per_photo
    manifest = Manifest(out / "manifest.jsonl")
    poses = [Pose(y, p, r) for p in args.pitch for y in args.yaw for r in args.roll]
    settings = run_settings(args, poses, model, refiner)
    done = resume_rotate(out, settings, manifest) if args.resume else set()
    from face3d.image_io import atomic_write_bytes

    atomic_write_bytes(out / RUN_SETTINGS, (json.dumps(settings, indent=2) + "\n").encode())
    fit_cfg = FitConfig(dense=args.dense)
    failed = skipped = 0
    used_stems: dict[str, int] = {}
    for src in tqdm(args.images, desc="rotate", unit="photo", disable=len(args.images) < 2):
        stem = Path(src).stem
        n = used_stems.get(stem, 0)
        used_stems[stem] = n + 1
        stem = stem if n == 0 else f"{stem}-{n + 1}"
        if src in done:
            skipped += 1
            continue
        t0 = time.perf_counter()
        try:
            image = load_image(src)
            faces = None if helper is None else helper.faces(src)  # None: detect here
            recs = reconstruct_faces(image, model, all_faces=args.all_faces, fit_config=fit_cfg, source=src,
                                     faces=faces)
            n_faces = recs[0].faces_found
            if n_faces > 1 and not args.all_faces:
                note = describe_largest_face(src, n_faces, recs[0].face)
                tqdm.write(f"facesynth: note: {note}; pass --all-faces for all", file=sys.stderr)
            records = []
            for fi, rec in enumerate(recs):
                bg = 0.5
                if args.background == "photo":
                    from face3d.background import photo_backgrounds

                    bg = photo_backgrounds(rec.fit, image, model, poses, args.size)
                face_tag = f"_face{fi}" if args.all_faces else ""
                sfs = prepare_sfs(args, rec, image, model, key=f"{stem}{face_tag}")
                first = len(records)
                # one render per (expression, shape sample); the plain fit when neither flag is given
                for variant in expression_variants(args, rec.fit, model, key=f"{stem}{face_tag}"):
                    views = (render_variant(variant, rec, model, poses, args.size, bg) if sfs is None
                             else render_sfs_variant(variant, rec, model, poses, args.size, bg, sfs))
                    if args.method == "gan":  # no 3D at inference: the fit only places landmarks and crop
                        images = rotate_with_capg(refiner.generator, rec.fit, image, model, poses, args.size)
                    elif refiner is not None:
                        images = refine_views(refiner, views, bg)
                    else:
                        images = views.images
                    extra = {**variant_record(variant, args, model), **sfs_record(sfs)}
                    for pose, img in zip(poses, images):
                        rel = view_file_name(f"{stem}{face_tag}{variant.tag}", pose)
                        save_png(out / rel, img)
                        records.append(view_record(src, rel, fi, pose, args.method, model, rec.fit, args.size,
                                                   extra, refiner, faces=n_faces))
                if args.export_mesh:
                    from face3d.mesh_export import export_mesh

                    verts = rec.fit.vertices(model)[0].numpy()
                    mesh_rel = f"{stem}{face_tag}_mesh.{args.export_mesh}"
                    export_mesh(out / mesh_rel, verts, model, rec.texture)
                    for r in records[first:]:
                        r["mesh"] = mesh_rel
                if args.save_fit:
                    rec.fit.save(out / f"{stem}{face_tag}_fit")
            seconds = time.perf_counter() - t0
            for r in records:
                r["seconds_per_photo"] = round(seconds, 3)
            manifest.append(records)
        except FaceSynthError as exc:
            failed += 1
            manifest.append([{"source": src, "error": str(exc)}])
            tqdm.write(f"facesynth: {exc}", file=sys.stderr)
        except Exception as exc:  # a batch goes on; the reason is recorded, not a traceback
            failed += 1
            msg = f"{src}: internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            manifest.append([{"source": src, "error": msg}])
            tqdm.write(f"facesynth: {msg}", file=sys.stderr)
    ok = len(args.images) - failed
    before = f" ({skipped} of them in the run that was resumed)" if skipped else ""
    print(f"facesynth: {ok} of {len(args.images)} photo(s) done{before}, {len(poses)} pose(s) each; output in {out}/ "
          f"(manifest: {out / 'manifest.jsonl'})")
    return 0 if failed == 0 else 1
