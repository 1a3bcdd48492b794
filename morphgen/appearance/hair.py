"""Hair with volume: a shell over the scalp whose thickness follows a hairstyle.

Why a shell: the renderers (numba, torch, Triton) draw one triangle list for a whole
batch, so hair must have the same topology in every image. The shell is a copy of the
scalp's triangles (plus the upper forehead for fringes and the back of the neck for long
hair); each image pushes its vertices out along the mean shape's normals by the style's
thickness, or 4 mm *inside* the head where the style has no hair, where the head hides
them. A bald identity is a shell entirely inside. The silhouette, the hairline and
volume over the top change with the style; a strand-like shading (clumps along the
hair's direction, darker roots, a lighter crown) goes into its albedo.

Styles (drawn per identity): bald, buzz, short, medium, long, curly, receding, fringe.
Colours: black, dark brown, brown, light brown, blond, auburn, grey, white.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..model import MorphableModel
from ..probspec import Categorical
from .frame import mesh_smoother, region

STYLES = ("bald", "buzz", "short", "medium", "long", "curly", "receding", "fringe")
STYLE_P = (0.08, 0.12, 0.24, 0.18, 0.13, 0.08, 0.1, 0.07)
COLORS = {"black": (0.05, 0.04, 0.035), "dark_brown": (0.15, 0.09, 0.055), "brown": (0.3, 0.19, 0.11),
          "light_brown": (0.45, 0.32, 0.2), "blond": (0.7, 0.56, 0.36), "auburn": (0.45, 0.17, 0.08),
          "grey": (0.5, 0.49, 0.47), "white": (0.8, 0.79, 0.76)}
COLOR_P = (0.3, 0.25, 0.15, 0.09, 0.07, 0.04, 0.06, 0.04)
STYLE_DRAW, COLOR_DRAW = Categorical(STYLE_P), Categorical(COLOR_P)
HIDDEN_MM = -4.0
# per-image parameter vector: on, length (mm), top volume, hairline (IOD), recession, neck
# reach (IOD below the ears), roughness (mm), curl frequency, 3 noise phases, side thickness
# (fraction of the top's)
N_PARAMS = 12
SIDES = {"buzz": 1.0, "short": 0.35, "medium": 0.55, "long": 0.85, "curly": 0.9, "receding": 0.35, "fringe": 0.55}


@dataclass(frozen=True)
class Shell:
    src: np.ndarray        # (M,) model vertex each shell vertex follows
    normals: np.ndarray    # (M, 3) mean-shape normals (model space)
    triangles: np.ndarray  # (Ts, 3) into the shell's own vertices
    v: np.ndarray          # (M,) height in the face frame (IOD)
    az: np.ndarray         # (M,) azimuth around the vertical axis, 0 = front (radians)
    edge: np.ndarray       # (M,) 0 at the domain's border, 1 a few rings in: the shell's open edges stay on the skin


def build_shell(model: MorphableModel, mean: np.ndarray, c: np.ndarray, normals: np.ndarray) -> Shell | None:
    """The shell domain of a model (None when it has no scalp to grow hair on)."""
    u, v, w = c[:, 0], c[:, 1], c[:, 2]
    hair = region(model, "hair")
    excluded = np.zeros(len(c), bool)
    for name in ("ears", "eyes", "eyebrows", "teeth", "mouth_interior", "lips", "nose"):
        r = region(model, name)
        if r is not None:
            excluded |= r
    above_brows = v > 0.5
    nape = (w < -0.15) & (v > -2.7)
    domain = (above_brows | nape) & ~excluded
    face = region(model, "face")
    if hair is not None and face is not None:  # below the brows, never over the face itself
        domain &= hair | above_brows | ~face
    if domain.sum() < 30:
        return None
    idx = np.flatnonzero(domain)
    where = np.full(len(c), -1, np.int64)
    where[idx] = np.arange(len(idx))
    t = np.asarray(model.triangles, np.int64)
    tri = t[(where[t] >= 0).all(1)]
    if len(tri) < 20:
        return None
    smooth = mesh_smoother(model.triangles, len(c))
    edge = np.clip((smooth(domain, 3)[idx] - 0.6) / 0.3, 0, 1)
    return Shell(idx, normals[idx].astype(np.float32), where[tri].astype(np.int32), v[idx].astype(np.float32),
                 np.arctan2(u[idx], w[idx] + 0.6).astype(np.float32),
                 (edge * edge * (3 - 2 * edge)).astype(np.float32))


def sample_style(rng: np.random.Generator) -> dict:
    """An identity's hairstyle and colour (JSON-able)."""
    return style_from(draw_style(rng))


# the uniform draws of a style, in order: (low, high) of each; lengths by style, volume,
# hairlines (fringe, receding, other), recession (receding, other), neck reach (long,
# curly, medium, other), roughness (curly, other), curl (curly, other), three phases
_LENGTHS = {"buzz": (1.5, 3.5), "short": (5, 11), "medium": (11, 20), "long": (14, 26), "curly": (16, 30),
            "receding": (3, 12), "fringe": (9, 18)}
_HAIRLINES = {"fringe": (0.55, 0.8), "receding": (1.3, 1.6)}
_NECKS = {"long": (1.2, 2.2), "curly": (0.5, 1.5), "medium": (0.3, 0.9)}
N_UNIFORMS = len(_LENGTHS) + 1 + len(_HAIRLINES) + 1 + 1 + len(_NECKS) + 1 + 1 + 1 + 3


def draw_style(rng: np.random.Generator) -> tuple:
    """The random numbers of one style, drawn in one go (the generator's state after it
    is what a sampler's later draws start from, whether the style is used or not; only a
    used one pays for :func:`style_from`)."""
    return (STYLE_DRAW.draw(rng), COLOR_DRAW.draw(rng), rng.normal(0, 0.12, 3), rng.normal(0, 0.15),
            rng.random(N_UNIFORMS))


def style_from(numbers: tuple) -> dict:
    """The style of :func:`draw_style`'s numbers. Each uniform is ``low + (high - low) * u``,
    as ``rng.uniform`` computes it from the same draw, so styles equal those drawn one
    ``rng.uniform`` call at a time (every alternative drawn, used or not, in this order)."""
    si, ci, tint, shade, u = numbers
    style, color = STYLES[si], list(COLORS)[ci]
    draws = iter(u.tolist())

    def uniform(lo: float, hi: float) -> float:
        return lo + (hi - lo) * next(draws)

    base = np.array(COLORS[color]) * np.exp(tint) * np.exp(shade)
    lengths = {k: uniform(*b) for k, b in _LENGTHS.items()}
    volume = uniform(0.0, 0.8)
    hairlines = {k: uniform(*b) for k, b in _HAIRLINES.items()}
    hairline = hairlines.get(style, uniform(1.0, 1.3))
    recession = uniform(0.25, 0.6) if style == "receding" else uniform(0.0, 0.2)
    necks = {k: uniform(*b) for k, b in _NECKS.items()}
    neck = necks.get(style, uniform(0.0, 0.3))
    roughness = uniform(3.0, 7.0) if style == "curly" else uniform(0.3, 2.0)
    curl = uniform(6, 12) if style == "curly" else uniform(2, 5)
    phase = [uniform(0, 2 * np.pi) for _ in range(3)]
    return {"style": style, "color_name": color, "color": np.round(np.clip(base, 0.01, 0.95), 4).tolist(),
            "length": round(float(lengths.get(style, 0.0)), 2), "volume": round(float(volume), 3),
            "hairline": round(float(hairline), 3), "recession": round(float(recession), 3),
            "neck": round(float(neck), 3), "roughness": round(float(roughness), 3), "curl": round(float(curl), 3),
            "phase": np.round(phase, 4).tolist()}


def param_vector(h: dict | None) -> np.ndarray:
    """The style as the float vector ``thickness`` reads (all zero = no hair)."""
    if not h or h["style"] == "bald":
        return np.zeros(N_PARAMS, np.float32)
    return np.array([1.0, h["length"], h["volume"], h["hairline"], h["recession"], h["neck"], h["roughness"],
                     h["curl"], *h["phase"], SIDES[h["style"]]], np.float32)


def thickness(shell: Shell, p, xp):
    """(B, M) shell offsets in mm for style vectors p (B, N_PARAMS); works on numpy arrays
    and torch tensors alike (xp = numpy or torch)."""
    col = [p[:, k:k + 1] for k in range(N_PARAMS)]
    on, length, volume, hairline, recession, neck, rough, curl, ph0, ph1, ph2, sides = col
    v = _as(xp, shell.v, p)[None]
    az = _as(xp, shell.az, p)[None]
    # the hairline: `hairline` over the forehead (higher at the temples when receding), down
    # to just above the ears at the sides, down the nape by `neck` at the back
    a = xp.abs(az)
    temple = xp.exp(-((a - 0.7) / 0.25) ** 2)
    front_line = hairline + recession * temple
    line = front_line + (0.15 - front_line) * _smooth(xp, 0.8, 1.5, a)
    line = line + (-0.6 - neck - line) * _smooth(xp, 1.9, 2.5, a)
    cover = _smooth(xp, line - 0.06, line + 0.06, v) * _as(xp, shell.edge, p)[None]
    crown = _smooth(xp, 0.8, 1.9, v)
    noise = (xp.sin(curl * az + ph0) * xp.sin(curl * 0.8 * v + ph1) + 0.5 * xp.sin(2.3 * curl * (az + v) + ph2)) / 1.5
    t = length * (sides + (1 - sides) * crown) * (1 + volume * crown) + rough * noise
    t = xp.clip(t, 0.8, None)
    # fade to the hidden depth across the hairline, so the hair meets the skin
    out = HIDDEN_MM + (t - HIDDEN_MM) * cover
    return on * out + (1 - on) * HIDDEN_MM


def albedo(shell: Shell, p, colors, xp):
    """(B, M, 3) hair albedo: the identity's colour with clumps along the strands, darker
    roots at the hairline, a lighter crown."""
    curl, ph0, ph1 = p[:, 7:8], p[:, 8:9], p[:, 9:10]
    v = _as(xp, shell.v, p)[None]
    az = _as(xp, shell.az, p)[None]
    clumps = 0.82 + 0.18 * xp.sin(3.5 * curl * az + ph1) * xp.sin(1.7 * curl * az + 0.6 * v + ph0)
    crown = 0.9 + 0.25 * _smooth(xp, 1.2, 2.0, v)
    return xp.clip(colors[:, None, :] * (clumps * crown)[..., None], 0.0, 1.0)


def _smooth(xp, e0, e1, x):
    t = xp.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _as(xp, a: np.ndarray, like):
    if xp is np:
        return a
    return xp.as_tensor(a, dtype=like.dtype, device=like.device)
