"""Rendering: cameras, rasterizers, interpolation, shading, backgrounds, photo effects.

Modules (nvdiffrast / PyTorch3D style split; import from the modules themselves):

* ``camera``: :class:`~.camera.Camera` (Basel pinhole defaults: 50 mm lens, 15 mm
  sensor, face 1 m away), :class:`~.camera.Pose` (yaw/pitch/roll in degrees applied
  yaw first, translation in mm, scale), :func:`~.camera.frame_translation` (centre and
  scale the face by its five alignment points, pose-invariantly).
* ``rasterize``: :func:`~.rasterize.rasterize` -> face ids, barycentrics, depth; one
  module per backend behind it, agreeing pixel for pixel (top-left fill rule, pixel
  centres at +0.5): ``raster_numba`` (CPU), ``raster_torch`` (batched, CUDA or CPU),
  ``raster_triton`` with its kernels in ``triton_kernels`` (CUDA), ``raster_pytorch3d``
  (optional); ``raster_common`` holds what they share.
* ``interpolate``: differentiable perspective-correct attribute interpolation
  (barycentrics recomputed in torch from the face ids).
* ``shading``: vertex normals and the Basel colour transform (the SH basis and
  Lambertian irradiance are :mod:`morphgen.spherical_harmonics`).
* ``renderer``: :class:`~.renderer.RenderSettings` and :func:`~.renderer.render_batch`
  (numpy in/out), which runs the fused CPU kernels of ``fused_numba`` or the torch path
  of ``torch_render`` (:func:`~.torch_render.render_torch`, differentiable); ``extras``
  holds the extra outputs both paths make alike (depth, normals, albedo, illumination,
  mask, correspondence, regions, landmarks with visibility).
* ``threads``: one compute thread per library in a render process.
* ``backgrounds``: image folders (DTD layout), procedural textures, plain colours;
  ``scene_backgrounds``: the built-in photo-like scenes (rooms, streets, crowds).
* ``photo``: camera and photo effects applied to finished images (blur, noise, JPEG...).
* ``fit``: :func:`~.fit.fit_light_and_pose`, analysis by synthesis with Adam.
* ``synthetic``: face-like test meshes (ellipsoid head, BFM-face12-sized face mask).
"""

#: The date of the last change that alters rendered pixels by design (README says what
#: changed). A dataset's manifest records it; a resume, or a shard joining a folder, that
#: would add chunks of another revision to chunks already there is refused: one dataset's
#: images would otherwise come from two renderers. 2026-12-08: edge anti-aliasing blends
#: outlines resting flush on another part; illumination outputs in uint16.
RENDER_REVISION = "2026-12-08"
