"""Writing SYN-1M-style datasets: chunked by identity, atomic, resumable, sharded.

Layout of DIR::

    manifest.json                      version, resolved config, model hash, counts, shards
    images/<id:06d>/<id:06d>_<n:04d>.png  (+ _depth.png, _normals.png ... beside it)
    params/chunk_<c:06d>.jsonl         one JSON object per image (all render parameters)
    wds/chunk_<c:06d>.tar              with --container wds instead of images/

A chunk is a run of `chunk_ids` identities. Its images are written under `.partial/` and
renamed into place; its params file is renamed into `params/` last and is the chunk's
completion marker. An interrupted run therefore leaves no file that looks finished but is
not, and `--resume` re-renders exactly the chunks without a marker. Every image depends on
(seed, identity, sample) and the config only, so the bytes do not depend on worker count,
chunk order, shard or resume.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
import uuid
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field, fields, replace
from itertools import chain, islice
from pathlib import Path

import cv2
import numpy as np

from . import __version__
from .errors import ConfigError, DataError, MorphgenError
from .png import encode_png
from .render.threads import limit_threads
from .render_plan import RenderPlan, RenderResult
from .scene import SceneConfig, SceneRenderer

PARAMS_DIR, IMAGES_DIR, WDS_DIR, PARTIAL_DIR = "params", "images", "wds", ".partial"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class OutputConfig:
    image_format: str = "png"  # png | jpg
    jpg_quality: int = 95
    container: str = "folder"  # folder | wds
    rps: bool = False  # Basel-generator-style per-image .rps JSON beside each image
    chunk_ids: int = 10

    def __post_init__(self) -> None:
        if self.image_format not in ("png", "jpg"):
            raise ConfigError(f"unknown image format {self.image_format!r}: use png or jpg")
        if not 1 <= self.jpg_quality <= 100:
            raise ConfigError(f"jpg quality must be 1..100, got {self.jpg_quality}")
        if self.container not in ("folder", "wds"):
            raise ConfigError(f"unknown container {self.container!r}: use folder or wds")
        if self.chunk_ids < 1:
            raise ConfigError(f"chunk size must be >= 1 identity, got {self.chunk_ids}")


@dataclass(frozen=True)
class DatasetJob:
    """What decides a dataset's bytes: the scene config plus counts and output format."""

    scene: SceneConfig
    per_id: int
    output: OutputConfig = field(default_factory=OutputConfig)

    def __post_init__(self) -> None:
        if self.per_id < 1:
            raise ConfigError(f"--per-id must be >= 1, got {self.per_id}")
        grid = self.scene.sampling.grid
        if grid is not None and self.per_id > len(grid.points()):
            raise ConfigError(f"--per-id {self.per_id} exceeds the controlled grid's {len(grid.points())} points")

    @property
    def n_ids(self) -> int:
        return self.scene.sampling.n_identities

    @property
    def n_chunks(self) -> int:
        return -(-self.n_ids // self.output.chunk_ids)

    def chunk_identities(self, chunk: int) -> range:
        c = self.output.chunk_ids
        return range(chunk * c, min((chunk + 1) * c, self.n_ids))

    def to_dict(self) -> dict:
        return {"scene": self.scene.to_dict(), "per_id": self.per_id, "output": asdict(self.output)}

    def config_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def image_stem(identity: int, sample: int) -> str:
    return f"{identity:06d}_{sample:04d}"


def chunk_marker(out: Path, chunk: int) -> Path:
    return out / PARAMS_DIR / f"chunk_{chunk:06d}.jsonl"


def parse_shard(spec: str | None) -> tuple[int, int]:
    """'K/N' (1-based K) -> (K-1, N); None -> (0, 1)."""
    if spec is None:
        return 0, 1
    try:
        k, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {spec!r}: write K/N, e.g. 2/8") from None
    if n < 1 or not 1 <= k <= n:
        raise ConfigError(f"--shard {spec!r}: K must be in 1..N and N >= 1")
    return k - 1, n


# ---- encoding ---------------------------------------------------------------------------
def encode_image(img: np.ndarray, fmt: str, quality: int) -> bytes:
    """RGB uint8/uint16 (H,W,3) or grey (H,W) -> PNG (see morphgen.png) or JPEG bytes (cv2)."""
    if fmt == "jpg" and img.dtype == np.uint8:
        bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise DataError("JPEG encoding failed")
        return buf.tobytes()
    return encode_png(img)  # 16-bit modalities (depth) always go to PNG


def _suffix(img: np.ndarray, fmt: str) -> str:
    return "jpg" if fmt == "jpg" and img.dtype == np.uint8 else "png"


def rps_record(rec: dict, size: int) -> dict:
    """The Basel generator's render-parameter JSON shape for one image (the parts we model)."""
    return {
        "version": "V4",
        "pose": {"yaw": np.deg2rad(rec["yaw"]), "pitch": np.deg2rad(rec["pitch"]), "roll": np.deg2rad(rec["roll"])},
        "environmentMap": {"@type": "SphericalHarmonicsLight", "coefficients": rec["sh"]},
        "momo": {"shape": rec["shape"], "color": rec["color"], "expression": rec["expression"]},
        "imageSize": {"width": size, "height": size},
        "landmarks": rec.get("landmarks", []),
    }


# ---- one chunk (runs in a worker process) --------------------------------------------------
_WORKER: dict = {}


def _worker_init(job_dict: dict) -> None:
    """Per-process set-up: one thread per library (parallelism comes from processes)."""
    limit_threads(1)
    job = job_from_dict(job_dict)
    _WORKER["job"] = job
    _WORKER["renderer"] = SceneRenderer(job.scene)


def _pool_worker_init(job_dict: dict) -> None:
    """`_worker_init` for the processes of our own pools, which also exit with the main process.
    An error here is kept and raised by every task (`_worker_state`): raised from an
    initializer it would only break the pool, and the user would see a traceback of
    BrokenProcessPool instead of the message."""
    _exit_with_parent()
    try:
        _worker_init(job_dict)
    except Exception as exc:  # noqa: BLE001 (handed to the main process by the tasks)
        _WORKER["init_error"] = exc


def _worker_state() -> tuple[DatasetJob, SceneRenderer]:
    """This worker's job and renderer, or the error its set-up raised."""
    if "init_error" in _WORKER:
        raise _WORKER["init_error"]
    return _WORKER["job"], _WORKER["renderer"]


def _exit_with_parent() -> None:
    """End this worker when the process that spawned it dies. A pool worker holds both ends
    of the executor's queue pipes, so it never sees end-of-file after a kill -9 of the main
    process and would otherwise sleep on forever, holding its memory."""
    import multiprocessing.connection
    import threading

    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def _render_chunk_in_worker(out: str, chunk: int) -> tuple[int, int, int]:
    return render_chunk(Path(out), *_worker_state(), chunk)


def render_chunk(out: Path, job: DatasetJob, renderer: SceneRenderer, chunk: int) -> tuple[int, int, int]:
    """Render and write one chunk atomically (CPU path: one identity per renderer call, so an
    image's bytes do not depend on the chunk size); returns (chunk, images, bytes)."""
    items = []
    for identity in job.chunk_identities(chunk):
        params = [renderer.sampler.image_params(identity, s) for s in range(job.per_id)]
        items += [(p.to_json(), r) for p, r in zip(params, renderer.render(params))]
    return write_chunk(out, job, chunk, items)


def _extend_json(obj_json: str, more: dict) -> str:
    """``json.dumps(obj | more)`` from ``json.dumps(obj)``, for non-empty dicts with distinct
    keys: the image's params are serialised where they are sampled (a planner, on the GPU
    path) and its render record added here."""
    if not more or not obj_json.startswith("{") or obj_json == "{}":
        raise ValueError("_extend_json joins two non-empty JSON objects")
    return f"{obj_json[:-1]}, {json.dumps(more)[1:]}"


def write_chunk(out: Path, job: DatasetJob, chunk: int, items: list[tuple[str, RenderResult]]) -> tuple[int, int, int]:
    """Encode and write a rendered chunk under .partial/, move it into place, then write its
    params file (the completion marker) last; returns (chunk, images, bytes).

    items: per image, in the chunk's order (identity by identity, samples in order), its
    params record as JSON (``ImageParams.to_json()``) and its render."""
    out = Path(out)
    ids = job.chunk_identities(chunk)
    if len(items) != len(ids) * job.per_id:
        raise ValueError(f"chunk {chunk} has {len(items)} images, expected {len(ids) * job.per_id}")
    tmp = out / PARTIAL_DIR / f"chunk_{chunk:06d}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    fmt, q = job.output.image_format, job.output.jpg_quality
    records: list[str] = []
    n_bytes = 0
    tar = tarfile.open(tmp / "shard.tar", "w") if job.output.container == "wds" else None  # noqa: SIM115 (closed below, before the move)
    for identity in ids:
        (tmp / f"{identity:06d}").mkdir()
    for n, (params_json, res) in enumerate(items):
        identity = ids[n // job.per_id]
        stem = image_stem(identity, n % job.per_id)
        name = f"{stem}.{_suffix(res.rgb, fmt)}"
        files = {name: encode_image(res.rgb, fmt, q)}
        for extra, img in res.extras.items():
            files[f"{stem}_{extra}.{_suffix(img, fmt)}"] = encode_image(img, fmt, q)
        image = f"{WDS_DIR}/chunk_{chunk:06d}.tar:{name}" if tar is not None else f"{IMAGES_DIR}/{identity:06d}/{name}"
        line = _extend_json(params_json, res.record() | {"image": image})
        if job.output.rps:
            files[f"{stem}.rps"] = json.dumps(rps_record(json.loads(line), job.scene.size)).encode()
        if tar is not None:
            files[f"{stem}.json"] = line.encode()
            files[f"{stem}.cls"] = str(identity).encode()
            for fname, data in files.items():
                info = tarfile.TarInfo(fname)
                info.size, info.mtime = len(data), 0  # fixed mtime: byte-identical shards
                tar.addfile(info, io.BytesIO(data))
        else:
            for fname, data in files.items():
                (tmp / f"{identity:06d}" / fname).write_bytes(data)
        n_bytes += sum(len(d) for d in files.values())
        records.append(line)
    # Move the finished parts into place, then write the marker (params file) last.
    if tar is not None:
        tar.close()
        (out / WDS_DIR).mkdir(exist_ok=True)
        os.replace(tmp / "shard.tar", out / WDS_DIR / f"chunk_{chunk:06d}.tar")
    else:
        for identity in ids:
            dst = out / IMAGES_DIR / f"{identity:06d}"
            if dst.exists():  # left by an interrupted earlier try of this chunk
                shutil.rmtree(dst)
            os.replace(tmp / f"{identity:06d}", dst)
    marker_tmp = tmp / "params.jsonl"
    with open(marker_tmp, "w") as f:
        f.write("\n".join(records) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(marker_tmp, chunk_marker(out, chunk))
    shutil.rmtree(tmp, ignore_errors=True)
    return chunk, len(records), n_bytes


# ---- the run ---------------------------------------------------------------------------
def job_from_dict(d: dict) -> DatasetJob:
    return DatasetJob(SceneConfig.from_dict(d["scene"]), int(d["per_id"]), OutputConfig(**d["output"]))


def estimate_bytes(job: DatasetJob) -> int:
    """Rough size on disk, for the free-space check (PNG of rendered faces ~0.6 B/pixel)."""
    px = job.scene.size**2 * 3
    per_image = px * (0.65 if job.output.image_format == "png" else 0.17)
    per_image *= 1 + 0.7 * len(job.scene.outputs)
    return int(per_image * job.n_ids * job.per_id)


def prepare_output(out: Path, job: DatasetJob, resume: bool, overwrite: bool, sharded: bool = False) -> None:
    """Refuse to mix datasets: a non-empty folder must hold this very config, and be resumed
    (or be another shard's part of it)."""
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite contradict each other: choose one")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")
    manifest = out / MANIFEST
    if out.exists() and any(out.iterdir()):
        if overwrite:
            if not manifest.exists() and not (out / PARAMS_DIR).exists():
                raise ConfigError(f"--out {out} is not empty and not a morphgen dataset: refusing to delete it; choose another folder")
            shutil.rmtree(out)
        elif not manifest.exists():
            raise ConfigError(f"--out {out} is not empty and holds no morphgen dataset: choose an empty folder")
        else:
            try:
                old = json.loads(manifest.read_text())
            except (OSError, json.JSONDecodeError):
                raise ConfigError(f"{manifest} is unreadable: use --overwrite to start again") from None
            if old.get("config_hash") != job.config_hash():
                raise ConfigError(f"--out {out} holds a dataset with a different config: use another folder, or --overwrite to replace it")
            if not (resume or sharded):
                raise ConfigError(f"--out {out} already holds this dataset: use --resume to finish it, or --overwrite to start again")
    needed = estimate_bytes(job)
    probe = out if out.exists() else out.parent if out.parent.exists() else Path(".")
    free = shutil.disk_usage(probe).free
    if needed > free:
        raise ConfigError(f"the dataset needs about {needed / 1e9:.1f} GB but {probe} has {free / 1e9:.1f} GB free")
    for sub in (IMAGES_DIR, PARAMS_DIR, PARTIAL_DIR):
        (out / sub).mkdir(parents=True, exist_ok=True)


def write_manifest(out: Path, job: DatasetJob, shard: tuple[int, int]) -> dict:
    """Written atomically at start and end; completion is read from the chunk markers on disk."""
    done = sorted(int(p.stem.split("_")[1]) for p in (out / PARAMS_DIR).glob("chunk_*.jsonl"))
    k, n = shard
    manifest = {
        "morphgen_version": __version__,
        "config_hash": job.config_hash(),
        "config": job.to_dict(),
        "model_sha256": job.scene.model_hash(),
        "seed": job.scene.sampling.seed,
        "counts": {"identities": job.n_ids, "per_id": job.per_id, "images": job.n_ids * job.per_id,
                   "chunks": job.n_chunks, "chunks_done": len(done),
                   "images_done": sum(len(job.chunk_identities(c)) for c in done) * job.per_id},
        "complete": len(done) == job.n_chunks,
        "shards": {f"{k + 1}/{n}": {"chunks": len(range(k, job.n_chunks, n)),
                                    "done": len([c for c in done if c % n == k])}},
    }
    old_path = out / MANIFEST
    if old_path.exists():  # keep other shards' entries
        try:
            old = json.loads(old_path.read_text())
            if old.get("config_hash") == job.config_hash():
                for key, val in old.get("shards", {}).items():
                    if key not in manifest["shards"]:
                        kk, nn = (int(x) for x in key.split("/"))
                        val["done"] = len([c for c in done if c % nn == kk - 1])
                        manifest["shards"][key] = val
        except (OSError, json.JSONDecodeError, ValueError):
            pass
    tmp = out / f".{MANIFEST}.tmp{os.getpid()}"
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, old_path)
    return manifest


def pending_chunks(out: Path, job: DatasetJob, shard: tuple[int, int]) -> list[int]:
    k, n = shard
    return [c for c in range(k, job.n_chunks, n) if not chunk_marker(out, c).exists()]


def discard_chunk(out: Path, job: DatasetJob, chunk: int) -> None:
    """Remove what a failed chunk left: its folder under .partial/, and any of its identity
    folders or shard already moved into place (without its params marker none is complete)."""
    shutil.rmtree(out / PARTIAL_DIR / f"chunk_{chunk:06d}", ignore_errors=True)
    for identity in job.chunk_identities(chunk):
        folder = out / IMAGES_DIR / f"{identity:06d}"
        if folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
    (out / WDS_DIR / f"chunk_{chunk:06d}.tar").unlink(missing_ok=True)


def chunk_error(out: Path, job: DatasetJob, chunk: int, exc: Exception) -> MorphgenError:
    """The one-line error for a chunk that raised, in a worker or here, after discarding what
    it left: a MorphgenError keeps its class and message, anything else (an OSError, a
    crashed worker) is named by its type. Both say that finished chunks are kept."""
    discard_chunk(out, job, chunk)
    if isinstance(exc, BrokenProcessPool):
        what = f"a worker process died while rendering chunk {chunk} (killed, or out of memory?)"
    elif isinstance(exc, MorphgenError):
        what = str(exc)
    else:
        what = f"chunk {chunk} failed: {exc.__class__.__name__}: {' '.join(str(exc).split())}"
    cls = type(exc) if isinstance(exc, MorphgenError) else MorphgenError
    return cls(f"{what}; finished chunks are kept in {out}: fix this and run the same command with --resume")


def chunk_result(fut: Future, out: Path, job: DatasetJob, chunk: int):
    """``fut.result()``, or the one-line `chunk_error` for what it raised."""
    try:
        return fut.result()
    except Exception as exc:
        raise chunk_error(out, job, chunk, exc) from exc


def run(out: Path, job: DatasetJob, workers: int = 1, shard: str | None = None, resume: bool = False,
        overwrite: bool = False, progress: bool = True, executor=None) -> dict:
    """Render the dataset (or this shard of it) into `out`; returns a summary dict.

    `executor` may be any concurrent.futures-style executor whose workers can import
    morphgen (e.g. a Dask distributed Client's `get_executor()`); by default a local process
    pool of `workers` processes, or in-process rendering when workers == 1.
    """
    from tqdm import tqdm

    shard_kn = parse_shard(shard)
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    # Every input (model and its landmarks, light prior, backgrounds) is checked here, in
    # this process, before the output folder is touched; workers then meet no surprise.
    renderer = SceneRenderer(job.scene, batch_size=1024 if job.scene.device != "cpu" else 32)
    prepare_output(out, job, resume, overwrite, sharded=shard_kn[1] > 1)
    write_manifest(out, job, shard_kn)
    todo = pending_chunks(out, job, shard_kn)
    total_images = sum(len(job.chunk_identities(c)) for c in todo) * job.per_id
    t0 = time.perf_counter()
    n_images = n_bytes = 0
    bar = tqdm(total=total_images, unit="img", disable=not progress, desc="render", smoothing=0.1)

    def done(result: tuple[int, int, int]) -> None:
        nonlocal n_images, n_bytes
        n_images, n_bytes = n_images + result[1], n_bytes + result[2]
        bar.update(result[1])
        bar.set_postfix_str(f"{n_bytes / 1e6:.0f} MB")

    try:
        if job.scene.device != "cpu":
            _run_gpu(out, job, todo, workers, done, renderer)
        elif executor is None and workers == 1:
            for c in todo:
                try:
                    result = render_chunk(out, job, renderer, c)
                except Exception as exc:
                    raise chunk_error(out, job, c, exc) from exc
                done(result)
        else:
            renderer = None  # the check's renderer is not kept: the workers make their own
            own = executor is None
            if own:
                import multiprocessing as mp

                executor = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                                               initializer=_pool_worker_init, initargs=(job.to_dict(),))
                submit = lambda c: executor.submit(_render_chunk_in_worker, str(out), c)
            else:
                submit = lambda c: executor.submit(render_chunk_standalone, str(out), job.to_dict(), c)
            running: dict[Future, int] = {}  # future -> chunk
            try:
                # Keep a bounded number of chunks in flight so memory stays flat in dataset size.
                queue = list(todo)
                limit = 2 * max(workers, 1)
                while queue or running:
                    while queue and len(running) < limit:
                        c = queue.pop(0)
                        running[submit(c)] = c
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        done(chunk_result(fut, out, job, running.pop(fut)))
            finally:
                if own:
                    executor.shutdown(wait=True, cancel_futures=True)
                for fut, c in running.items():  # in flight when one failed: drop any that failed too
                    if fut.done() and not fut.cancelled() and fut.exception() is not None:
                        discard_chunk(out, job, c)
    finally:
        bar.close()
        manifest = write_manifest(out, job, shard_kn)
    if manifest["complete"]:
        shutil.rmtree(out / PARTIAL_DIR, ignore_errors=True)
    dt = time.perf_counter() - t0
    return {"images": n_images, "seconds": dt, "images_per_s": n_images / dt if dt > 0 else 0.0,
            "bytes": n_bytes, "complete": manifest["complete"], "chunks_done": manifest["counts"]["chunks_done"],
            "chunks": job.n_chunks}


def _run_gpu(out: Path, job: DatasetJob, todo: list[int], workers: int, done,
             renderer: SceneRenderer | None = None) -> None:
    """GPU path: the main process only renders; one pool of `workers` processes does all the
    CPU work around it. Workers sample and plan each chunk (coefficients, framing,
    backgrounds: about 1.4 ms an image of numpy, which capped throughput near 600 images/s
    when the main process did it), the main process renders the finished plans in chunk
    order in device batches straight into a slot of a `PixelRing`, and the same workers
    encode and write the results from there. At most 2 x workers plans and workers + 2
    writes are in flight, so memory stays flat in dataset size; a worker's exception is
    raised here as `chunk_error`'s one line. An image's bytes depend on its chunk (planned
    in one call, rendered in its batches) and the config, so not on worker count, chunk
    order or resume. `renderer`: this scene's (batch size 1024), when the caller has one."""
    import multiprocessing as mp

    renderer = renderer or SceneRenderer(job.scene, batch_size=1024)
    chunks = iter(todo)
    max_rows, size = job.output.chunk_ids * job.per_id, job.scene.size
    planner_job = replace(job, scene=replace(job.scene, device="cpu"))  # workers never touch the device
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_pool_worker_init,
                               initargs=(planner_job.to_dict(),))  # starts its processes on first submit
    # Backgrounds come back from the planners, and pixels go out to the writers, through rings.
    bg_ring: PixelRing | None = None
    ring: PixelRing | None = None  # its row layout is known after the first render
    writes: dict = {}  # future -> (ring slot, chunk)

    def plan_next(c: int) -> tuple:
        slot = bg_ring.free.pop()
        return c, slot, pool.submit(_plan_chunk_in_worker, c, bg_ring.handle(slot, len(job.chunk_identities(c)) * job.per_id))

    try:
        bg_ring = PixelRing(out / PARTIAL_DIR, 2 * workers, [("backgrounds", "|u1", (size, size, 3))], max_rows)
        plans = deque(plan_next(c) for c in islice(chunks, 2 * workers))
        renderer.warm_up()  # device start-up overlaps the workers' (both take seconds)
        while plans:
            chunk, bg_slot, planned = plans.popleft()
            plan, records = chunk_result(planned, out, job, chunk)
            plan.backgrounds = bg_ring.views(bg_slot, len(plan))["backgrounds"]
            step = renderer.batch_size
            batches = (renderer.render_plan_arrays(slice_plan(plan, i, i + step)) for i in range(0, len(plan), step))
            first = next(batches)
            if ring is None:
                ring = PixelRing(out / PARTIAL_DIR, workers + 2, row_specs(first), max_rows)
            while not ring.free:
                finished, _ = wait(writes, return_when=FIRST_COMPLETED)
                for fut in finished:
                    slot, written = writes.pop(fut)
                    ring.free.append(slot)
                    done(chunk_result(fut, out, job, written))
            slot = ring.free.pop()
            views = ring.views(slot, len(plan))
            row = 0
            for arrays in chain((first,), batches):  # one batch at a time: memory flat in chunk size
                n = len(arrays["rgb"])
                for name, a in arrays.items():
                    views[name][row:row + n] = a
                row += n
            bg_ring.free.append(bg_slot)  # rendered: the backgrounds were read
            plans.extend(plan_next(c) for c in islice(chunks, 1))
            writes[pool.submit(_write_chunk_in_worker, str(out), chunk, ring.handle(slot, len(plan)), records)] = slot, chunk
        for fut, (_, written) in writes.items():
            done(chunk_result(fut, out, job, written))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for r in (bg_ring, ring):
            if r is not None:
                r.close()


RowSpecs = list[tuple[str, str, tuple[int, ...]]]  # (array name, dtype, shape of one row)


def row_specs(arrays: dict[str, np.ndarray]) -> RowSpecs:
    return [(name, a.dtype.str, tuple(a.shape[1:])) for name, a in arrays.items()]


def _ring_layout(specs: RowSpecs, n: int) -> tuple[list[tuple[int, int]], int]:
    """(offset, size) in bytes of each array of n rows, laid out one after another and
    64-byte aligned, and the bytes they take in all."""
    spans, offset = [], 0
    for _, dtype, shape in specs:
        size = n * int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        spans.append((offset, size))
        offset += -(-size // 64) * 64
    return spans, offset


def _ring_views(buf: np.ndarray, specs: RowSpecs, n: int) -> dict[str, np.ndarray]:
    """The arrays of n rows in the byte row ``buf`` (see `_ring_layout`)."""
    spans, _ = _ring_layout(specs, n)
    return {name: buf[offset:offset + size].view(np.dtype(dtype)).reshape((n, *shape))
            for (name, dtype, shape), (offset, size) in zip(specs, spans)}


class PixelRing:
    """Arrays handed between the GPU path's main process and its workers (backgrounds from
    the planners, rendered pixels to the writers) through the reused slots of one shared
    memory-mapped file. Through the pool's pipes a 128 px image cost about 0.2 ms of
    main-process CPU (pickling and 64 KB pipe writes), and the main process is the GPU
    path's one serial stage; through a mapped slot 0.01 ms (both measured on the 2-core
    machine: 237 -> 29 ms per 1000 images with the render stubbed out).

    The file is a Linux memfd, opened by the workers as /proc/<pid>/fd/<fd>: it lives in
    RAM without a /dev/shm quota (64 MB in a default Docker container), is never written
    back to disk, and vanishes with the main process even after kill -9. Elsewhere it is a
    temporary file in `folder` (the dataset's .partial/), removed by `close`."""

    def __init__(self, folder: Path, slots: int, specs: RowSpecs, max_rows: int):
        self.specs = specs
        self.shape = (slots, _ring_layout(specs, max_rows)[1])  # fewer rows take fewer bytes
        self._fd: int | None = None
        self._file: Path | None = None
        self.buf: np.memmap | None = None
        if hasattr(os, "memfd_create") and Path(f"/proc/{os.getpid()}/fd").is_dir():
            try:
                self._fd = os.memfd_create("morphgen-ring")
                os.ftruncate(self._fd, self.shape[0] * self.shape[1])
                self.path = f"/proc/{os.getpid()}/fd/{self._fd}"
                self.buf = np.memmap(self.path, np.uint8, mode="r+", shape=self.shape)
            except OSError:  # a sandbox without memfds or /proc access: use the file below
                self.close()
        if self.buf is None:
            fd, name = tempfile.mkstemp(prefix="pixels_", suffix=".ring", dir=folder)
            os.close(fd)
            self._file = Path(name)
            self.path = name
            self.buf = np.memmap(self.path, np.uint8, mode="w+", shape=self.shape)
        self.free = list(range(slots))
        self.token = uuid.uuid4().hex  # fd numbers (and so paths) are reused once a ring is closed

    def views(self, slot: int, n: int) -> dict[str, np.ndarray]:
        return _ring_views(self.buf[slot], self.specs, n)

    def handle(self, slot: int, n: int) -> tuple:
        """What a worker needs to map slot's n rows (see `read_ring`)."""
        return self.token, self.path, self.shape, slot, self.specs, n

    def close(self) -> None:
        self.buf = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._file is not None:
            self._file.unlink(missing_ok=True)
            self._file = None


def read_ring(handle: tuple) -> dict[str, np.ndarray]:
    """A worker's (writable) views of a ring slot; each ring file is mapped once per process."""
    token, path, shape, slot, specs, n = handle
    rings = _WORKER.setdefault("rings", {})
    if token not in rings:
        rings[token] = np.memmap(path, np.uint8, mode="r+", shape=shape)
    return _ring_views(rings[token][slot], specs, n)


def _plan_chunk_in_worker(chunk: int, bg_handle: tuple) -> tuple[RenderPlan, list[str]]:
    """A chunk's plan and its images' params records as JSON (for the writer, which would
    otherwise sample the chunk again: 0.3 ms an image). The backgrounds go to the ring slot
    `bg_handle` and the plan is sent without them or its ImageParams: every byte and object
    the main process unpickles costs the GPU (per image: 0.06 ms to unpickle the params,
    0.2 ms for their records as dicts, about 0.03 ms for a 128 px background through the
    pipe, against microseconds for a JSON string; measured)."""
    job, renderer = _worker_state()
    params = [renderer.sampler.image_params(i, s) for i in job.chunk_identities(chunk) for s in range(job.per_id)]
    plan = renderer.plan(params)
    read_ring(bg_handle)["backgrounds"][:] = plan.backgrounds
    return replace(plan, params=[], backgrounds=None), [p.to_json() for p in params]


def _write_chunk_in_worker(out: str, chunk: int, ring_handle: tuple, records: list[str]) -> tuple[int, int, int]:
    """Encode and write a rendered chunk from its ring slot, with the params records its planner made."""
    job, renderer = _worker_state()
    results = renderer.results_from_arrays(read_ring(ring_handle))
    return write_chunk(Path(out), job, chunk, list(zip(records, results, strict=True)))


def slice_plan(plan: RenderPlan, start: int, stop: int) -> RenderPlan:
    """Images start:stop of a plan made with its backgrounds (every field is per image)."""
    def part(v):
        if v is None:
            return None
        return {k: a[start:stop] for k, a in v.items()} if isinstance(v, dict) else v[start:stop]

    return RenderPlan(**{f.name: part(getattr(plan, f.name)) for f in fields(plan)})


def render_chunk_standalone(out: str, job_dict: dict, chunk: int) -> tuple[int, int, int]:
    """Entry point for external executors (Dask/Ray): builds its renderer on first use."""
    key = json.dumps(job_dict, sort_keys=True)
    if _WORKER.get("key") != key:
        _worker_init(job_dict)
        _WORKER["key"] = key
    return render_chunk(Path(out), _WORKER["job"], _WORKER["renderer"], chunk)
