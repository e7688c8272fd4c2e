"""`facesynth rotate`'s output folder: one-line errors instead of tracebacks, one run per folder
(lock, no silent append), a killed run's temp files cleared, file modes, and where messages go."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from facesynth.cli import main

ROOT = Path(__file__).resolve().parents[1]
LFW = Path("/work/shared/data/lfw/images")
FAST = ["--yaw", "0,30", "--size", "64", "--no-dense", "--method", "3d", "--threads", "1"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def cli(*argv, umask: int | None = None, timeout=300) -> subprocess.CompletedProcess:
    """`python -m facesynth.cli ARGV` in a fresh process (optionally under `umask`)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "facesynth.cli", *map(str, argv)]
    if umask is not None:
        cmd = [sys.executable, "-c", f"import os, sys; os.umask({umask}); from facesynth.cli import main; "
                                     "sys.exit(main(sys.argv[1:]))", *map(str, argv)]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def one_error_line(err: str) -> str:
    """The stderr of a failed command: exactly one line, `facesynth: error: ...`, no traceback."""
    assert "Traceback" not in err, err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("facesynth: error: "), lines
    return lines[0]


@pytest.fixture(scope="module")
def two_faces() -> Path:
    """An LFW photo with two faces (the larger one is the labelled person)."""
    p = LFW / "Adrien_Brody" / "Adrien_Brody_0002.jpg"
    if not p.is_file():
        pytest.fail(f"{p} is missing: the tests read the shared data where it lies")
    return p


# ---------------------------------------------------------------------------------------------
# item 4: no tracebacks


def test_threads_below_one_is_a_usage_error(tmp_path, capsys, obama_path):
    code, _, err = run(capsys, "rotate", obama_path, "--threads", "-3", "--out", tmp_path / "o")
    assert code == 2
    assert "--threads" in one_error_line(err)
    assert not (tmp_path / "o").exists()
    for command in (["compare", tmp_path, "--yaw", "0", "--out", tmp_path / "c"], ["serve"]):
        code, _, err = run(capsys, *command, "--threads", "0")
        assert code == 2 and "--threads" in one_error_line(err)


def test_out_under_a_regular_file_is_one_line_error(tmp_path, capsys, obama_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    code, _, err = run(capsys, "rotate", obama_path, *FAST, "--out", blocker / "sub")
    assert code == 1
    line = one_error_line(err)
    assert str(blocker / "sub") in line and "cannot create the folder" in line


def test_out_where_nothing_may_be_created_is_one_line_error(tmp_path, capsys, obama_path):
    """/sys refuses new folders even to root (EPERM, a PermissionError), as a read-only folder does."""
    target = Path("/sys") / "facesynth-test-out"
    if not Path("/sys").is_dir() or target.exists():
        pytest.skip("no sysfs here")
    code, _, err = run(capsys, "rotate", obama_path, *FAST, "--out", target)
    assert code == 1
    line = one_error_line(err)
    assert str(target) in line and "cannot create the folder" in line
    assert not target.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a 0500 folder anyway")
def test_out_in_a_read_only_folder_is_one_line_error(tmp_path, capsys, obama_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        code, _, err = run(capsys, "rotate", obama_path, *FAST, "--out", ro)
        assert code == 1
        line = one_error_line(err)
        assert str(ro) in line and "cannot write in the folder" in line
        code, _, err = run(capsys, "rotate", obama_path, *FAST, "--out", ro / "sub")
        assert code == 1 and "cannot create the folder" in one_error_line(err)
    finally:
        ro.chmod(0o700)


def test_an_os_error_escaping_the_command_is_one_line(tmp_path, capsys, obama_path):
    """main()'s last line of defence: here rotate.json cannot be written (a folder holds its name)."""
    out = tmp_path / "out"
    (out / "rotate.json").mkdir(parents=True)
    code, _, err = run(capsys, "rotate", obama_path, *FAST, "--out", out, "--resume")
    assert code == 1
    assert "rotate.json" in one_error_line(err) and "Is a directory" in err


PROBE = """
import resource, sys
import numpy, torch, cv2, facesynth.rotate_job  # the libraries and the command reserve their address space before the limit
from facesynth.cli import main
vm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmSize:")) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + 20 * 2**20, resource.RLIM_INFINITY))
sys.exit(main(sys.argv[1:]))
"""


def test_running_out_of_memory_is_one_line(tmp_path, obama_path):
    """A MemoryError that escapes a command (here: 20 MB of address space left) ends in one line, exit 1."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", PROBE, "rotate", str(obama_path), *FAST, "--out", str(tmp_path / "o")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert one_error_line(proc.stderr).startswith("facesynth: error: out of memory")


# ---------------------------------------------------------------------------------------------
# item 5: one run per folder


HOLD_LOCK = """
import fcntl, sys
handle = open(sys.argv[1], "w")
fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
print("locked", flush=True)
sys.stdin.read()
"""

TRY_LOCK = """
import fcntl, sys
try:
    fcntl.flock(open(sys.argv[1], "w"), fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    sys.exit(3)
"""


def test_a_folder_another_process_writes_is_refused(tmp_path, capsys, data_dir):
    """While another process holds `--out`'s lock, rotate refuses the folder and writes nothing
    in it; once that process ends, the same command runs, each view once. (The lock is held by a
    child that waits on its stdin, so the test does not race two runs' start-up times.)"""
    photos = sorted((data_dir / "faces" / "obama").glob("face_recognition_obama*.jpg"))[:2]
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out / ".rotate.lock")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, _, err = run(capsys, "rotate", *photos, *FAST, "--out", out)
        assert code == 1
        assert one_error_line(err) == (f"facesynth: error: --out {out}: another rotate run is writing there; "
                                       "wait for it to end or choose another --out")
        assert sorted(f.name for f in out.iterdir()) == [".rotate.lock"]
    finally:
        holder.communicate("")
    code, _, err = run(capsys, "rotate", *photos, *FAST, "--out", out)
    assert code == 0, err
    views = [(r["source"], r["yaw"]) for r in manifest(out)]
    assert sorted(views) == sorted((str(p), y) for p in photos for y in (0.0, 30.0))  # each view once


def test_a_running_rotate_holds_its_folder_lock(tmp_path, capsys, obama_path, monkeypatch):
    """rotate holds `--out`'s lock while it writes views (another process cannot take it) and
    lets it go when it ends."""
    import facesynth.rotate_job as rotate_job

    out = tmp_path / "out"
    lock = str(out / ".rotate.lock")
    seen = []
    real = rotate_job._rotate

    def rotate_and_probe(*args, **kwargs):
        seen.append(subprocess.run([sys.executable, "-c", TRY_LOCK, lock]).returncode)
        return real(*args, **kwargs)

    monkeypatch.setattr(rotate_job, "_rotate", rotate_and_probe)
    code, _, err = run(capsys, "rotate", obama_path, *FAST, "--out", out)
    assert code == 0, err
    assert seen == [3]  # held while the run worked
    assert subprocess.run([sys.executable, "-c", TRY_LOCK, lock]).returncode == 0  # free afterwards


def test_rerun_without_resume_is_refused(tmp_path, capsys, obama_path):
    out = tmp_path / "out"
    out.mkdir()  # an existing empty folder is fine
    code, _, err = run(capsys, "rotate", obama_path, *FAST, "--out", out)
    assert code == 0, err
    before = (out / "manifest.jsonl").read_bytes()
    code, _, err = run(capsys, "rotate", obama_path, *FAST[:-4], "--method", "hybrid", "--threads", "1", "--out", out)
    assert code == 1
    assert one_error_line(err) == (f"facesynth: error: --out {out} already holds a rotate run; pass --resume to "
                                   "continue it with the same flags, or choose another --out")
    assert (out / "manifest.jsonl").read_bytes() == before  # nothing appended, no view replaced
    assert [r["method"] for r in manifest(out)] == ["3d", "3d"]
    # a folder with only rotate.json (a run stopped before its first photo) is a run too
    (out / "manifest.jsonl").unlink()
    code, _, err = run(capsys, "rotate", obama_path, *FAST, "--out", out)
    assert code == 1 and "already holds a rotate run" in one_error_line(err)
    code, _, err = run(capsys, "rotate", obama_path, *FAST, "--out", out, "--resume")
    assert code == 0, err
    assert len(manifest(out)) == 2


# ---------------------------------------------------------------------------------------------
# item 6: leftovers and modes


def test_stale_temp_files_are_removed_by_the_next_run(tmp_path, capsys, obama_path):
    """Only names of atomic_write_bytes' pattern, and only in --out itself (rotate writes no
    subfolders, so a --out that holds other things loses nothing below it)."""
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    stale = [out / ".face_recognition_obama_yaw0_pitch0.png.k2j_9x0a.tmp", out / ".manifest.jsonl.abcdefgh.tmp",
             out / ".face_recognition_obama_mesh.glb.0123abcd.tmp"]
    kept = [out / "notes.tmp", out / ".x.png.tmp", out / ".x.png.ab-cd.tmp", out / "x.png.abcdefgh.tmp",
            out / "sub" / ".y.png.abcdefgh.tmp"]
    for f in stale + kept:
        f.write_bytes(b"half written")
    code, _, err = run(capsys, "rotate", obama_path, *FAST, "--out", out)
    assert code == 0, err
    assert [f.name for f in stale if f.exists()] == []
    assert [f.name for f in kept if not f.exists()] == []
    assert not [f for f in out.rglob("*.tmp") if f not in kept]


def test_output_files_follow_the_umask(tmp_path, obama_path):
    out = tmp_path / "out"
    proc = cli("rotate", obama_path, *FAST, "--out", out, umask=0o022)
    assert proc.returncode == 0, proc.stderr
    files = [out / r["output"] for r in manifest(out)] + [out / "rotate.json", out / "manifest.jsonl"]
    assert {f.name: oct(f.stat().st_mode & 0o777) for f in files} == {f.name: "0o644" for f in files}
    probe = ("import os, sys; os.umask(0o027); from face3d.image_io import atomic_write_bytes; "
             "atomic_write_bytes(sys.argv[1], b'x')")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", probe, str(tmp_path / "f.bin")], env=env, check=True, timeout=120)
    assert oct((tmp_path / "f.bin").stat().st_mode & 0o777) == "0o640"


# ---------------------------------------------------------------------------------------------
# item 7: messages where they belong


def test_per_photo_errors_go_to_stderr(tmp_path, capsys, obama_path):
    bad = tmp_path / "garbage.jpg"
    bad.write_bytes(b"this is not an image" * 50)
    code, stdout, err = run(capsys, "rotate", bad, obama_path, *FAST, "--out", tmp_path / "o")
    assert code == 1
    assert "garbage.jpg" not in stdout
    assert stdout.strip().splitlines() == [l for l in stdout.strip().splitlines() if "photo(s) done" in l]
    (line,) = [l for l in err.splitlines() if "garbage.jpg" in l]
    assert line.startswith("facesynth: ") and "not a readable image" in line


def test_several_faces_note_and_manifest_field(tmp_path, capsys, two_faces, data_dir):
    single = data_dir / "faces" / "obama" / "face_recognition_obama_small.jpg"
    out = tmp_path / "o"
    code, stdout, err = run(capsys, "rotate", two_faces, single, *FAST, "--out", out)
    assert code == 0, err
    notes = [l for l in err.splitlines() if "note:" in l]
    assert len(notes) == 1, err
    assert notes[0].startswith(f"facesynth: note: {two_faces}: 2 faces found; took the largest (face 0, ")
    assert notes[0].endswith("; pass --all-faces for all")
    rows = manifest(out)
    assert {(Path(r["source"]).name, r["face"], r["faces"]) for r in rows} == {
        (two_faces.name, 0, 2), (single.name, 0, 1)}  # `faces`: augment's name for the count
    # --all-faces takes both: no note
    code, _, err = run(capsys, "rotate", two_faces, *FAST, "--all-faces", "--out", tmp_path / "all")
    assert code == 0, err
    assert "note:" not in err
    assert sorted((r["face"], r["faces"]) for r in manifest(tmp_path / "all")) == [(0, 2), (0, 2), (1, 2), (1, 2)]


def test_verify_notes_several_faces(capsys, two_faces):
    other = LFW / "Adrien_Brody" / "Adrien_Brody_0001.jpg"
    code, stdout, err = run(capsys, "verify", two_faces, other)
    assert code == 0, err
    assert stdout.strip().split()[1] in ("same", "different")
    (note,) = [l for l in err.splitlines() if l.strip()]
    assert note.startswith(f"facesynth verify: note: {two_faces}: 2 faces found; took the largest (face 0, ")


def test_console_rotate_flushes_its_output_before_the_quick_exit(tmp_path, obama_path):
    """`facesynth rotate` ends with os._exit (cli.console_main): with stdout and stderr block-buffered
    pipes (no PYTHONUNBUFFERED), its summary line and a failed photo's line still arrive, the exit
    code is the run's, and every view and manifest line is on disk."""
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", "from facesynth.cli import console_main; console_main()", "rotate",
                           str(obama_path), str(bad), *FAST, "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.strip().endswith(f"facesynth: 1 of 2 photo(s) done, 2 pose(s) each; output in {out}/ "
                                        f"(manifest: {out / 'manifest.jsonl'})"), proc.stdout
    assert f"facesynth: {bad}:" in proc.stderr
    rows = manifest(out)
    assert [r.get("yaw") for r in rows if "error" not in r] == [0.0, 30.0]
    assert all((out / r["output"]).is_file() for r in rows if "error" not in r)
    assert [r["source"] for r in rows if "error" in r] == [str(bad)]
