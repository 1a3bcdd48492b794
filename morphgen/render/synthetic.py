"""Synthetic face-like meshes for tests and benchmarks (no model file needed).

* :func:`synthetic_head`: a closed ellipsoid "head" (subdivided icosahedron) with a nose
  bump, a textured albedo and BFM-style landmark names, so pose, occlusion and
  landmark visibility can be tested on a shape that has a back side.
* :func:`synthetic_face_grid`: an open face-mask surface sized like the BFM 2017
  face12 model (169 x 169 = 28,561 vertices, 56,448 triangles, about 160 x 220 mm),
  for speed measurements with a realistic triangle count and screen coverage.

Both use the model conventions: mm, y up, +z toward the viewer, triangles
counter-clockwise seen from outside.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# BFM-style names and (x, y) positions in mm on the front of the face
LANDMARK_XY = {
    "right.eye.corner_outer": (-45.0, 32.0),
    "right.eye.corner_inner": (-17.0, 30.0),
    "left.eye.corner_inner": (17.0, 30.0),
    "left.eye.corner_outer": (45.0, 32.0),
    "center.nose.tip": (0.0, 0.0),
    "right.lips.corner": (-25.0, -42.0),
    "left.lips.corner": (25.0, -42.0),
    "center.chin.tip": (0.0, -85.0),
}


@dataclass
class SyntheticFace:
    vertices: np.ndarray  # (N, 3) float32 mm
    triangles: np.ndarray  # (T, 3) int32
    albedo: np.ndarray  # (N, 3) float32 in [0, 1]
    landmarks: dict[str, int] = field(default_factory=dict)
    region_labels: np.ndarray | None = None  # (N,) int32

    def five_point_vertices(self) -> list[list[int]]:
        """Same groups and order as ``MorphableModel.five_point_vertices``."""
        lm = self.landmarks
        return [
            [lm["right.eye.corner_outer"], lm["right.eye.corner_inner"]],
            [lm["left.eye.corner_inner"], lm["left.eye.corner_outer"]],
            [lm["center.nose.tip"]],
            [lm["right.lips.corner"]],
            [lm["left.lips.corner"]],
        ]


def icosphere(subdivisions: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Unit icosphere: (V, 3) float64 vertices, (T, 3) int32 outward CCW triangles."""
    t = (1.0 + 5**0.5) / 2.0
    v = [(-1, t, 0), (1, t, 0), (-1, -t, 0), (1, -t, 0), (0, -1, t), (0, 1, t), (0, -1, -t), (0, 1, -t),
         (t, 0, -1), (t, 0, 1), (-t, 0, -1), (-t, 0, 1)]  # fmt: skip
    f = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4), (11, 10, 2), (10, 7, 6),
         (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9), (4, 9, 5), (2, 4, 11), (6, 2, 10),
         (8, 6, 7), (9, 8, 1)]  # fmt: skip
    verts = [np.array(p, dtype=np.float64) / np.linalg.norm(p) for p in v]
    faces = list(f)
    for _ in range(subdivisions):
        cache: dict[tuple[int, int], int] = {}

        def mid(a: int, b: int, cache: dict[tuple[int, int], int] = cache) -> int:
            key = (min(a, b), max(a, b))
            if key not in cache:
                m = verts[a] + verts[b]
                verts.append(m / np.linalg.norm(m))
                cache[key] = len(verts) - 1
            return cache[key]

        new = []
        for a, b, c in faces:
            ab, bc, ca = mid(a, b), mid(b, c), mid(c, a)
            new += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
        faces = new
    vs = np.array(verts)
    tr = np.array(faces, dtype=np.int32)
    # make every triangle counter-clockwise seen from outside
    n = np.cross(vs[tr[:, 1]] - vs[tr[:, 0]], vs[tr[:, 2]] - vs[tr[:, 0]])
    flip = (n * vs[tr].mean(1)).sum(1) < 0
    tr[flip] = tr[flip][:, [0, 2, 1]]
    return vs, tr


def _texture(v: np.ndarray) -> np.ndarray:
    """Skin-like base colour with smooth coloured patterns (makes pose observable)."""
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    base = np.array([0.72, 0.52, 0.42])
    pat = np.stack(
        (
            0.12 * np.sin(x / 9.0) * np.cos(y / 13.0),
            0.10 * np.sin(y / 11.0 + 0.5) * np.cos(z / 17.0),
            0.10 * np.cos(x / 15.0 + y / 10.0),
        ),
        -1,
    )
    return np.clip(base + pat, 0.05, 0.95).astype(np.float32)


def _nearest_front(v: np.ndarray, xy: tuple[float, float]) -> int:
    front = v[:, 2] > np.percentile(v[:, 2], 40)
    d = np.where(front, (v[:, 0] - xy[0]) ** 2 + (v[:, 1] - xy[1]) ** 2, np.inf)
    return int(np.argmin(d))


def _regions(v: np.ndarray, lm: dict[str, int]) -> np.ndarray:
    """0 = skin, 1 = eyes, 2 = nose, 3 = mouth (by distance to landmarks)."""
    lab = np.zeros(v.shape[0], np.int32)
    eye_c = [v[[lm["right.eye.corner_outer"], lm["right.eye.corner_inner"]]].mean(0),
             v[[lm["left.eye.corner_outer"], lm["left.eye.corner_inner"]]].mean(0)]  # fmt: skip
    for c in eye_c:
        lab[np.linalg.norm(v - c, axis=1) < 16] = 1
    lab[np.linalg.norm(v - v[lm["center.nose.tip"]], axis=1) < 18] = 2
    mouth = v[[lm["right.lips.corner"], lm["left.lips.corner"]]].mean(0)
    lab[np.linalg.norm((v - mouth) * [0.6, 1.5, 1.0], axis=1) < 20] = 3
    return lab


def synthetic_head(subdivisions: int = 3, radii: tuple[float, float, float] = (75.0, 100.0, 90.0)) -> SyntheticFace:
    """Closed ellipsoid head, centred at the origin, with a nose bump at +z."""
    u, tris = icosphere(subdivisions)
    v = u * np.asarray(radii)
    # nose: push the front outward along +z with a Gaussian in x/y
    r2 = v[:, 0] ** 2 + (v[:, 1] + 5.0) ** 2
    v[:, 2] += np.where(v[:, 2] > 0, 28.0 * np.exp(-r2 / (2 * 14.0**2)), 0.0)
    lm = {name: _nearest_front(v, xy) for name, xy in LANDMARK_XY.items()}
    lm["center.nose.tip"] = int(np.argmax(np.where(np.abs(v[:, 0]) < 10, v[:, 2], -np.inf)))
    return SyntheticFace(v.astype(np.float32), tris, _texture(v), lm, _regions(v, lm))


def synthetic_face_grid(n: int = 169, half_size: tuple[float, float] = (80.0, 110.0)) -> SyntheticFace:
    """Open face-mask height field, n x n vertices (BFM face12 size for n = 169)."""
    s = np.linspace(-1.0, 1.0, n)
    uu, vv = np.meshgrid(s, s)  # row = y index, col = x index
    # squircle map: square grid -> disc, so the mask has an oval outline like a face
    x = uu * np.sqrt(1.0 - vv**2 / 2.0) * half_size[0]
    y = vv * np.sqrt(1.0 - uu**2 / 2.0) * half_size[1]
    a, b, c = half_size[0] * 1.08, half_size[1] * 1.08, 95.0
    z = c * np.sqrt(np.clip(1.0 - (x / a) ** 2 - (y / b) ** 2, 0.0, None))
    z += 28.0 * np.exp(-(x**2 + (y + 5.0) ** 2) / (2 * 13.0**2))  # nose
    z -= 6.0 * (np.exp(-((x - 31) ** 2 + (y - 31) ** 2) / 120.0) + np.exp(-((x + 31) ** 2 + (y - 31) ** 2) / 120.0))  # eye sockets
    v = np.stack((x, y, z), -1).reshape(-1, 3)
    idx = np.arange(n * n).reshape(n, n)
    a0, a1 = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel()
    b0, b1 = idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    # y grows with the row index, so (a0, a1, b1) is counter-clockwise seen from +z
    tris = np.concatenate((np.stack((a0, a1, b1), 1), np.stack((a0, b1, b0), 1))).astype(np.int32)
    lm = {name: _nearest_front(v, xy) for name, xy in LANDMARK_XY.items()}
    return SyntheticFace(v.astype(np.float32), tris, _texture(v), lm, _regions(v, lm))
