"""End-to-end dataset writing speed and memory: sample, decode, render, PNG-encode, write.

    python benchmarks/bench_dataset.py                       # default model, 128 px, PNG, antialias edges
    python benchmarks/bench_dataset.py --ids 250 --per-id 20 --workers 2 --dir /dev/shm   # without the disk
    python benchmarks/bench_dataset.py --device cuda --ids 1000 --per-id 100 --workers 15
    python benchmarks/bench_dataset.py --stub-render --ids 400 --per-id 20   # GPU pipeline, no GPU

Prints images/s for the whole `morphgen render` pipeline (numba compilation and CUDA
start-up excluded by a warm-up chunk; pool start-up included) and the peak resident memory
of the worker processes, for two dataset sizes (on cpu; one on cuda, see --scales) so that
"memory flat in dataset size" can be read off directly, and the difference of the two
gives the steady-state rate without the pool start-up. Images per CPU-second (all
processes) are printed too: on a shared virtual machine the wall-clock figures swing by
20-30 % from run to run with the neighbours' load, the CPU figures much less. Targets at 128x128 PNG: on a 2-core
machine >= 450 images/s with 2 workers, < 1.5 GB per worker; on a 16-core GPU machine
>= 5,500 images/s with 15 workers.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from morphgen.appearance import AppearanceConfig
from morphgen.dataset import DatasetJob, OutputConfig, run
from morphgen.errors import ConfigError
from morphgen.render.photo import PhotoConfig
from morphgen.sampling import SamplingConfig
from morphgen.scene import SceneConfig, SceneRenderer, antialias_value


def _antialias(text: str) -> int | str:
    try:
        return antialias_value(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the pool)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class StubRenderer:
    """Stands in for the device renderer of the GPU path (--stub-render): the "rendered"
    image is the plan's background and the landmarks are one real render's, so the whole
    pipeline around the device -- planning in the workers, the rings, encoding and writing
    -- runs and can be timed on a machine without a GPU."""

    def __init__(self, config: SceneConfig, batch_size: int, recorded_appearance: bool = False):
        self.batch_size = batch_size
        self.cpu = SceneRenderer(replace(config, device="cpu"), recorded_appearance=recorded_appearance)
        self.one = self.cpu.render_plan_arrays(self.cpu.plan([self.cpu.sampler.image_params(0, 0)]))

    def warm_up(self) -> None:
        """Nothing to start: the one real render ran in __init__."""

    def render_plan_arrays(self, plan) -> dict:
        arrays = {k: np.repeat(v, len(plan), axis=0) for k, v in self.one.items()}
        arrays["rgb"] = np.array(plan.backgrounds)
        return arrays


def file_create_ms(folder: Path, n: int = 300) -> float:
    """CPU milliseconds the kernel takes to create one new (empty) file in ``folder``: a PNG
    dataset creates one per image. Typically 0.01-0.05 ms; on the 2-core VM's ext4 it swings
    between 0.1 and 1.5 ms (inode allocation; re-opening, renaming or linking stay near
    0.01-0.05 ms), as much as a whole 128 px render, so it is printed with the rates."""
    root = Path(tempfile.mkdtemp(prefix="morphgen_fsprobe_", dir=folder))
    try:
        c0 = time.process_time()
        for i in range(n):
            os.close(os.open(root / f"{i:04d}.png", os.O_CREAT | os.O_WRONLY, 0o644))
        return (time.process_time() - c0) / n * 1e3
    finally:
        shutil.rmtree(root, ignore_errors=True)


def bench(ids: int, per_id: int, workers: int, size: int, antialias: int | str, fmt: str, model: str | None,
          device: str, folder: Path | None = None, appearance: str = "off", photo: str = "off",
          backgrounds: str = "procedural") -> dict:
    looks = {"appearance": AppearanceConfig.parse(appearance), "photo": PhotoConfig.parse(photo)}
    scene = SceneConfig(sampling=SamplingConfig(n_identities=ids, **looks), model=model, size=size,
                        antialias=antialias, device=device, backgrounds=backgrounds)
    job = DatasetJob(scene, per_id, OutputConfig(image_format=fmt, chunk_ids=max(1, min(10, ids // (4 * workers)))))
    root = Path(tempfile.mkdtemp(prefix="morphgen_bench_", dir=folder))
    try:
        # Warm-up: a one-chunk dataset compiles the numba kernels into the on-disk cache (and
        # starts CUDA in this process on --device cuda).
        warm = DatasetJob(replace(scene, sampling=SamplingConfig(n_identities=1, **looks)), 2, job.output)
        run(root / "warm", warm, workers=1, progress=False)
        t0, cpu0, main0 = time.perf_counter(), _cpu_seconds(), time.process_time()
        summary = run(root / "ds", job, workers=workers, progress=False)
        wall, cpu, main = time.perf_counter() - t0, _cpu_seconds() - cpu0, time.process_time() - main0
    finally:
        shutil.rmtree(root, ignore_errors=True)
    peak_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # MB (Linux: KiB)
    peak_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"images": summary["images"], "wall_s": wall, "img_per_s": summary["images"] / wall, "cpu_s": cpu,
            "main_ms_per_1000": main * 1e6 / max(summary["images"], 1),
            "mb": summary["bytes"] / 1e6, "peak_worker_mb": max(peak_children, peak_self if workers == 1 else 0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ids", type=int, default=100)
    ap.add_argument("--per-id", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--antialias", type=_antialias, default="edges",
                    help="edges, or a supersampling factor 1..4 (default edges, as morphgen render)")
    ap.add_argument("--format", default="png", choices=["png", "jpg"])
    ap.add_argument("--model", default=None, help="model file (default: embedded)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--stub-render", action="store_true",
                    help="the GPU path with the device renderer stubbed out (no GPU needed): times the pipeline "
                         "around the device and the main process's CPU per 1000 images, its serial stage")
    ap.add_argument("--dir", type=Path, default=None,
                    help="folder the datasets are written to, then removed (default: the system temp folder)")
    ap.add_argument("--appearance", default="off", help="render option --appearance (e.g. full; default off)")
    ap.add_argument("--photo", default="off", help="render option --photo (e.g. realistic; default off)")
    ap.add_argument("--backgrounds", default="procedural", help="render option --backgrounds (default procedural)")
    ap.add_argument("--scales", default=None,
                    help="dataset sizes as multiples of --ids, comma-separated (default: 1,2 on cpu, 1 on cuda)")
    a = ap.parse_args()
    if a.stub_render:
        import morphgen.dataset

        morphgen.dataset.SceneRenderer = StubRenderer
        a.device = "cuda"
    elif a.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            sys.exit("error: --device cuda: no CUDA device is available here; use --device cpu")
    scales = [int(x) for x in (a.scales or ("1,2" if a.device == "cpu" else "1")).split(",")]
    print(f"python {sys.version.split()[0]}, {a.device}, {a.workers} workers, {a.size}px, antialias {a.antialias}, "
          f"{a.format}; output in {a.dir or tempfile.gettempdir()}: {file_create_ms(a.dir):.2f} ms CPU to create a file")
    runs = []
    for scale in scales:
        r = bench(a.ids * scale, a.per_id, a.workers, a.size, a.antialias, a.format, a.model, a.device, a.dir,
                  a.appearance, a.photo, a.backgrounds)
        runs.append(r)
        print(f"{r['images']:7d} images: {r['img_per_s']:7.1f} img/s end to end ({r['wall_s']:.1f} s, "
              f"{r['mb']:.0f} MB written), {r['images'] / r['cpu_s']:.1f} img per CPU-second, main process "
              f"{r['main_ms_per_1000']:.0f} ms CPU per 1000 img, "
              f"peak worker RSS {r['peak_worker_mb']:.0f} MB")
    if len(runs) >= 2 and runs[-1]["wall_s"] > runs[0]["wall_s"]:
        # The difference of two sizes cancels the pool start-up (about 2 s on 2 cores: imports,
        # numba cache loads): the rate a SYN-1M-sized run sustains.
        rate = (runs[-1]["images"] - runs[0]["images"]) / (runs[-1]["wall_s"] - runs[0]["wall_s"])
        cpu_rate = (runs[-1]["images"] - runs[0]["images"]) / (runs[-1]["cpu_s"] - runs[0]["cpu_s"])
        print(f"steady state (start-up cancelled, {runs[0]['images']} -> {runs[-1]['images']} images): "
              f"{rate:7.1f} img/s; {cpu_rate:.1f} img per CPU-second, x {a.workers} cores = "
              f"{cpu_rate * a.workers:.1f} img/s where the cores are not shared")


if __name__ == "__main__":
    main()
