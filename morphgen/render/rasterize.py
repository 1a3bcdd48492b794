"""Triangle rasterization: which triangle covers each pixel, and where in it.

``rasterize(screen_vertices, triangles, height, width, backend=...)`` returns a
:class:`RasterOutput` with, per pixel, the id of the nearest covering triangle (-1 for
background), its perspective-correct barycentric coordinates and its view-space depth.
It is *not* differentiable: gradients come from :mod:`.interpolate`, which recomputes
barycentrics in torch from the face ids (the nvdiffrast split).

Conventions shared by all backends (so that they agree pixel for pixel):

* screen vertices are (x, y, depth): pixel coordinates with y down and pixel centres at
  +0.5, and the positive view-space depth (see :mod:`.camera`);
* a pixel is covered when its centre is inside the triangle; centres exactly on an edge
  follow the **top-left rule** (D3D/OpenGL), so a pixel on an edge shared by two
  triangles is drawn once;
* the z-test compares the depth of the surface at the pixel centre (1/depth is
  interpolated linearly in screen space, which is exact for a pinhole camera); equal
  depths go to the smaller triangle id;
* triangles with a vertex at depth <= near (behind or at the camera) are dropped, not
  clipped: faces sit about a metre away, so clipping would never trigger;
* front faces are counter-clockwise seen from outside (the model's convention); with
  ``cull_backfaces`` the others are dropped.

Backends, one module each behind this one entry point: ``numba`` (:mod:`.raster_numba`,
the CPU default), ``torch`` (:mod:`.raster_torch`, batched and device-agnostic),
``triton`` (:mod:`.raster_triton`, CUDA; kernels in :mod:`.triton_kernels`) and
``pytorch3d`` (:mod:`.raster_pytorch3d`, only when that package is importable). What they
share (output type, packed keys) is :mod:`.raster_common`. The torch-based backends are
imported on first use, so the CPU path never imports torch.
"""
from __future__ import annotations

from functools import partial

import numpy as np

from ..errors import ConfigError
from ..tensors import is_tensor
from .raster_common import BACKENDS, DEFAULT_NEAR, RasterOutput
from .raster_numba import rasterize_numba


def auto_backend(device) -> str:
    """The rasterizer "auto" picks for torch tensors on ``device``: numba on the CPU,
    triton on CUDA where it is installed and compiles (:func:`.raster_triton.triton_works`),
    else torch."""
    if device.type == "cpu":
        return "numba"
    from .raster_triton import triton_works

    return "triton" if triton_works(device) else "torch"


def rasterize(
    screen_vertices,
    triangles,
    height: int,
    width: int,
    backend: str = "numba",
    cull_backfaces: bool = False,
    near: float = DEFAULT_NEAR,
    with_bary: bool = True,
) -> RasterOutput:
    """Rasterize (B, N, 3) screen vertices (pixel x, pixel y, depth) into (B, H, W) maps.

    Numpy input gives numpy output; torch input gives torch output on the input's
    device (the numba backend round-trips through the CPU). (N, 3) input is treated as a
    batch of one. ``backend``: "numba", "torch", "triton", "pytorch3d" or "auto" (triton on
    CUDA where it is installed, else torch there; numba otherwise). ``with_bary=False``
    skips the barycentrics where they cost a pass of their own (torch and triton backends:
    ``bary`` is None then); callers that interpolate with :mod:`.interpolate` need none.
    """
    if not (isinstance(height, (int, np.integer)) and isinstance(width, (int, np.integer))) or not (
        1 <= height <= 4 * 4096 and 1 <= width <= 4 * 4096
    ):
        raise ConfigError(f"raster size {height}x{width} is invalid: use whole numbers from 1 to 16384")
    height, width = int(height), int(width)
    is_torch = is_tensor(screen_vertices)
    if screen_vertices.ndim == 2:
        screen_vertices = screen_vertices[None]
    if screen_vertices.ndim != 3 or screen_vertices.shape[-1] != 3:
        raise ConfigError(f"screen vertices must be (B, N, 3) pixel x, y and depth; got shape {tuple(screen_vertices.shape)}")
    if backend == "auto":
        backend = auto_backend(screen_vertices.device) if is_torch else "numba"
    if backend not in BACKENDS:
        raise ConfigError(f"unknown rasterizer backend {backend!r}: use one of {', '.join(BACKENDS)} or 'auto'")
    if backend == "numba":
        if is_torch:
            import torch

            dev = screen_vertices.device
            tri = triangles.detach().cpu().numpy() if isinstance(triangles, torch.Tensor) else np.asarray(triangles)
            out = rasterize_numba(screen_vertices.detach().cpu().numpy(), tri, height, width, cull_backfaces, near)
            return RasterOutput(*(torch.from_numpy(a).to(dev) for a in (out.face_id, out.bary, out.depth)))
        scr = np.asarray(screen_vertices)
        if scr.dtype not in (np.float32, np.float64):
            scr = scr.astype(np.float64)
        return rasterize_numba(scr, np.asarray(triangles), height, width, cull_backfaces, near)
    import torch

    if backend == "pytorch3d":
        from .raster_pytorch3d import rasterize_pytorch3d as fn
    elif backend == "torch":
        from .raster_torch import rasterize_torch

        fn = partial(rasterize_torch, with_bary=with_bary)
    else:
        from .raster_triton import rasterize_triton

        fn = partial(rasterize_triton, with_bary=with_bary)
    if is_torch:
        tri = triangles if isinstance(triangles, torch.Tensor) else torch.as_tensor(np.asarray(triangles))
        return fn(screen_vertices, tri, height, width, cull_backfaces, near)
    out = fn(torch.from_numpy(np.asarray(screen_vertices)), torch.as_tensor(np.asarray(triangles)), height, width, cull_backfaces, near)
    return RasterOutput(out.face_id.numpy(), None if out.bary is None else out.bary.numpy(), out.depth.numpy())
