"""Find a model's five alignment landmarks itself, for models that carry none (BFM 2009,
PCA models users convert themselves): `morphgen model landmarks`.

The mean face is rendered at a few near-frontal poses, MTCNN (recognition/detect.py) finds
its five points in each render, and every point is carried back to the surface through
the rasterizer's triangle ids and barycentrics. Averaged over the poses in model space and
snapped to the nearest vertex, each becomes one vertex index: a landmark that moves with
every identity, like the named landmarks of BFM 2017. Because the points come from MTCNN,
the found landmarks already follow the convention real photos are aligned with, near
frontal; `morphgen model calibrate` then fits what changes with yaw.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from morphgen.errors import ModelError
from morphgen.illumination import sh_ambient_diffuse_linear
from morphgen.model import MorphableModel
from morphgen.render.camera import Camera, Pose, rotation_matrix
from morphgen.render.rasterize import rasterize
from morphgen.render.renderer import RenderSettings, render_batch

# (yaw, pitch) in degrees: near frontal, where MTCNN's points are reliable, yet varied
# enough that a point which slides over the surface with the view shows up as movement.
POSES: tuple[tuple[float, float], ...] = ((0, 0), (-15, 0), (-7.5, 0), (7.5, 0), (15, 0), (0, -10), (0, 10))
SIZE = 320  # render side in pixels: the face spans well over MTCNN's 20 px minimum
FILL = 0.9  # the mesh's larger side spans this fraction of the image
RASTER_SCALE = 4  # back-projection raster at 4x the render: sub-pixel triangle lookup
SEARCH_PX = 3.0  # a point that misses the mesh takes the nearest covered pixel within this

# MTCNN order (image-left eye, image-right eye, nose, image-left mouth corner, image-right
# one) named for a frontal face, whose right side (-x) is on the image's left.
NAMES = ("right.eye.pupil.center", "left.eye.pupil.center", "center.nose.tip", "right.lips.corner", "left.lips.corner")


@dataclass(frozen=True)
class FoundLandmarks:
    """The result: one vertex per point and what supports it."""

    vertices: np.ndarray  # (5,) vertex index per point of NAMES
    points: np.ndarray  # (P, 5, 3) back-projected surface points per detected pose, model space mm
    residual: np.ndarray  # (P, 5) image distance from each vertex to MTCNN's point, inter-ocular units
    poses: tuple[tuple[float, float], ...]  # the P (yaw, pitch) where MTCNN found the face
    tried: int  # poses rendered

    @property
    def landmarks(self) -> dict[str, int]:
        return {n: int(v) for n, v in zip(NAMES, self.vertices)}

    @property
    def iod_mm(self) -> float:
        """3D distance between the two eye points (mean over poses)."""
        mean = self.points.mean(0)
        return float(np.linalg.norm(mean[1] - mean[0]))

    def movement(self) -> np.ndarray:
        """(5,) largest distance of a pose's point from the points' mean, in inter-ocular
        distances: how far MTCNN's point slid over the surface between the poses."""
        d = np.linalg.norm(self.points - self.points.mean(0), axis=-1).max(0)
        return d / self.iod_mm

    def to_dict(self) -> dict:
        """Diagnostics stored in the landmark file beside the indices."""
        move = self.movement()
        return {"method": "MTCNN on renders of the mean face, back-projected to the surface",
                "poses_yaw_pitch": [list(p) for p in self.poses], "poses_tried": self.tried,
                "iod_mm": round(self.iod_mm, 3),
                "movement_iod": {n: round(float(m), 4) for n, m in zip(NAMES, move)},
                "vertex_to_mtcnn_iod": {n: round(float(r), 4) for n, r in zip(NAMES, self.residual.mean(0))}}


def view(vertices: np.ndarray, yaw: float, pitch: float, camera: Camera) -> Pose:
    """The pose that shows the mesh's bounding-box centre in the middle of the image and its
    larger side spanning FILL of it, wherever the model places its mesh."""
    lo, hi = vertices.min(0), vertices.max(0)
    centre, extent = (lo + hi) / 2, float(max(hi[0] - lo[0], hi[1] - lo[1]))
    depth = camera.focal_px * extent / (FILL * min(camera.height, camera.width))
    rot = rotation_matrix(np.array([yaw]), np.array([pitch]), np.array([0.0]))[0]
    t = -rot @ centre + np.array([0.0, 0.0, -depth])
    return Pose.create(1, yaw=yaw, pitch=pitch, translation=t)


def render_views(model: MorphableModel, poses: tuple[tuple[float, float], ...] = POSES,
                 size: int = SIZE) -> tuple[np.ndarray, list[Pose]]:
    """RGB renders (P, size, size, 3) of the mean face under a soft light from the front and
    above, on grey, and their poses."""
    verts = model.mean_vertices()
    albedo = np.clip(model.color.mean.reshape(-1, 3), 0.0, 1.0)
    sh = sh_ambient_diffuse_linear([0.7] * 3, [0.3] * 3, [0.0, 0.4, 1.0]).astype(np.float32)
    camera = Camera(size, size)
    settings = RenderSettings(height=size, width=size, antialias=2, outputs=("rgb",), framing=None, backend="numba")
    grey = np.full((size, size, 3), 128, np.uint8)
    views = [view(verts, yaw, pitch, camera) for yaw, pitch in poses]
    images = [render_batch(verts[None], albedo, sh, p, model.triangles, settings, backgrounds=grey)["rgb"][0] for p in views]
    return np.stack(images), views


def back_project(vertices: np.ndarray, triangles: np.ndarray, pose: Pose, camera: Camera,
                 points_px: np.ndarray) -> np.ndarray | None:
    """The surface points (L, 3) in model space seen at image points (L, 2), through the
    triangle id and barycentrics of the pixel under each point (a raster at RASTER_SCALE
    times the image). None when a point is off the mesh by more than SEARCH_PX."""
    k = RASTER_SCALE
    hi = camera.scaled(k)
    screen = hi.project(pose.transform(vertices[None]))
    ras = rasterize(screen, triangles, hi.height, hi.width, cull_backfaces=True)
    fid, bary = ras.face_id[0], ras.bary[0]
    covered = np.argwhere(fid >= 0)  # (M, 2) row, column
    out = []
    for x, y in np.asarray(points_px, np.float64) * k:
        px, py = int(np.floor(x)), int(np.floor(y))
        if not (0 <= py < hi.height and 0 <= px < hi.width and fid[py, px] >= 0):
            d = np.hypot(covered[:, 0] + 0.5 - y, covered[:, 1] + 0.5 - x)
            if len(d) == 0 or d.min() > SEARCH_PX * k:
                return None
            py, px = covered[int(d.argmin())]
        tri = triangles[fid[py, px]]
        out.append(bary[py, px].astype(np.float64) @ vertices[tri])
    return np.array(out)


def find_landmarks(model: MorphableModel, poses: tuple[tuple[float, float], ...] = POSES,
                   size: int = SIZE) -> FoundLandmarks:
    """Render, detect, back-project and average (see the module docstring)."""
    from .detect import detect_faces

    verts = model.mean_vertices()
    images, views = render_views(model, poses, size)
    camera = Camera(size, size)
    found, used, seen = [], [], []
    for pose, angles, det in zip(views, poses, detect_faces(list(images))):
        if det is None:
            continue
        pts = back_project(verts, model.triangles, pose, camera, det[2])
        if pts is not None:
            found.append(pts)
            used.append(tuple(float(a) for a in angles))
            seen.append((pose, det[2].astype(np.float64)))
    if len(found) < 2:
        raise ModelError(
            f"model {model.name!r}: MTCNN found a face in {len(found)} of {len(poses)} renders of the mean face, too few "
            "to place landmarks (is +z toward the viewer and y up?); write a landmark file by hand instead "
            "(see `morphgen model landmarks --help`)")
    points = np.stack(found)
    nearest = np.array([int(np.argmin(((verts - c) ** 2).sum(1))) for c in points.mean(0)])
    residual = []
    for pose, det in seen:
        xy = camera.project(pose.transform(verts[None, nearest]))[0, :, :2]
        residual.append(np.linalg.norm(xy - det, axis=1) / np.linalg.norm(det[1] - det[0]))
    return FoundLandmarks(nearest, points, np.array(residual), tuple(used), len(poses))
