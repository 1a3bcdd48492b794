"""Set-up and entry points of the processes that render and write chunks: the local pool's
workers and those of an external executor (Dask, Ray). Each holds one job and one renderer
for its lifetime."""
from __future__ import annotations

import json
import os
from pathlib import Path

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


def render_chunk_in_worker(out: str, chunk: int) -> tuple[int, int, int]:
    return render_chunk(Path(out), *worker_state(), chunk)


def render_chunk_standalone(out: str, job_dict: dict, chunk: int) -> tuple[int, int, int]:
    """Entry point for external executors (Dask/Ray): builds its renderer on first use."""
    key = json.dumps(job_dict, sort_keys=True)
    if WORKER.get("key") != key:
        worker_init(job_dict)
        WORKER["key"] = key
    return render_chunk(Path(out), WORKER["job"], WORKER["renderer"], chunk)
