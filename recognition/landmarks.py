"""Five-point landmarks for images that come without them: MTCNN over a process pool,
a second, more permissive pass for the faces the first pass misses, and a JSON cache.

Why two passes: MTCNN's default thresholds (0.6, 0.7, 0.7) miss some full profiles
(CFP-FP, Multi-PIE at +-90 degrees) and tight crops where the face touches the border.
The second pass pads the image with a grey border of 25 % of its longer side, lowers the
thresholds to (0.5, 0.6, 0.6) and keeps the most probable face (not the largest, which
on a padded tight crop can be a spurious box). On the CFP folds in ``../shared/data`` it
finds every profile the first pass misses (5 % of them). Images still without a face are
reported, never dropped silently: evaluations crop them at the dataset's typical face
position (``recognition.evaluation.common``), training skips them and counts them.

Detection runs in ``workers`` spawned processes (one torch and OpenCV thread each); the
pool starts only when at least ``POOL_MIN`` images miss the cache, so small sets and
cached reruns pay no start-up. A worker that fails reaches the caller as one DataError
line. Results are cached in ``cache_dir/landmarks-v2-<hash of the root>.json`` keyed by
path, size and mtime, so a second evaluation of the same folder decodes nothing.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Self

import numpy as np

from morphgen.errors import DataError
from morphgen.outputs import replace_atomically

CACHE_VERSION = "v2"
FIRST_PASS = {"thresholds": (0.6, 0.7, 0.7), "pad": 0.0, "select": "largest"}
SECOND_PASS = {"thresholds": (0.5, 0.6, 0.6), "pad": 0.25, "select": "probability"}
POOL_MIN = 64          # fewer cache misses than this: detect in this process
DECODE_POOL_MIN = 5000  # the same for images only decoded (checked): ~100x cheaper than MTCNN
CHUNK = 16             # images per task sent to a worker
SAVE_EVERY_S = 60.0    # the cache is written this often while detection runs


def default_workers() -> int:
    """One detection process per core this process may use."""
    return max(1, len(os.sched_getaffinity(0)))


def detect_landmarks(img: np.ndarray) -> tuple[list | None, int]:
    """(five points as nested lists rounded to 0.01 px, pass 1 or 2) of one RGB image, or
    (None, 0) when neither pass finds a face."""
    from .detect import detect_faces

    for k, opts in enumerate((FIRST_PASS, SECOND_PASS), 1):
        res = detect_faces([img], **opts)[0]
        if res is not None:
            return np.round(res[2], 2).tolist(), k
    return None, 0


def read_cache(path: Path | None) -> dict:
    """A JSON landmark cache, or {} when absent or unreadable (it is rebuilt then)."""
    if path is None or not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError:
        return {}


def write_cache(path: Path, cache: dict) -> None:
    """Write the cache atomically (a temporary file renamed over it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(path, json.dumps(cache))


def cache_file(cache_dir: Path, root: Path) -> Path:
    tag = hashlib.sha1(str(Path(root).resolve()).encode()).hexdigest()[:12]
    return Path(cache_dir) / f"landmarks-{CACHE_VERSION}-{tag}.json"


# ----------------------------------------------------------------------------- workers

_LOOK = None  # what a worker process does to one item (`run_pool`'s `look`), set once per process


def _init_worker(look) -> None:
    """A landmark worker: one thread, ends with the main process (after a kill -9 of it
    the workers slept on, blocked on their pipes)."""
    import cv2
    import torch

    from morphgen.dataset.workers import exit_with_parent

    global _LOOK
    exit_with_parent()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    _LOOK = look


def _look(source, rel: str, stamp: list, detect: bool) -> dict:
    """The cache entry of one image: stamp, readable, and (with `detect`) lm and pass."""
    from .data import decode_ref

    img = decode_ref(*source, rel)
    hit = {"stamp": stamp, "ok": img is not None}
    if img is not None:
        hit["hw"] = list(img.shape[:2])
    if img is not None and detect:
        hit["lm"], hit["pass"] = detect_landmarks(img)
    return hit


def _work(items: list[tuple]) -> list[tuple[int, dict]] | str:
    """A worker's task: the cache entries of a chunk of (index, *arguments of look), or the
    error as one line."""
    try:
        return [(i, _LOOK(*args)) for i, *args in items]
    except Exception as exc:  # noqa: BLE001 - any failure becomes the caller's one-line error
        return f"{type(exc).__name__}: {exc}".splitlines()[0]


def run_pool(look, todo: list[tuple], workers: int, bar, take) -> None:
    """``take(index, look(*arguments))`` for the items (index, *arguments) of `todo` as they
    come, computed in `workers` spawned processes (one thread each), `CHUNK` items a task,
    `bar` advanced with them. `look` must pickle (a module-level function, or a partial of
    one): it goes to each worker once. A failure in a worker, a dead worker or a Ctrl-C
    stops every worker and reaches the caller as one DataError line (or the
    KeyboardInterrupt), what was taken before it kept."""
    chunks = [todo[k:k + CHUNK] for k in range(0, len(todo), CHUNK)]
    try:
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                 initargs=(look,)) as pool:
            pending = {pool.submit(_work, c) for c in chunks}
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        res = fut.result()
                        if isinstance(res, str):
                            raise DataError(f"landmark detection failed in a worker process: {res}")
                        for i, hit in res:
                            take(i, hit)
                        bar.update(len(res))
            except BaseException:  # Ctrl-C, or an error: no other image is looked at
                # imported here, where it is needed: the module brings the renderer's package
                from morphgen.dataset.ctrl_c import end_workers

                end_workers(pool)  # (the pool's exit would detect every chunk first: 48 s on CFP)
                raise
    except BrokenProcessPool:
        raise DataError("a landmark detection process died (out of memory?): rerun with fewer workers") from None


class CacheWriter:
    """A landmark cache written as results come: every ``SAVE_EVERY_S`` seconds, and on
    leaving its ``with`` block whether the detection finished or was stopped (Ctrl-C, an
    error), so that a rerun detects only what is left. Detection on a large set takes
    hours of MTCNN; the cache was written once, after the last image, and an interrupted
    run kept none of it."""

    def __init__(self, path: Path | None, cache: dict):
        self.path, self.cache = path, cache
        self.dirty, self.last = False, time.monotonic()

    def put(self, key: str, hit: dict) -> None:
        self.cache[key] = hit
        self.dirty = True
        if time.monotonic() - self.last > SAVE_EVERY_S:
            self.save()

    def save(self) -> None:
        if self.path is not None and self.dirty:
            write_cache(self.path, self.cache)
            self.dirty = False
        self.last = time.monotonic()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """The last save; where the detection is already failing (a Ctrl-C, a worker's
        error), a save that fails too (a full disk) does not hide that error."""
        try:
            self.save()
        except OSError:
            if exc_type is None:
                raise


# ----------------------------------------------------------------------------- the set

def find_landmarks(iset, cache_dir: Path | None = None, detect: bool = True, progress: bool = False,
                   workers: int | None = None):
    """Decode every image of `iset` once, run the two MTCNN passes on those that lack
    landmarks (when `detect`), and drop unreadable images (``report["unreadable"]``) and
    faceless ones (``report["no_face"]``, names in ``iset.no_face``). Images with given
    landmarks (a morphgen render's) are decoded too: a corrupt file is a counted skip,
    never a black or borrowed crop later. Files found only by the second pass are listed
    in ``iset.second_pass``. `workers` processes decode and detect in parallel (default:
    one per core); `progress` shows a bar with rate and ETA."""
    if len(iset) == 0 or iset.kind == "recordio":
        return iset
    lacking = np.isnan(iset.landmarks).any(axis=(1, 2))
    from .data import source_file

    cache_path = cache_file(cache_dir, iset.root) if cache_dir is not None else None
    cache = read_cache(cache_path)
    keep = np.ones(len(iset), bool)
    entries: dict[int, dict] = {}
    misses: list[tuple[int, str, list, bool]] = []
    for i in range(len(iset)):
        rel = iset.files[i]
        try:
            st = source_file(iset, rel).stat()
        except OSError:  # vanished since the folder was listed
            keep[i] = False
            continue
        stamp = [st.st_size, int(st.st_mtime)]
        hit = cache.get(rel) if lacking[i] else None  # images with landmarks are checked, not cached
        det = bool(detect and lacking[i])
        if hit is None or hit.get("stamp") != stamp or (det and hit.get("ok") and "lm" not in hit):
            misses.append((i, rel, stamp, det))
        else:
            entries[i] = hit
    if misses:
        from morphgen.progress import progress_bar

        workers = default_workers() if workers is None else max(1, int(workers))
        source = (Path(iset.root), iset.kind, iset.reader)
        n_detect = sum(m[3] for m in misses)
        what = "landmarks (MTCNN)" if n_detect else "checking images"
        with CacheWriter(cache_path if lacking.any() else None, cache) as writer, \
                progress_bar(total=len(misses), desc=what, unit="img", enabled=progress) as bar:

            def take(i: int, hit: dict) -> None:
                entries[i] = hit
                if lacking[i]:  # (images with landmarks are checked, not cached)
                    writer.put(iset.files[i], hit)

            if workers > 1 and (n_detect >= POOL_MIN or len(misses) >= DECODE_POOL_MIN):
                run_pool(partial(_look, source), misses, min(workers, -(-len(misses) // CHUNK)), bar, take)
            else:
                for i, rel, stamp, det in misses:
                    take(i, _look(source, rel, stamp, det))
                    bar.update(1)
    lms = iset.landmarks.copy()
    no_face, second, sizes = [], [], dict(iset.sizes)
    for i, hit in entries.items():
        rel = iset.files[i]
        if hit.get("hw"):
            sizes[rel] = tuple(hit["hw"])
        if not hit["ok"]:
            keep[i] = False
        elif detect and lacking[i]:
            if hit["lm"] is None:
                keep[i] = False
                no_face.append(rel)
            else:
                lms[i] = np.asarray(hit["lm"], np.float32)
                if hit.get("pass") == 2:
                    second.append(rel)
    out = replace(iset, landmarks=lms, sizes=sizes).take(np.nonzero(keep)[0])
    out.count("unreadable", int((~keep).sum()) - len(no_face))
    out.count("no_face", len(no_face))
    out.no_face = iset.no_face + no_face
    out.second_pass = iset.second_pass + second
    return out
