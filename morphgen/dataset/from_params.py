"""Render recorded params (``morphgen render --from-params``): every image exactly as a
params record describes it -- a fitted photo's (``morphgen fit``), another dataset's, or an
edited file -- written by the same chunked, atomic, resumable writer as a sampled dataset.

Why a job of its own: a sampled dataset's images are (identity, sample) for every identity
below ``--ids`` and every sample below ``--per-id``, drawn by the sampler. Recorded images
are whatever identities and samples the records name, possibly a different number per
identity (a photo without a face has no record), and their coefficients, pose, light and
place in the frame (``camera_translation``) are taken as recorded. Chunks still hold whole
identities, so each identity folder is moved into place in one piece. Photo effects and
appearance come from the record where it has them; where it has none and the option is on
(``--photo``, ``--appearance``), they are drawn from (seed, identity, sample) as for a
sampled image. The manifest names the records' file and sha256: a resume with other
records is refused like one with another config.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError, is_finite_number, shown
from ..layout import (
    PARAMS_DIR,
    looks_like_dataset,
    manifest_or_none,
    params_file_rows,
    params_files,
    params_rows,
)
from ..render.photo import apply_photo, check_effects
from ..sampling import ImageParams
from ..scene import SceneConfig, SceneRenderer
from .job import DatasetJob, OutputConfig

#: The file ``morphgen fit`` writes its records to, inside its output folder.
FIT_PARAMS = "params.jsonl"


def read_records(path: Path) -> list[tuple[str, dict]]:
    """(where, record) of every record in `path`: a params file (JSON Lines, or one of a
    dataset's Parquet chunk files), a folder written by ``morphgen fit`` (its
    params.jsonl), a dataset folder or its params folder (their params files). A line
    that is not a JSON object is a one-line error naming it; no record at all is one too."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"--from-params {path} does not exist: give a params .jsonl file, a `morphgen fit` "
                          "folder or a dataset folder")
    if path.is_dir() and (path / FIT_PARAMS).is_file():
        path = path / FIT_PARAMS
    if path.is_dir() and path.name == PARAMS_DIR and params_files(path.parent):
        path = path.parent  # a dataset's params folder: the dataset's records
    if path.is_dir():
        if not looks_like_dataset(path):
            raise ConfigError(f"--from-params {path} holds neither {FIT_PARAMS} nor a dataset's params folder")
        rows = list(params_rows(path))
    else:
        try:
            rows = list(params_file_rows(path))
        except OSError as exc:
            raise DataError(f"--from-params {path}: unreadable ({exc.__class__.__name__})") from None
    for where, row in rows:
        if not isinstance(row, dict):
            raise ConfigError(f"{where}: not a JSON object (a params record)")
    if not rows:
        raise DataError(f"--from-params {path} holds no params records")
    return rows


# The options of a source dataset that decide how its records look (not which images they
# are, nor where or how the new dataset is stored): `--from-params DATASET` draws with them.
# The light is each record's own (its SH), so the illumination options are not among them;
# the pose is, for its scale decides the level of detail (a close-up renders finer).
LOOK_OPTIONS = ("model", "landmarks", "size", "antialias", "lod", "pose", "backgrounds", "outputs", "photo",
                "appearance", "shape_components", "color_components", "expression_components", "image_format",
                "jpg_quality")


def source_look(path: Path) -> dict:
    """The :data:`LOOK_OPTIONS` a dataset's manifest records, where `path` is that dataset,
    its params folder or one of its params files: re-rendering a dataset's records then
    gives its images (backgrounds are drawn from the recorded seeds by the background
    option, sizes and outputs are the dataset's), and a flag changes one of them. {} for a
    fit's records, a loose params file or an unreadable manifest."""
    path = Path(path)
    root = path if path.is_dir() else path.parent
    if root.name == PARAMS_DIR:
        root = root.parent
    manifest = manifest_or_none(root)
    config = manifest.get("config") if isinstance(manifest, dict) else None
    if not isinstance(config, dict) or not isinstance(config.get("scene"), dict):
        return {}
    recorded = {**config["scene"], **(config.get("output") if isinstance(config.get("output"), dict) else {})}
    look = {k: recorded[k] for k in LOOK_OPTIONS if recorded.get(k) is not None}
    if "outputs" in look and isinstance(look["outputs"], list):
        look["outputs"] = ",".join(map(str, look["outputs"]))
    if "lod" not in config["scene"]:  # the whole mesh (an "off", or a dataset from before --lod)
        look["lod"] = "off"
    return look


def records_digest(rows: list[tuple[str, dict]]) -> str:
    """sha256 of the records' content, not of the file: it follows the values the render
    reads, whatever the file's formatting (a Parquet file's float32 values are other values
    than its JSON Lines twin's 6-decimal ones, and render other last bits)."""
    h = hashlib.sha256()
    for _, row in rows:
        h.update(json.dumps(row, sort_keys=True).encode())
    return h.hexdigest()


@dataclass(frozen=True)
class ParamsJob(DatasetJob):
    """A dataset job whose images are recorded params. ``per_id`` is the most images of
    one identity (an upper bound for buffers); ``slots`` gives the real ones."""

    source: str = ""
    digest: str = ""

    @classmethod
    def from_source(cls, path: Path, scene: SceneConfig, output: OutputConfig) -> ParamsJob:
        """The job for the records in `path`, checked: every record parses, and no
        (identity, sample) appears twice."""
        rows = read_records(path)
        job = cls(scene, 1, output, str(Path(path).resolve()), records_digest(rows))
        by_id = job._group(rows)
        object.__setattr__(job, "per_id", max(len(v) for v in by_id.values()))
        job.__dict__["by_identity"] = by_id  # parsed once here; workers re-read the source
        return job

    @classmethod
    def from_dict(cls, d: dict) -> ParamsJob:
        src = d["from_params"]
        return cls(SceneConfig.from_dict(d["scene"]), int(d["per_id"]), OutputConfig(**d["output"]), src["path"],
                   src["sha256"])

    def to_dict(self) -> dict:
        return super().to_dict() | {"from_params": {"path": self.source, "sha256": self.digest}}

    @staticmethod
    def _group(rows: list[tuple[str, dict]]) -> dict[int, list[ImageParams]]:
        by_id: dict[int, dict[int, ImageParams]] = {}
        for where, row in rows:
            p = ImageParams.from_record(row, where)
            if p.identity < 0 or p.sample < 0:
                raise ConfigError(f"{where}: identity and sample must be >= 0")
            if p.sample in by_id.setdefault(p.identity, {}):
                raise ConfigError(f"{where}: identity {p.identity} sample {p.sample} is recorded twice")
            by_id[p.identity][p.sample] = p
        return {i: [d[s] for s in sorted(d)] for i, d in sorted(by_id.items())}

    @cached_property
    def by_identity(self) -> dict[int, list[ImageParams]]:
        """The records' images per identity, samples in order (read again in a worker,
        and checked against the digest the job was made with)."""
        rows = read_records(Path(self.source))
        if records_digest(rows) != self.digest:
            raise DataError(f"--from-params {self.source} changed while rendering: run again")
        return self._group(rows)

    @cached_property
    def recorded_appearance(self) -> bool:
        """A record with an appearance renders it, whatever --appearance says (which draws
        one only for records that have none)."""
        return any(p.appearance is not None for images in self.by_identity.values() for p in images)

    @cached_property
    def identities(self) -> list[int]:
        return list(self.by_identity)

    @property
    def n_ids(self) -> int:
        return len(self.identities)

    def chunk_identities(self, chunk: int) -> list[int]:
        c = self.output.chunk_ids
        return self.identities[chunk * c:(chunk + 1) * c]

    def images_in(self, chunks) -> int:
        return sum(len(self.by_identity[i]) for c in chunks for i in self.chunk_identities(c))

    def slots(self, chunk: int) -> list[tuple[int, int]]:
        return [(p.identity, p.sample) for i in self.chunk_identities(chunk) for p in self.by_identity[i]]

    def check(self, renderer: SceneRenderer) -> None:
        """Every record's coefficient vectors fit the scene's component counts, and its
        recorded photo effects and appearance are checked as `_check_realism` says (the
        photo effects applied once per distinct layout of keys and value types): an edited
        record that lacks a key or holds a bad value fails here, not in a worker after the
        output exists."""
        s = renderer.sampler
        seen: set = set()
        for images in self.by_identity.values():
            for p in images:
                for a, n, what in ((p.shape, s.n_shape, "shape"), (p.color, s.n_color, "color"),
                                   (p.expression, s.n_expr, "expression")):
                    if len(a) > n:
                        _pad(a, n, what, p)  # its message
                if p.photo is not None:
                    layout = _layout(p.photo)
                    _check_realism(renderer, "photo", p.photo, p, read=layout not in seen)
                    seen.add(layout)
                if p.appearance is not None:
                    _check_realism(renderer, "appearance", p.appearance, p, read=True)

    def identity_params(self, renderer: SceneRenderer, identity: int) -> list[ImageParams]:
        """The recorded images of `identity`, their coefficient vectors zero-padded to the
        scene's component counts (a fit uses the leading components only), with photo
        effects and appearance drawn where the option is on and the record has none."""
        s = renderer.sampler
        out = []
        for p in self.by_identity[identity]:
            photo, look = s.realism(p.identity, p.sample)
            out.append(replace(p, shape=_pad(p.shape, s.n_shape, "shape"), color=_pad(p.color, s.n_color, "color"),
                               expression=_pad(p.expression, s.n_expr, "expression"),
                               photo=p.photo if p.photo is not None else photo,
                               appearance=p.appearance if p.appearance is not None else look))
        return out


def _layout(value) -> object:
    """The keys and value types of a record's nested dicts and lists (not the values)."""
    if isinstance(value, dict):
        return tuple(sorted((str(k), _layout(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return ("list", tuple(_layout(v) for v in value))
    return type(value).__name__


def _check_realism(renderer: SceneRenderer, key: str, value, p: ImageParams, read: bool) -> None:
    """Check a record's ``photo`` (every field's type and range, `check_effects`: 6 us a
    record; and, where ``read``, the effects applied to a small grey image) or its
    ``appearance`` (every number finite, and made into the render's arrays as the render
    will: 15 us a record, so that a later record's out-of-range spot index fails here, not
    in a worker); a one-line ConfigError where that fails. Appearance is ignored, as in
    the render, when the scene has none (--appearance off)."""
    try:
        if key == "photo":
            check_effects(value)
            if read:
                apply_photo(np.full((16, 16, 3), 128, np.uint8), value)
        elif renderer.appearance is not None:
            if not isinstance(value, dict):
                raise TypeError(f"a {type(value).__name__}, not an object")
            _check_finite(value, "")
            renderer.appearance.arrays([value])
    except Exception as exc:  # noqa: BLE001 (whatever the reader meets: the record is malformed)
        detail = f"{exc.__class__.__name__}: {exc}" if str(exc) else exc.__class__.__name__
        raise ConfigError(f"the record of identity {p.identity} sample {p.sample} has a malformed {key!r} ({detail}): "
                          f"fix it, or remove {key!r} to draw it from the --{key} option") from None


def _check_finite(value, where: str) -> None:
    """ValueError where a nested record holds a number that is not finite (a NaN hair
    length drew no hair, silently)."""
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(v, f"{where} {k}".strip())
    elif isinstance(value, (list, tuple)):
        for v in value:
            _check_finite(v, where)
    elif isinstance(value, (int, float)) and not is_finite_number(value) and not isinstance(value, bool):
        raise ValueError(f"{where} is {shown(value)}: not a finite number")


def _pad(a: np.ndarray, n: int, what: str, p: ImageParams | None = None) -> np.ndarray:
    if len(a) > n:
        which = f"the record of identity {p.identity} sample {p.sample}" if p is not None else "a record"
        raise ConfigError(f"{which} has {len(a)} {what} coefficients but the scene uses {n}: render with the "
                          f"model the params were made for (or more --{what}-components)")
    return np.pad(a, (0, n - len(a))).astype(np.float32)
