"""Writing SYN-1M-style datasets: chunked by identity, atomic, resumable, sharded.

The folder layout is :mod:`morphgen.layout`'s. This package: :func:`run` (below) with its
output checks and manifest; ``job`` (what decides the bytes), ``chunks`` (rendering,
encoding and writing one chunk), ``workers`` (the processes that do it), ``gpu`` (the
GPU path's pipeline around the device renderer).

A chunk is a run of `chunk_ids` identities. Its images are written under `.partial/` and
renamed into place; its params file is renamed into `params/` last and is the chunk's
completion marker. An interrupted run therefore leaves no file that looks finished but is
not, and `--resume` re-renders exactly the chunks without a marker. Every image depends on
(seed, identity, sample) and the config only, so the bytes do not depend on worker count,
chunk order, shard or resume.
"""
from __future__ import annotations

import gc
import json
import shutil
import time
import warnings
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import replace
from pathlib import Path

from .. import __version__
from ..errors import ConfigError
from ..layout import (IMAGES_DIR, PARAMS_DIR, PARTIAL_DIR, chunk_marker, done_chunks, manifest_path,
                      read_manifest)
from ..outputs import desktop_junk, replace_atomically
from ..params_columns import require_pyarrow
from ..render import RENDER_REVISION
from ..scene import SceneRenderer
from .chunks import chunk_error, chunk_result, discard_chunk, finish_chunk, render_chunk
from .gpu import run_gpu
from .job import DatasetJob, OutputConfig, estimate_bytes, job_from_dict, parse_shard
from .ctrl_c import end_workers, latched_ctrl_c, submit_held
from .integrity import repair_damaged
from .workers import PoolPrefill, fork_pool_is_safe, local_pool, render_chunk_in_worker, render_chunk_standalone

__all__ = ["DatasetJob", "OutputConfig", "run", "prepare_output", "write_manifest", "pending_chunks", "whole_mesh_if_written_so"]


def prepare_output(out: Path, job: DatasetJob, resume: bool, overwrite: bool, sharded: bool = False,
                   shard: tuple[int, int] = (0, 1)) -> None:
    """Refuse to mix datasets: a non-empty folder must hold this very config, and be resumed
    (or be another shard's part of it). ``overwrite`` deletes an old dataset only once every
    check here has passed (the caller has checked the inputs before). The free-space check
    counts what this run will write: the chunks of its `shard` not yet done."""
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite contradict each other: choose one")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")
    manifest = manifest_path(out)
    replace_old = False
    if out.exists() and not _holds_nothing(out):
        if overwrite:
            if not manifest.exists() and not (out / PARAMS_DIR).exists():
                raise ConfigError(f"--out {out} is not empty and not a morphgen dataset: refusing to delete it; choose another folder")
            replace_old = True  # deleted below, once every check has passed
        elif not manifest.exists():
            raise ConfigError(f"--out {out} is not empty and holds no morphgen dataset: choose an empty folder")
        else:
            try:
                old = read_manifest(out)
            except (OSError, ValueError):
                old = None
            if not isinstance(old, dict):
                raise ConfigError(f"{manifest} is unreadable: use --overwrite to start again")
            if old.get("config_hash") != job.config_hash():
                raise ConfigError(f"--out {out} holds a dataset with a different config: use another folder, or --overwrite to replace it")
            if old.get("model_sha256") not in (None, job.scene.model_hash()):  # the same path, other contents
                raise ConfigError(f"--out {out} was rendered from another version of {job.scene.model or 'the model'} "
                                  "(its file, calibration or landmarks changed since): use another folder, or "
                                  "--overwrite to render it anew")
            if old.get("render_revision") != RENDER_REVISION and done_chunks(out):
                raise ConfigError(f"--out {out} was rendered by a morphgen that draws other pixels (render revision "
                                  f"{old.get('render_revision') or 'before 2026-12-08'}, this one {RENDER_REVISION}): "
                                  "finish it with that version, or render it anew (another folder, or --overwrite)")
            if not (resume or sharded):
                raise ConfigError(f"--out {out} already holds this dataset: use --resume to finish it, or --overwrite to start again")
    k, n = shard
    todo = (range(k, job.n_chunks, n) if replace_old or not (out / PARAMS_DIR).is_dir()
            else pending_chunks(out, job, shard))  # (a shard's part, or what a resume has left)
    needed = estimate_bytes(job, job.images_in(todo))
    probe = out.absolute()
    while not probe.exists():  # the disk --out will be made on
        probe = probe.parent
    free = shutil.disk_usage(probe).free + (_estimated_size(out) if replace_old else 0)  # what the deletion frees
    if needed > free:
        also = " (counting the dataset --overwrite replaces as free)" if replace_old else ""
        what = "the dataset" if len(todo) == job.n_chunks else f"the {len(todo)} chunks left to render"
        raise ConfigError(f"{what} needs about {_size_text(needed)} but {probe} has {_size_text(free)} free{also}")
    if replace_old:
        shutil.rmtree(out)
    for sub in (IMAGES_DIR, PARAMS_DIR, PARTIAL_DIR):
        (out / sub).mkdir(parents=True, exist_ok=True)


def _size_text(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{max(n / 1e6, 0.1):.1f} MB"


def _holds_nothing(out: Path) -> bool:
    """`out` is empty, or holds only the empty folders a run makes before its manifest
    (a run killed in that moment left them, and its --resume was refused as a foreign folder)."""
    return all(p.is_dir() and p.name in (IMAGES_DIR, PARAMS_DIR, PARTIAL_DIR) and not any(p.iterdir())
               or p.is_file() and desktop_junk(p.name) for p in out.iterdir())


def _estimated_size(out: Path) -> int:
    """About how many bytes the dataset in `out` holds, from its manifest (its images done,
    at the writer's estimate per image; 0 when it cannot be read): no walk of its files."""
    try:
        old = read_manifest(out)
        counts = old["counts"]
        return int(estimate_bytes(job_from_dict(old["config"])) * counts["images_done"] / max(counts["images"], 1))
    except Exception:  # noqa: BLE001 (a manifest of another version or a damaged one: nothing counted)
        return 0


def whole_mesh_if_written_so(out: Path, job: DatasetJob) -> DatasetJob:
    """The job with ``--lod off`` where `out` holds a dataset written before --lod existed
    (its manifest has no ``lod``: whole meshes) and the job asks for the default: a resume,
    or another shard, then renders its chunks as the others were."""
    try:
        old = read_manifest(out)["config"]["scene"]
    except (OSError, ValueError, KeyError, TypeError):
        return job
    if "lod" in old or job.scene.lod != "auto":
        return job
    return replace(job, scene=replace(job.scene, lod="off"))


def write_manifest(out: Path, job: DatasetJob, shard: tuple[int, int]) -> dict:
    """Written atomically at start and end; completion is read from the chunk markers on disk."""
    done = done_chunks(out)
    k, n = shard
    manifest = {
        "morphgen_version": __version__,
        "render_revision": RENDER_REVISION,
        "config_hash": job.config_hash(),
        "config": job.to_dict(),
        "model_sha256": job.scene.model_hash(),
        "seed": job.scene.sampling.seed,
        "counts": {"identities": job.n_ids, "per_id": job.per_id, "images": job.images_in(range(job.n_chunks)),
                   "chunks": job.n_chunks, "chunks_done": len(done), "images_done": job.images_in(done)},
        "complete": len(done) == job.n_chunks,
        "shards": {f"{k + 1}/{n}": {"chunks": len(range(k, job.n_chunks, n)),
                                    "done": len([c for c in done if c % n == k])}},
    }
    old_path = manifest_path(out)
    if old_path.exists():  # keep other shards' entries
        try:
            old = read_manifest(out)
            if old.get("config_hash") == job.config_hash():
                for key, val in old.get("shards", {}).items():
                    if key not in manifest["shards"]:
                        kk, nn = (int(x) for x in key.split("/"))
                        val["done"] = len([c for c in done if c % nn == kk - 1])
                        manifest["shards"][key] = val
        except (OSError, json.JSONDecodeError, ValueError):
            pass
    replace_atomically(old_path, json.dumps(manifest, indent=2))  # (shards of one --out update it concurrently)
    return manifest


def pending_chunks(out: Path, job: DatasetJob, shard: tuple[int, int]) -> list[int]:
    k, n = shard
    return [c for c in range(k, job.n_chunks, n) if not chunk_marker(out, c, job.output.params_format).exists()]


def tail_split(todo: list[int], job: DatasetJob, workers: int) -> list[tuple[int, tuple[int, int] | None]]:
    """The pool's tasks for these chunks, in order: (chunk, None) for a whole chunk, or
    (chunk, (k, n)) for part k of n of one (`chunks.render_chunk_part`). The last
    ``workers`` chunks are each cut into ``workers`` parts (fewer where a chunk has fewer
    identities), so that the run ends with every worker busy: with whole chunks last, all
    but one worker could sit idle for up to a chunk's time (0.5 s of face12 at 128 px, a
    twentieth of a 5,000-image run on 2 workers; a whole round of chunks with many
    workers). The images and params files are the same bytes either way. Whole chunks
    only for one worker and for webdataset shards (one file per chunk)."""
    if workers < 2 or job.output.container == "wds":
        return [(c, None) for c in todo]
    tasks: list[tuple[int, tuple[int, int] | None]] = [(c, None) for c in todo[:-workers]]
    for c in todo[-workers:]:
        n = min(workers, len(job.chunk_identities(c)))
        tasks += [(c, (k, n)) for k in range(n)] if n > 1 else [(c, None)]
    return tasks


def run(out: Path, job: DatasetJob, workers: int = 1, shard: str | None = None, resume: bool = False,
        overwrite: bool = False, progress: bool = True, executor=None) -> dict:
    """Render the dataset (or this shard of it) into `out`; returns a summary dict.

    Finished chunks found damaged (:mod:`.integrity`) are rendered again, with a warning
    when the run starts; the summary's ``repaired`` lists them as (chunk, what was wrong).

    `executor` may be any concurrent.futures-style executor whose workers can import
    morphgen (e.g. a Dask distributed Client's `get_executor()`); by default a local process
    pool of `workers` processes (forks of this one where that is safe, see
    :func:`.workers.fork_pool_is_safe`), or in-process rendering when workers == 1.
    """
    from tqdm import tqdm

    shard_kn = parse_shard(shard)
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if shard_kn[0] >= job.n_chunks:  # a shard with nothing to do is a mistaken K/N, not an empty part
        raise ConfigError(f"--shard {shard}: the dataset has only {job.n_chunks} chunk(s) of --chunk-ids "
                          f"{job.output.chunk_ids} identities; use N <= {job.n_chunks} or a smaller --chunk-ids")
    with latched_ctrl_c() as ctrl_c:  # a Ctrl-C swallowed on the way still stops the run (see .ctrl_c)
        if not overwrite:
            job = whole_mesh_if_written_so(out, job)
        # Every input (model and its landmarks, light prior, backgrounds) is checked here, in
        # this process, before the output folder is touched; workers then meet no surprise.
        # Where the local pool can fork this process (`fork_pool_is_safe`), its workers inherit
        # this renderer whole. Where spawned workers or an executor's render, it only checks:
        # it skips the decimation of --lod (which cannot fail, and would cost a dense model
        # 0.5 s before any worker starts).
        in_process = job.scene.device != "cpu" or (executor is None and workers == 1)
        forked = executor is None and not in_process and fork_pool_is_safe()
        # The background textures are drawn meanwhile by a helper on the idle core (PoolPrefill),
        # for this process and the workers it forks.
        prefill = None
        try:
            prefill = PoolPrefill.for_scene(job.scene) if forked or in_process else None
            renderer = SceneRenderer(job.scene if in_process or forked else replace(job.scene, lod="off"),
                                     batch_size=1024 if job.scene.device != "cpu" else 32,
                                     recorded_appearance=job.recorded_appearance)
            job.check(renderer)
            prepare_output(out, job, resume, overwrite, sharded=shard_kn[1] > 1, shard=shard_kn)
            repaired = repair_damaged(out, job, range(shard_kn[0], job.n_chunks, shard_kn[1]))
            if repaired:  # said now: the run may still stop before its summary
                more = f" (and {len(repaired) - 1} more)" if len(repaired) > 1 else ""
                warnings.warn(f"rendering {len(repaired)} damaged chunk(s) again: chunk {repaired[0][0]}: "
                              f"{repaired[0][1]}{more}", stacklevel=2)
            write_manifest(out, job, shard_kn)
            todo = pending_chunks(out, job, shard_kn)
            if prefill is not None and prefill.running and todo:
                # What the first chunk builds (numba's kernels, the contour tables, the Parquet
                # writer's import) is made once here rather than in each forked worker, the
                # helper drawing meanwhile.
                renderer.warm_up()
                if job.output.params_format == "parquet":
                    require_pyarrow("--params-format parquet")
        except BaseException:
            if prefill is not None:
                prefill.close()
            raise
        if prefill is not None:
            prefill.adopt()
        total_images = job.images_in(todo)
        own = executor is None and not in_process
        t0 = time.perf_counter()
        n_images = n_bytes = 0
        bar = None

        def done(result: tuple[int, int, int]) -> None:
            nonlocal n_images, n_bytes
            n_images, n_bytes = n_images + result[1], n_bytes + result[2]
            bar.update(result[1])
            bar.set_postfix_str(f"{n_bytes / 1e6:.0f} MB")
            ctrl_c.check()  # after each chunk, on every path

        frozen = False
        failing = False
        try:
            if own and todo:  # before the bar, whose thread a fork must not meet
                executor = local_pool(job, workers, renderer if forked else None)
            bar = tqdm(total=total_images, unit="img", disable=not progress, desc="render", smoothing=0.1)
            if in_process and todo:
                # Rendering here, this process's objects (numba's, the model's, torch's: over 120,000)
                # stay out of Python's collections until the run ends, as a forked worker's do
                # (`local_pool`): each full collection walked them all (60 ms), 0.09 ms an image of
                # the embedded model at 32 px, a tenth of its time. What the run makes and drops is
                # still collected.
                gc.freeze()
                frozen = True
            if job.scene.device != "cpu":
                run_gpu(out, job, todo, workers, done, renderer)
            elif executor is None and workers == 1:
                for c in todo:
                    try:
                        result = render_chunk(out, job, renderer, c)
                    except Exception as exc:
                        raise chunk_error(out, job, c, exc) from exc
                    done(result)
            elif todo:
                renderer = None  # the workers hold their own
                tasks = tail_split(todo, job, workers if own else 1)
                if own:
                    submit = lambda c, part: submit_held(executor, render_chunk_in_worker, str(out), c, part)
                else:
                    submit = lambda c, part: executor.submit(render_chunk_standalone, str(out), job.to_dict(), c)
                running: dict[Future, tuple[int, tuple[int, int] | None]] = {}  # future -> (chunk, part)
                parts_in: dict[int, list] = {}  # split chunk -> each part's params records (None until in)

                def collect(fut: Future) -> None:
                    c, part = running.pop(fut)
                    result = chunk_result(fut, out, job, c)
                    if part is not None:  # the chunk's params file waits for all its parts
                        records = parts_in.setdefault(c, [None] * part[1])
                        records[part[0]] = result[3]
                        if all(r is not None for r in records):
                            try:
                                finish_chunk(out, job, c, [rec for r in parts_in.pop(c) for rec in r])
                            except Exception as exc:
                                raise chunk_error(out, job, c, exc) from exc
                    done(result[:3])

                ended = False
                try:
                    # Keep a bounded number of tasks in flight so memory stays flat in dataset size.
                    queue = list(tasks)
                    limit = 2 * max(workers, 1)
                    while queue or running:
                        while queue and len(running) < limit:
                            task = queue.pop(0)
                            running[submit(*task)] = task
                        finished, _ = wait(running, return_when=FIRST_COMPLETED)
                        for fut in finished:
                            collect(fut)
                except KeyboardInterrupt:
                    if own:  # stop now: each worker would first render the chunk queued to it, whole
                        end_workers(executor)
                        ended = True
                    raise
                finally:
                    if own:  # (a pool whose workers were ended cancels nothing: see end_workers)
                        executor.shutdown(wait=True, cancel_futures=not ended)
                    for fut, (c, part) in running.items():  # in flight when one failed: drop any that failed too
                        if fut.done() and not fut.cancelled() and fut.exception() is not None:
                            if part is None and chunk_marker(out, c, job.output.params_format).exists():
                                continue  # finished whole before its worker was ended: kept for the resume
                            discard_chunk(out, job, c)
                    for c in {c for c, part in tasks if part is not None}:  # a split chunk left unfinished
                        if not chunk_marker(out, c, job.output.params_format).exists():
                            discard_chunk(out, job, c)
        except BaseException:
            failing = True
            raise
        finally:
            if frozen:
                gc.unfreeze()
            if bar is not None:
                bar.close()
            if own and executor is not None:  # raised before the chunks' loop shut it down
                executor.shutdown(wait=True, cancel_futures=True)
            try:
                manifest = write_manifest(out, job, shard_kn)
            except OSError:  # (a full disk fails this too: the run's own one-line error is the one to say)
                if not failing:
                    raise
    if manifest["complete"]:
        shutil.rmtree(out / PARTIAL_DIR, ignore_errors=True)
    dt = time.perf_counter() - t0
    return {"images": n_images, "seconds": dt, "images_per_s": n_images / dt if dt > 0 else 0.0,
            "bytes": n_bytes, "complete": manifest["complete"], "chunks_done": manifest["counts"]["chunks_done"],
            "chunks": job.n_chunks, "repaired": repaired}
