"""Glasses and sunglasses as geometry: two rims (superellipse rings), a bridge, two
temples reaching back toward the ears, and lenses (tinted, for sunglasses).

The mesh has one fixed topology (the renderers draw one triangle list per batch); an
image's glasses are its vertex positions, computed in the face frame (IOD units, see
``frame.py``) from the image's parameters on the CPU and placed on the decoded face by
its five points on whichever device renders. Without glasses every vertex collapses to
one point behind the eyes, inside the head: zero-area triangles the rasterizers skip.
Clear glasses collapse the lenses only: a z-buffer cannot draw transparent glass, and at
training resolutions the frame is what a network sees.

Frame shapes come from the superellipse exponent (2 round / oval, up to 6 rectangular)
and a cat-eye lift of the outer top; width, height, rim thickness and colour vary.
"""
from __future__ import annotations

import functools

import numpy as np

SEGMENTS = 24                 # around each rim
RIM_Z = 0.26                  # rim plane in front of the eye corners (IOD; about 15 mm)
DEPTH = 0.05                  # rim depth (IOD)
COLORS = {"black": (0.03, 0.03, 0.03), "brown": (0.18, 0.1, 0.05), "tortoise": (0.3, 0.17, 0.07),
          "silver": (0.6, 0.6, 0.62), "gold": (0.62, 0.5, 0.25), "navy": (0.05, 0.07, 0.2), "red": (0.45, 0.05, 0.05)}
TINTS = {"grey": (0.04, 0.04, 0.045), "brown": (0.09, 0.05, 0.025), "green": (0.03, 0.06, 0.04),
         "blue": (0.02, 0.04, 0.09)}
HIDDEN = np.array([0.0, 0.0, -1.0], np.float32)   # frame point inside the head, behind the eyes


def _rim_count() -> int:
    return SEGMENTS * 4


N_RIM = _rim_count()
N_LENS = SEGMENTS + 1
N_BOX = 8
# vertex layout: right rim, left rim, right lens, left lens, bridge, right temple, left temple
OFFSETS = np.cumsum([0, N_RIM, N_RIM, N_LENS, N_LENS, N_BOX, N_BOX, N_BOX])
N_VERTICES = int(OFFSETS[-1])
LENS_MASK = np.zeros(N_VERTICES, bool)
LENS_MASK[OFFSETS[2]:OFFSETS[4]] = True


def _ring_triangles(base: int) -> list:
    tris = []
    for j in range(SEGMENTS):
        a, b = base + 4 * j, base + 4 * ((j + 1) % SEGMENTS)
        for k in range(4):  # inner-front, outer-front, outer-back, inner-back around the tube
            k2 = (k + 1) % 4
            tris += [[a + k, b + k, b + k2], [a + k, b + k2, a + k2]]
    return tris


def _fan_triangles(base: int) -> list:
    c = base + SEGMENTS
    return [[c, base + (j + 1) % SEGMENTS, base + j] for j in range(SEGMENTS)]


def _box_triangles(base: int) -> list:
    quads = [(0, 1, 2, 3), (4, 7, 6, 5), (0, 4, 5, 1), (1, 5, 6, 2), (2, 6, 7, 3), (3, 7, 4, 0)]
    return [[base + q[i], base + q[j], base + q[k]] for q in quads for i, j, k in ((0, 1, 2), (0, 2, 3))]


def _triangles() -> np.ndarray:
    o = OFFSETS
    t = _ring_triangles(o[0]) + _ring_triangles(o[1]) + _fan_triangles(o[2]) + _fan_triangles(o[3])
    t += _box_triangles(o[4]) + _box_triangles(o[5]) + _box_triangles(o[6])
    return np.array(t, np.int32)


TRIANGLES = _triangles()
_NO_GLASSES = np.tile(HIDDEN, (N_VERTICES, 1))
_NO_GLASSES.setflags(write=False)


def sample_style(rng: np.random.Generator) -> dict:
    """A pair of glasses (JSON-able): shape, size, rim, colours, sunglasses or not."""
    return style_from(draw_style(rng))


def draw_style(rng: np.random.Generator) -> tuple:
    """The random numbers of one pair, in the order the style reads them (as
    :func:`.hair.draw_style`: a sampler advances its generator alike whether it uses the
    pair or not, and builds it only when it does)."""
    sun, frame, tint = rng.random(), int(rng.integers(len(COLORS))), int(rng.integers(len(TINTS)))
    shape = rng.random(3)                     # exponent, width, height
    cat_eye = rng.uniform(0.0, 0.25) if rng.random() < 0.25 else 0.0
    return sun, frame, tint, shape, cat_eye, rng.uniform(0.015, 0.07), rng.normal(0, 0.1, 3)


def style_from(numbers: tuple) -> dict:
    """The pair of :func:`draw_style`'s numbers (uniforms as ``rng.uniform`` computes them
    from the same draws: ``low + (high - low) * u``)."""
    sun, frame, tint, (ue, uw, uh), cat_eye, rim, tone = numbers
    frame, tint = list(COLORS)[frame], list(TINTS)[tint]
    return {"sun": bool(sun < 0.3), "exponent": round(float(2.0 + (6.0 - 2.0) * ue), 3),
            "width": round(float(0.36 + (0.5 - 0.36) * uw), 3), "height": round(float(0.24 + (0.38 - 0.24) * uh), 3),
            "cat_eye": round(float(cat_eye), 3), "rim": round(float(rim), 4), "frame": frame,
            "frame_color": np.round(np.array(COLORS[frame]) * np.exp(tone), 4).tolist(),
            "tint": tint, "lens_color": list(TINTS[tint])}


def _superellipse(theta: np.ndarray, a: float, b: float, p: float, cat: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    x = a * np.sign(c) * np.abs(c) ** (2.0 / p)
    y = b * np.sign(s) * np.abs(s) ** (2.0 / p)
    y = y + cat * b * np.clip(s, 0, None) * np.clip(x / a, 0, None) ** 2    # lift the outer top
    return np.stack([x, y], -1)


def frame_coords(g: dict | None) -> np.ndarray:
    """(N_VERTICES, 3) vertex positions in the face frame (IOD units) of glasses `g`; all at
    the hidden point when `g` is None. Read-only: a wearer's pair is built once (a glasses
    wearer's images share it) and handed out again."""
    if not g:
        return _NO_GLASSES
    return _frame_coords(g["width"], g["height"], g["exponent"], g["cat_eye"], g["rim"], bool(g["sun"]))


@functools.lru_cache(maxsize=256)
def _frame_coords(a: float, b: float, p: float, cat: float, t: float, sun: bool) -> np.ndarray:
    out = np.tile(HIDDEN, (N_VERTICES, 1))
    theta = np.linspace(0, 2 * np.pi, SEGMENTS, endpoint=False)
    inner = _superellipse(theta, a, b, p, cat)
    outer = _superellipse(theta, a + t, b + t, p, cat)
    centre_u = max(0.5, a + 0.06)                       # rims sit over the eyes, a bridge apart
    for side, (rim0, lens0) in ((-1, (OFFSETS[0], OFFSETS[2])), (1, (OFFSETS[1], OFFSETS[3]))):
        cu = side * centre_u
        flip = np.array([side, 1.0])                    # mirror so "outer" points away from the nose
        ring = np.zeros((SEGMENTS, 4, 3), np.float32)
        for k, (xy, z) in enumerate(((inner, RIM_Z), (outer, RIM_Z), (outer, RIM_Z - DEPTH), (inner, RIM_Z - DEPTH))):
            ring[:, k, :2] = xy * flip + [cu, -0.02]
            ring[:, k, 2] = z
        if side > 0:  # mirroring reverses the winding: walk the left rim the other way round
            ring = ring[::-1]
        out[rim0:rim0 + N_RIM] = ring.reshape(-1, 3)
        if sun:
            lens = np.zeros((N_LENS, 3), np.float32)
            lens[:SEGMENTS, :2] = (inner * flip + [cu, -0.02])[::-1 if side > 0 else 1]
            lens[SEGMENTS, :2] = [cu, -0.02]
            lens[:, 2] = RIM_Z - DEPTH / 2
            out[lens0:lens0 + N_LENS] = lens
    inner_u = centre_u - a - t / 2
    out[OFFSETS[4]:OFFSETS[4] + N_BOX] = _box([-inner_u, 0.08], [inner_u, 0.08], RIM_Z - DEPTH / 2, t, 0.8 * DEPTH)
    for side, off in ((-1, OFFSETS[5]), (1, OFFSETS[6])):
        hinge = [side * (centre_u + a + t * 0.5), 0.1 * b]
        out[off:off + N_BOX] = _temple(hinge, side, t)
    out.setflags(write=False)
    return out


def _box(p0, p1, z: float, h: float, d: float) -> np.ndarray:
    """A bar from p0 to p1 (x, y) at depth z, height h, depth d: 8 corners."""
    x0, y0 = p0
    x1, y1 = p1
    c = [(x0, y0 - h / 2), (x1, y1 - h / 2), (x1, y1 + h / 2), (x0, y0 + h / 2)]
    return np.array([(x, y, z + d / 2) for x, y in c] + [(x, y, z - d / 2) for x, y in c], np.float32)


def _temple(hinge, side: int, t: float) -> np.ndarray:
    """An arm from the hinge back to above the ear (1.3 IOD behind the eyes)."""
    hx, hy = hinge
    ear = (side * 1.2, hy - 0.05, -1.3)
    h = max(t, 0.03)
    near = [(hx, hy - h / 2, RIM_Z - DEPTH), (hx, hy + h / 2, RIM_Z - DEPTH)]
    far = [(ear[0], ear[1] - h / 2, ear[2]), (ear[0], ear[1] + h / 2, ear[2])]
    w = 0.02 * side
    pts = [near[0], far[0], far[1], near[1]]
    return np.array([(x - w, y, z) for x, y, z in pts] + [(x + w, y, z) for x, y, z in pts], np.float32)
