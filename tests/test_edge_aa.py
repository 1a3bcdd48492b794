"""Edge anti-aliasing (morphgen/render/edge_aa.py): the numba and torch forms agree, it
matches supersampling on silhouette pixels (closer to a 4x4 reference than no
anti-aliasing, as close as 2x2), leaves pixels away from edges untouched, and its torch
form passes gradients through silhouettes."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from test_render import POSES, frontal_light

from morphgen.options import RENDER_DEFAULTS
from morphgen.render.camera import Pose
from morphgen.render.renderer import RenderSettings, render_batch
from morphgen.render.torch_render import render_torch

pytestmark = pytest.mark.usefixtures("one_torch_thread")

def _render(head, settings: RenderSettings, b: int = 4, backgrounds=None) -> np.ndarray:
    verts = np.repeat(head.vertices[None], b, 0)
    pose = Pose.create(b, **{k: v[:b] for k, v in POSES.items()})
    if backgrounds is None:  # a mid grey that is neither skin nor black: every silhouette shows
        backgrounds = np.full((b, settings.height, settings.width, 3), 60, np.uint8)
    return render_batch(verts, head.albedo, frontal_light(), pose, head.triangles, settings,
                        five_point_groups=head.five_point_vertices(), backgrounds=backgrounds)["rgb"].astype(np.float64)


@pytest.fixture(scope="module")
def renders(head):
    size = 48
    out = {k: _render(head, RenderSettings(size, size, antialias=k)) for k in (1, 2, 4)}
    out["edges"] = _render(head, RenderSettings(size, size, antialias=1, edge_aa=True))
    return out


def _edge_pixels(reference: np.ndarray, plain: np.ndarray) -> np.ndarray:
    """Pixels whose aliased colour differs visibly from the 4x4 reference: the edges."""
    return np.abs(plain - reference).max(-1) > 8


def test_edges_is_the_default():
    assert RENDER_DEFAULTS["antialias"] == "edges"


def test_edge_aa_matches_supersampling_on_edges(renders):
    ref = renders[4]
    edge = _edge_pixels(ref, renders[1])
    assert edge.sum() > 100  # the four heads have silhouettes and a nose over the cheek
    err = {k: np.abs(renders[k] - ref)[edge].mean() for k in (1, 2, "edges")}
    # closer to the reference than no anti-aliasing by far, and about as close as 2x2
    assert err["edges"] < 0.6 * err[1], err
    assert err["edges"] < 1.5 * err[2], err
    # pixels away from every edge are the single-sample render's own
    far = ~edge
    for _ in range(2):  # widen the edge band by a pixel each way
        far = far & np.roll(far, 1, 1) & np.roll(far, -1, 1) & np.roll(far, 1, 2) & np.roll(far, -1, 2)
    assert np.abs(renders["edges"] - renders[1])[far].max() <= 1


def test_numba_and_torch_edge_aa_agree(head):
    st = RenderSettings(48, 48, antialias=1, edge_aa=True)
    a = _render(head, st)
    t = _render(head, dataclasses.replace(st, backend="torch", raster_backend="torch"))
    diff = np.abs(a - t)
    assert (diff <= 1).mean() >= 0.998, (diff > 1).mean()
    assert diff.max() < 40  # a tie between two edges may pick the other neighbour


def test_torch_edge_aa_passes_gradients_through_silhouettes(head):
    """Moving the head sideways changes only silhouette pixels' coverage when nothing else
    changes; with edge AA the image's gradient w.r.t. the vertices is non-zero there."""
    size = 32
    st = RenderSettings(size, size, antialias=1, edge_aa=True, framing=None)
    verts = torch.tensor(head.vertices[None], dtype=torch.float64, requires_grad=True)
    albedo = torch.ones(1, len(head.vertices), 3, dtype=torch.float64)
    sh = torch.zeros(1, 9, 3, dtype=torch.float64)
    sh[0, 0] = 1.0  # flat light: shading does not depend on the normals, only coverage moves
    pose = Pose.create(1, translation=(0.0, 0.0, -1200.0))
    bg = torch.zeros(1, size, size, 3, dtype=torch.float64)
    for edge_aa, expect_grad in ((False, False), (True, True)):
        verts.grad = None
        out = render_torch(verts, albedo, sh, pose, head.triangles, st.camera, antialias=1, edge_aa=edge_aa,
                           backgrounds=bg, raster_backend="torch")
        # the mean brightness: with hard coverage, only shading (constant here) moves it
        out["rgb"].mean().backward()
        g = verts.grad[0, :, 0].abs().sum().item()
        assert (g > 1e-6) == expect_grad, (edge_aa, g)


def test_edge_parts_are_scipys_connected_components():
    """The contour's parts come from a union-find (no scipy import in a render): the
    labels scipy's connected_components gives, on random graphs (several parts, isolated
    triangles, repeated and self edges)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from morphgen.render.edge_aa import _edge_parts

    rng = np.random.default_rng(0)
    for _ in range(40):
        t, e = int(rng.integers(1, 300)), int(rng.integers(0, 400))
        i, j = rng.integers(0, t, e), rng.integers(0, t, e)
        want = connected_components(coo_matrix((np.ones(e), (i, j)), shape=(t, t)), directed=False)[1]
        assert np.array_equal(_edge_parts(i, j, t), want.astype(np.int32))
    chain = np.arange(5000)[::-1]  # edges from the last triangle down: the union-find's longest paths
    assert np.array_equal(_edge_parts(chain[:-1], chain[1:], 5000), np.zeros(5000, np.int32))


def test_a_default_render_does_not_import_scipy_sparse(tmp_path):
    """scipy.sparse (a tenth of a second) is imported only by the parts that use it."""
    import subprocess
    import sys

    code = ("import sys; from morphgen.cli.main import cli\n"
            "try:\n    cli(sys.argv[1:])\n"
            "finally:\n    print('scipy.sparse' in sys.modules)")
    args = ["render", "--ids", "2", "--per-id", "2", "--size", "32", "--workers", "1", "--quiet",
            "--out", str(tmp_path / "o")]
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0 and done.stdout.strip().splitlines()[-1] == "False", done.stdout + done.stderr


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_an_image_of_a_batch_is_the_image_rendered_alone(head, dtype):
    """The fused numba render reuses its per-pixel buffers across a batch (the edge pass's
    colours among them): each image of a batch with its own pose and background is
    bit for bit the image rendered alone."""
    st = RenderSettings(48, 48, antialias=1, edge_aa=True, output_dtype=dtype)
    rng = np.random.default_rng(3)
    backgrounds = rng.integers(0, 256, (4, 48, 48, 3), dtype=np.uint8)
    batch = _render(head, st, backgrounds=backgrounds)
    pose = {k: v[:4] for k, v in POSES.items()}
    for i in range(4):
        alone = render_batch(head.vertices[None], head.albedo, frontal_light(),
                             Pose.create(1, **{k: v[i:i + 1] for k, v in pose.items()}), head.triangles, st,
                             five_point_groups=head.five_point_vertices(), backgrounds=backgrounds[i:i + 1])["rgb"]
        assert np.array_equal(batch[i], alone[0].astype(np.float64)), i


def _flush_parts():
    """A 100 mm red square and, 0.2 mm in front of it (well within the depth tolerance), a
    green 40 mm square turned 20 degrees: another part's outline resting on a surface."""
    a = np.array([[-50, -50, 0], [50, -50, 0], [50, 50, 0], [-50, 50, 0]], float)
    t = np.radians(20)
    r = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    b = np.array([[-20, -20, 0.2], [20, -20, 0.2], [20, 20, 0.2], [-20, 20, 0.2]]) @ r.T
    tris = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    albedo = np.vstack([np.tile([0.8, 0.1, 0.1], (4, 1)), np.tile([0.1, 0.8, 0.1], (4, 1))])
    sh = np.zeros((1, 9, 3))
    sh[0, 0] = 1.0 / 0.886227  # (flat light: albedo in, albedo out)
    return np.vstack([a, b])[None], albedo, sh, tris


def test_an_outline_resting_flush_on_another_part_is_blended():
    """A part lying flush on another (a hair shell's edge on the skin, glasses, an eyelid
    over the eyeball) counted as a cover of its own outline: the outline stayed jagged (as
    far from 4x4 supersampling as no anti-aliasing, 27 grey levels here); the numba and
    torch forms alike."""
    v, albedo, sh, tris = _flush_parts()
    pose, bg = Pose.create(1), np.zeros((1, 48, 48, 3), np.uint8)

    def numba(st):
        return render_batch(v, albedo, sh, pose, tris, st, backgrounds=bg)["rgb"][0].astype(np.float64)

    ref, plain = numba(RenderSettings(48, 48, antialias=4)), numba(RenderSettings(48, 48, antialias=1))
    edges = numba(RenderSettings(48, 48, antialias=1, edge_aa=True))
    edge = _edge_pixels(ref, plain)
    assert edge.sum() > 15 and np.abs(plain - ref)[edge].mean() > 20
    assert np.abs(edges - ref)[edge].mean() < 5
    t = render_torch(torch.tensor(v), torch.tensor(albedo[None]), torch.tensor(sh), pose, torch.tensor(tris),
                     RenderSettings(48, 48).camera, antialias=1, edge_aa=True,
                     backgrounds=torch.zeros(1, 48, 48, 3, dtype=torch.float64))["rgb"][0]
    assert np.abs((t.numpy() * 255.0) - edges).max() <= 1.0
