"""Telling torch tensors from numpy arrays without importing torch.

Importing torch takes about 2 s, which every spawned worker of the CPU dataset path would
pay for nothing: the fused numba renderer never uses it. Functions that accept numpy or
torch therefore check with :func:`is_tensor` instead of ``isinstance(x, torch.Tensor)``,
and import torch only on their torch branch.
"""
from __future__ import annotations

import sys
from typing import Any


def is_tensor(x: Any) -> bool:
    """``isinstance(x, torch.Tensor)`` without importing torch: no tensor can exist before
    torch is imported, so while it is not in ``sys.modules`` the answer is False."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)
