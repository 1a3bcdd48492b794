"""Fit a model's landmark calibration against MTCNN on its own renders (see
morphgen/calibration.py for what is stored and how it is applied)."""
from __future__ import annotations

import numpy as np

from morphgen.calibration import LandmarkCalibration
from morphgen.distributions import Uniform
from morphgen.sampling import PoseConfig, SamplingConfig
from morphgen.scene import SceneConfig, SceneRenderer

from .detect import detect_faces


def renders_and_detections(model: str | None, n_ids: int, per_id: int, yaw: float, seed: int,
                           calibrated: bool, landmarks: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(landmarks5 (M,5,2), MTCNN points (M,5,2), yaw (M,)) over the renders MTCNN detects;
    ``landmarks``: the model's landmark file, when not the one beside it."""
    pose = PoseConfig(yaw=Uniform(-yaw, yaw), pitch=Uniform(-15, 15), roll=Uniform(-10, 10))
    scene = SceneConfig(sampling=SamplingConfig(seed=seed, n_identities=n_ids, pose=pose), model=model,
                        landmarks=landmarks, size=160)
    renderer = SceneRenderer(scene)
    if not calibrated:
        renderer.calibration = None
    lm, det, yaws = [], [], []
    for i in range(n_ids):
        params = [renderer.sampler.image_params(i, s) for s in range(per_id)]
        results = renderer.render(params)
        for p, res, d in zip(params, results, detect_faces([r.rgb for r in results])):
            if d is not None:
                lm.append(res.landmarks5)
                det.append(d[2])
                yaws.append(p.yaw)
    return np.array(lm), np.array(det), np.array(yaws)


def calibrate(model: str | None, n_ids: int = 40, per_id: int = 10, yaw: float = 60.0, seed: int = 12345,
              landmarks: str | None = None) -> LandmarkCalibration:
    lm, det, yaws = renders_and_detections(model, n_ids, per_id, yaw, seed, calibrated=False, landmarks=landmarks)
    return LandmarkCalibration.fit(lm, det, yaws)
