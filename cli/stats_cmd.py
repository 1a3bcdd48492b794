"""`morphgen stats DIR`: plots of a dataset's pose, light and identity distributions."""
from __future__ import annotations

import json
from pathlib import Path

import click

from .group import UserPath


@click.command()
@click.argument("dataset", type=UserPath(file_okay=False, path_type=Path))
@click.option("--out", type=UserPath(dir_okay=False, path_type=Path),
              help="PNG to write. [default: DATASET/stats.png]")
def stats(dataset: Path, out: Path | None) -> None:
    """Plot DATASET's pose histograms, light directions and energies, and identity distances
    to a PNG, and print the summary numbers as JSON."""
    from morphgen.errors import DataError
    from morphgen.outputs import NewOutputs
    from morphgen.stats import check_plot_path, plot

    if not dataset.is_dir():
        raise DataError(f"{dataset} is not a folder: give a dataset written by morphgen render")
    out = check_plot_path(out or dataset / "stats.png")
    with NewOutputs(out):
        summary = plot(dataset, out)
    click.echo(json.dumps(summary, indent=1))
    click.echo(f"wrote {out}")
    planned = _planned_images(dataset)
    if planned is not None and summary["images"] < planned:
        click.echo(f"note: the dataset is unfinished ({summary['images']} of {planned} images): these figures are of "
                   "what is rendered so far; finish it with the same `morphgen render` command and --resume")


def _planned_images(dataset: Path) -> int | None:
    """The images the dataset's manifest plans (all shards), or None without a readable one."""
    from morphgen.layout import manifest_or_none

    counts = (manifest_or_none(dataset) or {}).get("counts")
    images = counts.get("images") if isinstance(counts, dict) else None  # (a damaged manifest: no note)
    return images if isinstance(images, int) and not isinstance(images, bool) else None
