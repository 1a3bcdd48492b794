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


def check_mixup_flags(ctx: click.Context, opts: dict) -> None:
    """--mixup-phis or --mixup-fraction typed without --identity-mixup: refused, as they
    would be ignored (a config file may set them for datasets that turn mixup on)."""
    typed = [k for k in ("mixup_phis", "mixup_fraction") if ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE]
    if typed and not opts["identity_mixup"]:
        raise ConfigError(f"{option_name(typed[0])} only acts with --identity-mixup: add it, or leave it out")


def merged_options(ctx: click.Context, cli_values: dict, own: tuple[str, ...] = ()) -> dict:
    """defaults < config file < flags given on the command line. `own`: the command's own
    options (not render's) that its config file may also set (`load_config_file`)."""
    opts = dict(RENDER_DEFAULTS)
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
    return opts
