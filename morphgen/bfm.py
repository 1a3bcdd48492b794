"""Loaders for the Basel Face Models into :class:`morphgen.model.MorphableModel`.

* :func:`load_bfm2017` reads the statismo/scalismo "MoMo" HDF5 layout used by BFM 2017
  (``model2017-1_bfm_nomouth.h5``, ``model2017-1_face12_nomouth.h5``) and BFM 2019::

      /version/{majorVersion, minorVersion}        (also /<group>/version/...)
      /shape | /color | /expression
          model/mean (3N,)  model/pcaBasis (3N, K)  model/pcaVariance (K,)  model/noiseVariance
          representer/points (3, N)  representer/cells (3, T)   (0-based)
      /metadata/landmarks/json   JSON list of {"id": ..., "coordinates": [x, y, z]}
      /metadata/landmarks/text   legacy lines "name visible x y z"

  Format version 0.8 stored ``U * sqrt(variance)`` as the basis; its columns are
  normalised here (as scalismo-faces does). The expression group is optional.

* :func:`load_bfm2009` reads ``01_MorphableModel.mat`` (MATLAB v5 through scipy, or v7.3,
  which is HDF5 with transposed arrays): shapeMU/shapePC/shapeEV in micrometres with EV
  standard deviations, texMU/texPC/texEV in 0..255, ``tl`` 1-based triangles. It becomes
  millimetres, variances, colours in [0, 1] and 0-based triangles; it has no landmarks
  and no expression model. Its axes are those of BFM 2017 (y up, +z toward the viewer).

Both loaders orient the triangles counter-clockwise seen from outside (outward normals,
see :func:`orient_outward`) and check every array, raising :class:`ModelError` with a
one-line message that names the file and the dataset at fault.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from .errors import ModelError
from .model import MorphableModel, PCAModel, gram, sha256_file

# Tolerance on |B^T B - I| for the PCA bases (float32 files; BFM 2017 is well within 1e-4).
ORTHONORMAL_TOL = 1e-2
# The reference mesh (representer points) and the shape mean must agree to this fraction of
# the mesh's bounding-box diagonal (RMS). A reference may be a template rather than the exact
# mean, so this is loose: it catches a wrong layout (planar instead of interleaved, mm vs m).
REFERENCE_MEAN_TOL = 0.2

_BFM2017_HINT = "expected a BFM 2017/2019 'MoMo' HDF5 model such as model2017-1_bfm_nomouth.h5"
_BFM2009_HINT = "expected the BFM 2009 file 01_MorphableModel.mat"


# --------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------
def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _check_file(path: Path, hint: str) -> None:
    if not path.exists():
        raise ModelError(f"model file {path} does not exist: check the path ({hint})")
    if path.is_dir():
        raise ModelError(f"{path} is a folder: give the model file itself ({hint})")


def _check_finite(fname: str, where: str, arr: np.ndarray) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ModelError(
            f"{fname}: {where} contains {int(bad.sum())} NaN or infinite values: the file is corrupt, download it again"
        )


def _check_orthonormal(fname: str, where: str, basis: np.ndarray) -> None:
    """Raise unless the columns of ``basis`` are orthonormal within ORTHONORMAL_TOL."""
    k = basis.shape[1]
    if k == 0:
        return
    g = gram(basis)
    dev = np.abs(g - np.eye(k))
    err = float(dev.max())
    if err > ORTHONORMAL_TOL:
        i, j = np.unravel_index(int(dev.argmax()), dev.shape)
        what = f"column {i} has squared norm {g[i, i]:.4g}" if i == j else f"columns {i} and {j} have dot product {g[i, j]:.4g}"
        raise ModelError(
            f"{fname}: {where} columns are not orthonormal (max |B^T B - I| = {err:.3g}: {what}); "
            "the file is corrupt or not a Basel Face Model"
        )


def _column_norms(basis: np.ndarray, rows: int = 16384) -> np.ndarray:
    """Euclidean norm of each column, accumulated in float64 a block of rows at a time."""
    sq = np.zeros(basis.shape[1], dtype=np.float64)
    for start in range(0, basis.shape[0], rows):
        block = basis[start:start + rows].astype(np.float64)
        sq += np.einsum("ij,ij->j", block, block)
    return np.sqrt(sq)


def _columns_scaled_by(basis: np.ndarray, std: np.ndarray) -> bool:
    """True when the column norms match ``std`` (a basis stored as U * std) rather than 1."""
    norms = _column_norms(basis)
    if norms.size == 0 or np.allclose(norms, 1.0, atol=1e-2):
        return False
    std = np.asarray(std, dtype=np.float64)
    return bool(np.all(std > 0) and np.allclose(norms, std, rtol=2e-2))


def _normalise_columns(basis: np.ndarray) -> np.ndarray:
    norms = _column_norms(basis)
    norms[norms == 0] = 1.0
    return (basis / norms.astype(basis.dtype)).astype(np.float32)


def orient_outward(vertices: np.ndarray, triangles: np.ndarray) -> tuple[np.ndarray, bool]:
    """Return triangles wound counter-clockwise seen from outside, and whether they were flipped.

    The mesh is assumed consistently wound (true of the Basel models); its orientation is
    decided by the signed volume of the cones from the vertex centroid to every triangle,
    which is positive for outward normals on a closed mesh and on a shell that bulges
    away from its centroid, such as a face mask. Only the order within each triangle changes.
    """
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    t = np.asarray(triangles)
    if t.size == 0:
        return t.astype(np.int32), False
    c = v.mean(axis=0)
    a, b, d = v[t[:, 0]] - c, v[t[:, 1]] - c, v[t[:, 2]] - c
    volume = float(np.einsum("ij,ij->", a, np.cross(b, d)))
    if volume < 0:
        return np.ascontiguousarray(t[:, [0, 2, 1]]).astype(np.int32), True
    return np.ascontiguousarray(t).astype(np.int32), False


# A landmark of a model's metadata is a point picked on its mean face (BFM 2017: within a
# millimetre of a vertex); one this far from every vertex was picked on another mesh or unit.
FAR_LANDMARK_MM = 10.0


def _nearest_vertices(points: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of and distance to the nearest row of ``points`` (N, 3) for each query (L, 3)."""
    idx = np.empty(len(queries), dtype=np.int64)
    dist = np.empty(len(queries), dtype=np.float64)
    p = points.astype(np.float64)
    for start in range(0, len(queries), 16):
        q = queries[start:start + 16].astype(np.float64)
        d2 = ((q[:, None, :] - p[None, :, :]) ** 2).sum(-1)
        i = d2.argmin(axis=1)
        idx[start:start + 16] = i
        dist[start:start + 16] = np.sqrt(d2[np.arange(len(q)), i])
    return idx, dist


# --------------------------------------------------------------------------------------
# BFM 2017 / 2019
# --------------------------------------------------------------------------------------
def _read_string(value) -> str:
    """An HDF5 string dataset's value (bytes, str, or an array of them) as str."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind in ("S", "O", "U"):
            parts = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in value.ravel()]
            return "".join(parts).rstrip("\x00")
        if value.dtype.kind in ("u", "i"):  # stored as a byte array
            return bytes(value.astype(np.uint8).ravel()).decode("utf-8", "replace").rstrip("\x00")
        value = value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").rstrip("\x00")
    return str(value).rstrip("\x00")


class _H5:
    """Dataset access on an open h5py file with ModelErrors that name the file and path."""

    def __init__(self, f, fname: str):
        self.f = f
        self.fname = fname

    def has(self, key: str) -> bool:
        return key in self.f

    def dataset(self, key: str):
        import h5py

        if key not in self.f:
            raise ModelError(f"{self.fname}: missing {key} ({_BFM2017_HINT})")
        obj = self.f[key]
        if not isinstance(obj, h5py.Dataset):
            raise ModelError(f"{self.fname}: {key} is a group, expected a dataset ({_BFM2017_HINT})")
        return obj

    def array(self, key: str, dtype=np.float32) -> np.ndarray:
        ds = self.dataset(key)
        try:
            return np.asarray(ds[()], dtype=dtype)
        except (TypeError, ValueError) as exc:
            raise ModelError(f"{self.fname}: {key} is not numeric ({_one_line(exc)})") from None

    def version(self, group: str) -> tuple[int, int] | None:
        for base in (f"/{group}/version", "/version"):
            if f"{base}/majorVersion" in self.f and f"{base}/minorVersion" in self.f:
                try:
                    major = int(np.asarray(self.f[f"{base}/majorVersion"][()]).ravel()[0])
                    minor = int(np.asarray(self.f[f"{base}/minorVersion"][()]).ravel()[0])
                except (TypeError, ValueError, IndexError):
                    raise ModelError(f"{self.fname}: {base}/majorVersion or minorVersion is not an integer") from None
                return major, minor
        return None


def _read_pca_2017(h: _H5, group: str, n3: int | None) -> tuple[PCAModel, dict]:
    """Read /<group>/model/* and check it; ``n3`` is 3N of the shape model (None for shape)."""
    fname = h.fname
    base = f"/{group}/model"
    if f"/{group}" not in h.f:
        raise ModelError(f"{fname}: missing group /{group} ({_BFM2017_HINT})")
    mean = h.array(f"{base}/mean").ravel()
    basis = h.array(f"{base}/pcaBasis")
    variance = h.array(f"{base}/pcaVariance").ravel()
    noise = 0.0
    if h.has(f"{base}/noiseVariance"):
        nv = h.array(f"{base}/noiseVariance").ravel()
        noise = float(nv[0]) if nv.size else 0.0

    if mean.size % 3:
        raise ModelError(f"{fname}: {base}/mean has {mean.size} values, not a multiple of 3 (x, y, z per vertex)")
    if basis.ndim != 2:
        raise ModelError(f"{fname}: {base}/pcaBasis has shape {basis.shape}, expected (3N, K)")
    if basis.shape[0] != mean.size:
        raise ModelError(f"{fname}: {base}/pcaBasis has 3N={basis.shape[0]} rows but {base}/mean has 3N={mean.size}")
    if n3 is not None and mean.size != n3:
        raise ModelError(f"{fname}: {base}/pcaBasis has 3N={mean.size} rows but /shape has 3N={n3}")
    if variance.size != basis.shape[1]:
        raise ModelError(
            f"{fname}: {base}/pcaVariance has {variance.size} values but {base}/pcaBasis has K={basis.shape[1]} columns"
        )
    for key, arr in (("mean", mean), ("pcaBasis", basis), ("pcaVariance", variance)):
        _check_finite(fname, f"{base}/{key}", arr)
    if np.any(variance < 0):
        raise ModelError(f"{fname}: {base}/pcaVariance has negative entries: the file is corrupt, download it again")

    info: dict = {}
    version = h.version(group)
    legacy = False
    if version is None:
        # scalismo reads a file without version as 0.8; normalise only a basis that is scaled.
        legacy = _columns_scaled_by(basis, np.sqrt(variance))
    elif version == (0, 8):
        legacy = True
    elif not (version == (0, 9) or version[0] >= 1):
        raise ModelError(
            f"{fname}: unsupported MoMo format version {version[0]}.{version[1]} for /{group}; "
            "morphgen reads versions 0.8, 0.9 and 1.x"
        )
    if legacy:
        basis = _normalise_columns(basis)
        info["legacy_basis_normalised"] = True
    if version is not None:
        info["version"] = f"{version[0]}.{version[1]}"
    _check_orthonormal(fname, f"{base}/pcaBasis", basis)
    return PCAModel(mean=mean.astype(np.float32), basis=np.ascontiguousarray(basis, dtype=np.float32),
                    variance=variance.astype(np.float32), noise_variance=noise), info


def _read_representer(h: _H5, group: str, n: int, required: bool) -> tuple[np.ndarray, np.ndarray] | None:
    """(points (N, 3), cells (T, 3)) of /<group>/representer; None if absent and not required."""
    fname = h.fname
    rep = f"/{group}/representer"
    if h.has(f"{rep}/points"):
        pts = h.array(f"{rep}/points")
        if pts.ndim != 2 or pts.shape[0] != 3:
            raise ModelError(f"{fname}: {rep}/points has shape {pts.shape}, expected (3, N)")
        pts = pts.T
        cells_key = f"{rep}/cells"
        cells = h.array(cells_key, dtype=np.float64) if h.has(cells_key) else None
        if cells is not None:
            if cells.ndim != 2 or cells.shape[0] != 3:
                raise ModelError(f"{fname}: {cells_key} has shape {cells.shape}, expected (3, T)")
            cells = cells.T
    elif h.has(f"{rep}/reference-mesh/vertex-coordinates"):  # legacy gravis representer
        pts = h.array(f"{rep}/reference-mesh/vertex-coordinates")
        cells_key = f"{rep}/reference-mesh/triangle-list"
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise ModelError(f"{fname}: {rep}/reference-mesh/vertex-coordinates has shape {pts.shape}, expected (N, 3)")
        cells = h.array(cells_key, dtype=np.float64) if h.has(cells_key) else None
        if cells is not None and (cells.ndim != 2 or cells.shape[1] != 3):
            raise ModelError(f"{fname}: {cells_key} has shape {cells.shape}, expected (T, 3)")
    else:
        if required:
            raise ModelError(f"{fname}: missing {rep}/points, the reference mesh ({_BFM2017_HINT})")
        return None
    if pts.shape[0] != n:
        raise ModelError(f"{fname}: {rep}/points has N={pts.shape[0]} vertices but /shape/model/mean has N={n}")
    _check_finite(fname, f"{rep}/points", pts)
    if cells is None:
        if required:
            raise ModelError(f"{fname}: missing {cells_key}, the triangles ({_BFM2017_HINT})")
        return pts, None
    _check_finite(fname, cells_key, cells)
    if cells.size and np.any(cells != np.round(cells)):
        raise ModelError(f"{fname}: {cells_key} holds non-integer vertex indices")
    cells = cells.astype(np.int64)
    if cells.size and (cells.min() < 0 or cells.max() >= n):
        raise ModelError(
            f"{fname}: {cells_key} has vertex indices {cells.min()}..{cells.max()} but the mesh has {n} vertices (0..{n - 1})"
        )
    return pts, cells


def _read_landmarks_2017(h: _H5, points: np.ndarray) -> tuple[dict[str, int], dict]:
    fname = h.fname
    names: list[str] = []
    coords: list[list[float]] = []
    source = None
    if h.has("/metadata/landmarks/json"):
        source = "json"
        key = "/metadata/landmarks/json"
        text = _read_string(h.dataset(key)[()])
        try:
            items = json.loads(text)
            if isinstance(items, dict):  # tolerate {"landmarks": [...]} or {name: coords}
                items = items.get("landmarks", [{"id": k, "coordinates": v} for k, v in items.items()])
            for item in items:
                xyz = [float(c) for c in item["coordinates"]]
                if len(xyz) != 3:
                    raise ValueError(f"landmark {item['id']!r} has {len(xyz)} coordinates")
                names.append(str(item["id"]))
                coords.append(xyz)
        except (ValueError, KeyError, TypeError, OverflowError) as exc:
            raise ModelError(
                f"{fname}: {key} is not a JSON list of {{\"id\", \"coordinates\"}} landmarks ({_one_line(exc)})"
            ) from None
    elif h.has("/metadata/landmarks/text"):
        source = "text"
        key = "/metadata/landmarks/text"
        text = _read_string(h.dataset(key)[()])
        for lineno, line in enumerate(text.splitlines(), 1):
            fields = line.split()
            if not fields:
                continue
            try:
                if len(fields) != 5:
                    raise ValueError(f"{len(fields)} fields")
                coords.append([float(fields[2]), float(fields[3]), float(fields[4])])
                int(fields[1])
                names.append(fields[0])
            except ValueError as exc:
                raise ModelError(
                    f"{fname}: {key} line {lineno} is not 'name visible x y z' ({_one_line(exc)}): {line.strip()[:60]!r}"
                ) from None
    info = {"landmark_source": source}
    if not names:
        return {}, info
    xyz = np.asarray(coords, dtype=np.float64)
    if not np.all(np.isfinite(xyz)):
        raise ModelError(f"{fname}: /metadata/landmarks/{source} has NaN or infinite coordinates")
    idx, dist = _nearest_vertices(points, xyz)
    info["landmark_max_distance_mm"] = round(float(dist.max()), 4)
    far = dist > FAR_LANDMARK_MM
    if far.any():  # picked on another mesh, or in metres: snapping would silently misplace them
        worst = int(dist.argmax())
        warnings.warn(f"{fname}: {int(far.sum())} of {len(names)} landmarks in /metadata/landmarks/{source} lie over "
                      f"{FAR_LANDMARK_MM:g} mm from the mean face (the farthest, {names[worst]!r}, {dist[worst]:.1f} mm) "
                      f"and are taken at its nearest vertex; if they belong to another mesh, give --landmarks FILE "
                      f"(`morphgen model landmarks` finds them)", stacklevel=2)
    return {n: int(i) for n, i in zip(names, idx)}, info


def load_bfm2017(path: str | Path) -> MorphableModel:
    """Load a BFM 2017 or 2019 model (MoMo HDF5 layout) as a checked MorphableModel."""
    import h5py

    path = Path(path)
    _check_file(path, _BFM2017_HINT)
    fname = path.name
    if not h5py.is_hdf5(path):
        raise ModelError(f"{fname}: not an HDF5 file (a truncated download or another format?): download it again; {_BFM2017_HINT}")
    try:
        with h5py.File(path, "r") as f:
            h = _H5(f, fname)
            for group in ("shape", "color"):
                if f"/{group}" not in f:
                    raise ModelError(f"{fname}: missing group /{group} ({_BFM2017_HINT})")
            shape, shape_info = _read_pca_2017(h, "shape", None)
            n3 = shape.mean.size
            n = n3 // 3
            points, cells = _read_representer(h, "shape", n, required=True)
            color, color_info = _read_pca_2017(h, "color", n3)
            expression, expr_info = None, {}
            if "/expression" in f:
                expression, expr_info = _read_pca_2017(h, "expression", n3)
            for group in ("color", "expression"):
                if group == "expression" and expression is None:
                    continue
                other = _read_representer(h, group, n, required=False)
                if other is not None and not np.allclose(other[0], points, atol=1e-3, rtol=1e-5):
                    raise ModelError(
                        f"{fname}: /{group}/representer/points differ from /shape/representer/points; "
                        "the models do not share a mesh"
                    )
            landmarks, lm_info = _read_landmarks_2017(h, points)
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 (h5py raises OSError, KeyError, RuntimeError... on a damaged file)
        raise ModelError(f"{fname}: cannot read the HDF5 file (truncated or corrupt?), download it again: "
                         f"{exc.__class__.__name__}: {_one_line(exc)}") from None

    mean_pts = shape.mean.reshape(-1, 3).astype(np.float64)
    extent = float(np.linalg.norm(points.max(0) - points.min(0))) if n else 0.0
    rms = float(np.sqrt(((mean_pts - points) ** 2).sum(1).mean())) if n else 0.0
    if extent > 0 and rms > REFERENCE_MEAN_TOL * extent:
        raise ModelError(
            f"{fname}: /shape/representer/points and /shape/model/mean disagree (RMS {rms:.3g} over a mesh of size "
            f"{extent:.3g}); the mean should be interleaved x0 y0 z0 x1 ... in the frame of the reference mesh"
        )
    triangles, flipped = orient_outward(mean_pts, cells)
    metadata = {
        "format": "bfm2017",
        "triangles_flipped": flipped,
        **lm_info,
        **{f"shape_{k}": v for k, v in shape_info.items()},
        **{f"color_{k}": v for k, v in color_info.items()},
        **{f"expression_{k}": v for k, v in expr_info.items()},
    }
    model = MorphableModel(
        name=path.stem,
        source="bfm2017",
        shape=shape,
        color=color,
        expression=expression,
        triangles=triangles,
        landmarks=landmarks,
        ibug68=None,  # BFM files carry no 68-point layout
        metadata=metadata,
        file_hash=sha256_file(path),
    )
    _validate(model, fname)
    return model


def _validate(model: MorphableModel, fname: str) -> None:
    try:
        model.validate()
    except ModelError as exc:
        raise ModelError(f"{fname}: {exc}") from None


# --------------------------------------------------------------------------------------
# BFM 2009
# --------------------------------------------------------------------------------------
_BFM2009_VARS = ("shapeMU", "shapePC", "shapeEV", "texMU", "texPC", "texEV", "tl")


def _read_mat(path: Path) -> tuple[dict[str, np.ndarray], str]:
    """The BFM 2009 variables of a MATLAB file, in MATLAB's (row, column) orientation."""
    import h5py

    fname = path.name
    if h5py.is_hdf5(path):  # MATLAB v7.3: HDF5 with every array stored transposed
        out = {}
        try:
            with h5py.File(path, "r") as f:
                for name in _BFM2009_VARS:
                    if name in f:
                        arr = np.asarray(f[name][()])
                        out[name] = arr.T if arr.ndim == 2 else arr
        except Exception as exc:  # noqa: BLE001 (h5py raises OSError, KeyError, RuntimeError... on a damaged file)
            raise ModelError(f"{fname}: cannot read the MATLAB v7.3 (HDF5) file (truncated or corrupt?), download it again: {_one_line(exc)}") from None
        return out, "mat-v7.3"
    import scipy.io

    try:
        data = scipy.io.loadmat(str(path), variable_names=list(_BFM2009_VARS))
    except NotImplementedError as exc:
        raise ModelError(f"{fname}: unsupported MATLAB file version ({_one_line(exc)}); save it as v5 or v7.3") from None
    except Exception as exc:  # scipy raises ValueError, TypeError, OSError, zlib.error... on bad files
        raise ModelError(
            f"{fname}: not a readable MATLAB .mat file (a truncated download or another format?), download it again: "
            f"{exc.__class__.__name__}: {_one_line(exc)}"
        ) from None
    return {k: v for k, v in data.items() if k in _BFM2009_VARS}, "mat-v5"


def load_bfm2009(path: str | Path) -> MorphableModel:
    """Load BFM 2009 (``01_MorphableModel.mat``) in millimetres, colours in [0, 1]."""
    path = Path(path)
    _check_file(path, _BFM2009_HINT)
    fname = path.name
    data, fmt = _read_mat(path)
    missing = [v for v in _BFM2009_VARS if v not in data]
    if missing:
        raise ModelError(f"{fname}: missing variable(s) {', '.join(missing)} ({_BFM2009_HINT})")

    def numeric(name: str) -> np.ndarray:
        arr = data[name]
        if not np.issubdtype(arr.dtype, np.number):
            raise ModelError(f"{fname}: variable {name} is not numeric (dtype {arr.dtype})")
        return arr

    def column(name: str) -> np.ndarray:
        arr = numeric(name)
        if arr.ndim == 2 and 1 in arr.shape:
            arr = arr.ravel()
        if arr.ndim != 1:
            raise ModelError(f"{fname}: {name} has shape {arr.shape}, expected a column vector")
        return arr

    info: dict = {"format": f"bfm2009 ({fmt})"}

    def pca(prefix: str, scale: float, n3: int | None) -> PCAModel:
        mu = column(f"{prefix}MU")
        pc = numeric(f"{prefix}PC")
        ev = column(f"{prefix}EV")
        if mu.size % 3:
            raise ModelError(f"{fname}: {prefix}MU has {mu.size} values, not a multiple of 3 (x, y, z per vertex)")
        if pc.ndim != 2 or pc.shape[0] != mu.size:
            raise ModelError(f"{fname}: {prefix}PC has shape {pc.shape} but {prefix}MU has 3N={mu.size} values")
        if n3 is not None and mu.size != n3:
            raise ModelError(f"{fname}: {prefix}MU has 3N={mu.size} values but shapeMU has 3N={n3}")
        if ev.size != pc.shape[1]:
            raise ModelError(f"{fname}: {prefix}EV has {ev.size} values but {prefix}PC has K={pc.shape[1]} columns")
        for name, arr in ((f"{prefix}MU", mu), (f"{prefix}PC", pc), (f"{prefix}EV", ev)):
            _check_finite(fname, name, arr)
        pc = pc.astype(np.float32, copy=False)
        if _columns_scaled_by(pc, np.abs(ev)):
            pc = _normalise_columns(pc)
            info[f"{prefix}_basis_normalised"] = True
        _check_orthonormal(fname, f"{prefix}PC", pc)
        std = ev.astype(np.float64) / scale
        return PCAModel(
            mean=(mu.astype(np.float64) / scale).astype(np.float32),
            basis=np.ascontiguousarray(pc),
            variance=(std * std).astype(np.float32),
        )

    shape = pca("shape", 1000.0, None)  # micrometres -> millimetres
    color = pca("tex", 255.0, shape.mean.size)  # 0..255 -> 0..1
    n = shape.n_vertices
    tl = numeric("tl")
    if tl.ndim != 2 or 3 not in tl.shape:
        raise ModelError(f"{fname}: tl has shape {tl.shape}, expected (T, 3)")
    if tl.shape[1] != 3:
        tl = tl.T
    _check_finite(fname, "tl", tl)
    if tl.size and np.any(tl != np.round(tl)):
        raise ModelError(f"{fname}: tl holds non-integer vertex indices")
    tl = tl.astype(np.int64)
    if tl.size and (tl.min() < 1 or tl.max() > n):
        raise ModelError(
            f"{fname}: tl has vertex indices {tl.min()}..{tl.max()} but they must be 1-based within 1..{n} for {n} vertices"
        )
    triangles, flipped = orient_outward(shape.mean, tl - 1)
    info["triangles_flipped"] = flipped
    model = MorphableModel(
        name=path.stem,
        source="bfm2009",
        shape=shape,
        color=color,
        expression=None,
        triangles=triangles,
        landmarks={},
        ibug68=None,
        metadata=info,
        file_hash=sha256_file(path),
    )
    _validate(model, fname)
    return model
