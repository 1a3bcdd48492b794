"""Specs of optional per-image effects as probabilities: ``off``, a preset name, or a preset
followed by ``effect=probability`` overrides (``realistic,grey=0.3,jpeg=0``); a bare
``effect=p`` list starts from off. Shared by ``--photo`` (camera effects) and
``--appearance`` (hair, eyewear, ...), so both read, check and record alike."""
from __future__ import annotations

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
    return ",".join(f"{e}={p:g}" for e, p in probs) if probs else "off"
