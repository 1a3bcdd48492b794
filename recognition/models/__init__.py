"""Embedding networks. Every model maps (B, 3, S, S) float images, scaled as
(pixel - 127.5) / 128, to (B, D) embeddings:

| arch | input S | D | template | source |
|---|---|---|---|---|
| nn4small2 | 96 | 128 | openface | OpenFace nn4.small2 (FaceNet NN4 small) |
| inception_resnet_v1 | 160 | 512 | arcface | facenet-pytorch module file, random init |
| iresnet18 / iresnet50 | 112 | 512 | arcface | insightface arcface_torch layout |
"""
from __future__ import annotations

import torch
from torch import nn

from morphgen.errors import ConfigError

from .iresnet import iresnet18, iresnet50
from .nn4small2 import NN4Small2

# arch -> (default input size, embedding size, alignment template)
ARCHS: dict[str, tuple[int, int, str]] = {
    "nn4small2": (96, 128, "openface"),
    "inception_resnet_v1": (160, 512, "arcface"),
    "iresnet18": (112, 512, "arcface"),
    "iresnet50": (112, 512, "arcface"),
}

# Input sizes a network takes: below the minimum its stride-2 layers run out of pixels
# (Inception-ResNet-v1's last 3x3 convolutions need 75); above 1024 no face crop needs.
_MIN_INPUT = {"inception_resnet_v1": 75}
MAX_INPUT = 1024


def min_input_size(arch: str) -> int:
    return _MIN_INPUT.get(arch, 16)


def build_model(arch: str, input_size: int | None = None) -> nn.Module:
    """A randomly initialised embedding network of `arch` (see ARCHS)."""
    if arch not in ARCHS:
        raise ConfigError(f"unknown arch {arch!r}: use one of {', '.join(ARCHS)}")
    size = input_size or ARCHS[arch][0]
    if arch == "nn4small2":
        net = NN4Small2()
    elif arch == "inception_resnet_v1":
        from .inception_resnet_v1 import inception_resnet_v1
        net = inception_resnet_v1()
    else:
        net = (iresnet18 if arch == "iresnet18" else iresnet50)(input_size=size)
    net.arch, net.input_size = arch, size
    return net


def to_device(model: nn.Module, device: str | torch.device) -> nn.Module:
    """`model` moved to `device`; on CUDA in channels-last layout, and cuDNN autotuning
    switched on for the process (``torch.backends.cudnn.benchmark``: the input sizes of
    training and embedding are fixed, so the one-time search pays off).

    cuDNN's bf16 tensor-core convolutions work in NHWC: a model left in NCHW pays a layout
    transpose around every convolution (IResNet-18 trained 2.8x faster on an H200).
    `recognition.data.to_input` hands CUDA inputs over in the same layout."""
    model = model.to(device)
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.benchmark = True
        model = model.to(memory_format=torch.channels_last)
    return model
