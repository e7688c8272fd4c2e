"""Expression and shape-variation flags shared by `facesynth rotate` and `facesynth augment`.

    add_expression_arguments(parser)      # --expression, --shape-jitter, --jitter-samples, --seed
    for v in expression_variants(args, rec.fit, model, key=stem):
        views = render_variant(v, rec, model, poses, size, background)
        record.update(variant_record(v, args))
"""
from __future__ import annotations

import argparse

from face3d.errors import FaceSynthError


def _expression_list(text: str):
    from face3d.expressions import parse_expression_list

    try:
        return parse_expression_list(text)
    except FaceSynthError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _jitter(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shape-jitter expects a number of sigmas like 0.5, got {text!r}") from None
    if not (0.0 <= v <= 3.0):
        raise argparse.ArgumentTypeError(f"--shape-jitter must lie in [0, 3] sigma, got {v:g}")
    return v


def _seed(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seed expects an integer, got {text!r}") from None


def add_expression_arguments(parser: argparse.ArgumentParser, seed: bool = True) -> None:
    """The expression / shape-variation flags (one definition for every subcommand).

    `seed=False` leaves `--seed` out, for a command that defines its own (its value is used here too).
    """
    from ganrefine.cli import int_option

    g = parser.add_argument_group("expression and shape")
    g.add_argument("--expression", type=_expression_list, default=None, metavar="SPEC[,SPEC...]",
                   help="expression of the views: fitted (the photo's, default), neutral, smile, open-mouth, "
                        "surprise, frown, blink, pout, or blendshape coefficients like jawOpen=0.6,mouthSmile_L=0.5; "
                        "terms combine with '+' (smile+jawOpen=0.3); a comma list of specs makes a grid with the poses")
    g.add_argument("--shape-jitter", type=_jitter, default=0.0, metavar="S",
                   help="draw identity shapes around the fit, perturbed by S sigma per coefficient (e.g. 0.5); "
                        "the photo texture is kept (default 0: the fitted shape)")
    g.add_argument("--jitter-samples", type=int_option("jitter-samples", 1, 100), default=1, metavar="N",
                   help="shapes drawn per face with --shape-jitter (default 1)")
    if seed:
        g.add_argument("--seed", type=_seed, default=0, help="random seed of the shape draws (default 0)")


def expression_variants(args, fit, model, key: str = ""):
    """The (expression, shape sample) combinations the flags ask for, for one fitted face."""
    from face3d.expressions import variants

    return variants(fit, model, getattr(args, "expression", None), getattr(args, "shape_jitter", 0.0) or 0.0,
                    getattr(args, "jitter_samples", 1) or 1, getattr(args, "seed", 0) or 0, key)


def variant_geometry(variant, rec, model):
    """What a variant renders with: its fit (the re-split one for a replaced expression), its
    vertices, the vertices that frame the crop (the fitted face of that shape) and the mouth parts
    it shows (None unless the expression opens the mouth)."""
    from face3d.expressions import edited_vertices, mouth_mesh

    fit = rec.fit if variant.fit is None else variant.fit
    identity = None if variant.shape is None else variant.shape.identity
    verts = edited_vertices(fit, model, variant.coefficients, identity)
    frame = edited_vertices(fit, model, None, identity)
    teeth = mouth_mesh(model, variant.coefficients, fit.identity if identity is None else identity, fit.expression)
    return fit, verts, frame, teeth


def render_variant(variant, rec, model, poses, size: int, background=0.5):
    """Render one variant of a reconstruction at `poses`, framed like the fitted face of that shape."""
    from face3d.expressions import expression_texture
    from face3d.render import render_views

    fit, verts, frame, teeth = variant_geometry(variant, rec, model)
    texture = expression_texture(rec.texture, model, variant.coefficients, fit.expression)
    return render_views(fit, texture, poses, model, size=size, background=background, vertices=verts,
                        frame_vertices=frame, extra=teeth)


def variant_record(variant, args, model) -> dict:
    """Manifest fields of one variant."""
    from face3d.expressions import named_weights

    rec = {"expression": variant.expression.label,
           "expression_weights": named_weights(variant.coefficients, model),
           "shape_jitter": float(getattr(args, "shape_jitter", 0.0) or 0.0),
           "expression_split": variant.fit is not None}
    if variant.shape is not None:
        rec.update({"shape_sample": variant.shape.index, "shape_jitter_norm": round(variant.shape.norm, 4),
                    "seed": int(getattr(args, "seed", 0) or 0)})
    return rec


def check_expression_arguments(args, model) -> None:
    """Fail early, with one line, on specs this model cannot express (unknown names, missing presets)."""
    from face3d.expressions import expression_coefficients
    import numpy as np

    for spec in getattr(args, "expression", None) or []:
        expression_coefficients(spec, model, np.zeros(model.num_expressions, np.float32))
