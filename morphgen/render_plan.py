"""The plain data between a scene and its pixels: what a batch is to look like
(:class:`RenderPlan`), what came out (:class:`RenderResult`) and what a renderer of plans
needs besides the plans (:class:`SceneAssets`).

:class:`morphgen.scene.SceneRenderer` makes plans and assets and renders plans on the
CPU; :class:`morphgen.torch_scene.TorchScene` renders plans on a torch device from the
assets it is handed. Both import this module and neither imports the other at import
time, so the device renderer depends on no private state of the CPU one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .render.camera import Camera, Pose

if TYPE_CHECKING:
    from .appearance import Appearance
    from .calibration import LandmarkCalibration
    from .render.backgrounds import BackgroundSource
    from .sampling import Decoder, ImageParams


@dataclass
class RenderPlan:
    """Everything but the mesh that decides a batch's pixels, as plain numpy arrays.

    Made on the CPU by :meth:`SceneRenderer.plan` (cheap, picklable: loader or pool workers
    make plans while the main process renders the previous ones) and turned into pixels by
    :meth:`SceneRenderer.render_plan` or, on a GPU, :class:`morphgen.torch_scene.TorchScene`.
    ``translation`` already frames each face by its five points (plus the sampled jitter);
    ``backgrounds`` is None when the renderer picks them itself (a GPU background pool).
    """
    params: list[ImageParams]    # may be emptied where only the arrays travel (dataset GPU path)
    shape: np.ndarray            # (B, ks) coefficients (identity mixup already applied)
    color: np.ndarray            # (B, kc)
    expression: np.ndarray       # (B, ke), ke = 0 without expressions
    sh: np.ndarray               # (B, 9, 3)
    yaw: np.ndarray              # (B,) degrees
    pitch: np.ndarray
    roll: np.ndarray
    scale: np.ndarray
    translation: np.ndarray      # (B, 3) mm, camera space
    background_seed: np.ndarray  # (B,) int64
    backgrounds: np.ndarray | None = None  # (B, S, S, 3) uint8
    photo: list | None = None    # per image: camera / photo effects (render.photo), None when the scene has none
    appearance: dict | None = None   # batch arrays of morphgen.appearance (Appearance.arrays), None when off

    def __len__(self) -> int:
        return len(self.shape)

    def pose(self) -> Pose:
        return Pose.create(yaw=self.yaw, pitch=self.pitch, roll=self.roll, scale=self.scale,
                           translation=self.translation, batch=len(self))


@dataclass
class RenderResult:
    """One rendered image as the dataset writer stores it: pixels, extra modalities and
    landmarks."""
    rgb: np.ndarray  # (H, W, 3) uint8
    extras: dict[str, np.ndarray]  # modality name -> uint8/uint16 image
    landmarks: np.ndarray  # (L, 2) pixel coordinates of the model's named landmarks
    visible: np.ndarray  # (L,) bool
    landmarks5: np.ndarray  # (5, 2) alignment points, MTCNN order
    landmarks5_visible: np.ndarray  # (5,) bool
    landmark_names: tuple[str, ...]

    def record(self) -> dict:
        """The per-image landmark entries of the params file."""
        xy = np.round(np.asarray(self.landmarks, np.float64), 3).tolist()
        return {
            "landmarks5": self.landmarks5.round(3).tolist(),
            "landmarks5_visible": self.landmarks5_visible.tolist(),
            "landmarks": {n: [x, y, v] for n, (x, y), v in zip(self.landmark_names, xy, self.visible.tolist())},
        }


@dataclass(frozen=True)
class SceneAssets:
    """What turns plans into pixels besides the plans, loaded once per process.

    decoder: the model's (truncated) bases; triangles: the rendered mesh's, appearance
    meshes included; camera, size, antialias (the supersampling factor), edge_aa (edge
    anti-aliasing, :mod:`morphgen.render.edge_aa`): the image; backgrounds: the scene's source
    (a device renderer draws its pool from it); five_point and landmark_groups: the vertex
    groups of the alignment points and of the named landmarks; reference_coords and
    region_labels: per rendered vertex, for the correspondence and regions outputs;
    calibration: the five points' pose-dependent offsets (None: uncalibrated model);
    appearance: dresses decoded meshes (None when the scene has none).
    """
    decoder: Decoder
    triangles: np.ndarray
    camera: Camera
    size: int
    antialias: int
    edge_aa: bool
    backgrounds: BackgroundSource
    five_point: list
    landmark_groups: list
    reference_coords: np.ndarray
    region_labels: np.ndarray | None
    calibration: LandmarkCalibration | None
    appearance: Appearance | None
