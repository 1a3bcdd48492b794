"""The CLI's error contract in one place: a problem with the user's input -- a
MorphgenError from the library, or a flag click cannot parse (a wrong type, a value out of
range, an unknown option) -- prints one line, `Error: <message>`, and exits 2: no
traceback, no usage block. A Ctrl-C that no command turned into its own line (one that
names --resume) prints "interrupted" and exits 130, as a shell does (click's default is
"Aborted!" and 1). A file that fails mid-run (removed, unwritable, disk full) is one line
naming it, exit code 1. Every command group uses this class, so sub-groups behave the same
when invoked on their own (as tests do)."""
from __future__ import annotations

import os
import sys

import click

from morphgen.errors import MorphgenError


class UserPath(click.Path):
    """click.Path as a shell user expects it everywhere: `~` is the home folder (a shell
    expands it only at a word's start: `--images=~/x` came as is, and a folder named "~"
    was made), and an empty value is an error (`--data ""`, an unset $DATA, read the
    current folder and trained on whatever images lay there)."""

    def convert(self, value, param, ctx):
        if isinstance(value, str):
            if not value.strip():
                self.fail("is empty: give a path", param, ctx)
            value = os.path.expanduser(value)
        return super().convert(value, param, ctx)


class OneLineErrorGroup(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MorphgenError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)
        except click.UsageError as exc:
            where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
            click.echo(f"Error: {exc.format_message()}{where}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except OSError as exc:
            if exc.filename is None:  # not a file's problem: a bug's traceback is worth more
                raise
            # a file or folder that went away or cannot be written mid-run (the inputs and
            # outputs were checked before the work began)
            click.echo(f"Error: {exc.strerror or exc}: {exc.filename}", err=True)
            sys.exit(1)
