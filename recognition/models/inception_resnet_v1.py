"""facenet-pytorch's InceptionResnetV1 (160x160 in, 512-d L2-normalised out), randomly
initialised. The class is taken from the module file in the installed wheel,
``facenet_pytorch/models/inception_resnet_v1.py``, compiled on its own: the package's
``__init__`` (which needs torchvision) is never imported, and the file's download helper
is replaced by one that refuses: its pretrained weights are a run-time download."""
from __future__ import annotations

import importlib.util
import types
from pathlib import Path

from morphgen.errors import ModelError

_MODULE: types.ModuleType | None = None


def _refuse_download(*_args, **_kwargs):
    raise ModelError("InceptionResnetV1 pretrained weights are a download and are not used here: "
                     "train from random init, or pass --init with a morphgen checkpoint")


def _facenet_module() -> types.ModuleType:
    global _MODULE
    if _MODULE is None:
        spec = importlib.util.find_spec("facenet_pytorch")
        path = Path(list(spec.submodule_search_locations)[0]) / "models" / "inception_resnet_v1.py" if spec else None
        if path is None or not path.is_file():
            raise ModelError("arch inception_resnet_v1 needs facenet-pytorch: `pip install --no-deps facenet-pytorch`")
        lines = []
        for line in path.read_text().splitlines():
            if line.startswith(("import requests", "from requests")):
                continue  # only used by the download helper
            if line.startswith("from .utils.download import"):
                line = "download_url_to_file = _refuse_download"
            lines.append(line)
        mod = types.ModuleType("facenet_inception_resnet_v1")
        mod._refuse_download = _refuse_download
        exec(compile("\n".join(lines), str(path), "exec"), mod.__dict__)
        _MODULE = mod
    return _MODULE


def inception_resnet_v1(dropout: float = 0.6):
    """A random-init InceptionResnetV1 embedding model (``classify=False``)."""
    net = _facenet_module().InceptionResnetV1(pretrained=None, classify=False, dropout_prob=dropout)
    net.input_size, net.embedding_size = 160, 512
    return net
