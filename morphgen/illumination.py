"""Spherical-harmonics (SH) lights: the Basel Illumination Prior, built-in priors, samplers.

Lights are arrays (9, 3) in the convention of :mod:`morphgen.spherical_harmonics` (the
basis, its constants and the Lambertian irradiance live there, shared with the renderers).
Samplers are objects with ``sample(rng) -> (9, 3) float32`` that draw only from the given
``numpy.random.Generator``, so callers control determinism.
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from .errors import ConfigError, DataError
from .spherical_harmonics import LAMBERT_KERNEL, SH_N0, SH_N1, sh_basis, sh_basis_at

#: sum of squared coefficients the Basel generator fixes when asked to ("setEnergy").
DEFAULT_ENERGY = 6.33
ILLUMINATION_KINDS = ("builtin", "bip-empirical", "bip-gaussian", "frontal")


# ---- light constructions ----------------------------------------------------------------
def sh_energy(coeffs: np.ndarray) -> float:
    """Sum of squared coefficients (the Basel generator's "energy")."""
    c = np.asarray(coeffs, dtype=np.float64)
    return float((c * c).sum())


def sh_ambient(rgb) -> np.ndarray:
    """Coefficients (9, 3) of a uniform environment giving irradiance ``rgb`` on every normal."""
    c = np.zeros((9, 3))
    c[0] = np.asarray(rgb, dtype=np.float64) / (SH_N0 * LAMBERT_KERNEL[0])
    return c


def sh_directional(direction, rgb) -> np.ndarray:
    """Coefficients (9, 3) of a distant light from unit ``direction`` (pointing toward the light).

    The irradiance is the band-limited (l <= 2) projection of ``rgb * max(0, n . direction)``:
    exact up to the usual SH ringing (about -4% of ``rgb`` at worst, on the far side).
    """
    d = np.asarray(direction, dtype=np.float64)
    d = d / np.linalg.norm(d)
    return sh_basis(d)[:, None] * np.asarray(rgb, dtype=np.float64)[None, :]


def sh_ambient_diffuse_linear(ambient, diffuse, direction) -> np.ndarray:
    """scalismo-faces' ``fromAmbientDiffuse``: irradiance ``ambient + diffuse * (n . d)``,
    linear in n (bands 0 and 1 only, no clamp). Used for the static frontal light."""
    d = np.asarray(direction, dtype=np.float64)
    d = d / np.linalg.norm(d)
    diffuse = np.asarray(diffuse, dtype=np.float64)
    c = sh_ambient(ambient)
    scale = 1.0 / (SH_N1 * LAMBERT_KERNEL[1])
    c[1] = d[1] * scale * diffuse
    c[2] = d[2] * scale * diffuse
    c[3] = d[0] * scale * diffuse
    return c


def mean_frontal_irradiance(coeffs: np.ndarray) -> np.ndarray:
    """Mean irradiance (3,) over the normals of the +z hemisphere (those facing the camera).

    Exact: over that hemisphere every basis function averages to zero except 1 (N0) and
    z (N1 / 2).
    """
    c = np.asarray(coeffs, dtype=np.float64).reshape(9, 3)
    return LAMBERT_KERNEL[0] * SH_N0 * c[0] + LAMBERT_KERNEL[2] * SH_N1 * 0.5 * c[2]


def adjust(coeffs: np.ndarray, no_color: bool = False, energy: float | None = None) -> np.ndarray:
    """Apply the Basel options: ``no_color`` averages each coefficient over RGB, then
    ``energy`` rescales so that the sum of squared coefficients equals it.

    (The Basel generator fixes the energy first and then averages colours, which leaves
    the energy slightly below the target; here the final energy is exactly ``energy``.)
    """
    c = np.array(coeffs, dtype=np.float64).reshape(9, 3)
    if no_color:
        c[:] = c.mean(axis=1, keepdims=True)
    if energy is not None:
        e = sh_energy(c)
        if e > 0:
            c *= math.sqrt(energy / e)
    return c.astype(np.float32)


# ---- Basel Illumination Prior files ---------------------------------------------------
# scalismo-faces' V1 (legacy C++) format stores 9 coefficients in another order ("jz"):
# ours[i] = jz[_JZ_TO_SH[i]].
_JZ_TO_SH = (0, 2, 3, 1, 7, 5, 4, 6, 8)


def _coefficients(value, where: str) -> np.ndarray:
    """A list of [r, g, b] triples as (9, 3): fewer bands padded with zeros, more truncated
    (band 3 has zero Lambert kernel, band 4 and up are negligible for diffuse shading)."""
    if not isinstance(value, list):
        raise ValueError(f"{where} is not a list")
    if not value:
        raise ValueError(f"{where} is empty (no spherical-harmonics light)")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{where} is not a list of [r, g, b] numbers") from None
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"{where} has shape {arr.shape}, expected (n, 3)")
    if int(round(math.sqrt(arr.shape[0]))) ** 2 != arr.shape[0]:
        raise ValueError(f"{where} has {arr.shape[0]} coefficients, not a square number (1, 4, 9, 16...)")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{where} has NaN or infinite values")
    out = np.zeros((9, 3))
    k = min(9, arr.shape[0])
    out[:k] = arr[:k]
    return out


def parse_rps_light(doc: dict) -> np.ndarray:
    """The SH light (9, 3) of a scalismo-faces render-parameter (.rps) JSON document.

    Formats: V3/V4 ``"environmentMap": {"@type": "SphericalHarmonicsLight", "coefficients": ...}``;
    V2 ``"illumination": {"@type": "SphericalHarmonicsLight", "coefficients": ...}`` (or a
    DirectionalLight, which has no SH light); V1 ``"sphericalHarmonicsLight": [...]`` in the
    legacy coefficient order. Raises ValueError saying why when there is no SH light.
    """
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    if "environmentMap" in doc:
        env = doc["environmentMap"]
        if isinstance(env, dict) and "coefficients" in env:
            return _coefficients(env["coefficients"], "environmentMap.coefficients")
        raise ValueError("environmentMap has no coefficients")
    if "illumination" in doc:
        ill = doc["illumination"]
        if not isinstance(ill, dict):
            raise ValueError("illumination is not an object")
        kind = ill.get("@type", "SphericalHarmonicsLight" if "coefficients" in ill else None)
        if kind != "SphericalHarmonicsLight":
            raise ValueError(f"illumination is a {kind}, not a SphericalHarmonicsLight")
        return _coefficients(ill.get("coefficients"), "illumination.coefficients")
    if "sphericalHarmonicsLight" in doc:
        jz = _coefficients(doc["sphericalHarmonicsLight"], "sphericalHarmonicsLight")
        return jz[list(_JZ_TO_SH)]
    raise ValueError("no environmentMap, illumination or sphericalHarmonicsLight entry")


class BIPWarning(UserWarning):
    """Some illumination-prior files were skipped."""


def load_bip(folder: str | Path) -> np.ndarray:
    """SH coefficients (M, 9, 3) float32 from every ``*.rps`` file under ``folder``
    (recursive, sorted by relative path). Unreadable files are skipped with one
    :class:`BIPWarning` that counts them; a missing or empty folder raises DataError."""
    if folder is None:
        raise DataError("no illumination prior folder given: pass the folder of Basel Illumination Prior .rps files")
    root = Path(folder)
    if not root.exists():
        raise DataError(
            f"illumination prior folder {root} does not exist: download the Basel Illumination Prior "
            "and give the folder that holds its .rps files"
        )
    if not root.is_dir():
        raise DataError(f"illumination prior {root} is not a folder: give the folder that holds the .rps files")
    files = sorted((p for p in root.rglob("*.rps") if p.is_file()), key=lambda p: p.relative_to(root).as_posix())
    if not files:
        raise DataError(f"no .rps files under {root}: give the folder of Basel Illumination Prior .rps files")
    lights = []
    skipped: list[tuple[Path, str]] = []
    for p in files:
        try:
            with open(p, encoding="utf-8") as fh:
                doc = json.load(fh)
            lights.append(parse_rps_light(doc))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
            skipped.append((p, " ".join(str(exc).split())))
    if not lights:
        p, why = skipped[0]
        raise DataError(
            f"none of the {len(files)} .rps files under {root} holds a readable spherical-harmonics light "
            f"(e.g. {p.relative_to(root)}: {why}); give the Basel Illumination Prior folder"
        )
    if skipped:
        p, why = skipped[0]
        warnings.warn(
            f"skipped {len(skipped)} of {len(files)} .rps files under {root} without a readable "
            f"spherical-harmonics light (e.g. {p.relative_to(root)}: {why})",
            BIPWarning,
            stacklevel=2,
        )
    return np.stack(lights).astype(np.float32)


# ---- samplers -------------------------------------------------------------------------
@runtime_checkable
class IlluminationPrior(Protocol):
    """Draws SH coefficients (9, 3) float32 using only the given generator."""

    def sample(self, rng: np.random.Generator) -> np.ndarray: ...


def _as_coeff_array(coeffs: np.ndarray, who: str) -> np.ndarray:
    c = np.asarray(coeffs, dtype=np.float64)
    if c.ndim == 2 and c.shape == (9, 3):
        c = c[None]
    if c.ndim != 3 or c.shape[1:] != (9, 3) or c.shape[0] == 0:
        raise ConfigError(f"{who} needs SH coefficients of shape (M, 9, 3) with M >= 1, got {c.shape}")
    if not np.all(np.isfinite(c)):
        raise ConfigError(f"{who}: the SH coefficients contain NaN or infinite values")
    return c


class BIPEmpirical:
    """A uniformly random light of the prior (the Basel "empirical" mode)."""

    def __init__(self, coeffs: np.ndarray):
        self.coeffs = _as_coeff_array(coeffs, "BIPEmpirical").astype(np.float32)

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        return self.coeffs[int(rng.integers(len(self.coeffs)))].copy()


class BIPGaussian:
    """A multivariate normal fitted to the 27-vectors of the prior (Basel "multiVariateNormal")."""

    def __init__(self, coeffs: np.ndarray):
        c = _as_coeff_array(coeffs, "BIPGaussian").reshape(-1, 27)
        self.mean = c.mean(axis=0)
        cov = np.cov(c, rowvar=False) if len(c) > 1 else np.zeros((27, 27))
        w, v = np.linalg.eigh(cov)
        self.cov = cov
        self.factor = v * np.sqrt(np.clip(w, 0.0, None))  # cov = factor @ factor.T

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        z = rng.standard_normal(27)
        return (self.mean + self.factor @ z).reshape(9, 3).astype(np.float32)


class FrontalLight:
    """The static frontal light of scalismo-faces: ambient 0.8 plus 0.2 (n . z), white."""

    def __init__(self, ambient: float = 0.8, diffuse: float = 0.2):
        self.coeffs = sh_ambient_diffuse_linear([ambient] * 3, [diffuse] * 3, [0.0, 0.0, 1.0]).astype(np.float32)

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        return self.coeffs.copy()


class BuiltinPrior:
    """A plausible studio/daylight prior needing no data files.

    Per draw: an ambient share ``U(ambient)`` of the light and one distant directional
    light (clamped cosine, band-limited) for the rest, from a direction mostly in front of
    and above the face (elevation ~ N(20, 25) degrees, azimuth ~ N(0, 40) degrees from +z,
    both clipped); a mild colour tint on each part; grey band-2 perturbations for uneven
    environments. Energy-normalised: rescaled so that the mean irradiance over the normals
    facing the camera (averaged over RGB) is ``U(exposure)``, about 1, i.e. radiance about
    equal to albedo on average.
    """

    def __init__(
        self,
        ambient: tuple[float, float] = (0.35, 0.75),
        elevation_deg: tuple[float, float] = (20.0, 25.0),
        azimuth_sd_deg: float = 40.0,
        tint_sd: float = 0.05,
        band2_sd: float = 0.03,
        exposure: tuple[float, float] = (0.85, 1.15),
    ):
        self.ambient = ambient
        self.elevation_deg = elevation_deg
        self.azimuth_sd_deg = azimuth_sd_deg
        self.tint_sd = tint_sd
        self.band2_sd = band2_sd
        self.exposure = exposure

    def _tint(self, rng: np.random.Generator) -> np.ndarray:
        # scalar maths, bit for bit what np.clip and t / t.mean() give (18 -> 7 us a call)
        t0, t1, t2 = (min(max(1.0 + self.tint_sd * z, 0.5), 1.5) for z in rng.standard_normal(3).tolist())
        m = (t0 + t1 + t2) / 3.0
        return np.array([t0 / m, t1 / m, t2 / m])

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        # Scalar maths where the values are scalars: this runs once per image, and the
        # numpy form (small arrays, np.clip on floats) took 0.19 ms of the writer's time.
        el = math.radians(min(max(rng.normal(*self.elevation_deg), -35.0), 75.0))
        az = math.radians(min(max(rng.normal(0.0, self.azimuth_sd_deg), -100.0), 100.0))
        x, y, z = math.sin(az) * math.cos(el), math.sin(el), math.cos(az) * math.cos(el)
        amb = rng.uniform(*self.ambient)
        ambient_rgb, light_rgb = amb * self._tint(rng), (1.0 - amb) * self._tint(rng)
        # sh_ambient + sh_directional, written out for a unit direction
        c = sh_basis_at(x, y, z)[:, None] * light_rgb
        c[0] += ambient_rgb / (SH_N0 * LAMBERT_KERNEL[0])
        c[4:9] += self.band2_sd * rng.standard_normal((5, 1))
        target = rng.uniform(*self.exposure)
        level = float(mean_frontal_irradiance(c).mean())
        if level > 0:
            c *= target / level
        return c.astype(np.float32)


class AdjustedPrior:
    """Any prior with the Basel options applied to each draw (see :func:`adjust`)."""

    def __init__(self, base: IlluminationPrior, no_color: bool = False, energy: float | None = None):
        self.base = base
        self.no_color = bool(no_color)
        self.energy = energy

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        return adjust(self.base.sample(rng), self.no_color, self.energy)


def make_illumination(
    kind: str, bip_dir: str | Path | None = None, no_color: bool = False, energy: float | bool | None = None
) -> IlluminationPrior:
    """The illumination prior named ``kind`` (one of ILLUMINATION_KINDS).

    ``bip_dir`` is the Basel Illumination Prior folder (needed by the bip-* kinds);
    ``no_color`` averages every draw over RGB; ``energy`` fixes the sum of squared
    coefficients (True means the Basel default 6.33; None or False leaves it).
    """
    key = str(kind).strip().lower()
    if key not in ILLUMINATION_KINDS:
        raise ConfigError(f"unknown illumination kind {kind!r}: choose one of {', '.join(ILLUMINATION_KINDS)}")
    if energy is True:
        energy = DEFAULT_ENERGY
    elif energy is False:
        energy = None
    if energy is not None:
        try:
            energy = float(energy)
        except (TypeError, ValueError):
            raise ConfigError(f"illumination energy must be a positive number, got {energy!r}") from None
        if not (math.isfinite(energy) and energy > 0):
            raise ConfigError(f"illumination energy must be a positive number, got {energy!r} (the Basel default is 6.33)")
    base: IlluminationPrior
    if key.startswith("bip-"):
        if bip_dir is None:
            raise ConfigError(
                f"illumination {key!r} needs the Basel Illumination Prior folder (bip_dir); "
                "give it, or use 'builtin' or 'frontal'"
            )
        coeffs = load_bip(bip_dir)
        base = BIPEmpirical(coeffs) if key == "bip-empirical" else BIPGaussian(coeffs)
    elif key == "frontal":
        base = FrontalLight()
    else:
        base = BuiltinPrior()
    if no_color or energy is not None:
        return AdjustedPrior(base, no_color=no_color, energy=energy)
    return base
