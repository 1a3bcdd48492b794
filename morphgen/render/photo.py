"""Camera and photo realism in image space: what a real camera, its processing and the
photo's later life do to a picture, applied to the finished render.

Why: a network trained on clean renders learns cues photos do not have (perfect focus,
no noise, no compression, saturated colours) and fails on real faces. DigiFace-1M found
aggressive image-space augmentation closed most of the synthetic-to-real gap. These
effects belong to the *scene* (not only to a trainer's augmentation) so `morphgen
render`, `morphgen preview` and online training share them, and every image records the
effects it got in its params.

Effects, in the order a photo meets them (each with its own probability; a spec such as
``realistic,grey=0,jpeg=0.8`` sets them, ``off`` disables all):

| name | what | parameters drawn per image |
|---|---|---|
| occlusion | a hand / object / hair-like patch over part of the face | shape, box, angle, colour |
| blur | defocus (Gaussian) | sigma |
| motion | linear motion blur | length, angle |
| vignette | darker corners | strength |
| color | brightness, contrast, saturation | three factors |
| white_balance | per-channel gains | three gains |
| gamma | tone curve | exponent |
| lowres | down- then up-sampling | the small side |
| noise | sensor noise (per channel, Gaussian) | sigma, a noise seed |
| grey | greyscale (ORL, Yale and many real sets are grey) | - |
| jpeg | re-compression (8x8 DCT, 4:2:0 chroma, IJG tables) | quality |
| crop | a tight crop: beyond a box around the face the picture ends, and an aligner pads it with its edge (or black) | box, fill |

Sizes scale with the image (sigmas and lengths are drawn at 128 px and scaled), so a
dataset looks alike at any ``--size``. The numpy path (CPU renderer) and the torch path
(GPU renderer) implement the same maths: the noise comes from a counter-based hash of
(noise seed, pixel), the JPEG from our own DCT, so both give the same pixels within a
grey level or two. Sampling happens once, on the CPU (``PhotoConfig.sample``), so an
image's effects are a pure function of (seed, identity, sample).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import is_finite_number, shown
from ..probspec import parse_probabilities, to_spec

EFFECTS = ("occlusion", "blur", "motion", "vignette", "color", "white_balance", "gamma", "lowres", "noise", "grey",
           "jpeg", "crop")
PRESETS: dict[str, dict[str, float]] = {
    "off": {},
    # The preset the transfer experiments use (docs/experiments/transfer): every effect
    # on some images, none on about a tenth of them.
    # Most benchmark photos are sharp and in colour: each effect hits a minority of images.
    "realistic": {"occlusion": 0.1, "blur": 0.2, "motion": 0.05, "vignette": 0.1, "color": 0.5,
                  "white_balance": 0.4, "gamma": 0.2, "lowres": 0.2, "noise": 0.3, "grey": 0.08, "jpeg": 0.4,
                  "crop": 0.3},
}
_LOWRES_FRACTIONS = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7)   # a few sizes: the GPU path groups by them


@dataclass(frozen=True)
class PhotoConfig:
    """Probability of each effect (0 = never)."""
    probs: tuple[tuple[str, float], ...] = ()

    @classmethod
    def parse(cls, spec) -> "PhotoConfig":
        """'off', a preset name, or a preset followed by ``effect=probability`` overrides
        (``realistic,grey=0.3,jpeg=0``); a bare ``effect=p`` list starts from off."""
        if isinstance(spec, PhotoConfig):
            return spec
        return cls(parse_probabilities(spec, EFFECTS, PRESETS, "--photo"))

    @property
    def active(self) -> bool:
        return bool(self.probs)

    def to_spec(self) -> str:
        """The canonical spec (what manifests record): 'off' or 'effect=p,...'."""
        return to_spec(self.probs)

    def sample(self, rng: np.random.Generator) -> dict:
        """The effects of one image, as a JSON-able dict ({} when it drew none). Draws a
        fixed number of numbers per effect, so changing one probability never changes the
        others' draws."""
        probs = dict(self.probs)
        out: dict = {}
        for e in EFFECTS:
            u = rng.random(8)  # every effect consumes 8 draws whether used or not
            if u[0] >= probs.get(e, 0.0):
                continue
            out[e] = _draw(e, u[1:])
        return out


def _draw(effect: str, u: np.ndarray):
    """One effect's parameters from 7 uniform numbers (sizes at 128 px)."""
    u = [float(x) for x in u]  # plain floats: the params record is JSON
    if effect == "occlusion":
        return {"shape": "ellipse" if u[0] < 0.5 else "box", "cx": round(0.25 + 0.5 * u[1], 4),
                "cy": round(0.3 + 0.55 * u[2], 4), "rx": round(0.06 + 0.16 * u[3], 4),
                "ry": round(0.04 + 0.14 * u[4], 4), "angle": round(180 * u[5], 2), "color": _occluder_color(u[6])}
    if effect == "blur":
        return round(0.4 + 1.0 * u[0], 3)                                       # sigma px at 128
    if effect == "motion":
        return {"length": round(3 + 6 * u[0], 2), "angle": round(180 * u[1], 2)}
    if effect == "vignette":
        return round(0.15 + 0.45 * u[0], 3)
    if effect == "color":
        return {"brightness": round(0.8 + 0.4 * u[0], 3), "contrast": round(0.8 + 0.4 * u[1], 3),
                "saturation": round(0.7 + 0.6 * u[2], 3)}
    if effect == "white_balance":
        return [round(0.92 + 0.16 * x, 3) for x in u[:3]]
    if effect == "gamma":
        return round(math.exp(math.log(0.7) + (math.log(1.5) - math.log(0.7)) * u[0]), 3)
    if effect == "lowres":
        return _LOWRES_FRACTIONS[int(u[0] * len(_LOWRES_FRACTIONS)) % len(_LOWRES_FRACTIONS)]
    if effect == "noise":
        return {"sigma": round(2 + 5 * u[0], 2), "seed": int(u[1] * 2**31)}
    if effect == "grey":
        return True
    if effect == "jpeg":
        return int(30 + 60 * u[0])
    if effect == "crop":  # the aligned 112 px crop spans about the central 70 % of a render
        return {"top": round(0.08 + 0.25 * u[0], 4), "bottom": round(0.78 + 0.22 * u[1], 4),
                "left": round(0.2 * u[2], 4), "right": round(1.0 - 0.2 * u[3], 4), "black": bool(u[4] < 0.3)}
    raise AssertionError(effect)


def _occluder_color(u: float) -> list[int]:
    """Skin-like (a hand), dark (hair, a phone) or a random grey-ish object colour."""
    if u < 0.4:
        k = u / 0.4
        return [int(90 + 140 * k), int(60 + 110 * k), int(45 + 95 * k)]
    if u < 0.7:
        v = int(15 + 60 * (u - 0.4) / 0.3)
        return [v, v, v + 5]
    v = int(60 + 180 * (u - 0.7) / 0.3)
    return [v, int(v * 0.95), int(v * 0.85)]


# ----------------------------------------------------------------------------- shared maths

_JPEG_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], np.float32).reshape(8, 8)
_JPEG_CHROMA = np.array([
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32, np.float32).reshape(8, 8)


def jpeg_tables(quality: int) -> tuple[np.ndarray, np.ndarray]:
    """IJG quantisation tables (luma, chroma) at `quality` (1-100)."""
    q = min(max(int(quality), 1), 100)
    scale = 5000.0 / q if q < 50 else 200.0 - 2.0 * q
    return tuple(np.clip(np.floor((t * scale + 50.0) / 100.0), 1, 255).astype(np.float32)
                 for t in (_JPEG_LUMA, _JPEG_CHROMA))


def _dct_matrix() -> np.ndarray:
    k = np.arange(8)[:, None]
    n = np.arange(8)[None, :]
    d = np.cos((2 * n + 1) * k * np.pi / 16) * np.sqrt(2 / 8)
    d[0] /= np.sqrt(2)
    return d.astype(np.float32)


_DCT = _dct_matrix()
_M32 = 0xFFFFFFFF


def _pcg_np(v: np.ndarray) -> np.ndarray:
    """PCG hash of uint32 values held in int64 (Jarzynski & Olano 2020), numpy."""
    state = (v * 747796405 + 2891336453) & _M32
    word = (((state >> ((state >> 28) + 4)) ^ state) * 277803737) & _M32
    return ((word >> 22) ^ word) & _M32


def noise_field_np(seed: int, n: int) -> np.ndarray:
    """n standard normal values, a pure function of (seed, index): Box-Muller on two hashed
    uniforms per value. The torch path computes the same numbers."""
    idx = np.arange(n, dtype=np.int64)
    base = (int(seed) * 0x9E3779B1) & _M32
    u1 = (_pcg_np((base + 2 * idx) & _M32).astype(np.float32) + 1.0) / np.float32(2**32 + 1)
    u2 = _pcg_np((base + 2 * idx + 1) & _M32).astype(np.float32) / np.float32(2**32)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(np.float32(2 * np.pi) * u2)


def gaussian_kernel(sigma: float) -> np.ndarray:
    r = max(1, int(math.ceil(3 * sigma)))
    t = np.arange(-r, r + 1, dtype=np.float32)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def motion_kernel(length: float, angle: float) -> np.ndarray:
    """A normalised line of `length` px at `angle` degrees, anti-aliased by supersampling."""
    r = max(1, int(math.ceil(length / 2)))
    size = 2 * r + 1
    k = np.zeros((size, size), np.float32)
    a = math.radians(angle)
    for t in np.linspace(-length / 2, length / 2, 8 * size):
        x, y = r + t * math.cos(a), r - t * math.sin(a)
        x0, y0 = int(math.floor(x)), int(math.floor(y))
        fx, fy = x - x0, y - y0
        for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
            if 0 <= x0 + dx < size and 0 <= y0 + dy < size:
                k[y0 + dy, x0 + dx] += w
    return k / k.sum()


def occlusion_mask(occ: dict, h: int, w: int) -> np.ndarray:
    """(H, W) coverage in [0, 1] of the occluder, with a one-pixel soft edge."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return _occ_coverage(occ, x + 0.5, y + 0.5, h, w, np)


def _occ_coverage(occ: dict, x, y, h: int, w: int, xp):
    s = float(max(h, w))
    cx, cy = occ["cx"] * w, occ["cy"] * h
    rx, ry = max(occ["rx"] * s, 1.0), max(occ["ry"] * s, 1.0)
    a = math.radians(occ["angle"])
    u = (x - cx) * math.cos(a) + (y - cy) * math.sin(a)
    v = -(x - cx) * math.sin(a) + (y - cy) * math.cos(a)
    if occ["shape"] == "ellipse":
        d = (xp.sqrt((u / rx) ** 2 + (v / ry) ** 2) - 1.0) * min(rx, ry)   # ~ signed px distance
    else:
        d = xp.maximum(xp.abs(u) - rx, xp.abs(v) - ry)
    return xp.clip(0.5 - d, 0.0, 1.0)


def _vignette_gain(strength: float, h: int, w: int, xp, like=None):
    if xp is np:
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    else:
        y, x = xp.meshgrid(xp.arange(h, dtype=like.dtype, device=like.device),
                           xp.arange(w, dtype=like.dtype, device=like.device), indexing="ij")
    r2 = (((x + 0.5) / w - 0.5) ** 2 + ((y + 0.5) / h - 0.5) ** 2) * 2.0   # 1 at the corners
    return 1.0 - strength * r2


# ----------------------------------------------------------------------------- numpy (CPU)

def check_effects(fx: dict) -> None:
    """Raise ValueError (TypeError where an object is not one) for what :func:`apply_photo`
    would misread, fail on deep inside a render, or spend unbounded time and memory on, in
    a recorded (``--from-params``) image's effects: an unknown effect, a missing field, a
    value of the wrong type or out of its range. The ranges hold what `PhotoConfig.sample` draws with a wide margin (an
    edited record may push an effect further), and bound each effect's cost: a motion
    streak of 100,000 px made a kernel of 40 GB."""
    if not isinstance(fx, dict):
        raise TypeError(f"a {type(fx).__name__}, not an object")
    unknown = sorted(set(fx) - set(EFFECTS))
    if unknown:
        raise ValueError(f"unknown effect {unknown[0]!r}; the effects are {', '.join(EFFECTS)}")
    for effect, value in fx.items():
        _check_field(effect, value, _FIELDS[effect])
    crop = fx.get("crop")
    if crop is not None and not (crop["top"] < crop["bottom"] and crop["left"] < crop["right"]):
        raise ValueError("crop must have top < bottom and left < right")


def _check_field(name: str, value, spec) -> None:
    """One field of a recorded effect against its `_FIELDS` spec: a dict (an object of
    those fields), a list (that many values), or a tuple: ``("number", lo, hi)`` (finite, in
    [lo, hi]), ``("positive", lo, hi)`` (the same, above lo: the effect divides by it),
    ``("int", lo, hi)``, ``("true",)`` or ``("word", *allowed)``."""
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            raise TypeError(f"{name} {shown(value)} is not an object of {', '.join(spec)}")
        missing = [f for f in spec if f not in value]
        if missing:
            raise ValueError(f"{name} lacks {missing[0]!r}")
        for field, field_spec in spec.items():
            _check_field(f"{name} {field}", value[field], field_spec)
        return
    if isinstance(spec, list):
        if not isinstance(value, (list, tuple)) or len(value) != len(spec):
            raise ValueError(f"{name} {shown(value)} is not a list of {len(spec)} numbers")
        for v, item_spec in zip(value, spec):
            _check_field(name, v, item_spec)
        return
    kind, *bounds = spec
    if kind == "word":
        if value not in bounds:
            raise ValueError(f"{name} {shown(value)} is neither {' nor '.join(map(repr, bounds))}")
        return
    if kind == "true":
        if value is not True:
            raise ValueError(f"{name} {shown(value)} is not true (leave the effect out for none)")
        return
    if not is_finite_number(value):
        raise ValueError(f"{name} {shown(value)} is not a number")
    if kind == "int" and not float(value).is_integer():
        raise ValueError(f"{name} {shown(value)} is not a whole number")
    lo, hi = bounds
    if not (lo < value if kind == "positive" else lo <= value) or value > hi:
        raise ValueError(f"{name} {shown(value)} is out of range: use {'above ' if kind == 'positive' else ''}{lo:g} to {hi:g}")


# The fields of each recorded effect (`_check_field`; sizes in pixels at 128 px, as drawn).
_FIELDS: dict = {
    "occlusion": {"shape": ("word", "ellipse", "box"), "cx": ("number", -1.0, 2.0), "cy": ("number", -1.0, 2.0),
                  "rx": ("number", 0.0, 2.0), "ry": ("number", 0.0, 2.0), "angle": ("number", -360.0, 360.0),
                  "color": [("number", 0.0, 255.0)] * 3},
    "blur": ("positive", 0.0, 16.0),
    "motion": {"length": ("number", 0.0, 64.0), "angle": ("number", -360.0, 360.0)},
    "vignette": ("number", 0.0, 1.0),
    "color": {"brightness": ("number", 0.0, 4.0), "contrast": ("number", 0.0, 4.0),
              "saturation": ("number", 0.0, 4.0)},
    "white_balance": [("number", 0.0, 4.0)] * 3,
    "gamma": ("positive", 0.0, 10.0),
    "lowres": ("positive", 0.0, 1.0),
    "noise": {"sigma": ("number", 0.0, 255.0), "seed": ("int", 0, 2**32 - 1)},
    "grey": ("true",),
    "jpeg": ("int", 1, 100),
    "crop": {"top": ("number", 0.0, 1.0), "bottom": ("number", 0.0, 1.0), "left": ("number", 0.0, 1.0),
             "right": ("number", 0.0, 1.0), "black": ("word", True, False)},
}


def apply_photo(img: np.ndarray, fx: dict | None) -> np.ndarray:
    """The effects `fx` (from ``PhotoConfig.sample``) on one uint8 (H, W, 3) RGB image."""
    if not fx:
        return img
    h, w = img.shape[:2]
    k = max(h, w) / 128.0
    x = img.astype(np.float32)
    if "occlusion" in fx:
        occ = fx["occlusion"]
        m = occlusion_mask(occ, h, w)[..., None]
        shade = 0.85 + 0.3 * (np.mgrid[0:h, 0:w][0].astype(np.float32)[..., None] / h)   # light from above
        x = x * (1 - m) + m * np.asarray(occ["color"], np.float32) * shade
    if "blur" in fx:
        g = gaussian_kernel(fx["blur"] * k)
        x = cv2.sepFilter2D(x, -1, g, g, borderType=cv2.BORDER_REFLECT_101)
    if "motion" in fx:
        x = cv2.filter2D(x, -1, motion_kernel(fx["motion"]["length"] * k, fx["motion"]["angle"]),
                         borderType=cv2.BORDER_REFLECT_101)
    if "vignette" in fx:
        x = x * _vignette_gain(fx["vignette"], h, w, np)[..., None]
    if "color" in fx:
        c = fx["color"]
        grey = x @ np.array([0.299, 0.587, 0.114], np.float32)
        x = grey[..., None] + (x - grey[..., None]) * c["saturation"]
        m = x.mean()
        x = ((x - m) * c["contrast"] + m) * c["brightness"]
    if "white_balance" in fx:
        x = x * np.asarray(fx["white_balance"], np.float32)
    if "gamma" in fx:
        x = 255.0 * (np.clip(x, 0, 255) / 255.0) ** fx["gamma"]
    if "lowres" in fx:  # a smaller sensor: anti-alias, sample down, interpolate back up (bilinear both ways)
        side, size = _lowres_size(fx["lowres"], h, w)
        g = gaussian_kernel(0.45 * min(h, w) / side)
        x = cv2.sepFilter2D(x, -1, g, g, borderType=cv2.BORDER_REFLECT_101)
        small = cv2.resize(x, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        x = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if "noise" in fx:
        x = x + fx["noise"]["sigma"] * noise_field_np(fx["noise"]["seed"], h * w * 3).reshape(h, w, 3)
    if "grey" in fx:
        g = np.clip(x, 0, 255) @ np.array([0.299, 0.587, 0.114], np.float32)
        x = np.repeat(g[..., None], 3, 2)
    if "jpeg" in fx:
        x = jpeg_np(np.clip(x, 0, 255), fx["jpeg"])
    if "crop" in fx:
        ys, xs, keep = _crop_index(fx["crop"], h, w, np)
        x = x[ys][:, xs] * (keep[..., None] if fx["crop"]["black"] else 1.0)
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def _lowres_size(frac: float, h: int, w: int) -> tuple[int, tuple[int, int]]:
    side = max(4, int(round(frac * min(h, w))))
    return side, (max(1, round(side * h / min(h, w))), max(1, round(side * w / min(h, w))))


def _crop_index(c: dict, h: int, w: int, xp, device=None):
    """Row and column sources (clamped into the kept box) and the box mask of a tight crop."""
    y0, y1 = int(round(c["top"] * h)), max(int(round(c["bottom"] * h)), int(round(c["top"] * h)) + 1)
    x0, x1 = int(round(c["left"] * w)), max(int(round(c["right"] * w)), int(round(c["left"] * w)) + 1)
    kw = {} if xp is np else {"device": device}
    ys = xp.clip(xp.arange(h, **kw), y0, y1 - 1)
    xs = xp.clip(xp.arange(w, **kw), x0, x1 - 1)
    yy, xx = xp.arange(h, **kw)[:, None], xp.arange(w, **kw)[None, :]
    keep = ((yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1)) * 1.0
    return ys, xs, keep


def _rgb_to_ycc(x, xp):
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = 128.0 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128.0 + 0.5 * r - 0.418688 * g - 0.081312 * b
    return y, cb, cr


def _ycc_to_rgb(y, cb, cr, xp):
    r = y + 1.402 * (cr - 128.0)
    g = y - 0.344136 * (cb - 128.0) - 0.714136 * (cr - 128.0)
    b = y + 1.772 * (cb - 128.0)
    return xp.stack([r, g, b], -1)


def _blocks_np(c: np.ndarray, q: np.ndarray) -> np.ndarray:
    """8x8 DCT, quantise with table q, inverse: one channel (H, W), H and W multiples of 8."""
    h, w = c.shape
    b = (c - 128.0).reshape(h // 8, 8, w // 8, 8).transpose(0, 2, 1, 3)
    coef = np.einsum("ij,abjk,lk->abil", _DCT, b, _DCT)
    coef = np.round(coef / q) * q
    b = np.einsum("ji,abjk,kl->abil", _DCT, coef, _DCT)
    return b.transpose(0, 2, 1, 3).reshape(h, w) + 128.0


def jpeg_np(x: np.ndarray, quality: int) -> np.ndarray:
    """Baseline JPEG's lossy steps on a float (H, W, 3) image in [0, 255]: YCbCr, 4:2:0
    chroma, 8x8 DCT quantised with the IJG tables at `quality`, and back."""
    h, w = x.shape[:2]
    ph, pw = -h % 16, -w % 16
    xp_ = np.pad(x, ((0, ph), (0, pw), (0, 0)), mode="edge")
    ql, qc = jpeg_tables(quality)
    y, cb, cr = _rgb_to_ycc(xp_, np)
    y = _blocks_np(y, ql)
    H, W = y.shape
    chroma = []
    for c in (cb, cr):
        sub = c.reshape(H // 2, 2, W // 2, 2).mean((1, 3))
        sub = _blocks_np(sub, qc)
        chroma.append(np.repeat(np.repeat(sub, 2, 0), 2, 1))
    return _ycc_to_rgb(y, *chroma, np)[:h, :w]


# ----------------------------------------------------------------------------- torch (GPU)

def apply_photo_torch(x, effects: list):
    """The same effects on a batch: x float (B, 3, H, W) in [0, 1] on any device; effects
    has one dict (or None) per image. Returns a new tensor in [0, 1].

    Each effect runs once for all the images that have it (a few kernels per batch, not per
    image): per-image parameters become tensors, per-image kernels are zero-padded to the
    batch's largest and applied as one grouped convolution."""
    import torch
    import torch.nn.functional as F

    if not any(effects):
        return x
    b, _, h, w = x.shape
    k = max(h, w) / 128.0
    dev, dt = x.device, x.dtype
    x = x * 255.0

    def rows(e):
        idx = [i for i, fx in enumerate(effects) if fx and e in fx]
        return idx, torch.as_tensor(idx, device=dev, dtype=torch.long)

    def param(idx, get):
        return torch.as_tensor([get(effects[i]) for i in idx], device=dev, dtype=dt)

    yy, xx = torch.meshgrid(torch.arange(h, device=dev, dtype=dt), torch.arange(w, device=dev, dtype=dt), indexing="ij")
    idx, t = rows("occlusion")
    if idx:
        occ = [effects[i]["occlusion"] for i in idx]
        m = torch.stack([_occ_coverage(o, xx + 0.5, yy + 0.5, h, w, torch) for o in occ])[:, None]
        col = torch.as_tensor([o["color"] for o in occ], device=dev, dtype=dt)[:, :, None, None]
        x[t] = x[t] * (1 - m) + m * col * (0.85 + 0.3 * (yy / h))
    idx, t = rows("blur")
    if idx:
        x[t] = _conv_separable(x[t], [gaussian_kernel(effects[i]["blur"] * k) for i in idx])
    idx, t = rows("motion")
    if idx:
        x[t] = _conv_2d(x[t], [motion_kernel(effects[i]["motion"]["length"] * k, effects[i]["motion"]["angle"])
                               for i in idx])
    idx, t = rows("vignette")
    if idx:
        x[t] = x[t] * _vignette_gain(param(idx, lambda e: e["vignette"])[:, None, None], h, w, torch, like=x)[:, None]
    lum = torch.tensor([0.299, 0.587, 0.114], device=dev, dtype=dt).view(1, 3, 1, 1)
    idx, t = rows("color")
    if idx:
        sat, con, bri = (param(idx, lambda e, key=key: e["color"][key]).view(-1, 1, 1, 1)
                         for key in ("saturation", "contrast", "brightness"))
        xi = x[t]
        grey = (xi * lum).sum(1, keepdim=True)
        xi = grey + (xi - grey) * sat
        m = xi.mean((1, 2, 3), keepdim=True)
        x[t] = ((xi - m) * con + m) * bri
    idx, t = rows("white_balance")
    if idx:
        x[t] = x[t] * torch.as_tensor([effects[i]["white_balance"] for i in idx], device=dev, dtype=dt)[:, :, None, None]
    idx, t = rows("gamma")
    if idx:
        x[t] = 255.0 * (x[t].clamp(0, 255) / 255.0) ** param(idx, lambda e: e["gamma"]).view(-1, 1, 1, 1)
    groups: dict = {}
    for i in rows("lowres")[0]:
        groups.setdefault(effects[i]["lowres"], []).append(i)
    for frac, idx in groups.items():
        side, size = _lowres_size(frac, h, w)
        sub = F.interpolate(_gauss_torch(x[idx], 0.45 * min(h, w) / side), size=size, mode="bilinear",
                            align_corners=False)
        x[idx] = F.interpolate(sub, size=(h, w), mode="bilinear", align_corners=False)
    idx, t = rows("noise")
    if idx:
        seeds = [effects[i]["noise"]["seed"] for i in idx]
        z = noise_field_torch(seeds, h * w * 3, dev).view(len(idx), h, w, 3).permute(0, 3, 1, 2).to(dt)
        x[t] = x[t] + param(idx, lambda e: e["noise"]["sigma"]).view(-1, 1, 1, 1) * z
    idx, t = rows("grey")
    if idx:
        x[t] = (x[t].clamp(0, 255) * lum).sum(1, keepdim=True).expand(-1, 3, h, w)
    idx, t = rows("jpeg")
    if idx:
        x[t] = jpeg_torch(x[t].clamp(0, 255).permute(0, 2, 3, 1), [effects[i]["jpeg"] for i in idx]).permute(0, 3, 1, 2)
    idx, t = rows("crop")
    if idx:
        parts = [_crop_index(effects[i]["crop"], h, w, torch, dev) for i in idx]
        ys = torch.stack([p[0] for p in parts])[:, None, :, None].expand(-1, 3, -1, w)
        xs = torch.stack([p[1] for p in parts])[:, None, None, :].expand(-1, 3, h, -1)
        keep = torch.stack([p[2] if effects[i]["crop"]["black"] else torch.ones_like(p[2]) for p, i in zip(parts, idx)])
        x[t] = x[t].gather(2, ys).gather(3, xs) * keep[:, None].to(dt)
    return (x / 255.0).clamp(0.0, 1.0)


def _conv_separable(x, kernels: list):
    """Each image of (S, 3, H, W) blurred by its own 1-D kernel along x then y (reflected
    borders): the kernels zero-padded to the longest, one grouped convolution per axis."""
    import torch
    import torch.nn.functional as F

    s, c, h, w = x.shape
    r = max((len(g) - 1) // 2 for g in kernels)
    bank = torch.zeros(s, 2 * r + 1, device=x.device, dtype=x.dtype)
    for j, g in enumerate(kernels):
        q = (len(g) - 1) // 2
        bank[j, r - q:r + q + 1] = torch.from_numpy(g)
    wts = bank.repeat_interleave(c, 0)                                         # (S*3, 2r+1)
    y = x.reshape(1, s * c, h, w)
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="reflect"), wts[:, None, None, :], groups=s * c)
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), wts[:, None, :, None], groups=s * c)
    return y.reshape(s, c, h, w)


def _conv_2d(x, kernels: list):
    """Each image of (S, 3, H, W) filtered by its own square kernel (reflected borders)."""
    import torch
    import torch.nn.functional as F

    s, c, h, w = x.shape
    r = max((g.shape[0] - 1) // 2 for g in kernels)
    bank = torch.zeros(s, 2 * r + 1, 2 * r + 1, device=x.device, dtype=x.dtype)
    for j, g in enumerate(kernels):
        q = (g.shape[0] - 1) // 2
        bank[j, r - q:r + q + 1, r - q:r + q + 1] = torch.from_numpy(g)
    y = F.pad(x.reshape(1, s * c, h, w), (r, r, r, r), mode="reflect")
    return F.conv2d(y, bank.repeat_interleave(c, 0)[:, None], groups=s * c).reshape(s, c, h, w)


def _gauss_torch(x, sigma: float):
    """Separable Gaussian blur of (B, 3, H, W) with reflected borders, as cv2.sepFilter2D."""
    import torch
    import torch.nn.functional as F

    g = torch.from_numpy(gaussian_kernel(sigma)).to(x.device, x.dtype)
    r = (len(g) - 1) // 2
    y = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), g.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
    return F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), g.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)


def _pcg_torch(v):
    state = (v * 747796405 + 2891336453) & _M32
    word = (((state >> ((state >> 28) + 4)) ^ state) * 277803737) & _M32
    return ((word >> 22) ^ word) & _M32


def noise_field_torch(seeds, n: int, device):
    """``noise_field_np`` for each seed of `seeds` on a torch device: (len(seeds), n)."""
    import torch

    idx = torch.arange(n, dtype=torch.int64, device=device)[None]
    base = torch.as_tensor([(int(s) * 0x9E3779B1) & _M32 for s in seeds], dtype=torch.int64, device=device)[:, None]
    u1 = (_pcg_torch((base + 2 * idx) & _M32).to(torch.float32) + 1.0) / float(2**32 + 1)
    u2 = _pcg_torch((base + 2 * idx + 1) & _M32).to(torch.float32) / float(2**32)
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2 * math.pi * u2)


def jpeg_torch(x, qualities: list):
    """``jpeg_np`` for a batch: x float (S, H, W, 3) in [0, 255], one quality per image."""
    import torch
    import torch.nn.functional as F

    s, h, w = x.shape[:3]
    ph, pw = -h % 16, -w % 16
    xpad = F.pad(x.permute(0, 3, 1, 2), (0, pw, 0, ph), mode="replicate").permute(0, 2, 3, 1)
    tables = [jpeg_tables(q) for q in qualities]
    ql = torch.as_tensor(np.stack([t[0] for t in tables]), device=x.device, dtype=x.dtype)[:, None, None]
    qc = torch.as_tensor(np.stack([t[1] for t in tables]), device=x.device, dtype=x.dtype)[:, None, None]
    d = torch.from_numpy(_DCT).to(x.device, x.dtype)

    def blocks(c, q):
        n, hh, ww = c.shape
        b = (c - 128.0).reshape(n, hh // 8, 8, ww // 8, 8).permute(0, 1, 3, 2, 4)
        coef = torch.einsum("ij,nabjk,lk->nabil", d, b, d)
        coef = torch.round(coef / q) * q
        b = torch.einsum("ji,nabjk,kl->nabil", d, coef, d)
        return b.permute(0, 1, 3, 2, 4).reshape(n, hh, ww) + 128.0

    y, cb, cr = _rgb_to_ycc(xpad, torch)
    y = blocks(y, ql)
    n, H, W = y.shape
    chroma = []
    for c in (cb, cr):
        sub = c.reshape(n, H // 2, 2, W // 2, 2).mean((2, 4))
        chroma.append(blocks(sub, qc).repeat_interleave(2, 1).repeat_interleave(2, 2))
    return _ycc_to_rgb(y, *chroma, torch)[:, :h, :w]
