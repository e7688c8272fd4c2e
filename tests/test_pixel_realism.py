"""The pixel-level realism test of `facesynth compare` (issue 25): the CNN C2ST, the yaw-bin matching,
the masked crops, the photo's pose without a fit, and the crops in compare's per-photo cache."""
from __future__ import annotations

import numpy as np
import pytest

from facesynth.compare import pixel


def smooth_images(rng: np.random.Generator, n: int, size: int = 24) -> np.ndarray:
    """n random smooth colour images (4 x 4 random colours upsampled), uint8 (n, size, size, 3)."""
    import cv2

    base = rng.uniform(0, 255, (n, 4, 4, 3)).astype(np.float32)
    return np.stack([cv2.resize(b, (size, size), interpolation=cv2.INTER_CUBIC) for b in base]).clip(0, 255).astype(np.uint8)


def test_cnn_c2st_same_distribution_is_chance():
    rng = np.random.default_rng(1)
    imgs = smooth_images(rng, 120)
    t = pixel.cnn_c2st(imgs[:60], imgs[60:], seed=0)
    assert t["n_per_class"] == 60 and sum(t["fold_sizes"]) == 120 and len(t["folds"]) == pixel.FOLDS
    assert abs(t["accuracy"] - 0.5) < 0.15, t
    assert t["accuracy"] == pytest.approx(np.average(t["folds"], weights=t["fold_sizes"]))


def test_cnn_c2st_tells_noisy_from_clean():
    """The same kind of images, one class with pixel noise (sigma 20 levels): told apart."""
    rng = np.random.default_rng(2)
    imgs = smooth_images(rng, 120)
    noisy = (imgs[60:] + rng.normal(0, 20, imgs[60:].shape)).clip(0, 255).astype(np.uint8)
    t = pixel.cnn_c2st(imgs[:60], noisy, seed=0)
    assert t["accuracy"] > 0.8 and t["p_value"] < 1e-4, t
    assert np.isnan(pixel.cnn_c2st(imgs[:10], noisy[:10])["accuracy"])      # under MIN_PER_CLASS: not run


def test_grouped_folds_keep_groups_together_and_balance_classes():
    labels = np.repeat([0, 1], 50)
    groups = np.array([f"p{i // 3}" for i in range(100)])                     # a group of 3; p16 spans both classes
    fold = pixel.grouped_folds(labels, groups, 5, np.random.default_rng(0))
    for g in np.unique(groups):
        assert len(set(fold[groups == g])) == 1
    per_fold = np.array([[np.sum((fold == f) & (labels == c)) for c in (0, 1)] for f in range(5)])
    assert per_fold.min() >= 8 and per_fold.max() <= 12


def test_matching_drops_bins_with_too_few_real_crops(monkeypatch):
    """Bin 0: 30 real, 40 generated -> 30 of each tested. Bin 15: 5 real -> not testable (null), never
    pooled; the overall test gets the testable bins' draws only. Left-turned crops are mirrored."""
    calls = []

    def fake_c2st(real, fake, seed=0, real_groups=None, fake_groups=None, **kw):
        calls.append((real, fake))
        return {**pixel.no_pixel_c2st(len(real), len(fake)), "accuracy": 0.75, "folds": [0.75]}

    monkeypatch.setattr(pixel, "cnn_c2st", fake_c2st)
    s = pixel.CROP_SIZE
    chips = np.zeros((35, s, s, 3), np.uint8)
    chips[:, :, : s // 2] = 200                                              # a bright left half
    real = pixel.RealCrops(chips, np.ones((35, s, s), bool), np.r_[np.full(30, 3.0), np.full(5, -15.0)],
                           np.array([f"r{i}" for i in range(35)]))
    view = np.zeros((s, s, 3), np.uint8)
    view[:, : s // 2] = 200
    views = ([{"method": "3d", "yaw": y, "identity": f"v{i}", "crop": view} for i, y in enumerate([0.0, -0.0] * 20)]
             + [{"method": "3d", "yaw": y, "identity": f"w{i}", "crop": view} for i, y in enumerate([15.0, -15.0] * 20)]
             + [{"method": "3d", "yaw": 0.0, "identity": "x", "crop": None}])    # no face: left out
    res = pixel.method_pixel_realism(real, real.crops(), [v for v in views if v["crop"] is not None], seed=0)
    b0, b15 = res["bins"]["0-7.5"], res["bins"]["7.5-22.5"]
    assert (b0["real"], b0["generated"], b0["testable"], b0["accuracy"]) == (30, 40, True, 0.75)
    assert (b15["real"], b15["generated"], b15["testable"]) == (5, 40, False) and np.isnan(b15["accuracy"])
    assert res["all"]["bins"] == ["0-7.5"]
    assert len(calls) == 2 and all(len(r) == len(f) == 30 for r, f in calls)  # bin 0, then the pooled test
    assert all(res["bins"][b]["generated"] == 0 for b in ("22.5-37.5", "37.5-52.5", "52.5-67.5", "67.5-90"))
    # mirrored: the real crops of yaw -15 face the other way; views at yaw 0 are kept as they are
    assert real.crops()[-1][:, -1].min() == 200 and real.crops()[0][:, 0].min() == 200
    assert pixel.yaw_bin(-7.5) == 1 and pixel.yaw_bin(90.0) == 5 and pixel.yaw_bin(float("nan")) is None


def test_pixel_crop_is_aligned_and_masked_outside_the_hull(obama_image):
    from facesynth.compare.metrics import detect_view_face, face_region
    from ganrefine.identity import align_faces

    face = detect_view_face(obama_image)
    chip, mask = pixel.pixel_crop_parts(obama_image, face.landmarks)
    crop = pixel.pixel_crop(obama_image, face.landmarks)
    assert crop.shape == (pixel.CROP_SIZE, pixel.CROP_SIZE, 3) and crop.dtype == np.uint8
    assert 0.3 < mask.mean() < 0.8                                           # the face, not the whole chip
    assert (crop[~mask] == 128).all() and (crop[mask] != 128).any(axis=-1).mean() > 0.9
    np.testing.assert_array_equal(crop[mask], chip[mask])
    # the same alignment and hull as the identity-feature test: its masked image aligned at 64 px
    ref = align_faces([face_region(obama_image, face.landmarks)], face.landmarks[None], size=pixel.CROP_SIZE)[0]
    ref = ref.permute(1, 2, 0).numpy()
    import cv2

    inner = cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert np.abs(ref[inner] - crop[inner].astype(np.float32)).max() <= 2.0
    blurred = pixel.apply_mask(chip, mask, pixel.BLUR_SIGMA)
    assert (blurred[~mask] == 128).all() and np.abs(blurred[inner].astype(int) - crop[inner]).mean() > 1.0


def test_photo_pose_reads_the_yaw_of_a_turned_face(obama_image, ict_model):
    """PnP against the mean shape: a photo and its mirror image have opposite yaws."""
    from face3d.pose_estimation import photo_pose
    from facesynth.compare.metrics import detect_view_face

    a = photo_pose(detect_view_face(obama_image).landmarks, ict_model, obama_image.shape[:2])
    flipped = np.ascontiguousarray(obama_image[:, ::-1])
    b = photo_pose(detect_view_face(flipped).landmarks, ict_model, flipped.shape[:2])
    assert abs(a.yaw) < 25 and a.yaw == pytest.approx(-b.yaw, abs=2.0)


def test_cache_keeps_the_crops_and_refuses_entries_without_them(tmp_path):
    from facesynth.compare import job

    photo = tmp_path / "p.jpg"
    photo.write_bytes(b"x")
    crop = np.arange(pixel.CROP_SIZE ** 2 * 3, dtype=np.uint32).reshape(pixel.CROP_SIZE, pixel.CROP_SIZE, 3) % 251
    view = {"photo": "a/p.jpg", "identity": "a", "method": "3d", "yaw": "0", "pitch": 0.0, "detected": True,
            "distance": 0.3, "pose_error": 1.0, "image": np.zeros((32, 32, 3), np.uint8),
            "descriptor": np.ones(128), "feature": np.ones(4), "crop": crop.astype(np.uint8)}
    missed = {**view, "detected": False, "descriptor": None, "feature": None, "crop": None}
    res = job.PhotoResult({"identity": "a", "descriptor": np.ones(128), "thumb": np.zeros((32, 32, 3), np.uint8)},
                          [view, missed], [], {"3d": 1.0}, {"3d": 0.5}, {"3d": 2})
    cache = job.PhotoCache(tmp_path, "k")
    cache.save("a/p.jpg", photo, res)
    back = cache.load("a/p.jpg", photo)
    np.testing.assert_array_equal(back.views[0]["crop"], view["crop"])
    assert back.views[1]["crop"] is None
    cache_settings = dict(pixel.CROP_SETTINGS)
    pixel.CROP_SETTINGS["version"] = -1          # crops made another way: the photo is done again
    try:
        assert cache.load("a/p.jpg", photo) is None
    finally:
        pixel.CROP_SETTINGS.clear()
        pixel.CROP_SETTINGS.update(cache_settings)
