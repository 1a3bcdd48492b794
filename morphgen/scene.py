"""From scene parameters to finished images: the glue between sampling and rendering.

`SceneConfig` is everything (besides counts and file format) that decides an image's
pixels; `SceneRenderer` turns a list of `ImageParams` into RGB images, the requested extra
modalities and the 2D landmarks, with the model, decoder, light prior and backgrounds
loaded once per process.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from .calibration import LandmarkCalibration, sidecar_path
from .distributions import parse_distribution
from .errors import ConfigError
from .illumination import ILLUMINATION_KINDS, make_illumination
from .loading import default_model_path, load_model
from .model import sha256_file
from .render.backgrounds import make_background_source
from .render.camera import Framing, Pose, frame_translation
from .render.renderer import OUTPUTS, RenderSettings, render_batch
from .sampling import (ControlledGrid, Decoder, ImageParams, MixupConfig, SamplingConfig, SceneSampler,
                       pose_config, rng_for)

# Extra modalities a dataset can hold beside the RGB image (landmarks always go to params).
EXTRA_OUTPUTS = tuple(o for o in OUTPUTS if o not in ("rgb", "landmarks2d"))
_STREAM_BACKGROUND = 6


@dataclass(frozen=True)
class SceneConfig:
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    model: str | None = None  # None: the embedded default model
    illumination: str = "builtin"
    bip: str | None = None
    no_color: bool = False
    energy: float | None = None
    backgrounds: str = "procedural"  # procedural | plain | color:R,G,B | a folder of images
    size: int = 128
    antialias: int = 2
    outputs: tuple[str, ...] = ()
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.illumination not in ILLUMINATION_KINDS:
            raise ConfigError(f"unknown illumination {self.illumination!r}: use {', '.join(ILLUMINATION_KINDS)}")
        if not 16 <= self.size <= 1024:
            raise ConfigError(f"--size {self.size} is out of range: use 16 to 1024 pixels")
        if not 1 <= self.antialias <= 4:
            raise ConfigError(f"--antialias {self.antialias} is out of range: use 1 (off) to 4")
        bad = [o for o in self.outputs if o not in EXTRA_OUTPUTS]
        if bad:
            raise ConfigError(f"unknown output(s) {bad}: choose from {', '.join(EXTRA_OUTPUTS)}")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"unknown device {self.device!r}: use cpu or cuda")

    def to_dict(self) -> dict:
        s = self.sampling
        return {
            "model": self.model,
            "seed": s.seed,
            "ids": s.n_identities,
            "shape_components": s.shape_components,
            "color_components": s.color_components,
            "expression_components": s.expression_components,
            "shape_dist": str(s.shape),
            "color_dist": str(s.color),
            "expression_dist": str(s.expression),
            "expressions": s.expressions,
            "pose": s.pose.to_dict(),
            "grid": s.grid.to_dict() if s.grid else None,
            "identity_mixup": {"phis": list(s.mixup.phis), "fraction": s.mixup.fraction} if s.mixup else None,
            "illumination": self.illumination,
            "bip": self.bip,
            "no_color": self.no_color,
            "energy": self.energy,
            "backgrounds": self.backgrounds,
            "size": self.size,
            "antialias": self.antialias,
            "outputs": list(self.outputs),
            "device": self.device,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "SceneConfig":
        mix = d.get("identity_mixup")
        sampling = SamplingConfig(
            seed=int(d["seed"]),
            n_identities=int(d["ids"]),
            shape_components=d.get("shape_components"),
            color_components=d.get("color_components"),
            expression_components=d.get("expression_components"),
            shape=parse_distribution(d.get("shape_dist", "gaussian")),
            color=parse_distribution(d.get("color_dist", "gaussian")),
            expression=parse_distribution(d.get("expression_dist", "gaussian(0, 0.5, trunc=3)")),
            expressions=bool(d.get("expressions", True)),
            pose=pose_config(d.get("pose", "syn1m")),
            grid=ControlledGrid.parse(d["grid"]) if d.get("grid") else None,
            mixup=MixupConfig(tuple(float(p) for p in mix["phis"]), float(mix["fraction"])) if mix else None,
        )
        return cls(
            sampling=sampling, model=d.get("model"), illumination=d.get("illumination", "builtin"),
            bip=d.get("bip"), no_color=bool(d.get("no_color", False)), energy=d.get("energy"),
            backgrounds=d.get("backgrounds", "procedural"), size=int(d.get("size", 128)),
            antialias=int(d.get("antialias", 2)), outputs=tuple(d.get("outputs", ())), device=d.get("device", "cpu"),
        )

    def model_hash(self) -> str:
        """sha256 of the model file, combined with its landmark calibration's when present."""
        path = Path(self.model) if self.model else default_model_path()
        digest = sha256_file(path)
        calib = sidecar_path(path)
        if calib.exists():
            digest = hashlib.sha256((digest + sha256_file(calib)).encode()).hexdigest()
        return digest


@dataclass
class RenderResult:
    rgb: np.ndarray  # (H, W, 3) uint8
    extras: dict[str, np.ndarray]  # modality name -> uint8/uint16 image
    landmarks: np.ndarray  # (L, 2) pixel coordinates of the model's named landmarks
    visible: np.ndarray  # (L,) bool
    landmarks5: np.ndarray  # (5, 2) alignment points, MTCNN order
    landmarks5_visible: np.ndarray  # (5,) bool
    landmark_names: tuple[str, ...]

    def record(self) -> dict:
        """The per-image landmark entries of the params file."""
        return {
            "landmarks5": self.landmarks5.round(3).tolist(),
            "landmarks5_visible": self.landmarks5_visible.tolist(),
            "landmarks": {n: [round(float(x), 3), round(float(y), 3), bool(v)]
                          for n, (x, y), v in zip(self.landmark_names, self.landmarks, self.visible)},
        }


class SceneRenderer:
    """Loads the model and priors once; `render(params)` draws a batch of images."""

    def __init__(self, config: SceneConfig, batch_size: int = 32):
        self.config = config
        self.batch_size = batch_size
        self.model = load_model(config.model)
        self.illumination = make_illumination(config.illumination, bip_dir=config.bip, no_color=config.no_color,
                                              energy=config.energy)
        self.sampler = SceneSampler(self.model, config.sampling, self.illumination)
        self.decoder = Decoder.for_sampler(self.model, self.sampler)
        self.backgrounds = make_background_source(config.backgrounds)
        self.five_point = self.model.five_point_vertices()
        cal = self.model.metadata.get("landmark_calibration")
        # landmarks5 follow MTCNN's convention when the model carries a calibration
        self.calibration = LandmarkCalibration.from_dict(cal) if cal else None
        self.landmark_names = tuple(sorted(self.model.landmarks))
        self.landmark_groups = [[self.model.landmarks[n]] for n in self.landmark_names]
        outputs = ("rgb", "landmarks2d") + tuple(config.outputs)
        self.settings = RenderSettings(height=config.size, width=config.size, antialias=config.antialias,
                                       outputs=outputs, backend="numba" if config.device == "cpu" else "torch",
                                       device=config.device, framing=None)
        # Framing is done here (not in the renderer) so the sampled jitter is recorded.
        self.framing = Framing()

    @cached_property
    def _region_labels(self) -> np.ndarray | None:
        if not self.model.regions:
            return None
        labels = np.full(self.model.n_vertices, -1, np.int32)
        for i, name in enumerate(sorted(self.model.regions)):
            labels[self.model.regions[name]] = i
        return labels

    def render(self, params: list[ImageParams]) -> list[RenderResult]:
        out: list[RenderResult] = []
        for i in range(0, len(params), self.batch_size):
            out.extend(self._render_batch(params[i:i + self.batch_size]))
        return out

    def _render_batch(self, params: list[ImageParams]) -> list[RenderResult]:
        cfg = self.config
        b = len(params)
        shape = np.stack([p.shape for p in params])
        expr = np.stack([p.expression for p in params]) if self.sampler.n_expr else None
        vertices = self.decoder.vertices(shape, expr)
        albedo = self.decoder.albedo(np.stack([p.color for p in params]))
        sh = np.stack([p.sh for p in params])
        pose = Pose.create(yaw=[p.yaw for p in params], pitch=[p.pitch for p in params],
                           roll=[p.roll for p in params], scale=[p.scale for p in params], batch=b)
        # Frame by the five points, then shift by the sampled image-plane jitter.
        camera = self.settings.camera
        t = frame_translation(vertices, pose, self.five_point, camera, self.framing)
        jitter = np.stack([p.translation for p in params])  # fraction of the image
        t[:, 0] += jitter[:, 0] * cfg.size * (-t[:, 2]) / camera.focal_px
        t[:, 1] -= jitter[:, 1] * cfg.size * (-t[:, 2]) / camera.focal_px
        pose = pose.with_translation(t)
        backgrounds = np.stack([self.backgrounds.sample(rng_for(p.background_seed, _STREAM_BACKGROUND), cfg.size, cfg.size)
                                for p in params])
        groups = self.five_point + self.landmark_groups
        res = render_batch(vertices, albedo, sh, pose, self.model.triangles, self.settings, backgrounds=backgrounds,
                     landmarks=groups, reference_coords=self.model.shape.mean.reshape(-1, 3),
                     region_labels=self._region_labels)
        lm5 = res["landmarks2d"][:, :5]
        if self.calibration is not None:
            lm5 = self.calibration.apply(lm5, np.array([p.yaw for p in params]))
        results = []
        for k in range(b):
            lm, vis = res["landmarks2d"][k], res["visibility"][k]
            extras = {name: _to_image(name, res[name][k]) for name in cfg.outputs}
            results.append(RenderResult(res["rgb"][k], extras, lm[5:], vis[5:], lm5[k], vis[:5], self.landmark_names))
        return results


def _to_image(name: str, a: np.ndarray) -> np.ndarray:
    """A modality as a storable image: depth as uint16 in 0.1 mm (PNG), the rest uint8."""
    a = np.asarray(a)
    if name == "depth":
        return np.clip(a * 10.0, 0, 65535).astype(np.uint16)
    if name == "mask":
        return (a.astype(bool) * 255).astype(np.uint8)
    if name == "regions":
        return (a.astype(np.int32) + 1).clip(0, 255).astype(np.uint8)  # 0 = background
    if name == "normals":
        return np.clip((a * 0.5 + 0.5) * 255 + 0.5, 0, 255).astype(np.uint8)
    return np.clip(a * 255 + 0.5, 0, 255).astype(np.uint8)
