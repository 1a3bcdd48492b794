"""`morphgen model ...`: inspect and export morphable models.

morphgen modules are imported inside the commands (here and in every command module):
they pull in torch and numba, and `morphgen --help` should not wait seconds for them."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import click

from .group import UserPath

LANDMARKS_OPTION = click.option(
    "--landmarks", "landmarks_file", type=UserPath(dir_okay=False, path_type=Path),
    help="Landmark file of the model, replacing its own landmarks (see `morphgen model landmarks --help` for the "
         "format). [default: <model>.landmarks.json beside the model file, when present]")


LOD_SIZES = (64, 112, 128, 224)  # the sizes `model info` gives --lod auto's vertex count for


@click.group()
def model() -> None:
    """Inspect morphable models (embedded default, BFM 2017/2019 .h5, BFM 2009 .mat)."""


@model.command("info")
@click.argument("path", required=False, type=UserPath(path_type=Path))
@LANDMARKS_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON instead of text.")
def info(path: Path | None, landmarks_file: Path | None, as_json: bool) -> None:
    """Print source, vertex and triangle counts, PCA components and landmarks of PATH
    (the embedded default model when PATH is omitted)."""
    from morphgen.loading import load_model, model_digest
    from morphgen.lod import decimated, lod_level
    from morphgen.model import five_point_names

    m = load_model(path, landmarks_file)
    s = m.summary()
    s["landmark_file"] = m.metadata.get("landmark_file")
    s["landmark_max_distance_mm"] = m.metadata.get("landmark_max_distance_mm")
    s["digest"] = model_digest(path, landmarks_file)  # what a dataset's manifest records as model_sha256
    s["five_point_alignment"] = not five_point_names(m.landmarks)[1]
    if s["five_point_alignment"]:   # what `--lod auto` renders at a few sizes (None: the whole mesh)
        levels = {px: lod_level(m, px, 1, "auto") for px in LOD_SIZES}
        s["lod_auto_vertices"] = {str(px): None if lv is None else decimated(m, lv)[0].n_vertices
                                  for px, lv in levels.items()}
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
    if s["landmark_file"]:
        click.echo(f"            from {s['landmark_file']}")
    elif s["landmark_max_distance_mm"] is not None:  # the model file's, snapped to its nearest vertices
        click.echo(f"            the file's points, at most {s['landmark_max_distance_mm']:.1f} mm from a vertex")
    if not s["five_point_alignment"]:
        click.echo(f"            not enough for 5-point alignment: `morphgen model landmarks {path}` finds them")
    if s["regions"]:
        click.echo(f"regions:    {', '.join(s['regions'])}")
    if "lod_auto_vertices" in s:
        levels = ", ".join(f"{px} px {'whole' if n is None else f'{n:,}'}" for px, n in s["lod_auto_vertices"].items())
        click.echo(f"--lod auto: {levels} (vertices rendered; supersampling counts as a larger size)")
    click.echo(f"sha256:     {s['sha256']}")
    if s["digest"] != s["sha256"]:
        click.echo(f"digest:     {s['digest']} (with its calibration or landmark file: a dataset's model_sha256)")


@model.command("export")
@click.argument("path", required=False, type=UserPath(path_type=Path))
@click.option("--out", required=True, type=UserPath(dir_okay=False, path_type=Path),
              help="Mesh file to write: .ply (with vertex colours) or .obj.")
@click.option("--identity", type=int, default=0, show_default=True, help="Identity index to sample.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed, as in `morphgen render`.")
@click.option("--mean", is_flag=True, help="Export the mean face instead of a sampled identity.")
@click.option("--expression/--no-expression", default=False, show_default=True, help="Add a sampled expression.")
def export(path: Path | None, out: Path, identity: int, seed: int, mean: bool, expression: bool) -> None:
    """Write a sampled face of PATH (default: the embedded model) as a mesh for inspection.

    The identity is the one `morphgen render --seed SEED` draws for that index."""
    import numpy as np
    import trimesh

    from morphgen.errors import ConfigError
    from morphgen.illumination import make_illumination
    from morphgen.loading import load_model
    from morphgen.outputs import check_writable
    from morphgen.sampling import Decoder, SamplingConfig, SceneSampler

    if out.suffix.lower() not in (".ply", ".obj"):
        raise ConfigError(f"--out {out}: use a .ply or .obj file name")
    if identity < 0:
        raise ConfigError(f"--identity must be >= 0, got {identity}")
    check_writable(out, "--out", folder=False)
    m = load_model(path)
    sampler = SceneSampler(m, SamplingConfig(seed=seed, n_identities=identity + 1, expressions=expression),
                           make_illumination("frontal"))
    p = sampler.image_params(identity, 0)
    shape, color = (np.zeros_like(p.shape), np.zeros_like(p.color)) if mean else (p.shape, p.color)
    dec = Decoder.for_sampler(m, sampler)
    verts = dec.vertices(shape[None], p.expression[None])[0]
    colors = (dec.albedo(color[None])[0] * 255 + 0.5).astype(np.uint8)
    mesh = trimesh.Trimesh(verts, m.triangles, vertex_colors=colors, process=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    mesh.export(out)
    click.echo(f"wrote {out} ({m.n_vertices} vertices, {m.n_triangles} triangles, mm)")


@model.command("calibrate")
@click.argument("path", required=False, type=UserPath(path_type=Path))
@LANDMARKS_OPTION
@click.option("--ids", type=int, default=40, show_default=True, help="Identities rendered for the fit.")
@click.option("--per-id", type=int, default=10, show_default=True, help="Renders per identity.")
@click.option("--yaw", type=float, default=60.0, show_default=True, help="Yaw drawn in +-YAW degrees.")
@click.option("--out", type=UserPath(dir_okay=False, path_type=Path),
              help="Calibration file. [default: <model>.calibration.json beside the model, which load_model reads; "
                   "required for the embedded model]")
def calibrate(path: Path | None, landmarks_file: Path | None, ids: int, per_id: int, yaw: float, out: Path | None) -> None:
    """Fit the five alignment landmarks of PATH (default: the embedded model) to MTCNN's
    convention on its own renders, so synthetic and real crops share one alignment."""
    from morphgen.calibration import sidecar_path
    from morphgen.errors import ConfigError
    from morphgen.loading import default_model_path
    from morphgen.outputs import check_writable
    from recognition.calibrate import calibrate as fit

    if ids < 1 or per_id < 1 or not 0 < yaw <= 90:
        raise ConfigError("--ids and --per-id must be >= 1 and --yaw in (0, 90]")
    if path is None and out is None:  # the default would be the calibration morphgen ships, in its install
        raise ConfigError("the embedded model's calibration ships with morphgen: give --out FILE for a new one "
                          f"(--out {sidecar_path(default_model_path())} replaces the shipped one)")
    out = check_writable(out or sidecar_path(path or default_model_path()), "--out", folder=False)
    cal = fit(str(path) if path else None, ids, per_id, yaw, landmarks=str(landmarks_file) if landmarks_file else None)
    out.parent.mkdir(parents=True, exist_ok=True)
    cal.save(out)
    click.echo(f"wrote {out}: {cal.images} detected renders, mean 5-point distance to MTCNN "
               f"{cal.residual_before:.3f} -> {cal.residual_after:.3f} inter-ocular distances")


@model.command("landmarks")
@click.argument("path", type=UserPath(path_type=Path))
@click.option("--out", type=UserPath(dir_okay=False, path_type=Path),
              help="Landmark file to write. [default: <model>.landmarks.json beside the model, which every "
                   "command then reads]")
def landmarks(path: Path, out: Path | None) -> None:
    """Find the five alignment landmarks of the model in PATH, for models that carry none
    (BFM 2009, PCA models you converted): MTCNN on renders of the mean face at seven
    near-frontal poses, each point carried back to the surface through the rasterizer's
    triangle ids and barycentrics, averaged over the poses and snapped to a vertex.

    \b
    The landmark file (also what --landmarks reads) is JSON with 0-based vertex indices,
    for example:
      {"landmarks": {"right.eye.pupil.center": 1201, "left.eye.pupil.center": 1302,
                     "center.nose.tip": 1403, "right.lips.corner": 1504,
                     "left.lips.corner": 1605}, "vertices": 53490}
    An eye may also be given by its corners (right.eye.corner_outer, right.eye.corner_inner,
    ...). Published 68-point index lists are read as they are: a JSON list or a text file of
    68 vertex indices in iBUG order, or {"ibug68": [...], "index_base": 1} for 1-based ones;
    the five points come from iBUG 36/39, 42/45, 30, 48 and 54.

    Then `morphgen model calibrate PATH` fits how MTCNN's points move with yaw."""
    from morphgen.calibration import sidecar_path
    from morphgen.landmark_file import landmark_sidecar, write_landmark_file
    from morphgen.loading import load_model_file
    from morphgen.outputs import check_writable
    from recognition.landmark_finder import NAMES, find_landmarks

    m = load_model_file(path)
    out = check_writable(out or landmark_sidecar(path), "--out", folder=False)
    found = find_landmarks(m)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_landmark_file(out, found.landmarks, m.n_vertices, {"found": found.to_dict()})
    yaws, pitches = [p[0] for p in found.poses], [p[1] for p in found.poses]
    click.echo(f"wrote {out}: 5 landmarks from MTCNN on {len(found.poses)} of {found.tried} renders of the mean face "
               f"(yaw {min(yaws):g}..{max(yaws):g}, pitch {min(pitches):g}..{max(pitches):g}; "
               f"inter-ocular distance {found.iod_mm:.1f} mm)")
    for name, vertex, moved, fit in zip(NAMES, found.vertices, found.movement(), found.residual.mean(0)):
        click.echo(f"  {name:<24} vertex {vertex:>6}: moved {moved:.3f} inter-ocular distances "
                   f"({moved * found.iod_mm:.1f} mm) between poses; vertex to MTCNN {fit:.3f}")
    command = (f"morphgen model calibrate {shlex.quote(str(path))}"  # pasted into a shell as it is printed
               + ("" if out == landmark_sidecar(path) else f" --landmarks {shlex.quote(str(out))}"))
    if sidecar_path(path).exists():
        click.echo(f"note: {sidecar_path(path)} was fitted to the model's earlier landmarks: fit it again with "
                   f"`{command}`")
    else:
        click.echo(f"next: `{command}` fits how MTCNN's points move with yaw")
