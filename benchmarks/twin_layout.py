"""Lay a benchmark's synthetic twins out like the benchmark, so that its own evaluation
command scores them: each twin (rendered by ``morphgen render --from-params FIT``) is
copied as JPEG to the path its photo had under the fitted folder, e.g. CFP's
``Data/Images/<id>/<view>/<nn>.jpg``; the protocol files are the benchmark's own.

    morphgen fit CFP/Data/Images --ids 50 --out fit
    morphgen render --from-params fit --out twins
    python benchmarks/twin_layout.py --fit fit --twins twins --out cfp_twins/Data/Images
    cp -r CFP/Protocol cfp_twins/ && morphgen eval cfp --model RUN --cfp-dir cfp_twins --out eval_twins

Twins are synthetic, but they are derived from real photos: write them outside the
repository.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))  # an installed morphgen wins


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fit", type=Path, required=True, help="folder written by `morphgen fit` (its params.jsonl)")
    ap.add_argument("--twins", type=Path, required=True, help="dataset rendered by `render --from-params FIT`")
    ap.add_argument("--out", type=Path, required=True, help="where the fitted folder's photo paths are recreated")
    ap.add_argument("--quality", type=int, default=95, help="JPEG quality")
    args = ap.parse_args()

    import cv2

    from morphgen.layout import image_folder, image_stem

    n = missing = 0
    for line in (args.fit / "params.jsonl").read_text().splitlines():
        rec = json.loads(line)
        src = image_folder(args.twins, rec["identity"]) / f"{image_stem(rec['identity'], rec['sample'])}.png"
        img = cv2.imread(str(src))
        if img is None:
            missing += 1
            continue
        dst = (args.out / rec["fit"]["source"]).with_suffix(".jpg")
        dst.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(dst), img, [cv2.IMWRITE_JPEG_QUALITY, args.quality])
        n += 1
    print(f"laid out {n} twins under {args.out}" + (f"; {missing} records without a twin image" if missing else ""))


if __name__ == "__main__":
    main()
