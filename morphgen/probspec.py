"""Specs of optional per-image effects as probabilities: ``off``, a preset name, or a preset
followed by ``effect=probability`` overrides (``realistic,grey=0.3,jpeg=0``); a bare
``effect=p`` list starts from off. Shared by ``--photo`` (camera effects) and
``--appearance`` (hair, eyewear, ...), so both read, check and record alike."""
from __future__ import annotations

import numpy as np

from .distributions import number_text
from .errors import ConfigError


def parse_probabilities(spec, effects: tuple[str, ...], presets: dict[str, dict[str, float]], option: str
                        ) -> tuple[tuple[str, float], ...]:
    """((effect, probability > 0), ...) in `effects` order; ConfigError names `option`.
    YAML reads an unquoted `off` as false: false and None mean off too."""
    if spec is None or spec is False:
        return ()
    if isinstance(spec, dict):
        items = [f"{k}={v}" for k, v in spec.items()]
    else:
        items = [t.strip() for t in str(spec if spec is not None else "off").split(",") if t.strip()]
    probs: dict[str, float] = {}
    overridden: set[str] = set()
    for k, item in enumerate(items):
        name, sep, val = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep:
            if k != 0 or name not in presets:
                raise ConfigError(f"{option} {spec!r}: {name!r} is not a preset ({', '.join(presets)}); "
                                  "write a preset first, then effect=probability items")
            probs.update(presets[name])
            continue
        if name not in effects:
            raise ConfigError(f"{option} {spec!r}: unknown effect {name!r}; effects: {', '.join(effects)}")
        if name in overridden:
            raise ConfigError(f"{option} {spec!r} gives {name} twice: give each effect once")
        overridden.add(name)
        try:
            p = float(val)
        except ValueError:
            p = float("nan")
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"{option} {spec!r}: {name}={val.strip()} must be a probability in [0, 1]")
        probs[name] = p
    return tuple((e, probs[e]) for e in effects if probs.get(e, 0.0) > 0.0)


def to_spec(probs: tuple[tuple[str, float], ...]) -> str:
    """The canonical spec a manifest records: 'off' or 'effect=p,...'."""
    return ",".join(f"{e}={number_text(p)}" for e, p in probs) if probs else "off"


class Categorical:
    """A fixed categorical distribution whose draws equal ``rng.choice(len(p), p=p)``'s
    (numpy draws one uniform and searches the normalised cumulative sum) at a tenth of the
    cost: choice re-checks ``p`` on every call, and the appearance sampler draws a few
    hairstyle, colour and beard categories per image."""

    def __init__(self, p) -> None:
        cdf = np.asarray(p, np.float64).cumsum()
        self.cdf = cdf / cdf[-1]

    def draw(self, rng: np.random.Generator) -> int:
        return int(self.cdf.searchsorted(rng.random(), side="right"))
