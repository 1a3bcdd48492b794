"""The triton rasterizer (CUDA): the keys of the torch backend, made by one Triton kernel
launch per batch with an atomic min, and a fused colour resolve that ``render_torch`` uses
when no gradient is wanted. The kernels are :mod:`.triton_kernels`, imported only once
:func:`triton_available` says they can run (triton is an optional dependency).
"""
from __future__ import annotations

import os
import warnings

from ..errors import ConfigError
from .raster_common import RasterOutput, keyed_output, maps_from_keys

_TRITON_WORKS: dict[str, bool] = {}


def triton_available(device) -> tuple[bool, str]:
    """(usable, reason): triton importable and able to run on ``device`` (CUDA, or the
    CPU under TRITON_INTERPRET=1, which the tests use)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False, "triton is not installed"
    if device.type == "cuda" or (device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"):
        return True, ""
    return False, f"triton does not run on {device.type} (on the CPU only with TRITON_INTERPRET=1)"


def triton_works(device) -> bool:
    """Whether both triton kernels run on ``device``'s type, tested once per type on one
    triangle as render_torch's no-gradient path launches them: a Triton release that
    cannot compile them for this GPU then costs a warning, not the run."""
    if device.type not in _TRITON_WORKS:
        ok, why = triton_available(device)
        if ok:
            import torch

            try:
                from .triton_kernels import resolve_rgb

                tri = torch.tensor([[[1.0, 1.0, 100.0], [1.0, 6.0, 100.0], [6.0, 1.0, 100.0]]], device=device)
                keys, scr, tris = triton_keys(tri, torch.tensor([[0, 1, 2]]), 8, 8, False, 1.0)
                rgb = resolve_rgb(keys, scr, tris, torch.ones(1, 3, 3, device=device), None, 1)
                ok = bool((maps_from_keys(keys)[0] == 0).any()) and bool((rgb == 1.0).any())
                if not ok:
                    why = "its test triangle drew no pixel"
            except Exception as e:  # noqa: BLE001 - any compile/launch failure means: fall back
                ok, why = False, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            if not ok:
                warnings.warn(f"triton rasterizer unusable on {device.type} ({why}); using the torch rasterizer")
        _TRITON_WORKS[device.type] = ok
    return _TRITON_WORKS[device.type]


def triton_keys(screen, triangles, h: int, w: int, cull: bool, near: float):
    """(keys, screen, triangles): the packed keys of one `triton_kernels.raster_keys` launch
    for the whole batch, with the float32 screen vertices and int32 triangles it read
    (float64 input is rasterized in float32). ConfigError where triton cannot run."""
    import torch

    ok, why = triton_available(screen.device)
    if not ok:
        raise ConfigError(f"raster backend 'triton' is unavailable: {why}")
    from .triton_kernels import raster_keys

    scr = screen.detach().to(torch.float32).contiguous()
    tris = triangles.to(device=scr.device, dtype=torch.int32).contiguous()
    return raster_keys(scr, tris, h, w, cull, near), scr, tris


def rasterize_triton(screen, triangles, h: int, w: int, cull: bool, near: float, with_bary: bool = True) -> RasterOutput:
    """One kernel launch for the whole batch; same keys as the torch backend."""
    keys, scr, tris = triton_keys(screen, triangles, h, w, cull, near)
    fid, depth = maps_from_keys(keys)
    return keyed_output(fid, depth, scr, tris.long(), with_bary)
