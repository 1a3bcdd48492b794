"""Every bad input to train, embed, eval, preview, stats, render, model export and
experiment is one `Error:` line with exit code 2: no traceback, and nothing new on disk
(the cases of issue 23 and more, replayed as a table like render's in test_dataset.py).
Also: a refused --resume leaves its run resumable, and unreadable images are a counted,
reported skip (never black crops or a sibling's embedding)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from click.testing import CliRunner

from conftest import make_tiny_model
from morphgen.cli.main import cli
from morphgen.layout import params_rows
from test_eval_fixtures import lfw_pairs_text, write_lfw

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = ["--threads", "1", "--workers", "0", "--quiet"]
TRAIN = ["--arch", "nn4small2", "--input-size", "32", "--batch-p", "3", "--batch-k", "2", "--steps", "2", *FAST]


def run_cli(args) -> object:
    args = [str(a) for a in args]
    if args[0] in ("embed", "eval"):  # no progress bars in the output
        args.insert(2 if args[0] == "eval" else 1, "--quiet")
    return CliRunner().invoke(cli, args)


def snapshot(*roots: Path) -> dict:
    """Every path under `roots`, with the size and modification time of files (a folder's
    own time changes when a command's leftovers are removed again, which is allowed)."""
    out = {}
    for root in roots:
        for p in [root, *root.rglob("*")]:
            out[str(p)] = None if p.is_dir() else (p.stat().st_size, p.stat().st_mtime_ns)
    return out


def assert_refused(args, match: str, *watched: Path):
    """Exit 2, one `Error:` line holding `match`, no traceback, `watched` untouched."""
    before = snapshot(*watched)
    r = run_cli(args)
    assert r.exit_code == 2, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in r.output, r.output
    assert match in lines[0], lines[0]
    after = snapshot(*watched)
    assert after == before, f"the refused command changed files: {sorted(set(after.items()) ^ set(before.items()))}"


def write_yaml(path: Path, data: dict) -> str:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


@pytest.fixture(scope="module")
def P(tmp_path_factory) -> SimpleNamespace:
    """Inputs shared by the cases: a tiny model, a 6 x 4 dataset and a 2-step run on it,
    broken checkpoints, odd folders, YAML files with wrong types, an LFW fixture."""
    d = tmp_path_factory.mktemp("inputs")
    model = d / "tiny.npz"
    make_tiny_model(20, 24).save_npz(model)
    render = ["render", "--model", model, "--ids", 6, "--per-id", 4, "--size", 48, "--antialias", 1, "--workers", 1,
              "--quiet"]
    for name, seed in (("ds", 0), ("ds2", 9)):
        r = run_cli([*render, "--seed", seed, "--out", d / name])
        assert r.exit_code == 0, r.output
    r = run_cli([*render, "--ids", 1, "--out", d / "oneid"])
    assert r.exit_code == 0, r.output
    r = run_cli(["train", "--data", d / "ds", "--out", d / "run", *TRAIN])
    assert r.exit_code == 0, r.output
    r = run_cli(["eval", "pose", "--model", d / "run", "--images", d / "ds", "--out", d / "pose", "--quiet",
                 "--workers", 1])
    assert r.exit_code == 0, r.output
    ckpt = torch.load(d / "run" / "checkpoint.pt", weights_only=True)
    (d / "empty.pt").write_bytes(b"")
    (d / "garbage.pt").write_bytes(b"\x00not a checkpoint" * 10)
    torch.save({"format": "morphgen-recognition/1"}, d / "nokeys.pt")
    torch.save({**ckpt, "input_size": -8}, d / "badsize.pt")
    torch.save({**ckpt, "arch": "resnet9000"}, d / "badarch.pt")
    torch.save({**ckpt, "model": {"stem.conv.weight": torch.zeros(1)}}, d / "badweights.pt")
    (d / "afile.txt").write_text("not a folder\n")
    (d / "emptydir").mkdir()
    for k in range(3):  # one image per identity; text files in identity folders
        (d / "single" / f"p{k}").mkdir(parents=True)
        shutil.copy(d / "ds" / "images" / "000000" / "000000_0000.png", d / "single" / f"p{k}" / "a.png")
        (d / "notimages" / f"p{k}").mkdir(parents=True)
        for n in range(3):
            (d / "notimages" / f"p{k}" / f"{n}.txt").write_text("hello")
    shutil.copytree(d / "ds", d / "allbad")
    for png in (d / "allbad" / "images").rglob("*.png"):
        png.write_bytes(b"garbage")
    write_lfw(d / "lfw")
    (d / "lfw_pairs.txt").write_text(lfw_pairs_text())
    (d / "badbg").mkdir()
    for k in range(3):
        (d / "badbg" / f"{k}.png").write_bytes(b"not a png")
    (d / "noparams" / "params").mkdir(parents=True)
    (d / "noparams" / "params" / "chunk_000000.jsonl").write_text('{"identity": 0}\n')
    # damaged copies of ds's params (a CLI audit's cases): not UTF-8, empty, a yaw that is text, a ragged light
    rows = [row for _, row in params_rows(d / "ds")]
    for name, damage in (("binparams", lambda f: f.write_bytes(bytes(range(128, 256)) * 3)),
                         ("emptyparams", lambda f: f.write_text("")),
                         ("yawtext", lambda f: f.write_text(json.dumps(rows[0] | {"yaw": "abc"}) + "\n")),
                         ("yawhuge", lambda f: f.write_text(json.dumps(rows[0] | {"yaw": 10**400}) + "\n")),
                         ("shragged", lambda f: f.write_text(json.dumps(rows[0] | {"sh": [[1, 2, 3], [4]]}) + "\n"))):
        shutil.copytree(d / "ds", d / name)
        for f in (d / name / "params").iterdir():
            f.unlink()
        damage(d / name / "params" / "chunk_000000.jsonl")
    (d / "binlist.tsv").write_bytes(bytes(range(128, 256)))
    for name, edit in (("coeffs240", {"shape": [0.1] * 240}), ("scale0", {"scale": 0}), ("scalehuge", {"scale": 1e6}),
                       ("translationfar", {"translation": [1e9, 0]}), ("bgseedneg", {"background_seed": -1}),
                       ("bgseednan", {"background_seed": float("nan")}), ("yawnan", {"yaw": float("nan")}),
                       ("identityhalf", {"identity": 1.5}), ("yawpastfloat", {"yaw": 10**400})):
        (d / f"{name}.jsonl").write_text(json.dumps(rows[0] | edit) + "\n")
    synth = ["eval", "synthetic", "--model", d / "run", "--face-model", model, "--ids", 2, "--size", 32, "--lights", 1,
             "--yaws", "0:30:30", "--folds", 2]
    r = run_cli([*synth, "--data", d / "bench", "--out", d / "bench_eval"])
    assert r.exit_code == 0, r.output
    shutil.copytree(d / "bench", d / "bench_noparams")
    shutil.rmtree(d / "bench_noparams" / "params")
    shutil.copytree(d / "bench", d / "bench_badmanifest")
    (d / "bench_badmanifest" / "manifest.json").write_text('{"complete": tr')
    (d / "foreignfit").mkdir()
    write_yaml(d / "device_tpu.yaml", {"device": "tpu"})
    (d / "posedir").mkdir()
    (d / "foreignfit" / "residuals.csv").write_text("x\n")
    ys = {
        "ids_two": {"ids": "two"}, "size_list": {"size": [32]}, "expr_maybe": {"expressions": "maybe"},
        "seed_neg": {"seed": -1}, "fraction_text": {"mixup_fraction": "lots"}, "per_id_float": {"per_id": 1.5},
        "steps_ten": {"steps": "ten"}, "lr_text": {"lr": "fast"}, "batch_p_float": {"batch_p": 2.5},
        "aug_flip_2": {"aug_flip": 2}, "template_foo": {"template": "foo"}, "data_format_zip": {"data_format": "zip"},
        "momentum_2": {"momentum": 2}, "extra_list": {"extra": [1]},
        "online_ids_two": {"model": str(model), "ids": "two"}, "online_unknown": {"model": str(model), "idz": 3},
    }
    for name, data in ys.items():
        write_yaml(d / f"{name}.yaml", data)
    base = {"name": "bad", "workers": 1,
            "dataset_defaults": {"model": "tiny.npz", "size": 32, "per_id": 2, "antialias": 1},
            "recipe_defaults": {"input_size": 32, "batch_p": 2, "batch_k": 2, "steps": 1, "workers": 0,
                                "threads": 1},
            "datasets": {"d": {"ids": 3}}, "recipes": {"syn": {}}}
    exps = {
        "exp_steps": {"recipes": {"syn": {"steps": "ten"}}},
        "exp_lr": {"recipes": {"syn": {"lr": -1}}},
        "exp_expr": {"datasets": {"d": {"ids": 3, "expressions": "maybe"}}},
        "exp_real": {"recipes": {"syn": {}, "ft": {"train_on": "real", "real_data": "no_such_folder"}}},
        "exp_online": {"datasets": {}, "cells": [{"dataset": "none", "recipe": "on"}],
                       "recipes": {"on": {"online": "online_ids_two.yaml", "train_on": "online"}}},
        "exp_ok": {},
    }
    for name, edit in exps.items():
        write_yaml(d / f"{name}.yaml", {**base, **edit})
    return SimpleNamespace(**{p.stem if p.is_file() else p.name: p for p in d.iterdir()}, dir=d)


def fill(template: list, P: SimpleNamespace, out: Path) -> list[str]:
    return [str(a).format(**vars(P), out=out) for a in template]


# (case, command, the expected words of the error). {out} is a fresh folder per case;
# "issue" marks the cases listed in issue 23, the others were added with it.
CASES = [
    # ---- embed
    ("embed-empty-checkpoint", "issue", ["embed", "--model", "{empty}", "--images", "{ds}", "--out", "{out}/e.npz"],
     "not a readable morphgen checkpoint"),
    ("embed-checkpoint-without-keys", "issue", ["embed", "--model", "{nokeys}", "--images", "{ds}",
                                                "--out", "{out}/e.npz"], "incomplete morphgen checkpoint"),
    ("embed-out-under-a-file", "issue", ["embed", "--model", "{run}", "--images", "{ds}", "--out", "{afile}/e.npz"],
     "is a file, not a folder"),
    ("embed-images-is-a-file", "issue", ["embed", "--model", "{run}", "--images", "{afile}", "--out", "{out}/e.npz"],
     "--images"),
    ("embed-garbage-checkpoint", "new", ["embed", "--model", "{garbage}", "--images", "{ds}", "--out", "{out}/e.npz"],
     "not a readable morphgen checkpoint"),
    ("embed-negative-input-size", "new", ["embed", "--model", "{badsize}", "--images", "{ds}", "--out", "{out}/e.npz"],
     "input size -8"),
    ("embed-unknown-arch", "new", ["embed", "--model", "{badarch}", "--images", "{ds}", "--out", "{out}/e.npz"],
     "unknown architecture"),
    ("embed-weights-do-not-fit", "new", ["embed", "--model", "{badweights}", "--images", "{ds}",
                                         "--out", "{out}/e.npz"], "does not fit"),
    ("embed-all-unreadable", "new", ["embed", "--model", "{run}", "--images", "{allbad}", "--out", "{out}/e.npz"],
     "no usable image"),
    ("embed-out-not-npz", "new", ["embed", "--model", "{run}", "--images", "{ds}", "--out", "{out}/e.txt"], ".npz"),
    ("embed-batch-size-0", "new", ["embed", "--model", "{run}", "--images", "{ds}", "--out", "{out}/e.npz",
                                   "--batch-size", "0"], "--batch-size must be >= 1"),
    ("embed-unknown-device", "new", ["embed", "--model", "{run}", "--images", "{ds}", "--out", "{out}/e.npz",
                                     "--device", "tpu"], "unknown --device"),
    # ---- train
    ("train-init-empty-checkpoint", "issue", ["train", "--data", "{ds}", "--init", "{empty}", "--out", "{out}/r", *TRAIN],
     "not a readable morphgen checkpoint"),
    ("train-init-without-keys", "issue", ["train", "--data", "{ds}", "--init", "{nokeys}", "--out", "{out}/r", *TRAIN],
     "incomplete morphgen checkpoint"),
    ("train-out-under-a-file", "issue", ["train", "--data", "{ds}", "--out", "{afile}/r", *TRAIN], "is a file"),
    ("train-steps-ten-yaml", "issue", ["train", "--data", "{ds}", "--config", "{steps_ten}", "--out", "{out}/r",
                                       *FAST], "--steps must be an integer"),
    ("train-negative-lr", "issue", ["train", "--data", "{ds}", "--lr", "-1", "--out", "{out}/r", *TRAIN],
     "--lr must be > 0"),
    ("train-negative-weight-decay", "issue", ["train", "--data", "{ds}", "--weight-decay", "-1", "--out", "{out}/r",
                                              *TRAIN], "--weight-decay must be >= 0"),
    ("train-input-size-negative", "issue", ["train", "--data", "{ds}", "--out", "{out}/r", *TRAIN, "--input-size", "-8"],
     "--input-size"),
    ("train-input-size-0", "issue", ["train", "--data", "{ds}", "--out", "{out}/r", *TRAIN, "--input-size", "0"],
     "--input-size"),
    ("train-input-size-4", "issue", ["train", "--data", "{ds}", "--out", "{out}/r", *TRAIN, "--input-size", "4"],
     "--input-size"),
    ("train-negative-margin", "issue", ["train", "--data", "{ds}", "--margin", "-3", "--out", "{out}/r", *TRAIN],
     "--margin"),
    ("train-batch-p-beyond-data", "issue", ["train", "--data", "{ds}", "--out", "{out}/r", *TRAIN, "--batch-p", "10"],
     "--batch-p 10 but the training data has 6 identities"),
    ("train-empty-data", "issue", ["train", "--data", "{emptydir}", "--out", "{out}/r", *TRAIN], "no usable images"),
    ("train-missing-data", "issue", ["train", "--data", "{dir}/nope", "--out", "{out}/r", *TRAIN], "does not exist"),
    ("train-data-is-a-file", "issue", ["train", "--data", "{afile}", "--out", "{out}/r", *TRAIN], "is a file"),
    ("train-one-image-per-identity", "issue", ["train", "--data", "{single}", "--no-align", "--out", "{out}/r", *TRAIN],
     "no identity with 2"),
    ("train-not-images", "issue", ["train", "--data", "{notimages}", "--out", "{out}/r", *TRAIN], "no usable images"),
    ("train-val-ids-too-many", "issue", ["train", "--data", "{ds}", "--val-ids", "6", "--out", "{out}/r", *TRAIN],
     "--val-ids 6"),
    ("train-bad-freeze", "issue", ["train", "--data", "{ds}", "--freeze", "nope", "--out", "{out}/r", *TRAIN],
     "--freeze nope"),
    ("train-missing-list", "issue", ["train", "--data", "{ds}", "--list", "{dir}/nope.tsv", "--out", "{out}/r", *TRAIN],
     "list file"),
    ("train-missing-online-file", "issue", ["train", "--online", "{dir}/nope.yaml", "--out", "{out}/r", *TRAIN],
     "--online"),
    ("train-online-ids-two", "issue", ["train", "--online", "{online_ids_two}", "--out", "{out}/r", *TRAIN],
     "--ids must be an integer"),
    ("train-online-unknown-key", "new", ["train", "--online", "{online_unknown}", "--out", "{out}/r", *TRAIN],
     "--online"),
    ("train-init-garbage", "new", ["train", "--data", "{ds}", "--init", "{garbage}", "--out", "{out}/r", *TRAIN],
     "not a readable"),
    ("train-lr-text-yaml", "new", ["train", "--data", "{ds}", "--config", "{lr_text}", "--out", "{out}/r", *TRAIN],
     "--lr must be a number"),
    ("train-batch-p-float-yaml", "new", ["train", "--data", "{ds}", "--config", "{batch_p_float}", "--out", "{out}/r",
                                         *FAST, "--steps", "2"], "--batch-p must be an integer"),
    ("train-aug-probability-2", "new", ["train", "--data", "{ds}", "--config", "{aug_flip_2}", "--out", "{out}/r",
                                        *TRAIN], "aug_flip must be between 0 and 1"),
    ("train-unknown-template", "new", ["train", "--data", "{ds}", "--config", "{template_foo}", "--out", "{out}/r",
                                       *TRAIN], "unknown --template"),
    ("train-unknown-data-format", "new", ["train", "--data", "{ds}", "--config", "{data_format_zip}", "--out", "{out}/r",
                                          *TRAIN], "unknown --data-format"),
    ("train-momentum-2", "new", ["train", "--data", "{ds}", "--config", "{momentum_2}", "--out", "{out}/r", *TRAIN],
     "momentum must be"),
    ("train-extra-not-a-mapping", "new", ["train", "--data", "{ds}", "--config", "{extra_list}", "--out", "{out}/r",
                                          *TRAIN], "extra must be a mapping"),
    ("train-epochs-0", "new", ["train", "--data", "{ds}", "--epochs", "0", "--out", "{out}/r", *FAST],
     "--epochs must be > 0"),
    ("train-steps-0", "new", ["train", "--data", "{ds}", "--out", "{out}/r", *TRAIN, "--steps", "0"],
     "--steps must be >= 1"),
    ("train-unknown-device", "new", ["train", "--data", "{ds}", "--device", "tpu", "--out", "{out}/r", *TRAIN],
     "unknown --device"),
    ("train-cache-is-a-file", "new", ["train", "--data", "{ds}", "--cache", "{afile}", "--out", "{out}/r", *TRAIN],
     "--cache"),
    ("train-batch-size-beyond-data", "new", ["train", "--data", "{ds}", "--loss", "arcface", "--batch-size", "500",
                                             "--out", "{out}/r", *TRAIN], "--batch-size 500"),
    ("train-missing-real-data", "new", ["train", "--data", "{ds}", "--real-data", "{dir}/nope", "--out", "{out}/r",
                                        *TRAIN], "does not exist"),
    ("train-all-images-unreadable", "new", ["train", "--data", "{allbad}", "--out", "{out}/r", *TRAIN],
     "no identity with 2+ usable images"),
    # ---- preview
    ("preview-txt-out", "issue", ["preview", "--model", "{tiny}", "--out", "{out}/sheet.txt", "--rows", "1", "--cols",
                                  "1", "--size", "32"], "end the name in .png"),
    ("preview-out-under-a-file", "issue", ["preview", "--model", "{tiny}", "--out", "{afile}/s.png"], "is a file"),
    ("preview-size-list-yaml", "new", ["preview", "--model", "{tiny}", "--config", "{size_list}", "--out",
                                       "{out}/s.png"], "--size must be an integer"),
    ("preview-negative-seed", "new", ["preview", "--model", "{tiny}", "--seed", "-1", "--out", "{out}/s.png"],
     "--seed must be >= 0"),
    # ---- render
    ("render-out-under-a-file", "issue", ["render", "--model", "{tiny}", "--ids", "1", "--per-id", "1",
                                          "--out", "{afile}/o"], "is a file"),
    ("render-ids-two-yaml", "issue", ["render", "--model", "{tiny}", "--config", "{ids_two}", "--out", "{out}/o"],
     "--ids must be an integer"),
    ("render-size-list-yaml", "issue", ["render", "--model", "{tiny}", "--config", "{size_list}", "--out", "{out}/o"],
     "--size must be an integer"),
    ("render-expressions-maybe-yaml", "issue", ["render", "--model", "{tiny}", "--config", "{expr_maybe}",
                                                "--out", "{out}/o"], "--expressions must be true or false"),
    ("render-huge-grid", "issue", ["render", "--model", "{tiny}", "--ids", "1", "--grid", "yaw=-90:90:0.0001",
                                   "--out", "{out}/o"], "1,800,001 images per identity"),
    ("render-negative-energy", "issue", ["render", "--model", "{tiny}", "--ids", "1", "--per-id", "1", "--energy", "-5",
                                         "--out", "{out}/o"], "energy"),
    ("render-corrupt-backgrounds", "issue", ["render", "--model", "{tiny}", "--ids", "1", "--per-id", "1",
                                             "--backgrounds", "{badbg}", "--out", "{out}/o"], "no readable image"),
    ("render-negative-seed-yaml", "new", ["render", "--model", "{tiny}", "--config", "{seed_neg}", "--out", "{out}/o"],
     "--seed must be >= 0"),
    ("render-fraction-text-yaml", "new", ["render", "--model", "{tiny}", "--config", "{fraction_text}",
                                          "--out", "{out}/o"], "--mixup-fraction must be a number"),
    ("render-per-id-float-yaml", "new", ["render", "--model", "{tiny}", "--config", "{per_id_float}",
                                         "--out", "{out}/o"], "--per-id must be an integer"),
    ("render-workers-0", "new", ["render", "--model", "{tiny}", "--ids", "1", "--per-id", "1", "--workers", "0",
                                 "--out", "{out}/o"], "--workers must be >= 1"),
    # ---- stats
    ("stats-out-under-a-file", "issue", ["stats", "{ds}", "--out", "{afile}/s.png"], "is a file"),
    ("stats-txt-out", "new", ["stats", "{ds}", "--out", "{out}/s.txt"], "end the name in .png"),
    ("stats-params-row-without-fields", "new", ["stats", "{noparams}", "--out", "{out}/s.png"],
     "is not a morphgen params row"),
    # ---- eval
    ("eval-lfw-empty-checkpoint", "issue", ["eval", "lfw", "--model", "{empty}", "--lfw-dir", "{lfw}",
                                            "--pairs", "{lfw_pairs}", "--out", "{out}/e"], "not a readable"),
    ("eval-out-under-a-file", "issue", ["eval", "lfw", "--model", "{run}", "--lfw-dir", "{lfw}", "--pairs",
                                        "{lfw_pairs}", "--out", "{afile}/e"], "is a file"),
    ("eval-synthetic-yaws-without-0", "issue", ["eval", "synthetic", "--model", "{run}", "--face-model", "{tiny}",
                                                "--yaws", "10:40:30", "--ids", "2", "--size", "32", "--out", "{out}/e"],
     "no yaw 0"),
    ("eval-pose-missing-poses", "issue", ["eval", "pose", "--model", "{run}", "--images", "{ds}", "--poses",
                                          "{dir}/missing.csv", "--out", "{out}/e"], "missing.csv"),
    ("eval-pose-pairs-of-another-render", "issue", ["eval", "pose", "--model", "{run}", "--images", "{ds2}", "--pairs",
                                                    "{pose}/pairs.txt", "--out", "{out}/e", "--workers", "1"],
     "drawn for other images"),
    ("eval-pose-checkpoint-without-keys", "new", ["eval", "pose", "--model", "{nokeys}", "--images", "{ds}",
                                                  "--out", "{out}/e"], "incomplete morphgen checkpoint"),
    ("eval-pose-yaw-step-0", "new", ["eval", "pose", "--model", "{run}", "--images", "{ds}", "--yaw-step", "0",
                                     "--out", "{out}/e"], "--yaw-step"),
    # ---- experiment
    ("experiment-out-under-a-file", "issue", ["experiment", "run", "{exp_ok}", "--out", "{afile}/x"], "is a file"),
    ("experiment-recipe-steps-ten", "issue", ["experiment", "run", "{exp_steps}", "--out", "{out}/x"],
     "--steps must be an integer"),
    ("experiment-online-ids-two", "issue", ["experiment", "run", "{exp_online}", "--out", "{out}/x"],
     "--ids must be an integer"),
    ("experiment-missing-real-data", "issue", ["experiment", "run", "{exp_real}", "--out", "{out}/x"],
     "real_data"),
    ("experiment-negative-lr", "new", ["experiment", "run", "{exp_lr}", "--out", "{out}/x"], "--lr must be > 0"),
    ("experiment-expressions-maybe", "new", ["experiment", "run", "{exp_expr}", "--out", "{out}/x"],
     "--expressions must be true or false"),
    # ---- damaged datasets and list files, --from-params records the scene cannot take, fit (a CLI audit's cases)
    ("stats-params-not-utf8", "new", ["stats", "{binparams}", "--out", "{out}/s.png"], "is not a morphgen params row"),
    ("stats-params-empty", "new", ["stats", "{emptyparams}", "--out", "{out}/s.png"], "hold no rows"),
    ("stats-yaw-text", "new", ["stats", "{yawtext}", "--out", "{out}/s.png"], "yaw is not a finite number"),
    ("stats-sh-ragged", "new", ["stats", "{shragged}", "--out", "{out}/s.png"], "sh is not a 9 x 3 list"),
    ("stats-yaw-past-float", "new", ["stats", "{yawhuge}", "--out", "{out}/s.png"], "yaw is not a finite number"),
    ("train-params-not-utf8", "new", ["train", "--data", "{binparams}", "--out", "{out}/r", *TRAIN],
     "is not a morphgen params row"),
    ("train-list-not-text", "new", ["train", "--data", "{ds}", "--list", "{binlist}", "--out", "{out}/r", *TRAIN],
     "is not text"),
    ("render-from-params-too-many-coefficients", "new", ["render", "--model", "{tiny}", "--from-params", "{coeffs240}",
                                                         "--out", "{out}/o", "--quiet"], "240 shape coefficients"),
    ("render-from-params-scale-0", "new", ["render", "--model", "{tiny}", "--from-params", "{scale0}", "--out",
                                           "{out}/o", "--quiet"], "'scale' must be in [0.05, 10]"),
    ("render-from-params-scale-huge", "new", ["render", "--model", "{tiny}", "--from-params", "{scalehuge}", "--out",
                                              "{out}/o", "--quiet"], "'scale' must be in [0.05, 10]"),
    ("render-from-params-translation-far", "new", ["render", "--model", "{tiny}", "--from-params", "{translationfar}",
                                                   "--out", "{out}/o", "--quiet"], "'translation' must lie in [-0.5, 0.5]"),
    ("preview-grid-step-nan", "new", ["preview", "--model", "{tiny}", "--grid", "yaw=-90:90:nan", "--out", "{out}/p.png"],
     "grid step must be a finite number > 0"),
    ("render-from-params-background-seed-negative", "new", ["render", "--model", "{tiny}", "--from-params",
                                                            "{bgseedneg}", "--out", "{out}/o", "--quiet"],
     "'background_seed' must be a whole number >= 0"),
    ("render-from-params-background-seed-nan", "new", ["render", "--model", "{tiny}", "--from-params", "{bgseednan}",
                                                       "--out", "{out}/o", "--quiet"], "'background_seed' must be"),
    ("render-from-params-yaw-nan", "new", ["render", "--model", "{tiny}", "--from-params", "{yawnan}", "--out",
                                           "{out}/o", "--quiet"], "'yaw' must be a number, got nan"),
    ("render-from-params-yaw-past-float", "new", ["render", "--model", "{tiny}", "--from-params", "{yawpastfloat}",
                                                  "--out", "{out}/o", "--quiet"], "'yaw' must be a number, got 100"),
    ("render-from-params-identity-not-whole", "new", ["render", "--model", "{tiny}", "--from-params", "{identityhalf}",
                                                      "--out", "{out}/o", "--quiet"], "'identity' must be a whole number"),
    ("fit-device-tpu", "new", ["fit", "{ds}/images/000000/000000_0000.png", "--device", "tpu", "--out", "{out}/f"],
     "unknown --device"),
    ("fit-resume-foreign-residuals", "new", ["fit", "{ds}/images/000000", "--resume", "--out", "{foreignfit}"],
     "is not the residuals.csv of a morphgen fit"),
    ("eval-synthetic-data-without-params", "new", ["eval", "synthetic", "--model", "{run}", "--face-model", "{tiny}",
                                                   "--data", "{bench_noparams}", "--out", "{out}/e"], "holds no params"),
    ("eval-synthetic-data-manifest-corrupt", "new", ["eval", "synthetic", "--model", "{run}", "--face-model", "{tiny}",
                                                     "--data", "{bench_badmanifest}", "--out", "{out}/e"], "is corrupt"),
    ("fit-every-photo-unreadable", "new", ["fit", "{allbad}/images", "--fine-steps", "0", "--quiet", "--out", "{out}/f"],
     "no photo of"),
    ("eval-synthetic-data-a-foreign-folder", "new", ["eval", "synthetic", "--model", "{run}", "--face-model", "{tiny}",
                                                     "--data", "{notimages}", "--out", "{out}/e"], "holds no morphgen render"),
    ("render-device-tpu-yaml", "new", ["render", "--model", "{tiny}", "--config", "{device_tpu}", "--out", "{out}/o"],
     "unknown --device 'tpu'"),
    ("render-background-colour-300", "new", ["render", "--model", "{tiny}", "--backgrounds", "color:300,0,0",
                                             "--out", "{out}/o"], "is not a colour"),
    ("render-pose-file-a-folder", "new", ["render", "--model", "{tiny}", "--pose", "{posedir}", "--out", "{out}/o"],
     "is a folder"),
    ("train-one-identity", "new", ["train", "--data", "{oneid}", "--out", "{out}/r", *TRAIN], "at least 2 identities"),
    ("train-one-identity-arcface", "new", ["train", "--data", "{oneid}", "--out", "{out}/r", *FAST, "--arch",
                                           "nn4small2", "--input-size", "32", "--loss", "arcface", "--batch-size",
                                           "2", "--steps", "2"], "training needs at least 2 identities"),
    ("train-val-ids-1", "new", ["train", "--data", "{ds}", "--val-ids", "1", "--out", "{out}/r", *TRAIN],
     "--val-ids 1 holds out one identity"),
    ("train-eval-every-without-val", "new", ["train", "--data", "{ds}", "--eval-every", "2", "--out", "{out}/r",
                                             *TRAIN], "--eval-every verifies on held-out identities"),
    ("train-scale-with-triplet", "new", ["train", "--data", "{ds}", "--scale", "30", "--out", "{out}/r", *TRAIN],
     "--scale sets the ArcFace/CosFace head"),
    ("train-batch-size-with-pk", "new", ["train", "--data", "{ds}", "--batch-size", "5", "--out", "{out}/r", *TRAIN],
     "--batch-size sizes random batches"),
    ("train-backbone-lr-0-triplet", "new", ["train", "--data", "{ds}", "--backbone-lr-mult", "0", "--out", "{out}/r",
                                            *TRAIN], "leaves nothing to train"),
    ("train-warmup-beyond-steps", "new", ["train", "--data", "{ds}", "--warmup-steps", "100", "--out", "{out}/r",
                                          *TRAIN], "--warmup-steps 100 is longer than the run's 2 steps"),
    ("train-real-format-without-real-data", "new", ["train", "--data", "{ds}", "--real-format", "recordio", "--out",
                                                    "{out}/r", *TRAIN], "--real-format reads --real-data"),
    ("train-online-with-subset", "new", ["train", "--online", "default", "--subset-ids", "3", "--out", "{out}/r",
                                         *TRAIN], "--subset-ids selects images of --data"),
    ("train-freeze-past-the-blocks", "new", ["train", "--data", "{ds}", "--out", "{out}/r", *TRAIN, "--freeze", "99"],
     "the backbone has 9 blocks"),
    ("train-triplet-whole-backbone-frozen", "new", ["train", "--data", "{ds}", "--out", "{out}/r", *TRAIN, "--freeze",
                                                    "9"], "nothing would train"),
    ("train-triplet-one-identity-a-batch", "new", ["train", "--data", "{ds}", "--out", "{out}/r", *TRAIN[:4],
                                                   "--batch-p", "1", *TRAIN[6:]], "--batch-p of 2 or more"),
    # ---- model export
    ("export-out-under-a-file", "issue", ["model", "export", "{tiny}", "--out", "{afile}/f.ply"], "is a file"),
    ("export-negative-identity", "issue", ["model", "export", "{tiny}", "--identity", "-5", "--out", "{out}/f.ply"],
     "got -5"),
]


@pytest.mark.parametrize("args, match", [pytest.param(a, m, id=c) for c, _, a, m in CASES])
def test_bad_input_is_one_line_and_writes_nothing(P, tmp_path, args, match):
    assert_refused(fill(args, P, tmp_path), match, tmp_path, P.dir)


def test_case_count():
    """At least 20 cases beyond the issue's list, and every command covered."""
    assert sum(kind == "new" for _, kind, _, _ in CASES) >= 20
    assert {c.split("-")[0] for c, *_ in CASES} >= {"embed", "train", "preview", "render", "stats", "eval",
                                                    "experiment", "export"}


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc (a folder that takes no new files)")
@pytest.mark.parametrize("args", [
    ["render", "--model", "{tiny}", "--ids", "1", "--per-id", "1", "--quiet", "--out", "/proc/morphgen/o"],
    ["stats", "{ds}", "--out", "/proc/morphgen/s.png"],
    ["preview", "--model", "{tiny}", "--out", "/proc/morphgen/p.png"],
    ["train", "--data", "{ds}", "--out", "/proc/morphgen/r", *TRAIN],
], ids=["render", "stats", "preview", "train"])
def test_an_out_where_nothing_can_be_made_is_refused_up_front(P, tmp_path, args):
    """/proc (and read-only file systems) refuse new files even to root, whom os.access
    lets through: the folder is tried, not only its permission bits."""
    assert_refused(fill(args, P, tmp_path), "cannot be written", tmp_path, P.dir)


@pytest.mark.parametrize("extra, match", [
    (["--arch", "iresnet18"], "--arch nn4small2"),                  # issue: then the plain --resume was refused
    (["--input-size", "40"], "--input-size 32"),
    (["--steps", "1"], "has trained 2 steps"),                      # issue: "resuming at step 25 of 5"
])
def test_refused_resume_leaves_the_run_resumable(P, tmp_path, extra, match):
    run = tmp_path / "run"
    shutil.copytree(P.run, run)
    assert_refused(["train", "--out", run, "--resume", *FAST, *extra], match, tmp_path, P.dir)
    r = run_cli(["train", "--out", run, "--resume", *FAST, "--steps", 3])
    assert r.exit_code == 0, r.output
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 3


def test_resume_on_other_images_with_the_same_identity_names_is_refused(P, tmp_path):
    """Every render names its identities 000000, 000001, ...: a re-rendered (or another)
    dataset passed the identity check and the run went on training on it, silently."""
    run = tmp_path / "run"
    shutil.copytree(P.run, run)
    assert_refused(["train", "--out", run, "--resume", "--data", P.dir / "ds2", *FAST, "--steps", 3],
                   "other images than", tmp_path, P.dir)
    r = run_cli(["train", "--out", run, "--resume", *FAST, "--steps", 3])
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("checkpoint, match", [("empty", "not a readable"), ("nokeys", "incomplete"),
                                               ("cut", "a truncated or damaged PyTorch file")])
def test_resume_from_a_broken_checkpoint(P, tmp_path, checkpoint, match):
    run = tmp_path / "run"
    shutil.copytree(P.run, run)
    if checkpoint == "cut":  # its first 5,000 bytes (torch said only "Invalid argument")
        (run / "checkpoint.pt").write_bytes((P.run / "checkpoint.pt").read_bytes()[:5000])
    else:
        shutil.copy(getattr(P, checkpoint), run / "checkpoint.pt")
    assert_refused(["train", "--out", run, "--resume", *FAST], match, tmp_path, P.dir)


def test_resume_with_another_batch_shape(P, tmp_path):
    """A resumed triplet run may change --batch-p / --batch-k: its saved config held the
    resolved --batch-size of the old P x K, which the batch-size check then refused."""
    run = tmp_path / "run"
    shutil.copytree(P.run, run)
    cfg = json.loads((run / "config.json").read_text())
    cfg["batch_size"] = cfg["batch_p"] * cfg["batch_k"]  # as runs before this change saved it
    (run / "config.json").write_text(json.dumps(cfg))
    r = run_cli(["train", "--out", run, "--resume", "--batch-k", "3", *FAST, "--steps", 3])
    assert r.exit_code == 0, r.output
    assert json.loads((run / "config.json").read_text())["batch_size"] is None


def test_resume_from_another_folder_finds_the_data(P, tmp_path, monkeypatch):
    """The run's config saves its input paths whole: a relative --data was saved as given,
    and --resume from another working folder said the data did not exist."""
    monkeypatch.chdir(P.dir)
    run = tmp_path / "run"
    r = run_cli(["train", "--data", "ds", "--out", run, *TRAIN])
    assert r.exit_code == 0, r.output
    assert json.loads((run / "config.json").read_text())["data"] == str(P.dir / "ds")
    monkeypatch.chdir(tmp_path)
    r = run_cli(["train", "--out", "run", "--resume", *FAST, "--steps", 3])
    assert r.exit_code == 0 and "resuming" in r.output, r.output


def test_unreadable_images_are_a_counted_skip(P, tmp_path):
    """A morphgen render with corrupt PNGs trains on the readable ones and says how many it
    skipped; embed lists the skipped files instead of giving them a sibling's vector."""
    ds = tmp_path / "ds"
    shutil.copytree(P.ds, ds)
    broken = sorted((ds / "images" / "000001").glob("*.png")) + [ds / "images" / "000002" / "000002_0001.png"]
    for png in broken:
        png.write_bytes(b"")
    r = run_cli(["train", "--data", ds, "--out", tmp_path / "r", *TRAIN])
    assert r.exit_code == 0 and "19 images of 5 identities" in r.output and "unreadable: 5" in r.output, r.output
    r = run_cli(["embed", "--model", P.run, "--images", ds, "--out", tmp_path / "e.npz", "--quiet"])
    assert r.exit_code == 0 and "unreadable 5" in r.output, r.output
    import numpy as np
    z = np.load(tmp_path / "e.npz")
    assert len(z["embeddings"]) == 19
    assert sorted(z["skipped"]) == sorted(str(p.relative_to(ds)) for p in broken)


def test_embed_names_a_file_that_is_no_image(P, tmp_path):
    """A file of a folder that holds no image was counted ("not images 1") but named
    neither in the .npz's files nor in its skipped list."""
    import numpy as np
    folder = tmp_path / "people"
    for k in range(2):
        (folder / f"p{k}").mkdir(parents=True)
        shutil.copy(P.ds / "images" / f"00000{k}" / f"00000{k}_0000.png", folder / f"p{k}" / "a.png")
    (folder / "p0" / "b.png").write_bytes(b"notanimage" * 10)
    r = run_cli(["embed", "--model", P.run, "--images", folder, "--out", tmp_path / "e.npz", "--quiet", "--no-align"])
    assert r.exit_code == 0 and "not images 1" in r.output, r.output
    z = np.load(tmp_path / "e.npz")
    assert "p0/b.png" in list(z["skipped"]) and "p0/b.png" not in list(z["files"])


def test_real_pairs_names_a_file_that_is_no_image(P, tmp_path):
    """real_pairs dropped it while listing the folder and named it nowhere: the images used
    did not add up to the files on disk."""
    import json as _json

    from recognition.evaluation.real_pairs import evaluate_real_pairs
    folder = tmp_path / "people"
    for k in range(3):
        (folder / f"p{k}").mkdir(parents=True)
        for n in range(2):
            shutil.copy(P.ds / "images" / f"00000{k}" / f"00000{k}_000{n}.png", folder / f"p{k}" / f"{n}.png")
    (folder / "p0" / "bad.png").write_bytes(b"notanimage" * 10)
    evaluate_real_pairs(P.run, folder, tmp_path / "out", folds=2, per_fold=4, align=False, workers=1)
    inputs = _json.loads((tmp_path / "out" / "result.json").read_text())["inputs"]
    assert inputs["images_used"] == 6 and inputs["not_images"] == ["p0/bad.png"], inputs


def test_an_image_that_breaks_after_the_check_gets_no_embedding(P, tmp_path, monkeypatch):
    """Evaluation embeds what the decode check passed; a file that no longer decodes then
    (changed since) is left out and counted, not given a sibling's embedding."""
    import numpy as np

    from recognition.data import load_imageset
    from recognition.evaluation import common

    ds = tmp_path / "ds"
    shutil.copytree(P.ds, ds)
    iset = load_imageset(ds)
    monkeypatch.setattr(common, "find_landmarks", lambda iset, *a, **k: iset)  # the check, before the file broke
    (ds / iset.files[2]).write_bytes(b"\x89PNG garbage")
    model, meta = common.load_eval_model(P.run)
    emb = common.embed_imageset(model, meta, iset)
    assert emb.unreadable == [iset.files[2]] and not emb.ok[2] and emb.ok.sum() == len(iset) - 1
    assert np.isnan(emb.emb[2]).all() and np.isfinite(np.delete(emb.emb, 2, 0)).all()


def test_resume_config_is_the_runs_own(P, tmp_path):
    """A plain --resume reads the run's config.json; the accepted one rewrites it unchanged."""
    run = tmp_path / "run"
    shutil.copytree(P.run, run)
    before = json.loads((run / "config.json").read_text())
    r = run_cli(["train", "--out", run, "--resume", *FAST, "--steps", 2])
    assert r.exit_code == 0, r.output
    assert json.loads((run / "config.json").read_text()) == {**before, "resume": True, "out": str(run)}


def test_resume_of_the_run_a_config_file_names(P, tmp_path):
    """`--config` naming `out:` with `--resume` looked for the run in ./run and said "no
    training data"; it now reads that run's own config, as `--out RUN --resume` does."""
    run = tmp_path / "run"
    shutil.copytree(P.run, run)
    (tmp_path / "c.yaml").write_text(f"out: {run}\n")
    r = run_cli(["train", "--config", tmp_path / "c.yaml", "--resume", *FAST, "--steps", 3])
    assert r.exit_code == 0, r.output
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 3


def test_ctrl_c_outside_a_commands_own_handling_is_one_line(P, tmp_path, monkeypatch):
    """A Ctrl-C that no command turns into its own line (here in stats), or one during the
    command line's imports, prints "interrupted" and exits 130 (click said "Aborted!" with
    exit code 1; the imports gave a traceback)."""
    import subprocess
    import sys

    from morphgen import stats

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(stats, "plot", interrupted)
    r = run_cli(["stats", P.ds, "--out", tmp_path / "s.png"])
    assert r.exit_code == 130 and r.output.strip() == "interrupted", r.output
    code = ("import sys\n"
            "class CtrlCInTheImports:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'morphgen.cli.main': raise KeyboardInterrupt\n"
            "sys.meta_path.insert(0, CtrlCInTheImports())\n"
            "from morphgen.cli.entry import main\n"
            "main()")
    done = subprocess.run([sys.executable, "-c", code, "render"], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 130 and done.stderr == "interrupted\n", done.stderr


def test_a_file_that_fails_mid_run_is_one_line(P, tmp_path, monkeypatch):
    """The inputs and outputs are checked before the work; a file that goes away or cannot
    be written later (a run folder removed mid-run, a full disk) is one line naming it, exit
    code 1: here stats' figure, and a checkpoint whose run folder was removed."""
    import errno

    from morphgen import stats
    from recognition.checkpoint import save_checkpoint

    def gone(*a, **k):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(tmp_path / "gone" / "s.png"))

    monkeypatch.setattr(stats, "plot", gone)
    r = run_cli(["stats", P.ds, "--out", tmp_path / "s.png"])
    assert r.exit_code == 1 and r.output.strip() == f"Error: No such file or directory: {tmp_path / 'gone' / 's.png'}"
    with pytest.raises(OSError, match="cannot write the checkpoint"):
        save_checkpoint({"step": 1}, tmp_path / "removed_run" / "checkpoint.pt")


def damaged_jpegs(folder: Path) -> list[Path]:
    """Two JPEGs as they come damaged: one whose header claims 60000 x 60000 pixels
    (OpenCV raised cv2.error: a traceback), one cut in half (cv2.imread decoded it with a
    grey lower half, and libjpeg printed a stray line)."""
    import cv2
    import numpy as np

    data = bytearray(cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8))[1])
    sof = data.find(b"\xff\xc0")
    huge = data[:sof + 5] + (60000).to_bytes(2, "big") * 2 + data[sof + 9:]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "huge.jpg").write_bytes(bytes(huge))
    (folder / "cut.jpg").write_bytes(bytes(data[:len(data) // 2]))
    return [folder / "huge.jpg", folder / "cut.jpg"]


def test_damaged_images_are_unreadable_everywhere(P, tmp_path):
    import numpy as np

    from morphgen.image_files import read_image_file

    folder = tmp_path / "people"
    for k in range(2):
        (folder / f"p{k}").mkdir(parents=True)
        shutil.copy(P.ds / "images" / f"00000{k}" / f"00000{k}_0000.png", folder / f"p{k}" / "a.png")
    bad = damaged_jpegs(folder / "p0")
    assert [read_image_file(p) for p in bad] == [None, None]
    r = run_cli(["embed", "--model", P.run, "--images", folder, "--out", tmp_path / "e.npz", "--quiet", "--no-align"])
    assert r.exit_code == 0 and "unreadable 2" in r.output and "Traceback" not in r.output, r.output
    assert sorted(np.load(tmp_path / "e.npz")["skipped"]) == ["p0/cut.jpg", "p0/huge.jpg"]
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("p0/a.png p0/huge.jpg 1\np0/a.png p1/a.png 0\np0/cut.jpg p1/a.png 0\np1/a.png p0/a.png 0\n")
    r = run_cli(["eval", "pairs", "--model", P.run, "--pairs", pairs, "--root", folder, "--out", tmp_path / "ev",
                 "--quiet", "--no-align"])
    assert "Traceback" not in r.output and "cv2.error" not in r.output, r.output


def test_a_ctrl_c_while_a_checkpoint_is_written_leaves_no_partial_file(tmp_path, monkeypatch):
    from recognition import checkpoint

    def interrupted(obj, f):
        Path(f).write_bytes(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_checkpoint({"step": 1}, tmp_path / "checkpoint.pt")
    assert list(tmp_path.iterdir()) == []
