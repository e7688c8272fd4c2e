"""`facesynth augment`: input listing, the CLI contract, resumability, determinism across workers and
backends, a real SIGKILL-and-resume, and a folder of bad inputs that must not stop the batch.

The end-to-end tests use 6 LFW photos, 2 yaws, 64 px and the landmark-only fit (`--no-dense`), so
the whole file runs in well under two minutes on two cores.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facesynth.augment import augment, list_sources, read_manifest
from facesynth.cli import main

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ["Abdullah_Gul/Abdullah_Gul_0001.jpg", "Abdullah_Gul/Abdullah_Gul_0002.jpg",
          "Adrien_Brody/Adrien_Brody_0001.jpg", "Adrien_Brody/Adrien_Brody_0002.jpg",  # 0002: two faces
          "AJ_Cook/AJ_Cook_0001.jpg", "Al_Gore/Al_Gore_0001.jpg"]
FLAGS = ["--yaw", "-30,30", "--size", "64", "--no-dense", "--keep-original", "--seed", "3", "--no-progress"]
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's


@pytest.fixture(scope="module")
def photo_input(tmp_path_factory, lfw_images) -> Path:
    """INPUT/<identity>/<image> with 6 LFW photos (one of them in a nested sub-folder)."""
    src = lfw_images
    inp = tmp_path_factory.mktemp("aug") / "input"
    for rel in PHOTOS:
        dst = inp / rel
        if rel.startswith("Al_Gore"):
            dst = inp / "Al_Gore" / "nested" / Path(rel).name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, dst)
    return inp


@pytest.fixture(scope="module")
def reference(photo_input, tmp_path_factory, augment_options):
    """An uninterrupted single-worker run: the output every other run must reproduce."""
    out = tmp_path_factory.mktemp("aug") / "reference"
    res = augment(augment_options(photo_input, out))
    assert res.processed == len(PHOTOS) and res.failed_sources == 0
    return out


def snapshot(out: Path):
    """(PNG bytes by relative path, manifest rows without timings); asserts nothing partial is left."""
    leftovers = [p for p in out.rglob("*") if p.is_file() and p.name.endswith(".tmp")]
    assert not leftovers, leftovers
    files = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.png"))}
    rows = [{k: v for k, v in r.items() if not k.startswith("seconds_")} for r in read_manifest(out)]
    return files, rows


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def assert_one_line_error(err: str):
    lines = [l for l in err.splitlines() if l.strip() and "%|" not in l]
    assert "Traceback" not in err
    assert lines and all(l.startswith("facesynth") for l in lines), lines


# ---------------------------------------------------------------------------------------------
# fast: listing and the CLI contract


def test_list_folder_layout(tmp_path):
    inp = tmp_path / "in"
    for rel in ["b/x.jpg", "b/x.png", "a/sub/y.jpg", "a/z.jpg", "a/.hidden.jpg", ".git/config"]:
        (inp / rel).parent.mkdir(parents=True, exist_ok=True)
        (inp / rel).write_bytes(b"")
    (inp / "stray.jpg").write_bytes(b"")
    items = list_sources(inp)
    assert [i.source for i in items] == ["a/sub/y.jpg", "a/z.jpg", "b/x.jpg", "b/x.png", "stray.jpg"]
    assert [i.identity for i in items[:4]] == ["a", "a", "b", "b"]
    assert [i.stem for i in items[:4]] == ["a/sub/y", "a/z", "b/x", "b/x-2"]  # no two sources share outputs
    assert items[4].reason == "outside identity folders"


def test_list_csv_and_jsonl(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "list.csv").write_text("identity,path\nann,imgs/1.jpg\nbob,/abs/2.jpg\nonlyonecolumn\n,imgs/3.jpg\nann,other/1.jpg\n")
    items = list_sources(tmp_path / "list.csv")
    assert [(i.source, i.identity) for i in items[:2]] == [("imgs/1.jpg", "ann"), ("/abs/2.jpg", "bob")]
    assert items[0].path == str(tmp_path / "imgs" / "1.jpg")
    assert items[0].stem == "ann/1" and items[1].stem == "bob/2"
    assert items[2].reason == "invalid list entry" and items[2].source == "list.csv:4"
    assert items[3].reason == "invalid list entry"           # empty identity
    assert items[4].stem == "ann/1-2"                        # same name, other folder
    (tmp_path / "list.jsonl").write_text('{"path": "imgs/1.jpg", "identity": "ann"}\nnot json\n'
                                         '{"path": "a.jpg", "identity": "../etc"}\n')
    items = list_sources(tmp_path / "list.jsonl")
    assert items[0].identity == "ann" and not items[0].reason
    assert items[1].reason == items[2].reason == "invalid list entry"


def test_usage_errors(tmp_path, capsys):
    inp = tmp_path / "in"
    (inp / "a").mkdir(parents=True)
    assert run(capsys, "augment", inp, tmp_path / "o")[0] == 2                          # --yaw is required
    assert run(capsys, "augment", inp, tmp_path / "o", "--yaw", "0", "--method", "magic")[0] == 2
    assert run(capsys, "augment", inp, tmp_path / "o", "--yaw", "0", "--workers", "0")[0] == 2
    code, _, err = run(capsys, "augment", tmp_path / "missing", tmp_path / "o", "--yaw", "0")
    assert code == 1 and "no such file" in err
    assert_one_line_error(err)
    code, _, err = run(capsys, "augment", inp, inp / "out", "--yaw", "0")
    assert code == 1 and "inside INPUT" in err
    assert_one_line_error(err)
    (tmp_path / "list.txt").write_text("x")
    code, _, err = run(capsys, "augment", tmp_path / "list.txt", tmp_path / "o2", "--yaw", "0")
    assert code == 1 and ".csv/.jsonl" in err


def test_other_settings_refused_on_resume(tmp_path, capsys):
    inp = tmp_path / "in"
    inp.mkdir()
    out = tmp_path / "out"
    code, stdout, _ = run(capsys, "augment", inp, out, "--yaw", "-30,30", "--no-progress")
    assert code == 0 and "0 source(s)" in stdout
    assert read_manifest(out) == []
    code, _, err = run(capsys, "augment", inp, out, "--yaw", "-45,45", "--no-progress")
    assert code == 1 and "other settings" in err
    assert_one_line_error(err)


def test_weights_flags_are_used(tmp_path, capsys):
    """--refiner / --capg name the weights augment loads, as in rotate: a missing file is one line, before any work."""
    inp = tmp_path / "in"
    (inp / "a").mkdir(parents=True)
    for method, flag in (("hybrid", "--refiner"), ("gan", "--capg")):
        out = tmp_path / f"o_{method}"
        code, _, err = run(capsys, "augment", inp, out, "--yaw", "0", "--method", method, flag, tmp_path / "none.pt")
        assert code == 1 and "none.pt" in err and "not found" in err, err
        assert_one_line_error(err)
        assert not out.exists()


def test_manifest_log_recovery(tmp_path):
    from facesynth.augment import ManifestLog

    path = tmp_path / "manifest.jsonl"
    ok = {"status": "ok", "identity": "a", "error": ""}
    lines = [dict(ok, source="a/1.jpg", output="a/1_v1.png"), dict(ok, source="a/1.jpg", output="a/1_v2.png"),
             dict(ok, source="a/2.jpg", output="a/2_v1.png"),               # half a source (power loss)
             {"source": "a/3.jpg", "status": "failed", "reason": "no face", "output": ""}]
    path.write_text("".join(json.dumps(l) + "\n" for l in lines) + '{"source": "a/4.jpg", "sta')
    log = ManifestLog(path)
    assert path.read_text().endswith("}\n")                      # the torn line is cut off
    assert log.status("a/1.jpg", 2) == "ok"
    assert log.status("a/2.jpg", 2) is None                        # incomplete: redone
    assert log.status("a/3.jpg", 2) == "failed"
    assert log.status("a/4.jpg", 2) is None
    log.append([dict(ok, source="a/3.jpg", output="a/3_v1.png"), dict(ok, source="a/3.jpg", output="a/3_v2.png")])
    assert log.status("a/3.jpg", 2) == "ok"                        # a retried success replaces the failure
    rows = ManifestLog(path).ordered_rows({"a/1.jpg": 0, "a/2.jpg": 1, "a/3.jpg": 2})
    assert [r["output"] for r in rows] == ["a/1_v1.png", "a/1_v2.png", "a/2_v1.png", "a/3_v1.png", "a/3_v2.png"]


# ---------------------------------------------------------------------------------------------
# end to end on real photos


@pytest.mark.slow
def test_layout_manifest_limit_and_resume(reference, photo_input, tmp_path, capsys):
    files, rows = snapshot(reference)
    # ImageFolder's view: one class per identity folder, every file an image of the requested size
    classes = sorted(d.name for d in reference.iterdir() if d.is_dir())
    assert classes == sorted(d.name for d in photo_input.iterdir() if d.is_dir())
    assert all(name.endswith(IMG_EXTENSIONS) for name in files)
    assert len(files) == len(PHOTOS) * 3                  # 2 views + the aligned original
    for name, data in files.items():
        img = np.asarray(Image.open(reference / name))
        assert img.shape == (64, 64, 3) and img.std() > 10, name
    assert "Al_Gore/nested/Al_Gore_0001_yawm30_pitch0.png" in files
    assert len(rows) == len(PHOTOS) * 3
    assert list(read_manifest(reference)[0]) == ["source", "identity", "output", "kind", "yaw", "pitch", "roll",
                                                  "method", "fit_landmark_error", "status", "error", "reason",
                                                  "note", "faces", "expression", "expression_from", "expression_split",
                                                  "shape_jitter", "shape_jitter_norm", "align", "landmarks",
                                                  "landmarks_visible", "arcface_points", "face_box",
                                                  "identity_coefficients", "expression_coefficients", "camera",
                                                  "depth_map", "normals_map", "mask_map", "seconds_load",
                                                  "seconds_detect", "seconds_fit", "seconds_render", "seconds_total"]
    for r in rows:
        assert r["status"] == "ok" and r["error"] == "" and r["method"] == "3d"
        assert 0 < r["fit_landmark_error"] < 0.06
        assert (reference / r["output"]).is_file()
        assert r["output"].startswith(r["identity"] + "/")
    views = [r for r in rows if r["kind"] == "view"]
    assert sorted({r["yaw"] for r in views}) == [-30.0, 30.0]
    brody2 = [r for r in rows if r["source"] == "Adrien_Brody/Adrien_Brody_0002.jpg"]
    assert brody2[0]["faces"] == 2 and "used the largest" in brody2[0]["note"]
    # the JSONL log holds the same rows
    logged = [json.loads(l) for l in (reference / "manifest.jsonl").read_text().splitlines()]
    assert len(logged) == len(rows)

    # --limit, then resume: the finished sources are skipped and the result equals one full run
    out = tmp_path / "limited"
    code, stdout, _ = run(capsys, "augment", photo_input, out, *FLAGS, "--limit", "2")
    assert code == 0 and "2 processed" in stdout
    assert len({r["source"] for r in read_manifest(out)}) == 2
    code, stdout, _ = run(capsys, "augment", photo_input, out, *FLAGS)
    assert code == 0 and "4 processed" in stdout and "2 already done" in stdout
    assert snapshot(out) == (files, rows)
    # idempotent: a third run changes nothing
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    code, stdout, _ = run(capsys, "augment", photo_input, out, *FLAGS)
    assert code == 0 and "0 processed" in stdout
    assert before == {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    assert snapshot(out) == (files, rows)


@pytest.mark.slow
def test_two_workers_byte_identical(reference, photo_input, tmp_path, augment_options):
    res = augment(augment_options(photo_input, tmp_path / "w2", workers=2))
    assert res.processed == len(PHOTOS)
    assert len(res.workers) == 2          # both pool processes did work
    assert snapshot(tmp_path / "w2") == snapshot(reference)


@pytest.mark.slow
def test_ray_backend_matches_local(reference, photo_input, tmp_path, augment_options):
    import ray

    ray.init(num_cpus=2, include_dashboard=False)
    try:
        res = augment(augment_options(photo_input, tmp_path / "ray", backend="ray", workers=2))
        assert ray.is_initialized()       # a Ray it did not start is left running
    finally:
        ray.shutdown()
    assert res.processed == len(PHOTOS) and res.failed_sources == 0
    assert snapshot(tmp_path / "ray") == snapshot(reference)


@pytest.mark.slow
def test_sigkill_midway_then_resume(reference, photo_input, tmp_path, capsys):
    out = tmp_path / "killed"
    log = out / "manifest.jsonl"
    cmd = [sys.executable, "-m", "facesynth.cli", "augment", str(photo_input), str(out), *FLAGS, "--workers", "2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    done = 0
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            if log.exists():
                done = len({json.loads(l)["source"] for l in log.read_text().splitlines() if l.endswith("}")})
                if done >= 2:
                    break
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)   # the driver and its pool workers, mid-run
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL, proc.stdout.read().decode()[-2000:]
    # counted again: a worker may have finished a photo between the last look and the kill
    done = len({json.loads(l)["source"] for l in log.read_text().splitlines() if l.endswith("}")})
    assert 2 <= done < len(PHOTOS), f"the run was not caught midway ({done} of {len(PHOTOS)} done)"
    # what a kill can leave in the worst case: a temp file of a PNG and a torn last log line
    (out / "AJ_Cook").mkdir(exist_ok=True)
    (out / "AJ_Cook" / ".AJ_Cook_0001_yaw30_pitch0.png.abc123.tmp").write_bytes(b"\x89PNG partial")
    with open(log, "ab") as f:
        f.write(b'{"source": "AJ_Cook/AJ_Cook_0001.jpg", "identity": "AJ_C')
    assert len(read_manifest(out) if (out / "manifest.parquet").exists() else []) < len(PHOTOS) * 3

    code, stdout, err = run(capsys, "augment", photo_input, out, *FLAGS)
    assert code == 0, err
    assert f"{done} already done" in stdout
    assert snapshot(out) == snapshot(reference)


def _png_with_size(path: Path, width: int, height: int) -> None:
    """A tiny PNG whose header claims width x height (a decompression-bomb-sized image, on disk in bytes)."""
    import io
    import struct

    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = 8 + 8                                           # signature, then length + b"IHDR"
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4:ihdr + 13])) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))


@pytest.mark.slow
def test_bad_inputs_reported_batch_goes_on(tmp_path, capsys, lfw_images):
    src = lfw_images
    a, b = src / "AJ_Cook/AJ_Cook_0001.jpg", src / "Aaron_Eckhart/Aaron_Eckhart_0001.jpg"
    inp = tmp_path / "in"
    good, bad = inp / "good", inp / "bad"
    good.mkdir(parents=True)
    bad.mkdir()
    shutil.copyfile(a, good / "ok.jpg")
    photo = np.asarray(Image.open(a).convert("RGB"))
    data = a.read_bytes()
    (bad / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (bad / "notes.txt").write_text("not a photo\n")
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "random.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    Image.fromarray(np.ascontiguousarray(photo[::-1])).save(bad / "noface.jpg")          # upside down
    Image.fromarray(np.concatenate([photo, np.asarray(Image.open(b).convert("RGB"))], 1)).save(bad / "two_faces.jpg")
    Image.fromarray(photo).convert("L").save(bad / "gray.jpg")
    Image.fromarray(photo).convert("CMYK").save(bad / "cmyk.jpg")
    _png_with_size(bad / "huge.png", 12000, 10000)         # 120 MP: over the 100 MP limit
    _png_with_size(bad / "bomb.png", 40000, 40000)         # PIL's decompression-bomb guard
    os.symlink("loop_self.jpg", bad / "loop_self.jpg")
    os.symlink("loop_b.jpg", bad / "loop_a.jpg")
    os.symlink("loop_a.jpg", bad / "loop_b.jpg")
    os.symlink("..", bad / "loopdir")
    os.symlink("gone.jpg", bad / "dangling.jpg")
    os.mkfifo(bad / "fifo.jpg")
    shutil.copyfile(a, bad / "locked.jpg")
    os.chmod(bad / "locked.jpg", 0)
    (inp / "README.txt").write_text("stray file at the top\n")

    out = tmp_path / "out"
    code, stdout, err = run(capsys, "augment", inp, out, "--yaw", "0,40", "--size", "64", "--no-dense", "--no-progress")
    assert "Traceback" not in err + stdout
    assert code == 1                                                       # some input failed
    by = {}
    for r in read_manifest(out):
        by.setdefault(r["source"], []).append(r)
    expected_fail = {
        "bad/truncated.jpg": "truncated image", "bad/notes.txt": "not an image", "bad/empty.jpg": "not an image",
        "bad/random.jpg": "not an image", "bad/noface.jpg": "no face", "bad/huge.png": "image too large",
        "bad/bomb.png": "image too large", "bad/loop_self.jpg": "symlink loop", "bad/loop_a.jpg": "symlink loop",
        "bad/loop_b.jpg": "symlink loop", "bad/loopdir": "symlink loop", "bad/dangling.jpg": "broken symlink",
        "bad/fifo.jpg": "not a regular file", "README.txt": "outside identity folders",
    }
    if os.geteuid() != 0:
        expected_fail["bad/locked.jpg"] = "unreadable"
    for source, reason in expected_fail.items():
        rows = by.pop(source)
        assert len(rows) == 1 and rows[0]["status"] == "failed", (source, rows)
        assert rows[0]["reason"] == reason, (source, rows[0])
        assert rows[0]["output"] == "" and rows[0]["error"] and "\n" not in rows[0]["error"]
        assert rows[0]["error"].startswith(source), rows[0]["error"]
    # the rest succeeded, with what was odd about them recorded
    assert set(by) == {"good/ok.jpg", "bad/two_faces.jpg", "bad/gray.jpg", "bad/cmyk.jpg"} | (
        {"bad/locked.jpg"} if os.geteuid() == 0 else set())   # root reads a mode-000 file
    for source, rows in by.items():
        assert [r["status"] for r in rows] == ["ok", "ok"], source
    assert "grayscale" in by["bad/gray.jpg"][0]["note"]
    assert "CMYK" in by["bad/cmyk.jpg"][0]["note"]
    assert by["bad/two_faces.jpg"][0]["faces"] == 2 and "used the largest" in by["bad/two_faces.jpg"][0]["note"]
    # the end summary counts by reason
    assert f"{len(expected_fail)} failed" in stdout
    for reason in ("symlink loop 4", "not an image 3", "image too large 2", "truncated image 1", "no face 1"):
        assert reason in stdout, stdout
    assert "grayscale 1" in stdout and "CMYK 1" in stdout and "several faces (largest used) 1" in stdout

    # --multi-face skip: a photo with several faces is a failure with its own reason (no fit is run)
    inp2 = tmp_path / "in2"
    (inp2 / "x").mkdir(parents=True)
    shutil.copyfile(bad / "two_faces.jpg", inp2 / "x" / "two.jpg")
    code, stdout, _ = run(capsys, "augment", inp2, tmp_path / "out2", "--yaw", "0", "--size", "64", "--no-dense",
                          "--no-progress", "--multi-face", "skip")
    (row,) = read_manifest(tmp_path / "out2")
    assert code == 1 and row["status"] == "failed" and row["reason"] == "several faces" and row["faces"] == 2
    assert "several faces 1" in stdout


@pytest.mark.slow
def test_expression_and_shape_jitter_flags(photo_input, tmp_path, capsys):
    """The issue-8 flags work in augment as in rotate: a grid of expressions x shape samples x poses."""
    import pyarrow.parquet as pq

    inp = tmp_path / "in"
    (inp / "Abdullah_Gul").mkdir(parents=True)
    shutil.copyfile(photo_input / PHOTOS[0], inp / PHOTOS[0])
    out = tmp_path / "out"
    code = main(["augment", str(inp), str(out), "--yaw", "0,30", "--size", "64", "--no-dense", "--no-progress",
                 "--expression", "neutral,smile", "--shape-jitter", "0.5", "--jitter-samples", "2", "--seed", "5"])
    assert code == 0, capsys.readouterr().err
    rows = [r for r in pq.read_table(out / "manifest.parquet").to_pylist() if r["status"] == "ok"]
    assert len(rows) == 2 * 2 * 2  # expressions x shape samples x yaws
    assert {r["expression"] for r in rows} == {"neutral", "smile"}
    assert all(r["shape_jitter"] == 0.5 and r["shape_jitter_norm"] > 0 for r in rows)
    assert all(r["expression_split"] for r in rows)          # presets render on the re-split fit
    names = {r["output"] for r in rows}
    assert len(names) == 8 and all((out / n).is_file() for n in names)
    # neutral and smile differ; the same draw with the same seed is reproducible
    a = out / [n for n in names if "expr-neutral_shape0" in n and "yaw0_" in n][0]
    b = out / [n for n in names if "expr-smile_shape0" in n and "yaw0_" in n][0]
    assert a.read_bytes() != b.read_bytes()
    out2 = tmp_path / "out2"
    main(["augment", str(inp), str(out2), "--yaw", "0,30", "--size", "64", "--no-dense", "--no-progress",
          "--expression", "neutral,smile", "--shape-jitter", "0.5", "--jitter-samples", "2", "--seed", "5"])
    assert (out2 / a.relative_to(out)).read_bytes() == a.read_bytes()
    # a name the model does not have is a one-line error before any work, with the close matches
    capsys.readouterr()
    code = main(["augment", str(inp), str(tmp_path / "o3"), "--yaw", "0", "--expression", "jawOpn=0.5"])
    err = capsys.readouterr().err
    assert code == 1 and "jawOpen" in err and "Traceback" not in err
    assert not (tmp_path / "o3" / "manifest.jsonl").exists()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["hybrid", "gan"])
def test_generator_methods_write_the_3d_layout_with_their_weights_hash(reference, photo_input, tmp_path, method,
                                                                       augment_options):
    """--method hybrid / gan: the same layout and rows as 3d, other pixels (refined / generated),
    the hash of the method's weights in augment.json; gan refuses 3D edits before any work."""
    import hashlib
    import json

    from face3d.errors import FaceSynthError
    from ganrefine.capg import DEFAULT_WEIGHTS
    from ganrefine.hybrid import default_weights_path

    inp = tmp_path / "in"
    (inp / "Abdullah_Gul").mkdir(parents=True)
    shutil.copyfile(photo_input / PHOTOS[0], inp / PHOTOS[0])
    out3, outm = tmp_path / "o3", tmp_path / "om"
    augment(augment_options(inp, out3, keep_original=False))
    res = augment(augment_options(inp, outm, keep_original=False, method=method))
    assert res.failed_sources == 0
    files3, _ = snapshot(out3)
    filesm, rowsm = snapshot(outm)
    assert sorted(files3) == sorted(filesm) and len(filesm) == 2
    assert all(r["method"] == method for r in rowsm)
    assert all(files3[rel] != filesm[rel] for rel in files3)
    settings = json.loads((outm / "augment.json").read_text())
    sha = {name: hashlib.sha256(path.read_bytes()).hexdigest()
           for name, path in (("refiner", default_weights_path()), ("capg", DEFAULT_WEIGHTS))}
    used = "refiner" if method == "hybrid" else "capg"
    assert settings[f"{used}_sha256"] == sha[used]
    if method == "gan":
        assert settings["refiner_sha256"] is None
        with pytest.raises(FaceSynthError, match="not available with --method gan"):
            augment(augment_options(inp, tmp_path / "oe", method="gan", shape_jitter=0.5))
        assert not (tmp_path / "oe").exists()
