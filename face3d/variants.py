"""Rendering the variants of one reconstruction: expressions, shape samples, Shape from Shading
and re-lighting, with plain arguments.

    for variant in variants(rec.fit, model, expressions, shape_jitter, samples, seed, key):
        views = render_variant(variant, rec, model, poses, size, background)
        record = variant_record(variant, model, shape_jitter, seed)

`prepare_sfs` refines the fitted geometry with `face3d.sfs` (displacement along the normals over
the visible face) and/or de-lights the texture; `render_variant` then adds the displacement and
shades each view with the new light. A photo where SFS cannot work (saturated or very dark face)
keeps the 3DMM geometry; its record says `sfs: false` and gives `sfs_warning`.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, replace

import numpy as np
import torch

from face3d.albedo_model import shipped_albedo_model
from face3d.expressions import (edited_vertices, expression_coefficients, expression_texture, mouth_mesh,
                                named_weights, variants)
from face3d.render import render_views
from face3d.sfs import SFSConfig, delight_image, refine_shape_from_shading, relight_sh
from face3d.texture import extract_texture

__all__ = ["SFSState", "check_expressions", "prepare_sfs", "render_variant", "sfs_record", "variant_geometry",
           "variant_record", "variants"]

@dataclass
class SFSState:
    """What `prepare_sfs` found for one reconstruction."""

    result: object            # face3d.sfs.SFSResult
    rec: object               # Reconstruction with the texture matching the refined (and de-lit) surface
    sh: object                # (B, 9, 3) lights or None
    applied: bool
    relight: str


def check_expressions(expressions, model) -> None:
    """Fail early, with one line, on specs this model cannot express (unknown names, missing presets)."""
    for spec in expressions or []:
        expression_coefficients(spec, model, np.zeros(model.num_expressions, np.float32))


def variant_geometry(variant, rec, model):
    """What a variant renders with: its fit (the re-split one for a replaced expression), its
    vertices, the vertices that frame the crop (the fitted face of that shape) and the mouth parts
    it shows (None unless the expression opens the mouth)."""
    fit = rec.fit if variant.fit is None else variant.fit
    identity = None if variant.shape is None else variant.shape.identity
    verts = edited_vertices(fit, model, variant.coefficients, identity)
    frame = edited_vertices(fit, model, None, identity)
    teeth = mouth_mesh(model, variant.coefficients, fit.identity if identity is None else identity, fit.expression)
    return fit, verts, frame, teeth


def render_variant(variant, rec, model, poses, size: int, background=0.5, sfs: SFSState | None = None,
                   device=None, behind: np.ndarray | None = None):
    """Render one variant of a reconstruction at `poses`, framed like the fitted face of that shape;
    with `sfs`, the SFS displacement is added to the variant's vertices and the views take its light.
    `device`: where `render_views` rasterizes and shades (default the CPU); `behind`: how much of
    `background` shows the person, per pixel (`render_views`)."""
    fit, verts, frame, teeth = variant_geometry(variant, rec, model)
    texture_of = rec.texture
    sh = None
    if sfs is not None:
        if sfs.applied:
            r = sfs.result
            verts = verts + torch.from_numpy(r.displacement[:, None] * r.normals)[None].to(verts.dtype)
        texture_of, sh = sfs.rec.texture, sfs.sh
    identity = fit.identity if variant.shape is None else variant.shape.identity
    texture = expression_texture(texture_of, model, variant.coefficients, fit.expression, identity=identity)
    return render_views(fit, texture, poses, model, size=size, background=background, vertices=verts,
                        frame_vertices=frame, sh=sh, extra=teeth, device=device, behind=behind)


def variant_record(variant, model, shape_jitter: float = 0.0, seed: int = 0) -> dict:
    """Manifest fields of one variant."""
    rec = {"expression": variant.expression.label,
           "expression_weights": named_weights(variant.coefficients, model),
           "shape_jitter": float(shape_jitter),
           "expression_split": variant.fit is not None}
    if variant.expression.reference:
        rec["expression_from"] = variant.expression.reference
    if variant.shape is not None:
        rec.update({"shape_sample": variant.shape.index, "shape_jitter_norm": round(variant.shape.norm, 4),
                    "seed": int(seed)})
    return rec


def prepare_sfs(rec, image, model, sfs: bool, relight: str, n_poses: int, seed: int = 0,
                key: str = "") -> SFSState | None:
    """Run SFS and/or the light estimate for one reconstruction; None when neither is asked for.
    `n_poses` lights are drawn for `relight`; `key` and `seed` seed the random light. The light and
    albedo come from the shipped albedo model (`face3d.albedo_model.shipped_albedo_model`) where it
    fits `model`; 'random' lights are drawn from its LFW lights."""
    if not sfs and relight == "keep":
        return None
    am = shipped_albedo_model(model)
    cfg = SFSConfig() if sfs else SFSConfig(iterations=0)      # lighting only when SFS is off
    result = refine_shape_from_shading(rec.fit, image, model, cfg, albedo_model=am)
    applied = sfs and result.applied
    verts = result.vertices(rec.fit, model) if applied else None
    source = image
    sh = None
    if relight != "keep" and result.warning is None:
        source = delight_image(rec.fit, image, model, result, verts)
        sh = relight_sh(relight, n_poses, seed=zlib.crc32(f"{key}:{seed}".encode()),
                        lights=None if am is None else am.lights)
    # a de-lit photo is albedo: its unseen side takes the mirror colour as it is, not re-lit by the
    # photo's light (`extract_texture` re-lights mirrored colours by the fit's light when it has one)
    fit = rec.fit if source is image else replace(rec.fit, sh=np.zeros_like(rec.fit.sh))
    texture = rec.texture if (verts is None and source is image) else extract_texture(fit, source, model, vertices=verts)
    return SFSState(result, replace(rec, texture=texture), sh, applied, relight)


def sfs_record(state: SFSState | None) -> dict:
    """Manifest fields: `sfs` (whether refined geometry was used), `relight`, and `sfs_warning` if any."""
    if state is None:
        return {"sfs": False}
    out = {"sfs": bool(state.applied), "relight": state.relight}
    if state.result.warning:
        out["sfs_warning"] = state.result.warning
    return out
