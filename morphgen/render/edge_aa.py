"""Edge anti-aliasing: analytic pixel coverage at silhouette and occlusion edges, for the
cost of a render at the output resolution and a pass over the mesh's contour.

Supersampling (``antialias = k``) rasterizes k^2 samples per pixel, though only the
pixels a silhouette crosses need them. At 128 px a BFM-sized face has 56k triangles
smaller than a pixel, so the raster's cost follows the triangle count, and near a
silhouette the triangles are densest on screen (foreshortened): supersampling only the
pixels near edges still visits a third of the mesh at the higher resolution. This pass
works from the mesh's *contour* instead, a few hundred edges:

1. **Contour edges.** Each triangle is labelled while the vertex normals are summed
   (the same cross product): 1 if it faces the camera, else 0 when back faces are culled
   (-1 when they are drawn). An edge between triangles of different labels, or a
   boundary edge of a drawn triangle, is a contour edge (taken once, from the triangle
   of the higher label): every coverage or depth discontinuity of the image (an outline
   against the background, a nose over a cheek, glasses over the face, the hair's edge
   over the skin) runs along contour edges.
2. **Nearest seen contour per pixel.** For each contour edge (screen segment A-B) and
   each pixel whose centre lies within ``RADIUS`` (half a pixel's diagonal: a line
   farther away misses the pixel): the closest point on the segment, its distance d and
   direction u from the centre, its depth z_e (1/z interpolated along the edge), and
   the neighbour pixel Q one step along u's major axis. The edge is *seen* between P and
   Q when exactly one of them shows a surface at the edge, and that surface belongs to
   the edge's own connected part of the mesh (:class:`ContourMesh`). A pixel shows a
   surface at the edge when its nearest surface is of the edge's part at z_e or nearer
   (depth <= z_e (1 + tol), tol = ``DEPTH_TOLERANCE`` pixel widths at that depth; +inf
   where nothing was drawn never is), or of another part nearer by more than tol (a part
   flush beside the edge, as a hair shell's outline resting on the skin, is the other
   side of the discontinuity, not a cover: :func:`_shows`). Hidden contours (behind the
   face, or a hair shell just under the scalp) and creases within one surface fail the
   test. Per pixel the seen edge with
   the smallest d wins (ties: the first in (image, triangle, side) order), as one int64
   key ``d bits << 32 | edge`` in the torch and Triton forms.
3. **Blend.** The line through the closest point, perpendicular to u, cuts the pixel
   square; the fraction alpha on the centre's side is exact for a box filter
   (:func:`box_coverage`), and the pixel becomes ``alpha * C_P + (1 - alpha) * C_Q`` of
   the image as rendered at the pixel centres (background included).

The distance is taken to the contour polyline, not along one segment's normal: on a dense
mesh the contour zigzags from triangle to triangle within a fraction of a pixel, so a
segment's own direction is noise while the polyline's position is not. Not smoothed:
colour edges within one surface (the iris, the line of the lips: supersampling averages
those), surfaces crossing without an edge (interpenetration: the hairline where a hair shell passes into the skin), and a feature thinner than
a pixel gets one edge's coverage.

Three forms draw the same pixels: the numba kernels here (:func:`contour_pass`, run by
the fused CPU renderer), :func:`edge_antialias_torch` (differentiable: alpha is a
function of the screen vertices, so gradients reach vertex positions *through
silhouettes*, which a rasterizer's hard coverage does not give) and its Triton search
(:func:`.triton_kernels.contour_keys`). Quality and cost against supersampling:
``benchmarks/bench_render.py --aa-quality``.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numba
import numpy as np

from .raster_common import EMPTY_KEY

if TYPE_CHECKING:
    import torch

RADIUS = 0.7072  # pixels: a line farther than half a pixel's diagonal from the centre misses it
DEPTH_TOLERANCE = 0.5  # pixel widths at the edge's depth: "at the edge or nearer" (step 2 above)
_MESH_CACHE: dict[tuple, ContourMesh] = {}


def depth_tolerance(focal_px: float) -> float:
    """tol of step 2: ``DEPTH_TOLERANCE`` pixel widths relative to depth (a pixel is
    depth / focal_px wide)."""
    return DEPTH_TOLERANCE / focal_px


@dataclass(frozen=True)
class ContourMesh:
    """What the contour search needs of a mesh, computed once per triangle array (cached
    by its checksum, :func:`contour_mesh`).

    neighbors: (T, 3) int32, the triangle across each edge (v0 v1, v1 v2, v2 v0) of each
        triangle, -1 where none (a boundary edge; an edge of more than two triangles pairs
        the first two);
    parts: (T,) int32, the connected part of each triangle (edge-connected). A contour
        edge is only taken where the pixel on its surface side shows its own part: a hair
        shell or a glasses part lying just under the skin, within the depth tolerance,
        would otherwise draw its hidden outline into the face's.
    """

    neighbors: np.ndarray
    parts: np.ndarray


def contour_mesh(triangles) -> ContourMesh:
    """The :class:`ContourMesh` of (T, 3) triangles (numpy)."""
    tri = np.ascontiguousarray(triangles, dtype=np.int32)
    key = (tri.shape, zlib.crc32(tri.data))
    hit = _MESH_CACHE.get(key)
    if hit is None:
        t64 = tri.astype(np.int64)
        t = len(t64)
        n = int(t64.max()) + 1 if t else 1
        a, b = t64, np.roll(t64, -1, axis=1)  # edge l joins vertex l and vertex l + 1
        code = (np.minimum(a, b) * n + np.maximum(a, b)).T.reshape(-1)  # entry l * T + triangle
        order = np.argsort(code, kind="stable")
        same = code[order[1:]] == code[order[:-1]]
        first = np.flatnonzero(same & np.r_[True, ~same[:-1]])  # the first two of each shared edge
        i, j = order[first], order[first + 1]
        nbr = np.full(3 * t, -1, np.int32)
        nbr[i], nbr[j] = j % t, i % t
        parts = _edge_parts(i % t, j % t, t)
        hit = ContourMesh(np.ascontiguousarray(nbr.reshape(3, t).T), parts)
        if len(_MESH_CACHE) >= 8:
            _MESH_CACHE.pop(next(iter(_MESH_CACHE)))
        _MESH_CACHE[key] = hit
    return hit


@numba.njit(cache=True, nogil=True)
def _edge_parts(i, j, t):
    """(T,) int32: the connected part of each of t triangles, triangles i[k] and j[k]
    sharing an edge, numbered in the order of each part's first triangle. A union-find: what
    scipy's connected_components gave, without importing scipy into every render (a quarter
    of a second)."""
    root = np.arange(t)
    for k in range(len(i)):
        a = i[k]
        while root[a] != a:
            root[a] = root[root[a]]
            a = root[a]
        b = j[k]
        while root[b] != b:
            root[b] = root[root[b]]
            b = root[b]
        if a < b:
            root[b] = a
        elif b < a:
            root[a] = b
    # A root is the smallest triangle of its part (the larger root always joins the
    # smaller), so a parent comes before its child: one forward pass finds every root.
    parts = np.empty(t, np.int32)
    count = 0
    for x in range(t):
        r = root[root[x]]
        root[x] = r
        if r == x:
            parts[x] = count
            count += 1
        else:
            parts[x] = parts[r]
    return parts


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def box_coverage(d, ux, uy):
    """Fraction of a unit pixel square on its centre's side of the line at distance d >= 0
    from the centre along the unit direction (ux, uy), normal to the line: 0.5 + d / a in
    the middle, quadratic where the line cuts a corner, 1 beyond (a + b) / 2, where a >= b
    are |ux|, |uy|."""
    a = abs(ux)
    b = abs(uy)
    if b > a:
        a, b = b, a
    m = 0.5 * (a + b)
    if d >= m:
        return 1.0
    if d <= 0.5 * (a - b):
        return 0.5 + d / a
    t = m - d
    return 1.0 - t * t / (2.0 * a * b)


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _shows(ratio, own, tol):
    """Whether a pixel whose nearest surface lies at ``ratio`` times the edge's depth
    (+inf: nothing drawn) shows a surface at the edge: within ``tol`` for the edge's own
    part, nearer by more than ``tol`` for another. Another part flush with the edge (a hair
    shell's or the glasses' outline resting on the skin, an eyelid over the eyeball) is
    the other side of the discontinuity, not a cover: counted as at the edge, it left
    those outlines jagged; clearly in front, it hides the edge."""
    return ratio <= 1.0 + tol if own else ratio < 1.0 - tol


@numba.njit(cache=True, nogil=True, error_model="numpy")
def contour_pass(sc, tris, neighbors, parts, drawn, skip, fid, zbuf, tol, best_d, best_q, best_u):
    """Steps 1 and 2 of the module notes for one image: for each pixel, the nearest seen
    contour edge's distance ``best_d`` (H, W) float32 (``RADIUS`` where none), the flat
    index of its neighbour Q ``best_q`` (H, W) int32 and the direction ``best_u`` (H, W,
    2) float32. sc: (N, 3) screen x, y, depth; drawn: (T,) int8 triangle labels; fid and
    zbuf: the raster's maps (-1 / +inf where nothing was drawn); skip: (T,) flags of hidden
    triangles (or empty), which add no edges (an edge they share with a drawn triangle
    lies under the surface too). ``best_q`` is -1 where no seen contour edge is near."""
    h, w = fid.shape
    best_d[:, :] = np.float32(RADIUS)
    best_q[:, :] = -1
    for tri in range(tris.shape[0]):
        lt = drawn[tri]
        if lt == 0 or (skip.shape[0] and skip[tri]):
            continue
        for side in range(3):
            other = neighbors[tri, side]
            lo = drawn[other] if other >= 0 else 0
            if lo == lt or (lo != 0 and lo > lt):  # no contour, or found from the other side
                continue
            _contour_edge(sc, tris[tri, side], tris[tri, (side + 1) % 3], parts[tri], parts, fid, zbuf, tol,
                          best_d, best_q, best_u)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _contour_edge(sc, a, b, part, parts, fid, zbuf, tol, best_d, best_q, best_u):
    """Step 2 of the module notes for the contour edge from vertex a to vertex b (a call of
    its own: inlined into the triangle loop, the pass took 1.8x as long)."""
    h, w = fid.shape
    ax = np.float64(sc[a, 0])
    ay = np.float64(sc[a, 1])
    az = np.float64(sc[a, 2])
    bx = np.float64(sc[b, 0])
    by = np.float64(sc[b, 1])
    bz = np.float64(sc[b, 2])
    dx = bx - ax
    dy = by - ay
    l2 = dx * dx + dy * dy
    if not (l2 > 0.0) or (az <= 0.0) or (bz <= 0.0):  # a point, NaN, or behind the camera
        return
    x0 = max(np.ceil(min(ax, bx) - RADIUS - 0.5), 0.0)
    x1 = min(np.floor(max(ax, bx) + RADIUS - 0.5), w - 1.0)
    y0 = max(np.ceil(min(ay, by) - RADIUS - 0.5), 0.0)
    y1 = min(np.floor(max(ay, by) + RADIUS - 0.5), h - 1.0)
    inv_l2 = 1.0 / l2
    iaz = 1.0 / az  # depth is interpolated as 1/z along the edge (perspective-correct)
    ibz = 1.0 / bz
    for py in range(np.int64(y0), np.int64(y1) + 1):
        ry = py + 0.5 - ay
        for px in range(np.int64(x0), np.int64(x1) + 1):
            rx = px + 0.5 - ax
            t = min(max((rx * dx + ry * dy) * inv_l2, 0.0), 1.0)
            qx = t * dx - rx
            qy = t * dy - ry
            d2 = qx * qx + qy * qy
            if d2 >= RADIUS * RADIUS:
                continue
            d = np.float32(np.sqrt(d2))
            if d >= best_d[py, px]:
                continue
            if d > 0.0:
                ux = qx / d
                uy = qy / d
            else:  # the edge passes through the centre: any normal of it
                ln = np.sqrt(l2)
                ux = -dy / ln
                uy = dx / ln
            if abs(ux) >= abs(uy):
                qpx = px + (1 if ux > 0.0 else -1)
                qpy = py
            else:
                qpx = px
                qpy = py + (1 if uy > 0.0 else -1)
            if (qpx < 0) | (qpx >= w) | (qpy < 0) | (qpy >= h):
                continue
            # seen where exactly one of P, Q shows a surface at the edge (see _shows), its own part
            inv_ze = (1.0 - t) * iaz + t * ibz
            fp = fid[py, px]
            fq = fid[qpy, qpx]
            own_p = fp >= 0 and parts[fp] == part
            own_q = fq >= 0 and parts[fq] == part
            seen_p = _shows(zbuf[py, px] * inv_ze, own_p, tol)
            if seen_p == _shows(zbuf[qpy, qpx] * inv_ze, own_q, tol) or not (own_p if seen_p else own_q):
                continue
            best_d[py, px] = d
            best_q[py, px] = qpy * w + qpx
            best_u[py, px, 0] = ux
            best_u[py, px, 1] = uy


def edge_antialias_torch(img: torch.Tensor, fid: torch.Tensor, depth: torch.Tensor, screen: torch.Tensor,
                         drawn: torch.Tensor, triangles: torch.Tensor, focal_px: float,
                         use_triton: bool = False) -> torch.Tensor:
    """Steps 1 (from the labels) to 3 of the module notes on a batch of images (B, H, W, C)
    rendered at their centre samples. fid / depth (B, H, W): the raster's maps (-1 / +inf
    where nothing was drawn); screen (B, N, 3): the vertices (pixel x, y, depth); drawn
    (B, T) int8: the triangle labels (:func:`triangle_labels`); triangles (T, 3).
    Differentiable in ``img`` and ``screen``: the blend weights are functions of the
    contour's screen position. ``use_triton``: step 2's search runs as one Triton kernel
    (:func:`.triton_kernels.contour_keys`) instead of torch's scatter."""
    import torch

    b, h, w, c = img.shape
    dev = img.device
    tris = triangles.to(device=dev, dtype=torch.long)
    mesh = contour_mesh(triangles.cpu().numpy())
    nbr = torch.as_tensor(mesh.neighbors, device=dev, dtype=torch.long)
    parts = torch.as_tensor(mesh.parts, device=dev, dtype=torch.int32)
    lt = drawn[:, :, None]
    lo = torch.where(nbr >= 0, drawn[:, nbr.clamp_min(0)], torch.zeros_like(lt))
    # a contour edge, taken from one side only (as contour_pass does), in (image, triangle, side) order
    bi, ti, si = ((lt != 0) & (lo != lt) & ((lo == 0) | (lo < lt))).nonzero(as_tuple=True)
    seg = torch.stack((tris[ti, si], tris[ti, (si + 1) % 3]), 1)
    tol = depth_tolerance(focal_px)
    scr = screen.detach().to(torch.float32)
    depth = depth.to(torch.float32).contiguous()
    fid = fid.to(torch.int32).contiguous()
    if use_triton:
        from .triton_kernels import contour_keys

        keys = contour_keys(scr.contiguous(), seg.to(torch.int32).contiguous(), bi.to(torch.int32).contiguous(),
                            parts[ti].contiguous(), parts, fid, depth, tol, RADIUS)
    else:
        keys = _contour_keys_torch(scr, seg, bi, parts[ti], parts, fid, depth, tol)
    pix = (keys != EMPTY_KEY).nonzero().squeeze(1)
    if pix.numel() == 0:
        return img
    cand = keys[pix] & 0xFFFFFFFF  # the winning contour edge of each pixel
    bsel = bi[cand]
    rem = pix - bsel * (h * w)
    py = torch.div(rem, w, rounding_mode="floor")
    px = rem - py * w
    # from here on differentiable in screen
    d, ux, uy, _ = _closest(screen[bsel, seg[cand, 0]], screen[bsel, seg[cand, 1]], px, py)
    qx, qy = _neighbor(px, py, ux, uy)
    alpha = _box_coverage_torch(d, ux, uy).to(img.dtype)[:, None]
    flat = img.reshape(b * h * w, c)
    blended = alpha * flat[pix] + (1.0 - alpha) * flat[(bsel * h + qy) * w + qx]
    return flat.index_copy(0, pix, blended).reshape(b, h, w, c)


def triangle_labels(vertices: torch.Tensor, triangles: torch.Tensor, eye: torch.Tensor, cull: bool) -> torch.Tensor:
    """(B, T) int8 labels of step 1 from model-space vertices (B, N, 3) and the camera
    position ``eye`` (B, 3) in model space: the cross product and test of
    :func:`.shading.accumulate_normals_facing`."""
    import torch

    with torch.no_grad():
        tris = triangles.to(device=vertices.device, dtype=torch.long)
        v0, v1, v2 = (vertices[:, tris[:, i]] for i in range(3))
        u, v = v1 - v0, v2 - v0
        n = torch.stack((u[..., 1] * v[..., 2] - u[..., 2] * v[..., 1], u[..., 2] * v[..., 0] - u[..., 0] * v[..., 2],
                         u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]), -1)
        toward = (n * (eye[:, None, :].to(n.dtype) - v0)).sum(-1)
        back = torch.full_like(toward, 0 if cull else -1, dtype=torch.int8)
        return torch.where(toward > 0, torch.ones_like(back), back)


def _closest(pa: torch.Tensor, pb: torch.Tensor, px: torch.Tensor, py: torch.Tensor):
    """Distance d and unit direction (ux, uy) from the centres of pixels (px, py) to their
    closest points on the segments pa-pb (x, y, depth), and 1 / depth there, in the
    arithmetic of :func:`_contour_edge`."""
    import torch

    dx, dy = pb[:, 0] - pa[:, 0], pb[:, 1] - pa[:, 1]
    l2 = dx * dx + dy * dy
    rx = px.to(pa.dtype) + 0.5 - pa[:, 0]
    ry = py.to(pa.dtype) + 0.5 - pa[:, 1]
    t = ((rx * dx + ry * dy) * (1.0 / l2)).clamp(0.0, 1.0)
    qx, qy = t * dx - rx, t * dy - ry
    d2 = qx * qx + qy * qy
    on = d2 == 0  # the edge passes through the centre: any normal of it
    d = torch.where(on, torch.zeros_like(d2), torch.sqrt(d2.clamp_min(1e-30)))
    ln = torch.sqrt(l2)
    ux = torch.where(on, -dy / ln, qx / d.clamp_min(1e-30))
    uy = torch.where(on, dx / ln, qy / d.clamp_min(1e-30))
    return d, ux, uy, (1.0 - t) * (1.0 / pa[:, 2]) + t * (1.0 / pb[:, 2])


def _neighbor(px: torch.Tensor, py: torch.Tensor, ux: torch.Tensor, uy: torch.Tensor):
    """The pixel one step from (px, py) along the major axis of u."""
    import torch

    horiz = ux.abs() >= uy.abs()
    return (torch.where(horiz, px + torch.where(ux > 0, 1, -1), px),
            torch.where(horiz, py, py + torch.where(uy > 0, 1, -1)))


def _box_coverage_torch(d: torch.Tensor, ux: torch.Tensor, uy: torch.Tensor) -> torch.Tensor:
    """:func:`box_coverage` on tensors."""
    import torch

    a = torch.maximum(ux.abs(), uy.abs())
    b = torch.minimum(ux.abs(), uy.abs())
    m = 0.5 * (a + b)
    t = m - d
    corner = 1.0 - t * t / (2.0 * a * b).clamp_min(1e-30)
    out = torch.where(d <= 0.5 * (a - b), 0.5 + d / a, corner)
    return torch.where(d >= m, torch.ones_like(out), out)


def _contour_keys_torch(scr: torch.Tensor, seg: torch.Tensor, bi: torch.Tensor, part: torch.Tensor,
                        parts: torch.Tensor, fid: torch.Tensor, depth: torch.Tensor, tol: float) -> torch.Tensor:
    """Step 2 with tensors: each contour segment's candidate pixels, enumerated one box
    size at a time (as the torch rasterizer does), and the winner per pixel by
    ``scatter_reduce(amin)`` on int64 keys ``d bits << 32 | segment``. Returns (B * H * W,)
    keys, EMPTY_KEY where no seen contour is near."""
    import torch

    b, h, w = depth.shape
    dev = scr.device
    keys = torch.full((b * h * w,), EMPTY_KEY, dtype=torch.int64, device=dev)
    if seg.numel() == 0:
        return keys
    pa, pb = scr[bi, seg[:, 0]], scr[bi, seg[:, 1]]
    x0 = torch.ceil(torch.minimum(pa[:, 0], pb[:, 0]) - RADIUS - 0.5).clamp(min=0.0)
    x1 = torch.floor(torch.maximum(pa[:, 0], pb[:, 0]) + RADIUS - 0.5).clamp(max=w - 1.0)
    y0 = torch.ceil(torch.minimum(pa[:, 1], pb[:, 1]) - RADIUS - 0.5).clamp(min=0.0)
    y1 = torch.floor(torch.maximum(pa[:, 1], pb[:, 1]) + RADIUS - 0.5).clamp(max=h - 1.0)
    dx, dy = pb[:, 0] - pa[:, 0], pb[:, 1] - pa[:, 1]
    ok = (dx * dx + dy * dy > 0) & (pa[:, 2] > 0) & (pb[:, 2] > 0) & (x0 <= x1) & (y0 <= y1)
    size = torch.where(ok, torch.maximum(x1 - x0, y1 - y0) + 1, torch.ones_like(x0))
    bucket = torch.where(ok, torch.ceil(torch.log2(size.double())).long(), -1)
    flat_depth = depth.reshape(-1)
    flat_fid = fid.reshape(-1).long()
    for e in torch.unique(bucket[bucket >= 0]).tolist():
        s = 1 << int(e)
        m = (bucket == e).nonzero().squeeze(1)
        oy, ox = torch.meshgrid(torch.arange(s, device=dev), torch.arange(s, device=dev), indexing="ij")
        px = x0[m, None].long() + ox.reshape(1, -1)
        py = y0[m, None].long() + oy.reshape(1, -1)
        r, c = ((px <= x1[m, None].long()) & (py <= y1[m, None].long())).nonzero(as_tuple=True)
        mr, px, py = m[r], px[r, c], py[r, c]
        d, ux, uy, inv_ze = _closest(pa[mr], pb[mr], px, py)
        qx, qy = _neighbor(px, py, ux, uy)
        near = (d < RADIUS) & (qx >= 0) & (qx < w) & (qy >= 0) & (qy < h)
        base = bi[mr] * (h * w)
        p_flat = base + py * w + px
        q_flat = base + qy.clamp(0, h - 1) * w + qx.clamp(0, w - 1)
        fp, fq = flat_fid[p_flat], flat_fid[q_flat]
        own_p = (fp >= 0) & (parts[fp.clamp_min(0)] == part[mr])
        own_q = (fq >= 0) & (parts[fq.clamp_min(0)] == part[mr])
        rp, rq = flat_depth[p_flat] * inv_ze, flat_depth[q_flat] * inv_ze  # (_shows)
        seen_p = torch.where(own_p, rp <= 1.0 + tol, rp < 1.0 - tol)
        seen_q = torch.where(own_q, rq <= 1.0 + tol, rq < 1.0 - tol)
        keep = near & (seen_p != seen_q) & torch.where(seen_p, own_p, own_q)
        key = (d[keep].to(torch.float32).view(torch.int32).to(torch.int64) << 32) | mr[keep]
        keys.scatter_reduce_(0, p_flat[keep], key, reduce="amin", include_self=True)
    return keys
