"""Landmark calibration: one five-point convention across synthetic and real images.

Real faces are aligned with MTCNN's five points; a model's landmark vertices (eye corners,
nose tip, mouth corners) sit a little elsewhere, by an amount that changes with yaw. A
calibration stores, per point, an offset in the face's own image frame (u along the eye
line, v perpendicular, both in units of the inter-ocular distance) as a quadratic in
yaw/90. It is fitted by running MTCNN on renders (`morphgen model calibrate`, see
recognition/calibrate.py) and kept beside the model file as `<model>.calibration.json`;
`load_model` picks it up and the renderer then records MTCNN-convention `landmarks5`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ModelError
from .tensors import is_tensor

DEGREE = 2  # offset = c0 + c1 * y + c2 * y^2 with y = yaw / 90


def sidecar_path(model_path: str | Path) -> Path:
    p = Path(model_path)
    return p.with_name(p.stem + ".calibration.json")


def _frame(lm5):
    """Unit eye-line vector u, its perpendicular v (pointing down the face) and the
    inter-ocular distance, per image: lm5 (B, 5, 2) -> (B, 2), (B, 2), (B,). numpy or torch."""
    e = lm5[:, 1] - lm5[:, 0]
    iod = (e ** 2).sum(-1) ** 0.5
    if is_tensor(iod):
        import torch

        iod, xp = iod.clamp_min(1e-6), torch
    else:
        iod, xp = np.maximum(iod, 1e-6), np
    u = e / iod[:, None]
    v = xp.stack([-u[:, 1], u[:, 0]], 1)
    return u, v, iod


def _design(yaw: np.ndarray) -> np.ndarray:
    y = np.asarray(yaw, np.float64) / 90.0
    return np.stack([y**k for k in range(DEGREE + 1)], axis=1)  # (B, DEGREE+1)


@dataclass(frozen=True)
class LandmarkCalibration:
    coeffs: np.ndarray  # (5, 2, DEGREE+1): point, (u, v), polynomial coefficient
    residual_before: float = float("nan")  # mean |MTCNN - landmark| / IOD on the fitting renders
    residual_after: float = float("nan")
    images: int = 0

    def apply(self, lm5: np.ndarray, yaw: np.ndarray) -> np.ndarray:
        """Projected five points (B, 5, 2) at yaw (B,) degrees -> MTCNN-convention points."""
        return shift_points(np.asarray(lm5, np.float64), self.offsets(yaw))

    def offsets(self, yaw: np.ndarray) -> np.ndarray:
        """(B, 5, 2) offsets in IOD units along (u, v) at yaw (B,) degrees: they depend on
        the pose alone, so a batch's offsets are known before it is rendered."""
        return np.einsum("bk,pak->bpa", _design(yaw), self.coeffs)

    @classmethod
    def fit(cls, projected: np.ndarray, detected: np.ndarray, yaw: np.ndarray) -> "LandmarkCalibration":
        """Least squares over renders: projected and detected (N, 5, 2), yaw (N,)."""
        projected, detected = np.asarray(projected, np.float64), np.asarray(detected, np.float64)
        if len(projected) < 3 * (DEGREE + 1):
            raise ModelError(f"calibration needs at least {3 * (DEGREE + 1)} detected renders, got {len(projected)}")
        u, v, iod = _frame(projected)
        d = (detected - projected) / iod[:, None, None]
        target = np.stack([(d * u[:, None, :]).sum(-1), (d * v[:, None, :]).sum(-1)], axis=-1)  # (N, 5, 2)
        a = _design(yaw)
        sol, *_ = np.linalg.lstsq(a, target.reshape(len(a), -1), rcond=None)
        coeffs = sol.reshape(DEGREE + 1, 5, 2).transpose(1, 2, 0)
        cal = cls(coeffs)
        before = np.linalg.norm(detected - projected, axis=-1).mean(1) / iod
        after = np.linalg.norm(detected - cal.apply(projected, yaw), axis=-1).mean(1) / iod
        return cls(coeffs, float(before.mean()), float(after.mean()), len(a))

    def to_dict(self) -> dict:
        return {"format": 1, "degree": DEGREE, "coeffs": np.round(self.coeffs, 6).tolist(),
                "residual_before_iod": self.residual_before, "residual_after_iod": self.residual_after,
                "images": self.images,
                "convention": "offsets in inter-ocular units along (eye line, its perpendicular); quadratic in yaw/90"}

    @classmethod
    def from_dict(cls, d: dict) -> "LandmarkCalibration":
        try:
            coeffs = np.asarray(d["coeffs"], np.float64)
        except (KeyError, TypeError, ValueError):
            raise ModelError("landmark calibration lacks 'coeffs'") from None
        if coeffs.shape != (5, 2, DEGREE + 1) or not np.all(np.isfinite(coeffs)):
            raise ModelError(f"landmark calibration coeffs have shape {coeffs.shape}, expected (5, 2, {DEGREE + 1})")
        return cls(coeffs, float(d.get("residual_before_iod") or "nan"), float(d.get("residual_after_iod") or "nan"),
                   int(d.get("images", 0)))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "LandmarkCalibration":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8-sig"))
        except (OSError, ValueError) as exc:  # ValueError: not JSON, or not UTF-8
            raise ModelError(f"{path}: unreadable landmark calibration ({exc}); delete it or run morphgen model calibrate") from None
        return cls.from_dict(data)


def shift_points(lm5, off):
    """Move five points (B, 5, 2) by offsets (B, 5, 2) given in the face's (u, v) frame in
    IOD units (numpy, or torch on any device)."""
    u, v, iod = _frame(lm5)
    shift = off[..., 0:1] * u[:, None, :] + off[..., 1:2] * v[:, None, :]
    return lm5 + iod[:, None, None] * shift
