"""From scene parameters to finished images: the glue between sampling and rendering.

`SceneConfig` is everything (besides counts and file format) that decides an image's
pixels; `SceneRenderer` turns a list of `ImageParams` into RGB images, the requested extra
modalities and the 2D landmarks, with the model, decoder, light prior and backgrounds
loaded once per process.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from .calibration import LandmarkCalibration
from .distributions import parse_distribution
from .errors import ConfigError
from .illumination import ILLUMINATION_KINDS, make_illumination
from .loading import load_model, model_digest
from .lod import decimated, lod_level, parse_lod
from .render.backgrounds import make_background_source
from .render.camera import Framing, Pose, frame_translation
from .appearance import AppearanceConfig, appearance_for
from .render.extras import OUTPUTS
from .render.photo import PhotoConfig, apply_photo
from .render.renderer import RenderSettings, render_batch
from .render_plan import RenderPlan, RenderResult, SceneAssets
from .sampling import (ControlledGrid, Decoder, ImageParams, MixupConfig, SamplingConfig, SceneSampler,
                       pose_config, rng_for)

# Extra modalities a dataset can hold beside the RGB image (landmarks always go to params).
EXTRA_OUTPUTS = tuple(o for o in OUTPUTS if o not in ("rgb", "landmarks2d"))
EDGE_AA = "edges"  # --antialias edges: analytic edge anti-aliasing (morphgen.render.edge_aa)
MIN_SIZE, MAX_SIZE = 16, 1024  # the render side in pixels (--size)


def antialias_value(value) -> int | str:
    """``--antialias`` as the scene keeps it: "edges", or a supersampling factor 1..4 (an
    int, or its digits as a flag or config file gives them); a one-line ConfigError else."""
    text = str(value).strip().lower()
    if text == EDGE_AA:
        return EDGE_AA
    if not isinstance(value, bool) and text.isdigit() and 1 <= int(text) <= 4:
        return int(text)
    raise ConfigError(f"--antialias {value} is invalid: use edges (analytic edge anti-aliasing) or a supersampling "
                      "factor from 1 (off) to 4")


_STREAM_BACKGROUND = 6


@dataclass(frozen=True)
class SceneConfig:
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    model: str | None = None  # None: the embedded default model
    landmarks: str | None = None  # landmark file; None: <model>.landmarks.json beside the model, if any
    illumination: str = "builtin"
    bip: str | None = None
    no_color: bool = False
    energy: float | None = None
    backgrounds: str = "procedural"  # procedural | plain | color:R,G,B | a folder of images
    size: int = 128
    antialias: int | str = "edges"  # "edges" (analytic edge anti-aliasing) or a supersampling factor 1..4
    lod: str | int = "auto"  # level of detail (morphgen.lod): "auto", "off", a vertex count or "1.6px"
    outputs: tuple[str, ...] = ()
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.illumination not in ILLUMINATION_KINDS:
            raise ConfigError(f"unknown illumination {self.illumination!r}: use {', '.join(ILLUMINATION_KINDS)}")
        if not MIN_SIZE <= self.size <= MAX_SIZE:
            raise ConfigError(f"--size {self.size} is out of range: use {MIN_SIZE} to {MAX_SIZE} pixels")
        object.__setattr__(self, "antialias", antialias_value(self.antialias))
        object.__setattr__(self, "lod", parse_lod(self.lod))
        bad = [o for o in self.outputs if o not in EXTRA_OUTPUTS]
        if bad:
            raise ConfigError(f"unknown output(s) {bad}: choose from {', '.join(EXTRA_OUTPUTS)}")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"unknown device {self.device!r}: use cpu or cuda")

    @property
    def supersampling(self) -> int:
        """The renderer's supersampling factor (1 with edge anti-aliasing)."""
        return 1 if self.antialias == EDGE_AA else int(self.antialias)

    @property
    def edge_aa(self) -> bool:
        """Whether the renderer anti-aliases edges analytically (``--antialias edges``)."""
        return self.antialias == EDGE_AA

    def to_dict(self) -> dict:
        s = self.sampling
        return {
            "model": self.model,
            **({"landmarks": self.landmarks} if self.landmarks else {}),  # absent when unset: old manifests still match
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
            **({"photo": s.photo.to_spec()} if s.photo.active else {}),  # absent when off: old manifests still match
            **({"appearance": s.appearance.to_spec()} if s.appearance.active else {}),
            "illumination": self.illumination,
            "bip": self.bip,
            "no_color": self.no_color,
            "energy": self.energy,
            "backgrounds": self.backgrounds,
            "size": self.size,
            "antialias": self.antialias,
            # absent means off: manifests written before --lod rendered whole meshes (a resume
            # of one keeps them whole, see morphgen.dataset.run)
            **({"lod": self.lod} if self.lod != "off" else {}),
            "outputs": list(self.outputs),
            "device": self.device,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "SceneConfig":
        """The scene of a `to_dict` mapping (a manifest's); absent keys take the render
        options' defaults (`morphgen.options.RENDER_DEFAULTS`, the one table of them), but
        an absent ``lod`` is "off", what every scene rendered before the option existed."""
        from .options import RENDER_DEFAULTS as D

        mix = d.get("identity_mixup")
        sampling = SamplingConfig(
            seed=int(d["seed"]),
            n_identities=int(d["ids"]),
            shape_components=d.get("shape_components"),
            color_components=d.get("color_components"),
            expression_components=d.get("expression_components"),
            shape=parse_distribution(d.get("shape_dist", D["shape_dist"])),
            color=parse_distribution(d.get("color_dist", D["color_dist"])),
            expression=parse_distribution(d.get("expression_dist", D["expression_dist"])),
            expressions=bool(d.get("expressions", D["expressions"])),
            pose=pose_config(d.get("pose", D["pose"])),
            grid=ControlledGrid.parse(d["grid"]) if d.get("grid") else None,
            mixup=MixupConfig(tuple(float(p) for p in mix["phis"]), float(mix["fraction"])) if mix else None,
            photo=PhotoConfig.parse(d.get("photo", D["photo"])),
            appearance=AppearanceConfig.parse(d.get("appearance", D["appearance"])),
        )
        return cls(
            sampling=sampling, model=d.get("model"), landmarks=d.get("landmarks"), illumination=d.get("illumination", D["illumination"]),
            bip=d.get("bip"), no_color=bool(d.get("no_color", D["no_color"])), energy=d.get("energy"),
            backgrounds=d.get("backgrounds", D["backgrounds"]), size=int(d.get("size", D["size"])),
            antialias=d.get("antialias", D["antialias"]), lod=d.get("lod", "off"), outputs=tuple(d.get("outputs", ())),
            device=d.get("device", D["device"]),
        )

    def model_hash(self) -> str:
        """sha256 of the model file, combined with its calibration's and landmark file's when present."""
        return model_digest(self.model, self.landmarks)


def _largest_scale(sampling: SamplingConfig) -> float:
    """How much larger than framed a face is drawn, at most (the 99th percentile of the pose
    scale, 1 at least): close-ups take the level of detail of a larger image."""
    draws = sampling.pose.scale.sample(np.random.default_rng(0), 4096)
    return max(1.0, float(np.quantile(draws, 0.99)))


class SceneRenderer:
    """Loads the model and priors once; `render(params)` draws a batch of images."""

    def __init__(self, config: SceneConfig, batch_size: int = 32, recorded_appearance: bool = False):
        """`recorded_appearance`: build the appearance parts (hair, eyewear, ...) even where
        the scene draws none, for recorded params that carry theirs (``--from-params``)."""
        self.config = config
        self.batch_size = batch_size
        # the sampler draws from the whole model (an image's params do not depend on the level
        # of detail); everything that renders uses `model`, the mesh at the render's level
        self.full_model = load_model(config.model, config.landmarks, need_five_points=True)
        if "regions" in config.outputs and not self.full_model.regions:
            raise ConfigError(f"--outputs regions needs a model with region labels, and {config.model or 'the embedded model'} "
                              "has none: leave regions out of --outputs")
        self.model, self.kept_vertices = decimated(self.full_model, lod_level(
            self.full_model, config.size * _largest_scale(config.sampling), config.supersampling, config.lod))
        self.illumination = make_illumination(config.illumination, bip_dir=config.bip, no_color=config.no_color,
                                              energy=config.energy)
        self.sampler = SceneSampler(self.full_model, config.sampling, self.illumination)
        self.decoder = Decoder.for_sampler(self.model, self.sampler)
        self.backgrounds = make_background_source(config.backgrounds)
        self.five_point = self.model.five_point_vertices()
        cal = self.model.metadata.get("landmark_calibration")
        # landmarks5 follow MTCNN's convention when the model carries a calibration
        self.calibration = LandmarkCalibration.from_dict(cal) if cal else None
        self.landmark_names = tuple(sorted(self.model.landmarks))
        self.landmark_groups = [[self.model.landmarks[n]] for n in self.landmark_names]
        outputs = ("rgb", "landmarks2d") + tuple(config.outputs)
        self.settings = RenderSettings(height=config.size, width=config.size, antialias=config.supersampling,
                                       edge_aa=config.edge_aa, outputs=outputs,
                                       backend="numba" if config.device == "cpu" else "torch",
                                       device=config.device, framing=None)
        # Framing is done here (not in the renderer) so the sampled jitter is recorded.
        self.framing = Framing()
        # Appearance (hair, glasses...) appends vertices with a fixed triangle list to the model's.
        self.appearance = (appearance_for(self.model, self.full_model, self.kept_vertices)
                           if config.sampling.appearance.active or recorded_appearance else None)
        self.triangles = self.appearance.triangles if self.appearance is not None else self.model.triangles
        self.n_render_vertices = self.model.n_vertices + (self.appearance.n_extra if self.appearance else 0)

    @cached_property
    def _region_labels(self) -> np.ndarray | None:
        """Region index per rendered vertex (-1 where none, and on hair and glasses)."""
        if not self.model.regions:
            return None
        labels = np.full(self.n_render_vertices, -1, np.int32)
        for i, name in enumerate(sorted(self.model.regions)):
            labels[:self.model.n_vertices][self.model.regions[name]] = i
        return labels

    @cached_property
    def _reference_coords(self) -> np.ndarray:
        """The mean shape per rendered vertex (correspondence output); hair and glasses take
        the origin."""
        ref = np.zeros((self.n_render_vertices, 3), np.float32)
        ref[:self.model.n_vertices] = self.model.shape.mean.reshape(-1, 3)
        return ref

    @cached_property
    def _five_point_decoder(self) -> tuple[Decoder, list[list[int]]]:
        """A decoder of only the five points' vertices (a few dozen rows of the bases), so a
        plan frames its faces without decoding whole meshes."""
        verts = sorted({int(v) for g in self.five_point for v in np.atleast_1d(g)})
        where = {v: i for i, v in enumerate(verts)}
        return self.decoder.restricted(verts), [[where[int(v)] for v in np.atleast_1d(g)] for g in self.five_point]

    def plan(self, params: list[ImageParams], with_backgrounds: bool = True) -> RenderPlan:
        """The numpy side of a batch: coefficients, framed pose and (optionally) backgrounds."""
        cfg = self.config
        b = len(params)
        shape = np.stack([p.shape for p in params]).astype(np.float32)
        expr = (np.stack([p.expression for p in params]).astype(np.float32) if self.sampler.n_expr
                else np.zeros((b, 0), np.float32))
        pose = Pose.create(yaw=[p.yaw for p in params], pitch=[p.pitch for p in params],
                           roll=[p.roll for p in params], scale=[p.scale for p in params], batch=b)
        # Frame by the five points, then shift by the sampled image-plane jitter.
        dec, groups = self._five_point_decoder
        pts = dec.vertices(shape, expr if expr.shape[1] else None)
        camera = self.settings.camera
        t = frame_translation(pts, pose, groups, camera, self.framing)
        jitter = np.stack([p.translation for p in params])  # fraction of the image
        t[:, 0] += jitter[:, 0] * cfg.size * (-t[:, 2]) / camera.focal_px
        t[:, 1] -= jitter[:, 1] * cfg.size * (-t[:, 2]) / camera.focal_px
        for k, p in enumerate(params):  # a recorded place (a fitted photo's) is kept as it is
            if p.camera_translation is not None:
                t[k] = p.camera_translation
        seeds = np.array([p.background_seed for p in params], np.int64)
        backgrounds = None
        if with_backgrounds:
            backgrounds = np.stack([self.backgrounds.sample(rng_for(int(s), _STREAM_BACKGROUND), cfg.size, cfg.size)
                                    for s in seeds])
        photo = [p.photo for p in params] if any(p.photo for p in params) else None
        look = self.appearance.arrays([p.appearance for p in params]) if self.appearance is not None else None
        return RenderPlan(params, shape, np.stack([p.color for p in params]).astype(np.float32), expr,
                          np.stack([p.sh for p in params]).astype(np.float32), pose.yaw, pose.pitch, pose.roll,
                          pose.scale, t, seeds, backgrounds, photo, look)

    def _render_numba(self, plan: RenderPlan) -> tuple[dict, np.ndarray]:
        vertices = self.decoder.vertices(plan.shape, plan.expression if plan.expression.shape[1] else None)
        albedo = self.decoder.albedo(plan.color)
        specular = hidden = None
        if self.appearance is not None:
            vertices, albedo = self.appearance.apply(vertices, albedo, plan.appearance, np)
            specular = self.appearance.specular(plan.appearance, np)
            hidden = self.appearance.hidden_triangles(plan.appearance)
        res = render_batch(vertices, albedo, plan.sh, plan.pose(), self.triangles, self.settings,
                           backgrounds=plan.backgrounds, landmarks=self.five_point + self.landmark_groups,
                           reference_coords=self._reference_coords, region_labels=self._region_labels,
                           specular=specular, hidden_triangles=hidden)
        lm5 = res["landmarks2d"][:, :5]
        if self.calibration is not None:
            lm5 = self.calibration.apply(lm5, plan.yaw)
        return res, lm5

    def _render_device(self, plan: RenderPlan) -> tuple[dict, np.ndarray]:
        import torch

        dev = self._torch_scene.render(plan, self.config.outputs, all_landmarks=True)
        dev["rgb"] = (dev["rgb"].clamp(0.0, 1.0) * 255.0 + 0.5).floor().clamp(max=255).to(torch.uint8)
        res = {k: dev[k].cpu().numpy() for k in ("rgb", "landmarks2d", "visibility", *self.config.outputs)}
        return res, dev["landmarks5"].cpu().numpy().astype(np.float64)

    def warm_up(self) -> None:
        """Render one throwaway image, so that what a first render builds (on a GPU the
        device context, the bases on the device and the compiled kernels, a few seconds) is
        ready. The GPU dataset writer calls it while its worker processes start."""
        self.render_plan_arrays(self.plan([self.sampler.image_params(0, 0)]))

    def render(self, params: list[ImageParams]) -> list[RenderResult]:
        out: list[RenderResult] = []
        for i in range(0, len(params), self.batch_size):
            out.extend(self.render_plan(self.plan(params[i:i + self.batch_size])))
        return out

    @cached_property
    def assets(self) -> SceneAssets:
        """What a device renderer (:class:`morphgen.torch_scene.TorchScene`) needs of this scene."""
        return SceneAssets(self.decoder, self.triangles, self.settings.camera, self.config.size,
                           self.config.supersampling, self.config.edge_aa, self.backgrounds, self.five_point,
                           self.landmark_groups, self._reference_coords, self._region_labels, self.calibration,
                           self.appearance)

    @cached_property
    def _torch_scene(self):
        from .torch_scene import TorchScene  # imports torch

        return TorchScene(self.assets, self.config.device, pool_size=0)

    def render_plan(self, plan: RenderPlan) -> list[RenderResult]:
        """Pixels, extra modalities and landmarks of a plan made with its backgrounds, per image."""
        return self.results_from_arrays(self.render_plan_arrays(plan))

    def render_plan_arrays(self, plan: RenderPlan) -> dict[str, np.ndarray]:
        """The batch form of :meth:`render_plan`: arrays with one row per image -- ``rgb``,
        each extra output under its name (as stored: see ``_to_image``), ``landmarks`` /
        ``visible`` (the model's named landmarks) and ``landmarks5`` / ``landmarks5_visible``.
        The fused numba renderer on the CPU; on a GPU, decode and render stay on the device
        (TorchScene) and only the finished uint8 images and the landmarks come back."""
        cfg = self.config
        if plan.backgrounds is None:
            raise ConfigError("render_plan needs a plan made with its backgrounds (plan(..., with_backgrounds=True))")
        res, lm5 = self._render_numba(plan) if cfg.device == "cpu" else self._render_device(plan)
        if plan.photo and cfg.device == "cpu":  # the device path applies them before leaving the GPU
            res["rgb"] = np.stack([apply_photo(img, fx) for img, fx in zip(res["rgb"], plan.photo)])
        lm, vis = res["landmarks2d"], res["visibility"]
        out = {"rgb": res["rgb"], "landmarks": lm[:, 5:], "visible": vis[:, 5:], "landmarks5": lm5,
               "landmarks5_visible": vis[:, :5]}
        out.update({name: _to_image(name, res[name]) for name in cfg.outputs})
        return out

    def results_from_arrays(self, arrays: dict[str, np.ndarray]) -> list[RenderResult]:
        """Per-image RenderResults viewing the rows of :meth:`render_plan_arrays`' arrays."""
        a = arrays
        return [RenderResult(a["rgb"][k], {name: a[name][k] for name in self.config.outputs}, a["landmarks"][k],
                             a["visible"][k], a["landmarks5"][k], a["landmarks5_visible"][k], self.landmark_names)
                for k in range(len(a["rgb"]))]


# Irradiance per stored unit of the illumination output (uint16): a face's light reaches
# 0.6-1.8 under the built-in prior (2.1 at most), which 8 bits in [0, 1] clipped white
# on half its pixels; this keeps 0.001 steps up to 65.5 (a bright --energy).
ILLUMINATION_UNIT = 0.001


def _to_image(name: str, a: np.ndarray) -> np.ndarray:
    """A modality as a storable image: depth as uint16 in 0.1 mm, illumination as uint16 in
    ``ILLUMINATION_UNIT`` (PNG), the rest uint8."""
    a = np.asarray(a)
    if name == "depth":
        return np.clip(a * 10.0, 0, 65535).astype(np.uint16)
    if name == "illumination":
        return np.clip(a / ILLUMINATION_UNIT + 0.5, 0, 65535).astype(np.uint16)
    if name == "mask":
        return (a.astype(bool) * 255).astype(np.uint8)
    if name == "regions":
        return (a.astype(np.int32) + 1).clip(0, 255).astype(np.uint8)  # 0 = background
    if name == "normals":
        return np.clip((a * 0.5 + 0.5) * 255 + 0.5, 0, 255).astype(np.uint8)
    return np.clip(a * 255 + 0.5, 0, 255).astype(np.uint8)
