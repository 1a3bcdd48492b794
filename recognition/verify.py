"""Held-out verification during training: seeded genuine/impostor pairs of labelled
embeddings, accuracy at the best threshold (no 10-fold protocol) and ROC AUC. Scores are
cosine similarities; thresholds and AUC come from ``recognition.evaluation.metrics``, the
one implementation the evaluation protocols use too."""
from __future__ import annotations

import numpy as np

from .evaluation.metrics import best_threshold, score_auc


def make_pairs(labels, n_pairs: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Up to n_pairs/2 genuine pairs and exactly as many impostor pairs (i, j, same), so
    chance accuracy is 0.5; sampled without repeats. (Without any genuine pair, n_pairs/2
    impostor pairs.) Identities with one image give only impostor pairs."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    half = n_pairs // 2
    by = {c: np.nonzero(labels == c)[0] for c in np.unique(labels)}
    multi = [c for c, m in by.items() if len(m) >= 2]
    gen: set[tuple[int, int]] = set()
    n_gen_possible = sum(len(by[c]) * (len(by[c]) - 1) // 2 for c in multi)
    while multi and len(gen) < min(half, n_gen_possible):
        m = by[multi[rng.integers(len(multi))]]
        i, j = rng.choice(m, 2, replace=False)
        gen.add((min(i, j), max(i, j)))
    imp: set[tuple[int, int]] = set()
    n = len(labels)
    n_imp = len(gen) if gen else half
    if len(by) >= 2:
        tries = 0
        while len(imp) < n_imp and tries < 50 * half:
            i, j = rng.integers(n, size=2)
            tries += 1
            if labels[i] != labels[j]:
                imp.add((min(i, j), max(i, j)))
    pairs = sorted(gen) + sorted(imp)
    i = np.array([p[0] for p in pairs], np.int64)
    j = np.array([p[1] for p in pairs], np.int64)
    same = np.array([True] * len(gen) + [False] * len(imp))
    return i, j, same


def verification(emb: np.ndarray, labels, n_pairs: int = 1000, seed: int = 0) -> dict:
    """Accuracy at the best threshold, threshold, AUC and pair counts for embeddings `emb`."""
    emb = np.asarray(emb, np.float64)
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    i, j, same = make_pairs(labels, n_pairs, seed)
    if len(i) == 0:
        return {"accuracy": float("nan"), "threshold": float("nan"), "auc": float("nan"), "pairs": 0, "genuine": 0}
    scores = (emb[i] * emb[j]).sum(1)
    thr, acc = best_threshold(scores, same)
    return {"accuracy": acc, "threshold": thr, "auc": score_auc(scores, same), "pairs": int(len(i)),
            "genuine": int(same.sum())}
