"""Expression from a reference photo (issue 29): is B's expression put on A faithful, and is A kept?

    cd benchmarks && ../.venv/bin/python bench_expression_transfer.py [--pairs-per-photo 4] [--n-lfw 40]
                     [--seed 0] [--quick] [--save-views DIR] [--json PATH] [--target NAME=VALUE]

Photos: the 17 test photos of ../shared/data/faces and `--n-lfw` held-out LFW photos, one per
person (the selection of bench_whole_photo.py: `_common.heldout_lfw_sample`, seed 0; a photo the
fit finds no face in is left out and listed). Each photo is fitted once (default fit, largest face:
`face3d.pipeline.reconstruct_faces`) and that fit is both the face A that takes an expression and
the reference B that gives one: `face3d.reference_face.reference_from_fit`, the expression of its
re-split fit and its pose, what `fit_reference` computes from the same photo (it calls it on its
own fit of the same landmarks, with the same settings: one fit, not two).

Pairs: each photo A with `--pairs-per-photo` references B drawn (`random.Random(seed)`, in photo
order) among the photos of other people. A-with-B's-expression (A<-B) is rendered as
`facesynth.rotate(A, expression_from=B, options=RenderOptions(method="3d", size=256))` renders it
(`facesynth.api.render_face` with `with_reference_expression`; whole-photo background, the default)
at A's own photo pose (its fit's), and so are A's `fitted` view (its own expression, the default
render) and A<-A (A with its own reference expression: the round trip of the transfer path).

Measured with dlib (68 landmarks: HOG upsample 1 on the 256-px renders, the fit's detection on the
photos): mouth width = corner-to-corner / outer-eye-corner distance; mouth gap = mean inner-lip gap
(61-67, 62-66, 63-65) / mouth width; eye aspect ratio = the standard EAR, mean of both eyes
(`bench_expressions.mouth_eye_metrics`). Error of a ratio against B's photo: relative,
|r - r(B)| / r(B), for width and EAR; ABSOLUTE for the gap, |g - g(B)| in units of mouth width
(a closed mouth has g(B) ~ 0). Per ratio: the median error of the transfer beside that of A's own
photo (the gap the transfer has to close) and the share of pairs where the transfer is closer; the
transfer against B's fitted view (what the model made of B); A's fitted view and A<-A against A's
photo (the render's and the round trip's own error); and the share of B's difference carried
(least-squares slope of r(A<-B) - r(A) on r(B) - r(A): 1 = B's value, 0 = A's kept). A transfer
without a face counts as an infinite error (never closer). Split by the set of A and of B.

Identity (dlib's descriptor, torch port `ganrefine.identity.IdentityEncoder`): distance of the
transfer to A's photo beside A's fitted view's and A<-A's, and beside the distance of A's photo to
up to three other photos of the same person (their median; the test photos of the same folder, the
person's other LFW photos; the yardstick of how far a real change of expression, light and pose
moves the descriptor); and to B's photo (min, count under 0.6, and how often it is nearer B than
A's photo is), beside the distance of A's photo to B's and of A's fitted view (A's own expression,
no transfer) to B's photo: where that view is already under 0.6 from B, the 3D stage and not the
transfer brought A near B.

Re-split check (per photo, no target): the 68-point reprojection error of the fit and of its
re-split (`expression_split`, what every transfer renders A with) and the size of the re-split's
landmark face / the fit's.

Targets (issue 29), over all pairs; exit 1 when one is missed (`--target NAME=VALUE` changes one):
- each ratio's median transfer error < the median error of A's photo (this run);
- median distance of the transfer to A's photo < the median distance of A's photo to A's other
  photos (this run), and every transfer under 0.6 from A's photo;
- no transfer under 0.6 from B's photo (all pairs are of different people).

`--quick`: 4 test photos, 3 LFW photos, 2 pairs each (a check that it runs): about 3-5 minutes.
The full run (56 photos fitted, 224 pairs) took 33 and 60 minutes of wall time in two runs on this
project's 2-core machine while other jobs shared it (load average 5-9; 21 and 32 CPU-minutes; the
fits about 60-70% of it, renders and dlib the rest).
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from _common import RESULTS, Targets, add_target_option, face_photos, heldout_lfw_sample, largest_face, lfw_dir
from bench_expressions import mouth_eye_metrics
from face3d.expressions import expression_split
from face3d.fitting import FitConfig
from face3d.image_io import load_image
from face3d.landmarks import detect_faces, outer_eye_distance
from face3d.morphable_model import load_morphable_model
from face3d.pipeline import Reconstruction
from face3d.reference_face import ReferenceFace, reference_from_fit
from facesynth.api import RenderOptions, render_face, with_reference_expression
from facesynth.compare.metrics import THRESHOLD, detect_view_face
from facesynth.compare.report import json_ready
from facesynth.methods import load_method
from ganrefine.identity import IdentityEncoder, image_tensor

SIZE = 256
#: the ratios compared: key of `mouth_eye_metrics`, and whether its error is relative to B's value
RATIOS = {"mouth_width": ("width", True), "mouth_gap": ("gap_ratio", False), "eye_aspect": ("ear", True)}
GROUPS = ("all", "A:faces", "A:lfw", "B:faces", "B:lfw")


@dataclass
class Photo:
    """One fitted photo, as A and as B: its fit, the reference it gives, its ratios and descriptor."""

    set: str
    path: Path
    image: np.ndarray
    rec: Reconstruction
    ref: ReferenceFace
    ratios: dict
    desc: np.ndarray
    split: dict
    other: float = float("nan")                     # median distance of the photo to its person's other photos
    fitted: dict = field(default_factory=dict)      # A's fitted view: ratios, desc (filled when rendered)
    own: dict = field(default_factory=dict)         # A with its own reference expression (A<-A)

    @property
    def name(self) -> str:
        return f"{self.path.parent.name}/{self.path.name}"

    @property
    def person(self) -> str:
        return self.path.parent.name


def ratios_of(landmarks: np.ndarray) -> dict:
    m = mouth_eye_metrics(np.asarray(landmarks, np.float64))
    return {k: float(m[key]) for k, (key, _) in RATIOS.items()}


def split_check(fit, model) -> dict:
    """How the re-split fit (what a transfer renders A with) sits on the photo against the fit: the
    68-point reprojection error / outer-eye distance of each (its own face, its own expression; the
    iBUG points the model has), and the size of the split's landmark face / the fit's (RMS about the
    centroid, model space)."""
    split = expression_split(fit, model)
    idx = np.asarray(model.landmark_vertices)
    have = idx >= 0
    q = np.asarray(fit.landmarks, np.float64)[have]
    out = {}
    for name, f in (("fit", fit), ("split", split)):
        p = f.project(model)[0, :, :2].numpy()[idx[have]]
        out[f"reprojection_{name}"] = float(np.linalg.norm(p - q, axis=1).mean() / outer_eye_distance(fit.landmarks))
    size = []
    for f in (fit, split):
        v = f.vertices(model)[0].numpy()[idx[have]]
        size.append(float(np.sqrt(((v - v.mean(0)) ** 2).sum(1).mean())))
    out["size_split_over_fit"] = size[1] / size[0]
    return out


def embed(encoder: IdentityEncoder, images, landmarks) -> np.ndarray:
    with torch.inference_mode():
        return encoder.embed([image_tensor(im) for im in images], list(landmarks)).double().numpy()


def other_photos(set_name: str, path: Path, limit: int = 3) -> list[Path]:
    """Up to `limit` other photos of the same person: the test photos in the same folder, or the
    person's other LFW photos."""
    if set_name == "faces":
        same = [p for p in face_photos() if p.parent == path.parent and p != path]
    else:
        from ganrefine.pairs import lfw_photos_by_identity

        same = [p for p in lfw_photos_by_identity(lfw_dir()).get(path.parent.name, []) if p != path]
    return sorted(same)[:limit]


def other_photo_distance(set_name: str, path: Path, desc: np.ndarray, encoder) -> float:
    """The median dlib distance of a photo to its person's other photos (largest face each; nan
    when the person has no other photo with a face): how far a real change of expression, light
    and pose moves the descriptor, the yardstick of the transfer's distance to A."""
    dists = []
    for q in other_photos(set_name, path):
        image = load_image(q)
        faces = detect_faces(image)
        if faces:
            dists.append(float(np.linalg.norm(embed(encoder, [image], [faces[0].landmarks])[0] - desc)))
    return median(dists) if dists else float("nan")


def fit_photos(photos, model, encoder, fit_config) -> tuple[list[Photo], list[dict]]:
    """Every photo fitted once (largest face); those without a face are listed as skipped."""
    out, skipped = [], []
    for k, (set_name, path) in enumerate(photos):
        t0 = time.perf_counter()
        image = load_image(path)
        rec = largest_face(image, model, path, skipped, fit_config=fit_config)
        if rec is None:
            print(f"  [{k + 1}/{len(photos)}] {set_name} {path.name}: left out ({skipped[-1]['error']})", flush=True)
            continue
        ref = reference_from_fit(rec.fit, model, str(path), rec.faces_found, rec.face.box)
        desc = embed(encoder, [image], [rec.face.landmarks])[0]
        out.append(Photo(set_name, Path(path), image, rec, ref, ratios_of(rec.face.landmarks), desc,
                         split_check(rec.fit, model), other_photo_distance(set_name, Path(path), desc, encoder)))
        print(f"  [{k + 1}/{len(photos)}] {set_name} {path.parent.name}/{path.name} fitted in "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
    return out, skipped


def choose_pairs(photos: list[Photo], per_photo: int, seed: int) -> list[tuple[int, int]]:
    """(a, b) indices: each A with `per_photo` Bs of other people, a seeded draw in photo order."""
    rng = random.Random(seed)
    pairs = []
    for a, pa in enumerate(photos):
        others = [b for b, pb in enumerate(photos) if pb.person != pa.person]
        pairs += [(a, b) for b in rng.sample(others, min(per_photo, len(others)))]
    return pairs


def measure_views(views, encoder) -> list[dict]:
    """Per view: detected, its ratios and its descriptor (dlib's largest face in the view)."""
    faces = [detect_view_face(v) for v in views]
    found = [i for i, f in enumerate(faces) if f is not None]
    descs = embed(encoder, [views[i] for i in found], [faces[i].landmarks for i in found]) if found else []
    out = [{"detected": False} for _ in views]
    for i, d in zip(found, descs):
        out[i] = {"detected": True, "ratios": ratios_of(faces[i].landmarks), "desc": d}
    return out


def render_photo(pa: Photo, bs: list[Photo], model, maker, encoder, save: Path | None) -> list[dict]:
    """A's fitted view, A with each B's expression and A with its own (the reference path's round
    trip), at A's photo pose: the fitted and own views' figures go into `pa.fitted` and `pa.own`;
    one measurement per B is returned."""
    pose = [pa.ref.pose]
    base = RenderOptions(method="3d", size=SIZE)
    fitted = render_face(pa.rec, pa.image, model, pose, base, maker)[0].images[0]
    opts = base
    for pb in bs + [pa]:
        opts = with_reference_expression(opts, pb.ref, model)
    faces = render_face(pa.rec, pa.image, model, pose, opts, maker)
    assert [f.variant.expression.reference for f in faces] == [pb.ref.source for pb in bs + [pa]]
    views = [fitted] + [np.asarray(f.images[0]) for f in faces]
    measured = measure_views(views, encoder)
    pa.fitted, pa.own = measured[0], measured[-1]
    measured = measured[:-1]
    if save is not None:
        save.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.concatenate(views, axis=1)).save(save / f"{pa.person}__{pa.path.stem}.png")
    return measured[1:]


def ratio_error(name: str, value, ref) -> float:
    """|value - ref| / ref (relative ratios) or |value - ref| (the gap); inf when not measured."""
    if value is None or ref is None:
        return float("inf")
    relative = RATIOS[name][1]
    return abs(value - ref) / ref if relative else abs(value - ref)


def pair_row(pa: Photo, pb: Photo, m: dict) -> dict:
    """The figures of one pair (A, B) from the transfer's measurement `m`."""
    t = m.get("ratios", {})
    fa = pa.fitted.get("ratios", {})
    fb = pb.fitted.get("ratios", {})
    own = pa.own.get("ratios", {})
    row = {"a": pa.name, "b": pb.name, "a_set": pa.set, "b_set": pb.set, "detected": m["detected"],
           "ratios": {"transfer": t or None, "a_photo": pa.ratios, "b_photo": pb.ratios,
                      "a_fitted": fa or None, "b_fitted": fb or None, "a_own": own or None}}
    err = {}
    for r in RATIOS:
        err[r] = {"transfer": ratio_error(r, t.get(r), pb.ratios[r]),
                  "a_photo": ratio_error(r, pa.ratios[r], pb.ratios[r]),
                  "transfer_vs_b_fitted": ratio_error(r, t.get(r), fb.get(r)),
                  "a_fitted_vs_a_photo": ratio_error(r, fa.get(r), pa.ratios[r]),
                  "a_own_vs_a_photo": ratio_error(r, own.get(r), pa.ratios[r])}
    row["errors"] = err

    def dist(x, y):
        return float(np.linalg.norm(x - y)) if x is not None and y is not None else float("inf")

    row["distance"] = {"transfer_to_a": dist(m.get("desc"), pa.desc),
                       "a_fitted_to_a": dist(pa.fitted.get("desc"), pa.desc),
                       "a_own_to_a": dist(pa.own.get("desc"), pa.desc),
                       "transfer_to_b": dist(m.get("desc"), pb.desc),
                       "a_fitted_to_b": dist(pa.fitted.get("desc"), pb.desc),
                       "a_photo_to_b": dist(pa.desc, pb.desc),
                       "a_photo_to_a_other": pa.other}
    return row


def median(values) -> float:
    v = list(values)
    return float(np.median(v)) if v else float("nan")


def carried(rows: list[dict], r: str) -> float:
    """How much of the difference between B's photo and A's the transfer carries: the least-squares
    slope (through 0) of r(A<-B) - r(A) on r(B) - r(A), photos' ratios, over the detected
    transfers: 1 = B's value, 0 = A's own kept."""
    xy = [(row["ratios"]["b_photo"][r] - row["ratios"]["a_photo"][r],
           row["ratios"]["transfer"][r] - row["ratios"]["a_photo"][r]) for row in rows if row["detected"]]
    x, y = np.array([v[0] for v in xy]), np.array([v[1] for v in xy])
    return float(x @ y / (x @ x)) if len(xy) and x @ x > 0 else float("nan")


def summarize(rows: list[dict]) -> dict:
    """The figures of a set of pairs (see the module docstring)."""
    n = len(rows)
    out = {"pairs": n, "transfers_detected": sum(r["detected"] for r in rows)}
    for r in RATIOS:
        e = [row["errors"][r] for row in rows]
        out[r] = {"transfer_error_median": median(x["transfer"] for x in e),
                  "a_photo_error_median": median(x["a_photo"] for x in e),
                  "share_transfer_closer": float(np.mean([x["transfer"] < x["a_photo"] for x in e])) if n else float("nan"),
                  "transfer_vs_b_fitted_error_median": median(x["transfer_vs_b_fitted"] for x in e),
                  "a_fitted_vs_a_photo_error_median": median(x["a_fitted_vs_a_photo"] for x in e),
                  "a_own_vs_a_photo_error_median": median(x["a_own_vs_a_photo"] for x in e),
                  "carried": carried(rows, r)}
    d = [row["distance"] for row in rows]
    to_b = [x["transfer_to_b"] for x in d]
    finite_b = [x for x in to_b if np.isfinite(x)]
    out["identity"] = {
        "transfer_to_a_median": median(x["transfer_to_a"] for x in d),
        "a_fitted_to_a_median": median(x["a_fitted_to_a"] for x in d),
        "a_own_to_a_median": median(x["a_own_to_a"] for x in d),
        "a_photo_to_a_other_median": median(x["a_photo_to_a_other"] for x in d if np.isfinite(x["a_photo_to_a_other"])),
        "transfer_nearer_a_than_a_other_share": float(np.mean(
            [x["transfer_to_a"] < x["a_photo_to_a_other"] for x in d if np.isfinite(x["a_photo_to_a_other"])] or [np.nan])),
        "difference_median": median(x["transfer_to_a"] - x["a_fitted_to_a"] for x in d
                                    if np.isfinite(x["transfer_to_a"]) and np.isfinite(x["a_fitted_to_a"])),
        "transfer_to_a_share_under_0.6": float(np.mean([x["transfer_to_a"] < THRESHOLD for x in d])) if n else float("nan"),
        "transfer_to_b_min": min(finite_b) if finite_b else float("nan"),
        "transfer_to_b_median": median(finite_b),
        "transfer_to_b_under_0.6": sum(x < THRESHOLD for x in finite_b),
        "transfer_to_b_share_under_0.6": sum(x < THRESHOLD for x in finite_b) / n if n else float("nan"),
        "transfer_to_b_under_0.6_a_photo_not": sum(x["transfer_to_b"] < THRESHOLD <= x["a_photo_to_b"] for x in d),
        "a_fitted_to_b_min": min((x["a_fitted_to_b"] for x in d if np.isfinite(x["a_fitted_to_b"])), default=float("nan")),
        "a_fitted_to_b_under_0.6": sum(x["a_fitted_to_b"] < THRESHOLD for x in d),
        "transfer_to_b_under_0.6_a_fitted_not": sum(x["transfer_to_b"] < THRESHOLD <= x["a_fitted_to_b"] for x in d),
        "transfer_nearer_b_than_a_photo_share": float(np.mean([x["transfer_to_b"] < x["a_photo_to_b"] for x in d]))
        if n else float("nan"),
        "a_photo_to_b_median": median(x["a_photo_to_b"] for x in d),
        "a_photo_to_b_min": min((x["a_photo_to_b"] for x in d), default=float("nan"))}
    return out


def group_tables(rows: list[dict]) -> dict:
    def member(row, g):
        if g == "all":
            return True
        side, s = g.split(":")
        return row[f"{side.lower()}_set"] == s

    return {g: summarize([r for r in rows if member(r, g)]) for g in GROUPS}


def print_tables(tab: dict) -> None:
    print(f"\n{'':48}" + "".join(f"{g:>9}" for g in GROUPS))
    counts = [f"{t['pairs']} ({t['transfers_detected']})" for t in tab.values()]
    print(f"  {'pairs (transfer detected)':46}" + "".join(f"{c:>9}" for c in counts))
    for r in RATIOS:
        unit = "abs" if not RATIOS[r][1] else "rel"
        for key, label in (("transfer_error_median", "A<-B vs B photo"), ("a_photo_error_median", "A photo vs B photo"),
                           ("share_transfer_closer", "share transfer closer"),
                           ("transfer_vs_b_fitted_error_median", "A<-B vs B fitted view"),
                           ("a_fitted_vs_a_photo_error_median", "A fitted vs A photo"),
                           ("a_own_vs_a_photo_error_median", "A<-A vs A photo"),
                           ("carried", "carried (slope)")):
            print(f"  {f'{r} ({unit}) {label}':46}" + "".join(f"{t[r][key]:>9.3f}" for t in tab.values()))
    for key in ("transfer_to_a_median", "a_fitted_to_a_median", "a_own_to_a_median", "difference_median",
                "a_photo_to_a_other_median", "transfer_nearer_a_than_a_other_share",
                "transfer_to_a_share_under_0.6",
                "transfer_to_b_min", "transfer_to_b_median", "transfer_to_b_under_0.6",
                "transfer_to_b_under_0.6_a_photo_not", "a_fitted_to_b_min", "a_fitted_to_b_under_0.6",
                "transfer_to_b_under_0.6_a_fitted_not", "transfer_nearer_b_than_a_photo_share", "a_photo_to_b_median",
                "a_photo_to_b_min"):
        print(f"  {'dist ' + key:46}" + "".join(f"{t['identity'][key]:>9.3f}" for t in tab.values()))


def split_summary(photos: list[Photo]) -> dict:
    """Medians over the photos of `split_check` (all, test photos, LFW)."""
    out = {}
    for g in ("all", "faces", "lfw"):
        ps = [p.split for p in photos if g in ("all", p.set)]
        out[g] = {k: median(x[k] for x in ps) for k in ("reprojection_fit", "reprojection_split", "size_split_over_fit")}
        out[g]["photos"] = len(ps)
        out[g]["size_split_over_fit_max"] = max((x["size_split_over_fit"] for x in ps), default=float("nan"))
    for g, t in out.items():
        print(f"  re-split vs fit, {g} ({t['photos']} photos): landmark reprojection / eye distance "
              f"{t['reprojection_fit']:.4f} (fit) -> {t['reprojection_split']:.4f} (re-split); face size "
              f"x{t['size_split_over_fit']:.3f} (median), x{t['size_split_over_fit_max']:.3f} (max)")
    return out


def photo_record(p: Photo, model) -> dict:
    """What the figure script reads: the photo's set, its re-split expression and pose, its ratios."""
    names = model.expression_names
    return {"photo": p.name, "path": str(p.path), "set": p.set, "person": p.person, "ratios": p.ratios,
            "pose": p.ref.pose.as_tuple(), "fitted_view": p.fitted.get("ratios"),
            "fitted_view_detected": p.fitted.get("detected", False), "split_check": p.split,
            "expression": {n: round(float(b), 4) for n, b in zip(names, p.ref.expression) if b > 1e-4}}


def check_targets(targets: Targets, tab: dict) -> None:
    t = tab["all"]
    for r in RATIOS:
        unit = "" if RATIOS[r][1] else " (abs, mouth widths)"
        targets.check(f"{r}_transfer_error_median", t[r]["transfer_error_median"], "<", t[r]["a_photo_error_median"],
                      note=f"(target: A's photo vs B's, this run{unit}; transfer closer in "
                           f"{t[r]['share_transfer_closer']:.0%} of pairs)")
    i = t["identity"]
    targets.check("transfer_to_a_distance_median", i["transfer_to_a_median"], "<", i["a_photo_to_a_other_median"],
                  note=f"(target: A's photo to A's other photos, this run; A's fitted view "
                       f"{i['a_fitted_to_a_median']:.3f}, A<-A {i['a_own_to_a_median']:.3f})")
    targets.check("transfer_to_a_share_under_0.6", i["transfer_to_a_share_under_0.6"], ">=", 1.0,
                  note="(every transfer verified as A by dlib's threshold)")
    targets.check("transfers_under_0.6_from_b", i["transfer_to_b_under_0.6"], "<=", 0,
                  note=f"(different people; min distance {i['transfer_to_b_min']:.3f}, A's photo to B's min "
                       f"{i['a_photo_to_b_min']:.3f}; under 0.6 where A's photo is not: "
                       f"{i['transfer_to_b_under_0.6_a_photo_not']}; A's own fitted view under 0.6 from B: "
                       f"{i['a_fitted_to_b_under_0.6']} (min {i['a_fitted_to_b_min']:.3f}), the transfer under 0.6 "
                       f"where that view is not: {i['transfer_to_b_under_0.6_a_fitted_not']})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs-per-photo", type=int, default=4, help="references B per photo A (default 4)")
    ap.add_argument("--n-lfw", type=int, default=40, help="held-out LFW photos, one per person (default 40)")
    ap.add_argument("--test-photos", type=int, default=None, help="first N test photos (default all 17)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the pairs (the LFW choice is seed 0)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="4 test photos, 3 LFW photos, 2 pairs each")
    ap.add_argument("--save-views", type=Path, default=None, help="write each A's fitted view and transfers here")
    ap.add_argument("--json", default=str(RESULTS / "expression_transfer.json"))
    add_target_option(ap)
    args = ap.parse_args(argv)
    if args.quick:
        args.test_photos, args.n_lfw, args.pairs_per_photo = 4, 3, 2
        if args.json == str(RESULTS / "expression_transfer.json"):
            args.json = str(RESULTS / "expression_transfer_quick.json")
    targets = Targets.from_args(args)
    torch.set_num_threads(args.threads)

    t_start = time.perf_counter()
    model = load_morphable_model()
    maker = load_method("3d")
    encoder = IdentityEncoder.load()
    sources = [("faces", p) for p in face_photos()[: args.test_photos]]
    sources += [("lfw", p) for p in heldout_lfw_sample(args.n_lfw, 0)]
    photos, skipped = fit_photos(sources, model, encoder, FitConfig(dense=RenderOptions().dense))
    fit_s = time.perf_counter() - t_start

    pairs = choose_pairs(photos, args.pairs_per_photo, args.seed)
    rows, t0 = [], time.perf_counter()
    for a, pa in enumerate(photos):
        bs = [photos[b] for x, b in pairs if x == a]
        measured = render_photo(pa, bs, model, maker, encoder, args.save_views)
        rows += [(a, b, m) for b, m in zip([b for x, b in pairs if x == a], measured)]
        print(f"  A {pa.name}: {sum(m['detected'] for m in measured)}/{len(bs)} transfers detected", flush=True)
    render_s = time.perf_counter() - t0
    rows = [pair_row(photos[a], photos[b], m) for a, b, m in rows]   # after every fitted view is measured

    tab = group_tables(rows)
    print_tables(tab)
    split = split_summary(photos)
    total = time.perf_counter() - t_start
    print(f"\nfits {fit_s:.0f} s ({len(photos)} photos), renders + measures {render_s:.0f} s ({len(rows)} pairs), "
          f"total {total:.0f} s")
    for sk in skipped:
        print(f"  left out: {sk['error']}")
    check_targets(targets, tab)
    payload = {"benchmark": "expression_transfer", "quick": args.quick, "method": "3d", "size": SIZE,
               "pairs_per_photo": args.pairs_per_photo, "seed": args.seed,
               "gap_error": "absolute, in mouth widths (|g - g(B)|); width and eye_aspect: relative (|r - r(B)| / r(B))",
               "photos": {"faces": sum(p.set == "faces" for p in photos), "lfw": sum(p.set == "lfw" for p in photos),
                          "lfw_seed": 0, "skipped": skipped},
               "results": json_ready(tab), "split_check": json_ready(split),
               "photo_records": json_ready([photo_record(p, model) for p in photos]),
               "pairs": json_ready(rows),
               "seconds": {"fit": fit_s, "render_and_measure": render_s, "total": total}}
    return targets.finish(args.json, payload)


if __name__ == "__main__":
    sys.exit(main())
