"""High-level rendering API: posed, lit, framed faces composited over backgrounds.

Two paths that produce the same images (tested to agree within 1/255 on pixels whose
triangle ids agree):

* **fused CPU path** (``backend="numba"``): the kernels of :mod:`.fused_numba`, writing
  uint8 pixels directly. Nothing is differentiable; this is the dataset path.
* **torch path** (``backend="torch"``, or :func:`.torch_render.render_torch`): batched,
  device-agnostic and differentiable; fitting, GPU generation and online training.

Image formation (both paths): ``v_cam = scale * R v + t``; normals are area-weighted
vertex normals rotated into camera space; per-vertex radiance ``albedo * irradiance``
(Basel SH, see :mod:`morphgen.spherical_harmonics`) plus, where per-vertex weights are
given, a white specular highlight (:mod:`.specular`), then the optional colour
transform; the face colour is clipped to [0, 1] per sample, averaged over the ``antialias`` x ``antialias``
sub-samples of each pixel together with its coverage ``alpha``, and composited as
``face_sum + (1 - alpha) * background``. Colours are linear, as in the Basel generator
(no gamma curve is applied).

Supersampling (``antialias = k``) renders at k times the resolution and averages k x k
blocks, which is exact area anti-aliasing of the silhouette. It costs about as much as
rendering at k times the size: on this project's 2-core machines the embedded model
(12.6k triangles) renders at about 850-940 images/s per core at 128 px with k = 1 and
490-550 with k = 2, a BFM-face12-sized mesh (56k triangles) at 430-540 and 250-300
(benchmarks/bench_render.py prints these). Edge anti-aliasing (``edge_aa``, k = 1,
:mod:`.edge_aa`) instead blends the pixels along silhouette and occlusion edges by their
analytic coverage, after a render at the output size: the silhouettes of 2x2 (or
better), for about a third of its extra cost. ``RenderSettings`` defaults to k = 1
without it; the dataset writer (``morphgen render --antialias``) to edge anti-aliasing
(before, to k = 2). It changes only ``rgb``: the other outputs are those of k = 1.

Other outputs (``settings.outputs``) at the output resolution:
``depth`` (mm, view space, 0 = background), ``normals`` (camera-space unit normals),
``albedo``, ``illumination`` (irradiance only, no albedo), ``correspondence`` (the given
per-vertex reference coordinates mapped to [0, 1] RGB by their bounding box),
``regions`` (int32 label of the nearest vertex, -1 = background), ``mask`` (bool,
coverage >= 0.5) and ``landmarks2d`` with ``visibility``. Continuous outputs are the mean
over the covered sub-samples; labels take the sub-sample at index k // 2.

Landmark visibility (:func:`.extras.landmark_visibility`, one function for both paths):
a landmark (mean of a vertex group) is visible when it projects inside the image and the
z-buffer at its pixel is not in front of it by more than ``visibility_tolerance`` times
its depth (1 % = 10 mm at 1 m, a few pixels of a steep surface); so at large yaw the far
eye is hidden by the nose and cheek.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..errors import ConfigError
from ..spherical_harmonics import LAMBERT_KERNEL, irradiance
from ..tensors import is_tensor
from .camera import Camera, Framing, Pose, frame_translation, group_points, group_weights
from .extras import OUTPUTS, landmark_pixels, reference_colors, visible_at_depth
from .fused_numba import fused_render, resolve_attrs, resolve_labels
from .raster_common import BACKENDS
from .edge_aa import ContourMesh, contour_mesh, depth_tolerance
from .raster_numba import MESH_CACHE
from .shading import LUMA, ColorTransform
from .specular import highlight
from .torch_render import render_torch

RENDER_BACKENDS = ("auto", "numba", "torch", "pytorch3d")


@dataclass(frozen=True)
class RenderSettings:
    """Everything about *how* to render that does not change per image.

    backend: "numba" (fused CPU path), "torch" (batched torch path; rasterizes with
        ``raster_backend``), "pytorch3d" (torch path with PyTorch3D's rasterizer) or
        "auto" (torch on CUDA devices, numba otherwise).
    raster_backend: rasterizer of the torch path: "auto" (numba on CPU; on CUDA triton
        where it is installed, else torch), "numba", "torch", "triton", "pytorch3d".
    antialias: supersampling factor k (1 to 4); see the module docstring.
    edge_aa: edge anti-aliasing (:mod:`.edge_aa`): analytic coverage at silhouette and
        occlusion edges, for k = 1.
    outputs: any of ``OUTPUTS``; "landmarks2d" also returns "visibility".
    framing: place each face by its five alignment points (None: use pose.translation).
    output_dtype: "uint8" (0..255) or "float32" (0..1) for rgb.
    """

    height: int = 128
    width: int = 128
    backend: str = "auto"
    raster_backend: str = "auto"
    antialias: int = 1
    edge_aa: bool = False
    outputs: tuple[str, ...] = ("rgb",)
    cull_backfaces: bool = True
    framing: Framing | None = field(default_factory=Framing)
    focal_mm: float = 50.0
    sensor_mm: float = 15.0
    near: float = 10.0
    output_dtype: str = "uint8"
    visibility_tolerance: float = 0.01
    device: str | None = None

    def __post_init__(self) -> None:
        Camera(self.height, self.width, self.focal_mm, self.sensor_mm, self.near)  # validates
        if self.backend not in RENDER_BACKENDS:
            raise ConfigError(f"unknown render backend {self.backend!r}: use one of {', '.join(RENDER_BACKENDS)}")
        if self.raster_backend not in ("auto", *BACKENDS):
            raise ConfigError(f"unknown raster backend {self.raster_backend!r}: use auto, {', '.join(BACKENDS)}")
        if isinstance(self.antialias, bool) or not isinstance(self.antialias, (int, np.integer)) or not 1 <= self.antialias <= 4:
            raise ConfigError(f"antialias = {self.antialias!r} is invalid: use a whole supersampling factor from 1 to 4")
        if self.edge_aa and self.antialias != 1:
            raise ConfigError(f"edge anti-aliasing replaces supersampling: use it with antialias 1, not {self.antialias}")
        if isinstance(self.outputs, str):
            object.__setattr__(self, "outputs", (self.outputs,))
        bad = [o for o in self.outputs if o not in OUTPUTS]
        if bad:
            raise ConfigError(f"unknown render output(s) {bad}: choose from {', '.join(OUTPUTS)}")
        if self.output_dtype not in ("uint8", "float32"):
            raise ConfigError(f"output_dtype {self.output_dtype!r} is invalid: use uint8 or float32")
        if not 0 <= self.visibility_tolerance < 1:
            raise ConfigError(f"visibility_tolerance = {self.visibility_tolerance} is out of range: use 0 to 1 (relative depth)")

    @property
    def camera(self) -> Camera:
        return Camera(self.height, self.width, self.focal_mm, self.sensor_mm, self.near)

    def resolved_backend(self) -> str:
        if self.backend != "auto":
            return self.backend
        if self.device is None or str(self.device).split(":")[0] == "cpu":  # a str or a torch.device
            return "numba"
        import torch

        return "torch" if torch.device(self.device).type != "cpu" else "numba"


# --------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------
def _batch_np(x, b: int, tail: tuple[int, ...], name: str, dtype=np.float32) -> np.ndarray:
    if is_tensor(x):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=dtype)
    if a.shape == tail:
        return a[None]
    if a.shape != (b, *tail):
        raise ConfigError(f"{name} has shape {a.shape}; expected {tail} or ({b}, {', '.join(map(str, tail))})")
    if b > 1 and a.strides[0] == 0:  # one row broadcast to the batch (one identity's albedo): kept as one,
        return a[:1].copy()           # writable (numba compiles read-only arrays a second time)
    return np.ascontiguousarray(a)


def _backgrounds_np(backgrounds, b: int, h: int, w: int) -> np.ndarray:
    """Backgrounds as uint8 (B or 1, H, W, 3)."""
    if backgrounds is None:
        return np.zeros((1, h, w, 3), dtype=np.uint8)
    if is_tensor(backgrounds):
        backgrounds = backgrounds.detach().cpu().numpy()
    bg = np.asarray(backgrounds)
    if bg.ndim == 3:
        bg = bg[None]
    if bg.shape[1:] != (h, w, 3) or bg.shape[0] not in (1, b):
        raise ConfigError(f"backgrounds have shape {bg.shape}; expected ({b}, {h}, {w}, 3) to match the render size")
    if bg.dtype != np.uint8:
        bg = (np.clip(bg.astype(np.float64), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return np.ascontiguousarray(bg)


def _landmark_groups(landmarks, five_point_groups):
    if landmarks is not None:
        return landmarks
    return five_point_groups


def _resolve_pose(vertices_np, pose: Pose, settings: RenderSettings, five_point_groups, rng) -> Pose:
    if settings.framing is not None and five_point_groups is not None:
        t = frame_translation(vertices_np, pose, five_point_groups, settings.camera, settings.framing, rng)
        return pose.numpy().with_translation(t)
    return pose.numpy()


# --------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------
def render_batch(
    vertices,
    albedo,
    sh,
    pose: Pose,
    triangles,
    settings: RenderSettings = RenderSettings(),
    *,
    backgrounds=None,
    five_point_groups: Sequence[Sequence[int]] | None = None,
    landmarks: Sequence[Sequence[int]] | Sequence[int] | None = None,
    reference_coords=None,
    region_labels=None,
    color_transform: ColorTransform | None = None,
    specular=None,
    hidden_triangles=None,
    rng: np.random.Generator | None = None,
) -> dict[str, np.ndarray]:
    """Render B faces; numpy in, numpy out.

    vertices: (B, N, 3) model-space mm. albedo: (B, N, 3) or (N, 3) in [0, 1].
    sh: (B, 9, 3) or (9, 3) Basel SH light. pose: :class:`Pose` (translation ignored
    when ``settings.framing`` is set and ``five_point_groups`` given; ``rng`` drives
    the framing jitter). triangles: (T, 3). backgrounds: (B, H, W, 3) uint8 or float in
    [0, 1], or None for black. landmarks: vertex groups (or single vertices) for
    "landmarks2d" (default: the five alignment points). reference_coords: (N, 3) for
    "correspondence" (e.g. the mean shape). region_labels: (N,) ints for "regions".
    specular: (B, N) or (N,) per-vertex weights of the specular term (:mod:`.specular`),
    None for none (the fused path does no work for them then, nor for all zeros).
    hidden_triangles: (B, T) bools, triangles the caller knows no pixel of that image shows
    (geometry under the surface, such as the hair shell where an image has no hair): the
    numba path skips rasterizing them; the other backends draw them, which shows only
    through the mesh's openings (a few pixels at the cut of the neck).

    Returns a dict with the requested outputs plus "translation" (B, 3), the pose
    translation actually used.
    """
    verts = np.asarray(vertices.detach().cpu().numpy() if is_tensor(vertices) else vertices)
    if verts.ndim == 2:
        verts = verts[None]
    if verts.ndim != 3 or verts.shape[-1] != 3:
        raise ConfigError(f"vertices must be (B, N, 3); got shape {verts.shape}")
    b, n = verts.shape[:2]
    if pose.batch != b:
        raise ConfigError(f"pose is for {pose.batch} images but {b} vertex sets were given")
    tris = np.ascontiguousarray(triangles.cpu().numpy() if is_tensor(triangles) else triangles, dtype=np.int32)
    if tris.ndim != 2 or tris.shape[1] != 3 or (tris.size and (tris.min() < 0 or tris.max() >= n)):
        raise ConfigError(f"triangles must be (T, 3) indices into {n} vertices")
    used_pose = _resolve_pose(verts, pose, settings, five_point_groups, rng)
    if np.any(np.asarray(used_pose.scale) <= 0):
        raise ConfigError("pose scale must be positive")
    outputs = set(settings.outputs)
    lm_groups = _landmark_groups(landmarks, five_point_groups)
    if "landmarks2d" in outputs and lm_groups is None:
        raise ConfigError("output 'landmarks2d' needs landmark vertex groups (landmarks= or five_point_groups=)")
    if "correspondence" in outputs and reference_coords is None:
        raise ConfigError("output 'correspondence' needs reference_coords (N, 3), e.g. the model's mean shape")
    if "regions" in outputs and region_labels is None:
        raise ConfigError("output 'regions' needs region_labels (N,) per-vertex integer labels")

    backend = settings.resolved_backend()
    if backend == "numba":
        return _render_numba(verts, albedo, sh, used_pose, tris, settings, backgrounds, lm_groups, reference_coords, region_labels, color_transform, specular,
                             hidden_triangles)
    import torch

    dev = torch.device(settings.device) if settings.device else torch.device("cpu")
    raster = "pytorch3d" if backend == "pytorch3d" else settings.raster_backend
    al = _batch_np(albedo, b, (n, 3), "albedo")
    shb = _batch_np(sh, b, (9, 3), "sh")
    bg = _backgrounds_np(backgrounds, b, settings.height, settings.width)
    spw = None if specular is None else torch.as_tensor(_batch_np(specular, b, (n,), "specular"), device=dev).expand(b, -1)
    with torch.no_grad():
        res = render_torch(
            torch.as_tensor(verts, dtype=torch.float32, device=dev),
            torch.as_tensor(al, device=dev).expand(b, -1, -1),
            torch.as_tensor(shb, device=dev).expand(b, -1, -1),
            used_pose.torch(dev),
            torch.as_tensor(tris, device=dev),
            settings.camera,
            antialias=settings.antialias,
            edge_aa=settings.edge_aa,
            cull_backfaces=settings.cull_backfaces,
            raster_backend=raster,
            backgrounds=torch.as_tensor(bg, device=dev).float().div(255.0).expand(b, -1, -1, -1),
            color_transform=color_transform,
            specular=spw,
            outputs=settings.outputs,
            landmarks=lm_groups,
            reference_coords=reference_coords,
            region_labels=region_labels,
            visibility_tolerance=settings.visibility_tolerance,
        )
    out: dict[str, np.ndarray] = {}
    for key, val in res.items():
        if key == "face_id":  # the supersampled id map: large, and the numba path has none
            continue
        if key == "rgb" and settings.output_dtype == "uint8":  # convert where the pixels are
            val = (val.clamp(0.0, 1.0) * 255.0 + 0.5).floor().clamp(max=255).to(torch.uint8)
        arr = val.detach().cpu().numpy()
        out[key] = arr.astype(np.float32) if arr.dtype == np.float64 else arr
    out["translation"] = np.asarray(used_pose.translation, dtype=np.float64)
    return out


def _render_numba(verts, albedo, sh, pose: Pose, tris, settings: RenderSettings, backgrounds, lm_groups, reference_coords, region_labels, color_transform, specular,
                  hidden_triangles=None):
    b, n = verts.shape[:2]
    k = int(settings.antialias)
    cam = settings.camera
    cam_hi = cam.scaled(k)
    h, w = cam.height, cam.width
    hh, ww = cam_hi.height, cam_hi.width
    outputs = set(settings.outputs)
    v32 = np.ascontiguousarray(verts, dtype=np.float32)
    al = _batch_np(albedo, b, (n, 3), "albedo")
    shb = _batch_np(sh, b, (9, 3), "sh", dtype=np.float64)
    shk = np.ascontiguousarray(np.broadcast_to(shb * LAMBERT_KERNEL[None, :, None], (b, 9, 3)))
    spw, light = _specular_inputs(specular, shb, b, n)
    ct = color_transform if color_transform is not None else ColorTransform.identity(b)
    gain, contrast, offset = ct.arrays(b)
    bg = _backgrounds_np(backgrounds, b, h, w)
    mesh = MESH_CACHE.get_mesh(tris, v32[0, :, :2])
    skip = np.empty((1, 0), np.uint8)
    if hidden_triangles is not None:
        skip = np.ascontiguousarray(hidden_triangles, np.uint8)
        if skip.shape != (b, len(tris)):
            raise ConfigError(f"hidden_triangles must be (B, T) = ({b}, {len(tris)}); got {skip.shape}")
    tris = mesh.triangles  # uint32: no wraparound checks in the kernels
    rot = np.ascontiguousarray(pose.rotation(), dtype=np.float64)
    scale = np.ascontiguousarray(np.asarray(pose.scale, dtype=np.float64).reshape(b))
    trans = np.ascontiguousarray(np.asarray(pose.translation, dtype=np.float64).reshape(b, 3))
    maps = outputs - {"rgb", "landmarks2d"}
    keep = b if maps else 1  # per-image raster maps only when an output reads them after the render
    want_normals = bool(outputs & {"normals", "illumination"})
    # Landmark visibility needs the normals of the landmark vertices and the depth drawn at
    # their pixels only: the kernel writes those (a camera-space normal pass cost 0.8 ms an
    # image on a face12-sized mesh, and keeping each image's z-buffer 0.5 ms at antialias 2).
    lm_idx = np.empty(0, np.int64)
    lm_pix = np.empty((b, 0, 2), np.int64)
    if "landmarks2d" in outputs:
        lm_vertices, lm_weights = group_weights(lm_groups)
        lm_idx, lm_pos = np.unique(lm_vertices, return_inverse=True)
        pts = group_points(verts, lm_groups).astype(np.float64)
        pts_cam = pose.transform(pts)
        scr = cam_hi.project(pts_cam)
        inside, py, px = landmark_pixels(scr, hh, ww, np)
        lm_pix = np.ascontiguousarray(np.stack((np.where(inside, py, -1), px), -1))
    lm_nrm = np.empty((b, len(lm_idx), 3), np.float32)
    lm_z = np.empty(lm_pix.shape[:2], np.float32)
    screen = np.empty((keep, n, 3), np.float32)
    ncam = np.empty((b if want_normals else 1, n, 3), np.float32)
    vcol = np.empty((n, 3), np.float32)
    stamp = np.empty(n, np.int32)
    zbuf = np.empty((keep, hh, ww), np.float32)
    fid = np.empty((keep, hh, ww), np.int32)
    bary = np.empty((keep, hh, ww, 2), np.float32)
    use_u8 = settings.output_dtype == "uint8"
    out_u8 = np.empty((b, h, w, 3) if use_u8 else (1, 1, 1, 3), np.uint8)
    out_f32 = np.empty((1, 1, 1, 3) if use_u8 else (b, h, w, 3), np.float32)
    edge = settings.edge_aa
    contour = contour_mesh(tris) if edge else ContourMesh(np.empty((0, 3), np.int32), np.empty(0, np.int32))
    px_shape = (h, w) if edge else (1, 1)  # edge anti-aliasing's per-pixel buffers
    fx = cam_hi.focal_px
    cx, cy = cam_hi.center_px
    fused_render(
        v32, al, shk, spw, light, rot, scale, trans, fx, cx, cy, float(settings.near),
        tris, mesh.sorted, mesh.order, skip, bool(settings.cull_backfaces), k,
        gain, contrast, offset, LUMA, bg, out_u8, out_f32, use_u8,
        screen, np.empty((n, 3), np.float32), ncam, want_normals, lm_idx.astype(np.int64), lm_nrm, lm_pix, lm_z,
        vcol, stamp, np.empty((n, 4), np.int32), zbuf, fid, bary,
        edge, contour.neighbors, contour.parts, depth_tolerance(cam.focal_px), np.empty(len(contour.parts), np.int8),
        np.empty((*px_shape, 3)), np.empty(px_shape, np.float32), np.empty(px_shape, np.int32),
        np.empty((*px_shape, 2), np.float32),
    )  # fmt: skip
    result: dict[str, np.ndarray] = {}
    if "rgb" in outputs:
        result["rgb"] = out_u8 if use_u8 else out_f32
    if "landmarks2d" in outputs:
        nrm = (lm_nrm[:, lm_pos.reshape(lm_vertices.shape)].astype(np.float64) * lm_weights[None, :, :, None]).sum(2)
        result["landmarks2d"] = (scr[..., :2] / k).astype(np.float32)
        result["visibility"] = visible_at_depth(scr, nrm, pts_cam, inside, lm_z, settings.visibility_tolerance, np)
    result["translation"] = trans.copy()
    if not maps:
        return result

    # continuous per-vertex attributes, resolved in one pass per image
    cols: list[tuple[str, int]] = []
    if "depth" in outputs:
        cols.append(("depth", 1))
    if "normals" in outputs:
        cols.append(("normals", 3))
    if "albedo" in outputs:
        cols.append(("albedo", 3))
    if "illumination" in outputs:
        cols.append(("illumination", 3))
    if "correspondence" in outputs:
        cols.append(("correspondence", 3))
        ref_col = reference_colors(reference_coords)
    if cols:
        c_total = sum(c for _, c in cols)
        res = np.empty((b, h, w, c_total), np.float32)
        for i in range(b):
            parts = []
            for name, _ in cols:
                if name == "depth":
                    parts.append(screen[i, :, 2:3])
                elif name == "normals":
                    parts.append(ncam[i])
                elif name == "albedo":
                    parts.append(al[i if al.shape[0] > 1 else 0])
                elif name == "illumination":
                    parts.append(irradiance(ncam[i].astype(np.float64), shb[i if shb.shape[0] > 1 else 0]).astype(np.float32))
                else:
                    parts.append(ref_col)
            attr = np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=np.float32)
            resolve_attrs(fid[i], bary[i], tris, attr, k, res[i])
        c0 = 0
        for name, c in cols:
            val = res[..., c0 : c0 + c]
            c0 += c
            if name == "depth":
                val = val[..., 0]
            elif name == "normals":
                val = val / np.maximum(np.linalg.norm(val, axis=-1, keepdims=True), 1e-12)
            result[name] = np.ascontiguousarray(val)
    if "mask" in outputs:
        result["mask"] = (fid >= 0).reshape(b, h, k, w, k).mean(axis=(2, 4)) >= 0.5
    if "regions" in outputs:
        labels = np.ascontiguousarray(np.asarray(region_labels), dtype=np.int32).reshape(-1)
        if labels.shape[0] != n:
            raise ConfigError(f"region_labels has {labels.shape[0]} entries for {n} vertices")
        reg = np.empty((b, h, w), np.int32)
        for i in range(b):
            resolve_labels(fid[i], bary[i], tris, labels, k, reg[i])
        result["regions"] = reg
    return result


def _specular_inputs(specular, shb: np.ndarray, b: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The fused kernel's specular weights (B or 1, N), or (1, 0) when there are none or
    all are zero (the kernel then skips the term), and each image's half vector and
    highlight strength (B, 4)."""
    light = np.zeros((b, 4))
    w = None if specular is None else _batch_np(specular, b, (n,), "specular")
    if w is None or not w.any():
        return np.zeros((1, 0), np.float32), light
    h, strength = highlight(np.broadcast_to(shb, (b, 9, 3)), np)
    light[:, :3], light[:, 3] = h, strength
    return w, light
