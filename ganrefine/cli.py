"""The `facesynth` command line.

    facesynth rotate IMAGE [IMAGE...] --yaw -60,-30,0,30,60 [--pitch 0] [--size 128] [--method hybrid|3d] --out DIR

Exit codes: 0 every input succeeded, 1 some input failed (each failure is one manifest line with
`source` and `error`), 2 bad usage. User errors print one line, never a traceback.
"""
from __future__ import annotations

import argparse
import math
import sys

from face3d.errors import FaceSynthError


class UsageError(FaceSynthError):
    """Bad usage found once the flags are parsed (too many poses): the parser reports it as a usage
    error (exit 2); a program that calls a command's functions directly gets it as a FaceSynthError."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad usage as one line and exit code 2 (its default) without the usage dump noise."""

    def error(self, message):
        # "argument --yaw: --yaw -90:90:1e-07 would give ..." -> "--yaw -90:90:1e-07 would give ..."
        head, _, rest = message.partition(": ")
        if head.startswith("argument ") and rest.startswith(head[len("argument "):] + " "):
            message = rest
        self.exit(2, f"facesynth: error: {message}\n")

    def parse_known_args(self, args=None, namespace=None):
        # The pose grid (yaw x pitch x roll) is checked here, once all three flags are known and
        # before the command does any work; each flag alone was capped while it was parsed.
        ns, extra = super().parse_known_args(args, namespace)
        if isinstance(getattr(ns, "yaw", None), list):
            try:
                check_pose_count(ns.yaw, getattr(ns, "pitch", None), getattr(ns, "roll", None))
            except UsageError as exc:
                self.error(str(exc))
        return ns, extra


#: Angles one --yaw / --pitch / --roll may give at most (361: every half degree of [-90, 90]).
MAX_ANGLES = 361
#: Poses (yaw x pitch x roll) one rotate / augment / compare run may ask for at most.
MAX_POSES = 1000
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


def _angles(name):
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


def float_option(name: str, lo: float):
    """An argparse `type` for the finite number --name >= lo: a bad value (text, nan, inf, below lo)
    is a one-line usage error that names the option."""
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--{name} expects a number, got {text!r}") from None
        if not math.isfinite(v) or v < lo:
            raise argparse.ArgumentTypeError(f"--{name} must be a finite number >= {lo:g}, got {text}")
        return v
    return parse


_size = int_option("size", 32, 1024)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="facesynth", description="Turn one face photo into views of the same person at other head poses.")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    sub.required = True

    r = sub.add_parser("rotate", help="render each face of each photo at the given head poses")
    r.add_argument("images", nargs="+", metavar="IMAGE")
    r.add_argument("--yaw", type=_angles("yaw"), default=[-60.0, -30.0, 0.0, 30.0, 60.0],
                   help="absolute yaw angles in degrees, + turns the nose to the image's right (default -60,-30,0,30,60): "
                        + ANGLES_HELP)
    r.add_argument("--pitch", type=_angles("pitch"), default=[0.0],
                   help="absolute pitch angles, + nose up (default 0; same forms as --yaw)")
    r.add_argument("--roll", type=_angles("roll"), default=[0.0], help="absolute roll angles (default 0; same forms as --yaw)")
    r.add_argument("--size", type=_size, default=128, help="output crop size in pixels (default 128)")
    r.add_argument("--method", choices=["hybrid", "3d", "gan"], default="hybrid",
                   help="hybrid: the 3D stage's views refined by the trained refiner (default); 3d: the renders alone; "
                        "gan: the GAN-only baseline (CAPG-GAN: photo + target-pose landmarks, no 3D rendering)")
    r.add_argument("--refiner", default=None, metavar="FILE",
                   help="refiner weights for --method hybrid (default $FACESYNTH_REFINER or the shipped assets/refiner/refiner.pt)")
    r.add_argument("--capg", default=None, metavar="FILE",
                   help="CAPG-GAN weights for --method gan (default $FACESYNTH_CAPG or the shipped assets/capg/capg.pt)")
    r.add_argument("--out", required=True, metavar="DIR", help="output folder (PNG views + manifest.jsonl)")
    r.add_argument("--model", default=None, metavar="DIR",
                   help="morphable model folder (ICT FaceKit or Surrey SFM); default $FACESYNTH_MODEL or ../shared/data/3dmm/ict_facekit")
    r.add_argument("--all-faces", action="store_true", help="process every detected face, not only the largest")
    r.add_argument("--background", choices=["plain", "photo"], default="plain",
                   help="plain grey background (default) or the photo's own background warped around the head")
    r.add_argument("--export-mesh", choices=["obj", "ply", "glb"], default=None,
                   help="also write the fitted textured mesh in this format")
    r.add_argument("--dense", dest="dense", action="store_true", default=True,
                   help="fit with the dense photometric term after the landmarks (default)")
    r.add_argument("--no-dense", dest="dense", action="store_false",
                   help="fit landmarks only: ~5x faster fitting, slightly less accurate depth")
    r.add_argument("--save-fit", action="store_true", help="also write each FaceFit (.npz + .json)")
    r.add_argument("--threads", type=int_option("threads", 1, 1024), default=None, help="torch CPU threads (default: all cores)")
    r.add_argument("--resume", action="store_true",
                   help="continue a stopped run into the same --out with the same flags: photos whose views are all "
                        "on disk and in the manifest are skipped, the others (failed or cut off) are done again")
    from ganrefine.expression_options import add_expression_arguments

    add_expression_arguments(r)
    from ganrefine.sfs_options import add_sfs_arguments

    add_sfs_arguments(r)
    r.set_defaults(func=_run_rotate)

    # Other subcommands register themselves from their own modules.
    import importlib

    for module, hook in (("ganrefine.verify", "add_verify_parser"), ("ganrefine.augment", "add_augment_parser"),
                         ("ganrefine.pairs_cli", "add_make_pairs_parser"),
                         ("ganrefine.pose_pairs", "add_make_pose_photos_parser"),
                         ("ganrefine.train_refiner", "add_train_refiner_parser"),
                         ("ganrefine.soup", "add_soup_refiners_parser"),
                         ("ganrefine.train_capg", "add_train_capg_parser"),
                         ("ganrefine.serve", "add_serve_parser"),
                         ("ganrefine.compare", "add_compare_parser")):
        try:
            register = getattr(importlib.import_module(module), hook)
        except (ImportError, AttributeError):
            continue
        register(sub)
    return p


def _run_rotate(args) -> int:
    from ganrefine.rotate import run_rotate

    return run_rotate(args)


_ANGLE_FLAGS = ("--yaw", "--pitch", "--roll")


def _join_negative_values(argv: list[str]) -> list[str]:
    """`--yaw -60,-30` -> `--yaw=-60,-30`: argparse would read '-60,-30' as an option."""
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a in _ANGLE_FLAGS and i + 1 < len(argv) and argv[i + 1][:1] == "-" and argv[i + 1][1:2].isdigit():
            out.append(f"{a}={argv[i + 1]}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def _os_error_text(exc: OSError) -> str:
    """`PATH: reason` for an OSError that names a file (`reason` alone otherwise), on one line."""
    if exc.strerror:
        names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
        return f"{' -> '.join(names)}: {exc.strerror}" if names else exc.strerror
    return _first_line(exc)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    helper = None
    if argv[:1] == ["rotate"]:
        # before the parser's imports pull in torch: dlib loads and detects in a second process meanwhile
        from face3d.detection_helper import start_detection_helper

        helper = start_detection_helper()
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(_join_negative_values(argv))
        except SystemExit as exc:  # usage errors (2) and --help (0) return their code instead of exiting
            return int(exc.code or 0)
        if helper is not None:
            args.detection_helper = helper
        try:
            return int(args.func(args))
        except FaceSynthError as exc:
            print(f"facesynth: error: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("facesynth: interrupted", file=sys.stderr)
            return 130
    # the last line of defence: parsing or a command that lets these out still ends with one line
    except MemoryError as exc:
        detail = f" ({_first_line(exc)})" if str(exc) else ""
        print(f"facesynth: error: out of memory{detail}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"facesynth: error: {_os_error_text(exc)}", file=sys.stderr)
        return 1
    finally:
        if helper is not None:
            helper.close()


if __name__ == "__main__":
    sys.exit(main())
