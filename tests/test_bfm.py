"""BFM 2017/2019 (MoMo HDF5) and BFM 2009 (.mat) loaders, on fixtures in the exact layouts."""
from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest

from morphgen.bfm import load_bfm2009, load_bfm2017, orient_outward
from morphgen.errors import ModelError
from morphgen.loading import load_model
from morphgen.model import FIVE_POINT_RECIPE, load_npz, sha256_file

try:
    from tests.fixtures import (LANDMARK_DIRECTIONS, delete_entry, face_normals, icosphere, replace_dataset,
                                write_bfm2009_fixture, write_bfm2017_fixture)
except ImportError:  # tests/ itself on sys.path
    from fixtures import (LANDMARK_DIRECTIONS, delete_entry, face_normals, icosphere, replace_dataset,
                          write_bfm2009_fixture, write_bfm2017_fixture)


@pytest.fixture
def bfm17(tmp_path):
    path = tmp_path / "model2017-1_bfm_nomouth.h5"
    truth = write_bfm2017_fixture(path)
    return path, truth


def _outward(vertices, triangles) -> bool:
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    n = face_normals(v, triangles)
    away = v[triangles].mean(1) - v.mean(0)
    return bool((np.einsum("ij,ij->i", n, away) > 0).all())


def _assert_one_line(exc_info, *parts):
    msg = str(exc_info.value)
    assert "\n" not in msg
    for p in parts:
        assert p in msg, msg


# ---- BFM 2017 -------------------------------------------------------------------------
def test_bfm2017_loads_arrays_exactly(bfm17):
    path, truth = bfm17
    m = load_bfm2017(path)
    assert m.source == "bfm2017" and m.name == "model2017-1_bfm_nomouth"
    assert m.file_hash == sha256_file(path)
    assert m.ibug68 is None
    assert m.n_vertices == 162 and m.n_triangles == 320
    for label in ("shape", "color", "expression"):
        pca, t = getattr(m, label), truth[label]
        assert pca.mean.dtype == np.float32 and pca.basis.dtype == np.float32
        np.testing.assert_allclose(pca.mean, t["mean"], atol=1e-5)
        np.testing.assert_allclose(pca.basis, t["basis"], atol=1e-6)
        np.testing.assert_allclose(pca.variance, t["variance"], rtol=1e-6)
    assert (m.shape.n_components, m.color.n_components, m.expression.n_components) == (10, 8, 5)
    np.testing.assert_array_equal(m.triangles, truth["triangles"])
    assert m.triangles.dtype == np.int32
    assert m.metadata["triangles_flipped"] is False
    assert _outward(m.shape.mean, m.triangles)


def test_bfm2017_instance_formula_includes_expression_mean(bfm17):
    path, truth = bfm17
    m = load_bfm2017(path)
    rng = np.random.default_rng(3)
    alpha, beta, gamma = rng.standard_normal(10), rng.standard_normal(8), rng.standard_normal(5)
    s, c, e = truth["shape"], truth["color"], truth["expression"]
    expect_shape = s["mean"] + s["basis"] @ (alpha * np.sqrt(s["variance"]))
    expect_expr = e["mean"] + e["basis"] @ (gamma * np.sqrt(e["variance"]))
    expect_color = c["mean"] + c["basis"] @ (beta * np.sqrt(c["variance"]))
    np.testing.assert_allclose(m.shape.instance(alpha), expect_shape.reshape(-1, 3), atol=1e-3)
    np.testing.assert_allclose(m.color.instance(beta), expect_color.reshape(-1, 3), atol=1e-5)
    np.testing.assert_allclose(m.expression.instance(gamma), expect_expr.reshape(-1, 3), atol=1e-4)
    # the expression mean is part of a face: it is not zero in BFM 2017 and must not be dropped
    assert np.abs(m.expression.instance(np.zeros(5))).max() > 0.1
    # fewer coefficients = truncated model
    np.testing.assert_allclose(m.shape.instance(alpha[:3]),
                               (s["mean"] + s["basis"][:, :3] @ (alpha[:3] * np.sqrt(s["variance"][:3]))).reshape(-1, 3),
                               atol=1e-3)


def test_bfm2017_landmarks_map_to_nearest_vertex_and_five_points(bfm17):
    path, truth = bfm17
    m = load_bfm2017(path)
    assert m.landmarks == truth["landmark_vertices"]
    assert set(LANDMARK_DIRECTIONS) == set(m.landmarks)
    assert m.metadata["landmark_source"] == "json"
    assert m.metadata["landmark_max_distance_mm"] == pytest.approx(0.5, abs=1e-3)
    groups = m.five_point_vertices()
    lm = m.landmarks
    mean = m.shape.mean.reshape(-1, 3)
    # image order: eye with smaller x first, then the other eye, nose, mouth corners by x
    assert groups[2] == [lm["center.nose.tip"]]
    assert sorted(map(tuple, groups[:2])) == sorted(
        [(lm["right.eye.corner_outer"], lm["right.eye.corner_inner"]), (lm["left.eye.corner_outer"], lm["left.eye.corner_inner"])])
    assert mean[groups[0], 0].mean() < mean[groups[1], 0].mean()
    assert mean[groups[3], 0].mean() < mean[groups[4], 0].mean()


def test_bfm2017_legacy_text_landmarks_and_face12_without_ears(tmp_path):
    names = [n for n in LANDMARK_DIRECTIONS if "ear" not in n]
    path = tmp_path / "model2017-1_face12_nomouth.h5"
    truth = write_bfm2017_fixture(path, landmarks="text", landmark_names=names)
    m = load_bfm2017(path)
    assert m.metadata["landmark_source"] == "text"
    assert m.landmarks == truth["landmark_vertices"]
    assert not any("ear" in n for n in m.landmarks)
    assert len(m.five_point_vertices()) == 5  # needs no ear landmark


def test_bfm2017_without_landmarks_or_expression(tmp_path):
    path = tmp_path / "m.h5"
    write_bfm2017_fixture(path, landmarks=None, n_expression=0)
    m = load_bfm2017(path)
    assert m.expression is None and m.landmarks == {}
    with pytest.raises(ModelError, match="lacks landmarks"):
        m.five_point_vertices()


@pytest.mark.parametrize("version", [(0, 8), None])
def test_bfm2017_legacy_basis_scaled_by_sqrt_variance_is_normalised(tmp_path, version):
    path = tmp_path / "legacy.h5"
    truth = write_bfm2017_fixture(path, version=version, legacy_scaled_basis=True)
    m = load_bfm2017(path)
    for label in ("shape", "color", "expression"):
        np.testing.assert_allclose(getattr(m, label).basis, truth[label]["basis"], atol=1e-5)
        assert m.metadata[f"{label}_legacy_basis_normalised"] is True


def test_bfm2017_without_version_and_orthonormal_basis_is_left_alone(tmp_path):
    path = tmp_path / "nover.h5"
    truth = write_bfm2017_fixture(path, version=None)
    m = load_bfm2017(path)
    np.testing.assert_allclose(m.shape.basis, truth["shape"]["basis"], atol=1e-7)
    assert "shape_legacy_basis_normalised" not in m.metadata


def test_bfm2017_version_1_accepted_and_unknown_version_rejected(tmp_path):
    path = tmp_path / "v1.h5"
    write_bfm2017_fixture(path, version=(1, 0))
    assert load_bfm2017(path).metadata["shape_version"] == "1.0"
    write_bfm2017_fixture(path, version=(0, 5))
    with pytest.raises(ModelError) as e:
        load_bfm2017(path)
    _assert_one_line(e, "v1.h5", "unsupported MoMo format version 0.5")


def test_bfm2017_inward_cells_are_flipped_outward(tmp_path):
    path = tmp_path / "inward.h5"
    truth = write_bfm2017_fixture(path, inward_cells=True)
    m = load_bfm2017(path)
    assert m.metadata["triangles_flipped"] is True
    assert _outward(m.shape.mean, m.triangles)
    # same triangles, same first vertex, order of the other two swapped back
    np.testing.assert_array_equal(m.triangles, truth["triangles"])


def test_orient_outward_on_open_face_like_cap():
    v, t = icosphere(2, 80.0)
    keep = (v[t][:, :, 2] > -20.0).all(1)  # front cap, open at the back like a face mask
    t = t[keep]
    used = np.unique(t)
    remap = -np.ones(len(v), dtype=np.int64)
    remap[used] = np.arange(len(used))
    v, t = v[used], remap[t]
    out, flipped = orient_outward(v, t)
    assert not flipped and np.array_equal(out, t)
    out, flipped = orient_outward(v, t[:, [0, 2, 1]])
    assert flipped and np.array_equal(out, t)
    # the outward normals of the cap face the viewer (+z) on aggregate
    assert face_normals(v, out)[:, 2].sum() > 0


def test_bfm2017_npz_roundtrip_and_load_model_dispatch(bfm17, tmp_path):
    path, _ = bfm17
    m = load_model(path)
    assert m.source == "bfm2017"
    out = tmp_path / "m.npz"
    m.save_npz(out, dtype=np.float32)
    r = load_npz(out)
    assert r.landmarks == m.landmarks
    np.testing.assert_array_equal(r.triangles, m.triangles)
    np.testing.assert_allclose(r.expression.mean, m.expression.mean)


# ---- BFM 2017 errors ------------------------------------------------------------------
def test_bfm2017_missing_file(tmp_path):
    with pytest.raises(ModelError) as e:
        load_bfm2017(tmp_path / "nope.h5")
    _assert_one_line(e, "nope.h5", "does not exist")


def test_bfm2017_garbage_file(tmp_path):
    p = tmp_path / "garbage.h5"
    p.write_bytes(os.urandom(4096))
    with pytest.raises(ModelError) as e:
        load_bfm2017(p)
    _assert_one_line(e, "garbage.h5", "not an HDF5 file", "download it again")


def test_bfm2017_truncated_file(bfm17, tmp_path):
    path, _ = bfm17
    data = path.read_bytes()
    p = tmp_path / "cut.h5"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError) as e:
        load_bfm2017(p)
    _assert_one_line(e, "cut.h5", "truncated or corrupt")


@pytest.mark.parametrize("entry,expect", [
    ("/color", "missing group /color"),
    ("/shape/model/pcaBasis", "missing /shape/model/pcaBasis"),
    ("/shape/representer", "missing /shape/representer/points"),
    ("/shape/representer/cells", "missing /shape/representer/cells"),
    ("/expression/model/pcaVariance", "missing /expression/model/pcaVariance"),
])
def test_bfm2017_missing_entries(bfm17, entry, expect):
    path, _ = bfm17
    delete_entry(path, entry)
    with pytest.raises(ModelError) as e:
        load_bfm2017(path)
    _assert_one_line(e, path.name, expect)


def test_bfm2017_other_hdf5_file(tmp_path):
    p = tmp_path / "other.h5"
    with h5py.File(p, "w") as f:
        f["data"] = np.zeros(3)
    with pytest.raises(ModelError) as e:
        load_bfm2017(p)
    _assert_one_line(e, "other.h5", "missing group /shape", "BFM 2017/2019")


def test_bfm2017_nan_in_basis(bfm17):
    path, truth = bfm17
    b = truth["shape"]["basis"].copy()
    b[5, 2] = np.nan
    b[7, 3] = np.inf
    replace_dataset(path, "/shape/model/pcaBasis", b)
    with pytest.raises(ModelError) as e:
        load_bfm2017(path)
    _assert_one_line(e, path.name, "/shape/model/pcaBasis contains 2 NaN or infinite values")


def test_bfm2017_non_orthonormal_basis(bfm17):
    path, truth = bfm17
    b = truth["color"]["basis"].copy()
    b[:, 3] = (b[:, 3] + b[:, 1]) / np.sqrt(2.0)  # unit norm but not orthogonal to column 1
    replace_dataset(path, "/color/model/pcaBasis", b)
    with pytest.raises(ModelError) as e:
        load_bfm2017(path)
    _assert_one_line(e, path.name, "/color/model/pcaBasis columns are not orthonormal", "columns 1 and 3")


def test_bfm2017_out_of_range_cells(bfm17):
    path, truth = bfm17
    cells = truth["triangles"].T.astype(np.int32).copy()
    cells[1, 7] = 170
    replace_dataset(path, "/shape/representer/cells", cells)
    with pytest.raises(ModelError) as e:
        load_bfm2017(path)
    _assert_one_line(e, path.name, "/shape/representer/cells has vertex indices 0..170 but the mesh has 162 vertices")
    cells[1, 7] = -1
    replace_dataset(path, "/shape/representer/cells", cells)
    with pytest.raises(ModelError, match="indices -1..161"):
        load_bfm2017(path)


def test_bfm2017_mismatched_sizes(bfm17):
    path, truth = bfm17
    c = truth["color"]
    replace_dataset(path, "/color/model/mean", c["mean"][:-3])
    replace_dataset(path, "/color/model/pcaBasis", c["basis"][:-3])
    with pytest.raises(ModelError) as e:
        load_bfm2017(path)
    _assert_one_line(e, path.name, "/color/model/pcaBasis has 3N=483 rows but /shape has 3N=486")


def test_bfm2017_basis_rows_differ_from_own_mean(bfm17):
    path, truth = bfm17
    replace_dataset(path, "/shape/model/pcaBasis", truth["shape"]["basis"][:-3])
    with pytest.raises(ModelError) as e:
        load_bfm2017(path)
    _assert_one_line(e, "/shape/model/pcaBasis has 3N=483 rows but /shape/model/mean has 3N=486")


def test_bfm2017_variance_count_mismatch(bfm17):
    path, truth = bfm17
    replace_dataset(path, "/expression/model/pcaVariance", truth["expression"]["variance"][:4])
    with pytest.raises(ModelError) as e:
        load_bfm2017(path)
    _assert_one_line(e, "/expression/model/pcaVariance has 4 values but /expression/model/pcaBasis has K=5 columns")


def test_bfm2017_negative_variance(bfm17):
    path, truth = bfm17
    v = truth["shape"]["variance"].copy()
    v[-1] = -1.0
    replace_dataset(path, "/shape/model/pcaVariance", v)
    with pytest.raises(ModelError, match="/shape/model/pcaVariance has negative entries"):
        load_bfm2017(path)


def test_bfm2017_points_count_and_values_checked_against_mean(bfm17):
    path, truth = bfm17
    pts = truth["points"].T
    replace_dataset(path, "/shape/representer/points", pts[:, :-1])
    with pytest.raises(ModelError) as e:
        load_bfm2017(path)
    _assert_one_line(e, "/shape/representer/points has N=161 vertices but /shape/model/mean has N=162")
    # a planar (x..., y..., z...) mean instead of interleaved one
    replace_dataset(path, "/shape/representer/points", pts)
    replace_dataset(path, "/shape/model/mean", truth["points"].T.ravel())
    with pytest.raises(ModelError) as e:
        load_bfm2017(path)
    _assert_one_line(e, "/shape/representer/points and /shape/model/mean disagree", "interleaved")


def test_bfm2017_color_representer_must_share_mesh(bfm17):
    path, truth = bfm17
    replace_dataset(path, "/color/representer/points", truth["points"].T * 1.1)
    with pytest.raises(ModelError, match="/color/representer/points differ from /shape/representer/points"):
        load_bfm2017(path)


@pytest.mark.parametrize("fmt", ["h5", "v7.3"])
def test_damaged_hdf5_internals_are_one_line_errors(tmp_path, fmt):
    """Bytes overwritten inside an HDF5 file (a bad object header, a broken link table)
    made h5py raise KeyError or RuntimeError, which came out as tracebacks: every damage
    is a ModelError of one line (or, where it hits array values only, a model)."""
    path = tmp_path / ("m.h5" if fmt == "h5" else "m.mat")
    write_bfm2017_fixture(path) if fmt == "h5" else write_bfm2009_fixture(path, fmt="v7.3")
    data = path.read_bytes()
    load = load_bfm2017 if fmt == "h5" else load_bfm2009
    unreadable = 0
    for frac in (0.01, 0.02, 0.03, 0.05, 0.5):
        at = int(len(data) * frac)
        bad = tmp_path / f"bad{frac}{path.suffix}"
        bad.write_bytes(data[:at] + bytes([0xAB]) * 2000 + data[at + 2000:])
        try:
            load(bad)
        except ModelError as e:
            assert "\n" not in str(e) and bad.name in str(e)
            unreadable += "truncated or corrupt" in str(e)
    assert unreadable >= 1


def test_bfm2017_bad_landmarks(bfm17):
    path, _ = bfm17
    replace_dataset(path, "/metadata/landmarks/json", '[{"id": "a", "coords": [1, 2, 3]}]')
    with pytest.raises(ModelError) as e:
        load_bfm2017(path)
    _assert_one_line(e, "/metadata/landmarks/json is not a JSON list")
    replace_dataset(path, "/metadata/landmarks/json", '[{"id": "a", "coordinates": [1%s, 0, 0]}]' % ("0" * 400))
    with pytest.raises(ModelError) as e:   # a number past float: OverflowError, a traceback
        load_bfm2017(path)
    _assert_one_line(e, "/metadata/landmarks/json is not a JSON list")
    delete_entry(path, "/metadata/landmarks/json")
    replace_dataset(path, "/metadata/landmarks/text", np.bytes_(b"center.nose.tip 1 0 0 80\nbroken 1 2\n"))
    with pytest.raises(ModelError) as e:
        load_bfm2017(path)
    _assert_one_line(e, "/metadata/landmarks/text line 2 is not 'name visible x y z'")


# ---- BFM 2009 -------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["v5", "v7.3"])
def test_bfm2009_units_and_triangles(tmp_path, fmt):
    path = tmp_path / "01_MorphableModel.mat"
    truth = write_bfm2009_fixture(path, fmt=fmt)
    m = load_bfm2009(path)
    raw = truth["raw"]
    assert m.source == "bfm2009" and m.name == "01_MorphableModel"
    assert m.file_hash == sha256_file(path)
    assert m.landmarks == {} and m.expression is None and m.ibug68 is None
    # micrometres -> millimetres, EV standard deviations -> variances
    np.testing.assert_allclose(m.shape.mean, raw["shapeMU"].ravel() / 1000.0, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(m.shape.variance, (raw["shapeEV"].ravel() / 1000.0) ** 2, rtol=1e-6)
    np.testing.assert_allclose(m.shape.basis, raw["shapePC"], atol=1e-6)
    # 0..255 -> 0..1
    np.testing.assert_allclose(m.color.mean, raw["texMU"].ravel() / 255.0, rtol=1e-6)
    np.testing.assert_allclose(m.color.variance, (raw["texEV"].ravel() / 255.0) ** 2, rtol=1e-6)
    assert 0.0 <= m.color.mean.min() and m.color.mean.max() <= 1.0
    # the sphere's radius is 80 mm after conversion
    np.testing.assert_allclose(np.linalg.norm(m.shape.mean.reshape(-1, 3), axis=1), 80.0, rtol=1e-5)
    # 1-based clockwise tl -> 0-based outward triangles
    assert m.triangles.min() == 0 and m.triangles.max() == m.n_vertices - 1
    assert m.metadata["triangles_flipped"] is True
    np.testing.assert_array_equal(m.triangles, truth["triangles"])
    assert _outward(m.shape.mean, m.triangles)
    # instance formula in millimetres
    alpha = np.linspace(-1, 1, 10)
    expect = truth["shape"]["mean"] + truth["shape"]["basis"] @ (alpha * np.sqrt(truth["shape"]["variance"]))
    np.testing.assert_allclose(m.shape.instance(alpha), expect.reshape(-1, 3), atol=1e-3)


def test_bfm2009_outward_tl_is_kept_and_load_model_dispatch(tmp_path):
    path = tmp_path / "01_MorphableModel.mat"
    truth = write_bfm2009_fixture(path, inward=False)
    m = load_model(path)
    assert m.metadata["triangles_flipped"] is False
    np.testing.assert_array_equal(m.triangles, truth["triangles"])


def test_bfm2009_missing_file(tmp_path):
    with pytest.raises(ModelError) as e:
        load_bfm2009(tmp_path / "01_MorphableModel.mat")
    _assert_one_line(e, "does not exist", "01_MorphableModel.mat")


@pytest.mark.parametrize("fmt", ["v5", "v7.3"])
def test_bfm2009_truncated(tmp_path, fmt):
    path = tmp_path / "full.mat"
    write_bfm2009_fixture(path, fmt=fmt)
    data = path.read_bytes()
    cut = tmp_path / "cut.mat"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ModelError) as e:
        load_bfm2009(cut)
    _assert_one_line(e, "cut.mat", "download it again")


def test_bfm2009_garbage(tmp_path):
    p = tmp_path / "junk.mat"
    p.write_bytes(b"this is not a mat file at all" * 20)
    with pytest.raises(ModelError) as e:
        load_bfm2009(p)
    _assert_one_line(e, "junk.mat")


def _write_v5(path, data):
    import scipy.io

    scipy.io.savemat(str(path), data, format="5")


def test_bfm2009_missing_variable(tmp_path):
    path = tmp_path / "m.mat"
    raw = write_bfm2009_fixture(path)["raw"]
    _write_v5(path, {k: v for k, v in raw.items() if k not in ("tl", "texEV")})
    with pytest.raises(ModelError) as e:
        load_bfm2009(path)
    _assert_one_line(e, "m.mat: missing variable(s) texEV, tl")


def test_bfm2009_tl_zero_based_or_out_of_range(tmp_path):
    path = tmp_path / "m.mat"
    raw = write_bfm2009_fixture(path)["raw"]
    _write_v5(path, {**raw, "tl": raw["tl"] - 1})
    with pytest.raises(ModelError) as e:
        load_bfm2009(path)
    _assert_one_line(e, "tl has vertex indices 0..161 but they must be 1-based within 1..162")
    tl = raw["tl"].copy()
    tl[3, 1] = 500
    _write_v5(path, {**raw, "tl": tl})
    with pytest.raises(ModelError, match="tl has vertex indices 1..500"):
        load_bfm2009(path)


def test_bfm2009_mismatched_sizes_nan_and_non_orthonormal(tmp_path):
    path = tmp_path / "m.mat"
    raw = write_bfm2009_fixture(path)["raw"]
    _write_v5(path, {**raw, "texMU": raw["texMU"][:-3], "texPC": raw["texPC"][:-3]})
    with pytest.raises(ModelError) as e:
        load_bfm2009(path)
    _assert_one_line(e, "texMU has 3N=483 values but shapeMU has 3N=486")
    _write_v5(path, {**raw, "shapeEV": raw["shapeEV"][:-1]})
    with pytest.raises(ModelError, match="shapeEV has 9 values but shapePC has K=10 columns"):
        load_bfm2009(path)
    pc = raw["shapePC"].copy()
    pc[0, 0] = np.nan
    _write_v5(path, {**raw, "shapePC": pc})
    with pytest.raises(ModelError, match="shapePC contains 1 NaN or infinite values"):
        load_bfm2009(path)
    pc = raw["texPC"].copy()
    pc[:, 2] *= 1.5
    _write_v5(path, {**raw, "texPC": pc})
    with pytest.raises(ModelError) as e:
        load_bfm2009(path)
    _assert_one_line(e, "texPC columns are not orthonormal", "column 2 has squared norm 2.25")


def test_five_point_recipe_names_are_in_the_fixture():
    names = {n for g in FIVE_POINT_RECIPE for n in g}
    assert names <= set(LANDMARK_DIRECTIONS)


def test_a_loaded_model_is_kept_until_its_files_change(tmp_path):
    from morphgen.loading import load_model

    path = tmp_path / "m.h5"
    write_bfm2017_fixture(path, seed=0)
    a = load_model(path)
    assert load_model(path) is a                                   # the command's check, then its render
    write_bfm2017_fixture(path, seed=1)
    b = load_model(path)
    assert b is not a and b.file_hash != a.file_hash and not np.array_equal(a.shape.basis, b.shape.basis)
    moved = dict(b.landmarks, **{"center.nose.tip": 3})
    (tmp_path / "m.landmarks.json").write_text(json.dumps({"landmarks": moved}))
    assert load_model(path).landmarks == moved                     # a new landmark file beside it counts


def test_bfm2017_landmark_far_from_the_mesh_is_warned_and_snapped(bfm17):
    """A landmark picked on another mesh (or in metres) is still taken at its nearest
    vertex, but not silently: the warning names it and its distance."""
    path, truth = bfm17
    coords = {k: list(v) for k, v in truth["landmark_coordinates"].items()}
    coords["center.nose.tip"][2] += 50.0  # 5 cm in front of the face
    doc = [{"id": k, "coordinates": v} for k, v in coords.items()]
    replace_dataset(path, "/metadata/landmarks/json", json.dumps(doc))
    with pytest.warns(UserWarning, match=r"1 of \d+ landmarks .* over 10 mm .*'center.nose.tip', 5\d\.\d mm"):
        m = load_bfm2017(path)
    assert m.metadata["landmark_max_distance_mm"] > 49
    assert "center.nose.tip" in m.landmarks
