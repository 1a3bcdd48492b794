"""Run checkpoints: a dict of tensors and JSON-able values, saved atomically and read with
``torch.load(weights_only=True)``.

    {"format": "morphgen-recognition/1", "arch", "input_size", "template", "embedding_size",
     "step", "model": state_dict, "head": state_dict | None, "optimizer": state_dict | None,
     "scaler": state_dict | None, "classes": [identity names], "config": {...}, "rng": tensor}
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch

from morphgen.errors import ModelError

FORMAT = "morphgen-recognition/1"
FILENAME = "checkpoint.pt"


def checkpoint_path(run_or_file: str | Path) -> Path:
    p = Path(run_or_file)
    return p / FILENAME if p.is_dir() else p


def save_checkpoint(ckpt: dict, path: Path) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": FORMAT, **ckpt}, tmp)
    tmp.replace(path)


def load_checkpoint(run_or_file: str | Path) -> dict:
    """Read a checkpoint (a run folder means its ``checkpoint.pt``) on the CPU."""
    path = checkpoint_path(run_or_file)
    if not path.is_file():
        raise ModelError(f"no checkpoint at {path}: pass a run folder that finished at least one "
                         "checkpoint, or a checkpoint.pt file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise ModelError(f"{path} is not a readable morphgen checkpoint ({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ModelError(f"{path} is not a morphgen recognition checkpoint: use one written by `morphgen train`")
    return ckpt


def check_arch(ckpt: dict, arch: str, source: str | Path) -> None:
    """ModelError naming both architectures when the checkpoint holds another one."""
    if ckpt["arch"] != arch:
        raise ModelError(f"checkpoint {source} holds a {ckpt['arch']} model but this run builds {arch}: "
                         f"pass --arch {ckpt['arch']} or a checkpoint of {arch}")


def load_backbone_state(model: torch.nn.Module, ckpt: dict, arch: str, source: str | Path) -> None:
    """Copy the checkpoint's backbone weights into `model` (of architecture `arch`)."""
    check_arch(ckpt, arch, source)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise ModelError(f"checkpoint {source} ({ckpt['arch']}, input {ckpt.get('input_size')} px) does not fit "
                         f"this {arch} model: {str(exc).splitlines()[-1].strip()[:200]}") from None
