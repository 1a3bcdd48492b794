"""What decides a dataset's bytes (:class:`DatasetJob`: the scene, counts and output
format), as the manifest records it and the workers rebuild it."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..configfile import check_option
from ..errors import ConfigError
from ..layout import PARAMS_FORMATS, read_manifest
from ..params_columns import have_pyarrow, require_pyarrow
from ..scene import SceneConfig

if TYPE_CHECKING:
    from ..sampling import ImageParams
    from ..scene import SceneRenderer


@dataclass(frozen=True)
class OutputConfig:
    image_format: str = "png"  # png | jpg
    jpg_quality: int = 95
    container: str = "folder"  # folder | wds
    rps: bool = False  # Basel-generator-style per-image .rps JSON beside each image
    chunk_ids: int = 10
    params_format: str = "jsonl"  # jsonl | parquet (the CLI's "auto" is resolved by `from_options`)

    def __post_init__(self) -> None:
        if self.params_format not in PARAMS_FORMATS:
            raise ConfigError(f"unknown params format {self.params_format!r}: use {' or '.join(PARAMS_FORMATS)}")
        if self.image_format not in ("png", "jpg"):
            raise ConfigError(f"unknown image format {self.image_format!r}: use png or jpg")
        if not 1 <= self.jpg_quality <= 100:
            raise ConfigError(f"jpg quality must be 1..100, got {self.jpg_quality}")
        if self.container not in ("folder", "wds"):
            raise ConfigError(f"unknown container {self.container!r}: use folder or wds")
        if self.chunk_ids < 1:
            raise ConfigError(f"chunk size must be >= 1 identity, got {self.chunk_ids}")

    @classmethod
    def from_options(cls, opts: dict, out: Path) -> "OutputConfig":
        """The output of render options (``morphgen.options.RENDER_DEFAULTS`` names) for a
        dataset in `out`; ``params_format: auto`` becomes the format of the dataset already
        there (a resume never mixes formats), else parquet where pyarrow is installed and
        jsonl where it is not."""
        fmt = check_option("params_format", opts.get("params_format", "auto"), str)
        if fmt == "auto" and not opts.get("overwrite"):
            try:
                fmt = read_manifest(out)["config"]["output"].get("params_format", "jsonl")
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                fmt = "auto"
        if fmt == "auto":
            fmt = "parquet" if have_pyarrow() else "jsonl"
        elif fmt == "parquet":
            require_pyarrow("--params-format parquet")
        return cls(image_format=opts["image_format"], jpg_quality=opts["jpg_quality"], container=opts["container"],
                   rps=bool(opts["rps"]), chunk_ids=opts["chunk_ids"], params_format=fmt)

    def to_dict(self) -> dict:
        """As the manifest records it: without params_format where it is jsonl, so the
        manifests (and config hashes) of datasets written before Parquet still match."""
        d = asdict(self)
        if d["params_format"] == "jsonl":
            del d["params_format"]
        return d


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

    @property
    def recorded_appearance(self) -> bool:
        """Whether the renderer needs the appearance parts whatever the scene draws (recorded
        params that carry an appearance: :class:`~morphgen.dataset.from_params.ParamsJob`)."""
        return False

    def identity_params(self, renderer: SceneRenderer, identity: int) -> list[ImageParams]:
        """The images of one identity, in their order (sampled here; recorded ones in a
        :class:`~morphgen.dataset.from_params.ParamsJob`)."""
        return [renderer.sampler.image_params(identity, s) for s in range(self.per_id)]

    def check(self, renderer: SceneRenderer) -> None:
        """Raise the one-line error of an image this job cannot render with `renderer`'s
        scene, before the output folder is touched (sampled images always can)."""

    def images_in(self, chunks) -> int:
        """How many images the given chunks hold (a range of them counted, not walked:
        SYN-1M-sized plans have 10^5 chunks and more)."""
        if isinstance(chunks, range):
            full = len(chunks) * self.output.chunk_ids
            last = self.n_chunks - 1
            if last in chunks:  # the last chunk may hold fewer identities
                full -= self.output.chunk_ids - len(self.chunk_identities(last))
            return full * self.per_id
        return sum(len(self.chunk_identities(c)) for c in chunks) * self.per_id

    def slots(self, chunk: int) -> list[tuple[int, int]]:
        """(identity, sample) of each image of a chunk, in the order they are rendered."""
        return [(i, s) for i in self.chunk_identities(chunk) for s in range(self.per_id)]

    def to_dict(self) -> dict:
        return {"scene": self.scene.to_dict(), "per_id": self.per_id, "output": self.output.to_dict()}

    def config_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


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


def job_from_dict(d: dict) -> DatasetJob:
    if "from_params" in d:  # recorded params (render --from-params)
        from .from_params import ParamsJob

        return ParamsJob.from_dict(d)
    return DatasetJob(SceneConfig.from_dict(d["scene"]), int(d["per_id"]), OutputConfig(**d["output"]))


_BLOCK = 4096  # a file takes whole blocks of the disk (ext4's 4 kB): small images cost a block each


def estimate_bytes(job: DatasetJob, images: int | None = None) -> int:
    """Rough size on disk of `images` of the dataset (all of them by default), for the
    free-space check: PNG of rendered faces about 0.45 B a pixel (SYN-1M at 128 px: 21 GB),
    JPEG 0.17, each modality 0.7 of its image, every file rounded up to whole blocks, and
    its params record (JSON Lines about 4 kB an image, Parquet 1 kB)."""
    px = job.scene.size**2 * 3
    image = px * (0.45 if job.output.image_format == "png" else 0.17)
    files = [image] + [0.7 * image] * len(job.scene.outputs)
    per_image = sum(-(-int(f) // _BLOCK) * _BLOCK for f in files)
    per_image += 4000 if job.output.params_format == "jsonl" else 1000
    return int(per_image * (job.n_ids * job.per_id if images is None else images))
