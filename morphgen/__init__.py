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

import os
import sys
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
    "one_line_errors": "morphgen.errors",
}
__all__ = ["__version__", "load_model", "Scene", "render_image", "ImageParams", "Pose", "OnlineDataset", "open_dataset",
           "RenderedDataset", "params_table", "params_frame", "hf_dataset", "MorphgenError", "ConfigError", "DataError",
           "ModelError", "one_line_errors"]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time `__getattr__` imports on demand
    from recognition.online import OnlineDataset

    from .api import Scene, render_image
    from .errors import (
        ConfigError,
        DataError,
        ModelError,
        MorphgenError,
        one_line_errors,
    )
    from .layout import params_table
    from .loading import load_model
    from .render.camera import Pose
    from .rendered import RenderedDataset, hf_dataset, open_dataset, params_frame
    from .sampling import ImageParams


def _numba_cache_fallback() -> None:
    """Point numba's cache at a temporary folder where it could not write one otherwise.

    Why: our kernels are compiled with ``cache=True``, and numba raises at import time
    ("cannot cache function ... no locator available") when neither the installed package's
    folders nor the user's cache folder (``~/.cache``) can be written: a read-only install
    run as another user, as in ``docker run --user``. Commands then failed with a traceback
    before reading any option. A user's own NUMBA_CACHE_DIR wins."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return

    def writable(path: str) -> bool:  # the nearest folder that exists decides
        while path and not os.path.exists(path):
            path = os.path.dirname(path)
        return bool(path) and os.access(path, os.W_OK)

    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "__pycache__")
    user = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "numba")
    if writable(here) or (os.path.isabs(user) and writable(user)):
        return
    import tempfile

    folder = os.path.join(tempfile.gettempdir(), f"morphgen-numba-{os.getuid() if hasattr(os, 'getuid') else 0}")
    try:  # numba unpickles what it finds there: only a folder of this user's, closed to others
        os.mkdir(folder, 0o700)
    except FileExistsError:
        st = os.lstat(folder)
        if not os.path.isdir(folder) or os.path.islink(folder) or st.st_mode & 0o022 or (
                hasattr(os, "getuid") and st.st_uid != os.getuid()):
            folder = tempfile.mkdtemp(prefix="morphgen-numba-")  # another's: a fresh one (no cache kept)
    except OSError:
        folder = tempfile.mkdtemp(prefix="morphgen-numba-")
    os.environ["NUMBA_CACHE_DIR"] = folder
    if "numba" in sys.modules:  # imported before morphgen: its config has read the environment already
        sys.modules["numba"].config.CACHE_DIR = folder


_numba_cache_fallback()


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'morphgen' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value  # imported once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
