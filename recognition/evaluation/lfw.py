"""LFW verification, View 2 protocol.

Layout: ``LFW_DIR/<Name>/<Name>_<NNNN>.jpg`` (numbering from 1, 4 digits). ``pairs.txt``:
a header ``F<TAB>N`` (``10<TAB>300`` for View 2; spaces accepted), then for each of the F
folds N matched lines ``name<TAB>i<TAB>j`` followed by N mismatched lines
``name1<TAB>i<TAB>name2<TAB>j``. A header with one number N (View 1's pairsDevTest.txt /
pairsDevTrain.txt) is read as a single fold of N + N pairs. The label of a line comes from
its number of fields; fold k is lines 2Nk .. 2N(k+1)-1.

Evaluation: every image named by a pair is aligned (MTCNN five points, or a plain resize
with ``align=False``) and embedded (optionally averaging the embedding of the mirrored
crop); a pair's score is the cosine similarity. Accuracy is the 10-fold protocol of
``metrics.kfold_accuracy``; AUC, ROC and TAR at FAR 0.1 / 0.01 / 0.001 are computed on all
evaluated pairs. Pairs whose image is missing (or unreadable) are not scored: they are
listed in the result (line, fold, missing files) and counted, never silently dropped.
Where MTCNN finds no face, the central square of 55 % of the image side (about the face
region of LFW's 250 x 250 images) is used as the crop and the file is listed.

Errors (one-line DataError): a missing folder or pairs file, a malformed header or line
(with its line number), a line count that disagrees with the header, and a pairs file
none of whose people has a folder under ``LFW_DIR``.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from morphgen.errors import DataError

from . import metrics
from .common import check_kinds, embed_imageset, folder_imageset, load_eval_model, model_info, prepare_out
from .protocols import Protocol, check_input
from .report import fmt, md_table, plot_roc, pm, tar_text, threshold_text, write_json, write_markdown, write_roc_csv

FALLBACK_CROP = 0.55
_EXTS = (".jpg", ".jpeg", ".png", ".bmp")  # in this order of preference, in any letter case


@dataclass(frozen=True)
class LFWPair:
    line: int      # 1-based line number in pairs.txt
    fold: int      # 0-based
    same: bool
    name1: str
    index1: int
    name2: str
    index2: int


def lfw_file(name: str, index: int, ext: str = ".jpg") -> str:
    return f"{name}/{name}_{index:04d}{ext}"


def _ints(parts: list[str], path: Path, ln: int, what: str) -> list[int]:
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        raise DataError(f"{path}:{ln}: {what} must be whole numbers, found {' '.join(parts)!r}") from None
    if any(v < 1 for v in vals):
        raise DataError(f"{path}:{ln}: {what} must be >= 1, found {' '.join(parts)!r}")
    return vals


def read_pairs(path: str | Path) -> tuple[int, int, list[LFWPair]]:
    """(folds, pairs per fold and class, pairs) of an LFW pairs file; DataError on a
    malformed file, naming the line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"pairs file {path} does not exist: pass LFW's pairs.txt with --pairs")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read pairs file {path}: {exc}") from None
    body = [(ln, line.split()) for ln, line in enumerate(lines, 1) if line.strip()]
    if not body:
        raise DataError(f"pairs file {path} is empty: expected a header like '10<TAB>300' and pair lines")
    ln0, head = body[0]
    if len(head) not in (1, 2):
        raise DataError(f"{path}:{ln0}: expected a header 'folds<TAB>pairs-per-fold' like '10<TAB>300', "
                        f"found {' '.join(head)!r}")
    nums = _ints(head, path, ln0, "the header's numbers")
    n_folds, per = (1, nums[0]) if len(nums) == 1 else (nums[0], nums[1])
    rows = body[1:]
    if len(rows) != 2 * n_folds * per:
        raise DataError(f"{path}: the header promises {n_folds} fold(s) x {2 * per} pairs = {2 * n_folds * per} "
                        f"lines but {len(rows)} pair lines follow: is the file truncated or its header wrong?")
    pairs = []
    for k, (ln, parts) in enumerate(rows):
        fold = k // (2 * per)
        if len(parts) == 3:
            i, j = _ints(parts[1:], path, ln, "image numbers")
            pairs.append(LFWPair(ln, fold, True, parts[0], i, parts[0], j))
        elif len(parts) == 4:
            i, j = _ints([parts[1], parts[3]], path, ln, "image numbers")
            pairs.append(LFWPair(ln, fold, False, parts[0], i, parts[2], j))
        else:
            raise DataError(f"{path}:{ln}: expected 'name i j' (matched) or 'name1 i name2 j' (mismatched), "
                            f"found {len(parts)} fields: {' '.join(parts)!r}")
    check_kinds(np.array([p.same for p in pairs]), f"pairs file {path}")
    return n_folds, per, pairs


def _resolve(lfw_dir: Path, name: str, index: int, listings: dict[str, dict[str, str]]) -> str | None:
    """The file of image `index` of `name` (``<name>/<name>_NNNN`` with an image extension,
    .jpg first, in any letter case: .PNG and .JPEG were reported missing), or None.
    `listings` keeps each person's folder as read once (lower-case name -> file name)."""
    if name not in listings:
        try:
            files = sorted(p.name for p in (lfw_dir / name).iterdir() if p.is_file())
        except OSError:  # no such folder (counted as missing images), or not readable
            files = []
        listings[name] = {}
        for f in files:
            listings[name].setdefault(f.lower(), f)
    stem = lfw_file(name, index, "").split("/")[-1].lower()
    for ext in _EXTS:
        found = listings[name].get(stem + ext)
        if found is not None:
            return f"{name}/{found}"
    return None


def evaluate_lfw(run: str | Path, lfw_dir: str | Path, pairs_path: str | Path, out: str | Path,
                 flip: bool = False, align: bool = True, batch_size: int = 64, cache_dir: str | Path | None = None,
                 progress: bool = False, workers: int | None = None) -> dict:
    """Run the LFW View 2 protocol; writes result.json, summary.md, roc.png, roc.csv and
    scores.csv into `out` and returns the result dict."""
    lfw_dir = Path(lfw_dir)
    if not lfw_dir.is_dir():
        raise DataError(f"--lfw-dir {lfw_dir} does not exist: pass the folder holding <Name>/<Name>_0001.jpg")
    n_folds, per, pairs = read_pairs(pairs_path)
    names = sorted({p.name1 for p in pairs} | {p.name2 for p in pairs})
    absent = [n for n in names if not (lfw_dir / n).is_dir()]
    if len(absent) == len(names):
        raise DataError(f"none of the {len(names)} people named in {pairs_path} has a folder in {lfw_dir} "
                        f"(e.g. {absent[0]!r}): is --lfw-dir the folder holding <Name>/<Name>_0001.jpg?")
    model, meta = load_eval_model(run)
    out = prepare_out(out)

    keys = sorted({(p.name1, p.index1) for p in pairs} | {(p.name2, p.index2) for p in pairs})
    listings: dict[str, dict[str, str]] = {}
    resolved = {k: _resolve(lfw_dir, *k, listings) for k in keys}
    files = sorted({r for r in resolved.values() if r})
    iset = folder_imageset(lfw_dir, files, [f.split("/")[0] for f in files])
    cache = Path(cache_dir) if cache_dir else out / ".morphgen_cache"
    emb = embed_imageset(model, meta, iset, align=align, flip=flip, cache_dir=cache,
                         fallback_crop=FALLBACK_CROP, batch_size=batch_size, progress=progress, workers=workers)
    row = {f: i for i, f in enumerate(files)}

    a, b, keep, missing_pairs = [], [], [], []
    for k, p in enumerate(pairs):
        f1, f2 = resolved[(p.name1, p.index1)], resolved[(p.name2, p.index2)]
        bad = [f or lfw_file(n, i) for n, i, f in ((p.name1, p.index1, f1), (p.name2, p.index2, f2))
               if f is None or not emb.ok[row[f]]]  # the file that would not read, or the name expected
        if bad:
            missing_pairs.append({"line": p.line, "fold": p.fold + 1, "same": p.same, "missing": sorted(set(bad))})
            continue
        a.append(row[f1]), b.append(row[f2]), keep.append(k)
    if not keep:
        raise DataError(f"no pair of {pairs_path} could be scored: all {len(pairs)} pairs miss an image "
                        f"under {lfw_dir} (see the names, e.g. {missing_pairs[0]['missing'][0]!r})")
    same = np.array([pairs[k].same for k in keep])
    check_kinds(same, f"{pairs_path} (pairs whose images could be read)")
    folds = np.array([pairs[k].fold for k in keep])
    scores = metrics.cosine_scores(emb.emb, a, b)
    cv = metrics.kfold_accuracy(scores, same, folds)
    overall = metrics.verification_metrics(scores, same)
    fpr, tpr, thr = metrics.roc_curve(scores, same)

    missing_images = sorted({lfw_file(*k) for k, r in resolved.items() if r is None})
    per_fold = []
    for j, f in enumerate(cv["folds"]):
        m = folds == f
        per_fold.append({"fold": int(f) + 1, "accuracy": cv["fold_accuracies"][j], "threshold": cv["fold_thresholds"][j],
                         "pairs": int(m.sum()), "genuine": int(same[m].sum()),
                         "missing": sum(1 for mp in missing_pairs if mp["fold"] == int(f) + 1)})
    files_out = {"result": str(out / "result.json"), "summary": str(out / "summary.md"),
                 "roc_png": str(out / "roc.png"), "roc_csv": str(out / "roc.csv"), "scores_csv": str(out / "scores.csv")}
    result = {
        "protocol": "lfw-view2",
        "model": model_info(meta, run),
        "inputs": {"lfw_dir": str(lfw_dir), "pairs": str(pairs_path), "flip": flip, "align": align},
        "pairs": {"total": len(pairs), "folds": n_folds, "per_fold_per_class": per, "evaluated": len(keep),
                  "missing": len(missing_pairs)},
        "accuracy": {"mean": cv["accuracy"], "std": cv["std"], "cross_validated": cv["cross_validated"]},
        "folds": per_fold,
        "auc": overall["auc"],
        "tar_at_far": overall["tar_at_far"],
        "best_accuracy_all_pairs": overall["best_accuracy"],
        "genuine_mean_score": overall["genuine_mean"], "impostor_mean_score": overall["impostor_mean"],
        "missing_pairs": missing_pairs,
        "missing_images": missing_images,
        "absent_people": absent,
        "images": emb.report(),
        "files": files_out,
    }
    with open(out / "scores.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["line", "fold", "same", "score", "correct"])
        for k, s, c in zip(keep, scores, cv["correct"]):
            w.writerow([pairs[k].line, pairs[k].fold + 1, int(pairs[k].same), f"{s:.6f}", int(c)])
    curve = [{"label": f"{meta['arch']} (AUC {fmt(overall['auc'], 3)})", "fpr": fpr, "tpr": tpr, "thresholds": thr}]
    write_roc_csv(out / "roc.csv", curve)
    plot_roc(out / "roc.png", curve, f"LFW: accuracy {pm(result['accuracy'], 3)}", log_far=False)
    write_json(out / "result.json", result)
    _summary(out / "summary.md", result)
    return result


def _summary(path: Path, r: dict) -> None:
    m, p = r["model"], r["pairs"]
    tar = r["tar_at_far"]
    head = (f"- model: `{m['run']}` ({m['arch']}, {m['input_size']} px, step {m['step']})\n"
            f"- data: `{r['inputs']['lfw_dir']}`, pairs `{r['inputs']['pairs']}`; alignment "
            f"{'MTCNN' if r['inputs']['align'] else 'none (resize)'}, flip {'on' if r['inputs']['flip'] else 'off'}\n"
            f"- pairs: {p['evaluated']} of {p['total']} evaluated ({p['folds']} folds); {p['missing']} missing an image\n\n"
            f"**Accuracy {pm(r['accuracy'])}** ({len(r['folds'])}-fold: {threshold_text(r['accuracy'])})  \n"
            f"AUC {fmt(r['auc'])}; " + tar_text(tar))
    folds = md_table(["fold", "accuracy", "threshold", "pairs", "missing"],
                     [[f["fold"], fmt(f["accuracy"]), fmt(f["threshold"]), f["pairs"], f["missing"]] for f in r["folds"]])
    sections = [("", head), ("Folds", folds)]
    if r["missing_pairs"] or r["absent_people"] or r["images"]["no_face_center_crop"]:
        lines = [f"- {len(r['missing_pairs'])} pairs not scored (missing or unreadable image)"]
        lines += [f"  - line {mp['line']} (fold {mp['fold']}): {', '.join(mp['missing'])}" for mp in r["missing_pairs"][:20]]
        if len(r["missing_pairs"]) > 20:
            lines.append(f"  - ... {len(r['missing_pairs']) - 20} more in result.json")
        if r["absent_people"]:
            lines.append(f"- {len(r['absent_people'])} people have no folder: {', '.join(r['absent_people'][:20])}"
                         + (" ..." if len(r["absent_people"]) > 20 else ""))
        nf = r["images"]["no_face_center_crop"]
        if nf:
            lines.append(f"- {len(nf)} images without a detected face (centre crop used): {', '.join(nf[:10])}"
                         + (" ..." if len(nf) > 10 else ""))
        sections.append(("Missing data", "\n".join(lines)))
    write_markdown(path, "LFW verification (View 2)", sections)


# ----------------------------------------------------------------------------- experiment protocol

def _run(model_run, out, o: dict, ctx) -> dict:
    return evaluate_lfw(model_run, o["lfw_dir"], o["pairs"], out, flip=o["flip"], align=o["align"],
                        batch_size=ctx.batch_size, cache_dir=ctx.cache_dir, progress=ctx.progress, workers=ctx.workers)


def _note(o: dict, label: str, r: dict | None) -> str:
    how = ("10 folds, each fold's threshold chosen on the other nine" if r is None
           else f"{len(r['folds'])} folds, {threshold_text(r['accuracy'])}")
    return f"{label}: LFW View 2 (`{o['pairs']}`), {how}."


def _check(o: dict, where: str) -> None:
    check_input(o, where, "pairs", lambda: read_pairs(o["pairs"]))


PROTOCOL = Protocol(
    name="lfw", summary="LFW View 2 (pairs.txt, 10 folds)",
    defaults={"lfw_dir": None, "pairs": None, "flip": False, "align": True},
    run=_run, note=_note, paths=("lfw_dir", "pairs"), required=("lfw_dir", "pairs"), check=_check)
