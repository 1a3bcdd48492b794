"""`morphgen render`: write a dataset; `morphgen preview`: a contact sheet to look at."""
from __future__ import annotations

from pathlib import Path

import click

from morphgen.appearance import PARTS as APPEARANCE_PARTS
from morphgen.errors import ConfigError
from morphgen.options import PER_ID_DEFAULT, RENDER_DEFAULTS, scene_from_options
from morphgen.outputs import check_image_path, check_writable
from morphgen.render.photo import EFFECTS as PHOTO_EFFECTS

from .group import UserPath
from .options import check_typed_flags, merged_options
from .options import default_text as _d

_LANDMARKS_HELP = ("Landmark file of the model, replacing its own landmarks: written by `morphgen model landmarks`, or "
                   "your own (JSON {\"landmarks\": {name: vertex}}, or 68 vertex indices in iBUG order). "
                   "[default: <model>.landmarks.json beside the model file, when present]")
_OUTPUT_HELP = ("Extra modalities beside each image, comma-separated: depth, normals, albedo, illumination, mask, "
                "correspondence, regions (PNG; depth uint16 in 0.1 mm, illumination uint16 in 0.001 of irradiance).")


def scene_options(f):
    """Options shared by `render` and `preview` (everything that decides the pixels)."""
    opts = [
        click.option("--config", type=UserPath(dir_okay=False, path_type=Path),
                     help="YAML/JSON file holding any of these options (keys as option names); flags given on the command line win."),
        click.option("--model", help="Model file: BFM 2017/2019 .h5, BFM 2009 .mat or morphgen .npz. Default: the embedded CC0 model."),
        click.option("--landmarks", help=_LANDMARKS_HELP),
        click.option("--seed", type=int, help="Seed of every random draw. " + _d("seed")),
        click.option("--pose", help="Pose distribution: preset syn1m (yaw +-90, pitch +-30, roll +-15) or frontal (yaw +-35), or a YAML file of per-angle distributions like 'yaw: gaussian(0, 20)'. " + _d("pose")),
        click.option("--grid", help="Controlled mode instead of random pose: e.g. 'yaw=-90:90:15,pitch=0:0:1,lights=3'; per-id = grid size."),
        click.option("--shape-components", type=int, help="Shape PCA components used. " + _d("shape_components", none="all")),
        click.option("--color-components", type=int, help="Color PCA components used. " + _d("color_components", none="all")),
        click.option("--expression-components", type=int, help="Expression PCA components used. " + _d("expression_components", none="all")),
        click.option("--shape-dist", help="Shape coefficient distribution, e.g. gaussian, 'gaussian(0, 1, trunc=3)', 'uniform(-2, 2)', 'constant(0)'. " + _d("shape_dist")),
        click.option("--color-dist", help="Color coefficient distribution (same notation). " + _d("color_dist")),
        click.option("--expression-dist", help="Expression coefficient distribution. " + _d("expression_dist")),
        click.option("--expressions/--no-expressions", default=None, help="Sample facial expressions. " + _d("expressions")),
        click.option("--illumination", type=click.Choice(["builtin", "bip-empirical", "bip-gaussian", "frontal"]),
                     help="Light source: built-in SH prior, Basel Illumination Prior (random file or fitted gaussian; needs --bip), or a static frontal light. " + _d("illumination")),
        click.option("--bip", type=UserPath(path_type=Path), help="Folder of Basel Illumination Prior .rps files."),
        click.option("--no-color", is_flag=True, default=None, help="Grey light: average SH coefficients over RGB."),
        click.option("--energy", type=float, help="Rescale light so the sum of squared SH coefficients is this (Basel: 6.33)."),
        click.option("--backgrounds", help="'procedural' (built-in textures: a pool of 1,024 drawn from 5 pattern kinds, each image a random crop, rotation/flip and channel order of one), 'scenes' (built-in photo-like rooms, streets and crowds, out of focus), 'mixed' (half of each), 'plain' (random colour), 'color:R,G,B', or a folder of images (e.g. DTD). " + _d("backgrounds")),
        click.option("--photo", help="Camera and photo effects on each image: 'off', the preset 'realistic', or a "
                     "preset then effect=probability items, e.g. 'realistic,grey=0.3,jpeg=0' (0 switches one off). "
                     "Effects: " + ", ".join(PHOTO_EFFECTS) + " (a tight crop: past a box around the face the picture "
                     "ends, padded as an aligner pads it, with its edge pixels or black); what each image got is "
                     "recorded in its params (`morphgen preview --captions` writes it under each tile). "
                     + _d("photo")),
        click.option("--appearance", help="Hair with volume, eyewear, facial hair, skin detail (spots, wrinkles, "
                     "fine texture), clothing, eye catch-lights and lashes, shiny skin: 'off', the preset 'full', "
                     "or a preset then part=probability items, "
                     "e.g. 'full,eyewear=0' (0 switches one off). Parts: " + ", ".join(APPEARANCE_PARTS)
                     + " (hair_vary: an image re-draws its identity's hairstyle; shine: specular highlights of oily "
                     "skin, not in 'full' yet, e.g. 'full,shine=0.6'); recorded in each image's params. "
                     + _d("appearance")),
        click.option("--size", type=int, help="Image side in pixels (16..1024). " + _d("size")),
        click.option("--antialias", help="'edges': analytic anti-aliasing of silhouette and occlusion edges (the "
                     "cost of one render at the image size); or a supersampling factor, 1 = off (1..4), each pixel "
                     "the mean of k x k samples (2 was the default before edges). " + _d("antialias")),
        click.option("--lod", help="Level of detail: 'auto' renders a mesh denser than the pixels (a Basel model at "
                     "128 px) on a subset of its own vertices, with no edge longer than 1.2 px (landmarks, borders "
                     "and params unchanged; `morphgen model info MODEL` says how many it keeps); 'off' the whole "
                     "mesh; a vertex count to decimate to; or the longest edge in pixels, 0.5px-4px (auto is 1.2px; e.g. "
                     "1.6px is coarser: faster, a little further from the whole mesh; benchmarks/bench_lod.py prints "
                     "the trade). "
                     + _d("lod")),
        click.option("--outputs", help=_OUTPUT_HELP),
        click.option("--identity-mixup", is_flag=True, default=None, help="SynFace identity mixup: mix a fraction of images with a partner identity (soft labels recorded)."),
        click.option("--mixup-phis", help="Comma-separated weights phi of the own identity. " + _d("mixup_phis")),
        click.option("--mixup-fraction", type=float, help="Fraction of images that are mixed. " + _d("mixup_fraction")),
        click.option("--device", type=click.Choice(["cpu", "cuda"]), help="cpu: fused numba renderer in worker processes; cuda: batched torch renderer on the GPU. " + _d("device")),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


@click.command()
@click.option("--ids", type=int, help="Number of identities. " + _d("ids"))
@click.option("--per-id", type=int, help="Images per identity. " + _d("per_id", none=f"{PER_ID_DEFAULT}, or the grid size"))
@click.option("--out", type=UserPath(file_okay=False, path_type=Path), help="Output folder (required).")
@scene_options
@click.option("--workers", type=int, help="Worker processes. " + _d("workers", none="number of cores"))
@click.option("--shard", help="Render only part K of N of the dataset (e.g. 3/8), for Slurm arrays and the like.")
@click.option("--resume", is_flag=True, help="Finish an interrupted run in --out (same config).")
@click.option("--overwrite", is_flag=True, help="Delete the dataset in --out and start again (all of it: with --shard, "
              "the other shards' finished chunks too; shards of one array job use --resume).")
@click.option("--from-params", type=UserPath(path_type=Path),
              help="Render exactly these recorded params instead of sampling: a .jsonl file of params records, a "
                   "`morphgen fit` output folder, a dataset folder (or its params folder or one of its params files). "
                   "Records hold values rounded to 6 decimals (float32 in Parquet), so a dataset's images come back within "
                   "about a grey level, not byte for byte. Identities and samples are the records' own "
                   "(--ids and --per-id are not used); --photo and --appearance draw for records that have none. "
                   "From a dataset, the options that decide how its images look (model, size, anti-aliasing, level "
                   "of detail, pose scale, backgrounds, outputs, photo effects, appearance, image format) default to "
                   "its manifest's; a flag or --config changes one.")
@click.option("--image-format", type=click.Choice(["png", "jpg"]), help="Encoding of the colour images (--outputs modalities are always lossless PNG). " + _d("image_format"))
@click.option("--jpg-quality", type=int, help="JPEG quality 1..100. " + _d("jpg_quality"))
@click.option("--format", "container", type=click.Choice(["folder", "wds"]),
              help="folder: images/<id>/<id>_<n>.png; wds: WebDataset tar shards in wds/. " + _d("container"))
@click.option("--rps", is_flag=True, default=None, help="Also write a Basel-generator-style .rps JSON per image.")
@click.option("--chunk-ids", type=int, help="Identities per chunk (unit of work, atomic writes and resume). " + _d("chunk_ids"))
@click.option("--params-format", type=click.Choice(["auto", "parquet", "jsonl"]),
              help="Per-image params files: parquet (params/chunk_*.parquet, columnar float32, needs pyarrow: "
                   "pip install 'morphgen[parquet]') or jsonl (one JSON object a line). auto: the format of the "
                   "dataset already in --out, else parquet where pyarrow is installed and jsonl where it is not. "
                   + _d("params_format"))
@click.option("--dask", "dask_address", help="Run chunks on a Dask distributed cluster: scheduler address, or 'local' for a local cluster.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def render(ctx: click.Context, **kwargs) -> None:
    """Render a dataset: DIR/images/<id>/<id>_<n>.png, per-image parameters and landmarks in
    DIR/params/*.parquet (or *.jsonl), and DIR/manifest.json.

    SYN-1M (Kortylewski et al.): morphgen render --ids 10000 --per-id 100 --out syn1m
    """
    from morphgen.dataset import DatasetJob, OutputConfig, run

    opts = merged_options(ctx, kwargs)
    if opts.get("from_params"):  # a dataset's records are drawn as that dataset drew them, unless told otherwise
        from morphgen.dataset.from_params import source_look

        look = source_look(Path(opts["from_params"]))
        opts = merged_options(ctx, kwargs, base=look)
        taken = {k: v for k, v in look.items() if opts[k] == v and v != RENDER_DEFAULTS[k]}
        if taken and not opts["quiet"]:
            click.echo("--from-params: drawing as the source dataset did: "
                       + " ".join(f"--{k.replace('_', '-')} " + ("(its own)" if isinstance(v, dict) else str(v))
                                  for k, v in taken.items()) + " (a flag changes one)")
    check_typed_flags(ctx, opts)
    if not opts.get("out"):
        raise ConfigError("--out is required: the folder to write the dataset into")
    scene = scene_from_options(opts)
    check_writable(opts["out"], "--out")
    job = DatasetJob(scene, opts["per_id"], OutputConfig.from_options(opts, Path(opts["out"])))
    if opts.get("from_params"):
        from morphgen.dataset.from_params import ParamsJob

        if opts["grid"] or opts["identity_mixup"]:
            raise ConfigError("--from-params renders the recorded images as they are: --grid and --identity-mixup "
                              "do not apply to them; leave them out")

        job = ParamsJob.from_source(opts["from_params"], job.scene, job.output)
    client = _dask_client(opts["dask_address"], opts["workers"]) if opts.get("dask_address") else None
    try:
        summary = run(Path(opts["out"]), job, workers=opts["workers"], shard=opts.get("shard"), resume=opts["resume"],
                      overwrite=opts["overwrite"], progress=not opts["quiet"],
                      executor=client.get_executor() if client else None)
    except KeyboardInterrupt:
        # Finished chunks are on disk (each one atomic); say how to finish the rest.
        click.echo(f"interrupted: finished chunks are kept in {opts['out']}; run the same command with --resume "
                   "to render the rest", err=True)
        raise SystemExit(130) from None
    finally:
        if client is not None:
            _close_quietly(client)
    state = "complete" if summary["complete"] else f"{summary['chunks_done']}/{summary['chunks']} chunks done"
    click.echo(f"rendered {summary['images']} images in {summary['seconds']:.1f} s "
               f"({summary['images_per_s']:.0f} img/s, {summary['bytes'] / 1e6:.1f} MB); dataset {state}: {opts['out']}")


def _dask_client(address: str, workers: int):
    """A Dask distributed client: 'local' starts (and owns) a local cluster of `workers` processes."""
    try:
        from distributed import Client
    except ImportError:
        raise ConfigError("--dask needs the 'distributed' package: pip install distributed") from None
    if address == "local":
        return Client(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
    try:
        return Client(address, timeout=30)
    except OSError as exc:
        raise ConfigError(f"--dask {address}: cannot reach the scheduler ({exc})") from None
    except ValueError as exc:  # distributed's parse of the address
        raise ConfigError(f"--dask {address}: not a scheduler address ({exc}): give HOST:PORT, tcp://HOST:PORT or local") from None


def _close_quietly(client) -> None:
    """Close a Dask client (and the local cluster it owns) with the `distributed` logger
    muted: a worker heartbeat racing the shutdown logs a CommClosedError after a
    successful render, which reads like a failure."""
    import logging

    log = logging.getLogger("distributed")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        client.close()
    finally:
        log.setLevel(level)


def caption_lines(p) -> list[str]:
    """A preview tile's caption: its pose, and the photo effects it got (crop's padding named)."""
    effects = [("crop (black)" if fx["black"] else "crop (edge)") if name == "crop" else name.replace("_", " ")
               for name, fx in (p.photo or {}).items()]
    return [f"yaw {p.yaw:.0f} pitch {p.pitch:.0f}", ", ".join(effects) or "no effects" if p.photo is not None else ""]


@click.command()
@click.option("--out", type=UserPath(dir_okay=False, path_type=Path), default=Path("preview.png"), show_default=True,
              help="PNG file to write.")
@click.option("--rows", type=int, default=6, show_default=True, help="Identities (rows).")
@click.option("--cols", type=int, default=8, show_default=True, help="Samples per identity (columns).")
@click.option("--captions", is_flag=True, help="Under each tile, its yaw and pitch and the photo effects it got.")
@scene_options
@click.pass_context
def preview(ctx: click.Context, out: Path, rows: int, cols: int, captions: bool, **kwargs) -> None:
    """Write a contact sheet: one identity per row, its samples across (pose, light, expression vary).

    With a render --config, it shows what that dataset will hold: its scene options and its
    ids (the pool identity mixup draws partners from) are read, its other dataset keys
    (out, per_id, workers...) are not. A preview's own config may also set rows and cols.
    """
    import numpy as np

    from morphgen.scene import SceneRenderer
    from morphgen.sheet import write_sheet

    opts = merged_options(ctx, kwargs, own=("rows", "cols"))
    check_typed_flags(ctx, opts)
    rows, cols = (opts.get(name, value) if ctx.get_parameter_source(name) != click.core.ParameterSource.COMMANDLINE
                  else value for name, value in (("rows", rows), ("cols", cols)))
    if not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 64 for v in (rows, cols)):
        raise ConfigError(f"--rows and --cols must be whole numbers 1..64, got {rows!r} and {cols!r}")
    check_image_path(out, "--out")
    # the rows are the first identities of the dataset's pool (its ids, or render's default):
    # identity mixup draws partners from the whole pool, as the render will
    opts["ids"] = max(rows, opts.get("ids") or RENDER_DEFAULTS["ids"])
    scene = scene_from_options(opts)
    renderer = SceneRenderer(scene)
    per_id = cols
    if scene.sampling.grid is not None:
        per_id = min(cols, len(scene.sampling.grid.points()))
    params = [renderer.sampler.image_params(i, n) for i in range(rows) for n in range(per_id)]
    images = [r.rgb for i in range(rows) for r in renderer.render(params[i * per_id:(i + 1) * per_id])]
    if captions:
        from morphgen.sheet import captioned_all

        images = captioned_all(images, [caption_lines(p) for p in params])
    write_sheet(out, np.stack(images), per_id)
    s = scene.size
    click.echo(f"wrote {out} ({rows} identities x {per_id} samples, {s}x{s} px each)")
