"""The PyTorch3D rasterizer, where that package is importable (optional): a cross-check
of the other backends, converted to their conventions (:mod:`.rasterize`).
"""
from __future__ import annotations

import torch

from ..errors import ConfigError
from .raster_common import RasterOutput


def pytorch3d_available() -> tuple[bool, str]:
    """(True, "") when pytorch3d's rasterizer can be imported, else (False, why)."""
    try:
        from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes  # noqa: F401
        from pytorch3d.structures import Meshes  # noqa: F401
    except Exception as exc:  # ImportError, or a broken build raising something else
        return False, f"pytorch3d is not importable ({exc.__class__.__name__}: {exc})"
    return True, ""


def rasterize_pytorch3d(screen: torch.Tensor, triangles: torch.Tensor, h: int, w: int, cull: bool, near: float):
    ok, why = pytorch3d_available()
    if not ok:
        raise ConfigError(f"rasterizer backend 'pytorch3d' is unavailable: {why}; install pytorch3d or use 'numba'/'torch'")
    from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes
    from pytorch3d.structures import Meshes

    dev = screen.device
    screen = screen.detach().float()
    tris = triangles.to(device=dev, dtype=torch.long)
    b = screen.shape[0]
    s = float(min(h, w))
    # PyTorch3D NDC: +x left, +y up, the shorter side spans [-1, 1], pixel (0, 0) top-left
    ndc = torch.stack(((w - 2.0 * screen[..., 0]) / s, (h - 2.0 * screen[..., 1]) / s, screen[..., 2]), -1)
    faces, ids = [], []
    for i in range(b):
        v = screen[i, tris]
        area = (v[:, 1, 0] - v[:, 0, 0]) * (v[:, 2, 1] - v[:, 0, 1]) - (v[:, 1, 1] - v[:, 0, 1]) * (v[:, 2, 0] - v[:, 0, 0])
        keep = (v[..., 2] > near).all(-1) & (area != 0)
        if cull:
            keep &= area < 0
        idx = keep.nonzero().squeeze(1)
        faces.append(tris[idx])
        ids.append(idx)
    meshes = Meshes(verts=list(ndc), faces=faces)
    p2f, zbuf, bary, _ = rasterize_meshes(
        meshes, image_size=(h, w), blur_radius=0.0, faces_per_pixel=1, perspective_correct=True, cull_backfaces=False
    )
    p2f = p2f[..., 0]
    first = meshes.mesh_to_faces_packed_first_idx()
    fid = torch.full((b, h, w), -1, dtype=torch.int32, device=dev)
    for i in range(b):
        m = p2f[i] >= 0
        fid[i][m] = ids[i][p2f[i][m] - first[i]].to(torch.int32)
    bg = fid < 0
    depth = torch.where(bg, torch.full_like(zbuf[..., 0], float("inf")), zbuf[..., 0])
    bary = torch.where(bg[..., None], torch.zeros_like(bary[..., 0, :]), bary[..., 0, :])
    return RasterOutput(fid, bary.float(), depth.float())
