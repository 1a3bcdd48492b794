"""Finished chunks checked before a run trusts them.

Why: a chunk counts as finished when its params file (the marker, written last through a
rename) is on disk, and a resume renders only the chunks without one. The writer never
leaves a marker beside missing images, but files do go missing or get cut short after the
run: a copy stopped half-way, a quota, a user who deleted a folder by hand. A resume then
reported the dataset complete, and the damage surfaced in training. So before a run
renders the chunks still to do, each finished chunk of its shard is checked by what is
cheap to read: its params file's rows (a Parquet footer, or the lines of a JSON Lines
file) against its images; in its identity folders, the names of every image's files
(the image, its --outputs modalities, its .rps); or its WebDataset shard's end. A damaged
chunk is discarded and rendered again: its images are a pure function of the config, so
the repaired dataset is the one an unbroken run writes. What is not read is the pixels
(a file cut inside its bytes keeps its name). On 100,000 images in 10,000 identity
folders this takes half a second.
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from ..layout import chunk_marker, identity_folder, image_folder, image_stem, wds_shard
from .chunks import discard_chunk
from .job import DatasetJob


def chunk_damage(out: Path, job: DatasetJob, chunk: int) -> str | None:
    """Why the finished `chunk` of the dataset in `out` is not whole, or None when it is."""
    fmt = job.output.params_format
    marker = chunk_marker(out, chunk, fmt)
    expected = job.images_in([chunk])
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.read_metadata(marker).num_rows
        except Exception:  # noqa: BLE001 (pyarrow raises its own errors for a cut or foreign file)
            return f"its params file {marker.name} is unreadable"
    else:
        data = marker.read_bytes()
        if not data.endswith(b"\n"):
            return f"its params file {marker.name} is cut short"
        rows = data.count(b"\n")
    if rows != expected:
        return f"its params file {marker.name} holds {rows} of its {expected} images"
    if job.output.container == "wds":
        return _shard_damage(wds_shard(out, chunk))
    return _folder_damage(out, job, chunk)


def _shard_damage(shard: Path) -> str | None:
    """A WebDataset shard is whole when it ends as tarfile ends an archive: two zero
    blocks, padded with zeros to its record size (a cut file ends in a member's data)."""
    try:
        with open(shard, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(size - 1024, 0))
            tail = f.read()
    except OSError:
        return f"its shard {shard.name} is missing"
    if size < 1024 or size % 512 or tail.count(0) != len(tail):
        return f"its shard {shard.name} is cut short"
    return None


def _folder_damage(out: Path, job: DatasetJob, chunk: int) -> str | None:
    """Every image of the chunk has its files in its identity folder: the image, one per
    --outputs modality and its .rps (names only: one listing a folder)."""
    ext = job.output.image_format
    per_image = 1 + len(job.scene.outputs) + (1 if job.output.rps else 0)
    samples: dict[int, list[int]] = {}
    for identity, sample in job.slots(chunk):
        samples.setdefault(identity, []).append(sample)
    for identity, wanted in samples.items():
        try:
            names = os.listdir(image_folder(out, identity))
        except OSError:
            return f"its image folder {identity_folder(identity)} is missing"
        files = Counter("_".join(n.split(".", 1)[0].split("_")[:2]) for n in names)  # per image stem
        present = set(names)
        stems = [image_stem(identity, s) for s in wanted]
        missing = sum(f"{stem}.{ext}" not in present or files[stem] < per_image for stem in stems)
        if missing:
            return f"{missing} image(s) of identity {identity} miss files"
    return None


def repair_damaged(out: Path, job: DatasetJob, chunks) -> list[tuple[int, str]]:
    """(chunk, what was wrong) for each finished chunk among `chunks` that is not whole;
    each is discarded (marker, image folders or shard), so the run renders it again."""
    fmt = job.output.params_format
    damaged = []
    for c in chunks:
        marker = chunk_marker(out, c, fmt)
        if not marker.exists():
            continue
        why = chunk_damage(out, job, c)
        if why is not None:
            marker.unlink()
            discard_chunk(out, job, c)
            damaged.append((c, why))
    return damaged
