"""`facesynth compare` (issue 6): the metric functions, the command's outputs and the report in a browser."""
from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from facesynth.compare import METRIC_NAMES, c2st, c2st_accuracy, cross_verification_accuracy, job

YAWS = ("0", "30")


# ------------------------------------------------------------------------------------------ unit


def test_c2st_separable_features_are_told_apart():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(200, 16))
    fake = rng.normal(size=(200, 16))
    fake[:, :4] += 3.0
    res = c2st(real, fake, seed=0)
    assert res["accuracy"] >= 0.97
    assert res["n_per_class"] == 200 and res["n_train"] == 200 and res["n_test"] == 200
    assert res["p_value"] < 1e-10


def test_c2st_identical_distributions_give_chance():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(1000, 8))
    fake = rng.normal(size=(1300, 8))      # the bigger side is subsampled: balanced classes
    res = c2st(real, fake, seed=0)
    assert res["n_per_class"] == 1000 and res["n_test"] == 1000
    assert abs(res["accuracy"] - 0.5) < 0.06  # sd of the held-out accuracy under H0: 0.5/sqrt(1000) = 0.016
    assert res["p_value"] > 0.001
    assert c2st_accuracy(real, fake, seed=0) == res["accuracy"]   # seeded: the same split every time


def test_c2st_too_few_samples_is_nan():
    rng = np.random.default_rng(3)
    res = c2st(rng.normal(size=(3, 4)), rng.normal(size=(50, 4)), min_per_class=8)
    assert np.isnan(res["accuracy"]) and res["n_per_class"] == 3 and res["n_test"] == 0


def test_cross_verification_counts_pairs_by_hand():
    inf = np.inf
    # 3 views x 4 real photos; view 2 had no detected face (inf everywhere)
    dist = np.array([[0.30, 0.70, 0.50, 0.90],
                     [0.65, 0.20, 0.40, 0.59],
                     [inf, inf, inf, inf]])
    same = np.array([[True, True, False, False],
                     [True, True, False, False],
                     [False, False, True, True]])
    valid = np.array([[False, True, True, True],    # view 0 comes from photo 0: that pair does not count
                      [True, False, True, True],
                      [True, True, False, True]])
    acc, n = cross_verification_accuracy(dist, same, valid)
    # view 0: same 0.70 wrong, diff 0.50 wrong, diff 0.90 right -> 1/3
    # view 1: same 0.65 wrong, diff 0.40 wrong, diff 0.59 wrong -> 0/3
    # view 2: every pair wrong, even the different-person ones with distance inf -> 0/3
    assert n == 9
    assert acc == pytest.approx(1 / 9)
    acc_all, n_all = cross_verification_accuracy(dist[:2], same[:2])
    assert n_all == 8 and acc_all == pytest.approx(3 / 8)   # + view 0's own pair (same, 0.30: right)
    assert np.isnan(cross_verification_accuracy(dist, same, np.zeros_like(same))[0])


def test_default_methods_are_the_registry_in_report_order(tmp_path):
    from facesynth.cli import build_parser
    from facesynth.methods import METHODS

    args = build_parser().parse_args(["compare", str(tmp_path), "--yaw", "0", "--out", str(tmp_path / "o")])
    assert args.methods == list(METHODS) == ["3d", "gan", "hybrid"]
    assert job.CompareOptions(tmp_path, tmp_path / "o", (0.0,)).methods == ("3d", "gan", "hybrid")


def test_compare_usage_errors(tmp_path, capsys):
    from facesynth.cli import main

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["compare", str(empty), "--yaw", "0", "--out", str(tmp_path / "o")]) == 2
    assert main(["compare", str(tmp_path / "missing"), "--yaw", "0", "--out", str(tmp_path / "o")]) == 2
    assert main(["compare", str(empty), "--yaw", "0", "--methods", "3d,tpgan", "--out", str(tmp_path / "o")]) == 2
    assert main(["compare", str(empty), "--yaw", "95", "--out", str(tmp_path / "o")]) == 2
    assert main(["compare", str(empty), "--yaw", "0", "--real-photos", "-1", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no photos found" in err and "unknown method" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def compare_run(tmp_path_factory, data_dir):
    """One run on 2 photos each of obama and biden (+ an unreadable file and a photo without a face)."""
    from PIL import Image

    from facesynth.cli import main

    root = tmp_path_factory.mktemp("compare")
    inp = root / "in"
    for ident, names in {"obama": ["face_recognition_obama.jpg", "face_recognition_obama2.jpg"],
                         "biden": ["face_recognition_biden.jpg", "face_recognition_biden2.jpg"]}.items():
        (inp / ident).mkdir(parents=True)
        for n in names:
            shutil.copy(data_dir / "faces" / ident / n, inp / ident / n)
    (inp / "nobody").mkdir()
    (inp / "nobody" / "broken.jpg").write_bytes(b"not a jpeg")
    Image.new("RGB", (120, 120), (90, 140, 200)).save(inp / "nobody" / "sky.png")
    methods = "3d,gan,hybrid"  # the shipped refiner and CAPG-GAN weights
    out = root / "out"
    argv = ["compare", str(inp), "--yaw", "0,30", "--size", "128", "--methods", methods, "--no-dense",
            "--real-photos", "12", "--out", str(out)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(job, "MIN_C2ST_PER_CLASS", 2)   # 4 photos: let the per-yaw realism test run too
        code = main(argv)
    return {"code": code, "out": out, "methods": methods.split(","), "argv": argv, "input": inp}


@pytest.mark.slow
def test_compare_writes_metrics_and_report(compare_run):
    out, methods = compare_run["out"], compare_run["methods"]
    assert compare_run["code"] == 1                  # two bad photos recorded, the others done
    data = json.loads((out / "metrics.json").read_text())
    assert set(data) == {"methods", "info"}
    assert list(data["methods"]) == methods
    for m in methods:
        assert set(data["methods"][m]) == {"all", "per_yaw"}
        assert list(data["methods"][m]["per_yaw"]) == list(YAWS)
        for block in [data["methods"][m]["all"], *data["methods"][m]["per_yaw"].values()]:
            assert list(block) == list(METRIC_NAMES)
            # the 3D stage keeps identity and pose; the GAN-only baseline is looser (LFW-trained, 128 px)
            kept = m != "gan"
            assert 0.0 <= block["identity_to_source"] < (0.6 if kept else 0.9)
            assert 0.0 <= block["cross_verification"] <= 1.0
            assert 0.0 <= block["pose_error"] < (10.0 if kept else 30.0)
            assert 0.0 <= block["realism"] <= 1.0
            assert block["seconds_per_view"] > 0
    info = data["info"]
    assert info["photos"] == 6 and info["photos_ok"] == 4
    errors = " | ".join(f["error"] for f in info["failures"])
    assert "broken.jpg" in errors and "sky.png" in errors and "no face" in errors
    c = info["counts"]["3d"]["all"]
    assert c["views"] == 8 and c["pairs"] == 8 * 3 and c["same_identity_pairs"] == 8
    r = info["realism"]["real_vs"]["3d"]["all"]
    assert r["n_per_class"] == min(c["realism_fake"], info["realism"]["real_photos"]["used"])
    assert r["n_train"] + r["n_test"] == 2 * r["n_per_class"]
    assert info["realism"]["real_photos"]["requested"] == 12
    # the pixel test: too few crops per |yaw| bin here (8 views, 12 real photos), so not testable: null, with its counts
    px = info["pixel_realism"]
    assert data["methods"]["3d"]["all"]["pixel_realism"] is None and px["folds"] == 5
    bins = px["real_vs"]["3d"]["bins"]
    assert sum(b["generated"] for b in bins.values()) == c["realism_fake"]
    assert bins["0-7.5"]["generated"] == 4 and bins["22.5-37.5"]["generated"] == 4
    assert 0 < sum(b["real"] for b in bins.values()) <= info["realism"]["real_photos"]["used"]
    assert not any(b["testable"] for b in bins.values()) and px["real_vs"]["3d"]["all"]["bins"] == []
    assert px["controls"]["real_vs_real"]["n_real"] + px["controls"]["real_vs_real"]["n_fake"] \
        == info["realism"]["real_photos"]["used"]

    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert list(rows[0]) == ["method", "yaw", *METRIC_NAMES]
    assert [(r["method"], r["yaw"]) for r in rows] == [(m, y) for m in methods for y in ("all", *YAWS)]
    assert float(rows[0]["identity_to_source"]) == pytest.approx(data["methods"]["3d"]["all"]["identity_to_source"])
    # views.csv: one row per view, and its distances are what the medians were taken of
    per_view = list(csv.DictReader((out / "views.csv").open()))
    assert len(per_view) == len(methods) * 4 * len(YAWS)
    d3 = [float(r["identity_to_source"]) if r["identity_to_source"] else np.inf for r in per_view if r["method"] == "3d"]
    assert float(np.median(d3)) == pytest.approx(data["methods"]["3d"]["all"]["identity_to_source"], abs=1e-5)

    page = (out / "report.html").read_text()
    assert not re.search(r"""src\s*=\s*["']?(https?:)?//""", page)       # self-contained
    assert "http://" not in page and "https://" not in page
    uris = re.findall(r"<img[^>]+src='data:image/png;base64,", page)
    # source + 2 views per method per photo, + the plots
    assert len(uris) == 4 * (1 + 2 * len(methods)) + 1


@pytest.mark.slow
def test_compare_report_loads_in_a_browser(compare_run):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("no chromium executable (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    report = Path(compare_run["out"]) / "report.html"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page()
            requested = []
            page.on("request", lambda req: requested.append(req.url))
            page.goto(report.as_uri())
            page.wait_for_function("[...document.images].every(i => i.complete)", timeout=30_000)
            widths = page.evaluate("[...document.images].map(i => i.naturalWidth)")
        finally:
            browser.close()
    assert len(widths) == 4 * (1 + 2 * len(compare_run["methods"])) + 1
    assert all(w > 0 for w in widths)
    assert all(u.startswith(("file:", "data:")) for u in requested)


@pytest.mark.slow
def test_compare_run_again_reuses_finished_photos(compare_run, monkeypatch):
    """The same command again (as after a stop) takes the finished photos from DIR/cache and writes
    the same metrics; the failed photos are tried again; a photo that changed is done again."""
    from facesynth.cli import main

    out = compare_run["out"]
    first = (out / "metrics.json").read_text()
    calls = []

    def recorded(rec, image, model, poses, options, maker, face=0, key="", sfs=None):
        calls.append((options.method, key))
        return render_face(rec, image, model, poses, options, maker, face, key, sfs)

    render_face = job.render_face
    monkeypatch.setattr(job, "render_face", recorded)
    monkeypatch.setattr(job, "MIN_C2ST_PER_CLASS", 2)
    assert main(compare_run["argv"]) == 1           # the two bad photos fail again
    assert calls == []                              # no view generated again
    assert (out / "metrics.json").read_text() == first
    changed = compare_run["input"] / "obama" / "face_recognition_obama2.jpg"
    changed.write_bytes(changed.read_bytes())       # a new modification time: the photo is done again
    assert main(compare_run["argv"]) == 1
    assert sorted({Path(src).name for _, src in calls}) == ["face_recognition_obama2.jpg"]
    assert len(calls) == len(compare_run["methods"])


# ------------------------------------------------------------------------------- realism region


def test_realism_region_whole_reads_the_surroundings(obama_image):
    """--realism-region face: the realism feature ignores what lies outside the landmark hull; whole:
    it sees it. The descriptor is the same either way."""
    from facesynth.compare.metrics import FaceEncoder, detect_view_face, realism_input

    face = detect_view_face(obama_image)
    assert face is not None
    changed = obama_image.copy()
    outside = realism_input(obama_image, face.landmarks, "face") != obama_image   # grey where outside the hull
    changed[outside.any(axis=2)] = 255 - changed[outside.any(axis=2)]              # repaint the surroundings only
    assert realism_input(obama_image, face.landmarks, "whole") is obama_image
    with pytest.raises(ValueError):
        realism_input(obama_image, face.landmarks, "hair")
    feats = {}
    for region in ("face", "whole"):
        enc = FaceEncoder(region)
        d0, f0 = enc.encode([obama_image], [face.landmarks])
        d1, f1 = enc.encode([changed], [face.landmarks])
        feats[region] = (d0, f0, f1)
    assert np.abs(feats["face"][1] - feats["face"][2]).max() < 1e-9          # face only: surroundings ignored
    assert np.abs(feats["whole"][1] - feats["whole"][2]).max() > 1e-3        # whole: they change the feature
    assert np.abs(feats["face"][1] - feats["whole"][1]).max() > 1e-3
    np.testing.assert_array_equal(feats["face"][0], feats["whole"][0])       # the descriptor does not change


def test_realism_region_flag_is_recorded_and_keys_the_cache(tmp_path):
    from dataclasses import replace

    from facesynth.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["compare", str(tmp_path), "--yaw", "0", "--out", str(tmp_path / "o")])
    assert args.realism_region == "face"
    args = parser.parse_args(["compare", str(tmp_path), "--yaw", "0", "--out", str(tmp_path / "o"),
                              "--realism-region", "whole"])
    assert args.realism_region == "whole" and args.pixel_realism
    assert not parser.parse_args(["compare", str(tmp_path), "--yaw", "0", "--out", "o", "--no-pixel-realism"]).pixel_realism
    with pytest.raises(SystemExit):
        parser.parse_args(["compare", str(tmp_path), "--yaw", "0", "--out", "o", "--realism-region", "hair"])

    class Model:  # settings_key reads the model's name only
        name = "ict"

    base = job.CompareOptions(input=tmp_path, out=tmp_path / "o", yaws=(0.0,), methods=("3d",))
    key = lambda o: job.settings_key(o, Model(), {})  # noqa: E731
    assert key(replace(base, realism_region="whole")) != key(base)
    assert key(replace(base, background="plain")) != key(base)
    assert key(replace(base, real_photos=10, seed=3)) == key(base)       # the realism test itself is not cached
    assert key(replace(base, pixel_realism=False)) == key(base)          # the views' crops are cached either way
    assert job.realism_method("whole")["region"] == "whole"
    assert "unmasked" in job.realism_method("whole")["features"]
