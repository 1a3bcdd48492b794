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
      cfp:  {protocol: cfp, cfp_dir: ../data/cfp}                 # CFP-FF and CFP-FP columns
      lfw:  {protocol: lfw, lfw_dir: lfw, pairs: lfw/pairs.txt}    # skipped when absent

Evaluation protocols (``protocol:``) and their options are listed by
``recognition.evaluation.protocols.registry()`` (``morphgen experiment protocols``).

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
summary.md, roc.csv ...), ``cache/`` (MTCNN landmarks; ``cache: PATH`` in the config shares one
folder between experiments), ``timings.json``, and the tables
``results.md`` / ``results.csv`` with ``roc_<evaluation>.png``. Every stage is skipped
when its output is complete, so an interrupted run is continued by running it again.
"""
from __future__ import annotations

import csv
import dataclasses
import fnmatch
import hashlib
import json
import shlex
import time
from pathlib import Path

import numpy as np

from morphgen.errors import ConfigError
from morphgen.layout import manifest_path, read_manifest
from morphgen.options import scene_from_options

from .experiment_config import Cell, Evaluation, Experiment


def _hash(d) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _flat(d, prefix: str = "") -> dict:
    """A nested dict as {"a.b": value}, to name what differs between two configs."""
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def differences(old: dict, new: dict, limit: int = 3) -> str:
    """'key old, now new' for the first `limit` differing (flattened) keys: what a refusal
    to reuse an output names, so the user sees which option changed."""
    a, b = _flat(old), _flat(new)
    keys = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    def shown(v) -> str:  # an option left out is recorded as None: the default, not a value "None"
        return "the default" if v is None else repr(v)

    text = "; ".join(f"{k} {shown(a.get(k))}, now {shown(b.get(k))}" for k in keys[:limit])
    return text + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _recipe_items(cfg) -> list[tuple[str, object]]:
    """The trainer config's options that decide a run (not how it is run: resume, progress
    bars, the experiment's labels)."""
    return [(k, v) for k, v in cfg.to_dict().items() if k not in ("resume", "progress", "extra")]


def training_stamp(run: Path) -> str:
    """What identifies a cell's finished training: a hash of its experiment_done.json, which
    each training writes anew (its seconds, losses and recipe), and which travels with a
    copied or moved folder as its content, unlike a file's modification time."""
    return hashlib.sha256((run / "experiment_done.json").read_bytes()).hexdigest()[:12]


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

    @property
    def cache_dir(self) -> Path:
        """MTCNN landmark caches: the config's `cache:` folder, else OUT/cache."""
        return self.exp.cache or self.out / "cache"

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
    def dataset_job(self, name: str, scene=None):
        """The render job of a dataset (with `scene`, else the one checked when the config
        was read, on the dataset's device: its config hash is the one a render records)."""
        from morphgen.dataset import DatasetJob, OutputConfig

        ds = self.exp.datasets[name]
        scene = scene or dataclasses.replace(ds.scene, device=ds.options.get("device", "cpu"))
        return DatasetJob(scene, ds.per_id, OutputConfig.from_options(ds.options, self.dataset_dir(name)))

    def dataset_state(self, name: str) -> str:
        """To render, partial or complete; a ConfigError when the folder holds a dataset of
        another config, or one whose manifest cannot be read: resuming would mix the two,
        and skipping it would report the old one's results under the new config."""
        folder = self.dataset_dir(name)
        if not manifest_path(folder).is_file():
            return "to render"
        rel = folder.relative_to(self.out)
        try:
            man = read_manifest(folder)
            counts, done = man["counts"], man.get("complete")
        except (OSError, ValueError, KeyError, TypeError):
            raise ConfigError(f"{rel} in {self.out} has an unreadable manifest.json: delete that folder "
                              "or use another --out") from None
        from morphgen.dataset import whole_mesh_if_written_so

        job = whole_mesh_if_written_so(folder, self.dataset_job(name))  # as the writer resumes it
        if man.get("config_hash") != job.config_hash():
            raise ConfigError(f"{rel} in {self.out} was rendered with another config "
                              f"({differences(man.get('config') or {}, job.to_dict())}): delete that folder "
                              "or use another --out")
        if done:
            return "complete"
        # the chunks on disk: the manifest's count is of its last write, before a kill
        from morphgen.layout import done_chunks
        return f"partial ({len(done_chunks(folder))}/{counts['chunks']} chunks)"

    def train_state(self, cell: Cell) -> str:
        run = self.run_dir(cell)
        if (run / "experiment_done.json").is_file() and (run / "checkpoint.pt").is_file():
            return "complete"
        if (run / "checkpoint.pt").is_file():
            return "to resume"
        return "to train"

    def eval_stamp(self, cell: Cell, ev: Evaluation) -> dict | None:
        """What an evaluation's result was made from: the cell's checkpoint and the
        evaluation's options (None before the cell is trained)."""
        if self.train_state(cell) != "complete":
            return None
        return {"training": training_stamp(self.run_dir(cell)), "options": _hash(ev.options)}

    def eval_state(self, cell: Cell, ev: Evaluation) -> str:
        why = ev.missing()
        if why:
            return f"skipped: {why}"
        return "complete" if self._result(cell, ev) is not None else "to evaluate"

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
            self.checked_record(c, self.train_config(c))  # a run of another recipe is refused in the plan too
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
        from morphgen.dataset import run as run_dataset

        ds = self.exp.datasets[name]
        state = self.dataset_state(name)
        if state == "complete":
            self.say(f"[render {k}/{n}] {name}: skipped (complete)")
            return
        scene = ds.scene
        if ds.options.get("device", "cpu") != "cpu":  # refuses a missing GPU now
            scene = scene_from_options(dict(ds.options))
        job = self.dataset_job(name, scene)
        self.say(f"[render {k}/{n}] {name}: {ds.n_ids} ids x {ds.per_id} images ({state})")
        t0 = time.perf_counter()
        res = run_dataset(self.dataset_dir(name), job, workers=self.exp.workers, resume=True, progress=False)
        dt = time.perf_counter() - t0
        self._time(f"render/{name}", dt)
        self.say(f"[render {k}/{n}] {name}: {res['images']} images in {dt:.0f} s ({res['images_per_s']:.0f} img/s)")

    def train_config(self, cell: Cell):
        from .train_config import TrainConfig

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
        o.setdefault("cache_dir", str(self.cache_dir))
        return TrainConfig(out=str(run), progress=False, extra={"experiment": self.exp.name, "cell": cell.name}, **o)

    def recipe_record(self, cfg) -> dict:
        """The trainer config that decides a cell's run, with paths inside the output
        folder written relative to it (``<out>/...``): a moved or copied experiment folder
        still matches its runs."""
        outs = {str(self.out), str(self.out.resolve())}  # (--out as given, and absolute)

        def portable(v):
            for out in outs:
                if isinstance(v, str) and (v == out or v.startswith(out + "/")):
                    return "<out>" + v[len(out):]
            return v

        return {k: portable(v) for k, v in _recipe_items(cfg)}

    def cell_record(self, cell: Cell, cfg) -> dict:
        """`recipe_record`, plus for a cell that starts from another (``init_from``) which
        training of it: a cell fine-tuned from a run that was since deleted and trained
        again is another cell (it was kept as complete)."""
        recipe = self.recipe_record(cfg)
        r = self.exp.recipes[cell.recipe]
        if r.init_from:
            dep = Cell(cell.dataset, r.init_from, "")
            done = self.run_dir(dep) / "experiment_done.json"
            recipe["started_from"] = (f"{dep.name} as trained at {training_stamp(self.run_dir(dep))}" if done.is_file()
                                      else f"{dep.name}, not trained yet")
        return recipe

    def started_file(self, cell: Cell) -> Path:
        """The recipe record of a cell's training in progress (beside its run folder, which
        the trainer wants for its own files): a resume with another recipe is refused."""
        run = self.run_dir(cell)
        return run.parent / f"{run.name}.started.json"

    def check_trained_as(self, cell: Cell, recipe: dict, cfg, started: bool = False) -> None:
        """ConfigError unless the finished run of `cell` (or, `started`, the one in
        progress) was trained with this recipe record (runs finished before records were
        portable match their absolute-path hash; before ``started_from`` was recorded,
        the record without it)."""
        run = self.run_dir(cell)
        where = self.started_file(cell) if started else run / "experiment_done.json"
        try:
            done = json.loads(where.read_text())
        except ValueError:
            raise ConfigError(f"{where} is unreadable: delete that run folder or use another --out") from None
        if isinstance(done.get("recipe"), dict) and "started_from" not in done["recipe"]:
            recipe = {k: v for k, v in recipe.items() if k != "started_from"}
        legacy = _hash(dict(_recipe_items(cfg)))
        if done.get("config_hash") in (_hash(recipe), legacy):
            return
        what = differences(done["recipe"], recipe) if isinstance(done.get("recipe"), dict) else "another recipe or dataset"
        raise ConfigError(f"cell {cell.name} was {'begun' if started else 'trained'} with {what} ({run}): delete "
                          "that run folder or use another --out")

    def checked_record(self, cell: Cell, cfg) -> dict:
        """`cell_record`, checked against the run already there: a finished one's
        experiment_done.json, or the record of one in progress (ConfigError on another)."""
        recipe = self.cell_record(cell, cfg)
        state = self.train_state(cell)
        if state == "complete":
            self.check_trained_as(cell, recipe, cfg)
        elif state == "to resume" and self.started_file(cell).is_file():
            self.check_trained_as(cell, recipe, cfg, started=True)
        return recipe

    def train(self, cell: Cell, k: int, n: int) -> None:
        from .train import train as run_training

        run = self.run_dir(cell)
        cfg = self.train_config(cell)
        recipe = self.checked_record(cell, cfg)
        state = self.train_state(cell)
        if state == "complete":
            self.say(f"[train {k}/{n}] {cell.name}: skipped (complete)")
            return
        r = self.exp.recipes[cell.recipe]
        if r.identities is not None:
            from .data import (
                load_imageset,
                named_by_file,
                select_identities,
                write_list,
            )
            iset = named_by_file(load_imageset(Path(cfg.data), cfg.data_format))
            keep = select_identities(iset.identities, r.identities, f"recipes.{r.name}.identities")
            write_list(iset.take([i for i, nm in enumerate(iset.identities) if nm in keep]), run / "identities_list.tsv")
        cfg = dataclasses.replace(cfg, resume=state == "to resume")
        from .evaluation.report import write_json
        if state == "to train" or not self.started_file(cell).is_file():  # (a deleted run's record is stale)
            self.started_file(cell).parent.mkdir(parents=True, exist_ok=True)
            write_json(self.started_file(cell), {"config_hash": _hash(recipe), "recipe": recipe})
        self.say(f"[train {k}/{n}] {cell.name}: {'resuming' if cfg.resume else 'training'} -> {run}")
        t0 = time.perf_counter()
        summary = run_training(cfg, say=lambda m: self.say(f"    {m}"))
        dt = time.perf_counter() - t0
        self._time(f"train/{cell.name}", dt)
        done = {"config_hash": _hash(recipe), "recipe": recipe, "seconds": dt, "steps": summary["steps"], "train_images": summary["train_images"],
                "classes": summary["classes"], "images_per_s": summary["images_per_s"],
                "loss_first": summary["loss_first"], "loss_last": summary["loss_last"],
                "val_end": summary.get("val_end") or {}}
        write_json(run / "experiment_done.json", done)
        self.started_file(cell).unlink(missing_ok=True)  # the done record speaks for the run from here on
        self.say(f"[train {k}/{n}] {cell.name}: {summary['steps']} steps in {dt:.0f} s "
                 f"({summary['images_per_s']:.0f} img/s)")

    def benchmark_dir(self, ev: Evaluation) -> Path:
        return self.out / "benchmarks" / ev.name

    def evaluate(self, cell: Cell, ev: Evaluation, k: int, n: int) -> None:
        from .evaluation.protocols import EvalContext

        state = self.eval_state(cell, ev)
        tag = f"[eval {k}/{n}] {cell.name} x {ev.name}"
        if state != "to evaluate":
            self.say(f"{tag}: {state}")
            return
        self.say(f"{tag}: {ev.protocol}")
        ctx = EvalContext(cache_dir=self.cache_dir, shared_dir=self.benchmark_dir(ev), workers=self.exp.workers,
                          batch_size=ev.batch_size, progress=True, say=self.say)
        t0 = time.perf_counter()
        result = ev.spec.run(self.run_dir(cell), self.eval_dir(cell, ev), ev.options, ctx)
        from .evaluation.report import write_json
        rf = self.eval_dir(cell, ev) / "result.json"
        write_json(rf, {**json.loads(rf.read_text()), "made_from": self.eval_stamp(cell, ev)})
        dt = time.perf_counter() - t0
        self._time(f"eval/{cell.name}/{ev.name}", dt)
        text = "; ".join(f"{c.title}: {c.text}" for c in ev.columns(result))
        self.say(f"{tag}: {text} ({dt:.0f} s)")

    # ---- report
    def _result(self, cell: Cell, ev: Evaluation) -> dict | None:
        """The cell's result of `ev`, if one was made from its current training with the
        current options (an older one, of a deleted or retrained run, counts as none).
        Results written before they recorded this (no ``made_from``) are taken as they are."""
        rf = self.eval_dir(cell, ev) / "result.json"
        if not rf.is_file():
            return None
        try:
            res = json.loads(rf.read_text())
        except ValueError:
            return None
        stamp = self.eval_stamp(cell, ev)
        if stamp is None or not isinstance(res, dict):
            return None
        return res if res.get("made_from", stamp) == stamp else None

    def report(self) -> tuple[Path, Path]:
        """results.md (one row per cell, the evaluations' columns), results.csv and one
        ROC plot per evaluation column."""
        from .evaluation.report import md_table

        cells = self.exp.cells
        evs = list(self.exp.evaluations.values())
        head = ["cell", "dataset", "recipe", "train images", "steps", "train s"]
        head += [col.title for ev in evs for col in ev.columns(None)]
        md_rows, csv_rows = [], []
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
                why, res = ev.missing(), self._result(c, ev)
                crow[f"{ev.name}_status"] = f"skipped: {why}" if why else "not run" if res is None else "ok"
                for col in ev.columns(None if why else res):
                    row.append(f"skipped ({why})" if why else col.text)
                    prefix = f"{ev.name}_{col.key}_" if col.key else f"{ev.name}_"
                    for kk, v in col.values.items():
                        crow[prefix + kk] = "" if v is None else round(v, 5)
            md_rows.append(row)
            csv_rows.append(crow)
        lines = [f"# {self.exp.name}", ""]
        if self.exp.description:
            lines += [self.exp.description.strip(), ""]
        made = (f"Produced with `morphgen experiment run {shlex.quote(str(self.exp.path))} --out "
                f"{shlex.quote(str(self.out))}` ({_provenance()}); a rerun does only what is left.")
        lines += [made, ""]
        lines += [md_table(head, md_rows), ""]
        notes = ["Accuracy: mean ± std over folds, each fold's threshold chosen on the others (LFW protocol) "
                 "unless an evaluation's note below says otherwise; TAR@FAR: mean ± std over splits."]
        for ev in evs:
            first = next((res for res in (self._result(c, ev) for c in cells) if res is not None), None)
            notes.append(ev.spec.note(ev.options, ev.label, first))
        lines += ["Notes:", ""] + [f"- {n_}" for n_ in notes]
        rocs = self._roc_plots()
        if rocs:
            lines += ["", "ROC curves: " + ", ".join(f"[{r_}]({r_})" for r_ in rocs)]
        if self.timings:
            total = sum(v for v in self.timings.values())
            lines += ["", f"Measured stage times (s, this output folder; total {total:.0f}):", "",
                      md_table(["stage", "seconds"], [[k_, f"{v:.0f}"] for k_, v in self.timings.items()])]
        md = self.out / "results.md"
        md.write_text("\n".join(lines) + "\n")
        seen: list[str] = []
        for crow in csv_rows:
            seen += [k_ for k_ in crow if k_ not in seen]
        # grouped by evaluation in the config's order, its status first: the same order
        # whichever cells have results (an --only run's header was another's)
        def owner(key: str) -> str | None:  # the evaluation a column is of (the longest name: syn, syn_light)
            names = [ev.name for ev in evs if key.startswith(f"{ev.name}_")]
            return max(names, key=len) if names else None

        keys = [k_ for k_ in seen if owner(k_) is None] + [
            k_ for ev in evs for k_ in [f"{ev.name}_status"] + [
                x for x in seen if owner(x) == ev.name and x != f"{ev.name}_status"]]
        cf = self.out / "results.csv"
        with open(cf, "w", newline="") as f:
            w = csv.DictWriter(f, keys)
            w.writeheader()
            w.writerows(csv_rows)
        return md, cf

    def _roc_plots(self) -> list[str]:
        """roc_<evaluation>[_<column>].png: every cell's curve of that column."""
        from .evaluation.report import plot_roc

        written = []
        for ev in self.exp.evaluations.values():
            for template in ev.columns(None):
                curves = []
                for c in self.exp.cells:
                    f = self.eval_dir(c, ev) / "roc.csv"
                    res = self._result(c, ev)
                    if not f.is_file() or res is None:
                        continue
                    fpr, tpr, thr = _read_roc_csv(f, template.curve)
                    if len(fpr) == 0:
                        continue
                    col = next(x for x in ev.columns(res) if x.key == template.key)
                    curves.append({"label": f"{c.label} {col.short}", "fpr": fpr, "tpr": tpr, "thresholds": thr})
                if curves:
                    name = f"roc_{ev.name}{'_' + template.key if template.key else ''}.png"
                    plot_roc(self.out / name, curves, f"{self.exp.name}: {template.title}", log_far=False)
                    written.append(name)
        return written


def _read_roc_csv(path: Path, curve: str | None = None):
    """One curve of a report.write_roc_csv file (fpr, tpr, thresholds): the one named
    `curve`, or the first."""
    fpr, tpr, thr, first = [], [], [], curve
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            first = first if first is not None else row["curve"]
            if row["curve"] != first:
                continue
            fpr.append(float(row["fpr"])), tpr.append(float(row["tpr"])), thr.append(float(row["threshold"]))
    return np.array(fpr), np.array(tpr), np.array(thr)


def _provenance() -> str:
    """'morphgen 0.x, commit abc1234' (the commit where the package is a git checkout):
    what a table was made with, for whoever reads it later."""
    import subprocess

    from morphgen import __version__

    text = f"morphgen {__version__}"
    try:
        head = subprocess.run(["git", "-C", str(Path(__file__).resolve().parent), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return text
    return text + (f", commit {head.stdout.strip()}" if head.returncode == 0 and head.stdout.strip() else "")


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
