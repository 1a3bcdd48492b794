"""Appearance (morphgen.appearance): hair shells, eyewear, facial hair, skin, clothing and
catch-lights are per-(seed, identity, sample) choices recorded in the params, the numpy
and torch paths dress a mesh alike, every backend renders the same pixels, and an absent
part leaves the image as it was."""
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from morphgen.appearance import PARTS, AppearanceConfig, appearance_for, eyewear, hair
from morphgen.errors import ConfigError
from morphgen.layout import params_rows
from morphgen.loading import load_model
from morphgen.options import RENDER_DEFAULTS, scene_from_options
from morphgen.scene import SceneRenderer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _renderer(spec="full", size=64, **kw):
    return SceneRenderer(scene_from_options(dict(RENDER_DEFAULTS, **{"ids": 40, **kw}, size=size, appearance=spec)))


def test_spec_and_errors():
    full = AppearanceConfig.parse("full")
    assert full.active and AppearanceConfig.parse(full.to_spec()) == full
    assert "eyewear" not in dict(AppearanceConfig.parse("full,eyewear=0").probs)
    assert not AppearanceConfig.parse("off").active and not AppearanceConfig.parse("hair_vary=1").active
    for spec, msg in (("fancy", "not a preset"), ("full,hats=1", "unknown effect 'hats'"),
                      ("full,hair=2", "hair=2 must be a probability")):
        with pytest.raises(ConfigError, match=msg):
            AppearanceConfig.parse(spec)


def test_identity_parts_are_fixed_image_parts_vary_and_all_are_recorded():
    r = _renderer()
    looks = {(i, s): r.sampler.image_params(i, s).appearance for i in range(40) for s in range(6)}
    again = _renderer().sampler.image_params(7, 3).appearance
    assert again == looks[(7, 3)]                                                 # a pure function of the key
    for i in range(40):
        for part in ("hair", "beard", "skin"):
            assert len({json.dumps(looks[(i, s)][part], sort_keys=True) for s in range(6)}) == 1, (i, part)
    assert len({json.dumps(looks[(i, s)]["clothing"], sort_keys=True) for i in range(3) for s in range(6)}) > 10
    styles = {looks[(i, 0)]["hair"]["style"] for i in range(40) if looks[(i, 0)]["hair"]}
    assert len(styles) >= 5
    wearers = sum(any(looks[(i, s)]["eyewear"] for s in range(6)) for i in range(40))
    assert 4 <= wearers <= 25 and any(looks[(i, 0)]["beard"] for i in range(40))
    rec = json.loads(r.sampler.image_params(3, 1).to_json())
    assert rec["appearance"] == looks[(3, 1)]
    off = _renderer("off").sampler.image_params(3, 1)
    assert off.appearance is None and "appearance" not in off.to_record()
    # switching one part off leaves the others' draws alone
    no_glasses = _renderer("full,eyewear=0").sampler.image_params(3, 1).appearance
    assert {k: v for k, v in no_glasses.items()} == {k: v for k, v in looks[(3, 1)].items() if k != "eyewear"}


def test_numpy_and_torch_dress_a_mesh_alike():
    r = _renderer()
    ap = r.appearance
    params = [r.sampler.image_params(i, s) for i in range(6) for s in range(3)]
    arr = ap.arrays([p.appearance for p in params])
    v = r.decoder.vertices(np.stack([p.shape for p in params]), np.stack([p.expression for p in params]))
    a = r.decoder.albedo(np.stack([p.color for p in params]))
    vn, an = ap.apply(v, a, arr, np)
    vt, at = ap.apply(torch.from_numpy(v), torch.from_numpy(a), {k: torch.from_numpy(x) for k, x in arr.items()}, torch)
    assert vn.shape == (len(params), r.n_render_vertices, 3) == an.shape
    assert np.allclose(vn, vt.numpy(), atol=1e-3) and np.allclose(an, at.numpy(), atol=1e-5)
    assert int(r.triangles.max()) == r.n_render_vertices - 1


@pytest.mark.parametrize("spec", ["full,eyewear=1", "full,shine=1"])
def test_backends_render_the_same_pixels(spec):
    from morphgen.torch_scene import TorchScene

    r = _renderer(spec, size=64)
    params = [r.sampler.image_params(i, s) for i in range(4) for s in range(2)]
    plan = r.plan(params)
    cpu = r.render_plan_arrays(plan)["rgb"].astype(np.float32)
    dev = TorchScene(r.assets, "cpu", pool_size=0).render(plan)["rgb"].numpy() * 255
    d = np.abs(cpu - dev)
    assert d.mean() < 1.0 and np.mean(d > 8) < 0.01


def test_hidden_triangles_are_skipped_without_changing_the_picture():
    """The CPU renderer skips the hair shell's triangles that lie wholly under the scalp and
    absent glasses: the pixels stay those of drawing them, but where the shell shows through
    the open cut of the neck (a few pixels of a few images)."""
    from morphgen.render.renderer import render_batch

    r = _renderer("full", size=96)
    params = [r.sampler.image_params(i, s) for i in range(16) for s in range(2)]
    params[0] = replace(params[0], appearance=dict(params[0].appearance, hair=None, eyewear=None))   # bald, no glasses
    plan = r.plan(params)
    ap, nm = r.appearance, len(r.model.triangles)
    v, a = ap.apply(r.decoder.vertices(plan.shape, plan.expression), r.decoder.albedo(plan.color), plan.appearance, np)
    hidden = ap.hidden_triangles(plan.appearance)
    assert hidden.shape == (len(params), len(r.triangles)) and not hidden[:, :nm].any()
    assert hidden[0, nm:].all()                                   # nothing extra to draw for the bare head
    assert 0.3 < hidden[1:, nm:nm + len(ap.shell.triangles)].mean() < 1.0
    glasses = np.array([bool(p.appearance["eyewear"]) for p in params])
    assert not hidden[glasses, -1].any() and hidden[~glasses, -1].all()

    def draw(h):
        return render_batch(v, a, plan.sh, plan.pose(), r.triangles, r.settings, backgrounds=plan.backgrounds,
                            landmarks=r.five_point, hidden_triangles=h)

    full, skipped = draw(None), draw(hidden)
    differ = np.abs(full["rgb"].astype(int) - skipped["rgb"].astype(int)).max(-1) > 0
    assert differ.mean() < 2e-4, differ.sum()
    assert np.array_equal(full["visibility"], skipped["visibility"])
    with pytest.raises(ConfigError, match="hidden_triangles must be"):
        draw(hidden[:, :-1])


def test_beards_follow_face_size_as_a_tendency():
    from morphgen.appearance import beard_probability

    r = _renderer("full", ids=400)
    size = np.array([r.sampler._identity_look(i).face_size for i in range(400)])
    beard = np.array([bool(r.sampler.image_params(i, 0).appearance["beard"]) for i in range(400)])
    assert abs(size.mean()) < 0.2 and 0.8 < size.std() < 1.2          # a score like the coefficients
    assert beard[size > 0].mean() > beard[size < 0].mean() + 0.1       # larger faces: more beards
    assert 0.05 < beard[size < -1].mean() and beard[size > 1].mean() < 0.95   # a tendency, not a rule
    assert beard_probability(0.0, 3.0) == 0.0 and beard_probability(1.0, -3.0) == 1.0
    assert beard_probability(0.3, 0.0) == pytest.approx(0.3)


def test_lashes_darken_the_lid_margins_only():
    r = _renderer("eyes=1", size=64)
    ap, model = r.appearance, r.model
    lids = ap.lashes > 0.5
    assert 40 < lids.sum() < 600 and not (lids & model.regions["eyes"]).any()
    mean = model.shape.mean.reshape(-1, 3)
    pupils = mean[[model.landmarks["left.eye.pupil.center"], model.landmarks["right.eye.pupil.center"]]]
    offset = mean[lids][:, None] - pupils[None]                                     # (L, 2 eyes, 3) mm
    nearest = offset[np.arange(len(offset)), np.linalg.norm(offset, axis=-1).argmin(1)]
    assert np.abs(nearest[:, 0]).max() < 22 and np.abs(nearest[:, 1]).max() < 12    # around the eye openings
    upper = ap.lashes[lids][nearest[:, 1] > 0]
    assert len(upper) > 0.4 * lids.sum()                                            # mostly the upper lid
    look = r.sampler.image_params(2, 0).appearance["eyes"]
    assert 0.4 <= look["lashes"] <= 0.85
    old = ap.arrays([{"eyes": {"catchlight": 0.7}}])                  # records before lashes: none
    assert old["lashes"][0] == 0 and old["catchlight"][0] == np.float32(0.7)


def test_wrinkles_crease_the_face_only_and_follow_their_depth():
    r = _renderer("skin=1", size=64)
    ap, model = r.appearance, r.model
    creases = ap.wrinkles > 0.2
    assert 60 < creases.sum() < 1500
    for name in ("eyes", "lips", "hair", "ears"):
        assert not (creases & model.regions[name]).any(), name
    depths = [r.sampler.image_params(i, 0).appearance["skin"]["wrinkles"] for i in range(40)]
    assert 0.15 < np.mean(np.array(depths) == 0) < 0.6 and max(depths) > 0.7        # an age-like spread
    v = np.repeat(model.shape.mean.reshape(1, -1, 3).astype(np.float32), 3, 0)
    a = np.full_like(v, 0.6)
    looks = [{"skin": {"spots": [], "redness": 0.0, "wrinkles": w}} for w in (0.0, 0.5, 1.0)]
    _, albedo = ap.apply(v, a, ap.arrays(looks), np)
    albedo = albedo[:, :ap.n]
    assert np.array_equal(albedo[0], a[0])                                          # depth 0: untouched
    changed = (albedo[2] != a[2]).any(-1)
    assert changed.any() and not changed[~(ap.wrinkles > 0)].any()                 # only on the creases
    dark = 0.6 - albedo[:, creases, 0]
    assert (dark[2] > dark[1]).all() and (dark[1] > 0).all()
    old = ap.arrays([{"skin": {"spots": [], "redness": 0.05}}])                    # records before wrinkles
    assert old["wrinkles"][0] == 0


def test_fine_skin_texture_stays_on_the_face_skin_and_follows_its_strength():
    r = _renderer("skin=1", size=64)
    ap, model = r.appearance, r.model
    assert ap.pores_on.shape == (8, len(ap.spot_on))
    assert np.allclose(ap.pores_on.std(1), 1.0, atol=0.1) and np.abs(ap.pores_on.mean(1)).max() < 0.1
    look = r.sampler.image_params(3, 0).appearance["skin"]
    assert 0 <= look["pores"][0] < 8 and 0.02 <= look["pores"][1] <= 0.06
    v = np.repeat(model.shape.mean.reshape(1, -1, 3).astype(np.float32), 3, 0)
    a = np.full_like(v, 0.5)
    looks = [{"skin": {"spots": [], "redness": 0.0, "pores": [2, s]}} for s in (0.0, 0.03, 0.06)]
    _, albedo = ap.apply(v, a, ap.arrays(looks), np)
    log = np.log(albedo[:, :ap.n, 1] / 0.5)                                        # the green channel
    assert np.array_equal(log[0], np.zeros(ap.n))
    assert not log[2][np.setdiff1d(np.arange(ap.n), ap.spot_on)].any()          # face skin only
    assert np.allclose(log[2][ap.spot_on], 2 * log[1][ap.spot_on], atol=1e-5)     # in proportion to the strength
    assert 0.04 < log[2][ap.spot_on].std() < 0.08


def test_categorical_draws_equal_numpy_choice():
    from morphgen.probspec import Categorical

    p = (0.4, 0.15, 0.15, 0.1, 0.2)
    cat = Categorical(p)
    for seed in range(200):
        a, b = np.random.default_rng(seed), np.random.default_rng(seed)
        assert [int(a.choice(len(p), p=p)) for _ in range(3)] == [cat.draw(b) for _ in range(3)]
        assert a.random() == b.random()                                  # and leave the stream in step


def test_block_drawn_uniforms_equal_one_call_at_a_time():
    """hair.style_from and eyewear.style_from map a block of rng.random draws to
    low + (high - low) * u, as rng.uniform computes them: the styles stay those of one
    rng.uniform call at a time (the records of earlier datasets)."""
    bounds = [(1.5, 3.5), (5, 11), (0.0, 0.8), (0.55, 0.8), (1.3, 1.6), (0.015, 0.07), (0, 2 * np.pi), (2.0, 6.0)]
    for seed in range(50):
        a, b = np.random.default_rng(seed), np.random.default_rng(seed)
        block = a.random(len(bounds))
        assert [lo + (hi - lo) * u for (lo, hi), u in zip(bounds, block.tolist())] == \
            [b.uniform(lo, hi) for lo, hi in bounds]
        assert a.random() == b.random()
    assert hair.N_UNIFORMS == 21
    for seed in range(20):   # building a style or not leaves the generator alike
        a, b = np.random.default_rng(seed), np.random.default_rng(seed)
        hair.sample_style(a), eyewear.sample_style(a)
        hair.draw_style(b), eyewear.draw_style(b)
        assert a.random() == b.random()


def test_absent_parts_leave_the_image_alone():
    r = _renderer("full", size=64)
    p = r.sampler.image_params(5, 0)
    bare = replace(p, appearance={k: None for k in p.appearance})
    with_nothing = r.render([bare])[0].rgb.astype(int)
    plain = _renderer("off", size=64)
    base = plain.render([replace(p, appearance=None)])[0].rgb.astype(int)
    assert np.abs(with_nothing - base).max() <= 2        # shells inside the head, glasses collapsed: unseen
    dressed = r.render([replace(p, appearance=dict(p.appearance, eyewear=eyewear.sample_style(np.random.default_rng(0)),
                                                   hair=dict(hair.sample_style(np.random.default_rng(1)), style="medium",
                                                             length=15.0)))])[0].rgb.astype(int)
    assert np.abs(dressed - base).mean() > 3


def test_glasses_sit_on_the_eyes():
    m = load_model(None)
    ap = appearance_for(m)
    g = eyewear.sample_style(np.random.default_rng(3))
    coords = eyewear.frame_coords(g)
    assert coords.shape == (eyewear.N_VERTICES, 3)
    mean = (m.shape.mean.reshape(-1, 3) + m.expression.mean.reshape(-1, 3)).astype(np.float32)[None]
    placed = ap._place(mean, coords[None], _np_tensors(), np)[0]
    eyes = np.stack([mean[0, np.atleast_1d(gr)].mean(0) for gr in m.five_point_vertices()[:2]])
    rims = placed[:eyewear.N_RIM * 2].reshape(2, -1, 3).mean(1)
    assert np.linalg.norm(rims[:, :2] - eyes[:, :2], axis=1).max() < 12.0            # mm, in x and y
    assert (rims[:, 2] > eyes[:, 2]).all()                                             # in front of the eyes
    hidden = ap._place(mean, eyewear.frame_coords(None)[None], _np_tensors(), np)[0]
    assert np.ptp(hidden, axis=0).max() < 1e-4                                         # collapsed: zero area


def _np_tensors():
    from morphgen.appearance import _Tensors
    return _Tensors(np, None)


def test_models_without_hair_regions_dress_too(tiny_model, tmp_path):
    path = tmp_path / "tiny.npz"
    tiny_model.save_npz(path)
    r = SceneRenderer(scene_from_options(dict(RENDER_DEFAULTS, ids=4, size=48, appearance="full,shine=1", model=str(path))))
    out = r.render([r.sampler.image_params(i, 0) for i in range(4)])
    assert all(o.rgb.shape == (48, 48, 3) for o in out)


def test_render_cli_records_appearance_and_refuses_bad_specs(tmp_path):
    from morphgen.cli.main import cli

    res = CliRunner().invoke(cli, ["render", "--ids", "3", "--per-id", "2", "--size", "48", "--workers", "1", "--quiet",
                                   "--appearance", "full,eyewear=1,shine=0.5", "--outputs", "regions,correspondence",
                                   "--out", str(tmp_path / "ds")])
    assert res.exit_code == 0, res.output
    rows = [r for _, r in params_rows(tmp_path / "ds")]
    assert len(rows) == 6 and all(set(r["appearance"]) == set(PARTS) - {"hair_vary"} for r in rows)
    res = CliRunner().invoke(cli, ["render", "--ids", "2", "--size", "32", "--appearance", "full,hair=-1",
                                   "--out", str(tmp_path / "bad")])
    assert res.exit_code == 2 and "hair=-1 must be a probability" in res.output and not (tmp_path / "bad").exists()


def test_the_appearance_cache_keeps_only_the_last_few_models():
    """Each Scene of a decimated model brings a new model object: the cache must not keep
    every one (and its appearance fields) alive for the life of the process."""
    import dataclasses
    import gc
    import weakref

    from morphgen import appearance

    m = load_model(None)
    first = dataclasses.replace(m)
    assert appearance_for(first).model is first and appearance_for(first) is appearance_for(first)
    gone = weakref.ref(first)
    del first
    for _ in range(appearance._CACHE_SIZE):
        other = dataclasses.replace(m)
        assert appearance_for(other).model is other
    gc.collect()
    assert gone() is None
