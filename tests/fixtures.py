"""Writers of small files in the exact layouts of the Basel Face Models and the Basel
Illumination Prior, for tests (the real files cannot be shipped). Each writer returns the
ground truth it wrote, in morphgen's conventions (mm, colours in [0, 1], 0-based,
outward triangles), so tests compare the loaders against it.

Not part of the library: the layouts are written here in one place.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from morphgen.render.synthetic import SyntheticFace, icosphere as _unit_icosphere

FIVE_POINT_NAMES = (
    "right.eye.corner_outer",
    "right.eye.corner_inner",
    "left.eye.corner_outer",
    "left.eye.corner_inner",
    "center.nose.tip",
    "right.lips.corner",
    "left.lips.corner",
)

# Landmark directions on the fixture sphere (y up, +z toward the viewer). BFM's "left" is
# the subject's left, at +x.
LANDMARK_DIRECTIONS = {
    "center.nose.tip": (0.0, 0.0, 1.0),
    "left.eye.corner_outer": (0.62, 0.40, 0.68),
    "left.eye.corner_inner": (0.22, 0.38, 0.90),
    "right.eye.corner_outer": (-0.62, 0.40, 0.68),
    "right.eye.corner_inner": (-0.22, 0.38, 0.90),
    "left.lips.corner": (0.35, -0.50, 0.79),
    "right.lips.corner": (-0.35, -0.50, 0.79),
    "center.chin.tip": (0.0, -0.85, 0.53),
    "left.ear.lobule.attachement": (1.0, -0.1, 0.0),
}

RADIUS_MM = 80.0


# ---- geometry -------------------------------------------------------------------------
def icosphere(subdivisions: int = 2, radius: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (N, 3) and triangles (T, 3), counter-clockwise seen from outside.
    N = 12, 42, 162, 642 for 0..3 subdivisions."""
    vertices, triangles = _unit_icosphere(subdivisions)
    return vertices * radius, triangles


def face_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    return np.cross(v[triangles[:, 1]] - v[triangles[:, 0]], v[triangles[:, 2]] - v[triangles[:, 0]])


def random_orthonormal(rng: np.random.Generator, rows: int, k: int) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((rows, k)))
    return q


def _landmarks(vertices: np.ndarray, names) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Coordinates 0.5 mm outside the vertex nearest to each direction, and that vertex."""
    coords, expected = {}, {}
    unit = vertices / np.linalg.norm(vertices, axis=1, keepdims=True)
    for name in names:
        d = np.asarray(LANDMARK_DIRECTIONS[name], dtype=np.float64)
        d /= np.linalg.norm(d)
        i = int((unit @ d).argmax())
        expected[name] = i
        coords[name] = (vertices[i] + 0.5 * unit[i]).tolist()
    return coords, expected


def smooth_orthonormal(rng: np.random.Generator, points: np.ndarray, k: int) -> np.ndarray:
    """(3N, k) orthonormal columns that are smooth displacement fields over ``points`` (N,
    3) mm: random mixes of slow cosine waves (periods 40 to 400 mm), as a real model's
    components deform a face smoothly."""
    freq = rng.uniform(1.0 / 400.0, 1.0 / 40.0, (4 * k, 1)) * rng.normal(size=(4 * k, 3))
    waves = np.cos(2 * np.pi * points @ freq.T + rng.uniform(0, 2 * np.pi, 4 * k))  # (N, 4k)
    fields = np.einsum("nw,wkc->nck", waves, rng.normal(size=(4 * k, k, 3))).reshape(3 * len(points), k)
    return np.linalg.qr(fields)[0]


def _pca_truth(mean: np.ndarray, basis: np.ndarray, var_scale: float, rng: np.random.Generator) -> dict:
    k = basis.shape[1]
    return {
        "mean": mean.astype(np.float32),
        "basis": basis.astype(np.float32),
        "variance": (var_scale * np.sort(rng.uniform(0.2, 1.0, k))[::-1]).astype(np.float32),
    }


# ---- BFM 2017 / 2019 ------------------------------------------------------------------
def write_bfm2017_fixture(
    path: str | Path,
    *,
    subdivisions: int = 2,
    n_shape: int = 10,
    n_color: int = 8,
    n_expression: int = 5,
    landmarks: str | None = "json",
    landmark_names=tuple(LANDMARK_DIRECTIONS),
    version: tuple[int, int] | None = (0, 9),
    legacy_scaled_basis: bool = False,
    inward_cells: bool = False,
    seed: int = 0,
    mesh: SyntheticFace | None = None,
) -> dict:
    """Write a BFM 2017 "MoMo" HDF5 file on an icosphere of radius 80 mm.

    n_expression=0 leaves out /expression; landmarks is "json", "text" (legacy) or None;
    version None writes no version datasets; legacy_scaled_basis stores U * sqrt(var) (as
    format 0.8 did); inward_cells writes clockwise (inward-facing) triangles. ``mesh``
    replaces the icosphere by a synthetic face (e.g. ``synthetic_face_grid()``: a file of
    BFM face12's size for speed measurements) with its own landmarks and albedo, and
    smooth bases and expression mean like a real model's (random ones would make every
    face a rough surface: a different picture, and thousands of silhouette edges).
    """
    import h5py

    rng = np.random.default_rng(seed)
    if mesh is None:
        vertices, triangles = icosphere(subdivisions, RADIUS_MM)
        n = len(vertices)
        basis = lambda k: random_orthonormal(rng, 3 * n, k)  # noqa: E731
        color_mean = lambda: rng.uniform(0.3, 0.7, 3 * n)  # noqa: E731
        expression_mean = lambda: rng.normal(0.0, 0.5, 3 * n)  # noqa: E731
    else:
        vertices, triangles = mesh.vertices.astype(np.float64), mesh.triangles
        basis = lambda k: smooth_orthonormal(rng, vertices, k)  # noqa: E731
        color_mean = lambda: mesh.albedo.ravel()  # noqa: E731
        expression_mean = lambda: 20.0 * smooth_orthonormal(rng, vertices, 1)[:, 0]  # noqa: E731
    n = len(vertices)
    truth = {"points": vertices.astype(np.float32), "triangles": triangles}
    truth["shape"] = _pca_truth(vertices.ravel(), basis(n_shape), 25.0, rng)
    truth["color"] = _pca_truth(color_mean(), basis(n_color), 0.01, rng)
    if n_expression:
        truth["expression"] = _pca_truth(expression_mean(), basis(n_expression), 4.0, rng)
    cells = triangles[:, [0, 2, 1]] if inward_cells else triangles

    with h5py.File(path, "w") as f:
        if version is not None:
            f["/version/majorVersion"] = np.int32(version[0])
            f["/version/minorVersion"] = np.int32(version[1])
        for entry, mtype in (("MorphableModel", "CUSTOM_MODEL"), ("MorphableModel.shape", "POLYGON_MESH_MODEL"),
                             ("MorphableModel.color", "POLYGON_MESH_DATA_MODEL")):
            f[f"/catalog/{entry}/modelType"] = mtype
        for group, rep_name in (("shape", "gravis::MeshShapeRepresenter"), ("color", "gravis::MeshColorRepresenter"),
                                ("expression", "gravis::MeshExpressionRepresenter")):
            if group not in truth:
                continue
            t = truth[group]
            g = f.create_group(group)
            if version is not None:
                g["version/majorVersion"] = np.int32(version[0])
                g["version/minorVersion"] = np.int32(version[1])
            basis = t["basis"] * np.sqrt(t["variance"])[None, :] if legacy_scaled_basis else t["basis"]
            g["model/mean"] = t["mean"].astype(np.float32)
            g["model/pcaBasis"] = basis.astype(np.float32)
            g["model/pcaVariance"] = t["variance"].astype(np.float32)
            g["model/noiseVariance"] = np.array([0.0], dtype=np.float32)
            g["modelinfo/build-time"] = "fixture"
            rep = g.create_group("representer")
            rep.attrs["name"] = rep_name
            rep.attrs["datasetType"] = "POLYGON_MESH"
            rep["points"] = vertices.T.astype(np.float32)  # (3, N)
            rep["cells"] = cells.T.astype(np.int32)  # (3, T), 0-based
            if group == "color":
                rep["colorspace"] = np.bytes_(b"RGB\x00")
        coords, expected = (_landmarks(vertices, landmark_names) if mesh is None else
                            ({k: vertices[i].tolist() for k, i in mesh.landmarks.items()}, dict(mesh.landmarks)))
        if landmarks == "json":
            doc = [{"id": k, "coordinates": v, "uncertainty": {"mean": [0, 0, 0]}} for k, v in coords.items()]
            f["/metadata/landmarks/json"] = json.dumps(doc)  # variable-length UTF-8 string
        elif landmarks == "text":
            lines = "".join(f"{k} 1 {v[0]:.6f} {v[1]:.6f} {v[2]:.6f}\n" for k, v in coords.items())
            f["/metadata/landmarks/text"] = np.bytes_(lines.encode())  # fixed-length string
        elif landmarks is not None:
            raise ValueError(landmarks)
    truth["landmark_coordinates"] = coords if landmarks else {}
    truth["landmark_vertices"] = expected if landmarks else {}
    return truth


def replace_dataset(path: str | Path, key: str, data) -> None:
    """Overwrite (or create) one dataset of an HDF5 file."""
    import h5py

    with h5py.File(path, "r+") as f:
        if key in f:
            del f[key]
        f[key] = data


def delete_entry(path: str | Path, key: str) -> None:
    import h5py

    with h5py.File(path, "r+") as f:
        del f[key]


# ---- BFM 2009 -------------------------------------------------------------------------
_MAT73_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."


def write_bfm2009_fixture(
    path: str | Path,
    *,
    fmt: str = "v5",
    subdivisions: int = 2,
    n_shape: int = 10,
    n_tex: int = 8,
    inward: bool = True,
    seed: int = 1,
) -> dict:
    """Write ``01_MorphableModel.mat``-style data: micrometres, EV standard deviations,
    texture 0..255, 1-based (T, 3) ``tl``. fmt "v5" (scipy.io.savemat) or "v7.3" (HDF5 with
    a 512-byte MATLAB user block, arrays transposed). inward=True writes clockwise
    triangles so that the loader has to orient them."""
    rng = np.random.default_rng(seed)
    vertices, triangles = icosphere(subdivisions, RADIUS_MM)
    n = len(vertices)
    shape_basis = random_orthonormal(rng, 3 * n, n_shape)
    shape_std_um = 1000.0 * np.sort(rng.uniform(2.0, 6.0, n_shape))[::-1]
    tex_basis = random_orthonormal(rng, 3 * n, n_tex)
    tex_std = np.sort(rng.uniform(5.0, 20.0, n_tex))[::-1]
    tex_mean = rng.uniform(60.0, 200.0, 3 * n)
    tl = (triangles[:, [0, 2, 1]] if inward else triangles) + 1
    data = {
        "shapeMU": (vertices.ravel() * 1000.0)[:, None],
        "shapePC": shape_basis,
        "shapeEV": shape_std_um[:, None],
        "texMU": tex_mean[:, None],
        "texPC": tex_basis,
        "texEV": tex_std[:, None],
        "tl": tl.astype(np.float64),
    }
    if fmt == "v5":
        import scipy.io

        scipy.io.savemat(str(path), data, format="5")
    elif fmt == "v7.3":
        import h5py

        with h5py.File(path, "w", userblock_size=512) as f:
            for k, v in data.items():
                ds = f.create_dataset(k, data=np.ascontiguousarray(v.T))  # MATLAB column-major
                ds.attrs["MATLAB_class"] = np.bytes_(b"double")
        with open(path, "r+b") as fh:
            header = _MAT73_HEADER.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02IM"
            fh.write(header)
    else:
        raise ValueError(fmt)
    return {
        "points": vertices,
        "triangles": triangles,  # outward
        "shape": {"mean": vertices.ravel(), "basis": shape_basis, "variance": (shape_std_um / 1000.0) ** 2},
        "color": {"mean": tex_mean / 255.0, "basis": tex_basis, "variance": (tex_std / 255.0) ** 2},
        "raw": data,
    }


# ---- Basel Illumination Prior ---------------------------------------------------------
_JZ_TO_SH = (0, 2, 3, 1, 7, 5, 4, 6, 8)


def random_sh(rng: np.random.Generator, m: int) -> np.ndarray:
    """(m, 9, 3) plausible SH lights: strong positive DC, weaker higher bands."""
    c = rng.normal(0.0, 0.15, (m, 9, 3))
    c[:, 0] += rng.uniform(0.8, 1.2, (m, 1))
    c[:, 2] += rng.uniform(0.1, 0.4, (m, 1))
    return c


def rps_document(coeffs: np.ndarray, form: str = "v4") -> dict:
    """A scalismo-faces render-parameter document holding the SH light ``coeffs`` (9, 3).

    form "v4"/"v3": "environmentMap"; "v2": "illumination"; "v1": legacy
    "sphericalHarmonicsLight" in the jz coefficient order.
    """
    c = np.asarray(coeffs, dtype=np.float64).reshape(9, 3)
    pose = {"scaling": 1.0, "translation": [0.0, 0.0, -1000.0], "roll": 0.0, "yaw": 0.1, "pitch": -0.05}
    camera = {"far": 1e6, "focalLength": 50.0, "near": 10.0, "orthographic": False, "pitch": 0.0,
              "principalPoint": [0.0, 0.0], "roll": 0.0, "sensorSize": [15.0, 15.0], "skewFactor": 1.0,
              "translation": [0.0, 0.0, 0.0], "yaw": 0.0}
    dirlight = {"ambient": [0.0, 0.0, 0.0], "diffuse": [0.0, 0.0, 0.0], "direction": [0.0, 0.0, 1.0],
                "specular": [0.0, 0.0, 0.0], "shininess": 10.0}
    if form in ("v3", "v4"):
        return {
            "pose": pose,
            "view": {"translation": [0.0, 0.0, 0.0], "pitch": 0.0, "yaw": 0.0, "roll": 0.0},
            "camera": {"focalLength": 50.0, "principalPoint": [0.0, 0.0], "sensorSize": [15.0, 15.0],
                       "near": 10.0, "far": 1e6, "orthographic": False},
            "environmentMap": {"@type": "SphericalHarmonicsLight", "coefficients": c.tolist()},
            "directionalLight": {**dirlight, "@type": "DirectionalLight"},
            "momo": {"shape": [0.1, -0.2], "color": [0.3], "expression": [], "modelURI": "file:model.h5",
                     "@type": "MoMoExpressInstance"},
            "imageSize": {"width": 227, "height": 227},
            "colorTransform": {"gain": [1.0, 1.0, 1.0], "colorContrast": 1.0, "offset": [0.0, 0.0, 0.0]},
            "version": "V4.0" if form == "v4" else "V3.0",
        }
    if form == "v2":
        return {
            "pose": pose,
            "camera": camera,
            "illumination": {"coefficients": c.tolist(), "@type": "SphericalHarmonicsLight"},
            "renderObject": {"shape": [0.1], "color": [0.2], "expression": [], "modelURI": "file:model.h5",
                             "@type": "MoMoExpressInstance"},
            "image": {"height": 227, "width": 227},
            "color": {"gain": [1.0, 1.0, 1.0], "colorContrast": 1.0, "offset": [0.0, 0.0, 0.0]},
            "version": "V2.0",
        }
    if form == "v1":
        jz = np.zeros_like(c)
        jz[list(_JZ_TO_SH)] = c  # ours[i] = jz[_JZ_TO_SH[i]]
        return {
            "camera": camera,
            "color": {"gain": [1.0, 1.0, 1.0], "gamma": 1.0, "offset": [0.0, 0.0, 0.0]},
            "directionalLight": {k: v for k, v in dirlight.items() if k != "shininess"},
            "image": [227, 227],
            "morphableModel": {"shapeCoefficients": [0.1], "colorCoefficients": [0.2],
                               "modelURI": "file:model.h5", "shininess": 10.0},
            "pose": pose,
            "sphericalHarmonicsLight": jz.tolist(),
        }
    raise ValueError(form)


def write_bip_folder(
    folder: str | Path,
    coeffs: np.ndarray,
    forms=("v4", "v2", "v1"),
    *,
    nested: bool = True,
    bad_files: int = 0,
) -> list[Path]:
    """Write one .rps per light (cycling through ``forms``), some in sub-folders, plus
    ``bad_files`` unreadable ones (invalid JSON, a directional-light-only file...).
    Returns the good files in the order load_bip reads them (sorted relative paths)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for i, c in enumerate(np.asarray(coeffs)):
        sub = folder / f"part{i % 2}" if nested else folder
        sub.mkdir(exist_ok=True)
        p = sub / f"light_{i:04d}.rps"
        p.write_text(json.dumps(rps_document(c, forms[i % len(forms)]), indent=1))
        written.append(p)
    bad = [
        ("broken.rps", "{ this is not json"),
        ("directional_only.rps", json.dumps({"illumination": {"@type": "DirectionalLight", "ambient": [1, 1, 1],
                                                               "diffuse": [0, 0, 0], "direction": [0, 0, 1],
                                                               "specular": [0, 0, 0], "shininess": 10}})),
        ("empty_env.rps", json.dumps({"environmentMap": {"@type": "SphericalHarmonicsLight", "coefficients": []}})),
        ("wrong_shape.rps", json.dumps({"environmentMap": {"coefficients": [[1, 2], [3, 4]]}})),
    ]
    for name, text in bad[:bad_files]:
        (folder / name).write_text(text)
    (folder / "notes.txt").write_text("not an rps file")
    return sorted(written, key=lambda p: p.relative_to(folder).as_posix())
