"""Per-image scene parameters as a pure function of (seed, identity, sample) and the config.

Every draw gets its own numpy generator seeded from ``(seed, stream, identity[, sample])``,
so an image's parameters do not depend on worker count, chunk order, resume, or on how
many images were drawn before it. Identity coefficients depend on (seed, identity) only:
all samples of an identity share its face.
"""
from __future__ import annotations

import copy
import functools
import itertools
import json
from dataclasses import dataclass, field

import numpy as np

from .distributions import (Constant, Distribution, Gaussian, Uniform, check_within, number_text,
                            parse_distribution)
from .errors import ConfigError, is_finite_number, shown
from .illumination import IlluminationPrior
from .model import MorphableModel
from .appearance import AppearanceConfig, IdentityLook
from .appearance.frame import size_direction
from .render.photo import PhotoConfig

# Stream ids keep independent draws apart; never renumber them (it would change every dataset).
_STREAM_SHAPE, _STREAM_COLOR, _STREAM_SAMPLE, _STREAM_MIXUP, _STREAM_LIGHT_SET = 1, 2, 3, 4, 5
_STREAM_PHOTO = 7  # 6 is the background stream (scene.py)
_STREAM_LOOK_IDENTITY, _STREAM_LOOK_IMAGE = 8, 9


def rng_for(seed: int, stream: int, *indices: int) -> np.random.Generator:
    """An independent generator for one (seed, stream, indices...) key."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, stream, *indices])))


@dataclass(frozen=True)
class PoseConfig:
    """Head pose distributions in degrees, plus image-plane jitter and scale.

    translation is a jitter of the face centre in the image, as a fraction of the image
    size; scale multiplies the face's size in the frame.
    """

    yaw: Distribution = Uniform(-90, 90)
    pitch: Distribution = Uniform(-30, 30)
    roll: Distribution = Uniform(-15, 15)
    translation: Distribution = Constant(0.0)
    scale: Distribution = Constant(1.0)

    def __post_init__(self) -> None:
        check_within(self.yaw, -180, 180, "yaw")
        check_within(self.pitch, -90, 90, "pitch")
        check_within(self.roll, -180, 180, "roll")
        check_within(self.translation, -0.5, 0.5, "translation (fraction of the image)")
        check_within(self.scale, 0.05, 10, "scale")

    @classmethod
    def from_dict(cls, d: dict) -> "PoseConfig":
        unknown = set(d) - {"yaw", "pitch", "roll", "translation", "scale"}
        if unknown:
            raise ConfigError(f"unknown pose key(s) {sorted(unknown)}: use yaw, pitch, roll, translation, scale")
        return cls(**{k: parse_distribution(v) for k, v in d.items()})

    def to_dict(self) -> dict:
        return {k: str(getattr(self, k)) for k in ("yaw", "pitch", "roll", "translation", "scale")}


POSE_PRESETS: dict[str, PoseConfig] = {
    # Kortylewski et al. 2019, SYN-1M: full yaw range.
    "syn1m": PoseConfig(),
    # Their frontal-biased ablation: yaw within +-35 degrees.
    "frontal": PoseConfig(yaw=Uniform(-35, 35)),
}


def pose_config(spec: "str | dict | PoseConfig") -> PoseConfig:
    """A preset name, a dict of distributions, or a YAML/JSON file path holding such a dict."""
    if isinstance(spec, PoseConfig):
        return spec
    if isinstance(spec, dict):
        return PoseConfig.from_dict(spec)
    if spec in POSE_PRESETS:
        return POSE_PRESETS[spec]
    from pathlib import Path

    path = Path(spec)
    if path.suffix.lower() in (".yaml", ".yml", ".json") or path.exists():
        from .configfile import read_mapping

        return PoseConfig.from_dict(read_mapping(path, "pose file", f" (or use a preset: {', '.join(POSE_PRESETS)})"))
    raise ConfigError(f"unknown pose preset {spec!r}: use {', '.join(POSE_PRESETS)} or a YAML file")


@dataclass(frozen=True)
class GridAxis:
    """start..stop inclusive in steps of step (controlled mode)."""

    start: float
    stop: float
    step: float

    def count(self) -> int:
        """How many values, counted without listing them (a step of 1e-9 would allocate
        terabytes before any size check could refuse it)."""
        if not (is_finite_number(self.start) and is_finite_number(self.stop)):
            raise ConfigError(f"grid start and stop must be finite numbers, got {self.start:g}:{self.stop:g}")
        if not (is_finite_number(self.step) and self.step > 0):
            raise ConfigError(f"grid step must be a finite number > 0, got {self.step:g}")
        if self.stop < self.start:
            raise ConfigError(f"grid stop {self.stop:g} is below start {self.start:g}")
        return int(np.floor((self.stop - self.start) / self.step + 1e-9)) + 1

    def values(self) -> np.ndarray:
        return self.start + self.step * np.arange(self.count())


@dataclass(frozen=True)
class ControlledGrid:
    """Controlled renders: every combination of the given yaw/pitch/roll values and of
    `lights` illumination conditions (drawn once from the seed, shared by all identities).
    Sample n of an identity is the n-th combination, so per-id = the grid's size."""

    yaw: GridAxis | None = None
    pitch: GridAxis | None = None
    roll: GridAxis | None = None
    lights: int = 1

    def points(self) -> list[dict]:
        axes = {k: getattr(self, k).values() for k in ("yaw", "pitch", "roll") if getattr(self, k) is not None}
        names = list(axes)
        combos = itertools.product(*(axes[k] for k in names), range(self.lights))
        return [dict(zip(names + ["light"], (float(v) for v in c[:-1]))) | {"light": int(c[-1])} for c in combos]

    @classmethod
    def parse(cls, spec: dict) -> "ControlledGrid":
        """From {'yaw': 'start:stop:step', 'lights': 3, ...}."""
        kw: dict = {}
        for k, v in spec.items():
            if k == "lights":
                if int(v) < 1:
                    raise ConfigError("grid lights must be >= 1")
                kw["lights"] = int(v)
            elif k in ("yaw", "pitch", "roll"):
                try:
                    a, b, c = (float(x) for x in str(v).split(":"))
                except ValueError:
                    raise ConfigError(f"grid {k}={v!r}: write start:stop:step, e.g. -90:90:15") from None
                axis = GridAxis(a, b, c)
                last = a + c * (axis.count() - 1)
                limit = 90 if k == "pitch" else 180
                if max(abs(a), abs(last)) > limit:
                    raise ConfigError(f"grid {k} reaches beyond +-{limit} degrees")
                kw[k] = axis
            else:
                raise ConfigError(f"unknown grid key {k!r}: use yaw, pitch, roll, lights")
        return cls(**kw)

    def to_dict(self) -> dict:
        d: dict = {"lights": self.lights}
        for k in ("yaw", "pitch", "roll"):
            a = getattr(self, k)
            if a is not None:
                d[k] = ":".join(number_text(x) for x in (a.start, a.stop, a.step))
        return d


@dataclass(frozen=True)
class MixupConfig:
    """SynFace identity mixup: a `fraction` of images shows phi*a_i + (1-phi)*a_j of its own
    identity i and a partner j, with phi drawn from `phis`; the soft label is recorded."""

    phis: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)
    fraction: float = 0.5

    def __post_init__(self) -> None:
        if not self.phis or any(not 0.0 < p < 1.0 for p in self.phis):
            raise ConfigError(f"identity-mixup phis must lie strictly between 0 and 1, got {list(self.phis)}")
        if not 0.0 <= self.fraction <= 1.0:
            raise ConfigError(f"identity-mixup fraction must be in [0, 1], got {self.fraction:g}")


@dataclass(frozen=True)
class SamplingConfig:
    """Everything that decides an image's scene parameters (besides the model)."""

    seed: int = 0
    n_identities: int = 100
    shape_components: int | None = None  # None: all of the model's
    color_components: int | None = None
    expression_components: int | None = None
    shape: Distribution = Gaussian()
    color: Distribution = Gaussian()
    expression: Distribution = Gaussian(0.0, 0.5, trunc=3.0)
    expressions: bool = True
    pose: PoseConfig = field(default_factory=PoseConfig)
    grid: ControlledGrid | None = None
    mixup: MixupConfig | None = None
    photo: PhotoConfig = field(default_factory=PhotoConfig)   # camera / photo effects per image
    appearance: AppearanceConfig = field(default_factory=AppearanceConfig)   # hair, eyewear, beard, skin...

    def __post_init__(self) -> None:
        if self.n_identities < 1:
            raise ConfigError(f"number of identities must be >= 1, got {self.n_identities}")
        if self.mixup is not None and self.n_identities < 2:
            raise ConfigError("identity mixup needs at least 2 identities")
        for label in ("shape_components", "color_components", "expression_components"):
            v = getattr(self, label)
            if v is not None and v < 0:
                raise ConfigError(f"{label.replace('_', ' ')} must be >= 0, got {v}")


@dataclass
class ImageParams:
    """The scene of one image; `to_record()` is what the dataset writer stores."""

    identity: int
    sample: int
    shape: np.ndarray
    color: np.ndarray
    expression: np.ndarray
    yaw: float
    pitch: float
    roll: float
    translation: np.ndarray  # (2,) image-plane jitter, fraction of the image size
    scale: float
    sh: np.ndarray  # (9, 3)
    background_seed: int
    mixup_partner: int | None = None
    mixup_weight: float | None = None  # phi: weight of `identity`
    photo: dict | None = None          # camera / photo effects (render.photo); None when the scene has none
    appearance: dict | None = None     # hair, eyewear, beard... (morphgen.appearance); None when off
    # (3,) mm, camera space: where the face is, given (a fitted photo's) instead of framed
    # by its five points plus `translation`; None for sampled images
    camera_translation: np.ndarray | None = None

    @property
    def soft_label(self) -> dict | None:
        """An identity-mixup image's label: its two identities and their weights
        (``{"ids": [identity, partner], "weights": [w, 1 - w]}``); None for a plain image."""
        if self.mixup_partner is None:
            return None
        return {"ids": [self.identity, self.mixup_partner], "weights": [self.mixup_weight, 1.0 - self.mixup_weight]}

    def to_record(self) -> dict:
        return {"identity": self.identity, "sample": self.sample, "shape": _r6(self.shape),
                "color": _r6(self.color)} | self._record_tail()

    def to_json(self) -> str:
        """``json.dumps(self.to_record())``, byte for byte, with the shape and colour
        coefficients' text cached: an identity's images share them, and encoding those
        floats was half of the record's cost (0.09 of 0.18 ms an image)."""
        shape, color = _coeffs_text(self.shape), _coeffs_text(self.color)
        return (f'{{"identity": {json.dumps(self.identity)}, "sample": {json.dumps(self.sample)}, '
                f'"shape": {shape}, "color": {color}, {json.dumps(self._record_tail())[1:]}')

    def _record_tail(self) -> dict:
        tail = {
            "expression": _r6(self.expression),
            "yaw": round(float(self.yaw), 6),
            "pitch": round(float(self.pitch), 6),
            "roll": round(float(self.roll), 6),
            "translation": _r6(self.translation),
            "scale": round(float(self.scale), 6),
            "sh": _r6(self.sh),
            "background_seed": self.background_seed,
            "soft_label": self.soft_label,
        }
        if self.photo is not None:  # absent for scenes without effects: their records stay as they were
            tail["photo"] = self.photo
        if self.appearance is not None:
            tail["appearance"] = self.appearance
        if self.camera_translation is not None:
            tail["camera_translation"] = _r6(self.camera_translation)
        return tail

    @classmethod
    def from_record(cls, rec: dict, where: str = "params record") -> "ImageParams":
        """The image a params record describes (``to_record``'s keys; others, such as its
        landmarks, are ignored), so that a render takes the recorded values -- a fitted
        photo's, or an edited file's -- instead of the sampler's. A one-line ConfigError
        names ``where`` and the key when one is missing or malformed."""
        def arr(key: str, shape: tuple | None = None) -> np.ndarray:  # None: a vector of any length
            try:
                a = np.asarray(rec[key], np.float32)
            except KeyError:
                raise ConfigError(f"{where}: lacks {key!r}") from None
            except (TypeError, ValueError):
                raise ConfigError(f"{where}: {key!r} is not a list of numbers") from None
            if a.ndim != 1 if shape is None else a.shape != shape:
                raise ConfigError(f"{where}: {key!r} has shape {a.shape}; expected {'a list' if shape is None else shape}")
            if not np.isfinite(a).all():
                raise ConfigError(f"{where}: {key!r} holds non-finite values (NaN or infinity)")
            return a

        def num(key: str, default=None) -> float:
            v = rec.get(key, default)
            if not is_finite_number(v):
                raise ConfigError(f"{where}: {key!r} must be a number, got {shown(v)}")
            return v

        def whole(key: str) -> int:
            v = num(key)
            if v != int(v):
                raise ConfigError(f"{where}: {key!r} must be a whole number, got {shown(v)}")
            return int(v)

        if not isinstance(rec, dict):
            raise ConfigError(f"{where}: not a JSON object")
        if not 0.05 <= num("scale", 1.0) <= 10:  # the bounds a pose distribution may draw
            raise ConfigError(f"{where}: 'scale' must be in [0.05, 10], got {rec['scale']!r}")
        translation = arr("translation", (2,)) if "translation" in rec else np.zeros(2, np.float32)
        if np.abs(translation).max() > 0.5:
            raise ConfigError(f"{where}: 'translation' must lie in [-0.5, 0.5] (a fraction of the image), "
                              f"got {translation.tolist()}")
        seed = num("background_seed", 0)
        if not (0 <= seed < 2**63 and seed == int(seed)):
            raise ConfigError(f"{where}: 'background_seed' must be a whole number >= 0, got {seed!r}")
        partner, weight = _soft_label(rec.get("soft_label"), where)
        cam = rec.get("camera_translation")
        return cls(whole("identity"), whole("sample"), arr("shape"), arr("color"),
                   arr("expression"), float(num("yaw")), float(num("pitch")), float(num("roll")),
                   translation, float(num("scale", 1.0)), arr("sh", (9, 3)), int(num("background_seed", 0)),
                   partner, weight, rec.get("photo"), rec.get("appearance"),
                   None if cam is None else arr("camera_translation", (3,)))


def _soft_label(soft, where: str) -> tuple[int | None, float | None]:
    """(partner, own weight) of a record's identity-mixup ``soft_label`` ({"ids": [own,
    partner], "weights": [w, 1 - w]}, or null). The weight is rounded to the records' 6
    decimals: a Parquet file holds float32, and 0.6 came back as 0.6000000238 (its
    partner's weight, written again, as 0.39999998)."""
    if soft is None:
        return None, None
    ids, weights = (soft.get("ids"), soft.get("weights")) if isinstance(soft, dict) else (None, None)
    if not (isinstance(ids, list) and len(ids) == 2 and isinstance(weights, list) and weights):
        raise ConfigError(f"{where}: 'soft_label' must be null or {{\"ids\": [own, partner], \"weights\": [w, 1 - w]}}, "
                          f"got {shown(soft)}")
    partner, w = ids[1], weights[0]
    if not (is_finite_number(partner) and partner >= 0 and partner == int(partner)):
        raise ConfigError(f"{where}: the soft_label's partner must be a whole number >= 0, got {shown(partner)}")
    if not (is_finite_number(w) and 0 < w < 1):
        raise ConfigError(f"{where}: the soft_label's own weight must lie strictly between 0 and 1, got {shown(w)}")
    return int(partner), round(float(w), 6)


def _r6(a: np.ndarray) -> list:
    return np.round(np.asarray(a, np.float64), 6).tolist()


def _coeffs_text(a: np.ndarray) -> str:
    """``json.dumps(_r6(a))``, cached for numeric vectors (what the sampler makes)."""
    a = np.asarray(a)
    if a.ndim != 1 or a.dtype.kind not in "fiu":
        return json.dumps(_r6(a))
    return _vector_json(a.dtype.str, np.ascontiguousarray(a).tobytes())


@functools.lru_cache(maxsize=256)
def _vector_json(dtype: str, raw: bytes) -> str:
    return json.dumps(_r6(np.frombuffer(raw, dtype=dtype)))


class SceneSampler:
    """Draws ImageParams for (identity, sample) from a model, a SamplingConfig and a light prior."""

    def __init__(self, model: MorphableModel, config: SamplingConfig, illumination: IlluminationPrior):
        self.config = config
        self.illumination = illumination
        self.n_shape = _components(config.shape_components, model.shape.n_components, "shape")
        self.n_color = _components(config.color_components, model.color.n_components, "color")
        n_expr_model = model.expression.n_components if model.expression is not None else 0
        if not config.expressions:
            self.n_expr = 0
        elif config.expression_components is not None and config.expression_components > n_expr_model:
            raise ConfigError(f"asked for {config.expression_components} expression components but the model has {n_expr_model}")
        else:
            self.n_expr = n_expr_model if config.expression_components is None else config.expression_components
        self._grid_points = config.grid.points() if config.grid is not None else None
        self._identity_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._look_cache: dict[int, IdentityLook] = {}
        # the shape coefficients' face-size direction, which beards follow as a tendency
        self._size_direction = size_direction(model, self.n_shape).astype(np.float32) if config.appearance.active else None
        if self._grid_points is not None:
            light_rng = rng_for(config.seed, _STREAM_LIGHT_SET)
            self._grid_lights = [illumination.sample(light_rng) for _ in range(config.grid.lights)]

    @property
    def grid_size(self) -> int | None:
        return None if self._grid_points is None else len(self._grid_points)

    def identity_coefficients(self, identity: int) -> tuple[np.ndarray, np.ndarray]:
        """Shape and color coefficients of a base identity: a function of (seed, identity).

        Cached (up to 64 identities, then cleared): samples are drawn identity by identity,
        and two generators per image were a tenth of the CPU dataset writer's sampling time.
        The arrays are read-only: they are shared by the identity's images."""
        def draw() -> tuple[np.ndarray, np.ndarray]:
            c = self.config
            shape = c.shape.sample(rng_for(c.seed, _STREAM_SHAPE, identity), self.n_shape).astype(np.float32)
            color = c.color.sample(rng_for(c.seed, _STREAM_COLOR, identity), self.n_color).astype(np.float32)
            shape.flags.writeable = color.flags.writeable = False  # shared by the identity's images
            return shape, color

        return _per_identity(self._identity_cache, identity, draw)

    def realism(self, identity: int, sample: int) -> tuple[dict | None, dict | None]:
        """The photo effects and the appearance of (identity, sample), None where the option
        is off: their own streams, so recorded images (``--from-params``) get the draws a
        sampled image of the same keys would."""
        c = self.config
        photo = c.photo.sample(rng_for(c.seed, _STREAM_PHOTO, identity, sample)) if c.photo.active else None
        look = (c.appearance.sample(self._identity_look(identity), rng_for(c.seed, _STREAM_LOOK_IMAGE, identity, sample))
                if c.appearance.active else None)
        return photo, look

    def _identity_look(self, identity: int) -> IdentityLook:
        """An identity's appearance draws, cached like its coefficients (a fifth of the
        appearance sampling's time was drawing them again for every image)."""
        def draw() -> IdentityLook:
            size = float(self.identity_coefficients(identity)[0] @ self._size_direction)
            return AppearanceConfig.identity_draws(rng_for(self.config.seed, _STREAM_LOOK_IDENTITY, identity), size)

        return _per_identity(self._look_cache, identity, draw)

    def image_params(self, identity: int, sample: int) -> ImageParams:
        c = self.config
        if not 0 <= identity < c.n_identities:
            raise ConfigError(f"identity {identity} outside 0..{c.n_identities - 1}")
        shape, color = self.identity_coefficients(identity)
        partner = phi = None
        if c.mixup is not None:
            mrng = rng_for(c.seed, _STREAM_MIXUP, identity, sample)
            if mrng.random() < c.mixup.fraction:
                partner = int(mrng.integers(c.n_identities - 1))
                partner += partner >= identity  # any identity but this one
                phi = float(c.mixup.phis[int(mrng.integers(len(c.mixup.phis)))])
                s2, c2 = self.identity_coefficients(partner)
                shape = phi * shape + (1 - phi) * s2
                color = phi * color + (1 - phi) * c2
        rng = rng_for(c.seed, _STREAM_SAMPLE, identity, sample)
        expression = c.expression.sample(rng, self.n_expr).astype(np.float32)
        p = c.pose
        yaw, pitch, roll = (float(d.sample(rng)) for d in (p.yaw, p.pitch, p.roll))
        translation = p.translation.sample(rng, 2).astype(np.float32)
        scale = float(p.scale.sample(rng))
        sh = self.illumination.sample(rng).astype(np.float32)
        background_seed = int(rng.integers(2**31 - 1))
        if self._grid_points is not None:
            if sample >= len(self._grid_points):
                raise ConfigError(f"sample {sample} beyond the controlled grid's {len(self._grid_points)} points")
            g = self._grid_points[sample]
            yaw, pitch, roll = g.get("yaw", yaw), g.get("pitch", pitch), g.get("roll", roll)
            sh = self._grid_lights[g["light"]].astype(np.float32)
        photo, look = self.realism(identity, sample)
        return ImageParams(identity, sample, shape.astype(np.float32), color.astype(np.float32), expression,
                           yaw, pitch, roll, translation, scale, sh, background_seed, partner, phi, photo, look)


def _per_identity(cache: dict, identity: int, draw):
    """``cache[identity]``, drawn by ``draw()`` on a miss: the sampler's per-identity caches
    hold up to 64 identities, then start again (samples come identity by identity, so a
    small cache catches nearly every repeat)."""
    hit = cache.get(identity)
    if hit is None:
        if len(cache) >= 64:
            cache.clear()
        hit = cache[identity] = draw()
    return hit


def _decode_distinct_rows(coeffs: np.ndarray, mean: np.ndarray, basis: np.ndarray, clip: bool = False,
                          offset: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """``(mean + rows @ basis.T [+ offset], inverse)``: each distinct row of coeffs decoded
    once (optionally clipped to [0, 1]), and the index of its row for each of coeffs (None
    when all rows are distinct). A batch often repeats one identity's shape and colour (the
    dataset writer renders identity by identity), and decoding is a memory-bound matmul
    over the basis. One repeated row, the common case, is found by a comparison, not by
    sorting the rows."""
    if len(coeffs) > 1 and (coeffs == coeffs[0]).all():
        rows, inverse = coeffs[:1], np.zeros(len(coeffs), np.intp)
    else:
        rows, inverse = np.unique(coeffs, axis=0, return_inverse=True)
        if len(rows) == len(coeffs):
            rows, inverse = coeffs, None
        else:
            inverse = inverse.reshape(-1)
    flat = mean + rows @ basis.T
    if offset is not None:
        flat += offset
    if clip:
        np.clip(flat, 0.0, 1.0, out=flat)
    return flat, inverse


def _components(asked: int | None, available: int, label: str) -> int:
    if asked is None:
        return available
    if asked > available:
        raise ConfigError(f"asked for {asked} {label} components but the model has {available}")
    return asked


class Decoder:
    """Coefficients -> vertices (mm) and per-vertex albedo, batched, float32.

    Holds the truncated, variance-scaled bases once, so decoding is one matmul per model part.
    """

    def __init__(self, model: MorphableModel, n_shape: int, n_color: int, n_expr: int):
        self.n_vertices = model.n_vertices
        self.shape_mean = model.shape.mean.astype(np.float32)
        self.shape_basis = np.ascontiguousarray(model.shape.scaled_basis(n_shape))
        self.color_mean = model.color.mean.astype(np.float32)
        self.color_basis = np.ascontiguousarray(model.color.scaled_basis(n_color))
        if n_expr and model.expression is not None:
            self.expr_mean = model.expression.mean.astype(np.float32)
            self.expr_basis = np.ascontiguousarray(model.expression.scaled_basis(n_expr))
        else:
            self.expr_mean = self.expr_basis = None

    def vertices(self, shape: np.ndarray, expression: np.ndarray | None = None) -> np.ndarray:
        """(B, N, 3) from shape (B, ks) and expression (B, ke) coefficients (on one BLAS
        thread whatever the process runs: the same bits everywhere, see `one_blas_thread`)."""
        from .render.threads import one_blas_thread

        with one_blas_thread():
            return self._vertices(shape, expression)

    def _vertices(self, shape: np.ndarray, expression: np.ndarray | None) -> np.ndarray:
        shape = np.atleast_2d(shape)
        flat, inverse = _decode_distinct_rows(shape, self.shape_mean, self.shape_basis, offset=self.expr_mean)
        if self.expr_basis is not None and expression is not None and np.size(expression):
            coeffs = np.atleast_2d(expression)
            if coeffs.dtype == self.expr_basis.dtype:
                # basis @ coefficients.T, not coefficients @ basis.T: in float32 OpenBLAS's
                # kernels (Haswell's, checked on this project's VMs) sum the same products in
                # the same order either way (the same bits, the same images as before), and a
                # batch of 20 takes 2.9 ms, not 4.8, on a face12 mesh (a few rows against tens
                # of thousands of columns is its slow case). Mixed dtypes keep numpy's order:
                # float64 coefficients round differently the other way round.
                exprs = (self.expr_basis @ coeffs.T).T
            else:
                exprs = coeffs @ self.expr_basis.T
            # one decoded shape row serves every image where each image has its expression
            one = inverse is None or (len(flat) == 1 and len(exprs) == len(shape))
            rows = flat if one else flat[inverse]
            # shape and expression rows broadcast against one another, in the wider dtype;
            # the sum laid out image by image
            out = np.empty(np.broadcast_shapes(exprs.shape, rows.shape), np.result_type(exprs, rows))
            np.add(exprs, rows, out=out)
        else:
            out = flat if inverse is None else flat[inverse]
        return out.reshape(len(out), self.n_vertices, 3)

    def albedo(self, color: np.ndarray) -> np.ndarray:
        """(B, N, 3) in [0, 1] (clipped: PCA tails can leave the valid range). A batch of one
        colour is a broadcast view of one decoded row (read-only)."""
        from .render.threads import one_blas_thread

        color = np.atleast_2d(color)
        with one_blas_thread():
            flat, inverse = _decode_distinct_rows(color, self.color_mean, self.color_basis, clip=True)
        if inverse is not None:
            flat = np.broadcast_to(flat, (len(color), flat.shape[1])) if len(flat) == 1 else flat[inverse]
        return flat.reshape(len(color), self.n_vertices, 3)

    def restricted(self, vertex_ids) -> "Decoder":
        """A decoder of only these vertices (their rows of the bases, in the given order):
        decoding a few landmark vertices costs a few dozen rows, not the whole mesh."""
        rows = (3 * np.asarray(vertex_ids)[:, None] + np.arange(3)).reshape(-1)
        d = copy.copy(self)
        d.n_vertices = len(vertex_ids)
        d.shape_mean, d.shape_basis = self.shape_mean[rows], self.shape_basis[rows]
        d.color_mean, d.color_basis = self.color_mean[rows], self.color_basis[rows]
        if self.expr_basis is not None:
            d.expr_mean, d.expr_basis = self.expr_mean[rows], self.expr_basis[rows]
        return d

    @classmethod
    def for_sampler(cls, model: MorphableModel, sampler: SceneSampler) -> "Decoder":
        return cls(model, sampler.n_shape, sampler.n_color, sampler.n_expr)
