"""CFP (Celebrities in Frontal-Profile, Sengupta et al., WACV 2016): frontal-frontal (FF)
and frontal-profile (FP) verification with the official protocol.

Layout (the original release)::

    CFP/Data/Images/<id:03d>/{frontal,profile}/<nn:02d>.jpg
    CFP/Protocol/Pair_list_F.txt          "<k> ../Data/Images/<id>/frontal/<nn>.jpg"
    CFP/Protocol/Pair_list_P.txt          "<k> ../Data/Images/<id>/profile/<nn>.jpg"
    CFP/Protocol/Split/{FF,FP}/<fold:02d>/{same,diff}.txt     "i,j" per line

Pair-list paths are relative to ``Protocol/``. In FF both indices point into the frontal
list; in FP ``i`` points into the frontal list and ``j`` into the profile list. Folds are
identity-disjoint (50 identities each); every fold present under ``Split`` is used (the
shared copy holds folds 1-5 of 10), each fold's threshold chosen on the other folds.

Reported per protocol: accuracy mean ± std over folds, AUC and EER (on all pairs, and
mean ± std over folds as in the paper), TAR at FAR 0.1 / 0.01 / 0.001, genuine and
impostor mean cosine, a per-fold table, ROC (PNG and CSV). Alignment: MTCNN's five points
(two passes, ``recognition.landmarks``); faces that neither pass finds are cut at the
typical landmark position of their view, and every such fallback is counted per view
(frontal / profile) in result.json and the summary. Pairs naming an index absent from
the lists or a missing / unreadable image are not scored: they are counted and listed.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from morphgen.errors import ConfigError, DataError

from . import metrics
from .common import Embedded, check_kinds, embed_imageset, folder_imageset, load_eval_model, model_info, prepare_out
from .protocols import Protocol, accuracy_column, check_input
from .report import (result_files, fmt, md_table, plot_roc, pm, tar_text, threshold_text, write_json, write_markdown,
                     write_roc_csv)

PROTOCOLS = ("FF", "FP")
VIEWS = ("frontal", "profile")
FALLBACK_CROP = 0.8


@dataclass
class CFPPairs:
    """One protocol's scorable pairs (indices into ``CFPData.files``) and the rest."""
    a: np.ndarray
    b: np.ndarray
    same: np.ndarray
    fold: np.ndarray                                   # fold number as in Split/ (1-based)
    missing: list[dict] = field(default_factory=list)  # {"fold", "file", "line", "why"}
    lines: list[str] = field(default_factory=list)     # each scorable pair's "Split/..txt:line"


@dataclass
class CFPData:
    root: Path
    files: list[str]          # relative to root
    identities: list[str]
    views: list[str]
    protocols: dict[str, CFPPairs]
    folds: list[int]


def _read_list(path: Path, root: Path) -> dict[int, str]:
    """{index: image path relative to root} of a Pair_list file."""
    if not path.is_file():
        raise DataError(f"CFP pair list {path} does not exist: pass the CFP folder (holding Data/ and Protocol/) "
                        "as --cfp-dir")
    out: dict[int, str] = {}
    base = path.parent
    for ln, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(None, 1)
        try:
            if len(parts) != 2:
                raise ValueError
            k = int(parts[0])
        except ValueError:
            raise DataError(f"{path}:{ln}: expected '<index> <path>', found {line.strip()!r}") from None
        p = Path(_norm(base, parts[1].strip().replace("\\", "/")))
        try:
            out[k] = p.relative_to(root).as_posix()
        except ValueError:
            raise DataError(f"{path}:{ln}: {parts[1].strip()!r} points outside the CFP folder {root}") from None
    return out


def _norm(base: Path, rel: str) -> str:
    """base / rel with '..' collapsed lexically (no symlink resolution)."""
    import os.path
    return os.path.normpath(str(base / rel))


def _identity_and_view(rel: str) -> tuple[str, str]:
    parts = rel.split("/")
    view = parts[-2] if len(parts) >= 3 else ""
    return (parts[-3] if len(parts) >= 3 else Path(rel).stem), view


def read_cfp(root: str | Path, protocols=PROTOCOLS) -> CFPData:
    """The CFP protocol files of `root` (every fold present under Protocol/Split), with the
    pairs whose images exist; DataError on a missing or malformed protocol file."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"--cfp-dir {root} does not exist: pass the CFP folder (holding Data/ and Protocol/)")
    root = Path(_norm(root.absolute(), "."))
    proto = root / "Protocol"
    lists = {"F": _read_list(proto / "Pair_list_F.txt", root), "P": _read_list(proto / "Pair_list_P.txt", root)}
    files: dict[str, int] = {}
    exists: dict[str, bool] = {}
    out: dict[str, CFPPairs] = {}
    all_folds: set[int] = set()
    for name in protocols:
        split = proto / "Split" / name
        folds = sorted((d for d in split.iterdir() if d.is_dir() and re.fullmatch(r"\d+", d.name)),
                       key=lambda d: int(d.name)) if split.is_dir() else []
        if not folds:
            raise DataError(f"no folds under {split}: expected {split}/01/same.txt and diff.txt (the CFP protocol)")
        a, b, same, fold, missing, lines = [], [], [], [], [], []
        for d in folds:
            f = int(d.name)
            all_folds.add(f)
            for fname, is_same in (("same.txt", True), ("diff.txt", False)):
                path = d / fname
                if not path.is_file():
                    raise DataError(f"CFP fold {d} lacks {fname}: the copy is incomplete")
                text = path.read_text(errors="replace")
                if not text.strip():  # a fold of one kind of pair only skewed its threshold, silently
                    raise DataError(f"CFP fold {d}: {fname} is empty (the official one lists 350 pairs): the copy "
                                    "is damaged")
                for ln, line in enumerate(text.splitlines(), 1):
                    if not line.strip():
                        continue
                    try:
                        i, j = (int(x) for x in line.replace(" ", "").split(","))
                    except ValueError:
                        raise DataError(f"{path}:{ln}: expected 'i,j', found {line.strip()!r}") from None
                    refs = ((lists["F"], i, "F"), (lists["F" if name == "FF" else "P"], j, "F" if name == "FF" else "P"))
                    rels, why = [], None
                    for lst, k, which in refs:
                        rel = lst.get(k)
                        if rel is None:
                            why = f"index {k} not in Pair_list_{which}.txt"
                            break
                        if rel not in exists:
                            exists[rel] = (root / rel).is_file()
                        if not exists[rel]:
                            why = f"missing image {rel}"
                            break
                        rels.append(rel)
                    where = f"{path.relative_to(root).as_posix()}:{ln}"
                    if why:
                        missing.append({"fold": f, "line": where, "same": is_same, "why": why})
                        continue
                    ia, ib = (files.setdefault(r, len(files)) for r in rels)
                    a.append(ia), b.append(ib), same.append(is_same), fold.append(f), lines.append(where)
        if same:  # (none at all is refused where the images are embedded)
            check_kinds(np.array(same), f"CFP protocol {name} ({split})")
        out[name] = CFPPairs(np.array(a, np.int64), np.array(b, np.int64), np.array(same, bool),
                             np.array(fold, np.int64), missing, lines)
    names = list(files)
    iv = [_identity_and_view(r) for r in names]
    return CFPData(root, names, [x[0] for x in iv], [x[1] for x in iv], out, sorted(all_folds))


def score_cfp(emb: Embedded, data: CFPData) -> dict:
    """Per protocol: the verification result of ``metrics.cross_validated`` on the pairs
    whose two images have embeddings (the others counted as unscored), plus the scores."""
    res = {}
    for name, p in data.protocols.items():
        ok = emb.ok[p.a] & emb.ok[p.b] if len(p.a) else np.zeros(0, bool)
        if not ok.any():
            raise DataError(f"CFP-{name}: no pair could be scored (every pair misses an image under {data.root})")
        s = metrics.cosine_scores(np.nan_to_num(emb.emb), p.a[ok], p.b[ok])
        r = metrics.cross_validated(s, p.same[ok], p.fold[ok])
        fpr, tpr, thr = metrics.roc_curve(s, p.same[ok])
        unreadable = [{"fold": int(p.fold[k]), "line": p.lines[k], "same": bool(p.same[k]),  # listed as well as counted
                       "why": "an image without an embedding (unreadable)"} for k in np.nonzero(~ok)[0]]
        r.update({"unscored_pairs": int((~ok).sum()) + len(p.missing), "missing_pairs": p.missing + unreadable,
                  "_scores": s, "_ok": ok, "_roc": (fpr, tpr, thr)})
        res[name] = r
    return res


def evaluate_cfp(run: str | Path, cfp_dir: str | Path, out: str | Path, protocol: str = "both", flip: bool = False,
                 align: bool = True, batch_size: int = 64, cache_dir: str | Path | None = None,
                 progress: bool = False, workers: int | None = None) -> dict:
    """CFP-FF and/or CFP-FP of a trained run; writes result.json, summary.md, scores.csv,
    roc.csv and roc.png into `out` (created only once the inputs have been read)."""
    names = {"BOTH": PROTOCOLS, "FF": ("FF",), "FP": ("FP",)}.get(str(protocol).upper())
    if names is None:
        raise ConfigError(f"--protocol {protocol!r}: use FF, FP or both")
    model, meta = load_eval_model(run)
    data = read_cfp(cfp_dir, names)
    out = prepare_out(out)
    iset = folder_imageset(data.root, data.files, data.identities)
    emb = embed_imageset(model, meta, iset, align=align, flip=flip, fallback_crop=FALLBACK_CROP,
                         cache_dir=Path(cache_dir) if cache_dir else out / ".morphgen_cache", batch_size=batch_size,
                         progress=progress, groups=data.views, workers=workers)
    scored = score_cfp(emb, data)
    result = {"protocol": "cfp", "model": model_info(meta, run),
              "inputs": {"cfp_dir": str(data.root), "protocols": list(names), "folds": data.folds, "flip": flip,
                         "align": align},
              "alignment": emb.report().get("by_group", {}),
              "images": {k: v for k, v in emb.report().items() if k != "by_group"},
              "files": result_files(out)}
    curves = []
    with open(out / "scores.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["protocol", "fold", "same", "image_a", "image_b", "score", "correct"])
        for name, r in scored.items():
            p, ok, s = data.protocols[name], r.pop("_ok"), r.pop("_scores")
            for k, sc, c in zip(np.nonzero(ok)[0], s, r.pop("correct")):
                w.writerow([name, int(p.fold[k]), int(p.same[k]), data.files[p.a[k]], data.files[p.b[k]],
                            f"{sc:.6f}", int(c)])
            fpr, tpr, thr = r.pop("_roc")
            curves.append({"label": name, "fpr": fpr, "tpr": tpr, "thresholds": thr})
            result[name] = r
    write_roc_csv(out / "roc.csv", curves)
    plot_roc(out / "roc.png", [dict(c, label=f"CFP-{c['label']}: accuracy {pm(result[c['label']]['accuracy'], 3)}, "
                                        f"AUC {fmt(result[c['label']]['auc'], 3)}") for c in curves],
             f"CFP ({meta['arch']}, folds {_fold_text(data.folds)})", log_far=False)
    write_json(out / "result.json", result)
    write_markdown(out / "summary.md", "CFP verification (Celebrities in Frontal-Profile)", _sections(result))
    return result


def _fold_text(folds: list[int]) -> str:
    return f"{folds[0]}-{folds[-1]}" if folds == list(range(folds[0], folds[-1] + 1)) else ",".join(map(str, folds))


def alignment_text(al: dict) -> str:
    """'frontal: 2500 images, 0 second pass, 0 typical-position crop; profile: ...'."""
    return "; ".join(f"{v}: {c['images']} images, {c['detected_second_pass']} found by the second MTCNN pass, "
                     f"{c['no_face_typical_crop']} without a face (typical-position crop), {c['unreadable']} unreadable"
                     for v, c in al.items())


def _threshold_text(r: dict | None, cross: str = "each fold's threshold chosen on the other folds") -> str:
    """How the thresholds of result `r` (None: not run yet) were chosen; one fold under
    Split/ leaves nothing to cross-validate on."""
    cv = r is None or all(r[n]["accuracy"]["cross_validated"] for n in r["inputs"]["protocols"])
    return threshold_text({"cross_validated": cv}, cross)


def _sections(r: dict) -> list[tuple[str, str]]:
    m, i = r["model"], r["inputs"]
    head = (f"- model: `{m['run']}` ({m['arch']}, {m['input_size']} px, step {m['step']})\n"
            f"- data: `{i['cfp_dir']}`, folds {_fold_text(i['folds'])} of the official protocol; alignment "
            f"{'MTCNN five points' if i['align'] else 'none (resize)'}, flip {'on' if i['flip'] else 'off'}\n"
            f"- alignment per view: {alignment_text(r['alignment']) or 'n/a'}")
    rows = []
    for name in i["protocols"]:
        p = r[name]
        rows.append([f"CFP-{name}", f"**{pm(p['accuracy'])}**", f"{fmt(p['auc'])} ({pm(p['auc_folds'])})",
                     f"{fmt(p['eer'])} ({pm(p['eer_folds'])})", tar_text(p["tar_at_far"]),
                     f"{fmt(p['genuine_mean_score'], 3)} / {fmt(p['impostor_mean_score'], 3)}",
                     p["pairs"], p["unscored_pairs"]])
    table = md_table(["protocol", "accuracy", "AUC (per fold)", "EER (per fold)", "TAR", "cosine genuine / impostor",
                      "pairs", "unscored"], rows)
    out = [("", head), ("Results", table + f"\n\nAccuracy: mean ± std over folds, {_threshold_text(r)}. "
                        "AUC and EER on all pairs, in brackets mean ± std over folds.")]
    for name in i["protocols"]:
        p = r[name]
        ft = md_table(["fold", "accuracy", "threshold", "AUC", "EER", "pairs"],
                      [[f["fold"], fmt(f["accuracy"]), fmt(f["threshold"]), fmt(f["auc"]), fmt(f["eer"]), f["pairs"]]
                       for f in p["folds"]])
        if p["missing_pairs"]:
            ft += "\n\n" + "\n".join(f"- not scored: {x['line']} ({x['why']})" for x in p["missing_pairs"][:20])
            if len(p["missing_pairs"]) > 20:
                ft += f"\n- ... {len(p['missing_pairs']) - 20} more in result.json"
        out.append((f"CFP-{name} folds", ft))
    return out


# ----------------------------------------------------------------------------- experiment protocol

def _run(model_run, out, o: dict, ctx) -> dict:
    return evaluate_cfp(model_run, o["cfp_dir"], out, protocol=o["protocols"], flip=o["flip"], align=o["align"],
                        batch_size=ctx.batch_size, cache_dir=ctx.cache_dir, progress=ctx.progress, workers=ctx.workers)


def _names(o: dict) -> tuple[str, ...]:
    return PROTOCOLS if o["protocols"] == "both" else (o["protocols"].upper(),)


def _columns(o: dict, label: str, r: dict | None) -> list:
    return [accuracy_column(n, f"{label}-{n} (accuracy)", None if r is None else r[n], curve=n) for n in _names(o)]


def _note(o: dict, label: str, r: dict | None) -> str:
    text = (f"{label}-FF / {label}-FP: CFP (`{o['cfp_dir']}`), official protocol, folds "
            f"{_fold_text(r['inputs']['folds']) if r else 'present'}; "
            + _threshold_text(r, "each fold's threshold chosen on the others") + ".")
    if r and r.get("alignment"):
        text += " Alignment per view: " + alignment_text(r["alignment"]) + "."
    return text


def _check(o: dict, where: str) -> None:
    if str(o["protocols"]).upper() not in ("FF", "FP", "BOTH"):
        raise ConfigError(f"{where}.protocols must be FF, FP or both, got {o['protocols']!r}")
    o["protocols"] = "both" if str(o["protocols"]).upper() == "BOTH" else str(o["protocols"]).upper()
    check_input(o, where, "cfp_dir", lambda: read_cfp(o["cfp_dir"], _names(o)))


PROTOCOL = Protocol(
    name="cfp", summary="CFP frontal-frontal and frontal-profile verification (official folds)",
    defaults={"cfp_dir": None, "protocols": "both", "flip": False, "align": True},
    run=_run, note=_note, columns=_columns, paths=("cfp_dir",), required=("cfp_dir",), check=_check)
