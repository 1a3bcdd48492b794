"""The Triton rasterizer and colour resolve (the CUDA fast path) against the numba backend.

Triton runs on the CPU only in its interpreter (TRITON_INTERPRET=1, read when the kernels
are defined), so the checks run in a fresh interpreter process with that set. Small
scenes: the interpreter executes each kernel program with numpy, slowly."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                reason="triton is not installed (optional: the CUDA rasterizer; pip install triton)")

_PRELUDE = """
import dataclasses
import numpy as np, torch
from morphgen.render.backgrounds import ProceduralBackgrounds, sample_batch
from morphgen.render.camera import Camera, Pose
from morphgen.render.raster_triton import triton_available
from morphgen.render.rasterize import rasterize
from morphgen.render.renderer import OUTPUTS, RenderSettings, render_batch
from morphgen.render.synthetic import synthetic_head

assert triton_available(torch.device("cpu"))[0]
head = synthetic_head(3)
POSES = dict(yaw=[0.0, 35.0, -60.0], pitch=[0.0, 10.0, -15.0], roll=[0.0, -5.0, 8.0])
"""


def _run(body: str) -> None:
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONWARNINGS="ignore")
    r = subprocess.run([sys.executable, "-c", _PRELUDE + textwrap.dedent(body)], env=env, capture_output=True, check=False,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]


def test_triton_rasterizer_matches_numba():
    _run("""
    cam = Camera(48, 40)
    pose = Pose.create(3, translation=(3.0, -4.0, -700.0), **POSES)
    scr = cam.project(pose.transform(head.vertices[None].astype(np.float64))).astype(np.float32)
    for cull in (False, True):
        a = rasterize(scr, head.triangles, 48, 40, backend="numba", cull_backfaces=cull)
        b = rasterize(torch.from_numpy(scr), torch.from_numpy(head.triangles), 48, 40, backend="triton", cull_backfaces=cull)
        fb = b.face_id.numpy()
        assert (a.face_id == fb).mean() >= 0.999, (a.face_id == fb).mean()
        both = (a.face_id >= 0) & (a.face_id == fb)
        assert np.allclose(a.depth[both], b.depth.numpy()[both], rtol=1e-5)
        assert np.allclose(a.bary[both], b.bary.numpy()[both], atol=1e-3)
        assert np.all(np.isinf(b.depth.numpy()[fb < 0]))
    # large triangles (long box walks) and the top-left rule on a shared diagonal
    big = np.array([[[2.0, 3.0, 100.0], [60.0, 5.0, 120.0], [8.0, 61.0, 90.0], [62.0, 62.0, 100.0]]], np.float32)
    tri = np.array([[0, 2, 1], [1, 2, 3]], dtype=np.int32)
    a = rasterize(big, tri, 64, 64, backend="numba")
    b = rasterize(torch.from_numpy(big), torch.from_numpy(tri), 64, 64, backend="triton")
    assert np.array_equal(a.face_id, b.face_id.numpy()) and (a.face_id >= 0).mean() > 0.5
    quad = np.array([[[2.5, 2.5, 50.0], [12.5, 2.5, 50.0], [12.5, 12.5, 50.0], [2.5, 12.5, 50.0]]], np.float32)
    tris = np.array([[0, 3, 2], [0, 2, 1]], dtype=np.int32)
    f = rasterize(torch.from_numpy(quad), torch.from_numpy(tris), 16, 16, backend="triton").face_id[0].numpy()
    assert (f >= 0).sum() == 100 and (f[2:12, 2:12] >= 0).all()
    """)


def test_fused_triton_render_matches_numba():
    """render_torch's no-gradient path (triton raster + resolve) against the fused numba render."""
    _run("""
    sh = np.zeros((9, 3)); sh[0] = [0.9, 0.85, 0.8]; sh[2] = 0.35; sh[3] = [0.25, 0.2, 0.2]
    verts = np.repeat(head.vertices[None], 3, 0)
    pose = Pose.create(3, **POSES)
    for aa in (1, 2):
        bg = sample_batch(ProceduralBackgrounds(), np.random.default_rng(aa), 3, 40, 40)
        st = RenderSettings(40, 40, antialias=aa, outputs=OUTPUTS)
        kw = dict(five_point_groups=head.five_point_vertices(), region_labels=head.region_labels,
                  reference_coords=head.vertices, backgrounds=bg)
        a = render_batch(verts, head.albedo, sh, pose, head.triangles, st, **kw)
        t = render_batch(verts, head.albedo, sh, pose, head.triangles,
                         dataclasses.replace(st, backend="torch", raster_backend="triton"), **kw)
        d = np.abs(a["rgb"].astype(int) - t["rgb"].astype(int))
        assert (d <= 1).mean() >= 0.999, (d > 1).mean()
        assert np.array_equal(a["mask"], t["mask"]) and np.array_equal(a["visibility"], t["visibility"])
        assert np.allclose(a["landmarks2d"], t["landmarks2d"], atol=1e-3)
        # one background for the whole batch broadcasts, as in the unfused path
        from morphgen.render.torch_render import render_torch
        cam = st.camera
        one = torch.from_numpy(bg[:1]).float() / 255
        v, al, l_ = (torch.as_tensor(np.asarray(x), dtype=torch.float32) for x in (verts, head.albedo, sh))
        fused = render_torch(v, al, l_, pose, head.triangles, cam, antialias=aa, backgrounds=one, raster_backend="triton")
        plain = render_torch(v, al, l_, pose, head.triangles, cam, antialias=aa, backgrounds=one, raster_backend="torch")
        assert torch.allclose(fused["rgb"], plain["rgb"], atol=1e-4), (fused["rgb"] - plain["rgb"]).abs().max()
        assert ((plain["rgb"] - one).abs().amax(-1) > 0.05).float().mean() > 0.2  # a face in view
    """)


def test_triton_edge_search_blends_a_flush_outline_as_numba_does():
    """The edge anti-aliasing rule for a part resting flush on another (edge_aa._shows) in
    the Triton search kernel: a 40 mm square 0.2 mm over a 100 mm one, against numba."""
    _run("""
    from morphgen.render.torch_render import render_torch
    a = np.array([[-50, -50, 0], [50, -50, 0], [50, 50, 0], [-50, 50, 0]], float)
    t = np.radians(20)
    r = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    b = np.array([[-20, -20, 0.2], [20, -20, 0.2], [20, 20, 0.2], [-20, 20, 0.2]]) @ r.T
    v = np.vstack([a, b])[None]
    tris = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    al = np.vstack([np.tile([0.8, 0.1, 0.1], (4, 1)), np.tile([0.1, 0.8, 0.1], (4, 1))])
    sh = np.zeros((1, 9, 3)); sh[0, 0] = 1.0 / 0.886227
    pose, bg = Pose.create(1), np.zeros((1, 32, 32, 3), np.uint8)
    st = RenderSettings(32, 32, antialias=1, edge_aa=True)
    ref = render_batch(v, al, sh, pose, tris, st, backgrounds=bg)["rgb"][0].astype(float)
    plain = render_batch(v, al, sh, pose, tris, RenderSettings(32, 32, antialias=1), backgrounds=bg)["rgb"][0]
    tv, ta, ts = (torch.as_tensor(x, dtype=torch.float32) for x in (v, al[None], sh))
    out = render_torch(tv, ta, ts, pose, tris, st.camera, antialias=1, edge_aa=True,
                       backgrounds=torch.zeros(1, 32, 32, 3), raster_backend="triton")["rgb"][0].numpy() * 255.0
    assert np.abs(ref - plain).max() > 20                     # the numba form blends the outline
    assert np.abs(out - ref).max() <= 1.0, np.abs(out - ref).max()
    """)
