"""Lay a benchmark's synthetic twins out like the benchmark, so that its own evaluation
command scores them: each twin (rendered by ``morphgen render --from-params FIT``) is
copied as JPEG to the path its photo had under the fitted folder, e.g. CFP's
``Data/Images/<id>/<view>/<nn>.jpg``; the protocol files are the benchmark's own.

    morphgen fit CFP/Data/Images --ids 50 --out fit
    morphgen render --from-params fit --out twins
    python benchmarks/twin_layout.py --fit fit --twins twins --out cfp_twins/Data/Images \
        --protocol CFP/Protocol --protocol-out cfp_twins/Protocol
    morphgen eval cfp --model RUN --cfp-dir cfp_twins --out eval_twins

With ``--protocol``, the pair files (CFP's ``Split/<protocol>/<fold>/{same,diff}.txt``) are
copied keeping only the pairs whose two images have a twin, and the folds left with none
are dropped: scoring the photos with the same copied protocol (``--protocol-out`` of a
photo folder) compares photos and twins on exactly the same pairs, also when only part
of a benchmark was fitted. Twins are synthetic, but derived from real photos: write them
outside the repository.
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
    ap.add_argument("--protocol", type=Path, help="the benchmark's CFP-style Protocol folder to copy")
    ap.add_argument("--protocol-out", type=Path, action="append", default=[],
                    help="where to write the copied protocol (repeatable: the twins' and the photos' folder)")
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
    if args.protocol is not None:
        for dst in args.protocol_out:
            kept, total = copy_protocol(args.protocol, dst, args.out)
            print(f"protocol in {dst}: {kept} of {total} pairs have both twins")


def copy_protocol(src: Path, dst: Path, twins_root: Path) -> tuple[int, int]:
    """Copy a CFP-style protocol, keeping the pairs whose two images have a twin under
    `twins_root`; returns (pairs kept, pairs in all)."""
    import os.path
    import shutil

    dst.mkdir(parents=True, exist_ok=True)
    lists = {}
    for name in ("Pair_list_F.txt", "Pair_list_P.txt"):
        shutil.copy(src / name, dst / name)
        for line in (src / name).read_text().splitlines():
            if line.strip():
                k, rel = line.split(None, 1)
                # pair-list paths are relative to Protocol/, whose sibling the twins' root is under
                path = Path(os.path.normpath(twins_root.parent.parent / "Protocol" / rel.strip()))
                lists[(name[-5], int(k))] = path.is_file()
    kept = total = 0
    for fold_dir in sorted(p for p in (src / "Split").glob("*/*") if p.is_dir()):
        second = "P" if fold_dir.parent.name == "FP" else "F"
        out = {}
        for kind in ("same", "diff"):
            lines = [ln for ln in (fold_dir / f"{kind}.txt").read_text().splitlines() if ln.strip()]
            total += len(lines)
            out[kind] = [ln for ln in lines if lists.get(("F", int(ln.split(",")[0])))
                         and lists.get((second, int(ln.split(",")[1])))]
            kept += len(out[kind])
        if out["same"] or out["diff"]:
            target = dst / "Split" / fold_dir.parent.name / fold_dir.name
            target.mkdir(parents=True, exist_ok=True)
            for kind, lines in out.items():
                (target / f"{kind}.txt").write_text("".join(f"{ln}\n" for ln in lines))
    return kept, total


if __name__ == "__main__":
    main()
