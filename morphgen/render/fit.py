"""Recover SH light and head pose of a rendered image by gradient descent (analysis by
synthesis) through the differentiable torch renderer.

Shape and albedo are given; the light (9 x 3 SH) and the pose (yaw, pitch, roll,
translation) are optimised with Adam on the squared colour difference. The render is
composited over the target itself, so pixels the face does not cover cost nothing and
the loss stays defined when the silhouette moves; the loss is summed over a small image
pyramid (full, 1/2, 1/4 resolution) to widen the basin of attraction for the pose.
Silhouette changes have no gradient (see :mod:`.interpolate`): pose is recovered from
the shading and albedo texture inside the face, which is why the albedo should not be
uniform.

Used to check the renderer end to end (tests/test_render_gradients.py), and as a small
tool to estimate the light of a rendered or well-registered image.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .camera import Camera, Pose
from .torch_render import render_torch


@dataclass
class FitResult:
    pose: Pose  # numpy, batch of one
    sh: np.ndarray  # (9, 3)
    loss: float
    history: list[float] = field(default_factory=list)


def _pyramid_loss(a: torch.Tensor, b: torch.Tensor, levels: int = 3) -> torch.Tensor:
    x, y = a.permute(0, 3, 1, 2), b.permute(0, 3, 1, 2)
    loss = ((x - y) ** 2).mean()
    for _ in range(levels - 1):
        x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
        loss = loss + ((x - y) ** 2).mean()
    return loss


def fit_light_and_pose(
    target_rgb,
    vertices,
    albedo,
    triangles,
    init_pose: Pose,
    camera: Camera,
    *,
    init_sh=None,
    steps: int = 200,
    lr_angle: float = 1.0,
    lr_translation: float = 2.0,
    lr_sh: float = 0.03,
    fit_pose: bool = True,
    fit_sh: bool = True,
    antialias: int = 1,
    cull_backfaces: bool = True,
    raster_backend: str = "auto",
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> FitResult:
    """Fit SH light and pose to one target image.

    target_rgb: (H, W, 3) uint8 or float in [0, 1], H and W matching ``camera``.
    vertices, albedo: (N, 3) model-space mm and [0, 1]. init_pose: a :class:`Pose` of
    batch 1 (its scale is kept fixed). init_sh: (9, 3); default a mild ambient light
    estimated from the target's mean colour. Learning rates are per Adam step in
    degrees, mm and SH units; they decay with a cosine schedule to 5 % at the end.
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")
    tgt = np.asarray(target_rgb)
    if tgt.shape != (camera.height, camera.width, 3):
        raise ConfigError(f"target image has shape {tgt.shape}; expected ({camera.height}, {camera.width}, 3) for this camera")
    tgt_f = tgt.astype(np.float64) / 255.0 if tgt.dtype == np.uint8 else tgt.astype(np.float64)
    target = torch.as_tensor(tgt_f, dtype=dtype, device=dev)[None]
    verts = torch.as_tensor(np.asarray(vertices), dtype=dtype, device=dev)[None]
    alb = torch.as_tensor(np.asarray(albedo), dtype=dtype, device=dev)[None]
    tris = torch.as_tensor(np.asarray(triangles), dtype=torch.long, device=dev)
    p0 = init_pose.numpy()
    if p0.batch != 1:
        raise ConfigError(f"fit_light_and_pose fits one image; init_pose has a batch of {p0.batch}")
    if init_sh is None:
        # irradiance of an ambient light L0 is N0 * pi * L0 = L0 * sqrt(pi) / 2
        sh0 = np.zeros((9, 3))
        sh0[0] = np.clip(tgt_f.reshape(-1, 3).mean(0) / max(float(np.asarray(albedo).mean()), 1e-3), 0.1, 3.0) / (np.sqrt(np.pi) / 2)
    else:
        sh0 = np.asarray(init_sh, dtype=np.float64)
    angles = torch.tensor([[p0.yaw[0], p0.pitch[0], p0.roll[0]]], dtype=dtype, device=dev, requires_grad=fit_pose)
    trans = torch.tensor(np.asarray(p0.translation, dtype=np.float64).reshape(1, 3), dtype=dtype, device=dev, requires_grad=fit_pose)
    sh = torch.tensor(sh0[None], dtype=dtype, device=dev, requires_grad=fit_sh)
    scale = torch.tensor(np.asarray(p0.scale, dtype=np.float64).reshape(1), dtype=dtype, device=dev)
    groups = []
    if fit_pose:
        groups += [{"params": [angles], "lr": lr_angle}, {"params": [trans], "lr": lr_translation}]
    if fit_sh:
        groups += [{"params": [sh], "lr": lr_sh}]
    if not groups:
        raise ConfigError("nothing to fit: enable fit_pose or fit_sh")
    opt = torch.optim.Adam(groups, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * min(i, steps) / steps)))
    history: list[float] = []
    best = (float("inf"), None)
    for _ in range(steps):
        opt.zero_grad()
        pose = Pose(angles[:, 0], angles[:, 1], angles[:, 2], trans, scale)
        out = render_torch(
            verts, alb, sh, pose, tris, camera, antialias=antialias, cull_backfaces=cull_backfaces,
            raster_backend=raster_backend, backgrounds=target,
        )  # fmt: skip
        loss = _pyramid_loss(out["rgb"], target)
        loss.backward()
        history.append(float(loss.detach()))
        if history[-1] < best[0]:
            best = (history[-1], (angles.detach().clone(), trans.detach().clone(), sh.detach().clone()))
        opt.step()
        sched.step()
    a, t, s = best[1]
    a = a.double().cpu().numpy()
    fitted = Pose.create(1, yaw=a[0, 0], pitch=a[0, 1], roll=a[0, 2], translation=t.double().cpu().numpy(), scale=p0.scale)
    return FitResult(fitted, s[0].double().cpu().numpy(), best[0], history)
