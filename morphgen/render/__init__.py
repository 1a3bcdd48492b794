"""Rendering: cameras, rasterizers, interpolation, shading, backgrounds.

Modules (nvdiffrast / PyTorch3D style split; import from the modules themselves):

* ``camera``: :class:`~.camera.Camera` (Basel pinhole defaults: 50 mm lens, 15 mm
  sensor, face 1 m away), :class:`~.camera.Pose` (yaw/pitch/roll in degrees applied
  yaw first, translation in mm, scale), :func:`~.camera.frame_translation` (centre and
  scale the face by its five alignment points, pose-invariantly).
* ``rasterize``: :func:`~.rasterize.rasterize` -> face ids, barycentrics, depth, with
  ``numba`` (CPU), ``torch`` (batched, CUDA or CPU) and optional ``pytorch3d`` backends
  that agree pixel for pixel (top-left fill rule, pixel centres at +0.5).
* ``interpolate``: differentiable perspective-correct attribute interpolation
  (barycentrics recomputed in torch from the face ids).
* ``shading``: vertex normals and the Basel colour transform (the SH basis and
  Lambertian irradiance are :mod:`morphgen.spherical_harmonics`).
* ``backgrounds``: image folders (DTD layout), procedural textures, plain colours.
* ``renderer``: :class:`~.renderer.RenderSettings`, :func:`~.renderer.render_batch`
  (numpy in/out; fused numba CPU path or torch path) and the differentiable
  :func:`~.renderer.render_torch`; extra outputs (depth, normals, albedo, illumination,
  mask, correspondence, regions, landmarks with visibility).
* ``fit``: :func:`~.fit.fit_light_and_pose`, analysis by synthesis with Adam.
* ``synthetic``: face-like test meshes (ellipsoid head, BFM-face12-sized face mask).
"""
