"""Spherical harmonics conventions, the Basel Illumination Prior reader and the samplers."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from morphgen.errors import ConfigError, DataError
from morphgen.illumination import (DEFAULT_ENERGY, AdjustedPrior, BIPEmpirical, BIPGaussian, BIPWarning, BuiltinPrior,
                                   FrontalLight, IlluminationPrior, adjust, load_bip, make_illumination,
                                   mean_frontal_irradiance, parse_rps_light, sh_ambient, sh_directional, sh_energy)
from morphgen.spherical_harmonics import LAMBERT_KERNEL, SH_NORMALISATION, irradiance, sh_basis, shade

try:
    from tests.fixtures import random_sh, rps_document, write_bip_folder
except ImportError:  # tests/ itself on sys.path
    from fixtures import random_sh, rps_document, write_bip_folder

# hand-computed constants
N0, N1, N2_1, N2_0, N2_2 = 0.2820947918, 0.4886025119, 1.0925484306, 0.3153915653, 0.5462742153


def sphere_points(n: int = 20000) -> np.ndarray:
    """Fibonacci lattice: nearly uniform unit vectors (equal-area cells of 4 pi / n)."""
    i = np.arange(n) + 0.5
    z = 1.0 - 2.0 * i / n
    phi = math.pi * (1.0 + 5 ** 0.5) * i
    r = np.sqrt(1.0 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


# ---- SH basis and Lambert kernel ------------------------------------------------------
def test_normalisation_constants_and_kernel():
    np.testing.assert_allclose(SH_NORMALISATION, [N0, N1, N1, N1, N2_1, N2_1, N2_0, N2_1, N2_2], rtol=1e-9)
    np.testing.assert_allclose(LAMBERT_KERNEL, [math.pi] + [2 * math.pi / 3] * 3 + [math.pi / 4] * 5)
    assert LAMBERT_KERNEL.shape == (9,) and isinstance(LAMBERT_KERNEL, np.ndarray)


@pytest.mark.parametrize("normal,expected", [
    ((1, 0, 0), [N0, 0, 0, N1, 0, 0, -N2_0, 0, N2_2]),
    ((-1, 0, 0), [N0, 0, 0, -N1, 0, 0, -N2_0, 0, N2_2]),
    ((0, 1, 0), [N0, N1, 0, 0, 0, 0, -N2_0, 0, -N2_2]),
    ((0, -1, 0), [N0, -N1, 0, 0, 0, 0, -N2_0, 0, -N2_2]),
    ((0, 0, 1), [N0, 0, N1, 0, 0, 0, 2 * N2_0, 0, 0]),
    ((0, 0, -1), [N0, 0, -N1, 0, 0, 0, 2 * N2_0, 0, 0]),
])
def test_sh_basis_axis_normals(normal, expected):
    np.testing.assert_allclose(sh_basis(np.array(normal, dtype=float)), expected, atol=1e-9)


def test_sh_basis_diagonal_normal_and_shapes():
    s = 1 / math.sqrt(3)
    b = sh_basis(np.array([s, s, s]))
    np.testing.assert_allclose(b, [N0, N1 * s, N1 * s, N1 * s, N2_1 / 3, N2_1 / 3, 0.0, N2_1 / 3, 0.0], atol=1e-9)
    n = np.zeros((4, 5, 3), dtype=np.float32)
    n[..., 2] = 1
    out = sh_basis(n)
    assert out.shape == (4, 5, 9) and out.dtype == np.float32
    assert sh_basis(n.astype(np.float64)).dtype == np.float64


def test_sh_basis_is_orthonormal_over_the_sphere():
    p = sphere_points()
    y = sh_basis(p)
    gram = y.T @ y * (4 * math.pi / len(p))
    np.testing.assert_allclose(gram, np.eye(9), atol=2e-3)


def test_lambert_kernel_is_the_clamped_cosine_convolution():
    # irradiance of the environment L = Y_i is  k_l(i) * Y_i(n)
    p = sphere_points(40000)
    dw = 4 * math.pi / len(p)
    y = sh_basis(p)
    for normal in ([0, 0, 1.0], [0.6, 0.0, 0.8], [-0.48, 0.6, -0.64]):
        n = np.asarray(normal)
        cos = np.clip(p @ n, 0, None)
        integral = (y * cos[:, None]).sum(0) * dw
        np.testing.assert_allclose(integral, LAMBERT_KERNEL * sh_basis(n), atol=2e-3)


def test_irradiance_and_shade_formula():
    rng = np.random.default_rng(0)
    coeffs = rng.normal(size=(9, 3))
    n = sphere_points(50)
    expect = (sh_basis(n) * LAMBERT_KERNEL) @ coeffs
    np.testing.assert_allclose(irradiance(n, coeffs), expect)
    albedo = rng.uniform(size=(50, 3))
    np.testing.assert_allclose(shade(albedo, n, coeffs), albedo * expect)
    # a constant environment of irradiance (0.2, 0.5, 1) lights every normal the same
    np.testing.assert_allclose(irradiance(n, sh_ambient([0.2, 0.5, 1.0])), np.tile([0.2, 0.5, 1.0], (50, 1)))


def test_directional_light_and_frontal_light():
    c = sh_directional([0, 0, 1.0], [1, 1, 1])
    # band-limited max(0, cos): 1/4 + 1/2 t + 5/16 (3t^2 - 1) / 2 ... = 1.0625 at t=1, 0.0625 at t=-1
    np.testing.assert_allclose(irradiance(np.array([0, 0, 1.0]), c), 1.0625)
    np.testing.assert_allclose(irradiance(np.array([0, 0, -1.0]), c), 0.0625)
    f = FrontalLight().sample(np.random.default_rng(0))
    assert f.shape == (9, 3) and f.dtype == np.float32
    np.testing.assert_allclose(irradiance(np.array([0, 0, 1.0]), f), 1.0, rtol=1e-6)  # 0.8 + 0.2
    np.testing.assert_allclose(irradiance(np.array([1.0, 0, 0]), f), 0.8, rtol=1e-6)
    np.testing.assert_allclose(f[4:], 0)
    # mean over the camera-facing hemisphere, closed form vs numerical
    p = sphere_points(40000)
    front = p[p[:, 2] > 0]
    rng = np.random.default_rng(1)
    c = rng.normal(size=(9, 3))
    np.testing.assert_allclose(mean_frontal_irradiance(c), irradiance(front, c).mean(0), atol=3e-3)


# ---- .rps files -----------------------------------------------------------------------
def test_parse_rps_forms_and_band_padding():
    rng = np.random.default_rng(2)
    c = random_sh(rng, 1)[0]
    for form in ("v4", "v3", "v2", "v1"):
        np.testing.assert_allclose(parse_rps_light(rps_document(c, form)), c, err_msg=form)
    # 2 bands (4 coefficients) padded with zeros, 4 bands (16) truncated to 9
    four = parse_rps_light({"environmentMap": {"coefficients": c[:4].tolist()}})
    np.testing.assert_allclose(four[:4], c[:4])
    np.testing.assert_allclose(four[4:], 0)
    sixteen = np.concatenate([c, np.ones((7, 3))])
    np.testing.assert_allclose(parse_rps_light({"environmentMap": {"coefficients": sixteen.tolist()}}), c)
    for bad in ({"illumination": {"@type": "DirectionalLight"}}, {"environmentMap": {"coefficients": []}},
                {"environmentMap": {"coefficients": [[1, 2, 3]] * 5}}, {"pose": {}}, []):
        with pytest.raises(ValueError):
            parse_rps_light(bad)


def test_load_bip_reads_all_forms_recursively_sorted(tmp_path):
    rng = np.random.default_rng(3)
    coeffs = random_sh(rng, 12)
    files = write_bip_folder(tmp_path / "bip", coeffs)
    out = load_bip(tmp_path / "bip")
    assert out.shape == (12, 9, 3) and out.dtype == np.float32
    order = [int(p.stem.split("_")[1]) for p in files]  # sorted relative paths: part0/..., part1/...
    np.testing.assert_allclose(out, coeffs[order], atol=1e-6)


def test_load_bip_skips_bad_files_with_a_counted_warning(tmp_path):
    coeffs = random_sh(np.random.default_rng(4), 5)
    write_bip_folder(tmp_path, coeffs, bad_files=4)
    with pytest.warns(BIPWarning, match=r"skipped 4 of 9 \.rps files"):
        out = load_bip(tmp_path)
    assert out.shape == (5, 9, 3)


def test_load_bip_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_bip(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .rps files"):
        load_bip(tmp_path / "empty")
    (tmp_path / "file.rps").write_text("{}")
    with pytest.raises(DataError, match="not a folder"):
        load_bip(tmp_path / "file.rps")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.rps").write_text("{nope")
    (bad / "b.rps").write_text(json.dumps({"illumination": {"@type": "DirectionalLight"}}))
    with pytest.raises(DataError) as e:
        load_bip(bad)
    assert "none of the 2 .rps files" in str(e.value) and "\n" not in str(e.value)


# ---- samplers -------------------------------------------------------------------------
@pytest.fixture
def bip_dir(tmp_path):
    coeffs = random_sh(np.random.default_rng(5), 40)
    write_bip_folder(tmp_path / "bip", coeffs)
    return tmp_path / "bip"


def test_empirical_draws_rows_of_the_prior(bip_dir):
    data = load_bip(bip_dir)
    prior = BIPEmpirical(data)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(400):
        s = prior.sample(rng)
        assert s.shape == (9, 3) and s.dtype == np.float32
        idx = np.flatnonzero((np.abs(data - s) < 1e-7).all(axis=(1, 2)))
        assert len(idx) == 1
        seen.add(int(idx[0]))
    assert len(seen) == len(data)  # every light is reachable


def test_gaussian_matches_mean_and_covariance(bip_dir):
    data = load_bip(bip_dir).reshape(-1, 27).astype(np.float64)
    prior = BIPGaussian(data.reshape(-1, 9, 3))
    rng = np.random.default_rng(1)
    s = np.stack([prior.sample(rng) for _ in range(6000)]).reshape(-1, 27)
    np.testing.assert_allclose(s.mean(0), data.mean(0), atol=0.02)
    np.testing.assert_allclose(np.cov(s, rowvar=False), np.cov(data, rowvar=False), atol=0.01)


def test_no_color_and_fixed_energy():
    c = random_sh(np.random.default_rng(6), 1)[0]
    g = adjust(c, no_color=True)
    np.testing.assert_allclose(g, np.repeat(c.mean(1, keepdims=True), 3, axis=1), rtol=1e-6)
    e = adjust(c, energy=DEFAULT_ENERGY)
    assert sh_energy(e) == pytest.approx(6.33, rel=1e-5)
    np.testing.assert_allclose(e / np.linalg.norm(e), c / np.linalg.norm(c), atol=1e-6)  # same direction
    both = adjust(c, no_color=True, energy=2.0)
    assert sh_energy(both) == pytest.approx(2.0, rel=1e-5)
    assert np.allclose(both[:, 0], both[:, 1]) and np.allclose(both[:, 0], both[:, 2])


@pytest.mark.parametrize("kind", ["builtin", "bip-empirical", "bip-gaussian", "frontal"])
def test_make_illumination_kinds_options_and_determinism(kind, bip_dir):
    prior = make_illumination(kind, bip_dir=bip_dir)
    assert isinstance(prior, IlluminationPrior)
    a = [prior.sample(np.random.default_rng(42)) for _ in range(2)]
    assert a[0].shape == (9, 3) and a[0].dtype == np.float32
    np.testing.assert_array_equal(a[0], a[1])  # a function of the generator only
    adjusted = make_illumination(kind, bip_dir=bip_dir, no_color=True, energy=True)
    assert isinstance(adjusted, AdjustedPrior)
    rng = np.random.default_rng(7)
    for _ in range(20):
        s = adjusted.sample(rng)
        assert sh_energy(s) == pytest.approx(DEFAULT_ENERGY, rel=1e-5)
        np.testing.assert_allclose(s[:, 0], s[:, 2])
    custom = make_illumination(kind, bip_dir=bip_dir, energy=3.0).sample(rng)
    assert sh_energy(custom) == pytest.approx(3.0, rel=1e-5)


def test_make_illumination_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown illumination kind 'sunny'.*builtin, bip-empirical"):
        make_illumination("sunny")
    with pytest.raises(ConfigError, match="needs the Basel Illumination Prior folder"):
        make_illumination("bip-gaussian")
    with pytest.raises(DataError, match="does not exist"):
        make_illumination("bip-empirical", bip_dir=tmp_path / "nope")
    for bad in (0, -1.0, float("nan"), "lots"):
        with pytest.raises(ConfigError, match="energy must be a positive number"):
            make_illumination("builtin", energy=bad)
    assert isinstance(make_illumination("frontal", energy=False), FrontalLight)
    with pytest.raises(ConfigError):
        BIPEmpirical(np.zeros((3, 4, 3)))


def test_builtin_prior_is_physically_plausible():
    """Camera-facing normals are lit (clamp rarely needed), light mostly from the front and
    above, exposure near 1, mild colour."""
    rng = np.random.default_rng(123)
    p = sphere_points(4000)
    front = p[p[:, 2] > 0]
    prior = BuiltinPrior()
    draws = 1000
    positive = 0
    ups, fronts = 0, 0
    for _ in range(draws):
        c = prior.sample(rng)
        e = irradiance(front, c)
        positive += e.min() > 0
        mean = mean_frontal_irradiance(c)
        assert 0.8 < mean.mean() < 1.2
        assert mean.max() / mean.min() < 1.35  # mild tint
        # direction of the linear (band-1) part of the light: (x, y, z) = coeffs (3, 1, 2)
        lum = c.mean(1)
        ups += lum[1] > 0
        fronts += lum[2] > 0
    assert positive >= 0.95 * draws
    assert fronts >= 0.9 * draws and ups >= 0.7 * draws
