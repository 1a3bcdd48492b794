"""Pinhole perspective camera, head pose and landmark-based framing.

Coordinate frames (all in millimetres, as in the model; see ``morphgen.model``):

* **model space**: the morphable model's own frame, y up, +z toward the viewer.
* **camera (view) space**: the camera sits at the origin and looks down -z, y up,
  x to the right (OpenGL / Basel convention). A posed vertex is
  ``v_cam = scale * R @ v_model + translation``; the Basel generator's default puts
  the face at translation (0, 0, -1000), i.e. one metre in front of the camera.
* **screen (pixel) space**: x to the right, y *down*, origin at the image's top-left
  corner; pixel (row i, column j) covers [j, j+1) x [i, i+1), so its centre is at
  (j + 0.5, i + 0.5). Depth is the view-space distance along the optical axis,
  ``-z_cam`` (positive in front of the camera).

Rotation (why this choice: every angle is a plain right-hand rotation about a camera
axis, so the sign of each angle follows from the right-hand rule and nothing else):

* ``R = Rz(roll) @ Rx(pitch) @ Ry(yaw)``: yaw is applied first, then pitch, then roll,
  each about the fixed camera axes.
* yaw > 0 turns the face toward **its own left**, which is **image right** (the nose
  moves to +x); at yaw 90 the viewer sees the face's right cheek.
* pitch > 0 turns the nose **down** (the face looks toward the floor).
* roll > 0 turns the face counter-clockwise as seen in the image (the top of the head
  moves toward image left, i.e. the head tilts toward its right shoulder).

Framing ("face centred and scaled in the frame by its landmarks"): :func:`frame_translation`
chooses the translation so that the 3D centroid of the five alignment points projects to
the image centre (plus optional jitter) and the face's eye-to-mouth distance -- measured
in 3D, hence independent of yaw/pitch/roll -- spans a fixed fraction of the image
height. Every identity and pose thus gets the same scale; a profile view does not
shrink or grow because its projected landmarks come closer together.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError
from ..tensors import is_tensor

MIN_IMAGE_SIZE = 16
MAX_IMAGE_SIZE = 4096


def check_image_size(height: Any, width: Any, what: str = "image size") -> tuple[int, int]:
    """Validate an image size; return it as two ints or raise ConfigError."""
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            if isinstance(value, float) and value.is_integer():
                continue
            raise ConfigError(f"{what} {name} must be a whole number of pixels, got {value!r}")
        if not MIN_IMAGE_SIZE <= int(value) <= MAX_IMAGE_SIZE:
            raise ConfigError(
                f"{what} {name} = {value} is out of range: use {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE} pixels"
            )
    return int(height), int(width)


@dataclass(frozen=True)
class Camera:
    """Pinhole camera with the Basel generator's defaults.

    ``sensor_mm`` is the sensor extent along the *shorter* image side and pixels are
    square, so a non-square image widens the field of view instead of stretching it.
    With the defaults (50 mm lens, 15 mm sensor) the field of view at 1 m is 300 mm.
    """

    height: int = 128
    width: int = 128
    focal_mm: float = 50.0
    sensor_mm: float = 15.0
    near: float = 10.0
    far: float = 1e6

    def __post_init__(self) -> None:
        h, w = check_image_size(self.height, self.width)
        object.__setattr__(self, "height", h)
        object.__setattr__(self, "width", w)
        if not (self.focal_mm > 0 and self.sensor_mm > 0):
            raise ConfigError(
                f"camera focal length ({self.focal_mm}) and sensor size ({self.sensor_mm}) must be positive millimetres"
            )
        if not 0 < self.near < self.far:
            raise ConfigError(f"camera clip planes need 0 < near < far, got near={self.near}, far={self.far}")

    @property
    def focal_px(self) -> float:
        """Focal length in pixels (same for x and y: square pixels)."""
        return self.focal_mm / self.sensor_mm * min(self.height, self.width)

    @property
    def center_px(self) -> tuple[float, float]:
        """Principal point (x, y) in pixels: the image centre."""
        return self.width / 2.0, self.height / 2.0

    def scaled(self, factor: int) -> "Camera":
        """The same view at ``factor`` times the resolution (for supersampling).

        Pixel coordinates scale exactly by ``factor`` (x_hi = factor * x), because the
        principal point and focal length in pixels both scale with the image.
        """
        if factor == 1:
            return self
        h, w = self.height * factor, self.width * factor
        if max(h, w) > MAX_IMAGE_SIZE * 4:
            raise ConfigError(f"supersampled size {h}x{w} is too large: lower the antialias factor")
        # bypass the per-image size limit for the internal high-resolution buffer
        cam = object.__new__(Camera)
        for f in ("focal_mm", "sensor_mm", "near", "far"):
            object.__setattr__(cam, f, getattr(self, f))
        object.__setattr__(cam, "height", h)
        object.__setattr__(cam, "width", w)
        return cam

    def project(self, points_cam):
        """Camera-space points (..., 3) -> screen (..., 3): pixel x, pixel y, depth.

        Works on numpy arrays and torch tensors (differentiable). Depth = -z_cam.
        """
        f = self.focal_px
        cx, cy = self.center_px
        x, y, z = points_cam[..., 0], points_cam[..., 1], points_cam[..., 2]
        depth = -z
        if is_tensor(points_cam):
            import torch

            # keep the division finite for points behind the camera; the rasterizer drops them
            safe = torch.where(depth.abs() > 1e-9, depth, torch.full_like(depth, 1e-9))
            return torch.stack((cx + f * x / safe, cy - f * y / safe, depth), dim=-1)
        safe = np.where(np.abs(depth) > 1e-9, depth, 1e-9)
        return np.stack((cx + f * x / safe, cy - f * y / safe, depth), axis=-1)

    def unproject_center(self, u: float, v: float, depth: float) -> np.ndarray:
        """The camera-space point at ``depth`` that projects to pixel (u, v)."""
        f = self.focal_px
        cx, cy = self.center_px
        return np.array([(u - cx) / f * depth, -(v - cy) / f * depth, -depth])


def _as_batch(x, b: int, shape: tuple[int, ...], name: str, like=None):
    """Broadcast a scalar / per-image value to (b, *shape) in the array type of ``x``."""
    if is_tensor(x):
        return x.expand(b, *shape) if x.dim() < 1 + len(shape) else x
    arr = np.asarray(x, dtype=np.float64)
    try:
        return np.broadcast_to(arr, (b, *shape)).copy()
    except ValueError:
        raise ConfigError(f"pose {name} has shape {arr.shape}; expected a scalar or ({b}, {', '.join(map(str, shape))})") from None


@dataclass
class Pose:
    """Per-image head pose: angles in degrees, translation in mm, isotropic scale.

    Fields are (B,) / (B, 3) numpy arrays or torch tensors (torch keeps gradients for
    fitting). See the module docstring for the rotation order and signs.
    """

    yaw: Any
    pitch: Any
    roll: Any
    translation: Any = field(default_factory=lambda: np.array([[0.0, 0.0, -1000.0]]))
    scale: Any = 1.0

    @classmethod
    def create(
        cls,
        batch: int,
        yaw: Any = 0.0,
        pitch: Any = 0.0,
        roll: Any = 0.0,
        translation: Any = (0.0, 0.0, -1000.0),
        scale: Any = 1.0,
    ) -> "Pose":
        """Numpy pose for ``batch`` images, scalars broadcast (Basel default: 1 m away)."""
        return cls(
            yaw=_as_batch(yaw, batch, (), "yaw"),
            pitch=_as_batch(pitch, batch, (), "pitch"),
            roll=_as_batch(roll, batch, (), "roll"),
            translation=_as_batch(translation, batch, (3,), "translation"),
            scale=_as_batch(scale, batch, (), "scale"),
        )

    @property
    def batch(self) -> int:
        """How many images the pose is for (the length of ``yaw``)."""
        return int(self.yaw.shape[0])

    def rotation(self):
        """(B, 3, 3) rotation matrices, numpy or torch like the angles."""
        return rotation_matrix(self.yaw, self.pitch, self.roll)

    def numpy(self) -> "Pose":
        """A float64 numpy copy (detached)."""

        def cv(x, shape):
            if is_tensor(x):
                x = x.detach().cpu().double().numpy()
            return _as_batch(x, self.batch, shape, "value")

        return Pose(cv(self.yaw, ()), cv(self.pitch, ()), cv(self.roll, ()), cv(self.translation, (3,)), cv(self.scale, ()))

    def torch(self, device=None, dtype=None) -> "Pose":
        """Tensors on ``device`` (values already tensors are moved, keeping their graph);
        ``dtype`` defaults to float32."""
        import torch

        dtype = torch.float32 if dtype is None else dtype
        b = self.batch

        def cv(x, shape):
            if isinstance(x, torch.Tensor):
                t = x.to(device=device, dtype=dtype)
            else:
                t = torch.as_tensor(np.asarray(x, dtype=np.float64), device=device, dtype=dtype)
            return t.expand(b, *shape) if t.dim() < 1 + len(shape) else t

        return Pose(cv(self.yaw, ()), cv(self.pitch, ()), cv(self.roll, ()), cv(self.translation, (3,)), cv(self.scale, ()))

    def with_translation(self, translation) -> "Pose":
        return replace(self, translation=translation)

    def transform(self, vertices):
        """Model-space vertices (B, N, 3) -> camera space: ``scale * R v + t``."""
        r = self.rotation()
        if is_tensor(vertices):
            import torch

            s = self.scale.reshape(-1, 1, 1)
            return s * torch.matmul(vertices, r.transpose(1, 2)) + self.translation[:, None, :]
        s = np.asarray(self.scale, dtype=np.float64).reshape(-1, 1, 1)
        return s * np.matmul(vertices, np.swapaxes(r, 1, 2)) + np.asarray(self.translation)[:, None, :]


def rotation_matrix(yaw, pitch, roll):
    """``Rz(roll) @ Rx(pitch) @ Ry(yaw)`` from angles in degrees, shape (B, 3, 3).

    Accepts numpy arrays (float64 result) or torch tensors (differentiable, same dtype
    and device as the input).
    """
    if is_tensor(yaw):
        import torch

        xp = torch
        a, b, c = (x * (math.pi / 180.0) for x in (yaw, pitch, roll))
    else:
        xp = np
        a, b, c = (np.deg2rad(np.atleast_1d(np.asarray(x, dtype=np.float64))) for x in (yaw, pitch, roll))
    ca, sa, cb, sb, cc, sc = xp.cos(a), xp.sin(a), xp.cos(b), xp.sin(b), xp.cos(c), xp.sin(c)
    one, zero = xp.ones_like(ca), xp.zeros_like(ca)
    ry = xp.stack((ca, zero, sa, zero, one, zero, -sa, zero, ca), -1).reshape(-1, 3, 3)
    rx = xp.stack((one, zero, zero, zero, cb, -sb, zero, sb, cb), -1).reshape(-1, 3, 3)
    rz = xp.stack((cc, -sc, zero, sc, cc, zero, zero, zero, one), -1).reshape(-1, 3, 3)
    return rz @ rx @ ry


@dataclass(frozen=True)
class Framing:
    """How :func:`frame_translation` places the face in the image.

    face_fraction: 3D eye-midpoint-to-mouth-midpoint distance as a fraction of the image
        height (shorter side). 0.25 puts a BFM-sized face (about 75 mm) about 1 m from the
        Basel camera, as the Basel generator does.
    center: where the centroid of the five alignment points lands, as fractions of
        (width, height); (0.5, 0.5) is the image centre.
    center_jitter: uniform jitter of that point, +- this fraction of the image size.
    scale_jitter: uniform relative jitter of face_fraction, +- this fraction.
    """

    face_fraction: float = 0.25
    center: tuple[float, float] = (0.5, 0.5)
    center_jitter: float = 0.0
    scale_jitter: float = 0.0

    def __post_init__(self) -> None:
        if not 0.02 <= self.face_fraction <= 2.0:
            raise ConfigError(f"framing face_fraction = {self.face_fraction} is out of range: use 0.02 to 2")
        if not (0 <= self.center_jitter < 0.5 and 0 <= self.scale_jitter < 0.9):
            raise ConfigError("framing jitter out of range: center_jitter in [0, 0.5), scale_jitter in [0, 0.9)")


def eye_mouth_distance(points: np.ndarray) -> np.ndarray | float:
    """The face size that :class:`Framing` places: the distance from the eyes' midpoint to
    the mouth corners' midpoint of five points (..., 5, D) in the order of
    ``MorphableModel.five_point_vertices()`` (eyes, nose tip, mouth corners), in their
    units and dtype; shape (...)."""
    p = np.asarray(points)
    return np.linalg.norm(0.5 * (p[..., 0, :] + p[..., 1, :]) - 0.5 * (p[..., 3, :] + p[..., 4, :]), axis=-1)


def group_points(vertices, groups: Sequence[Sequence[int]]):
    """Mean of each vertex-index group: (B, N, 3) -> (B, L, 3) (numpy or torch)."""
    idx, w = group_weights(groups)
    if is_tensor(vertices):
        import torch

        it = torch.as_tensor(idx, device=vertices.device, dtype=torch.long)
        wt = torch.as_tensor(w, device=vertices.device, dtype=vertices.dtype)
        return (vertices[:, it] * wt[None, :, :, None]).sum(2)
    return (vertices[:, idx] * w[None, :, :, None]).sum(2)


def group_weights(groups: Sequence[Sequence[int]] | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Padded (L, G) vertex indices and weights (1/len per group, 0 for padding).

    Accepts a list of groups or a flat list of vertex indices (one vertex per point).
    """
    groups = [[int(g)] if np.ndim(g) == 0 else [int(i) for i in g] for g in groups]
    if any(len(g) == 0 for g in groups):
        raise ConfigError("a landmark group is empty: every landmark needs at least one vertex index")
    gmax = max((len(g) for g in groups), default=1)
    idx = np.zeros((len(groups), gmax), dtype=np.int64)
    w = np.zeros((len(groups), gmax), dtype=np.float64)
    for i, g in enumerate(groups):
        idx[i, : len(g)] = g
        w[i, : len(g)] = 1.0 / len(g)
    return idx, w


def frame_translation(
    vertices: np.ndarray,
    pose: Pose,
    five_point_groups: Sequence[Sequence[int]],
    camera: Camera,
    framing: Framing = Framing(),
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Translation (B, 3) that frames each face by its five alignment points.

    vertices: (B, N, 3) model-space vertices; pose supplies rotation and scale (its
    translation is ignored). five_point_groups: the five groups of
    ``MorphableModel.five_point_vertices()`` (eyes, nose tip, mouth corners).

    The face size is the 3D distance from the eye midpoint to the mouth midpoint:
    rotation-invariant, so framing does not depend on the pose. The depth is chosen so
    that this distance would span ``face_fraction`` x the pose scale of the image height
    if it were parallel to the image plane (the pose scale zooms the face in the frame,
    as the pose options promise), and the 3D centroid of the five points is placed on the
    ray through the chosen image point (centre + jitter).
    """
    if len(five_point_groups) != 5:
        raise ConfigError(f"framing needs the 5 alignment-point groups, got {len(five_point_groups)}")
    vertices = np.asarray(vertices)
    if vertices.ndim == 2:
        vertices = vertices[None]
    p = pose.numpy()
    b = vertices.shape[0]
    # gather the few landmark vertices before converting (not the whole mesh)
    pts = group_points(vertices, five_point_groups).astype(np.float64)  # (B, 5, 3) model space
    scale = np.asarray(p.scale, dtype=np.float64).reshape(b)
    size = eye_mouth_distance(pts) * np.abs(scale)  # (B,)
    if np.any(size <= 0):
        raise ConfigError("framing failed: the eye and mouth landmarks coincide; check the landmark vertex groups")
    centroid = np.einsum("bij,bj->bi", p.rotation(), pts.mean(1)) * scale[:, None]  # posed, untranslated
    frac = framing.face_fraction * np.abs(scale)
    cu = np.full(b, framing.center[0] * camera.width)
    cv = np.full(b, framing.center[1] * camera.height)
    if rng is not None and (framing.scale_jitter > 0 or framing.center_jitter > 0):
        frac = frac * (1.0 + rng.uniform(-framing.scale_jitter, framing.scale_jitter, b))
        cu = cu + rng.uniform(-framing.center_jitter, framing.center_jitter, b) * camera.width
        cv = cv + rng.uniform(-framing.center_jitter, framing.center_jitter, b) * camera.height
    # pixel size = focal_px * size / depth = frac * min(H, W)
    depth = camera.focal_px * size / (frac * min(camera.height, camera.width))
    f = camera.focal_px
    cx, cy = camera.center_px
    target = np.stack(((cu - cx) / f * depth, -(cv - cy) / f * depth, -depth), axis=-1)
    return target - centroid
