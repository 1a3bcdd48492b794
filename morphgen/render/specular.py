"""A specular ("shine") term under the SH light: white Blinn-Phong highlights from the
light's dominant direction, scaled per vertex (oily skin: ``shine`` of
:mod:`morphgen.appearance`; issue 17).

Why: SH irradiance is purely diffuse, so rendered skin is matte everywhere, while faces
in photos nearly always show highlights on the forehead, nose and cheeks, which move with
the pose and the light; a network trained on matte faces has never seen them.

The light: an SH light has no source position, but its band 1 (the part of the irradiance
linear in the normal) points toward where most light comes from. The luma-weighted band-1
coefficients, ordered (x, y, z) = (3, 1, 2) as the shading reads them (a positive
coefficient 2 lights normals facing the camera, +z in camera space), give the direction
``d``; their length over N1 is the intensity ``L`` of the distant light with that band 1
(:func:`morphgen.illumination.sh_directional`), in the units of the irradiance: about 0.3
to 1 for the built-in prior, and 0 for an ambient light, which has no highlight.

Per vertex, with unit camera-space normal n and weight w (0 where nothing shines):
``spec = w * KS * L * max(0, n . h) ** SHININESS``, ``h = normalize(d + v)``, v = +z the
camera axis toward the viewer (a distant viewer: the face is small at 1 m). It is added
equally to R, G and B (a dielectric's highlight is the light's colour, not the skin's)
after the diffuse shading and before the colour transform, in both render paths.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..spherical_harmonics import SH_N1
from .shading import LUMA

#: Specular reflectance of fully shiny skin: with w = 1 and a typical light (L ~ 0.6) a
#: highlight adds up to 0.3 to colours of about 0.5 to 0.7, plain to see without burning
#: out (an identity's strength, 0.2 to 1, scales it down).
KS = 0.5
#: Blinn-Phong exponent: broad, soft highlights of skin (not the pin-points of glass).
SHININESS = 20.0


def highlight(sh: Any, xp) -> tuple[Any, Any]:
    """(h (B, 3), KS * L (B,)) of SH lights (B, 9, 3): the half vector between the dominant
    light direction and the viewer, and the highlight's strength. xp is numpy or torch
    (then differentiable in ``sh``)."""
    luma = np.asarray(LUMA) if xp is np else xp.as_tensor(LUMA, dtype=sh.dtype, device=sh.device)
    c = (sh[:, [3, 1, 2], :] * luma).sum(-1)                       # (B, 3): x, y, z
    length = xp.sqrt((c * c).sum(-1))
    d = c / xp.clip(length, 1e-12, None)[:, None]
    h = d + (np.array([0.0, 0.0, 1.0]) if xp is np else xp.as_tensor([0.0, 0.0, 1.0], dtype=sh.dtype, device=sh.device))
    h = h / xp.clip(xp.sqrt((h * h).sum(-1)), 1e-12, None)[:, None]  # a light from behind: h = 0, no highlight
    return h, KS * length / SH_N1


def specular_torch(normals, weights, sh):
    """The specular term (B, N) at unit camera-space ``normals`` (B, N, 3) for per-vertex
    ``weights`` (B, N) and SH lights (B, 9, 3), differentiable."""
    import torch

    h, strength = highlight(sh.to(normals.dtype), torch)
    nh = (normals * h[:, None, :]).sum(-1).clamp_min(0.0)
    return weights.to(normals.dtype) * strength[:, None] * nh.pow(SHININESS)
