"""`facesynth learn-profile-landmarks`: train the 68-point predictor for turned faces
(`face3d.landmarks.profile_predictor_path`) on the toolkit's own labelled views of LFW's train identities.

dlib's 68-point predictor was trained on 300-W, whose faces rarely turn beyond 45 degrees: on a face
at 75-90 degrees it places a frontal face's points, and the fit of such a photo is off by tens of
degrees of yaw. A re-posing tool knows where every landmark of a view it renders lands (what made
300W-LP, Zhu et al. CVPR 2016, the standard large-pose training set), so the predictor for turned
faces is learnt from `3d` whole-photo views of LFW train photos at |yaw| 30-90 (and one near-frontal
view each) with their labels
(`face3d.labels`: the jaw on the visible outline, as dlib puts it; hidden inner points where the
model projects them).

    CACHE/views/<identity>/<photo>.npz   the views of one photo: images (5, S, S, 3) uint8,
                                         landmarks (5, 68, 2), visible (5, 68), poses (5, 3)
    CACHE/failed.txt                     photos without a usable face, one per line with the reason
    CACHE/split.json                     the identity split (the refiner's: `ganrefine.pairs.split_lfw`)
    CACHE/boxes.json                     how the CNN detector's box sits on a view's landmarks

The predictor is trained on the box the CNN detector gives (it is used where the CNN finds the face).
Running the CNN on every training view would cost ~1.3 s each, so it runs on the views of the first
`--box-photos` photos, and every view's box is the landmarks' box moved and scaled as the CNN's box
is on those (`BoxModel`), jittered by the spread measured there. Photos' views are written one file
per photo as they are made: a stopped run continues where it stopped. Recipe and measurements:
docs/training.md and assets/landmarks/MODEL_CARD.md.
"""
from __future__ import annotations

import io
import json
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from face3d.camera import Pose
from face3d.errors import FaceSynthError
from face3d.image_io import atomic_write_bytes, load_image
from face3d.landmarks import cnn_boxes
from face3d.morphable_model import load_morphable_model
from facesynth.failures import failure_reason, read_failures, write_failures
from ganrefine.pairs import split_lfw_into
from ganrefine.refiner import mirror_landmarks

SIZE = 192                  # views are rendered at this size (px)
TURNED_VIEWS = 4            # per photo: two turned left, two right, |yaw| drawn uniformly in YAW_RANGE
YAW_RANGE = (30.0, 90.0)
#: and one view near frontal (|yaw| drawn in this range, either way): the predictor then knows a
#: frontal face and says so (its points' `turn_index` near 0), where one that saw only turned faces
#: put a profile's points on some frontal photos
NEAR_FRONTAL_RANGE = (0.0, 30.0)
PITCH_RANGE = (-20.0, 15.0)
ROLL_RANGE = (-10.0, 10.0)


def views_path(cache: Path, photo: Path) -> Path:
    return cache / "views" / photo.parent.name / (photo.stem + ".npz")


def view_poses(photo: Path, seed: int) -> list[Pose]:
    """The poses of one photo's training views: `TURNED_VIEWS` turned, half each way, and one near
    frontal; |yaw|, pitch and roll drawn uniformly (seeded by the photo's name, so a resumed run
    draws the same)."""
    rng = random.Random(f"{seed}:{photo.name}")
    out = []
    for k in range(TURNED_VIEWS):
        sign = 1.0 if k % 2 == 0 else -1.0
        out.append(Pose(sign * rng.uniform(*YAW_RANGE), rng.uniform(*PITCH_RANGE), rng.uniform(*ROLL_RANGE)))
    sign = rng.choice((-1.0, 1.0))
    out.append(Pose(sign * rng.uniform(*NEAR_FRONTAL_RANGE), rng.uniform(*PITCH_RANGE), rng.uniform(*ROLL_RANGE)))
    return out


def render_training_views(photos: list[Path], cache: Path, model, seed: int = 0, shard: tuple[int, int] = (0, 1)) -> dict:
    """Render and label every photo of `photos` (those of this shard) not yet in `cache`."""
    from facesynth.api import RenderOptions, rotate  # deferred: the application layer's renderer

    index, count = shard
    mine = [p for i, p in enumerate(photos) if i % count == index]
    failed_path = cache / f"failed{'' if count == 1 else f'.{index}'}.txt"
    failed = read_failures(failed_path)
    todo = [p for p in mine if not views_path(cache, p).exists() and str(p) not in failed]
    done = len(mine) - len(todo)
    options = RenderOptions(method="3d", size=SIZE, labels=True)
    made = 0
    for p in tqdm(todo, total=len(mine), initial=done, desc="views", unit="photo"):
        poses = view_poses(p, seed)
        try:
            views = rotate(load_image(p), poses, options=options, model=model)[0]
        except Exception as exc:  # one photo's failure is that photo's alone
            failed[str(p)] = failure_reason(p, exc)
            write_failures(failed_path, failed)
        else:
            buf = io.BytesIO()
            np.savez_compressed(buf, images=np.asarray(views.images, np.uint8),
                                landmarks=np.stack([l.landmarks for l in views.labels]).astype(np.float32),
                                visible=np.stack([l.visible for l in views.labels]),
                                poses=np.array([[q.yaw, q.pitch, q.roll] for q in poses], np.float32))
            out = views_path(cache, p)
            out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(out, buf.getvalue())
            made += 1
    return {"made": made, "already_done": done, "failed": len(failed)}


@dataclass
class BoxModel:
    """The CNN detector's box on a turned face from the landmarks' box (all 68 points, hidden ones
    where the model projects them): centre = landmarks' centre + (dx0 + dx1 * sign(yaw), dy) * side,
    side (the box's mean of width and height) = scale * the landmarks' side; the residual spread
    (standard deviation of the centre, in sides; of log side) jitters the training boxes."""

    dx0: float
    dx1: float
    dy: float
    scale: float
    centre_sd: float
    log_side_sd: float
    views: int
    found: int

    def box(self, landmarks: np.ndarray, yaw: float, rng: np.random.Generator | None = None) -> tuple[int, int, int, int]:
        cx, cy, side = _landmark_box(landmarks)
        cx += (self.dx0 + self.dx1 * np.sign(yaw)) * side
        cy += self.dy * side
        side *= self.scale
        if rng is not None:
            cx += rng.normal(0.0, self.centre_sd) * side
            cy += rng.normal(0.0, self.centre_sd) * side
            side *= float(np.exp(rng.normal(0.0, self.log_side_sd)))
        h = 0.5 * side
        return (int(round(cx - h)), int(round(cy - h)), int(round(cx + h)), int(round(cy + h)))


def _landmark_box(landmarks: np.ndarray) -> tuple[float, float, float]:
    lo, hi = landmarks.min(axis=0), landmarks.max(axis=0)
    return float(0.5 * (lo[0] + hi[0])), float(0.5 * (lo[1] + hi[1])), float(0.5 * ((hi[0] - lo[0]) + (hi[1] - lo[1])))


def calibrate_boxes(files: list[Path]) -> BoxModel:
    """Run the CNN detector on the views in `files` and fit `BoxModel` to the boxes it finds
    (the largest box whose centre lies in the landmarks' box)."""
    rows = []
    views = 0
    for f in tqdm(files, desc="cnn boxes", unit="photo"):
        with np.load(f) as z:
            images, landmarks, poses = z["images"], z["landmarks"], z["poses"]
        for img, lm, pose in zip(images, landmarks, poses):
            views += 1
            cx, cy, side = _landmark_box(lm)
            inside = [b for b in cnn_boxes(img) if abs(0.5 * (b[0] + b[2]) - cx) < 0.5 * side
                      and abs(0.5 * (b[1] + b[3]) - cy) < 0.5 * side]
            if not inside:
                continue
            l, t, r, b = max(inside, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
            bside = 0.5 * ((r - l) + (b - t))
            rows.append((np.sign(pose[0]), (0.5 * (l + r) - cx) / side, (0.5 * (t + b) - cy) / side, bside / side))
    if len(rows) < 20:
        raise FaceSynthError(f"the CNN detector found {len(rows)} of {views} calibration views; too few to calibrate")
    a = np.asarray(rows, np.float64)
    (dx0, dx1), *_ = np.linalg.lstsq(np.stack([np.ones(len(a)), a[:, 0]], 1), a[:, 1], rcond=None)
    dy = float(np.median(a[:, 2]))
    scale = float(np.exp(np.median(np.log(a[:, 3]))))
    res_x = a[:, 1] - (dx0 + dx1 * a[:, 0])
    centre_sd = float(np.std(np.concatenate([res_x, a[:, 2] - dy])) / scale)
    log_side_sd = float(np.std(np.log(a[:, 3] / scale)))
    return BoxModel(float(dx0), float(dx1), dy, scale, centre_sd, log_side_sd, views, len(rows))


@dataclass(frozen=True)
class PredictorTrainConfig:
    """dlib's regression-tree cascade (Kazemi and Sullivan, CVPR 2014) at a size that ships:
    size about cascade_depth x trees x 2**tree_depth leaves x 136 floats and the splits (16.6 MB
    with these)."""

    cascade_depth: int = 10
    trees: int = 125
    tree_depth: int = 4
    oversampling: int = 10
    feature_pool: int = 400
    test_splits: int = 20
    nu: float = 0.1
    threads: int = 2
    test_fraction: float = 0.1
    seed: int = 0


def training_samples(files: list[Path], boxes: BoxModel, seed: int):
    """(images, [[full_object_detection]], landmarks, yaws) of every view in `files`, and of its
    mirror image (the view turned the other way, points renumbered)."""
    import dlib  # deferred: dlib is needed by the training alone

    rng = np.random.default_rng(seed)
    images, objects, points, yaws = [], [], [], []
    for f in tqdm(files, desc="load", unit="photo"):
        with np.load(f) as z:
            imgs, lms, poses = z["images"], z["landmarks"], z["poses"]
        for img, lm, pose in zip(imgs, lms, poses):
            lm = lm.astype(np.float64)
            pairs = [(img, lm, float(pose[0])),
                     (np.ascontiguousarray(img[:, ::-1]), mirror_landmarks(lm, img.shape[1]), -float(pose[0]))]
            for im, pts, yaw in pairs:
                l, t, r, b = boxes.box(pts, yaw, rng)
                parts = [dlib.point(int(round(x - 0.5)), int(round(y - 0.5))) for x, y in pts]
                images.append(im)
                objects.append([dlib.full_object_detection(dlib.rectangle(l, t, r, b), parts)])
                points.append(pts)
                yaws.append(yaw)
    return images, objects, points, yaws


def predictor_errors(predictor, images, objects, points) -> np.ndarray:
    """Per view: the median point error of `predictor` in its box, as % of the box side."""
    out = []
    for img, obj, pts in zip(images, objects, points):
        rect = obj[0].rect
        shape = predictor(img, rect)
        got = np.array([[p.x + 0.5, p.y + 0.5] for p in shape.parts()])
        out.append(100.0 * np.median(np.linalg.norm(got - pts, axis=1)) / max(1, rect.width()))
    return np.asarray(out)


def train_profile_predictor(files: list[Path], boxes: BoxModel, out: Path, cfg: PredictorTrainConfig) -> dict:
    """Train on the photos of `files` but a held-out `test_fraction` (by photo), report both errors,
    save the predictor to `out` (dlib's format, written to a temporary file, then renamed)."""
    import dlib  # deferred: as in training_samples

    order = list(files)
    random.Random(cfg.seed).shuffle(order)
    n_test = max(1, int(round(cfg.test_fraction * len(order))))
    test_files, train_files = order[:n_test], order[n_test:]
    images, objects, _, _ = training_samples(train_files, boxes, cfg.seed)
    t_images, t_objects, t_points, t_yaws = training_samples(test_files, boxes, cfg.seed + 1)
    opts = dlib.shape_predictor_training_options()
    opts.cascade_depth, opts.num_trees_per_cascade_level, opts.tree_depth = cfg.cascade_depth, cfg.trees, cfg.tree_depth
    opts.oversampling_amount, opts.feature_pool_size, opts.num_test_splits = cfg.oversampling, cfg.feature_pool, cfg.test_splits
    opts.nu, opts.num_threads, opts.be_verbose = cfg.nu, cfg.threads, True
    opts.random_seed = str(cfg.seed)
    t0 = time.time()
    predictor = dlib.train_shape_predictor(images, objects, opts)
    seconds = time.time() - t0
    tmp = out.with_name(out.name + ".tmp")
    predictor.save(str(tmp))
    tmp.replace(out)
    err = predictor_errors(predictor, t_images, t_objects, t_points)
    yaws = np.abs(np.asarray(t_yaws))
    bins = {f"{lo}-{lo + 15}": round(float(np.median(err[(yaws >= lo) & (yaws < lo + 15)])), 2)
            for lo in (0, 15, 30, 45, 60, 75) if ((yaws >= lo) & (yaws < lo + 15)).any()}
    return {"train_views": len(images), "test_views": len(t_images), "train_photos": len(train_files),
            "test_photos": len(test_files), "test_files": [str(f) for f in test_files], "train_seconds": round(seconds, 1),
            "test_median_error_pct_box": round(float(np.median(err)), 2), "test_error_by_abs_yaw": bins,
            "bytes": out.stat().st_size, "config": asdict(cfg)}


def run_learn_profile_landmarks(args) -> int:
    torch.set_num_threads(args.threads or 1)
    cache = Path(args.cache)
    model = load_morphable_model(args.model)
    split = split_lfw_into(cache, Path(args.lfw), args.photos, args.seed, SIZE)
    t0 = time.time()
    counts = render_training_views(split.train, cache, model, args.seed, args.shard)
    print(f"views: {counts['made']} photos made, {counts['already_done']} already done, {counts['failed']} failed "
          f"({time.time() - t0:.0f} s)")
    if args.views_only:
        return 0
    files = [views_path(cache, p) for p in split.train if views_path(cache, p).exists()]
    box_file = cache / "boxes.json"
    if box_file.exists():
        boxes = BoxModel(**json.loads(box_file.read_text()))
    else:
        boxes = calibrate_boxes(files[:args.box_photos])
        atomic_write_bytes(box_file, json.dumps(asdict(boxes), indent=1).encode())
    print(f"CNN boxes: found on {boxes.found} of {boxes.views} views; {asdict(boxes)}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cfg = PredictorTrainConfig(trees=args.trees, threads=args.threads or 2, seed=args.seed)
    report = train_profile_predictor(files, boxes, out, cfg)
    report.update({"boxes": asdict(boxes), "photos_with_views": len(files)})
    atomic_write_bytes(out.with_suffix(".json"), json.dumps(report, indent=1).encode())
    print(json.dumps(report, indent=1))
    print(f"profile predictor -> {out} ({out.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)
    return 0
