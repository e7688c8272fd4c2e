"""`facesynth augment --expression-from DIR [--expression-sample N]`: the expressions of a folder of
reference photos put on every photo of a dataset (issue 29).

Real runs on 3 LFW photos of 2 identities with 2 reference photos, 64 px, 1-2 yaws and the
landmark-only fit (`--no-dense`); the photos are symlinked into tmp folders, never copied.
"""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from face3d.expressions import ExpressionSpec
from face3d.image_io import save_png
from face3d.reference_face import reference_sample
from facesynth.augment import read_manifest
from facesynth.cli import main
from facesynth.options import MAX_REFERENCES

LFW = Path("/work/shared/data/lfw/images")
FACES = Path("/work/shared/data/faces")
PHOTOS = ["Abdullah_Gul/Abdullah_Gul_0001.jpg", "Abdullah_Gul/Abdullah_Gul_0002.jpg", "AJ_Cook/AJ_Cook_0001.jpg"]
#: reference stem -> photo: an open-mouthed face and a closed-mouthed one
REFERENCES = {"jack61": FACES / "deepface_jack" / "deepface_img61.jpg",
              "obama": FACES / "obama" / "face_recognition_obama.jpg"}
FLAGS = ["--size", "64", "--no-dense", "--no-progress"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def assert_one_line_error(err: str, *words: str):
    lines = [l for l in err.splitlines() if l.strip()]
    errors = [l for l in lines if l.startswith("facesynth: error:")]
    assert "Traceback" not in err
    assert len(errors) == 1 and all(l.startswith("facesynth") for l in lines), lines
    assert all(w in errors[0] for w in words), (words, errors[0])


def link(dst: Path, src: Path) -> Path:
    if not src.is_file():
        pytest.fail(f"{src} is missing: the tests read ../shared/data where it lies")
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.symlink_to(src)
    return dst


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """(INPUT in identity layout, the reference folder), both of symlinks."""
    root = tmp_path_factory.mktemp("augref")
    for rel in PHOTOS:
        link(root / "input" / rel, LFW / rel)
    for stem, src in REFERENCES.items():
        link(root / "refs" / f"{stem}.jpg", src)
    return root / "input", root / "refs"


@pytest.fixture(scope="module")
def cross(data, tmp_path_factory):
    """Every photo x every reference x 2 yaws: (OUTPUT, stdout)."""
    inp, refs = data
    out = tmp_path_factory.mktemp("augref") / "out"
    code = main(["augment", str(inp), str(out), "--yaw", "0,30", "--expression-from", str(refs), *FLAGS])
    assert code == 0
    return out


def ok_rows(out: Path) -> list[dict]:
    return [r for r in read_manifest(out) if r["status"] == "ok"]


# ---------------------------------------------------------------------------------------------
# fast: the draw and the flags


def test_reference_sample_depends_on_seed_and_key_only():
    a = reference_sample(10, 3, seed=7, key="Al_Gore/Al_Gore_0001")
    assert a == reference_sample(10, 3, seed=7, key="Al_Gore/Al_Gore_0001")
    assert a == sorted(set(a)) and len(a) == 3 and all(0 <= i < 10 for i in a)
    draws = {tuple(reference_sample(10, 3, seed=7, key=f"p{k}")) for k in range(20)}
    assert len(draws) > 5                                             # photos draw differently
    assert reference_sample(4, 4, 0, "x") == [0, 1, 2, 3] and reference_sample(4, 0, 0, "x") == []


def test_flag_errors_before_any_work(data, tmp_path, capsys):
    inp, refs = data
    out = tmp_path / "out"
    code, _, err = run(capsys, "augment", inp, out, "--yaw", "0", "--expression-sample", "1", *FLAGS)
    assert code == 2 and "needs --expression-from" in err
    code, _, err = run(capsys, "augment", inp, out, "--yaw", "0", "--expression-from", refs,
                       "--expression-sample", "3", *FLAGS)
    assert code == 1
    assert_one_line_error(err, "--expression-sample 3", "only 2 reference")
    code, _, err = run(capsys, "augment", inp, out, "--yaw", "0", "--expression-from", tmp_path / "none", *FLAGS)
    assert code == 1
    assert_one_line_error(err, "--expression-from", "no such folder")
    code, _, err = run(capsys, "augment", inp, out, "--yaw", "0", "--method", "gan", "--expression-from", refs, *FLAGS)
    assert code == 1
    assert_one_line_error(err, "--expression-from", "not available with --method gan")
    # two references whose file-name tags collide would write over each other's views
    twins = tmp_path / "twins"
    link(twins / "a.jpg", REFERENCES["obama"])
    link(twins / "a.png", REFERENCES["obama"])
    code, _, err = run(capsys, "augment", inp, out, "--yaw", "0", "--expression-from", twins, *FLAGS)
    assert code == 1
    assert_one_line_error(err, "a.jpg and a.png", "from-a")
    # the cap on references and on views are checked before a reference is read (these are empty files)
    many = tmp_path / "many"
    many.mkdir()
    for i in range(MAX_REFERENCES + 1):
        (many / f"r{i:04d}.jpg").write_bytes(b"")
    code, _, err = run(capsys, "augment", inp, out, "--yaw", "0", "--expression-from", many, *FLAGS)
    assert code == 1
    assert_one_line_error(err, "--expression-from", f"more than {MAX_REFERENCES} reference photos")
    code, _, err = run(capsys, "augment", inp, out, "--yaw", "-90:90:2", "--pitch", "-45:45:10",
                       "--expression", "neutral,smile,open-mouth,surprise,frown,blink,pout,fitted,jawOpen=0.5",
                       "--expression-from", refs, *FLAGS)
    assert code == 1
    assert_one_line_error(err, "(9 expression(s) + 2 reference(s)) x 910 pose(s) = 10010 views per photo")
    assert not out.exists()


def test_workers_get_the_fitted_coefficients_not_the_photo(data, tmp_path):
    """A worker renders a reference from the coefficients it is sent (plain, picklable data): the
    reference photo itself is never read there (here it does not exist)."""
    from face3d.camera import Pose
    from face3d.morphable_model import resolve_model_dir
    from facesynth.api import RenderOptions
    from facesynth.augment import WorkerConfig, list_sources, process_source

    inp, _ = data
    gone = str(tmp_path / "gone" / "wide-open.jpg")
    spec = ExpressionSpec(f"from:{gone}", raw=(("jawOpen", 0.7),), reference=gone)
    cfg = WorkerConfig(str(resolve_model_dir(None)), (Pose(0.0, 0.0, 0.0),),
                       RenderOptions(method="3d", size=64, dense=False), references=(spec,))
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    item = list_sources(inp)[0]
    res = process_source(item, cfg)
    assert [r["status"] for r in res.rows] == ["ok"], res.rows
    row = res.rows[0]
    assert row["expression"] == "from-wide-open" and row["expression_from"] == gone
    assert row["output"].endswith("_expr-from-wide-open_yaw0_pitch0.png") and row["output"] in res.images


# ---------------------------------------------------------------------------------------------
# end to end on real photos


@pytest.mark.slow
def test_cross_product_rows_columns_and_names(cross, data):
    inp, refs = data
    rows = ok_rows(cross)
    assert len(rows) == len(read_manifest(cross)) == len(PHOTOS) * len(REFERENCES) * 2
    for src in PHOTOS:
        mine = [r for r in rows if r["source"] == src]
        assert len(mine) == len(REFERENCES) * 2                       # refs x poses
        assert {(r["expression"], r["yaw"]) for r in mine} == {(f"from-{s}", y) for s in REFERENCES for y in (0, 30)}
    for r in rows:
        stem = r["expression"][len("from-"):]
        assert r["expression_from"] == str(refs / f"{stem}.jpg")
        assert f"_expr-from-{stem}_yaw" in r["output"] and (cross / r["output"]).is_file()
        assert r["expression_split"] is True
    settings = json.loads((cross / "augment.json").read_text())
    assert settings["expression_from"] == os.path.abspath(refs)
    assert settings["expression_from_photos"] == ["jack61.jpg", "obama.jpg"]
    assert set(settings["expression_from_weights"]) == {"jack61.jpg", "obama.jpg"}
    assert all(len(w) > 5 for w in settings["expression_from_weights"].values())
    # the two references give two different pictures of the same photo and pose
    a, b = (np.asarray(Image.open(cross / f"Abdullah_Gul/Abdullah_Gul_0001_expr-from-{s}_yaw0_pitch0.png"))
            for s in REFERENCES)
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 0.5


@pytest.mark.slow
def test_sample_is_per_photo_and_seeded(data, tmp_path, capsys):
    """--expression-sample 1 with --expression fitted: two views per photo, the plain one and one
    reference's, the reference the same whatever the order of the photos (two list files)."""
    inp, refs = data
    lists = {}
    for name, order in (("fwd", PHOTOS), ("rev", PHOTOS[::-1])):
        lists[name] = tmp_path / f"{name}.csv"
        lists[name].write_text("path,identity\n" + "".join(f"{inp / p},{p.split('/')[0]}\n" for p in order))
    picks = {}
    for name, listfile in lists.items():
        out = tmp_path / f"out_{name}"
        code, stdout, err = run(capsys, "augment", listfile, out, "--yaw", "0", "--expression", "fitted",
                                "--expression-from", refs, "--expression-sample", "1", "--seed", "7", *FLAGS)
        assert code == 0, err
        assert "2 per source ((1 expression(s) + 1 reference(s) drawn of 2) x 1 pose(s))" in stdout
        rows = ok_rows(out)
        assert len(rows) == 2 * len(PHOTOS)
        picks[name] = {}
        for src in PHOTOS:
            mine = {r["expression"]: r for r in rows if r["identity"] == src.split("/")[0]
                    and Path(r["source"]).name == Path(src).name}
            assert len(mine) == 2 and "fitted" in mine and mine["fitted"]["expression_from"] is None
            (label,) = [k for k in mine if k != "fitted"]
            picks[name][src] = label
            stem = Path(src).with_suffix("").as_posix()
            want = sorted(REFERENCES)[reference_sample(2, 1, 7, f"{src.split('/')[0]}/{stem}")[0]]
            assert label == f"from-{want}"
            plain = np.asarray(Image.open(out / mine["fitted"]["output"])).astype(int)
            ref = np.asarray(Image.open(out / mine[label]["output"])).astype(int)
            assert np.abs(plain - ref).mean() > 0.5                   # the reference's expression shows
    assert picks["fwd"] == picks["rev"]
    assert len(set(picks["fwd"].values())) == 2                       # seed 7: the photos do not all draw alike


@pytest.mark.slow
@pytest.mark.parametrize("bad", ["text", "no_face"])
def test_bad_reference_fails_the_run_and_writes_nothing(data, tmp_path, capsys, bad):
    inp, _ = data
    refs = tmp_path / "refs"
    link(refs / "a_good.jpg", REFERENCES["obama"])                   # fitted first: still nothing is written
    if bad == "text":
        (refs / "x.jpg").write_text("not a photo\n")
        why = "not a readable image"
    else:
        save_png(refs / "x.png", np.full((96, 96, 3), 128, np.uint8))
        why = "no face"
    out = tmp_path / "out"
    code, _, err = run(capsys, "augment", inp, out, "--yaw", "0", "--expression-from", refs, *FLAGS)
    assert code == 1
    assert_one_line_error(err, "--expression-from", str(refs / ("x.jpg" if bad == "text" else "x.png")), why)
    assert not out.exists()


@pytest.mark.slow
def test_rerun_with_other_references_refused(cross, data, tmp_path, capsys):
    inp, refs = data
    before = (cross / "manifest.jsonl").read_bytes()
    code, stdout, err = run(capsys, "augment", inp, cross, "--yaw", "0,30", "--expression-from", refs, *FLAGS)
    assert code == 0 and f"{len(PHOTOS)} already done" in stdout, err       # same folder: resumed, nothing redone
    other = tmp_path / "other"
    link(other / "jack61.jpg", REFERENCES["jack61"])
    code, _, err = run(capsys, "augment", inp, cross, "--yaw", "0,30", "--expression-from", other, *FLAGS)
    assert code == 1
    assert_one_line_error(err, "other settings", "expression_from")
    code, _, err = run(capsys, "augment", inp, cross, "--yaw", "0,30", *FLAGS)   # the references left out
    assert code == 1
    assert_one_line_error(err, "other settings", "expression_from")
    assert (cross / "manifest.jsonl").read_bytes() == before


@pytest.mark.slow
def test_rerun_with_changed_reference_folder_refused(data, tmp_path, capsys):
    """The same folder with a photo replaced (other coefficients) or added is another run."""
    inp, _ = data
    refs = tmp_path / "refs"
    for stem, src in REFERENCES.items():
        link(refs / f"{stem}.jpg", src)
    out = tmp_path / "out"
    argv = ["augment", inp, out, "--yaw", "0", "--limit", "1", "--expression-from", refs, *FLAGS]
    code, _, err = run(capsys, *argv)
    assert code == 0, err
    before = (out / "manifest.jsonl").read_bytes()
    (refs / "obama.jpg").unlink()
    link(refs / "obama.jpg", FACES / "biden" / "face_recognition_biden.jpg")
    code, _, err = run(capsys, *argv)
    assert code == 1
    assert_one_line_error(err, "other settings", "expression_from_weights")
    link(refs / "zz.jpg", REFERENCES["obama"])
    code, _, err = run(capsys, *argv)
    assert code == 1
    assert_one_line_error(err, "other settings", "expression_from_photos")
    assert (out / "manifest.jsonl").read_bytes() == before
