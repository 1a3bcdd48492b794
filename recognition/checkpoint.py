"""Run checkpoints: a dict of tensors and JSON-able values, saved atomically and read with
``torch.load(weights_only=True)``.

    {"format": "morphgen-recognition/1", "arch", "input_size", "template", "embedding_size",
     "step", "model": state_dict, "head": state_dict | None, "optimizer": state_dict | None,
     "scaler": state_dict | None, "classes": [identity names], "config": {...}, "rng": tensor,
     "data_key": fingerprint of the training images (None online; absent before it existed)}
"""
from __future__ import annotations

import errno
import pickle
from pathlib import Path

import torch

from morphgen.errors import ModelError

from .models import ARCHS, MAX_INPUT, min_input_size

FORMAT = "morphgen-recognition/1"
FILENAME = "checkpoint.pt"
_ZIP_MAGIC = b"PK\x03\x04"


def checkpoint_path(run_or_file: str | Path) -> Path:
    p = Path(run_or_file)
    return p / FILENAME if p.is_dir() else p


# entry -> type of what every checkpoint holds, and of what resuming a run needs besides
_MODEL_ENTRIES = {"arch": str, "input_size": int, "template": str, "model": dict}
_RESUME_ENTRIES = {"step": int, "optimizer": dict, "classes": list, "config": dict}


def save_checkpoint(ckpt: dict, path: Path) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save({"format": FORMAT, **ckpt}, tmp)
    except RuntimeError as exc:  # torch's words for an unwritable path (its parent gone, a write failed)
        tmp.unlink(missing_ok=True)
        first = (str(exc).strip().splitlines() or [""])[0]
        if path.parent.is_dir() and "write" not in first.lower():
            raise  # not the file's problem: keep the traceback
        raise OSError(errno.EIO if path.parent.is_dir() else errno.ENOENT, f"cannot write the checkpoint ({first})",
                      str(tmp)) from None
    except BaseException:  # a Ctrl-C mid-write: no half-written checkpoint.pt.tmp left beside the run
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)


def load_checkpoint(run_or_file: str | Path) -> dict:
    """Read a checkpoint (a run folder means its ``checkpoint.pt``) on the CPU, checked
    for the entries every use needs, so that a broken file is one ModelError here rather
    than a KeyError wherever it is used."""
    path = checkpoint_path(run_or_file)
    if not path.is_file():
        raise ModelError(f"no checkpoint at {path}: pass a run folder that finished at least one "
                         "checkpoint, or a checkpoint.pt file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EISDIR):  # the file system's refusal, not the file's
            raise ModelError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
        # torch reads a cut zip as an OSError ("Invalid argument"), which says nothing of the file
        raise ModelError(f"{path} is not a readable morphgen checkpoint (a truncated or damaged PyTorch file: "
                         f"{exc.strerror or exc}): resume from another copy, or start a new --out") from None
    except Exception as exc:  # noqa: BLE001 - whatever the loader meets in a user's file, it is not a checkpoint
        raise ModelError(f"{path} is not a readable morphgen checkpoint ({_what_it_is(path, exc)}): give a run "
                         "folder of `morphgen train` or its checkpoint.pt") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ModelError(f"{path} is not a morphgen recognition checkpoint: use one written by `morphgen train`")
    _check_entries(ckpt, path, _MODEL_ENTRIES)
    if ckpt["arch"] not in ARCHS:
        raise ModelError(f"{path} holds an unknown architecture {ckpt['arch']!r}: use one of {', '.join(ARCHS)}")
    if not min_input_size(ckpt["arch"]) <= ckpt["input_size"] <= MAX_INPUT:
        raise ModelError(f"{path} holds a {ckpt['arch']} of input size {ckpt['input_size']}, which it cannot "
                         "take: retrain it with a valid --input-size")
    return ckpt


def _what_it_is(path: Path, exc: Exception) -> str:
    """What a file torch.load refused is, in a few words: torch's own message is a
    paragraph about its `weights_only` default or a zip library, or just a byte value
    (a KeyError for a text file), none of which says what to do."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        return "an empty file"
    if head != _ZIP_MAGIC and head[:1] != b"\x80":  # torch.save: a zip archive, or a pickle (its legacy format)
        return "not a PyTorch file"
    if isinstance(exc, pickle.UnpicklingError):  # the weights-only unpickler met other objects
        return "a PyTorch file holding more than tensors, such as a whole pickled model"
    return "a truncated or damaged PyTorch file"


def _check_entries(ckpt: dict, path: Path, entries: dict) -> None:
    for key, kind in entries.items():
        if not isinstance(ckpt.get(key), kind) or isinstance(ckpt.get(key), bool):
            raise ModelError(f"{path} is an incomplete morphgen checkpoint ({key!r} is missing or not a "
                             f"{kind.__name__}): use one written by `morphgen train`")


def check_resumable(ckpt: dict, path: Path) -> None:
    """ModelError unless the checkpoint holds what continuing its run needs (step,
    optimizer state, class names, config)."""
    _check_entries(ckpt, path, _RESUME_ENTRIES)


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
    except (RuntimeError, TypeError, AttributeError) as exc:  # wrong shapes, or entries that are no tensors
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[-1].strip()[:200]
        raise ModelError(f"checkpoint {source} ({ckpt['arch']}, input {ckpt.get('input_size')} px) does not fit "
                         f"this {arch} model: {why}") from None
