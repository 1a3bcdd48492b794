"""BFM 2009 end to end: a `01_MorphableModel.mat` without landmarks gets them from
`morphgen model landmarks`, is calibrated on top, and renders a dataset whose five points
sit where the embedded model's own convention puts them.

The .mat is a faithful BFM 2009 file (MATLAB v5, the real variable names and shapes,
micrometres, standard deviations, texture 0..255, 1-based triangles) built from the
embedded model's mean and components, so the embedded model's landmarks are the truth."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from click.testing import CliRunner

from morphgen.calibration import LandmarkCalibration
from morphgen.cli.main import cli
from morphgen.landmark_file import landmark_sidecar
from morphgen.layout import params_rows
from morphgen.loading import load_model
from morphgen.render.camera import Camera, group_points
from recognition.landmark_finder import view


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def write_bfm2009_like(path: Path, model) -> None:
    """The model in BFM 2009's layout: shapeMU (3N, 1) um, shapePC (3N, K), shapeEV (K, 1)
    standard deviations in um; texMU / texPC / texEV in 0..255; tl (T, 3) 1-based."""
    def column(a: np.ndarray) -> np.ndarray:
        return np.asarray(a, np.float64).reshape(-1, 1)

    scipy.io.savemat(str(path), {
        "shapeMU": column(model.shape.mean * 1000.0), "shapePC": model.shape.basis.astype(np.float32),
        "shapeEV": column(np.sqrt(model.shape.variance.astype(np.float64)) * 1000.0),
        "texMU": column(model.color.mean * 255.0), "texPC": model.color.basis.astype(np.float32),
        "texEV": column(np.sqrt(model.color.variance.astype(np.float64)) * 255.0),
        "tl": (model.triangles + 1).astype(np.float64),
    }, format="5")


@pytest.fixture(scope="module")
def bfm2009(tmp_path_factory) -> tuple[Path, object]:
    emb = load_model()
    path = tmp_path_factory.mktemp("bfm2009") / "01_MorphableModel.mat"
    write_bfm2009_like(path, emb)
    raw = scipy.io.loadmat(str(path))
    n, t = emb.n_vertices, emb.n_triangles
    assert raw["shapeMU"].shape == (3 * n, 1) and raw["shapePC"].shape == (3 * n, 80) and raw["shapeEV"].shape == (80, 1)
    assert raw["texMU"].shape == (3 * n, 1) and raw["tl"].shape == (t, 3) and raw["tl"].min() == 1
    m = load_model(path)
    assert m.source == "bfm2009" and m.landmarks == {} and m.expression is None
    np.testing.assert_allclose(m.shape.mean, emb.shape.mean, atol=1e-3)  # um -> mm
    return path, emb


@pytest.fixture(scope="module")
def found(bfm2009) -> tuple[str, dict]:
    path, _ = bfm2009
    r = invoke("model", "landmarks", path)
    assert r.exit_code == 0, r.output
    return r.output, json.loads(landmark_sidecar(path).read_text())


def test_found_points_are_the_embedded_models_known_ones(bfm2009, found):
    """Projected in a frontal view, each found point is within 0.1 inter-ocular distance of
    the point the embedded model's named landmarks make."""
    path, emb = bfm2009
    output, doc = found
    assert "moved" in output and "model calibrate" in output
    assert doc["format"] == "morphgen-landmarks" and doc["vertices"] == emb.n_vertices
    assert doc["found"]["poses_tried"] == 7 and len(doc["found"]["poses_yaw_pitch"]) >= 5
    m = load_model(path)
    assert m.metadata["landmark_file"] == str(landmark_sidecar(path))
    v = emb.mean_vertices()
    camera = Camera(256, 256)
    pose = view(v, 0.0, 0.0, camera)
    known = camera.project(pose.transform(group_points(v[None], emb.five_point_vertices())))[0, :, :2]
    got = camera.project(pose.transform(group_points(v[None], m.five_point_vertices())))[0, :, :2]
    iod = np.linalg.norm(known[1] - known[0])
    dist = np.linalg.norm(got - known, axis=1) / iod
    assert dist.max() < 0.1, dist
    assert max(doc["found"]["movement_iod"].values()) < 0.15  # MTCNN's points hold still on the surface


def test_calibrated_bfm2009_renders_align_like_the_embedded_model(bfm2009, found, tmp_path):
    """`model calibrate` runs on top; the rendered dataset's landmarks5 lie where the
    embedded model's calibrated five points lie on the same face in the same image."""
    from morphgen.options import RENDER_DEFAULTS, scene_from_options
    from morphgen.scene import SceneRenderer

    path, emb = bfm2009
    r = invoke("model", "calibrate", path, "--ids", 6, "--per-id", 5, "--yaw", 45)
    assert r.exit_code == 0, r.output
    out = tmp_path / "ds"
    args = ["--ids", 6, "--per-id", 4, "--no-expressions", "--pose", "frontal"]
    r = invoke("render", "--model", path, *args, "--size", 96, "--antialias", 1, "--workers", 1, "--quiet", "--out", out)
    assert r.exit_code == 0, r.output
    recs = [r for _, r in params_rows(out)]
    assert len(recs) == 24
    # the embedded convention on the same images: its named five points, projected with
    # each image's pose and framing, moved by the embedded model's own calibration
    opts = dict(RENDER_DEFAULTS, model=str(path), ids=6, per_id=4, expressions=False, pose="frontal", size=96,
                antialias=1)
    renderer = SceneRenderer(scene_from_options(opts))
    cal = LandmarkCalibration.from_dict(emb.metadata["landmark_calibration"])
    dist = []
    for rec in recs:
        plan = renderer.plan([renderer.sampler.image_params(rec["identity"], rec["sample"])], with_backgrounds=False)
        pts = group_points(renderer.decoder.vertices(plan.shape, None), emb.five_point_vertices())
        ref = cal.apply(renderer.settings.camera.project(plan.pose().transform(pts))[..., :2], plan.yaw)[0]
        dist.append(np.linalg.norm(np.array(rec["landmarks5"]) - ref, axis=1) / np.linalg.norm(ref[1] - ref[0]))
    mean = np.mean(dist, axis=0)
    assert mean.max() < 0.1, mean
