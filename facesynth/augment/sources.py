"""The inputs of `facesynth augment`: listing INPUT (a folder in identity layout or a .csv/.jsonl
list of path,identity) into `SourceItem`s, and checking and loading one source's photo, each
problem as a `SourceFailure` with a short `reason` for the manifest.
"""
from __future__ import annotations

import csv
import errno
import io
import json
import os
import re
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from face3d.errors import FaceSynthError
from face3d.image_io import MAX_PIXELS, MAX_SIDE, load_image

#: list files INPUT may be
LIST_SUFFIXES = (".csv", ".jsonl", ".json", ".ndjson")
#: PIL modes converted to RGB on loading, as a row's `note` names them (RGBA and palette go without a note)
MODE_NOTES = {"L": "grayscale", "LA": "grayscale", "1": "grayscale (1-bit)", "I": "grayscale (32-bit)",
              "I;16": "grayscale (16-bit)", "I;16B": "grayscale (16-bit)", "I;16L": "grayscale (16-bit)",
              "F": "grayscale (float)", "CMYK": "CMYK", "YCbCr": "YCbCr", "LAB": "Lab", "P": "palette",
              "PA": "palette", "RGBA": "RGBA"}
_BAD_IDENTITY = re.compile(r"[/\\\x00]")


@dataclass
class SourceItem:
    """One input photo: `source` as found under INPUT (relative path) or as listed, and where it goes."""

    index: int
    source: str
    path: str
    identity: str
    stem: str            # output name stem relative to OUTPUT, e.g. "Al_Gore/Al_Gore_0001"
    reason: str = ""     # set when the item already failed while listing (symlink loop, bad entry, ...)
    error: str = ""


class SourceFailure(Exception):
    """A source that cannot be processed: `reason` is the manifest's short category ("no face",
    "truncated image", ...), the message the one-line `error`."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


# ---------------------------------------------------------------------------------------------
# Listing


def list_sources(input_path: str | os.PathLike) -> list[SourceItem]:
    """All sources of INPUT (folder or list file), in a stable order, each with a unique output stem."""
    root = Path(input_path)
    if not os.path.lexists(root):
        raise FaceSynthError(f"INPUT {root}: no such file or folder")
    if root.is_dir():
        raw = _scan_folder(root)
    elif root.suffix.lower() in LIST_SUFFIXES:
        raw = _read_list(root)
    else:
        raise FaceSynthError(f"INPUT {root}: expected a folder (INPUT/<identity>/<image>) or a .csv/.jsonl list")
    items, used = [], set()
    for i, (source, path, identity, stem, reason, error) in enumerate(raw):
        if not reason:
            problem = identity_problem(identity)
            if problem:
                reason, error = "invalid list entry", f"{source}: {problem}"
        if reason:
            stem = ""
        else:
            base, n = stem, 1
            while stem.lower() in used:  # a.jpg and a.png in one folder; case-insensitive file systems
                n += 1
                stem = f"{base}-{n}"
            used.add(stem.lower())
        items.append(SourceItem(i, source, path, identity, stem, reason, error))
    return items


def identity_problem(identity: str) -> str:
    """Why `identity` cannot name an output folder ('' when it can)."""
    if not identity or identity in (".", "..") or _BAD_IDENTITY.search(identity) or identity.startswith("."):
        return f"invalid identity {identity!r}"
    return ""


def _sorted_entries(folder) -> list[os.DirEntry]:
    return sorted(os.scandir(folder), key=lambda e: e.name)


def _scan_folder(root: Path) -> list[tuple]:
    """(source, path, identity, stem, reason, error) per entry of INPUT/<identity>/..., in name order."""
    out: list[tuple] = []
    try:
        entries = _sorted_entries(root)
    except OSError as exc:
        raise FaceSynthError(f"INPUT {root}: cannot list the folder ({exc.strerror})") from None
    top = os.path.realpath(root)
    for e in entries:
        if e.name.startswith("."):
            continue
        try:
            is_dir = e.is_dir()  # follows symlinks
        except OSError:
            is_dir = False
        if is_dir:
            real = os.path.realpath(e.path)
            if real == top or top.startswith(real + os.sep):
                out.append((e.name, e.path, e.name, "", "symlink loop",
                            f"{e.name}: symlink loop (points back to {e.path!r}'s ancestor)"))
                continue
            _walk_identity(Path(e.path), e.name, e.name, {top, real}, out, 0)
        else:
            kind, why = entry_problem(e.path)
            if kind:
                out.append((e.name, e.path, "", "", kind, f"{e.name}: {why}"))
            else:
                out.append((e.name, e.path, "", "", "outside identity folders",
                            f"{e.name}: file at the top of INPUT, not inside an identity folder"))
    return out


def _walk_identity(folder: Path, rel: str, identity: str, ancestors: set, out: list, depth: int) -> None:
    """The files below one identity folder (any depth), appended to `out`; loops are entries that failed."""
    try:
        entries = _sorted_entries(folder)
    except OSError as exc:
        out.append((rel, str(folder), identity, "", "unreadable", f"{rel}: cannot list the folder ({exc.strerror})"))
        return
    for e in entries:
        if e.name.startswith("."):
            continue
        r = f"{rel}/{e.name}"
        kind, why = entry_problem(e.path)
        if kind:
            out.append((r, e.path, identity, "", kind, f"{r}: {why}"))
            continue
        if e.is_dir():
            real = os.path.realpath(e.path)
            if real in ancestors or depth >= 32:
                out.append((r, e.path, identity, "", "symlink loop", f"{r}: symlink loop (folder contains itself)"))
                continue
            _walk_identity(Path(e.path), r, identity, ancestors | {real}, out, depth + 1)
        else:
            out.append((r, e.path, identity, os.path.splitext(r)[0], "", ""))


def entry_problem(path: str) -> tuple[str, str]:
    """('', '') for a folder or regular file, else (reason, message) for loops, dangling links, FIFOs..."""
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop", "symlink loop (too many levels of symbolic links)"
        if exc.errno == errno.ENOENT:
            return ("broken symlink", "symlink to a missing file") if os.path.islink(path) else ("missing", "no such file")
        return "unreadable", f"cannot stat ({exc.strerror})"
    if stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
        return "", ""
    return "not a regular file", "not a regular file (FIFO, socket or device)"


def _csv_entries(text: str) -> list[tuple[int, object]]:
    """(line number, (path, identity) or error text) per row; a header path,identity may reorder the columns."""
    entries: list[tuple[int, object]] = []
    rows = list(csv.reader(io.StringIO(text)))
    start, pi, ii = 0, 0, 1
    if rows and {"path", "identity"} <= {c.strip().lower() for c in rows[0]}:
        head = [c.strip().lower() for c in rows[0]]
        start, pi, ii = 1, head.index("path"), head.index("identity")
    for n, row in enumerate(rows[start:], start + 1):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) <= max(pi, ii):
            entries.append((n, f"expected path,identity, got {len(row)} column(s)"))
        else:
            entries.append((n, (row[pi].strip(), row[ii].strip())))
    return entries


def _jsonl_entries(text: str) -> list[tuple[int, object]]:
    """(line number, (path, identity) or error text) per non-empty line."""
    entries: list[tuple[int, object]] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            entries.append((n, (str(d["path"]), str(d["identity"]))))
        except (ValueError, KeyError, TypeError):
            entries.append((n, 'expected {"path": ..., "identity": ...}'))
    return entries


def _read_list(listfile: Path) -> list[tuple]:
    """(source, path, identity, stem, reason, error) per entry of a list file; relative paths are
    taken from the list's folder."""
    base = listfile.parent
    try:
        text = listfile.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise FaceSynthError(f"INPUT {listfile}: cannot read the list ({exc})") from None
    entries = _csv_entries(text) if listfile.suffix.lower() == ".csv" else _jsonl_entries(text)
    out = []
    for n, e in entries:
        if isinstance(e, str):
            src = f"{listfile.name}:{n}"
            out.append((src, "", "", "", "invalid list entry", f"{src}: {e}"))
            continue
        path, identity = e
        if not path:
            src = f"{listfile.name}:{n}"
            out.append((src, "", identity, "", "invalid list entry", f"{src}: empty path"))
            continue
        full = path if os.path.isabs(path) else str(base / path)
        out.append((path, full, identity, f"{identity}/{os.path.splitext(os.path.basename(path))[0]}", "", ""))
    return out


# ---------------------------------------------------------------------------------------------
# Checking and loading one source


def probe_image(path: str, label: str) -> tuple[str, tuple[int, int]]:
    """(PIL mode, (w, h)) from the header only; SourceFailure when it is no image or too large."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                mode, size = im.mode, im.size
    except Image.DecompressionBombError:
        raise SourceFailure("image too large", f"{label}: image too large (decompression bomb guard)")
    except UnidentifiedImageError:
        raise SourceFailure("not an image", f"{label}: not an image file")
    except (OSError, SyntaxError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SourceFailure("truncated image" if "truncat" in first.lower() else "unreadable",
                            f"{label}: unreadable image ({first})")
    if size[0] * size[1] > MAX_PIXELS:
        raise SourceFailure("image too large",
                            f"{label}: image too large ({size[0]}x{size[1]}, limit {MAX_PIXELS // 1_000_000} MP)")
    return mode, size


def load_reason(message: str) -> str:
    """The manifest reason of a `load_image` error message."""
    m = message.lower()
    if "too large" in m:
        return "image too large"
    if "too small" in m:
        return "image too small"
    if "not a readable image" in m:
        return "not an image"
    key = "unreadable or truncated image ("
    inner = m[m.find(key) + len(key):] if key in m else m
    if "truncat" in inner or "broken data stream" in inner or "premature end" in inner:
        return "truncated image"
    return "unreadable"


def load_source(item: SourceItem) -> tuple[np.ndarray, list[str]]:
    """The RGB photo of `item` and the notes on what loading changed (conversion, downscaling).
    SourceFailure for an item that failed while listing, or a file that is no readable image."""
    if item.reason:
        raise SourceFailure(item.reason, item.error)
    path = item.path
    kind, why = entry_problem(path)
    if kind:
        raise SourceFailure(kind, f"{item.source}: {why}")
    if not os.access(path, os.R_OK):
        raise SourceFailure("unreadable", f"{item.source}: permission denied")
    mode, (w, h) = probe_image(path, item.source)
    notes = []
    if mode in MODE_NOTES and mode not in ("RGBA", "P"):
        notes.append(f"{MODE_NOTES[mode]} converted to RGB")
    try:
        image = load_image(path)
    except FaceSynthError as exc:
        raise SourceFailure(load_reason(str(exc)), str(exc).replace(path, item.source, 1)) from None
    if max(w, h) > MAX_SIDE:
        notes.append(f"downscaled from {w}x{h}")
    return image, notes
