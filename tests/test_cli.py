"""The `facesynth rotate` contract and its handling of bad input: one-line errors, exit codes, manifest."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facesynth.cli import main
from ganrefine.hybrid import load_hybrid_refiner


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def assert_one_line_error(err: str):
    lines = [l for l in err.splitlines() if l.strip() and "%|" not in l]
    assert "Traceback" not in err
    assert len(lines) >= 1
    assert all(l.startswith("facesynth") for l in lines), lines


@pytest.mark.slow
def test_rotate_writes_views_and_manifest(tmp_path, capsys, obama_path):
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "rotate", obama_path, "--yaw", "-30,0,30", "--pitch", "0,10", "--out", out, "--no-dense")
    assert code == 0, err
    rows = manifest(out)
    assert len(rows) == 6
    for r in rows:
        for key in ("source", "output", "yaw", "pitch", "roll", "method", "fit_landmark_error"):
            assert key in r
        assert r["source"] == str(obama_path)
        assert r["method"] == "3d"  # the default method: the 3D stage's render, no weights
        assert "refiner" not in r and "refiner_sha256" not in r
        assert 0 < r["fit_landmark_error"] < 0.05
        img = np.asarray(Image.open(out / r["output"]))
        assert img.shape == (128, 128, 3)
        assert img.std() > 10  # a real picture, not a flat fill
    assert sorted({(r["yaw"], r["pitch"]) for r in rows}) == [(-30, 0), (-30, 10), (0, 0), (0, 10), (30, 0), (30, 10)]
    assert str(out) in stdout


@pytest.mark.slow
def test_method_3d_is_the_plain_render_and_hybrid_refines_it(tmp_path, capsys, obama_path):
    import hashlib

    from ganrefine.hybrid import default_weights_path

    views = {}
    for method in ("3d", "hybrid"):
        out = tmp_path / method
        code, _, err = run(capsys, "rotate", obama_path, "--yaw", "-45,0", "--method", method, "--out", out, "--no-dense")
        assert code == 0, err
        rows = manifest(out)
        assert [r["method"] for r in rows] == [method] * 2
        views[method] = [np.asarray(Image.open(out / r["output"])).astype(np.float64) for r in rows]
        if method == "3d":
            assert "refiner" not in rows[0]
        else:
            assert rows[0]["refiner_sha256"] == hashlib.sha256(default_weights_path().read_bytes()).hexdigest()
    for plain, refined in zip(views["3d"], views["hybrid"]):
        diff = np.abs(plain - refined).mean()
        assert 0.5 < diff < 40  # the refiner changes the render, and does not repaint it
    # with --background photo the refined head is composited over the photo's own background
    out = tmp_path / "bg"
    code, _, err = run(capsys, "rotate", obama_path, "--yaw", "0", "--background", "photo", "--out", out, "--no-dense")
    assert code == 0, err
    img = np.asarray(Image.open(out / manifest(out)[0]["output"]))
    assert img.shape == (128, 128, 3) and img[:8, :8].std() > 0  # not the plain grey corner


def test_missing_refiner_weights_is_a_one_line_error(tmp_path, capsys, obama_path):
    code, _, err = run(capsys, "rotate", obama_path, "--method", "hybrid", "--refiner", tmp_path / "none.pt",
                       "--out", tmp_path / "o")
    assert code == 1
    assert_one_line_error(err)
    assert "refiner weights not found" in err
    assert not (tmp_path / "o").exists()     # the weights are loaded before the output folder is made
    # weights for a method the run does not use are refused, not silently ignored
    code, _, err = run(capsys, "rotate", obama_path, "--refiner", tmp_path / "none.pt", "--out", tmp_path / "o2")
    assert code == 1
    assert_one_line_error(err)
    assert "only --method hybrid uses these weights (the method is 3d)" in err
    assert not (tmp_path / "o2").exists()


@pytest.mark.slow
def test_size_256_and_mesh_export(tmp_path, capsys, obama_path):
    import trimesh

    out = tmp_path / "o"
    code, _, err = run(capsys, "rotate", obama_path, "--yaw", "20", "--size", "256", "--out", out,
                       "--export-mesh", "glb", "--no-dense", "--save-fit")
    assert code == 0, err
    (row,) = manifest(out)
    assert np.asarray(Image.open(out / row["output"])).shape == (256, 256, 3)
    mesh = trimesh.load(out / row["mesh"], force="mesh")
    assert len(mesh.faces) > 10000
    assert mesh.visual.uv is not None and mesh.visual.material.baseColorTexture is not None
    from face3d.fitting import FaceFit

    fit = FaceFit.load(out / "face_recognition_obama_fit")
    assert fit.landmark_error == pytest.approx(row["fit_landmark_error"], abs=1e-5)


def _write_variants(src: Path, d: Path) -> dict[str, Path]:
    """The bad-input zoo, made from one real photo."""
    im = Image.open(src).convert("RGB")
    im.thumbnail((640, 640))
    files = {}
    files["gray"] = d / "gray.png"
    im.convert("L").save(files["gray"])
    files["rgba"] = d / "rgba.png"
    rgba = im.convert("RGBA")
    rgba.putalpha(200)
    rgba.save(files["rgba"])
    files["png16"] = d / "gray16.png"
    arr16 = (np.asarray(im.convert("L")).astype(np.uint16) * 257)
    Image.fromarray(arr16).save(files["png16"])
    files["noface"] = d / "noface.png"
    Image.fromarray(np.full((300, 300, 3), 127, np.uint8)).save(files["noface"])
    files["garbage"] = d / "garbage.jpg"
    files["garbage"].write_bytes(b"this is not an image" * 50)
    files["truncated"] = d / "truncated.jpg"
    full = d / "full.jpg"
    im.save(full, quality=90)
    files["truncated"].write_bytes(full.read_bytes()[: full.stat().st_size // 3])
    files["tiny"] = d / "tiny.png"
    im.resize((10, 8)).save(files["tiny"])
    files["missing"] = d / "does_not_exist.jpg"
    return files


@pytest.mark.slow
def test_bad_inputs_are_recorded_and_the_batch_goes_on(tmp_path, capsys, obama_path):
    files = _write_variants(obama_path, tmp_path)
    out = tmp_path / "out"
    order = ["gray", "rgba", "png16", "noface", "garbage", "truncated", "tiny", "missing"]
    code, _, err = run(capsys, "rotate", *[files[k] for k in order], "--yaw", "0", "--out", out, "--no-dense")
    assert code == 1  # some inputs failed
    assert "Traceback" not in err
    rows = {Path(r["source"]).name: r for r in manifest(out)}
    for ok in ("gray", "rgba", "png16"):
        r = rows[files[ok].name]
        assert "error" not in r, r
        assert (out / r["output"]).is_file()
    reasons = {"noface": "no face", "garbage": "not a readable image", "truncated": "truncated",
               "tiny": "too small", "missing": "no such file"}
    for bad, reason in reasons.items():
        r = rows[files[bad].name]
        assert reason in r["error"], r
        assert "\n" not in r["error"]
        assert "output" not in r


def test_huge_image_is_refused(tmp_path, capsys):
    big = tmp_path / "huge.png"
    Image.new("1", (12000, 10000)).save(big)  # 120 megapixels, tiny on disk
    code, _, err = run(capsys, "rotate", big, "--yaw", "0", "--out", tmp_path / "o")
    assert code == 1
    assert "too large" in manifest(tmp_path / "o")[0]["error"]


@pytest.mark.parametrize("value", ["abc", "10,,20", "0,200", "nan"])
def test_bad_yaw_value_is_usage_error(tmp_path, capsys, obama_path, value):
    code, _, err = run(capsys, "rotate", obama_path, "--yaw", value, "--out", tmp_path / "o")
    assert code == 2
    assert "--yaw" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_bad_size_and_method_are_usage_errors(tmp_path, capsys, obama_path):
    assert run(capsys, "rotate", obama_path, "--size", "7", "--out", tmp_path)[0] == 2
    assert run(capsys, "rotate", obama_path, "--method", "magic", "--out", tmp_path)[0] == 2
    assert run(capsys, "rotate", obama_path)[0] == 2  # --out is required


def test_missing_model_is_one_line_error(tmp_path, capsys, obama_path):
    code, _, err = run(capsys, "rotate", obama_path, "--yaw", "0", "--out", tmp_path / "o", "--model", tmp_path / "nomodel")
    assert code == 1
    assert_one_line_error(err)
    assert str(tmp_path / "nomodel") in err


def test_corrupt_model_is_one_line_error(tmp_path, capsys, obama_path):
    d = tmp_path / "badict"
    d.mkdir()
    (d / "FaceXModel.tar.xz").write_bytes(b"\xfd7zXZ\x00\x00garbage" * 100)
    code, _, err = run(capsys, "rotate", obama_path, "--yaw", "0", "--out", tmp_path / "o", "--model", d)
    assert code == 1
    assert_one_line_error(err)
    assert "corrupt" in err and str(d) in err


def test_model_from_environment_variable(tmp_path, capsys, obama_path, monkeypatch):
    monkeypatch.setenv("FACESYNTH_MODEL", str(tmp_path / "elsewhere"))
    code, _, err = run(capsys, "rotate", obama_path, "--yaw", "0", "--out", tmp_path / "o")
    assert code == 1
    assert str(tmp_path / "elsewhere") in err


def test_unknown_cpu_visibility_mode_is_a_one_line_error(tmp_path, capsys, obama_path, monkeypatch):
    from face3d import rasterizer

    monkeypatch.setattr(rasterizer, "CPU_VISIBILITY", "fast")     # as FACESYNTH_CPU_VISIBILITY=fast sets it
    code, _, err = run(capsys, "rotate", obama_path, "--yaw", "0", "--out", tmp_path / "o", "--no-dense")
    assert code == 1
    assert_one_line_error(err)
    assert "FACESYNTH_CPU_VISIBILITY='fast'" in err
    assert "FACESYNTH_CPU_VISIBILITY" in manifest(tmp_path / "o")[0]["error"]


@pytest.mark.slow
def test_resume_skips_finished_photos_and_redoes_the_rest(tmp_path, capsys, obama_path, data_dir):
    """--resume after a run that was cut off: finished photos are kept as they are, a photo whose
    views are missing and a failed one are done again, the manifest holds each view once; other
    flags, or a folder rotate did not make, are one-line errors."""
    import os

    biden = data_dir / "faces" / "biden" / "face_recognition_biden.jpg"
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    out = tmp_path / "out"
    flags = ["--yaw", "-30,30", "--method", "3d", "--no-dense", "--out", out]
    code, _, _ = run(capsys, "rotate", obama_path, biden, bad, *flags)
    assert code == 1                                   # the broken file failed, the others are done
    first = manifest(out)
    assert len(first) == 5 and sum("error" in r for r in first) == 1
    obama_files = [out / r["output"] for r in first if r.get("source") == str(obama_path)]
    stamps = {f: os.stat(f).st_mtime_ns for f in obama_files}
    # cut off: one of biden's views is gone, and the last manifest line is half written
    (out / next(r["output"] for r in first if r.get("source") == str(biden))).unlink()
    with open(out / "manifest.jsonl", "a") as f:
        f.write('{"source": "half a li')
    bad.write_bytes((Path(obama_path)).read_bytes())    # the failed photo is readable now

    code, stdout, err = run(capsys, "rotate", obama_path, biden, bad, *flags, "--resume")
    assert code == 0, err
    assert "1 of them in the run that was resumed" in stdout
    rows = manifest(out)
    assert all("error" not in r for r in rows)
    assert sorted((r["source"], r["yaw"]) for r in rows) == sorted(
        (str(s), y) for s in (obama_path, biden, bad) for y in (-30.0, 30.0))
    assert all((out / r["output"]).is_file() for r in rows)
    assert {f: os.stat(f).st_mtime_ns for f in obama_files} == stamps   # not redone

    code, _, err = run(capsys, "rotate", obama_path, "--yaw", "-30,30", "--method", "3d", "--no-dense", "--size", "96",
                       "--out", out, "--resume")
    assert code == 1 and "other settings" in err and "size" in err
    assert_one_line_error(err)
    (out / "rotate.json").unlink()
    code, _, err = run(capsys, "rotate", obama_path, *flags, "--resume")
    assert code == 1 and "rotate.json" in err
    assert_one_line_error(err)


@pytest.mark.slow
def test_resume_refuses_views_made_with_another_refiner_inference(tmp_path, capsys, obama_path):
    """The weights' hash alone does not say how they were run: a folder whose views came from
    another inference of the same refiner (e.g. one pass, before flip averaging) is not resumed."""
    out = tmp_path / "out"
    flags = ["--yaw", "0", "--no-dense", "--method", "hybrid", "--out", out]
    code, _, err = run(capsys, "rotate", obama_path, *flags)
    assert code == 0, err
    inference = load_hybrid_refiner().inference
    assert inference.startswith("flip-averaged, seen render kept")
    assert manifest(out)[0]["refiner_inference"] == inference
    settings = json.loads((out / "rotate.json").read_text())
    assert settings["refiner_inference"] == inference
    settings["refiner_inference"] = "flip-averaged"     # the same weights, the refiner's output on the whole head
    (out / "rotate.json").write_text(json.dumps(settings))
    code, _, err = run(capsys, "rotate", obama_path, *flags, "--resume")
    assert code == 1 and "refiner_inference" in err
    assert_one_line_error(err)
    # views of an older renderer (the dark mouth socket, render version 1) are not mixed in either
    settings["refiner_inference"] = inference
    from face3d.render import RENDER_VERSION

    assert settings["render_version"] == RENDER_VERSION
    settings["render_version"] = RENDER_VERSION - 1
    (out / "rotate.json").write_text(json.dumps(settings))
    code, _, err = run(capsys, "rotate", obama_path, *flags, "--resume")
    assert code == 1 and "render_version" in err
    assert_one_line_error(err)


def test_resume_refuses_expression_views_of_another_version(tmp_path, capsys, obama_path):
    """Expression views made before the re-split (no expression_version in rotate.json) are not
    mixed with new ones; a run without --expression records none and resumes as before."""
    out = tmp_path / "out"
    flags = ["--yaw", "0", "--no-dense", "--method", "3d", "--size", "64", "--out", out]
    code, _, err = run(capsys, "rotate", obama_path, *flags, "--expression", "neutral")
    assert code == 0, err
    settings = json.loads((out / "rotate.json").read_text())
    from face3d.expressions import EXPRESSION_VERSION

    assert settings["expression_version"] == EXPRESSION_VERSION
    del settings["expression_version"]
    (out / "rotate.json").write_text(json.dumps(settings))
    code, _, err = run(capsys, "rotate", obama_path, *flags, "--expression", "neutral", "--resume")
    assert code == 1 and "expression_version" in err
    assert_one_line_error(err)
    plain = tmp_path / "plain"
    flags[-1] = plain
    assert run(capsys, "rotate", obama_path, *flags)[0] == 0
    assert json.loads((plain / "rotate.json").read_text())["expression_version"] is None


@pytest.mark.slow
def test_rotate_takes_a_folder_of_photos(tmp_path, capsys, data_dir):
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in sorted((data_dir / "faces" / "biden").glob("*.jpg")):
        (folder / p.name).symlink_to(p)
    (folder / "notes.txt").write_text("not a photo")
    (folder / "._face_recognition_biden.jpg").write_bytes(b"\x00\x05\x16\x07")   # a macOS resource fork: hidden, skipped
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "rotate", folder, "--yaw", "0", "--size", "64", "--no-dense", "--method", "3d",
                            "--out", out)
    assert code == 0, err
    assert sorted({Path(r["source"]).name for r in manifest(out)}) == ["face_recognition_biden.jpg",
                                                                     "face_recognition_biden2.jpg"]
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(capsys, "rotate", empty, "--yaw", "0", "--out", tmp_path / "out2")
    assert code == 1 and "a folder without photos" in err
    assert_one_line_error(err)


def test_import_quietly_imports_and_leaves_the_collector_as_it_was():
    import gc

    from facesynth.cli import import_quietly

    assert gc.isenabled()
    assert import_quietly("facesynth.rotate_job").__name__ == "facesynth.rotate_job"
    assert gc.isenabled() and gc.get_freeze_count() > 0
    gc.disable()
    try:
        import_quietly("json")
        assert not gc.isenabled()
    finally:
        gc.enable()
