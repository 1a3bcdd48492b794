"""Evaluation protocols for trained morphgen recognition runs.

| module | protocol | entry point |
|---|---|---|
| ``metrics`` | cosine scores, ROC / AUC / EER, TAR@FAR, best threshold, k-fold accuracy | ``cross_validated``, ``kfold_accuracy`` |
| ``lfw`` | LFW View 2 (pairs.txt, 10 folds) | ``evaluate_lfw`` |
| ``cfp`` | CFP frontal-frontal and frontal-profile, official folds | ``evaluate_cfp`` |
| ``insightface_bin`` | insightface validation .bin files, read without executing pickles | ``evaluate_bins`` |
| ``pair_list`` | any "path1 path2 label [fold]" list | ``evaluate_pair_list`` |
| ``ijba`` | IJB-A 1:1 template verification, mean and softmax pooling | ``evaluate_ijba`` |
| ``pose`` | accuracy per probe yaw vs a frontal gallery (Multi-PIE, morphgen renders, CSV) | ``evaluate_pose`` |
| ``real_pairs`` | seeded pairs of a folder of real identities (ORL, Yale) | ``evaluate_real_pairs`` |
| ``synthetic`` | rendered held-out identities: per-yaw and per-light accuracy | ``evaluate_synthetic`` |
| ``common`` | embedding with alignment fall-backs, seeded gallery/probe pairs | ``embed_imageset`` |
| ``protocols`` | the registry experiments use: options, run, table columns | ``registry``, ``get`` |
| ``report`` | result.json, summary.md, ROC PNG/CSV, per-bin plots | |

Every evaluation writes ``result.json``, ``summary.md`` and ``roc.csv`` into its output
folder, and all but ``synthetic`` the scores of its pairs in ``scores.csv``. The CLI is ``morphgen eval {lfw,cfp,bin,pairs,ijba,pose,synthetic}``
(``cli/eval_cmd.py``); experiments name them with ``protocol:`` (``protocols.py``).
"""
from .cfp import evaluate_cfp
from .ijba import evaluate_ijba
from .insightface_bin import evaluate_bins
from .lfw import evaluate_lfw, read_pairs
from .pair_list import evaluate_pair_list
from .pose import evaluate_pose, load_pose_data
from .real_pairs import evaluate_real_pairs
from .synthetic import evaluate_synthetic

__all__ = ["evaluate_lfw", "read_pairs", "evaluate_cfp", "evaluate_bins", "evaluate_pair_list", "evaluate_ijba",
           "evaluate_pose", "load_pose_data", "evaluate_real_pairs", "evaluate_synthetic"]
