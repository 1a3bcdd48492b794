"""Finished chunks checked before a run trusts them.

Why: a chunk counts as finished when its params file (the marker, written last through a
rename) is on disk, and a resume renders only the chunks without one. The writer never
leaves a marker beside missing images, but files do go missing or get cut short after the
run: a copy stopped half-way, a quota, a user who deleted a folder by hand. A resume then
reported the dataset complete, and the damage surfaced in training. So before a run
renders the chunks still to do, each finished chunk of its shard is checked by what is
cheap to read (a Parquet footer's row count, the last byte of a JSON Lines file, the
names in the chunk's image folders or its shard's presence), and a damaged one is
discarded and rendered again: its images are a pure function of the config, so the
repaired dataset is the one an unbroken run writes. On a million-image dataset this is a
directory listing per identity and a footer per chunk (a few seconds).
"""
from __future__ import annotations

import os
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
        if rows != expected:
            return f"its params file {marker.name} holds {rows} of its {expected} images"
    else:
        with open(marker, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0 or (f.seek(size - 1), f.read(1))[1] != b"\n":
                return f"its params file {marker.name} is cut short"
    if job.output.container == "wds":
        shard = wds_shard(out, chunk)
        return None if shard.is_file() and shard.stat().st_size > 0 else f"its shard {shard.name} is missing or empty"
    ext = job.output.image_format
    samples: dict[int, list[int]] = {}
    for identity, sample in job.slots(chunk):
        samples.setdefault(identity, []).append(sample)
    for identity, wanted in samples.items():
        try:
            names = set(os.listdir(image_folder(out, identity)))
        except OSError:
            return f"its image folder {identity_folder(identity)} is missing"
        missing = sum(f"{image_stem(identity, s)}.{ext}" not in names for s in wanted)
        if missing:
            return f"{missing} image(s) of identity {identity} are missing"
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
