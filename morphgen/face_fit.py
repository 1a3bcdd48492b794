"""Fit the morphable model to one face image: shape, albedo, expression, pose, SH light and
where the face sits in the frame, by analysis by synthesis through the differentiable
torch renderer (:func:`morphgen.render.torch_render.render_torch`).

Why coarse to fine, and why each term (the recipe of analysis-by-synthesis fitters such as
Blanz & Vetter's and Deep3DFaceRecon's, with L-BFGS for the landmark stages and Adam for
the photometric ones in place of their solvers):

1. **Landmarks, rigid**: the five points (MTCNN's, through the model's calibration so both
   follow one convention) and, when given, the 68 iBUG points without the jaw contour (a
   contour point slides over the surface as the head turns, so it has no fixed vertex).
   Seven yaw starts (-90..90) run as one batch and the best is kept: five points leave yaw
   ambiguous, and pixels give no gradient until the face is roughly in place.
2. **Landmarks, non-rigid**: shape and expression join, under their Gaussian priors.
3. **Photometric, half then full resolution**: everything, including albedo and light,
   on the colour difference inside the face region. Its mask comes from the render itself
   (triangles of skin, nose, lips and eyes; never hair, ears, neck, eyebrows or the mouth
   interior), so the background and the hair line cost nothing. The per-pixel term is the
   Euclidean colour distance (not its square), and at full resolution pixels whose error is
   far above the median (an occluder, a strand of hair, a hand) are dropped, so they cannot
   drag albedo and light. The landmark term stays on: pixels give no gradient through the
   silhouette (see :mod:`morphgen.render.interpolate`), landmarks hold the outline.

The image is square (``FitOptions.size``) and seen by the renderer's default camera
(:class:`~morphgen.render.camera.Camera`): the fitted translation (mm, camera space) is
what a renderer of that camera needs to draw the face where the photo has it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .calibration import LandmarkCalibration, shift_points
from .errors import ConfigError
from .model import MorphableModel
from .render.camera import Camera, Pose, group_weights
from .render.shading import vertex_normals_torch
from .render.torch_render import render_torch
from .sampling import Decoder, ImageParams
from .spherical_harmonics import irradiance_torch

if TYPE_CHECKING:
    from .scene import SceneRenderer

#: Regions whose pixels the photometric term compares, and those it never does (hair,
#: ears, neck and the mouth interior differ most between a model and a photo).
FIT_REGIONS = ("skin", "face", "nose", "lips", "eyes")
EXCLUDED_REGIONS = ("hair", "ears", "neck", "eyebrows", "teeth", "mouth_interior")
#: iBUG-68 points used for the landmark term: all but the jaw contour (0-16).
INNER_68 = tuple(range(17, 68))


@dataclass(frozen=True)
class FitOptions:
    """How hard and how far to fit. Component counts are the leading PCA components fitted
    (fewer than the model's: the tail is noise at this resolution and slows convergence);
    step counts are per stage; prior weights multiply the sum of squared coefficients
    (which are in units of the model's standard deviations). ``fine_steps`` sets accuracy
    against time: on renders of known parameters (``benchmarks/bench_fit.py --n 8``), 40
    steps left pose errors up to 7 degrees and shading errors up to 9.5 %, 250 up to 2.2 and
    5.7 %, 400 up to 1.6 and 4.3 %, at 2-3x the time of 40."""

    size: int = 128
    shape_components: int = 40
    color_components: int = 40
    expression_components: int = 20
    rigid_steps: int = 30
    landmark_steps: int = 30
    coarse_steps: int = 100
    fine_steps: int = 400
    yaw_starts: tuple[float, ...] = (-90.0, -60.0, -30.0, 0.0, 30.0, 60.0, 90.0)
    landmark_weight: float = 20.0
    shape_prior: float = 2e-4
    color_prior: float = 2e-4
    expression_prior: float = 4e-4
    light_prior: float = 1e-3
    outlier_factor: float = 3.0

    def __post_init__(self) -> None:
        if not 32 <= self.size <= 512:
            raise ConfigError(f"fit size {self.size} is out of range: use 32 to 512 pixels")
        for name in ("shape_components", "color_components", "expression_components", "rigid_steps",
                     "landmark_steps", "coarse_steps", "fine_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"fit {name.replace('_', ' ')} must be >= 0, got {getattr(self, name)}")
        if not self.yaw_starts:
            raise ConfigError("fit needs at least one yaw start")


@dataclass
class FaceFit:
    """A fitted face: ``params``, the scene the renderer draws -- coefficients (leading
    components, in standard deviations), pose in degrees, SH light (9, 3) and
    ``camera_translation`` in mm (camera space of ``Camera(size, size)``); identity,
    sample and background seed are the caller's to set (``dataclasses.replace``) -- and
    how well it fits: the mean landmark distance in pixels of the fit image and as a
    fraction of the eye-to-mouth distance, the mean colour distance over the face region
    (RGB in [0, 1]) and the fraction of that region kept as inliers."""

    params: ImageParams
    size: int
    landmark_residual_px: float
    landmark_residual: float
    photometric_residual: float
    inlier_fraction: float

    def pose(self) -> Pose:
        p = self.params
        return Pose.create(1, p.yaw, p.pitch, p.roll, p.camera_translation)


def region_vertex_mask(model: MorphableModel) -> np.ndarray:
    """Per vertex: True where the photometric term may look (all vertices of a model
    without regions)."""
    if not model.regions:
        return np.ones(model.n_vertices, bool)
    keep = np.zeros(model.n_vertices, bool)
    for name in FIT_REGIONS:
        if name in model.regions:
            keep |= model.regions[name]
    for name in EXCLUDED_REGIONS:
        if name in model.regions:
            keep &= ~model.regions[name]
    return keep


def _eye_mouth(points5: torch.Tensor) -> torch.Tensor:
    """(B,) distance between the eye midpoint and the mouth midpoint of five points (B, 5, 2):
    the landmark term's unit, so it reads the same at any image size."""
    eyes, mouth = 0.5 * (points5[:, 0] + points5[:, 1]), 0.5 * (points5[:, 3] + points5[:, 4])
    return (eyes - mouth).norm(dim=-1).clamp_min(1.0)


class FaceFitter:
    """Holds a model's truncated bases, landmark vertices and face-region triangles as
    tensors once; :meth:`fit` fits one image."""

    def __init__(self, model: MorphableModel, options: FitOptions = FitOptions(), device: str = "cpu"):
        self.options = o = options
        self.device = torch.device(device)
        ke_model = model.expression.n_components if model.expression is not None else 0
        self.ks = min(o.shape_components, model.shape.n_components)
        self.kc = min(o.color_components, model.color.n_components)
        self.ke = min(o.expression_components, ke_model)
        dec = Decoder(model, self.ks, self.kc, self.ke)
        t = lambda a: torch.as_tensor(np.asarray(a, np.float32), device=self.device)
        self.shape_mean = t(dec.shape_mean + (dec.expr_mean if dec.expr_mean is not None else 0.0))
        self.shape_basis, self.color_mean, self.color_basis = t(dec.shape_basis), t(dec.color_mean), t(dec.color_basis)
        self.expr_basis = t(dec.expr_basis) if dec.expr_basis is not None else t(np.zeros((len(dec.shape_mean), 0)))
        self.triangles = torch.as_tensor(model.triangles, dtype=torch.long, device=self.device)
        keep = region_vertex_mask(model)
        self.face_vertices = keep
        self.ibug68 = model.ibug68
        self.face_triangles = torch.as_tensor(keep[model.triangles].all(1), device=self.device)
        self.five = model.five_point_vertices()
        self.ibug = [[int(model.ibug68[i])] for i in INNER_68] if model.ibug68 is not None and (model.ibug68[list(INNER_68)] >= 0).all() else None
        cal = model.metadata.get("landmark_calibration")
        self.calibration = LandmarkCalibration.from_dict(cal) if cal else None
        self.camera = Camera(o.size, o.size)

    # ------------------------------------------------------------------ model pieces

    def _tensor(self, a) -> torch.Tensor:
        """A batch of one on the fitter's device."""
        return torch.as_tensor(np.asarray(a, np.float32), device=self.device)[None]

    def _zeros(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Shape and expression coefficients of the mean face."""
        return torch.zeros(1, self.ks, device=self.device), torch.zeros(1, self.ke, device=self.device)

    def vertices(self, alpha: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        flat = self.shape_mean + alpha @ self.shape_basis.T + eps @ self.expr_basis.T
        return flat.reshape(alpha.shape[0], -1, 3)

    def albedo(self, beta: torch.Tensor) -> torch.Tensor:
        return (self.color_mean + beta @ self.color_basis.T).clamp(0.0, 1.0).reshape(beta.shape[0], -1, 3)

    def _group_points(self, verts: torch.Tensor, groups) -> torch.Tensor:
        idx, w = group_weights(groups)
        it = torch.as_tensor(idx, device=verts.device)
        return (verts[:, it] * torch.as_tensor(w, dtype=verts.dtype, device=verts.device)[None, :, :, None]).sum(2)

    def project(self, verts: torch.Tensor, pose: Pose, groups, camera: Camera) -> torch.Tensor:
        """Screen points (B, L, 2) of vertex groups."""
        return camera.project(pose.transform(self._group_points(verts, groups)))[..., :2]

    def five_points(self, verts: torch.Tensor, pose: Pose, camera: Camera) -> torch.Tensor:
        """The model's five points as MTCNN would place them (calibrated when the model is)."""
        pts = self.project(verts, pose, self.five, camera)
        if self.calibration is None:
            return pts
        off = self.calibration.offsets(pose.yaw.detach().cpu().double().numpy())
        return shift_points(pts, torch.as_tensor(off, dtype=pts.dtype, device=pts.device))

    # ------------------------------------------------------------------ the fit

    def _landmark_loss(self, verts, pose, lm5, lm68, camera) -> torch.Tensor:
        """(B,) mean squared landmark distance in units of the eye-to-mouth distance."""
        unit = _eye_mouth(lm5)
        loss = ((self.five_points(verts, pose, camera) - lm5) ** 2).sum(-1).mean(-1) / unit**2
        if lm68 is not None and self.ibug is not None:
            d = ((self.project(verts, pose, self.ibug, camera) - lm68) ** 2).sum(-1).mean(-1) / unit**2
            loss = 0.5 * (loss + d)
        return loss

    def _initial_translation(self, lm5: np.ndarray, yaw: np.ndarray) -> np.ndarray:
        """(B, 3): the mean face at each yaw start, as far away as its eye-to-mouth distance
        needs and centred on the detected points."""
        cam, b = self.camera, len(yaw)
        verts = self.vertices(*self._zeros())
        pts = self._group_points(verts, self.five)[0].detach().cpu().double().numpy()
        mm = np.linalg.norm(0.5 * (pts[0] + pts[1]) - 0.5 * (pts[3] + pts[4]))
        px = float(_eye_mouth(torch.as_tensor(lm5[None]))[0])
        depth = cam.focal_px * mm / px
        rot = Pose.create(b, yaw=yaw).rotation()
        centroid = np.einsum("bij,j->bi", rot, pts.mean(0))
        u, v = lm5.mean(0)
        return cam.unproject_center(float(u), float(v), depth)[None] - centroid

    def fit(self, image: np.ndarray, lm5: np.ndarray, lm68: np.ndarray | None = None) -> FaceFit:
        """Fit one (size, size, 3) uint8 RGB image with its five points (5, 2) (MTCNN order,
        pixels of the image) and optionally its 68 iBUG points (68, 2)."""
        o, dev = self.options, self.device
        if image.shape != (o.size, o.size, 3):
            raise ConfigError(f"fit image has shape {image.shape}; expected ({o.size}, {o.size}, 3)")
        target = torch.as_tensor(image.astype(np.float32) / 255.0, device=dev)[None]
        p5 = torch.as_tensor(np.asarray(lm5, np.float32), device=dev)[None]
        p68 = None
        if lm68 is not None and self.ibug is not None:
            p68 = torch.as_tensor(np.asarray(lm68, np.float32)[list(INNER_68)], device=dev)[None]
        # 1. rigid, one batch row per yaw start; keep the best
        yaws = np.asarray(o.yaw_starts, np.float64)
        b = len(yaws)
        angles = torch.tensor(np.stack([yaws, np.zeros(b), np.zeros(b)], 1), dtype=torch.float32, device=dev)
        # translation in cm: a scale near that of the angles (degrees) conditions L-BFGS
        trans = torch.as_tensor(self._initial_translation(np.asarray(lm5, np.float64), yaws) / 10, dtype=torch.float32,
                                device=dev)
        alpha, beta = torch.zeros(b, self.ks, device=dev), torch.zeros(1, self.kc, device=dev)
        eps = torch.zeros(b, self.ke, device=dev)
        angles.requires_grad_(True)
        trans.requires_grad_(True)
        mean_verts = self.vertices(alpha, eps)

        def rigid_loss() -> torch.Tensor:
            pose = Pose(angles[:, 0], angles[:, 1], angles[:, 2], trans * 10, torch.ones(b, device=dev))
            return self._landmark_loss(mean_verts, pose, p5.expand(b, -1, -1),
                                       None if p68 is None else p68.expand(b, -1, -1), self.camera)

        _lbfgs([angles, trans], o.rigid_steps, lambda: rigid_loss().sum())
        with torch.no_grad():
            best = int(torch.argmin(rigid_loss()))
        angles = angles.detach()[best:best + 1].clone().requires_grad_(True)
        trans = trans.detach()[best:best + 1].clone().requires_grad_(True)
        alpha = alpha[:1].clone().requires_grad_(True)
        eps = eps[:1].clone().requires_grad_(True)
        beta.requires_grad_(True)

        def pose_now() -> Pose:
            return Pose(angles[:, 0], angles[:, 1], angles[:, 2], trans * 10, torch.ones(1, device=dev))

        def prior() -> torch.Tensor:
            return (o.shape_prior * (alpha**2).sum() + o.expression_prior * (eps**2).sum()
                    + o.color_prior * (beta**2).sum())

        # 2. landmarks with shape and expression
        def landmark_stage() -> torch.Tensor:
            return o.landmark_weight * self._landmark_loss(self.vertices(alpha, eps), pose_now(), p5, p68,
                                                           self.camera).sum() + prior()

        _lbfgs([angles, trans, alpha, eps], o.landmark_steps, landmark_stage)
        # 3. photometric, half then full resolution
        sh = torch.zeros(1, 9, 3, device=dev)
        with torch.no_grad():
            sh[0, 0] = self._ambient(target, alpha, beta, eps, pose_now())
        sh.requires_grad_(True)
        inliers = None
        for stage, steps in (("coarse", o.coarse_steps), ("fine", o.fine_steps)):
            k = 2 if stage == "coarse" else 1
            cam = Camera(o.size // k, o.size // k)
            tgt = target if k == 1 else torch.nn.functional.avg_pool2d(target.permute(0, 3, 1, 2), k).permute(0, 2, 3, 1)
            if stage == "fine" and steps:
                with torch.no_grad():
                    err, mask = self._photo_error(tgt, cam, alpha, beta, eps, sh, pose_now())
                    inliers = self._inliers(err, mask)

            def photo_stage(cam=cam, tgt=tgt, k=k, inliers=inliers) -> torch.Tensor:
                err, mask = self._photo_error(tgt, cam, alpha, beta, eps, sh, pose_now())
                w = mask if inliers is None else mask & inliers
                photo = (err * w).sum() / w.sum().clamp_min(1)
                lm = self._landmark_loss(self.vertices(alpha, eps), pose_now(), p5 / k,
                                         None if p68 is None else p68 / k, cam).sum()
                return photo + o.landmark_weight * 0.1 * lm + prior() + o.light_prior * (sh[:, 1:] ** 2).sum()

            _adam([(angles, 1.0), (trans, 0.2), (alpha, 0.06), (eps, 0.06), (beta, 0.06), (sh, 0.04)], steps,
                  photo_stage)
        return self._result(target, p5, p68, alpha, beta, eps, sh, pose_now(), inliers)

    def _ambient(self, target, alpha, beta, eps, pose) -> torch.Tensor:
        """SH band 0 that makes the mean albedo, lit evenly, as bright as the face pixels
        (irradiance of ambient light L0 is L0 * sqrt(pi) / 2)."""
        out = render_torch(self.vertices(alpha, eps), self.albedo(beta), torch.zeros(1, 9, 3, device=self.device), pose,
                           self.triangles, self.camera, outputs=())
        fid = out["face_id"]
        mask = self.face_triangles[fid.clamp_min(0)] & (fid >= 0)
        face = target[mask] if mask.any() else target.reshape(-1, 3)
        ratio = face.mean(0) / self.albedo(beta).mean((0, 1)).clamp_min(1e-3)
        return ratio.clamp(0.1, 3.0) / (np.sqrt(np.pi) / 2)

    def _photo_error(self, target, camera, alpha, beta, eps, sh, pose) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pixel colour distance (1, H, W) and the face-region mask of the render."""
        out = render_torch(self.vertices(alpha, eps), self.albedo(beta), sh, pose, self.triangles, camera,
                           backgrounds=target)
        fid = out["face_id"]
        mask = self.face_triangles[fid.clamp_min(0)] & (fid >= 0)
        err = ((out["rgb"] - target) ** 2).sum(-1).add(1e-8).sqrt()
        return err, mask

    def _inliers(self, err: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Face pixels whose error is within ``outlier_factor`` times the median (and at
        least 0.1): the rest is taken for occlusion or hair."""
        if not mask.any():
            return mask
        limit = max(float(err[mask].median()) * self.options.outlier_factor, 0.1)
        return err <= limit

    def _result(self, target, p5, p68, alpha, beta, eps, sh, pose, inliers) -> FaceFit:
        with torch.no_grad():
            err, mask = self._photo_error(target, self.camera, alpha, beta, eps, sh, pose)
            kept = mask if inliers is None else mask & inliers
            verts = self.vertices(alpha, eps)
            d = (self.five_points(verts, pose, self.camera) - p5).norm(dim=-1)
            if p68 is not None:
                d = torch.cat([d, (self.project(verts, pose, self.ibug, self.camera) - p68).norm(dim=-1)], 1)
            px = float(d.mean())
            pn = pose.numpy()
        params = ImageParams(0, 0, alpha.detach()[0].cpu().numpy(), beta.detach()[0].cpu().numpy(),
                             eps.detach()[0].cpu().numpy(), float(pn.yaw[0]), float(pn.pitch[0]), float(pn.roll[0]),
                             np.zeros(2, np.float32), 1.0, sh.detach()[0].double().cpu().numpy(), 0,
                             camera_translation=pn.translation[0])
        return FaceFit(
            params, self.options.size, px, px / float(_eye_mouth(p5)[0]),
            float(err[mask].mean()) if mask.any() else float("nan"),
            float(kept.sum() / mask.sum().clamp_min(1)),
        )

    def render(self, fit: FaceFit, background: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The fitted face as uint8 RGB over ``background`` (black when None) at the fit
        size, and the pixels it covers (for overlays)."""
        t = self._tensor
        bg = None if background is None else t(background.astype(np.float32) / 255.0)
        with torch.no_grad():
            p = fit.params
            out = render_torch(self.vertices(t(p.shape), t(p.expression)), self.albedo(t(p.color)), t(p.sh),
                               fit.pose(), self.triangles, self.camera, backgrounds=bg)
        mask = (out["face_id"][0] >= 0).cpu().numpy()
        rgb = (out["rgb"][0].clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
        return rgb, mask

    def fitted_points(self, fit: FaceFit) -> np.ndarray:
        """The fitted face's five points (5, 2) at the fit size, as MTCNN would place them:
        what the landmark term compared with the photo's (for overlays)."""
        t = self._tensor
        with torch.no_grad():
            p = fit.params
            pose = fit.pose().torch(self.device, torch.float32)
            pts = self.five_points(self.vertices(t(p.shape), t(p.expression)), pose, self.camera)
        return pts[0].cpu().numpy().astype(np.float64)

    def landmarks68(self, shape: np.ndarray, expression: np.ndarray, pose: Pose) -> np.ndarray:
        """The model's 68 iBUG points (68, 2) projected at the fit size: a perfect detector's
        answer for a render of known parameters (tests and benchmarks)."""
        t = self._tensor
        if self.ibug is None:
            raise ConfigError("this model has no 68-point iBUG layout")
        ibug = [[int(v)] for v in self.ibug68]
        with torch.no_grad():
            pts = self.project(self.vertices(t(shape), t(expression)), pose.torch(self.device), ibug, self.camera)
        return pts[0].cpu().numpy()

    def compare(self, fit: FaceFit, shape: np.ndarray, expression: np.ndarray, sh: np.ndarray, pose: Pose) -> dict:
        """How far a fit is from known parameters (a render's): the largest angle error in
        degrees; the light as the RMS difference of its shading (SH irradiance on the true
        posed mesh, face region) relative to the true shading's RMS, as fitted and after the
        best per-channel gain (albedo times light is all one image shows, so a brighter
        albedo under a dimmer light is the same picture); the mean vertex distance in mm
        over the face region, and that of the mean face for scale."""
        t = self._tensor
        with torch.no_grad():
            true_verts = self.vertices(t(shape), t(expression))
            fp = fit.params
            fit_verts = self.vertices(t(fp.shape), t(fp.expression))
            mean_verts = self.vertices(*self._zeros())
            nrm = vertex_normals_torch(true_verts, self.triangles) @ pose.torch(self.device).rotation().transpose(1, 2)
            st, sf = (irradiance_torch(nrm, t(x))[0].cpu().numpy()[self.face_vertices] for x in (sh, fp.sh))
        gain = (sf * st).sum(0) / np.maximum((sf * sf).sum(0), 1e-12)
        rms = lambda d: float(np.sqrt((d**2).mean() / (st**2).mean()))
        dist = lambda v: float((v - true_verts)[0].norm(dim=-1).cpu().numpy()[self.face_vertices].mean())
        p = pose.numpy()
        return {"pose_deg": float(max(abs(fp.yaw - p.yaw[0]), abs(fp.pitch - p.pitch[0]), abs(fp.roll - p.roll[0]))),
                "light_rms": rms(sf - st), "light_rms_gain_free": rms(sf * gain - st),
                "vertex_mm": dist(fit_verts), "vertex_mm_mean_face": dist(mean_verts)}


def render_known(renderer: SceneRenderer, params: ImageParams) -> tuple[np.ndarray, np.ndarray, Pose]:
    """A render of known parameters for fitting tests: its RGB image, its five points (as
    the dataset records them, MTCNN's convention) and the pose it was drawn with (framed)."""
    plan = renderer.plan([params])
    arrays = renderer.render_plan_arrays(plan)
    return arrays["rgb"][0], arrays["landmarks5"][0], plan.pose()


def _lbfgs(params: list[torch.Tensor], iterations: int, loss_fn) -> None:
    """L-BFGS with a strong-Wolfe line search: the landmark stages are small smooth least
    squares problems, which it solves in tens of iterations where Adam needs hundreds."""
    if iterations <= 0:
        return
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=iterations, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-10, tolerance_change=1e-12)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    opt.step(closure)


def _adam(groups: list[tuple[torch.Tensor, float]], steps: int, loss_fn) -> None:
    """Adam over (tensor, learning rate) groups for ``steps`` steps, the rates decaying on a
    cosine to 10 % (large moves first, then settling)."""
    if steps <= 0:
        return
    opt = torch.optim.Adam([{"params": [p], "lr": lr} for p, lr in groups], betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * min(i, steps) / steps)))
    for _ in range(steps):
        opt.zero_grad()
        loss_fn().backward()
        opt.step()
        sched.step()
