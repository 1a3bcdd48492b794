"""Where a whole `morphgen render` command's time goes: the main process's set-up, step by
step, then each worker's chunks.

    python benchmarks/profile_command.py --model /dev/shm/face12.h5 --ids 250 --per-id 20 --workers 2 --out /dev/shm/prof
    python benchmarks/profile_command.py --ids 2500 --per-id 20 --workers 2 --out /dev/shm/prof --overwrite

Takes the options of `morphgen render` (it runs that command in this process). Why: issue
20's targets are for the whole command, and on 5,000 images of a Basel-sized model the
set-up before the first chunk (imports, the model, its level of detail, numba's first
use, the worker pool) is a sixth of the wall time; `profile_writer.py` only sees an image
once running. This prints, from this script's start:

- the set-up steps of the main process in the order they ran (wall seconds; the gaps
  between them are named where they are 5 ms or more: imports and option parsing first);
- per worker: when its first chunk started, its chunks, the time it spent in them, the
  first chunk's cost an image against the median chunk's (what a worker pays once), and
  how long it waited at the end for the last chunk of the run;
- the end: from the last chunk to the command's return (the manifest, the pool's shutdown).

Workers are timed where the pool forks them (`fork_pool_is_safe`, as the command on Linux
does), and with ``--workers 1`` the main process's chunks; spawned ones (an executor, a
process with threads) inherit no timing and are not listed. Timings are of one run on a shared machine: run it twice and read the second.
"""
from __future__ import annotations

import json
import os
import pkgutil
import sys
import tempfile
import time
from pathlib import Path

START = time.perf_counter()
os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")  # as the console script does (morphgen.cli.entry)

# (module, attribute, what it does): the set-up steps of `morphgen.dataset.run`, in order
STEPS = [
    ("morphgen.cli.render_cmd", "scene_from_options", "options checked, model loaded"),
    ("morphgen.dataset.workers.PoolPrefill", "for_scene", "background helper forked"),
    ("morphgen.dataset", "SceneRenderer", "renderer: level of detail, bases, priors"),
    ("morphgen.dataset", "prepare_output", "output folder prepared"),
    ("morphgen.dataset", "write_manifest", "manifest written"),
    ("morphgen.dataset", "pending_chunks", "chunks to do listed"),
    ("morphgen.scene.SceneRenderer", "warm_up", "first render (numba's kernels, contour tables)"),
    ("morphgen.dataset", "require_pyarrow", "pyarrow imported (Parquet params)"),
    ("morphgen.dataset.workers.PoolPrefill", "adopt", "helper's textures adopted"),
    ("morphgen.dataset", "local_pool", "worker pool forked"),
]


def _timed(fn, label: str, marks: list):
    """``fn`` logging (label, start, seconds) into ``marks`` on each call."""
    def run(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            marks.append((label, t0 - START, time.perf_counter() - t0))
    return run


def _chunk_log(fn, log: Path):
    """``fn`` (a worker's chunk task: `render_chunk`, or `render_chunk_part` with its part
    after the chunk) appending (pid, chunk[/part], images, start, end) to ``log``."""
    def run(*args):
        t0 = time.perf_counter()
        result = fn(*args)
        part = f"/{args[4]}" if len(args) > 4 else ""
        with open(log, "a") as f:
            f.write(json.dumps([os.getpid(), f"{args[3]}{part}", result[1], t0 - START, time.perf_counter() - START]) + "\n")
        return result
    return run


def _print_steps(marks: list, since: float, until: float | None, before: str) -> None:
    """The steps that started in [since, until), in order, and the gaps of 5 ms or more
    between them, from ``since`` on (``before``: what the first gap holds)."""
    at = since
    for label, t0, dt in sorted((m for m in marks if since <= m[1] < (until if until is not None else float("inf"))),
                                key=lambda m: m[1]):
        if t0 - at >= 0.005:
            print(f"  {at:6.3f} s  {t0 - at:6.3f} s  (between: {before if at == since else 'other work'})")
        print(f"  {t0:6.3f} s  {dt:6.3f} s  {label}")
        at = max(at, t0 + dt)
    if until is not None and until - at >= 0.005:
        print(f"  {at:6.3f} s  {until - at:6.3f} s  (between: until a worker starts its first chunk)")


def _print_workers(rows: list) -> float:
    """The workers' table; returns when the last chunk ended."""
    import numpy as np

    last = max(r[4] for r in rows)
    images = sum(r[2] for r in rows)
    first = min(r[3] for r in rows)
    print(f"workers: {images:,} images in {last - first:.3f} s from the first chunk's start to the last's end "
          f"({images / (last - first):.0f} img/s)")
    print("  pid      first chunk at  chunks  busy      first chunk  median chunk  waited at the end")
    for pid in sorted({r[0] for r in rows}):
        mine = sorted((r for r in rows if r[0] == pid), key=lambda r: r[3])
        per_image = [(r[4] - r[3]) / r[2] * 1e3 for r in mine if r[2]]
        busy = sum(r[4] - r[3] for r in mine)
        print(f"  {pid:<8d} {mine[0][3]:8.3f} s  {len(mine):6d}  {busy:7.3f} s  {per_image[0]:7.3f} ms/img "
              f"{np.median(per_image[1:] or per_image):7.3f} ms/img  {last - mine[-1][4]:7.3f} s")
    return last


def main() -> None:
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__)  # then the options, which are `morphgen render`'s
    marks: list = []
    for path, attr, label in STEPS:
        owner = pkgutil.resolve_name(path)
        raw = owner.__dict__.get(attr) if isinstance(owner, type) else None  # a method: wrap the function
        fn = getattr(owner, attr) if raw is None or isinstance(raw, classmethod) else raw
        setattr(owner, attr, _timed(fn, label, marks))
    from morphgen import dataset
    from morphgen.dataset import workers

    with tempfile.TemporaryDirectory(prefix="morphgen_prof_") as tmp:
        log = Path(tmp) / "chunks.jsonl"
        log.touch()
        workers.render_chunk = _chunk_log(workers.render_chunk, log)
        workers.render_chunk_part = _chunk_log(workers.render_chunk_part, log)
        dataset.render_chunk = _chunk_log(dataset.render_chunk, log)  # --workers 1: this process's
        from morphgen.cli.main import cli

        code = 0
        try:
            cli(prog_name="morphgen", args=["render", *sys.argv[1:]])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        end = time.perf_counter() - START
        rows = [json.loads(line) for line in log.read_text().splitlines()]
    if code:
        sys.exit(code)
    first = min((r[3] for r in rows), default=None)
    print("set-up, in the main process (seconds from this script's start, then how long):")
    _print_steps(marks, 0.0, first, "imports, option parsing")
    if not rows:
        print("workers: none timed (no chunk was rendered, or the workers were spawned rather than forked)")
        print(f"  the command took {end:.3f} s")
        return
    last = _print_workers(rows)
    print("end, from the last chunk's end to the command's return:")
    _print_steps(marks, last, None, "the pool's shutdown")
    print(f"  {last:6.3f} s  {end - last:6.3f} s  in all; the command took {end:.3f} s")


if __name__ == "__main__":
    main()
