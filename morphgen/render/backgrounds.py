"""Backgrounds behind the rendered face: image folders, procedural textures, plain colours.

Every source implements ``sample(rng, height, width) -> (H, W, 3) uint8 RGB`` and draws
all its randomness from the numpy Generator it is given, so a dataset is reproducible
from its seed whatever the process layout. ``sample_batch`` stacks B of them.

* :class:`FolderBackgrounds`: any nested image files under a folder (the Describable
  Textures Dataset layout ``dtd/images/<class>/*.jpg`` works as is), sorted so the
  same seed picks the same files on every machine. Each file is decoded and resized
  once (shorter side = ``pool_scale`` x the render size) and kept in memory up to a
  budget; a sample is a random crop (random scale and position, random flip) resized to
  the render size. Decoding JPEGs per image costs about 1.3 ms at 128 px versus 0.1 ms
  from the pool (measured on the 2-core VM). Unreadable files are skipped with a warning and
  counted, never a crash in the middle of a run.
* :class:`ProceduralBackgrounds`: built-in textures when no folder is given -- fractal
  value noise, stripes, blobs, gradients and checkers in varied colours -- so the
  network never sees one constant backdrop and never learns the face/background
  boundary from it. A pool of them is drawn once per process and varied per image
  (crop, flip/rotation, channel order), as the folder source varies its pooled files.
* :class:`PlainBackground`: one fixed colour, or a random uniform colour per image.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import ClassVar, Protocol, Sequence

import cv2
import numpy as np

from ..errors import ConfigError, DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class BackgroundSource(Protocol):
    def sample(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        """One (height, width, 3) uint8 RGB background."""


def sample_batch(source: BackgroundSource, rng: np.random.Generator, batch: int, height: int, width: int) -> np.ndarray:
    """(B, H, W, 3) uint8 backgrounds, drawn one after another from ``rng``."""
    out = np.empty((batch, height, width, 3), dtype=np.uint8)
    for i in range(batch):
        out[i] = source.sample(rng, height, width)
    return out


# --------------------------------------------------------------------------------------
# folder of images
# --------------------------------------------------------------------------------------
class FolderBackgrounds:
    """Random crops of the images found (recursively) under ``root``.

    pool_scale: images are kept with their shorter side = pool_scale * max(H, W) of the
        requested size (2 by default: enough room for crops at varied scales).
    max_pool_mb: memory budget of the pool; once full, further files are decoded on
        every use (slower, same results).
    crop_scale: range of the crop's side as a fraction of the pooled image's shorter side.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        pool_scale: float = 2.0,
        max_pool_mb: float = 1024.0,
        crop_scale: tuple[float, float] = (0.4, 1.0),
        flip: bool = True,
    ) -> None:
        self.root = Path(root)
        if not self.root.exists():
            raise DataError(f"background folder {self.root} does not exist: give a folder of images, or omit it for procedural backgrounds")
        if not self.root.is_dir():
            raise DataError(f"background path {self.root} is not a folder: give a folder of images (searched recursively)")
        files = sorted(
            (p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()),
            key=lambda p: p.relative_to(self.root).as_posix(),
        )
        if not files:
            raise DataError(
                f"background folder {self.root} holds no image files ({', '.join(IMAGE_EXTENSIONS)}): add images or omit it for procedural backgrounds"
            )
        self.files: list[Path] = files
        if not (1.0 <= pool_scale <= 8.0):
            raise ConfigError(f"background pool_scale = {pool_scale} is out of range: use 1 to 8")
        if not (0 < crop_scale[0] <= crop_scale[1] <= 1.0):
            raise ConfigError(f"background crop_scale {crop_scale} must satisfy 0 < low <= high <= 1")
        self.pool_scale = pool_scale
        self.max_pool_bytes = int(max_pool_mb * 2**20)
        self.crop_scale = crop_scale
        self.flip = flip
        self._pool: dict[tuple[int, int], np.ndarray] = {}
        self._pool_bytes = 0
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.files)

    @property
    def skipped(self) -> int:
        """How many files were found unreadable so far (each warned about once)."""
        return len(self._bad)

    def _load(self, i: int, side: int) -> np.ndarray | None:
        key = (i, side)
        img = self._pool.get(key)
        if img is not None:
            return img
        path = self.files[i]
        try:
            data = np.fromfile(str(path), dtype=np.uint8)
            img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        except FileNotFoundError:  # listed when the run began: the folder changed under it
            raise DataError(f"background image {path} was removed during the run: restore it") from None
        except (OSError, cv2.error):
            img = None
        if img is None or img.ndim != 3 or min(img.shape[:2]) < 2:
            self._bad.add(i)
            warnings.warn(
                f"background image {path} is unreadable or under 2 px and is skipped "
                f"({len(self._bad)} skipped so far of {len(self.files)})",
                RuntimeWarning,
                stacklevel=3,
            )
            return None
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        h, w = img.shape[:2]
        s = side / min(h, w)
        if abs(s - 1.0) > 1e-3:
            img = cv2.resize(img, (max(side, round(w * s)), max(side, round(h * s))), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        img = np.ascontiguousarray(img)
        if self._pool_bytes + img.nbytes <= self.max_pool_bytes:
            self._pool[key] = img
            self._pool_bytes += img.nbytes
        return img

    def preload(self, height: int, width: int) -> int:
        """Decode every file into the pool now (within the budget); returns how many are usable."""
        side = self._side(height, width)
        for i in range(len(self.files)):
            if i not in self._bad:
                self._load(i, side)
        return len(self.files) - len(self._bad)

    def _side(self, height: int, width: int) -> int:
        return int(round(self.pool_scale * max(height, width)))

    def sample(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        side = self._side(height, width)
        n = len(self.files)
        # randomness per draw is fixed in count (index, scale, position, flip), so a
        # skipped file only changes the images that would have used it
        for _ in range(4 * n + 16):
            i = int(rng.integers(n))
            u = rng.random(4)
            if i in self._bad:
                continue
            img = self._load(i, side)
            if img is None:
                continue
            return self._crop(img, u, height, width)
        raise DataError(f"no readable image in background folder {self.root} ({self.skipped} unreadable or under 2 px): replace or remove those files")

    def _crop(self, img: np.ndarray, u: np.ndarray, height: int, width: int) -> np.ndarray:
        ih, iw = img.shape[:2]
        aspect = width / height
        lo, hi = self.crop_scale
        frac = lo + (hi - lo) * u[0]
        ch = max(2, int(round(frac * min(ih, iw / aspect))))
        cw = max(2, min(iw, int(round(ch * aspect))))
        ch = min(ih, ch)
        y0 = int(u[1] * (ih - ch + 1)) if ih > ch else 0
        x0 = int(u[2] * (iw - cw + 1)) if iw > cw else 0
        crop = img[y0 : y0 + ch, x0 : x0 + cw]
        out = cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA if ch > height else cv2.INTER_LINEAR)
        if self.flip and u[3] < 0.5:
            out = out[:, ::-1]
        return np.ascontiguousarray(out)


# --------------------------------------------------------------------------------------
# procedural textures
# --------------------------------------------------------------------------------------
def _random_color(rng: np.random.Generator) -> np.ndarray:
    """A colour in linear [0, 1] RGB with varied hue, saturation and brightness."""
    h = rng.random() * 6.0
    s = rng.uniform(0.0, 0.9)
    v = rng.uniform(0.1, 1.0)
    i = int(h) % 6
    f = h - int(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.array(rgb, dtype=np.float32)


def _value_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)


def _fbm(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    base = int(rng.integers(2, 6))
    octaves = int(rng.integers(3, 6))
    gain = rng.uniform(0.35, 0.65)
    out = np.zeros((height, width), np.float32)
    amp, total, cells = 1.0, 0.0, base
    for _ in range(octaves):
        out += amp * _value_noise(rng, height, width, min(cells, max(height, width)))
        total += amp
        amp *= gain
        cells *= 2
    out /= total
    lo, hi = out.min(), out.max()
    return (out - lo) / max(hi - lo, 1e-6)


def _coords(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    s = float(max(height, width))
    return x / s, y / s


def _stripes(rng, height, width):
    x, y = _coords(rng, height, width)
    a = rng.uniform(0, np.pi)
    freq = rng.uniform(2.0, 20.0)
    t = (np.cos(a) * x + np.sin(a) * y) * freq + rng.random()
    if rng.random() < 0.5:
        return (0.5 + 0.5 * np.sin(2 * np.pi * t)).astype(np.float32)
    duty = rng.uniform(0.2, 0.8)
    return ((t % 1.0) < duty).astype(np.float32)


def _blobs(rng, height, width):
    s = float(max(height, width))
    x = np.arange(width, dtype=np.float32) / s
    y = np.arange(height, dtype=np.float32) / s
    out = np.zeros((height, width), np.float32)
    for _ in range(int(rng.integers(3, 12))):
        cx, cy = rng.random(2) * [width / s, height / s]
        r = rng.uniform(0.03, 0.3)
        # A gaussian blob is separable: an outer product of two 1-D profiles.
        gx = np.exp(-((x - cx) ** 2) / (2 * r * r))
        gy = np.exp(-((y - cy) ** 2) / (2 * r * r))
        out += np.float32(rng.uniform(0.3, 1.0)) * np.outer(gy, gx)
    return np.clip(out, 0.0, 1.0)


def _gradient(rng, height, width):
    x, y = _coords(rng, height, width)
    if rng.random() < 0.3:  # radial
        cx, cy = rng.random(2)
        t = np.sqrt((x - cx) ** 2 + (y - cy) ** 2) * rng.uniform(0.8, 2.0)
    else:
        a = rng.uniform(0, 2 * np.pi)
        t = np.cos(a) * x + np.sin(a) * y
    t = t - t.min()
    return (t / max(float(t.max()), 1e-6)).astype(np.float32)


def _checker(rng, height, width):
    x, y = _coords(rng, height, width)
    n = rng.uniform(3.0, 16.0)
    a = rng.uniform(0, np.pi / 2)
    u = np.cos(a) * x - np.sin(a) * y
    v = np.sin(a) * x + np.cos(a) * y
    return ((np.floor(u * n) + np.floor(v * n)) % 2).astype(np.float32)


PATTERNS = {"fbm": _fbm, "stripes": _stripes, "blobs": _blobs, "gradient": _gradient, "checker": _checker}


_CHANNEL_ORDERS = ([0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0])
_ROTATIONS = (None, cv2.ROTATE_90_COUNTERCLOCKWISE, cv2.ROTATE_180, cv2.ROTATE_90_CLOCKWISE)


class TexturePool:
    """A per-process pool of ``pool_size`` square textures for each side, texture j of a
    side a pure function of (side, j) (:meth:`draw_pool_texture`, from a fixed seed), so
    every machine, worker and resume sees the same pool. A texture is drawn on first use,
    or drawn ahead by another process and handed in (:meth:`adopt`: the dataset writer's
    :class:`..dataset.workers.PoolPrefill`, which draws while the command sets up)."""

    _POOLS: ClassVar[dict[tuple, list]]  # each subclass's: (pool id, pool_size, side) -> textures or None
    pool_size: int

    @staticmethod
    def pool_side(height: int, width: int) -> int:
        """The pool's side for images of (height, width): at most 256 px."""
        return min(256, max(16, height, width))

    def draw_pool_texture(self, side: int, j: int) -> np.ndarray:
        """Texture j of the pool at this side, drawn fresh: (side, side, 3) uint8."""
        raise NotImplementedError

    def _pool_id(self) -> tuple:
        return ()

    def _pool(self, side: int) -> list:
        key = (self._pool_id(), self.pool_size, side)
        pool = self._POOLS.get(key)
        if pool is None:
            pool = self._POOLS[key] = [None] * self.pool_size
        return pool

    def pool_texture(self, side: int, j: int) -> np.ndarray:
        """Texture j of the pool at this side, drawn on first use (small runs pay only for
        the textures they use)."""
        pool = self._pool(side)
        if pool[j] is None:
            pool[j] = self.draw_pool_texture(side, j)
        return pool[j]

    def adopt(self, side: int, textures: np.ndarray, drawn: np.ndarray) -> int:
        """Take the textures j with ``drawn[j]`` from ``textures`` (P, side, side, 3), drawn
        by :meth:`draw_pool_texture` elsewhere, into this process's pool (read-only views:
        nothing writes a pooled texture); returns how many were new."""
        pool = self._pool(side)
        new = 0
        for j in np.flatnonzero(drawn[: self.pool_size]):
            if pool[j] is None:
                view = textures[j]
                view.flags.writeable = False
                pool[j] = view
                new += 1
        return new


def texture_pools(spec: str | os.PathLike | None) -> list[TexturePool]:
    """The texture pools that the background source of ``spec`` (as
    :func:`make_background_source` reads it) draws from: both of ``mixed``, one of
    ``procedural`` or ``scenes``, none for folders and colours (nor with pool_size 0)."""
    if spec is not None and str(spec) not in ("procedural", "scenes", "mixed"):
        return []  # a folder is not even listed here: the renderer's set-up reads it
    source = make_background_source(spec)
    parts = getattr(source, "sources", (source,))
    return [p for p in parts if isinstance(p, TexturePool) and p.pool_size > 0]


class ProceduralBackgrounds(TexturePool):
    """Built-in textures, deterministic from the rng.

    A texture is a pattern mapped between two random colours, optionally mixed with a
    second pattern and low-contrast noise. Drawing one costs about 0.7 ms at 128 px, more
    than rendering the face, so a pool of ``pool_size`` textures is kept per process, at
    the image size (at most 256 px), each drawn from a fixed seed when first used (the
    same pool on every machine and worker). An image takes one of them through a random
    crop (75-100 % of the side: little enlargement, so backgrounds stay about as sharp as
    fresh ones), one of the 8 flips/rotations and a channel permutation, then a resize to
    the requested size: about 0.1 ms. ``pool_size=0`` draws a fresh texture per image.

    kinds: which patterns to draw from (names in ``PATTERNS``).
    """

    _POOLS: ClassVar[dict[tuple, list]] = {}  # (kinds, pool_size, side) -> P textures (side, side, 3) uint8 or None, per process
    _POOL_SEED = 0x6D6F7270

    def __init__(self, kinds: Sequence[str] = tuple(PATTERNS), pool_size: int = 1024) -> None:
        unknown = [k for k in kinds if k not in PATTERNS]
        if unknown or not kinds:
            raise ConfigError(f"unknown procedural background kind(s) {unknown or kinds}: use some of {', '.join(PATTERNS)}")
        if pool_size < 0:
            raise ConfigError(f"procedural background pool size must be >= 0, got {pool_size}")
        self.kinds = tuple(kinds)
        self.pool_size = pool_size

    def sample(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        # Patterns are drawn at half resolution and upsampled: 4x fewer pixels to compute,
        # and a background behind a face reads as slightly out of focus, as in photos.
        if self.pool_size == 0:
            return self._draw(rng, max(16, height // 2), max(16, width // 2), height, width)
        side = self.pool_side(height, width)
        u = rng.random(6)  # one draw for all choices: texture, rotation/flip, crop, channels
        tex = self.pool_texture(side, int(u[0] * self.pool_size))
        k = int(u[1] * 8)
        rot, hh, ww = k % 4, *((width, height) if k % 2 else (height, width))  # size before the rotation
        crop = side * (0.75 + 0.25 * u[2])
        ch, cw = max(1, round(crop * hh / max(hh, ww))), max(1, round(crop * ww / max(hh, ww)))
        y0, x0 = int(u[3] * (side - ch + 1)), int(u[4] * (side - cw + 1))
        # Crop and resize first (cv2 reads the slice in place), then turn and flip the
        # result: a rotated view would cost a strided copy before cv2 could read it.
        img = cv2.resize(tex[y0:y0 + ch, x0:x0 + cw], (ww, hh), interpolation=cv2.INTER_LINEAR)
        if rot:
            img = cv2.rotate(img, _ROTATIONS[rot])
        if k >= 4:
            img = cv2.flip(img, 1)
        return cv2.merge([img[..., c] for c in _CHANNEL_ORDERS[int(u[5] * 6)]])

    def _pool_id(self) -> tuple:
        return self.kinds

    def draw_pool_texture(self, side: int, j: int) -> np.ndarray:
        # drawn at half size like a fresh background, then scaled to the pool's
        rng = np.random.default_rng([self._POOL_SEED, side, j])
        return self._draw(rng, max(16, side // 2), max(16, side // 2), side, side)

    def _draw(self, rng: np.random.Generator, h: int, w: int, height: int, width: int) -> np.ndarray:
        """One fresh texture: the pattern at (h, w), resized to (height, width), as uint8."""
        img = self._pattern(rng, h, w)
        if (h, w) != (height, width):
            img = cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)
        return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)

    def _pattern(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        kind = self.kinds[int(rng.integers(len(self.kinds)))]
        t = PATTERNS[kind](rng, height, width)
        c0, c1 = _random_color(rng), _random_color(rng)
        img = c0 + t[..., None] * (c1 - c0)
        if rng.random() < 0.5:  # a second layer over part of the image
            k2 = self.kinds[int(rng.integers(len(self.kinds)))]
            t2 = PATTERNS[k2](rng, height, width)
            c2 = _random_color(rng)
            alpha = rng.uniform(0.2, 0.6)
            img = img * (1 - alpha * t2[..., None]) + alpha * t2[..., None] * c2
        if rng.random() < 0.5:  # fine grain
            img = img + (_fbm(rng, height, width)[..., None] - 0.5) * rng.uniform(0.02, 0.15)
        return img.astype(np.float32)


class PlainBackground:
    """One colour (RGB in [0, 1]) for every image, or a random colour per image when None."""

    def __init__(self, color: Sequence[float] | None = (0.0, 0.0, 0.0)) -> None:
        if color is not None:
            c = np.asarray(color, dtype=np.float64)
            if c.shape != (3,) or np.any(c < 0) or np.any(c > 1):
                raise ConfigError(f"plain background colour {color!r} must be three values in [0, 1]")
        self.color = None if color is None else np.asarray(color, dtype=np.float64)

    def sample(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        c = _random_color(rng) if self.color is None else self.color
        px = (np.clip(c, 0, 1) * 255.0 + 0.5).astype(np.uint8)
        return np.broadcast_to(px, (height, width, 3)).copy()


def make_background_source(spec: str | os.PathLike | None) -> BackgroundSource:
    """Background source from a user option.

    None or "procedural" -> :class:`ProceduralBackgrounds`; "scenes" -> photo-like
    rooms, streets and crowds out of focus (``scene_backgrounds``); "mixed" -> half of
    each; "plain" -> a random colour per image; "color:R,G,B" (0-255 or 0-1 values) ->
    that colour; anything else is a folder of images.
    """
    if spec is None or str(spec) == "procedural":
        return ProceduralBackgrounds()
    s = str(spec)
    if s in ("scenes", "mixed"):
        from .scene_backgrounds import MixedBackgrounds, SceneBackgrounds
        return SceneBackgrounds() if s == "scenes" else MixedBackgrounds(ProceduralBackgrounds(), SceneBackgrounds())
    if s == "plain":
        return PlainBackground(None)
    if s.startswith("color:"):
        try:
            vals = [float(v) for v in s[len("color:") :].split(",")]
        except ValueError:
            vals = []
        if len(vals) != 3 or not all(0 <= v <= 255 for v in vals):  # (nan fails too)
            raise ConfigError(f"background {s!r} is not a colour: write color:R,G,B (0-255 or 0-1 values)")
        c = np.asarray(vals)
        if c.max() > 1.0:
            c = c / 255.0
        return PlainBackground(tuple(c))
    return FolderBackgrounds(s)
