"""Built-in backgrounds with the statistics of photos, not of wallpaper.

Real face photos are shot in rooms, streets and crowds: large, mostly desaturated
structures (walls, doors, windows, sky, foliage), other people, and everything out of
focus behind the subject. The pattern textures of ``backgrounds.ProceduralBackgrounds``
(checkers, stripes in saturated colours) teach a network the face/background boundary,
but not to ignore a real room behind a face. These painters draw such scenes from a
numpy generator:

- ``indoor``: a lit wall with a floor, doors / windows / frames / shelves, a lamp glow;
- ``outdoor``: sky, horizon, foliage masses, buildings with window grids, ground;
- ``crowd``: out-of-focus people (skin-toned heads, hair, shirts) and bokeh lights.

Each scene is then blurred as a lens would blur it at the subject's focus distance
(depth of field, sigma 0.5-4 px at 128 px), slightly desaturated and given fine grain.
``SceneBackgrounds`` keeps a pool per process like ``ProceduralBackgrounds`` (same crop,
flip and size logic); ``--backgrounds scenes`` uses it alone, ``--backgrounds mixed``
draws half of the images from each source.
"""
from __future__ import annotations

from typing import ClassVar

import cv2
import numpy as np

from .backgrounds import TexturePool

KINDS = ("indoor", "outdoor", "crowd")


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i], np.float32)


def _wall_color(rng) -> np.ndarray:
    """Paint, plaster, wood: low saturation, mostly warm, mid to high value."""
    if rng.random() < 0.2:   # wood
        return _hsv(rng.uniform(0.05, 0.1), rng.uniform(0.3, 0.6), rng.uniform(0.25, 0.6))
    return _hsv(rng.uniform(0.0, 1.0) if rng.random() < 0.3 else rng.uniform(0.05, 0.15),
                rng.uniform(0.0, 0.25), rng.uniform(0.45, 0.95))


def _smooth_noise(rng, h: int, w: int, cells: int) -> np.ndarray:
    g = rng.random((cells + 1, cells + 1)).astype(np.float32)
    return cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC)


def _fbm(rng, h: int, w: int, base: int = 3, octaves: int = 4) -> np.ndarray:
    out, amp, total, cells = np.zeros((h, w), np.float32), 1.0, 0.0, base
    for _ in range(octaves):
        out += amp * _smooth_noise(rng, h, w, min(cells, max(h, w)))
        total += amp
        amp *= 0.5
        cells *= 2
    out /= total
    return (out - out.min()) / max(float(out.max() - out.min()), 1e-6)


def _rect(img: np.ndarray, x0, y0, x1, y1, color, border: float = 0.0) -> None:
    h, w = img.shape[:2]
    xa, xb = int(np.clip(x0 * w, 0, w)), int(np.clip(x1 * w, 0, w))
    ya, yb = int(np.clip(y0 * h, 0, h)), int(np.clip(y1 * h, 0, h))
    if xb <= xa or yb <= ya:
        return
    img[ya:yb, xa:xb] = color
    if border > 0:
        t = max(1, int(border * w))
        frame = np.asarray(color) * 0.6
        img[ya:min(yb, ya + t), xa:xb] = frame
        img[max(ya, yb - t):yb, xa:xb] = frame
        img[ya:yb, xa:min(xb, xa + t)] = frame
        img[ya:yb, max(xa, xb - t):xb] = frame


def _ellipse(img: np.ndarray, cx, cy, rx, ry, color, alpha: float = 1.0) -> None:
    h, w = img.shape[:2]
    y, x = np.ogrid[0:h, 0:w]
    m = (((x + 0.5) / w - cx) / rx) ** 2 + (((y + 0.5) / h - cy) / ry) ** 2 <= 1.0
    img[m] = img[m] * (1 - alpha) + np.asarray(color, np.float32) * alpha


def indoor(rng, h: int, w: int) -> np.ndarray:
    wall = _wall_color(rng)
    y = (np.arange(h, dtype=np.float32) / h)[:, None, None]
    light = rng.uniform(-0.25, 0.25)
    img = np.broadcast_to(wall, (h, w, 3)) * (1.0 + light * (y - 0.5) * 2)
    img = img * (0.9 + 0.2 * _fbm(rng, h, w, 2, 3)[..., None])
    if rng.random() < 0.6:  # floor
        fy = rng.uniform(0.7, 0.95)
        _rect(img, 0, fy, 1, 1, _wall_color(rng) * 0.6)
    for _ in range(int(rng.integers(1, 5))):  # doors, windows, frames, shelves
        kind = rng.random()
        cx, cy = rng.uniform(0, 1), rng.uniform(0.1, 0.8)
        if kind < 0.3:                       # a door
            ww, hh = rng.uniform(0.15, 0.3), rng.uniform(0.5, 0.9)
            _rect(img, cx - ww / 2, 1 - hh, cx + ww / 2, 1.0, _wall_color(rng) * rng.uniform(0.5, 1.0), 0.01)
        elif kind < 0.55:                    # a window: bright sky or a dark night
            ww, hh = rng.uniform(0.15, 0.4), rng.uniform(0.15, 0.4)
            sky = _hsv(rng.uniform(0.55, 0.62), rng.uniform(0.05, 0.4), rng.uniform(0.7, 1.0)) \
                if rng.random() < 0.75 else _hsv(0.6, 0.3, 0.1)
            _rect(img, cx - ww / 2, cy - hh / 2, cx + ww / 2, cy + hh / 2, sky, 0.015)
        elif kind < 0.85:                    # a picture frame or poster
            ww, hh = rng.uniform(0.08, 0.25), rng.uniform(0.08, 0.25)
            _rect(img, cx - ww / 2, cy - hh / 2, cx + ww / 2, cy + hh / 2,
                  _hsv(rng.random(), rng.uniform(0.1, 0.7), rng.uniform(0.2, 0.9)), 0.01)
        else:                                # a shelf / cabinet
            ww, hh = rng.uniform(0.2, 0.5), rng.uniform(0.05, 0.3)
            _rect(img, cx - ww / 2, cy, cx + ww / 2, cy + hh, _wall_color(rng) * 0.5)
    if rng.random() < 0.4:  # a lamp's glow
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        cx, cy, r = rng.uniform(0, 1) * w, rng.uniform(0, 0.5) * h, rng.uniform(0.1, 0.4) * max(h, w)
        img = img + (np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r)) * rng.uniform(0.2, 0.6))[..., None]
    return img


def outdoor(rng, h: int, w: int) -> np.ndarray:
    y = (np.arange(h, dtype=np.float32) / h)[:, None, None]
    top = _hsv(rng.uniform(0.55, 0.63), rng.uniform(0.2, 0.6), rng.uniform(0.6, 1.0))
    low = _hsv(rng.uniform(0.55, 0.63), rng.uniform(0.0, 0.2), rng.uniform(0.8, 1.0))
    img = top + (low - top) * y
    img = np.ascontiguousarray(np.broadcast_to(img, (h, w, 3)))
    if rng.random() < 0.5:  # clouds
        c = _fbm(rng, h, w, 3, 4)
        img = img + (np.clip(c - 0.5, 0, 1) * rng.uniform(0.3, 0.8))[..., None]
    horizon = rng.uniform(0.3, 0.75)
    ground = _hsv(rng.uniform(0.08, 0.35), rng.uniform(0.2, 0.6), rng.uniform(0.2, 0.6))
    tex = _fbm(rng, h, w, 4, 4)[..., None]
    gy = int(horizon * h)
    img[gy:] = (ground * (0.7 + 0.6 * tex))[gy:]
    for _ in range(int(rng.integers(0, 4))):  # buildings with window grids
        x0, ww = rng.uniform(-0.1, 0.9), rng.uniform(0.1, 0.4)
        top_y = horizon - rng.uniform(0.1, 0.5)
        col = _hsv(rng.uniform(0.0, 0.12), rng.uniform(0.0, 0.4), rng.uniform(0.3, 0.85))
        _rect(img, x0, top_y, x0 + ww, horizon + 0.02, col)
        win = col * rng.uniform(0.3, 0.7)
        nx, ny = int(rng.integers(2, 6)), int(rng.integers(2, 8))
        for i in range(nx):
            for j in range(ny):
                wx = x0 + ww * (i + 0.25) / nx
                wy = top_y + (horizon - top_y) * (j + 0.25) / ny
                _rect(img, wx, wy, wx + ww * 0.5 / nx, wy + (horizon - top_y) * 0.5 / ny, win)
    for _ in range(int(rng.integers(0, 5))):  # foliage masses
        green = _hsv(rng.uniform(0.2, 0.38), rng.uniform(0.3, 0.8), rng.uniform(0.15, 0.55))
        cx, cy = rng.uniform(0, 1), horizon - rng.uniform(0.0, 0.2)
        mask = np.zeros((h, w, 3), np.float32)
        _ellipse(mask, cx, cy, rng.uniform(0.08, 0.3), rng.uniform(0.08, 0.35), (1, 1, 1))
        leaf = 0.7 + 0.6 * _fbm(rng, h, w, 8, 3)[..., None]
        img = img * (1 - mask) + mask * green * leaf
    return img


def crowd(rng, h: int, w: int) -> np.ndarray:
    img = indoor(rng, h, w) if rng.random() < 0.5 else outdoor(rng, h, w)
    for _ in range(int(rng.integers(1, 6))):  # people behind the subject
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0.2, 0.7), rng.uniform(0.05, 0.14)
        shirt = _hsv(rng.random(), rng.uniform(0.0, 0.8), rng.uniform(0.1, 0.9))
        _ellipse(img, cx, cy + 3.2 * r, 2.2 * r, 2.4 * r, shirt)
        skin = _hsv(rng.uniform(0.03, 0.09), rng.uniform(0.25, 0.6), rng.uniform(0.25, 0.95))
        _ellipse(img, cx, cy, r * 0.8, r, skin)
        hair = _hsv(rng.uniform(0.03, 0.1), rng.uniform(0.2, 0.7), rng.uniform(0.03, 0.5))
        _ellipse(img, cx, cy - 0.45 * r, r * 0.85, r * 0.6, hair)
    for _ in range(int(rng.integers(0, 12))):  # bokeh: out-of-focus lights
        c = _hsv(rng.random(), rng.uniform(0.0, 0.6), 1.0)
        _ellipse(img, rng.uniform(0, 1), rng.uniform(0, 1), *(rng.uniform(0.01, 0.05),) * 2, c, rng.uniform(0.3, 0.8))
    return img


PAINTERS = {"indoor": indoor, "outdoor": outdoor, "crowd": crowd}


def draw_scene(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """One photo-like background (H, W, 3) uint8: a scene, out of focus, with grain."""
    h, w = max(16, height // 2), max(16, width // 2)   # painted at half size: structures are large
    img = PAINTERS[KINDS[int(rng.integers(len(KINDS)))]](rng, h, w).astype(np.float32)
    grey = img.mean(2, keepdims=True)
    img = grey + (img - grey) * rng.uniform(0.6, 1.0)           # photos are less saturated than paint
    img = cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)
    sigma = rng.uniform(0.5, 4.0) * max(height, width) / 128.0  # depth of field
    img = cv2.GaussianBlur(img, (0, 0), sigma)
    img = img + rng.normal(0, rng.uniform(0.002, 0.01), img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


class SceneBackgrounds(TexturePool):
    """A pool of ``draw_scene`` backgrounds per process (drawn on first use from a fixed
    seed, so the same on every machine and worker), each image a random crop, flip and
    resize of one; ``pool_size=0`` draws a fresh scene per image."""

    _POOLS: ClassVar[dict[tuple, list]] = {}
    _POOL_SEED = 0x7363656E

    def __init__(self, pool_size: int = 1024) -> None:
        self.pool_size = pool_size

    def draw_pool_texture(self, side: int, j: int) -> np.ndarray:
        return draw_scene(np.random.default_rng([self._POOL_SEED, side, j]), side, side)

    def sample(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        if self.pool_size == 0:
            return draw_scene(rng, height, width)
        side = self.pool_side(height, width)
        u = rng.random(5)
        tex = self.pool_texture(side, int(u[0] * self.pool_size))
        crop = side * (0.75 + 0.25 * u[1])
        ch, cw = max(1, round(crop * height / max(height, width))), max(1, round(crop * width / max(height, width)))
        y0, x0 = int(u[2] * (side - ch + 1)), int(u[3] * (side - cw + 1))
        img = cv2.resize(tex[y0:y0 + ch, x0:x0 + cw], (width, height), interpolation=cv2.INTER_LINEAR)
        return cv2.flip(img, 1) if u[4] < 0.5 else img


class MixedBackgrounds:
    """Half the images from each of two sources (the choice drawn from the image's rng)."""

    def __init__(self, a, b) -> None:
        self.a, self.b = a, b

    @property
    def sources(self) -> tuple:
        """The two sources (``texture_pools`` reads their pools)."""
        return self.a, self.b

    def sample(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        return (self.a if rng.random() < 0.5 else self.b).sample(rng, height, width)
