"""Verification on a plain folder of real identities (ORL, Yale, ...): seeded genuine and
impostor pairs in identity-disjoint folds (LFW View 2 style, at most `folds`, at least 2
identities each), each fold's threshold chosen on the others.

The folder holds one sub-folder per identity (ORL's ``sN/M.pgm``), or files named
``<identity>.<anything>`` (Yale's ``subject01.happy``). ``identities`` keeps a subset
("first:N", "last:N" in natural order, or a list of names), so the identities a recipe
fine-tunes on can be left out of the benchmark.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from morphgen.errors import DataError

from ..data import check_selector_on, identity_selector, load_imageset, named_by_file, natural_key, select_identities
from . import metrics
from .common import gallery_probe_pairs, load_eval_model, model_info, prepare_out, write_pairs_file
from .pose import evaluate_pairs_on_images
from .protocols import Protocol
from .report import fmt, md_table, plot_roc, pm, tar_text, threshold_text, write_json, write_markdown, write_roc_csv


def identity_folder(root: Path):
    """A folder of identity sub-folders, or of files named <identity>.<anything> (Yale)."""
    return named_by_file(load_imageset(Path(root), "folder"))


def evaluate_real_pairs(run, images, out, identities=None, folds: int = 10, per_fold: int = 300, seed: int = 0,
                        align: bool = True, flip: bool = False, batch_size: int = 64, cache_dir=None,
                        progress: bool = False, workers: int | None = None) -> dict:
    """Writes result.json, summary.md, pairs.txt, scores.csv, roc.csv and roc.png into `out`."""
    model, meta = load_eval_model(run)
    iset = identity_folder(Path(images))
    keep = select_identities(iset.identities, identities, "real_pairs identities")
    iset = iset.take([i for i, n in enumerate(iset.identities) if n in keep])
    n = len(iset)
    pairs = gallery_probe_pairs(iset.identities, np.ones(n, bool), ["all"] * n, None, folds, per_fold, seed)
    if len(pairs) == 0:
        raise DataError(f"{images}: no verification pairs (needs >= 2 identities with >= 2 images)")
    out = prepare_out(out)
    write_pairs_file(out / "pairs.txt", pairs, iset.files,
                     {"protocol": "real-pairs", "folds": pairs.n_folds, "per_fold": per_fold, "seed": seed,
                      "identity_disjoint": pairs.identity_disjoint, "images": str(images)})
    res = evaluate_pairs_on_images(model, meta, iset, pairs, align, flip, batch_size,
                                   Path(cache_dir) if cache_dir else out / ".morphgen_cache", progress, workers)
    rows = res.pop("_rows")
    scores = np.array([r[5] for r in rows])
    same = np.array([bool(r[1]) for r in rows])
    with open(out / "scores.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["fold", "same", "gallery", "probe", "score"])
        w.writerows([[r[0], r[1], r[3], r[4], f"{r[5]:.6f}"] for r in rows])
    fpr, tpr, thr = metrics.roc_curve(scores, same)
    curve = [{"label": f"{meta['arch']} (AUC {fmt(res['auc'], 3)})", "fpr": fpr, "tpr": tpr, "thresholds": thr}]
    write_roc_csv(out / "roc.csv", curve)
    plot_roc(out / "roc.png", curve, f"{Path(images).name}: accuracy {pm(res['accuracy'], 3)}", log_far=False)
    res.pop("bins", None)
    result = {"protocol": "real-pairs", "model": model_info(meta, run),
              "inputs": {"images": str(images), "identities": sorted(keep, key=natural_key), "images_used": n,
                         "not_images": iset.not_images,  # files of the folder that hold no image: in no pair
                         "folds": pairs.n_folds, "per_fold": per_fold, "seed": seed, "align": align, "flip": flip,
                         "identity_disjoint": pairs.identity_disjoint},
              **res,
              "genuine_mean_score": float(scores[same].mean()) if same.any() else None,
              "impostor_mean_score": float(scores[~same].mean()) if (~same).any() else None,
              "files": {"result": str(out / "result.json"), "summary": str(out / "summary.md"),
                        "roc_csv": str(out / "roc.csv"), "roc_png": str(out / "roc.png"),
                        "scores_csv": str(out / "scores.csv"), "pairs": str(out / "pairs.txt")}}
    write_json(out / "result.json", result)
    m = result["model"]
    head = (f"- model: `{m['run']}` ({m['arch']}, {m['input_size']} px, step {m['step']})\n"
            f"- images: `{images}`: {len(keep)} identities, {n} images; {pairs.n_folds} identity-disjoint folds, "
            f"{res['pairs']} pairs ({res['genuine']} genuine)\n\n"
            f"**Accuracy {pm(res['accuracy'])}** ({threshold_text(res['accuracy'])})  \n"
            f"AUC {fmt(res['auc'])}; " + tar_text(res["tar_at_far"]))
    folds_t = md_table(["fold", "accuracy", "threshold", "pairs"],
                       [[f["fold"], fmt(f["accuracy"]), fmt(f["threshold"]), f["pairs"]] for f in res["folds"]])
    write_markdown(out / "summary.md", "Verification on real identities", [("", head), ("Folds", folds_t)])
    return result


# ----------------------------------------------------------------------------- experiment protocol

def _run(model_run, out, o: dict, ctx) -> dict:
    return evaluate_real_pairs(model_run, o["images"], out, identities=o["identities"], folds=o["folds"],
                               per_fold=o["per_fold"], seed=o["seed"], align=o["align"], flip=o["flip"],
                               batch_size=ctx.batch_size, cache_dir=ctx.cache_dir, progress=ctx.progress,
                               workers=ctx.workers)


def _note(o: dict, label: str, r: dict | None) -> str:
    return (f"{label}: real pairs from `{o['images']}`" + (f", identities {o['identities']}" if o.get("identities") else "")
            + ", identity-disjoint folds.")


def _check(o: dict, where: str) -> None:
    identity_selector(o.get("identities"), f"{where}.identities")
    if o.get("identities") is not None and o.get("images") and Path(o["images"]).is_dir():
        check_selector_on(Path(o["images"]), "folder", o["identities"], f"{where}.identities", least=2)


PROTOCOL = Protocol(
    name="real_pairs", summary="seeded pairs of a folder of real identities (ORL, Yale, ...)",
    defaults={"images": None, "identities": None, "folds": 10, "per_fold": 300, "seed": 0, "align": True,
              "flip": False},
    run=_run, note=_note, paths=("images",), required=("images",), check=_check)
