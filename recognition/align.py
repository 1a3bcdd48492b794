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
import torch
import torch.nn.functional as F

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


def align_batch(images: torch.Tensor, landmarks5: torch.Tensor, size: int, template: str = "openface",
                jitter: torch.Tensor | None = None) -> torch.Tensor:
    """`align_face` for a batch on any torch device: images (B, H, W, C) float, five points
    (B, 5, 2), optional jitter (B, 3) = (scale, dx, dy) -> (B, C, size, size).

    The least-squares similarity has a closed form in 2D (a rotation-scale [[a, -b], [b, a]]
    plus translation: Umeyama's solution, reflections excluded), so no SVD is needed; the
    warp samples pixel centres bilinearly with replicated borders, as cv2.warpAffine does
    with INTER_LINEAR and BORDER_REPLICATE."""
    b, h, w, _ = images.shape
    dev, dt = images.device, torch.float32
    src = landmarks5.to(dt)
    dst = torch.as_tensor(template_points(template, size), device=dev, dtype=dt).expand(b, 5, 2)
    if jitter is not None:
        c = size / 2.0
        dst = (dst - c) * jitter[:, None, 0:1].to(dt) + c + jitter[:, None, 1:3].to(dt)
    mu_s, mu_d = src.mean(1, keepdim=True), dst.mean(1, keepdim=True)
    s, d = src - mu_s, dst - mu_d
    var = (s ** 2).sum((1, 2)).clamp_min(1e-12)
    a = (s * d).sum((1, 2)) / var
    bb = (s[..., 0] * d[..., 1] - s[..., 1] * d[..., 0]).sum(1) / var
    # output pixel p -> source M^-1 (p - t), with t = mu_d - M mu_s, i.e. mu_s + M^-1 (p - mu_d)
    det = (a ** 2 + bb ** 2).clamp_min(1e-12)
    ys, xs = torch.meshgrid(torch.arange(size, device=dev, dtype=dt), torch.arange(size, device=dev, dtype=dt),
                            indexing="ij")
    px = xs[None] - mu_d[:, :, 0, None]
    py = ys[None] - mu_d[:, :, 1, None]
    a_, b_ = (a / det)[:, None, None], (bb / det)[:, None, None]
    sx = mu_s[:, :, 0, None] + a_ * px + b_ * py
    sy = mu_s[:, :, 1, None] - b_ * px + a_ * py
    grid = torch.stack(((2 * sx + 1) / w - 1, (2 * sy + 1) / h - 1), -1)
    return F.grid_sample(images.permute(0, 3, 1, 2).to(dt), grid, mode="bilinear", padding_mode="border",
                         align_corners=False)
