"""Thread control of a render process: the dataset writer and the benchmarks run one
process per core, each with one compute thread per library."""
from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading

import numba


def limit_threads(n: int = 1) -> None:
    """One compute thread per process (numba, torch, OpenCV, numpy's BLAS): on a loaded
    machine several threads per process are slower than one (measured on the 2-core VM); parallelism
    comes from running one process per core. BLAS matters: two dataset workers whose
    decode matmuls each spun two OpenBLAS threads wrote 161 img/s here, 224 with one.
    Torch is not imported for this (2 s, and the CPU dataset path never needs it): when it
    is not loaded yet, the environment makes a later import use n threads."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(n)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
    else:  # torch takes its thread count from these when it is imported
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(n)
    try:
        numba.set_num_threads(n)
    except Exception:  # numba without a threading layer: nothing to limit
        pass
    import cv2

    cv2.setNumThreads(n)
    os.environ.setdefault("OMP_NUM_THREADS", str(n))


@contextlib.contextmanager
def one_blas_thread():
    """Context manager: numpy's BLAS runs on one thread meanwhile, then as before.

    Why: OpenBLAS's threaded sgemm rounds differently from its one-thread kernel. The
    decode of a batch of expressions then differs in the last bits, and about one image in
    fifty by one grey level at a pixel. A process rendering on its own (``--workers 1``,
    the Python API, online synthesis) would draw other bytes than the writer's workers,
    which run one thread each (`limit_threads`). An image must not depend on the thread
    count. Costs about 20 microseconds a call. The limit is process-wide: a lock keeps two
    threads (the Python API's callers) from restoring it under each other."""
    with _BLAS_LOCK, _blas_controller().limit(limits=1, user_api="blas"):
        yield


_BLAS_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def _blas_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()
