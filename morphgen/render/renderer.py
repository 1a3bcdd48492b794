"""High-level rendering API: posed, lit, framed faces composited over backgrounds.

Two paths that produce the same images (tested to agree within 1/255 on pixels whose
triangle ids agree):

* **fused CPU path** (``backend="numba"``): one compiled loop per image does the pose
  transform, vertex normals, per-vertex SH shading and colour transform, rasterization,
  perspective-correct interpolation, supersample averaging and background compositing,
  writing uint8 pixels directly. Nothing is differentiable; this is the dataset path.
* **torch path** (``backend="torch"``, or :func:`render_torch`): batched and
  device-agnostic (CPU or CUDA). The rasterizer only picks triangle ids; colours are
  interpolated by :func:`.interpolate.interpolate`, so images are differentiable with
  respect to vertices, albedo, SH light, colour transform and pose. Used for fitting and
  for GPU generation. On CUDA with triton installed, a call that needs no gradient
  rasterizes and resolves the colour image with two Triton kernels
  (:mod:`.triton_raster`), the GPU dataset and online-training path.

Image formation (both paths): ``v_cam = scale * R v + t``; normals are area-weighted
vertex normals rotated into camera space; per-vertex radiance ``albedo * irradiance``
(Basel SH, see :mod:`morphgen.spherical_harmonics`), then the optional colour transform; the face colour is
clipped to [0, 1] per sample, averaged over the ``antialias`` x ``antialias``
sub-samples of each pixel together with its coverage ``alpha``, and composited as
``face_sum + (1 - alpha) * background``. Colours are linear, as in the Basel generator
(no gamma curve is applied).

Supersampling (``antialias = k``) renders at k times the resolution and averages k x k
blocks, which is exact area anti-aliasing of the silhouette. It costs about as much as
rendering at k times the size: on this project's 2-core machines the embedded model
(12.6k triangles) renders at about 850-940 images/s per core at 128 px with k = 1 and
490-550 with k = 2, a BFM-face12-sized mesh (56k triangles) at 430-540 and 250-300
(benchmarks/bench_render.py prints these). ``RenderSettings`` defaults to k = 1, the
dataset writer (``morphgen render --antialias``) to 2.

Other outputs (``settings.outputs``) at the output resolution:
``depth`` (mm, view space, 0 = background), ``normals`` (camera-space unit normals),
``albedo``, ``illumination`` (irradiance only, no albedo), ``correspondence`` (the given
per-vertex reference coordinates mapped to [0, 1] RGB by their bounding box),
``regions`` (int32 label of the nearest vertex, -1 = background), ``mask`` (bool,
coverage >= 0.5) and ``landmarks2d`` with ``visibility``. Continuous outputs are the mean
over the covered sub-samples; labels take the sub-sample at index k // 2.

Landmark visibility: a landmark (mean of a vertex group) is visible when it projects
inside the image and the z-buffer at its pixel is not in front of it by more than
``visibility_tolerance`` times its depth (1 % = 10 mm at 1 m, a few pixels of a steep
surface); so at large yaw the far eye is hidden by the nose and cheek. Where no surface
was drawn at its pixel (culled back faces, the silhouette) it must also face the camera.
Normals are not used otherwise: creases such as the mouth corners have sideways normals
but are plainly visible.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numba
import numpy as np

from ..errors import ConfigError
from ..tensors import is_tensor
from .camera import Camera, Framing, Pose, frame_translation, group_points, group_weights
from .rasterize import (BACKENDS, MESH_CACHE, RasterOutput, auto_backend, maps_from_keys, raster_core, sample_weights,
                        rasterize, triton_keys)
from ..spherical_harmonics import LAMBERT_KERNEL, SH_N0, SH_N1, SH_N2_0, SH_N2_1, SH_N2_2, irradiance, irradiance_torch
from .shading import LUMA, ColorTransform, accumulate_normals_raw, vertex_normals_torch

if TYPE_CHECKING:
    import torch

OUTPUTS = ("rgb", "depth", "normals", "albedo", "illumination", "mask", "correspondence", "regions", "landmarks2d")
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
    outputs: any of ``OUTPUTS``; "landmarks2d" also returns "visibility".
    framing: place each face by its five alignment points (None: use pose.translation).
    output_dtype: "uint8" (0..255) or "float32" (0..1) for rgb.
    """

    height: int = 128
    width: int = 128
    backend: str = "auto"
    raster_backend: str = "auto"
    antialias: int = 1
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


def limit_threads(n: int = 1) -> None:
    """One compute thread per process (numba, torch, OpenCV, numpy's BLAS): on a loaded
    machine several threads per process are slower than one (FACTS section 6); parallelism
    comes from running one process per core. BLAS matters: two dataset workers whose
    decode matmuls each spun two OpenBLAS threads wrote 161 img/s here, 224 with one.
    Torch is not imported for this (2 s, and the CPU dataset path never needs it): when it
    is not loaded yet, the environment makes a later import use n threads."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(n)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
    else:  # torch takes its thread count from these when it is imported
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(n)
    try:
        numba.set_num_threads(n)
    except Exception:  # numba without a threading layer: nothing to limit
        pass
    import cv2

    cv2.setNumThreads(n)
    os.environ.setdefault("OMP_NUM_THREADS", str(n))


# --------------------------------------------------------------------------------------
# fused numba kernel
# --------------------------------------------------------------------------------------
_FM = {"contract", "arcp", "nsz"}  # no ninf/nnan: depths and colours must stay IEEE


@numba.njit(cache=True, nogil=True, fastmath=_FM, error_model="numpy")
def _project(v, sc, rot, s, trans, fpx, cx, cy):
    """Pose transform and projection of every vertex into ``sc`` (N, 3): x, y, depth."""
    r00, r01, r02 = rot[0, 0], rot[0, 1], rot[0, 2]
    r10, r11, r12 = rot[1, 0], rot[1, 1], rot[1, 2]
    r20, r21, r22 = rot[2, 0], rot[2, 1], rot[2, 2]
    t0, t1, t2 = trans[0], trans[1], trans[2]
    for i in range(v.shape[0]):
        x = np.float64(v[i, 0])
        y = np.float64(v[i, 1])
        z = np.float64(v[i, 2])
        xc = s * (r00 * x + r01 * y + r02 * z) + t0
        yc = s * (r10 * x + r11 * y + r12 * z) + t1
        d = -(s * (r20 * x + r21 * y + r22 * z) + t2)
        inv = fpx / (d if abs(d) > 1e-9 else 1e-9)
        sc[i, 0] = cx + xc * inv
        sc[i, 1] = cy - yc * inv
        sc[i, 2] = d


@numba.njit(cache=True, nogil=True, fastmath=_FM, error_model="numpy", inline="always")
def _camera_unit(nc, i, rot):
    """Row i of the summed model-space normals ``nc``, rotated to camera space and normalised."""
    mx = np.float64(nc[i, 0])
    my = np.float64(nc[i, 1])
    mz = np.float64(nc[i, 2])
    ln = np.sqrt(mx * mx + my * my + mz * mz)
    il = 1.0 / ln if ln > 1e-20 else 0.0
    return ((rot[0, 0] * mx + rot[0, 1] * my + rot[0, 2] * mz) * il,
            (rot[1, 0] * mx + rot[1, 1] * my + rot[1, 2] * mz) * il,
            (rot[2, 0] * mx + rot[2, 1] * my + rot[2, 2] * mz) * il)


@numba.njit(cache=True, nogil=True, fastmath=_FM, error_model="numpy")
def _shade_vertices(stamp, b, nc, rot, sk, al, gain, contrast, offset, luma, vcol):
    """Colour of the vertices marked ``stamp[i] == b`` into ``vcol``: the summed normals in
    ``nc`` (model space) are normalised and rotated to camera space, SH-shaded and
    colour-transformed.

    Only vertices of triangles that won a pixel are marked: at 128 px that is about 40 %
    of a face mesh, and shading is the costliest per-vertex step. They are visited in
    vertex order (a scan of the stamps), not in the order pixels found them: the
    sequential reads of normals, albedo and colours make it 1.6x faster.
    """
    a0, a1, a2 = SH_N0 * sk[0, 0], SH_N0 * sk[0, 1], SH_N0 * sk[0, 2]
    # the basis constants folded into the light, read once (the loop's stores could alias sk)
    s10, s11, s12 = SH_N1 * sk[1, 0], SH_N1 * sk[1, 1], SH_N1 * sk[1, 2]
    s20, s21, s22 = SH_N1 * sk[2, 0], SH_N1 * sk[2, 1], SH_N1 * sk[2, 2]
    s30, s31, s32 = SH_N1 * sk[3, 0], SH_N1 * sk[3, 1], SH_N1 * sk[3, 2]
    s40, s41, s42 = SH_N2_1 * sk[4, 0], SH_N2_1 * sk[4, 1], SH_N2_1 * sk[4, 2]
    s50, s51, s52 = SH_N2_1 * sk[5, 0], SH_N2_1 * sk[5, 1], SH_N2_1 * sk[5, 2]
    s60, s61, s62 = SH_N2_0 * sk[6, 0], SH_N2_0 * sk[6, 1], SH_N2_0 * sk[6, 2]
    s70, s71, s72 = SH_N2_1 * sk[7, 0], SH_N2_1 * sk[7, 1], SH_N2_1 * sk[7, 2]
    s80, s81, s82 = SH_N2_2 * sk[8, 0], SH_N2_2 * sk[8, 1], SH_N2_2 * sk[8, 2]
    g0, g1, g2 = gain[0], gain[1], gain[2]
    o0, o1, o2 = offset[0], offset[1], offset[2]
    l0, l1, l2 = luma[0], luma[1], luma[2]
    for i in range(nc.shape[0]):
        if stamp[i] != b:
            continue
        nx, ny, nz = _camera_unit(nc, i, rot)
        b4 = nx * ny
        b5 = ny * nz
        b6 = 3.0 * nz * nz - 1.0
        b7 = nx * nz
        b8 = nx * nx - ny * ny
        c0 = al[i, 0] * (a0 + ny * s10 + nz * s20 + nx * s30 + b4 * s40 + b5 * s50 + b6 * s60 + b7 * s70 + b8 * s80)
        c1 = al[i, 1] * (a1 + ny * s11 + nz * s21 + nx * s31 + b4 * s41 + b5 * s51 + b6 * s61 + b7 * s71 + b8 * s81)
        c2 = al[i, 2] * (a2 + ny * s12 + nz * s22 + nx * s32 + b4 * s42 + b5 * s52 + b6 * s62 + b7 * s72 + b8 * s82)
        lu = l0 * c0 + l1 * c1 + l2 * c2
        vcol[i, 0] = g0 * (lu + contrast * (c0 - lu)) + o0
        vcol[i, 1] = g1 * (lu + contrast * (c1 - lu)) + o1
        vcol[i, 2] = g2 * (lu + contrast * (c2 - lu)) + o2


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _mark_used_vertices(fb, tris, stamp, b):
    """Mark ``stamp[i] = b`` for the vertices of the triangles in the face-id map."""
    for py in range(fb.shape[0]):
        for px in range(fb.shape[1]):
            f = fb[py, px]
            if f < 0:
                continue
            f = np.uint32(f)
            stamp[tris[f, 0]] = b
            stamp[tris[f, 1]] = b
            stamp[tris[f, 2]] = b


@numba.njit(cache=True, nogil=True, fastmath=_FM, error_model="numpy")
def _camera_normals(v, tris, rot, nc):
    """Unit camera-space vertex normals of the whole mesh into ``nc`` (for extra outputs)."""
    accumulate_normals_raw(v, tris, nc)
    for i in range(nc.shape[0]):
        nc[i, 0], nc[i, 1], nc[i, 2] = _camera_unit(nc, i, rot)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _fused_render(
    verts, albedo, shk, rot, scale, trans, fpx, cx, cy, near,
    tris, tris_sorted, tri_ids, cull, k,
    gain, contrast, offset, luma, bg, out_u8, out_f32, use_u8,
    screen, nsum, ncam, want_normals, lm_idx, lm_nrm, vcol, stamp, cells, zbuf, fid, bary,
):  # fmt: skip
    """Render a batch; buffers with a leading dimension of 1 are reused for every image.

    Per image: project all vertices, rasterize, mark the vertices of the triangles that
    won a pixel (``stamp[i] == b``), sum normals, shade the marked vertices, then resolve,
    average the sub-samples and composite.
    """
    nb = verts.shape[0]
    if use_u8:
        h = out_u8.shape[1]
        w = out_u8.shape[2]
    else:
        h = out_f32.shape[1]
        w = out_f32.shape[2]
    inv_k2 = 1.0 / (k * k)
    stamp[:] = -1
    for b in range(nb):
        sc = screen[b if screen.shape[0] > 1 else 0]
        zb = zbuf[b if zbuf.shape[0] > 1 else 0]
        fb = fid[b if fid.shape[0] > 1 else 0]
        bb = bary[b if bary.shape[0] > 1 else 0]
        bgi = bg[b if bg.shape[0] > 1 else 0]
        al = albedo[b if albedo.shape[0] > 1 else 0]
        v = verts[b]
        rb = rot[b]
        sk = shk[b]
        gb = gain[b]
        ob = offset[b]
        ct = contrast[b]
        _project(v, sc, rb, scale[b], trans[b], fpx, cx, cy)
        if want_normals:
            _camera_normals(v, tris, rb, ncam[b])
        zb[:, :] = np.inf
        fb[:, :] = -1
        raster_core(sc[:, 0], sc[:, 1], sc[:, 2], tris_sorted, tri_ids, cull, near, zb, fb, bb, cells)
        _mark_used_vertices(fb, tris, stamp, b)
        accumulate_normals_raw(v, tris, nsum)
        _shade_vertices(stamp, b, nsum, rb, sk, al, gb, ct, ob, luma, vcol)
        for j in range(lm_idx.shape[0]):  # landmark normals, for their visibility test
            lm_nrm[b, j, 0], lm_nrm[b, j, 1], lm_nrm[b, j, 2] = _camera_unit(nsum, lm_idx[j], rb)
        # resolve, average the k x k sub-samples, composite
        for oy in range(h):
            for ox in range(w):
                a0 = 0.0
                a1 = 0.0
                a2 = 0.0
                cov = 0
                for sy in range(k):
                    py = oy * k + sy
                    for sx in range(k):
                        px = ox * k + sx
                        if fb[py, px] < 0:
                            continue
                        i0, i1, i2, e0, e1, e2 = sample_weights(tris, fb, bb, py, px)
                        q0 = e0 * vcol[i0, 0] + e1 * vcol[i1, 0] + e2 * vcol[i2, 0]
                        q1 = e0 * vcol[i0, 1] + e1 * vcol[i1, 1] + e2 * vcol[i2, 1]
                        q2 = e0 * vcol[i0, 2] + e1 * vcol[i1, 2] + e2 * vcol[i2, 2]
                        a0 += min(max(q0, 0.0), 1.0)
                        a1 += min(max(q1, 0.0), 1.0)
                        a2 += min(max(q2, 0.0), 1.0)
                        cov += 1
                if cov == 0 and use_u8:  # background only: copy the bytes
                    out_u8[b, oy, ox, 0] = bgi[oy, ox, 0]
                    out_u8[b, oy, ox, 1] = bgi[oy, ox, 1]
                    out_u8[b, oy, ox, 2] = bgi[oy, ox, 2]
                    continue
                bw = (1.0 - cov * inv_k2) * (1.0 / 255.0)
                r0 = a0 * inv_k2 + bw * bgi[oy, ox, 0]
                r1 = a1 * inv_k2 + bw * bgi[oy, ox, 1]
                r2 = a2 * inv_k2 + bw * bgi[oy, ox, 2]
                if use_u8:
                    out_u8[b, oy, ox, 0] = min(int(r0 * 255.0 + 0.5), 255)
                    out_u8[b, oy, ox, 1] = min(int(r1 * 255.0 + 0.5), 255)
                    out_u8[b, oy, ox, 2] = min(int(r2 * 255.0 + 0.5), 255)
                else:
                    out_f32[b, oy, ox, 0] = r0
                    out_f32[b, oy, ox, 1] = r1
                    out_f32[b, oy, ox, 2] = r2


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _resolve_attrs(fid, bary, tris, attr, k, out):
    """Mean of the perspective-correct interpolated ``attr`` (N, C) over covered sub-samples."""
    h = out.shape[0]
    w = out.shape[1]
    nc = attr.shape[1]
    acc = np.zeros(nc)
    for oy in range(h):
        for ox in range(w):
            acc[:] = 0.0
            cov = 0
            for sy in range(k):
                py = oy * k + sy
                for sx in range(k):
                    px = ox * k + sx
                    if fid[py, px] < 0:
                        continue
                    i0, i1, i2, e0, e1, e2 = sample_weights(tris, fid, bary, py, px)
                    for c in range(nc):
                        acc[c] += e0 * attr[i0, c] + e1 * attr[i1, c] + e2 * attr[i2, c]
                    cov += 1
            for c in range(nc):
                out[oy, ox, c] = acc[c] / cov if cov > 0 else 0.0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _resolve_labels(fid, bary, tris, labels, k, out):
    """Label of the vertex with the largest barycentric weight at sub-sample (k//2, k//2)."""
    h = out.shape[0]
    w = out.shape[1]
    o = k // 2
    for oy in range(h):
        for ox in range(w):
            py = oy * k + o
            px = ox * k + o
            if fid[py, px] < 0:
                out[oy, ox] = -1
                continue
            i0, i1, i2, e0, e1, e2 = sample_weights(tris, fid, bary, py, px)
            if e0 >= e1 and e0 >= e2:
                out[oy, ox] = labels[i0]
            elif e1 >= e2:
                out[oy, ox] = labels[i1]
            else:
                out[oy, ox] = labels[i2]


# --------------------------------------------------------------------------------------
# helpers shared by both paths
# --------------------------------------------------------------------------------------
def _batch_np(x, b: int, tail: tuple[int, ...], name: str, dtype=np.float32) -> np.ndarray:
    if is_tensor(x):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=dtype)
    if a.shape == tail:
        return a[None]
    if a.shape != (b, *tail):
        raise ConfigError(f"{name} has shape {a.shape}; expected {tail} or ({b}, {', '.join(map(str, tail))})")
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


def _reference_colors(reference_coords) -> np.ndarray:
    ref = np.asarray(reference_coords, dtype=np.float64)
    if ref.ndim != 2 or ref.shape[1] != 3:
        raise ConfigError(f"correspondence reference coordinates must be (N, 3); got {ref.shape}")
    lo, hi = ref.min(0), ref.max(0)
    return ((ref - lo) / np.maximum(hi - lo, 1e-12)).astype(np.float32)


def _visibility_np(pts_cam, nrm_cam, camera_hi: Camera, zbuf, tol: float):
    """Project landmarks and test them against the z-buffer (numpy)."""
    scr = camera_hi.project(pts_cam)
    x, y, d = scr[..., 0], scr[..., 1], scr[..., 2]
    hh, ww = zbuf.shape[1:]
    inside = (x >= 0) & (x < ww) & (y >= 0) & (y < hh) & (d > 0)
    px = np.clip(np.floor(np.where(inside, x, 0)).astype(np.int64), 0, ww - 1)
    py = np.clip(np.floor(np.where(inside, y, 0)).astype(np.int64), 0, hh - 1)
    bi = np.arange(zbuf.shape[0])[:, None]
    zb = zbuf[bi, py, px].astype(np.float64)
    facing = np.einsum("bld,bld->bl", nrm_cam, -pts_cam) > 0
    drawn = np.isfinite(zb)
    # a drawn surface within the tolerance is the landmark's own: visible whatever its
    # normal (creases such as mouth corners have sideways normals); where nothing was
    # drawn (culled back faces, the silhouette) the landmark must face the camera
    visible = np.where(drawn, d - zb <= tol * d, facing)
    return scr[..., :2], inside & visible


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
        return _render_numba(verts, albedo, sh, used_pose, tris, settings, backgrounds, lm_groups, reference_coords, region_labels, color_transform)
    import torch

    dev = torch.device(settings.device) if settings.device else torch.device("cpu")
    raster = "pytorch3d" if backend == "pytorch3d" else settings.raster_backend
    al = _batch_np(albedo, b, (n, 3), "albedo")
    shb = _batch_np(sh, b, (9, 3), "sh")
    bg = _backgrounds_np(backgrounds, b, settings.height, settings.width)
    with torch.no_grad():
        res = render_torch(
            torch.as_tensor(verts, dtype=torch.float32, device=dev),
            torch.as_tensor(al, device=dev).expand(b, -1, -1),
            torch.as_tensor(shb, device=dev).expand(b, -1, -1),
            used_pose.torch(dev),
            torch.as_tensor(tris, device=dev),
            settings.camera,
            antialias=settings.antialias,
            cull_backfaces=settings.cull_backfaces,
            raster_backend=raster,
            backgrounds=torch.as_tensor(bg, device=dev).float().div(255.0).expand(b, -1, -1, -1),
            color_transform=color_transform,
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


def _render_numba(verts, albedo, sh, pose: Pose, tris, settings: RenderSettings, backgrounds, lm_groups, reference_coords, region_labels, color_transform):
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
    ct = color_transform if color_transform is not None else ColorTransform.identity(b)
    gain, contrast, offset = ct.arrays(b)
    bg = _backgrounds_np(backgrounds, b, h, w)
    mesh = MESH_CACHE.get_mesh(tris, v32[0, :, :2])
    tris = mesh.triangles  # uint32: no wraparound checks in the kernels
    rot = np.ascontiguousarray(pose.rotation(), dtype=np.float64)
    scale = np.ascontiguousarray(np.asarray(pose.scale, dtype=np.float64).reshape(b))
    trans = np.ascontiguousarray(np.asarray(pose.translation, dtype=np.float64).reshape(b, 3))
    extras = outputs - {"rgb"}
    keep = b if extras else 1  # per-image buffers only when something reads them later
    want_normals = bool(outputs & {"normals", "illumination"})
    # Landmark visibility needs the normals of the landmark vertices only: the kernel writes
    # those (a full camera-space normal pass cost 0.8 ms an image on a face12-sized mesh).
    if "landmarks2d" in outputs:
        lm_vertices, lm_weights = group_weights(lm_groups)
        lm_idx, lm_pos = np.unique(lm_vertices, return_inverse=True)
    else:
        lm_idx = lm_pos = np.empty(0, np.int64)
    lm_nrm = np.empty((b, len(lm_idx), 3), np.float32)
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
    fx = cam_hi.focal_px
    cx, cy = cam_hi.center_px
    _fused_render(
        v32, al, shk, rot, scale, trans, fx, cx, cy, float(settings.near),
        tris, mesh.sorted, mesh.order, bool(settings.cull_backfaces), k,
        gain, contrast, offset, LUMA, bg, out_u8, out_f32, use_u8,
        screen, np.empty((n, 3), np.float32), ncam, want_normals, lm_idx.astype(np.int64), lm_nrm, vcol, stamp,
        np.empty((n, 4), np.int32), zbuf, fid, bary,
    )  # fmt: skip
    result: dict[str, np.ndarray] = {}
    if "rgb" in outputs:
        result["rgb"] = out_u8 if use_u8 else out_f32
    if not extras:
        result["translation"] = trans.copy()
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
        ref_col = _reference_colors(reference_coords)
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
            _resolve_attrs(fid[i], bary[i], tris, attr, k, res[i])
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
            _resolve_labels(fid[i], bary[i], tris, labels, k, reg[i])
        result["regions"] = reg
    if "landmarks2d" in outputs:
        pts = group_points(verts, lm_groups).astype(np.float64)
        nrm = (lm_nrm[:, lm_pos.reshape(lm_vertices.shape)].astype(np.float64) * lm_weights[None, :, :, None]).sum(2)
        pts_cam = pose.transform(pts)
        xy, vis = _visibility_np(pts_cam, nrm, cam_hi, zbuf, settings.visibility_tolerance)
        result["landmarks2d"] = (xy / k).astype(np.float32)
        result["visibility"] = vis
    result["translation"] = trans.copy()
    return result


def render_torch(
    vertices: torch.Tensor,
    albedo: torch.Tensor,
    sh: torch.Tensor,
    pose: Pose,
    triangles,
    camera: Camera,
    *,
    antialias: int = 1,
    cull_backfaces: bool = True,
    raster_backend: str = "auto",
    backgrounds: torch.Tensor | None = None,
    color_transform: ColorTransform | None = None,
    outputs: Sequence[str] = ("rgb",),
    landmarks=None,
    reference_coords=None,
    region_labels=None,
    visibility_tolerance: float = 0.01,
    near: float = 10.0,
) -> dict[str, torch.Tensor]:
    """Differentiable batched render (torch tensors in, torch tensors out).

    vertices (B, N, 3), albedo (B, N, 3), sh (B, 9, 3) share dtype and device; pose is a
    :class:`Pose` of tensors (or numpy, converted). backgrounds: (B, H, W, 3) float in
    [0, 1] or None (black). Returns float images in [0, 1] (``rgb``, ...), plus
    ``face_id`` (the high-resolution triangle-id map) and the requested extras as in
    :func:`render_batch`. Gradients reach vertices, albedo, sh, the colour transform
    and the pose through the interpolated colours (not through silhouette changes).
    When none of them requires a gradient and the rasterizer is triton, ``rgb`` comes
    from the fused Triton resolve instead (float32, same image within rounding).
    """
    import torch
    import torch.nn.functional as F

    from .interpolate import covered_barycentrics, interpolate

    dev, dt = vertices.device, vertices.dtype
    if vertices.dim() == 2:
        vertices = vertices[None]
    b, n = vertices.shape[:2]
    k = int(antialias)
    cam_hi = camera.scaled(k)
    h, w = camera.height, camera.width
    hh, ww = cam_hi.height, cam_hi.width
    tris = (triangles if isinstance(triangles, torch.Tensor) else torch.as_tensor(np.asarray(triangles))).to(dev, torch.long)
    if albedo.dim() == 2:
        albedo = albedo[None].expand(b, -1, -1)
    if sh.dim() == 2:
        sh = sh[None].expand(b, -1, -1)
    p = pose.torch(dev, dt)
    if raster_backend == "auto":
        raster_backend = auto_backend(dev)
    rot = p.rotation().to(dt)
    s = p.scale.reshape(-1, 1, 1).to(dt)
    vc = s * torch.matmul(vertices, rot.transpose(1, 2)) + p.translation.to(dt)[:, None, :]
    n_model = vertex_normals_torch(vertices, tris)
    ncam = torch.matmul(n_model, rot.transpose(1, 2))
    irr = irradiance_torch(ncam, sh.to(dt))
    col = albedo.to(dt) * irr
    if color_transform is not None:
        col = color_transform.apply_torch(col)
    screen = cam_hi.project(vc)
    outputs = tuple(outputs)
    # no gradient wanted: Triton rasterizes and resolves the colour image in two launches
    fused = raster_backend == "triton" and "rgb" in outputs and not (col.requires_grad or screen.requires_grad)
    if fused:
        from .triton_raster import resolve_rgb  # imports triton

        keys, scr32, tris32 = triton_keys(screen, tris, hh, ww, cull_backfaces, near)
        fid_map, depth_map = maps_from_keys(keys)
        rast = RasterOutput(fid_map, None, depth_map)
    else:
        rast = rasterize(screen.detach(), tris, hh, ww, backend=raster_backend, cull_backfaces=cull_backfaces,
                         near=near, with_bary=False)
    fid = rast.face_id

    def pool(x: torch.Tensor) -> torch.Tensor:  # (B, hh, ww, C) -> (B, h, w, C) block mean
        if k == 1:
            return x
        return F.avg_pool2d(x.permute(0, 3, 1, 2), k).permute(0, 2, 3, 1)

    res: dict[str, torch.Tensor] = {"face_id": fid}
    if not fused or set(outputs) - {"rgb", "landmarks2d"}:  # the coverage maps the other outputs need
        covered = (fid >= 0).to(dt)[..., None]  # (B, hh, ww, 1)
        alpha = pool(covered)
    if fused:
        bg = None if backgrounds is None else backgrounds.to(dev, torch.float32)
        res["rgb"] = resolve_rgb(keys, scr32, tris32, col.to(torch.float32).contiguous(), bg, k).to(dt)
    elif "rgb" in outputs:
        img = interpolate(col, fid, screen, tris).clamp(0.0, 1.0) * covered
        face = pool(img)
        bg = torch.zeros(b, h, w, 3, dtype=dt, device=dev) if backgrounds is None else backgrounds.to(dev, dt)
        res["rgb"] = face + (1.0 - alpha) * bg

    def coverage_mean(attr: torch.Tensor) -> torch.Tensor:
        val = pool(interpolate(attr, fid, screen, tris) * covered)
        return torch.where(alpha > 0, val / alpha.clamp_min(1e-12), torch.zeros_like(val))

    if "depth" in outputs:
        res["depth"] = coverage_mean(vc[..., 2:3].neg())[..., 0]
    if "normals" in outputs:
        nrm = coverage_mean(ncam)
        res["normals"] = nrm / nrm.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    if "albedo" in outputs:
        res["albedo"] = coverage_mean(albedo.to(dt))
    if "illumination" in outputs:
        res["illumination"] = coverage_mean(irr)
    if "correspondence" in outputs:
        ref = torch.as_tensor(_reference_colors(reference_coords), device=dev, dtype=dt)
        res["correspondence"] = coverage_mean(ref[None].expand(b, -1, -1))
    if "mask" in outputs:
        res["mask"] = alpha[..., 0] >= 0.5
    if "regions" in outputs:
        labels = torch.as_tensor(np.asarray(region_labels).reshape(-1), device=dev, dtype=torch.long)
        if labels.shape[0] != n:
            raise ConfigError(f"region_labels has {labels.shape[0]} entries for {n} vertices")
        o = k // 2
        f_c = fid[:, o::k, o::k].contiguous()
        sub = screen.detach().clone()
        # map the centre of sub-sample (o, o) of each block onto the centre of its pixel
        sub[..., :2] = (sub[..., :2] - o - 0.5) / k + 0.5
        pix, bi, vid, bary = covered_barycentrics(f_c, sub, tris)
        lab = torch.full((b * h * w,), -1, dtype=torch.long, device=dev)
        lab[pix] = labels[vid.gather(1, bary.argmax(1, keepdim=True)).squeeze(1)]
        res["regions"] = lab.reshape(b, h, w).to(torch.int32)
    if "landmarks2d" in outputs:
        if landmarks is None:
            raise ConfigError("output 'landmarks2d' needs landmark vertex groups")
        pts = group_points(vertices, landmarks)
        pts_cam = s * torch.matmul(pts, rot.transpose(1, 2)) + p.translation.to(dt)[:, None, :]
        scr = cam_hi.project(pts_cam)
        res["landmarks2d"] = scr[..., :2] / k
        with torch.no_grad():
            idx, wt = group_weights(landmarks)
            it = torch.as_tensor(idx, device=dev)
            wtt = torch.as_tensor(wt, device=dev, dtype=dt)
            nrm = (ncam[:, it] * wtt[None, :, :, None]).sum(2)
            x, y, d = scr[..., 0], scr[..., 1], scr[..., 2]
            inside = (x >= 0) & (x < ww) & (y >= 0) & (y < hh) & (d > 0)
            px = torch.where(inside, x, torch.zeros_like(x)).floor().long().clamp(0, ww - 1)
            py = torch.where(inside, y, torch.zeros_like(y)).floor().long().clamp(0, hh - 1)
            zb = rast.depth.to(dt)[torch.arange(b, device=dev)[:, None], py, px]
            facing = (nrm * -pts_cam).sum(-1) > 0
            drawn = torch.isfinite(zb)
            res["visibility"] = inside & torch.where(drawn, d - zb <= visibility_tolerance * d, facing)
    return res
