"""The torch rasterizer: batched and device-agnostic. Candidate pixels of each triangle's
bounding box are enumerated and the nearest one is picked with ``scatter_reduce(amin)`` on
int64 keys packing depth bits and triangle id. Same coverage rule and depth expression as
the numba backend (conventions: :mod:`.rasterize`).
"""
from __future__ import annotations

import torch

from .raster_common import EMPTY_KEY, RasterOutput, keyed_output, maps_from_keys


def rasterize_torch(
    screen: torch.Tensor,
    triangles: torch.Tensor,
    h: int,
    w: int,
    cull: bool,
    near: float,
    max_candidates: int | None = None,
    with_bary: bool = True,
) -> RasterOutput:
    """Batched bounding-box rasterizer; same coverage and z-test as the numba backend."""
    dev = screen.device
    dt = screen.dtype if screen.dtype == torch.float64 else torch.float32
    screen = screen.detach().to(dt)
    if max_candidates is None:
        max_candidates = 1 << 24 if dev.type == "cuda" else 1 << 21
    b, n, _ = screen.shape
    tris = triangles.to(device=dev, dtype=torch.long)
    t = tris.shape[0]
    v = screen[:, tris]  # (B, T, 3 vertices, 3 coords)
    x0, y0, w0 = v[..., 0, 0], v[..., 0, 1], v[..., 0, 2]
    x1, y1, w1 = v[..., 1, 0], v[..., 1, 1], v[..., 1, 2]
    x2, y2, w2 = v[..., 2, 0], v[..., 2, 1], v[..., 2, 2]
    area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
    xs, ys = v[..., 0], v[..., 1]
    xa = torch.ceil((xs.min(-1).values - 0.5).clamp(min=0.0))
    xb = torch.floor((xs.max(-1).values - 0.5).clamp(max=w - 1.0))
    ya = torch.ceil((ys.min(-1).values - 0.5).clamp(min=0.0))
    yb = torch.floor((ys.max(-1).values - 0.5).clamp(max=h - 1.0))
    valid = (xa <= xb) & (ya <= yb) & (w0 > near) & (w1 > near) & (w2 > near) & (area != 0)
    if cull:
        valid &= area < 0
    # orient: swap vertices 1 and 2 where the area is negative (front faces)
    neg = area < 0
    x1o, x2o = torch.where(neg, x2, x1), torch.where(neg, x1, x2)
    y1o, y2o = torch.where(neg, y2, y1), torch.where(neg, y1, y2)
    w1o, w2o = torch.where(neg, w2, w1), torch.where(neg, w1, w2)
    areao = area.abs()

    sel = valid.reshape(-1).nonzero().squeeze(1)  # flat (b * T + t)
    bi = torch.div(sel, t, rounding_mode="floor")
    ti = sel - bi * t

    def pick(a: torch.Tensor) -> torch.Tensor:
        return a.reshape(-1)[sel]

    X0, Y0, X1, Y1, X2, Y2 = map(pick, (x0, y0, x1o, y1o, x2o, y2o))
    W0, W1, W2 = pick(w0), pick(w1o), pick(w2o)
    # same depth expression, same evaluation order as the numba kernel
    P0, P1, P2 = W1 * W2, W0 * W2, W0 * W1
    NUM = pick(areao) * W0 * P0
    XA, XB, YA, YB = (pick(a).long() for a in (xa, xb, ya, yb))
    d0x, d0y, d1x, d1y, d2x, d2y = X2 - X1, Y2 - Y1, X0 - X2, Y0 - Y2, X1 - X0, Y1 - Y0
    tl0 = (d0y < 0) | ((d0y == 0) & (d0x > 0))
    tl1 = (d1y < 0) | ((d1y == 0) & (d1x > 0))
    tl2 = (d2y < 0) | ((d2y == 0) & (d2x > 0))
    size = torch.maximum(XB - XA, YB - YA) + 1
    # power-of-two square buckets bound the wasted candidates to < 4x per triangle
    bucket = torch.ceil(torch.log2(size.to(torch.float64))).long() if size.numel() else size

    keys = torch.full((b * h * w,), EMPTY_KEY, dtype=torch.int64, device=dev)
    for e in (torch.unique(bucket).tolist() if bucket.numel() else []):
        s = 1 << int(e)
        members = (bucket == e).nonzero().squeeze(1)
        oy, ox = torch.meshgrid(
            torch.arange(s, device=dev), torch.arange(s, device=dev), indexing="ij"
        )
        ox, oy = ox.reshape(1, -1), oy.reshape(1, -1)
        step = max(1, max_candidates // (s * s))
        for c0 in range(0, members.numel(), step):
            m = members[c0 : c0 + step]
            px = XA[m, None] + ox
            py = YA[m, None] + oy
            inb = (px <= XB[m, None]) & (py <= YB[m, None])
            cx = px.to(dt) + 0.5
            cy = py.to(dt) + 0.5
            e0 = d0x[m, None] * (cy - Y1[m, None]) - d0y[m, None] * (cx - X1[m, None])
            e1 = d1x[m, None] * (cy - Y2[m, None]) - d1y[m, None] * (cx - X2[m, None])
            e2 = d2x[m, None] * (cy - Y0[m, None]) - d2y[m, None] * (cx - X0[m, None])
            inside = inb & ((e0 > 0) | ((e0 == 0) & tl0[m, None]))
            inside &= (e1 > 0) | ((e1 == 0) & tl1[m, None])
            inside &= (e2 > 0) | ((e2 == 0) & tl2[m, None])
            r, c = inside.nonzero(as_tuple=True)
            if r.numel() == 0:
                continue
            mr = m[r]
            z = NUM[mr] / (e0[r, c] * P0[mr] + e1[r, c] * P1[mr] + e2[r, c] * P2[mr])
            zbits = z.to(torch.float32).view(torch.int32).to(torch.int64)
            key = (zbits << 32) | ti[mr]
            pix = (bi[mr] * h + py[r, c]) * w + px[r, c]
            keys.scatter_reduce_(0, pix, key, reduce="amin", include_self=True)

    fid, depth = maps_from_keys(keys.reshape(b, h, w))
    return keyed_output(fid, depth, screen, tris, with_bary)
