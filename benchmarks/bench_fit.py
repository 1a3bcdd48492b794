"""How well and how fast `morphgen fit` recovers known parameters: renders faces from the
model's prior (the fitter's component counts, so every parameter is reachable), fits each
from its pixels and its five points (MTCNN's convention, as the dataset records them; with
``--with-68`` also the 68 iBUG points projected from the true mesh, a perfect detector),
and prints per image and in summary: the largest angle error (degrees), the light's shading
error (RMS relative to the true shading, as fitted and after the best per-channel gain),
the mean vertex error over the face region (mm; the mean face's for scale), the landmark
residual and the seconds per image (one torch thread).

    python benchmarks/bench_fit.py --n 20 --size 128 --with-68
    python benchmarks/bench_fit.py --n 20 --yaw 60 --device cuda
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.append(str(Path(__file__).resolve().parents[1]))  # an installed morphgen wins


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=12, help="renders to fit")
    ap.add_argument("--size", type=int, default=128, help="render and fit size (pixels)")
    ap.add_argument("--yaw", type=float, default=35.0, help="yaw drawn uniformly in +-this (degrees)")
    ap.add_argument("--pitch", type=float, default=10.0, help="pitch drawn uniformly in +-this")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--with-68", action="store_true", help="also give the 68 iBUG points of the true mesh")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--fine-steps", type=int, default=None, help="steps of the full-size stage (default: FitOptions')")
    args = ap.parse_args()

    import torch

    from morphgen.face_fit import FaceFitter, FitOptions, render_known
    from morphgen.sampling import SamplingConfig, pose_config
    from morphgen.scene import SceneConfig, SceneRenderer

    torch.set_num_threads(1)
    opts = FitOptions(size=args.size)
    if args.fine_steps is not None:
        opts = FitOptions(size=args.size, fine_steps=args.fine_steps)
    pose = pose_config({"yaw": f"uniform({-args.yaw}, {args.yaw})", "pitch": f"uniform({-args.pitch}, {args.pitch})",
                        "roll": "uniform(-8, 8)"})
    sampling = SamplingConfig(seed=args.seed, n_identities=args.n, shape_components=opts.shape_components,
                              color_components=opts.color_components,
                              expression_components=opts.expression_components, pose=pose)
    renderer = SceneRenderer(SceneConfig(sampling=sampling, size=args.size, antialias=1))
    fitter = FaceFitter(renderer.model, opts, device=args.device)
    rows = []
    print("image  yaw    pitch  pose_err  light  light/gain  vertex_mm (mean face)  landmarks_px  s")
    for i in range(args.n):
        p = renderer.sampler.image_params(i, 0)
        rgb, lm5, true_pose = render_known(renderer, p)
        lm68 = fitter.landmarks68(p.shape, p.expression, true_pose) if args.with_68 else None
        t0 = time.perf_counter()
        fit = fitter.fit(rgb, lm5, lm68)
        dt = time.perf_counter() - t0
        e = fitter.compare(fit, p.shape, p.expression, p.sh, true_pose)
        rows.append([e["pose_deg"], e["light_rms"], e["light_rms_gain_free"], e["vertex_mm"], e["vertex_mm_mean_face"],
                     fit.landmark_residual_px, dt])
        print(f"{i:5d}  {p.yaw:5.1f}  {p.pitch:5.1f}  {e['pose_deg']:8.2f}  {e['light_rms']:5.3f}  "
              f"{e['light_rms_gain_free']:10.3f}  {e['vertex_mm']:5.2f} ({e['vertex_mm_mean_face']:.2f})"
              f"{fit.landmark_residual_px:15.2f}  {dt:4.1f}")
    a = np.asarray(rows)
    print(f"median / max: pose {np.median(a[:, 0]):.2f} / {a[:, 0].max():.2f} deg; light {np.median(a[:, 1]):.3f} / "
          f"{a[:, 1].max():.3f} (gain-free {np.median(a[:, 2]):.3f} / {a[:, 2].max():.3f}); vertex "
          f"{np.median(a[:, 3]):.2f} / {a[:, 3].max():.2f} mm (mean face {np.median(a[:, 4]):.2f}); landmarks "
          f"{np.median(a[:, 5]):.2f} px; {a[:, 6].sum() / len(a):.2f} s per image ({len(a) / a[:, 6].sum():.2f} img/s)")


if __name__ == "__main__":
    main()
