"""The registry of evaluation protocols: one ``Protocol`` per module, looked up by name.

A protocol is what an experiment config's ``evaluations: {name: {protocol: P, ...}}``
entry runs, and what ``morphgen experiment`` puts in its tables. Each protocol module
(``lfw``, ``cfp``, ``insightface_bin``, ``pair_list``, ``ijba``, ``pose``, ``real_pairs``,
``synthetic``) ends with a ``PROTOCOL`` that says

- its options and their defaults (the value's type is the type a config must give;
  ``None`` defaults take a path or nothing), which options are paths (resolved against
  the config file) and which are required;
- ``run(model_run, out, options, ctx)``: evaluate one trained run into the folder `out`
  (result.json, summary.md, roc.csv, and per protocol scores.csv, roc.png or per-bin
  plots) and return the result;
- ``columns(options, label, result)``: the table columns of that result (one for most
  protocols; CFP gives FF and FP, a list of .bin files one per file), with result None
  for a cell not evaluated yet;
- ``note(options, label, result)``: the line under the table that says what was measured.

Adding a protocol is one module with a ``PROTOCOL`` and one line in ``MODULES``.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from morphgen.errors import ConfigError, DataError

MODULES = ("synthetic", "pose", "lfw", "ijba", "real_pairs", "cfp", "insightface_bin", "pair_list")
COMMON = {"protocol": None, "label": None, "batch_size": 64}


@dataclass
class EvalContext:
    """What the experiment runner hands every protocol run."""
    cache_dir: Path                 # MTCNN landmark caches, shared by every cell
    shared_dir: Path                # this evaluation's work shared by every cell (rendered benchmarks)
    workers: int = 1                # processes for rendering and landmark detection
    batch_size: int = 64
    progress: bool = True
    say: Callable[[str], None] = print


@dataclass(frozen=True)
class Column:
    """One table column of one cell."""
    key: str                        # CSV column prefix and ROC plot suffix ("" for a protocol's only column)
    title: str                      # table header
    text: str = "not run"           # table cell
    short: str = ""                 # ROC legend tag
    values: dict = field(default_factory=dict)   # CSV values
    curve: str | None = None        # this column's curve in the cell's roc.csv (None: the first curve)


def one_accuracy_column(options: dict, label: str, result: dict | None) -> list:
    """The column most protocols have: their result's cross-validated accuracy."""
    return [accuracy_column("", f"{label} (accuracy)", result)]


@dataclass(frozen=True)
class Protocol:
    name: str
    summary: str
    defaults: dict
    run: Callable
    note: Callable
    columns: Callable = one_accuracy_column
    paths: tuple = ()
    required: tuple = ()
    check: Callable | None = None   # check(options, where): protocol-specific validation

    def options(self, given: dict, base: Path, where: str) -> dict:
        """The defaults updated with `given` (unknown keys and wrong types are one-line
        ConfigErrors naming `where`), paths resolved against `base`."""
        unknown = sorted(set(given) - set(self.defaults))
        if unknown:
            raise ConfigError(f"unknown key {unknown[0]!r} in {where}; allowed: "
                              f"{', '.join(sorted(set(self.defaults) | set(COMMON)))}")
        o = {**self.defaults, **given}
        for k, default in self.defaults.items():
            _check_type(k, o[k], default, k in self.paths, where)
        for k in self.paths:
            o[k] = _resolve(base, o[k])
        for k in self.required:
            if not o.get(k):
                raise ConfigError(f"{where}: protocol {self.name} needs {k}: PATH")
        if self.check is not None:
            self.check(o, where)
        return o

    def missing(self, options: dict) -> str | None:
        """Why this evaluation cannot run here (a data path is absent), or None."""
        for k in self.paths:
            for p in _as_list(options.get(k)):
                if not Path(p).exists():
                    return f"{k} {p} not found"
        return None


def _as_list(v) -> list:
    return [] if v is None else list(v) if isinstance(v, (list, tuple)) else [v]


def _resolve(base: Path, v):
    if v is None or v == "":
        return None
    if isinstance(v, (list, tuple)):
        return [_resolve(base, x) for x in v]
    p = Path(str(v)).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def _check_type(key: str, v, default, is_path: bool, where: str) -> None:
    if is_path:
        if v is not None and not isinstance(v, str) and not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
            raise ConfigError(f"{where}.{key} must be a path, got {v!r}")
        return
    if isinstance(default, bool):
        ok, what = isinstance(v, bool), "true or false"
    elif isinstance(default, int):
        ok = isinstance(v, int) and not isinstance(v, bool) and v >= (0 if "seed" in key else 1)
        what = "a non-negative integer" if "seed" in key else "a positive integer"
    elif isinstance(default, float):
        ok, what = isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0, "a positive number"
    elif isinstance(default, str):
        ok, what = isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool)), "a string"
    else:
        return  # None defaults that are not paths: the protocol's check decides
    if not ok:
        raise ConfigError(f"{where}.{key} must be {what}, got {v!r}")


def registry() -> dict[str, Protocol]:
    """Every protocol by name, in ``MODULES`` order."""
    out = {}
    for m in MODULES:
        p = importlib.import_module(f"{__package__}.{m}").PROTOCOL
        out[p.name] = p
    return out


def get(name) -> Protocol:
    reg = registry()
    if name not in reg:
        raise ConfigError(f"unknown evaluation protocol {name!r}: use one of {', '.join(reg)}")
    return reg[name]


# ----------------------------------------------------------------------------- shared helpers

def check_input(o: dict, where: str, key: str, read: Callable[[], object], needs: tuple = ()) -> None:
    """Read the input file of option `key` now, when it and the options in `needs` name
    existing paths (absent data is a skipped evaluation): a malformed pair list then stops
    the plan, before any rendering or training, as a ConfigError naming the key."""
    if not o.get(key) or not all(o.get(k) and Path(o[k]).exists() for k in (key, *needs)):
        return
    try:
        read()
    except DataError as exc:
        raise ConfigError(f"{where}.{key}: {exc}") from None


def accuracy_column(key: str, title: str, part: dict | None, curve: str | None = None) -> Column:
    """The usual column: cross-validated accuracy mean ± std, with AUC, EER and TAR@FAR
    in the CSV. `part` is the result (or the part of it) holding those figures."""
    from .report import fmt

    if part is None:
        return Column(key, title, curve=curve)
    acc = part["accuracy"]
    vals = {"accuracy_mean": acc.get("mean"), "accuracy_std": acc.get("std"), "auc": part.get("auc")}
    if part.get("eer") is not None:
        vals["eer"] = part["eer"]
    for far, t in (part.get("tar_at_far") or {}).items():
        vals[f"tar_far{far}"] = t.get("tar")
    return Column(key, title, f"{fmt(acc.get('mean'), 3)} ± {fmt(acc.get('std'), 3)}",
                  f"(accuracy {fmt(acc.get('mean'), 3)})", vals, curve)
