"""Expression and face-shape control over a fit: keep the fitted expression, neutralise it, or set it.

An expression *spec* is text, as on the command line:

    fitted                      the expression the fit estimated from the photo (the default)
    neutral                     all expression coefficients zero
    smile, open-mouth, surprise, frown, blink, pout
                                presets in plain words, defined over the model's blendshape names
    jawOpen=0.6,mouthSmile_L=0.5
                                raw coefficients by name (the rest zero)
    smile+jawOpen=0.3           terms joined by '+': presets add up, raw values then override

A comma list of specs is a grid (`parse_expression_list("neutral,smile,jawOpen=0.6,mouthClose=0.1")`
gives three specs: consecutive `name=value` items belong to one raw spec).

Presets replace the fitted expression rather than adding to it (a smiling photo asked to `smile`
must not smile twice); `fitted+jawOpen=0.5` starts from the fit instead.

Shape variation (`shape_jitter`) draws identity-coefficient perturbations of scale S in the
model's sigma units (coefficients are N(0, 1)) around the fitted identity, as Masi et al. render
training faces with several generic 3D shapes; the photo texture stays in UV space and follows.
"""
from __future__ import annotations

import difflib
import math
import re
import zlib
from dataclasses import dataclass, field

import numpy as np
import torch

from face3d.errors import FaceSynthError
from face3d.morphable_model import MorphableModel

#: Preset names in the order they are listed to the user.
PRESET_NAMES = ("neutral", "smile", "open-mouth", "surprise", "frown", "blink", "pout")

#: Presets over the ICT FaceKit's ARKit-style blendshapes (weights in [0, 1]); tuned on the
#: expression benchmark (benchmarks/bench_expressions.py) with dlib's landmarks on the renders.
ICT_PRESETS: dict[str, dict[str, float]] = {
    "neutral": {},
    "smile": {"mouthSmile_L": 0.9, "mouthSmile_R": 0.9, "cheekSquint_L": 0.35, "cheekSquint_R": 0.35,
              "mouthStretch_L": 0.2, "mouthStretch_R": 0.2, "mouthUpperUp_L": 0.15, "mouthUpperUp_R": 0.15,
              "eyeSquint_L": 0.15, "eyeSquint_R": 0.15},
    "open-mouth": {"jawOpen": 0.6, "mouthLowerDown_L": 0.3, "mouthLowerDown_R": 0.3,
                   "mouthUpperUp_L": 0.15, "mouthUpperUp_R": 0.15},
    "surprise": {"browInnerUp_L": 0.9, "browInnerUp_R": 0.9, "browOuterUp_L": 0.9, "browOuterUp_R": 0.9,
                 "eyeWide_L": 0.6, "eyeWide_R": 0.6, "jawOpen": 0.35, "mouthFunnel": 0.2},
    "frown": {"mouthFrown_L": 0.9, "mouthFrown_R": 0.9, "browDown_L": 0.7, "browDown_R": 0.7,
              "mouthShrugLower": 0.3, "noseSneer_L": 0.15, "noseSneer_R": 0.15},
    "blink": {"eyeBlink_L": 1.0, "eyeBlink_R": 1.0},
    "pout": {"mouthPucker": 0.9, "mouthFunnel": 0.25, "mouthShrugLower": 0.2},
}

#: Presets over the Surrey SFM's six emotion blendshapes; presets it cannot express are absent.
SFM_PRESETS: dict[str, dict[str, float]] = {
    "neutral": {},
    "smile": {"happiness": 0.8},
    "surprise": {"surprise": 0.8},
    "frown": {"sadness": 0.6, "anger": 0.3},
}

_WHY_NOT = {
    "open-mouth": "it has no jaw-open blendshape (only its 'surprise' opens the mouth)",
    "blink": "it has no eyelid blendshapes",
    "pout": "it has no lip-pucker blendshape",
}


def presets_for(model: MorphableModel) -> dict[str, dict[str, float]]:
    """The presets this model can express (name -> {blendshape: weight})."""
    names = set(model.expression_names)
    if {"jawOpen", "eyeBlink_L", "mouthSmile_L"} <= names:
        return ICT_PRESETS
    if {"happiness", "surprise", "sadness"} <= names:
        return SFM_PRESETS
    return {"neutral": {}}


@dataclass(frozen=True)
class ExpressionSpec:
    """One parsed expression: whether it starts from the fit, preset terms and raw overrides."""

    text: str
    from_fit: bool = False
    presets: tuple[str, ...] = ()
    raw: tuple[tuple[str, float], ...] = ()

    @property
    def label(self) -> str:
        """A file-name-safe tag: 'smile', 'fitted', 'jawOpen0p6-mouthSmile_L0p5'."""
        parts = (["fitted"] if self.from_fit else []) + list(self.presets) + [
            f"{n}{_num_tag(v)}" for n, v in self.raw]
        return "-".join(parts) if parts else "neutral"

    def is_fitted(self) -> bool:
        return self.from_fit and not self.presets and not self.raw


FITTED = ExpressionSpec("fitted", from_fit=True)


def _num_tag(v: float) -> str:
    return f"{v:g}".replace("-", "m").replace(".", "p")


_TERM = re.compile(r"^\s*([A-Za-z_][\w\-]*)\s*=\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


def parse_expression(text: str) -> ExpressionSpec:
    """Parse one spec ('smile', 'fitted+jawOpen=0.3', 'jawOpen=0.6,mouthSmile_L=0.5') without a model.

    Names are checked against a model later, by `expression_coefficients`.
    """
    if not isinstance(text, str) or not text.strip():
        raise FaceSynthError("empty expression: use a preset (" + ", ".join(PRESET_NAMES) +
                             "), 'fitted', or name=value coefficients")
    from_fit, presets, raw = False, [], {}
    for term in re.split(r"[+,]", text):
        t = term.strip()
        if not t:
            raise FaceSynthError(f"expression {text!r}: empty term")
        if "=" in t:
            m = _TERM.match(t)
            if not m:
                raise FaceSynthError(f"expression {text!r}: {t!r} is not name=number")
            value = float(m.group(2))
            if not math.isfinite(value):
                raise FaceSynthError(f"expression {text!r}: {t!r} is not a finite number")
            raw[m.group(1)] = value
        elif t.lower() in ("fitted", "keep"):
            from_fit = True
        elif t.lower() in PRESET_NAMES:
            presets.append(t.lower())
        else:
            close = difflib.get_close_matches(t.lower(), PRESET_NAMES + ("fitted",), n=3, cutoff=0.5)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise FaceSynthError(f"unknown expression {t!r}{hint}; presets: {', '.join(PRESET_NAMES)}, "
                                 "fitted, or name=value blendshape coefficients")
    return ExpressionSpec(text.strip(), from_fit, tuple(dict.fromkeys(presets)), tuple(raw.items()))


def parse_expression_list(text: str) -> list[ExpressionSpec]:
    """A comma list of specs -> one spec per grid entry; consecutive name=value items form one spec."""
    if not isinstance(text, str) or not text.strip():
        raise FaceSynthError("empty --expression")
    groups: list[str] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            raise FaceSynthError(f"--expression {text!r}: empty item")
        if _TERM.match(item) and groups and _TERM.match(re.split(r"[+,]", groups[-1])[-1]):
            groups[-1] += "," + item   # jawOpen=0.6,mouthSmile_L=0.5 is one raw spec
        else:
            groups.append(item)
    specs = [parse_expression(g) for g in groups]
    labels = [s.label for s in specs]
    dup = sorted({l for l in labels if labels.count(l) > 1})
    if dup:
        raise FaceSynthError(f"--expression lists {', '.join(dup)} more than once")
    return specs


def expression_coefficients(spec: ExpressionSpec | str, model: MorphableModel,
                            fitted: np.ndarray | None = None) -> np.ndarray:
    """The (E,) expression coefficients of `spec` for `model` (`fitted`: the fit's coefficients)."""
    if isinstance(spec, str):
        spec = parse_expression(spec)
    E = model.num_expressions
    if spec.from_fit:
        if fitted is None:
            raise FaceSynthError("expression 'fitted' needs the fitted coefficients")
        beta = np.zeros(E, np.float32)
        f = np.asarray(fitted, np.float32).reshape(-1)[:E]
        beta[: f.size] = f
    else:
        beta = np.zeros(E, np.float32)
    index = {n: i for i, n in enumerate(model.expression_names)}
    table = presets_for(model)
    weights: dict[str, float] = {}
    for p in spec.presets:
        if p not in table:
            why = _WHY_NOT.get(p, "its blendshapes do not span it")
            raise FaceSynthError(f"expression preset {p!r} cannot be expressed by model {model.name}: {why}"
                                 f" (it can: {', '.join(table)})")
        for n, w in table[p].items():
            weights[n] = weights.get(n, 0.0) + w
    for n, w in weights.items():
        beta[index[n]] = w if not spec.from_fit else beta[index[n]] + w
    lo, hi = model.expression_range
    for n, v in spec.raw:
        if n not in index:
            close = difflib.get_close_matches(n, model.expression_names, n=4, cutoff=0.4)
            if not close:  # case-insensitive fallback ('jawopen')
                close = [m for m in model.expression_names if m.lower() == n.lower()]
            hint = f"; close matches: {', '.join(close)}" if close else ""
            raise FaceSynthError(f"unknown blendshape {n!r} for model {model.name}{hint}"
                                 f" (it has {E}: {', '.join(model.expression_names[:6])}, ...)")
        if not (lo - 1e-9 <= v <= hi + 1e-9):
            raise FaceSynthError(f"blendshape {n}={v:g} is outside the model's range [{lo:g}, {hi:g}]")
        beta[index[n]] = v
    return np.clip(beta, lo, hi).astype(np.float32)


def named_weights(beta: np.ndarray, model: MorphableModel, tol: float = 1e-4) -> dict[str, float]:
    """Non-zero coefficients by name, rounded (what the manifest records)."""
    return {n: round(float(b), 4) for n, b in zip(model.expression_names, beta) if abs(b) > tol}


# --------------------------------------------------------------------------------------------
# Shape variation


@dataclass
class ShapeSample:
    """One drawn identity: the fitted coefficients plus a perturbation of scale `scale` sigma."""

    identity: np.ndarray          # (K,) coefficients to evaluate the model with
    delta: np.ndarray             # (K,) the drawn perturbation
    scale: float
    index: int

    @property
    def norm(self) -> float:
        """L2 norm of the drawn perturbation (sigma units)."""
        return float(np.linalg.norm(self.delta))


def shape_samples(identity: np.ndarray, model: MorphableModel, scale: float, count: int = 1,
                  seed: int = 0, key: str = "") -> list[ShapeSample]:
    """`count` identities drawn around `identity`: alpha + scale * N(0, I) over all the model's modes.

    The draw depends only on (seed, key, sample index), so a photo's samples do not change with
    the order or number of the other photos in a batch. scale 0 gives the fit itself, once.
    """
    if not (scale >= 0 and math.isfinite(scale)):
        raise FaceSynthError(f"shape jitter must be a finite number >= 0, got {scale}")
    K = model.num_identity
    base = np.zeros(K, np.float32)
    a = np.asarray(identity, np.float32).reshape(-1)[:K]
    base[: a.size] = a
    if scale == 0:
        return [ShapeSample(base, np.zeros(K, np.float32), 0.0, 0)]
    out = []
    for i in range(count):
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(key.encode()), i])
        delta = (scale * rng.standard_normal(K)).astype(np.float32)
        out.append(ShapeSample(base + delta, delta, float(scale), i))
    return out


def edited_vertices(fit, model: MorphableModel, expression: np.ndarray | None = None,
                    identity: np.ndarray | None = None) -> torch.Tensor:
    """`model.shape(identity, expression)` (1, V, 3), each defaulting to the fit's own."""
    ident = fit.identity if identity is None else identity
    expr = fit.expression if expression is None else expression
    with torch.no_grad():
        return model.shape(torch.from_numpy(np.asarray(ident, np.float32)[None]),
                           torch.from_numpy(np.asarray(expr, np.float32)[None]))


@dataclass
class Variant:
    """One (expression, shape sample) combination to render, with what the manifest records."""

    expression: ExpressionSpec
    coefficients: np.ndarray
    shape: ShapeSample | None
    tag: str = field(default="")


def variants(fit, model: MorphableModel, expressions: list[ExpressionSpec] | None = None,
             shape_jitter: float = 0.0, samples: int = 1, seed: int = 0, key: str = "") -> list[Variant]:
    """Every (expression, shape sample) combination for one fit, with a unique file-name tag each.

    Tags are '' for the plain fit (no expression asked, no jitter), so default output names stay.
    """
    specs = expressions or [FITTED]
    shapes = shape_samples(fit.identity, model, shape_jitter, samples, seed, key) if shape_jitter > 0 else [None]
    out = []
    for spec in specs:
        beta = expression_coefficients(spec, model, fit.expression)
        for s in shapes:
            tag = "" if expressions is None else f"_expr-{spec.label}"
            if s is not None:
                tag += f"_shape{s.index}"
            out.append(Variant(spec, beta, s, tag))
    return out


# --------------------------------------------------------------------------------------------
# Texture of closed eyelids

#: Blendshapes that pull the upper eyelid over the eye (texels they stretch get lid skin colour).
EYELID_BLENDSHAPES = ("eyeBlink_L", "eyeBlink_R")
LASH_RGB_SCALE = 0.3    # the lash line at the closed lid margin: skin colour darkened to this fraction
LASH_FROM = 0.5         # texels moving more than this fraction of the lid's largest move are the lid ...
LASH_TEXELS = 3         # ... and the last texels of it toward the eye opening the lash line
LID_FILL_FROM_MM = 0.4  # skin that moves less than this gives the closed lid its colour
LID_SHADE = 0.92        # the closed lid is a little darker than the skin around it
LID_START_MM = 1.0      # texels moved less than this keep the photo's colour ...
LID_RAMP_MM = 2.0       # ... and blend to the lid colour over this many mm more


def expression_texture(texture, model: MorphableModel, expression: np.ndarray,
                       fitted: np.ndarray | None = None, height: int | None = None):
    """The photo texture adjusted for an expression that uncovers surface the photo did not show.

    Closing the eyes stretches the upper lid over the eyeball; in an open-eye photo those lid
    texels sampled the lash line and the eye itself (the lid is a thin strip there), so a plain
    re-render shows a dark smear where the lid should be. Texels that the eyelid blendshapes move
    by more than ~1 mm (beyond the fit's own blink) take the colour of the lid skin ring around
    them, with a darker lash line along the lid margin. Other expressions return `texture` as is.
    """
    from face3d.texture import Texture, push_pull_fill, uv_raster

    idx = [model.expression_names.index(n) for n in EYELID_BLENDSHAPES if n in model.expression_names]
    if not idx:
        return texture
    beta = np.asarray(expression, np.float32)
    base = np.zeros_like(beta) if fitted is None else np.asarray(fitted, np.float32)[: beta.size]
    extra = np.clip(beta[idx] - base[idx], 0.0, None)
    if float(extra.max()) < 0.05:
        return texture
    disp = np.zeros(model.num_vertices, np.float32)           # how far each vertex moves, mm
    for i, e in zip(idx, extra):
        d = np.linalg.norm(model.expression_basis[i], axis=1)
        disp = np.maximum(disp, e * d)
    raster = uv_raster(model, height or texture.image.shape[0])
    Ht, Wt = raster.face.shape
    if (Ht, Wt) != texture.image.shape[:2]:
        return texture
    valid = raster.face >= 0
    tri = model.triangles[raster.face[valid]]
    b = raster.bary[valid]
    skin = model.skin[tri].all(axis=1)
    t_disp = np.einsum("nk,nk->n", b, disp[tri])
    img = texture.image.reshape(-1, 3).copy()
    flat = np.nonzero(valid.reshape(-1))[0]
    # the lid's colour continues the skin around it (push-pull fill in atlas space, so no
    # eye-shaped patch outline remains), with a darker lash line where the lids meet
    d = np.zeros(Ht * Wt, np.float32)
    d[flat] = t_disp
    sk = np.zeros(Ht * Wt, bool)
    sk[flat] = skin
    lid = sk & (d > LID_START_MM)
    if not lid.any():
        return texture
    unknown = sk & (d > LID_FILL_FROM_MM)        # the fill borrows from skin that stays put
    filled = push_pull_fill(texture.image, ~unknown.reshape(Ht, Wt)).reshape(-1, 3)
    # lash line: the lid margin, i.e. the strongly moving texels whose neighbour toward the eye
    # opening (down in the atlas) is not lid any more
    strong = (d > LASH_FROM * float(d.max())).reshape(Ht, Wt)
    below = np.zeros_like(strong)
    below[:-LASH_TEXELS] = strong[LASH_TEXELS:]
    margin = (strong & ~below).reshape(-1)[lid].astype(np.float32)[:, None]
    w = np.clip((d[lid] - LID_START_MM) / LID_RAMP_MM, 0.0, 1.0)[:, None]
    target = filled[lid] * LID_SHADE * (1.0 - (1.0 - LASH_RGB_SCALE) * margin)
    out = img.copy()
    out[lid] = img[lid] * (1 - w) + target * w
    return Texture(out.reshape(Ht, Wt, 3).astype(np.float32), texture.confidence)
