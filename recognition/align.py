"""Five-point face alignment: a least-squares similarity transform (Umeyama) from the
five landmarks (MTCNN order: eye on image-left, eye on image-right, nose tip, mouth corner
image-left, mouth corner image-right) onto a fixed template, then one `cv2.warpAffine`.

Two templates:
- ``openface``: the 96x96 OpenFace crop used by NN4.small2. Its five points are derived
  from OpenFace's dlib-68 mean-shape template (min-max normalised, scaled by 96): eye
  centres = mean of points 36-41 / 42-47, nose tip = 30, mouth corners = 48 / 54.
- ``arcface``: the standard 112x112 insightface template (``arcface_dst``).

A template is scaled to any output size (e.g. ``arcface`` at 160 for InceptionResnetV1).
"""
from __future__ import annotations

import cv2
import numpy as np

from morphgen.errors import ConfigError

TEMPLATES: dict[str, tuple[int, np.ndarray]] = {
    "openface": (96, np.array([[26.6276, 16.0593], [67.7903, 15.2640], [47.2410, 40.5223],
                               [29.4826, 61.6176], [66.7597, 60.8777]], np.float32)),
    "arcface": (112, np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                               [41.5493, 92.3655], [70.7299, 92.2041]], np.float32)),
}


def template_points(name: str, size: int) -> np.ndarray:
    """The template's five points (5, 2) for a square output of `size` pixels."""
    if name not in TEMPLATES:
        raise ConfigError(f"unknown alignment template {name!r}: use one of {', '.join(TEMPLATES)}")
    base, pts = TEMPLATES[name]
    return pts * (size / base)


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 similarity matrix (rotation, uniform scale, translation) mapping `src` points
    onto `dst` in the least-squares sense (Umeyama 1991)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    e = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        e[1, 1] = -1
    r = u @ e @ vt
    var_s = (s ** 2).sum() / len(src)
    scale = (sig * np.diag(e)).sum() / var_s if var_s > 0 else 1.0
    t = mu_d - scale * r @ mu_s
    return np.hstack([scale * r, t[:, None]]).astype(np.float32)


def align_face(img: np.ndarray, landmarks5: np.ndarray, size: int, template: str = "openface",
               jitter: np.ndarray | None = None) -> np.ndarray:
    """Warp `img` so its five landmarks land on the template at `size` x `size`.
    `jitter` = (scale, dx, dy) perturbs the target template (random-crop augmentation:
    scale about 1, shifts in pixels)."""
    dst = template_points(template, size)
    if jitter is not None:
        sc, dx, dy = jitter
        c = size / 2.0
        dst = (dst - c) * sc + c + np.array([dx, dy], np.float32)
    m = umeyama(landmarks5, dst)
    return cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def resize_face(img: np.ndarray, size: int) -> np.ndarray:
    """Plain resize to `size` x `size` (for images that are already crops, `--no-align`)."""
    h, w = img.shape[:2]
    interp = cv2.INTER_AREA if min(h, w) > size else cv2.INTER_LINEAR
    return cv2.resize(img, (size, size), interpolation=interp)
