import numpy as np
import pytest

from morphgen.distributions import Constant, Uniform, parse_distribution
from morphgen.errors import ConfigError
from morphgen.illumination import make_illumination
from morphgen.sampling import (ControlledGrid, Decoder, MixupConfig, PoseConfig, SamplingConfig, SceneSampler,
                               pose_config)


def sampler(model, **kw) -> SceneSampler:
    return SceneSampler(model, SamplingConfig(**kw), make_illumination("builtin"))


def same(a, b) -> bool:
    ra, rb = a.to_record(), b.to_record()
    return ra == rb


def test_params_are_pure_functions_of_seed_identity_sample(tiny_model):
    s1 = sampler(tiny_model, seed=3, n_identities=50)
    s2 = sampler(tiny_model, seed=3, n_identities=50)
    forward = [s1.image_params(i, n) for i in range(5) for n in range(4)]
    backward = [s2.image_params(i, n) for i in reversed(range(5)) for n in reversed(range(4))]
    for a, b in zip(forward, reversed(backward)):
        assert same(a, b)
    # a different seed changes everything; another identity changes the face
    other = sampler(tiny_model, seed=4, n_identities=50).image_params(0, 0)
    assert not np.allclose(other.shape, forward[0].shape)
    assert not np.allclose(forward[0].shape, forward[4].shape)


def test_identity_shared_across_samples(tiny_model):
    s = sampler(tiny_model, n_identities=10)
    a, b = s.image_params(7, 0), s.image_params(7, 9)
    assert np.array_equal(a.shape, b.shape) and np.array_equal(a.color, b.color)
    assert a.yaw != b.yaw and not np.array_equal(a.sh, b.sh)


def test_component_counts_and_expressions(tiny_model):
    s = sampler(tiny_model, shape_components=3, color_components=2, expression_components=1)
    p = s.image_params(0, 0)
    assert p.shape.shape == (3,) and p.color.shape == (2,) and p.expression.shape == (1,)
    p = sampler(tiny_model, expressions=False).image_params(0, 0)
    assert p.expression.shape == (0,)
    with pytest.raises(ConfigError, match="asked for 99 shape components but the model has 8"):
        sampler(tiny_model, shape_components=99)
    with pytest.raises(ConfigError, match=">= 0"):
        SamplingConfig(color_components=-1)
    with pytest.raises(ConfigError, match="identities must be >= 1"):
        SamplingConfig(n_identities=0)


@pytest.mark.parametrize("dist", ["gaussian", "gaussian(0, 1, trunc=2)", "uniform(-2, 2)", "constant(0)",
                                  "mixture(0.5*constant(0), 0.5*gaussian)"])
def test_every_coefficient_sampler(tiny_model, dist):
    d = parse_distribution(dist)
    s = sampler(tiny_model, shape=d, color=d, n_identities=200)
    shapes = np.stack([s.identity_coefficients(i)[0] for i in range(200)])
    lo, hi = d.bounds()
    assert shapes.min() >= lo - 1e-6 and shapes.max() <= hi + 1e-6
    if dist == "constant(0)":
        assert not shapes.any()  # the mean face
    else:
        assert shapes.std() > 0.3


def test_pose_presets_and_ranges(tiny_model):
    for name, yaw_max in (("syn1m", 90), ("frontal", 35)):
        s = sampler(tiny_model, pose=pose_config(name), n_identities=20)
        yaws = np.array([s.image_params(i, n).yaw for i in range(20) for n in range(20)])
        assert np.abs(yaws).max() <= yaw_max and np.abs(yaws).max() > 0.8 * yaw_max
    with pytest.raises(ConfigError, match="unknown pose preset"):
        pose_config("sideways")
    with pytest.raises(ConfigError, match="yaw distribution uniform\\(-200, 200\\) reaches beyond"):
        PoseConfig(yaw=Uniform(-200, 200))
    with pytest.raises(ConfigError, match="unknown pose key"):
        pose_config({"yaww": "uniform(0, 1)"})


def test_pose_file(tiny_model, tmp_path):
    f = tmp_path / "pose.yaml"
    f.write_text("yaw: gaussian(0, 20, trunc=3)\npitch: constant(5)\n")
    cfg = pose_config(str(f))
    assert cfg.pitch == Constant(5) and str(cfg.yaw) == "gaussian(0, 20, trunc=3)"
    with pytest.raises(ConfigError, match="does not exist"):
        pose_config(str(tmp_path / "missing.yaml"))


def test_controlled_grid(tiny_model):
    grid = ControlledGrid.parse({"yaw": "-90:90:15", "lights": 3})
    s = sampler(tiny_model, grid=grid)
    assert s.grid_size == 13 * 3
    pts = [s.image_params(0, n) for n in range(s.grid_size)]
    assert sorted({p.yaw for p in pts}) == list(np.arange(-90, 91, 15).astype(float))
    assert len({p.sh.tobytes() for p in pts}) == 3
    # the light set is shared by identities
    assert {p.sh.tobytes() for p in pts} == {s.image_params(5, n).sh.tobytes() for n in range(3)}
    with pytest.raises(ConfigError, match="start:stop:step"):
        ControlledGrid.parse({"yaw": "-90..90"})
    with pytest.raises(ConfigError, match="beyond"):
        ControlledGrid.parse({"yaw": "-270:90:15"})
    with pytest.raises(ConfigError, match="unknown grid key"):
        ControlledGrid.parse({"zoom": "1:2:1"})


def test_a_recorded_soft_label_reads_back_as_recorded(tiny_model):
    """A mixup record's soft label read again (a --from-params render, training on a
    params file): a Parquet file's float32 weight comes back as the recorded one, not as
    0.6000000238 (and its partner's as 0.39999998); a malformed label is a one-line error."""
    import json

    from morphgen.sampling import ImageParams

    s = sampler(tiny_model, n_identities=10, mixup=MixupConfig(phis=(0.6, 0.8), fraction=0.5))
    p = next(p for p in (s.image_params(i, n) for i in range(10) for n in range(20)) if p.soft_label is not None)
    rec = json.loads(json.dumps(p.to_record()))
    stored = rec | {"soft_label": {"ids": rec["soft_label"]["ids"],
                                   "weights": [float(np.float32(w)) for w in rec["soft_label"]["weights"]]}}
    assert ImageParams.from_record(stored).soft_label == p.soft_label
    for label, match in (("x", "must be null or"), ({"ids": [1], "weights": [0.6]}, "must be null or"),
                         ({"ids": [1, -2], "weights": [0.6, 0.4]}, "partner must be a whole number"),
                         ({"ids": [1, 2], "weights": [1.5, -0.5]}, "strictly between 0 and 1")):
        with pytest.raises(ConfigError, match=match):
            ImageParams.from_record(rec | {"soft_label": label}, "f.jsonl:1")


def test_identity_mixup_soft_labels(tiny_model):
    s = sampler(tiny_model, n_identities=10, mixup=MixupConfig(phis=(0.6, 0.8), fraction=0.5))
    params = [s.image_params(i, n) for i in range(10) for n in range(20)]
    mixed = [p for p in params if p.soft_label is not None]
    assert 0.35 < len(mixed) / len(params) < 0.65
    for p in mixed:
        lab = p.soft_label
        assert lab["ids"][0] == p.identity and lab["ids"][1] != p.identity
        assert lab["weights"][0] in (0.6, 0.8) and abs(sum(lab["weights"]) - 1) < 1e-9
        a1, _ = s.identity_coefficients(p.identity)
        a2, _ = s.identity_coefficients(p.mixup_partner)
        np.testing.assert_allclose(p.shape, p.mixup_weight * a1 + (1 - p.mixup_weight) * a2, rtol=1e-5)
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        MixupConfig(phis=(1.0,))
    with pytest.raises(ConfigError, match="fraction"):
        MixupConfig(fraction=1.5)


def test_decoder_matches_pca_instance(tiny_model):
    s = sampler(tiny_model)
    dec = Decoder.for_sampler(tiny_model, s)
    p = s.image_params(2, 1)
    v = dec.vertices(p.shape[None], p.expression[None])[0]
    expected = tiny_model.shape.instance(p.shape) + tiny_model.expression.instance(p.expression)
    np.testing.assert_allclose(v, expected, atol=1e-3)
    alb = dec.albedo(p.color[None])[0]
    np.testing.assert_allclose(alb, np.clip(tiny_model.color.instance(p.color), 0, 1), atol=1e-5)


def test_restricted_decoder_matches_the_full_decode():
    from conftest import make_tiny_model

    model = make_tiny_model(20, 24)
    full = Decoder(model, 5, 4, 3 if model.expression is not None else 0)
    ids = [7, 2, 11]
    part = full.restricted(ids)
    rng = np.random.default_rng(0)
    shape, color = rng.normal(size=(4, 5)), rng.normal(size=(4, 4))
    expr = rng.normal(size=(4, 3)) if full.expr_basis is not None else None
    assert np.allclose(part.vertices(shape, expr), full.vertices(shape, expr)[:, ids], atol=1e-4)
    assert np.allclose(part.albedo(color), full.albedo(color)[:, ids], atol=1e-6)


def test_batch_decode_equals_each_row_decoded_alone():
    """Decoder shares the work of repeated rows (one identity's batch, or a few identities
    mixed): every row must come out as if decoded alone (to float32 rounding: BLAS sums a
    batch's matmul in another order than one row's)."""
    from conftest import make_tiny_model

    model = make_tiny_model(20, 24)
    dec = Decoder(model, 5, 4, 3 if model.expression is not None else 0)
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 5)).astype(np.float32)
    ca, cb = rng.normal(size=(2, 4)).astype(np.float32)
    expr = rng.normal(size=(6, 3)).astype(np.float32) if dec.expr_basis is not None else None
    for shape, color in (([a] * 6, [ca] * 6), ([a, a, b, a, b, b], [ca, cb, cb, ca, ca, cb]),
                         ([a, b, a * 2, b * 2, a * 3, b * 3], [ca, cb, ca * 2, cb * 2, ca * 3, cb * 3])):
        v, al = dec.vertices(np.stack(shape), expr), dec.albedo(np.stack(color))
        assert v.shape == al.shape == (6, model.n_vertices, 3)
        for k in range(6):
            one = dec.vertices(shape[k][None], None if expr is None else expr[k:k + 1])[0]
            np.testing.assert_allclose(v[k], one, rtol=1e-5, atol=1e-4)
            np.testing.assert_allclose(al[k], dec.albedo(color[k][None])[0], rtol=1e-5, atol=1e-6)


def test_shape_and_expression_rows_broadcast_in_every_combination():
    """One shape row or a batch of them (repeated, or distinct) against one expression row or
    a batch, in float32 and float64: (B, N, 3), each image its shape plus its expression, in
    the wider dtype. (Repeated shape rows are decoded once: with one expression row for the
    batch that row must still come out B times.)"""
    from conftest import make_tiny_model

    model = make_tiny_model(20, 24)
    dec = Decoder(model, 5, 4, 3)
    rng = np.random.default_rng(2)
    s = rng.normal(size=(4, 5)).astype(np.float32)
    e = rng.normal(size=(4, 3)).astype(np.float32)
    mean = (model.shape.mean + model.expression.mean).astype(np.float64)

    def truth(shape, expr):  # float64, broadcast by numpy's rules
        return (mean + shape.astype(np.float64) @ dec.shape_basis.T.astype(np.float64)
                + expr.astype(np.float64) @ dec.expr_basis.T.astype(np.float64))

    for shape in (s[:1], np.repeat(s[:1], 4, 0), s):
        for expr in (e[:1], e):
            for dtype in (np.float32, np.float64):
                got = dec.vertices(shape, expr.astype(dtype))
                n = max(len(shape), len(expr))
                assert got.shape == (n, model.n_vertices, 3) and got.dtype == np.result_type(np.float32, dtype)
                np.testing.assert_allclose(got.reshape(n, -1), truth(shape, expr), rtol=1e-5, atol=1e-4)


def test_decode_bits_do_not_depend_on_the_blas_thread_count():
    """A process with a threaded BLAS (--workers 1, the Python API) decodes the same bits as
    the writer's one-thread workers: OpenBLAS's threaded sgemm rounded the expression batch
    of the embedded model differently, and 30 of 1,500 images of `morphgen render --size
    128` differed between --workers 1 and 2 by one grey level at a pixel."""
    import os

    from threadpoolctl import threadpool_limits

    from morphgen.loading import load_model

    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: numpy's BLAS has no second thread to compare with")
    model = load_model(None)
    dec = Decoder(model, 40, 40, 20)
    rng = np.random.default_rng(3)
    shape, expr, color = (rng.normal(size=(20, k)).astype(np.float32) for k in (40, 20, 40))
    out = {}
    for n in (1, 2):
        with threadpool_limits(n, user_api="blas"):
            out[n] = dec.vertices(shape, expr), dec.albedo(color)
    assert np.array_equal(out[1][0], out[2][0]) and np.array_equal(out[1][1], out[2][1])


def test_to_json_is_the_record_as_json(tiny_model):
    """to_json caches the coefficients' text; it must stay byte-identical to dumping the record."""
    import dataclasses
    import json

    plain = sampler(tiny_model, n_identities=6)
    mixed = sampler(tiny_model, n_identities=6, mixup=MixupConfig(fraction=0.5))
    bare = sampler(tiny_model, n_identities=6, expressions=False, shape_components=0)
    for s in (plain, mixed, bare):
        for i in range(6):
            for n in range(4):
                p = s.image_params(i, n)
                assert p.to_json() == json.dumps(p.to_record())
    assert any(mixed.image_params(i, n).soft_label for i in range(6) for n in range(4))
    # arrays the sampler never makes are encoded as to_record does, not from a flat cache
    p = plain.image_params(0, 0)
    for shape in (np.arange(6.0).reshape(2, 3), np.array(0.5), np.arange(6.0).reshape(2, 3).ravel(),
                  np.array([1, 2], dtype=object), np.arange(8.0)[::2]):
        q = dataclasses.replace(p, shape=shape)
        assert q.to_json() == json.dumps(q.to_record())
