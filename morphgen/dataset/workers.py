"""Set-up and entry points of the processes that render and write chunks: the local pool's
workers and those of an external executor (Dask, Ray). Each holds one job and one renderer
for its lifetime."""
from __future__ import annotations

import gc
import json
import mmap
import multiprocessing as mp
import os
import signal
import sys
import threading
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..errors import ONE_LINE_WARNINGS, MorphgenError, one_line_warning
from ..render.backgrounds import TexturePool, texture_pools
from ..render.threads import limit_threads
from ..scene import SceneRenderer
from .chunks import render_chunk, render_chunk_part
from .ctrl_c import ctrl_c_held, ignore_ctrl_c, interruptible
from .job import DatasetJob, job_from_dict

WORKER: dict = {}


def worker_init(job_dict: dict) -> None:
    """Per-process set-up: one thread per library (parallelism comes from processes)."""
    limit_threads(1)
    job = job_from_dict(job_dict)
    WORKER["job"] = job
    WORKER["renderer"] = SceneRenderer(job.scene, recorded_appearance=job.recorded_appearance)


def pool_worker_init(job_dict: dict) -> None:
    """`worker_init` for the processes of our own pools, which also exit with the main process.
    An error here is kept and raised by every task (`worker_state`): raised from an
    initializer it would only break the pool, and the user would see a traceback of
    BrokenProcessPool instead of the message. Ctrl-C reaches a worker only inside a task
    (`interruptible`)."""
    try:
        ignore_ctrl_c()
        exit_with_parent()
        if os.environ.get(ONE_LINE_WARNINGS):  # spawned by the console script: its warnings' format
            warnings.formatwarning = one_line_warning
        worker_init(job_dict)
        gc.freeze()  # its set-up lives as long as it does: kept out of its collections, as a fork's is
    except BaseException as exc:  # noqa: BLE001 (handed to the main process by the tasks)
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
    pool = None
    try:
        with _one_opencv_thread(), ctrl_c_held():
            gc.freeze()  # the children's collections then leave the inherited objects' pages shared
            pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("fork"), initializer=forked_worker_init)
            started = pool.submit(int)  # a fork pool forks all its processes in its first submit
        started.result()  # Ctrl-C no longer held: a worker stuck as it starts cannot hold the command
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
    return pool


@contextmanager
def _one_opencv_thread():
    """OpenCV's thread pool set to one thread across a fork: if this process has used the
    pool, a child that resizes it hangs (so the children's limit_threads(1), or their first
    cv2 call, would)."""
    cv2 = sys.modules.get("cv2")
    threads = cv2.getNumThreads() if cv2 is not None else 0
    if cv2 is not None:
        cv2.setNumThreads(1)
    try:
        yield
    finally:
        if cv2 is not None:
            cv2.setNumThreads(threads)


class PoolPrefill:
    """The background texture pools of a scene, drawn ahead by a forked helper process
    while this process sets up (loads the model, decimates it, builds the renderer): a run
    of the default procedural backgrounds otherwise draws up to 1,024 textures (0.7 ms
    each at 128 px) in every worker, most of a second in each worker's first few thousand
    images, while one of the machine's cores sits idle through the set-up.

    The helper writes texture j and then its flag into memory shared with this process;
    :meth:`adopt` stops it where it is (this process reads the memory only once the helper
    has ended) and hands the finished textures to this process's pools
    (``TexturePool.adopt``), where it and the workers it forks next find them; any texture
    left is drawn on first use, as without a prefill. A texture is a pure function of
    (side, j), so images are the same bytes whichever process drew it. Only where
    :func:`fork_pool_is_safe` and a second core is free; a no-op otherwise
    (:meth:`for_scene`: None where nothing is pooled).
    """

    def __init__(self, pools: list[TexturePool], size: int) -> None:
        self._pid: int | None = None
        self._parts: list = []
        if not pools or not fork_pool_is_safe() or not _spare_core():
            return
        side = pools[0].pool_side(size, size)
        sizes = [(p.pool_size, side * side * 3) for p in pools]
        shared = mmap.mmap(-1, sum(n * (px + 1) for n, px in sizes))  # MAP_SHARED: the helper's writes are seen here
        at = 0
        for p, (n, px) in zip(pools, sizes):
            textures = np.frombuffer(shared, np.uint8, n * px, at).reshape(n, side, side, 3)
            drawn = np.frombuffer(shared, np.uint8, n, at + n * px)
            self._parts.append((p, side, textures, drawn))
            at += n * (px + 1)
        for stream in (sys.stdout, sys.stderr):  # the child must not write this process's buffered text again
            stream.flush()
        try:
            with _one_opencv_thread(), ctrl_c_held():  # the child ignores Ctrl-C before it can arrive
                try:
                    self._pid = os.fork()
                except OSError:  # no process to spare: the textures are drawn on first use
                    self._pid = None
                if self._pid == 0:
                    self._draw()
        except BaseException:  # Ctrl-C, delivered as the mask is restored: no helper left behind
            self.close()
            raise

    @property
    def running(self) -> bool:
        """Whether a helper is drawing (forked, not yet stopped)."""
        return self._pid is not None

    @classmethod
    def for_scene(cls, scene) -> PoolPrefill | None:
        """The prefill of a CPU scene's background pools, or None where it has none."""
        pools = texture_pools(scene.backgrounds) if scene.device == "cpu" else []
        return cls(pools, scene.size) if pools else None

    def _draw(self) -> None:
        """The helper: textures 0, 1, ... of each pool in turn, then exit, never returning
        into the caller's code whatever happens (Ctrl-C is the command's: it stops the
        helper through :meth:`close`)."""
        try:
            ignore_ctrl_c()
            _die_with_parent()
            for j in range(max(len(t) for _, _, t, _ in self._parts)):
                for p, side, textures, drawn in self._parts:
                    if j < len(textures):
                        textures[j] = p.draw_pool_texture(side, j)
                        drawn[j] = 1
        finally:
            os._exit(0)

    def adopt(self, wait: bool = False) -> int:
        """Stop the helper (or, with ``wait``, let it finish) and give this process's pools
        the textures it finished; returns how many. Later calls return 0."""
        if self._pid is None:
            return 0
        self._stop(wait)
        return sum(p.adopt(side, textures, drawn) for p, side, textures, drawn in self._parts)

    def close(self) -> None:
        """Stop the helper without taking its textures (the set-up failed)."""
        if self._pid is not None:
            self._stop(False)

    def _stop(self, wait: bool) -> None:
        if not wait:
            try:
                os.kill(self._pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.waitpid(self._pid, 0)
        except ChildProcessError:  # SIGCHLD ignored: the system reaped it
            pass
        self._pid = None


def _spare_core() -> bool:
    """Whether this process may use a second core (the prefill helper's, idle during the
    set-up); on one, the helper would only slow the set-up down."""
    return len(os.sched_getaffinity(0)) > 1


def _die_with_parent() -> None:
    """Have Linux kill this forked process when the one that forked it ends, however it
    ends (PR_SET_PDEATHSIG); exit now if it already has."""
    import ctypes

    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(0)


def forked_worker_init() -> None:
    """`pool_worker_init` for a forked worker, whose job and renderer came with the fork
    (an error is kept for the tasks to raise, as there)."""
    try:
        ignore_ctrl_c()
        exit_with_parent()
        limit_threads(1)
    except BaseException as exc:  # noqa: BLE001 (handed to the main process by the tasks)
        WORKER["init_error"] = exc


@interruptible
def render_chunk_in_worker(out: str, chunk: int, part: tuple[int, int] | None = None) -> tuple:
    """One chunk in a worker of our own pool (`render_chunk`), or part (k, n) of one
    (`render_chunk_part`)."""
    job, renderer = worker_state()
    if part is None:
        return render_chunk(Path(out), job, renderer, chunk)
    return render_chunk_part(Path(out), job, renderer, chunk, *part)


def render_chunk_standalone(out: str, job_dict: dict, chunk: int) -> tuple[int, int, int]:
    """Entry point for external executors (Dask/Ray): builds its renderer on first use."""
    key = json.dumps(job_dict, sort_keys=True)
    if WORKER.get("key") != key:
        worker_init(job_dict)
        WORKER["key"] = key
    return render_chunk(Path(out), WORKER["job"], WORKER["renderer"], chunk)
