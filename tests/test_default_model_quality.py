"""The default model's quality bar: a real photo-trained face detector (MTCNN) finds the
rendered faces (frontal-ish poses, ordinary light) in at least 95% of images."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from detection_rate import detection_rate  # noqa: E402


def test_mtcnn_finds_default_model_faces():
    r = detection_rate(model=None, n_ids=8, per_id=5, yaw=45, size=128, seed=11)
    assert r["rate"] >= 0.95, r
    # MTCNN's five points land near the renderer's projected landmarks
    assert r["landmark_error_iod"] < 0.25, r
