"""Controlled synthetic benchmark: pose and illumination, separately, without real data.

``evaluate_synthetic`` renders held-out identities with the dataset writer
(``morphgen.dataset``) in controlled mode: every identity at every yaw of the grid
(default -90..90 in 15 degree steps, pitch = roll = 0) under each of `lights`
illumination conditions (drawn once from the seed and shared by all identities),
neutral expression by default. The default seed (100000) is far from training seeds;
identities are a function of (seed, identity index), so a benchmark seed that differs
from the training dataset's seed gives identities the model has never seen (the result
records the training data's seed when the run's data folder is readable, and warns on a
clash). Renders go to ``OUT/render_<config hash>`` (or ``data_dir``) and are reused when
present; ``data_dir`` may also point at any existing controlled morphgen render.

Two pair protocols, each LFW-style (10 identity-disjoint folds of up to 300 genuine +
300 impostor pairs, cross-validated threshold), see ``common.gallery_probe_pairs``:

- **pose**: gallery = the frontal render, probe = a render at yaw y under the *same*
  light; accuracy per probe yaw isolates pose;
- **light**: gallery = a render under light 0, probe = the render at the *same* yaw under
  light l >= 1; accuracy per light isolates illumination (needs lights >= 2).

Writes result.json, summary.md, accuracy_vs_yaw.png, accuracy_vs_light.png and the pair
lists (pairs_pose.txt, pairs_light.txt) into the output folder.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from morphgen.errors import ConfigError, DataError
from morphgen.layout import manifest_or_none, manifest_path, read_manifest

from .common import (embed_imageset, gallery_probe_pairs, load_eval_model, model_info, pair_protocol_result,
                     prepare_out, score_pairs, write_pairs_file)
from .pose import plot_yaw, read_morphgen_poses
from . import metrics
from .protocols import Protocol, accuracy_column
from .report import fmt, md_table, plot_bins, plot_roc, pm, write_json, write_markdown, write_roc_csv

DEFAULT_SEED = 100000


def check_yaws(yaws: str, option: str = "--yaws") -> None:
    """ConfigError naming `option` unless `yaws` is a start:stop:step grid holding yaw 0
    (the pose protocol's frontal gallery): checked before anything renders."""
    from morphgen.sampling import ControlledGrid

    try:
        values = ControlledGrid.parse({"yaw": yaws}).yaw.values()
    except ConfigError as exc:
        why = str(exc).removeprefix(f"grid yaw={yaws!r}: ")
        raise ConfigError(f"{option} {yaws!r}: {why}") from None
    if not np.isclose(values, 0).any():
        raise ConfigError(f"{option} {yaws} has no yaw 0: the pose protocol compares every yaw with a frontal gallery")
    if np.abs(values).max() > 90:  # the back of the head; +-180 is one view counted as two bins
        raise ConfigError(f"{option} {yaws} reaches beyond +-90 degrees: a face benchmark's yaws are -90..90")


def benchmark_scene(ids: int = 50, seed: int = DEFAULT_SEED, yaws: str = "-90:90:15", lights: int = 3,
                    size: int = 128, face_model: str | None = None, expressions: bool = False,
                    backgrounds: str = "procedural", antialias: int | str = 2):
    """The SceneConfig of the benchmark renders (controlled grid; pitch = roll = 0)."""
    from morphgen.scene import SceneConfig

    if ids < 2:
        raise ConfigError(f"--ids must be >= 2 for verification pairs, got {ids}")
    if lights < 1:
        raise ConfigError(f"--lights must be >= 1, got {lights}")
    check_yaws(yaws)
    if face_model:
        from morphgen.loading import load_model
        load_model(face_model)  # a missing or corrupt model stops here
        face_model = str(Path(face_model).resolve())
    scene = SceneConfig.from_dict({
        "model": face_model, "seed": int(seed), "ids": int(ids), "expressions": bool(expressions),
        "grid": {"yaw": yaws, "pitch": "0:0:1", "roll": "0:0:1", "lights": int(lights)},
        "size": int(size), "antialias": antialias, "backgrounds": backgrounds, "outputs": [],
    })
    return scene


def benchmark_job(scene):
    """The dataset job that renders the benchmark of `scene` (every grid point per identity)."""
    from morphgen.dataset import DatasetJob, OutputConfig

    return DatasetJob(scene, len(scene.sampling.grid.points()), OutputConfig(chunk_ids=5))


def render_benchmark(out_dir: Path, scene, workers: int = 1, progress: bool = False, replace: bool = False) -> dict:
    """Render (or finish) the benchmark images into `out_dir`; returns the writer's summary.
    ``replace``: `out_dir` holds a benchmark of other options, to render anew."""
    from morphgen.dataset import run

    return run(Path(out_dir), benchmark_job(scene), workers=workers, resume=not replace, overwrite=replace,
               progress=progress)


def _training_seed(meta: dict) -> int | None:
    data = (meta.get("config") or {}).get("data")
    try:
        return int(read_manifest(data)["seed"]) if data else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def evaluate_synthetic(run: str | Path, out: str | Path, ids: int = 50, seed: int = DEFAULT_SEED,
                       yaws: str = "-90:90:15", lights: int = 3, size: int = 128, face_model: str | None = None,
                       expressions: bool = False, data_dir: str | Path | None = None, folds: int = 10,
                       per_fold: int = 300, pair_seed: int = 0, workers: int = 1, flip: bool = False,
                       batch_size: int = 64, progress: bool = False) -> dict:
    """Render (or reuse) the controlled benchmark and evaluate per-yaw and per-light accuracy."""
    model, meta = load_eval_model(run)
    out = prepare_out(out)
    render_info = reused = None
    if data_dir and manifest_path(data_dir).is_file():
        render_dir = Path(data_dir)
        try:
            manifest = read_manifest(render_dir)
        except ValueError:
            raise DataError(f"{manifest_path(render_dir)} is corrupt: render the benchmark again into a new "
                            "--data folder") from None
        if not isinstance(manifest, dict) or not manifest.get("complete"):
            raise DataError(f"{render_dir} holds an unfinished render: finish it with `morphgen render --resume`")
        if not (manifest.get("config", {}).get("scene", {}).get("grid")):
            raise DataError(f"{render_dir} is not a controlled render (no --grid): the benchmark needs one")
        bench_seed = manifest.get("seed")
        held = manifest.get("config", {}).get("scene", {})
        asked = benchmark_scene(ids, seed, yaws, lights, size, face_model, expressions).to_dict()
        if held != json.loads(json.dumps(asked)):  # said, so that changed options are not thought rendered
            reused = (f"--data {render_dir} is reused as it is ({held.get('ids')} identities, seed {bench_seed}), "
                      f"not rendered for this command's --ids {ids} --seed {seed} --yaws {yaws} --lights {lights} "
                      f"--size {size}" + (" --expressions" if expressions else "")
                      + (f" --face-model {face_model}" if face_model else ""))
    else:
        if data_dir and Path(data_dir).is_dir() and any(Path(data_dir).iterdir()):
            raise DataError(f"--data {data_dir} is not empty and holds no morphgen render (no manifest.json): give "
                            "a new or empty folder to render the benchmark into, or a finished render of it")
        scene = benchmark_scene(ids, seed, yaws, lights, size, face_model, expressions)
        # the model's content in the tag too: a model file changed in place renders anew
        tag = hashlib.sha256((json.dumps(scene.to_dict(), sort_keys=True) + scene.model_hash()).encode()).hexdigest()[:8]
        render_dir = Path(data_dir) if data_dir else out / f"render_{tag}"
        render_info = render_benchmark(render_dir, scene, workers, progress)
        bench_seed = seed
    data = read_morphgen_poses(render_dir)
    if data.skipped.get("missing_files"):  # its pairs would be other pairs, and the accuracy another's
        raise DataError(f"{render_dir} misses {data.skipped['missing_files']} of its images: finish it with "
                        f"`morphgen render ... --out {render_dir} --resume` (the command that made it), which "
                        "renders missing files again")
    if data.light is None:
        raise DataError(f"{render_dir}: cannot tell the light of each image (no controlled grid in its manifest)")
    yaw = np.round(data.yaw, 6) + 0.0
    light = data.light
    emb = embed_imageset(model, meta, data.iset, align=True, flip=flip, batch_size=batch_size, progress=progress)
    ident = data.iset.identities

    protocols = {}
    pose_pairs = gallery_probe_pairs(ident, yaw == 0, [float(y) if y != 0 else None for y in yaw], light.tolist(),
                                     folds, per_fold, pair_seed)
    n_lights = int(light.max()) + 1 if len(light) else 0
    specs = [("pose", pose_pairs, "yaw")]
    if n_lights >= 2:
        light_pairs = gallery_probe_pairs(ident, light == 0, [int(x) if x > 0 else None for x in light], yaw.tolist(),
                                          folds, per_fold, pair_seed)
        specs.append(("light", light_pairs, "light"))
    curves = []
    for name, pairs, axis in specs:
        if len(pairs) == 0:
            raise DataError(f"the {name} protocol has no pairs: the render needs >= 2 identities and a frontal yaw")
        write_pairs_file(out / f"pairs_{name}.txt", pairs, data.iset.files,
                         {"protocol": f"synthetic-{name}", "folds": pairs.n_folds, "per_fold": per_fold,
                          "seed": pair_seed, "identity_disjoint": pairs.identity_disjoint, "images": str(render_dir)})
        scores, ok = score_pairs(emb, pairs)
        res = pair_protocol_result(scores, pairs.same[ok], pairs.fold[ok], [b for b, k in zip(pairs.bins, ok) if k])
        res["unscored_pairs"] = int((~ok).sum())
        res["folds_used"], res["identity_disjoint"], res["axis"] = pairs.n_folds, pairs.identity_disjoint, axis
        protocols[name] = res
        fpr, tpr, thr = metrics.roc_curve(scores, pairs.same[ok])
        curves.append({"label": f"{name} protocol", "fpr": fpr, "tpr": tpr, "thresholds": thr})
    write_roc_csv(out / "roc.csv", curves)
    plot_roc(out / "roc.png", [dict(c, label=f"{name} protocol: accuracy {pm(res['accuracy'], 3)}")
                               for (name, res), c in zip(protocols.items(), curves)],
             f"{meta['arch']}: synthetic held-out identities", log_far=False)

    train_seed = _training_seed(meta)
    warnings = [reused] if reused else []
    if train_seed is not None and bench_seed is not None and int(train_seed) == int(bench_seed):
        warnings.append(f"the run was trained on a dataset rendered with seed {train_seed}, the benchmark's seed: "
                        "its identities are not held out; use another --seed")
    files_out = {"result": str(out / "result.json"), "summary": str(out / "summary.md"),
                 "yaw_plot": str(out / "accuracy_vs_yaw.png"), "roc_csv": str(out / "roc.csv"),
                 "roc_png": str(out / "roc.png"), "render": str(render_dir)}
    result = {"protocol": "synthetic-controlled", "model": model_info(meta, run),
              "inputs": {"render": str(render_dir), "ids": len(set(ident)), "images": len(ident), "seed": bench_seed,
                         "yaws": sorted(set(yaw.tolist())), "lights": n_lights, "flip": flip,
                         "training_data_seed": train_seed},
              "render": render_info, "images_report": emb.report(), "protocols": protocols, "warnings": warnings,
              "files": files_out}
    plot_yaw(out / "accuracy_vs_yaw.png", {"pose": protocols["pose"]["bins"]},
             f"{meta['arch']}: synthetic, accuracy vs probe yaw (frontal gallery, same light)")
    if "light" in protocols:
        bins = sorted(protocols["light"]["bins"].values(), key=lambda b: b["bin"])
        x = [b["bin"] for b in bins]
        plot_bins(out / "accuracy_vs_light.png",
                  [{"x": x, "y": [b["accuracy"] for b in bins], "labels": [str(v) for v in x],
                    "xlabel": "probe light (gallery: light 0, same yaw)", "ylabel": "accuracy"},
                   {"x": x, "y": [b["auc"] for b in bins], "labels": [str(v) for v in x],
                    "xlabel": "probe light", "ylabel": "AUC"}],
                  f"{meta['arch']}: synthetic, accuracy per light")
        files_out["light_plot"] = str(out / "accuracy_vs_light.png")
    write_json(out / "result.json", result)
    write_markdown(out / "summary.md", "Synthetic controlled benchmark", _sections(result))
    return result


def _sections(r: dict) -> list[tuple[str, str]]:
    m, i = r["model"], r["inputs"]
    head = (f"- model: `{m['run']}` ({m['arch']}, {m['input_size']} px, step {m['step']})\n"
            f"- renders: `{i['render']}`: {i['ids']} identities x {len(i['yaws'])} yaws x {i['lights']} lights "
            f"= {i['images']} images, seed {i['seed']} (training data seed: {i['training_data_seed']})")
    if r["warnings"]:
        head += "\n" + "\n".join(f"- **warning**: {w}" for w in r["warnings"])
    out = [("", head)]
    for name, p in r["protocols"].items():
        text = (f"**Accuracy {pm(p['accuracy'])}** ({p['folds_used']} folds, {p['pairs']} pairs), AUC {fmt(p['auc'])}\n\n")
        label = "probe yaw" if name == "pose" else "probe light"
        rows = [[f"{b['bin']:g}", b["pairs"], fmt(b["accuracy"]), fmt(b["auc"])] for b in p["bins"].values()]
        text += md_table([label, "pairs", "accuracy", "AUC"], rows)
        out.append((f"{name} protocol", text))
    return out


# ----------------------------------------------------------------------------- experiment protocol

def _run(model_run, out, o: dict, ctx) -> dict:
    """Render the benchmark once into the evaluation's shared folder (every cell reuses it)."""
    scene = benchmark_scene(o["ids"], o["seed"], str(o["yaws"]), o["lights"], o["size"], o["model"], o["expressions"])
    bench = Path(ctx.shared_dir)
    held = manifest_or_none(bench) or {}
    # unreadable counts as a benchmark of other options: rendered anew
    other = manifest_path(bench).is_file() and held.get("config_hash") != benchmark_job(scene).config_hash()
    if other or not held.get("complete"):
        # the experiment's own renders: of other options (the evaluation's were changed, so
        # every cell's result is made again) they are rendered anew, never reused
        ctx.say(f"    rendering the benchmark once for all cells -> {bench}" + (" (its options changed)" if other else ""))
        render_benchmark(bench, scene, workers=ctx.workers, replace=other)
    return evaluate_synthetic(model_run, out, data_dir=bench, folds=o["folds"], per_fold=o["per_fold"],
                              pair_seed=o["pair_seed"], flip=o["flip"], batch_size=ctx.batch_size, progress=ctx.progress)


def _columns(o: dict, label: str, r: dict | None) -> list:
    c = accuracy_column("", f"{label} (accuracy)", None if r is None else r["protocols"]["pose"])
    if r is not None and "light" in r["protocols"]:
        la = r["protocols"]["light"]["accuracy"]
        c.values.update(light_accuracy_mean=la.get("mean"), light_accuracy_std=la.get("std"))
    return [c]


def _note(o: dict, label: str, r: dict | None) -> str:
    return (f"{label}: held-out rendered identities ({o['ids']} ids, seed {o['seed']}, yaw {o['yaws']}, "
            f"{o['lights']} lights, {o['size']} px); frontal gallery vs probe at each yaw, same light "
            "(the pose protocol; the light protocol is in each cell's result.json).")


def _check(o: dict, where: str) -> None:
    if o["ids"] < 2:
        raise ConfigError(f"{where}.ids must be >= 2 for verification pairs")
    if not isinstance(o["yaws"], str):
        raise ConfigError(f"{where}.yaws must be a start:stop:step string such as \"-90:90:15\", got {o['yaws']!r}")
    check_yaws(o["yaws"], f"{where}.yaws")


PROTOCOL = Protocol(
    name="synthetic", summary="held-out rendered identities: accuracy per yaw and per light",
    defaults={"ids": 50, "seed": DEFAULT_SEED, "yaws": "-90:90:15", "lights": 3, "size": 128, "model": None,
              "expressions": False, "folds": 10, "per_fold": 300, "pair_seed": 0, "flip": False},
    run=_run, note=_note, columns=_columns, paths=("model",), check=_check)
