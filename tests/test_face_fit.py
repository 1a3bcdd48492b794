"""Fitting the model to an image (morphgen.face_fit, `morphgen fit`) and rendering recorded
params (`morphgen render --from-params`): recovery of known parameters, twins through the
dataset writer, and bad inputs as one line or counted skips."""
from __future__ import annotations

import csv
import importlib.util
import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from morphgen.cli.main import cli
from test_bad_inputs import assert_refused

from morphgen.errors import DataError
from morphgen.face_fit import FaceFitter, FitOptions, render_known
from morphgen.sampling import ImageParams, SamplingConfig, pose_config
from morphgen.scene import SceneConfig, SceneRenderer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 64


@pytest.fixture(scope="module")
def known() -> tuple[SceneRenderer, FaceFitter]:
    """Renders of known parameters drawn from the model's prior with the fitter's component
    counts (every parameter reachable), moderate poses, at a tiny size, and a fitter."""
    opts = FitOptions(size=SIZE)
    pose = pose_config({"yaw": "uniform(-30, 30)", "pitch": "uniform(-10, 10)", "roll": "uniform(-8, 8)"})
    sampling = SamplingConfig(seed=1, n_identities=3, shape_components=opts.shape_components,
                              color_components=opts.color_components,
                              expression_components=opts.expression_components, pose=pose)
    renderer = SceneRenderer(SceneConfig(sampling=sampling, size=SIZE, antialias=1))
    return renderer, FaceFitter(renderer.model, opts)


def test_fit_recovers_known_renders(known):
    """Pose, light (up to the albedo-light gain one image cannot tell apart) and shape of
    three renders, from their pixels, five points and 68 iBUG points (a perfect detector).
    benchmarks/bench_fit.py prints the same figures for more renders and sizes."""
    renderer, fitter = known
    errors = []
    for identity in range(3):
        p = renderer.sampler.image_params(identity, 0)
        rgb, lm5, pose = render_known(renderer, p)
        fit = fitter.fit(rgb, lm5, fitter.landmarks68(p.shape, p.expression, pose))
        errors.append(fitter.compare(fit, p.shape, p.expression, p.sh, pose))
        assert fit.landmark_residual_px < 0.5
    pose_err = sorted(e["pose_deg"] for e in errors)
    assert pose_err[1] < 3.0 and pose_err[2] < 5.0, errors
    assert max(e["light_rms_gain_free"] for e in errors) < 0.1, errors
    assert max(e["vertex_mm"] for e in errors) < 2.5, errors
    assert sum(e["vertex_mm"] for e in errors) < 0.75 * sum(e["vertex_mm_mean_face"] for e in errors), errors


def test_recorded_camera_translation_replaces_framing(known):
    """A record's camera_translation places the face as recorded, whatever its image-plane
    jitter says: how a fitted photo's framing reaches the renderer."""
    renderer, _ = known
    p = renderer.sampler.image_params(0, 1)
    framed = renderer.plan([p]).translation[0]
    rec = p.to_record() | {"translation": [0.3, -0.2], "camera_translation": framed.tolist()}
    again = ImageParams.from_record(json.loads(json.dumps(rec)))
    assert np.abs(renderer.render([again])[0].rgb.astype(int) - renderer.render([p])[0].rgb).max() <= 1


def run(args: list) -> object:
    r = CliRunner().invoke(cli, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return r


def test_from_params_rerenders_a_dataset(tmp_path):
    """A dataset's params, rendered again through the writer: the same layout and images."""
    run(["render", "--ids", 2, "--per-id", 2, "--size", 32, "--workers", 1, "--quiet", "--out", tmp_path / "a"])
    run(["render", "--from-params", tmp_path / "a", "--size", 32, "--workers", 1, "--quiet", "--out", tmp_path / "b"])
    first = sorted((tmp_path / "a" / "images").rglob("*.png"))
    assert len(first) == 4
    for png in first:
        twin = tmp_path / "b" / png.relative_to(tmp_path / "a")
        assert np.abs(cv2.imread(str(twin)).astype(int) - cv2.imread(str(png))).max() <= 1
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["config"]["from_params"]["sha256"]
    # the dataset's params folder, and one of its params files (Parquet where pyarrow is
    # installed), name the same records
    params = tmp_path / "a" / "params"
    run(["render", "--from-params", params, "--size", 32, "--workers", 1, "--quiet", "--out", tmp_path / "c"])
    one_file = min(params.iterdir())
    run(["render", "--from-params", one_file, "--size", 32, "--workers", 1, "--quiet", "--out", tmp_path / "d"])
    for twin in ("c", "d"):
        assert sorted(p.relative_to(tmp_path / twin) for p in (tmp_path / twin / "images").rglob("*.png")) == \
            sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b" / "images").rglob("*.png"))
        assert json.loads((tmp_path / twin / "manifest.json").read_text())["config"]["from_params"]["sha256"] == \
            manifest["config"]["from_params"]["sha256"]


def test_fit_cli_then_twins(tmp_path):
    """`morphgen fit` on a folder of renders (one faceless image and one corrupt file among
    them, counted skips), then its records rendered as twins."""
    run(["render", "--ids", 1, "--per-id", 1, "--size", 112, "--pose", "frontal", "--backgrounds", "plain",
         "--workers", 1, "--quiet", "--out", tmp_path / "ds"])
    photos = tmp_path / "ds" / "images"
    cv2.imwrite(str(photos / "000000" / "blank.png"), np.full((80, 80, 3), 128, np.uint8))
    (photos / "000000" / "broken.jpg").write_bytes(b"not a jpeg")
    run(["fit", photos, "--out", tmp_path / "fit", "--size", SIZE, "--fine-steps", 40, "--quiet"])  # plumbing: a quick fit
    with open(tmp_path / "fit" / "residuals.csv", newline="") as f:
        rows = {r["source"]: r for r in csv.DictReader(f)}
    assert rows["000000/000000_0000.png"]["status"] == "ok"
    assert float(rows["000000/000000_0000.png"]["landmark_px"]) < 3.0
    assert rows["000000/blank.png"]["status"] == "no_face" and rows["000000/broken.jpg"]["status"] == "unreadable"
    summary = json.loads((tmp_path / "fit" / "summary.json").read_text())
    assert (summary["ok"], summary["no_face"], summary["unreadable"]) == (1, 1, 1)
    assert summary["this_run"]["options"]["fine_steps"] == 40
    assert (tmp_path / "fit" / "overlays" / "000000" / "000000_0000.jpg").is_file()
    record = json.loads((tmp_path / "fit" / "params.jsonl").read_text())
    assert record["fit"]["source"] == "000000/000000_0000.png" and len(record["camera_translation"]) == 3
    run(["render", "--from-params", tmp_path / "fit", "--size", SIZE, "--workers", 1, "--quiet",
         "--out", tmp_path / "twins"])
    twin = cv2.imread(str(tmp_path / "twins" / "images" / "000000" / "000000_0000.png"))
    assert twin.shape == (SIZE, SIZE, 3) and twin.std() > 10
    # pooled identities on the finished fit: nothing refitted, one face per identity written
    # the documented pooling step: --resume takes the fit's own options (fit.json) where none are given
    out = run(["fit", photos, "--out", tmp_path / "fit", "--resume", "--pool-identities", "--quiet"]).output
    assert "fitted 0 photos" in out and "pooled 1 records" in out
    pooled = json.loads((tmp_path / "fit" / "params_pooled.jsonl").read_text())
    assert pooled["shape"] == record["shape"] and pooled["fit"]["pooled"] == 1


def test_pooled_identities_share_one_face(tmp_path):
    from recognition.fit_photos import pool_identities

    recs = [{"identity": i, "sample": s, "shape": [i + s, 2.0 * s], "color": [float(s)], "yaw": 10.0 * s,
             "fit": {"source": f"{i}/{s}.jpg"}} for i in (0, 3) for s in range(3)]
    (tmp_path / "params.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert pool_identities(tmp_path) == {"identities": 2, "records": 6}
    pooled = [json.loads(x) for x in (tmp_path / "params_pooled.jsonl").read_text().splitlines()]
    assert [(r["identity"], r["sample"], r["yaw"]) for r in pooled] == [(r["identity"], r["sample"], r["yaw"]) for r in recs]
    assert [r["shape"] for r in pooled] == [[1.0, 2.0]] * 3 + [[4.0, 2.0]] * 3
    assert all(r["color"] == [1.0] and r["fit"]["pooled"] == 3 for r in pooled)
    (tmp_path / "params.jsonl").write_text("")
    with pytest.raises(DataError, match="nothing to pool"):
        pool_identities(tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("dlib") is None or importlib.util.find_spec("face_recognition_models") is None,
                    reason="dlib and face-recognition-models are optional (--dlib68)")
def test_fit_with_dlib_68_points(tmp_path):
    """--dlib68 adds dlib's 68 iBUG points on a frontal face, and the record says so."""
    run(["render", "--ids", 1, "--per-id", 1, "--size", 128, "--backgrounds", "plain", "--grid", "yaw=0:0:1",
         "--workers", 1, "--quiet", "--out", tmp_path / "ds"])
    photo = next((tmp_path / "ds" / "images").rglob("*.png"))
    run(["fit", photo, "--dlib68", "--out", tmp_path / "fit", "--size", SIZE, "--fine-steps", 40, "--quiet"])
    record = json.loads((tmp_path / "fit" / "params.jsonl").read_text())
    assert record["fit"]["landmarks"] == 68 and record["fit"]["landmark_residual"] < 0.1


def test_bad_fit_and_params_inputs(tmp_path):
    """One `Error:` line each, nothing left behind."""
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 truncated")
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((64, 64, 3), 90, np.uint8))
    out = tmp_path / "out"
    assert_refused(["fit", tmp_path / "missing", "--out", out], "does not exist", tmp_path)
    assert_refused(["fit", empty, "--out", out], "holds no images", tmp_path)
    assert_refused(["fit", broken, "--out", out], "not a readable image", tmp_path)
    assert_refused(["fit", blank, "--out", out], "no face found", tmp_path)
    assert_refused(["fit", blank, "--out", empty.parent], "is not empty", tmp_path)
    good = {"identity": 0, "sample": 0, "shape": [0.0], "color": [0.0], "expression": [], "yaw": 0, "pitch": 0,
            "roll": 0, "sh": np.eye(9, 3).tolist()}
    cases = [("missing.jsonl", None, "does not exist"), ("empty.jsonl", "", "holds no params records"),
             ("garbage.jsonl", "{not json\n", "not a JSON object"),
             ("no_sh.jsonl", json.dumps({k: v for k, v in good.items() if k != "sh"}), "lacks 'sh'"),
             ("twice.jsonl", f"{json.dumps(good)}\n{json.dumps(good)}\n", "recorded twice"),
             ("bad_yaw.jsonl", json.dumps(good | {"yaw": "left"}), "'yaw' must be a number")]
    for name, text, match in cases:
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        assert_refused(["render", "--from-params", path, "--out", out, "--quiet"], match, tmp_path)


def test_ctrl_c_says_how_to_resume_the_fit(tmp_path, monkeypatch):
    """Ctrl-C during a fit is one line naming --resume and exit code 130 (it was click's
    "Aborted!" with exit code 1), and what was fitted stays."""
    from recognition import fit_photos

    def interrupted(photos, out, *a, **k):
        (out / "residuals.csv").parent.mkdir(parents=True, exist_ok=True)
        (out / "residuals.csv").write_text("source,status\n")
        raise KeyboardInterrupt

    monkeypatch.setattr(fit_photos, "fit_photos", interrupted)
    photo = tmp_path / "p.png"
    cv2.imwrite(str(photo), np.zeros((32, 32, 3), np.uint8))
    r = CliRunner().invoke(cli, ["fit", str(photo), "--out", str(tmp_path / "f"), "--quiet"])
    assert r.exit_code == 130 and "--resume" in r.output and "Traceback" not in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1 and (tmp_path / "f" / "residuals.csv").is_file()


def test_a_fit_that_fails_after_a_photo_keeps_its_output(tmp_path, monkeypatch):
    """Once a photo is fitted, a later error (a worker killed) keeps --out for --resume:
    the CLI's NewOutputs is told so (it removed the folder, then said it was kept)."""
    from morphgen.errors import MorphgenError
    from recognition import fit_photos

    def one_then_broken(photos, out, *a, fitted=None, **k):
        out.mkdir(parents=True)
        (out / "residuals.csv").write_text("source,status\na.png,ok\n")
        fitted()
        raise MorphgenError("a fit worker process died")

    monkeypatch.setattr(fit_photos, "fit_photos", one_then_broken)
    photo = tmp_path / "p.png"
    cv2.imwrite(str(photo), np.zeros((32, 32, 3), np.uint8))
    r = CliRunner().invoke(cli, ["fit", str(photo), "--out", str(tmp_path / "f"), "--quiet"])
    assert r.exit_code == 2 and "worker process died" in r.output
    assert (tmp_path / "f" / "residuals.csv").is_file()


def test_resume_refuses_a_folder_that_is_not_this_fit(tmp_path):
    """--resume of a training run folder, of a fit of other photos, or with other options:
    one line each, the folder untouched (rows of two fits would be merged into one)."""
    from dataclasses import asdict

    for name in ("a", "b"):
        (tmp_path / name / "p0").mkdir(parents=True)
        cv2.imwrite(str(tmp_path / name / "p0" / "x.png"), np.full((64, 64, 3), 90, np.uint8))
    fit = tmp_path / "fit"
    fit.mkdir()
    (fit / "fit.json").write_text(json.dumps({"photos": str((tmp_path / "a").resolve()), "model": None,
                                              "dlib68": False, **asdict(FitOptions(size=64))}))
    (fit / "residuals.csv").write_text("source,status\n")
    train_run = tmp_path / "run"
    train_run.mkdir()
    (train_run / "config.json").write_text("{}")
    assert_refused(["fit", tmp_path / "a", "--out", train_run, "--resume", "--quiet"], "holds no morphgen fit", tmp_path)
    assert_refused(["fit", tmp_path / "b", "--out", fit, "--resume", "--size", 64, "--quiet"],
                   f"is a fit of other inputs (photos {str((tmp_path / 'a').resolve())!r}", tmp_path)
    assert_refused(["fit", tmp_path / "a", "--out", fit, "--resume", "--size", 96, "--quiet"],
                   "(size 64, now 96)", tmp_path)


def test_a_resumed_fit_drops_records_its_residuals_do_not_list(tmp_path):
    """A fit killed between a photo's record and its residuals row (or mid-line) would
    write that photo's record twice on --resume; the resumed fit keeps only the records of
    the photos residuals.csv lists."""
    from recognition.fit_photos import _keep_records_of

    params = tmp_path / "params.jsonl"
    a, b = ({"identity": i, "sample": 0, "fit": {"source": f"{s}.png"}} for i, s in enumerate("ab"))
    params.write_text(json.dumps(a) + "\n" + json.dumps(b) + "\n" + '{"identity": 2, "fi')
    _keep_records_of(params, {"a.png"})
    assert [json.loads(line) for line in params.read_text().splitlines()] == [a]


def test_resume_of_a_damaged_record_and_a_bad_model_are_one_line(tmp_path):
    """fit.json holding a list, or a size that is not a number, was a traceback on
    --resume; with --workers 2 a bad --model was the pool's initializer tracebacks and a
    false "kept in OUT, run with --resume" (OUT was removed)."""
    (tmp_path / "a" / "p0").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "a" / "p0" / "x.png"), np.full((64, 64, 3), 90, np.uint8))
    cv2.imwrite(str(tmp_path / "a" / "p0" / "y.png"), np.full((64, 64, 3), 80, np.uint8))
    fit = tmp_path / "fit"
    fit.mkdir()
    (fit / "residuals.csv").write_text("source,status\n")
    for record, match in (("[]", "fit.json is unreadable (not a JSON object)"),
                          ('{"size": "abc"}', "fit.json: --size must be an integer, got 'abc'")):
        (fit / "fit.json").write_text(record)
        assert_refused(["fit", tmp_path / "a", "--out", fit, "--resume", "--quiet"], match, tmp_path)
    assert_refused(["fit", tmp_path / "a", "--out", tmp_path / "w", "--workers", 2, "--model", tmp_path / "no.npz",
                    "--quiet"], "no.npz does not exist", tmp_path)


def test_a_fit_inside_its_photos_folder_does_not_fit_its_overlays(tmp_path):
    """--out inside PHOTOS: a resume listed the fit's own overlays as another identity's photos."""
    from recognition.fit_photos import list_photos

    for k in range(2):
        (tmp_path / "ph" / f"p{k}").mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "ph" / f"p{k}" / "x.png"), np.full((64, 64, 3), 90, np.uint8))
    (tmp_path / "ph" / "fit" / "overlays" / "p0").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "ph" / "fit" / "overlays" / "p0" / "x.jpg"), np.full((64, 64, 3), 90, np.uint8))
    _, photos = list_photos(tmp_path / "ph", exclude=tmp_path / "ph" / "fit")
    assert [(p.source, p.identity) for p in photos] == [("p0/x.png", 0), ("p1/x.png", 1)]
    _, photos = list_photos(tmp_path / "ph")
    assert len(photos) == 3


def test_overlay_greys_what_lies_past_the_photo_and_marks_the_points():
    """The square view replicates the photo's border where it reaches past it: the overlay
    showed those streaks as if the photo were damaged, with unnamed panels and no points."""
    from recognition.fit_photos import overlay

    view = np.zeros((64, 64, 3), np.uint8)
    view[:, :32] = 200                                # the photo's last column, replicated rightwards
    inside = np.zeros((64, 64), bool)
    inside[:, :32] = True
    covered = np.zeros((64, 64), bool)
    pts = np.array([[10.0, 20.0], [20, 20], [15, 30], [11, 40], [19, 40]])
    out = overlay(view, np.zeros_like(view), covered, inside, pts, pts + 2)
    assert out.shape == (64, 192, 3)
    assert (out[30:50, 40:60] == 128).all()                       # past the photo: flat grey, not the border
    blend = out[:, 128:]
    assert (blend[..., 1] > 200).sum() and ((blend[..., 0] > 200) & (blend[..., 1] < 50)).sum()  # green, red points


def test_a_fit_killed_before_its_first_photo_resumes(tmp_path):
    """Killed before the first photo was recorded, a fit left residuals.csv empty (its
    header still buffered): --resume refused the folder as not a fit, and a new fit into it
    refused it as not empty."""
    from recognition.fit_photos import done_sources

    fit = tmp_path / "fit"
    fit.mkdir()
    (fit / "residuals.csv").write_bytes(b"")
    (fit / "params.jsonl").write_bytes(b"")
    assert done_sources(fit) == set()
