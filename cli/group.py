"""The CLI's error contract in one place: a MorphgenError (a problem with the user's input)
prints one line, `Error: <message>`, and exits 2 — no traceback. Every command group uses
this class, so sub-groups behave the same when invoked on their own (as tests do)."""
from __future__ import annotations

import sys

import click

from morphgen.errors import MorphgenError


class OneLineErrorGroup(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MorphgenError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)
