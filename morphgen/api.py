"""morphgen as a library: scenes, images and differentiable renders from Python.

A :class:`Scene` is what ``morphgen render`` renders, built from the same options (same
names, with ``_`` for ``-``, same defaults, same checks and the same one-line
:class:`~morphgen.errors.ConfigError` for a bad value), so a notebook and a command line
draw the same images for the same options. Everything here is re-exported by
``import morphgen``; the dataset side (``open_dataset``, ``params_frame``, ``hf_dataset``)
is :mod:`morphgen.rendered`, online synthesis ``recognition.online.OnlineDataset``.

Three ways in, from the most to the least automatic:

* ``scene.params(identity, sample, yaw=30)`` draws an image's parameters from the sampler
  (every draw a pure function of (seed, identity, sample)), with any of them set
  explicitly; ``scene.render(params)`` renders a batch of them (numpy or torch).
* :func:`render_image` does both for one image in one call.
* ``scene.decode`` and ``scene.render_tensors`` are the differentiable path: coefficients
  or vertices, albedo, SH light and pose as torch tensors in, images out, gradients back.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ConfigError
from .options import RENDER_DEFAULTS, scene_config
from .render.camera import Pose
from .sampling import ImageParams
from .scene import SceneConfig, SceneRenderer

if TYPE_CHECKING:
    import torch

#: Options of ``morphgen render`` that say how a dataset is written, not what is drawn.
WRITER_OPTIONS = ("out", "per_id", "workers", "shard", "resume", "overwrite", "image_format", "jpg_quality",
                  "container", "rps", "chunk_ids", "params_format", "dask_address", "quiet")
#: Options a Scene takes: every other option of ``morphgen render``.
SCENE_OPTIONS = tuple(k for k in RENDER_DEFAULTS if k not in WRITER_OPTIONS)
# Per-image parameters that `Scene.params` can set, with their range (None: any finite value).
_SCALAR_PARAMS = {"yaw": (-180.0, 180.0), "pitch": (-90.0, 90.0), "roll": (-180.0, 180.0), "scale": (0.05, 10.0)}
_ARRAY_PARAMS = ("translation", "sh", "shape", "color", "expression")
PARAM_NAMES = (*_SCALAR_PARAMS, *_ARRAY_PARAMS, "background_seed")


class Scene:
    """A morphable model, samplers, light prior, backgrounds and renderer, configured by
    ``morphgen render``'s options and loaded once.

    ``config``: a YAML/JSON file as ``--config`` takes; ``options``: any of
    :data:`SCENE_OPTIONS` (``model``, ``seed``, ``pose``, ``size``, ``antialias``,
    ``outputs``, ``appearance``, ``photo``, ``device``...), which win over the file.
    ``ids`` is the identity pool that ``params`` draws from (mixup partners come from it).
    Values take the types the flags take; lists are accepted where a flag takes a
    comma-separated list (``outputs=["depth", "mask"]``)."""

    def __init__(self, config: str | Path | None = None, **options: Any):
        self._load(_scene_config(config, options))

    @classmethod
    def _of(cls, config: SceneConfig) -> Scene:
        """The scene of a config already read (`render_image` reads it for its key)."""
        scene = cls.__new__(cls)
        scene._load(config)
        return scene

    def _load(self, config: SceneConfig) -> None:
        self.config = config
        self.renderer = SceneRenderer(config, batch_size=1024 if config.device != "cpu" else 32)
        self._bases: dict = {}

    def __repr__(self) -> str:
        c = self.config
        return (f"Scene(model={c.model or 'embedded'}, ids={c.sampling.n_identities}, size={c.size}, "
                f"lod={c.lod}, device={c.device}, outputs={list(c.outputs)})")

    @property
    def model(self):
        """The :class:`~morphgen.model.MorphableModel` as rendered (landmarks and calibration
        applied): with ``lod="auto"`` (the default) a mesh denser than the render's pixels is
        on a subset of its vertices (:mod:`morphgen.lod`; its metadata says ``lod``, and its
        bases, rows of orthonormal ones, are not for fitting); ``full_model`` is the whole one."""
        return self.renderer.model

    @property
    def full_model(self):
        """The whole loaded model, whatever the level of detail (the sampler draws from it)."""
        return self.renderer.full_model

    @property
    def landmark_names(self) -> tuple[str, ...]:
        """Names of the ``landmarks`` rows of a render, in order."""
        return self.renderer.landmark_names

    # ------------------------------------------------------------------ sampling
    def params(self, identity: int = 0, sample: int = 0, **values: Any) -> ImageParams:
        """The parameters of image `sample` of `identity`, as ``morphgen render`` draws
        them, with any of :data:`PARAM_NAMES` set to a value instead: ``yaw``, ``pitch``,
        ``roll`` (degrees), ``scale``, ``translation`` (2, image-plane jitter as a fraction
        of the image), ``sh`` (9 x 3 spherical-harmonics light), ``shape``, ``color``,
        ``expression`` (coefficient vectors of the scene's lengths) and ``background_seed``."""
        n_ids = self.config.sampling.n_identities
        identity, sample = _whole("identity", identity), _whole("sample", sample)
        if identity >= n_ids:
            raise ConfigError(f"identity {identity} is outside the scene's pool of {n_ids} (ids): "
                              f"make the Scene with ids={identity + 1} or more")
        p = self.renderer.sampler.image_params(identity, sample)
        return replace(p, **{name: self._param_value(name, v) for name, v in values.items()})

    def _param_value(self, name: str, value: Any):
        """`value` checked as parameter `name` (type, shape, range): a one-line ConfigError
        here, never an error from deep inside the renderer."""
        if name not in PARAM_NAMES:
            raise ConfigError(f"unknown image parameter {name!r}: set any of {', '.join(PARAM_NAMES)}")
        if name == "background_seed":
            return _whole(name, value)
        if isinstance(value, (bool, str, bytes)):  # numpy reads True as 1 and "30" as 30.0
            raise ConfigError(f"{name} must be numbers, got {value!r}")
        try:
            a = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value, np.float64)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be numbers, got {value!r}") from None
        if not (np.isfinite(a).all() and (np.abs(a) <= np.finfo(np.float32).max).all()):  # (rendered as float32)
            raise ConfigError(f"{name} must be finite numbers (within float32's range)")
        if name in _SCALAR_PARAMS:
            low, high = _SCALAR_PARAMS[name]
            if a.shape != () or not low <= float(a) <= high:
                raise ConfigError(f"{name} = {value!r} is out of range: give one number from {low:g} to {high:g}")
            return float(a)
        want = {"translation": (2,), "sh": (9, 3), **self._coefficient_shapes()}[name]
        if a.shape != want:
            raise ConfigError(f"{name} has shape {a.shape}; this scene's is {want}")
        return a.astype(np.float32)

    # ------------------------------------------------------------------ rendering
    def render(self, params: ImageParams | Sequence[ImageParams], to: str = "numpy") -> dict[str, Any]:
        """Render a batch as ``morphgen render`` does (framing, background, appearance,
        photo effects): ``rgb`` (B, S, S, 3) uint8, ``landmarks5`` (B, 5, 2) pixels in
        MTCNN's order and convention with ``landmarks5_visible``, ``landmarks`` (B, L, 2)
        (names: :attr:`landmark_names`) with ``visible``, and each of the scene's
        ``outputs`` as the dataset stores it (depth uint16 in 0.1 mm, illumination uint16 in
        thousandths of the irradiance, the others uint8).
        ``to="torch"`` gives tensors on the scene's device (a GPU scene renders on the
        device and copies back once; for training throughput use ``OnlineDataset.stream``)."""
        if to not in ("numpy", "torch"):
            raise ConfigError(f"to={to!r}: use 'numpy' or 'torch'")
        batch = self._batch(params, "render")
        r = self.renderer
        # On the CPU each identity's images are rendered apart, in batches as the dataset
        # writer makes them: the decode's float sums depend on which rows share a matmul, so
        # a mixed batch gave depth, normals and landmarks a last bit off the command's. (The
        # GPU writer renders identities together, in batches of `r.batch_size`, as here.)
        by_identity: dict[tuple[int, int], list[int]] = {}
        for k, p in enumerate(batch):  # (the writer's batches of one identity: samples 0-31, 32-63, ...)
            key = (p.identity, p.sample // r.batch_size) if self.config.device == "cpu" else (0, 0)
            by_identity.setdefault(key, []).append(k)
        parts, order = [], []
        for rows in by_identity.values():
            for i in range(0, len(rows), r.batch_size):
                parts.append(r.render_plan_arrays(r.plan([batch[k] for k in rows[i:i + r.batch_size]])))
                order += rows[i:i + r.batch_size]
        back = np.argsort(order)  # the caller's order
        out = {k: np.concatenate([p[k] for p in parts])[back] for k in parts[0]}
        if to == "torch":
            import torch

            out = {k: torch.from_numpy(np.ascontiguousarray(v)).to(self.config.device) for k, v in out.items()}
        return out

    def pose(self, params: ImageParams | Sequence[ImageParams]) -> Pose:
        """The framed head pose of images (numpy, batch first) as the renderer places them:
        angles, scale, and the translation that centres the face by its five points. The
        start of a fit through :meth:`render_tensors`."""
        return self.renderer.plan(self._batch(params, "pose"), with_backgrounds=False).pose()

    def _batch(self, params, what: str) -> list[ImageParams]:
        """`params` as a non-empty list of ImageParams that fit this scene (its coefficient
        lengths; params of a scene with other component counts met numpy's matmul error)."""
        if isinstance(params, ImageParams):
            batch = [params]
        else:
            try:
                batch = [] if isinstance(params, (str, bytes, dict)) else list(params)
            except TypeError:  # not iterable (None, a number)
                batch = []
        if not batch or not all(isinstance(p, ImageParams) for p in batch):
            raise ConfigError(f"{what} takes ImageParams (from Scene.params) or a non-empty list of them")
        shapes = self._coefficient_shapes()
        for p in batch:
            for name, want in shapes.items():
                if np.shape(getattr(p, name)) != want:
                    raise ConfigError(f"the params of identity {p.identity} sample {p.sample} have {np.size(getattr(p, name))} "
                                      f"{name} coefficients, this scene {want[0]}: make them with this scene's params()")
            # the checks of `params`, for values edited since (dataclasses.replace): a NaN yaw
            # rendered a face with NaN landmarks, a scale of 0 failed as a landmark problem
            try:
                _whole("identity", p.identity), _whole("sample", p.sample)
                for name in PARAM_NAMES:
                    self._param_value(name, getattr(p, name))
            except ConfigError as exc:
                raise ConfigError(f"the params of identity {p.identity} sample {p.sample}: {exc}") from None
        return batch

    def _coefficient_shapes(self) -> dict[str, tuple[int]]:
        """The shapes of an image's coefficient vectors in this scene (its component counts)."""
        s = self.renderer.sampler
        return {"shape": (s.n_shape,), "color": (s.n_color,), "expression": (s.n_expr,)}

    # ------------------------------------------------------------------ differentiable path
    def decode(self, shape, color, expression=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Vertices (B, N, 3) in mm and albedo (B, N, 3) in [0, 1] of model coefficients,
        differentiable: torch tensors (or arrays) of (k,) or (B, k) with this scene's
        lengths (``len(scene.params().shape)`` ...), on any device; the bases follow the
        coefficients' device and dtype. Hair, eyewear and other appearance parts are not
        part of a decoded mesh. N is ``scene.model``'s: with ``lod="auto"`` a mesh denser
        than the render's pixels is decimated, so index vertices through ``scene.model``'s
        landmarks and regions (``lod="off"``: the whole mesh)."""
        s = self.renderer.sampler
        shape = _coeff_tensor(shape, "shape", s.n_shape)
        color = _coeff_tensor(color, "color", s.n_color, like=shape)
        d = self._torch_bases(shape.device, shape.dtype)
        if expression is not None and d["expr_basis"] is None and np.size(expression):
            raise ConfigError("expression given, but this scene has none (expressions=False, or none in the model)")
        expr = (_coeff_tensor(expression, "expression", s.n_expr, like=shape)
                if expression is not None and d["expr_basis"] is not None else None)
        sizes = {len(t) for t in (shape, color, expr) if t is not None}
        b = max(sizes)
        if sizes - {1, b}:
            raise ConfigError(f"shape, color and expression have batches of {sorted(sizes)}: give one batch size (or 1)")
        flat = d["shape_mean"] + shape @ d["shape_basis"].T
        if d["expr_basis"] is not None:
            flat = flat + d["expr_mean"]
            if expr is not None:
                flat = flat + expr @ d["expr_basis"].T
        albedo = (d["color_mean"] + color @ d["color_basis"].T).clamp(0.0, 1.0)
        n = self.model.n_vertices
        return flat.reshape(-1, n, 3).expand(b, -1, -1), albedo.reshape(-1, n, 3).expand(b, -1, -1)

    def _torch_bases(self, device, dtype) -> dict:
        import torch

        key = (str(device), dtype)
        if key not in self._bases:
            d = self.renderer.decoder
            arrays = {"shape_mean": d.shape_mean, "shape_basis": d.shape_basis, "color_mean": d.color_mean,
                      "color_basis": d.color_basis, "expr_mean": d.expr_mean, "expr_basis": d.expr_basis}
            self._bases[key] = {k: None if a is None else torch.as_tensor(a, device=device, dtype=dtype)
                                for k, a in arrays.items()}
        return self._bases[key]

    def render_tensors(self, vertices, albedo, sh, pose: Pose, *, backgrounds=None,
                       outputs: str | Sequence[str] = ("rgb",)) -> dict[str, torch.Tensor]:
        """Differentiable render with this scene's camera, size and antialias:
        vertices (B, N, 3) mm, albedo (B, N, 3) in [0, 1], sh (B, 9, 3) (or unbatched),
        pose a :class:`Pose` of batch B or 1 (angles in degrees, translation in mm; see
        :meth:`pose`), backgrounds (B, S, S, 3) in [0, 1] or None (black). Returns float
        images in [0, 1] (``rgb`` (B, S, S, 3)) and the requested ``outputs`` (any of
        ``morphgen.render.extras.OUTPUTS``; ``landmarks2d`` gives the five points then the
        named landmarks). Gradients reach vertices, albedo, light and pose through the
        shading, and with edge anti-aliasing (``antialias="edges"``, the default) through
        the silhouette too. N is the model's vertex count (a decoded
        mesh) or the dressed count of a scene with appearance. With ``landmarks2d`` comes
        ``landmarks5``: the five points as :meth:`render` gives them (the model's
        calibration applied), to fit to a detector's points."""
        import torch

        from .calibration import shift_points
        from .render.extras import OUTPUTS
        from .render.torch_render import render_torch
        from .rendered import name_list

        r, cfg = self.renderer, self.config
        vertices = _float_tensor(vertices, "vertices", full=True)
        if vertices.dim() == 2:
            vertices = vertices[None]
        n = vertices.shape[1] if vertices.dim() > 1 else 0
        if vertices.dim() != 3 or vertices.shape[2] != 3 or n not in (self.model.n_vertices, r.n_render_vertices):
            raise ConfigError(f"vertices have shape {tuple(vertices.shape)}; expected (B, {self.model.n_vertices}, 3) "
                              "for this scene's model")
        b, dev = len(vertices), vertices.device
        albedo = _batched(_float_tensor(albedo, "albedo", dev, full=True), b, (n, 3), "albedo")
        sh = _batched(_float_tensor(sh, "sh", dev, full=True), b, (9, 3), "sh")
        if not isinstance(pose, Pose):
            raise ConfigError(f"pose must be a morphgen.Pose (see Scene.pose), got {type(pose).__name__}")
        if (np.ndim(pose.yaw), np.ndim(pose.pitch), np.ndim(pose.roll), np.ndim(pose.translation)) != (1, 1, 1, 2):
            raise ConfigError("pose holds single numbers: its angles are (B,) and its translation (B, 3) arrays or "
                              "tensors (make it with Scene.pose, or morphgen.Pose.create(batch, yaw=...))")
        if int(np.shape(pose.yaw)[0] if np.ndim(pose.yaw) else 1) not in (1, b):
            raise ConfigError(f"pose has a batch of {np.shape(pose.yaw)[0]} for {b} meshes")
        outputs = name_list(outputs, "outputs")  # "depth" as one name, not its letters
        bad = [o for o in outputs if o not in OUTPUTS]
        if bad:
            raise ConfigError(f"unknown output(s) {bad}: choose from {', '.join(OUTPUTS)}")
        s = cfg.size
        if backgrounds is not None:
            if not (backgrounds.is_floating_point() if isinstance(backgrounds, torch.Tensor)
                    else np.asarray(backgrounds).dtype.kind == "f"):
                raise ConfigError("backgrounds must be floats in [0, 1] (a uint8 image divided by 255)")
            backgrounds = _batched(_float_tensor(backgrounds, "backgrounds", dev, full=True), b, (s, s, 3), "backgrounds")
        triangles = r.triangles if n == r.n_render_vertices else self.model.triangles
        out = render_torch(vertices, albedo, sh, pose, triangles, r.settings.camera, antialias=cfg.supersampling,
                           edge_aa=cfg.edge_aa,
                           backgrounds=backgrounds, outputs=tuple(outputs),
                           landmarks=r.five_point + r.landmark_groups, reference_coords=r.assets.reference_coords[:n],
                           region_labels=None if r.assets.region_labels is None else r.assets.region_labels[:n])
        if "landmarks2d" in outputs:  # the five points as `render` gives them (MTCNN's convention when calibrated)
            out["landmarks5"] = out["landmarks2d"][:, :5]
            if r.calibration is not None:
                off = r.calibration.offsets(np.broadcast_to(pose.numpy().yaw, (b,)))
                out["landmarks5"] = shift_points(out["landmarks5"], torch.as_tensor(off, dtype=vertices.dtype, device=dev))
        return out


def _scene_config(config: str | Path | None, options: dict[str, Any]) -> SceneConfig:
    """The scene that `config` and `options` describe, as ``morphgen render`` reads them."""
    bad = [k for k in options if k not in SCENE_OPTIONS]
    if bad:
        writer = [k for k in bad if k in WRITER_OPTIONS]
        hint = (f"{', '.join(writer)} {'is an option' if len(writer) == 1 else 'are options'} of writing a "
                "dataset (morphgen render)" if writer else
                "the options are those of `morphgen render --help` that decide the pixels, with _ for -")
        raise ConfigError(f"Scene: unknown option {', '.join(map(repr, bad))}: {hint}")
    return scene_config(config, options)


def _whole(name: str, value) -> int:
    """`value` as an int if it is a whole number from 0 to 2^63 - 1 (what an image's
    int64 seeds hold), else a one-line ConfigError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < 2**63:
        raise ConfigError(f"{name} must be a whole number from 0 to 2^63 - 1, got {value!r}")
    return int(value)


def _float_tensor(x, name: str, device=None, full: bool = False):
    """`x` as a floating torch tensor (arrays converted; tensors keep their graph); with
    `full`, half and bfloat16 become float32 (the rasterizers take 32 or 64 bits)."""
    import torch

    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(np.asarray(x, np.float32))
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be numbers (a tensor or an array), got {type(x).__name__}") from None
    if not x.is_floating_point() or (full and x.dtype not in (torch.float32, torch.float64)):
        x = x.float()
    return x if device is None else x.to(device)


def _batched(x, b: int, tail: tuple[int, ...], name: str):
    """(B, *tail) from (*tail), (1, *tail) or (B, *tail), else a one-line ConfigError."""
    if tuple(x.shape) == tail:
        x = x[None]
    if tuple(x.shape[1:]) != tail or len(x) not in (1, b):
        raise ConfigError(f"{name} has shape {tuple(x.shape)}; expected {tail} or ({b}, {', '.join(map(str, tail))})")
    return x.expand(b, *tail) if len(x) == 1 and b > 1 else x


def _coeff_tensor(x, name: str, k: int, like=None):
    """Coefficients as a (B, k) tensor (on `like`'s device and dtype where given)."""
    x = _float_tensor(x, name)
    if like is not None:
        x = x.to(like.device, like.dtype)
    if x.dim() == 1:
        x = x[None]
    if x.dim() != 2 or x.shape[1] != k:
        raise ConfigError(f"{name} has shape {tuple(x.shape)}; this scene's coefficients are ({k},) or (B, {k})")
    return x


_SCENES: dict[str, Scene] = {}


def _file_stamp(value) -> tuple[int, int] | None:
    """(size, mtime in ns) of the file a scene option names, or None (not a path, no file)."""
    if not isinstance(value, (str, os.PathLike)):
        return None
    try:
        st = os.stat(value)
    except (OSError, ValueError):
        return None
    return (st.st_size, st.st_mtime_ns)


def render_image(identity: int = 0, sample: int = 0, *, scene: Scene | None = None, to: str = "numpy",
                 **options: Any) -> dict[str, Any]:
    """One image in one call: sample `sample` of `identity`, with `options` split into
    image parameters (:data:`PARAM_NAMES`: ``yaw=30``, ``sh=...``) and scene options
    (:data:`SCENE_OPTIONS`: ``size=64``, ``outputs="depth"``) unless `scene` is given.
    Returns :meth:`Scene.render`'s arrays without the batch axis (``rgb`` (S, S, 3)...).
    The last scene built from options is kept, so a loop over yaws loads the model once.

    (``morphgen.render`` is the renderer's package, hence the name.)"""
    values = {k: options.pop(k) for k in list(options) if k in PARAM_NAMES}
    if scene is not None and not isinstance(scene, Scene):
        raise ConfigError(f"render_image: scene must be a morphgen.Scene, got {type(scene).__name__}")
    if scene is None:
        # The key is the scene as read (a config's and its pose file's contents included: a
        # file edited between two calls gave the first file's images) and the size and time
        # of change of the files it loads.
        config = _scene_config(options.pop("config", None), options)
        from .calibration import sidecar_path
        from .landmark_file import landmark_sidecar
        from .loading import default_model_path

        model = config.model or default_model_path()  # with the files beside it that load_model reads
        files = (model, sidecar_path(model), landmark_sidecar(model), config.landmarks, config.bip,
                 config.backgrounds, config.illumination)
        key = json.dumps([repr(config), [_file_stamp(f) for f in files]])
        if key not in _SCENES:
            _SCENES.clear()
            _SCENES[key] = Scene._of(config)
        scene = _SCENES[key]
    elif options:
        raise ConfigError(f"render_image: give scene options ({', '.join(options)}) or a scene, not both")
    out = scene.render(scene.params(identity, sample, **values), to=to)
    return {k: v[0] for k, v in out.items()}
