"""`morphgen fit`: fit the morphable model to photos (shape, albedo, expression, pose, light,
framing); the records render as the photos' synthetic twins with `morphgen render --from-params`."""
from __future__ import annotations

from pathlib import Path

import click

from morphgen.outputs import NewOutputs, check_writable

from .group import UserPath


@click.command()
@click.argument("photos", type=UserPath(path_type=Path))
@click.option("--out", required=True, type=UserPath(file_okay=False, path_type=Path),
              help="Folder for params.jsonl, overlays/, residuals.csv and summary.json (created).")
@click.option("--model", help="Model file (as in `morphgen render`). Default: the embedded CC0 model.")
@click.option("--size", type=click.IntRange(32, 512), default=128, show_default=True,
              help="Side of the square view the fit works on (pixels); twins render at any size.")
@click.option("--fine-steps", type=click.IntRange(0), default=400, show_default=True,
              help="Steps of the full-size photometric stage: fewer fit faster and less exactly (on renders, 400: "
                   "pose within 1.6 degrees, shading within 4.3 %; 40: 7 degrees, 9.5 %, in a third of the time).")
@click.option("--ids", type=click.IntRange(1), help="Fit only the first N identity folders (sorted).")
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True, help="Fitting processes.")
@click.option("--device", default="cpu", show_default=True, help="cpu, or cuda to fit on a GPU.")
@click.option("--dlib68", is_flag=True,
              help="Also fit dlib's 68 iBUG points where its HOG detector finds the face (frontal to half profile; "
                   "needs the optional dlib-bin and face-recognition-models packages and a model with iBUG-68 points).")
@click.option("--resume", is_flag=True, help="Fit only the photos not yet listed in OUT/residuals.csv, with the "
              "fit's own options (OUT/fit.json) where none are given.")
@click.option("--pool-identities", is_flag=True,
              help="Also write OUT/params_pooled.jsonl: every photo's record with its identity's mean shape and colour "
                   "(one face per person; each photo's pose, expression, light and framing kept), for twins that share "
                   "a face: morphgen render --from-params OUT/params_pooled.jsonl. With --resume on a finished fit it "
                   "only writes that file.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def fit(photos: Path, out: Path, model: str | None, size: int, fine_steps: int, ids: int | None, workers: int,
        device: str, dlib68: bool, resume: bool, pool_identities: bool, quiet: bool) -> None:
    """Fit the model to PHOTOS (a photo, or a folder of them: one sub-folder per identity).

    Per photo: MTCNN's five points (and dlib's 68 with --dlib68), then a coarse-to-fine fit (landmarks, then pixels of
    the face region at half and full size, robust to hair and occluders). Photos without
    a face and unreadable files are counted skips (a one-line error for a single photo).

    Twins of a benchmark: morphgen fit BENCH/images --out fit && morphgen render --from-params fit --out twins
    """
    from morphgen.face_fit import FitOptions
    from recognition import fit_photos as fitting

    check_writable(out, "--out")
    if resume:  # the options not given here are the fit's own (fit.json), as `train --resume` takes its config
        recorded, source = fitting.recorded_inputs(out), click.get_current_context().get_parameter_source
        options = {"model": model, "size": size, "fine_steps": fine_steps, "ids": ids, "dlib68": dlib68}
        model, size, fine_steps, ids, dlib68 = (
            value if source(k) == click.core.ParameterSource.COMMANDLINE else recorded.get(k, value)
            for k, value in options.items())
        fitting.check_recorded(out, model, size, fine_steps, ids, dlib68)  # as the flags would have been
    try:
        with NewOutputs(out) as outputs:
            s = fitting.fit_photos(photos, out, model, FitOptions(size=size, fine_steps=fine_steps), workers=workers,
                                   device=device, resume=resume, ids=ids, dlib68=dlib68, progress=not quiet,
                                   fitted=outputs.keep)
    except KeyboardInterrupt:
        # Each fitted photo's rows are written as it finishes; say how to fit the rest.
        click.echo(f"interrupted: the photos fitted so far are kept in {out}; run the same command with --resume "
                   "to fit the rest", err=True)
        raise SystemExit(130) from None
    run = s["this_run"]
    click.echo(f"fitted {run['fitted']} photos in {run['wall_seconds']:.0f} s ({run['images_per_second']:.2f} img/s, "
               f"{workers} worker(s)); {s['no_face']} without a face, {s['unreadable']} unreadable; mean landmark "
               f"residual {s['landmark_residual_px']:.2f} px ({100 * s['landmark_residual']:.1f} % of eye-mouth), "
               f"colour {s['photometric_residual']:.3f}: {out}")
    if pool_identities:
        n = fitting.pool_identities(out)
        click.echo(f"pooled {n['records']} records into one face for each of {n['identities']} identities: "
                   f"{out / fitting.POOLED}")
