"""End-to-end dataset writing speed and memory: sample, decode, render, PNG-encode, write.

    python benchmarks/bench_dataset.py                       # default model, 128 px, PNG
    python benchmarks/bench_dataset.py --ids 200 --per-id 20 --workers 2 --antialias 1

Prints images/s for the whole `morphgen render` pipeline (worker start-up excluded by a
warm-up chunk) and the peak resident memory of the worker processes, for two dataset sizes
so that "memory flat in dataset size" can be read off directly. Target on a 2-core machine
at 128x128 PNG: >= 450 images/s with 2 workers, < 1.5 GB per worker.
"""
from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from morphgen.dataset import DatasetJob, OutputConfig, run
from morphgen.sampling import SamplingConfig
from morphgen.scene import SceneConfig


def bench(ids: int, per_id: int, workers: int, size: int, antialias: int, fmt: str, model: str | None) -> dict:
    scene = SceneConfig(sampling=SamplingConfig(n_identities=ids), model=model, size=size, antialias=antialias)
    job = DatasetJob(scene, per_id, OutputConfig(image_format=fmt, chunk_ids=max(1, min(10, ids // (4 * workers)))))
    root = Path(tempfile.mkdtemp(prefix="morphgen_bench_"))
    try:
        # Warm-up: a one-chunk dataset compiles the numba kernels into the on-disk cache.
        warm = DatasetJob(SceneConfig(sampling=SamplingConfig(n_identities=1), model=model, size=size,
                                      antialias=antialias), 2, job.output)
        run(root / "warm", warm, workers=1, progress=False)
        t0 = time.perf_counter()
        summary = run(root / "ds", job, workers=workers, progress=False)
        wall = time.perf_counter() - t0
    finally:
        shutil.rmtree(root, ignore_errors=True)
    peak_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # MB (Linux: KiB)
    peak_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"images": summary["images"], "wall_s": wall, "img_per_s": summary["images"] / wall,
            "mb": summary["bytes"] / 1e6, "peak_worker_mb": max(peak_children, peak_self if workers == 1 else 0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ids", type=int, default=100)
    ap.add_argument("--per-id", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--antialias", type=int, default=1)
    ap.add_argument("--format", default="png", choices=["png", "jpg"])
    ap.add_argument("--model", default=None, help="model file (default: embedded)")
    a = ap.parse_args()
    print(f"python {sys.version.split()[0]}, {a.workers} workers, {a.size}px, antialias {a.antialias}, {a.format}")
    for scale in (1, 2):
        r = bench(a.ids * scale, a.per_id, a.workers, a.size, a.antialias, a.format, a.model)
        print(f"{r['images']:7d} images: {r['img_per_s']:7.1f} img/s end to end ({r['wall_s']:.1f} s, "
              f"{r['mb']:.0f} MB written), peak worker RSS {r['peak_worker_mb']:.0f} MB")


if __name__ == "__main__":
    main()
