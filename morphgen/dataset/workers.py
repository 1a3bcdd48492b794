"""Set-up and entry points of the processes that render and write chunks: the local pool's
workers and those of an external executor (Dask, Ray). Each holds one job and one renderer
for its lifetime."""
from __future__ import annotations

import gc
import json
import multiprocessing as mp
import os
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from ..errors import MorphgenError
from ..render.threads import limit_threads
from ..scene import SceneRenderer
from .chunks import render_chunk
from .job import DatasetJob, job_from_dict

WORKER: dict = {}


def worker_init(job_dict: dict) -> None:
    """Per-process set-up: one thread per library (parallelism comes from processes)."""
    limit_threads(1)
    job = job_from_dict(job_dict)
    WORKER["job"] = job
    WORKER["renderer"] = SceneRenderer(job.scene)


def pool_worker_init(job_dict: dict) -> None:
    """`worker_init` for the processes of our own pools, which also exit with the main process.
    An error here is kept and raised by every task (`worker_state`): raised from an
    initializer it would only break the pool, and the user would see a traceback of
    BrokenProcessPool instead of the message."""
    exit_with_parent()
    try:
        worker_init(job_dict)
    except Exception as exc:  # noqa: BLE001 (handed to the main process by the tasks)
        WORKER["init_error"] = exc


def worker_state() -> tuple[DatasetJob, SceneRenderer]:
    """This worker's job and renderer, or the error its set-up raised."""
    if "init_error" in WORKER:
        raise WORKER["init_error"]
    return WORKER["job"], WORKER["renderer"]


def exit_with_parent() -> None:
    """End this worker when the process that spawned it dies. A pool worker holds both ends
    of the executor's queue pipes, so it never sees end-of-file after a kill -9 of the main
    process and would otherwise sleep on forever, holding its memory."""
    import multiprocessing.connection
    import threading

    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def fork_pool_is_safe() -> bool:
    """Whether the local pool may fork this process rather than spawn fresh ones. A forked
    worker starts with this process's imports, model and level of detail already made,
    where a spawned one spends about a second of each run on them (more on a Basel model).
    Only where forking is known to be safe: on Linux, from a process with one thread (as
    the `morphgen` command is; a notebook's kernel has several, and a fork copies none of
    them), without torch loaded (its thread pools do not survive a fork), and before
    numba's threading layer has started (GNU OpenMP aborts a child that uses it)."""
    from numba.np.ufunc import parallel

    return (sys.platform.startswith("linux") and "fork" in mp.get_all_start_methods()
            and threading.active_count() == 1 and "torch" not in sys.modules
            and not getattr(parallel, "_is_initialized", True))


def local_pool(job: DatasetJob, workers: int, renderer: SceneRenderer | None = None) -> ProcessPoolExecutor:
    """The CPU dataset writer's own pool of `workers` processes. With a `renderer` of this
    job's scene (made in this process) and while :func:`fork_pool_is_safe`, the workers are
    forks that inherit it, started before this returns (before the progress bar starts a
    thread); otherwise they are spawned on first use and build their own
    (`pool_worker_init`)."""
    if renderer is None or not fork_pool_is_safe():
        return ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=pool_worker_init,
                                   initargs=(job.to_dict(),))
    kept = dict(WORKER)  # an external executor's state in this process (render_chunk_standalone)
    WORKER.clear()
    WORKER.update(job=job, renderer=renderer)
    cv2 = sys.modules.get("cv2")
    threads = cv2.getNumThreads() if cv2 is not None else 0
    pool = None
    try:
        # OpenCV's thread pool, if this process has used it, hangs a child that resizes it:
        # one thread at the fork, so that the workers' limit_threads(1) changes nothing
        if cv2 is not None:
            cv2.setNumThreads(1)
        gc.freeze()  # the children's collections then leave the inherited objects' pages shared
        pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("fork"), initializer=forked_worker_init)
        pool.submit(int).result()  # a fork pool starts all its processes on the first task
    except BaseException as exc:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        if isinstance(exc, BrokenProcessPool):
            raise MorphgenError("a worker process died as it started (killed, or out of memory?)") from None
        raise
    finally:  # the workers hold their copies; this process does not render
        gc.unfreeze()
        WORKER.clear()
        WORKER.update(kept)
        if cv2 is not None:
            cv2.setNumThreads(threads)
    return pool


def forked_worker_init() -> None:
    """`pool_worker_init` for a forked worker, whose job and renderer came with the fork
    (an error is kept for the tasks to raise, as there)."""
    exit_with_parent()
    try:
        limit_threads(1)
    except Exception as exc:  # noqa: BLE001 (handed to the main process by the tasks)
        WORKER["init_error"] = exc


def render_chunk_in_worker(out: str, chunk: int) -> tuple[int, int, int]:
    return render_chunk(Path(out), *worker_state(), chunk)


def render_chunk_standalone(out: str, job_dict: dict, chunk: int) -> tuple[int, int, int]:
    """Entry point for external executors (Dask/Ray): builds its renderer on first use."""
    key = json.dumps(job_dict, sort_keys=True)
    if WORKER.get("key") != key:
        worker_init(job_dict)
        WORKER["key"] = key
    return render_chunk(Path(out), WORKER["job"], WORKER["renderer"], chunk)
