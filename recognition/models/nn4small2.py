"""FaceNet NN4.small2 as in OpenFace (`nn4.small2.def.lua`): 96x96 RGB in, 128-d L2-normalised
embedding out, about 3.7M parameters.

Inception modules follow dpnn's ``nn.Inception``: per kernel size a 1x1 reduction then a
k x k convolution (padding k // 2, stride per module), a pooling branch (max or L2 pooling,
optionally projected by a 1x1 convolution), and an optional 1x1 branch, each convolution
followed by batch norm and ReLU, concatenated along channels. dpnn's DepthConcat zero-pads
the unpadded L2-pooling output back to full size; here L2 pooling is padded instead. The
final 3x3 average pool is adaptive, so smaller inputs (e.g. 64 px) work too.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def conv_bn(cin: int, cout: int, k: int = 1, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class CrossMapLRN(nn.Module):
    """Local response normalisation across channels (Torch's SpatialCrossMapLRN:
    x / (k + alpha / size * sum of x^2 over `size` neighbouring channels) ^ beta), with
    the window sum done by a cumulative sum: several times faster on the CPU than
    ``nn.LocalResponseNorm``'s 3-D average pooling, same values."""

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x):
        sq = F.pad(x * x, (0, 0, 0, 0, self.size // 2 + 1, (self.size - 1) // 2))
        c = sq.cumsum(1)
        win = c[:, self.size:] - c[:, :-self.size]
        return x / (self.k + self.alpha / self.size * win).pow(self.beta)


class L2Pool(nn.Module):
    """Square root of summed squares over a 3x3 window (Torch's SpatialLPPooling, p = 2)."""

    def forward(self, x):
        return torch.sqrt(F.avg_pool2d(x * x, 3, 1, 1, count_include_pad=True) * 9 + 1e-6)


class Inception(nn.Module):
    def __init__(self, cin: int, kernels: list[int], stride: int, outs: list[int], reduce: list[int],
                 pool: str, pool_proj: int | None, one_by_one: int | None):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(conv_bn(cin, r, 1), conv_bn(r, o, k, stride)) for k, o, r in zip(kernels, outs, reduce))
        p = nn.MaxPool2d(3, stride, 1) if pool == "max" else L2Pool()
        self.pool = nn.Sequential(p, conv_bn(cin, pool_proj, 1)) if pool_proj else p
        self.one = conv_bn(cin, one_by_one, 1) if one_by_one else None

    def forward(self, x):
        out = [b(x) for b in self.branches] + [self.pool(x)]
        if self.one is not None:
            out.append(self.one(x))
        return torch.cat(out, 1)


class NN4Small2(nn.Module):
    input_size = 96
    embedding_size = 128

    def __init__(self, embedding_size: int = 128):
        super().__init__()
        self.embedding_size = embedding_size
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1), CrossMapLRN(5, 1e-4, 0.75),
            conv_bn(64, 64, 1), conv_bn(64, 192, 3),
            CrossMapLRN(5, 1e-4, 0.75), nn.MaxPool2d(3, 2, 1))
        self.inception_3a = Inception(192, [3, 5], 1, [128, 32], [96, 16], "max", 32, 64)
        self.inception_3b = Inception(256, [3, 5], 1, [128, 64], [96, 32], "l2", 64, 64)
        self.inception_3c = Inception(320, [3, 5], 2, [256, 64], [128, 32], "max", None, None)
        self.inception_4a = Inception(640, [3, 5], 1, [192, 64], [96, 32], "l2", 128, 256)
        self.inception_4e = Inception(640, [3, 5], 2, [256, 128], [160, 64], "max", None, None)
        self.inception_5a = Inception(1024, [3], 1, [384], [96], "l2", 96, 256)
        self.inception_5b = Inception(736, [3], 1, [384], [96], "max", 96, 256)
        self.fc = nn.Linear(736, embedding_size)

    def forward(self, x):
        x = self.stem(x)
        for m in (self.inception_3a, self.inception_3b, self.inception_3c, self.inception_4a,
                  self.inception_4e, self.inception_5a, self.inception_5b):
            x = m(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return F.normalize(self.fc(x), dim=1)
