"""Shared pieces of the evaluation protocols: the model, embeddings of image files with
alignment fall-backs, seeded gallery/probe pair lists (written and read back as pairs
files), and small parsers."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from morphgen.errors import ConfigError, DataError, ModelError
from morphgen.image_files import read_image_file

from ..align import template_points
from ..data import NO_LANDMARKS, FaceDataset, ImageSet
from ..landmarks import find_landmarks


# ----------------------------------------------------------------------------- model

def load_eval_model(run: str | Path, device: str = "cpu"):
    """(model in eval mode, checkpoint metadata) of a morphgen run folder or checkpoint.pt;
    anything else raises a one-line ModelError that names the --model path."""
    from ..embed import load_model

    p = Path(run)
    if not p.exists():
        raise ModelError(f"--model {p} does not exist: pass a morphgen run folder (holding checkpoint.pt) "
                         "or its checkpoint.pt")
    if p.is_dir() and not (p / "checkpoint.pt").is_file():
        raise ModelError(f"--model {p} is not a morphgen run: it holds no checkpoint.pt (a run folder gets one "
                         "from `morphgen train` at its first checkpoint)")
    try:
        return load_model(p, device)
    except ModelError as exc:
        raise ModelError(f"--model {p}: {exc}") from None


def model_info(meta: dict, run: str | Path) -> dict:
    return {"run": str(run), "arch": meta.get("arch"), "input_size": meta.get("input_size"),
            "template": meta.get("template"), "step": meta.get("step"), "embedding_size": meta.get("embedding_size")}


# ----------------------------------------------------------------------------- embeddings

@dataclass
class Embedded:
    """Embeddings (N, D) in the order of the input files; rows of unusable images are NaN.
    ``groups`` (optional, one label per image, e.g. CFP's frontal / profile) split the
    alignment counts of ``report`` per group."""
    emb: np.ndarray
    ok: np.ndarray                                    # (N,) bool: has an embedding
    unreadable: list[str] = field(default_factory=list)
    no_face: list[str] = field(default_factory=list)  # no face found by either MTCNN pass: typical-position crop
    second_pass: list[str] = field(default_factory=list)  # found by the second, permissive MTCNN pass
    detected: int = 0                                 # landmarks from MTCNN (either pass)
    given: int = 0                                    # landmarks given (morphgen params, aligned crops)
    by_group: dict = field(default_factory=dict)

    def report(self) -> dict:
        out = {"images": int(len(self.ok)), "embedded": int(self.ok.sum()), "unreadable": self.unreadable,
               "no_face_center_crop": self.no_face, "landmarks_detected": self.detected,
               "landmarks_second_pass": len(self.second_pass), "landmarks_given": self.given}
        if self.by_group:
            out["by_group"] = self.by_group
        return out


ALIGNMENT_COUNTS = ("images", "detected_first_pass", "detected_second_pass", "no_face_typical_crop",
                    "landmarks_given", "resized_not_aligned", "unreadable")


def centre_crop_landmarks(img_hw: tuple[int, int], template: str, size: int, fraction: float) -> np.ndarray:
    """Pseudo-landmarks that make ``align_face`` cut the central square of side
    fraction * min(h, w): the template's points placed inside that square."""
    h, w = img_hw
    c = fraction * min(h, w)
    return (template_points(template, size) * (c / size) + np.array([(w - c) / 2, (h - c) / 2])).astype(np.float32)


def typical_positions(files: list[str], landmarks: np.ndarray, sizes: dict, groups: list) -> dict:
    """Per group: the median landmark position as a fraction of the image's width and
    height over the images where MTCNN found a face (at least 3), the crop used for the
    faces it missed. Datasets of loose face crops (CFP, LFW) frame faces alike, so this
    is a better guess than a fixed central square."""
    by: dict = {}
    for f, lm, g in zip(files, landmarks, groups):
        hw = sizes.get(f)
        if hw and np.isfinite(lm).all():
            by.setdefault(g, []).append(lm / np.array([hw[1], hw[0]], np.float32))
    return {g: np.median(np.stack(v), 0) for g, v in by.items() if len(v) >= 3}


def embed_imageset(model, meta: dict, iset: ImageSet, align: bool = True, flip: bool = False,
                   cache_dir: Path | None = None, fallback_crop: float = 1.0, batch_size: int = 64,
                   progress: bool = False, groups: list | None = None, workers: int | None = None) -> Embedded:
    """Embed every image of `iset` (in order). With `align`, images without landmarks get
    MTCNN's (two passes, see ``recognition.landmarks``; cached in `cache_dir`, detected
    by `workers` processes). Where neither pass finds a face, the face is cut at the
    typical landmark position of its group's detected images (``typical_positions``),
    or, with fewer than 3 of those, the central square of side `fallback_crop` x the
    shorter side; such files are listed in ``no_face``. Unreadable images get no
    embedding (NaN row, listed)."""
    from ..data import read_image
    from ..embed import embed_dataset

    size, tpl = int(meta["input_size"]), str(meta["template"])
    n = len(iset)
    groups = list(groups) if groups is not None else [""] * n
    given_mask = ~np.isnan(iset.landmarks).any(axis=(1, 2))
    found = find_landmarks(iset, cache_dir, detect=align, progress=progress, workers=workers) if n else iset
    pos = {f: i for i, f in enumerate(iset.files)}
    lms = np.repeat(NO_LANDMARKS[None], n, 0)
    ok = np.zeros(n, bool)
    for k, f in enumerate(found.files):
        ok[pos[f]] = True
        lms[pos[f]] = found.landmarks[k]
    no_face = list(found.no_face)[len(iset.no_face):] if align else []
    second = list(found.second_pass)[len(iset.second_pass):] if align else []
    typical = typical_positions(found.files, found.landmarks, found.sizes, [groups[pos[f]] for f in found.files])
    for f in no_face:
        i = pos[f]
        img = read_image(iset, i)
        if img is None:
            continue
        h, w = img.shape[:2]
        t = typical.get(groups[i])
        lms[i] = (t * np.array([w, h], np.float32) if t is not None
                  else centre_crop_landmarks((h, w), tpl, size, fallback_crop))
        ok[i] = True
    use = np.nonzero(ok)[0]
    sub = iset.take(use)
    sub.landmarks = lms[use]
    names = sorted(set(sub.identities) | {nm for s in sub.soft if s for nm in s["ids"]})
    ds = FaceDataset(sub, {nm: c for c, nm in enumerate(names)}, size, tpl, align=align, replace_unreadable=False)
    dim = int(meta.get("embedding_size") or getattr(model, "embedding_size", 0) or 0)
    emb = np.full((n, dim), np.nan, np.float32)
    if len(use):
        e = embed_dataset(model, ds, batch_size, flip, progress=progress)
        if emb.shape[1] != e.shape[1]:
            emb = np.full((n, e.shape[1]), np.nan, np.float32)
        emb[use] = e
    late = use[sorted(ds.unreadable)]  # given landmarks, so first read here: no embedding after all
    ok[late], emb[late] = False, np.nan
    unreadable = [f for i, f in enumerate(iset.files) if not ok[i]]
    by_group: dict = {}
    if len(set(groups)) > 1 or groups[:1] != [""]:
        nf, sp, bad = set(no_face), set(second), set(unreadable)
        for i, f in enumerate(iset.files):
            c = by_group.setdefault(str(groups[i]), dict.fromkeys(ALIGNMENT_COUNTS, 0))
            c["images"] += 1
            c["unreadable" if f in bad else "landmarks_given" if given_mask[i] else "resized_not_aligned" if not align
              else "no_face_typical_crop" if f in nf else "detected_second_pass" if f in sp
              else "detected_first_pass"] += 1
    given = int((given_mask & ok).sum())  # a given-landmark image that cannot be read counts as unreadable
    return Embedded(emb, ok, unreadable, no_face, second,
                    detected=int(ok.sum()) - given - len(no_face) if align else 0, given=given, by_group=by_group)


def folder_imageset(root: Path, files: list[str], identities: list[str] | None = None,
                    landmarks: np.ndarray | None = None) -> ImageSet:
    """An ImageSet of the given files (paths relative to `root`)."""
    n = len(files)
    lm = np.repeat(NO_LANDMARKS[None], n, 0) if landmarks is None else np.asarray(landmarks, np.float32).reshape(n, 5, 2)
    return ImageSet(Path(root), "folder", list(files), list(identities) if identities is not None else [""] * n,
                    lm, [None] * n)


# ----------------------------------------------------------------------------- pairs

@dataclass
class PairSet:
    """Pairs of image indices with labels, folds and bins (one bin label per pair)."""
    a: np.ndarray
    b: np.ndarray
    same: np.ndarray
    fold: np.ndarray
    bins: list
    identity_disjoint: bool = True
    n_folds: int = 0

    def __len__(self) -> int:
        return len(self.a)


def check_kinds(same: np.ndarray, what: str) -> None:
    """DataError unless `same` holds genuine and impostor pairs: with one kind only, every
    threshold below (or above) all scores is 100 % right and AUC is undefined."""
    same = np.asarray(same, bool)
    if same.all() or not same.any():
        raise DataError(f"{what} has only {'genuine' if same.all() else 'impostor'} pairs ({len(same)}): a "
                        "verification list needs both genuine and impostor pairs")


def gallery_probe_pairs(identity, gallery, probe_bin, link=None, folds: int = 10, per_fold: int = 300,
                        seed: int = 0) -> PairSet:
    """Seeded verification pairs of a gallery image and a probe image, LFW-style: up to
    `per_fold` genuine and as many impostor pairs per fold, spread evenly over the probe
    bins, with the same number of impostor as genuine pairs in every bin (so per-bin
    accuracies are balanced). A pair's gallery and probe must share `link` (e.g. the same
    light when binning by yaw). Folds are identity-disjoint (as LFW View 2) when there are
    at least 4 identities (folds reduced to identities // 2); otherwise pairs are dealt to
    folds at random. No pair repeats; with little data a fold simply gets fewer pairs.

    identity: (N,) labels; gallery: (N,) bool; probe_bin: (N,) bin label or None (not a
    probe); link: (N,) hashable or None."""
    identity = np.asarray(identity, dtype=object).astype(str)
    n = len(identity)
    gallery = np.asarray(gallery, bool)
    link = [0] * n if link is None else list(link)
    rng = np.random.default_rng(seed)
    bins = sorted({b for b in probe_bin if b is not None}, key=_bin_key)
    ids = sorted(set(identity[gallery].tolist()) | {identity[i] for i in range(n) if probe_bin[i] is not None})
    if len(ids) < 2 or not gallery.any() or not bins:
        return PairSet(*(np.zeros(0, np.int64) for _ in range(2)), np.zeros(0, bool), np.zeros(0, np.int64), [], True, 0)
    probes_by: dict = {}
    gal_by: dict = {}
    for i in range(n):
        if probe_bin[i] is not None:
            probes_by.setdefault((identity[i], probe_bin[i]), []).append(i)
        if gallery[i]:
            gal_by.setdefault((identity[i], link[i]), []).append(i)
    disjoint = len(ids) >= 4
    n_folds = max(1, min(folds, len(ids) // 2)) if disjoint else max(1, folds)
    perm = [ids[k] for k in rng.permutation(len(ids))]
    groups = [perm[f::n_folds] for f in range(n_folds)] if disjoint else [perm]
    quotas = [per_fold // len(bins) + (k < per_fold % len(bins)) for k in range(len(bins))]
    out_a, out_b, out_s, out_f, out_bin = [], [], [], [], []
    for g, fold_ids in enumerate(groups):
        scale = 1 if disjoint else n_folds
        for b, q in zip(bins, quotas):
            q *= scale
            if q == 0:
                continue
            gen = _sample_genuine(fold_ids, b, q, probes_by, gal_by, link, rng)
            imp = _sample_impostor(fold_ids, b, len(gen), probes_by, gal_by, identity, link, rng)
            gen = gen[:len(imp)]  # as many genuine as impostor pairs, even where impostors ran short
            for pairs, same in ((gen, True), (imp, False)):
                for a, p in pairs:
                    out_a.append(a), out_b.append(p), out_s.append(same), out_f.append(g), out_bin.append(b)
    a, b_, s = np.array(out_a, np.int64), np.array(out_b, np.int64), np.array(out_s, bool)
    f = np.array(out_f, np.int64)
    if not disjoint and len(a):  # deal the pooled pairs to folds, genuine and impostor alike
        f = np.empty(len(a), np.int64)
        for lab in (True, False):
            idx = np.nonzero(s == lab)[0]
            f[idx[rng.permutation(len(idx))]] = np.arange(len(idx)) % n_folds
    order = np.lexsort((~s, f))  # by fold, genuine first (like pairs.txt)
    used = len(np.unique(f))  # the folds that hold pairs (with few identities, fewer than asked)
    return PairSet(a[order], b_[order], s[order], f[order], [out_bin[k] for k in order], disjoint, used)


def _sample_genuine(fold_ids, b, q, probes_by, gal_by, link, rng) -> list[tuple[int, int]]:
    cand = [i for i in fold_ids if (i, b) in probes_by]
    got: dict = {}
    tries = 0
    while cand and len(got) < q and tries < 30 * q:
        tries += 1
        ident = cand[rng.integers(len(cand))]
        probes = probes_by[(ident, b)]
        p = probes[rng.integers(len(probes))]
        gals = [x for x in gal_by.get((ident, link[p]), ()) if x != p]
        if not gals:
            continue
        g = gals[rng.integers(len(gals))]
        got.setdefault((min(g, p), max(g, p)), (g, p))
    return list(got.values())


def _sample_impostor(fold_ids, b, q, probes_by, gal_by, identity, link, rng) -> list[tuple[int, int]]:
    probes = [p for i in fold_ids for p in probes_by.get((i, b), ())]
    got: dict = {}
    tries = 0
    while probes and len(got) < q and tries < 30 * q:
        tries += 1
        p = probes[rng.integers(len(probes))]
        others = [i for i in fold_ids if i != identity[p] and (i, link[p]) in gal_by]
        if not others:
            continue
        gals = gal_by[(others[rng.integers(len(others))], link[p])]
        g = gals[rng.integers(len(gals))]
        got.setdefault((min(g, p), max(g, p)), (g, p))
    return list(got.values())


def _bin_key(v):
    if isinstance(v, (tuple, list)):
        return tuple(float(x) for x in v)
    return (float(v),) if isinstance(v, (int, float, np.integer, np.floating)) else (float("inf"), str(v))


PAIRS_HEADER = "# morphgen pairs v1"


def write_pairs_file(path: Path, pairs: PairSet, files: list[str], info: dict) -> None:
    """``# morphgen pairs v1 {json info}`` then ``fold<TAB>same<TAB>bin(JSON)<TAB>gallery<TAB>probe``."""
    lines = [f"{PAIRS_HEADER} {json.dumps(info, sort_keys=True)}",
             "# fold\tsame\tbin\tgallery\tprobe"]
    for k in range(len(pairs)):
        lines.append(f"{pairs.fold[k]}\t{int(pairs.same[k])}\t{json.dumps(pairs.bins[k])}\t"
                     f"{files[pairs.a[k]]}\t{files[pairs.b[k]]}")
    Path(path).write_text("\n".join(lines) + "\n")


def read_pairs_file(path: Path, files: list[str]) -> tuple[PairSet, list[str], dict]:
    """Read a pairs file written by ``write_pairs_file`` against the current file list.
    Returns the pairs whose images are both present, the lines of the others, and the
    header info. A malformed line raises DataError naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise DataError(f"cannot read pairs file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise DataError(f"pairs file {path} is not text: pass the pairs file written by morphgen eval") from None
    lines = text.splitlines()
    if not lines or not lines[0].startswith(PAIRS_HEADER):
        raise DataError(f"{path}:1 is not a morphgen pairs file (it starts with {PAIRS_HEADER!r}); "
                        "write one with a first run without --pairs")
    try:
        info = json.loads(lines[0][len(PAIRS_HEADER):].strip() or "{}")
    except ValueError:
        info = {}
    pos = {f: i for i, f in enumerate(files)}
    a, b, s, f, bins, missing = [], [], [], [], [], []
    for ln, line in enumerate(lines[1:], 2):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        try:
            if len(parts) != 5:
                raise ValueError
            fold, same, bn = int(parts[0]), int(parts[1]), json.loads(parts[2])
            if same not in (0, 1):
                raise ValueError
        except ValueError:
            raise DataError(f"{path}:{ln} is malformed: expected fold<TAB>same(0/1)<TAB>bin<TAB>gallery<TAB>probe") from None
        if parts[3] not in pos or parts[4] not in pos:
            missing.append(f"{path.name}:{ln}")
            continue
        a.append(pos[parts[3]]), b.append(pos[parts[4]]), s.append(bool(same)), f.append(fold)
        bins.append(tuple(bn) if isinstance(bn, list) else bn)
    folds = sorted(set(f))
    return (PairSet(np.array(a, np.int64), np.array(b, np.int64), np.array(s, bool), np.array(f, np.int64), bins,
                    bool(info.get("identity_disjoint", True)), len(folds)), missing, info)


# ----------------------------------------------------------------------------- parsers

def parse_splits(spec: str, n_max: int = 10) -> list[int]:
    """'1-10', '1,3,5', '2' or '1-3,7' -> sorted split numbers in 1..n_max."""
    out: set[int] = set()
    try:
        for part in str(spec).split(","):
            part = part.strip()
            if not part:
                continue
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-"))
                out.update(range(lo, hi + 1))
            else:
                out.add(int(part))
    except ValueError:
        raise ConfigError(f"--splits {spec!r}: write a range or list like 1-10 or 1,3,5") from None
    if not out or min(out) < 1 or max(out) > n_max:
        raise ConfigError(f"--splits {spec!r}: splits are numbered 1..{n_max}")
    return sorted(out)


def prepare_out(out: str | Path) -> Path:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file: give a folder for the results")
    out.mkdir(parents=True, exist_ok=True)
    return out


def read_image_rgb(path: Path) -> np.ndarray | None:
    img = read_image_file(path)
    return None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


# ----------------------------------------------------------------------------- scored pairs

def score_pairs(emb: "Embedded", pairs: PairSet) -> tuple[np.ndarray, np.ndarray]:
    """(scores of the pairs whose two images have embeddings, mask of those pairs)."""
    ok = emb.ok[pairs.a] & emb.ok[pairs.b] if len(pairs) else np.zeros(0, bool)
    from .metrics import cosine_scores
    scores = cosine_scores(np.nan_to_num(emb.emb), pairs.a[ok], pairs.b[ok]) if ok.any() else np.zeros(0)
    return scores, ok


def pair_protocol_result(scores: np.ndarray, same: np.ndarray, folds: np.ndarray, bins: list) -> dict:
    """10-fold accuracy, AUC, TAR@FAR and accuracy/AUC per bin (each pair judged with its
    own fold's cross-validated threshold) of one scored pair list."""
    from . import metrics

    cv = metrics.kfold_accuracy(scores, same, folds)
    overall = metrics.verification_metrics(scores, same)
    per_bin = metrics.binned_accuracy(cv["correct"], scores, same, bins)
    return {"accuracy": {"mean": cv["accuracy"], "std": cv["std"], "cross_validated": cv["cross_validated"]},
            "folds": [{"fold": int(f) + 1, "accuracy": a, "threshold": t, "pairs": n}
                      for f, a, t, n in zip(cv["folds"], cv["fold_accuracies"], cv["fold_thresholds"], cv["fold_pairs"])],
            "auc": overall["auc"], "tar_at_far": overall["tar_at_far"],
            "pairs": overall["pairs"], "genuine": overall["genuine"], "bins": per_bin}
