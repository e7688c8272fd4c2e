"""`facesynth augment`: a face dataset in, the same dataset at several head poses out.

    facesynth augment INPUT OUTPUT --yaw -60,-30,0,30,60 [--pitch 0] [--size 128] [--method 3d|hybrid|gan]
                      [--workers N] [--backend local|ray] [--ray-address ADDR] [--limit K] [--seed S]

INPUT is a folder in the identity layout (`INPUT/<identity>/<image>`, as LFW, CASIA-WebFace,
VGGFace2 and torchvision's `ImageFolder`) or a `.csv` / `.jsonl` list of (path, identity). OUTPUT
keeps that layout: `OUTPUT/<identity>/<stem>_yaw30_pitch0.png`, so `ImageFolder(OUTPUT)` loads it.

Bookkeeping in OUTPUT:
  manifest.jsonl    one JSON line per output image and one per failed source, appended (one write +
                    fsync per source) after the source's images are on disk; the resume log.
  manifest.parquet  the same rows in input order, rewritten atomically (temp file + rename) now and
                    then during the run and at its end; the deliverable.
  augment.json      the settings that define the output (poses, size, method, seed, ...); a re-run
                    with other settings into the same OUTPUT is refused.

Resuming: a re-run skips every source that has rows in manifest.jsonl (`--retry-failed` redoes the
failed ones). Images are written by temp file + rename, and a source's rows are logged only after
all its images exist, so a SIGKILL loses at most the sources in flight; a torn last log line is cut
off on the next start, and stale temp files are removed. Workers return PNG bytes and the driver
alone writes OUTPUT, so the Ray backend needs no shared file system for OUTPUT (INPUT and the model
folder must be readable at the same paths on every node, and facesynth installed there).

Rows: one per output image (`kind` "view", or "original" for `--keep-original`, whose yaw/pitch/roll
are the pose estimated for the photo) and one per failed source (`status` "failed", `reason` a short
category such as "no face" or "truncated image", `error` the one-line message).

Several faces in one photo: by default the largest face is used (the usual choice of alignment
pipelines for identity-labelled data) and the row's `note` says how many faces were found;
`--multi-face skip` records such photos as failed ("several faces") instead.

Grayscale, CMYK, palette and 16-bit photos are converted to RGB and processed; the conversion is
recorded in `note`. Every worker runs torch with one thread: the same input, seed and flags give
byte-identical images whatever the backend and the number of workers.
"""
from __future__ import annotations

import argparse
import csv
import errno
import io
import json
import os
import re
import stat
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace

from face3d.errors import FaceSynthError

#: Columns of manifest.parquet, in order. `seconds_*` are timings (the only run-dependent columns).
COLUMNS = ["source", "identity", "output", "kind", "yaw", "pitch", "roll", "method", "fit_landmark_error",
           "status", "error", "reason", "note", "faces", "expression", "expression_split", "shape_jitter",
           "shape_jitter_norm", "seconds_load", "seconds_detect", "seconds_fit", "seconds_render", "seconds_total"]
TIMING_COLUMNS = [c for c in COLUMNS if c.startswith("seconds_")]
#: Settings stored in OUTPUT/augment.json; a resumed run must match them.
OUTPUT_SETTINGS = ["input", "yaw", "pitch", "roll", "size", "method", "render_version",
                   "refiner_sha256", "refiner_inference", "capg_sha256", "seed", "model", "dense",
                   "expression", "expression_version", "shape_jitter", "jitter_samples", "keep_original",
                   "multi_face"]
PARQUET_MIN_INTERVAL_S = 60.0


# ---------------------------------------------------------------------------------------------
# Command line


@dataclass
class AugmentOptions:
    input: str
    output: str
    yaw: list[float]
    pitch: list[float] = field(default_factory=lambda: [0.0])
    roll: list[float] = field(default_factory=lambda: [0.0])
    method: str = "3d"
    size: int = 128
    keep_original: bool = False
    multi_face: str = "largest"
    dense: bool = True
    model: str | None = None
    workers: int = 1
    backend: str = "local"
    ray_address: str | None = None
    limit: int | None = None
    seed: int = 0
    expression: list | None = None        # parsed --expression specs (None: the photo's own expression)
    shape_jitter: float = 0.0
    jitter_samples: int = 1
    retry_failed: bool = False
    progress: bool = True

    @classmethod
    def from_args(cls, args) -> "AugmentOptions":
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in vars(args).items() if k in names})


def run_augment_command(args) -> int:
    result = augment(AugmentOptions.from_args(args))
    print(result.summary_text())
    return 0 if result.failed_selected == 0 else 1


# ---------------------------------------------------------------------------------------------
# Inputs


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


_BAD_IDENTITY = re.compile(r"[/\\\x00]")


def _identity_problem(identity: str) -> str:
    if not identity or identity in (".", "..") or _BAD_IDENTITY.search(identity) or identity.startswith("."):
        return f"invalid identity {identity!r}"
    return ""


def list_sources(input_path: str | os.PathLike) -> list[SourceItem]:
    """All sources of INPUT (folder or list file), in a stable order, each with a unique output stem."""
    root = Path(input_path)
    if not os.path.lexists(root):
        raise FaceSynthError(f"INPUT {root}: no such file or folder")
    if root.is_dir():
        raw = _scan_folder(root)
    elif root.suffix.lower() in (".csv", ".jsonl", ".json", ".ndjson"):
        raw = _read_list(root)
    else:
        raise FaceSynthError(f"INPUT {root}: expected a folder (INPUT/<identity>/<image>) or a .csv/.jsonl list")
    items, used = [], set()
    for i, (source, path, identity, stem, reason, error) in enumerate(raw):
        if not reason:
            problem = _identity_problem(identity)
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


def _scan_folder(root: Path) -> list[tuple]:
    out: list[tuple] = []
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
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
            kind, why = _entry_problem(e.path)
            if kind:
                out.append((e.name, e.path, "", "", kind, f"{e.name}: {why}"))
            else:
                out.append((e.name, e.path, "", "", "outside identity folders",
                            f"{e.name}: file at the top of INPUT, not inside an identity folder"))
    return out


def _walk_identity(folder: Path, rel: str, identity: str, ancestors: set, out: list, depth: int) -> None:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        out.append((rel, str(folder), identity, "", "unreadable", f"{rel}: cannot list the folder ({exc.strerror})"))
        return
    for e in entries:
        if e.name.startswith("."):
            continue
        r = f"{rel}/{e.name}"
        kind, why = _entry_problem(e.path)
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


def _entry_problem(path: str) -> tuple[str, str]:
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


def _read_list(listfile: Path) -> list[tuple]:
    base = listfile.parent
    try:
        text = listfile.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise FaceSynthError(f"INPUT {listfile}: cannot read the list ({exc})") from None
    entries: list[tuple[int, object]] = []  # (line number, (path, identity) or error text)
    if listfile.suffix.lower() == ".csv":
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
    else:
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                entries.append((n, (str(d["path"]), str(d["identity"]))))
            except (ValueError, KeyError, TypeError):
                entries.append((n, 'expected {"path": ..., "identity": ...}'))
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
# The work of one source (runs in a worker: local process, Ray task or the driver itself)

_WORKER: dict = {}


def _setup_worker(model_path: str | None):
    """Per-process state: one torch thread, the model loaded once."""
    import torch

    if _WORKER.get("model_key") != model_path or "model" not in _WORKER:
        from face3d.morphable_model import load_morphable_model

        _WORKER["model"] = load_morphable_model(model_path)
        _WORKER["model_key"] = model_path
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)
    return _WORKER["model"]


def _init_pool_worker(model_path, parent_pid=None):
    """A pool worker's start: first bind its life to the driver's (`parent_pid`), so a SIGKILLed
    driver does not leave it waiting on the call queue forever, then load the model."""
    if parent_pid is not None:
        from face3d.process_utils import die_with_parent

        die_with_parent(parent_pid)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _setup_worker(model_path)


def _rss_kb() -> tuple[int, int]:
    """(current RSS, peak RSS) of this process in KiB."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cur = 0
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    cur = int(line.split()[1])
                    break
    except OSError:
        pass
    return cur, peak


def _pose_name(yaw: float, pitch: float, roll: float) -> str:
    from facesynth.manifest import angle_name as _name

    return f"_yaw{_name(yaw)}_pitch{_name(pitch)}" + (f"_roll{_name(roll)}" if roll else "")


def _probe(path: str, label: str) -> tuple[str, tuple[int, int]]:
    """(PIL mode, (w, h)) from the header only; FaceSynthError with a reason attribute on failure."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    from face3d.image_io import MAX_PIXELS

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                mode, size = im.mode, im.size
    except Image.DecompressionBombError:
        raise _Fail("image too large", f"{label}: image too large (decompression bomb guard)")
    except UnidentifiedImageError:
        raise _Fail("not an image", f"{label}: not an image file")
    except (OSError, SyntaxError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _Fail("truncated image" if "truncat" in first.lower() else "unreadable", f"{label}: unreadable image ({first})")
    if size[0] * size[1] > MAX_PIXELS:
        raise _Fail("image too large", f"{label}: image too large ({size[0]}x{size[1]}, limit {MAX_PIXELS // 1_000_000} MP)")
    return mode, size


class _Fail(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _load_reason(message: str) -> str:
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


_MODE_NOTES = {"L": "grayscale", "LA": "grayscale", "1": "grayscale (1-bit)", "I": "grayscale (32-bit)",
               "I;16": "grayscale (16-bit)", "I;16B": "grayscale (16-bit)", "I;16L": "grayscale (16-bit)",
               "F": "grayscale (float)", "CMYK": "CMYK", "YCbCr": "YCbCr", "LAB": "Lab", "P": "palette",
               "PA": "palette", "RGBA": "RGBA"}


def _png_bytes(image) -> bytes:
    """PNG encoding exactly as `face3d.image_io.save_png` writes it (the driver writes atomically)."""
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    return buf.getvalue()


def process_source(item: dict, cfg: dict) -> dict:
    """Fit, texture and render one source. Never raises for a bad input: the failure becomes a row.

    Returns {"index", "source", "rows": [...], "images": {relative path: PNG bytes}, "pid", "rss_kb", "peak_kb"}.
    """
    t0 = time.perf_counter()
    times = {c: None for c in TIMING_COLUMNS}
    base = {"source": item["source"], "identity": item["identity"], "method": cfg["method"]}
    images: dict[str, bytes] = {}
    rows: list[dict] = []
    faces_n = None
    try:
        if item.get("reason"):
            raise _Fail(item["reason"], item["error"])
        model = _setup_worker(cfg["model"])
        from face3d.alignment import aligned_original
        from face3d.camera import Pose
        from face3d.errors import NoFaceError
        from face3d.fitting import FitConfig
        from face3d.image_io import MAX_SIDE, load_image
        from face3d.landmarks import detect_faces
        from face3d.pipeline import reconstruct_faces
        from face3d.variants import render_variant, variant_record, variants

        path = item["path"]
        kind, why = _entry_problem(path)
        if kind:
            raise _Fail(kind, f"{item['source']}: {why}")
        if not os.access(path, os.R_OK):
            raise _Fail("unreadable", f"{item['source']}: permission denied")
        mode, (w, h) = _probe(path, item["source"])
        notes = []
        if mode in _MODE_NOTES and mode not in ("RGBA", "P"):
            notes.append(f"{_MODE_NOTES[mode]} converted to RGB")
        try:
            image = load_image(path)
        except FaceSynthError as exc:
            raise _Fail(_load_reason(str(exc)), str(exc).replace(path, item["source"], 1)) from None
        if max(w, h) > MAX_SIDE:
            notes.append(f"downscaled from {w}x{h}")
        t1 = time.perf_counter()
        times["seconds_load"] = t1 - t0
        faces = detect_faces(image)
        faces_n = len(faces)
        t2 = time.perf_counter()
        times["seconds_detect"] = t2 - t1
        if not faces:
            raise _Fail("no face", f"{item['source']}: no face found")
        if len(faces) > 1:
            if cfg["multi_face"] == "skip":
                raise _Fail("several faces", f"{item['source']}: {len(faces)} faces found (--multi-face skip)")
            notes.append(f"{len(faces)} faces found; used the largest")
        try:
            rec = reconstruct_faces(image, model, fit_config=FitConfig(dense=cfg["dense"], seed=cfg["seed"]),
                                    source=item["source"])[0]
        except NoFaceError as exc:
            raise _Fail("no face", str(exc)) from None
        t3 = time.perf_counter()
        times["seconds_fit"] = t3 - t2
        poses = [Pose(*p) for p in cfg["poses"]]
        lm_err = round(float(rec.fit.landmark_error), 6)
        note = "; ".join(notes)
        ok = dict(base, status="ok", error="", reason="", note=note, faces=faces_n, fit_landmark_error=lm_err)
        if cfg["keep_original"]:
            rel = f"{item['stem']}_original.png"
            images[rel] = _png_bytes(aligned_original(rec.fit, image, model, cfg["size"]))
            sp = rec.fit.pose
            rows.append(dict(ok, output=rel, kind="original", yaw=round(sp.yaw, 3), pitch=round(sp.pitch, 3),
                             roll=round(sp.roll, 3)))
        # one render per (expression, shape sample); the plain fit when neither flag is given
        flags = SimpleNamespace(expression=cfg.get("expression"), shape_jitter=cfg.get("shape_jitter", 0.0),
                                jitter_samples=cfg.get("jitter_samples", 1), seed=cfg["seed"])
        for variant in variants(rec.fit, model, flags.expression, flags.shape_jitter or 0.0, flags.jitter_samples or 1,
                                flags.seed or 0, f"{item['identity']}/{item['stem']}"):
            views = render_variant(variant, rec, model, poses, cfg["size"])
            view_images = views.images
            if cfg["method"] == "gan":  # the GAN alone: the fit only places the target landmarks and crop
                from ganrefine.capg import load_default_capg, rotate_with_capg

                view_images = rotate_with_capg(load_default_capg(cfg["capg"]).generator, rec.fit, image, model,
                                               poses, cfg["size"])
            elif cfg["method"] == "hybrid":
                from ganrefine.hybrid import load_hybrid_refiner, refine_views

                view_images = refine_views(load_hybrid_refiner(cfg["refiner"]), views)
            vrec = variant_record(variant, model, flags.shape_jitter or 0.0, flags.seed or 0)
            extra = {"expression": vrec["expression"] if cfg.get("expression") else None,
                     "expression_split": vrec["expression_split"] if cfg.get("expression") else None,
                     "shape_jitter": vrec["shape_jitter"] if variant.shape is not None else None,
                     "shape_jitter_norm": vrec.get("shape_jitter_norm")}
            for pose, img in zip(poses, view_images):
                rel = f"{item['stem']}{variant.tag}{_pose_name(pose.yaw, pose.pitch, pose.roll)}.png"
                images[rel] = _png_bytes(img)
                rows.append(dict(ok, output=rel, kind="view", yaw=float(pose.yaw), pitch=float(pose.pitch),
                                 roll=float(pose.roll), **extra))
        times["seconds_render"] = time.perf_counter() - t3
    except _Fail as exc:
        rows, images = [_failed_row(base, exc.reason, str(exc), faces_n)], {}
    except FaceSynthError as exc:
        rows, images = [_failed_row(base, "unreadable", str(exc), faces_n)], {}
    except Exception as exc:  # the batch goes on; the reason is recorded, not a traceback
        first = str(exc).splitlines()[0] if str(exc) else ""
        rows, images = [_failed_row(base, "internal error", f"{item['source']}: internal error: "
                                    f"{type(exc).__name__}: {first}", faces_n)], {}
    times["seconds_total"] = time.perf_counter() - t0
    for r in rows:
        r.update({k: (round(v, 4) if v is not None else None) for k, v in times.items()})
    rss, peak = _rss_kb()
    return {"index": item["index"], "source": item["source"], "rows": [_ordered(r) for r in rows],
            "images": images, "pid": os.getpid(), "rss_kb": rss, "peak_kb": peak}


def _failed_row(base: dict, reason: str, message: str, faces) -> dict:
    return dict(base, output="", kind="", yaw=None, pitch=None, roll=None, fit_landmark_error=None,
                status="failed", error=message.splitlines()[0] if message else reason, reason=reason, note="",
                faces=faces)


def _ordered(row: dict) -> dict:
    return {c: row.get(c) for c in COLUMNS}


# ---------------------------------------------------------------------------------------------
# The manifest (JSONL log + parquet snapshot)


class ManifestLog:
    """OUTPUT/manifest.jsonl: the resume log. Rows of one source go out in one write + fsync."""

    def __init__(self, path: Path):
        from facesynth.manifest import Manifest

        self.path = path
        self._writer = Manifest(path)
        self.by_source: dict[str, list[dict]] = {}
        if path.exists():
            self._load()

    def _load(self) -> None:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            # a torn last line (killed mid-write): cut it off, that source is redone
            keep = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as f:
                f.truncate(keep)
                f.flush()
                os.fsync(f.fileno())
        for row in self._writer.read():
            if "source" in row:
                self._add(row)

    def _add(self, row: dict) -> None:
        rows = self.by_source.setdefault(row["source"], [])
        if row.get("status") == "ok":
            rows[:] = [r for r in rows if r.get("status") == "ok" and r.get("output") != row.get("output")]
            rows.append(row)
        elif not any(r.get("status") == "ok" for r in rows):
            rows[:] = [row]  # the latest failure replaces older ones

    def append(self, rows: list[dict]) -> None:
        self._writer.append(rows)
        for r in rows:
            self._add(r)

    def status(self, source: str, expected_ok_rows: int | None = None) -> str | None:
        """'ok', 'failed' or None (not done: no rows, or fewer ok rows than a complete source has)."""
        rows = self.by_source.get(source)
        if not rows:
            return None
        if rows[0].get("status") != "ok":
            return "failed"
        return "ok" if expected_ok_rows is None or len(rows) >= expected_ok_rows else None

    def ordered_rows(self, order: dict[str, int]) -> list[dict]:
        big = len(order)
        keys = sorted(self.by_source, key=lambda s: (order.get(s, big), s))
        out = []
        for s in keys:
            rows = self.by_source[s]
            # views in output-name order with the original first: the same order whatever the run
            out.extend(sorted(rows, key=lambda r: (r.get("kind") != "original", r.get("output") or "")))
        return out


def write_parquet(path: Path, rows: list[dict]) -> None:
    """Write the rows as parquet via a temp file + rename: readers see the old or the new file, never half."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from face3d.image_io import atomic_write_bytes

    schema = pa.schema([
        ("source", pa.string()), ("identity", pa.string()), ("output", pa.string()), ("kind", pa.string()),
        ("yaw", pa.float64()), ("pitch", pa.float64()), ("roll", pa.float64()), ("method", pa.string()),
        ("fit_landmark_error", pa.float64()), ("status", pa.string()), ("error", pa.string()),
        ("reason", pa.string()), ("note", pa.string()), ("faces", pa.int32()), ("expression", pa.string()),
        ("expression_split", pa.bool_()), ("shape_jitter", pa.float64()), ("shape_jitter_norm", pa.float64()),
    ] + [(c, pa.float64()) for c in TIMING_COLUMNS])
    cols = {name: [r.get(name) for r in rows] for name in schema.names}
    table = pa.Table.from_pydict(cols, schema=schema)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    atomic_write_bytes(path, sink.getvalue().to_pybytes())


def read_manifest(output: str | os.PathLike) -> list[dict]:
    """The rows of OUTPUT/manifest.parquet as dicts."""
    import pyarrow.parquet as pq

    return pq.read_table(Path(output) / "manifest.parquet").to_pylist()


# ---------------------------------------------------------------------------------------------
# Driver


@dataclass
class AugmentResult:
    output: Path
    selected: int = 0                 # sources in scope (after --limit)
    skipped: int = 0                  # already done before this run
    processed: int = 0                # done in this run
    seconds: float = 0.0              # wall time of the processing loop
    ok_sources: int = 0               # over the whole manifest
    failed_sources: int = 0
    failed_selected: int = 0
    views: int = 0
    reasons: dict = field(default_factory=dict)
    notes: dict = field(default_factory=dict)
    rows: int = 0
    workers: dict = field(default_factory=dict)   # pid -> {"first_rss_kb", "first_peak_kb", "last_rss_kb", "last_peak_kb", "items"}
    first_done: float | None = None   # perf_counter of the first and the last finished source
    last_done: float | None = None

    @property
    def rate(self) -> float:
        """Sources per second over the whole processing loop (worker start-up included)."""
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    @property
    def steady_rate(self) -> float:
        """Sources per second between the first and the last finished source (start-up excluded)."""
        if self.processed < 2 or self.last_done is None or self.last_done <= self.first_done:
            return self.rate
        return (self.processed - 1) / (self.last_done - self.first_done)

    def summary_text(self) -> str:
        lines = [f"facesynth augment: {self.ok_sources + self.failed_sources} source(s) in {self.output}: "
                 f"{self.ok_sources} ok ({self.views} images), {self.failed_sources} failed"
                 + (": " + ", ".join(f"{k} {v}" for k, v in sorted(self.reasons.items(), key=lambda kv: (-kv[1], kv[0])))
                    if self.reasons else "")]
        lines.append(f"  this run: {self.processed} processed in {self.seconds:.1f} s ({self.rate:.2f} images/s), "
                     f"{self.skipped} already done")
        if self.notes:
            lines.append("  notes: " + ", ".join(f"{k} {v}" for k, v in sorted(self.notes.items(), key=lambda kv: (-kv[1], kv[0]))))
        lines.append(f"  manifest: {self.output / 'manifest.parquet'} ({self.rows} rows)")
        return "\n".join(lines)


def _check_settings(out: Path, settings: dict) -> None:
    from face3d.image_io import atomic_write_bytes

    path = out / "augment.json"
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = None
        if isinstance(old, dict):
            from facesynth.manifest import changed_setting

            change = changed_setting(old, settings, OUTPUT_SETTINGS)
            if change:
                raise FaceSynthError(f"OUTPUT {out} was made with other settings ({change}); "
                                     "use a new OUTPUT folder or the same flags")
            return
    atomic_write_bytes(path, (json.dumps(settings, indent=2) + "\n").encode())


def _note_kinds(note: str) -> list[str]:
    out = []
    for part in filter(None, (p.strip() for p in note.split(";"))):
        if "faces found" in part:
            out.append("several faces (largest used)")
        elif part.startswith("downscaled"):
            out.append("downscaled")
        elif part.endswith("converted to RGB"):
            out.append(part[: -len(" converted to RGB")])
        elif part != "used the largest":
            out.append(part)
    return out


def augment(opts: AugmentOptions) -> AugmentResult:
    """Run (or resume) an augmentation job; returns counts, timing and per-worker memory."""
    from tqdm import tqdm

    from face3d.image_io import atomic_write_bytes, lock_output_folder, prepare_output_folder, remove_stale_temp_files
    from facesynth.options import check_pose_count

    check_pose_count(opts.yaw, opts.pitch, opts.roll)   # the parser checked it too; this is for direct callers
    inp, out = Path(opts.input), Path(opts.output)
    if out.exists() and not out.is_dir():
        raise FaceSynthError(f"OUTPUT {out}: exists and is not a folder")
    if inp.is_dir():
        ri, ro = os.path.realpath(inp), os.path.realpath(out)
        if ro == ri or ro.startswith(ri + os.sep):
            raise FaceSynthError(f"OUTPUT {out} lies inside INPUT {inp}; choose a folder outside it")
    if opts.backend == "local" and opts.ray_address:
        raise FaceSynthError("--ray-address needs --backend ray")
    sources = list_sources(inp)
    from face3d.morphable_model import load_morphable_model, resolve_model_dir
    from face3d.expressions import expression_version
    from face3d.render import render_version

    model_dir = resolve_model_dir(opts.model)
    model = load_morphable_model(opts.model)  # fail early, in the driver, with a clear message
    poses = [(float(y), float(p), float(r)) for p in opts.pitch for y in opts.yaw for r in opts.roll]
    refiner = None
    if opts.method == "hybrid":
        from ganrefine.hybrid import load_hybrid_refiner

        refiner = load_hybrid_refiner()  # missing weights fail here, before any work
    capg = None
    if opts.method == "gan":
        from ganrefine.capg import load_default_capg

        if opts.expression or (opts.shape_jitter or 0) > 0:
            raise FaceSynthError("--expression / --shape-jitter: not available with --method gan (it edits no 3D model)")
        capg = load_default_capg()
    settings = {"input": os.path.abspath(inp), "yaw": [float(v) for v in opts.yaw],
                "pitch": [float(v) for v in opts.pitch], "roll": [float(v) for v in opts.roll],
                "size": opts.size, "method": opts.method, "render_version": render_version(opts.method),
                "seed": opts.seed, "model": model.name,
                "model_dir": str(model_dir), "dense": opts.dense, "keep_original": opts.keep_original,
                "multi_face": opts.multi_face, "format": 1,
                "expression": [e.text for e in opts.expression] if opts.expression else None,
                "expression_version": expression_version(opts.expression),
                "shape_jitter": float(opts.shape_jitter or 0.0), "jitter_samples": int(opts.jitter_samples or 1),
                "refiner": refiner.path if refiner else None, "refiner_sha256": refiner.sha256 if refiner else None,
                "refiner_inference": refiner.inference if refiner else None,
                "capg_sha256": capg.sha256 if capg else None}
    from face3d.variants import check_expressions

    check_expressions(opts.expression, model)  # unknown blendshape names fail here, before any work
    prepare_output_folder(out, "OUTPUT")  # created and writable, or one line naming it
    lock = lock_output_folder(out, ".augment.lock", f"OUTPUT {out}: another augment run is writing there")
    try:
        _check_settings(out, settings)
        remove_stale_temp_files(out)  # a killed run's temp files: the lock says no run writes them now
        log = ManifestLog(out / "manifest.jsonl")
        selected = sources[: opts.limit] if opts.limit else sources
        order = {s.source: s.index for s in sources}
        todo = []
        n_variants = (len(opts.expression) if opts.expression else 1) * (
            int(opts.jitter_samples or 1) if (opts.shape_jitter or 0) > 0 else 1)
        expected = n_variants * len(poses) + (1 if opts.keep_original else 0)
        for s in selected:
            st = log.status(s.source, expected)
            if st == "ok" or (st == "failed" and not opts.retry_failed):
                continue
            todo.append(s)
        cfg = {"model": os.path.abspath(model_dir), "method": opts.method, "refiner": refiner.path if refiner else None,
               "capg": capg.path if capg else None,
               "poses": poses, "size": opts.size, "dense": opts.dense,
               "seed": opts.seed, "keep_original": opts.keep_original, "multi_face": opts.multi_face,
               "expression": opts.expression, "shape_jitter": float(opts.shape_jitter or 0.0),
               "jitter_samples": int(opts.jitter_samples or 1)}
        result = AugmentResult(output=out, selected=len(selected), skipped=len(selected) - len(todo))
        last_parquet = [time.monotonic(), 0.0]

        def snapshot(force: bool = False):
            now = time.monotonic()
            if not force and now - last_parquet[0] < max(PARQUET_MIN_INTERVAL_S, 20 * last_parquet[1]):
                return
            t = time.perf_counter()
            write_parquet(out / "manifest.parquet", log.ordered_rows(order))
            last_parquet[:] = [time.monotonic(), time.perf_counter() - t]

        bar = tqdm(total=len(todo), desc="augment", unit="img", disable=not opts.progress or not todo,
                   dynamic_ncols=True, smoothing=0.1)
        failed_now = 0

        def consume(res: dict) -> None:
            nonlocal failed_now
            for rel, data in res["images"].items():
                atomic_write_bytes(out / rel, data)
            log.append(res["rows"])          # after the images: a logged source is complete
            if res["rows"] and res["rows"][0]["status"] == "failed":
                failed_now += 1
            w = result.workers.setdefault(res["pid"], {"first_rss_kb": res["rss_kb"], "first_peak_kb": res["peak_kb"], "items": 0})
            w.update(last_rss_kb=res["rss_kb"], last_peak_kb=res["peak_kb"], items=w["items"] + 1)
            result.processed += 1
            result.last_done = time.perf_counter()
            if result.first_done is None:
                result.first_done = result.last_done
            bar.set_postfix(failed=failed_now, refresh=False)
            bar.update(1)
            snapshot()

        t0 = time.perf_counter()
        try:
            items = [asdict(s) for s in todo]
            if not items:
                pass
            elif opts.backend == "ray":
                _run_ray(items, cfg, opts, consume)
            elif opts.workers == 1:
                _run_inline(items, cfg, consume)
            else:
                _run_pool(items, cfg, opts.workers, consume)
        finally:
            result.seconds = time.perf_counter() - t0
            bar.close()
            rows = log.ordered_rows(order)
            if rows or not (out / "manifest.parquet").exists():
                write_parquet(out / "manifest.parquet", rows)
        _tally(result, log, rows, {s.source for s in selected})
        return result
    finally:
        lock.release()


def _tally(result: AugmentResult, log: ManifestLog, rows: list[dict], selected: set) -> None:
    result.rows = len(rows)
    for source, srows in log.by_source.items():
        if srows[0].get("status") == "ok":
            result.ok_sources += 1
            result.views += len(srows)
            for k in _note_kinds(srows[0].get("note") or ""):
                result.notes[k] = result.notes.get(k, 0) + 1
        else:
            result.failed_sources += 1
            reason = srows[0].get("reason") or "failed"
            result.reasons[reason] = result.reasons.get(reason, 0) + 1
            if source in selected:
                result.failed_selected += 1


def _run_inline(items: list[dict], cfg: dict, consume) -> None:
    import torch

    threads = torch.get_num_threads()
    try:
        for item in items:
            consume(process_source(item, cfg))
    finally:
        torch.set_num_threads(threads)


def _run_pool(items: list[dict], cfg: dict, workers: int, consume) -> None:
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    # spawn: forking a process that already runs torch/OpenMP threads can deadlock. The workers
    # die with this process (_init_pool_worker); multiprocessing's resource tracker, which this
    # process and the workers hold a pipe to, then reads EOF and exits too.
    ctx = mp.get_context("spawn")
    window = 2 * workers
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_pool_worker,
                             initargs=(cfg["model"], os.getpid())) as pool:
        pending = set()
        it = iter(items)
        try:
            while True:
                while len(pending) < window:
                    item = next(it, None)
                    if item is None:
                        break
                    pending.add(pool.submit(process_source, item, cfg))
                if not pending:
                    break
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    consume(f.result())
        except BrokenProcessPool:
            raise FaceSynthError("a worker process died (out of memory?); run the same command again to resume") from None
        except BaseException:
            for f in pending:
                f.cancel()
            raise


def _run_ray(items: list[dict], cfg: dict, opts: AugmentOptions, consume) -> None:
    try:
        import ray
    except ImportError:
        raise FaceSynthError("--backend ray needs Ray (pip install 'ray>=2.9')") from None
    import logging

    from face3d.process_utils import child_pids, start_env_reaper, stop_env_reaper

    started = False
    reaper = None
    if not ray.is_initialized():
        kw = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": True}
        if opts.ray_address:
            try:
                ray.init(address=opts.ray_address, **kw)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise FaceSynthError(f"--ray-address {opts.ray_address}: cannot connect ({first})") from None
        else:
            # The local cluster's gcs_server, raylet and monitors die with this process (Ray starts
            # them with the parent-death signal) and its workers follow the raylet within seconds,
            # but the raylet's dashboard and runtime-env agents, on finding it dead, wait up to 60 s
            # to report that to the dead GCS. The reaper kills them once this process is gone, even
            # SIGKILLed: they carry RAY_RAYLET_PID in their environment, which /proc shows only
            # while setproctitle leaves it in place, as SPT_NOENV (inherited through the raylet)
            # tells it to; Ray sets that for its workers, not for its agents.
            noenv = os.environ.get("SPT_NOENV")
            os.environ["SPT_NOENV"] = "1"
            try:
                ray.init(num_cpus=opts.workers, **kw)
            finally:
                if noenv is None:
                    del os.environ["SPT_NOENV"]
                else:
                    os.environ["SPT_NOENV"] = noenv
            raylets = child_pids("raylet")
            if len(raylets) == 1:
                reaper = start_env_reaper("RAY_RAYLET_PID", str(raylets[0]))
        started = True
    try:
        task = ray.remote(num_cpus=1, max_retries=2)(process_source)
        cfg_ref = ray.put(cfg)
        cpus = int(ray.cluster_resources().get("CPU", opts.workers) or opts.workers)
        window = 2 * max(1, cpus)
        pending: dict = {}
        it = iter(items)
        while True:
            while len(pending) < window:
                item = next(it, None)
                if item is None:
                    break
                pending[task.remote(item, cfg_ref)] = item
            if not pending:
                break
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                item = pending.pop(ref)
                try:
                    res = ray.get(ref)
                except Exception as exc:  # a worker crash that survived the retries
                    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    row = _failed_row({"source": item["source"], "identity": item["identity"], "method": cfg["method"]},
                                      "internal error", f"{item['source']}: Ray task failed: {first}", None)
                    row.update({c: None for c in TIMING_COLUMNS})
                    res = {"index": item["index"], "source": item["source"], "rows": [_ordered(row)], "images": {},
                           "pid": -1, "rss_kb": 0, "peak_kb": 0}
                consume(res)
    finally:
        if started:
            ray.shutdown()
        stop_env_reaper(reaper)
