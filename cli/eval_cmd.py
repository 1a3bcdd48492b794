"""`morphgen eval`: verification protocols for a trained run (LFW, CFP, insightface .bin
files, generic pair lists, IJB-A, pose, synthetic). Each writes result.json and
summary.md (plus plots and CSVs) into --out."""
from __future__ import annotations

import functools
from pathlib import Path

import click

from morphgen.outputs import NewOutputs, check_writable

from .group import OneLineErrorGroup, UserPath

_DIR = UserPath(file_okay=False, path_type=Path)
_FILE = UserPath(dir_okay=False, path_type=Path)


def _model(f):
    return click.option("--model", "model", required=True, type=UserPath(path_type=Path),
                        help="Run folder written by `morphgen train` (holding checkpoint.pt), or a checkpoint.pt file.")(f)


def _common(f):
    """The options every evaluation takes; --out is checked before any work, and what the
    command created in it is removed again when it fails."""
    @functools.wraps(f)
    def guarded(*args, out: Path, **kwargs):
        check_writable(out, "--out")
        with NewOutputs(out):
            return f(*args, out=out, **kwargs)

    opts = [
        click.option("--out", required=True, type=_DIR, help="Folder for result.json, summary.md, plots and CSVs (created)."),
        click.option("--flip", is_flag=True, help="Average each embedding with that of the mirrored crop."),
        click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True, help="Images per forward pass."),
        click.option("--quiet", is_flag=True, help="No progress bars."),
    ]
    for o in reversed(opts):
        guarded = o(guarded)
    return guarded


def _no_align(f):
    return click.option("--no-align", is_flag=True,
                        help="Resize whole images (or IJB-A box crops) instead of aligning five MTCNN points to the model's template.")(f)


def _cache(f):
    return click.option("--cache-dir", type=_DIR,
                        help="Where MTCNN landmarks are cached (share it between evaluations). [default: OUT/.morphgen_cache]")(f)


def _workers(f):
    return click.option("--workers", type=click.IntRange(1), default=None,
                        help="Processes detecting landmarks (MTCNN). [default: one per core]")(f)


@click.group("eval", cls=OneLineErrorGroup)
def eval_group() -> None:
    """Evaluate a trained run: LFW and CFP-FF/FP (cross-validated accuracy), insightface
    .bin files, any pair list, IJB-A 1:1 (TAR@FAR), accuracy per yaw (Multi-PIE or any
    posed set), and a rendered synthetic pose/light benchmark."""


@eval_group.command("lfw")
@_model
@click.option("--lfw-dir", required=True, type=_DIR, help="LFW image folder holding <Name>/<Name>_0001.jpg.")
@click.option("--pairs", "pairs", required=True, type=_FILE,
              help="LFW pairs file: pairs.txt (View 2, header '10<TAB>300') or any 'F N' header; View 1 files read as one fold.")
@_common
@_no_align
@_cache
@_workers
def lfw_cmd(model, lfw_dir, pairs, out, flip, batch_size, quiet, no_align, cache_dir, workers) -> None:
    """LFW verification: mean ± std accuracy over the pairs file's folds (threshold chosen on
    the other folds), AUC, TAR at FAR 0.1/0.01/0.001, ROC (PNG, CSV).

    Example: morphgen eval lfw --model runs/syn1m --lfw-dir lfw --pairs pairs.txt --out eval/lfw
    """
    from recognition.evaluation.lfw import evaluate_lfw

    r = evaluate_lfw(model, lfw_dir, pairs, out, flip=flip, align=not no_align, batch_size=batch_size,
                     cache_dir=cache_dir, progress=not quiet, workers=workers)
    acc = r["accuracy"]
    click.echo(f"LFW accuracy {acc['mean']:.4f} ± {acc['std']:.4f} over {r['pairs']['folds']} folds{_not_cv(acc)} "
               f"({r['pairs']['evaluated']}/{r['pairs']['total']} pairs, {r['pairs']['missing']} missing an image); "
               f"AUC {r['auc']:.4f}; results in {out}")


def _not_cv(*accuracies: dict) -> str:
    """' (not cross-validated: ...)' where an accuracy's threshold was chosen on the pairs it
    scores (one fold), for the result line; '' otherwise."""
    if all(a.get("cross_validated", True) for a in accuracies):
        return ""
    return " (one fold: not cross-validated, its threshold chosen on the pairs it scores)"


@eval_group.command("cfp")
@_model
@click.option("--cfp-dir", required=True, type=_DIR, help="CFP folder holding Data/Images and Protocol/ (the original layout).")
@click.option("--protocol", "protocol", type=click.Choice(["FF", "FP", "both"], case_sensitive=False), default="both",
              show_default=True, help="Frontal-frontal, frontal-profile, or both.")
@_common
@_no_align
@_cache
@_workers
def cfp_cmd(model, cfp_dir, protocol, out, flip, batch_size, quiet, no_align, cache_dir, workers) -> None:
    """CFP (Celebrities in Frontal-Profile): the official FF / FP protocol over every fold
    present under Protocol/Split, each fold's threshold chosen on the others; accuracy mean
    ± std, AUC, EER, TAR at FAR 0.1/0.01/0.001, ROC (PNG, CSV), per-fold tables, and per
    view how many faces needed the second MTCNN pass or a typical-position crop.

    Example: morphgen eval cfp --model runs/online --cfp-dir ../shared/data/cfp --out eval/cfp
    """
    from recognition.evaluation.cfp import alignment_text, evaluate_cfp

    r = evaluate_cfp(model, cfp_dir, out, protocol=protocol, flip=flip, align=not no_align, batch_size=batch_size,
                     cache_dir=cache_dir, progress=not quiet, workers=workers)
    parts = [f"CFP-{n} accuracy {r[n]['accuracy']['mean']:.4f} ± {r[n]['accuracy']['std']:.4f} "
             f"(AUC {r[n]['auc']:.4f}, EER {r[n]['eer']:.4f}, {r[n]['pairs']} pairs, {r[n]['unscored_pairs']} unscored)"
             for n in r["inputs"]["protocols"]]
    cv = _not_cv(*(r[n]["accuracy"] for n in r["inputs"]["protocols"]))
    click.echo("; ".join(parts) + f" over folds {r['inputs']['folds'][0]}-{r['inputs']['folds'][-1]}{cv}; results in {out}")
    if r["alignment"]:
        click.echo("alignment: " + alignment_text(r["alignment"]))


@eval_group.command("bin")
@_model
@click.option("--bin", "bins", required=True, multiple=True, type=_FILE,
              help="insightface validation file (lfw.bin, cfp_fp.bin, agedb_30.bin, calfw.bin, cplfw.bin...); repeatable.")
@_common
def bin_cmd(model, bins, out, flip, batch_size, quiet) -> None:
    """insightface validation files: 10-fold accuracy as arcface_torch reports it (one row
    per file), AUC, EER, TAR@FAR, ROC. The files' pickles are read without executing
    anything: one holding more than images and booleans is refused.

    Example: morphgen eval bin --model runs/online --bin lfw.bin --bin cfp_fp.bin --out eval/bins --flip
    """
    from recognition.evaluation.insightface_bin import evaluate_bins

    r = evaluate_bins(model, list(bins), out, flip=flip, batch_size=batch_size, progress=not quiet)
    for name, s in r["sets"].items():
        click.echo(f"{name}: accuracy {s['accuracy']['mean']:.4f} ± {s['accuracy']['std']:.4f}, AUC {s['auc']:.4f} "
                   f"({s['pairs']}/{s['pairs_total']} pairs scored, {s['undecodable_images']} undecodable images)")
    click.echo(f"results in {out}")


@eval_group.command("pairs")
@_model
@click.option("--pairs", "pairs", required=True, type=_FILE,
              help="Lines 'path1 path2 label [fold]' (label 1/0, true/false or same/diff; tab, comma or space separated).")
@click.option("--root", required=True, type=_DIR, help="Folder the pair paths are relative to.")
@click.option("--folds", type=click.IntRange(2), default=10, show_default=True,
              help="Folds to make when the file gives none (identity-disjoint where the pairs allow).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the fold assignment.")
@_common
@_no_align
@_cache
@_workers
def pairs_cmd(model, pairs, root, folds, seed, out, flip, batch_size, quiet, no_align, cache_dir, workers) -> None:
    """Any verification pair list (CALFW / CPLFW / AgeDB-style, or your own): cross-
    validated accuracy, AUC, EER, TAR@FAR, ROC; pairs with a missing image are listed.

    Example: morphgen eval pairs --model runs/online --pairs calfw_pairs.txt --root calfw/aligned --out eval/calfw
    """
    from recognition.evaluation.pair_list import evaluate_pair_list

    r = evaluate_pair_list(model, pairs, root, out, folds=folds, seed=seed, align=not no_align, flip=flip,
                           batch_size=batch_size, cache_dir=cache_dir, progress=not quiet, workers=workers)
    click.echo(f"accuracy {r['accuracy']['mean']:.4f} ± {r['accuracy']['std']:.4f} over {len(r['folds'])} folds "
               f"({r['pairs']} pairs scored, {r['unscored_pairs']} unscored); AUC {r['auc']:.4f}; results in {out}")


@eval_group.command("ijba")
@_model
@click.option("--ijba-dir", required=True, type=_DIR, help="IJB-A folder holding IJB-A_11_sets/split1..split10 (or that folder itself).")
@click.option("--splits", default="1-10", show_default=True, help="Splits to evaluate: a range or list, e.g. 1-10, 1,3,5.")
@click.option("--images", type=_DIR, help="Folder that the metadata's FILE paths (img/..., frame/...) are relative to. [default: IJBA_DIR/images, then IJBA_DIR]")
@click.option("--margin", type=click.FloatRange(0, 2), default=0.2, show_default=True,
              help="Border added around the annotated face box, as a fraction of its longer side (box crops).")
@_common
@_no_align
@_cache
@_workers
def ijba_cmd(model, ijba_dir, splits, images, margin, out, flip, batch_size, quiet, no_align, cache_dir,
             workers) -> None:
    """IJB-A 1:1 template verification: TAR at FAR 0.1 and 0.01 (mean ± std over splits)
    with mean-feature and softmax (Masi et al.) template pooling.

    Example: morphgen eval ijba --model runs/syn1m --ijba-dir IJB-A --out eval/ijba --splits 1-10
    """
    from recognition.evaluation.ijba import evaluate_ijba

    r = evaluate_ijba(model, ijba_dir, out, splits=splits, images_dir=images, align=not no_align, flip=flip,
                      margin=margin, batch_size=batch_size, cache_dir=cache_dir, progress=not quiet,
                      workers=workers)
    parts = [f"{p}: TAR@FAR=0.1 {s['tar@far=0.1']['mean']:.4f} ± {s['tar@far=0.1']['std']:.4f}, "
             f"@0.01 {s['tar@far=0.01']['mean']:.4f} ± {s['tar@far=0.01']['std']:.4f}" for p, s in r["summary"].items()]
    click.echo(f"IJB-A 1:1 over {len(r['splits'])} split(s): " + "; ".join(parts) + f"; results in {out}")


@eval_group.command("pose")
@_model
@click.option("--images", required=True, type=_DIR,
              help="Multi-PIE folder (session0S/multiview/...), a morphgen render (its params/ folder, Parquet or JSON Lines), or any <identity>/<file> folder with --poses.")
@click.option("--poses", type=_FILE, help="CSV of 'path,yaw' lines (path relative to --images) for folders of other layouts.")
@click.option("--pairs", "pairs", type=_FILE, help="Reuse a pairs.txt written by an earlier `eval pose` run instead of drawing pairs.")
@click.option("--folds", type=click.IntRange(1), default=10, show_default=True, help="Folds (fewer when identities are few).")
@click.option("--per-fold", type=click.IntRange(1), default=300, show_default=True, help="Genuine (and as many impostor) pairs per fold, at most.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the pair draw.")
@click.option("--yaw-step", type=float, default=15.0, show_default=True, help="Width of the yaw bins in degrees (gallery = bin 0).")
@_common
@_no_align
@_cache
@_workers
def pose_cmd(model, images, poses, pairs, folds, per_fold, seed, yaw_step, out, flip, batch_size, quiet, no_align,
             cache_dir, workers) -> None:
    """Accuracy per probe yaw against a frontal gallery (10-fold protocol, seeded pairs written
    to OUT/pairs.txt), with a plot of accuracy vs yaw.

    Example: morphgen eval pose --model runs/syn1m --images Multi-PIE/data --out eval/pose
    """
    from recognition.evaluation.pose import evaluate_pose

    r = evaluate_pose(model, images, out, poses=poses, pairs_file=pairs, folds=folds, per_fold=per_fold, seed=seed,
                      yaw_step=yaw_step, align=not no_align, flip=flip, batch_size=batch_size, cache_dir=cache_dir,
                      progress=not quiet, workers=workers)
    from recognition.evaluation.pose import skipped_text

    per = ", ".join(f"{b['bin']:g}: {b['accuracy']:.3f}" for b in r["bins"].values())
    unscored = f", {r['unscored_pairs']} unscored: an image would not read" if r["unscored_pairs"] else ""
    click.echo(f"pose accuracy {r['accuracy']['mean']:.4f} ± {r['accuracy']['std']:.4f} ({r['pairs']} pairs{unscored}); "
               f"per yaw {per}; results in {out}{skipped_text(r['data']['skipped'], '; images ')}")


@eval_group.command("synthetic")
@_model
@click.option("--ids", type=click.IntRange(2), default=50, show_default=True, help="Held-out identities to render.")
@click.option("--seed", type=int, default=100000, show_default=True, help="Render seed: keep it far from the training data's seed.")
@click.option("--yaws", default="-90:90:15", show_default=True, help="Yaw grid start:stop:step in degrees (must include 0).")
@click.option("--lights", type=click.IntRange(1), default=3, show_default=True, help="Illumination conditions per pose.")
@click.option("--size", type=click.IntRange(16, 1024), default=128, show_default=True, help="Render size in pixels.")
@click.option("--face-model", help="Morphable model to render with (.h5/.mat/.npz). [default: the embedded model]")
@click.option("--expressions", is_flag=True, help="Random expressions (default: neutral faces).")
@click.option("--data", "data_dir", type=_DIR, help="Render into (or reuse) this folder; may be any complete controlled morphgen render. [default: OUT/render_<hash>]")
@click.option("--folds", type=click.IntRange(1), default=10, show_default=True, help="Folds per protocol.")
@click.option("--per-fold", type=click.IntRange(1), default=300, show_default=True, help="Genuine (and impostor) pairs per fold, at most.")
@click.option("--pair-seed", type=int, default=0, show_default=True, help="Seed of the pair draw.")
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True, help="Render worker processes.")
@_common
def synthetic_cmd(model, ids, seed, yaws, lights, size, face_model, expressions, data_dir, folds, per_fold, pair_seed,
                  workers, out, flip, batch_size, quiet) -> None:
    """Render held-out identities in controlled mode (every yaw x every light) and report
    accuracy per yaw (frontal gallery, same light) and per light (same yaw).

    Example: morphgen eval synthetic --model runs/syn1m --out eval/synthetic --ids 50 --seed 100000
    """
    from recognition.evaluation.synthetic import evaluate_synthetic

    r = evaluate_synthetic(model, out, ids=ids, seed=seed, yaws=yaws, lights=lights, size=size, face_model=face_model,
                           expressions=expressions, data_dir=data_dir, folds=folds, per_fold=per_fold,
                           pair_seed=pair_seed, workers=workers, flip=flip, batch_size=batch_size, progress=not quiet)
    for w in r["warnings"]:
        click.echo(f"warning: {w}", err=True)
    parts = [f"{n} accuracy {p['accuracy']['mean']:.4f} ± {p['accuracy']['std']:.4f}" for n, p in r["protocols"].items()]
    bad = len(r["images_report"]["unreadable"])
    click.echo(f"synthetic benchmark ({r['inputs']['ids']} ids, {r['inputs']['images']} images"
               + (f", {bad} unreadable and left out" if bad else "") + "): " + "; ".join(parts) + f"; results in {out}")
