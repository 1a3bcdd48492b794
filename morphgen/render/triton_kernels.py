"""Rasterizer and colour resolve as Triton kernels: the kernels of the GPU backend
``triton`` (:mod:`.raster_triton` checks that they can run and launches them).

The torch backend enumerates each triangle's candidate pixels as tensors, one size bucket
at a time, with a host sync per bucket; on a GPU that costs more than the arithmetic. Here
one kernel launch rasterizes a whole batch and a second one resolves the colour image, so
a batch costs two launches and no sync:

* :func:`raster_keys` - one program per block of triangles of one image: each lane walks
  its triangle's bounding box and ``atomic_min``s an int64 key (depth bits << 32 |
  triangle id) into the pixel, the same key, coverage rule and depth expression as the
  torch and numba backends (see :mod:`.rasterize`), so ties and z-fights resolve alike.
* :func:`resolve_rgb` - per output pixel, its k x k sub-samples: perspective-correct
  barycentrics from the covering triangle, interpolated vertex colour, coverage-weighted
  composite over the background; the anti-aliasing block mean is folded in. Not
  differentiable: ``render_torch`` uses it only when no gradient is wanted.
* :func:`contour_keys` - edge anti-aliasing's search (:mod:`.edge_aa`): one lane per
  contour segment walks the pixels near it and ``atomic_min``s the key of its distance
  where it is seen, as the raster kernel walks a triangle's box.

Triton compiles for CUDA; on the CPU these kernels run only under ``TRITON_INTERPRET=1``
(the tests use that to check them against the numba backend). Import this module only on
that path: `raster_triton.triton_available` says whether it can run.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .raster_common import EMPTY_KEY

_TRI_BLOCK = 128
_PIX_BLOCK = 256


@triton.jit
def _lerp3(color_ptr, i0, i1, i2, b0, b1, b2, cov, c: tl.constexpr):
    """Channel c of the barycentric blend of three vertex colours, clamped to [0, 1]; 0 off cover."""
    v = (b0 * tl.load(color_ptr + i0 + c, mask=cov, other=0.0)
         + b1 * tl.load(color_ptr + i1 + c, mask=cov, other=0.0)
         + b2 * tl.load(color_ptr + i2 + c, mask=cov, other=0.0))
    return tl.where(cov, tl.minimum(tl.maximum(v, 0.0), 1.0), 0.0)


@triton.jit
def raster_kernel(screen_ptr, tris_ptr, keys_ptr, n_vertices, n_tris, h, w, near,
                  CULL: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(1)
    t = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = t < n_tris
    i0 = tl.load(tris_ptr + t * 3, mask=live, other=0)
    i1 = tl.load(tris_ptr + t * 3 + 1, mask=live, other=0)
    i2 = tl.load(tris_ptr + t * 3 + 2, mask=live, other=0)
    base = screen_ptr + b.to(tl.int64) * n_vertices * 3
    x0, y0, w0 = tl.load(base + i0 * 3), tl.load(base + i0 * 3 + 1), tl.load(base + i0 * 3 + 2)
    x1, y1, w1 = tl.load(base + i1 * 3), tl.load(base + i1 * 3 + 1), tl.load(base + i1 * 3 + 2)
    x2, y2, w2 = tl.load(base + i2 * 3), tl.load(base + i2 * 3 + 1), tl.load(base + i2 * 3 + 2)
    area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
    xa = tl.ceil(tl.maximum(tl.minimum(tl.minimum(x0, x1), x2) - 0.5, 0.0))
    xb = tl.floor(tl.minimum(tl.maximum(tl.maximum(x0, x1), x2) - 0.5, w - 1.0))
    ya = tl.ceil(tl.maximum(tl.minimum(tl.minimum(y0, y1), y2) - 0.5, 0.0))
    yb = tl.floor(tl.minimum(tl.maximum(tl.maximum(y0, y1), y2) - 0.5, h - 1.0))
    valid = live & (xa <= xb) & (ya <= yb) & (w0 > near) & (w1 > near) & (w2 > near) & (area != 0.0)
    if CULL:
        valid = valid & (area < 0.0)
    neg = area < 0.0  # orient counter-clockwise on screen: swap vertices 1 and 2
    X1, X2 = tl.where(neg, x2, x1), tl.where(neg, x1, x2)
    Y1, Y2 = tl.where(neg, y2, y1), tl.where(neg, y1, y2)
    W1, W2 = tl.where(neg, w2, w1), tl.where(neg, w1, w2)
    P0, P1, P2 = W1 * W2, w0 * W2, w0 * W1
    num = tl.abs(area) * w0 * P0
    d0x, d0y, d1x, d1y, d2x, d2y = X2 - X1, Y2 - Y1, x0 - X2, y0 - Y2, X1 - x0, Y1 - y0
    tl0 = (d0y < 0.0) | ((d0y == 0.0) & (d0x > 0.0))
    tl1 = (d1y < 0.0) | ((d1y == 0.0) & (d1x > 0.0))
    tl2 = (d2y < 0.0) | ((d2y == 0.0) & (d2x > 0.0))
    ixa, iya = xa.to(tl.int32), ya.to(tl.int32)
    bw = tl.where(valid, xb.to(tl.int32) - ixa + 1, 1)
    count = tl.where(valid, bw * (yb.to(tl.int32) - iya + 1), 0)
    most = tl.max(count, axis=0)
    img = keys_ptr + b.to(tl.int64) * h * w
    tid = t.to(tl.int64)
    j = 0
    while j < most:  # lane j-th candidate of its own box; lanes with smaller boxes idle
        on = j < count
        py = iya + j // bw
        px = ixa + j % bw
        cx = px.to(tl.float32) + 0.5
        cy = py.to(tl.float32) + 0.5
        e0 = d0x * (cy - Y1) - d0y * (cx - X1)
        e1 = d1x * (cy - Y2) - d1y * (cx - X2)
        e2 = d2x * (cy - y0) - d2y * (cx - x0)
        inside = on & ((e0 > 0.0) | ((e0 == 0.0) & tl0))
        inside = inside & ((e1 > 0.0) | ((e1 == 0.0) & tl1))
        inside = inside & ((e2 > 0.0) | ((e2 == 0.0) & tl2))
        z = num / (e0 * P0 + e1 * P1 + e2 * P2)
        key = (z.to(tl.int32, bitcast=True).to(tl.int64) << 32) | tid
        tl.atomic_min(img + py * w + px, key, mask=inside, sem="relaxed")
        j += 1

@triton.jit
def resolve_kernel(keys_ptr, screen_ptr, tris_ptr, color_ptr, bg_ptr, out_ptr, n_vertices, n_pix, h, w,
                   HAS_BG: tl.constexpr, EMPTY: tl.constexpr, K: tl.constexpr, BLOCK: tl.constexpr):
    p = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)  # flat (b, y, x) output pixel
    live = p < n_pix
    b = (p // (h * w)).to(tl.int64)
    rem = p % (h * w)
    y, x = rem // w, rem % w
    acc0 = tl.zeros((BLOCK,), tl.float32)
    acc1 = tl.zeros((BLOCK,), tl.float32)
    acc2 = tl.zeros((BLOCK,), tl.float32)
    hits = tl.zeros((BLOCK,), tl.float32)
    vbase = b * n_vertices * 3
    for sy in tl.static_range(K):
        for sx in tl.static_range(K):
            hy, hx = y * K + sy, x * K + sx
            key = tl.load(keys_ptr + (b * h * K + hy) * (w * K) + hx, mask=live, other=EMPTY)
            cov = key != EMPTY
            f = tl.where(cov, key & 0xFFFFFFFF, 0)
            i0 = vbase + tl.load(tris_ptr + f * 3, mask=cov, other=0) * 3
            i1 = vbase + tl.load(tris_ptr + f * 3 + 1, mask=cov, other=0) * 3
            i2 = vbase + tl.load(tris_ptr + f * 3 + 2, mask=cov, other=0) * 3
            x0, y0, w0 = tl.load(screen_ptr + i0, mask=cov, other=0.0), tl.load(screen_ptr + i0 + 1, mask=cov, other=0.0), tl.load(screen_ptr + i0 + 2, mask=cov, other=1.0)
            x1, y1, w1 = tl.load(screen_ptr + i1, mask=cov, other=0.0), tl.load(screen_ptr + i1 + 1, mask=cov, other=0.0), tl.load(screen_ptr + i1 + 2, mask=cov, other=1.0)
            x2, y2, w2 = tl.load(screen_ptr + i2, mask=cov, other=0.0), tl.load(screen_ptr + i2 + 1, mask=cov, other=0.0), tl.load(screen_ptr + i2 + 2, mask=cov, other=1.0)
            cx = hx.to(tl.float32) + 0.5
            cy = hy.to(tl.float32) + 0.5
            e0 = ((x2 - x1) * (cy - y1) - (y2 - y1) * (cx - x1)) / w0
            e1 = ((x0 - x2) * (cy - y2) - (y0 - y2) * (cx - x2)) / w1
            e2 = ((x1 - x0) * (cy - y0) - (y1 - y0) * (cx - x0)) / w2
            s = e0 + e1 + e2
            s = tl.where(s == 0.0, 1.0, s)
            b0, b1, b2 = e0 / s, e1 / s, e2 / s
            acc0 += _lerp3(color_ptr, i0, i1, i2, b0, b1, b2, cov, 0)
            acc1 += _lerp3(color_ptr, i0, i1, i2, b0, b1, b2, cov, 1)
            acc2 += _lerp3(color_ptr, i0, i1, i2, b0, b1, b2, cov, 2)
            hits += cov.to(tl.float32)
    inv = 1.0 / (K * K)
    o = p.to(tl.int64) * 3
    r0, r1, r2 = acc0 * inv, acc1 * inv, acc2 * inv
    if HAS_BG:
        rest = 1.0 - hits * inv
        r0 += rest * tl.load(bg_ptr + o, mask=live, other=0.0)
        r1 += rest * tl.load(bg_ptr + o + 1, mask=live, other=0.0)
        r2 += rest * tl.load(bg_ptr + o + 2, mask=live, other=0.0)
    tl.store(out_ptr + o, r0, mask=live)
    tl.store(out_ptr + o + 1, r1, mask=live)
    tl.store(out_ptr + o + 2, r2, mask=live)


@triton.jit
def contour_kernel(screen_ptr, seg_ptr, img_ptr, part_ptr, parts_ptr, fid_ptr, depth_ptr, keys_ptr, n_vertices, n_seg,
                   h, w, tol, radius, BLOCK: tl.constexpr):
    s = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = s < n_seg
    a = tl.load(seg_ptr + s * 2, mask=live, other=0)
    b = tl.load(seg_ptr + s * 2 + 1, mask=live, other=0)
    bi = tl.load(img_ptr + s, mask=live, other=0).to(tl.int64)
    part = tl.load(part_ptr + s, mask=live, other=-1)
    base = screen_ptr + bi * n_vertices * 3
    ax, ay, az = tl.load(base + a * 3), tl.load(base + a * 3 + 1), tl.load(base + a * 3 + 2)
    bx, by, bz = tl.load(base + b * 3), tl.load(base + b * 3 + 1), tl.load(base + b * 3 + 2)
    dx = bx - ax
    dy = by - ay
    l2 = dx * dx + dy * dy
    x0 = tl.ceil(tl.maximum(tl.minimum(ax, bx) - radius - 0.5, 0.0))
    x1 = tl.floor(tl.minimum(tl.maximum(ax, bx) + radius - 0.5, w - 1.0))
    y0 = tl.ceil(tl.maximum(tl.minimum(ay, by) - radius - 0.5, 0.0))
    y1 = tl.floor(tl.minimum(tl.maximum(ay, by) + radius - 0.5, h - 1.0))
    valid = live & (l2 > 0.0) & (az > 0.0) & (bz > 0.0) & (x0 <= x1) & (y0 <= y1)
    inv_l2 = 1.0 / tl.where(valid, l2, 1.0)
    ln = tl.sqrt(tl.where(valid, l2, 1.0))
    iaz = 1.0 / az
    ibz = 1.0 / bz
    ix0, iy0 = x0.to(tl.int32), y0.to(tl.int32)
    bw = tl.where(valid, x1.to(tl.int32) - ix0 + 1, 1)
    count = tl.where(valid, bw * (y1.to(tl.int32) - iy0 + 1), 0)
    most = tl.max(count, axis=0)
    img = bi * h * w
    j = 0
    while j < most:  # lane j-th candidate pixel of its own box, as in raster_kernel
        on = j < count
        py = iy0 + j // bw
        px = ix0 + j % bw
        rx = px.to(tl.float32) + 0.5 - ax
        ry = py.to(tl.float32) + 0.5 - ay
        t = tl.minimum(tl.maximum((rx * dx + ry * dy) * inv_l2, 0.0), 1.0)
        qx = t * dx - rx
        qy = t * dy - ry
        d2 = qx * qx + qy * qy
        d = tl.sqrt(d2)
        at = d2 == 0.0  # the edge passes through the centre: any normal of it
        ux = tl.where(at, -dy / ln, qx / tl.where(at, 1.0, d))
        uy = tl.where(at, dx / ln, qy / tl.where(at, 1.0, d))
        horiz = tl.abs(ux) >= tl.abs(uy)
        qpx = tl.where(horiz, px + tl.where(ux > 0.0, 1, -1), px)
        qpy = tl.where(horiz, py, py + tl.where(uy > 0.0, 1, -1))
        ok = on & (d < radius) & (qpx >= 0) & (qpx < w) & (qpy >= 0) & (qpy < h)
        inv_ze = (1.0 - t) * iaz + t * ibz
        zp = tl.load(depth_ptr + img + py * w + px, mask=ok, other=float("inf"))
        zq = tl.load(depth_ptr + img + qpy * w + qpx, mask=ok, other=float("inf"))
        fp = tl.load(fid_ptr + img + py * w + px, mask=ok, other=-1)
        fq = tl.load(fid_ptr + img + qpy * w + qpx, mask=ok, other=-1)
        own_p = (fp >= 0) & (tl.load(parts_ptr + tl.maximum(fp, 0), mask=ok, other=-2) == part)
        own_q = (fq >= 0) & (tl.load(parts_ptr + tl.maximum(fq, 0), mask=ok, other=-2) == part)
        rp = zp * inv_ze  # edge_aa._shows: at the edge, or (another part) in front of it by more than tol
        rq = zq * inv_ze
        seen_p = tl.where(own_p, rp <= 1.0 + tol, rp < 1.0 - tol)
        seen_q = tl.where(own_q, rq <= 1.0 + tol, rq < 1.0 - tol)
        ok = ok & (seen_p != seen_q) & tl.where(seen_p, own_p, own_q)
        key = (d.to(tl.int32, bitcast=True).to(tl.int64) << 32) | s.to(tl.int64)
        tl.atomic_min(keys_ptr + img + py * w + px, key, mask=ok, sem="relaxed")
        j += 1


def contour_keys(screen: torch.Tensor, seg: torch.Tensor, image: torch.Tensor, part: torch.Tensor, parts: torch.Tensor,
                 fid: torch.Tensor, depth: torch.Tensor, tol: float, radius: float) -> torch.Tensor:
    """(B * H * W,) int64 keys of edge anti-aliasing's search (:mod:`.edge_aa`, step 2):
    ``distance bits << 32 | segment`` of the nearest seen contour segment within
    ``radius`` of each pixel centre, EMPTY_KEY where none. screen (B, N, 3) float32, seg
    (S, 2) int32 vertex pairs, image (S,) int32 their images, part (S,) int32 their mesh
    parts, parts (T,) int32 every triangle's, fid (B, H, W) int32 and depth (B, H, W)
    float32 the raster's maps (-1 / +inf where nothing was drawn)."""
    b, h, w = depth.shape
    keys = torch.full((b * h * w,), EMPTY_KEY, dtype=torch.int64, device=depth.device)
    n = seg.shape[0]
    if n:
        contour_kernel[(triton.cdiv(n, _TRI_BLOCK),)](screen, seg, image, part, parts, fid, depth, keys,
                                                     screen.shape[1], n, h, w, float(tol), float(radius),
                                                     BLOCK=_TRI_BLOCK, enable_fp_fusion=False)
    return keys


def raster_keys(screen: torch.Tensor, tris: torch.Tensor, h: int, w: int, cull: bool, near: float) -> torch.Tensor:
    """(B, H, W) int64 keys: depth bits << 32 | triangle id of the nearest covering
    triangle, EMPTY_KEY where none. screen (B, N, 3) float32, tris (T, 3) int32."""
    b, n, _ = screen.shape
    t = tris.shape[0]
    keys = torch.full((b, h, w), EMPTY_KEY, dtype=torch.int64, device=screen.device)
    if b and t:
        grid = (triton.cdiv(t, _TRI_BLOCK), b)
        # no FMA contraction: edge functions and depths round as the torch backend's
        # separate multiplies and adds do, so edge pixels and depth ties resolve alike
        raster_kernel[grid](screen, tris, keys, n, t, h, w, float(near), CULL=bool(cull), BLOCK=_TRI_BLOCK,
                            enable_fp_fusion=False)
    return keys


def resolve_rgb(keys: torch.Tensor, screen: torch.Tensor, tris: torch.Tensor, colors: torch.Tensor,
                backgrounds: torch.Tensor | None, k: int) -> torch.Tensor:
    """(B, H/k, W/k, 3) float32 image: the mean over each k x k block of the interpolated,
    [0, 1]-clamped vertex colours (B, N, 3) of the covered sub-samples, plus the uncovered
    fraction of the background (B, H/k, W/k, 3) float in [0, 1] (black when None)."""
    b, hh, ww = keys.shape
    h, w = hh // k, ww // k
    out = torch.empty((b, h, w, 3), dtype=torch.float32, device=keys.device)
    n_pix = b * h * w
    if n_pix:
        # one background for the batch broadcasts, as in the unfused path
        bg = backgrounds.expand(b, h, w, 3).contiguous() if backgrounds is not None else out
        resolve_kernel[(triton.cdiv(n_pix, _PIX_BLOCK),)](
            keys, screen, tris, colors, bg, out, screen.shape[1], n_pix, h, w,
            HAS_BG=backgrounds is not None, EMPTY=EMPTY_KEY, K=int(k), BLOCK=_PIX_BLOCK)
    return out
