"""End to end: train NN4.small2 with triplet loss on a procedural morphgen-layout set
(loss falls, held-out verification rises), resume, embed, fine-tune on real faces,
identity and domain mixup with a margin head, and the user-facing errors."""
import csv
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from morphgen.errors import ConfigError, DataError, ModelError
from recognition.checkpoint import load_checkpoint
from toydata import write_toy_dataset
from recognition.train import TrainConfig, train

try:
    from morphgen.cli.train_cmd import embed as embed_cmd, train as train_cmd
except ImportError:  # a source checkout that is not pip-installed: cli/ is a top-level package
    from cli.train_cmd import embed as embed_cmd, train as train_cmd

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_orl = pytest.mark.skipif(not (SHARED / "orl_faces").is_dir(),
                               reason=f"real test images absent ({SHARED}); CI provides ../shared/data")
# 40 px crops on the (roomier) ArcFace template. One torch thread: on a busy machine two
# spinning OpenMP threads made these small steps 3-7x slower, not faster.
SMALL = ["--input-size", "40", "--template", "arcface", "--batch-p", "8", "--batch-k", "4", "--workers", "1",
         "--threads", "1", "--quiet"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def invoke(cmd, args):
    res = CliRunner().invoke(cmd, [str(a) for a in args], catch_exceptions=True)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    assert res.exit_code == 0, res.output
    return res.output


def read_log(run):
    with open(run / "log.csv") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("toy"), identities=64, per_identity=6, size=64, seed=1)


@pytest.fixture(scope="module")
def smoke_run(toy, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "nn4"
    out = invoke(train_cmd, ["--data", toy, "--out", run, "--steps", 60, "--val-ids", 12, "--val-pairs", 400,
                             "--lr", 3e-3, "--log-every", 10, "--checkpoint-every", 20, *SMALL])
    return run, out


def test_smoke_loss_falls_and_verification_rises(smoke_run):
    run, out = smoke_run
    assert "held-out verification at step 0" in out and "verification on held-out identities" in out
    for name in ("config.json", "config.yaml", "log.csv", "checkpoint.pt", "train_list.tsv", "val_list.tsv"):
        assert (run / name).is_file(), name
    rows = read_log(run)
    losses = [float(r["loss"]) for r in rows if r["loss"]]
    assert len(losses) == 6 and losses[-1] < 0.85 * losses[0], losses
    val = [(float(r["val_accuracy"]), float(r["val_auc"])) for r in rows if r["val_accuracy"]]
    (acc0, auc0), (acc1, auc1) = val[0], val[-1]
    # chance is 0.5; measured with seeds 0/1/2: accuracy 0.63 -> 0.90/0.83/0.90, AUC 0.66 -> 0.94/0.87/0.96
    assert acc1 >= 0.78 and auc1 >= 0.82 and acc1 >= acc0 + 0.1 and auc1 >= auc0 + 0.1, val
    assert all(float(r["images_per_s"]) > 0 for r in rows if r["loss"])
    ck = load_checkpoint(run)
    assert ck["arch"] == "nn4small2" and ck["step"] == 60 and ck["input_size"] == 40 and len(ck["classes"]) == 52
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["batch_p"] == 8 and cfg["margin"] == 0.2 and cfg["optimizer"] == "adam"
    val_ids = {l.split("\t")[1] for l in (run / "val_list.tsv").read_text().splitlines()[1:]}
    train_ids = {l.split("\t")[1] for l in (run / "train_list.tsv").read_text().splitlines()[1:]}
    assert len(val_ids) == 12 and not val_ids & train_ids


def test_resume_continues_from_checkpoint(smoke_run, tmp_path):
    run, _ = smoke_run
    res = CliRunner().invoke(train_cmd, ["--out", str(run), "--steps", "60", "--quiet"])
    assert isinstance(res.exception, ConfigError) or "already holds a run" in res.output
    copy = tmp_path / "resumed"
    copy.mkdir()
    for f in run.iterdir():
        if f.is_file():
            (copy / f.name).write_bytes(f.read_bytes())
    with open(copy / "log.csv", "a") as f:  # what a run killed after its checkpoint at 60 had logged past it
        f.write("70,,0.5,,,,,,\n")
    invoke(train_cmd, ["--out", copy, "--resume", "--steps", 63, "--quiet"])   # config from the run
    assert load_checkpoint(copy)["step"] == 63
    steps = [int(r["step"]) for r in read_log(copy)]
    assert steps[-1] == 63 and steps.count(60) == 1
    assert len(steps) == len(set(steps)) and steps == sorted(steps)  # step 70 of the killed run is dropped


def test_augmented_runs_are_the_same_whatever_the_workers_or_a_resume(toy, tmp_path, monkeypatch):
    """With --aug, a run's weights are a pure function of its seed and steps: the same with
    0 or 1 loader workers, and resumed from its step-4 checkpoint (each loader process drew
    augmentation from a stream of its own, restarted on resume: 187 of 224 tensors differed)."""
    base = ["--data", toy, "--aug", "strong", "--arch", "nn4small2", "--input-size", "32", "--batch-p", "3",
            "--batch-k", "2", "--threads", "1", "--quiet", "--checkpoint-every", 4, "--log-every", 3,
            "--lr-schedule", "constant"]   # (a cosine schedule follows --steps: 4 steps then 8 would be another run)

    def weights(run):
        return load_checkpoint(run)["model"]

    invoke(train_cmd, [*base, "--steps", 8, "--workers", 0, "--out", tmp_path / "w0"])
    invoke(train_cmd, [*base, "--steps", 8, "--workers", 1, "--out", tmp_path / "w1"])
    import recognition.train as train_module

    saved = train_module.save_checkpoint

    def save_then_ctrl_c(state, path):  # Ctrl-C right after the step-4 checkpoint of an 8-step run
        saved(state, path)
        if state["step"] == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_ctrl_c)
    res = CliRunner().invoke(train_cmd, [str(a) for a in [*base, "--steps", 8, "--workers", 1, "--out", tmp_path / "r"]])
    assert res.exit_code == 130 and "--resume" in res.output, res.output
    monkeypatch.setattr(train_module, "save_checkpoint", saved)
    invoke(train_cmd, ["--out", tmp_path / "r", "--resume", "--workers", 0, "--quiet"])
    a, b, c = weights(tmp_path / "w0"), weights(tmp_path / "w1"), weights(tmp_path / "r")
    assert all(torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]) for k in a)
    # the log too: the resumed run's first row (step 6) averages steps 5-6 and the checkpoint's step 4
    def rows(run):
        return [(r["step"], r["epoch"], r["loss"], r["lr"]) for r in read_log(run)]

    assert rows(tmp_path / "w0") == rows(tmp_path / "r")
    # and the run's first step loss and last ten (an experiment's loss_first / loss_last came from
    # the resumed part alone)
    whole, resumed = load_checkpoint(tmp_path / "w0"), load_checkpoint(tmp_path / "r")
    assert whole["loss_first"] == resumed["loss_first"] and len(whole["recent_losses"]) == 8
    assert whole["recent_losses"] == resumed["recent_losses"]


def test_log_rows_count_what_batches_held_and_leave_verification_rows_blank(toy, tmp_path):
    """The epoch column counts the images batches held (K = 8 over identities of 6 images
    counted 8 each), --epochs follows it, and a row written for a verification alone does
    not repeat the last training row's loss and speed."""
    run = tmp_path / "r"
    out = invoke(train_cmd, ["--data", toy, "--arch", "nn4small2", "--input-size", "32", "--batch-p", "4",
                             "--batch-k", "8", "--epochs", "0.25", "--val-ids", 4, "--val-pairs", 20,
                             "--eval-every", 3, "--log-every", 2, "--threads", "1", "--workers", "0", "--quiet",
                             "--out", run])
    n = 60 * 6                                     # the training identities' images (4 held out)
    steps = math.ceil(0.25 * n / (4 * 6))          # 24 images a batch, not 32
    assert f"done: {steps} steps, {steps * 24} images" in out, out
    log = {int(r["step"]): r for r in read_log(run)}
    assert float(log[2]["epoch"]) == pytest.approx(2 * 24 / n, abs=1e-6)
    assert log[3]["val_accuracy"] and log[3]["loss"] == "" and log[3]["images_per_s"] == ""
    assert log[2]["loss"] and log[4]["loss"]


def test_embed_morphgen_folder_with_flip(smoke_run, toy, tmp_path):
    run, _ = smoke_run
    out = invoke(embed_cmd, ["--model", run, "--images", toy, "--out", tmp_path / "e.npz", "--flip", "--quiet"])
    assert "384 embeddings of dimension 128" in out
    z = np.load(tmp_path / "e.npz")
    assert z["embeddings"].shape == (384, 128) and z["files"].shape == (384,)
    assert np.allclose(np.linalg.norm(z["embeddings"], axis=1), 1, atol=1e-5)


@needs_orl
def test_finetune_on_orl_from_synthetic_checkpoint(smoke_run, tmp_path):
    run, _ = smoke_run
    ft = tmp_path / "ft"
    out = invoke(train_cmd, ["--data", SHARED / "orl_faces", "--out", ft, "--init", run, "--subset-ids", 8,
                             "--subset-per-id", 6, "--val-ids", 3, "--val-pairs", 200, "--steps", 6, "--freeze", "stem",
                             "--backbone-lr-mult", 0.5, "--lr", 5e-4, *SMALL, "--batch-p", 5])  # all 5 ids
    assert "initialised the nn4small2 backbone" in out
    init, new = load_checkpoint(run)["model"], load_checkpoint(ft)["model"]
    frozen = [k for k in init if k.startswith("stem.") and k.endswith("weight")]
    trained = [k for k in init if k.startswith("inception_5b.") and k.endswith("weight")]
    assert frozen and all(torch.equal(init[k], new[k]) for k in frozen)
    assert any(not torch.equal(init[k], new[k]) for k in trained)
    rows = read_log(ft)
    assert rows[-1]["val_accuracy"] and float(rows[-1]["val_accuracy"]) > 0.5
    assert len(list((ft / "cache").glob("landmarks-*.json"))) == 1          # MTCNN landmarks cached
    assert 25 <= len((ft / "train_list.tsv").read_text().splitlines()) - 1 <= 30   # 5 ids x 6, minus faceless


def test_identity_and_domain_mixup_with_arcface(tmp_path):
    syn = write_toy_dataset(tmp_path / "syn", identities=6, per_identity=4, size=64, seed=3, mixup=2)
    real = write_toy_dataset(tmp_path / "real", identities=4, per_identity=4, size=64, seed=4, first_id=100)
    summary = train(TrainConfig(data=str(syn), out=str(tmp_path / "mix"), loss="arcface", real_data=str(real),
                                domain_mixup=0.6, input_size=48, batch_size=12, steps=3, lr=0.01,
                                workers=0, threads=1, progress=False), say=lambda *a: None)
    ck = load_checkpoint(tmp_path / "mix")
    assert ck["head"]["weight"].shape == (10, 128)                          # 6 synthetic + 4 real classes
    assert ck["classes"][6:] == ["real:100", "real:101", "real:102", "real:103"]
    assert all(np.isfinite(summary["losses"])) and summary["steps"] == 3
    # train_crops.png shows the mixed pixels the network trains on: psi 1 is the synthetic batch alone
    pure = train(TrainConfig(data=str(syn), out=str(tmp_path / "pure"), loss="arcface", real_data=str(real),
                             domain_mixup=1.0, input_size=48, batch_size=12, steps=1, lr=0.01,
                             workers=0, threads=1, progress=False), say=lambda *a: None)
    assert pure["steps"] == 1
    mixed, plain = (cv2.imread(str(tmp_path / r / "train_crops.png")).astype(int) for r in ("mix", "pure"))
    assert mixed.shape == plain.shape and np.abs(mixed - plain).mean() > 5
    # without mixup the real identities simply join the label space
    s2 = train(TrainConfig(data=str(syn), out=str(tmp_path / "joint"), loss="cosface", real_data=str(real),
                           input_size=48, batch_size=12, steps=2, workers=0, threads=1, progress=False), say=lambda *a: None)
    assert s2["classes"] == 10 and s2["train_images"] == 6 * 6 + 16
    # bf16 autocast (the GPU default) with a margin warm-up, on the CPU
    s3 = train(TrainConfig(data=str(syn), out=str(tmp_path / "bf16"), loss="arcface", precision="bf16",
                           margin_warmup_steps=2, input_size=48, batch_size=12, steps=3, workers=0, threads=1,
                           progress=False), say=lambda *a: None)
    assert s3["steps"] == 3 and all(np.isfinite(s3["losses"]))


def test_user_errors(smoke_run, toy, tmp_path):
    run, _ = smoke_run
    with pytest.raises(ModelError, match="nn4small2.*iresnet18"):
        train(TrainConfig(data=str(toy), out=str(tmp_path / "a"), arch="iresnet18", init=str(run), steps=1))
    with pytest.raises(ConfigError, match="--real-data"):
        train(TrainConfig(data=str(toy), out=str(tmp_path / "b"), loss="arcface", domain_mixup=0.5, steps=1))
    with pytest.raises(ConfigError, match="arcface or cosface"):
        train(TrainConfig(data=str(toy), out=str(tmp_path / "c"), real_data=str(toy), domain_mixup=0.5, steps=1))
    with pytest.raises(ConfigError, match="not both"):
        train(TrainConfig(data=str(toy), out=str(tmp_path / "d"), steps=1, epochs=1))
    with pytest.raises(ConfigError, match="freeze"):
        train(TrainConfig(data=str(toy), out=str(tmp_path / "e"), steps=1, freeze="nope", input_size=48,
                          progress=False), say=lambda *a: None)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no usable images"):
        train(TrainConfig(data=str(empty), out=str(tmp_path / "f"), steps=1))
    one_each = tmp_path / "single"
    for k in range(3):
        (one_each / f"p{k}").mkdir(parents=True)
        (one_each / f"p{k}" / "a.png").write_bytes((toy / "images" / "000000" / "000000_0000.png").read_bytes())
    with pytest.raises(DataError, match="no identity with 2"):
        train(TrainConfig(data=str(one_each), out=str(tmp_path / "g"), steps=1, align=False, progress=False),
              say=lambda *a: None)
    res = CliRunner().invoke(train_cmd, ["--data", str(toy), "--arch", "nope"])
    assert res.exit_code == 2 and "nope" in res.output
    (tmp_path / "cfg.yaml").write_text("batch_p: 4\nbogus_key: 1\n")
    with pytest.raises(ConfigError, match="bogus_key"):
        CliRunner().invoke(train_cmd, ["--config", str(tmp_path / "cfg.yaml"), "--data", str(toy)],
                           catch_exceptions=False)


def test_config_file_takes_the_flags_spellings(tmp_path):
    """`--help` says a --config's keys are the flags': `list`, `cache`, `no-align` and
    `quiet` were unknown keys, `lr: 1e-3` (text to PyYAML, and the help's own spelling)
    was "not a number" and `freeze: 2` "not a text value"."""
    (tmp_path / "ids.txt").write_text("")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"list: {tmp_path / 'ids.txt'}\ncache: {tmp_path / 'c'}\nno-align: true\nquiet: true\n"
                   "lr: 1e-3\nfreeze: 2\n")
    d = TrainConfig.read_yaml(cfg)
    assert d == {"list_file": str(tmp_path / "ids.txt"), "cache_dir": str(tmp_path / "c"), "align": False,
                 "progress": False, "lr": "1e-3", "freeze": 2}
    c = TrainConfig.from_dict({**d, "data": str(tmp_path)}).resolved()
    assert (c.lr, c.freeze) == (0.001, "2")
    cfg.write_text("batch-p: 4\nbatch_p: 3\n")
    with pytest.raises(ConfigError, match="--batch-p is given twice"):
        TrainConfig.read_yaml(cfg)
    with pytest.raises(ConfigError, match="--lr must be a number, got 'abc'"):
        TrainConfig.from_dict({"data": str(tmp_path), "lr": "abc"}).resolved()
    with pytest.raises(ConfigError, match="^aug_flip must be between 0 and 1"):  # a key with no flag: not --aug-flip
        TrainConfig.from_dict({"data": str(tmp_path), "aug_flip": 3}).resolved()


def test_ctrl_c_says_how_to_resume(tmp_path, monkeypatch):
    import recognition.train

    def interrupted(cfg, say):
        Path(cfg.out).mkdir()
        raise KeyboardInterrupt

    monkeypatch.setattr(recognition.train, "train", interrupted)
    res = CliRunner().invoke(train_cmd, ["--out", str(tmp_path / "run"), "--steps", "5", "--quiet"])
    assert res.exit_code == 130 and "--resume" in res.output and "Traceback" not in res.output
    # stopped before the run folder was made: --resume would be refused ("does not exist")
    monkeypatch.setattr(recognition.train, "train", lambda cfg, say: (_ for _ in ()).throw(KeyboardInterrupt))
    res = CliRunner().invoke(train_cmd, ["--out", str(tmp_path / "early"), "--steps", "5", "--quiet"])
    assert res.exit_code == 130 and "--resume" not in res.output and "run the same command again" in res.output


def test_out_that_holds_no_run_is_refused(toy, tmp_path):
    def run(*args):
        return CliRunner().invoke(train_cmd, [str(a) for a in args] + ["--steps", "1", "--quiet"],
                                  catch_exceptions=False)
    with pytest.raises(ConfigError, match="--resume: .* does not exist"):  # a typo'd --out
        run("--resume", "--out", tmp_path / "new", "--data", toy)
    assert not (tmp_path / "new").exists()
    before = sorted(p.name for p in toy.iterdir())
    for resume in ([], ["--resume"]):
        with pytest.raises(ConfigError, match=f"--out {toy} is not empty and holds no training run"):
            run("--out", toy, "--data", toy, *resume)
    assert sorted(p.name for p in toy.iterdir()) == before
    # a run stopped before its first checkpoint left only its landmark cache: --resume
    # starts it afresh, as the Ctrl-C message says (it was refused as "not empty")
    (tmp_path / "stopped" / "cache").mkdir(parents=True)
    (tmp_path / "stopped" / "cache" / "landmarks.npz").write_bytes(b"x")
    run("--resume", "--out", tmp_path / "stopped", "--data", toy, "--workers", "0", "--threads", "1", "--no-align",
        "--batch-p", "2", "--batch-k", "2")
    assert (tmp_path / "stopped" / "checkpoint.pt").is_file()


@needs_orl
def test_a_run_failing_before_its_first_checkpoint_keeps_only_its_landmark_cache(tmp_path, monkeypatch):
    """A folder of photos needs MTCNN (hours on a large set): a run that fails in training
    before its first checkpoint (here a loss that is not finite) leaves its landmark cache,
    and nothing else, so that the rerun that fixes the option starts from it."""
    import recognition.train as train_module

    faces = SHARED / "orl_faces"
    run = tmp_path / "run"
    monkeypatch.setattr(train_module, "triplet_semihard_loss",   # the loss a far too large --lr ends in
                        lambda emb, labels, margin: emb.sum() * float("nan"))
    res = CliRunner().invoke(train_cmd, [str(a) for a in [
        "--data", faces, "--subset-ids", "2", "--subset-per-id", "2", "--out", run, "--arch", "nn4small2",
        "--input-size", "32", "--batch-p", "2", "--batch-k", "2", "--steps", "4", "--checkpoint-every", "4", "--lr",
        "1e30", "--threads", "1", "--workers", "0", "--quiet"]])
    assert isinstance(res.exception, ConfigError) and "not finite" in str(res.exception), res.output
    assert sorted(p.name for p in run.iterdir()) == ["cache"] and any((run / "cache").iterdir())
    monkeypatch.undo()
    r = CliRunner().invoke(train_cmd, [str(a) for a in [
        "--data", faces, "--subset-ids", "2", "--subset-per-id", "2", "--out", run, "--arch", "nn4small2",
        "--input-size", "32", "--batch-p", "2", "--batch-k", "2", "--steps", "2", "--threads", "1", "--workers", "0",
        "--quiet"]])
    assert r.exit_code == 0, r.output


def test_a_run_from_before_images_were_counted_resumes_to_its_own_length(toy, tmp_path, monkeypatch):
    """--epochs counts the images batches hold now; a checkpoint written before (no
    images_seen) keeps the count its run started with, so a resume does not lengthen it
    (and change its learning-rate schedule) half-way."""
    import recognition.train as train_module
    from recognition.checkpoint import save_checkpoint

    args = ["--data", toy, "--arch", "nn4small2", "--input-size", "32", "--batch-p", "4", "--batch-k", "8",
            "--epochs", "0.5", "--checkpoint-every", "2", "--threads", "1", "--workers", "0", "--quiet"]
    saved = train_module.save_checkpoint

    def save_then_ctrl_c(state, path):
        saved(state, path)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_ctrl_c)
    res = CliRunner().invoke(train_cmd, [str(a) for a in [*args, "--out", tmp_path / "r"]])
    assert res.exit_code == 130, res.output
    monkeypatch.undo()
    old = load_checkpoint(tmp_path / "r")
    del old["images_seen"], old["unlogged_losses"]
    save_checkpoint({k: v for k, v in old.items() if k != "format"}, tmp_path / "r" / "checkpoint.pt")
    out = invoke(train_cmd, ["--out", tmp_path / "r", "--resume", "--quiet"])
    assert "done: 6 steps" in out, out          # 0.5 x 384 images / (4 x 8): the count it began with; now 8


def test_a_resumed_run_with_dropout_ends_where_an_uninterrupted_one_does(toy, tmp_path, monkeypatch):
    """Inception-ResNet-v1's dropout drew from one torch stream seeded at the start: a run
    resumed from its step-2 checkpoint drew other masks and ended elsewhere."""
    import recognition.train as train_module

    base = ["--data", toy, "--arch", "inception_resnet_v1", "--input-size", "80", "--batch-p", "2", "--batch-k", "2",
            "--threads", "1", "--quiet", "--checkpoint-every", 2, "--log-every", 1, "--workers", 0, "--no-align",
            "--steps", 4]
    invoke(train_cmd, [*base, "--out", tmp_path / "whole"])
    saved = train_module.save_checkpoint

    def save_then_ctrl_c(state, path):
        saved(state, path)
        if state["step"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_ctrl_c)
    res = CliRunner().invoke(train_cmd, [str(a) for a in [*base, "--out", tmp_path / "r"]])
    assert res.exit_code == 130, res.output
    monkeypatch.setattr(train_module, "save_checkpoint", saved)
    invoke(train_cmd, ["--out", tmp_path / "r", "--resume", "--quiet"])
    a, b = load_checkpoint(tmp_path / "whole")["model"], load_checkpoint(tmp_path / "r")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["loss"] for r in read_log(tmp_path / "whole")] == [r["loss"] for r in read_log(tmp_path / "r")]
