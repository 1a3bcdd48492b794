"""The outputs a render can return beside the colour image, and what the numba and torch
paths share to make them alike: the names, the correspondence colours and the one
landmark visibility test (written once for numpy and torch, ``xp`` being either module)."""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError

OUTPUTS = ("rgb", "depth", "normals", "albedo", "illumination", "mask", "correspondence", "regions", "landmarks2d")


def reference_colors(reference_coords) -> np.ndarray:
    """Per-vertex reference coordinates (N, 3) mapped to [0, 1] RGB by their bounding box:
    the colours the "correspondence" output interpolates."""
    ref = np.asarray(reference_coords, dtype=np.float64)
    if ref.ndim != 2 or ref.shape[1] != 3:
        raise ConfigError(f"correspondence reference coordinates must be (N, 3); got {ref.shape}")
    lo, hi = ref.min(0), ref.max(0)
    return ((ref - lo) / np.maximum(hi - lo, 1e-12)).astype(np.float32)


def landmark_visibility(screen, normals, points_cam, zbuf, tolerance: float, xp):
    """(B, L) bool: which landmarks are seen, numpy or torch (``xp``) alike.

    screen: (B, L, 3) projected landmarks (pixel x, y and depth at the raster's
    resolution); normals and points_cam: (B, L, 3) their camera-space normals and
    positions; zbuf: (B, H, W) the raster's depth (+inf where nothing was drawn). A
    landmark is visible when it projects inside the image and the z-buffer at its pixel
    is not in front of it by more than ``tolerance`` times its depth. A drawn surface
    within the tolerance is the landmark's own: visible whatever its normal (creases such
    as mouth corners have sideways normals); where nothing was drawn (culled back faces,
    the silhouette) the landmark must face the camera.
    """
    b, hh, ww = zbuf.shape
    inside, py, px = landmark_pixels(screen, hh, ww, xp)
    rows = xp.arange(b)[:, None] if xp is np else xp.arange(b, device=zbuf.device)[:, None]
    return visible_at_depth(screen, normals, points_cam, inside, zbuf[rows, py, px], tolerance, xp)


def landmark_pixels(screen, hh: int, ww: int, xp):
    """(inside, row, column) of each projected landmark (B, L, 3) in an (hh, ww) raster:
    whether it lies in the image in front of the camera, and its pixel (0 where not)."""
    x, y, d = screen[..., 0], screen[..., 1], screen[..., 2]
    inside = (x >= 0) & (x < ww) & (y >= 0) & (y < hh) & (d > 0)
    return inside, _pixel_index(y, inside, hh, xp), _pixel_index(x, inside, ww, xp)


def visible_at_depth(screen, normals, points_cam, inside, zb, tolerance: float, xp):
    """The test of :func:`landmark_visibility` given the z-buffer's depth ``zb`` (B, L) at
    each landmark's pixel (the numba renderer reads those few values while it renders and
    keeps no z-buffer per image)."""
    d = screen[..., 2]
    zb = zb.astype(screen.dtype) if xp is np else zb.to(screen.dtype)
    # numpy's einsum adds the three products in another order than a sum over the last
    # axis; each path keeps the order it always had, so its output stays bit for bit
    dot = np.einsum("bld,bld->bl", normals, -points_cam) if xp is np else (normals * -points_cam).sum(-1)
    facing = dot > 0
    drawn = xp.isfinite(zb)
    return inside & xp.where(drawn, d - zb <= tolerance * d, facing)


def _pixel_index(v, inside, size: int, xp):
    """Index of the pixel row or column holding coordinate ``v`` (0 where not inside)."""
    i = xp.floor(xp.where(inside, v, xp.zeros_like(v)))
    return xp.clip(i.astype(np.int64) if xp is np else i.long(), 0, size - 1)
