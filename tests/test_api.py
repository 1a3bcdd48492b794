"""The Python API (`import morphgen`): scenes with `morphgen render`'s options and errors,
rendering from the sampler or explicit parameters, the differentiable path, online
synthesis for any training loop (deterministic, resumable, sharded), and rendered datasets
as a torch Dataset, a pandas frame and a Hugging Face dataset."""
from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import REPO
from morphgen.cli.main import cli

import morphgen
from morphgen import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("one_torch_thread")
OPTS = {"ids": 6, "size": 32, "antialias": 1, "outputs": "depth", "identity_mixup": True}


@pytest.fixture(scope="module")
def scene(tiny_model_file):
    return morphgen.Scene(model=tiny_model_file, **OPTS)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, tiny_model_file):
    """`morphgen render` of the scene's options: 6 identities x 2, Parquet params."""
    out = tmp_path_factory.mktemp("ds") / "ds"
    args = ["render", "--model", tiny_model_file, "--ids", 6, "--per-id", 2, "--size", 32, "--antialias", 1,
            "--outputs", "depth", "--identity-mixup", "--workers", 1, "--quiet", "--out", out]
    r = CliRunner().invoke(cli, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return out


def cli_error(*args) -> str:
    r = CliRunner().invoke(cli, [str(a) for a in args])
    assert r.exit_code == 2, r.output
    return r.output.strip()


def test_import_is_cheap_and_every_name_resolves():
    code = ("import sys, morphgen; heavy = {'torch', 'numba', 'pyarrow', 'cv2'} & set(sys.modules); "
            "assert not heavy, heavy; [getattr(morphgen, n) for n in morphgen.__all__]")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    with pytest.raises(AttributeError):
        morphgen.no_such_name  # noqa: B018


def test_scene_renders_what_morphgen_render_writes(scene, rendered):
    out = scene.render([scene.params(4, 1), scene.params(5, 0)])
    assert out["rgb"].shape == (2, 32, 32, 3) and out["depth"].dtype == np.uint16 and out["landmarks5"].shape == (2, 5, 2)
    for k, (i, s) in enumerate(((4, 1), (5, 0))):
        png = cv2.cvtColor(cv2.imread(str(rendered / f"images/{i:06d}/{i:06d}_{s:04d}.png")), cv2.COLOR_BGR2RGB)
        depth = cv2.imread(str(rendered / f"images/{i:06d}/{i:06d}_{s:04d}_depth.png"), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(out["rgb"][k], png) and np.array_equal(out["depth"][k], depth)
    as_torch = scene.render(scene.params(4, 1), to="torch")
    assert torch.equal(as_torch["rgb"][0], torch.from_numpy(out["rgb"][0]))


def test_bad_options_are_the_clis_one_line_errors(tiny_model_file, tmp_path):
    for opts, flags in (({"size": 8}, ["--size", 8]), ({"pose": "sideways"}, ["--pose", "sideways"]),
                        ({"antialias": 9}, ["--antialias", 9]), ({"outputs": "dpth"}, ["--outputs", "dpth"]),
                        ({"model": tmp_path / "none.h5"}, ["--model", tmp_path / "none.h5"])):
        with pytest.raises(ConfigError if "model" not in opts else morphgen.ModelError) as e:
            morphgen.Scene(**opts)
        assert cli_error("render", *flags, "--out", tmp_path / "o") == f"Error: {e.value}"
        assert "\n" not in str(e.value)
    for opts, words in (({"out": "x"}, "writing a dataset"), ({"yaww": 3}, "morphgen render --help"),
                        ({"ids": "two"}, "--ids must be an integer")):
        with pytest.raises(ConfigError, match=words):
            morphgen.Scene(**opts)


def test_params_from_the_sampler_with_explicit_values(scene):
    p = scene.params(2, 5, yaw=30, pitch=-10, sh=np.eye(9, 3), expression=np.zeros(4))
    q = scene.params(2, 5)
    assert (p.yaw, p.pitch, p.roll) == (30.0, -10.0, q.roll) and np.array_equal(p.shape, q.shape)
    assert np.array_equal(p.sh, np.eye(9, 3)) and not p.expression.any()
    for values, words in (({"yaw": 200}, "yaw = 200 is out of range"), ({"sh": np.zeros(3)}, r"sh has shape \(3,\)"),
                          ({"shape": np.zeros(3)}, r"this scene's is \(8,\)"), ({"light": 1}, "unknown image parameter"),
                          ({"pitch": "up"}, "pitch must be numbers"), ({"roll": float("nan")}, "finite"),
                          ({"background_seed": -1}, "background_seed")):
        with pytest.raises(ConfigError, match=words):
            scene.params(0, 0, **values)
    with pytest.raises(ConfigError, match="pool of 6"):
        scene.params(6)
    with pytest.raises(ConfigError, match="ImageParams"):
        scene.render([])


def test_render_image_keeps_its_scene(tiny_model_file):
    a = morphgen.render_image(1, 0, yaw=20, model=tiny_model_file, size=32, antialias=1)
    scene = next(iter(morphgen.api._SCENES.values()))
    b = morphgen.render_image(1, 0, yaw=20, model=tiny_model_file, size=32, antialias=1)
    assert next(iter(morphgen.api._SCENES.values())) is scene and np.array_equal(a["rgb"], b["rgb"])
    assert a["rgb"].shape == (32, 32, 3) and a["landmarks5"].shape == (5, 2)
    with pytest.raises(ConfigError, match="not both"):
        morphgen.render_image(scene=scene, size=64)
    with pytest.raises(ConfigError, match="scene must be a morphgen.Scene, got str"):
        morphgen.render_image(0, scene="x")


def test_render_image_sees_an_edited_pose_file(tiny_model_file, tmp_path):
    """The kept scene was keyed by the option strings: a pose file edited between two calls
    gave the first file's pose."""
    pose = tmp_path / "pose.yaml"
    pose.write_text("yaw: constant(40)\npitch: constant(0)\nroll: constant(0)\n")
    a = morphgen.render_image(0, 0, model=tiny_model_file, size=32, pose=str(pose))
    pose.write_text("yaw: constant(-40)\npitch: constant(0)\nroll: constant(0)\n")
    b = morphgen.render_image(0, 0, model=tiny_model_file, size=32, pose=str(pose))
    c = morphgen.render_image(0, 0, model=tiny_model_file, size=32, yaw=-40.0, pitch=0.0, roll=0.0)
    assert not np.array_equal(a["rgb"], b["rgb"])
    assert np.allclose(b["landmarks5"], c["landmarks5"], atol=1e-3)


def test_differentiable_path(scene):
    p = scene.params(3, 2)
    shape = torch.tensor(p.shape, requires_grad=True)
    sh = torch.tensor(p.sh, requires_grad=True)
    vertices, albedo = scene.decode(shape, p.color, p.expression)
    out = scene.render_tensors(vertices, albedo, sh, scene.pose(p), outputs=("rgb", "landmarks2d", "depth"))
    assert out["rgb"].shape == (1, 32, 32, 3) and out["depth"].shape == (1, 32, 32)
    # the five points are those of `render` (same mesh, pose and calibration)
    assert np.allclose(out["landmarks5"].detach().numpy(), scene.render(p)["landmarks5"], atol=0.05)
    (out["rgb"].mean() + out["landmarks5"].sum()).backward()
    assert shape.grad.abs().sum() > 0 and sh.grad.abs().sum() > 0
    pose = scene.pose(p)
    for args, words in (((vertices[:, :5], albedo, sh, pose), "vertices have shape"),
                        ((vertices, albedo, torch.zeros(2, 9, 3), pose), r"sh has shape \(2, 9, 3\)"),
                        ((vertices, albedo[..., :2], sh, pose), "albedo has shape"),
                        ((vertices, albedo, sh, {"yaw": 0}), "morphgen.Pose")):
        with pytest.raises(ConfigError, match=words):
            scene.render_tensors(*args)
    with pytest.raises(ConfigError, match="unknown output"):
        scene.render_tensors(vertices, albedo, sh, pose, outputs=("rbg",))
    with pytest.raises(ConfigError, match=r"coefficients are \(8,\)"):
        scene.decode(torch.zeros(3), p.color)
    with pytest.raises(ConfigError, match="batches"):
        scene.decode(torch.zeros(2, 8), torch.zeros(3, len(p.color)))


# ------------------------------------------------------------------ online synthesis

def online(tiny_model_file, **kw):
    args = {"steps": 4, "batch_p": 3, "batch_k": 2, "input_size": 32, "model": tiny_model_file, "ids": 10,
            "antialias": 1, "identity_mixup": True} | kw
    return morphgen.OnlineDataset(**args)


def same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in ("image", "label", "soft_ids", "soft_weights")) and \
        all(torch.equal(a["params"][k], b["params"][k]) for k in a["params"])


def test_online_batches_are_identical_on_rerun_and_after_resuming(tiny_model_file):
    first = list(online(tiny_model_file))
    assert [int(b["params"]["step"]) for b in first] == [0, 1, 2, 3]
    b = first[1]
    assert b["image"].shape == (6, 3, 32, 32) and b["image"].dtype == torch.uint8 and b["label"].shape == (6,)
    assert b["params"]["sh"].shape == (6, 9, 3) and torch.equal(b["params"]["identity"], b["label"])
    assert torch.allclose(b["soft_weights"].sum(1), torch.ones(6)) and (b["soft_ids"][:, 0] == b["label"]).all()
    again = list(online(tiny_model_file))
    assert all(same(x, y) for x, y in zip(first, again))
    resumed = list(online(tiny_model_file, start=2))
    assert len(resumed) == 2 and same(resumed[0], first[2]) and same(resumed[1], first[3])
    # a DataLoader's workers split the steps and the loader returns them in order
    loaded = list(torch.utils.data.DataLoader(online(tiny_model_file), batch_size=None, num_workers=2))
    assert all(same(x, y) for x, y in zip(loaded, first)) and len(loaded) == 4
    streamed = list(online(tiny_model_file, start=3).stream("cpu"))
    assert len(streamed) == 1 and same(streamed[0], first[3])


@pytest.mark.parametrize("call, match", [
    (lambda: morphgen.Scene(3), "--config must be a path, got 3"),
    (lambda: morphgen.load_model(3), "the model must be a path, got 3"),
    (lambda: morphgen.open_dataset(None), "the dataset folder must be a path, got None"),
    (lambda: morphgen.OnlineDataset(3, steps=2), "the scene must be a path, got 3"),
])
def test_a_path_argument_of_another_type_is_a_config_error(call, match):
    """They were pathlib's TypeError ("expected str, bytes or os.PathLike object")."""
    with pytest.raises(ConfigError, match=match):
        call()


def test_online_seed_is_the_render_seed_too(tiny_model_file):
    """seed=1 drew seed 0's faces in another order: the README says "plus any render
    option", and seed is one."""
    default, zero, one = (online(tiny_model_file, **kw) for kw in ({}, {"seed": 0}, {"seed": 1}))
    assert same(default.batch(0), zero.batch(0))
    assert one.batches.source.scene.sampling.seed == 1 and zero.batches.source.scene.sampling.seed == 0
    scene_one = morphgen.Scene(model=tiny_model_file, size=32, ids=10, seed=1)
    b = one.batch(0)
    i, k = int(b["params"]["identity"][0]), int(b["params"]["sample"][0])
    assert np.allclose(b["params"]["shape"][0].numpy(), scene_one.params(i, k).shape, atol=1e-5)
    seed_zero = morphgen.Scene(model=tiny_model_file, size=32, ids=10).params(i, k).shape
    assert not np.allclose(b["params"]["shape"][0].numpy(), seed_zero)


def test_two_ranks_draw_disjoint_images(tiny_model_file):
    r0, r1 = online(tiny_model_file, rank=0, world=2), online(tiny_model_file, rank=1, world=2)
    seen = [set(), set()]
    for step in range(4):
        for k, ds in enumerate((r0, r1)):
            b = ds.batch(step)
            seen[k] |= set(zip(b["params"]["identity"].tolist(), b["params"]["sample"].tolist()))
        assert not torch.equal(r0.batch(step)["image"], r1.batch(step)["image"])
    assert len(seen[0]) == len(seen[1]) == 24 and not seen[0] & seen[1]


def test_online_bad_input_is_one_line(tiny_model_file, scene):
    for kw, words in (({"start": 4}, "--start 4 is not below --steps 4"),
                      ({"template": "dlib"}, "unknown alignment template"),
                      ({"rank": 2, "world": 2}, "rank 2 of world 2"), ({"batch_p": 0}, "--batch-p must be >= 1"),
                      ({"batch_p": 11}, "exceeds the identity pool"), ({"sizee": 3}, "unknown render option")):
        with pytest.raises(ConfigError, match=words):
            online(tiny_model_file, **kw)
    with pytest.raises(ConfigError, match="not both"):
        morphgen.OnlineDataset(scene, steps=2, size=64)
    assert morphgen.OnlineDataset(scene, steps=2, batch_p=2, input_size=32).n_classes == 6


# ------------------------------------------------------------------ rendered datasets

def test_open_dataset_items_and_loader(rendered, tmp_path):
    ds = morphgen.open_dataset(rendered, outputs=("depth",))
    assert len(ds) == 12 and ds.n_classes == 6 and len(ds.landmark_names) == 7
    item = ds[3]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.uint8
    assert (item["identity"], item["sample"], item["label"]) == (1, 1, 1) and item["depth"].dtype == torch.uint16
    assert item["sh"].shape == (9, 3) and item["landmarks"].shape == (7, 2) and item["landmarks5"].shape == (5, 2)
    rows = [r for _, r in morphgen.layout.params_rows(rendered)]
    mixed = [i for i, r in enumerate(rows) if r["soft_label"]]
    assert mixed and ds.soft_ids[mixed[0]].tolist() == rows[mixed[0]]["soft_label"]["ids"]
    assert ds[0]["soft_ids"].tolist() == [0, -1] and ds[0]["soft_weights"].tolist() == [1.0, 0.0]
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4, shuffle=True, num_workers=0)))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["yaw"].shape == (4,)
    assert np.isclose(float(item["yaw"]), rows[3]["yaw"], atol=1e-4)
    frame = morphgen.params_frame(rendered)
    assert len(frame) == 12 and float(frame.yaw[3]) == pytest.approx(rows[3]["yaw"], abs=1e-4)
    flipped = morphgen.open_dataset(rendered, params=("yaw",), transform=lambda im: torch.from_numpy(im[:, ::-1].copy()))
    assert flipped[3]["image"].shape == (32, 32, 3) and set(flipped[3]) >= {"yaw"} and "sh" not in flipped[3]
    for call, err, words in ((lambda: morphgen.open_dataset(tmp_path), DataError, "morphgen dataset"),
                             (lambda: morphgen.open_dataset(tmp_path / "nothing"), DataError, "does not exist"),
                             (lambda: morphgen.open_dataset(rendered, params=("yawn",)), ConfigError, "choose from"),
                             (lambda: morphgen.open_dataset(rendered, outputs=("mask",)), ConfigError, "holds depth")):
        with pytest.raises(err, match=words):
            call()


def test_open_dataset_without_pyarrow_reads_jsonl(rendered, tmp_path, monkeypatch):
    """The same items from JSON Lines params read without pyarrow (the optional extra)."""
    import json
    import shutil

    out = tmp_path / "js"
    shutil.copytree(rendered, out)
    rows = [r for _, r in morphgen.layout.params_rows(out)]
    for p in morphgen.layout.params_files(out):
        p.unlink()
    morphgen.layout.chunk_marker(out, 0).write_text("".join(json.dumps(r) + "\n" for r in rows))
    b = morphgen.open_dataset(rendered)
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    a = morphgen.open_dataset(out)
    assert a.images == b.images and (a.labels == b.labels).all() and a.landmark_names == b.landmark_names
    for k in b.columns:
        assert np.allclose(a.columns[k], b.columns[k], atol=1e-5), k
    assert torch.equal(a[5]["image"], b[5]["image"])


def test_hugging_face_datasets(rendered):
    datasets = pytest.importorskip("datasets")
    hf = morphgen.hf_dataset(rendered)
    assert len(hf) == 12 and hf.features["label"].names == [str(i) for i in range(6)]
    row = hf[3]
    assert np.array_equal(np.asarray(row["image"]), morphgen.open_dataset(rendered)[3]["image"].permute(1, 2, 0).numpy())
    assert row["identity"] == 1 and len(row["sh"]) == 9 and row["label"] == 1
    # the README's one line without morphgen: images and identity labels from the folder tree
    plain = datasets.load_dataset("imagefolder", data_dir=str(rendered / "images"), split="train")
    rgb = [r for r in plain if np.asarray(r["image"]).ndim == 3]
    assert len(rgb) == 12 and plain.features["label"].names == [f"{i:06d}" for i in range(6)]


def test_the_api_reference_page_is_current():
    r = subprocess.run([sys.executable, "tools/api_reference.py", "--check"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr


def test_webdataset_container(tiny_model_file, tmp_path):
    out = tmp_path / "w"
    args = ["render", "--model", tiny_model_file, "--ids", 2, "--per-id", 2, "--size", 32, "--antialias", 1,
            "--format", "wds", "--workers", 1, "--quiet", "--out", out]
    assert CliRunner().invoke(cli, [str(a) for a in args]).exit_code == 0
    ds = morphgen.open_dataset(out)
    assert len(ds) == 4 and ds.images[3] == "wds/chunk_000000.tar:000001_0001.png" and ds[3]["image"].shape == (3, 32, 32)
    with pytest.raises(DataError, match="webdataset"):
        morphgen.hf_dataset(out)
    datasets = pytest.importorskip("datasets")
    hf = datasets.load_dataset("webdataset", data_files=str(out / "wds" / "*.tar"), split="train")
    assert len(hf) == 4 and hf[3]["cls"] == 1 and hf[3]["json"]["yaw"] == pytest.approx(float(ds[3]["yaw"]), abs=1e-4)


def test_numba_cache_falls_back_to_a_temporary_folder(monkeypatch, tmp_path):
    """Where neither the package's folders nor the user's cache folder can be written (a
    read-only install run as another user), numba's cache goes to a temporary folder:
    numba raised "cannot cache function" at import, before any command could start. Where
    one can be written, or the user set NUMBA_CACHE_DIR, nothing changes."""
    import os
    import tempfile

    import numba

    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setattr(numba.config, "CACHE_DIR", numba.config.CACHE_DIR)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(os, "access", lambda path, mode: True)
    morphgen._numba_cache_fallback()
    assert "NUMBA_CACHE_DIR" not in os.environ  # a writable package folder: numba's own place
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    monkeypatch.setenv("NUMBA_CACHE_DIR", "/mine")
    morphgen._numba_cache_fallback()
    assert os.environ["NUMBA_CACHE_DIR"] == "/mine"
    monkeypatch.delenv("NUMBA_CACHE_DIR")
    morphgen._numba_cache_fallback()
    folder = os.environ["NUMBA_CACHE_DIR"]
    assert folder == str(tmp_path / f"morphgen-numba-{os.getuid()}") and numba.config.CACHE_DIR == folder
    assert os.stat(folder).st_mode & 0o777 == 0o700
    # a folder of that name that others may write (planted pickles): not used
    monkeypatch.delenv("NUMBA_CACHE_DIR")
    os.chmod(folder, 0o777)
    morphgen._numba_cache_fallback()
    assert os.environ["NUMBA_CACHE_DIR"] != folder and os.environ["NUMBA_CACHE_DIR"].startswith(str(tmp_path))


def test_a_wrong_kind_of_value_is_a_short_message():
    """A model object given where a path goes is named by its type: its repr made the
    one-line error 36,000 characters long."""
    with pytest.raises(ConfigError) as err:
        morphgen.Scene(model=morphgen.load_model(), size=32)
    assert str(err.value) == "--model must be a text value, got a MorphableModel"
    with pytest.raises(ConfigError) as err:
        morphgen.Scene(model=["x" * 200], size=32)
    assert len(str(err.value)) < 140 and str(err.value).endswith("...")


def test_params_of_another_scene_and_bad_batches_are_one_line(scene, tiny_model_file):
    """Params made by a scene of other component counts met numpy's matmul error; pose()
    took an empty list or numbers to numpy; a background seed past int64 overflowed."""
    other = morphgen.Scene(model=tiny_model_file, size=32, shape_components=3).params(0, 0)
    for call in (lambda: scene.render([other]), lambda: scene.pose([other])):
        with pytest.raises(ConfigError, match="have 3 shape coefficients, this scene 8"):
            call()
    for bad in ([], [1], None):
        with pytest.raises(ConfigError, match="pose takes ImageParams"):
            scene.pose(bad)
    with pytest.raises(ConfigError, match="background_seed must be a whole number from 0 to 2"):
        scene.params(0, background_seed=2**63)
    assert scene.render(scene.params(1, n) for n in range(2))["rgb"].shape[0] == 2  # any iterable of params


def test_online_scenes_that_cannot_train_are_refused_up_front(tiny_model_file):
    """A controlled grid (it ran out of samples at some step, after the run folder was
    made), an identity pool of one (zero loss) and an augment of the wrong type."""
    with pytest.raises(ConfigError, match="leave grid out"):
        online(tiny_model_file, grid="yaw=-30:30:30")
    with pytest.raises(ConfigError, match="identity pool .ids. is 1"):
        online(tiny_model_file, ids=1, batch_p=1, identity_mixup=False)
    with pytest.raises(ConfigError, match="augment must be a preset name or an Augment, got a int"):
        online(tiny_model_file, augment=3)


def test_dataset_readers_check_columns_and_say_when_a_dataset_is_unfinished(rendered, tmp_path):
    import warnings

    with pytest.raises(DataError, match="hold no column 'nosuch'; they hold identity, sample"):
        morphgen.params_frame(rendered, columns=["nosuch"])
    with pytest.raises(DataError, match="columns must be a list of column names"):
        morphgen.params_frame(rendered, columns="yaw")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a finished dataset: no warning
        assert len(morphgen.params_frame(rendered, columns=["yaw"])) == 12
    half = tmp_path / "half"
    r = CliRunner().invoke(cli, ["render", "--ids", "4", "--per-id", "1", "--chunk-ids", "2", "--size", "32", "--quiet",
                                 "--workers", "1", "--out", str(half)])
    assert r.exit_code == 0, r.output
    (half / "params" / "chunk_000001.parquet").unlink()
    with pytest.warns(UserWarning, match="unfinished dataset \\(1 of 2 chunks\\)"):
        morphgen.open_dataset(half)


def test_render_tensors_takes_half_precision_and_refuses_byte_backgrounds(scene):
    """decode() keeps a half or bfloat16 dtype; render_tensors met numba's
    NotImplementedError with it. A uint8 background came out as 0..255 'rgb'."""
    p = scene.params(0, 0)
    pose = scene.pose([p]).torch()
    for dtype in (torch.float16, torch.bfloat16):
        v, a = scene.decode(torch.tensor(p.shape).to(dtype), p.color, p.expression)
        assert scene.render_tensors(v, a, torch.tensor(p.sh), pose)["rgb"].dtype == torch.float32
    v, a = scene.decode(p.shape, p.color, p.expression)
    with pytest.raises(ConfigError, match="vertices have shape"):
        scene.render_tensors(v.flatten(), a, torch.tensor(p.sh), pose)
    with pytest.raises(ConfigError, match="backgrounds must be floats in"):
        scene.render_tensors(v, a, torch.tensor(p.sh), pose, backgrounds=torch.full((1, 32, 32, 3), 255, dtype=torch.uint8))


def test_online_dataset_checks_its_steps_devices_and_ranks(tiny_model_file):
    data = online(tiny_model_file, steps=2)
    for call, match in ((lambda: data.batch(-1), "--step must be between 0 and 1"),
                        (lambda: data.batch(2), "--step must be between 0 and 1"),
                        (lambda: data.batch("1"), "--step must be an integer"),
                        (lambda: next(data.stream("cpu", workers=-1)), "--workers must be >= 0"),
                        (lambda: next(data.stream("gpu")), "unknown --device 'gpu'"),
                        (lambda: online(tiny_model_file, rank=0.7, world=2), "--rank must be an integer"),
                        (lambda: online(tiny_model_file, input_size=4000), "input_size 4000 needs renders of")):
        with pytest.raises(ConfigError, match=match):
            call()


def test_params_values_are_numbers_a_render_can_hold(scene):
    """True and "30" were read as numbers by numpy; 1e300 passed the finite check in float64
    and rendered as float32 infinity."""
    for kw, match in (({"yaw": True}, "yaw must be numbers"), ({"yaw": "30"}, "yaw must be numbers"),
                      ({"shape": np.full(8, 1e300)}, "within float32's range")):
        with pytest.raises(ConfigError, match=match):
            scene.params(0, **kw)


def test_open_dataset_takes_names_as_text_and_checks_its_arguments(rendered):
    assert len(morphgen.open_dataset(rendered, outputs="depth")[0]["depth"].shape) == 2  # "depth", not d, e, p...
    for kw, match in (({"outputs": None}, "outputs must be a list of names"), ({"params": None}, "params must be"),
                      ({"transform": 3}, "transform must be a function")):
        with pytest.raises(ConfigError, match=match):
            morphgen.open_dataset(rendered, **kw)


def test_the_readmes_first_api_example_runs_as_written(tmp_path, monkeypatch):
    """It used torch without importing it, and a `target` it never made."""
    text = (REPO / "README.md").read_text().split("\n## Python API\n", 1)[1]
    code = text.split("```python\n", 1)[1].split("\n```", 1)[0]
    monkeypatch.chdir(tmp_path)
    space: dict = {}
    exec(compile(code, "README.md", "exec"), space)  # noqa: S102 - the README's own example
    assert space["views"]["rgb"].shape == (7, 112, 112, 3) and space["views"]["depth"].dtype == np.uint16
    assert space["shape"].grad.abs().sum() > 0 and space["pose"].yaw.grad is not None


def test_a_batch_of_many_identities_renders_as_each_identity_alone():
    """The decode summed a mixed batch's rows in one matmul: depth, normals and landmarks
    came a last bit off the command's (which renders one identity at a time)."""
    sc = morphgen.Scene(ids=8, size=32, outputs="depth")
    ps = [sc.params(i, s) for i in range(8) for s in range(4)]
    order = np.random.default_rng(0).permutation(len(ps))
    mixed = sc.render([ps[k] for k in order])
    for key in ("rgb", "depth", "landmarks", "landmarks5"):
        alone = np.concatenate([sc.render(ps[4 * i:4 * i + 4])[key] for i in range(8)])
        assert np.array_equal(mixed[key], alone[order]), key


def test_edited_params_are_checked_as_params_checks_them(scene):
    """A NaN yaw set with dataclasses.replace rendered NaN landmarks; a scale of 0 failed
    as a landmark problem; a translation of None as an IndexError."""
    import dataclasses

    p = scene.params(0, 0)
    for kw, match in (({"yaw": float("nan")}, "identity 0 sample 0: yaw must be finite"),
                      ({"scale": 0.0}, "scale = 0.0 is out of range"),
                      ({"translation": None}, "translation must be finite"),
                      ({"identity": -1}, "identity must be a whole number"),
                      ({"shape": np.full(8, np.nan, np.float32)}, "shape must be finite")):
        with pytest.raises(ConfigError, match=match):
            scene.render(dataclasses.replace(p, **kw))


def test_render_tensors_takes_one_output_name_and_refuses_a_pose_of_numbers(scene):
    p = scene.params(0, 0)
    v, a = scene.decode(p.shape, p.color, p.expression)
    out = scene.render_tensors(v, a, torch.tensor(p.sh), scene.pose([p]).torch(), outputs="depth")
    assert out["depth"].shape == (1, 32, 32)                     # "depth", not d, e, p, t, h
    with pytest.raises(ConfigError, match="pose holds single numbers"):
        scene.render_tensors(v, a, torch.tensor(p.sh), morphgen.Pose(0.0, 0.0, 0.0, torch.tensor([[0, 0, -980.0]])))


def test_render_image_sees_a_pose_file_named_in_its_config(tmp_path):
    pose, config = tmp_path / "pose.yaml", tmp_path / "scene.yaml"
    pose.write_text("yaw: constant(10)\n")
    config.write_text(f"size: 32\nids: 3\npose: {pose}\n")
    a = morphgen.render_image(0, config=str(config))
    pose.write_text("yaw: constant(40)\n")
    b = morphgen.render_image(0, config=str(config))
    assert not np.array_equal(a["rgb"], b["rgb"])
    assert np.array_equal(b["rgb"], morphgen.Scene(str(config)).render(morphgen.Scene(str(config)).params(0, 0))["rgb"][0])


def test_dataset_readers_name_a_wrong_kind_of_argument(rendered):
    with pytest.raises(ConfigError, match="the dataset folder must be a path, got None"):
        morphgen.params_table(None)
    ds = morphgen.open_dataset(rendered)
    with pytest.raises(TypeError, match="dataset indices are image numbers"):
        ds["a"]
    assert ds[np.int64(1)]["sample"] == ds[1]["sample"] == 1


def test_illumination_output_keeps_the_light_and_jpg_datasets_read_their_modalities(tiny_model_file, tmp_path):
    """The illumination output was stored as uint8 in [0, 1]: the light on a face (about 1)
    was white on half its pixels. A --image-format jpg dataset's modalities (always PNG)
    were looked for as .jpg by open_dataset."""
    sc = morphgen.Scene(size=32, ids=4, outputs="illumination,mask,albedo")
    out = sc.render([sc.params(i, 0) for i in range(4)])
    light = out["illumination"][out["mask"] > 0]
    assert out["illumination"].dtype == np.uint16 and light.max() < 65535
    assert 400 < np.median(light) < 2000 and (light > 255).mean() > 0.5      # thousandths of an irradiance near 1
    ds = tmp_path / "ds"
    r = CliRunner().invoke(cli, ["render", "--model", tiny_model_file, "--ids", "2", "--per-id", "1", "--size", "32",
                                 "--image-format", "jpg", "--outputs", "normals,illumination", "--workers", "1",
                                 "--quiet", "--out", str(ds)])
    assert r.exit_code == 0, r.output
    item = morphgen.open_dataset(ds, outputs="normals,illumination")[0]
    assert item["normals"].shape == (32, 32, 3) and item["illumination"].dtype == torch.uint16

