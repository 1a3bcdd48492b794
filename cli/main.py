"""`morphgen`: one command with sub-commands. Errors meant for the user (MorphgenError,
click usage errors) and a Ctrl-C print one line and exit non-zero (`group`); nothing else
is caught. The console script is `entry.main`, which imports this module."""
from __future__ import annotations

import click

from morphgen import __version__

from .group import OneLineErrorGroup


@click.group(cls=OneLineErrorGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="morphgen")
def cli() -> None:
    """morphgen: face-recognition training data from 3D Morphable Models.

    Sample identities from a morphable model (the embedded CC0 default, or your own
    Basel Face Model), render them with spherical-harmonics light, varied pose and
    textured backgrounds, and train and evaluate recognition models on the result.
    """


from .model_cmd import model  # noqa: E402  (sub-commands register after the group exists)
from .render_cmd import preview, render  # noqa: E402
from .stats_cmd import stats  # noqa: E402
from .eval_cmd import eval_group  # noqa: E402
from .train_cmd import embed, train  # noqa: E402
from .experiment_cmd import experiment  # noqa: E402
from .fit_cmd import fit  # noqa: E402

cli.add_command(model)
cli.add_command(render)
cli.add_command(preview)
cli.add_command(stats)
cli.add_command(train)
cli.add_command(embed)
cli.add_command(eval_group)
cli.add_command(experiment)
cli.add_command(fit)


def main() -> None:
    """What console scripts installed before `entry.main` call (a reinstall points them there)."""
    from .entry import main as entry_main

    entry_main()


if __name__ == "__main__":
    cli(prog_name="morphgen")
