"""Online synthesis: training batches rendered on the fly from a morphable model, never
written to disk.

Each batch is P identities x K images drawn from an identity pool of the scene config's
size. Batch `step` depends only on (seed, step, rank) and the config, so a rerun (or a
resume at step s) sees the same images. Images are rendered with the same pipeline as
`morphgen render` (SceneRenderer), aligned with the renderer's five landmarks to the
network's template, augmented, and yielded in the trainer's batch format
``(x uint8 (B,3,S,S), labels (B,), soft ids (B,2), soft weights (B,2))`` — identity-mixup
images carry their two identities and weights as soft labels.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from morphgen.errors import ConfigError
from morphgen.render.camera import Framing, eye_mouth_distance
from morphgen.render_plan import RenderPlan
from morphgen.sampling import ImageParams, rng_for
from morphgen.scene import MAX_SIZE, SceneConfig, SceneRenderer

from .align import align_batch, align_face, template_points
from .data import Augment, apply_augment, augment_batch, worker_errors, worker_init

_STREAM_BATCH, _STREAM_AUG = 101, 102
UNBOUNDED = 2**31 - 1  # identity indices of an unbounded stream


def render_size_for(template: str, input_size: int) -> int:
    """Render side so that the face needs no upsampling when warped onto the template."""
    pts = template_points(template, input_size)
    # the renderer frames the eye-midpoint-to-mouth-midpoint distance at this fraction
    return int(math.ceil(float(eye_mouth_distance(pts)) / Framing().face_fraction / 8.0) * 8)


#: Render options of a dataset's writing, not of its images: an online config may hold them (one
#: config shared with `morphgen render`), and online training, which writes nothing, does not use them.
DATASET_ONLY = ("per_id", "out", "workers", "shard", "resume", "overwrite", "image_format", "jpg_quality",
                "container", "rps", "chunk_ids", "params_format", "dask_address", "quiet")


def load_scene(spec: str | Path | None, overrides: dict | None = None) -> SceneConfig:
    """A SceneConfig from a `morphgen render` YAML/JSON config (render option names), or the
    defaults when spec is None or 'default'; `overrides` are render option names too. A
    warning names the dataset options (`DATASET_ONLY`) given, which online training does
    not use: `workers: 8` in the config does not make 8 render processes."""
    from morphgen.configfile import as_path
    from morphgen.options import load_config_file, scene_config

    given = list(load_config_file(as_path(spec, "the scene"), "--online")) if spec not in (None, "default") else []
    unused = [k for k in dict.fromkeys([*given, *(overrides or {})]) if k in DATASET_ONLY]
    if unused:
        warnings.warn(f"the online config sets {', '.join(unused)}: options of a written dataset, which online "
                      "training does not use (its batches are --batch-p x --batch-k images, rendered by the "
                      "loader's --workers, never written)", stacklevel=2)
    return scene_config(spec, overrides, "--online")


def check_online_scene(scene: SceneConfig, unbounded: bool = False) -> None:
    """The one-line error of a scene that online training cannot draw from (checked when a
    stream is made and when an experiment config is read, before any run folder exists)."""
    if scene.sampling.grid is not None:  # sample indices grow with the steps: a grid runs out
        raise ConfigError("online synthesis draws new samples at every step, and a controlled grid has a fixed "
                          "number of them: leave grid out of the online config")
    if scene.sampling.n_identities < 2 and not unbounded:
        raise ConfigError(f"the online config's identity pool (ids) is {scene.sampling.n_identities}: training "
                          "needs 2 or more identities")
    if unbounded and scene.sampling.mixup is not None:
        raise ConfigError("identity mixup pairs identities of a pool: drop --online-unbounded or identity-mixup")


class _Crops:
    """Renders (identity, sample) pairs and aligns them: shared by the stream and held-out sets."""

    def __init__(self, scene: SceneConfig, input_size: int, template: str):
        self.scene, self.input_size, self.template = scene, input_size, template
        self._renderer: SceneRenderer | None = None

    def check(self) -> None:
        """Build the scene's renderer: a scene its model or files cannot render (more
        components than the model has, a light prior folder without .rps files, five points
        that coincide) stops where the batches are made, in one line, not in a loader worker
        at the first batch. A device scene keeps it (its stream needs it in this process);
        a CPU scene's is dropped (kept, it would be pickled to spawned workers)."""
        if self.scene.device != "cpu":
            self.renderer  # noqa: B018 (built and kept)
        elif self._renderer is None:
            SceneRenderer(self.scene, batch_size=1)

    @property
    def renderer(self) -> SceneRenderer:
        if self._renderer is None:  # built lazily: inside the loader worker, not in the parent
            self._renderer = SceneRenderer(self.scene, batch_size=256)
        return self._renderer

    def crops(self, pairs: list[tuple[int, int]]) -> tuple[np.ndarray, list]:
        r = self.renderer
        params = [r.sampler.image_params(i, s) for i, s in pairs]
        results = r.render(params)
        out = np.stack([align_face(res.rgb, res.landmarks5, self.input_size, self.template) for res in results])
        return out, params


class OnlineBatches(IterableDataset):
    """Freshly rendered P x K batches for steps start..total-1 (this rank's share).

    Two paths, one sampling: a CPU scene renders, aligns and augments whole batches in the
    loader workers (numba + OpenCV); a device scene (``device: cuda``) has the workers make
    only the numpy plans and `stream` renders, aligns and augments them on the device
    (`TorchScene`, `align_batch`, `augment_batch`), so no image crosses the bus."""

    def __init__(self, scene: SceneConfig, input_size: int, template: str, batch_p: int, batch_k: int,
                 total: int, start: int = 0, seed: int = 0, augment: Augment | None = None,
                 rank: int = 0, world: int = 1, unbounded: bool = False, with_params: bool = False):
        n_ids = scene.sampling.n_identities
        check_online_scene(scene, unbounded)
        if augment is not None and not isinstance(augment, Augment):
            raise ConfigError(f"augment must be a preset name or an Augment, got a {type(augment).__name__}")
        if batch_p > n_ids and not unbounded:
            raise ConfigError(f"--batch-p {batch_p} exceeds the identity pool of {n_ids}: raise --ids in the online config")
        self.unbounded = unbounded
        if unbounded:  # identities are indices into 2^31 - 1 instead of the config's pool
            scene = replace(scene, sampling=replace(scene.sampling, n_identities=UNBOUNDED))
        size = render_size_for(template, input_size)
        if size > MAX_SIZE:  # the scene's own check would name a --size nobody typed
            raise ConfigError(f"input_size {input_size} needs renders of {size} px, beyond the {MAX_SIZE} px a scene "
                              "renders: use a smaller input_size")
        self.source = _Crops(replace(scene, size=max(scene.size, size)), input_size, template)
        self.source.check()
        self.batch_p, self.batch_k, self.total, self.start = batch_p, batch_k, total, start
        self.seed, self.augment, self.rank, self.world = seed, augment or Augment(), rank, world
        self.with_params = with_params  # a batch ends with its parameters (`batch_params`)

    @property
    def n_classes(self) -> int:
        """Identities the batches draw from: the scene's pool, or 2^31 - 1 when unbounded
        (every batch brings new identities; only a loss without a classifier can use that)."""
        return self.source.scene.sampling.n_identities

    @property
    def on_device(self) -> bool:
        return self.source.scene.device != "cpu"

    def pairs(self, step: int) -> list[tuple[int, int]]:
        """(identity, sample) of each image of `step`: a pure function of (seed, step, rank)."""
        rng = rng_for(self.seed, _STREAM_BATCH, step, self.rank)
        ids = rng.choice(self.n_classes, self.batch_p, replace=False)
        b = self.batch_p * self.batch_k
        first = (step * self.world + self.rank) * b  # unique sample indices across steps and ranks
        return [(int(ids[j // self.batch_k]), first + j) for j in range(b)]

    def batch(self, step: int):
        """The batch of `step` rendered on the CPU: (x uint8, labels, soft ids, soft weights)."""
        imgs, params = self.source.crops(self.pairs(step))
        if self.augment.active():
            arng = rng_for(self.seed, _STREAM_AUG, step, self.rank)
            imgs = np.stack([apply_augment(im, self.augment, arng) for im in imgs])
        x = torch.from_numpy(np.ascontiguousarray(imgs.transpose(0, 3, 1, 2)))
        return (x, *self._labels(step, params))

    def plan(self, step: int) -> tuple[int, RenderPlan, tuple]:
        """The numpy plan of `step` and its labels. The plan travels without its ImageParams:
        unpickling them would cost the training process about 0.06 ms an image."""
        r = self.source.renderer
        params = [r.sampler.image_params(i, s) for i, s in self.pairs(step)]
        return step, replace(r.plan(params, with_backgrounds=False), params=[]), self._labels(step, params)

    def _labels(self, step: int, params: list[ImageParams]) -> tuple:
        return (*_labels(params), *((batch_params(step, params),) if self.with_params else ()))

    def steps(self) -> range:
        """The steps this process makes: all of start..total-1, or in a loader worker every
        num_workers-th of them (the loader interleaves its workers' batches back in order)."""
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        return range(self.start + wid, self.total, nw)

    def __iter__(self):
        make = self.plan if self.on_device else self.batch
        for step in self.steps():
            yield make(step)

    def stream(self, workers: int, device: torch.device):
        """The training batches, in step order, on `device` when the scene renders there."""
        loader = DataLoader(self, batch_size=None, worker_init_fn=worker_init, num_workers=workers,
                            persistent_workers=False, prefetch_factor=4 if workers and self.on_device else None)
        if not self.on_device:
            yield from loader
            return
        from morphgen.torch_scene import TorchScene

        scene = TorchScene(self.source.renderer.assets, device, pool_seed=self.seed)
        gen = torch.Generator(device=device)
        # On CUDA the batches are made on a side stream: batch n + 1 renders while the
        # trainer's kernels for batch n run on the main stream.
        side = torch.cuda.Stream(device) if device.type == "cuda" else None
        if side is not None:
            side.wait_stream(torch.cuda.current_stream(device))  # the scene's tensors are ready
        for step, plan, labels in loader:
            if side is None:
                yield (self._on_device(scene, gen, step, plan), *labels)
                continue
            with torch.cuda.stream(side):
                x = self._on_device(scene, gen, step, plan)
            main = torch.cuda.current_stream(device)
            main.wait_stream(side)
            x.record_stream(main)  # x is freed on the main stream's schedule, not the side one's
            yield (x, *labels)

    def _on_device(self, scene, gen: torch.Generator, step: int, plan: RenderPlan) -> torch.Tensor:
        """Batch `step` rendered, aligned and augmented on the scene's device: uint8 (B, 3, S, S)."""
        device = scene.device
        with torch.no_grad():
            res = scene.render(plan)
            rgb, lm5 = res["rgb"], res["landmarks5"]
            aug = self.augment
            jitter = None
            gen.manual_seed(int(rng_for(self.seed, _STREAM_AUG, step, self.rank).integers(2**62)))
            if aug.crop:  # random scale and shift of the crop, as FaceDataset's
                b, s = len(plan), self.source.input_size
                pick = torch.rand(b, generator=gen, device=device) < aug.crop
                j = torch.stack([0.9 + 0.2 * torch.rand(b, generator=gen, device=device),
                                 (torch.rand(b, generator=gen, device=device) - 0.5) * 0.12 * s,
                                 (torch.rand(b, generator=gen, device=device) - 0.5) * 0.12 * s], 1)
                jitter = torch.where(pick[:, None], j, torch.tensor([1.0, 0.0, 0.0], device=device))
            x = align_batch(rgb * 255.0, lm5, self.source.input_size, self.source.template, jitter)
            if aug.active():
                x = augment_batch(x, aug, gen)
            return x.round_().clamp_(0, 255).to(torch.uint8)


#: The per-image parameters of an online batch (``batch_params``), besides identity and sample.
BATCH_PARAMS = ("yaw", "pitch", "roll", "scale", "sh", "shape", "color", "expression")


def batch_params(step: int, params: list[ImageParams]) -> dict[str, torch.Tensor]:
    """What a batch was drawn from, for analysis or conditioning: ``step``, then per image
    ``identity``, ``sample`` and the :data:`BATCH_PARAMS` (angles in degrees, SH light
    (B, 9, 3), model coefficients), as CPU tensors."""
    out = {"step": torch.tensor(step), "identity": torch.tensor([p.identity for p in params]),
           "sample": torch.tensor([p.sample for p in params])}
    out.update({k: torch.from_numpy(np.stack([np.asarray(getattr(p, k), np.float32) for p in params]))
                for k in BATCH_PARAMS})
    return out


def _labels(params) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class labels and soft labels (identity mixup: two identities and their weights)."""
    b = len(params)
    y = torch.tensor([p.identity for p in params], dtype=torch.long)
    sid = torch.full((b, 2), -1, dtype=torch.long)
    sw = torch.zeros((b, 2), dtype=torch.float32)
    sid[:, 0], sw[:, 0] = y, 1.0
    for j, p in enumerate(params):
        if p.mixup_partner is not None:
            sid[j, 1], sw[j, 0], sw[j, 1] = p.mixup_partner, p.mixup_weight, 1.0 - p.mixup_weight
    return y, sid, sw


class HeldOutSet(Dataset):
    """`n_ids` identities x `per_id` images rendered once with another seed (identities the
    training stream never shows), for verification during training."""

    def __init__(self, scene: SceneConfig, input_size: int, template: str, n_ids: int, per_id: int = 6,
                 seed_offset: int = 7_000_001):
        s = replace(scene.sampling, seed=scene.sampling.seed + seed_offset, n_identities=n_ids, mixup=None)
        size = render_size_for(template, input_size)
        src = _Crops(replace(scene, sampling=s, size=max(scene.size, size)), input_size, template)
        self.images, _ = src.crops([(i, k) for i in range(n_ids) for k in range(per_id)])
        self.labels = np.repeat(np.arange(n_ids), per_id)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = torch.from_numpy(np.ascontiguousarray(self.images[i].transpose(2, 0, 1)))
        y = int(self.labels[i])
        return x, y, torch.tensor([y, -1]), torch.tensor([1.0, 0.0])


class OnlineDataset(IterableDataset):
    """Online synthesis for any training loop (exported as ``morphgen.OnlineDataset``):
    an endless supply of freshly rendered, aligned P x K batches, never written to disk.

    ``scene``: a ``morphgen.Scene``, a ``morphgen render`` YAML/JSON config, or None, with
    render `options` on top (``ids`` is the identity pool, the classes of a margin head).
    Batch ``step`` is a dict: ``image`` uint8 (B, 3, S, S) crops aligned to `template`
    (``arcface`` or ``openface``) at `input_size`, ``label`` (B,) identities,
    ``soft_ids`` / ``soft_weights`` (B, 2) (identity mixup: own identity first, a partner
    and their weights; -1 / 0 where unmixed), and ``params`` (:func:`batch_params`).

    ``seed`` seeds the batches' draws and, unless ``scene`` is a Scene (which has its own),
    the render (the render option ``seed``, so another seed is other faces); by default 0
    and the scene's own.

    It is a pure function of (seed, step, rank) and the scene: a rerun gives the same
    batches, ``start=N`` resumes at step N, and ranks (``rank``/``world``, by default those
    of an initialised ``torch.distributed``) draw disjoint images. Iterate it directly or
    through ``DataLoader(ds, batch_size=None, num_workers=n)`` (workers split the steps,
    the loader returns them in order), or use :meth:`stream`, which on a GPU scene
    (``device="cuda"``) renders, aligns and augments on the device."""

    def __init__(self, scene=None, *, steps: int, batch_p: int = 32, batch_k: int = 4, start: int = 0,
                 seed: int | None = None,
                 input_size: int = 112, template: str = "arcface", augment: Augment | str | None = None,
                 rank: int | None = None, world: int | None = None, unbounded: bool = False, **options):
        from morphgen.api import Scene
        from morphgen.configfile import check_option

        batch_seed = 0 if seed is None else seed
        for name, v, low in (("steps", steps, 1), ("batch_p", batch_p, 1), ("batch_k", batch_k, 1), ("start", start, 0),
                             ("seed", batch_seed, 0), ("input_size", input_size, 16)):
            check_option(name, v, int, low=low)
        if seed is not None and not isinstance(scene, Scene):
            options["seed"] = seed  # the render option of that name too: seed=1 drew seed 0's faces in a new order
        if start >= steps:
            raise ConfigError(f"--start {start} is not below --steps {steps}: nothing to render")
        template_points(template, input_size)  # an unknown template is a one-line error now
        if isinstance(scene, Scene):
            if options:
                raise ConfigError(f"OnlineDataset: give scene options ({', '.join(options)}) or a Scene, not both")
            config = scene.config
        else:
            config = load_scene(scene, options)
        rank, world = _rank_and_world(rank, world)
        augment = Augment.preset(augment) if isinstance(augment, str) else augment
        self.batches = OnlineBatches(config, input_size, template, batch_p, batch_k, total=steps, start=start,
                                     seed=batch_seed, augment=augment, rank=rank, world=world, unbounded=unbounded,
                                     with_params=True)

    @property
    def n_classes(self) -> int:
        """The identity pool (labels are 0..n_classes-1)."""
        return self.batches.n_classes

    def __len__(self) -> int:
        return self.batches.total - self.batches.start

    def batch(self, step: int) -> dict:
        """Batch `step` (0..steps-1), rendered here (numba on the CPU; a GPU scene renders
        on its device and the crops come back to the host)."""
        from morphgen.configfile import check_option

        check_option("step", step, int, low=0, high=self.batches.total - 1)
        return _as_dict(self.batches.batch(step))

    def __iter__(self):
        for step in self.batches.steps():
            yield self.batch(step)

    def stream(self, device: str | torch.device = "cpu", workers: int = 0):
        """The batches in step order on `device`, with `workers` loader processes: for a GPU
        scene the workers only plan and the device renders (no image crosses the bus); for
        a CPU scene the workers render and the batches are moved to `device`."""
        from morphgen.configfile import check_option
        from morphgen.options import check_device

        check_option("workers", workers, int, low=0)
        device = torch.device(check_device(str(device)))
        for t in worker_errors(self.batches.stream(workers, device)):  # a worker's error: its own one line
            d = _as_dict(t)
            if not self.batches.on_device:
                d = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in d.items()}
            yield d


def _as_dict(batch: tuple) -> dict:
    x, y, sid, sw, params = batch
    return {"image": x, "label": y, "soft_ids": sid, "soft_weights": sw, "params": params}


def _rank_and_world(rank: int | None, world: int | None) -> tuple[int, int]:
    """This process's share of the batches: as given, else torch.distributed's, else (0, 1)."""
    import torch.distributed as dist

    ddp = dist.is_available() and dist.is_initialized()
    rank = rank if rank is not None else dist.get_rank() if ddp else 0
    world = world if world is not None else dist.get_world_size() if ddp else 1
    from morphgen.configfile import check_option

    rank, world = check_option("rank", rank, int, low=0), check_option("world", world, int, low=1)
    if rank >= world:
        raise ConfigError(f"rank {rank} of world {world}: the rank must be in 0..world-1")
    return rank, world
