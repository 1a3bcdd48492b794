"""Where things are on a morphable model's face, for any model with the five alignment
landmarks: a face frame and soft per-vertex fields (beard zones, a clothing band, skin
spot patterns, eye catch-lights, where skin shines) on the mean shape.

The frame: origin between the eyes, x toward the subject's left eye, y up (eye line to
mouth line), z out of the face, unit = inter-ocular distance (IOD, about 60 mm). Zones
are written in those units, so they land on the same anatomy of the embedded model, BFM
2009/2017/2019 or any converted model. Where a model names regions (the embedded one:
lips, nose, eyes, ears, hair, neck, mouth_interior), they refine the zones.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..model import MorphableModel


@dataclass(frozen=True)
class FaceFrame:
    origin: np.ndarray   # (3,) mm, between the eyes
    axes: np.ndarray     # (3, 3) rows: x (to the subject's left), y (up), z (out of the face)
    iod: float           # mm

    def coords(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) points in mm -> frame coordinates in IOD units."""
        return (np.asarray(points, np.float64) - self.origin) @ self.axes.T / self.iod


def five_points(model: MorphableModel, vertices: np.ndarray) -> np.ndarray:
    """(5, 3): the alignment points (eye, eye, nose, mouth, mouth; image order) of a mesh."""
    groups = model.five_point_vertices()
    return np.stack([vertices[np.atleast_1d(g)].mean(0) for g in groups])


def size_direction(model: MorphableModel, n_shape: int) -> np.ndarray:
    """(n_shape,) unit vector: how each shape coefficient (a unit-variance draw) grows the
    face -- eye distance plus eye-to-mouth height, linearised at the mean. A gender-like
    cue that needs no labels (men's faces are larger on average), which beards follow as
    a tendency (:class:`morphgen.appearance.AppearanceConfig`); projecting an identity's
    coefficients on it gives a score distributed like them (about N(0, 1))."""
    groups = [np.atleast_1d(np.asarray(g, np.int64)) for g in model.five_point_vertices()]
    basis = model.shape.basis.reshape(-1, 3, model.shape.n_components)                   # (N, 3, K) view
    scale = np.sqrt(model.shape.variance[:n_shape].astype(np.float64))
    pts = five_points(model, model.shape.mean.reshape(-1, 3).astype(np.float64))        # (5, 3)
    # the same points' gradients, in float64 from only their rows of the basis
    grads = np.stack([basis[g, :, :n_shape].astype(np.float64).mean(0) * scale for g in groups])   # (5, 3, K)
    across, down = pts[1] - pts[0], (pts[0] + pts[1]) / 2 - (pts[3] + pts[4]) / 2
    d = (across / np.linalg.norm(across)) @ (grads[1] - grads[0]) \
        + (down / np.linalg.norm(down)) @ ((grads[0] + grads[1]) / 2 - (grads[3] + grads[4]) / 2)
    norm = np.linalg.norm(d)
    return d / norm if norm > 0 else d


def face_frame(p5: np.ndarray) -> FaceFrame:
    """The face frame of five alignment points (MTCNN order: image-left eye first, i.e. the
    subject's right eye)."""
    p5 = np.asarray(p5, np.float64)
    right_eye, left_eye, nose = p5[0], p5[1], p5[2]
    mouth = (p5[3] + p5[4]) / 2
    origin = (right_eye + left_eye) / 2
    x = left_eye - right_eye
    iod = float(np.linalg.norm(x))
    x /= iod
    y = origin - mouth
    y -= x * (y @ x)
    y /= np.linalg.norm(y)
    z = np.cross(x, y)
    if (nose - origin) @ z < 0:
        z = -z
    return FaceFrame(origin, np.stack([x, y, z]), iod)


def smoothstep(e0: float, e1: float, x):
    t = np.clip((np.asarray(x, np.float64) - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def band(x, lo: float, hi: float, soft: float):
    """1 inside [lo, hi], fading to 0 over `soft` outside."""
    return smoothstep(lo - soft, lo, x) * (1 - smoothstep(hi, hi + soft, x))


def mesh_smoother(triangles: np.ndarray, n: int):
    """Averaging over each vertex's one-ring (and itself), applied `it` times."""
    import scipy.sparse as sp  # here, not at the top: a render without appearance never pays its import

    t = np.asarray(triangles, np.int64)
    rows = np.concatenate([t[:, 0], t[:, 1], t[:, 2], t[:, 1], t[:, 2], t[:, 0]])
    cols = np.concatenate([t[:, 1], t[:, 2], t[:, 0], t[:, 0], t[:, 1], t[:, 2]])
    a = sp.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n)).tocsr()
    a.data[:] = 1.0
    a = a + sp.eye(n, format="csr")
    avg = sp.diags(1.0 / np.asarray(a.sum(1)).ravel()) @ a

    def smooth(f, it: int):
        f = np.asarray(f, np.float64)
        for _ in range(it):
            f = avg @ f
        return f

    return smooth


def vertex_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    v = np.asarray(vertices, np.float64)
    t = np.asarray(triangles, np.int64)
    fn = np.cross(v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 0]])
    n = np.zeros_like(v)
    for k in range(3):
        np.add.at(n, t[:, k], fn)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


def region(model: MorphableModel, name: str) -> np.ndarray | None:
    r = model.regions.get(name)
    return None if r is None else np.asarray(r, bool)


def beard_fields(model: MorphableModel, c: np.ndarray, normals_f: np.ndarray, smooth) -> np.ndarray:
    """(5, N) soft zones: moustache, chin (goatee), jaw and cheeks, under the jaw, sideburns."""
    u, v, w = np.abs(c[:, 0]), c[:, 1], c[:, 2]
    front = smoothstep(-1.0, -0.7, w)
    keep = np.ones(len(c))
    for name in ("lips", "nose", "eyes", "ears", "mouth_interior", "teeth", "hair", "eyebrows"):
        r = region(model, name)
        if r is not None:
            keep *= 1.0 - smooth(r, 1)
    lips = region(model, "lips")
    if lips is None:  # no region: an ellipse around the mouth line
        keep *= 1 - smoothstep(0.9, 1.1, np.sqrt((u / 0.5) ** 2 + ((v + 1.15) / 0.14) ** 2))
    moustache = band(v, -1.05, -0.82, 0.06) * (1 - smoothstep(0.5, 0.62, u)) * front
    chin = band(v, -1.95, -1.25, 0.1) * (1 - smoothstep(0.38, 0.5, u)) * front
    cheek_top = -0.55 - 0.45 * (1 - smoothstep(0.4, 1.1, u))        # lower toward the mouth
    jaw = (1 - smoothstep(cheek_top, cheek_top + 0.12, v)) * smoothstep(-2.3, -2.0, v) * (1 - smoothstep(1.15, 1.3, u)) * front
    neck = (1 - smoothstep(-2.05, -1.85, v)) * smoothstep(-2.9, -2.6, v) * (1 - smoothstep(0.9, 1.1, u)) \
        * (normals_f[:, 1] < 0.3) * smoothstep(-0.6, -0.3, w)
    side = band(u, 1.0, 1.3, 0.08) * band(v, -0.55, 0.35, 0.1) * band(w, -1.0, -0.35, 0.1)
    return np.stack([smooth(f * keep, 2) for f in (moustache, chin, jaw, neck, side)]).astype(np.float32)


def clothing_band(model: MorphableModel, c: np.ndarray, smooth) -> np.ndarray:
    """(N,) the lowest part of the neck, where a collar or shirt would start (the cut
    neck otherwise reads as an artefact in crops)."""
    v = c[:, 1]
    lowest = float(v.min())
    chin = -1.75
    if lowest > chin - 0.8:   # a face-only mesh (BFM face12): no neck to dress
        return np.zeros(len(c), np.float32)
    neck = region(model, "neck")
    f = 1 - smoothstep(lowest + 0.45, lowest + 0.75, v)
    if neck is not None:
        f = f * smooth(neck | (v < lowest + 0.3), 1)
    return smooth(f, 1).astype(np.float32)


def spot_fields(model: MorphableModel, x_mm: np.ndarray, c: np.ndarray, skin: np.ndarray, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray]:
    """(K, N) skin spot patterns and their kinds (0 freckles, 1 moles, 2 blemishes / redness,
    3 age spots): freckles cluster on the nose and cheeks, the others anywhere on the face."""
    u, v, w = np.abs(c[:, 0]), c[:, 1], c[:, 2]
    face = skin & (w > -0.6) & (v > -2.0) & (v < 1.2)
    cand = np.flatnonzero(face)
    fr_w = np.exp(-(((u - 0.55) / 0.45) ** 2 + ((v + 0.45) / 0.45) ** 2))[cand] + 0.1
    xf = x_mm[cand]
    fields, kinds = [], []
    spec = [(0, 16, 70, 2.2), (1, 12, 3, 1.8), (2, 8, 6, 5.0), (3, 8, 6, 4.0)]   # kind, patterns, spots, sigma mm
    for kind, n_patterns, n_spots, sigma in spec:
        for _ in range(n_patterns):
            if len(cand) == 0:  # no face skin (a toy mesh): nothing to mark
                fields.append(np.zeros(len(c), np.float32))
                kinds.append(kind)
                continue
            p = fr_w / fr_w.sum() if kind == 0 else None
            k = min(n_spots, len(cand))
            centres = x_mm[rng.choice(cand, k, replace=False, p=p)]
            # only where the face is (zero elsewhere); the three squares summed in .sum(-1)'s order
            d2 = ((xf[:, 0, None] - centres[None, :, 0]) ** 2 + (xf[:, 1, None] - centres[None, :, 1]) ** 2) \
                + (xf[:, 2, None] - centres[None, :, 2]) ** 2
            f = np.zeros(len(c), np.float32)
            f[cand] = np.exp(-d2 / (2 * (sigma * rng.uniform(0.7, 1.3, k)) ** 2)).max(1)
            fields.append(f)
            kinds.append(kind)
    return np.stack(fields), np.array(kinds)


def shine_fields(model: MorphableModel, c: np.ndarray, smooth) -> np.ndarray:
    """(2, N) where skin can shine (specular highlights): the front of the face from the
    chin to the top of the forehead, and within it the T-zone (forehead, nose, chin),
    where sebaceous glands are densest and oily skin shows first. Nothing on hair, eyes,
    eyebrows, lips, the mouth, ears and neck: named regions where the model has them,
    ellipses in the face frame where it has none."""
    u, v, w = np.abs(c[:, 0]), c[:, 1], c[:, 2]
    face = band(v, -1.9, 1.45, 0.2) * (1 - smoothstep(0.95, 1.15, u)) * smoothstep(-0.7, -0.35, w)
    for name in ("hair", "eyes", "eyebrows", "lips", "mouth_interior", "teeth", "ears", "neck"):
        r = region(model, name)
        if r is not None:
            face *= 1.0 - smooth(r, 1)
    if region(model, "eyes") is None:  # each eye with its brow, and the mouth
        face *= smoothstep(0.9, 1.1, np.sqrt(((u - 0.5) / 0.32) ** 2 + ((v - 0.1) / 0.3) ** 2))
    if region(model, "lips") is None:
        face *= smoothstep(0.9, 1.1, np.sqrt((u / 0.5) ** 2 + ((v + 1.15) / 0.18) ** 2))
    forehead = band(v, 0.45, 1.45, 0.15) * (1 - smoothstep(0.5, 0.8, u))
    nose = band(v, -0.85, 0.45, 0.1) * (1 - smoothstep(0.2, 0.35, u))   # and the bridge up to the forehead
    chin = band(v, -1.9, -1.4, 0.12) * (1 - smoothstep(0.25, 0.45, u))
    tzone = np.maximum(np.maximum(forehead, nose), chin)
    return np.stack([smooth(face, 2), smooth(face * tzone, 2)]).astype(np.float32)


def lash_field(model: MorphableModel, c: np.ndarray) -> np.ndarray:
    """(N,) the lid margins of each eye opening, full on the upper lid and 0.4 on the lower:
    lashes and lash line as darkened lids (the embedded model's lids are bare skin, which
    reads as a doll's stare). The opening is the ellipse through the eye's corners, top and
    bottom landmarks in the face frame; models without those landmarks get none."""
    out = np.zeros(len(c), np.float32)
    eyes = region(model, "eyes")
    lm = model.landmarks
    for side in ("left", "right"):
        names = [f"{side}.eye.{k}" for k in ("corner_inner", "corner_outer", "top", "bottom")]
        if not all(n in lm for n in names):
            continue
        inner, outer, top, bottom = (c[lm[n]] for n in names)
        centre = (inner + outer) / 2
        across = (outer - inner)[:2]
        half = np.linalg.norm(across) / 2
        ax = across / (2 * half)
        up = np.array([-ax[1], ax[0]]) * np.sign(ax[0]) if ax[0] != 0 else np.array([0.0, 1.0])
        d = c[:, :2] - centre[:2]
        x, y = d @ ax / half, d @ up
        b_top, b_bottom = max((top[:2] - centre[:2]) @ up, 1e-3), max((centre[:2] - bottom[:2]) @ up, 1e-3)
        r = np.sqrt(x ** 2 + (y / np.where(y > 0, b_top, b_bottom)) ** 2)
        band = np.exp(-0.5 * ((r - 1.0) / 0.12) ** 2) * np.where(y > 0, 1.0, 0.4)
        near = np.abs(c[:, 2] - centre[2]) < 0.25                       # on the lids, not behind them
        out = np.maximum(out, (band * near * (r < 1.5)).astype(np.float32))
    if eyes is not None:
        out[eyes] = 0.0
    return out


def catchlight_field(model: MorphableModel, x_mm: np.ndarray, c: np.ndarray) -> np.ndarray:
    """(N,) a small spot on each cornea, up and toward the camera's left of the pupil, where a
    key light's reflection sits in most portraits."""
    eyes = region(model, "eyes")
    out = np.zeros(len(c), np.float32)
    if eyes is None:
        return out
    for side in ("left", "right"):
        name = f"{side}.eye.pupil.center"
        if name not in model.landmarks:
            continue
        target = x_mm[model.landmarks[name]] + np.array([-1.5, 1.5, 0.5])   # mm
        d = np.linalg.norm(x_mm - target, axis=1)
        out = np.maximum(out, (np.exp(-0.5 * (d / 1.2) ** 2) * eyes).astype(np.float32))
    return out


def wrinkle_field(model: MorphableModel, c: np.ndarray, smooth) -> np.ndarray:
    """(N,) where an older face creases, as albedo shading: three or four forehead lines
    (curving up toward the temples) with the two frown lines between the brows, crow's
    feet fanning from each eye's outer corner, and the nasolabial folds from the nose
    wings to past the mouth corners. Lines are 1.5-2 mm wide and then averaged over the
    mesh's one-rings, so a coarse mesh gets soft bands instead of broken ones (the
    embedded model's face vertices are about 2.6 mm apart, BFM's 1-2 mm)."""
    u, v, w = np.abs(c[:, 0]), c[:, 1], c[:, 2]
    front = smoothstep(-0.6, -0.3, w)
    vf = v - 0.12 * u ** 2                                          # lines rise toward the temples
    lines = sum(np.exp(-0.5 * ((vf - k) / 0.03) ** 2) for k in (0.68, 0.86, 1.04, 1.22))
    forehead = lines * (1 - smoothstep(0.5, 0.8, u)) * (1 - smoothstep(1.2, 1.35, v))
    frown = np.exp(-0.5 * ((u - 0.08) / 0.025) ** 2) * band(v, 0.2, 0.5, 0.06)
    r = np.hypot(u - 0.7, v)                                        # from the outer eye corner
    fan = (0.5 + 0.5 * np.cos(np.arctan2(v, u - 0.7) * 9.0)) ** 4
    crow = fan * band(r, 0.08, 0.24, 0.05) * smoothstep(0.7, 0.76, u)
    # the fold: a segment from beside the nose wing to below and outside the mouth corner
    a, b = np.array([0.33, -0.55]), np.array([0.5, -1.25])
    d = b - a
    s = np.clip(((u - a[0]) * d[0] + (v - a[1]) * d[1]) / (d @ d), 0.0, 1.0)
    dist = np.hypot(u - a[0] - s * d[0], v - a[1] - s * d[1])
    fold = np.exp(-0.5 * (dist / 0.035) ** 2) * np.sin(np.pi * np.clip(s * 1.1, 0, 1)) ** 0.5
    f = np.clip(forehead + frown + crow + fold, 0.0, 1.0) * front
    for name in ("eyes", "eyebrows", "lips", "hair", "mouth_interior", "teeth", "ears"):
        reg = region(model, name)
        if reg is not None:
            f = f * (1.0 - smooth(reg, 1))
    return np.clip(smooth(f, 1), 0.0, 1.0).astype(np.float32)


def pore_fields(on: np.ndarray, n: int, smooth, rng: np.random.Generator, k: int = 8) -> np.ndarray:
    """(k, len(on)) unit-variance noise patterns over the vertices `on` (the face's skin):
    fine skin texture (pores, fine lines, uneven tone) as the mesh can carry it. Each is
    white noise per vertex plus its one-ring average, so the texture has grain at the
    vertex spacing and a little at twice it. Through the albedo, its scale is the mesh's:
    about 2.6 mm between the embedded model's vertices, 1-2 mm on BFM; true sub-millimetre
    pores would need a per-pixel pass, and at the sizes networks train on (1.5-2.5 mm a
    pixel at 64-112 px crops) they fall under one pixel anyway."""
    white = rng.standard_normal((n, k))
    f = (0.6 * white + 0.8 * smooth(white, 1))[on]
    f = (f - f.mean(0)) / np.maximum(f.std(0), 1e-9)
    return np.ascontiguousarray(np.clip(f, -2.5, 2.5).T, np.float32)
