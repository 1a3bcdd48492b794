"""Landmark files beside a model (or named with --landmarks): the forms they take, the
one-line errors for wrong ones, and `render` on a model without landmarks failing before
any output exists, with 1 or 2 workers; a worker that raises mid-run gives one line too."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import make_tiny_model
from fixtures import write_bfm2009_fixture
from morphgen import dataset, layout
from morphgen.cli.main import cli
from morphgen.errors import ModelError
from morphgen.landmark_file import LandmarkFile, landmark_sidecar, write_landmark_file
from morphgen.loading import load_model, model_digest

SMALL = ["--ids", "2", "--per-id", "1", "--size", "32", "--antialias", "1", "--quiet"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def morphgen(*args, cwd: Path) -> subprocess.CompletedProcess:
    """The command as a user runs it: worker processes' output included."""
    return subprocess.run([sys.executable, "-m", "morphgen.cli.main", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, check=False, timeout=300)


@pytest.fixture(scope="module")
def bare_model(tmp_path_factory) -> tuple[Path, dict]:
    """A morphgen .npz model without landmarks, and the landmarks it had."""
    path = tmp_path_factory.mktemp("bare") / "bare.npz"
    tiny = make_tiny_model(20, 24)
    replace(tiny, landmarks={}).save_npz(path)
    return path, tiny.landmarks


def test_sidecar_beside_the_model_is_read_and_hashed(tmp_path, bare_model):
    src, landmarks = bare_model
    path = tmp_path / "m.npz"
    shutil.copy(src, path)
    digest = model_digest(path)
    assert load_model(path).landmarks == {}
    with pytest.raises(ModelError, match=r"model landmarks .*m\.npz"):
        load_model(path, need_five_points=True)
    write_landmark_file(landmark_sidecar(path), landmarks, 20 * 24)
    m = load_model(path, need_five_points=True)
    assert m.landmarks == landmarks and m.metadata["landmark_file"] == str(landmark_sidecar(path))
    assert len(m.five_point_vertices()) == 5
    assert model_digest(path) != digest  # the landmarks change the renders, so the manifest's model hash


def test_ibug68_lists_in_every_form_give_the_five_points(tmp_path):
    emb = load_model()
    ib = [int(i) for i in emb.ibug68]
    n = emb.n_vertices
    forms = {"list.json": json.dumps(ib), "list.txt": "\n".join(map(str, ib)),
             "base1.json": json.dumps({"ibug68": [i + 1 for i in ib], "index_base": 1})}
    for name, text in forms.items():
        (tmp_path / name).write_text(text)
        lf = LandmarkFile.read(tmp_path / name, n)
        np.testing.assert_array_equal(lf.ibug68, ib)
        m = lf.apply(emb)
        assert m.five_point_vertices() == emb.five_point_vertices(), name


def test_eyes_by_pupil_centre_and_explicit_names_win(tmp_path):
    emb = load_model()
    lm = {k: emb.landmarks[k] for k in ("center.nose.tip", "right.lips.corner", "left.lips.corner",
                                        "right.eye.pupil.center", "left.eye.pupil.center")}
    f = tmp_path / "five.json"
    write_landmark_file(f, lm, emb.n_vertices)
    groups = LandmarkFile.read(f, emb.n_vertices).apply(emb).five_point_vertices()
    assert groups[:2] == [[lm["right.eye.pupil.center"]], [lm["left.eye.pupil.center"]]]
    f.write_text(json.dumps({"ibug68": [int(i) for i in emb.ibug68], "landmarks": {"center.nose.tip": 7}}))
    assert LandmarkFile.read(f, emb.n_vertices).landmarks["center.nose.tip"] == 7


@pytest.mark.parametrize("content,msg", [
    ({"landmarks": {"center.nose.tip": 99999}}, "outside 0..479"),
    ({"landmarks": {"center.nose.tip": -3}}, "is vertex -3, outside 0..479"),
    (list(range(67)), "must hold 68 vertex indices, got 67"),
    ({"ibug68": list(range(67)) + [480]}, "iBUG point 67 is vertex 480"),
    ({"ibug68": list(range(1, 69)), "index_base": 1, "vertices": 500}, "a model of 500 vertices"),
    ({"landmarks": {"center.nose.tip": 1.5}}, "not a vertex index"),
    ({"landmarks": {"center.nose.tip": 4}}, "lacks the landmarks of 5-point alignment"),
    ("12 x 7", "neither JSON nor"),
])
def test_wrong_landmark_files_are_one_line_errors_naming_the_file(tmp_path, bare_model, content, msg):
    path, _ = bare_model
    bad = tmp_path / "bad.landmarks.json"
    bad.write_text(content if isinstance(content, str) else json.dumps(content))
    r = invoke("model", "info", path, "--landmarks", bad)
    assert r.exit_code == 2 and msg in r.output and str(bad) in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
    out = tmp_path / "o"
    r = invoke("render", "--model", path, "--landmarks", bad, *SMALL, "--out", out, "--workers", 1)
    assert r.exit_code == 2 and str(bad) in r.output and not out.exists(), r.output


def test_wrong_sidecar_beside_the_model_stops_render_before_output(tmp_path, bare_model):
    path = tmp_path / "m.npz"
    shutil.copy(bare_model[0], path)
    landmark_sidecar(path).write_text(json.dumps(list(range(60))))
    r = invoke("render", "--model", path, *SMALL, "--out", tmp_path / "o")
    assert r.exit_code == 2 and str(landmark_sidecar(path)) in r.output and "got 60" in r.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("workers", [1, 2])
def test_render_without_landmarks_fails_before_any_output(tmp_path, workers):
    """Tried as a new user would: BFM 2009 layout, default workers of a 2-core machine."""
    write_bfm2009_fixture(tmp_path / "model.mat")
    r = morphgen("render", "--model", "model.mat", "--ids", 2, "--per-id", 2, "--out", "o", "--workers", workers,
                 cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = (r.stdout + r.stderr).strip().splitlines()
    assert len(lines) == 1 and "morphgen model landmarks model.mat" in lines[0], lines
    assert not (tmp_path / "o").exists()


def test_worker_that_raises_mid_run_leaves_only_complete_chunks(tmp_path, bare_model):
    """A chunk whose write fails in a worker (its identity folder became a file) ends the run
    with one line; the chunks finished are kept, the failed one leaves nothing, and once
    the cause is gone --resume finishes the dataset."""
    path, landmarks = bare_model
    model = tmp_path / "m.npz"
    shutil.copy(path, model)
    write_landmark_file(landmark_sidecar(model), landmarks, 20 * 24)
    args = ["render", "--model", model, "--ids", 6, "--per-id", 2, "--chunk-ids", 1, "--size", 32, "--antialias", 1,
            "--quiet", "--out", "o", "--params-format", "jsonl"]
    assert morphgen(*args, "--workers", 1, cwd=tmp_path).returncode == 0
    out = tmp_path / "o"
    for c in range(2, 6):  # chunks 2..5 to do again, and chunk 3 cannot be written
        layout.chunk_marker(out, c).unlink()
    shutil.rmtree(out / "images/000003")
    (out / "images/000003").write_text("in the way")
    r = morphgen(*args, "--workers", 2, "--resume", cwd=tmp_path)
    lines = (r.stdout + r.stderr).strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, lines
    assert "chunk 3 failed: NotADirectoryError" in lines[0] and "--resume" in lines[0]
    done = {int(p.stem.split("_")[1]) for p in (out / "params").glob("chunk_*.jsonl")}
    assert {0, 1} <= done and 3 not in done
    for c in range(6):
        folder = out / f"images/{c:06d}"
        if c in done:
            assert len(list(folder.glob("*.png"))) == 2
        elif c != 3:
            assert not folder.exists()
    assert not (out / ".partial/chunk_000003").exists()
    (out / "images/000003").unlink()
    r = morphgen(*args, "--workers", 2, "--resume", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "manifest.json").read_text())["complete"]


def test_worker_setup_error_reaches_the_user_as_its_message(tmp_path, bare_model, monkeypatch):
    """Were a worker's set-up to fail (here the main process's check is skipped), the pool
    reports the worker's own error, not a BrokenProcessPool."""
    from morphgen.sampling import SamplingConfig
    from morphgen.scene import SceneConfig

    job = dataset.DatasetJob(SceneConfig(sampling=SamplingConfig(n_identities=2), model=str(bare_model[0]), size=32,
                                         antialias=1), per_id=1)
    monkeypatch.setattr(dataset, "SceneRenderer", lambda *a, **k: None)
    monkeypatch.setattr(dataset, "fork_pool_is_safe", lambda: False)  # spawned workers build their own
    with pytest.raises(ModelError, match="model landmarks") as e:
        dataset.run(tmp_path / "o", job, workers=2, progress=False)
    assert "\n" not in str(e.value) and "--resume" in str(e.value)
