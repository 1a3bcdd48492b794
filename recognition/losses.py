"""Losses for embedding training, all in one place (as insightface's ``losses.py``).

- ``triplet_semihard_loss``: FaceNet triplet loss with online semi-hard negative mining,
  evaluated over anchor-positive pairs (never a B x B x B mask).
- ``MarginHead``: ArcFace / CosFace / combined-margin softmax head that takes soft labels.
- ``soft_targets`` and ``domain_mixup``: build the (B, C) label-weight matrices that identity
  mixup and synthetic/real domain mixup need.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def triplet_semihard_loss(emb: torch.Tensor, labels: torch.Tensor, margin: float = 0.2) -> torch.Tensor:
    """Mean over all anchor-positive pairs (a, p) of max(0, d(a,p) - d(a,n) + margin), with
    d the squared distance on the unit sphere (2 - 2 cos).

    The negative n is semi-hard: the closest negative that is still farther from the
    anchor than the positive; where none exists, the farthest negative (as TensorFlow's
    ``triplet_semihard_loss``). Costs O(pairs x B), not O(B^3)."""
    emb = F.normalize(emb.float(), dim=1)
    d = (2.0 - 2.0 * emb @ emb.t()).clamp_min(0.0)
    same = labels[:, None] == labels[None, :]
    a, p = torch.nonzero(same & ~torch.eye(len(labels), dtype=torch.bool, device=emb.device), as_tuple=True)
    neg = ~same[a]                                   # (pairs, B)
    keep = neg.any(1)
    a, p, neg = a[keep], p[keep], neg[keep]
    if len(a) == 0:
        return emb.sum() * 0.0
    d_ap = d[a, p]
    d_an = d[a]
    semi = neg & (d_an > d_ap[:, None])
    big = torch.finfo(d.dtype).max
    closest_semi = torch.where(semi, d_an, torch.full_like(d_an, big)).min(1).values
    farthest = torch.where(neg, d_an, torch.full_like(d_an, -big)).max(1).values
    d_neg = torch.where(semi.any(1), closest_semi, farthest)
    return F.relu(d_ap - d_neg + margin).mean()


class MarginHead(nn.Module):
    """Combined-margin softmax (insightface): the target logit is s * (cos(m1*theta + m2) - m3).
    ArcFace: m1=1, m2=0.5, m3=0. CosFace: m1=1, m2=0, m3=0.35. s = 64 by default.

    ``forward(emb, targets)`` takes hard labels (B,) or soft targets (B, C) (rows of
    non-negative weights, usually summing to 1) and returns
        mean_i sum_k w_ik * CE(logits_i with the margin applied to class k, k),
    so a sample labelled phi*A + (1-phi)*B costs phi*CE_A + (1-phi)*CE_B, each with its
    own margin."""

    def __init__(self, embedding_size: int, num_classes: int, s: float = 64.0,
                 m1: float = 1.0, m2: float = 0.5, m3: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.normal_(self.weight, std=0.01)
        self.s, self.m1, self.m2, self.m3 = s, m1, m2, m3
        self._full_margins = (m2, m3)

    def warm(self, fraction: float) -> None:
        """Set the additive margins (m2, m3) to `fraction` of their full values. A margin
        warm-up lets a head over many classes from scratch separate them before the full
        penalty applies (the online recipe's ArcFace stalls without it)."""
        self.m2, self.m3 = (m * fraction for m in self._full_margins)

    @classmethod
    def build(cls, loss: str, embedding_size: int, num_classes: int, s: float | None = None,
              margin: float | None = None) -> "MarginHead":
        if loss == "arcface":
            return cls(embedding_size, num_classes, s or 64.0, 1.0, 0.5 if margin is None else margin, 0.0)
        if loss == "cosface":
            return cls(embedding_size, num_classes, s or 64.0, 1.0, 0.0, 0.35 if margin is None else margin)
        raise ValueError(loss)

    def cosine(self, emb: torch.Tensor) -> torch.Tensor:
        return F.normalize(emb.float(), dim=1) @ F.normalize(self.weight.float(), dim=1).t()

    def target_logit(self, cos: torch.Tensor) -> torch.Tensor:
        """cos(m1*theta + m2) - m3, falling back to a linear penalty where the angle would pass pi."""
        if self.m1 == 1.0 and self.m2 == 0.0:
            return cos - self.m3
        theta = torch.acos(cos.clamp(-1 + 1e-7, 1 - 1e-7))
        ang = self.m1 * theta + self.m2
        return torch.where(ang <= math.pi, torch.cos(ang), cos - self.m2 * math.sin(self.m2)) - self.m3

    def forward(self, emb: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        cos = self.cosine(emb)
        if targets.dim() == 1:
            rows, cls_k = torch.arange(len(targets), device=cos.device), targets.long()
            w = torch.ones(len(targets), device=cos.device)
        else:
            rows, cls_k = torch.nonzero(targets > 0, as_tuple=True)
            w = targets[rows, cls_k].float()
        logits = cos[rows].float()                     # one row per (sample, labelled class); fp32 under autocast
        r = torch.arange(len(rows), device=cos.device)
        logits[r, cls_k] = self.target_logit(logits[r, cls_k])
        ce = F.cross_entropy(self.s * logits, cls_k, reduction="none")
        return (w * ce).sum() / len(cos)


def soft_targets(ids: torch.Tensor, weights: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, C) target weights from (B, J) class ids and weights (id -1 = unused slot)."""
    t = torch.zeros(len(ids), num_classes, device=weights.device, dtype=torch.float32)
    ok = ids >= 0
    rows = torch.arange(len(ids), device=ids.device)[:, None].expand_as(ids)
    t.index_put_((rows[ok], ids[ok].long()), weights[ok].float(), accumulate=True)
    return t


def domain_mixup(batch_syn, batch_real, psi, num_syn_classes: int | None = None,
                 num_real_classes: int | None = None):
    """Domain mixup (SynFace): pixels psi * synthetic + (1 - psi) * real, labels mixed the same
    way over the joint label space in which the real classes follow the synthetic ones.

    `batch_syn` / `batch_real` = (images (B, 3, H, W), labels), labels either hard (B,) class
    ids (then give the class counts) or soft (B, C) weights. `psi` is a float or a (B,)
    tensor. Returns (mixed images, (B, C_syn + C_real) soft targets)."""
    xs, ys = batch_syn
    xr, yr = batch_real
    if ys.dim() == 1:
        ys = F.one_hot(ys.long(), num_syn_classes).float()
    if yr.dim() == 1:
        yr = F.one_hot(yr.long(), num_real_classes).float()
    psi = torch.as_tensor(psi, dtype=torch.float32, device=xs.device)
    pw = psi.reshape(-1, 1) if psi.dim() else psi
    pi = psi.reshape(-1, 1, 1, 1) if psi.dim() else psi
    mixed = pi * xs.float() + (1 - pi) * xr.float()
    return mixed, torch.cat([pw * ys.float(), (1 - pw) * yr.float()], 1)
