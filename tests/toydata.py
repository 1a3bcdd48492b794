"""A tiny procedural face set in the morphgen dataset layout (:mod:`morphgen.layout`), for
the recognition tests and benchmarks/bench_train.py: the training pipeline without a
renderer.

Each identity is a parameter vector (skin and hair colour, face shape, eye spacing and
size, brow, nose, mouth, a cheek mark); each image draws it with a random similarity
pose, lighting, expression and noise, and records the five landmarks. A share of images
can be identity-mixup images (parameters interpolated between two identities, with the
matching ``soft_label``). Written as ``DIR/manifest.json``, ``DIR/images/<id>/<id>_<n>.png``
(plus a ``_depth.png`` beside some, as extra modalities) and one params file, chunk 0.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from morphgen import layout

# canonical landmarks on a 128 px canvas: eyes, nose tip, mouth corners
_LM = np.array([[45, 54], [83, 54], [64, 76], [50, 94], [78, 94]], np.float32)


def _identity(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 1, 12)


def _draw(p: np.ndarray, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    s = 4  # drawing scale (anti-aliased by downsampling)
    c = 128 * s
    bg = rng.uniform(40, 200, 3)
    img = np.empty((c, c, 3), np.float32)
    img[:] = bg
    img += cv2.resize(rng.normal(0, 25, (8, 8, 3)).astype(np.float32), (c, c))
    skin = np.array([90 + 140 * p[0], 70 + 110 * p[0] * (0.6 + 0.4 * p[1]), 50 + 90 * p[0] * p[1]])
    hair = np.array([30 + 200 * p[2], 25 + 120 * p[2] * p[3], 20 + 60 * p[3]])
    cx, cy = 64 * s, 70 * s
    fw, fh = int((34 + 10 * p[4]) * s), int((44 + 8 * p[5]) * s)
    cv2.ellipse(img, (cx, cy - int(14 * s)), (fw + 4 * s, fh - 10 * s), 0, 180, 360, hair.tolist(), -1)
    cv2.ellipse(img, (cx, cy), (fw, fh), 0, 0, 360, skin.tolist(), -1)
    eye_dx, eye_r = (14 + 8 * p[6]) * s, int((3 + 3 * p[7]) * s)
    lm = _LM.copy()
    lm[0, 0], lm[1, 0] = 64 - eye_dx / s, 64 + eye_dx / s
    for ex in (lm[0, 0], lm[1, 0]):
        e = (int(ex * s), int(lm[0, 1] * s))
        cv2.circle(img, e, eye_r + 2 * s, (235, 235, 235), -1)
        cv2.circle(img, e, eye_r, (hair * 0.5).tolist(), -1)
        brow_y = int((lm[0, 1] - 8 - 5 * p[8]) * s)
        cv2.line(img, (e[0] - 7 * s, brow_y + int(3 * s * (p[9] - 0.5))), (e[0] + 7 * s, brow_y - int(3 * s * (p[9] - 0.5))),
                 (hair * 0.6).tolist(), int((1 + 2 * p[8]) * s))
    nose_len = (10 + 8 * p[10]) * s
    cv2.line(img, (cx, int(60 * s)), (cx, int(60 * s + nose_len)), (skin * 0.7).tolist(), 2 * s)
    lm[2, 1] = 60 + nose_len / s
    smile = rng.uniform(-3, 4)
    mw = 10 + 8 * p[11] + rng.uniform(-1, 1)
    lm[3], lm[4] = [64 - mw, 94], [64 + mw, 94]
    cv2.ellipse(img, (cx, 94 * s), (int(mw * s), int(abs(smile) * s) + s), 0, 0 if smile > 0 else 180,
                180 if smile > 0 else 360, (skin * [0.8, 0.4, 0.4]).tolist(), 2 * s)
    mark = (int((64 + (p[1] - 0.5) * 40) * s), int((80 + (p[3] - 0.5) * 10) * s))
    cv2.circle(img, mark, int((2 + 3 * p[9]) * s), (skin * 0.55).tolist(), -1)
    img = cv2.resize(img, (128, 128), interpolation=cv2.INTER_AREA)
    # pose: similarity about the face centre, then lighting and noise
    ang, sc = rng.uniform(-12, 12), rng.uniform(0.88, 1.12)
    m = cv2.getRotationMatrix2D((64, 70), ang, sc)
    m[:, 2] += rng.uniform(-6, 6, 2)
    img = cv2.warpAffine(img, m, (128, 128), borderMode=cv2.BORDER_REFLECT)
    lm = lm @ m[:, :2].T + m[:, 2]
    ramp = np.linspace(rng.uniform(0.7, 1.0), rng.uniform(1.0, 1.3), 128)[None, :, None]
    img = img * (ramp if rng.random() < 0.5 else ramp[:, ::-1]) * rng.uniform(0.85, 1.15)
    img += rng.normal(0, 4, img.shape)
    if size != 128:
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
        lm = lm * (size / 128)
    return np.clip(img, 0, 255).astype(np.uint8), lm.astype(np.float32)


def write_toy_dataset(out: str | Path, identities: int = 20, per_identity: int = 10, size: int = 128,
                      seed: int = 0, mixup: int = 0, first_id: int = 0) -> Path:
    """Write the set; `mixup` extra images per identity blend it with the next identity
    (phi ~ U(0.5, 0.9), soft_label over both). Returns the folder."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    params = [_identity(rng) for _ in range(identities)]
    rows = []
    for k in range(identities):
        ident = first_id + k
        d = layout.image_folder(out, ident)
        d.mkdir(parents=True, exist_ok=True)
        for n in range(per_identity + mixup):
            soft = None
            p = params[k]
            if n >= per_identity:
                phi = float(rng.uniform(0.5, 0.9))
                other = (k + 1) % identities
                p = phi * params[k] + (1 - phi) * params[other]
                soft = {"ids": [ident, first_id + other], "weights": [phi, 1 - phi]}
            img, lm = _draw(p, rng, size)
            stem = layout.image_stem(ident, n)
            rel = layout.image_ref(ident, f"{stem}.png")
            cv2.imwrite(str(out / rel), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            if n == 0:  # an extra modality beside the image, which readers must ignore
                cv2.imwrite(str(d / f"{stem}_depth.png"), img[:, :, 0])
            rows.append({"image": rel, "identity": ident, "sample": n,
                         "landmarks5": np.round(lm, 3).tolist(), "soft_label": soft})
    marker = layout.chunk_marker(out, 0)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("".join(json.dumps(r) + "\n" for r in rows))
    layout.manifest_path(out).write_text(json.dumps({"generator": "tests.toydata", "identities": identities,
                                                     "images": len(rows), "image_size": size, "seed": seed}, indent=2))
    return out
