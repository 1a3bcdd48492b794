"""MTCNN face detector (P-, R-, O-Net cascade, Zhang et al. 2016) without torchvision.

The network definitions mirror facenet-pytorch's and load the weight files shipped in
its wheel (``facenet_pytorch/data/{pnet,rnet,onet}.pt``); the package's ``__init__`` is
never imported (it needs torchvision). Non-maximum suppression is plain numpy.

    detect_faces([rgb_uint8, ...]) -> [(box[4], prob, landmarks5[5, 2]) or None, ...]

Landmarks come in MTCNN order: eye on image-left, eye on image-right, nose, mouth
image-left, mouth image-right (pixel coordinates of the input image).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from morphgen.errors import ModelError


class PNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, 3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, 3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, 3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)

    def forward(self, x):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), torch.softmax(self.conv4_1(x), 1)


class RNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, 3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, 3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, 2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)  # weights converted from a (W, H, C) layout
        x = self.prelu4(self.dense4(x))
        return self.dense5_2(x), torch.softmax(self.dense5_1(x), 1)


class ONet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, 3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, 2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)
        x = self.prelu5(self.dense5(x))
        return self.dense6_2(x), self.dense6_3(x), torch.softmax(self.dense6_1(x), 1)


def weights_dir() -> Path:
    """Folder holding facenet-pytorch's MTCNN weights, found without importing the package."""
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("MTCNN weights not found: install facenet-pytorch "
                         "(`pip install --no-deps facenet-pytorch`), or pass --no-align for pre-cropped faces")
    d = Path(list(spec.submodule_search_locations)[0]) / "data"
    if not (d / "pnet.pt").is_file():
        raise ModelError(f"MTCNN weights missing in {d}: reinstall facenet-pytorch")
    return d


_NETS: tuple[PNet, RNet, ONet] | None = None


def load_nets() -> tuple[PNet, RNet, ONet]:
    """The three networks with their shipped weights (loaded once per process)."""
    global _NETS
    if _NETS is None:
        d = weights_dir()
        nets = (PNet(), RNet(), ONet())
        for net, name in zip(nets, ("pnet", "rnet", "onet")):
            net.load_state_dict(torch.load(d / f"{name}.pt", map_location="cpu", weights_only=True))
            net.eval()
        _NETS = nets
    return _NETS


def nms(boxes: np.ndarray, scores: np.ndarray, thresh: float, method: str = "union", plus_one: bool = False) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, best score first. Stages 1-2
    use torchvision's convention (areas without +1), stage 3 the original "min" with +1,
    as facenet-pytorch does, so landmarks match its MTCNN."""
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    one = 1.0 if plus_one else 0.0
    x1, y1, x2, y2 = boxes.T
    area = (x2 - x1 + one) * (y2 - y1 + one)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + one)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + one)
        inter = w * h
        denom = np.minimum(area[i], area[rest]) if method == "min" else area[i] + area[rest] - inter
        order = rest[inter / denom <= thresh]
    return np.array(keep, np.int64)


def _square(b: np.ndarray) -> np.ndarray:
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    side = np.maximum(w, h)
    b = b.copy()
    b[:, 0] += w * 0.5 - side * 0.5
    b[:, 1] += h * 0.5 - side * 0.5
    b[:, 2] = b[:, 0] + side
    b[:, 3] = b[:, 1] + side
    return b


def _regress(b: np.ndarray, reg: np.ndarray) -> np.ndarray:
    w = b[:, 2] - b[:, 0] + 1
    h = b[:, 3] - b[:, 1] + 1
    b = b.copy()
    b[:, :4] += reg * np.stack([w, h, w, h], 1)
    return b


def _crops(full: torch.Tensor, boxes: np.ndarray, size: int) -> torch.Tensor:
    """Box crops (clipped to the image, as facenet-pytorch does) area-resized to size x size,
    scaled to [-1, 1]. `full` is the (1, 3, H, W) float image."""
    h, w = full.shape[2:]
    out = torch.zeros(len(boxes), 3, size, size)
    for k, (x1, y1, x2, y2) in enumerate(np.trunc(boxes[:, :4]).astype(np.int64)):
        x1, y1, x2, y2 = max(x1, 1), max(y1, 1), min(x2, w), min(y2, h)
        if y2 > y1 - 1 and x2 > x1 - 1:
            out[k] = F.interpolate(full[:, :, y1 - 1:y2, x1 - 1:x2], size=(size, size), mode="area")[0]
    return (out - 127.5) * 0.0078125


@torch.inference_mode()
def _detect_one(img: np.ndarray, min_face: float, thresholds, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """All faces in one RGB image: boxes (n, 5) = x1, y1, x2, y2, prob and landmarks (n, 5, 2)."""
    pnet, rnet, onet = load_nets()
    h, w = img.shape[:2]
    full = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    scale, side, scales = 12.0 / min_face, min(h, w) * 12.0 / min_face, []
    while side >= 12:
        scales.append(scale)
        scale *= factor
        side *= factor
    # Stage 1: fully convolutional P-Net over an image pyramid.
    found = []
    for s in scales:
        x = F.interpolate(full, size=(int(h * s + 1), int(w * s + 1)), mode="area")
        x = (x - 127.5) * 0.0078125
        reg, prob = pnet(x)
        prob, reg = prob[0, 1].numpy(), reg[0].numpy()
        ys, xs = np.nonzero(prob >= thresholds[0])
        if len(ys) == 0:
            continue
        q = np.stack([xs, ys], 1).astype(np.float64)
        q1, q2 = np.floor((2 * q + 1) / s), np.floor((2 * q + 12) / s)
        b = np.hstack([q1, q2, prob[ys, xs][:, None], reg[:, ys, xs].T])
        found.append(b[nms(b[:, :4], b[:, 4], 0.5)])
    if not found:
        return np.zeros((0, 5)), np.zeros((0, 5, 2))
    b = np.vstack(found)
    b = b[nms(b[:, :4], b[:, 4], 0.7)]
    bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    b = np.hstack([b[:, :4] + b[:, 5:9] * np.stack([bw, bh, bw, bh], 1), b[:, 4:5]])
    b = _square(b)
    # Stage 2: R-Net refines and rejects candidates.
    reg, prob = rnet(_crops(full, b, 24))
    keep = prob[:, 1].numpy() > thresholds[1]
    b = np.hstack([b[keep, :4], prob[keep, 1].numpy()[:, None]])
    reg = reg.numpy()[keep]
    k = nms(b[:, :4], b[:, 4], 0.7)
    b = _square(_regress(b[k], reg[k]))
    if len(b) == 0:
        return np.zeros((0, 5)), np.zeros((0, 5, 2))
    # Stage 3: O-Net gives the final boxes and five landmarks.
    reg, pts, prob = (t.numpy() for t in onet(_crops(full, b, 48)))
    keep = prob[:, 1] > thresholds[2]
    b = np.hstack([b[keep, :4], prob[keep, 1][:, None]])
    reg, pts = reg[keep], pts[keep]
    bw, bh = b[:, 2] - b[:, 0] + 1, b[:, 3] - b[:, 1] + 1
    lm = np.stack([bw[:, None] * pts[:, :5] + b[:, 0:1] - 1, bh[:, None] * pts[:, 5:] + b[:, 1:2] - 1], 2)
    b = _regress(b, reg)
    k = nms(b[:, :4], b[:, 4], 0.7, "min", plus_one=True)
    return b[k], lm[k]


MAX_SIDE = 4096  # pixels, the longer side of the image the detector searches (before `pad`)


def detect_faces(images: list[np.ndarray], min_face: float = 20.0, min_side: int = 100,
                 thresholds=(0.6, 0.7, 0.7), factor: float = 0.709, select: str = "largest",
                 pad: float = 0.0) -> list[tuple[np.ndarray, float, np.ndarray] | None]:
    """Detect one face per image (the largest, or the most probable with
    ``select="probability"``). Images are RGB (or grey) uint8 arrays of any size.

    Images whose shorter side is under `min_side` are upsampled first (MTCNN's smallest
    face is about 20 px), no further than a longer side of MAX_SIDE, and larger images are
    scaled down to it. `pad` adds a grey border of that fraction of the longer side,
    which helps on tight crops where the face fills the frame. Coordinates are returned
    in the input image's pixels. Returns None where no face is found.

    Runs on one torch thread (restored afterwards): the tensors are small, and on a busy
    machine extra threads make it several times slower, not faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [_detect_largest(img, min_face, min_side, thresholds, factor, select, pad) for img in images]
    finally:
        torch.set_num_threads(threads)


def _detect_largest(img: np.ndarray, min_face, min_side, thresholds, factor, select, pad):
    """One image: the selected face as (box, prob, landmarks) in input pixels, or None."""
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, 2)
    elif img.shape[2] == 4:
        img = img[:, :, :3]
    img = np.ascontiguousarray(img, dtype=np.uint8)
    # the detector works on a longer side of at most MAX_SIDE: a 1 x 4,000 px strip asked for
    # a 100 x 400,000 image (and, padded, a 360 GB one) and a 3 x 30,000 one exhausted 24 GB
    # in the pyramid; a larger photo is scaled down to it (faces under about 20 px of it are
    # lost, as at any size)
    up = min(max(1.0, min_side / min(img.shape[:2])), MAX_SIDE / max(img.shape[:2]))
    if min(img.shape[:2]) * up < min_face:  # a strip that thin holds no face MTCNN can find
        return None
    work = img if up == 1.0 else cv2.resize(img, None, fx=up, fy=up,
                                            interpolation=cv2.INTER_CUBIC if up > 1 else cv2.INTER_AREA)
    border = int(round(pad * max(work.shape[:2])))
    if border:
        work = cv2.copyMakeBorder(work, border, border, border, border, cv2.BORDER_CONSTANT, value=(127, 127, 127))
    boxes, lms = _detect_one(work, min_face, thresholds, factor)
    if len(boxes) == 0:
        return None
    if select == "probability":
        i = int(np.argmax(boxes[:, 4]))
    else:
        i = int(np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))
    box = (boxes[i, :4] - border) / up
    lm = (lms[i] - border) / up
    return box.astype(np.float32), float(boxes[i, 4]), lm.astype(np.float32)
