"""`facesynth rotate --sfs/--no-sfs --relight keep|frontal|random`: Shape from Shading and re-lighting.

`--sfs` refines the fitted geometry with `face3d.sfs` (displacement along the normals over the
visible face) before re-posing; the texture is taken from the refined surface. `--relight frontal`
or `random` de-lights the texture with the estimated SH light and shades each view with a new
light (frontal: from the viewer; random: seeded per photo). A photo where SFS cannot work
(saturated / very dark face) keeps the 3DMM geometry; the manifest then says `sfs: false` and
gives `sfs_warning`.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, replace


def add_sfs_arguments(parser) -> None:
    parser.add_argument("--sfs", dest="sfs", action="store_true", default=False,
                        help="refine the fitted shape from the photo's shading (Shape from Shading, ~1 s per face)")
    parser.add_argument("--no-sfs", dest="sfs", action="store_false", help="keep the 3DMM geometry (default)")
    parser.add_argument("--relight", choices=["keep", "frontal", "random"], default="keep",
                        help="keep the photo's lighting in the texture (default), or de-light it and light "
                             "each view from the front / from a random direction")


@dataclass
class SFSState:
    result: object            # face3d.sfs.SFSResult
    rec: object               # Reconstruction with the texture matching the refined (and de-lit) surface
    sh: object                # (B, 9, 3) lights or None
    applied: bool
    relight: str


def prepare_sfs(args, rec, image, model, key: str = ""):
    """Run SFS / light estimation for one reconstruction; None when neither flag asks for it."""
    sfs_on = bool(getattr(args, "sfs", False))
    relight = getattr(args, "relight", "keep") or "keep"
    if not sfs_on and relight == "keep":
        return None
    from face3d.sfs import SFSConfig, delight_image, refine_shape_from_shading, relight_sh
    from face3d.texture import extract_texture

    cfg = SFSConfig() if sfs_on else SFSConfig(iterations=0)      # lighting only when SFS is off
    result = refine_shape_from_shading(rec.fit, image, model, cfg)
    applied = sfs_on and result.applied
    verts = result.vertices(rec.fit, model) if applied else None
    source = image
    sh = None
    if relight != "keep" and result.warning is None:
        source = delight_image(rec.fit, image, model, result, verts)
        n_poses = len(args.pitch) * len(args.yaw) * len(args.roll)
        sh = relight_sh(relight, n_poses, seed=zlib.crc32(f"{key}:{getattr(args, 'seed', 0)}".encode()))
    texture = rec.texture if (verts is None and source is image) else extract_texture(rec.fit, source, model, vertices=verts)
    return SFSState(result, replace(rec, texture=texture), sh, applied, relight)


def render_sfs_variant(variant, rec, model, poses, size: int, background, state: SFSState):
    """As `render_variant`, with the SFS displacement added to the variant's vertices and the new light."""
    import torch

    from face3d.expressions import expression_texture
    from face3d.render import render_views
    from ganrefine.expression_options import variant_geometry

    fit, verts, frame, teeth = variant_geometry(variant, rec, model)
    if state.applied:
        r = state.result
        verts = verts + torch.from_numpy(r.displacement[:, None] * r.normals)[None].to(verts.dtype)
    texture = expression_texture(state.rec.texture, model, variant.coefficients, fit.expression)
    return render_views(fit, texture, poses, model, size=size, background=background, vertices=verts,
                        frame_vertices=frame, sh=state.sh, extra=teeth)


def sfs_record(state) -> dict:
    """Manifest fields: `sfs` (whether refined geometry was used), `relight`, and `sfs_warning` if any."""
    if state is None:
        return {"sfs": False}
    out = {"sfs": bool(state.applied), "relight": state.relight}
    if state.result.warning:
        out["sfs_warning"] = state.result.warning
    return out
