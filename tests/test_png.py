"""The dataset writer's PNG encoder: standard files that OpenCV and Pillow decode to the same
pixels, for every dtype and channel count the writer produces."""
from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from morphgen.errors import DataError
from morphgen.png import encode_png


def _images():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:37, 0:53]
    smooth = (yy * 3 + xx * 2).astype(np.uint8)
    yield "rgb8 noise", rng.integers(0, 256, (31, 17, 3), dtype=np.uint8)
    yield "rgb8 smooth", np.stack([smooth, smooth[::-1], 255 - smooth], -1)
    yield "grey8", rng.integers(0, 256, (9, 40), dtype=np.uint8)
    yield "rgba8", rng.integers(0, 256, (5, 6, 4), dtype=np.uint8)
    yield "grey16", rng.integers(0, 65536, (21, 13), dtype=np.uint16)
    yield "rgb16", rng.integers(0, 65536, (8, 11, 3), dtype=np.uint16)
    yield "grey16 big-endian", rng.integers(0, 65536, (6, 5)).astype(">u2")
    yield "rgb8 strided view", rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)[::2, ::-3]
    yield "one pixel", np.array([[[1, 2, 3]]], np.uint8)


@pytest.mark.parametrize(("name", "img"), list(_images()), ids=[n for n, _ in _images()])
def test_decoders_read_back_the_pixels(name, img):
    data = encode_png(img)
    assert encode_png(img) == data  # a pure function of the pixels
    pil = np.asarray(Image.open(io.BytesIO(data)))
    cv = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if cv.ndim == 3:  # OpenCV hands back BGR(A)
        cv = cv[..., [2, 1, 0, 3][: cv.shape[2]]] if cv.shape[2] >= 3 else cv
    expect = img[..., 0] if img.ndim == 3 and img.shape[2] == 1 else img
    assert cv.dtype.itemsize == img.dtype.itemsize and np.array_equal(cv, expect)
    if img.dtype == np.uint8 or img.ndim == 2:  # Pillow has no 16-bit RGB mode
        assert np.array_equal(pil.astype(img.dtype), expect)


def test_compresses_a_render_about_as_well_as_libpng(tmp_path):
    from morphgen.sampling import SamplingConfig
    from morphgen.scene import SceneConfig, SceneRenderer

    renderer = SceneRenderer(SceneConfig(sampling=SamplingConfig(n_identities=2), size=96))
    img = renderer.render([renderer.sampler.image_params(1, 0)])[0].rgb
    ours = len(encode_png(img))
    ok, ref = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    assert ok and ours < 1.1 * len(ref), (ours, len(ref))
    assert ours < 0.6 * img.nbytes


@pytest.mark.parametrize("img", [np.zeros((4, 4), np.float32), np.zeros((4, 4, 2), np.uint8), np.zeros((0, 4, 3), np.uint8),
                                 np.zeros(7, np.uint8)])
def test_refuses_what_png_cannot_hold(img):
    with pytest.raises(DataError, match="as PNG"):
        encode_png(img)
