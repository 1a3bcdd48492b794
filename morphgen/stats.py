"""Dataset statistics as plots, so that an ablation's distributions can be seen, not trusted.

Reads the params files of a morphgen dataset (:mod:`morphgen.layout`; JSON Lines or
Parquet, only the columns it plots) and draws: yaw/pitch/roll histograms, the
dominant light direction (from the band-1 SH coefficients) and light energy, and the
distribution of distances between identities' shape coefficients (with mixup images'
weights where present).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import ConfigError, DataError
from .layout import PARAMS_DIR, PARAMS_GLOB, params_files, params_rows
from .outputs import check_writable


# what every params row holds and the plots read
_FIELDS = ("identity", "yaw", "pitch", "roll", "sh", "shape")


def read_params(root: Path) -> tuple[list[dict], dict[str, np.ndarray]]:
    """The params rows of the dataset in `root` and their number columns (yaw, pitch, roll
    as (M,), sh as (M, 9, 3), float64), each row checked to hold what the plots read (a
    one-line DataError naming the file and line of the first that does not)."""
    if not params_files(root):
        raise DataError(f"{root} holds no {PARAMS_DIR}/{PARAMS_GLOB}: is it a morphgen dataset (morphgen render --out {root})?")
    recs = []
    shaped: set[int] = set()
    for where, rec in params_rows(root, columns=_COLUMNS):
        if not isinstance(rec, dict) or any(k not in rec for k in _FIELDS):
            raise DataError(f"{where} is not a morphgen params row (valid JSON with {', '.join(_FIELDS)}): "
                            "the file is corrupt; re-render with --resume after deleting it")
        # only an identity's first unmixed row keeps its shape coefficients (identity_distances
        # reads those): every row's list was most of the memory (6 kB a row, 7 GB for SYN-1M)
        if type(rec["identity"]) is int and not rec.get("soft_label") and rec["identity"] not in shaped:
            shaped.add(rec["identity"])
        elif type(rec["identity"]) is int:
            rec["shape"] = None
        recs.append(rec)
    if not recs:
        raise DataError(f"the params files in {root / PARAMS_DIR} hold no rows: they are empty or truncated; "
                        "re-render with --resume after deleting them")
    cols, bad = _checked_columns(recs)
    if bad is not None:
        i, what = bad
        where = next(w for k, (w, _) in enumerate(params_rows(root, columns=_COLUMNS)) if k == i)
        raise DataError(f"{where}: {what}: the file is corrupt; re-render with --resume after deleting it")
    return recs, cols


_COLUMNS = (*_FIELDS, "soft_label")
_NUMBERS = {"yaw": (), "pitch": (), "roll": (), "sh": (9, 3)}  # field: the shape of its numbers


def _numbers(value, shape: tuple) -> np.ndarray | None:
    """`value` as a float64 array of `shape`, all finite, else None."""
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        return None
    return a if a.shape == shape and bool(np.isfinite(a).all()) else None


def _checked_columns(recs: list[dict]) -> tuple[dict[str, np.ndarray], tuple[int, str] | None]:
    """The number columns the plots read, each made once as one array, and (row index, what
    is wrong) of the first row they cannot read, or None. Only a field whose array fails is
    searched row by row."""
    cols = {}
    for key, shape in _NUMBERS.items():
        cols[key] = _numbers([r[key] for r in recs], (len(recs), *shape))
        if cols[key] is None:
            i = next(i for i, r in enumerate(recs) if _numbers(r[key], shape) is None)
            return cols, (i, f"{key} is not {'a finite number' if not shape else 'a 9 x 3 list of finite numbers'}")
    first_row: dict = {}
    for i, r in enumerate(recs):
        if type(r["identity"]) is not int:  # (a bool is no identity)
            return cols, (i, "identity is not a whole number")
        if not r.get("soft_label"):
            first_row.setdefault(r["identity"], i)
    rows = sorted(first_row.values())
    n = len(recs[rows[0]]["shape"]) if rows and isinstance(recs[rows[0]]["shape"], list) else -1
    for i in rows:  # the shape coefficients identity_distances reads
        if _numbers(recs[i]["shape"], (n,)) is None:
            return cols, (i, "shape is not a list of finite numbers as long as the first identity's")
    return cols, None


def check_plot_path(out: Path) -> Path:
    """`out` if the figure can be written there in a format matplotlib knows (by suffix)."""
    from matplotlib.backend_bases import FigureCanvasBase

    check_writable(out, "--out", folder=False)
    if out.suffix.lower().lstrip(".") not in FigureCanvasBase.get_supported_filetypes():
        raise ConfigError(f"--out {out}: matplotlib cannot write that type: end the name in .png (or .pdf, .svg)")
    return out


def summarize(recs: list[dict], cols: dict[str, np.ndarray]) -> dict:
    """The summary numbers of the rows and their number columns (`read_params`)."""
    yaw, pitch, roll, sh = cols["yaw"], cols["pitch"], cols["roll"], cols["sh"]
    ids = sorted({r["identity"] for r in recs})
    return {
        "images": len(recs),
        "identities": len(ids),
        "yaw": [float(yaw.min()), float(yaw.max()), float(yaw.mean()), float(yaw.std())],
        "pitch": [float(pitch.min()), float(pitch.max()), float(pitch.mean()), float(pitch.std())],
        "roll": [float(roll.min()), float(roll.max()), float(roll.mean()), float(roll.std())],
        "sh_energy_mean": float((sh**2).sum(axis=(1, 2)).mean()),
        "mixed_images": sum(1 for r in recs if r.get("soft_label")),
    }


def light_directions(sh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Azimuth and elevation (degrees) of the band-1 light vector (order y, z, x)."""
    band1 = sh[:, 1:4, :].mean(axis=2)
    x, y, z = band1[:, 2], band1[:, 0], band1[:, 1]
    az = np.degrees(np.arctan2(x, z))
    el = np.degrees(np.arctan2(y, np.hypot(x, z)))
    return az, el


def identity_distances(recs: list[dict], max_ids: int = 2000, seed: int = 0) -> np.ndarray:
    """Euclidean distances between the shape coefficients of distinct (unmixed) identities."""
    first: dict[int, list[float]] = {}
    for r in recs:
        if not r.get("soft_label") and r["identity"] not in first:
            first[r["identity"]] = r["shape"]
    coeffs = np.array(list(first.values()), dtype=np.float64)
    if len(coeffs) > max_ids:
        coeffs = coeffs[np.random.default_rng(seed).choice(len(coeffs), max_ids, replace=False)]
    if len(coeffs) < 2:
        return np.zeros(0)
    sq = (coeffs**2).sum(1)
    d2 = sq[:, None] + sq[None, :] - 2 * coeffs @ coeffs.T
    iu = np.triu_indices(len(coeffs), 1)
    return np.sqrt(np.maximum(d2[iu], 0))


def plot(root: Path, out: Path) -> dict:
    """Write the statistics figure to `out` (PNG) and return the summary numbers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs, cols = read_params(root)
    summary = summarize(recs, cols)
    sh = cols["sh"]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5))
    for ax, key in zip(axes[0], ("yaw", "pitch", "roll")):
        vals = cols[key]
        ax.hist(vals, bins=36, color="#4477aa")
        ax.set(title=f"{key}: mean {vals.mean():.1f}, sd {vals.std():.1f} deg", xlabel="degrees", ylabel="images")
    az, el = light_directions(sh)
    axes[1, 0].scatter(az, el, s=8, alpha=0.5, color="#aa3377", linewidths=0)
    axes[1, 0].set(title="dominant light direction (one dot an image)",
                   xlabel="azimuth (deg; 0 = from the camera, + = from the image's right)",
                   ylabel="elevation (deg; + = from above)", xlim=(-180, 180), ylim=(-90, 90))
    axes[1, 1].hist((sh**2).sum(axis=(1, 2)), bins=40, color="#ddaa33")
    axes[1, 1].set(title="light energy\n(sum of squared SH coefficients)", xlabel="energy", ylabel="images")
    dists = identity_distances(recs)
    if dists.size:
        axes[1, 2].hist(dists, bins=40, color="#228833")
    axes[1, 2].set(title=f"shape-coefficient distance\nbetween identities (n={summary['identities']})",
                   xlabel="L2 distance", ylabel="identity pairs")
    fig.suptitle(f"{root}: {summary['images']} images, {summary['identities']} identities, "
                 f"{summary['mixed_images']} identity-mixup images")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return summary
