"""Contact sheets: many same-sized images in one PNG, for a person to look at (previews,
a training run's crops beside real crops)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .errors import ConfigError


def contact_sheet(images, cols: int) -> np.ndarray:
    """(N, H, W, 3) uint8 -> one (rows*H, cols*W, 3) image, row by row, black where empty."""
    images = np.asarray(images)
    n, h, w = images.shape[:3]
    rows = max(1, -(-n // cols))
    sheet = np.zeros((rows * h, cols * w, 3), np.uint8)
    for k, img in enumerate(images):
        r, c = divmod(k, cols)
        sheet[r * h:(r + 1) * h, c * w:(c + 1) * w] = img
    return sheet


def write_sheet(path: Path, images, cols: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # JPEG sheets at quality 85: they are for the eye, and docs keep them a few hundred kB
    params = [cv2.IMWRITE_JPEG_QUALITY, 85] if path.suffix.lower() in (".jpg", ".jpeg") else []
    if not cv2.imwrite(str(path), cv2.cvtColor(contact_sheet(images, cols), cv2.COLOR_RGB2BGR), params):
        raise ConfigError(f"could not write {path}: check the folder exists and is writable")
    return path
