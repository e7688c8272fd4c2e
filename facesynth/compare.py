"""``facesynth compare INPUT --yaw ... --out DIR``: the methods side by side on the same photos.

    facesynth compare INPUT --yaw -60,-30,0,30,60 --out DIR [--methods 3d,hybrid] [--pitch 0]
                      [--size 128] [--lfw DIR] [--real-photos 200]

INPUT is an identity-layout folder (``INPUT/<identity>/<image>``). Every photo is fitted once
(ICT FaceKit, landmarks + dense stage; ``--no-dense``: landmarks only) and every method in
``--methods`` turns it into one view per pose. Each view is scored, and ``DIR/report.html`` (one
self-contained page: images and plots as base64 PNG data URIs), ``DIR/metrics.json`` and
``DIR/metrics.csv`` (and ``DIR/views.csv``: one row per view with its detection, distance and pose
error) are written atomically. Each finished photo's views and scores are kept in
``DIR/cache/<settings>/`` (:class:`PhotoCache`), so the same command run again after a stop
continues where it stopped (failed photos are tried again; other flags use another cache folder).

Methods
-------
:data:`METHODS` maps a name to ``fn(image, source, poses, size, ctx) -> (B, size, size, 3) uint8``:
``image`` the photo (uint8 H x W x 3), ``source`` its path, ``poses`` a list of
:class:`face3d.camera.Pose`, ``ctx`` a :class:`CompareContext` holding the morphable model, the
refiner (loaded on first use) and the cache of each photo's fit (:meth:`CompareContext.reconstruction`:
fitted once per photo, shared by every method). A new method (e.g. CAPG-GAN) is one more entry.

Metrics (per method, over all views ("all") and per asked yaw; pitches at one yaw are pooled)
-----------------------------------------------------------------------------------------------
Every view goes through dlib's HOG detector (upsample 1) and 68-point predictor, largest face,
exactly like ``benchmarks/bench_real_photos.py``; the descriptor is dlib's 128-D face descriptor
computed by its PyTorch port (:class:`ganrefine.identity.IdentityEncoder`, same numbers as dlib's
``compute_face_descriptor``) on the dlib-aligned 150 x 150 chip. A view with no detected face has
distance ``inf`` and pose error ``inf`` (so it counts against the medians) and fails every pair of
the cross-verification.

- ``identity_to_source``: median Euclidean descriptor distance, view vs its source photo.
- ``cross_verification``: accuracy over the pairs (view, other real photo of INPUT), for every other
  photo that had a face (other photos of the same identity and photos of other identities): a
  same-identity pair is right when its distance is < 0.6, a different-identity pair when it is
  >= 0.6 (see :func:`cross_verification_accuracy`). ``null`` when fewer than two identities
  have a usable photo.
- ``pose_error``: median over views of max(|yaw asked - yaw estimated|, |pitch asked - pitch
  estimated|), degrees; the estimate is dlib's landmarks + PnP (``face3d.pose_estimation``) against
  the fitted mesh's landmark vertices with the view camera's focal length (the recipe of
  ``bench_real_photos.py``).
- ``realism``: held-out accuracy of a classifier two-sample test (:func:`c2st`) between generated
  views and real LFW photos, on pooled intermediate activations of dlib's identity network
  (:meth:`FaceEncoder.encode`) over the face alone (outside the landmark hull set to grey, in real
  and generated images alike, so a plain backdrop does not decide the test). 0.5: the classifier
  cannot tell them apart; 1.0: always can.
  Computed per method on all yaws pooled, and per yaw where each class has at least
  :data:`MIN_C2ST_PER_CLASS` samples (else ``null``). The split and the counts are in
  ``info.realism`` of metrics.json.
- ``seconds_per_view``: for each method, the wall time of its generator calls (fit excluded) plus
  its share of the fit, divided by its number of views. A photo's fit time is split evenly over
  the views of every method that used the fit (called ``ctx.reconstruction``) for that photo.
  Views are generated in one batch per photo, so the per-yaw value equals the method's overall one.

Non-finite values (a median that is ``inf`` because most views had no face) and metrics that do
not apply are written as ``null`` in metrics.json and as an empty cell in metrics.csv;
``info.counts`` gives the number of views, faces missed and pairs behind every value.

Exit codes: 0 every photo succeeded, 1 some photo failed (each failure is recorded in
``info.failures`` and printed as one line), 2 bad usage (including an INPUT without photos).
"""
from __future__ import annotations

import argparse
import base64
import csv
import html
import io
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from face3d.camera import Pose
from face3d.errors import FaceSynthError

#: dlib's same-person threshold on the descriptor distance.
THRESHOLD = 0.6
#: The five metrics, in the order of metrics.csv's columns.
METRIC_NAMES = ("identity_to_source", "cross_verification", "pose_error", "realism", "seconds_per_view")
#: The realism test needs at least this many samples in each class (half train, half test).
MIN_C2ST_PER_CLASS = 8
#: Residual block of dlib's ResNet whose globally average-pooled output is the realism feature:
#: index 9 is the last block of the 128-channel stage (ganrefine.identity._BLOCKS), 37 x 37 cells
#: on a 150-px chip -> a 128-D feature of mid-level texture and shape statistics.
FEATURE_BLOCK = 9
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}


# ----------------------------------------------------------------------------------------------
# Methods
# ----------------------------------------------------------------------------------------------


@dataclass
class CompareContext:
    """What the method functions share: the model, the refiner and each photo's fit (cached).

    ``current_method`` is set by the driver before each generator call; :meth:`reconstruction`
    records which methods used a photo's fit so that its time is charged to their views."""

    model: object
    refiner_path: str | None = None
    capg_path: str | None = None
    dense: bool = True
    current_method: str | None = None
    _refiner: object = None
    fits: dict = field(default_factory=dict)            # source -> Reconstruction
    fit_seconds: dict = field(default_factory=dict)     # source -> seconds
    fit_users: dict = field(default_factory=dict)       # source -> set of method names

    def reconstruction(self, image: np.ndarray, source: str):
        """The photo's largest face, fitted (landmarks + dense) and textured, once per photo."""
        if source not in self.fits:
            from face3d.fitting import FitConfig
            from face3d.pipeline import reconstruct_faces

            t0 = time.perf_counter()
            self.fits[source] = reconstruct_faces(image, self.model, fit_config=FitConfig(dense=self.dense),
                                                  source=source)[0]
            self.fit_seconds[source] = time.perf_counter() - t0
        if self.current_method is not None:
            self.fit_users.setdefault(source, set()).add(self.current_method)
        return self.fits[source]

    def refiner(self):
        if self._refiner is None:
            from ganrefine.hybrid import load_hybrid_refiner

            self._refiner = load_hybrid_refiner(self.refiner_path)
        return self._refiner

    def capg(self):
        from ganrefine.capg import load_default_capg

        return load_default_capg(self.capg_path).generator


def generate_3d(image: np.ndarray, source: str, poses: list[Pose], size: int, ctx: CompareContext) -> np.ndarray:
    """The 3D stage alone: the fitted, photo-textured head rendered at each pose (grey background)."""
    from face3d.render import render_views

    rec = ctx.reconstruction(image, source)
    return render_views(rec.fit, rec.texture, poses, ctx.model, size=size).images


def generate_hybrid(image: np.ndarray, source: str, poses: list[Pose], size: int, ctx: CompareContext) -> np.ndarray:
    """The 3D stage's renders refined by the trained refiner (``facesynth rotate --method hybrid``)."""
    from face3d.render import render_views
    from ganrefine.hybrid import refine_views

    rec = ctx.reconstruction(image, source)
    views = render_views(rec.fit, rec.texture, poses, ctx.model, size=size)
    return refine_views(ctx.refiner(), views)


def generate_gan(image: np.ndarray, source: str, poses: list[Pose], size: int, ctx: CompareContext) -> np.ndarray:
    """The GAN-only baseline (``facesynth rotate --method gan``): CAPG-GAN on the aligned photo and
    the target-pose landmarks. The fit only places those landmarks and the crop; nothing is rendered."""
    from ganrefine.capg import rotate_with_capg

    rec = ctx.reconstruction(image, source)
    return rotate_with_capg(ctx.capg(), rec.fit, image, ctx.model, poses, size)


#: name -> generator; the order is the report's row order.
METHODS: dict[str, Callable[..., np.ndarray]] = {"3d": generate_3d, "gan": generate_gan, "hybrid": generate_hybrid}


# ----------------------------------------------------------------------------------------------
# Metric functions (plain numpy / torch)
# ----------------------------------------------------------------------------------------------


def finite_median(values) -> float:
    """Median with ``inf`` entries kept (they count as failures); NaN when there are no values."""
    v = np.asarray(list(values), dtype=np.float64)
    return float(np.median(v)) if v.size else float("nan")


def cross_verification_accuracy(dist: np.ndarray, same: np.ndarray, valid: np.ndarray | None = None,
                                threshold: float = THRESHOLD) -> tuple[float, int]:
    """Verification accuracy of (view, real photo) pairs and the number of pairs.

    ``dist`` (V, Q): descriptor distance of view v to real photo q (``inf`` for a view without a
    detected face); ``same`` (V, Q) bool: same identity; ``valid`` (V, Q) bool: the pair counts
    (False for a view's own source photo). A pair is right when ``same and d < threshold`` or
    ``not same and d >= threshold``; an infinite distance is always wrong (no face = failure).
    Returns (NaN, 0) when there is no valid pair.
    """
    dist = np.asarray(dist, dtype=np.float64)
    same = np.asarray(same, dtype=bool)
    valid = np.ones_like(same) if valid is None else np.asarray(valid, dtype=bool)
    right = np.where(same, dist < threshold, dist >= threshold) & np.isfinite(dist)
    n = int(valid.sum())
    return (float(right[valid].mean()) if n else float("nan")), n


def _logistic_regression(x: np.ndarray, y: np.ndarray, l2: float):
    """Weights (D,) and bias of argmin mean BCE(sigmoid(x w + b), y) + l2/2 |w|^2 (L-BFGS, float64)."""
    import torch

    X = torch.from_numpy(x.astype(np.float64))
    Y = torch.from_numpy(y.astype(np.float64))
    w = torch.zeros(X.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=200, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(X @ w + b, Y) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach().numpy(), float(b.detach())


def c2st(real_feats: np.ndarray, fake_feats: np.ndarray, seed: int = 0, l2: float = 1e-2,
         min_per_class: int = 2) -> dict:
    """Classifier two-sample test (Lopez-Paz & Oquab, "Revisiting classifier two-sample tests", ICLR 2017).

    Samples x_i ~ P (real, label 0) and y_j ~ Q (generated, label 1). Both classes are subsampled
    to n = min(|real|, |fake|) (seeded), so chance is exactly 1/2. Each class is split at random
    into a training half (floor(n/2)) and a test half (the rest), giving D_tr and D_te with
    n_te = 2 (n - floor(n/2)). Features are standardised with D_tr's mean and standard deviation;
    a logistic regression f(z) = sigmoid(w.z + b) is fitted on D_tr by minimising
    mean_i BCE(f(z_i), l_i) + l2/2 |w|^2, and the statistic is its held-out accuracy

        t = 1/n_te * sum_{(z, l) in D_te} 1[ 1[f(z) > 1/2] == l ].

    Under H0 (P = Q) the classifier cannot beat chance and n_te * t ~ Binomial(n_te, 1/2), so
    t ~ N(1/2, 1/(4 n_te)) for large n_te; the one-sided p-value is P(Binomial(n_te, 1/2) >= n_te t).
    t near 0.5: the generated samples are indistinguishable from the real ones in this feature
    space; t near 1: they are told apart every time.

    Returns {"accuracy", "n_per_class", "n_train", "n_test", "p_value"}; accuracy is NaN when a
    class has fewer than ``min_per_class`` (at least 2) samples.
    """
    real = np.asarray(real_feats, dtype=np.float64).reshape(len(real_feats), -1)
    fake = np.asarray(fake_feats, dtype=np.float64).reshape(len(fake_feats), -1)
    n = min(len(real), len(fake))
    if n < max(2, min_per_class):
        return {"accuracy": float("nan"), "n_per_class": int(n), "n_train": 0, "n_test": 0, "p_value": float("nan")}
    rng = np.random.default_rng(seed)
    r = real[rng.permutation(len(real))[:n]]
    f = fake[rng.permutation(len(fake))[:n]]
    k = n // 2
    x_tr = np.concatenate([r[:k], f[:k]])
    y_tr = np.concatenate([np.zeros(k), np.ones(k)])
    x_te = np.concatenate([r[k:], f[k:]])
    y_te = np.concatenate([np.zeros(n - k), np.ones(n - k)])
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-8
    x_tr, x_te = (x_tr - mu) / sd, (x_te - mu) / sd
    w, b = _logistic_regression(x_tr, y_tr, l2)
    pred = (x_te @ w + b) > 0
    correct = int((pred == (y_te > 0.5)).sum())
    n_te = len(y_te)
    p_value = sum(math.comb(n_te, i) for i in range(correct, n_te + 1)) / 2 ** n_te  # exact binomial tail
    return {"accuracy": correct / n_te, "n_per_class": int(n), "n_train": 2 * k, "n_test": n_te, "p_value": p_value}


def c2st_accuracy(real_feats: np.ndarray, fake_feats: np.ndarray, seed: int = 0) -> float:
    """The held-out accuracy of :func:`c2st` (0.5: cannot tell real from generated)."""
    return c2st(real_feats, fake_feats, seed)["accuracy"]


def face_region(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The image with everything outside the convex hull of its 68 landmarks (jaw line to brows)
    set to mid-grey: what the realism test looks at, so that it judges the face and not the
    background, hair or clothes (a 3D view's plain grey backdrop would give it away at once)."""
    import cv2

    hull = cv2.convexHull(np.round(np.asarray(landmarks, np.float64) - 0.5).astype(np.int32))
    mask = np.zeros(image.shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, hull, 1)
    out = np.full_like(image, 128)
    out[mask > 0] = image[mask > 0]
    return out


class FaceEncoder:
    """dlib's face descriptor and the realism features of an image, from its ResNet (torch port).

    :meth:`encode` takes full images with their 68 dlib landmarks, aligns them like
    ``dlib.get_face_chip(img, shape, 150, 0.25)`` and returns the (B, 128) descriptors of the
    images and the (B, C) realism features: the global average of block :data:`FEATURE_BLOCK`'s
    output (read with a forward hook) on the same chip of :func:`face_region` (face only)."""

    def __init__(self):
        from ganrefine.identity import IdentityEncoder

        self.encoder = IdentityEncoder.load()  # shared per process: the hook is attached only while encoding
        self._feat = None

    def _hook(self, module, inputs, output):
        self._feat = output.mean(dim=(2, 3))

    def encode(self, images: list[np.ndarray], landmarks: list[np.ndarray], batch: int = 16):
        import torch

        from ganrefine.identity import align_faces, image_tensor

        def chips(ims, lms):
            return align_faces([image_tensor(im) for im in ims], [torch.from_numpy(np.asarray(lm, np.float64)) for lm in lms])

        descs, feats = [], []
        handle = self.encoder.net.blocks[FEATURE_BLOCK].register_forward_hook(self._hook)
        try:
            with torch.no_grad():
                for s in range(0, len(images), batch):
                    ims, lms = images[s:s + batch], landmarks[s:s + batch]
                    descs.append(self.encoder.embed_chips(chips(ims, lms)).numpy().astype(np.float64))
                    self._feat = None
                    self.encoder.embed_chips(chips([face_region(im, lm) for im, lm in zip(ims, lms)], lms))
                    feats.append(self._feat.numpy().astype(np.float64))
        finally:
            handle.remove()
        if not descs:
            return np.zeros((0, 128)), np.zeros((0, 0))
        return np.concatenate(descs), np.concatenate(feats)


def detect_view_face(image: np.ndarray):
    """dlib's largest face in a view (HOG, upsample 1, then 68 landmarks), or None."""
    from face3d.landmarks import detect_faces

    faces = detect_faces(np.ascontiguousarray(image), upsample=1)
    return faces[0] if faces else None


def view_pose_error(landmarks: np.ndarray, reference, pose: Pose) -> float:
    """max(|yaw error|, |pitch error|) in degrees of a view asked at ``pose``, estimated by PnP of
    dlib's landmarks on the view against ``reference`` (`face3d.pose_estimation.view_pose_reference`
    of the view's fit)."""
    from face3d.pose_estimation import angle_error

    try:
        est = reference.estimate(landmarks)
    except ValueError:
        return float("inf")
    return max(abs(angle_error(est.yaw, pose.yaw)), abs(angle_error(est.pitch, pose.pitch)))


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------


def list_photos(root: Path) -> list[tuple[str, Path]]:
    """(identity, path) of every image file ``root/<identity>/<image>``, sorted."""
    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(d.iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."):
                out.append((d.name, f))
    return out


def default_lfw() -> Path:
    """LFW's images in the shared data folder (``$FACESYNTH_DATA`` or ../shared/data)."""
    from face3d.morphable_model import default_data_dir

    data = default_data_dir()
    return (data if data is not None else Path("shared/data")) / "lfw" / "images"


def choose_real_photos(lfw: Path, n: int, seed: int = 0) -> list[Path]:
    """A fixed, seeded choice of ``n`` LFW photos (``lfw/<Name>/<Name>_NNNN.jpg``)."""
    files = sorted(lfw.glob("*/*.jpg"))
    if not files or n <= 0:
        return []
    idx = np.random.default_rng(seed).choice(len(files), size=min(n, len(files)), replace=False)
    return [files[i] for i in sorted(idx)]


# ----------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------


def _usage(msg: str) -> int:
    print(f"facesynth compare: error: {msg}", file=sys.stderr)
    return 2


def _yaw_key(y: float) -> str:
    return f"{y:g}"


def _first_line(exc: BaseException) -> str:
    s = str(exc)
    return s.splitlines()[0] if s else type(exc).__name__


def run_compare(args) -> int:
    import torch
    from tqdm import tqdm

    from face3d.morphable_model import load_morphable_model

    root = Path(args.input)
    if not root.is_dir():
        return _usage(f"{root}: not a folder (INPUT must be INPUT/<identity>/<image>)")
    photos = list_photos(root)
    if not photos:
        return _usage(f"{root}: no photos found (expected INPUT/<identity>/<image>)")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        return _usage(f"--out {out}: exists and is not a folder")
    lfw = Path(args.lfw) if args.lfw else default_lfw()
    if args.real_photos and not lfw.is_dir():
        return _usage(f"--lfw {lfw}: not a folder (use --real-photos 0 to skip the realism test)")
    if args.threads:
        torch.set_num_threads(args.threads)
    methods: list[str] = list(args.methods)
    model = load_morphable_model(args.model)
    ctx = CompareContext(model, refiner_path=args.refiner, capg_path=args.capg, dense=args.dense)
    if "hybrid" in methods:
        ctx.refiner()  # missing weights: one line, before any work
    if "gan" in methods:
        ctx.capg()
    poses = [Pose(float(y), float(p), 0.0) for p in args.pitch for y in args.yaw]
    yaw_keys = list(dict.fromkeys(_yaw_key(y) for y in args.yaw))
    enc = FaceEncoder()

    views: list[dict] = []       # one record per (photo, method, pose)
    sources: dict[str, dict] = {}  # photo -> identity, descriptor, thumbnail
    failures: list[dict] = []
    gen_seconds = {m: 0.0 for m in methods}
    fit_share = {m: 0.0 for m in methods}
    n_views = {m: 0 for m in methods}
    cache = PhotoCache(out, _settings_key(args, methods, model, ctx))
    bar = tqdm(photos, desc="compare", unit="photo")
    for identity, path in bar:
        rel = f"{identity}/{path.name}"
        bar.set_postfix_str(rel[-40:])
        done = cache.load(rel, path)
        if done is None:
            done = _process_photo(identity, path, rel, methods, poses, args.size, ctx, enc, model)
            if not done.failures:
                cache.save(rel, path, done)
        for f in done.failures:
            failures.append(f)
            tqdm.write(f"facesynth compare: {f['error']}")
        if done.source is not None:
            sources[rel] = done.source
        views.extend(done.views)
        for m in methods:
            gen_seconds[m] += done.gen_seconds.get(m, 0.0)
            fit_share[m] += done.fit_share.get(m, 0.0)
            n_views[m] += done.n_views.get(m, 0)
    bar.close()

    # realism: real photos, detected and aligned the same way
    real_feats, real_info = np.zeros((0, 0)), {"requested": args.real_photos, "used": 0, "no_face": 0, "unreadable": 0}
    if args.real_photos and views:
        real_feats, real_info = _real_features(lfw, args.real_photos, args.seed, enc, real_info)

    metrics, counts, realism_info = _aggregate(views, sources, methods, yaw_keys, real_feats, args.seed,
                                               gen_seconds, fit_share, n_views)
    n_ids = len({s["identity"] for s in sources.values()})
    info = {
        "input": str(root), "photos": len(photos), "photos_ok": len(photos) - len({f["source"] for f in failures}),
        "identities": sorted({i for i, _ in photos}), "methods": methods,
        "yaw": [float(y) for y in args.yaw], "pitch": [float(p) for p in args.pitch], "size": args.size,
        "threshold": THRESHOLD, "seed": args.seed, "dense_fit": args.dense,
        "descriptor": "dlib face descriptor (torch port of dlib_face_recognition_resnet_model_v1), dlib HOG "
                      "detection (upsample 1) + 68 landmarks on each view; no face = distance inf / pose error inf",
        "cross_verification": ({"note": f"needs photos of at least two people; INPUT has {n_ids} usable identity"}
                               if n_ids < 2 else {"note": "pairs (view, every other usable photo of INPUT)"}),
        "seconds_per_view": "method's generator wall time (fit excluded) + its share of each photo's fit "
                            "(fit time split evenly over the views of the methods that used it), / its views",
        "realism": {**realism_info, "real_photos": {**real_info, "lfw": str(lfw) if args.real_photos else None}},
        "counts": counts,
        "failures": failures,
    }
    result = {"methods": metrics, "info": info}
    _write_outputs(out, result, views, sources, methods, poses, args)
    ok = info["photos_ok"]
    print(f"facesynth compare: {ok} of {len(photos)} photo(s) done, {len(methods)} method(s) x {len(poses)} pose(s); "
          f"report: {out / 'report.html'}")
    return 0 if not failures else 1


@dataclass
class PhotoResult:
    """One photo's share of a compare run: its source entry, scored views, failures and timings."""

    source: dict | None
    views: list[dict]
    failures: list[dict]
    gen_seconds: dict[str, float]
    fit_share: dict[str, float]
    n_views: dict[str, int]


def _process_photo(identity: str, path: Path, rel: str, methods: list[str], poses: list[Pose], size: int,
                   ctx: CompareContext, enc: FaceEncoder, model) -> PhotoResult:
    """Fit one photo, generate its views with every method and score them; failures are recorded,
    never raised (the batch goes on)."""
    from face3d.image_io import load_image
    from face3d.pose_estimation import view_pose_reference

    src = str(path)
    res = PhotoResult(None, [], [], {}, {}, {})
    try:
        image = load_image(path)
        ctx.current_method = None
        rec = ctx.reconstruction(image, src)
        desc, _ = enc.encode([image], [rec.face.landmarks])
        res.source = {"identity": identity, "descriptor": desc[0], "thumb": _thumbnail(image, rec.face.box, size)}
    except FaceSynthError as exc:
        res.failures.append({"source": rel, "error": _first_line(exc)})
        return res
    except Exception as exc:  # the batch goes on; the reason is recorded
        res.failures.append({"source": rel, "error": f"{rel}: internal error: {type(exc).__name__}: {_first_line(exc)}"})
        return res
    made: dict[str, np.ndarray] = {}
    for m in methods:
        ctx.current_method = m
        t0 = time.perf_counter()
        try:
            imgs = np.asarray(METHODS[m](image, src, poses, size, ctx))
            if imgs.shape != (len(poses), size, size, 3) or imgs.dtype != np.uint8:
                raise RuntimeError(f"method {m} returned {imgs.shape} {imgs.dtype}, "
                                   f"expected ({len(poses)}, {size}, {size}, 3) uint8")
        except Exception as exc:
            res.failures.append({"source": rel, "method": m, "error": f"{rel}: method {m}: {_first_line(exc)}"})
            continue
        finally:
            ctx.current_method = None
        res.gen_seconds[m] = time.perf_counter() - t0
        res.n_views[m] = len(poses)
        made[m] = imgs
    users = [m for m in made if m in ctx.fit_users.get(src, ())]
    for m in users:  # every method has len(poses) views of this photo: an even split per view
        res.fit_share[m] = ctx.fit_seconds[src] / len(users)
    reference = view_pose_reference(rec.fit, model, size)  # one per photo, shared by its views
    for m, imgs in made.items():
        try:
            res.views.extend(_score_views(imgs, poses, m, rel, identity, reference, enc, res.source["descriptor"]))
        except Exception as exc:  # a scoring bug must not lose the other photos' results
            res.failures.append({"source": rel, "method": m,
                                 "error": f"{rel}: scoring {m}: internal error: {type(exc).__name__}: {_first_line(exc)}"})
    ctx.fits.pop(src, None)  # one photo's fit at a time in memory
    return res


def _settings_key(args, methods: list[str], model, ctx: CompareContext) -> str:
    """What a photo's views and scores depend on (the realism test's seed and real photos are not
    cached): the cache folder of a run; other flags use another folder."""
    import hashlib

    from face3d.render import render_version

    weights = {}
    if "hybrid" in methods:
        refiner = ctx.refiner()
        weights["hybrid"] = [refiner.sha256, refiner.inference]
    if "gan" in methods:
        from ganrefine.capg import load_default_capg

        weights["gan"] = load_default_capg(ctx.capg_path).sha256
    key = {"methods": methods, "yaw": [float(y) for y in args.yaw], "pitch": [float(p) for p in args.pitch],
           "size": args.size, "dense": bool(args.dense), "model": model.name, "weights": weights, "version": 1,
           "render_version": max((v for v in map(render_version, methods) if v is not None), default=None)}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


class PhotoCache:
    """``DIR/cache/<settings>/<photo>.npz``: each finished photo's views and scores, so that a run
    that was stopped continues where it stopped when the same command is run again. Plain arrays
    and JSON text only (``allow_pickle=False``); a photo file that changed since is done again."""

    def __init__(self, out: Path, key: str):
        self.dir = out / "cache" / key

    def _file(self, rel: str, path: Path) -> tuple[Path, str]:
        import hashlib

        st = path.stat()
        stamp = f"{rel}|{st.st_size}|{st.st_mtime_ns}"
        return self.dir / f"{hashlib.sha256(rel.encode()).hexdigest()[:24]}.npz", stamp

    def load(self, rel: str, path: Path) -> PhotoResult | None:
        try:
            f, stamp = self._file(rel, path)
            if not f.is_file():
                return None
            with np.load(f, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                if meta["stamp"] != stamp:
                    return None
                # each z[...] access decompresses the whole array: read each one once
                images, descriptors, features = z["images"], z["descriptors"], z["features"]
                views = []
                for i, v in enumerate(meta["views"]):
                    det = v["detected"]
                    views.append({**v, "image": images[i],
                                  "descriptor": descriptors[i] if det else None,
                                  "feature": features[i] if det else None,
                                  "distance": float(v["distance"]), "pose_error": float(v["pose_error"])})
                source = {"identity": meta["identity"], "descriptor": z["source_descriptor"], "thumb": z["thumb"]}
            return PhotoResult(source, views, [], meta["gen_seconds"], meta["fit_share"], meta["n_views"])
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            return None  # unreadable or from another version: do the photo again

    def save(self, rel: str, path: Path, res: PhotoResult) -> None:
        from face3d.image_io import atomic_write_bytes

        f, stamp = self._file(rel, path)
        f.parent.mkdir(parents=True, exist_ok=True)
        size = res.source["thumb"].shape[0]
        n = len(res.views)
        found = [v for v in res.views if v["feature"] is not None]   # kept in their own dtype: a resumed
        d_dtype = found[0]["descriptor"].dtype if found else np.float32  # run scores exactly as a fresh one
        f_dtype = found[0]["feature"].dtype if found else np.float32
        desc = np.full((n, 128), np.nan, d_dtype)
        feats = np.full((n, found[0]["feature"].shape[0] if found else 0), np.nan, f_dtype)
        for i, v in enumerate(res.views):
            if v["descriptor"] is not None:
                desc[i] = v["descriptor"]
                feats[i] = v["feature"]
        meta = {"stamp": stamp, "identity": res.source["identity"], "gen_seconds": res.gen_seconds,
                "fit_share": res.fit_share, "n_views": res.n_views,
                "views": [{k: (str(x) if k in ("distance", "pose_error") else x) for k, x in v.items()
                           if k not in ("image", "descriptor", "feature")} for v in res.views]}
        buf = io.BytesIO()
        np.savez_compressed(buf, meta=np.array(json.dumps(meta)), source_descriptor=np.asarray(res.source["descriptor"]),
                 thumb=res.source["thumb"], images=np.stack([v["image"] for v in res.views]) if n else
                 np.zeros((0, size, size, 3), np.uint8), descriptors=desc, features=feats)
        atomic_write_bytes(f, buf.getvalue())


def _thumbnail(image: np.ndarray, box, size: int) -> np.ndarray:
    """The source photo around the face (1.8 x the detector box), square, at ``size`` px."""
    import cv2

    l, t, r, b = box
    cx, cy, s = (l + r) / 2, (t + b) / 2, 1.8 * max(r - l, b - t)
    x0, y0 = int(round(cx - s / 2)), int(round(cy - s / 2))
    x1, y1 = x0 + int(round(s)), y0 + int(round(s))
    H, W = image.shape[:2]
    pad = max(0, -x0, -y0, x1 - W, y1 - H)
    img = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(128, 128, 128)) if pad else image
    crop = img[y0 + pad:y1 + pad, x0 + pad:x1 + pad]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


def _score_views(imgs, poses, method, rel, identity, reference, enc, src_desc) -> list[dict]:
    recs, det_imgs, det_lms, det_idx = [], [], [], []
    for img, pose in zip(imgs, poses):
        face = detect_view_face(img)
        r = {"photo": rel, "identity": identity, "method": method, "yaw": _yaw_key(pose.yaw), "pitch": pose.pitch,
             "image": img, "detected": face is not None, "distance": float("inf"), "pose_error": float("inf"),
             "descriptor": None, "feature": None}
        if face is not None:
            r["pose_error"] = view_pose_error(face.landmarks, reference, pose)
            det_imgs.append(img)
            det_lms.append(face.landmarks)
            det_idx.append(len(recs))
        recs.append(r)
    if det_idx:
        descs, feats = enc.encode(det_imgs, det_lms)
        for i, d, f in zip(det_idx, descs, feats):
            recs[i].update(descriptor=d, feature=f, distance=float(np.linalg.norm(d - src_desc)))
    return recs


def _real_features(lfw: Path, n: int, seed: int, enc: FaceEncoder, info: dict):
    from tqdm import tqdm

    from face3d.image_io import load_image
    from face3d.landmarks import detect_faces

    imgs, lms = [], []
    for path in tqdm(choose_real_photos(lfw, n, seed), desc="real photos", unit="photo"):
        try:
            img = load_image(path)
        except FaceSynthError:
            info["unreadable"] += 1
            continue
        faces = detect_faces(img, upsample=1)
        if not faces:
            info["no_face"] += 1
            continue
        imgs.append(img)
        lms.append(faces[0].landmarks)
    info["used"] = len(imgs)
    _, feats = enc.encode(imgs, lms)
    return feats, info


def _aggregate(views, sources, methods, yaw_keys, real_feats, seed, gen_seconds, fit_share, n_views):
    """metrics {method: {"all": {...}, "per_yaw": {yaw: {...}}}}, counts and realism details."""
    photo_names = list(sources)
    q_desc = np.stack([sources[p]["descriptor"] for p in photo_names]) if photo_names else np.zeros((0, 128))
    q_id = np.array([sources[p]["identity"] for p in photo_names])
    multi = len(set(q_id.tolist())) >= 2
    metrics, counts = {}, {}
    realism = {"features": f"global average pool of dlib ResNet block {FEATURE_BLOCK} (end of the 128-channel stage), "
                           "dlib-aligned 150x150 chips of dlib-detected faces, everything outside the convex hull of "
                           "the 68 landmarks set to grey (the face, not the background, is judged)",
               "classifier": "L2-regularised logistic regression on standardised features (l2=0.01, L-BFGS)",
               "split": "classes balanced by subsampling the bigger one to n = min(real, fake) (seeded); each class "
                        "split at random into a training half (floor(n/2)) and a held-out half; accuracy on the held-out half",
               "min_per_class": MIN_C2ST_PER_CLASS, "real_vs": {}}

    def block(vs, label_seed):
        ident = finite_median(v["distance"] for v in vs)
        pose = finite_median(v["pose_error"] for v in vs)
        cv, pairs, same_pairs = float("nan"), 0, 0
        if multi and vs:
            dist = np.full((len(vs), len(photo_names)), np.inf)
            for i, v in enumerate(vs):
                if v["descriptor"] is not None:
                    dist[i] = np.linalg.norm(q_desc - v["descriptor"], axis=1)
            same = np.array([[v["identity"] == qi for qi in q_id] for v in vs])
            valid = np.array([[v["photo"] != qp for qp in photo_names] for v in vs])
            cv, pairs = cross_verification_accuracy(dist, same, valid)
            same_pairs = int((same & valid).sum())
        fakes = [v["feature"] for v in vs if v["feature"] is not None]
        t = c2st(real_feats, np.array(fakes), seed=label_seed, min_per_class=MIN_C2ST_PER_CLASS) if (
            len(real_feats) and fakes) else {"accuracy": float("nan"), "n_per_class": 0, "n_train": 0, "n_test": 0,
                                             "p_value": float("nan")}
        cnt = {"views": len(vs), "no_face": sum(not v["detected"] for v in vs), "pairs": pairs,
               "same_identity_pairs": same_pairs, "realism_real": int(len(real_feats)), "realism_fake": len(fakes)}
        return {"identity_to_source": ident, "cross_verification": cv, "pose_error": pose,
                "realism": t["accuracy"]}, cnt, {k: t[k] for k in ("n_per_class", "n_train", "n_test", "p_value")}

    for m in methods:
        mv = [v for v in views if v["method"] == m]
        spv = (gen_seconds[m] + fit_share[m]) / n_views[m] if n_views[m] else float("nan")
        a, c, r = block(mv, seed)
        metrics[m] = {"all": {**a, "seconds_per_view": spv}, "per_yaw": {}}
        counts[m] = {"all": c, "per_yaw": {}}
        realism["real_vs"][m] = {"all": r, "per_yaw": {}}
        for k, y in enumerate(yaw_keys):
            a, c, r = block([v for v in mv if v["yaw"] == y], seed + 1 + k)
            metrics[m]["per_yaw"][y] = {**a, "seconds_per_view": spv}
            counts[m]["per_yaw"][y] = c
            realism["real_vs"][m]["per_yaw"][y] = r
    return _clean(metrics), counts, _clean(realism)


def _clean(obj):
    """Non-finite floats -> None (JSON has no inf/NaN); floats rounded to 6 digits."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return round(float(obj), 6) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


# ----------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------


def _png_uri(img: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img)).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _fmt(v, digits=3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _plots_uri(metrics: dict, methods: list[str], yaw_keys: list[str]) -> str | None:
    """One PNG with the metrics against yaw (one line per method) and seconds per view; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    titles = {"identity_to_source": "identity distance to source (median, lower = kept)",
              "cross_verification": "cross-verification accuracy @0.6",
              "pose_error": "pose error (median, degrees)",
              "realism": "realism: C2ST accuracy (0.5 = indistinguishable)"}
    fig, axes = plt.subplots(1, 5, figsize=(22, 4.2))
    ys = [float(y) for y in yaw_keys]
    for ax, (name, title) in zip(axes, titles.items()):
        for m in methods:
            vals = [metrics[m]["per_yaw"][y][name] for y in yaw_keys]
            pts = [(x, v) for x, v in zip(ys, vals) if v is not None]
            line = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=m)[0] if pts else None
            allv = metrics[m]["all"][name]
            if allv is not None:
                ax.axhline(allv, ls="--", lw=0.8, color=line.get_color() if line else None, alpha=0.7)
        if name == "identity_to_source":
            ax.axhline(THRESHOLD, color="grey", lw=0.8, ls=":")
        if name == "realism":
            ax.axhline(0.5, color="grey", lw=0.8, ls=":")
            ax.set_ylim(0.0, 1.05)
        if name == "cross_verification":
            ax.set_ylim(0.0, 1.05)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("yaw (deg)")
        ax.set_xlim(min(ys) - 5, max(ys) + 5)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    spv = [metrics[m]["all"]["seconds_per_view"] or 0.0 for m in methods]
    axes[4].bar(methods, spv, color=[f"C{i}" for i in range(len(methods))])
    axes[4].set_title("seconds per view", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _report_html(result: dict, views: list[dict], sources: dict, methods: list[str], poses: list[Pose], args) -> str:
    metrics, info = result["methods"], result["info"]
    yaw_keys = list(dict.fromkeys(_yaw_key(p.yaw) for p in poses))
    esc = html.escape
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>facesynth compare</title><style>",
             "body{font-family:sans-serif;margin:16px;color:#222}table{border-collapse:collapse;margin:6px 0 18px}",
             "td,th{border:1px solid #ccc;padding:3px 6px;text-align:center;font-size:12px}",
             "img{display:block;margin:auto}.cap{font-size:10px;color:#555}.bad{color:#b00}",
             "</style></head><body>",
             (f"<h1>facesynth compare</h1><p>{esc(info['input'])}: {info['photos_ok']} of {info['photos']} photo(s), "
              f"methods {esc(', '.join(methods))}, {len(poses)} pose(s), {info['size']} px.</p>")]
    plot = _plots_uri(metrics, methods, yaw_keys)
    parts.append(f"<h2>Metrics</h2><img alt='metrics plot' src='{plot}'>" if plot
                 else "<h2>Metrics</h2><p>(plots need matplotlib: pip install matplotlib)</p>")
    parts.append("<table><tr><th>method</th><th>yaw</th>" + "".join(f"<th>{n}</th>" for n in METRIC_NAMES) + "</tr>")
    for m in methods:
        for y, row in [("all", metrics[m]["all"])] + list(metrics[m]["per_yaw"].items()):
            parts.append(f"<tr><td>{esc(m)}</td><td>{esc(y)}</td>" + "".join(
                f"<td>{_fmt(row[n])}</td>" for n in METRIC_NAMES) + "</tr>")
    parts.append("</table>")
    if info["failures"]:
        parts.append("<h2>Failures</h2><ul>" + "".join(f"<li class='bad'>{esc(f['error'])}</li>" for f in info["failures"])
                     + "</ul>")
    by_photo: dict[str, dict] = {}
    for v in views:
        by_photo.setdefault(v["photo"], {}).setdefault(v["method"], []).append(v)
    identities = sorted({s["identity"] for s in sources.values()})
    for ident in identities:
        parts.append(f"<h2>{esc(ident)}</h2>")
        for rel, src in sources.items():
            if src["identity"] != ident:
                continue
            parts.append("<table><tr><th>source</th><th>method</th>" + "".join(
                f"<th>yaw {esc(_yaw_key(p.yaw))}" + (f", pitch {p.pitch:g}" if p.pitch else "") + "</th>" for p in poses)
                + "</tr>")
            for k, m in enumerate(methods):
                row = "<tr>"
                if k == 0:
                    row += (f"<td rowspan='{len(methods)}'><img alt='source photo' src='{_png_uri(src['thumb'])}'>"
                            f"<div class='cap'>{esc(rel)}</div></td>")
                row += f"<th>{esc(m)}</th>"
                vs = by_photo.get(rel, {}).get(m)
                if not vs:
                    parts.append(row + f"<td colspan='{len(poses)}' class='bad'>failed</td></tr>")
                    continue
                for v in vs:
                    cap = (f"d={v['distance']:.2f} · pose err {v['pose_error']:.1f}°" if v["detected"]
                           else "<span class='bad'>no face found</span>")
                    row += f"<td><img alt='{esc(m)} view' src='{_png_uri(v['image'])}'><div class='cap'>{cap}</div></td>"
                parts.append(row + "</tr>")
            parts.append("</table>")
    parts.append("<details><summary>Settings and counts (metrics.json's info)</summary><pre>"
                 + esc(json.dumps(info, indent=1)) + "</pre></details></body></html>")
    return "\n".join(parts)


def _write_outputs(out: Path, result: dict, views, sources, methods, poses, args) -> None:
    from face3d.image_io import atomic_write_bytes

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "metrics.json", (json.dumps(result, indent=2) + "\n").encode())
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["method", "yaw", *METRIC_NAMES])
    for m in methods:
        for y, row in [("all", result["methods"][m]["all"])] + list(result["methods"][m]["per_yaw"].items()):
            w.writerow([m, y, *("" if row[n] is None else row[n] for n in METRIC_NAMES)])
    atomic_write_bytes(out / "metrics.csv", buf.getvalue().encode())
    buf = io.StringIO()  # one row per view: what the medians are made of, for analyses of one's own
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["photo", "identity", "method", "yaw", "pitch", "face_detected", "identity_to_source", "pose_error"])
    for v in views:
        w.writerow([v["photo"], v["identity"], v["method"], v["yaw"], v["pitch"], int(v["detected"]),
                    *("" if not math.isfinite(x) else round(x, 6) for x in (v["distance"], v["pose_error"]))])
    atomic_write_bytes(out / "views.csv", buf.getvalue().encode())
    atomic_write_bytes(out / "report.html", _report_html(result, views, sources, methods, poses, args).encode())
    for name in ("metrics.json", "metrics.csv", "views.csv", "report.html"):
        os.chmod(out / name, 0o644)  # the temporary file's 0600 is no mode for a report
