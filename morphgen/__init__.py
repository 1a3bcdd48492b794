"""morphgen: face-recognition training data from 3D Morphable Models.

The Python API (see README "Python API" and docs/API.md)::

    import morphgen
    scene = morphgen.Scene(size=64, pose="frontal")          # `morphgen render`'s options
    batch = scene.render([scene.params(3, s, yaw=y) for s, y in enumerate((-45, 0, 45))])
    data = morphgen.OnlineDataset(ids=1000, batch_p=64, batch_k=4, steps=10_000)   # any training loop
    ds = morphgen.open_dataset("syn1m")                      # a rendered dataset, map-style

The names below are imported on first use, so ``import morphgen`` stays cheap (no torch,
numba or pyarrow until a name that needs them is used).
"""
from __future__ import annotations

from importlib import import_module

__version__ = "0.1.0"
TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (a third of the import time)

# public name -> the module that defines it
_EXPORTS = {
    "load_model": "morphgen.loading",
    "Scene": "morphgen.api",
    "render_image": "morphgen.api",
    "ImageParams": "morphgen.sampling",
    "Pose": "morphgen.render.camera",
    "OnlineDataset": "recognition.online",
    "open_dataset": "morphgen.rendered",
    "RenderedDataset": "morphgen.rendered",
    "params_table": "morphgen.layout",
    "params_frame": "morphgen.rendered",
    "hf_dataset": "morphgen.rendered",
    "MorphgenError": "morphgen.errors",
    "ConfigError": "morphgen.errors",
    "DataError": "morphgen.errors",
    "ModelError": "morphgen.errors",
}
__all__ = ["__version__", "load_model", "Scene", "render_image", "ImageParams", "Pose", "OnlineDataset", "open_dataset",
           "RenderedDataset", "params_table", "params_frame", "hf_dataset", "MorphgenError", "ConfigError", "DataError",
           "ModelError"]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time `__getattr__` imports on demand
    from recognition.online import OnlineDataset

    from .api import Scene, render_image
    from .errors import ConfigError, DataError, ModelError, MorphgenError
    from .layout import params_table
    from .loading import load_model
    from .render.camera import Pose
    from .rendered import RenderedDataset, hf_dataset, open_dataset, params_frame
    from .sampling import ImageParams


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'morphgen' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value  # imported once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
