"""The spherical-harmonics (SH) basis, its constants and Lambertian irradiance: the one
definition the light priors (:mod:`morphgen.illumination`) and every renderer path
(:mod:`morphgen.render`) share, so a light means the same thing wherever it is used.

Conventions (those of scalismo-faces and the Basel face generator):

* 9 coefficients (bands l = 0, 1, 2), index i = l^2 + l + m, in the order
  ``1, y, z, x, xy, yz, 3z^2 - 1, xz, x^2 - y^2``, each times its normalisation constant
  (:data:`SH_NORMALISATION`: N0 = sqrt(1/pi)/2, N1 = sqrt(3/pi)/2, N2_1 = sqrt(15/pi)/2,
  N2_0 = sqrt(5/pi)/4, N2_2 = sqrt(15/pi)/4).
* A light is an array (9, 3): one RGB triple per basis function.
* Lambertian shading: ``radiance = albedo * (sh_basis(n) * LAMBERT_KERNEL) @ coeffs`` with
  the clamped-cosine kernel pi, 2pi/3, pi/4 for bands 0, 1, 2.

Frame of the normals: **camera (view) space, after the pose rotation**, y up and +z toward
the viewer. In the Basel renderer the light lives in the world frame and the default
camera sits at the world origin looking down -z, so this is the same frame. Why it
matters: the light then stays fixed relative to the camera while the head turns under it,
which makes pose and illumination independent factors of variation (a profile view lit
from the camera's left is still lit from the camera's left). Coefficients from the Basel
Illumination Prior (fitted to photos in that frame) apply unchanged.

The numpy functions import nothing else; the torch twins import torch when called (the
CPU dataset path never loads it).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

SH_N0 = math.sqrt(1.0 / math.pi) / 2.0  # 0.282095
SH_N1 = math.sqrt(3.0 / math.pi) / 2.0  # 0.488603
SH_N2_1 = math.sqrt(15.0 / math.pi) / 2.0  # 1.092548  (xy, yz, xz)
SH_N2_0 = math.sqrt(5.0 / math.pi) / 4.0  # 0.315392  (3z^2 - 1)
SH_N2_2 = math.sqrt(15.0 / math.pi) / 4.0  # 0.546274  (x^2 - y^2)

#: Normalisation constant of each of the 9 basis functions, in coefficient order.
SH_NORMALISATION = np.array([SH_N0, SH_N1, SH_N1, SH_N1, SH_N2_1, SH_N2_1, SH_N2_0, SH_N2_1, SH_N2_2])
#: Band l of each coefficient.
SH_BAND = np.array([0, 1, 1, 1, 2, 2, 2, 2, 2])
#: SH coefficients of the clamped-cosine (Lambert) kernel, per coefficient: pi, 2pi/3, pi/4.
LAMBERT_KERNEL = np.array([math.pi] + [2.0 * math.pi / 3.0] * 3 + [math.pi / 4.0] * 5)


def sh_basis(normals: np.ndarray) -> np.ndarray:
    """The 9 normalised SH basis functions at unit ``normals`` (..., 3) -> (..., 9).

    float32 input stays float32; anything else is computed in float64. Normals are not
    re-normalised.
    """
    n = np.asarray(normals)
    dtype = np.float32 if n.dtype == np.float32 else np.float64
    n = n.astype(dtype, copy=False)
    if n.shape[-1] != 3:
        raise ValueError(f"normals must have shape (..., 3), got {n.shape}")
    x, y, z = n[..., 0], n[..., 1], n[..., 2]
    out = np.empty(n.shape[:-1] + (9,), dtype=dtype)
    out[..., 0] = SH_N0
    out[..., 1] = SH_N1 * y
    out[..., 2] = SH_N1 * z
    out[..., 3] = SH_N1 * x
    out[..., 4] = SH_N2_1 * x * y
    out[..., 5] = SH_N2_1 * y * z
    out[..., 6] = SH_N2_0 * (3.0 * z * z - 1.0)
    out[..., 7] = SH_N2_1 * x * z
    out[..., 8] = SH_N2_2 * (x * x - y * y)
    return out


def sh_basis_at(x: float, y: float, z: float) -> np.ndarray:
    """:func:`sh_basis` of one unit normal given as Python floats, in scalar maths (a light
    prior calls this once per image, where the array form's overhead is most of the cost)."""
    return np.array([SH_N0, SH_N1 * y, SH_N1 * z, SH_N1 * x, SH_N2_1 * x * y, SH_N2_1 * y * z,
                     SH_N2_0 * (3.0 * z * z - 1.0), SH_N2_1 * x * z, SH_N2_2 * (x * x - y * y)])


def irradiance(normals: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
    """Lambertian irradiance (..., 3) at unit ``normals`` (..., 3) for coefficients (9, 3),
    in the precision of :func:`sh_basis`."""
    basis = sh_basis(normals)
    weights = (LAMBERT_KERNEL.astype(basis.dtype) * basis)
    return weights @ np.asarray(coeffs, dtype=basis.dtype).reshape(9, 3)


def shade(albedo: np.ndarray, normals: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
    """Radiance ``albedo * irradiance(normals, coeffs)`` (no clamping)."""
    return np.asarray(albedo) * irradiance(normals, coeffs)


def sh_basis_torch(normals: torch.Tensor) -> torch.Tensor:
    """Torch twin of :func:`sh_basis`, differentiable: (..., 3) unit normals -> (..., 9)."""
    import torch

    x, y, z = normals[..., 0], normals[..., 1], normals[..., 2]
    return torch.stack(
        (
            torch.full_like(x, SH_N0),
            SH_N1 * y,
            SH_N1 * z,
            SH_N1 * x,
            SH_N2_1 * x * y,
            SH_N2_1 * y * z,
            SH_N2_0 * (3.0 * z * z - 1.0),
            SH_N2_1 * x * z,
            SH_N2_2 * (x * x - y * y),
        ),
        -1,
    )


def irradiance_torch(normals: torch.Tensor, sh: torch.Tensor) -> torch.Tensor:
    """Lambertian irradiance (B, ..., 3) for normals (B, ..., 3) and SH lights (B, 9, 3)."""
    import torch

    basis = sh_basis_torch(normals) * torch.as_tensor(LAMBERT_KERNEL, dtype=normals.dtype, device=normals.device)
    lead = basis.shape[1:-1]
    flat = basis.reshape(basis.shape[0], -1, 9)
    return torch.bmm(flat, sh.to(normals.dtype)).reshape(basis.shape[0], *lead, 3)
