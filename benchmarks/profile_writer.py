"""Where a dataset image's time goes once running: the dataset writer in one process, by phase.

    python benchmarks/profile_writer.py                                  # embedded model, defaults
    python benchmarks/profile_writer.py --model /dev/shm/face12.h5       # bench_reference_loop.py --make-model
    python benchmarks/profile_writer.py --model /dev/shm/face12.h5 --antialias 1 --top 25

Why: the writer's speed targets (issue 20) are met or missed by a tenth of a millisecond
an image, spread over the render, the decode, the PNG and a dozen small Python steps;
this is the table to start from before optimising any of them. It writes `--chunks`
chunks of the command's defaults (chunk size, params format, the background pool drawn
ahead as the command's helper does) into a temporary folder after two untimed ones,
once plainly for the rate and once under cProfile for the phases (cumulative time of
the functions that own each one; cProfile slows the Python parts by about a fifth, so
the phases are shares of the profiled run). Then the fused renderer's kernels, timed
one by one on one image of the last batch (the numba CPU path only).
"""
from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")  # as the console script does (README, start-up)

import numpy as np

# phase -> the functions (file suffix, function name) whose cumulative time it is (less
# what they spend in one another: a mixed background source calls the procedural one)
PHASES = {
    "render (numba kernel)": [("render/fused_numba.py", "fused_render")],
    "decode (shape, expression, colour)": [("sampling.py", "vertices"), ("sampling.py", "albedo")],
    "PNG encode": [("png.py", "encode_png")],
    "per-image sampling": [("dataset/job.py", "identity_params")],
    "backgrounds": [("render/backgrounds.py", "sample"), ("render/scene_backgrounds.py", "sample")],
    "params records": [("dataset/chunks.py", "_params_record"), ("dataset/chunks.py", "_params_line"),
                       ("render_plan.py", "record")],
    "params file": [("dataset/chunks.py", "finish_chunk")],
    "files written": [("pathlib.py", "write_bytes"), ("pathlib/_local.py", "write_bytes")],  # Python 3.13: a package
}


def chunk_writer(model: str | None, size: int, antialias: str, per_id: int, n_chunks: int, out: Path):
    """morphgen's chunk writer with the command's defaults but for the model, size and
    ``antialias`` (chunk size, params format, the background pool drawn ahead as the
    command's helper does, the set-up frozen out of the collector as in the command's
    workers), on one thread, for a dataset of ``n_chunks`` chunks in ``out``:
    (a callable writing chunk c, identities per chunk). bench_reference_loop.py times it too."""
    from morphgen.dataset import (
        DatasetJob,
        OutputConfig,
        prepare_output,
        write_manifest,
    )
    from morphgen.dataset.chunks import render_chunk
    from morphgen.options import RENDER_DEFAULTS, scene_config
    from morphgen.render.backgrounds import texture_pools
    from morphgen.render.threads import limit_threads
    from morphgen.scene import SceneRenderer

    limit_threads(1)
    output = OutputConfig.from_options(dict(RENDER_DEFAULTS), out)
    scene = scene_config(overrides={"model": model, "ids": n_chunks * output.chunk_ids, "size": size,
                                    "antialias": antialias})
    job = DatasetJob(scene, per_id, output)
    renderer = SceneRenderer(job.scene)
    for pool in texture_pools(job.scene.backgrounds):
        for j in range(pool.pool_size):
            pool.pool_texture(pool.pool_side(size, size), j)
    prepare_output(out, job, False, False, sharded=False)
    write_manifest(out, job, (1, 1))
    gc.freeze()  # the set-up out of Python's collections, as the command's workers have it (`local_pool`)
    return (lambda c: render_chunk(out, job, renderer, c)), output.chunk_ids


def _phase_times(stats: pstats.Stats) -> dict[str, float]:
    """Seconds of each phase: its owners' cumulative times, less calls among its owners."""
    def phase_of(func: tuple) -> str | None:
        path, _, name = func
        return next((phase for phase, owners in PHASES.items()
                     if any(path.endswith(suffix) and name == fn for suffix, fn in owners)), None)

    cum: dict[str, float] = {}
    for func, (_, _, _, ct, callers) in stats.stats.items():
        phase = phase_of(func)
        if phase is not None:
            inner = sum(c[3] for caller, c in callers.items() if phase_of(caller) == phase)
            cum[phase] = cum.get(phase, 0.0) + ct - inner
    return cum


def _kernels(model: str | None, size: int, antialias: str, reps: int) -> None:
    """The fused renderer's kernels, one by one, on image 0 of one identity's batch, with
    the arguments the renderer passed (`fused_render`'s signature, in its order)."""
    from morphgen.options import scene_config
    from morphgen.render import fused_numba as fused
    from morphgen.render import renderer as rmod
    from morphgen.render.edge_aa import contour_pass
    from morphgen.render.raster_numba import raster_core
    from morphgen.render.shading import (
        accumulate_normals_facing,
        accumulate_normals_raw,
    )
    from morphgen.scene import SceneRenderer

    captured = {}
    kernel = fused.fused_render

    def capture(*args):
        captured["args"] = args
        return kernel(*args)

    rmod.fused_render = capture
    try:
        r = SceneRenderer(scene_config(overrides={"model": model, "ids": 4, "size": size, "antialias": antialias}))
        r.render([r.sampler.image_params(3, s) for s in range(20)])
    finally:
        rmod.fused_render = kernel
    (verts, albedo, shk, spec, light, rot, scale, trans, fpx, cx, cy, near, tris, tris_sorted, tri_ids, skip, cull,
     k, gain, contrast, offset, luma, bg, out_u8, out_f32, use_u8, screen, nsum, _ncam, _normals, _lm_idx, _lm_nrm,
     _lm_pix, _lm_z, vcol, stamp, cells, zbuf, fid, bary, edge_aa, neighbors, parts, tol, drawn, cimg, best_d,
     best_q, best_u) = captured["args"]
    sc, zb, fb, bb, v, rb = screen[0], zbuf[0], fid[0], bary[0], verts[0], rot[0]
    eye = np.array([-(rb[0, i] * trans[0, 0] + rb[1, i] * trans[0, 1] + rb[2, i] * trans[0, 2]) / scale[0]
                    for i in range(3)])

    def raster() -> None:
        zb[:, :] = np.inf
        fb[:, :] = -1
        raster_core(sc[:, 0], sc[:, 1], sc[:, 2], tris_sorted, tri_ids, skip[0], cull, near, zb, fb, bb, cells)

    steps = [("whole kernel, per image", lambda: kernel(*captured["args"]), len(verts)),
             ("projection", lambda: fused._project(v, sc, rb, scale[0], trans[0], fpx, cx, cy), 1),
             ("raster", raster, 1),
             ("marking the drawn vertices", lambda: fused._mark_used_vertices(fb, tris, stamp, 0), 1)]
    if edge_aa:
        steps.append(("normals and edge labels", lambda: accumulate_normals_facing(v, tris, nsum, eye, cull, drawn), 1))
    else:
        steps.append(("normals", lambda: accumulate_normals_raw(v, tris, nsum), 1))
    steps.append(("shading the drawn vertices", lambda: fused._shade_vertices(
        stamp, 0, nsum, rb, shk[0], albedo[0], spec[0], light[0], gain[0], contrast[0], offset[0], luma, vcol), 1))
    if edge_aa:
        steps += [("contour search", lambda: contour_pass(sc, tris, neighbors, parts, drawn, skip[0], fb, zb, tol,
                                                          best_d, best_q, best_u), 1),
                  ("edge blend", lambda: fused._edge_blend(cimg, fb, bg[0], best_d, best_q, best_u, out_u8, out_f32,
                                                            use_u8, 0), 1)]
    print(f"\nfused render kernels, image 0 of a batch of {len(verts)} ({verts.shape[1]:,} vertices, "
          f"{len(tris):,} triangles, k = {k}, edge anti-aliasing {bool(edge_aa)}), median of {reps}:")
    for name, step, per in steps:
        step()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        print(f"  {name:30s} {np.median(times) / per * 1e3:6.3f} ms")
    print(f"  ({int((fb >= 0).sum()):,} of {fb.size:,} pixels drawn, {int((stamp == 0).sum()):,} vertices shaded; "
          "the rest of the kernel is the resolve and composite)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model file (default: the embedded model)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--antialias", default="edges", help="edges or 1..4, as morphgen render takes it")
    ap.add_argument("--per-id", type=int, default=20)
    ap.add_argument("--chunks", type=int, default=10, help="chunks timed, each way (default 10: 2,000 images)")
    ap.add_argument("--dir", type=Path, default=None, help="where the images go (default: the temp folder; "
                                                           "/dev/shm leaves the disk out)")
    ap.add_argument("--top", type=int, default=0, help="also print the N functions of most own time")
    ap.add_argument("--reps", type=int, default=100, help="repeats of each kernel (default 100)")
    a = ap.parse_args()
    if a.model and not Path(a.model).is_file():
        raise SystemExit(f"error: --model {a.model}: no such file")
    if a.chunks < 1 or a.per_id < 1:
        raise SystemExit("error: --chunks and --per-id must be >= 1")
    out = Path(tempfile.mkdtemp(prefix="morphgen_prof_", dir=a.dir))
    try:
        write, chunk_ids = chunk_writer(a.model, a.size, a.antialias, a.per_id, 2 * a.chunks + 2, out)
        chunk_images = chunk_ids * a.per_id
        write(0)
        write(1)  # untimed: first-use costs
        t0 = time.perf_counter()
        for c in range(2, 2 + a.chunks):
            write(c)
        n = a.chunks * chunk_images
        plain = (time.perf_counter() - t0) / n * 1e3
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.enable()
        for c in range(2 + a.chunks, 2 + 2 * a.chunks):
            write(c)
        prof.disable()
        profiled = (time.perf_counter() - t0) / n * 1e3
    finally:
        shutil.rmtree(out, ignore_errors=True)
    stats = pstats.Stats(prof)
    phases = _phase_times(stats)
    total = profiled * n / 1e3
    print(f"model {a.model or 'embedded'}, {a.size} px, --antialias {a.antialias}: {plain:.3f} ms an image "
          f"({n:,} images, one process), {profiled:.3f} under cProfile, of which:")
    for phase in PHASES:
        t = phases.get(phase, 0.0)
        print(f"  {phase:44s} {t / n * 1e3:6.3f} ms  {t / total * 100:5.1f} %")
    rest = total - sum(phases.values())
    label = "the rest (planning, framing, landmarks, ...)"
    print(f"  {label:44s} {rest / n * 1e3:6.3f} ms  {rest / total * 100:5.1f} %")
    if a.top:
        stats.sort_stats("tottime").print_stats(a.top)
    _kernels(a.model, a.size, a.antialias, a.reps)


if __name__ == "__main__":
    main()
