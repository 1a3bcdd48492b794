"""Paper-style experiments in one command: render datasets, train every dataset x recipe
cell, evaluate every cell on every benchmark, and write the table.

    morphgen experiment run experiments/kortylewski_table2_cpu.yaml --out /tmp/exp

A config (YAML; paths relative to the config file)::

    name: my-ablation
    dataset_defaults: {size: 64, per_id: 20}       # any `morphgen render` option
    recipe_defaults: {arch: nn4small2, input_size: 48, steps: 300}   # any TrainConfig field
    datasets:
      full:    {ids: 200, pose: syn1m}
      frontal: {ids: 200, pose: frontal}
    recipes:
      syn: {}                                       # train on the cell's dataset
      ft:  {init_from: syn, train_on: real, real_data: ../data/orl, identities: "first:20"}
    cells:                                          # default: every dataset x recipe
      - full/syn
      - {dataset: frontal, recipe: syn, label: "frontal yaw"}
      - {dataset: none, recipe: ft_scratch}          # real data only
      - full/ft
    evaluations:
      syn:  {protocol: synthetic, ids: 40, size: 64}
      orl:  {protocol: real_pairs, images: ../data/orl, identities: "last:20"}
      lfw:  {protocol: lfw, lfw_dir: lfw, pairs: lfw/pairs.txt}    # skipped when absent

Recipes: ``train_on`` says what the trainer's ``data`` is: ``dataset`` (the cell's
render; the default), ``real`` (``real_data`` only: fine-tuning Casia-NK style; subsets
apply to it; the cell's dataset then only picks the ``init_from`` checkpoint), or
``dataset+real`` (the trainer's joint label space, or ``domain_mixup``), or ``online``
(``online: CONFIG``: batches freshly rendered from a `morphgen render` config, in cells
with dataset ``none``). ``init_from: R``
starts from recipe R's checkpoint trained on the same dataset (that cell is added when not
listed). ``identities`` (names, ``first:N`` or ``last:N`` in natural order) restricts the
training data's identities, so real benchmarks can use the others.

Output folder: ``datasets/<name>``, ``benchmarks/<evaluation>`` (shared synthetic renders),
``runs/<cell>`` (trainer run folders), ``evals/<cell>/<evaluation>`` (result.json,
summary.md, roc.csv ...), ``cache/`` (MTCNN landmarks), ``timings.json``, and the tables
``results.md`` / ``results.csv`` with ``roc_<evaluation>.png``. Every stage is skipped
when its output is complete, so an interrupted run is continued by running it again.
"""
from __future__ import annotations

import csv
import dataclasses
import fnmatch
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from morphgen.configfile import read_mapping
from morphgen.errors import ConfigError, DataError

TOP_KEYS = ("name", "description", "out", "workers", "dataset_defaults", "recipe_defaults", "datasets",
            "recipes", "cells", "evaluations")
# render options an experiment decides itself (output folder, resumption, parallelism)
_RENDER_EXCLUDED = ("out", "workers", "shard", "resume", "overwrite", "dask_address", "quiet", "config")
_RENDER_PATHS = ("model", "bip")
# trainer fields the experiment decides itself
_TRAIN_EXCLUDED = ("data", "out", "resume", "progress", "extra")
_TRAIN_PATHS = ("real_data", "list_file", "init", "cache_dir", "real_preview")
RECIPE_EXTRA = ("init_from", "train_on", "identities", "label")
TRAIN_ON = ("dataset", "real", "dataset+real", "online")
NONE = "none"

# protocol -> {option: default}; path options are resolved against the config file
PROTOCOLS: dict[str, dict] = {
    "synthetic": {"ids": 50, "seed": 100000, "yaws": "-90:90:15", "lights": 3, "size": 128, "model": None,
                  "expressions": False, "folds": 10, "per_fold": 300, "pair_seed": 0, "flip": False},
    "pose": {"images": None, "poses": None, "yaw_step": 15.0, "folds": 10, "per_fold": 300, "seed": 0,
             "align": True, "flip": False},
    "lfw": {"lfw_dir": None, "pairs": None, "flip": False, "align": True},
    "ijba": {"ijba_dir": None, "splits": "1-10", "images": None, "flip": False, "align": True},
    "real_pairs": {"images": None, "identities": None, "folds": 10, "per_fold": 300, "seed": 0, "align": True,
                   "flip": False},
}
_EVAL_COMMON = {"protocol": None, "label": None, "batch_size": 64}
_EVAL_PATHS = ("model", "images", "poses", "lfw_dir", "pairs", "ijba_dir")
_EVAL_REQUIRED = {"pose": ("images",), "lfw": ("lfw_dir", "pairs"), "ijba": ("ijba_dir",), "real_pairs": ("images",)}


# ----------------------------------------------------------------------------- config

@dataclass
class Dataset:
    name: str
    options: dict            # render options (RENDER_DEFAULTS names), paths absolute
    scene: object = None     # SceneConfig
    per_id: int = 0

    @property
    def n_ids(self) -> int:
        return int(self.options["ids"])


@dataclass
class Recipe:
    name: str
    train: dict              # TrainConfig fields
    init_from: str | None = None
    train_on: str = "dataset"
    identities: object = None
    label: str | None = None


@dataclass
class Cell:
    dataset: str
    recipe: str
    label: str
    added: bool = False      # added as an init_from dependency

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.recipe}"

    @property
    def id(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{self.dataset}__{self.recipe}")


@dataclass
class Evaluation:
    name: str
    protocol: str
    options: dict
    label: str
    batch_size: int = 64

    def missing(self) -> str | None:
        """Why this evaluation cannot run here (a data path is absent), or None."""
        for key in _EVAL_REQUIRED.get(self.protocol, ()):
            p = self.options.get(key)
            if not p or not Path(p).exists():
                return f"{key} {p} not found"
        for key in ("poses", "images") if self.protocol in ("pose", "ijba") else ():
            p = self.options.get(key)
            if p and not Path(p).exists():
                return f"{key} {p} not found"
        return None


@dataclass
class Experiment:
    path: Path
    name: str
    description: str
    out: Path | None
    workers: int
    datasets: dict[str, Dataset]
    recipes: dict[str, Recipe]
    cells: list[Cell]
    evaluations: dict[str, Evaluation]
    raw: dict = field(default_factory=dict)


def _mapping(val, where: str) -> dict:
    if val is None:
        return {}
    if not isinstance(val, dict):
        raise ConfigError(f"{where} must be a mapping (name: value), got {type(val).__name__}")
    return {str(k).replace("-", "_"): v for k, v in val.items()}


def _check_keys(d: dict, allowed, where: str) -> None:
    for k in d:
        if k not in allowed:
            raise ConfigError(f"unknown key {k!r} in {where}; allowed: {', '.join(sorted(allowed))}")


def _rel(base: Path, p) -> str | None:
    if p is None or p == "":
        return None
    p = Path(str(p)).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def _name_ok(name: str, where: str) -> str:
    name = str(name)
    if not re.fullmatch(r"[A-Za-z0-9_.+-]+", name):
        raise ConfigError(f"{where} name {name!r}: use letters, digits, '_', '-', '.', '+'")
    return name


def load_experiment(path: str | Path, validate_scenes: bool = True) -> Experiment:
    """Read and check an experiment config; every problem is a one-line ConfigError."""
    path = Path(path)
    raw = _mapping(read_mapping(path, "experiment config"), str(path))
    _check_keys(raw, TOP_KEYS, f"{path} (top level)")
    base = path.resolve().parent
    where = path.name

    # datasets
    RENDER_DEFAULTS = _cli_options().RENDER_DEFAULTS

    render_keys = [k for k in RENDER_DEFAULTS if k not in _RENDER_EXCLUDED]
    ddef = _mapping(raw.get("dataset_defaults"), f"{where}: dataset_defaults")
    _check_keys(ddef, render_keys, f"{where}: dataset_defaults")
    datasets: dict[str, Dataset] = {}
    for name, opts in _mapping(raw.get("datasets"), f"{where}: datasets").items():
        name = _name_ok(name, "dataset")
        if name == NONE:
            raise ConfigError(f"{where}: 'none' is reserved (a cell without synthetic data); rename that dataset")
        opts = _mapping(opts, f"{where}: datasets.{name}")
        _check_keys(opts, render_keys, f"{where}: datasets.{name}")
        datasets[name] = Dataset(name, _render_options(base, {**ddef, **opts}))
    if validate_scenes:
        for d in datasets.values():
            d.scene, d.per_id = _scene(d, f"{where}: datasets.{d.name}")

    # recipes
    from .train import TrainConfig

    train_fields = {f.name for f in dataclasses.fields(TrainConfig)} - set(_TRAIN_EXCLUDED)
    rdef = _mapping(raw.get("recipe_defaults"), f"{where}: recipe_defaults")
    _check_keys(rdef, train_fields | {"train_on"}, f"{where}: recipe_defaults")
    recipes: dict[str, Recipe] = {}
    raw_recipes = _mapping(raw.get("recipes"), f"{where}: recipes")
    if not raw_recipes:
        raise ConfigError(f"{where}: no recipes: add at least one under `recipes:` (e.g. `syn: {{}}`)")
    for name, opts in raw_recipes.items():
        name = _name_ok(name, "recipe")
        opts = {**rdef, **_mapping(opts, f"{where}: recipes.{name}")}
        _check_keys(opts, train_fields | set(RECIPE_EXTRA), f"{where}: recipes.{name}")
        extra = {k: opts.pop(k) for k in RECIPE_EXTRA if k in opts}
        for k in _TRAIN_PATHS:
            if k in opts:
                opts[k] = _rel(base, opts[k])
        if opts.get("online") not in (None, "default"):
            opts["online"] = _rel(base, opts["online"])
        train_on = extra.get("train_on") or ("online" if opts.get("online") else
                                             "dataset+real" if opts.get("real_data") else "dataset")
        if train_on not in TRAIN_ON:
            raise ConfigError(f"{where}: recipes.{name}.train_on {train_on!r}: use one of {', '.join(TRAIN_ON)}")
        if (train_on == "online") != bool(opts.get("online")):
            raise ConfigError(f"{where}: recipes.{name}: online synthesis needs both train_on: online and "
                              "online: CONFIG (a `morphgen render` config file, or default)")
        if train_on not in ("dataset", "online") and not opts.get("real_data"):
            raise ConfigError(f"{where}: recipes.{name}: train_on {train_on} needs real_data: PATH")
        if train_on == "dataset" and opts.get("real_data"):
            raise ConfigError(f"{where}: recipes.{name}: real_data is given but train_on is dataset: "
                              "use train_on: real (fine-tune on it) or dataset+real (joint / domain mixup)")
        recipes[name] = Recipe(name, opts, extra.get("init_from"), train_on, extra.get("identities"),
                               extra.get("label"))
        if extra.get("identities") is not None:
            _identity_selector(extra["identities"], f"{where}: recipes.{name}.identities")
        _check_train(opts, f"{where}: recipes.{name}")
    for r in recipes.values():
        if r.init_from is not None:
            if r.init_from not in recipes:
                raise ConfigError(f"{where}: recipes.{r.name}.init_from {r.init_from!r} is not a recipe "
                                  f"(recipes: {', '.join(recipes)})")
            if r.train.get("init"):
                raise ConfigError(f"{where}: recipes.{r.name}: give init_from or init, not both")
    _check_init_cycles(recipes, where)

    # cells
    cells = _cells(raw.get("cells"), datasets, recipes, where)

    # evaluations
    evaluations: dict[str, Evaluation] = {}
    for name, opts in _mapping(raw.get("evaluations"), f"{where}: evaluations").items():
        name = _name_ok(name, "evaluation")
        opts = _mapping(opts, f"{where}: evaluations.{name}")
        proto = opts.get("protocol")
        if proto not in PROTOCOLS:
            raise ConfigError(f"{where}: evaluations.{name}.protocol {proto!r}: use one of {', '.join(PROTOCOLS)}")
        _check_keys(opts, set(PROTOCOLS[proto]) | set(_EVAL_COMMON), f"{where}: evaluations.{name}")
        o = {**PROTOCOLS[proto], **{k: v for k, v in opts.items() if k not in _EVAL_COMMON}}
        for k in _EVAL_PATHS:
            if k in o and o[k] is not None:
                o[k] = _rel(base, o[k])
        _check_eval(proto, o, f"{where}: evaluations.{name}")
        bs = opts.get("batch_size", 64)
        if not isinstance(bs, int) or bs < 1:
            raise ConfigError(f"{where}: evaluations.{name}.batch_size must be a positive integer, got {bs!r}")
        evaluations[name] = Evaluation(name, proto, o, str(opts.get("label") or name), bs)

    workers = raw.get("workers")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ConfigError(f"{where}: workers must be a positive integer, got {workers!r}")
    import os
    return Experiment(path.resolve(), str(raw.get("name") or path.stem), str(raw.get("description") or ""),
                      Path(_rel(base, raw["out"])) if raw.get("out") else None,
                      workers or len(os.sched_getaffinity(0)), datasets, recipes, cells, evaluations, raw)


def _render_options(base: Path, opts: dict) -> dict:
    RENDER_DEFAULTS = _cli_options().RENDER_DEFAULTS

    o = dict(RENDER_DEFAULTS)
    for k, v in opts.items():
        if isinstance(v, (list, tuple)) and k in ("outputs", "mixup_phis"):
            v = ",".join(str(x) for x in v)
        if isinstance(v, dict) and k == "grid":
            v = ",".join(f"{a}={b}" for a, b in v.items())
        o[k] = v
    for k in _RENDER_PATHS:
        o[k] = _rel(base, o[k])
    bg = str(o["backgrounds"])
    if bg not in ("procedural", "plain") and not bg.startswith("color:"):
        o["backgrounds"] = _rel(base, bg)
    pose = o["pose"]
    if isinstance(pose, str):
        from morphgen.sampling import POSE_PRESETS
        if pose not in POSE_PRESETS:
            o["pose"] = _rel(base, pose)
    elif isinstance(pose, dict):
        raise ConfigError("pose as a mapping is not supported here: use a preset (syn1m, frontal) or a YAML file path")
    return o


def _scene(d: Dataset, where: str):
    """The dataset's SceneConfig and images per identity (ConfigError names the dataset)."""
    opts = dict(d.options)
    if opts.get("device", "cpu") != "cpu":
        import torch
        if not torch.cuda.is_available():
            opts["device"] = "cpu"  # planning only: refused when it renders (Runner.render)
    try:
        scene = _cli_options().scene_from_options(opts)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: bad value: {exc}") from None
    return scene, int(opts["per_id"])


def _cli_options():
    try:
        from morphgen.cli import options
    except ImportError:  # a source checkout that is not pip-installed
        from cli import options
    return options


def _check_train(opts: dict, where: str) -> None:
    from .train import TrainConfig

    o = dict(opts)
    if str(o.get("device", "cpu")).startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            o["device"], o["precision"] = "cpu", "auto"  # refused when it trains, not when planning
    try:
        TrainConfig(data="" if o.get("online") else "x", **o).resolved()
        if o.get("online"):  # a bad scene stops the plan, not the training hours later
            from .online import load_scene
            load_scene(o["online"])
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: bad value: {exc}") from None


def _check_eval(proto: str, o: dict, where: str) -> None:
    ints = [k for k in ("ids", "seed", "lights", "size", "folds", "per_fold", "pair_seed") if k in o]
    for k in ints:
        if not isinstance(o[k], int) or isinstance(o[k], bool) or o[k] < (0 if "seed" in k else 1):
            raise ConfigError(f"{where}.{k} must be a {'non-negative' if 'seed' in k else 'positive'} integer, got {o[k]!r}")
    for k in ("flip", "align", "expressions"):
        if k in o and not isinstance(o[k], bool):
            raise ConfigError(f"{where}.{k} must be true or false, got {o[k]!r}")
    if proto == "synthetic" and o["ids"] < 2:
        raise ConfigError(f"{where}.ids must be >= 2 for verification pairs")
    if proto == "real_pairs" and o.get("identities") is not None:
        _identity_selector(o["identities"], f"{where}.identities")
    for k in _EVAL_REQUIRED.get(proto, ()):
        if not o.get(k):
            raise ConfigError(f"{where}: protocol {proto} needs {k}: PATH")


def _check_init_cycles(recipes: dict, where: str) -> None:
    for r in recipes.values():
        seen, cur = {r.name}, r
        while cur.init_from is not None:
            if cur.init_from in seen:
                raise ConfigError(f"{where}: recipes.{r.name}: init_from forms a cycle ({' -> '.join(seen)})")
            seen.add(cur.init_from)
            cur = recipes[cur.init_from]


def _cells(spec, datasets: dict, recipes: dict, where: str) -> list[Cell]:
    if spec is None or spec == "all":
        pairs = [(d, r, None) for d in datasets for r in recipes]
    else:
        if not isinstance(spec, list):
            raise ConfigError(f"{where}: cells must be a list of 'dataset/recipe' or {{dataset, recipe, label}}")
        pairs = []
        for k, c in enumerate(spec):
            if isinstance(c, str):
                d, sep, r = c.partition("/")
                if not sep:
                    raise ConfigError(f"{where}: cells[{k}] {c!r}: write dataset/recipe")
                pairs.append((d.strip(), r.strip(), None))
            elif isinstance(c, dict):
                c = _mapping(c, f"{where}: cells[{k}]")
                _check_keys(c, ("dataset", "recipe", "label"), f"{where}: cells[{k}]")
                if "dataset" not in c or "recipe" not in c:
                    raise ConfigError(f"{where}: cells[{k}] needs dataset and recipe")
                pairs.append((str(c["dataset"]), str(c["recipe"]), c.get("label")))
            else:
                raise ConfigError(f"{where}: cells[{k}] must be 'dataset/recipe' or a mapping")
    cells: list[Cell] = []
    seen: set = set()

    def add(d: str, r: str, label, added: bool, k) -> None:
        if d != NONE and d not in datasets:
            raise ConfigError(f"{where}: cell {d}/{r}: unknown dataset {d!r} (datasets: {', '.join(datasets) or '-'}, or none)")
        if r not in recipes:
            raise ConfigError(f"{where}: cell {d}/{r}: unknown recipe {r!r} (recipes: {', '.join(recipes)})")
        rec = recipes[r]
        if d == NONE and rec.train_on not in ("real", "online"):
            raise ConfigError(f"{where}: cell none/{r}: without a dataset the recipe must train on real data "
                              "(train_on: real with real_data: PATH) or online (online: CONFIG)")
        if d != NONE and rec.train_on == "online":
            raise ConfigError(f"{where}: cell {d}/{r}: an online recipe renders its own batches: "
                              f"use the cell none/{r}")
        if (d, r) in seen:
            if not added:
                raise ConfigError(f"{where}: cell {d}/{r} is listed twice")
            return
        if rec.init_from is not None:  # dependency first
            add(d, rec.init_from, None, True, k)
        seen.add((d, r))
        cells.append(Cell(d, r, str(label or (f"{d} / {rec.label or r}" if d != NONE else (rec.label or r))), added))

    for k, (d, r, label) in enumerate(pairs):
        add(d, r, label, False, k)
    if not cells:
        raise ConfigError(f"{where}: no cells to run")
    return cells


# ----------------------------------------------------------------------------- identities

def _natural_key(s: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(s))]


def _identity_selector(spec, where: str):
    if spec is None or spec == "all":
        return None
    if isinstance(spec, list):
        return ("names", [str(x) for x in spec])
    m = re.fullmatch(r"\s*(first|last)\s*:\s*(\d+)\s*", str(spec))
    if not m or int(m.group(2)) < 1:
        raise ConfigError(f"{where} {spec!r}: give a list of identity names, 'first:N' or 'last:N'")
    return (m.group(1), int(m.group(2)))


def select_identities(names: list[str], spec, where: str = "identities") -> set[str]:
    """The identity names a selector keeps (natural sort order for first/last)."""
    sel = _identity_selector(spec, where)
    uniq = sorted(set(names), key=_natural_key)
    if sel is None:
        return set(uniq)
    kind, arg = sel
    if kind == "names":
        missing = [n for n in arg if n not in set(uniq)]
        if missing:
            raise DataError(f"{where}: no identity {missing[0]!r} in the data ({len(missing)} of {len(arg)} missing)")
        return set(arg)
    if arg > len(uniq):
        raise DataError(f"{where}: {kind}:{arg} but the data has only {len(uniq)} identities")
    return set(uniq[:arg] if kind == "first" else uniq[-arg:])


def _folder_imageset(root: Path):
    """A folder of identity sub-folders, or of files named <identity>.<anything> (Yale)."""
    from .data import load_imageset

    iset = load_imageset(Path(root), "folder")
    iset.identities = [n if n else Path(f).name.split(".")[0] for f, n in zip(iset.files, iset.identities)]
    return iset


# ----------------------------------------------------------------------------- real-pairs protocol

def evaluate_real_pairs(run, images, out, identities=None, folds: int = 10, per_fold: int = 300, seed: int = 0,
                        align: bool = True, flip: bool = False, batch_size: int = 64, cache_dir=None,
                        progress: bool = False) -> dict:
    """Verification on a plain folder of real identities (ORL, Yale, ...): seeded genuine and
    impostor pairs in identity-disjoint folds (LFW View 2 style, at most `folds`, at least 2
    identities each), each fold's threshold chosen on the others. Writes result.json,
    summary.md, pairs.txt, scores.csv, roc.csv and roc.png into `out`."""
    from .evaluation.common import gallery_probe_pairs, load_eval_model, model_info, prepare_out, write_pairs_file
    from .evaluation import metrics
    from .evaluation.multipie import evaluate_pairs_on_images
    from .evaluation.report import fmt, md_table, plot_roc, pm, tar_text, write_json, write_markdown, write_roc_csv

    model, meta = load_eval_model(run)
    iset = _folder_imageset(Path(images))
    keep = select_identities(iset.identities, identities, "real_pairs identities")
    iset = iset.take([i for i, n in enumerate(iset.identities) if n in keep])
    n = len(iset)
    pairs = gallery_probe_pairs(iset.identities, np.ones(n, bool), ["all"] * n, None, folds, per_fold, seed)
    if len(pairs) == 0:
        raise DataError(f"{images}: no verification pairs (needs >= 2 identities with >= 2 images)")
    out = prepare_out(out)
    write_pairs_file(out / "pairs.txt", pairs, iset.files,
                     {"protocol": "real-pairs", "folds": pairs.n_folds, "per_fold": per_fold, "seed": seed,
                      "identity_disjoint": pairs.identity_disjoint, "images": str(images)})
    res = evaluate_pairs_on_images(model, meta, iset, pairs, align, flip, batch_size,
                                   Path(cache_dir) if cache_dir else out / ".morphgen_cache", progress)
    rows = res.pop("_rows")
    scores = np.array([r[5] for r in rows])
    same = np.array([bool(r[1]) for r in rows])
    with open(out / "scores.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["fold", "same", "gallery", "probe", "score"])
        w.writerows([[r[0], r[1], r[3], r[4], f"{r[5]:.6f}"] for r in rows])
    fpr, tpr, thr = metrics.roc_curve(scores, same)
    curve = [{"label": f"{meta['arch']} (AUC {fmt(res['auc'], 3)})", "fpr": fpr, "tpr": tpr, "thresholds": thr}]
    write_roc_csv(out / "roc.csv", curve)
    plot_roc(out / "roc.png", curve, f"{Path(images).name}: accuracy {pm(res['accuracy'], 3)}", log_far=False)
    res.pop("bins", None)
    result = {"protocol": "real-pairs", "model": model_info(meta, run),
              "inputs": {"images": str(images), "identities": sorted(keep, key=_natural_key), "images_used": n,
                         "folds": pairs.n_folds, "per_fold": per_fold, "seed": seed, "align": align, "flip": flip,
                         "identity_disjoint": pairs.identity_disjoint},
              **res,
              "files": {"result": str(out / "result.json"), "summary": str(out / "summary.md"),
                        "roc_csv": str(out / "roc.csv"), "roc_png": str(out / "roc.png"),
                        "scores_csv": str(out / "scores.csv"), "pairs": str(out / "pairs.txt")}}
    write_json(out / "result.json", result)
    m = result["model"]
    head = (f"- model: `{m['run']}` ({m['arch']}, {m['input_size']} px, step {m['step']})\n"
            f"- images: `{images}`: {len(keep)} identities, {n} images; {pairs.n_folds} identity-disjoint folds, "
            f"{res['pairs']} pairs ({res['genuine']} genuine)\n\n"
            f"**Accuracy {pm(res['accuracy'])}** (each fold's threshold chosen on the other folds)  \n"
            f"AUC {fmt(res['auc'])}; " + tar_text(res["tar_at_far"]))
    folds_t = md_table(["fold", "accuracy", "threshold", "pairs"],
                       [[f["fold"], fmt(f["accuracy"]), fmt(f["threshold"]), f["pairs"]] for f in res["folds"]])
    write_markdown(out / "summary.md", "Verification on real identities", [("", head), ("Folds", folds_t)])
    return result


# ----------------------------------------------------------------------------- the runner

def _hash(d) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


class Runner:
    def __init__(self, exp: Experiment, out: Path, say=print, only: list[str] | None = None):
        self.exp, self.out, self.say = exp, Path(out), say
        self.only = only or []
        self.timings: dict = {}
        tf = self.out / "timings.json"
        if tf.is_file():
            try:
                self.timings = json.loads(tf.read_text())
            except ValueError:
                self.timings = {}

    # ---- selection
    def selected_cells(self) -> list[Cell]:
        if not self.only:
            return list(self.exp.cells)
        by = {c.name: c for c in self.exp.cells}
        want: list[Cell] = []
        for pat in self.only:
            hits = [c for c in self.exp.cells if fnmatch.fnmatchcase(c.name, pat) or fnmatch.fnmatchcase(c.id, pat)]
            if not hits:
                raise ConfigError(f"--only {pat!r} matches no cell (cells: {', '.join(c.name for c in self.exp.cells)})")
            want += hits
        need: list[Cell] = []
        for c in want:  # with their init_from dependencies
            chain = [c]
            while self.exp.recipes[chain[-1].recipe].init_from:
                chain.append(by[f"{c.dataset}/{self.exp.recipes[chain[-1].recipe].init_from}"])
            for x in reversed(chain):
                if x not in need:
                    need.append(x)
        return [c for c in self.exp.cells if c in need]

    # ---- paths
    def dataset_dir(self, name: str) -> Path:
        return self.out / "datasets" / name

    def run_dir(self, cell: Cell) -> Path:
        return self.out / "runs" / cell.id

    def eval_dir(self, cell: Cell, ev: Evaluation) -> Path:
        return self.out / "evals" / cell.id / ev.name

    def _time(self, key: str, seconds: float) -> None:
        self.timings[key] = round(seconds, 2)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "timings.json").write_text(json.dumps(self.timings, indent=2) + "\n")

    # ---- state
    def dataset_state(self, name: str) -> str:
        m = self.dataset_dir(name) / "manifest.json"
        if not m.is_file():
            return "to render"
        try:
            man = json.loads(m.read_text())
        except ValueError:
            return "unreadable manifest"
        return "complete" if man.get("complete") else f"partial ({man['counts']['chunks_done']}/{man['counts']['chunks']} chunks)"

    def train_state(self, cell: Cell) -> str:
        run = self.run_dir(cell)
        if (run / "experiment_done.json").is_file() and (run / "checkpoint.pt").is_file():
            return "complete"
        if (run / "checkpoint.pt").is_file():
            return "to resume"
        return "to train"

    def eval_state(self, cell: Cell, ev: Evaluation) -> str:
        why = ev.missing()
        if why:
            return f"skipped: {why}"
        return "complete" if (self.eval_dir(cell, ev) / "result.json").is_file() else "to evaluate"

    # ---- plan
    def plan_lines(self) -> list[str]:
        cells = self.selected_cells()
        used = [d for d in self.exp.datasets if any(c.dataset == d for c in cells)]
        lines = [f"experiment {self.exp.name}: {len(used)} datasets, {len(cells)} cells, "
                 f"{len(self.exp.evaluations)} evaluations -> {self.out}"]
        for d in used:
            ds = self.exp.datasets[d]
            o = ds.options
            lines.append(f"  render {d}: {o['ids']} ids x {ds.per_id} = {ds.n_ids * ds.per_id} images, pose {o['pose']}, "
                         f"{o['size']} px{', identity mixup' if o['identity_mixup'] else ''} [{self.dataset_state(d)}]")
        for c in cells:
            r = self.exp.recipes[c.recipe]
            t = r.train
            if r.train_on == "dataset":
                what = f"on {c.dataset}"
            elif r.train_on == "real":
                what = f"on {Path(t['real_data']).name} (real)"
            elif r.train_on == "online":
                what = f"on online synthesis from {Path(t['online']).name}"
            else:
                what = f"on {c.dataset} + {Path(t['real_data']).name}" + (
                    f" (domain mixup {t['domain_mixup']})" if t.get("domain_mixup") is not None else "")
            init = f", init from {c.dataset}/{r.init_from}" if r.init_from else ""
            budget = f"{t.get('steps')} steps" if t.get("steps") else f"{t.get('epochs', 1)} epochs"
            lines.append(f"  train {c.name}: {t.get('arch', 'nn4small2')} {t.get('loss', 'triplet')} {what}{init}, "
                         f"{budget}{' (dependency)' if c.added else ''} [{self.train_state(c)}]")
        for ev in self.exp.evaluations.values():
            states = [self.eval_state(c, ev) for c in cells]
            summary = states[0] if len(set(states)) == 1 else ", ".join(f"{s}: {states.count(s)}" for s in sorted(set(states)))
            lines.append(f"  evaluate {ev.name} ({ev.protocol}) x {len(cells)} cells [{summary}]")
        lines.append(f"  report: {self.out / 'results.md'}, results.csv, roc_<evaluation>.png")
        return lines

    # ---- stages
    def render(self, name: str, k: int, n: int) -> None:
        from morphgen.dataset import DatasetJob, OutputConfig, run as run_dataset

        ds = self.exp.datasets[name]
        state = self.dataset_state(name)
        if state == "complete":
            self.say(f"[render {k}/{n}] {name}: skipped (complete)")
            return
        scene, per_id = ds.scene, ds.per_id
        if ds.options.get("device", "cpu") != "cpu":  # refuses a missing GPU now
            opts = dict(ds.options)
            scene = _cli_options().scene_from_options(opts)
            per_id = int(opts["per_id"])
        o = ds.options
        job = DatasetJob(scene, per_id, OutputConfig(image_format=o["image_format"], jpg_quality=int(o["jpg_quality"]),
                                                     container=o["container"], rps=bool(o["rps"]),
                                                     chunk_ids=int(o["chunk_ids"])))
        self.say(f"[render {k}/{n}] {name}: {ds.n_ids} ids x {per_id} images ({state})")
        t0 = time.perf_counter()
        res = run_dataset(self.dataset_dir(name), job, workers=self.exp.workers, resume=True, progress=False)
        dt = time.perf_counter() - t0
        self._time(f"render/{name}", dt)
        self.say(f"[render {k}/{n}] {name}: {res['images']} images in {dt:.0f} s ({res['images_per_s']:.0f} img/s)")

    def train_config(self, cell: Cell):
        from .train import TrainConfig

        r = self.exp.recipes[cell.recipe]
        o = dict(r.train)
        run = self.run_dir(cell)
        if r.train_on == "real":
            o["data"], o["data_format"] = o.pop("real_data"), o.pop("real_format", "auto")
        elif r.train_on == "online":
            o["data"] = ""
        else:
            o["data"] = str(self.dataset_dir(cell.dataset))
        if r.identities is not None:
            o["list_file"] = str(run / "identities_list.tsv")
        if r.init_from:
            o["init"] = str(self.run_dir(Cell(cell.dataset, r.init_from, "")))
        o.setdefault("cache_dir", str(self.out / "cache"))
        return TrainConfig(out=str(run), progress=False, extra={"experiment": self.exp.name, "cell": cell.name}, **o)

    def train(self, cell: Cell, k: int, n: int) -> None:
        from .train import train as run_training

        run = self.run_dir(cell)
        cfg = self.train_config(cell)
        key = _hash({kk: v for kk, v in cfg.to_dict().items() if kk not in ("resume", "progress", "extra")})
        state = self.train_state(cell)
        if state == "complete":
            done = json.loads((run / "experiment_done.json").read_text())
            if done.get("config_hash") != key:
                raise ConfigError(f"cell {cell.name} was trained with another recipe or dataset ({run}): "
                                  "delete that run folder or use another --out")
            self.say(f"[train {k}/{n}] {cell.name}: skipped (complete)")
            return
        r = self.exp.recipes[cell.recipe]
        if r.identities is not None:
            from .data import load_imageset, write_list
            iset = load_imageset(Path(cfg.data), cfg.data_format)
            if iset.kind == "folder":
                iset.identities = [n_ if n_ else Path(f).name.split(".")[0] for f, n_ in zip(iset.files, iset.identities)]
            keep = select_identities(iset.identities, r.identities, f"recipes.{r.name}.identities")
            write_list(iset.take([i for i, nm in enumerate(iset.identities) if nm in keep]), run / "identities_list.tsv")
        cfg = dataclasses.replace(cfg, resume=state == "to resume")
        self.say(f"[train {k}/{n}] {cell.name}: {'resuming' if cfg.resume else 'training'} -> {run}")
        t0 = time.perf_counter()
        summary = run_training(cfg, say=lambda m: self.say(f"    {m}"))
        dt = time.perf_counter() - t0
        self._time(f"train/{cell.name}", dt)
        losses = summary.get("losses") or []
        done = {"config_hash": key, "seconds": dt, "steps": summary["steps"], "train_images": summary["train_images"],
                "classes": summary["classes"], "images_per_s": summary["images_per_s"],
                "loss_first": losses[0] if losses else None, "loss_last": float(np.mean(losses[-10:])) if losses else None,
                "val_end": summary.get("val_end") or {}}
        from .evaluation.report import write_json
        write_json(run / "experiment_done.json", done)
        self.say(f"[train {k}/{n}] {cell.name}: {summary['steps']} steps in {dt:.0f} s "
                 f"({summary['images_per_s']:.0f} img/s)")

    def benchmark_dir(self, ev: Evaluation) -> Path:
        return self.out / "benchmarks" / ev.name

    def evaluate(self, cell: Cell, ev: Evaluation, k: int, n: int) -> None:
        state = self.eval_state(cell, ev)
        tag = f"[eval {k}/{n}] {cell.name} x {ev.name}"
        if state != "to evaluate":
            self.say(f"{tag}: {state}")
            return
        run, out, o = self.run_dir(cell), self.eval_dir(cell, ev), ev.options
        cache = self.out / "cache"
        self.say(f"{tag}: {ev.protocol}")
        t0 = time.perf_counter()
        if ev.protocol == "synthetic":
            self._synthetic(run, out, ev, cache)
        elif ev.protocol == "pose":
            from .evaluation import evaluate_pose
            evaluate_pose(run, o["images"], out, poses=o["poses"], folds=o["folds"], per_fold=o["per_fold"],
                          seed=o["seed"], yaw_step=float(o["yaw_step"]), align=o["align"], flip=o["flip"],
                          batch_size=ev.batch_size, cache_dir=cache)
            _roc_from_scores(out / "scores.csv", out / "roc.csv", "score")
        elif ev.protocol == "lfw":
            from .evaluation import evaluate_lfw
            evaluate_lfw(run, o["lfw_dir"], o["pairs"], out, flip=o["flip"], align=o["align"],
                         batch_size=ev.batch_size, cache_dir=cache)
        elif ev.protocol == "ijba":
            from .evaluation import evaluate_ijba
            evaluate_ijba(run, o["ijba_dir"], out, splits=str(o["splits"]), images_dir=o["images"], align=o["align"],
                          flip=o["flip"], batch_size=ev.batch_size, cache_dir=cache)
        elif ev.protocol == "real_pairs":
            evaluate_real_pairs(run, o["images"], out, identities=o["identities"], folds=o["folds"],
                                per_fold=o["per_fold"], seed=o["seed"], align=o["align"], flip=o["flip"],
                                batch_size=ev.batch_size, cache_dir=cache)
        dt = time.perf_counter() - t0
        self._time(f"eval/{cell.name}/{ev.name}", dt)
        acc = _metrics(ev, json.loads((out / "result.json").read_text()))
        self.say(f"{tag}: {acc['text']} ({dt:.0f} s)")

    def _synthetic(self, run: Path, out: Path, ev: Evaluation, cache: Path) -> None:
        from .evaluation.synthetic import benchmark_scene, evaluate_synthetic, render_benchmark

        o = ev.options
        bench = self.benchmark_dir(ev)
        scene = benchmark_scene(o["ids"], o["seed"], str(o["yaws"]), o["lights"], o["size"], o["model"], o["expressions"])
        man = bench / "manifest.json"
        if not (man.is_file() and json.loads(man.read_text()).get("complete")):
            t0 = time.perf_counter()
            self.say(f"    rendering the {ev.name} benchmark once for all cells -> {bench}")
            render_benchmark(bench, scene, workers=self.exp.workers)
            self._time(f"render/benchmark:{ev.name}", time.perf_counter() - t0)
        evaluate_synthetic(run, out, data_dir=bench, folds=o["folds"], per_fold=o["per_fold"], pair_seed=o["pair_seed"],
                           flip=o["flip"], batch_size=ev.batch_size)
        _synthetic_roc(run, out, bench, o["flip"], ev.batch_size)

    # ---- report
    def report(self) -> tuple[Path, Path]:
        cells = self.exp.cells
        evs = list(self.exp.evaluations.values())
        header = ["cell", "dataset", "recipe", "train images", "steps", "train s"]
        md_rows, csv_rows = [], []
        cols = []
        for ev in evs:
            cols.append(ev)
        for c in cells:
            r = self.exp.recipes[c.recipe]
            done_f = self.run_dir(c) / "experiment_done.json"
            done = json.loads(done_f.read_text()) if done_f.is_file() else {}
            row = [c.label, c.dataset, c.recipe + (f" (init {r.init_from})" if r.init_from else ""),
                   done.get("train_images", ""), done.get("steps", ""),
                   f"{done['seconds']:.0f}" if done.get("seconds") is not None else "not run"]
            crow = {"cell": c.name, "label": c.label, "dataset": c.dataset, "recipe": c.recipe,
                    "init_from": r.init_from or "", "train_on": r.train_on, "train_images": done.get("train_images", ""),
                    "steps": done.get("steps", ""), "train_seconds": round(done["seconds"], 1) if done.get("seconds") else ""}
            for ev in evs:
                why = ev.missing()
                rf = self.eval_dir(c, ev) / "result.json"
                if why:
                    row.append(f"skipped ({why})")
                    crow[f"{ev.name}_status"] = f"skipped: {why}"
                elif not rf.is_file():
                    row.append("not run")
                    crow[f"{ev.name}_status"] = "not run"
                else:
                    m = _metrics(ev, json.loads(rf.read_text()))
                    row.append(m["text"])
                    crow[f"{ev.name}_status"] = "ok"
                    for kk, v in m["values"].items():
                        crow[f"{ev.name}_{kk}"] = "" if v is None else round(v, 5)
            md_rows.append(row)
            csv_rows.append(crow)
        from .evaluation.report import md_table
        head = header + [f"{ev.label} ({_metric_name(ev)})" for ev in evs]
        lines = [f"# {self.exp.name}", ""]
        if self.exp.description:
            lines += [self.exp.description.strip(), ""]
        lines += [md_table(head, md_rows), ""]
        notes = ["Accuracy: mean ± std over identity-disjoint folds, each fold's threshold chosen on the "
                 "others (LFW protocol); TAR@FAR: mean ± std over splits."]
        for ev in evs:
            o = ev.options
            if ev.protocol == "synthetic":
                notes.append(f"{ev.label}: held-out rendered identities ({o['ids']} ids, seed {o['seed']}, yaw {o['yaws']}, "
                             f"{o['lights']} lights, {o['size']} px); frontal gallery vs probe at each yaw, same light "
                             "(the pose protocol; the light protocol is in each cell's result.json).")
            elif ev.protocol == "real_pairs":
                notes.append(f"{ev.label}: real pairs from `{o['images']}`"
                             + (f", identities {o['identities']}" if o.get("identities") else "") + ".")
            else:
                notes.append(f"{ev.label}: {ev.protocol} protocol.")
        lines += ["Notes:", ""] + [f"- {n_}" for n_ in notes]
        rocs = [f"roc_{ev.name}.png" for ev in evs if (self.out / f"roc_{ev.name}.png").is_file()]
        if rocs:
            lines += ["", "ROC curves: " + ", ".join(f"[{r_}]({r_})" for r_ in rocs)]
        if self.timings:
            total = sum(v for v in self.timings.values())
            lines += ["", f"Measured stage times (s, this output folder; total {total:.0f}):", "",
                      md_table(["stage", "seconds"], [[k_, f"{v:.0f}"] for k_, v in self.timings.items()])]
        md = self.out / "results.md"
        md.write_text("\n".join(lines) + "\n")
        keys: list[str] = []
        for crow in csv_rows:
            keys += [k_ for k_ in crow if k_ not in keys]
        cf = self.out / "results.csv"
        with open(cf, "w", newline="") as f:
            w = csv.DictWriter(f, keys)
            w.writeheader()
            w.writerows(csv_rows)
        self._roc_plots()
        return md, cf

    def _roc_plots(self) -> None:
        from .evaluation.report import plot_roc

        for ev in self.exp.evaluations.values():
            curves = []
            for c in self.exp.cells:
                f = self.eval_dir(c, ev) / "roc.csv"
                if not f.is_file():
                    continue
                fpr, tpr, thr = _read_roc_csv(f)
                if len(fpr) == 0:
                    continue
                rf = self.eval_dir(c, ev) / "result.json"
                m = _metrics(ev, json.loads(rf.read_text())) if rf.is_file() else {"short": ""}
                curves.append({"label": f"{c.label} {m['short']}", "fpr": fpr, "tpr": tpr, "thresholds": thr})
            if curves:
                plot_roc(self.out / f"roc_{ev.name}.png", curves, f"{self.exp.name}: {ev.label}", log_far=False)


def _metric_name(ev: Evaluation) -> str:
    return "TAR@FAR=0.1 / 0.01" if ev.protocol == "ijba" else "accuracy"


def _metrics(ev: Evaluation, r: dict) -> dict:
    """The table's numbers of one result.json: text, a short legend tag and CSV values."""
    from .evaluation.report import fmt

    def pm(d: dict) -> str:
        return f"{fmt(d.get('mean'), 3)} ± {fmt(d.get('std'), 3)}"

    if ev.protocol == "ijba":
        pool = next(iter(r["summary"]))
        s = r["summary"][pool]
        t1, t2 = s.get("tar@far=0.1", {}), s.get("tar@far=0.01", {})
        return {"text": f"{pm(t1)} / {pm(t2)}", "short": f"(TAR@0.01 {fmt(t2.get('mean'), 3)})",
                "values": {"tar_far0.1_mean": t1.get("mean"), "tar_far0.1_std": t1.get("std"),
                           "tar_far0.01_mean": t2.get("mean"), "tar_far0.01_std": t2.get("std"),
                           "auc_mean": s.get("auc", {}).get("mean")}}
    p = r["protocols"]["pose"] if ev.protocol == "synthetic" else r
    acc = p["accuracy"]
    vals = {"accuracy_mean": acc.get("mean"), "accuracy_std": acc.get("std"), "auc": p.get("auc")}
    for far, t in (p.get("tar_at_far") or {}).items():
        vals[f"tar_far{far}"] = t.get("tar")
    if ev.protocol == "synthetic" and "light" in r["protocols"]:
        la = r["protocols"]["light"]["accuracy"]
        vals["light_accuracy_mean"], vals["light_accuracy_std"] = la.get("mean"), la.get("std")
    return {"text": pm(acc), "short": f"({fmt(acc.get('mean'), 3)})", "values": vals}


def _read_roc_csv(path: Path):
    """The first curve of a report.write_roc_csv file (fpr, tpr, thresholds)."""
    fpr, tpr, thr, first = [], [], [], None
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            first = first if first is not None else row["curve"]
            if row["curve"] != first:
                continue
            fpr.append(float(row["fpr"])), tpr.append(float(row["tpr"])), thr.append(float(row["threshold"]))
    return np.array(fpr), np.array(tpr), np.array(thr)


def _roc_from_scores(scores_csv: Path, roc_csv: Path, column: str) -> None:
    from .evaluation import metrics
    from .evaluation.report import write_roc_csv

    s, y = [], []
    with open(scores_csv, newline="") as f:
        for row in csv.DictReader(f):
            s.append(float(row[column])), y.append(bool(int(row["same"])))
    fpr, tpr, thr = metrics.roc_curve(np.array(s), np.array(y))
    write_roc_csv(roc_csv, [{"label": "all pairs", "fpr": fpr, "tpr": tpr, "thresholds": thr}])


def _synthetic_roc(run: Path, out: Path, bench: Path, flip: bool, batch_size: int) -> None:
    """roc.csv of the synthetic pose protocol (its pairs file against fresh embeddings)."""
    from .evaluation import metrics
    from .evaluation.common import embed_imageset, load_eval_model, read_pairs_file, score_pairs
    from .evaluation.multipie import read_morphgen_poses
    from .evaluation.report import write_roc_csv

    model, meta = load_eval_model(run)
    data = read_morphgen_poses(bench)
    pairs, _, _ = read_pairs_file(out / "pairs_pose.txt", data.iset.files)
    used = np.unique(np.r_[pairs.a, pairs.b])
    emb = embed_imageset(model, meta, data.iset.take(used), align=True, flip=flip, batch_size=batch_size)
    remap = np.full(len(data.iset), -1, np.int64)
    remap[used] = np.arange(len(used))
    from .evaluation.common import PairSet
    local = PairSet(remap[pairs.a], remap[pairs.b], pairs.same, pairs.fold, pairs.bins, pairs.identity_disjoint,
                    pairs.n_folds)
    scores, ok = score_pairs(emb, local)
    fpr, tpr, thr = metrics.roc_curve(scores, pairs.same[ok])
    write_roc_csv(out / "roc.csv", [{"label": "pose protocol", "fpr": fpr, "tpr": tpr, "thresholds": thr}])


def run_experiment(exp: Experiment, out: Path, only: list[str] | None = None, dry_run: bool = False,
                   say=print) -> dict:
    """Render, train, evaluate and tabulate (skipping what is complete); returns a summary."""
    runner = Runner(exp, out, say, only)
    for line in runner.plan_lines():
        say(line)
    if dry_run:
        return {"dry_run": True}
    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "experiment.json").write_text(json.dumps({"config": str(exp.path), "raw": exp.raw}, indent=2, default=str))
    cells = runner.selected_cells()
    used = [d for d in exp.datasets if any(c.dataset == d for c in cells)]
    for k, d in enumerate(used, 1):
        runner.render(d, k, len(used))
    for k, c in enumerate(cells, 1):
        runner.train(c, k, len(cells))
    jobs = [(c, ev) for c in cells for ev in exp.evaluations.values()]
    for k, (c, ev) in enumerate(jobs, 1):
        runner.evaluate(c, ev, k, len(jobs))
    md, cf = runner.report()
    dt = time.perf_counter() - t0
    say(f"wrote {md}, {cf.name} and {len(list(out.glob('roc_*.png')))} ROC plots in {dt:.0f} s")
    return {"results_md": str(md), "results_csv": str(cf), "seconds": dt}
