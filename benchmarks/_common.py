"""Shared helpers of the benchmark scripts (not part of the installed package)."""
from __future__ import annotations

import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def machine() -> dict:
    return {"python": sys.version.split()[0], "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "platform": platform.platform()}


def write_json(path: str | Path, payload: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine(), **payload}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=float))
    os.replace(tmp, path)
    print(f"wrote {path}")


#: the work of one `cpu_scaling` process: a pure-Python loop (the interpreter) and single-threaded
#: float32 matrix products (BLAS), each about a second here
_SCALING_WORK = """
import os, sys, time
os.environ["OMP_NUM_THREADS"] = os.environ["OPENBLAS_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
import numpy as np
a = np.random.default_rng(0).random((384, 384), dtype=np.float32)
t = time.perf_counter()
s = 0
for i in range(12_000_000):
    s += i
t1 = time.perf_counter()
for _ in range(900):
    b = a @ a
t2 = time.perf_counter()
print(t1 - t, t2 - t1)
"""


def cpu_scaling(processes: int = 2, rounds: int = 3) -> dict:
    """How much more work this machine does with `processes` busy processes than with one, now: the
    same fixed work (`_SCALING_WORK`, a Python loop and single-threaded matrix products) runs in one
    process, then in `processes` at once, `rounds` times alternated; the figure per kind of work is
    processes x (one process's median time) / (the median of the slowest concurrent process's
    time). It is `processes` where the cores are independent and less where they share a physical
    core or the host is busy; on this 2-core machine the Python loop's figure drifts between about
    1.3 and 2 from one minute to the next, which is why the scripts that time several workers
    record it beside their figures."""
    def run(n: int) -> list[list[float]]:
        procs = [subprocess.Popen([sys.executable, "-c", _SCALING_WORK], stdout=subprocess.PIPE, text=True)
                 for _ in range(n)]
        return [[float(v) for v in p.communicate()[0].split()] for p in procs]

    alone, together = [], []
    for _ in range(rounds):
        alone.append(run(1)[0])
        together.append(run(processes))
    out = {"processes": processes, "rounds": rounds}
    for k, name in enumerate(("python_loop", "matmul")):
        one = statistics.median(r[k] for r in alone)
        slowest = statistics.median(max(p[k] for p in r) for r in together)
        out[f"{name}_seconds_alone"] = round(one, 3)
        out[f"{name}_seconds_together"] = round(slowest, 3)
        out[f"{name}_scaling"] = round(processes * one / slowest, 3)
    return out


def face_photos() -> list[Path]:
    from face3d.morphable_model import default_data_dir

    data = default_data_dir()
    return sorted((data / "faces").glob("*/*.jpg"))


def lfw_sample(seed: int, count: int) -> list[Path]:
    """The first photo of each of `count` LFW identities drawn with `random.Random(seed)`: a
    development set for choices that must not be tuned on the test photos of ../shared/data/faces."""
    lfw = lfw_dir()
    ids = sorted(p.name for p in lfw.iterdir())
    return [sorted((lfw / i).iterdir())[0] for i in random.Random(seed).sample(ids, min(len(ids), count))]


def lfw_dir() -> Path:
    from face3d.morphable_model import default_data_dir

    return default_data_dir() / "lfw" / "images"


def source_csv(photos: list[Path], path: Path) -> Path:
    """`path`: a CSV list of `photos` (path, identity = the photo's folder), as `augment` reads it."""
    path.write_text("path,identity\n" + "".join(f"{p},{p.parent.name}\n" for p in photos))
    return path


def first_lfw_csv(n: int, folder: Path) -> Path:
    """The first `n` LFW images (sorted paths) as a source CSV in `folder`."""
    files = sorted(lfw_dir().glob("*/*.jpg"))[:n]
    if len(files) < n:
        raise SystemExit(f"only {len(files)} LFW images under {lfw_dir()}")
    return source_csv(files, folder / f"lfw_first_{n}.csv")


def heldout_lfw_people(skip: int = 0, lfw: Path | None = None) -> dict[str, list[Path]]:
    """The held-out LFW identities with at least two photos (`ganrefine.pose_pairs.split_pose_photos`,
    seed 0, 300 held out; up to 6 photos each), name -> sorted photos, sorted by name, the first
    `skip` names left out (101 in all; the first 50 chose the GAN's checkpoints)."""
    from ganrefine.pose_pairs import split_pose_photos

    by_id: dict[str, list[Path]] = {}
    for p in split_pose_photos(lfw or lfw_dir()).heldout:
        by_id.setdefault(p.parent.name, []).append(p)
    return {name: sorted(by_id[name]) for name in sorted(by_id)[skip:]}


#: Held-out identities that chose checkpoints: the refiner's validation pairs come from the first
#: 100 held-out identities by name, the GAN's from the first 50 multi-photo ones.
REFINER_VAL_IDENTITIES, GAN_VAL_IDENTITIES = 100, 50


def heldout_lfw_sample(count: int, seed: int = 0) -> list[Path]:
    """One photo (the first by name) of each of `count` people drawn with `random.Random(seed)` from
    the 300 held-out LFW identities (`ganrefine.pairs.split_identities`, seed 0) whose names sort
    after every identity that selected a checkpoint (the first `REFINER_VAL_IDENTITIES` held-out
    names and the first `GAN_VAL_IDENTITIES` multi-photo ones): people no generator trained on or
    was selected with (157 of them)."""
    from ganrefine.pairs import lfw_photos_by_identity, split_identities

    by_name = lfw_photos_by_identity(lfw_dir())
    _, held = split_identities(list(by_name))
    multi = list(heldout_lfw_people())
    last_used = max(held[:REFINER_VAL_IDENTITIES][-1], multi[:GAN_VAL_IDENTITIES][-1])
    free = [n for n in held if n > last_used]
    names = sorted(random.Random(seed).sample(free, min(count, len(free))))
    return [by_name[n][0] for n in names]


def add_heldout_compare_arguments(parser, yaws: str) -> None:
    """The flags of a benchmark that runs `compare` on bench_compare's held-out people
    (`heldout_compare_people`): photos per person, how many people, how many validation people to
    skip, how many real photos, which yaws (default `yaws`)."""
    parser.add_argument("--photos-per-identity", type=int, default=2)
    parser.add_argument("--identities", type=int, default=None, help="first N held-out people (default all 51)")
    parser.add_argument("--val-identities", type=int, default=50, help="the GAN's validation identities, skipped")
    parser.add_argument("--real-photos", type=int, default=400)
    parser.add_argument("--yaws", default=yaws, help=f"comma-separated yaws (default {yaws})")


def heldout_compare_people(args) -> dict[str, list[Path]]:
    """The held-out people of `add_heldout_compare_arguments`' flags: the first `args.identities`
    (all when None) after the `args.val_identities` that chose the GAN's checkpoints."""
    people = heldout_lfw_people(skip=args.val_identities)
    return dict(list(people.items())[: args.identities])


def identity_layout(folder: Path, people: dict[str, list[Path]], per_identity: int) -> Path:
    """`folder/<identity>/<photo>` symlinks to the first `per_identity` photos of each person: the
    layout `facesynth compare` reads. Returns `folder`."""
    for ident, photos in people.items():
        (folder / ident).mkdir(parents=True, exist_ok=True)
        for p in photos[:per_identity]:
            (folder / ident / p.name).symlink_to(p)
    return folder


def compile_bytecode() -> None:
    """Write the bytecode of the project's packages, as installing a package does, so that a fresh
    process reads it instead of compiling the modules it imports. Python writes it on first import
    unless PYTHONDONTWRITEBYTECODE is set (as on this sandbox); then every module edited since its
    bytecode was last written is compiled again by every process: with all of the packages' bytecode
    stale a fresh `rotate` to 9 poses took 3.06 s against 2.93 s (medians of 4, alternated)."""
    import compileall

    for package in ("face3d", "facesynth", "ganrefine"):
        compileall.compile_dir(ROOT / package, quiet=1)


def fresh_rotate(photo: Path, yaws, method: str, runs: int, extra: tuple[str, ...] = ()) -> dict:
    """`facesynth rotate PHOTO --yaw=... --method METHOD [extra]` as a fresh process, `runs` times:
    the median wall seconds (what a user waits for), the median in-process seconds per photo (the
    manifest's `seconds_per_photo`) and every run's wall time. The child runs this checkout's code
    (its root first on PYTHONPATH) through the entry point pyproject.toml declares, like the installed
    `facesynth` script (whose copy in a virtual environment may be stale), with the packages'
    bytecode written first (`compile_bytecode`), as an installed copy has it."""
    compile_bytecode()
    exe = [sys.executable, "-c", "from facesynth.cli import console_main; console_main()"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    yaw = ",".join(f"{y:g}" for y in yaws)
    walls, per_photo = [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            subprocess.run([*exe, "rotate", str(photo), f"--yaw={yaw}", "--method", method, *extra, "--out", tmp],
                           check=True, capture_output=True, env=env)
            walls.append(time.perf_counter() - t0)
            manifest = Path(tmp, "manifest.jsonl").read_text().splitlines()[0]
            per_photo.append(json.loads(manifest)["seconds_per_photo"])
    return {"cli_wall_seconds": statistics.median(walls), "seconds_per_photo": statistics.median(per_photo),
            "runs": walls}


def largest_face(image, model, source, skipped: list | None = None, **options):
    """The reconstruction of the largest face of `image` (`reconstruct_faces(image, model,
    source=source, **options)[0]`), or None where it fails (no face, ...): then, when `skipped` is a
    list, {"photo": source, "error": the error's first line} is appended to it."""
    from face3d import reconstruct_faces
    from face3d.errors import FaceSynthError

    try:
        return reconstruct_faces(image, model, source=str(source), **options)[0]
    except FaceSynthError as exc:
        if skipped is not None:
            skipped.append({"photo": str(source), "error": str(exc).splitlines()[0]})
        return None


def reconstructed_photos(model, photos):
    """(photo, image, reconstruction of its largest face) for each of `photos` that the default
    settings reconstruct, lazily; photos that fail (unreadable, no face) are left out."""
    from face3d import load_image
    from face3d.errors import FaceSynthError

    for ph in photos:
        try:
            img = load_image(ph)
        except FaceSynthError:
            continue
        rec = largest_face(img, model, ph)
        if rec is not None:
            yield ph, img, rec


def reconstructed_test_photos(model):
    """(photo, reconstruction of its largest face) for each photo of ../shared/data/faces that the
    default settings reconstruct; photos that fail (no face) are left out."""
    for ph, _, rec in reconstructed_photos(model, face_photos()):
        yield ph, rec


# ------------------------------------------------------------------------------------------
# targets


_OPS = {"<=": lambda a, b: a <= b, "<": lambda a, b: a < b, ">=": lambda a, b: a >= b,
        ">": lambda a, b: a > b, "==": lambda a, b: a == b}


def add_target_option(parser) -> None:
    """`--target NAME=VALUE` (repeatable): run with another target than the script's own, e.g. to see
    that a missed target fails the run. NAME is a check's name as printed."""
    parser.add_argument("--target", action="append", default=[], metavar="NAME=VALUE",
                        help="override the target of the check NAME (as printed) with VALUE")


def _number(text: str):
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    return float(text)


class Targets:
    """The targets of one benchmark run.

    `check(name, value, op, target)` compares a measured value with its target (`op` one of
    <=, <, >=, >, ==), prints one PASS/FAIL line and records it; a value that is None or NaN (not
    measured) fails. `finish(json_path, payload)` prints the summary, writes the payload with the
    checks under "target_checks" and returns the exit code: 0 when every target is met, 1 when any
    is missed. Scripts end with `sys.exit(main())`, `main` returning that code.
    """

    def __init__(self, overrides: dict[str, object] | None = None):
        self.overrides = dict(overrides or {})
        self.rows: list[dict] = []

    @classmethod
    def from_args(cls, args) -> "Targets":
        """Targets with the `--target NAME=VALUE` overrides of `add_target_option`."""
        overrides = {}
        for item in getattr(args, "target", None) or []:
            name, sep, value = item.partition("=")
            if not sep:
                raise SystemExit(f"--target {item!r}: expected NAME=VALUE")
            overrides[name.strip()] = _number(value)
        return cls(overrides)

    def check(self, name: str, value, op: str, target, unit: str = "", note: str = "") -> bool:
        if op not in _OPS:
            raise ValueError(f"unknown comparison {op!r}")
        target = self.overrides.get(name, target)
        if isinstance(value, (bool, np.bool_)):
            value = bool(value)
        elif value is not None:
            value = float(value)
        measured = value is not None and not (isinstance(value, float) and math.isnan(value))
        ok = bool(measured and _OPS[op](value, target))
        shown, shown_target = _fmt_pair(value if measured else None, target)
        print(f"  {'PASS' if ok else 'FAIL'}  {name}: {shown}{unit} (target {op} {shown_target}{unit})"
              + (f"  {note}" if note else ""), flush=True)
        self.rows.append({"name": name, "value": value if measured else None, "op": op, "target": target,
                          "unit": unit.strip(), "passed": ok, **({"note": note} if note else {})})
        return ok

    @property
    def failed(self) -> list[str]:
        return [r["name"] for r in self.rows if not r["passed"]]

    def summary(self) -> dict:
        return {"all_met": not self.failed, "failed": self.failed, "checks": self.rows}

    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def finish(self, json_path: str | Path, payload: dict, write=None) -> int:
        """Print the summary, write `payload` + "target_checks" to `json_path` (with `write`,
        default `write_json`) and return the exit code."""
        unknown = sorted(set(self.overrides) - {r["name"] for r in self.rows})
        if unknown:
            print(f"warning: --target for checks this run did not make: {', '.join(unknown)}", file=sys.stderr)
        (write or write_json)(json_path, {**payload, "target_checks": self.summary()})
        if self.failed:
            print(f"TARGETS MISSED ({len(self.failed)} of {len(self.rows)}): {', '.join(self.failed)}")
        else:
            print(f"all {len(self.rows)} targets met")
        return self.exit_code()


def _fmt_pair(value, target) -> tuple[str, str]:
    """Value and target as text, with 4 significant digits or as many more as it takes to show that
    two different numbers differ (0.9999987 against 0.99999)."""
    if value is None:
        return "not measured", str(target)
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (value, target))
    if not numbers:
        return str(value), str(target)
    for digits in (4, 6, 8, 10, 17):
        v, t = f"{value:.{digits}g}", f"{target:.{digits}g}"
        if v != t or value == target:
            return v, t
    return v, t
