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

import dataclasses
import difflib
import hashlib
import math
import re
import zlib
from dataclasses import dataclass, field
from pathlib import PurePath

import numpy as np
import torch

from face3d.errors import FaceSynthError
from face3d.fitting import FitConfig, fit_morphable_model, mouth_blendshapes, refit_shape_to_landmarks
from face3d.morphable_model import ICT_PARTS, MOUTH_PART_NAMES, MorphableModel, load_mouth_parts
from face3d.rasterizer import rasterize_meshes
from face3d.render import ColouredMesh
from face3d.texture import push_pull_fill, uv_raster

#: Preset names in the order they are listed to the user.
PRESET_NAMES = ("neutral", "smile", "open-mouth", "surprise", "frown", "blink", "pout")

#: Presets over the ICT FaceKit's ARKit-style blendshapes (weights in [0, 1]); tuned on the
#: expression benchmark (benchmarks/bench_expressions.py) with dlib's landmarks on the renders.
#: The smile's mouthStretch (0.4, was 0.2) was chosen on 80 LFW faces, not the test photos
#: (benchmarks/bench_smile_presets.py): it passes the smile check on more of them (80/80 on the
#: re-split fit of `expression_split`, against 77/80 for 0.2), with a wider 10th-percentile widening.
ICT_PRESETS: dict[str, dict[str, float]] = {
    "neutral": {},
    "smile": {"mouthSmile_L": 0.9, "mouthSmile_R": 0.9, "cheekSquint_L": 0.35, "cheekSquint_R": 0.35,
              "mouthStretch_L": 0.4, "mouthStretch_R": 0.4, "mouthUpperUp_L": 0.15, "mouthUpperUp_R": 0.15,
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
    """One parsed expression: whether it starts from the fit, preset terms and raw overrides.
    `reference` is the photo whose expression `raw` holds (`face3d.reference_face`), '' for none;
    `eye_aspect`, when given, the frontal eye aspect ratio per eye (subject's right, left) that the
    face it is put on gets by its lid blendshapes (`match_eye_aspect`, in `make_variant`)."""

    text: str
    from_fit: bool = False
    presets: tuple[str, ...] = ()
    raw: tuple[tuple[str, float], ...] = ()
    reference: str = ""
    eye_aspect: tuple[float, float] | None = None   # the reference's eye opening (`reference_eye_aspect`)

    @property
    def label(self) -> str:
        """A file-name-safe tag: 'smile', 'fitted', 'jawOpen0p6-mouthSmile_L0p5', 'from-<photo stem>'."""
        if self.reference:
            return f"from-{reference_label(self.reference)}"
        parts = (["fitted"] if self.from_fit else []) + list(self.presets) + [
            f"{n}{_num_tag(v)}" for n, v in self.raw]
        return "-".join(parts) if parts else "neutral"

    def is_fitted(self) -> bool:
        return self.from_fit and not self.presets and not self.raw


FITTED = ExpressionSpec("fitted", from_fit=True)


def reference_label(source: str) -> str:
    """A file-name-safe tag of a reference photo: its stem, anything but [A-Za-z0-9_.-] as '_'."""
    stem = PurePath(str(source)).stem or "reference"
    return "".join(c if c.isascii() and (c.isalnum() or c in "_.-") else "_" for c in stem)[:60]


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


def full_identity(identity: np.ndarray, model: MorphableModel) -> np.ndarray:
    """(K,) float32 coefficients over all the model's identity modes: the fit's leading ones, then zeros."""
    out = np.zeros(model.num_identity, np.float32)
    a = np.asarray(identity, np.float32).reshape(-1)[: model.num_identity]
    out[: a.size] = a
    return out


def shape_samples(identity: np.ndarray, model: MorphableModel, scale: float, count: int = 1,
                  seed: int = 0, key: str = "") -> list[ShapeSample]:
    """`count` identities drawn around `identity`: alpha + scale * N(0, I) over all the model's modes.

    The draw depends only on (seed, key, sample index), so a photo's samples do not change with
    the order or number of the other photos in a batch. scale 0 gives the fit itself, once.
    """
    if not (scale >= 0 and math.isfinite(scale)):
        raise FaceSynthError(f"shape jitter must be a finite number >= 0, got {scale}")
    K = model.num_identity
    base = full_identity(identity, model)
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
    """`model.shape(identity, expression)` (1, V, 3), each defaulting to the fit's own.

    An expression that closes the eyes beyond the fit's own blink is first scaled to this face
    (`closing_expression`), so that a full blink meets the lower lid instead of leaving a gap or
    pushing the upper lid through it.
    """
    ident = fit.identity if identity is None else identity
    expr = fit.expression if expression is None else expression
    if expression is not None:
        expr = closing_expression(model, expr, fit.expression, ident)
    with torch.no_grad():
        return model.shape(torch.from_numpy(np.asarray(ident, np.float32)[None]),
                           torch.from_numpy(np.asarray(expr, np.float32)[None]))


# --------------------------------------------------------------------------------------------
# Re-splitting a fit between identity and expression, for edits that replace the expression

#: How expression views are made; runs with --expression record it, so that a resumed run does not
#: mix views of two versions. 1: presets on the fitted identity; 2: on the re-split fit
#: (`expression_split`), and hybrid views keep the render over an opened mouth; 3: the re-split
#: holds the camera (its faces no longer grow or shrink); 4: a reference's expression sets the lids
#: to the reference's eye opening (`match_eye_aspect`); 5: a partly closed lid gets a soft lash line
#: at its own margin and shades the eyeball under it, not the closed lid's band (`expression_texture`).
EXPRESSION_VERSION = 5


def expression_version(expressions) -> int | None:
    """What a run with these expression specs records (None when it asks for none)."""
    return EXPRESSION_VERSION if expressions else None


#: Prior of the mouth and jaw blendshapes in the landmark refit that re-splits a fit for editing
#: (`FitConfig.mouth_expression_prior`): the lowest mean error of the neutral face over synthetic
#: faces with and without a smile (benchmarks/bench_expression_split.py).
SPLIT_MOUTH_PRIOR = 1e-5


def expression_split(fit, model: MorphableModel, prior: float = SPLIT_MOUTH_PRIOR):
    """The fit with its face re-split between identity and expression, for edits that replace the
    expression (`neutral`, the presets, raw coefficients). Same camera, pose, lighting and landmarks.

    The landmark fit's expression prior (`FitConfig.expression_prior`) is strong, so that 53
    blendshapes do not chase landmark noise; the price is that most of a broad smile goes into the
    identity shape. On synthetic faces smiling at 0.3-1.0 the fit recovers a quarter of the smile
    coefficient and the neutral face of its identity keeps a mouth 4% too wide
    (benchmarks/bench_expression_split.py), so `neutral` still smiles and `smile` adds little.
    The re-split refits the photo's landmarks (`fit.landmarks`, landmarks only) with the fit's
    default priors, then refits the shape alone from there with the weaker `prior` on the mouth and
    jaw blendshapes (the 20 mouth landmarks pin them; the eyes keep the default) and that refit's
    camera held (`refit_shape_to_landmarks`; a free camera lets the weak refit trade the face's
    size against its distance, and that size change would land in the identity under the fit's own
    camera), and moves the difference into the fit:

        alpha' = alpha + (alpha_weak - alpha_default)
        beta'  = clip(beta + (beta_weak - beta_default), 0, 1)

    so what the fit's dense stage added stays. On the synthetic faces (bench_expression_split.py,
    its `expression_split` row) this lowers the neutral face's error from 3.66 to 3.40 mm where they
    smile and leaves it at 2.59 against 2.55 mm where they do not. A weak refit with a free camera
    gets further on the smiling faces (2.78 mm) by also changing the face's size, which the fit's
    own camera then shows as a larger face; on real photos the free-camera variant kept less of the
    person (dlib distance of A with its own re-split expression to its photo 0.157 against 0.123
    held, 25 photos). A model without mouth blendshapes (the SFM) or a fit without landmarks is
    returned as is.
    """
    beta = np.asarray(fit.expression, np.float32).reshape(-1)
    q = np.asarray(fit.landmarks, np.float64)
    if not mouth_blendshapes(model, beta.size) or q.shape != (68, 2) or not np.isfinite(q).all():
        return fit      # no mouth blendshapes (the SFM's six emotions), or no landmarks to refit
    alpha = np.asarray(fit.identity, np.float32).reshape(-1)
    key = ("expression_split", hashlib.sha1(q.tobytes() + alpha.tobytes() + beta.tobytes()
                                            + np.float64(prior).tobytes()).hexdigest())
    if key in model._torch_cache:
        return model._torch_cache[key]
    base = FitConfig(num_identity=alpha.size, dense=False)
    default = fit_morphable_model(None, q, model, base, image_size=tuple(fit.image_size))
    weak = refit_shape_to_landmarks(default, model, dataclasses.replace(base, mouth_expression_prior=prior))
    lo, hi = model.expression_range
    out = dataclasses.replace(
        fit, identity=(alpha + weak.identity - default.identity).astype(np.float32),
        expression=np.clip(beta + weak.expression - default.expression, lo, hi).astype(np.float32))
    held = [k for k in model._torch_cache if isinstance(k, tuple) and k[:1] == ("expression_split",)]
    if len(held) >= 64:     # a batch job sees many photos: keep the cache small
        for k in held:
            del model._torch_cache[k]
    model._torch_cache[key] = out
    return out


@dataclass
class Variant:
    """One (expression, shape sample) combination to render, with what the manifest records.

    `fit` is the fit to render it with: the re-split one (`expression_split`) for a spec that
    replaces the expression, None (the reconstruction's own) for one that starts from the fit."""

    expression: ExpressionSpec
    coefficients: np.ndarray
    shape: ShapeSample | None
    tag: str = field(default="")
    fit: object | None = None


def make_variant(spec: ExpressionSpec | str, fit, model: MorphableModel, shape: ShapeSample | None = None,
                 tag: str = "") -> Variant:
    """One variant of `fit`: `fitted` specs on the fit itself, the others on its re-split
    (`expression_split`), with a shape sample's perturbation added to that fit's identity. A spec
    with a reference's `eye_aspect` gets its lids solved on the identity it is rendered with."""
    spec = parse_expression(spec) if isinstance(spec, str) else spec
    base = fit if spec.from_fit else expression_split(fit, model)
    beta = expression_coefficients(spec, model, fit.expression)
    if shape is not None and base is not fit:
        shape = ShapeSample(full_identity(base.identity, model) + shape.delta, shape.delta, shape.scale, shape.index)
    if spec.eye_aspect is not None:      # a reference's eye opening, on the identity rendered
        identity = base.identity if shape is None else shape.identity
        target = eye_aspect_target(spec.eye_aspect, model, identity)
        beta = match_eye_aspect(model, beta, target, identity, base.expression)
    return Variant(spec, beta, shape, tag, None if base is fit else base)


def variants(fit, model: MorphableModel, expressions: list[ExpressionSpec] | None = None,
             shape_jitter: float = 0.0, samples: int = 1, seed: int = 0, key: str = "") -> list[Variant]:
    """Every (expression, shape sample) combination for one fit, with a unique file-name tag each.

    Tags are '' for the plain fit (no expression asked, no jitter), so default output names stay.
    """
    specs = expressions or [FITTED]
    shapes = shape_samples(fit.identity, model, shape_jitter, samples, seed, key) if shape_jitter > 0 else [None]
    out = []
    for spec in specs:
        for s in shapes:
            tag = "" if expressions is None else f"_expr-{spec.label}"
            if s is not None:
                tag += f"_shape{s.index}"
            out.append(make_variant(spec, fit, model, s, tag))
    return out


# --------------------------------------------------------------------------------------------
# Closing the eyes: lid geometry scaled per face, and the texture of the closed lids

#: Blendshapes that pull the upper eyelid over the eye (texels they stretch get lid skin colour).
EYELID_BLENDSHAPES = ("eyeBlink_L", "eyeBlink_R")
#: iBUG landmark pairs (upper lid, lower lid) of each eye, 0-based: subject's right eye, left eye.
_LID_PAIRS = (((37, 41), (38, 40)), ((43, 47), (44, 46)))
LID_CLOSE_LIMITS = (0.5, 1.5)  # the per-face scale of a blink stays within these factors
LASH_RGB_SCALE = 0.25   # lash colour: the lid skin colour darkened to this fraction
LASH_ABOVE_MM = 1.5     # the lash line covers the closed upper lid this far above its margin ...
LASH_SHADOW = 0.5       # ... followed by a lash shadow of this strength (fraction of the lash) ...
LASH_SHADOW_MM = 1.5    # ... fading over this many mm further up
LASH_BELOW_MM = 2.5     # closed lashes hang over the lower lid: dark this far below the margin ...
LASH_TIP_MM = 4.5       # ... fading out at this distance
UPPER_LID_MM = 1.0      # the upper lid: skin that the eyelid blendshapes move down by more than this
MARGIN_PX_PER_MM = 8.0  # resolution of the frontal render that finds the closed lid margin
LID_FILL_FROM_MM = 0.4  # skin that moves less than this gives the closed lid its colour
LID_START_MM = 1.0      # texels moved less than this keep the photo's colour ...
LID_RAMP_MM = 2.0       # ... and blend to the lid colour over this many mm more
EYE_CLOSED_FROM = 0.85  # eyeballs (hidden by closed lids) get the lash colour from this closure ...
EYE_CLOSED_FULL = 0.95  # ... fully from this one (a half-open eye keeps its eyeball texture)
#: A partly closed eye (closure under EYE_CLOSED_FROM, e.g. a squint set from a reference photo)
#: gets a soft lash line at the margin of its lid where it is, not the closed lid's band:
LASH_PARTIAL = 0.8      # its darkness at the margin (fraction of the closed lid's lash line) ...
LASH_PARTIAL_MM = 0.8   # ... falling off up the lid as a Gaussian of this width (mm)
EYE_SHADOW = 0.5        # the lid's shadow on the eyeball right under its margin (as lash darkness) ...
EYE_SHADOW_MM = 1.0     # ... fading over this many mm down the eyeball


def eyeball_vertices(model: MorphableModel) -> np.ndarray:
    """(V,) bool: the vertices of the eyeball meshes (ICT FaceKit; none for other models)."""
    out = np.zeros(model.num_vertices, bool)
    sizes = [b - a + 1 for _, (a, b), _, _, _ in ICT_PARTS]
    if model.name != "ict_facekit" or sum(sizes) != model.num_vertices:
        return out
    start = 0
    for (name, *_), n in zip(ICT_PARTS, sizes):
        if name.startswith("eye"):
            out[start:start + n] = True
        start += n
    return out


def _lid_shapes(model: MorphableModel) -> list[tuple[int, tuple]]:
    """(blendshape index, landmark pairs of the eye it closes) for each eyelid blendshape."""
    lm = model.landmark_vertices
    out = []
    for n in EYELID_BLENDSHAPES:
        if n not in model.expression_names:
            continue
        i = model.expression_names.index(n)
        moves = [np.abs(model.expression_basis[i][lm[[p[0] for p in pairs]], 1]).sum() for pairs in _LID_PAIRS]
        pairs = _LID_PAIRS[int(np.argmax(moves))]
        if min(lm[[k for p in pairs for k in p]]) >= 0:
            out.append((i, pairs))
    return out


def closing_expression(model: MorphableModel, expression: np.ndarray, fitted: np.ndarray | None = None,
                       identity: np.ndarray | None = None) -> np.ndarray:
    """`expression` with its eyelid closing scaled so that a full blink just closes this face's eyes.

    The eyeBlink blendshapes move the upper lid by a fixed distance (the generic face's eye
    opening, ~8 mm), so on a fitted face with a narrower opening the lid passes through the lower
    lid (2-3 mm), and on a wider one it leaves the eyeball showing. Per eye, the part of the
    weight beyond the fit's own (`fitted`) is rescaled by (lid gap without it) / (gap the
    blendshape closes), measured on this `identity` at its lid landmarks: weight 1 then makes the
    lids meet, 0.5 closes half of the remaining opening. Other coefficients are unchanged.
    """
    beta = np.asarray(expression, np.float32)
    shapes = _lid_shapes(model)
    base = np.zeros_like(beta) if fitted is None else np.asarray(fitted, np.float32).reshape(-1)[: beta.size]
    base = np.pad(base, (0, beta.size - base.size))
    extra = {i: float(beta[i] - min(base[i], beta[i])) for i, _ in shapes}
    if not shapes or max(extra.values()) < 1e-3:
        return beta
    out = beta.copy()
    lm = model.landmark_vertices
    ident = np.zeros(0, np.float32) if identity is None else np.asarray(identity, np.float32).reshape(-1)
    rows = np.unique(lm[[k for _, pairs in shapes for p in pairs for k in p]])
    pos = model.mean[rows] + np.einsum("k,kvc->vc", ident, model.identity_basis[: ident.size, rows])
    opened = beta.copy()
    for i, _ in shapes:
        opened[i] -= extra[i]
    pos = pos + np.einsum("e,evc->vc", opened, model.expression_basis[: beta.size, rows])
    at = {v: r for r, v in enumerate(rows)}
    lo, hi = LID_CLOSE_LIMITS
    for i, pairs in shapes:
        if extra[i] < 1e-3:
            continue
        up = [at[lm[p[0]]] for p in pairs]
        down = [at[lm[p[1]]] for p in pairs]
        gap = float(np.mean(pos[up, 1] - pos[down, 1]))
        basis = model.expression_basis[i, rows]
        closes = float(np.mean(basis[down, 1] - basis[up, 1]))    # mm per unit weight
        if closes <= 1e-3:
            continue
        full = 1.0 - min(opened[i], 1.0 - 1e-3)                     # the weight that means "closed"
        out[i] = opened[i] + extra[i] * float(np.clip(gap / closes / full, lo, hi))
    return out


def _frontal_fragments(V: np.ndarray, T: np.ndarray, tris: np.ndarray, lo, hi, s: float):
    """Triangles `tris` (indices into T) of vertices V rendered frontally (orthographic, x right, y
    up, nearest +z in front) over the box lo..hi at s px/mm: (H, W) triangle index (-1: none) and
    (H, W, 3) barycentrics."""
    W, H = int(np.ceil((hi[0] - lo[0]) * s)), int(np.ceil((hi[1] - lo[1]) * s))
    screen = np.stack([(V[:, 0] - lo[0]) * s, (hi[1] - V[:, 1]) * s, 1000.0 - V[:, 2]], axis=1)
    frag = rasterize_meshes(torch.from_numpy(screen[None].astype(np.float32)), torch.from_numpy(T[tris]), (H, W),
                            cull_backfaces=True, perspective_correct=False)
    p2f = frag.pix_to_face[0].numpy()
    return np.where(p2f >= 0, tris[np.maximum(p2f, 0)], -1), frag.bary_coords[0].detach().numpy()


def _texel_samples(model: MorphableModel, f: np.ndarray, bary: np.ndarray, sel: np.ndarray, size: tuple[int, int]):
    """The atlas texel (flat index into `size`) that each selected pixel of a frontal render shows."""
    Ht, Wt = size
    uv = np.einsum("nk,nkc->nc", bary[sel], model.face_uvs[f[sel]])
    return (np.clip(((1.0 - uv[:, 1]) * Ht).astype(np.int64), 0, Ht - 1) * Wt
            + np.clip((uv[:, 0] * Wt).astype(np.int64), 0, Wt - 1))


def _margin_distances(upper: np.ndarray, s: float):
    """Per pixel of a frontal render, in mm: from an upper-lid pixel down to the lid margin (the
    lowest upper-lid pixel of its run; inf off the lid), and from the margin down to a pixel below
    it (half a pixel at the first row under the margin; inf where no lid is above)."""
    H, W = upper.shape
    above = np.full((H, W), np.inf, np.float32)
    below = np.full((H, W), np.inf, np.float32)
    run = np.full(W, np.inf, np.float32)
    for r in range(H - 1, -1, -1):
        run = np.where(upper[r], np.where(np.isfinite(run), run + 1, 0.0), np.inf)
        above[r] = run
    run = np.full(W, np.inf, np.float32)
    for r in range(1, H):
        run = np.where(upper[r - 1], 0.0, run + 1)
        below[r] = np.where(upper[r], np.inf, run + 0.5)
    return above / s, below / s


def _under_the_lid(on_skin: np.ndarray, moved: np.ndarray, s: float):
    """Per pixel of a frontal render: how far (mm) it lies below the nearest skin pixel above it
    (for an eyeball pixel: the edge of the upper lid; inf where none is) and how far (mm) the
    blendshapes moved that skin pixel down (`moved`, per pixel)."""
    H, W = on_skin.shape
    dist = np.full((H, W), np.inf, np.float32)
    lid = np.zeros((H, W), np.float32)
    run, last = np.full(W, np.inf, np.float32), np.zeros(W, np.float32)
    for r in range(1, H):
        run = np.where(on_skin[r - 1], 0.0, run + 1)
        last = np.where(on_skin[r - 1], moved[r - 1], last)
        dist[r], lid[r] = run + 0.5, last
    return dist / s, lid


def _lid_margin(model: MorphableModel, V: np.ndarray, down: np.ndarray, closure: np.ndarray, size: tuple[int, int]):
    """Per texel of the atlas (H*W,): lash darkness 0..1 around the margin of the (closing) upper
    lid, and (H*W,) shadow 0..1 of the lid on the eyeball under it.

    The lids are rendered frontally (orthographic, skin and eyeballs, vertices `V`: the face with
    its lids where they are drawn). Pixels of the upper lid (skin moved down by more than
    UPPER_LID_MM by the eyelid blendshapes, `down` (V,) mm) get a lash line at its margin; below the
    margin, skin (the lower lid) gets the closed lashes that hang over it and the eyeball the lid's
    shadow. `closure` (V,) 0..1 per vertex (the closure of its eye from EYE_CLOSED_FROM to
    EYE_CLOSED_FULL) blends two lash lines: at 1 the closed lid's (a band LASH_ABOVE_MM deep, its
    shadow and the lashes down to LASH_TIP_MM on the lower lid), at 0 a partly closed lid's (a soft
    line of strength LASH_PARTIAL and width LASH_PARTIAL_MM at the margin, the eyeball under it
    shaded by EYE_SHADOW fading over EYE_SHADOW_MM down from the lid's edge, in proportion to how far
    the lid there moved, up to UPPER_LID_MM, and the eyeball hidden under the lid shaded fully, so
    no eye white shows at its edge). Each texel takes the mean over the pixels that show
    it; texels not seen stay 0.
    """
    T = model.triangles
    eye = eyeball_vertices(model)
    moving = np.abs(down) > 0.3
    lo, hi = V[moving].min(0) - 3.0, V[moving].max(0) + 3.0
    c = V[T]
    near = ((c[..., 0] > lo[0]) & (c[..., 0] < hi[0]) & (c[..., 1] > lo[1]) & (c[..., 1] < hi[1])).any(axis=1)
    skin_t, eye_t = model.skin[T].all(axis=1), eye[T].all(axis=1)
    s = MARGIN_PX_PER_MM
    f, bary = _frontal_fragments(V, T, np.nonzero(near & (skin_t | eye_t))[0], lo, hi, s)
    cov = f >= 0
    fs = np.maximum(f, 0)
    on_skin, on_eye = cov & skin_t[fs], cov & eye_t[fs]
    moved = np.einsum("hwk,hwk->hw", bary, down[T[fs]])
    upper = on_skin & (moved > UPPER_LID_MM)
    above, below = _margin_distances(upper, s)
    k = np.einsum("hwk,hwk->hw", bary, closure[T[fs]])
    closed = np.where(above < LASH_ABOVE_MM, 1.0, LASH_SHADOW * np.exp(-(above - LASH_ABOVE_MM) / LASH_SHADOW_MM))
    partly = LASH_PARTIAL * np.exp(-0.5 * (above / LASH_PARTIAL_MM) ** 2)
    dark = np.where(upper, k * closed + (1 - k) * partly,
                    k * np.clip((LASH_TIP_MM - below) / (LASH_TIP_MM - LASH_BELOW_MM), 0.0, 1.0))
    dark = np.where(on_skin, dark, 0.0)
    gap, lid_moved = _under_the_lid(on_skin, np.where(on_skin, moved, 0.0), s)
    shade = np.where(on_eye, (1 - k) * EYE_SHADOW * np.exp(-gap / EYE_SHADOW_MM)
                     * np.clip(lid_moved / UPPER_LID_MM, 0.0, 1.0), 0.0)
    # the eyeball behind the upper lid (seen only at its edge, from other angles): fully shaded
    fe, bary_e = _frontal_fragments(V, T, np.nonzero(near & eye_t)[0], lo, hi, s)
    hidden = (fe >= 0) & upper
    ke = np.einsum("hwk,hwk->hw", bary_e, closure[T[np.maximum(fe, 0)]])
    n = size[0] * size[1]
    sel = cov & (dark > 0)
    texel = _texel_samples(model, f, bary, sel, size)
    total, count = np.bincount(texel, dark[sel], n), np.bincount(texel, None, n)
    lash = np.where(count > 0, total / np.maximum(count, 1), 0.0)
    sel_v = on_eye & (shade > 0)
    tv, th = _texel_samples(model, f, bary, sel_v, size), _texel_samples(model, fe, bary_e, hidden, size)
    texel = np.concatenate([tv, th])
    values = np.concatenate([shade[sel_v], (1 - ke[hidden]) * EYE_SHADOW])
    total, count = np.bincount(texel, values, n), np.bincount(texel, None, n)
    shadow = np.where(count > 0, total / np.maximum(count, 1), 0.0)
    return lash.astype(np.float32), shadow.astype(np.float32)


def eye_closure(model: MorphableModel, expression: np.ndarray, fitted: np.ndarray | None = None) -> list[tuple[float, float]]:
    """Per eyelid blendshape of `model`: (side, closure), side the sign of model x of the eye it
    closes, closure 0..1 how far its weight beyond the fit's own (`fitted`) closes the eye's
    remaining opening, ramped from EYE_CLOSED_FROM (0: a partly closed eye) to EYE_CLOSED_FULL (1:
    a closed one): the closed-eye treatment of `expression_texture` follows it."""
    beta = np.asarray(expression, np.float32).reshape(-1)
    base = np.zeros_like(beta) if fitted is None else np.asarray(fitted, np.float32).reshape(-1)[: beta.size]
    base = np.pad(base, (0, beta.size - base.size))
    lm = model.landmark_vertices
    out = []
    for i, pairs in _lid_shapes(model):
        frac = max(float(beta[i] - base[i]), 0.0) / max(1.0 - float(base[i]), 1e-3)   # share of the opening closed
        k = float(np.clip((frac - EYE_CLOSED_FROM) / (EYE_CLOSED_FULL - EYE_CLOSED_FROM), 0.0, 1.0))
        out.append((float(np.sign(model.mean[lm[pairs[0][0]], 0])), k))
    return out


def _lid_displacement(model: MorphableModel, shapes, beta: np.ndarray, extra: np.ndarray, closed: np.ndarray):
    """(V,) how far (mm) each vertex moves with the closing beyond the fit's own (`closed`: the
    expression with its blink scaled to a face), and (V,) how far down."""
    disp = np.zeros(model.num_vertices, np.float32)
    down = np.zeros(model.num_vertices, np.float32)
    for (i, _), e in zip(shapes, extra):
        w = float(closed[i] - beta[i]) + e
        disp = np.maximum(disp, w * np.linalg.norm(model.expression_basis[i], axis=1))
        down -= w * model.expression_basis[i][:, 1]
    return disp, down


def _lash_maps(model: MorphableModel, beta, base, shapes, extra, identity, raster):
    """Per texel (H*W,): lash darkness and eyeball shadow of `expression_texture`, and the per-eye
    `eye_closure`. A closed eye's band is drawn on the generic face (where the blink's lash constants
    were chosen, benchmarks/bench_blink_lash.py); a partly closed eye's line and shadow on the face
    rendered (`identity`; None: the generic one), so that they sit where its lid's margin is. Eyes
    between EYE_CLOSED_FROM and EYE_CLOSED_FULL blend the two."""
    Ht, Wt = raster.face.shape
    sides = eye_closure(model, beta, base)
    side_v = np.sign(model.mean[:, 0])
    closure = np.zeros(model.num_vertices, np.float32)
    for sd, k in sides:
        closure[side_v == sd] = k
    valid = raster.face >= 0
    kt = np.zeros(Ht * Wt, np.float32)
    kt[np.nonzero(valid.reshape(-1))[0]] = np.einsum("nk,nk->n", raster.bary[valid],
                                                     closure[model.triangles[raster.face[valid]]])
    lash, shadow = np.zeros(Ht * Wt, np.float32), np.zeros(Ht * Wt, np.float32)
    faces = [(1.0, None)] if all(k >= 1.0 for _, k in sides) else [(0.0, identity)]
    if any(k > 0.0 for _, k in sides) and faces[0][0] == 0.0:
        faces.append((1.0, None))
    for k, ident in faces:
        a = np.zeros(0, np.float32) if ident is None else np.asarray(ident, np.float32).reshape(-1)
        closed = closing_expression(model, beta, base, None if ident is None else a)
        _, down = _lid_displacement(model, shapes, beta, extra, closed)
        V = (model.mean + np.einsum("k,kvc->vc", a, model.identity_basis[: a.size])
             + np.einsum("e,evc->vc", closed, model.expression_basis[: closed.size]))
        l, sh = _lid_margin(model, V, down, np.full(model.num_vertices, k, np.float32), (Ht, Wt))
        weight = kt if k == 1.0 else 1.0 - kt
        lash += weight * l
        shadow += weight * sh
    return lash, shadow, sides


def expression_texture(texture, model: MorphableModel, expression: np.ndarray,
                       fitted: np.ndarray | None = None, height: int | None = None, identity=None):
    """The photo texture adjusted for an expression that uncovers surface the photo did not show.

    Closing the eyes stretches the upper lid over the eyeball; in an open-eye photo those lid
    texels sampled the lash line and the eye itself (the lid is a thin strip there), so a plain
    re-render shows a dark smear where the lid should be. Texels that the eyelid blendshapes move
    by more than ~1 mm (beyond the fit's own blink) take the colour of the skin around them
    (push-pull fill from skin texels that stay put), with a lash line along the margin of the lid
    where this expression puts it (`_lash_maps`; `identity`: the face rendered): for a closed eye a dark band that fades into the lower lid, as closed lashes do, and the eyeballs,
    hidden behind the closed lids, take the lash colour so no eye white shows where the lids meet;
    for a partly closed one (`eye_closure` 0) a soft, weaker line at the lid's margin and the lid's
    shadow on the eyeball under it. Other expressions return `texture` as is.
    """
    shapes = _lid_shapes(model)
    if not shapes:
        return texture
    beta = np.asarray(expression, np.float32)
    base = np.zeros_like(beta) if fitted is None else np.asarray(fitted, np.float32).reshape(-1)[: beta.size]
    base = np.pad(base, (0, beta.size - base.size))
    extra = np.array([max(float(beta[i] - base[i]), 0.0) for i, _ in shapes])
    if float(extra.max()) < 0.05:
        return texture
    raster = uv_raster(model, height or texture.image.shape[0])
    Ht, Wt = raster.face.shape
    if (Ht, Wt) != texture.image.shape[:2]:
        return texture
    disp, _ = _lid_displacement(model, shapes, beta, extra, closing_expression(model, beta, base))   # generic face
    valid = raster.face >= 0
    flat = np.nonzero(valid.reshape(-1))[0]
    tri = model.triangles[raster.face[valid]]
    d = np.zeros(Ht * Wt, np.float32)
    d[flat] = np.einsum("nk,nk->n", raster.bary[valid], disp[tri])
    skin = np.zeros(Ht * Wt, bool)
    skin[flat] = model.skin[tri].all(axis=1)
    lid = skin & (d > LID_START_MM)
    if not lid.any():
        return texture
    img = texture.image.reshape(-1, 3)
    # the lid's colour continues the skin around it: push-pull fill in atlas space from skin
    # texels that stay put (not from the atlas gutters, which hold blurred eye colours)
    known = skin & (d <= LID_FILL_FROM_MM)
    filled = push_pull_fill(texture.image, known.reshape(Ht, Wt)).reshape(-1, 3)
    w = np.clip((d[lid] - LID_START_MM) / LID_RAMP_MM, 0.0, 1.0)[:, None]
    out = img.copy()
    out[lid] = img[lid] * (1 - w) + filled[lid] * w
    lash, shadow, sides = _lash_maps(model, beta, base, shapes, extra, identity, raster)
    lash *= skin
    m = (lash > 0) | (shadow > 0)
    out[m] *= 1.0 - (1.0 - LASH_RGB_SCALE) * np.maximum(lash[m], shadow[m])[:, None]
    # eyeballs of closed eyes: the lash colour (they show only as a sliver where the lids meet)
    eye = eyeball_vertices(model)
    if eye.any():
        lash_rgb = np.median(filled[lid], axis=0) * LASH_RGB_SCALE
        T = model.triangles
        side_t = np.where(eye[T].all(axis=1), np.sign(model.mean[T, 0].mean(axis=1)), 0.0)   # per triangle
        side = np.zeros(Ht * Wt, np.float32)
        side[flat] = side_t[raster.face[valid]]
        for sd, k in sides:
            sel = side == sd
            out[sel] = out[sel] * (1 - k) + lash_rgb * k
    return dataclasses.replace(texture, image=out.reshape(Ht, Wt, 3).astype(np.float32))


# --------------------------------------------------------------------------------------------
# Eye openness from a reference photo: the lids set so that the eyes open as far as the reference's

#: iBUG landmarks of each eye, 0-based, in the order of the eye aspect ratio's p1..p6 (outer corner,
#: two upper-lid points, inner corner, two lower-lid points; the left eye's run mirrors the right's):
#: the subject's right eye, then the left.
EYE_LANDMARKS = (tuple(range(36, 42)), tuple(range(42, 48)))
#: the per-eye blendshapes that move the upper lid: (closes it, opens it); the openness solve sets these
LID_OPENNESS_SHAPES = ("eyeBlink", "eyeWide")
#: the frontal-equivalent eye aspect ratio a reference may ask for is clipped to this range
EYE_ASPECT_RANGE = (0.0, 0.6)
#: the pose correction of a reference's measured eye aspect ratio stays within these factors
EYE_POSE_LIMITS = (0.67, 1.5)
#: How a reference's eye opening is put on another face (`eye_aspect_target`): "absolute" (the
#: reference's eye aspect ratio itself) or "scaled" (the face's own neutral ratio times the
#: reference's / EYE_ASPECT_POPULATION).
EYE_MATCH = "absolute"
#: dlib's median eye aspect ratio over 556 seeded LFW photos (benchmarks/bench_blink_reference.py,
#: results/blink_reference.json `lfw.median`): the "usual" eye opening of the "scaled" match
EYE_ASPECT_POPULATION = 0.2911


def eye_aspect_ratios(points) -> np.ndarray:
    """(2,) eye aspect ratio of each eye (subject's right, left) of 68 iBUG points (68, 2+; only x, y
    are used): EAR = (|p2 - p6| + |p3 - p5|) / (2 |p1 - p4|), the lid opening over the eye's width
    (Soukupova and Cech 2016; dlib's reading of an open eye is ~0.3, of a closed one ~0.1)."""
    p = np.asarray(points, np.float64)[:, :2]
    out = []
    for eye in EYE_LANDMARKS:
        q = p[list(eye)]
        width = 2.0 * np.linalg.norm(q[0] - q[3])
        out.append((np.linalg.norm(q[1] - q[5]) + np.linalg.norm(q[2] - q[4])) / max(width, 1e-9))
    return np.asarray(out)


def lid_openness_shapes(model: MorphableModel) -> list[tuple[int, int]]:
    """Per eye (subject's right, left): the indices of its (eyeBlink, eyeWide) blendshapes, each
    assigned to the eye whose upper-lid landmarks it moves most; [] when the model lacks them or has
    no vertex for an eye landmark (the SFM)."""
    names = model.expression_names
    lm = model.landmark_vertices
    eyes = [list(e) for e in EYE_LANDMARKS]
    if min(lm[[k for e in eyes for k in e]]) < 0:
        return []
    found: list[dict[str, int]] = [{}, {}]
    for kind in LID_OPENNESS_SHAPES:
        for n in (f"{kind}_L", f"{kind}_R"):
            if n not in names:
                return []
            i = names.index(n)
            moves = [np.abs(model.expression_basis[i][lm[[e[1], e[2]]], 1]).sum() for e in eyes]
            found[int(np.argmax(moves))][kind] = i
    if any(len(f) != len(LID_OPENNESS_SHAPES) for f in found):
        return []
    return [tuple(f[k] for k in LID_OPENNESS_SHAPES) for f in found]


def model_eye_aspect(model: MorphableModel, identity, expression, fitted=None) -> np.ndarray:
    """(2,) eye aspect ratio of the model's eye landmark vertices seen frontally (x, y of model
    space), for the face as it is rendered: `identity`, `expression` with its blink scaled to the
    face by `closing_expression` (against the fit's own `fitted`), as `edited_vertices` does."""
    beta = closing_expression(model, np.asarray(expression, np.float32), fitted, identity)
    rows = model.landmark_vertices[[k for e in EYE_LANDMARKS for k in e]]
    ident = np.asarray(identity, np.float32).reshape(-1)
    pos = (model.mean[rows] + np.einsum("k,kvc->vc", ident, model.identity_basis[: ident.size, rows])
           + np.einsum("e,evc->vc", beta, model.expression_basis[: beta.size, rows]))
    points = np.zeros((68, 3))
    points[36:48] = pos
    return eye_aspect_ratios(points)


def reference_eye_aspect(fit, model: MorphableModel) -> tuple[float, float] | None:
    """A reference photo's eye opening per eye (subject's right, left), as the frontal eye aspect
    ratio the model's lids are to reach: the ratio of the photo's own landmarks (`fit.landmarks`,
    what the fit was made from) with the head pose taken out,

        r = r_photo * r_frontal(S) / r_camera(S),

    where S is the fit's identity with no expression (open eyes, so the quotient is the pose's
    foreshortening of this face's eyes and not its expression) and r_camera the ratio of S's eye
    landmark vertices projected through the fit's camera. A turned head narrows the eye (yaw) or
    its opening (pitch); the quotient undoes most of that, within EYE_POSE_LIMITS (lids that an
    expression has moved sit elsewhere in depth than the open eye's, so it is not exact: on
    synthetic faces at yaw up to 30 and pitch up to 25 degrees it removes half to two thirds of the
    pose's change, tests/test_eye_openness.py), and r is clipped to EYE_ASPECT_RANGE. None when the
    fit has no landmarks or the model no lid blendshapes."""
    q = np.asarray(getattr(fit, "landmarks", np.zeros(0)), np.float64)
    if q.shape != (68, 2) or not np.isfinite(q).all() or not lid_openness_shapes(model):
        return None
    neutral = np.zeros(model.num_expressions, np.float32)
    with torch.no_grad():
        shape = fit.vertices(model, neutral)
        seen = fit.project(model, shape)[0, :, :2].numpy()
    lm = model.landmark_vertices
    frontal = np.zeros((68, 3))
    camera = np.zeros((68, 2))
    eye = [k for e in EYE_LANDMARKS for k in e]
    frontal[eye] = shape[0].numpy()[lm[eye]]
    camera[eye] = seen[lm[eye]]
    lo, hi = EYE_POSE_LIMITS
    pose = np.clip(eye_aspect_ratios(frontal) / np.maximum(eye_aspect_ratios(camera), 1e-6), lo, hi)
    r = np.clip(eye_aspect_ratios(q) * pose, *EYE_ASPECT_RANGE)
    return float(r[0]), float(r[1])


def eye_aspect_target(reference, model: MorphableModel, identity, mode: str | None = None) -> np.ndarray:
    """(2,) the frontal eye aspect ratio a face of `identity` is given from a reference's
    `reference_eye_aspect` r_B: "absolute" r_B itself; "scaled" r_A0 * r_B / EYE_ASPECT_POPULATION,
    r_A0 the face's own ratio with no expression (its eye shape kept, opened or closed as much as
    the reference's are against the usual eye). `mode` defaults to EYE_MATCH."""
    mode = EYE_MATCH if mode is None else mode
    r_b = np.asarray(reference, np.float64).reshape(2)
    if mode == "absolute":
        return r_b
    if mode == "scaled":
        r_a0 = model_eye_aspect(model, identity, np.zeros(model.num_expressions, np.float32))
        return np.clip(r_a0 * r_b / EYE_ASPECT_POPULATION, *EYE_ASPECT_RANGE)
    raise FaceSynthError(f"unknown eye match {mode!r} (absolute, scaled)")


def match_eye_aspect(model: MorphableModel, expression, target, identity, fitted=None,
                     iterations: int = 30) -> np.ndarray:
    """`expression` with each eye's eyeBlink and eyeWide set so that the face of `identity`, as it
    is rendered (`model_eye_aspect`, blink scaled by `closing_expression` against `fitted`), shows
    the frontal eye aspect ratio `target` (2,: subject's right eye, left eye). Every other
    coefficient, eyeSquint and the gaze shapes included, stays as given.

    Per eye one lid parameter t in [-1, 1] walks from wide open to closed: eyeWide = max(-t, 0),
    eyeBlink = max(t, 0), so both stay in the blendshapes' range [0, 1] and never act together.
    The ratio falls monotonically along t (the blink lowers the upper lid, eyeWide lifts it, and
    `closing_expression` scales the blink by a factor that does not depend on it), so bisection on
    r(t) = target finds t to 2^-iterations; a target beyond what the lids can reach gives the end
    of the range (t = -1 or 1). The two eyes move different vertices, so they are solved apart.
    """
    beta = np.asarray(expression, np.float32).reshape(-1).copy()
    shapes = lid_openness_shapes(model)
    if not shapes:
        return beta
    target = np.asarray(target, np.float64).reshape(2)

    def ratio(t: float, eye: int) -> float:
        blink, wide = shapes[eye]
        b = beta.copy()
        b[blink], b[wide] = max(t, 0.0), max(-t, 0.0)
        return float(model_eye_aspect(model, identity, b, fitted)[eye])

    for eye, (blink, wide) in enumerate(shapes):
        lo, hi = -1.0, 1.0                                  # r(lo) >= r(hi)
        if target[eye] >= ratio(lo, eye):
            t = lo
        elif target[eye] <= ratio(hi, eye):
            t = hi
        else:
            for _ in range(iterations):
                mid = 0.5 * (lo + hi)
                lo, hi = (mid, hi) if ratio(mid, eye) > target[eye] else (lo, mid)
            t = 0.5 * (lo + hi)
        beta[blink], beta[wide] = max(t, 0.0), max(-t, 0.0)
    return beta


# --------------------------------------------------------------------------------------------
# Opening the mouth: the teeth, gums and tongue that a closed-mouth photo did not show

#: iBUG inner-lip landmark pairs (upper, lower), 0-based: the lip gap is their mean distance.
_INNER_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))
MOUTH_OPENS_MM = 1.0          # teeth are rendered when the lips part this much more than the fit's
TEETH_RGB = (0.90, 0.87, 0.78)        # off-white enamel (sRGB, 0..1)
GUMS_RGB = (0.72, 0.33, 0.36)         # pink-red gums and tongue
#: Light falls off into the mouth cavity: a surface this many mm behind the front teeth gets 1/e
#: of the light, never less than the floor. A dark cavity is what photos of open mouths show, and
#: what dlib's landmarks need: with a brighter interior (1/e at 45 mm, floor 0.4) they took it for
#: the lower lip on bearded faces (benchmarks/bench_expressions.py, deepface_jack img61/62).
MOUTH_FALLOFF_MM = 12.0
MOUTH_FALLOFF_FLOOR = 0.06


def lip_gap(model: MorphableModel, expression: np.ndarray, identity: np.ndarray | None = None) -> float:
    """Mean inner-lip gap (mm) of the model with these coefficients: upper minus lower inner-lip
    landmark height (+y up), so lips pressed through each other (mouthClose alone) count as closed,
    not as open. 0 where the model lacks the landmarks."""
    lm = model.landmark_vertices
    rows = np.array([lm[k] for p in _INNER_LIP_PAIRS for k in p])
    if (rows < 0).any():
        return 0.0
    pos = model.mean[rows].astype(np.float64)
    if identity is not None:
        a = np.asarray(identity, np.float32).reshape(-1)[: model.num_identity]
        pos = pos + np.einsum("k,kvc->vc", a, model.identity_basis[: a.size, rows])
    b = np.asarray(expression, np.float32).reshape(-1)[: model.num_expressions]
    pos = pos + np.einsum("e,evc->vc", b, model.expression_basis[: b.size, rows])
    return float(np.mean([pos[2 * i, 1] - pos[2 * i + 1, 1] for i in range(len(_INNER_LIP_PAIRS))]))


def mouth_opens(model: MorphableModel, expression: np.ndarray, fitted: np.ndarray | None = None,
                identity: np.ndarray | None = None) -> bool:
    """Whether `expression` parts the lips more than the fit's own expression (by MOUTH_OPENS_MM;
    a fit whose lips overlap counts as closed, gap 0)."""
    base = np.zeros(model.num_expressions, np.float32) if fitted is None else fitted
    return lip_gap(model, expression, identity) > max(lip_gap(model, base, identity), 0.0) + MOUTH_OPENS_MM


def mouth_part_colours(parts) -> np.ndarray:
    """(Vm, 3) default colours of the teeth (off-white) and gums and tongue (pink-red), darkened with
    depth into the mouth and by a frontal light on the mean shape, so the unlit render reads as a
    mouth cavity rather than a flat cut-out."""
    V, T = parts.mean.astype(np.float64), parts.triangles
    n = np.zeros_like(V)
    fn = np.cross(V[T[:, 1]] - V[T[:, 0]], V[T[:, 2]] - V[T[:, 0]])
    for k in range(3):
        np.add.at(n, T[:, k], fn)
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-9)
    teeth = np.isin(parts.part, [MOUTH_PART_NAMES.index("upper_teeth"), MOUTH_PART_NAMES.index("lower_teeth")])
    front = V[teeth, 2].max()
    depth = np.exp(-np.maximum(front - V[:, 2], 0.0) / MOUTH_FALLOFF_MM)
    light = (0.55 + 0.45 * np.clip(n[:, 2], 0.0, 1.0)) * np.maximum(depth, MOUTH_FALLOFF_FLOOR)
    base = np.where(teeth[:, None], np.array(TEETH_RGB), np.array(GUMS_RGB))
    return np.clip(base * light[:, None], 0.0, 1.0).astype(np.float32)


def mouth_mesh(model: MorphableModel, expression: np.ndarray, identity: np.ndarray,
               fitted: np.ndarray | None = None):
    """The teeth, gums and tongue to render with an expression (a `ColouredMesh`), or None.

    None when the model has no mouth parts (the SFM) or when `expression` does not part the lips
    beyond the fit's own (`mouth_opens`): a view that keeps the photo's mouth renders as before.
    The parts follow the same identity and expression coefficients as the head, so the lower teeth
    move with jawOpen.
    """
    if not mouth_opens(model, expression, fitted, identity):
        return None
    parts = load_mouth_parts(model)
    if parts is None:
        return None
    key = ("mouth_part_colours",)
    if key not in model._torch_cache:
        model._torch_cache[key] = mouth_part_colours(parts)
    return ColouredMesh(parts.shape(identity, expression), parts.triangles, model._torch_cache[key])
