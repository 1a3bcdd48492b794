"""Online synthesis: deterministic freshly rendered batches in the trainer's format."""
import numpy as np
import pytest
import torch

from conftest import make_tiny_model
from recognition.online import HeldOutSet, OnlineBatches, load_scene, render_size_for


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "tiny.npz"
    make_tiny_model(20, 24).save_npz(path)
    return load_scene(None, {"model": str(path), "ids": 12, "size": 32, "antialias": 1,
                             "identity_mixup": True, "mixup_fraction": 0.5})


def test_render_size_matches_template():
    assert render_size_for("arcface", 112) == 168  # eye-mouth 40.6 px / 0.25, rounded up to 8
    assert render_size_for("openface", 96) >= 96


def test_batches_are_deterministic_and_shaped(scene):
    src = OnlineBatches(scene, 32, "arcface", batch_p=3, batch_k=2, total=4, seed=5)
    x, y, sid, sw = src.batch(2)
    assert x.shape == (6, 3, 32, 32) and x.dtype == torch.uint8 and x.float().std() > 5
    assert (y[0::2] == y[1::2]).all() and len(set(y.tolist())) == 3  # P identities x K images
    x2, y2, sid2, sw2 = OnlineBatches(scene, 32, "arcface", 3, 2, total=4, seed=5).batch(2)
    assert torch.equal(x, x2) and torch.equal(y, y2) and torch.equal(sw, sw2)
    assert not torch.equal(x, src.batch(3)[0])
    # soft labels: own identity first, weights sum to one
    assert torch.allclose(sw.sum(1), torch.ones(6)) and (sid[:, 0] == y).all()
    steps = list(src)
    assert len(steps) == 4 and torch.equal(steps[2][0], x)


def test_mixup_soft_labels_present(scene):
    src = OnlineBatches(scene, 32, "arcface", batch_p=4, batch_k=4, total=1, seed=1)
    _, y, sid, sw = src.batch(0)
    mixed = sid[:, 1] >= 0
    assert mixed.any() and (sid[mixed, 1] != y[mixed]).all()
    assert ((sw[mixed, 0] >= 0.5) & (sw[mixed, 0] < 1)).all()


def test_held_out_set(scene):
    ds = HeldOutSet(scene, 32, "arcface", n_ids=3, per_id=2)
    assert len(ds) == 6 and ds[0][0].shape == (3, 32, 32) and ds.labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_pool_smaller_than_batch_p_is_an_error(scene):
    from morphgen.errors import ConfigError

    with pytest.raises(ConfigError, match="identity pool"):
        OnlineBatches(scene, 32, "arcface", batch_p=50, batch_k=1, total=1)


def test_train_online_from_the_cli_then_embed(tmp_path):
    """`morphgen train --online` on the CPU at a tiny budget; checkpoint and embed work on it."""
    from click.testing import CliRunner

    from morphgen.cli.main import cli

    model = tmp_path / "tiny.npz"
    make_tiny_model(20, 24).save_npz(model)
    cfg = tmp_path / "online.yaml"
    cfg.write_text(f"model: {model}\nids: 8\nantialias: 1\nidentity-mixup: true\n")
    run = tmp_path / "run"
    r = CliRunner().invoke(cli, ["train", "--online", str(cfg), "--arch", "nn4small2", "--input-size", "32",
                                 "--steps", "3", "--batch-p", "4", "--batch-k", "2", "--val-ids", "3",
                                 "--out", str(run), "--threads", "1", "--quiet"])
    assert r.exit_code == 0, r.output
    assert (run / "checkpoint.pt").exists() and "online synthesis: 8 identities" in r.output
    data = tmp_path / "imgs"
    r = CliRunner().invoke(cli, ["render", "--model", str(model), "--ids", "2", "--per-id", "2", "--size", "48",
                                 "--quiet", "--out", str(data), "--workers", "1"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["embed", "--model", str(run), "--images", str(data), "--out", str(tmp_path / "e.npz")])
    assert r.exit_code == 0, r.output
    emb = np.load(tmp_path / "e.npz")["embeddings"]
    assert emb.shape == (4, 128) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-4)


def test_online_needs_steps(tmp_path):
    from click.testing import CliRunner

    from morphgen.cli.main import cli

    r = CliRunner().invoke(cli, ["train", "--online", "default", "--out", str(tmp_path / "r")])
    assert r.exit_code == 2 and "--steps" in r.output
