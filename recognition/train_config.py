"""The training options: :class:`TrainConfig`, one per run (saved as RUN/config.json and
RUN/config.yaml), with its defaults by architecture and loss and the one check of every
option (types, ranges, conflicts) that flags, --config files, experiment recipes and the
Python API go through before :func:`recognition.train.train` writes anything.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch

from morphgen.configfile import check_option, option_name, read_mapping
from morphgen.errors import ConfigError
from morphgen.options import check_device, paths_from

from .data import FORMATS, Augment
from .models import ARCHS, MAX_INPUT, min_input_size

LOSSES = ("triplet", "arcface", "cosface")
TEMPLATES = ("openface", "arcface")
_TYPES = {"str": str, "int": int, "float": float, "bool": bool}
# options with no flag of their own (set in --config, experiment recipes or the API)
_CONFIG_ONLY = ("aug_flip", "aug_crop", "aug_color", "aug_blur", "aug_noise", "momentum")
# flags of `morphgen train` named otherwise than their field: flag key -> (field, negated)
_FLAG_KEYS = {"list": ("list_file", False), "cache": ("cache_dir", False), "no_align": ("align", True),
              "quiet": ("progress", True)}
# Ranges of the numeric options ("above": strictly greater); the input size's depends on
# the architecture (``resolved``). An out-of-range value never reaches torch or a sampler,
# which would either fail after the run folder is written or quietly train on nonsense
# (a negative margin gives a zero loss).
_RANGES: dict[str, dict] = {
    "steps": {"low": 1}, "epochs": {"above": 0}, "batch_p": {"low": 1}, "batch_k": {"low": 1},
    "batch_size": {"low": 1}, "min_images_per_id": {"low": 1}, "lr": {"above": 0}, "momentum": {"low": 0, "high": 1},
    "weight_decay": {"low": 0}, "warmup_steps": {"low": 0}, "margin_warmup_steps": {"low": 0},
    "margin": {"low": 0, "high": 4}, "scale": {"above": 0},
    **{f"aug_{k}": {"low": 0, "high": 1} for k in ("flip", "crop", "color", "blur", "noise")},
    "subset_images": {"low": 1}, "subset_ids": {"low": 1}, "subset_per_id": {"low": 1}, "subset_seed": {"low": 0},
    "val_ids": {"low": 0}, "val_pairs": {"low": 2}, "eval_every": {"low": 0}, "domain_mixup": {"low": 0, "high": 1},
    "backbone_lr_mult": {"low": 0}, "threads": {"low": 1}, "workers": {"low": 0}, "checkpoint_every": {"low": 1},
    "log_every": {"low": 1}, "seed": {"low": 0},
}


@dataclass
class TrainConfig:
    """Everything a run needs. ``None`` means "the default for this arch / loss", filled in
    by ``resolved()``."""
    data: str = ""                      # training data folder
    online: str | None = None           # online synthesis instead: a `morphgen render` config (YAML) or "default"
    online_unbounded: bool = False      # online: new identities in every batch instead of the config's pool (triplet)
    online_set: dict = field(default_factory=dict)   # online: render options over the config's (ablation cells)
    landmarks: str | None = None        # online: the model's landmark file (else the config's, or the one beside the model)
    out: str = "run"                    # run folder
    data_format: str = "auto"           # auto | morphgen | folder | recordio
    arch: str = "nn4small2"             # nn4small2 | inception_resnet_v1 | iresnet18 | iresnet50
    loss: str = "triplet"               # triplet | arcface | cosface
    input_size: int | None = None       # crop size (96 / 160 / 112 by arch)
    template: str | None = None         # openface | arcface (by arch)
    align: bool = True                  # False: plain resize of whole images
    steps: int | None = None
    epochs: float | None = None         # used when steps is None (default 1 epoch)
    batch_p: int = 20                   # identities per P x K batch
    batch_k: int = 15                   # images per identity
    batch_size: int | None = None       # random sampler batch size (default P * K)
    sampler: str = "auto"               # pk | random (auto: pk for triplet, random for margin losses)
    min_images_per_id: int = 2          # identities with fewer images are dropped (and counted)
    optimizer: str = "auto"             # adam | adamw | sgd (auto: sgd for iresnet + margin loss, else adam)
    lr: float | None = None             # 1e-3 adam, 0.1 sgd
    momentum: float = 0.9
    weight_decay: float | None = None   # 0 adam, 5e-4 sgd
    lr_schedule: str = "cosine"         # constant | cosine
    warmup_steps: int = 0
    margin_warmup_steps: int = 0        # ramp the ArcFace/CosFace margin linearly from 0 over these steps
    margin: float | None = None         # triplet 0.2, arcface 0.5 (m2), cosface 0.35 (m3)
    scale: float = 64.0                 # margin-head s
    aug: str = "none"                   # preset: none | standard | strong
    aug_flip: float | None = None       # per-kind probabilities override the preset
    aug_crop: float | None = None
    aug_color: float | None = None
    aug_blur: float | None = None
    aug_noise: float | None = None
    list_file: str | None = None        # use exactly the images of a list file
    subset_images: int | None = None
    subset_ids: int | None = None
    subset_per_id: int | None = None
    subset_seed: int = 0
    val_ids: int = 0                    # held-out identities for verification
    val_pairs: int = 1000
    eval_every: int = 0                 # steps between verifications (0: start and end only)
    real_data: str | None = None        # real images, classes appended after the synthetic ones
    real_format: str = "auto"
    domain_mixup: float | None = None   # psi: train on psi * synthetic + (1 - psi) * real
    init: str | None = None             # checkpoint (or run folder) to start the backbone from
    freeze: str = ""                    # N first backbone blocks, or comma-separated name prefixes
    backbone_lr_mult: float = 1.0       # backbone lr = lr * mult (fine-tuning)
    resume: bool = False
    device: str = "cpu"                 # cpu | cuda
    precision: str = "auto"             # auto | fp32 | bf16 | fp16 (auto: bf16/fp16 on cuda, fp32 on cpu)
    threads: int | None = None          # torch threads (default: all cores / ranks; 1 on a busy machine)
    workers: int | None = None          # DataLoader workers (default: 1 on <= 2 cores, else cores // 2, max 8)
    checkpoint_every: int = 1000
    log_every: int = 10
    seed: int = 0
    cache_dir: str | None = None        # MTCNN landmark cache (default RUN/cache; share it between runs)
    real_preview: str | None = None     # real images whose aligned crops go to real_crops.png (vs train_crops.png)
    progress: bool = True
    extra: dict = field(default_factory=dict)   # free-form notes, saved with the config

    def resolved(self) -> "TrainConfig":
        """A copy with defaults filled in and options checked (ConfigError on conflicts):
        the one check of flags, --config files, experiment recipes and the Python API."""
        c = dataclasses.replace(self)
        c._check_types()
        if c.arch not in ARCHS:
            raise ConfigError(f"unknown --arch {c.arch!r}: use one of {', '.join(ARCHS)}")
        if c.loss not in LOSSES:
            raise ConfigError(f"unknown --loss {c.loss!r}: use one of {', '.join(LOSSES)}")
        if not c.data and not c.online:
            raise ConfigError("no training data: pass --data DIR, or --online CONFIG for freshly rendered batches")
        if c.data and c.online:
            raise ConfigError("give --data or --online, not both")
        if c.online and (c.steps is None or c.real_data):
            raise ConfigError("--online trains on an endless stream: give --steps, and no --real-data")
        if c.online not in (None, "default") and not Path(c.online).is_file():
            raise ConfigError(f"--online {c.online} does not exist: give a `morphgen render` config file or 'default'")
        if c.online_set and not c.online:
            raise ConfigError("online_set changes render options of the --online config: it needs --online")
        if c.landmarks and not c.online:
            raise ConfigError("--landmarks names the landmark file of the --online config's model: it needs --online")
        if c.online_unbounded and (not c.online or c.loss != "triplet"):
            raise ConfigError("--online-unbounded draws new identities for every batch: it needs --online and "
                              "--loss triplet (a classifier head needs a fixed identity pool)")
        for name, fmt in (("data_format", c.data_format), ("real_format", c.real_format)):
            if fmt not in FORMATS:
                raise ConfigError(f"unknown {option_name(name)} {fmt!r}: use one of {', '.join(FORMATS)}")
        size, _, tpl = ARCHS[c.arch]
        c.input_size = size if c.input_size is None else c.input_size
        check_option("input_size", c.input_size, int, low=min_input_size(c.arch), high=MAX_INPUT)
        c.template = c.template or tpl
        if c.template not in TEMPLATES:
            raise ConfigError(f"unknown --template {c.template!r}: use one of {', '.join(TEMPLATES)}")
        c.margin = c.margin if c.margin is not None else {"triplet": 0.2, "arcface": 0.5, "cosface": 0.35}[c.loss]
        c.sampler = ("pk" if c.loss == "triplet" else "random") if c.sampler == "auto" else c.sampler
        if c.sampler not in ("pk", "random"):
            raise ConfigError(f"unknown --sampler {c.sampler!r}: use pk or random")
        if c.loss == "triplet" and c.sampler != "pk":
            raise ConfigError("triplet loss needs P x K batches: use --sampler pk")
        if c.optimizer == "auto":  # insightface's SGD recipe for IResNets + margins; Adam elsewhere
            c.optimizer = "sgd" if c.loss != "triplet" and c.arch.startswith("iresnet") else "adam"
        if c.optimizer not in ("adam", "adamw", "sgd"):
            raise ConfigError(f"unknown --optimizer {c.optimizer!r}: use adam, adamw or sgd")
        c.lr = c.lr if c.lr is not None else (0.1 if c.optimizer == "sgd" else 1e-3)
        c.weight_decay = c.weight_decay if c.weight_decay is not None else (5e-4 if c.optimizer == "sgd" else 0.0)
        if c.lr_schedule not in ("constant", "cosine"):
            raise ConfigError(f"unknown --lr-schedule {c.lr_schedule!r}: use constant or cosine")
        if c.online and c.batch_size is not None and c.batch_size != c.batch_p * c.batch_k:
            raise ConfigError(f"--online renders batches of --batch-p x --batch-k images ({c.batch_p} x {c.batch_k}): "
                              "set those, and leave out --batch-size")
        c.batch_size = c.batch_size or c.batch_p * c.batch_k
        if c.real_data and not Path(c.real_data).is_dir():
            raise ConfigError(f"--real-data {c.real_data} does not exist: give a folder of real face images")
        if c.real_preview and not Path(c.real_preview).is_dir():
            raise ConfigError(f"--real-preview {c.real_preview} is not a folder: give a folder of real face images")
        if c.loss == "triplet" and c.batch_k < 2:
            raise ConfigError("triplet loss needs --batch-k of 2 or more (an anchor and a positive per identity)")
        if c.loss == "triplet" and c.batch_p < 2:  # one identity a batch: no negative, a loss of 0, nothing learned
            raise ConfigError("triplet loss needs --batch-p of 2 or more (a negative from another identity)")
        if c.steps is not None and c.epochs is not None:
            raise ConfigError("give --steps or --epochs, not both")
        c._check_ignored()
        if c.sampler == "pk" or c.online:  # P x K batches: a saved --batch-size would only pin the old P x K
            c.batch_size = None
        for name in ("data", "real_data", "init", "list_file", "landmarks", "cache_dir", "real_preview"):
            if getattr(c, name):  # saved as absolute paths: a --resume from another folder finds them
                setattr(c, name, str(Path(getattr(c, name)).expanduser().absolute()))
        if c.online not in (None, "default"):
            c.online = str(Path(c.online).expanduser().absolute())
        c.online_set = paths_from(Path.cwd(), c.online_set)  # saved whole: a --resume elsewhere finds them
        if c.domain_mixup is not None:
            if not c.real_data:
                raise ConfigError("--domain-mixup needs --real-data DIR")
            if c.loss == "triplet":
                raise ConfigError("--domain-mixup mixes labels: use --loss arcface or cosface")
        check_device(c.device)
        if c.precision == "auto":
            c.precision = "fp32" if c.device == "cpu" else ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
        if c.precision not in ("fp32", "bf16", "fp16"):
            raise ConfigError(f"unknown --precision {c.precision!r}: use fp32, bf16 or fp16")
        if c.precision == "fp16" and c.device == "cpu":
            raise ConfigError("fp16 autocast is for CUDA: use --precision bf16 or fp32 on the CPU")
        self.augment()  # validates the preset
        return c

    def _check_ignored(self) -> None:
        """Options that the others would make do nothing, or that leave nothing to learn,
        are ConfigErrors (each ran without a word: a held-out set of one identity has no
        impostor pair, AUC nan). Values as a saved run config holds them pass, so a
        --resume reads its own config."""
        if self.online:
            given = [n for n in ("list_file", "subset_images", "subset_ids", "subset_per_id") if getattr(self, n)]
            if self.data_format != "auto":
                given.append("data_format")
            if given:
                raise ConfigError(f"{option_name(given[0])} selects images of --data: --online renders its own; "
                                  "leave it out")
        if self.real_format != "auto" and not self.real_data:
            raise ConfigError("--real-format reads --real-data: add --real-data DIR, or leave it out")
        if self.eval_every and not self.val_ids:
            raise ConfigError("--eval-every verifies on held-out identities: add --val-ids N (2 or more), or leave "
                              "it out")
        if self.val_ids == 1:
            raise ConfigError("--val-ids 1 holds out one identity: its pairs are all genuine (no impostor pair to "
                              "tell apart); hold out 2 or more, or 0")
        if self.loss == "triplet":
            if self.margin_warmup_steps or self.scale != 64.0:
                raise ConfigError(f"{'--margin-warmup-steps' if self.margin_warmup_steps else '--scale'} sets the "
                                  "ArcFace/CosFace head: with --loss triplet there is none; leave it out")
            if self.backbone_lr_mult == 0:
                raise ConfigError("--backbone-lr-mult 0 with --loss triplet leaves nothing to train (no head): "
                                  "give a multiplier above 0")
        if self.sampler == "pk" and self.batch_size not in (None, self.batch_p * self.batch_k):
            raise ConfigError(f"--batch-size sizes random batches: P x K batches hold --batch-p x --batch-k images "
                              f"({self.batch_p} x {self.batch_k}); leave --batch-size out")
        if self.steps is not None and self.warmup_steps > self.steps:
            raise ConfigError(f"--warmup-steps {self.warmup_steps} is longer than the run's {self.steps} steps: the "
                              "learning rate would never reach --lr")

    def _check_types(self) -> None:
        """Every field against its annotated type and its range in ``_RANGES`` (ints given
        for floats become floats; paths become strings)."""
        if not isinstance(self.extra, dict):
            raise ConfigError(f"extra must be a mapping of notes, got {self.extra!r}")
        if not isinstance(self.online_set, dict):
            raise ConfigError(f"online_set must be a mapping of render options, got {self.online_set!r}")
        for f in dataclasses.fields(self):
            if f.name == "freeze" and isinstance(self.freeze, int) and not isinstance(self.freeze, bool):
                self.freeze = str(self.freeze)  # `freeze: 2` in YAML: the first 2 blocks
            if f.name not in ("extra", "online_set"):
                kind, _, optional = f.type.partition(" | ")
                setattr(self, f.name, check_option(f.name, getattr(self, f.name), _TYPES[kind], bool(optional),
                                                   **_RANGES.get(f.name, {}),
                                                   label=f.name if f.name in _CONFIG_ONLY else None))

    def augment(self) -> Augment:
        a = Augment.preset(self.aug)
        for k in ("flip", "crop", "color", "blur", "noise"):
            v = getattr(self, f"aug_{k}")
            if v is not None:
                setattr(a, k, float(v))
        return a

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(unknown)} (see `morphgen train --help`)")
        return cls(**d)

    @staticmethod
    def field_value(key: str, value) -> tuple[str, object]:
        """(field, value) of a flag's key and value: `list` is list_file, `no_align: true`
        is align false, `quiet: true` progress false; any other key is its own field."""
        if key not in _FLAG_KEYS:
            return key, value
        field_name, negated = _FLAG_KEYS[key]
        return field_name, (not value if negated and isinstance(value, bool) else value)

    @classmethod
    def read_yaml(cls, path: str | Path) -> dict:
        """The options a YAML (or JSON) file sets, keys checked against the fields; a flag
        whose name is not its field's (``list``, ``cache``, ``no_align``, ``quiet``) is
        read as that field."""
        d = {}
        for k, v in read_mapping(path, "--config").items():
            k, v = cls.field_value(str(k).replace("-", "_"), v)
            if k in d:
                raise ConfigError(f"--config {path}: {option_name(k)} is given twice")
            d[k] = v
        cls.from_dict(d)
        return d

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainConfig":
        return cls.from_dict(cls.read_yaml(path))
