"""Online synthesis: deterministic freshly rendered batches in the trainer's format."""
import json

import numpy as np
import pytest
import torch

from conftest import make_tiny_model
from recognition.online import HeldOutSet, OnlineBatches, load_scene, render_size_for


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "tiny.npz"
    make_tiny_model(20, 24).save_npz(path)
    return load_scene(None, {"model": str(path), "ids": 12, "size": 32, "antialias": 1,
                             "identity_mixup": True, "mixup_fraction": 0.5})


def test_render_size_matches_template():
    assert render_size_for("arcface", 112) == 168  # eye-mouth 40.6 px / 0.25, rounded up to 8
    assert render_size_for("openface", 96) >= 96


def test_batches_are_deterministic_and_shaped(scene):
    src = OnlineBatches(scene, 32, "arcface", batch_p=3, batch_k=2, total=4, seed=5)
    x, y, sid, sw = src.batch(2)
    assert x.shape == (6, 3, 32, 32) and x.dtype == torch.uint8 and x.float().std() > 5
    assert (y[0::2] == y[1::2]).all() and len(set(y.tolist())) == 3  # P identities x K images
    x2, y2, sid2, sw2 = OnlineBatches(scene, 32, "arcface", 3, 2, total=4, seed=5).batch(2)
    assert torch.equal(x, x2) and torch.equal(y, y2) and torch.equal(sw, sw2)
    assert not torch.equal(x, src.batch(3)[0])
    # soft labels: own identity first, weights sum to one
    assert torch.allclose(sw.sum(1), torch.ones(6)) and (sid[:, 0] == y).all()
    steps = list(src)
    assert len(steps) == 4 and torch.equal(steps[2][0], x)


def test_mixup_soft_labels_present(scene):
    src = OnlineBatches(scene, 32, "arcface", batch_p=4, batch_k=4, total=1, seed=1)
    _, y, sid, sw = src.batch(0)
    mixed = sid[:, 1] >= 0
    assert mixed.any() and (sid[mixed, 1] != y[mixed]).all()
    assert ((sw[mixed, 0] >= 0.5) & (sw[mixed, 0] < 1)).all()


def test_held_out_set(scene):
    ds = HeldOutSet(scene, 32, "arcface", n_ids=3, per_id=2)
    assert len(ds) == 6 and ds[0][0].shape == (3, 32, 32) and ds.labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_pool_smaller_than_batch_p_is_an_error(scene):
    from morphgen.errors import ConfigError

    with pytest.raises(ConfigError, match="identity pool"):
        OnlineBatches(scene, 32, "arcface", batch_p=50, batch_k=1, total=1)


def test_train_online_from_the_cli_then_embed(tmp_path):
    """`morphgen train --online` on the CPU at a tiny budget; checkpoint and embed work on it."""
    from click.testing import CliRunner

    from morphgen.cli.main import cli

    model = tmp_path / "tiny.npz"
    make_tiny_model(20, 24).save_npz(model)
    cfg = tmp_path / "online.yaml"
    cfg.write_text(f"model: {model}\nids: 8\nantialias: 1\nidentity-mixup: true\n")
    data = tmp_path / "imgs"
    r = CliRunner().invoke(cli, ["render", "--model", str(model), "--ids", "2", "--per-id", "2", "--size", "48",
                                 "--quiet", "--out", str(data), "--workers", "1"])
    assert r.exit_code == 0, r.output
    run = tmp_path / "run"
    r = CliRunner().invoke(cli, ["train", "--online", str(cfg), "--arch", "nn4small2", "--input-size", "32",
                                 "--steps", "3", "--batch-p", "4", "--batch-k", "2", "--val-ids", "3",
                                 "--online-set", "ids=10", "--online-set", "appearance=full",
                                 "--out", str(run), "--threads", "1", "--quiet", "--real-preview", str(data)])
    assert r.exit_code == 0, r.output
    assert (run / "checkpoint.pt").exists() and "online synthesis: 10 identities" in r.output
    assert json.loads((run / "config.json").read_text())["online_set"] == {"ids": 10, "appearance": "full"}
    import cv2
    train_sheet, real_sheet = cv2.imread(str(run / "train_crops.png")), cv2.imread(str(run / "real_crops.png"))
    assert train_sheet.shape == (32, 8 * 32, 3) and real_sheet.shape == (32, 8 * 32, 3)
    r = CliRunner().invoke(cli, ["embed", "--model", str(run), "--images", str(data), "--out", str(tmp_path / "e.npz")])
    assert r.exit_code == 0, r.output
    emb = np.load(tmp_path / "e.npz")["embeddings"]
    assert emb.shape == (4, 128) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-4)


def test_online_needs_steps(tmp_path):
    from click.testing import CliRunner

    from morphgen.cli.main import cli

    r = CliRunner().invoke(cli, ["train", "--online", "default", "--out", str(tmp_path / "r")])
    assert r.exit_code == 2 and "--steps" in r.output
    r = CliRunner().invoke(cli, ["train", "--online", "default", "--steps", "2", "--online-set", "hats=1",
                                 "--out", str(tmp_path / "r")])
    assert r.exit_code == 2 and "unknown render option 'hats'" in r.output and not (tmp_path / "r").exists()
    r = CliRunner().invoke(cli, ["train", "--data", str(tmp_path), "--online-set", "photo=off", "--out", str(tmp_path / "r")])
    assert r.exit_code == 2 and "online_set" in r.output


# ---- the device path (TorchScene + align_batch + augment_batch), checked on the CPU ----

class _OnCpuDevice(OnlineBatches):
    on_device = property(lambda self: True)


def _device_stream(src: OnlineBatches, workers: int = 0):
    """The batches the trainer gets from a GPU scene, made on the CPU (same torch code)."""
    src.__class__ = _OnCpuDevice
    return list(src.stream(workers, torch.device("cpu")))


def test_torch_scene_matches_the_numba_renderer(scene):
    from dataclasses import replace

    from morphgen.scene import SceneRenderer
    from morphgen.torch_scene import TorchScene

    r = SceneRenderer(replace(scene, size=48, sampling=replace(scene.sampling, mixup=None)))
    plan = r.plan([r.sampler.image_params(i, s) for i in range(4) for s in range(3)])
    ref = r.render_plan(plan)
    ts = TorchScene(r.assets, "cpu", pool_size=2)
    ts.pool = torch.from_numpy(plan.backgrounds)  # the same backgrounds, in plan order
    res = ts.render(replace(plan, backgrounds=None, background_seed=np.arange(len(plan))))
    rgb, lm5 = res["rgb"], res["landmarks5"]
    got = (rgb.numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8).astype(int)
    want = np.stack([x.rgb for x in ref]).astype(int)
    assert np.abs(got - want).max() <= 1
    assert np.abs(lm5.numpy() - np.stack([x.landmarks5 for x in ref])).max() < 1e-3


def test_align_batch_matches_align_face():
    import cv2

    from recognition.align import align_batch, align_face

    rng = np.random.default_rng(0)
    img = np.stack([cv2.GaussianBlur((rng.random((70, 80, 3)) * 255).astype(np.uint8), (0, 0), 3) for _ in range(3)])
    lm = np.array([[30, 30], [55, 28], [42, 45], [33, 58], [53, 57]], np.float32) + rng.normal(0, 2, (3, 5, 2))
    jit = np.array([[1.0, 0, 0], [1.08, 3, -2], [0.92, -1, 2]], np.float32)
    for tpl, size in (("arcface", 112), ("openface", 96)):
        want = np.stack([align_face(img[i], lm[i].astype(np.float32), size, tpl, jit[i]) for i in range(3)])
        got = align_batch(torch.from_numpy(img).float(), torch.from_numpy(lm), size, tpl, torch.from_numpy(jit))
        assert np.abs(got.permute(0, 2, 3, 1).numpy() - want).max() <= 0.51  # cv2 rounds to uint8


def test_augment_batch_is_seeded_and_changes_pixels():
    from recognition.data import Augment, augment_batch

    x = torch.rand(6, 3, 24, 24) * 255
    aug = Augment.preset("strong")
    a = augment_batch(x, aug, torch.Generator().manual_seed(3))
    b = augment_batch(x, aug, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, x) and a.shape == x.shape
    assert torch.equal(augment_batch(x, Augment(), torch.Generator().manual_seed(3)), x)


def test_device_stream_matches_the_cpu_batches(scene):
    """Plain backgrounds make the background pool irrelevant: the device path's crops equal
    the CPU path's (OpenCV warp, uint8 rounding) within two grey levels."""
    from dataclasses import replace

    plain = replace(scene, backgrounds="color:90,120,150")
    cpu = OnlineBatches(plain, 32, "arcface", batch_p=3, batch_k=2, total=2, seed=4)
    dev = _device_stream(OnlineBatches(plain, 32, "arcface", batch_p=3, batch_k=2, total=2, seed=4))
    assert len(dev) == 2
    for step, (x, y, sid, sw) in enumerate(dev):
        cx, cy, csid, csw = cpu.batch(step)
        assert x.dtype == torch.uint8 and x.shape == cx.shape
        assert torch.equal(y, cy) and torch.equal(sid, csid) and torch.equal(sw, csw)
        assert (x.int() - cx.int()).abs().max() <= 2


def test_device_stream_is_deterministic_with_augmentation(scene):
    from recognition.data import Augment

    def run():
        return _device_stream(OnlineBatches(scene, 32, "arcface", 3, 2, total=2, seed=4,
                                            augment=Augment.preset("strong")))

    a, b = run(), run()
    assert all(torch.equal(p[0], q[0]) for p, q in zip(a, b))
    assert not torch.equal(a[0][0], a[1][0])
    # plans made by two loader processes: the same batches, in step order
    c = _device_stream(OnlineBatches(scene, 32, "arcface", 3, 2, total=2, seed=4, augment=Augment.preset("strong")),
                       workers=2)
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, c))


def test_scene_renderer_device_path_matches_numba(scene):
    """`SceneRenderer.render_plan` on a GPU decodes and renders with TorchScene; run here on
    the CPU, its images, extra outputs and landmarks equal the numba path's."""
    from dataclasses import replace

    from morphgen.scene import SceneRenderer
    from morphgen.torch_scene import TorchScene

    cfg = replace(scene, size=40, outputs=("depth", "mask", "normals", "albedo"),
                  sampling=replace(scene.sampling, mixup=None))
    r = SceneRenderer(cfg)
    r.__dict__["_torch_scene"] = TorchScene(r.assets, "cpu", pool_size=0)
    plan = r.plan([r.sampler.image_params(i, s) for i in range(3) for s in range(2)])
    (a, lm_a), (b, lm_b) = r._render_numba(plan), r._render_device(plan)
    assert b["rgb"].dtype == np.uint8 and np.abs(a["rgb"].astype(int) - b["rgb"]).max() <= 1
    assert np.abs(lm_a - lm_b).max() < 1e-3 and np.abs(a["landmarks2d"] - b["landmarks2d"]).max() < 1e-3
    assert (a["visibility"] == b["visibility"]).all() and (a["mask"] == b["mask"]).mean() > 0.99
    assert np.abs(a["albedo"] - b["albedo"]).max() < 0.02


def test_real_preview_errors_are_one_line(tmp_path):
    from click.testing import CliRunner

    from morphgen.cli.main import cli

    base = ["train", "--online", "default", "--steps", "1", "--arch", "nn4small2", "--input-size", "32",
            "--batch-p", "2", "--batch-k", "2", "--threads", "1", "--quiet"]
    r = CliRunner().invoke(cli, base + ["--real-preview", str(tmp_path / "nope"), "--out", str(tmp_path / "a")])
    assert r.exit_code != 0 and "--real-preview" in r.output and "not a folder" in r.output
    assert not (tmp_path / "a").exists()  # refused before any work
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(cli, base + ["--real-preview", str(tmp_path / "empty"), "--out", str(tmp_path / "b")])
    assert r.exit_code != 0 and "--real-preview: no usable images" in r.output and "Traceback" not in r.output


def test_unbounded_stream_brings_new_identities(scene, tmp_path):
    from dataclasses import replace

    from click.testing import CliRunner

    from morphgen.cli.main import cli
    from morphgen.errors import ConfigError

    plain = replace(scene, sampling=replace(scene.sampling, mixup=None))
    src = OnlineBatches(plain, 32, "arcface", batch_p=3, batch_k=2, total=2, seed=1, unbounded=True)
    ids = [set(src.batch(s)[1].tolist()) for s in (0, 1)]
    assert len(ids[0]) == 3 and max(ids[0] | ids[1]) >= 12 and not ids[0] & ids[1]  # beyond the pool of 12
    with pytest.raises(ConfigError, match="identity mixup"):
        OnlineBatches(scene, 32, "arcface", 3, 2, total=1, unbounded=True)
    r = CliRunner().invoke(cli, ["train", "--online", "default", "--online-unbounded", "--loss", "arcface",
                                 "--steps", "1", "--out", str(tmp_path / "r")])
    assert r.exit_code != 0 and "triplet" in r.output
    r = CliRunner().invoke(cli, ["train", "--online", "default", "--online-unbounded", "--steps", "2", "--arch",
                                 "nn4small2", "--input-size", "32", "--batch-p", "3", "--batch-k", "2", "--threads", "1",
                                 "--quiet", "--out", str(tmp_path / "u")])
    assert r.exit_code == 0 and "unbounded identities" in r.output, r.output


def test_online_batches_are_p_times_k_and_batch_size_is_refused(tmp_path):
    """--online renders batches of --batch-p x --batch-k; a --batch-size beside it was
    silently ignored (a user asking for 8 images got 300 a step), so it is refused."""
    from morphgen.errors import ConfigError
    from recognition.train_config import TrainConfig

    base = {"online": "default", "steps": 2, "out": str(tmp_path / "run"), "loss": "arcface", "batch_p": 4, "batch_k": 2}
    # P x K it is, whatever the saved config said: resolved, --batch-size is no option of it
    assert TrainConfig(**base).resolved().batch_size is None
    assert TrainConfig(**base, batch_size=8).resolved().batch_size is None
    with pytest.raises(ConfigError, match="leave out --batch-size"):
        TrainConfig(**base, batch_size=16).resolved()


def test_dataset_options_in_an_online_config_are_named_as_unused(tmp_path):
    """A render config shared with `morphgen render` may hold dataset options (per_id,
    workers, out...): online training does not use them, and says so instead of silently
    ignoring them; a config of image options alone says nothing."""
    import warnings

    cfg = tmp_path / "scene.yaml"
    cfg.write_text("ids: 50\nper_id: 20\nworkers: 8\nsize: 64\n")
    with pytest.warns(UserWarning, match=r"sets per_id, workers: options of a written dataset"):
        scene = load_scene(cfg)
    assert scene.sampling.n_identities == 50
    cfg.write_text("ids: 50\nsize: 64\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_scene(cfg, {"seed": 3})


def test_a_resume_with_the_scene_edited_is_refused(tmp_path):
    """`train --online scene.yaml --resume` with the scene file edited since trained on
    other batches unnoticed (the run records only its path)."""
    from click.testing import CliRunner

    from morphgen.cli.main import cli

    model = tmp_path / "tiny.npz"
    make_tiny_model(20, 24).save_npz(model)
    cfg = tmp_path / "scene.yaml"
    cfg.write_text(f"model: {model}\nids: 8\nantialias: 1\n")
    run = tmp_path / "run"
    args = ["train", "--online", str(cfg), "--arch", "nn4small2", "--input-size", "32", "--steps", "2",
            "--batch-p", "4", "--batch-k", "2", "--out", str(run), "--threads", "1", "--quiet"]
    assert CliRunner().invoke(cli, args).exit_code == 0
    r = CliRunner().invoke(cli, ["train", "--out", str(run), "--resume", "--steps", "3", "--quiet"])
    assert r.exit_code == 0, r.output                                   # the same scene: resumes
    cfg.write_text(f"model: {model}\nids: 8\nantialias: 1\npose: frontal\n")
    r = CliRunner().invoke(cli, ["train", "--out", str(run), "--resume", "--steps", "4", "--quiet"])
    assert r.exit_code == 2 and "was trained on batches of another scene than --online" in r.output, r.output


def test_a_scene_the_model_cannot_render_stops_up_front(tmp_path):
    """Too many components (or an --online-set landmarks file, which was dropped unread)
    failed only at the first batch, inside a loader worker, after the run had begun."""
    import morphgen
    from click.testing import CliRunner

    from morphgen.cli.main import cli
    from morphgen.errors import ConfigError

    with pytest.raises(ConfigError, match="asked for 100000 shape components"):
        morphgen.OnlineDataset(ids=8, steps=2, batch_p=4, batch_k=2, input_size=32, shape_components=100000)
    bad = tmp_path / "lm.json"
    bad.write_text('{"landmarks": {"right.eye.pupil.center": 999999, "left.eye.pupil.center": 1, '
                   '"center.nose.tip": 2, "right.lips.corner": 3, "left.lips.corner": 4}}')
    r = CliRunner().invoke(cli, ["train", "--online", "default", "--online-set", f"landmarks={bad}", "--steps", "2",
                                 "--batch-p", "4", "--batch-k", "2", "--input-size", "32", "--workers", "0",
                                 "--out", str(tmp_path / "run")])
    assert r.exit_code == 2 and "vertex 999999, outside" in r.output and not (tmp_path / "run").exists(), r.output
