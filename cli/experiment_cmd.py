"""`morphgen experiment run CONFIG.yaml`: render, train and evaluate every dataset x
recipe cell of a paper-style experiment, then write results.md / results.csv and one
overlaid ROC plot per benchmark (see recognition/experiment.py for the config format)."""
from __future__ import annotations

from pathlib import Path

import click

from .group import OneLineErrorGroup, UserPath


@click.group("experiment", cls=OneLineErrorGroup)
def experiment() -> None:
    """Reproduce a paper table: datasets x training recipes x evaluations, in one command."""


@experiment.command("run")
@click.argument("config", type=UserPath(dir_okay=False, path_type=Path))
@click.option("--out", type=UserPath(file_okay=False, path_type=Path),
              help="Output folder (datasets, runs, evaluations, results.md). [default: the config's `out:`, "
                   "else ./experiments_out/<config name>]")
@click.option("--dry-run", is_flag=True, help="Check the config and print the plan (with what is already done); run nothing.")
@click.option("--only", "only", multiple=True, metavar="CELL",
              help="Run only this cell (dataset/recipe; shell-style wildcards allowed; repeatable), with the "
                   "cells it starts from. The table still lists every cell.")
def run(config: Path, out: Path | None, dry_run: bool, only: tuple[str, ...]) -> None:
    """Run the experiment in CONFIG (YAML; paths in it are relative to it).

    Every stage whose output is complete is skipped (datasets are resumed chunk by chunk,
    interrupted training resumes from its checkpoint), so run the same command again to
    continue. Evaluations whose data is absent are listed as skipped, with the reason.

    \b
    Examples:
      morphgen experiment run experiments/kortylewski_table2_cpu.yaml --out /tmp/k2
      morphgen experiment run experiments/synface_mixup_cpu.yaml --dry-run
      morphgen experiment run experiments/kortylewski_table2_cpu.yaml --only 'syn_full/*'
    """
    from morphgen.outputs import check_writable
    from recognition.experiment import run_experiment
    from recognition.experiment_config import load_experiment

    exp = load_experiment(config)
    target = check_writable(out or exp.out or Path("experiments_out") / config.stem, "--out")
    try:
        run_experiment(exp, target, list(only), dry_run, say=lambda m: click.echo(m))
    except KeyboardInterrupt:
        click.echo("interrupted: run the same command again to continue (finished stages are skipped, datasets "
                   "and training resume)", err=True)
        raise SystemExit(130) from None


@experiment.command("protocols")
def protocols() -> None:
    """List the evaluation protocols an experiment's `evaluations:` can use, with their
    options and defaults (paths are relative to the config file)."""
    from recognition.evaluation.protocols import COMMON, registry

    for p in registry().values():
        opts = ", ".join(f"{k}={'PATH' if k in p.paths and v is None else repr(v)}"
                         + (" (required)" if k in p.required else "") for k, v in p.defaults.items())
        click.echo(f"{p.name}: {p.summary}\n    {opts}")
    click.echo(f"every protocol also takes: {', '.join(k for k in COMMON if k != 'protocol')}")
