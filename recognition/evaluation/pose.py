"""Verification across pose: any folder of identities with a yaw per image.

Sources of the yaw (``load_pose_data``):

- **Multi-PIE** (Gross et al. 2010): ``ROOT/session0S/multiview/SSS/RR/CC_C/SSS_SS_RR_CCC_II.png``
  (subject, session, recording, camera, illumination 00-19). The 13 eye-level cameras map
  to yaw in 15 degree steps (``MULTIPIE_CAMERA_YAW``): 11_0 = -90, 12_0 = -75, 09_0 = -60,
  08_0 = -45, 13_0 = -30, 14_0 = -15, 05_1 = 0, 05_0 = +15, 04_1 = +30, 19_0 = +45,
  20_0 = +60, 01_0 = +75, 24_0 = +90. The sign follows the common convention of public
  Multi-PIE tools (e.g. Idiap's facereclib P-protocol lists 24_0 as a profile, 05_1 as
  frontal; pose-synthesis code maps 24_0 to +90 and 11_0 to -90); the sign only mirrors
  the plot. 08_1 and 19_1 are elevated cameras (about -30 and +45 yaw, seen from above):
  they are skipped and counted, as their pose is not a pure yaw. Identity = subject;
  gallery and probe of a pair share the illumination number (the same flash), so a
  pair differs in pose (and session / expression), not in light.
- **morphgen render** (its params files, :mod:`morphgen.layout`): the yaw of each row; in
  controlled mode (``--grid ... lights=L``) gallery and probe share the light condition
  (sample n's light is the grid's n-th point).
- **any folder** with ``--poses FILE``: CSV lines ``path,yaw`` (path relative to the
  folder; identity = first path component), optional header.

Protocol: LFW-style 10 folds of up to 300 genuine + 300 impostor pairs (identity-disjoint
folds, seeded; fewer when the data is small), each pair = a **frontal gallery image**
(yaw bin 0, i.e. |yaw| < step / 2) and a **probe** whose yaw bin is the pair's bin, with
as many genuine as impostor pairs per bin. Accuracy per yaw is therefore "how well a face
at this yaw is matched against a frontal face", each pair judged with its fold's
cross-validated threshold; the overall accuracy is the usual 10-fold mean ± std. The
pair list is written to ``pairs.txt`` (``--pairs`` reads it back for an exact rerun).
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from morphgen.errors import ConfigError, DataError
from morphgen.layout import PARAMS_DIR, params_files, params_rows, read_manifest

from ..data import ImageSet, detect_format, read_morphgen
from .common import (PairSet, embed_imageset, folder_imageset, gallery_probe_pairs, load_eval_model, model_info,
                     pair_protocol_result, prepare_out, read_pairs_file, score_pairs, write_pairs_file)
from . import metrics
from .protocols import Protocol, check_input
from .report import fmt, md_table, plot_bins, plot_roc, pm, tar_text, write_json, write_markdown, write_roc_csv

MULTIPIE_CAMERA_YAW = {"11_0": -90, "12_0": -75, "09_0": -60, "08_0": -45, "13_0": -30, "14_0": -15, "05_1": 0,
                       "05_0": 15, "04_1": 30, "19_0": 45, "20_0": 60, "01_0": 75, "24_0": 90}
MULTIPIE_ELEVATED = {"08_1": -30, "19_1": 45}
_MULTIPIE = re.compile(r"(?:^|/)session0([1-4])/multiview/(\d{3})/(\d{2})/(\d{2})_(\d)/"
                       r"(\d{3})_(\d{2})_(\d{2})_(\d{3})_(\d{2})\.png$", re.I)


@dataclass
class PoseData:
    """Images with identity, yaw and the link condition (shared by gallery and probe)."""
    iset: ImageSet
    yaw: np.ndarray
    link: list
    kind: str
    skipped: dict = field(default_factory=dict)
    light: np.ndarray | None = None      # morphgen controlled renders: light index per image

    def __len__(self) -> int:
        return len(self.iset)


def multipie_camera(folder: str) -> tuple[float | None, bool]:
    """(yaw, elevated) of a camera folder name like '05_1'; (None, False) if unknown."""
    if folder in MULTIPIE_CAMERA_YAW:
        return float(MULTIPIE_CAMERA_YAW[folder]), False
    if folder in MULTIPIE_ELEVATED:
        return float(MULTIPIE_ELEVATED[folder]), True
    return None, False


def read_multipie(root: Path) -> PoseData:
    files, ids, yaws, link = [], [], [], []
    skipped = {"elevated_camera": 0, "unknown_camera": 0, "not_multipie_names": 0, "name_mismatch": 0}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            rel = (Path(dirpath) / name).relative_to(root).as_posix()
            m = _MULTIPIE.search(rel)
            if not m:
                if name.lower().endswith(".png"):
                    skipped["not_multipie_names"] += 1
                continue
            sess, subj, rec, c1, c2, fsubj, fsess, frec, fcam, illum = m.groups()
            if (fsubj, fsess, frec, fcam) != (subj, f"0{sess}", rec, c1 + c2):
                skipped["name_mismatch"] += 1
                continue
            yaw, elevated = multipie_camera(f"{c1}_{c2}")
            if yaw is None or elevated:
                skipped["elevated_camera" if elevated else "unknown_camera"] += 1
                continue
            files.append(rel), ids.append(subj), yaws.append(yaw), link.append(int(illum))
    return PoseData(folder_imageset(root, files, ids), np.array(yaws, np.float64), link, "multipie",
                    {k: v for k, v in skipped.items() if v})


def read_morphgen_poses(root: Path) -> PoseData:
    if not params_files(root):
        raise DataError(f"{root} holds no params files ({PARAMS_DIR}/): the yaw of each image is unknown; "
                        "render the benchmark again")
    iset = read_morphgen(root)
    # read_morphgen vetted every row
    rows = {str(r["image"]): r for _, r in params_rows(root, columns=("image", "yaw", "sample"))}
    points = None
    try:
        grid = read_manifest(root)["config"]["scene"].get("grid")
        if grid:
            from morphgen.sampling import ControlledGrid
            points = ControlledGrid.parse(grid).points()
    except (OSError, ValueError, KeyError, TypeError):
        points = None
    yaw = np.array([float(rows[f].get("yaw", np.nan)) for f in iset.files], np.float64)
    light = None
    if points is not None:
        light = np.array([points[int(rows[f]["sample"])]["light"] if int(rows[f]["sample"]) < len(points) else -1
                          for f in iset.files], np.int64)
    link = light.tolist() if light is not None else [0] * len(iset)
    return PoseData(iset, yaw, link, "morphgen", dict(iset.report), light)


def read_pose_csv(root: Path, poses: Path) -> PoseData:
    if not Path(poses).is_file():
        raise DataError(f"--poses {poses} does not exist: give a CSV of 'path,yaw' lines")
    files, yaws, missing = [], [], 0
    try:  # (a byte-order mark is not part of the first path)
        text = Path(poses).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise DataError(f"cannot read --poses {poses}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise DataError(f"--poses {poses} is not UTF-8 text: save the 'path,yaw' CSV as UTF-8") from None
    for ln, cells in enumerate(csv.reader(io.StringIO(text, newline="")), 1):
        if not cells or not cells[0].strip() or cells[0].startswith("#"):
            continue
        try:
            if len(cells) < 2:
                raise ValueError
            yaw = float(cells[1])
        except ValueError:
            if ln == 1:  # a header
                continue
            raise DataError(f"{poses}:{ln}: expected 'path,yaw', found {','.join(cells)!r}") from None
        if not -180.0 <= yaw <= 180.0:  # (NaN too: it was dropped silently; 3000 became a yaw bin of its own)
            raise DataError(f"{poses}:{ln}: yaw {cells[1].strip()!r} is not an angle in degrees between -180 and 180")
        rel = cells[0].strip()
        if not (root / rel).is_file():
            missing += 1
            continue
        files.append(rel), yaws.append(yaw)
    ids = [f.split("/")[0] if "/" in f else "" for f in files]
    if any(i == "" for i in ids):
        raise DataError(f"{poses}: paths must be '<identity>/<file>' relative to the image folder")
    return PoseData(folder_imageset(root, files, ids), np.array(yaws, np.float64), [0] * len(files), "csv",
                    {"missing_files": missing} if missing else {})


def load_pose_data(images: str | Path, poses: str | Path | None = None) -> PoseData:
    root = Path(images)
    if not root.is_dir():
        raise DataError(f"--images {root} does not exist: pass a Multi-PIE folder, a morphgen render or a folder with --poses")
    if poses:
        data = read_pose_csv(root, Path(poses))
    elif detect_format(root) == "morphgen":
        data = read_morphgen_poses(root)
    elif any(root.glob("session0*/multiview")) or root.name == "multiview" or _MULTIPIE.search(f"/{root.as_posix()}/"):
        data = read_multipie(root)
    else:
        raise DataError(f"cannot tell the yaw of the images in {root}: give a Multi-PIE tree "
                        "(session0S/multiview/...), a morphgen render (with its params/ folder), or --poses FILE with 'path,yaw' lines")
    if len(data) == 0:
        raise DataError(f"no usable images with a yaw in {root} (read as {data.kind}; skipped {data.skipped})")
    return data


def yaw_bins(yaw: np.ndarray, step: float) -> np.ndarray:
    if not (np.isfinite(step) and 0 < step <= 180):  # NaN and infinity passed and made no bins
        raise ConfigError(f"--yaw-step must be a number of degrees in (0, 180], got {step:g}")
    return np.round(np.asarray(yaw, np.float64) / step) * step + 0.0  # + 0.0: no -0.0


def evaluate_pose(run: str | Path, images: str | Path, out: str | Path, poses: str | Path | None = None,
                  pairs_file: str | Path | None = None, folds: int = 10, per_fold: int = 300, seed: int = 0,
                  yaw_step: float = 15.0, align: bool = True, flip: bool = False, batch_size: int = 64,
                  cache_dir: str | Path | None = None, progress: bool = False, workers: int | None = None) -> dict:
    """Accuracy overall and per probe yaw against a frontal gallery; writes result.json,
    summary.md, accuracy_vs_yaw.png, pairs.txt, scores.csv and roc.csv into `out`."""
    yaw_bins(np.zeros(0), yaw_step)  # the step checked before any work
    model, meta = load_eval_model(run)
    data = load_pose_data(images, poses)
    out = prepare_out(out)
    bins = yaw_bins(data.yaw, yaw_step)
    files = data.iset.files
    if pairs_file:
        pairs, missing_lines, _ = read_pairs_file(Path(pairs_file), files)
        _check_pairs_fit(pairs, missing_lines, bins, pairs_file, images)
    else:
        finite = np.isfinite(bins)
        pairs = gallery_probe_pairs(data.iset.identities, finite & (bins == 0),
                                    [float(b) if f else None for b, f in zip(bins, finite)], data.link,
                                    folds, per_fold, seed)
        missing_lines = []
        write_pairs_file(out / "pairs.txt", pairs, files,
                         {"protocol": "pose", "gallery": "yaw bin 0", "probe_bin": "yaw", "yaw_step": yaw_step,
                          "link": {"multipie": "illumination", "morphgen": "light"}.get(data.kind, "none"),
                          "folds": pairs.n_folds, "per_fold": per_fold, "seed": seed,
                          "identity_disjoint": pairs.identity_disjoint, "images": str(images)})
    if len(pairs) == 0:
        raise DataError(f"no gallery/probe pairs can be formed from {images}: need at least 2 identities with a "
                        f"frontal image (|yaw| < {yaw_step / 2:g}) and other images")
    result = evaluate_pairs_on_images(model, meta, data.iset, pairs, align, flip, batch_size,
                                      Path(cache_dir) if cache_dir else out / ".morphgen_cache", progress, workers)
    result.update({"protocol": "pose", "model": model_info(meta, run),
                   "inputs": {"images": str(images), "kind": data.kind, "poses": str(poses) if poses else None,
                              "pairs": str(pairs_file) if pairs_file else str(out / "pairs.txt"), "yaw_step": yaw_step,
                              "align": align, "flip": flip, "folds": pairs.n_folds, "per_fold": per_fold,
                              "seed": seed, "identity_disjoint": pairs.identity_disjoint},
                   "data": {"images": len(data), "identities": len(set(data.iset.identities)),
                            "skipped": data.skipped}, "pairs_file_missing_lines": missing_lines})
    result["by_abs_yaw"] = _abs_bins(result["bins"])
    result["files"] = {"result": str(out / "result.json"), "summary": str(out / "summary.md"),
                       "plot": str(out / "accuracy_vs_yaw.png"), "pairs": result["inputs"]["pairs"],
                       "scores_csv": str(out / "scores.csv"), "roc_csv": str(out / "roc.csv"),
                       "roc_png": str(out / "roc.png")}
    rows = result.pop("_rows")
    _write_scores(out / "scores.csv", rows)
    fpr, tpr, thr = metrics.roc_curve(np.array([r[5] for r in rows]), np.array([bool(r[1]) for r in rows]))
    curve = [{"label": f"all yaws: accuracy {pm(result['accuracy'], 3)}", "fpr": fpr, "tpr": tpr, "thresholds": thr}]
    write_roc_csv(out / "roc.csv", [dict(curve[0], label="all pairs")])
    plot_roc(out / "roc.png", curve, f"{meta['arch']}: verification across pose (frontal gallery)", log_far=False)
    plot_yaw(out / "accuracy_vs_yaw.png", {"all": result["bins"]}, f"{meta['arch']}: accuracy vs probe yaw (frontal gallery)")
    write_json(out / "result.json", result)
    write_markdown(out / "summary.md", "Verification across pose", pose_sections(result))
    return result


def _check_pairs_fit(pairs: PairSet, missing_lines: list[str], bins: np.ndarray, pairs_file, images) -> None:
    """DataError when a reused pairs file was drawn for other images: pairs naming files
    absent here, or probes in another yaw bin (another render with the same file names).
    Scoring the rest would report an accuracy over a few leftover pairs."""
    if missing_lines:
        raise DataError(f"--pairs {pairs_file}: {len(missing_lines)} of {len(pairs) + len(missing_lines)} pairs name "
                        f"images absent from {images} (first: {missing_lines[0]}): it was drawn for other images; "
                        "run without --pairs to draw new ones")
    moved = sum(1 for b, k in zip(pairs.bins, pairs.b) if b != float(bins[k]))
    if moved:
        raise DataError(f"--pairs {pairs_file}: {moved} of {len(pairs)} probes lie in another yaw bin in {images}: it "
                        "was drawn for other images or another --yaw-step; run without --pairs to draw new ones")


def evaluate_pairs_on_images(model, meta, iset: ImageSet, pairs: PairSet, align: bool, flip: bool,
                             batch_size: int, cache_dir: Path, progress: bool, workers: int | None = None) -> dict:
    """Embed the images the pairs use, score them and run the 10-fold / per-bin analysis."""
    used = np.unique(np.r_[pairs.a, pairs.b])
    sub = iset.take(used)
    emb_sub = embed_imageset(model, meta, sub, align=align, flip=flip, cache_dir=cache_dir, batch_size=batch_size,
                             progress=progress, workers=workers)
    remap = np.full(len(iset), -1, np.int64)
    remap[used] = np.arange(len(used))
    local = PairSet(remap[pairs.a], remap[pairs.b], pairs.same, pairs.fold, pairs.bins, pairs.identity_disjoint,
                    pairs.n_folds)
    scores, ok = score_pairs(emb_sub, local)
    if not ok.any():
        raise DataError("no pair could be scored: none of the paired images could be read")
    bins = [b for b, k in zip(pairs.bins, ok) if k]
    res = pair_protocol_result(scores, pairs.same[ok], pairs.fold[ok], bins)
    res["unscored_pairs"] = int((~ok).sum())
    res["images_report"] = emb_sub.report()
    idx = np.nonzero(ok)[0]
    res["_rows"] = [(int(pairs.fold[k]) + 1, int(pairs.same[k]), json.dumps(pairs.bins[k]), iset.files[pairs.a[k]],
                     iset.files[pairs.b[k]], float(s)) for k, s in zip(idx, scores)]
    return res


def _write_scores(path: Path, rows: list) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["fold", "same", "bin", "gallery", "probe", "score"])
        for r in rows:
            w.writerow(list(r[:5]) + [f"{r[5]:.6f}"])


def _abs_bins(bins: dict) -> dict:
    """Per |yaw|: pair-weighted accuracy of the signed bins."""
    acc: dict[float, list] = {}
    for b in bins.values():
        if isinstance(b["bin"], (int, float)):
            k = abs(float(b["bin"]))
            acc.setdefault(k, [0, 0.0])
            acc[k][0] += b["pairs"]
            acc[k][1] += b["accuracy"] * b["pairs"]
    return {f"{k:g}": {"abs_yaw": k, "pairs": n, "accuracy": s / n} for k, (n, s) in sorted(acc.items()) if n}


def plot_yaw(path: Path, series: dict[str, dict], title: str) -> None:
    """Accuracy and AUC per yaw bin, one line per series (e.g. per light). Where no probe
    is frontal (the gallery's yaw) the line breaks there: no figure was measured at 0."""
    acc_s, auc_s = [], []
    for label, bins in series.items():
        items = sorted((float(b["bin"]), b["accuracy"], b["auc"], b["pairs"]) for b in bins.values())
        if items and items[0][0] < 0 < items[-1][0] and all(i[0] != 0 for i in items):
            items = sorted([*items, (0.0, float("nan"), float("nan"), None)])
        x = [i[0] for i in items]
        acc_s.append({"x": x, "y": [i[1] for i in items], "label": label if len(series) > 1 else None,
                      "counts": [i[3] for i in items] if len(series) == 1 else None})
        auc_s.append({"x": x, "y": [i[2] for i in items], "label": label if len(series) > 1 else None})
    plot_bins(path, [{"series": acc_s, "x": None, "y": None, "ylabel": "accuracy",
                      "xlabel": "probe yaw (degrees; gallery frontal; numbers: pairs)"},
                     {"series": auc_s, "x": None, "y": None, "xlabel": "probe yaw (degrees)", "ylabel": "AUC"}], title)


def skipped_text(skipped: dict, lead: str = "") -> str:
    """``lead`` + "skipped: missing files 2, ..." for the nonzero counts, or ""."""
    parts = [f"{k.replace('_', ' ')} {v}" for k, v in skipped.items() if v]
    return f"{lead}skipped: {', '.join(parts)}" if parts else ""


def pose_sections(r: dict) -> list[tuple[str, str]]:
    m, i = r["model"], r["inputs"]
    head = (f"- model: `{m['run']}` ({m['arch']}, {m['input_size']} px, step {m['step']})\n"
            f"- data: `{i['images']}` ({i['kind']}; {r['data']['images']} images, {r['data']['identities']} identities"
            f"{skipped_text(r['data']['skipped'], '; ')})\n"
            f"- pairs: {r['pairs']} scored ({r['genuine']} genuine) in {i['folds']} folds "
            f"({'identity-disjoint' if i['identity_disjoint'] else 'identities shared across folds'}), "
            f"{r['unscored_pairs']} unscored; pairs file `{i['pairs']}`\n"
            f"- gallery: frontal (yaw bin 0); probe yaw bins of {i['yaw_step']:g} degrees\n\n"
            f"**Accuracy {pm(r['accuracy'])}** ({len(r['folds'])}-fold), AUC {fmt(r['auc'])}; {tar_text(r['tar_at_far'])}")
    rows = [[f"{b['bin']:g}", b["pairs"], fmt(b["accuracy"]), fmt(b["auc"])] for b in r["bins"].values()]
    return [("", head), ("Accuracy per probe yaw", md_table(["yaw", "pairs", "accuracy", "AUC"], rows))]


# ----------------------------------------------------------------------------- experiment protocol

def _run(model_run, out, o: dict, ctx) -> dict:
    return evaluate_pose(model_run, o["images"], out, poses=o["poses"], folds=o["folds"], per_fold=o["per_fold"],
                         seed=o["seed"], yaw_step=float(o["yaw_step"]), align=o["align"], flip=o["flip"],
                         batch_size=ctx.batch_size, cache_dir=ctx.cache_dir, progress=ctx.progress, workers=ctx.workers)


def _note(o: dict, label: str, r: dict | None) -> str:
    return f"{label}: accuracy per probe yaw against a frontal gallery (`{o['images']}`); the table gives all yaws."


def _check(o: dict, where: str) -> None:
    check_input(o, where, "poses", lambda: read_pose_csv(Path(o["images"]), Path(o["poses"])), ("images",))


PROTOCOL = Protocol(
    name="pose", summary="accuracy per probe yaw vs a frontal gallery (Multi-PIE, renders, 'path,yaw' CSV)",
    defaults={"images": None, "poses": None, "yaw_step": 15.0, "folds": 10, "per_fold": 300, "seed": 0,
              "align": True, "flip": False},
    run=_run, note=_note, paths=("images", "poses"), required=("images",), check=_check)
