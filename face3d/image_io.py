"""Reading photos robustly and writing outputs atomically.

Every reader error becomes a one-line `FaceSynthError`, never a traceback: the CLI and the batch
jobs record the message and carry on.
"""
from __future__ import annotations

import fcntl
import io
import os
import re
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from face3d.errors import FaceSynthError

#: Images larger than this (in pixels) are refused before decoding (decompression bombs).
MAX_PIXELS = 100_000_000
#: Images are downscaled so that their longer side is at most this many pixels before detection;
#: fitting needs a few hundred pixels across the face, not a 40-megapixel frame.
MAX_SIDE = 2048


def load_image(path: str | os.PathLike, max_side: int = MAX_SIDE) -> np.ndarray:
    """Read any common photo as uint8 RGB (H, W, 3).

    Grayscale is replicated to three channels, alpha is composited over white, 16-bit and
    float images are scaled to 8 bits, CMYK is converted, EXIF orientation is applied, and
    images larger than `max_side` are downscaled (the caller works in the downscaled frame).
    """
    p = Path(path)
    if not p.exists():
        raise FaceSynthError(f"{path}: no such file")
    if p.is_dir():
        raise FaceSynthError(f"{path}: is a directory, not an image")
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        # Pillow warns between MAX_PIXELS and twice that; the size is refused here with one line instead
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(p)
        with im:
            if im.width * im.height > MAX_PIXELS:
                raise FaceSynthError(f"{path}: image too large ({im.width}x{im.height})")
            im.load()
            im = ImageOps.exif_transpose(im)
            rgb = _to_rgb8(im)
    except FaceSynthError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise FaceSynthError(f"{path}: not a readable image ({type(exc).__name__})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FaceSynthError(f"{path}: unreadable or truncated image ({first})") from None
    if min(rgb.shape[:2]) < 16:
        raise FaceSynthError(f"{path}: image too small ({rgb.shape[1]}x{rgb.shape[0]})")
    h, w = rgb.shape[:2]
    if max(h, w) > max_side:
        s = max_side / max(h, w)
        # deferred: cv2 costs ~25 ms to import (measured); the detection helper imports this module
        # first thing and needs cv2 only for photos over max_side
        import cv2

        rgb = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb)


def _to_rgb8(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im).astype(np.float64)
        hi = 65535.0 if mode.startswith("I;16") or a.max() > 255 else 255.0
        a = np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if mode == "F":
        a = np.asarray(im).astype(np.float64)
        a = a / max(a.max(), 1e-12) if a.max() > 1.0 else a
        a = np.clip(a * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(bg, rgba).convert("RGB"))
    if mode == "RGB":
        return np.asarray(im)
    # 16-bit RGB PNGs arrive as mode "RGB" in recent Pillow with 8-bit data, or as raw arrays;
    # everything else (L, 1, P, CMYK, YCbCr, LAB) converts directly.
    return np.asarray(im.convert("RGB"))


_UMASK: int | None = None
_UMASK_LOCK = threading.Lock()


def _process_umask() -> int:
    """The process umask, read once. Linux shows it in /proc/self/status, which leaves it alone;
    elsewhere it is read by setting it to 0 and back (the umask is process-wide, so this happens once,
    under a lock)."""
    global _UMASK
    with _UMASK_LOCK:
        if _UMASK is None:
            try:
                with open("/proc/self/status") as f:
                    _UMASK = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
            except (OSError, StopIteration, ValueError, IndexError):
                _UMASK = os.umask(0)
                os.umask(_UMASK)
        return _UMASK


#: The names `atomic_write_bytes` gives its temp files: `.<stem>.<ext>.<random>.tmp` (mkstemp's
#: prefix `.<name>.` and suffix `.tmp`; every file facesynth writes this way has an extension).
TEMP_FILE_NAME = re.compile(r"^\..+\.[A-Za-z0-9]+\.[A-Za-z0-9_]+\.tmp$")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` via a temporary file in the same folder and an atomic rename.

    The file gets the mode an ordinary `open(path, "w")` would give it (0o666 less the umask), not
    mkstemp's 0o600. A killed run can leave the temp file behind (`.<name>.XXXXXXXX.tmp`, see
    `TEMP_FILE_NAME`); `remove_stale_temp_files` clears them."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_process_umask())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def remove_stale_temp_files(root: str | os.PathLike, recursive: bool = True) -> int:
    """Delete the temp files of `atomic_write_bytes` (names matching `TEMP_FILE_NAME`) in `root` and,
    if `recursive`, in every folder below it; returns how many. Only safe while the caller holds
    `root`'s lock (`lock_output_folder`): then no other run can be writing one of them."""
    n = 0
    for dirpath, dirs, files in os.walk(root):
        if not recursive:
            dirs.clear()
        for name in files:
            if TEMP_FILE_NAME.match(name):
                try:
                    os.unlink(os.path.join(dirpath, name))
                    n += 1
                except OSError:
                    pass
    return n


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def prepare_output_folder(path: str | os.PathLike, flag: str) -> Path:
    """Create the output folder `path` (with its parents) if needed and check that a file can be
    written in it, before any work: every problem (a file in the way, no permission, a read-only
    file system, ...) is one `FaceSynthError` line that names `flag` and the folder."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise FaceSynthError(f"{flag} {out}: exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FaceSynthError(f"{flag} {out}: cannot create the folder ({_reason(exc)})") from None
    try:
        fd, probe = tempfile.mkstemp(dir=out, prefix=".write-test.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise FaceSynthError(f"{flag} {out}: cannot write in the folder ({_reason(exc)})") from None
    return out


class FolderLock:
    """An exclusive lock on an output folder (`fcntl.flock` on a lock file in it), held until
    `release()` or process exit; the lock file itself stays."""

    def __init__(self, handle):
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the file drops the flock
            self._handle = None


def lock_output_folder(out: str | os.PathLike, lock_name: str, busy: str) -> FolderLock:
    """Take `out/lock_name` exclusively without waiting; a folder another process holds is the
    one-line `FaceSynthError` `busy`."""
    try:
        handle = open(Path(out) / lock_name, "w")
    except OSError as exc:
        raise FaceSynthError(f"{out}: cannot create the lock file {lock_name} ({_reason(exc)})") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise FaceSynthError(busy) from None
    except OSError as exc:  # e.g. a file system without locks
        handle.close()
        raise FaceSynthError(f"{out}: cannot lock {lock_name} ({_reason(exc)})") from None
    return FolderLock(handle)


def save_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Save a uint8 RGB (H, W, 3) array as PNG, atomically."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def sample_bilinear(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Bilinear samples (N, C) of `image` at pixel positions `xy` (N, 2) (x, y), edges replicated."""
    return sample_bilinear_xy(image, xy[:, 0], xy[:, 1])


def sample_bilinear_xy(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """`sample_bilinear` at the positions (x[i], y[i]) given as two (N,) arrays (no (N, 2) copy)."""
    import cv2  # deferred: as in load_image (the detection helper never samples)

    n = x.shape[0]
    cols = 1024
    rows = max(1, -(-n // cols))
    # pixel centres are at integer + 0.5 in our convention, at integers in OpenCV's
    mx = np.zeros(rows * cols, np.float32)
    my = np.zeros(rows * cols, np.float32)
    mx[:n], my[:n] = x, y
    mx -= 0.5
    my -= 0.5
    out = cv2.remap(image, mx.reshape(rows, cols), my.reshape(rows, cols), interpolation=cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(rows * cols, -1)[:n]
