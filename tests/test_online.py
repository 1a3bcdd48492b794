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
