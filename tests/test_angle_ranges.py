"""--yaw / --pitch / --roll lists and a:b:step ranges: what a range gives, and the caps on angles per flag
and poses per run, checked before any angle or pose is made (rotate, augment, compare)."""
from __future__ import annotations

import argparse
import math
import time
import tracemalloc

import pytest

from facesynth.cli import build_parser, main
from facesynth.options import MAX_ANGLES, MAX_POSES, UsageError, check_pose_count, parse_angles

#: 10^9 + 1 yaw angles: 180 / 1.8e-7 steps
HUGE = "-90:90:1.8e-7"


@pytest.mark.parametrize("text, expected", [
    ("-60:60:25", [-60, -35, -10, 15, 40]),
    ("-60:60:30", [-60, -30, 0, 30, 60]),
    ("-60:60:15", [-60, -45, -30, -15, 0, 15, 30, 45, 60]),
    ("60:-60:-30", [60, 30, 0, -30, -60]),
    ("10:10:5", [10]),
    ("-90:100:30", [-90, -60, -30, 0, 30, 60, 90]),
    ("-30,0:20:10,45", [-30, 0, 10, 20, 45]),
])
def test_range_values(text, expected):
    assert parse_angles(text, "yaw") == pytest.approx(expected, abs=1e-12)


def test_a_stop_reached_with_floating_point_error_is_kept_exactly():
    v = parse_angles("0:1:0.1", "yaw")
    assert len(v) == 11 and v[-1] == 1.0 and v == pytest.approx([i / 10 for i in range(11)])
    v = parse_angles("-0.3:0:0.1", "pitch")
    assert len(v) == 4 and v[-1] == 0.0


def test_a_step_that_misses_the_stop_never_passes_it():
    v = parse_angles("-90:90:1.1", "yaw")
    assert len(v) == 164 and v[0] == -90 and v[-1] == pytest.approx(89.3)
    assert all(-90 <= x <= 90 for x in v) and all(b > a for a, b in zip(v, v[1:]))
    v = parse_angles("90:-90:-1.1", "yaw")
    assert len(v) == 164 and v[-1] == pytest.approx(-89.3) and all(-90 <= x <= 90 for x in v)
    for step in (0.7, 3, 7, 13, 25, 29, 0.53):
        v = parse_angles(f"-90:90:{step}", "roll")
        assert all(-90 <= x <= 90 for x in v) and len(v) == math.floor(180 / step + 1e-9) + 1, step


@pytest.mark.parametrize("text, words", [
    ("60:-60:30", "must point from a to b"),
    ("-60:60:-30", "must point from a to b"),
    ("0:1:0", "expects comma-separated degrees"),
    ("0:1", "expects comma-separated degrees"),
    ("0:nan:1", "expects comma-separated degrees"),
    ("0:120:50", "must lie in [-90, 90] degrees, got 100"),
    ("-95:0:5", "must lie in [-90, 90] degrees, got -95"),
])
def test_bad_ranges_are_refused(text, words):
    with pytest.raises(argparse.ArgumentTypeError) as info:
        parse_angles(text, "yaw")
    assert words in str(info.value) and "--yaw" in str(info.value)


def test_the_angle_count_is_capped_per_flag():
    assert len(parse_angles("-90:90:0.5", "yaw")) == MAX_ANGLES == 361
    with pytest.raises(argparse.ArgumentTypeError) as info:
        parse_angles("-90:90:0.5,0", "yaw")
    assert str(info.value) == "--yaw -90:90:0.5,0 would give 362 angles; at most 361 per flag"
    with pytest.raises(argparse.ArgumentTypeError) as info:
        parse_angles("-90:90:1e-7", "yaw")
    assert str(info.value) == "--yaw -90:90:1e-7 would give 1800000001 angles; at most 361 per flag"
    with pytest.raises(argparse.ArgumentTypeError, match="would give 400 angles; at most 361 per flag"):
        parse_angles(",".join(["0"] * 400), "pitch")
    with pytest.raises(argparse.ArgumentTypeError, match="would give more than 10"):
        parse_angles("0:1:1e-320", "roll")


def test_check_pose_count():
    assert check_pose_count([0] * 100, [0] * 10, [0]) == MAX_POSES == 1000
    with pytest.raises(UsageError) as info:
        check_pose_count([0] * 101, [0] * 10, [0])
    assert str(info.value) == "--yaw x --pitch x --roll: 101 x 10 x 1 = 1010 poses; at most 1000 per run"


@pytest.fixture(scope="module")
def parser_imported():
    # the subcommands' modules import once per process (seconds on a busy machine); the timed calls
    # below measure the flags' handling, not that first import
    build_parser()


def _refused(capsys, argv):
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        code = main([str(a) for a in argv])
        seconds = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    err = capsys.readouterr().err
    return code, err, seconds, peak


def _commands(tmp_path, *flags):
    photos = tmp_path / "photos"
    return {"rotate": ["rotate", tmp_path / "x.png", *flags, "--out", tmp_path / "o"],
            "augment": ["augment", photos, tmp_path / "o", *flags],
            "compare": ["compare", photos, *flags, "--out", tmp_path / "o"]}


@pytest.mark.parametrize("command", ["rotate", "augment", "compare"])
def test_a_billion_views_are_refused_at_once(command, tmp_path, capsys, parser_imported):
    for flag in ("--yaw", "--pitch"):
        code, err, seconds, peak = _refused(capsys, _commands(tmp_path, "--yaw", "0", flag, HUGE)[command])
        assert code == 2
        assert err == f"facesynth: error: {flag} {HUGE} would give 1000000001 angles; at most 361 per flag\n"
        assert seconds < 2.0, seconds
        assert peak < 50 * 2**20, peak
        assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", ["rotate", "augment", "compare"])
def test_the_pose_product_is_capped_before_any_work(command, tmp_path, capsys, parser_imported):
    flags = ["--yaw", "-90:90:1", "--pitch", "-30:30:10"]          # 181 x 7 = 1267 poses
    code, err, seconds, peak = _refused(capsys, _commands(tmp_path, *flags)[command])
    assert code == 2 and seconds < 2.0 and peak < 50 * 2**20
    grid = "--yaw x --pitch: 181 x 7 = 1267" if command == "compare" else "--yaw x --pitch x --roll: 181 x 7 x 1 = 1267"
    assert err == f"facesynth: error: {grid} poses; at most 1000 per run\n"
    assert not (tmp_path / "o").exists()
    if command != "compare":      # 181 x 3 x 2 = 1086
        code, err, _, _ = _refused(capsys, _commands(tmp_path, "--yaw", "-90:90:1", "--pitch", "-1:1:1",
                                                     "--roll", "0,5")[command])
        assert code == 2 and "181 x 3 x 2 = 1086 poses; at most 1000 per run" in err


def test_augment_called_directly_checks_the_pose_product(tmp_path):
    from face3d.errors import FaceSynthError
    from facesynth.augment import AugmentOptions, augment

    opts = AugmentOptions(input=str(tmp_path / "in"), output=str(tmp_path / "o"), yaw=[0.0] * 101,
                          pitch=[0.0] * 10)
    with pytest.raises(FaceSynthError, match="101 x 10 x 1 = 1010 poses; at most 1000 per run"):
        augment(opts)
    assert not (tmp_path / "o").exists()
