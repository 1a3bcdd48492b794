"""Renderer tests on small synthetic meshes (an ellipsoid head with a nose and BFM-style
landmarks): conventions, backend agreement, outputs, visibility, backgrounds, errors."""
from __future__ import annotations

import dataclasses
import math
import warnings

import cv2
import numpy as np
import pytest
import torch

from morphgen.errors import ConfigError, DataError
from morphgen.render.backgrounds import (
    FolderBackgrounds,
    PlainBackground,
    ProceduralBackgrounds,
    make_background_source,
    sample_batch,
)
from morphgen.render.camera import Camera, Framing, Pose, frame_translation, group_points, rotation_matrix
from morphgen.render.raster_pytorch3d import pytorch3d_available
from morphgen.render.rasterize import rasterize
from morphgen.render.renderer import OUTPUTS, RenderSettings, render_batch
from morphgen.render.shading import ColorTransform, vertex_normals_np, vertex_normals_torch
from morphgen.render.torch_render import render_torch
from morphgen.spherical_harmonics import (SH_N0 as N0, SH_N1 as N1, SH_N2_0 as N2_0, SH_N2_1 as N2_1, SH_N2_2 as N2_2,
                                         irradiance, irradiance_torch, sh_basis, sh_basis_torch)
from morphgen.render.synthetic import icosphere


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def frontal_light() -> np.ndarray:
    sh = np.zeros((9, 3))
    sh[0] = [0.9, 0.85, 0.8]
    sh[2] = 0.35  # from the camera
    sh[3] = [0.25, 0.2, 0.2]  # from image right
    sh[1] = 0.1
    return sh


def screen_of(head, pose: Pose, cam: Camera) -> np.ndarray:
    return cam.project(pose.transform(head.vertices[None].astype(np.float64)))


POSES = dict(yaw=[0.0, 35.0, -60.0, 80.0], pitch=[0.0, 10.0, -15.0, 5.0], roll=[0.0, -5.0, 8.0, 0.0])


# ---------------------------------------------------------------- camera and pose
def test_camera_defaults_and_projection():
    cam = Camera()
    assert (cam.height, cam.width) == (128, 128)
    assert cam.focal_px == pytest.approx(50.0 / 15.0 * 128)
    p = cam.project(np.array([[0.0, 0.0, -1000.0], [10.0, 10.0, -1000.0]]))
    assert p[0].tolist() == pytest.approx([64.0, 64.0, 1000.0])
    assert p[1, 0] > 64 and p[1, 1] < 64  # +x is image right, +y is image up
    hi = cam.scaled(2)
    q = hi.project(np.array([[10.0, 10.0, -1000.0]]))
    assert q[0, :2] == pytest.approx(2 * p[1, :2])  # supersampled pixels scale exactly


def test_rotation_conventions():
    nose, top = np.array([0.0, 0.0, 100.0]), np.array([0.0, 100.0, 0.0])
    r = rotation_matrix(np.array([30.0]), np.array([0.0]), np.array([0.0]))[0]
    assert (r @ nose)[0] > 0  # yaw > 0: nose toward image right (the face's own left)
    r = rotation_matrix(np.array([0.0]), np.array([20.0]), np.array([0.0]))[0]
    assert (r @ nose)[1] < 0  # pitch > 0: nose down
    r = rotation_matrix(np.array([0.0]), np.array([0.0]), np.array([20.0]))[0]
    assert (r @ top)[0] < 0  # roll > 0: counter-clockwise in the image
    y, p, ro = np.array([33.0, -70.0]), np.array([12.0, 5.0]), np.array([-7.0, 2.0])
    rn = rotation_matrix(y, p, ro)
    rt = rotation_matrix(torch.tensor(y), torch.tensor(p), torch.tensor(ro)).numpy()
    assert np.allclose(rn, rt)
    assert np.allclose(rn @ np.swapaxes(rn, 1, 2), np.eye(3))
    # order: yaw first, then pitch, then roll
    ry = rotation_matrix(y[:1], np.zeros(1), np.zeros(1))[0]
    rx = rotation_matrix(np.zeros(1), p[:1], np.zeros(1))[0]
    rz = rotation_matrix(np.zeros(1), np.zeros(1), ro[:1])[0]
    assert np.allclose(rn[0], rz @ rx @ ry)


@pytest.mark.parametrize(
    "kwargs",
    [dict(height=8, width=128), dict(height=128, width=15), dict(height=5000, width=128), dict(height=128.5, width=128),
     dict(height="128", width=128), dict(height=0, width=0), dict(height=-64, width=64)],
)  # fmt: skip
def test_image_size_validation(kwargs):
    with pytest.raises(ConfigError, match="height|width"):
        Camera(**kwargs)
    with pytest.raises(ConfigError):
        RenderSettings(**kwargs)


def test_valid_sizes_and_settings_errors():
    for h, w in ((16, 16), (1024, 1024), (96, 160)):
        assert RenderSettings(height=h, width=w).camera.width == w
    for bad in (dict(antialias=0), dict(antialias=5), dict(outputs=("rgb", "nope")), dict(backend="opengl"),
                dict(output_dtype="int16"), dict(raster_backend="gl")):  # fmt: skip
        with pytest.raises(ConfigError):
            RenderSettings(**bad)
    with pytest.raises(ConfigError):
        rasterize(np.zeros((1, 3, 3)), np.zeros((1, 3), int), 32, 32, backend="opengl")


def test_framing_is_pose_invariant_and_centred(head):
    groups = head.five_point_vertices()
    cam = Camera(128, 128)
    b = 4
    verts = np.stack([head.vertices * s for s in (1.0, 1.0, 0.8, 1.2)]).astype(np.float64)
    pose = Pose.create(b, yaw=[0, 60, 0, -45], pitch=[0, 10, 0, -20], roll=[0, 5, 0, 0])
    t = frame_translation(verts, pose, groups, cam, Framing(face_fraction=0.25))
    posed = pose.with_translation(t).transform(verts)
    centroid = group_points(posed, groups).mean(1)
    uv = cam.project(centroid)
    assert np.allclose(uv[:, :2], 64.0, atol=1e-6)
    # same depth for the same face in any pose; a face 0.8x the size sits 0.8x as far
    assert uv[1, 2] == pytest.approx(uv[0, 2])
    assert uv[2, 2] == pytest.approx(0.8 * uv[0, 2]) and uv[3, 2] == pytest.approx(1.2 * uv[0, 2])
    # eye-mouth distance spans face_fraction of the image height at that depth
    pts = group_points(verts[:1], groups)[0]
    size = np.linalg.norm(pts[:2].mean(0) - pts[3:].mean(0))
    assert cam.focal_px * size / uv[0, 2] == pytest.approx(0.25 * 128)
    # the pose scale zooms: the eye-mouth span is face_fraction x scale of the image
    zoom = Pose.create(b, yaw=[0] * 4, scale=[1.0, 0.9, 1.1, 1.5])
    tz = frame_translation(verts[:1].repeat(4, 0), zoom, groups, cam, Framing(face_fraction=0.25))
    p5 = cam.project(group_points(zoom.with_translation(tz).transform(verts[:1].repeat(4, 0)), groups))
    span = np.linalg.norm(p5[:, :2, :2].mean(1) - p5[:, 3:, :2].mean(1), axis=1)
    assert np.allclose(span / span[0], [1.0, 0.9, 1.1, 1.5], rtol=0.01)   # perspective: within 1 %
    # jitter is deterministic from the rng and bounded
    fr = Framing(center_jitter=0.1, scale_jitter=0.1)
    t1 = frame_translation(verts, pose, groups, cam, fr, np.random.default_rng(3))
    t2 = frame_translation(verts, pose, groups, cam, fr, np.random.default_rng(3))
    assert np.array_equal(t1, t2) and not np.allclose(t1, t)
    uv_j = cam.project(group_points(pose.with_translation(t1).transform(verts), groups).mean(1))
    assert np.all(np.abs(uv_j[:, :2] - 64) <= 0.1 * 128 + 1e-6)
    with pytest.raises(ConfigError):
        Framing(face_fraction=0.0)


# ---------------------------------------------------------------- shading
def test_sh_basis_constants_on_axis_normals():
    assert (N0, N1, N2_1, N2_0, N2_2) == pytest.approx((0.2820948, 0.4886025, 1.0925484, 0.3153916, 0.5462742), abs=1e-6)
    axes = torch.tensor([[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=torch.float64)
    y = sh_basis_torch(axes).numpy()
    # order 1, y, z, x, xy, yz, 3z^2-1, xz, x^2-y^2
    expect = np.array(
        [
            [N0, 0, 0, N1, 0, 0, -N2_0, 0, N2_2],
            [N0, 0, 0, -N1, 0, 0, -N2_0, 0, N2_2],
            [N0, N1, 0, 0, 0, 0, -N2_0, 0, -N2_2],
            [N0, -N1, 0, 0, 0, 0, -N2_0, 0, -N2_2],
            [N0, 0, N1, 0, 0, 0, 2 * N2_0, 0, 0],
            [N0, 0, -N1, 0, 0, 0, 2 * N2_0, 0, 0],
        ]
    )
    assert np.allclose(y, expect, atol=1e-12)
    d = torch.tensor([[1.0, 1.0, 1.0]], dtype=torch.float64) / math.sqrt(3)
    yd = sh_basis_torch(d)[0].numpy()
    assert yd[4] == pytest.approx(N2_1 / 3) and yd[5] == pytest.approx(N2_1 / 3) and yd[7] == pytest.approx(N2_1 / 3)
    assert np.allclose(sh_basis(axes.numpy()), y)
    # Lambert kernel: pi, 2pi/3, pi/4 per band
    for i, k in ((0, math.pi), (2, 2 * math.pi / 3), (6, math.pi / 4)):
        light = torch.zeros(1, 9, 3, dtype=torch.float64)
        light[0, i] = 1.0
        e = irradiance_torch(axes[None, 4:5], light)[0, 0, 0].item()  # normal +z
        assert e == pytest.approx(k * expect[4, i])
    light = np.random.default_rng(0).normal(size=(9, 3))
    assert np.allclose(irradiance(axes.numpy(), light), irradiance_torch(axes[None], torch.tensor(light)[None])[0].numpy())


def test_vertex_normals_on_sphere():
    v, t = icosphere(3)
    n_np = vertex_normals_np(v, t)
    n_t = vertex_normals_torch(torch.tensor(v)[None], t)[0].numpy()
    assert np.allclose(n_np, n_t, atol=1e-9)
    assert (n_np * v).sum(1).min() > 0.999  # outward, unit


def test_light_stays_with_camera(head):
    """Light from image right lights the image-right side whatever the yaw."""
    sh = np.zeros((9, 3))
    sh[0] = 0.6
    sh[3] = 0.6  # +x: image right
    st = RenderSettings(96, 96, output_dtype="float32", outputs=("rgb", "mask"))
    pose = Pose.create(3, yaw=[-40.0, 0.0, 40.0])
    out = render_batch(np.repeat(head.vertices[None], 3, 0), head.albedo, sh, pose, head.triangles, st,
                       five_point_groups=head.five_point_vertices())  # fmt: skip
    for img, m in zip(out["rgb"], out["mask"]):
        lum = img.mean(-1)
        cols = np.where(m.any(0))[0]
        mid = (cols.min() + cols.max()) // 2
        left = lum[:, :mid][m[:, :mid]].mean()
        right = lum[:, mid:][m[:, mid:]].mean()
        assert right > left + 0.05


# ---------------------------------------------------------------- rasterizer
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_numba_and_torch_rasterizers_agree(head, dtype):
    cam = Camera(96, 80)
    pose = Pose.create(4, translation=(3.0, -4.0, -700.0), **POSES)
    scr = screen_of(head, pose, cam).astype(dtype)
    for cull in (False, True):
        a = rasterize(scr, head.triangles, 96, 80, backend="numba", cull_backfaces=cull)
        b = rasterize(torch.from_numpy(scr), torch.from_numpy(head.triangles), 96, 80, backend="torch", cull_backfaces=cull)
        fb = b.face_id.numpy()
        agree = (a.face_id == fb).mean()
        assert agree >= 0.999, agree
        if dtype == np.float64:
            assert agree == 1.0
        both = (a.face_id >= 0) & (a.face_id == fb)
        tol = 1e-6 if dtype == np.float64 else 1e-4  # torch computes in float32 then
        assert np.allclose(a.depth[both], b.depth.numpy()[both], rtol=tol)
        assert np.allclose(a.bary[both], b.bary.numpy()[both], atol=100 * tol)
        assert np.all(np.isinf(a.depth[a.face_id < 0]))
        assert np.allclose(a.bary[both].sum(-1), 1.0, atol=1e-5)


def test_torch_rasterizer_chunks_large_triangles():
    """Big triangles go through the large buckets and the candidate chunking."""
    scr = np.array([[[2.0, 3.0, 100.0], [250.0, 20.0, 120.0], [30.0, 240.0, 90.0], [250.0, 250.0, 100.0]]])
    tri = np.array([[0, 2, 1], [1, 2, 3]], dtype=np.int32)
    a = rasterize(scr, tri, 256, 256, backend="numba")
    from morphgen.render.raster_torch import rasterize_torch

    b = rasterize_torch(torch.from_numpy(scr), torch.from_numpy(tri), 256, 256, False, 10.0, max_candidates=5000)
    assert np.array_equal(a.face_id, b.face_id.numpy())
    assert (a.face_id >= 0).mean() > 0.5


def test_numba_row_spans_match_the_exhaustive_test():
    """The numba raster skips candidates outside each row's analytic span; it must pick
    exactly what testing every pixel of the box does (the torch backend), also for edges
    through pixel centres, near-horizontal edges and vertices beyond SPAN_FAR. One triangle
    per image, so that no other triangle can cover a pixel a span dropped."""
    from morphgen.render.raster_numba import SPAN_FAR

    rng = np.random.default_rng(3)
    n = 600
    xy = rng.integers(-4, 40, size=(n, 3, 2)) + 0.5  # on pixel centres: edges hit centres exactly
    xy[::4] += rng.uniform(-1e-9, 1e-9, size=xy[::4].shape)  # edges a hair beside centres
    xy[1::7, 1, 1] = xy[1::7, 0, 1] + 1e-6  # near-horizontal edges
    xy[3::11, 1, 0] = xy[3::11, 0, 0] - 1e-7  # near-vertical edges
    xy[2::9] = rng.uniform(-3, 3, size=xy[2::9].shape) * SPAN_FAR  # huge triangles
    scr = np.concatenate([xy, rng.uniform(50.0, 150.0, size=(n, 3, 1))], axis=-1)  # (n images, 3 vertices, 3)
    tri = np.array([[0, 1, 2]], dtype=np.int32)
    for cull in (False, True):
        a = rasterize(scr, tri, 36, 36, backend="numba", cull_backfaces=cull)
        b = rasterize(torch.from_numpy(scr), torch.from_numpy(tri), 36, 36, backend="torch", cull_backfaces=cull)
        assert np.array_equal(a.face_id, b.face_id.numpy())
        assert np.array_equal(a.depth, b.depth.numpy().astype(a.depth.dtype))
        assert (a.face_id >= 0).sum() > 20 * n


def test_top_left_rule_covers_shared_edges_once():
    # a quad whose corners and diagonal pass exactly through pixel centres
    quad = np.array([[[2.5, 2.5, 50.0], [12.5, 2.5, 50.0], [12.5, 12.5, 50.0], [2.5, 12.5, 50.0]]])
    tris = np.array([[0, 3, 2], [0, 2, 1]], dtype=np.int32)
    for backend in ("numba", "torch"):
        both = rasterize(quad, tris, 16, 16, backend=backend).face_id[0]
        one = rasterize(quad, tris[:1], 16, 16, backend=backend).face_id[0] >= 0
        two = rasterize(quad, tris[1:], 16, 16, backend=backend).face_id[0] >= 0
        assert not np.any(one & two)  # no pixel drawn twice
        assert np.array_equal(one | two, both >= 0)
        assert (both >= 0).sum() == 100  # a 10 x 10 block of pixel centres, no gaps
        assert (both[2:12, 2:12] >= 0).all()


def test_pytorch3d_backend(head):
    ok, why = pytorch3d_available()
    if not ok:
        with pytest.raises(ConfigError, match="pytorch3d"):
            rasterize(np.zeros((1, 3, 3)) + 100, np.array([[0, 1, 2]]), 32, 32, backend="pytorch3d")
        pytest.skip(why)
    cam = Camera(64, 64)
    pose = Pose.create(2, yaw=[0.0, 40.0], translation=(0.0, 0.0, -700.0))
    scr = torch.from_numpy(screen_of(head, pose, cam).astype(np.float32))
    a = rasterize(scr, head.triangles, 64, 64, backend="numba", cull_backfaces=True)
    b = rasterize(scr, head.triangles, 64, 64, backend="pytorch3d", cull_backfaces=True)
    assert (a.face_id == b.face_id).float().mean() >= 0.995


# ---------------------------------------------------------------- full renders
def render_both(head, settings: RenderSettings, b: int = 4, **kw):
    verts = np.repeat(head.vertices[None], b, 0)
    pose = Pose.create(b, **{k: v[:b] for k, v in POSES.items()})
    args = dict(five_point_groups=head.five_point_vertices(), region_labels=head.region_labels, reference_coords=head.vertices, **kw)
    a = render_batch(verts, head.albedo, frontal_light(), pose, head.triangles, settings, **args)
    t = render_batch(verts, head.albedo, frontal_light(), pose, head.triangles,
                     dataclasses.replace(settings, backend="torch", raster_backend="torch"), **args)  # fmt: skip
    return a, t


@pytest.mark.parametrize("aa", [1, 2])
def test_fused_and_torch_paths_agree(head, aa):
    rng = np.random.default_rng(0)
    bg = sample_batch(ProceduralBackgrounds(), rng, 4, 64, 64)
    ct = ColorTransform.sample(np.random.default_rng(1), 4)
    st = RenderSettings(64, 64, antialias=aa, outputs=OUTPUTS)
    a, t = render_both(head, st, backgrounds=bg, color_transform=ct)
    diff = np.abs(a["rgb"].astype(int) - t["rgb"].astype(int))
    assert (diff <= 1).mean() >= 0.999, (diff > 1).mean()
    assert np.array_equal(a["mask"], t["mask"])
    assert np.array_equal(a["regions"], t["regions"])
    assert np.array_equal(a["visibility"], t["visibility"])
    assert np.allclose(a["landmarks2d"], t["landmarks2d"], atol=1e-3)
    m = a["mask"]
    assert np.allclose(a["depth"][m], t["depth"][m], rtol=1e-4)
    for key in ("normals", "albedo", "illumination", "correspondence"):
        assert np.abs(a[key] - t[key])[m].max() < 2e-3, key
    assert np.allclose(a["translation"], t["translation"])


def test_outputs_shapes_and_ranges(head):
    st = RenderSettings(64, 48, antialias=2, outputs=OUTPUTS)
    out, _ = render_both(head, st, b=2)
    assert out["rgb"].shape == (2, 64, 48, 3) and out["rgb"].dtype == np.uint8
    m = out["mask"]
    assert m.dtype == bool and 0.05 < m.mean() < 0.9
    assert np.all(out["depth"][m] > 500) and np.all(out["depth"][out["depth"] == 0] == 0)
    assert np.allclose(np.linalg.norm(out["normals"][m], axis=-1), 1.0, atol=1e-4)
    assert out["normals"][m][:, 2].mean() > 0.3  # mostly facing the camera (+z)
    assert np.all((out["correspondence"] >= -1e-6) & (out["correspondence"] <= 1 + 1e-6))
    assert np.all(out["regions"][~m & (out["depth"] == 0)] == -1)
    # labels come from one sub-sample per pixel, the mask from coverage >= 0.5
    assert set(np.unique(out["regions"])) <= {-1, 0, 1, 2, 3}
    assert (out["regions"][m] >= 0).mean() > 0.95
    assert out["landmarks2d"].shape == (2, 5, 2) and out["visibility"].shape == (2, 5)
    # frontal: landmarks in the right order on the image
    lm = out["landmarks2d"][0]
    assert lm[0, 0] < lm[2, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0] and lm[0, 1] < lm[2, 1] < lm[3, 1]
    assert out["visibility"][0].all()


def test_one_albedo_broadcast_to_the_batch_renders_as_per_image_copies(head):
    """A batch of one identity's albedo may come as a read-only broadcast view (the
    decoder's); it renders exactly as one array per image, with every output."""
    b = 3
    st = RenderSettings(48, 48, framing=Framing(), outputs=OUTPUTS)
    pose = Pose.create(b, yaw=[0.0, 30.0, -50.0])
    verts = np.repeat(head.vertices[None], b, 0)
    kw = dict(five_point_groups=head.five_point_vertices(), reference_coords=head.vertices,
              region_labels=head.region_labels)
    view = np.broadcast_to(head.albedo.astype(np.float32), (b, *head.albedo.shape))
    assert not view.flags.writeable
    one = render_batch(verts, view, frontal_light(), pose, head.triangles, st, **kw)
    each = render_batch(verts, np.array(view), frontal_light(), pose, head.triangles, st, **kw)
    for key in each:
        assert np.array_equal(one[key], each[key]), key


def test_background_only_and_determinism(head):
    bg = sample_batch(ProceduralBackgrounds(), np.random.default_rng(5), 2, 32, 32)
    st = RenderSettings(32, 32, framing=None)
    far = Pose.create(2, translation=(5000.0, 0.0, -1000.0))  # outside the view
    out = render_batch(np.repeat(head.vertices[None], 2, 0), head.albedo, frontal_light(), far, head.triangles, st, backgrounds=bg)
    assert np.array_equal(out["rgb"], bg)
    pose = Pose.create(2, yaw=[10.0, -20.0])
    kw = dict(backgrounds=bg, five_point_groups=head.five_point_vertices())
    r1 = render_batch(np.repeat(head.vertices[None], 2, 0), head.albedo, frontal_light(), pose, head.triangles, dataclasses.replace(st, framing=Framing()), **kw)
    r2 = render_batch(np.repeat(head.vertices[None], 2, 0), head.albedo, frontal_light(), pose, head.triangles, dataclasses.replace(st, framing=Framing()), **kw)
    assert np.array_equal(r1["rgb"], r2["rgb"])


def test_antialiasing_softens_silhouettes(head):
    sh = np.zeros((9, 3))
    sh[0] = 5.0  # saturates to white
    pose = Pose.create(1, yaw=20.0)
    res = {}
    for aa in (1, 2, 3):
        st = RenderSettings(64, 64, antialias=aa)
        res[aa] = render_batch(head.vertices[None], np.ones_like(head.albedo), sh, pose, head.triangles, st,
                               five_point_groups=head.five_point_vertices())["rgb"][0, ..., 0]  # fmt: skip
    assert set(np.unique(res[1])) == {0, 255}
    for aa in (2, 3):
        partial = (res[aa] > 0) & (res[aa] < 255)
        assert partial.sum() > 20
        # same silhouette up to the edge pixels
        assert np.abs(res[aa].astype(float) - res[1]).mean() < 12


def test_color_transform(head):
    st = RenderSettings(48, 48, output_dtype="float32", outputs=("rgb", "mask"))
    grey = ColorTransform(np.ones(3), np.zeros(1), np.zeros(3))
    out = render_batch(head.vertices[None], head.albedo, frontal_light(), Pose.create(1), head.triangles, st,
                       five_point_groups=head.five_point_vertices(), color_transform=grey)  # fmt: skip
    face = out["rgb"][0][out["mask"][0]]
    assert np.allclose(face[:, 0], face[:, 1], atol=1e-5) and np.allclose(face[:, 1], face[:, 2], atol=1e-5)
    base = render_batch(head.vertices[None], head.albedo * 0.5, frontal_light(), Pose.create(1), head.triangles, st,
                        five_point_groups=head.five_point_vertices())["rgb"][0]  # fmt: skip
    gain2 = render_batch(head.vertices[None], head.albedo * 0.5, frontal_light(), Pose.create(1), head.triangles, st,
                         five_point_groups=head.five_point_vertices(),
                         color_transform=ColorTransform(np.full(3, 1.5), np.ones(1), np.full(3, 0.01)))["rgb"][0]  # fmt: skip
    m = out["mask"][0]
    unclipped = m & (base.max(-1) < 0.6)
    assert np.allclose(gain2[unclipped], np.minimum(1.5 * base[unclipped] + 0.01, 1.0), atol=2e-5)


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_landmark_visibility_at_large_yaw(head, backend):
    groups = head.five_point_vertices()  # 0: eye on image left (face's right), 1: eye on image right
    st = RenderSettings(96, 96, backend=backend, outputs=("rgb", "landmarks2d"))
    pose = Pose.create(3, yaw=[0.0, 80.0, -80.0])
    out = render_batch(np.repeat(head.vertices[None], 3, 0), head.albedo, frontal_light(), pose, head.triangles, st,
                       five_point_groups=groups)  # fmt: skip
    vis = out["visibility"]
    assert vis[0].all()
    # yaw +80: the face turns to its left, its left eye (image right) goes behind the head
    assert vis[1, 0] and not vis[1, 1] and not vis[1, 4]
    assert vis[2, 1] and not vis[2, 0] and not vis[2, 3]
    assert vis[1, 2] and vis[2, 2]  # the nose tip stays visible


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_landmark_occlusion_uses_the_depth_test(head, backend):
    """A camera-facing landmark behind another surface is hidden (normals alone would not)."""
    n = head.vertices.shape[0]
    nose = head.landmarks["center.nose.tip"]
    st = RenderSettings(64, 64, backend=backend, outputs=("landmarks2d",), framing=None)
    for shift, expect in ((0.0, False), (400.0, True)):
        back = head.vertices + np.array([shift, 0.0, -400.0], dtype=np.float32)
        verts = np.concatenate((head.vertices, back))[None]
        tris = np.concatenate((head.triangles, head.triangles + n))
        out = render_batch(verts, np.concatenate((head.albedo, head.albedo)), frontal_light(),
                           Pose.create(1, translation=(-shift / 2, 0.0, -1600.0)), tris, st,
                           landmarks=[[nose], [n + nose]])  # fmt: skip
        assert out["visibility"][0, 0]
        assert out["visibility"][0, 1] == expect


def test_render_torch_returns_tensors(head):
    cam = Camera(32, 32)
    v = torch.tensor(head.vertices[None], dtype=torch.float64)
    a = torch.tensor(head.albedo[None], dtype=torch.float64)
    sh = torch.tensor(frontal_light()[None])
    out = render_torch(v, a, sh, Pose.create(1, translation=(0, 0, -900.0)), head.triangles, cam,
                       outputs=("rgb", "depth", "landmarks2d"), landmarks=head.five_point_vertices())  # fmt: skip
    assert out["rgb"].dtype == torch.float64 and out["rgb"].shape == (1, 32, 32, 3)
    assert out["landmarks2d"].shape == (1, 5, 2) and out["visibility"].dtype == torch.bool


def test_render_input_errors(head):
    st = RenderSettings(32, 32, outputs=("rgb", "landmarks2d"), framing=None)
    with pytest.raises(ConfigError, match="landmark"):
        render_batch(head.vertices[None], head.albedo, frontal_light(), Pose.create(1), head.triangles, st)
    with pytest.raises(ConfigError, match="pose"):
        render_batch(np.repeat(head.vertices[None], 2, 0), head.albedo, frontal_light(), Pose.create(3), head.triangles, RenderSettings(32, 32))
    with pytest.raises(ConfigError, match="backgrounds"):
        render_batch(head.vertices[None], head.albedo, frontal_light(), Pose.create(1), head.triangles, RenderSettings(32, 32),
                     backgrounds=np.zeros((1, 16, 16, 3), np.uint8))  # fmt: skip
    with pytest.raises(ConfigError, match="triangles"):
        render_batch(head.vertices[None], head.albedo, frontal_light(), Pose.create(1), head.triangles + 10**6, RenderSettings(32, 32))
    with pytest.raises(ConfigError, match="correspondence"):
        render_batch(head.vertices[None], head.albedo, frontal_light(), Pose.create(1), head.triangles,
                     RenderSettings(32, 32, outputs=("correspondence",)))  # fmt: skip


# ---------------------------------------------------------------- backgrounds
def _write_images(folder, n, size=(40, 60), seed=0):
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        sub = folder / f"class{i % 2}"
        sub.mkdir(parents=True, exist_ok=True)
        p = sub / f"img_{i}.jpg" if i % 2 else sub / f"img_{i}.png"
        cv2.imwrite(str(p), (rng.random((*size, 3)) * 255).astype(np.uint8))
        paths.append(p)
    return paths


def test_background_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        FolderBackgrounds(tmp_path / "missing")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="no image files"):
        FolderBackgrounds(tmp_path / "empty")
    f = tmp_path / "file.jpg"
    f.write_bytes(b"x")
    with pytest.raises(DataError, match="not a folder"):
        FolderBackgrounds(f)


def test_background_folder_skips_unreadable_files(tmp_path):
    root = tmp_path / "dtd" / "images"
    _write_images(root, 4)
    (root / "class0" / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    (root / "class1" / "empty.png").write_bytes(b"")
    src = FolderBackgrounds(tmp_path / "dtd")
    assert len(src) == 6
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        imgs = sample_batch(src, np.random.default_rng(0), 40, 32, 48)
    assert imgs.shape == (40, 32, 48, 3) and imgs.dtype == np.uint8
    assert src.skipped == 2
    msgs = [str(w.message) for w in caught if "unreadable" in str(w.message)]
    assert len(msgs) == 2 and "skipped" in msgs[-1]
    assert src.preload(32, 48) == 4
    # all files broken: a clear error, not a hang
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"nope")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match="no readable image"):
            FolderBackgrounds(bad).sample(np.random.default_rng(0), 32, 32)


def test_a_background_removed_during_the_run_is_an_error_not_a_skip(tmp_path):
    """A broken file is skipped (it always was); one that vanished after the folder was
    listed means the folder changed under the run, whose images would then depend on when
    each worker first read each file: an error (the chunk's one line, resumable)."""
    root = tmp_path / "bg"
    _write_images(root, 4)
    src = FolderBackgrounds(root)
    for f in [*root.rglob("*.png"), *root.rglob("*.jpg")]:
        f.unlink()
    with pytest.raises(DataError, match="was removed during the run"):
        sample_batch(src, np.random.default_rng(0), 4, 32, 32)


def test_background_folder_deterministic_and_sorted(tmp_path):
    _write_images(tmp_path / "bg", 5)
    a = FolderBackgrounds(tmp_path / "bg")
    b = FolderBackgrounds(tmp_path / "bg", max_pool_mb=0)  # no pool: same images
    rel = [p.relative_to(tmp_path / "bg").as_posix() for p in a.files]
    assert rel == sorted(rel)
    x = sample_batch(a, np.random.default_rng(7), 6, 24, 24)
    y = sample_batch(b, np.random.default_rng(7), 6, 24, 24)
    assert np.array_equal(x, y)
    assert not np.array_equal(x[0], x[1])


def test_procedural_backgrounds_deterministic_and_varied():
    src = ProceduralBackgrounds()
    a = sample_batch(src, np.random.default_rng(11), 12, 40, 56)
    b = sample_batch(src, np.random.default_rng(11), 12, 40, 56)
    assert a.shape == (12, 40, 56, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    c = sample_batch(src, np.random.default_rng(12), 12, 40, 56)
    assert not np.array_equal(a, c)
    assert np.mean([img.std() for img in a]) > 5  # textured, not flat
    means = a.reshape(12, -1, 3).mean(1)
    assert means.std(0).mean() > 10  # varied colours
    for kind in ("fbm", "stripes", "blobs", "gradient", "checker"):
        img = ProceduralBackgrounds([kind]).sample(np.random.default_rng(0), 33, 17)
        assert img.shape == (33, 17, 3)
    with pytest.raises(ConfigError):
        ProceduralBackgrounds(["plasma"])


def test_procedural_pool_is_a_pure_function_of_the_rng():
    """Pool textures are drawn on first use from fixed seeds, so an image does not depend on
    which images a process drew before it (worker layout, resume)."""
    src = ProceduralBackgrounds(pool_size=16)
    later = [src.sample(np.random.default_rng(100 + i), 48, 48) for i in range(40)]
    ProceduralBackgrounds._POOLS.clear()
    fresh = ProceduralBackgrounds(pool_size=16)
    assert np.array_equal(fresh.sample(np.random.default_rng(139), 48, 48), later[-1])
    # 40 images from 16 textures: the crop, flip/rotation and channel order still make each one distinct
    assert len({img.tobytes() for img in later}) == 40
    direct = sample_batch(ProceduralBackgrounds(pool_size=0), np.random.default_rng(3), 4, 48, 48)
    assert direct.shape == (4, 48, 48, 3) and len({img.tobytes() for img in direct}) == 4
    with pytest.raises(ConfigError):
        ProceduralBackgrounds(pool_size=-1)


def test_plain_backgrounds_and_spec_parsing(tmp_path):
    img = make_background_source("color:255,0,0").sample(np.random.default_rng(0), 8, 8)
    assert (img == [255, 0, 0]).all()
    assert isinstance(make_background_source(None), ProceduralBackgrounds)
    p = make_background_source("plain")
    assert isinstance(p, PlainBackground)
    assert len(np.unique(p.sample(np.random.default_rng(1), 8, 8).reshape(-1, 3), axis=0)) == 1
    with pytest.raises(ConfigError):
        make_background_source("color:1,2")
    with pytest.raises(DataError):
        make_background_source(str(tmp_path / "nowhere"))


def test_rasterize_array_types_and_float_output(head):
    cam = Camera(40, 40)
    scr = screen_of(head, Pose.create(1, translation=(0.0, 0.0, -800.0)), cam)
    a = rasterize(scr[0], head.triangles, 40, 40)  # (N, 3): a batch of one, numpy out
    assert isinstance(a.face_id, np.ndarray) and a.face_id.shape == (1, 40, 40) and a.face_id.dtype == np.int32
    t = rasterize(torch.from_numpy(scr), head.triangles, 40, 40, backend="numba")  # torch in: torch out
    assert isinstance(t.face_id, torch.Tensor) and np.array_equal(t.face_id.numpy(), a.face_id)
    # per-image albedo and float output give the same image as uint8 output
    b = 2
    verts = np.repeat(head.vertices[None], b, 0)
    alb = np.stack((head.albedo, head.albedo[:, ::-1]))
    pose = Pose.create(b, yaw=[10.0, -10.0])
    kw = dict(five_point_groups=head.five_point_vertices())
    u8 = render_batch(verts, alb, frontal_light(), pose, head.triangles, RenderSettings(40, 40), **kw)["rgb"]
    f32 = render_batch(verts, alb, frontal_light(), pose, head.triangles, RenderSettings(40, 40, output_dtype="float32"), **kw)["rgb"]
    assert f32.dtype == np.float32 and np.abs(f32 * 255 - u8).max() <= 0.5 + 1e-3


def test_auto_raster_backend_falls_back_to_torch_without_a_working_triton(monkeypatch):
    """"auto" on a CUDA device tries the triton kernel once; where it cannot run (no triton,
    or here no CUDA at all) the torch rasterizer is used instead of failing the run."""
    from morphgen.render import raster_triton
    from morphgen.render.rasterize import auto_backend

    if torch.cuda.is_available():
        pytest.skip("a CUDA machine: triton may work here (covered by the GPU checks)")
    monkeypatch.setattr(raster_triton, "_TRITON_WORKS", {})
    assert auto_backend(torch.device("cpu")) == "numba"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # with triton installed, the failed trial is reported
        assert auto_backend(torch.device("cuda")) == "torch"
    assert raster_triton._TRITON_WORKS == {"cuda": False}  # tried once per process


def test_numba_rasterizer_skips_triangles_with_nan_vertices():
    """A NaN vertex (a broken mesh) must not draw, nor send the box walk out of the image."""
    scr = np.array([[[2.0, 3.0, 100.0], [60.0, 5.0, 120.0], [8.0, 61.0, 90.0], [np.nan, np.nan, 100.0]]])
    tri = np.array([[0, 2, 1], [1, 2, 3]], dtype=np.int32)
    with_nan = rasterize(scr, tri, 64, 64, backend="numba").face_id
    alone = rasterize(scr, tri[:1], 64, 64, backend="numba").face_id
    assert np.array_equal(with_nan, alone) and (alone == 0).sum() > 500


def test_rasterize_without_barycentrics_numpy_in_and_out(head):
    cam = Camera(32, 32)
    scr = screen_of(head, Pose.create(1, translation=(0.0, 0.0, -700.0)), cam).astype(np.float32)
    full = rasterize(scr, head.triangles, 32, 32, backend="torch")
    bare = rasterize(scr, head.triangles, 32, 32, backend="torch", with_bary=False)
    assert bare.bary is None and np.array_equal(bare.face_id, full.face_id)
