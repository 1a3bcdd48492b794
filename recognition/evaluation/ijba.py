"""IJB-A 1:1 verification (template-to-template), Klare et al. 2015.

Layout: ``IJBA_DIR/IJB-A_11_sets/split{1..10}/verify_metadata_N.csv`` (a header naming
the 25 columns TEMPLATE_ID, SUBJECT_ID, FILE, MEDIA_ID, SIGHTING_ID, FRAME, FACE_X,
FACE_Y, FACE_WIDTH, FACE_HEIGHT, RIGHT_EYE_X, RIGHT_EYE_Y, LEFT_EYE_X, LEFT_EYE_Y,
NOSE_BASE_X, NOSE_BASE_Y, FACE_YAW, FOREHEAD_VISIBLE, EYES_VISIBLE, NOSE_MOUTH_VISIBLE,
INDOOR, GENDER, SKIN_TONE, AGE, FACIAL_HAIR; landmark cells may be empty) and
``verify_comparisons_N.csv`` (no header, ``templateA,templateB`` per line; a comparison is
genuine when the two templates' SUBJECT_IDs match). ``FILE`` (e.g. ``img/123.jpg``,
``frame/30000_00001.png``) is looked up under ``--images`` if given, else under
``IJBA_DIR/images/`` and then ``IJBA_DIR/``. ``IJBA_DIR`` may also be the
``IJB-A_11_sets`` folder itself.

Faces: the square around the FACE_X/Y/WIDTH/HEIGHT box (side = the longer box side) with
`margin` (fraction of the side on each border) is the region of a face. With alignment
(default) MTCNN runs on a wider window around the box and its five points are warped to
the model's template; where it finds no face and both eyes and the nose base are
annotated, those three points are fitted to the template's eyes and nose (eyes ordered by
image x, so the annotation's left/right convention does not matter); otherwise the
margin crop is resized to the model input. ``align=False`` always uses the margin crop.
Each distinct (FILE, box) is embedded once, across splits; MTCNN results are cached.

Template scores: (a) ``mean``: cosine of the L2-normalised means of the templates' image
embeddings; (b) ``softmax`` (Masi et al. 2016): the average over beta in {0, 1, ..., 20}
of the softmax(beta * s)-weighted mean of all pairwise image similarities s.

Reported per split and pooling: TAR at FAR 0.1 and 0.01 (and 0.001, usually unreliable
with IJB-A's ~11k impostor comparisons per split), AUC; then mean ± std (ddof=0) over
splits. Malformed metadata rows and comparison lines are skipped and listed with their
line numbers (a row is independent of the others, unlike LFW's fold structure); missing
images are listed; comparisons with a template that has no usable image are counted as
skipped, with the reason. A missing split folder or file, a header without the required
columns, or a split with no scorable comparison raises DataError.
"""
from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from morphgen.errors import DataError
from morphgen.image_files import read_image_file

from ..align import align_face, template_points, umeyama
from ..landmarks import CHUNK, POOL_MIN, CacheWriter, default_workers, read_cache, run_pool
from . import metrics
from .common import load_eval_model, model_info, parse_splits, prepare_out
from .protocols import Protocol
from .report import fmt, md_table, plot_roc, pm, write_json, write_markdown, write_roc_csv

COLUMNS = ("TEMPLATE_ID", "SUBJECT_ID", "FILE", "MEDIA_ID", "SIGHTING_ID", "FRAME", "FACE_X", "FACE_Y",
           "FACE_WIDTH", "FACE_HEIGHT", "RIGHT_EYE_X", "RIGHT_EYE_Y", "LEFT_EYE_X", "LEFT_EYE_Y", "NOSE_BASE_X",
           "NOSE_BASE_Y", "FACE_YAW", "FOREHEAD_VISIBLE", "EYES_VISIBLE", "NOSE_MOUTH_VISIBLE", "INDOOR", "GENDER",
           "SKIN_TONE", "AGE", "FACIAL_HAIR")
REQUIRED = ("TEMPLATE_ID", "SUBJECT_ID", "FILE", "FACE_X", "FACE_Y", "FACE_WIDTH", "FACE_HEIGHT")
POOLINGS = ("mean", "softmax")
BETAS = tuple(range(21))
FARS = (0.1, 0.01, 0.001)
DETECT_CONTEXT = 0.5   # MTCNN window: the box square with this margin on each side ...
DETECT_WINDOW = 144    # ... resized to this many pixels (the face box then spans about 72)


# ----------------------------------------------------------------------------- reading

@dataclass(frozen=True)
class Face:
    file: str
    box: tuple[float, float, float, float]       # x, y, w, h
    right_eye: tuple[float, float] | None = None
    left_eye: tuple[float, float] | None = None
    nose: tuple[float, float] | None = None

    def key(self) -> str:
        return f"{self.file}|{','.join(f'{v:g}' for v in self.box)}"


@dataclass
class Split:
    number: int
    faces: list[Face] = field(default_factory=list)          # metadata rows, in order
    template_of: list[int] = field(default_factory=list)     # per row
    subject: dict[int, int] = field(default_factory=dict)    # template -> subject
    comparisons: list[tuple[int, int, int]] = field(default_factory=list)  # (line, template A, template B)
    malformed: list[str] = field(default_factory=list)


def sets_dir(ijba_dir: Path) -> Path:
    ijba_dir = Path(ijba_dir)
    if not ijba_dir.is_dir():
        raise DataError(f"--ijba-dir {ijba_dir} does not exist: pass the IJB-A folder holding IJB-A_11_sets/")
    if (ijba_dir / "IJB-A_11_sets").is_dir():
        return ijba_dir / "IJB-A_11_sets"
    if any(ijba_dir.glob("split*")):
        return ijba_dir
    raise DataError(f"{ijba_dir} holds no IJB-A_11_sets/ folder (nor split1..split10): "
                    "pass the IJB-A folder with --ijba-dir")


# A coordinate beyond this many pixels is no photo's (a box of 1e300 px crashed OpenCV's warp).
MAX_COORD = 1e6


def _coord(text: str) -> float:
    """A pixel coordinate of the metadata; ValueError if not a number within +-MAX_COORD."""
    v = float(text)
    if not abs(v) <= MAX_COORD:  # NaN fails too
        raise ValueError(f"{text} is not a coordinate")
    return v


def _point(row: dict, x: str, y: str) -> tuple[float, float] | None:
    try:
        return (_coord(row[x]), _coord(row[y])) if row.get(x, "").strip() and row.get(y, "").strip() else None
    except ValueError:
        return None


def _whole(text: str) -> int:
    """A template or subject id (the files write them as 1 or 1.0); ValueError else."""
    v = float(text)
    if not (abs(v) < 2**53 and v == int(v)):
        raise ValueError(f"{text} is not a whole number")
    return int(v)


def read_split(sets: Path, n: int) -> Split:
    folder = sets / f"split{n}"
    meta, comp = folder / f"verify_metadata_{n}.csv", folder / f"verify_comparisons_{n}.csv"
    for p in (meta, comp):
        if not p.is_file():
            raise DataError(f"IJB-A split {n}: {p} does not exist (choose the splits present with --splits)")
    sp = Split(n)
    with open(meta, newline="", encoding="utf-8-sig", errors="replace") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise DataError(f"{meta} is empty: expected the IJB-A header and one row per face")
    header = [h.strip().upper() for h in rows[0]]
    lacking = [c for c in REQUIRED if c not in header]
    if lacking:
        raise DataError(f"{meta}:1: the header lacks {', '.join(lacking)}: expected the 25-column IJB-A header "
                        "(TEMPLATE_ID, SUBJECT_ID, FILE, ...)")
    for ln, cells in enumerate(rows[1:], 2):
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            sp.malformed.append(f"{meta.name}:{ln}: expected {len(header)} cells, found {len(cells)}")
            continue
        row = {h: c.strip() for h, c in zip(header, cells)}
        try:
            t, s = _whole(row["TEMPLATE_ID"]), _whole(row["SUBJECT_ID"])
            box = tuple(_coord(row[k]) for k in ("FACE_X", "FACE_Y", "FACE_WIDTH", "FACE_HEIGHT"))
            if not row["FILE"] or box[2] <= 0 or box[3] <= 0:
                raise ValueError
        except ValueError:
            sp.malformed.append(f"{meta.name}:{ln}: TEMPLATE_ID/SUBJECT_ID/FILE/FACE_* unreadable or empty box")
            continue
        if sp.subject.setdefault(t, s) != s:
            sp.malformed.append(f"{meta.name}:{ln}: template {t} already belongs to subject {sp.subject[t]}, not {s}")
            continue
        sp.faces.append(Face(row["FILE"], box, _point(row, "RIGHT_EYE_X", "RIGHT_EYE_Y"),
                             _point(row, "LEFT_EYE_X", "LEFT_EYE_Y"), _point(row, "NOSE_BASE_X", "NOSE_BASE_Y")))
        sp.template_of.append(t)
    with open(comp, newline="", encoding="utf-8-sig", errors="replace") as f:
        for ln, cells in enumerate(csv.reader(f), 1):
            if not any(c.strip() for c in cells):
                continue
            try:
                if len(cells) != 2:
                    raise ValueError
                a, b = (_whole(c) for c in cells)
            except ValueError:
                sp.malformed.append(f"{comp.name}:{ln}: expected 'templateA,templateB', found {','.join(cells)!r}")
                continue
            sp.comparisons.append((ln, a, b))
    return sp


# ----------------------------------------------------------------------------- pooling

def mean_pool_score(ea: np.ndarray, eb: np.ndarray) -> float:
    """Cosine of the L2-normalised mean embeddings of two templates (rows = images)."""
    a = metrics.l2_normalize(metrics.l2_normalize(ea).mean(0))
    b = metrics.l2_normalize(metrics.l2_normalize(eb).mean(0))
    return float(a @ b)


def softmax_pool_score(ea: np.ndarray, eb: np.ndarray, betas=BETAS) -> float:
    """Masi et al.: mean over beta of sum(s * softmax(beta * s)) over all image pairs s."""
    s = (metrics.l2_normalize(ea) @ metrics.l2_normalize(eb).T).reshape(-1)
    vals = []
    for beta in betas:
        w = np.exp(beta * (s - s.max()))
        vals.append(float((w * s).sum() / w.sum()))
    return float(np.mean(vals))


POOL_FUNCS = {"mean": mean_pool_score, "softmax": softmax_pool_score}


# ----------------------------------------------------------------------------- crops

def square_around(box, margin: float) -> tuple[float, float, float]:
    """(centre x, centre y, side) of the square around a box, `margin` x side on each border."""
    x, y, w, h = box
    return x + w / 2.0, y + h / 2.0, max(w, h) * (1.0 + 2.0 * margin)


def crop_square(img: np.ndarray, cx: float, cy: float, side: float, size: int) -> np.ndarray:
    s = size / side
    m = np.array([[s, 0, -s * (cx - side / 2)], [0, s, -s * (cy - side / 2)]], np.float32)
    return cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def three_point_align(img: np.ndarray, face: Face, size: int, template: str) -> np.ndarray | None:
    """Fit the annotated eyes and nose base to the template's eyes and nose tip."""
    if face.right_eye is None or face.left_eye is None or face.nose is None:
        return None
    eyes = sorted([face.right_eye, face.left_eye])          # image-left eye first (MTCNN order)
    src = np.array([eyes[0], eyes[1], face.nose], np.float32)
    if np.linalg.norm(src[0] - src[1]) < 1.0:
        return None
    dst = template_points(template, size)[:3]
    return cv2.warpAffine(img, umeyama(src, dst), (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


class FaceCrops(Dataset):
    """(uint8 (3, S, S) crop, 0) per face: MTCNN points, else annotated eyes + nose, else
    the margin crop (see the module notes)."""

    def __init__(self, paths: list[Path], faces: list[Face], landmarks: np.ndarray, size: int, template: str,
                 margin: float, align: bool):
        self.paths, self.faces, self.landmarks = paths, faces, landmarks
        self.size, self.template, self.margin, self.align = size, template, margin, align

    def __len__(self) -> int:
        return len(self.faces)

    def method(self, i: int) -> str:
        if not self.align:
            return "box"
        if not np.isnan(self.landmarks[i]).any():
            return "mtcnn"
        f = self.faces[i]
        return "metadata" if f.right_eye and f.left_eye and f.nose and \
            np.linalg.norm(np.subtract(f.right_eye, f.left_eye)) >= 1.0 else "box"

    def crop(self, img: np.ndarray, i: int) -> np.ndarray:
        method = self.method(i)
        if method == "mtcnn":
            return align_face(img, self.landmarks[i], self.size, self.template)
        if method == "metadata":
            return three_point_align(img, self.faces[i], self.size, self.template)
        return crop_square(img, *square_around(self.faces[i].box, self.margin), self.size)

    def __getitem__(self, i: int):
        img = read_image_file(self.paths[i])
        if img is None:  # checked before; a file that changed since gives a grey crop
            out = np.full((self.size, self.size, 3), 127, np.uint8)
        else:
            out = self.crop(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), i)
        return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1))), 0


def _face_entry(path: str, box: tuple[float, float, float, float], stamp: list, align: bool) -> dict:
    """The cache entry of one face of the metadata: the file's stamp, whether it decodes,
    and with `align` MTCNN's five points in image pixels (None without a face), found on
    the window around its box."""
    img = read_image_file(path)
    hit = {"stamp": stamp, "ok": img is not None}
    if img is not None and align:
        from ..detect import detect_faces

        cx, cy, side = square_around(box, DETECT_CONTEXT)
        win = DETECT_WINDOW  # the box spans half the window: look for faces of >= a quarter of it
        canvas = crop_square(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), cx, cy, side, win)
        res = detect_faces([canvas], min_face=win / 4)[0]
        if res is None:
            hit["lm"] = None
        else:
            pts = res[2] * (side / win) + np.array([cx - side / 2, cy - side / 2])
            hit["lm"] = np.round(pts, 2).tolist()
    return hit


def _detect(paths: list[Path], faces: list[Face], align: bool, cache_path: Path | None,
            progress: bool, workers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(readable (N,) bool, landmarks (N, 5, 2) in image pixels or NaN). Every face's image
    is decoded once; with `align`, MTCNN runs on the window around each box, in `workers`
    processes (default: one per core) where enough faces miss the cache. Cached by
    (FILE, box) and the file's size and mtime."""
    from morphgen.progress import progress_bar

    cache = read_cache(cache_path)
    n = len(faces)
    hits: dict[int, dict] = {}
    misses: list[tuple] = []  # (index, path, box, stamp, align): `_face_entry`'s arguments
    for i in range(n):
        st = paths[i].stat()
        stamp = [st.st_size, int(st.st_mtime)]
        hit = cache.get(faces[i].key())
        if hit is None or hit.get("stamp") != stamp or (align and hit.get("ok") and "lm" not in hit):
            misses.append((i, str(paths[i]), tuple(faces[i].box), stamp, align))
        else:
            hits[i] = hit
    if misses:
        workers = default_workers() if workers is None else max(1, int(workers))
        with CacheWriter(cache_path, cache) as writer, \
                progress_bar(total=len(misses), desc="IJB-A faces" + (" (MTCNN)" if align else ""), unit="img",
                             enabled=progress) as bar:

            def take(i: int, hit: dict) -> None:
                hits[i] = hit
                writer.put(faces[i].key(), hit)

            if workers > 1 and align and len(misses) >= POOL_MIN:
                run_pool(_face_entry, misses, min(workers, -(-len(misses) // CHUNK)), bar, take)
            else:
                for i, *args in misses:
                    take(i, _face_entry(*args))
                    bar.update(1)
    ok = np.zeros(n, bool)
    lms = np.full((n, 5, 2), np.nan, np.float32)
    for i, hit in hits.items():
        ok[i] = hit["ok"]
        if align and hit["ok"] and hit.get("lm") is not None:
            lms[i] = np.asarray(hit["lm"], np.float32)
    return ok, lms


# ----------------------------------------------------------------------------- evaluation

def evaluate_ijba(run: str | Path, ijba_dir: str | Path, out: str | Path, splits: str = "1-10",
                  images_dir: str | Path | None = None, align: bool = True, flip: bool = False, margin: float = 0.2,
                  batch_size: int = 64, cache_dir: str | Path | None = None, progress: bool = False,
                  workers: int | None = None) -> dict:
    """IJB-A 1:1 verification; writes result.json, summary.md, roc.png, roc.csv and
    scores.csv into `out` and returns the result dict. `workers` processes run MTCNN
    (default: one per core)."""
    from ..embed import embed_dataset

    sets = sets_dir(Path(ijba_dir))
    numbers = parse_splits(splits)
    data = [read_split(sets, n) for n in numbers]
    roots = [Path(images_dir)] if images_dir else [Path(ijba_dir) / "images", Path(ijba_dir)]
    if images_dir and not Path(images_dir).is_dir():
        raise DataError(f"--images {images_dir} does not exist: pass the folder that FILE paths (img/..., frame/...) "
                        "are relative to")
    model, meta = load_eval_model(run)
    out = prepare_out(out)
    size, tpl = int(meta["input_size"]), str(meta["template"])

    # every distinct face once, across splits
    index: dict[str, int] = {}
    faces: list[Face] = []
    paths: list[Path] = []
    missing_files: set[str] = set()
    found_path: dict[str, Path | None] = {}
    for sp in data:
        for fc in sp.faces:
            if fc.file not in found_path:
                found_path[fc.file] = next((r / fc.file for r in roots if (r / fc.file).is_file()), None)
            if found_path[fc.file] is None:
                missing_files.add(fc.file)
                continue
            if fc.key() not in index:
                index[fc.key()] = len(faces)
                faces.append(fc)
                paths.append(found_path[fc.file])
    if not faces:
        raise DataError(f"none of the {len(found_path)} images named in the IJB-A metadata exists under "
                        f"{' or '.join(str(r) for r in roots)} (e.g. {next(iter(found_path), '?')!r}): "
                        "pass the image folder with --images")
    cache = Path(cache_dir) if cache_dir else out / ".morphgen_cache"
    tag = hashlib.sha1(str(sets.resolve()).encode()).hexdigest()[:12]
    readable, lms = _detect(paths, faces, align, cache / f"ijba-landmarks-{tag}.json", progress, workers)
    use = np.nonzero(readable)[0]
    ds = FaceCrops([paths[i] for i in use], [faces[i] for i in use], lms[use], size, tpl, margin, align)
    methods = [ds.method(k) for k in range(len(ds))]
    emb_use = embed_dataset(model, ds, batch_size, flip, progress=progress) if len(use) else np.zeros((0, 1))
    emb = np.full((len(faces), emb_use.shape[1]), np.nan, np.float32)
    emb[use] = emb_use
    unreadable = sorted({faces[i].file for i in np.nonzero(~readable)[0]})

    per_split, curves, score_rows = [], [], []
    all_scores = {p: [] for p in POOLINGS}
    all_same = []
    for sp in data:
        members: dict[int, list[int]] = {}
        for fc, t in zip(sp.faces, sp.template_of):
            j = index.get(fc.key())
            if j is not None and readable[j]:
                members.setdefault(t, []).append(j)
        scores = {p: [] for p in POOLINGS}
        same, skipped = [], {"unknown_template": 0, "template_without_usable_image": 0}
        for ln, ta, tb in sp.comparisons:
            if ta not in sp.subject or tb not in sp.subject:
                skipped["unknown_template"] += 1
                continue
            if ta not in members or tb not in members:
                skipped["template_without_usable_image"] += 1
                continue
            ea, eb = emb[members[ta]], emb[members[tb]]
            sc = {p: POOL_FUNCS[p](ea, eb) for p in POOLINGS}
            for p in POOLINGS:
                scores[p].append(sc[p])
            same.append(sp.subject[ta] == sp.subject[tb])
            score_rows.append([sp.number, ln, ta, tb, int(same[-1])] + [f"{sc[p]:.6f}" for p in POOLINGS])
        same_a = np.array(same, bool)
        if len(same_a) == 0 or same_a.all() or not same_a.any():
            raise DataError(f"IJB-A split {sp.number}: no genuine and impostor comparisons to score "
                            f"({len(sp.comparisons)} comparisons, skipped {skipped}): check the split's files and images")
        entry = {"split": sp.number, "comparisons": len(sp.comparisons), "scored": int(len(same_a)),
                 "genuine": int(same_a.sum()), "impostor": int((~same_a).sum()), "skipped": skipped,
                 "templates": len(sp.subject), "templates_without_usable_image": len(set(sp.subject) - set(members)),
                 "malformed": sp.malformed}
        for p in POOLINGS:
            s = np.array(scores[p])
            fpr, tpr, thr = metrics.roc_curve(s, same_a)
            entry[p] = {"auc": metrics.auc(fpr, tpr),
                        "tar_at_far": {f"{f:g}": metrics.tar_at_far(s, same_a, f) for f in FARS}}
            curves.append({"label": f"split{sp.number} {p}", "fpr": fpr, "tpr": tpr, "thresholds": thr})
            all_scores[p].append(s)
        all_same.append(same_a)
        per_split.append(entry)

    summary = {}
    for p in POOLINGS:
        summary[p] = {"auc": metrics.mean_std([e[p]["auc"] for e in per_split])}
        for f in FARS:
            summary[p][f"tar@far={f:g}"] = metrics.mean_std([e[p]["tar_at_far"][f"{f:g}"]["tar"] for e in per_split])
    files_out = {"result": str(out / "result.json"), "summary": str(out / "summary.md"), "roc_png": str(out / "roc.png"),
                 "roc_csv": str(out / "roc.csv"), "scores_csv": str(out / "scores.csv")}
    result = {
        "protocol": "ijba-1:1",
        "model": model_info(meta, run),
        "inputs": {"ijba_dir": str(ijba_dir), "splits": numbers, "images": [str(r) for r in roots], "align": align,
                   "flip": flip, "margin": margin},
        "summary": summary,
        "splits": per_split,
        "faces": {"distinct": len(faces), "embedded": int(readable.sum()),
                  "crop_methods": {m: methods.count(m) for m in ("mtcnn", "metadata", "box")}},
        "missing_images": sorted(missing_files),
        "unreadable_images": unreadable,
        "malformed": [m for sp in data for m in sp.malformed],
        "files": files_out,
    }
    with open(out / "scores.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["split", "line", "template_a", "template_b", "same"] + [f"score_{p}" for p in POOLINGS])
        w.writerows(score_rows)
    write_roc_csv(out / "roc.csv", curves)
    same_all = np.concatenate(all_same)
    pooled = []
    for p in POOLINGS:
        fpr, tpr, thr = metrics.roc_curve(np.concatenate(all_scores[p]), same_all)
        pooled.append({"label": f"{p} pooling, all splits", "fpr": fpr, "tpr": tpr, "thresholds": thr, "lw": 2.0})
    thin = [dict(c, label=None, lw=0.6, alpha=0.35) for c in curves] if len(per_split) > 1 else []
    _plot(out / "roc.png", pooled, thin, f"IJB-A 1:1 ({len(per_split)} splits)")
    write_json(out / "result.json", result)
    _summary(out / "summary.md", result)
    return result


def _plot(path: Path, pooled: list[dict], thin: list[dict], title: str) -> None:
    curves = [dict(c, label=c["label"] or "_nolegend_") for c in thin] + pooled
    plot_roc(path, curves, title)


def _summary(path: Path, r: dict) -> None:
    m = r["model"]
    head = (f"- model: `{m['run']}` ({m['arch']}, {m['input_size']} px, step {m['step']})\n"
            f"- data: `{r['inputs']['ijba_dir']}`, splits {', '.join(map(str, r['inputs']['splits']))}; "
            f"crops: {r['faces']['crop_methods']}; flip {'on' if r['inputs']['flip'] else 'off'}\n"
            f"- {len(r['missing_images'])} missing images, {len(r['unreadable_images'])} unreadable, "
            f"{len(r['malformed'])} malformed lines skipped")
    rows = [[p, pm(r["summary"][p]["tar@far=0.1"]), pm(r["summary"][p]["tar@far=0.01"]),
             pm(r["summary"][p]["tar@far=0.001"]), pm(r["summary"][p]["auc"])] for p in POOLINGS]
    table = md_table(["pooling", "TAR@FAR=0.1", "TAR@FAR=0.01", "TAR@FAR=0.001 (few impostors)", "AUC"], rows)
    split_rows = [[e["split"], e["scored"], e["genuine"], sum(e["skipped"].values())]
                  + [fmt(e[p]["tar_at_far"][f]["tar"]) for p in POOLINGS for f in ("0.1", "0.01")] for e in r["splits"]]
    splits = md_table(["split", "scored", "genuine", "skipped"] + [f"{p} TAR@{f}" for p in POOLINGS for f in ("0.1", "0.01")],
                      split_rows)
    sections = [("", head), ("TAR at FAR (mean ± std over splits)", table), ("Splits", splits)]
    if r["malformed"] or r["missing_images"]:
        lines = [f"- malformed: {x}" for x in r["malformed"][:20]]
        lines += [f"- missing image: {x}" for x in r["missing_images"][:20]]
        sections.append(("Skipped input", "\n".join(lines)))
    write_markdown(path, "IJB-A 1:1 verification", sections)


# ----------------------------------------------------------------------------- experiment protocol

def _run(model_run, out, o: dict, ctx) -> dict:
    return evaluate_ijba(model_run, o["ijba_dir"], out, splits=str(o["splits"]), images_dir=o["images"],
                         align=o["align"], flip=o["flip"], batch_size=ctx.batch_size, cache_dir=ctx.cache_dir,
                         progress=ctx.progress, workers=ctx.workers)


def _columns(o: dict, label: str, r: dict | None) -> list:
    from .protocols import Column

    title = f"{label} (TAR@FAR=0.1 / 0.01)"
    if r is None:
        return [Column("", title)]
    s = r["summary"][next(iter(r["summary"]))]
    t1, t2 = s.get("tar@far=0.1", {}), s.get("tar@far=0.01", {})
    return [Column("", title, f"{pm(t1, 3)} / {pm(t2, 3)}", f"(TAR@0.01 {fmt(t2.get('mean'), 3)})",
                   {"tar_far0.1_mean": t1.get("mean"), "tar_far0.1_std": t1.get("std"),
                    "tar_far0.01_mean": t2.get("mean"), "tar_far0.01_std": t2.get("std"),
                    "auc_mean": s.get("auc", {}).get("mean")})]


def _note(o: dict, label: str, r: dict | None) -> str:
    return f"{label}: IJB-A 1:1 template verification, TAR@FAR mean ± std over splits {o['splits']}."


def _check(o: dict, where: str) -> None:
    parse_splits(str(o["splits"]))


PROTOCOL = Protocol(
    name="ijba", summary="IJB-A 1:1 template verification (TAR@FAR)",
    defaults={"ijba_dir": None, "splits": "1-10", "images": None, "flip": False, "align": True},
    run=_run, note=_note, columns=_columns, paths=("ijba_dir", "images"), required=("ijba_dir",), check=_check)
