"""A generic verification pair list: ``path1 path2 label [fold]`` per line.

For CALFW / CPLFW / AgeDB-style lists converted to one pair a line, or your own. Paths
are relative to ``--root``; fields are separated by tabs, commas or spaces (a line with
a tab is split on tabs only, so paths may hold spaces there); ``label`` is 1/0,
true/false, same/diff or genuine/impostor; lines starting with ``#`` are comments. The optional fourth
field is the pair's fold (any integer); either every line has one or none does.

Without folds, folds are made **identity-disjoint** as in LFW View 2: an image's identity
is its first path component when the path has a folder (``Name/Name_0001.jpg``), else its
file name without a trailing ``_<number>``; identities linked by any pair form one group,
and whole groups are dealt to ``folds`` folds, balancing pair counts (seeded). When the
pairs link so many identities that fewer groups than folds remain, or a fold would get
no genuine or no impostor pair, genuine and impostor pairs are each dealt evenly to the
folds at random instead (as many folds as there are pairs of the rarer kind, at most
``folds``), and the result says ``identity_disjoint: false``.

Every fold, given or made, must hold genuine and impostor pairs, and there must be two
folds at least: a threshold is chosen on some folds and tested on another, so a list
that cannot be cross-validated (only genuine pairs, say) is a one-line DataError rather
than an accuracy of 1.0. Paths must stay inside ``--root`` (no absolute paths, no ``..``
out of it).

Pairs whose image is missing or unreadable are not scored: they are counted and listed
(with their line numbers) in result.json and the summary. A malformed line is a one-line
DataError naming the file and line.
"""
from __future__ import annotations

import csv
import os.path
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from morphgen.errors import DataError

from . import metrics
from .common import check_kinds, embed_imageset, folder_imageset, load_eval_model, model_info, prepare_out
from .protocols import Protocol, check_input
from .report import result_files, fmt, md_table, plot_roc, pm, tar_text, write_json, write_markdown, write_roc_csv

LABELS = {"1": True, "0": False, "true": True, "false": False, "same": True, "diff": False, "different": False,
          "genuine": True, "impostor": False, "match": True, "mismatch": False}
FALLBACK_CROP = 0.8


@dataclass
class PairList:
    root: Path
    files: list[str]
    a: np.ndarray
    b: np.ndarray
    same: np.ndarray
    fold: np.ndarray
    lines: np.ndarray                          # line number of each pair
    folds_given: bool
    identity_disjoint: bool
    missing: list[dict] = field(default_factory=list)   # {"line", "missing": [files]}


def identity_of(rel: str) -> str:
    """The identity an image path names (see the module notes)."""
    if "/" in rel:
        return rel.split("/")[0]
    return re.sub(r"_\d+$", "", Path(rel).stem)


def read_pair_list(path: str | Path, root: str | Path, folds: int = 10, seed: int = 0) -> PairList:
    path, root = Path(path), Path(root)
    if not path.is_file():
        raise DataError(f"--pairs {path} does not exist: give a file of 'path1 path2 label [fold]' lines")
    if not root.is_dir():
        raise DataError(f"--root {root} does not exist: give the folder the pair paths are relative to")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read pairs file {path}: {exc}") from None
    rows, given = [], None
    for ln, line in enumerate(text.splitlines(), 1):
        line = "" if line.lstrip().startswith("#") else line.strip()
        if not line:
            continue
        parts = line.split("\t") if "\t" in line else re.split(r"[,\s]+", line)
        parts = [p.strip() for p in parts if p.strip()]
        if len(parts) not in (3, 4) or parts[2].lower() not in LABELS:
            raise DataError(f"{path}:{ln}: expected 'path1 path2 label [fold]' with label 1/0, true/false or "
                            f"same/diff, found {line!r}")
        fold = None
        if len(parts) == 4:
            try:
                fold = int(parts[3])
            except ValueError:
                raise DataError(f"{path}:{ln}: the fold must be a whole number, found {parts[3]!r}") from None
            if abs(fold) >= 10**6:  # a fold number is an index, not a 20-digit label (numpy's int64 overflowed)
                raise DataError(f"{path}:{ln}: the fold must be a whole number of at most 6 digits, found {parts[3]!r}")
        if given is None:
            given = fold is not None
        elif given != (fold is not None):
            raise DataError(f"{path}:{ln}: {'no' if given else 'a'} fold here but {'a' if given else 'no'} fold on "
                            "earlier lines: give a fold on every line or on none")
        rows.append((ln, _inside(root, parts[0], path, ln), _inside(root, parts[1], path, ln),
                     LABELS[parts[2].lower()], fold))
    if not rows:
        raise DataError(f"pairs file {path} holds no pairs: expected 'path1 path2 label [fold]' lines")
    files: dict[str, int] = {}
    exists: dict[str, bool] = {}
    keep, missing = [], []
    for ln, p1, p2, same, fold in rows:
        gone = []
        for p in (p1, p2):
            if p not in exists:
                exists[p] = (root / p).is_file()
            if not exists[p]:
                gone.append(p)
        if gone:
            missing.append({"line": ln, "same": same, "missing": gone})
            continue
        keep.append((ln, files.setdefault(p1, len(files)), files.setdefault(p2, len(files)), same, fold))
    if not keep:
        raise DataError(f"no pair of {path} can be scored: all {len(missing)} name a missing image under {root} "
                        f"(e.g. {missing[0]['missing'][0]!r})")
    names = list(files)
    a = np.array([k[1] for k in keep], np.int64)
    b = np.array([k[2] for k in keep], np.int64)
    same = np.array([k[3] for k in keep], bool)
    lines = np.array([k[0] for k in keep], np.int64)
    if given:
        fold_arr, disjoint = np.array([k[4] for k in keep], np.int64), False
    else:
        fold_arr, disjoint = _identity_folds([identity_of(names[i]) for i in a], [identity_of(names[i]) for i in b],
                                             same, folds, seed)
    check_folds(same, fold_arr, f"{path}{' (pairs whose images exist)' if missing else ''}", bool(given))
    return PairList(root, names, a, b, same, fold_arr, lines, bool(given), disjoint, missing)


def _inside(root: Path, rel: str, path: Path, ln: int) -> str:
    """`rel` as a clean path relative to `root`; one that leads out of it (absolute, or
    up through '..') would read any file on the machine, so it is refused."""
    rel = rel.replace("\\", "/")
    full = os.path.normpath(root.absolute() / rel)
    try:
        return Path(full).relative_to(os.path.normpath(root.absolute())).as_posix()
    except ValueError:
        raise DataError(f"{path}:{ln}: {rel!r} points outside --root {root}: give paths relative to it") from None


def check_folds(same: np.ndarray, fold: np.ndarray, what: str, given: bool) -> None:
    """DataError unless the pairs can be cross-validated: both kinds of pair, 2+ folds and
    each fold holding a genuine and an impostor pair (its threshold is tested on both)."""
    check_kinds(same, what)
    n_gen, n_imp = int(same.sum()), int((~same).sum())
    labels = np.unique(fold)
    if len(labels) < 2:
        fix = (f"every pair is in fold {labels[0]}; give pairs of 2+ folds or drop the fold column" if given
               else f"{n_gen} genuine and {n_imp} impostor pairs; give at least 2 of each")
        raise DataError(f"{what} cannot be cross-validated: {fix}")
    lacking = _fold_lacking_a_kind(same, fold)
    if lacking is not None:
        raise DataError(f"{what}: fold {lacking[0]} has no {lacking[1]} pair: every fold needs both to test a "
                        "threshold; move pairs between folds or drop the fold column")


def _fold_lacking_a_kind(same: np.ndarray, fold: np.ndarray) -> tuple[int, str] | None:
    """(fold, "genuine" or "impostor") for the first fold without pairs of that kind, or None."""
    for f in np.unique(fold):
        kinds = same[fold == f]
        if kinds.all() or not kinds.any():
            return int(f), "impostor" if kinds.all() else "genuine"
    return None


def _identity_folds(ida: list[str], idb: list[str], same: np.ndarray, folds: int,
                    seed: int) -> tuple[np.ndarray, bool]:
    """Fold per pair, identity-disjoint where the pairs allow it (see the module notes)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for x, y in zip(ida, idb):
        parent[find(x)] = find(y)
    groups = [find(x) for x in ida]
    rng = np.random.default_rng(seed)
    uniq, counts = np.unique(groups, return_counts=True)
    if len(uniq) >= folds:
        order = sorted(range(len(uniq)), key=lambda k: (-counts[k], rng.random()))
        load = np.zeros(folds, np.int64)
        fold_of = {}
        for k in order:  # largest group first onto the lightest fold
            j = int(np.argmin(load))
            fold_of[uniq[k]] = j
            load[j] += counts[k]
        f = np.array([fold_of[g] for g in groups], np.int64)
        if _fold_lacking_a_kind(same, f) is None:
            return f, True
    return _stratified_folds(same, folds, rng), False


def _stratified_folds(same: np.ndarray, folds: int, rng: np.random.Generator) -> np.ndarray:
    """Genuine and impostor pairs each dealt evenly (at random) to as many folds as the
    rarer kind allows, at most `folds`, so that every fold holds both."""
    k = max(1, min(folds, int(same.sum()), int((~same).sum())))
    f = np.empty(len(same), np.int64)
    for kind in (True, False):
        idx = np.nonzero(same == kind)[0]
        f[idx[rng.permutation(len(idx))]] = np.arange(len(idx)) % k
    return f


def evaluate_pair_list(run: str | Path, pairs: str | Path, root: str | Path, out: str | Path, folds: int = 10,
                       seed: int = 0, align: bool = True, flip: bool = False, batch_size: int = 64,
                       cache_dir: str | Path | None = None, progress: bool = False,
                       workers: int | None = None) -> dict:
    """Cross-validated verification of a pair list; writes result.json, summary.md,
    scores.csv, roc.csv and roc.png into `out`."""
    model, meta = load_eval_model(run)
    pl = read_pair_list(pairs, root, folds, seed)
    out = prepare_out(out)
    iset = folder_imageset(pl.root, pl.files, [identity_of(f) for f in pl.files])
    emb = embed_imageset(model, meta, iset, align=align, flip=flip, fallback_crop=FALLBACK_CROP,
                         cache_dir=Path(cache_dir) if cache_dir else out / ".morphgen_cache", batch_size=batch_size,
                         progress=progress, workers=workers)
    ok = emb.ok[pl.a] & emb.ok[pl.b]
    unreadable = [{"line": int(pl.lines[k]), "same": bool(pl.same[k]),
                   "missing": [pl.files[i] for i in (pl.a[k], pl.b[k]) if not emb.ok[i]]} for k in np.nonzero(~ok)[0]]
    if not ok.any():
        raise DataError(f"no pair of {pairs} could be scored: their images are unreadable")
    fold = pl.fold
    if not pl.folds_given and not ok.all():  # folds made here: dealt again over the pairs that can be scored
        fold = np.full(len(pl.same), -1, np.int64)
        fold[ok], pl.identity_disjoint = _identity_folds(
            [identity_of(pl.files[i]) for i in pl.a[ok]], [identity_of(pl.files[i]) for i in pl.b[ok]],
            pl.same[ok], folds, seed)
    check_folds(pl.same[ok], fold[ok], f"{pairs} (pairs whose images could be read)", pl.folds_given)
    s = metrics.cosine_scores(np.nan_to_num(emb.emb), pl.a[ok], pl.b[ok])
    r = metrics.cross_validated(s, pl.same[ok], fold[ok])
    correct = r.pop("correct")
    fpr, tpr, thr = metrics.roc_curve(s, pl.same[ok])
    result = {"protocol": "pairs", "model": model_info(meta, run),
              "inputs": {"pairs": str(pairs), "root": str(root), "folds_given": pl.folds_given,
                         "identity_disjoint": pl.identity_disjoint, "folds": len(r["folds"]), "seed": seed,
                         "align": align, "flip": flip},
              **r, "unscored_pairs": len(pl.missing) + len(unreadable), "missing_pairs": pl.missing + unreadable,
              "images": emb.report(),
              "files": result_files(out)}
    with open(out / "scores.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["line", "fold", "same", "image_a", "image_b", "score", "correct"])
        for k, sc, c in zip(np.nonzero(ok)[0], s, correct):
            w.writerow([int(pl.lines[k]), int(fold[k]), int(pl.same[k]), pl.files[pl.a[k]], pl.files[pl.b[k]],
                        f"{sc:.6f}", int(c)])
    curve = [{"label": f"{meta['arch']} (AUC {fmt(r['auc'], 3)})", "fpr": fpr, "tpr": tpr, "thresholds": thr}]
    write_roc_csv(out / "roc.csv", curve)
    plot_roc(out / "roc.png", curve, f"{Path(pairs).name}: accuracy {pm(r['accuracy'], 3)}", log_far=False)
    write_json(out / "result.json", result)
    m, i = result["model"], result["inputs"]
    head = (f"- model: `{m['run']}` ({m['arch']}, {m['input_size']} px, step {m['step']})\n"
            f"- pairs: `{pairs}` under `{root}`; {r['pairs']} scored ({r['genuine']} genuine), "
            f"{result['unscored_pairs']} unscored (missing or unreadable image); {i['folds']} folds "
            f"({_folds_how(i, folds)})\n"
            f"- images: {emb.report()['landmarks_detected']} aligned by MTCNN "
            f"({len(emb.second_pass)} by its second pass), {len(emb.no_face)} without a face (typical-position crop)\n\n"
            f"**Accuracy {pm(r['accuracy'])}**, AUC {fmt(r['auc'])}, EER {fmt(r['eer'])}; {tar_text(r['tar_at_far'])}")
    folds_t = md_table(["fold", "accuracy", "threshold", "AUC", "pairs"],
                       [[f["fold"], fmt(f["accuracy"]), fmt(f["threshold"]), fmt(f["auc"]), f["pairs"]] for f in r["folds"]])
    sections = [("", head), ("Folds", folds_t)]
    if result["missing_pairs"]:
        lines = [f"- line {x['line']}: {', '.join(x['missing'])}" for x in result["missing_pairs"][:20]]
        if len(result["missing_pairs"]) > 20:
            lines.append(f"- ... {len(result['missing_pairs']) - 20} more in result.json")
        sections.append(("Unscored pairs", "\n".join(lines)))
    write_markdown(out / "summary.md", "Verification on a pair list", sections)
    return result


def _folds_how(inputs: dict, asked: int) -> str:
    """How the folds were made, for the summary."""
    if inputs["folds_given"]:
        return "given in the file"
    how = ("identity-disjoint" if inputs["identity_disjoint"] else
           "random, genuine and impostor pairs dealt evenly: the pairs' identities do not split into identity-"
           "disjoint folds that each hold both kinds")
    if inputs["folds"] < asked:
        how += f"; fewer than the {asked} asked for, as every fold needs a genuine and an impostor pair"
    return how


# ----------------------------------------------------------------------------- experiment protocol

def _run(model_run, out, o: dict, ctx) -> dict:
    return evaluate_pair_list(model_run, o["pairs"], o["root"], out, folds=o["folds"], seed=o["seed"], align=o["align"],
                              flip=o["flip"], batch_size=ctx.batch_size, cache_dir=ctx.cache_dir,
                              progress=ctx.progress, workers=ctx.workers)


def _note(o: dict, label: str, r: dict | None) -> str:
    return f"{label}: pair list `{o['pairs']}` under `{o['root']}`, cross-validated threshold."


def _check(o: dict, where: str) -> None:
    check_input(o, where, "pairs", lambda: read_pair_list(o["pairs"], o["root"], o["folds"], o["seed"]), ("root",))


PROTOCOL = Protocol(
    name="pairs", summary="a generic 'path1 path2 label [fold]' pair list",
    defaults={"pairs": None, "root": None, "folds": 10, "seed": 0, "align": True, "flip": False},
    run=_run, note=_note, paths=("pairs", "root"), required=("pairs", "root"), check=_check)
