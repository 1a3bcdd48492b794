"""`morphgen experiment run`: a tiny config (tiny face model, 40 px, 2 datasets x 1 recipe
x 2 evaluations, 3 steps) runs end to end from the CLI, writes the table, CSV and ROC plot
with one row per cell, skips everything on a second run, and refuses bad configs in one line."""
import csv
import hashlib
import json
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from conftest import make_tiny_model
from test_eval_fixtures import write_cfp

try:
    from morphgen.cli.experiment_cmd import experiment
except ImportError:  # a source checkout that is not pip-installed: cli/ is a top-level package
    from cli.experiment_cmd import experiment

TINY = {
    "name": "tiny",
    "workers": 1,
    "dataset_defaults": {"model": "tiny.npz", "size": 40, "per_id": 4, "chunk_ids": 5},
    "recipe_defaults": {"input_size": 40, "template": "arcface", "batch_p": 4, "batch_k": 3, "steps": 3,
                        "workers": 0, "threads": 1, "log_every": 1},
    "datasets": {"full": {"ids": 8, "pose": "syn1m"}, "frontal": {"ids": 8, "pose": "frontal"}},
    "recipes": {"syn": {}},
    "evaluations": {
        "syn": {"protocol": "synthetic", "model": "tiny.npz", "ids": 6, "yaws": "-30:30:30", "lights": 2,
                "size": 40, "folds": 3, "per_fold": 40},
        "lfw": {"protocol": "lfw", "lfw_dir": "no_lfw_here", "pairs": "no_lfw_here/pairs.txt"},
        "cfp": {"protocol": "cfp", "cfp_dir": "cfp", "label": "CFP"},
    },
}


def write_config(folder: Path, cfg: dict, name: str = "exp.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "tiny.npz").is_file():
        make_tiny_model().save_npz(folder / "tiny.npz")
    if not (folder / "cfp").is_dir():
        write_cfp(folder / "cfp")
    path = folder / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def invoke(args):
    return CliRunner().invoke(experiment, ["run", *[str(a) for a in args]], catch_exceptions=False)


def test_tiny_experiment_end_to_end_then_skips(tmp_path):
    cfg = write_config(tmp_path / "cfg", TINY)
    out = tmp_path / "out"
    res = invoke([cfg, "--dry-run", "--out", out])
    assert res.exit_code == 0, res.output
    assert "train full/syn" in res.output and "[to train]" in res.output and not out.exists()

    res = invoke([cfg, "--out", out])
    assert res.exit_code == 0, res.output
    for stage in ("[render 1/2] full", "[train 2/2] frontal/syn", "full/syn x syn", "skipped: lfw_dir"):
        assert stage in res.output, stage
    for name in ("results.md", "results.csv", "roc_syn.png", "timings.json"):
        assert (out / name).is_file(), name
    assert not (out / "roc_lfw.png").exists()
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["cell"] for r in rows] == ["full/syn", "frontal/syn"]
    for r in rows:
        assert r["syn_status"] == "ok" and 0.0 <= float(r["syn_accuracy_mean"]) <= 1.0
        assert r["lfw_status"].startswith("skipped: lfw_dir") and r["steps"] == "3"
        assert r["cfp_status"] == "ok" and 0.0 <= float(r["cfp_FF_accuracy_mean"]) <= 1.0
        assert 0.0 <= float(r["cfp_FP_auc"]) <= 1.0 and float(r["cfp_FP_eer"]) >= 0.0
    md = (out / "results.md").read_text()
    assert md.count("| full / syn |") == 1 and md.count("| frontal / syn |") == 1 and "±" in md
    assert f"Produced with `morphgen experiment run {cfg} --out {out}` (morphgen " in md   # how to make it again
    assert "CFP-FF (accuracy)" in md and "CFP-FP (accuracy)" in md and "Alignment per view: frontal" in md
    assert (out / "roc_cfp_FF.png").is_file() and (out / "roc_cfp_FP.png").is_file()
    for cell in ("full__syn", "frontal__syn"):
        assert (out / "evals" / cell / "syn" / "result.json").is_file()
        assert (out / "evals" / cell / "syn" / "roc.csv").is_file()
    assert (out / "benchmarks" / "syn" / "manifest.json").is_file()   # rendered once, shared by the cells

    t0 = time.perf_counter()
    res = invoke([cfg, "--out", out])
    dt = time.perf_counter() - t0
    assert res.exit_code == 0, res.output
    assert "training" not in res.output and "rendering the syn benchmark" not in res.output
    assert res.output.count("skipped (complete)") == 4 and res.output.count(": complete") == 4
    assert dt < 10, dt
    assert (out / "results.md").read_text().count("| full / syn |") == 1

    # other synthetic-benchmark options: the shared benchmark is rendered anew (it was
    # reused as complete), and both cells are evaluated on it again
    cfg.write_text(cfg.read_text().replace("-30:30:30", "-60:60:30"))
    res = invoke([cfg, "--out", out])
    assert res.exit_code == 0, res.output
    assert "rendering the benchmark once for all cells" in res.output and "(its options changed)" in res.output
    assert res.output.count("skipped (complete)") == 4 and res.output.count("x syn: complete") == 0, res.output
    grid = json.loads((out / "benchmarks" / "syn" / "manifest.json").read_text())["config"]["scene"]["grid"]
    assert "-60" in json.dumps(grid), grid


@pytest.mark.parametrize("edit, match", [
    (lambda c: c.update(colour="red"), "exp.yaml (top level)"),
    (lambda c: c.update(workers=True), "workers must be a positive integer, got True"),  # bool is an int in Python
    (lambda c: c["datasets"]["full"].update(yaw_range=30), "unknown key 'yaw_range' in exp.yaml: datasets.full"),
    (lambda c: c["recipes"]["syn"].update(stepz=3), "unknown key 'stepz' in exp.yaml: recipes.syn"),
    (lambda c: c["evaluations"]["syn"].update(yawz=1), "unknown key 'yawz' in exp.yaml: evaluations.syn"),
    (lambda c: c["recipes"]["syn"].update(loss="softmax"), "recipes.syn: unknown --loss 'softmax'"),
    (lambda c: c["recipes"]["syn"].update(init_from="nope"), "init_from 'nope' is not a recipe"),
    (lambda c: c.update(cells=["full/nope"]), "unknown recipe 'nope'"),
    (lambda c: c["datasets"]["full"].update(ids=0), "datasets.full: --ids must be >= 1"),
    (lambda c: c["evaluations"]["syn"].update(protocol="megaface"), "protocol 'megaface'"),
    (lambda c: c["evaluations"]["cfp"].update(protocols="FX"), "evaluations.cfp.protocols must be FF, FP or both"),
    (lambda c: c["evaluations"]["syn"].update(ids="two"), "evaluations.syn.ids must be a positive integer"),
    (lambda c: c["evaluations"]["cfp"].update(flip="yes"), "evaluations.cfp.flip must be true or false"),
    (lambda c: c["evaluations"].update(b={"protocol": "bin"}), "protocol bin needs bins: PATH"),
    (lambda c: c["evaluations"]["syn"].update(yaws="10:30:10"), "evaluations.syn.yaws 10:30:10 has no yaw 0"),
    (lambda c: c["evaluations"]["syn"].update(yaws="abc"), "evaluations.syn.yaws 'abc': write start:stop:step"),
])
def test_bad_config_is_one_line_error(tmp_path, edit, match):
    import copy
    cfg = copy.deepcopy(TINY)
    edit(cfg)
    res = invoke([write_config(tmp_path, cfg), "--out", tmp_path / "out", "--dry-run"])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and match in lines[0], res.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where, spec, match", [
    ("evaluation", "first:5", "evaluations.people.identities: first:5 but the data has only 3 identities"),
    ("evaluation", "first:1", "evaluations.people.identities: 'first:1' keeps 1 identity"),
    ("evaluation", ["p0", "nosuch"], "evaluations.people.identities: no identity 'nosuch'"),
    ("recipe", "first:5", "recipes.ft.identities: first:5 but the data has only 3 identities"),
])
def test_an_identity_selector_is_checked_against_its_data_up_front(tmp_path, where, spec, match):
    """A selector asking for more identities than a real folder holds passed --dry-run and
    failed at its cell, after every render and earlier cell."""
    import copy

    import numpy as np
    from PIL import Image
    people = tmp_path / "people"
    for k in range(3):
        (people / f"p{k}").mkdir(parents=True)
        for j in range(2):
            Image.fromarray(np.full((8, 8, 3), 40 * k + j, np.uint8)).save(people / f"p{k}" / f"{j}.png")
    cfg = copy.deepcopy(TINY)
    if where == "evaluation":
        cfg["evaluations"]["people"] = {"protocol": "real_pairs", "images": str(people), "identities": spec}
    else:
        cfg["recipes"]["ft"] = {"train_on": "real", "real_data": str(people), "identities": spec, "steps": 2}
    res = invoke([write_config(tmp_path, cfg), "--out", tmp_path / "out", "--dry-run"])
    assert res.exit_code == 2 and match in res.output, res.output
    assert not (tmp_path / "out").exists()


def test_invalid_yaml_names_the_line_column_and_problem(tmp_path):
    (tmp_path / "bad.yaml").write_text("name: x\ndatasets: {syn: {ids: 4\ncells: [\n")
    res = invoke([tmp_path / "bad.yaml", "--out", tmp_path / "out", "--dry-run"])
    assert res.exit_code == 2, res.output
    assert res.output.strip() == (f"Error: experiment config {tmp_path / 'bad.yaml'} is not valid YAML/JSON: line 3, "
                                  "column 6: expected ',' or '}', but got ':' (while parsing a flow mapping at line 2, "
                                  "column 17)")
    assert not (tmp_path / "out").exists()


def test_ctrl_c_says_how_to_continue(tmp_path, monkeypatch):
    import recognition.experiment

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(recognition.experiment, "run_experiment", interrupted)
    res = invoke([write_config(tmp_path / "cfg", TINY), "--out", tmp_path / "out"])
    assert res.exit_code == 130 and "run the same command again" in res.output


SMALL = {**TINY, "datasets": {"full": {"ids": 8, "pose": "syn1m"}},
         "evaluations": {"cfp": {"protocol": "cfp", "cfp_dir": "cfp", "label": "CFP"}}}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path]:
    """(config, output folder) of a finished one-cell experiment, for tests to copy."""
    root = tmp_path_factory.mktemp("finished")
    cfg = write_config(root / "cfg", SMALL)
    res = invoke([cfg, "--out", root / "out"])
    assert res.exit_code == 0, res.output
    return cfg, root / "out"


def copy_of(finished, tmp_path: Path, edit=None) -> tuple[Path, Path]:
    """A copy of the finished experiment's output and its config, the config edited by `edit`."""
    import copy
    import shutil
    cfg = copy.deepcopy(SMALL)
    if edit:
        edit(cfg)
    out = tmp_path / "out"
    shutil.copytree(finished[1], out)
    return write_config(finished[0].parent, cfg, f"{tmp_path.name}.yaml"), out


def test_a_partial_dataset_counts_the_chunks_on_disk(finished, tmp_path):
    """After a kill -9 mid-render the manifest's count is of its last write: the plan said
    "partial (0/150 chunks)" with 53 done."""
    cfg, out = copy_of(finished, tmp_path)
    folder = out / "datasets" / "full"
    man = json.loads((folder / "manifest.json").read_text())
    man["complete"], man["counts"]["chunks_done"] = False, 0
    (folder / "manifest.json").write_text(json.dumps(man))
    max((folder / "params").glob("chunk_*")).unlink()
    res = invoke([cfg, "--out", out, "--dry-run"])
    assert res.exit_code == 0 and "partial (1/2 chunks)" in res.output, res.output


@pytest.mark.parametrize("dry_run", [True, False])
def test_dataset_of_another_config_is_refused(finished, tmp_path, dry_run):
    cfg, out = copy_of(finished, tmp_path, lambda c: c["datasets"]["full"].update(ids=9))
    before = (out / "datasets" / "full" / "manifest.json").read_bytes()
    res = invoke([cfg, "--out", out, *(["--dry-run"] if dry_run else [])])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "datasets/full" in lines[0] and "rendered with another config" in lines[0], res.output
    assert "scene.ids 8, now 9" in lines[0] and "delete that folder" in lines[0]
    assert (out / "datasets" / "full" / "manifest.json").read_bytes() == before


def test_dataset_rendered_before_lod_existed_is_still_this_config(finished, tmp_path):
    """A dataset folder whose manifest predates --lod (no lod key: whole meshes) is the
    same dataset to the experiment as to the writer's resume, not "another config"."""
    import hashlib
    import json
    cfg, out = copy_of(finished, tmp_path)
    path = out / "datasets" / "full" / "manifest.json"
    man = json.loads(path.read_text())
    del man["config"]["scene"]["lod"]
    man["config_hash"] = hashlib.sha256(json.dumps(man["config"], sort_keys=True).encode()).hexdigest()[:16]
    path.write_text(json.dumps(man))
    res = invoke([cfg, "--out", out, "--dry-run"])
    assert res.exit_code == 0 and "[complete]" in res.output, res.output


def test_unreadable_dataset_manifest_says_delete_not_overwrite(finished, tmp_path):
    cfg, out = copy_of(finished, tmp_path)
    (out / "datasets" / "full" / "manifest.json").write_text('{"config_hash": "ab')
    res = invoke([cfg, "--out", out])
    assert res.exit_code == 2, res.output
    assert "unreadable manifest.json: delete that folder" in res.output and "--overwrite" not in res.output


def test_retrained_run_is_evaluated_again(finished, tmp_path):
    import json
    import shutil
    cfg, out = copy_of(finished, tmp_path, lambda c: c["recipe_defaults"].update(steps=4))
    shutil.rmtree(out / "runs" / "full__syn")
    res = invoke([cfg, "--out", out])
    assert res.exit_code == 0, res.output
    assert "full/syn: training" in res.output and "full/syn x cfp: cfp" in res.output, res.output
    assert "full/syn x cfp: complete" not in res.output
    result = json.loads((out / "evals" / "full__syn" / "cfp" / "result.json").read_text())
    done = (out / "runs" / "full__syn" / "experiment_done.json").read_bytes()
    assert result["made_from"]["training"] == hashlib.sha256(done).hexdigest()[:12]


def test_moved_experiment_folder_is_skipped_whole(finished, tmp_path):
    """A copy that does not keep modification times (plain `cp -r`) is still the same
    experiment: nothing is rendered, trained or evaluated again."""
    import shutil
    cfg, out = copy_of(finished, tmp_path)
    shutil.rmtree(out)
    shutil.copytree(finished[1], out, copy_function=shutil.copyfile)  # new modification times
    rf = out / "evals" / "full__syn" / "cfp" / "result.json"  # as written before results recorded made_from
    rf.write_text(json.dumps({k: v for k, v in json.loads(rf.read_text()).items() if k != "made_from"}))
    res = invoke([cfg, "--out", out])
    assert res.exit_code == 0, res.output
    assert res.output.count("skipped (complete)") == 2 and "x cfp: complete" in res.output, res.output


def test_run_of_another_recipe_names_what_changed(finished, tmp_path):
    cfg, out = copy_of(finished, tmp_path, lambda c: c["recipe_defaults"].update(batch_k=2))
    for dry_run in (["--dry-run"], []):
        res = invoke([cfg, "--out", out, *dry_run])
        assert res.exit_code == 2, res.output
        assert "cell full/syn was trained with batch_k 3, now 2" in res.output, res.output


def test_a_run_in_progress_resumes_only_with_its_own_recipe(finished, tmp_path):
    """A cell stopped mid-training and rerun with another recipe resumed into a run of two
    recipes (steps 30 of one, the rest of another), recorded as the new one."""
    cfg, out = copy_of(finished, tmp_path)
    done = out / "runs" / "full__syn" / "experiment_done.json"
    record = json.loads(done.read_text())
    done.unlink()                                   # as a kill after the checkpoint leaves it
    started = out / "runs" / "full__syn.started.json"
    started.write_text(json.dumps({"config_hash": record["config_hash"], "recipe": record["recipe"]}))
    edited, _ = copy_of(finished, tmp_path / "e", lambda c: c["recipe_defaults"].update(steps=5))
    for dry_run in (["--dry-run"], []):
        res = invoke([edited, "--out", out, *dry_run])
        assert res.exit_code == 2 and "cell full/syn was begun with steps 3, now 5" in res.output, res.output
    res = invoke([cfg, "--out", out])                # its own recipe: resumed, and the record goes
    assert res.exit_code == 0 and not started.exists() and done.is_file(), res.output


def test_results_csv_columns_do_not_depend_on_which_cells_ran(tmp_path):
    """An --only run's results.csv had another column order than a full run's: the
    statuses of the cells not run came first, then every evaluation's values."""
    cfg = write_config(tmp_path / "cfg", {**TINY, "evaluations": {k: TINY["evaluations"][k] for k in ("syn", "cfp")}})
    res = invoke([cfg, "--out", tmp_path / "part", "--only", "frontal/syn"])
    assert res.exit_code == 0, res.output
    part = (tmp_path / "part" / "results.csv").read_text().splitlines()[0].split(",")
    assert part.index("syn_status") < part.index("syn_accuracy_mean") < part.index("cfp_status"), part


def test_a_batch_bigger_than_its_dataset_is_refused_before_rendering(tmp_path):
    cfg = {**SMALL, "datasets": {"full": {"ids": 3}}, "recipe_defaults": {**SMALL["recipe_defaults"], "batch_p": 4}}
    res = invoke([write_config(tmp_path / "cfg", cfg), "--out", tmp_path / "out", "--dry-run"])
    assert res.exit_code == 2 and "recipes.syn.batch_p 4 but dataset full renders 3 identities" in res.output, \
        res.output


def test_a_cell_started_from_another_follows_that_cells_training(tmp_path):
    """`init_from`: a fine-tuned cell was kept as complete after the cell it started from
    was deleted and trained again (on another recipe); now it is refused, as a changed
    recipe is."""
    import shutil

    cfg = {**SMALL, "recipes": {"syn": {}, "ft": {"init_from": "syn", "steps": 2}}, "evaluations": {}}
    path = write_config(tmp_path / "cfg", cfg)
    out = tmp_path / "out"
    assert invoke([path, "--out", out]).exit_code == 0
    shutil.rmtree(out / "runs" / "full__syn")
    res = invoke([path, "--out", out, "--dry-run"])
    assert res.exit_code == 2 and "cell full/ft was trained with started_from" in res.output, res.output
    assert "not trained yet" in res.output
    shutil.rmtree(out / "runs" / "full__ft")       # as told: then both train again
    res = invoke([path, "--out", out])
    assert res.exit_code == 0 and "full/ft: training" in res.output, res.output


@pytest.mark.parametrize("entry, file, text, match", [
    ({"protocol": "lfw", "lfw_dir": "cfp", "pairs": "bad.txt"}, "bad.txt", "10\t300\nAaron 1 2\n",
     "evaluations.bad.pairs: "),
    ({"protocol": "pairs", "pairs": "bad.txt", "root": "cfp"}, "bad.txt", "a.png b.png maybe\n",
     "evaluations.bad.pairs: "),
    ({"protocol": "cfp", "cfp_dir": "cfp2"}, "cfp2/Protocol/Pair_list_F.txt", "one two three\n",
     "evaluations.bad.cfp_dir: "),
])
def test_malformed_evaluation_input_is_refused_before_rendering(tmp_path, entry, file, text, match):
    import copy
    import shutil
    cfg = copy.deepcopy(TINY)
    cfg["evaluations"]["bad"] = entry
    path = write_config(tmp_path, cfg)
    shutil.copytree(tmp_path / "cfp", tmp_path / "cfp2")
    (tmp_path / file).write_text(text)
    for dry_run in (["--dry-run"], []):
        res = invoke([path, "--out", tmp_path / "out", *dry_run])
        assert res.exit_code == 2, res.output
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and match in lines[0] and "--" not in lines[0], res.output
        assert not (tmp_path / "out").exists()


def test_online_set_paths_read_from_the_configs_folder(tmp_path, monkeypatch):
    """A recipe's online_set named files from the folder the command ran in, while every
    other path of the config is read from the config's folder."""
    from recognition.experiment_config import load_experiment

    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "pose.yaml").write_text("yaw: uniform(-10, 10)\n")
    (conf / "scene.yaml").write_text("size: 32\nids: 8\n")
    cfg = {"recipes": {"on": {"online": "scene.yaml", "online_set": {"pose": "pose.yaml", "backgrounds": "plain"},
                              "loss": "triplet", "online_unbounded": True, "batch_p": 4, "batch_k": 2, "steps": 1}},
           "cells": [{"dataset": "none", "recipe": "on"}],
           "evaluations": {"syn": {"protocol": "synthetic", "ids": 4, "yaws": "0:0:15", "lights": 1, "size": 32}}}
    path = write_config(conf, cfg)
    monkeypatch.chdir(tmp_path)  # not the config's folder
    recipe = load_experiment(path).recipes["on"]
    assert recipe.train["online_set"] == {"pose": str(conf / "pose.yaml"), "backgrounds": "plain"}
