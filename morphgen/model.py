"""The one in-memory morphable model type that every source (BFM 2017/2019, BFM 2009, the
embedded default) is loaded into, and morphgen's own `.npz` format for it.

Conventions (those of BFM 2017, so that sampling and rendering never branch on the source):
units are millimetres, y up, +z toward the viewer, colors are RGB in [0, 1] as BFM stores
them (display-encoded; the renderer shades them directly and applies no gamma), and
vectors are interleaved x0 y0 z0 x1 ... . A PCA instance is
``mean + basis @ (alpha * sqrt(variance))`` with alpha ~ N(0, 1) and orthonormal basis
columns. Expression is a PCA model of its own whose mean is added too (it is not zero in
BFM 2017).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .errors import ModelError

# The five alignment points (MTCNN / ArcFace order, for a frontal face as seen in the image:
# eye on the image's left, eye on the image's right, nose tip, mouth corner left, right).
# Each point is the mean of the named landmarks; the pairs are ordered by x of the mean
# shape, so a model's own left/right naming convention does not matter.
FIVE_POINT_RECIPE: tuple[tuple[str, ...], ...] = (
    ("right.eye.corner_outer", "right.eye.corner_inner"),
    ("left.eye.corner_outer", "left.eye.corner_inner"),
    ("center.nose.tip",),
    ("right.lips.corner",),
    ("left.lips.corner",),
)
# An eye may be marked by one point instead of its corners: the landmark finder
# (`morphgen model landmarks`) places MTCNN's eye points, which are eye centres.
EYE_CENTRES: tuple[str, str] = ("right.eye.pupil.center", "left.eye.pupil.center")


def five_point_names(names) -> tuple[list[tuple[str, ...]], list[str]]:
    """The name groups whose means make the five points (FIVE_POINT_RECIPE order) among
    ``names``, and the names missing for that (empty when all five are there)."""
    groups, missing = [], []
    for i, recipe in enumerate(FIVE_POINT_RECIPE):
        if all(n in names for n in recipe):
            groups.append(recipe)
        elif i < 2 and EYE_CENTRES[i] in names:
            groups.append((EYE_CENTRES[i],))
        else:
            missing += [n for n in recipe if n not in names]
    return groups, missing


@dataclass(frozen=True)
class PCAModel:
    """A linear model ``mean + basis @ (alpha * sqrt(variance))`` over N 3-vectors."""

    mean: np.ndarray  # (3N,) float32
    basis: np.ndarray  # (3N, K) orthonormal columns (float32 or float16 on disk)
    variance: np.ndarray  # (K,) eigenvalues, descending
    noise_variance: float = 0.0

    @property
    def n_components(self) -> int:
        return int(self.variance.shape[0])

    @property
    def n_vertices(self) -> int:
        return int(self.mean.shape[0] // 3)

    def truncated(self, k: int) -> "PCAModel":
        """The first ``k`` components (the ones with the largest variance)."""
        if not 0 <= k <= self.n_components:
            raise ModelError(f"asked for {k} components but the model has {self.n_components}")
        return replace(self, basis=self.basis[:, :k], variance=self.variance[:k])

    def scaled_basis(self, k: int | None = None) -> np.ndarray:
        """``basis * sqrt(variance)`` as float32 (3N, k): multiply by alpha ~ N(0, 1). One
        ufunc casting as it goes: a float32 copy of a Basel basis first made it 10x slower
        (0.12 s of the command's set-up for BFM face12's shape)."""
        k = self.n_components if k is None else k
        return np.multiply(self.basis[:, :k], np.sqrt(self.variance[:k]).astype(np.float32), dtype=np.float32)

    def instance(self, alpha: np.ndarray) -> np.ndarray:
        """Vertices (..., N, 3) for coefficients alpha (..., k), k <= n_components."""
        alpha = np.asarray(alpha, dtype=np.float32)
        k = alpha.shape[-1]
        if k > self.n_components:
            raise ModelError(f"{k} coefficients given but the model has {self.n_components} components")
        flat = self.mean.astype(np.float32) + alpha @ self.scaled_basis(k).T
        return flat.reshape(*alpha.shape[:-1], self.n_vertices, 3)


@dataclass(frozen=True)
class MorphableModel:
    """Shape, color and (optional) expression PCA models on one triangle mesh.

    landmarks maps names (BFM style: ``center.nose.tip``, ``left.eye.corner_outer``...) to
    vertex indices: vertices move with the instance, so a landmark follows the face.
    ibug68 is the optional 68-point iBUG layout as vertex indices (-1 where the model has
    no such point). regions maps a region name to a boolean per-vertex mask.
    """

    name: str
    source: str  # "bfm2017", "bfm2009", "morphgen"
    shape: PCAModel
    color: PCAModel
    expression: PCAModel | None
    triangles: np.ndarray  # (T, 3) int32, 0-based, counter-clockwise seen from outside
    landmarks: dict[str, int] = field(default_factory=dict)
    ibug68: np.ndarray | None = None
    regions: dict[str, np.ndarray] = field(default_factory=dict)
    # Free-form extras stored with the model (e.g. a landmark calibration); JSON-able.
    metadata: dict = field(default_factory=dict)
    file_hash: str = ""

    @property
    def n_vertices(self) -> int:
        return self.shape.n_vertices

    @property
    def n_triangles(self) -> int:
        return int(self.triangles.shape[0])

    def mean_vertices(self) -> np.ndarray:
        """(N, 3) float64: the mean face in mm, the expression mean included (it is part of
        every instance, and not zero in BFM 2017)."""
        v = self.shape.mean.astype(np.float64)
        if self.expression is not None:
            v = v + self.expression.mean
        return v.reshape(-1, 3)

    def five_point_vertices(self) -> list[list[int]]:
        """Vertex index groups of the five alignment points (each point = mean of its group).

        Ordered for the image: the eye and mouth pairs are sorted by x of the mean shape.
        An eye is the mean of its two corners, or its pupil centre where a model has no corners.
        """
        recipe, missing = five_point_names(self.landmarks)
        if missing:
            raise ModelError(f"model {self.name!r} lacks landmarks needed for 5-point alignment: {missing}; "
                             "`morphgen model landmarks MODEL_FILE` finds them")
        groups = [[self.landmarks[n] for n in g] for g in recipe]
        mean = self.shape.mean.reshape(-1, 3)

        def x(group: list[int]) -> float:
            return float(mean[group, 0].mean())

        eyes = sorted(groups[0:2], key=x)
        mouth = sorted(groups[3:5], key=x)
        return [eyes[0], eyes[1], groups[2], mouth[0], mouth[1]]

    def validate(self) -> None:
        """Raise ModelError naming precisely what is inconsistent."""
        n = self.n_vertices
        if not isinstance(self.metadata, dict):
            raise ModelError(f"metadata is a {type(self.metadata).__name__}, not a mapping")
        for label, pca in (("shape", self.shape), ("color", self.color), ("expression", self.expression)):
            if pca is None:
                continue
            if pca.variance.ndim != 1:
                raise ModelError(f"{label} variance has shape {pca.variance.shape}, expected (components,)")
            if pca.mean.shape != (3 * n,):
                raise ModelError(f"{label} mean has shape {pca.mean.shape}, expected ({3 * n},) for {n} vertices")
            if pca.basis.shape != (3 * n, pca.n_components):
                raise ModelError(
                    f"{label} basis has shape {pca.basis.shape}, expected ({3 * n}, {pca.n_components})"
                )
            for what, arr in (("mean", pca.mean), ("basis", pca.basis), ("variance", pca.variance)):
                if not np.all(np.isfinite(arr)):
                    raise ModelError(f"{label} {what} contains NaN or infinite values")
            if np.any(pca.variance < 0):
                raise ModelError(f"{label} variance has negative entries")
            k = min(pca.n_components, 50)
            if k and not self.metadata.get("lod"):   # a decimated model's bases are rows of orthonormal ones
                err = float(np.abs(gram(pca.basis[:, :k]) - np.eye(k)).max())
                if err > 2e-2:
                    raise ModelError(f"{label} basis columns are not orthonormal (max |B^T B - I| = {err:.3g})")
        t = self.triangles
        if t.ndim != 2 or t.shape[1] != 3:
            raise ModelError(f"triangles have shape {t.shape}, expected (T, 3)")
        if not t.size:
            raise ModelError("the mesh has no triangles")
        if t.min() < 0 or t.max() >= n:
            raise ModelError(f"triangle indices span {t.min()}..{t.max()} but the mesh has {n} vertices")
        for name, idx in self.landmarks.items():
            if not 0 <= idx < n:
                raise ModelError(f"landmark {name!r} points to vertex {idx}, outside 0..{n - 1}")
        if self.ibug68 is not None and (self.ibug68.shape != (68,) or self.ibug68.min() < -1 or self.ibug68.max() >= n):
            raise ModelError(f"ibug68 must be 68 vertex indices (-1 where the model has no such point) within "
                             f"0..{n - 1}; it has shape {self.ibug68.shape}"
                             + (f" and spans {self.ibug68.min()}..{self.ibug68.max()}" if self.ibug68.size else ""))
        for name, mask in self.regions.items():
            if mask.shape != (n,):
                raise ModelError(f"region {name!r} has shape {mask.shape}, expected one flag per vertex ({n},)")

    def summary(self) -> dict:
        """What `morphgen model info` prints."""
        return {
            "name": self.name,
            "source": self.source,
            "vertices": self.n_vertices,
            "triangles": self.n_triangles,
            "components": {
                "shape": self.shape.n_components,
                "color": self.color.n_components,
                "expression": self.expression.n_components if self.expression else 0,
            },
            "landmarks": len(self.landmarks),
            "ibug68": int((self.ibug68 >= 0).sum()) if self.ibug68 is not None else 0,
            "regions": sorted(self.regions),
            "sha256": self.file_hash,
        }

    # ---- morphgen's own format -------------------------------------------------------
    def save_npz(self, path: str | Path, dtype: np.dtype = np.float16) -> None:
        """Write the model as a compressed .npz (bases in ``dtype``; means stay float32)."""
        arrays: dict[str, np.ndarray] = {"triangles": self.triangles.astype(np.int32)}
        for label, pca in (("shape", self.shape), ("color", self.color), ("expression", self.expression)):
            if pca is None:
                continue
            arrays[f"{label}_mean"] = pca.mean.astype(np.float32)
            arrays[f"{label}_basis"] = pca.basis.astype(dtype)
            arrays[f"{label}_variance"] = pca.variance.astype(np.float32)
            arrays[f"{label}_noise_variance"] = np.float32(pca.noise_variance)
        if self.ibug68 is not None:
            arrays["ibug68"] = self.ibug68.astype(np.int32)
        for name, mask in self.regions.items():
            arrays[f"region_{name}"] = mask.astype(bool)
        meta = {"name": self.name, "landmarks": self.landmarks, "metadata": self.metadata, "format": 1}
        arrays["meta_json"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        np.savez_compressed(path, **arrays)


def load_npz(path: str | Path) -> MorphableModel:
    """Read a model written by :meth:`MorphableModel.save_npz`."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as exc:  # zip or npy errors: one message for the user
        # numpy reads a file that is no .npz as a pickle, and its message then suggests
        # loading it unsafely: wrong advice for a damaged or foreign file
        why = "not an .npz archive" if "pickle" in str(exc) else f"{exc.__class__.__name__}: {exc}"
        raise ModelError(f"{path}: not a readable morphgen .npz model ({why})") from None
    try:
        meta = json.loads(bytes(data["meta_json"]).decode())
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise ModelError(f"{path}: its meta_json entry is not valid JSON ({exc.__class__.__name__}): "
                         "the file is damaged: write it again (MorphableModel.save_npz)") from None
    except KeyError:
        raise ModelError(f"{path}: morphgen model file lacks the entry 'meta_json'") from None
    if not isinstance(meta, dict):
        raise ModelError(f"{path}: its meta_json entry is a JSON {type(meta).__name__}, not an object: "
                         "the file is damaged: write it again (MorphableModel.save_npz)")
    try:

        def pca(label: str) -> PCAModel | None:
            if f"{label}_mean" not in data:
                if any(k.startswith(f"{label}_") for k in data):  # a part of a model: not silently no model
                    raise KeyError(f"{label}_mean")
                return None
            return PCAModel(
                mean=data[f"{label}_mean"].astype(np.float32),
                basis=data[f"{label}_basis"].astype(np.float32),
                variance=data[f"{label}_variance"].astype(np.float32),
                noise_variance=float(data[f"{label}_noise_variance"]),
            )

        shape, color = pca("shape"), pca("color")
        if shape is None or color is None:
            raise KeyError("shape_mean" if shape is None else "color_mean")
        model = MorphableModel(
            name=meta["name"],
            source="morphgen",
            shape=shape,
            color=color,
            expression=pca("expression"),
            triangles=_whole(data["triangles"], "triangles").astype(np.int32),
            landmarks={k: int(_whole(np.asarray(v), f"landmark {k!r}")) for k, v in meta["landmarks"].items()},
            ibug68=data["ibug68"].astype(np.int64) if "ibug68" in data else None,
            regions={k[len("region_"):]: v.astype(bool) for k, v in data.items() if k.startswith("region_")},
            metadata=meta.get("metadata", {}),
            file_hash=sha256_file(path),
        )
    except KeyError as exc:
        raise ModelError(f"{path}: morphgen model file lacks the entry {exc}") from None
    except (TypeError, ValueError, AttributeError) as exc:  # an entry of another type: text for numbers...
        raise ModelError(f"{path}: an entry is malformed ({exc.__class__.__name__}: {exc}): the file is damaged: "
                         "write it again (MorphableModel.save_npz)") from None
    try:
        model.validate()
    except ModelError as exc:  # named by its file, as the Basel loaders' are
        raise ModelError(f"{path}: {exc}") from None
    return model


def _whole(a: np.ndarray, what: str) -> np.ndarray:
    """`a` where every value is a whole number (vertex indices); a ValueError else (3.7
    was truncated to vertex 3, silently)."""
    if a.dtype.kind == "f" and not np.all(np.isfinite(a) & (a == np.round(a))):
        raise ValueError(f"{what} holds indices that are not whole numbers")
    if a.dtype.kind not in "iuf":
        raise ValueError(f"{what} holds {a.dtype} values, not vertex indices")
    return a


def gram(basis: np.ndarray) -> np.ndarray:
    """``B^T B`` of a (3N, K) basis as float64, for the orthonormality checks, computed by
    one BLAS thread: OpenBLAS's threaded A^T A (syrk) on a loaded 2-core machine took 1.6 to
    8 s for a BFM-face12-sized basis (its threads spin while the cores are busy elsewhere),
    one thread 15 ms, and the main process of `morphgen render` loads the model twice."""
    from threadpoolctl import threadpool_limits

    b = basis if basis.dtype in (np.float32, np.float64) else basis.astype(np.float32)
    with threadpool_limits(1, user_api="blas"):
        return (b.T @ b).astype(np.float64)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file, remembered per process while its size and modification time stay
    the same: a dataset run writes the model's digest into its manifest at the start and at
    the end, and a BFM file is 80-500 MB (0.1-0.5 s a reading)."""
    st = os.stat(path)
    return _sha256_file(str(Path(path).resolve()), st.st_size, st.st_mtime_ns, chunk)


@functools.lru_cache(maxsize=32)
def _sha256_file(path: str, size: int, mtime_ns: int, chunk: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
