"""Networks (shapes, parameter counts, no torchvision), the fast LRN, and checkpoints."""
import sys

import pytest
import torch

from morphgen.errors import ModelError
from recognition.checkpoint import load_backbone_state, load_checkpoint, save_checkpoint
from recognition.models import ARCHS, build_model
from recognition.models.nn4small2 import CrossMapLRN


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("arch", list(ARCHS))
def test_models_build_and_embed(arch):
    torch.manual_seed(0)
    m = build_model(arch).eval()
    size, dim, _ = ARCHS[arch]
    with torch.no_grad():
        y = m(torch.randn(2, 3, size, size))
    assert y.shape == (2, dim) and torch.isfinite(y).all()
    if arch in ("nn4small2", "inception_resnet_v1"):
        assert torch.allclose(y.norm(dim=1), torch.ones(2), atol=1e-5)
    assert "torchvision" not in sys.modules


def test_nn4small2_matches_openface_size_and_smaller_inputs():
    m = build_model("nn4small2", 64)
    assert 3.6e6 < sum(p.numel() for p in m.parameters()) < 3.8e6   # OpenFace: 3.7M
    assert m(torch.randn(2, 3, 64, 64)).shape == (2, 128)


def test_fast_lrn_equals_torch_lrn():
    x = torch.randn(2, 16, 5, 5, dtype=torch.float64) * 20
    assert torch.allclose(CrossMapLRN(5, 1e-4, 0.75)(x), torch.nn.LocalResponseNorm(5, 1e-4, 0.75)(x))


def test_inception_resnet_v1_refuses_pretrained_download():
    from recognition.models.inception_resnet_v1 import _facenet_module
    with pytest.raises(ModelError, match="download"):
        _facenet_module().InceptionResnetV1(pretrained="vggface2")


def test_unreadable_checkpoint_says_what_the_file_is(tmp_path):
    torch.save(build_model("nn4small2", 64), tmp_path / "whole.pt")              # a pickled module, not tensors
    good = tmp_path / "good.pt"
    torch.save({"weights": torch.zeros(1)}, good)
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:200])
    (tmp_path / "notes.txt").write_text("hi\n")
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "noise.pt").write_bytes(bytes(range(256)) * 4)
    torch.save(build_model("nn4small2", 64), tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    for name, what in (("notes.txt", "not a PyTorch file"), ("noise.pt", "not a PyTorch file"),
                       ("legacy.pt", "a PyTorch file holding more than tensors"),
                       ("empty.pt", "an empty file"), ("cut.pt", "a truncated or damaged PyTorch file"),
                       ("whole.pt", "a PyTorch file holding more than tensors")):
        with pytest.raises(ModelError) as exc:
            load_checkpoint(tmp_path / name)
        msg = str(exc.value)
        assert msg.startswith(f"{tmp_path / name} is not a readable morphgen checkpoint ({what}") and "\n" not in msg
        assert msg.endswith("give a run folder of `morphgen train` or its checkpoint.pt"), msg


def test_checkpoint_wrong_architecture_and_garbage(tmp_path):
    m = build_model("nn4small2", 64)
    save_checkpoint({"arch": "nn4small2", "input_size": 64, "template": "openface", "embedding_size": 128,
                     "step": 1, "model": m.state_dict(), "head": None, "classes": ["a"], "config": {}}, tmp_path / "c.pt")
    ck = load_checkpoint(tmp_path / "c.pt")
    with pytest.raises(ModelError, match="nn4small2.*iresnet18"):
        load_backbone_state(build_model("iresnet18"), ck, "iresnet18", tmp_path / "c.pt")
    load_backbone_state(build_model("nn4small2", 96), ck, "nn4small2", tmp_path / "c.pt")  # any size fits NN4
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="not a readable"):
        load_checkpoint(tmp_path / "bad.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ModelError, match="not a morphgen"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(ModelError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing")
