"""Shared helpers of the benchmark scripts (not part of the installed package)."""
from __future__ import annotations

import json
import math
import os
import platform
import sys
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


def face_photos() -> list[Path]:
    from face3d.morphable_model import default_data_dir

    data = default_data_dir()
    return sorted((data / "faces").glob("*/*.jpg"))


def lfw_sample(seed: int, count: int) -> list[Path]:
    """The first photo of each of `count` LFW identities drawn with `random.Random(seed)`: a
    development set for choices that must not be tuned on the test photos of ../shared/data/faces."""
    import random

    lfw = lfw_dir()
    ids = sorted(p.name for p in lfw.iterdir())
    return [sorted((lfw / i).iterdir())[0] for i in random.Random(seed).sample(ids, min(len(ids), count))]


def lfw_dir() -> Path:
    from face3d.morphable_model import default_data_dir

    return default_data_dir() / "lfw" / "images"


def reconstructed_photos(model, photos):
    """(photo, image, reconstruction of its largest face) for each of `photos` that the default
    settings reconstruct, lazily; photos that fail (unreadable, no face) are left out."""
    from face3d import load_image, reconstruct_faces
    from face3d.errors import FaceSynthError

    for ph in photos:
        try:
            img = load_image(ph)
            rec = reconstruct_faces(img, model)[0]
        except FaceSynthError:
            continue
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
