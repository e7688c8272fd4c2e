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
"""
from __future__ import annotations

import os
import signal
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
        import ctypes

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

