"""Contact sheets to judge by eye how renders compare with real photos: for each scene
(today's default, camera / photo effects, appearance, both), 8 identities x 8 samples at
224 px, and the same images as the network sees them (aligned to the ArcFace template at
112 px); optionally the same number of real crops (CFP, ORL...) aligned by MTCNN.

    python benchmarks/look_sheet.py --out docs/look
    python benchmarks/look_sheet.py --out /tmp/look --real ../shared/data/cfp/Data/Images

Real face sets are never committed to the project: write sheets holding real crops to a
folder outside the repository (the script refuses a --real sheet inside it).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
SCENES = {
    "default": {},
    "photo": {"photo": "realistic"},
    "appearance": {"appearance": "full"},
    "photo_appearance": {"photo": "realistic", "appearance": "full", "backgrounds": "mixed"},
}


def render_sheet(overrides: dict, ids: int, per_id: int, size: int, seed: int, pose: str):
    from morphgen.options import RENDER_DEFAULTS, scene_from_options
    from morphgen.scene import SceneRenderer
    from recognition.align import align_face

    r = SceneRenderer(scene_from_options(dict(RENDER_DEFAULTS, ids=ids, size=size, seed=seed, pose=pose, **overrides)))
    results = [x for i in range(ids) for x in r.render([r.sampler.image_params(i, n) for n in range(per_id)])]
    full = np.stack([x.rgb for x in results])
    crops = np.stack([align_face(x.rgb, x.landmarks5, 112, "arcface") for x in results])
    return full, crops


def real_crops(folder: Path, n: int, seed: int) -> np.ndarray:
    from recognition.align import align_face
    from recognition.data import load_imageset, make_subset, read_image
    from recognition.landmarks import find_landmarks

    iset = find_landmarks(make_subset(load_imageset(folder, "folder"), n_images=n, seed=seed), None)
    return np.stack([align_face(read_image(iset, i), iset.landmarks[i], 112, "arcface") for i in range(len(iset))])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for the PNGs (created)")
    ap.add_argument("--ids", type=int, default=8, help="identities (rows) per sheet (default 8)")
    ap.add_argument("--per-id", type=int, default=8, help="samples (columns) per identity (default 8)")
    ap.add_argument("--size", type=int, default=224, help="render size of the full sheets (default 224)")
    ap.add_argument("--pose", default="frontal", help="pose preset or YAML (default frontal: yaw +-35)")
    ap.add_argument("--seed", type=int, default=0, help="render seed (default 0)")
    ap.add_argument("--scenes", default=",".join(SCENES), help=f"which scenes (default all: {','.join(SCENES)})")
    ap.add_argument("--real", type=Path, help="a folder of real faces (one sub-folder per identity) to crop alike")
    ap.add_argument("--ext", default="png", choices=("png", "jpg"), help="image format of the sheets (default png)")
    args = ap.parse_args(argv)
    from morphgen.sheet import write_sheet

    if args.real is not None and args.out.resolve().is_relative_to(REPO):
        print("error: real crops are never committed: give an --out folder outside the repository", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.scenes.split(","):
        if name not in SCENES:
            print(f"error: unknown scene {name!r}; scenes: {', '.join(SCENES)}", file=sys.stderr)
            return 2
        full, crops = render_sheet(SCENES[name], args.ids, args.per_id, args.size, args.seed, args.pose)
        write_sheet(args.out / f"{name}.{args.ext}", full, args.per_id)
        write_sheet(args.out / f"{name}_crops112.{args.ext}", crops, args.per_id)
        print(f"wrote {args.out / name}.{args.ext} and {name}_crops112.{args.ext}")
    if args.real is not None:
        crops = real_crops(args.real, args.ids * args.per_id, args.seed)
        write_sheet(args.out / f"real_crops112.{args.ext}", crops, args.per_id)
        print(f"wrote {args.out / 'real_crops112'}.{args.ext} ({len(crops)} real crops from {args.real})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
