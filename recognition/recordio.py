"""insightface RecordIO (``train.rec`` + ``train.idx`` + ``property``), read without mxnet.

Record: uint32 magic 0xced7230a, uint32 lrec (cflag = lrec >> 29, length = lrec & (2^29-1)),
payload, zero padding to 4 bytes (cflag 1/2/3 = first/middle/last part of a split record).
Payload: header struct 'IfQQ' (flag, label f32, id, id2); if flag > 0, `flag` float32
labels follow; then the encoded image. ``train.idx`` lines are ``key<TAB>offset``.
Record 0 with flag > 0 is the header: label = [N+1, N+1+C]; records 1..N are images,
records N+1..N+C are per-identity ranges label = [first, end)."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from morphgen.errors import DataError

MAGIC = 0xCED7230A
_HEADER = struct.Struct("IfQQ")


def read_index(idx_path: Path) -> dict[int, int]:
    """key -> byte offset from an insightface .idx file (``key<TAB>offset`` lines)."""
    out = {}
    for n, line in enumerate(Path(idx_path).read_bytes().splitlines(), 1):
        if line.strip():
            try:
                k, off = line.split(b"\t")[:2]
                k, off = int(k), int(off)
                if k < 0 or off < 0:
                    raise ValueError
                out[k] = off
            except ValueError:  # not "key<TAB>offset" (int() takes ASCII digits as bytes)
                raise DataError(f"{idx_path}:{n} is not an insightface RecordIO index line (key<TAB>offset, "
                                "both >= 0)") from None
    return out


def unpack(payload: bytes) -> tuple[np.ndarray, bytes]:
    """(labels float32 array, image bytes) of one record payload; a DataError where the
    payload is shorter than its header says (an image read takes that as undecodable)."""
    if len(payload) < _HEADER.size:
        raise DataError(f"a record of {len(payload)} bytes is shorter than its {_HEADER.size}-byte header")
    flag, label, _id, _id2 = _HEADER.unpack_from(payload, 0)
    pos = _HEADER.size
    if flag > 0:
        if pos + 4 * flag > len(payload):
            raise DataError(f"a record's header announces {flag} labels, more than its {len(payload)} bytes hold")
        labels = np.frombuffer(payload, np.float32, flag, pos).copy()
        pos += 4 * flag
    else:
        labels = np.array([label], np.float32)
    return labels, payload[pos:]


class RecordReader:
    """Random access to records by key. Opens the file lazily, so a reader can be sent to
    DataLoader worker processes (each opens its own handle)."""

    def __init__(self, rec_path: Path, idx_path: Path | None = None):
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path) if idx_path else self.rec_path.with_suffix(".idx")
        if not self.rec_path.is_file() or not self.idx_path.is_file():
            raise DataError(f"RecordIO needs {self.rec_path.name} and {self.idx_path.name} in {self.rec_path.parent}")
        self.index = read_index(self.idx_path)
        self._fh = None

    def __getstate__(self):
        return {**self.__dict__, "_fh": None}

    def read(self, key: int) -> bytes:
        if self._fh is None:
            self._fh = open(self.rec_path, "rb")
        if key not in self.index:
            raise DataError(f"record {key} is not in {self.idx_path}")
        self._fh.seek(self.index[key])
        parts = []
        while True:
            head = self._fh.read(8)
            if len(head) < 8:
                raise DataError(f"{self.rec_path} is truncated at record {key}")
            magic, lrec = struct.unpack("II", head)
            if magic != MAGIC:
                raise DataError(f"{self.rec_path} is not an insightface RecordIO file (bad magic at record {key})")
            cflag, length = lrec >> 29, lrec & ((1 << 29) - 1)
            parts.append(self._fh.read(length))
            self._fh.read((4 - length % 4) % 4)
            if cflag in (0, 3):
                return b"".join(parts)

    def labels_and_image(self, key: int) -> tuple[np.ndarray, bytes]:
        return unpack(self.read(key))


def scan_recordio(folder: Path) -> tuple[RecordReader, list[int], np.ndarray, tuple[int, int] | None]:
    """Reader, image keys, integer label per image and (H, W) from ``property``."""
    folder = Path(folder)
    reader = RecordReader(folder / "train.rec", folder / "train.idx")
    size = None
    prop = folder / "property"
    if prop.is_file():
        try:
            vals = [int(v) for v in prop.read_text(encoding="utf-8-sig").strip().split(",")]
        except ValueError:  # (UnicodeDecodeError is one)
            raise DataError(f"{prop} is not an insightface property file (classes,height,width)") from None
        size = (vals[1], vals[2]) if len(vals) >= 3 else None
    def label_values(key: int, n: int) -> list[int]:
        """The first `n` labels of record `key` as whole numbers; DataError if damaged."""
        try:
            vals = reader.labels_and_image(key)[0][:n]
        except DataError as exc:
            raise DataError(f"{reader.rec_path}: record {key} is damaged ({exc})") from None
        if len(vals) < n or not np.all(np.isfinite(vals)) or np.any(np.abs(vals) >= 2**31):
            raise DataError(f"{reader.rec_path}: record {key}'s label {vals.tolist()} is not {n} whole number(s): "
                            "the file is damaged")
        return [int(v) for v in vals]

    try:
        head = reader.labels_and_image(0)[0] if 0 in reader.index else np.zeros(0)
    except DataError as exc:
        raise DataError(f"{reader.rec_path}: record 0 is damaged ({exc})") from None
    if 0 in reader.index and len(head) >= 2:
        n_end, c_end = label_values(0, 2)
        if not (1 <= n_end <= c_end and c_end - 1 <= len(reader.index)):  # every record it names is indexed
            raise DataError(f"{reader.rec_path}: its header record names records 1..{n_end - 1} and identities "
                            f"{n_end}..{c_end - 1}, but {reader.idx_path.name} indexes {len(reader.index)}: "
                            "the file is damaged")
        keys = list(range(1, n_end))
        labels = np.full(len(keys), -1, np.int64)
        for cls, k in enumerate(range(n_end, c_end)):      # identity records: [first, end)
            first, end = label_values(k, 2)
            if not 1 <= first <= end <= n_end:
                raise DataError(f"{reader.rec_path}: identity record {k} spans images [{first}, {end}), outside "
                                f"[1, {n_end}): the file is damaged")
            labels[first - 1:end - 1] = cls
        missing = np.nonzero(labels < 0)[0]
        for i in missing:                                    # images outside any identity range
            labels[i] = label_values(keys[i], 1)[0]
    else:
        keys = sorted(reader.index)
        labels = np.array([label_values(k, 1)[0] for k in keys], np.int64)
    return reader, keys, labels, size
