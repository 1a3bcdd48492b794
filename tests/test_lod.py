"""Level of detail (morphgen.lod, `--lod`): a dense mesh renders on a subset of its
vertices, with the landmarks, borders, topology and params of the whole one."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from fixtures import write_bfm2017_fixture
from morphgen.cli.main import cli

from morphgen.errors import ConfigError
from morphgen.loading import load_model
from morphgen.lod import decimate_mesh, decimated, lod_vertices, parse_lod
from morphgen.render.synthetic import synthetic_face_grid
from morphgen.sampling import SamplingConfig
from morphgen.scene import SceneConfig, SceneRenderer


@pytest.fixture(scope="module")
def dense_model(tmp_path_factory):
    """A BFM-2017-layout face mask of 81 x 81 vertices: at 48 px its edges are half a pixel."""
    path = tmp_path_factory.mktemp("lod") / "dense.h5"
    write_bfm2017_fixture(path, mesh=synthetic_face_grid(81))
    return str(path)


def _edges(tris: np.ndarray) -> np.ndarray:
    t = np.asarray(tris, np.int64)
    return np.unique(np.sort(np.concatenate([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]]), 1), axis=0)


def test_decimation_keeps_landmarks_borders_topology_and_orientation(dense_model):
    full = load_model(dense_model)
    lod = decimated(full, 2000)
    assert lod.n_vertices == 2000 and lod.n_triangles < full.n_triangles / 2
    # the kept vertices are the model's own: landmarks sit where they sat, on the same face
    for name, i in full.landmarks.items():
        np.testing.assert_array_equal(lod.shape.mean.reshape(-1, 3)[lod.landmarks[name]],
                                      full.shape.mean.reshape(-1, 3)[i])
    coeffs = np.random.default_rng(0).normal(size=full.shape.n_components)
    whole = (full.shape.mean + full.shape.scaled_basis() @ coeffs).reshape(-1, 3)
    part = (lod.shape.mean + lod.shape.scaled_basis() @ coeffs).reshape(-1, 3)
    keep = [int(np.flatnonzero((full.shape.mean.reshape(-1, 3) == p).all(1))[0]) for p in lod.shape.mean.reshape(-1, 3)[:50]]
    np.testing.assert_allclose(part[:50], whole[keep], atol=1e-3)
    # same Euler characteristic (no hole opened or closed) and the same border length
    euler = lambda m: m.n_vertices - len(_edges(m.triangles)) + m.n_triangles
    assert euler(lod) == euler(full)
    border = lambda m: int((np.unique(np.sort(np.concatenate([m.triangles[:, [0, 1]], m.triangles[:, [1, 2]],
                                                              m.triangles[:, [2, 0]]]), 1), axis=0,
                                      return_counts=True)[1] == 1).sum())
    assert border(lod) == border(full)
    # every triangle still faces outward (+z for this mask): none folded over
    v = lod.shape.mean.reshape(-1, 3).astype(np.float64)
    t = lod.triangles
    n = np.cross(v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 0]])
    assert (n[:, 2] > 0).mean() > 0.99


def test_decimation_is_a_pure_function_of_the_mesh():
    face = synthetic_face_grid(41)
    shapes = face.vertices[None].astype(np.float64)
    locked = np.zeros(len(face.vertices), bool)
    a = decimate_mesh(shapes, face.triangles, locked, 600)
    b = decimate_mesh(shapes.copy(), face.triangles.copy(), locked, 600)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    locked[::7] = True
    kept, _ = decimate_mesh(shapes, face.triangles, locked, 600)
    assert set(np.flatnonzero(locked)) <= set(kept.tolist())


def test_auto_follows_the_render_size(dense_model):
    assert lod_vertices(load_model(None), 128, 1, "auto") is None       # the embedded model: whole at 128 px
    full = load_model(dense_model)
    n48 = lod_vertices(full, 48, 1, "auto")
    assert n48 is not None and n48 < full.n_vertices / 2
    assert lod_vertices(full, 48, 4, "auto") is None                    # supersampled 4x: a 192 px raster
    assert lod_vertices(full, 48, 1, "off") is None
    assert lod_vertices(full, 48, 1, 3000) == 3000


def test_lod_renders_close_to_the_whole_mesh_with_the_same_params(dense_model):
    def scene(lod):
        return SceneRenderer(SceneConfig(sampling=SamplingConfig(n_identities=6), model=dense_model, size=48, lod=lod,
                                         backgrounds="plain"))

    whole, part = scene("off"), scene("auto")
    assert part.model.n_vertices < whole.model.n_vertices / 2
    params = [whole.sampler.image_params(i, s) for i in range(6) for s in range(4)]
    assert [p.to_json() for p in params] == [part.sampler.image_params(i, s).to_json() for i in range(6) for s in range(4)]
    a, b = whole.render(params), part.render(params)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.landmarks, y.landmarks, atol=0.02)   # the same vertices, decoded alike
    # visibility tests the depth drawn at a landmark: only one at an occluding edge may flip
    assert (np.stack([x.visible for x in a]) != np.stack([y.visible for y in b])).mean() < 0.05
    diff = np.abs(np.stack([x.rgb for x in a]).astype(int) - np.stack([y.rgb for y in b]))
    assert diff.mean() < 0.5 and (diff.max(-1) > 32).mean() < 0.002


def test_bad_lod_values_are_one_line_errors():
    for bad in ("fast", "50", "-3", True, ""):
        with pytest.raises(ConfigError, match="--lod"):
            parse_lod(bad)
    assert parse_lod("AUTO") == "auto" and parse_lod(5000) == 5000 and parse_lod("off") == "off"
    result = CliRunner().invoke(cli, ["render", "--ids", "1", "--per-id", "1", "--lod", "some", "--out", "x"])
    assert result.exit_code != 0 and "--lod some is invalid" in result.output and "Traceback" not in result.output


def test_manifest_records_lod_only_when_not_auto(tmp_path, dense_model):
    for lod, expect in (("auto", None), ("off", "off")):
        out = tmp_path / lod
        r = CliRunner().invoke(cli, ["render", "--model", dense_model, "--ids", "1", "--per-id", "2", "--size", "64",
                                     "--lod", lod, "--workers", "1", "--quiet", "--out", str(out)])
        assert r.exit_code == 0, r.output
        scene = json.loads((out / "manifest.json").read_text())["config"]["scene"]
        assert scene.get("lod") == expect


def test_model_info_says_what_auto_renders(dense_model):
    r = CliRunner().invoke(cli, ["model", "info", dense_model, "--json"])
    assert r.exit_code == 0, r.output
    levels = json.loads(r.output)["lod_auto_vertices"]
    assert levels["64"] < load_model(dense_model).n_vertices and levels["256"] is None
    text = CliRunner().invoke(cli, ["model", "info"]).output
    assert "--lod auto: 64 px whole" in text
