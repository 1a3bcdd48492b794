"""Landmark files: a model's landmarks kept beside it, for models whose file has none
(BFM 2009, PCA models users convert themselves).

`<model>.landmarks.json` beside the model file is read by `load_model` (as the calibration
JSON is); `--landmarks FILE` names another. `morphgen model landmarks` writes one; people
who have published landmark indices for their model write the same file by hand. Vertex
indices are 0-based. Three forms are read:

1. A JSON object::

       {"format": "morphgen-landmarks", "version": 1, "vertices": 53490,
        "landmarks": {"right.eye.pupil.center": 1201, "center.nose.tip": 1403, ...},
        "ibug68": [2001, 2002, ...], "index_base": 0}

   ``landmarks`` maps BFM-style names to vertex indices; ``ibug68`` (optional) lists the
   68 iBUG points in their order; ``vertices`` (optional) is the model's vertex count and
   must match it; ``index_base: 1`` reads MATLAB-style 1-based indices. Other keys (the
   finder's diagnostics) are for people and ignored.
2. A JSON list of 68 vertex indices in iBUG order.
3. A text file of 68 whitespace-separated vertex indices in iBUG order.

The file replaces the model's own landmarks and must give the five alignment points: each
eye (its two corners, or ``*.eye.pupil.center``), ``center.nose.tip`` and both
``*.lips.corner`` (see morphgen.model.FIVE_POINT_RECIPE). From 68 iBUG points they are
derived (``IBUG_NAMES``); names given explicitly win.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .errors import ModelError
from .model import MorphableModel, five_point_names

FORMAT = "morphgen-landmarks"
# iBUG 68 index (0-based) -> BFM-style name. iBUG's "right" eye (36-41) is the subject's
# right, as in BFM names; the chin tip, eye corners, nose tip and mouth corners.
IBUG_NAMES: dict[int, str] = {
    8: "center.chin.tip", 30: "center.nose.tip",
    36: "right.eye.corner_outer", 39: "right.eye.corner_inner",
    42: "left.eye.corner_inner", 45: "left.eye.corner_outer",
    48: "right.lips.corner", 54: "left.lips.corner",
}


def landmark_sidecar(model_path: str | Path) -> Path:
    """`<model>.landmarks.json` beside the model file: read automatically when present."""
    p = Path(model_path)
    return p.with_name(p.stem + ".landmarks.json")


@dataclass(frozen=True)
class LandmarkFile:
    path: Path
    landmarks: dict[str, int]
    ibug68: np.ndarray | None = None  # (68,) vertex indices

    @classmethod
    def read(cls, path: str | Path, n_vertices: int) -> "LandmarkFile":
        """Read and check a landmark file against a model of ``n_vertices`` vertices; every
        problem is a one-line ModelError that names the file."""
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"landmark file {path} does not exist" if not path.exists()
                             else f"landmark file {path} is not a file")
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelError(f"{path}: unreadable landmark file ({exc.__class__.__name__}: {exc})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = _text_list(path, text)
        base, names, ibug = 0, {}, None
        if isinstance(data, list):
            ibug = data
        elif isinstance(data, dict):
            base = data.get("index_base", 0)
            if base not in (0, 1):
                raise ModelError(f"{path}: index_base must be 0 or 1, got {base!r}")
            count = data.get("vertices")
            if count is not None and count != n_vertices:
                raise ModelError(f"{path}: written for a model of {count} vertices, but this model has {n_vertices}")
            names = data.get("landmarks", {})
            if not isinstance(names, dict):
                raise ModelError(f"{path}: 'landmarks' must map names to vertex indices")
            ibug = data.get("ibug68")
        else:
            raise ModelError(f"{path}: expected a JSON object or a list of 68 vertex indices")
        lm = {str(k): _index(path, f"landmark {k!r}", v, base, n_vertices) for k, v in names.items()}
        ib = None
        if ibug is not None:
            if not isinstance(ibug, list) or len(ibug) != 68:
                got = len(ibug) if isinstance(ibug, list) else type(ibug).__name__
                raise ModelError(f"{path}: an iBUG landmark list must hold 68 vertex indices, got {got}")
            ib = np.array([_index(path, f"iBUG point {i}", v, base, n_vertices) for i, v in enumerate(ibug)], np.int64)
            lm = {**{name: int(ib[i]) for i, name in IBUG_NAMES.items()}, **lm}
        if not lm:
            raise ModelError(f"{path}: holds no landmarks (give 'landmarks' or 'ibug68')")
        _, missing = five_point_names(lm)
        if missing:
            raise ModelError(f"{path}: lacks the landmarks of 5-point alignment: {', '.join(missing)} "
                             "(each eye's corners or pupil.center, center.nose.tip, both lips.corner)")
        return cls(path, lm, ib)

    def apply(self, model: MorphableModel) -> MorphableModel:
        """The model with this file's landmarks in place of its own."""
        return replace(model, landmarks=dict(self.landmarks), ibug68=self.ibug68 if self.ibug68 is not None else model.ibug68,
                       metadata={**model.metadata, "landmark_file": str(self.path)})


def write_landmark_file(path: str | Path, landmarks: dict[str, int], n_vertices: int, about: dict | None = None) -> None:
    """Write form 1 (see the module docstring); ``about`` goes in as diagnostics."""
    doc = {"format": FORMAT, "version": 1, "vertices": n_vertices, "landmarks": landmarks, **(about or {})}
    Path(path).write_text(json.dumps(doc, indent=1) + "\n")


def _text_list(path: Path, text: str) -> list:
    try:
        return [int(t) for t in text.split()]
    except ValueError:
        raise ModelError(f"{path}: neither JSON nor a whitespace-separated list of vertex indices") from None


def _index(path: Path, what: str, value, base: int, n: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelError(f"{path}: {what} is {value!r}, not a vertex index")
    i = value - base
    if not 0 <= i < n:
        first = "1-based" if base else "0-based"
        raise ModelError(f"{path}: {what} is vertex {value}, outside {base}..{n - 1 + base} "
                         f"({first} indices into the model's {n} vertices)")
    return i
