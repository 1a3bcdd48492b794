"""The folder layout of a morphgen dataset: the one module that names its files, so the
writer (:mod:`morphgen.dataset`) and every reader (``morphgen stats``, the training and
evaluation readers in ``recognition/``, experiments) agree on them::

    DIR/manifest.json                          version, resolved config, model hash, counts, shards
    DIR/images/<id:06d>/<id:06d>_<n:04d>.png   (+ _depth.png, _normals.png ... beside it)
    DIR/params/chunk_<c:06d>.jsonl             one JSON object per image (all render parameters)
    DIR/wds/chunk_<c:06d>.tar                  with the wds container instead of images/
    DIR/.partial/chunk_<c:06d>/                a chunk being written

A params row names its image by a path relative to DIR: ``images/<id>/<stem>.png``, or
``wds/chunk_<c>.tar:<stem>.png`` for a member of a WebDataset shard.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
PARAMS_DIR, IMAGES_DIR, WDS_DIR, PARTIAL_DIR = "params", "images", "wds", ".partial"
PARAMS_GLOB = "chunk_*.jsonl"
#: The file name of a colour image (``<id>_<n>.<ext>``); extra modalities add ``_<name>``.
IMAGE_NAME = re.compile(r"^(\d+)_(\d+)\.(png|jpg|jpeg)$", re.I)
_TAR_REF = ".tar:"


def image_stem(identity: int, sample: int) -> str:
    return f"{identity:06d}_{sample:04d}"


def identity_folder(identity: int) -> str:
    """The name of an identity's image folder (and of its folder in a partial chunk)."""
    return f"{identity:06d}"


def image_folder(root: Path, identity: int) -> Path:
    return Path(root) / IMAGES_DIR / identity_folder(identity)


def chunk_name(chunk: int) -> str:
    return f"chunk_{chunk:06d}"


def manifest_path(root: Path) -> Path:
    return Path(root) / MANIFEST


def read_manifest(root: Path) -> dict:
    """The manifest of the dataset in ``root`` (OSError when absent, ValueError when not JSON)."""
    return json.loads(manifest_path(root).read_text())


def looks_like_dataset(root: Path) -> bool:
    """A manifest, or both the params and images folders (a dataset written by other tools)."""
    root = Path(root)
    return manifest_path(root).is_file() or ((root / PARAMS_DIR).is_dir() and (root / IMAGES_DIR).is_dir())


def chunk_marker(root: Path, chunk: int) -> Path:
    """A chunk's params file, written last: it marks the chunk complete."""
    return Path(root) / PARAMS_DIR / f"{chunk_name(chunk)}.jsonl"


def partial_chunk(root: Path, chunk: int) -> Path:
    return Path(root) / PARTIAL_DIR / chunk_name(chunk)


def wds_shard(root: Path, chunk: int) -> Path:
    return Path(root) / WDS_DIR / f"{chunk_name(chunk)}.tar"


def image_ref(identity: int, name: str) -> str:
    """The params row's reference to file ``name`` of an identity's image folder."""
    return f"{IMAGES_DIR}/{identity_folder(identity)}/{name}"


def wds_ref(chunk: int, name: str) -> str:
    """The params row's reference to member ``name`` of a chunk's WebDataset shard."""
    return f"{WDS_DIR}/{chunk_name(chunk)}.tar:{name}"


def split_tar_ref(ref: str) -> tuple[str, str] | None:
    """(tar path relative to DIR, member name) of a ``x.tar:member`` reference, else None."""
    if _TAR_REF not in ref:
        return None
    tar, _, member = ref.rpartition(_TAR_REF)
    return tar + ".tar", member


def params_files(root: Path) -> list[Path]:
    """The params files in chunk order (none when there is no params folder)."""
    return sorted((Path(root) / PARAMS_DIR).glob(PARAMS_GLOB))


def done_chunks(root: Path) -> list[int]:
    """The chunks whose marker is on disk, in order."""
    return [int(p.stem.split("_")[1]) for p in params_files(root)]


def params_rows(root: Path) -> Iterator[tuple[str, Any]]:
    """(where, row) for each non-empty line of the params files, in chunk order: ``where``
    is ``file:line`` for messages, ``row`` the line's JSON value (None where it is not
    JSON, for the caller to report as it sees fit)."""
    for path in params_files(root):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except ValueError:
                    row = None
                yield f"{path}:{n}", row
