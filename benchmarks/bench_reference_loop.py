"""`morphgen render` against a plain reference loop, whole commands, on one machine in one run.

    python benchmarks/bench_reference_loop.py --make-model /dev/shm/face12.h5              # 28,561 vertices
    python benchmarks/bench_reference_loop.py --make-model /dev/shm/head53k.h5 --grid 231  # 53,361 vertices
    python benchmarks/bench_reference_loop.py --model /dev/shm/face12.h5 --ids 250 --per-id 20 \\
        --workers 2 --dir /dev/shm --antialias edges 1 2

Why: issue #20 sets morphgen's dataset writer a target relative to the simplest loop
that renders the same mesh, so that the figure means the same on any machine: the ratio
of the two, timed alternately in the same minutes (a shared VM's speed drifts by 20-30 %
from one minute to the next; both take the same drift).

The reference loop is what a user would write in an afternoon with morphgen's renderer:
one process per core, each taking every n-th identity: standard-normal shape and colour
coefficients, an expression (sd 0.5), a yaw within +-45 degrees and a random SH light per
image, the identity's images decoded with one matmul, rendered by the fused numba renderer (framed by the five
points, no supersampling, no edge anti-aliasing, plain grey background) and written as
PNG by OpenCV. It records no parameters and cannot resume.

`morphgen render` is run as the command a user types (process start, planning, the
worker pool, params and manifest included) with its defaults but for the options given.
Each round times the loop, then each `--antialias` setting of morphgen; `--rounds`
repeats the round, and the best of each is reported, with the ratio to the loop.
`--steady` also times each at twice the identities: the difference is the rate once
running, without what a run pays once (start-up, the pool, each worker's imports, numba
cache loads and first-use tables), which weighs heavily on 5,000 images. It is the
difference of two timed runs, so one slow minute throws it far off: the median over the
rounds is reported (use 3 or more).

--make-model writes a BFM-2017-layout file on a synthetic face mask (``tests/fixtures``'
writer: smooth bases like a real model's, 80 shape / 80 colour / 64 expression
components): --grid 169 gives BFM 2017 face12's size (28,561 vertices, 56,448
triangles), 231 the full head's or BFM 2009's (53,361 / 105,800).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))  # an installed morphgen wins; tests/ is only read by --make-model


def make_model(path: Path, grid: int) -> None:
    from morphgen.render.synthetic import synthetic_face_grid
    from tests.fixtures import write_bfm2017_fixture

    face = synthetic_face_grid(grid)
    write_bfm2017_fixture(path, mesh=face, n_shape=80, n_color=80, n_expression=64)
    print(f"wrote {path}: {len(face.vertices):,} vertices, {len(face.triangles):,} triangles, 80/80/64 components")


class _Loop:
    """The reference loop's set-up (one process) and its body, one identity at a time."""

    def __init__(self, model_path: str | None, per_id: int, size: int) -> None:
        from morphgen.loading import load_model
        from morphgen.render.renderer import RenderSettings
        from morphgen.render.threads import limit_threads

        limit_threads(1)
        self.model = model = load_model(model_path, need_five_points=True)
        self.shape_b, self.color_b = model.shape.scaled_basis(), model.color.scaled_basis()
        self.shape_m = model.shape.mean.reshape(-1).astype(np.float32)
        self.color_m = model.color.mean.reshape(-1).astype(np.float32)
        self.expr = expr = model.expression
        if expr is not None:
            self.shape_m = self.shape_m + expr.mean.reshape(-1).astype(np.float32)
            self.expr_b = expr.scaled_basis()
        self.groups = model.five_point_vertices()
        self.per_id = per_id
        self.settings = RenderSettings(height=size, width=size, backend="numba")
        self.background = np.full((per_id, size, size, 3), 128, np.uint8)

    def identity(self, identity: int, out: Path) -> int:
        """Render and write one identity's images; returns how many."""
        import cv2

        from morphgen.render.camera import Pose
        from morphgen.render.renderer import render_batch

        model, per_id, expr = self.model, self.per_id, self.expr
        rng = np.random.default_rng(identity)
        shape = self.shape_m + self.shape_b @ rng.standard_normal(model.shape.n_components).astype(np.float32)
        color = self.color_m + self.color_b @ rng.standard_normal(model.color.n_components).astype(np.float32)
        if expr is None:
            verts = np.repeat(shape.reshape(1, -1, 3), per_id, 0)
        else:  # each image's expression, the batch in one matmul
            coeffs = rng.normal(0.0, 0.5, (expr.n_components, per_id)).astype(np.float32)
            verts = (shape[:, None] + self.expr_b @ coeffs).T.reshape(per_id, -1, 3)
        albedo = np.clip(color.reshape(-1, 3), 0.0, 1.0)
        pose = Pose.create(yaw=rng.uniform(-45, 45, per_id), batch=per_id)
        sh = np.zeros((per_id, 9, 3))
        sh[:, 0] = rng.uniform(0.6, 1.0, (per_id, 1))
        sh[:, 1:4] = rng.normal(0.0, 0.2, (per_id, 3, 1))
        rgb = render_batch(verts, albedo, sh, pose, model.triangles, self.settings, backgrounds=self.background,
                           five_point_groups=self.groups)["rgb"]
        folder = out / f"{identity:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        for k, img in enumerate(rgb):
            cv2.imwrite(str(folder / f"{identity:05d}_{k:03d}.png"), img[..., ::-1])
        return len(rgb)


def _loop_worker(args: tuple) -> int:
    """One core's share of the reference loop: identities worker, worker + n, ..."""
    model_path, ids, per_id, size, worker, workers, out = args
    loop = _Loop(model_path, per_id, size)
    return sum(loop.identity(identity, out) for identity in range(worker, ids, workers))


def _per_image_worker(args: tuple) -> float:
    """ms of one core per image once running: ``n_ids`` identities after two untimed steps
    (first-use costs), by the loop's body (``antialias`` None, one identity a step) or by morphgen's
    chunk writer (a chunk a step, all of the command's defaults, params format and chunk
    size included, but for the model, size and ``antialias``)."""
    model_path, n_ids, per_id, size, antialias, worker, out = args
    first = 1000 * worker  # each process its own identities
    if antialias is None:
        loop = _Loop(model_path, per_id, size)
        steps, ids_per_step = [lambda i=i: loop.identity(i, out) for i in range(first, first + n_ids + 2)], 1
    else:
        from profile_writer import chunk_writer  # this folder's

        from morphgen.options import RENDER_DEFAULTS

        chunk = RENDER_DEFAULTS["chunk_ids"]
        c0 = first // chunk
        write, ids_per_step = chunk_writer(model_path, size, antialias, per_id, c0 + n_ids // chunk + 2, out)
        steps = [lambda c=c: write(c) for c in range(c0, c0 + n_ids // ids_per_step + 2)]
    for step in steps[:2]:  # untimed: first-use costs
        step()
    t0 = time.perf_counter()
    for step in steps[2:]:
        step()
    return (time.perf_counter() - t0) / ((len(steps) - 2) * ids_per_step * per_id) * 1e3


def per_image(model: str | None, per_id: int, size: int, workers: int, settings: list[str | None], rounds: int,
              root: Path | None) -> None:
    """Print each setting's ms per image once running, ``workers`` processes at a time (one
    per core, as in the commands), alternating the settings for ``rounds`` rounds."""
    from morphgen.options import RENDER_DEFAULTS

    chunk = RENDER_DEFAULTS["chunk_ids"]  # morphgen's processes time whole chunks of the command's size
    n_ids = max(chunk, 1000 // per_id // chunk * chunk)
    times: dict[str | None, list[float]] = {s: [] for s in settings}
    for _ in range(rounds):
        for setting in settings:
            tmp = Path(tempfile.mkdtemp(prefix="morphgen_ref_", dir=root))
            try:
                jobs = [(model, n_ids, per_id, size, setting, w, tmp / f"w{w}") for w in range(workers)]
                with mp.get_context("spawn").Pool(workers) as pool:
                    times[setting] += pool.map(_per_image_worker, jobs)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    loop = float(np.median(times[None]))
    print(f"ms of one core per image once running ({workers} processes at a time, {n_ids * per_id} images each, "
          f"median of {rounds} rounds):")
    for setting, ts in times.items():
        name = "reference loop" if setting is None else f"morphgen --antialias {setting}"
        print(f"  {name:32s} {np.median(ts):6.3f} ms  ({min(ts):.3f}-{max(ts):.3f})  "
              f"{loop / np.median(ts):5.2f}x the loop's images per second")


def run_loop(model: str | None, ids: int, per_id: int, size: int, workers: int, out: Path) -> tuple[int, float]:
    """(images, seconds) of the reference loop, pool start-up included."""
    t0 = time.perf_counter()
    jobs = [(model, ids, per_id, size, w, workers, out) for w in range(workers)]
    with mp.get_context("spawn").Pool(workers) as pool:
        n = sum(pool.map(_loop_worker, jobs))
    return n, time.perf_counter() - t0


def run_morphgen(model: str | None, ids: int, per_id: int, size: int, workers: int, antialias: str,
                 out: Path, extra: list[str]) -> tuple[int, float]:
    """(images, seconds) of the `morphgen render` command."""
    exe = shutil.which("morphgen") or str(Path(sys.executable).with_name("morphgen"))
    cmd = [exe, "render", "--ids", str(ids), "--per-id", str(per_id), "--size", str(size), "--workers",
           str(workers), "--antialias", antialias, "--out", str(out), "--quiet", *extra]
    if model:
        cmd += ["--model", model]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed: {done.stderr.strip().splitlines()[-1:]}")
    return sum(1 for _ in out.glob("images/*/*.png")), wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--make-model", type=Path, default=None, help="write a synthetic BFM-2017-layout file here and stop")
    ap.add_argument("--grid", type=int, default=169, help="--make-model's mesh: grid x grid vertices (default 169)")
    ap.add_argument("--model", default=None, help="model file (default: the embedded model)")
    ap.add_argument("--ids", type=int, default=250)
    ap.add_argument("--per-id", type=int, default=20)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--antialias", nargs="+", default=["edges", "1"], help="morphgen settings to time (default edges 1)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of (loop, each morphgen setting): best of each whole command, median of the --steady differences")
    ap.add_argument("--dir", type=Path, default=None, help="where the images go, removed after each run")
    ap.add_argument("--render-args", default="", help="further `morphgen render` options, e.g. '--appearance full'")
    ap.add_argument("--per-image", action="store_true",
                    help="instead of whole commands: the cost of an image once running, the loop's body against "
                         "morphgen's chunk writer, --workers processes at a time, 1,000 images each, median of --rounds")
    ap.add_argument("--steady", action="store_true",
                    help="also time each at twice --ids: the difference of the two runs is the rate once running "
                         "(start-up, the worker pool and each worker's first-use costs cancelled)")
    a = ap.parse_args()
    if a.make_model:
        make_model(a.make_model, a.grid)
        return
    if a.model and not Path(a.model).is_file():
        sys.exit(f"error: --model {a.model}: no such file (write one with --make-model)")
    if a.per_image:
        per_image(a.model, a.per_id, a.size, a.workers, [None, *a.antialias], a.rounds, a.dir)
        return
    best: dict[str, float] = {}  # img/s of the whole command, best of the rounds
    steady: dict[str, list[float]] = {}  # img/s once running, per round
    print(f"{a.ids} ids x {a.per_id} images, {a.size} px, {a.workers} workers, model {a.model or 'embedded'}; "
          f"load average {os.getloadavg()[0]:.2f}")
    scales = (1, 2) if a.steady else (1,)
    for r in range(a.rounds):
        runs = [("reference loop", None)] + [(f"morphgen --antialias {s}", s) for s in a.antialias]
        for name, aa in runs:
            timed = []
            for scale in scales:
                out = Path(tempfile.mkdtemp(prefix="morphgen_ref_", dir=a.dir))
                try:
                    if aa is None:
                        n, wall = run_loop(a.model, a.ids * scale, a.per_id, a.size, a.workers, out / "images")
                    else:
                        n, wall = run_morphgen(a.model, a.ids * scale, a.per_id, a.size, a.workers, aa, out / "ds",
                                               a.render_args.split())
                finally:
                    shutil.rmtree(out, ignore_errors=True)
                timed.append((n, wall))
                print(f"  round {r + 1}: {name:28s} {n:6d} images in {wall:6.1f} s = {n / wall:7.1f} img/s")
            n, wall = timed[0]
            if name not in best or n / wall > best[name]:
                best[name] = n / wall
            if a.steady:
                steady.setdefault(name + ", once running", []).append(
                    (timed[1][0] - timed[0][0]) / (timed[1][1] - timed[0][1]))
    print("best of each (once running: the median over rounds of each round's difference, which one noisy run "
          "can throw far off)" if a.steady else "best of each:")
    rows = [best, {k: float(np.median(v)) for k, v in steady.items()}][:len(scales)]
    for suffix, rate in zip(("", ", once running"), rows):
        ref = rate["reference loop" + suffix]
        for name, r in rate.items():
            print(f"  {name:42s} {r:7.1f} img/s  {r / ref:5.2f}x the reference loop{suffix}")


if __name__ == "__main__":
    main()
