"""Losses: semi-hard triplet mining against a naive B^3 reference, margin heads with soft
labels, identity mixup and domain mixup targets."""
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recognition.losses import MarginHead, domain_mixup, soft_targets, triplet_semihard_loss


def naive_semihard(emb: np.ndarray, labels: np.ndarray, margin: float) -> float:
    """Loop over every (anchor, positive) and every candidate negative."""
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    d = np.maximum(2 - 2 * e @ e.T, 0)
    losses = []
    for a, p in itertools.permutations(range(len(labels)), 2):
        if labels[a] != labels[p]:
            continue
        negs = [n for n in range(len(labels)) if labels[n] != labels[a]]
        if not negs:
            continue
        semi = [d[a, n] for n in negs if d[a, n] > d[a, p]]
        d_neg = min(semi) if semi else max(d[a, n] for n in negs)
        losses.append(max(d[a, p] - d_neg + margin, 0.0))
    return float(np.mean(losses))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_triplet_semihard_matches_naive_reference(seed):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(5), 4)
    emb = rng.normal(size=(20, 8)) + 1.5 * rng.normal(size=(5, 8))[labels]
    got = triplet_semihard_loss(torch.tensor(emb, dtype=torch.float64), torch.tensor(labels), 0.2)
    assert float(got) == pytest.approx(naive_semihard(emb, labels, 0.2), rel=1e-5, abs=1e-7)


def test_triplet_gradient_flows_and_single_class_batches_are_zero():
    emb = torch.randn(12, 16, requires_grad=True)
    labels = torch.arange(12) // 3
    triplet_semihard_loss(emb, labels).backward()
    assert emb.grad is not None and torch.isfinite(emb.grad).all()
    same = triplet_semihard_loss(torch.randn(6, 4, requires_grad=True), torch.zeros(6, dtype=torch.long))
    assert float(same.detach()) == 0.0
    same.backward()  # still differentiable


def test_triplet_loss_zero_when_classes_are_separated():
    labels = torch.arange(8) // 2
    emb = F.one_hot(labels, 4).float() + 0.01 * torch.randn(8, 4)
    assert float(triplet_semihard_loss(emb, labels, 0.2)) == 0.0


@pytest.mark.parametrize("loss", ["arcface", "cosface"])
@torch.no_grad()
def test_soft_label_loss_is_weighted_sum_of_hard_losses(loss):
    torch.manual_seed(0)
    head = MarginHead.build(loss, 16, 7, s=30.0)
    emb = torch.randn(5, 16)
    ids = torch.tensor([[0, 3], [1, -1], [4, 6], [2, 5], [6, 0]])
    w = torch.tensor([[0.7, 0.3], [1.0, 0.0], [0.55, 0.45], [0.9, 0.1], [0.5, 0.5]])
    soft = head(emb, soft_targets(ids, w, 7))
    expected = 0.0
    for i in range(5):
        for j in range(2):
            if ids[i, j] >= 0 and w[i, j] > 0:
                expected += w[i, j] * head(emb[i:i + 1], ids[i, j:j + 1])
    assert float(soft) == pytest.approx(float(expected) / 5, rel=1e-5)


@torch.no_grad()
def test_arcface_hard_label_matches_formula():
    torch.manual_seed(1)
    head = MarginHead.build("arcface", 8, 4, s=64.0, margin=0.5)
    emb, y = torch.randn(3, 8), torch.tensor([0, 2, 3])
    cos = F.normalize(emb) @ F.normalize(head.weight).t()
    logits = cos.clone()
    for i, c in enumerate(y):
        theta = torch.acos(cos[i, c])
        logits[i, c] = torch.cos(theta + 0.5) if theta + 0.5 <= np.pi else cos[i, c] - 0.5 * np.sin(0.5)
    assert float(head(emb, y)) == pytest.approx(float(F.cross_entropy(64 * logits, y)), rel=1e-5)
    cosface = MarginHead.build("cosface", 8, 4, s=64.0)
    cosface.weight.data.copy_(head.weight.data)
    ref = cos.clone()
    ref[torch.arange(3), y] -= 0.35
    assert float(cosface(emb, y)) == pytest.approx(float(F.cross_entropy(64 * ref, y)), rel=1e-5)


def test_soft_targets_and_domain_mixup():
    ids = torch.tensor([[1, 2], [0, -1]])
    w = torch.tensor([[0.8, 0.2], [1.0, 0.0]])
    t = soft_targets(ids, w, 3)
    assert torch.allclose(t, torch.tensor([[0.0, 0.8, 0.2], [1.0, 0.0, 0.0]]))

    xs, xr = torch.full((2, 3, 4, 4), 200.0), torch.full((2, 3, 4, 4), 100.0)
    ys = t                                      # synthetic: soft labels over 3 classes
    yr = torch.tensor([1, 0])                   # real: hard labels over 2 classes
    x, y = domain_mixup((xs, ys), (xr, yr), 0.7, num_real_classes=2)
    assert torch.allclose(x, torch.full_like(x, 0.7 * 200 + 0.3 * 100))
    assert y.shape == (2, 5)                    # real classes appended after synthetic ones
    assert torch.allclose(y[0], torch.tensor([0, 0.56, 0.14, 0, 0.3]))
    assert torch.allclose(y[1], torch.tensor([0.7, 0, 0, 0.3, 0]))
    assert torch.allclose(y.sum(1), torch.ones(2))
    # per-sample psi
    x, y = domain_mixup((xs, ys), (xr, yr), torch.tensor([1.0, 0.0]), num_real_classes=2)
    assert torch.allclose(x[0], xs[0]) and torch.allclose(x[1], xr[1])
    assert torch.allclose(y[1], torch.tensor([0, 0, 0, 1.0, 0]))


@torch.no_grad()
def test_domain_mixup_loss_is_mixture_of_domain_losses():
    torch.manual_seed(2)
    head = MarginHead.build("arcface", 8, 5, s=16.0)
    emb = torch.randn(4, 8)
    _, y = domain_mixup((torch.zeros(4, 3, 2, 2), torch.tensor([0, 1, 2, 0])),
                        (torch.zeros(4, 3, 2, 2), torch.tensor([1, 0, 1, 1])), 0.6, 3, 2)
    mixed = head(emb, y)
    syn = head(emb, torch.tensor([0, 1, 2, 0]))
    real = head(emb, torch.tensor([1, 0, 1, 1]) + 3)
    assert float(mixed) == pytest.approx(0.6 * float(syn) + 0.4 * float(real), rel=1e-5)


def test_margin_head_under_bf16_autocast():
    """Autocast makes the cosines bf16; the margin is applied in fp32 (this crashed on a GPU)."""
    torch.manual_seed(0)
    head = MarginHead.build("arcface", 16, 10)
    emb, y = torch.randn(8, 16), torch.arange(8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = head(emb, y)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert abs(loss.item() - head(emb, y).item()) < 0.05 * head(emb, y).item()


def test_margin_warm_up_scales_the_margin():
    torch.manual_seed(0)
    head = MarginHead.build("arcface", 16, 10)
    emb, y = torch.randn(8, 16), torch.arange(8)
    full = head(emb, y)
    head.warm(0.0)
    plain = F.cross_entropy(head.s * head.cosine(emb), y)
    assert torch.allclose(head(emb, y), plain, atol=1e-4) and plain < full
    head.warm(1.0)
    assert torch.allclose(head(emb, y), full)
    cos = MarginHead.build("cosface", 16, 10, margin=0.4)
    cos.warm(0.5)
    assert cos.m3 == pytest.approx(0.2) and cos.m2 == 0.0
