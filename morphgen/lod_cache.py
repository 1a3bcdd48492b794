"""The on-disk cache of :func:`.lod.decimated`: a decimation's kept vertices and
triangles, so that a command skips the collapses an earlier one made.

Why: the decimation of a Basel mesh takes 0.2-0.7 s (the collapses, and numba loading
their kernels) before any worker starts, in every `morphgen render`, and in every
spawned worker or executor process, though it is a pure function of the model and the
level. numba caches its compiled kernels on disk for the same reason.

Where: ``$MORPHGEN_CACHE_DIR/lod`` (else ``$XDG_CACHE_HOME/morphgen/lod``, else
``~/.cache/morphgen/lod``); ``MORPHGEN_CACHE_DIR=off`` turns the cache off. One ``.npz``
of a few hundred kB per decimation, named by a hash of its inputs (the key
:func:`.lod._inputs_digest` makes: shapes, triangles, locked vertices, level) and of
``lod.py``'s own source, so that a changed model, loader or decimation never reads an
old result. A folder others can write to is not for this cache (an entry can be planted
there); the default is the user's own.

Trust: a cache is never believed over the computation. A file that cannot be read, holds
another key, or whose arrays are not a valid decimation of this model (ids out of range
or unsorted, a locked vertex gone, triangles over missing vertices) is ignored and
written again; a folder that cannot be written is skipped silently (the cache only saves
time). Files are written whole (:func:`.outputs.replace_atomically`), so a reader, a
concurrent writer or a kill never meets half a file.

Size: each model, render size and morphgen version (the source digest) makes new
entries, and nothing else would ever remove the old ones. A write keeps the folder to
the ``MAX_ENTRIES`` entries used last (a read marks an entry used, by its time stamp) and
removes temporary files that a killed writer left over an hour ago: at a few hundred kB
an entry, the folder stays under about 50 MB.
"""
from __future__ import annotations

import functools
import hashlib
import io
import os
import time
from pathlib import Path

import numpy as np

from .outputs import is_temporary, replace_atomically

ENV = "MORPHGEN_CACHE_DIR"
MAX_ENTRIES = 128       # entries kept, the ones used last
_STALE_TMP_S = 3600.0   # a temporary file this old was left by a writer that was killed


def cache_dir() -> Path | None:
    """The folder of the decimation cache, or None when ``MORPHGEN_CACHE_DIR=off``."""
    root = os.environ.get(ENV, "")
    if root.strip().lower() == "off":
        return None
    if root:
        return Path(root) / "lod"
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):  # unset, or relative (which the XDG spec says to ignore)
        base = os.path.join(os.path.expanduser("~"), ".cache")
    if not os.path.isabs(base):  # no home to expand "~" to: no cache, rather than one in the working folder
        return None
    return Path(base) / "morphgen" / "lod"


@functools.cache
def _code_digest() -> str:
    """sha256 of the decimation's source: any change to it is a new cache."""
    return hashlib.sha256(Path(__file__).with_name("lod.py").read_bytes()).hexdigest()


def _path(key: tuple) -> tuple[Path, str] | None:
    folder = cache_dir()
    if folder is None:
        return None
    text = repr(key)  # the key's own text is stored too, and compared when read back
    name = hashlib.sha256((_code_digest() + text).encode()).hexdigest()[:32]
    return folder / f"{name}.npz", text


def load(key: tuple, n_vertices: int, locked: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(kept vertex ids, triangles) stored for ``key``, or None where there is no valid
    entry. ``n_vertices`` and ``locked`` (the vertices a decimation must keep) check it.
    Whatever an unreadable or foreign file raises (numpy's errors for a truncated zip,
    a bad member, a plain .npy, or the folder's permissions) means "no entry"."""
    try:
        where = _path(key)
        if where is None or not where[0].is_file():
            return None
        with np.load(where[0], allow_pickle=False) as f:
            if not isinstance(f, np.lib.npyio.NpzFile):
                return None
            text, keep, tris = str(f["key"]), np.asarray(f["keep"]), np.asarray(f["tris"])
        ok = (text == where[1] and keep.dtype == np.int64 and keep.ndim == 1 and len(keep) >= 3
              and tris.dtype == np.int32 and tris.ndim == 2 and tris.shape[1] == 3 and len(tris) >= 1
              and keep[0] >= 0 and keep[-1] < n_vertices and bool(np.all(np.diff(keep) > 0))
              and tris.min() >= 0 and tris.max() < len(keep)
              and bool(np.all(np.isin(np.flatnonzero(locked), keep))))
    except Exception:  # noqa: BLE001 (a cache: any failure to read it is a miss)
        return None
    if not ok:
        return None
    try:
        os.utime(where[0])  # used now: pruning keeps the entries used last
    except OSError:
        pass
    return keep, tris


def store(key: tuple, keep: np.ndarray, tris: np.ndarray) -> None:
    """Write the entry of ``key``; a folder that cannot be written is left as it is."""
    try:
        where = _path(key)
        if where is None:
            return
        buf = io.BytesIO()
        np.savez(buf, key=np.array(where[1]), keep=np.asarray(keep, np.int64), tris=np.asarray(tris, np.int32))
        where[0].parent.mkdir(parents=True, exist_ok=True)
        replace_atomically(where[0], buf.getvalue())
        prune(where[0].parent, MAX_ENTRIES)
    except Exception:  # noqa: BLE001, S110 (a cache: any failure to write it costs only the time)
        pass


def prune(folder: Path, keep: int) -> None:
    """Remove all but the ``keep`` entries of ``folder`` used last, and temporary files
    older than an hour. Files another process removes meanwhile, or that cannot be
    removed, are passed over: the next write tries again."""
    now = time.time()
    entries = []
    for entry in os.scandir(folder):
        try:
            if entry.name.endswith(".npz") and entry.is_file():
                entries.append((entry.stat().st_mtime, entry.path))
            elif is_temporary(entry.name) and now - entry.stat().st_mtime > _STALE_TMP_S:
                os.unlink(entry.path)
        except OSError:
            continue
    entries.sort(reverse=True)
    for _, path in entries[keep:]:
        try:
            os.unlink(path)
        except OSError:
            continue
