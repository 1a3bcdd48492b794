"""Level of detail (`--lod`, morphgen.lod): how close and how fast, on a dense real face.

    python benchmarks/bench_lod.py --make-model /dev/shm/face101k.npz     # the embedded face, subdivided twice
    python benchmarks/bench_lod.py --model /dev/shm/face101k.npz --size 128
    python benchmarks/bench_lod.py --model /dev/shm/face12.h5 --size 128   # bench_reference_loop.py --make-model
    python benchmarks/bench_lod.py --model /dev/shm/face12.h5 --lod auto 1.4px 1.6px 2px   # coarser levels

Why: a Basel mesh is denser than the pixels of a small render, and `--lod auto` renders it
on a subset of its vertices. Its cost is a change of pixels, so this prints, for the whole
mesh and for the decimated one (each at `--antialias edges` and 1), the mean absolute
difference in grey levels to a 4x4-supersampled render of the whole mesh (the truth the
anti-aliasing approximates) and the share of pixels off by more than 8, with the render
time per image (decode and render, one process; the dataset writer's rate is
bench_reference_loop.py's). The same 200 images each time (40 identities x 5, plain
backgrounds). `--lod` names the levels to compare with the whole mesh (`auto` unless
given; `1.6px` and the like are coarser: the trade of speed for pixels a dataset makes).

--make-model writes a real face at Basel density: the embedded model with every triangle
split in four, `--subdivide` times (twice: 101,523 vertices, 202,208 triangles), each new
vertex the mean of its edge's two rows of every basis; the bases are made orthonormal
again by an SVD of (subdivided basis x standard deviations), which keeps the model's
distribution of faces exactly (coefficients are rotated, so identity i is another face
than in the embedded model).
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np

from morphgen.loading import load_model
from morphgen.model import PCAModel
from morphgen.sampling import SamplingConfig
from morphgen.scene import SceneConfig, SceneRenderer


def _split(p: PCAModel | None, n: int, a: np.ndarray, b: np.ndarray) -> PCAModel | None:
    """A PCA model on n vertices plus the midpoints of edges (a, b), orthonormal again."""
    if p is None:
        return None
    mean = p.mean.reshape(n, 3).astype(np.float64)
    scaled = p.basis.reshape(n, 3, -1).astype(np.float64) * np.sqrt(p.variance)
    mean2 = np.concatenate([mean, (mean[a] + mean[b]) / 2]).reshape(-1)
    c = np.concatenate([scaled, (scaled[a] + scaled[b]) / 2]).reshape(-1, scaled.shape[-1])
    u, s, _ = np.linalg.svd(c, full_matrices=False)
    return PCAModel(mean2.astype(np.float32), u.astype(np.float32), (s ** 2).astype(np.float32), p.noise_variance)


def subdivide(model, levels: int):
    """The model with each triangle split in four, `levels` times (see the module text)."""
    for _ in range(levels):
        t, n = np.asarray(model.triangles, np.int64), model.n_vertices
        e = np.sort(np.concatenate([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]]), 1)
        uniq, inv = np.unique(e[:, 0] * n + e[:, 1], return_inverse=True)
        a, b = uniq // n, uniq % n
        m01, m12, m20 = (n + inv.reshape(3, -1)).astype(np.int64)   # the new vertices of edges 01, 12, 20
        tris = np.concatenate([np.stack(x, 1) for x in ((t[:, 0], m01, m20), (m01, t[:, 1], m12), (m20, m12, t[:, 2]),
                                                         (m01, m12, m20))])
        regions = {k: np.concatenate([np.asarray(v), np.asarray(v)[a] & np.asarray(v)[b]]) for k, v in model.regions.items()}
        model = replace(model, shape=_split(model.shape, n, a, b), color=_split(model.color, n, a, b),
                        expression=_split(model.expression, n, a, b), triangles=tris.astype(np.int32), regions=regions)
    return model


def images(model: str | None, size: int, lod: str, antialias) -> tuple[int, np.ndarray, float]:
    r = SceneRenderer(SceneConfig(sampling=SamplingConfig(n_identities=40), model=model, size=size, lod=lod,
                                  antialias=antialias, backgrounds="plain"))
    params = [r.sampler.image_params(i, s) for i in range(40) for s in range(5)]
    r.render(params[:8])  # warm: numba cache loads, first-use tables
    t0 = time.perf_counter()
    out = np.stack([x.rgb for x in r.render(params)]).astype(np.float64)
    return r.model.n_vertices, out, (time.perf_counter() - t0) / len(params) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--make-model", default=None, help="write the subdivided embedded model here (.npz) and stop")
    ap.add_argument("--subdivide", type=int, default=2, help="with --make-model: times each triangle is split in four")
    ap.add_argument("--model", default=None, help="model file (default: embedded)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--lod", nargs="+", default=["auto"], help="levels to compare with the whole mesh (auto, 1.6px, "
                                                                 "a vertex count)")
    ap.add_argument("--sheet", default=None, help="also write a picture here: whole mesh | the first --lod | 4x "
                                                  "|difference|, six faces (edges)")
    args = ap.parse_args()
    if args.make_model:
        m = subdivide(load_model(None), args.subdivide)
        m.save_npz(args.make_model, dtype=np.float32)
        print(f"wrote {args.make_model}: {m.n_vertices:,} vertices, {m.n_triangles:,} triangles")
        return
    _, truth, _ = images(args.model, args.size, "off", 4)
    edges = {}
    for lod in ("off", *args.lod):
        for aa in ("edges", 1):
            n, x, ms = images(args.model, args.size, lod, aa)
            if aa == "edges":
                edges[lod] = x
            d = np.abs(x - truth)
            print(f"--lod {lod:>5} ({n:>7,} vertices) --antialias {aa!s:>5}: mean |diff| to 4x4 supersampling "
                  f"{d.mean():.3f} grey levels, {(d.max(-1) > 8).mean() * 100:5.2f} % of pixels off by > 8; "
                  f"{ms:.2f} ms an image")
    if args.sheet:
        import cv2

        lod = args.lod[0]
        rows = [np.concatenate([edges["off"][i], edges[lod][i], np.abs(edges["off"][i] - edges[lod][i]) * 4], 1)
                for i in range(0, 30, 5)]
        cv2.imwrite(args.sheet, np.clip(np.concatenate(rows, 0), 0, 255).astype(np.uint8)[..., ::-1],
                    [cv2.IMWRITE_JPEG_QUALITY, 90])
        print(f"wrote {args.sheet}")


if __name__ == "__main__":
    main()
