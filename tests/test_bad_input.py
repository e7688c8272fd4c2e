"""Bad input as a user meets it: each case is one `facesynth` command, the exit code it must end
with and what its one line must say. The README's bad-input table is made from these cases:

    .venv/bin/python tests/test_bad_input.py --write-readme

and `test_readme_table_is_current` fails when the README's table differs from what the commands
print now, so the table cannot drift from the code.
"""
from __future__ import annotations

import contextlib
import io
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from face3d.morphable_model import default_data_dir
from facesynth.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
START, END = "<!-- bad-input-table:start -->", "<!-- bad-input-table:end -->"
FAST = ["--yaw", "0", "--size", "64", "--no-dense", "--method", "3d", "--threads", "1"]


class WritesMarker:
    """A pickle payload: unpickling it would create the file `marker`."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@dataclass(frozen=True)
class Case:
    given: str                          # what the user gives, as the README shows it
    argv: Callable[[Path, Path], list]  # (scratch folder, data folder) -> command line
    code: int                           # expected exit code
    says: str                           # expected part of the line printed


def _photo(data: Path) -> Path:
    return data / "faces" / "obama" / "face_recognition_obama.jpg"


def _variant(d: Path, data: Path, name: str, convert: Callable[[Image.Image], Image.Image]) -> Path:
    im = Image.open(_photo(data)).convert("RGB")
    im.thumbnail((400, 400))
    path = d / name
    convert(im).save(path)
    return path


def _gray16(im: Image.Image) -> Image.Image:
    return Image.fromarray(np.asarray(im.convert("L")).astype(np.uint16) * 257)


def _rgba(im: Image.Image) -> Image.Image:
    out = im.convert("RGBA")
    out.putalpha(200)
    return out


def _file(d: Path, name: str, data: bytes) -> Path:
    (d / name).write_bytes(data)
    return d / name


def _truncated(d: Path, data: Path) -> Path:
    full = _photo(data).read_bytes()
    return _file(d, "truncated.jpg", full[: len(full) // 3])


def _no_face(d: Path) -> Path:
    Image.fromarray(np.full((300, 300, 3), 127, np.uint8)).save(d / "noface.png")
    return d / "noface.png"


def _huge(d: Path) -> Path:
    Image.new("1", (12000, 10000)).save(d / "huge.png")  # 120 megapixels, a few kB on disk
    return d / "huge.png"


def _evil_weights(d: Path) -> Path:
    path = d / "evil.pt"
    torch.save({"format": "facesynth-refiner-weights", "payload": WritesMarker(d / "PWNED")}, path)
    return path


def _used_folder(d: Path) -> Path:
    out = d / "used"
    out.mkdir()
    (out / "rotate.json").write_text("{}\n")
    (out / "manifest.jsonl").write_text("")
    return out


def _rotate(photo, out, *flags) -> list:
    return ["rotate", photo, *FAST, "--out", out, *flags]


CASES: dict[str, Case] = {
    "missing": Case("a path that does not exist", lambda d, data: _rotate(d / "nope.jpg", d / "o"), 1, "no such file"),
    "garbage": Case("a file that is not an image",
                    lambda d, data: _rotate(_file(d, "garbage.jpg", b"not an image" * 50), d / "o"), 1,
                    "not a readable image"),
    "truncated": Case("a truncated JPEG", lambda d, data: _rotate(_truncated(d, data), d / "o"), 1, "truncated"),
    "tiny": Case("an image of 10x8 pixels",
                 lambda d, data: _rotate(_variant(d, data, "tiny.png", lambda im: im.resize((10, 8))), d / "o"), 1,
                 "too small"),
    "huge": Case("an image of 120 megapixels", lambda d, data: _rotate(_huge(d), d / "o"), 1, "too large"),
    "noface": Case("a photo without a face", lambda d, data: _rotate(_no_face(d), d / "o"), 1, "no face"),
    "gray": Case("a grayscale photo", lambda d, data: _rotate(_variant(d, data, "gray.png", lambda im: im.convert("L")),
                                                               d / "o"), 0, "1 of 1 photo(s) done"),
    "gray16": Case("a 16-bit grayscale PNG", lambda d, data: _rotate(_variant(d, data, "gray16.png", _gray16), d / "o"),
                   0, "1 of 1 photo(s) done"),
    "rgba": Case("an RGBA PNG (alpha over white)", lambda d, data: _rotate(_variant(d, data, "rgba.png", _rgba), d / "o"),
                 0, "1 of 1 photo(s) done"),
    "two_faces": Case("a photo with two faces, no `--all-faces`",
                      lambda d, data: _rotate(data / "lfw" / "images" / "Adrien_Brody" / "Adrien_Brody_0002.jpg",
                                              d / "o"), 0, "2 faces found; took the largest"),
    "yaw_text": Case("`--yaw abc`", lambda d, data: ["rotate", _photo(data), "--yaw", "abc", "--out", d / "o"], 2, "--yaw"),
    "yaw_range": Case("`--yaw 0,200`", lambda d, data: ["rotate", _photo(data), "--yaw", "0,200", "--out", d / "o"], 2,
                      "[-90, 90]"),
    "yaw_count": Case("`--yaw=-90:90:1e-7` (10^9 views)",
                      lambda d, data: ["rotate", _photo(data), "--yaw=-90:90:1e-7", "--out", d / "o"], 2, "at most"),
    "size": Case("`--size 7`", lambda d, data: ["rotate", _photo(data), "--size", "7", "--out", d / "o"], 2, "--size"),
    "method": Case("`--method magic`", lambda d, data: ["rotate", _photo(data), "--method", "magic", "--out", d / "o"],
                   2, "--method"),
    "threads": Case("`--threads -3`", lambda d, data: ["rotate", _photo(data), "--threads", "-3", "--out", d / "o"], 2,
                    "--threads"),
    "device": Case("`--device gpu`", lambda d, data: ["rotate", _photo(data), "--device", "gpu", "--out", d / "o"], 2,
                   "--device"),
    "out_file": Case("`--out` naming a file", lambda d, data: _rotate(_photo(data), _file(d, "afile", b"x")), 1,
                     "not a folder"),
    "out_below_file": Case("`--out afile/sub`", lambda d, data: _rotate(_photo(data), _file(d, "afile", b"x") / "sub"),
                           1, "cannot create the folder"),
    "out_used": Case("`--out` holding another run, no `--resume`",
                     lambda d, data: _rotate(_photo(data), _used_folder(d)), 1, "pass --resume"),
    "model": Case("`--model` folder that does not exist",
                  lambda d, data: _rotate(_photo(data), d / "o", "--model", d / "nomodel"), 1, "nomodel"),
    "refiner_missing": Case("`--refiner` file that does not exist",
                            lambda d, data: _rotate(_photo(data), d / "o", "--method", "hybrid", "--refiner",
                                                    d / "none.pt"), 1, "not found"),
    "refiner_pickle": Case("`--refiner` file holding pickled code",
                           lambda d, data: _rotate(_photo(data), d / "o", "--method", "hybrid", "--refiner",
                                                   _evil_weights(d)), 1, "not a refiner weights file"),
    "refiner_unused": Case("`--refiner` with a method that uses no refiner (the default `3d`)",
                           lambda d, data: _rotate(_photo(data), d / "o", "--refiner", d / "none.pt"), 1,
                           "only --method hybrid uses these weights"),
    "ref_noface": Case("`--expression-from` a photo without a face",
                       lambda d, data: _rotate(_photo(data), d / "o", "--expression-from", _no_face(d)), 1,
                       "no face found in the reference photo"),
    "ref_missing": Case("`--pose-from` a path that does not exist",
                        lambda d, data: _rotate(_photo(data), d / "o", "--pose-from", d / "nope.jpg"), 1,
                        "--pose-from"),
    "ref_two_faces": Case("`--expression-from` a photo with two faces",
                          lambda d, data: _rotate(_photo(data), d / "o", "--expression-from",
                                                  data / "lfw" / "images" / "Adrien_Brody" / "Adrien_Brody_0002.jpg"),
                          0, "--expression-from takes the largest"),
    "maps": Case("`--maps depth,albedo`", lambda d, data: ["rotate", _photo(data), "--maps", "depth,albedo", "--out",
                                                        d / "o"], 2, "--maps"),
    "verify_noface": Case("`verify` with a photo without a face",
                          lambda d, data: ["verify", _photo(data), _no_face(d)], 1, "no face"),
    "augment_missing": Case("`augment` of a folder that does not exist",
                            lambda d, data: ["augment", d / "nothing", d / "aug", "--yaw", "0"], 1, "nothing"),
}


def run_case(case: Case, scratch: Path, data: Path) -> tuple[int, str, str]:
    """Run one case in-process: (exit code, the line it printed with the scratch folder cut out,
    everything it printed)."""
    scratch.mkdir(parents=True, exist_ok=True)
    argv = [str(a) for a in case.argv(scratch, data)]
    out, err = io.StringIO(), io.StringIO()
    # a warning would reach a user's terminal as two more lines: count it as printed
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(argv)
    for w in caught:
        err.write(warnings.formatwarning(w.message, w.category, w.filename, w.lineno))
    lines = [l for l in err.getvalue().splitlines() if l.startswith("facesynth")]
    lines += [l for l in out.getvalue().splitlines() if l.startswith("facesynth")]
    line = lines[0] if lines else ""
    for base in (str(scratch) + "/", str(data) + "/"):
        line = line.replace(base, "")
    return code, line, err.getvalue() + out.getvalue()


def run_all(root: Path, data: Path) -> dict[str, tuple[int, str, str]]:
    return {name: run_case(case, root / name, data) for name, case in CASES.items()}


def markdown_table(outcomes: dict[str, tuple[int, str, str]]) -> str:
    rows = ["| Input | Exit | What facesynth prints |", "| --- | --- | --- |"]
    for name, case in CASES.items():
        code, line, _ = outcomes[name]
        rows.append(f"| {case.given} | {code} | `{line.replace('|', '/')}` |")
    return "\n".join(rows)


def readme_table() -> str | None:
    text = README.read_text()
    if START not in text or END not in text:
        return None
    return text.split(START, 1)[1].split(END, 1)[0].strip()


def write_readme(table: str) -> None:
    text = README.read_text()
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    README.write_text(f"{head}{START}\n{table}\n{END}{tail}")


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, data_dir) -> dict[str, tuple[int, str, str]]:
    return run_all(tmp_path_factory.mktemp("bad_input"), data_dir)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_case(outcomes, name):
    code, line, printed = outcomes[name]
    case = CASES[name]
    assert "Traceback" not in printed, printed
    assert code == case.code, printed
    assert case.says in line, (line, printed)
    lines = [l for l in printed.splitlines() if l.strip() and "%|" not in l]  # progress bars aside
    assert lines and all(l.startswith("facesynth") for l in lines), printed


@pytest.mark.slow
def test_pickled_weights_never_ran(outcomes, tmp_path_factory):
    root = Path(str(tmp_path_factory.getbasetemp()))
    assert not list(root.rglob("PWNED"))


@pytest.mark.slow
def test_readme_table_is_current(outcomes):
    table = readme_table()
    assert table is not None, f"README.md lacks the {START} ... {END} markers"
    assert table == markdown_table(outcomes), "README's bad-input table is stale: run python tests/test_bad_input.py --write-readme"


if __name__ == "__main__":
    import tempfile

    if sys.argv[1:] != ["--write-readme"]:
        sys.exit("usage: python tests/test_bad_input.py --write-readme")
    with tempfile.TemporaryDirectory() as tmp:
        table = markdown_table(run_all(Path(tmp), default_data_dir()))
    write_readme(table)
    print(table)
