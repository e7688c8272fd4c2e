"""A SIGKILLed `facesynth rotate` or `facesynth augment` takes its helper processes with it: the
rotate detection helper, augment's pool workers and multiprocessing's resource tracker are gone
within 5 s instead of living on under init, and a local Ray cluster (`--backend ray`) within 10 s.

Each run starts in a session of its own (start_new_session=True), so its processes are the ones
whose session id is the driver's pid, plus any descendant seen while it ran (a child that started a
new session of its own would leave the group). The cleanup SIGKILLs all of them, so a failing test
leaves nothing behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from face3d.process_utils import ORPHAN_EXIT

ROOT = Path(__file__).resolve().parents[1]
GRACE_S = 5.0


def _stat(pid: int) -> dict | None:
    """ppid, pgid, sid, state, start time (clock ticks) and cmdline of a live, non-zombie process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()   # after "pid (comm) "; comm may hold spaces
    if fields[0] in ("Z", "X"):
        return None
    return {"pid": pid, "state": fields[0], "ppid": int(fields[1]), "pgid": int(fields[2]),
            "sid": int(fields[3]), "start": int(fields[19]), "cmd": cmd}


def _all() -> list[dict]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None:
                out.append(st)
    return out


class Run:
    """A facesynth command in a session of its own, and every process that belongs to it."""

    def __init__(self, args: list[str]):
        env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "facesynth.cli", *args], cwd=ROOT, env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        self.pid = self.proc.pid
        self.seen: dict[tuple[int, int], str] = {}   # (pid, start time) -> cmdline

    def members(self) -> list[dict]:
        """Live processes of the run: its session, descendants of the driver, or ones seen before."""
        procs = _all()
        by_parent: dict[int, list[dict]] = {}
        for p in procs:
            by_parent.setdefault(p["ppid"], []).append(p)
        out = {p["pid"]: p for p in procs if p["sid"] == self.pid or (p["pid"], p["start"]) in self.seen}
        todo = [self.pid]
        while todo:
            for child in by_parent.get(todo.pop(), []):
                if child["pid"] not in out:
                    out[child["pid"]] = child
                todo.append(child["pid"])
        for p in out.values():
            self.seen[(p["pid"], p["start"])] = p["cmd"]
        return list(out.values())

    def children(self) -> list[dict]:
        return [p for p in self.members() if p["ppid"] == self.pid]

    def wait_for(self, what: str, ready, timeout: float = 240.0) -> list[dict]:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                pytest.fail(f"the run ended (code {self.proc.returncode}) before {what}: "
                            f"{self.proc.stderr.read().decode(errors='replace')[-2000:]}")
            found = ready(self.children())
            if found:
                return found
            time.sleep(0.1)
        pytest.fail(f"no {what} after {timeout:g} s")

    def kill_driver_and_wait(self, grace: float = GRACE_S) -> list[dict]:
        """SIGKILL the driver alone; the run's processes still alive `grace` s later (empty if none)."""
        self.members()                               # last look at who belongs to the run
        os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        t0 = time.monotonic()
        while True:
            left = [p for p in self.members() if p["pid"] != self.pid]
            if not left or time.monotonic() - t0 > grace:
                return left
            time.sleep(0.1)

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        for p in self.members():
            try:
                os.kill(p["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(timeout=10)
        self.proc.stderr.close()


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _describe(procs: list[dict]) -> str:
    return "; ".join(f"pid {p['pid']} ppid {p['ppid']} {_rss_mb(p['pid']):.0f} MB: {p['cmd'][:120]}" for p in procs)


def _python(code: str, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                            **kw)


def test_die_with_parent_checks_the_parent_it_was_given():
    """Called with the wrong parent pid (the parent died before the child got that far) the child
    exits on the spot; with the right one it carries on."""
    code = ("import sys\n"
            "from face3d.process_utils import die_with_parent\n"
            "die_with_parent(int(sys.argv[1]))\n"
            "print('still here')\n")
    for parent, code_, out in ((os.getpid(), 0, "still here\n"), (os.getpid() + 4_000_000, ORPHAN_EXIT, "")):
        p = _python(code, str(parent), stdout=subprocess.PIPE, text=True)
        assert (p.communicate(timeout=60)[0], p.returncode) == (out, code_)


# the grandchild binds itself to the middle process, one way or both, says so, then sleeps
_GRANDCHILD = """
import os, sys, threading, time
from face3d import process_utils
way = sys.argv[1]
if way == "prctl":
    assert process_utils.set_parent_death_signal()
elif way == "watchdog":
    threading.Thread(target=process_utils._watch_parent, args=(int(sys.argv[2]), 0.5), daemon=True).start()
else:
    process_utils.die_with_parent(int(sys.argv[2]))
print("ready", flush=True)
time.sleep(120)
"""
_MIDDLE = """
import os, subprocess, sys, time
g = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2], str(os.getpid())])
print(g.pid, flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("way", ["prctl", "watchdog", "both"])
def test_a_child_dies_with_its_sigkilled_parent(way):
    """Each of the two mechanisms alone, and die_with_parent's pair, end a child whose parent was
    SIGKILLed (the watchdog within its 0.5 s poll)."""
    middle = _python(_MIDDLE, _GRANDCHILD, way, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        grandchild = int(middle.stdout.readline())
        assert middle.stdout.readline() == "ready\n"          # the grandchild shares the pipe
        os.kill(middle.pid, signal.SIGKILL)
        middle.wait(timeout=10)
        t0 = time.monotonic()
        while _stat(grandchild) is not None and time.monotonic() - t0 < GRACE_S:
            time.sleep(0.05)
        assert _stat(grandchild) is None, f"{way}: the grandchild outlived its parent"
        assert time.monotonic() - t0 < 2.0
    finally:
        kill_session(middle)


def kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL the session a test started (`start_new_session=True`) and reap its leader."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)
    proc.stdout.close()


# starts a reaper for FACESYNTH_REAP_TEST=<argv[1]>, then two sleepers, one marked with it
_STARTER = """
import os, subprocess, sys, time
from face3d.process_utils import start_env_reaper
reaper = start_env_reaper("FACESYNTH_REAP_TEST", sys.argv[1])
sleep = [sys.executable, "-c", "import time; time.sleep(120)"]
marked = subprocess.Popen(sleep, env=dict(os.environ, FACESYNTH_REAP_TEST=sys.argv[1]))
other = subprocess.Popen(sleep, env=dict(os.environ, FACESYNTH_REAP_TEST="someone else"))
print(reaper.pid, marked.pid, other.pid, flush=True)
time.sleep(120)
"""


def test_env_reaper_kills_the_marked_processes_once_its_starter_is_gone():
    token = f"t{os.getpid()}-{time.time_ns()}"
    starter = _python(_STARTER, token, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        reaper, marked, other = map(int, starter.stdout.readline().split())
        time.sleep(0.5)                                         # the sleepers are running python
        assert _stat(reaper) and _stat(marked) and _stat(other)
        os.kill(starter.pid, signal.SIGKILL)
        starter.wait(timeout=10)
        t0 = time.monotonic()
        while (_stat(marked) or _stat(reaper)) and time.monotonic() - t0 < GRACE_S:
            time.sleep(0.05)
        assert _stat(marked) is None and _stat(reaper) is None
        assert _stat(other) is not None                         # not marked with this token
    finally:
        kill_session(starter)


@pytest.mark.slow
def test_killed_rotate_leaves_no_detection_helper(tmp_path, face_photos):
    photos = [str(p) for p in face_photos[:4]]
    run = Run(["rotate", *photos, "--yaw", "0", "--size", "64", "--no-dense", "--method", "3d", "--threads", "1",
               "--out", str(tmp_path / "out")])
    try:
        # the helper is the driver's forked child (same command line); let it get to work first
        helper = run.wait_for("detection helper", lambda kids: kids)
        assert len(helper) == 1, _describe(helper)
        time.sleep(1.5)
        assert run.proc.poll() is None, "rotate finished before it could be killed: give it more photos"
        left = run.kill_driver_and_wait()
        assert not left, f"alive {GRACE_S:g} s after rotate was SIGKILLed: {_describe(left)}"
    finally:
        run.cleanup()


@pytest.fixture()
def identity_folder(tmp_path, data_dir) -> Path:
    """Six LFW photos in the identity layout (INPUT/<identity>/<image>), as symlinks."""
    lfw = data_dir / "lfw" / "images"
    root = tmp_path / "input"
    people = sorted(p for p in lfw.iterdir() if p.is_dir())[:6]
    for person in people:
        (root / person.name).mkdir(parents=True)
        for photo in sorted(person.glob("*.jpg"))[:1]:
            (root / person.name / photo.name).symlink_to(photo)
    assert sum(1 for _ in root.glob("*/*.jpg")) == 6
    return root


def _pool_workers(kids: list[dict]) -> list[dict]:
    return [p for p in kids if "multiprocessing.spawn" in p["cmd"] and "spawn_main" in p["cmd"]]


@pytest.mark.slow
def test_killed_augment_leaves_no_pool_workers_or_resource_tracker(tmp_path, identity_folder):
    run = Run(["augment", str(identity_folder), str(tmp_path / "out"), "--yaw", "0", "--no-dense", "--size", "64",
               "--workers", "2"])
    try:
        # both workers up and past torch's import (their RSS grows by ~300 MB while it loads)
        run.wait_for("two loaded pool workers",
                     lambda kids: len(_pool_workers(kids)) == 2
                     and all(_rss_mb(p["pid"]) > 250 for p in _pool_workers(kids)))
        tracker = [p for p in run.children() if "resource_tracker" in p["cmd"]]
        assert len(tracker) == 1, _describe(run.children())
        assert run.proc.poll() is None, "augment finished before it could be killed: give it more photos"
        left = run.kill_driver_and_wait()
        assert not left, f"alive {GRACE_S:g} s after augment was SIGKILLed: {_describe(left)}"
    finally:
        run.cleanup()


@pytest.mark.slow
def test_killed_ray_augment_leaves_no_ray_processes(tmp_path, identity_folder):
    """`--backend ray` with a local cluster: Ray's own fate-sharing takes gcs_server, the raylet,
    the monitors and the workers; the reaper takes the raylet's two agents, which otherwise linger
    for about 60 s. Ray gets 10 s."""
    pytest.importorskip("ray")
    run = Run(["augment", str(identity_folder), str(tmp_path / "out"), "--yaw", "0", "--no-dense", "--size", "64",
               "--workers", "2", "--backend", "ray"])
    try:
        run.wait_for("Ray workers at work",
                     lambda kids: [p for p in run.members() if p["cmd"].startswith("ray::process_batch")])
        names = " ".join(p["cmd"] for p in run.members())
        assert "raylet" in names and "gcs_server" in names and "Agent" in names, names
        assert run.proc.poll() is None, "augment finished before it could be killed: give it more photos"
        before = run.members()
        left = run.kill_driver_and_wait(grace=10.0)
        assert not left, f"alive 10 s after augment was SIGKILLed: {_describe(left)}; before: {_describe(before)}"
    finally:
        run.cleanup()
