"""The numba rasterizer (the CPU backend, and the raster of the fused CPU renderer in
:mod:`.fused_numba`): a bounding-box / edge-function loop over triangles sorted once into
scan-line order, because at 128 px most triangles are smaller than a pixel and memory
locality decides the speed; each row of a box is cut to the span the edges allow, and a
winning triangle's barycentrics are written with its depth, so that resolving a pixel
needs no geometry again. Conventions: :mod:`.rasterize`.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numba
import numpy as np

from .raster_common import RasterOutput

SPAN_FAR = 1e6  # pixels: the numba raster's row spans are exact for coordinates within this
# Row spans cost three divisions and a few operations a row; a box narrower than this many
# pixels tests its pixels directly (the same pixels pass either way). At 128 px, 9 % off the
# face12-sized raster and 5 % off the embedded model's (0.64 -> 0.58, 0.65 -> 0.62 ms).
SPAN_MIN_WIDTH = 3
SPAN_MARGIN = 1e-4  # pixels added to each side of a row span (rounding is below 1e-8 px there)


def locality_order(triangles: np.ndarray, xy: np.ndarray, rows: int = 128) -> np.ndarray:
    """Permutation of the triangles into scan-line order of their centroids.

    ``xy`` are per-vertex 2D positions (screen coordinates, or model-space x/y for a
    frontal view). Centroids are binned into ``rows`` horizontal bands and sorted by x
    within a band, alternating direction from band to band (boustrophedon), so that
    consecutive triangles touch neighbouring pixels and vertices. Measured on this
    machine's CPUs for a 56k-triangle face at 128 px: random order 2.3 ms, Morton or
    Hilbert order 1.4-1.6 ms, this scan order 1.2 ms.
    """
    c = np.nan_to_num(np.asarray(xy, dtype=np.float64)[triangles].mean(axis=1))  # a NaN vertex sorts anywhere
    lo, hi = c.min(axis=0), c.max(axis=0)
    band = np.minimum(((c[:, 1] - lo[1]) / max(hi[1] - lo[1], 1e-12) * rows).astype(np.int64), rows - 1)
    x = np.where(band % 2 == 0, c[:, 0], -c[:, 0])
    return np.lexsort((x, band)).astype(np.int32)


@dataclass
class PreparedMesh:
    """Per-mesh data computed once and reused for every image.

    triangles: (T, 3) uint32 in the original order (unsigned: numba skips its
        negative-index wraparound checks, which otherwise cost about half of the time of
        these gather-heavy loops); sorted: the same in raster order; order: the original
        index of each sorted triangle (written to the face-id map).
    """

    triangles: np.ndarray
    sorted: np.ndarray
    order: np.ndarray


def prepare_mesh(triangles: np.ndarray, xy: np.ndarray) -> PreparedMesh:
    """Sort the triangles for locality (see :func:`locality_order`)."""
    tri = np.ascontiguousarray(triangles, dtype=np.int32)
    order = locality_order(tri, xy)
    return PreparedMesh(tri.astype(np.uint32), np.ascontiguousarray(tri[order]).astype(np.uint32), order)


class _MeshCache:
    """Prepared meshes keyed by a checksum of the triangle array (computed once per mesh)."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self.store: dict[tuple, PreparedMesh] = {}

    def get_mesh(self, triangles: np.ndarray, xy: np.ndarray) -> PreparedMesh:
        """The prepared mesh for ``triangles``; ``xy`` (per-vertex 2D positions) orders
        the triangles the first time this mesh is seen."""
        tri = np.ascontiguousarray(triangles, dtype=np.int32)
        key = (tri.shape, zlib.crc32(tri.data))
        hit = self.store.get(key)
        if hit is None:
            hit = prepare_mesh(tri, np.asarray(xy, dtype=np.float64))
            if len(self.store) >= self.size:
                self.store.pop(next(iter(self.store)))
            self.store[key] = hit
        return hit

    def get(self, triangles: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(sorted uint32 triangles, original index of each) for ``triangles``."""
        m = self.get_mesh(triangles, xy)
        return m.sorted, m.order


MESH_CACHE = _MeshCache()


@numba.njit(cache=True, nogil=True, error_model="numpy")
def raster_core(sx, sy, sw, tris, tri_ids, skip, cull, near, zbuf, fid, bary, cells):
    """Rasterize one image into ``zbuf`` (H, W) float32 / ``fid`` (H, W) int32 / ``bary``
    (H, W, 2) float32 in place.

    sx, sy, sw: per-vertex screen x, y and depth; tris: (T, 3) uint32 in raster order;
    tri_ids: the id written for each of them (the original index). zbuf must start at
    +inf and fid at -1 (or hold an earlier pass: the test merges); bary is written where
    a triangle wins: the perspective-correct weights of its second and third vertices
    (see :func:`sample_weights`), a by-product of the depth. cells: (N, 4) int32 scratch
    (the caller allocates it once per batch). skip: (T,) flags by original index, the
    triangles to leave out of this image (hidden ones: see ``render_batch``), or empty.

    Cheapest test first: at 128 px about 80 % of a face's triangles contain no pixel
    centre, so the bounding box of covered centres is checked before anything else, in
    integers: each vertex's first and last pixel centre at or beyond it (ceil and floor of
    x - 0.5, y - 0.5) are computed once per vertex, and a triangle's box is their min and
    max (ceil and floor commute with min and max), which is 20 % faster than rounding per
    triangle. Depth at a pixel is ``area * w0 * w1 * w2 / (e0 w1 w2 + e1 w0 w2 + e2 w0 w1)``
    (the harmonic interpolation of the vertex depths) with one division per covered pixel;
    the torch backend evaluates the same expression in the same order. The weights of the
    vertices are the terms of that denominator over their sum (``e_i w_j w_k / sum``).
    """
    h, w = zbuf.shape
    for i in range(sx.shape[0]):  # cells[i] = x first, x last, y first, y last
        x = np.float64(sx[i]) - 0.5
        y = np.float64(sy[i]) - 0.5
        if np.isnan(x) | np.isnan(y):  # NaN: the vertex adds nothing to a box (its pixels fail the edge test)
            cells[i, 0], cells[i, 1], cells[i, 2], cells[i, 3] = w, -1, h, -1
            continue
        # clamped to [-1, size] first, so that int32 holds any coordinate
        cells[i, 0] = np.int32(min(max(np.ceil(x), -1.0), w))
        cells[i, 1] = np.int32(min(max(np.floor(x), -1.0), w))
        cells[i, 2] = np.int32(min(max(np.ceil(y), -1.0), h))
        cells[i, 3] = np.int32(min(max(np.floor(y), -1.0), h))
    # the triangles whose box holds a pixel centre (about a third at 128 px), listed without
    # a branch (a branch that goes either way at random took a tenth of the raster's time)
    cand = np.empty(tris.shape[0], np.int32)
    m = 0
    for k in range(tris.shape[0]):
        i0 = tris[k, 0]
        i1 = tris[k, 1]
        i2 = tris[k, 2]
        cand[m] = k
        m += np.int64((max(min(cells[i0, 0], min(cells[i1, 0], cells[i2, 0])), 0)
                       <= min(max(cells[i0, 1], max(cells[i1, 1], cells[i2, 1])), w - 1))
                      & (max(min(cells[i0, 2], min(cells[i1, 2], cells[i2, 2])), 0)
                         <= min(max(cells[i0, 3], max(cells[i1, 3], cells[i2, 3])), h - 1)))
    for j in range(m):
        k = cand[j]
        if skip.shape[0] and skip[tri_ids[k]]:
            continue
        i0 = tris[k, 0]
        i1 = tris[k, 1]
        i2 = tris[k, 2]
        # range of covered pixel centres, clipped to the image
        xa = max(min(cells[i0, 0], min(cells[i1, 0], cells[i2, 0])), 0)
        xb = min(max(cells[i0, 1], max(cells[i1, 1], cells[i2, 1])), w - 1)
        ya = max(min(cells[i0, 2], min(cells[i1, 2], cells[i2, 2])), 0)
        yb = min(max(cells[i0, 3], max(cells[i1, 3], cells[i2, 3])), h - 1)
        x0 = np.float64(sx[i0])
        x1 = np.float64(sx[i1])
        x2 = np.float64(sx[i2])
        y0 = np.float64(sy[i0])
        y1 = np.float64(sy[i1])
        y2 = np.float64(sy[i2])
        w0 = np.float64(sw[i0])
        w1 = np.float64(sw[i1])
        w2 = np.float64(sw[i2])
        if (w0 <= near) | (w1 <= near) | (w2 <= near):
            continue
        area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
        if area == 0.0:
            continue
        if area > 0.0:  # back-facing (front faces are clockwise in y-down pixels)
            if cull:
                continue
            flip = False
        else:  # orient so that inside means all edge functions >= 0
            flip = True  # bary below: e1 / e2 now belong to the original third / second vertex
            x1, x2 = x2, x1
            y1, y2 = y2, y1
            w1, w2 = w2, w1
            area = -area
        if xa == xb and ya == yb:  # one candidate pixel (the common case): quick reject
            cx = xa + 0.5
            cy = ya + 0.5
            e0 = (x2 - x1) * (cy - y1) - (y2 - y1) * (cx - x1)
            e1 = (x0 - x2) * (cy - y2) - (y0 - y2) * (cx - x2)
            e2 = (x1 - x0) * (cy - y0) - (y1 - y0) * (cx - x0)
            if (e0 < 0.0) | (e1 < 0.0) | (e2 < 0.0):
                continue
        p0 = w1 * w2
        p1 = w0 * w2
        p2 = w0 * w1
        num = area * w0 * p0
        d0x = x2 - x1
        d0y = y2 - y1
        d1x = x0 - x2
        d1y = y0 - y2
        d2x = x1 - x0
        d2y = y1 - y0
        tid = tri_ids[k]
        # Row spans: edge i crosses the row's centre line at x_j + d_ix / d_iy (cy - y_j);
        # rising edges (d_iy > 0) bound the inside centres from the right, falling ones
        # from the left. The exact test below still decides every pixel, so a span only
        # skips candidates that cannot pass (at 256 px, 3x fewer: 1.6 -> 1.2 ms for the
        # embedded face). SPAN_MARGIN is far above the rounding of either computation for
        # coordinates within +-SPAN_FAR; beyond that, and in boxes narrower than
        # SPAN_MIN_WIDTH pixels, the whole box is tested.
        spans = xb - xa + 1 >= SPAN_MIN_WIDTH and not (  # not <=: a NaN coordinate takes spans, as before
            max(max(abs(x0), abs(x1)), max(abs(x2), max(abs(y0), max(abs(y1), abs(y2))))) > SPAN_FAR)
        r0 = r1 = r2 = 0.0
        if spans:
            r0 = 1.0 / d0y if d0y != 0.0 else 0.0
            r1 = 1.0 / d1y if d1y != 0.0 else 0.0
            r2 = 1.0 / d2y if d2y != 0.0 else 0.0
        for py in range(ya, yb + 1):
            cy = py + 0.5
            pa = xa
            pb = xb
            if spans:
                lo = -np.inf
                hi = np.inf
                if d0y > 0.0:
                    hi = min(hi, x1 + d0x * (cy - y1) * r0)
                elif d0y < 0.0:
                    lo = max(lo, x1 + d0x * (cy - y1) * r0)
                if d1y > 0.0:
                    hi = min(hi, x2 + d1x * (cy - y2) * r1)
                elif d1y < 0.0:
                    lo = max(lo, x2 + d1x * (cy - y2) * r1)
                if d2y > 0.0:
                    hi = min(hi, x0 + d2x * (cy - y0) * r2)
                elif d2y < 0.0:
                    lo = max(lo, x0 + d2x * (cy - y0) * r2)
                if lo > -SPAN_FAR:
                    pa = max(xa, np.int64(np.ceil(lo - 0.5 - SPAN_MARGIN)))
                if hi < SPAN_FAR:
                    pb = min(xb, np.int64(np.floor(hi - 0.5 + SPAN_MARGIN)))
            for px in range(pa, pb + 1):
                cx = px + 0.5
                e0 = d0x * (cy - y1) - d0y * (cx - x1)
                e1 = d1x * (cy - y2) - d1y * (cx - x2)
                e2 = d2x * (cy - y0) - d2y * (cx - x0)
                if (e0 < 0.0) | (e1 < 0.0) | (e2 < 0.0):
                    continue
                if (e0 == 0.0) | (e1 == 0.0) | (e2 == 0.0):
                    # top-left rule: edges going up (dy < 0) are left edges, flat
                    # edges going right are top edges; only those own their pixels
                    if e0 == 0.0 and not (d0y < 0.0 or (d0y == 0.0 and d0x > 0.0)):
                        continue
                    if e1 == 0.0 and not (d1y < 0.0 or (d1y == 0.0 and d1x > 0.0)):
                        continue
                    if e2 == 0.0 and not (d2y < 0.0 or (d2y == 0.0 and d2x > 0.0)):
                        continue
                den = e0 * p0 + e1 * p1 + e2 * p2
                z = np.float32(num / den)
                zo = zbuf[py, px]
                if z < zo or (z == zo and tid < fid[py, px]):
                    zbuf[py, px] = z
                    fid[py, px] = tid
                    u = e1 * p1 / den
                    v = e2 * p2 / den
                    bary[py, px, 0] = v if flip else u
                    bary[py, px, 1] = u if flip else v


@numba.njit(cache=True, nogil=True, inline="always")
def sample_weights(tris, fid, bary, py, px):
    """Vertices (i0, i1, i2) of the triangle that won sample (py, px) (``fid`` >= 0 there)
    and their perspective-correct barycentric weights, summing to 1, from the maps
    :func:`raster_core` wrote: the one per-sample resolve of every numba kernel."""
    f = np.uint32(fid[py, px])
    b1 = np.float64(bary[py, px, 0])
    b2 = np.float64(bary[py, px, 1])
    return tris[f, 0], tris[f, 1], tris[f, 2], 1.0 - b1 - b2, b1, b2


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _raster_batch_numba(screen, tris_sorted, tri_ids, tris, cull, near, zbuf, fid, bary):
    cells = np.empty((screen.shape[1], 4), np.int32)
    b12 = np.empty((zbuf.shape[1], zbuf.shape[2], 2), np.float32)
    for b in range(screen.shape[0]):
        fb = fid[b]
        raster_core(screen[b, :, 0], screen[b, :, 1], screen[b, :, 2], tris_sorted, tri_ids, np.empty(0, np.uint8), cull, near,
                    zbuf[b], fb, b12, cells)
        for py in range(fb.shape[0]):
            for px in range(fb.shape[1]):
                if fb[py, px] < 0:
                    bary[b, py, px, 0] = bary[b, py, px, 1] = bary[b, py, px, 2] = 0.0
                else:
                    _, _, _, bary[b, py, px, 0], bary[b, py, px, 1], bary[b, py, px, 2] = sample_weights(tris, fb, b12, py, px)


def rasterize_numba(screen: np.ndarray, triangles: np.ndarray, h: int, w: int, cull: bool, near: float) -> RasterOutput:
    """Rasterize numpy (B, N, 3) screen vertices; barycentrics of all three vertices."""
    b = screen.shape[0]
    tris = np.ascontiguousarray(triangles, dtype=np.int32)
    tris_sorted, order = MESH_CACHE.get(tris, screen[0, :, :2])
    tris = tris.astype(np.uint32)
    zbuf = np.full((b, h, w), np.inf, dtype=np.float32)
    fid = np.full((b, h, w), -1, dtype=np.int32)
    bary = np.empty((b, h, w, 3), dtype=np.float32)
    _raster_batch_numba(np.ascontiguousarray(screen), tris_sorted, order, tris, bool(cull), float(near), zbuf, fid, bary)
    return RasterOutput(fid, bary, zbuf)
