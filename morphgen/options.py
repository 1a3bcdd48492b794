"""Render options as plain data: the one table of their defaults (`RENDER_DEFAULTS`), the
reader of `--config` files, and `scene_from_options`, which checks them and builds the
`SceneConfig`. `morphgen render`/`preview`, online training and experiments all go
through here, so an option's name, default and check live in one place; the CLI's help
texts take their defaults from the same table (`cli/render_cmd.py`)."""
from __future__ import annotations

from pathlib import Path

from .configfile import read_mapping
from .errors import ConfigError
from .render.photo import PhotoConfig

# Defaults of every render option (None = decided later, e.g. per-id by a grid).
RENDER_DEFAULTS: dict = {
    "ids": 100, "per_id": None, "out": None, "model": None, "landmarks": None, "seed": 0, "pose": "syn1m", "grid": None,
    "shape_components": None, "color_components": None, "expression_components": None,
    "shape_dist": "gaussian", "color_dist": "gaussian", "expression_dist": "gaussian(0, 0.5, trunc=3)",
    "expressions": True, "illumination": "builtin", "bip": None, "no_color": False, "energy": None,
    "backgrounds": "procedural", "photo": "off", "size": 128, "antialias": 2, "outputs": "", "identity_mixup": False,
    "mixup_phis": "0.5,0.6,0.7,0.8,0.9", "mixup_fraction": 0.5, "device": "cpu",
    "workers": None, "shard": None, "resume": False, "overwrite": False, "image_format": "png",
    "jpg_quality": 95, "container": "folder", "rps": False, "chunk_ids": 10, "dask_address": None, "quiet": False,
}
PER_ID_DEFAULT = 10
BUILTIN_BACKGROUNDS = ("procedural", "scenes", "mixed", "plain")   # other values are colours or folders


def load_config_file(path: Path) -> dict:
    """The options of a `--config` YAML/JSON file, keys normalised to option names (lists
    of outputs / mixup weights and grid mappings joined into their flag spelling)."""
    data = read_mapping(path, "--config")
    out = {}
    for key, val in data.items():
        name = str(key).replace("-", "_")
        if name == "format":
            name = "container"
        if name not in RENDER_DEFAULTS or name in ("config",):
            raise ConfigError(f"--config {path}: unknown key {key!r}; keys are the option names of `morphgen render --help`")
        if isinstance(val, (list, tuple)) and name in ("outputs", "mixup_phis"):
            val = ",".join(str(v) for v in val)
        if isinstance(val, dict) and name == "grid":
            val = ",".join(f"{k}={v}" for k, v in val.items())
        out[name] = val
    return out


def _csv(text) -> list[str]:
    return [t.strip() for t in str(text or "").split(",") if t.strip()]


def _parse_grid(text: str) -> dict:
    spec = {}
    for part in _csv(text):
        key, sep, val = part.partition("=")
        if not sep:
            raise ConfigError(f"--grid part {part!r}: write key=value, e.g. yaw=-90:90:15,lights=3")
        spec[key.strip()] = val.strip()
    return spec


def scene_from_options(opts: dict):
    """Build the SceneConfig (and fill per_id) from merged options; every check raises ConfigError."""
    from .scene import SceneConfig

    for name in ("ids", "per_id"):
        if opts.get(name) is not None and int(opts[name]) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {opts[name]}")
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
        "size": int(opts["size"]),
        "antialias": int(opts["antialias"]),
        "outputs": _csv(opts["outputs"]),
        "device": opts["device"],
    }
    if d["device"] != "cpu":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA device is available here; use --device cpu")
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
    from .render.backgrounds import make_background_source

    make_background_source(d["backgrounds"])  # a missing or empty folder stops here, before any work
    scene = SceneConfig.from_dict(d)
    if opts["per_id"] is None:
        grid = scene.sampling.grid
        opts["per_id"] = len(grid.points()) if grid is not None else PER_ID_DEFAULT
    return scene
