"""Result files of an evaluation: ``result.json`` (NaN written as null), ``summary.md``,
ROC curves (PNG via matplotlib's Agg canvas, and CSV) and accuracy-per-bin plots."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from morphgen.outputs import replace_atomically


def jsonable(x):
    """numpy scalars/arrays -> Python; NaN/inf -> None; tuples -> lists."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, Path):
        return str(x)
    return x


def result_files(out: Path, **extra) -> dict:
    """The files every evaluation writes into `out` (result.json, summary.md, ROC PNG and
    CSV, scores.csv), plus `extra` name -> path."""
    out = Path(out)
    return {"result": str(out / "result.json"), "summary": str(out / "summary.md"), "roc_png": str(out / "roc.png"),
            "roc_csv": str(out / "roc.csv"), "scores_csv": str(out / "scores.csv"),
            **{k: str(v) for k, v in extra.items()}}


def write_json(path: Path, data: dict) -> Path:
    path = Path(path)
    replace_atomically(path, json.dumps(jsonable(data), indent=2) + "\n")
    return path


def fmt(x, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def pm(d: dict, digits: int = 4) -> str:
    """'mean ± std' of a {"mean", "std"} dict."""
    return f"{fmt(d.get('mean'), digits)} ± {fmt(d.get('std'), digits)}"


def threshold_text(accuracy: dict, cross: str = "each fold's threshold chosen on the other folds") -> str:
    """How the accuracy's threshold was chosen: `cross` when it was cross-validated, else
    the plain truth (one fold: chosen on the very pairs it scores, so optimistic), so a
    summary never claims a cross-validation that did not happen."""
    if accuracy.get("cross_validated", True):
        return cross
    return "the threshold chosen on the same pairs it scores (one fold: not cross-validated, so optimistic)"


def tar_text(tar: dict) -> str:
    """'TAR@FAR=0.1 x, @0.01 y, ...' from a tar_at_far dict; '*' marks estimates resting on
    fewer than 1 / FAR impostor pairs."""
    parts = [f"{'TAR@FAR=' if k == 0 else '@'}{f} {fmt(t['tar'])}{'' if t.get('reliable', True) else '*'}"
             for k, (f, t) in enumerate(tar.items())]
    note = " (* fewer than 1/FAR impostor pairs: not meaningful)" if any(not t.get("reliable", True) for t in tar.values()) else ""
    return ", ".join(parts) + note


def md_table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def write_markdown(path: Path, title: str, sections: list[tuple[str, str]]) -> Path:
    text = [f"# {title}", ""]
    for head, body in sections:
        if head:
            text += [f"## {head}", ""]
        text += [body.rstrip(), ""]
    Path(path).write_text("\n".join(text))
    return Path(path)


def decimate_roc(fpr, tpr, thr, max_points: int = 2000):
    """At most `max_points` ROC points, spread evenly in log FAR, keeping both ends."""
    fpr, tpr, thr = (np.asarray(v, np.float64) for v in (fpr, tpr, thr))
    if len(fpr) <= max_points:
        return fpr, tpr, thr
    x = np.log10(np.maximum(fpr, 1e-7))
    targets = np.linspace(x.min(), x.max(), max_points)
    idx = np.unique(np.r_[0, np.searchsorted(x, targets).clip(0, len(x) - 1), len(x) - 1])
    return fpr[idx], tpr[idx], thr[idx]


def write_roc_csv(path: Path, curves: list[dict]) -> Path:
    """curves: [{"label", "fpr", "tpr", "thresholds"}] -> label,fpr,tpr,threshold rows."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["curve", "fpr", "tpr", "threshold"])
        for c in curves:
            fpr, tpr, thr = decimate_roc(c["fpr"], c["tpr"], c["thresholds"])
            for a, b, t in zip(fpr, tpr, thr):
                w.writerow([c["label"], f"{a:.6g}", f"{b:.6g}", f"{t:.6g}"])
    return Path(path)


def _figure(w: float = 6.0, h: float = 4.5):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def plot_roc(path: Path, curves: list[dict], title: str, log_far: bool = True) -> Path:
    """ROC curves (TAR vs FAR), FAR on a log axis by default."""
    fig = _figure()
    ax = fig.add_subplot(111)
    for c in curves:
        fpr, tpr, _ = decimate_roc(c["fpr"], c["tpr"], c["thresholds"])
        m = fpr > 0 if log_far else np.ones(len(fpr), bool)
        ax.plot(fpr[m], tpr[m], label=c["label"], lw=c.get("lw", 1.5), alpha=c.get("alpha", 1.0))
    if not log_far:
        ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=0.8)  # chance
    if log_far:
        ax.set_xscale("log")
        ax.set_xlim(left=1e-4 if any(len(c["fpr"]) > 5000 for c in curves) else 1e-3, right=1.0)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    labelled = [c for c in curves if c.get("label") and not str(c["label"]).startswith("_")]
    if 0 < len(labelled) <= 12:
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(str(path))
    return Path(path)


def plot_bins(path: Path, panels: list[dict], title: str) -> Path:
    """One panel per dict {"x": [...], "y": [...], "xlabel", "ylabel", "labels": optional
    tick labels, "series": optional [{"x", "y", "label", "counts"}]}: accuracy per bin as
    lines, each point's count (its pairs) written above it where ``counts`` is given."""
    fig = _figure(6.0 * len(panels), 4.2)
    for k, p in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        series = p.get("series") or [{"x": p["x"], "y": p["y"], "label": None}]
        for s in series:
            ax.plot(s["x"], s["y"], marker="o", label=s.get("label"))
            for x, y, n in zip(s["x"], s["y"], s.get("counts") or []):
                if n is not None and np.isfinite(y):
                    ax.annotate(str(n), (x, y), textcoords="offset points", xytext=(0, 5), fontsize=6, ha="center")
        if p.get("labels") is not None:
            ax.set_xticks(p["x"])
            ax.set_xticklabels(p["labels"])
        ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        ys = [v for s in series for v in s["y"] if v is not None and np.isfinite(v)]
        ax.set_ylim(min([0.4] + [v - 0.05 for v in ys]), 1.02)  # (a point at 1.0 was cut in half)
        ax.set_xlabel(p.get("xlabel", ""))
        ax.set_ylabel(p.get("ylabel", "accuracy"))
        ax.grid(True, alpha=0.3)
        if any(s.get("label") for s in series):
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(str(path))
    return Path(path)
