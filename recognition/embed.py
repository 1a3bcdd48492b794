"""Embeddings of any image folder with a trained run's model.

    embed(run_dir, images_dir, out_npz, flip=False, align=True)

writes ``embeddings`` (N, D) float32 L2-normalised, ``files`` (paths relative to the
folder), ``identities`` (identity name per image: sub-folder, morphgen identity, "" for
flat folders) and ``skipped`` (files without a readable image or a detected face; the
summary's ``report`` counts them).
Alignment: a morphgen dataset uses the landmarks in its params, anything else MTCNN;
``align=False`` resizes whole images (for folders of crops)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from morphgen.configfile import check_option
from morphgen.errors import ConfigError, DataError
from morphgen.options import check_device
from morphgen.outputs import NewOutputs, check_writable

from .checkpoint import checkpoint_path, load_backbone_state, load_checkpoint
from .data import FaceDataset, load_imageset, to_input, worker_errors
from .landmarks import find_landmarks
from .models import build_model, to_device


def load_model(run_or_file: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """The run's embedding network in eval mode, and its checkpoint metadata."""
    ckpt = load_checkpoint(run_or_file)
    model = build_model(ckpt["arch"], ckpt["input_size"])
    load_backbone_state(model, ckpt, ckpt["arch"], checkpoint_path(run_or_file))
    meta = {k: v for k, v in ckpt.items() if k not in ("model", "head", "optimizer", "scaler", "rng")}
    return to_device(model, device).eval(), meta


@torch.inference_mode()
def embed_dataset(model: torch.nn.Module, ds: FaceDataset, batch_size: int = 64, flip: bool = False,
                  device: str = "cpu", workers: int = 0, progress: bool = False) -> np.ndarray:
    """L2-normalised embeddings (N, D) of a FaceDataset, in order. With `flip`, the
    embedding of the mirrored crop is added before normalising."""
    from morphgen.progress import progress_bar
    was_training = model.training
    model.eval()
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers)
    out = []
    for x, *_ in progress_bar(worker_errors(loader), desc="embed", unit="batch", enabled=progress, total=len(loader)):
        x = to_input(x.to(device))
        e = torch.nn.functional.normalize(model(x).float(), dim=1)
        if flip:
            e = e + torch.nn.functional.normalize(model(x.flip(3)).float(), dim=1)
        out.append(torch.nn.functional.normalize(e, dim=1).cpu().numpy())
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, getattr(model, "embedding_size", 0)), np.float32)


def embed(run_dir: str | Path, images_dir: str | Path, out_npz: str | Path, flip: bool = False,
          align: bool = True, data_format: str = "auto", batch_size: int = 64, device: str = "cpu",
          cache_dir: str | Path | None = None, progress: bool = False) -> dict:
    """Write embeddings of every usable image under `images_dir` to `out_npz`; returns a
    summary. Every input is checked before anything is written, and a failure removes
    what this call created (the .npz, a new landmark cache)."""
    out_npz, images_dir = Path(out_npz), Path(images_dir)
    cache = Path(cache_dir) if cache_dir else out_npz.parent / ".morphgen_cache"
    check_option("batch_size", batch_size, int, low=1)
    check_device(device)
    if out_npz.suffix != ".npz":
        raise ConfigError(f"--out {out_npz}: give a file name ending in .npz")
    check_writable(out_npz, "--out", folder=False)
    check_writable(cache, "--cache")
    if not images_dir.is_dir():
        raise DataError(f"--images {images_dir} is not a folder: give a folder of face images (a morphgen "
                        "dataset, one sub-folder per identity, or RecordIO)")
    model, meta = load_model(run_dir, device)
    with NewOutputs(out_npz, cache):
        listed = load_imageset(images_dir, data_format)
        iset = find_landmarks(listed, cache, detect=align, progress=progress)
        if len(iset) == 0:
            why = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in iset.report.items() if v)
            raise DataError(f"no usable image in --images {images_dir} ({len(listed)} found; skipped {why}): "
                            "check the folder, or --no-align for crops without a detectable face")
        names = sorted(set(iset.identities) | {n for s in iset.soft if s for n in s["ids"]})
        ds = FaceDataset(iset, {n: i for i, n in enumerate(names)}, meta["input_size"], meta["template"], align=align,
                         replace_unreadable=False)
        emb = embed_dataset(model, ds, batch_size, flip, device, progress=progress)
        if ds.unreadable:  # given landmarks, so first read there: no embedding after all
            use = np.array([i for i in range(len(iset)) if i not in ds.unreadable], np.int64)
            if not len(use):
                raise DataError(f"no image in --images {images_dir} can be decoded: check or replace its files")
            iset.count("unreadable", len(ds.unreadable))
            iset, emb = iset.take(use), emb[use]
        out_npz.parent.mkdir(parents=True, exist_ok=True)
        kept = set(iset.files)
        # not images, unreadable, or no face found (a file that is no image was counted, not named)
        skipped = listed.not_images + [f for f in listed.files if f not in kept]
        np.savez(out_npz, embeddings=emb.astype(np.float32), files=np.array(iset.files, dtype=str),
                 identities=np.array(iset.identities, dtype=str), skipped=np.array(skipped, dtype=str),
                 arch=np.array(meta["arch"]), flip=np.array(flip))
    return {"images": len(iset), "dim": int(emb.shape[1]) if emb.ndim == 2 else 0, "skipped": skipped,
            "report": dict(iset.report), "out": str(out_npz), "arch": meta["arch"]}
