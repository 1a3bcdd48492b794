"""Metrics on hand-computed cases: LFW-style k-fold accuracy, TAR@FAR, ROC/AUC, template
pooling, and the seeded gallery/probe pair draw."""
import math

import numpy as np
import pytest

from morphgen.errors import ConfigError
from recognition.evaluation import metrics
from recognition.evaluation.common import gallery_probe_pairs, parse_splits
from recognition.evaluation.ijba import mean_pool_score, softmax_pool_score


def test_kfold_accuracy_hand_computed():
    # 3 folds of 2 genuine + 2 impostor pairs.
    scores = [0.9, 0.6, 0.4, 0.1,      # fold 0
              0.8, 0.3, 0.5, 0.2,      # fold 1
              0.7, 0.65, 0.58, 0.56]   # fold 2
    same = [1, 1, 0, 0] * 3
    folds = [0] * 4 + [1] * 4 + [2] * 4
    r = metrics.kfold_accuracy(scores, same, folds)
    # fold 0: train (folds 1, 2) sorted 0.8T .7T .65T | .58F .56F .5F .3T .2F -> best t = (.65+.58)/2,
    #   7/8 correct; on fold 0: .9 yes, .6 < .615 wrong, .4 .1 rejected -> 3/4
    # fold 1: train (0, 2) .9T .7T .65T .6T | .58F .56F .4F .1F -> t = .59 (8/8); fold 1: .3T wrong -> 3/4
    # fold 2: train (0, 1) .9T .8T .6T | .5F .4F .3T .2F .1F -> t = .55 (7/8); fold 2: .58F .56F accepted -> 2/4
    assert r["fold_thresholds"] == pytest.approx([0.615, 0.59, 0.55])
    assert r["fold_accuracies"] == pytest.approx([0.75, 0.75, 0.5])
    assert r["accuracy"] == pytest.approx(2 / 3)
    assert r["std"] == pytest.approx(math.sqrt(1 / 72))          # population std of (.75, .75, .5)
    assert r["cross_validated"] and r["fold_pairs"] == [4, 4, 4]
    assert r["correct"].tolist() == [1, 0, 1, 1, 1, 0, 1, 1, 1, 1, 0, 0]


def test_best_threshold_ties_and_strictness():
    # tied scores are never split; among equal accuracies the highest threshold wins
    thr, acc = metrics.best_threshold([0.5, 0.5, 0.5, 0.2], [1, 0, 1, 0])
    assert acc == pytest.approx(0.75) and thr == pytest.approx(0.35)
    thr, acc = metrics.best_threshold([0.9, 0.1], [0, 1])      # inverted: both thresholds outside give 1/2
    assert acc == 0.5 and thr == pytest.approx(1.9)            # the strictest (reject all)
    assert metrics.accuracy_at([0.6, 0.6], [1, 0], 0.6) == 0.5  # score > t, not >=


def test_single_fold_falls_back_to_best_threshold():
    r = metrics.kfold_accuracy([0.9, 0.2, 0.8, 0.1], [1, 0, 1, 0], [0, 0, 0, 0])
    assert not r["cross_validated"] and r["accuracy"] == 1.0


def test_tar_at_far_known_case():
    imp = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0]
    gen = [0.95, 0.85, 0.85, 0.5]
    s = np.r_[gen, imp]
    y = np.r_[[True] * 4, [False] * 10]
    r = metrics.tar_at_far(s, y, 0.1)       # 1 impostor may pass: threshold = 2nd-highest impostor 0.8
    assert r["threshold"] == pytest.approx(0.8) and r["tar"] == pytest.approx(0.75)
    assert r["far_achieved"] == pytest.approx(0.1) and r["reliable"]
    r = metrics.tar_at_far(s, y, 0.01)      # no impostor may pass: threshold = top impostor 0.9
    assert r["threshold"] == pytest.approx(0.9) and r["tar"] == pytest.approx(0.25)
    assert r["far_achieved"] == 0.0 and not r["reliable"]
    r = metrics.tar_at_far(s, y, 0.35)      # floor(3.5) = 3 impostors may pass: threshold 0.6
    assert r["threshold"] == pytest.approx(0.6) and r["tar"] == pytest.approx(0.75)
    # ties at the threshold are rejected with it: FAR stays <= target
    r = metrics.tar_at_far([0.9, 0.5, 0.5, 0.5, 0.1], [True, False, False, False, False], 0.5)
    assert r["far_achieved"] <= 0.5 and r["tar"] == 1.0


def test_roc_and_auc_match_rank_auc_with_ties():
    rng = np.random.default_rng(0)
    s = np.round(rng.normal(size=200), 1)          # many ties
    y = rng.random(200) < 0.4
    s[y] += 0.5
    fpr, tpr, thr = metrics.roc_curve(s, y)
    assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0) and np.all(np.diff(thr) < 0)
    brute = np.mean([(p > n) + 0.5 * (p == n) for p in s[y] for n in s[~y]])   # Mann-Whitney, ties half
    assert metrics.auc(fpr, tpr) == pytest.approx(brute)
    k = len(thr) // 2                               # point k counts scores >= thr[k]
    assert tpr[k] == pytest.approx(np.mean(s[y] >= thr[k])) and fpr[k] == pytest.approx(np.mean(s[~y] >= thr[k]))


def test_template_pooling():
    ea = np.array([[1.0, 0.0], [0.0, 1.0]])
    eb = np.array([[2.0, 0.0]])                       # not normalised: pooling normalises
    assert mean_pool_score(ea, eb) == pytest.approx(math.sqrt(0.5))
    # softmax pooling: the pairwise similarities are 1 and 0
    want = np.mean([(1 * math.exp(b) + 0) / (math.exp(b) + 1) for b in range(21)])
    assert softmax_pool_score(ea, eb) == pytest.approx(want)
    assert softmax_pool_score(ea, eb, betas=[0]) == pytest.approx(0.5)   # beta 0: plain mean of s
    a = np.array([[1.0, 0.0]])
    b = np.array([[math.cos(0.3), math.sin(0.3)], [math.cos(1.2), math.sin(1.2)]])
    s1, s2 = math.cos(0.3), math.cos(1.2)
    want = np.mean([(s1 * math.exp(k * s1) + s2 * math.exp(k * s2)) / (math.exp(k * s1) + math.exp(k * s2))
                    for k in range(21)])
    assert softmax_pool_score(a, b) == pytest.approx(want)
    assert (s1 + s2) / 2 < softmax_pool_score(a, b) < s1


def test_binned_accuracy_and_mean_std():
    b = metrics.binned_accuracy([1, 0, 1, 1], [0.9, 0.1, 0.8, 0.2], [1, 1, 1, 0], [-15.0, -15.0, 30.0, 30.0])
    assert list(b) == ["-15.0", "30.0"] and b["-15.0"]["accuracy"] == 0.5 and b["30.0"]["auc"] == 1.0
    assert metrics.mean_std([0.5, 0.7, float("nan")]) == {"mean": pytest.approx(0.6), "std": pytest.approx(0.1), "n": 2}


def test_gallery_probe_pairs_balanced_disjoint_seeded():
    ids = np.repeat([f"id{k}" for k in range(8)], 6)
    yaw = np.tile([0, 0, 30, 30, 60, 60], 8).astype(float)
    light = np.tile([0, 1, 0, 1, 0, 1], 8)
    probe = [y if y else None for y in yaw]
    p = gallery_probe_pairs(ids, yaw == 0, probe, light, folds=10, per_fold=6, seed=3)
    q = gallery_probe_pairs(ids, yaw == 0, probe, light, folds=10, per_fold=6, seed=3)
    assert np.array_equal(p.a, q.a) and np.array_equal(p.b, q.b)        # reproducible
    assert p.n_folds == 4 and p.identity_disjoint
    for f in range(p.n_folds):                                           # identity-disjoint folds
        m = p.fold == f
        others = set(ids[np.r_[p.a[~m], p.b[~m]]])
        assert not set(ids[np.r_[p.a[m], p.b[m]]]) & others
    assert np.all(yaw[p.a] == 0) and np.all(light[p.a] == light[p.b])  # frontal gallery, same light
    assert np.all((ids[p.a] == ids[p.b]) == p.same)
    for b in (30.0, 60.0):                                               # as many impostors as genuine per bin
        m = np.array([x == b for x in p.bins])
        assert p.same[m].sum() == (~p.same[m]).sum() > 0
    assert len({(int(a), int(b)) for a, b in zip(p.a, p.b)}) == len(p)   # no repeats


def test_gallery_probe_pairs_stay_balanced_with_few_identities():
    """Where impostor pairs run short (few identities, a light few galleries share), the
    genuine pairs of that bin and fold are cut to as many (eval pose scored 9 genuine
    against 2 impostors, and a fold of genuine pairs only at accuracy 1.0), and n_folds
    counts the folds that hold pairs (it said 10 where 4 did)."""
    rng = np.random.default_rng(0)
    for seed in range(20):
        n_ids = int(rng.integers(2, 6))
        ids = np.repeat([f"id{k}" for k in range(n_ids)], 6)
        yaw = np.tile([0, 0, 30, 30, 60, -60], n_ids).astype(float)
        light = rng.integers(0, 3, len(ids))
        probe = [y if y else None for y in yaw]
        p = gallery_probe_pairs(ids, yaw == 0, probe, light, folds=10, per_fold=20, seed=seed)
        assert p.n_folds == len(np.unique(p.fold))
        for b in set(p.bins):                     # every bin balanced
            m = np.array([x == b for x in p.bins])
            assert p.same[m].sum() == (~p.same[m]).sum(), (seed, b)
        for f in np.unique(p.fold):               # and every fold that holds pairs holds both kinds
            assert p.same[p.fold == f].any() and (~p.same[p.fold == f]).any(), (seed, f)


def test_parse_splits():
    assert parse_splits("1-10") == list(range(1, 11))
    assert parse_splits("1-3,7") == [1, 2, 3, 7]
    for bad in ("0-3", "11", "a", ""):
        with pytest.raises(ConfigError):
            parse_splits(bad)
