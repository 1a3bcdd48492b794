"""Reading users' image files and bytes: the one decode every reader goes through.

Why one: OpenCV's two entries differ where files are damaged. ``cv2.imread`` decodes a
JPEG cut short with its missing part grey (and libjpeg prints a stray line), while
``cv2.imdecode`` of the same bytes refuses it; and both raise ``cv2.error`` for a header
that claims more than ``CV_IO_MAX_IMAGE_PIXELS`` pixels, which a few damaged bytes do.
Readers that each called one of them counted the same file readable in a folder and
undecodable in a ``.bin``, or stopped on a traceback. Here a damaged file is None
everywhere, to be counted and named by the caller.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def decode_image(data, flags: int = cv2.IMREAD_COLOR) -> np.ndarray | None:
    """OpenCV's decode of encoded image bytes (BGR for ``IMREAD_COLOR``, EXIF orientation
    applied), or None where they are empty, not an image, truncated, or refused by OpenCV."""
    if data is None or len(data) == 0:
        return None
    try:
        return cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error:
        return None


def read_image_file(path: str | Path, flags: int = cv2.IMREAD_COLOR) -> np.ndarray | None:
    """:func:`decode_image` of a file's bytes; None too for a file that is missing or
    cannot be read (a folder, no permission)."""
    try:
        data = np.fromfile(str(path), np.uint8)
    except (OSError, ValueError):
        return None
    return decode_image(data, flags)
