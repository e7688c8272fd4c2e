"""The detection helper process that a fresh `facesynth rotate` starts before torch loads: its
detections are the in-process ones, photos not asked for are skipped, and a dead or failing
helper hands the work back to the main process instead of hanging."""
from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from face3d.detection_helper import DetectionHelper, start_detection_helper
from face3d.image_io import load_image
from face3d.landmarks import detect_faces

ROOT = Path(__file__).resolve().parents[1]


def _same(a, b):
    assert len(a) == len(b)
    for fa, fb in zip(a, b):
        assert fa.box == fb.box
        np.testing.assert_array_equal(fa.landmarks, fb.landmarks)


@pytest.fixture()
def photos(tmp_path, data_dir, obama_path):
    biden = data_dir / "faces" / "biden" / "face_recognition_biden.jpg"
    noface = tmp_path / "noface.png"
    Image.fromarray(np.full((200, 200, 3), 90, np.uint8)).save(noface)
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"not an image")
    return {"obama": obama_path, "biden": biden, "noface": noface, "garbage": garbage}


def test_helper_detections_are_the_in_process_ones(photos):
    from face3d.landmarks import cnn_has_run

    assert start_detection_helper() is None  # torch is loaded here: nothing left to overlap
    order = ["obama", "noface", "garbage", "biden", "obama"]
    # a helper forked after this process ran dlib's CNN (an earlier test may have) leaves the photos
    # that need the CNN (HOG finds no face) to the main process: None; else the CNN finds none: []
    noface = None if cnn_has_run() else []
    with DetectionHelper() as helper:
        helper.submit(photos[k] for k in order)
        got = [helper.faces(photos[k]) for k in order]
    for k, faces in zip(order, got):
        if k == "garbage":
            assert faces is None                 # the main process reads it and reports the error
        elif k == "noface":
            assert faces == noface
        else:
            _same(faces, detect_faces(load_image(photos[k])))
            assert len(faces) == 1


def test_photos_not_asked_for_are_skipped(photos):
    order = ["noface", "garbage", "noface", "biden", "obama"]
    with DetectionHelper() as helper:
        helper.submit(photos[k] for k in order)
        _same(helper.faces(photos["biden"]), detect_faces(load_image(photos["biden"])))
        assert helper.faces(photos["noface"]) is None      # behind us now: detect in-process
        _same(helper.faces(photos["obama"]), detect_faces(load_image(photos["obama"])))
        assert helper.faces(photos["obama"]) is None       # submitted once, asked once


def test_a_dead_helper_hands_detection_back(photos):
    helper = DetectionHelper()
    helper.submit([photos["obama"], photos["biden"]])
    os.kill(helper._proc.pid, signal.SIGKILL)
    t0 = time.perf_counter()
    assert helper.faces(photos["obama"]) is None
    assert helper.faces(photos["biden"]) is None
    assert time.perf_counter() - t0 < 10
    helper.close()


def test_helper_ends_when_the_main_process_end_of_the_pipe_closes():
    """The helper reads EOF once the main process's end of the pipe is closed (as the kernel closes
    it for a SIGKILLed main process), although the fork gave the helper a copy of that end."""
    helper = DetectionHelper()
    helper._conn.close()   # no None sent: only the closed descriptor tells the helper
    helper._alive = False
    try:
        helper._proc.join(timeout=30)
        assert helper._proc.exitcode == 0
    finally:
        if helper._proc.is_alive():
            helper._proc.kill()
            helper._proc.join()


@pytest.mark.slow
def test_fresh_rotate_detects_in_the_helper_with_the_same_result(tmp_path, photos):
    """`facesynth rotate` in a fresh process (torch not yet loaded) uses the helper for every photo,
    and its manifest matches an in-process run's: same fits, same per-photo errors."""
    names = ["obama", "garbage", "noface", "biden"]
    flags = ["--yaw", "-30,30", "--method", "3d", "--no-dense"]
    probe = (
        "import json, sys\n"
        "import face3d.detection_helper as h\n"
        "asked = []\n"
        "faces = h.DetectionHelper.faces\n"
        "def spy(self, path):\n"
        "    out = faces(self, path)\n"
        "    asked.append([path, out is not None])\n"
        "    return out\n"
        "h.DetectionHelper.faces = spy\n"
        "from facesynth.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "print(json.dumps(asked))\n"
        "sys.exit(code)\n")
    fresh = tmp_path / "fresh"
    proc = subprocess.run([sys.executable, "-c", probe, "rotate", *[str(photos[k]) for k in names], *flags,
                           "--out", str(fresh)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr                 # garbage and noface failed, the batch went on
    assert "Traceback" not in proc.stderr
    asked = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [Path(p).name for p, _ in asked] == [photos[k].name for k in names if k != "garbage"]
    assert [used for _, used in asked] == [True, True, True]  # garbage never reached detection

    from facesynth.cli import main

    here = tmp_path / "here"
    assert main(["rotate", *[str(photos[k]) for k in names], *flags, "--out", str(here)]) == 1

    def rows(out):
        keep = ("source", "yaw", "error", "fit_landmark_error", "source_pose")
        return [{k: r.get(k) for k in keep} for r in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())]

    assert rows(fresh) == rows(here)
    assert sum(r["error"] is not None for r in rows(fresh)) == 2


SUBMIT_PROBE = """
import sys
from facesynth import cli

class Recorder:
    def submit(self, paths, detector):
        print(repr(("torch" in sys.modules, list(paths), detector)), flush=True)

def stop(args, helper, inputs):     # in place of rotate: nothing is rotated
    print(repr(inputs), flush=True)
    return 0

args = cli.build_parser("rotate").parse_args(["rotate", *sys.argv[1:]])
args.run = "__main__:stop"
cli.run_command(args, Recorder())
"""


def test_rotate_sends_its_photos_to_the_helper_before_torch_loads(tmp_path, photos):
    """`run_command` hands rotate's photos to the detection helper before the command's imports pull
    in torch, references first (one photo given for both flags once), folders expanded in order,
    and hands the same lists to the run, which does not list them again."""
    folder = tmp_path / "folder"
    folder.mkdir()
    for name in ("b.jpg", "a.png"):
        (folder / name).write_bytes(b"")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", SUBMIT_PROBE, str(photos["obama"]), str(folder), "--yaw", "0",
                           "--out", str(tmp_path / "out"), "--pose-from", str(photos["biden"]),
                           "--expression-from", str(photos["biden"]), "--detector", "hog"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    submitted, handed_on = (ast.literal_eval(line) for line in proc.stdout.splitlines()[:2])
    torch_loaded, paths, detector = submitted
    assert not torch_loaded
    assert paths == [str(photos["biden"]), str(photos["obama"]), str(folder / "a.png"), str(folder / "b.jpg")]
    assert detector == "hog"
    assert handed_on == ([str(photos["biden"])], paths[1:])   # the run gets the list the helper got
