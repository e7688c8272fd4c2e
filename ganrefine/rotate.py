"""`facesynth rotate`: photos in, one PNG per (face, pose) and a JSON line per view out."""
from __future__ import annotations

import json
import os
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
                extra: dict, refiner=None) -> dict:
    """One manifest line of a view (`rotate`'s manifest.jsonl, and the web demo's zip): `extra`
    holds the expression / SFS fields; the weights' file and hash follow for `hybrid` (the
    refiner's) and `gan` (CAPG-GAN's)."""
    return {"source": source, "output": output, "face": face, "yaw": pose.yaw, "pitch": pose.pitch,
            "roll": pose.roll, "method": method, "model": model.name,
            "fit_landmark_error": round(fit.landmark_error, 6),
            "source_pose": {k: round(v, 3) for k, v in zip(("yaw", "pitch", "roll"), fit.pose.as_tuple())},
            "size": size, **extra, **({} if refiner is None else refiner.record())}


class Manifest:
    """`DIR/manifest.jsonl`: each record goes out as one whole line in one write, then fsync."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, records: list[dict]) -> None:
        if not records:
            return
        data = "".join(json.dumps(r, sort_keys=False) + "\n" for r in records).encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)


def run_rotate(args) -> int:
    import torch
    from tqdm import tqdm

    from face3d.fitting import FitConfig
    from face3d.image_io import load_image, save_png
    from face3d.morphable_model import load_morphable_model
    from face3d.pipeline import reconstruct_faces
    from ganrefine.expression_options import (check_expression_arguments, expression_variants, render_variant,
                                              variant_record)
    from ganrefine.sfs_options import prepare_sfs, render_sfs_variant, sfs_record

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise FaceSynthError(f"--out {out}: exists and is not a folder")
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
    from face3d.landmarks import load_landmark_models

    load_landmark_models()  # one-time model loading stays out of each photo's seconds_per_photo
    manifest = Manifest(out / "manifest.jsonl")
    poses = [Pose(y, p, r) for p in args.pitch for y in args.yaw for r in args.roll]
    fit_cfg = FitConfig(dense=args.dense)
    failed = 0
    used_stems: dict[str, int] = {}
    for src in tqdm(args.images, desc="rotate", unit="photo", disable=len(args.images) < 2):
        stem = Path(src).stem
        n = used_stems.get(stem, 0)
        used_stems[stem] = n + 1
        stem = stem if n == 0 else f"{stem}-{n + 1}"
        t0 = time.perf_counter()
        try:
            image = load_image(src)
            recs = reconstruct_faces(image, model, all_faces=args.all_faces, fit_config=fit_cfg, source=src)
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
                                                   extra, refiner))
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
            tqdm.write(f"facesynth: {exc}")
        except Exception as exc:  # a batch goes on; the reason is recorded, not a traceback
            failed += 1
            msg = f"{src}: internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            manifest.append([{"source": src, "error": msg}])
            tqdm.write(f"facesynth: {msg}")
    ok = len(args.images) - failed
    print(f"facesynth: {ok} of {len(args.images)} photo(s) done, {len(poses)} pose(s) each; output in {out}/ (manifest: {out / 'manifest.jsonl'})")
    return 0 if failed == 0 else 1
