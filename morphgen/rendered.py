"""A rendered dataset folder from Python: a map-style torch Dataset of its images with their
labels, parameters and landmarks (:func:`open_dataset`), its parameters as a pandas frame
(:func:`params_frame`), and as a Hugging Face ``datasets.Dataset`` (:func:`hf_dataset`).

Parameters are read once, column by column, into numpy arrays (through pyarrow where it is
installed, which reads a Parquet dataset's params in a fraction of the time of JSON Lines),
so an item costs one image decode; the arrays are shared by forked loader workers.
"""
from __future__ import annotations

import json
import operator
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .configfile import as_path
from .errors import ConfigError, DataError
from .image_files import decode_image, read_image_file
from .layout import (
    TarMembers,
    looks_like_dataset,
    params_files,
    params_rows,
    params_table,
    read_manifest,
    split_tar_ref,
    warn_if_unfinished,
)
from .params_columns import LANDMARK_NAMES_KEY, have_pyarrow

#: Per-image parameters an item carries by default (``params=`` chooses others).
DEFAULT_PARAMS = ("yaw", "pitch", "roll", "scale", "translation", "sh", "shape", "color", "expression", "landmarks")
_NUMERIC = (*DEFAULT_PARAMS, "background_seed", "landmarks5_visible")
_ALWAYS = ("image", "identity", "sample", "landmarks5", "soft_label")


def _check_root(root: str | Path) -> Path:
    root = as_path(root, "the dataset folder")
    if not root.is_dir():
        raise DataError(f"{root} does not exist or is not a folder: give a folder written by `morphgen render`")
    if not looks_like_dataset(root) or not params_files(root):
        raise DataError(f"{root} holds no params/chunk_*.parquet or .jsonl: is it a morphgen dataset "
                        f"(morphgen render --out {root})?")
    warn_if_unfinished(root)
    return root


class RenderedDataset:
    """Map-style dataset over a rendered folder (a ``torch.utils.data.Dataset``: it has
    ``__len__`` and ``__getitem__`` and works with any DataLoader and sampler).

    Item i is a dict: ``image`` (uint8 tensor (3, S, S), RGB; or ``transform`` of the
    (S, S, 3) uint8 array), ``label`` (identity index 0..n_classes-1, identities sorted),
    ``identity`` and ``sample`` (as rendered), ``landmarks5`` (5, 2) float32 pixels,
    ``soft_ids`` / ``soft_weights`` (2,) (identity mixup: the two label indices and their
    weights; -1 / 0 where unmixed), each of `params` as a tensor (float32 but for
    ``background_seed``, int64, and ``landmarks5_visible``, bool; ``landmarks``:
    (L, 2), names in :attr:`landmark_names`), and each of `outputs` (extra modalities
    rendered with ``--outputs``: depth as uint16 in 0.1 mm, illumination as uint16 in
    thousandths of the irradiance, the others uint8)."""

    def __init__(self, root: str | Path, *, params: Sequence[str] = DEFAULT_PARAMS, outputs: Sequence[str] = (),
                 transform: Callable[[np.ndarray], Any] | None = None):
        self.root = _check_root(root)
        params, outputs = name_list(params, "params"), name_list(outputs, "outputs")
        if transform is not None and not callable(transform):
            raise ConfigError(f"transform must be a function of the (S, S, 3) uint8 image, got a {type(transform).__name__}")
        bad = [p for p in params if p not in _NUMERIC]
        if bad:
            raise ConfigError(f"params {bad}: choose from {', '.join(_NUMERIC)}")
        try:
            rendered = read_manifest(self.root)["config"]["scene"]["outputs"]
        except (OSError, ValueError, KeyError, TypeError):
            rendered = []
        absent = [o for o in outputs if o not in rendered]
        if absent:
            raise ConfigError(f"outputs {absent}: {self.root} holds {', '.join(rendered) or 'no extra outputs'} "
                              "(morphgen render --outputs)")
        self.params, self.outputs, self.transform = tuple(params), tuple(outputs), transform
        cols = _read_columns(self.root, (*_ALWAYS, *self.params))
        self.landmark_names: tuple[str, ...] = cols.pop("landmark_names", ())
        self.images: list[str] = cols.pop("image")
        self.columns: dict[str, np.ndarray] = cols
        #: The identities in label order: label k is identity ``identities[k]``.
        self.identities = np.unique(cols["identity"])
        self.labels = np.searchsorted(self.identities, cols["identity"])
        sid = cols.pop("soft_ids")
        known = np.isin(sid, self.identities)
        self.soft_ids = np.where(known, np.searchsorted(self.identities, sid), -1)
        self.soft_weights = np.where(known, cols.pop("soft_weights"), 0.0).astype(np.float32)
        self._tars = TarMembers(self.root)

    @property
    def n_classes(self) -> int:
        """The number of distinct labels: the identities rendered (``label`` counts 0 to n_classes - 1)."""
        return len(self.identities)

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return f"RenderedDataset({self.root}: {len(self)} images of {self.n_classes} identities)"

    def read(self, ref: str) -> np.ndarray:
        """The image file `ref` (relative to the folder, or ``x.tar:member``) as stored:
        RGB uint8 (S, S, 3) (illumination uint16), or one channel for the mask, regions and
        depth (uint16)."""
        if split_tar_ref(ref):
            data = self._tars.read(ref)
            img = decode_image(data, cv2.IMREAD_UNCHANGED)
        else:
            img = read_image_file(self.root / ref, cv2.IMREAD_UNCHANGED)
        if img is None:
            raise DataError(f"{self.root / ref}: missing or not a readable image; re-render the dataset with --resume "
                            "after deleting its chunk's params file")
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if img.ndim == 3 else img

    def __getitem__(self, i: int) -> dict[str, Any]:
        import torch

        try:
            i = operator.index(i)  # an int, numpy's or torch's
        except TypeError:  # a slice, a name: a list's TypeError, with what to give
            raise TypeError(f"dataset indices are image numbers (int), not {type(i).__name__}") from None
        if not -len(self) <= i < len(self):
            raise IndexError(f"image {i} of a dataset of {len(self)}")
        rgb = self.read(self.images[i])
        chw = self.transform is None
        item: dict[str, Any] = {
            "image": torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))) if chw else self.transform(rgb),
            "label": int(self.labels[i]), "identity": int(self.columns["identity"][i]),
            "sample": int(self.columns["sample"][i]), "landmarks5": torch.from_numpy(self.columns["landmarks5"][i]),
            "soft_ids": torch.from_numpy(self.soft_ids[i]), "soft_weights": torch.from_numpy(self.soft_weights[i]),
        }
        item.update({p: torch.from_numpy(np.asarray(self.columns[p][i])) for p in self.params})
        stem = self.images[i].rpartition(".")[0]
        for name in self.outputs:
            item[name] = torch.from_numpy(self.read(f"{stem}_{name}.png"))  # data: PNG whatever --image-format
        return item


def name_list(value, what: str) -> tuple[str, ...]:
    """Column or output names: a list, or one comma-separated text ("depth" was read as
    the letters d, e, p, t, h)."""
    if isinstance(value, str):
        return tuple(n.strip() for n in value.split(",") if n.strip())
    if value is None or not all(isinstance(n, str) for n in value):
        raise ConfigError(f"{what} must be a list of names, got {value!r}")
    return tuple(value)


def _read_columns(root: Path, names: Sequence[str]) -> dict[str, Any]:
    """Per-image columns as numpy arrays, float32 where floating (``image``: a list of
    references; ``soft_label``: ``soft_ids`` / ``soft_weights`` (N, 2); ``landmarks``
    brings ``landmark_names``): through pyarrow where installed, else from the rows."""
    names = tuple(dict.fromkeys(names))
    if have_pyarrow():
        table = params_table(root, names, optional=True)  # what is missing is named below
        present = set(table.column_names)
        meta = table.schema.metadata or {}
        landmark_names = tuple(json.loads(meta[LANDMARK_NAMES_KEY])) if LANDMARK_NAMES_KEY in meta else ()

        def values(name: str) -> list:
            return table.column(name).to_pylist()

        def array(name: str) -> np.ndarray:
            return _array(table.column(name))
    else:
        rows = []
        for where, row in params_rows(root):
            if not isinstance(row, dict):
                raise DataError(f"{where} is not a JSON object: the file is corrupt; delete it and re-render with --resume")
            rows.append(row)
        present = set(rows[0]) if rows else set()
        landmark_names = tuple(sorted(rows[0].get("landmarks") or {})) if rows else ()

        def values(name: str) -> list:
            return [r.get(name) for r in rows]

        def array(name: str) -> np.ndarray:
            if name == "landmarks":
                return np.array([[r[name][n][:2] for n in landmark_names] for r in rows], np.float32)
            return np.array(values(name))
    missing = [n for n in names if n != "soft_label" and n not in present]
    if missing:
        raise DataError(f"the params of {root} hold no {', '.join(missing)}: it was written by another tool or an "
                        "older morphgen; open it with params= naming the columns it has")
    out: dict[str, Any] = {"image": [str(v) for v in values("image")], "landmark_names": landmark_names}
    soft = values("soft_label") if "soft_label" in present else [None] * len(out["image"])
    ids = [int(i) for i in values("identity")] if "identity" in present else [-1] * len(soft)
    out["soft_ids"] = np.array([s["ids"] if s else [i, -1] for s, i in zip(soft, ids)], np.int64).reshape(-1, 2)
    out["soft_weights"] = np.array([s["weights"] if s else [1.0, 0.0] for s in soft], np.float32).reshape(-1, 2)
    for name in names:
        if name not in ("image", "soft_label"):
            a = array(name)  # copied: arrow's buffers are read-only, torch wants writable arrays
            out[name] = np.array(a, np.float32 if a.dtype.kind == "f" else a.dtype)
    return out


def _array(column) -> np.ndarray:
    """A column as an (N, ...) numpy array: list columns (one length per dataset) flattened
    and reshaped, without a Python object per value."""
    import pyarrow as pa
    import pyarrow.compute as pc

    col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    shape = [len(col)]
    while pa.types.is_list(col.type) or pa.types.is_fixed_size_list(col.type):
        lengths = np.asarray(pc.list_value_length(col))
        if len(lengths) and (lengths != lengths[0]).any():
            raise DataError("a params column holds lists of different lengths: the dataset mixes configs")
        shape.append(int(lengths[0]) if len(lengths) else 0)
        col = pc.list_flatten(col)
    return np.asarray(col.to_numpy(zero_copy_only=False)).reshape(shape)


def open_dataset(root: str | Path, *, params: Sequence[str] = DEFAULT_PARAMS, outputs: Sequence[str] = (),
                 transform: Callable[[np.ndarray], Any] | None = None) -> RenderedDataset:
    """A dataset written by ``morphgen render`` (any params format or container) as a
    map-style torch Dataset: see :class:`RenderedDataset` for the items."""
    return RenderedDataset(root, params=params, outputs=outputs, transform=transform)


def params_frame(root: str | Path, columns: Sequence[str] | None = None):
    """The params of a dataset as a pandas DataFrame, one row per image (the columns of
    :mod:`morphgen.params_columns`; `columns` reads only those). Needs pyarrow and pandas."""
    try:
        import pandas  # noqa: F401
    except ImportError:
        raise DataError("params_frame needs pandas: pip install 'morphgen[parquet]'") from None
    return params_table(_check_root(root), columns).to_pandas()


def hf_dataset(root: str | Path):
    """The dataset as a Hugging Face ``datasets.Dataset``: every params column, ``image``
    decoded on access (``datasets.Image``) and ``label`` a ``ClassLabel`` over the
    identities. In memory (the images stay files); ``datasets`` is an optional extra
    (``pip install 'morphgen[hf]'``). A ``--format wds`` dataset loads without morphgen:
    ``datasets.load_dataset("webdataset", data_files=f"{DIR}/wds/*.tar")``."""
    try:
        import datasets
    except ImportError:
        raise DataError("hf_dataset needs the Hugging Face datasets package: pip install 'morphgen[hf]'") from None
    import pyarrow as pa

    root = _check_root(root)
    table = params_table(root)
    lacking = [c for c in ("image", "identity") if c not in table.column_names]
    if lacking or not table.num_rows:
        raise DataError(f"the params of {root} hold {'no ' + lacking[0] + ' column' if lacking else 'no rows'}: "
                        "hf_dataset reads datasets written by `morphgen render`")
    refs = table.column("image").to_pylist()
    if any(split_tar_ref(r) for r in refs):
        raise DataError(f"{root} keeps its images in WebDataset shards: load it with "
                        f"datasets.load_dataset('webdataset', data_files='{root}/wds/*.tar') (rendered without "
                        "--outputs), or morphgen.open_dataset")
    identity = np.asarray(table.column("identity"))
    ids = np.unique(identity)
    table = table.set_column(table.column_names.index("image"), "image", pa.array([str(root / r) for r in refs]))
    table = table.append_column("label", pa.array(np.searchsorted(ids, identity)))
    features = datasets.Features.from_arrow_schema(table.schema)
    features["image"] = datasets.Image()
    features["label"] = datasets.ClassLabel(names=[str(i) for i in ids])
    return datasets.Dataset(datasets.table.InMemoryTable(table)).cast(features)
