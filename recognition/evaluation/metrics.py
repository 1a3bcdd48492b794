"""Verification metrics on cosine similarities of L2-normalised embeddings: the one
implementation of thresholds, ROC, AUC, EER and TAR@FAR in morphgen (the trainer's
held-out check in ``recognition.verify`` uses it too).

Conventions used throughout ``recognition.evaluation``:

- a pair is accepted as "same identity" when its score is **strictly greater** than the
  threshold (``score > t``); ROC points are listed for every distinct score, so the ROC
  at threshold ``t`` counts scores ``>= t`` (the usual ROC convention, as in sklearn);
- ``best_threshold`` tries a threshold below all scores, one above all scores and the
  midpoints between consecutive distinct scores, so tied scores are never split; among
  thresholds of equal accuracy it picks the **highest** (the strictest), like the
  FaceNet / insightface LFW code that takes the first maximum over increasing distances;
- ``kfold_accuracy`` is the LFW View 2 protocol: for each fold k the threshold that
  maximises accuracy on the other folds is applied to fold k; the result is the mean and
  the population standard deviation (``ddof=0``, as numpy's ``np.std`` in the FaceNet and
  insightface reference code) of the per-fold accuracies;
- ``tar_at_far`` is **not interpolated**: the threshold is the highest impostor score that
  leaves at most ``floor(FAR * n_impostors)`` impostors strictly above it, i.e. the most
  permissive threshold whose false accept rate is <= the target; TAR is the share of
  genuine scores strictly above it. With fewer than ``1 / FAR`` impostors the estimate
  rests on no impostor at all and is flagged ``reliable: false``.
"""
from __future__ import annotations

import math

import numpy as np

FARS = (0.1, 0.01, 0.001)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def cosine_scores(emb: np.ndarray, i, j) -> np.ndarray:
    """Cosine similarity of rows i[k] and j[k] of `emb` (re-normalised, so any embeddings do)."""
    e = l2_normalize(emb)
    i, j = np.asarray(i, np.int64), np.asarray(j, np.int64)
    return (e[i] * e[j]).sum(1)


def _check(scores, same) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, np.float64).reshape(-1)
    y = np.asarray(same, bool).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"{len(s)} scores but {len(y)} labels")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite (drop unscorable pairs first)")
    return s, y


def accuracy_at(scores, same, threshold: float) -> float:
    """Share of pairs where ``score > threshold`` equals the label."""
    s, y = _check(scores, same)
    return float(np.mean((s > threshold) == y)) if len(s) else float("nan")


def best_threshold(scores, same) -> tuple[float, float]:
    """(threshold, accuracy): the threshold maximising the accuracy of ``score > t`` on
    these pairs (see the module notes for the candidates and the tie rule)."""
    s, y = _check(scores, same)
    if len(s) == 0:
        return float("nan"), float("nan")
    u = np.unique(s)
    cands = np.concatenate([[u[0] - 1.0], (u[:-1] + u[1:]) / 2.0, [u[-1] + 1.0]])
    gen, imp = np.sort(s[y]), np.sort(s[~y])
    accepted_gen = len(gen) - np.searchsorted(gen, cands, side="right")
    rejected_imp = np.searchsorted(imp, cands, side="right")
    acc = (accepted_gen + rejected_imp) / len(s)
    k = len(acc) - 1 - int(np.argmax(acc[::-1]))  # the highest threshold among the maxima
    return float(cands[k]), float(acc[k])


def kfold_accuracy(scores, same, folds) -> dict:
    """LFW-style cross-validated accuracy. `folds` gives each pair's fold label. With a
    single fold there is nothing to cross-validate: the best threshold on that fold is
    used (optimistic, flagged by ``cross_validated: false``).

    Returns accuracy (mean over folds), std (ddof=0), per-fold accuracies, thresholds and
    pair counts, and ``correct`` (bool per pair, under its own fold's threshold)."""
    s, y = _check(scores, same)
    folds = np.asarray(folds).reshape(-1)
    labels = [f for f in np.unique(folds)]
    correct = np.zeros(len(s), bool)
    accs, thrs, counts = [], [], []
    for f in labels:
        test = folds == f
        train = ~test if len(labels) > 1 else test
        thr, _ = best_threshold(s[train], y[train])
        correct[test] = (s[test] > thr) == y[test]
        accs.append(float(correct[test].mean()))
        thrs.append(thr)
        counts.append(int(test.sum()))
    accs_a = np.asarray(accs)
    return {"accuracy": float(accs_a.mean()) if len(accs) else float("nan"),
            "std": float(accs_a.std()) if len(accs) else float("nan"),
            "fold_accuracies": accs, "fold_thresholds": thrs, "fold_pairs": counts,
            "folds": [int(f) if isinstance(f, (int, np.integer)) else str(f) for f in labels],
            "cross_validated": len(labels) > 1, "correct": correct}


def roc_curve(scores, same) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds): one point per distinct score, thresholds decreasing; point k
    counts scores >= thresholds[k]. The first point is (0, 0) at a threshold above all."""
    s, y = _check(scores, same)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1] if len(s) else np.zeros(0, np.int64)
    tp = np.cumsum(y)[last] if len(s) else np.zeros(0)
    fp = (last + 1) - tp
    tpr = np.r_[0.0, tp / n_pos] if n_pos else np.r_[0.0, np.full(len(last), np.nan)]
    fpr = np.r_[0.0, fp / n_neg] if n_neg else np.r_[0.0, np.full(len(last), np.nan)]
    top = s[0] + 1.0 if len(s) else 1.0
    return fpr, tpr, np.r_[top, s[last]]


def auc(fpr, tpr) -> float:
    """Trapezoidal area under an ROC curve (equals the Mann-Whitney AUC, the chance that a
    genuine pair outscores an impostor pair, with ties counted half)."""
    fpr, tpr = np.asarray(fpr, np.float64), np.asarray(tpr, np.float64)
    if len(fpr) < 2 or not np.isfinite(fpr).all() or not np.isfinite(tpr).all():
        return float("nan")
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def score_auc(scores, same) -> float:
    """AUC of one scored pair list (NaN without genuine or impostor pairs)."""
    fpr, tpr, _ = roc_curve(scores, same)
    return auc(fpr, tpr)


def eer(fpr, tpr) -> float:
    """Equal error rate: the false accept rate where it equals the false reject rate
    (1 - TPR), linearly interpolated between the two ROC points around the crossing."""
    fpr, tpr = np.asarray(fpr, np.float64), np.asarray(tpr, np.float64)
    if len(fpr) < 2 or not np.isfinite(fpr).all() or not np.isfinite(tpr).all():
        return float("nan")
    d = fpr - (1.0 - tpr)              # rises from -1 at (0, 0) to +1 at (1, 1)
    k = int(np.argmax(d >= 0))
    if k == 0:
        return float(fpr[0])
    t = d[k - 1] / (d[k - 1] - d[k])
    return float(fpr[k - 1] + t * (fpr[k] - fpr[k - 1]))


def contiguous_folds(n: int, k: int = 10) -> np.ndarray:
    """Fold label of each of `n` pairs split into `k` contiguous folds, the first n % k
    folds one pair larger (sklearn's ``KFold(k, shuffle=False)``, which insightface's
    verification code uses for its .bin files)."""
    k = max(1, min(k, n))
    sizes = np.full(k, n // k) + (np.arange(k) < n % k)
    return np.repeat(np.arange(k), sizes)


def tar_at_far(scores, same, far: float) -> dict:
    """True accept rate at a false accept rate <= `far` (no interpolation; see the module
    notes). Returns far (target), tar, threshold, far_achieved, impostors, reliable."""
    s, y = _check(scores, same)
    gen, imp = s[y], np.sort(s[~y])[::-1]
    out = {"far": far, "tar": float("nan"), "threshold": float("nan"), "far_achieved": float("nan"),
           "impostors": int(len(imp)), "reliable": bool(len(imp) * far >= 1.0)}
    if len(imp) == 0 or len(gen) == 0:
        return out
    k = int(math.floor(far * len(imp) + 1e-9))  # impostors that may be accepted
    thr = float(imp[k]) if k < len(imp) else float(imp[-1] - 1.0)
    out.update(tar=float(np.mean(gen > thr)), threshold=thr, far_achieved=float(np.mean(imp > thr)))
    return out


def verification_metrics(scores, same, fars=FARS) -> dict:
    """AUC, best-threshold accuracy (not cross-validated) and TAR at each FAR of one pair set."""
    s, y = _check(scores, same)
    fpr, tpr, _ = roc_curve(s, y)
    thr, acc = best_threshold(s, y)
    return {"pairs": int(len(s)), "genuine": int(y.sum()), "impostor": int((~y).sum()),
            "auc": auc(fpr, tpr), "eer": eer(fpr, tpr), "best_accuracy": acc, "best_threshold": thr,
            "tar_at_far": {f"{f:g}": tar_at_far(s, y, f) for f in fars},
            "genuine_mean": float(s[y].mean()) if y.any() else float("nan"),
            "impostor_mean": float(s[~y].mean()) if (~y).any() else float("nan")}


def mean_std(values) -> dict:
    """{"mean", "std" (ddof=0), "n"} over the finite values."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
    return {"mean": float(v.mean()) if len(v) else float("nan"),
            "std": float(v.std()) if len(v) else float("nan"), "n": int(len(v))}


def binned_accuracy(correct, scores, same, bins) -> dict:
    """Per bin label: pairs, genuine, accuracy (share of `correct`, i.e. under each pair's
    cross-validated fold threshold) and AUC within the bin. Keys are str(bin)."""
    correct = np.asarray(correct, bool)
    s, y = _check(scores, same)
    bins = np.asarray(bins, dtype=object)
    out = {}
    for b in _sorted_bins(set(bins.tolist())):
        m = np.array([x == b for x in bins], bool)
        fpr, tpr, _ = roc_curve(s[m], y[m])
        out[str(b)] = {"bin": b, "pairs": int(m.sum()), "genuine": int(y[m].sum()),
                       "accuracy": float(correct[m].mean()), "auc": auc(fpr, tpr)}
    return out


def _sorted_bins(values):
    def key(v):
        if isinstance(v, (int, float, np.integer, np.floating)):
            return (0, float(v), "")
        if isinstance(v, tuple):
            return (1, 0.0, tuple(float(x) if isinstance(x, (int, float)) else 0.0 for x in v))
        return (2, 0.0, str(v))
    return sorted(values, key=key)


def cross_validated(scores, same, folds, fars=FARS) -> dict:
    """The full verification result of one pair list split into folds: cross-validated
    accuracy (``kfold_accuracy``), AUC / EER / TAR@FAR on all pairs, AUC and EER per fold
    (with their mean ± std, as the CFP paper reports them), genuine and impostor mean
    scores, and ``correct`` per pair (under its fold's threshold)."""
    s, y = _check(scores, same)
    folds = np.asarray(folds).reshape(-1)
    cv = kfold_accuracy(s, y, folds)
    overall = verification_metrics(s, y, fars)
    per_fold = []
    for f, acc, thr, n in zip(cv["folds"], cv["fold_accuracies"], cv["fold_thresholds"], cv["fold_pairs"]):
        m = folds == f
        fpr, tpr, _ = roc_curve(s[m], y[m])
        per_fold.append({"fold": f, "accuracy": acc, "threshold": thr, "pairs": n, "genuine": int(y[m].sum()),
                         "auc": auc(fpr, tpr), "eer": eer(fpr, tpr)})
    return {"accuracy": {"mean": cv["accuracy"], "std": cv["std"], "cross_validated": cv["cross_validated"]},
            "auc": overall["auc"], "eer": overall["eer"],
            "auc_folds": mean_std([p["auc"] for p in per_fold]), "eer_folds": mean_std([p["eer"] for p in per_fold]),
            "tar_at_far": overall["tar_at_far"], "pairs": overall["pairs"], "genuine": overall["genuine"],
            "genuine_mean_score": overall["genuine_mean"], "impostor_mean_score": overall["impostor_mean"],
            "folds": per_fold, "correct": cv["correct"]}
