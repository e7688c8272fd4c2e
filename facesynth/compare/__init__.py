"""``facesynth compare INPUT --yaw ... --out DIR``: the methods side by side on the same photos.

    facesynth compare INPUT --yaw -60,-30,0,30,60 --out DIR [--methods 3d,hybrid] [--pitch 0]
                      [--size 128] [--lfw DIR] [--real-photos 200] [--realism-region face|whole]

INPUT is an identity-layout folder (``INPUT/<identity>/<image>``). Every photo is fitted once
(landmarks + dense stage; ``--no-dense``: landmarks only) and every method in ``--methods`` turns
that fit into one view per pose (``facesynth.methods``, through ``facesynth.api.render_face`` over
the plain grey background). Each view is scored, and ``DIR/report.html``, ``DIR/metrics.json``,
``DIR/metrics.csv`` and ``DIR/views.csv`` (one row per view with its detection, distance and pose
error) are written atomically. Each finished photo's views and scores are kept in
``DIR/cache/<settings>/`` (`job.PhotoCache`), so the same command run again after a stop continues
where it stopped (failed photos are tried again; other flags use another cache folder).

- `metrics`: the metric functions on plain arrays (c2st, cross_verification_accuracy, FaceEncoder, ...);
- `report`: the HTML report, its plots and the CSV/JSON files;
- `job`: `CompareOptions`, the per-photo work, the cache and the aggregation; `run_compare(args)`
  is the command's entry point.

Metrics (per method, over all views ("all") and per asked yaw; pitches at one yaw are pooled)
-----------------------------------------------------------------------------------------------
Every view goes through dlib's HOG detector (upsample 1) and 68-point predictor, largest face,
exactly like ``benchmarks/bench_real_photos.py``; the descriptor is dlib's 128-D face descriptor
computed by its PyTorch port (``ganrefine.identity.IdentityEncoder``, same numbers as dlib's
``compute_face_descriptor``) on the dlib-aligned 150 x 150 chip. A view with no detected face has
distance ``inf`` and pose error ``inf`` (so it counts against the medians) and fails every pair of
the cross-verification.

- ``identity_to_source``: median Euclidean descriptor distance, view vs its source photo.
- ``cross_verification``: accuracy over the pairs (view, other real photo of INPUT), for every other
  photo that had a face (other photos of the same identity and photos of other identities): a
  same-identity pair is right when its distance is < 0.6, a different-identity pair when it is
  >= 0.6 (see `cross_verification_accuracy`). ``null`` when fewer than two identities have a
  usable photo.
- ``pose_error``: median over views of max(|yaw asked - yaw estimated|, |pitch asked - pitch
  estimated|), degrees; the estimate is dlib's landmarks + PnP (``face3d.pose_estimation``) against
  the fitted mesh's landmark vertices with the view camera's focal length (the recipe of
  ``bench_real_photos.py``).
- ``realism``: held-out accuracy of a classifier two-sample test (`c2st`) between generated views
  and real LFW photos, on pooled intermediate activations of dlib's identity network
  (`FaceEncoder.encode`) over the face alone (outside the landmark hull set to grey, in real and
  generated images alike, so a plain backdrop does not decide the test); with
  ``--realism-region whole``, over the whole aligned chip unmasked (face, hair, background), to
  judge a view's surroundings too. 0.5: the classifier
  cannot tell them apart; 1.0: always can. Computed per method on all yaws pooled, and per yaw
  where each class has at least `MIN_C2ST_PER_CLASS` samples (else ``null``). The split and the
  counts are in ``info.realism`` of metrics.json.
- ``pixel_realism``: a second realism test on pixels (`facesynth.compare.pixel`): a small CNN trained
  from scratch tells dlib-aligned, landmark-hull-masked 64-px face crops of the views from those of
  the real photos, 5-fold held-out accuracy, within |yaw| bins of 15 degrees (a view's yaw asked;
  a real photo's estimated by PnP against the model's mean shape), equal numbers drawn per bin; a
  bin with fewer than 20 crops in a class is ``null``. Per yaw: the value of the yaw's bin; all:
  the testable bins' draws pooled. ``info.pixel_realism`` holds the bins' counts and folds and the
  two controls (real vs real ~0.5; real vs real blurred by 1 px, > 0.5). ``--no-pixel-realism`` skips it.
- ``seconds_per_view``: for each method, the wall time of its `render_face` calls (fit excluded)
  plus its share of the fit, divided by its number of views. A photo's fit time is split evenly
  over the views of every method that made views from it. Views are generated in one batch per
  photo, so the per-yaw value equals the method's overall one.

Non-finite values (a median that is ``inf`` because most views had no face) and metrics that do
not apply are written as ``null`` in metrics.json and as an empty cell in metrics.csv;
``info.counts`` gives the number of views, faces missed and pairs behind every value.

Exit codes: 0 every photo succeeded, 1 some photo failed (each failure is recorded in
``info.failures`` and printed as one line), 2 bad usage (including an INPUT without photos).
"""
from __future__ import annotations

from facesynth.compare.job import (CompareOptions, PhotoCache, choose_real_photos, default_lfw, list_photos,
                                   run_compare, run_comparison)
from facesynth.compare.metrics import (FEATURE_BLOCK, METRIC_NAMES, THRESHOLD, FaceEncoder, c2st, c2st_accuracy,
                                       cross_verification_accuracy, detect_view_face, face_region, realism_input,
                                       finite_median, view_pose_error)
from facesynth.compare.report import plots_uri, report_html, write_outputs

__all__ = ["FEATURE_BLOCK", "METRIC_NAMES", "THRESHOLD", "CompareOptions", "FaceEncoder",
           "PhotoCache", "c2st", "c2st_accuracy", "choose_real_photos", "cross_verification_accuracy", "default_lfw",
           "detect_view_face", "face_region", "finite_median", "list_photos", "plots_uri", "realism_input", "report_html",
           "run_compare", "run_comparison", "view_pose_error", "write_outputs"]
