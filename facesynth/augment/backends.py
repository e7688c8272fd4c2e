"""Where augment's sources are processed: in the driver itself (`--workers 1`), in a local process
pool, or as Ray tasks. A work item is a batch of sources (`--batch-size`; the driver forms them):
each runner calls `work(batch, cfg) -> [SourceResult per source]` for every batch and hands the
results, one source at a time, batches in the order they finish, to `consume` in the driver.

Every worker runs torch with one thread and loads the model once (`worker_model`); pool workers
die with the driver (`face3d.process_utils.die_with_parent`), and a Ray cluster started here has
its agents reaped once the driver is gone (`face3d.process_utils.start_env_reaper`).
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import resource
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Callable

import cv2
import torch

from face3d.errors import FaceSynthError
from face3d.morphable_model import MorphableModel, load_morphable_model
from face3d.process_utils import child_pids, die_with_parent, start_env_reaper, stop_env_reaper
from facesynth.augment.manifest import TIMING_COLUMNS, failed_row, ordered_row
from facesynth.augment.sources import SourceItem


@dataclass
class SourceResult:
    """What a worker returns for one source: its manifest rows, its images as PNG bytes by path
    relative to OUTPUT (the driver writes them), the worker's pid and memory (KiB), and the size of
    the batch it was processed in."""

    index: int
    source: str
    rows: list[dict]
    images: dict[str, bytes] = field(default_factory=dict)
    pid: int = -1
    rss_kb: int = 0
    peak_kb: int = 0
    batch_size: int = 1      # the sources of the batch it came with (they finish together)


@dataclass(frozen=True)
class Backend:
    """How sources are run: `kind` "local" (the driver itself for one worker, else a process pool)
    or "ray"; `ray_address` joins a cluster, else a local Ray with `workers` CPUs is started."""

    kind: str = "local"
    workers: int = 1
    ray_address: str | None = None


Work = Callable[[list[SourceItem], object], list[SourceResult]]
Consume = Callable[[SourceResult], None]

_WORKER: dict = {}


def worker_model(model_dir: str | None) -> MorphableModel:
    """This process's model, loaded once, with torch and OpenCV set to one thread."""
    if _WORKER.get("model_key") != model_dir or "model" not in _WORKER:
        _WORKER["model"] = load_morphable_model(model_dir)
        _WORKER["model_key"] = model_dir
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)
    if cv2.getNumThreads() != 1:    # OpenCV's own pool (GrabCut, resizes) would oversubscribe the cores too
        cv2.setNumThreads(1)
    return _WORKER["model"]


def init_pool_worker(model_dir: str | None, parent_pid: int | None = None) -> None:
    """A pool worker's start: first bind its life to the driver's (`parent_pid`), so a SIGKILLed
    driver does not leave it waiting on the call queue forever, then load the model."""
    if parent_pid is not None:
        die_with_parent(parent_pid)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    worker_model(model_dir)


def rss_kb() -> tuple[int, int]:
    """(current RSS, peak RSS) of this process in KiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cur = 0
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    cur = int(line.split()[1])
                    break
    except OSError:
        pass
    return cur, peak


def run_sources(work: Work, items: list[list[SourceItem]], cfg, consume: Consume, backend: Backend) -> None:
    """Run `work(batch, cfg)` for every batch of sources in `items` on `backend` and `consume` each
    source's result; `cfg` is pickled to the workers (its `model` is the model folder, its `method`
    names the rows of a Ray task that crashed)."""
    if not items:
        return
    if backend.kind == "ray":
        run_ray(work, items, cfg, consume, backend)
    elif backend.workers == 1:
        run_inline(work, items, cfg, consume)
    else:
        run_pool(work, items, cfg, consume, backend.workers)


def run_inline(work: Work, items: list[list[SourceItem]], cfg, consume: Consume) -> None:
    """In the driver itself; its torch and OpenCV thread counts are restored afterwards."""
    threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    try:
        for batch in items:
            for res in work(batch, cfg):
                consume(res)
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv_threads)


def run_pool(work: Work, items: list[list[SourceItem]], cfg, consume: Consume, workers: int) -> None:
    """In a pool of `workers` processes, at most 2 batches per worker in flight."""
    # spawn: forking a process that already runs torch/OpenMP threads can deadlock. The workers
    # die with this process (init_pool_worker); multiprocessing's resource tracker, which this
    # process and the workers hold a pipe to, then reads EOF and exits too.
    ctx = mp.get_context("spawn")
    window = 2 * workers
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=init_pool_worker,
                             initargs=(cfg.model, os.getpid())) as pool:
        pending = set()
        it = iter(items)
        try:
            while True:
                while len(pending) < window:
                    item = next(it, None)
                    if item is None:
                        break
                    pending.add(pool.submit(work, item, cfg))
                if not pending:
                    break
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    for res in f.result():
                        consume(res)
        except BrokenProcessPool:
            raise FaceSynthError("a worker process died (out of memory?); run the same command again to resume") from None
        except BaseException:
            for f in pending:
                f.cancel()
            raise


def run_ray(work: Work, items: list[list[SourceItem]], cfg, consume: Consume, backend: Backend) -> None:
    """As Ray tasks, one per batch (2 retries each), at most 2 per cluster CPU in flight; a task that
    crashed past its retries is an "internal error" row for each source of its batch. A Ray already initialised
    is used and left running; else one is joined or started here and shut down at the end."""
    # deferred: Ray is optional (an extra) and takes seconds to import
    try:
        import ray
    except ImportError:
        raise FaceSynthError("--backend ray needs Ray (pip install 'ray>=2.9')") from None
    started, reaper = False, None
    if not ray.is_initialized():
        reaper = _init_ray(ray, backend)
        started = True
    try:
        task = ray.remote(num_cpus=1, max_retries=2)(work)
        cfg_ref = ray.put(cfg)
        cpus = int(ray.cluster_resources().get("CPU", backend.workers) or backend.workers)
        window = 2 * max(1, cpus)
        pending: dict = {}
        it = iter(items)
        while True:
            while len(pending) < window:
                item = next(it, None)
                if item is None:
                    break
                pending[task.remote(item, cfg_ref)] = item
            if not pending:
                break
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                batch = pending.pop(ref)
                try:
                    results = ray.get(ref)
                except Exception as exc:  # a worker crash that survived the retries
                    results = [crashed_result(item, cfg.method, f"Ray task failed: {_first_line(exc)}", len(batch))
                               for item in batch]
                for res in results:
                    consume(res)
    finally:
        if started:
            ray.shutdown()
        stop_env_reaper(reaper)


def _init_ray(ray, backend: Backend):
    """Join `backend.ray_address`, or start a local Ray with `backend.workers` CPUs; returns the
    reaper of the local cluster's agents (None when none was started)."""
    kw = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": True}
    if backend.ray_address:
        try:
            ray.init(address=backend.ray_address, **kw)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise FaceSynthError(f"--ray-address {backend.ray_address}: cannot connect ({_first_line(exc)})") from None
        return None
    # The local cluster's gcs_server, raylet and monitors die with this process (Ray starts
    # them with the parent-death signal) and its workers follow the raylet within seconds,
    # but the raylet's dashboard and runtime-env agents, on finding it dead, wait up to 60 s
    # to report that to the dead GCS. The reaper kills them once this process is gone, even
    # SIGKILLed: they carry RAY_RAYLET_PID in their environment, which /proc shows only
    # while setproctitle leaves it in place, as SPT_NOENV (inherited through the raylet)
    # tells it to; Ray sets that for its workers, not for its agents.
    noenv = os.environ.get("SPT_NOENV")
    os.environ["SPT_NOENV"] = "1"
    try:
        ray.init(num_cpus=backend.workers, **kw)
    finally:
        if noenv is None:
            del os.environ["SPT_NOENV"]
        else:
            os.environ["SPT_NOENV"] = noenv
    raylets = child_pids("raylet")
    return start_env_reaper("RAY_RAYLET_PID", str(raylets[0])) if len(raylets) == 1 else None


def crashed_result(item: SourceItem, method: str, what: str, batch_size: int = 1) -> SourceResult:
    """The result of a source whose worker crashed: one failed row ("internal error"), no timings."""
    row = failed_row({"source": item.source, "identity": item.identity, "method": method},
                     "internal error", f"{item.source}: {what}", None)
    row.update({c: None for c in TIMING_COLUMNS})
    return SourceResult(item.index, item.source, [ordered_row(row)], batch_size=batch_size)


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
