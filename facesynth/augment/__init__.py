"""`facesynth augment`: a face dataset in, the same dataset at several head poses out.

    facesynth augment INPUT OUTPUT --yaw -60,-30,0,30,60 [--pitch 0] [--size 128] [--method 3d|hybrid|gan]
                      [--workers N] [--batch-size N] [--backend local|ray] [--ray-address ADDR] [--limit K] [--seed S]
                      [--expression SPEC[,SPEC...]] [--expression-from DIR [--expression-sample N]]

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

Expressions: `--expression` specs and the reference photos of `--expression-from DIR` add up to
one list, rendered on every photo at every pose (`<stem>_expr-<label>_yaw..`; a reference's label is
`from-<its stem>`, its path in the manifest's `expression_from`). Each reference is fitted once, in
the driver, before OUTPUT is touched (a bad one fails the run with one line), and the workers get
its coefficients; `--expression-sample N` takes N of them per photo, drawn from `--seed` and the
photo alone. augment.json records the references' coefficients, so a re-run with another folder is
refused. A source asks for at most 10,000 views and a run for 10^8, refused before any work.

Batches: a worker takes `--batch-size` sources (default 8) at once: it loads them and detects
their faces, fits their largest faces in one batched fit (`face3d.pipeline.
reconstruct_largest_faces`), then textures and renders each, and returns one result per source, so
the manifest, the progress bar, resume and failures stay per source (a source's `seconds_fit` is
its share of the batch's fit). Batches are consecutive sources in input order, fewer per batch when
the sources would not give every worker 2 batches or a source asks for many views. `--batch-size 1`
is the one-photo path. A resumed run may use another batch size (augment.json does not record it).

Grayscale, CMYK, palette and 16-bit photos are converted to RGB and processed; the conversion is
recorded in `note`. Every worker runs torch with one thread: the same input, seed, flags and batches
give byte-identical images whatever the backend and the number of workers. The batches are the same
for any number of workers in runs of at least 2 x workers x batch-size sources, and a resumed run
forms those of a fresh run, but for the batches it finds partly done. Where the batches differ, a
face's fit differs within float rounding (which the dense stage's Adam steps amplify):
`tests/test_batched_pipeline.py` states the tolerance (byte-identical with `--no-dense`).

Modules: `sources` (listing and loading the inputs), `manifest` (the log and the parquet), `backends`
(the inline, process-pool and Ray runners and the worker setup), `job` (the options, the run, the
work of one source and the command).
"""
from facesynth.augment.job import (AugmentOptions, AugmentResult, WorkerConfig, augment, batch_sources,
                                   process_batch, process_source, run_augment_command)
from facesynth.augment.manifest import COLUMNS, ManifestLog, read_manifest, write_parquet
from facesynth.augment.sources import SourceItem, list_sources

__all__ = ["COLUMNS", "AugmentOptions", "AugmentResult", "ManifestLog", "SourceItem", "WorkerConfig",
           "augment", "batch_sources", "list_sources", "process_batch", "process_source", "read_manifest", "run_augment_command",
           "write_parquet"]
