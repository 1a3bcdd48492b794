"""What every rasterizer backend shares: the output type, the conventions' constants (see
:mod:`.rasterize`) and the packed depth/id keys of the torch and triton backends. Imports
no backend, so each backend module imports it without importing another backend.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

BACKENDS = ("numba", "torch", "triton", "pytorch3d")
DEFAULT_NEAR = 10.0
EMPTY_KEY = (1 << 63) - 1  # int64 max: the torch and triton backends' key of a pixel no triangle covers


@dataclass
class RasterOutput:
    """Per-pixel rasterization result (numpy arrays or torch tensors, like the input).

    face_id: (B, H, W) int32, index into ``triangles``; -1 = background.
    bary: (B, H, W, 3) float32 perspective-correct barycentric coordinates of the pixel
        centre w.r.t. the triangle's vertices in the order given in ``triangles``
        (zero for background).
    depth: (B, H, W) float32 view-space depth of the visible surface; +inf for background.
    """

    face_id: Any
    bary: Any
    depth: Any


def maps_from_keys(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Face-id (int32, -1 = background) and depth (+inf on background) maps from the
    packed ``depth bits << 32 | triangle id`` keys of the torch and triton backends."""
    import torch

    empty = keys == EMPTY_KEY
    fid = torch.where(empty, -1, keys & 0xFFFFFFFF).to(torch.int32)
    depth = (keys >> 32).to(torch.int32).view(torch.float32).masked_fill(empty, float("inf"))
    return fid, depth


def keyed_output(fid, depth, screen, tris, with_bary: bool) -> RasterOutput:
    """The RasterOutput of the torch and triton backends' maps, with the barycentrics
    recomputed in torch from the face ids (:mod:`.interpolate`) when ``with_bary``."""
    import torch

    from .interpolate import barycentrics

    if not with_bary:
        return RasterOutput(fid, None, depth)
    with torch.no_grad():
        return RasterOutput(fid, barycentrics(fid, screen, tris).to(torch.float32), depth)
