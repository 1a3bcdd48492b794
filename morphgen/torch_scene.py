"""Scenes rendered in batches on a torch device and kept there: the online trainer's renderer.

`SceneRenderer.plan` (numpy, cheap, run in loader workers) fixes everything about a batch
but the pixels; `TorchScene(renderer.assets, device).render(plan)` turns it into images
and MTCNN-convention five points without a round trip to the host: the truncated bases live on the device, the
mesh is decoded with two matmuls, rendered by the batched torch path, and composited over
backgrounds from a pool drawn once from the scene's background source (so a folder of
textures is read once, and procedural patterns cost nothing per image). The landmark
calibration's pose-dependent offsets come with the plan, so no value is read back.

On a GPU this is what makes online synthesis cheaper than the network it feeds; on the
CPU the numba path of `SceneRenderer` is faster, and tests use this class on the CPU only
to check it against that path.
"""
from __future__ import annotations

import numpy as np
import torch

from .calibration import shift_points
from .render.torch_render import render_torch
from .render_plan import RenderPlan, SceneAssets
from .sampling import rng_for

_STREAM_POOL = 61


class TorchScene:
    """Device-resident decode + render of RenderPlans.

    A plan made without backgrounds takes them from a pool: pool_size backgrounds drawn
    once (image j from ``rng_for(pool_seed, stream, j)``), image i of the plan taking entry
    ``background_seed[i] % pool_size``, a pure function of the plan, so batches are
    reproducible. pool_size 0: plans must carry their backgrounds (the dataset writer's)."""

    def __init__(self, assets: SceneAssets, device: str | torch.device, pool_size: int = 2048,
                 pool_seed: int = 0):
        self.assets = assets
        self.device = dev = torch.device(device)
        d = assets.decoder

        def t(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a, np.float32)).to(dev)

        self.shape_mean, self.shape_basis_t = t(d.shape_mean), t(d.shape_basis.T)
        self.color_mean, self.color_basis_t = t(d.color_mean), t(d.color_basis.T)
        self.expr_mean = t(d.expr_mean) if d.expr_basis is not None else None
        self.expr_basis_t = t(d.expr_basis.T) if d.expr_basis is not None else None
        self.n_vertices = d.n_vertices
        self.triangles = torch.as_tensor(np.asarray(assets.triangles), dtype=torch.long, device=dev)
        size = assets.size
        pool = [assets.backgrounds.sample(rng_for(pool_seed, _STREAM_POOL, j), size, size) for j in range(pool_size)]
        self.pool = torch.from_numpy(np.stack(pool)).to(dev) if pool else None  # uint8 (P, S, S, 3)

    def decode(self, plan: RenderPlan) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, 3) vertices and albedo on the device (float32), as ``Decoder`` computes them."""
        dev, b = self.device, len(plan)
        shape = torch.from_numpy(plan.shape).to(dev, non_blocking=True)
        flat = self.shape_mean + shape @ self.shape_basis_t
        if self.expr_basis_t is not None:
            flat = flat + self.expr_mean
            if plan.expression.shape[1]:
                flat = flat + torch.from_numpy(plan.expression).to(dev, non_blocking=True) @ self.expr_basis_t
        color = torch.from_numpy(plan.color).to(dev, non_blocking=True)
        albedo = (self.color_mean + color @ self.color_basis_t).clamp(0.0, 1.0)
        return flat.reshape(b, self.n_vertices, 3), albedo.reshape(b, self.n_vertices, 3)

    @torch.no_grad()
    def render(self, plan: RenderPlan, outputs: tuple[str, ...] = (), all_landmarks: bool = False
               ) -> dict[str, torch.Tensor]:
        """On the device: ``rgb`` (B, S, S, 3) float in [0, 1], ``landmarks5`` (B, 5, 2) (MTCNN's
        convention when the model is calibrated), ``landmarks2d`` / ``visibility`` of the five
        points followed, with all_landmarks, by the model's named landmarks, and the extra
        `outputs` as render_torch returns them."""
        a, dev = self.assets, self.device
        vertices, albedo = self.decode(plan)
        specular = None
        if a.appearance is not None:
            look = {k: torch.from_numpy(x).to(dev, non_blocking=True) for k, x in plan.appearance.items()}
            vertices, albedo = a.appearance.apply(vertices, albedo, look, torch)
            specular = a.appearance.specular(plan.appearance, torch, vertices)
        if plan.backgrounds is not None:
            backgrounds = torch.from_numpy(plan.backgrounds).to(dev)
        elif self.pool is not None:
            backgrounds = self.pool[torch.from_numpy(plan.background_seed % len(self.pool)).to(dev)]
        else:
            raise ValueError("this TorchScene has no background pool: make plans with their backgrounds")
        out = render_torch(vertices, albedo, torch.from_numpy(plan.sh).to(dev), plan.pose(), self.triangles,
                           a.camera, antialias=a.antialias, edge_aa=a.edge_aa, backgrounds=backgrounds.float().div_(255.0),
                           specular=specular, outputs=("rgb", "landmarks2d", *outputs),
                           landmarks=a.five_point + (a.landmark_groups if all_landmarks else []),
                           reference_coords=a.reference_coords, region_labels=a.region_labels)
        if plan.photo:
            from .render.photo import apply_photo_torch
            out["rgb"] = apply_photo_torch(out["rgb"].permute(0, 3, 1, 2), plan.photo).permute(0, 2, 3, 1)
        lm5 = out["landmarks2d"][:, :5]
        if a.calibration is not None:
            off = torch.from_numpy(a.calibration.offsets(plan.yaw).astype(np.float32)).to(dev)
            lm5 = shift_points(lm5, off)
        out["landmarks5"] = lm5
        return out
