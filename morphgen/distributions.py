"""Scalar distributions for coefficients and pose angles, written as short strings.

One notation serves the CLI, YAML configs and the recorded manifest::

    gaussian                    N(0, 1)
    gaussian(0, 20)             mean 0, standard deviation 20 (a true sd, not a range)
    gaussian(0, 1, trunc=3)     truncated at +-3 standard deviations (resampled, not clipped)
    uniform(-90, 90)
    constant(0)  or just  0
    mixture(0.7*uniform(-35,35), 0.3*uniform(-90,90))

`str(dist)` gives back the canonical string, so a resolved config can be written and read.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Union

import numpy as np

from .errors import ConfigError


@dataclass(frozen=True)
class Gaussian:
    mean: float = 0.0
    std: float = 1.0
    trunc: float | None = None  # in standard deviations

    def sample(self, rng: np.random.Generator, size: int | tuple = ()) -> np.ndarray:
        z = rng.standard_normal(size)
        if self.trunc is not None:
            # Resample out-of-range draws: a truncated normal, deterministic given rng.
            bad = np.abs(z) > self.trunc
            while np.any(bad):
                z = np.where(bad, rng.standard_normal(size), z)
                bad = np.abs(z) > self.trunc
        return self.mean + self.std * z

    def bounds(self) -> tuple[float, float]:
        # An untruncated normal is checked over +-5 sd (all but 6e-7 of its draws).
        t = 5.0 if self.trunc is None else self.trunc
        return self.mean - t * self.std, self.mean + t * self.std

    def __str__(self) -> str:
        t = f", trunc={number_text(self.trunc)}" if self.trunc is not None else ""
        return f"gaussian({number_text(self.mean)}, {number_text(self.std)}{t})"


@dataclass(frozen=True)
class Uniform:
    low: float
    high: float

    def sample(self, rng: np.random.Generator, size: int | tuple = ()) -> np.ndarray:
        return rng.uniform(self.low, self.high, size)

    def bounds(self) -> tuple[float, float]:
        return self.low, self.high

    def __str__(self) -> str:
        return f"uniform({number_text(self.low)}, {number_text(self.high)})"


@dataclass(frozen=True)
class Constant:
    value: float

    def sample(self, rng: np.random.Generator, size: int | tuple = ()) -> np.ndarray:
        return np.full(size, self.value, dtype=np.float64)

    def bounds(self) -> tuple[float, float]:
        return self.value, self.value

    def __str__(self) -> str:
        return f"constant({number_text(self.value)})"


@dataclass(frozen=True)
class Mixture:
    weights: tuple[float, ...]
    components: tuple["Distribution", ...]

    def sample(self, rng: np.random.Generator, size: int | tuple = ()) -> np.ndarray:
        p = np.asarray(self.weights) / sum(self.weights)
        which = rng.choice(len(p), size=size, p=p)
        # Draw every component for every slot so the stream length does not depend on `which`.
        draws = np.stack([c.sample(rng, size) for c in self.components])
        return np.take_along_axis(draws, np.asarray(which)[None, ...], axis=0)[0]

    def bounds(self) -> tuple[float, float]:
        b = [c.bounds() for c in self.components]
        return min(x[0] for x in b), max(x[1] for x in b)

    def __str__(self) -> str:
        return "mixture(" + ", ".join(f"{number_text(w)}*{c}" for w, c in zip(self.weights, self.components)) + ")"


Distribution = Union[Gaussian, Uniform, Constant, Mixture]


def number_text(x: float) -> str:
    """The shortest text that reads back as the same float ('0.3', '45', '1.23456789'):
    how a manifest records a number, so that the config it hashes and the one a worker
    rebuilds from it are the ones given (``:g`` kept 6 digits: 33.3333333 came back as
    33.3333, another grid and another image)."""
    return repr(float(x)).removesuffix(".0")


_CALL = re.compile(r"^\s*([a-z]+)\s*(?:\((.*)\))?\s*$", re.S)


def _split_top(s: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts, depth, cur = [], 0, []
    for ch in s:
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        depth += ch == "("
        depth -= ch == ")"
        cur.append(ch)
    if "".join(cur).strip():
        parts.append("".join(cur))
    return [p.strip() for p in parts]


def _float(s: str, spec: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise ConfigError(f"{spec!r}: {s!r} is not a number") from None
    if not math.isfinite(v):
        raise ConfigError(f"{spec!r}: {s!r} is not a finite number")
    return v


def parse_distribution(spec: "str | float | int | Distribution") -> Distribution:
    """Parse the string notation above (numbers mean constants)."""
    if isinstance(spec, (Gaussian, Uniform, Constant, Mixture)):
        return spec
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return Constant(float(spec))
    if not isinstance(spec, str):
        raise ConfigError(f"distribution must be a string like 'uniform(-90, 90)', got {spec!r}")
    text = spec.strip()
    try:
        return Constant(float(text))
    except ValueError:
        pass
    m = _CALL.match(text)
    if not m:
        raise ConfigError(f"cannot read distribution {spec!r}: write e.g. gaussian(0, 20), uniform(-90, 90), constant(0)")
    name, argtext = m.group(1), m.group(2) or ""
    args = _split_top(argtext) if argtext.strip() else []
    if name == "gaussian":
        pos = [a for a in args if "=" not in a]
        kw = dict(a.split("=", 1) for a in args if "=" in a)
        unknown = set(k.strip() for k in kw) - {"trunc"}
        if unknown or len(pos) not in (0, 2):
            raise ConfigError(f"{spec!r}: write gaussian, gaussian(mean, std) or gaussian(mean, std, trunc=T)")
        mean, std = (_float(pos[0], spec), _float(pos[1], spec)) if pos else (0.0, 1.0)
        trunc = _float(next(iter(kw.values())), spec) if kw else None
        if std < 0:
            raise ConfigError(f"{spec!r}: standard deviation must be >= 0")
        if trunc is not None and trunc <= 0:
            raise ConfigError(f"{spec!r}: trunc must be > 0 (in standard deviations)")
        return Gaussian(mean, std, trunc)
    if name == "uniform":
        if len(args) != 2:
            raise ConfigError(f"{spec!r}: write uniform(low, high)")
        lo, hi = _float(args[0], spec), _float(args[1], spec)
        if lo > hi:
            raise ConfigError(f"{spec!r}: low {lo:g} is above high {hi:g}")
        return Uniform(lo, hi)
    if name == "constant":
        if len(args) != 1:
            raise ConfigError(f"{spec!r}: write constant(value)")
        return Constant(_float(args[0], spec))
    if name == "mixture":
        if not args:
            raise ConfigError(f"{spec!r}: write mixture(w1*dist1, w2*dist2, ...)")
        weights, comps = [], []
        for a in args:
            w, sep, d = a.partition("*")
            if not sep:
                raise ConfigError(f"{spec!r}: each mixture part is weight*distribution, got {a!r}")
            wv = _float(w, spec)
            if wv <= 0:
                raise ConfigError(f"{spec!r}: mixture weights must be > 0")
            weights.append(wv)
            comps.append(parse_distribution(d))
        return Mixture(tuple(weights), tuple(comps))
    raise ConfigError(f"unknown distribution {name!r} in {spec!r}: use gaussian, uniform, constant or mixture")


def check_within(dist: Distribution, low: float, high: float, what: str) -> None:
    """ConfigError unless (practically) every value `dist` produces lies in [low, high]."""
    lo, hi = dist.bounds()
    if lo < low or hi > high:
        raise ConfigError(f"{what} distribution {dist} reaches beyond [{low:g}, {high:g}]")
