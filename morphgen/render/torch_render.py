"""The torch render path: batched, device-agnostic (CPU or CUDA) and differentiable.

The rasterizer only picks triangle ids; colours are interpolated by
:func:`.interpolate.interpolate`, so images are differentiable with respect to vertices,
albedo, SH light, colour transform and pose. Used for fitting (:mod:`.fit`), for GPU
dataset generation and for online training (:mod:`morphgen.torch_scene`). On CUDA with
triton installed, a call that needs no gradient rasterizes and resolves the colour image
with two Triton kernels (:mod:`.raster_triton`). Image formation and the extra outputs are
those of :mod:`.renderer`, whose numba path draws the same images.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..errors import ConfigError
from ..spherical_harmonics import irradiance_torch
from .camera import Camera, Pose, group_points, group_weights
from .edge_aa import edge_antialias_torch, triangle_labels
from .extras import landmark_visibility, reference_colors
from .raster_common import RasterOutput, maps_from_keys
from .rasterize import auto_backend, rasterize
from .raster_triton import triton_keys
from .shading import ColorTransform, vertex_normals_torch
from .specular import specular_torch

if TYPE_CHECKING:
    import torch


def render_torch(
    vertices: torch.Tensor,
    albedo: torch.Tensor,
    sh: torch.Tensor,
    pose: Pose,
    triangles,
    camera: Camera,
    *,
    antialias: int = 1,
    edge_aa: bool = False,
    cull_backfaces: bool = True,
    raster_backend: str = "auto",
    backgrounds: torch.Tensor | None = None,
    color_transform: ColorTransform | None = None,
    specular: torch.Tensor | None = None,
    outputs: Sequence[str] = ("rgb",),
    landmarks=None,
    reference_coords=None,
    region_labels=None,
    visibility_tolerance: float = 0.01,
    near: float = 10.0,
) -> dict[str, torch.Tensor]:
    """Differentiable batched render (torch tensors in, torch tensors out).

    vertices (B, N, 3), albedo (B, N, 3), sh (B, 9, 3) share dtype and device; pose is a
    :class:`Pose` of tensors (or numpy, converted). backgrounds: (B, H, W, 3) float in
    [0, 1] or None (black). specular: (B, N) or (N,) per-vertex weights of the white
    highlight of :mod:`.specular`, or None (none). Returns float images in [0, 1]
    (``rgb``, ...), plus ``face_id`` (the high-resolution triangle-id map) and the
    requested extras as in :func:`.renderer.render_batch`. Gradients reach vertices,
    albedo, sh, the specular weights, the colour transform and the pose through the
    interpolated colours; with ``edge_aa`` (:mod:`.edge_aa`,
    antialias 1) also through silhouettes and occlusion edges, whose pixels blend by a
    coverage that moves with the vertices. When none of them requires a gradient and the
    rasterizer is triton, ``rgb`` comes from the fused Triton resolve (and the edge
    pass's Triton search) instead (float32, same image within rounding).
    """
    import torch
    import torch.nn.functional as F

    from .interpolate import covered_barycentrics, interpolate

    dev, dt = vertices.device, vertices.dtype
    if vertices.dim() == 2:
        vertices = vertices[None]
    b, n = vertices.shape[:2]
    k = int(antialias)
    cam_hi = camera.scaled(k)
    h, w = camera.height, camera.width
    hh, ww = cam_hi.height, cam_hi.width
    tris = (triangles if isinstance(triangles, torch.Tensor) else torch.as_tensor(np.asarray(triangles))).to(dev, torch.long)
    if albedo.dim() == 2:
        albedo = albedo[None].expand(b, -1, -1)
    if sh.dim() == 2:
        sh = sh[None].expand(b, -1, -1)
    if edge_aa and k != 1:
        raise ConfigError(f"edge anti-aliasing replaces supersampling: use it with antialias 1, not {k}")
    p = pose.torch(dev, dt)
    if raster_backend == "auto":
        raster_backend = auto_backend(dev)
    rot = p.rotation().to(dt)
    s = p.scale.reshape(-1, 1, 1).to(dt)
    vc = s * torch.matmul(vertices, rot.transpose(1, 2)) + p.translation.to(dt)[:, None, :]
    n_model = vertex_normals_torch(vertices, tris)
    ncam = torch.matmul(n_model, rot.transpose(1, 2))
    irr = irradiance_torch(ncam, sh.to(dt))
    col = albedo.to(dt) * irr
    if specular is not None:
        col = col + specular_torch(ncam, specular.expand(b, -1), sh)[..., None]
    if color_transform is not None:
        col = color_transform.apply_torch(col)
    screen = cam_hi.project(vc)
    outputs = tuple(outputs)
    # no gradient wanted: Triton rasterizes and resolves the colour image in two launches
    fused = raster_backend == "triton" and "rgb" in outputs and not (col.requires_grad or screen.requires_grad)
    if fused:
        from .triton_kernels import resolve_rgb  # imports triton

        keys, scr32, tris32 = triton_keys(screen, tris, hh, ww, cull_backfaces, near)
        fid_map, depth_map = maps_from_keys(keys)
        rast = RasterOutput(fid_map, None, depth_map)
    else:
        rast = rasterize(screen.detach(), tris, hh, ww, backend=raster_backend, cull_backfaces=cull_backfaces,
                         near=near, with_bary=False)
    fid = rast.face_id

    def pool(x: torch.Tensor) -> torch.Tensor:  # (B, hh, ww, C) -> (B, h, w, C) block mean
        if k == 1:
            return x
        return F.avg_pool2d(x.permute(0, 3, 1, 2), k).permute(0, 2, 3, 1)

    res: dict[str, torch.Tensor] = {"face_id": fid}
    if not fused or set(outputs) - {"rgb", "landmarks2d"}:  # the coverage maps the other outputs need
        covered = (fid >= 0).to(dt)[..., None]  # (B, hh, ww, 1)
        alpha = pool(covered)
    if fused:
        bg = None if backgrounds is None else backgrounds.to(dev, torch.float32)
        res["rgb"] = resolve_rgb(keys, scr32, tris32, col.to(torch.float32).contiguous(), bg, k).to(dt)
    elif "rgb" in outputs:
        img = interpolate(col, fid, screen, tris).clamp(0.0, 1.0) * covered
        face = pool(img)
        bg = torch.zeros(b, h, w, 3, dtype=dt, device=dev) if backgrounds is None else backgrounds.to(dev, dt)
        res["rgb"] = face + (1.0 - alpha) * bg
    if edge_aa and "rgb" in outputs:
        eye = -torch.matmul(rot.transpose(1, 2), p.translation.to(dt)[:, :, None])[..., 0] / s.reshape(-1, 1)
        labels = triangle_labels(vertices, tris, eye, cull_backfaces)
        res["rgb"] = edge_antialias_torch(res["rgb"], fid, rast.depth, screen, labels, tris, camera.focal_px,
                                          use_triton=fused)

    def coverage_mean(attr: torch.Tensor) -> torch.Tensor:
        val = pool(interpolate(attr, fid, screen, tris) * covered)
        return torch.where(alpha > 0, val / alpha.clamp_min(1e-12), torch.zeros_like(val))

    if "depth" in outputs:
        res["depth"] = coverage_mean(vc[..., 2:3].neg())[..., 0]
    if "normals" in outputs:
        nrm = coverage_mean(ncam)
        res["normals"] = nrm / nrm.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    if "albedo" in outputs:
        res["albedo"] = coverage_mean(albedo.to(dt))
    if "illumination" in outputs:
        res["illumination"] = coverage_mean(irr)
    if "correspondence" in outputs:
        ref = torch.as_tensor(reference_colors(reference_coords), device=dev, dtype=dt)
        res["correspondence"] = coverage_mean(ref[None].expand(b, -1, -1))
    if "mask" in outputs:
        res["mask"] = alpha[..., 0] >= 0.5
    if "regions" in outputs:
        labels = torch.as_tensor(np.asarray(region_labels).reshape(-1), device=dev, dtype=torch.long)
        if labels.shape[0] != n:
            raise ConfigError(f"region_labels has {labels.shape[0]} entries for {n} vertices")
        o = k // 2
        f_c = fid[:, o::k, o::k].contiguous()
        sub = screen.detach().clone()
        # map the centre of sub-sample (o, o) of each block onto the centre of its pixel
        sub[..., :2] = (sub[..., :2] - o - 0.5) / k + 0.5
        pix, bi, vid, bary = covered_barycentrics(f_c, sub, tris)
        lab = torch.full((b * h * w,), -1, dtype=torch.long, device=dev)
        lab[pix] = labels[vid.gather(1, bary.argmax(1, keepdim=True)).squeeze(1)]
        res["regions"] = lab.reshape(b, h, w).to(torch.int32)
    if "landmarks2d" in outputs:
        if landmarks is None:
            raise ConfigError("output 'landmarks2d' needs landmark vertex groups")
        pts = group_points(vertices, landmarks)
        pts_cam = s * torch.matmul(pts, rot.transpose(1, 2)) + p.translation.to(dt)[:, None, :]
        scr = cam_hi.project(pts_cam)
        res["landmarks2d"] = scr[..., :2] / k
        with torch.no_grad():
            idx, wt = group_weights(landmarks)
            it = torch.as_tensor(idx, device=dev)
            wtt = torch.as_tensor(wt, device=dev, dtype=dt)
            nrm = (ncam[:, it] * wtt[None, :, :, None]).sum(2)
            res["visibility"] = landmark_visibility(scr, nrm, pts_cam, rast.depth, visibility_tolerance, torch)
    return res
