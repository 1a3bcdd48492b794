"""`morphgen model ...`: inspect and export morphable models."""
from __future__ import annotations

import json
from pathlib import Path

import click

from morphgen.loading import load_model


@click.group()
def model() -> None:
    """Inspect morphable models (embedded default, BFM 2017/2019 .h5, BFM 2009 .mat)."""


@model.command("info")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON instead of text.")
def info(path: Path | None, as_json: bool) -> None:
    """Print source, vertex and triangle counts, PCA components and landmarks of PATH
    (the embedded default model when PATH is omitted)."""
    m = load_model(path)
    s = m.summary()
    if as_json:
        s["landmark_names"] = sorted(m.landmarks)
        click.echo(json.dumps(s, indent=2))
        return
    c = s["components"]
    click.echo(f"model:      {s['name']} ({s['source']})")
    click.echo(f"vertices:   {s['vertices']}")
    click.echo(f"triangles:  {s['triangles']}")
    click.echo(f"components: shape {c['shape']}, color {c['color']}, expression {c['expression']}")
    click.echo(f"landmarks:  {s['landmarks']} named" + (f", iBUG-68: {s['ibug68']} of 68" if s["ibug68"] else ""))
    if m.landmarks:
        click.echo("            " + ", ".join(sorted(m.landmarks)))
    if s["regions"]:
        click.echo(f"regions:    {', '.join(s['regions'])}")
    click.echo(f"sha256:     {s['sha256']}")
