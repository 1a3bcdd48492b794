"""Experiment configs: reading and checking the YAML an experiment runs from (datasets,
recipes, cells, evaluations; the format is in :mod:`recognition.experiment`'s docstring),
before anything renders or trains. Every problem is a one-line ConfigError naming its key.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

from morphgen.configfile import read_mapping
from morphgen.errors import ConfigError
from morphgen.options import RENDER_DEFAULTS, config_value, paths_from, scene_from_options

from .data import check_selector_on, identity_selector

TOP_KEYS = ("name", "description", "out", "workers", "cache", "dataset_defaults", "recipe_defaults", "datasets",
            "recipes", "cells", "evaluations")
# render options an experiment decides itself (output folder, resumption, parallelism)
_RENDER_EXCLUDED = ("out", "workers", "shard", "resume", "overwrite", "dask_address", "quiet", "config")
# trainer fields the experiment decides itself
_TRAIN_EXCLUDED = ("data", "out", "resume", "progress", "extra")
_TRAIN_PATHS = ("real_data", "list_file", "init", "cache_dir", "real_preview")
_TRAIN_INPUTS = ("real_data", "list_file", "init", "real_preview")   # must exist before anything runs
RECIPE_EXTRA = ("init_from", "train_on", "identities", "label")
TRAIN_ON = ("dataset", "real", "dataset+real", "online")
NONE = "none"

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
    options: dict            # the protocol's options, paths absolute
    label: str
    batch_size: int = 64

    @property
    def spec(self):
        """The protocol's registry entry (``recognition.evaluation.protocols``)."""
        from .evaluation.protocols import get
        return get(self.protocol)

    def missing(self) -> str | None:
        """Why this evaluation cannot run here (a data path is absent), or None."""
        return self.spec.missing(self.options)

    def columns(self, result: dict | None) -> list:
        return self.spec.columns(self.options, self.label, result)


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
    cache: Path | None = None    # MTCNN landmark caches (default OUT/cache); share one between experiments


def _mapping(val, where: str, names: bool = False) -> dict:
    """`val` as a dict; option keys take `-` for `_` (as flags do), while `names` (of
    datasets, recipes, evaluations: what cells name) are kept as written."""
    if val is None:
        return {}
    if not isinstance(val, dict):
        raise ConfigError(f"{where} must be a mapping (name: value), got {type(val).__name__}")
    return {str(k) if names else str(k).replace("-", "_"): v for k, v in val.items()}


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
    if not re.fullmatch(r"[A-Za-z0-9_.+-]+", name) or name in (".", ".."):  # (folders are named after them)
        raise ConfigError(f"{where} name {name!r}: use letters, digits, '_', '-', '.', '+' (not . or .. alone)")
    return name


def load_experiment(path: str | Path, validate_scenes: bool = True) -> Experiment:
    """Read and check an experiment config; every problem is a one-line ConfigError."""
    path = Path(path)
    raw = _mapping(read_mapping(path, "experiment config"), str(path))
    _check_keys(raw, TOP_KEYS, f"{path} (top level)")
    base = path.resolve().parent
    where = path.name

    # datasets
    render_keys = [k for k in RENDER_DEFAULTS if k not in _RENDER_EXCLUDED]
    ddef = _mapping(raw.get("dataset_defaults"), f"{where}: dataset_defaults")
    _check_keys(ddef, render_keys, f"{where}: dataset_defaults")
    datasets: dict[str, Dataset] = {}
    for name, opts in _mapping(raw.get("datasets"), f"{where}: datasets", names=True).items():
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
    from .train_config import TrainConfig

    train_fields = {f.name for f in dataclasses.fields(TrainConfig)} - set(_TRAIN_EXCLUDED)
    rdef = _mapping(raw.get("recipe_defaults"), f"{where}: recipe_defaults")
    _check_keys(rdef, train_fields | {"train_on"}, f"{where}: recipe_defaults")
    recipes: dict[str, Recipe] = {}
    raw_recipes = _mapping(raw.get("recipes"), f"{where}: recipes", names=True)
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
                if k in _TRAIN_INPUTS and opts[k] and not Path(opts[k]).exists():  # not hours later, at that cell
                    raise ConfigError(f"{where}: recipes.{name}.{k} {opts[k]} does not exist")
        if opts.get("online") not in (None, "default"):
            opts["online"] = _rel(base, opts["online"])
        if isinstance(opts.get("online_set"), dict):  # its model, backgrounds, pose file...: as every path here
            opts["online_set"] = paths_from(base, opts["online_set"])
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
            identity_selector(extra["identities"], f"{where}: recipes.{name}.identities")
            if train_on == "real" and Path(opts["real_data"]).is_dir():  # (a rendered dataset is known later)
                check_selector_on(Path(opts["real_data"]), opts.get("real_format", "auto"), extra["identities"],
                                  f"{where}: recipes.{name}.identities", least=2)
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
    from .evaluation.protocols import COMMON, registry

    protocols = registry()
    evaluations: dict[str, Evaluation] = {}
    for name, opts in _mapping(raw.get("evaluations"), f"{where}: evaluations", names=True).items():
        name = _name_ok(name, "evaluation")
        opts = _mapping(opts, f"{where}: evaluations.{name}")
        proto = opts.get("protocol")
        if proto not in protocols:
            raise ConfigError(f"{where}: evaluations.{name}.protocol {proto!r}: use one of {', '.join(protocols)}")
        o = protocols[proto].options({k: v for k, v in opts.items() if k not in COMMON}, base,
                                     f"{where}: evaluations.{name}")
        bs = opts.get("batch_size", 64)
        if not isinstance(bs, int) or isinstance(bs, bool) or bs < 1:
            raise ConfigError(f"{where}: evaluations.{name}.batch_size must be a positive integer, got {bs!r}")
        evaluations[name] = Evaluation(name, proto, o, str(opts.get("label") or name), bs)

    workers = raw.get("workers")
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
        raise ConfigError(f"{where}: workers must be a positive integer, got {workers!r}")
    import os
    cache = raw.get("cache")
    if cache is not None and not isinstance(cache, str):
        raise ConfigError(f"{where}: cache must be a folder path, got {cache!r}")
    return Experiment(path.resolve(), str(raw.get("name") or path.stem), str(raw.get("description") or ""),
                      Path(_rel(base, raw["out"])) if raw.get("out") else None,
                      workers or len(os.sched_getaffinity(0)), datasets, recipes, cells, evaluations, raw,
                      Path(_rel(base, cache)) if cache else None)


def _render_options(base: Path, opts: dict) -> dict:
    o = dict(RENDER_DEFAULTS)
    o.update({k: config_value(k, v) for k, v in opts.items()})
    if isinstance(o["pose"], dict):
        raise ConfigError("pose as a mapping is not supported here: use a preset (syn1m, frontal) or a YAML file path")
    return paths_from(base, o)


def _scene(d: Dataset, where: str):
    """The dataset's SceneConfig and images per identity (ConfigError names the dataset)."""
    opts = dict(d.options)
    if opts.get("device", "cpu") != "cpu":
        import torch
        if not torch.cuda.is_available():
            opts["device"] = "cpu"  # planning only: refused when it renders (Runner.render)
    try:
        scene = scene_from_options(opts)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: bad value: {exc}") from None
    return scene, int(opts["per_id"])


def _check_train(opts: dict, where: str) -> None:
    from .train_config import TrainConfig

    o = dict(opts)
    if str(o.get("device", "cpu")).startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            o["device"], o["precision"] = "cpu", "auto"  # refused when it trains, not when planning
    try:
        TrainConfig(data="" if o.get("online") else "x", **o).resolved()
        if o.get("online"):  # a bad scene stops the plan, not the training hours later
            from .online import check_online_scene, load_scene
            check_online_scene(load_scene(o["online"], o.get("online_set")), bool(o.get("online_unbounded")))
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: bad value: {exc}") from None


def _check_init_cycles(recipes: dict, where: str) -> None:
    for r in recipes.values():
        seen, cur = {r.name}, r
        while cur.init_from is not None:
            if cur.init_from in seen:
                raise ConfigError(f"{where}: recipes.{r.name}: init_from forms a cycle ({' -> '.join(seen)})")
            seen.add(cur.init_from)
            cur = recipes[cur.init_from]


def _check_batch_fits(rec: Recipe, ds: Dataset, where: str) -> None:
    """A P x K batch of more identities than the cell's dataset renders is refused when the
    config is read (the trainer refused it after every render, and named the flag, not
    the recipe key)."""
    t = rec.train
    pk = t.get("sampler", "auto") == "pk" or (t.get("sampler", "auto") == "auto" and t.get("loss", "triplet") == "triplet")
    batch_p, held_out = t.get("batch_p", 20), t.get("val_ids", 0)
    if not (isinstance(batch_p, int) and isinstance(held_out, int)):
        return  # (the trainer's own type check names them)
    if pk and batch_p > ds.n_ids - held_out:
        raise ConfigError(f"{where}: recipes.{rec.name}.batch_p {batch_p} but dataset {ds.name} renders {ds.n_ids} "
                          f"identities{f' ({held_out} held out)' if held_out else ''}: lower batch_p or raise its ids")


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
        if d != NONE and rec.train_on == "dataset":
            _check_batch_fits(rec, datasets[d], f"{where}: cell {d}/{r}")
        if rec.init_from is not None:  # dependency first
            add(d, rec.init_from, None, True, k)
        seen.add((d, r))
        cells.append(Cell(d, r, str(label or (f"{d} / {rec.label or r}" if d != NONE else (rec.label or r))), added))

    for k, (d, r, label) in enumerate(pairs):
        add(d, r, label, False, k)
    if not cells:
        raise ConfigError(f"{where}: no cells to run")
    return cells
