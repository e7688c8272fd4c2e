"""The `facesynth` command line: one table of subcommands (`COMMANDS`), their flags built from the
shared flag groups of `facesynth.options`, and `main`.

    facesynth rotate IMAGE|FOLDER [...] --yaw -60,-30,0,30,60 [--pitch 0] [--size 128] [--method hybrid|3d|gan] --out DIR

Exit codes: 0 every input succeeded, 1 some input failed (each failure is one manifest line with
`source` and `error`) or a user error, 2 bad usage. User errors print one line, never a traceback.

A command's module is imported only when it runs (`run_command`): torch, Gradio and Ray take
seconds to import, which `--help` and usage errors should not pay, and `rotate` forks its face
detection helper before torch loads (face3d.detection_helper).
"""
from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys
from dataclasses import dataclass
from typing import Callable

from face3d.detection_helper import start_detection_helper
from face3d.errors import FaceSynthError
from facesynth.options import (DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE, MAX_REFERENCES, METHODS, UsageError,
                               add_background_argument, add_detector_argument, add_device_argument,
                               add_expression_arguments, add_fit_arguments, add_label_arguments, add_method_arguments,
                               add_pose_arguments,
                               add_reference_arguments, add_sfs_arguments, add_threads_argument, add_weights_arguments,
                               check_pose_count, float_option, int_option, seed_option, shard_option, size_option)
from facesynth.photos import rotate_inputs


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad usage as one line and exit code 2 (its default) without the usage dump noise."""

    def error(self, message):
        # "argument --yaw: --yaw -90:90:1e-07 would give ..." -> "--yaw -90:90:1e-07 would give ..."
        head, _, rest = message.partition(": ")
        if head.startswith("argument ") and rest.startswith(head[len("argument "):] + " "):
            message = rest
        self.exit(2, f"facesynth: error: {message}\n")

    def parse_known_args(self, args=None, namespace=None):
        # The pose grid (yaw x pitch x roll) is checked here, once all three flags are known and
        # before the command does any work; each flag alone was capped while it was parsed.
        ns, extra = super().parse_known_args(args, namespace)
        if isinstance(getattr(ns, "yaw", None), list):
            try:
                check_pose_count(ns.yaw, getattr(ns, "pitch", None), getattr(ns, "roll", None))
            except UsageError as exc:
                self.error(str(exc))
        return ns, extra


# ------------------------------------------------------------------------------------------------
# The flags of each command


def rotate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE", help="photos, or folders of photos (not recursive)")
    add_pose_arguments(p, yaw_default=[-60.0, -30.0, 0.0, 30.0, 60.0])
    p.add_argument("--size", type=size_option, default=128, help="output crop size in pixels (default 128)")
    add_label_arguments(p)
    add_method_arguments(p)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (PNG views + manifest.jsonl)")
    add_fit_arguments(p)
    p.add_argument("--all-faces", action="store_true", help="process every detected face, not only the largest")
    add_detector_argument(p)
    add_background_argument(p)
    p.add_argument("--export-mesh", choices=["obj", "ply", "glb"], default=None,
                   help="also write the fitted textured mesh in this format")
    p.add_argument("--save-fit", action="store_true", help="also write each FaceFit (.npz + .json)")
    add_threads_argument(p)
    add_device_argument(p)
    p.add_argument("--resume", action="store_true",
                   help="continue a stopped run into the same --out with the same flags: photos whose views are all "
                        "on disk and in the manifest are skipped, the others (failed or cut off) are done again")
    add_expression_arguments(p)
    add_reference_arguments(p)
    add_sfs_arguments(p)


def augment_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", metavar="INPUT",
                   help="identity folder (INPUT/<identity>/<image>) or a .csv/.jsonl list of path,identity")
    p.add_argument("output", metavar="OUTPUT", help="output folder (same identity layout + manifest)")
    add_pose_arguments(p)
    add_method_arguments(p)
    p.add_argument("--size", type=size_option, default=128, help="output crop size in pixels (default 128)")
    add_label_arguments(p)
    add_background_argument(p)
    p.add_argument("--keep-original", action="store_true",
                   help="also write the original photo aligned like the views (<stem>_original.png)")
    p.add_argument("--multi-face", choices=["largest", "skip"], default="largest",
                   help="photos with several faces: use the largest (default, noted in the manifest) or skip them")
    add_detector_argument(p)
    add_fit_arguments(p)
    add_device_argument(p)
    p.add_argument("--workers", type=int_option("workers", 1), default=1,
                   help="worker processes (local) or local Ray CPUs (default 1; each runs torch with 1 thread)")
    p.add_argument("--batch-size", type=int_option("batch-size", 1, MAX_BATCH_SIZE), default=DEFAULT_BATCH_SIZE,
                   metavar="N", help=f"photos a worker fits at once in one batched fit (1..{MAX_BATCH_SIZE}, "
                                     f"default {DEFAULT_BATCH_SIZE}; 1: one photo at a time); fewer when the photos "
                                     "would not fill every worker, or a photo asks for many views")
    p.add_argument("--backend", choices=["local", "ray"], default="local", help="local process pool (default) or Ray tasks")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="Ray cluster to join (e.g. auto); default: start a local Ray with --workers CPUs")
    p.add_argument("--limit", type=int_option("limit", 1), default=None, metavar="K",
                   help="process only the first K sources of INPUT (in sorted/list order)")
    p.add_argument("--seed", type=seed_option, default=0, help="random seed of the fit and the shape draws (default 0)")
    add_expression_arguments(p, seed=False)
    g = p.add_argument_group("reference photos")
    g.add_argument("--expression-from", default=None, metavar="DIR",
                   help="a folder of reference photos (its image files, sorted; at most "
                        f"{MAX_REFERENCES}): every photo is also rendered with the expression of the largest face in "
                        "each reference (fitted once, before any output; file names carry _expr-from-<stem>); "
                        "adds to an --expression list")
    g.add_argument("--expression-sample", type=int_option("expression-sample", 1, MAX_REFERENCES), default=None,
                   metavar="N", help="with --expression-from: N references per photo instead of all, a seeded "
                                     "draw that depends only on --seed and the photo")
    p.add_argument("--retry-failed", action="store_true", help="on resume, redo sources that failed before")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def methods_option(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError("--methods expects a comma-separated list, e.g. 3d,hybrid")
    bad = [n for n in names if n not in METHODS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown method(s) {', '.join(bad)}; known: {', '.join(METHODS)}")
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"--methods lists a method twice: {text!r}")
    return names


def compare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", metavar="INPUT", help="folder of photos in identity layout: INPUT/<identity>/<image>")
    add_pose_arguments(p, roll=False)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (report.html, metrics.json, metrics.csv)")
    p.add_argument("--methods", type=methods_option, default=list(METHODS),
                   help=f"comma-separated methods among {', '.join(METHODS)} (default all)")
    p.add_argument("--size", type=size_option, default=128, help="view size in pixels (default 128)")
    add_background_argument(p)
    p.add_argument("--lfw", default=None, metavar="DIR",
                   help="real photos for the realism test, LFW layout DIR/<Name>/*.jpg (default shared/data/lfw/images)")
    p.add_argument("--real-photos", type=int_option("real-photos", 0), default=200, metavar="N",
                   help="number of real photos for the realism test, a fixed seeded choice (default 200; 0 skips it)")
    add_weights_arguments(p)
    add_fit_arguments(p)
    p.add_argument("--realism-region", choices=["face", "whole"], default="face",
                   help="what the realism test compares: the face alone, outside the landmark hull grey (default), "
                        "or the whole aligned crop with its surroundings, unmasked")
    p.add_argument("--pixel-realism", action=argparse.BooleanOptionalAction, default=True,
                   help="also run the pixel-level realism test (a small CNN C2ST on masked 64-px face crops per "
                        "|yaw| bin, with its real-vs-real and blurred controls; about a minute for 1000 views and "
                        "400 real photos; default on)")
    p.add_argument("--seed", type=seed_option, default=0,
                   help="seed of the real-photo choice and the realism split (default 0)")
    add_threads_argument(p)
    add_device_argument(p)


def serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 exposes it)")
    p.add_argument("--port", type=int_option("port", 1, 65535), default=7860, help="port (default 7860)")
    # the demo re-renders on every slider move: 512 px is as large as stays interactive on a CPU
    p.add_argument("--size", type=int_option("size", 32, 512), default=256, help="view size in pixels (default 256)")
    add_fit_arguments(p)
    add_threads_argument(p)
    add_device_argument(p)


def verify_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image_a", metavar="IMAGE_A", help="first photo")
    p.add_argument("image_b", metavar="IMAGE_B", help="second photo")
    p.add_argument("--json", action="store_true", help="print one JSON object {distance, same}")
    add_detector_argument(p)


def cache_arguments(p: argparse.ArgumentParser, holdout_help: str) -> None:
    """The flags that `make-pairs` and `make-pose-photos` share."""
    p.add_argument("lfw", metavar="LFW", help="LFW images folder (<identity>/<identity>_NNNN.jpg)")
    p.add_argument("--out", required=True, metavar="CACHE", help="cache folder (keep it outside the repository)")
    p.add_argument("--holdout", type=int_option("holdout", 1), default=300, help=holdout_help)
    p.add_argument("--size", type=size_option, default=128, help="crop size (default 128)")
    p.add_argument("--workers", type=int_option("workers", 1), default=1, help="processes (default 1)")
    p.add_argument("--seed", type=seed_option, default=0, help="split seed, and make-pairs' yaw-offset seed (default 0)")
    p.add_argument("--model", default=None, metavar="DIR", help="morphable model folder (default ICT FaceKit)")


def make_pairs_arguments(p: argparse.ArgumentParser) -> None:
    cache_arguments(p, "identities held out for evaluation, one pair each (default 300)")
    p.add_argument("--train-photos", type=int_option("train-photos", 1), default=3000,
                   help="train photos to use, one per identity before any second (default 3000)")


def make_pose_photos_arguments(p: argparse.ArgumentParser) -> None:
    cache_arguments(p, "identities held out (the refiner's split; default 300)")
    p.add_argument("--per-identity", type=int_option("per-identity", 2), default=3,
                   help="photos per train identity (default 3)")
    p.add_argument("--heldout-per-identity", type=int_option("heldout-per-identity", 2), default=6,
                   help="photos per held-out identity (default 6)")


def training_arguments(p: argparse.ArgumentParser, cfg_cls, data_help: str) -> None:
    """The flags that `train-refiner` and `train-capg` share; defaults from the config dataclass."""
    p.add_argument("--data", required=True, metavar="DIR", help=data_help)
    p.add_argument("--steps", type=int_option("steps", 1), required=True, help="total training steps")
    p.add_argument("--out", required=True, metavar="CKPT", help="training checkpoint file (.pt); logs and samples go beside it")
    p.add_argument("--resume", action="store_true", help="continue the checkpoint at --out")
    p.add_argument("--batch", type=int_option("batch", 1), default=cfg_cls.batch, help=f"batch size (default {cfg_cls.batch})")
    p.add_argument("--eval-every", type=int_option("eval-every", 1), default=cfg_cls.eval_every,
                   help=f"validate and keep the best weights every N steps (default {cfg_cls.eval_every})")
    p.add_argument("--seed", type=seed_option, default=0, help="seed of the initial weights and the batch order (default 0)")
    add_threads_argument(p)
    add_device_argument(p, "the generator, the discriminators and the identity loss's network; the data "
                           "stay on the CPU and each step's batch moves (a resumed run may take another device)")


def train_refiner_arguments(p: argparse.ArgumentParser) -> None:
    # deferred: the config's module imports torch; build_parser builds these flags only for this command
    from ganrefine.train_refiner import TrainConfig

    training_arguments(p, TrainConfig, "pair cache written by `facesynth make-pairs`")
    p.add_argument("--init", metavar="WEIGHTS", default=None,
                   help="start the generator from these refiner weights (e.g. assets/refiner/refiner.pt) instead of "
                        "random ones; a fresh run only (not with --resume)")
    p.add_argument("--identity-weight", type=float_option("identity-weight", 0), default=None, metavar="W",
                   help=f"weight of the identity loss (default {TrainConfig.identity_weight}); a fresh run only (a resumed "
                        "run keeps its checkpoint's)")
    p.add_argument("--lr-decay-steps", type=int_option("lr-decay-steps", 0), default=None, metavar="N",
                   help="let both learning rates fall linearly to zero over the last N steps (default "
                        f"{TrainConfig.lr_decay_steps}: constant); a fresh run only (a resumed run keeps its checkpoint's)")
    g = p.add_argument_group("realism (pix2pixHD's losses; fresh runs only, a resumed run keeps its checkpoint's)")
    g.add_argument("--adv-weight", type=float_option("adv-weight", 0), default=None, metavar="W",
                   help=f"weight of the adversarial loss (default {TrainConfig.adv_weight})")
    g.add_argument("--disc-scales", type=int_option("disc-scales", 1, 4), default=None, metavar="N",
                   help=f"patch discriminators at 1, 1/2, ... of the size (default {TrainConfig.disc_scales})")
    g.add_argument("--feature-matching-weight", type=float_option("feature-matching-weight", 0), default=None,
                   metavar="W", help=f"weight of the discriminators' feature matching (default {TrainConfig.feature_matching_weight})")
    g.add_argument("--perceptual-weight", type=float_option("perceptual-weight", 0), default=None, metavar="W",
                   help=f"weight of the identity network's perceptual loss (default {TrainConfig.perceptual_weight})")
    g.add_argument("--keep-seen", action="store_const", const=True, default=None,
                   help="train on the output composed as --method hybrid composes it (the render where the photo saw the head)")
    g.add_argument("--feather", type=float_option("feather", 0, 0.5), default=None, metavar="F",
                   help="fade the local pathways' patches to 0 over this share of their size at their edges (default 0)")


def train_capg_arguments(p: argparse.ArgumentParser) -> None:
    # deferred: the config's module imports torch; build_parser builds these flags only for this command
    from ganrefine.train_capg import CapgTrainConfig

    training_arguments(p, CapgTrainConfig, "cache written by `facesynth make-pose-photos`")


def soup_refiners_arguments(p: argparse.ArgumentParser) -> None:
    # deferred: the config's module imports torch; build_parser builds these flags only for this command
    from ganrefine.train_refiner import TrainConfig

    p.add_argument("weights", nargs="+", metavar="WEIGHTS", help="refiner weights files or training checkpoints")
    p.add_argument("--data", required=True, metavar="DIR",
                   help="pair cache written by `facesynth make-pairs` (its validation pairs score the soup)")
    p.add_argument("--out", required=True, metavar="WEIGHTS", help="the souped weights file (.pt)")
    p.add_argument("--val-pairs", type=int_option("val-pairs", 1), default=TrainConfig.val_pairs,
                   help=f"the first N held-out pairs score the soup, as in train-refiner (default {TrainConfig.val_pairs})")


def learn_albedo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("lfw", metavar="LFW", help="LFW images folder (<identity>/<identity>_NNNN.jpg)")
    p.add_argument("--cache", required=True, metavar="DIR",
                   help="observation cache (keep it outside the repository); a run started again continues in it")
    p.add_argument("--out", required=True, metavar="FILE", help="the albedo model file (.npz)")
    p.add_argument("--photos", type=int_option("photos", 100), default=3000,
                   help="train photos to observe, one per identity before any second (default 3000)")
    p.add_argument("--components", type=int_option("components", 1, 200), default=40,
                   help="principal components kept (default 40)")
    p.add_argument("--rounds", type=int_option("rounds", 1, 20), default=2,
                   help="rounds of the components' re-estimate, de-lighting and PCA (default 2)")
    p.add_argument("--seed", type=seed_option, default=0, help="identity split and photo choice seed (default 0)")
    p.add_argument("--model", default=None, metavar="DIR", help="morphable model folder (default ICT FaceKit)")
    add_threads_argument(p)


def learn_profile_landmarks_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("lfw", metavar="LFW", help="LFW images folder (<identity>/<identity>_NNNN.jpg)")
    p.add_argument("--cache", required=True, metavar="DIR",
                   help="view cache (keep it outside the repository); a run started again continues in it")
    p.add_argument("--out", required=True, metavar="FILE", help="the predictor file (dlib's .dat)")
    p.add_argument("--photos", type=int_option("photos", 20), default=800,
                   help="train photos to render views of, one per identity before any second (default 800)")
    p.add_argument("--box-photos", type=int_option("box-photos", 10), default=60,
                   help="photos whose views the CNN detector runs on to place the training boxes (default 60)")
    p.add_argument("--trees", type=int_option("trees", 10, 1000), default=125,
                   help="regression trees per cascade level (size and accuracy grow with it; default 125)")
    p.add_argument("--shard", type=shard_option, default=(0, 1), metavar="I/N",
                   help="render the views of every N-th photo from the I-th (run N processes side by side)")
    p.add_argument("--views-only", action="store_true", help="render this shard's views and stop")
    p.add_argument("--seed", type=seed_option, default=0, help="identity split, photo and pose seed (default 0)")
    p.add_argument("--model", default=None, metavar="DIR", help="morphable model folder (default ICT FaceKit)")
    add_threads_argument(p)


@dataclass(frozen=True)
class Command:
    """One subcommand: its help, its flags, and the function that runs it (`module:function`,
    imported when the command runs; it takes the parsed flags and returns the exit code)."""

    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: str
    description: str | None = None


COMMANDS: dict[str, Command] = {
    "rotate": Command("render each face of each photo at the given head poses", rotate_arguments,
                      "facesynth.rotate_job:run_rotate_command"),
    "augment": Command("render every photo of a face dataset at several head poses", augment_arguments,
                       "facesynth.augment:run_augment_command",
                       "Turn a face dataset in identity layout into a multi-pose dataset in the same layout."),
    "verify": Command("tell whether two photos show the same person (dlib face descriptor, torch port)",
                      verify_arguments, "facesynth.verify:run_verify",
                      "Detect the largest face in each image, print the identity distance and 'same' or "
                      "'different' (dlib's threshold 0.6)."),
    "serve": Command("local web demo: upload a photo, turn the head, download the views", serve_arguments,
                     "facesynth.serve:run_serve"),
    "compare": Command("generate views with several methods and score them (identity, pose, realism, speed)",
                       compare_arguments, "facesynth.compare:run_compare",
                       "For every photo of INPUT/<identity>/<image>, method and pose: generate the view and score "
                       "it; write DIR/report.html, DIR/metrics.json and DIR/metrics.csv. Finished photos are kept in "
                       "DIR/cache: the same command run again after a stop continues where it stopped."),
    "make-pairs": Command("make the refiner's Rotate-and-Render training pairs from LFW", make_pairs_arguments,
                          "facesynth.train:run_make_pairs"),
    "train-refiner": Command("train the refiner on `make-pairs` output", train_refiner_arguments,
                             "facesynth.train:run_train_refiner"),
    "soup-refiners": Command("average refiner weights files (a greedy model soup on the validation pairs)",
                             soup_refiners_arguments, "facesynth.train:run_soup_refiners"),
    "make-pose-photos": Command("fit and align LFW photos of multi-photo identities (the GAN baseline's real pose pairs)",
                                make_pose_photos_arguments, "facesynth.train:run_make_pose_photos"),
    "learn-albedo": Command("learn the albedo model from LFW's train identities (resumable)", learn_albedo_arguments,
                            "facesynth.albedo:run_learn_albedo"),
    "learn-profile-landmarks": Command("train the 68-point predictor for turned faces on labelled views of LFW's "
                                       "train identities (resumable)", learn_profile_landmarks_arguments,
                                       "facesynth.profile_landmarks:run_learn_profile_landmarks"),
    "train-capg": Command("train the GAN-only baseline (CAPG-GAN) on `make-pose-photos` output", train_capg_arguments,
                          "facesynth.train:run_train_capg"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, with the flags of `command` only when one is named (the others'
    flags may import torch to show their defaults, which a `rotate` run must not pay for)."""
    p = _Parser(prog="facesynth", description="Turn one face photo into views of the same person at other head poses.")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    sub.required = True
    for name, cmd in COMMANDS.items():
        cp = sub.add_parser(name, help=cmd.help, description=cmd.description or cmd.help)
        if command is None or command == name:
            cmd.arguments(cp)
        cp.set_defaults(run=cmd.run)
    return p


def run_command(args, helper=None) -> int:
    """Import the command's module (deferred: see the module docstring) and run it on `args`.
    `rotate` first lists its photos and sends them to the detection `helper`, so that detection
    overlaps the import of torch instead of starting after it; the run takes the same list."""
    if helper is not None and args.command == "rotate":
        inputs = rotate_inputs(args.images, args.expression_from, args.pose_from)
        helper.submit(inputs[0] + inputs[1], args.detector)
    else:
        inputs = None
    module, function = args.run.split(":")
    run = getattr(import_quietly(module), function)
    return int(run(args, helper, inputs) if args.command == "rotate" else run(args))


def import_quietly(module: str):
    """`importlib.import_module(module)` without the cyclic garbage collector, whose objects are then
    frozen (`gc.freeze`): importing torch creates millions of objects that live as long as the
    process and no garbage, and the full collections they trigger during the import and after it
    cost a one-photo `rotate` about 0.2 s of its 3 (measured with `gc.callbacks`)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return importlib.import_module(module)
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


_ANGLE_FLAGS = ("--yaw", "--pitch", "--roll")


def _join_negative_values(argv: list[str]) -> list[str]:
    """`--yaw -60,-30` -> `--yaw=-60,-30`: argparse would read '-60,-30' as an option."""
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a in _ANGLE_FLAGS and i + 1 < len(argv) and argv[i + 1][:1] == "-" and argv[i + 1][1:2].isdigit():
            out.append(f"{a}={argv[i + 1]}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def _os_error_text(exc: OSError) -> str:
    """`PATH: reason` for an OSError that names a file (`reason` alone otherwise), on one line."""
    if exc.strerror:
        names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
        return f"{' -> '.join(names)}: {exc.strerror}" if names else exc.strerror
    return _first_line(exc)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    helper = None
    if argv[:1] == ["rotate"]:
        # before the command's imports pull in torch: dlib loads and detects in a second process meanwhile
        helper = start_detection_helper()
    try:
        parser = build_parser(argv[0] if argv and argv[0] in COMMANDS else None)
        try:
            args = parser.parse_args(_join_negative_values(argv))
        except SystemExit as exc:  # usage errors (2) and --help (0) return their code instead of exiting
            return int(exc.code or 0)
        try:
            return run_command(args, helper)
        except UsageError as exc:  # bad usage found after parsing (e.g. an INPUT folder without photos)
            print(f"facesynth: error: {exc}", file=sys.stderr)
            return 2
        except FaceSynthError as exc:
            print(f"facesynth: error: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("facesynth: interrupted", file=sys.stderr)
            return 130
    # the last line of defence: parsing or a command that lets these out still ends with one line
    except MemoryError as exc:
        detail = f" ({_first_line(exc)})" if str(exc) else ""
        print(f"facesynth: error: out of memory{detail}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"facesynth: error: {_os_error_text(exc)}", file=sys.stderr)
        return 1
    finally:
        if helper is not None:
            helper.close()


#: commands whose process ends without the interpreter's teardown (`console_main`)
QUICK_EXIT_COMMANDS = ("rotate",)


def console_main() -> None:
    """The `facesynth` command (pyproject.toml's entry point, and `python -m facesynth.cli`): `main`,
    then exit with its code. A `rotate` process ends with `os._exit` after flushing stdout and
    stderr: the interpreter's teardown with torch loaded takes about 0.3 s here (measured), a tenth
    of a one-photo run, and has nothing left to do for rotate. Every file it wrote was closed and
    renamed into place, the run folder's lock released and the detection helper closed before `main`
    returned, and its remaining exit handlers (multiprocessing's, logging's, tqdm's, torch's)
    release only what the process's end releases anyway. Other commands exit normally: Ray and the
    process pools of `augment` and `compare` shut down in exit handlers."""
    argv = sys.argv[1:]
    code = main(argv)
    if argv[:1] and argv[0] in QUICK_EXIT_COMMANDS:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed or broken pipe: nothing more can be said there
                pass
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    console_main()
