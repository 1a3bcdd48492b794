"""Renderer throughput: images/s for rasterize-only and full render, per core and on all cores.

Usage: .venv/bin/python benchmarks/bench_render.py [--seconds 3] [--sizes 128 256] [--batch 32]
       python benchmarks/bench_render.py --only-torch --torch-device cuda --torch-batch 512   # a GPU
       python benchmarks/bench_render.py --aa-quality --sizes 128   # anti-aliasing error vs 4x4 supersampling

Meshes: a synthetic face mask sized like BFM 2017 face12 (28,561 vertices, 56,448
triangles), and the embedded default model when ``assets/default_model.npz`` exists.
"Full render" is decode-free (vertices and albedo given): framing, pose, normals, SH
shading, rasterization, interpolation, supersampling and compositing over a background,
to uint8 RGB. Poses are drawn as in the data generator (yaw +-60, pitch +-25, roll +-10).
"1 process" is one process with one thread (the per-core figure); "N processes" runs one
such process per core at the same time and sums their rates. "wall" counts images per
elapsed second; "cpu" per CPU-second the processes actually got, which is what a core
would deliver if no one else used it (on a machine shared with other jobs the wall
figures drop with the load, the cpu figures much less). Every process uses one compute
thread (numba, torch, OpenCV), as the dataset writer does. The load average is printed
alongside.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.append(str(Path(__file__).resolve().parents[1]))  # an installed morphgen wins


def _scene(mesh: str, batch: int, seed: int = 0):
    from morphgen.render.camera import Pose

    rng = np.random.default_rng(seed)
    if mesh == "synthetic":
        from morphgen.render.synthetic import synthetic_face_grid

        face = synthetic_face_grid()
        base = np.repeat(face.vertices[None], batch, 0)
        # small per-image shape variation so that no two renders are identical
        verts = (base * rng.uniform(0.9, 1.1, (batch, 1, 3))).astype(np.float32)
        albedo = np.repeat(face.albedo[None], batch, 0)
        tris, groups = face.triangles, face.five_point_vertices()
    else:
        from morphgen.loading import load_model

        model = load_model()
        k_s, k_c = min(80, model.shape.n_components), min(64, model.color.n_components)
        verts = model.shape.instance(rng.normal(size=(batch, k_s))).astype(np.float32)
        if model.expression is not None:
            k_e = min(64, model.expression.n_components)
            verts = verts + model.expression.instance(rng.normal(size=(batch, k_e)) * 0.5)
        albedo = np.clip(model.color.instance(rng.normal(size=(batch, k_c))), 0.0, 1.0).astype(np.float32)
        tris, groups = model.triangles, model.five_point_vertices()
    sh = np.zeros((batch, 9, 3))
    sh[:, 0] = rng.uniform(0.6, 1.0, (batch, 1))
    sh[:, 1:4] = rng.normal(0.0, 0.2, (batch, 3, 1))
    pose = Pose.create(batch, yaw=rng.uniform(-60, 60, batch), pitch=rng.uniform(-25, 25, batch), roll=rng.uniform(-10, 10, batch))
    return verts, albedo, sh, pose, tris, groups


def _run(
    mesh: str, what: str, size: int, antialias: int, batch: int, seconds: float, device: str = "cpu",
    raster: str = "auto", barrier=None
) -> tuple[float, float]:
    """(images per wall-clock second, images per CPU second of this process)."""
    from morphgen.render.backgrounds import ProceduralBackgrounds, sample_batch
    from morphgen.render.camera import frame_translation
    from morphgen.render.rasterize import rasterize
    from morphgen.render.renderer import RenderSettings, render_batch
    from morphgen.render.threads import limit_threads

    limit_threads(1)
    verts, albedo, sh, pose, tris, groups = _scene(mesh, batch)
    backend = "torch" if what == "torch" else "numba"
    edge_aa = antialias == "edges"
    antialias = 1 if edge_aa else int(antialias)
    st = RenderSettings(size, size, antialias=antialias, edge_aa=edge_aa, backend=backend,
                        device=device if what == "torch" else None,
                        raster_backend=raster if what.startswith("torch") else "auto")
    bg = sample_batch(ProceduralBackgrounds(), np.random.default_rng(1), batch, size, size)
    if what in ("raster", "torch-raster"):
        cam = st.camera.scaled(antialias)
        t = frame_translation(verts, pose, groups, st.camera, st.framing)
        screen = cam.project(pose.with_translation(t).transform(verts.astype(np.float64))).astype(np.float32)
        if what == "torch-raster":
            import torch

            screen, tris = torch.from_numpy(screen).to(device), torch.from_numpy(np.asarray(tris)).to(device)

        def step():
            rasterize(screen, tris, cam.height, cam.width, backend="numba" if what == "raster" else raster,
                      cull_backfaces=True, with_bary=False)
            _sync(device)

    elif what == "torch-device":  # tensors stay on the device: what the online trainer does
        import torch

        from morphgen.render.torch_render import render_torch

        t = frame_translation(verts, pose, groups, st.camera, st.framing)
        dpose = pose.with_translation(t).torch(device)
        v, a, l_ = (torch.as_tensor(np.asarray(x), dtype=torch.float32, device=device) for x in (verts, albedo, sh))
        tt, b = torch.as_tensor(np.asarray(tris), device=device), torch.as_tensor(bg, device=device).float() / 255

        def step():
            with torch.no_grad():
                render_torch(v, a, l_, dpose, tt, st.camera, antialias=antialias, edge_aa=edge_aa, backgrounds=b,
                             raster_backend=raster)
            _sync(device)

    else:

        def step():
            render_batch(verts, albedo, sh, pose, tris, st, backgrounds=bg, five_point_groups=groups)
            _sync(device)

    step()  # compile / warm caches
    if barrier is not None:
        barrier.wait()
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while True:
        step()
        n += batch
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return n / dt, n / max(time.process_time() - c0, 1e-9)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _worker(args, barrier, queue):
    queue.put(_run(*args, barrier=barrier))


def run_parallel(args: tuple, procs: int) -> tuple[float, float]:
    """Summed (wall, CPU-time) rates of ``procs`` processes running at the same time."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(procs)
    queue = ctx.Queue()
    ps = [ctx.Process(target=_worker, args=(args, barrier, queue)) for _ in range(procs)]
    for p in ps:
        p.start()
    rates = [queue.get() for _ in ps]
    for p in ps:
        p.join()
    return float(sum(r[0] for r in rates)), float(sum(r[1] for r in rates))


def aa_quality(mesh: str, size: int, batch: int) -> None:
    """Anti-aliasing quality against a 4x4 supersampled reference: mean absolute error (0-255)
    on the pixels where the single-sample render differs from it by more than 8 levels (the
    edges: silhouettes, occlusions and colour edges), and on all pixels; with the time per
    image of each setting (one process, one thread)."""
    from morphgen.render.backgrounds import ProceduralBackgrounds, sample_batch
    from morphgen.render.renderer import RenderSettings, render_batch
    from morphgen.render.threads import limit_threads

    limit_threads(1)
    verts, albedo, sh, pose, tris, groups = _scene(mesh, batch)
    bg = sample_batch(ProceduralBackgrounds(), np.random.default_rng(1), batch, size, size)
    imgs, ms = {}, {}
    for aa in (4, 1, "edges", 2, 3):
        st = RenderSettings(size, size, antialias=1 if aa == "edges" else aa, edge_aa=aa == "edges")
        render_batch(verts, albedo, sh, pose, tris, st, backgrounds=bg, five_point_groups=groups)  # warm
        times = []
        for _ in range(5):  # the fastest of 5: a shared machine's neighbours only ever add time
            t0 = time.perf_counter()
            imgs[aa] = render_batch(verts, albedo, sh, pose, tris, st, backgrounds=bg,
                                    five_point_groups=groups)["rgb"].astype(np.float64)
            times.append(time.perf_counter() - t0)
        ms[aa] = min(times) / batch * 1e3
    _print_aa_errors(f"mesh: {mesh}, {size} px, {batch} faces", imgs, (1, "edges", 2, 3, 4), ms)


def _print_aa_errors(what: str, imgs: dict, settings: tuple, ms: dict | None = None) -> None:
    """Each setting's mean absolute error against ``imgs[4]`` (4x4 supersampling) on the
    edge pixels (where the single-sample render ``imgs[1]`` is more than 8 levels off it)
    and on all pixels, with its ms per image where ``ms`` has it."""
    ref = imgs[4]
    edge = np.abs(imgs[1] - ref).max(-1) > 8
    print(f"\n{what}: {int(edge.sum())} edge pixels ({edge.mean():.1%})")
    print(f"{'anti-aliasing':<16}{'edge-pixel MAE':>16}{'all-pixel MAE':>15}" + (f"{'ms / image':>12}" if ms else ""))
    for aa in settings:
        e = np.abs(imgs[aa] - ref)
        print(f"{aa!s:<16}{e[edge].mean():>16.2f}{e.mean():>15.3f}" + (f"{ms[aa]:>12.2f}" if ms else ""))


def aa_quality_scene(size: int, appearance: str, n_ids: int = 24) -> None:
    """:func:`aa_quality` on `morphgen render`'s own images with ``--appearance``: hair
    shells, glasses and beards bring outlines of other mesh parts over the skin, and
    lines where a part passes into the skin (the hairline), which edge anti-aliasing does
    not smooth. The same params rendered at each setting; no photo effects."""
    import morphgen

    opts = {"size": size, "ids": n_ids, "appearance": appearance, "photo": "off", "backgrounds": "procedural"}
    scenes = {aa: morphgen.Scene(antialias=aa, **opts) for aa in (4, 1, "edges", 2)}
    params = [scenes[4].params(i, s) for i in range(n_ids) for s in range(2)]
    imgs = {aa: sc.render(params)["rgb"].astype(np.float64) for aa, sc in scenes.items()}
    _print_aa_errors(f"morphgen render --appearance {appearance}, {size} px, {len(params)} images", imgs, (1, "edges", 2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0, help="timed seconds per measurement")
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--procs", type=int, default=os.cpu_count() or 1, help="processes for the all-cores figure")
    ap.add_argument("--no-torch", action="store_true", help="skip the (slow on CPU) torch-path figure")
    ap.add_argument("--torch-device", default="cpu", help="device of the torch-path figure, e.g. cuda")
    ap.add_argument("--torch-batch", type=int, default=16, help="batch of the torch-path figure (GPU: 256-1024)")
    ap.add_argument("--only-torch", action="store_true", help="only the torch rows (for a GPU): rasterize only, "
                    "render with tensors kept on the device (aa 1 and 2), and the numpy-in/numpy-out path")
    ap.add_argument("--rasters", nargs="+", default=["auto"], choices=["auto", "torch", "triton", "numba"],
                    help="rasterizers of the --only-torch rows (auto: triton on CUDA where installed, else torch)")
    ap.add_argument("--aa-quality", action="store_true", help="instead of speed: each anti-aliasing setting's "
                    "error against 4x4 supersampling, on edge pixels and overall, and its time per image")
    ap.add_argument("--appearance", help="with --aa-quality: also measure morphgen render's images with this "
                    "--appearance (e.g. full: hair, glasses, beards)")
    a = ap.parse_args()

    meshes = ["synthetic"]
    if (Path(__file__).resolve().parents[1] / "assets" / "default_model.npz").exists():
        meshes.append("default")
    print(f"cores: {os.cpu_count()}  load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if a.aa_quality:
        if a.appearance:
            for size in a.sizes:
                aa_quality_scene(size, a.appearance)
        for mesh in meshes:
            for size in a.sizes:
                aa_quality(mesh, size, a.batch)
        return
    for mesh in meshes:
        verts, _, _, _, tris, _ = _scene(mesh, 1)
        print(f"\nmesh: {mesh} ({verts.shape[1]} vertices, {tris.shape[0]} triangles), batch {a.torch_batch if a.only_torch else a.batch}")
        print(f"{'':<40}{'1 process':>20}{f'{a.procs} processes':>20}")
        print(f"{'what (img/s)':<34}{'size':>6}{'wall':>10}{'cpu':>10}{'wall':>10}{'cpu':>10}")
        rows = []
        for size in a.sizes:
            rows += [("rasterize only (numba)", "raster", size, 1), ("full render, fused numba, aa 1", "full", size, 1),
                     ("full render, fused numba, edges", "full", size, "edges"),
                     ("full render, fused numba, aa 2", "full", size, 2)]  # fmt: skip
        if a.only_torch:
            dev = a.torch_device
            rows = [r for size in a.sizes for ras in a.rasters for r in (
                (f"rasterize only, {ras} ({dev})", "torch-raster", size, 1, ras),
                (f"render on {dev}, {ras}, aa 1", "torch-device", size, 1, ras),
                (f"render on {dev}, {ras}, edges", "torch-device", size, "edges", ras),
                (f"render on {dev}, {ras}, aa 2", "torch-device", size, 2, ras))]
            rows += [(f"full render, numpy in/out ({dev})", "torch", size, 1, "auto") for size in a.sizes]
        elif not a.no_torch:
            rows += [(f"full render, torch path ({a.torch_device})", "torch", size, 1, "auto")
                     for size in a.sizes[:1 if a.torch_device == "cpu" else None]]
        for label, what, size, aa, *ras in rows:
            on_torch = what.startswith("torch")
            args = (mesh, what, size, aa, a.batch if not on_torch else a.torch_batch, a.seconds, a.torch_device,
                    *ras)
            one = _run(*args)
            multi = run_parallel(args, a.procs) if not on_torch else (float("nan"), float("nan"))
            print(f"{label:<34}{size:>6}{one[0]:>10.0f}{one[1]:>10.0f}{multi[0]:>10.0f}{multi[1]:>10.0f}", flush=True)
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
