"""Vertex normals (numba and torch) and the Basel generator's per-image colour transform:
the per-vertex inputs of shading that are not the light. The SH basis, its constants and
the Lambertian irradiance are :mod:`morphgen.spherical_harmonics`.

Shading is evaluated per vertex and interpolated (Gouraud); at the render sizes of
face-recognition data (<= 256 px for a 28k-vertex face) vertices are denser than pixels,
so this equals per-pixel shading to within a grey level while costing a fraction.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numba
import numpy as np

from ..errors import ConfigError
from ..tensors import is_tensor

if TYPE_CHECKING:
    import torch

# Rec. 601 luma weights, for the colour transform's contrast (saturation) term
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)


def vertex_normals_torch(vertices: torch.Tensor, triangles) -> torch.Tensor:
    """Area-weighted unit vertex normals (B, N, 3), differentiable.

    Each triangle adds its unnormalised cross product (twice its area times its unit
    normal) to its three vertices; front faces are counter-clockwise seen from outside,
    so normals point outward.
    """
    import torch

    tris = triangles if isinstance(triangles, torch.Tensor) else torch.as_tensor(np.asarray(triangles))
    tris = tris.to(device=vertices.device, dtype=torch.long)
    v0, v1, v2 = vertices[:, tris[:, 0]], vertices[:, tris[:, 1]], vertices[:, tris[:, 2]]
    fn = torch.cross(v1 - v0, v2 - v0, dim=-1)
    n = torch.zeros_like(vertices)
    for k in range(3):
        n = n.index_add(1, tris[:, k], fn)
    return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def accumulate_normals_raw(verts, tris, out):
    """Sum of the adjacent triangles' cross products per vertex (area-weighted, not
    normalised) into ``out`` (N, 3).

    Pass ``tris`` as uint32: with signed indices numba adds wraparound checks that more
    than double the time of this scatter loop.
    """
    accumulate_normals_facing(verts, tris, out, np.zeros(3), False, np.empty(0, np.int8))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def accumulate_normals_facing(verts, tris, out, eye, cull, drawn):
    """:func:`accumulate_normals_raw`, and where ``drawn`` is not empty, each triangle's
    label for edge anti-aliasing (:mod:`.edge_aa`) from the cross product the loop has
    anyway: 1 if it faces the camera at ``eye`` (model space), else 0 (culled) or -1
    (``cull`` False: drawn from behind)."""
    out[:] = 0.0
    label = drawn.shape[0] > 0
    e0, e1, e2 = eye[0], eye[1], eye[2]
    for k in range(tris.shape[0]):
        a, b, c = tris[k, 0], tris[k, 1], tris[k, 2]
        x, y, z = verts[a, 0], verts[a, 1], verts[a, 2]  # read before the stores below (which might alias)
        ux = verts[b, 0] - x
        uy = verts[b, 1] - y
        uz = verts[b, 2] - z
        vx = verts[c, 0] - x
        vy = verts[c, 1] - y
        vz = verts[c, 2] - z
        nx = uy * vz - uz * vy
        ny = uz * vx - ux * vz
        nz = ux * vy - uy * vx
        if label:
            toward = nx * (e0 - x) + ny * (e1 - y) + nz * (e2 - z)
            drawn[k] = 1 if toward > 0.0 else (0 if cull else -1)
        out[a, 0] += nx
        out[a, 1] += ny
        out[a, 2] += nz
        out[b, 0] += nx
        out[b, 1] += ny
        out[b, 2] += nz
        out[c, 0] += nx
        out[c, 1] += ny
        out[c, 2] += nz


@numba.njit(cache=True, nogil=True, error_model="numpy")
def accumulate_normals(verts, tris, out):
    """Area-weighted unit vertex normals of one mesh (N, 3) into ``out`` (N, 3)."""
    accumulate_normals_raw(verts, tris, out)
    for i in range(out.shape[0]):
        ln = np.sqrt(out[i, 0] * out[i, 0] + out[i, 1] * out[i, 1] + out[i, 2] * out[i, 2])
        if ln > 1e-20:
            inv = 1.0 / ln
            out[i, 0] *= inv
            out[i, 1] *= inv
            out[i, 2] *= inv


def vertex_normals_np(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals, (N, 3) or (B, N, 3), float32 or float64."""
    v = np.asarray(vertices)
    if v.dtype not in (np.float32, np.float64):
        v = v.astype(np.float64)
    tris = np.ascontiguousarray(triangles, dtype=np.uint32)
    single = v.ndim == 2
    vb = v[None] if single else v
    out = np.empty_like(vb)
    for i in range(vb.shape[0]):
        accumulate_normals(np.ascontiguousarray(vb[i]), tris, out[i])
    return out[0] if single else out


# --------------------------------------------------------------------------------------
# colour transform
# --------------------------------------------------------------------------------------
@dataclass
class ColorTransform:
    """The Basel generator's per-image colour transform of the rendered face.

    ``c' = gain * (luma(c) + contrast * (c - luma(c))) + offset`` per RGB channel, applied
    to the shaded face colour (not to the background), before clipping to [0, 1].
    contrast 1 keeps the colour, 0 makes the face grey (it is a colour-contrast, i.e.
    saturation, parameter as in the Basel generator). Fields are per image: gain (B, 3),
    contrast (B,), offset (B, 3), numpy or torch. The transform is affine, so applying it
    per vertex before interpolation equals applying it per pixel.
    """

    gain: Any
    contrast: Any
    offset: Any

    @classmethod
    def identity(cls, batch: int) -> "ColorTransform":
        return cls(np.ones((batch, 3)), np.ones(batch), np.zeros((batch, 3)))

    @classmethod
    def sample(
        cls, rng: np.random.Generator, batch: int, gain_std: float = 0.1, contrast_range=(0.6, 1.2), offset_std: float = 0.02
    ) -> "ColorTransform":
        """A random transform per image (a plain default for data augmentation)."""
        gain = np.clip(1.0 + rng.normal(0.0, gain_std, (batch, 3)), 0.3, 2.0)
        contrast = rng.uniform(contrast_range[0], contrast_range[1], batch)
        offset = rng.normal(0.0, offset_std, (batch, 3))
        return cls(gain, contrast, offset)

    def arrays(self, batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """float64 numpy (B, 3), (B,), (B, 3) broadcast from whatever was given."""
        try:
            g = np.broadcast_to(np.asarray(_np(self.gain), dtype=np.float64), (batch, 3))
            c = np.broadcast_to(np.asarray(_np(self.contrast), dtype=np.float64).reshape(-1), (batch,))
            o = np.broadcast_to(np.asarray(_np(self.offset), dtype=np.float64), (batch, 3))
        except ValueError:
            raise ConfigError(f"colour transform arrays do not match the batch of {batch} images") from None
        return np.ascontiguousarray(g), np.ascontiguousarray(c), np.ascontiguousarray(o)

    def apply_torch(self, colors: torch.Tensor) -> torch.Tensor:
        """Apply to (B, ..., 3) colours (differentiable in colours and parameters)."""
        import torch

        b = colors.shape[0]
        shape = (b,) + (1,) * (colors.dim() - 2)

        def t(x, last):
            if isinstance(x, torch.Tensor):
                x = x.to(device=colors.device, dtype=colors.dtype)
            else:
                x = torch.as_tensor(np.asarray(x, dtype=np.float64), device=colors.device, dtype=colors.dtype)
            return x.expand(b, *last).reshape(*shape, *last) if last else x.expand(b).reshape(*shape, 1)

        gain, contrast, offset = t(self.gain, (3,)), t(self.contrast, ()), t(self.offset, (3,))
        luma = (colors * torch.as_tensor(LUMA, dtype=colors.dtype, device=colors.device)).sum(-1, keepdim=True)
        return gain * (luma + contrast * (colors - luma)) + offset


def _np(x):
    return x.detach().cpu().numpy() if is_tensor(x) else x
