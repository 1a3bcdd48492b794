"""Option handling of the render commands: a `--config` file holds any option, flags given
on the command line win, and defaults fill the rest (the defaults, the config reader and
the checks live in `morphgen.options`)."""
from __future__ import annotations

import os
from pathlib import Path

import click

from morphgen.configfile import option_name
from morphgen.errors import ConfigError
from morphgen.options import RENDER_DEFAULTS, load_config_file


def default_text(name: str, none: str = "none") -> str:
    """'[default: X]' for a help text, read from RENDER_DEFAULTS (one table for both);
    `none` words a None default ("all", "number of cores")."""
    v = RENDER_DEFAULTS[name]
    if v is None:
        v = none
    elif isinstance(v, bool):
        v = "on" if v else "off"
    return f"[default: {v}]"


# An option typed on the command line that the other options would ignore: (the option, what
# it needs, that need in words). A config file may set them for datasets that turn the
# need on, so only typed ones are refused.
_ACTS_ONLY_WITH = (
    ("mixup_phis", lambda o: o["identity_mixup"], "--identity-mixup: add it"),
    ("mixup_fraction", lambda o: o["identity_mixup"], "--identity-mixup: add it"),
    ("expression_dist", lambda o: o["expressions"], "expressions: drop --no-expressions"),
    ("expression_components", lambda o: o["expressions"], "expressions: drop --no-expressions"),
    ("jpg_quality", lambda o: o.get("image_format") == "jpg", "--image-format jpg: add it"),
)


def check_typed_flags(ctx: click.Context, opts: dict) -> None:
    """A flag typed where the other options make it do nothing (``_ACTS_ONLY_WITH``) is a
    one-line ConfigError: silently ignored, it would still change the recorded config."""
    for name, needed, words in _ACTS_ONLY_WITH:
        if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE and not needed(opts):
            raise ConfigError(f"{option_name(name)} only acts with {words}, or leave it out")


def merged_options(ctx: click.Context, cli_values: dict, own: tuple[str, ...] = (), base: dict | None = None) -> dict:
    """defaults < `base` < config file < flags given on the command line. `own`: the
    command's own options (not render's) that its config file may also set
    (`load_config_file`); `base`: options that stand in for defaults (a source dataset's)."""
    opts = dict(RENDER_DEFAULTS) | (base or {})
    if cli_values.get("config"):
        opts.update(load_config_file(Path(cli_values["config"]), own=own, command=ctx.command.name or "render"))
    for name, val in cli_values.items():
        if name == "config":
            continue
        source = ctx.get_parameter_source(name) if name in ctx.params else click.core.ParameterSource.COMMANDLINE
        if val is not None and source == click.core.ParameterSource.COMMANDLINE:
            opts[name] = val
    if opts["workers"] is None:
        opts["workers"] = len(os.sched_getaffinity(0))
    for name in _PATH_OPTIONS:  # flags and --config values alike: ~ is home, and empty is no path
        value = opts.get(name)
        if isinstance(value, str) and not value.strip() and name != "backgrounds":
            raise ConfigError(f"{option_name(name)} is empty: give a path, or leave it out")
        if isinstance(value, (str, Path)) and str(value).startswith("~"):
            opts[name] = os.path.expanduser(str(value))
    return opts


# Render options that name files or folders (backgrounds: a folder, or a word or colour).
_PATH_OPTIONS = ("out", "model", "landmarks", "bip", "from_params", "backgrounds")
