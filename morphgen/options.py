"""Render options as plain data: the one table of their defaults (`RENDER_DEFAULTS`), the
reader of `--config` files, and `scene_from_options`, which checks them and builds the
`SceneConfig`. `morphgen render`/`preview`, online training and experiments all go
through here, so an option's name, default and check live in one place; the CLI's help
texts take their defaults from the same table (`cli/render_cmd.py`)."""
from __future__ import annotations

import os
import re
from pathlib import Path

from .configfile import as_path, check_option, read_mapping
from .errors import ConfigError
from .appearance import AppearanceConfig
from .render.photo import PhotoConfig

# Defaults of every render option (None = decided later, e.g. per-id by a grid).
RENDER_DEFAULTS: dict = {
    "ids": 100, "per_id": None, "out": None, "model": None, "landmarks": None, "seed": 0, "pose": "syn1m", "grid": None,
    "shape_components": None, "color_components": None, "expression_components": None,
    "shape_dist": "gaussian", "color_dist": "gaussian", "expression_dist": "gaussian(0, 0.5, trunc=3)",
    "expressions": True, "illumination": "builtin", "bip": None, "no_color": False, "energy": None,
    "backgrounds": "procedural", "photo": "off", "appearance": "off", "size": 128, "antialias": "edges", "lod": "auto", "outputs": "", "identity_mixup": False,
    "mixup_phis": "0.5,0.6,0.7,0.8,0.9", "mixup_fraction": 0.5, "device": "cpu",
    "workers": None, "shard": None, "resume": False, "overwrite": False, "image_format": "png",
    "jpg_quality": 95, "container": "folder", "rps": False, "chunk_ids": 10, "params_format": "auto",
    "dask_address": None, "quiet": False,
}
PER_ID_DEFAULT = 10
# Type (and range, where nothing later checks it) of each render option: flags arrive
# typed, YAML values do not (`ids: two`, `expressions: maybe`). Checked first, so a bad
# value is a one-line error before any work, never a traceback or a silent `true`.
_INT, _TEXT, _FLAG, _NUMBER = (int, {}), (str, {}), (bool, {}), (float, {})
RENDER_TYPES: dict[str, tuple[type, dict]] = {
    "ids": (int, {"low": 1}), "per_id": (int, {"low": 1}), "seed": (int, {"low": 0}), "out": _TEXT, "model": _TEXT,
    "landmarks": _TEXT, "grid": _TEXT, "shape_components": _INT, "color_components": _INT,
    "expression_components": _INT, "shape_dist": _TEXT, "color_dist": _TEXT, "expression_dist": _TEXT,
    "expressions": _FLAG, "illumination": _TEXT, "bip": _TEXT, "no_color": _FLAG, "energy": (float, {"above": 0, "high": 1000}),
    "backgrounds": _TEXT, "photo": _TEXT, "appearance": _TEXT, "size": _INT, "outputs": _TEXT,
    "identity_mixup": _FLAG, "mixup_phis": _TEXT, "mixup_fraction": _NUMBER, "device": _TEXT,
    "workers": (int, {"low": 1}), "shard": _TEXT, "resume": _FLAG, "overwrite": _FLAG, "image_format": _TEXT,
    "jpg_quality": _INT, "container": _TEXT, "rps": _FLAG, "chunk_ids": _INT, "params_format": _TEXT,
    "dask_address": _TEXT, "quiet": _FLAG,
}
# A controlled grid bigger than this per identity is a typo (a step of 0.0001), not a benchmark.
MAX_GRID_POINTS = 10_000
BUILTIN_BACKGROUNDS = ("procedural", "scenes", "mixed", "plain")   # other values are colours or folders


def load_config_file(path: Path, what: str = "--config", own: tuple[str, ...] = (), command: str = "render") -> dict:
    """The options of a `--config` YAML/JSON file, keys normalised to option names (lists
    of outputs / mixup weights and grid mappings joined into their flag spelling); `what`
    names the file in messages (`morphgen train --online` reads one too). `own`: keys of
    the reading `command`'s own options, allowed besides the render options (a preview
    reads a render config, and its rows and cols)."""
    data = read_mapping(path, what)
    out = {}
    for key, val in data.items():
        name = str(key).replace("-", "_")
        if name == "format":
            name = "container"
        if (name not in RENDER_DEFAULTS and name not in own) or name in ("config",):
            also = f" or `morphgen {command} --help`" if command != "render" else ""
            raise ConfigError(f"{what} {path}: unknown key {key!r}; keys are the option names of `morphgen render --help`{also}")
        out[name] = config_value(name, val)
    return out


def config_value(name: str, val):
    """A config file's value in its flag spelling: lists of outputs / mixup weights and
    grid mappings joined, a single weight as text, and `photo: off` / `appearance: off` /
    `lod: off` (which YAML reads as false) as 'off'."""
    if name in ("outputs", "mixup_phis") and isinstance(val, (list, tuple, int, float)) and not isinstance(val, bool):
        return ",".join(str(v) for v in val) if isinstance(val, (list, tuple)) else str(val)
    if name == "grid" and isinstance(val, dict):
        return ",".join(f"{k}={v}" for k, v in val.items())
    if name in ("photo", "appearance", "lod") and val is False:
        return "off"
    return val


def check_types(opts: dict) -> None:
    """Every render option's type and range (``RENDER_TYPES``; ``antialias`` and ``lod``,
    a word or a number, by :func:`morphgen.scene.antialias_value` and
    :func:`morphgen.lod.parse_lod`), in place."""
    from .lod import parse_lod
    from .scene import antialias_value

    for name, (kind, limits) in RENDER_TYPES.items():
        if name in opts:
            opts[name] = check_option(name, opts[name], kind, optional=RENDER_DEFAULTS[name] is None, **limits)
    if "antialias" in opts:
        opts["antialias"] = antialias_value(opts["antialias"])
    if "lod" in opts:
        opts["lod"] = parse_lod(opts["lod"])
    if not isinstance(opts.get("pose"), (str, dict)):
        raise ConfigError(f"--pose must be a preset name, a YAML file or a mapping of angles, got {opts.get('pose')!r}")


def grid_points(grid) -> int:
    """Images per identity of a controlled grid, counted without listing them."""
    n = grid.lights
    for axis in (grid.yaw, grid.pitch, grid.roll):
        n *= axis.count() if axis is not None else 1
    return n


def _csv(text) -> list[str]:
    return [t.strip() for t in str(text or "").split(",") if t.strip()]


def _parse_grid(text: str) -> dict:
    spec = {}
    for part in _csv(text):
        key, sep, val = part.partition("=")
        if not sep:
            raise ConfigError(f"--grid part {part!r}: write key=value, e.g. yaw=-90:90:15,lights=3")
        if key.strip() in spec:
            raise ConfigError(f"--grid {text!r} gives {key.strip()} twice: give each key once")
        spec[key.strip()] = val.strip()
    return spec


def paths_from(base: Path, opts: dict) -> dict:
    """`opts` with the files and folders its render options name (model, bip, landmarks, a
    backgrounds folder, a pose file) read from `base` where relative, `~` as home; words
    (a pose preset, a built-in background, a colour) and empty values stay as they are.
    The one reading of an experiment config's render options, its datasets' and its
    recipes' ``online_set`` alike (from its folder), and of a `train` run's ``online_set``
    (from the folder the command ran in, saved whole for a --resume)."""
    from .sampling import POSE_PRESETS

    out = dict(opts)
    for key, value in opts.items():
        if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
            continue
        text = str(value)
        if (key in ("model", "bip", "landmarks")
                or key == "backgrounds" and text not in BUILTIN_BACKGROUNDS and not text.startswith("color:")
                or key == "pose" and text not in POSE_PRESETS):
            path = Path(text).expanduser()
            out[key] = str(path if path.is_absolute() else (base / path).resolve())
    return out


def _check_backgrounds(spec: str) -> None:
    """A missing or empty background folder, or one without a single readable image, stops
    here, before any work: found while rendering, it would leave a dataset skeleton that
    the corrected command then refuses as another config."""
    import warnings

    import numpy as np

    from .render.backgrounds import FolderBackgrounds, make_background_source

    source = make_background_source(spec)
    if isinstance(source, FolderBackgrounds):
        with warnings.catch_warnings():  # the broken files it meets are the renderer's to report
            warnings.simplefilter("ignore")
            source.sample(np.random.default_rng(0), 16, 16)


def scene_config(config: str | Path | None = None, overrides: dict | None = None, what: str = "--config"):
    """The SceneConfig of a `--config` file (None or 'default': none) and render options on
    top, as `morphgen render` merges them (defaults < file < options), checked by
    :func:`scene_from_options`; `what` names the file in messages. An option that is not a
    render option is a ConfigError, as an unknown flag is."""
    opts = dict(RENDER_DEFAULTS)
    if config not in (None, "default"):
        opts.update(load_config_file(as_path(config, what), what))
    for name, val in (overrides or {}).items():
        if name not in RENDER_DEFAULTS:
            raise ConfigError(f"unknown render option {name!r}: the options are those of `morphgen render --help` "
                              "(with _ for -)")
        if val is not None:
            opts[name] = config_value(name, val)
    return scene_from_options(opts)


def check_device(device: str) -> str:
    """`device` if torch can use it here (cpu, or cuda / cuda:N with a GPU visible), else a
    one-line ConfigError: a typo must not surface as a torch traceback after work began. The
    one check of render, train, embed and fit; torch is imported only for a GPU."""
    if not re.fullmatch(r"cpu|cuda(:[0-9]+)?", str(device)):
        raise ConfigError(f"unknown --device {device!r}: use cpu or cuda (cuda:N for GPU N)")
    if device != "cpu":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("--device cuda but no CUDA device is visible to torch: use --device cpu")
    return device


def scene_from_options(opts: dict):
    """Build the SceneConfig (and fill per_id) from merged options; every check raises ConfigError."""
    from .scene import SceneConfig

    check_types(opts)
    try:
        phis = [float(p) for p in _csv(opts["mixup_phis"])]
    except ValueError:
        raise ConfigError(f"--mixup-phis {opts['mixup_phis']!r}: write comma-separated numbers, e.g. 0.6,0.8") from None
    d = {
        "model": str(opts["model"]) if opts["model"] else None,
        "landmarks": str(opts["landmarks"]) if opts.get("landmarks") else None,
        "seed": int(opts["seed"]),
        "ids": int(opts["ids"]),
        "shape_components": opts["shape_components"],
        "color_components": opts["color_components"],
        "expression_components": opts["expression_components"],
        "shape_dist": opts["shape_dist"],
        "color_dist": opts["color_dist"],
        "expression_dist": opts["expression_dist"],
        "expressions": bool(opts["expressions"]),
        "pose": opts["pose"] if isinstance(opts["pose"], dict) else str(opts["pose"]),  # preset, file or mapping
        "grid": _parse_grid(opts["grid"]) if opts["grid"] else None,
        "identity_mixup": {"phis": phis, "fraction": float(opts["mixup_fraction"])} if opts["identity_mixup"] else None,
        "illumination": opts["illumination"],
        "bip": str(opts["bip"]) if opts["bip"] else None,
        "no_color": bool(opts["no_color"]),
        "energy": opts["energy"],
        "backgrounds": str(opts["backgrounds"]),
        "photo": PhotoConfig.parse(opts.get("photo") or "off").to_spec(),
        "appearance": AppearanceConfig.parse(opts.get("appearance") or "off").to_spec(),
        "size": int(opts["size"]),
        "antialias": opts["antialias"],
        "lod": opts["lod"],
        "outputs": _csv(opts["outputs"]),
        "device": opts["device"],
    }
    check_device(d["device"])
    if len(set(d["outputs"])) < len(d["outputs"]):
        raise ConfigError(f"--outputs {','.join(d['outputs'])} names an output twice: name each once")
    if not d["backgrounds"].strip():
        raise ConfigError(f"--backgrounds is empty: use {', '.join(BUILTIN_BACKGROUNDS)}, color:R,G,B or a folder "
                          "of images")
    if d["illumination"].startswith("bip") and not d["bip"]:
        raise ConfigError(f"--illumination {d['illumination']} needs --bip DIR (a folder of .rps files)")
    if d["bip"] and not d["illumination"].startswith("bip"):
        d["illumination"] = "bip-empirical"
    if d["model"] or d["landmarks"]:
        from .loading import load_model

        # fail before any work on a missing or corrupt model, or one without its five alignment points
        load_model(d["model"], d["landmarks"], need_five_points=True)
        d["model"], d["landmarks"] = (str(Path(p).resolve()) if p else None for p in (d["model"], d["landmarks"]))
    if d["backgrounds"] not in BUILTIN_BACKGROUNDS and not d["backgrounds"].startswith("color:"):
        d["backgrounds"] = str(Path(d["backgrounds"]).resolve())
    _check_backgrounds(d["backgrounds"])
    scene = SceneConfig.from_dict(d)
    grid = scene.sampling.grid
    if grid is not None and grid_points(grid) > MAX_GRID_POINTS:
        raise ConfigError(f"--grid {opts['grid']} makes {grid_points(grid):,} images per identity, more than "
                          f"{MAX_GRID_POINTS:,}: use coarser steps")
    if opts["per_id"] is None:
        opts["per_id"] = grid_points(grid) if grid is not None else PER_ID_DEFAULT
    return scene
