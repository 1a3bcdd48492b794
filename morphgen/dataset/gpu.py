"""The GPU dataset path: the main process only renders, one pool of worker processes plans
chunks before and encodes and writes them after, the arrays passing through shared rings."""
from __future__ import annotations

import os
import tempfile
import uuid
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import fields, replace
from itertools import chain, islice
from pathlib import Path

import numpy as np

from ..layout import PARTIAL_DIR
from ..render_plan import RenderPlan
from ..scene import SceneRenderer
from .chunks import chunk_result, write_chunk
from .ctrl_c import interruptible, submit_held
from .job import DatasetJob
from .workers import WORKER, pool_worker_init, worker_state


def run_gpu(out: Path, job: DatasetJob, todo: list[int], workers: int, done,
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

    renderer = renderer or SceneRenderer(job.scene, batch_size=1024, recorded_appearance=job.recorded_appearance)
    chunks = iter(todo)
    max_rows, size = job.output.chunk_ids * job.per_id, job.scene.size
    planner_job = replace(job, scene=replace(job.scene, device="cpu"))  # workers never touch the device
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=pool_worker_init,
                               initargs=(planner_job.to_dict(),))  # starts its processes on first submit
    # Backgrounds come back from the planners, and pixels go out to the writers, through rings.
    bg_ring: PixelRing | None = None
    ring: PixelRing | None = None  # its row layout is known after the first render
    writes: dict = {}  # future -> (ring slot, chunk)

    def plan_next(c: int) -> tuple:
        slot = bg_ring.free.pop()
        return c, slot, submit_held(pool, plan_chunk_in_worker, c, bg_ring.handle(slot, len(job.slots(c))))

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
            writes[submit_held(pool, write_chunk_in_worker, str(out), chunk, ring.handle(slot, len(plan)), records)] = \
                slot, chunk
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
    rings = WORKER.setdefault("rings", {})
    if token not in rings:
        rings[token] = np.memmap(path, np.uint8, mode="r+", shape=shape)
    return _ring_views(rings[token][slot], specs, n)


@interruptible
def plan_chunk_in_worker(chunk: int, bg_handle: tuple) -> tuple[RenderPlan, list[str]]:
    """A chunk's plan and its images' params records as JSON (for the writer, which would
    otherwise sample the chunk again: 0.3 ms an image). The backgrounds go to the ring slot
    `bg_handle` and the plan is sent without them or its ImageParams: every byte and object
    the main process unpickles costs the GPU (per image: 0.06 ms to unpickle the params,
    0.2 ms for their records as dicts, about 0.03 ms for a 128 px background through the
    pipe, against microseconds for a JSON string; measured)."""
    job, renderer = worker_state()
    params = [p for i in job.chunk_identities(chunk) for p in job.identity_params(renderer, i)]
    plan = renderer.plan(params)
    read_ring(bg_handle)["backgrounds"][:] = plan.backgrounds
    return replace(plan, params=[], backgrounds=None), [p.to_json() for p in params]


@interruptible
def write_chunk_in_worker(out: str, chunk: int, ring_handle: tuple, records: list[str]) -> tuple[int, int, int]:
    """Encode and write a rendered chunk from its ring slot, with the params records its planner made."""
    job, renderer = worker_state()
    results = renderer.results_from_arrays(read_ring(ring_handle))
    return write_chunk(Path(out), job, chunk, list(zip(records, results, strict=True)))


def slice_plan(plan: RenderPlan, start: int, stop: int) -> RenderPlan:
    """Images start:stop of a plan made with its backgrounds (every field is per image)."""
    def part(v):
        if v is None:
            return None
        return {k: a[start:stop] for k, a in v.items()} if isinstance(v, dict) else v[start:stop]

    return RenderPlan(**{f.name: part(getattr(plan, f.name)) for f in fields(plan)})
