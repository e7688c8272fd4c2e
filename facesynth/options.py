"""The flags the `facesynth` commands share, and the argparse types that read them: one place that
defines what --yaw, --method, --size, --threads, the fit, expression and SFS flags mean, so every
command reads them alike.

Every type reports a bad value as a one-line usage error that names the flag. This module imports
no torch (see `facesynth.cli`).
"""
from __future__ import annotations

import argparse
import math

from face3d.devices import DEFAULT_DEVICE, valid_device_name
from face3d.errors import FaceSynthError

#: The ways to make a view (facesynth.methods): name -> what it does; the order of reports and menus.
METHODS = {"3d": "the 3D stage's renders alone",
           "gan": "the GAN-only baseline (CAPG-GAN: photo + target-pose landmarks, no 3D rendering)",
           "hybrid": "the 3D renders refined by the trained refiner"}
#: The method a view is made with unless asked otherwise: the more realistic one as measured. With
#: the seen render kept, the hybrid ties the render on the identity-feature realism test and loses to
#: it on the pixel-level one (benchmarks/bench_compare.py, bench_pixel_realism.py), at 3x the time.
DEFAULT_METHOD = "3d"
#: --align: the face-centred crop of the renderer, or ArcFace / InsightFace's five-point 112x112 crop
ALIGNMENTS = ("crop", "arcface")
#: --relight: keep the photo's lighting, light from the viewer, or from a seeded random direction
RELIGHT_MODES = ("keep", "frontal", "random")

class UsageError(FaceSynthError):
    """Bad usage found once the flags are parsed (too many poses): the parser reports it as a usage
    error (exit 2); a program that calls a command's functions directly gets it as a FaceSynthError."""


#: Angles one --yaw / --pitch / --roll may give at most (361: every half degree of [-90, 90]).
MAX_ANGLES = 361
#: Poses (yaw x pitch x roll) one rotate / augment / compare run may ask for at most.
MAX_POSES = 1000
#: Reference photos one `augment --expression-from DIR` may take at most, checked before any is read.
MAX_REFERENCES = 1000
#: Photos fitted together in one batched fit (`face3d.pipeline.reconstruct_largest_faces`):
#: `augment --batch-size`'s default and bound, and the batch `rotate` and `compare` fit their photos in.
DEFAULT_BATCH_SIZE = 8
MAX_BATCH_SIZE = 64
#: Slack, in steps, that keeps a range's stop despite floating-point error (0:1:0.1 ends at 1).
_RANGE_EPS = 1e-9
#: The angle flags' help, after what each flag means.
ANGLES_HELP = ("comma-separated degrees in [-90, 90] or ranges a:b:step (a to b, b included when the steps land "
               f"on it, never passed; b < a needs a negative step); at most {MAX_ANGLES} angles per flag and "
               f"{MAX_POSES} poses (yaw x pitch x roll)")


class AngleCountError(argparse.ArgumentTypeError):
    """An angle list that would give more than `limit` angles (`count`, found before any angle is made)."""

    def __init__(self, message: str, count: int | float, limit: int):
        super().__init__(message)
        self.count = count
        self.limit = limit

    @property
    def count_text(self) -> str:
        return _count_text(self.count)


def _count_text(count: int | float) -> str:
    return "more than 10^308" if count == math.inf else str(count)


class _DirectionError(ValueError):
    """A range whose step points away from its stop."""


def _parts(text: str):
    """The comma-separated parts of `text`, one at a time (no list as long as the text is made)."""
    start = 0
    while True:
        end = text.find(",", start)
        if end < 0:
            yield text[start:]
            return
        yield text[start:end]
        start = end + 1


def shown_text(text: str, width: int = 40) -> str:
    """`text` as an error message quotes it: cut to `width` characters."""
    return text if len(text) <= width else text[: width - 3] + "..."


def _parse_part(part: str) -> tuple[float, float, float, int | float]:
    """One comma part as (start, stop, step, count), no value made. A single value v is (v, v, 0, 1);
    a range a:b:step has floor((b - a) / step + 1e-9) + 1 values (math.inf where that overflows).
    ValueError: neither form, a non-finite number or a zero step; _DirectionError: a step pointing away from b."""
    part = part.strip()
    if ":" not in part:
        v = float(part)
        return v, v, 0.0, 1
    a, b, step = (float(x) for x in part.split(":"))   # not three fields: ValueError
    if not (math.isfinite(a) and math.isfinite(b) and math.isfinite(step)) or step == 0:
        raise ValueError
    if a == b:
        return a, b, step, 1
    if (b - a) * step < 0:
        raise _DirectionError
    q = (b - a) / step
    return a, b, step, (math.floor(q + _RANGE_EPS) + 1) if math.isfinite(q) else math.inf


def _last_value(a: float, b: float, step: float, n: int | float) -> float:
    """The last of the n values a, a + step, ...: b when it lies within the slack of b or past it."""
    if n == 1:
        return a
    last = a + (n - 1) * step if n != math.inf else b
    return b if abs(last - b) <= _RANGE_EPS * abs(step) or (last - b) * step > 0 else last


def parse_angles(text: str, name: str, limit: int = MAX_ANGLES) -> list[float]:
    """'-60,-30,0' -> [-60.0, -30.0, 0.0]. A part 'a:b:step' is the range a, a + step, ... up to b: b is
    included when the steps land on it (within 1e-9 of a step, so 0:1:0.1 ends at 1) and no value lies
    past it (-60:60:25 -> -60, -35, -10, 15, 40). A descending range (b < a) needs a negative step.
    Every value must lie in [-90, 90]. The angles are counted from the parts before any list is made:
    more than `limit` is refused (AngleCountError) in time linear in the text and constant memory."""
    flag = f"--{name}"
    count: int | float = 0
    for part in _parts(text):
        try:
            a, b, step, n = _parse_part(part)
        except _DirectionError:
            raise argparse.ArgumentTypeError(f"{flag} {shown_text(part.strip())}: the step of a range a:b:step must "
                                             "point from a to b (negative when b < a)") from None
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} expects comma-separated degrees like -30,0,30 or a range "
                                             f"like -60:60:30, got {shown_text(text)!r}") from None
        # a part's values run monotonically from a to its last value: checking both ends checks them all
        for v in (a, _last_value(a, b, step, n)):
            if not -90.0 <= v <= 90.0:     # also refuses nan
                raise argparse.ArgumentTypeError(f"{flag} values must lie in [-90, 90] degrees, got {v:g}")
        count += n
    if count > limit:
        raise AngleCountError(f"{flag} {shown_text(text)} would give {_count_text(count)} angles; "
                              f"at most {limit} per flag", count, limit)
    out: list[float] = []
    for part in _parts(text):
        a, b, step, n = _parse_part(part)
        out.extend(a + i * step for i in range(n - 1))
        out.append(_last_value(a, b, step, n))
    return out


def check_pose_count(yaw, pitch=None, roll=None, limit: int = MAX_POSES, names=("--yaw", "--pitch", "--roll"),
                     per: str = "per run") -> int:
    """The number of poses of the grid yaw x pitch x roll, from the lists' lengths (None: a flag the
    command lacks). Above `limit` it raises UsageError naming the flags, the counts and the cap."""
    sizes = [(flag, len(v)) for flag, v in zip(names, (yaw, pitch, roll)) if v is not None]
    n = math.prod(k for _, k in sizes)
    if n > limit:
        raise UsageError(f"{' x '.join(f for f, _ in sizes)}: {' x '.join(str(k) for _, k in sizes)} = {n} poses; "
                         f"at most {limit} {per}")
    return n


def angles_option(name: str):
    """An argparse `type` for the angle flag --name (see `parse_angles`)."""
    return lambda text: parse_angles(text, name)


def int_option(name: str, lo: int | None = None, hi: int | None = None):
    """An argparse `type` for the integer option --name within [lo, hi] (either end may be open):
    a bad value is a one-line usage error that names the option and the range."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--{name} expects an integer, got {text!r}") from None
        if lo is not None and hi is not None and not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"--{name} must be between {lo} and {hi}, got {v}")
        if lo is not None and v < lo:
            raise argparse.ArgumentTypeError(f"--{name} must be at least {lo}, got {v}")
        if hi is not None and v > hi:
            raise argparse.ArgumentTypeError(f"--{name} must be at most {hi}, got {v}")
        return v
    return parse


def float_option(name: str, lo: float, hi: float | None = None):
    """An argparse `type` for the finite number --name >= lo (and <= hi where given): a bad value
    (text, nan, inf, out of range) is a one-line usage error that names the option."""
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--{name} expects a number, got {text!r}") from None
        if not math.isfinite(v) or v < lo:
            raise argparse.ArgumentTypeError(f"--{name} must be a finite number >= {lo:g}, got {text}")
        if hi is not None and v > hi:
            raise argparse.ArgumentTypeError(f"--{name} must be at most {hi:g}, got {text}")
        return v
    return parse






size_option = int_option("size", 32, 1024)


class DefaultAngles(list):
    """The value of an angle flag that was left out (its default), so that a command can tell it
    from the same angles given (`rotate --pose-from` takes the angles left out from its reference)."""


def given_angles(args, names=("yaw", "pitch", "roll")) -> tuple[str, ...]:
    """The angle flags of parsed `args` that were given on the command line (not defaults)."""
    return tuple(n for n in names if not isinstance(getattr(args, n, None), DefaultAngles))


def add_pose_arguments(p: argparse.ArgumentParser, yaw_default: list[float] | None = None, roll: bool = True) -> None:
    """--yaw (required when `yaw_default` is None), --pitch and --roll: absolute head poses.
    Defaults are `DefaultAngles`, so `given_angles` tells which flags were given."""
    yaw_help = "absolute yaw angles in degrees, + turns the nose to the image's right"
    if yaw_default is None:
        p.add_argument("--yaw", type=angles_option("yaw"), required=True, help=f"{yaw_help}: {ANGLES_HELP}")
    else:
        shown = ",".join(f"{v:g}" for v in yaw_default)
        p.add_argument("--yaw", type=angles_option("yaw"), default=DefaultAngles(yaw_default),
                       help=f"{yaw_help} (default {shown}): {ANGLES_HELP}")
    p.add_argument("--pitch", type=angles_option("pitch"), default=DefaultAngles([0.0]),
                   help="absolute pitch angles, + nose up (default 0; same forms as --yaw)")
    if roll:
        p.add_argument("--roll", type=angles_option("roll"), default=DefaultAngles([0.0]),
                       help="absolute roll angles (default 0; same forms as --yaw)")


def add_method_arguments(p: argparse.ArgumentParser) -> None:
    """--method and the weights files of the methods that have weights."""
    p.add_argument("--method", choices=list(METHODS), default=DEFAULT_METHOD,
                   help="; ".join(f"{n}: {w}" for n, w in METHODS.items()) + f" (default {DEFAULT_METHOD})")
    add_weights_arguments(p)


def add_weights_arguments(p: argparse.ArgumentParser) -> None:
    """--refiner and --capg: the weights files of the methods that have weights."""
    p.add_argument("--refiner", default=None, metavar="FILE",
                   help="refiner weights for the hybrid method (default $FACESYNTH_REFINER or the shipped "
                        "assets/refiner/refiner.pt)")
    p.add_argument("--capg", default=None, metavar="FILE",
                   help="CAPG-GAN weights for the gan method (default $FACESYNTH_CAPG or the shipped "
                        "assets/capg/capg.pt)")


def add_fit_arguments(p: argparse.ArgumentParser) -> None:
    """--model and --dense / --no-dense: what is fitted and how."""
    p.add_argument("--model", default=None, metavar="DIR",
                   help="morphable model folder (ICT FaceKit or Surrey SFM); default $FACESYNTH_MODEL or "
                        "../shared/data/3dmm/ict_facekit")
    p.add_argument("--dense", dest="dense", action="store_true", default=True,
                   help="fit with the dense photometric term after the landmarks (default)")
    p.add_argument("--no-dense", dest="dense", action="store_false",
                   help="fit landmarks only: faster fitting, slightly less accurate depth")


#: --background: what surrounds the head in a view; "photo" (the default) turns the whole photo with it
BACKGROUNDS = {"photo": "the whole photo: hair, shoulders and background turn with the head",
               "plain": "the head alone over plain grey"}
DEFAULT_BACKGROUND = "photo"


def add_background_argument(p: argparse.ArgumentParser) -> None:
    """--background photo|plain, the same for every command that renders views."""
    p.add_argument("--background", choices=list(BACKGROUNDS), default=DEFAULT_BACKGROUND,
                   help="; ".join(f"{k}: {v}" for k, v in BACKGROUNDS.items())
                        + f" (default {DEFAULT_BACKGROUND}; the gan method paints its own and ignores it)")


#: --detector: which of dlib's face detectors finds the faces (`face3d.landmarks.DETECTORS`, which
#: this module does not import: it loads numpy, which the parser must not pay for)
DETECTORS = {"auto": "the HOG detector, then dlib's CNN detector where HOG finds no face (profiles; the CNN "
                     "costs about 1-1.5 s per such photo on a CPU core)",
             "hog": "the HOG detector alone (fast; misses faces turned beyond about 60 degrees)",
             "cnn": "dlib's CNN detector alone (finds faces to a full profile; slow)"}
DEFAULT_DETECTOR = "auto"


def add_detector_argument(p: argparse.ArgumentParser) -> None:
    """--detector auto|hog|cnn, the same for every command that detects faces in photos."""
    p.add_argument("--detector", choices=list(DETECTORS), default=DEFAULT_DETECTOR,
                   help="face detector: " + "; ".join(f"{k}: {v}" for k, v in DETECTORS.items())
                        + f" (default {DEFAULT_DETECTOR})")


def maps_option(text: str) -> tuple[str, ...]:
    # deferred: face3d.view_maps imports torch, which the parser must not load (module docstring)
    from face3d.view_maps import parse_maps

    try:
        return parse_maps(text)
    except FaceSynthError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_label_arguments(p: argparse.ArgumentParser) -> None:
    """--align crop|arcface, --maps and --no-labels: how views are cropped and what comes with them."""
    g = p.add_argument_group("labels and crops")
    g.add_argument("--align", choices=list(ALIGNMENTS), default="crop",
                   help="crop: the face-centred crop of --size px (default); arcface: ArcFace/InsightFace's 112x112 "
                        "five-point similarity crop (rendered at max(--size, 192) px, then aligned); labels follow the crop")
    g.add_argument("--maps", type=maps_option, default=(), metavar="NAME[,NAME...]",
                   help="also write per-view maps: depth (16-bit PNG, 0.1 mm), normals (16-bit RGB PNG, camera frame), "
                        "mask (8-bit PNG)")
    g.add_argument("--no-labels", dest="labels", action="store_false", default=True,
                   help="leave the labels (landmarks, visibility, five points, face box, coefficients, camera) out "
                        "of the manifest")


def device_option(text: str) -> str:
    if not valid_device_name(text):
        raise argparse.ArgumentTypeError(f"--device must be auto, cpu, cuda or cuda:N, got {text!r}")
    return text.strip().lower()


#: what --device moves, in the commands that fit and render views
DEVICE_STAGES = ("the torch stages (the dense fit, rasterizing and shading, the refiner, the identity network); "
                 "detection, landmarks, the landmark fit, the texture and the whole-photo background run on the CPU "
                 "either way")


def add_device_argument(p: argparse.ArgumentParser, runs: str = DEVICE_STAGES) -> None:
    """--device auto|cpu|cuda[:N], the same for every command that uses torch heavily (face3d.devices)."""
    p.add_argument("--device", type=device_option, default=DEFAULT_DEVICE, metavar="{auto,cpu,cuda[:N]}",
                   help="where it runs: auto: the first CUDA GPU torch sees, else the CPU (default); cpu; cuda or "
                        f"cuda:N (an error where torch sees none). It moves {runs}")


def add_threads_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int_option("threads", 1, 1024), default=None,
                   help="torch CPU threads (default: all cores)")


def seed_option(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seed expects an integer, got {text!r}") from None


def shard_option(text: str) -> tuple[int, int]:
    """`I/N` with 0 <= I < N <= 64: this process takes every N-th item from the I-th."""
    i, sep, n = text.partition("/")
    try:
        index, count = int(i), int(n)
    except ValueError:
        index, count = -1, 0
    if not sep or not 0 <= index < count <= 64:
        raise argparse.ArgumentTypeError(f"must be I/N with 0 <= I < N <= 64, got {text!r}")
    return index, count


def expression_list_option(text: str):
    # deferred: face3d.expressions imports torch, which the parser must not load (module docstring)
    from face3d.expressions import parse_expression_list

    try:
        return parse_expression_list(text)
    except FaceSynthError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def jitter_option(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shape-jitter expects a number of sigmas like 0.5, got {text!r}") from None
    if not (0.0 <= v <= 3.0):
        raise argparse.ArgumentTypeError(f"--shape-jitter must lie in [0, 3] sigma, got {v:g}")
    return v


def add_expression_arguments(p: argparse.ArgumentParser, seed: bool = True) -> None:
    """--expression, --shape-jitter, --jitter-samples and (unless the command defines its own) --seed."""
    g = p.add_argument_group("expression and shape")
    g.add_argument("--expression", type=expression_list_option, default=None, metavar="SPEC[,SPEC...]",
                   help="expression of the views: fitted (the photo's, default), neutral, smile, open-mouth, "
                        "surprise, frown, blink, pout, or blendshape coefficients like jawOpen=0.6,mouthSmile_L=0.5; "
                        "terms combine with '+' (smile+jawOpen=0.3); a comma list of specs makes a grid with the poses")
    g.add_argument("--shape-jitter", type=jitter_option, default=0.0, metavar="S",
                   help="draw identity shapes around the fit, perturbed by S sigma per coefficient (e.g. 0.5); "
                        "the photo texture is kept (default 0: the fitted shape)")
    g.add_argument("--jitter-samples", type=int_option("jitter-samples", 1, 100), default=1, metavar="N",
                   help="shapes drawn per face with --shape-jitter (default 1)")
    if seed:
        g.add_argument("--seed", type=seed_option, default=0, help="random seed of the shape draws (default 0)")


def add_reference_arguments(p: argparse.ArgumentParser) -> None:
    """--expression-from and --pose-from: a second photo's expression and head pose (face3d.reference_face)."""
    g = p.add_argument_group("reference photo")
    g.add_argument("--expression-from", default=None, metavar="PHOTO",
                   help="give the views the expression of the largest face in PHOTO (fitted on the re-split fit; "
                        "the views keep this photo's identity); adds to an --expression list")
    g.add_argument("--pose-from", default=None, metavar="PHOTO",
                   help="take the head pose of the largest face in PHOTO: the angles not given with --yaw, "
                        "--pitch, --roll come from it (e.g. --pose-from b.jpg --yaw -30,0,30 keeps b's pitch and roll)")


def add_sfs_arguments(p: argparse.ArgumentParser) -> None:
    """--sfs / --no-sfs and --relight: Shape from Shading and re-lighting (face3d.variants)."""
    p.add_argument("--sfs", dest="sfs", action="store_true", default=False,
                   help="refine the fitted shape from the photo's shading (Shape from Shading, ~1 s per face)")
    p.add_argument("--no-sfs", dest="sfs", action="store_false", help="keep the 3DMM geometry (default)")
    p.add_argument("--relight", choices=list(RELIGHT_MODES), default="keep",
                   help="keep the photo's lighting in the texture (default), or de-light it and light "
                        "each view from the front / from a random direction")


def check_batch_size(value: int) -> int:
    """`value` if it is a batch size in [1, MAX_BATCH_SIZE], else a one-line UsageError naming --batch-size."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BATCH_SIZE:
        raise UsageError(f"--batch-size must be between 1 and {MAX_BATCH_SIZE}, got {value!r}")
    return value
