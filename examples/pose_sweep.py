"""Render one identity across a yaw sweep and print what the renderer recorded for each
view: the pose, how many of the model's landmarks are visible, and where the five
alignment points fall. With --out, the views side by side in one PNG.

    python examples/pose_sweep.py --identity 7 --step 15 --out sweep.png
"""
import argparse

import cv2
import numpy as np

import morphgen

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--identity", type=int, default=0)
ap.add_argument("--step", type=int, default=15, help="yaw step in degrees (-90..90)")
ap.add_argument("--size", type=int, default=128)
ap.add_argument("--out", help="PNG of the views side by side")
args = ap.parse_args()
if not 1 <= args.step <= 180:
    ap.error(f"--step {args.step}: give a yaw step of 1 to 180 degrees")

# The options and defaults of `morphgen render`; the light, expression and background of
# each view are those `morphgen render` would draw for it, only the angles are set.
# A bad option (--size 8, --identity -1) ends in one line, exit 2, as the `morphgen` command's.
with morphgen.one_line_errors():
    scene = morphgen.Scene(size=args.size, seed=1)
    yaws = range(-90, 91, args.step)
    params = [scene.params(args.identity, n, yaw=yaw, pitch=0, roll=0) for n, yaw in enumerate(yaws)]
views = scene.render(params)

print(f"identity {args.identity}, {len(params)} views of {args.size} px ({len(scene.landmark_names)} landmarks)")
print("   yaw  visible  eyes (x, y), image left and right   nose")
for p, vis, lm5 in zip(params, views["visible"], views["landmarks5"]):
    (ax, ay), (bx, by), (nx, ny) = lm5[:3]   # MTCNN's order: eyes, nose, mouth corners
    print(f"{p.yaw:6.0f}  {int(vis.sum()):3d}/{len(vis)}  ({ax:5.1f}, {ay:5.1f})  ({bx:5.1f}, {by:5.1f})      "
          f"({nx:5.1f}, {ny:5.1f})")
if args.out:
    cv2.imwrite(args.out, cv2.cvtColor(np.concatenate(list(views["rgb"]), axis=1), cv2.COLOR_RGB2BGR))
    print(f"wrote {args.out}")
