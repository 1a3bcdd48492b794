"""Shine (issue 17): an identity's oily skin is an appearance part recorded in the params,
it makes white highlights under the image's SH light on the T-zone (forehead, nose,
chin) and less on the cheeks, nothing where its weight is zero, both render paths draw
it alike, and renders without it keep every byte."""
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from morphgen.appearance import AppearanceConfig, appearance_for
from morphgen.errors import ConfigError
from morphgen.illumination import sh_ambient, sh_directional
from morphgen.loading import load_model
from morphgen.options import RENDER_DEFAULTS, scene_from_options
from morphgen.render.camera import Pose
from morphgen.render.renderer import RenderSettings, render_batch
from morphgen.render.torch_render import render_torch
from morphgen.scene import SceneRenderer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _renderer(spec, size=64, **kw):
    return SceneRenderer(scene_from_options(dict(RENDER_DEFAULTS, ids=30, size=size, appearance=spec, **kw)))


def test_shine_is_an_identity_part_recorded_and_opt_in():
    r = _renderer("full,shine=0.5")
    looks = {(i, s): r.sampler.image_params(i, s).appearance for i in range(30) for s in range(3)}
    assert _renderer("full,shine=0.5").sampler.image_params(7, 2).appearance == looks[(7, 2)]
    for i in range(30):
        assert len({json.dumps(looks[(i, s)]["shine"]) for s in range(3)}) == 1, i
    shiny = [looks[(i, 0)]["shine"] for i in range(30) if looks[(i, 0)]["shine"]]
    assert 6 <= len(shiny) <= 24
    assert all(0.2 <= x["strength"] <= 1.0 and 0.0 <= x["tzone"] <= 1.0 for x in shiny)
    assert json.loads(r.sampler.image_params(3, 1).to_json())["appearance"] == looks[(3, 1)]
    # not in `full` (not yet measured), and opting in leaves every other part's draws alone
    assert "shine" not in dict(AppearanceConfig.parse("full").probs)
    full = _renderer("full").sampler.image_params(3, 1).appearance
    assert full == {k: v for k, v in looks[(3, 1)].items() if k != "shine"}


def test_a_bad_shine_value_is_a_one_line_error(tmp_path):
    from morphgen.cli.main import cli

    with pytest.raises(ConfigError, match="shine=2 must be a probability"):
        AppearanceConfig.parse("full,shine=2")
    res = CliRunner().invoke(cli, ["render", "--ids", "2", "--size", "32", "--appearance", "shine=2",
                                   "--out", str(tmp_path / "bad")])
    assert res.exit_code == 2 and "shine=2 must be a probability" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "bad").exists()


def test_the_highlights_show():
    """(The CPU and GPU renderers' agreement with shine on is in test_appearance.)"""
    r = _renderer("full,shine=1", size=64)
    params = [r.sampler.image_params(i, s) for i in range(4) for s in range(2)]
    cpu = r.render_plan_arrays(r.plan(params))["rgb"].astype(np.float32)
    matte = r.render_plan_arrays(r.plan([replace(p, appearance=dict(p.appearance, shine=None)) for p in params]))
    assert np.abs(cpu - matte["rgb"]).max() > 20                     # the highlights are there to compare


def _frontal_face():
    """The embedded model's mean face, frontal, lit from the front and a little above, with
    fully shiny skin (half of it confined to the T-zone)."""
    m = load_model(None)
    ap = appearance_for(m)
    n = m.n_vertices
    mean = (m.shape.mean.reshape(-1, 3) + m.expression.mean.reshape(-1, 3)).astype(np.float32)
    weights = ap.specular(ap.arrays([{"shine": {"strength": 1.0, "tzone": 0.5}}]), np)[:, :n]
    light = sh_ambient([0.3] * 3) + sh_directional([0.0, 0.4, 1.0], [0.6] * 3)
    kw = {"pose": Pose.create(yaw=[0.0], pitch=[0.0], roll=[0.0], batch=1), "triangles": m.triangles,
          "settings": RenderSettings(128, 128, outputs=("rgb", "albedo", "landmarks2d")),
          "five_point_groups": m.five_point_vertices()}
    return m, ap, mean, weights, light, kw


def test_highlights_on_the_t_zone_and_nothing_where_the_weight_is_zero():
    m, ap, mean, weights, light, kw = _frontal_face()
    albedo = m.color.mean.reshape(-1, 3)
    matte = render_batch(mean[None], albedo, light, **kw)
    shiny = render_batch(mean[None], albedo, light, specular=weights, **kw)
    none = render_batch(mean[None], albedo, light, specular=np.zeros_like(weights), **kw)
    assert np.array_equal(none["rgb"], matte["rgb"])                     # all-zero weights: no term at all
    # per pixel: the weight, and where the T-zone is (the fields rendered as albedo)
    fields = np.stack([weights[0], ap.shine[1], ap.shine[0]], 1)
    w, tzone, face = render_batch(mean[None], fields, light, **kw)["albedo"][0].transpose(2, 0, 1)
    lift = shiny["rgb"][0].astype(int) - matte["rgb"][0].astype(int)
    assert lift.min() >= 0 and np.abs(lift - lift[..., :1]).max() <= 1    # white (to rounding), never darker
    assert (w == 0).sum() > 2000 and np.abs(lift[w == 0]).max() == 0      # eyes, lips, ears, neck, background
    eyes_y = matte["landmarks2d"][0, :2, 1].mean()
    mouth_y = matte["landmarks2d"][0, 3:5, 1].mean()
    rows = np.arange(128)[:, None]
    t = tzone > 0.8
    forehead, nose = t & (rows < eyes_y - 8), t & (rows > eyes_y + 8) & (rows < mouth_y - 8)
    cheeks = (face > 0.8) & (tzone < 0.05) & (rows > eyes_y + 8) & (rows < mouth_y)
    lum = lift.mean(-1)
    assert forehead.sum() > 100 and nose.sum() > 30 and cheeks.sum() > 100
    assert lum[forehead].max() > 40 and lum[nose].max() > 30             # a highlight you can see...
    assert lum.max() < 110                                               # ...that does not burn out
    assert np.percentile(lum[cheeks], 90) < np.percentile(lum[forehead], 90)


def test_gradients_reach_the_weights_and_the_light():
    m, _, mean, weights, light, kw = _frontal_face()
    w = torch.tensor(weights, requires_grad=True)
    sh = torch.tensor(light[None], dtype=torch.float32, requires_grad=True)
    albedo = torch.tensor(m.color.mean.reshape(1, -1, 3), dtype=torch.float32)
    settings = RenderSettings(48, 48)
    framed = render_batch(mean[None], albedo[0].numpy(), light, kw["pose"], m.triangles, settings,
                          five_point_groups=m.five_point_vertices())["translation"]
    out = render_torch(torch.tensor(mean[None]), albedo, sh, kw["pose"].with_translation(framed), m.triangles,
                       settings.camera, specular=w)
    out["rgb"].sum().backward()
    assert w.grad.sum() > 0 and (w.grad >= 0).all() and sh.grad[0, 1:4].abs().sum() > 0
