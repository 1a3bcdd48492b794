"""Landmark calibration: synthetic five points on MTCNN's convention."""
import numpy as np
import pytest

from morphgen.calibration import LandmarkCalibration, sidecar_path
from morphgen.errors import ModelError
from morphgen.loading import default_model_path, load_model


def test_fit_recovers_a_known_offset():
    rng = np.random.default_rng(0)
    base = np.array([[40, 50], [70, 50], [55, 70], [43, 90], [67, 90]], float)
    lm = base[None] + rng.normal(0, 2, (60, 5, 2))
    yaw = rng.uniform(-60, 60, 60)
    true = np.zeros((5, 2, 3))
    true[2, 1] = [0.1, 0.0, -0.05]  # nose lower by 0.1 IOD, less at large yaw
    true[0, 0] = [0.0, 0.08, 0.0]   # left eye shifts along the eye line with yaw
    cal = LandmarkCalibration(true)
    fitted = LandmarkCalibration.fit(lm, cal.apply(lm, yaw), yaw)
    np.testing.assert_allclose(fitted.coeffs, true, atol=1e-6)
    assert fitted.residual_after < 1e-6 < fitted.residual_before
    again = LandmarkCalibration.from_dict(fitted.to_dict())
    np.testing.assert_allclose(again.apply(lm, yaw), fitted.apply(lm, yaw), atol=1e-4)


def test_default_model_ships_its_calibration():
    path = sidecar_path(default_model_path())
    assert path.exists()
    m = load_model()
    cal = LandmarkCalibration.from_dict(m.metadata["landmark_calibration"])
    assert cal.residual_after < cal.residual_before


def test_calibration_reduces_the_residual_on_held_out_renders():
    from recognition.calibrate import renders_and_detections

    raw, det, yaw = renders_and_detections(None, n_ids=6, per_id=6, yaw=60, seed=777, calibrated=False)
    cal_lm, det2, _ = renders_and_detections(None, n_ids=6, per_id=6, yaw=60, seed=777, calibrated=True)
    iod = np.linalg.norm(raw[:, 1] - raw[:, 0], axis=1)
    before = (np.linalg.norm(det - raw, axis=-1).mean(1) / iod).mean()
    after = (np.linalg.norm(det2 - cal_lm, axis=-1).mean(1) / iod).mean()
    assert len(raw) >= 30 and after < before


def test_corrupt_calibration_is_a_model_error(tmp_path):
    f = tmp_path / "m.calibration.json"
    f.write_text("{not json")
    with pytest.raises(ModelError, match="unreadable landmark calibration"):
        LandmarkCalibration.load(f)
    with pytest.raises(ModelError, match="shape"):
        LandmarkCalibration.from_dict({"coeffs": [[1, 2]]})
