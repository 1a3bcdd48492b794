"""Shared test fixtures: a tiny in-memory morphable model (no files needed)."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

from morphgen.model import MorphableModel, PCAModel

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# The Ctrl-C tests send SIGINT to commands they start, which must meet it as a terminal's
# foreground job does. A shell starts a background job (`pytest &` in a script) with SIGINT
# ignored, its children inherit that, and Python then installs no handler: the commands
# would never see their Ctrl-C (run to the end, or wait in signal.pause until the timeout).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _orthonormal(rng: np.random.Generator, rows: int, k: int) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((rows, k)))
    return q.astype(np.float32)


def make_tiny_model(n_lat: int = 12, n_lon: int = 16, k_shape: int = 8, k_color: int = 6, k_expr: int = 4) -> MorphableModel:
    """An ellipsoid 'head' (mm, +z toward the viewer) with random orthonormal PCA bases and
    the landmarks of the 5-point recipe placed where a face would have them."""
    rng = np.random.default_rng(0)
    lat = np.linspace(0.1, np.pi - 0.1, n_lat)
    lon = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    th, ph = np.meshgrid(lat, lon, indexing="ij")
    pts = np.stack([75 * np.sin(th) * np.sin(ph), 100 * np.cos(th), 90 * np.sin(th) * np.cos(ph)], -1).reshape(-1, 3)
    tris = []
    for i in range(n_lat - 1):
        for j in range(n_lon):
            a, b = i * n_lon + j, i * n_lon + (j + 1) % n_lon
            c, d = a + n_lon, b + n_lon
            tris += [[a, c, b], [b, c, d]]
    n = len(pts)
    mean = pts.astype(np.float32).reshape(-1)

    def pca(k: int, m: np.ndarray, scale: float) -> PCAModel:
        return PCAModel(m, _orthonormal(rng, 3 * n, k), (scale * np.linspace(1, 0.2, k)) ** 2, 0.0)

    def nearest(p) -> int:
        return int(np.argmin(np.linalg.norm(pts - np.asarray(p), axis=1)))

    landmarks = {
        "right.eye.corner_outer": nearest([-45, 25, 60]), "right.eye.corner_inner": nearest([-15, 25, 80]),
        "left.eye.corner_outer": nearest([45, 25, 60]), "left.eye.corner_inner": nearest([15, 25, 80]),
        "center.nose.tip": nearest([0, 0, 95]),
        "right.lips.corner": nearest([-25, -35, 75]), "left.lips.corner": nearest([25, -35, 75]),
    }
    return MorphableModel(
        name="tiny", source="morphgen",
        shape=pca(k_shape, mean, 5.0 * np.sqrt(3 * n)),
        color=pca(k_color, np.full(3 * n, 0.6, np.float32), 0.05 * np.sqrt(3 * n)),
        expression=pca(k_expr, np.zeros(3 * n, np.float32), 2.0 * np.sqrt(3 * n)),
        triangles=np.asarray(tris, np.int32), landmarks=landmarks,
    )


@pytest.fixture(autouse=True, scope="session")
def _session_lod_cache(tmp_path_factory):
    """The decimation cache (morphgen.lod_cache) of the session's own folder, inherited by
    the commands tests run: nothing lands in the user's ~/.cache, and every run starts cold."""
    old = os.environ.get("MORPHGEN_CACHE_DIR")
    os.environ["MORPHGEN_CACHE_DIR"] = str(tmp_path_factory.mktemp("morphgen_cache"))
    yield
    if old is None:
        os.environ.pop("MORPHGEN_CACHE_DIR", None)
    else:
        os.environ["MORPHGEN_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def tiny_model() -> MorphableModel:
    return make_tiny_model()


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory) -> str:
    """A 20 x 24 tiny model saved as .npz, for commands and scenes that take --model."""
    path = tmp_path_factory.mktemp("model") / "tiny.npz"
    make_tiny_model(20, 24).save_npz(path)
    return str(path)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small torch ops are far faster with one thread, and much faster still on a busy
    2-core machine. Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def head():
    """A small synthetic head (an ellipsoid with a nose and BFM-style landmarks) for renderer tests."""
    from morphgen.render.synthetic import synthetic_head

    return synthetic_head(3)
