"""Child processes that die with their parent.

A helper process blocked on a pipe or a queue does not notice when its parent is SIGKILLed: it can
hold the pipe's other end itself (a fork copies it, a spawn worker of a ProcessPoolExecutor gets
both ends of its call queue), so no EOF ever comes, and it lives on under init. `die_with_parent`,
called first thing in the child, makes it exit when the parent goes, in two ways:

* Linux's parent-death signal, `prctl(PR_SET_PDEATHSIG, SIGKILL)`: the kernel kills the child the
  moment its parent dies. The signal belongs to the *thread* that created the child, so it also
  fires when that thread exits while the process lives on; callers start their children from the
  main thread (or from a thread that lives as long as the children should).
* a daemon watchdog thread that compares `os.getppid()` with the parent's pid every `interval`
  seconds and calls `os._exit` once the child has been re-parented (to init or a subreaper). It
  covers other platforms, a prctl that failed, and a parent-death signal that belonged to a thread.

The parent may already be gone when the child gets here (then the prctl has nothing to watch), so
`die_with_parent` checks the parent's pid right after the prctl and exits at once when it differs.

Grandchildren that only watch their own parent and linger when it dies with ours (a Ray raylet's
agents) are for `start_env_reaper`: a small process that outlives this one and kills them by an
environment variable they carry.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time

#: from <linux/prctl.h>
PR_SET_PDEATHSIG = 1
#: exit status of a child that found its parent gone
ORPHAN_EXIT = 70


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask Linux to send `sig` to this process when its parent (the thread that created it) dies.
    False where that is not available (not Linux, no libc, prctl refused)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int, interval: float) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(ORPHAN_EXIT)
        time.sleep(interval)


def die_with_parent(parent_pid: int, interval: float = 0.5) -> None:
    """Make this (child) process exit when the process `parent_pid` dies; call it first thing in
    the child, with the pid the parent had when it started the child (`os.getpid()` there, passed
    down), not `os.getppid()` here, which is already init's when the parent died before this line.
    Exits at once (status ORPHAN_EXIT) when the parent is already gone."""
    set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(ORPHAN_EXIT)
    threading.Thread(target=_watch_parent, args=(parent_pid, interval), daemon=True,
                     name="facesynth-parent-watch").start()


# The reaper's program: wait for EOF on stdin, then SIGKILL every process whose environment holds
# NAME=VALUE (argv[1], argv[2]), except itself and the process that started it, if still there.
_REAPER = r"""
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)   # a Ctrl-C of the terminal is for the driver
key = (sys.argv[1] + "=" + sys.argv[2]).encode()
spare = {os.getpid(), int(sys.argv[3])}
sys.stdin.buffer.read()
for name in os.listdir("/proc"):
    if name.isdigit() and int(name) not in spare:
        try:
            with open("/proc/" + name + "/environ", "rb") as f:
                if key in f.read().split(b"\0"):
                    os.kill(int(name), signal.SIGKILL)
        except OSError:
            pass
"""


def start_env_reaper(name: str, value: str):
    """A small process (about 10 MB) that outlives this one: once this process is gone, SIGKILLed
    included, or calls `stop_env_reaper`, it SIGKILLs every process whose environment holds
    `name=value` (read from /proc/PID/environ), then exits. It learns of the end from EOF on the
    pipe that only this process writes to (the kernel closes it with the process). For processes
    that a child of this one starts and that only watch that child, such as the agents a Ray
    raylet starts with RAY_RAYLET_PID set. /proc/PID/environ shows the environment a process
    was started with, unless it moved it to retitle itself (setproctitle without SPT_NOENV set).
    None where /proc is missing or the start fails."""
    if not os.path.isdir("/proc/self"):
        return None
    try:
        return subprocess.Popen([sys.executable, "-c", _REAPER, name, value, str(os.getpid())],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    except OSError:
        return None


def stop_env_reaper(reaper, timeout: float = 5.0) -> None:
    """Let the reaper do its round now (this process is done with what it watched) and wait for it."""
    if reaper is None:
        return
    try:
        reaper.stdin.close()
        reaper.wait(timeout=timeout)
    except Exception:  # noqa: BLE001 - a reaper that will not end is killed, not waited for
        reaper.kill()
        reaper.wait()


def child_pids(name: str) -> list[int]:
    """Pids of this process's children whose program (argv[0]'s file name) is `name`; [] without /proc."""
    me = os.getpid()
    out = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return out
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                raw = f.read()
            if int(raw[raw.rindex(")") + 2:].split()[1]) != me:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv0 = f.read().split(b"\0", 1)[0].decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        if os.path.basename(argv0) == name:
            out.append(int(entry))
    return out
