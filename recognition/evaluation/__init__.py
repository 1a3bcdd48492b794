"""Evaluation protocols for trained morphgen recognition runs.

| module | protocol | entry point |
|---|---|---|
| ``metrics`` | cosine scores, ROC / AUC, TAR@FAR, best threshold, LFW 10-fold accuracy | ``kfold_accuracy``, ``tar_at_far``, ``roc_curve`` |
| ``lfw`` | LFW View 2 (pairs.txt, 10 folds) | ``evaluate_lfw`` |
| ``ijba`` | IJB-A 1:1 template verification, mean and softmax pooling | ``evaluate_ijba`` |
| ``multipie`` | accuracy per probe yaw vs a frontal gallery (Multi-PIE, morphgen renders, CSV) | ``evaluate_pose`` |
| ``synthetic`` | rendered held-out identities: per-yaw and per-light accuracy | ``evaluate_synthetic`` |
| ``report`` | result.json, summary.md, ROC PNG/CSV, per-bin plots | |

Every evaluation writes ``result.json`` and ``summary.md`` into its output folder. The
CLI is ``morphgen eval {lfw,ijba,pose,synthetic}`` (``cli/eval_cmd.py``).
"""
from .ijba import evaluate_ijba
from .lfw import evaluate_lfw, read_pairs
from .multipie import evaluate_pose, load_pose_data
from .synthetic import evaluate_synthetic

__all__ = ["evaluate_lfw", "read_pairs", "evaluate_ijba", "evaluate_pose", "load_pose_data", "evaluate_synthetic"]
