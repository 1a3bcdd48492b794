"""insightface validation files (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``,
``calfw.bin``, ``cplfw.bin``, ...): verification as arcface_torch reports it.

A ``.bin`` file is a pickle of ``(images, issame)``: ``images`` a list of 2N encoded
images (JPEG/PNG bytes, or uint8 numpy arrays of those bytes), already aligned to the
112 x 112 ArcFace template; ``issame`` a list (or array) of N bools; pair k is images
2k and 2k + 1. Old files were written by Python 2, so strings load as bytes.

**A pickle can run code when it is loaded.** These files are read with a restricted
unpickler that admits only what such files hold (lists, tuples, bytes, bools, numpy
arrays and scalars, and the latin-1 ``_codecs.encode`` that Python 3 protocol-2 pickles
use for bytes); anything else (a ``__reduce__`` naming ``os.system``, say) stops the
read before it is called, with a one-line DataError that names the file.

Protocol: each image is embedded as it is (its five points are the ArcFace template's,
so it is warped onto the model's template and size without detection); the score of a
pair is the cosine similarity; accuracy is the mean ± std over 10 contiguous folds
(sklearn ``KFold(10)`` as insightface's ``verification.py``), each fold's threshold
chosen on the other nine. insightface scans a 0.01 grid of distances for that threshold;
here it is the exact best threshold (midpoints between scores), which can differ from the
grid in the third decimal at most. Undecodable images are counted, and their pairs
reported as unscored, never given zeros.
"""
from __future__ import annotations

import codecs
import csv
import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from morphgen.errors import DataError
from morphgen.image_files import decode_image

from ..align import template_points
from ..data import ImageSet
from . import metrics
from .common import check_kinds, embed_imageset, load_eval_model, model_info, prepare_out
from .protocols import Protocol, accuracy_column
from .report import (result_files, fmt, md_table, plot_roc, pm, tar_text, threshold_text, write_json, write_markdown,
                     write_roc_csv)

FOLDS = 10
_NUMPY = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
          ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
          ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy", "bool_")}
_BUILTINS = {"list", "tuple", "bytes", "bytearray", "bool", "int", "float", "str", "dict", "set", "frozenset"}


class _Refused(Exception):
    pass


def _latin1_encode(text, encoding="latin1", errors="strict"):
    """``_codecs.encode`` as protocol-2 pickles use it for bytes: latin-1 only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "iso-8859-1"):
        raise _Refused("_codecs.encode with other arguments than a latin-1 string")
    return codecs.encode(text, "latin1", errors)


class SafeUnpickler(pickle.Unpickler):
    """Unpickles only containers, bytes, bools, numbers and numpy arrays."""

    def find_class(self, module: str, name: str):
        if module in ("builtins", "__builtin__") and name in _BUILTINS:
            return super().find_class("builtins", name)
        if (module, name) in _NUMPY:
            return super().find_class(module, name)
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        raise _Refused(f"{module}.{name}")


@dataclass
class BinSet:
    path: Path
    images: list[bytes]
    same: np.ndarray      # (N,) bool

    @property
    def name(self) -> str:
        return self.path.stem


def read_bin(path: str | Path) -> BinSet:
    """The pairs of an insightface .bin file, read without executing anything."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"--bin {path} does not exist: pass an insightface validation file such as lfw.bin")
    try:
        with open(path, "rb") as f:
            obj = SafeUnpickler(io.BufferedReader(f), encoding="bytes").load()
    except _Refused as exc:
        raise DataError(f"{path} is not a plain validation file: its pickle asks for {exc}, which is refused "
                        "(nothing was run)") from None
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError, UnicodeDecodeError, OverflowError) as exc:
        raise DataError(f"{path} is truncated or not an insightface .bin file ({type(exc).__name__}): "
                        "download or copy it again") from None
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        raise DataError(f"{path}: expected a pickled (images, issame) pair, found {type(obj).__name__}")
    images, same = obj
    try:
        same = np.asarray(same, dtype=object)
        if same.ndim != 1 or not all(isinstance(x, (bool, np.bool_)) or x in (0, 1) for x in same):
            raise ValueError
        same = same.astype(bool)
    except (ValueError, TypeError):
        raise DataError(f"{path}: issame must be a list of booleans") from None
    if not isinstance(images, (list, tuple)) or len(images) != 2 * len(same):
        raise DataError(f"{path}: {len(same)} pairs need {2 * len(same)} images, the file holds "
                        f"{len(images) if isinstance(images, (list, tuple)) else 'no list of'} images")
    out = []
    for k, img in enumerate(images):
        if isinstance(img, np.ndarray) and img.dtype == np.uint8:
            img = img.tobytes()
        if not isinstance(img, (bytes, bytearray)):
            raise DataError(f"{path}: image {k} is a {type(img).__name__}, not encoded image bytes")
        out.append(bytes(img))
    if not len(same):
        raise DataError(f"{path} holds no pairs")
    check_kinds(same, str(path))
    return BinSet(path, out, same)


class MemoryImages:
    """The image reader of an ImageSet of kind "memory": key "k" -> encoded bytes."""

    def __init__(self, images: list[bytes]):
        self.images = images

    def read(self, key: str) -> bytes:
        return self.images[int(key)]


def bin_imageset(b: BinSet) -> tuple[ImageSet, np.ndarray]:
    """(ImageSet of the decodable images with the ArcFace template as landmarks, mask of
    decodable images). Landmarks are the template scaled to each image's size."""
    n = len(b.images)
    lms = np.full((n, 5, 2), np.nan, np.float32)
    ok = np.zeros(n, bool)
    base = template_points("arcface", 112) / 112.0
    for k, data in enumerate(b.images):
        img = decode_image(data, cv2.IMREAD_UNCHANGED)
        if img is None:
            continue
        h, w = img.shape[:2]
        lms[k] = base * np.array([w, h], np.float32)
        ok[k] = True
    iset = ImageSet(b.path, "memory", [str(k) for k in range(n)], [""] * n, lms, [None] * n,
                    reader=MemoryImages(b.images))
    return iset.take(np.nonzero(ok)[0]), ok


def score_bin(emb: np.ndarray, ok: np.ndarray, same: np.ndarray) -> dict:
    """10-fold result of one file from embeddings of its 2N images (rows of undecodable
    images ignored: their pairs are unscored). Fold of pair k: contiguous split of N."""
    n = len(same)
    folds = metrics.contiguous_folds(n, FOLDS)
    pa, pb = np.arange(n) * 2, np.arange(n) * 2 + 1
    keep = ok[pa] & ok[pb]
    if not keep.any():
        raise DataError("no pair could be scored: no pair has two decodable images")
    check_kinds(same[keep], "the set of pairs with two decodable images")
    s = metrics.cosine_scores(np.nan_to_num(emb), pa[keep], pb[keep])
    r = metrics.cross_validated(s, same[keep], folds[keep])
    r["unscored_pairs"] = int((~keep).sum())
    r["undecodable_images"] = int((~ok).sum())
    r["_scores"], r["_keep"] = s, keep
    return r


def evaluate_bins(run: str | Path, bins: list[str | Path], out: str | Path, flip: bool = False,
                  batch_size: int = 64, progress: bool = False) -> dict:
    """Every .bin file of `bins` (one table row each) into `out`: result.json (``sets``:
    name -> result), summary.md, scores.csv, roc.csv, roc.png."""
    if not bins:
        raise DataError("give at least one --bin FILE")
    model, meta = load_eval_model(run)
    sets = [read_bin(p) for p in bins]          # every file is checked before anything is written
    names = [b.name for b in sets]
    if len(set(names)) != len(names):
        raise DataError(f"two --bin files share the name {next(x for x in names if names.count(x) > 1)!r}: "
                        "rename one (results are keyed by file name)")
    out = prepare_out(out)
    result = {"protocol": "insightface-bin", "model": model_info(meta, run),
              "inputs": {"bins": [str(b.path) for b in sets], "flip": flip, "folds": FOLDS}, "sets": {},
              "files": result_files(out)}
    curves = []
    with open(out / "scores.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["set", "pair", "fold", "same", "score", "correct"])
        for b in sets:
            iset, ok = bin_imageset(b)
            emb = np.full((len(b.images), 0), np.nan, np.float32)
            if ok.any():
                e = embed_imageset(model, meta, iset, align=True, flip=flip, batch_size=batch_size, progress=progress)
                emb = np.full((len(b.images), e.emb.shape[1]), np.nan, np.float32)
                emb[ok] = e.emb
                ok = ok.copy()  # an image the embedding could not read leaves its pair unscored, not
                ok[np.nonzero(ok)[0][~e.ok]] = False  # scored 0 (its NaN row was read as zeros)
            try:
                r = score_bin(emb, ok, b.same)
            except DataError as exc:
                raise DataError(f"{b.path}: {exc}") from None
            s, keep = r.pop("_scores"), r.pop("_keep")
            folds = metrics.contiguous_folds(len(b.same), FOLDS)
            for k, sc, c in zip(np.nonzero(keep)[0], s, r.pop("correct")):
                w.writerow([b.name, int(k), int(folds[k]) + 1, int(b.same[k]), f"{sc:.6f}", int(c)])
            for fo in r["folds"]:
                fo["fold"] = int(fo["fold"]) + 1
            fpr, tpr, thr = metrics.roc_curve(s, b.same[keep])
            curves.append({"label": b.name, "fpr": fpr, "tpr": tpr, "thresholds": thr})
            r["pairs_total"] = len(b.same)
            result["sets"][b.name] = r
    write_roc_csv(out / "roc.csv", curves)
    plot_roc(out / "roc.png", [dict(c, label=f"{c['label']}: {pm(result['sets'][c['label']]['accuracy'], 3)}")
                               for c in curves], f"insightface validation files ({meta['arch']})", log_far=False)
    write_json(out / "result.json", result)
    m = result["model"]
    rows = [[n, f"**{pm(r['accuracy'])}**", fmt(r["auc"]), fmt(r["eer"]), tar_text(r["tar_at_far"]),
             f"{r['pairs']} / {r['pairs_total']}", r["undecodable_images"]] for n, r in result["sets"].items()]
    write_markdown(out / "summary.md", "Verification on insightface validation files", [
        ("", f"- model: `{m['run']}` ({m['arch']}, {m['input_size']} px, step {m['step']}); flip "
             f"{'on' if flip else 'off'}\n- accuracy: mean ± std over contiguous folds (arcface_torch's protocol): "
             + "; ".join(f"{n} {_folds_text(r)}" for n, r in result["sets"].items())),
        ("Results", md_table(["file", "accuracy", "AUC", "EER", "TAR", "pairs scored", "undecodable images"], rows))])
    return result


def _folds_text(r: dict) -> str:
    """'10 folds, each fold's threshold chosen on the other 9': fewer for a file of fewer
    than 10 pairs, and no cross-validation at all where undecodable images leave one fold."""
    n = len(r["folds"])
    how = threshold_text(r["accuracy"], f"each fold's threshold chosen on the other {n - 1}")
    return f"{n} fold{'s' if n > 1 else ''}, {how}"


# ----------------------------------------------------------------------------- experiment protocol

def _files(o: dict) -> list[str]:
    b = o["bins"]
    return [b] if isinstance(b, str) else list(b)


def _run(model_run, out, o: dict, ctx) -> dict:
    return evaluate_bins(model_run, _files(o), out, flip=o["flip"], batch_size=ctx.batch_size, progress=ctx.progress)


def _columns(o: dict, label: str, r: dict | None) -> list:
    cols = []
    for f in _files(o):
        name = Path(f).stem
        cols.append(accuracy_column(name, f"{label} {name} (accuracy)" if label != "bin" else f"{name} (accuracy)",
                                    None if r is None else r["sets"].get(name), curve=name))
    return cols


def _note(o: dict, label: str, r: dict | None) -> str:
    how = ("10 contiguous folds, each fold's threshold chosen on the other nine" if r is None
           else "contiguous folds: " + "; ".join(f"{n} {_folds_text(x)}" for n, x in r["sets"].items()))
    return f"{label}: insightface validation files ({', '.join(Path(f).name for f in _files(o))}), {how}."


PROTOCOL = Protocol(
    name="bin", summary="insightface validation .bin files (lfw.bin, cfp_fp.bin, agedb_30.bin, ...)",
    defaults={"bins": None, "flip": False}, run=_run, note=_note, columns=_columns,
    paths=("bins",), required=("bins",))
