"""`facesynth compare` as a job: `CompareOptions` in, DIR/report.html, metrics.json, metrics.csv and
views.csv out (see the package docstring for what each metric means).

    options = CompareOptions(input=Path("faces"), out=Path("cmp"), yaws=(-30.0, 0.0, 30.0))
    exit_code = run_comparison(options)

Every photo is fitted once; each method of `options.methods` turns that fit into its views
through the registry (`facesynth.methods.load_method`) and `facesynth.api.render_face` over the
background of `CompareOptions.background` (the whole photo by default), so a view is the picture
`rotate` makes of the same fit. Each view is scored (`facesynth.compare.metrics`); a finished photo's views and scores go into DIR/cache
(`PhotoCache`), so the same run started again after a stop continues where it stopped.
"""
from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from face3d.camera import Pose
from face3d.devices import DEFAULT_DEVICE, resolve_device
from face3d.errors import FaceSynthError
from face3d.fitting import FitConfig
from face3d.image_io import atomic_write_bytes, load_image
from face3d.landmarks import detect_faces
from face3d.morphable_model import MorphableModel, default_data_dir, load_morphable_model
from face3d.pipeline import Reconstruction, reconstruct_largest_faces
from face3d.pose_estimation import photo_pose, view_pose_reference
from face3d.render import render_version
from facesynth.api import RenderOptions, render_face
from facesynth.compare.metrics import (FEATURE_BLOCK, METRIC_NAMES, MIN_C2ST_PER_CLASS, REALISM_REGIONS, THRESHOLD,
                                       FaceEncoder, c2st, cross_verification_accuracy, detect_view_face, finite_median,
                                       no_c2st, view_pose_error)
from facesynth.compare.pixel import (CROP_SETTINGS, CROP_SIZE, FOLDS, MIN_PER_CLASS, PIXEL_METHOD, RealCrops, bin_name,
                                     pixel_crop, pixel_realism, yaw_bin)
from facesynth.compare.report import json_ready, thumbnail, write_outputs, yaw_key
from facesynth.methods import ViewMaker, load_method
from facesynth.options import DEFAULT_BATCH_SIZE, METHODS, UsageError
from facesynth.photos import PHOTO_SUFFIXES

#: What the realism features see, per `--realism-region`, as metrics.json's info.realism says it.
REALISM_REGION_NOTES = {
    "face": "everything outside the convex hull of the 68 landmarks set to grey (the face, not the background, "
            "is judged)",
    "whole": "the whole chip, unmasked (the face and its surroundings as far as the chip reaches: hair, ears, "
             "background)"}
#: How the realism test is made, as metrics.json's info.realism says it (the features: `realism_method`).
REALISM_METHOD = {
    "features": f"global average pool of dlib ResNet block {FEATURE_BLOCK} (end of the 128-channel stage), "
                "dlib-aligned 150x150 chips of dlib-detected faces, " + REALISM_REGION_NOTES["face"],
    "classifier": "L2-regularised logistic regression on standardised features (l2=0.01, L-BFGS)",
    "split": "classes balanced by subsampling the bigger one to n = min(real, fake) (seeded); each class "
             "split at random into a training half (floor(n/2)) and a held-out half; accuracy on the held-out half"}
DESCRIPTOR_NOTE = ("dlib face descriptor (torch port of dlib_face_recognition_resnet_model_v1), dlib HOG "
                   "detection (upsample 1) + 68 landmarks on each view; no face = distance inf / pose error inf")


def realism_method(region: str) -> dict:
    """`REALISM_METHOD` with the features of `region` ("face" or "whole") and the region itself."""
    feats = REALISM_METHOD["features"].replace(REALISM_REGION_NOTES["face"], REALISM_REGION_NOTES[region])
    return {**REALISM_METHOD, "features": feats, "region": region}


#: photos whose largest faces are fitted at once (one batched fit)
COMPARE_BATCH_SIZE = DEFAULT_BATCH_SIZE
SECONDS_NOTE = ("method's generator wall time (fit excluded) + its share of each photo's fit "
                "(the photo's fit time, its batch's divided among the batch's photos, split evenly over the views "
                "of the methods that used it), / its views")


@dataclass(frozen=True)
class CompareOptions:
    """One `compare` run: the photos, the poses, the methods, and where the report goes."""

    input: Path                               # INPUT/<identity>/<image>
    out: Path
    yaws: tuple[float, ...]
    pitches: tuple[float, ...] = (0.0,)
    methods: tuple[str, ...] = tuple(METHODS)
    size: int = 128
    background: str = "photo"                 # the views' background (RenderOptions.background)
    lfw: Path | None = None                   # real photos of the realism test; None: default_lfw()
    real_photos: int = 200                    # 0 skips the realism test
    refiner: str | None = None                # weights files; None: the environment, else the shipped ones
    capg: str | None = None
    model: str | None = None
    dense: bool = True
    seed: int = 0                             # the real-photo choice and the realism split
    threads: int | None = None
    realism_region: str = "face"              # what the realism test sees: "face" alone or the "whole" chip
    pixel_realism: bool = True                # the pixel-level C2ST too (needs real_photos > 0)
    device: str = DEFAULT_DEVICE              # where the fit, renders, refiner and identity network run

    @property
    def poses(self) -> list[Pose]:
        """Every (yaw, pitch), yaw fastest."""
        return [Pose(float(y), float(p), 0.0) for p in self.pitches for y in self.yaws]

    @property
    def yaw_keys(self) -> list[str]:
        return list(dict.fromkeys(yaw_key(y) for y in self.yaws))

    @property
    def lfw_folder(self) -> Path:
        return self.lfw if self.lfw is not None else default_lfw()

    def render_options(self, method: str) -> RenderOptions:
        """How `method` renders a view: the photo's own expression and shape, over `background`
        (no labels: compare scores the pictures, its files keep no landmarks)."""
        return RenderOptions(method=method, size=self.size, background=self.background, dense=self.dense,
                             refiner=self.refiner, capg=self.capg, labels=False, device=self.device)


# ----------------------------------------------------------------------------------------------
# Inputs


def list_photos(root: Path) -> list[tuple[str, Path]]:
    """(identity, path) of every image file ``root/<identity>/<image>``, sorted."""
    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(d.iterdir()):
            if f.is_file() and f.suffix.lower() in PHOTO_SUFFIXES and not f.name.startswith("."):
                out.append((d.name, f))
    return out


def default_lfw() -> Path:
    """LFW's images in the shared data folder (``$FACESYNTH_DATA`` or ../shared/data)."""
    data = default_data_dir()
    return (data if data is not None else Path("shared/data")) / "lfw" / "images"


def choose_real_photos(lfw: Path, n: int, seed: int = 0) -> list[Path]:
    """A fixed, seeded choice of ``n`` LFW photos (``lfw/<Name>/<Name>_NNNN.jpg``)."""
    files = sorted(lfw.glob("*/*.jpg"))
    if not files or n <= 0:
        return []
    idx = np.random.default_rng(seed).choice(len(files), size=min(n, len(files)), replace=False)
    return [files[i] for i in sorted(idx)]


def check_inputs(options: CompareOptions) -> list[tuple[str, Path]]:
    """The photos of INPUT; UsageError for an INPUT without photos, an --out that is a file, or a
    missing --lfw folder when the realism test is asked for."""
    root = options.input
    if not root.is_dir():
        raise UsageError(f"{root}: not a folder (INPUT must be INPUT/<identity>/<image>)")
    photos = list_photos(root)
    if not photos:
        raise UsageError(f"{root}: no photos found (expected INPUT/<identity>/<image>)")
    if options.out.exists() and not options.out.is_dir():
        raise UsageError(f"--out {options.out}: exists and is not a folder")
    if options.realism_region not in REALISM_REGIONS:
        raise UsageError(f"--realism-region {options.realism_region}: expected one of {', '.join(REALISM_REGIONS)}")
    if options.real_photos and not options.lfw_folder.is_dir():
        raise UsageError(f"--lfw {options.lfw_folder}: not a folder (use --real-photos 0 to skip the realism test)")
    return photos


# ----------------------------------------------------------------------------------------------
# One photo


@dataclass
class CompareSession:
    """What every photo of a run shares: the options, the model, each method's weights, the
    identity network and the device they run on (`options.device` resolved once)."""

    options: CompareOptions
    model: MorphableModel
    makers: dict[str, ViewMaker]
    encoder: FaceEncoder
    device: torch.device


def open_session(options: CompareOptions) -> CompareSession:
    """Load the model, every method's weights (missing weights: one line, before any work) and the
    identity network."""
    device = resolve_device(options.device)   # cuda where torch sees none: one line, before any work
    model = load_morphable_model(options.model)
    makers = {m: load_method(m, options.refiner, options.capg, device=device) for m in options.methods}
    return CompareSession(options, model, makers, FaceEncoder(options.realism_region, device), device)


@dataclass
class PhotoResult:
    """One photo's share of a compare run: its source entry, scored views, failures and timings."""

    source: dict | None = None
    views: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    gen_seconds: dict[str, float] = field(default_factory=dict)
    fit_share: dict[str, float] = field(default_factory=dict)
    n_views: dict[str, int] = field(default_factory=dict)


def first_line(exc: BaseException) -> str:
    s = str(exc)
    return s.splitlines()[0] if s else type(exc).__name__


def internal_error(exc: BaseException) -> str:
    return f"internal error: {type(exc).__name__}: {first_line(exc)}"


def fit_photos(session: CompareSession, photos: list[tuple[str, Path]]) -> list[PhotoResult]:
    """Each (identity, photo) of `photos` loaded and its largest face fitted and textured, the fits
    in one batch (`reconstruct_largest_faces`), then its views generated and scored
    (`finish_photo`): one PhotoResult per photo, in order; a photo's failure is recorded in its own
    result, never raised. A photo's fit seconds are the batch's fit time divided among its photos."""
    results = [PhotoResult() for _ in photos]
    images: dict[int, np.ndarray] = {}
    for k, (identity, path) in enumerate(photos):
        try:
            images[k] = load_image(path)
        except Exception as exc:  # that photo's failure alone
            results[k].failures.append(photo_failure(f"{identity}/{path.name}", exc))
    ready = sorted(images)
    t0 = time.perf_counter()
    fit_config = FitConfig(dense=session.options.dense, device=str(session.device))
    recs = reconstruct_largest_faces([images[k] for k in ready], session.model, fit_config,
                                     sources=[str(photos[k][1]) for k in ready])
    fit_seconds = (time.perf_counter() - t0) / max(len(ready), 1)
    for k, rec in zip(ready, recs):
        identity, path = photos[k]
        if isinstance(rec, Exception):
            results[k].failures.append(photo_failure(f"{identity}/{path.name}", rec))
            continue
        try:
            desc, _ = session.encoder.encode([images[k]], [rec.face.landmarks])
        except Exception as exc:
            results[k].failures.append(photo_failure(f"{identity}/{path.name}", exc))
            continue
        results[k].source = {"identity": identity, "descriptor": desc[0],
                             "thumb": thumbnail(images[k], rec.face.box, session.options.size)}
        finish_photo(session, identity, path, images[k], rec, fit_seconds, results[k])
    return results


def photo_failure(rel: str, exc: Exception) -> dict:
    """A photo's failure record: a FaceSynthError's one line, else an internal error naming the photo."""
    if isinstance(exc, FaceSynthError):
        return {"source": rel, "error": first_line(exc)}
    return {"source": rel, "error": f"{rel}: {internal_error(exc)}"}


def generate_views(session: CompareSession, rec: Reconstruction, image: np.ndarray, rel: str,
                   res: PhotoResult) -> dict[str, np.ndarray]:
    """Each method's (B, size, size, 3) uint8 views of one fit, timed into `res`; a method that fails
    is recorded in `res.failures` and left out."""
    o = session.options
    poses = o.poses
    made: dict[str, np.ndarray] = {}
    for m in o.methods:
        t0 = time.perf_counter()
        try:
            imgs = np.asarray(render_face(rec, image, session.model, poses, o.render_options(m), session.makers[m],
                                          key=rel)[0].images)
            if imgs.shape != (len(poses), o.size, o.size, 3) or imgs.dtype != np.uint8:
                raise RuntimeError(f"method {m} returned {imgs.shape} {imgs.dtype}, "
                                   f"expected ({len(poses)}, {o.size}, {o.size}, 3) uint8")
        except Exception as exc:
            res.failures.append({"source": rel, "method": m, "error": f"{rel}: method {m}: {first_line(exc)}"})
            continue
        res.gen_seconds[m] = time.perf_counter() - t0
        res.n_views[m] = len(poses)
        made[m] = imgs
    return made


def score_views(imgs, poses, method, rel, identity, reference, enc: FaceEncoder, src_desc) -> list[dict]:
    """One record per view: detected or not, its distance to the source photo's descriptor, its
    pose error, its descriptor and realism feature (None without a face)."""
    recs, det_imgs, det_lms, det_idx = [], [], [], []
    for img, pose in zip(imgs, poses):
        face = detect_view_face(img)
        r = {"photo": rel, "identity": identity, "method": method, "yaw": yaw_key(pose.yaw), "pitch": pose.pitch,
             "image": img, "detected": face is not None, "distance": float("inf"), "pose_error": float("inf"),
             "descriptor": None, "feature": None, "crop": None}
        if face is not None:
            r["pose_error"] = view_pose_error(face.landmarks, reference, pose)
            r["crop"] = pixel_crop(img, face.landmarks)
            det_imgs.append(img)
            det_lms.append(face.landmarks)
            det_idx.append(len(recs))
        recs.append(r)
    if det_idx:
        descs, feats = enc.encode(det_imgs, det_lms)
        for i, d, f in zip(det_idx, descs, feats):
            recs[i].update(descriptor=d, feature=f, distance=float(np.linalg.norm(d - src_desc)))
    return recs


def process_photo(session: CompareSession, identity: str, path: Path) -> PhotoResult:
    """Fit one photo, generate its views with every method and score them; failures are recorded,
    never raised (the batch goes on)."""
    return fit_photos(session, [(identity, path)])[0]


def finish_photo(session: CompareSession, identity: str, path: Path, image: np.ndarray, rec: Reconstruction,
                 fit_seconds: float, res: PhotoResult) -> None:
    """A fitted photo's views generated with every method and scored, into `res`."""
    rel = f"{identity}/{path.name}"
    made = generate_views(session, rec, image, rel, res)
    for m in made:  # every method renders from the fit and has len(poses) views: an even split per view
        res.fit_share[m] = fit_seconds / len(made)
    o = session.options
    reference = view_pose_reference(rec.fit, session.model, o.size)  # one per photo, shared by its views
    for m, imgs in made.items():
        try:
            res.views.extend(score_views(imgs, o.poses, m, rel, identity, reference, session.encoder,
                                         res.source["descriptor"]))
        except Exception as exc:  # a scoring bug must not lose the other photos' results
            res.failures.append({"source": rel, "method": m, "error": f"{rel}: scoring {m}: {internal_error(exc)}"})


# ----------------------------------------------------------------------------------------------
# The cache of finished photos


def settings_key(options: CompareOptions, model: MorphableModel, makers: dict[str, ViewMaker]) -> str:
    """What a photo's views and scores depend on (the realism test's seed and real photos are not
    cached): the cache folder of a run; other flags use another folder. The background and the
    realism region (the cached realism features are read from it) are part of it."""
    weights = {}
    if "hybrid" in makers:
        s = makers["hybrid"].settings()
        weights["hybrid"] = [s["refiner_sha256"], s["refiner_inference"]]
    if "gan" in makers:
        weights["gan"] = makers["gan"].settings()["capg_sha256"]
    key = {"methods": list(options.methods), "yaw": [float(y) for y in options.yaws],
           "pitch": [float(p) for p in options.pitches], "size": options.size, "dense": bool(options.dense),
           "background": options.background, "model": model.name, "weights": weights, "version": 1,
           "render_version": max((v for v in map(render_version, options.methods) if v is not None), default=None)}
    if options.realism_region != "face":
        key["realism_region"] = options.realism_region
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


class PhotoCache:
    """``DIR/cache/<settings>/<photo>.npz``: each finished photo's views and scores, so that a run
    that was stopped continues where it stopped when the same command is run again. Plain arrays
    and JSON text only (``allow_pickle=False``); a photo file that changed since is done again."""

    def __init__(self, out: Path, key: str):
        self.dir = out / "cache" / key

    def _file(self, rel: str, path: Path) -> tuple[Path, str]:
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
                if meta["stamp"] != stamp or meta.get("crop") != CROP_SETTINGS:
                    return None  # changed since, or cached before the pixel test's crops (or with other crops)
                # each z[...] access decompresses the whole array: read each one once
                images, descriptors, features, crops = z["images"], z["descriptors"], z["features"], z["crops"]
                views = []
                for i, v in enumerate(meta["views"]):
                    det = v["detected"]
                    views.append({**v, "image": images[i],
                                  "descriptor": descriptors[i] if det else None,
                                  "feature": features[i] if det else None,
                                  "crop": crops[i] if det else None,
                                  "distance": float(v["distance"]), "pose_error": float(v["pose_error"])})
                source = {"identity": meta["identity"], "descriptor": z["source_descriptor"], "thumb": z["thumb"]}
            return PhotoResult(source, views, [], meta["gen_seconds"], meta["fit_share"], meta["n_views"])
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            return None  # unreadable or from another version: do the photo again

    def save(self, rel: str, path: Path, res: PhotoResult) -> None:
        f, stamp = self._file(rel, path)
        f.parent.mkdir(parents=True, exist_ok=True)
        size = res.source["thumb"].shape[0]
        meta = {"stamp": stamp, "crop": CROP_SETTINGS, "identity": res.source["identity"], "gen_seconds": res.gen_seconds,
                "fit_share": res.fit_share, "n_views": res.n_views,
                "views": [{k: (str(x) if k in ("distance", "pose_error") else x) for k, x in v.items()
                           if k not in ("image", "descriptor", "feature", "crop")} for v in res.views]}
        images = (np.stack([v["image"] for v in res.views]) if res.views else np.zeros((0, size, size, 3), np.uint8))
        buf = io.BytesIO()
        np.savez_compressed(buf, meta=np.array(json.dumps(meta)), source_descriptor=np.asarray(res.source["descriptor"]),
                            thumb=res.source["thumb"], images=images, **view_arrays(res.views))
        atomic_write_bytes(f, buf.getvalue())


def view_arrays(views: list[dict]) -> dict[str, np.ndarray]:
    """The views' descriptors (V, 128) and realism features (V, C) as arrays, NaN rows for views
    without a face, each in the dtype it was computed in (a resumed run scores exactly as a fresh one),
    and their pixel-test crops (V, CROP_SIZE, CROP_SIZE, 3) uint8, zero for views without a face."""
    found = [v for v in views if v["feature"] is not None]
    d_dtype = found[0]["descriptor"].dtype if found else np.float32
    f_dtype = found[0]["feature"].dtype if found else np.float32
    desc = np.full((len(views), 128), np.nan, d_dtype)
    feats = np.full((len(views), found[0]["feature"].shape[0] if found else 0), np.nan, f_dtype)
    crops = np.zeros((len(views), CROP_SIZE, CROP_SIZE, 3), np.uint8)
    for i, v in enumerate(views):
        if v["descriptor"] is not None:
            desc[i] = v["descriptor"]
            feats[i] = v["feature"]
            crops[i] = v["crop"]
    return {"descriptors": desc, "features": feats, "crops": crops}


# ----------------------------------------------------------------------------------------------
# The run's results


@dataclass
class RunResults:
    """Every photo's share, gathered: the views, the source photos, the failures and each method's
    generator seconds, fit share and view count."""

    methods: tuple[str, ...]
    views: list[dict] = field(default_factory=list)             # one record per (photo, method, pose)
    sources: dict[str, dict] = field(default_factory=dict)      # photo -> identity, descriptor, thumbnail
    failures: list[dict] = field(default_factory=list)
    gen_seconds: dict[str, float] = field(default_factory=dict)
    fit_share: dict[str, float] = field(default_factory=dict)
    n_views: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        for m in self.methods:
            self.gen_seconds.setdefault(m, 0.0)
            self.fit_share.setdefault(m, 0.0)
            self.n_views.setdefault(m, 0)

    def add(self, rel: str, done: PhotoResult) -> None:
        self.failures.extend(done.failures)
        if done.source is not None:
            self.sources[rel] = done.source
        self.views.extend(done.views)
        for m in self.methods:
            self.gen_seconds[m] += done.gen_seconds.get(m, 0.0)
            self.fit_share[m] += done.fit_share.get(m, 0.0)
            self.n_views[m] += done.n_views.get(m, 0)

    def seconds_per_view(self, m: str) -> float:
        return (self.gen_seconds[m] + self.fit_share[m]) / self.n_views[m] if self.n_views[m] else float("nan")


def collect(photos: list[tuple[str, Path]], session: CompareSession, cache: PhotoCache) -> RunResults:
    """Every photo's views and scores, from the cache or made now (and cached when nothing failed);
    the photos not cached are fitted COMPARE_BATCH_SIZE at a time (`fit_photos`)."""
    results = RunResults(session.options.methods)
    bar = tqdm(total=len(photos), desc="compare", unit="photo")
    for start in range(0, len(photos), COMPARE_BATCH_SIZE):
        chunk = photos[start:start + COMPARE_BATCH_SIZE]
        rels = [f"{identity}/{path.name}" for identity, path in chunk]
        bar.set_postfix_str(rels[0][-40:])
        done = [cache.load(rel, path) for rel, (_, path) in zip(rels, chunk)]
        todo = [k for k, d in enumerate(done) if d is None]
        for k, res in zip(todo, fit_photos(session, [chunk[k] for k in todo])):
            done[k] = res
            if not res.failures:
                cache.save(rels[k], chunk[k][1], res)
        for rel, res in zip(rels, done):
            for f in res.failures:
                tqdm.write(f"facesynth compare: {f['error']}")
            results.add(rel, res)
            bar.update(1)
    bar.close()
    return results


def real_photo_features(lfw: Path, n: int, seed: int, enc: FaceEncoder, info: dict, model: MorphableModel | None = None):
    """The realism features of `n` seeded LFW photos, detected and aligned as the views are;
    `info` counts the photos used, unreadable and without a face. With `model`, also the pixel
    test's crops of the same photos and their yaw (`photo_pose` against the model's mean shape),
    as a `RealCrops` (else None)."""
    imgs, lms, names = [], [], []
    for path in tqdm(choose_real_photos(lfw, n, seed), desc="real photos", unit="photo"):
        try:
            img = load_image(path)
        except FaceSynthError:
            info["unreadable"] += 1
            continue
        faces = detect_faces(img, upsample=1, profile_landmarks=False)     # aligned as the views (metrics.detect_view_face)
        if not faces:
            info["no_face"] += 1
            continue
        imgs.append(img)
        lms.append(faces[0].landmarks)
        names.append(path.parent.name)
    info["used"] = len(imgs)
    _, feats = enc.encode(imgs, lms)
    crops = None
    if model is not None:
        crops = RealCrops.of(imgs, lms, [photo_yaw(lm, model, im.shape[:2]) for im, lm in zip(imgs, lms)], names)
    return feats, info, crops


def photo_yaw(landmarks: np.ndarray, model: MorphableModel, shape) -> float:
    """A real photo's yaw for the pixel test (`photo_pose`), NaN when PnP cannot be solved."""
    try:
        return photo_pose(landmarks, model, shape).yaw
    except ValueError:
        return float("nan")


@dataclass
class SourcePhotos:
    """The source photos that had a face, as the cross-verification's real side: names, identities
    and descriptors (Q, 128)."""

    names: list[str]
    identities: np.ndarray
    descriptors: np.ndarray

    @classmethod
    def of(cls, sources: dict[str, dict]) -> "SourcePhotos":
        names = list(sources)
        desc = np.stack([sources[p]["descriptor"] for p in names]) if names else np.zeros((0, 128))
        return cls(names, np.array([sources[p]["identity"] for p in names]), desc)

    @property
    def people(self) -> int:
        return len(set(self.identities.tolist()))


def cross_verification(vs: list[dict], photos: SourcePhotos) -> tuple[float, int, int]:
    """Accuracy, pairs and same-identity pairs of the views `vs` against every other source photo;
    (NaN, 0, 0) with fewer than two people."""
    if photos.people < 2 or not vs:
        return float("nan"), 0, 0
    dist = np.full((len(vs), len(photos.names)), np.inf)
    for i, v in enumerate(vs):
        if v["descriptor"] is not None:
            dist[i] = np.linalg.norm(photos.descriptors - v["descriptor"], axis=1)
    same = np.array([[v["identity"] == qi for qi in photos.identities] for v in vs])
    valid = np.array([[v["photo"] != qp for qp in photos.names] for v in vs])
    cv, pairs = cross_verification_accuracy(dist, same, valid)
    return cv, pairs, int((same & valid).sum())


def score_block(vs: list[dict], photos: SourcePhotos, real_feats: np.ndarray, seed: int):
    """The metrics of one set of views (a method's, all yaws or one), their counts and the realism
    test's details."""
    cv, pairs, same_pairs = cross_verification(vs, photos)
    fakes = [v["feature"] for v in vs if v["feature"] is not None]
    t = (c2st(real_feats, np.array(fakes), seed=seed, min_per_class=MIN_C2ST_PER_CLASS)
         if len(real_feats) and fakes else no_c2st())
    counts = {"views": len(vs), "no_face": sum(not v["detected"] for v in vs), "pairs": pairs,
              "same_identity_pairs": same_pairs, "realism_real": int(len(real_feats)), "realism_fake": len(fakes)}
    values = {"identity_to_source": finite_median(v["distance"] for v in vs), "cross_verification": cv,
              "pose_error": finite_median(v["pose_error"] for v in vs), "realism": t["accuracy"]}
    return values, counts, {k: t[k] for k in ("n_per_class", "n_train", "n_test", "p_value")}


def pixel_values(pixel: dict | None, method: str, yaw: str | None) -> float:
    """`pixel_realism` of a method over all yaws (yaw None) or of the |yaw| bin holding `yaw`; NaN
    when the pixel test did not run or the bin is not testable."""
    if pixel is None:
        return float("nan")
    res = pixel["methods"][method]
    if yaw is None:
        return res["all"]["accuracy"]
    k = yaw_bin(float(yaw))
    return res["bins"][bin_name(k)]["accuracy"] if k is not None else float("nan")


def in_order(values: dict) -> dict:
    """A metrics block with its keys in `METRIC_NAMES` order."""
    return {n: values[n] for n in METRIC_NAMES}


def aggregate(results: RunResults, yaw_keys: list[str], real_feats: np.ndarray, seed: int, region: str = "face",
              pixel: dict | None = None):
    """metrics {method: {"all": {...}, "per_yaw": {yaw: {...}}}}, counts and realism details; the
    realism test of all yaws is seeded `seed`, that of the k-th yaw `seed + 1 + k`. `pixel`: the
    pixel test's results (`pixel.pixel_realism`), or None when it did not run."""
    photos = SourcePhotos.of(results.sources)
    metrics, counts = {}, {}
    realism = {**realism_method(region), "min_per_class": MIN_C2ST_PER_CLASS, "real_vs": {}}
    for m in results.methods:
        mv = [v for v in results.views if v["method"] == m]
        spv = results.seconds_per_view(m)
        a, c, r = score_block(mv, photos, real_feats, seed)
        metrics[m] = {"all": in_order({**a, "pixel_realism": pixel_values(pixel, m, None), "seconds_per_view": spv}),
                      "per_yaw": {}}
        counts[m] = {"all": c, "per_yaw": {}}
        realism["real_vs"][m] = {"all": r, "per_yaw": {}}
        for k, y in enumerate(yaw_keys):
            a, c, r = score_block([v for v in mv if v["yaw"] == y], photos, real_feats, seed + 1 + k)
            metrics[m]["per_yaw"][y] = in_order({**a, "pixel_realism": pixel_values(pixel, m, y),
                                                 "seconds_per_view": spv})
            counts[m]["per_yaw"][y] = c
            realism["real_vs"][m]["per_yaw"][y] = r
    return json_ready(metrics), counts, json_ready(realism)


def pixel_info(options: CompareOptions, pixel: dict | None) -> dict:
    """metrics.json's info.pixel_realism: how the test is made, each method's bins and the controls."""
    if pixel is None:
        why = ("--no-pixel-realism" if not options.pixel_realism else "no real photos (--real-photos 0) or no views")
        return {"note": f"not run: {why}"}
    return json_ready({**PIXEL_METHOD, "min_per_class": MIN_PER_CLASS, "folds": FOLDS,
                       "real_vs": pixel["methods"], "controls": pixel["controls"]})


def run_info(options: CompareOptions, photos: list[tuple[str, Path]], results: RunResults, counts: dict,
             realism: dict, real_info: dict, pixel: dict | None = None) -> dict:
    """metrics.json's info: the settings, how each metric is made, the counts and the failures."""
    n_ids = len({s["identity"] for s in results.sources.values()})
    failures = results.failures
    return {
        "input": str(options.input), "photos": len(photos),
        "photos_ok": len(photos) - len({f["source"] for f in failures}),
        "identities": sorted({i for i, _ in photos}), "methods": list(options.methods),
        "yaw": [float(y) for y in options.yaws], "pitch": [float(p) for p in options.pitches], "size": options.size,
        "threshold": THRESHOLD, "seed": options.seed, "dense_fit": options.dense,
        "background": options.background, "realism_region": options.realism_region,
        "descriptor": DESCRIPTOR_NOTE,
        "cross_verification": ({"note": f"needs photos of at least two people; INPUT has {n_ids} usable identity"}
                               if n_ids < 2 else {"note": "pairs (view, every other usable photo of INPUT)"}),
        "seconds_per_view": SECONDS_NOTE,
        "realism": {**realism, "real_photos": {**real_info,
                                               "lfw": str(options.lfw_folder) if options.real_photos else None}},
        "pixel_realism": pixel_info(options, pixel),
        "counts": counts,
        "failures": failures,
    }


def run_comparison(options: CompareOptions) -> int:
    """Run `options`; returns the exit code (0 every photo done, 1 some failed). UsageError: INPUT,
    --out or --lfw cannot be used (nothing is written)."""
    photos = check_inputs(options)
    if options.threads:
        torch.set_num_threads(options.threads)
    session = open_session(options)
    cache = PhotoCache(options.out, settings_key(options, session.model, session.makers))
    results = collect(photos, session, cache)
    real_feats, real_crops, pixel = np.zeros((0, 0)), None, None
    real_info = {"requested": options.real_photos, "used": 0, "no_face": 0, "unreadable": 0}
    if options.real_photos and results.views:
        real_feats, real_info, real_crops = real_photo_features(
            options.lfw_folder, options.real_photos, options.seed, session.encoder, real_info,
            session.model if options.pixel_realism else None)
    if real_crops is not None:
        t0 = time.perf_counter()
        pixel = pixel_realism(results.views, options.methods, real_crops, options.seed)
        print(f"facesynth compare: pixel realism test {time.perf_counter() - t0:.1f} s")
    metrics, counts, realism = aggregate(results, options.yaw_keys, real_feats, options.seed, options.realism_region,
                                         pixel)
    info = run_info(options, photos, results, counts, realism, real_info, pixel)
    write_outputs(options.out, {"methods": metrics, "info": info}, results.views, results.sources,
                  list(options.methods), options.poses)
    print(f"facesynth compare: {info['photos_ok']} of {len(photos)} photo(s) done, {len(options.methods)} method(s) "
          f"x {len(options.poses)} pose(s); report: {options.out / 'report.html'}")
    return 0 if not results.failures else 1


def run_compare(args) -> int:
    """`facesynth compare`: the parsed flags as CompareOptions. A UsageError (INPUT, --out or --lfw
    unusable) is bad usage: `facesynth.cli.main` exits 2 for it, like for the parser's own errors."""
    options = CompareOptions(input=Path(args.input), out=Path(args.out), yaws=tuple(args.yaw),
                             pitches=tuple(args.pitch), methods=tuple(args.methods), size=args.size,
                             background=args.background,
                             lfw=Path(args.lfw) if args.lfw else None, real_photos=args.real_photos,
                             refiner=args.refiner, capg=args.capg, model=args.model, dense=args.dense,
                             seed=args.seed, threads=args.threads, realism_region=args.realism_region,
                             pixel_realism=args.pixel_realism, device=args.device)
    return run_comparison(options)
