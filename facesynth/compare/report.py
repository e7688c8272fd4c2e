"""What `facesynth compare` writes: DIR/metrics.json, DIR/metrics.csv, DIR/views.csv and
DIR/report.html (one self-contained page: images and plots as base64 PNG data URIs).

Non-finite values (a median that is ``inf`` because most views had no face) and metrics that do
not apply are written as ``null`` in metrics.json and as an empty cell in the CSV files.
"""
from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from face3d.camera import Pose
from face3d.image_io import atomic_write_bytes
from facesynth.compare.metrics import METRIC_NAMES, THRESHOLD

#: The files a run writes into DIR.
OUTPUT_FILES = ("metrics.json", "metrics.csv", "views.csv", "report.html")
#: The columns of views.csv: one row per view, what the medians are made of.
VIEW_COLUMNS = ("photo", "identity", "method", "yaw", "pitch", "face_detected", "identity_to_source", "pose_error")
#: The report's plots: metric -> title (one panel each, against yaw), then seconds per view.
PLOT_TITLES = {"identity_to_source": "identity distance to source (median, lower = kept)",
               "cross_verification": "cross-verification accuracy @0.6",
               "pose_error": "pose error (median, degrees)",
               "realism": "realism: C2ST accuracy (0.5 = indistinguishable)",
               "pixel_realism": "pixel realism: CNN C2ST per |yaw| bin (0.5 = real)"}
STYLE = ("body{font-family:sans-serif;margin:16px;color:#222}table{border-collapse:collapse;margin:6px 0 18px}\n"
         "td,th{border:1px solid #ccc;padding:3px 6px;text-align:center;font-size:12px}\n"
         "img{display:block;margin:auto}.cap{font-size:10px;color:#555}.bad{color:#b00}")


def yaw_key(yaw: float) -> str:
    """A yaw as metrics.json's keys and the CSV files write it: 30.0 -> '30'."""
    return f"{yaw:g}"


def json_ready(obj):
    """Non-finite floats -> None (JSON has no inf/NaN); floats rounded to 6 digits."""
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return round(float(obj), 6) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def thumbnail(image: np.ndarray, box, size: int) -> np.ndarray:
    """The source photo around the face (1.8 x the detector box), square, at ``size`` px."""
    l, t, r, b = box
    cx, cy, s = (l + r) / 2, (t + b) / 2, 1.8 * max(r - l, b - t)
    x0, y0 = int(round(cx - s / 2)), int(round(cy - s / 2))
    x1, y1 = x0 + int(round(s)), y0 + int(round(s))
    H, W = image.shape[:2]
    pad = max(0, -x0, -y0, x1 - W, y1 - H)
    img = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(128, 128, 128)) if pad else image
    crop = img[y0 + pad:y1 + pad, x0 + pad:x1 + pad]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


def png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def image_uri(img: np.ndarray) -> str:
    """An image as a PNG data URI."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img)).save(buf, format="PNG", optimize=True)
    return png_data_uri(buf.getvalue())


def number_text(v, digits=3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def metric_rows(metrics: dict, method: str) -> list[tuple[str, dict]]:
    """("all", values), then (yaw, values) per yaw: one method's rows of the metrics table."""
    return [("all", metrics[method]["all"])] + list(metrics[method]["per_yaw"].items())


def _plot_metric(ax, metrics: dict, methods: list[str], yaw_keys: list[str], name: str, title: str) -> None:
    """One panel: `name` against yaw, a line per method and a dashed line at its overall value."""
    ys = [float(y) for y in yaw_keys]
    for m in methods:
        vals = [metrics[m]["per_yaw"][y][name] for y in yaw_keys]
        pts = [(x, v) for x, v in zip(ys, vals) if v is not None]
        line = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=m)[0] if pts else None
        allv = metrics[m]["all"][name]
        if allv is not None:
            ax.axhline(allv, ls="--", lw=0.8, color=line.get_color() if line else None, alpha=0.7)
    if name == "identity_to_source":
        ax.axhline(THRESHOLD, color="grey", lw=0.8, ls=":")
    if name in ("realism", "pixel_realism"):
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.set_ylim(0.0, 1.05)
    if name == "cross_verification":
        ax.set_ylim(0.0, 1.05)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("yaw (deg)")
    ax.set_xlim(min(ys) - 5, max(ys) + 5)
    ax.grid(alpha=0.3)


def plots_uri(metrics: dict, methods: list[str], yaw_keys: list[str]) -> str | None:
    """One PNG with the metrics against yaw (one line per method) and seconds per view; None without matplotlib."""
    try:
        # deferred: matplotlib is optional, and pyplot's import (~0.9 s) is needed only for this plot
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # deferred, as matplotlib above
    except ImportError:
        return None
    fig, axes = plt.subplots(1, len(PLOT_TITLES) + 1, figsize=(4.4 * (len(PLOT_TITLES) + 1), 4.2))
    for ax, (name, title) in zip(axes, PLOT_TITLES.items()):
        _plot_metric(ax, metrics, methods, yaw_keys, name, title)
    axes[0].legend(fontsize=8)
    spv = [metrics[m]["all"]["seconds_per_view"] or 0.0 for m in methods]
    axes[-1].bar(methods, spv, color=[f"C{i}" for i in range(len(methods))])
    axes[-1].set_title("seconds per view", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return png_data_uri(buf.getvalue())


def _metrics_section(metrics: dict, methods: list[str], yaw_keys: list[str]) -> list[str]:
    """The plot and the table of every method's metrics, overall and per yaw."""
    plot = plots_uri(metrics, methods, yaw_keys)
    parts = [f"<h2>Metrics</h2><img alt='metrics plot' src='{plot}'>" if plot
             else "<h2>Metrics</h2><p>(plots need matplotlib: pip install matplotlib)</p>",
             "<table><tr><th>method</th><th>yaw</th>" + "".join(f"<th>{n}</th>" for n in METRIC_NAMES) + "</tr>"]
    for m in methods:
        for y, row in metric_rows(metrics, m):
            parts.append(f"<tr><td>{html.escape(m)}</td><td>{html.escape(y)}</td>" + "".join(
                f"<td>{number_text(row[n])}</td>" for n in METRIC_NAMES) + "</tr>")
    parts.append("</table>")
    return parts


def _view_cell(method: str, v: dict) -> str:
    cap = (f"d={v['distance']:.2f} · pose err {v['pose_error']:.1f}°" if v["detected"]
           else "<span class='bad'>no face found</span>")
    return f"<td><img alt='{html.escape(method)} view' src='{image_uri(v['image'])}'><div class='cap'>{cap}</div></td>"


def _photo_table(rel: str, src: dict, views_by_method: dict, methods: list[str], poses: list[Pose]) -> list[str]:
    """One photo's table: its thumbnail, then a row of views per method (one column per pose)."""
    esc = html.escape
    parts = ["<table><tr><th>source</th><th>method</th>" + "".join(
        f"<th>yaw {esc(yaw_key(p.yaw))}" + (f", pitch {p.pitch:g}" if p.pitch else "") + "</th>" for p in poses)
        + "</tr>"]
    for k, m in enumerate(methods):
        row = "<tr>"
        if k == 0:
            row += (f"<td rowspan='{len(methods)}'><img alt='source photo' src='{image_uri(src['thumb'])}'>"
                    f"<div class='cap'>{esc(rel)}</div></td>")
        row += f"<th>{esc(m)}</th>"
        vs = views_by_method.get(m)
        if not vs:
            parts.append(row + f"<td colspan='{len(poses)}' class='bad'>failed</td></tr>")
            continue
        parts.append(row + "".join(_view_cell(m, v) for v in vs) + "</tr>")
    parts.append("</table>")
    return parts


def report_html(result: dict, views: list[dict], sources: dict, methods: list[str], poses: list[Pose]) -> str:
    """DIR/report.html: the metrics, the failures, and every photo's views grouped by identity."""
    metrics, info = result["methods"], result["info"]
    yaw_keys = list(dict.fromkeys(yaw_key(p.yaw) for p in poses))
    esc = html.escape
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>facesynth compare</title><style>",
             STYLE, "</style></head><body>",
             (f"<h1>facesynth compare</h1><p>{esc(info['input'])}: {info['photos_ok']} of {info['photos']} photo(s), "
              f"methods {esc(', '.join(methods))}, {len(poses)} pose(s), {info['size']} px.</p>")]
    parts += _metrics_section(metrics, methods, yaw_keys)
    if info["failures"]:
        parts.append("<h2>Failures</h2><ul>" + "".join(f"<li class='bad'>{esc(f['error'])}</li>" for f in info["failures"])
                     + "</ul>")
    by_photo: dict[str, dict] = {}
    for v in views:
        by_photo.setdefault(v["photo"], {}).setdefault(v["method"], []).append(v)
    for ident in sorted({s["identity"] for s in sources.values()}):
        parts.append(f"<h2>{esc(ident)}</h2>")
        for rel, src in sources.items():
            if src["identity"] == ident:
                parts += _photo_table(rel, src, by_photo.get(rel, {}), methods, poses)
    parts.append("<details><summary>Settings and counts (metrics.json's info)</summary><pre>"
                 + esc(json.dumps(info, indent=1)) + "</pre></details></body></html>")
    return "\n".join(parts)


def csv_text(header, rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def metrics_csv(result: dict, methods: list[str]) -> str:
    """DIR/metrics.csv: a row per method and yaw ("all" first)."""
    return csv_text(["method", "yaw", *METRIC_NAMES],
                    ([m, y, *("" if row[n] is None else row[n] for n in METRIC_NAMES)]
                     for m in methods for y, row in metric_rows(result["methods"], m)))


def views_csv(views: list[dict]) -> str:
    """DIR/views.csv: a row per view with its detection, distance and pose error."""
    return csv_text(VIEW_COLUMNS, ([v["photo"], v["identity"], v["method"], v["yaw"], v["pitch"], int(v["detected"]),
                                    *("" if not math.isfinite(x) else round(x, 6) for x in (v["distance"], v["pose_error"]))]
                                   for v in views))


def write_outputs(out: Path, result: dict, views: list[dict], sources: dict, methods: list[str],
                  poses: list[Pose]) -> None:
    """Write the four files of `OUTPUT_FILES` into `out`, each atomically."""
    out.mkdir(parents=True, exist_ok=True)
    texts = {"metrics.json": json.dumps(result, indent=2) + "\n", "metrics.csv": metrics_csv(result, methods),
             "views.csv": views_csv(views), "report.html": report_html(result, views, sources, methods, poses)}
    for name in OUTPUT_FILES:
        atomic_write_bytes(out / name, texts[name].encode())
        os.chmod(out / name, 0o644)  # the temporary file's 0600 is no mode for a report
