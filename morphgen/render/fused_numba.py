"""The numba kernels of the fused CPU render path (``backend="numba"`` of
:func:`.renderer.render_batch`): one compiled loop per image does the pose transform,
vertex normals, per-vertex SH shading and colour transform, rasterization
(:func:`.raster_numba.raster_core`), perspective-correct interpolation, supersample
averaging and background compositing, writing uint8 pixels directly; two resolve kernels
make the extra outputs from the same raster maps. Nothing here is differentiable: this is
the dataset path. Image formation: :mod:`.renderer`.
"""
from __future__ import annotations

import numba
import numpy as np

from ..spherical_harmonics import SH_N0, SH_N1, SH_N2_0, SH_N2_1, SH_N2_2
from .edge_aa import box_coverage, contour_pass
from .raster_numba import raster_core, sample_weights
from .shading import accumulate_normals_facing, accumulate_normals_raw
from .specular import SHININESS

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
def _shade_vertices(stamp, b, nc, rot, sk, al, spw, hl, gain, contrast, offset, luma, vcol):
    """Colour of the vertices marked ``stamp[i] == b`` into ``vcol``: the summed normals in
    ``nc`` (model space) are normalised and rotated to camera space, SH-shaded, lit by the
    specular term of :mod:`.specular` where ``spw`` (N,) weights it (``hl``: the half
    vector and strength; an empty ``spw``: no term and no work), and colour-transformed.

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
    shine = spw.shape[0] > 0
    hx, hy, hz, ks = hl[0], hl[1], hl[2], hl[3]
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
        if shine and spw[i] > 0.0:
            nh = nx * hx + ny * hy + nz * hz
            if nh > 0.0:
                sp = spw[i] * ks * nh**SHININESS
                c0 += sp
                c1 += sp
                c2 += sp
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
def fused_render(
    verts, albedo, shk, spec, light, rot, scale, trans, fpx, cx, cy, near,
    tris, tris_sorted, tri_ids, skip, cull, k,
    gain, contrast, offset, luma, bg, out_u8, out_f32, use_u8,
    screen, nsum, ncam, want_normals, lm_idx, lm_nrm, lm_pix, lm_z, vcol, stamp, cells, zbuf, fid, bary,
    edge_aa, neighbors, parts, tol, drawn, cimg, best_d, best_q, best_u,
):  # fmt: skip
    """Render a batch; buffers with a leading dimension of 1 are reused for every image.

    Per image: project all vertices, rasterize, mark the vertices of the triangles that
    won a pixel (``stamp[i] == b``), sum normals, shade the marked vertices, then resolve,
    average the sub-samples and composite. ``spec`` (B, N): per-vertex specular weights,
    (1, 0) for none; ``light`` (B, 4): each image's half vector and highlight strength
    (:func:`.specular.highlight`). ``skip`` (B, T): hidden triangles each image leaves out
    of rasterization and of the contour (:func:`.raster_numba.raster_core`), (1, 0) for
    none. ``lm_pix`` (B, L, 2): the landmarks' raster pixels (row, column; row -1:
    outside), whose z-buffer depth goes to ``lm_z`` (B, L) for their visibility test.
    ``edge_aa`` (k = 1): the normal pass also labels the triangles (``drawn``), the
    composited colours go to ``cimg`` (H, W, 3) and the pixels are written by the edge
    anti-aliasing pass (:mod:`.edge_aa`).
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
        spw = spec[b if spec.shape[0] > 1 else 0]
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
        hidden = skip[b if skip.shape[0] > 1 else 0]
        raster_core(sc[:, 0], sc[:, 1], sc[:, 2], tris_sorted, tri_ids, hidden, cull, near, zb, fb, bb, cells)
        _mark_used_vertices(fb, tris, stamp, b)
        if edge_aa:  # label the triangles for the contour, from the camera's model-space position
            tb = trans[b]
            eye = np.empty(3)
            for i in range(3):
                eye[i] = -(rb[0, i] * tb[0] + rb[1, i] * tb[1] + rb[2, i] * tb[2]) / scale[b]
            accumulate_normals_facing(v, tris, nsum, eye, cull, drawn)
        else:
            accumulate_normals_raw(v, tris, nsum)
        _shade_vertices(stamp, b, nsum, rb, sk, al, spw, light[b], gb, ct, ob, luma, vcol)
        for j in range(lm_idx.shape[0]):  # landmark normals, for their visibility test
            lm_nrm[b, j, 0], lm_nrm[b, j, 1], lm_nrm[b, j, 2] = _camera_unit(nsum, lm_idx[j], rb)
        for j in range(lm_pix.shape[1]):  # and the depth drawn at their pixels
            py = lm_pix[b, j, 0]
            lm_z[b, j] = zb[py, lm_pix[b, j, 1]] if py >= 0 else np.inf
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
                if cov == 0 and edge_aa:  # background only: _edge_blend reads it from bgi
                    continue
                if cov == 0 and use_u8:  # background only: copy the bytes
                    out_u8[b, oy, ox, 0] = bgi[oy, ox, 0]
                    out_u8[b, oy, ox, 1] = bgi[oy, ox, 1]
                    out_u8[b, oy, ox, 2] = bgi[oy, ox, 2]
                    continue
                bw = (1.0 - cov * inv_k2) * (1.0 / 255.0)
                r0 = a0 * inv_k2 + bw * bgi[oy, ox, 0]
                r1 = a1 * inv_k2 + bw * bgi[oy, ox, 1]
                r2 = a2 * inv_k2 + bw * bgi[oy, ox, 2]
                if edge_aa:
                    cimg[oy, ox, 0] = r0
                    cimg[oy, ox, 1] = r1
                    cimg[oy, ox, 2] = r2
                else:
                    _write_pixel(out_u8, out_f32, use_u8, b, oy, ox, r0, r1, r2)
        if edge_aa:
            contour_pass(sc, tris, neighbors, parts, drawn, hidden, fb, zb, tol, best_d, best_q, best_u)
            _edge_blend(cimg, fb, bgi, best_d, best_q, best_u, out_u8, out_f32, use_u8, b)


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _write_pixel(out_u8, out_f32, use_u8, b, oy, ox, r0, r1, r2):
    """One output pixel from its [0, 1] colour (rounded to uint8, or as float32)."""
    if use_u8:
        out_u8[b, oy, ox, 0] = min(int(r0 * 255.0 + 0.5), 255)
        out_u8[b, oy, ox, 1] = min(int(r1 * 255.0 + 0.5), 255)
        out_u8[b, oy, ox, 2] = min(int(r2 * 255.0 + 0.5), 255)
    else:
        out_f32[b, oy, ox, 0] = r0
        out_f32[b, oy, ox, 1] = r1
        out_f32[b, oy, ox, 2] = r2


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _edge_blend(cimg, fb, bgi, best_d, best_q, best_u, out_u8, out_f32, use_u8, b):
    """Step 3 of :mod:`.edge_aa`: each pixel with a seen contour edge blends its colour
    with its neighbour's by the box coverage; the others are written as rendered (the
    background's bytes copied where nothing was drawn). ``cimg`` holds the drawn pixels
    only: a background pixel's colour is read from ``bgi`` (the value the composite gives
    it, bit for bit), which spares the resolve writing three quarters of the image twice."""
    h, w = fb.shape
    for oy in range(h):
        for ox in range(w):
            q = best_q[oy, ox]
            if q >= 0:
                al = box_coverage(np.float64(best_d[oy, ox]), np.float64(best_u[oy, ox, 0]),
                                  np.float64(best_u[oy, ox, 1]))
                qy = q // w
                qx = q - qy * w
                p0, p1, p2 = _composited(cimg, fb, bgi, oy, ox)
                q0, q1, q2 = _composited(cimg, fb, bgi, qy, qx)
                _write_pixel(out_u8, out_f32, use_u8, b, oy, ox, al * p0 + (1.0 - al) * q0,
                             al * p1 + (1.0 - al) * q1, al * p2 + (1.0 - al) * q2)
            elif fb[oy, ox] < 0 and use_u8:
                out_u8[b, oy, ox, 0] = bgi[oy, ox, 0]
                out_u8[b, oy, ox, 1] = bgi[oy, ox, 1]
                out_u8[b, oy, ox, 2] = bgi[oy, ox, 2]
            else:
                p0, p1, p2 = _composited(cimg, fb, bgi, oy, ox)
                _write_pixel(out_u8, out_f32, use_u8, b, oy, ox, p0, p1, p2)


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _composited(cimg, fb, bgi, y, x):
    """The composited colour of pixel (y, x) at k = 1: ``cimg`` where a triangle was drawn,
    else the background as the resolve composites it (0 + bg / 255)."""
    if fb[y, x] >= 0:
        return cimg[y, x, 0], cimg[y, x, 1], cimg[y, x, 2]
    s = 1.0 / 255.0
    return 0.0 + s * bgi[y, x, 0], 0.0 + s * bgi[y, x, 1], 0.0 + s * bgi[y, x, 2]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def resolve_attrs(fid, bary, tris, attr, k, out):
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
def resolve_labels(fid, bary, tris, labels, k, out):
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
