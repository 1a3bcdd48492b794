"""The controlled synthetic benchmark: renders held-out identities with the dataset writer
(tiny model), pose and light protocols, outputs; `eval pose` on a morphgen render."""
import json

import pytest
from click.testing import CliRunner

from conftest import make_tiny_model
from morphgen.cli.eval_cmd import eval_group
from recognition.evaluation.synthetic import benchmark_scene
from test_eval_fixtures import eval_run  # noqa: F401


def invoke(*args):
    return CliRunner().invoke(eval_group, [str(a) for a in args])


@pytest.fixture(scope="module")
def face_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("facemodel") / "tiny.npz"
    make_tiny_model(20, 24).save_npz(path)
    return path


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory, eval_run, face_model):  # noqa: F811
    out = tmp_path_factory.mktemp("synth") / "out"
    r = invoke("synthetic", "--model", eval_run, "--out", out, "--ids", 4, "--seed", 123456, "--yaws", "-90:90:45",
               "--lights", 2, "--size", 48, "--face-model", face_model, "--per-fold", 20, "--quiet")
    assert r.exit_code == 0, r.output
    return out, r.output


def test_benchmark_scene_is_controlled():
    scene = benchmark_scene(ids=3, seed=7, yaws="-90:90:15", lights=3)
    grid = scene.sampling.grid
    assert len(grid.points()) == 13 * 3 and not scene.sampling.expressions and scene.sampling.seed == 7
    assert {p["pitch"] for p in grid.points()} == {0.0} and {p["roll"] for p in grid.points()} == {0.0}


def test_synthetic_benchmark(synthetic):
    out, output = synthetic
    assert "pose accuracy" in output and "light accuracy" in output
    res = json.loads((out / "result.json").read_text())
    i = res["inputs"]
    assert i["ids"] == 4 and i["images"] == 40 and i["lights"] == 2 and i["yaws"] == [-90.0, -45.0, 0.0, 45.0, 90.0]
    assert i["seed"] == 123456 and res["warnings"] == []
    pose, light = res["protocols"]["pose"], res["protocols"]["light"]
    assert set(pose["bins"]) == {"-90.0", "-45.0", "45.0", "90.0"} and set(light["bins"]) == {"1"}
    for p in (pose, light):
        assert p["folds_used"] == 2 and p["identity_disjoint"] and p["unscored_pairs"] == 0
        for b in p["bins"].values():
            assert b["pairs"] == 2 * b["genuine"] > 0
    # pose pairs: frontal gallery, same light; light pairs: light 0 gallery, same yaw
    rows = [l.split("\t") for l in (out / "pairs_pose.txt").read_text().splitlines()[2:]]
    assert all(r[3].endswith(("_0004.png", "_0005.png")) for r in rows)       # samples 4, 5 = yaw 0, lights 0 / 1
    assert all(int(r[3][-5]) % 2 == int(r[4][-5]) % 2 for r in rows)           # light = sample % 2
    rows = [l.split("\t") for l in (out / "pairs_light.txt").read_text().splitlines()[2:]]
    assert all(int(r[3][-5]) % 2 == 0 and int(r[4][-5]) % 2 == 1 for r in rows)
    assert all(int(r[3][-6:-4]) // 2 == int(r[4][-6:-4]) // 2 for r in rows)   # same yaw
    for name in ("result.json", "summary.md", "accuracy_vs_yaw.png", "accuracy_vs_light.png", "roc.png"):
        assert (out / name).stat().st_size > 0
    assert len(list(out.glob("render_*/images/*/*.png"))) == 40


def test_rerun_reuses_render_and_pose_on_a_render(synthetic, eval_run, face_model, tmp_path):  # noqa: F811
    out, _ = synthetic
    render = next(out.glob("render_*"))
    stamp = (render / "manifest.json").stat().st_mtime_ns
    r = invoke("synthetic", "--model", eval_run, "--out", tmp_path / "o", "--data", render, "--per-fold", 20, "--quiet")
    assert r.exit_code == 0, r.output
    assert (render / "manifest.json").stat().st_mtime_ns == stamp                 # nothing re-rendered
    again = json.loads((tmp_path / "o" / "result.json").read_text())
    first = json.loads((out / "result.json").read_text())
    assert again["protocols"]["pose"]["accuracy"] == first["protocols"]["pose"]["accuracy"]
    # the defaults (--ids 50 --seed 100000 ...) are not what the reused render holds: said
    assert again["warnings"] == [(f"--data {render} is reused as it is (4 identities, seed 123456), not rendered "
                                  "for this command's --ids 50 --seed 100000 --yaws -90:90:15 --lights 3 --size 128")]
    r = invoke("synthetic", "--model", eval_run, "--out", tmp_path / "same", "--data", render, "--per-fold", 20,
               "--quiet", "--ids", 4, "--seed", 123456, "--yaws", "-90:90:45", "--lights", 2, "--size", 48,
               "--face-model", face_model)
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "same" / "result.json").read_text())["warnings"] == []  # its own options: no word
    r = invoke("pose", "--model", eval_run, "--images", render, "--out", tmp_path / "p", "--quiet", "--per-fold", 20)
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "p" / "result.json").read_text())
    assert res["inputs"]["kind"] == "morphgen" and res["images_report"]["landmarks_given"] > 0
    assert set(res["bins"]) == {"-90.0", "-45.0", "45.0", "90.0"}      # yaw 0: the gallery itself (one per light)


def test_bad_benchmark_options(eval_run, tmp_path):  # noqa: F811
    r = invoke("synthetic", "--model", eval_run, "--out", tmp_path / "o", "--yaws", "-90:90")
    assert r.exit_code == 2 and "start:stop:step" in r.output and "Traceback" not in r.output
    r = invoke("synthetic", "--model", eval_run, "--out", tmp_path / "o", "--face-model", tmp_path / "none.h5")
    assert r.exit_code == 2 and "Traceback" not in r.output
    r = invoke("synthetic", "--model", tmp_path, "--out", tmp_path / "o")
    assert r.exit_code == 2 and "is not a morphgen run" in r.output


def test_a_reused_render_missing_an_image_is_refused(synthetic, eval_run, tmp_path):  # noqa: F811
    """A deleted image of a --data render changed the pairs (and the accuracy) silently."""
    import shutil

    out, _ = synthetic
    render = tmp_path / "render"
    shutil.copytree(next(out.glob("render_*")), render)
    next(render.glob("images/*/*.png")).unlink()
    r = invoke("synthetic", "--model", eval_run, "--out", tmp_path / "o", "--data", render, "--per-fold", 20, "--quiet")
    assert r.exit_code == 2 and "misses 1 of its images" in r.output and "--resume" in r.output, r.output
    assert not (tmp_path / "o").exists()


def test_a_face_model_changed_in_place_renders_anew(eval_run, tmp_path):  # noqa: F811
    """The render folder's tag follows the model's content, not only its path: a model
    file rewritten between two evaluations into one --out reused the old model's images."""
    model = tmp_path / "m.npz"
    make_tiny_model(20, 24).save_npz(model)
    args = ["synthetic", "--model", eval_run, "--out", tmp_path / "o", "--ids", 3, "--yaws", "-45:45:45",
            "--lights", 1, "--size", 32, "--face-model", model, "--per-fold", 10, "--quiet"]
    assert invoke(*args).exit_code == 0
    make_tiny_model(20, 26).save_npz(model)
    r = invoke(*args)
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "o").glob("render_*"))) == 2


@pytest.mark.parametrize("args, match", [
    (["synthetic", "--yaws", "-180:180:90"], "reaches beyond +-90 degrees"),
    (["pose", "--images", ".", "--yaw-step", "nan"], "--yaw-step must be a number of degrees in (0, 180]"),
    (["pose", "--images", ".", "--yaw-step", "inf"], "--yaw-step must be a number of degrees in (0, 180]"),
])
def test_yaw_options_out_of_range(eval_run, tmp_path, args, match):  # noqa: F811
    r = invoke(args[0], "--model", eval_run, *args[1:], "--out", tmp_path / "o", "--quiet")
    assert r.exit_code == 2 and match in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "o").exists()
