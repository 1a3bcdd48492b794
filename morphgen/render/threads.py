"""Thread control of a render process: the dataset writer and the benchmarks run one
process per core, each with one compute thread per library."""
from __future__ import annotations

import os
import sys

import numba


def limit_threads(n: int = 1) -> None:
    """One compute thread per process (numba, torch, OpenCV, numpy's BLAS): on a loaded
    machine several threads per process are slower than one (FACTS section 6); parallelism
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
