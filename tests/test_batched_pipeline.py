"""The batched pipeline (issue 27): `face3d.pipeline.reconstruct_largest_faces` and `facesynth
augment --batch-size`, against the one-photo path (`--batch-size 1`), on the same photos, seed and flags.

Tolerance, with the landmark-only fit (`--no-dense`) and with the default fit (the dense stage
batched too): every manifest row equal but the timings and `fit_landmark_error` (within 1e-6), the
same image files, every pixel within 2/255; with the default fit the numbers of the fit's columns
(landmarks, points, box, coefficients, camera, pose) within 1e-4. Measured: byte-identical images and
equal rows. The
batched landmark stage equals the one-face fit (tests/test_batched_fit.py); in the dense stage the
shape basis sums of a face do not depend on its batch (`face3d.dense._basis_product`), so its 25 Adam
steps, which amplify any float rounding, end within about 1e-6 of the fit alone (17 test photos),
and 40 LFW photos through `augment` at `--batch-size 8` and 1 gave byte-identical images.

The end-to-end tests use 4 LFW photos, an upside-down photo (no face) and a text file named .jpg,
2 yaws and 64 px.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from face3d.errors import FaceSynthError, NoFaceError
from face3d.fitting import FitConfig
from face3d.image_io import load_image
from face3d.landmarks import DetectedFace, detect_faces
from face3d.pipeline import Reconstruction, reconstruct_faces, reconstruct_largest_faces
from facesynth.augment import augment, batch_sources, list_sources, read_manifest
from facesynth.cli import main
from facesynth.options import MAX_BATCH_SIZE, UsageError

PHOTOS = ["Abdullah_Gul/Abdullah_Gul_0001.jpg", "Adrien_Brody/Adrien_Brody_0002.jpg",  # 0002: two faces
          "AJ_Cook/AJ_Cook_0001.jpg", "Al_Gore/Al_Gore_0001.jpg"]
IMAGE_TOL = 2            # max abs difference of a pixel channel, out of 255
LANDMARK_ERROR_TOL = 1e-6


@pytest.fixture(scope="module")
def batch_input(tmp_path_factory, lfw_images) -> Path:
    """INPUT/<identity>/<image>: 4 LFW photos, an upside-down photo (no face) and a text file named
    .jpg, sorted so that the bad ones fall inside the batches of 4."""
    src = lfw_images
    inp = tmp_path_factory.mktemp("batch") / "input"
    for rel in PHOTOS:
        (inp / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, inp / rel)
    photo = np.asarray(Image.open(src / PHOTOS[2]).convert("RGB"))
    Image.fromarray(np.ascontiguousarray(photo[::-1])).save(inp / "AJ_Cook" / "AJ_Cook_upside_down.jpg")
    (inp / "Abdullah_Gul" / "Abdullah_Gul_notes.jpg").write_text("not a photo\n")
    return inp


@pytest.fixture(scope="module")
def one_photo_run(batch_input, tmp_path_factory, augment_options) -> Path:
    """--batch-size 1, one worker: the one-photo path every batched run is held against."""
    out = tmp_path_factory.mktemp("batch") / "one"
    res = augment(augment_options(batch_input, out, batch_size=1))
    assert res.processed == 6 and res.failed_sources == 2 and res.batch_size == 1
    return out


def rows_without_timings(out: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("seconds_")} for r in read_manifest(out)]


#: the columns a default fit's float rounding reaches (within DENSE_ROW_TOL), module docstring
DENSE_ROW_COLUMNS = ("landmarks", "arcface_points", "face_box", "identity_coefficients", "expression_coefficients",
                     "camera", "yaw", "pitch", "roll")
DENSE_ROW_TOL = 1e-4


def numbers(v) -> np.ndarray:
    if isinstance(v, dict):
        return np.concatenate([numbers(v[k]) for k in sorted(v) if v[k] is not None] or [np.zeros(0)])
    return np.zeros(0) if v is None else np.asarray(v, dtype=np.float64).ravel()


def assert_same_output(out: Path, ref: Path, dense: bool = False) -> None:
    """The rows and image files of `out` are those of `ref` within the tolerance (module docstring);
    `dense`: the default fit's."""
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    rows, want = rows_without_timings(out), rows_without_timings(ref)
    assert len(rows) == len(want)
    for r, w in zip(rows, want):
        a, b = r.pop("fit_landmark_error"), w.pop("fit_landmark_error")
        assert (a is None) == (b is None) and (a is None or abs(a - b) <= LANDMARK_ERROR_TOL), (r["output"], a, b)
        for c in (DENSE_ROW_COLUMNS if dense else ()):
            x, y = numbers(r.pop(c)), numbers(w.pop(c))
            assert x.shape == y.shape and (x.size == 0 or np.abs(x - y).max() <= DENSE_ROW_TOL), (r["output"], c)
        assert r == w
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert files == sorted(p.relative_to(ref).as_posix() for p in ref.rglob("*.png"))
    for f in files:
        x, y = (np.asarray(Image.open(d / f), dtype=np.int16) for d in (out, ref))
        assert np.abs(x - y).max() <= IMAGE_TOL, f


# ---------------------------------------------------------------------------------------------
# the pipeline function


@pytest.fixture(scope="module")
def photos(lfw_images) -> list[np.ndarray]:
    src = lfw_images
    return [load_image(src / rel) for rel in PHOTOS]


def fit_params(rec: Reconstruction) -> np.ndarray:
    f = rec.fit
    return np.concatenate([np.asarray(v, np.float64).ravel()
                           for v in (f.identity, f.expression, f.rotation, f.translation, [f.focal])])


def test_reconstruct_largest_faces_equals_one_photo_and_isolates_failures(photos, ict_model):
    """Per photo: the one-photo reconstruction (fit and texture), or that photo's error; a photo
    without a face and a photo with unusable landmarks fail alone (the batched fit raises for the
    bad landmarks, and the others are fitted one by one)."""
    cfg = FitConfig(dense=False, seed=3)
    blank = np.full((120, 100, 3), 127, np.uint8)
    images = [photos[0], blank, photos[1], photos[2]]
    got = reconstruct_largest_faces(images, ict_model, cfg, sources=["a.jpg", "blank.jpg", "b.jpg", "c.jpg"])
    assert isinstance(got[1], NoFaceError) and str(got[1]) == "blank.jpg: no face found"
    for k in (0, 2, 3):
        one = reconstruct_faces(images[k], ict_model, fit_config=cfg)[0]
        assert isinstance(got[k], Reconstruction) and got[k].faces_found == one.faces_found
        np.testing.assert_allclose(fit_params(got[k]), fit_params(one), rtol=0, atol=1e-5)
        assert abs(got[k].fit.landmark_error - one.fit.landmark_error) <= LANDMARK_ERROR_TOL
        np.testing.assert_allclose(got[k].texture.image, one.texture.image, rtol=0, atol=2 / 255 + 1e-6)
        assert got[k].fit.residuals["batch_size"] == 3
    assert got[2].faces_found == 2                  # Adrien_Brody_0002: the largest of two faces
    # bad landmarks of one photo (as a detector elsewhere might hand them over): that photo alone fails
    faces = [detect_faces(im) for im in photos[:3]]
    bad = [DetectedFace(faces[1][0].box, np.full((68, 2), np.nan))]
    got = reconstruct_largest_faces(photos[:3], ict_model, cfg, faces=[faces[0], bad, faces[2]])
    assert isinstance(got[1], FaceSynthError) and "landmarks" in str(got[1])
    for k in (0, 2):
        assert isinstance(got[k], Reconstruction)
        np.testing.assert_allclose(fit_params(got[k]), fit_params(reconstruct_faces(
            photos[k], ict_model, fit_config=cfg, faces=faces[k])[0]), rtol=0, atol=1e-5)
    assert reconstruct_largest_faces([], ict_model, cfg) == []


# ---------------------------------------------------------------------------------------------
# augment --batch-size


def test_batch_sources_caps_the_batch(tmp_path):
    items = list(range(10))
    assert [len(b) for b in batch_sources(items, 8, 1, 5)] == [8, 2]
    assert [len(b) for b in batch_sources(items, 1, 1, 5)] == [1] * 10
    assert [len(b) for b in batch_sources(items, 8, 2, 5)] == [3, 3, 3, 1]    # every worker gets 2 batches
    assert [len(b) for b in batch_sources(items, 8, 8, 5)] == [1] * 10
    assert [len(b) for b in batch_sources(items, 8, 1, 4000)] == [2] * 5       # a batch holds <= 10,000 views
    assert [len(b) for b in batch_sources(items, 8, 1, 20000)] == [1] * 10
    assert sum(batch_sources(items, 4, 2, 5), []) == items                     # input order kept
    assert batch_sources([], 8, 2, 5) == []
    # a resumed run: the batches of the whole selection, less the sources done (empty ones dropped)
    todo = [1, 2, 3, 7, 8, 9]
    assert batch_sources(todo, 4, 1, 5, selected=items) == [[1, 2, 3], [7], [8, 9]]
    assert batch_sources(todo, 8, 2, 5, selected=items) == [[1, 2], [3], [7, 8], [9]]


def test_steady_rate_counts_from_the_first_finished_batch(tmp_path):
    """The sources of a batch finish together: the steady rate counts the sources after the first
    finished batch over the time since it; one batch that held them all gives the plain rate."""
    from facesynth.augment import AugmentResult
    from facesynth.augment.backends import SourceResult

    res = AugmentResult(output=tmp_path, seconds=10.0)
    for k in range(8):
        res.count_processed(SourceResult(k, f"s{k}", [], batch_size=4))
    res.first_done, res.last_done = 100.0, 102.0     # the second batch of 4 finished 2 s after the first
    assert res.steady_rate == 2.0
    res.processed = 4
    assert res.steady_rate == res.rate == 0.4


def test_batch_size_usage_errors(tmp_path, capsys, augment_options):
    inp = tmp_path / "in"
    (inp / "a").mkdir(parents=True)
    for bad in ("0", str(MAX_BATCH_SIZE + 1), "x", "-3"):
        code = main(["augment", str(inp), str(tmp_path / "o"), "--yaw", "0", "--batch-size", bad])
        err = capsys.readouterr().err
        lines = [l for l in err.splitlines() if l.strip()]
        assert code == 2 and len(lines) == 1 and "--batch-size" in lines[0] and "Traceback" not in err, err
    with pytest.raises(UsageError, match="--batch-size"):
        augment(augment_options(inp, tmp_path / "o2", batch_size=0))
    assert not (tmp_path / "o").exists() and not (tmp_path / "o2").exists()


@pytest.mark.slow
def test_batched_run_equals_one_photo_run(one_photo_run, batch_input, tmp_path, capsys):
    """--batch-size 4 (batches [AJ_Cook x2, Abdullah_Gul x2 incl. the text file] ... in input order):
    the same rows and images within the tolerance; the no-face photo and the text file are their
    own failure rows; each ok source's seconds_fit is its share of its batch's fit."""
    out = tmp_path / "b4"
    code, stdout = main(["augment", str(batch_input), str(out), "--yaw", "-30,30", "--size", "64", "--no-dense",
                         "--keep-original", "--seed", "3", "--no-progress", "--batch-size", "4"]), capsys.readouterr().out
    assert code == 1 and "6 processed" in stdout and "2 failed" in stdout       # the two bad inputs
    assert_same_output(out, one_photo_run)
    by = {r["source"]: r for r in read_manifest(out)}
    assert by["AJ_Cook/AJ_Cook_upside_down.jpg"]["reason"] == "no face"
    assert by["Abdullah_Gul/Abdullah_Gul_notes.jpg"]["reason"] == "not an image"
    first = [s.source for s in list_sources(batch_input)][:4]
    ok = [by[s] for s in first if by[s]["status"] == "ok"]
    assert len(ok) == 2 and ok[0]["seconds_fit"] == ok[1]["seconds_fit"] > 0    # the batch's fit, shared
    for r in read_manifest(out):
        if r["status"] == "ok":
            stages = [r[c] for c in ("seconds_load", "seconds_detect", "seconds_fit", "seconds_render")]
            assert abs(sum(stages) - r["seconds_total"]) < 1e-3


@pytest.mark.slow
def test_batched_run_with_two_workers_and_resume(one_photo_run, batch_input, tmp_path, augment_options):
    """Two workers split the sources into batches of 2 (every worker has work); a run stopped after
    3 sources (--limit) and resumed with batches equals the one-photo run."""
    out = tmp_path / "w2"
    res = augment(augment_options(batch_input, out, workers=2, batch_size=8))
    assert res.batch_size == 2 and len(res.workers) == 2 and res.processed == 6
    assert_same_output(out, one_photo_run)
    out = tmp_path / "resumed"
    res = augment(augment_options(batch_input, out, limit=3, batch_size=4))
    assert res.processed == 3 and res.batch_size == 3
    res = augment(augment_options(batch_input, out, batch_size=4))
    assert res.skipped == 3 and res.processed == 3 and res.failed_sources == 2
    assert_same_output(out, one_photo_run)
    res = augment(augment_options(batch_input, out, batch_size=2, retry_failed=True))     # another batch size: allowed
    assert res.processed == 2 and res.failed_sources == 2
    assert_same_output(out, one_photo_run)


@pytest.mark.slow
def test_batched_run_with_the_default_fit(batch_input, tmp_path, augment_options):
    """The default fit (dense stage batched too): --batch-size 8 against 1 within the tolerance, on the first 3 sources (2 faces and the no-face photo; one yaw, no original: the
    dense fits are the cost)."""
    one, batched = tmp_path / "one", tmp_path / "batched"
    for out, size in ((one, 1), (batched, 8)):
        res = augment(augment_options(batch_input, out, yaw=[-30.0], dense=True, keep_original=False, batch_size=size,
                                      limit=3))
        assert res.processed == 3 and res.failed_sources == 1 and res.batch_size == min(size, 3)
    assert_same_output(batched, one, dense=True)


# ---------------------------------------------------------------------------------------------
# rotate with several photos


@pytest.mark.slow
def test_rotate_fits_several_photos_in_one_batch(batch_input, tmp_path, capsys):
    """`rotate` with several photos fits them in one batch: each photo's views equal those of the
    photo rotated alone (the one-photo path) within the tolerance; a photo without a face and a file
    that is no image fail alone, with today's one-line errors."""
    photos = [batch_input / PHOTOS[0], batch_input / "AJ_Cook" / "AJ_Cook_upside_down.jpg",
              batch_input / "Abdullah_Gul" / "Abdullah_Gul_notes.jpg", batch_input / PHOTOS[2]]
    flags = ["--yaw", "-30,30", "--size", "64", "--no-dense", "--method", "3d"]
    code = main(["rotate", *map(str, photos), *flags, "--out", str(tmp_path / "all")])
    err = capsys.readouterr().err
    assert code == 1
    assert "AJ_Cook_upside_down.jpg: no face found" in err and "Abdullah_Gul_notes.jpg" in err
    records = [json.loads(line) for line in (tmp_path / "all" / "manifest.jsonl").read_text().splitlines()]
    failed = {Path(r["source"]).name for r in records if "error" in r}
    assert failed == {"AJ_Cook_upside_down.jpg", "Abdullah_Gul_notes.jpg"}
    views = [r for r in records if "error" not in r]
    assert len(views) == 4 and all(r["seconds_per_photo"] > 0 for r in views)
    for k in (0, 3):
        alone = tmp_path / f"alone{k}"
        assert main(["rotate", str(photos[k]), *flags, "--out", str(alone)]) == 0
        for png in alone.glob("*.png"):
            x, y = (np.asarray(Image.open(d / png.name), dtype=np.int16) for d in (alone, tmp_path / "all"))
            assert np.abs(x - y).max() <= IMAGE_TOL, png.name


def test_workers_run_torch_and_opencv_on_one_thread():
    """A worker (here the inline one, in this process) runs torch and OpenCV on one thread each, so
    two workers do not oversubscribe two cores, and the driver gets its thread counts back after."""
    import cv2
    import torch

    from facesynth.augment.backends import run_inline, worker_model

    before = (torch.get_num_threads(), cv2.getNumThreads())
    seen = []

    def work(batch, cfg):
        worker_model(None)
        seen.append((torch.get_num_threads(), cv2.getNumThreads()))
        return []

    run_inline(work, [[None]], None, lambda res: None)
    assert seen == [(1, 1)]
    assert (torch.get_num_threads(), cv2.getNumThreads()) == before
