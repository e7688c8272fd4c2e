"""Face detection in a helper process that starts before torch is imported.

A fresh `facesynth rotate` spends about 1.4 s importing torch and about 0.9 s loading dlib's
detector (0.35 s) and 68-point model (0.55 s). Neither releases the GIL, so a thread cannot overlap
them, but a second process can: `start_detection_helper` forks one while the main process has not
yet imported torch, and `facesynth rotate` sends it the photos as soon as its flags are parsed.
The helper loads the HOG detector, then reads each photo it is sent with `load_image` and detects
its faces with `detect_faces`, the same two calls the main process would make, so the landmarks
are identical; the 68-point model loads as the first photo's landmarks need it (or at once when no
photo is waiting). Meanwhile the main process imports torch and loads the morphable model and the
refiner; later photos of a batch are detected while it fits earlier ones.

Each photo goes with the detector to use (`detect_faces`' "auto", "hog" or "cnn"); with "auto"
the helper also runs dlib's CNN detector on the photos where the HOG detector finds no face, so a
profile photo is found here as it would be in-process. One exception: a helper forked from a
process that had already run the CNN (dlib's thread pool is not copied by a fork, and the CNN would
wait on it forever; `face3d.landmarks.cnn_has_run`) answers None for the photos that need the CNN,
and the main process detects them itself. `facesynth rotate` forks its helper first thing, so its
helper runs the CNN.

The main process sends photos a few at a time (`DEPTH`), so neither side can block the other on a
full pipe, and reads the results in the order it sent them. Where the helper cannot help (no fork
on this platform, a photo it could not read, a helper that died) `DetectionHelper.faces` returns
None and the caller detects in-process, which also raises the usual one-line errors.

The helper dies with the main process, even a SIGKILLed one: it closes its copy of the main
process's end of the pipe (so a `recv` gets EOF once the main process is gone) and calls
`face3d.process_utils.die_with_parent`, which covers the time it spends loading models or
detecting. The parent-death signal fires when the thread that forked the helper exits, not only
the process; `facesynth rotate` starts the helper in `cli.main` and closes it before returning,
so that thread outlives it.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from collections import deque

from face3d.process_utils import die_with_parent

#: photos sent to the helper and not yet read back; enough to keep it one photo ahead
DEPTH = 3
_FAILED = object()


def _serve(conn, parent_conn, parent_pid: int) -> None:
    """The helper's loop: (path, detector) in, (path, detections or None) out; None ends it. `parent_conn` is
    the main process's end of the pipe, which the fork copied here; `parent_pid` the main process."""
    die_with_parent(parent_pid)
    parent_conn.close()  # else this process holds a writer of its own input and never sees EOF
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    # deferred: these modules' numpy and PIL cost ~170 ms to import (measured), which the main
    # process would pay before it forks this helper; here they load while it imports torch
    from face3d.image_io import load_image
    from face3d.landmarks import cnn_has_run, load_face_detector, load_landmark_models

    cnn_ok = not cnn_has_run()   # the parent's state, copied by the fork (module docstring)
    # the HOG detector first: with a photo already sent (rotate sends them before importing torch),
    # its boxes are found while dlib's 68-point model loads no earlier than the landmarks need it
    load_face_detector()
    if not conn.poll():
        load_landmark_models()
    while True:
        try:
            item = conn.recv()
        except (EOFError, OSError):
            return
        if item is None:
            return
        path, detector = item
        try:
            faces = _detect(load_image(path), detector, cnn_ok)
        except Exception:  # the main process meets the same error in-process and reports it
            faces = None
        try:
            conn.send((path, faces))
        except (BrokenPipeError, OSError):
            return


def _detect(image, detector: str, cnn_ok: bool):
    """`detect_faces(image, detector=detector)`, or None where that needs the CNN and `cnn_ok` is False."""
    # deferred: as in _serve
    from face3d.landmarks import detect_faces

    if cnn_ok or detector == "hog":
        return detect_faces(image, detector=detector)
    if detector == "auto":
        return detect_faces(image, detector="hog") or None
    return None


class DetectionHelper:
    """The main process's side of the helper; `submit` the photos in order, then ask `faces` for each."""

    def __init__(self):
        ctx = multiprocessing.get_context("fork")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, self._conn, os.getpid()), daemon=True,
                                 name="facesynth-detect")
        self._proc.start()
        child.close()
        self._todo: deque[str] = deque()   # submitted, not yet sent
        self._sent: deque[str] = deque()   # sent, result not yet read
        self._detector: dict[str, str] = {}   # path -> the detector it was submitted with
        self._alive = True

    def submit(self, paths, detector: str = "auto") -> None:
        """Queue photos for detection with `detector` (`detect_faces`' choices), in the order
        `faces` will ask for them."""
        for p in paths:
            self._todo.append(str(p))
            self._detector[str(p)] = detector
        self._top_up()

    def _top_up(self) -> None:
        while self._alive and self._todo and len(self._sent) < DEPTH:
            path = self._todo.popleft()
            try:
                self._conn.send((path, self._detector.get(path, "auto")))
            except (BrokenPipeError, OSError):
                self.close()
                return
            self._sent.append(path)

    def _receive(self):
        while not self._conn.poll(0.2):
            if not self._proc.is_alive():
                return _FAILED
        try:
            return self._conn.recv()
        except (EOFError, OSError):
            return _FAILED

    def faces(self, path) -> list | None:
        """The detections (`detect_faces`' list, largest first; empty when there is no face) of a
        submitted photo, or None: detect it in-process. Photos submitted before `path` and not asked
        for (a resumed run's finished ones) are dropped, or their results read and discarded."""
        path = str(path)
        if not self._alive:
            return None
        # _sent holds at most DEPTH photos, so it is searched first: a batch asked for in order
        # finds each photo there without scanning the whole queue of later ones
        if path not in self._sent:
            if path not in self._todo:
                return None
            while self._todo[0] != path:
                self._todo.popleft()
        while True:
            self._top_up()
            if not self._alive or not self._sent:
                return None
            expected = self._sent.popleft()
            result = self._receive()
            if result is _FAILED or result[0] != expected:
                self.close()
                return None
            if expected == path:
                self._top_up()
                return result[1]

    def close(self) -> None:
        """Stop the helper (idempotent)."""
        if not self._alive:
            return
        self._alive = False
        try:
            self._conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self._proc.join(timeout=1.0)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(timeout=1.0)
        self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def start_detection_helper() -> DetectionHelper | None:
    """A helper process, or None where it would not pay or cannot run: torch already imported (the
    overlap it exists for is gone, and forking a process with torch's threads running is unsafe) or
    no fork on this platform."""
    if "torch" in sys.modules or "fork" not in multiprocessing.get_all_start_methods():
        return None
    try:
        return DetectionHelper()
    except OSError:
        return None
