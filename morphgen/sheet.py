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


def _text_width(text: str, scale: float) -> int:
    return cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0]


def _scale(w: int) -> float:
    return max(0.25, w / 300)


def _wrapped(lines: list[str], w: int) -> list[str]:
    out: list[str] = []
    for line in lines:
        cur = ""
        for word in line.split(" "):
            trial = f"{cur} {word}" if cur else word
            if cur and _text_width(trial, _scale(w)) > w - 2:
                out.append(cur)
                cur = word
            else:
                cur = trial
        out.append(cur)
    return out


def _caption_strip(img: np.ndarray, lines: list[str], rows: int | None = None) -> np.ndarray:
    w = img.shape[1]
    scale = _scale(w)
    step = int(np.ceil(cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][1] * 1.8))
    strip = np.full((step * max(rows or 0, len(lines)) + 2, w, 3), 24, np.uint8)
    for k, text in enumerate(lines):
        cv2.putText(strip, text, (1, step * (k + 1) - step // 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (230, 230, 230), 1,
                    cv2.LINE_AA)
    return np.vstack([img, strip])


def captioned_all(images, captions: list[list[str]]) -> list[np.ndarray]:
    """Each (H, W, 3) uint8 tile over a dark strip holding its caption lines in small text,
    wrapped at spaces to the tile's width, every strip as tall as the longest (a sheet's
    tiles stay one size), for contact sheets a person reads tile by tile."""
    wrapped = [_wrapped(c, img.shape[1]) for img, c in zip(images, captions)]
    rows = max((len(c) for c in wrapped), default=0)
    return [_caption_strip(img, c, rows) for img, c in zip(images, wrapped)]


def write_sheet(path: Path, images, cols: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # JPEG sheets at quality 85: they are for the eye, and docs keep them a few hundred kB
    params = [cv2.IMWRITE_JPEG_QUALITY, 85] if path.suffix.lower() in (".jpg", ".jpeg") else []
    if not cv2.imwrite(str(path), cv2.cvtColor(contact_sheet(images, cols), cv2.COLOR_RGB2BGR), params):
        raise ConfigError(f"could not write {path}: check the folder exists and is writable")
    return path
