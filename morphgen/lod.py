"""Level of detail: a morphable model on fewer of its own vertices, for small renders.

Why: a Basel mesh (28,588 vertices for BFM 2017 face12, about 53,000 for the full head
or BFM 2009) is several times denser than the pixels of a 128 px face: a triangle covers
a fifth of a pixel, and a render pays for every vertex (decoding, projection, normals)
and every triangle (raster set-up) whether it covers a pixel centre or not. Once the
mesh's edges are about a pixel long, more vertices do not bring the picture closer to
the truth (shading is per vertex, and a pixel averages no finer detail).

How: quadric-error decimation by half-edge collapses (a vertex is merged into a
neighbour and disappears; Garland & Heckbert's error, plus an edge-length term that keeps
the triangles even where the surface is flat). The kept vertices are a *subset* of the
model's, so the decimated model is the same linear model on fewer rows of its bases:
every identity, expression and colour decodes exactly onto them, the params of an image
do not change, and the landmarks stay where they are (landmark, iBUG-68 and border
vertices are never removed). A collapse is refused when it would fold a triangle (on the
mean face or on faces two standard deviations out along the first shape and expression
components), flatten a closed part (a tetrahedron) or leave a vertex with fewer than
three neighbours.

The level (`lod_level`) follows the render size: the framed face's eye-to-mouth distance
is a quarter of the raster's side (:class:`.render.camera.Framing`), which gives the
millimetres a pixel spans. Collapses go on, cheapest first, as long as none creates an
edge longer than ``MAX_EDGE_PX`` pixels, so a mesh of uneven density (a dense face on a
coarse head) is thinned where it is dense and left alone where it is not; a mesh whose
median edge is ``KEEP_IF_EDGE_PX`` long already stays whole (the embedded model from 64
px). ``--lod 1.6px`` moves that bound (and the keep-whole length with it, in proportion):
a coarser mesh, faster and a little further from the truth; `benchmarks/bench_lod.py`
prints the trade on a given model. The decimation is a pure function of the model and the
level, so every worker, machine and resume draws the same pixels.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numba
import numpy as np

from . import lod_cache
from .appearance.frame import five_points
from .distributions import number_text
from .errors import ConfigError
from .model import MorphableModel, PCAModel
from .render.camera import Framing, eye_mouth_distance

# The longest edge a collapse may create, in raster pixels at the framed face's scale.
# Against a 4x4 supersampled render of the whole mesh (benchmarks/bench_lod.py) the
# decimated mesh is as close as the whole one: a real face subdivided to 101,523 vertices
# at 128 px keeps 41,910 (0.41 grey levels off on average, the whole mesh 0.43); the
# embedded model at 32 px keeps 2,672 of 6,429 (1.59 against 1.58).
MAX_EDGE_PX = 1.2
KEEP_IF_EDGE_PX = 0.8    # a mesh whose median edge is already this long stays whole
_EDGE_WEIGHT = 0.02      # weight of the edge-length term (mm^4) against the quadric error (mm^2 x mm^2)
_MAX_TURN = 0.3          # a collapse may turn a triangle's normal by up to acos(0.3) = 73 degrees
_MIN_VERTICES = 100
MAX_EDGE_RANGE = (0.5, 4.0)  # the bounds `--lod Npx` may set (finer than 0.5 px decimates nothing)
LOD_CHOICES = "auto, off, a vertex count, or the longest edge in pixels such as 1.6px"


@dataclass(frozen=True)
class Level:
    """What ``--lod`` asks of a model at a render size: decimate down to ``n_vertices``,
    creating no edge longer than ``max_edge_mm`` (on the mean face)."""

    n_vertices: int
    max_edge_mm: float = float("inf")


def parse_lod(value) -> str | int:
    """``--lod`` as the scene keeps it: "auto", "off", a vertex count (>= 100) or the
    longest edge in pixels ("1.6px", its number as a manifest writes it; auto's own 1.2px is
    "auto", so the two are one config); a one-line ConfigError else."""
    text = str(value).strip().lower()
    if text in ("auto", "off"):
        return text
    if not isinstance(value, bool) and text.isdigit() and int(text) >= _MIN_VERTICES:
        return int(text)
    px = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)\s*px", text)
    if px and MAX_EDGE_RANGE[0] <= float(px[1]) <= MAX_EDGE_RANGE[1]:
        return "auto" if float(px[1]) == MAX_EDGE_PX else f"{number_text(float(px[1]))}px"
    raise ConfigError(f"--lod {value} is invalid: use {LOD_CHOICES} (at least {_MIN_VERTICES} vertices; "
                      f"{MAX_EDGE_RANGE[0]:g}-{MAX_EDGE_RANGE[1]:g} px)")


def lod_level(model: MorphableModel, size: float, supersampling: int, lod: str | int) -> Level | None:
    """The level a render of ``size`` px (times ``supersampling``) takes of ``model``
    under the ``--lod`` choice: None for the whole mesh. A scene whose pose scale draws
    faces larger passes a larger size (``SceneRenderer``); recorded camera places of
    fitted photos are not looked at (render close-ups with ``--lod off``)."""
    if lod == "off":
        return None
    if lod != "auto" and not str(lod).endswith("px"):  # a vertex count
        return Level(int(lod)) if int(lod) < model.n_vertices else None
    if lod == "auto":
        max_px, keep_px = MAX_EDGE_PX, KEEP_IF_EDGE_PX
    else:  # "1.6px": the bounds of auto, scaled
        max_px = float(str(lod)[:-2])
        keep_px = KEEP_IF_EDGE_PX * max_px / MAX_EDGE_PX
    mean = model.mean_vertices()
    g = five_points(model, mean)
    eye_mouth_mm = float(eye_mouth_distance(g))
    px_per_mm = Framing().face_fraction * size * supersampling / max(eye_mouth_mm, 1e-6)
    if _median_edge(mean, model.triangles) * px_per_mm >= keep_px:
        return None
    return Level(_MIN_VERTICES, max_px / px_per_mm)


def _median_edge(v: np.ndarray, tris: np.ndarray) -> float:
    t = np.asarray(tris, np.int64)
    e = np.concatenate([v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 1]], v[t[:, 0]] - v[t[:, 2]]])
    return float(np.median(np.linalg.norm(e, axis=1)))


def decimated(model: MorphableModel, level: Level | None) -> tuple[MorphableModel, np.ndarray | None]:
    """(``model`` at ``level``, the ids of the vertices it keeps), or (``model``, None)
    for None. The kept vertices and triangles are cached (a few hundred kB each) by a hash
    of the decimation's inputs (:func:`_inputs_digest`, 20 ms for a Basel mesh): per
    process, so Scenes of one model share them, and on disk (:mod:`.lod_cache`), so that
    the next command, and each spawned worker, skips the collapses (0.2-0.7 s)."""
    if level is None:
        return model, None
    locked = np.zeros(model.n_vertices, bool)
    locked[list(model.landmarks.values())] = True
    if model.ibug68 is not None:
        locked[model.ibug68[model.ibug68 >= 0]] = True
    shapes = _flip_test_shapes(model)
    key = _inputs_digest(shapes, model.triangles, locked, level)
    result = _CACHE.get(key)
    if result is None:
        result = lod_cache.load(key, model.n_vertices, locked)
        if result is None:
            result = decimate_mesh(shapes, model.triangles, locked, level.n_vertices, level.max_edge_mm)
            lod_cache.store(key, *result)
        while len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = result
    keep, tris = result
    return subset(model, keep, tris), keep


_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
_CACHE_SIZE = 16


def _inputs_digest(shapes: np.ndarray, triangles: np.ndarray, locked: np.ndarray, level: Level) -> tuple[str, str]:
    """The caches' key: a hash of everything :func:`decimate_mesh` reads (the shapes it
    measures and fold-checks, the triangles as the loader made them, the locked vertices,
    the level), so that an entry is only read back by the same computation, whatever the
    file, its loader, or a model edited in memory (which keeps its file's hash)."""
    h = hashlib.sha256()
    for a in (shapes, triangles, locked):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.data)
    h.update(repr(level).encode())
    return "decimate_mesh", h.hexdigest()


def _flip_test_shapes(model: MorphableModel, k: int = 3) -> np.ndarray:
    """(S, N, 3): the mean face, then +-2 sd along the first k shape and expression
    components, the faces on which no collapse may fold a triangle (the first is the one
    whose error is measured)."""
    base = model.mean_vertices().reshape(-1)
    shapes = [base]
    for pca in (model.shape, model.expression):
        if pca is None:
            continue
        for j in range(min(k, pca.n_components)):
            d = 2.0 * np.sqrt(pca.variance[j]) * pca.basis[:, j].astype(np.float64)
            shapes += [base + d, base - d]
    return np.stack([np.asarray(s, np.float64).reshape(-1, 3) for s in shapes])


def decimate_mesh(shapes: np.ndarray, triangles: np.ndarray, locked: np.ndarray, n_vertices: int,
                  max_edge_mm: float = float("inf")) -> tuple[np.ndarray, np.ndarray]:
    """(kept vertex ids ascending, triangles over them) of a mesh decimated by half-edge
    collapses to ``n_vertices``, or until no allowed collapse is left. shapes (S, N, 3): the
    mesh in S poses, the first measured, all checked for folds; locked (N,): vertices never
    removed (border vertices are added); no collapse creates an edge longer than
    ``max_edge_mm`` on the first shape. Vertices of no triangle are dropped unless locked."""
    tris = np.ascontiguousarray(triangles, np.int64)
    n = shapes.shape[1]
    used = np.zeros(n, bool)
    used[tris.reshape(-1)] = True
    locked = np.asarray(locked, bool) | _border_vertices(tris, n)
    target = int(n_vertices) - int((locked & ~used).sum())   # counted among the used vertices
    tris = tris.copy()
    alive_v, alive_t = np.ones(n, bool), np.ones(len(tris), bool)
    _collapse(np.ascontiguousarray(shapes, np.float64), tris, locked, used, target, float(max_edge_mm) ** 2,
              alive_v, alive_t)
    keep = np.flatnonzero((alive_v & used) | locked)
    remap = np.full(n, -1, np.int64)
    remap[keep] = np.arange(len(keep))
    return keep, remap[tris[alive_t]].astype(np.int32)


def _border_vertices(tris: np.ndarray, n: int) -> np.ndarray:
    """(N,) bools: the ends of edges that one triangle uses (the mesh's borders and holes)
    or more than two (non-manifold edges), which collapses must not move."""
    e = np.sort(np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]]), axis=1)
    key = e[:, 0] * n + e[:, 1]
    uniq, counts = np.unique(key, return_counts=True)
    odd = uniq[counts != 2]
    out = np.zeros(n, bool)
    out[odd // n] = True
    out[odd % n] = True
    return out


def subset(model: MorphableModel, keep: np.ndarray, triangles: np.ndarray) -> MorphableModel:
    """The model on vertices ``keep`` (ascending; every landmark among them) with these
    triangles (over the kept vertices' new indices). Its bases are the kept rows of the
    model's: the same faces on fewer vertices, but no longer orthonormal columns, so its
    metadata says ``lod`` (a saved copy loads, and is not for fitting)."""
    rows = (3 * keep[:, None] + np.arange(3)).reshape(-1)
    remap = np.full(model.n_vertices, -1, np.int64)
    remap[keep] = np.arange(len(keep))

    def pca(p: PCAModel | None) -> PCAModel | None:
        return None if p is None else PCAModel(p.mean[rows], p.basis[rows], p.variance, p.noise_variance)

    ibug = None if model.ibug68 is None else np.where(model.ibug68 >= 0, remap[np.maximum(model.ibug68, 0)], -1)
    return MorphableModel(
        name=model.name, source=model.source, shape=pca(model.shape), color=pca(model.color),
        expression=pca(model.expression), triangles=np.ascontiguousarray(triangles, np.int32),
        landmarks={k: int(remap[v]) for k, v in model.landmarks.items()}, ibug68=ibug,
        regions={k: np.asarray(m)[keep] for k, m in model.regions.items()},
        # marked: its bases are rows of orthonormal ones, not orthonormal (MorphableModel.validate)
        metadata={**model.metadata, "lod": {"of_vertices": model.n_vertices}}, file_hash=model.file_hash)


# ---- the collapse loop (numba) ---------------------------------------------------------

@numba.njit(cache=True)
def _plane_quadrics(v, tris):
    """(N, 10) area-weighted plane quadrics: a2 ab ac ad b2 bc bd c2 cd d2 per vertex."""
    q = np.zeros((v.shape[0], 10))
    for t in range(tris.shape[0]):
        a, b, c = tris[t, 0], tris[t, 1], tris[t, 2]
        n = np.cross(v[b] - v[a], v[c] - v[a])
        ln = np.sqrt(n[0] * n[0] + n[1] * n[1] + n[2] * n[2])
        if ln < 1e-20:
            continue
        area = 0.5 * ln
        nx, ny, nz = n[0] / ln, n[1] / ln, n[2] / ln
        d = -(nx * v[a, 0] + ny * v[a, 1] + nz * v[a, 2])
        row = np.array([nx * nx, nx * ny, nx * nz, nx * d, ny * ny, ny * nz, ny * d, nz * nz, nz * d, d * d]) * area
        for k in range(10):
            q[a, k] += row[k]
            q[b, k] += row[k]
            q[c, k] += row[k]
    return q


@numba.njit(cache=True, inline="always")
def _qem(q, u, w, p):
    """(Q_u + Q_w)(p)."""
    x, y, z = p[0], p[1], p[2]
    f = (x * x, 2 * x * y, 2 * x * z, 2 * x, y * y, 2 * y * z, 2 * y, z * z, 2 * z, 1.0)
    e = 0.0
    for k in range(10):
        e += (q[u, k] + q[w, k]) * f[k]
    return e


@numba.njit(cache=True, inline="always")
def _len2(v, a, b):
    """Squared length of edge (a, b)."""
    return (v[a, 0] - v[b, 0]) ** 2 + (v[a, 1] - v[b, 1]) ** 2 + (v[a, 2] - v[b, 2]) ** 2


@numba.njit(cache=True)
def _cost(v, q, u, w):
    """Cost of merging u into w: the quadric error at w, plus the edge-length term."""
    l2 = _len2(v, u, w)
    return max(_qem(q, u, w, v[w]), 0.0) + _EDGE_WEIGHT * l2 * l2


@numba.njit(cache=True)
def _push(hc, hu, hw, hvu, hvw, size, c, u, w, vu, vw):
    """Push onto the binary min-heap held in the h* arrays (grown when full)."""
    if size == hc.shape[0]:
        m = 2 * size
        hc2, hu2, hw2, hvu2, hvw2 = np.empty(m), np.empty(m, np.int64), np.empty(m, np.int64), \
            np.empty(m, np.int64), np.empty(m, np.int64)
        hc2[:size], hu2[:size], hw2[:size], hvu2[:size], hvw2[:size] = hc, hu, hw, hvu, hvw
        hc, hu, hw, hvu, hvw = hc2, hu2, hw2, hvu2, hvw2
    i = size
    while i > 0:
        p = (i - 1) // 2
        # ties by vertex ids, so the order never depends on anything but the mesh
        if hc[p] < c or (hc[p] == c and (hu[p] < u or (hu[p] == u and hw[p] <= w))):
            break
        hc[i], hu[i], hw[i], hvu[i], hvw[i] = hc[p], hu[p], hw[p], hvu[p], hvw[p]
        i = p
    hc[i], hu[i], hw[i], hvu[i], hvw[i] = c, u, w, vu, vw
    return hc, hu, hw, hvu, hvw, size + 1


@numba.njit(cache=True)
def _pop(hc, hu, hw, hvu, hvw, size):
    """Remove the heap's top (the caller read it at index 0); returns the new size."""
    size -= 1
    c, u, w, vu, vw = hc[size], hu[size], hw[size], hvu[size], hvw[size]
    i = 0
    while True:
        k = 2 * i + 1
        if k >= size:
            break
        if k + 1 < size and (hc[k + 1] < hc[k] or (hc[k + 1] == hc[k] and (hu[k + 1] < hu[k] or (
                hu[k + 1] == hu[k] and hw[k + 1] < hw[k])))):
            k += 1
        if c < hc[k] or (c == hc[k] and (u < hu[k] or (u == hu[k] and w <= hw[k]))):
            break
        hc[i], hu[i], hw[i], hvu[i], hvw[i] = hc[k], hu[k], hw[k], hvu[k], hvw[k]
        i = k
    hc[i], hu[i], hw[i], hvu[i], hvw[i] = c, u, w, vu, vw
    return size


@numba.njit(cache=True)
def _ring(x, head, nxt, tris, alive_t, mark, tag, out):
    """The distinct neighbours of x into ``out``; returns how many (marks them ``tag``)."""
    m = 0
    c = head[x]
    while c >= 0:
        t = c // 3
        if alive_t[t]:
            for j in range(3):
                y = tris[t, j]
                if y != x and mark[y] != tag:
                    mark[y] = tag
                    out[m] = y
                    m += 1
        c = nxt[c]
    return m


@numba.njit(cache=True, inline="always")
def _normal(p, a, b, c):
    ux, uy, uz = p[b, 0] - p[a, 0], p[b, 1] - p[a, 1], p[b, 2] - p[a, 2]
    vx, vy, vz = p[c, 0] - p[a, 0], p[c, 1] - p[a, 1], p[c, 2] - p[a, 2]
    return uy * vz - uz * vy, uz * vx - ux * vz, ux * vy - uy * vx


@numba.njit(cache=True)
def _folds(shapes, tris, t, u, w):
    """Whether moving corner u of triangle t onto w folds it in any of the shapes."""
    a, b, c = tris[t, 0], tris[t, 1], tris[t, 2]
    a2 = w if a == u else a
    b2 = w if b == u else b
    c2 = w if c == u else c
    for s in range(shapes.shape[0]):
        p = shapes[s]
        x0, y0, z0 = _normal(p, a, b, c)
        x1, y1, z1 = _normal(p, a2, b2, c2)
        l0 = np.sqrt(x0 * x0 + y0 * y0 + z0 * z0)
        l1 = np.sqrt(x1 * x1 + y1 * y1 + z1 * z1)
        if l1 < 1e-12 or x0 * x1 + y0 * y1 + z0 * z1 < _MAX_TURN * l0 * l1:
            return True
    return False


@numba.njit(cache=True)
def _collapse(shapes, tris, locked, used, target, max_len2, alive_v, alive_t):
    """Collapse edges of ``tris`` (changed in place) cheapest first; ``alive_v`` (N,) and
    ``alive_t`` (T,), all True on entry, say what is left. Returns nothing: numba's boxing
    of a returned tuple of arrays calls back into Python, where a Ctrl-C that arrived
    meanwhile is raised mid-boxing (SystemError, or a segfault) instead of cleanly after."""
    n = shapes.shape[1]
    v = shapes[0]
    q = _plane_quadrics(v, tris)
    nt = tris.shape[0]
    head = np.full(n, -1, np.int64)     # per vertex, a linked list of its corners (3 t + j)
    tail = np.full(n, -1, np.int64)
    nxt = np.full(3 * nt, -1, np.int64)
    for c in range(3 * nt - 1, -1, -1):
        x = tris[c // 3, c % 3]
        nxt[c] = head[x]
        head[x] = c
        if tail[x] < 0:
            tail[x] = c
    ver = np.zeros(n, np.int64)
    mark = np.full(n, -1, np.int64)
    mark2 = np.full(n, -1, np.int64)
    ring = np.empty(n, np.int64)
    ring2 = np.empty(n, np.int64)
    cap = 6 * nt + 16
    hc, hu, hw = np.empty(cap), np.empty(cap, np.int64), np.empty(cap, np.int64)
    hvu, hvw = np.empty(cap, np.int64), np.empty(cap, np.int64)
    size = 0
    # each edge once (an inner edge is in two triangles, once as a < b; a border edge joins
    # locked vertices), and none longer than the bound: collapsing it would make a longer one
    for t in range(nt):
        for j in range(3):
            a, b = tris[t, j], tris[t, (j + 1) % 3]
            if a > b or _len2(v, a, b) > max_len2:
                continue
            if not locked[a]:
                hc, hu, hw, hvu, hvw, size = _push(hc, hu, hw, hvu, hvw, size, _cost(v, q, a, b), a, b, 0, 0)
            if not locked[b]:
                hc, hu, hw, hvu, hvw, size = _push(hc, hu, hw, hvu, hvw, size, _cost(v, q, b, a), b, a, 0, 0)
    count = 0
    for i in range(n):
        if used[i]:
            count += 1
    mark3 = np.full(n, -1, np.int64)
    ring3 = np.empty(n, np.int64)
    tag = 0
    tag3 = 0
    while count > target and size > 0:
        u, w, vu, vw = hu[0], hw[0], hvu[0], hvw[0]
        size = _pop(hc, hu, hw, hvu, hvw, size)
        if not (alive_v[u] and alive_v[w]) or ver[u] != vu or ver[w] != vw:
            continue
        # link condition: u and w share exactly the neighbours of their common triangles
        tag += 1
        mu = _ring(u, head, nxt, tris, alive_t, mark, tag, ring)
        # no edge longer than max_len2 (squared, on the mean face) may join w to u's neighbours
        far = False
        for i in range(mu):
            y = ring[i]
            if y != w and _len2(v, w, y) > max_len2:
                far = True
                break
        if far:
            continue
        shared_t = 0
        c = head[u]
        while c >= 0:
            t = c // 3
            if alive_t[t] and (tris[t, 0] == w or tris[t, 1] == w or tris[t, 2] == w):
                shared_t += 1
            c = nxt[c]
        if shared_t == 0:
            continue
        mw = _ring(w, head, nxt, tris, alive_t, mark2, tag, ring2)
        common = 0
        for i in range(mw):
            if mark[ring2[i]] == tag:
                common += 1
        if common != shared_t or mu < 3 or (mu == 3 and mw == 3):   # 3 and 3: a tetrahedron would flatten
            continue
        # the vertices opposite the edge lose u: none may be left with fewer than 3 neighbours
        thin = False
        for i in range(mw):
            x = ring2[i]
            if mark[x] == tag:
                tag3 += 1
                if _ring(x, head, nxt, tris, alive_t, mark3, tag3, ring3) <= 3:
                    thin = True
        if thin:
            continue
        bad = False
        c = head[u]
        while c >= 0 and not bad:
            t = c // 3
            if alive_t[t] and not (tris[t, 0] == w or tris[t, 1] == w or tris[t, 2] == w):
                bad = _folds(shapes, tris, t, u, w)
            c = nxt[c]
        if bad:
            continue
        # collapse: u's triangles with w die, the others take w for u and their corners
        # move to w's list (dead ones are left behind, so the lists stay short)
        c = head[u]
        while c >= 0:
            t = c // 3
            after = nxt[c]
            if alive_t[t]:
                if tris[t, 0] == w or tris[t, 1] == w or tris[t, 2] == w:
                    alive_t[t] = False
                else:
                    tris[t, c % 3] = w
                    nxt[c] = -1
                    nxt[tail[w]] = c
                    tail[w] = c
            c = after
        head[u] = -1
        alive_v[u] = False
        for k in range(10):
            q[w, k] += q[u, k]
        ver[w] += 1
        count -= 1
        tag += 1
        m = _ring(w, head, nxt, tris, alive_t, mark, tag, ring)
        for i in range(m):
            y = ring[i]
            if _len2(v, y, w) > max_len2:
                continue
            if not locked[y]:
                hc, hu, hw, hvu, hvw, size = _push(hc, hu, hw, hvu, hvw, size, _cost(v, q, y, w), y, w, ver[y], ver[w])
            if not locked[w]:
                hc, hu, hw, hvu, hvw, size = _push(hc, hu, hw, hvu, hvw, size, _cost(v, q, w, y), w, y, ver[w], ver[y])
