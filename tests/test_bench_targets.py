"""benchmarks/_common.Targets: a missed target fails the benchmark run (exit code 1) and is recorded."""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def common():
    spec = importlib.util.spec_from_file_location("bench_common", ROOT / "benchmarks" / "_common.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_met_targets_exit_0(common, tmp_path, capsys):
    t = common.Targets()
    assert t.check("yaw", 1.07, "<=", 2.0, " deg")
    assert t.check("speed-up", 1.97, ">=", 1.7)
    assert t.check("same bytes", True, "==", True)
    code = t.finish(tmp_path / "r.json", {"n": 3})
    out = capsys.readouterr().out
    assert code == 0
    assert "PASS  yaw: 1.07 deg (target <= 2 deg)" in out and "FAIL" not in out
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["n"] == 3 and "machine" in data
    assert data["target_checks"]["all_met"] is True and data["target_checks"]["failed"] == []
    assert [c["passed"] for c in data["target_checks"]["checks"]] == [True, True, True]


def test_a_missed_target_exits_1(common, tmp_path, capsys):
    t = common.Targets()
    t.check("yaw", 1.07, "<=", 2.0)
    assert not t.check("l1_reduction", 0.28, ">=", 0.30)
    assert t.exit_code() == 1
    assert t.finish(tmp_path / "r.json", {}) == 1
    out = capsys.readouterr().out
    assert "FAIL  l1_reduction: 0.28 (target >= 0.3)" in out and "TARGETS MISSED (1 of 2): l1_reduction" in out
    checks = json.loads((tmp_path / "r.json").read_text())["target_checks"]
    assert checks["all_met"] is False and checks["failed"] == ["l1_reduction"]


@pytest.mark.parametrize("value", [None, math.nan])
def test_an_unmeasured_value_fails(common, value):
    t = common.Targets()
    assert not t.check("median", value, "<", 0.5)
    assert t.rows[0]["value"] is None and t.exit_code() == 1


@pytest.mark.parametrize("op,value,ok", [("<", 2.0, False), ("<=", 2.0, True), (">", 2.0, False), (">=", 2.0, True),
                                         ("==", 2.0, True), ("<", 1.99, True)])
def test_comparisons(common, op, value, ok):
    assert common.Targets().check("x", value, op, 2.0) is ok


def test_close_numbers_print_apart(common, capsys):
    common.Targets().check("cosine", 0.99998, ">=", 0.99999)
    assert "FAIL  cosine: 0.99998 (target >= 0.99999)" in capsys.readouterr().out


def test_unknown_comparison_is_refused(common):
    with pytest.raises(ValueError):
        common.Targets().check("x", 1.0, "~", 2.0)


def test_target_option_overrides_a_target(common):
    ap = argparse.ArgumentParser()
    common.add_target_option(ap)
    t = common.Targets.from_args(ap.parse_args(["--target", "yaw=0.5", "--target", "same=false"]))
    assert not t.check("yaw", 1.07, "<=", 2.0)
    assert t.rows[0]["target"] == 0.5
    assert not t.check("same", True, "==", True)
    assert t.check("pitch", 1.64, "<=", 2.0)
    with pytest.raises(SystemExit):
        common.Targets.from_args(ap.parse_args(["--target", "yaw"]))


@pytest.mark.slow
def test_bench_fit_synthetic_exit_codes(tmp_path):
    """A real benchmark run: 2 faces meet the targets (exit 0); a stricter target given with --target
    is missed (exit 1), and the JSON records which."""
    def run(*extra):
        return subprocess.run([sys.executable, "bench_fit_synthetic.py", "--n", "2", "--json", str(tmp_path / "fit.json"),
                               *extra], cwd=ROOT / "benchmarks", capture_output=True, text=True, timeout=600,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})

    ok = run()
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "all 4 targets met" in ok.stdout
    missed = run("--target", "median_yaw_error_deg=0.0001")
    assert missed.returncode == 1, missed.stdout + missed.stderr
    assert "FAIL  median_yaw_error_deg" in missed.stdout
    assert json.loads((tmp_path / "fit.json").read_text())["target_checks"]["failed"] == ["median_yaw_error_deg"]
