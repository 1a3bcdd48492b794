"""Training, in one flat function as insightface's ``arcface_torch/train.py``:

    summary = train(TrainConfig(data="DATA", out="RUN", arch="nn4small2", loss="triplet", steps=1000))

One ``TrainConfig`` per run (:mod:`.train_config`: options, defaults and their checks). The run folder
also holds ``checkpoint.pt`` (every ``checkpoint_every`` steps and at the end; ``resume``
continues from it), ``log.csv`` (step, epoch, loss, lr, images/s, elapsed, held-out
verification), TensorBoard events under ``tb/`` when tensorboard is installed,
``train_list.tsv`` / ``val_list.tsv`` (the exact images used) and ``cache/`` (MTCNN
landmarks of real images). Every option (types, ranges, paths, checkpoints, and whether a
resume fits its run) is checked before the run folder is written: a refused command leaves
nothing new behind, and an earlier run as it was.

Recipes: FaceNet NN4.small2 + triplet loss on P x K batches (paper-faithful: no
augmentation); ArcFace/CosFace heads with soft labels (identity mixup from the render
parameters); ``real_data`` joins real identities after the synthetic ones, and
``domain_mixup`` = psi trains on psi * synthetic + (1 - psi) * real pixels with labels
mixed the same way. ``init`` starts from another run's backbone (new head) with optional
frozen layers and a lower backbone learning rate.

Devices: CPU by default (all cores); ``device="cuda"`` with bf16/fp16 autocast; several
GPUs via ``torchrun --nproc_per_node N -m morphgen.cli.main train ...`` (DistributedDataParallel,
one P x K sampler stream per rank; WORLD_SIZE / RANK / LOCAL_RANK from the environment).
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader

from morphgen.configfile import option_name
from morphgen.errors import ConfigError, DataError, ModelError
from morphgen.outputs import NewOutputs, check_writable, desktop_junk, replace_atomically
from morphgen.sheet import write_sheet

from .checkpoint import (FILENAME, check_arch, check_resumable, load_backbone_state, load_checkpoint,
                         save_checkpoint)
from .data import (AugmentKeys, FaceDataset, JoinedSets, PKBatchSampler, RandomBatchSampler, drop_small_identities,
                   load_imageset, make_subset, select_list, single_threaded_cv2,
                   split_identities, to_input, worker_errors, worker_init, write_list, natural_key)
from .embed import embed_dataset
from .landmarks import find_landmarks
from .losses import MarginHead, domain_mixup, soft_targets, triplet_semihard_loss
from .models import build_model, to_device
from .online import HeldOutSet, OnlineBatches, load_scene
from .train_config import TrainConfig
from .verify import verification

class TrainNet(nn.Module):
    """Backbone + loss in one module, so DistributedDataParallel sees every parameter."""

    def __init__(self, backbone: nn.Module, head: MarginHead | None, margin: float):
        super().__init__()
        self.backbone, self.head, self.margin = backbone, head, margin

    def forward(self, x: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.backbone(x)
        if self.head is None:
            return triplet_semihard_loss(emb, labels, self.margin)
        return self.head(emb, labels if targets is None else targets)


def _prepare(path: str, fmt: str, cfg: TrainConfig, cache: Path, role: str, with_subset: bool):
    iset = load_imageset(Path(path), fmt)
    if with_subset and cfg.list_file:
        iset = select_list(iset, Path(cfg.list_file))
    if with_subset:
        iset = make_subset(iset, cfg.subset_images, cfg.subset_ids, cfg.subset_per_id, cfg.subset_seed)
    named = set(iset.identities) - {""}  # (before faceless images drop out: they are said in describe())
    iset = find_landmarks(iset, cache, detect=cfg.align, progress=cfg.progress)
    loose = [i for i, n in enumerate(iset.identities) if n == ""]
    if loose and len(loose) < len(iset):  # files beside the identity folders have no identity
        iset = iset.take([i for i, n in enumerate(iset.identities) if n != ""])
        iset.count("images_outside_identity_folders", len(loose))
    iset = drop_small_identities(iset, cfg.min_images_per_id)
    if len(iset) == 0 or set(iset.identities) == {""}:
        hint = ("training needs one sub-folder per identity" if not named else
                f"lower --min-images-per-id (now {cfg.min_images_per_id}) or give more usable images per identity")
        raise DataError(f"{role} data {path} has no identity with {cfg.min_images_per_id}+ usable images "
                        f"({iset.describe()}): {hint}")
    return iset


def _real_sheet(cfg: TrainConfig, cache: Path, path: Path) -> Path:
    """64 real images aligned exactly as training images are (MTCNN, the run's template),
    written beside train_crops.png so the two domains' framing can be compared by eye."""
    try:
        iset = make_subset(load_imageset(Path(cfg.real_preview), "auto"), 64, None, None, cfg.seed)
        iset = find_landmarks(iset, cache, detect=cfg.align, progress=False)
    except DataError as exc:
        what = str(exc).split(": check")[0]  # the reader's hint names --data; this is --real-preview
        raise DataError(f"--real-preview: {what}: give a folder of face images (a sub-folder per identity)") from None
    ds = FaceDataset(iset, {n: 0 for n in set(iset.identities)}, cfg.input_size, cfg.template, cfg.align)
    crops = [c for c in (ds.crop(i) for i in range(len(ds))) if c is not None]
    if not crops:
        raise DataError(f"--real-preview {cfg.real_preview}: no readable face image")
    return write_sheet(path, np.stack(crops), 8)


def _scene_key(scene) -> str:
    """The fingerprint of what an online run's batches are drawn from: the scene as read
    (its config's and --online-set's values, a pose file's distributions, on any device)
    and the model file's contents. A resume with the scene file edited trained on other
    batches unnoticed."""
    h = hashlib.sha256(repr(dataclasses.replace(scene, device="cpu")).encode())
    h.update(scene.model_hash().encode())
    return "online:" + h.hexdigest()[:16]


def _data_key(*sets) -> str:
    """A fingerprint of the images a run trains on: their files, identities and five
    landmarks (0.1 px). Identity names alone do not tell two datasets apart (every
    morphgen render names its identities 000000, 000001, ...); the landmarks do (they are
    the render's own, or MTCNN's on the image), at no cost: they are loaded anyway."""
    h = hashlib.sha256()
    for s in sets:
        if s is None:
            continue
        h.update(json.dumps([s.files, s.identities]).encode())
        h.update(np.nan_to_num(np.round(np.asarray(s.landmarks, np.float64), 1), nan=-1.0).tobytes())
    return h.hexdigest()[:16]


# what a checkpoint's network, head and optimizer state depend on: resuming with another
# value would fail to load them, or continue a different run under the old one's name
_RESUME_FIXED = ("arch", "loss", "input_size", "template", "optimizer")


def _resume_checkpoint(cfg: TrainConfig, path: Path) -> dict:
    """The run's checkpoint, checked before anything is read or written that this config
    can continue it (ConfigError naming the changed options otherwise)."""
    ckpt = load_checkpoint(path)
    check_resumable(ckpt, path)
    saved = {**ckpt["config"], "arch": ckpt["arch"]}
    changed = [k for k in _RESUME_FIXED if saved.get(k) is not None and saved[k] != getattr(cfg, k)]
    if changed:
        was = ", ".join(f"{option_name(k)} {saved[k]}" for k in changed)
        raise ConfigError(f"{path.parent} was trained with {was}: resume it with its own options (omit "
                          f"{', '.join(option_name(k) for k in changed)}) or start a new --out")
    return ckpt


def _load_training_state(ckpt: dict, path: Path, backbone, head, opt, scaler) -> None:
    """Network, head, optimizer and scaler state of a resumed run; a checkpoint whose
    tensors do not fit is a ModelError."""
    try:
        backbone.load_state_dict(ckpt["model"])
        if head is not None:
            head.load_state_dict(ckpt["head"])
        opt.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[-1].strip()[:200]
        raise ModelError(f"{path} does not fit this run's model or optimizer ({why}): start a new --out") from None


def _images_per_step(cfg: TrainConfig, labels: np.ndarray | None, online: bool, nominal: bool = False) -> float:
    """Images a batch holds on average: P x K batches take all of an identity's images
    where it has fewer than K (so `--epochs` passes over the data that many times; with
    P x K it counted 48 images a step where batches held 24). `nominal`: P x K, or
    --batch-size, as runs counted before (their --epochs resume to the length they had)."""
    if online or labels is None or nominal and cfg.sampler == "pk":
        return cfg.batch_p * cfg.batch_k
    if cfg.sampler != "pk":
        return cfg.batch_size if nominal else min(cfg.batch_size, len(labels))
    _, counts = np.unique(labels, return_counts=True)
    return min(cfg.batch_p, len(counts)) * float(np.minimum(counts, cfg.batch_k).mean())


def _check_batches(cfg: TrainConfig, labels: np.ndarray, what: str, say) -> None:
    """ConfigError when a batch asks for more identities or images than the data holds:
    the samplers would shrink it without a word. Identities with fewer than K images give
    all of theirs (the P x K sampler's rule), which is said when it holds for every one."""
    _, counts = np.unique(labels, return_counts=True)
    # (the sampler's own check would come after the run folder is made; a classifier of one
    # identity has a loss of 0 from the start and learns nothing)
    if len(counts) < 2 and (cfg.sampler == "pk" or what == "training"):
        raise DataError(f"{'P x K batches need' if cfg.sampler == 'pk' else 'training needs'} at least 2 identities, "
                        f"but the {what} data has {len(counts)}: add identities (or see which images had no face "
                        "found)")
    if cfg.sampler == "pk" and cfg.batch_p > len(counts):
        raise ConfigError(f"--batch-p {cfg.batch_p} but the {what} data has {len(counts)} identities: lower --batch-p")
    if cfg.sampler == "pk" and cfg.batch_k > counts.max():
        say(f"note: --batch-k {cfg.batch_k} but no {what} identity has more than {counts.max()} images: "
            "each gives all of its images")
    if cfg.sampler == "random" and cfg.batch_size > len(labels):
        raise ConfigError(f"--batch-size {cfg.batch_size} but the {what} data has {len(labels)} images: lower "
                          "--batch-size")


def _write_run_files(run: Path, cfg: TrainConfig, lists: dict, no_face: list[str], say) -> None:
    """The run's config and image lists, written once the run (or its resumption) is
    accepted, so that a refused command leaves an earlier run as it was."""
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    for name, iset in lists.items():
        if iset is not None:
            write_list(iset, run / name)
    if no_face:
        (run / "no_face.txt").write_text("\n".join(no_face) + "\n")
        say(f"{len(no_face)} images without a detected face are listed in {run / 'no_face.txt'}")


def _class_names(iset) -> list[str]:
    names = set(iset.identities) | {n for s in iset.soft if s for n in s["ids"]}
    return sorted(names, key=natural_key)


def _freeze(backbone: nn.Module, spec: str) -> list[str]:
    """Freeze parameters by spec (N first top-level blocks, or name prefixes); returns names."""
    spec = (spec or "").strip()
    if not spec:
        return []
    blocks = [n for n, _ in backbone.named_children()]
    if spec.isdigit():
        if int(spec) > len(blocks):
            raise ConfigError(f"--freeze {spec}: the backbone has {len(blocks)} blocks ({', '.join(blocks)}): "
                              f"give {len(blocks)} or fewer")
        prefixes = blocks[:int(spec)]
    else:
        prefixes = [p.strip() for p in spec.split(",") if p.strip()]
        bad = [p for p in prefixes if not any(n == p or n.startswith(p + ".") for n, _ in backbone.named_parameters())]
        if bad:
            raise ConfigError(f"--freeze {','.join(bad)} matches no layer: use a number or names among {', '.join(blocks)}")
    frozen = []
    for n, p in backbone.named_parameters():
        if any(n == q or n.startswith(q + ".") for q in prefixes):
            p.requires_grad_(False)
            frozen.append(n)
    backbone._frozen_modules = [m for n, m in backbone.named_modules() if any(n == q or n.startswith(q + ".") for q in prefixes)]
    return frozen


def _set_train_mode(backbone: nn.Module) -> None:
    backbone.train()
    for m in getattr(backbone, "_frozen_modules", []):
        m.eval()  # frozen layers keep their batch-norm statistics


def _lr_factor(cfg: TrainConfig, step: int, total: int) -> float:
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "cosine":
        t = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    return 1.0


class _Log:
    """CSV log + optional TensorBoard, rank 0 only. A run resumed from its checkpoint at
    step `start` drops what an interrupted run logged after it (those steps are run and
    logged again): no step appears twice."""

    FIELDS = ["step", "epoch", "loss", "lr", "images_per_s", "elapsed_s", "val_accuracy", "val_auc", "val_threshold"]

    def __init__(self, run: Path, enabled: bool, say, start: int = 0):
        self.enabled, self.tb = enabled, None
        if not enabled:
            return
        path = run / "log.csv"
        text = io.StringIO(newline="")
        w = csv.DictWriter(text, self.FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(self._rows_up_to(path, start) if path.exists() else [])
        replace_atomically(path, text.getvalue().encode())  # (csv's \r\n line ends kept)
        self.fh = open(path, "a", newline="")
        self.csv = csv.DictWriter(self.fh, self.FIELDS)
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(run / "tb"), purge_step=start + 1 if start > 0 else 0)
        except ImportError:
            say("tensorboard is not installed: no event files, only log.csv (pip install 'morphgen[tensorboard]')")

    @staticmethod
    def _rows_up_to(path: Path, start: int) -> list[dict]:
        """The rows of an earlier log.csv up to the checkpoint's step (none when the run
        starts again from step 0; rows that do not parse are dropped)."""
        kept = []
        with open(path, newline="", errors="replace") as f:
            for row in csv.DictReader(f):
                try:
                    if 0 < start and int(float(row.get("step") or "nan")) <= start:
                        kept.append(row)
                except ValueError:
                    continue
        return kept

    def row(self, **kw) -> None:
        if not self.enabled:
            return
        self.csv.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in kw.items()})
        self.fh.flush()
        if self.tb is not None:
            for k, v in kw.items():
                if k != "step" and v is not None and v != "":
                    self.tb.add_scalar(k if not k.startswith("val_") else f"val/{k[4:]}", float(v), kw["step"])
            self.tb.flush()  # as log.csv is: a run that stops on an error keeps every row it logged

    def close(self) -> None:
        if self.enabled:
            self.fh.close()
            if self.tb is not None:
                self.tb.close()


def _cache_dir(cfg: TrainConfig) -> Path:
    """The MTCNN landmark cache of a run: --cache, or RUN/cache."""
    return Path(cfg.cache_dir) if cfg.cache_dir else Path(cfg.out) / "cache"


def _check_out(cfg: TrainConfig) -> None:
    """ConfigError when --out cannot hold this run: a folder that holds other files and no
    run (checkpoints would land among a dataset's images), or --resume of a folder that
    does not exist (a typo'd --out would start afresh unnoticed). What this run's own
    options put into --out (a --list, the landmark cache, by default RUN/cache) is no
    obstacle: a run stopped before its first checkpoint leaves only those, and --resume
    then starts it from the beginning, as the Ctrl-C message says."""
    run = Path(cfg.out)
    if (run / FILENAME).is_file() or (run / "config.json").is_file():
        return
    if cfg.resume and not run.is_dir():
        raise ConfigError(f"--resume: {run} does not exist: give the --out of an earlier `morphgen train`, "
                          "or omit --resume to start a run there")
    own = [Path(p).resolve() for p in (cfg.list_file, _cache_dir(cfg)) if p]
    foreign = [p for p in (run.iterdir() if run.is_dir() else ())
               if not any(p.resolve() == o or p.resolve() in o.parents for o in own) and not desktop_junk(p.name)]
    if foreign:
        raise ConfigError(f"--out {run} is not empty and holds no training run (e.g. {foreign[0].name}): "
                          "choose an empty or new folder")


def train(cfg: TrainConfig, say=print) -> dict:
    """Run (or resume) one training run; returns a summary dict (losses, held-out
    verification at the start and end, throughput, data report, paths)."""
    main = int(os.environ.get("RANK", "0")) == 0
    if main and isinstance(cfg.out, (str, os.PathLike)):  # before the data checks: they would misname a wrong --out
        _check_out(cfg)  # (rank 0 only: the other ranks start while it may be writing there)
    cfg = cfg.resolved()
    check_writable(cfg.out, "--out")
    if cfg.cache_dir:
        check_writable(cfg.cache_dir, "--cache")
    threads = torch.get_num_threads()
    try:  # what a refused input made in the run folder (a landmark cache) goes again
        with single_threaded_cv2(), NewOutputs(cfg.out if main else None) as outputs:
            return _train(cfg, say, outputs)
    finally:
        torch.set_num_threads(threads)


def _train(cfg: TrainConfig, say, outputs: NewOutputs) -> dict:
    world, rank, local = (int(os.environ.get(k, d)) for k, d in (("WORLD_SIZE", 1), ("RANK", 0), ("LOCAL_RANK", 0)))
    dist = None
    if world > 1:
        import torch.distributed as dist
        dist.init_process_group("nccl" if cfg.device.startswith("cuda") else "gloo")
    device = torch.device("cuda", local) if cfg.device == "cuda" else torch.device(cfg.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    cores = os.cpu_count() or 1
    torch.set_num_threads(cfg.threads or max(1, cores // world))
    workers = cfg.workers if cfg.workers is not None else (1 if cores <= 2 else min(8, cores // 2))
    main = rank == 0
    say_now = say if main else (lambda *_a, **_k: None)
    held: list[str] = []  # said once the run is accepted: a refused command prints its error alone
    say = held.append
    torch.manual_seed(cfg.seed + rank)

    run = Path(cfg.out)
    ckpt_file = run / FILENAME
    if ckpt_file.exists() and not cfg.resume:
        raise ConfigError(f"{run} already holds a run: pass --resume to continue it, or another --out")
    resume_ckpt = _resume_checkpoint(cfg, ckpt_file) if cfg.resume and ckpt_file.exists() else None
    init_ckpt = load_checkpoint(cfg.init) if cfg.init and resume_ckpt is None else None
    if init_ckpt is not None:
        check_arch(init_ckpt, cfg.arch, cfg.init)  # fail before any data work

    aug = cfg.augment()
    size, tpl = cfg.input_size, cfg.template
    online = None
    if cfg.online:  # online synthesis: every batch freshly rendered, nothing read from disk
        # (--landmarks, given, wins over an --online-set landmarks=FILE: None dropped that one)
        scene = load_scene(cfg.online, {**cfg.online_set, "device": str(device),
                                        **({"landmarks": cfg.landmarks} if cfg.landmarks else {})})
        online = OnlineBatches(scene, size, tpl, cfg.batch_p, cfg.batch_k, total=0,
                               seed=cfg.seed, augment=aug, rank=rank, world=world, unbounded=cfg.online_unbounded)
        syn_names = classes = [] if cfg.online_unbounded else [str(i) for i in range(online.n_classes)]
        train_set = real = ds_real = labels = None
        lists, no_face, data_key = {}, [], _scene_key(scene)
        say(f"online synthesis: {'unbounded' if cfg.online_unbounded else online.n_classes} identities, "
            f"{online.source.scene.size} px renders "
            f"aligned to {tpl} {size} px")
        ds_val = HeldOutSet(online.source.scene, size, tpl, cfg.val_ids) if cfg.val_ids else None
    else:
        # ---- data (rank 0 first, so MTCNN runs once and the others read its cache)
        cache = _cache_dir(cfg)
        if dist is not None and not main:
            dist.barrier()
        syn = _prepare(cfg.data, cfg.data_format, cfg, cache, "training", True)
        train_set, val_set = split_identities(syn, cfg.val_ids, cfg.seed)
        real = _prepare(cfg.real_data, cfg.real_format, cfg, cache, "real", False) if cfg.real_data else None
        if dist is not None and main:
            dist.barrier()
        syn_names = _class_names(train_set)
        real_names = _class_names(real) if real is not None else []
        classes = syn_names + [f"real:{n}" for n in real_names]
        say(f"train: {train_set.describe()}")
        if val_set is not None:
            say(f"held out for verification: {val_set.describe()}")
        if real is not None:
            say(f"real: {real.describe()}")
        lists = {"train_list.tsv": train_set, "val_list.tsv": val_set, "real_list.tsv": real}
        data_key = _data_key(train_set, real)
        no_face = [str(Path(x.root) / f) for x in (syn, real) if x is not None for f in x.no_face]
        ds_syn = FaceDataset(train_set, {n: i for i, n in enumerate(syn_names)}, size, tpl, cfg.align, aug)
        ds_real = None
        if real is not None:
            offset = 0 if cfg.domain_mixup is not None else len(syn_names)  # mixup builds the joint space itself
            ds_real = FaceDataset(real, {n: offset + i for i, n in enumerate(real_names)}, size, tpl, cfg.align, aug)
        ds_val = FaceDataset(val_set, {n: i for i, n in enumerate(_class_names(val_set))}, size, tpl, cfg.align) if val_set else None
        if ds_real is not None and cfg.domain_mixup is None:
            ds_train = JoinedSets([ds_syn, ds_real])
            labels = np.concatenate([ds_syn.labels, ds_real.labels])
        else:
            ds_train, labels = ds_syn, ds_syn.labels
    if labels is not None:
        _check_batches(cfg, labels, "training", say)
    if cfg.domain_mixup is not None:
        _check_batches(cfg, ds_real.labels, "real", say)
    # a run from before batches were counted by what they hold: its epochs as it counted them
    old_count = resume_ckpt is not None and "images_seen" not in resume_ckpt and cfg.steps is None
    per_step = _images_per_step(cfg, labels, online is not None, nominal=old_count)
    total = cfg.steps or max(1, math.ceil((cfg.epochs or 1.0) * len(labels) / (per_step * world)))  # online: steps

    # ---- model
    backbone = build_model(cfg.arch, size)
    if init_ckpt is not None:
        load_backbone_state(backbone, init_ckpt, cfg.arch, cfg.init)
        say(f"initialised the {cfg.arch} backbone from {cfg.init}")
    head = None if cfg.loss == "triplet" else MarginHead.build(cfg.loss, backbone.embedding_size, len(classes), cfg.scale, cfg.margin)
    frozen = _freeze(backbone, cfg.freeze)
    if head is None and not any(p.requires_grad for p in backbone.parameters()):
        raise ConfigError(f"--freeze {cfg.freeze} freezes the whole backbone and --loss triplet has no head: nothing "
                          "would train; freeze fewer blocks (or train a margin loss's head on the frozen features)")
    if frozen:
        say(f"frozen: {len(frozen)} parameter tensors ({cfg.freeze})")
    net = to_device(TrainNet(backbone, head, cfg.margin), device)
    groups = [{"params": [p for p in backbone.parameters() if p.requires_grad], "lr": cfg.lr * cfg.backbone_lr_mult}]
    if head is not None:
        groups.append({"params": list(head.parameters()), "lr": cfg.lr})
    for g in groups:
        g["base_lr"] = g["lr"]
    opt_cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[cfg.optimizer]
    opt_kw = {"lr": cfg.lr, "weight_decay": cfg.weight_decay, **({"momentum": cfg.momentum} if cfg.optimizer == "sgd" else {})}
    try:  # one fused kernel per step: 3x faster than the per-tensor loop on the CPU
        opt = opt_cls(groups, fused=True, **opt_kw)
    except (RuntimeError, TypeError):
        opt = opt_cls(groups, **opt_kw)
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.precision == "fp16")
    start = 0
    if resume_ckpt is not None:
        if resume_ckpt["classes"] != classes:
            raise ConfigError(f"{run} was trained on other identities: resume it with its own data options (omit "
                              "the changed ones) or start a new --out")
        if resume_ckpt.get("data_key") not in (None, data_key) and cfg.online:  # checkpoints before it have none
            raise ConfigError(f"{run} was trained on batches of another scene than --online {cfg.online}"
                              f"{' with --online-set' if cfg.online_set else ''} draws now (its options, a file it "
                              "names, or the model changed): resume it with the scene it was trained on, or start "
                              "a new --out")
        if resume_ckpt.get("data_key") not in (None, data_key):
            raise ConfigError(f"{run} was trained on other images than "
                              f"{' and '.join(str(d) for d in (cfg.data, cfg.real_data) if d)} hold now (the same identity "
                              "names, other content): resume it with the data it was trained on, or start a new --out")
        start = resume_ckpt["step"]
        if total < start:
            raise ConfigError(f"{run} has trained {start} steps, more than the {total} asked for now: give --steps "
                              f"of {start} or more to continue it")
        _load_training_state(resume_ckpt, ckpt_file, backbone, head, opt, scaler)
        say(f"resuming {run} at step {start} of {total}")
    model = net
    if dist is not None:
        from torch.nn.parallel import DistributedDataParallel
        model = DistributedDataParallel(net, device_ids=[local] if device.type == "cuda" else None)

    def sampler_for(ds_labels, seed_off):
        n = max(0, total - start)
        if cfg.sampler == "pk":
            return PKBatchSampler(ds_labels, cfg.batch_p, cfg.batch_k, n, cfg.seed + seed_off, start, rank)
        return RandomBatchSampler(len(ds_labels), cfg.batch_size, n, cfg.seed + seed_off, start, rank)

    def loader(ds, ds_labels, seed_off=0):
        return DataLoader(ds, batch_sampler=AugmentKeys(sampler_for(ds_labels, seed_off)), num_workers=workers,
                          worker_init_fn=worker_init, pin_memory=device.type == "cuda")

    def evaluate() -> dict:
        if ds_val is None or not main:
            return {}
        return verification(embed_dataset(backbone, ds_val, 64, device=str(device)), ds_val.labels, cfg.val_pairs, cfg.seed)

    def checkpoint(step: int) -> None:
        if main:
            save_checkpoint({"arch": cfg.arch, "input_size": size, "template": tpl,
                             "embedding_size": backbone.embedding_size, "step": step,
                             "model": backbone.state_dict(), "head": head.state_dict() if head is not None else None,
                             "optimizer": opt.state_dict(), "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                             "classes": classes, "config": cfg.to_dict(), "rng": torch.get_rng_state(),
                             "data_key": data_key, "images_seen": images_seen + seen,
                             "unlogged_losses": since_logged(), **dict(zip(("loss_first", "recent_losses"),
                                                                             loss_ends()))}, ckpt_file)
            outputs.keep()  # the folder now holds a resumable run, whatever happens next

    if main and cfg.real_preview:
        cache = _cache_dir(cfg)
        say(f"real crops for comparison: {_real_sheet(cfg, cache, run / 'real_crops.png')}")
    say = say_now
    for line in held:
        say(line)
    if main:  # kept from its first checkpoint on (`checkpoint`); a run that fails before one leaves only its
        outputs.spare(_cache_dir(cfg))  # landmark cache (hours of MTCNN on a large set; its rerun starts there)
        _write_run_files(run, cfg, lists, no_face, say)
    log = _Log(run, main, say, start)
    val_start = evaluate() if start == 0 else {}
    if val_start:
        say(f"held-out verification at step 0: accuracy {val_start['accuracy']:.3f}, AUC {val_start['auc']:.3f}")
        log.row(step=0, val_accuracy=val_start["accuracy"], val_auc=val_start["auc"], val_threshold=val_start["threshold"])
    if online is not None:
        online.start, online.total = start, total
        # CPU scenes render whole batches in loader workers, overlapping with the training
        # step; device scenes get only their plans from the workers and render here.
        batches = worker_errors(online.stream(workers, device))
    else:
        batches = worker_errors(loader(ds_train, labels))
    real_batches = worker_errors(loader(ds_real, ds_real.labels, 1)) if cfg.domain_mixup is not None else None
    from tqdm import tqdm
    bar = tqdm(total=total, initial=start, disable=not (cfg.progress and main), unit="step", dynamic_ncols=True)
    losses, pending, t0, t_int, n_int, seen, ips = [], [], time.time(), time.time(), 0, 0, 0.0
    # the losses of the steps since the last logged row (a resumed run's first row averages
    # its steps before the checkpoint too), and the images trained on before this process
    unlogged = list(resume_ckpt.get("unlogged_losses", [])) if resume_ckpt is not None else []
    images_seen = int(resume_ckpt.get("images_seen", start * per_step * world)) if resume_ckpt is not None else 0

    def since_logged() -> list[float]:
        """The losses of the steps since the last logged row (read from the device here)."""
        return unlogged + (torch.stack(pending).float().cpu().tolist() if pending else [])

    # the run's first step loss and its last ten, carried across a --resume in the checkpoint
    # (a resumed run's summary said those of its own steps only)
    first_loss = resume_ckpt.get("loss_first") if resume_ckpt is not None else None
    recent = list(resume_ckpt.get("recent_losses", [])) if resume_ckpt is not None else []

    def loss_ends() -> tuple[float | None, list[float]]:
        new = losses + since_logged()[len(unlogged):]  # this process's steps (unlogged: the checkpoint's)
        return (first_loss if first_loss is not None else (new[0] if new else None)), (recent + new)[-10:]

    _set_train_mode(backbone)
    step, val = start, {}
    for x, y, sid, sw in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        targets = None
        if head is not None and cfg.domain_mixup is not None:
            xr, yr, sidr, swr = (t.to(device) for t in next(real_batches))
            n = min(len(x), len(xr))
            x, targets = domain_mixup((x[:n], soft_targets(sid[:n].to(device), sw[:n].to(device), len(syn_names))),
                                      (xr[:n], soft_targets(sidr[:n], swr[:n], len(real_names))), cfg.domain_mixup)
            y = y[:n]
        elif head is not None and (sw[:, 1] > 0).any():
            targets = soft_targets(sid.to(device), sw.to(device), len(classes))
        if main and step == start and not (run / "train_crops.png").exists():  # what the network sees: mixed too
            sheet = x[:64] if x.dtype == torch.uint8 else x[:64].round().clamp(0, 255).to(torch.uint8)
            write_sheet(run / "train_crops.png", sheet.permute(0, 2, 3, 1).cpu().numpy(), 8)
        factor = _lr_factor(cfg, step, total)
        if head is not None and cfg.margin_warmup_steps:
            head.warm(min(1.0, step / cfg.margin_warmup_steps))
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * factor
        # the random draws inside the step (dropout) are a pure function of (seed, rank, step):
        # one torch stream from the start was not where a resumed run picked it up
        torch.manual_seed(int(np.random.SeedSequence([cfg.seed, rank, step]).generate_state(1, np.uint64)[0] >> 1))
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss = model(to_input(x), y, targets)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        step += 1
        pending.append(loss.detach())  # read back at log steps only: no GPU sync per step
        n_int += len(x) * world
        seen += len(x) * world
        bar.update(1)
        log_step = step % cfg.log_every == 0 or step == total
        if log_step:
            interval = since_logged()
            losses += interval[len(unlogged):]
            unlogged, pending = [], []
            if not all(math.isfinite(v) for v in interval):
                raise ConfigError(f"the loss is not finite at step {step}: lower --lr (now {cfg.lr}) "
                                  "or use --precision fp32")
            now = time.time()
            ips = n_int / max(now - t_int, 1e-9)
            t_int, n_int = now, 0
            bar.set_postfix(loss=f"{np.mean(interval):.4f}", img_s=f"{ips:.1f}")
        is_eval = (cfg.eval_every and step % cfg.eval_every == 0) or step == total
        val = evaluate() if is_eval else {}
        if val:
            _set_train_mode(backbone)
        if log_step or val:  # a row for a verification alone leaves the training columns blank
            log.row(step=step, epoch=(images_seen + seen) / len(labels) if labels is not None else "",
                    loss=float(np.mean(interval)) if log_step else "", lr=cfg.lr * factor,  # --lr as scheduled
                    images_per_s=ips if log_step else "", elapsed_s=time.time() - t0,
                    val_accuracy=val.get("accuracy", ""), val_auc=val.get("auc", ""), val_threshold=val.get("threshold", ""))
        if step % cfg.checkpoint_every == 0 or step == total:
            checkpoint(step)
    bar.close()
    if step == start:
        checkpoint(step)
        val = evaluate()
    log.close()
    elapsed = time.time() - t0
    if val:
        say(f"held-out verification at step {step}: accuracy {val['accuracy']:.3f}, AUC {val['auc']:.3f}")
    say(f"done: {step} steps, {seen} images in {elapsed:.1f} s; checkpoint {ckpt_file}")
    if dist is not None:
        dist.barrier()
        dist.destroy_process_group()
    loss_first, last_ten = loss_ends()
    return {"run": str(run), "steps": step, "start_step": start, "losses": losses, "val_start": val_start,
            "loss_first": loss_first, "loss_last": float(np.mean(last_ten)) if last_ten else None,
            "val_end": val, "images_per_s": seen / max(elapsed, 1e-9), "classes": len(classes),
            "train_images": len(labels) if labels is not None else seen,
            "report": dict(train_set.report) if train_set is not None else {}, "checkpoint": str(ckpt_file),
            "real_report": dict(real.report) if real is not None else {}}
