"""The per-image params records of a dataset as a columnar table (Apache Arrow / Parquet).

A params record (one JSON object per image, :meth:`ImageParams.to_record` plus the render's
landmarks and the image reference) converts to one row of a fixed set of typed columns, so a
Parquet chunk file is read by pandas, polars or DuckDB without morphgen, and so the JSON
Lines and Parquet forms of a dataset give the same table (:func:`morphgen.layout.params_table`):

=====================  ==========================  ================================================
column                 type                        holds
=====================  ==========================  ================================================
identity, sample       int64                       the image's identity and sample index
image                  string                      its file, relative to the dataset folder
shape, color,          list<float32>               morphable-model coefficients
expression
yaw, pitch, roll       float32                     head pose, degrees
translation, scale     list<float32>, float32      image-plane jitter (fraction of the image), scale
sh                     list<list<float32>>         spherical-harmonics light, 9 x 3
background_seed        int64                       the background's draw
soft_label             struct<ids, weights>        identity mixup (null when unmixed)
photo, appearance      string (JSON)               camera effects, hair/eyewear... (their content
                                                   varies per image); absent when off
landmarks5             list<list<float32>>         5 x 2 alignment points, pixels
landmarks5_visible     list<bool>
landmarks              list<list<float32>>         L x 2 named landmarks; names in the file's
landmarks_visible      list<bool>                  ``morphgen.landmark_names`` metadata
=====================  ==========================  ================================================

Floats are stored as float32 (the JSON form rounds to 6 decimals), in plain pages: 622 bytes
an image against JSON's 4,662, and a sixth of the time into pandas (README, "Per-image
parameters"). pyarrow is an optional dependency (``pip install 'morphgen[parquet]'``),
imported only when called.
"""
from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

from .errors import DataError

#: The key-value metadata entry of a params file naming the columns of ``landmarks``.
LANDMARK_NAMES_KEY = b"morphgen.landmark_names"
_INTS = ("identity", "sample", "background_seed")
_FLOATS = ("yaw", "pitch", "roll", "scale")
_VECTORS = ("shape", "color", "expression", "translation")
_MATRICES = ("sh", "landmarks5")
_JSON_TEXT = ("photo", "appearance")
# zstd: on a chunk of 1,000 rows 7 % smaller than snappy and faster to write (15 against 26 ms)
COMPRESSION = "zstd"
# No dictionary encoding: a params column's values hardly repeat within a chunk
# (coefficients, light, landmarks, image names), and pyarrow's default stores each distinct
# value in a dictionary page plus an index per value, larger than the plain values. Plain
# pages make a 200-image chunk 23-29 % smaller and write it in half the time (face12-sized
# model: 721 -> 511 bytes an image, 2.8 -> 1.3 ms a chunk; readers see the same table).
USE_DICTIONARY = False


def have_pyarrow() -> bool:
    """Whether Parquet can be written and read here (pyarrow is an optional extra); looked
    up without importing it (half a second that `morphgen render` need not pay)."""
    from importlib.util import find_spec

    return find_spec("pyarrow") is not None


def require_pyarrow(what: str):
    """The pyarrow module, or a one-line DataError saying that `what` needs it."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise DataError(f"{what} needs pyarrow, an optional extra: pip install 'morphgen[parquet]'") from None
    return pyarrow


def _column_type(pa, name: str):
    """The Arrow type of a params key, or None for a key whose type pyarrow infers."""
    if name in _INTS:
        return pa.int64()
    if name in _FLOATS:
        return pa.float32()
    if name in _VECTORS:
        return pa.list_(pa.float32())
    if name in _MATRICES:
        return pa.list_(pa.list_(pa.float32()))
    if name in _JSON_TEXT or name == "image":
        return pa.string()
    if name == "soft_label":
        return pa.struct([("ids", pa.list_(pa.int64())), ("weights", pa.list_(pa.float32()))])
    if name == "landmarks5_visible":
        return pa.list_(pa.bool_())
    return None


def _column(pa, name: str, values: list):
    """One column of records' values, typed by name (other keys as pyarrow infers them)."""
    if name in _JSON_TEXT:
        values = [None if v is None else json.dumps(v) for v in values]
    typ = _column_type(pa, name)
    if typ is None:
        return pa.array(values)
    return _arrow_array(pa, values, typ)


def _arrow_array(pa, values: list, typ):
    """``pa.array(values, typ)``, built from numpy buffers where the values are plain
    (:func:`_from_buffers`): pa.array on Python lists imports pandas, a third of a second
    in every process that writes a Parquet chunk (the dataset writer's workers, a two-image
    command). The same array either way (tests/test_params_parquet.py)."""
    built = _from_buffers(pa, values, typ)
    return pa.array(values, typ) if built is None else built


def _from_buffers(pa, values: list, typ):
    """An Arrow array of ``values`` (None: null) of type int64, float32, bool, string, or
    lists and structs of those, or None where a value is not of the plain Python type
    (int, float, bool, str, list, dict) that ``typ`` asks for: pa.array then converts it,
    or says what is wrong. Values that nest regularly (a chunk's coefficients, light,
    landmarks) go through numpy in one pass (:func:`_regular`), the others value by value."""
    import numpy as np

    regular = _regular(pa, values, typ)
    if regular is not None:
        return regular
    n = len(values)
    present = [v is not None for v in values]
    nulls = n - sum(present)
    validity = None if nulls == 0 else pa.py_buffer(np.packbits(np.array(present, bool), bitorder="little"))
    kept = values if nulls == 0 else [v for v in values if v is not None]
    if pa.types.is_list(typ):
        if not all(type(v) is list for v in kept):
            return None
        offsets = _offsets(pa, [len(v) if v is not None else 0 for v in values])
        child = _from_buffers(pa, [x for v in kept for x in v], typ.value_type)
        return None if child is None else pa.Array.from_buffers(typ, n, [validity, offsets], null_count=nulls,
                                                                 children=[child])
    if pa.types.is_struct(typ):
        if not kept:
            return pa.nulls(n, typ)
        names = {f.name for f in typ}
        if not all(type(v) is dict and set(v) <= names for v in kept):
            return None
        children = [_from_buffers(pa, [v.get(f.name) if v is not None else None for v in values], f.type) for f in typ]
        return None if any(c is None for c in children) else pa.Array.from_buffers(
            typ, n, [validity], null_count=nulls, children=children)
    if pa.types.is_string(typ):
        if not all(type(v) is str for v in kept):
            return None
        data = [v.encode() if v is not None else b"" for v in values]
        return pa.Array.from_buffers(typ, n, [validity, _offsets(pa, [len(d) for d in data]),
                                              pa.py_buffer(b"".join(data))], null_count=nulls)
    plain = {pa.int64(): ((int,), np.int64), pa.float32(): ((float,), np.float32), pa.bool_(): ((bool,), bool)}
    if typ not in plain or not all(type(v) in plain[typ][0] for v in kept):
        return None
    filled = values if nulls == 0 else [v if v is not None else 0 for v in values]
    try:
        data = np.array(filled, plain[typ][1])
    except OverflowError:  # an int past int64: pa.array says so
        return None
    if typ == pa.bool_():
        data = np.packbits(data, bitorder="little")
    return pa.Array.from_buffers(typ, n, [validity, pa.py_buffer(data)], null_count=nulls)


def _offsets(pa, lengths: list[int]):
    """The int32 offsets buffer of lists (or strings) of these lengths: 0 and their running sums."""
    import numpy as np

    offsets = np.zeros(len(lengths) + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.py_buffer(offsets)


def _regular(pa, values: list, typ):
    """The array of ``values`` when they nest regularly: lists (of lists...) of equal
    lengths down to Python floats (float32), ints (int64) or bools, no nulls; converted by
    numpy in one pass (np.fromiter). None otherwise."""
    import numpy as np

    levels = [typ]
    while pa.types.is_list(levels[-1]):
        levels.append(levels[-1].value_type)
    leaf = {pa.int64(): int, pa.float32(): float, pa.bool_(): bool}.get(levels[-1])
    if leaf is None or not values:
        return None
    shape, rows = [len(values)], values
    for _ in levels[:-1]:
        lengths = set(map(len, rows)) if set(map(type, rows)) == {list} else set()
        if len(lengths) != 1:
            return None
        shape.append(lengths.pop())
        rows = list(chain.from_iterable(rows))
    if set(map(type, rows)) - {leaf}:  # exactly pa.array's values (an int is no float32 here)
        return None
    count = len(rows)
    try:
        data = np.fromiter(rows, np.float64 if leaf is float else np.int64 if leaf is int else bool, count)
    except OverflowError:  # an int past int64
        return None
    if leaf is float:
        with np.errstate(over="ignore"):  # past float32's range: inf, as pyarrow casts it
            data = data.astype(np.float32)
    elif leaf is bool:
        data = np.packbits(data, bitorder="little")
    out = pa.Array.from_buffers(levels[-1], count, [None, pa.py_buffer(data)])
    for depth in range(len(levels) - 2, -1, -1):  # the innermost lists first
        n, size = int(np.prod(shape[:depth + 1])), shape[depth + 1]
        offsets = np.arange(n + 1, dtype=np.int32) * np.int32(size)
        out = pa.Array.from_buffers(levels[depth], n, [None, pa.py_buffer(offsets)], children=[out])
    return out


def table_from_records(records: Sequence[dict], where: str = "params"):
    """The table of params records (dicts as the JSON Lines hold them): the columns of the
    first record, in its order; the named landmarks split into points, visibility and the
    names (file metadata). `where` names the records in the DataError of an odd one."""
    pa = require_pyarrow("a params table")
    if not records:
        return pa.table({})
    names = list(records[0])
    columns, metadata = {}, {}
    try:
        for name in names:
            values = [r.get(name) for r in records]
            if name == "landmarks":
                order = sorted(values[0] or {})
                if any(sorted(v or {}) != order for v in values):
                    raise DataError(f"{where}: the rows name different landmarks")
                columns["landmarks"] = _arrow_array(pa, [[v[n][:2] for n in order] for v in values],
                                                    pa.list_(pa.list_(pa.float32())))
                columns["landmarks_visible"] = _arrow_array(pa, [[bool(v[n][2]) for n in order] for v in values],
                                                            pa.list_(pa.bool_()))
                metadata[LANDMARK_NAMES_KEY] = json.dumps(order).encode()
            else:
                columns[name] = _column(pa, name, values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, KeyError, IndexError) as exc:
        raise DataError(f"{where}: a row does not fit the params columns ({str(exc).splitlines()[0]})") from None
    return pa.table(columns).replace_schema_metadata(metadata or None)


def parquet_bytes(records: Sequence[dict]) -> bytes:
    """A chunk's Parquet params file (deterministic bytes for the same records)."""
    pa = require_pyarrow("--params-format parquet")
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table_from_records(records), sink, compression=COMPRESSION, use_dictionary=USE_DICTIONARY)
    return sink.getvalue().to_pybytes()


def read_parquet(path: Path, columns: Sequence[str] | None = None):
    """The table of one Parquet params file (only `columns`, where given and present;
    ``landmarks`` brings ``landmarks_visible``)."""
    require_pyarrow(f"{path} (a Parquet params file)")
    import pyarrow.parquet as pq

    try:
        if columns is not None:
            present = set(pq.read_schema(path).names)
            wanted = [*columns, *(["landmarks_visible"] if "landmarks" in columns else [])]
            columns = [c for c in dict.fromkeys(wanted) if c in present]
        return pq.read_table(path, columns=columns)
    except (OSError, ValueError) as exc:  # ArrowInvalid is a ValueError
        raise DataError(f"{path} is not a readable Parquet params file ({str(exc).splitlines()[0]}): "
                        "delete it and re-render with --resume") from None


def table_rows(table) -> Iterator[dict[str, Any]]:
    """The rows of a params table in the JSON Lines' shape: named landmarks as
    ``{name: [x, y, visible]}``, photo and appearance as mappings."""
    meta = table.schema.metadata or {}
    names = json.loads(meta[LANDMARK_NAMES_KEY]) if LANDMARK_NAMES_KEY in meta else None
    for row in table.to_pylist():
        for key in _JSON_TEXT:
            if row.get(key) is not None:
                row[key] = json.loads(row[key])
        if "landmarks" in row and names is not None:
            xy, vis = row["landmarks"], row.pop("landmarks_visible", None) or []
            row["landmarks"] = None if xy is None else {n: [*p, v] for n, p, v in zip(names, xy, vis)}
        yield row
