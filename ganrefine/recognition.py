"""Recognition via synthesis: does 3D, GAN or hybrid augmentation help a face recogniser?

The protocol TP-GAN (Huang et al. 2017) and Masi et al. (2016) report, on held-out identities:
gallery = one photo per person, probes = their other photos, the recogniser = dlib's 128-D
descriptor (Euclidean distance). Conditions:

    none              gallery photo vs probe photo
    gallery+METHOD    the gallery is augmented with METHOD's views of each gallery photo at several
                      yaws; a probe's distance to a person is the minimum over that person's set
    frontal+METHOD    every probe is replaced by METHOD's frontal view (yaw 0, pitch 0) of it

Measures, overall and per probe |yaw| bin (the probe photo's fitted yaw):

    rank1             identification: the nearest gallery person is the right one
    verification      balanced accuracy of every (probe, gallery person) pair at dlib's 0.6:
                      (same-person pairs accepted + different-person pairs rejected) / 2, because
                      different-person pairs outnumber same-person ones by the gallery size
    auc               area under the ROC of the same pairs (threshold-free)

The functions here are plain numpy on distance matrices; `benchmarks/bench_recognition.py`
generates the views and prints the table.
"""
from __future__ import annotations

import numpy as np

THRESHOLD = 0.6
#: Probe |yaw| bins, degrees: [lo, hi).
YAW_BINS = ((0.0, 10.0), (10.0, 20.0), (20.0, 90.0))


def set_distances(probes: np.ndarray, gallery_sets: list[np.ndarray]) -> np.ndarray:
    """(P, G) distance of each probe descriptor (P, D) to each gallery person: the minimum over
    that person's descriptors (gallery_sets[g]: (n_g, D), n_g >= 1)."""
    probes = np.asarray(probes, np.float64)
    out = np.empty((len(probes), len(gallery_sets)))
    for g, s in enumerate(gallery_sets):
        d = np.linalg.norm(probes[:, None, :] - np.asarray(s, np.float64)[None, :, :], axis=-1)
        out[:, g] = d.min(axis=1)
    return out


def rank1(dist: np.ndarray, probe_ids: np.ndarray, gallery_ids: np.ndarray) -> float:
    """Share of probes whose nearest gallery person is their own identity."""
    if len(dist) == 0:
        return float("nan")
    return float(np.mean(np.asarray(gallery_ids)[np.argmin(dist, axis=1)] == np.asarray(probe_ids)))


def roc_auc(scores_same: np.ndarray, scores_diff: np.ndarray) -> float:
    """P(distance of a random same pair < that of a random different pair), ties counted half
    (the Mann-Whitney form of the ROC area)."""
    a, b = np.asarray(scores_same, np.float64), np.sort(np.asarray(scores_diff, np.float64))
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    less = len(b) - np.searchsorted(b, a, side="right")      # different pairs farther than each same pair
    ties = np.searchsorted(b, a, side="right") - np.searchsorted(b, a, side="left")
    return float((less + 0.5 * ties).sum() / (len(a) * len(b)))


def verification(dist: np.ndarray, probe_ids: np.ndarray, gallery_ids: np.ndarray,
                 threshold: float = THRESHOLD) -> dict:
    """Balanced accuracy at `threshold` and ROC AUC of every (probe, gallery person) pair."""
    same = np.asarray(probe_ids)[:, None] == np.asarray(gallery_ids)[None, :]
    if not same.any() or same.all():
        return {"verification": float("nan"), "auc": float("nan"), "tar": float("nan"), "trr": float("nan")}
    tar = float((dist[same] < threshold).mean())
    trr = float((dist[~same] >= threshold).mean())
    return {"verification": 0.5 * (tar + trr), "auc": roc_auc(dist[same], dist[~same]), "tar": tar, "trr": trr}


def yaw_bin(yaw: float) -> str:
    a = abs(float(yaw))
    for lo, hi in YAW_BINS:
        if lo <= a < hi:
            return f"{lo:g}-{hi:g}"
    return f">={YAW_BINS[-1][1]:g}"


def score_condition(dist: np.ndarray, probe_ids, gallery_ids, probe_yaws) -> dict:
    """rank1 / verification / auc overall and per probe |yaw| bin, with probe counts."""
    probe_ids, probe_yaws = np.asarray(probe_ids), np.asarray(probe_yaws, np.float64)
    out = {"all": {"rank1": rank1(dist, probe_ids, gallery_ids), **verification(dist, probe_ids, gallery_ids),
                   "probes": int(len(probe_ids))}, "per_yaw_bin": {}}
    bins = np.array([yaw_bin(y) for y in probe_yaws])
    for lo, hi in YAW_BINS:
        key = f"{lo:g}-{hi:g}"
        sel = bins == key
        out["per_yaw_bin"][key] = {"rank1": rank1(dist[sel], probe_ids[sel], gallery_ids),
                                   **verification(dist[sel], probe_ids[sel], gallery_ids), "probes": int(sel.sum())}
    return out
