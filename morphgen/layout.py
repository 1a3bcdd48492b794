"""The folder layout of a morphgen dataset: the one module that names its files, so the
writer (:mod:`morphgen.dataset`) and every reader (``morphgen stats``, the training and
evaluation readers in ``recognition/``, experiments) agree on them::

    DIR/manifest.json                          version, resolved config, model hash, counts, shards
    DIR/images/<id:06d>/<id:06d>_<n:04d>.png   (+ _depth.png, _normals.png ... beside it)
    DIR/params/chunk_<c:06d>.jsonl             one JSON object per image (all render parameters), or
    DIR/params/chunk_<c:06d>.parquet           the same as a table (--params-format parquet; see params_table)
    DIR/wds/chunk_<c:06d>.tar                  with the wds container instead of images/
    DIR/.partial/chunk_<c:06d>/                a chunk being written

A params row names its image by a path relative to DIR: ``images/<id>/<stem>.png``, or
``wds/chunk_<c>.tar:<stem>.png`` for a member of a WebDataset shard.
"""
from __future__ import annotations

import json
import re
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
PARAMS_DIR, IMAGES_DIR, WDS_DIR, PARTIAL_DIR = "params", "images", "wds", ".partial"
#: The params file formats, by suffix (``morphgen render --params-format``).
PARAMS_FORMATS = ("jsonl", "parquet")
PARAMS_GLOB = "chunk_*.{jsonl,parquet}"  # for messages
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
    """The manifest of the dataset in ``root`` (OSError when absent, ValueError when not
    JSON, or not UTF-8)."""
    return json.loads(manifest_path(root).read_bytes())


def manifest_or_none(root: Path) -> dict | None:
    """The manifest of the dataset in ``root``, or None where it is absent or unreadable
    (for readers to which a manifest is a help, not a need)."""
    try:
        manifest = read_manifest(root)
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def looks_like_dataset(root: Path) -> bool:
    """A manifest, or both the params and images folders (a dataset written by other tools)."""
    root = Path(root)
    return manifest_path(root).is_file() or ((root / PARAMS_DIR).is_dir() and (root / IMAGES_DIR).is_dir())


def chunk_marker(root: Path, chunk: int, fmt: str = "jsonl") -> Path:
    """A chunk's params file in format `fmt`, written last: it marks the chunk complete."""
    return Path(root) / PARAMS_DIR / f"{chunk_name(chunk)}.{fmt}"


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


class TarMembers:
    """Bytes of ``shard.tar:member`` references (morphgen's WebDataset container): each
    tar's member table (where each member's bytes lie) is read once per process, and a
    member is read at its place with a handle opened for that read. Handles kept open, one
    per tar, ran out at the usual limit of 1,024 files with SYN-1M's 1,000 shards (and the
    failed opens were taken for missing images). Safe to send to loader workers."""

    def __init__(self, root: Path):
        self.root, self._tables = Path(root), {}

    def __getstate__(self):
        return {"root": self.root, "_tables": {}}

    def read(self, ref: str) -> bytes | None:
        tar_rel, member = split_tar_ref(ref)
        path = self.root / tar_rel
        if tar_rel not in self._tables:
            try:  # (uncompressed, as the writer makes them: a member's bytes lie at its offset)
                with tarfile.open(path, "r:") as tf:
                    self._tables[tar_rel] = {m.name: (m.offset_data, m.size) for m in tf.getmembers() if m.isreg()}
            except FileNotFoundError:
                self._tables[tar_rel] = {}
            except (OSError, tarfile.TarError) as exc:
                from .errors import DataError

                self._tables[tar_rel] = DataError(  # kept: one parse of a damaged tar, not one per member
                    f"{path}: cannot be read as a shard ({getattr(exc, 'strerror', None) or exc})")
        table = self._tables[tar_rel]
        if isinstance(table, Exception):
            raise table
        where = table.get(member)
        if where is None:
            return None
        with open(path, "rb") as f:
            f.seek(where[0])
            data = f.read(where[1])
        return data if len(data) == where[1] else None


def params_files(root: Path) -> list[Path]:
    """The params files (either format) in chunk order (none when there is no params folder)."""
    files = (Path(root) / PARAMS_DIR).glob("chunk_*.*")
    return sorted(p for p in files if p.suffix[1:] in PARAMS_FORMATS)


def done_chunks(root: Path) -> list[int]:
    """The chunks whose marker is on disk, in order."""
    return [int(p.stem.split("_")[1]) for p in params_files(root)]


def params_rows(root: Path, columns: Sequence[str] | None = None) -> Iterator[tuple[str, Any]]:
    """(where, row) for each image of the params files, in chunk order: ``where`` is
    ``file:line`` (``file:row`` for Parquet) for messages, ``row`` the image's record as a
    dict in the JSON Lines' shape whatever the format (None where a line is not JSON, for
    the caller to report as it sees fit). `columns`: the keys the caller reads; Parquet
    files then read only those (a row holds at least them, where the file has them)."""
    for path in params_files(root):
        yield from params_file_rows(path, columns)


def params_file_rows(path: Path, columns: Sequence[str] | None = None) -> Iterator[tuple[str, Any]]:
    """(where, row) of one params file, Parquet (by its suffix) or JSON Lines, as `params_rows`."""
    if path.suffix == ".parquet":
        from .params_columns import read_parquet, table_rows

        for n, row in enumerate(table_rows(read_parquet(path, columns)), 1):
            yield f"{path}:{n}", row
        return
    for n, line in enumerate(path.read_bytes().splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except ValueError:  # not JSON, or not UTF-8 (UnicodeDecodeError is a ValueError)
                row = None
            yield f"{path}:{n}", row


def warn_if_unfinished(root: Path) -> None:
    """A warning when the dataset's manifest plans more chunks than have finished (a run
    stopped, or shards still rendering): readers take what is rendered so far, which is
    right for a look but easy to train on unawares."""
    import warnings

    try:
        planned = int(manifest_or_none(root)["counts"]["chunks"])
    except (KeyError, TypeError, ValueError):
        return
    done = len(params_files(root))
    if done < planned:
        warnings.warn(f"{root} is an unfinished dataset ({done} of {planned} chunks): reading what is rendered so far; "
                      "finish it with the same `morphgen render` command and --resume", stacklevel=3)


def params_table(root: Path, columns: Sequence[str] | None = None, optional: bool = False):
    """The params of a dataset as one pyarrow Table (the columns of
    :mod:`morphgen.params_columns`), from Parquet or JSON Lines files alike: the frame a pose
    or light study starts from (``params_table(DIR).to_pandas()``). Needs pyarrow.
    `columns` the params do not hold are a DataError, unless ``optional`` (the caller
    then looks at what it got)."""
    from .configfile import as_path
    from .errors import DataError
    from .params_columns import read_parquet, require_pyarrow, table_from_records

    root = as_path(root, "the dataset folder")
    pa = require_pyarrow("reading params as a table")
    if isinstance(columns, str) or (columns is not None and not all(isinstance(c, str) for c in columns)):
        raise DataError(f"columns must be a list of column names, got {columns!r}")
    files = params_files(root)
    if not files:
        raise DataError(f"{root} holds no {PARAMS_DIR}/{PARAMS_GLOB}: is it a morphgen dataset?")
    tables = []
    for path in files:
        if path.suffix == ".parquet":
            tables.append(read_parquet(path, columns))
            continue
        rows = []
        for where, row in params_file_rows(path, None):
            if not isinstance(row, dict):
                raise DataError(f"{where} is not a JSON object: the file is corrupt; delete it and re-render with --resume")
            rows.append(row if columns is None else {k: row[k] for k in columns if k in row})
        tables.append(table_from_records(rows, str(path)))
    try:
        table = pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DataError(f"the params files of {root} hold different columns ({str(exc).splitlines()[0]})") from None
    unknown = [c for c in columns or () if c not in table.column_names]
    if unknown and not optional:  # (read as a table without that column: an empty frame, where no column was found)
        raise DataError(f"the params of {root} hold no column {unknown[0]!r}; they hold "
                        f"{', '.join(_file_columns(files[0]))}")
    return table


def _file_columns(path: Path) -> list[str]:
    """The column names of one params file (a Parquet schema, or a JSON line's keys)."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_schema(path).names
    row = next((row for _, row in params_file_rows(path, None)), None)
    return list(row) if isinstance(row, dict) else []
