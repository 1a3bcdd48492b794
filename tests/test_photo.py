"""Camera / photo effects (morphgen.render.photo): spec parsing and its one-line errors,
per-image determinism and the params record, the numpy and torch paths giving the same
pixels, and our JPEG against libjpeg's."""
import json

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from morphgen.errors import ConfigError
from morphgen.layout import params_rows
from morphgen.options import RENDER_DEFAULTS, scene_from_options
from morphgen.render.photo import EFFECTS, PRESETS, PhotoConfig, apply_photo, apply_photo_torch, jpeg_np
from morphgen.scene import SceneRenderer


def test_spec_presets_and_overrides():
    assert not PhotoConfig.parse("off").active and PhotoConfig.parse("off").to_spec() == "off"
    r = PhotoConfig.parse("realistic")
    assert dict(r.probs) == PRESETS["realistic"]
    c = PhotoConfig.parse("realistic, grey=0.5, jpeg=0")
    assert dict(c.probs)["grey"] == 0.5 and "jpeg" not in dict(c.probs)
    assert PhotoConfig.parse(c.to_spec()) == c                                  # the recorded spec reads back
    assert dict(PhotoConfig.parse("blur=1").probs) == {"blur": 1.0}
    assert PhotoConfig.parse({"noise": 0.5}) == PhotoConfig.parse("noise=0.5")  # YAML mapping form


@pytest.mark.parametrize("spec, msg", [
    ("fancy", "'fancy' is not a preset"),
    ("realistic,sepia=0.2", "unknown effect 'sepia'"),
    ("realistic,blur=1.5", "blur=1.5 must be a probability"),
    ("realistic,blur=-0.1", "blur=-0.1 must be a probability"),
    ("blur=x", "blur=x must be a probability"),
    ("blur=0.2,realistic", "'realistic' is not a preset"),
])
def test_bad_specs_are_one_line_errors(spec, msg):
    with pytest.raises(ConfigError, match=msg):
        PhotoConfig.parse(spec)


def _renderer(photo="realistic", size=64, **kw):
    opts = dict(RENDER_DEFAULTS, ids=6, size=size, photo=photo, **kw)
    return SceneRenderer(scene_from_options(opts))


def test_effects_are_a_function_of_seed_identity_sample_and_recorded():
    r1, r2 = _renderer(), _renderer()
    a = [r1.sampler.image_params(i, s).photo for i in range(6) for s in range(20)]
    b = [r2.sampler.image_params(i, s).photo for i in reversed(range(6)) for s in reversed(range(20))][::-1]
    assert a == b and all(isinstance(x, dict) for x in a)
    seen = {e for fx in a for e in fx}
    assert seen == set(EFFECTS)                                # 120 images meet every effect
    rec = json.loads(r1.sampler.image_params(2, 3).to_json())
    assert rec["photo"] == a[2 * 20 + 3]
    off = _renderer("off").sampler.image_params(2, 3)
    assert off.photo is None and "photo" not in off.to_record()  # records of scenes without effects are unchanged
    # changing one probability leaves the other effects' draws alone
    c = _renderer("realistic,grey=0").sampler.image_params(2, 3).photo
    assert {k: v for k, v in c.items()} == {k: v for k, v in a[43].items() if k != "grey"}


def test_off_renders_are_unchanged_and_on_renders_differ():
    params = [_renderer("off").sampler.image_params(i, 0) for i in range(3)]
    base = [x.rgb for x in _renderer("off").render(params)]
    r = _renderer("blur=1")
    fx_params = [r.sampler.image_params(i, 0) for i in range(3)]
    got = [x.rgb for x in r.render(fx_params)]
    for b, g, p in zip(base, got, fx_params):
        assert p.photo and "blur" in p.photo
        assert np.array_equal(g, apply_photo(b, p.photo))               # the recorded effect, applied
        assert np.array_equal(b, apply_photo(b, {}))                    # no effect: the same pixels
    assert max(np.abs(b.astype(int) - g.astype(int)).mean() for b, g in zip(base, got)) > 1.0


def _image(seed=0, h=72, w=80):
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (6, 7, 3)).astype(np.float32)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC) + rng.normal(0, 6, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("effect", list(EFFECTS) + ["all"])
def test_numpy_and_torch_paths_agree(effect):
    cfg = PhotoConfig.parse("realistic" if effect == "all" else f"{effect}=1")
    rng = np.random.default_rng(5)
    for k in range(4):
        fx = cfg.sample(rng)
        if effect == "all":
            fx = {e: PhotoConfig.parse(f"{e}=1").sample(np.random.default_rng(k))[e] for e in EFFECTS}
        img = _image(k)
        a = apply_photo(img, fx).astype(np.float32)
        t = torch.from_numpy(img).float().div(255).permute(2, 0, 1)[None]
        b = (apply_photo_torch(t, [fx])[0].permute(1, 2, 0).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)
        d = np.abs(a - b.astype(np.float32))
        # lowres: cv2's area resampling and torch's adaptive pooling weigh edge pixels differently
        assert d.mean() < (1.5 if effect in ("lowres", "all") else 0.3), (effect, fx, d.mean())
        assert np.percentile(d, 99) <= (12 if effect in ("lowres", "all") else 2), (effect, fx)


def test_our_jpeg_is_close_to_libjpeg():
    img = _image(3, 96, 96)
    for q in (25, 50, 90):
        ours = jpeg_np(img.astype(np.float32), q)
        ok, enc = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, q])
        ref = cv2.cvtColor(cv2.imdecode(enc, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB).astype(np.float32)
        err_ours, err_ref = np.abs(ours - img).mean(), np.abs(ref - img).mean()
        assert abs(err_ours - err_ref) < 0.35 * err_ref + 0.5, (q, err_ours, err_ref)   # as lossy as libjpeg
        assert np.abs(ours - ref).mean() < 1.2 * err_ref + 1.0


def test_torch_scene_applies_the_same_effects():
    from morphgen.torch_scene import TorchScene

    r = _renderer("realistic,jpeg=0", size=48)
    params = [r.sampler.image_params(i, s) for i in range(3) for s in range(2)]
    plan = r.plan(params)
    cpu = r.render_plan_arrays(plan)["rgb"].astype(np.float32)
    dev = TorchScene(r.assets, "cpu", pool_size=0).render(plan)["rgb"].numpy() * 255
    assert np.abs(cpu - dev).mean() < 2.0


def test_render_cli_records_effects_and_refuses_bad_specs(tmp_path):
    from morphgen.cli.main import cli

    res = CliRunner().invoke(cli, ["render", "--ids", "2", "--per-id", "2", "--size", "32", "--workers", "1", "--quiet",
                                      "--photo", "realistic,noise=1", "--out", str(tmp_path / "ds")])
    assert res.exit_code == 0, res.output
    rows = [r for _, r in params_rows(tmp_path / "ds")]
    assert len(rows) == 4 and all("noise" in r["photo"] for r in rows)
    man = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert "noise=1" in man["config"]["scene"]["photo"]
    res = CliRunner().invoke(cli, ["render", "--ids", "2", "--size", "32", "--photo", "realistic,jpeg=2",
                                      "--out", str(tmp_path / "bad")])
    assert res.exit_code == 2 and "jpeg=2 must be a probability" in res.output and not (tmp_path / "bad").exists()


@pytest.mark.parametrize("spec", ["scenes", "mixed"])
def test_scene_backgrounds_are_deterministic_photo_like_and_selectable(spec):
    from morphgen.render.backgrounds import make_background_source

    src = make_background_source(spec)
    a = [src.sample(np.random.default_rng(k), 48, 64) for k in range(12)]
    b = [make_background_source(spec).sample(np.random.default_rng(k), 48, 64) for k in range(12)]
    assert all(x.shape == (48, 64, 3) and x.dtype == np.uint8 for x in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))                   # a pure function of the rng
    assert len({x.tobytes() for x in a}) == 12
    if spec == "scenes":   # photo statistics: less saturated than the pattern textures
        pat = [make_background_source("procedural").sample(np.random.default_rng(k), 48, 64) for k in range(12)]

        def saturation(xs):
            return np.mean([np.median(cv2.cvtColor(x, cv2.COLOR_RGB2HSV)[..., 1]) for x in xs])

        assert saturation(a) < 0.8 * saturation(pat)
    r = _renderer("off", backgrounds=spec)
    assert r.render([r.sampler.image_params(0, 0)])[0].rgb.shape == (64, 64, 3)


def test_a_batch_with_mixed_effects_matches_image_by_image():
    cfg = PhotoConfig.parse("realistic,blur=0.6,motion=0.5,jpeg=0.6,crop=0.5,noise=0.6,occlusion=0.5")
    rng = np.random.default_rng(11)
    fxs = [cfg.sample(rng) for _ in range(16)]
    imgs = [_image(k, 64, 64) for k in range(16)]
    t = torch.from_numpy(np.stack(imgs)).float().div(255).permute(0, 3, 1, 2)
    got = (apply_photo_torch(t, fxs).permute(0, 2, 3, 1).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)
    for img, fx, g in zip(imgs, fxs, got):
        d = np.abs(apply_photo(img, fx).astype(np.float32) - g)
        assert d.mean() < 0.5 and np.percentile(d, 99) <= 3, fx
