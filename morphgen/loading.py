"""`load_model(path)`: one entry point for every model source, chosen by file type."""
from __future__ import annotations

from dataclasses import replace
from importlib import resources
from pathlib import Path

from .calibration import LandmarkCalibration, sidecar_path
from .errors import ModelError
from .model import MorphableModel, load_npz

DEFAULT_MODEL_FILE = "default_model.npz"


def default_model_path() -> Path:
    """The embedded CC0 model shipped in `assets/` (installed as morphgen.assets)."""
    return Path(str(resources.files("morphgen.assets") / DEFAULT_MODEL_FILE))


def load_model(path: str | Path | None = None) -> MorphableModel:
    """Load a morphable model: None = embedded default, .h5 = BFM 2017/2019, .mat = BFM 2009,
    .npz = morphgen's own format. A `<model>.calibration.json` beside the file (written by
    `morphgen model calibrate`) is read into ``metadata["landmark_calibration"]``."""
    if path is None:
        path = default_model_path()
    path = Path(path)
    if not path.exists():
        raise ModelError(f"model file {path} does not exist: give the path to a BFM .h5/.mat or a morphgen .npz")
    if path.is_dir():
        raise ModelError(f"{path} is a folder: give the model file itself (.h5, .mat or .npz)")
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        from .bfm import load_bfm2017 as loader
    elif suffix == ".mat":
        from .bfm import load_bfm2009 as loader
    elif suffix == ".npz":
        loader = load_npz
    else:
        raise ModelError(f"{path}: unknown model type {suffix!r}; expected .h5 (BFM 2017/2019), .mat (BFM 2009) or .npz")
    model = loader(path)
    calib = sidecar_path(path)
    if calib.exists():  # landmark calibration against MTCNN, kept beside the model file
        model = replace(model, metadata={**model.metadata,
                                         "landmark_calibration": LandmarkCalibration.load(calib).to_dict()})
    return model
