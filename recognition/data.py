"""Face image sets for training and embedding: readers, subsets, landmarks, alignment,
augmentation, and the P x K batch sampler.

Landmarks for images that have none come from ``recognition.landmarks`` (MTCNN).
Readers give an ``ImageSet`` (file list, identity per image, 5-point landmarks or NaN,
soft labels) for
- ``morphgen``: the layout of :mod:`morphgen.layout` (``DIR/manifest.json``,
  ``DIR/images/<id:06d>/<id:06d>_<n:04d>.png`` and per-image parameters in
  ``DIR/params/chunk_*.parquet`` or ``.jsonl``, read by :func:`morphgen.layout.params_rows`:
  image, identity, sample, landmarks5, soft_label);
  landmarks come from the renderer; images referenced as ``wds/chunk_N.tar:member`` (the
  WebDataset container) are read from the tar;
- ``folder``: one sub-folder per identity, any image format, detected by content
  (CASIA-WebFace, LFW, ORL ``sN/M.pgm``, extension-less files); landmarks from MTCNN;
- ``recordio``: insightface ``train.rec``/``train.idx``/``property``, already aligned to
  the 112x112 ArcFace template.
Unreadable files, images without a detected face and identities with too few images are
skipped and counted in ``ImageSet.report``; they never stop a run.
"""
from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from morphgen.errors import ConfigError, DataError, MorphgenError
from morphgen.image_files import decode_image, read_image_file
from morphgen.layout import (IMAGE_NAME, IMAGES_DIR, TarMembers, looks_like_dataset, params_files, params_rows,
                             split_tar_ref, warn_if_unfinished)

from .align import align_face, resize_face, template_points

FORMATS = ("auto", "morphgen", "folder", "recordio")
# An undecodable file is counted (ImageSet.report) or replaced with a one-line warning
# (FaceDataset): OpenCV's own "[ WARN:0@...] imread_(...)" lines would only interleave
# with the progress output, once per file.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
NO_LANDMARKS = np.full((5, 2), np.nan, np.float32)


@dataclass
class ImageSet:
    """Images of one data source. ``files`` are paths relative to ``root`` (record keys
    for RecordIO); ``identities`` name each image's identity; ``landmarks`` (N, 5, 2) are
    pixel coordinates (NaN = unknown); ``soft`` holds, per image, None or
    ``{"ids": [identity names], "weights": [...]}`` (identity mixup)."""

    root: Path
    kind: str
    files: list[str]
    identities: list[str]
    landmarks: np.ndarray
    soft: list[dict | None]
    report: dict[str, int] = field(default_factory=dict)
    reader: object | None = None          # RecordReader for recordio
    no_face: list[str] = field(default_factory=list)   # files where MTCNN found no face
    second_pass: list[str] = field(default_factory=list)  # files whose face only the second MTCNN pass found
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # (h, w) of files the detector decoded
    not_images: list[str] = field(default_factory=list)  # files of a folder that hold no image (counted too)

    def __len__(self) -> int:
        return len(self.files)

    def take(self, idx) -> "ImageSet":
        idx = np.asarray(idx, np.int64)
        return replace(self, files=[self.files[i] for i in idx], identities=[self.identities[i] for i in idx],
                       landmarks=self.landmarks[idx], soft=[self.soft[i] for i in idx], report=dict(self.report))

    def identity_names(self) -> list[str]:
        return sorted(set(self.identities), key=natural_key)

    def count(self, key: str, n: int = 1) -> None:
        if n:
            self.report[key] = self.report.get(key, 0) + n

    def describe(self) -> str:
        skipped = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in self.report.items() if v)
        return (f"{len(self)} images of {len(set(self.identities))} identities ({self.kind}, {self.root})"
                + (f"; skipped {skipped}" if skipped else ""))


def natural_key(s: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


# ----------------------------------------------------------------------------- readers

def detect_format(root: Path) -> str:
    root = Path(root)
    if root.is_file():
        raise DataError(f"--data {root} is a file: give the folder of a dataset (morphgen, one sub-folder per "
                        "identity, or RecordIO)")
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist: check --data")
    if (root / "train.rec").is_file() and (root / "train.idx").is_file():
        return "recordio"
    if looks_like_dataset(root):
        return "morphgen"
    return "folder"


def load_imageset(root: Path, fmt: str = "auto") -> ImageSet:
    """Read an image set (without detecting faces; see ``find_landmarks``)."""
    root = Path(root)
    if fmt not in FORMATS:
        raise ConfigError(f"unknown data format {fmt!r}: use one of {', '.join(FORMATS)}")
    fmt = detect_format(root) if fmt == "auto" else fmt
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist: check the path")
    iset = {"morphgen": read_morphgen, "folder": read_folder, "recordio": read_recordio}[fmt](root)
    if len(iset) == 0:
        skipped = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in iset.report.items() if v)
        raise DataError(f"no usable images in {root} (read as {fmt}{'; skipped ' + skipped if skipped else ''}): "
                        "check the folder and --data-format")
    return iset


def read_morphgen(root: Path) -> ImageSet:
    """A morphgen dataset folder: per-image rows of its params files; without params,
    the ``images/<id>/<id>_<n>.png`` tree (then landmarks are unknown)."""
    warn_if_unfinished(root)
    files, ids, lms, soft = [], [], [], []
    iset = ImageSet(root, "morphgen", files, ids, np.zeros((0, 5, 2), np.float32), soft, reader=TarMembers(root))
    for where, row in params_rows(root, columns=("image", "identity", "landmarks5", "soft_label")):
        try:
            rel, ident = str(row["image"]), str(int(row["identity"]))
        except (ValueError, KeyError, TypeError):
            raise DataError(f"{where} is not a morphgen params row (needs \"image\" and \"identity\"): "
                            "regenerate the dataset") from None
        if not source_file(iset, rel).is_file():
            iset.count("missing_files")
            continue
        files.append(rel)
        ids.append(ident)
        lms.append(_row_landmarks(row.get("landmarks5"), where, rel))
        soft.append(_row_soft_label(row.get("soft_label"), where, rel))
    if not params_files(root) and (root / IMAGES_DIR).is_dir():
        for d in sorted((root / IMAGES_DIR).iterdir()):
            if not d.is_dir():
                continue
            for f in sorted(d.iterdir()):
                m = IMAGE_NAME.match(f.name)
                if m:  # other suffixes (``_depth.png`` ...) are extra modalities
                    files.append(f"{IMAGES_DIR}/{d.name}/{f.name}")
                    ids.append(str(int(m.group(1))))
                    lms.append(NO_LANDMARKS)
                    soft.append(None)
    iset.landmarks = np.asarray(lms, np.float32).reshape(-1, 5, 2)
    return iset


def _row_landmarks(value, where: str, rel: str) -> np.ndarray:
    """A params row's landmarks5 as (5, 2), or NaN when it has none; a DataError naming
    the row otherwise (a reshape error deep in the reader says nothing of the file)."""
    if value is None:
        return NO_LANDMARKS
    try:
        return np.asarray(value, np.float32).reshape(5, 2)
    except (ValueError, TypeError):
        raise DataError(f"{where} ({rel}): landmarks5 must be 5 [x, y] points, found {str(value)[:60]}: "
                        "regenerate the dataset") from None


def _row_soft_label(value, where: str, rel: str) -> dict | None:
    """A params row's soft_label as {"ids": [names], "weights": [floats]} of equal length,
    or None; a DataError naming the row otherwise."""
    if not value:
        return None
    try:
        sl = {"ids": [str(int(i)) for i in value["ids"]], "weights": [float(w) for w in value["weights"]]}
        if len(sl["ids"]) != len(sl["weights"]):
            raise ValueError
        return sl
    except (ValueError, KeyError, TypeError):
        raise DataError(f"{where} ({rel}): soft_label must be {{\"ids\": [identities], \"weights\": [numbers]}} of "
                        f"equal length, found {str(value)[:60]}: regenerate the dataset") from None


def read_folder(root: Path) -> ImageSet:
    """One sub-folder per identity (identity = first path component); files directly in
    ``root`` get identity "" (fine for ``embed``, not for training). Files are recognised
    by content (``cv2.haveImageReader``); others are counted as ``not_images``."""
    files, ids = [], []
    iset = ImageSet(root, "folder", files, ids, np.zeros((0, 5, 2), np.float32), [])
    seen = {os.path.realpath(root)}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):  # an identity folder may be a link
        kept = []
        for d in sorted(d for d in dirnames if not d.startswith(".")):
            real = os.path.realpath(os.path.join(dirpath, d))
            if real not in seen:  # (a link back up the tree would loop)
                seen.add(real)
                kept.append(d)
        dirnames[:] = kept
        for name in sorted(filenames, key=natural_key):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if not cv2.haveImageReader(str(path)):
                iset.count("not_images")
                iset.not_images.append(rel)
                continue
            files.append(rel)
            ids.append(rel.split("/")[0] if "/" in rel else "")
    iset.landmarks = np.repeat(NO_LANDMARKS[None], len(files), 0)
    iset.soft = [None] * len(files)
    return iset


def read_recordio(root: Path) -> ImageSet:
    from .recordio import scan_recordio
    reader, keys, labels, size = scan_recordio(root)
    h = size[0] if size else 112
    lm = template_points("arcface", h)  # records are aligned crops on the ArcFace template
    return ImageSet(root, "recordio", [str(k) for k in keys], [str(int(v)) for v in labels],
                    np.repeat(lm[None], len(keys), 0).astype(np.float32), [None] * len(keys), reader=reader)


def source_file(iset: ImageSet, rel: str) -> Path:
    """The file on disk that holds image `rel` (the tar for ``x.tar:member`` references,
    the whole file for an in-memory set: an insightface .bin)."""
    if iset.kind == "memory":  # its keys are no files: `bin/0` did not exist, every image was dropped
        return Path(iset.root)
    tar = split_tar_ref(rel)
    return iset.root / (tar[0] if tar else rel)


def read_image(iset: ImageSet, i: int) -> np.ndarray | None:
    """RGB uint8 image i of the set, or None when it cannot be decoded."""
    return decode_ref(iset.root, iset.kind, iset.reader, iset.files[i])


def decode_ref(root: Path, kind: str, reader, rel: str) -> np.ndarray | None:
    """RGB uint8 image `rel` of a source (a file under `root`, a ``shard.tar:member``, a
    RecordIO key, or a key of an in-memory ``reader`` for kind "memory"), or None."""
    if kind in ("recordio", "memory") or split_tar_ref(rel):
        try:
            data = (reader.labels_and_image(int(rel))[1] if kind == "recordio" else reader.read(rel))
        except DataError:
            if kind != "recordio":  # a shard that cannot be read: said as such, not as one image per member
                raise
            data = None
        img = decode_image(data)
    else:
        img = read_image_file(Path(root) / rel)
    return None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


# ----------------------------------------------------------------------------- selection

def identity_selector(spec, where: str):
    """Parse an identity selector: None / "all", a list of names, "first:N" or "last:N"."""
    if spec is None or spec == "all":
        return None
    if isinstance(spec, list):
        return ("names", [str(x) for x in spec])
    m = re.fullmatch(r"\s*(first|last)\s*:\s*(\d+)\s*", str(spec))
    if not m or int(m.group(2)) < 1:
        raise ConfigError(f"{where} {spec!r}: give a list of identity names, 'first:N' or 'last:N'")
    return (m.group(1), int(m.group(2)))


def select_identities(names: list[str], spec, where: str = "identities") -> set[str]:
    """The identity names a selector keeps (natural sort order for first/last)."""
    sel = identity_selector(spec, where)
    uniq = sorted(set(names), key=natural_key)
    if sel is None:
        return set(uniq)
    kind, arg = sel
    if kind == "names":
        missing = [n for n in arg if n not in set(uniq)]
        if missing:
            raise DataError(f"{where}: no identity {missing[0]!r} in the data ({len(missing)} of {len(arg)} missing)")
        return set(arg)
    if arg > len(uniq):
        raise DataError(f"{where}: {kind}:{arg} but the data has only {len(uniq)} identities")
    return set(uniq[:arg] if kind == "first" else uniq[-arg:])


def named_by_file(iset: ImageSet) -> ImageSet:
    """`iset` with each image beside the identity folders (identity "") named by its file,
    up to the first dot: a flat folder of files named <identity>.<anything> (Yale), as
    identity selectors and real-pair protocols read it."""
    iset.identities = [n if n else Path(f).name.split(".")[0] for f, n in zip(iset.files, iset.identities)]
    return iset


def check_selector_on(root: Path, fmt: str, spec, where: str, least: int = 1) -> None:
    """ConfigError, before any work, when selector `spec` does not fit the identities of
    the data at `root` (a sub-folder per identity, or files named <identity>.<anything>):
    an experiment found out at that cell, after every render and earlier cell."""
    try:
        keep = select_identities(named_by_file(load_imageset(Path(root), fmt)).identities, spec, where)
    except DataError as exc:
        raise ConfigError(str(exc)) from None
    if len(keep) < least:
        raise ConfigError(f"{where}: {spec!r} keeps {len(keep)} identity of {root}; this needs {least} or more")


def drop_small_identities(iset: ImageSet, min_images: int) -> ImageSet:
    """Remove identities with fewer than `min_images` images (``report["small_identities"]``)."""
    names, counts = np.unique(np.asarray(iset.identities, dtype=object).astype(str), return_counts=True)
    small = set(names[counts < min_images])
    if not small:
        return iset
    out = iset.take([i for i, n in enumerate(iset.identities) if n not in small])
    out.count("small_identities", len(small))
    out.count("images_of_small_identities", int(counts[counts < min_images].sum()))
    return out


def make_subset(iset: ImageSet, n_images: int | None = None, n_ids: int | None = None,
                per_id: int | None = None, seed: int = 0) -> ImageSet:
    """Seeded subset: `n_images` random images, or `n_ids` random identities (all their
    images, or `per_id` random images each; identities with fewer are dropped and counted)."""
    rng = np.random.default_rng(seed)
    ids = np.asarray(iset.identities, dtype=object).astype(str)
    if n_images is not None:
        if n_ids is not None or per_id is not None:
            raise ConfigError("give either --subset-images or --subset-ids/--subset-per-id, not both")
        pick = np.sort(rng.choice(len(iset), min(n_images, len(iset)), replace=False))
        return iset.take(pick)
    if n_ids is None and per_id is None:
        return iset
    by_id: dict[str, list[int]] = {}
    for i, n in enumerate(ids):
        by_id.setdefault(n, []).append(i)
    names = sorted(by_id, key=natural_key)
    dropped = 0
    if per_id is not None:
        dropped = sum(len(by_id[n]) < per_id for n in names)
        names = [n for n in names if len(by_id[n]) >= per_id]
    if n_ids is not None:
        if n_ids > len(names):
            raise DataError(f"asked for {n_ids} identities but only {len(names)} have enough images: lower --subset-ids")
        names = [names[j] for j in np.sort(rng.choice(len(names), n_ids, replace=False))]
    pick = []
    for n in names:
        idx = by_id[n]
        pick += idx if per_id is None else sorted(rng.choice(idx, per_id, replace=False).tolist())
    out = iset.take(pick)
    out.count("small_identities", dropped)
    return out


def split_identities(iset: ImageSet, n_val: int, seed: int = 0) -> tuple[ImageSet, ImageSet | None]:
    """Hold out `n_val` random identities (all their images) for verification."""
    if n_val <= 0:
        return iset, None
    names = iset.identity_names()
    if n_val >= len(names):
        raise ConfigError(f"--val-ids {n_val} leaves no training identities (the data has {len(names)})")
    val = set(np.random.default_rng(seed + 7919).choice(names, n_val, replace=False).tolist())
    is_val = np.array([n in val for n in iset.identities])
    # a mixup image whose partner is held out would leak that identity into training
    leak = np.array([bool(s) and not is_val[i] and any(n in val for n in s["ids"]) for i, s in enumerate(iset.soft)])
    train = iset.take(np.nonzero(~is_val & ~leak)[0])
    train.count("mixup_images_with_held_out_partner", int(leak.sum()))
    return train, iset.take(np.nonzero(is_val)[0])


def write_list(iset: ImageSet, path: Path) -> None:
    """The set as a list file: a header naming root and format, then ``path<TAB>identity``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"# morphgen image list: root={Path(iset.root).resolve()} format={iset.kind}"]
    lines += [f"{f}\t{n}" for f, n in zip(iset.files, iset.identities)]
    path.write_text("\n".join(lines) + "\n")


def select_list(iset: ImageSet, path: Path) -> ImageSet:
    """Keep the images named in a list file (from ``write_list``), in its order, with the
    identities it gives; entries absent from the data are counted as ``missing_files``."""
    pos = {f: i for i, f in enumerate(iset.files)}
    pick, names, missing = [], [], 0
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise DataError(f"cannot read list file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise DataError(f"list file {path} is not text: give one image path (and label) per line") from None
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        rel, _, name = line.partition("\t")
        name = name.strip()  # "Ann " beside "Ann" was a class of its own
        if rel in pos:
            pick.append(pos[rel])
            names.append(name or iset.identities[pos[rel]])
        else:
            missing += 1
    if not pick:  # else the trainer's "no identity with 2+ images" would hide that the list is the problem
        found = (f"none of its {missing} line{'s' if missing > 1 else ''} names a file there" if missing
                 else "it holds no image line")
        raise DataError(f"--list {path} matched no image under --data {iset.root}: {found}; give paths relative to "
                        "--data, one per line (as in a run's train_list.tsv)")
    out = iset.take(pick)
    out.identities = names
    out.count("missing_files", missing)
    return out


# ----------------------------------------------------------------------------- pixels

@dataclass
class Augment:
    """Per-image augmentation probabilities (all 0 = the paper-faithful recipe)."""
    flip: float = 0.0
    crop: float = 0.0      # random scale (0.9-1.1) and shift (+-6 % of the size) of the crop
    color: float = 0.0     # brightness / contrast / saturation jitter
    blur: float = 0.0      # Gaussian blur, sigma 0.5-1.5 px
    noise: float = 0.0     # Gaussian noise, sigma 2-8 grey levels

    @classmethod
    def preset(cls, name: str) -> "Augment":
        presets = {"none": cls(), "standard": cls(0.5, 0.5, 0.3, 0.2, 0.2), "strong": cls(0.5, 0.8, 0.6, 0.4, 0.4)}
        if name not in presets:
            raise ConfigError(f"unknown augmentation preset {name!r}: use one of {', '.join(presets)}")
        return presets[name]

    def active(self) -> bool:
        return any(v > 0 for v in (self.flip, self.crop, self.color, self.blur, self.noise))


def apply_augment(img: np.ndarray, aug: Augment, rng: np.random.Generator) -> np.ndarray:
    """Photometric augmentation and flip of an aligned RGB uint8 crop."""
    if aug.flip and rng.random() < aug.flip:
        img = img[:, ::-1]
    x = None
    if aug.color and rng.random() < aug.color:
        x = img.astype(np.float32)
        grey = x.mean(2, keepdims=True)
        x = grey + (x - grey) * rng.uniform(0.6, 1.4)                    # saturation
        x = (x - x.mean()) * rng.uniform(0.7, 1.3) + x.mean()           # contrast
        x = x * rng.uniform(0.7, 1.3)                                    # brightness
    if aug.blur and rng.random() < aug.blur:
        x = cv2.GaussianBlur(img.astype(np.float32) if x is None else x, (0, 0), rng.uniform(0.5, 1.5))
    if aug.noise and rng.random() < aug.noise:
        x = img.astype(np.float32) if x is None else x
        x = x + rng.normal(0, rng.uniform(2, 8), x.shape).astype(np.float32)
    if x is not None:
        img = np.clip(x, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img)


def augment_batch(x: torch.Tensor, aug: Augment, gen: torch.Generator) -> torch.Tensor:
    """`apply_augment` for a batch on its device: x (B, C, S, S) float in grey levels.

    Same kinds and ranges; every random number is drawn for every image whether used or
    not, so a batch's result depends only on the generator's seed."""
    b, dev = x.shape[0], x.device

    def u(lo: float, hi: float) -> torch.Tensor:
        return (lo + (hi - lo) * torch.rand(b, generator=gen, device=dev)).view(b, 1, 1, 1)

    def hit(p: float) -> torch.Tensor:
        return (torch.rand(b, generator=gen, device=dev) < p).view(b, 1, 1, 1)

    flip, color, blur, noise = hit(aug.flip), hit(aug.color), hit(aug.blur), hit(aug.noise)
    sat, con, bri, sigma, nsd = u(0.6, 1.4), u(0.7, 1.3), u(0.7, 1.3), u(0.5, 1.5), u(2.0, 8.0)
    eps = torch.randn(x.shape, generator=gen, device=dev)
    if aug.flip:
        x = torch.where(flip, x.flip(-1), x)
    if aug.color:
        grey = x.mean(1, keepdim=True)
        y = grey + (x - grey) * sat
        m = y.mean((1, 2, 3), keepdim=True)
        x = torch.where(color, ((y - m) * con + m) * bri, x)
    if aug.blur:  # separable Gaussian per image (grouped convolution), reflected borders as cv2
        r = 4
        t = torch.arange(-r, r + 1, device=dev, dtype=x.dtype)
        k = torch.exp(-0.5 * (t.view(1, -1) / sigma.view(b, 1)) ** 2)
        k = (k / k.sum(1, keepdim=True)).repeat_interleave(x.shape[1], 0)  # (B*C, 2r+1)
        y = x.reshape(1, -1, *x.shape[2:])
        y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="reflect"), k[:, None, None, :], groups=k.shape[0])
        y = F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), k[:, None, :, None], groups=k.shape[0])
        x = torch.where(blur, y.reshape(x.shape), x)
    if aug.noise:
        x = torch.where(noise, x + eps * nsd, x)
    return x


class FaceDataset(Dataset):
    """Aligned crops of an ImageSet as (uint8 (3, S, S) tensor, class, soft ids (2,),
    soft weights (2,)). `classes` maps identity names to class indices (offset added for
    appended class spaces). Unreadable files are dropped before (``find_landmarks``); one
    that fails to decode later (changed since, given landmarks so never read, or a RecordIO
    record) is, for training, replaced by another image of the same identity, with a
    warning, and when none of them decodes it is a DataError -- never a black image that
    would train as a face. With ``replace_unreadable=False`` (evaluation: a sibling's
    embedding would score as the image's) it is a blank image instead, its index kept in
    ``unreadable`` for the caller to drop (read it in this process: no loader workers)."""

    def __init__(self, iset: ImageSet, classes: dict[str, int], size: int, template: str,
                 align: bool = True, augment: Augment | None = None, replace_unreadable: bool = True):
        self.iset, self.size, self.template, self.align = iset, size, template, align
        self.replace_unreadable, self.unreadable = replace_unreadable, set()
        self.augment = augment or Augment()
        self.labels = np.array([classes[n] for n in iset.identities], np.int64)
        self.soft_ids = np.full((len(iset), 2), -1, np.int64)
        self.soft_w = np.zeros((len(iset), 2), np.float32)
        self.soft_ids[:, 0], self.soft_w[:, 0] = self.labels, 1.0
        for i, s in enumerate(iset.soft):
            if s:
                for j, (n, w) in enumerate(zip(s["ids"][:2], s["weights"][:2])):
                    self.soft_ids[i, j], self.soft_w[i, j] = classes[n], w
        self._rng = None
        self._by_label: dict[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.iset)

    def rng(self) -> np.random.Generator:
        """The augmentation stream of an item read by a bare index (one per process, from
        torch's seed); training reads (index, key) items instead (:class:`AugmentKeys`)."""
        if self._rng is None:
            self._rng = np.random.default_rng(torch.initial_seed() % 2**63)
        return self._rng

    def crop(self, i: int, rng: np.random.Generator | None = None) -> np.ndarray | None:
        img = read_image(self.iset, i)
        if img is None:
            return None
        rng = rng or self.rng()
        lm = self.iset.landmarks[i]
        if not self.align or np.isnan(lm).any():
            out = resize_face(img, self.size)
            if self.augment.crop and rng.random() < self.augment.crop:
                lm = template_points(self.template, self.size)
                out = align_face(out, lm, self.size, self.template, self._jitter(rng))
            return out
        jitter = self._jitter(rng) if self.augment.crop and rng.random() < self.augment.crop else None
        return align_face(img, lm, self.size, self.template, jitter)

    def _jitter(self, rng: np.random.Generator) -> np.ndarray:
        return np.array([rng.uniform(0.9, 1.1), *rng.uniform(-0.06, 0.06, 2) * self.size], np.float32)

    def __getitem__(self, item):
        """Item `item`: an index, or (index, key) where `key` seeds its augmentation."""
        i, key = item if isinstance(item, tuple) else (item, None)
        rng = np.random.default_rng(list(key)) if key is not None else self.rng()
        img = self.crop(i, rng)
        if img is None and not self.replace_unreadable:
            self.unreadable.add(i)
            img = np.zeros((self.size, self.size, 3), np.uint8)
        if img is None:
            warnings.warn(f"cannot decode {self.iset.root / self.iset.files[i]}: using another image of its identity")
            if self._by_label is None:
                self._by_label = {int(c): np.nonzero(self.labels == c)[0] for c in np.unique(self.labels)}
            for j in self._by_label[int(self.labels[i])]:
                img = self.crop(int(j), rng) if j != i else None
                if img is not None:
                    break
            if img is None:
                raise DataError(f"no image of identity {self.iset.identities[i]!r} in {self.iset.root} can be "
                                "decoded: check or replace its files")
        if self.augment.active():
            img = apply_augment(img, self.augment, rng)
        x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        return x, int(self.labels[i]), torch.from_numpy(self.soft_ids[i]), torch.from_numpy(self.soft_w[i])


def to_input(x: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, S, S) -> float network input, (pixel - 127.5) / 128; channels-last on
    CUDA, the layout `recognition.models.to_device` gives the networks there."""
    y = (x.float() - 127.5) / 128.0
    return y.contiguous(memory_format=torch.channels_last) if y.is_cuda else y


def worker_init(_worker_id: int) -> None:
    """One torch thread per loader worker: the trainer owns the cores. OpenCV's thread
    count must not be changed inside a forked worker (it can deadlock on the parent's
    pool): the parent sets it to 1 before starting workers (see ``single_threaded_cv2``).
    numpy's BLAS gets one thread too (online synthesis decodes meshes in the workers)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    torch.set_num_threads(1)


def worker_errors(batches: Iterable) -> Iterator:
    """The batches of a DataLoader, a morphgen error raised in one of its worker processes
    re-raised with its own one-line message: torch wraps it as "Caught DataError in
    DataLoader worker process 0. Original Traceback ...", which the CLI would print whole."""
    try:
        yield from batches
    except MorphgenError as exc:
        lines = str(exc).strip().splitlines()
        if len(lines) < 2 or "DataLoader worker" not in lines[0]:
            raise
        raise type(exc)(lines[-1].partition(f"{type(exc).__name__}: ")[2] or lines[-1]) from None


class single_threaded_cv2:
    """Context manager: OpenCV runs single-threaded inside (so forked loader workers
    inherit a thread-free OpenCV), and gets its thread count back afterwards."""

    def __enter__(self):
        self.prev = cv2.getNumThreads()
        cv2.setNumThreads(1)
        return self

    def __exit__(self, *exc):
        cv2.setNumThreads(self.prev)
        return False


# ----------------------------------------------------------------------------- samplers

class PKBatchSampler(Sampler):
    """Batches of P identities x K images (FaceNet / OpenFace: 20 x 15). Batch b is a pure
    function of (seed, rank, b), so a resumed run continues with the same batches.
    Identities with fewer than K images contribute all of theirs. Yields `num_batches`
    batches starting at batch `start`; on rank r of W, batches differ per rank."""

    def __init__(self, labels: np.ndarray, p: int, k: int, num_batches: int, seed: int = 0,
                 start: int = 0, rank: int = 0):
        self.labels = np.asarray(labels)
        self.p, self.k, self.num_batches, self.seed, self.start, self.rank = p, k, num_batches, seed, start, rank
        # each class's image indices, ascending (one sort: comparing every label with every
        # class took 3.6 s for SYN-1M's million images of 10,000 identities)
        self.classes = np.unique(self.labels)
        order = np.argsort(self.labels, kind="stable")
        bounds = np.searchsorted(self.labels[order], self.classes, side="left")
        self.members = np.split(order, bounds[1:])
        if len(self.classes) < 2:
            raise DataError("triplet training needs at least 2 identities with 2+ images each")

    def __len__(self) -> int:
        return self.num_batches

    def batch(self, b: int) -> list[int]:
        rng = np.random.default_rng([self.seed, self.rank, b])
        out = []
        for c in rng.choice(len(self.classes), min(self.p, len(self.classes)), replace=False):
            m = self.members[c]
            out += rng.choice(m, min(self.k, len(m)), replace=False).tolist()
        return out

    def __iter__(self):
        for b in range(self.start, self.start + self.num_batches):
            yield self.batch(b)


class JoinedSets(Dataset):
    """FaceDatasets one after the other (synthetic then real), read by index or by the
    (index, key) items of :class:`AugmentKeys` (torch's ConcatDataset takes indices only)."""

    def __init__(self, parts: list[FaceDataset]):
        self.parts = parts
        self.ends = np.cumsum([len(p) for p in parts])

    def __len__(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    def __getitem__(self, item):
        i, key = item if isinstance(item, tuple) else (item, None)
        j = int(np.searchsorted(self.ends, i, side="right"))
        local = i - (int(self.ends[j - 1]) if j else 0)
        return self.parts[j][(local, key) if key is not None else local]


class AugmentKeys(Sampler):
    """A batch sampler's batches as (index, key) items, the key (seed, rank, batch, slot,
    1) seeding that item's augmentation: an image's crop jitter, flip and colour are then a
    pure function of the run's seed and step, whatever the number of loader workers or a
    resume (a stream per worker process restarted on resume and differed with the worker
    count). The trailing 1 keeps the stream apart from the sampler's own (seed, rank, batch)."""

    def __init__(self, batches: PKBatchSampler | RandomBatchSampler):
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        b0, seed, rank = self.batches.start, self.batches.seed, self.batches.rank
        for b, batch in enumerate(self.batches, b0):
            yield [(i, (seed, rank, b, k, 1)) for k, i in enumerate(batch)]


class RandomBatchSampler(Sampler):
    """Shuffled batches of `batch_size` (without replacement within an epoch; epoch e's
    order is a function of (seed, rank, e)), starting at global batch `start`."""

    def __init__(self, n: int, batch_size: int, num_batches: int, seed: int = 0, start: int = 0, rank: int = 0):
        self.n, self.bs, self.num_batches, self.seed, self.start, self.rank = n, min(batch_size, n), num_batches, seed, start, rank
        self.per_epoch = max(1, n // self.bs)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self):
        perm, epoch = None, -1
        for b in range(self.start, self.start + self.num_batches):
            e, j = divmod(b, self.per_epoch)
            if e != epoch:
                perm, epoch = np.random.default_rng([self.seed, self.rank, e]).permutation(self.n), e
            yield perm[j * self.bs:(j + 1) * self.bs].tolist()
