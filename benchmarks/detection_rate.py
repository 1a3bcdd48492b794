"""How often a real face detector (MTCNN, trained on photos) finds the rendered faces.

    python benchmarks/detection_rate.py                   # embedded model, 400 images, |yaw| <= 45
    python benchmarks/detection_rate.py --model model2017-1_bfm_nomouth.h5 --yaw 90

The quality bar of the embedded default model: >= 95% of frontal-ish renders (|yaw| <= 45,
ordinary light) detected. Also prints the mean distance between MTCNN's five points and the
renderer's projected landmarks, in units of the inter-ocular distance.
"""
from __future__ import annotations

import argparse

import numpy as np

from morphgen.distributions import Uniform
from morphgen.sampling import PoseConfig, SamplingConfig
from morphgen.scene import SceneConfig, SceneRenderer
from recognition.detect import detect_faces


def detection_rate(model: str | None, n_ids: int, per_id: int, yaw: float, size: int, seed: int = 0) -> dict:
    pose = PoseConfig(yaw=Uniform(-yaw, yaw), pitch=Uniform(-20, 20), roll=Uniform(-10, 10))
    scene = SceneConfig(sampling=SamplingConfig(seed=seed, n_identities=n_ids, pose=pose), model=model, size=size)
    renderer = SceneRenderer(scene)
    found, errs = 0, []
    for i in range(n_ids):
        results = renderer.render([renderer.sampler.image_params(i, s) for s in range(per_id)])
        for res, det in zip(results, detect_faces([r.rgb for r in results])):
            if det is None:
                continue
            found += 1
            iod = np.linalg.norm(res.landmarks5[0] - res.landmarks5[1])
            errs.append(np.linalg.norm(det[2] - res.landmarks5, axis=1).mean() / max(iod, 1e-6))
    n = n_ids * per_id
    return {"images": n, "detected": found, "rate": found / n, "landmark_error_iod": float(np.mean(errs)) if errs else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--ids", type=int, default=40)
    ap.add_argument("--per-id", type=int, default=10)
    ap.add_argument("--yaw", type=float, default=45.0, help="yaw drawn uniformly in +-YAW degrees")
    ap.add_argument("--size", type=int, default=128)
    a = ap.parse_args()
    r = detection_rate(a.model, a.ids, a.per_id, a.yaw, a.size)
    print(f"MTCNN found a face in {r['detected']}/{r['images']} renders ({100 * r['rate']:.1f}%), |yaw| <= {a.yaw:g}, "
          f"{a.size}px; mean 5-point distance to projected landmarks: {r['landmark_error_iod']:.3f} x inter-ocular")


if __name__ == "__main__":
    main()
