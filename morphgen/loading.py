"""`load_model(path)`: one entry point for every model source, chosen by file type."""
from __future__ import annotations

import hashlib
from dataclasses import replace
from importlib import resources
from pathlib import Path

from .calibration import LandmarkCalibration, sidecar_path
from .configfile import as_path
from .errors import ModelError
from .landmark_file import LandmarkFile, landmark_sidecar
from .model import MorphableModel, five_point_names, load_npz, sha256_file

DEFAULT_MODEL_FILE = "default_model.npz"


def default_model_path() -> Path:
    """The embedded CC0 model shipped in `assets/` (installed as morphgen.assets)."""
    return Path(str(resources.files("morphgen.assets") / DEFAULT_MODEL_FILE))


def load_model(path: str | Path | None = None, landmarks: str | Path | None = None,
               need_five_points: bool = False) -> MorphableModel:
    """Load a morphable model: None = embedded default, .h5 = BFM 2017/2019, .mat = BFM 2009,
    .npz = morphgen's own format. Beside the file, `<model>.landmarks.json` (see
    morphgen/landmark_file.py; ``landmarks`` names another file) replaces the model's
    landmarks, and `<model>.calibration.json` (written by `morphgen model calibrate`) is
    read into ``metadata["landmark_calibration"]``.

    ``need_five_points``: rendering needs the five alignment points; without them this
    raises a ModelError that says how to get them, before any work is done.

    The last model loaded is kept and handed out again while its files are unchanged:
    change a model with ``dataclasses.replace``, never in place."""
    if path is None:
        path = default_model_path()
    path = as_path(path, "the model")
    _check_model_path(path)  # before the files beside it are named (a folder such as "." has no name)
    lm_file = Path(landmarks) if landmarks else landmark_sidecar(path)
    calib = sidecar_path(path)
    key = _files_key(path, lm_file, calib)
    model = _LOADED.get(key) if key is not None else None
    if model is None:
        model = load_model_file(path)
        if landmarks or lm_file.exists():
            model = LandmarkFile.read(lm_file, model.n_vertices).apply(model)
        if calib.exists():  # landmark calibration against MTCNN, kept beside the model file
            model = replace(model, metadata={**model.metadata,
                                             "landmark_calibration": LandmarkCalibration.load(calib).to_dict()})
        if key is not None:
            _LOADED.clear()
            _LOADED[key] = model
    if need_five_points:
        _, missing = five_point_names(model.landmarks)
        if missing:
            lacks = f"lacks {', '.join(missing)}" if model.landmarks else "its file carries none"
            raise ModelError(f"{path} has no landmarks for 5-point alignment ({lacks}): "
                             f"run `morphgen model landmarks {path}` to find them, or pass --landmarks FILE")
    return model


# The last model loaded, by its files' paths, sizes and modification times: a command
# loads its model to check the options and again to render (0.4-0.5 s for a Basel file),
# and a Python session makes Scenes of one model. Models are never changed in place.
_LOADED: dict[tuple, MorphableModel] = {}


def _files_key(*paths: Path) -> tuple | None:
    """(path, size, mtime) of each file, or None when the first (the model) is missing."""
    key = []
    for p in paths:
        try:
            st = p.stat()
        except OSError:
            if p is paths[0]:
                return None
            key.append((str(p), None))
            continue
        key.append((str(p.resolve()), st.st_size, st.st_mtime_ns))
    return tuple(key)


def _check_model_path(path: Path) -> None:
    if not path.exists():
        raise ModelError(f"model file {path} does not exist: give the path to a BFM .h5/.mat or a morphgen .npz")
    if path.is_dir():
        raise ModelError(f"{path} is a folder: give the model file itself (.h5, .mat or .npz)")


def load_model_file(path: Path) -> MorphableModel:
    """The model in the file alone, without the files beside it, by file type."""
    _check_model_path(path)
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        from .bfm import load_bfm2017 as loader
    elif suffix == ".mat":
        from .bfm import load_bfm2009 as loader
    elif suffix == ".npz":
        loader = load_npz
    else:
        raise ModelError(f"{path}: unknown model type {suffix!r}; expected .h5 (BFM 2017/2019), .mat (BFM 2009) or .npz")
    return loader(path)


def model_digest(path: str | Path | None = None, landmarks: str | Path | None = None) -> str:
    """sha256 of the model file, combined with those of the files beside it that change its
    renders (calibration, landmarks), as `load_model(path, landmarks)` reads them."""
    path = Path(path) if path else default_model_path()
    _check_model_path(path)
    digest = sha256_file(path)
    for extra in (sidecar_path(path), Path(landmarks) if landmarks else landmark_sidecar(path)):
        if extra.exists():
            digest = hashlib.sha256((digest + sha256_file(extra)).encode()).hexdigest()
    return digest
