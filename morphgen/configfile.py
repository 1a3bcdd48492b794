"""Reading a user's YAML/JSON config file into a mapping, with one-line errors: the one
reader behind `--config`, pose files, `morphgen train --config` and experiment configs,
and the type and range check of one option value (`check_option`)."""
from __future__ import annotations

import math
import numbers
import os
import re
from pathlib import Path

from .errors import ConfigError, shown


def read_mapping(path: str | Path, what: str, hint: str = "") -> dict:
    """The mapping in `path` (an empty file is {}); `what` names the file in messages
    (e.g. "--config", "pose file") and `hint` follows a does-not-exist message."""
    import yaml

    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a folder: give a YAML or JSON file")
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist{hint}")
    try:
        data = yaml.load(path.read_text(encoding="utf-8-sig"), Loader=_unique_keys_loader())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{what} {path} is not valid YAML/JSON: {_yaml_problem(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must hold a mapping of names to values, got {type(data).__name__}")
    return data


def _unique_keys_loader():
    """PyYAML's safe loader, refusing a key given twice in one mapping (it kept the last:
    `size: 32` then `size: 48` rendered at 48 without a word)."""
    import yaml

    class UniqueKeys(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` merges, it is no key
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                except TypeError:  # an unhashable key: the constructor's own error follows
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} is given twice",
                                                            key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep)

    return UniqueKeys


def _yaml_problem(exc: Exception) -> str:
    """Where and what the parse error is ('line 3, column 6: expected ...'): yaml's own
    first line is only its context ('while parsing a flow mapping'), which says neither."""
    mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
    if mark is None or not problem:
        return str(exc).splitlines()[0]
    text = f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    context, cmark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context:
        text += f" ({context}" + (f" at line {cmark.line + 1}, column {cmark.column + 1}" if cmark else "") + ")"
    return text


def _shown(value) -> str:
    """A wrong value as a message shows it: short values as written, anything else by its
    type (a whole MorphableModel's repr made a 36,000-character "one-line" error)."""
    if value is None or isinstance(value, (str, list, tuple, dict)) or (
            isinstance(value, (int, float, bool)) and len(repr(value)) <= 80):
        return shown(value, 80)
    return f"a {type(value).__name__}"


def as_path(value, what: str) -> Path:
    """`value` (text or a path object) as a Path, else a one-line ConfigError naming `what`
    (the API took `Scene(3)` or `open_dataset(None)` to pathlib's TypeError)."""
    if isinstance(value, (str, os.PathLike)):
        return Path(value)
    raise ConfigError(f"{what} must be a path, got {_shown(value)}")


def option_name(name: str) -> str:
    """The flag spelling of an option or config key: batch_p -> --batch-p."""
    return "--" + str(name).replace("_", "-")


_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def check_option(name: str, value, kind: type, optional: bool = False, low=None, high=None, above=None,
                 label: str | None = None):
    """`value` if it is a `kind` (int, float, bool or str) within [low, high] (and > `above`),
    else a one-line ConfigError naming the option as a flag. This is the one type and range
    check behind flags, YAML/JSON files and the Python API: YAML reads `ids: two` as a
    string and `expressions: maybe` as one too, which would otherwise reach int() deep in
    the work or silently count as true. Ints pass as floats, and so does a number's text where a
    float is asked for (PyYAML reads `lr: 1e-3` as text); path objects pass as strings.
    `label` names the option in messages where it is no flag (a config file's own key)."""
    flag = label or option_name(name)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{flag} needs a value")
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{flag} must be true or false, got {_shown(value)}")
        return value
    if kind is str:
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        if not isinstance(value, str):
            raise ConfigError(f"{flag} must be a text value, got {_shown(value)}")
        return value
    if kind is float and isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 (PyYAML) reads 1e-3, as --help writes it, as text: 1.0e-3 is its float
    if isinstance(value, bool) or not isinstance(value, numbers.Integral if kind is int else numbers.Real):
        raise ConfigError(f"{flag} must be {'an integer' if kind is int else 'a number'}, got {_shown(value)}")
    value = int(value) if kind is int else float(value)
    if not math.isfinite(value):
        raise ConfigError(f"{flag} must be a finite number, got {value!r}")
    if above is not None and value <= above:
        raise ConfigError(f"{flag} must be > {above:g}, got {value:g}")
    if low is not None and high is not None and not low <= value <= high:
        raise ConfigError(f"{flag} must be between {low:g} and {high:g}, got {value:g}")
    if low is not None and value < low:
        raise ConfigError(f"{flag} must be >= {low:g}, got {value:g}")
    if high is not None and value > high:
        raise ConfigError(f"{flag} must be <= {high:g}, got {value:g}")
    return value
