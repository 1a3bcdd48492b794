import numpy as np
import pytest

from morphgen.distributions import Constant, Gaussian, Mixture, Uniform, check_within, parse_distribution
from morphgen.errors import ConfigError


@pytest.mark.parametrize("spec,expected", [
    ("gaussian", Gaussian()),
    ("gaussian(0, 20)", Gaussian(0, 20)),
    ("gaussian(1,2,trunc=3)", Gaussian(1, 2, 3)),
    ("uniform(-90, 90)", Uniform(-90, 90)),
    ("constant(0)", Constant(0)),
    ("0", Constant(0)),
    (2.5, Constant(2.5)),
    ("mixture(0.7*uniform(-35,35), 0.3*uniform(-90,90))",
     Mixture((0.7, 0.3), (Uniform(-35, 35), Uniform(-90, 90)))),
])
def test_parse_and_roundtrip(spec, expected):
    d = parse_distribution(spec)
    assert d == expected
    assert parse_distribution(str(d)) == d


@pytest.mark.parametrize("spec,msg", [
    ("uniform(5, 1)", "above high"),
    ("gaussian(0, -1)", ">= 0"),
    ("gaussian(0, 1, trunc=0)", "trunc must be > 0"),
    ("cauchy(0, 1)", "unknown distribution"),
    ("uniform(a, 1)", "not a number"),
    ("mixture(uniform(0,1))", "weight\\*distribution"),
    ("mixture(-1*uniform(0,1))", "weights must be > 0"),
    ("uniform(0, inf)", "finite"),
])
def test_bad_specs(spec, msg):
    with pytest.raises(ConfigError, match=msg):
        parse_distribution(spec)


def test_gaussian_sd_is_a_true_standard_deviation():
    x = Gaussian(3, 20).sample(np.random.default_rng(0), 200_000)
    assert abs(x.mean() - 3) < 0.3 and abs(x.std() - 20) < 0.2


def test_truncated_gaussian_stays_in_range_and_is_deterministic():
    d = Gaussian(0, 1, trunc=1.5)
    a = d.sample(np.random.default_rng(7), 10_000)
    b = d.sample(np.random.default_rng(7), 10_000)
    assert np.abs(a).max() <= 1.5 and np.array_equal(a, b)
    assert a.std() < 0.8  # truncation narrows the spread


def test_uniform_and_mixture_ranges():
    u = Uniform(-35, 35).sample(np.random.default_rng(0), 10_000)
    assert u.min() >= -35 and u.max() <= 35 and abs(u.mean()) < 1.5
    m = parse_distribution("mixture(0.9*constant(0), 0.1*constant(10))").sample(np.random.default_rng(0), 10_000)
    assert set(np.unique(m)) == {0.0, 10.0} and 0.08 < (m == 10).mean() < 0.12


def test_check_within():
    check_within(Uniform(-90, 90), -180, 180, "yaw")
    check_within(Gaussian(0, 20), -180, 180, "yaw")  # 5 sd inside
    with pytest.raises(ConfigError, match="yaw distribution uniform\\(-200, 90\\) reaches beyond"):
        check_within(Uniform(-200, 90), -180, 180, "yaw")
    with pytest.raises(ConfigError):
        check_within(Gaussian(0, 60), -180, 180, "yaw")
