"""Differentiable attribute interpolation (the nvdiffrast split).

The rasterizer only decides *which* triangle covers a pixel. Here the barycentric
coordinates of each pixel centre are recomputed in torch from that triangle's screen
positions, so the interpolated image is a differentiable function of the vertex
positions (hence of shape and pose) and of the attributes (albedo, light). What this
does not give is the gradient of a pixel switching from background to face at a
silhouette: losses that need it must use a soft silhouette; the fitting in :mod:`.fit`
works on covered pixels only.
"""
from __future__ import annotations

import numpy as np
import torch


def _as_long(triangles, device) -> torch.Tensor:
    if isinstance(triangles, torch.Tensor):
        return triangles.to(device=device, dtype=torch.long)
    return torch.as_tensor(np.asarray(triangles), device=device, dtype=torch.long)


def _as_face_id(face_id, device) -> torch.Tensor:
    if isinstance(face_id, torch.Tensor):
        return face_id.to(device)
    return torch.as_tensor(np.asarray(face_id), device=device)


def covered_barycentrics(face_id, screen_vertices: torch.Tensor, triangles):
    """Barycentrics of the covered pixels only.

    Returns (flat pixel index (P,), batch index (P,), triangle vertex ids (P, 3),
    barycentrics (P, 3)). Perspective-correct when ``screen_vertices`` has a depth
    column, screen-linear when it is (B, N, 2).
    """
    dev = screen_vertices.device
    fid = _as_face_id(face_id, dev)
    tris = _as_long(triangles, dev)
    b, h, w = fid.shape
    flat = fid.reshape(-1)
    pix = (flat >= 0).nonzero().squeeze(1)
    f = flat[pix].long()
    bi = torch.div(pix, h * w, rounding_mode="floor")
    rem = pix - bi * (h * w)
    py = torch.div(rem, w, rounding_mode="floor")
    px = rem - py * w
    vid = tris[f]  # (P, 3)
    v = screen_vertices[bi[:, None], vid]  # (P, 3, C)
    dt = screen_vertices.dtype
    cx = px.to(dt) + 0.5
    cy = py.to(dt) + 0.5
    x0, y0 = v[:, 0, 0], v[:, 0, 1]
    x1, y1 = v[:, 1, 0], v[:, 1, 1]
    x2, y2 = v[:, 2, 0], v[:, 2, 1]
    e0 = (x2 - x1) * (cy - y1) - (y2 - y1) * (cx - x1)
    e1 = (x0 - x2) * (cy - y2) - (y0 - y2) * (cx - x2)
    e2 = (x1 - x0) * (cy - y0) - (y1 - y0) * (cx - x0)
    e = torch.stack((e0, e1, e2), -1)
    if screen_vertices.shape[-1] >= 3:
        e = e / v[:, :, 2]  # perspective correction: weight by 1/depth
    s = e.sum(-1, keepdim=True)
    s = torch.where(s == 0, torch.ones_like(s), s)
    return pix, bi, vid, e / s


def barycentrics(face_id, screen_vertices: torch.Tensor, triangles) -> torch.Tensor:
    """(B, H, W, 3) barycentrics recomputed from ``face_id`` (zero on background)."""
    fid = _as_face_id(face_id, screen_vertices.device)
    b, h, w = fid.shape
    pix, _, _, bary = covered_barycentrics(fid, screen_vertices, triangles)
    out = torch.zeros(b * h * w, 3, dtype=bary.dtype, device=bary.device)
    out = out.index_copy(0, pix, bary)
    return out.reshape(b, h, w, 3)


def interpolate(attr: torch.Tensor, face_id, screen_vertices: torch.Tensor, triangles) -> torch.Tensor:
    """Interpolate per-vertex attributes (B, N, C) to pixels: (B, H, W, C), zero on background.

    face_id: (B, H, W) from :func:`.rasterize.rasterize` (numpy or torch); screen_vertices:
    (B, N, 2) or (B, N, 3) pixel x, y (and depth, for perspective-correct weights).
    Gradients flow to ``attr`` and ``screen_vertices``.
    """
    fid = _as_face_id(face_id, screen_vertices.device)
    b, h, w = fid.shape
    pix, bi, vid, bary = covered_barycentrics(fid, screen_vertices, triangles)
    if attr.dim() == 2:
        attr = attr.unsqueeze(0).expand(b, -1, -1)
    vals = (attr[bi[:, None], vid] * bary.to(attr.dtype)[..., None]).sum(1)  # (P, C)
    out = torch.zeros(b * h * w, attr.shape[-1], dtype=vals.dtype, device=vals.device)
    out = out.index_copy(0, pix, vals)
    return out.reshape(b, h, w, attr.shape[-1])
