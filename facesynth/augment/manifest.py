"""The manifest of an augment run: OUTPUT/manifest.jsonl, the resume log (`ManifestLog`), and
OUTPUT/manifest.parquet, the same rows in input order (`write_parquet`, `read_manifest`).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from face3d.image_io import atomic_write_bytes
from facesynth.manifest import Manifest

#: The labels of a view row (None on failed and `original` rows): `face3d.labels.ViewLabels.record`,
#: the model coefficients and the camera (`facesynth.api.camera_record`), the crop and the maps' files.
LABEL_COLUMNS = ["align", "landmarks", "landmarks_visible", "arcface_points", "face_box", "identity_coefficients",
                 "expression_coefficients", "camera", "depth_map", "normals_map", "mask_map"]
_POINTS = pa.list_(pa.list_(pa.float64()))
CAMERA_TYPE = pa.struct([("focal", pa.float64()), ("center", pa.list_(pa.float64())), ("rotation", _POINTS),
                         ("translation", pa.list_(pa.float64())), ("crop_transform", _POINTS)])
#: Columns of manifest.parquet, in order. `seconds_*` are timings (the only run-dependent columns).
#: `expression` is the view's expression label (`from-<stem>` for a reference photo's), `expression_from`
#: the reference photo it took (`--expression-from`; None otherwise).
COLUMNS = ["source", "identity", "output", "kind", "yaw", "pitch", "roll", "method", "fit_landmark_error",
           "status", "error", "reason", "note", "faces", "expression", "expression_from", "expression_split",
           "shape_jitter", "shape_jitter_norm", *LABEL_COLUMNS, "seconds_load", "seconds_detect", "seconds_fit", "seconds_render",
           "seconds_total"]
TIMING_COLUMNS = [c for c in COLUMNS if c.startswith("seconds_")]
#: the parquet types of COLUMNS
SCHEMA = pa.schema([
    ("source", pa.string()), ("identity", pa.string()), ("output", pa.string()), ("kind", pa.string()),
    ("yaw", pa.float64()), ("pitch", pa.float64()), ("roll", pa.float64()), ("method", pa.string()),
    ("fit_landmark_error", pa.float64()), ("status", pa.string()), ("error", pa.string()),
    ("reason", pa.string()), ("note", pa.string()), ("faces", pa.int32()), ("expression", pa.string()),
    ("expression_from", pa.string()), ("expression_split", pa.bool_()), ("shape_jitter", pa.float64()),
    ("shape_jitter_norm", pa.float64()), ("align", pa.string()), ("landmarks", _POINTS),
    ("landmarks_visible", pa.list_(pa.bool_())), ("arcface_points", _POINTS), ("face_box", pa.list_(pa.float64())),
    ("identity_coefficients", pa.list_(pa.float64())), ("expression_coefficients", pa.list_(pa.float64())),
    ("camera", CAMERA_TYPE), ("depth_map", pa.string()), ("normals_map", pa.string()), ("mask_map", pa.string()),
] + [(c, pa.float64()) for c in TIMING_COLUMNS])
#: manifest.parquet is rewritten during a run at most this often (and at most 1/20 of the time)
PARQUET_MIN_INTERVAL_S = 60.0


def ordered_row(row: dict) -> dict:
    """`row` with exactly the COLUMNS, in their order (None where it has no value)."""
    return {c: row.get(c) for c in COLUMNS}


def failed_row(base: dict, reason: str, message: str, faces: int | None) -> dict:
    """The one row of a failed source: `base` holds its source, identity and method."""
    return dict(base, output="", kind="", yaw=None, pitch=None, roll=None, fit_landmark_error=None,
                status="failed", error=message.splitlines()[0] if message else reason, reason=reason, note="",
                faces=faces)


class ManifestLog:
    """OUTPUT/manifest.jsonl: the resume log. Rows of one source go out in one write + fsync."""

    def __init__(self, path: Path):
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
    cols = {name: [r.get(name) for r in rows] for name in SCHEMA.names}
    table = pa.Table.from_pydict(cols, schema=SCHEMA)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    atomic_write_bytes(path, sink.getvalue().to_pybytes())


def read_manifest(output: str | os.PathLike) -> list[dict]:
    """The rows of OUTPUT/manifest.parquet as dicts."""
    return pq.read_table(Path(output) / "manifest.parquet").to_pylist()


class ParquetSnapshots:
    """OUTPUT/manifest.parquet rewritten from the log during a run: at most every
    PARQUET_MIN_INTERVAL_S, and never more than 1/20 of the time (the write grows with the rows)."""

    def __init__(self, path: Path, log: ManifestLog, order: dict[str, int]):
        self.path, self.log, self.order = path, log, order
        self.last = time.monotonic()
        self.cost = 0.0

    def maybe_write(self) -> None:
        if time.monotonic() - self.last < max(PARQUET_MIN_INTERVAL_S, 20 * self.cost):
            return
        t = time.perf_counter()
        write_parquet(self.path, self.log.ordered_rows(self.order))
        self.last, self.cost = time.monotonic(), time.perf_counter() - t

    def final(self) -> list[dict]:
        """Write the last snapshot (unless there is nothing to add to one already there); returns its rows."""
        rows = self.log.ordered_rows(self.order)
        if rows or not self.path.exists():
            write_parquet(self.path, rows)
        return rows
