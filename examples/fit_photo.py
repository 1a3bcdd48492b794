"""Fit the morphable model to a face photo with the differentiable renderer: shape, albedo,
expression, light and head pose by gradient descent on the colour difference and on the
five points (MTCNN's, whose convention the renderer's points follow).

--photo: a square crop around one face (MTCNN finds its points). Without it the target is a
render of identity 7 at yaw 25, a stand-in photo whose true pose is printed at the end.

    python examples/fit_photo.py --photo face.png --steps 300
"""
import argparse

import cv2
import torch

import morphgen
from morphgen.image_files import read_image_file

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--photo")
ap.add_argument("--size", type=int, default=64)
ap.add_argument("--steps", type=int, default=200)
args = ap.parse_args()

with morphgen.one_line_errors():  # a bad option: one line, exit 2, as the `morphgen` command's
    scene = morphgen.Scene(size=args.size, antialias=1)
if args.photo:
    from recognition.detect import detect_faces

    image = read_image_file(args.photo)  # None for a missing, damaged or non-image file
    if image is None:
        ap.error(f"--photo {args.photo}: not a readable image")
    photo = cv2.cvtColor(cv2.resize(image, (args.size,) * 2), cv2.COLOR_BGR2RGB)
    found = detect_faces([photo])[0]
    if found is None:
        ap.error(f"--photo {args.photo}: MTCNN finds no face in it at {args.size} px (give a crop around one face)")
    points = found[2]
else:
    truth = scene.params(7, 0, yaw=25)
    render = scene.render(truth)
    photo, points = render["rgb"][0], render["landmarks5"][0]
target, points = torch.tensor(photo / 255.0, dtype=torch.float32)[None], torch.tensor(points, dtype=torch.float32)
start = scene.params(0, 0, yaw=0, pitch=0, roll=0)       # the first guess: its light and framing
pose0 = scene.pose(start)
shape, color, expr = (torch.zeros(len(getattr(start, k)), requires_grad=True) for k in ("shape", "color", "expression"))
sh = torch.tensor(start.sh, requires_grad=True)
angles = torch.zeros(3, requires_grad=True)               # yaw, pitch, roll in degrees
shift = torch.tensor(pose0.translation, dtype=torch.float32, requires_grad=True)   # mm, camera space
opt = torch.optim.Adam([{"params": [shape, color, expr], "lr": 0.05}, {"params": [sh], "lr": 0.02},
                        {"params": [angles], "lr": 1.0}, {"params": [shift], "lr": 1.0}])
for step in range(args.steps):
    vertices, albedo = scene.decode(shape, color, expr)
    pose = morphgen.Pose(angles[0:1], angles[1:2], angles[2:3], shift, pose0.scale)
    out = scene.render_tensors(vertices, albedo, sh, pose, backgrounds=target, outputs=("rgb", "landmarks2d"))
    pixels = (out["rgb"] - target).square().mean()        # composited over the photo: only the face counts
    landmarks = ((out["landmarks5"][0] - points) / args.size).square().mean()
    loss = pixels + 100 * landmarks + 1e-4 * sum(c.square().sum() for c in (shape, color, expr))   # N(0, 1) prior
    opt.zero_grad(), loss.backward(), opt.step()
    if step % max(args.steps // 5, 1) == 0 or step == args.steps - 1:
        print(f"step {step:4d}: pixels {pixels.item():.5f}, five points {args.size * landmarks.sqrt().item():.2f} px, "
              f"yaw {angles[0].item():6.1f}, pitch {angles[1].item():5.1f}, roll {angles[2].item():5.1f}")
if not args.photo:
    print(f"truth:   yaw {truth.yaw:6.1f}, pitch {truth.pitch:5.1f}, roll {truth.roll:5.1f}")
