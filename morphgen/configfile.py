"""Reading a user's YAML/JSON config file into a mapping, with one-line errors: the one
reader behind `--config`, pose files, `morphgen train --config` and experiment configs."""
from __future__ import annotations

from pathlib import Path

from .errors import ConfigError


def read_mapping(path: str | Path, what: str, hint: str = "") -> dict:
    """The mapping in `path` (an empty file is {}); `what` names the file in messages
    (e.g. "--config", "pose file") and `hint` follows a does-not-exist message."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist{hint}")
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{what} {path} is not valid YAML/JSON: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must hold a mapping of names to values, got {type(data).__name__}")
    return data
